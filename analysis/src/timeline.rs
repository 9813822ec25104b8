//! The merged timeline of a bundle, as text for people and as the JSON contract of
//! `heisen timeline --json`: fields are only ever added, never renamed or removed.

use crate::AnalysisError;
use std::borrow::Borrow;
use std::collections::{HashMap, VecDeque};

use heisen_recordings::{
    errno_name, signal_name, violates_clocks, Bundle, BundleFile, ClockModel, Edge, EdgeFinder, EdgeKind, Event,
    EventKind, EventRef, Interval, Merge, Order, Placed, Relation, SignalPhase, Superseded,
};
use serde_json::{json, Value};

/// Which events to show.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub hosts: Vec<String>,
    pub run: Option<u32>,
    pub kinds: Vec<String>,
    /// Only events of these pids (thread ids) when not empty.
    pub pids: Vec<i32>,
    /// Only events of processes with these names when not empty.
    pub comms: Vec<String>,
    /// Only these syscalls (names, already expanded from classes) when not empty.
    pub syscalls: Vec<String>,
    /// Only events whose place on the coordinator's timeline is at or after this (ns since the
    /// capture's start)...
    pub since_ns: Option<i64>,
    /// ... and at or before this.
    pub until_ns: Option<i64>,
    /// Hide noise: SIGCHLD, successful syscalls on stdio, forks, and the execs of shims a
    /// process ran on its way to its program (its final exec names them).
    pub essentials: bool,
}

impl Filter {
    /// Whether the filter names only hosts, kinds and runs the capture has: a typo is an error
    /// that lists the choices, never an empty timeline.
    pub fn check(&self, file: &BundleFile) -> Result<(), AnalysisError> {
        let bundle = file.head();
        if let Some(host) = self.hosts.iter().find(|h| bundle.host(h).is_none()) {
            let names: Vec<&str> = bundle.hosts.iter().map(|h| h.name.as_str()).collect();
            return Err(AnalysisError::NoHost {
                host: host.clone(),
                capture: bundle.capture_id.clone(),
                hosts: names.join(", "),
            });
        }
        if let Some(kind) = self.kinds.iter().find(|k| !EventKind::NAMES.contains(&k.as_str())) {
            return Err(AnalysisError::NoKind { kind: kind.clone(), kinds: EventKind::NAMES.join(", ") });
        }
        if let Some(run) = self.run {
            let mut runs: std::collections::BTreeSet<u32> = bundle.runs.iter().map(|r| r.run).collect();
            runs.extend(file.event_runs());
            if !runs.contains(&run) {
                let list: Vec<String> = runs.iter().map(u32::to_string).collect();
                return Err(AnalysisError::NoRun {
                    run,
                    capture: bundle.capture_id.clone(),
                    runs: if list.is_empty() { "none".into() } else { list.join(", ") },
                });
            }
        }
        Ok(())
    }

