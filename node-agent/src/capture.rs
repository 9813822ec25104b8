//! A capture on this host: the tracefs instance, the reader thread that decodes it, and the sink
//! that numbers events and writes them to sled in batches.
//!
//! Everything the agent itself knows (launches, output lines, gate holds, exit codes) is written
//! into the trace as a marker, so it is ordered with kernel events by the kernel's own clock and
//! gets its sequence number in the same stream. Without tracefs the notes go straight to the sink.

use crate::error::AgentError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use heisen_recordings::{Event, EventKind, Store};

use crate::bpf::{Select, WriteRecorder};
use crate::bpf_args::ArgsRecorder;
use crate::cgroup::Cgroup;
use crate::comms::CommCache;
use crate::observer::{AgentNote, Decoded, Decoder, Scope, Step, BASE_EVENTS, PTRACE_FILTER};
use crate::tracefs::{self, Instance};

const BATCH: usize = 512;

/// Numbers events and stores them in batches. Never drops silently: a failed store write is
/// counted and reported as lost.
pub struct Sink {
    store: Arc<Store>,
    capture: String,
    state: Mutex<SinkState>,
    /// Held while a batch is written: a flush returns only after every batch taken before it is
    /// in the store (stop relies on it).
    writing: Mutex<()>,
}

struct SinkState {
    next_seq: u64,
    batch: Vec<Event>,
    lost: u64,
    store_error: Option<String>,
}

impl Sink {
    fn push(&self, d: Decoded) {
        let full = {
            let mut state = self.state.lock().expect("sink");
            let seq = state.next_seq;
            state.next_seq += 1;
            state.batch.push(Event { seq, raw_ns: d.raw_ns, pid: d.pid, comm: d.comm, run: d.run, kind: d.kind });
            if state.batch.len() >= BATCH {
                Some(std::mem::replace(&mut state.batch, Vec::with_capacity(BATCH)))
            } else {
                None
            }
        };
        if let Some(batch) = full {
            self.store_batch(batch);
        }
    }

    /// Writes a batch outside the lock, so a flush by the housekeeping thread never stalls the
    /// reader's pushes for the time of a sled write (batches are keyed by seq: the order in which
    /// two of them land does not matter).
    fn store_batch(&self, batch: Vec<Event>) {
        let _writing = self.writing.lock().expect("sink writer");
        self.append(batch);
    }

    fn append(&self, batch: Vec<Event>) {
        if let Err(e) = self.store.append(&self.capture, &batch) {
            let mut state = self.state.lock().expect("sink");
            state.lost += batch.len() as u64;
            state.store_error = Some(e.to_string());
            tracing::error!(capture = %self.capture, error = %e, "storing a batch failed");
        }
    }

    pub fn flush(&self) {
        let _writing = self.writing.lock().expect("sink writer");
        let batch = std::mem::take(&mut self.state.lock().expect("sink").batch);
        if !batch.is_empty() {
            self.append(batch);
        }
    }

    fn record_loss(&self, count: u64, location: String) {
        self.state.lock().expect("sink").lost += count;
        self.push(Decoded {
            raw_ns: now_ns(),
            pid: 0,
            comm: String::new(),
            run: 0,
            kind: EventKind::Lost { count, location, from_ns: None },
        });
    }

    pub fn events(&self) -> u64 {
        self.state.lock().expect("sink").next_seq
    }

    pub fn lost(&self) -> u64 {
        self.state.lock().expect("sink").lost
    }
}

/// Per-CPU trace buffer of a capture: a budget of 64 MiB shared by the CPUs, at least 8 MiB
/// and at most 32 MiB each. The buffer is what absorbs a burst while the reader is off its CPU
/// (a storm of writes fills 8 MiB in ~0.1 s here; the reader can be preempted that long on a
/// 2-CPU machine): losing events is worse than kernel memory while a capture runs.
fn buffer_kb_per_cpu() -> u32 {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    (64 * 1024 / cpus).clamp(8 * 1024, 32 * 1024)
}

