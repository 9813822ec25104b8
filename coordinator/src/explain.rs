//! `heisen explain`: from a capture with failing and passing runs, rank the candidate causes —
//! orderings between pairs of events and environment differences — by how well they separate
//! failing runs from passing ones, each with its evidence and the `heisen verify` that would
//! confirm it.
//!
//! Named phases, each a function: [`choose_failing`], [`choose_baseline`], [`align`], [`score`],
//! [`propose`]. The search is deterministic: every table is ordered, and when there are more event
//! pairs than the budget, the pairs examined are drawn by a seeded generator (`--seed`).
//!
//! What separates is measured, not assumed; what is *likely* is a prior used only to break ties
//! between equally separating candidates: events that act on another process (a signal sent, a
//! mount, a lock, a cron job) before process-local ones, and effects on the failing step before
//! effects elsewhere.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use heisen_recordings::{
    errno_name, signal_name, Bundle, During, Event, EventKind, GateSpec, Hypothesis, Interval, OrderHypothesis,
    OutputMatch, Scenario, SignalPhase, StateHypothesis, GATEABLE_SYSCALLS,
};
use serde::Serialize;

use crate::diff;

/// Knobs of the search.
#[derive(Clone, Debug)]
pub struct Options {
    /// Seed of the pair sampler (used only when there are more pairs than `budget`).
    pub seed: u64,
    /// Most event pairs examined.
    pub budget: usize,
    /// Candidates kept.
    pub top: usize,
    /// How the bundle is named in the printed verify commands.
    pub bundle_arg: String,
}

impl Default for Options {
    fn default() -> Self {
        Options { seed: 0, budget: 200_000, top: 10, bundle_arg: "BUNDLE".into() }
    }
}

/// The result of `heisen explain`.
#[derive(Debug, Serialize)]
pub struct Explanation {
    pub capture_id: String,
    pub scenario: Option<String>,
    pub seed: u64,
    pub phases: Vec<PhaseReport>,
    pub failing_runs: Vec<u32>,
    /// What the failing runs are compared with, in words.
    pub baseline: String,
    pub candidates: Vec<Candidate>,
    /// Observations that are not candidates but change how to read the capture (an attach that
    /// woke a blocked call, ...).
    pub findings: Vec<Finding>,
}

/// One phase and what it found, in words.
#[derive(Debug, Serialize)]
pub struct PhaseReport {
    pub name: &'static str,
    pub summary: String,
}

/// A ranked candidate cause.
#[derive(Clone, Debug, Serialize)]
pub struct Candidate {
    pub rank: usize,
    /// `ordering` or `environment`.
    pub kind: &'static str,
    pub summary: String,
    /// Separation: share of failing cases where it holds minus share of passing cases (1.0 at best).
    pub score: f64,
    /// What a "case" is: `runs`, `host pairs` (a failing host against a passing peer), or `items`
    /// (the things a run handled, e.g. job files, failing ones named by the failure).
    pub unit: &'static str,
    pub failing: Count,
    pub passing: Count,
    pub evidence: Vec<Evidence>,
    /// The hypothesis as a TOML inline table, when heisen can verify it with this scenario.
    pub hypothesis: Option<String>,
    pub verify: Option<String>,
    /// Why it cannot be verified as is.
    pub not_verifiable: Option<String>,
    #[serde(skip)]
    pub parsed: Option<Hypothesis>,
    #[serde(skip)]
    prior: u32,
    /// Where the cause comes in its process (its first occurrence's seq in the evidence run):
    /// between equals, the earlier call of one process is the cause, later ones follow from it
    /// (a connect, then the request written on it).
    #[serde(skip)]
    cause_seq: u64,
}

/// In how many of `of` cases a candidate holds.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Count {
    pub holds: usize,
    pub of: usize,
}

/// An event behind a candidate: where and when (coordinator time, ± the clock error).
#[derive(Clone, Debug, Serialize)]
pub struct Evidence {
    pub host: String,
    pub run: u32,
    pub time_ns: i64,
    pub error_ns: i64,
    pub what: String,
}

/// Something explain noticed that is not a ranked cause.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub kind: &'static str,
    pub summary: String,
    pub evidence: Vec<Evidence>,
}

/// Runs `explain` over a bundle.
pub fn explain(bundle: &Bundle, opts: &Options) -> Result<Explanation, String> {
    let scenario = match &bundle.scenario {
        Some(src) => Some(Scenario::parse(&src.path, &src.text).map_err(|e| format!("the bundle's scenario: {e}"))?),
        None => None,
    };
    let mut phases = Vec::new();
    let (failing, valid) = choose_failing(bundle)?;
    let observed_by = |r: &u32, o: &str| bundle.runs.iter().any(|x| x.run == *r && x.observer == o);
    let only_traced_failed =
        failing.iter().all(|r| observed_by(r, "ptrace")) && valid.iter().any(|r| observed_by(r, "kernel"));
    phases.push(PhaseReport {
        name: "choose failing runs",
        summary: format!(
            "{} of {} valid free runs failed: {}{}",
            failing.len(),
            valid.len(),
            failing.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", "),
            if only_traced_failed {
                " (only runs with the ptrace recorder attached failed: the observer is part of the failure, see the \
                 observer finding)"
            } else {
                ""
            }
        ),
    });
    let baseline = choose_baseline(bundle, scenario.as_ref(), &failing, &valid);
    phases.push(PhaseReport { name: "choose a passing baseline", summary: baseline.describe() });

    let first_pass = align(bundle, &valid, &BTreeMap::new());
    let cuts = symptom_onsets(&first_pass, &failing);
    let aligned = if cuts.is_empty() { first_pass } else { align(bundle, &valid, &cuts) };
    phases.push(PhaseReport {
        name: "align events across runs",
        summary: format!(
            "{} event signatures on {} host(s) across {} run(s){}",
            aligned.sigs.len(),
            bundle.hosts.len(),
            aligned.runs.len(),
            if cuts.is_empty() {
                String::new()
            } else {
                format!("; failing runs cut where their symptom begins ({} run(s))", cuts.len())
            }
        ),
    });

    let ctx =
        Context { bundle, scenario: scenario.as_ref(), aligned: &aligned, failing: &failing, baseline: &baseline };
    let (mut candidates, examined) = score(&ctx, opts);
    phases.push(PhaseReport { name: "score candidates", summary: examined });

    propose(&mut candidates, opts);
    phases.push(PhaseReport {
        name: "propose",
        summary: format!(
            "{} candidate(s), {} verifiable with this scenario",
            candidates.len(),
            candidates.iter().filter(|c| c.parsed.is_some()).count()
        ),
    });
    let mut findings = findings(bundle);
    findings.extend(observer_effect(bundle));
    Ok(Explanation {
        capture_id: bundle.capture_id.clone(),
        scenario: scenario.as_ref().map(|s| s.name.clone()),
        seed: opts.seed,
        phases,
        failing_runs: failing,
        baseline: baseline.describe(),
        candidates,
        findings,
    })
}

/// Phase 1: the valid free runs (no gates), and those of them that failed.
pub fn choose_failing(bundle: &Bundle) -> Result<(Vec<u32>, Vec<u32>), String> {
    if bundle.runs.is_empty() {
        return Err(format!(
            "capture {} has no runs of a scenario (an ad-hoc capture?): explain compares failing and passing runs; \
             record some with `heisen run SCENARIO`",
            bundle.capture_id
        ));
    }
    let free: Vec<_> = bundle.runs.iter().filter(|r| r.valid && r.ordering.is_none()).collect();
    // A verify capture has only gated runs: compare those, gates and all.
    let mut pool: Vec<_> = if free.is_empty() { bundle.runs.iter().filter(|r| r.valid).collect() } else { free };
    // Runs with the ptrace recorder attached are perturbed: compare the undisturbed ones, unless
    // none of those failed (then the observer is part of the story: compare them all).
    let undisturbed_failed = pool.iter().any(|r| r.observer != "ptrace" && r.failed);
    if pool.iter().any(|r| r.observer == "ptrace") && undisturbed_failed {
        pool.retain(|r| r.observer != "ptrace");
    }
    let valid: Vec<u32> = pool.iter().map(|r| r.run).collect();
    let failing: Vec<u32> = pool.iter().filter(|r| r.failed).map(|r| r.run).collect();
    if valid.is_empty() {
        let notes: Vec<String> =
            bundle.runs.iter().filter(|r| !r.valid).map(|r| format!("run {}: {}", r.run, r.note)).collect();
        return Err(format!(
            "none of the {} runs of capture {} is valid, so there is nothing to compare ({}); fix what the notes \
             say and record again",
            bundle.runs.len(),
            bundle.capture_id,
            notes.join("; ")
        ));
    }
    if failing.is_empty() {
        return Err(format!(
            "none of the {} valid runs of capture {} failed: nothing to explain; record more runs \
             (`heisen run SCENARIO --repeat N`)",
            valid.len(),
            bundle.capture_id
        ));
    }
    Ok((failing, valid))
}

