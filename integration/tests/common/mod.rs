//! Helpers shared by the end-to-end tests.

use std::path::{Path, PathBuf};
use std::process::Command;
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
