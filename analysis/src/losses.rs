//! Which runs a loss touches: a run during which some host recorded nothing (its agent crashed,
//! restarted or was lost) or dropped events cannot be judged, so verify counts it invalid.

use std::collections::BTreeMap;

use heisen_recordings::{Bundle, ClockModel, Event, EventKind};

/// Runs (by number) whose time on the coordinator's timeline overlaps a span in which a host
/// lost events (an agent crash or restart, a sequence gap), each with why. Ring overruns are
/// counted when a capture stops and cannot be placed in time: explain reports them per host.
pub fn runs_with_loss(bundle: &Bundle) -> BTreeMap<u32, String> {
    let tracked: Vec<(&str, &ClockModel, Losses)> = bundle
        .hosts
        .iter()
        .map(|h| {
            let mut losses = Losses::default();
            h.events.iter().for_each(|e| losses.push(e));
            (h.name.as_str(), &h.clock, losses)
        })
        .collect();
    runs_touched(&tracked)
}

/// What [`runs_with_loss`] needs of one host's events, gathered as they stream by: each run's
/// span and each loss's span, on the host's clock (its model may be fitted only afterwards).
#[derive(Default)]
pub struct Losses {
    runs: BTreeMap<u32, (i64, i64)>,
    lost: Vec<(i64, i64, String)>,
}

impl Losses {
    pub fn push(&mut self, e: &Event) {
        if let EventKind::Lost { count, location, from_ns: Some(from) } = &e.kind {
            let what = if *count > 0 { format!("{count} events lost") } else { "nothing recorded".to_string() };
            self.lost.push((*from, e.raw_ns, format!("{what} ({location})")));
            return;
        }
        if e.run == 0 || matches!(e.kind, EventKind::Lost { .. }) {
            return;
        }
        let span = self.runs.entry(e.run).or_insert((e.raw_ns, e.raw_ns));
        span.0 = span.0.min(e.raw_ns);
        span.1 = span.1.max(e.raw_ns);
    }
}

/// [`runs_with_loss`] from what each host's [`Losses`] gathered, with its clock.
pub fn runs_touched(hosts: &[(&str, &ClockModel, Losses)]) -> BTreeMap<u32, String> {
    // Each run's span: from its first event's earliest to its last event's latest, over hosts
    // (a clock model is monotonic, so the host's extreme stamps give the extreme interval ends).
    let mut spans: BTreeMap<u32, (i64, i64)> = BTreeMap::new();
    let mut losses: Vec<(i64, i64, String)> = Vec::new();
    for (name, clock, tracked) in hosts {
        for (run, (lo, hi)) in &tracked.runs {
            let (lo, hi) = (clock.interval(*lo).earliest_ns, clock.interval(*hi).latest_ns);
            let span = spans.entry(*run).or_insert((lo, hi));
            span.0 = span.0.min(lo);
            span.1 = span.1.max(hi);
        }
        for (from, to, why) in &tracked.lost {
            losses.push((clock.interval(*from).earliest_ns, clock.interval(*to).latest_ns, format!("{name}: {why}")));
        }
    }
    let mut out = BTreeMap::new();
    for (run, (start, end)) in spans {
        if let Some((_, _, why)) = losses.iter().find(|(from, to, _)| *from <= end && start <= *to) {
            out.insert(run, why.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use heisen_recordings::{ClockModel, Event, HostRecording};

    use super::*;

    fn event(seq: u64, raw_ns: i64, run: u32) -> Event {
        Event { seq, raw_ns, pid: 1, comm: "x".into(), run, kind: EventKind::Fork { parent_pid: 1, child_pid: 2 } }
    }

    fn host(name: &str, events: Vec<Event>) -> HostRecording {
        HostRecording::new(name, ClockModel::identity(), events)
    }

    #[test]
    fn runs_after_a_host_went_silent_are_touched_and_runs_before_are_not() {
        // Host b's agent restarted at 2_500: its stored events end there, and a span covers the
        // rest of the capture. Run 1 (1_000..2_000) is whole; run 2 (3_000..4_000) is not.
        let a = host("a", vec![event(0, 1_000, 1), event(1, 2_000, 1), event(2, 3_000, 2), event(3, 4_000, 2)]);
        let mut b_events = vec![event(0, 1_500, 1), event(1, 2_500, 0)];
        HostRecording::mark_lost_span(&mut b_events, 0, 5_000, "agent b restarted");
        let bundle = Bundle {
            capture_id: "c".into(),
            started_ns: 0,
            scenario: None,
            hosts: vec![a, host("b", b_events)],
            runs: vec![],
            causal: vec![],
            placeholders: Default::default(),
        };
        let touched = runs_with_loss(&bundle);
        assert_eq!(touched.keys().copied().collect::<Vec<_>>(), vec![2]);
        assert!(touched[&2].contains("b: nothing recorded (agent b restarted)"), "{touched:?}");
    }

    #[test]
    fn a_sequence_gap_becomes_a_lost_event_spanning_its_neighbours() {
        let mut events = vec![event(0, 100, 1), event(1, 200, 1), event(5, 600, 2)];
        assert_eq!(HostRecording::mark_seq_gaps(&mut events), 3);
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![0, 1, 2, 5]);
        match &events[2].kind {
            EventKind::Lost { count, from_ns, .. } => {
                assert_eq!((*count, *from_ns, events[2].raw_ns), (3, Some(200), 600))
            }
            other => panic!("{other:?}"),
        }
        let touched = runs_with_loss(&Bundle {
            capture_id: "c".into(),
            started_ns: 0,
            scenario: None,
            hosts: vec![host("a", events)],
            runs: vec![],
            causal: vec![],
            placeholders: Default::default(),
        });
        assert_eq!(touched.keys().copied().collect::<Vec<_>>(), vec![1, 2]);
    }
}