/// What failing runs are compared with.
#[derive(Clone, Debug)]
pub enum Baseline {
    /// Passing runs of the same capture.
    Runs(Vec<u32>),
    /// Every run failed, but a step running the same command on another host passed in them:
    /// compare the failing host with that peer.
    Peer { failing_step: String, failing_host: String, peer_step: String, peer_host: String },
    /// Nothing passed: only the items a failing run handled can be compared.
    None,
}

impl Baseline {
    fn describe(&self) -> String {
        match self {
            Baseline::Runs(r) => format!(
                "{} passing run(s) of the same capture: {}",
                r.len(),
                r.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", ")
            ),
            Baseline::Peer { failing_step, failing_host, peer_step, peer_host } => format!(
                "no run passed; step {peer_step} on {peer_host} runs the same command as the failing step \
                 {failing_step} on {failing_host} and passed: host {failing_host} is compared with {peer_host}"
            ),
            Baseline::None => {
                "no run passed and no step on another host runs the failing step's command: the items the failing \
                 runs handled are compared (those the failure names against the others)"
                    .into()
            }
        }
    }
}

/// Phase 2.
pub fn choose_baseline(bundle: &Bundle, scenario: Option<&Scenario>, failing: &[u32], valid: &[u32]) -> Baseline {
    let passing: Vec<u32> = valid.iter().copied().filter(|r| !failing.contains(r)).collect();
    if !passing.is_empty() {
        return Baseline::Runs(passing);
    }
    let Some(s) = scenario else { return Baseline::None };
    let Some(step) = s.process(&s.failure.step) else { return Baseline::None };
    for peer in s.steps.iter().filter(|p| p.host != step.host && p.command == step.command) {
        let passed = failing.iter().all(|run| {
            bundle
                .runs
                .iter()
                .find(|o| o.run == *run)
                .and_then(|o| o.steps.iter().find(|st| st.name == peer.name))
                .is_some_and(|st| st.exit_code == 0)
        });
        if passed {
            return Baseline::Peer {
                failing_step: step.name.clone(),
                failing_host: step.host.clone(),
                peer_step: peer.name.clone(),
                peer_host: peer.host.clone(),
            };
        }
    }
    Baseline::None
}

/// Who a process is: a scenario process (and its children) or a cron job started by one.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Role {
    host: usize,
    /// The scenario service or step the process descends from.
    process: String,
    /// Set when the process descends from a cron job of that service: the job's command.
    cron_command: Option<String>,
}

impl Role {
    fn label(&self) -> String {
        match &self.cron_command {
            Some(_) => format!("{}'s cron job", self.process),
            None => self.process.clone(),
        }
    }
}

/// How much an event can act on other processes (the tie-break prior).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    Output = 1,
    Syscall = 2,
    Exec = 3,
    SignalReceived = 4,
    Lock = 5,
    Cron = 6,
    Mount = 7,
    SignalSent = 8,
}

/// A kind of event of one role, aligned across runs by this signature.
#[derive(Clone, Debug)]
struct Sig {
    role: Role,
    /// `kill(SIGHUP)`, `write(fd>=3)`, `prints "reloading exports"`, ...
    what: String,
    class: Class,
    /// How a gate would hold it: syscall, signal, fd_at_least.
    gate: Option<(String, Option<i32>, Option<u64>)>,
}

/// One occurrence of a signature in a run.
#[derive(Clone, Debug)]
struct Occ {
    host: usize,
    seq: u64,
    at: Interval,
    /// Target pid of a kill, for the cause's effect.
    target: Option<i32>,
    /// The file or object the event is about (lock path).
    item: Option<String>,
    ret: i64,
    desc: String,
}

/// Per run: each signature's first and last occurrence and count.
#[derive(Debug, Default)]
struct RunSigs {
    first: BTreeMap<usize, Occ>,
    last: BTreeMap<usize, Occ>,
    count: BTreeMap<usize, u32>,
    /// Every occurrence of signatures a gate can hold, in recording order per host.
    gateable: BTreeMap<usize, Vec<Occ>>,
    /// Every lock occurrence, for items.
    locks: Vec<(usize, Occ)>,
    /// Output lines of services, in time order: (role, line, occurrence).
    outputs: Vec<(Role, String, Occ)>,
    /// pid -> role on each host.
    roles: HashMap<(usize, i32), Role>,
    /// Where a stream of writes really begins: the same process's connect before its first write
    /// (a server serves a connection from its connect on, before the first byte arrives).
    begin: BTreeMap<usize, Occ>,
    /// ... and where it ends: that process closing its connection after its last write (the
    /// peer is still serving it until then).
    end: BTreeMap<usize, Occ>,
    /// TCP connections each role closed (ESTABLISHED or CLOSE_WAIT to FIN_WAIT1 or LAST_ACK).
    closes: Vec<(Role, Occ)>,
}

/// Phase 3's result.
struct Aligned {
    sigs: Vec<Sig>,
    runs: BTreeMap<u32, RunSigs>,
}

/// Where the symptom begins in each failing run: the first occurrence of a signature that every
/// failing run has and no passing run has (the error, the timeout message). What a run does after
/// it is its reaction to the failure (retries, diagnostics, a debugger attaching), not its cause,
/// and would stretch the failing runs' streams. Empty when there are no passing runs to tell.
fn symptom_onsets(aligned: &Aligned, failing: &[u32]) -> BTreeMap<u32, i64> {
    let passing: Vec<&RunSigs> = aligned.runs.iter().filter(|(r, _)| !failing.contains(r)).map(|(_, rs)| rs).collect();
    let failing_runs: Vec<(u32, &RunSigs)> = failing.iter().filter_map(|r| Some((*r, aligned.runs.get(r)?))).collect();
    if passing.is_empty() || failing_runs.is_empty() {
        return BTreeMap::new();
    }
    let symptoms: Vec<usize> = (0..aligned.sigs.len())
        .filter(|s| passing.iter().all(|rs| !rs.first.contains_key(s)))
        .filter(|s| failing_runs.iter().all(|(_, rs)| rs.first.contains_key(s)))
        .collect();
    failing_runs
        .iter()
        .filter_map(|(r, rs)| {
            Some((*r, symptoms.iter().filter_map(|s| Some(rs.first.get(s)?.at.midpoint_ns())).min()?))
        })
        .collect()
}

/// Phase 3: key events of every valid run, grouped by signature; in a run with a cut, key events
/// after it are left out (service output is kept: the effect of a cause may outlast the cut).
fn align(bundle: &Bundle, valid: &[u32], cuts: &BTreeMap<u32, i64>) -> Aligned {
    let mut index: BTreeMap<(Role, String), usize> = BTreeMap::new();
    let mut sigs: Vec<Sig> = Vec::new();
    let mut runs: BTreeMap<u32, RunSigs> = valid.iter().map(|r| (*r, RunSigs::default())).collect();
    for (h, rec) in bundle.hosts.iter().enumerate() {
        let mut roles: HashMap<i32, Role> = HashMap::new();
        for e in &rec.events {
            assign_role(h, e, &mut roles);
            let Some(rs) = runs.get_mut(&e.run) else { continue };
            let Some(role) = roles.get(&e.pid).cloned() else { continue };
            rs.roles.insert((h, e.pid), role.clone());
            if let EventKind::Fork { child_pid, .. } = &e.kind {
                rs.roles.insert((h, *child_pid), role.clone());
            }
            if let EventKind::Socket { from_state, to_state, .. } = &e.kind {
                let closing = matches!(from_state.as_str(), "ESTABLISHED" | "CLOSE_WAIT")
                    && matches!(to_state.as_str(), "FIN_WAIT1" | "LAST_ACK");
                if closing && cuts.get(&e.run).is_none_or(|cut| rec.clock.interval(e.raw_ns).midpoint_ns() <= *cut) {
                    let at = rec.clock.interval(e.raw_ns);
                    let occ = Occ { host: h, seq: e.seq, at, target: None, item: None, ret: 0, desc: String::new() };
                    rs.closes.push((role.clone(), occ));
                }
            }
            let Some((what, class, gate, desc)) = key_of(e) else { continue };
            let at = rec.clock.interval(e.raw_ns);
            let (target, item, ret) = match &e.kind {
                EventKind::Syscall { name, args, ret, .. } if name.contains("kill") => {
                    (args.first().map(|p| *p as i32), None, *ret)
                }
                EventKind::Syscall { ret, .. } | EventKind::Traced { ret, .. } => (None, None, *ret),
                EventKind::Lock { path, ret, .. } => (None, path.clone(), *ret),
                _ => (None, None, 0),
            };
            let occ = Occ { host: h, seq: e.seq, at, target, item, ret, desc };
            if let EventKind::Output { line, .. } = &e.kind {
                rs.outputs.push((role.clone(), line.clone(), occ.clone()));
            }
            if cuts.get(&e.run).is_some_and(|cut| occ.at.midpoint_ns() > *cut) {
                continue;
            }
            let key = (role.clone(), what.clone());
            let id = *index.entry(key).or_insert_with(|| {
                sigs.push(Sig { role: role.clone(), what, class, gate });
                sigs.len() - 1
            });
            if matches!(e.kind, EventKind::Lock { .. }) {
                rs.locks.push((id, occ.clone()));
            }
            if sigs[id].gate.is_some() {
                rs.gateable.entry(id).or_default().push(occ.clone());
            }
            rs.first.entry(id).or_insert_with(|| occ.clone());
            *rs.count.entry(id).or_default() += 1;
            rs.last.insert(id, occ);
        }
    }
    for rs in runs.values_mut() {
        rs.outputs.sort_by_key(|(_, _, o)| o.at.earliest_ns);
        for (b, sb) in sigs.iter().enumerate() {
            if let (Some(c), Some(first)) = (connection_of(&sigs, b), rs.first.get(&b)) {
                if let Some(at) = rs.first.get(&c).filter(|o| o.host == first.host && o.seq < first.seq) {
                    rs.begin.insert(b, at.clone());
                    let last_seq = rs.last.get(&b).map(|o| o.seq).unwrap_or(first.seq);
                    let close = rs
                        .closes
                        .iter()
                        .filter(|(r, o)| *r == sb.role && o.host == first.host && o.seq > last_seq)
                        .min_by_key(|(_, o)| o.seq);
                    if let Some((_, o)) = close {
                        rs.end.insert(b, o.clone());
                    }
                }
            }
        }
    }
    Aligned { sigs, runs }
}

