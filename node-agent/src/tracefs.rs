//! tracefs plumbing: a private tracing instance per capture (so heisen never fights another
//! tracer), its event switches, its marker file and a reader thread on its `trace_pipe`.
//!
//! Mechanism only: lines are handed to a callback as [`TraceLine`]s; what they mean is
//! `observer`'s business.

use crate::error::AgentError;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

const TRACEFS: &str = "/sys/kernel/tracing";

/// Why tracefs cannot be used here, or `Ok` with its root.
pub fn available() -> Result<PathBuf, AgentError> {
    let root = Path::new(TRACEFS);
    if let Err(e) = std::fs::read_dir(root) {
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            return Err(AgentError::Unavailable(format!(
                "{TRACEFS} is not readable ({e}); the kernel observer needs root"
            )));
        }
    }
    if !root.join("instances").is_dir() {
        // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
        let rc = unsafe {
            libc::mount(c"nodev".as_ptr(), c"/sys/kernel/tracing".as_ptr(), c"tracefs".as_ptr(), 0, std::ptr::null())
        };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            return Err(AgentError::Unavailable(format!(
                "tracefs is not mounted at {TRACEFS} and mounting it failed ({err}); run as root"
            )));
        }
    }
    if !root.join("instances").is_dir() {
        return Err(AgentError::Unavailable(format!(
            "{TRACEFS}/instances is missing: kernel without tracing instances"
        )));
    }
    Ok(root.to_path_buf())
}

/// A private tracefs instance. Dropping it disables its events and removes it.
pub struct Instance {
    dir: PathBuf,
    /// Taken at close: the kernel refuses to remove an instance while a file of it is open.
    marker: std::sync::Mutex<Option<File>>,
}

impl Instance {
    /// Creates `instances/NAME` with a monotonic trace clock and enables `events`
    /// (`group/event` names). Stale heisen instances of dead agents are removed first.
    pub fn create(name: &str, events: &[String], buffer_kb: u32) -> Result<Instance, AgentError> {
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
                return Err(AgentError::File { op: "create tracefs instance", path: dir, source: e });
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let instance_marker = || OpenOptions::new().write(true).open(dir.join("trace_marker"));
        let marker = instance_marker().map_err(AgentError::file("open", dir.join("trace_marker")))?;
        let instance = Instance { dir, marker: std::sync::Mutex::new(Some(marker)) };
        instance.set("trace_clock", "mono")?;
        // Remember more task names (global; only ever raised): raw records carry no comm.
        let cmdlines = root.join("saved_cmdlines_size");
        if std::fs::read_to_string(&cmdlines).ok().and_then(|v| v.trim().parse::<u32>().ok()).is_some_and(|n| n < 8192)
        {
            let _ = std::fs::write(&cmdlines, "8192");
        }
        instance.set("buffer_size_kb", &buffer_kb.to_string())?;
        for event in events {
            instance.enable(event)?;
        }
        Ok(instance)
    }

    /// Enables one event (`group/event`), if this kernel has it.
    pub fn enable(&self, event: &str) -> Result<(), AgentError> {
        let path = format!("events/{event}/enable");
        match self.dir.join(&path).exists() {
            true => self.set(&path, "1"),
            false => Ok(()),
        }
    }

    fn set(&self, file: &str, value: &str) -> Result<(), AgentError> {
        std::fs::write(self.dir.join(file), value).map_err(AgentError::file("write to", self.dir.join(file)))
    }

    /// Restricts every event of the instance to pids that are added later (and their children,
    /// through `event-fork`), in the kernel. Returns the `set_event_pid` file to add pids through.
    /// Pid 0 (the idle task, which makes no syscalls) keeps the filter active while it is empty.
    pub fn restrict_to_pids(&self) -> Result<File, AgentError> {
        self.set("options/event-fork", "1")?;
        self.set("set_event_pid", "0")?;
        OpenOptions::new()
            .write(true)
            .open(self.dir.join("set_event_pid"))
            .map_err(AgentError::file("open", self.dir.join("set_event_pid")))
    }

