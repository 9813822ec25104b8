//! The kernel observer's decoder: turns tracefs lines into domain events for this host.
//!
//! It pairs syscall enter/exit per thread, keeps signal senders (the tracepoint at generation
//! runs in the sender's context), follows fork lineage to tag events with the scenario run of the
//! launched process tree, and drops what is outside the host's scope. Notes that the agent
//! itself writes into the trace (launches, output lines, gate holds) come back through here too,
//! so everything on a host is ordered by one clock: the kernel's.

use fxhash::FxHashMap;

use heisen_recordings::{fcntl_lock_cmd, flock_op_name, EventKind, SignalPhase};
use serde::{Deserialize, Serialize};

use crate::tracefs::{SyscallPart, TraceLine};

/// Tracepoints the observer enables besides the syscall set.
pub const BASE_EVENTS: &[&str] = &[
    "sched/sched_process_exec",
    "sched/sched_process_fork",
    "sched/sched_process_exit",
    "signal/signal_generate",
    "signal/signal_deliver",
    "sock/inet_sock_set_state",
    // Renames (prctl PR_SET_NAME): raw records carry no comm, so the reader follows renames.
    "task/task_rename",
    // The exit status a process asks for (sched_process_exit carries none).
    "syscalls/sys_enter_exit_group",
];

/// Names of cron daemons: an exec whose parent has one of these names is a cron job.
const CRON_DAEMONS: &[&str] = &["crond", "cron"];

/// TCP transitions worth recording: each pairs with a transition of the peer socket, which gives
/// a causal edge across hosts (see `heisen_recordings::recorded_edges`).
const SOCKET_TRANSITIONS: &[(&str, &str)] = &[
    ("SYN_SENT", "ESTABLISHED"),
    ("SYN_RECV", "ESTABLISHED"),
    ("ESTABLISHED", "FIN_WAIT1"),
    ("ESTABLISHED", "CLOSE_WAIT"),
    ("CLOSE_WAIT", "LAST_ACK"),
    ("FIN_WAIT2", "TIME_WAIT"),
];

/// This host's IPv4 addresses other hosts can reach (loopback excluded: every namespace has one).
pub fn host_addresses() -> Vec<String> {
    crate::environment::interfaces()
        .into_iter()
        .flat_map(|i| i.addresses)
        .filter(|a| a.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| !ip.is_loopback() && !ip.is_unspecified()))
        .collect()
}

/// Syscalls recorded when a capture names none.
/// Blocking waits (`epoll_wait`, `epoll_pwait`) are kept only when they return interrupted (what
/// a tracer attaching does to them, story 2); `ptrace` only its attach and detach requests.
pub const DEFAULT_SYSCALLS: &[&str] = &[
    "write",
    "pwrite64",
    "sendto",
    "sendmsg",
    "connect",
    "kill",
    "tgkill",
    "mount",
    "umount2",
    "flock",
    "fcntl",
    "openat",
    "mkdir",
    "symlink",
    "epoll_wait",
    "epoll_pwait",
    "ptrace",
];

/// `ptrace` requests the observer records (PTRACE_ATTACH, PTRACE_SEIZE, PTRACE_DETACH): the
/// in-kernel filter keeps a tracer's per-stop requests out of the trace. Only entries are
/// recorded (an exit filter cannot see the request).
pub const PTRACE_FILTER: &str = "request == 16 || request == 16902 || request == 17";

/// The return values of a blocking call that a signal or a tracer interrupted: EINTR, or the
/// restart codes the kernel turns into a restart or EINTR on the way out.
pub fn interrupted(ret: i64) -> bool {
    matches!(ret, -4 | -512 | -513 | -514 | -516)
}

/// Which processes belong to this host.
#[derive(Clone, Debug)]
pub enum Scope {
    /// Every process in this network namespace (a netns host, or the whole machine in the root).
    Netns { inode: u64 },
    /// Only processes the agent launched and their descendants (loopback hosts sharing a kernel).
    Launched,
}

impl Scope {
    /// The scope of the calling process's network namespace.
    pub fn own_netns() -> Scope {
        Scope::Netns { inode: netns_inode("self").unwrap_or(0) }
    }
}

fn netns_inode(pid: &str) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()?;
    let text = link.to_string_lossy();
    text.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

