//! Running a scenario under load and confirming a hypothesis: the phases behind `heisen run`,
//! `heisen verify` and `heisen demo`.

use std::collections::BTreeMap;

use anyhow::Result;
use heisen_recordings::{Bundle, RunOutcome, Scenario};
use serde::Serialize;

use crate::client::Agent;
use crate::session::{Placeholders, Session};
use heisen_analysis::schedule::{for_scenario, Ordering};

/// Failure counts of one ordering.
#[derive(Clone, Debug, Serialize)]
pub struct OrderingResult {
    pub name: String,
    pub description: String,
    pub expect_failure: bool,
    pub runs: u32,
    pub failures: u32,
    /// Runs that could not be carried out as scheduled (not counted in `runs`).
    pub invalid: u32,
    pub notes: Vec<String>,
}

/// The verdict over all orderings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The hypothesis ordering failed K/K and every alternative passed K/K.
    Confirmed,
    /// The hypothesis ordering never failed, or an alternative failed as often.
    Refuted,
    Inconclusive,
}

impl Verdict {
    pub fn exit_code(self) -> i32 {
        match self {
            Verdict::Confirmed => 0,
            Verdict::Refuted | Verdict::Inconclusive => 1,
        }
    }

    pub fn word(self) -> &'static str {
        match self {
            Verdict::Confirmed => "CONFIRMED",
            Verdict::Refuted => "REFUTED",
            Verdict::Inconclusive => "INCONCLUSIVE",
        }
    }
}

/// Decides the verdict from per-ordering counts.
pub fn verdict(results: &[OrderingResult], wanted_runs: u32) -> Verdict {
    let complete = results.iter().all(|r| r.runs == wanted_runs && r.invalid == 0);
    let guilty_always = results.iter().filter(|r| r.expect_failure).all(|r| r.runs > 0 && r.failures == r.runs);
    let others_never = results.iter().filter(|r| !r.expect_failure).all(|r| r.failures == 0);
    let guilty_never = results.iter().filter(|r| r.expect_failure).all(|r| r.failures == 0);
    if complete && guilty_always && others_never {
        Verdict::Confirmed
    } else if complete && guilty_never {
        Verdict::Refuted
    } else {
        Verdict::Inconclusive
    }
}

/// Progress lines on stderr (long work shows progress).
pub fn progress(line: &str) {
    eprintln!("{line}");
}

fn describe_run(o: &RunOutcome) -> String {
    if !o.valid {
        format!("invalid ({})", o.note)
    } else if o.failed {
        format!("FAILED: {}", o.note)
    } else {
        "passed".into()
    }
}

/// How load runs observe the scenario's processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Observe {
    /// Kernel tracepoints only (the default: does not perturb).
    Kernel,
    /// The ptrace recorder attached to every scenario process as well (perturbs, like strace).
    Ptrace,
    /// Alternate: odd runs kernel, even runs ptrace; explain compares their failure rates.
    Both,
}

/// Load phase: `repeat` free runs (no gates) in one capture, observed by the kernel observer.
pub async fn load(
    agents: BTreeMap<String, Agent>,
    scenario: &Scenario,
    vars: &Placeholders,
    capture_id: &str,
    repeat: u32,
) -> Result<Session> {
    load_observed(agents, scenario, vars, capture_id, repeat, Observe::Kernel).await
}

/// Load phase with a choice of observer per run (`heisen run --observe`).
pub async fn load_observed(
    agents: BTreeMap<String, Agent>,
    scenario: &Scenario,
    vars: &Placeholders,
    capture_id: &str,
    repeat: u32,
    observe: Observe,
) -> Result<Session> {
    let mut traced = scenario.clone();
    for p in traced.services.iter_mut().chain(traced.steps.iter_mut()) {
        p.ptrace = true;
    }
    let mut session = Session::open(agents, capture_id, scenario).await?;
    for note in session.observer_notes() {
        progress(&note);
    }
    for i in 1..=repeat {
        let ptrace = observe == Observe::Ptrace || (observe == Observe::Both && i % 2 == 0);
        let outcome = session.run(if ptrace { &traced } else { scenario }, None, vars).await?;
        let under = if observe == Observe::Kernel { String::new() } else { format!(" [{}]", outcome.observer.name()) };
        progress(&format!("[load {i}/{repeat}]{under} {}", describe_run(&outcome)));
    }
    Ok(session)
}

/// Verify phase: each ordering `runs` times in one capture.
pub async fn verify(
    agents: BTreeMap<String, Agent>,
    scenario: &Scenario,
    vars: &Placeholders,
    capture_id: &str,
    runs: u32,
) -> Result<(Session, Vec<OrderingResult>)> {
    let hypothesis = scenario.hypothesis.as_ref().ok_or_else(|| {
        anyhow::anyhow!(
            "scenario `{}` has no [hypothesis]; add one (cause + victim + effects, or variant + fails_when) to verify",
            scenario.name
        )
    })?;
    let mut session = Session::open(agents, capture_id, scenario).await?;
    let mut results = Vec::new();
    for ordering in for_scenario(scenario, hypothesis) {
        results.push(run_ordering(&mut session, scenario, &ordering, vars, runs).await?);
    }
    Ok((session, results))
}

