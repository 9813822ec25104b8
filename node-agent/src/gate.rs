//! Gates: holding a launched process at a chosen syscall occurrence until the coordinator
//! releases it, with seccomp user notification. Only the syscall numbers named by gate points
//! trap to the agent; everything else runs at full speed in the kernel.
//!
//! Mechanism only: this module counts occurrences and holds; *which* occurrence to hold and
//! when to release is the coordinator's decision, delivered through [`HoldRegistry`].
//! A hold that gets no decision within its timeout is released and reported as `timeout`,
//! so a vanished coordinator never hangs a host.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A gate point as the agent enforces it (from the wire `GatePoint`).
#[derive(Clone, Debug)]
pub struct GatePoint {
    pub id: String,
    pub nr: i64,
    pub nth: u32,
    pub arg_index: Option<usize>,
    pub arg_equals: Option<u64>,
    pub arg_at_least: Option<u64>,
    /// Only calls on this path: a path argument as the caller gave it when absolute, resolved
    /// against its working directory (or the directory fd) when relative; for calls on an fd
    /// (read, write, close, flock, ...), the file the fd names; for connect, bind and sendto, the
    /// address the call names, as the recorder writes it (`10.0.0.2:8080`).
    pub path: Option<String>,
}

impl GatePoint {
    /// Whether a trapped call matches; `call_path` gives the call's path (see `path`), asked only
    /// when the gate names one.
    fn matches(&self, nr: i64, args: &[u64; 6], call_path: impl FnOnce() -> Option<String>) -> bool {
        if nr != self.nr {
            return false;
        }
        // rt_sigaction is held where it changes a disposition, never at a query (no new action).
        if nr == libc::SYS_rt_sigaction && args[1] == 0 {
            return false;
        }
        if let Some(path) = &self.path {
            if call_path().as_deref() != Some(path.as_str()) {
                return false;
            }
        }
        let Some(i) = self.arg_index.filter(|i| *i < 6) else {
            return true;
        };
        let value = args[i];
        self.arg_equals.is_none_or(|v| value == v) && self.arg_at_least.is_none_or(|v| value >= v)
    }
}

/// Which argument of a gateable syscall is its path, and which is the directory fd a relative
/// path is resolved against (the `*at` calls; the others resolve against the working directory).
fn path_argument(nr: i64) -> Option<(usize, Option<usize>)> {
    match nr {
        libc::SYS_openat
        | libc::SYS_openat2
        | libc::SYS_mkdirat
        | libc::SYS_renameat
        | libc::SYS_renameat2
        | libc::SYS_unlinkat
        | libc::SYS_linkat
        | libc::SYS_fchmodat
        | libc::SYS_fchownat => Some((1, Some(0))),
        libc::SYS_mount => Some((1, None)),
        libc::SYS_umount2
        | libc::SYS_symlinkat
        | libc::SYS_mkdir
        | libc::SYS_symlink
        | libc::SYS_open
        | libc::SYS_creat
        | libc::SYS_rename
        | libc::SYS_unlink
        | libc::SYS_rmdir
        | libc::SYS_link
        | libc::SYS_truncate
        | libc::SYS_chmod
        | libc::SYS_chown
        | libc::SYS_lchown => Some((0, None)),
        _ => None,
    }
}

/// Gateable calls whose first argument is the fd they act on.
fn fd_call(nr: i64) -> bool {
    matches!(
        nr,
        libc::SYS_read
            | libc::SYS_pread64
            | libc::SYS_readv
            | libc::SYS_preadv
            | libc::SYS_write
            | libc::SYS_pwrite64
            | libc::SYS_writev
            | libc::SYS_close
            | libc::SYS_fsync
            | libc::SYS_fdatasync
            | libc::SYS_ftruncate
            | libc::SYS_flock
    )
}

