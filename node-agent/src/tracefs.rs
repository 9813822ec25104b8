//! tracefs plumbing: a private tracing instance per capture (so heisen never fights another
//! tracer), its event switches, its marker file and a reader thread on its `trace_pipe`.
//!
//! Mechanism only: lines are handed to a callback as [`TraceLine`]s; what they mean is
//! `observer`'s business.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

const TRACEFS: &str = "/sys/kernel/tracing";

/// Why tracefs cannot be used here, or `Ok` with its root.
pub fn available() -> Result<PathBuf, String> {
    let root = Path::new(TRACEFS);
    if let Err(e) = std::fs::read_dir(root) {
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            return Err(format!("{TRACEFS} is not readable ({e}); the kernel observer needs root"));
        }
    }
    if !root.join("instances").is_dir() {
        // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
        let rc = unsafe {
            libc::mount(c"nodev".as_ptr(), c"/sys/kernel/tracing".as_ptr(), c"tracefs".as_ptr(), 0, std::ptr::null())
        };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            return Err(format!("tracefs is not mounted at {TRACEFS} and mounting it failed ({err}); run as root"));
        }
    }
    if !root.join("instances").is_dir() {
        return Err(format!("{TRACEFS}/instances is missing: kernel without tracing instances"));
    }
    Ok(root.to_path_buf())
}

/// A private tracefs instance. Dropping it disables its events and removes it.
pub struct Instance {
    dir: PathBuf,
    marker: File,
}

impl Instance {
    /// Creates `instances/NAME` with a monotonic trace clock and enables `events`
    /// (`group/event` names). Stale heisen instances of dead agents are removed first.
    pub fn create(name: &str, events: &[String], buffer_kb: u32) -> Result<Instance, String> {
        let root = available()?;
        remove_stale(&root);
        let dir = root.join("instances").join(name);
        if dir.exists() {
            let _ = std::fs::remove_dir(&dir);
        }
        // Instance creation can fail transiently while another tracer removes an instance.
        let mut attempt = 0;
        while let Err(e) = std::fs::create_dir(&dir) {
            attempt += 1;
            if attempt >= 5 {
                return Err(format!("cannot create tracefs instance {}: {e}", dir.display()));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let instance_marker = || OpenOptions::new().write(true).open(dir.join("trace_marker"));
        let marker = instance_marker().map_err(|e| format!("cannot open {}/trace_marker: {e}", dir.display()))?;
        let instance = Instance { dir, marker };
        instance.set("trace_clock", "mono")?;
        instance.set("buffer_size_kb", &buffer_kb.to_string())?;
        for event in events {
            let path = format!("events/{event}/enable");
            if instance.dir.join(&path).exists() {
                instance.set(&path, "1")?;
            }
        }
        Ok(instance)
    }

    fn set(&self, file: &str, value: &str) -> Result<(), String> {
        std::fs::write(self.dir.join(file), value)
            .map_err(|e| format!("cannot write {value:?} to {}/{file}: {e}", self.dir.display()))
    }

    /// Restricts every event of the instance to pids that are added later (and their children,
    /// through `event-fork`), in the kernel. Returns the `set_event_pid` file to add pids through.
    /// Pid 0 (the idle task, which makes no syscalls) keeps the filter active while it is empty.
    pub fn restrict_to_pids(&self) -> Result<File, String> {
        self.set("options/event-fork", "1")?;
        self.set("set_event_pid", "0")?;
        OpenOptions::new()
            .write(true)
            .open(self.dir.join("set_event_pid"))
            .map_err(|e| format!("cannot open set_event_pid: {e}"))
    }

    /// Writes a marker line into the trace, ordered with kernel events by the kernel's clock.
    pub fn mark(&self, text: &str) -> std::io::Result<()> {
        (&self.marker).write_all(text.as_bytes())
    }

    /// A raw fd of the marker file, for children that write their own marker before exec.
    pub fn marker_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.marker.as_raw_fd()
    }

    /// Opens the instance's `trace_pipe` for a reader thread.
    pub fn pipe(&self) -> Result<BufReader<File>, String> {
        let path = self.dir.join("trace_pipe");
        let file = File::open(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        Ok(BufReader::with_capacity(1 << 20, file))
    }

    /// Sum of per-CPU overruns (events the kernel dropped because the buffer was full).
    pub fn overruns(&self) -> u64 {
        let Ok(cpus) = std::fs::read_dir(self.dir.join("per_cpu")) else {
            return 0;
        };
        cpus.flatten()
            .filter_map(|cpu| std::fs::read_to_string(cpu.path().join("stats")).ok())
            .flat_map(|stats| {
                stats
                    .lines()
                    .filter_map(|l| l.strip_prefix("overrun:").and_then(|v| v.trim().parse::<u64>().ok()))
                    .collect::<Vec<_>>()
            })
            .sum()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = std::fs::write(self.dir.join("tracing_on"), "0");
        let _ = std::fs::write(self.dir.join("events/enable"), "0");
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Removes `heisen-*-PID` instances whose agent PID is no longer alive.
fn remove_stale(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root.join("instances")) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(pid) = name.strip_prefix("heisen-").and_then(|rest| rest.rsplit('-').next()) else {
            continue;
        };
        if let Ok(pid) = pid.parse::<u32>() {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::write(entry.path().join("events/enable"), "0");
                let _ = std::fs::remove_dir(entry.path());
            }
        }
    }
}

/// One parsed line of `trace_pipe`.
#[derive(Debug, PartialEq, Eq)]
pub struct TraceLine<'a> {
    pub comm: &'a str,
    pub pid: i32,
    /// CLOCK_MONOTONIC nanoseconds (the text format carries microseconds).
    pub mono_ns: i64,
    pub event: &'a str,
    pub body: &'a str,
}

