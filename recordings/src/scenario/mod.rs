//! Scenario files (TOML): the hosts, services, steps, load, failure predicate and hypothesis of a
//! test that heisen runs. Parsing checks every cross-reference and reports file, line and key.
//!
//! Placeholders in commands are expanded later: `{fixture}` (the heisen guest-program launcher) and
//! `{workdir}` by the agent on its host, `{host:NAME}` (the address of host NAME) by the coordinator.

mod failure;
mod inline;
mod parse;
mod raw;

use std::fmt;
use std::path::Path;

pub use failure::{Ending, ExitMatch, Failure};

/// A parsed, checked scenario.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    pub hosts: Vec<String>,
    pub services: Vec<Process>,
    pub steps: Vec<Process>,
    pub repeat: u32,
    pub failure: Failure,
    pub hypothesis: Option<Hypothesis>,
    /// Environment variants: named pieces of state (a daemon running, a mount present) that a run
    /// can have or not.
    pub variants: Vec<Variant>,
    /// The syscalls every host records, as named in the file (classes such as `file`, `network`,
    /// and syscall names); empty: the agents' default set.
    pub syscalls: Vec<String>,
    /// The file's text, kept so bundles carry the scenario verbatim.
    pub text: String,
    /// The directory the file is in, absolute, when it was read from a file that is still
    /// there: `{scenario_dir}` in commands, for programs kept beside the scenario.
    pub dir: Option<String>,
}

/// A piece of environment state a run can have or not: the services tied to it run only when
/// it is on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Variant {
    pub name: String,
    pub description: String,
    /// On in load runs (`heisen run`).
    pub default: bool,
}

/// A service or step: a command on a host.
#[derive(Clone, Debug)]
pub struct Process {
    pub name: String,
    pub host: String,
    pub command: Vec<String>,
    /// Services: an output substring that means "ready".
    pub ready: Option<String>,
    /// Services: started only after these services are ready.
    pub after: Vec<String>,
    /// Services: started only in runs where this variant is on.
    pub variant: Option<String>,
    /// Record this process with the ptrace recorder too (decoded arguments; perturbs it).
    pub ptrace: bool,
    /// Steps: how long a run waits for the step to exit before stopping it and marking the run
    /// invalid (seconds; `DEFAULT_STEP_TIMEOUT_S` unless the scenario says).
    pub timeout_s: u32,
}

/// How long a step may run when its scenario does not say (`timeout = N` under the step).
pub const DEFAULT_STEP_TIMEOUT_S: u32 = 60;

/// A syscall occurrence of a step at which a gate holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GateSpec {
    pub step: String,
    pub syscall: String,
    pub nth: u32,
    /// For kill/tgkill: only this signal.
    pub signal: Option<i32>,
    /// Only calls whose first argument (fd) is at least this (e.g. 3: not stdio).
    pub fd_at_least: Option<u64>,
    /// Only calls on this path (openat, mount, mkdir, ...: the path argument).
    pub path: Option<String>,
}

impl GateSpec {
    /// The gate point's id, unique within a run: `step:syscall#nth`, or `step:syscall(path)#nth`.
    /// A hold notice names its gate point by it, and marks of the coordinator carry it.
    pub fn id(&self) -> String {
        match &self.path {
            Some(path) => format!("{}:{}({path})#{}", self.step, self.syscall, self.nth),
            None => format!("{}:{}#{}", self.step, self.syscall, self.nth),
        }
    }
}

/// What `verify` is asked to confirm.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // one per scenario; `During` is boxed, the rest are small enough
pub enum Hypothesis {
    /// A cause lands *during* the victim's operations (story 1).
    During(Box<During>),
    /// The failure depends on a piece of environment state (story 5's absent status daemon).
    State(StateHypothesis),
    /// The failure depends on whether one event comes before another (story 3's mount before
    /// the mount table is read).
    Order(OrderHypothesis),
    /// A three-point order: the failure happens when a cause lands after one call of another
    /// process and before a later one of the same process (a pid file read between the old
    /// process's stop and the new one's write).
    Between(BetweenHypothesis),
}

