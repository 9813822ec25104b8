//! `heisen bench`: measurements that print numbers (never asserts). Compare the figures in
//! `docs/BENCHMARKS.md`, which records them with the machine and date.

use std::time::Instant;

use heisen_recordings::{Anchor, ClockModel, Event, EventKind, Merge};
use serde::Serialize;

/// Result of `heisen bench merge`.
#[derive(Debug, Serialize)]
pub struct MergeBench {
    pub events: u64,
    pub hosts: usize,
    /// Events per second through the merge, synthetic generation included.
    pub events_per_s: f64,
    /// Events per second of generating the streams alone (the cost inside the figure above).
    pub generate_events_per_s: f64,
    /// The merge alone: total time minus generation time.
    pub merge_only_events_per_s: f64,
    /// Events per second through a bare k-way heap merge of the same streams and keys (interval
    /// centres), measured in the same run: what a merge can do at all on this machine.
    pub bare_heap_events_per_s: f64,
    /// `events_per_s` over `bare_heap_events_per_s` (aim: >= 0.5).
    pub ratio_to_bare_heap: f64,
    /// Peak resident memory of the process after the run (VmHWM).
    pub peak_rss_bytes: u64,
    /// Peak resident memory after a warm-up merge of a tenth of the events: equal figures mean
    /// memory does not grow with the number of events.
    pub peak_rss_after_tenth_bytes: u64,
}

/// Host `h` of `hosts`: events every 100 ns of its own clock, which runs `h`·1 ms ahead and
/// `h`·10 ppm fast; the clock model knows it within ±50 µs from 20 anchors.
fn stream(h: usize, n: u64) -> (impl Iterator<Item = Event>, ClockModel) {
    let offset = h as i64 * 1_000_000;
    let ppm = h as f64 * 10.0;
    let events = (0..n).map(move |i| {
        let t = i as i64 * 100 * (h as i64 + 1);
        Event {
            seq: i,
            raw_ns: t + offset + (t as f64 * ppm * 1e-6) as i64 + ((i * 7919) % 50) as i64,
            pid: h as i32,
            comm: String::new(),
            run: 0,
            kind: EventKind::Exit { exit_code: 0, killed_by: None },
        }
    });
    let span = n as i64 * 100 * (h as i64 + 1);
    let anchors = (0..20).map(|k| Anchor { at_ns: span / 20 * k, error_ns: 50_000 }).collect();
    let model =
        ClockModel { offset_ns: offset, error_ns: 50_000, drift_ppm: ppm, ref_ns: 0, drift_error_ppm: 1.0, anchors };
    (events, model)
}

fn merge_once(events: u64, hosts: usize) -> (f64, u64) {
    let per_host = events / hosts as u64;
    let streams: Vec<_> = (0..hosts).map(|h| stream(h, per_host)).collect();
    let start = Instant::now();
    let mut checksum = 0u64;
    for placed in Merge::new(streams) {
        checksum = checksum.wrapping_add(placed.event.seq ^ placed.interval.earliest_ns as u64);
    }
    (start.elapsed().as_secs_f64(), std::hint::black_box(checksum))
}

/// The same streams through a binary heap keyed by interval centre, nothing else: no interval,
/// no placement.
fn bare_heap_once(events: u64, hosts: usize) -> f64 {
    use std::cmp::Reverse;
    let per_host = events / hosts as u64;
    let mut streams: Vec<_> = (0..hosts).map(|h| stream(h, per_host)).collect();
    let start = Instant::now();
    let mut heap = std::collections::BinaryHeap::with_capacity(hosts);
    let mut heads: Vec<Option<Event>> = Vec::with_capacity(hosts);
    for (h, (s, clock)) in streams.iter_mut().enumerate() {
        let head = s.next();
        if let Some(e) = &head {
            heap.push(Reverse((clock.centre(e.raw_ns), h)));
        }
        heads.push(head);
    }
    let mut checksum = 0u64;
    while let Some(Reverse((key, h))) = heap.pop() {
        let e = heads[h].take().expect("a head for every heap entry");
        checksum = checksum.wrapping_add(e.seq ^ key as u64);
        let (s, clock) = &mut streams[h];
        heads[h] = s.next();
        if let Some(next) = &heads[h] {
            heap.push(Reverse((clock.centre(next.raw_ns), h)));
        }
    }
    std::hint::black_box(checksum);
    start.elapsed().as_secs_f64()
}

fn generate_once(events: u64, hosts: usize) -> f64 {
    let per_host = events / hosts as u64;
    let start = Instant::now();
    let mut checksum = 0i64;
    for h in 0..hosts {
        let (s, model) = stream(h, per_host);
        for e in s {
            checksum = checksum.wrapping_add(e.raw_ns ^ model.offset_ns);
        }
    }
    std::hint::black_box(checksum);
    start.elapsed().as_secs_f64()
}

fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

pub fn merge(events: u64, hosts: usize) -> MergeBench {
    let hosts = hosts.max(1);
    merge_once(events / 10, hosts);
    let peak_rss_after_tenth_bytes = peak_rss_bytes();
    let (merge_s, _) = merge_once(events, hosts);
    let bare_s = bare_heap_once(events, hosts);
    let generate_s = generate_once(events, hosts);
    let n = (events / hosts as u64 * hosts as u64) as f64;
    MergeBench {
        events: n as u64,
        hosts,
        events_per_s: n / merge_s,
        generate_events_per_s: n / generate_s,
        merge_only_events_per_s: n / (merge_s - generate_s).max(1e-9),
        bare_heap_events_per_s: n / bare_s,
        ratio_to_bare_heap: bare_s / merge_s,
        peak_rss_bytes: peak_rss_bytes(),
        peak_rss_after_tenth_bytes,
    }
}
