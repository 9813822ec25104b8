//! The step launcher: runs a scenario's service or step on this host, streams its life (pid,
//! output lines, exit) and installs its gate filter before exec.

use crate::error::AgentError;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use heisen_recordings::EventKind;
use tokio::io::BufReader;
use tokio::sync::mpsc;

use crate::capture::Capture;
use crate::gate::{self, Filter, GatePoint, HoldEnd, HoldRegistry};
use crate::observer::AgentNote;

/// What a launch reports, in order: started, output lines, exited.
#[derive(Debug, Clone)]
pub enum Life {
    Started { pid: i32, workdir: PathBuf },
    Output { stream: &'static str, line: String },
    Exited { code: i32, signal: i32 },
}

/// A hold to announce on the capture's gate channel.
#[derive(Debug, Clone)]
pub struct HoldNotice {
    pub hold_id: u64,
    pub gate: String,
    pub process: String,
    pub pid: i32,
    pub run: u32,
    pub raw_ns: i64,
    /// A released hold whose call has gone through (see `gate::supervise`), not a new hold.
    pub through: bool,
}

/// Where gate holds are announced (the coordinator's gate channel, once open).
/// The open gate channels, one per capture: a hold is announced on its capture's channel only.
pub type GateChannels = Arc<Mutex<HashMap<String, mpsc::UnboundedSender<HoldNotice>>>>;

/// A launch request in domain terms.
pub struct LaunchSpec {
    pub run: u32,
    pub name: String,
    pub role: String,
    pub argv: Vec<String>,
    pub workdir: PathBuf,
    pub env: HashMap<String, String>,
    pub gates: Vec<GatePoint>,
    pub hold_timeout: Duration,
}

/// The guest programs' binary (`{fixture}` in scenarios): `heisen-guest`, installed beside the
/// agent's own binary.
pub fn guest_program() -> Result<PathBuf, AgentError> {
    let exe = std::env::current_exe().map_err(AgentError::syscall("cannot find the agent's own binary"))?;
    let guest = exe.with_file_name(GUEST_PROGRAM);
    if !guest.is_file() {
        return Err(AgentError::BadInput(format!(
            "{{fixture}} names {}, which is not there; install heisen-guest beside the agent \
             (cargo build -p heisen-guests)",
            guest.display()
        )));
    }
    Ok(guest)
}

/// The file name of the guest programs' binary.
pub const GUEST_PROGRAM: &str = "heisen-guest";

/// Expands agent-side placeholders: `{fixture}` (the guest programs) and `{workdir}`.
pub fn expand(argv: &[String], workdir: &Path) -> Result<Vec<String>, AgentError> {
    let fixture = if argv.iter().any(|a| a.contains("{fixture}")) { Some(guest_program()?) } else { None };
    let fixture = fixture.map(|p| p.display().to_string()).unwrap_or_default();
    Ok(argv
        .iter()
        .map(|arg| arg.replace("{workdir}", &workdir.display().to_string()).replace("{fixture}", &fixture))
        .collect())
}

/// Launches `spec`; life events go to `life` until the process exits.
pub fn launch(
    spec: LaunchSpec,
    capture: Arc<Capture>,
    holds: Arc<HoldRegistry>,
    gate_channels: GateChannels,
    life: mpsc::Sender<Life>,
) -> Result<i32, AgentError> {
    std::fs::create_dir_all(&spec.workdir).map_err(AgentError::file("create work dir", spec.workdir.clone()))?;
    let argv = expand(&spec.argv, &spec.workdir)?;
    let program = which(&argv[0])
        .ok_or_else(|| AgentError::BadInput(format!("`{}` not found or not executable on this host", argv[0])))?;
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(&argv[1..])
        .current_dir(&spec.workdir)
        .envs(&spec.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(false);

    let launch_note = AgentNote {
        pid: 0,
        comm: spec.name.clone(),
        run: spec.run,
        kind: EventKind::Launch { name: spec.name.clone(), role: spec.role.clone(), argv: argv.clone() },
    };
    let marker = capture.launch_marker(&launch_note);
    let pid_filters = capture.pid_filter_fds();
    let gated = !spec.gates.is_empty();
    let mut socks = [0; 2];
    if gated {
        // SAFETY: socks is a valid out-array of two fds.
        if unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0, socks.as_mut_ptr()) }
            != 0
        {
            return Err(AgentError::syscall("socketpair for the gate listener")(std::io::Error::last_os_error()));
        }
        // The child's end moves to a number programs seldom reach: the filter spares sendmsg on
        // it (the listener's hand-over), and after exec (CLOEXEC) the number is free again.
        // SAFETY: fcntl on an fd we own; the old number is closed once the copy exists.
        let high = unsafe { libc::fcntl(socks[1], libc::F_DUPFD_CLOEXEC, 900) };
        if high >= 0 {
            // SAFETY: socks[1] is ours and no longer used.
            unsafe { libc::close(socks[1]) };
            socks[1] = high;
        }
    }
    let filter = gated.then(|| {
        Filter::sparing(&spec.gates.iter().map(|g| g.nr).collect::<Vec<_>>(), Some((libc::SYS_sendmsg, socks[1])))
    });
    // SAFETY: socketpair succeeded (or is unused), so both fds are ours to own.
    let (parent_sock, child_sock) = unsafe {
        if filter.is_some() {
            (Some(OwnedFd::from_raw_fd(socks[0])), Some(OwnedFd::from_raw_fd(socks[1])))
        } else {
            (None, None)
        }
    };
    let child_sock_fd = child_sock.as_ref().map(|s| s.as_raw_fd());
    // SAFETY: the closure only makes async-signal-safe calls (setpgid, sigaction, sigprocmask,
    // write, seccomp, sendmsg) on data prepared before fork; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            libc::setpgid(0, 0);
            // A process starts as init would start it: every signal at its default action and
            // none blocked, whatever the agent inherited (an agent started under nohup ignores
            // SIGHUP, and a daemon it launched would survive the SIGHUP that ends it in
            // production). Numbers the kernel refuses (SIGKILL, SIGSTOP, libc's own) are skipped.
            // The raw call: libc's own refuses the numbers it reserves (32, 33), which the
            // agent's threads may have set to ignored.
            let default = KernelSigaction { handler: libc::SIG_DFL, flags: 0, restorer: 0, mask: 0 };
            for sig in 1..=64 {
                libc::syscall(libc::SYS_rt_sigaction, sig, &default as *const KernelSigaction, 0usize, 8usize);
            }
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            let mut digits = [0u8; 12];
            let text = decimal(libc::getpid() as u32, &mut digits);
            for fd in pid_filters.into_iter().flatten() {
                libc::write(fd, text.as_ptr().cast(), text.len());
            }
            if let Some((fd, bytes)) = &marker {
                libc::write(*fd, bytes.as_ptr().cast(), bytes.len());
            }
            if let (Some(filter), Some(sock)) = (&filter, child_sock_fd) {
                // Nothing after the install but the spared sendmsg: any other call could be a
                // gated one, held before the program even runs. The listener is O_CLOEXEC (the
                // kernel makes it so): exec closes it.
                let listener = filter.install()?;
                gate::send_fd(sock, listener)?;
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(AgentError::file("start", program.clone()))?;
    drop(child_sock);
    let pid = child.id().map(|p| p as i32).unwrap_or(-1);
    if capture.launch_marker(&launch_note).is_none() {
        capture.note(AgentNote { pid, ..launch_note });
    }
    // The channel is new and empty: the first notice always fits.
    let _ = life.try_send(Life::Started { pid, workdir: spec.workdir.clone() });

    if let Some(sock) = parent_sock {
        let listener =
            gate::recv_fd(sock.as_raw_fd()).map_err(AgentError::syscall(format!("gate setup for {}", spec.name)))?;
        let (name, run, timeout) = (spec.name.clone(), spec.run, spec.hold_timeout);
        let (cap_hold, cap_end) = (capture.clone(), capture.clone());
        let capture_id = capture.id.clone();
        let gates = spec.gates.clone();
        std::thread::spawn(move || {
            let name_end = name.clone();
            // A hold (`through` false) or a released hold that has gone through, to the coordinator.
            let announce = |held: &gate::Held, through: bool| {
                let notice = HoldNotice {
                    hold_id: held.hold_id,
                    gate: held.gate.clone(),
                    process: name.clone(),
                    pid: held.pid,
                    run,
                    raw_ns: crate::capture::now_ns(),
                    through,
                };
                gate_channels.lock().expect("gate channels").get(&capture_id).is_some_and(|tx| tx.send(notice).is_ok())
            };
            gate::supervise(
                listener,
                gates,
                (holds, &capture_id),
                timeout,
                |held| {
                    cap_hold.note(AgentNote {
                        pid: held.pid,
                        comm: name.clone(),
                        run,
                        kind: EventKind::Gate { gate: held.gate.clone(), action: "held".into() },
                    });
                    announce(held, false)
                },
                |held, end| {
                    let action = match end {
                        HoldEnd::Released => "released",
                        HoldEnd::TimedOut => "timeout",
                        HoldEnd::Unwatched => "passed (no gate channel)",
                    };
                    cap_end.note(AgentNote {
                        pid: held.pid,
                        comm: name_end.clone(),
                        run,
                        kind: EventKind::Gate { gate: held.gate.clone(), action: action.into() },
                    });
                },
                |held| {
                    announce(held, true);
                },
            )
        });
    }

    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let (name, run) = (spec.name.clone(), spec.run);
    tokio::spawn(async move {
        let out = forward(stdout, "stdout", name.clone(), run, pid, capture.clone(), life.clone());
        let err = forward(stderr, "stderr", name.clone(), run, pid, capture.clone(), life.clone());
        let (status, _, _) = tokio::join!(child.wait(), out, err);
        let (code, signal) = match status {
            Ok(status) => {
                use std::os::unix::process::ExitStatusExt;
                match (status.code(), status.signal()) {
                    (Some(code), _) => (code, 0),
                    (None, Some(sig)) => (128 + sig, sig),
                    _ => (-1, 0),
                }
            }
            Err(_) => (-1, 0),
        };
        // The sender is the decoder's to add: it saw the signal generated.
        let killed_by =
            (signal != 0).then(|| heisen_recordings::KilledBy { signal, sender_pid: 0, sender_comm: String::new() });
        capture.note(AgentNote { pid, comm: name, run, kind: EventKind::Exit { exit_code: code, killed_by } });
        let _ = life.send(Life::Exited { code, signal }).await;
    });
    Ok(pid)
}

/// The kernel's `struct sigaction` on x86_64 (what the raw rt_sigaction call takes).
#[repr(C)]
struct KernelSigaction {
    handler: libc::sighandler_t,
    flags: u64,
    restorer: usize,
    mask: u64,
}

/// Formats `n` in decimal into `buf` without allocating (for use between fork and exec).
fn decimal(mut n: u32, buf: &mut [u8; 12]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

async fn forward(
    stream: impl tokio::io::AsyncRead + Unpin,
    which: &'static str,
    name: String,
    run: u32,
    pid: i32,
    capture: Arc<Capture>,
    life: mpsc::Sender<Life>,
) {
    let mut reader = BufReader::new(stream);
    while let Some(line) = next_line(&mut reader, MAX_LINE).await {
        let mut short = line.clone();
        truncate_at_char(&mut short, 1000);
        capture.note(AgentNote {
            pid,
            comm: name.clone(),
            run,
            kind: EventKind::Output { name: name.clone(), stream: which.into(), line: short },
        });
        // A coordinator that reads slowly slows the process down (its pipe fills), never the
        // agent's memory; one that went away drops the lines.
        let _ = life.send(Life::Output { stream: which, line }).await;
    }
}

/// The longest output line kept, in bytes; the rest of a longer line is dropped (and said so).
pub const MAX_LINE: usize = 64 * 1024;
/// How many process notices may wait for the coordinator before the process is slowed down.
pub const NOTICE_DEPTH: usize = 1024;

/// The next line of `reader`, at most `max` bytes of it (the rest up to the newline is read and
/// dropped, and the line ends with `[… N bytes cut]`); None at the end. A process that prints
/// without newlines cannot make the agent hold more than `max` bytes of it.
pub(crate) async fn next_line(reader: &mut (impl tokio::io::AsyncBufRead + Unpin), max: usize) -> Option<String> {
    use tokio::io::AsyncBufReadExt;
    let mut line = Vec::new();
    let mut cut = 0usize;
    let mut ended_line = false;
    while let Ok(buf) = reader.fill_buf().await {
        if buf.is_empty() {
            if line.is_empty() && cut == 0 {
                return None;
            }
            break;
        }
        let (chunk, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        let room = max.saturating_sub(line.len());
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        cut += chunk.len().saturating_sub(room);
        let used = done.unwrap_or(buf.len());
        reader.consume(used);
        if done.is_some() {
            ended_line = true;
            break;
        }
    }
    if line.is_empty() && cut == 0 && !ended_line {
        // A read error before anything was read: the stream is over.
        return None;
    }
    let mut text = String::from_utf8_lossy(&line).into_owned();
    if text.ends_with('\r') {
        text.pop();
    }
    if cut > 0 {
        text.push_str(&format!(" [… {cut} bytes cut]"));
    }
    Some(text)
}

/// Cuts a string to at most `max` bytes, at a character boundary.
fn truncate_at_char(s: &mut String, max: usize) {
    if s.len() > max {
        let mut at = max;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
    }
}

/// Resolves a program name like a shell would (absolute, relative, or on PATH).
fn which(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable =
        |p: &Path| p.metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false);
    if program.contains('/') {
        let path = PathBuf::from(program);
        return executable(&path).then_some(path);
    }
    std::env::var_os("PATH")?.to_str()?.split(':').map(|dir| Path::new(dir).join(program)).find(|p| executable(p))
}

/// Stops a launched process group: SIGTERM, then SIGKILL after `grace`.
pub async fn stop(pid: i32, grace: Duration) -> bool {
    if pid <= 0 || !alive(pid) {
        return false;
    }
    // SAFETY: signalling the process group the launcher created (pgid == pid).
    unsafe { libc::kill(-pid, libc::SIGTERM) };
    let deadline = tokio::time::Instant::now() + grace;
    while tokio::time::Instant::now() < deadline {
        if !alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // SAFETY: as above.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    true
}

/// Running (not gone, not a zombie waiting to be reaped).
pub(crate) fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            stat.rfind(')').and_then(|i| stat.get(i + 2..i + 3)).is_some_and(|state| state != "Z" && state != "X")
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    /// A line is kept up to the limit, the rest of it dropped and counted; the next line is whole.
    #[test]
    fn output_lines_are_bounded() {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let text = format!("{}\n\nshort\r\nlast", "x".repeat(100));
        let mut reader = tokio::io::BufReader::with_capacity(16, text.as_bytes());
        let lines: Vec<String> = rt.block_on(async {
            let mut out = Vec::new();
            while let Some(l) = super::next_line(&mut reader, 10).await {
                out.push(l);
            }
            out
        });
        assert_eq!(
            lines,
            vec!["xxxxxxxxxx [… 90 bytes cut]".to_string(), String::new(), "short".into(), "last".into()]
        );
    }

    #[test]
    fn decimal_without_allocation() {
        let mut buf = [0u8; 12];
        assert_eq!(super::decimal(0, &mut buf), b"0");
        assert_eq!(super::decimal(4_194_304, &mut buf), b"4194304");
    }
}
