//! Guest programs with known races: miniatures of the stories in `docs/STORIES.md`, small enough to
//! read in one sitting. They are real programs (real sockets, signals, files); heisen observes
//! them like any other process. Run as `heisen-guest NAME ARGS...`: the binary of this crate,
//! installed beside the agent, which `{fixture}` in a scenario resolves to.
//!
//! Story 1 (mountd-sighup):
//! - `export-server`: an export service. Writes arrive as length-prefixed chunks on TCP and are
//!   appended to a file in the export dir; each is answered with a status byte (0 ok, 13 EACCES).
//!   On SIGHUP it drops its export list and re-reads it (`--reload-ms`); while it reloads, every
//!   write is refused with EACCES, like mountd briefly unexporting during a reload.
//! - `writer`: writes `--chunks` chunks to `--file` on the export mount, one `write(2)` per chunk,
//!   and fails with exit code 13 at the first EACCES. Without a mount (no FUSE) it streams the
//!   chunks to `--server` itself and reports a refusal the same way.
//! - `export-mount`: the client's view of the export (a FUSE mount, like an NFS client): a
//!   refused chunk makes the writer's own `write(2)` fail with EACCES.
//! - `remount`: the "other test": after its own work (`--delay-ms`, e.g. `0..300` picks a delay
//!   from its pid and the clock) it signals the server named by a pidfile with SIGHUP.
//!
//! Story 2 (lost-wakeup): `eventd`, `upload`, `healthcheck`; see `lost_wakeup.rs`.
//! Story 3 (butterfly): `tmpfs-mount`, `tidy-mounts`, `postinst`; see `butterfly.rs`.
//! Story 4 (cron-twin): `cron-host` (busybox crond), `pickup`, `submit`; see `cron_twin.rs`.
//! Story 5 (statd-flock): `statd`, `lockd`, `php-worker`; see `statd_flock.rs`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod butterfly;
mod cron_twin;
mod export_mount;
mod lost_wakeup;
mod statd_flock;
mod workloads;

/// The guest programs.
const NAMES: &[&str] = &[
    "export-server",
    "export-mount",
    "writer",
    "remount",
    "tmpfs-mount",
    "tidy-mounts",
    "postinst",
    "cron-host",
    "pickup",
    "submit",
    "statd",
    "lockd",
    "php-worker",
    "eventd",
    "upload",
    "healthcheck",
    "storm",
    "load",
    "files",
    "getppid",
];

/// Runs the guest program `args[0]` with the rest of `args`; returns its exit code.
pub fn run(args: Vec<String>) -> i32 {
    let Some((name, rest)) = args.split_first() else {
        eprintln!("usage: fixture NAME [ARGS...]; names: {}", NAMES.join(", "));
        return 2;
    };
    name_process(name);
    let result = match name.as_str() {
        "export-server" => export_server(&Flags::new(rest)),
        "writer" => writer(&Flags::new(rest)),
        "remount" => remount(&Flags::new(rest)),
        "export-mount" => export_mount::run(&Flags::new(rest)),
        "storm" => workloads::storm(&Flags::new(rest)),
        "load" => workloads::load(&Flags::new(rest)),
        "files" => workloads::files(&Flags::new(rest)),
        "getppid" => workloads::getppid(&Flags::new(rest)),
        "tmpfs-mount" => butterfly::tmpfs_mount(&Flags::new(rest)),
        "tidy-mounts" => butterfly::tidy_mounts(&Flags::new(rest)),
        "postinst" => butterfly::postinst(&Flags::new(rest)),
        "cron-host" => cron_twin::cron_host(&Flags::new(rest)),
        "pickup" => cron_twin::pickup(&Flags::new(rest)),
        "submit" => cron_twin::submit(&Flags::new(rest)),
        "statd" => statd_flock::statd(&Flags::new(rest)),
        "lockd" => statd_flock::lockd(&Flags::new(rest)),
        "php-worker" => statd_flock::php_worker(&Flags::new(rest)),
        "eventd" => lost_wakeup::eventd(&Flags::new(rest)),
        "upload" => lost_wakeup::upload(&Flags::new(rest)),
        "healthcheck" => lost_wakeup::healthcheck(&Flags::new(rest)),
        other => Err(Failure::usage(format!("unknown fixture `{other}`; names: {}", NAMES.join(", ")))),
    };
    match result {
        Ok(()) => 0,
        Err(f) => {
            eprintln!("{name}: {}", f.message);
            f.code
        }
    }
}