    /// Whether an event is shown; `started_ns` is the capture's start (for --since/--until).
    fn keeps(&self, host: &str, p: &Placed<Event>, started_ns: i64) -> bool {
        if !self.hosts.is_empty() && !self.hosts.iter().any(|h| h == host) {
            return false;
        }
        if self.run.is_some_and(|r| r != p.event.run) {
            return false;
        }
        if !self.kinds.is_empty() && !self.kinds.iter().any(|k| k == p.event.kind.name()) {
            return false;
        }
        if !self.pids.is_empty() && !self.pids.contains(&p.event.pid) {
            return false;
        }
        if !self.comms.is_empty() && !self.comms.contains(&p.event.comm) {
            return false;
        }
        if !self.syscalls.is_empty()
            && !matches!(&p.event.kind, EventKind::Syscall { name, .. } if self.syscalls.contains(name))
        {
            return false;
        }
        let at = p.interval.midpoint_ns().saturating_sub(started_ns);
        if self.since_ns.is_some_and(|s| at < s) || self.until_ns.is_some_and(|u| at > u) {
            return false;
        }
        if self.essentials {
            return match &p.event.kind {
                EventKind::Signal { signal, .. } => *signal != libc::SIGCHLD,
                EventKind::Fork { .. } => false,
                EventKind::Syscall { name, ret, fd_path, args, .. } => {
                    let quiet_error = matches!(name.as_str(), "openat" | "open") && (*ret == -2 || *ret == -11);
                    let control = matches!(
                        name.as_str(),
                        "kill"
                            | "tgkill"
                            | "tkill"
                            | "rt_sigqueueinfo"
                            | "pidfd_send_signal"
                            | "mount"
                            | "umount2"
                            | "flock"
                            | "connect"
                            | "bind"
                            | "accept"
                            | "accept4"
                            | "shutdown"
                    );
                    // Calls that change a file or what a name points to.
                    let changes = matches!(
                        name.as_str(),
                        "rename"
                            | "renameat"
                            | "renameat2"
                            | "unlink"
                            | "unlinkat"
                            | "rmdir"
                            | "mkdir"
                            | "mkdirat"
                            | "link"
                            | "linkat"
                            | "symlink"
                            | "symlinkat"
                            | "truncate"
                            | "ftruncate"
                            | "fsync"
                            | "fdatasync"
                            | "creat"
                            | "chmod"
                            | "fchmodat"
                            | "chown"
                            | "lchown"
                            | "fchownat"
                    );
                    let opens_for_writing = match name.as_str() {
                        "openat" => args.get(2).is_some_and(|f| f & 0o1103 != 0),
                        "open" => args.get(1).is_some_and(|f| f & 0o1103 != 0),
                        _ => false,
                    };
                    let on_socket = fd_path.as_deref().is_some_and(|p| p.starts_with("socket:"));
                    let on_deleted = fd_path.as_deref().is_some_and(|p| p.ends_with("(deleted)"));
                    (*ret < 0 && !quiet_error) || control || changes || opens_for_writing || on_socket || on_deleted
                }
                _ => true,
            };
        }
        true
    }
}

/// A merged timeline with what the recording proves about order.
pub struct Timeline<'a> {
    /// The shown events, in merged order.
    pub events: Vec<Shown<'a>>,
    /// Edges whose clock intervals contradict them.
    pub violations: usize,
}

/// One shown event with its order facts.
pub struct Shown<'a> {
    pub host: &'a str,
    pub placed: Placed<Event>,
    /// Causal edges into this event: (source, its host, kind, contradicts the clocks).
    pub caused_by: Vec<(EventRef, &'a str, EdgeKind, bool)>,
    /// Shown events on other hosts that nothing orders relative to this one.
    pub concurrent: Vec<(&'a str, u64)>,
}

/// What a streamed timeline found besides its events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Events shown.
    pub shown: u64,
    /// Edges whose clock intervals contradict them.
    pub violations: usize,
}

/// At most this many concurrent events are listed per event.
const MAX_CONCURRENT: usize = 16;
/// At most this many events wait in the concurrency window (and as many emitted ones are kept as
/// neighbours): memory stays bounded even where a host's stamps run far out of its seq order
/// (events read late from another CPU's buffer). Only there can a neighbour be missed.
const MAX_WINDOW: usize = 1 << 14;

/// Events of `bundle` in merged order, filtered, with causal edges and concurrency, in memory.
pub fn build<'a>(bundle: &'a Bundle, filter: &Filter) -> Timeline<'a> {
    let names: Vec<&'a str> = bundle.hosts.iter().map(|h| h.name.as_str()).collect();
    let file = BundleFile::from_bundle(std::path::Path::new(&bundle.capture_id), bundle.clone());
    let mut events = Vec::new();
    let summary = walk(&file, &names, filter, |s| {
        events.push(s);
        Ok::<(), std::convert::Infallible>(())
    });
    let Ok(summary) = summary;
    Timeline { events, violations: summary.violations }
}

