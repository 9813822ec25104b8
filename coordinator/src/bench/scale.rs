//! `heisen bench scale`: what a capture the size of a load test costs. For each size, a
//! synthetic capture over several hosts (own clocks, runs, forks, signals, TCP edges; see
//! `heisen_recordings::synthetic`) is written, read, shown as a timeline and explained, each step
//! in a process of its own so its peak memory (the kernel's `ru_maxrss`) is its alone.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use heisen_recordings::{synthetic, BundleFile};
use serde::Serialize;

/// What `heisen bench scale` runs.
pub struct Plan {
    pub sizes: Vec<u64>,
    pub hosts: usize,
    pub runs: u32,
    /// Where the bundles are written (removed afterwards unless kept).
    pub dir: PathBuf,
    /// A step that takes longer is stopped and reported as such.
    pub timeout: Duration,
    /// Steps to run (write, read, timeline, explain); write always runs.
    pub steps: Vec<String>,
    /// Bundles of real captures measured beside the synthetic ones (read, timeline, explain).
    pub real: Vec<PathBuf>,
}

pub const STEPS: &[&str] = &["write", "read", "timeline", "explain"];

/// One measured step.
#[derive(Debug, Serialize)]
pub struct Row {
    /// `synthetic` or the real bundle's file name.
    pub capture: String,
    pub events: u64,
    pub step: String,
    pub seconds: f64,
    pub events_per_s: f64,
    pub peak_rss_bytes: u64,
    /// For `write`: the bundle's size per event.
    pub bytes_per_event: Option<f64>,
    /// What the step aims at, in words, and whether it met it (None: no target or not finished).
    pub target: String,
    pub met: Option<bool>,
    /// Why the step did not finish, when it did not.
    pub failed: Option<String>,
}

/// Peak RSS each step may reach (bytes).
const RSS_TARGET: u64 = 300 << 20;

/// Runs the plan; `progress` hears what is being measured.
pub fn scale(plan: &Plan, progress: impl Fn(&str)) -> Result<Vec<Row>> {
    let exe = std::env::current_exe().context("cannot find heisen's own executable")?;
    std::fs::create_dir_all(&plan.dir).with_context(|| format!("cannot create {}", plan.dir.display()))?;
    let wants = |step: &str| plan.steps.is_empty() || plan.steps.iter().any(|s| s == step);
    let mut rows = Vec::new();
    for &size in &plan.sizes {
        let path = plan.dir.join(format!("synthetic-{size}.heisen"));
        progress(&format!("writing a synthetic capture of {size} events over {} hosts", plan.hosts));
        let mut write = Command::new(&exe);
        write.args(["bench", "scale-step", "write"]).arg(&path).args([
            "--events",
            &size.to_string(),
            "--hosts",
            &plan.hosts.to_string(),
            "--runs",
            &plan.runs.to_string(),
        ]);
        let mut row = step_row("synthetic", size, "write", &mut write, plan)?;
        if let Some(why) = &row.failed {
            bail!("writing the synthetic capture of {size} events failed: {why}");
        }
        // The sizes are split evenly over the hosts: what was written is what the file says.
        let size = event_count(&BundleFile::open(&path)?);
        let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        row.events = size;
        row.events_per_s = size as f64 / row.seconds.max(1e-9);
        row.bytes_per_event = Some(bytes as f64 / size.max(1) as f64);
        row.target = "<= 40 bytes/event, peak RSS <= 300 MB".into();
        row.met = Some(bytes as f64 / size.max(1) as f64 <= 40.0 && row.peak_rss_bytes <= RSS_TARGET);
        rows.push(row);
        rows.extend(measure_bundle("synthetic", &path, size, plan, &exe, &wants, &progress)?);
        let _ = std::fs::remove_file(&path);
    }
    for real in &plan.real {
        let events = event_count(&BundleFile::open(real)?);
        let name = real.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        rows.extend(measure_bundle(&name, real, events, plan, &exe, &wants, &progress)?);
    }
    Ok(rows)
}

fn event_count(file: &BundleFile) -> u64 {
    (0..file.head().hosts.len()).map(|h| file.event_count(h)).sum()
}

fn measure_bundle(
    capture: &str,
    path: &Path,
    events: u64,
    plan: &Plan,
    exe: &Path,
    wants: &dyn Fn(&str) -> bool,
    progress: &dyn Fn(&str),
) -> Result<Vec<Row>> {
    // (step, heisen's arguments after the bundle's path, target, whether a finished row met it)
    type Met = fn(&Row) -> bool;
    let steps: [(&str, &[&str], &str, Met); 3] = [
        ("read", &[], "peak RSS <= 300 MB", |r| r.peak_rss_bytes <= RSS_TARGET),
        ("timeline", &["--jsonl"], ">= 2,000,000 events/s, peak RSS <= 300 MB", |r| {
            r.events_per_s >= 2e6 && r.peak_rss_bytes <= RSS_TARGET
        }),
        ("explain", &["--json"], "<= 60 s, peak RSS <= 300 MB", |r| {
            r.seconds <= 60.0 && r.peak_rss_bytes <= RSS_TARGET
        }),
    ];
    let mut rows = Vec::new();
    for (step, args, target, met) in steps.into_iter().filter(|(step, ..)| wants(step)) {
        progress(&format!("{step} of {capture} ({events} events)"));
        let mut cmd = Command::new(exe);
        match step {
            "read" => cmd.args(["bench", "scale-step", "read"]),
            other => cmd.arg(other),
        };
        cmd.arg(path).args(args);
        let mut row = step_row(capture, events, step, &mut cmd, plan)?;
        row.target = target.into();
        row.met = row.failed.is_none().then(|| met(&row));
        rows.push(row);
    }
    Ok(rows)
}