/// Where the reader thread gets events from.
enum Reader {
    /// The text `trace_pipe` (fallback; `HEISEN_TRACE_READER=text`).
    Text(std::io::BufReader<std::fs::File>),
    /// Every CPU's `trace_pipe_raw`, with the formats of the enabled events by id, and the write
    /// recorder's ring when writes are recorded by BPF.
    Raw(
        Arc<Instance>,
        fxhash::FxHashMap<u16, crate::rawtrace::Format>,
        Option<Box<WriteRecorder>>,
        Option<Box<ArgsRecorder>>,
    ),
}

/// The reader thread: decode every event in time order into the sink until the stop marker.
fn read_trace(reader: Reader, mut decoder: Decoder, sink: &Sink, stopped: &AtomicBool) {
    let mut last_flush = Instant::now();
    let mut lines = 0u32;
    let mut take = |line: crate::tracefs::TraceLine<'_>| {
        match decoder.decode(&line) {
            Step::Event(event) => sink.push(event),
            Step::Events(events) => events.into_iter().for_each(|e| sink.push(e)),
            Step::Stop(_) => return false,
            Step::Nothing => {}
        }
        // A clock read per line would cost more than decoding some of them: look every 64 lines
        // (the housekeeping thread flushes every 50 ms too, so a quiet trace is stored anyway).
        lines = lines.wrapping_add(1);
        if lines.is_multiple_of(64) && last_flush.elapsed() > Duration::from_millis(20) {
            sink.flush();
            last_flush = Instant::now();
        }
        true
    };
    match reader {
        Reader::Text(pipe) => {
            let unparsed = tracefs::read_lines(pipe, stopped, take);
            if unparsed > 0 {
                sink.record_loss(unparsed, "unparsed trace lines".into());
            }
        }
        Reader::Raw(instance, formats, mut writes, mut args) => {
            let mut comms = CommCache::default();
            let (dir, page_size) = (instance.dir(), instance.page_size());
            let mut sides: Vec<&mut dyn crate::rawtrace::SideBuffer> = Vec::new();
            if let Some(w) = writes.as_mut() {
                sides.push(w.as_mut());
            }
            if let Some(a) = args.as_mut() {
                sides.push(a.as_mut());
            }
            let result = crate::rawtrace::read_records(&dir, page_size, &mut sides, stopped, |record| {
                let Some(format) = formats.get(&record.id) else { return true };
                comms.follow(format, &record.data);
                let line = crate::tracefs::TraceLine {
                    comm: std::borrow::Cow::Borrowed(comms.get(record.pid, record.mono_ns)),
                    pid: record.pid,
                    mono_ns: record.mono_ns,
                    event: &format.name,
                    body: crate::tracefs::Body::Raw { format, data: &record.data },
                };
                take(line)
            });
            match result {
                Ok(0) => {}
                Ok(pages) => sink.record_loss(0, format!("{pages} ring-buffer pages reported missed events")),
                Err(e) => sink.record_loss(0, format!("raw trace reader failed: {e}")),
            }
            if let Some(lost) = writes.as_ref().map(|w| w.lost()).filter(|n| *n > 0) {
                sink.record_loss(lost, "write recorder's BPF ring buffer was full".into());
            }
            if let Some(lost) = args.as_ref().map(|a| a.lost()).filter(|n| *n > 0) {
                sink.record_loss(
                    lost,
                    "argument recorder: calls recorded without their paths (BPF ring or slots full)".into(),
                );
            }
            // Detaching the BPF programs waits for an RCU grace period per tracepoint (about 4 s
            // for the argument recorder's 62 here): nothing is read from them any more, so they
            // go in the background and the stop returns at once.
            std::thread::spawn(move || drop((writes, args)));
        }
    }
    sink.flush();
}

/// Writes an agent note into the trace (ordered by the kernel's clock with everything else), or
/// straight into the sink when there is no trace.
fn write_note(instance: Option<&Instance>, sink: &Sink, note: AgentNote) {
    if let Some(instance) = instance {
        if let Ok(json) = serde_json::to_string(&note) {
            if instance.mark(&format!("heisen:{json}")).is_ok() {
                return;
            }
        }
    }
    sink.push(Decoded { raw_ns: now_ns(), pid: note.pid, comm: note.comm, run: note.run, kind: note.kind });
}

