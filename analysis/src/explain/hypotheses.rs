//! Hypothesis builders: the gate points, variants and effect lines that would let `heisen verify`
//! enforce a candidate with the capture's scenario, or why it cannot.

use std::collections::BTreeSet;

use heisen_recordings::{BetweenHypothesis, During, GateSpec, Hypothesis, OrderHypothesis, OutputMatch};

use super::Context;
use crate::align::{before, connection_of, file_open_of, gate_step, stable_text, Role, RunSigs};
use crate::error::Unverifiable;

/// The gate point that holds the `nth` occurrence of signature `at`.
pub(crate) fn gate_of(ctx: &Context<'_>, at: usize, nth: u32) -> Result<GateSpec, Unverifiable> {
    let sig = &ctx.aligned.sigs[at];
    let (syscall, signal, fd_at_least) =
        sig.gate.clone().ok_or_else(|| Unverifiable::NotGateable { what: sig.what.clone() })?;
    let step = gate_step(ctx.bundle, ctx.scenario, &sig.role)?;
    ready_before(ctx, at, nth)?;
    Ok(GateSpec { step, syscall, nth, signal, fd_at_least, path: sig.object.clone() })
}

/// A service is held only once it is ready: verify starts the run's steps (and its schedule) after
/// every service has printed its `ready` line, so a hold before that line would stall the start.
/// Every run with the `nth` occurrence of `at` must have the service's ready line before it.
fn ready_before(ctx: &Context<'_>, at: usize, nth: u32) -> Result<(), Unverifiable> {
    let sig = &ctx.aligned.sigs[at];
    let Some(ready) = ctx
        .scenario
        .and_then(|s| s.services.iter().find(|p| p.name == sig.role.process && sig.role.cron_command.is_none()))
        .and_then(|p| p.ready.clone())
    else {
        return Ok(());
    };
    for (run, rs) in &ctx.aligned.runs {
        let Some(occ) = rs.gateable.get(&at).and_then(|o| o.get(nth as usize - 1)) else { continue };
        let ready_at =
            rs.outputs.iter().find(|(role, line, _)| *role == sig.role && line.contains(&ready)).map(|(_, _, o)| o);
        if ready_at.is_none_or(|r| before(r, occ) != Some(true)) {
            return Err(Unverifiable::BeforeReady {
                process: sig.role.process.clone(),
                what: format!("{} #{nth}", sig.what),
                ready,
                run: *run,
            });
        }
    }
    Ok(())
}

/// Variants for verify runs when a gated step stands in for a cron job: the steps' variants on,
/// the cron daemons' off. None when the scenario's defaults do.
pub(crate) fn variants_for(ctx: &Context<'_>, roles: &[&Role], steps: &[&str]) -> Option<Vec<String>> {
    let s = ctx.scenario?;
    let mut v = s.default_variants();
    let before = v.clone();
    for role in roles.iter().filter(|r| r.cron_command.is_some()) {
        if let Some(off) = s.process(&role.process).and_then(|p| p.variant.clone()) {
            v.retain(|x| *x != off);
        }
    }
    for step in steps {
        if let Some(on) = s.process(step).and_then(|p| p.variant.clone()) {
            if !v.contains(&on) {
                v.push(on);
            }
        }
    }
    (v != before).then_some(v)
}

/// The victim role's first gateable call on `b`'s file after `a`'s first occurrence, as
/// (signature, nth occurrence of it), the one most failing runs agree on. None when `b` names
/// no file or no failing run orders such a call after `a`.
fn next_call_on_object(ctx: &Context<'_>, a: usize, b: usize) -> Option<(usize, u32)> {
    let sigs = &ctx.aligned.sigs;
    let object = sigs[b].object.as_ref()?;
    let same: Vec<usize> =
        (0..sigs.len()).filter(|s| sigs[*s].role == sigs[b].role && sigs[*s].object.as_ref() == Some(object)).collect();
    let mut votes: std::collections::BTreeMap<(usize, u32), usize> = std::collections::BTreeMap::new();
    for run in ctx.failing {
        let Some(rs) = ctx.aligned.runs.get(run) else { continue };
        let Some(cause) = rs.first.get(&a) else { continue };
        let next = same
            .iter()
            .filter_map(|s| {
                let occs = rs.gateable.get(s)?;
                let i = occs.iter().position(|o| before(cause, o) == Some(true))?;
                Some((occs[i].at.earliest_ns, occs[i].seq, *s, i as u32 + 1))
            })
            .min();
        if let Some((_, _, sig, nth)) = next {
            *votes.entry((sig, nth)).or_default() += 1;
        }
    }
    votes.into_iter().max_by_key(|(key, n)| (*n, std::cmp::Reverse(*key))).map(|(key, _)| key)
}

pub(crate) fn runs_wanted(ctx: &Context<'_>) -> u32 {
    ctx.scenario.and_then(|s| s.hypothesis.as_ref()).map(|h| h.runs()).unwrap_or(5)
}

