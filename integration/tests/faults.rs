//! What an agent promises when its callers are hostile (an agent is root on its host): every
//! call carries the agent's token, loopback included, and the token is readable by root only.
//! These run the real `heisen agent` and the real `heisen` client, the client as user nobody.

mod common;

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{heisen, is_root};

struct Agent(std::process::Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// As a local user without the token, no call to a loopback agent captures anything: without a
/// token the agent refuses, and the agent's own token file (made on first start, mode 0600) is
/// not readable. Root with the token gets through.
#[test]
fn no_local_user_reaches_an_agent_without_its_token() {
    if !is_root() {
        eprintln!("SKIPPED no_local_user_reaches_an_agent_without_its_token: needs root (an agent, and user nobody)");
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(heisen())
        .args(["agent", "--listen", "127.0.0.1:0", "--name", "a", "--scope", "launched", "--data"])
        .arg(data.path().join("agent"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let agent = Agent(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let addr = std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| l.split(" listening on ").nth(1).map(str::to_string));
        let _ = tx.send(addr);
    });
    let addr = rx.recv_timeout(Duration::from_secs(15)).expect("agent announced nothing").expect("agent exited");
    let token = data.path().join("agent/token");
    let meta = std::fs::metadata(&token).unwrap();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777, 0o600);

    // A working directory user nobody may use.
    let cwd = tempfile::tempdir().unwrap();
    std::fs::set_permissions(cwd.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let as_nobody = |extra: &[&str]| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(heisen())
            .args(["capture", "--agent", &format!("a={addr}"), "--for", "1s"])
            .args(extra)
            .current_dir(cwd.path())
            .output()
            .unwrap()
    };
    let out = as_nobody(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("requires a token"), "{stderr}");
    let out = as_nobody(&["--token-file", token.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("token file"), "{stderr}");
    assert!(std::fs::read_dir(cwd.path()).unwrap().next().is_none(), "user nobody's capture wrote something");

    let ok = Command::new(heisen())
        .args(["agents", "--agent", &format!("a={addr}"), "--json", "--token-file"])
        .arg(&token)
        .output()
        .unwrap();
    assert_eq!(ok.status.code(), Some(0), "{}", String::from_utf8_lossy(&ok.stderr));
    drop(agent);
}
