//! The ptrace recorder (opt-in): exact, decoded syscalls of one process tree, at a price.
//!
//! It runs as a helper process (`heisen-agent ptrace-record`), so its `waitpid(-1)` can never
//! reap the agent's own children. It seizes every thread of the target, follows clones, forks
//! and execs, stops at every syscall entry and exit (`PTRACE_SYSCALL`), reads the arguments the
//! kernel observer cannot (paths, flags) while the tracee is stopped, and writes one note per
//! call into the capture's trace marker, so the kernel's clock orders them with everything else.
//!
//! Attaching perturbs: on this kernel a seize + interrupt makes a blocked `epoll_wait` return
//! EINTR (story 2). So the attach and the detach are events of their own.

use crate::error::AgentError;
use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use heisen_recordings::{fcntl_lock_cmd, flock_op_name, signal_name, AttachPhase, EventKind};

use crate::observer::AgentNote;

const PTRACE_GET_SYSCALL_INFO: libc::c_uint = 0x420e;
const PTRACE_SYSCALL_INFO_ENTRY: u8 = 1;
const PTRACE_SYSCALL_INFO_EXIT: u8 = 2;

/// `struct ptrace_syscall_info` (entry and exit parts of the union).
#[repr(C)]
#[derive(Clone, Copy)]
struct SyscallInfo {
    op: u8,
    _pad: [u8; 3],
    arch: u32,
    instruction_pointer: u64,
    stack_pointer: u64,
    /// entry: nr, args[6]; exit: rval (i64), is_error (u8).
    data: [u64; 7],
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Where notes go: the capture's trace marker, or stdout (one JSON note per line) without one.
struct Out {
    marker: Option<std::fs::File>,
    /// Task names, read from /proc once per task and again after it execs.
    comms: HashMap<i32, String>,
}

impl Out {
    fn note(&mut self, pid: i32, kind: EventKind) {
        let comm = self.comms.entry(pid).or_insert_with(|| comm_of(pid)).clone();
        let note = AgentNote { pid, comm, run: 0, kind };
        let Ok(json) = serde_json::to_string(&note) else { return };
        match &mut self.marker {
            Some(m) => {
                let _ = m.write_all(format!("heisen:{json}").as_bytes());
            }
            None => println!("{json}"),
        }
    }
}

fn comm_of(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).map(|c| c.trim_end().to_string()).unwrap_or_default()
}

fn now_ns() -> i64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// `heisen-agent ptrace-record --pid PID [--marker PATH]`: records until SIGTERM/SIGINT or until
/// every traced task is gone; returns the exit code.
pub fn run(args: &[String]) -> i32 {
    let get = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1));
    let Some(pid) = get("--pid").and_then(|p| p.parse::<i32>().ok()) else {
        eprintln!("usage: ptrace-record --pid PID [--marker PATH]");
        return 2;
    };
    let marker = get("--marker").and_then(|p| std::fs::OpenOptions::new().write(true).open(p).ok());
    let mut out = Out { marker, comms: HashMap::new() };
    // SAFETY: plain handlers that only store an atomic; no SA_RESTART, so waitpid returns EINTR.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_stop as *const () as usize;
        libc::sigaction(libc::SIGTERM, &action, std::ptr::null_mut());
        libc::sigaction(libc::SIGINT, &action, std::ptr::null_mut());
    }
    match record(pid, &mut out) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("ptrace-record: {e}");
            2
        }
    }
}

