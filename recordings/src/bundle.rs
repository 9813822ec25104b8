//! The portable bundle: one file holding a whole capture (every host's events and metadata, clock
//! probes, the scenario, run outcomes), so it can be explained, replayed or shared offline.
//!
//! Bundles are written in the chunked format 2 (`chunked`: events in checksummed LZ4 chunks
//! with an index, read a chunk at a time). Format 1 is still read: `MAGIC (8) | version (u32 LE)
//! | payload length (u64 LE) | CRC-32 of payload (u32 LE) | payload (JSON)`. The reader refuses
//! other magics, newer versions, short files and checksum mismatches, each with an error naming
//! the file and what is wrong.

use std::collections::BTreeMap;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{ClockModel, Event, ProbeSample, RecordingsError};

/// First bytes of every bundle.
pub const BUNDLE_MAGIC: &[u8; 8] = b"HEISENBN";
/// The bundle format this build writes and the newest it reads (1 was one JSON payload; it is
/// still read).
pub const BUNDLE_VERSION: u32 = crate::chunked::VERSION_CHUNKED;
const HEADER_LEN: usize = 8 + 4 + 8 + 4;

/// A whole capture.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Bundle {
    pub capture_id: String,
    /// Coordinator clock when the capture started (ns since the epoch).
    pub started_ns: i64,
    /// The scenario that was run, verbatim, when the capture came from `heisen run`/`verify`.
    pub scenario: Option<ScenarioSource>,
    pub hosts: Vec<HostRecording>,
    pub runs: Vec<RunOutcome>,
    /// Causal edges the coordinator created by its own messages (see `Order`).
    #[serde(default)]
    pub causal: Vec<crate::MessageEdge>,
    /// What the placeholders of the scenario's commands stood for in this capture: `shared`, and
    /// `workdir:HOST` per host. Explain turns recorded paths back into `{shared}/...` with them,
    /// so a gate on a path holds the same file in a later capture.
    #[serde(default)]
    pub placeholders: BTreeMap<String, String>,
}

/// The scenario text as it was when captured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScenarioSource {
    pub path: String,
    pub text: String,
}

/// One host's part of a capture.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HostRecording {
    pub name: String,
    pub agent_version: String,
    pub kernel: String,
    /// How the host recorded ("tracefs", or why it could not).
    pub observer: String,
    /// The fitted clock model; refit from `probes` if the model improves.
    pub clock: ClockModel,
    pub probes: Vec<ProbeSample>,
    /// Events in host sequence order.
    pub events: Vec<Event>,
    pub lost: u64,
    /// Environment snapshots: capture start, each run once its services are up, capture end.
    #[serde(default)]
    pub environments: Vec<crate::Environment>,
    /// Why this host's recording is incomplete (its agent crashed, restarted or could not be
    /// reached at the end), with what to do; None when it is whole. The spans it lacks are `lost`
    /// events among its events.
    #[serde(default)]
    pub incomplete: Option<String>,
}

impl HostRecording {
    /// A host of a capture made by hand (tests, synthetic captures): `events` on a clock that is
    /// the coordinator's, nothing lost, no snapshots.
    pub fn new(name: &str, clock: ClockModel, events: Vec<Event>) -> HostRecording {
        HostRecording {
            name: name.into(),
            agent_version: String::new(),
            kernel: String::new(),
            observer: String::new(),
            clock,
            probes: vec![],
            events,
            lost: 0,
            environments: vec![],
            incomplete: None,
        }
    }

    /// Turns every gap in the sequence numbers of `events` (sorted by seq) into a `lost` event
    /// at the first missing number, spanning the time between its neighbours; returns how many
    /// events are missing. A capture's first event is seq 0.
    pub fn mark_seq_gaps(events: &mut Vec<Event>) -> u64 {
        let mut gaps = SeqGaps::default();
        *events = gaps.mark(std::mem::take(events));
        gaps.missing
    }

    /// Appends a `lost` event for a span of time in which nothing of this host was recorded:
    /// from its last event (or `from_ns` when it has none) to `to_ns`, both on the host clock.
    pub fn mark_lost_span(events: &mut Vec<Event>, from_ns: i64, to_ns: i64, why: &str) {
        let last = events.last().map(|e| (e.seq, e.raw_ns));
        events.push(lost_span(last, from_ns, to_ns, why));
    }
}

