//! The streamed timeline at the size of a load test, and its concurrency window against the
//! whole-array scan it replaced.

use heisen_analysis::timeline::{self, Filter};
use heisen_recordings::{synthetic, Bundle, BundleFile, EdgeKind, EventRef, Order, Relation};

/// A million events over four hosts: every event is shown once, each host's in seq order, the
/// merge in order of interval centres, and the capture's forks, signals and TCP handshakes are
/// edges into the events they caused.
#[test]
fn a_million_event_timeline_streams_every_event_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("million.heisen");
    let plan = synthetic::Plan { events: 1_000_000, hosts: 4, runs: 20, span_ns: 60_000_000_000 };
    let written = synthetic::write(&path, &plan).unwrap();
    assert_eq!(written.events, 1_000_000);
    let file = BundleFile::open(&path).unwrap();
    let mut last_seq = [None::<u64>; 4];
    let mut last_centre = i64::MIN;
    let (mut shown, mut forks, mut signals, mut tcp, mut out_of_order) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let summary = timeline::stream(&file, &Filter::default(), |s| {
        let host = s.placed.host;
        assert!(last_seq[host].is_none_or(|l| s.placed.event.seq > l), "host {host} out of seq order");
        last_seq[host] = Some(s.placed.event.seq);
        let centre = s.placed.interval.midpoint_ns();
        out_of_order += (centre < last_centre) as u64;
        last_centre = centre;
        for (_, _, kind, bad) in &s.caused_by {
            assert!(!bad, "a synthetic edge contradicts the clocks");
            match kind {
                EdgeKind::Fork => forks += 1,
                EdgeKind::Signal => signals += 1,
                EdgeKind::Tcp => tcp += 1,
                EdgeKind::Message => {}
            }
        }
        shown += 1;
        Ok::<_, std::convert::Infallible>(())
    })
    .unwrap();
    assert_eq!((shown, summary.shown), (1_000_000, 1_000_000));
    assert_eq!(out_of_order, 0, "the merge goes by interval centre");
    assert_eq!((forks, signals, tcp), (written.forks, written.signals, written.tcp));
    assert!(file.damage().is_empty());
    // A filter by run reads only that run's chunks and shows only its events.
    let mut run3 = 0u64;
    let filter = Filter { run: Some(3), ..Filter::default() };
    timeline::stream(&file, &filter, |s| {
        assert_eq!(s.placed.event.run, 3);
        run3 += 1;
        Ok::<_, std::convert::Infallible>(())
    })
    .unwrap();
    assert_eq!(run3, 1_000_000 / 20);
}

/// The window decides concurrency as the whole-array scan did: for each event, its neighbours
/// within the widest interval on other hosts that nothing orders, nearest first, at most 16.
#[test]
fn the_concurrency_window_finds_what_the_whole_scan_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("small.heisen");
    // Few events per host over a short span: the intervals (±50 µs and more) overlap widely.
    let plan = synthetic::Plan { events: 40_000, hosts: 3, runs: 4, span_ns: 200_000_000 };
    synthetic::write(&path, &plan).unwrap();
    let bundle = Bundle::read(&path).unwrap();
    let shown = timeline::build(&bundle, &Filter::default()).events;
    assert_eq!(shown.len(), bundle.hosts.iter().map(|h| h.events.len()).sum::<usize>());
    let hosts: Vec<(&str, &[heisen_recordings::Event])> =
        bundle.hosts.iter().map(|h| (h.name.as_str(), h.events.as_slice())).collect();
    let order = Order::new(hosts.len(), &heisen_recordings::recorded_edges(&hosts));
    let widest = shown.iter().map(|s| s.placed.interval.latest_ns - s.placed.interval.earliest_ns).max().unwrap();
    let mut listed = 0;
    for (i, s) in shown.iter().enumerate() {
        let centre = s.placed.interval.midpoint_ns();
        let near = |j: &usize| (shown[*j].placed.interval.midpoint_ns() - centre).abs() <= widest;
        let me = (EventRef { host: s.placed.host, seq: s.placed.event.seq }, s.placed.interval);
        let mut expected = Vec::new();
        for j in (0..i).rev().take_while(near).chain((i + 1..shown.len()).take_while(near)) {
            if expected.len() >= 16 {
                break;
            }
            let o = &shown[j].placed;
            if o.host != s.placed.host
                && order.relation(me, (EventRef { host: o.host, seq: o.event.seq }, o.interval)) == Relation::Concurrent
            {
                expected.push((shown[j].host, o.event.seq));
            }
        }
        assert_eq!(s.concurrent, expected, "event {i} ({} #{})", s.host, s.placed.event.seq);
        listed += expected.len();
    }
    assert!(listed > shown.len(), "the case has concurrency to find ({listed} pairs)");
}

/// `write_json` (the fast path of `timeline --json`) writes exactly what the contract's `to_json`
/// and `facts_json` give, for every event of a recorded capture and a synthetic one: a field
/// added to one and not the other fails here.
#[test]
fn the_fast_json_writer_writes_the_contract() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().unwrap();
    let synthetic = dir.path().join("s.heisen");
    synthetic::write(&synthetic, &synthetic::Plan { events: 30_000, hosts: 3, runs: 3, span_ns: 50_000_000 }).unwrap();
    let mut syscalls = 0;
    for path in [root.join("recordings/bundles/mountd-sighup-small.heisen"), synthetic] {
        let file = BundleFile::open(&path).unwrap();
        timeline::stream(&file, &Filter::default(), |s| {
            let mut fast = Vec::new();
            timeline::write_json(&mut fast, &s).unwrap();
            let mut v = timeline::to_json(s.host, &s.placed);
            if let (serde_json::Value::Object(v), serde_json::Value::Object(f)) = (&mut v, timeline::facts_json(&s)) {
                v.extend(f);
            }
            assert_eq!(String::from_utf8(fast).unwrap(), serde_json::to_string(&v).unwrap());
            syscalls += (s.placed.event.kind.name() == "syscall") as usize;
            Ok::<_, std::convert::Infallible>(())
        })
        .unwrap();
    }
    assert!(syscalls > 20_000, "{syscalls}");
}
