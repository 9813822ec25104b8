//! The failure predicate judged on real processes: a shell step that exits 3, is killed by
//! SIGSEGV, exits 1, or passes, run by `heisen run` on a local agent. Which runs failed is read
//! back from the bundle (`heisen explain --json`'s `failing_runs`).

use std::process::Command;

use serde_json::Value;

mod common;
use common::heisen;

/// Run 1 prints an error and exits 3, run 2 kills itself with SIGSEGV, run 3 exits 1 printing
/// the same error, run 4 passes.
const STEP: &str = "case {run} in 1) echo 'E: broken pipe'; exit 3;; 2) kill -SEGV $$;; \
                    3) echo 'E: broken pipe'; exit 1;; *) echo fine;; esac";

fn failing_runs(failure: &str) -> Vec<u64> {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("exits.toml");
    std::fs::write(
        &scenario,
        format!(
            "name = \"exits\"\n[hosts.a]\n[steps.s]\nhost = \"a\"\ncommand = [\"sh\", \"-c\", {STEP:?}]\n\
             [load]\nrepeat = 4\n[failure]\nstep = \"s\"\n{failure}\n"
        ),
    )
    .unwrap();
    let bundle = dir.path().join("exits.heisen");
    let out = Command::new(heisen())
        .arg("run")
        .arg(&scenario)
        .args(["--local", "--loopback", "--json", "--out"])
        .arg(&bundle)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "heisen run: {stderr}");
    let run: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{stderr}"));
    assert_eq!(run["runs"], 4, "{run}");
    let out = Command::new(heisen()).arg("explain").arg(&bundle).arg("--json").output().unwrap();
    let x: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("explain: {}", String::from_utf8_lossy(&out.stderr)));
    x["failing_runs"].as_array().unwrap().iter().map(|r| r.as_u64().unwrap()).collect()
}

#[test]
fn exit_codes_signals_patterns_and_their_combination_judge_real_runs() {
    assert_eq!(failing_runs("exit = \"nonzero\""), vec![1, 2, 3]);
    assert_eq!(failing_runs("exit = 3"), vec![1]);
    assert_eq!(failing_runs("exit = [1, 3]"), vec![1, 3]);
    assert_eq!(failing_runs("signal = \"SIGSEGV\""), vec![2]);
    assert_eq!(failing_runs("exit = 3\nsignal = [\"SIGABRT\", \"SIGSEGV\"]"), vec![1, 2]);
    assert_eq!(failing_runs("output_regex = \"^E: .*pipe$\""), vec![1, 3]);
    assert_eq!(failing_runs("output_regex = \"^E: \"\nexit = 1\nmatch = \"all\""), vec![3]);
}