/// The connect a stream of writes went over: the same role's `connect` signature, when `b` is a
/// write/sendto/sendmsg signature and the role made one.
fn connection_of(sigs: &[Sig], b: usize) -> Option<usize> {
    let gate_is = |s: &Sig, names: &[&str]| s.gate.as_ref().is_some_and(|g| names.contains(&g.0.as_str()));
    if !gate_is(&sigs[b], &["write", "sendto", "sendmsg"]) {
        return None;
    }
    sigs.iter().position(|c| c.role == sigs[b].role && gate_is(c, &["connect"]))
}

fn assign_role(host: usize, e: &Event, roles: &mut HashMap<i32, Role>) {
    match &e.kind {
        EventKind::Launch { name, .. } => {
            roles.insert(e.pid, Role { host, process: name.clone(), cron_command: None });
        }
        EventKind::Fork { parent_pid, child_pid } => {
            if let Some(r) = roles.get(parent_pid).or(roles.get(&e.pid)).cloned() {
                roles.insert(*child_pid, r);
            }
        }
        EventKind::Cron { phase, command, job_pid, .. } if phase == "start" => {
            if let Some(r) = roles.get(job_pid).or(roles.get(&e.pid)).cloned() {
                roles.insert(*job_pid, Role { cron_command: Some(command.clone()), ..r });
            }
        }
        _ => {}
    }
}

type Key = (String, Class, Option<(String, Option<i32>, Option<u64>)>, String);

/// The signature of an event worth aligning, or None for the rest (plain successful syscalls that
/// no gate can hold, stdio writes, ...).
fn key_of(e: &Event) -> Option<Key> {
    let errno =
        |ret: i64| (ret < 0).then(|| errno_name(-ret).map(str::to_string).unwrap_or_else(|| format!("errno {}", -ret)));
    match &e.kind {
        EventKind::Syscall { name, args, ret, fd_path, .. } => {
            let gateable = GATEABLE_SYSCALLS.contains(&name.as_str());
            let arg = |i: usize| args.get(i).copied().unwrap_or(0);
            if name == "kill" || name == "tgkill" || name == "tkill" {
                let sig = if name == "tgkill" { arg(2) } else { arg(1) } as i32;
                if sig == 0 {
                    return None;
                }
                let what = format!("{name}({})", signal_name(sig));
                let desc =
                    format!("{what} to pid {}{}", arg(0), errno(*ret).map(|e| format!(" = {e}")).unwrap_or_default());
                return Some((what, Class::SignalSent, Some((name.clone(), Some(sig), None)), desc));
            }
            let fd_call = matches!(name.as_str(), "write" | "pwrite64" | "sendto" | "sendmsg");
            if fd_call && arg(0) < 3 {
                return None; // stdio: the output events carry it
            }
            let class = if name == "mount" || name == "umount2" { Class::Mount } else { Class::Syscall };
            let fd_at_least = (fd_call || name == "connect").then_some(3);
            let err = errno(*ret);
            if !gateable && err.is_none() {
                return None;
            }
            let mut what = if fd_call { format!("{name}(fd>=3)") } else { name.clone() };
            if !gateable {
                what = format!("{what} = {}", err.clone().unwrap_or_default());
            }
            let on = fd_path.as_ref().map(|p| format!(" on {p}")).unwrap_or_default();
            let desc = format!("{name}{on}{}", err.map(|e| format!(" = {e}")).unwrap_or_default());
            Some((what, class, gateable.then(|| (name.clone(), None, fd_at_least)), desc))
        }
        EventKind::Traced { name, args, ret, .. } => {
            let err = errno(*ret)?;
            let what = format!("{name} = {err}");
            Some((what.clone(), Class::Syscall, None, format!("{name}({}) = {err}", args.join(", "))))
        }
        EventKind::Signal { signal, phase: SignalPhase::Deliver, sender_comm, .. } => {
            let what = format!("receives {}", signal_name(*signal));
            let desc = format!("{what} (sent by {sender_comm})");
            Some((what, Class::SignalReceived, None, desc))
        }
        EventKind::Lock { call, op, path, ret, .. } => {
            let what = format!("{call} {op}");
            let desc = format!(
                "{call}({op}) on {}{}",
                path.as_deref().unwrap_or("?"),
                errno(*ret).map(|e| format!(" = {e}")).unwrap_or_default()
            );
            Some((what, Class::Lock, Some((call.clone(), None, None)), desc))
        }
        EventKind::Mount { op, fstype, target, .. } => {
            let what = format!("{op} {fstype}");
            Some((what.clone(), Class::Mount, None, format!("{what} on {target}")))
        }
        EventKind::Cron { phase, crontab_line, .. } if phase == "start" => {
            Some(("cron job starts".into(), Class::Cron, None, format!("cron job starts: {crontab_line}")))
        }
        EventKind::Exec { filename, .. } => {
            let base = filename.rsplit('/').next().unwrap_or(filename).to_string();
            Some((format!("exec {base}"), Class::Exec, None, format!("exec {filename}")))
        }
        EventKind::Output { line, .. } => {
            let text = stable_text(line);
            if text.is_empty() {
                return None;
            }
            Some((format!("prints \"{text}\""), Class::Output, None, format!("prints \"{line}\"")))
        }
        _ => None,
    }
}

/// The part of an output line that is the same in every run: up to its first digit.
fn stable_text(line: &str) -> String {
    let cut = line.find(|c: char| c.is_ascii_digit()).unwrap_or(line.len());
    line[..cut].trim().trim_end_matches([':', '(', '#', '-', '=']).trim().to_string()
}

/// What the phases share.
struct Context<'a> {
    bundle: &'a Bundle,
    scenario: Option<&'a Scenario>,
    aligned: &'a Aligned,
    failing: &'a [u32],
    baseline: &'a Baseline,
}

/// A predicate over one run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Pred {
    /// `a`'s first occurrence is before `b`'s first.
    Before(usize, usize),
    /// `a`'s first occurrence is not known to be before `b`'s start (its first, or the connect
    /// it began with) nor after `b`'s end (its last, or the close of that connection).
    During(usize, usize),
    /// `a`'s first occurrence is not known to come after `b`'s last (it may come before `b`
    /// starts: a cause whose effect lasts, such as a reload, still catches `b`). As for `During`'s
    /// end, "within the clock error of `b`'s last" counts: a failing call often returns a fraction
    /// of a millisecond after its cause on another host.
    BeforeEnd(usize, usize),
}

/// Ordering of two occurrences: Some(true) when `x` is before `y`, Some(false) when after, None
/// when the clocks cannot tell (concurrent).
fn before(x: &Occ, y: &Occ) -> Option<bool> {
    if x.host == y.host {
        return Some(x.seq < y.seq);
    }
    if x.at.before(&y.at) {
        Some(true)
    } else if y.at.before(&x.at) {
        Some(false)
    } else {
        None
    }
}

fn holds(rs: &RunSigs, p: Pred) -> bool {
    match p {
        Pred::Before(a, b) => match (rs.first.get(&a), rs.first.get(&b)) {
            (Some(x), Some(y)) => before(x, y) == Some(true),
            _ => false,
        },
        Pred::During(a, b) => {
            match (rs.first.get(&a), rs.begin.get(&b).or(rs.first.get(&b)), rs.end.get(&b).or(rs.last.get(&b))) {
                // Not known to be outside b's span: within the clock error of its start or its end
                // counts, as the start of a connection and the cause on another host often are.
                (Some(x), Some(b0), Some(b1)) => before(x, b0) != Some(true) && before(b1, x) != Some(true),
                _ => false,
            }
        }
        Pred::BeforeEnd(a, b) => match (rs.first.get(&a), rs.last.get(&b)) {
            (Some(x), Some(b1)) => before(b1, x) != Some(true),
            _ => false,
        },
    }
}

