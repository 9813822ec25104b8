//! Ordering candidates: pairs of signatures of different roles whose relation (before, during,
//! before the end of) holds in failing runs and not in passing ones. When there are more pairs than
//! the budget, a seeded generator draws the ones examined.

use std::collections::{BTreeMap, BTreeSet};

use heisen_recordings::Hypothesis;

use super::hypotheses::{between_hypothesis, during_hypothesis, order_hypothesis};
use super::predicates::{holds, undecided, Pred};
use super::report::{evidence_of, share, Candidate, Count};
use super::{Context, Options};
use crate::align::{before, connection_of, Class, Occ, Role, RunSigs, Sig};

/// A small deterministic generator (xorshift64*) for sampling pairs.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

pub(crate) fn ordering_candidates(
    ctx: &Context<'_>,
    passing: &[u32],
    opts: &Options,
) -> (Vec<Candidate>, usize, usize) {
    let sigs = &ctx.aligned.sigs;
    // A series ("during B's calls") is one that repeats in normal runs: a call a failing run
    // repeats only in its reaction to the failure (a retry, a diagnostic probe) is not one.
    let multi: BTreeSet<usize> = passing
        .iter()
        .filter_map(|r| ctx.aligned.runs.get(r))
        .flat_map(|rs| rs.count.iter().filter(|(_, c)| **c >= 2).map(|(s, _)| *s))
        .collect();
    // What never happens in a passing run is the failure itself or its consequence (an error
    // message, a crash): "before the symptom" separates trivially and says nothing.
    let in_passing: BTreeSet<usize> =
        passing.iter().filter_map(|r| ctx.aligned.runs.get(r)).flat_map(|rs| rs.first.keys().copied()).collect();
    // A printed line is late (timed when heisen read it from the pipe) and reports what its
    // process did: when the process's own calls are recorded, they stand for it as a cause.
    let recorded_roles: BTreeSet<&Role> = sigs
        .iter()
        .enumerate()
        .filter(|(i, s)| s.class != Class::Output && in_passing.contains(i))
        .map(|(_, s)| &s.role)
        .collect();
    let mut pairs: Vec<(usize, usize)> = Vec::new();
    for a in 0..sigs.len() {
        if sigs[a].class == Class::Output && recorded_roles.contains(&sigs[a].role) {
            continue;
        }
        for b in 0..sigs.len() {
            // A printed line is never the reference point B: its time is when heisen read it from
            // the pipe (late by up to the agent's read interval), and it is an effect.
            if a != b
                && sigs[a].role != sigs[b].role
                && in_passing.contains(&a)
                && in_passing.contains(&b)
                && sigs[b].class != Class::Output
            {
                pairs.push((a, b));
            }
        }
    }
    let total = pairs.len();
    if pairs.len() > opts.budget {
        // Seeded partial shuffle: the first `budget` pairs after it are examined.
        let mut rng = Rng(opts.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        for i in 0..opts.budget {
            let j = i + (rng.next() % (pairs.len() - i) as u64) as usize;
            pairs.swap(i, j);
        }
        pairs.truncate(opts.budget);
        pairs.sort();
    }
    let examined = pairs.len();
    // A run whose clocks cannot order the pair says nothing about it: it is left out of the count
    // (unless most runs are, when the candidate is as good as unknown).
    let count = |runs: &[u32], p: Pred| {
        let sigs_of = |r: &u32| ctx.aligned.runs.get(r);
        let unknown = runs.iter().filter(|r| sigs_of(r).is_some_and(|rs| undecided(rs, p))).count();
        let unknown = if unknown * 2 > runs.len() { 0 } else { unknown };
        Count {
            holds: runs.iter().filter(|r| sigs_of(r).is_some_and(|rs| holds(rs, p))).count(),
            of: runs.len() - unknown,
        }
    };
    let mut out = Vec::new();
    let mut windows = BTreeSet::new();
    for (a, b) in pairs {
        let mut preds = vec![Pred::Before(a, b)];
        // "During B's calls" needs B to be a stream on one thing: calls on one file, or over
        // connections (fd >= 3). A process's unnamed openat or pread64 calls span its whole life
        // (library loads of every child it runs) and say nothing.
        if multi.contains(&b) && is_stream(&sigs[b]) {
            preds.push(Pred::During(a, b));
            preds.push(Pred::BeforeEnd(a, b));
        }
        for p in preds {
            let (f, q) = (count(ctx.failing, p), count(passing, p));
            let sep = share(f) - share(q);
            // "Before" that also holds in some passing runs may hold in the failing ones only
            // after a call of the other process: a window between two of its calls.
            if let Pred::Before(..) = p {
                if share(f) >= 0.75 && q.holds > 0 {
                    for w in narrowed(ctx, p, passing, &in_passing, &count) {
                        let (f, q) = (count(ctx.failing, w), count(passing, w));
                        let wsep = share(f) - share(q);
                        if wsep >= 0.5 && wsep > sep + 0.1 && windows.insert(w) {
                            out.push((w, ordering_candidate(ctx, w, f, q, wsep, passing)));
                        }
                    }
                }
            }
            if sep < 0.5 {
                continue;
            }
            out.push((p, ordering_candidate(ctx, p, f, q, sep, passing)));
        }
    }
    // A window says more than a two-point order only when it separates better: where "before"
    // or "during" with the same cause already separates as well, the window is left out, unless
    // the window is on the cause's own file and that order is not.
    let mut two_point: BTreeMap<(usize, bool), f64> = BTreeMap::new();
    for (p, c) in &out {
        if let Pred::Before(a, _) | Pred::During(a, _) | Pred::BeforeEnd(a, _) = *p {
            for key in [(a, false), (a, one_object(sigs, *p))] {
                let best = two_point.entry(key).or_insert(f64::MIN);
                *best = best.max(c.score);
            }
        }
    }
    out.retain(|(p, c)| match *p {
        Pred::Between(a, _, _) => two_point.get(&(a, one_object(sigs, *p))).is_none_or(|best| c.score > best + 1e-9),
        _ => true,
    });
    // Windows of one cause that share an edge, whose other edges are two calls on one file (its
    // open and its close), and that separate alike: the widest one stands for them (verify puts
    // the cause outside its edges; a narrower one would leave the cause inside the real window:
    // between the copy's open and close of a log as much as after its close).
    let same_file = |x: usize, y: usize| {
        x != y && sigs[x].role == sigs[y].role && sigs[x].object.is_some() && sigs[x].object == sigs[y].object
    };
    let wider = |p: Pred, c: &Candidate| {
        out.iter().any(|(q, d)| match (p, *q) {
            (Pred::Between(a, o, e), Pred::Between(qa, qo, qe)) => {
                a == qa
                    && ((o == qo && same_file(e, qe)) || (e == qe && same_file(o, qo)))
                    && d.score >= c.score - 1e-9
                    && d.window_ns > c.window_ns
            }
            _ => false,
        })
    };
    let narrower: Vec<bool> = out.iter().map(|(p, c)| wider(*p, c)).collect();
    let mut keep = narrower.into_iter().map(|n| !n);
    out.retain(|_| keep.next().unwrap_or(true));
    // A two-point order "o before a" that a window "a after o and before e" implies, and that
    // separates no better, says less than the window: the window ranks first (as does an order
    // from another call of o's process on o's file, which the widest window stands for). The data cannot
    // tell them apart when no passing run had a after e; verifying the window tests both of its
    // edges, while the order alone leaves the cause free to land after e (a record written after
    // the truncation is kept: the order would be refuted where the window is confirmed).
    let implied: Vec<(usize, u32)> = out
        .iter()
        .enumerate()
        .filter_map(|(i, (p, c))| {
            let Pred::Before(x, y) = *p else { return None };
            out.iter()
                .filter(|(q, d)| {
                    matches!(*q, Pred::Between(a, o, _) if a == y && (o == x || same_file(o, x)))
                        && d.score >= c.score - 1e-9
                })
                .map(|(_, d)| d.prior)
                .max()
                .map(|window| (i, window))
        })
        .collect();
    for (i, window) in implied {
        let c = &mut out[i].1;
        c.prior = c.prior.min(window.saturating_sub(1));
    }
    let out = same_flow(ctx, out);
    (out, examined, total)
}

/// Whether every point of the relation acts on the cause's own file. A race is on something
/// both sides touch: a write between the copy's open of that log and its truncation says more
/// than a write during the copy's compression into another file, whatever their shapes.
fn one_object(sigs: &[Sig], p: Pred) -> bool {
    let (a, others) = match p {
        Pred::Before(a, b) | Pred::During(a, b) | Pred::BeforeEnd(a, b) => (a, vec![b]),
        Pred::Between(a, o, c) => (a, vec![o, c]),
    };
    sigs[a].object.is_some() && others.iter().all(|o| sigs[*o].object == sigs[a].object)
}

/// The windows that narrow `Before(x, y)` (x and y of different processes): when x is the cause,
/// a call of y's process before y opens it ("x after b and before y"); when y is the cause, a
/// call of x's process after x closes it ("y after x and before c"). Per side, the window that
/// separates best, then the one whose edge names the most (a signal, a file) and is of the
/// weightiest kind (a signal sent), then the widest: verify puts the cause just outside the
/// window's edges, and among windows that fit the runs equally the one on the cause's own file
/// (the log's truncation, not the marker written after it), then the widest keeps it outside the
/// real one (the file's open, not its later close, opens the window of a file being written).
fn narrowed(
    ctx: &Context<'_>,
    p: Pred,
    passing: &[u32],
    in_passing: &BTreeSet<usize>,
    count: &dyn Fn(&[u32], Pred) -> Count,
) -> Vec<Pred> {
    let Pred::Before(x, y) = p else { return Vec::new() };
    let sigs = &ctx.aligned.sigs;
    // A window's edges are calls a gate can hold (verify holds the process at them), not an
    // exec or a signal received.
    let holdable = |e: usize| sigs[e].gate.is_some() && sigs[e].class != Class::Output;
    // Calls of `of`'s process that a gate can hold and that come on the given side of `of` in
    // every run that has both.
    let edges = |of: usize, earlier: bool| -> Vec<usize> {
        (0..sigs.len())
            .filter(|e| {
                *e != of
                    && sigs[*e].role == sigs[of].role
                    && holdable(*e)
                    && in_passing.contains(e)
                    && ctx.aligned.runs.values().all(|rs| match (rs.first.get(e), rs.first.get(&of)) {
                        (Some(o), Some(r)) => before(o, r) == Some(earlier),
                        _ => true,
                    })
            })
            .collect()
    };
    let width =
        |b: usize, c: usize| median_span(ctx, |rs| Some((rs.first.get(&b)?, rs.first.get(&c)?))).unwrap_or(i64::MAX);
    let names = |e: usize| sigs[e].object.is_some() as u8 + sigs[e].gate.as_ref().is_some_and(|g| g.1.is_some()) as u8;
    let best = |windows: Vec<Pred>| -> Option<Pred> {
        windows.into_iter().max_by_key(|w| {
            let Pred::Between(_, b, c) = *w else { unreachable!("windows only") };
            let sep = share(count(ctx.failing, *w)) - share(count(passing, *w));
            let edge = if sigs[b].role == sigs[y].role { b } else { c };
            let own = one_object(sigs, *w);
            ((sep * 100.0).round() as i64, own, names(edge), sigs[edge].class, width(b, c), std::cmp::Reverse(edge))
        })
    };
    let opens =
        if holdable(y) { best(edges(y, true).into_iter().map(|b| Pred::Between(x, b, y)).collect()) } else { None };
    let closes =
        if holdable(x) { best(edges(x, false).into_iter().map(|c| Pred::Between(y, x, c)).collect()) } else { None };
    opens.into_iter().chain(closes).collect()
}

/// One flow seen at two places: the writer's writes and the server's replies to them come one
/// for one in every run. The view on the cause's own host orders it exactly (same-host `seq`);
/// the view on another host may be within the clock error of the cause. The flow is held at the
/// step's end of it: holding a service mid-flow would hold everything it serves (the reload that
/// the cause sets off in it, too). That candidate takes the exact view's counts, and says so.
pub(crate) fn same_flow(ctx: &Context<'_>, mut found: Vec<(Pred, Candidate)>) -> Vec<Candidate> {
    let flow =
        |b: usize| -> Vec<u32> { ctx.aligned.runs.values().map(|rs| rs.count.get(&b).copied().unwrap_or(0)).collect() };
    let mut groups: BTreeMap<(usize, bool, Vec<u32>), Vec<usize>> = BTreeMap::new();
    for (i, (p, _)) in found.iter().enumerate() {
        if let Pred::During(a, b) | Pred::BeforeEnd(a, b) = *p {
            groups.entry((a, matches!(p, Pred::During(..)), flow(b))).or_default().push(i);
        }
    }
    for members in groups.values().filter(|m| m.len() > 1) {
        let key = |c: &Candidate| ((c.score * 100.0).round() as i64, c.prior);
        let best = *members.iter().max_by_key(|i| key(&found[**i].1)).expect("non-empty");
        let on_step = |i: &usize| match found[*i].0 {
            Pred::During(_, b) | Pred::BeforeEnd(_, b) => {
                let role = &ctx.aligned.sigs[b].role;
                role.cron_command.is_none()
                    && ctx.scenario.is_some_and(|s| s.steps.iter().any(|p| p.name == role.process))
            }
            _ => false,
        };
        let Some(gated) = members
            .iter()
            .copied()
            .filter(|i| found[*i].1.parsed.is_some() && on_step(i))
            .max_by_key(|i| key(&found[*i].1))
        else {
            continue;
        };
        if key(&found[gated].1).0 >= key(&found[best].1).0 {
            continue;
        }
        let exact = found[best].1.clone();
        let b = match found[best].0 {
            Pred::During(_, b) | Pred::BeforeEnd(_, b) | Pred::Before(_, b) | Pred::Between(_, _, b) => {
                &ctx.aligned.sigs[b]
            }
        };
        let c = &mut found[gated].1;
        c.summary = format!(
            "{} — ordered by {}'s {} [{}], the same flow (as many calls in every run)",
            c.summary,
            b.role.label(),
            b.what,
            ctx.bundle.hosts[b.role.host].name
        );
        (c.score, c.failing, c.passing, c.p_value) = (exact.score, exact.failing, exact.passing, exact.p_value);
        c.evidence.extend(exact.evidence);
        c.evidence.sort_by_key(|e| e.time_ns);
    }
    found.into_iter().map(|(_, c)| c).collect()
}

/// Calls on one open file or connection, which a stream of them can be about.
fn is_stream(s: &Sig) -> bool {
    let Some((call, _, fd_at_least)) = &s.gate else { return false };
    let fd_call = crate::align::FILE_FD_CALLS.contains(&call.as_str())
        || matches!(call.as_str(), "sendto" | "sendmsg" | "recvfrom" | "recvmsg");
    fd_call && (s.object.is_some() || fd_at_least.is_some())
}

pub(crate) fn ordering_candidate(
    ctx: &Context<'_>,
    p: Pred,
    f: Count,
    q: Count,
    sep: f64,
    passing: &[u32],
) -> Candidate {
    let sigs = &ctx.aligned.sigs;
    let host = |s: &Sig| ctx.bundle.hosts[s.role.host].name.clone();
    let name = |s: &Sig| format!("{}'s {} [{}]", s.role.label(), s.what, host(s));
    let failure_step = ctx.scenario.map(|s| s.failure.step.as_str());
    let (ai, bi) = match p {
        Pred::Before(a, b) | Pred::During(a, b) | Pred::BeforeEnd(a, b) => (a, b),
        // The window's closing call is what the cause is ordered against.
        Pred::Between(a, _, c) => (a, c),
    };
    let (a, b) = (&sigs[ai], &sigs[bi]);
    let summary = match p {
        Pred::Before(..) => format!("{} before {}", name(a), name(b)),
        Pred::During(..) if connection_of(sigs, bi).is_some() && b.object.is_some() => {
            format!(
                "{} lands while {} has {} open (from its open through its {} calls to its close) [{}]",
                name(a),
                b.role.label(),
                b.object.as_deref().unwrap_or_default(),
                b.gate.as_ref().map(|g| g.0.as_str()).unwrap_or_default(),
                host(b)
            )
        }
        Pred::During(..) if connection_of(sigs, bi).is_some() => {
            format!(
                "{} lands while {}'s connection is in use (from its connect through its {} calls to its close) [{}]",
                name(a),
                b.role.label(),
                b.what,
                host(b)
            )
        }
        Pred::During(..) => {
            format!("{} lands while {}'s {} calls are under way [{}]", name(a), b.role.label(), b.what, host(b))
        }
        Pred::BeforeEnd(..) => {
            format!("{} lands before the end of {}'s {} calls [{}]", name(a), b.role.label(), b.what, host(b))
        }
        Pred::Between(_, oi, _) => {
            let o = &sigs[oi];
            format!("{} lands after {} and before its {} [{}]", name(a), name(o), b.what, host(b))
        }
    };
    let on_failing_step = failure_step.is_some_and(|f| b.role.process == f && b.role.cron_command.is_none());
    // On the scale of diff scores (20..95): a signal sent ranks with a missing daemon.
    // The more specific relation first when both separate as well.
    // A window (three points) only when it separates better than any two-point order: among
    // equals, the simpler claim first.
    let specific = match p {
        Pred::During(..) => 3,
        Pred::BeforeEnd(..) => 2,
        Pred::Before(..) => 1,
        Pred::Between(..) => 0,
    };
    // A victim whose calls end in an error in every failing run and in none of the passing ones
    // is where the failure shows (the writer's last write = EACCES), not a call the failing
    // process happened to make around the same time (its loader's openat calls).
    let ends_in_error = |runs: &[u32]| {
        runs.iter().filter_map(|r| ctx.aligned.runs.get(r)?.last.get(&bi)).map(|o| o.ret < 0).collect::<Vec<_>>()
    };
    let failing_ends = ends_in_error(ctx.failing);
    let victim_fails =
        !failing_ends.is_empty() && failing_ends.iter().all(|e| *e) && !ends_in_error(passing).iter().any(|e| *e);
    // A cause whose own call fails in every failing run and in none of the passing ones is the
    // failure showing (a kill of a stale pid = ESRCH), not what brought it about: it ranks with
    // the printed lines, after the calls that set it up (the read of the stale pid file).
    let first_fails = |runs: &[u32]| {
        runs.iter().filter_map(|r| ctx.aligned.runs.get(r)?.first.get(&ai)).map(|o| o.ret < 0).collect::<Vec<_>>()
    };
    let failing_first = first_fails(ctx.failing);
    let is_symptom =
        !failing_first.is_empty() && failing_first.iter().all(|e| *e) && !first_fails(passing).iter().any(|e| *e);
    let class = if is_symptom { Class::Output } else { a.class };
    let prior = class as u32 * 10
        + on_failing_step as u32 * 5
        + one_object(sigs, p) as u32 * 4
        + victim_fails as u32 * 3
        + specific;
    // Evidence: the first failing run where it holds.
    let mut evidence = Vec::new();
    let run = ctx.failing.iter().copied().find(|r| ctx.aligned.runs.get(r).is_some_and(|rs| holds(rs, p)));
    if let Some(run) = run {
        let rs = &ctx.aligned.runs[&run];
        let mut shown = vec![(&rs.first[&ai], format!("{}: {}", a.role.label(), rs.first[&ai].desc))];
        let bn = rs.count.get(&bi).copied().unwrap_or(0);
        match (rs.first.get(&bi), rs.cut_short.get(&bi)) {
            (Some(first_b), _) => shown.push((
                first_b,
                format!("{}: {}{}", b.role.label(), first_b.desc, if bn > 1 { " (first)" } else { "" }),
            )),
            (None, Some(death)) => {
                shown.push((death, format!("{}: killed by a signal before its {}", b.role.label(), b.what)))
            }
            (None, None) => {}
        }
        if let Pred::Between(_, oi, _) = p {
            let o = &rs.first[&oi];
            shown.push((o, format!("{}: {}", sigs[oi].role.label(), o.desc)));
        } else if !matches!(p, Pred::Before(..)) && bn > 1 {
            let last = &rs.last[&bi];
            shown.push((last, format!("{}: {} (last of {bn})", b.role.label(), last.desc)));
        }
        shown.sort_by_key(|(o, _)| o.at.earliest_ns);
        evidence = shown.into_iter().map(|(o, what)| evidence_of(ctx.bundle, run, o, what)).collect();
    }
    let h = match p {
        Pred::During(ai, bi) | Pred::BeforeEnd(ai, bi) => during_hypothesis(ctx, ai, bi, run, passing),
        Pred::Before(ai, bi) => {
            // Fails when a comes before b, i.e. when b comes after a: first = b, then = a.
            order_hypothesis(ctx, bi, ai).map(|mut h| {
                if let Hypothesis::Order(o) = &mut h {
                    o.settle_call = goes_on(ctx, passing, bi, ai);
                }
                h
            })
        }
        Pred::Between(ai, oi, ci) => between_hypothesis(ctx, ai, oi, ci),
    };
    let mut c = Candidate::new("ordering", "runs", summary, (f, q, sep), evidence, prior, h);
    let took_effect =
        b.object.is_some() && ctx.aligned.runs.values().filter_map(|rs| rs.first.get(&bi)).all(|o| o.ret >= 0);
    // A call that makes the very file the other acts on (the rename that publishes what the
    // reader opens) says the most.
    let makes_its_file = a.object.is_some() && b.target == a.object;
    c.specificity = a.object.is_some() as u8 + b.object.is_some() as u8 + took_effect as u8 + 2 * makes_its_file as u8;
    c.cause_seq = run.and_then(|r| Some(ctx.aligned.runs.get(&r)?.first.get(&ai)?.seq)).unwrap_or(u64::MAX);
    c.window_ns = match p {
        Pred::Between(_, oi, ci) => median_span(ctx, |rs| Some((rs.first.get(&oi)?, rs.first.get(&ci)?))),
        Pred::Before(..) => None,
        Pred::During(..) | Pred::BeforeEnd(..) => median_span(ctx, |rs| {
            Some((rs.begin.get(&bi).or(rs.first.get(&bi))?, rs.end.get(&bi).or(rs.last.get(&bi))?))
        }),
    }
    .unwrap_or(0);
    c.cause_at_ns = median_of(
        ctx.failing
            .iter()
            .filter_map(|r| ctx.aligned.runs.get(r))
            .filter_map(|rs| Some(rs.first.get(&ai)?.at.midpoint_ns() - rs.origin_ns?))
            .collect(),
    )
    .unwrap_or(i64::MAX);
    c
}

/// Whether `lead`'s process went on past `other` in the passing runs where `lead` came first: in
/// every one of them (and there is one), `other` came before `lead`'s step exited (a service that
/// binds and then serves the check). Verify then lets `lead`'s call go through before `other`
/// instead of waiting for its step to end, which no passing run did.
fn goes_on(ctx: &Context<'_>, passing: &[u32], lead: usize, other: usize) -> bool {
    let role = &ctx.aligned.sigs[lead].role;
    let led: Vec<bool> = passing
        .iter()
        .filter_map(|r| ctx.aligned.runs.get(r))
        .filter_map(|rs| {
            let (l, o) = (rs.first.get(&lead)?, rs.first.get(&other)?);
            (before(l, o) == Some(true)).then(|| rs.exits.get(role).is_none_or(|exit| before(exit, o) != Some(true)))
        })
        .collect();
    !led.is_empty() && led.iter().all(|on| *on)
}

/// The median over failing runs of the time from the first to the second occurrence `ends`
/// picks in a run (ns); None when no failing run has both.
fn median_span(ctx: &Context<'_>, ends: impl Fn(&RunSigs) -> Option<(&Occ, &Occ)>) -> Option<i64> {
    median_of(
        ctx.failing
            .iter()
            .filter_map(|r| {
                let (start, end) = ends(ctx.aligned.runs.get(r)?)?;
                Some(end.at.midpoint_ns() - start.at.midpoint_ns())
            })
            .collect(),
    )
}

/// The median of `values` (the upper one of an even count); None when empty.
fn median_of(mut values: Vec<i64>) -> Option<i64> {
    values.sort_unstable();
    values.get(values.len() / 2).copied()
}
