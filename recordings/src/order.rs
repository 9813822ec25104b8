//! Causal order across hosts: which events the recording proves ordered, and which it cannot.
//!
//! Same-host order is `(host, seq)`. Across hosts, `a` is before `b` when a path of causal edges
//! leads from `a` to `b`, or when their clock intervals are disjoint; otherwise they are
//! *concurrent* — the race candidates. Edges come from the recording itself (fork -> child,
//! signal generation -> delivery) and from the coordinator's own messages (it released a hold on
//! one host only after it had seen an event on another). An edge whose clock intervals say the
//! opposite is a *clock violation*: reported, never silently "fixed".

use serde::{Deserialize, Serialize};

use crate::{Event, EventKind, Interval, SignalPhase};

/// An event by host index and sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EventRef {
    pub host: usize,
    pub seq: u64,
}

/// Why one event must precede another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EdgeKind {
    /// fork -> the child's first event.
    Fork,
    /// signal generated -> signal delivered.
    Signal,
    /// a TCP segment: the sender's state change -> the peer's (matched by address tuple).
    Tcp,
    /// the coordinator saw `from` before it sent the message that caused `to`.
    Message,
}

/// `from` happened before `to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Edge {
    pub from: EventRef,
    pub to: EventRef,
    pub kind: EdgeKind,
}

/// An event named the way the coordinator knows it while a run goes on (it does not know
/// sequence numbers yet): resolved to an [`EventRef`] when the bundle is read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    pub host: String,
    pub run: u32,
    pub what: MarkKind,
}

/// What a [`Mark`] refers to: the first matching event of the run on the host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MarkKind {
    Gate { gate: String, action: String },
    Output { process: String, text: String },
    Exit { process: String },
}

/// A coordinator message edge as recorded in the bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageEdge {
    pub from: Mark,
    pub to: Mark,
}

impl Mark {
    /// Whether `e` is the kind of event this mark names (host aside).
    pub fn matches(&self, e: &Event) -> bool {
        e.run == self.run
            && match (&self.what, &e.kind) {
                (MarkKind::Gate { gate, action }, EventKind::Gate { gate: g, action: a }) => gate == g && action == a,
                (MarkKind::Output { process, text }, EventKind::Output { name, line, .. }) => {
                    process == name && line.contains(text.as_str())
                }
                (MarkKind::Exit { process }, EventKind::Exit { exit_code, .. }) => {
                    *exit_code >= 0 && e.comm == *process
                }
                _ => false,
            }
    }

    /// The event this mark names in `hosts` (names and events per host).
    pub fn resolve(&self, hosts: &[(&str, &[Event])]) -> Option<EventRef> {
        let host = hosts.iter().position(|(name, _)| *name == self.host)?;
        hosts[host].1.iter().find(|e| self.matches(e)).map(|e| EventRef { host, seq: e.seq })
    }
}

/// A TCP state change: (from, to).
type Transition = (&'static str, &'static str);

/// TCP transitions that send a segment, and the peer's transition that receives it:
/// the final ACK of the handshake, the first FIN, the second FIN.
const TCP_PAIRS: &[(Transition, Transition)] = &[
    (("SYN_SENT", "ESTABLISHED"), ("SYN_RECV", "ESTABLISHED")),
    (("ESTABLISHED", "FIN_WAIT1"), ("ESTABLISHED", "CLOSE_WAIT")),
    (("CLOSE_WAIT", "LAST_ACK"), ("FIN_WAIT2", "TIME_WAIT")),
];

