//! Which runs a loss touches: a run during which some host recorded nothing (its agent crashed,
//! restarted or was lost) or dropped events cannot be judged, so verify counts it invalid.

use std::collections::BTreeMap;

use heisen_recordings::{Bundle, EventKind};

/// Runs (by number) whose time on the coordinator's timeline overlaps a span in which a host
/// lost events (an agent crash or restart, a sequence gap), each with why. Ring overruns are
/// counted when a capture stops and cannot be placed in time: explain reports them per host.
pub fn runs_with_loss(bundle: &Bundle) -> BTreeMap<u32, String> {
    // Each run's span: from its first event's earliest to its last event's latest, over hosts.
    let mut spans: BTreeMap<u32, (i64, i64)> = BTreeMap::new();
    let mut losses: Vec<(i64, i64, String)> = Vec::new();
    for host in &bundle.hosts {
        for e in &host.events {
            let at = host.clock.interval(e.raw_ns);
            if let EventKind::Lost { count, location, from_ns: Some(from) } = &e.kind {
                let from = host.clock.interval(*from).earliest_ns;
                let what = if *count > 0 { format!("{count} events lost") } else { "nothing recorded".to_string() };
                losses.push((from, at.latest_ns, format!("{}: {what} ({location})", host.name)));
                continue;
            }
            if e.run == 0 || matches!(e.kind, EventKind::Lost { .. }) {
                continue;
            }
            let span = spans.entry(e.run).or_insert((at.earliest_ns, at.latest_ns));
            span.0 = span.0.min(at.earliest_ns);
            span.1 = span.1.max(at.latest_ns);
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
        HostRecording {
            name: name.into(),
            agent_version: String::new(),
            kernel: String::new(),
            observer: String::new(),
            clock: ClockModel::identity(),
            probes: vec![],
            events,
            lost: 0,
            environments: vec![],
            incomplete: None,
        }
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