/// The `lost` event for a span in which nothing of a host was recorded: after its last event
/// `last` (seq, raw_ns), or from `from_ns` when it has none, to `to_ns` (host clock).
pub fn lost_span(last: Option<(u64, i64)>, from_ns: i64, to_ns: i64, why: &str) -> Event {
    let (seq, from) = match last {
        Some((seq, raw_ns)) => (seq + 1, raw_ns),
        None => (0, from_ns),
    };
    Event {
        seq,
        raw_ns: to_ns.max(from),
        pid: 0,
        comm: String::new(),
        run: 0,
        kind: crate::EventKind::Lost { count: 0, location: why.to_string(), from_ns: Some(from) },
    }
}

/// [`HostRecording::mark_seq_gaps`] as a host's events stream by, a batch at a time.
#[derive(Default)]
pub struct SeqGaps {
    /// Events missing so far.
    pub missing: u64,
    /// Events left out because their seq did not follow the one before (an agent's store never
    /// sends them so; a bundle must not hold them).
    pub disordered: u64,
    expected: u64,
    last_ns: Option<i64>,
}

impl SeqGaps {
    /// The batch with a `lost` event before each event that does not follow the one before it.
    pub fn mark(&mut self, events: Vec<Event>) -> Vec<Event> {
        let mut out = Vec::with_capacity(events.len());
        for e in events {
            if self.last_ns.is_some() && e.seq < self.expected {
                self.disordered += 1;
                continue;
            }
            if e.seq > self.expected {
                self.missing += e.seq - self.expected;
                out.push(Event {
                    seq: self.expected,
                    raw_ns: e.raw_ns,
                    pid: 0,
                    comm: String::new(),
                    run: 0,
                    kind: crate::EventKind::Lost {
                        count: e.seq - self.expected,
                        location: format!(
                            "sequence numbers {}..{} missing from the agent's store",
                            self.expected, e.seq
                        ),
                        from_ns: Some(self.last_ns.unwrap_or(e.raw_ns)),
                    },
                });
            }
            self.expected = self.expected.max(e.seq + 1);
            self.last_ns = Some(e.raw_ns);
            out.push(e);
        }
        out
    }
}

/// How one run of the scenario ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunOutcome {
    /// 1-based run number; events carry it in `Event::run`.
    pub run: u32,
    /// Ordering enforced by gates (`during`, `before`, ...), or none for a free (load) run.
    pub ordering: Option<String>,
    /// The failure predicate held.
    pub failed: bool,
    /// False when a gate timed out or the run could not be carried out as asked.
    pub valid: bool,
    /// Why the run is invalid or failed, in words.
    pub note: String,
    pub steps: Vec<StepOutcome>,
    /// How the run's processes were observed (unknown in bundles of older heisen).
    #[serde(default)]
    pub observer: RunObserver,
    /// The scenario's variants that were on in this run (their processes ran). Empty in bundles
    /// of older heisen, where the ordering's name (`with-X`) said it.
    #[serde(default)]
    pub variants: Vec<String>,
}

/// How a run's processes were observed; serialized as `kernel`, `ptrace`, or `` when unknown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunObserver {
    /// A bundle of an older heisen did not say.
    #[default]
    #[serde(rename = "")]
    Unknown,
    /// Kernel tracepoints only: the processes are not perturbed.
    Kernel,
    /// The ptrace recorder was attached to the scenario's processes too, which perturbs them.
    Ptrace,
}

impl RunObserver {
    pub fn name(self) -> &'static str {
        match self {
            RunObserver::Unknown => "unknown",
            RunObserver::Kernel => "kernel",
            RunObserver::Ptrace => "ptrace",
        }
    }
}

/// How one step of a run ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepOutcome {
    pub name: String,
    pub host: String,
    pub exit_code: i32,
    /// The signal that killed it, 0 if none (bundles before this field say 0).
    #[serde(default)]
    pub signal: i32,
    /// The last lines of its output.
    pub output_tail: Vec<String>,
}

impl Bundle {
    /// Writes the bundle in the chunked format (see `chunked`), atomically (a temporary file
    /// created exclusively beside it, fsync, rename): a crash leaves the old file or the new one,
    /// never half of one, and a file or symlink planted at any name is never written through.
    pub fn write(&self, path: &Path) -> Result<(), RecordingsError> {
        let mut w = crate::BundleWriter::create(path, self)?;
        for (i, h) in self.hosts.iter().enumerate() {
            w.events(i, &h.events)?;
        }
        w.finish(self)
    }

