//! The decoder, table-driven: trace lines in, one line per decoded event out, compared with
//! `expect![[...]]` (`UPDATE_EXPECT=1 cargo test -p heisen-agent` rewrites the expectations).

use expect_test::{expect, Expect};

use super::*;
use crate::tracefs::parse_line;

/// The JSON of the note the agent writes before launching `name` (a step or a service) of `run`.
fn launch_note(comm: &str, name: &str, role: &str, run: u32) -> String {
    let kind = EventKind::Launch { name: name.into(), role: role.into(), argv: vec![] };
    serde_json::to_string(&AgentNote { pid: 0, comm: comm.into(), run, kind }).unwrap()
}

/// A marker line carrying `note`, written by pid `pid`.
fn note_line(pid: i32, note: &str) -> String {
    format!("   agent-{pid} [0] ..... 1.000001: tracing_mark_write: heisen:{note}")
}

/// One line per decoded event: `run R pid P (comm) @raw_ns kind`; a stop marker as `stop TOKEN`.
fn render(steps: &[Step]) -> String {
    let event = |d: &Decoded| format!("run {} pid {} ({}) @{} {:?}\n", d.run, d.pid, d.comm, d.raw_ns, d.kind);
    steps
        .iter()
        .map(|s| match s {
            Step::Event(d) => event(d),
            Step::Events(ds) => ds.iter().map(event).collect(),
            Step::Stop(token) => format!("stop {token}\n"),
            Step::Nothing => String::new(),
        })
        .collect()
}

/// Decodes `lines` with a fresh launched-scope decoder (host clock = mono + 1000 s) and compares.
fn check(lines: &[&str], expect: Expect) {
    let mut decoder = Decoder::new(Scope::Launched, 1_000_000_000_000);
    let steps: Vec<Step> = lines.iter().map(|l| decoder.decode(&parse_line(l).unwrap())).collect();
    expect.assert_eq(&render(&steps));
}

