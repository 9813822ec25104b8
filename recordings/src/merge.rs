//! The streaming k-way merge of hosts' event streams onto one timeline.
//!
//! Each host's stream is consumed in sequence order, so same-host order is always `(host, seq)`.
//! Across hosts the merge interleaves by the midpoint of each event's clock interval; that is a
//! display order only. Whether two events are *ordered* is [`relation`]'s business, and it says
//! `Concurrent` whenever the intervals overlap. Memory is one pending event per host.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::{ClockModel, Event, Interval};

/// An event placed on the coordinator's timeline.
#[derive(Clone, Debug)]
pub struct Placed<'a> {
    /// Index of the host in the merge's input.
    pub host: usize,
    pub event: &'a Event,
    pub interval: Interval,
}

/// Merges per-host event streams (each in sequence order) into timeline order.
pub struct Merge<'a, I: Iterator<Item = &'a Event>> {
    streams: Vec<(I, ClockModel)>,
    heads: BinaryHeap<Reverse<(i64, usize, u64)>>,
    pending: Vec<Option<&'a Event>>,
}

impl<'a, I: Iterator<Item = &'a Event>> Merge<'a, I> {
    pub fn new(streams: Vec<(I, ClockModel)>) -> Self {
        let mut merge = Merge { pending: vec![None; streams.len()], streams, heads: BinaryHeap::new() };
        for host in 0..merge.streams.len() {
            merge.refill(host);
        }
        merge
    }

    fn refill(&mut self, host: usize) {
        let (stream, clock) = &mut self.streams[host];
        if let Some(event) = stream.next() {
            let key = clock.interval(event.raw_ns).midpoint_ns();
            self.heads.push(Reverse((key, host, event.seq)));
            self.pending[host] = Some(event);
        }
    }
}

impl<'a, I: Iterator<Item = &'a Event>> Iterator for Merge<'a, I> {
    type Item = Placed<'a>;

    fn next(&mut self) -> Option<Placed<'a>> {
        let Reverse((_, host, _)) = self.heads.pop()?;
        let event = self.pending[host].take().expect("a head has a pending event");
        let interval = self.streams[host].1.interval(event.raw_ns);
        self.refill(host);
        Some(Placed { host, event, interval })
    }
}

/// What the recording can say about the order of two events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Relation {
    Before,
    After,
    /// Nothing recorded orders them: a race candidate.
    Concurrent,
}

/// Order of `a` relative to `b`: by sequence on one host, by disjoint intervals across hosts.
pub fn relation(a: &Placed<'_>, b: &Placed<'_>) -> Relation {
    if a.host == b.host {
        return if a.event.seq < b.event.seq { Relation::Before } else { Relation::After };
    }
    if a.interval.before(&b.interval) {
        Relation::Before
    } else if b.interval.before(&a.interval) {
        Relation::After
    } else {
        Relation::Concurrent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventKind;

    fn ev(seq: u64, raw_ns: i64) -> Event {
        Event { seq, raw_ns, pid: 1, comm: String::new(), run: 0, kind: EventKind::Exit { exit_code: 0 } }
    }

    #[test]
    fn merges_by_corrected_time_keeping_host_order() {
        let a = vec![ev(0, 100), ev(1, 300), ev(2, 250)]; // host clock stepped back: seq still wins
        let b = vec![ev(0, 1_200), ev(1, 1_280)]; // host b runs 1000 ns ahead
        let clocks = [
            ClockModel { offset_ns: 0, error_ns: 5, ..ClockModel::identity() },
            ClockModel { offset_ns: 1_000, error_ns: 5, ..ClockModel::identity() },
        ];
        let merged: Vec<_> = Merge::new(vec![(a.iter(), clocks[0].clone()), (b.iter(), clocks[1].clone())]).collect();
        let order: Vec<_> = merged.iter().map(|p| (p.host, p.event.seq)).collect();
        assert_eq!(order, vec![(0, 0), (1, 0), (1, 1), (0, 1), (0, 2)]);
        assert_eq!(relation(&merged[0], &merged[1]), Relation::Before);
        assert_eq!(relation(&merged[4], &merged[3]), Relation::After);
        // b#1 at 280±5 and a#2 at 250±5: disjoint, ordered. a#1 at 300±5 vs b#1: ordered too.
        assert_eq!(relation(&merged[2], &merged[3]), Relation::Before);
        let near = [ev(5, 282)];
        let near_b = Merge::new(vec![(near.iter(), clocks[0].clone())]).next().unwrap();
        assert_eq!(relation(&near_b, &merged[2]).clone(), Relation::Concurrent);
    }
}
