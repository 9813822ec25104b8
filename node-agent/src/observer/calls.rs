//! Syscalls: enter and exit paired per thread into one event, with the fd's path; lock calls
//! become lock events, ptrace attach and detach become attach events.

use heisen_recordings::{fcntl_lock_cmd, flock_op_name, interrupted, AttachPhase, EventKind};

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

fn takes_fd(syscall: &str) -> bool {
    matches!(syscall, "write" | "pwrite64" | "sendto" | "sendmsg" | "flock" | "fcntl")
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
