//! `heisen bench record`: what observing and gating cost, side by side in one run, as ratios to
//! the untraced workload. Workloads are guest programs that time their own loop:
//! `storm` (one-byte writes to /dev/null), `load` (a file written in 64 KiB chunks) and `files`
//! (openat with O_TRUNC, write, rename, close on distinct paths).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use heisen_agent::gate_bench::{self, pin_to_cpu0, Supervisor};
use serde::Serialize;

use crate::client::Agent;

/// One row of the table.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub workload: String,
    pub method: String,
    pub ns_per_syscall: f64,
    pub ratio_vs_untraced: f64,
    /// Events the method failed to record (None: the method records nothing of ours).
    pub events_lost: Option<u64>,
    /// The target this row is held to, in words, and whether it is met.
    pub target: String,
    pub met: Option<bool>,
}

/// Sizes of the workloads.
pub struct Sizes {
    pub storm_writes: u64,
    pub load_mib: u64,
    /// Writes for the rows where every write traps to a supervisor (slow by design).
    pub trapped_writes: u64,
    /// Iterations of the files workload (four syscalls each).
    pub files_iterations: u64,
    /// Which parts to run (all of [`SECTIONS`] when empty).
    pub only: Vec<String>,
    /// Which workloads the per-workload parts run (all of [`WORKLOADS`] when empty).
    pub workloads: Vec<String>,
}

/// The workloads of the per-workload parts.
pub const WORKLOADS: &[&str] = &["storm", "load", "files"];

/// The syscalls a capture recorded by default before paths were recorded (issue 15): the rows
/// "previous default set" put the wider default's cost beside it.
const PREVIOUS_DEFAULT: &[&str] = &[
    "write",
    "pwrite64",
    "sendto",
    "sendmsg",
    "connect",
    "kill",
    "tgkill",
    "mount",
    "umount2",
    "flock",
    "fcntl",
    "openat",
    "mkdir",
    "symlink",
    "epoll_wait",
    "epoll_pwait",
    "ptrace",
];

/// The parts of `heisen bench record`, in the order they run; the untraced baseline of a
/// workload always runs.
pub const SECTIONS: &[&str] = &["observer", "strace", "ptrace", "gate", "holds", "tax"];

impl Sizes {
    fn runs(&self, section: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == section)
    }

    fn measures(&self, workload: &str) -> bool {
        self.workloads.is_empty() || self.workloads.iter().any(|w| w == workload)
    }
}

fn exe() -> Result<PathBuf> {
    std::env::current_exe().context("cannot find the heisen binary")
}

/// The guest programs' binary beside heisen, which runs the workloads.
fn guest() -> Result<PathBuf> {
    let exe = exe()?;
    let guest = exe.with_file_name("heisen-guest");
    if !guest.is_file() {
        return Err(anyhow!("no {} beside heisen: build it (cargo build --release -p heisen-guests)", guest.display()));
    }
    Ok(guest)
}

/// `elapsed_ns=N calls=M` from a workload's output.
fn parse(output: &str) -> Result<(f64, u64)> {
    let line = output
        .lines()
        .find(|l| l.starts_with("elapsed_ns="))
        .ok_or_else(|| anyhow!("workload printed no timing: {output}"))?;
    let mut ns = 0.0;
    let mut calls = 0;
    for part in line.split_whitespace() {
        if let Some(v) = part.strip_prefix("elapsed_ns=") {
            ns = v.parse()?;
        } else if let Some(v) = part.strip_prefix("calls=") {
            calls = v.parse()?;
        }
    }
    Ok((ns / calls.max(1) as f64, calls))
}

/// Runs of getppid per figure of the tax rows (each 1 M calls, ~0.25 s here).
const TAX_RUNS: usize = 5;

fn run(cmd: &mut Command) -> Result<(f64, u64)> {
    let out = cmd.stderr(Stdio::inherit()).output().with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        return Err(anyhow!("{cmd:?} failed: {}", out.status));
    }
    parse(&String::from_utf8_lossy(&out.stdout))
}

fn workload_args(workload: &str, sizes: &Sizes, dir: &Path, trapped: bool) -> Vec<String> {
    match workload {
        "storm" => {
            let n = if trapped { sizes.trapped_writes } else { sizes.storm_writes };
            vec!["storm".into(), "--writes".into(), n.to_string()]
        }
        "files" => vec![
            "files".into(),
            "--iterations".into(),
            sizes.files_iterations.to_string(),
            "--dir".into(),
            files_dir(dir).display().to_string(),
        ],
        _ => vec![
            "load".into(),
            "--mib".into(),
            sizes.load_mib.to_string(),
            "--file".into(),
            dir.join("load.dat").display().to_string(),
        ],
    }
}

