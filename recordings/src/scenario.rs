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
    /// The file's text, kept so bundles carry the scenario verbatim.
    pub text: String,
}

/// A service or step: a command on a host.
#[derive(Clone, Debug)]
pub struct Process {
    pub name: String,
    pub host: String,
    pub command: Vec<String>,
    /// Services: an output substring that means "ready".
    pub ready: Option<String>,
}

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
}

/// An ordering hypothesis: the cause (e.g. a SIGHUP) lands *during* the victim's operations.
#[derive(Clone, Debug)]
pub struct Hypothesis {
    pub cause: GateSpec,
    pub victim: GateSpec,
    /// The victim step's last occurrence number (for "after").
    pub victim_count: u32,
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
    cause: RawGate,
    victim: RawGate,
    victim_count: Spanned<u32>,
    effect_started: RawOutputMatch,
    effect_done: RawOutputMatch,
    #[serde(default = "default_runs")]
    runs: u32,
}

fn default_runs() -> u32 {
    5
}

/// Syscalls a gate can hold (the agent's seccomp filter knows these).
pub const GATEABLE_SYSCALLS: &[&str] =
    &["write", "pwrite64", "sendto", "sendmsg", "kill", "tgkill", "mount", "umount2", "flock", "openat"];

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
                out.push(Process { name, host: p.host.into_inner(), command: p.command.into_inner(), ready: p.ready });
            }
            Ok(out)
        };
        let services = convert("services", raw.services)?;
        let steps = convert("steps", raw.steps)?;
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
            })
        };
        let hypothesis = match raw.hypothesis {
            None => None,
            Some(h) => {
                let victim = gate(h.victim, "hypothesis.victim")?;
                if *h.victim_count.get_ref() < victim.nth {
                    return Err(err(
                        Some(h.victim_count.span()),
                        "hypothesis.victim_count",
                        format!("must be at least victim.nth ({})", victim.nth),
                    ));
                }
                Some(Hypothesis {
                    cause: gate(h.cause, "hypothesis.cause")?,
                    victim,
                    victim_count: h.victim_count.into_inner(),
                    effect_started: output_match(h.effect_started, "hypothesis.effect_started.process")?,
                    effect_done: output_match(h.effect_done, "hypothesis.effect_done.process")?,
                    runs: h.runs.max(1),
                })
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
            text: text.to_string(),
        })
    }

    /// The service or step called `name`.
    pub fn process(&self, name: &str) -> Option<&Process> {
        self.services.iter().chain(self.steps.iter()).find(|p| p.name == name)
    }
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
        let h = s.hypothesis.unwrap();
        assert_eq!(h.cause.signal, Some(1));
        assert_eq!(h.victim.nth, 3);
        assert_eq!(h.effect_started.process, "srv");
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
            "s.toml:7: redy: unknown field `redy`, expected one of `host`, `command`, `ready`",
        );
        check_err(&GOOD.replace("[steps.k]", "[steps.k"), "s.toml:11: syntax: invalid table header\nexpected `.`, `]`");
    }
}