/// Events of `bundle` in merged order, filtered (without order facts).
pub fn merged<'a>(bundle: &'a Bundle, filter: &Filter) -> Vec<(&'a str, Placed<Event>)> {
    build(bundle, filter).events.into_iter().map(|s| (s.host, s.placed)).collect()
}

/// The merged timeline of `file`, filtered, each event handed to `emit` in merged order with its
/// causal edges and concurrency, in memory bounded by the clock error, not the capture's size:
/// one pass finds the edges (holding only what an edge may still need), a second merges the
/// hosts' streams a chunk at a time, skipping chunks the filter rules out, and decides
/// concurrency in a window as wide as the widest clock interval. Damage met while reading ends
/// that host's stream with a `lost` event; [`BundleFile::damage`] names it afterwards.
pub fn stream<'f, E>(
    file: &'f BundleFile,
    filter: &Filter,
    emit: impl FnMut(Shown<'f>) -> Result<(), E>,
) -> Result<Summary, E> {
    let names: Vec<&'f str> = file.head().hosts.iter().map(|h| h.name.as_str()).collect();
    walk(file, &names, filter, emit)
}

/// A shown event waiting in the concurrency window, and the light facts of one kept as a
/// neighbour after it was emitted.
struct Near {
    at: EventRef,
    interval: Interval,
}