/// Phase 4: every candidate with its counts. Returns the candidates and a summary in words.
fn score(ctx: &Context<'_>, opts: &Options) -> (Vec<Candidate>, String) {
    let mut out = Vec::new();
    let mut notes = Vec::new();
    if let Baseline::Runs(passing) = ctx.baseline {
        let (found, examined, total) = ordering_candidates(ctx, passing, opts);
        notes.push(if examined < total {
            format!("{examined} of {total} event pairs examined (sampled, seed {})", opts.seed)
        } else {
            format!("{total} event pairs examined")
        });
        out.extend(found);
    }
    let (env, compared) = environment_candidates(ctx);
    notes.push(format!("{compared} environment snapshot pair(s) compared"));
    out.extend(env);
    let (items, item_count) = item_candidates(ctx);
    if item_count > 0 {
        notes.push(format!("{item_count} item(s) compared"));
    }
    out.extend(items);
    (out, notes.join("; "))
}

/// A small deterministic generator (xorshift64*) for sampling pairs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn ordering_candidates(ctx: &Context<'_>, passing: &[u32], opts: &Options) -> (Vec<Candidate>, usize, usize) {
    let sigs = &ctx.aligned.sigs;
    // A series ("during B's calls") is one that repeats in normal runs: a call a failing run
    // repeats only in its reaction to the failure (a retry, a diagnostic probe) is not one.
    let multi: BTreeSet<usize> = passing
        .iter()
        .filter_map(|r| ctx.aligned.runs.get(r))
        .flat_map(|rs| rs.count.iter().filter(|(_, c)| **c >= 2).map(|(s, _)| *s))
        .collect();
    // What never happens in a passing run is the failure itself or its consequence (an error
    // message, a crash): "before the symptom" separates trivially and says nothing.
    let in_passing: BTreeSet<usize> =
        passing.iter().filter_map(|r| ctx.aligned.runs.get(r)).flat_map(|rs| rs.first.keys().copied()).collect();
    // A printed line is late (timed when heisen read it from the pipe) and reports what its
    // process did: when the process's own calls are recorded, they stand for it as a cause.
    let recorded_roles: BTreeSet<&Role> = sigs
        .iter()
        .enumerate()
        .filter(|(i, s)| s.class != Class::Output && in_passing.contains(i))
        .map(|(_, s)| &s.role)
        .collect();
    let mut pairs: Vec<(usize, usize)> = Vec::new();
    for a in 0..sigs.len() {
        if sigs[a].class == Class::Output && recorded_roles.contains(&sigs[a].role) {
            continue;
        }
        for b in 0..sigs.len() {
            // A printed line is never the reference point B: its time is when heisen read it from
            // the pipe (late by up to the agent's read interval), and it is an effect.
            if a != b
                && sigs[a].role != sigs[b].role
                && in_passing.contains(&a)
                && in_passing.contains(&b)
                && sigs[b].class != Class::Output
            {
                pairs.push((a, b));
            }
        }
    }
    let total = pairs.len();
    if pairs.len() > opts.budget {
        // Seeded partial shuffle: the first `budget` pairs after it are examined.
        let mut rng = Rng(opts.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        for i in 0..opts.budget {
            let j = i + (rng.next() % (pairs.len() - i) as u64) as usize;
            pairs.swap(i, j);
        }
        pairs.truncate(opts.budget);
        pairs.sort();
    }
    let examined = pairs.len();
    let mut out = Vec::new();
    for (a, b) in pairs {
        let mut preds = vec![Pred::Before(a, b)];
        if multi.contains(&b) {
            preds.push(Pred::During(a, b));
            preds.push(Pred::BeforeEnd(a, b));
        }
        for p in preds {
            let count = |runs: &[u32]| Count {
                holds: runs.iter().filter(|r| ctx.aligned.runs.get(r).is_some_and(|rs| holds(rs, p))).count(),
                of: runs.len(),
            };
            let (f, q) = (count(ctx.failing), count(passing));
            let sep = share(f) - share(q);
            if sep < 0.5 {
                continue;
            }
            out.push((p, ordering_candidate(ctx, p, f, q, sep, passing)));
        }
    }
    let out = same_flow(ctx, out);
    (out, examined, total)
}

/// One flow seen at two places: the writer's writes and the server's replies to them come one
/// for one in every run. The view on the cause's own host orders it exactly (same-host `seq`);
/// the view on another host may be within the clock error of the cause. When a gate can hold
/// only the latter (a step, not a service), that candidate takes the exact view's counts, and
/// says so.
fn same_flow(ctx: &Context<'_>, mut found: Vec<(Pred, Candidate)>) -> Vec<Candidate> {
    let flow =
        |b: usize| -> Vec<u32> { ctx.aligned.runs.values().map(|rs| rs.count.get(&b).copied().unwrap_or(0)).collect() };
    let mut groups: BTreeMap<(usize, bool, Vec<u32>), Vec<usize>> = BTreeMap::new();
    for (i, (p, _)) in found.iter().enumerate() {
        if let Pred::During(a, b) | Pred::BeforeEnd(a, b) = *p {
            groups.entry((a, matches!(p, Pred::During(..)), flow(b))).or_default().push(i);
        }
    }
    for members in groups.values().filter(|m| m.len() > 1) {
        let key = |c: &Candidate| ((c.score * 100.0).round() as i64, c.prior);
        let best = *members.iter().max_by_key(|i| key(&found[**i].1)).expect("non-empty");
        let Some(gated) =
            members.iter().copied().filter(|i| found[*i].1.parsed.is_some()).max_by_key(|i| key(&found[*i].1))
        else {
            continue;
        };
        if key(&found[gated].1).0 >= key(&found[best].1).0 {
            continue;
        }
        let exact = found[best].1.clone();
        let b = match found[best].0 {
            Pred::During(_, b) | Pred::BeforeEnd(_, b) | Pred::Before(_, b) => &ctx.aligned.sigs[b],
        };
        let c = &mut found[gated].1;
        c.summary = format!(
            "{} — ordered by {}'s {} [{}], the same flow (as many calls in every run)",
            c.summary,
            b.role.label(),
            b.what,
            ctx.bundle.hosts[b.role.host].name
        );
        (c.score, c.failing, c.passing) = (exact.score, exact.failing, exact.passing);
        c.evidence.extend(exact.evidence);
        c.evidence.sort_by_key(|e| e.time_ns);
    }
    found.into_iter().map(|(_, c)| c).collect()
}

fn share(c: Count) -> f64 {
    if c.of == 0 {
        0.0
    } else {
        c.holds as f64 / c.of as f64
    }
}

fn ordering_candidate(ctx: &Context<'_>, p: Pred, f: Count, q: Count, sep: f64, passing: &[u32]) -> Candidate {
    let sigs = &ctx.aligned.sigs;
    let host = |s: &Sig| ctx.bundle.hosts[s.role.host].name.clone();
    let name = |s: &Sig| format!("{}'s {} [{}]", s.role.label(), s.what, host(s));
    let failure_step = ctx.scenario.map(|s| s.failure.step.as_str());
    let (ai, bi) = match p {
        Pred::Before(a, b) | Pred::During(a, b) | Pred::BeforeEnd(a, b) => (a, b),
    };
    let (a, b) = (&sigs[ai], &sigs[bi]);
    let summary = match p {
        Pred::Before(..) => format!("{} before {}", name(a), name(b)),
        Pred::During(..) if connection_of(sigs, bi).is_some() => {
            format!(
                "{} lands while {}'s connection is in use (from its connect through its {} calls to its close) [{}]",
                name(a),
                b.role.label(),
                b.what,
                host(b)
            )
        }
        Pred::During(..) => {
            format!("{} lands while {}'s {} calls are under way [{}]", name(a), b.role.label(), b.what, host(b))
        }
        Pred::BeforeEnd(..) => {
            format!("{} lands before the end of {}'s {} calls [{}]", name(a), b.role.label(), b.what, host(b))
        }
    };
    let on_failing_step = failure_step.is_some_and(|f| b.role.process == f && b.role.cron_command.is_none());
    // On the scale of diff scores (20..95): a signal sent ranks with a missing daemon.
    // The more specific relation first when both separate as well.
    let specific = match p {
        Pred::During(..) => 2,
        Pred::BeforeEnd(..) => 1,
        Pred::Before(..) => 0,
    };
    let prior = a.class as u32 * 10 + on_failing_step as u32 * 5 + specific;
    // Evidence: the first failing run where it holds.
    let mut evidence = Vec::new();
    let run = ctx.failing.iter().copied().find(|r| ctx.aligned.runs.get(r).is_some_and(|rs| holds(rs, p)));
    if let Some(run) = run {
        let rs = &ctx.aligned.runs[&run];
        let mut shown = vec![(&rs.first[&ai], format!("{}: {}", a.role.label(), rs.first[&ai].desc))];
        let bn = rs.count.get(&bi).copied().unwrap_or(0);
        let first_b = &rs.first[&bi];
        shown.push((first_b, format!("{}: {}{}", b.role.label(), first_b.desc, if bn > 1 { " (first)" } else { "" })));
        if !matches!(p, Pred::Before(..)) && bn > 1 {
            let last = &rs.last[&bi];
            shown.push((last, format!("{}: {} (last of {bn})", b.role.label(), last.desc)));
        }
        shown.sort_by_key(|(o, _)| o.at.earliest_ns);
        evidence = shown.into_iter().map(|(o, what)| evidence_of(ctx.bundle, run, o, what)).collect();
    }
    let h = match p {
        Pred::During(ai, bi) | Pred::BeforeEnd(ai, bi) => during_hypothesis(ctx, ai, bi, run, passing),
        Pred::Before(ai, bi) => {
            // Fails when a comes before b, i.e. when b comes after a: first = b, then = a.
            order_hypothesis(ctx, &sigs[bi], &sigs[ai])
        }
    };
    let mut c = Candidate::new("ordering", "runs", summary, (f, q, sep), evidence, prior, h);
    c.cause_seq = run.and_then(|r| Some(ctx.aligned.runs.get(&r)?.first.get(&ai)?.seq)).unwrap_or(u64::MAX);
    c
}

