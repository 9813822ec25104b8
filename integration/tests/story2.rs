//! Story 2 (lost-wakeup) end to end: `heisen demo lost-wakeup` on two hosts, then what the load
//! bundle shows: the service stayed dark while recorded, the health check's ptrace attach is on
//! the timeline, and explain reports the woken epoll_wait; `run --observe both` compares the
//! failure rate under the kernel observer and under the ptrace recorder.
//!
//! As root the hosts are network namespaces with the kernel observer (what CI runs); without
//! root the netns tests say why they skipped and the loopback test checks the verdict.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

mod common;
use common::{heisen, is_root};

fn ordering<'a>(demo: &'a Value, name: &str) -> &'a Value {
    demo["orderings"].as_array().unwrap().iter().find(|o| o["name"] == name).unwrap()
}

fn check_verdict(demo: &Value) {
    assert_eq!(demo["story"], "lost-wakeup");
    assert_eq!(demo["verdict"], "confirmed", "{demo:#}");
    let during = ordering(demo, "during");
    assert_eq!(during["failures"], during["runs"], "two connects inside one wakeup hang it every time");
    for spaced in ["before", "after"] {
        let o = ordering(demo, spaced);
        assert_eq!(o["runs"], during["runs"], "{spaced}");
        assert_eq!(o["failures"], 0, "spaced apart ({spaced}) it never hangs");
    }
}

