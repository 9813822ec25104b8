//! Synchronized clocks: the coordinator recovers clock skew it was not told about, and the merged
//! timeline never puts story 1's cause and symptom in the wrong order under skew.

use std::collections::BTreeMap;
use std::process::Command;

use heisen_harness::{Hosts, Mode, Options};
use serde_json::Value;

mod common;
use common::{heisen, is_root};

const SKEWS: [(&str, &str, f64, f64); 2] =
    [("a", "+750ms,100ppm", 750e6, 100.0), ("b", "-300ms,100ppm", -300e6, 100.0)];

#[test]
fn skew_is_recovered_within_the_reported_bound() {
    if !is_root() {
        eprintln!("SKIPPED skew_is_recovered_within_the_reported_bound: needs root for netns hosts (CI runs as root)");
        return;
    }
    let skews: BTreeMap<String, String> = SKEWS.iter().map(|(h, s, _, _)| (h.to_string(), s.to_string())).collect();
    let names: Vec<String> = skews.keys().cloned().collect();
    let hosts = Hosts::start(&[heisen(), "agent".into()], &names, &Options { loopback: false, skews }).unwrap();
    assert_eq!(hosts.mode, Mode::Netns);
    let mut args = vec!["agents".to_string(), "--json".into()];
    args.extend(hosts.client_args());
    for (host, addr) in &hosts.agents {
        args.extend(["--agent".into(), format!("{host}={addr}")]);
    }
    // Let the drift accrue a little, so a model that ignored it would be visibly off.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let out = Command::new(heisen()).args(&args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 2);
    for (host, _, offset_ns, ppm) in SKEWS {
        let row = rows.iter().find(|r| r["name"] == host).unwrap();
        let (est, err, at) =
            (row["offset_ns"].as_f64().unwrap(), row["error_ns"].as_f64().unwrap(), row["at_ns"].as_f64().unwrap());
        let truth = offset_ns + ppm * 1e-6 * (at - hosts.skew_origin(host).unwrap());
        assert!((est - truth).abs() <= err, "{host}: estimate {est} vs truth {truth} ± {err}");
        assert!(err < 1e6, "{host}: bound {err} ns is not under 1 ms");
    }
}

#[test]
fn story1_under_skew_never_orders_cause_and_symptom_wrongly() {
    let out_dir = tempfile::tempdir().unwrap();
    let mut args = vec!["demo", "--json", "--out"];
    let out_path = out_dir.path().display().to_string();
    args.push(&out_path);
    args.extend(["--skew", "server=+750ms,100ppm", "--skew", "client=-300ms,100ppm"]);
    if !is_root() {
        eprintln!("note: not root, the skewed demo runs on loopback hosts without the kernel observer");
    }
    let out = Command::new(heisen()).args(&args).current_dir(out_dir.path()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let demo: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(demo["verdict"], "confirmed");
    let clocks = demo["clocks"].as_array().unwrap();
    let server = clocks.iter().find(|c| c["name"] == "server").unwrap();
    assert!((server["offset_ns"].as_i64().unwrap() - 750_000_000).abs() < 5_000_000, "{server}");
    assert!((server["drift_ppm"].as_f64().unwrap() - 100.0).abs() < 50.0, "{server}");

    let bundle = out_dir.path().join(demo["bundle"].as_str().unwrap());
    let out = Command::new(heisen()).arg("timeline").arg(&bundle).arg("--json").output().unwrap();
    let events: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let mut failing: Vec<u64> = events
        .iter()
        .filter(|e| e["kind"] == "exit" && e["comm"] == "write" && e["exit_code"] == 13)
        .map(|e| e["run"].as_u64().unwrap())
        .collect();
    failing.dedup();
    assert!(!failing.is_empty(), "no failing load run under skew");
    for run in failing {
        let in_run = |pred: &dyn Fn(&Value) -> bool| events.iter().find(|e| e["run"] == run && pred(e)).cloned();
        let sighup = in_run(&|e| e["kind"] == "signal" && e["signal"] == "SIGHUP" && e["phase"] == "generate")
            .or_else(|| in_run(&|e| e["kind"] == "output" && e["line"].as_str().unwrap_or("").starts_with("remounted")))
            .expect("the SIGHUP (or the remount's report of it)");
        let symptom = in_run(&|e| e["kind"] == "syscall" && e["errno"] == "EACCES")
            .or_else(|| in_run(&|e| e["kind"] == "output" && e["line"].as_str().unwrap_or("").contains("EACCES")))
            .expect("the failing write");
        // Raw host clocks disagree by about a second...
        let raw_gap = symptom["raw_ns"].as_i64().unwrap() - sighup["raw_ns"].as_i64().unwrap();
        assert!(raw_gap < -900_000_000, "skew was applied: raw gap {raw_gap}");
        // ...but on the coordinator's timeline the symptom is never placed before its cause.
        assert!(
            symptom["latest_ns"].as_i64() >= sighup["earliest_ns"].as_i64(),
            "run {run}: symptom {symptom} placed before cause {sighup}"
        );
    }
}

/// `heisen bench hosts` (numbers, not asserts on them): it runs on two hosts with skewed agents,
/// every hold it asks for comes back, and its clock rows hold their own error bounds.
#[test]
fn bench_hosts_measures_clock_error_and_gate_release() {
    let out = Command::new(heisen())
        .args(["bench", "hosts", "--bursts", "3", "--releases", "12", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    if is_root() {
        assert_eq!(report["hosts"], "netns", "{report}");
    }
    let rows = report["rows"].as_array().unwrap();
    let clock: Vec<&Value> = rows.iter().filter(|r| r["workload"] == "clock" && r["unit"] == "ns").collect();
    assert_eq!(clock.len(), 2, "{report:#}");
    for r in clock {
        assert_eq!(r["met"], true, "estimate outside its own bound: {r}");
        assert_eq!(r["samples"], 3);
    }
    let gates: Vec<&Value> = rows.iter().filter(|r| r["workload"] == "gate-release").collect();
    assert_eq!(gates.len(), 3, "{report:#}");
    for r in &gates[..2] {
        assert_eq!(r["samples"], 11, "one latency per pair of consecutive holds: {r}");
        assert!(r["value"].as_f64().is_some_and(f64::is_finite), "{r}");
    }
    // The round trip is timed on the coordinator's clock alone: a release cannot come back first.
    assert!(gates[1]["value"].as_f64().unwrap() > 0.0, "{:#}", gates[1]);
}
