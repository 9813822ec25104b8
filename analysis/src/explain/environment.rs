//! Environment candidates: differences between the failing host's snapshots and the baseline's
//! (the same host in passing runs, or the peer host in the same runs), with the variant that would
//! change the differing state.

use std::collections::BTreeMap;

use heisen_recordings::{GateSpec, Hypothesis, OrderHypothesis, Scenario, SnapshotAt, StateHypothesis};

use super::baseline::Baseline;
use super::hypotheses::runs_wanted;
use super::report::{share, Candidate, Count, Evidence};
use super::Context;
use crate::diff;
use crate::error::Unverifiable;

/// Environment differences of the failing host against the baseline (the same host in passing
/// runs, or the peer host in the same runs).
pub(crate) fn environment_candidates(ctx: &Context<'_>) -> (Vec<Candidate>, usize) {
    let Some(s) = ctx.scenario else { return (vec![], 0) };
    let env = |host: &str, run: u32| ctx.bundle.host(host)?.environments.iter().find(|e| e.at == SnapshotAt::Run(run));
    let failing_host = match ctx.baseline {
        Baseline::Peer { failing_host, .. } => failing_host.clone(),
        _ => match s.process(&s.failure.step) {
            Some(p) => p.host.clone(),
            None => return (vec![], 0),
        },
    };
    let mut pairs = Vec::new();
    for f in ctx.failing {
        match ctx.baseline {
            Baseline::Runs(passing) => {
                for p in passing.iter().take(20) {
                    pairs.push((*f, env(&failing_host, *f), env(&failing_host, *p)));
                }
            }
            Baseline::Peer { peer_host, .. } => pairs.push((*f, env(&failing_host, *f), env(peer_host, *f))),
            Baseline::None => {}
        }
    }
    let pairs: Vec<_> = pairs.into_iter().filter_map(|(r, a, b)| Some((r, a?, b?))).take(400).collect();
    // (category, subject, a, b) -> (pairs it differs in, the difference, the first run it did)
    type Seen = BTreeMap<(String, String, String, String), (usize, diff::Difference, u32)>;
    let mut seen: Seen = BTreeMap::new();
    for (run, a, b) in &pairs {
        for mut d in diff::compare(a, b) {
            // Per-run paths (`run-3`) are the same state in every run.
            (d.subject, d.a, d.b) = (with_run(&d.subject, *run), with_run(&d.a, *run), with_run(&d.b, *run));
            let key = (d.category.to_string(), d.subject.clone(), d.a.clone(), d.b.clone());
            seen.entry(key).or_insert((0, d, *run)).0 += 1;
        }
    }
    let base_name = match ctx.baseline {
        Baseline::Peer { peer_host, .. } => peer_host.clone(),
        _ => format!("{failing_host} in passing runs"),
    };
    let mut out = Vec::new();
    for (_, (n, d, run)) in seen {
        let f = Count { holds: n, of: pairs.len() };
        let sep = share(f);
        if sep < 0.5 {
            continue;
        }
        let rec = ctx.bundle.host(&failing_host);
        let at = rec.and_then(|h| h.environments.iter().find(|e| e.at == SnapshotAt::Run(run)).map(|e| (h, e)));
        let evidence = at
            .map(|(h, e)| {
                vec![Evidence {
                    host: failing_host.clone(),
                    run,
                    time_ns: h.clock.centre(e.raw_ns),
                    error_ns: 0,
                    what: format!(
                        "snapshot at run {run}: {} {}: {}; on {base_name}: {}",
                        d.category, d.subject, d.a, d.b
                    ),
                }]
            })
            .unwrap_or_default();
        let unit = if matches!(ctx.baseline, Baseline::Peer { .. }) { "host pairs" } else { "run pairs" };
        out.push(Candidate::new(
            "environment",
            unit,
            format!("{} {}: {} on {failing_host}; {} on {base_name}", d.category, d.subject, d.a, d.b),
            (f, Count { holds: 0, of: pairs.len() }, sep),
            evidence,
            d.score,
            environment_hypothesis(ctx, s, &failing_host, &d, run),
        ));
    }
    (out, pairs.len())
}