fn json_of(args: &[&str]) -> Value {
    let out = Command::new(heisen()).args(args).output().unwrap();
    assert!(out.status.success(), "heisen {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn timeline(bundle: &Path, args: &[&str]) -> Vec<Value> {
    let b = bundle.to_str().unwrap();
    json_of(&[&["timeline", b, "--json", "--all"], args].concat()).as_array().unwrap().clone()
}

/// In a failing load run: the service's epoll_wait blocked from before the health check's
/// connect until the health check's ptrace attach woke it with EINTR (the kernel observer did not
/// wake it), and the health check saw TCP and the unix socket silent while UDP answered.
fn check_dark_run(bundle: &Path, run: u32) {
    let events = timeline(bundle, &["--run", &run.to_string(), "--host", "node"]);
    let by = |comm: &str, pred: &dyn Fn(&Value) -> bool| events.iter().find(|e| e["comm"] == comm && pred(e)).cloned();
    let connect =
        by("healthcheck", &|e| e["kind"] == "syscall" && e["name"] == "connect").expect("health check's connect");
    let attach = by("healthcheck", &|e| e["kind"] == "attach" && e["phase"] == "attach")
        .unwrap_or_else(|| panic!("the health check's ptrace attach on the timeline of run {run}: {events:#?}"));
    let eventd_pid =
        events.iter().find(|e| e["kind"] == "launch" && e["name"] == "eventd").expect("eventd")["pid"].clone();
    assert_eq!(attach["target_pid"], eventd_pid, "{attach}");
    let woken = by("eventd", &|e| e["kind"] == "syscall" && e["name"] == "epoll_wait")
        .unwrap_or_else(|| panic!("eventd's interrupted epoll_wait in run {run}"));
    assert!([-4, -512, -514].contains(&woken["ret"].as_i64().unwrap()), "{woken}");
    let t = |e: &Value, key: &str| e[key].as_i64().unwrap();
    // It went back to epoll_wait after the connect (whose wakeup it read away) and stayed there,
    // recorded all along, through the health check's 1 s wait, until the attach woke it.
    assert!(t(&woken, "enter_ns") > t(&connect, "raw_ns"), "{woken} {connect}");
    assert!(t(&woken, "raw_ns") > t(&attach, "raw_ns"), "returned after the attach: {woken} {attach}");
    assert!(t(&attach, "raw_ns") - t(&woken, "enter_ns") > 900_000_000, "blocked until the attach: {woken} {attach}");
    let said = |text: &str| {
        events.iter().any(|e| e["comm"] == "healthcheck" && e["line"].as_str().is_some_and(|l| l.contains(text)))
    };
    for line in ["no answer on the unix socket", "no answer", "answered: up", "the server recovered"] {
        assert!(said(line), "health check said {line:?} in run {run}");
    }
}

fn check_finding(explain: &Value) {
    let findings = explain["findings"].as_array().unwrap();
    let woke = findings
        .iter()
        .find(|f| f["kind"] == "observer-woke-blocked-call")
        .unwrap_or_else(|| panic!("no woken-call finding: {findings:#?}"));
    let summary = woke["summary"].as_str().unwrap();
    for words in [
        "blocked epoll_wait",
        "eventd",
        "returned EINTR right after healthcheck attached",
        "the server recovered",
        "lost wakeup",
    ] {
        assert!(summary.contains(words), "{words:?} in {summary}");
    }
}

#[test]
fn story2_confirmed_on_netns_hosts() {
    if !is_root() {
        eprintln!(
            "SKIPPED story2_confirmed_on_netns_hosts: needs root for network namespaces and tracefs (CI runs as root)"
        );
        return;
    }
    let (demo, dir) = common::demo(&["lost-wakeup", "--runs", "3"]);
    check_verdict(&demo);
    assert_eq!(demo["hosts"], "netns");
    assert_eq!(demo["explain_rank"], 1, "{:#}", demo["explain"]);
    assert!(demo["verified"].as_str().unwrap().starts_with("explain's candidate 1"), "{}", demo["verified"]);
    let (failures, runs) = (demo["load"]["failures"].as_u64().unwrap(), demo["load"]["runs"].as_u64().unwrap());
    assert!(failures >= 1 && failures < runs, "load runs both fail and pass: {failures}/{runs}");
    check_finding(&demo["explain"]);

    let bundle = PathBuf::from(demo["bundle"].as_str().unwrap());
    let failing: Vec<u32> =
        demo["explain"]["failing_runs"].as_array().unwrap().iter().map(|r| r.as_u64().unwrap() as u32).collect();
    check_dark_run(&bundle, failing[0]);

    // The same from the command line: explain, then verify of its candidate 1.
    let b = bundle.to_str().unwrap();
    let explain = json_of(&["explain", b, "--json"]);
    let first = &explain["candidates"][0];
    let summary = first["summary"].as_str().unwrap();
    // During the upload's connection, or (when the connect is within the clock error of its
    // start) before the end of its writes: the same hypothesis.
    assert!(
        summary.starts_with("healthcheck's connect [node] lands while upload's connection is in use")
            || summary.starts_with("healthcheck's connect [node] lands before the end of upload's write(fd>=3) calls"),
        "{summary}"
    );
    check_finding(&explain);
    let out = Command::new(heisen())
        .args(["verify", b, "--candidate", "1", "--local", "--runs", "2", "--json", "--out"])
        .arg(dir.path().join("verify.heisen"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let verify: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(verify["verdict"], "confirmed", "{verify:#}");
}

/// `run --observe both`: odd runs under the kernel observer, even runs with the ptrace recorder
/// attached to every process; explain compares the failure rates and says whether they differ.
#[test]
fn story2_observer_effect_is_reported() {
    if !is_root() {
        eprintln!("SKIPPED story2_observer_effect_is_reported: needs root for network namespaces and tracefs (CI runs as root)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("observe.heisen");
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/../recordings/scenarios/lost-wakeup.toml");
    let out = Command::new(heisen())
        .args(["run", scenario, "--local", "--observe", "both", "--repeat", "8", "--out"])
        .arg(&bundle)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.code().is_some_and(|c| c == 0 || c == 1), "{stderr}");
    assert!(stderr.contains("[load 2/8] [ptrace]") && stderr.contains("[load 1/8] [kernel]"), "{stderr}");

    // The ptrace recorder's attaches are on the timeline too.
    let attaches = timeline(&bundle, &["--kind", "attach"]);
    assert!(attaches.iter().any(|a| a["tracer"] == "ptrace" && a["phase"] == "attach"), "{attaches:#?}");

    // Under ptrace the failure rate changes (the recorder slows the loop's calls, widening the
    // window): explain still explains, and reports both rates.
    let explain = json_of(&["explain", bundle.to_str().unwrap(), "--json"]);
    let findings = explain["findings"].as_array().unwrap();
    let rates = findings
        .iter()
        .find(|f| f["kind"] == "observer-effect" || f["kind"] == "no-observer-effect")
        .unwrap_or_else(|| panic!("no observer finding: {findings:#?}"));
    let rates = rates["summary"].as_str().unwrap();
    assert!(rates.contains("kernel") && rates.contains("ptrace") && rates.contains("/4"), "{rates}");
    // The recorder's own attach at start is not a woken stuck loop.
    assert!(
        findings
            .iter()
            .filter(|f| f["kind"] == "observer-woke-blocked-call")
            .all(|f| !f["summary"].as_str().unwrap().contains("after ptrace attached")),
        "{findings:#?}"
    );
}

#[test]
fn story2_confirmed_on_loopback_hosts() {
    // Loopback uploads are faster (no veth), so the window is narrower and fewer free runs fail
    // (2-5 of 16 measured): more load runs keep a failing one all but certain.
    let (demo, _dir) = common::demo(&["lost-wakeup", "--runs", "3", "--loopback", "--load-runs", "24"]);
    check_verdict(&demo);
    assert!(demo["hosts"].as_str().unwrap().starts_with("loopback"), "{}", demo["hosts"]);
    if is_root() {
        assert_eq!(demo["explain_rank"], 1, "{:#}", demo["explain"]);
    }
}