/// The path a trapped call of process `pid` acts on (see [`GatePoint::path`]); `read_string`
/// reads a string argument from the caller's memory.
fn call_path(pid: i32, nr: i64, args: &[u64; 6], read_string: impl Fn(u64) -> Option<String>) -> Option<String> {
    let link = |what: String| std::fs::read_link(format!("/proc/{pid}/{what}")).ok();
    if fd_call(nr) {
        return link(format!("fd/{}", args[0] as i32)).map(|p| p.display().to_string());
    }
    let (path_at, dirfd_at) = path_argument(nr)?;
    let given = read_string(args[path_at])?;
    if given.starts_with('/') {
        return Some(given);
    }
    let base = match dirfd_at.map(|i| args[i] as i32) {
        Some(dirfd) if dirfd != libc::AT_FDCWD => link(format!("fd/{dirfd}"))?,
        _ => link("cwd".into())?,
    };
    // Lexically: `./x` is x; `..` stays (a symlinked directory may make it mean elsewhere).
    let joined: std::path::PathBuf =
        base.join(given).components().filter(|c| *c != std::path::Component::CurDir).collect();
    Some(joined.display().to_string())
}

/// The address a trapped connect, bind or sendto names (`10.0.0.2:8080`, as the recorder writes
/// it); None for other calls, a sendto without one, or an address heisen does not name.
/// `read_bytes` reads that many bytes of the caller's memory.
fn call_address(nr: i64, args: &[u64; 6], read_bytes: impl Fn(u64, usize) -> Option<Vec<u8>>) -> Option<String> {
    let (at, len) = match nr {
        libc::SYS_connect | libc::SYS_bind => (1, 2),
        libc::SYS_sendto => (4, 5),
        _ => return None,
    };
    if args[at] == 0 {
        return None;
    }
    // A sockaddr_storage is 128 bytes; a longer length is the caller's mistake, not ours to read.
    heisen_recordings::sockaddr(&read_bytes(args[at], (args[len] as usize).min(128))?)
}

/// Reads up to `len` bytes at `addr` in process `pid`'s memory (fewer when the rest is unmapped).
fn read_bytes(pid: i32, addr: u64, len: usize) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let local = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    let remote = libc::iovec { iov_base: addr as *mut libc::c_void, iov_len: buf.len() };
    // SAFETY: `local` points at `buf`, which is live and as long as declared.
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    if n <= 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some(buf)
}

/// Reads a NUL-terminated string of at most 4 KiB at `addr` in process `pid`'s memory.
fn read_string(pid: i32, addr: u64) -> Option<String> {
    let mut out = Vec::new();
    let mut at = addr;
    while out.len() < 4096 {
        // Never read across a page boundary in one call: the next page may be unmapped.
        let chunk = (4096 - (at % 4096)) as usize;
        let mut buf = vec![0u8; chunk.min(256)];
        let local = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        let remote = libc::iovec { iov_base: at as *mut libc::c_void, iov_len: buf.len() };
        // SAFETY: `local` points at `buf`, which is live and as long as declared.
        let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
        if n <= 0 {
            return None;
        }
        let got = &buf[..n as usize];
        if let Some(end) = got.iter().position(|b| *b == 0) {
            out.extend_from_slice(&got[..end]);
            return String::from_utf8(out).ok();
        }
        out.extend_from_slice(got);
        at += n as u64;
    }
    None
}

/// Syscall number for a gateable syscall name (x86_64).
pub fn syscall_number(name: &str) -> Option<i64> {
    heisen_recordings::syscall(name).filter(|s| s.gateable).map(|s| s.nr)
}

/// A BPF program that returns USER_NOTIF for the given syscall numbers and ALLOW otherwise.
/// Built in the parent; the child only installs it (no allocation after fork).
pub struct Filter {
    program: Vec<libc::sock_filter>,
}

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;

fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter { code: code as u16, jt: 0, jf: 0, k }
}

fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code: code as u16, jt, jf, k }
}

impl Filter {
    pub fn new(numbers: &[i64]) -> Filter {
        Filter::sparing(numbers, None)
    }