    /// A format 1 bundle file's bytes around `payload` (its JSON): magic, version, length, checksum.
    pub fn frame(payload: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(HEADER_LEN + payload.len());
        bytes.extend_from_slice(BUNDLE_MAGIC);
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        bytes.extend_from_slice(payload);
        bytes
    }

    /// Reads and checks a whole bundle of either format. Only a regular file is read (a FIFO or
    /// a device is refused at once), and every size the file claims is checked against it
    /// before anything is allocated for it. Any damage is an error naming the file and where.
    pub fn read(path: &Path) -> Result<Bundle, RecordingsError> {
        // Both formats check every invariant as they read (`check_head`, `check_event`).
        crate::BundleFile::open(path)?.load()
    }

    /// Reads a format 1 bundle (one checksummed JSON payload) from `file` of `size` bytes.
    pub(crate) fn read_json(path: &Path, mut file: std::fs::File, size: u64) -> Result<Bundle, RecordingsError> {
        let io_err = |source| RecordingsError::Io { op: "read bundle", path: path.to_path_buf(), source };
        let bad = |problem| RecordingsError::BadBundle { path: path.to_path_buf(), problem };
        let mut header = [0u8; HEADER_LEN];
        if size < HEADER_LEN as u64 {
            return Err(bad(BundleProblem::NotABundle));
        }
        std::io::Read::read_exact(&mut file, &mut header).map_err(io_err)?;
        let promised = u64::from_le_bytes(header[12..20].try_into().expect("8 bytes"));
        let found = size - HEADER_LEN as u64;
        if promised != found {
            return Err(bad(BundleProblem::Length { promised, found: found as usize }));
        }
        let mut bytes = Vec::with_capacity(size as usize);
        bytes.extend_from_slice(&header);
        std::io::Read::read_to_end(&mut std::io::Read::take(file, found), &mut bytes).map_err(io_err)?;
        Bundle::decode_json(&bytes).map_err(bad)
    }

    /// Decodes a bundle file's bytes (either format), checking every checksum and invariant.
    pub fn decode(bytes: &[u8]) -> Result<Bundle, BundleProblem> {
        let file = crate::BundleFile::from_bytes(Path::new("bundle"), bytes.to_vec())?;
        let (bundle, damage) = file.load_salvaging();
        if let Some(d) = damage.first() {
            return Err(BundleProblem::Damaged(d.to_string()));
        }
        Ok(bundle)
    }

    /// Decodes a format 1 bundle's bytes, checking its header and checksum.
    pub(crate) fn decode_json(bytes: &[u8]) -> Result<Bundle, BundleProblem> {
        if bytes.len() < HEADER_LEN || &bytes[..8] != BUNDLE_MAGIC {
            return Err(BundleProblem::NotABundle);
        }
        let len = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
        let crc = u32::from_le_bytes(bytes[20..24].try_into().expect("4 bytes"));
        let payload = &bytes[HEADER_LEN..];
        if payload.len() as u64 != len {
            return Err(BundleProblem::Length { promised: len, found: payload.len() });
        }
        if crc32fast::hash(payload) != crc {
            return Err(BundleProblem::Checksum);
        }
        let bundle: Bundle = serde_json::from_slice(payload).map_err(BundleProblem::Payload)?;
        bundle.check().map_err(BundleProblem::Invalid)?;
        Ok(bundle)
    }

    /// The invariants every recorded bundle holds and the analysis relies on: instants within
    /// [0, MAX_INSTANT_NS], clock models with bounded offsets, errors and drifts, and each host's
    /// events in strictly increasing sequence order. A bundle that breaks one was not written by
    /// heisen as it was: it is refused here, where the error can name what is wrong.
    pub fn check(&self) -> Result<(), String> {
        self.check_head()?;
        for h in &self.hosts {
            let mut last_seq = None;
            for e in &h.events {
                check_event(&h.name, last_seq, e)?;
                last_seq = Some(e.seq);
            }
        }
        Ok(())
    }