fn walk<'a, E>(
    file: &BundleFile,
    names: &[&'a str],
    filter: &Filter,
    mut emit: impl FnMut(Shown<'a>) -> Result<(), E>,
) -> Result<Summary, E> {
    let head = file.head();
    let n = names.len();
    let clocks: Vec<ClockModel> = head.hosts.iter().map(|h| h.clock.clone()).collect();
    let interval = |host: usize, raw: i64| {
        let c = &clocks[host];
        let centre = c.centre(raw);
        let error = c.error_at(centre);
        Interval { earliest_ns: centre - error, latest_ns: centre + error }
    };

    // Pass 1, over the few chunks that hold them: the edges between hosts (sockets, the
    // coordinator's marks) and, for the essentials, the shims (execs, forks, exits).
    let marks = !head.causal.is_empty();
    let needed = |c: &heisen_recordings::ChunkEntry| {
        c.has_kind("socket")
            || (marks && (c.has_kind("gate") || c.has_kind("output") || c.has_kind("exit")))
            || (filter.essentials && (c.has_kind("exec") || c.has_kind("fork") || c.has_kind("exit")))
    };
    let mut finder = EdgeFinder::cross_host(names, &head.causal);
    let mut shims: Vec<Superseded> = (0..n).map(|_| Superseded::default()).collect();
    for (host, shims) in shims.iter_mut().enumerate() {
        for e in file.host_events_where(host, needed) {
            finder.push(host, &e);
            if filter.essentials {
                shims.push(&e);
            }
        }
    }
    let found = finder.finish();
    let edges: Vec<Edge> = found.iter().map(|f| f.edge).collect();
    let order = Order::new(n, &edges);
    let mut into: HashMap<EventRef, Vec<(EventRef, &'a str, EdgeKind, bool)>> = HashMap::new();
    let mut violations = 0;
    for f in &found {
        let bad = violates_clocks(&interval(f.edge.from.host, f.from_raw_ns), &interval(f.edge.to.host, f.to_raw_ns));
        violations += bad as usize;
        into.entry(f.edge.to).or_default().push((f.edge.from, names[f.edge.from.host], f.edge.kind, bad));
    }
    // The widest interval of any event: twice the largest error bound over each host's span.
    let widest = (0..n)
        .filter_map(|h| file.host_span(h).map(|(lo, hi)| (h, lo, hi)))
        .map(|(h, lo, hi)| 2 * clocks[h].max_error_between(clocks[h].centre(lo), clocks[h].centre(hi)))
        .max()
        .unwrap_or(0);

    // Pass 2: merge the shown hosts' streams; the edges within a host are found as they pass.
    let started = head.started_ns;
    let streams = (0..n)
        .map(|h| {
            let shown_host = filter.hosts.is_empty() || filter.hosts.iter().any(|x| x == names[h]);
            (file.host_events_where(h, |_| shown_host), clocks[h].clone())
        })
        .collect();
    let mut local = EdgeFinder::same_host(names);
    let mut near: VecDeque<Near> = VecDeque::new();
    // Global index of near[0]; pending[k] is the event at global index pending_base + k.
    let mut near_base = 0usize;
    let mut pending: VecDeque<Shown<'a>> = VecDeque::new();
    let mut pending_base = 0usize;
    let mut shown = 0u64;
    let mut newest = i64::MIN;
    let mut flush = |near: &mut VecDeque<Near>,
                     near_base: &mut usize,
                     pending: &mut VecDeque<Shown<'a>>,
                     pending_base: &mut usize,
                     newest: Option<i64>|
     -> Result<(), E> {
        while let Some(first) = pending.front() {
            let centre = first.placed.interval.midpoint_ns();
            // Waits until an event farther than the window has arrived (the high-water mark of
            // the centres: a host whose stamps go back in its seq order must not stall the
            // window), or the window is full.
            let full = pending.len() > MAX_WINDOW;
            if !full && newest.is_some_and(|newest| newest - centre <= widest) {
                break;
            }
            let mut s = pending.pop_front().expect("a pending event");
            let pos = *pending_base - *near_base;
            *pending_base += 1;
            let close = |j: &usize| (near[*j].interval.midpoint_ns() - centre).abs() <= widest;
            let earlier = (0..pos).rev().take_while(close);
            let later = (pos + 1..near.len()).take_while(close);
            let me = (near[pos].at, near[pos].interval);
            for j in earlier.chain(later) {
                if s.concurrent.len() >= MAX_CONCURRENT {
                    break;
                }
                let other = &near[j];
                if other.at.host != me.0.host && order.relation(me, (other.at, other.interval)) == Relation::Concurrent
                {
                    s.concurrent.push((names[other.at.host], other.at.seq));
                }
            }
            emit(s)?;
            // Neighbours farther back than the window from the next event to emit are no longer needed.
            let next_centre = pending.front().map_or(i64::MAX, |p| p.placed.interval.midpoint_ns());
            while *near_base < *pending_base
                && (*pending_base - *near_base > MAX_WINDOW
                    || near.front().is_some_and(|f| next_centre.saturating_sub(f.interval.midpoint_ns()) > widest))
            {
                near.pop_front();
                *near_base += 1;
            }
        }
        Ok(())
    };
    for p in Merge::new(streams) {
        let within = local.push(p.host, &p.event);
        let mut caused_by = Vec::new();
        for f in within.iter().flatten() {
            let bad = violates_clocks(&interval(f.edge.from.host, f.from_raw_ns), &p.interval);
            violations += bad as usize;
            caused_by.push((f.edge.from, names[f.edge.from.host], f.edge.kind, bad));
        }
        if shims.get(p.host).is_some_and(|s| s.found.contains(&p.event.seq)) {
            continue;
        }
        if !filter.keeps(names[p.host], &p, started) {
            continue;
        }
        let at = EventRef { host: p.host, seq: p.event.seq };
        near.push_back(Near { at, interval: p.interval });
        let centre = p.interval.midpoint_ns();
        newest = newest.max(centre);
        if let Some(across) = into.remove(&at) {
            caused_by.splice(0..0, across);
        }
        pending.push_back(Shown { host: names[p.host], caused_by, placed: p, concurrent: Vec::new() });
        shown += 1;
        flush(&mut near, &mut near_base, &mut pending, &mut pending_base, Some(newest))?;
    }
    flush(&mut near, &mut near_base, &mut pending, &mut pending_base, None)?;
    Ok(Summary { shown, violations })
}

/// The order facts of a shown event, added to its JSON.
pub fn facts_json(shown: &Shown<'_>) -> Value {
    json!({
        "caused_by": shown.caused_by.iter().map(|(from, host, kind, bad)| json!({
            "host": host, "seq": from.seq, "kind": kind, "violates_clocks": bad,
        })).collect::<Vec<_>>(),
        "concurrent": shown.concurrent.iter().map(|(host, seq)| json!({"host": host, "seq": seq})).collect::<Vec<_>>(),
    })
}

/// One shown event with its order facts as the JSON contract has it: exactly what `to_json`
/// merged with `facts_json` serializes to, written without building a `Value` for the calls
/// that make up most of a large capture (a map per event cost 5 µs; `timeline --jsonl` of a
/// million events was bound by it).
pub fn write_json(out: &mut impl std::io::Write, s: &Shown<'_>) -> serde_json::Result<()> {
    let e = &s.placed.event;
    let EventKind::Syscall { name, args, ret, enter_ns, fd_path, strings, addr, path_from } = &e.kind else {
        let mut v = to_json(s.host, &s.placed);
        if let (Value::Object(v), Value::Object(facts)) = (&mut v, facts_json(s)) {
            v.extend(facts);
        }
        return serde_json::to_writer(out, &v);
    };
    // Fields in the byte order of their names, as a JSON map of the contract sorts them.
    #[derive(serde::Serialize)]
    struct SyscallJson<'a> {
        addr: &'a Option<String>,
        args: &'a [u64],
        call: String,
        caused_by: Vec<CauseJson<'a>>,
        comm: &'a str,
        concurrent: Vec<NearJson<'a>>,
        duration_ns: i64,
        earliest_ns: i64,
        enter_ns: i64,
        errno: Option<&'static str>,
        fd_path: &'a Option<String>,
        host: &'a str,
        kind: &'static str,
        latest_ns: i64,
        name: &'a str,
        path_from: &'a Option<heisen_recordings::PathFrom>,
        pid: i32,
        raw_ns: i64,
        ret: i64,
        run: u32,
        seq: u64,
        strings: &'a [String],
    }
    #[derive(serde::Serialize)]
    struct CauseJson<'a> {
        host: &'a str,
        kind: EdgeKind,
        seq: u64,
        violates_clocks: bool,
    }
    #[derive(serde::Serialize)]
    struct NearJson<'a> {
        host: &'a str,
        seq: u64,
    }
    let json = SyscallJson {
        addr,
        args,
        call: crate::strace::call(name, args, *ret, strings, addr.as_deref(), fd_path.as_deref()),
        caused_by: s
            .caused_by
            .iter()
            .map(|(from, host, kind, bad)| CauseJson { host, kind: *kind, seq: from.seq, violates_clocks: *bad })
            .collect(),
        comm: &e.comm,
        concurrent: s.concurrent.iter().map(|(host, seq)| NearJson { host, seq: *seq }).collect(),
        duration_ns: e.raw_ns - enter_ns,
        earliest_ns: s.placed.interval.earliest_ns,
        enter_ns: *enter_ns,
        errno: (*ret < 0).then(|| errno_name(ret.saturating_neg())).flatten(),
        fd_path,
        host: s.host,
        kind: e.kind.name(),
        latest_ns: s.placed.interval.latest_ns,
        name,
        path_from,
        pid: e.pid,
        raw_ns: e.raw_ns,
        ret: *ret,
        run: e.run,
        seq: e.seq,
        strings,
    };
    serde_json::to_writer(out, &json)
}