    /// Like [`Filter::new`], but a call of syscall `nr` on fd `fd` (its first argument) is never
    /// trapped: the launcher's own `sendmsg` of the listener, made after the filter is installed
    /// and before exec, must not wait for the supervisor it is handing the listener to.
    pub fn sparing(numbers: &[i64], spare: Option<(i64, i32)>) -> Filter {
        use libc::{BPF_ABS, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W};
        let mut nrs: Vec<i64> = numbers.to_vec();
        nrs.sort_unstable();
        nrs.dedup();
        let mut program = vec![
            stmt(BPF_LD | BPF_W | BPF_ABS, 4), // seccomp_data.arch
            jump(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
            stmt(BPF_RET | BPF_K, libc::SECCOMP_RET_ALLOW),
            stmt(BPF_LD | BPF_W | BPF_ABS, 0), // seccomp_data.nr
        ];
        if let Some((nr, fd)) = spare {
            program.extend([
                jump(BPF_JMP | BPF_JEQ | BPF_K, nr as u32, 0, 3),
                stmt(BPF_LD | BPF_W | BPF_ABS, 16), // seccomp_data.args[0], low half
                jump(BPF_JMP | BPF_JEQ | BPF_K, fd as u32, 0, 1),
                stmt(BPF_RET | BPF_K, libc::SECCOMP_RET_ALLOW),
                stmt(BPF_LD | BPF_W | BPF_ABS, 0), // seccomp_data.nr again
            ]);
        }
        let n = nrs.len();
        for (i, nr) in nrs.iter().enumerate() {
            // On a match jump over the remaining compares and the ALLOW to the USER_NOTIF return.
            let to_notify = (n - i) as u8;
            program.push(jump(BPF_JMP | BPF_JEQ | BPF_K, *nr as u32, to_notify, 0));
        }
        program.push(stmt(BPF_RET | BPF_K, libc::SECCOMP_RET_ALLOW));
        program.push(stmt(BPF_RET | BPF_K, libc::SECCOMP_RET_USER_NOTIF));
        Filter { program }
    }

    /// Installs the filter on the calling thread and returns the notification listener fd.
    /// Async-signal-safe: meant for `pre_exec` in a freshly forked child.
    pub fn install(&self) -> std::io::Result<RawFd> {
        let prog = libc::sock_fprog { len: self.program.len() as u16, filter: self.program.as_ptr() as *mut _ };
        // SAFETY: getuid/prctl take no pointers; NO_NEW_PRIVS is required without CAP_SYS_ADMIN.
        unsafe {
            if libc::geteuid() != 0 && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        // SAFETY: `prog` points at `self.program`, which outlives the call; the kernel copies it.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
                &prog as *const libc::sock_fprog,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(fd as RawFd)
    }
}

/// Sends `fd` over the unix socket `sock` (SCM_RIGHTS). Async-signal-safe.
pub fn send_fd(sock: RawFd, fd: RawFd) -> std::io::Result<()> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
    let mut space = [0u8; 64];
    // SAFETY: CMSG_SPACE is a pure computation.
    let cmsg_space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    // SAFETY: msghdr is plain data; zeroed is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = space.as_mut_ptr().cast();
    msg.msg_controllen = cmsg_space;
    // SAFETY: msg_control points at `space`, large enough for one fd's cmsg; CMSG_* stay inside it.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
        if libc::sendmsg(sock, &msg, 0) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Receives one fd sent with [`send_fd`].
pub fn recv_fd(sock: RawFd) -> std::io::Result<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
    let mut space = [0u8; 64];
    // SAFETY: zeroed msghdr is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = space.as_mut_ptr().cast();
    msg.msg_controllen = space.len();
    // SAFETY: msg points at live buffers; the kernel fills at most their sizes.
    let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n <= 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "child sent no seccomp listener fd"));
    }
    // SAFETY: the kernel wrote a valid control message into `space` (checked non-null below).
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null() || (*cmsg).cmsg_type != libc::SCM_RIGHTS {
            return Err(std::io::Error::other("no SCM_RIGHTS message from child"));
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>());
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// A process reached a gate point and is held.
#[derive(Clone, Debug)]
pub struct Held {
    pub hold_id: u64,
    pub gate: String,
    pub pid: i32,
}