/// A note the agent writes into the trace (`heisen:` + JSON), decoded back into an event.
#[derive(Serialize, Deserialize)]
pub struct AgentNote {
    /// The process the note is about; 0 means the marker writer itself (a child before exec).
    pub pid: i32,
    pub comm: String,
    pub run: u32,
    pub kind: EventKind,
}

/// A decoded event before it gets its sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub raw_ns: i64,
    pub pid: i32,
    pub comm: String,
    pub run: u32,
    pub kind: EventKind,
}

/// What a trace line meant to the decoder.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Event(Decoded),
    /// Several events from one trace record (an exec that is also a cron job's start).
    Events(Vec<Decoded>),
    Nothing,
    /// The stop marker with this token.
    Stop(String),
}

/// Stateful line decoder of one capture.
pub struct Decoder {
    scope: Scope,
    agent_pid: i32,
    /// CLOCK_REALTIME - CLOCK_MONOTONIC, to put kernel stamps into the host clock domain (then
    /// through the agent's clock skew, if any).
    mono_to_raw_ns: i64,
    in_scope: FxHashMap<i32, bool>,
    run_of: FxHashMap<i32, u32>,
    launched_roots: FxHashMap<i32, String>,
    pending: FxHashMap<i32, (&'static str, Vec<u64>, i64)>,
    last_sender: FxHashMap<(i32, i32), (i32, String)>,
    /// (thread, fd) -> path, resolved when `openat` returned the fd; used when the process is
    /// gone by the time a later syscall on that fd is decoded.
    fd_paths: FxHashMap<(i32, u64), String>,
    /// Addresses that make a TCP socket this host's (empty: socket events are not recorded).
    local_addrs: Vec<String>,
    /// The last successful mount/umount2 in scope (pid, comm, host ns): the mount watcher's
    /// next change is attributed to it.
    last_mount_call: Option<(i32, String, i64)>,
    /// Exit status each process passed to exit_group, for its exit event.
    exit_codes: FxHashMap<i32, i32>,
    /// Cron jobs in progress: pid -> (crontab, line, command).
    cron_jobs: FxHashMap<i32, (String, String, String)>,
    /// Crontab directories besides the system ones and the cron daemon's own `-c DIR`.
    crontab_dirs: Vec<std::path::PathBuf>,
    /// Our ptrace recorders: every stop of a tracee sends them a SIGCHLD, which is the
    /// recorder's own noise, not the traced program's behaviour.
    tracers: std::collections::HashSet<i32>,
    /// Launched processes between their launch note and their exec: their calls are the
    /// launcher's plumbing (the note's own write into the trace), not the program's.
    launching: std::collections::HashSet<i32>,
}

/// How long after a mount syscall a mount-table change is still attributed to it.
const MOUNT_ATTRIBUTION_NS: i64 = 2_000_000_000;

impl Decoder {
    pub fn new(scope: Scope, mono_to_raw_ns: i64) -> Decoder {
        Decoder {
            scope,
            agent_pid: std::process::id() as i32,
            mono_to_raw_ns,
            in_scope: FxHashMap::default(),
            run_of: FxHashMap::default(),
            launched_roots: FxHashMap::default(),
            pending: FxHashMap::default(),
            last_sender: FxHashMap::default(),
            fd_paths: FxHashMap::default(),
            local_addrs: Vec::new(),
            last_mount_call: None,
            exit_codes: FxHashMap::default(),
            cron_jobs: FxHashMap::default(),
            crontab_dirs: Vec::new(),
            tracers: std::collections::HashSet::new(),
            launching: std::collections::HashSet::new(),
        }
    }

    /// Also looks for cron jobs' lines in these crontab directories.
    pub fn with_crontab_dirs(mut self, dirs: Vec<std::path::PathBuf>) -> Decoder {
        self.crontab_dirs = dirs;
        self
    }

