//! The agent's gate, measured for `heisen bench record`: a workload run under a seccomp filter,
//! its trapped calls served by heisen's own supervisor or by the least a supervisor can do.
//! The coordinator prints the rows; the mechanism they measure stays private to the agent.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use crate::gate::{self, Filter, GatePoint, HoldRegistry};

/// Who answers the trapped calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Supervisor {
    /// Nobody: the workload never makes the filtered calls (the filter's own cost).
    None,
    /// The least a user-notification supervisor can do: receive, answer CONTINUE.
    Bare,
    /// heisen's supervisor with a gate that never holds: every call is a hold/release round trip
    /// without the coordinator's decision time.
    Heisen,
}

/// Runs `program args` with a seccomp filter trapping syscall numbers `nrs` (none: allow-all),
/// served by `supervisor`, pinned to CPU 0 when `pinned`; returns what it printed on stdout.
pub fn run_gated(
    program: &Path,
    args: &[String],
    nrs: &[i64],
    pinned: bool,
    supervisor: Supervisor,
) -> std::io::Result<String> {
    let filter = Filter::new(nrs);
    let mut socks = [0; 2];
    // SAFETY: socks is a valid out-array of two fds.
    if unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0, socks.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned here.
    let (parent, child) = unsafe { (OwnedFd::from_raw_fd(socks[0]), OwnedFd::from_raw_fd(socks[1])) };
    let child_fd = child.as_raw_fd();
    let mut cmd = Command::new(program);
    cmd.args(args).stdout(Stdio::piped());
    // SAFETY: only async-signal-safe calls (sched_setaffinity, seccomp, sendmsg, close).
    unsafe {
        cmd.pre_exec(move || {
            if pinned {
                pin_to_cpu0();
            }
            let listener = filter.install()?;
            gate::send_fd(child_fd, listener)?;
            libc::close(listener);
            Ok(())
        });
    }
    let proc = cmd.spawn()?;
    drop(child);
    let listener = gate::recv_fd(parent.as_raw_fd())?;
    let serve: Option<fn(OwnedFd)> = match supervisor {
        Supervisor::None => None,
        Supervisor::Bare => Some(bare_supervisor),
        Supervisor::Heisen => Some(heisen_supervisor),
    };
    let server = serve.map(|serve| {
        std::thread::spawn(move || {
            if pinned {
                pin_to_cpu0();
            }
            serve(listener)
        })
    });
    let out = proc.wait_with_output()?;
    if let Some(server) = server {
        let _ = server.join();
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Pins the calling thread (or a child about to exec) to CPU 0.
pub fn pin_to_cpu0() {
    // SAFETY: a zeroed cpu_set_t with CPU 0 set; sched_setaffinity on the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn heisen_supervisor(listener: OwnedFd) {
    let never = GatePoint {
        id: "never".into(),
        nr: libc::SYS_write,
        nth: u32::MAX,
        arg_index: None,
        arg_equals: None,
        arg_at_least: None,
        path: None,
    };
    gate::supervise(
        listener,
        vec![never],
        (Arc::new(HoldRegistry::default()), "bench"),
        Duration::from_secs(1),
        |_| true,
        |_, _| {},
        |_| {},
    );
}

fn bare_supervisor(listener: OwnedFd) {
    let fd = listener.as_raw_fd();
    gate::sync_wake_up(fd);
    loop {
        // SAFETY: seccomp_notif is plain data; the kernel requires it zeroed before RECV.
        let mut notif: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: fd is the listener; notif is a correctly sized out-buffer.
        if unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_RECV, &mut notif) } < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return; // every task using the filter is gone
        }
        let mut resp = libc::seccomp_notif_resp {
            id: notif.id,
            val: 0,
            error: 0,
            flags: libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
        };
        // SAFETY: a response for the notification just received.
        unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_SEND, &mut resp) };
    }
}
