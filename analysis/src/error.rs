//! Errors of the analysis: what could not be analysed, of which capture, and what to do next.

use heisen_recordings::ScenarioError;

/// Why an analysis of a bundle could not be done.
#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    #[error("the bundle's scenario: {source}")]
    BundleScenario {
        #[source]
        source: ScenarioError,
    },
    #[error(
        "capture {capture} has no runs of a scenario (an ad-hoc capture?): explain compares failing and passing \
         runs; record some with `heisen run SCENARIO`"
    )]
    NoRuns { capture: String },
    #[error(
        "none of the {runs} runs of capture {capture} is valid, so there is nothing to compare ({notes}); fix what \
         the notes say and record again"
    )]
    NoValidRun { capture: String, runs: usize, notes: String },
    #[error(
        "none of the {valid} valid runs of capture {capture} failed: nothing to explain; record more runs \
         (`heisen run SCENARIO --repeat N`)"
    )]
    NothingFailed { capture: String, valid: usize },
    #[error("capture {capture} has no run {run} (runs 1..={runs})")]
    NoSuchRun { capture: String, run: u32, runs: usize },
    #[error("run {run} has no {syscall} of step {step} (recorded without it?): nothing to order against")]
    NoReference { run: u32, syscall: String, step: String },
    #[error("run {run} has no {syscall} by {step}: the cause never happened in it")]
    NoCause { run: u32, syscall: String, step: String },
    #[error(
        "in run {run} {first_step}'s {first_syscall} and {then_step}'s {then_syscall} are concurrent within the \
         clock error: the recording cannot say which came first"
    )]
    Concurrent { run: u32, first_step: String, first_syscall: String, then_step: String, then_syscall: String },
    #[error("no ordering {name} for this hypothesis")]
    NoOrdering { name: String },
    #[error("{step} never ran in the recorded run and no variant leaves it out")]
    NeverRan { step: String },
    #[error("the recorded order does not match the hypothesis")]
    RecordedMismatch,
    #[error("no host `{host}` in capture {capture}; hosts: {hosts}")]
    NoHost { host: String, capture: String, hosts: String },
    #[error("no event kind `{kind}`; kinds: {kinds}")]
    NoKind { kind: String, kinds: String },
    #[error("no run {run} in capture {capture}; runs: {runs}")]
    NoRun { run: u32, capture: String, runs: String },
    #[error("host {host} of capture {capture} has no environment snapshot (recorded by an older heisen?)")]
    NoSnapshots { host: String, capture: String },
    #[error("host {host} has no snapshot at `{at}`; snapshots: {have}")]
    NoSnapshotAt { host: String, at: String, have: String },
}

/// Why a candidate cause cannot be verified with the capture's scenario as it is (shown beside the
/// candidate, with what would make it verifiable).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unverifiable {
    #[error("the capture has no scenario")]
    NoScenario,
    #[error("{what} of service {process} comes before it prints {ready:?} in run {run}; verify holds a service only once it is ready")]
    BeforeReady { process: String, what: String, ready: String, run: u32 },
    #[error("no process {process} in the scenario")]
    NoProcess { process: String },
    #[error("no step on {host} runs {process}'s cron job by hand, so no gate can hold it")]
    NoCronStep { host: String, process: String },
    #[error("{what} is not a syscall a gate can hold")]
    NotGateable { what: String },
    #[error("it holds in no failing run")]
    HoldsInNoFailingRun,
    #[error("no service printed two lines after the cause in any run (the effect starting and ending)")]
    NoEffect,
    #[error("no variant of the scenario changes {category} {subject} on {host}; add one (a [variants.X] with a process that does)")]
    NoVariant { category: &'static str, subject: String, host: String },
    #[error("step {step} of variant {variant} makes the state; no gate for a {category}")]
    NoGateForState { step: String, variant: String, category: &'static str },
    #[error("the failing step {step} made no syscall a gate can hold")]
    FailingStepUngateable { step: String },
    #[error("no other process claimed items")]
    NoOtherClaimer,
}
