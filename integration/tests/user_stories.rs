//! Users' bugs, written the way a user would: ordinary Python and shell programs run by the
//! machine's own interpreters (pyenv shims and all) and a scenario with no hypothesis
//! (`stories/NAME/`). For each: `heisen run` → `heisen explain` → `heisen verify --candidate 1`
//! must name the files involved and confirm the ordering, found without being told.

use std::process::Command;

use serde_json::Value;

mod common;
use common::heisen;

fn json_of(cmd: &mut Command, what: &str) -> Value {
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{what}: exit {:?}\n{stderr}", out.status.code()))
}

/// Runs story `name` under load (its scenario's 16 runs), explains it, checks that candidate 1's
/// summary satisfies `first`, verifies candidate 1 and expects CONFIRMED.
fn run_explain_verify(name: &str, interpreter: &str, first: impl Fn(&str) -> bool) {
    let found = Command::new("sh").args(["-c", &format!("command -v {interpreter}")]).output().unwrap();
    assert!(found.status.success(), "{interpreter} is missing: ./scripts/setup installs it");
    let scenario = format!("{}/../stories/{name}/{name}.toml", env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join(format!("{name}.heisen"));

    let run = json_of(
        Command::new(heisen())
            .current_dir(dir.path())
            .arg("run")
            .arg(&scenario)
            .args(["--local", "--json", "--out"])
            .arg(&bundle),
        "heisen run",
    );
    let failures = run["failures"].as_u64().unwrap();
    assert!(failures > 0 && failures < 16, "{name}: the race shows up in some load runs, not all: {run}");

    let x = json_of(Command::new(heisen()).arg("explain").arg(&bundle).arg("--json"), "heisen explain");
    let summary = x["candidates"][0]["summary"].as_str().unwrap_or_default();
    assert!(first(summary), "{name}: candidate 1 is not the cause: {x:#}");

    let v = json_of(
        Command::new(heisen()).current_dir(dir.path()).arg("verify").arg(&bundle).args([
            "--candidate",
            "1",
            "--local",
            "--json",
        ]),
        "heisen verify",
    );
    assert_eq!(v["verdict"], "confirmed", "{name}: {v:#}");
    // The amplification: how often it failed by itself beside the forced rates.
    assert_eq!(v["natural"]["runs"], 16, "{v:#}");
    assert_eq!(v["natural"]["failures"], run["failures"], "{v:#}");
    for o in v["orderings"].as_array().unwrap() {
        let (runs, failed) = (o["runs"].as_u64().unwrap(), o["failures"].as_u64().unwrap());
        let want = if o["expect_failure"] == true { runs } else { 0 };
        assert!(runs == 5 && failed == want, "{name}: {o}");
    }
}

/// A deploy job rewrites a config in place on a share while an app starts on another host and
/// now and then reads half of it (Python).
#[test]
fn torn_config_is_explained_and_confirmed_from_a_scenario_without_hypothesis() {
    run_explain_verify("torn-config", "python3", |s| {
        (s.contains("start's openat on {shared}/app-{run}.json")
            || s.contains("start's read on {shared}/app-{run}.json"))
            && s.contains("while deploy has {shared}/app-{run}.json open")
    });
}

/// A consumer reads a cache file before another host's rename publishes the new version (sh).
#[test]
fn stale_cache_is_explained_and_confirmed_from_a_scenario_without_hypothesis() {
    run_explain_verify("stale-cache", "sh", |s| {
        s.contains("consume's openat on {shared}/cache-{run}")
            && s.contains("before publish's renameat on {shared}/cache-{run}.tmp")
    });
}