    /// Leaves these tasks' events out in the kernel (`set_event_notrace_pid`, appended to). The
    /// agent's own threads: the trace reader's `read` of the buffers would otherwise record
    /// itself, each page read adding events to read. Markers are not events: they still arrive.
    pub fn exclude_tasks(&self, tids: &[i32]) -> Result<(), AgentError> {
        let path = self.dir.join("set_event_notrace_pid");
        let mut file = OpenOptions::new().append(true).open(&path).map_err(AgentError::file("open", path.clone()))?;
        for tid in tids {
            file.write_all(format!("{tid}\n").as_bytes()).map_err(AgentError::file("write", path.clone()))?;
        }
        Ok(())
    }

    /// Sets an event's in-kernel filter (e.g. `comm == "flock" || common_pid == 42`).
    pub fn filter(&self, event: &str, expression: &str) -> Result<(), AgentError> {
        self.set(&format!("events/{event}/filter"), expression)
    }

    /// Writes a marker line into the trace, ordered with kernel events by the kernel's clock.
    pub fn mark(&self, text: &str) -> std::io::Result<()> {
        match self.marker.lock().expect("marker").as_ref() {
            Some(mut marker) => marker.write_all(text.as_bytes()),
            None => Err(std::io::Error::other("tracefs instance closed")),
        }
    }

    /// A raw fd of the marker file, for children that write their own marker before exec
    /// (none once the instance is closed).
    pub fn marker_fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.marker.lock().expect("marker").as_ref().map(|m| m.as_raw_fd())
    }

    /// The instance's directory.
    pub fn dir(&self) -> PathBuf {
        self.dir.clone()
    }

    /// The tracefs mount the instance lives in (event formats are read there).
    pub fn root(&self) -> PathBuf {
        self.dir.parent().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(TRACEFS))
    }

    /// True when every CPU's raw pipe is there (the binary reader can be used).
    pub fn has_raw_pipes(&self) -> bool {
        self.dir.join("per_cpu/cpu0/trace_pipe_raw").exists()
    }

    /// Bytes of one ring-buffer page (`buffer_subbuf_size_kb`; 4 KiB on kernels without it).
    pub fn page_size(&self) -> usize {
        std::fs::read_to_string(self.dir.join("buffer_subbuf_size_kb"))
            .ok()
            .and_then(|kb| kb.trim().parse::<usize>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or(4096)
    }

    /// Opens the instance's `trace_pipe` for a reader thread.
    pub fn pipe(&self) -> Result<BufReader<File>, AgentError> {
        let path = self.dir.join("trace_pipe");
        let file = File::open(&path).map_err(AgentError::file("open", path.clone()))?;
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

impl Instance {
    /// Turns the instance's events off and removes it: enabled syscall events slow every
    /// syscall on the machine, so they must not outlive their capture. Idempotent.
    /// Close after every other file of the instance is (the reader's buffers, a pid filter):
    /// if one is still open the directory stays, its buffers shrunk to a page, until the next
    /// agent start removes it.
    pub fn close(&self) {
        let _ = std::fs::write(self.dir.join("tracing_on"), "0");
        let _ = std::fs::write(self.dir.join("events/enable"), "0");
        drop(self.marker.lock().expect("marker").take());
        // A process forked by another thread at this moment holds our files until it execs
        // (close-on-exec closes them only then), and the kernel refuses the rmdir while it does:
        // try again for up to ~100 ms before settling for events off and buffers shrunk.
        for _ in 0..20 {
            match std::fs::remove_dir(&self.dir) {
                Ok(()) => return,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                Err(_) => break,
            }
        }
        if self.dir.exists() {
            let _ = std::fs::write(self.dir.join("buffer_size_kb"), "1");
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.close();
    }
}

/// Removes what dead agents left in the kernel (an agent killed before it could clean up).
pub fn remove_stale_instances() {
    if let Ok(root) = available() {
        remove_stale(&root);
    }
}

/// The kernel's pid -> comm record of tasks it traced (`saved_cmdlines`).
pub fn saved_cmdlines() -> std::collections::HashMap<i32, String> {
    let text = std::fs::read_to_string(Path::new(TRACEFS).join("saved_cmdlines")).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (pid, comm) = l.split_once(' ')?;
            Some((pid.parse().ok()?, comm.to_string()))
        })
        .collect()
}

/// True for `heisen-*-PID` names (instances, cgroups) whose agent PID is no longer alive.
pub fn of_dead_agent(name: &str) -> bool {
    let pid = name.strip_prefix("heisen-").and_then(|rest| rest.rsplit('-').next());
    pid.and_then(|p| p.parse::<u32>().ok()).is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
}

/// Removes `heisen-*-PID` instances whose agent PID is no longer alive.
fn remove_stale(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root.join("instances")) else {
        return;
    };
    for entry in entries.flatten() {
        if of_dead_agent(&entry.file_name().to_string_lossy()) {
            let _ = std::fs::write(entry.path().join("events/enable"), "0");
            let _ = std::fs::remove_dir(entry.path());
        }
    }
}

