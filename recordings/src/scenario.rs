//! Scenario files (TOML): the hosts, services, steps, load, failure predicate and hypothesis of a
//! test that heisen runs. Parsing checks every cross-reference and reports file, line and key.
//!
//! Placeholders in commands are expanded later: `{fixture}` (the heisen guest-program launcher) and
//! `{workdir}` by the agent on its host, `{host:NAME}` (the address of host NAME) by the coordinator.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

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
    /// The file's text, kept so bundles carry the scenario verbatim.
    pub text: String,
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

/// When a run counts as failed.
#[derive(Clone, Debug)]
pub struct Failure {
    pub step: String,
    /// The step exits non-zero.
    pub exit_nonzero: bool,
    /// The step's output contains this text.
    pub output: Option<String>,
}

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
}

/// `first` must come before `then` for the run to pass (`fails_when_after`), or must not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderHypothesis {
    pub first: GateSpec,
    pub then: GateSpec,
    /// True: the failure happens when `first` comes after `then` (or never).
    pub fails_when_after: bool,
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
        }
    }

    /// The hypothesis as a TOML inline table, the way a scenario's `[hypothesis]` spells it
    /// (`heisen verify --hypothesis` reads it back).
    pub fn to_inline_toml(&self) -> String {
        let mut fields: Vec<String> = Vec::new();
        match self {
            Hypothesis::During(h) => {
                fields.push(format!("cause = {}", h.cause.to_inline_toml()));
                fields.push(format!("victim = {}", h.victim.to_inline_toml()));
                fields.push(format!("victim_count = {}", h.victim_count));
                if let Some(begins) = &h.victim_begins {
                    fields.push(format!("victim_begins = {}", begins.to_inline_toml()));
                }
                for (key, m) in [("effect_started", &h.effect_started), ("effect_done", &h.effect_done)] {
                    fields.push(format!("{key} = {{ process = {}, output = {} }}", quote(&m.process), quote(&m.text)));
                }
            }
            Hypothesis::State(h) => {
                fields.push(format!("variant = {}", quote(&h.variant)));
                fields.push(format!("fails_when = {}", quote(if h.fails_when_on { "on" } else { "off" })));
            }
            Hypothesis::Order(h) => {
                fields.push(format!("first = {}", h.first.to_inline_toml()));
                fields.push(format!("then = {}", h.then.to_inline_toml()));
                fields.push(format!("fails_when = {}", quote(if h.fails_when_after { "after" } else { "before" })));
                if let Some(vs) = &h.variants {
                    let vs: Vec<String> = vs.iter().map(|v| quote(v)).collect();
                    fields.push(format!("variants = [{}]", vs.join(", ")));
                }
            }
        }
        fields.push(format!("runs = {}", self.runs()));
        format!("{{ {} }}", fields.join(", "))
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
            _ => false,
        }
    }
}