/// Where the files workload works: tmpfs when there is one (/dev/shm), so the figures are the
/// calls' and the recording's cost, not the disk's journal (on ext4 here a call took ~28 us).
fn files_dir(scratch: &Path) -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.join(format!("heisen-bench-files-{}", std::process::id()))
    } else {
        scratch.join("files")
    }
}

/// Runs the workload with heisen's ptrace recorder attached before its timed loop starts; the
/// recorder's notes go to /dev/null (no capture), so this is the tracing and decoding cost.
fn run_ptrace_recorded(heisen: &Path, guest: &Path, args: &[String], pinned: bool) -> Result<(f64, u64)> {
    let pin = |cmd: &mut Command| {
        if pinned {
            // SAFETY: sched_setaffinity is async-signal-safe.
            unsafe {
                cmd.pre_exec(|| {
                    pin_to_cpu0();
                    Ok(())
                });
            }
        }
    };
    let mut cmd = Command::new(guest);
    cmd.args(args).args(["--start-after-ms", "300"]).stdout(Stdio::piped()).stderr(Stdio::inherit());
    pin(&mut cmd);
    let workload = cmd.spawn().context("cannot start the workload")?;
    let mut cmd = Command::new(heisen);
    cmd.args(["ptrace-record", "--pid", &workload.id().to_string()]).stdout(Stdio::null()).stderr(Stdio::inherit());
    pin(&mut cmd);
    let mut recorder = cmd.spawn().context("cannot start the ptrace recorder")?;
    let out = workload.wait_with_output()?;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(recorder.id() as i32, libc::SIGTERM) };
    let _ = recorder.wait();
    if !out.status.success() {
        return Err(anyhow!("the workload under the ptrace recorder failed: {}", out.status));
    }
    parse(&String::from_utf8_lossy(&out.stdout))
}

/// Runs the workload with a seccomp filter trapping `nrs`, served by `supervisor` (the agent's
/// gate, measured by the agent crate).
fn run_gated(args: &[String], nrs: &[i64], pinned: bool, supervisor: Supervisor) -> Result<(f64, u64)> {
    let guest = guest()?;
    let out = gate_bench::run_gated(&guest, args, nrs, pinned, supervisor)
        .with_context(|| format!("cannot run the gated workload {}", guest.display()))?;
    parse(&out)
}

/// Runs the workload through a local agent with the kernel observer recording it; returns its
/// cost per syscall, the write events the agent failed to store, and the events stored per second.
async fn run_observed(
    agent: &mut Agent,
    args: &[String],
    capture: &str,
    selection: &crate::client::Selection,
) -> Result<(f64, u64, u64, f64)> {
    agent.start_capture(capture, selection).await?;
    let mut argv = vec!["{fixture}".to_string()];
    argv.extend(args.iter().cloned());
    let spec = heisen_recordings::LaunchSpec {
        capture_id: capture.into(),
        run: 1,
        name: "bench".into(),
        role: "step".into(),
        argv,
        ..Default::default()
    };
    let mut launched = agent.launch(&spec).await?;
    let mut output = String::new();
    while let Some(n) = launched.next().await? {
        match n {
            heisen_recordings::ProcessNotice::Output(line) => {
                output.push_str(&line);
                output.push('\n');
            }
            heisen_recordings::ProcessNotice::Exited { .. } => break,
            heisen_recordings::ProcessNotice::Started { .. } => {}
        }
    }
    let exited = Instant::now();
    let status = agent.stop_capture(capture).await?;
    let (ns, calls) = parse(&output)?;
    // Ingest window: the workload's own loop (its events arrive while it runs), then whatever the
    // agent still had to store when it ended, up to the stop's answer (everything stored by
    // then). Launching the workload is not ingest.
    let elapsed = ns * calls as f64 / 1e9 + exited.elapsed().as_secs_f64();
    let events = agent.pull(capture).await?;
    let lost = if args.first().map(String::as_str) == Some("files") {
        // Each iteration's rename, recorded with both of its paths.
        let renames = events
            .iter()
            .filter(|e| e.comm == "files")
            .filter(|e| {
                matches!(&e.kind, heisen_recordings::EventKind::Syscall { name, strings, .. }
                    if name == "rename" && strings.len() == 2)
            })
            .count() as u64;
        (calls / 4).saturating_sub(renames).max(status.lost)
    } else {
        let writes = events
            .iter()
            .filter(|e| matches!(&e.kind, heisen_recordings::EventKind::Syscall { name, .. } if name == "write"))
            .filter(|e| e.comm == "storm" || e.comm == "load")
            .count() as u64;
        calls.saturating_sub(writes).max(status.lost)
    };
    Ok((ns, lost, status.events, status.events as f64 / elapsed))
}

