//! Where a hypothesis's gate points fell in one recorded run: the order `heisen replay` enforces.

use std::collections::BTreeMap;

use heisen_recordings::{Bundle, GateSpec, Hypothesis, Scenario};

use crate::align::{align, before, gate_step, Occ};
use crate::AnalysisError;

/// How a hypothesis's gate points were ordered in one recorded run: what replay enforces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// `during`: the cause came after `done` victim calls had completed; the next victim call
    /// (if any) came while the cause's effect was still under way (`effect_over` false) or after
    /// it had ended (true).
    During { done: u32, effect_over: bool, victims: u32 },
    /// `order`: which gate point came first, or `None` when `first` never happened.
    Order { first_first: Option<bool> },
    /// `state`: whether the variant was on.
    State { on: bool },
    /// `between`: where the cause fell against the window.
    Between { place: Place },
}

/// Where a cause fell against a window of two calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    Before,
    Inside,
    After,
}

/// The recorded order of `h`'s gate points in run `run` of the bundle.
pub fn recorded(bundle: &Bundle, scenario: &Scenario, run: u32, h: &Hypothesis) -> Result<Recorded, AnalysisError> {
    let outcome = bundle.runs.iter().find(|r| r.run == run).ok_or_else(|| AnalysisError::NoSuchRun {
        capture: bundle.capture_id.clone(),
        run,
        runs: bundle.runs.len(),
    })?;
    let aligned = align(bundle, &[run], &BTreeMap::new());
    let rs = &aligned.runs[&run];
    // The occurrences of a gate point's signature in the run (cron jobs count as the step that
    // runs their command by hand).
    let occs = |g: &GateSpec| -> Vec<&Occ> {
        let mut out: Vec<&Occ> = rs
            .gateable
            .iter()
            .filter(|(id, _)| {
                let sig = &aligned.sigs[**id];
                sig.gate.as_ref().is_some_and(|(call, signal, fd)| {
                    *call == g.syscall
                        && (g.signal.is_none() || *signal == g.signal)
                        && (g.fd_at_least.is_none() || *fd == g.fd_at_least)
                }) && (g.path.is_none() || sig.object == g.path)
                    && gate_step(bundle, Some(scenario), &sig.role).is_ok_and(|st| st == g.step)
            })
            .flat_map(|(_, v)| v.iter())
            .collect();
        out.sort_by_key(|o| (o.at.earliest_ns, o.seq));
        out
    };
    match h {
        Hypothesis::State(s) => {
            let on = if !outcome.variants.is_empty() {
                outcome.variants.contains(&s.variant)
            } else {
                // Bundles of older heisen: the ordering's name said it (`with-X`), a free run had
                // the defaults.
                match &outcome.ordering {
                    Some(name) => name == &format!("with-{}", s.variant),
                    None => scenario.default_variants().contains(&s.variant),
                }
            };
            Ok(Recorded::State { on })
        }
        Hypothesis::Order(o) => {
            let (first, then) = (occs(&o.first), occs(&o.then));
            let Some(f) = first.first() else { return Ok(Recorded::Order { first_first: None }) };
            let t = then.first().ok_or_else(|| AnalysisError::NoReference {
                run,
                syscall: o.then.syscall.clone(),
                step: o.then.step.clone(),
            })?;
            match before(f, t) {
                Some(first_first) => Ok(Recorded::Order { first_first: Some(first_first) }),
                None => Err(AnalysisError::Concurrent {
                    run,
                    first_step: o.first.step.clone(),
                    first_syscall: o.first.syscall.clone(),
                    then_step: o.then.step.clone(),
                    then_syscall: o.then.syscall.clone(),
                }),
            }
        }
        Hypothesis::Between(b) => {
            let first = |g: &GateSpec| {
                occs(g).first().copied().ok_or_else(|| AnalysisError::NoReference {
                    run,
                    syscall: g.syscall.clone(),
                    step: g.step.clone(),
                })
            };
            let c = occs(&b.cause).first().copied().ok_or_else(|| AnalysisError::NoCause {
                run,
                syscall: b.cause.syscall.clone(),
                step: b.cause.step.clone(),
            })?;
            let (opens, closes) = (first(&b.opens)?, first(&b.closes)?);
            let concurrent = |other: &GateSpec| AnalysisError::Concurrent {
                run,
                first_step: b.cause.step.clone(),
                first_syscall: b.cause.syscall.clone(),
                then_step: other.step.clone(),
                then_syscall: other.syscall.clone(),
            };
            let place = match (before(c, opens), before(c, closes)) {
                (Some(true), _) => Place::Before,
                (Some(false), Some(true)) => Place::Inside,
                (Some(false), Some(false)) => Place::After,
                (None, _) => return Err(concurrent(&b.opens)),
                (_, None) => return Err(concurrent(&b.closes)),
            };
            Ok(Recorded::Between { place })
        }
        Hypothesis::During(d) => {
            let cause = occs(&d.cause);
            let c = cause.first().ok_or_else(|| AnalysisError::NoCause {
                run,
                syscall: d.cause.syscall.clone(),
                step: d.cause.step.clone(),
            })?;
            let victims = occs(&d.victim);
            let done = victims.iter().take_while(|v| before(v, c) == Some(true)).count() as u32;
            let next = victims.get(done as usize);
            let effect_over = match &d.effect_done {
                Some(m) => rs.outputs.iter().any(|(role, line, o)| {
                    role.process == m.process
                        && line.contains(&m.text)
                        && before(c, o) == Some(true)
                        && next.is_none_or(|n| before(o, n) == Some(true))
                }),
                // The effect is the cause's step exiting: over when no victim call followed.
                None => next.is_none(),
            };
            Ok(Recorded::During { done, effect_over, victims: victims.len() as u32 })
        }
    }
}