    /// [`Bundle::check`] without the events: the capture's start, clock models and probes.
    pub fn check_head(&self) -> Result<(), String> {
        let bounded = |what: &str, ns: i64, min: i64| {
            if (min..=MAX_CLOCK_NS).contains(&ns) {
                Ok(())
            } else {
                Err(format!("{what} is {ns} ns, outside {min}..={MAX_CLOCK_NS}"))
            }
        };
        let drift = |what: &str, ppm: f64| {
            if ppm.is_finite() && ppm.abs() <= MAX_DRIFT_PPM {
                Ok(())
            } else {
                Err(format!("{what} is {ppm} ppm, beyond ±{MAX_DRIFT_PPM}"))
            }
        };
        instant("the capture's start", self.started_ns)?;
        for h in &self.hosts {
            let name = &h.name;
            let c = &h.clock;
            bounded(&format!("host {name}'s clock offset"), c.offset_ns, -MAX_CLOCK_NS)?;
            bounded(&format!("host {name}'s clock error"), c.error_ns, 0)?;
            instant(&format!("host {name}'s clock reference"), c.ref_ns)?;
            drift(&format!("host {name}'s clock drift"), c.drift_ppm)?;
            drift(&format!("host {name}'s clock drift error"), c.drift_error_ppm)?;
            for a in &c.anchors {
                instant(&format!("an anchor of host {name}'s clock"), a.at_ns)?;
                bounded(&format!("an anchor's error on host {name}"), a.error_ns, 0)?;
            }
            for p in &h.probes {
                for t in [p.t1_ns, p.t2_ns, p.t3_ns, p.t4_ns] {
                    instant(&format!("a clock probe of host {name}"), t)?;
                }
            }
        }
        Ok(())
    }

    /// The bundle without its events (hosts, clocks, runs, scenario): what a chunked bundle keeps
    /// in its metadata section.
    pub fn head(&self) -> Bundle {
        Bundle {
            capture_id: self.capture_id.clone(),
            started_ns: self.started_ns,
            scenario: self.scenario.clone(),
            hosts: self
                .hosts
                .iter()
                .map(|h| HostRecording {
                    name: h.name.clone(),
                    agent_version: h.agent_version.clone(),
                    kernel: h.kernel.clone(),
                    observer: h.observer.clone(),
                    clock: h.clock.clone(),
                    probes: h.probes.clone(),
                    events: Vec::new(),
                    lost: h.lost,
                    environments: h.environments.clone(),
                    incomplete: h.incomplete.clone(),
                })
                .collect(),
            runs: self.runs.clone(),
            causal: self.causal.clone(),
            placeholders: self.placeholders.clone(),
        }
    }

    /// The host recording named `name`.
    pub fn host(&self, name: &str) -> Option<&HostRecording> {
        self.hosts.iter().find(|h| h.name == name)
    }
}

fn instant(what: &str, ns: i64) -> Result<(), String> {
    if (0..=MAX_INSTANT_NS).contains(&ns) {
        Ok(())
    } else {
        Err(format!("{what} is {ns} ns, outside 0..={MAX_INSTANT_NS}"))
    }
}

/// One event's part of [`Bundle::check`]: its instants, and its seq after `last_seq` (the seq of
/// the host's previous event).
pub fn check_event(host: &str, last_seq: Option<u64>, e: &Event) -> Result<(), String> {
    if let Some(last) = last_seq.filter(|s| e.seq <= *s) {
        return Err(format!("host {host}'s event seq {} does not follow seq {last}", e.seq));
    }
    let inside = |ns: i64| (0..=MAX_INSTANT_NS).contains(&ns);
    // Formatted only when wrong: this runs once per event of captures of millions.
    if !inside(e.raw_ns) {
        instant(&format!("host {host}'s event {}", e.seq), e.raw_ns)?;
    }
    match &e.kind {
        crate::EventKind::Syscall { enter_ns, .. } if !inside(*enter_ns) => {
            instant(&format!("the entry of host {host}'s event {}", e.seq), *enter_ns)
        }
        crate::EventKind::Lost { from_ns: Some(from), .. } if !inside(*from) => {
            instant(&format!("the start of host {host}'s loss {}", e.seq), *from)
        }
        _ => Ok(()),
    }
}