#[test]
fn launched_scope_follows_lineage_and_pairs_syscalls() {
    let note = note_line(5000050, &launch_note("writer", "write", "step", 3));
    check(
        &[
            // Not launched: out of scope.
            "   other-5000009 [0] ..... 1.000001: sys_write(fd: 3, buf: 0x10, count: 0x10)",
            "   other-5000009 [0] ..... 1.000002: sys_write -> 0x10",
            &note,
            "   writer-5000050 [0] ..... 1.000004: sched_process_fork: comm=writer pid=5000050 child_comm=writer child_pid=5000051",
            // Enter and exit become one event at the exit, with the entry's time.
            "   writer-5000051 [1] ..... 1.000005: sys_write(fd: 3, buf: 0x7f, count: 0x10000)",
            "   writer-5000051 [1] ..... 1.000009: sys_write -> 0xfffffffffffffff3",
            // The sender of a signal is the task generating it; its delivery remembers it.
            "   kill er-5000052 [1] d..1. 1.000010: signal_generate: sig=1 errno=0 code=0 comm=writer pid=5000051 grp=1 res=0",
            "   writer-5000051 [1] d..1. 1.000011: signal_deliver: sig=1 errno=0 code=0 sa_handler=0 sa_flags=0",
            "   x-1 [1] ..... 1.000012: tracing_mark_write: heisen-stop:7",
        ],
        expect![[r#"
            run 3 pid 5000050 (writer) @1001000001000 Launch { name: "write", role: "step", argv: [] }
            run 3 pid 5000050 (writer) @1001000004000 Fork { parent_pid: 5000050, child_pid: 5000051 }
            run 3 pid 5000051 (writer) @1001000009000 Syscall { name: "write", args: [3, 127, 65536], ret: -13, enter_ns: 1001000005000, fd_path: None, strings: [], addr: None, path_from: None }
            run 0 pid 5000052 (kill er) @1001000010000 Signal { signal: 1, sender_pid: 5000052, sender_comm: "kill er", target_pid: 5000051, target_comm: "writer", phase: Generate, result: 0 }
            run 3 pid 5000051 (writer) @1001000011000 Signal { signal: 1, sender_pid: 5000052, sender_comm: "kill er", target_pid: 5000051, target_comm: "writer", phase: Deliver, result: 0 }
            stop 7
        "#]],
    );
}

#[test]
fn attaches_are_recorded_and_only_interrupted_waits_are_kept() {
    let note = note_line(5000060, &launch_note("eventd", "eventd", "service", 2));
    check(
        &[
            &note,
            "   eventd-5000060 [0] ..... 1.000001: sched_process_exec: filename=/usr/sbin/eventd pid=5000060 old_pid=5000060",
            "   eventd-5000060 [0] ..... 1.000002: sched_process_fork: comm=eventd pid=5000060 child_comm=check child_pid=5000061",
            // A wait that returned events: not kept.
            "   eventd-5000060 [0] ..... 1.000003: sys_epoll_wait(epfd: 4, events: 0x7f, maxevents: 8, timeout: 0xffffffff)",
            "   eventd-5000060 [0] ..... 1.000004: sys_epoll_wait -> 0x1",
            "   eventd-5000060 [0] ..... 1.000005: sys_epoll_wait(epfd: 4, events: 0x7f, maxevents: 8, timeout: 0xffffffff)",
            // PTRACE_SEIZE (0x4206) by another process of the host, then PTRACE_SYSCALL (24): only the seize.
            "   check-5000061 [1] ..... 2.000000: sys_ptrace(request: 0x4206, pid: 0x4c4b7c, addr: 0x0, data: 0x0)",
            "   check-5000061 [1] ..... 2.000001: sys_ptrace(request: 0x18, pid: 0x4c4b7c, addr: 0x0, data: 0x0)",
            // The blocked wait returns EINTR: kept, with its entry a second earlier.
            "   eventd-5000060 [0] ..... 2.000002: sys_epoll_wait -> 0xfffffffffffffffc",
            // ERESTARTNOINTR (-513), as a tracer sees it: interrupted too.
            "   eventd-5000060 [0] ..... 2.000003: sys_epoll_wait(epfd: 4, events: 0x7f, maxevents: 8, timeout: 0xffffffff)",
            "   eventd-5000060 [0] ..... 2.000004: sys_epoll_wait -> 0xfffffffffffffdff",
        ],
        expect![[r#"
            run 2 pid 5000060 (eventd) @1001000001000 Launch { name: "eventd", role: "service", argv: [] }
            run 2 pid 5000060 (eventd) @1001000001000 Exec { filename: "/usr/sbin/eventd", argv: [], ppid: 0, chain: [] }
            run 2 pid 5000060 (eventd) @1001000002000 Fork { parent_pid: 5000060, child_pid: 5000061 }
            run 2 pid 5000061 (check) @1002000000000 Attach { tracer: "check", tracer_pid: 5000061, target_pid: 5000060, phase: Attach, how: "PTRACE_SEIZE (seen by the kernel observer)" }
            run 2 pid 5000060 (eventd) @1002000002000 Syscall { name: "epoll_wait", args: [4, 127, 8, 4294967295], ret: -4, enter_ns: 1001000005000, fd_path: None, strings: [], addr: None, path_from: None }
            run 2 pid 5000060 (eventd) @1002000004000 Syscall { name: "epoll_wait", args: [4, 127, 8, 4294967295], ret: -513, enter_ns: 1002000003000, fd_path: None, strings: [], addr: None, path_from: None }
        "#]],
    );
}

#[test]
fn locks_exits_and_signals_from_outside_the_run() {
    let note = note_line(5000070, &launch_note("php-worker", "worker", "step", 4));
    check(
        &[
            &note,
            "   php-worker-5000070 [0] ..... 1.000001: sched_process_exec: filename=/usr/bin/php pid=5000070 old_pid=5000070",
            // flock(fd, LOCK_EX) blocked and returned: one lock event; fcntl F_SETLKW too.
            "   php-worker-5000070 [0] ..... 1.000002: sys_flock(fd: 5, cmd: 0x2)",
            "   php-worker-5000070 [0] ..... 1.000003: sys_flock -> 0x0",
            "   php-worker-5000070 [0] ..... 1.000004: sys_fcntl(fd: 5, cmd: 0x7, arg: 0x7ffd)",
            "   php-worker-5000070 [0] ..... 1.000005: sys_fcntl -> 0xfffffffffffffff5",
            // fcntl F_GETFL is no lock: nothing.
            "   php-worker-5000070 [0] ..... 1.000006: sys_fcntl(fd: 5, cmd: 0x3, arg: 0x0)",
            "   php-worker-5000070 [0] ..... 1.000007: sys_fcntl -> 0x2",
            // umount2's tracepoint is the kernel's `umount`: recorded as umount2.
            "   php-worker-5000070 [0] ..... 1.000007: sys_umount(name: 0x7ffd, flags: 0x2)",
            "   php-worker-5000070 [0] ..... 1.000007: sys_umount -> 0x0",
            // A signal from a process outside the run to one inside: recorded (its target is ours).
            "   bash-5000099 [1] d..1. 1.000008: signal_generate: sig=15 errno=0 code=0 comm=php-worker pid=5000070 grp=1 res=0",
            // SIGCHLD to a process outside the run from outside it: not ours.
            "   bash-5000099 [1] d..1. 1.000009: signal_generate: sig=17 errno=0 code=0 comm=sshd pid=5000098 grp=1 res=0",
        ],
        expect![[r#"
            run 4 pid 5000070 (php-worker) @1001000001000 Launch { name: "worker", role: "step", argv: [] }
            run 4 pid 5000070 (php-worker) @1001000001000 Exec { filename: "/usr/bin/php", argv: [], ppid: 0, chain: [] }
            run 4 pid 5000070 (php-worker) @1001000003000 Lock { call: "flock", op: "LOCK_EX", fd: 5, path: None, ret: 0, enter_ns: 1001000002000 }
            run 4 pid 5000070 (php-worker) @1001000005000 Lock { call: "fcntl", op: "F_SETLKW", fd: 5, path: None, ret: -11, enter_ns: 1001000004000 }
            run 4 pid 5000070 (php-worker) @1001000007000 Syscall { name: "umount2", args: [32765, 2], ret: 0, enter_ns: 1001000007000, fd_path: None, strings: [], addr: None, path_from: None }
            run 0 pid 5000099 (bash) @1001000008000 Signal { signal: 15, sender_pid: 5000099, sender_comm: "bash", target_pid: 5000070, target_comm: "php-worker", phase: Generate, result: 0 }
        "#]],
    );
}

#[test]
fn whole_calls_decode_and_launch_plumbing_is_dropped() {
    let mut decoder = Decoder::new(Scope::Launched, 1_000_000_000_000);
    let note = launch_note("load", "load", "step", 2);
    let format = crate::bpf::write_format();
    let record = |fd: u64, count: u64, ret: i64| {
        let mut r = vec![0u8; 48];
        r[16..24].copy_from_slice(&fd.to_le_bytes());
        r[32..40].copy_from_slice(&count.to_le_bytes());
        r[40..48].copy_from_slice(&ret.to_le_bytes());
        r
    };
    let (plumbing, program) = (record(17, 200, 200), record(1, 5, 5));
    let whole = |data, mono_ns| TraceLine {
        comm: "load".into(),
        pid: 5000060,
        mono_ns,
        event: "sys_write",
        body: crate::tracefs::Body::Raw { format: &format, data },
    };
    fn text(l: &str) -> TraceLine<'_> {
        parse_line(l).unwrap()
    }
    let steps = vec![
        decoder.decode(&text(&note_line(5000060, &note))),
        // The launch note's own write into the trace is the launcher's, not the program's.
        decoder.decode(&whole(&plumbing, 1_000_002_000)),
        decoder.decode(&text(
            "   load-5000060 [0] ..... 1.000003: sched_process_exec: filename=/bin/load pid=5000060 old_pid=5000060",
        )),
        decoder.decode(&whole(&program, 1_000_004_000)),
    ];
    expect![[r#"
        run 2 pid 5000060 (load) @1001000001000 Launch { name: "load", role: "step", argv: [] }
        run 2 pid 5000060 (load) @1001000003000 Exec { filename: "/bin/load", argv: [], ppid: 0, chain: [] }
        run 2 pid 5000060 (load) @1001000004000 Syscall { name: "write", args: [1, 0, 5], ret: 5, enter_ns: 1001000004000, fd_path: None, strings: [], addr: None, path_from: None }
    "#]]
    .assert_eq(&render(&steps));
}

#[test]
fn fields_are_found_by_whole_key() {
    use crate::tracefs::{text_int, text_value};
    assert_eq!(text_int("comm=a pid=5 child_pid=6", "pid"), Some(5));
    assert_eq!(text_int("comm=a pid=5 child_pid=6", "child_pid"), Some(6));
    assert_eq!(text_value("sig=1 comm=my prog pid=3", "comm", " pid="), Some("my prog".into()));
}

/// Syscalls only, one short line each: `pid name = ret  [fd_path (from)] strings addr`.
fn check_calls(lines: &[&str], expect: Expect) {
    let mut decoder = Decoder::new(Scope::Launched, 1_000_000_000_000);
    let mut out = String::new();
    for l in lines {
        let parsed = parse_line(l).unwrap_or_else(|| panic!("not a trace line: {l}"));
        let decoded = match decoder.decode(&parsed) {
            Step::Event(d) => vec![d],
            Step::Events(ds) => ds,
            _ => vec![],
        };
        for d in decoded {
            if let EventKind::Syscall { name, ret, fd_path, strings, addr, path_from, .. } = &d.kind {
                let fd = fd_path.as_ref().map(|p| format!("  [{p}] ({:?})", path_from.unwrap())).unwrap_or_default();
                let s = if strings.is_empty() { String::new() } else { format!("  {strings:?}") };
                let a = addr.as_ref().map(|a| format!("  {{{a}}}")).unwrap_or_default();
                out.push_str(&format!("{} {name} = {ret}{fd}{s}{a}\n", d.pid));
            }
        }
    }
    expect.assert_eq(&out);
}

/// A path call: the argument record (strings read at the call), its enter and its exit.
fn path_call(pid: i32, t: u32, nr: u32, call: &str, args: &str, strings: &[&str], ret: &str) -> [String; 3] {
    let s: String = strings.iter().enumerate().map(|(i, p)| format!(" s{i}={p}")).collect();
    [
        format!("   p-{pid} [0] ..... 2.{t:06}: heisen_args: nr={nr}{s}"),
        format!("   p-{pid} [0] ..... 2.{t:06}: sys_{call}({args})"),
        format!("   p-{pid} [0] ..... 2.{:06}: sys_{call} -> {ret}", t + 1),
    ]
}

/// The fd table: every fd call names what its fd named at that moment — through a rename, an
/// unlink, a reused number, dup2, a fork's inherited table and an exec's O_CLOEXEC.
#[test]
fn the_fd_table_names_each_call_at_its_time() {
    let note = note_line(5000080, &launch_note("p", "writer", "step", 1));
    let at = "dfd: 0xffffffffffffff9c, filename: 0x7f00";
    let wr = |pid: i32, t: u32, fd: u32| {
        [
            format!("   p-{pid} [0] ..... 3.{t:06}: sys_write(fd: {fd}, buf: 0x10, count: 0x5)"),
            format!("   p-{pid} [0] ..... 3.{:06}: sys_write -> 0x5", t + 1),
        ]
    };
    let open = |t, path: &str, flags: &str, fd: &str| {
        path_call(5000080, t, 257, "openat", &format!("{at}, flags: {flags}, mode: 0x1a4"), &[path], fd)
    };
    let exec =
        "   p-5000080 [0] ..... 1.000002: sched_process_exec: filename=/usr/bin/python3 pid=5000080 old_pid=5000080";
    let mut lines: Vec<String> = vec![note, exec.into()];
    // O_WRONLY|O_CREAT|O_TRUNC as fd 3; a write; renamed over /srv/a; a write.
    lines.extend(open(10, "/srv/a.tmp", "0x241", "0x3"));
    lines.extend(wr(5000080, 20, 3));
    lines.extend(path_call(
        5000080,
        30,
        82,
        "rename",
        "oldname: 0x7f00, newname: 0x7f10",
        &["/srv/a.tmp", "/srv/a"],
        "0x0",
    ));
    lines.extend(wr(5000080, 40, 3));
    // /srv/b as fd 4, unlinked while open, written.
    lines.extend(open(50, "/srv/b", "0x2", "0x4"));
    lines.extend(path_call(5000080, 60, 87, "unlink", "pathname: 0x7f00", &["/srv/b"], "0x0"));
    lines.extend(wr(5000080, 70, 4));
    // close(3), then fd 3 is reused for /srv/c; dup2(3, 9).
    lines.push("   p-5000080 [0] ..... 4.000080: sys_close(fd: 3)".into());
    lines.push("   p-5000080 [0] ..... 4.000081: sys_close -> 0x0".into());
    lines.extend(open(90, "/srv/c", "0x0", "0x3"));
    lines.extend(wr(5000080, 100, 3));
    lines.push("   p-5000080 [0] ..... 4.000110: sys_dup2(oldfd: 3, newfd: 9)".into());
    lines.push("   p-5000080 [0] ..... 4.000111: sys_dup2 -> 0x9".into());
    lines.extend(wr(5000080, 120, 9));
    // /srv/d with O_CLOEXEC as fd 5; a child inherits the table; its exec drops fd 5.
    lines.extend(open(130, "/srv/d", "0x80001", "0x5"));
    lines.push(
        "   p-5000080 [0] ..... 4.000140: sched_process_fork: comm=p pid=5000080 child_comm=p child_pid=5000081".into(),
    );
    lines.extend(wr(5000081, 150, 4));
    lines.extend(wr(5000081, 160, 5));
    lines.push(
        "   p-5000081 [0] ..... 4.000170: sched_process_exec: filename=/bin/sh pid=5000081 old_pid=5000081".into(),
    );
    lines.extend(wr(5000081, 180, 4));
    lines.extend(wr(5000081, 190, 5));
    // The parent's own fd 5 stays.
    lines.extend(wr(5000080, 200, 5));
    // A socket connected to a peer; a relative path resolved against an fd's directory.
    lines.push("   p-5000080 [0] ..... 4.000210: sys_socket(family: 0x2, type: 0x1, protocol: 0x0)".into());
    lines.push("   p-5000080 [0] ..... 4.000211: sys_socket -> 0x6".into());
    lines.push("   p-5000080 [0] ..... 4.000220: heisen_args: nr=42 addr=10.0.0.2:8080".into());
    lines.push("   p-5000080 [0] ..... 4.000220: sys_connect(fd: 6, uservaddr: 0x7f00, addrlen: 0x10)".into());
    lines.push("   p-5000080 [0] ..... 4.000221: sys_connect -> 0x0".into());
    lines.extend(wr(5000080, 230, 6));
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    check_calls(
        &refs,
        expect![[r#"
            5000080 openat = 3  [/srv/a.tmp] (Trace)  ["/srv/a.tmp"]
            5000080 write = 5  [/srv/a.tmp] (Trace)
            5000080 rename = 0  ["/srv/a.tmp", "/srv/a"]
            5000080 write = 5  [/srv/a.tmp (renamed to /srv/a)] (Trace)
            5000080 openat = 4  [/srv/b] (Trace)  ["/srv/b"]
            5000080 unlink = 0  ["/srv/b"]
            5000080 write = 5  [/srv/b (deleted)] (Trace)
            5000080 close = 0  [/srv/a.tmp (renamed to /srv/a)] (Trace)
            5000080 openat = 3  [/srv/c] (Trace)  ["/srv/c"]
            5000080 write = 5  [/srv/c] (Trace)
            5000080 dup2 = 9  [/srv/c] (Trace)
            5000080 write = 5  [/srv/c] (Trace)
            5000080 openat = 5  [/srv/d] (Trace)  ["/srv/d"]
            5000081 write = 5  [/srv/b (deleted)] (Trace)
            5000081 write = 5  [/srv/d] (Trace)
            5000081 write = 5  [/srv/b (deleted)] (Trace)
            5000081 write = 5
            5000080 write = 5  [/srv/d] (Trace)
            5000080 socket = 6  [socket:inet] (Trace)
            5000080 connect = 0  [socket:inet] (Trace)  {10.0.0.2:8080}
            5000080 write = 5  [socket:[->10.0.0.2:8080]] (Trace)
        "#]],
    );
}

/// A process ended by SIGHUP's default action: the kernel delivers it as a SIGKILL it makes up,
/// and the process never calls exit_group. The delivery shows the SIGHUP and its sender, and the
/// exit says the process was killed by it, from whom — never `SIGKILL (sender not seen)`, `exit -1`.
#[test]
fn a_death_by_a_signals_default_action_names_the_signal_and_its_sender() {
    let note = note_line(5000090, &launch_note("svc", "svc", "service", 1));
    check(
        &[
            &note,
            "   svc-5000090 [0] ..... 1.000001: sched_process_exec: filename=/usr/bin/svc pid=5000090 old_pid=5000090",
            "   svc-5000091 [0] ..... 1.000002: sched_process_fork: comm=svc pid=5000090 child_comm=svc child_pid=5000091",
            "   svc-5000092 [0] ..... 1.000002: sched_process_fork: comm=svc pid=5000090 child_comm=svc child_pid=5000092",
            "   kill-5000099 [1] d..1. 1.000003: signal_generate: sig=1 errno=0 code=0 comm=svc pid=5000091 grp=1 res=0",
            "   svc-5000091 [0] d..1. 1.000004: signal_deliver: sig=9 errno=0 code=0 sa_handler=0 sa_flags=0",
            "   svc-5000091 [0] ..... 1.000005: sched_process_exit: comm=svc pid=5000091 prio=120 group_dead=1",
            // One that exits through exit_group keeps its status, whatever was sent to it.
            "   kill-5000099 [1] d..1. 1.000006: signal_generate: sig=15 errno=0 code=0 comm=svc pid=5000092 grp=1 res=0",
            "   svc-5000092 [0] ..... 1.000007: sys_exit_group(error_code: 0x3)",
            "   svc-5000092 [0] ..... 1.000008: sched_process_exit: comm=svc pid=5000092 prio=120 group_dead=1",
        ],
        expect![[r#"
            run 1 pid 5000090 (svc) @1001000001000 Launch { name: "svc", role: "service", argv: [] }
            run 1 pid 5000090 (svc) @1001000001000 Exec { filename: "/usr/bin/svc", argv: [], ppid: 0, chain: [] }
            run 1 pid 5000090 (svc) @1001000002000 Fork { parent_pid: 5000090, child_pid: 5000091 }
            run 1 pid 5000090 (svc) @1001000002000 Fork { parent_pid: 5000090, child_pid: 5000092 }
            run 0 pid 5000099 (kill) @1001000003000 Signal { signal: 1, sender_pid: 5000099, sender_comm: "kill", target_pid: 5000091, target_comm: "svc", phase: Generate, result: 0 }
            run 1 pid 5000091 (svc) @1001000004000 Signal { signal: 1, sender_pid: 5000099, sender_comm: "kill", target_pid: 5000091, target_comm: "svc", phase: Deliver, result: 0 }
            run 1 pid 5000091 (svc) @1001000005000 Exit { exit_code: 129, killed_by: Some(KilledBy { signal: 1, sender_pid: 5000099, sender_comm: "kill" }) }
            run 0 pid 5000099 (kill) @1001000006000 Signal { signal: 15, sender_pid: 5000099, sender_comm: "kill", target_pid: 5000092, target_comm: "svc", phase: Generate, result: 0 }
            run 1 pid 5000092 (svc) @1001000008000 Exit { exit_code: 3, killed_by: None }
        "#]],
    );
}

/// A process whose main thread calls exit_group while another thread is the last to die: the
/// kernel's SIGKILL to that thread is no signal anyone sent, and the exit (reported by that
/// thread) has the status the main thread asked for.
#[test]
fn the_exit_status_is_the_processes_whichever_thread_dies_last() {
    let note = note_line(5000100, &launch_note("svc", "svc", "service", 1));
    let mut decoder = Decoder::new(Scope::Launched, 1_000_000_000_000);
    let lines = [
        note.as_str(),
        "   svc-5000100 [0] ..... 1.000001: sched_process_exec: filename=/usr/bin/svc pid=5000100 old_pid=5000100",
        "   svc-5000100 [0] ..... 1.000002: sched_process_fork: comm=svc pid=5000100 child_comm=svc child_pid=5000101",
        "   svc-5000101 [0] ..... 1.000003: sched_process_fork: comm=svc pid=5000101 child_comm=svc child_pid=5000102",
    ];
    for l in lines {
        decoder.decode(&parse_line(l).unwrap());
    }
    // 5000102 is a thread of 5000101 (as /proc would have said at its fork).
    decoder.fds.fork(5000101, 5000102, true);
    let tail = [
        "   svc-5000101 [0] ..... 1.000004: sys_exit_group(error_code: 0x7)",
        // The kernel ends the other thread with a SIGKILL nobody sent: no event.
        "   svc-5000102 [1] d..1. 1.000005: signal_deliver: sig=9 errno=0 code=0 sa_handler=0 sa_flags=0",
        "   svc-5000101 [0] ..... 1.000005: sched_process_exit: comm=svc pid=5000101 prio=120 group_dead=0",
        "   svc-5000102 [1] ..... 1.000006: sched_process_exit: comm=svc pid=5000102 prio=120 group_dead=1",
    ];
    let steps: Vec<Step> = tail.iter().map(|l| decoder.decode(&parse_line(l).unwrap())).collect();
    expect![[r#"
        run 1 pid 5000102 (svc) @1001000006000 Exit { exit_code: 7, killed_by: None }
    "#]]
    .assert_eq(&render(&steps));
}