/// One trace event, from the text `trace_pipe` or a raw record.
#[derive(Debug, PartialEq, Eq)]
pub struct TraceLine<'a> {
    pub comm: std::borrow::Cow<'a, str>,
    pub pid: i32,
    /// CLOCK_MONOTONIC nanoseconds (the text format carries microseconds).
    pub mono_ns: i64,
    /// The event name; syscalls are `sys_NAME` for both enter and exit.
    pub event: &'a str,
    pub body: Body<'a>,
}

/// An event's fields: the text after the event name, or a raw record with its layout.
#[derive(Debug)]
pub enum Body<'a> {
    Text(&'a str),
    Raw { format: &'a crate::rawtrace::Format, data: &'a [u8] },
}

impl PartialEq for Body<'_> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Body::Text(a), Body::Text(b)) => a == b,
            (Body::Raw { data: a, .. }, Body::Raw { data: b, .. }) => a == b,
            _ => false,
        }
    }
}

impl Eq for Body<'_> {}

/// Half of a syscall, or all of it (the write recorder's one record per call).
pub enum SyscallPart {
    Enter(Vec<u64>),
    Exit(i64),
    Whole(Vec<u64>, i64),
}

/// The text format's key for a raw field name, where they differ.
fn text_key(key: &str) -> &str {
    match key {
        "result" => "res",
        "parent_pid" => "pid",
        _ => key,
    }
}

const TCP_STATES: [&str; 13] = [
    "",
    "TCP_ESTABLISHED",
    "TCP_SYN_SENT",
    "TCP_SYN_RECV",
    "TCP_FIN_WAIT1",
    "TCP_FIN_WAIT2",
    "TCP_TIME_WAIT",
    "TCP_CLOSE",
    "TCP_CLOSE_WAIT",
    "TCP_LAST_ACK",
    "TCP_LISTEN",
    "TCP_CLOSING",
    "TCP_NEW_SYN_RECV",
];

