//! Findings: observations that are not ranked causes but change how a capture reads — a blocked
//! call woken by a tracer's attach, a failure rate that changes with the observer.

use heisen_recordings::{interrupted, AttachPhase, Bundle, Event, EventKind, RunObserver};

use super::report::{Evidence, Finding};

/// Findings: a blocked call that returned EINTR right after a tracer attached to its process
/// (the observer woke it: a lost-wakeup suspect, story 2).
pub(crate) fn findings(bundle: &Bundle) -> Vec<Finding> {
    let mut out = Vec::new();
    // (host, comm, call, tracer) of each finding, and how many more runs showed the same.
    type Key = (String, String, String, String);
    let (mut seen, mut repeats): (Vec<Key>, Vec<u32>) = (Vec::new(), Vec::new());
    for rec in &bundle.hosts {
        let attaches: Vec<&Event> = rec
            .events
            .iter()
            .filter(|e| matches!(&e.kind, EventKind::Attach { phase: AttachPhase::Attach, .. }))
            .collect();
        for at in attaches {
            let EventKind::Attach { tracer, target_pid, .. } = &at.kind else { continue };
            let woken = rec.events.iter().find(|e| {
                let (name, ret, enter) = match &e.kind {
                    EventKind::Syscall { name, ret, enter_ns, .. } => (name, *ret, *enter_ns),
                    EventKind::Traced { name, ret, enter_ns, .. } => (name, *ret, *enter_ns),
                    _ => return false,
                };
                let blocking =
                    ["epoll_wait", "epoll_pwait", "epoll_pwait2", "read", "poll", "ppoll", "select", "pselect6"];
                // Blocked for a while before the attach: a loop that was merely between two
                // events (a recorder attaching at start) is not a stuck one.
                same_process(e.pid, *target_pid, rec)
                    && blocking.contains(&name.as_str())
                    && interrupted(ret)
                    && enter < at.raw_ns - 100_000_000
                    && e.raw_ns >= at.raw_ns
                    && e.raw_ns - at.raw_ns < 1_000_000_000
            });
            if let Some(w) = woken {
                let call = match &w.kind {
                    EventKind::Syscall { name, .. } | EventKind::Traced { name, .. } => name.clone(),
                    _ => String::new(),
                };
                let ev = |e: &Event, what: String| {
                    let i = rec.clock.interval(e.raw_ns);
                    Evidence {
                        host: rec.name.clone(),
                        run: e.run,
                        time_ns: i.midpoint_ns(),
                        error_ns: (i.latest_ns - i.earliest_ns) / 2,
                        what,
                    }
                };
                // Did it work again? Its first write to a socket or file (not stdio) after waking.
                let answered = rec.events.iter().find(|e| {
                    matches!(&e.kind, EventKind::Syscall { name, args, ret, .. }
                        if matches!(name.as_str(), "write" | "sendto" | "sendmsg")
                            && args.first().is_some_and(|fd| *fd >= 3)
                            && *ret >= 0)
                        && same_process(e.pid, *target_pid, rec)
                        && e.raw_ns > w.raw_ns
                        && e.raw_ns - w.raw_ns < 2_000_000_000
                });
                let blocked_ms = (w.raw_ns - enter_of(w)) / 1_000_000;
                let outcome = match answered {
                    Some(a) => format!(
                        ", and {} answered again {:.1} ms later: the server recovered. It had been blocked for {blocked_ms} \
                         ms waiting for an event; the attach woke it and it found work that was already there: suspect \
                         a lost wakeup",
                        w.comm,
                        (a.raw_ns - w.raw_ns) as f64 / 1e6
                    ),
                    None => format!(
                        " after {blocked_ms} ms blocked; it wrote nothing afterwards (if the symptom went away then, \
                         suspect a lost wakeup)"
                    ),
                };
                let mut evidence = vec![
                    ev(at, format!("{tracer} attaches to pid {target_pid}")),
                    ev(w, format!("{call} returns EINTR in pid {}", w.pid)),
                ];
                if let Some(a) = answered {
                    evidence.push(ev(a, format!("pid {} writes again", a.pid)));
                }
                // The same story in another run (same host, process, call and tracer) is one
                // finding with a count, not another line.
                let key = (rec.name.clone(), w.comm.clone(), call.clone(), tracer.clone());
                if let Some(i) = seen.iter().position(|k| *k == key) {
                    repeats[i] += 1;
                    continue;
                }
                seen.push(key);
                repeats.push(0);
                out.push(Finding {
                    kind: "observer-woke-blocked-call",
                    summary: format!(
                        "a blocked {call} of pid {} ({}) on {} returned EINTR right after {tracer} attached{outcome}",
                        w.pid, w.comm, rec.name
                    ),
                    evidence,
                });
            }
        }
    }
    for (f, n) in out.iter_mut().zip(repeats) {
        if n > 0 {
            f.summary.push_str(&format!(" (the same in {n} more run(s))"));
        }
    }
    out
}

/// Failure rates of the free runs per observer, when a capture has runs under both: a rate that
/// changes with the observer means observing perturbs the failure (story 2: strace "fixes" it).
pub(crate) fn observer_effect(bundle: &Bundle) -> Option<Finding> {
    let rate = |observer: RunObserver| {
        let runs: Vec<_> =
            bundle.runs.iter().filter(|r| r.valid && r.ordering.is_none() && r.observer == observer).collect();
        (runs.iter().filter(|r| r.failed).count(), runs.len())
    };
    let ((kf, kn), (pf, pn)) = (rate(RunObserver::Kernel), rate(RunObserver::Ptrace));
    if kn == 0 || pn == 0 {
        return None;
    }
    let (k, p) = (kf as f64 / kn as f64, pf as f64 / pn as f64);
    let changed = (k - p).abs() >= 0.5;
    Some(Finding {
        kind: if changed { "observer-effect" } else { "no-observer-effect" },
        summary: if changed {
            format!(
                "the observer changes the failure: {kf}/{kn} runs failed under the kernel observer, {pf}/{pn} with the \
                 ptrace recorder attached; ptrace perturbs what it observes (a blocked call interrupted, timing \
                 slowed), so trust the kernel-observed runs"
            )
        } else {
            format!("the failure rate does not depend on the observer: kernel {kf}/{kn}, ptrace {pf}/{pn}")
        },
        evidence: vec![],
    })
}

