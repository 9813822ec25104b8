//! Schedules: the orderings `verify` enforces, derived from a scenario's hypothesis.
//!
//! A schedule is a sequence of actions over gate points on any host. The coordinator executes it;
//! the agents only hold and release.

use heisen_recordings::{
    BetweenHypothesis, During, GateSpec, Hypothesis, OrderHypothesis, OutputMatch, Scenario, StateHypothesis,
};

use crate::recorded::Place;
use crate::{AnalysisError, Recorded};

/// One step of a schedule.
#[derive(Clone, Debug)]
pub enum Action {
    /// Wait until a process is held at this gate point.
    Reached(GateSpec),
    /// Wait until held (if not yet), then release.
    Release(GateSpec),
    /// Wait until a service or step prints a line containing the text.
    Output(OutputMatch),
    /// Wait until a step has exited.
    Exit(String),
    /// Let a service play out what its released call started: wait until its output has been
    /// quiet for a moment (a service does not exit while its run lasts).
    Settle(String),
}

/// A named ordering: which gates to install and in which order to release them.
#[derive(Clone, Debug)]
pub struct Ordering {
    pub name: String,
    /// What the ordering is, in words, for the verdict table.
    pub description: String,
    pub gates: Vec<GateSpec>,
    pub actions: Vec<Action>,
    /// True for the hypothesis ordering (it should fail every time), false for the alternatives.
    pub expect_failure: bool,
    /// Environment variants on in this ordering's runs (their services run).
    pub variants: Vec<String>,
}

impl Ordering {
    /// The ordering with every gate's path passed through `expand` (a run's placeholders:
    /// `{shared}`, `{run}`, `{host:NAME}`), so a gate matches the path the process really uses.
    pub fn with_gate_paths(&self, expand: impl Fn(&str) -> String) -> Ordering {
        let gate = |g: &GateSpec| GateSpec { path: g.path.as_deref().map(&expand), ..g.clone() };
        Ordering {
            gates: self.gates.iter().map(gate).collect(),
            actions: self
                .actions
                .iter()
                .map(|a| match a {
                    Action::Reached(g) => Action::Reached(gate(g)),
                    Action::Release(g) => Action::Release(gate(g)),
                    other => other.clone(),
                })
                .collect(),
            ..self.clone()
        }
    }
}

/// The orderings that confirm or refute a scenario's hypothesis.
pub fn for_scenario(scenario: &Scenario, h: &Hypothesis) -> Vec<Ordering> {
    match h {
        Hypothesis::During(d) => {
            let mut out = during_orderings(scenario, d);
            for o in &mut out {
                o.variants = scenario.default_variants();
            }
            out
        }
        Hypothesis::State(s) => state_orderings(scenario, s),
        Hypothesis::Order(o) => order_orderings(scenario, o),
        Hypothesis::Between(b) => between_orderings(scenario, b),
    }
    .into_iter()
    .map(|o| services_go_on(scenario, o))
    .collect()
}

/// Whether `process` runs to its end within a run: a step does; a service runs until the run is
/// over, so "its end" is never waited for.
fn ends(scenario: &Scenario, process: &str) -> bool {
    !scenario.services.iter().any(|p| p.name == process)
}

/// A service does not exit while a run lasts: waiting for its end would only time out. Where a
/// schedule plays a step out, a service settles instead (its released call has gone through, and
/// what it started has quieted down).
fn services_go_on(scenario: &Scenario, mut o: Ordering) -> Ordering {
    for a in &mut o.actions {
        if let Action::Exit(p) = a {
            if !ends(scenario, p) {
                *a = Action::Settle(p.clone());
            }
        }
    }
    o
}

