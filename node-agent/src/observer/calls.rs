//! Syscalls: enter and exit paired per thread into one event, with the fd's path; lock calls
//! become lock events, ptrace attach and detach become attach events.

use heisen_recordings::{fcntl_lock_cmd, flock_op_name, interrupted, AttachPhase, EventKind};

use super::fds::Open;
use super::{Decoder, Step};
use crate::tracefs::{SyscallPart, TraceLine};

/// `ptrace` requests the observer records (PTRACE_ATTACH, PTRACE_SEIZE, PTRACE_DETACH): the
/// in-kernel filter keeps a tracer's per-stop requests out of the trace. Only entries are
/// recorded (an exit filter cannot see the request).
pub const PTRACE_FILTER: &str = "request == 16 || request == 16902 || request == 17";

impl Decoder {
    pub(super) fn syscall(&mut self, line: &TraceLine<'_>, name: &str) -> Step {
        if !self.in_scope(line.pid) || self.launching.contains(&line.pid) {
            return Step::Nothing;
        }
        if name == "exit_group" {
            // Never returns: keep the status for the process's exit event.
            if let Some(SyscallPart::Enter(args)) = line.syscall() {
                // By process: the thread that dies last (and reports the exit) may be another.
                let process = self.fds.owner(line.pid);
                self.exit_codes.insert(process, (args.first().copied().unwrap_or(0) & 0xff) as i32);
            }
            return Step::Nothing;
        }
        if name == "ptrace" {
            return self.ptrace(line);
        }
        let (args, ret, enter_ns) = match line.syscall() {
            Some(SyscallPart::Enter(args)) => {
                let enter_ns = crate::clock::skewed(line.mono_ns + self.mono_to_raw_ns);
                if name == "flock" || (name == "fcntl" && args.get(1).and_then(|c| fcntl_lock_cmd(*c)).is_some()) {
                    if let Some(fd) = args.first() {
                        self.name_lock_fd(line.pid, *fd);
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
        // What the argument recorder read for this call (it sorts before the call's exit).
        let nr = heisen_recordings::syscall(name).map(|s| s.nr as u32);
        let (strings, addr) = match self.call_args.remove(&line.pid) {
            Some(recorded) if Some(recorded.nr) == nr => (recorded.strings, recorded.addr),
            _ => (Vec::new(), None),
        };
        let (fd_path, path_from) = match self.follow_fds(line.pid, name, &args, ret, &strings, addr.as_deref()) {
            Some(open) => (Some(open.shown()), Some(open.from)),
            None => (None, None),
        };
        let comm = &line.comm;
        if matches!(name, "mount" | "umount2") && ret == 0 {
            let at = crate::clock::skewed(line.mono_ns + self.mono_to_raw_ns);
            self.last_mount_call = Some((line.pid, comm.to_string(), at));
        }
        if let Some(kind) = lock_event(name, &args, ret, enter_ns, &fd_path) {
            return self.event(line, line.pid, comm, kind);
        }
        if name == "fcntl" && !args.get(1).is_some_and(|c| matches!(*c, F_DUPFD | F_DUPFD_CLOEXEC | F_SETFD)) {
            return Step::Nothing; // neither a lock nor a change to the fd table
        }
        let kind =
            EventKind::Syscall { name: name.to_string(), args, ret, enter_ns, fd_path, strings, addr, path_from };
        self.event(line, line.pid, comm, kind)
    }

    /// An argument record: the strings and address of the call `line.pid` is making, kept until
    /// that call's exit.
    pub(super) fn call_arguments(&mut self, line: &TraceLine<'_>) -> Step {
        let Some(nr) = line.int("nr") else { return Step::Nothing };
        if nr == libc::SYS_execve || nr == libc::SYS_execveat {
            // Read at entry; the exec event that follows takes it.
            let argv = line.text_list("s1");
            let cut_short = line.int("flags").is_some_and(|f| f & 2 != 0);
            if !argv.is_empty() {
                self.exec_argv.insert(line.pid, (argv, cut_short));
            }
            return Step::Nothing;
        }
        if !self.in_scope(line.pid) {
            return Step::Nothing;
        }
        let mut strings: Vec<String> = ["s0", "s1", "s2"].iter().map(|k| line.text(k).unwrap_or_default()).collect();
        while strings.last().is_some_and(String::is_empty) {
            strings.pop();
        }
        let addr = line.sockaddr("addr");
        self.call_args.insert(line.pid, CallArgs { nr: nr as u32, strings, addr });
        Step::Nothing
    }

    /// Updates the fd table with what the call did, and returns what its fd named: the fd
    /// argument as the call found it, or the fd it returned.
    fn follow_fds(
        &mut self,
        tid: i32,
        name: &str,
        args: &[u64],
        ret: i64,
        strings: &[String],
        addr: Option<&str>,
    ) -> Option<Open> {
        let arg = |i: usize| args.get(i).copied().unwrap_or(0);
        let proc_fd =
            |fd: u64| move || std::fs::read_link(format!("/proc/{tid}/fd/{fd}")).ok().map(|p| p.display().to_string());
        let cwd = || std::fs::read_link(format!("/proc/{tid}/cwd")).ok().map(|p| p.display().to_string());
        let ok = ret >= 0;
        match name {
            "open" | "openat" | "openat2" | "creat" => {
                if !ok {
                    return None;
                }
                let (dirfd, flags) = match name {
                    "open" => (None, arg(1)),
                    "creat" => (None, (libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC) as u64),
                    "openat" => (Some(arg(0)), arg(2)),
                    _ => (Some(arg(0)), 0),
                };
                let fd = ret as u64;
                match strings.first() {
                    Some(path) => {
                        let path = self.fds.resolve(tid, dirfd, path, cwd);
                        self.fds.open(tid, fd, path, flags);
                    }
                    // No path recorded: the table forgets the number's old file; /proc is asked.
                    None => self.fds.close(tid, fd),
                }
                self.fds.name(tid, fd, proc_fd(fd))
            }
            "socket" => {
                if ok {
                    let family = match arg(0) as i32 {
                        libc::AF_INET => "inet",
                        libc::AF_INET6 => "inet6",
                        libc::AF_UNIX => "unix",
                        libc::AF_NETLINK => "netlink",
                        _ => "other",
                    };
                    self.fds.open(tid, ret as u64, format!("socket:{family}"), arg(1) & libc::SOCK_CLOEXEC as u64);
                }
                ok.then(|| self.fds.get(tid, ret as u64).cloned()).flatten()
            }
            "accept" | "accept4" => {
                if ok {
                    let peer = addr.map_or_else(|| "socket".to_string(), |a| format!("socket:[<-{a}]"));
                    let flags = if name == "accept4" { arg(3) & libc::SOCK_CLOEXEC as u64 } else { 0 };
                    self.fds.open(tid, ret as u64, peer, flags);
                }
                ok.then(|| self.fds.get(tid, ret as u64).cloned()).flatten()
            }
            "dup" | "dup2" | "dup3" => {
                let old = self.fds.name(tid, arg(0), proc_fd(arg(0)));
                if ok {
                    let cloexec = name == "dup3" && arg(2) & libc::O_CLOEXEC as u64 != 0;
                    self.fds.dup(tid, arg(0), ret as u64, cloexec);
                }
                old
            }
            "fcntl" => {
                let open = self.fds.name(tid, arg(0), proc_fd(arg(0)));
                match arg(1) {
                    F_DUPFD | F_DUPFD_CLOEXEC if ok => self.fds.dup(tid, arg(0), ret as u64, arg(1) == F_DUPFD_CLOEXEC),
                    F_SETFD if ok => self.fds.set_cloexec(tid, arg(0), arg(2) & libc::FD_CLOEXEC as u64 != 0),
                    _ => {}
                }
                open
            }
            "close" => {
                let open = self.fds.name(tid, arg(0), proc_fd(arg(0)));
                // Even a failed close (other than EBADF) releases the fd.
                if ret != -(libc::EBADF as i64) {
                    self.fds.close(tid, arg(0));
                }
                open
            }
            "close_range" => {
                if ok {
                    self.fds.close_range(tid, arg(0), arg(1), arg(2));
                }
                None
            }
            "unlink" | "unlinkat" | "rmdir" => {
                if let (true, Some(path)) = (ok, strings.first()) {
                    let dirfd = (name == "unlinkat").then(|| arg(0));
                    let path = self.fds.resolve(tid, dirfd, path, cwd);
                    self.fds.unlinked(&path);
                }
                None
            }
            "rename" | "renameat" | "renameat2" => {
                if let (true, [from, to, ..]) = (ok, strings) {
                    let (d0, d1) = if name == "rename" { (None, None) } else { (Some(arg(0)), Some(arg(2))) };
                    let from = self.fds.resolve(tid, d0, from, cwd);
                    let to = self.fds.resolve(tid, d1, to, cwd);
                    self.fds.renamed(&from, &to);
                }
                None
            }
            "connect" | "bind" => {
                let open = self.fds.name(tid, arg(0), proc_fd(arg(0)));
                let took = ok || ret == -(libc::EINPROGRESS as i64);
                if let (true, Some(a)) = (took, addr) {
                    let shown = if name == "connect" { format!("socket:[->{a}]") } else { format!("socket:[{a}]") };
                    self.fds.rename_fd(tid, arg(0), shown);
                }
                open
            }
            _ if takes_fd(name) => self.fds.name(tid, arg(0), proc_fd(arg(0))),
            _ => None,
        }
    }

    /// A lock call can block for long and its process may exit right after it returns: name the
    /// fd while the call is in progress (the table knows it; /proc is asked only for an fd
    /// opened before the capture).
    pub(super) fn name_lock_fd(&mut self, tid: i32, fd: u64) {
        let proc = move || std::fs::read_link(format!("/proc/{tid}/fd/{fd}")).ok().map(|p| p.display().to_string());
        self.fds.name(tid, fd, proc);
    }

    /// A ptrace attach or detach by any process of the host (strace, gdb, a health check): the
    /// tracer perturbs its target, so the timeline shows it.
    pub(super) fn ptrace(&mut self, line: &TraceLine<'_>) -> Step {
        let Some(SyscallPart::Enter(args)) = line.syscall() else { return Step::Nothing };
        let (Some(request), Some(target)) = (args.first(), args.get(1)) else { return Step::Nothing };
        let (phase, how) = match *request {
            16 => (AttachPhase::Attach, "PTRACE_ATTACH"),
            0x4206 => (AttachPhase::Attach, "PTRACE_SEIZE"),
            17 => (AttachPhase::Detach, "PTRACE_DETACH"),
            _ => return Step::Nothing,
        };
        let kind = EventKind::Attach {
            tracer: line.comm.to_string(),
            tracer_pid: line.pid,
            target_pid: *target as i32,
            phase,
            how: format!("{how} (seen by the kernel observer)"),
        };
        self.event(line, line.pid, line.comm.as_ref(), kind)
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

/// Syscalls whose first argument is an fd, which the event names.
fn takes_fd(syscall: &str) -> bool {
    matches!(
        syscall,
        "read"
            | "pread64"
            | "readv"
            | "preadv"
            | "write"
            | "pwrite64"
            | "writev"
            | "fsync"
            | "fdatasync"
            | "ftruncate"
            | "sendto"
            | "recvfrom"
            | "sendmsg"
            | "recvmsg"
            | "shutdown"
            | "flock"
            | "fcntl"
    )
}

const F_DUPFD: u64 = 0;
const F_SETFD: u64 = 2;
const F_DUPFD_CLOEXEC: u64 = 1030;

/// What the argument recorder read for a call in progress.
pub(super) struct CallArgs {
    nr: u32,
    strings: Vec<String>,
    addr: Option<String>,
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