fn row(workload: &str, method: &str, ns: f64, base: f64, lost: Option<u64>, target: &str, met: Option<bool>) -> Row {
    Row {
        workload: workload.into(),
        method: method.into(),
        ns_per_syscall: ns,
        ratio_vs_untraced: ns / base,
        events_lost: lost,
        target: target.into(),
        met,
    }
}

/// All rows. `progress` is told what runs now.
pub async fn record(sizes: &Sizes, progress: impl Fn(&str)) -> Result<Vec<Row>> {
    let dir = tempfile::tempdir()?;
    let heisen = exe()?;
    let guest = guest()?;
    let hosts = heisen_harness::Hosts::start(
        &[heisen.clone(), "agent".into()],
        &["bench".to_string()],
        &heisen_harness::Options { loopback: true, ..Default::default() },
    )?;
    let mut agent = Agent::connect("bench", &hosts.agents["bench"], &crate::hosts::local_credentials(&hosts)?).await?;
    let observer = agent.info.capabilities.kernel_tracing;
    let strace = Command::new("strace").arg("-V").stdout(Stdio::null()).status().is_ok_and(|s| s.success());
    let mut rows = Vec::new();
    for workload in WORKLOADS.iter().copied().filter(|w| sizes.measures(w)) {
        let args = workload_args(workload, sizes, dir.path(), false);
        progress(&format!("{workload}: untraced (a warm-up run, then the median of three)"));
        // The first run pays cold costs (page cache for the load's file) the others do not.
        run(Command::new(&guest).args(&args).stdout(Stdio::piped()))?;
        // Every ratio divides by this: the median of three runs (one run moved by +-15% here).
        let mut bases = Vec::new();
        for _ in 0..3 {
            bases.push(run(Command::new(&guest).args(&args).stdout(Stdio::piped()))?.0);
        }
        let base = super::percentile(&mut bases, 0.5);
        rows.push(row(workload, "untraced", base, base, None, "", None));
        if observer && sizes.runs("observer") {
            progress(&format!("{workload}: heisen kernel observer, default syscall set"));
            let default = crate::client::Selection::default();
            let (ns, lost, _, per_s) = run_observed(&mut agent, &args, &format!("bench-{workload}"), &default).await?;
            let limit = match workload {
                "storm" => 3.0,
                "files" => 2.0,
                _ => 1.10,
            };
            let target = format!("<= {limit}x untraced, 0 lost");
            let r = row(
                workload,
                "heisen observer (tracefs, sled, paths by BPF)",
                ns,
                base,
                Some(lost),
                &target,
                Some(ns / base <= limit && lost == 0),
            );
            rows.push(r);
            // The same beside the narrower set recorded before paths were (17 syscalls).
            progress(&format!("{workload}: heisen kernel observer, the previous default set"));
            let previous = crate::client::Selection {
                syscalls: PREVIOUS_DEFAULT.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            };
            let capture = format!("bench-{workload}-previous");
            let (prev_ns, prev_lost, _, _) = run_observed(&mut agent, &args, &capture, &previous).await?;
            rows.push(row(workload, "heisen observer, previous default set", prev_ns, base, Some(prev_lost), "", None));
            if workload == "storm" {
                // The opt-in BPF write recorder, for comparison: one kernel event per write, but
                // its dispatch taxes every syscall on the machine (the tax rows below).
                progress("storm: heisen kernel observer with the BPF write recorder (opt-in)");
                let bpf = crate::client::Selection { bpf_writes: true, ..Default::default() };
                let (bpf_ns, bpf_lost, _, bpf_per_s) = run_observed(&mut agent, &args, "bench-storm-bpf", &bpf).await?;
                rows.push(row(
                    workload,
                    "heisen observer, --bpf-writes (opt-in)",
                    bpf_ns,
                    base,
                    Some(bpf_lost),
                    &target,
                    Some(bpf_ns / base <= limit && bpf_lost == 0),
                ));
                // The agent's ingest, fed by each source: a source slower than the target bounds
                // what the agent can show (tracefs: 1 M writes take ~1 s here).
                for (source, per_s, lost) in [("tracefs", per_s, lost), ("--bpf-writes", bpf_per_s, bpf_lost)] {
                    let method = format!("ingest into sled, {source}: {per_s:.0} events/s");
                    let target = ">= 1,000,000 events/s";
                    let ingest = row(workload, &method, 1e9 / per_s, 1.0, Some(lost), target, Some(per_s >= 1e6));
                    rows.push(Row { ratio_vs_untraced: f64::NAN, ..ingest });
                }
            }
        }
        if strace && sizes.runs("strace") {
            let trace = if workload == "files" { "trace=openat,write,rename,close" } else { "trace=write" };
            for (method, extra, pinned) in [
                ("strace -f", vec!["-f", "-e", trace], false),
                ("strace -f, pinned to one CPU", vec!["-f", "-e", trace], true),
                ("strace --seccomp-bpf -f", vec!["--seccomp-bpf", "-f", "-e", trace], false),
            ] {
                progress(&format!("{workload}: {method}"));
                let out = dir.path().join("strace.out");
                let mut cmd = Command::new("strace");
                cmd.args(&extra).arg("-o").arg(&out).arg(&guest).args(&args).stdout(Stdio::piped());
                if pinned {
                    // SAFETY: sched_setaffinity is async-signal-safe; strace and its child inherit it.
                    unsafe {
                        cmd.pre_exec(|| {
                            pin_to_cpu0();
                            Ok(())
                        });
                    }
                }
                let (ns, _) = run(&mut cmd)?;
                rows.push(row(workload, method, ns, base, Some(0), "", None));
            }
            let observed = rows
                .iter()
                .find(|r| r.workload == workload && r.method.starts_with("heisen observer"))
                .map(|r| r.ns_per_syscall);
            let strace_pinned = rows
                .iter()
                .find(|r| r.workload == workload && r.method == "strace -f, pinned to one CPU")
                .map(|r| r.ns_per_syscall);
            if let (Some(ours), Some(theirs), "storm" | "files") = (observed, strace_pinned, workload) {
                let speedup = theirs / ours;
                let method = format!("heisen vs strace -f pinned: {speedup:.1}x faster");
                rows.push(Row {
                    ratio_vs_untraced: f64::NAN,
                    ..row(workload, &method, ours, base, None, ">= 25x faster", Some(speedup >= 25.0))
                });
            }
        }
        if sizes.runs("ptrace") {
            progress(&format!("{workload}: heisen ptrace recorder (opt-in)"));
        }
        // Every syscall stops twice: the storm's trapped size keeps this row short.
        let traced_args = workload_args(workload, sizes, dir.path(), workload == "storm");
        for (method, pinned) in [
            ("heisen ptrace recorder (opt-in, decoded args)", false),
            ("heisen ptrace recorder, pinned to one CPU", true),
        ]
        .into_iter()
        .filter(|_| sizes.runs("ptrace"))
        {
            let (ns, _) = run_ptrace_recorded(&heisen, &guest, &traced_args, pinned)?;
            rows.push(row(workload, method, ns, base, None, "", None));
        }
        if !sizes.runs("gate") {
            continue;
        }
        progress(&format!("{workload}: gate on a syscall it does not make, and a bare allow-all filter"));
        // A target of +50 ns on ~250 ns, on a machine whose runs drift by more than that: five
        // rounds of untraced, gated and bare-filter runs taken in turn, medians of each, and the
        // gate rows judged against the untraced runs of their own rounds. The bare filter (no
        // syscall notifies) is the kernel's own price for any seccomp filter.
        let (mut untraced, mut gated, mut allow_all) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..5 {
            untraced.push(run(Command::new(&guest).args(&args).stdout(Stdio::piped()))?.0);
            gated.push(run_gated(&args, &[libc::SYS_flock], false, Supervisor::None)?.0);
            allow_all.push(run_gated(&args, &[], false, Supervisor::None)?.0);
        }
        let local = super::percentile(&mut untraced, 0.5);
        let (ns, allow_all) = (super::percentile(&mut gated, 0.5), super::percentile(&mut allow_all, 0.5));
        // Judged on the storm's cheap syscalls; on 64 KiB writes 50 ns is below the noise.
        let (target, met) =
            if workload == "storm" { ("<= +50 ns per syscall", Some(ns - local <= 50.0)) } else { ("", None) };
        rows.push(row(workload, "untraced, in turn with the two below", local, local, None, "", None));
        rows.push(row(workload, "gate, syscall not made (filter path)", ns, local, None, target, met));
        rows.push(row(workload, "bare allow-all seccomp filter (floor)", allow_all, local, None, "", None));
        if workload == "load" {
            // Every 64 KiB write held and released at once (the storm's round trips are below).
            progress("load: gate on every write, released at once");
            let (bare, _) = run_gated(&args, &[libc::SYS_write], false, Supervisor::Bare)?;
            let (ours, _) = run_gated(&args, &[libc::SYS_write], false, Supervisor::Heisen)?;
            rows.push(row(workload, "bare seccomp supervisor, every write", bare, base, None, "", None));
            let target = format!("<= 1.5x bare ({:.0} ns)", 1.5 * bare);
            let method = "heisen gate hold/release, every write";
            rows.push(row(workload, method, ours, base, None, &target, Some(ours <= 1.5 * bare)));
        }
    }
    // Hold/release round trips: every write traps to a supervisor.
    let args = workload_args("storm", sizes, dir.path(), true);
    let base = if sizes.runs("holds") { run(Command::new(&guest).args(&args).stdout(Stdio::piped()))?.0 } else { 0.0 };
    for pinned in [true, false].into_iter().filter(|_| sizes.runs("holds")) {
        let how = if pinned { "pinned to one CPU" } else { "unpinned" };
        progress(&format!("hold/release round trips, {how}"));
        let (bare, _) = run_gated(&args, &[libc::SYS_write], pinned, Supervisor::Bare)?;
        let (ours, _) = run_gated(&args, &[libc::SYS_write], pinned, Supervisor::Heisen)?;
        rows.push(row("storm", &format!("bare seccomp supervisor, {how}"), bare, base, None, "", None));
        let target = format!("<= 1.5x bare ({:.0} ns)", 1.5 * bare);
        rows.push(row(
            "storm",
            &format!("heisen gate hold/release, {how}"),
            ours,
            base,
            None,
            &target,
            Some(ours <= 1.5 * bare),
        ));
    }
    // The tax on a process heisen does not trace, while it records another.
    if !sizes.runs("tax") {
        drop(hosts);
        return Ok(rows);
    }
    // A difference of two ~250 ns figures that each move by +-20% between runs here: medians
    // of several runs, the idle ones taken before and after the recording ones (drift).
    progress("getppid in an unrelated process, without and with the observer recording");
    let getppid = ["getppid".to_string(), "--calls".into(), sizes.storm_writes.to_string()];
    let measure = |runs: usize| -> Result<Vec<f64>> {
        (0..runs).map(|_| Ok(run(Command::new(&guest).args(&getppid).stdout(Stdio::piped()))?.0)).collect()
    };
    let mut idle_runs = measure(TAX_RUNS)?;
    let mut busy = Vec::new();
    if observer {
        for (bpf_writes, method) in
            [(false, "untraced, observer recording"), (true, "untraced, observer recording --bpf-writes")]
        {
            let capture = if bpf_writes { "bench-tax-bpf" } else { "bench-tax" };
            agent.start_capture(capture, &crate::client::Selection { bpf_writes, ..Default::default() }).await?;
            let runs = measure(TAX_RUNS);
            agent.stop_capture(capture).await?;
            busy.push((method, super::percentile(&mut runs?, 0.5)));
            idle_runs.extend(measure(TAX_RUNS)?);
        }
    }
    let idle = super::percentile(&mut idle_runs, 0.5);
    rows.push(row("getppid", "untraced, observer idle", idle, idle, None, "", None));
    for (method, busy) in busy {
        rows.push(row("getppid", method, busy, idle, None, "<= +60 ns per syscall", Some(busy - idle <= 60.0)));
    }
    drop(hosts);
    Ok(rows)
}

/// The table as text.
pub fn table(rows: &[Row]) -> String {
    let mut out =
        format!("{:<9} {:<42} {:>12} {:>9} {:>8}  {}\n", "workload", "method", "ns/syscall", "ratio", "lost", "target");
    for r in rows {
        let lost = r.events_lost.map(|l| l.to_string()).unwrap_or_else(|| "-".into());
        let ratio = if r.ratio_vs_untraced.is_finite() { format!("{:.2}x", r.ratio_vs_untraced) } else { "-".into() };
        let verdict = super::verdict(r.met);
        out.push_str(&format!(
            "{:<9} {:<42} {:>12.1} {:>9} {:>8}  {}{}\n",
            r.workload, r.method, r.ns_per_syscall, ratio, lost, r.target, verdict
        ));
    }
    out
}