/// One event as the JSON contract describes it.
pub fn to_json<E: Borrow<Event>>(host: &str, p: &Placed<E>) -> Value {
    let e = p.event.borrow();
    let mut v = json!({
        "host": host, "seq": e.seq, "kind": e.kind.name(), "pid": e.pid, "comm": e.comm, "run": e.run,
        "raw_ns": e.raw_ns, "earliest_ns": p.interval.earliest_ns, "latest_ns": p.interval.latest_ns,
    });
    let extra = match &e.kind {
        EventKind::Syscall { name, args, ret, enter_ns, fd_path, strings, addr, path_from } => json!({
            "name": name, "ret": ret, "errno": (*ret < 0).then(|| errno_name(ret.saturating_neg())).flatten(),
            "args": args, "enter_ns": enter_ns, "duration_ns": e.raw_ns - enter_ns, "fd_path": fd_path,
            "strings": strings, "addr": addr, "path_from": path_from,
            "call": crate::strace::call(name, args, *ret, strings, addr.as_deref(), fd_path.as_deref()),
        }),
        EventKind::Signal { signal, sender_pid, sender_comm, target_pid, target_comm, phase, result } => json!({
            "signal": signal_name(*signal), "sender_pid": sender_pid, "sender_comm": sender_comm,
            "target_pid": target_pid, "target_comm": target_comm, "phase": phase.as_str(), "result": result,
        }),
        EventKind::Exec { filename, argv, ppid, chain } => {
            json!({"filename": filename, "argv": argv, "ppid": ppid, "chain": chain})
        }
        EventKind::Fork { parent_pid, child_pid } => json!({"parent_pid": parent_pid, "child_pid": child_pid}),
        EventKind::Exit { exit_code, killed_by } => json!({
            "exit_code": exit_code,
            "killed_by": killed_by.as_ref().map(|k| json!({
                "signal": signal_name(k.signal), "sender_pid": k.sender_pid, "sender_comm": k.sender_comm,
            })),
        }),
        EventKind::Lost { count, location, from_ns } => json!({"count": count, "where": location, "from_ns": from_ns}),
        EventKind::Launch { name, role, argv } => json!({"name": name, "role": role, "argv": argv}),
        EventKind::Output { name, stream, line } => {
            json!({"name": name, "stream": stream, "line": line})
        }
        EventKind::Gate { gate, action } => json!({"gate": gate, "action": action}),
        EventKind::Socket { local, remote, from_state, to_state } => {
            json!({"local": local, "remote": remote, "from_state": from_state, "to_state": to_state})
        }
        EventKind::Lock { call, op, fd, path, ret, enter_ns } => json!({
            "call": call, "op": op, "fd": fd, "path": path, "ret": ret,
            "errno": (*ret < 0).then(|| errno_name(ret.saturating_neg())).flatten(),
            "enter_ns": enter_ns, "blocked_ns": e.raw_ns - enter_ns,
        }),
        EventKind::Cron { phase, crontab, crontab_line, command, job_pid, exit_code } => json!({
            "phase": phase, "crontab": crontab, "crontab_line": crontab_line, "command": command,
            "job_pid": job_pid, "exit_code": exit_code,
        }),
        EventKind::Attach { tracer, tracer_pid, target_pid, phase, how } => json!({
            "tracer": tracer, "tracer_pid": tracer_pid, "target_pid": target_pid, "phase": phase.as_str(), "how": how,
        }),
        EventKind::Traced { name, args, ret, enter_ns } => json!({
            "name": name, "ret": ret, "errno": (*ret < 0 && *ret >= -4095).then(|| errno_name(ret.saturating_neg())).flatten(),
            "args": args, "enter_ns": enter_ns, "duration_ns": e.raw_ns - enter_ns, "decoded": true,
        }),
        EventKind::Mount { op, source, target, fstype, options, by_pid, by_comm } => json!({
            "op": op, "source": source, "target": target, "fstype": fstype, "options": options,
            "by_pid": by_pid, "by_comm": by_comm,
        }),
    };
    if let (Value::Object(v), Value::Object(extra)) = (&mut v, extra) {
        v.extend(extra);
    }
    v
}