fn evidence_of(bundle: &Bundle, run: u32, o: &Occ, what: String) -> Evidence {
    Evidence {
        host: bundle.hosts[o.host].name.clone(),
        run,
        time_ns: o.at.midpoint_ns(),
        error_ns: (o.at.latest_ns - o.at.earliest_ns) / 2,
        what,
    }
}

impl Candidate {
    /// An unranked candidate with its counts `(failing, passing, score)` and the hypothesis that
    /// would verify it, or why there is none.
    fn new(
        kind: &'static str,
        unit: &'static str,
        summary: String,
        (failing, passing, score): (Count, Count, f64),
        evidence: Vec<Evidence>,
        prior: u32,
        h: Result<Hypothesis, String>,
    ) -> Candidate {
        let (parsed, not_verifiable) = match h {
            Ok(h) => (Some(h), None),
            Err(why) => (None, Some(why)),
        };
        Candidate {
            rank: 0,
            kind,
            summary,
            score,
            unit,
            failing,
            passing,
            evidence,
            hypothesis: parsed.as_ref().map(Hypothesis::to_inline_toml),
            verify: None,
            not_verifiable,
            parsed,
            prior,
            cause_seq: u64::MAX,
        }
    }
}

/// The step a role's gate can hold: a scenario step, or the step that runs a cron job's command
/// by hand on the same host.
fn gate_step(ctx: &Context<'_>, role: &Role) -> Result<String, String> {
    let s = ctx.scenario.ok_or("the capture has no scenario")?;
    let host = &ctx.bundle.hosts[role.host].name;
    match &role.cron_command {
        None => match s.steps.iter().find(|p| p.name == role.process) {
            Some(p) => Ok(p.name.clone()),
            None => Err(format!("{} is a service; gates hold steps", role.process)),
        },
        Some(_) => {
            // The cron daemon's service carries the crontab line: a step on the same host whose
            // command starts with that line's command runs the job by hand.
            let service =
                s.process(&role.process).ok_or_else(|| format!("no process {} in the scenario", role.process))?;
            let lines: Vec<Vec<String>> = service
                .command
                .iter()
                .filter_map(|arg| heisen_recordings::crontab_command("", arg))
                .map(|cmd| cmd.split_whitespace().map(str::to_string).collect())
                .collect();
            s.steps
                .iter()
                .find(|p| &p.host == host && lines.iter().any(|l| !l.is_empty() && p.command.starts_with(l)))
                .map(|p| p.name.clone())
                .ok_or_else(|| {
                    format!("no step on {host} runs {}'s cron job by hand, so no gate can hold it", role.process)
                })
        }
    }
}

fn gate_of(ctx: &Context<'_>, sig: &Sig, nth: u32) -> Result<GateSpec, String> {
    let (syscall, signal, fd_at_least) =
        sig.gate.clone().ok_or_else(|| format!("{} is not a syscall a gate can hold", sig.what))?;
    Ok(GateSpec { step: gate_step(ctx, &sig.role)?, syscall, nth, signal, fd_at_least, path: None })
}

/// Variants for verify runs when a gated step stands in for a cron job: the steps' variants on,
/// the cron daemons' off. None when the scenario's defaults do.
fn variants_for(ctx: &Context<'_>, roles: &[&Role], steps: &[&str]) -> Option<Vec<String>> {
    let s = ctx.scenario?;
    let mut v = s.default_variants();
    let before = v.clone();
    for role in roles.iter().filter(|r| r.cron_command.is_some()) {
        if let Some(off) = s.process(&role.process).and_then(|p| p.variant.clone()) {
            v.retain(|x| *x != off);
        }
    }
    for step in steps {
        if let Some(on) = s.process(step).and_then(|p| p.variant.clone()) {
            if !v.contains(&on) {
                v.push(on);
            }
        }
    }
    (v != before).then_some(v)
}

fn runs_wanted(ctx: &Context<'_>) -> u32 {
    ctx.scenario.and_then(|s| s.hypothesis.as_ref()).map(|h| h.runs()).unwrap_or(5)
}

fn order_hypothesis(ctx: &Context<'_>, first: &Sig, then: &Sig) -> Result<Hypothesis, String> {
    let (f, t) = (gate_of(ctx, first, 1)?, gate_of(ctx, then, 1)?);
    let variants = variants_for(ctx, &[&first.role, &then.role], &[&f.step, &t.step]);
    Ok(Hypothesis::Order(OrderHypothesis {
        first: f,
        then: t,
        fails_when_after: true,
        runs: runs_wanted(ctx),
        variants,
    }))
}

/// `a` during `b`'s occurrences: held until the middle one is in flight; the cause's effect is
/// read from the service output that followed it in a failing run.
fn during_hypothesis(
    ctx: &Context<'_>,
    a: usize,
    b: usize,
    run: Option<u32>,
    passing: &[u32],
) -> Result<Hypothesis, String> {
    let sigs = &ctx.aligned.sigs;
    let count =
        passing.iter().filter_map(|r| ctx.aligned.runs.get(r)?.count.get(&b).copied()).max().unwrap_or(0).max(1);
    let cause = gate_of(ctx, &sigs[a], 1)?;
    let victim = gate_of(ctx, &sigs[b], count.div_ceil(2))?;
    let run = run.ok_or("it holds in no failing run")?;
    // The effect: the first two different lines a service (the signal's target, for a signal)
    // printed after the cause. A failing run may end before the effect is over: then the other
    // runs say how it ends.
    // An effect is something a service also prints in passing runs: a line only failing runs
    // print (a recovery after an attach) is the symptom's aftermath, and "before" could never wait
    // for it.
    let normal: BTreeSet<(Role, String)> = passing
        .iter()
        .filter_map(|r| ctx.aligned.runs.get(r))
        .flat_map(|rs| rs.outputs.iter().map(|(role, line, _)| (role.clone(), stable_text(line))))
        .collect();
    let effect = |rs: &RunSigs| -> Option<(Role, String, String)> {
        let at = rs.first.get(&a)?;
        let target_role = at.target.and_then(|pid| rs.roles.get(&(at.host, pid)));
        let mut after = rs.outputs.iter().filter(|(role, line, o)| {
            before(at, o) == Some(true)
                && role.cron_command.is_none()
                && target_role.is_none_or(|t| t == role)
                && !stable_text(line).is_empty()
                && (normal.is_empty() || normal.contains(&(role.clone(), stable_text(line))))
                && ctx.scenario.is_some_and(|s| s.services.iter().any(|p| p.name == role.process))
        });
        let (role, started, _) = after.next()?;
        let (_, done, _) = after.find(|(r, l, _)| r == role && stable_text(l) != stable_text(started))?;
        Some((role.clone(), stable_text(started), stable_text(done)))
    };
    let runs = std::iter::once(run).chain(ctx.aligned.runs.keys().copied());
    let (role, started, done) = runs
        .filter_map(|r| effect(ctx.aligned.runs.get(&r)?))
        .next()
        .ok_or("no service printed two lines after the cause in any run (the effect starting and ending)")?;
    // A stream of calls over a connection begins at the victim's connect: "before" holds it there.
    let victim_begins = connection_of(sigs, b).map(|c| gate_of(ctx, &sigs[c], 1)).transpose()?;
    Ok(Hypothesis::During(Box::new(During {
        cause,
        victim,
        victim_count: count,
        victim_begins,
        effect_started: OutputMatch { process: role.process.clone(), text: started },
        effect_done: OutputMatch { process: role.process, text: done },
        runs: runs_wanted(ctx),
    })))
}