/// A three-point order: the cause held until the window's process is held at `closes` (so
/// `opens` is behind it), let run to its step's end, then `closes` released; the alternatives put
/// the cause, and its step's end, before `opens`, or release it once `closes` has been let go.
fn between_orderings(scenario: &Scenario, h: &BetweenHypothesis) -> Vec<Ordering> {
    let variants = h.variants.clone().unwrap_or_else(|| scenario.default_variants());
    let (cause, opens, closes) = (describe(&h.cause), describe(&h.opens), describe(&h.closes));
    let done = if ends(scenario, &h.cause.step) { "its step's end" } else { "what it started settled" };
    let cause = format!("{cause} and {done}");
    vec![
        Ordering {
            name: "between".into(),
            description: format!("{cause} after {opens}, before {closes}"),
            gates: vec![h.cause.clone(), h.closes.clone()],
            actions: vec![
                Action::Reached(h.closes.clone()),
                Action::Release(h.cause.clone()),
                Action::Exit(h.cause.step.clone()),
                Action::Release(h.closes.clone()),
            ],
            expect_failure: true,
            variants: variants.clone(),
        },
        Ordering {
            name: "before".into(),
            description: format!("{cause} before {opens}"),
            gates: vec![h.cause.clone(), h.opens.clone()],
            actions: vec![
                Action::Release(h.cause.clone()),
                Action::Exit(h.cause.step.clone()),
                Action::Release(h.opens.clone()),
            ],
            expect_failure: false,
            variants: variants.clone(),
        },
        Ordering {
            name: "after".into(),
            description: format!("{} after {closes}", describe(&h.cause)),
            gates: vec![h.cause.clone(), h.closes.clone()],
            actions: vec![Action::Release(h.closes.clone()), Action::Release(h.cause.clone())],
            expect_failure: false,
            variants,
        },
    ]
}

/// An order hypothesis: `first` released and done before `then` is released, the reverse, and,
/// when `first`'s step belongs to a variant, a run without it ("never").
fn order_orderings(scenario: &Scenario, h: &OrderHypothesis) -> Vec<Ordering> {
    let defaults = h.variants.clone().unwrap_or_else(|| scenario.default_variants());
    let variant_of = |step: &str| scenario.process(step).and_then(|p| p.variant.clone());
    // "Never" means first's step alone left out: only when its variant is its own.
    let first_variant = variant_of(&h.first.step).filter(|v| variant_of(&h.then.step).as_ref() != Some(v));
    let mut with_first = defaults.clone();
    if let Some(v) = &first_variant {
        if !with_first.contains(v) {
            with_first.push(v.clone());
        }
    }
    let gates = vec![h.first.clone(), h.then.clone()];
    // The ordering expected to fail plays its leading call out to its step's end before the
    // other call (a scan's deletes follow the scan). The one expected to pass does the same (a
    // job finishes its work first), unless the hypothesis says `settle = "call"`: then its
    // leading call goes through and its step goes on beside the other as in the passing runs (a
    // service's bind, then the check's connect: waiting for the service to exit would take away
    // what the check needs).
    let leading = |lead: &GateSpec, other: &GateSpec, fails: bool| -> (String, Vec<Action>) {
        let (a, b) = (describe(lead), describe(other));
        if fails || !h.settle_call {
            let actions =
                vec![Action::Release(lead.clone()), Action::Exit(lead.step.clone()), Action::Release(other.clone())];
            let done = if ends(scenario, &lead.step) { "its step complete" } else { "what it started settled" };
            (format!("{a} and {done} before {b}"), actions)
        } else {
            (
                format!("{a} goes through before {b}"),
                vec![Action::Release(lead.clone()), Action::Release(other.clone())],
            )
        }
    };
    let (first_text, first_actions) = leading(&h.first, &h.then, !h.fails_when_after);
    let (then_text, then_actions) = leading(&h.then, &h.first, h.fails_when_after);
    let mut out = vec![
        Ordering {
            name: format!("{}-first", h.first.step),
            description: first_text,
            gates: gates.clone(),
            actions: first_actions,
            expect_failure: !h.fails_when_after,
            variants: with_first.clone(),
        },
        Ordering {
            name: format!("{}-first", h.then.step),
            description: then_text,
            gates,
            actions: then_actions,
            expect_failure: h.fails_when_after,
            variants: with_first,
        },
    ];
    if let Some(v) = first_variant {
        out.push(Ordering {
            name: format!("without-{v}"),
            description: format!("{} never runs (variant {v} off)", h.first.step),
            gates: vec![],
            actions: vec![],
            expect_failure: h.fails_when_after,
            variants: defaults.into_iter().filter(|d| *d != v).collect(),
        });
    }
    // The guilty ordering first.
    out.sort_by_key(|o| !o.expect_failure);
    out
}