/// How a process ended, in words: `exit 0`, `killed by SIGHUP from kill[812]`.
fn exit_text(exit_code: i32, killed_by: Option<&heisen_recordings::KilledBy>) -> String {
    match killed_by {
        Some(k) if k.sender_pid != 0 => {
            format!("killed by {} from {}[{}]", signal_name(k.signal), k.sender_comm, k.sender_pid)
        }
        Some(k) => format!("killed by {} (sender not seen)", signal_name(k.signal)),
        None if exit_code == -1 => "exit (status not seen)".to_string(),
        None => format!("exit {exit_code}"),
    }
}

/// One event as strace prints it, after `HOST PID COMM`: a syscall as `call(args) = ret`, a
/// signal as `--- SIGHUP {si_pid=812 (remount)} ---`, an exit as `+++ exited with 0 +++`; None for
/// what strace does not show (heisen's own notes, cron and TCP facts, forks).
pub fn to_strace(host: &str, e: &Event) -> Option<String> {
    strace_call(e).map(|what| format!("{host} {} {} {what}", e.pid, e.comm))
}

/// What [`to_strace`] prints after `HOST PID COMM`: the call, signal or exit as strace shows it.
pub fn strace_call(e: &Event) -> Option<String> {
    let what = match &e.kind {
        EventKind::Syscall { name, args, ret, fd_path, strings, addr, .. } => {
            crate::strace::call(name, args, *ret, strings, addr.as_deref(), fd_path.as_deref())
        }
        EventKind::Traced { name, args, ret, .. } => {
            format!("{name}({}) = {}", args.join(", "), crate::strace::result(name, *ret, None, false))
        }
        EventKind::Lock { call, op, fd, path, ret, .. } => {
            let fd = path.as_ref().map_or_else(|| fd.to_string(), |p| format!("{fd}<{p}>"));
            format!("{call}({fd}, {op}) = {}", crate::strace::result(call, *ret, None, false))
        }
        EventKind::Signal { signal, sender_pid, sender_comm, phase: SignalPhase::Deliver, .. } => {
            let from = if *sender_pid == 0 { String::new() } else { format!(", si_pid={sender_pid} ({sender_comm})") };
            format!("--- {} {{si_signo={}{from}}} ---", signal_name(*signal), signal_name(*signal))
        }
        EventKind::Exec { filename, argv, .. } => {
            let argv: Vec<String> = argv.iter().map(|a| format!("{a:?}")).collect();
            format!("execve({filename:?}, [{}]) = 0", argv.join(", "))
        }
        EventKind::Exit { killed_by: Some(k), .. } => format!("+++ killed by {} +++", signal_name(k.signal)),
        EventKind::Exit { exit_code: -1, .. } => "+++ exited (status not seen) +++".to_string(),
        EventKind::Exit { exit_code, .. } => format!("+++ exited with {exit_code} +++"),
        _ => return None,
    };
    Some(what)
}