/// Environment differences of the failing host against the baseline (the same host in passing
/// runs, or the peer host in the same runs).
fn environment_candidates(ctx: &Context<'_>) -> (Vec<Candidate>, usize) {
    let Some(s) = ctx.scenario else { return (vec![], 0) };
    let env = |host: &str, run: u32| ctx.bundle.host(host)?.environments.iter().find(|e| e.at == format!("run {run}"));
    let failing_host = match ctx.baseline {
        Baseline::Peer { failing_host, .. } => failing_host.clone(),
        _ => match s.process(&s.failure.step) {
            Some(p) => p.host.clone(),
            None => return (vec![], 0),
        },
    };
    let mut pairs = Vec::new();
    for f in ctx.failing {
        match ctx.baseline {
            Baseline::Runs(passing) => {
                for p in passing.iter().take(20) {
                    pairs.push((*f, env(&failing_host, *f), env(&failing_host, *p)));
                }
            }
            Baseline::Peer { peer_host, .. } => pairs.push((*f, env(&failing_host, *f), env(peer_host, *f))),
            Baseline::None => {}
        }
    }
    let pairs: Vec<_> = pairs.into_iter().filter_map(|(r, a, b)| Some((r, a?, b?))).take(400).collect();
    let mut seen: BTreeMap<(String, String, String, String), (usize, diff::Difference, u32)> = BTreeMap::new();
    for (run, a, b) in &pairs {
        for mut d in diff::compare(a, b) {
            // Per-run paths (`run-3`) are the same state in every run.
            (d.subject, d.a, d.b) = (with_run(&d.subject, *run), with_run(&d.a, *run), with_run(&d.b, *run));
            let key = (d.category.to_string(), d.subject.clone(), d.a.clone(), d.b.clone());
            seen.entry(key).or_insert((0, d, *run)).0 += 1;
        }
    }
    let base_name = match ctx.baseline {
        Baseline::Peer { peer_host, .. } => peer_host.clone(),
        _ => format!("{failing_host} in passing runs"),
    };
    let mut out = Vec::new();
    for (_, (n, d, run)) in seen {
        let f = Count { holds: n, of: pairs.len() };
        let sep = share(f);
        if sep < 0.5 {
            continue;
        }
        let rec = ctx.bundle.host(&failing_host);
        let at = rec.and_then(|h| h.environments.iter().find(|e| e.at == format!("run {run}")).map(|e| (h, e)));
        let evidence = at
            .map(|(h, e)| {
                vec![Evidence {
                    host: failing_host.clone(),
                    run,
                    time_ns: h.clock.centre(e.raw_ns),
                    error_ns: 0,
                    what: format!(
                        "snapshot at run {run}: {} {}: {}; on {base_name}: {}",
                        d.category, d.subject, d.a, d.b
                    ),
                }]
            })
            .unwrap_or_default();
        let unit = if matches!(ctx.baseline, Baseline::Peer { .. }) { "host pairs" } else { "run pairs" };
        out.push(Candidate::new(
            "environment",
            unit,
            format!("{} {}: {} on {failing_host}; {} on {base_name}", d.category, d.subject, d.a, d.b),
            (f, Count { holds: 0, of: pairs.len() }, sep),
            evidence,
            d.score,
            environment_hypothesis(ctx, s, &failing_host, &d, run),
        ));
    }
    (out, pairs.len())
}

/// `s` with the run number written as `{run}` where it stands alone after a separator
/// (`{workdir}/run-3/x` -> `{workdir}/run-{run}/x`).
fn with_run(s: &str, run: u32) -> String {
    let n = run.to_string();
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(&n) {
        let before_ok = rest[..i].chars().next_back().is_some_and(|c| !c.is_alphanumeric());
        let after_ok = !rest[i + n.len()..].starts_with(|c: char| c.is_ascii_digit());
        out.push_str(&rest[..i]);
        out.push_str(if before_ok && after_ok { "{run}" } else { &n });
        rest = &rest[i + n.len()..];
    }
    out.push_str(rest);
    out
}

/// A variant whose processes on the failing host would change the differing state.
fn environment_hypothesis(
    ctx: &Context<'_>,
    s: &Scenario,
    host: &str,
    d: &diff::Difference,
    run: u32,
) -> Result<Hypothesis, String> {
    let absent_here = d.a == "absent" || d.a.starts_with("not a mount point") || d.a.starts_with("not running");
    let mentions = |p: &heisen_recordings::Process| match d.category {
        "daemon" => p.command.iter().any(|a| a == &d.subject || a.rsplit('/').next() == Some(&d.subject)),
        "mount" => {
            p.command.iter().any(|a| *a == d.subject || a.ends_with(&d.subject) || with_run(a, run) == d.subject)
        }
        _ => false,
    };
    let variant_of = |p: &heisen_recordings::Process| p.variant.clone();
    let candidates: Vec<&heisen_recordings::Process> = s
        .services
        .iter()
        .chain(s.steps.iter())
        .filter(|p| p.host == host && p.variant.is_some() && mentions(p))
        .collect();
    let Some(p) = candidates.first() else {
        return Err(format!(
            "no variant of the scenario changes {} {} on {host}; add one (a [variants.X] with a process that does)",
            d.category, d.subject
        ));
    };
    let variant = variant_of(p).expect("filtered");
    let is_step = s.steps.iter().any(|st| st.name == p.name);
    if !is_step {
        return Ok(Hypothesis::State(StateHypothesis { variant, fails_when_on: !absent_here, runs: runs_wanted(ctx) }));
    }
    // A step of the variant makes the state: whether it does so before the failing step starts
    // (its first syscall a gate can hold) decides.
    let syscall = match d.category {
        "mount" => "mount",
        _ => return Err(format!("step {} of variant {variant} makes the state; no gate for a {}", p.name, d.category)),
    };
    let failing = &s.failure.step;
    let first_gateable = ctx.failing.iter().find_map(|r| {
        let rs = ctx.aligned.runs.get(r)?;
        rs.first
            .iter()
            .filter(|(id, _)| {
                let sig = &ctx.aligned.sigs[**id];
                sig.role.process == *failing && sig.role.cron_command.is_none() && sig.gate.is_some()
            })
            .min_by_key(|(_, o)| o.seq)
            .map(|(id, _)| ctx.aligned.sigs[*id].gate.clone().expect("filtered"))
    });
    let (then_call, signal, fd_at_least) =
        first_gateable.ok_or_else(|| format!("the failing step {failing} made no syscall a gate can hold"))?;
    Ok(Hypothesis::Order(OrderHypothesis {
        first: GateSpec {
            step: p.name.clone(),
            syscall: syscall.into(),
            nth: 1,
            signal: None,
            fd_at_least: None,
            path: None,
        },
        then: GateSpec { step: failing.clone(), syscall: then_call, nth: 1, signal, fd_at_least, path: None },
        fails_when_after: absent_here,
        runs: runs_wanted(ctx),
        variants: None,
    }))
}

/// Items: the failing runs' lock targets, those whose name the failing step's output gives (the
/// failure names them: "lost: job-3 job-5") against the others. A candidate is the role that
/// claimed an item first (its first successful lock).
fn item_candidates(ctx: &Context<'_>) -> (Vec<Candidate>, usize) {
    let Some(s) = ctx.scenario else { return (vec![], 0) };
    let mut named: BTreeSet<String> = BTreeSet::new();
    for run in ctx.failing {
        if let Some(o) = ctx.bundle.runs.iter().find(|o| o.run == *run) {
            for st in o.steps.iter().filter(|st| st.name == s.failure.step) {
                for line in &st.output_tail {
                    named.extend(line.split(|c: char| c.is_whitespace() || c == ',' || c == ':').map(str::to_string));
                }
            }
        }
    }
    named.retain(|t| t.len() >= 3);
    // item -> (failing?, first claimer role, occurrence, run)
    let mut items: BTreeMap<(u32, String), (bool, usize, Occ)> = BTreeMap::new();
    for run in ctx.failing {
        let Some(rs) = ctx.aligned.runs.get(run) else { continue };
        let mut claims: Vec<&(usize, Occ)> = rs.locks.iter().filter(|(_, o)| o.ret == 0 && o.item.is_some()).collect();
        claims.sort_by_key(|(_, o)| o.at.earliest_ns);
        for (sig, o) in claims {
            let path = o.item.clone().expect("filtered");
            let base = path.rsplit('/').next().unwrap_or(&path).to_string();
            let failing = named.contains(&base);
            items.entry((*run, path)).or_insert((failing, *sig, o.clone()));
        }
    }
    // Only items in directories where the failure named some.
    let dirs: BTreeSet<String> = items
        .iter()
        .filter(|(_, (f, _, _))| *f)
        .map(|((_, p), _)| p.rsplit_once('/').map(|(d, _)| d.to_string()).unwrap_or_default())
        .collect();
    items.retain(|(_, p), _| dirs.contains(&p.rsplit_once('/').map(|(d, _)| d.to_string()).unwrap_or_default()));
    let (nf, np) = (items.values().filter(|v| v.0).count(), items.values().filter(|v| !v.0).count());
    if nf == 0 || np == 0 {
        return (vec![], 0);
    }
    let roles: BTreeSet<usize> = items.values().map(|v| v.1).collect();
    let mut out = Vec::new();
    for sig in &roles {
        let role = &ctx.aligned.sigs[*sig].role;
        let claimed =
            |failing: bool| items.values().filter(|v| v.0 == failing && ctx.aligned.sigs[v.1].role == *role).count();
        let f = Count { holds: claimed(true), of: nf };
        let q = Count { holds: claimed(false), of: np };
        let sep = share(f) - share(q);
        if sep < 0.5 {
            continue;
        }
        let host = &ctx.bundle.hosts[role.host].name;
        let what = &ctx.aligned.sigs[*sig].what;
        let others: Vec<&usize> = roles.iter().filter(|o| ctx.aligned.sigs[**o].role != *role).collect();
        let other_label = others
            .first()
            .map(|o| {
                let r = &ctx.aligned.sigs[**o].role;
                format!("{} [{}]", r.label(), ctx.bundle.hosts[r.host].name)
            })
            .unwrap_or_else(|| "any other process".into());
        let evidence = items
            .iter()
            .filter(|(_, v)| v.0 && ctx.aligned.sigs[v.1].role == *role)
            .take(3)
            .map(|((run, _), (_, _, o))| {
                evidence_of(ctx.bundle, *run, o, format!("{}: {} (first claim)", role.label(), o.desc))
            })
            .collect();
        let h = match others.first() {
            Some(o) => order_hypothesis(ctx, &ctx.aligned.sigs[**o], &ctx.aligned.sigs[*sig]),
            None => Err("no other process claimed items".into()),
        };
        let summary = format!(
            "{} [{host}] claims an item ({what}) before {other_label}: the items the failure names are the ones it took",
            role.label()
        );
        out.push(Candidate::new("ordering", "items", summary, (f, q, sep), evidence, Class::Lock as u32 * 10 + 5, h));
    }
    (out, nf + np)
}