fn ptrace(request: libc::c_uint, tid: i32, addr: usize, data: usize) -> std::io::Result<libc::c_long> {
    // SAFETY: every caller passes a request whose addr/data are values or point at live buffers.
    let r = unsafe { libc::ptrace(request, tid, addr as *mut libc::c_void, data as *mut libc::c_void) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(r)
}

fn record(pid: i32, out: &mut Out) -> Result<(), AgentError> {
    let options = libc::PTRACE_O_TRACESYSGOOD
        | libc::PTRACE_O_TRACECLONE
        | libc::PTRACE_O_TRACEFORK
        | libc::PTRACE_O_TRACEVFORK
        | libc::PTRACE_O_TRACEEXEC;
    let mut tids: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map_err(AgentError::file("list the threads of", format!("/proc/{pid}/task")))?
        .flatten()
        .filter_map(|t| t.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable();
    let me = std::process::id() as i32;
    let attach = |phase: AttachPhase| EventKind::Attach {
        tracer: "ptrace".into(),
        tracer_pid: me,
        target_pid: pid,
        phase,
        how: "PTRACE_SEIZE + PTRACE_INTERRUPT, then PTRACE_SYSCALL".into(),
    };
    // The note goes first: the attach's effects (the tracee's stops, a blocked call's EINTR)
    // must come after it on the timeline, and the decoder must know the recorder before its
    // first SIGCHLD.
    out.note(pid, attach(AttachPhase::Attach));
    let mut traced: HashMap<i32, Option<Entered>> = HashMap::new();
    for tid in &tids {
        let seized = ptrace(libc::PTRACE_SEIZE, *tid, 0, options as usize)
            .and_then(|_| ptrace(libc::PTRACE_INTERRUPT, *tid, 0, 0))
            .map_err(AgentError::syscall(format!("cannot attach to {tid}")));
        if let Err(e) = seized {
            detach_all(&mut traced);
            out.note(pid, attach(AttachPhase::Failed));
            return Err(e);
        }
        traced.insert(*tid, None);
    }
    while !traced.is_empty() {
        if STOP.load(Ordering::SeqCst) {
            detach_all(&mut traced);
            out.note(pid, attach(AttachPhase::Detach));
            return Ok(());
        }
        let mut status = 0;
        // SAFETY: status is a valid out-pointer.
        let tid = unsafe { libc::waitpid(-1, &mut status, libc::__WALL) };
        if tid < 0 {
            match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) => continue,
                _ => break, // ECHILD: nothing left to trace
            }
        }
        if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
            traced.remove(&tid);
            continue;
        }
        if !libc::WIFSTOPPED(status) {
            continue;
        }
        traced.entry(tid).or_insert(None); // a new clone/fork child reports in
        let sig = libc::WSTOPSIG(status);
        let event = (status >> 16) & 0xff;
        let mut inject = 0;
        if sig == (libc::SIGTRAP | 0x80) {
            on_syscall_stop(tid, &mut traced, out);
        } else if event != 0 {
            // fork/clone/exec/interrupt events: the new task is traced automatically.
        } else {
            inject = sig; // a real signal: deliver it
        }
        let _ = ptrace(libc::PTRACE_SYSCALL, tid, 0, inject as usize);
    }
    out.note(pid, attach(AttachPhase::Detach));
    Ok(())
}

fn detach_all(traced: &mut HashMap<i32, Option<Entered>>) {
    for tid in traced.keys().copied().collect::<Vec<_>>() {
        if ptrace(libc::PTRACE_INTERRUPT, tid, 0, 0).is_ok() {
            let mut status = 0;
            // SAFETY: status is a valid out-pointer; waits for this task's interrupt stop only.
            unsafe { libc::waitpid(tid, &mut status, libc::__WALL) };
        }
        let _ = ptrace(libc::PTRACE_DETACH, tid, 0, 0);
    }
    traced.clear();
}

/// A call in progress: when it entered, its name and arguments decoded at entry (an exec
/// replaces the memory they point into).
struct Entered {
    enter_ns: i64,
    name: String,
    args: Vec<String>,
}