/// `cause` fails the run when it lands after `opens` and before `closes`, two calls of one step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BetweenHypothesis {
    pub cause: GateSpec,
    pub opens: GateSpec,
    pub closes: GateSpec,
    pub runs: u32,
    /// Variants on in verify runs (default: the scenario's defaults).
    pub variants: Option<Vec<String>>,
}

/// `first` must come before `then` for the run to pass (`fails_when_after`), or must not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderHypothesis {
    pub first: GateSpec,
    pub then: GateSpec,
    /// True: the failure happens when `first` comes after `then` (or never).
    pub fails_when_after: bool,
    /// In the ordering expected to pass, the leading call only goes through before the other is
    /// released, and its step goes on beside it (`settle = "call"`: a service that binds, then
    /// serves); by default its step runs to its end first (a job that finishes its work). The
    /// ordering expected to fail always plays its leading step out.
    pub settle_call: bool,
    pub runs: u32,
    /// Variants on in verify runs (default: the scenario's defaults), e.g. running by hand what
    /// cron runs in load runs, so gates can hold it.
    pub variants: Option<Vec<String>>,
}

impl Hypothesis {
    /// How many times verify runs each ordering.
    pub fn runs(&self) -> u32 {
        match self {
            Hypothesis::During(h) => h.runs,
            Hypothesis::State(h) => h.runs,
            Hypothesis::Order(h) => h.runs,
            Hypothesis::Between(h) => h.runs,
        }
    }

    /// True when both name the same cause, victim and direction; which occurrence (`nth`) or path
    /// a gate holds at, and how many runs, may differ.
    pub fn same_cause(&self, other: &Hypothesis) -> bool {
        let same_gate = |a: &GateSpec, b: &GateSpec| a.step == b.step && a.syscall == b.syscall && a.signal == b.signal;
        match (self, other) {
            (Hypothesis::During(a), Hypothesis::During(b)) => {
                same_gate(&a.cause, &b.cause) && a.victim.step == b.victim.step && a.victim.syscall == b.victim.syscall
            }
            (Hypothesis::State(a), Hypothesis::State(b)) => {
                a.variant == b.variant && a.fails_when_on == b.fails_when_on
            }
            (Hypothesis::Order(a), Hypothesis::Order(b)) => {
                same_gate(&a.first, &b.first) && a.then.step == b.then.step && a.fails_when_after == b.fails_when_after
            }
            (Hypothesis::Between(a), Hypothesis::Between(b)) => {
                same_gate(&a.cause, &b.cause) && a.opens.step == b.opens.step && a.closes.step == b.closes.step
            }
            _ => false,
        }
    }
}
/// The failure happens exactly when `variant` is on (`fails_when_on`) or off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateHypothesis {
    pub variant: String,
    pub fails_when_on: bool,
    pub runs: u32,
}

/// An ordering hypothesis: the cause (e.g. a SIGHUP) lands *during* the victim's operations.
#[derive(Clone, Debug)]
pub struct During {
    pub cause: GateSpec,
    pub victim: GateSpec,
    /// The victim step's last occurrence number (for "after").
    pub victim_count: u32,
    /// Where the victim's operation begins, when that is not its first `victim` call (a stream
    /// of writes over a connection begins at its `connect`): "before" holds the victim here.
    pub victim_begins: Option<GateSpec>,
    /// Output of a service that says the cause has taken effect. None (with `effect_done`):
    /// the cause's own step exiting is its effect (a reader that read the half-written file).
    pub effect_started: Option<OutputMatch>,
    /// Output of a service that says the cause's effect is over.
    pub effect_done: Option<OutputMatch>,
    /// How many times verify runs each ordering.
    pub runs: u32,
}

/// A line of a launched process's output containing `text`.
#[derive(Clone, Debug)]
pub struct OutputMatch {
    pub process: String,
    pub text: String,
}

/// A scenario error with its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioError {
    pub path: String,
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}: {}", self.path, line, self.key, self.message),
            None => write!(f, "{}: {}: {}", self.path, self.key, self.message),
        }
    }
}

