//! The scenario file as TOML spells it, before any check: spans kept for file/line errors.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawScenario {
    pub(super) name: String,
    #[serde(default)]
    pub(super) description: String,
    pub(super) hosts: BTreeMap<String, RawHost>,
    #[serde(default)]
    pub(super) services: BTreeMap<String, RawProcess>,
    pub(super) steps: BTreeMap<String, RawProcess>,
    #[serde(default)]
    pub(super) load: RawLoad,
    pub(super) failure: RawFailure,
    pub(super) hypothesis: Option<RawHypothesis>,
    #[serde(default)]
    pub(super) variants: BTreeMap<String, RawVariant>,
    /// What every host records: syscall classes and names, as `heisen capture --syscalls`.
    pub(super) syscalls: Option<Spanned<Vec<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVariant {
    #[serde(default)]
    pub(super) description: String,
    #[serde(default)]
    pub(super) default: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHost {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProcess {
    pub(super) host: Spanned<String>,
    pub(super) command: Spanned<Vec<String>>,
    pub(super) ready: Option<String>,
    pub(super) after: Option<Spanned<Vec<String>>>,
    pub(super) variant: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) ptrace: bool,
    pub(super) timeout: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLoad {
    #[serde(default = "default_repeat")]
    pub(super) repeat: Spanned<u32>,
}

impl Default for RawLoad {
    fn default() -> Self {
        RawLoad { repeat: Spanned::new(0..0, default_repeat_value()) }
    }
}

pub(super) fn default_repeat_value() -> u32 {
    20
}

pub(super) fn default_repeat() -> Spanned<u32> {
    Spanned::new(0..0, default_repeat_value())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFailure {
    pub(super) step: Spanned<String>,
    pub(super) exit: Option<Spanned<RawExit>>,
    pub(super) signal: Option<Spanned<OneOrMany<String>>>,
    pub(super) output: Option<String>,
    pub(super) output_regex: Option<Spanned<String>>,
    #[serde(rename = "match")]
    pub(super) combine: Option<Spanned<String>>,
}

/// `exit = 3`, `exit = [1, 3]` or `exit = "nonzero"`.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawExit {
    Code(i64),
    Codes(Vec<i64>),
    Word(String),
}

/// A value given alone or as a list: `signal = "SIGSEGV"`, `signal = ["SIGSEGV", "SIGABRT"]`.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGate {
    pub(super) step: Spanned<String>,
    pub(super) syscall: Spanned<String>,
    pub(super) nth: Option<u32>,
    pub(super) signal: Option<Spanned<String>>,
    pub(super) fd_at_least: Option<u64>,
    pub(super) path: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOutputMatch {
    pub(super) process: Spanned<String>,
    pub(super) output: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHypothesis {
    // `during`: a cause lands while the victim's operations are in flight.
    pub(super) cause: Option<RawGate>,
    pub(super) victim: Option<RawGate>,
    pub(super) victim_count: Option<Spanned<u32>>,
    pub(super) victim_begins: Option<RawGate>,
    pub(super) effect_started: Option<RawOutputMatch>,
    pub(super) effect_done: Option<RawOutputMatch>,
    // `order`: the failure depends on whether `first` comes before `then`.
    pub(super) first: Option<RawGate>,
    pub(super) then: Option<RawGate>,
    // `between`: the cause fails the run between two calls of one step (with `cause`).
    pub(super) opens: Option<RawGate>,
    pub(super) closes: Option<RawGate>,
    pub(super) variants: Option<Spanned<Vec<String>>>,
    // `state`: the failure depends on a variant being on or off.
    pub(super) variant: Option<Spanned<String>>,
    pub(super) fails_when: Option<Spanned<String>>,
    // `order`: how far the passing ordering's leading side goes first: "step" or "call".
    pub(super) settle: Option<Spanned<String>>,
    #[serde(default = "default_runs")]
    pub(super) runs: u32,
}

pub(super) fn default_runs() -> u32 {
    5
}
