//! `heisen capture`: ad-hoc recording on running agents until a duration passes or Ctrl-C.

use std::collections::BTreeMap;

use anyhow::{anyhow, Result};

use crate::files::{bundle_path_for, capture_id, incomplete_hosts};
use crate::hosts::{credentials, parse_agents};
use crate::output::{progress, LiveLine};
use crate::{client, session, CaptureArgs};

/// A duration given to `flag`: 30s, 5m, 500ms, 2h or a number of seconds.
pub fn parse_duration(flag: &str, text: &str) -> Result<std::time::Duration> {
    let bad = || anyhow!("{flag} `{text}`: want a duration like 30s, 5m, 500ms or 2h");
    let (number, unit) = text.find(|c: char| !c.is_ascii_digit() && c != '.').map_or((text, ""), |i| text.split_at(i));
    let value: f64 = number.parse().map_err(|_| bad())?;
    let secs = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(bad()),
    };
    if !(secs.is_finite() && secs >= 0.0) || (secs == 0.0 && flag == "--for") {
        return Err(bad());
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

pub async fn run(a: CaptureArgs) -> Result<i32> {
    let duration = a.duration.as_deref().map(|d| parse_duration("--for", d)).transpose()?;
    // Checked before any agent is asked: a mistyped name is the user's to fix, not a host's.
    if let Err(bad) = heisen_recordings::expand_syscalls(&a.syscalls) {
        let classes: Vec<&str> = heisen_recordings::CLASSES.iter().map(|(c, _)| *c).collect();
        anyhow::bail!("--syscalls: `{bad}` is neither a syscall heisen records nor a class ({})", classes.join(", "));
    }
    let credentials = credentials(&a.access)?;
    let mut agents = BTreeMap::new();
    for (name, addr) in parse_agents(&a.agents)? {
        agents.insert(name.clone(), client::Agent::connect(&name, &addr, &credentials).await?);
    }
    let selection = client::Selection {
        comms: a.comm.clone(),
        pids: a.pid.clone(),
        bpf_writes: a.bpf_writes,
        syscalls: a.syscalls.clone(),
        leased: true,
    };
    let id = capture_id("capture", "adhoc");
    let mut traced = Vec::new();
    for spec in &a.ptrace {
        let parsed = spec.split_once('=').and_then(|(h, p)| Some((h.to_string(), p.parse::<i32>().ok()?)));
        let Some((host, pid)) = parsed else {
            return Err(anyhow!("--ptrace `{spec}` must be HOST=PID"));
        };
        if !agents.contains_key(&host) {
            return Err(anyhow!("--ptrace `{spec}`: no --agent named {host}"));
        }
        traced.push((host, pid));
    }
    let mut session = session::Session::open_selected(agents, &id, &selection).await?;
    for (host, pid) in &traced {
        let tracer = match session.attach(host, *pid).await {
            Ok(tracer) => tracer,
            Err(e) => {
                let _ = session.close(None, "").await; // stop recording everywhere before giving up
                return Err(e);
            }
        };
        progress(&format!("ptrace recorder [{tracer}] attached to pid {pid} on {host} (this perturbs it)"));
    }
    for note in session.observer_notes() {
        progress(&note);
    }
    let until = match duration {
        Some(d) => format!("for {:.1} s", d.as_secs_f64()),
        None => "until Ctrl-C".to_string(),
    };
    progress(&format!("capture {id}: recording {until}"));
    let started = std::time::Instant::now();
    let mut counter = LiveLine::new(std::time::Duration::from_secs(5));
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let stopped_by = loop {
        let left = duration.map(|d| d.saturating_sub(started.elapsed()));
        if left.is_some_and(|l| l.is_zero()) {
            break "time";
        }
        let tick = left.unwrap_or(std::time::Duration::from_secs(1)).min(std::time::Duration::from_secs(1));
        tokio::select! {
            _ = &mut ctrl_c => break "Ctrl-C",
            _ = tokio::time::sleep(tick) => {}
        }
        let counts = session.counts().await;
        let shown: Vec<String> = counts
            .iter()
            .map(|(host, state)| match state {
                session::HostState::Recording { events } => format!("{host} {events} events"),
                session::HostState::Restarted { stored } => {
                    format!("{host} RESTARTED ({stored} stored, not recording)")
                }
                session::HostState::Unreachable(e) => format!("{host} UNREACHABLE ({})", crate::one_line(e)),
            })
            .collect();
        counter.show(&format!("[{:>4} s] {}", started.elapsed().as_secs(), shown.join("  ")));
    };
    counter.finish();
    progress(&format!("stopped by {stopped_by}; pulling every host's events (Ctrl-C again to leave without a bundle)"));
    // Ctrl-C always works: a second one leaves at once. The agents keep what they stored, and
    // their leases stop the capture within 5 s.
    let (pull_hint, pull_id) = (a.agents.join(" --agent "), id.clone());
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!(
                "heisen: interrupted while pulling: no bundle written; `heisen pull --agent {pull_hint} --capture \
                 {pull_id}` recovers what the agents stored"
            );
            std::process::exit(130);
        }
    });
    // The hosts' events go into the bundle as they are pulled: a capture of any size costs the
    // coordinator a chunk per host.
    let path = bundle_path_for(&id, a.out)?;
    let (bundle, counts) = session.close_to(None, "", &path).await?;
    let incomplete = incomplete_hosts(&bundle, &path);
    let per_host: Vec<_> = bundle
        .hosts
        .iter()
        .zip(&counts)
        .map(|(h, events)| {
            serde_json::json!({"name": h.name, "events": events, "lost": h.lost, "observer": h.observer,
                               "incomplete": h.incomplete})
        })
        .collect();
    if a.json {
        println!("{}", serde_json::json!({"capture": bundle.capture_id, "bundle": path, "hosts": per_host}));
    } else {
        for (h, events) in bundle.hosts.iter().zip(&counts) {
            println!("{:<12} {:>8} events, {} lost ({})", h.name, events, h.lost, h.observer);
        }
        println!("bundle: {}", path.display());
    }
    match incomplete {
        Some(e) => Err(e),
        None => Ok(0),
    }
}