impl TraceLine<'_> {
    /// An integer field (raw names: `result`, `parent_pid`, ...).
    pub fn int(&self, key: &str) -> Option<i64> {
        match &self.body {
            Body::Text(body) => text_int(body, text_key(key)),
            Body::Raw { format, data } => crate::rawtrace::int(data, format.field(key)?),
        }
    }

    /// A text field: comm, filename, addresses (dotted), TCP states (`TCP_...`).
    pub fn text(&self, key: &str) -> Option<String> {
        match &self.body {
            Body::Text(body) => {
                let until = if key == "comm" || key == "filename" { " pid=" } else { " " };
                text_value(body, key, until)
            }
            Body::Raw { format, data } => {
                let f = format.field(key)?;
                if key.ends_with("state") {
                    return Some(TCP_STATES.get(crate::rawtrace::int(data, f)? as usize)?.to_string());
                }
                if f.array && f.size == 4 && key.ends_with("addr") {
                    let b = data.get(f.offset..f.offset + 4)?;
                    return Some(format!("{}.{}.{}.{}", b[0], b[1], b[2], b[3]));
                }
                if f.array || f.data_loc {
                    return crate::rawtrace::string(data, f);
                }
                crate::rawtrace::int(data, f).map(|v| v.to_string())
            }
        }
    }

    /// A socket address field: raw `struct sockaddr` bytes decoded (`10.0.0.2:8080`); in the
    /// text format (tests), the value as written.
    pub fn sockaddr(&self, key: &str) -> Option<String> {
        match &self.body {
            Body::Text(body) => text_value(body, key, " ").filter(|v| !v.is_empty()),
            Body::Raw { format, data } => {
                let f = format.field(key)?;
                let loc = u32::from_le_bytes(data.get(f.offset..f.offset + 4)?.try_into().ok()?);
                let (off, len) = ((loc & 0xffff) as usize, (loc >> 16) as usize);
                heisen_recordings::sockaddr(data.get(off..off + len)?)
            }
        }
    }

    /// A field of NUL-separated strings (the argument recorder's argv); in the text format
    /// (tests), `|`-separated.
    pub fn text_list(&self, key: &str) -> Vec<String> {
        match &self.body {
            Body::Text(body) => text_value(body, key, " ")
                .map(|v| v.split('|').filter(|a| !a.is_empty()).map(str::to_string).collect())
                .unwrap_or_default(),
            Body::Raw { format, data } => {
                let Some(f) = format.field(key) else { return Vec::new() };
                let Some(loc) = data.get(f.offset..f.offset + 4) else { return Vec::new() };
                let loc = u32::from_le_bytes(loc.try_into().expect("4 bytes"));
                let (off, len) = ((loc & 0xffff) as usize, (loc >> 16) as usize);
                data.get(off..off + len)
                    .map(|bytes| {
                        bytes
                            .split(|b| *b == 0)
                            .filter(|a| !a.is_empty())
                            .map(|a| String::from_utf8_lossy(a).into_owned())
                            .collect()
                    })
                    .unwrap_or_default()
            }
        }
    }

    /// A boolean field (`group_dead`); `None` when absent.
    pub fn flag(&self, key: &str) -> Option<bool> {
        match &self.body {
            Body::Text(body) => text_value(body, key, " ").map(|v| v == "true" || v == "1"),
            Body::Raw { .. } => self.int(key).map(|v| v != 0),
        }
    }

    /// Enter (arguments) or exit (return value) of a `sys_*` event.
    pub fn syscall(&self) -> Option<SyscallPart> {
        match &self.body {
            Body::Text(body) => match body.strip_prefix("-> ") {
                Some(ret) => Some(SyscallPart::Exit(parse_number(ret)? as i64)),
                None => Some(SyscallPart::Enter(
                    body.trim_start_matches('(')
                        .trim_end_matches(')')
                        .split(", ")
                        .filter_map(|arg| arg.split_once(": ").and_then(|(_, v)| parse_number(v)))
                        .collect(),
                )),
            },
            Body::Raw { format, data } if format.enter => {
                let args = format
                    .fields
                    .iter()
                    .filter(|f| !f.name.starts_with("common_") && f.name != "__syscall_nr" && f.name != "ret")
                    .filter_map(|f| crate::rawtrace::int(data, f).map(|v| v as u64))
                    .collect();
                Some(match format.exit {
                    true => SyscallPart::Whole(args, self.int("ret")?),
                    false => SyscallPart::Enter(args),
                })
            }
            Body::Raw { format, .. } if format.exit => Some(SyscallPart::Exit(self.int("ret")?)),
            Body::Raw { .. } => None,
        }
    }

    /// The text of a `trace_marker` write.
    pub fn marker(&self) -> Option<std::borrow::Cow<'_, str>> {
        match &self.body {
            Body::Text(body) => Some(std::borrow::Cow::Borrowed(body)),
            Body::Raw { .. } => self.text("buf").map(std::borrow::Cow::Owned),
        }
    }
}