/// One event as a line of text: time relative to `origin_ns` with its uncertainty, host, process, what.
pub fn to_text<E: Borrow<Event>>(host: &str, p: &Placed<E>, origin_ns: i64) -> String {
    let e = p.event.borrow();
    let mid = p.interval.midpoint_ns() - origin_ns;
    let err_us = (p.interval.latest_ns - p.interval.earliest_ns) / 2 / 1_000;
    let what = match &e.kind {
        EventKind::Syscall { name, args, ret, enter_ns, fd_path, strings, addr, .. } => {
            let call = crate::strace::call(name, args, *ret, strings, addr.as_deref(), fd_path.as_deref());
            format!("{call}  ({} us)", (e.raw_ns - enter_ns) / 1_000)
        }
        EventKind::Signal { signal, sender_pid, sender_comm, target_pid, target_comm, phase, .. } => {
            let sender =
                if *sender_pid == 0 { "(sender not seen)".to_string() } else { format!("{sender_comm}[{sender_pid}]") };
            format!("{} {} {sender} -> {target_comm}[{target_pid}]", signal_name(*signal), phase.as_str())
        }
        EventKind::Exec { filename, argv, chain, .. } => {
            let via: Vec<&str> = chain.iter().map(|c| c.rsplit('/').next().unwrap_or(c)).collect();
            let via = if via.is_empty() { String::new() } else { format!("  (via {})", via.join(", ")) };
            format!("exec {filename} {}{via}", argv.join(" "))
        }
        EventKind::Fork { child_pid, .. } => format!("fork -> {child_pid}"),
        EventKind::Exit { exit_code, killed_by } => exit_text(*exit_code, killed_by.as_ref()),
        EventKind::Lost { count, location, from_ns: Some(from) } => {
            let span = (e.raw_ns - from) as f64 / 1e9;
            let what = if *count > 0 { format!("{count} events") } else { "everything".to_string() };
            format!("LOST {what} of the {span:.3} s before this ({location})")
        }
        EventKind::Lost { count, location, from_ns: None } => format!("LOST {count} events ({location})"),
        EventKind::Launch { name, role, .. } => format!("launch {role} {name}"),
        EventKind::Output { stream, line, .. } => format!("{stream}: {line}"),
        EventKind::Gate { gate, action } => format!("gate {gate} {action}"),
        EventKind::Socket { local, remote, from_state, to_state } => {
            format!("tcp {local} -> {remote} {from_state} -> {to_state}")
        }
        EventKind::Lock { call, op, path, ret, enter_ns, .. } => {
            let result = if *ret < 0 {
                format!("-1 {}", errno_name(ret.saturating_neg()).unwrap_or("E?"))
            } else {
                ret.to_string()
            };
            let path = path.as_deref().unwrap_or("(path unknown)");
            format!("lock {call}({op}) {path} = {result}  (blocked {})", duration(e.raw_ns - enter_ns))
        }
        EventKind::Mount { op, source, target, fstype, options, .. } => {
            format!("{op} {source} on {target} type {fstype} ({options})")
        }
        EventKind::Attach { tracer, tracer_pid, target_pid, phase, .. } => {
            format!("{tracer} {} by [{tracer_pid}] -> [{target_pid}]", phase.as_str())
        }
        EventKind::Traced { name, args, ret, enter_ns } => {
            let result = if (-4095..0).contains(ret) {
                format!("-1 {}", errno_name(ret.saturating_neg()).unwrap_or("E?"))
            } else {
                ret.to_string()
            };
            format!("{name}({}) = {result}  ({} us, ptrace)", args.join(", "), (e.raw_ns - enter_ns) / 1_000)
        }
        EventKind::Cron { phase, crontab, crontab_line, command, exit_code, .. } => {
            let line = if crontab_line.is_empty() {
                format!("(no crontab line matched) {command}")
            } else {
                format!("{crontab}: {crontab_line}")
            };
            match exit_code {
                Some(code) => format!("cron job {phase} exit {code}  {line}"),
                None => format!("cron job {phase}  {line}"),
            }
        }
    };
    let what = if what.chars().count() > 120 { format!("{}…", truncate(&what, 119)) } else { what };
    format!(
        "{:>10.3} ms ±{:<5} {:<8} {:>7} {:<14} {}",
        mid as f64 / 1e6,
        format!("{err_us}us"),
        host,
        e.pid,
        truncate(&e.comm, 14),
        what
    )
}

/// A duration in the unit that reads best (`12 us`, `1.503 s`).
fn duration(ns: i64) -> String {
    if ns >= 1_000_000_000 {
        format!("{:.3} s", ns as f64 / 1e9)
    } else if ns >= 1_000_000 {
        format!("{:.3} ms", ns as f64 / 1e6)
    } else {
        format!("{} us", ns / 1_000)
    }
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}