    /// An exec under a cron daemon: the job's start, matched to its crontab line.
    fn cron_start(&mut self, pid: i32, ppid: i32, argv: &[String]) -> Option<EventKind> {
        let parent = std::fs::read_to_string(format!("/proc/{ppid}/comm")).ok()?;
        if !CRON_DAEMONS.contains(&parent.trim_end()) {
            return None;
        }
        // Cron runs `sh -c COMMAND`.
        let command = match argv {
            [_, flag, command, ..] if flag == "-c" => command.clone(),
            _ => argv.join(" "),
        };
        let mut dirs = self.crontab_dirs.clone();
        // busybox crond -c DIR: the daemon's own crontab directory.
        let daemon_args: Vec<String> = std::fs::read(format!("/proc/{ppid}/cmdline"))
            .map(|raw| raw.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect())
            .unwrap_or_default();
        if let Some(i) = daemon_args.iter().position(|a| a == "-c") {
            if let Some(dir) = daemon_args.get(i + 1) {
                dirs.push(dir.into());
            }
        }
        let (crontab, line) = crate::environment::crontabs(&dirs)
            .into_iter()
            .flat_map(|c| c.lines.into_iter().map(move |l| (c.path.clone(), l)))
            .find(|(path, line)| heisen_recordings::crontab_command(path, line).as_deref() == Some(command.trim()))
            .unwrap_or_default();
        self.cron_jobs.insert(pid, (crontab.clone(), line.clone(), command.clone()));
        Some(EventKind::Cron {
            phase: "start".into(),
            crontab,
            crontab_line: line,
            command,
            job_pid: pid,
            exit_code: None,
        })
    }

    /// Records TCP state changes of sockets bound to these addresses. They fire in softirq
    /// context (any task's pid), so they are attributed by address, never by pid.
    pub fn with_socket_addresses(mut self, addrs: Vec<String>) -> Decoder {
        self.local_addrs = addrs;
        self
    }

    fn socket(&mut self, line: &TraceLine<'_>) -> Step {
        let tcp_v4 = matches!(line.text("protocol").as_deref(), Some("IPPROTO_TCP") | Some("6"))
            && matches!(line.text("family").as_deref(), Some("AF_INET") | Some("2"));
        if self.local_addrs.is_empty() || !tcp_v4 {
            return Step::Nothing;
        }
        let field_text = |key: &str| line.text(key).unwrap_or_default();
        let saddr = field_text("saddr");
        if !self.local_addrs.contains(&saddr) {
            return Step::Nothing;
        }
        let from_state = field_text("oldstate").trim_start_matches("TCP_").to_string();
        let to_state = field_text("newstate").trim_start_matches("TCP_").to_string();
        if !SOCKET_TRANSITIONS.iter().any(|(f, t)| *f == from_state && *t == to_state) {
            return Step::Nothing;
        }
        let local = format!("{saddr}:{}", field_text("sport"));
        let remote = format!("{}:{}", field_text("daddr"), field_text("dport"));
        let in_scope = self.in_scope(line.pid);
        let (pid, comm) = if in_scope { (line.pid, line.comm.to_string()) } else { (0, String::new()) };
        self.event(line, pid, &comm, EventKind::Socket { local, remote, from_state, to_state })
    }

    /// Re-reads a process's network namespace when it is still there; a process already gone
    /// keeps what was known (inherited at fork), so short-lived processes are not lost.
    fn refresh_scope(&mut self, pid: i32) {
        if let Scope::Netns { inode } = self.scope {
            if let Some(now) = netns_inode(&pid.to_string()) {
                let member = now == inode && !self.is_agent(pid);
                self.in_scope.insert(pid, member);
            }
        }
    }

    fn is_agent(&self, pid: i32) -> bool {
        pid == self.agent_pid || std::path::Path::new(&format!("/proc/self/task/{pid}")).exists()
    }

    fn in_scope(&mut self, pid: i32) -> bool {
        if let Some(known) = self.in_scope.get(&pid) {
            return *known;
        }
        let member = match &self.scope {
            Scope::Launched => self.run_of.contains_key(&pid),
            Scope::Netns { inode } => !self.is_agent(pid) && netns_inode(&pid.to_string()) == Some(*inode),
        };
        // In Launched scope membership can still change (a launch marker arrives later), so only
        // netns answers are cached.
        if matches!(self.scope, Scope::Netns { .. }) {
            self.in_scope.insert(pid, member);
        }
        member
    }

    fn event(&self, line: &TraceLine<'_>, pid: i32, comm: &str, kind: EventKind) -> Step {
        Step::Event(self.decoded(line, pid, comm, kind))
    }