/// Blocks SIGTERM and SIGINT in this thread, so they wait for [`wait_for_stop`] instead of
/// killing the process midway (a stop during mounting still unmounts).
pub(crate) fn block_stop_signals() -> libc::sigset_t {
    // SAFETY: sigset manipulation on a local, then pthread_sigmask on this thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Waits (sigwait, no handler races) for a signal of `set`, blocked by [`block_stop_signals`].
pub(crate) fn wait_for_stop(set: &libc::sigset_t) {
    let mut sig = 0;
    // SAFETY: a valid, initialised set and out-pointer.
    unsafe { libc::sigwait(set, &mut sig) };
}

/// Sets the kernel comm to the fixture's name, so recordings say `remount`, not the launcher's name.
fn name_process(name: &str) {
    let mut comm = [0u8; 16];
    let len = name.len().min(15);
    comm[..len].copy_from_slice(&name.as_bytes()[..len]);
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes from `comm`.
    unsafe { libc::prctl(libc::PR_SET_NAME, comm.as_ptr() as libc::c_ulong, 0, 0, 0) };
}

pub(crate) struct Failure {
    code: i32,
    message: String,
}

impl Failure {
    pub(crate) fn usage(message: String) -> Failure {
        Failure { code: 2, message }
    }
}

pub(crate) struct Flags<'a>(&'a [String]);

impl<'a> Flags<'a> {
    fn new(args: &'a [String]) -> Self {
        Flags(args)
    }

    fn get(&self, flag: &str) -> Option<&'a str> {
        self.0.iter().position(|a| a == flag).and_then(|i| self.0.get(i + 1)).map(String::as_str)
    }

    pub(crate) fn required(&self, flag: &str) -> Result<&'a str, Failure> {
        self.get(flag).ok_or_else(|| Failure::usage(format!("missing {flag}")))
    }

    pub(crate) fn number(&self, flag: &str, default: u64) -> Result<u64, Failure> {
        match self.get(flag) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| Failure::usage(format!("{flag} wants a number, got `{v}`"))),
        }
    }
}

pub(crate) fn io(what: &str) -> impl Fn(std::io::Error) -> Failure + '_ {
    move |e| Failure { code: 1, message: format!("{what}: {e}") }
}

fn export_server(flags: &Flags<'_>) -> Result<(), Failure> {
    let listen = flags.required("--listen")?;
    let dir = std::path::PathBuf::from(flags.required("--dir")?);
    let reload = Duration::from_millis(flags.number("--reload-ms", 100)?);
    std::fs::create_dir_all(&dir).map_err(io("create export dir"))?;
    let exports_file = dir.join("exports");
    std::fs::write(&exports_file, "/export *(rw)\n").map_err(io("write export list"))?;
    if let Some(pidfile) = flags.get("--pidfile") {
        std::fs::write(pidfile, format!("{}\n", std::process::id())).map_err(io("write pidfile"))?;
    }
    // Block SIGHUP in every thread; a dedicated thread takes it with sigwait, like a daemon's
    // reload loop. Threads spawned below inherit the mask.
    // SAFETY: sigset manipulation on a local, then pthread_sigmask on this thread.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    let exported = Arc::new(AtomicBool::new(true));
    let reloading = exported.clone();
    std::thread::spawn(move || loop {
        let mut sig = 0;
        // SAFETY: set is a valid, initialised sigset; sig a valid out-pointer.
        if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
            continue;
        }
        reloading.store(false, Ordering::SeqCst);
        println!("reloading exports (SIGHUP)");
        // Re-read the export list slowly, as mountd does under load.
        std::thread::sleep(reload);
        let _ = std::fs::read_to_string(&exports_file);
        reloading.store(true, Ordering::SeqCst);
        println!("exports reloaded");
    });
    let listener = TcpListener::bind(listen).map_err(io("bind"))?;
    println!("listening on {}", listener.local_addr().map(|a| a.to_string()).unwrap_or_default());
    let mut client = 0u32;
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        client += 1;
        let (exported, path) = (exported.clone(), dir.join(format!("capture-{client}.dat")));
        std::thread::spawn(move || serve_writes(stream, &exported, &path));
    }
    Ok(())
}

fn serve_writes(mut stream: TcpStream, exported: &AtomicBool, path: &std::path::Path) {
    let Ok(mut file) = std::fs::File::create(path) else {
        return;
    };
    let mut chunk = Vec::new();
    loop {
        let mut len = [0u8; 4];
        if stream.read_exact(&mut len).is_err() {
            return;
        }
        chunk.resize(u32::from_le_bytes(len) as usize, 0);
        if stream.read_exact(&mut chunk).is_err() {
            return;
        }
        let status = if exported.load(Ordering::SeqCst) && file.write_all(&chunk).is_ok() { 0u8 } else { 13u8 };
        if stream.write_all(&[status]).is_err() {
            return;
        }
    }
}

