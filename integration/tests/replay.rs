//! `heisen replay`: a recorded failing run of story 1 fails again every time, a passing one passes
//! every time, and the JUnit file has the shape CI systems read (testsuites > testsuite >
//! testcase > failure).
//!
//! It replays the small story-1 bundle committed under recordings/bundles/ (captured with the
//! kernel observer), on local hosts: netns as root (CI), loopback otherwise.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

mod common;
use common::heisen;

const BUNDLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../recordings/bundles/mountd-sighup-small.heisen");
const REPEAT: u32 = 10;

/// Replays `run` REPEAT times; returns the JSON summary and the JUnit document's text.
fn replay(run: u32, dir: &Path) -> (Value, String) {
    let junit = dir.join(format!("run{run}.xml"));
    let out = Command::new(heisen())
        .current_dir(dir)
        .args(["replay", BUNDLE, "--run", &run.to_string(), "--repeat", &REPEAT.to_string(), "--local", "--json"])
        .arg("--junit")
        .arg(&junit)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("replay --run {run}: {stderr}"));
    assert_eq!(out.status.code(), Some(0), "{v:#}\n{stderr}");
    (v, std::fs::read_to_string(&junit).unwrap())
}

/// The runs of the stored bundle that failed and passed, from its own timeline.
fn recorded_runs() -> (u32, u32) {
    let out = Command::new(heisen()).args(["explain", BUNDLE, "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let x: Value = serde_json::from_slice(&out.stdout).unwrap();
    let failing: Vec<u64> = x["failing_runs"].as_array().unwrap().iter().map(|r| r.as_u64().unwrap()).collect();
    let passing = (1..=8).find(|r| !failing.contains(r)).expect("a passing run in the bundle");
    (failing[0] as u32, passing as u32)
}

fn check_junit(xml: &str, failures: usize) {
    let doc = roxmltree::Document::parse(xml).unwrap_or_else(|e| panic!("not XML ({e}):\n{xml}"));
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    let suites: Vec<_> = root.children().filter(|n| n.has_tag_name("testsuite")).collect();
    assert_eq!(suites.len(), 1);
    let suite = suites[0];
    assert_eq!(suite.attribute("tests"), Some(REPEAT.to_string().as_str()));
    assert_eq!(suite.attribute("failures"), Some(failures.to_string().as_str()));
    assert_eq!(suite.attribute("errors"), Some("0"));
    let cases: Vec<_> = suite.children().filter(|n| n.has_tag_name("testcase")).collect();
    assert_eq!(cases.len(), REPEAT as usize);
    let failed = cases.iter().filter(|c| c.children().any(|n| n.has_tag_name("failure"))).count();
    assert_eq!(failed, failures);
    for c in &cases {
        assert!(c.attribute("name").is_some() && c.attribute("classname").is_some() && c.attribute("time").is_some());
        for f in c.children().filter(|n| n.has_tag_name("failure")) {
            assert!(f.attribute("message").unwrap().contains("EACCES"), "{xml}");
        }
    }
}

#[test]
fn replayed_runs_keep_their_outcome_ten_of_ten() {
    let dir = tempfile::tempdir().unwrap();
    let (failing, passing) = recorded_runs();

    let (v, xml) = replay(failing, dir.path());
    assert_eq!(v["recorded"], "failed");
    assert_eq!((v["reproduced"].as_u64(), v["of"].as_u64()), (Some(REPEAT as u64), Some(REPEAT as u64)), "{v:#}");
    assert!(v["repetitions"].as_array().unwrap().iter().all(|r| r["failed"] == true && r["valid"] == true));
    check_junit(&xml, REPEAT as usize);

    let (v, xml) = replay(passing, dir.path());
    assert_eq!(v["recorded"], "passed");
    assert_eq!(v["reproduced"].as_u64(), Some(REPEAT as u64), "{v:#}");
    assert!(v["repetitions"].as_array().unwrap().iter().all(|r| r["failed"] == false && r["valid"] == true));
    check_junit(&xml, 0);
}
