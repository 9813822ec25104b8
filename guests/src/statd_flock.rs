//! Story 5 (statd-flock): exclusive locks hang on nodes where the status daemon never started.
//!
//! - `statd`: the status monitor. Answers `MON NAME` with `OK` on a unix socket.
//! - `lockd`: the node's lock manager. At start it holds a shared "grace" lock on the lock file
//!   (like NLM's grace period after a restart) and asks statd to monitor it; only when statd
//!   answers does the grace period end and the lock go away. Without statd it holds the lock
//!   forever: shared locks of others still succeed, exclusive ones block.
//! - `php-worker`: takes `LOCK_SH` (returns at once either way), then `LOCK_EX`, which blocks
//!   while the grace lock is held. It gives up after `--timeout-ms` (SIGALRM interrupts the
//!   flock with EINTR) and exits 1: the hang a real worker shows in uninterruptible sleep.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

use crate::{io, Failure, Flags};

pub(crate) fn statd(flags: &Flags<'_>) -> Result<(), Failure> {
    let socket = flags.required("--socket")?;
    let _ = std::fs::remove_file(socket);
    if let Some(dir) = Path::new(socket).parent() {
        std::fs::create_dir_all(dir).map_err(io("create socket dir"))?;
    }
    let listener = UnixListener::bind(socket).map_err(io("bind status socket"))?;
    println!("statd: monitoring requests on {socket}");
    println!("ready");
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let mut line = String::new();
        if BufReader::new(&stream).read_line(&mut line).is_ok() && line.starts_with("MON ") {
            println!("statd: monitoring {}", line[4..].trim());
            let _ = stream.write_all(b"OK\n");
        }
    }
    Ok(())
}

fn flock(fd: i32, op: i32) -> std::io::Result<()> {
    // SAFETY: flock takes an fd and flags by value.
    if unsafe { libc::flock(fd, op) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn ask_statd(socket: &str) -> bool {
    let Ok(mut stream) = UnixStream::connect(socket) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(b"MON lockd\n").is_err() {
        return false;
    }
    let mut reply = String::new();
    BufReader::new(&stream).read_line(&mut reply).is_ok() && reply.trim() == "OK"
}

fn open_lockfile(path: &str) -> Result<std::fs::File, Failure> {
    if let Some(dir) = Path::new(path).parent() {
        std::fs::create_dir_all(dir).map_err(io("create lock dir"))?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .map_err(io("open lock file"))
}

pub(crate) fn lockd(flags: &Flags<'_>) -> Result<(), Failure> {
    let socket = flags.required("--statd")?;
    let lockfile = flags.required("--lockfile")?;
    let file = open_lockfile(lockfile)?;
    flock(file.as_raw_fd(), libc::LOCK_SH).map_err(io("grace lock"))?;
    // One attempt before saying ready, so a node with statd is out of grace before work starts.
    let mut monitored = ask_statd(socket);
    if monitored {
        flock(file.as_raw_fd(), libc::LOCK_UN).map_err(io("end grace"))?;
        println!("lockd: statd answered; grace period over");
    } else {
        println!("lockd: statd not running at {socket}; holding the grace lock on {lockfile} until it answers");
    }
    println!("ready");
    loop {
        std::thread::sleep(Duration::from_millis(100));
        if !monitored && ask_statd(socket) {
            monitored = true;
            flock(file.as_raw_fd(), libc::LOCK_UN).map_err(io("end grace"))?;
            println!("lockd: statd answered; grace period over");
        }
    }
}

extern "C" fn on_alarm(_: libc::c_int) {}

pub(crate) fn php_worker(flags: &Flags<'_>) -> Result<(), Failure> {
    let lockfile = flags.required("--lockfile")?;
    let timeout_ms = flags.number("--timeout-ms", 1500)?;
    let file = open_lockfile(lockfile)?;
    let fd = file.as_raw_fd();
    flock(fd, libc::LOCK_SH).map_err(io("flock(LOCK_SH)"))?;
    println!("shared lock on {lockfile}: ok");
    flock(fd, libc::LOCK_UN).map_err(io("flock(LOCK_UN)"))?;
    // SIGALRM without SA_RESTART: the blocked flock returns EINTR when the timer fires.
    // SAFETY: a zeroed sigaction with a plain handler is valid; setitimer takes values by pointer
    // to locals.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_alarm as *const () as usize;
        libc::sigaction(libc::SIGALRM, &action, std::ptr::null_mut());
        let timer = libc::itimerval {
            it_interval: libc::timeval { tv_sec: 0, tv_usec: 0 },
            it_value: libc::timeval {
                tv_sec: (timeout_ms / 1000) as libc::time_t,
                tv_usec: ((timeout_ms % 1000) * 1000) as libc::suseconds_t,
            },
        };
        libc::setitimer(libc::ITIMER_REAL, &timer, std::ptr::null_mut());
    }
    match flock(fd, libc::LOCK_EX) {
        Ok(()) => {
            println!("exclusive lock on {lockfile}: ok");
            Ok(())
        }
        Err(e) if e.raw_os_error() == Some(libc::EINTR) => Err(Failure {
            code: 1,
            message: format!(
                "flock(LOCK_EX) on {lockfile} blocked for {timeout_ms} ms; giving up (a real worker hangs here)"
            ),
        }),
        Err(e) => Err(io("flock(LOCK_EX)")(e)),
    }
}