    fn decoded(&self, line: &TraceLine<'_>, pid: i32, comm: &str, kind: EventKind) -> Decoded {
        Decoded {
            raw_ns: crate::clock::skewed(line.mono_ns + self.mono_to_raw_ns),
            pid,
            comm: comm.to_string(),
            run: self.run_of.get(&pid).copied().unwrap_or(0),
            kind,
        }
    }

    /// `first`, followed by a second event of the same record when there is one.
    fn with_second(&self, line: &TraceLine<'_>, first: Decoded, second: Option<EventKind>) -> Step {
        match second {
            Some(kind) => Step::Events(vec![first, self.decoded(line, line.pid, &line.comm, kind)]),
            None => Step::Event(first),
        }
    }

    /// Decodes one line.
    pub fn decode(&mut self, line: &TraceLine<'_>) -> Step {
        match line.event {
            "tracing_mark_write" => self.marker(line),
            "inet_sock_set_state" => self.socket(line),
            "sched_process_fork" => {
                let parent = line.int("parent_pid").unwrap_or(line.pid as i64) as i32;
                let Some(child) = line.int("child_pid").map(|c| c as i32) else {
                    return Step::Nothing;
                };
                // A process can enter the host's namespace (setns, `ip netns exec`) after its
                // membership was cached: ask again for the parent as it forks.
                self.refresh_scope(parent);
                let member = self.in_scope(parent);
                if let Some(run) = self.run_of.get(&parent).copied() {
                    self.run_of.insert(child, run);
                }
                self.in_scope.insert(child, member);
                if !member {
                    return Step::Nothing;
                }
                self.event(line, parent, &line.comm, EventKind::Fork { parent_pid: parent, child_pid: child })
            }
            "sched_process_exec" => {
                self.launching.remove(&line.pid);
                self.refresh_scope(line.pid); // see fork: entered after setns
                if !self.in_scope(line.pid) {
                    return Step::Nothing;
                }
                let filename = line.text("filename").unwrap_or_default();
                let argv: Vec<String> = std::fs::read(format!("/proc/{}/cmdline", line.pid))
                    .map(|raw| {
                        raw.split(|b| *b == 0)
                            .filter(|a| !a.is_empty())
                            .map(|a| String::from_utf8_lossy(a).into())
                            .collect()
                    })
                    .unwrap_or_default();
                let ppid = parent_of(line.pid).unwrap_or(0);
                let cron = self.cron_start(line.pid, ppid, &argv);
                let exec = self.decoded(line, line.pid, &line.comm, EventKind::Exec { filename, argv, ppid });
                self.with_second(line, exec, cron)
            }
            "sched_process_exit" => {
                let group_dead = line.flag("group_dead").unwrap_or(true);
                let member = self.in_scope(line.pid);
                self.pending.remove(&line.pid);
                self.fd_paths.retain(|(pid, _), _| *pid != line.pid);
                let exit_code = self.exit_codes.remove(&line.pid).unwrap_or(-1);
                if !member || !group_dead || self.launched_roots.contains_key(&line.pid) {
                    return Step::Nothing; // the launcher reports launched processes' exit codes
                }
                let exit = self.decoded(line, line.pid, &line.comm, EventKind::Exit { exit_code });
                let end = self.cron_jobs.remove(&line.pid).map(|(crontab, crontab_line, command)| EventKind::Cron {
                    phase: "end".into(),
                    crontab,
                    crontab_line,
                    command,
                    job_pid: line.pid,
                    exit_code: Some(exit_code),
                });
                self.with_second(line, exit, end)
            }
            "signal_generate" => {
                let (Some(sig), Some(target)) = (line.int("sig"), line.int("pid")) else {
                    return Step::Nothing;
                };
                let (sig, target) = (sig as i32, target as i32);
                if sig == libc::SIGCHLD && self.tracers.contains(&target) {
                    return Step::Nothing;
                }
                if !(self.in_scope(line.pid) || self.in_scope(target)) {
                    return Step::Nothing;
                }
                let target_comm = line.text("comm").unwrap_or_default();
                self.last_sender.insert((target, sig), (line.pid, line.comm.to_string()));
                let result = line.int("result").unwrap_or(0) as i32;
                self.event(
                    line,
                    line.pid,
                    &line.comm,
                    EventKind::Signal {
                        signal: sig,
                        sender_pid: line.pid,
                        sender_comm: line.comm.to_string(),
                        target_pid: target,
                        target_comm,
                        phase: SignalPhase::Generate,
                        result,
                    },
                )
            }
            "signal_deliver" => {
                let Some(sig) = line.int("sig").map(|s| s as i32) else {
                    return Step::Nothing;
                };
                if !self.in_scope(line.pid) {
                    return Step::Nothing;
                }
                let (sender_pid, sender_comm) = self.last_sender.remove(&(line.pid, sig)).unwrap_or((0, String::new()));
                self.event(
                    line,
                    line.pid,
                    &line.comm,
                    EventKind::Signal {
                        signal: sig,
                        sender_pid,
                        sender_comm,
                        target_pid: line.pid,
                        target_comm: line.comm.to_string(),
                        phase: SignalPhase::Deliver,
                        result: 0,
                    },
                )
            }
            name if name.starts_with("sys_") => self.syscall(line, &name[4..]),
            _ => Step::Nothing,
        }
    }

