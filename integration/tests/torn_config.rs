//! A user's bug, written the way a user would: two ordinary Python programs (the machine's own
//! interpreter, pyenv shims and all) and a scenario with no hypothesis (`stories/torn-config/`).
//! A deploy job rewrites a config in place on a share while an app starts on another host and
//! now and then reads half of it. `heisen run` → `heisen explain` → `heisen verify --candidate 1`
//! must name the file and confirm the ordering, found without being told.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

mod common;
use common::heisen;

const SCENARIO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../stories/torn-config/torn-config.toml");

fn json_of(cmd: &mut Command, what: &str) -> Value {
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{what}: exit {:?}\n{stderr}", out.status.code()))
}

#[test]
fn torn_config_is_explained_and_confirmed_from_a_scenario_without_hypothesis() {
    let found = Command::new("sh").args(["-c", "command -v python3"]).output().unwrap().status.success();
    assert!(found, "python3 is missing: ./scripts/setup installs it");
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("torn.heisen");

    let run = json_of(
        Command::new(heisen())
            .current_dir(dir.path())
            .arg("run")
            .arg(SCENARIO)
            .args(["--local", "--json", "--out"])
            .arg(&bundle),
        "heisen run",
    );
    let failures = run["failures"].as_u64().unwrap();
    assert!(failures > 0 && failures < 16, "the race shows up in some load runs, not all: {run}");

    let x = json_of(Command::new(heisen()).arg("explain").arg(&bundle).arg("--json"), "heisen explain");
    let first = &x["candidates"][0];
    let summary = first["summary"].as_str().unwrap_or_default();
    assert!(
        summary.contains("start's openat on {shared}/app-{run}.json")
            || summary.contains("start's read on {shared}/app-{run}.json"),
        "candidate 1 is the app's access to the config file: {x:#}"
    );
    assert!(summary.contains("while deploy has {shared}/app-{run}.json open"), "{x:#}");

    let v = json_of(
        Command::new(heisen()).current_dir(dir.path()).arg("verify").arg(&bundle).args([
            "--candidate",
            "1",
            "--local",
            "--json",
        ]),
        "heisen verify",
    );
    assert_eq!(v["verdict"], "confirmed", "{v:#}");
    // The amplification: how often it failed by itself beside the forced rates.
    assert_eq!(v["natural"]["runs"], 16, "{v:#}");
    assert_eq!(v["natural"]["failures"], run["failures"], "{v:#}");
    let rates: Vec<(String, u64, u64)> = v["orderings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (o["name"].as_str().unwrap().to_string(), o["runs"].as_u64().unwrap(), o["failures"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(rates[0], ("during".to_string(), 5, 5), "{v:#}");
    assert!(rates[1..].iter().all(|(_, runs, f)| *runs == 5 && *f == 0), "{v:#}");
    assert!(Path::new(&bundle).exists());
}