/// What happened to a hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldEnd {
    Released,
    TimedOut,
    /// Nobody watches the capture's gates (no open gate channel): the call went on at once.
    Unwatched,
}

/// Pending holds of one agent, each of one capture, shared by supervisors (waiting) and the
/// captures' gate channels (releasing).
#[derive(Default)]
pub struct HoldRegistry {
    next: Mutex<u64>,
    waiting: Mutex<HashMap<u64, (String, mpsc::Sender<()>)>>,
}

impl HoldRegistry {
    fn register(&self, capture: &str) -> (u64, mpsc::Receiver<()>) {
        let mut next = self.next.lock().expect("hold counter");
        *next += 1;
        let (tx, rx) = mpsc::channel();
        self.waiting.lock().expect("holds").insert(*next, (capture.to_string(), tx));
        (*next, rx)
    }

    /// Releases a hold of `capture`; false if it is unknown (already released or timed out) or
    /// another capture's: one coordinator never releases another's holds.
    pub fn release(&self, hold_id: u64, capture: &str) -> bool {
        let mut waiting = self.waiting.lock().expect("holds");
        if waiting.get(&hold_id).is_none_or(|(c, _)| c != capture) {
            return false;
        }
        waiting.remove(&hold_id).is_some_and(|(_, tx)| tx.send(()).is_ok())
    }

    /// Releases every pending hold of `capture` (its gate channel closed).
    pub fn release_capture(&self, capture: &str) -> usize {
        let mut waiting = self.waiting.lock().expect("holds");
        let ids: Vec<u64> = waiting.iter().filter(|(_, (c, _))| c == capture).map(|(id, _)| *id).collect();
        ids.iter().filter_map(|id| waiting.remove(id)).filter(|(_, tx)| tx.send(()).is_ok()).count()
    }

    /// Releases every pending hold (the agent stops).
    pub fn release_all(&self) -> usize {
        let drained: Vec<_> = self.waiting.lock().expect("holds").drain().collect();
        drained.iter().filter(|(_, (_, tx))| tx.send(()).is_ok()).count()
    }

    fn forget(&self, hold_id: u64) {
        self.waiting.lock().expect("holds").remove(&hold_id);
    }
}

/// Asks the kernel to wake the held task on the CPU of the supervisor that answers it
/// (`SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP`): cross-CPU wake-ups dominate a hold/release round trip
/// on this kind of machine (docs/KERNEL.md). Best effort: older kernels refuse the flag.
pub fn sync_wake_up(listener: RawFd) {
    const SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP: u64 = 1;
    // SAFETY: SET_FLAGS takes the flags by value; the fd is a seccomp listener.
    unsafe { libc::ioctl(listener, libc::SECCOMP_IOCTL_NOTIF_SET_FLAGS, SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP) };
}

/// How long a released call may take to go through before the coordinator is told anyway (a
/// call that blocks, a process that computes without a syscall).
pub const THROUGH_BOUND: Duration = Duration::from_millis(100);

/// What `/proc/<tid>/syscall` says of a task: `Some(words)` (the syscall number and arguments it
/// is blocked in, or `running`, or `-1 ...`), `None` when the task is gone.
fn current_call(tid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{tid}/syscall")).ok()
}

/// Waits (at most `bound`) until task `tid`, released at call `nr` with `args`, has made that
/// call and moved past it: it is gone, or blocked in another call (or the same call with other
/// arguments). A task on a CPU (`running`) may still be inside the released call: not yet.
fn wait_through(tid: i32, nr: i64, args: &[u64; 6], bound: Duration) -> bool {
    let held: Vec<String> = std::iter::once(nr.to_string()).chain(args.iter().map(|a| format!("{a:#x}"))).collect();
    let start = std::time::Instant::now();
    while start.elapsed() < bound {
        let Some(now) = current_call(tid) else { return true };
        let words: Vec<&str> = now.split_whitespace().collect();
        let moved = match words.first() {
            None => true,
            Some(&"running") => false,
            Some(&"-1") => false,
            Some(_) => words.iter().take(7).copied().ne(held.iter().map(String::as_str)),
        };
        if moved {
            return true;
        }
        std::thread::sleep(Duration::from_micros(50));
    }
    false
}

