//! `heisen bench hosts`: what the coordinator knows of other hosts, measured on two local hosts
//! (network namespaces when root, loopback otherwise) whose agents run with an injected clock
//! skew: how far its clock estimate is from the truth, and how long a gate release takes to reach
//! a process held on another host.
//!
//! The truth of a skew is what the agent logged when it applied it (`Hosts::skew_origin`); the
//! estimate is the same clock model a capture uses (probe bursts, best probe per burst, a weighted
//! line). A release's one-way latency maps the held process's next stop (stamped by the host's
//! clock) onto the coordinator's timeline with that model, so it carries the model's error bound;
//! the round trip (release sent, next hold notice received) needs no clock model at all.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use heisen_harness::{Hosts, Mode, Options};
use heisen_recordings::{ClockModel, GateSpec, LaunchSpec, ProbeSample};
use serde::Serialize;

use super::percentile;
use crate::client::{now_ns, Agent, Selection};

/// The skews injected into the two hosts' agents: (host, `--clock-skew`, offset ns, drift ppm).
const SKEWS: [(&str, &str, f64, f64); 2] =
    [("a", "+750ms,100ppm", 750e6, 100.0), ("b", "-300ms,-50ppm", -300e6, -50.0)];

/// One row of the table.
#[derive(Clone, Debug, Serialize)]
pub struct HostRow {
    /// `clock` or `gate-release`.
    pub workload: String,
    pub method: String,
    pub host: String,
    /// Median (gate rows) or worst case (clock rows), in `unit`.
    pub value: f64,
    /// `ns` or `ppm`.
    pub unit: String,
    /// 90th percentile (gate rows).
    pub p90: Option<f64>,
    /// The clock model's error bound that applies to `value`, when it depends on one.
    pub bound: Option<f64>,
    pub samples: usize,
    pub target: String,
    pub met: Option<bool>,
}

/// What to measure.
pub struct Plan {
    /// Probe bursts (500 ms apart) behind the clock rows.
    pub bursts: u32,
    /// Hold/release cycles behind the gate rows.
    pub releases: u32,
}

/// Where the hosts ran ("netns" or why loopback) and the rows.
pub async fn hosts(plan: &Plan, progress: impl Fn(&str)) -> Result<(String, Vec<HostRow>)> {
    let heisen = std::env::current_exe().context("cannot find the heisen binary")?;
    let skews: BTreeMap<String, String> = SKEWS.iter().map(|(h, s, _, _)| (h.to_string(), s.to_string())).collect();
    let names: Vec<String> = skews.keys().cloned().collect();
    progress("starting two hosts with skewed agent clocks");
    let hosts = Hosts::start(&[heisen, "agent".into()], &names, &Options { loopback: false, skews })
        .map_err(|e| anyhow!("cannot start the bench hosts: {e}"))?;
    let mode = match &hosts.mode {
        Mode::Netns => "netns".to_string(),
        Mode::Loopback(why) => format!("loopback ({why})"),
    };
    let mut agents = BTreeMap::new();
    for (name, addr) in &hosts.agents {
        agents.insert(name.clone(), Agent::connect(name, addr, &crate::hosts::local_credentials(&hosts)?).await?);
    }
    let mut rows = clock_rows(&hosts, &mut agents, plan.bursts, &progress).await?;
    let b = agents.get_mut("b").expect("host b");
    rows.extend(gate_rows(b, plan.releases, &progress).await?);
    drop(hosts);
    Ok((mode, rows))
}

async fn clock_rows(
    hosts: &Hosts,
    agents: &mut BTreeMap<String, Agent>,
    bursts: u32,
    progress: &impl Fn(&str),
) -> Result<Vec<HostRow>> {
    progress(&format!("clock: {bursts} probe bursts, 500 ms apart"));
    let mut samples: BTreeMap<String, Vec<ProbeSample>> = BTreeMap::new();
    let mut burst_times = Vec::new();
    for i in 0..bursts.max(2) {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        burst_times.push(now_ns());
        for (name, agent) in agents.iter_mut() {
            samples.entry(name.clone()).or_default().extend(agent.probe(8).await?);
        }
    }
    let mut rows = Vec::new();
    for (host, skew, offset_ns, ppm) in SKEWS {
        let model = ClockModel::fit(&samples[host]).ok_or_else(|| anyhow!("no probes of host {host}"))?;
        let origin = hosts.skew_origin(host)?;
        // The worst error over the capture, each against the bound the model reports there.
        let (mut worst, mut bound_at_worst, mut within) = (0.0f64, 0.0, true);
        for &at in &burst_times {
            let truth = offset_ns + ppm * 1e-6 * (at as f64 - origin);
            let error = (model.offset_at(at) as f64 - truth).abs();
            let bound = model.error_at(at) as f64;
            within &= error <= bound;
            if error >= worst {
                (worst, bound_at_worst) = (error, bound);
            }
        }
        rows.push(HostRow {
            workload: "clock".into(),
            method: format!("offset error vs injected skew {skew}"),
            host: host.into(),
            value: worst,
            unit: "ns".into(),
            p90: None,
            bound: Some(bound_at_worst),
            samples: burst_times.len(),
            target: "within the reported bound".into(),
            met: Some(within),
        });
        let drift_error = (model.drift_ppm - ppm).abs();
        rows.push(HostRow {
            workload: "clock".into(),
            method: format!("drift error (estimated {:.1} ppm)", model.drift_ppm),
            host: host.into(),
            value: drift_error,
            unit: "ppm".into(),
            p90: None,
            bound: None,
            samples: burst_times.len(),
            target: String::new(),
            met: None,
        });
    }
    Ok(rows)
}

