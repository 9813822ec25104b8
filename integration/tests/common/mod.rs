//! Helpers shared by the end-to-end tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use heisen_harness::{Hosts, Options};
use std::sync::OnceLock;

/// The workspace's `heisen` binary, built (once per test binary) with the guest programs'
/// `heisen-guest` beside it (what `{fixture}` runs), so neither is stale when a single package's
/// tests run.
pub fn heisen() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "--quiet", "-p", "heisen-coordinator", "-p", "heisen-guests", "--bins"])
                .status()
                .expect("run cargo");
            assert!(status.success(), "building heisen and heisen-guest failed");
            let exe = std::env::current_exe().unwrap();
            exe.parent().and_then(Path::parent).unwrap().join("heisen")
        })
        .clone()
}

#[allow(dead_code)] // not every test binary needs root
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[allow(dead_code)] // not every test binary runs a demo
/// Runs `heisen demo --json --out TMP ARGS...` in a fresh directory; it must exit 0. Returns its
/// JSON and the directory (kept alive for the bundles in it).
pub fn demo(args: &[&str]) -> (serde_json::Value, tempfile::TempDir) {
    let out = tempfile::tempdir().unwrap();
    let result = Command::new(heisen())
        .args(["demo", "--json", "--out"])
        .arg(out.path())
        .args(args)
        .current_dir(out.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(0), "demo failed:\n{stderr}");
    let json = serde_json::from_slice(&result.stdout).unwrap_or_else(|e| panic!("bad JSON ({e}): {stderr}"));
    (json, out)
}

#[allow(dead_code)] // not every test binary captures ad hoc
pub fn in_netns(ns: &str, script: &str) -> std::process::Output {
    Command::new("ip").args(["netns", "exec", ns, "sh", "-c", script]).output().expect("run ip netns exec")
}

/// The one netns host `box` the tests record on, with its agent running; None (after saying
/// why) when not root.
#[allow(dead_code)] // not every test binary captures ad hoc
pub fn box_host(test: &str) -> Option<Hosts> {
    if !is_root() {
        eprintln!("SKIPPED {test}: needs root for a netns host, tracefs and BPF (CI runs as root)");
        return None;
    }
    Some(Hosts::start(&[heisen(), "agent".into()], &["box".to_string()], &Options::default()).unwrap())
}

/// `heisen capture` on one host of `hosts`, with its token and TLS files; the test adds the rest.
#[allow(dead_code)] // not every test binary captures ad hoc
pub fn capture_on(hosts: &Hosts, host: &str) -> Command {
    let mut cmd = Command::new(heisen());
    cmd.args(["capture", "--agent", &format!("{host}={}", hosts.agents[host])]).args(hosts.client_args());
    cmd
}

/// A running `heisen capture` whose stderr is read as it comes, so a test waits until every
/// agent records (the capture's `recording` line) instead of sleeping a guessed time (2.5 s was
/// not enough on a cold CI machine: the workload ran before the capture started).
#[allow(dead_code)] // not every test binary captures ad hoc
pub struct Running {
    pub child: std::process::Child,
    pub stderr: std::sync::Arc<std::sync::Mutex<String>>,
    pub reader: std::thread::JoinHandle<()>,
}

/// Starts `cmd` (a capture) with stdout and stderr piped, and waits, at most 30 s, until it
/// records.
#[allow(dead_code)] // not every test binary captures ad hoc
pub fn recording(cmd: &mut Command) -> Running {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let pipe = child.stderr.take().unwrap();
    let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let collected = stderr.clone();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
            let mut text = collected.lock().unwrap();
            text.push_str(&line);
            text.push('\n');
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while !stderr.lock().unwrap().contains(": recording ") {
        assert!(child.try_wait().unwrap().is_none(), "capture ended early: {}", stderr.lock().unwrap());
        assert!(Instant::now() < deadline, "capture did not start within 30 s: {}", stderr.lock().unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
    Running { child, stderr, reader }
}

/// Waits for a capture given `--for`, at most 30 s, and returns what it printed.
#[allow(dead_code)] // not every test binary captures ad hoc
pub fn finished(mut capture: Running) -> std::process::Output {
    let deadline = Instant::now() + Duration::from_secs(30);
    while capture.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "capture did not end");
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = capture.child.wait_with_output().unwrap();
    capture.reader.join().unwrap();
    let stderr = capture.stderr.lock().unwrap().clone().into_bytes();
    std::process::Output { stderr, ..output }
}