impl GateSpec {
    /// `{ step = "remount", syscall = "kill", signal = "SIGHUP" }`.
    pub fn to_inline_toml(&self) -> String {
        let mut fields = vec![format!("step = {}", quote(&self.step)), format!("syscall = {}", quote(&self.syscall))];
        if self.nth != 1 {
            fields.push(format!("nth = {}", self.nth));
        }
        if let Some(sig) = self.signal {
            fields.push(format!("signal = {}", quote(&crate::signal_name(sig))));
        }
        if let Some(fd) = self.fd_at_least {
            fields.push(format!("fd_at_least = {fd}"));
        }
        if let Some(path) = &self.path {
            fields.push(format!("path = {}", quote(path)));
        }
        format!("{{ {} }}", fields.join(", "))
    }
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
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
    /// Output of a service that says the cause has taken effect.
    pub effect_started: OutputMatch,
    /// Output of a service that says the cause's effect is over.
    pub effect_done: OutputMatch,
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: String,
    #[serde(default)]
    description: String,
    hosts: BTreeMap<String, RawHost>,
    #[serde(default)]
    services: BTreeMap<String, RawProcess>,
    steps: BTreeMap<String, RawProcess>,
    #[serde(default)]
    load: RawLoad,
    failure: RawFailure,
    hypothesis: Option<RawHypothesis>,
    #[serde(default)]
    variants: BTreeMap<String, RawVariant>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVariant {
    #[serde(default)]
    description: String,
    #[serde(default)]
    default: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHost {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProcess {
    host: Spanned<String>,
    command: Spanned<Vec<String>>,
    ready: Option<String>,
    after: Option<Spanned<Vec<String>>>,
    variant: Option<Spanned<String>>,
    #[serde(default)]
    ptrace: bool,
    timeout: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLoad {
    #[serde(default = "default_repeat")]
    repeat: Spanned<u32>,
}

impl Default for RawLoad {
    fn default() -> Self {
        RawLoad { repeat: Spanned::new(0..0, default_repeat_value()) }
    }
}

fn default_repeat_value() -> u32 {
    20
}

fn default_repeat() -> Spanned<u32> {
    Spanned::new(0..0, default_repeat_value())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFailure {
    step: Spanned<String>,
    exit: Option<Spanned<String>>,
    output: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGate {
    step: Spanned<String>,
    syscall: Spanned<String>,
    nth: Option<u32>,
    signal: Option<Spanned<String>>,
    fd_at_least: Option<u64>,
    path: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutputMatch {
    process: Spanned<String>,
    output: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHypothesis {
    // `during`: a cause lands while the victim's operations are in flight.
    cause: Option<RawGate>,
    victim: Option<RawGate>,
    victim_count: Option<Spanned<u32>>,
    victim_begins: Option<RawGate>,
    effect_started: Option<RawOutputMatch>,
    effect_done: Option<RawOutputMatch>,
    // `order`: the failure depends on whether `first` comes before `then`.
    first: Option<RawGate>,
    then: Option<RawGate>,
    variants: Option<Spanned<Vec<String>>>,
    // `state`: the failure depends on a variant being on or off.
    variant: Option<Spanned<String>>,
    fails_when: Option<Spanned<String>>,
    #[serde(default = "default_runs")]
    runs: u32,
}

fn default_runs() -> u32 {
    5
}

/// Syscalls a gate can hold (the agent's seccomp filter knows these).
pub const GATEABLE_SYSCALLS: &[&str] = &[
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
    "openat",
    "mkdir",
    "mkdirat",
    "symlink",
    "symlinkat",
];

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
            path: path.display().to_string(),
            line: None,
            key: "file".into(),
            message: format!("cannot read: {e}"),
        })?;
        Scenario::parse(&path.display().to_string(), &text)
    }

    /// Parses and checks scenario text; `path` names it in errors.
    pub fn parse(path: &str, text: &str) -> Result<Scenario, ScenarioError> {
        let err = |span: Option<Range<usize>>, key: &str, message: String| ScenarioError {
            path: path.to_string(),
            line: span.filter(|s| s.end > 0).map(|s| line_of(text, s.start)),
            key: key.to_string(),
            message,
        };
        let raw: RawScenario = toml::from_str(text).map_err(|e| {
            let message = e.message().to_string();
            let key = message
                .split_once("field `")
                .and_then(|(_, rest)| rest.split('`').next())
                .unwrap_or("syntax")
                .to_string();
            err(e.span(), &key, message)
        })?;

        let hosts: Vec<String> = raw.hosts.keys().cloned().collect();
        if hosts.is_empty() {
            return Err(err(None, "hosts", "at least one host is needed, e.g. `[hosts.server]`".into()));
        }
        let convert = |section: &str, map: BTreeMap<String, RawProcess>| -> Result<Vec<Process>, ScenarioError> {
            let mut out = Vec::new();
            for (name, p) in map {
                if !hosts.contains(p.host.get_ref()) {
                    return Err(err(
                        Some(p.host.span()),
                        &format!("{section}.{name}.host"),
                        format!("unknown host `{}`; the scenario's hosts are: {}", p.host.get_ref(), hosts.join(", ")),
                    ));
                }
                if p.command.get_ref().is_empty() {
                    return Err(err(
                        Some(p.command.span()),
                        &format!("{section}.{name}.command"),
                        "command is empty".into(),
                    ));
                }
                if let (true, Some(after)) = (section == "steps", &p.after) {
                    return Err(err(
                        Some(after.span()),
                        &format!("steps.{name}.after"),
                        "`after` is for services; the steps of a run start together (order them with gates)".into(),
                    ));
                }
                if let Some(t) = &p.timeout {
                    let problem = if section != "steps" {
                        Some("`timeout` is for steps; a service runs until the run ends")
                    } else if *t.get_ref() == 0 {
                        Some("timeout must be at least 1 (seconds)")
                    } else {
                        None
                    };
                    if let Some(problem) = problem {
                        return Err(err(Some(t.span()), &format!("{section}.{name}.timeout"), problem.into()));
                    }
                }
                if let Some(v) = &p.variant {
                    if !raw.variants.contains_key(v.get_ref()) {
                        let known: Vec<_> = raw.variants.keys().cloned().collect();
                        return Err(err(
                            Some(v.span()),
                            &format!("{section}.{name}.variant"),
                            format!(
                                "unknown variant `{}`; declare it as [variants.{}] (declared: {})",
                                v.get_ref(),
                                v.get_ref(),
                                if known.is_empty() { "none".to_string() } else { known.join(", ") }
                            ),
                        ));
                    }
                }
                out.push(Process {
                    name,
                    host: p.host.into_inner(),
                    command: p.command.into_inner(),
                    ready: p.ready,
                    after: p.after.map(|a| a.into_inner()).unwrap_or_default(),
                    variant: p.variant.map(|v| v.into_inner()),
                    ptrace: p.ptrace,
                    timeout_s: p.timeout.map(|t| t.into_inner()).unwrap_or(DEFAULT_STEP_TIMEOUT_S),
                });
            }
            Ok(out)
        };
        let after_spans: BTreeMap<String, Range<usize>> =
            raw.services.iter().filter_map(|(n, p)| Some((n.clone(), p.after.as_ref()?.span()))).collect();
        let services = convert("services", raw.services)?;
        let services = start_order(services).map_err(|(name, problem)| {
            err(after_spans.get(&name).cloned(), &format!("services.{name}.after"), problem)
        })?;
        let steps = convert("steps", raw.steps)?;
        let variants: Vec<Variant> = raw
            .variants
            .into_iter()
            .map(|(name, v)| Variant { name, description: v.description, default: v.default })
            .collect();
        let step_names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
        let known_step = |s: &Spanned<String>, key: &str| -> Result<String, ScenarioError> {
            if step_names.contains(&s.get_ref().as_str()) {
                Ok(s.get_ref().clone())
            } else {
                Err(err(
                    Some(s.span()),
                    key,
                    format!("unknown step `{}`; the scenario's steps are: {}", s.get_ref(), step_names.join(", ")),
                ))
            }
        };

        if *raw.load.repeat.get_ref() == 0 {
            return Err(err(Some(raw.load.repeat.span()), "load.repeat", "must be at least 1".into()));
        }
        let exit_nonzero = match &raw.failure.exit {
            None => false,
            Some(e) if e.get_ref() == "nonzero" => true,
            Some(e) => {
                return Err(err(
                    Some(e.span()),
                    "failure.exit",
                    format!("`{}` is not understood; use \"nonzero\"", e.get_ref()),
                ))
            }
        };
        if !exit_nonzero && raw.failure.output.is_none() {
            return Err(err(
                Some(raw.failure.step.span()),
                "failure",
                "give `exit = \"nonzero\"` or `output = \"TEXT\"`".into(),
            ));
        }
        let failure =
            Failure { step: known_step(&raw.failure.step, "failure.step")?, exit_nonzero, output: raw.failure.output };

        let process_names: Vec<&str> = services.iter().chain(steps.iter()).map(|p| p.name.as_str()).collect();
        let output_match = |m: RawOutputMatch, key: &str| -> Result<OutputMatch, ScenarioError> {
            if !process_names.contains(&m.process.get_ref().as_str()) {
                return Err(err(
                    Some(m.process.span()),
                    key,
                    format!("unknown service or step `{}`", m.process.get_ref()),
                ));
            }
            Ok(OutputMatch { process: m.process.into_inner(), text: m.output })
        };
        let gate = |g: RawGate, key: &str| -> Result<GateSpec, ScenarioError> {
            let step = known_step(&g.step, &format!("{key}.step"))?;
            if !GATEABLE_SYSCALLS.contains(&g.syscall.get_ref().as_str()) {
                return Err(err(
                    Some(g.syscall.span()),
                    &format!("{key}.syscall"),
                    format!(
                        "cannot gate `{}`; gateable syscalls: {}",
                        g.syscall.get_ref(),
                        GATEABLE_SYSCALLS.join(", ")
                    ),
                ));
            }
            let signal = match g.signal {
                None => None,
                Some(s) => Some(crate::signal_number(s.get_ref()).ok_or_else(|| {
                    err(Some(s.span()), &format!("{key}.signal"), format!("unknown signal `{}`", s.get_ref()))
                })?),
            };
            Ok(GateSpec {
                step,
                syscall: g.syscall.into_inner(),
                nth: g.nth.unwrap_or(1).max(1),
                signal,
                fd_at_least: g.fd_at_least,
                path: g.path,
            })
        };
        let hypothesis = match raw.hypothesis {
            None => None,
            Some(h) if h.variant.is_some() => {
                let variant = h.variant.expect("checked");
                if !variants.iter().any(|v| &v.name == variant.get_ref()) {
                    return Err(err(
                        Some(variant.span()),
                        "hypothesis.variant",
                        format!(
                            "unknown variant `{}`; declare it as [variants.{}]",
                            variant.get_ref(),
                            variant.get_ref()
                        ),
                    ));
                }
                let fails_when_on = match h.fails_when.as_ref().map(|f| f.get_ref().as_str()) {
                    Some("on") => true,
                    Some("off") => false,
                    _ => {
                        return Err(err(
                            h.fails_when.as_ref().map(|f| f.span()).or(Some(variant.span())),
                            "hypothesis.fails_when",
                            "say when the failure happens: \"on\" or \"off\" (the variant present or absent)".into(),
                        ))
                    }
                };
                Some(Hypothesis::State(StateHypothesis {
                    variant: variant.into_inner(),
                    fails_when_on,
                    runs: h.runs.max(1),
                }))
            }
            Some(h) if h.first.is_some() || h.then.is_some() => {
                let missing = |what: &str| {
                    err(
                        None,
                        &format!("hypothesis.{what}"),
                        "missing; an order hypothesis names `first` and `then`".into(),
                    )
                };
                let first = gate(h.first.ok_or_else(|| missing("first"))?, "hypothesis.first")?;
                let then = gate(h.then.ok_or_else(|| missing("then"))?, "hypothesis.then")?;
                let fails_when_after =
                    match h.fails_when.as_ref().map(|f| f.get_ref().as_str()) {
                        Some("after") => true,
                        Some("before") => false,
                        _ => return Err(err(
                            h.fails_when.as_ref().map(|f| f.span()),
                            "hypothesis.fails_when",
                            "say when the failure happens: \"after\" (first comes after then, or never) or \"before\""
                                .into(),
                        )),
                    };
                if let Some(vs) = &h.variants {
                    if let Some(unknown) = vs.get_ref().iter().find(|v| !variants.iter().any(|d| &d.name == *v)) {
                        return Err(err(
                            Some(vs.span()),
                            "hypothesis.variants",
                            format!("unknown variant `{unknown}`; declare it as [variants.{unknown}]"),
                        ));
                    }
                }
                Some(Hypothesis::Order(OrderHypothesis {
                    first,
                    then,
                    fails_when_after,
                    runs: h.runs.max(1),
                    variants: h.variants.map(|v| v.into_inner()),
                }))
            }
            Some(h) => {
                let missing = |what: &str| {
                    err(
                        None,
                        &format!("hypothesis.{what}"),
                        "missing; a hypothesis is `variant` + `fails_when`, `first` + `then` + `fails_when`, or \
                         `cause`, `victim`, `victim_count`, `effect_started`, `effect_done`"
                            .into(),
                    )
                };
                let victim = gate(h.victim.ok_or_else(|| missing("victim"))?, "hypothesis.victim")?;
                let victim_count = h.victim_count.ok_or_else(|| missing("victim_count"))?;
                if *victim_count.get_ref() < victim.nth {
                    return Err(err(
                        Some(victim_count.span()),
                        "hypothesis.victim_count",
                        format!("must be at least victim.nth ({})", victim.nth),
                    ));
                }
                let victim_begins = match h.victim_begins {
                    None => None,
                    Some(g) => {
                        let begins = gate(g, "hypothesis.victim_begins")?;
                        if begins.step != victim.step {
                            return Err(err(
                                None,
                                "hypothesis.victim_begins.step",
                                format!("must be the victim's step `{}`, not `{}`", victim.step, begins.step),
                            ));
                        }
                        Some(begins)
                    }
                };
                let started = h.effect_started.ok_or_else(|| missing("effect_started"))?;
                let done = h.effect_done.ok_or_else(|| missing("effect_done"))?;
                Some(Hypothesis::During(Box::new(During {
                    cause: gate(h.cause.ok_or_else(|| missing("cause"))?, "hypothesis.cause")?,
                    victim,
                    victim_count: victim_count.into_inner(),
                    victim_begins,
                    effect_started: output_match(started, "hypothesis.effect_started.process")?,
                    effect_done: output_match(done, "hypothesis.effect_done.process")?,
                    runs: h.runs.max(1),
                })))
            }
        };

        Ok(Scenario {
            name: raw.name,
            description: raw.description,
            hosts,
            services,
            steps,
            repeat: raw.load.repeat.into_inner(),
            failure,
            hypothesis,
            variants,
            text: text.to_string(),
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"name = "t"
[hosts.a]
[hosts.b]
[services.srv]
host = "a"
command = ["srv"]
ready = "listening"
[steps.w]
host = "b"
command = ["w"]
[steps.k]
host = "a"
command = ["k"]
[failure]
step = "w"
exit = "nonzero"
[hypothesis]
cause = { step = "k", syscall = "kill", signal = "SIGHUP" }
victim = { step = "w", syscall = "write", nth = 3, fd_at_least = 3 }
victim_count = 8
effect_started = { process = "srv", output = "reloading" }
effect_done = { process = "srv", output = "reloaded" }
"#;

    fn check_err(text: &str, expected: &str) {
        let got = Scenario::parse("s.toml", text).unwrap_err().to_string();
        assert_eq!(got, expected);
    }

    #[test]
    fn parses_a_good_scenario() {
        let s = Scenario::parse("s.toml", GOOD).unwrap();
        assert_eq!(s.hosts, vec!["a", "b"]);
        assert_eq!(s.repeat, 20);
        let Some(Hypothesis::During(h)) = s.hypothesis else { panic!("a during hypothesis") };
        assert_eq!(h.cause.signal, Some(1));
        assert_eq!(h.victim.nth, 3);
        assert_eq!(h.effect_started.process, "srv");
        assert!(s.steps.iter().all(|st| st.timeout_s == DEFAULT_STEP_TIMEOUT_S));
    }

    #[test]
    fn step_timeouts() {
        let s =
            Scenario::parse("s.toml", &GOOD.replace("command = [\"w\"]", "command = [\"w\"]\ntimeout = 90")).unwrap();
        let w = s.steps.iter().find(|st| st.name == "w").unwrap();
        assert_eq!(w.timeout_s, 90);
        check_err(
            &GOOD.replace("command = [\"w\"]", "command = [\"w\"]\ntimeout = 0"),
            "s.toml:11: steps.w.timeout: timeout must be at least 1 (seconds)",
        );
        check_err(
            &GOOD.replace("ready = \"listening\"", "ready = \"listening\"\ntimeout = 5"),
            "s.toml:8: services.srv.timeout: `timeout` is for steps; a service runs until the run ends",
        );
    }

    const STATE: &str = r#"name = "t"
[hosts.a]
[variants.statd]
description = "the status daemon runs"
[services.lockd]
host = "a"
command = ["lockd"]
after = ["statd"]
[services.statd]
host = "a"
command = ["statd"]
variant = "statd"
[steps.w]
host = "a"
command = ["w"]
[failure]
step = "w"
exit = "nonzero"
[hypothesis]
variant = "statd"
fails_when = "off"
"#;

    #[test]
    fn state_hypotheses_variants_and_service_order() {
        let s = Scenario::parse("s.toml", STATE).unwrap();
        let order: Vec<_> = s.services.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(order, vec!["statd", "lockd"], "lockd waits for statd");
        assert_eq!(s.services[0].variant.as_deref(), Some("statd"));
        assert!(s.default_variants().is_empty());
        let Some(Hypothesis::State(h)) = s.hypothesis else { panic!("a state hypothesis") };
        assert_eq!((h.variant.as_str(), h.fails_when_on, h.runs), ("statd", false, 5));
        check_err(
            &STATE.replace("variant = \"statd\"\n[steps", "variant = \"nfs\"\n[steps"),
            "s.toml:12: services.statd.variant: unknown variant `nfs`; declare it as [variants.nfs] (declared: statd)",
        );
        check_err(
            &STATE.replace("after = [\"statd\"]", "after = [\"lockd\"]"),
            "s.toml:8: services.lockd.after: services wait for each other in a cycle",
        );
        check_err(
            &STATE.replace("fails_when = \"off\"", "fails_when = \"never\""),
            "s.toml:21: hypothesis.fails_when: say when the failure happens: \"on\" or \"off\" (the variant present or absent)",
        );
    }

    #[test]
    fn errors_name_file_line_and_key() {
        check_err(
            &GOOD.replace("host = \"b\"", "host = \"c\""),
            "s.toml:9: steps.w.host: unknown host `c`; the scenario's hosts are: a, b",
        );
        check_err(
            &GOOD.replace("step = \"w\"\nexit", "step = \"x\"\nexit"),
            "s.toml:15: failure.step: unknown step `x`; the scenario's steps are: k, w",
        );
        check_err(
            &GOOD.replace("\"SIGHUP\"", "\"SIGNOPE\""),
            "s.toml:18: hypothesis.cause.signal: unknown signal `SIGNOPE`",
        );
        check_err(
            &GOOD.replace("ready =", "redy ="),
            "s.toml:7: redy: unknown field `redy`, expected one of `host`, `command`, `ready`, `after`, `variant`, `ptrace`, `timeout`",
        );
        check_err(&GOOD.replace("[steps.k]", "[steps.k"), "s.toml:11: syntax: invalid table header\nexpected `.`, `]`");
    }

    #[test]
    fn hypotheses_round_trip_through_inline_toml() {
        for name in ["mountd-sighup", "lost-wakeup", "butterfly", "cron-twin", "statd-flock"] {
            let path = format!("{}/scenarios/{name}.toml", env!("CARGO_MANIFEST_DIR"));
            let s = Scenario::load(Path::new(&path)).unwrap();
            let h = s.hypothesis.clone().unwrap();
            let inline = h.to_inline_toml();
            let again = s.with_hypothesis(&path, &inline).unwrap_or_else(|e| panic!("{name}: {e}\n{inline}"));
            let h2 = again.hypothesis.unwrap();
            assert!(h.same_cause(&h2), "{name}: {inline}");
            assert_eq!(h2.to_inline_toml(), inline, "{name}");
            assert_eq!(again.text, s.text);
        }
        // Story 2's stream begins at its connect; a victim_begins of another step is an error.
        let path = format!("{}/scenarios/lost-wakeup.toml", env!("CARGO_MANIFEST_DIR"));
        let s = Scenario::load(Path::new(&path)).unwrap();
        let Some(Hypothesis::During(d)) = &s.hypothesis else { panic!("during") };
        let begins = d.victim_begins.clone().expect("victim_begins");
        assert_eq!((begins.step.as_str(), begins.syscall.as_str(), begins.nth), ("upload", "connect", 1));
        let inline = s
            .hypothesis
            .as_ref()
            .unwrap()
            .to_inline_toml()
            .replace("victim_begins = { step = \"upload\"", "victim_begins = { step = \"healthcheck\"");
        let e = s.with_hypothesis(&path, &inline).unwrap_err();
        assert_eq!(e.key, "--hypothesis hypothesis.victim_begins.step", "{e}");

        let s = Scenario::parse("s.toml", GOOD).unwrap();
        let e = s.with_hypothesis("s.toml", "{ variant = \"nope\", fails_when = \"off\" }").unwrap_err();
        assert_eq!(e.key, "--hypothesis hypothesis.variant", "{e}");
        assert!(s.with_hypothesis("s.toml", "not toml").unwrap_err().to_string().contains("inline table"));
    }
}