fn on_syscall_stop(tid: i32, traced: &mut HashMap<i32, Option<Entered>>, out: &mut Out) {
    // SAFETY: SyscallInfo is plain data; zeroed is valid.
    let mut info: SyscallInfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<SyscallInfo>();
    if ptrace(PTRACE_GET_SYSCALL_INFO, tid, size, &mut info as *mut SyscallInfo as usize).is_err() {
        return;
    }
    match info.op {
        PTRACE_SYSCALL_INFO_ENTRY => {
            let enter_ns = now_ns();
            let args: [u64; 6] = info.data[1..7].try_into().expect("six arguments");
            let (name, args) = decode(tid, info.data[0] as i64, &args);
            traced.insert(tid, Some(Entered { enter_ns, name, args }));
        }
        PTRACE_SYSCALL_INFO_EXIT => {
            let Some(Some(Entered { enter_ns, name, args })) = traced.insert(tid, None) else { return };
            let exec = name == "execve" && info.data[0] == 0;
            out.note(tid, EventKind::Traced { name, args, ret: info.data[0] as i64, enter_ns });
            if exec {
                out.comms.remove(&tid); // renamed by the exec
            }
        }
        _ => {}
    }
}

/// Reads a NUL-terminated string (at most 4 KiB) from the stopped tracee.
fn read_string(tid: i32, addr: u64) -> String {
    if addr == 0 {
        return "NULL".into();
    }
    let mut bytes = Vec::new();
    let mut at = addr;
    while bytes.len() < 4096 {
        let chunk = 256.min((4096 - (at % 4096)) as usize);
        let mut buf = vec![0u8; chunk];
        let local = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        let remote = libc::iovec { iov_base: at as *mut libc::c_void, iov_len: buf.len() };
        // SAFETY: `local` points at `buf`, live and as long as declared.
        let n = unsafe { libc::process_vm_readv(tid, &local, 1, &remote, 1, 0) };
        if n <= 0 {
            break;
        }
        let got = &buf[..n as usize];
        if let Some(end) = got.iter().position(|b| *b == 0) {
            bytes.extend_from_slice(&got[..end]);
            return format!("{:?}", String::from_utf8_lossy(&bytes));
        }
        bytes.extend_from_slice(got);
        at += n as u64;
    }
    format!("{:?}...", String::from_utf8_lossy(&bytes))
}

fn open_flags(flags: u64) -> String {
    let mut parts = vec![match flags & 3 {
        0 => "O_RDONLY",
        1 => "O_WRONLY",
        _ => "O_RDWR",
    }
    .to_string()];
    for (bit, name) in [
        (libc::O_CREAT, "O_CREAT"),
        (libc::O_EXCL, "O_EXCL"),
        (libc::O_TRUNC, "O_TRUNC"),
        (libc::O_APPEND, "O_APPEND"),
        (libc::O_NONBLOCK, "O_NONBLOCK"),
        (libc::O_DIRECTORY, "O_DIRECTORY"),
        (libc::O_CLOEXEC, "O_CLOEXEC"),
    ] {
        if flags & bit as u64 != 0 {
            parts.push(name.into());
        }
    }
    parts.join("|")
}

fn dirfd(v: u64) -> String {
    if v as i32 == libc::AT_FDCWD {
        "AT_FDCWD".into()
    } else {
        (v as i32).to_string()
    }
}