/// Events a host's agent could not record (its own `lost` notes: a full ring, a trace reader that
/// fell behind): a cause on that host may be among them, so explain says so instead of staying
/// silent. One finding per host, with the total count and every distinct reason.
pub(crate) fn lost_events(bundle: &Bundle) -> Vec<Finding> {
    let mut out = Vec::new();
    for rec in &bundle.hosts {
        let mut count = 0u64;
        let mut reasons: Vec<&str> = Vec::new();
        for e in &rec.events {
            if let EventKind::Lost { count: n, location, .. } = &e.kind {
                count += n;
                if !reasons.contains(&location.as_str()) {
                    reasons.push(location);
                }
            }
        }
        if reasons.is_empty() {
            continue;
        }
        let recorded =
            rec.events.len() - rec.events.iter().filter(|e| matches!(e.kind, EventKind::Lost { .. })).count();
        let missing = match count {
            0 => "an unknown number missing or incomplete".to_string(),
            n => format!("{n} missing or incomplete"),
        };
        out.push(Finding {
            kind: "lost-events",
            summary: format!(
                "host {} recorded incompletely ({recorded} event(s) recorded, {missing}: {}); a cause there may \
                 be missing from the candidates",
                rec.name,
                reasons.join("; ")
            ),
            evidence: vec![],
        });
    }
    out
}

/// When a recorded call entered (its own time for events that do not say).
pub(crate) fn enter_of(e: &Event) -> i64 {
    match &e.kind {
        EventKind::Syscall { enter_ns, .. } | EventKind::Traced { enter_ns, .. } => *enter_ns,
        _ => e.raw_ns,
    }
}

/// Whether thread `tid` belongs to process `pid` (by the recorded fork edges: threads of a
/// process are its clones; the main thread's tid is the pid).
pub(crate) fn same_process(tid: i32, pid: i32, rec: &heisen_recordings::HostRecording) -> bool {
    tid == pid
        || rec.events.iter().any(
            |e| matches!(e.kind, EventKind::Fork { parent_pid, child_pid } if parent_pid == pid && child_pid == tid),
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::explain::choose_failing;
    use crate::explain::tests::outcome;

    #[test]
    fn a_failure_rate_that_changes_with_the_observer_is_a_finding() {
        let mut bundle = Bundle {
            capture_id: "c".into(),
            started_ns: 0,
            scenario: None,
            hosts: vec![],
            runs: (1..=6)
                .map(|r| outcome(r, r % 2 == 1, if r % 2 == 1 { RunObserver::Kernel } else { RunObserver::Ptrace }))
                .collect(),
            causal: vec![],
            placeholders: Default::default(),
        };
        let f = observer_effect(&bundle).expect("both observers");
        assert_eq!(f.kind, "observer-effect");
        assert!(
            f.summary.contains("3/3 runs failed under the kernel observer, 0/3 with the ptrace recorder"),
            "{}",
            f.summary
        );
        // explain compares the undisturbed runs only.
        let (failing, valid) = choose_failing(&bundle).unwrap();
        assert_eq!((failing, valid), (vec![1, 3, 5], vec![1, 3, 5]));
        bundle.runs = (1..=4)
            .map(|r| outcome(r, r <= 2, if r % 2 == 1 { RunObserver::Kernel } else { RunObserver::Ptrace }))
            .collect();
        assert_eq!(observer_effect(&bundle).unwrap().kind, "no-observer-effect");
        bundle.runs.iter_mut().for_each(|r| r.observer = RunObserver::Kernel);
        assert!(observer_effect(&bundle).is_none());
    }

    #[test]
    fn a_host_that_lost_events_is_a_finding() {
        let host = |name: &str, lost: &[(u64, &str)]| heisen_recordings::HostRecording {
            name: name.into(),
            agent_version: String::new(),
            kernel: String::new(),
            observer: "tracefs".into(),
            clock: heisen_recordings::ClockModel::identity(),
            probes: vec![],
            events: lost
                .iter()
                .enumerate()
                .map(|(i, (count, location))| Event {
                    seq: i as u64,
                    raw_ns: 0,
                    pid: 0,
                    comm: String::new(),
                    run: 0,
                    kind: EventKind::Lost { count: *count, location: location.to_string(), from_ns: None },
                })
                .collect(),
            lost: 0,
            environments: vec![],
            incomplete: None,
        };
        let bundle = Bundle {
            capture_id: "c".into(),
            started_ns: 0,
            scenario: None,
            hosts: vec![host("quiet", &[]), host("busy", &[(10, "ring full"), (5, "ring full"), (0, "reader behind")])],
            runs: vec![],
            causal: vec![],
            placeholders: Default::default(),
        };
        let f = lost_events(&bundle);
        assert_eq!(f.len(), 1, "only the host that lost some");
        assert_eq!(
            f[0].summary,
            "host busy recorded incompletely (0 event(s) recorded, 15 missing or incomplete: ring full; reader \
             behind); a cause there may be missing from the candidates"
        );
    }
}