impl std::error::Error for ScenarioError {}

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        const MAX_SCENARIO_BYTES: u64 = 4 << 20;
        let cannot = |message: String| ScenarioError {
            path: path.display().to_string(),
            line: None,
            key: "file".into(),
            message: format!("cannot read: {message}"),
        };
        // A scenario is a small text file: a FIFO, a device or a huge file is refused at once.
        let bytes = crate::files::read_regular(path, MAX_SCENARIO_BYTES).map_err(|e| cannot(e.to_string()))?;
        let text = String::from_utf8(bytes).map_err(|_| cannot("not UTF-8 text".into()))?;
        let mut scenario = Scenario::parse(&path.display().to_string(), &text)?;
        scenario.dir = scenario_dir(path);
        Ok(scenario)
    }
    /// Parses a scenario a bundle carries (`path` as it was captured): its directory counts for
    /// `{scenario_dir}` when it is still there.
    pub fn from_source(path: &str, text: &str) -> Result<Scenario, ScenarioError> {
        let mut scenario = Scenario::parse(path, text)?;
        scenario.dir = scenario_dir(Path::new(path));
        Ok(scenario)
    }

    /// The same scenario with its `[hypothesis]` replaced by `inline`, a TOML inline table such as
    /// [`Hypothesis::to_inline_toml`] writes. Errors name `--hypothesis` and the key.
    pub fn with_hypothesis(&self, path: &str, inline: &str) -> Result<Scenario, ScenarioError> {
        let bad = |key: &str, message: String| ScenarioError {
            path: path.to_string(),
            line: None,
            key: format!("--hypothesis {key}").trim_end().to_string(),
            message,
        };
        let mut doc: toml::Table =
            toml::from_str(&self.text).map_err(|e| bad("", format!("the scenario itself does not parse: {e}")))?;
        let wrapped: toml::Table = toml::from_str(&format!("hypothesis = {inline}")).map_err(|e| {
            bad(
                "",
                format!(
                    "not a TOML inline table ({}), e.g. '{{ variant = \"x\", fails_when = \"off\" }}'",
                    e.message().split_whitespace().collect::<Vec<_>>().join(" ")
                ),
            )
        })?;
        doc.insert("hypothesis".into(), wrapped["hypothesis"].clone());
        let text = toml::to_string(&doc).map_err(|e| bad("", e.to_string()))?;
        Scenario::parse(path, &text)
            .map(|mut s| {
                // Bundles keep the scenario as the user wrote it.
                s.text = self.text.clone();
                s
            })
            .map_err(|e| ScenarioError { line: None, key: format!("--hypothesis {}", e.key), ..e })
    }

    /// The variants on in a load run (their `default`).
    pub fn default_variants(&self) -> Vec<String> {
        self.variants.iter().filter(|v| v.default).map(|v| v.name.clone()).collect()
    }

    /// The service or step called `name`.
    pub fn process(&self, name: &str) -> Option<&Process> {
        self.services.iter().chain(self.steps.iter()).find(|p| p.name == name)
    }
}

/// Services in start order: each after the services its `after` names (then by name).
/// Errors name the service and the problem (unknown name or a cycle).
fn start_order(services: Vec<Process>) -> Result<Vec<Process>, (String, String)> {
    let names: Vec<String> = services.iter().map(|p| p.name.clone()).collect();
    for p in &services {
        if let Some(unknown) = p.after.iter().find(|a| !names.contains(a)) {
            return Err((p.name.clone(), format!("unknown service `{unknown}`; services: {}", names.join(", "))));
        }
    }
    let mut left = services;
    let mut out: Vec<Process> = Vec::new();
    while !left.is_empty() {
        let Some(i) = left.iter().position(|p| p.after.iter().all(|a| out.iter().any(|o| &o.name == a))) else {
            return Err((left[0].name.clone(), "services wait for each other in a cycle".into()));
        };
        out.push(left.remove(i));
    }
    Ok(out)
}

/// 1-based line number of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The absolute directory of a scenario file that exists.
fn scenario_dir(path: &Path) -> Option<String> {
    let file = path.canonicalize().ok()?;
    Some(file.parent()?.display().to_string())
}

#[cfg(test)]
mod tests;