pub(crate) fn order_hypothesis(ctx: &Context<'_>, first: usize, then: usize) -> Result<Hypothesis, Unverifiable> {
    let sigs = &ctx.aligned.sigs;
    let (f, t) = (gate_of(ctx, first, 1)?, gate_of(ctx, then, 1)?);
    let variants = variants_for(ctx, &[&sigs[first].role, &sigs[then].role], &[&f.step, &t.step]);
    Ok(Hypothesis::Order(OrderHypothesis {
        first: f,
        then: t,
        fails_when_after: true,
        settle_call: false,
        runs: runs_wanted(ctx),
        variants,
    }))
}

/// `cause` after `opens` and before `closes`, two calls of one process: each at its first
/// occurrence, as the predicate reads them.
pub(crate) fn between_hypothesis(
    ctx: &Context<'_>,
    cause: usize,
    opens: usize,
    closes: usize,
) -> Result<Hypothesis, Unverifiable> {
    let sigs = &ctx.aligned.sigs;
    // "Before the window" holds the window's process where its use of the file begins: a window
    // that opens at the copy's close of a log (its reads done) or at one of its reads began when
    // the copy opened the log, and a cause let go before that close could still land mid-copy.
    let opens = file_open_of(sigs, opens).unwrap_or(opens);
    let (c, o, e) = (gate_of(ctx, cause, 1)?, gate_of(ctx, opens, 1)?, gate_of(ctx, closes, 1)?);
    let variants = variants_for(ctx, &[&sigs[cause].role, &sigs[opens].role], &[&c.step, &o.step]);
    Ok(Hypothesis::Between(BetweenHypothesis { cause: c, opens: o, closes: e, runs: runs_wanted(ctx), variants }))
}

/// `a` during `b`'s occurrences: held until the middle one is in flight; the cause's effect is
/// read from the service output that followed it in a failing run.
pub(crate) fn during_hypothesis(
    ctx: &Context<'_>,
    a: usize,
    b: usize,
    run: Option<u32>,
    passing: &[u32],
) -> Result<Hypothesis, Unverifiable> {
    let sigs = &ctx.aligned.sigs;
    let count =
        passing.iter().filter_map(|r| ctx.aligned.runs.get(r)?.count.get(&b).copied()).max().unwrap_or(0).max(1);
    let cause = gate_of(ctx, a, 1)?;
    // On a named file, hold the victim where the cause came in the failing runs: at its first
    // call on that file after the cause (the write after the read it raced, the second half of a
    // file written in two). Otherwise at the middle of its stream.
    let victim = match next_call_on_object(ctx, a, b) {
        Some((sig, nth)) => gate_of(ctx, sig, nth)?,
        None => gate_of(ctx, b, count.div_ceil(2))?,
    };
    let count = count.max(victim.nth);
    let run = run.ok_or(Unverifiable::HoldsInNoFailingRun)?;
    // The effect: the first two different lines a service (the signal's target, for a signal)
    // printed after the cause. A failing run may end before the effect is over: then the other
    // runs say how it ends.
    // An effect is something a service also prints in passing runs: a line only failing runs
    // print (a recovery after an attach) is the symptom's aftermath, and "before" could never wait
    // for it.
    let normal: BTreeSet<(Role, String)> = passing
        .iter()
        .filter_map(|r| ctx.aligned.runs.get(r))
        .flat_map(|rs| rs.outputs.iter().map(|(role, line, _)| (role.clone(), stable_text(line))))
        .collect();
    let effect = |rs: &RunSigs| -> Option<(Role, String, String)> {
        let at = rs.first.get(&a)?;
        let target_role = at.target.and_then(|pid| rs.roles.get(&(at.host, pid)));
        let mut after = rs.outputs.iter().filter(|(role, line, o)| {
            before(at, o) == Some(true)
                && role.cron_command.is_none()
                && target_role.is_none_or(|t| t == role)
                && !stable_text(line).is_empty()
                && (normal.is_empty() || normal.contains(&(role.clone(), stable_text(line))))
                && ctx.scenario.is_some_and(|s| s.services.iter().any(|p| p.name == role.process))
        });
        let (role, started, _) = after.next()?;
        let (_, done, _) = after.find(|(r, l, _)| r == role && stable_text(l) != stable_text(started))?;
        Some((role.clone(), stable_text(started), stable_text(done)))
    };
    let runs = std::iter::once(run).chain(ctx.aligned.runs.keys().copied());
    let (effect_started, effect_done) = match runs.filter_map(|r| effect(ctx.aligned.runs.get(&r)?)).next() {
        Some((role, started, done)) => (
            Some(OutputMatch { process: role.process.clone(), text: started }),
            Some(OutputMatch { process: role.process, text: done }),
        ),
        // No service shows the effect: the cause's own step ending is its effect (a reader that
        // read the half-written file and failed), when that step is not the victim's.
        None if cause.step != victim.step => (None, None),
        None => return Err(Unverifiable::NoEffect),
    };
    // A stream of calls over a connection begins at the victim's connect: "before" holds it there.
    let victim_begins = connection_of(sigs, b).map(|c| gate_of(ctx, c, 1)).transpose()?;
    Ok(Hypothesis::During(Box::new(During {
        cause,
        victim,
        victim_count: count,
        victim_begins,
        effect_started,
        effect_done,
        runs: runs_wanted(ctx),
    })))
}