    fn syscall(&mut self, line: &TraceLine<'_>, name: &str) -> Step {
        if !self.in_scope(line.pid) || self.launching.contains(&line.pid) {
            return Step::Nothing;
        }
        if name == "exit_group" {
            // Never returns: keep the status for the process's exit event.
            if let Some(SyscallPart::Enter(args)) = line.syscall() {
                self.exit_codes.insert(line.pid, (args.first().copied().unwrap_or(0) & 0xff) as i32);
            }
            return Step::Nothing;
        }
        if name == "ptrace" {
            return self.ptrace(line);
        }
        let (args, ret, enter_ns) = match line.syscall() {
            Some(SyscallPart::Enter(args)) => {
                let enter_ns = crate::clock::skewed(line.mono_ns + self.mono_to_raw_ns);
                // A lock call can block for long and its process may exit right after it returns:
                // name the fd while the call is still in progress.
                if name == "flock" || (name == "fcntl" && args.get(1).and_then(|c| fcntl_lock_cmd(*c)).is_some()) {
                    if let Some(fd) = args.first() {
                        if let Ok(path) = std::fs::read_link(format!("/proc/{}/fd/{fd}", line.pid)) {
                            self.fd_paths.insert((line.pid, *fd), path.display().to_string());
                        }
                    }
                }
                self.pending.insert(line.pid, (intern(name), args, enter_ns));
                return Step::Nothing;
            }
            Some(SyscallPart::Exit(ret)) => {
                let Some((enter_name, args, enter_ns)) = self.pending.remove(&line.pid) else {
                    return Step::Nothing;
                };
                if enter_name != name {
                    return Step::Nothing;
                }
                (args, ret, enter_ns)
            }
            // One record for the whole call (the write recorder), stamped at its return: that is
            // the only time known, so it is the call's time too.
            Some(SyscallPart::Whole(args, ret)) => {
                (args, ret, crate::clock::skewed(line.mono_ns + self.mono_to_raw_ns))
            }
            None => return Step::Nothing,
        };
        if matches!(name, "epoll_wait" | "epoll_pwait") && !interrupted(ret) {
            return Step::Nothing;
        }
        let resolve =
            |fd: u64| std::fs::read_link(format!("/proc/{}/fd/{fd}", line.pid)).ok().map(|p| p.display().to_string());
        // One /proc lookup per (task, fd), not per event: a storm of writes on one fd
        // costs one readlink. openat forgets the entry when an fd number is reused.
        let fd_path = if takes_fd(name) {
            args.first().and_then(|fd| match self.fd_paths.get(&(line.pid, *fd)) {
                Some(path) => Some(path.clone()),
                None => {
                    let path = resolve(*fd)?;
                    self.fd_paths.insert((line.pid, *fd), path.clone());
                    Some(path)
                }
            })
        } else if name == "openat" && ret >= 0 {
            // The fd number is new (or reused): forget what it named. Its own path cannot be
            // read back reliably here, /proc may already show a later file on that number.
            self.fd_paths.remove(&(line.pid, ret as u64));
            None
        } else {
            None
        };
        let comm = &line.comm;
        if matches!(name, "mount" | "umount2") && ret == 0 {
            let at = crate::clock::skewed(line.mono_ns + self.mono_to_raw_ns);
            self.last_mount_call = Some((line.pid, comm.to_string(), at));
        }
        if let Some(kind) = lock_event(name, &args, ret, enter_ns, &fd_path) {
            return self.event(line, line.pid, comm, kind);
        }
        if name == "fcntl" {
            return Step::Nothing; // not a lock command
        }
        self.event(line, line.pid, comm, EventKind::Syscall { name: name.to_string(), args, ret, enter_ns, fd_path })
    }