/// Phase 5: rank, keep the best, number them and write their verify commands.
fn propose(candidates: &mut Vec<Candidate>, opts: &Options) {
    candidates.sort_by(|x, y| {
        let key = |c: &Candidate| ((c.score * 100.0).round() as i64, c.prior, c.failing.holds);
        key(y).cmp(&key(x)).then_with(|| x.cause_seq.cmp(&y.cause_seq)).then_with(|| x.summary.cmp(&y.summary))
    });
    // One candidate per hypothesis: the best-placed keeps it.
    let mut seen = BTreeSet::new();
    candidates.retain(|c| c.hypothesis.as_ref().is_none_or(|h| seen.insert(h.clone())));
    candidates.truncate(opts.top);
    for (i, c) in candidates.iter_mut().enumerate() {
        c.rank = i + 1;
        if let Some(h) = &c.hypothesis {
            c.verify = Some(format!(
                "heisen verify {b} --candidate {r} --local   # = heisen verify {b} --hypothesis '{h}' --local",
                b = opts.bundle_arg,
                r = c.rank
            ));
        }
    }
}

/// Findings: a blocked call that returned EINTR right after a tracer attached to its process
/// (the observer woke it: a lost-wakeup suspect, story 2).
fn findings(bundle: &Bundle) -> Vec<Finding> {
    let mut out = Vec::new();
    let (mut seen, mut repeats): (Vec<(String, String, String, String)>, Vec<u32>) = (Vec::new(), Vec::new());
    for rec in &bundle.hosts {
        let attaches: Vec<&Event> = rec
            .events
            .iter()
            .filter(|e| matches!(&e.kind, EventKind::Attach { phase, .. } if phase == "attach"))
            .collect();
        for at in attaches {
            let EventKind::Attach { tracer, target_pid, .. } = &at.kind else { continue };
            let woken = rec.events.iter().find(|e| {
                let (name, ret, enter) = match &e.kind {
                    EventKind::Syscall { name, ret, enter_ns, .. } => (name, *ret, *enter_ns),
                    EventKind::Traced { name, ret, enter_ns, .. } => (name, *ret, *enter_ns),
                    _ => return false,
                };
                let blocking =
                    ["epoll_wait", "epoll_pwait", "epoll_pwait2", "read", "poll", "ppoll", "select", "pselect6"];
                // EINTR, or the kernel's restart codes a tracer sees in its place.
                let interrupted = ret == -4 || ret == -512 || ret == -514 || ret == -516;
                // Blocked for a while before the attach: a loop that was merely between two
                // events (a recorder attaching at start) is not a stuck one.
                same_process(e.pid, *target_pid, rec)
                    && blocking.contains(&name.as_str())
                    && interrupted
                    && enter < at.raw_ns - 100_000_000
                    && e.raw_ns >= at.raw_ns
                    && e.raw_ns - at.raw_ns < 1_000_000_000
            });
            if let Some(w) = woken {
                let call = match &w.kind {
                    EventKind::Syscall { name, .. } | EventKind::Traced { name, .. } => name.clone(),
                    _ => String::new(),
                };
                let ev = |e: &Event, what: String| {
                    let i = rec.clock.interval(e.raw_ns);
                    Evidence {
                        host: rec.name.clone(),
                        run: e.run,
                        time_ns: i.midpoint_ns(),
                        error_ns: (i.latest_ns - i.earliest_ns) / 2,
                        what,
                    }
                };
                // Did it work again? Its first write to a socket or file (not stdio) after waking.
                let answered = rec.events.iter().find(|e| {
                    matches!(&e.kind, EventKind::Syscall { name, args, ret, .. }
                        if matches!(name.as_str(), "write" | "sendto" | "sendmsg")
                            && args.first().is_some_and(|fd| *fd >= 3)
                            && *ret >= 0)
                        && same_process(e.pid, *target_pid, rec)
                        && e.raw_ns > w.raw_ns
                        && e.raw_ns - w.raw_ns < 2_000_000_000
                });
                let blocked_ms = (w.raw_ns - enter_of(w)) / 1_000_000;
                let outcome = match answered {
                    Some(a) => format!(
                        ", and {} answered again {:.1} ms later: the server recovered. It had been blocked for {blocked_ms} \
                         ms waiting for an event; the attach woke it and it found work that was already there: suspect \
                         a lost wakeup",
                        w.comm,
                        (a.raw_ns - w.raw_ns) as f64 / 1e6
                    ),
                    None => format!(
                        " after {blocked_ms} ms blocked; it wrote nothing afterwards (if the symptom went away then, \
                         suspect a lost wakeup)"
                    ),
                };
                let mut evidence = vec![
                    ev(at, format!("{tracer} attaches to pid {target_pid}")),
                    ev(w, format!("{call} returns EINTR in pid {}", w.pid)),
                ];
                if let Some(a) = answered {
                    evidence.push(ev(a, format!("pid {} writes again", a.pid)));
                }
                // The same story in another run (same host, process, call and tracer) is one
                // finding with a count, not another line.
                let key = (rec.name.clone(), w.comm.clone(), call.clone(), tracer.clone());
                if let Some(i) = seen.iter().position(|k| *k == key) {
                    repeats[i] += 1;
                    continue;
                }
                seen.push(key);
                repeats.push(0);
                out.push(Finding {
                    kind: "observer-woke-blocked-call",
                    summary: format!(
                        "a blocked {call} of pid {} ({}) on {} returned EINTR right after {tracer} attached{outcome}",
                        w.pid, w.comm, rec.name
                    ),
                    evidence,
                });
            }
        }
    }
    for (f, n) in out.iter_mut().zip(repeats) {
        if n > 0 {
            f.summary.push_str(&format!(" (the same in {n} more run(s))"));
        }
    }
    out
}

/// Failure rates of the free runs per observer, when a capture has runs under both: a rate that
/// changes with the observer means observing perturbs the failure (story 2: strace "fixes" it).
fn observer_effect(bundle: &Bundle) -> Option<Finding> {
    let rate = |observer: &str| {
        let runs: Vec<_> =
            bundle.runs.iter().filter(|r| r.valid && r.ordering.is_none() && r.observer == observer).collect();
        (runs.iter().filter(|r| r.failed).count(), runs.len())
    };
    let ((kf, kn), (pf, pn)) = (rate("kernel"), rate("ptrace"));
    if kn == 0 || pn == 0 {
        return None;
    }
    let (k, p) = (kf as f64 / kn as f64, pf as f64 / pn as f64);
    let changed = (k - p).abs() >= 0.5;
    Some(Finding {
        kind: if changed { "observer-effect" } else { "no-observer-effect" },
        summary: if changed {
            format!(
                "the observer changes the failure: {kf}/{kn} runs failed under the kernel observer, {pf}/{pn} with the \
                 ptrace recorder attached; ptrace perturbs what it observes (a blocked call interrupted, timing \
                 slowed), so trust the kernel-observed runs"
            )
        } else {
            format!("the failure rate does not depend on the observer: kernel {kf}/{kn}, ptrace {pf}/{pn}")
        },
        evidence: vec![],
    })
}

/// When a recorded call entered (its own time for events that do not say).
fn enter_of(e: &Event) -> i64 {
    match &e.kind {
        EventKind::Syscall { enter_ns, .. } | EventKind::Traced { enter_ns, .. } => *enter_ns,
        _ => e.raw_ns,
    }
}