/// A process on host `b` is held at each of its first `releases` writes; every hold is released
/// as soon as its notice arrives.
async fn gate_rows(agent: &mut Agent, releases: u32, progress: &impl Fn(&str)) -> Result<Vec<HostRow>> {
    progress(&format!("gate release: {releases} holds on host b, each released at once"));
    let capture = format!("bench-gates-{}", std::process::id());
    agent.start_capture(&capture, &Selection::default()).await?;
    let mut probes = agent.probe(8).await?;
    let (gates_tx, mut notices) = agent.open_gates(&capture).await?;
    let gates = (1..=releases)
        .map(|nth| GateSpec {
            step: "bench".into(),
            syscall: "write".into(),
            nth,
            signal: None,
            fd_at_least: None,
            path: None,
        })
        .collect();
    let spec = LaunchSpec {
        capture_id: capture.clone(),
        run: 1,
        name: "bench".into(),
        role: "step".into(),
        argv: vec!["{fixture}".into(), "storm".into(), "--writes".into(), (releases + 10).to_string()],
        gates,
        hold_timeout_ms: 10_000,
        ..Default::default()
    };
    let mut launched = agent.launch(&spec).await?;
    let drain = tokio::spawn(async move { while let Ok(Some(_)) = launched.next().await {} });
    // (host stamp of the stop, coordinator time the notice arrived, coordinator time released)
    let mut holds: Vec<(i64, i64, i64)> = Vec::new();
    for _ in 0..releases {
        let notice = tokio::time::timeout(Duration::from_secs(10), notices.next())
            .await
            .map_err(|_| anyhow!("no hold notice from host b within 10 s"))??
            .ok_or_else(|| anyhow!("host b closed the gate channel"))?;
        let received = now_ns();
        if !gates_tx.release(notice.hold_id) {
            return Err(anyhow!("host b closed the gate channel"));
        }
        holds.push((notice.raw_ns, received, now_ns()));
    }
    probes.extend(agent.probe(8).await?);
    let _ = tokio::time::timeout(Duration::from_secs(10), drain).await;
    agent.stop_capture(&capture).await?;
    let model = ClockModel::fit(&probes).ok_or_else(|| anyhow!("no probes of host b"))?;
    // Release k lets the process run to its next write, where hold k+1 stops it.
    let mut one_way = Vec::new();
    let mut round_trip = Vec::new();
    for pair in holds.windows(2) {
        let ((_, _, released), (next_stop, next_received, _)) = (pair[0], pair[1]);
        one_way.push((model.centre(next_stop) - released) as f64);
        round_trip.push((next_received - released) as f64);
    }
    let mut rtt: Vec<f64> = probes.iter().map(|s| (s.t4_ns - s.t1_ns) as f64).collect();
    let bound = model.error_at(holds.last().map_or(0, |h| h.2)) as f64;
    let row = |method: &str, values: &mut Vec<f64>, bound: Option<f64>| HostRow {
        workload: "gate-release".into(),
        method: method.into(),
        host: "b".into(),
        value: percentile(values, 0.5),
        unit: "ns".into(),
        p90: Some(percentile(values, 0.9)),
        bound,
        samples: values.len(),
        target: String::new(),
        met: None,
    };
    Ok(vec![
        row("release sent -> held process stopped at its next write (one way)", &mut one_way, Some(bound)),
        row("release sent -> next hold notice received (round trip)", &mut round_trip, None),
        row("baseline: gRPC clock probe round trip, same link", &mut rtt, None),
    ])
}

/// The table as text.
pub fn table(mode: &str, rows: &[HostRow]) -> String {
    let mut out = format!("hosts: {mode}\n");
    out.push_str(&format!(
        "{:<13} {:<4} {:<66} {:>11} {:>11} {:>10}  {}\n",
        "workload", "host", "method", "value", "p90", "± bound", "target"
    ));
    let us = |ns: f64| format!("{:.1} us", ns / 1e3);
    for r in rows {
        let value = if r.unit == "ppm" { format!("{:.2} ppm", r.value) } else { us(r.value) };
        let verdict = super::verdict(r.met);
        out.push_str(&format!(
            "{:<13} {:<4} {:<66} {:>11} {:>11} {:>10}  {}{}\n",
            r.workload,
            r.host,
            r.method,
            value,
            r.p90.map(us).unwrap_or_else(|| "-".into()),
            r.bound.map(us).unwrap_or_else(|| "-".into()),
            r.target,
            verdict
        ));
    }
    out
}