fn step_row(capture: &str, events: u64, step: &str, cmd: &mut Command, plan: &Plan) -> Result<Row> {
    let log = plan.dir.join(format!("{step}.stderr"));
    let run = run_measured(cmd, &log, plan.timeout)?;
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    let failed = match run.status {
        // explain exits 1 when it finds nothing: the work was done.
        Some(0) | Some(1) => None,
        Some(code) => Some(format!("exit {code}: {}", stderr.lines().last().unwrap_or(""))),
        None => Some(format!("stopped after {} s", plan.timeout.as_secs())),
    };
    Ok(Row {
        capture: capture.to_string(),
        events,
        step: step.to_string(),
        seconds: run.seconds,
        events_per_s: events as f64 / run.seconds.max(1e-9),
        peak_rss_bytes: run.peak_rss_bytes,
        bytes_per_event: None,
        target: String::new(),
        met: None,
        failed,
    })
}

/// A child's wall time, peak RSS and exit code (None: killed at the timeout).
struct Measured {
    seconds: f64,
    peak_rss_bytes: u64,
    status: Option<i32>,
}

/// Runs `cmd` with its output discarded (stderr to `log`), waiting with `wait4` for its rusage.
fn run_measured(cmd: &mut Command, log: &Path, timeout: Duration) -> Result<Measured> {
    let err = std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let start = Instant::now();
    let child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(err).spawn().context("cannot start a step")?;
    let pid = child.id() as libc::pid_t;
    let mut killed = false;
    loop {
        let mut status = 0;
        // SAFETY: rusage is plain data the kernel fills; status is a valid out pointer.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: waiting for our own child, which std will not wait for (it is never waited on).
        let got = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if got == pid {
            let seconds = start.elapsed().as_secs_f64();
            let code = if killed || !libc::WIFEXITED(status) { None } else { Some(libc::WEXITSTATUS(status)) };
            return Ok(Measured { seconds, peak_rss_bytes: usage.ru_maxrss as u64 * 1024, status: code });
        }
        if got < 0 {
            bail!("waiting for a step failed: {}", std::io::Error::last_os_error());
        }
        if !killed && start.elapsed() > timeout {
            // SAFETY: signalling our own child, not yet reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            killed = true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The `write` step: a synthetic capture, streamed to `path`.
pub fn write_step(path: &Path, events: u64, hosts: usize, runs: u32) -> Result<()> {
    let plan = synthetic::Plan { events, hosts, runs, span_ns: 60_000_000_000 };
    synthetic::write(path, &plan)?;
    Ok(())
}

/// The `read` step: every event of every host, decoded and checked.
pub fn read_step(path: &Path) -> Result<u64> {
    let file = BundleFile::open(path)?;
    let mut n = 0u64;
    for h in 0..file.head().hosts.len() {
        n += file.host_events(h).count() as u64;
    }
    if let Some(d) = file.damage().first() {
        bail!("{}: damaged {d}", path.display());
    }
    Ok(n)
}

/// The rows as a table, with the growth of each step's peak RSS from the smallest size to the
/// largest (target: at most 20 %).
pub fn table(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<22} {:>11} {:<9} {:>9} {:>13} {:>10} {:>8}  target\n",
        "capture", "events", "step", "seconds", "events/s", "peak MB", "B/event"
    );
    for r in rows {
        let bpe = r.bytes_per_event.map_or(String::new(), |b| format!("{b:.1}"));
        let verdict = match (&r.failed, r.met) {
            (Some(why), _) => format!("NOT FINISHED: {why}"),
            (None, met) => format!("{}{}", r.target, super::verdict(met)),
        };
        out.push_str(&format!(
            "{:<22} {:>11} {:<9} {:>9.2} {:>13.0} {:>10.1} {:>8}  {}\n",
            r.capture,
            r.events,
            r.step,
            r.seconds,
            r.events_per_s,
            r.peak_rss_bytes as f64 / (1 << 20) as f64,
            bpe,
            verdict
        ));
    }
    for step in STEPS {
        let synthetic: Vec<&Row> =
            rows.iter().filter(|r| r.capture == "synthetic" && r.step == *step && r.failed.is_none()).collect();
        if let (Some(small), Some(large)) = (synthetic.first(), synthetic.last()) {
            if large.events > small.events {
                let growth = large.peak_rss_bytes as f64 / small.peak_rss_bytes.max(1) as f64 - 1.0;
                out.push_str(&format!(
                    "peak RSS of {step} from {} to {} events: {:+.0} % (aim: <= +20 %){}\n",
                    small.events,
                    large.events,
                    growth * 100.0,
                    super::verdict(Some(growth <= 0.20))
                ));
            }
        }
    }
    out
}
