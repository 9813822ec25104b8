//! `heisen pull`: a capture's stored events, recovered from its agents into a bundle.
//!
//! Pulling changes nothing on the agents: a capture still recording goes on recording (the
//! bundle has what it stored so far), a stopped or forgotten one stays as it is.

use anyhow::{anyhow, Context, Result};
use heisen_recordings::{Bundle, HostRecording};

use crate::files::write_bundle;
use crate::hosts::{credentials, parse_agents};
use crate::output::progress;
use crate::{client, PullArgs};

pub async fn run(a: PullArgs) -> Result<i32> {
    let mut base = match &a.into {
        Some(path) => Some(Bundle::read(path)?),
        None => None,
    };
    let capture = match (&a.capture, &base) {
        (Some(id), Some(b)) if *id != b.capture_id => {
            return Err(anyhow!(
                "--capture {id} is not the capture of {} ({}); leave --capture out to pull that one",
                a.into.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
                b.capture_id
            ))
        }
        (Some(id), _) => id.clone(),
        (None, Some(b)) => b.capture_id.clone(),
        (None, None) => unreachable!("clap requires --capture without --into"),
    };
    let credentials = credentials(&a.access)?;
    let mut pulled = Vec::new();
    for (name, addr) in parse_agents(&a.agents)? {
        let mut agent = client::Agent::connect(&name, &addr, &credentials).await?;
        let Some(status) = agent.capture_state(&capture).await? else {
            return Err(anyhow!(
                "agent {name} at {addr} has no capture `{capture}` in its store (was it started with another --data?)"
            ));
        };
        let samples = agent.probe(8).await?;
        let clock = client::fit(&name, &samples)?;
        let mut events = agent.pull(&capture).await?;
        let missing = HostRecording::mark_seq_gaps(&mut events);
        let mut notes = Vec::new();
        if status.recording {
            notes.push(format!("still recording: the bundle has the {} events stored so far", events.len()));
        }
        if status.forgotten {
            notes.push(format!(
                "its agent restarted while it recorded: nothing after its last stored event (a crash loses at most \
                 the last {} ms before it)",
                heisen_recordings::CRASH_WINDOW_MS
            ));
        }
        if missing > 0 {
            notes.push(format!("{missing} events missing from the store (sequence gaps)"));
        }
        progress(&format!(
            "{name}: pulled {} events{}",
            events.len(),
            notes.iter().map(|n| format!("; {n}")).collect::<String>()
        ));
        pulled.push(HostRecording {
            name: name.clone(),
            agent_version: agent.info.version.clone(),
            kernel: agent.info.kernel.clone(),
            observer: status.observer.clone(),
            clock,
            probes: samples,
            events,
            lost: status.lost,
            environments: Vec::new(),
            incomplete: (!notes.is_empty()).then(|| notes.join("; ")),
        });
    }
    let bundle = match base.take() {
        Some(mut bundle) => {
            for mut host in pulled {
                match bundle.hosts.iter_mut().find(|h| h.name == host.name) {
                    Some(old) => {
                        // A host whose agent forgot the capture still lacks the rest of it: the
                        // span the bundle said was lost stays lost, from the last pulled event.
                        let lost_until = old.events.last().and_then(|e| match e.kind {
                            heisen_recordings::EventKind::Lost { from_ns: Some(_), .. } => Some(e.raw_ns),
                            _ => None,
                        });
                        if let (Some(until), Some(why)) = (lost_until, &host.incomplete) {
                            HostRecording::mark_lost_span(&mut host.events, until, until, why);
                        }
                        let environments = std::mem::take(&mut old.environments);
                        *old = HostRecording { environments, ..host };
                    }
                    None => bundle.hosts.push(host),
                }
            }
            bundle
        }
        None => {
            let started_ns = pulled
                .iter()
                .filter_map(|h| h.events.first().map(|e| h.clock.centre(e.raw_ns)))
                .min()
                .unwrap_or_else(client::now_ns);
            Bundle {
                capture_id: capture.clone(),
                started_ns,
                scenario: None,
                hosts: pulled,
                runs: Vec::new(),
                causal: Vec::new(),
                placeholders: Default::default(),
            }
        }
    };
    let out = a.out.clone().or(a.into.clone());
    let path = write_bundle(&bundle, out).context("writing the pulled bundle")?;
    if a.json {
        let hosts: Vec<_> = bundle
            .hosts
            .iter()
            .map(|h| serde_json::json!({"name": h.name, "events": h.events.len(), "incomplete": h.incomplete}))
            .collect();
        println!("{}", serde_json::json!({"capture": capture, "bundle": path, "hosts": hosts}));
    } else {
        println!("bundle: {}", path.display());
    }
    Ok(0)
}