/// Parses `COMM-PID [CPU] FLAGS SECS.USECS: EVENT: BODY` (or `EVENT(args)` / `EVENT -> ret` for
/// syscalls, where `event` is `sys_NAME` and `body` the rest).
pub fn parse_line(line: &str) -> Option<TraceLine<'_>> {
    let cpu_open = line.find(" [")?;
    let task = line[..cpu_open].trim(); // the kernel pads the pid: `%16s-%-7d`
    let (comm, pid) = task.rsplit_once('-')?;
    let pid = pid.parse().ok()?;
    let rest = &line[cpu_open + 2..];
    let after_cpu = &rest[rest.find(']')? + 1..];
    let mut parts = after_cpu.trim_start().splitn(2, ' ');
    let _flags = parts.next()?;
    let rest = parts.next()?.trim_start();
    let (ts, rest) = rest.split_once(": ")?;
    let (secs, usecs) = ts.split_once('.')?;
    let mono_ns = secs.parse::<i64>().ok()? * 1_000_000_000 + usecs.parse::<i64>().ok()? * 1_000;
    let split = rest.find([':', '(', ' '])?;
    let event = &rest[..split];
    let body = rest[split..].trim_start_matches(':').trim_start();
    Some(TraceLine { comm, pid, mono_ns, event, body })
}

/// Reads `pipe` line by line until `until` says stop, handing parsed lines to `handle`.
/// Returns how many lines could not be parsed (they are counted, not silently dropped).
/// An end of file (tracing switched off) ends the loop once `stopped` is set.
pub fn read_lines(
    mut pipe: BufReader<File>,
    stopped: &std::sync::atomic::AtomicBool,
    mut handle: impl FnMut(TraceLine<'_>) -> bool,
) -> u64 {
    let mut buf = String::new();
    let mut unparsed = 0;
    loop {
        buf.clear();
        match pipe.read_line(&mut buf) {
            Ok(0) if stopped.load(std::sync::atomic::Ordering::Relaxed) => return unparsed,
            Ok(0) => std::thread::sleep(std::time::Duration::from_millis(5)),
            Ok(_) => match parse_line(buf.trim_end_matches('\n')) {
                Some(line) => {
                    if !handle(line) {
                        return unparsed;
                    }
                }
                None => unparsed += 1,
            },
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return unparsed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kernel_text_format() {
        let check = |line: &str, expected: (&str, i32, i64, &str, &str)| {
            let got = parse_line(line).unwrap();
            assert_eq!((got.comm, got.pid, got.mono_ns, got.event, got.body), expected);
        };
        check(
            "            bash-8284    [000] .....   834.794582: sys_write(fd: 1, buf: 0x560f690e5230, count: 2)",
            ("bash", 8284, 834_794_582_000, "sys_write", "(fd: 1, buf: 0x560f690e5230, count: 2)"),
        );
        check(
            "            bash-8284    [000] .....   834.794703: sys_write -> 0x2",
            ("bash", 8284, 834_794_703_000, "sys_write", "-> 0x2"),
        );
        check(
            "   my-prog-name-87    [001] dN.2.   834.796678: signal_generate: sig=17 errno=0 code=1 comm=bash pid=8284 grp=1 res=0",
            ("my-prog-name", 87, 834_796_678_000, "signal_generate", "sig=17 errno=0 code=1 comm=bash pid=8284 grp=1 res=0"),
        );
        check(
            "           <...>-12    [000] ...1.    10.000001: tracing_mark_write: heisen-stop:1",
            ("<...>", 12, 10_000_001_000, "tracing_mark_write", "heisen-stop:1"),
        );
        check(
            " tokio-rt-worker-12672   [000] ...1.  1636.709286: tracing_mark_write: heisen:{}",
            ("tokio-rt-worker", 12672, 1636_709_286_000, "tracing_mark_write", "heisen:{}"),
        );
        assert_eq!(parse_line("garbage"), None);
    }
}