/// The agent's threads now.
fn own_tasks() -> Vec<i32> {
    std::fs::read_dir("/proc/self/task")
        .map(|dir| dir.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default()
}

/// Which tasks the BPF recorders select in this scope: in launched scope the capture's own
/// cgroup (created on first use; launched processes join it before exec), in netns scope the
/// tasks of that network namespace. When a recorder cannot start, the capture records
/// without it, and the log and the capture's observer description say why.
fn bpf_select(scope: &Scope, name: &str, cgroup: &mut Option<Cgroup>) -> Result<Select, AgentError> {
    match scope {
        Scope::Launched => {
            if cgroup.is_none() {
                *cgroup = Some(Cgroup::create(name)?);
            }
            Ok(Select::Cgroup(cgroup.as_ref().map(Cgroup::id).unwrap_or_default()))
        }
        Scope::Netns { inode } => Ok(Select::Netns(*inode)),
    }
}

/// Syscalls recorded for every process even when a capture selects processes: file locks (the
/// lock recorder) and mount calls (they attribute mount-table changes).
const HOST_WIDE_SYSCALLS: &[&str] = &["flock", "fcntl", "mount", "umount2"];

/// Which processes' syscalls an ad-hoc capture records (empty: all of the host's).
#[derive(Clone, Debug, Default)]
pub struct Selection {
    pub comms: Vec<String>,
    pub pids: Vec<i32>,
    /// Record writes with the BPF write recorder (see `bpf`): opt-in, because on this kind of
    /// kernel its dispatch costs every syscall on the machine more than tracefs events do.
    pub bpf_writes: bool,
}

impl Selection {
    /// The tracefs filter expression, or None to record every process.
    pub fn filter(&self) -> Option<String> {
        let parts: Vec<String> = self
            .comms
            .iter()
            .map(|c| format!("comm == \"{}\"", c.replace(['"', '\\'], "")))
            .chain(self.pids.iter().map(|p| format!("common_pid == {p}")))
            .collect();
        (!parts.is_empty()).then(|| parts.join(" || "))
    }
}

/// One capture being recorded.
pub struct Capture {
    pub id: String,
    pub sink: Arc<Sink>,
    instance: Option<Arc<Instance>>,
    /// `set_event_pid` of the instance in launched scope: children add themselves before exec.
    /// Dropped at stop: the kernel keeps an instance with an open file.
    pid_filter: Mutex<Option<std::fs::File>>,
    /// The capture's cgroup in launched scope, when the write recorder selects by it: children
    /// join it before exec too.
    cgroup: Mutex<Option<Cgroup>>,
    reader: Mutex<Option<JoinHandle<()>>>,
    stopped: Arc<AtomicBool>,
    /// ptrace recorder processes attached during this capture; stopped (detached) at stop.
    tracers: Mutex<Vec<std::process::Child>>,
    pub observer: String,
}

pub use crate::clock::now_ns;

fn clock_ns(clock: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid out-pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

impl Capture {
    /// Starts recording. Without tracefs the capture still records the agent's own notes and says
    /// why the kernel observer is off.
    #[allow(clippy::too_many_arguments)] // each is one part of the capture's set-up, named at the one call site
    pub fn start(
        store: Arc<Store>,
        id: &str,
        agent_name: &str,
        syscalls: &[String],
        scope: Scope,
        workdir: &std::path::Path,
        crontab_dirs: &[std::path::PathBuf],
        selection: &Selection,
    ) -> Result<Capture, AgentError> {
        let next_seq =
            store.next_seq(id).map_err(|source| AgentError::Store { op: "read the capture's next seq", source })?;
        let sink = Arc::new(Sink {
            store,
            capture: id.to_string(),
            state: Mutex::new(SinkState { next_seq, batch: Vec::new(), lost: 0, store_error: None }),
            writing: Mutex::new(()),
        });
        let syscalls: Vec<String> = if syscalls.is_empty() {
            heisen_recordings::default_syscalls().into_iter().map(str::to_string).collect()
        } else {
            syscalls.to_vec()
        };
        // One name per capture (the agent's pid last, for stale-instance removal): a stopped
        // capture's instance, dropped late, must never close a newer capture's instance.
        static CAPTURES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = CAPTURES.fetch_add(1, Ordering::Relaxed);
        let instance_name = format!("heisen-{agent_name}-{n}-{}", std::process::id());
        let text_reader = std::env::var("HEISEN_TRACE_READER").is_ok_and(|v| v == "text");
        // What became of --bpf-writes, for the observer's description (the user asked for it).
        let mut cgroup = None;
        let (writes, bpf_note) = if !selection.bpf_writes || !syscalls.iter().any(|s| s == "write") {
            (None, None)
        } else if selection.filter().is_some() {
            (None, Some("--bpf-writes ignored: processes are selected by name or pid".to_string()))
        } else if text_reader {
            (None, Some("--bpf-writes ignored: HEISEN_TRACE_READER=text".to_string()))
        } else {
            match bpf_select(&scope, &instance_name, &mut cgroup).and_then(WriteRecorder::start) {
                Ok(recorder) => (Some(recorder), Some("writes by BPF".to_string())),
                Err(reason) => {
                    tracing::warn!(%reason, "BPF write recorder unavailable; writes are recorded through tracefs");
                    (None, Some(format!("BPF write recorder unavailable: {reason}")))
                }
            }
        };
        // Paths and addresses at call time (see `bpf_args`); without them, calls keep their
        // pointers and the fd table names what it can.
        let tracepoints: Vec<&str> = syscalls.iter().map(|s| heisen_recordings::tracepoint_name(s)).collect();
        let (args, args_note) = if text_reader {
            (None, "no paths: HEISEN_TRACE_READER=text".to_string())
        } else if std::env::var("HEISEN_ARGS_RECORDER").is_ok_and(|v| v == "off") {
            // Its BPF programs make the kernel's perf hook run on every syscall of the machine
            // (docs/BENCHMARKS.md): an agent may be started without them.
            (None, "no paths: HEISEN_ARGS_RECORDER=off".to_string())
        } else {
            match bpf_select(&scope, &instance_name, &mut cgroup)
                .and_then(|select| ArgsRecorder::start(select, &tracepoints))
            {
                Ok(recorder) => {
                    let n = recorder.attached.len() / 2;
                    (Some(recorder), format!("paths and addresses by BPF on {n} syscalls"))
                }
                Err(reason) => {
                    tracing::warn!(%reason, "BPF argument recorder unavailable; calls are recorded without their paths");
                    (None, format!("no paths: {reason}"))
                }
            }
        };
        let bpf_note = Some(match bpf_note {
            Some(note) => format!("{note}; {args_note}"),
            None => args_note,
        });
        let mut events: Vec<String> = BASE_EVENTS.iter().map(|s| s.to_string()).collect();
        for name in syscalls.iter().filter(|s| writes.is_none() || *s != "write") {
            let tracepoint = heisen_recordings::tracepoint_name(name);
            events.push(format!("syscalls/sys_enter_{tracepoint}"));
            if name != "ptrace" {
                events.push(format!("syscalls/sys_exit_{tracepoint}"));
            }
        }
        let stopped = Arc::new(AtomicBool::new(false));
        let (instance, observer) = match Instance::create(&instance_name, &events, buffer_kb_per_cpu()) {
            Ok(instance) => {
                (Some(Arc::new(instance)), bpf_note.map_or_else(|| "tracefs".to_string(), |n| format!("tracefs ({n})")))
            }
            Err(reason) => {
                tracing::warn!(%reason, "kernel observer unavailable; recording only the agent's own notes");
                (None, format!("none ({reason})"))
            }
        };
        if let (Some(instance), Some(expression)) = (&instance, selection.filter()) {
            for name in syscalls.iter().filter(|s| !HOST_WIDE_SYSCALLS.contains(&s.as_str()) && *s != "ptrace") {
                for part in ["enter", "exit"] {
                    let tracepoint = heisen_recordings::tracepoint_name(name);
                    instance.filter(&format!("syscalls/sys_{part}_{tracepoint}"), &expression)?;
                }
            }
        }
        if let (Some(instance), true) = (&instance, syscalls.iter().any(|s| s == "ptrace")) {
            // Every attach on the host, whatever the selection: a tracer perturbs its target.
            instance.filter("syscalls/sys_enter_ptrace", PTRACE_FILTER)?;
        }
        let pid_filter = match (&instance, &scope) {
            (Some(instance), Scope::Launched) => Some(instance.restrict_to_pids()?),
            (Some(instance), Scope::Netns { .. }) => {
                // The agent's own threads are not the host's behaviour, and its reader's calls
                // would feed themselves (the reader excludes itself once it runs).
                instance.exclude_tasks(&own_tasks())?;
                None
            }
            _ => None,
        };
        let capture = Capture {
            id: id.to_string(),
            sink,
            instance,
            pid_filter: Mutex::new(pid_filter),
            cgroup: Mutex::new(cgroup),
            reader: Mutex::new(None),
            stopped,
            tracers: Mutex::new(Vec::new()),
            observer,
        };
        // Loopback hosts share the machine's mount table: only their own work directory is theirs.
        capture.spawn_mount_watcher(match scope {
            Scope::Launched => Some(workdir.to_path_buf()),
            Scope::Netns { .. } => None,
        });
        if let Some(instance) = &capture.instance {
            let mono_to_raw = clock_ns(libc::CLOCK_REALTIME) - clock_ns(libc::CLOCK_MONOTONIC);
            let socket_addrs = match scope {
                // Loopback hosts share addresses: a socket could not be told apart.
                Scope::Launched => Vec::new(),
                Scope::Netns { .. } => crate::observer::host_addresses(),
            };
            let netns = matches!(scope, Scope::Netns { .. });
            let decoder = Decoder::new(scope, mono_to_raw)
                .with_socket_addresses(socket_addrs)
                .with_crontab_dirs(crontab_dirs.to_vec());
            let reader = if text_reader || !instance.has_raw_pipes() {
                if writes.is_some() {
                    // No raw pipes, no merge by time: the writes go back to tracefs.
                    for part in ["enter", "exit"] {
                        instance.enable(&format!("syscalls/sys_{part}_write"))?;
                    }
                }
                Reader::Text(instance.pipe()?)
            } else {
                let mut formats = crate::rawtrace::formats(&instance.root(), &events);
                if writes.is_some() {
                    formats.insert(crate::bpf::WRITE_ID, crate::bpf::write_format());
                }
                if args.is_some() {
                    formats.insert(crate::bpf_args::ARGS_ID, crate::bpf_args::args_format());
                }
                Reader::Raw(instance.clone(), formats, writes.map(Box::new), args.map(Box::new))
            };
            let (sink, stopped) = (capture.sink.clone(), capture.stopped.clone());
            let own = netns.then(|| instance.clone());
            let handle = std::thread::Builder::new()
                .name(format!("trace-{id}"))
                .spawn(move || {
                    if let Some(instance) = own {
                        // SAFETY: gettid has no preconditions.
                        let tid = unsafe { libc::gettid() };
                        if let Err(e) = instance.exclude_tasks(&[tid]) {
                            tracing::warn!(%e, "the trace reader could not leave its own calls out of the trace");
                        }
                    }
                    read_trace(reader, decoder, &sink, &stopped)
                })
                .map_err(AgentError::syscall("cannot start the trace reader thread"))?;
            *capture.reader.lock().expect("reader") = Some(handle);
            capture.spawn_housekeeping();
        }
        Ok(capture)
    }

    /// Periodic flush (the reader only flushes when lines arrive) and overrun accounting.
    fn spawn_housekeeping(&self) {
        let (sink, instance, stopped) = (self.sink.clone(), self.instance.clone(), self.stopped.clone());
        std::thread::spawn(move || {
            let mut seen_overruns = 0;
            while !stopped.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
                sink.flush();
                if let Some(instance) = &instance {
                    let overruns = instance.overruns();
                    if overruns > seen_overruns {
                        sink.record_loss(overruns - seen_overruns, "tracefs ring buffer overrun".into());
                        seen_overruns = overruns;
                    }
                }
            }
        });
    }

    /// Records a note from the agent (launch, output, gate, exit code).
    pub fn note(&self, note: AgentNote) {
        write_note(self.instance.as_deref(), &self.sink, note);
    }

    /// Starts the mount watcher: changes of this host's mount table become notes in the trace,
    /// which the decoder attributes to the mount syscall that made them.
    fn spawn_mount_watcher(&self, only_under: Option<std::path::PathBuf>) {
        let (sink, instance, stopped) = (self.sink.clone(), self.instance.clone(), self.stopped.clone());
        let spawned = std::thread::Builder::new().name(format!("mounts-{}", self.id)).spawn(move || {
            crate::environment::watch_mounts(stopped, only_under, |kind| {
                write_note(instance.as_deref(), &sink, AgentNote { pid: 0, comm: String::new(), run: 0, kind });
            })
        });
        if let Err(e) = spawned {
            self.sink.record_loss(0, format!("mount watcher could not start: {e}"));
        }
    }

    /// The prepared bytes a launched child writes into the trace before exec, and the fd to write
    /// them to, so its own pid is tagged with its run from its very first event.
    pub fn launch_marker(&self, note: &AgentNote) -> Option<(std::os::fd::RawFd, Vec<u8>)> {
        let instance = self.instance.as_ref()?;
        let json = serde_json::to_string(note).ok()?;
        Some((instance.marker_fd()?, format!("heisen:{json}").into_bytes()))
    }

    /// In launched scope: the files a child writes its own pid to, so the kernel records it
    /// (the tracefs pid list, and the write recorder's cgroup).
    pub fn pid_filter_fds(&self) -> [Option<std::os::fd::RawFd>; 2] {
        use std::os::fd::AsRawFd;
        let group = self.cgroup.lock().expect("cgroup").as_ref().map(|g| g.procs().as_raw_fd());
        [self.pid_filter.lock().expect("pid filter").as_ref().map(|f| f.as_raw_fd()), group]
    }

    /// Attaches the ptrace recorder (a helper process of this binary) to `pid`; its decoded calls
    /// and its attach/detach go into this capture's trace. Returns the recorder's pid.
    pub fn attach_ptrace(&self, pid: i32) -> Result<i32, AgentError> {
        let instance = self.instance.as_ref().ok_or_else(|| {
            AgentError::Unavailable("the ptrace recorder writes into the kernel trace, which is off here".into())
        })?;
        let exe = std::env::current_exe().map_err(AgentError::syscall("cannot find the agent's own binary"))?;
        let mut child = std::process::Command::new(exe)
            .args(["ptrace-record", "--pid", &pid.to_string(), "--marker"])
            .arg(instance.dir().join("trace_marker"))
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(AgentError::syscall("cannot start the ptrace recorder"))?;
        // A recorder that cannot attach exits at once: say why instead of pretending.
        std::thread::sleep(Duration::from_millis(100));
        if let Ok(Some(status)) = child.try_wait() {
            let mut why = String::new();
            if let Some(mut err) = child.stderr.take() {
                use std::io::Read;
                let _ = err.read_to_string(&mut why);
            }
            return Err(AgentError::BadInput(format!(
                "ptrace recorder for pid {pid} ended ({status}): {}",
                why.trim()
            )));
        }
        let tracer = child.id() as i32;
        self.tracers.lock().expect("tracers").push(child);
        Ok(tracer)
    }

    /// Stops recording: every event traced before this call is stored when it returns.
    pub fn stop(&self) {
        if self.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        // Detach ptrace recorders first, so their detach notes land before the stop marker.
        for mut tracer in self.tracers.lock().expect("tracers").drain(..) {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(tracer.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(tracer.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = tracer.kill();
            let _ = tracer.wait();
        }
        if let Some(instance) = &self.instance {
            let _ = instance.mark(&format!("heisen-stop:{}", self.id));
            if let Some(handle) = self.reader.lock().expect("reader").take() {
                let deadline = Instant::now() + Duration::from_secs(10);
                while !handle.is_finished() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                }
                if handle.is_finished() {
                    let _ = handle.join();
                } else {
                    self.sink.record_loss(
                        0,
                        "trace reader did not reach the stop marker within 10 s; later events missing".into(),
                    );
                }
            }
            // Nothing is read any more: leave the kernel as it was (the write recorder went with
            // the reader thread).
            self.pid_filter.lock().expect("pid filter").take();
            instance.close();
        }
        self.cgroup.lock().expect("cgroup").take();
        self.sink.flush();
        if let Err(e) = self.sink.store.mark_stopped(&self.sink.capture) {
            tracing::error!(capture = %self.sink.capture, error = %e, "cannot note the capture as stopped");
        }
        let _ = self.sink.store.flush();
    }
}