    /// A ptrace attach or detach by any process of the host (strace, gdb, a health check): the
    /// tracer perturbs its target, so the timeline shows it.
    fn ptrace(&mut self, line: &TraceLine<'_>) -> Step {
        let Some(SyscallPart::Enter(args)) = line.syscall() else { return Step::Nothing };
        let (Some(request), Some(target)) = (args.first(), args.get(1)) else { return Step::Nothing };
        let (phase, how) = match *request {
            16 => ("attach", "PTRACE_ATTACH"),
            0x4206 => ("attach", "PTRACE_SEIZE"),
            17 => ("detach", "PTRACE_DETACH"),
            _ => return Step::Nothing,
        };
        let kind = EventKind::Attach {
            tracer: line.comm.to_string(),
            tracer_pid: line.pid,
            target_pid: *target as i32,
            phase: phase.into(),
            how: format!("{how} (seen by the kernel observer)"),
        };
        self.event(line, line.pid, line.comm.as_ref(), kind)
    }

    fn marker(&mut self, line: &TraceLine<'_>) -> Step {
        let Some(text) = line.marker() else { return Step::Nothing };
        if let Some(token) = text.strip_prefix("heisen-stop:") {
            return Step::Stop(token.trim().to_string());
        }
        let Some(json) = text.strip_prefix("heisen:") else {
            return Step::Nothing;
        };
        let Ok(note) = serde_json::from_str::<AgentNote>(json.trim()) else {
            return Step::Nothing;
        };
        if let EventKind::Mount { op, source, target, fstype, options, .. } = note.kind {
            return self.mount_change(line, op, source, target, fstype, options);
        }
        if let EventKind::Attach { tracer_pid, .. } = &note.kind {
            // From now on the recorder's own syscalls and signals are not the host's behaviour.
            self.tracers.insert(*tracer_pid);
            self.in_scope.insert(*tracer_pid, false);
        }
        let pid = if note.pid == 0 { line.pid } else { note.pid };
        if let EventKind::Launch { name, .. } = &note.kind {
            self.run_of.insert(pid, note.run);
            self.launched_roots.insert(pid, name.clone());
            if note.pid == 0 {
                self.launching.insert(pid);
            }
            self.in_scope.insert(pid, true);
        }
        // Notes of other recorders (ptrace) do not know the run: the process's lineage does.
        let run = if note.run == 0 { self.run_of.get(&pid).copied().unwrap_or(0) } else { note.run };
        Step::Event(Decoded {
            raw_ns: crate::clock::skewed(line.mono_ns + self.mono_to_raw_ns),
            pid,
            comm: note.comm,
            run,
            kind: note.kind,
        })
    }
}

impl Decoder {
    /// A change the mount watcher saw, attributed to the mount syscall just before it, if any.
    fn mount_change(
        &mut self,
        line: &TraceLine<'_>,
        op: String,
        source: String,
        target: String,
        fstype: String,
        options: String,
    ) -> Step {
        let at = crate::clock::skewed(line.mono_ns + self.mono_to_raw_ns);
        let (by_pid, by_comm) = match &self.last_mount_call {
            Some((pid, comm, when)) if at - when <= MOUNT_ATTRIBUTION_NS => (*pid, comm.clone()),
            _ => (0, String::new()),
        };
        Step::Event(Decoded {
            raw_ns: at,
            pid: by_pid,
            comm: by_comm.clone(),
            run: self.run_of.get(&by_pid).copied().unwrap_or(0),
            kind: EventKind::Mount { op, source, target, fstype, options, by_pid, by_comm },
        })
    }
}

/// A lock call as a lock event; None for other syscalls and for fcntl commands that are not locks.
fn lock_event(name: &str, args: &[u64], ret: i64, enter_ns: i64, path: &Option<String>) -> Option<EventKind> {
    let fd = *args.first()?;
    let op = match name {
        "flock" => flock_op_name(*args.get(1)?),
        "fcntl" => fcntl_lock_cmd(*args.get(1)?)?.to_string(),
        _ => return None,
    };
    Some(EventKind::Lock { call: name.to_string(), op, fd, path: path.clone(), ret, enter_ns })
}

fn takes_fd(syscall: &str) -> bool {
    matches!(syscall, "write" | "pwrite64" | "sendto" | "sendmsg" | "flock" | "fcntl")
}

fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].split(' ').nth(1)?.parse().ok()
}