/// Cross-host TCP edges: a sender's transition -> the first later-unmatched transition of the
/// socket with the mirrored address tuple, on any host.
fn tcp_edges(hosts: &[(&str, &[Event])]) -> Vec<Edge> {
    type Key<'a> = (&'a str, &'a str, &'a str, &'a str);
    let mut receivers: std::collections::HashMap<Key<'_>, std::collections::VecDeque<EventRef>> = Default::default();
    let mut senders: Vec<(Key<'_>, EventRef)> = Vec::new();
    for (host, (_, events)) in hosts.iter().enumerate() {
        for e in events.iter() {
            if let EventKind::Socket { local, remote, from_state, to_state } = &e.kind {
                let at = EventRef { host, seq: e.seq };
                for ((sf, st), (rf, rt)) in TCP_PAIRS {
                    if from_state == sf && to_state == st {
                        // What the peer's socket will record: its local is our remote.
                        senders.push(((remote.as_str(), local.as_str(), rf, rt), at));
                    }
                    if from_state == rf && to_state == rt {
                        receivers.entry((local.as_str(), remote.as_str(), rf, rt)).or_default().push_back(at);
                    }
                }
            }
        }
    }
    senders
        .into_iter()
        .filter_map(|(key, from)| {
            let to = receivers.get_mut(&key)?.pop_front()?;
            Some(Edge { from, to, kind: EdgeKind::Tcp })
        })
        .collect()
}

/// Edges the recording itself proves: fork -> child's first event, signal generation -> delivery,
/// and TCP segments between sockets of different hosts.
pub fn recorded_edges(hosts: &[(&str, &[Event])]) -> Vec<Edge> {
    let names: Vec<&str> = hosts.iter().map(|(n, _)| *n).collect();
    let mut finder = EdgeFinder::new(&names, &[]);
    for (host, (_, events)) in hosts.iter().enumerate() {
        for e in events.iter() {
            finder.push(host, e);
        }
    }
    finder.finish().into_iter().map(|f| f.edge).collect()
}

/// An edge found by [`EdgeFinder`], with the host-clock stamps of its two events (so whether it
/// contradicts the clocks can be decided without the events).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Found {
    pub edge: Edge,
    pub from_raw_ns: i64,
    pub to_raw_ns: i64,
}

/// Finds a capture's edges as its events stream by (hosts in any interleaving, each host in seq
/// order), holding only what an edge may still need: forks whose child has not yet been seen,
/// signals not yet delivered, the TCP transitions, and the events the coordinator's marks name.
/// Memory does not grow with the number of events, only with those few.
///
/// Same-host edges (fork, signal) order nothing that `(host, seq)` does not already order, so a
/// reader may find them as it shows the events ([`EdgeFinder::same_host`]) and the cross-host
/// ones beforehand from the few chunks that hold sockets and marks ([`EdgeFinder::cross_host`]).
pub struct EdgeFinder<'m> {
    names: Vec<String>,
    marks: &'m [MessageEdge],
    /// Per mark edge: its `from` and `to` once seen (the first match wins).
    resolved: Vec<[Option<(EventRef, i64)>; 2]>,
    found: Vec<Found>,
    waiting_child: std::collections::HashMap<(usize, i32), (u64, i64)>,
    waiting_signal: std::collections::HashMap<(usize, i32, i32), (u64, i64)>,
    /// Per host, its TCP state changes.
    sockets: Vec<Vec<Event>>,
    same_host: bool,
    cross_host: bool,
}