/// A state hypothesis: the same runs with the variant on and off; no gates.
fn state_orderings(scenario: &Scenario, h: &StateHypothesis) -> Vec<Ordering> {
    let others: Vec<String> = scenario.default_variants().into_iter().filter(|v| *v != h.variant).collect();
    let what = scenario
        .variants
        .iter()
        .find(|v| v.name == h.variant)
        .map(|v| if v.description.is_empty() { v.name.clone() } else { v.description.clone() })
        .unwrap_or_else(|| h.variant.clone());
    let with = Ordering {
        name: format!("with-{}", h.variant),
        description: format!("{what}: on"),
        gates: vec![],
        actions: vec![],
        expect_failure: h.fails_when_on,
        variants: others.iter().cloned().chain([h.variant.clone()]).collect(),
    };
    let without = Ordering {
        name: format!("without-{}", h.variant),
        description: format!("{what}: off"),
        gates: vec![],
        actions: vec![],
        expect_failure: !h.fails_when_on,
        variants: others,
    };
    // The guilty ordering first, as for `during`.
    if h.fails_when_on {
        vec![with, without]
    } else {
        vec![without, with]
    }
}

/// Waiting for the cause's effect: a service's line, or the cause's step exiting when the
/// hypothesis names no line.
fn effect(h: &During, m: &Option<OutputMatch>) -> Action {
    match m {
        Some(m) => Action::Output(m.clone()),
        None => Action::Exit(h.cause.step.clone()),
    }
}

/// The hypothesis ordering (`during`) and its alternatives (`before`, `after`). "After" waits
/// for the victim's step to exit; a service victim does not exit, so its last call (as many as
/// the passing runs made) is held instead and let go before the cause.
fn during_orderings(scenario: &Scenario, h: &During) -> Vec<Ordering> {
    let last = GateSpec { nth: h.victim_count, ..h.victim.clone() };
    let after = if ends(scenario, &h.victim.step) {
        Ordering {
            name: "after".into(),
            description: format!(
                "{} after the last of {} {}s (step exited)",
                describe(&h.cause),
                h.victim_count,
                h.victim.syscall
            ),
            gates: vec![h.cause.clone()],
            actions: vec![Action::Exit(h.victim.step.clone()), Action::Release(h.cause.clone())],
            expect_failure: false,
            variants: vec![],
        }
    } else {
        Ordering {
            name: "after".into(),
            description: format!("{} after {} went through", describe(&h.cause), describe(&last)),
            gates: vec![h.cause.clone(), last.clone()],
            actions: vec![Action::Release(last), Action::Release(h.cause.clone())],
            expect_failure: false,
            variants: vec![],
        }
    };
    let first = h.victim_begins.clone().unwrap_or_else(|| GateSpec { nth: 1, ..h.victim.clone() });
    let cause = describe(&h.cause);
    vec![
        Ordering {
            name: "during".into(),
            description: format!("{cause} held until {} is in flight", describe(&h.victim)),
            gates: vec![h.cause.clone(), h.victim.clone()],
            actions: vec![
                Action::Reached(h.victim.clone()),
                Action::Release(h.cause.clone()),
                effect(h, &h.effect_started),
                Action::Release(h.victim.clone()),
            ],
            expect_failure: true,
            variants: vec![],
        },
        Ordering {
            name: "before".into(),
            description: format!("{cause} and its effect complete before {}", describe(&first)),
            gates: vec![h.cause.clone(), first.clone()],
            actions: vec![Action::Release(h.cause.clone()), effect(h, &h.effect_done), Action::Release(first)],
            expect_failure: false,
            variants: vec![],
        },
        after,
    ]
}

