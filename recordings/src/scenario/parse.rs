//! From TOML text to a checked [`Scenario`]: every cross-reference (hosts, steps, services,
//! variants, gateable syscalls, signals) is checked, and an error names the file, line and key.

use std::collections::BTreeMap;
use std::ops::Range;

use toml::Spanned;

use super::raw::{
    OneOrMany, RawExit, RawFailure, RawGate, RawHypothesis, RawOutputMatch, RawProcess, RawScenario, RawVariant,
};
use super::{
    line_of, start_order, BetweenHypothesis, During, ExitMatch, Failure, GateSpec, Hypothesis, OrderHypothesis,
    OutputMatch, Process, Scenario, ScenarioError, StateHypothesis, Variant, DEFAULT_STEP_TIMEOUT_S,
};

/// The text being parsed, for errors with their place.
struct Source<'a> {
    path: &'a str,
    text: &'a str,
}

impl Source<'_> {
    fn err(&self, span: Option<Range<usize>>, key: &str, message: String) -> ScenarioError {
        ScenarioError {
            path: self.path.to_string(),
            line: span.filter(|s| s.end > 0).map(|s| line_of(self.text, s.start)),
            key: key.to_string(),
            message,
        }
    }
}

/// What later sections may refer to.
struct Names {
    steps: Vec<String>,
    /// Services and steps.
    processes: Vec<String>,
    variants: Vec<String>,
}

impl Scenario {
    /// Parses and checks scenario text; `path` names it in errors.
    pub fn parse(path: &str, text: &str) -> Result<Scenario, ScenarioError> {
        let src = Source { path, text };
        let raw: RawScenario = toml::from_str(text).map_err(|e| {
            let message = e.message().to_string();
            let key = message
                .split_once("field `")
                .and_then(|(_, rest)| rest.split('`').next())
                .unwrap_or("syntax")
                .to_string();
            src.err(e.span(), &key, message)
        })?;

        let hosts: Vec<String> = raw.hosts.keys().cloned().collect();
        if hosts.is_empty() {
            return Err(src.err(None, "hosts", "at least one host is needed, e.g. `[hosts.server]`".into()));
        }
        let after_spans: BTreeMap<String, Range<usize>> =
            raw.services.iter().filter_map(|(n, p)| Some((n.clone(), p.after.as_ref()?.span()))).collect();
        let services = processes(&src, "services", raw.services, &hosts, &raw.variants)?;
        let services = start_order(services).map_err(|(name, problem)| {
            src.err(after_spans.get(&name).cloned(), &format!("services.{name}.after"), problem)
        })?;
        let steps = processes(&src, "steps", raw.steps, &hosts, &raw.variants)?;
        let variants: Vec<Variant> = raw
            .variants
            .into_iter()
            .map(|(name, v)| Variant { name, description: v.description, default: v.default })
            .collect();
        let names = Names {
            steps: steps.iter().map(|s| s.name.clone()).collect(),
            processes: services.iter().chain(steps.iter()).map(|p| p.name.clone()).collect(),
            variants: variants.iter().map(|v| v.name.clone()).collect(),
        };
        if *raw.load.repeat.get_ref() == 0 {
            return Err(src.err(Some(raw.load.repeat.span()), "load.repeat", "must be at least 1".into()));
        }
        let failure = failure(&src, &names, raw.failure)?;
        let syscalls = match raw.syscalls {
            None => Vec::new(),
            Some(list) => {
                let span = list.span();
                let list = list.into_inner();
                crate::expand_syscalls(&list).map_err(|bad| {
                    let classes: Vec<&str> = crate::CLASSES.iter().map(|(c, _)| *c).collect();
                    let message = format!(
                        "`{bad}` is neither a syscall heisen records nor a class ({}, default)",
                        classes.join(", ")
                    );
                    src.err(Some(span), "syscalls", message)
                })?;
                list
            }
        };
        let hypothesis = raw.hypothesis.map(|h| hypothesis(&src, &names, h)).transpose()?;
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
            syscalls,
            text: text.to_string(),
            dir: None,
        })
    }
}

/// The services or steps (`section`) of a scenario, each checked.
fn processes(
    src: &Source<'_>,
    section: &str,
    map: BTreeMap<String, RawProcess>,
    hosts: &[String],
    variants: &BTreeMap<String, RawVariant>,
) -> Result<Vec<Process>, ScenarioError> {
    map.into_iter().map(|(name, p)| process(src, section, name, p, hosts, variants)).collect()
}