/// A syscall's name and its arguments in words: paths read from the tracee, flags spelled out,
/// sizes and fds as numbers; pointers to structures as addresses.
fn decode(tid: i32, nr: i64, a: &[u64; 6]) -> (String, Vec<String>) {
    let s = |addr: u64| read_string(tid, addr);
    let n = |v: u64| (v as i64).to_string();
    let i = |v: u64| (v as i32).to_string(); // fds and pids are C ints
    let x = |v: u64| format!("{v:#x}");
    let (name, args): (&str, Vec<String>) = match nr {
        libc::SYS_read => ("read", vec![i(a[0]), x(a[1]), n(a[2])]),
        libc::SYS_write => ("write", vec![i(a[0]), x(a[1]), n(a[2])]),
        libc::SYS_pread64 => ("pread64", vec![i(a[0]), x(a[1]), n(a[2]), n(a[3])]),
        libc::SYS_pwrite64 => ("pwrite64", vec![i(a[0]), x(a[1]), n(a[2]), n(a[3])]),
        libc::SYS_open => ("open", vec![s(a[0]), open_flags(a[1]), format!("{:#o}", a[2])]),
        libc::SYS_openat => ("openat", vec![dirfd(a[0]), s(a[1]), open_flags(a[2]), format!("{:#o}", a[3])]),
        libc::SYS_close => ("close", vec![i(a[0])]),
        libc::SYS_mkdir => ("mkdir", vec![s(a[0]), format!("{:#o}", a[1])]),
        libc::SYS_mkdirat => ("mkdirat", vec![dirfd(a[0]), s(a[1]), format!("{:#o}", a[2])]),
        libc::SYS_symlink => ("symlink", vec![s(a[0]), s(a[1])]),
        libc::SYS_symlinkat => ("symlinkat", vec![s(a[0]), dirfd(a[1]), s(a[2])]),
        libc::SYS_rename => ("rename", vec![s(a[0]), s(a[1])]),
        libc::SYS_renameat => ("renameat", vec![dirfd(a[0]), s(a[1]), dirfd(a[2]), s(a[3])]),
        libc::SYS_renameat2 => ("renameat2", vec![dirfd(a[0]), s(a[1]), dirfd(a[2]), s(a[3]), x(a[4])]),
        libc::SYS_unlink => ("unlink", vec![s(a[0])]),
        libc::SYS_unlinkat => ("unlinkat", vec![dirfd(a[0]), s(a[1]), x(a[2])]),
        libc::SYS_readlink => ("readlink", vec![s(a[0]), x(a[1]), n(a[2])]),
        libc::SYS_access => ("access", vec![s(a[0]), x(a[1])]),
        libc::SYS_faccessat => ("faccessat", vec![dirfd(a[0]), s(a[1]), x(a[2])]),
        libc::SYS_newfstatat => ("newfstatat", vec![dirfd(a[0]), s(a[1]), x(a[2]), x(a[3])]),
        libc::SYS_stat => ("stat", vec![s(a[0]), x(a[1])]),
        libc::SYS_lstat => ("lstat", vec![s(a[0]), x(a[1])]),
        libc::SYS_statfs => ("statfs", vec![s(a[0]), x(a[1])]),
        libc::SYS_chdir => ("chdir", vec![s(a[0])]),
        libc::SYS_execve => ("execve", vec![s(a[0]), x(a[1]), x(a[2])]),
        libc::SYS_mount => ("mount", vec![s(a[0]), s(a[1]), s(a[2]), x(a[3])]),
        libc::SYS_umount2 => ("umount2", vec![s(a[0]), x(a[1])]),
        libc::SYS_flock => ("flock", vec![i(a[0]), flock_op_name(a[1])]),
        libc::SYS_fcntl => {
            ("fcntl", vec![n(a[0]), fcntl_lock_cmd(a[1]).map(String::from).unwrap_or_else(|| n(a[1])), x(a[2])])
        }
        libc::SYS_kill => ("kill", vec![i(a[0]), signal_name(a[1] as i32)]),
        libc::SYS_tgkill => ("tgkill", vec![i(a[0]), i(a[1]), signal_name(a[2] as i32)]),
        libc::SYS_epoll_wait => ("epoll_wait", vec![i(a[0]), x(a[1]), i(a[2]), i(a[3])]),
        libc::SYS_epoll_pwait => ("epoll_pwait", vec![i(a[0]), x(a[1]), i(a[2]), i(a[3]), x(a[4])]),
        libc::SYS_epoll_pwait2 => ("epoll_pwait2", vec![n(a[0]), x(a[1]), n(a[2]), x(a[3]), x(a[4])]),
        libc::SYS_nanosleep => ("nanosleep", vec![x(a[0]), x(a[1])]),
        libc::SYS_clock_nanosleep => ("clock_nanosleep", vec![n(a[0]), n(a[1]), x(a[2]), x(a[3])]),
        libc::SYS_wait4 => ("wait4", vec![i(a[0]), x(a[1]), x(a[2]), x(a[3])]),
        libc::SYS_exit_group => ("exit_group", vec![i(a[0])]),
        libc::SYS_dup2 => ("dup2", vec![i(a[0]), i(a[1])]),
        libc::SYS_dup3 => ("dup3", vec![i(a[0]), i(a[1]), x(a[2])]),
        libc::SYS_pipe2 => ("pipe2", vec![x(a[0]), x(a[1])]),
        libc::SYS_vfork => ("vfork", vec![]),
        libc::SYS_fork => ("fork", vec![]),
        _ => {
            let name = raw_name(nr).map(String::from).unwrap_or_else(|| format!("syscall_{nr}"));
            return (name, a.iter().map(|v| x(*v)).collect());
        }
    };
    (name.to_string(), args)
}

