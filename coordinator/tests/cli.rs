//! The `heisen` command line against bad input: every case exits 2 with a one-line error that
//! names the file (or host), and never panics. Plus the `--help` snapshot.

use std::path::Path;
use std::process::{Command, Output};

const HEISEN: &str = env!("CARGO_BIN_EXE_heisen");

fn heisen(args: &[&str]) -> Output {
    Command::new(HEISEN).args(args).output().unwrap()
}

fn assert_bad_input(out: &Output, mentions: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line expected: {stderr}");
    for m in mentions {
        assert!(stderr.contains(m), "`{m}` missing from: {stderr}");
    }
}

/// Compares with `tests/snapshots/NAME`; `UPDATE_SNAPSHOTS=1` rewrites it.
fn check_snapshot(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots").join(name);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(actual, expected, "snapshot {name} differs; rerun with UPDATE_SNAPSHOTS=1 if intended");
}

#[test]
fn help_text() {
    let out = heisen(&["--help"]);
    assert!(out.status.success());
    check_snapshot("help.txt", &String::from_utf8_lossy(&out.stdout));
    let out = heisen(&["timeline", "--help"]);
    check_snapshot("timeline-help.txt", &String::from_utf8_lossy(&out.stdout));
}

/// A real (tiny) bundle written by the recordings crate's writer through `heisen`'s reader.
fn good_bundle(dir: &Path) -> Vec<u8> {
    let bundle = heisen_recordings::Bundle {
        causal: vec![],
        capture_id: "c".into(),
        started_ns: 0,
        scenario: None,
        hosts: vec![],
        runs: vec![],
    };
    let path = dir.join("good.heisen");
    bundle.write(&path).unwrap();
    let out = heisen(&["timeline", path.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
    std::fs::read(&path).unwrap()
}

#[test]
fn timeline_refuses_damaged_bundles() {
    let dir = tempfile::tempdir().unwrap();
    let good = good_bundle(dir.path());
    let mut flipped = good.clone();
    let middle = good.len() - 10;
    flipped[middle] ^= 0x01;
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let random: Vec<u8> = (0..4096)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect();
    let cases: [(&str, &[u8], &str); 5] = [
        ("truncated.heisen", &good[..good.len() / 2], "truncated"),
        ("flipped.heisen", &flipped, "checksum"),
        ("random.heisen", &random, "not a heisen bundle"),
        ("empty.heisen", b"", "not a heisen bundle"),
        ("header-only.heisen", &good[..24], "truncated"),
    ];
    for (name, bytes, problem) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        assert_bad_input(&heisen(&["timeline", path.to_str().unwrap()]), &[name, problem]);
    }
    assert_bad_input(&heisen(&["timeline", "/nonexistent/x.heisen"]), &["/nonexistent/x.heisen"]);
}

#[test]
fn scenario_errors_name_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "name = \"x\"\n[hosts.a]\n[steps.s]\nhost = \"b\"\ncommand = [\"true\"]\n[failure]\nstep = \"s\"\nexit = \"nonzero\"\n").unwrap();
    let out = heisen(&["run", path.to_str().unwrap(), "--agent", "a=127.0.0.1:1"]);
    assert_bad_input(&out, &["bad.toml:4:", "steps.s.host", "unknown host `b`"]);
}

#[test]
fn unreachable_agents_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ok.toml");
    std::fs::write(&path, "name = \"x\"\n[hosts.a]\n[steps.s]\nhost = \"a\"\ncommand = [\"true\"]\n[failure]\nstep = \"s\"\nexit = \"nonzero\"\n").unwrap();
    // Port 1 on loopback: nothing listens there.
    let out = heisen(&["run", path.to_str().unwrap(), "--agent", "a=127.0.0.1:1"]);
    assert_bad_input(&out, &["agent a", "127.0.0.1:1", "unreachable"]);
    let out = heisen(&["run", path.to_str().unwrap()]);
    assert_bad_input(&out, &["needs hosts a", "--agent"]);
    let out = heisen(&["agents", "--agent", "a=127.0.0.1:1", "--json"]);
    assert_eq!(out.status.code(), Some(2));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows[0]["reachable"], false);
}

#[test]
fn capture_and_diff_refuse_bad_input() {
    let out = heisen(&["capture", "--agent", "a=127.0.0.1:1", "--for", "soon"]);
    assert_bad_input(&out, &["--for `soon`", "30s"]);
    let out = heisen(&["capture", "--agent", "a=127.0.0.1:1", "--for", "1s"]);
    assert_bad_input(&out, &["agent a", "127.0.0.1:1", "unreachable"]);
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("b.heisen");
    std::fs::write(&bundle, good_bundle(dir.path())).unwrap();
    let out = heisen(&["diff", bundle.to_str().unwrap(), "--hosts", "nope,a"]);
    assert_bad_input(&out, &["no host `nope`"]);
}