/// `0x1f` or `31` (the text format prints small values in decimal).
pub fn parse_number(text: &str) -> Option<u64> {
    let text = text.trim();
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse::<i64>().ok().map(|v| v as u64),
    }
}

/// Integer value of ` key=value` in a text body.
pub fn text_int(body: &str, key: &str) -> Option<i64> {
    let start = find_key(body, key)?;
    body[start..].split(' ').next()?.parse().ok()
}

/// Text value of `key=` running up to `until` (values like comm may contain spaces).
pub fn text_value(body: &str, key: &str, until: &str) -> Option<String> {
    let start = find_key(body, key)?;
    let rest = &body[start..];
    Some(rest[..rest.find(until).unwrap_or(rest.len())].to_string())
}

fn find_key(body: &str, key: &str) -> Option<usize> {
    let pattern = format!("{key}=");
    let mut from = 0;
    while let Some(i) = body[from..].find(&pattern) {
        let at = from + i;
        if at == 0 || body.as_bytes()[at - 1] == b' ' {
            return Some(at + pattern.len());
        }
        from = at + pattern.len();
    }
    None
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
    Some(TraceLine { comm: std::borrow::Cow::Borrowed(comm), pid, mono_ns, event, body: Body::Text(body) })
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
    fn a_closed_instance_leaves_nothing_behind_its_own_files() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 || available().is_err() {
            eprintln!("SKIPPED a_closed_instance_leaves_nothing_behind_its_own_files: tracefs instances need root");
            return;
        }
        let events = ["sched/sched_process_exec".to_string()];
        let name = |n: u32| format!("heisen-closetest-{n}-{}", std::process::id());
        // The marker is the instance's own file: closing releases it, so the directory goes.
        let instance = Instance::create(&name(0), &events, 2048).unwrap();
        instance.mark("before close").unwrap();
        instance.close();
        assert!(!instance.dir().exists(), "{} outlived close", instance.dir().display());
        assert!(instance.mark("after close").is_err());
        assert_eq!(instance.marker_fd(), None);
        // A file someone else still holds keeps it: events off, buffers down to a page.
        let instance = Instance::create(&name(1), &events, 2048).unwrap();
        let held = File::open(instance.dir().join("per_cpu/cpu0/trace_pipe_raw")).unwrap();
        instance.close();
        let read = |f: &str| std::fs::read_to_string(instance.dir().join(f)).unwrap().trim().to_string();
        assert_eq!(read("events/enable"), "0");
        assert!(read("buffer_size_kb").parse::<u32>().unwrap() <= 8, "buffer_size_kb {}", read("buffer_size_kb"));
        drop(held);
        instance.close();
        assert!(!instance.dir().exists());
    }

    /// Every syscall of heisen's table has its tracepoints in the running kernel.
    #[test]
    fn the_syscall_table_names_the_running_kernels_tracepoints() {
        let Ok(root) = available() else {
            eprintln!("SKIPPED the_syscall_table_names_the_running_kernels_tracepoints: no tracefs (root needed)");
            return;
        };
        for s in heisen_recordings::SYSCALLS {
            for side in ["enter", "exit"] {
                let dir = root.join(format!("events/syscalls/sys_{side}_{}", s.tracepoint));
                assert!(dir.is_dir(), "{} is not in this kernel", dir.display());
            }
        }
    }

    #[test]
    fn parses_the_kernel_text_format() {
        let check = |line: &str, expected: (&str, i32, i64, &str, &str)| {
            let got = parse_line(line).unwrap();
            assert_eq!(
                (got.comm.as_ref(), got.pid, got.mono_ns, got.event, got.body),
                (expected.0, expected.1, expected.2, expected.3, Body::Text(expected.4))
            );
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
            ("tokio-rt-worker", 12672, 1_636_709_286_000, "tracing_mark_write", "heisen:{}"),
        );
        assert_eq!(parse_line("garbage"), None);
    }
}
