//! The merged timeline of a bundle, as text for people and as the JSON contract of
//! `heisen timeline --json`: fields are only ever added, never renamed or removed.

use crate::AnalysisError;
use std::collections::HashMap;

use heisen_recordings::{
    errno_name, recorded_edges, signal_name, superseded_execs, violates_clocks, Bundle, EdgeKind, Event, EventKind,
    EventRef, Interval, Merge, Order, Placed, Relation, SignalPhase,
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
    pub fn check(&self, bundle: &Bundle) -> Result<(), AnalysisError> {
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
            runs.extend(bundle.hosts.iter().flat_map(|h| h.events.iter().map(|e| e.run)));
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
    fn keeps(&self, host: &str, p: &Placed<&Event>, started_ns: i64) -> bool {
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
    pub placed: Placed<&'a Event>,
    /// Causal edges into this event: (source, kind, contradicts the clocks).
    pub caused_by: Vec<(EventRef, &'a str, EdgeKind, bool)>,
    /// Shown events on other hosts that nothing orders relative to this one.
    pub concurrent: Vec<(&'a str, u64)>,
}

/// At most this many concurrent events are listed per event.
const MAX_CONCURRENT: usize = 16;

/// Events of `bundle` in merged order, filtered, with causal edges and concurrency.
pub fn build<'a>(bundle: &'a Bundle, filter: &Filter) -> Timeline<'a> {
    let hosts: Vec<(&str, &[Event])> = bundle.hosts.iter().map(|h| (h.name.as_str(), h.events.as_slice())).collect();
    let streams = bundle.hosts.iter().map(|h| (h.events.iter(), h.clock.clone())).collect();
    let all: Vec<Placed<&Event>> = Merge::new(streams).collect();
    let interval: HashMap<EventRef, Interval> =
        all.iter().map(|p| (EventRef { host: p.host, seq: p.event.seq }, p.interval)).collect();
    let mut edges = recorded_edges(&hosts);
    for m in &bundle.causal {
        if let (Some(from), Some(to)) = (m.from.resolve(&hosts), m.to.resolve(&hosts)) {
            edges.push(heisen_recordings::Edge { from, to, kind: EdgeKind::Message });
        }
    }
    let order = Order::new(hosts.len(), &edges);
    let mut into: HashMap<EventRef, Vec<(EventRef, &str, EdgeKind, bool)>> = HashMap::new();
    let mut violations = 0;
    for e in &edges {
        let bad = match (interval.get(&e.from), interval.get(&e.to)) {
            (Some(f), Some(t)) => violates_clocks(f, t),
            _ => false,
        };
        violations += bad as usize;
        into.entry(e.to).or_default().push((e.from, hosts[e.from.host].0, e.kind, bad));
    }
    let shims: Vec<std::collections::HashSet<u64>> =
        if filter.essentials { bundle.hosts.iter().map(|h| superseded_execs(&h.events)).collect() } else { Vec::new() };
    let mut events: Vec<Shown<'a>> = all
        .into_iter()
        .map(|p| (hosts[p.host].0, p))
        .filter(|(_, p)| shims.get(p.host).is_none_or(|s| !s.contains(&p.event.seq)))
        .filter(|(host, p)| filter.keeps(host, p, bundle.started_ns))
        .map(|(host, placed)| {
            let at = EventRef { host: placed.host, seq: placed.event.seq };
            Shown { host, caused_by: into.remove(&at).unwrap_or_default(), placed, concurrent: Vec::new() }
        })
        .collect();
    // Intervals are bounded, so only neighbours within the widest interval can overlap. The
    // merge orders events by their interval's centre: each direction stops at the first event
    // farther than that (O(n·w), w the events within one clock error; it was O(n²) backwards).
    let widest = events.iter().map(|s| s.placed.interval.latest_ns - s.placed.interval.earliest_ns).max().unwrap_or(0);
    for i in 0..events.len() {
        let centre = events[i].placed.interval.midpoint_ns();
        let mut found = Vec::new();
        let near = |j: &usize| (events[*j].placed.interval.midpoint_ns() - centre).abs() <= widest;
        let earlier = (0..i).rev().take_while(near);
        let later = (i + 1..events.len()).take_while(near);
        for j in earlier.chain(later) {
            let other = &events[j].placed;
            if found.len() >= MAX_CONCURRENT {
                break;
            }
            if other.host == events[i].placed.host {
                continue;
            }
            let a =
                (EventRef { host: events[i].placed.host, seq: events[i].placed.event.seq }, events[i].placed.interval);
            let b = (EventRef { host: other.host, seq: other.event.seq }, other.interval);
            if order.relation(a, b) == Relation::Concurrent {
                found.push((events[j].host, other.event.seq));
            }
        }
        events[i].concurrent = found;
    }
    Timeline { events, violations }
}

/// Events of `bundle` in merged order, filtered (without order facts).
pub fn merged<'a>(bundle: &'a Bundle, filter: &Filter) -> Vec<(&'a str, Placed<&'a Event>)> {
    build(bundle, filter).events.into_iter().map(|s| (s.host, s.placed)).collect()
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

/// One event as the JSON contract describes it.
pub fn to_json(host: &str, p: &Placed<&Event>) -> Value {
    let e = p.event;
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
    Some(format!("{host} {} {} {what}", e.pid, e.comm))
}

/// One event as a line of text: time relative to `origin_ns` with its uncertainty, host, process, what.
pub fn to_text(host: &str, p: &Placed<&Event>, origin_ns: i64) -> String {
    let e = p.event;
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
