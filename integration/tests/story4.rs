//! Story 4 (cron-twin) end to end on netns hosts running real cron daemons (busybox crond from
//! Debian's busybox-static, installed by ./scripts/setup): `heisen demo cron-twin`, then the load
//! bundle's cron jobs and the attribution of every lost job file.
//!
//! The load run waits for one real cron minute (at most ~61 s), once. Needs root (cron jobs for
//! root, hosts told apart by address); without root the test says why it skipped.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

mod common;
use common::{heisen, is_root};

fn timeline(bundle: &Path, args: &[&str]) -> Vec<Value> {
    let out = Command::new(heisen()).arg("timeline").arg(bundle).arg("--json").args(args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice::<Value>(&out.stdout).unwrap().as_array().unwrap().clone()
}

#[test]
fn story4_confirmed_on_netns_hosts() {
    if !is_root() {
        eprintln!("SKIPPED story4_confirmed_on_netns_hosts: needs root for cron daemons and network namespaces (CI runs as root)");
        return;
    }
    let (demo, _dir) = common::demo(&["cron-twin", "--runs", "3"]);
    assert_eq!(demo["verdict"], "confirmed", "{demo:#}");
    assert_eq!(demo["explain_rank"], 1, "{:#}", demo["explain"]);
    assert_eq!(demo["explain"]["candidates"][0]["unit"], "items", "{:#}", demo["explain"]);
    let orderings = demo["orderings"].as_array().unwrap();
    let count = |name: &str| {
        let o = orderings.iter().find(|o| o["name"] == name).unwrap_or_else(|| panic!("{name}: {demo:#}"));
        (o["runs"].as_u64().unwrap(), o["failures"].as_u64().unwrap())
    };
    assert_eq!(count("pickup-twin-first"), (3, 3), "the twin claiming first loses jobs every time");
    assert_eq!(count("pickup-legacy-first"), (3, 0), "the legitimate host first loses none");

    // Both hosts' cron jobs are in the timeline with the crontab line that started them.
    let bundle = Path::new(demo["bundle"].as_str().unwrap()).to_path_buf();
    let crons = timeline(&bundle, &["--kind", "cron"]);
    for host in ["legacy", "twin"] {
        let start = crons
            .iter()
            .find(|e| e["host"] == host && e["phase"] == "start")
            .unwrap_or_else(|| panic!("no cron job start on {host}: {crons:#?}"));
        let line = start["crontab_line"].as_str().unwrap();
        assert!(line.starts_with("* * * * * ") && line.contains(" pickup "), "{host}: {start}");
        assert!(start["crontab"].as_str().unwrap().ends_with("/root"), "{start}");
        assert!(
            crons.iter().any(|e| e["host"] == host && e["phase"] == "end" && e["exit_code"] == 0),
            "the job on {host} ended with its exit status: {crons:#?}"
        );
    }

    // Every lost job file was claimed (flock returned 0) by a process of the twin's cron job.
    let submit_lines: Vec<String> = timeline(&bundle, &["--kind", "output", "--host", "legacy"])
        .iter()
        .filter(|e| e["name"] == "submit")
        .map(|e| e["line"].as_str().unwrap_or("").to_string())
        .collect();
    let lost_line = submit_lines.iter().find(|l| l.starts_with("lost: ")).expect("the load run lost jobs");
    let lost: Vec<&str> = lost_line["lost: ".len()..].split(' ').collect();
    assert!(!lost.is_empty());
    let twin_job = crons.iter().find(|e| e["host"] == "twin" && e["phase"] == "start").unwrap()["job_pid"].clone();
    let events = timeline(&bundle, &["--host", "twin"]);
    for job in &lost {
        let claim = events
            .iter()
            .find(|e| {
                e["kind"] == "lock"
                    && e["ret"] == 0
                    && e["op"] == "LOCK_EX|LOCK_NB"
                    && e["path"].as_str().is_some_and(|p| p.ends_with(&format!("/{job}")))
            })
            .unwrap_or_else(|| panic!("lost {job} was not claimed on twin"));
        let exec = events
            .iter()
            .find(|e| e["kind"] == "exec" && e["pid"] == claim["pid"])
            .unwrap_or_else(|| panic!("no exec for the claiming process {}", claim["pid"]));
        assert_eq!(exec["ppid"], twin_job, "{job} was taken by a child of the twin's cron job");
    }
}