/// The ordering that replays a recorded run: the same order of the hypothesis's gate points.
pub fn replay_ordering(scenario: &Scenario, h: &Hypothesis, rec: &Recorded) -> Result<Ordering, AnalysisError> {
    let pick = |all: Vec<Ordering>, name: &str| {
        all.into_iter().find(|o| o.name == name).ok_or_else(|| AnalysisError::NoOrdering { name: name.into() })
    };
    let mut o = match (h, rec) {
        (Hypothesis::State(s), Recorded::State { on }) => {
            pick(state_orderings(scenario, s), &format!("{}-{}", if *on { "with" } else { "without" }, s.variant))?
        }
        (Hypothesis::Order(x), Recorded::Order { first_first }) => {
            let all = order_orderings(scenario, x);
            match first_first {
                Some(true) => pick(all, &format!("{}-first", x.first.step))?,
                Some(false) => pick(all, &format!("{}-first", x.then.step))?,
                None => all
                    .into_iter()
                    .find(|o| o.name.starts_with("without-"))
                    .ok_or_else(|| AnalysisError::NeverRan { step: x.first.step.clone() })?,
            }
        }
        (Hypothesis::During(d), Recorded::During { done, effect_over, victims }) => {
            let mut o = if *done >= *victims {
                // The cause came after every victim call: hold it until the victim's step exits.
                pick(during_orderings(scenario, d), "after")?
            } else if *done == 0 && *effect_over {
                // Cause and effect were over before the victim's first call: hold the victim where
                // its operation begins until the effect is over.
                pick(during_orderings(scenario, d), "before")?
            } else {
                // Hold victim call done+1 until the cause is released and its effect has started
                // (or, when the recording shows it over by then, ended).
                let next = GateSpec { nth: done + 1, ..d.victim.clone() };
                let effect = effect(d, if *effect_over { &d.effect_done } else { &d.effect_started });
                Ordering {
                    name: format!("recorded-{}", done + 1),
                    description: format!(
                        "{} released after {done} of the victim's calls, {} {} is in flight",
                        describe(&d.cause),
                        if *effect_over { "its effect over before" } else { "its effect under way while" },
                        describe(&next)
                    ),
                    gates: vec![d.cause.clone(), next.clone()],
                    actions: vec![
                        Action::Reached(next.clone()),
                        Action::Release(d.cause.clone()),
                        effect,
                        Action::Release(next),
                    ],
                    expect_failure: !*effect_over,
                    variants: vec![],
                }
            };
            o.variants = scenario.default_variants();
            o
        }
        (Hypothesis::Between(b), Recorded::Between { place }) => {
            let name = match place {
                Place::Before => "before",
                Place::Inside => "between",
                Place::After => "after",
            };
            pick(between_orderings(scenario, b), name)?
        }
        _ => return Err(AnalysisError::RecordedMismatch),
    };
    o.description = format!("as recorded: {}", o.description);
    Ok(services_go_on(scenario, o))
}