/// A syscall name as a `&'static str`: a call in progress is remembered per task without an
/// allocation. The set of names is the kernel's syscall table, so what is leaked is bounded.
fn intern(name: &str) -> &'static str {
    static NAMES: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let mut names = NAMES.lock().expect("syscall names");
    if let Some(n) = names.iter().find(|n| **n == name) {
        return n;
    }
    let n: &'static str = Box::leak(name.to_string().into_boxed_str());
    names.push(n);
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracefs::parse_line;

    /// The JSON of the note the agent writes before launching `name` (a step or a service) of `run`.
    fn launch_note(comm: &str, name: &str, role: &str, run: u32) -> String {
        let kind = EventKind::Launch { name: name.into(), role: role.into(), argv: vec![] };
        serde_json::to_string(&AgentNote { pid: 0, comm: comm.into(), run, kind }).unwrap()
    }

    fn decode_all(decoder: &mut Decoder, lines: &[&str]) -> Vec<Step> {
        lines.iter().map(|l| decoder.decode(&parse_line(l).unwrap())).filter(|s| *s != Step::Nothing).collect()
    }

    #[test]
    fn launched_scope_follows_lineage_and_pairs_syscalls() {
        let mut decoder = Decoder::new(Scope::Launched, 1_000_000_000_000);
        let note = launch_note("writer", "write", "step", 3);
        let steps = decode_all(
            &mut decoder,
            &[
                "   other-9 [0] ..... 1.000001: sys_write(fd: 3, buf: 0x10, count: 0x10)",
                "   other-9 [0] ..... 1.000002: sys_write -> 0x10",
                &format!("   agent-50 [0] ..... 1.000003: tracing_mark_write: heisen:{note}"),
                "   writer-50 [0] ..... 1.000004: sched_process_fork: comm=writer pid=50 child_comm=writer child_pid=51",
                "   writer-51 [1] ..... 1.000005: sys_write(fd: 3, buf: 0x7f, count: 0x10000)",
                "   writer-51 [1] ..... 1.000009: sys_write -> 0xfffffffffffffff3",
                "   kill er-52 [1] d..1. 1.000010: signal_generate: sig=1 errno=0 code=0 comm=writer pid=51 grp=1 res=0",
                "   writer-51 [1] d..1. 1.000011: signal_deliver: sig=1 errno=0 code=0 sa_handler=0 sa_flags=0",
                "   x-1 [1] ..... 1.000012: tracing_mark_write: heisen-stop:7",
            ],
        );
        assert_eq!(steps.len(), 6, "{steps:#?}");
        let Step::Event(write) = &steps[2] else { panic!() };
        assert_eq!((write.pid, write.run), (51, 3));
        assert_eq!(write.raw_ns, 1_001_000_009_000);
        assert!(
            matches!(&write.kind, EventKind::Syscall { name, ret: -13, args, enter_ns: 1_001_000_005_000, .. } if name == "write" && args[..] == [3, 0x7f, 0x10000])
        );
        let Step::Event(generate) = &steps[3] else { panic!() };
        assert!(
            matches!(&generate.kind, EventKind::Signal { sender_comm, target_pid: 51, target_comm, .. } if sender_comm == "kill er" && target_comm == "writer")
        );
        let Step::Event(deliver) = &steps[4] else { panic!() };
        assert!(matches!(&deliver.kind, EventKind::Signal { sender_pid: 52, phase: SignalPhase::Deliver, .. }));
        assert_eq!(steps[5], Step::Stop("7".into()));
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
            pid: 60,
            mono_ns,
            event: "sys_write",
            body: crate::tracefs::Body::Raw { format: &format, data },
        };
        let mut steps =
            decode_all(&mut decoder, &[&format!("   agent-60 [0] ..... 1.000001: tracing_mark_write: heisen:{note}")]);
        steps.push(decoder.decode(&whole(&plumbing, 1_000_002_000)));
        steps.extend(decode_all(
            &mut decoder,
            &["   load-60 [0] ..... 1.000003: sched_process_exec: filename=/bin/load pid=60 old_pid=60"],
        ));
        steps.push(decoder.decode(&whole(&program, 1_000_004_000)));
        assert_eq!(steps[1], Step::Nothing, "the launch note's own write is the launcher's");
        let Step::Event(write) = &steps[3] else { panic!("{steps:#?}") };
        assert_eq!(write.run, 2);
        assert!(
            matches!(&write.kind, EventKind::Syscall { name, ret: 5, args, enter_ns: 1_001_000_004_000, .. } if name == "write" && args[..] == [1, 0, 5]),
            "{write:#?}"
        );
    }

    #[test]
    fn attaches_are_recorded_and_only_interrupted_waits_are_kept() {
        let mut decoder = Decoder::new(Scope::Launched, 1_000_000_000_000);
        let note = launch_note("eventd", "eventd", "service", 2);
        let steps = decode_all(
            &mut decoder,
            &[
                &format!("   agent-60 [0] ..... 1.000001: tracing_mark_write: heisen:{note}"),
                "   eventd-60 [0] ..... 1.000001: sched_process_exec: filename=/usr/sbin/eventd pid=60 old_pid=60",
                "   eventd-60 [0] ..... 1.000002: sched_process_fork: comm=eventd pid=60 child_comm=check child_pid=61",
                // A wait that returned events: not kept.
                "   eventd-60 [0] ..... 1.000003: sys_epoll_wait(epfd: 4, events: 0x7f, maxevents: 8, timeout: 0xffffffff)",
                "   eventd-60 [0] ..... 1.000004: sys_epoll_wait -> 0x1",
                "   eventd-60 [0] ..... 1.000005: sys_epoll_wait(epfd: 4, events: 0x7f, maxevents: 8, timeout: 0xffffffff)",
                // PTRACE_SEIZE (0x4206) by another process of the host, then PTRACE_SYSCALL (24): only the seize.
                "   check-61 [1] ..... 2.000000: sys_ptrace(request: 0x4206, pid: 0x3c, addr: 0x0, data: 0x0)",
                "   check-61 [1] ..... 2.000001: sys_ptrace(request: 0x18, pid: 0x3c, addr: 0x0, data: 0x0)",
                // The blocked wait returns EINTR: kept, with its entry a second earlier.
                "   eventd-60 [0] ..... 2.000002: sys_epoll_wait -> 0xfffffffffffffffc",
            ],
        );
        assert_eq!(steps.len(), 5, "{steps:#?}"); // launch, exec, fork, attach, interrupted wait
        let Step::Event(attach) = &steps[3] else { panic!() };
        assert!(
            matches!(&attach.kind, EventKind::Attach { tracer, tracer_pid: 61, target_pid: 60, phase, how } if tracer == "check" && phase == "attach" && how.starts_with("PTRACE_SEIZE")),
            "{attach:?}"
        );
        let Step::Event(woken) = &steps[4] else { panic!() };
        assert!(
            matches!(&woken.kind, EventKind::Syscall { name, ret: -4, enter_ns: 1_001_000_005_000, .. } if name == "epoll_wait"),
            "{woken:?}"
        );
    }

    #[test]
    fn fields_are_found_by_whole_key() {
        use crate::tracefs::{text_int, text_value};
        assert_eq!(text_int("comm=a pid=5 child_pid=6", "pid"), Some(5));
        assert_eq!(text_int("comm=a pid=5 child_pid=6", "child_pid"), Some(6));
        assert_eq!(text_value("sig=1 comm=my prog pid=3", "comm", " pid="), Some("my prog".into()));
    }
}