/// `s` with the run number written as `{run}` where it stands alone after a separator
/// (`{workdir}/run-3/x` -> `{workdir}/run-{run}/x`).
pub(crate) fn with_run(s: &str, run: u32) -> String {
    let n = run.to_string();
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(&n) {
        let before_ok = rest[..i].chars().next_back().is_some_and(|c| !c.is_alphanumeric());
        let after_ok = !rest[i + n.len()..].starts_with(|c: char| c.is_ascii_digit());
        out.push_str(&rest[..i]);
        out.push_str(if before_ok && after_ok { "{run}" } else { &n });
        rest = &rest[i + n.len()..];
    }
    out.push_str(rest);
    out
}

/// A variant whose processes on the failing host would change the differing state.
pub(crate) fn environment_hypothesis(
    ctx: &Context<'_>,
    s: &Scenario,
    host: &str,
    d: &diff::Difference,
    run: u32,
) -> Result<Hypothesis, Unverifiable> {
    let absent_here = d.a == "absent" || d.a.starts_with("not a mount point") || d.a.starts_with("not running");
    let mentions = |p: &heisen_recordings::Process| match d.category {
        "daemon" => p.command.iter().any(|a| a == &d.subject || a.rsplit('/').next() == Some(&d.subject)),
        "mount" => {
            p.command.iter().any(|a| *a == d.subject || a.ends_with(&d.subject) || with_run(a, run) == d.subject)
        }
        _ => false,
    };
    let variant_of = |p: &heisen_recordings::Process| p.variant.clone();
    let candidates: Vec<&heisen_recordings::Process> = s
        .services
        .iter()
        .chain(s.steps.iter())
        .filter(|p| p.host == host && p.variant.is_some() && mentions(p))
        .collect();
    let Some(p) = candidates.first() else {
        return Err(Unverifiable::NoVariant { category: d.category, subject: d.subject.clone(), host: host.into() });
    };
    let variant = variant_of(p).expect("filtered");
    let is_step = s.steps.iter().any(|st| st.name == p.name);
    if !is_step {
        return Ok(Hypothesis::State(StateHypothesis { variant, fails_when_on: !absent_here, runs: runs_wanted(ctx) }));
    }
    // A step of the variant makes the state: whether it does so before the failing step starts
    // (its first syscall a gate can hold) decides.
    let syscall = match d.category {
        "mount" => "mount",
        _ => return Err(Unverifiable::NoGateForState { step: p.name.clone(), variant, category: d.category }),
    };
    let failing = &s.failure.step;
    let first_gateable = ctx.failing.iter().find_map(|r| {
        let rs = ctx.aligned.runs.get(r)?;
        rs.first
            .iter()
            .filter(|(id, _)| {
                let sig = &ctx.aligned.sigs[**id];
                sig.role.process == *failing && sig.role.cron_command.is_none() && sig.gate.is_some()
            })
            .min_by_key(|(_, o)| o.seq)
            .map(|(id, _)| ctx.aligned.sigs[*id].gate.clone().expect("filtered"))
    });
    let (then_call, signal, fd_at_least) =
        first_gateable.ok_or_else(|| Unverifiable::FailingStepUngateable { step: failing.clone() })?;
    Ok(Hypothesis::Order(OrderHypothesis {
        settle_call: false,
        first: GateSpec {
            step: p.name.clone(),
            syscall: syscall.into(),
            nth: 1,
            signal: None,
            fd_at_least: None,
            path: None,
        },
        then: GateSpec { step: failing.clone(), syscall: then_call, nth: 1, signal, fd_at_least, path: None },
        fails_when_after: absent_here,
        runs: runs_wanted(ctx),
        variants: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::align::stable_text;

    #[test]
    fn run_numbers_in_paths_become_placeholders() {
        assert_eq!(with_run("{workdir}/run-3/chroot/dev/shm", 3), "{workdir}/run-{run}/chroot/dev/shm");
        assert_eq!(with_run("/x3/run-13/a-3", 3), "/x3/run-13/a-{run}");
        assert_eq!(stable_text("writer: write 9 of 256 failed"), "writer: write");
        assert_eq!(stable_text("exports reloaded"), "exports reloaded");
    }
}