/// Whether thread `tid` belongs to process `pid` (by the recorded fork edges: threads of a
/// process are its clones; the main thread's tid is the pid).
fn same_process(tid: i32, pid: i32, rec: &heisen_recordings::HostRecording) -> bool {
    tid == pid
        || rec.events.iter().any(
            |e| matches!(e.kind, EventKind::Fork { parent_pid, child_pid } if parent_pid == pid && child_pid == tid),
        )
}

/// The explanation as text.
pub fn to_text(x: &Explanation) -> String {
    let mut out = format!(
        "explain: capture {}{}, seed {}\n",
        x.capture_id,
        x.scenario.as_ref().map(|s| format!(" (scenario {s})")).unwrap_or_default(),
        x.seed
    );
    for (i, p) in x.phases.iter().enumerate() {
        out.push_str(&format!("phase {}/{} {}: {}\n", i + 1, x.phases.len(), p.name, p.summary));
    }
    if x.candidates.is_empty() {
        out.push_str("\nno candidate separates failing from passing cases\n");
    }
    for c in &x.candidates {
        out.push_str(&format!("\n{}. [{}] {}\n", c.rank, c.kind, c.summary));
        out.push_str(&format!(
            "   separates {}: holds in {}/{} failing, {}/{} passing (score {:.2})\n",
            c.unit, c.failing.holds, c.failing.of, c.passing.holds, c.passing.of, c.score
        ));
        if let Some(first) = c.evidence.iter().map(|e| e.time_ns).min() {
            for e in &c.evidence {
                out.push_str(&format!(
                    "   run {:<3} {:<8} t+{:>10.3} ms ±{:.3} ms  {}\n",
                    e.run,
                    e.host,
                    (e.time_ns - first) as f64 / 1e6,
                    e.error_ns as f64 / 1e6,
                    e.what
                ));
            }
        }
        match (&c.verify, &c.not_verifiable) {
            (Some(v), _) => out.push_str(&format!("   verify: {v}\n")),
            (None, Some(why)) => out.push_str(&format!("   not verifiable as is: {why}\n")),
            _ => {}
        }
    }
    for f in &x.findings {
        out.push_str(&format!("\nfinding [{}]: {}\n", f.kind, f.summary));
        if let Some(first) = f.evidence.iter().map(|e| e.time_ns).min() {
            for e in &f.evidence {
                out.push_str(&format!(
                    "   {:<8} t+{:>10.3} ms  {}\n",
                    e.host,
                    (e.time_ns - first) as f64 / 1e6,
                    e.what
                ));
            }
        }
    }
    out
}

/// How a hypothesis's gate points were ordered in one recorded run: what replay enforces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// `during`: the cause came after `done` victim calls had completed; the next victim call
    /// (if any) came while the cause's effect was still under way (`effect_over` false) or after
    /// it had ended (true).
    During { done: u32, effect_over: bool, victims: u32 },
    /// `order`: which gate point came first, or `None` when `first` never happened.
    Order { first_first: Option<bool> },
    /// `state`: whether the variant was on.
    State { on: bool },
}

/// The recorded order of `h`'s gate points in run `run` of the bundle.
pub fn recorded(bundle: &Bundle, scenario: &Scenario, run: u32, h: &Hypothesis) -> Result<Recorded, String> {
    let outcome =
        bundle.runs.iter().find(|r| r.run == run).ok_or_else(|| {
            format!("capture {} has no run {run} (runs 1..={})", bundle.capture_id, bundle.runs.len())
        })?;
    let aligned = align(bundle, &[run], &BTreeMap::new());
    let ctx = Context { bundle, scenario: Some(scenario), aligned: &aligned, failing: &[], baseline: &Baseline::None };
    let rs = &aligned.runs[&run];
    // The occurrences of a gate point's signature in the run (cron jobs count as the step that
    // runs their command by hand).
    let occs = |g: &GateSpec| -> Vec<&Occ> {
        let mut out: Vec<&Occ> = rs
            .gateable
            .iter()
            .filter(|(id, _)| {
                let sig = &aligned.sigs[**id];
                sig.gate.as_ref().is_some_and(|(call, signal, fd)| {
                    *call == g.syscall
                        && (g.signal.is_none() || *signal == g.signal)
                        && (g.fd_at_least.is_none() || *fd == g.fd_at_least)
                }) && gate_step(&ctx, &sig.role).is_ok_and(|st| st == g.step)
            })
            .flat_map(|(_, v)| v.iter())
            .collect();
        out.sort_by_key(|o| (o.at.earliest_ns, o.seq));
        out
    };
    match h {
        Hypothesis::State(s) => {
            let on = match &outcome.ordering {
                Some(name) => name == &format!("with-{}", s.variant),
                None => scenario.default_variants().contains(&s.variant),
            };
            Ok(Recorded::State { on })
        }
        Hypothesis::Order(o) => {
            let (first, then) = (occs(&o.first), occs(&o.then));
            let Some(f) = first.first() else { return Ok(Recorded::Order { first_first: None }) };
            let t = then.first().ok_or_else(|| {
                format!(
                    "run {run} has no {} of step {} (recorded without it?): nothing to order against",
                    o.then.syscall, o.then.step
                )
            })?;
            match before(f, t) {
                Some(first_first) => Ok(Recorded::Order { first_first: Some(first_first) }),
                None => Err(format!(
                    "in run {run} {}'s {} and {}'s {} are concurrent within the clock error: the recording cannot say \
                     which came first",
                    o.first.step, o.first.syscall, o.then.step, o.then.syscall
                )),
            }
        }
        Hypothesis::During(d) => {
            let cause = occs(&d.cause);
            let c = cause.first().ok_or_else(|| {
                format!("run {run} has no {} by {}: the cause never happened in it", d.cause.syscall, d.cause.step)
            })?;
            let victims = occs(&d.victim);
            let done = victims.iter().take_while(|v| before(v, c) == Some(true)).count() as u32;
            let next = victims.get(done as usize);
            let effect_over = rs.outputs.iter().any(|(role, line, o)| {
                role.process == d.effect_done.process
                    && line.contains(&d.effect_done.text)
                    && before(c, o) == Some(true)
                    && next.is_none_or(|n| before(o, n) == Some(true))
            });
            Ok(Recorded::During { done, effect_over, victims: victims.len() as u32 })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(run: u32, failed: bool, observer: &str) -> heisen_recordings::RunOutcome {
        heisen_recordings::RunOutcome {
            run,
            ordering: None,
            failed,
            valid: true,
            note: String::new(),
            steps: vec![],
            observer: observer.into(),
        }
    }

    #[test]
    fn a_failure_rate_that_changes_with_the_observer_is_a_finding() {
        let mut bundle = Bundle {
            capture_id: "c".into(),
            started_ns: 0,
            scenario: None,
            hosts: vec![],
            runs: (1..=6).map(|r| outcome(r, r % 2 == 1, if r % 2 == 1 { "kernel" } else { "ptrace" })).collect(),
            causal: vec![],
        };
        let f = observer_effect(&bundle).expect("both observers");
        assert_eq!(f.kind, "observer-effect");
        assert!(
            f.summary.contains("3/3 runs failed under the kernel observer, 0/3 with the ptrace recorder"),
            "{}",
            f.summary
        );
        // explain compares the undisturbed runs only.
        let (failing, valid) = choose_failing(&bundle).unwrap();
        assert_eq!((failing, valid), (vec![1, 3, 5], vec![1, 3, 5]));
        bundle.runs = (1..=4).map(|r| outcome(r, r <= 2, if r % 2 == 1 { "kernel" } else { "ptrace" })).collect();
        assert_eq!(observer_effect(&bundle).unwrap().kind, "no-observer-effect");
        bundle.runs.iter_mut().for_each(|r| r.observer = "kernel".into());
        assert!(observer_effect(&bundle).is_none());
    }

    #[test]
    fn no_valid_run_is_explained_with_the_runs_notes() {
        let mut run = outcome(1, false, "kernel");
        run.valid = false;
        run.note = "step submit did not exit within 60 s (its `timeout`); stopped".into();
        let bundle = Bundle {
            capture_id: "c".into(),
            started_ns: 0,
            scenario: None,
            hosts: vec![],
            runs: vec![run],
            causal: vec![],
        };
        let e = choose_failing(&bundle).unwrap_err();
        assert!(
            e.contains("none of the 1 runs of capture c is valid") && e.contains("run 1: step submit did not exit"),
            "{e}"
        );
    }

    #[test]
    fn run_numbers_in_paths_become_placeholders() {
        assert_eq!(with_run("{workdir}/run-3/chroot/dev/shm", 3), "{workdir}/run-{run}/chroot/dev/shm");
        assert_eq!(with_run("/x3/run-13/a-3", 3), "/x3/run-13/a-{run}");
        assert_eq!(stable_text("writer: write 9 of 256 failed"), "writer: write");
        assert_eq!(stable_text("exports reloaded"), "exports reloaded");
    }
}