impl<'m> EdgeFinder<'m> {
    /// Every edge: same-host and cross-host, all returned by `finish`.
    pub fn new(hosts: &[&str], marks: &'m [MessageEdge]) -> EdgeFinder<'m> {
        EdgeFinder {
            names: hosts.iter().map(|h| h.to_string()).collect(),
            marks,
            resolved: vec![[None, None]; marks.len()],
            found: Vec::new(),
            waiting_child: Default::default(),
            waiting_signal: Default::default(),
            sockets: vec![Vec::new(); hosts.len()],
            same_host: true,
            cross_host: true,
        }
    }

    /// Only the edges between hosts (TCP segments, the coordinator's messages).
    pub fn cross_host(hosts: &[&str], marks: &'m [MessageEdge]) -> EdgeFinder<'m> {
        EdgeFinder { same_host: false, ..EdgeFinder::new(hosts, marks) }
    }

    /// Only the edges within a host (fork, signal), each returned by `push` as its target
    /// streams by and not kept.
    pub fn same_host(hosts: &[&str]) -> EdgeFinder<'m> {
        EdgeFinder { cross_host: false, ..EdgeFinder::new(hosts, &[]) }
    }

    /// The next event of host `host` (an index into the names given to `new`); returns the
    /// same-host edges into it: from a fork (it is the child's first event) and from a signal's
    /// generation (it is the delivery).
    pub fn push(&mut self, host: usize, e: &Event) -> [Option<Found>; 2] {
        let at = |seq| EventRef { host, seq };
        let mut into = [None, None];
        if self.same_host {
            if let Some((parent, raw)) = self.waiting_child.remove(&(host, e.pid)) {
                let edge = Edge { from: at(parent), to: at(e.seq), kind: EdgeKind::Fork };
                into[0] = Some(Found { edge, from_raw_ns: raw, to_raw_ns: e.raw_ns });
            }
            match &e.kind {
                EventKind::Fork { child_pid, .. } => {
                    self.waiting_child.insert((host, *child_pid), (e.seq, e.raw_ns));
                }
                EventKind::Signal { signal, target_pid, phase: SignalPhase::Generate, .. } => {
                    self.waiting_signal.insert((host, *target_pid, *signal), (e.seq, e.raw_ns));
                }
                EventKind::Signal { signal, target_pid, phase: SignalPhase::Deliver, .. } => {
                    if let Some((from, raw)) = self.waiting_signal.remove(&(host, *target_pid, *signal)) {
                        let edge = Edge { from: at(from), to: at(e.seq), kind: EdgeKind::Signal };
                        into[1] = Some(Found { edge, from_raw_ns: raw, to_raw_ns: e.raw_ns });
                    }
                }
                _ => {}
            }
            if self.cross_host {
                self.found.extend(into.iter().flatten());
            }
        }
        if self.cross_host {
            match &e.kind {
                EventKind::Socket { .. } => {
                    if let Some(list) = self.sockets.get_mut(host) {
                        list.push(e.clone());
                    }
                }
                EventKind::Gate { .. } | EventKind::Output { .. } | EventKind::Exit { .. } => {
                    let name = self.names.get(host).map(String::as_str);
                    for (k, m) in self.marks.iter().enumerate() {
                        for (end, mark) in [&m.from, &m.to].into_iter().enumerate() {
                            if self.resolved[k][end].is_none() && name == Some(mark.host.as_str()) && mark.matches(e) {
                                self.resolved[k][end] = Some((at(e.seq), e.raw_ns));
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        into
    }

    /// Every edge found: the ones seen as they streamed, the TCP segments matched across hosts,
    /// and the coordinator's messages whose two marks were both seen.
    pub fn finish(self) -> Vec<Found> {
        let mut found = self.found;
        let hosts: Vec<(&str, &[Event])> =
            self.names.iter().map(String::as_str).zip(self.sockets.iter().map(Vec::as_slice)).collect();
        let raw = |r: EventRef| {
            let events = hosts[r.host].1;
            events.binary_search_by_key(&r.seq, |e| e.seq).map(|i| events[i].raw_ns).unwrap_or(0)
        };
        for edge in tcp_edges(&hosts) {
            found.push(Found { edge, from_raw_ns: raw(edge.from), to_raw_ns: raw(edge.to) });
        }
        for [from, to] in self.resolved {
            if let (Some((from, from_raw_ns)), Some((to, to_raw_ns))) = (from, to) {
                found.push(Found { edge: Edge { from, to, kind: EdgeKind::Message }, from_raw_ns, to_raw_ns });
            }
        }
        found
    }
}

/// What the recording can say about the order of two events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Relation {
    Before,
    After,
    /// Nothing recorded orders them: a race candidate.
    Concurrent,
}

/// The causal order of a capture: happens-before through edges, closed transitively.
pub struct Order {
    hosts: usize,
    /// Per host, edge targets in seq order with, per host, the highest seq known to precede them
    /// (-1: none), already taken as a running maximum along the host.
    known: Vec<Vec<(u64, Vec<i64>)>>,
}

impl Order {
    /// Closes `edges` transitively (vector clocks at edge targets, iterated to a fixed point).
    pub fn new(hosts: usize, edges: &[Edge]) -> Order {
        let mut known: Vec<Vec<(u64, Vec<i64>)>> = vec![Vec::new(); hosts];
        for e in edges.iter().filter(|e| e.from.host < hosts && e.to.host < hosts) {
            let list = &mut known[e.to.host];
            let i = match list.binary_search_by_key(&e.to.seq, |(s, _)| *s) {
                Ok(i) => i,
                Err(i) => {
                    let mut vc = vec![-1; hosts];
                    vc[e.to.host] = e.to.seq as i64;
                    list.insert(i, (e.to.seq, vc));
                    i
                }
            };
            let slot = &mut list[i].1[e.from.host];
            *slot = (*slot).max(e.from.seq as i64);
        }
        let mut order = Order { hosts, known };
        // Each pass carries knowledge one more hop; at most one pass per edge is ever needed.
        for _ in 0..=edges.len() {
            order.running_max();
            let mut changed = false;
            for e in edges.iter().filter(|e| e.from.host < hosts && e.to.host < hosts) {
                let before = order.prefix(e.from.host, e.from.seq);
                let i = order.known[e.to.host].binary_search_by_key(&e.to.seq, |(s, _)| *s).expect("target present");
                for (h, v) in before.into_iter().enumerate() {
                    let slot = &mut order.known[e.to.host][i].1[h];
                    if v > *slot {
                        *slot = v;
                        changed = true;
                    }
                }
            }
            if !changed {
                break;
            }
        }
        order.running_max();
        order
    }

    fn running_max(&mut self) {
        for list in &mut self.known {
            for i in 1..list.len() {
                let (head, tail) = list.split_at_mut(i);
                let prev = &head[i - 1].1;
                for (slot, p) in tail[0].1.iter_mut().zip(prev) {
                    *slot = (*slot).max(*p);
                }
            }
        }
    }

    /// Per host, the highest seq known to precede (or be) `seq` on `host`.
    fn prefix(&self, host: usize, seq: u64) -> Vec<i64> {
        let list = &self.known[host];
        let i = list.partition_point(|(s, _)| *s <= seq);
        let mut vc = if i == 0 { vec![-1; self.hosts] } else { list[i - 1].1.clone() };
        vc[host] = vc[host].max(seq as i64);
        vc
    }

    /// True when a causal path leads from `a` to `b` (or `a` precedes `b` on one host).
    pub fn happens_before(&self, a: EventRef, b: EventRef) -> bool {
        if a.host == b.host {
            return a.seq < b.seq;
        }
        if b.host >= self.hosts || a.host >= self.hosts {
            return false;
        }
        // prefix(b)[a.host], without building the vector: this runs for every pair the
        // timeline weighs.
        let list = &self.known[b.host];
        let i = list.partition_point(|(s, _)| *s <= b.seq);
        i > 0 && list[i - 1].1[a.host] >= a.seq as i64
    }

    /// Order of `a` relative to `b`: causal paths first, then disjoint clock intervals.
    pub fn relation(&self, a: (EventRef, Interval), b: (EventRef, Interval)) -> Relation {
        if self.happens_before(a.0, b.0) {
            Relation::Before
        } else if self.happens_before(b.0, a.0) {
            Relation::After
        } else if a.1.before(&b.1) {
            Relation::Before
        } else if b.1.before(&a.1) {
            Relation::After
        } else {
            Relation::Concurrent
        }
    }
}

/// An edge whose clock intervals put its effect strictly before its cause.
pub fn violates_clocks(from: &Interval, to: &Interval) -> bool {
    to.before(from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(host: usize, seq: u64) -> EventRef {
        EventRef { host, seq }
    }

    fn iv(earliest_ns: i64, latest_ns: i64) -> Interval {
        Interval { earliest_ns, latest_ns }
    }

    /// Three hosts; a message chain 0#5 -> 1#3, then 1#4 -> 2#10.
    fn chain() -> Order {
        let m = |from, to| Edge { from, to, kind: EdgeKind::Message };
        Order::new(3, &[m(r(0, 5), r(1, 3)), m(r(1, 4), r(2, 10))])
    }

    #[test]
    fn happens_before_follows_paths_transitively() {
        let order = chain();
        let cases = [
            (r(0, 5), r(1, 3), true),
            (r(0, 4), r(1, 9), true),  // earlier on host 0, later on host 1
            (r(0, 6), r(1, 3), false), // after the send
            (r(1, 2), r(0, 9), false), // no edge back
            (r(0, 1), r(2, 10), true), // two hops
            (r(0, 1), r(2, 9), false), // before the second hop arrives
            (r(1, 3), r(1, 4), true),
            (r(2, 10), r(2, 10), false),
        ];
        for (a, b, expected) in cases {
            assert_eq!(order.happens_before(a, b), expected, "{a:?} -> {b:?}");
        }
    }

    #[test]
    fn relation_prefers_paths_then_disjoint_intervals() {
        let order = chain();
        let cases = [
            // causal path wins even when the intervals overlap
            ((r(0, 5), iv(100, 200)), (r(1, 3), iv(150, 250)), Relation::Before),
            // no path, disjoint intervals
            ((r(1, 0), iv(0, 10)), (r(0, 9), iv(20, 30)), Relation::Before),
            ((r(1, 0), iv(20, 30)), (r(0, 9), iv(0, 10)), Relation::After),
            // no path, overlapping intervals: concurrent
            ((r(1, 0), iv(0, 25)), (r(0, 9), iv(20, 30)), Relation::Concurrent),
        ];
        for (a, b, expected) in cases {
            assert_eq!(order.relation(a, b), expected, "{a:?} vs {b:?}");
        }
        assert!(violates_clocks(&iv(100, 110), &iv(50, 60)));
        assert!(!violates_clocks(&iv(100, 110), &iv(105, 160)));
    }

    #[test]
    fn tcp_edges_pair_mirrored_tuples_across_hosts() {
        let sock = |seq, local: &str, remote: &str, from: &str, to: &str| Event {
            seq,
            raw_ns: 0,
            pid: 0,
            comm: String::new(),
            run: 0,
            kind: EventKind::Socket {
                local: local.into(),
                remote: remote.into(),
                from_state: from.into(),
                to_state: to.into(),
            },
        };
        let (c, s) = ("10.0.0.3:4000", "10.0.0.2:7070");
        let client = vec![
            sock(0, c, s, "SYN_SENT", "ESTABLISHED"),
            sock(1, c, s, "ESTABLISHED", "FIN_WAIT1"),
            sock(2, c, s, "FIN_WAIT2", "TIME_WAIT"),
        ];
        let server = vec![
            sock(0, s, c, "SYN_RECV", "ESTABLISHED"),
            sock(1, s, "10.0.0.9:1", "SYN_RECV", "ESTABLISHED"), // another client
            sock(2, s, c, "ESTABLISHED", "CLOSE_WAIT"),
            sock(3, s, c, "CLOSE_WAIT", "LAST_ACK"),
        ];
        let edges = recorded_edges(&[("client", &client), ("server", &server)]);
        let got: Vec<_> = edges.iter().map(|e| ((e.from.host, e.from.seq), (e.to.host, e.to.seq), e.kind)).collect();
        assert_eq!(
            got,
            vec![((0, 0), (1, 0), EdgeKind::Tcp), ((0, 1), (1, 2), EdgeKind::Tcp), ((1, 3), (0, 2), EdgeKind::Tcp)]
        );
    }

    #[test]
    fn recorded_edges_link_forks_and_signals() {
        let ev = |seq, pid, kind| Event { seq, raw_ns: seq as i64, pid, comm: String::new(), run: 0, kind };
        let signal = |phase| EventKind::Signal {
            signal: 1,
            sender_pid: 10,
            sender_comm: String::new(),
            target_pid: 20,
            target_comm: String::new(),
            phase,
            result: 0,
        };
        let events = vec![
            ev(0, 10, EventKind::Fork { parent_pid: 10, child_pid: 11 }),
            ev(1, 10, signal(SignalPhase::Generate)),
            ev(2, 11, EventKind::Exit { exit_code: 0, killed_by: None }),
            ev(3, 20, signal(SignalPhase::Deliver)),
        ];
        let edges = recorded_edges(&[("h", &events)]);
        assert_eq!(
            edges.iter().map(|e| (e.from.seq, e.to.seq, e.kind)).collect::<Vec<_>>(),
            vec![(0, 2, EdgeKind::Fork), (1, 3, EdgeKind::Signal)]
        );
    }
}
