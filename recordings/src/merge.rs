//! The streaming k-way merge of hosts' event streams onto one timeline.
//!
//! Each host's stream is consumed in sequence order, so same-host order is always `(host, seq)`.
//! Across hosts the merge interleaves by the centre of each event's clock interval; that is a
//! display order only. Whether two events are *ordered* is [`crate::Order`]'s business: disjoint
//! intervals or a causal path, otherwise *concurrent*. Memory is one pending event per host, so a
//! merge of any length runs in constant space; streams may yield borrowed or owned events.

use std::borrow::Borrow;

use crate::{ClockModel, Event, Interval};

/// An event placed on the coordinator's timeline.
#[derive(Clone, Debug)]
pub struct Placed<E> {
    /// Index of the host in the merge's input.
    pub host: usize,
    pub event: E,
    pub interval: Interval,
}

/// Merges per-host event streams (each in sequence order) into timeline order.
pub struct Merge<I: Iterator> {
    streams: Vec<(I, ClockModel)>,
    /// Per host: the next event and its merge key (interval centre). A linear scan over these
    /// beats a heap for the handful of hosts a capture has.
    heads: Vec<Option<(i64, I::Item)>>,
}

impl<I> Merge<I>
where
    I: Iterator,
    I::Item: Borrow<Event>,
{
    pub fn new(streams: Vec<(I, ClockModel)>) -> Self {
        let mut merge = Merge { heads: (0..streams.len()).map(|_| None).collect(), streams };
        for host in 0..merge.streams.len() {
            merge.refill(host);
        }
        merge
    }

    fn refill(&mut self, host: usize) {
        let (stream, clock) = &mut self.streams[host];
        self.heads[host] = stream.next().map(|e| (clock.centre(e.borrow().raw_ns), e));
    }
}

impl<I> Iterator for Merge<I>
where
    I: Iterator,
    I::Item: Borrow<Event>,
{
    type Item = Placed<I::Item>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut best: Option<(usize, i64)> = None;
        for (host, head) in self.heads.iter().enumerate() {
            if let Some((key, _)) = head {
                if best.is_none_or(|(_, k)| *key < k) {
                    best = Some((host, *key));
                }
            }
        }
        let (host, centre) = best?;
        let (_, event) = self.heads[host].take().expect("the chosen head is present");
        let error = self.streams[host].1.error_at(centre);
        self.refill(host);
        Some(Placed { host, event, interval: Interval { earliest_ns: centre - error, latest_ns: centre + error } })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventKind;

    fn ev(seq: u64, raw_ns: i64) -> Event {
        Event {
            seq,
            raw_ns,
            pid: 1,
            comm: String::new(),
            run: 0,
            kind: EventKind::Exit { exit_code: 0, killed_by: None },
        }
    }

    #[test]
    fn merges_by_corrected_time_keeping_host_order() {
        let a = [ev(0, 100), ev(1, 300), ev(2, 250)]; // host clock stepped back: seq still wins
        let b = [ev(0, 1_200), ev(1, 1_280)]; // host b runs 1000 ns ahead
        let clocks = [
            ClockModel { offset_ns: 0, error_ns: 5, ..ClockModel::identity() },
            ClockModel { offset_ns: 1_000, error_ns: 5, ..ClockModel::identity() },
        ];
        let merged: Vec<_> = Merge::new(vec![(a.iter(), clocks[0].clone()), (b.iter(), clocks[1].clone())]).collect();
        let order: Vec<_> = merged.iter().map(|p| (p.host, p.event.seq)).collect();
        assert_eq!(order, vec![(0, 0), (1, 0), (1, 1), (0, 1), (0, 2)]);
        assert_eq!(merged[2].interval, Interval { earliest_ns: 275, latest_ns: 285 });
    }

    #[test]
    fn owned_streams_merge_in_constant_space() {
        let stream = |offset: i64| (0..1000u64).map(move |i| ev(i, offset + i as i64 * 10));
        let merged = Merge::new(vec![(stream(0), ClockModel::identity()), (stream(5), ClockModel::identity())]);
        let mut last = i64::MIN;
        let mut n = 0;
        for p in merged {
            assert!(p.interval.earliest_ns >= last);
            last = p.interval.earliest_ns;
            n += 1;
        }
        assert_eq!(n, 2000);
    }
}