/// What is wrong with a file read as a bundle.
#[derive(Debug, thiserror::Error)]
pub enum BundleProblem {
    #[error("not a heisen bundle (no HEISENBN header)")]
    NotABundle,
    #[error(
        "bundle format version {version} is newer than this heisen reads (up to {BUNDLE_VERSION}); upgrade heisen"
    )]
    TooNew { version: u32 },
    #[error("bundle format version 0 is invalid")]
    VersionZero,
    #[error("truncated or padded: header promises {promised} payload bytes, file has {found}")]
    Length { promised: u64, found: usize },
    #[error("checksum mismatch: the file is corrupt")]
    Checksum,
    #[error("payload does not decode: {0}")]
    Payload(#[source] serde_json::Error),
    #[error("damaged {0}")]
    Damaged(String),
    #[error("{0}: no capture heisen writes has that, so the bundle was made or changed by something else")]
    Invalid(String),
}

/// The latest instant a bundle may name (ns since the epoch, about the year 2116): arithmetic on
/// instants and bounds stays far from overflow.
pub const MAX_INSTANT_NS: i64 = 1 << 62;
/// The largest clock offset or error bound a bundle may carry (about 11.6 days).
pub const MAX_CLOCK_NS: i64 = 1_000_000_000_000_000;
/// The largest drift a clock model may carry (ppm): 10 %.
pub const MAX_DRIFT_PPM: f64 = 100_000.0;

/// Default bundle location for a capture id under `dir`.
pub fn bundle_path(dir: &Path, capture_id: &str) -> PathBuf {
    dir.join(format!("{capture_id}.heisen"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_bundle() -> Bundle {
        Bundle {
            causal: vec![],
            placeholders: Default::default(),
            capture_id: "c".into(),
            started_ns: 1,
            scenario: None,
            hosts: vec![],
            runs: vec![RunOutcome {
                run: 1,
                ordering: None,
                failed: true,
                valid: true,
                note: String::new(),
                steps: vec![],
                observer: RunObserver::Kernel,
                variants: vec![],
            }],
        }
    }

    #[test]
    fn format_1_round_trip_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.heisen");
        let good = Bundle::frame(&serde_json::to_vec(&sample_bundle()).unwrap());
        std::fs::write(&path, &good).unwrap();
        assert_eq!(Bundle::read(&path).unwrap().runs.len(), 1);

        let check = |bytes: &[u8], expected: &str| {
            std::fs::write(&path, bytes).unwrap();
            let err = Bundle::read(&path).unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
            assert!(err.contains("b.heisen"), "{err}");
        };
        check(&good[..good.len() - 3], "truncated");
        let mut flipped = good.clone();
        let last = flipped.len() - 2;
        flipped[last] ^= 0x10;
        check(&flipped, "checksum");
        let mut future = good.clone();
        future[8] = 99;
        check(&future, "newer");
        check(b"random bytes that are not a bundle at all", "not a heisen bundle");
    }

    #[test]
    fn sequence_gaps_become_lost_events_and_disordered_events_are_left_out() {
        let ev = |seq: u64| Event {
            seq,
            raw_ns: 1_000 + seq as i64,
            pid: 1,
            comm: String::new(),
            run: 0,
            kind: crate::EventKind::Exit { exit_code: 0, killed_by: None },
        };
        let mut gaps = SeqGaps::default();
        // Batches as a pull hands them over: a gap inside one, a repeat and a step back across two.
        let first = gaps.mark(vec![ev(0), ev(1), ev(4)]);
        let second = gaps.mark(vec![ev(4), ev(2), ev(5)]);
        let seqs: Vec<(u64, &str)> = first.iter().chain(&second).map(|e| (e.seq, e.kind.name())).collect();
        assert_eq!(seqs, vec![(0, "exit"), (1, "exit"), (2, "lost"), (4, "exit"), (5, "exit")]);
        assert_eq!((gaps.missing, gaps.disordered), (2, 2));
    }

    #[test]
    fn run_observers_read_and_write_as_the_strings_they_were() {
        for (observer, text) in
            [(RunObserver::Kernel, "kernel"), (RunObserver::Ptrace, "ptrace"), (RunObserver::Unknown, "")]
        {
            assert_eq!(serde_json::to_string(&observer).unwrap(), format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<RunObserver>(&format!("\"{text}\"")).unwrap(), observer);
        }
        // A run of an older bundle: no observer, no variants.
        let old = r#"{"run":1,"ordering":null,"failed":true,"valid":true,"note":"","steps":[]}"#;
        let run: RunOutcome = serde_json::from_str(old).unwrap();
        assert_eq!((run.observer, run.variants.len()), (RunObserver::Unknown, 0));
    }
}