/// Serves one launched process's seccomp notifications until every task using the filter is
/// gone. `on_hold` is told of each hold (to notify the coordinator of `capture`) and says whether
/// anyone was told: when nobody watches the capture's gates, the call goes on at once
/// ([`HoldEnd::Unwatched`]) instead of waiting for a release nobody will send; `on_end` of how it ended;
/// `on_through` when a released call has gone through (made, and the task past it or gone), or
/// [`THROUGH_BOUND`] passed, so that what the coordinator does next comes after it.
pub fn supervise(
    listener: OwnedFd,
    gates: Vec<GatePoint>,
    (registry, capture): (Arc<HoldRegistry>, &str),
    timeout: Duration,
    on_hold: impl Fn(&Held) -> bool,
    on_end: impl Fn(&Held, HoldEnd),
    on_through: impl Fn(&Held),
) {
    let fd = listener.as_raw_fd();
    sync_wake_up(fd);
    let mut seen: Vec<u32> = vec![0; gates.len()];
    loop {
        let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut pfd, 1, 500) };
        if ready < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        if pfd.revents & libc::POLLHUP != 0 {
            return; // every task using the filter has exited
        }
        if pfd.revents & libc::POLLIN == 0 {
            continue;
        }
        // SAFETY: seccomp_notif is plain data; the kernel requires it zeroed before RECV.
        let mut notif: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: fd is a seccomp listener; notif is a correctly sized out-buffer.
        if unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_RECV, &mut notif) } < 0 {
            continue; // the target died between poll and recv (ENOENT), or a signal: try again
        }
        let nr = notif.data.nr as i64;
        let args = notif.data.args;
        let mut hold = None;
        let pid = notif.pid as i32;
        // The path is read while the caller is stopped in the trap; checking the notification is
        // still valid afterwards makes sure the memory read was of that caller.
        let still_valid = || {
            let mut id = notif.id;
            // SAFETY: ID_VALID reads the u64 id from a valid pointer.
            unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_ID_VALID, &mut id) == 0 }
        };
        let read_path = |addr: u64| read_string(pid, addr).filter(|_| still_valid());
        let read_address = |addr: u64, len: usize| read_bytes(pid, addr, len).filter(|_| still_valid());
        // Asked at most once per trapped call, and only when a gate names a path.
        let path = std::cell::OnceCell::new();
        let what = || call_address(nr, &args, read_address).or_else(|| call_path(pid, nr, &args, read_path));
        for (i, gate) in gates.iter().enumerate() {
            if gate.matches(nr, &args, || path.get_or_init(what).clone()) {
                seen[i] += 1;
                if seen[i] == gate.nth && hold.is_none() {
                    hold = Some(gate.id.clone());
                }
            }
        }
        let mut released = None;
        if let Some(gate) = hold {
            let (hold_id, rx) = registry.register(capture);
            let held = Held { hold_id, gate, pid: notif.pid as i32 };
            let end = if !on_hold(&held) {
                registry.forget(hold_id);
                HoldEnd::Unwatched
            } else {
                match rx.recv_timeout(timeout) {
                    Ok(()) => HoldEnd::Released,
                    Err(_) => {
                        registry.forget(hold_id);
                        HoldEnd::TimedOut
                    }
                }
            };
            on_end(&held, end);
            released = (end == HoldEnd::Released).then_some(held);
        }
        let mut resp = libc::seccomp_notif_resp {
            id: notif.id,
            val: 0,
            error: 0,
            flags: libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
        };
        // SAFETY: fd is the listener and resp a valid response for `notif.id`. A failure means the
        // target died meanwhile, which needs no answer.
        unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_SEND, &mut resp) };
        if let Some(held) = released {
            if !wait_through(held.pid, nr, &args, THROUGH_BOUND) {
                tracing::debug!(gate = %held.gate, pid = held.pid, "released call not through within the bound");
            }
            on_through(&held);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A task still blocked in the call it was released at is not through; one blocked in another
    /// call, or gone, is.
    #[test]
    fn a_released_call_is_through_once_the_task_moved_past_it_or_is_gone() {
        let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        let tid = child.id() as i32;
        // Until it is asleep, it is loading (running, or in other calls).
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let words = loop {
            let now = current_call(tid).unwrap_or_default();
            let w: Vec<String> = now.split_whitespace().map(str::to_string).collect();
            let asleep = w.first().and_then(|n| n.parse::<i64>().ok()).is_some_and(|n| n == libc::SYS_clock_nanosleep);
            if asleep || std::time::Instant::now() > deadline {
                break w;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let nr: i64 = words[0].parse().expect("sleep blocks in clock_nanosleep");
        let mut args = [0u64; 6];
        for (a, w) in args.iter_mut().zip(&words[1..7]) {
            *a = u64::from_str_radix(w.trim_start_matches("0x"), 16).unwrap();
        }
        assert!(!wait_through(tid, nr, &args, Duration::from_millis(30)), "still in its call: {words:?}");
        assert!(wait_through(tid, libc::SYS_renameat, &args, Duration::from_millis(30)), "in another call");
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(wait_through(tid, nr, &args, Duration::from_millis(30)), "gone");
    }

    #[test]
    fn gate_points_match_number_and_arguments() {
        let sighup = GatePoint {
            id: "k".into(),
            nr: libc::SYS_kill,
            nth: 1,
            arg_index: Some(1),
            arg_equals: Some(1),
            arg_at_least: None,
            path: None,
        };
        let no_path = || None;
        assert!(sighup.matches(libc::SYS_kill, &[42, 1, 0, 0, 0, 0], no_path));
        assert!(!sighup.matches(libc::SYS_kill, &[42, 15, 0, 0, 0, 0], no_path));
        assert!(!sighup.matches(libc::SYS_write, &[42, 1, 0, 0, 0, 0], no_path));
        let socket_write = GatePoint {
            id: "w".into(),
            nr: libc::SYS_write,
            nth: 3,
            arg_index: Some(0),
            arg_equals: None,
            arg_at_least: Some(3),
            path: None,
        };
        assert!(socket_write.matches(libc::SYS_write, &[3, 0, 0, 0, 0, 0], no_path));
        assert!(!socket_write.matches(libc::SYS_write, &[1, 0, 0, 0, 0, 0], no_path));
        let mount_table = GatePoint {
            id: "o".into(),
            nr: libc::SYS_openat,
            nth: 1,
            arg_index: None,
            arg_equals: None,
            arg_at_least: None,
            path: Some("/proc/self/mountinfo".into()),
        };
        let at = |p: &'static str| move || Some(p.to_string());
        assert!(mount_table.matches(libc::SYS_openat, &[0; 6], at("/proc/self/mountinfo")));
        assert!(!mount_table.matches(libc::SYS_openat, &[0; 6], at("/etc/ld.so.cache")));
        assert!(!mount_table.matches(libc::SYS_openat, &[0; 6], no_path));
        // A SIGHUP handler installed, not the query before it (no new action).
        let handler = GatePoint {
            id: "h".into(),
            nr: libc::SYS_rt_sigaction,
            nth: 1,
            arg_index: Some(0),
            arg_equals: Some(1),
            arg_at_least: None,
            path: None,
        };
        assert!(!handler.matches(libc::SYS_rt_sigaction, &[1, 0, 0x7000, 8, 0, 0], no_path));
        assert!(handler.matches(libc::SYS_rt_sigaction, &[1, 0x6000, 0x7000, 8, 0, 0], no_path));
        assert!(!handler.matches(libc::SYS_rt_sigaction, &[15, 0x6000, 0x7000, 8, 0, 0], no_path));
    }

    /// A socket call's gate path is the address it names, as the recorder writes it: connect and
    /// bind at their second argument, sendto at its fifth (none when it has none).
    #[test]
    fn a_socket_calls_path_is_the_address_it_names() {
        let mut sin = [0u8; 16];
        sin[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        sin[2..4].copy_from_slice(&8080u16.to_be_bytes());
        sin[4..8].copy_from_slice(&[10, 0, 0, 2]);
        let memory = |addr: u64, len: usize| (addr == 0x1000).then(|| sin[..len.min(sin.len())].to_vec());
        let connect = [3, 0x1000, 16, 0, 0, 0];
        assert_eq!(call_address(libc::SYS_connect, &connect, memory).as_deref(), Some("10.0.0.2:8080"));
        assert_eq!(call_address(libc::SYS_bind, &connect, memory).as_deref(), Some("10.0.0.2:8080"));
        assert_eq!(
            call_address(libc::SYS_sendto, &[3, 0x9, 4, 0, 0x1000, 16], memory).as_deref(),
            Some("10.0.0.2:8080")
        );
        assert_eq!(call_address(libc::SYS_sendto, &[3, 0x9, 4, 0, 0, 0], memory), None, "no address");
        assert_eq!(call_address(libc::SYS_connect, &[3, 0x2000, 16, 0, 0, 0], memory), None, "unreadable");
        assert_eq!(call_address(libc::SYS_openat, &connect, memory), None);
    }

    #[test]
    fn a_calls_path_is_absolute_resolved_or_the_file_its_fd_names() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cache.json");
        std::fs::write(&file, "{}").unwrap();
        let f = std::fs::File::open(&file).unwrap();
        let dirf = std::fs::File::open(dir.path()).unwrap();
        let pid = std::process::id() as i32;
        let given = |p: &'static str| move |_| Some(p.to_string());
        let fd = |f: &std::fs::File| std::os::fd::AsRawFd::as_raw_fd(f) as u64;
        let abs = file.display().to_string();
        // read(fd, ...): the file the fd names.
        assert_eq!(call_path(pid, libc::SYS_read, &[fd(&f), 0, 0, 0, 0, 0], given("x")), Some(abs.clone()));
        assert_eq!(call_path(pid, libc::SYS_close, &[9999, 0, 0, 0, 0, 0], given("x")), None, "no such fd");
        // openat(dirfd, "cache.json"): against the directory fd; openat(AT_FDCWD, "./x"): the cwd.
        let at_dir = [fd(&dirf), 1, 0, 0, 0, 0];
        assert_eq!(call_path(pid, libc::SYS_openat, &at_dir, given("cache.json")), Some(abs.clone()));
        let cwd = std::env::current_dir().unwrap().join("x").display().to_string();
        let at_cwd = [libc::AT_FDCWD as u64, 1, 0, 0, 0, 0];
        assert_eq!(call_path(pid, libc::SYS_openat, &at_cwd, given("./x")), Some(cwd));
        // An absolute path is taken as given (`/proc/self/...` stays the caller's own).
        assert_eq!(
            call_path(pid, libc::SYS_openat, &at_cwd, given("/proc/self/mountinfo")).as_deref(),
            Some("/proc/self/mountinfo")
        );
        assert_eq!(call_path(pid, libc::SYS_unlink, &[1, 0, 0, 0, 0, 0], given("/a")).as_deref(), Some("/a"));
        // kill has no path.
        assert_eq!(call_path(pid, libc::SYS_kill, &[1, 1, 0, 0, 0, 0], given("/a")), None);
    }

    #[test]
    fn strings_are_read_from_a_process_memory() {
        let text = c"/proc/self/mountinfo";
        let pid = std::process::id() as i32;
        assert_eq!(read_string(pid, text.as_ptr() as u64).as_deref(), Some("/proc/self/mountinfo"));
        assert_eq!(read_string(pid, 8), None, "an unmapped address reads nothing");
    }

    #[test]
    fn filter_jumps_land_on_notify() {
        let filter = Filter::new(&[libc::SYS_kill, libc::SYS_write, libc::SYS_kill]);
        let p = &filter.program;
        let notify = p.len() - 1;
        assert_eq!(p[notify].k, libc::SECCOMP_RET_USER_NOTIF);
        for (i, ins) in p.iter().enumerate().skip(4).take(2) {
            assert_eq!(i + 1 + ins.jt as usize, notify, "compare {i} jumps to notify");
        }
    }
}