/// Connects to `addr`, retrying for up to 5 s while the server starts.
pub(crate) fn connect(addr: &str) -> Result<TcpStream, Failure> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpStream::connect(addr) {
            Ok(s) => return Ok(s),
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(io("connect")(e)),
        }
    }
}

/// Writes all of `bytes` to `fd` with as few `write(2)` calls as the kernel allows.
pub(crate) fn write_all_raw(fd: i32, bytes: &[u8]) -> std::io::Result<()> {
    let mut sent = 0;
    while sent < bytes.len() {
        // SAFETY: fd is open for the caller's lifetime; the slice is live and in bounds.
        let n = unsafe { libc::write(fd, bytes[sent..].as_ptr().cast(), bytes.len() - sent) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        sent += n as usize;
    }
    Ok(())
}

fn writer(flags: &Flags<'_>) -> Result<(), Failure> {
    let chunks = flags.number("--chunks", 32)?;
    let size = flags.number("--chunk-size", 65536)? as usize;
    let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let refused =
        |k: u64| Failure { code: 13, message: format!("write {k} of {chunks} failed: Permission denied (EACCES)") };
    let file = flags.get("--file").map(std::path::PathBuf::from);
    let mounted = file.as_ref().and_then(|f| f.parent()).is_some_and(export_mount::is_fuse_mount);
    if let (Some(path), true) = (&file, mounted) {
        // Through the export mount: the kernel returns the server's refusal from write(2).
        let out = std::fs::File::create(path).map_err(io("create file on the export"))?;
        for k in 1..=chunks {
            match write_all_raw(out.as_raw_fd(), &data) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EACCES) => return Err(refused(k)),
                Err(e) => return Err(io("write")(e)),
            }
        }
    } else {
        let server = flags.required("--server")?;
        if let Some(path) = &file {
            println!("no export mount at {}; writing to {server} directly", path.parent().unwrap_or(path).display());
        }
        let mut stream = connect(server)?;
        let mut message = Vec::with_capacity(size + 4);
        message.extend_from_slice(&(size as u32).to_le_bytes());
        message.extend_from_slice(&data);
        for k in 1..=chunks {
            // One write(2) per chunk, so gates can count chunks.
            write_all_raw(stream.as_raw_fd(), &message).map_err(io("write"))?;
            let mut status = [0u8; 1];
            stream.read_exact(&mut status).map_err(io("read reply"))?;
            if status[0] != 0 {
                return Err(refused(k));
            }
        }
    }
    println!("wrote {chunks} chunks of {size} bytes");
    Ok(())
}

fn remount(flags: &Flags<'_>) -> Result<(), Failure> {
    let pidfile = flags.required("--pidfile")?;
    let delay = delay_ms(flags)?;
    std::thread::sleep(Duration::from_millis(delay));
    let deadline = Instant::now() + Duration::from_secs(5);
    let pid: i32 = loop {
        match std::fs::read_to_string(pidfile).ok().and_then(|t| t.trim().parse().ok()) {
            Some(pid) => break pid,
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            None => return Err(Failure { code: 1, message: format!("no pid in {pidfile}") }),
        }
    };
    // SAFETY: kill has no memory preconditions.
    if unsafe { libc::kill(pid, libc::SIGHUP) } != 0 {
        return Err(io("kill")(std::io::Error::last_os_error()));
    }
    println!("remounted; sent SIGHUP to export server pid {pid} after {delay} ms");
    Ok(())
}

/// `--delay-ms N` or `--delay-ms A..B` (a delay picked from the pid and the clock): how long a
/// guest waits before its own work, so free runs land in different orders.
pub(crate) fn delay_ms(flags: &Flags<'_>) -> Result<u64, Failure> {
    Ok(match flags.get("--delay-ms") {
        None => 0,
        Some(spec) => match spec.split_once("..") {
            Some((lo, hi)) => {
                let (lo, hi): (u64, u64) = (lo.parse().unwrap_or(0), hi.parse().unwrap_or(0));
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.subsec_nanos())
                    .unwrap_or(0);
                let seed = (nanos as u64) ^ ((std::process::id() as u64) << 20);
                lo + (seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 33) % (hi.saturating_sub(lo) + 1)
            }
            None => spec.parse().map_err(|_| Failure::usage(format!("--delay-ms wants N or A..B, got `{spec}`")))?,
        },
    })
}