/// Names of common syscalls shown with raw arguments.
fn raw_name(nr: i64) -> Option<&'static str> {
    Some(match nr {
        libc::SYS_mmap => "mmap",
        libc::SYS_mprotect => "mprotect",
        libc::SYS_munmap => "munmap",
        libc::SYS_brk => "brk",
        libc::SYS_rt_sigaction => "rt_sigaction",
        libc::SYS_rt_sigprocmask => "rt_sigprocmask",
        libc::SYS_rt_sigreturn => "rt_sigreturn",
        libc::SYS_ioctl => "ioctl",
        libc::SYS_fstat => "fstat",
        libc::SYS_lseek => "lseek",
        libc::SYS_poll => "poll",
        libc::SYS_ppoll => "ppoll",
        libc::SYS_select => "select",
        libc::SYS_pselect6 => "pselect6",
        libc::SYS_clone => "clone",
        libc::SYS_clone3 => "clone3",
        libc::SYS_getpid => "getpid",
        libc::SYS_getppid => "getppid",
        libc::SYS_gettid => "gettid",
        libc::SYS_getuid => "getuid",
        libc::SYS_geteuid => "geteuid",
        libc::SYS_getgid => "getgid",
        libc::SYS_getegid => "getegid",
        libc::SYS_uname => "uname",
        libc::SYS_arch_prctl => "arch_prctl",
        libc::SYS_set_tid_address => "set_tid_address",
        libc::SYS_set_robust_list => "set_robust_list",
        libc::SYS_rseq => "rseq",
        libc::SYS_prlimit64 => "prlimit64",
        libc::SYS_getrandom => "getrandom",
        libc::SYS_futex => "futex",
        libc::SYS_socket => "socket",
        libc::SYS_connect => "connect",
        libc::SYS_accept => "accept",
        libc::SYS_accept4 => "accept4",
        libc::SYS_bind => "bind",
        libc::SYS_listen => "listen",
        libc::SYS_sendto => "sendto",
        libc::SYS_recvfrom => "recvfrom",
        libc::SYS_sendmsg => "sendmsg",
        libc::SYS_recvmsg => "recvmsg",
        libc::SYS_epoll_create1 => "epoll_create1",
        libc::SYS_epoll_ctl => "epoll_ctl",
        libc::SYS_getdents64 => "getdents64",
        libc::SYS_statx => "statx",
        libc::SYS_fadvise64 => "fadvise64",
        libc::SYS_exit => "exit",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_dirfds_read_like_strace() {
        assert_eq!(open_flags((libc::O_WRONLY | libc::O_CREAT | libc::O_CLOEXEC) as u64), "O_WRONLY|O_CREAT|O_CLOEXEC");
        assert_eq!(open_flags(0), "O_RDONLY");
        assert_eq!(dirfd(libc::AT_FDCWD as i64 as u64), "AT_FDCWD");
    }

    #[test]
    fn paths_are_read_from_the_tracee() {
        let path = c"/etc/hostname";
        let me = std::process::id() as i32;
        let (name, args) =
            decode(me, libc::SYS_openat, &[libc::AT_FDCWD as i64 as u64, path.as_ptr() as u64, 0, 0, 0, 0]);
        assert_eq!(name, "openat");
        assert_eq!(args, vec!["AT_FDCWD", "\"/etc/hostname\"", "O_RDONLY", "0o0"]);
    }
}