fn process(
    src: &Source<'_>,
    section: &str,
    name: String,
    p: RawProcess,
    hosts: &[String],
    variants: &BTreeMap<String, RawVariant>,
) -> Result<Process, ScenarioError> {
    if !hosts.contains(p.host.get_ref()) {
        return Err(src.err(
            Some(p.host.span()),
            &format!("{section}.{name}.host"),
            format!("unknown host `{}`; the scenario's hosts are: {}", p.host.get_ref(), hosts.join(", ")),
        ));
    }
    if p.command.get_ref().is_empty() {
        return Err(src.err(Some(p.command.span()), &format!("{section}.{name}.command"), "command is empty".into()));
    }
    if let (true, Some(after)) = (section == "steps", &p.after) {
        return Err(src.err(
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
            return Err(src.err(Some(t.span()), &format!("{section}.{name}.timeout"), problem.into()));
        }
    }
    if let Some(v) = &p.variant {
        if !variants.contains_key(v.get_ref()) {
            let known: Vec<_> = variants.keys().cloned().collect();
            return Err(src.err(
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
    Ok(Process {
        name,
        host: p.host.into_inner(),
        command: p.command.into_inner(),
        ready: p.ready,
        after: p.after.map(|a| a.into_inner()).unwrap_or_default(),
        variant: p.variant.map(|v| v.into_inner()),
        ptrace: p.ptrace,
        timeout_s: p.timeout.map(|t| t.into_inner()).unwrap_or(DEFAULT_STEP_TIMEOUT_S),
    })
}

fn known_step(src: &Source<'_>, names: &Names, s: &Spanned<String>, key: &str) -> Result<String, ScenarioError> {
    if names.steps.contains(s.get_ref()) {
        Ok(s.get_ref().clone())
    } else {
        Err(src.err(
            Some(s.span()),
            key,
            format!("unknown step `{}`; the scenario's steps are: {}", s.get_ref(), names.steps.join(", ")),
        ))
    }
}

fn failure(src: &Source<'_>, names: &Names, f: RawFailure) -> Result<Failure, ScenarioError> {
    let step = known_step(src, names, &f.step, "failure.step")?;
    let code = |c: i64, span: Range<usize>| {
        i32::try_from(c)
            .ok()
            .filter(|c| (0..=255).contains(c))
            .ok_or_else(|| src.err(Some(span), "failure.exit", format!("{c} is no exit code; exit codes are 0 to 255")))
    };
    let exit = match f.exit {
        None => None,
        Some(e) => {
            let span = e.span();
            Some(match e.into_inner() {
                RawExit::Word(w) if w == "nonzero" => ExitMatch::Nonzero,
                RawExit::Word(w) => {
                    return Err(src.err(
                        Some(span),
                        "failure.exit",
                        format!("`{w}` is not understood; use \"nonzero\", a code (3) or codes ([1, 3])"),
                    ))
                }
                RawExit::Code(c) => ExitMatch::Codes(vec![code(c, span)?]),
                RawExit::Codes(cs) if cs.is_empty() => {
                    return Err(src.err(Some(span), "failure.exit", "give at least one exit code".into()))
                }
                RawExit::Codes(cs) => {
                    ExitMatch::Codes(cs.into_iter().map(|c| code(c, span.clone())).collect::<Result<_, _>>()?)
                }
            })
        }
    };
    let mut signals = Vec::new();
    if let Some(sig) = f.signal {
        let span = sig.span();
        let names = match sig.into_inner() {
            OneOrMany::One(n) => vec![n],
            OneOrMany::Many(ns) => ns,
        };
        if names.is_empty() {
            return Err(src.err(Some(span), "failure.signal", "give at least one signal, e.g. \"SIGSEGV\"".into()));
        }
        for n in names {
            let number = crate::signal_number(&n)
                .ok_or_else(|| src.err(Some(span.clone()), "failure.signal", format!("unknown signal `{n}`")))?;
            signals.push(number);
        }
    }
    let output_regex =
        match f.output_regex {
            None => None,
            Some(r) => Some(regex::Regex::new(r.get_ref()).map_err(|e| {
                src.err(Some(r.span()), "failure.output_regex", format!("not a regular expression: {e}"))
            })?),
        };
    let all = match f.combine {
        None => false,
        Some(m) if m.get_ref() == "any" => false,
        Some(m) if m.get_ref() == "all" => true,
        Some(m) => {
            return Err(src.err(
                Some(m.span()),
                "failure.match",
                format!("`{}` is not understood; use \"any\" (one part is enough) or \"all\"", m.get_ref()),
            ))
        }
    };
    if exit.is_none() && signals.is_empty() && f.output.is_none() && output_regex.is_none() {
        return Err(src.err(
            Some(f.step.span()),
            "failure",
            "say when the run failed: `exit = \"nonzero\"` (or a code, or codes), `signal = \"SIGSEGV\"`, \
             `output = \"TEXT\"` or `output_regex = \"PATTERN\"`"
                .into(),
        ));
    }
    Ok(Failure { step, exit, signals, output: f.output, output_regex, all })
}

fn output_match(src: &Source<'_>, names: &Names, m: RawOutputMatch, key: &str) -> Result<OutputMatch, ScenarioError> {
    if !names.processes.contains(m.process.get_ref()) {
        return Err(src.err(Some(m.process.span()), key, format!("unknown service or step `{}`", m.process.get_ref())));
    }
    Ok(OutputMatch { process: m.process.into_inner(), text: m.output })
}

fn gate(src: &Source<'_>, names: &Names, g: RawGate, key: &str) -> Result<GateSpec, ScenarioError> {
    // A gate holds a step or a service (from its launch; verify holds a service once it is ready).
    if !names.processes.contains(g.step.get_ref()) {
        return Err(src.err(
            Some(g.step.span()),
            &format!("{key}.step"),
            format!(
                "unknown step or service `{}`; the scenario's processes are: {}",
                g.step.get_ref(),
                names.processes.join(", ")
            ),
        ));
    }
    let step = g.step.get_ref().clone();
    if !crate::gateable(g.syscall.get_ref()) {
        return Err(src.err(
            Some(g.syscall.span()),
            &format!("{key}.syscall"),
            format!(
                "cannot gate `{}`; gateable syscalls: {}",
                g.syscall.get_ref(),
                crate::gateable_syscalls().join(", ")
            ),
        ));
    }
    let signal = match g.signal {
        None => None,
        Some(s) => Some(crate::signal_number(s.get_ref()).ok_or_else(|| {
            src.err(Some(s.span()), &format!("{key}.signal"), format!("unknown signal `{}`", s.get_ref()))
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
}

/// A `[hypothesis]`: a state (`variant`), an order (`first`, `then`) or a during (`cause`, ...).
fn hypothesis(src: &Source<'_>, names: &Names, h: RawHypothesis) -> Result<Hypothesis, ScenarioError> {
    if h.variant.is_some() {
        state_hypothesis(src, names, h)
    } else if h.opens.is_some() || h.closes.is_some() {
        between_hypothesis(src, names, h)
    } else if h.first.is_some() || h.then.is_some() {
        order_hypothesis(src, names, h)
    } else {
        during_hypothesis(src, names, h)
    }
}

fn state_hypothesis(src: &Source<'_>, names: &Names, h: RawHypothesis) -> Result<Hypothesis, ScenarioError> {
    let variant = h.variant.expect("a state hypothesis names a variant");
    if !names.variants.contains(variant.get_ref()) {
        return Err(src.err(
            Some(variant.span()),
            "hypothesis.variant",
            format!("unknown variant `{}`; declare it as [variants.{}]", variant.get_ref(), variant.get_ref()),
        ));
    }
    let fails_when_on = match h.fails_when.as_ref().map(|f| f.get_ref().as_str()) {
        Some("on") => true,
        Some("off") => false,
        _ => {
            return Err(src.err(
                h.fails_when.as_ref().map(|f| f.span()).or(Some(variant.span())),
                "hypothesis.fails_when",
                "say when the failure happens: \"on\" or \"off\" (the variant present or absent)".into(),
            ))
        }
    };
    Ok(Hypothesis::State(StateHypothesis { variant: variant.into_inner(), fails_when_on, runs: h.runs.max(1) }))
}

fn order_hypothesis(src: &Source<'_>, names: &Names, h: RawHypothesis) -> Result<Hypothesis, ScenarioError> {
    let missing = |what: &str| {
        src.err(None, &format!("hypothesis.{what}"), "missing; an order hypothesis names `first` and `then`".into())
    };
    let first = gate(src, names, h.first.ok_or_else(|| missing("first"))?, "hypothesis.first")?;
    let then = gate(src, names, h.then.ok_or_else(|| missing("then"))?, "hypothesis.then")?;
    let fails_when_after = match h.fails_when.as_ref().map(|f| f.get_ref().as_str()) {
        Some("after") => true,
        Some("before") => false,
        _ => {
            return Err(src.err(
                h.fails_when.as_ref().map(|f| f.span()),
                "hypothesis.fails_when",
                "say when the failure happens: \"after\" (first comes after then, or never) or \"before\"".into(),
            ))
        }
    };
    let settle_call = match h.settle.as_ref().map(|s| s.get_ref().as_str()) {
        None | Some("step") => false,
        Some("call") => true,
        Some(_) => {
            return Err(src.err(
                h.settle.as_ref().map(|s| s.span()),
                "hypothesis.settle",
                "say how far the passing order's leading side goes before the other is released: \"step\" (its \
                 step ends; the default) or \"call\" (its call goes through and its step goes on)"
                    .into(),
            ))
        }
    };
    check_variants(src, names, &h.variants)?;
    Ok(Hypothesis::Order(OrderHypothesis {
        first,
        then,
        fails_when_after,
        settle_call,
        runs: h.runs.max(1),
        variants: h.variants.map(|v| v.into_inner()),
    }))
}

fn check_variants(src: &Source<'_>, names: &Names, vs: &Option<Spanned<Vec<String>>>) -> Result<(), ScenarioError> {
    if let Some(vs) = vs {
        if let Some(unknown) = vs.get_ref().iter().find(|v| !names.variants.contains(v)) {
            return Err(src.err(
                Some(vs.span()),
                "hypothesis.variants",
                format!("unknown variant `{unknown}`; declare it as [variants.{unknown}]"),
            ));
        }
    }
    Ok(())
}

/// `cause` between `opens` and `closes`, two calls of one step (`opens` first).
fn between_hypothesis(src: &Source<'_>, names: &Names, h: RawHypothesis) -> Result<Hypothesis, ScenarioError> {
    let missing = |what: &str| {
        src.err(
            None,
            &format!("hypothesis.{what}"),
            "missing; a three-point order names `cause`, `opens` and `closes` (the failure happens when the \
             cause lands after `opens` and before `closes`)"
                .into(),
        )
    };
    let cause = gate(src, names, h.cause.ok_or_else(|| missing("cause"))?, "hypothesis.cause")?;
    let opens = gate(src, names, h.opens.ok_or_else(|| missing("opens"))?, "hypothesis.opens")?;
    let closes = gate(src, names, h.closes.ok_or_else(|| missing("closes"))?, "hypothesis.closes")?;
    if opens.step != closes.step {
        return Err(src.err(
            None,
            "hypothesis.closes.step",
            format!(
                "must be the step of `opens` (`{}`), not `{}`: the window is between two calls of one process",
                opens.step, closes.step
            ),
        ));
    }
    if cause.step == opens.step {
        return Err(src.err(
            None,
            "hypothesis.cause.step",
            format!("must be another step than the window's (`{}`): one process cannot land inside itself", opens.step),
        ));
    }
    if let Some(other) = [
        ("first", h.first.is_some()),
        ("then", h.then.is_some()),
        ("victim", h.victim.is_some()),
        ("settle", h.settle.is_some()),
    ]
    .into_iter()
    .find_map(|(k, present)| present.then_some(k))
    {
        return Err(src.err(
            None,
            &format!("hypothesis.{other}"),
            "belongs to another form; a three-point order is `cause`, `opens`, `closes`".into(),
        ));
    }
    check_variants(src, names, &h.variants)?;
    Ok(Hypothesis::Between(BetweenHypothesis {
        cause,
        opens,
        closes,
        runs: h.runs.max(1),
        variants: h.variants.map(|v| v.into_inner()),
    }))
}

fn during_hypothesis(src: &Source<'_>, names: &Names, h: RawHypothesis) -> Result<Hypothesis, ScenarioError> {
    let missing = |what: &str| {
        src.err(
            None,
            &format!("hypothesis.{what}"),
            "missing; a hypothesis is `variant` + `fails_when`, `first` + `then` + `fails_when`, `cause` + \
             `opens` + `closes`, or `cause`, `victim`, `victim_count` (and `effect_started`, `effect_done` when \
             a service shows the effect)"
                .into(),
        )
    };
    let victim = gate(src, names, h.victim.ok_or_else(|| missing("victim"))?, "hypothesis.victim")?;
    let victim_count = h.victim_count.ok_or_else(|| missing("victim_count"))?;
    if *victim_count.get_ref() < victim.nth {
        return Err(src.err(
            Some(victim_count.span()),
            "hypothesis.victim_count",
            format!("must be at least victim.nth ({})", victim.nth),
        ));
    }
    let victim_begins = match h.victim_begins {
        None => None,
        Some(g) => {
            let begins = gate(src, names, g, "hypothesis.victim_begins")?;
            if begins.step != victim.step {
                return Err(src.err(
                    None,
                    "hypothesis.victim_begins.step",
                    format!("must be the victim's step `{}`, not `{}`", victim.step, begins.step),
                ));
            }
            Some(begins)
        }
    };
    // Without effect lines, the cause's step exiting is its effect: both lines or neither.
    let (effect_started, effect_done) = match (h.effect_started, h.effect_done) {
        (None, None) => (None, None),
        (Some(s), Some(d)) => (
            Some(output_match(src, names, s, "hypothesis.effect_started.process")?),
            Some(output_match(src, names, d, "hypothesis.effect_done.process")?),
        ),
        (None, Some(_)) => return Err(missing("effect_started")),
        (Some(_), None) => return Err(missing("effect_done")),
    };
    Ok(Hypothesis::During(Box::new(During {
        cause: gate(src, names, h.cause.ok_or_else(|| missing("cause"))?, "hypothesis.cause")?,
        victim,
        victim_count: victim_count.into_inner(),
        victim_begins,
        effect_started,
        effect_done,
        runs: h.runs.max(1),
    })))
}
