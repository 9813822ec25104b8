//! Synthetic captures the size of a load test, for `heisen bench scale` and the tests that check
//! counts and order at millions of events. They look like real ones where the analysis cares:
//! every host has its own clock (offset, drift, a bound from anchors), runs follow each other in
//! time, each run forks and execs a worker that writes, opens and renames files and signals
//! itself, and every run opens a TCP connection to the next host (a cross-host edge). The bundle
//! is written as it is generated, a chunk at a time, so a capture of any size costs no memory.

use std::path::Path;

use crate::{
    Anchor, Bundle, BundleWriter, ClockModel, Event, EventKind, HostRecording, RecordingsError, RunObserver,
    RunOutcome, SignalPhase, CHUNK_EVENTS,
};

/// What to generate.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Events in all (split evenly between hosts).
    pub events: u64,
    pub hosts: usize,
    pub runs: u32,
    /// Capture length in coordinator time (ns).
    pub span_ns: i64,
}

/// What was generated, for checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Written {
    pub events: u64,
    /// Edges the capture proves: forks, signals, TCP handshakes.
    pub forks: u64,
    pub signals: u64,
    pub tcp: u64,
}

/// The capture's start on the coordinator's clock (2026-01-01).
const START_NS: i64 = 1_767_225_600_000_000_000;
/// How long after the connect the peer sees the handshake complete (ns, true time).
const HANDSHAKE_NS: i64 = 300_000;

fn clock(host: usize, span_ns: i64) -> ClockModel {
    let anchors = (0..=20).map(|k| Anchor { at_ns: START_NS + span_ns / 20 * k, error_ns: 50_000 }).collect();
    ClockModel {
        offset_ns: host as i64 * 1_000_000,
        error_ns: 50_000,
        drift_ppm: host as f64 * 10.0,
        ref_ns: START_NS,
        drift_error_ppm: 1.0,
        anchors,
    }
}

fn address(host: usize, port: u32) -> String {
    format!("10.77.0.{}:{port}", host + 1)
}

/// Writes a synthetic capture to `path`.
pub fn write(path: &Path, plan: &Plan) -> Result<Written, RecordingsError> {
    let hosts = plan.hosts.max(1);
    let runs = plan.runs.max(1) as u64;
    let per_host = (plan.events / hosts as u64).max(runs * 16);
    let period = (plan.span_ns / per_host as i64).max(1);
    let run_len = per_host / runs;
    let lag = (HANDSHAKE_NS / period + 1) as u64;
    let mut head = Bundle {
        capture_id: format!("synthetic-{}x{}", hosts, per_host),
        started_ns: START_NS,
        scenario: None,
        hosts: (0..hosts)
            .map(|h| HostRecording {
                observer: "synthetic".into(),
                ..HostRecording::new(&format!("host{h}"), clock(h, plan.span_ns), vec![])
            })
            .collect(),
        runs: (1..=runs as u32)
            .map(|run| RunOutcome {
                run,
                ordering: None,
                failed: run % 2 == 0,
                valid: true,
                note: String::new(),
                steps: vec![],
                observer: RunObserver::Kernel,
                variants: vec![],
            })
            .collect(),
        causal: vec![],
        placeholders: Default::default(),
    };
    let mut w = BundleWriter::create(path, &head)?;
    let mut written = Written::default();
    let mut batch = Vec::with_capacity(CHUNK_EVENTS);
    for h in 0..hosts {
        let model = head.hosts[h].clock.clone();
        for i in 0..per_host {
            let t = START_NS + i as i64 * period;
            let raw_ns = t + model.offset_at(t) + ((i * 7919) % 200) as i64;
            let run = (i / run_len).min(runs - 1) + 1;
            let at = i - (run - 1) * run_len;
            let worker = 1000 + run as i32;
            let (pid, kind) = synthetic_kind(h, hosts, run, at, run_len, lag, worker, raw_ns);
            match &kind {
                EventKind::Fork { .. } => written.forks += 1,
                EventKind::Signal { phase: SignalPhase::Deliver, .. } => written.signals += 1,
                EventKind::Socket { to_state, from_state, .. }
                    if from_state == "SYN_SENT" && to_state == "ESTABLISHED" =>
                {
                    written.tcp += (hosts > 1) as u64
                }
                _ => {}
            }
            let comm = if pid == 1 { "init" } else { "worker" };
            batch.push(Event { seq: i, raw_ns, pid, comm: comm.into(), run: run as u32, kind });
            if batch.len() == CHUNK_EVENTS {
                w.events(h, &batch)?;
                batch.clear();
            }
        }
        w.events(h, &batch)?;
        batch.clear();
        written.events += per_host;
    }
    head.capture_id = format!("synthetic-{}", written.events);
    w.finish(&head)?;
    Ok(written)
}

/// Event `at` of run `run` on host `h`: (pid, what).
#[allow(clippy::too_many_arguments)]
fn synthetic_kind(
    h: usize,
    hosts: usize,
    run: u64,
    at: u64,
    run_len: u64,
    lag: u64,
    worker: i32,
    raw_ns: i64,
) -> (i32, EventKind) {
    let port = 40_000 + run as u32;
    let syscall =
        |name: &str, args: Vec<u64>, ret: i64, fd_path: Option<String>, strings: Vec<String>| EventKind::Syscall {
            name: name.into(),
            args,
            ret,
            enter_ns: raw_ns - 2_000,
            fd_path,
            strings,
            addr: None,
            path_from: None,
        };
    let data = format!("/var/lib/app/run{run}.log");
    match at {
        0 => (1, EventKind::Fork { parent_pid: 1, child_pid: worker }),
        1 => (
            worker,
            EventKind::Exec {
                filename: "/usr/bin/python3".into(),
                argv: vec!["python3".into(), "worker.py".into(), run.to_string()],
                ppid: 1,
                chain: vec![],
            },
        ),
        2 if hosts > 1 => (
            worker,
            EventKind::Socket {
                local: address(h, port),
                remote: address((h + 1) % hosts, 8080),
                from_state: "SYN_SENT".into(),
                to_state: "ESTABLISHED".into(),
            },
        ),
        a if hosts > 1 && a == 2 + lag => {
            let from = (h + hosts - 1) % hosts;
            (
                worker,
                EventKind::Socket {
                    local: address(h, 8080),
                    remote: address(from, port),
                    from_state: "SYN_RECV".into(),
                    to_state: "ESTABLISHED".into(),
                },
            )
        }
        a if a + 1 == run_len => (worker, EventKind::Exit { exit_code: (run % 2) as i32, killed_by: None }),
        a if a % 1000 == 500 || a % 1000 == 501 => {
            let phase = if a % 1000 == 500 { SignalPhase::Generate } else { SignalPhase::Deliver };
            let signal = EventKind::Signal {
                signal: 10,
                sender_pid: worker,
                sender_comm: "worker".into(),
                target_pid: worker,
                target_comm: "worker".into(),
                phase,
                result: 0,
            };
            (worker, signal)
        }
        a if a % 200 == 100 => {
            (worker, syscall("renameat2", vec![0, 0, 0, 0, 0], 0, None, vec![format!("{data}.tmp"), data]))
        }
        a if a % 50 == 10 => (worker, syscall("openat", vec![0, 0, 0o1101, 0o644], 3, None, vec![data])),
        _ => (worker, syscall("write", vec![3, 0, 64], 64, Some(data), vec![])),
    }
}
