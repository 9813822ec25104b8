//! What a candidate ordering claims about one run, as a predicate over its aligned signatures.

use crate::align::{before, RunSigs};

/// A predicate over one run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Pred {
    /// `a`'s first occurrence is before `b`'s first.
    Before(usize, usize),
    /// `a`'s first occurrence is not known to be before `b`'s start (its first, or the connect
    /// it began with) nor after `b`'s end (its last, or the close of that connection).
    During(usize, usize),
    /// `a`'s first occurrence is not known to come after `b`'s last (it may come before `b`
    /// starts: a cause whose effect lasts, such as a reload, still catches `b`). As for `During`'s
    /// end, "within the clock error of `b`'s last" counts: a failing call often returns a fraction
    /// of a millisecond after its cause on another host.
    BeforeEnd(usize, usize),
    /// `a`'s first occurrence is not known to be before `b`'s first nor after `c`'s first, where
    /// `b` and `c` are two calls of one process, `b` first: "between the check and the use".
    Between(usize, usize, usize),
}

pub(crate) fn holds(rs: &RunSigs, p: Pred) -> bool {
    match p {
        Pred::Before(a, b) => match (rs.first.get(&a), rs.first.get(&b)) {
            (Some(x), Some(y)) => before(x, y) == Some(true),
            // B never came: a signal ended its process after A.
            (Some(x), None) => rs.cut_short.get(&b).is_some_and(|death| before(x, death) == Some(true)),
            _ => false,
        },
        Pred::During(a, b) => {
            match (rs.first.get(&a), rs.begin.get(&b).or(rs.first.get(&b)), rs.end.get(&b).or(rs.last.get(&b))) {
                // Not known to be outside b's span: within the clock error of its start or its end
                // counts, as the start of a connection and the cause on another host often are.
                (Some(x), Some(b0), Some(b1)) => before(x, b0) != Some(true) && before(b1, x) != Some(true),
                _ => false,
            }
        }
        Pred::BeforeEnd(a, b) => match (rs.first.get(&a), rs.last.get(&b)) {
            (Some(x), Some(b1)) => before(b1, x) != Some(true),
            _ => false,
        },
        // Known to be inside: a window's edges are single calls, and a cause within the clock
        // error of one (a write during the truncation that closes the window) is undecided.
        Pred::Between(a, b, c) => match (rs.first.get(&a), rs.first.get(&b), rs.first.get(&c)) {
            (Some(x), Some(y), Some(z)) => {
                before(y, z) == Some(true) && before(y, x) == Some(true) && before(x, z) == Some(true)
            }
            _ => false,
        },
    }
}

/// A run the clocks cannot decide `p` in: the events are there, on two hosts, within each
/// other's clock error (`before` says neither). `During` and `BeforeEnd` are never undecided:
/// they count "not known to be outside" as holding.
pub(crate) fn undecided(rs: &RunSigs, p: Pred) -> bool {
    match p {
        Pred::Before(a, b) => match (rs.first.get(&a), rs.first.get(&b)) {
            (Some(x), Some(y)) => before(x, y).is_none(),
            _ => false,
        },
        Pred::Between(a, b, c) => match (rs.first.get(&a), rs.first.get(&b), rs.first.get(&c)) {
            (Some(x), Some(y), Some(z)) => {
                before(y, z) == Some(true) && (before(y, x).is_none() || before(x, z).is_none())
            }
            _ => false,
        },
        Pred::During(..) | Pred::BeforeEnd(..) => false,
    }
}