async fn run_ordering(
    session: &mut Session,
    scenario: &Scenario,
    ordering: &Ordering,
    vars: &Placeholders,
    runs: u32,
) -> Result<OrderingResult> {
    let mut result = OrderingResult {
        name: ordering.name.to_string(),
        description: ordering.description.clone(),
        expect_failure: ordering.expect_failure,
        runs: 0,
        failures: 0,
        invalid: 0,
        notes: Vec::new(),
    };
    for i in 1..=runs {
        let outcome = session.run(scenario, Some(ordering), vars).await?;
        progress(&format!("[verify {} {i}/{runs}] {}", ordering.name, describe_run(&outcome)));
        if outcome.valid {
            result.runs += 1;
            result.failures += outcome.failed as u32;
        } else {
            result.invalid += 1;
            result.notes.push(outcome.note.clone());
        }
    }
    Ok(result)
}

/// Counts again from the runs as the bundle has them: a run a host's loss touched was found
/// invalid only when the capture closed (see `Session::close`).
pub fn recount(results: &mut [OrderingResult], runs: &[RunOutcome]) {
    for result in results.iter_mut() {
        let mine: Vec<&RunOutcome> =
            runs.iter().filter(|r| r.ordering.as_deref() == Some(result.name.as_str())).collect();
        if mine.is_empty() {
            continue;
        }
        result.runs = mine.iter().filter(|r| r.valid).count() as u32;
        result.failures = mine.iter().filter(|r| r.valid && r.failed).count() as u32;
        result.invalid = mine.iter().filter(|r| !r.valid).count() as u32;
        result.notes = mine.iter().filter(|r| !r.valid).map(|r| r.note.clone()).collect();
    }
}

/// How often the failure happens by itself: the valid load runs without gates of a capture.
/// Beside the forced rates it is the amplification verify gives (8/16 by itself, 5/5 forced).
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub struct Natural {
    pub runs: u32,
    pub failures: u32,
}

impl Natural {
    /// The capture's free runs, or None when it has none (a verify capture).
    pub fn of(bundle: &Bundle) -> Option<Natural> {
        let free: Vec<&RunOutcome> = bundle.runs.iter().filter(|r| r.ordering.is_none() && r.valid).collect();
        (!free.is_empty())
            .then(|| Natural { runs: free.len() as u32, failures: free.iter().filter(|r| r.failed).count() as u32 })
    }
}

/// The verdict table as text, with the natural rate first when it is known.
pub fn table(results: &[OrderingResult], verdict: Verdict, natural: Option<Natural>) -> String {
    let width = results.iter().map(|r| r.name.len()).max().unwrap_or(0).max(8);
    let mut out = format!("{:<width$}  expected  failures  description\n", "ordering");
    if let Some(n) = natural {
        out.push_str(&format!(
            "{:<width$}  {:<9} {:>3}/{:<5} load runs without gates: how often it fails by itself\n",
            "natural", "-", n.failures, n.runs
        ));
    }
    for r in results {
        let expected = if r.expect_failure { "fail" } else { "pass" };
        let invalid = if r.invalid > 0 { format!(" (+{} invalid)", r.invalid) } else { String::new() };
        out.push_str(&format!(
            "{:<width$}  {:<9} {:>3}/{:<5} {}{}\n",
            r.name, expected, r.failures, r.runs, r.description, invalid
        ));
    }
    out.push_str(&format!("verdict: {}\n", verdict.word()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(name: &str, expect_failure: bool, runs: u32, failures: u32, invalid: u32) -> OrderingResult {
        OrderingResult {
            name: name.into(),
            description: String::new(),
            expect_failure,
            runs,
            failures,
            invalid,
            notes: vec![],
        }
    }

    #[test]
    fn verdicts() {
        let check = |results: &[OrderingResult], expected: Verdict| assert_eq!(verdict(results, 5), expected);
        check(
            &[r("during", true, 5, 5, 0), r("before", false, 5, 0, 0), r("after", false, 5, 0, 0)],
            Verdict::Confirmed,
        );
        check(&[r("during", true, 5, 4, 0), r("before", false, 5, 0, 0)], Verdict::Inconclusive);
        check(&[r("during", true, 5, 5, 0), r("before", false, 5, 1, 0)], Verdict::Inconclusive);
        check(&[r("during", true, 4, 4, 1), r("before", false, 5, 0, 0)], Verdict::Inconclusive);
        check(&[r("during", true, 5, 0, 0), r("before", false, 5, 0, 0)], Verdict::Refuted);
    }

    #[test]
    fn the_natural_rate_counts_valid_free_runs_and_heads_the_table() {
        let outcome = |run, ordering: Option<&str>, failed, valid| RunOutcome {
            run,
            ordering: ordering.map(str::to_string),
            failed,
            valid,
            note: String::new(),
            steps: vec![],
            observer: heisen_recordings::RunObserver::Kernel,
            variants: vec![],
        };
        let mut bundle = Bundle {
            capture_id: "c".into(),
            started_ns: 0,
            scenario: None,
            hosts: vec![],
            runs: vec![
                outcome(1, None, true, true),
                outcome(2, None, false, true),
                outcome(3, None, true, false),          // invalid: not counted
                outcome(4, Some("during"), true, true), // gated: not natural
                outcome(5, None, false, true),
            ],
            causal: vec![],
            placeholders: Default::default(),
        };
        let n = Natural::of(&bundle);
        assert_eq!(n, Some(Natural { runs: 3, failures: 1 }));
        let text = table(&[r("during", true, 5, 5, 0)], Verdict::Confirmed, n);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].starts_with("natural") && lines[1].contains("1/3"), "{text}");
        assert!(lines[2].starts_with("during") && lines[2].contains("5/5"), "{text}");
        bundle.runs.retain(|r| r.ordering.is_some());
        assert_eq!(Natural::of(&bundle), None, "a verify capture has no natural rate");
    }
}
