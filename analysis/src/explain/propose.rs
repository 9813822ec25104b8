//! Phase 5, propose: rank the candidates (separation first; the kind prior, then the files it
//! names, then the narrower window, then the earlier cause in failing runs, then where the cause
//! comes in its process, only break ties), keep one per hypothesis, number them and write their
//! verify commands.

use std::collections::BTreeSet;

use super::report::Candidate;
use super::Options;

/// A window's width on a scale of half-octaves: two windows of 300.1 and 300.4 ms (the same
/// sleep in two processes) are alike, one of 5 ms is narrower than one of 300 ms.
fn coarse(window_ns: i64) -> i64 {
    if window_ns <= 0 {
        return 0;
    }
    ((window_ns as f64).log2() * 2.0).floor() as i64
}

/// Phase 5: rank, keep the best, number them and write their verify commands.
pub(crate) fn propose(candidates: &mut Vec<Candidate>, opts: &Options) {
    candidates.sort_by(|x, y| {
        let key = |c: &Candidate| ((c.score * 100.0).round() as i64, c.prior, c.failing.holds, c.specificity);
        key(y)
            .cmp(&key(x))
            .then_with(|| coarse(x.window_ns).cmp(&coarse(y.window_ns)))
            .then_with(|| x.cause_at_ns.cmp(&y.cause_at_ns))
            .then_with(|| x.window_ns.cmp(&y.window_ns))
            .then_with(|| x.cause_seq.cmp(&y.cause_seq))
            .then_with(|| x.summary.cmp(&y.summary))
    });
    // One candidate per hypothesis: the best-placed keeps it.
    let mut seen = BTreeSet::new();
    candidates.retain(|c| c.hypothesis.as_ref().is_none_or(|h| seen.insert(h.clone())));
    candidates.truncate(opts.top);
    for (i, c) in candidates.iter_mut().enumerate() {
        c.rank = i + 1;
        if let Some(h) = &c.hypothesis {
            c.verify = Some(format!(
                "heisen verify {b} --candidate {r} --local   # = heisen verify {b} --hypothesis '{h}' --local",
                b = opts.bundle_arg,
                r = c.rank
            ));
        }
    }
}