/// `remount's kill(SIGHUP)`, `write's write #16`.
pub fn describe(g: &GateSpec) -> String {
    if let Some(path) = &g.path {
        return format!("{}'s {}({path})", g.step, g.syscall);
    }
    match g.signal {
        Some(sig) => format!("{}'s {}({})", g.step, g.syscall, heisen_recordings::signal_name(sig)),
        None => format!("{}'s {} #{}", g.step, g.syscall, g.nth),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gate point `nth` of a step's syscall, no argument or path condition.
    fn gate(step: &str, syscall: &str, nth: u32) -> GateSpec {
        GateSpec { step: step.into(), syscall: syscall.into(), nth, signal: None, fd_at_least: None, path: None }
    }

    #[test]
    fn alternatives_hold_the_first_victim_or_wait_for_exit() {
        let out = |t: &str| OutputMatch { process: "srv".into(), text: t.into() };
        let h = During {
            cause: GateSpec { signal: Some(1), ..gate("remount", "kill", 1) },
            victim: gate("write", "write", 16),
            victim_count: 32,
            victim_begins: None,
            effect_started: Some(out("reloading")),
            effect_done: Some(out("reloaded")),
            runs: 5,
        };
        let s = Scenario::parse(
            "s.toml",
            "name = \"t\"\n[hosts.a]\n[services.srv]\nhost = \"a\"\ncommand = [\"s\"]\n\
             [steps.remount]\nhost = \"a\"\ncommand = [\"r\"]\n\
             [steps.write]\nhost = \"a\"\ncommand = [\"w\"]\n[failure]\nstep = \"write\"\nexit = 1\n",
        )
        .unwrap();
        let o = for_scenario(&s, &Hypothesis::During(Box::new(h)));
        let names: Vec<_> =
            o.iter().map(|o| (o.name.as_str(), o.expect_failure, o.gates.len(), o.actions.len())).collect();
        assert_eq!(names, vec![("during", true, 2, 4), ("before", false, 2, 3), ("after", false, 1, 2)]);
        assert_eq!(o[1].gates[1].nth, 1);
        assert_eq!(o[0].description, "remount's kill(SIGHUP) held until write's write #16 is in flight");
    }

    /// A three-point order: the guilty ordering holds the window's process at its closing call
    /// (its opening call behind it) while the cause runs to its step's end; the alternatives put
    /// the cause before the opening call, or after the closing one has gone through.
    /// An ordering in a line: its name, whether it is expected to fail, its actions.
    fn shape(o: &Ordering) -> String {
        let acts: Vec<String> = o
            .actions
            .iter()
            .map(|a| match a {
                Action::Reached(g) => format!("reached {}", g.id()),
                Action::Release(g) => format!("release {}", g.id()),
                Action::Output(m) => format!("output {}", m.text),
                Action::Exit(s) => format!("exit {s}"),
                Action::Settle(s) => format!("settle {s}"),
            })
            .collect();
        format!("{} {} [{}]", o.name, o.expect_failure, acts.join(", "))
    }

    /// The ordering expected to fail runs its leading call's step to its end first; with `settle
    /// = "call"` the one expected to pass only lets its leading call go through: a service that
    /// binds and then serves must not be waited out before the check that needs it connects.
    #[test]
    fn only_the_failing_order_waits_for_its_leading_step_to_end() {
        let s = Scenario::parse(
            "s.toml",
            "name = \"t\"\n[hosts.a]\n[steps.deploy]\nhost = \"a\"\ncommand = [\"d\"]\n\
             [steps.check]\nhost = \"a\"\ncommand = [\"c\"]\n[failure]\nstep = \"check\"\nexit = 1\n",
        )
        .unwrap();
        let order = |fails_when_after| OrderHypothesis {
            first: gate("deploy", "bind", 1),
            then: gate("check", "connect", 1),
            fails_when_after,
            settle_call: true,
            runs: 5,
            variants: None,
        };
        let got: Vec<String> = for_scenario(&s, &Hypothesis::Order(order(true))).iter().map(shape).collect();
        assert_eq!(
            got,
            vec![
                "check-first true [release check:connect#1, exit check, release deploy:bind#1]",
                "deploy-first false [release deploy:bind#1, release check:connect#1]",
            ]
        );
        let got: Vec<String> = for_scenario(&s, &Hypothesis::Order(order(false))).iter().map(shape).collect();
        assert_eq!(
            got,
            vec![
                "deploy-first true [release deploy:bind#1, exit deploy, release check:connect#1]",
                "check-first false [release check:connect#1, release deploy:bind#1]",
            ]
        );
        // By default the passing order's leading step ends first too.
        let job = OrderHypothesis { settle_call: false, ..order(true) };
        let got: Vec<String> = for_scenario(&s, &Hypothesis::Order(job)).iter().map(shape).collect();
        assert_eq!(got[1], "deploy-first false [release deploy:bind#1, exit deploy, release check:connect#1]");
    }

    /// A service runs until its run is over: no schedule waits for it to exit. Its released call
    /// going through is where the schedule goes on, and "after" holds its last call instead.
    #[test]
    fn no_schedule_waits_for_a_service_to_exit() {
        let s = Scenario::parse(
            "s.toml",
            "name = \"t\"\n[hosts.a]\n[services.db]\nhost = \"a\"\ncommand = [\"d\"]\n\
             [steps.load]\nhost = \"a\"\ncommand = [\"l\"]\n[failure]\nstep = \"load\"\nexit = 1\n",
        )
        .unwrap();
        // The service's call is the victim: "after" holds its last one, never waits for its end.
        let during = During {
            cause: gate("load", "unlinkat", 1),
            victim: gate("db", "write", 3),
            victim_count: 6,
            victim_begins: None,
            effect_started: None,
            effect_done: None,
            runs: 5,
        };
        let got: Vec<String> =
            for_scenario(&s, &Hypothesis::During(Box::new(during.clone()))).iter().map(shape).collect();
        assert_eq!(
            got,
            vec![
                "during true [reached db:write#3, release load:unlinkat#1, exit load, release db:write#3]",
                "before false [release load:unlinkat#1, exit load, release db:write#1]",
                "after false [release db:write#6, release load:unlinkat#1]",
            ]
        );
        // The service's call is the cause: its effect is its call going through.
        let turned = During { cause: gate("db", "write", 1), victim: gate("load", "read", 2), ..during };
        let got: Vec<String> = for_scenario(&s, &Hypothesis::During(Box::new(turned))).iter().map(shape).collect();
        assert_eq!(
            got,
            vec![
                "during true [reached load:read#2, release db:write#1, settle db, release load:read#2]",
                "before false [release db:write#1, settle db, release load:read#1]",
                "after false [exit load, release db:write#1]",
            ]
        );
        let order = OrderHypothesis {
            first: gate("db", "bind", 1),
            then: gate("load", "connect", 1),
            fails_when_after: false,
            settle_call: false,
            runs: 5,
            variants: None,
        };
        let o = for_scenario(&s, &Hypothesis::Order(order));
        assert_eq!(shape(&o[0]), "db-first true [release db:bind#1, settle db, release load:connect#1]");
        assert_eq!(o[0].description, "db's bind #1 and what it started settled before load's connect #1");
    }

    #[test]
    fn a_window_holds_its_closing_call_while_the_cause_runs() {
        let s = Scenario::parse(
            "s.toml",
            "name = \"t\"\n[hosts.a]\n[steps.reload]\nhost = \"a\"\ncommand = [\"r\"]\n\
             [steps.restart]\nhost = \"a\"\ncommand = [\"s\"]\n[failure]\nstep = \"reload\"\nexit = 1\n",
        )
        .unwrap();
        let h = BetweenHypothesis {
            cause: gate("reload", "openat", 1),
            opens: GateSpec { signal: Some(15), ..gate("restart", "kill", 1) },
            closes: gate("restart", "renameat", 1),
            runs: 5,
            variants: None,
        };
        let o = for_scenario(&s, &Hypothesis::Between(h));
        let got: Vec<String> = o.iter().map(shape).collect();
        assert_eq!(
            got,
            vec![
                "between true [reached restart:renameat#1, release reload:openat#1, exit reload, release restart:renameat#1]",
                "before false [release reload:openat#1, exit reload, release restart:kill#1]",
                "after false [release restart:renameat#1, release reload:openat#1]",
            ]
        );
        assert_eq!(o[1].description, "reload's openat #1 and its step's end before restart's kill(SIGTERM)");
    }

    #[test]
    fn gate_paths_take_a_runs_placeholders_and_keep_the_rest() {
        let gate = |path: Option<&str>| GateSpec {
            step: "read".into(),
            syscall: "openat".into(),
            nth: 1,
            signal: None,
            fd_at_least: None,
            path: path.map(str::to_string),
        };
        let o = Ordering {
            name: "o".into(),
            description: String::new(),
            gates: vec![gate(Some("{shared}/cache-{run}")), gate(None)],
            actions: vec![Action::Release(gate(Some("{shared}/cache-{run}"))), Action::Exit("read".into())],
            expect_failure: true,
            variants: vec![],
        };
        let r = o.with_gate_paths(|p| p.replace("{shared}", "/mnt/s").replace("{run}", "7"));
        assert_eq!(r.gates[0].path.as_deref(), Some("/mnt/s/cache-7"));
        assert_eq!(r.gates[1].path, None);
        let Action::Release(g) = &r.actions[0] else { panic!("{:?}", r.actions) };
        assert_eq!(g.id(), "read:openat(/mnt/s/cache-7)#1");
        assert!(matches!(&r.actions[1], Action::Exit(s) if s == "read"));
    }
}
