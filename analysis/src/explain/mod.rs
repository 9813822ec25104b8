//! `heisen explain`: from a capture with failing and passing runs, rank the candidate causes —
//! orderings between pairs of events and environment differences — by how well they separate
//! failing runs from passing ones, each with its evidence and the `heisen verify` that would
//! confirm it.
//!
//! Named phases, each a module: `choose_runs` (failing and valid runs), `baseline` (what they are
//! compared with), alignment (`crate::align`: key events by signature), scoring (`ordering`,
//! `environment` and `items` candidates, over the run `predicates`), `propose` (rank and write
//! verify commands) and `findings`; `report` is the result and its text. The search is deterministic: every table is ordered, and when there are more event
//! pairs than the budget, the pairs examined are drawn by a seeded generator (`--seed`).
//!
//! What separates is measured, not assumed; what is *likely* is a prior used only to break ties
//! between equally separating candidates: events that act on another process (a signal sent, a
//! mount, a lock, a cron job) before process-local ones, and effects on the failing step before
//! effects elsewhere.

mod baseline;
mod choose_runs;
mod environment;
mod findings;
mod hypotheses;
mod items;
mod ordering;
mod predicates;
mod propose;
mod report;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use heisen_recordings::{Bundle, RunObserver, Scenario};

use crate::AnalysisError;
use environment::environment_candidates;
use findings::{findings, lost_events, observer_effect};
use items::item_candidates;
use ordering::ordering_candidates;
use propose::propose;

pub use baseline::{choose_baseline, Baseline};
pub use choose_runs::choose_failing;
pub use report::{to_text, Candidate, Count, Evidence, Explanation, Finding, PhaseReport};

use crate::align::{align, symptom_onsets, Aligned};

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

/// Runs `explain` over a bundle.
pub fn explain(bundle: &Bundle, opts: &Options) -> Result<Explanation, AnalysisError> {
    let scenario = match &bundle.scenario {
        Some(src) => {
            Some(Scenario::parse(&src.path, &src.text).map_err(|source| AnalysisError::BundleScenario { source })?)
        }
        None => None,
    };
    let mut phases = Vec::new();
    let (failing, valid) = choose_failing(bundle)?;
    let observed_by = |r: &u32, o: RunObserver| bundle.runs.iter().any(|x| x.run == *r && x.observer == o);
    let only_traced_failed = failing.iter().all(|r| observed_by(r, RunObserver::Ptrace))
        && valid.iter().any(|r| observed_by(r, RunObserver::Kernel));
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
    findings.extend(lost_events(bundle));
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

/// What the phases share.
pub(crate) struct Context<'a> {
    pub(crate) bundle: &'a Bundle,
    pub(crate) scenario: Option<&'a Scenario>,
    pub(crate) aligned: &'a Aligned,
    pub(crate) failing: &'a [u32],
    pub(crate) baseline: &'a Baseline,
}

/// Phase 4: every candidate with its counts. Returns the candidates and a summary in words.
pub(crate) fn score(ctx: &Context<'_>, opts: &Options) -> (Vec<Candidate>, String) {
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
