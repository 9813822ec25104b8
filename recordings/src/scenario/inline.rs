//! A hypothesis as a TOML inline table: how explain writes one out and what `heisen verify
//! --hypothesis` reads back (through the scenario parser, so both sides agree).

use super::{GateSpec, Hypothesis};

impl Hypothesis {
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
                let effects = [("effect_started", &h.effect_started), ("effect_done", &h.effect_done)];
                for (key, m) in effects.into_iter().filter_map(|(k, m)| Some((k, m.as_ref()?))) {
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
                if h.settle_call {
                    fields.push(format!("settle = {}", quote("call")));
                }
                push_variants(&mut fields, &h.variants);
            }
            Hypothesis::Between(h) => {
                fields.push(format!("cause = {}", h.cause.to_inline_toml()));
                fields.push(format!("opens = {}", h.opens.to_inline_toml()));
                fields.push(format!("closes = {}", h.closes.to_inline_toml()));
                push_variants(&mut fields, &h.variants);
            }
        }
        fields.push(format!("runs = {}", self.runs()));
        format!("{{ {} }}", fields.join(", "))
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

fn push_variants(fields: &mut Vec<String>, variants: &Option<Vec<String>>) {
    if let Some(vs) = variants {
        let vs: Vec<String> = vs.iter().map(|v| quote(v)).collect();
        fields.push(format!("variants = [{}]", vs.join(", ")));
    }
}

/// A TOML basic string.
pub(super) fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}
