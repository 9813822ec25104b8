//! A gate never hangs a host: a held process is released when its hold times out, and when the
//! coordinator's gate channel goes away. Real agent binary, real gRPC, real seccomp.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use heisen_proto as proto;

mod common;

const AGENT: &str = env!("CARGO_BIN_EXE_heisen-agent");

/// The agent process and its data dir, kept alive together.
struct Running(Child, tempfile::TempDir);

impl Running {
    fn stderr(&self) -> String {
        std::fs::read_to_string(self.1.path().join("agent.stderr")).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts an agent on loopback port 0: it picks a free port and announces it on stdout
/// (`heisen-agent NAME listening on ADDR`), so no other test's agent can take it first.
async fn agent() -> (Running, common::Client) {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(AGENT)
        .args(["--listen", "127.0.0.1:0", "--name", "g", "--scope", "launched", "--data"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        // Kept for a failing test to show (a panic in a handler surfaces only as "transport error").
        .stderr(std::fs::File::create(dir.path().join("agent.stderr")).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let running = Running(child, dir);
    let announced = tokio::task::spawn_blocking(move || {
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| l.split(" listening on ").nth(1).map(str::to_string))
    });
    let addr = tokio::time::timeout(Duration::from_secs(10), announced)
        .await
        .unwrap_or_else(|_| panic!("agent did not announce its address: {}", running.stderr()))
        .unwrap()
        .unwrap_or_else(|| panic!("agent exited without listening: {}", running.stderr()));
    let client = common::connect(&addr, &running.1.path().join("token")).await;
    (running, client)
}

/// `sh -c 'echo held; echo free'` gated at its first write to stdout.
fn gated_echo(capture: &str, hold_timeout_ms: u64) -> proto::LaunchRequest {
    proto::LaunchRequest {
        capture_id: capture.into(),
        run: 1,
        name: "echo".into(),
        role: "step".into(),
        argv: vec!["sh".into(), "-c".into(), "echo held; echo free".into()],
        gates: vec![proto::GatePoint {
            id: "echo:write#1".into(),
            syscall: "write".into(),
            nth: 1,
            ..Default::default()
        }],
        hold_timeout_ms,
        ..Default::default()
    }
}

type Commands = tokio::sync::mpsc::UnboundedSender<proto::GateCommand>;

/// Opens the gate channel of `capture`: the sender of releases and the stream of hold notices.
async fn gate_channel(client: &mut common::Client, capture: &str) -> (Commands, tonic::Streaming<proto::GateNotice>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tx.send(proto::GateCommand::open(capture)).unwrap();
    let notices = client.gate(tokio_stream::wrappers::UnboundedReceiverStream::new(rx)).await.unwrap().into_inner();
    (tx, notices)
}

async fn start(client: &mut common::Client, capture: &str) {
    client
        .start_capture(proto::StartCaptureRequest { capture_id: capture.into(), ..Default::default() })
        .await
        .unwrap_or_else(|s| panic!("StartCapture {capture} failed: code {:?}: {}", s.code(), s.message()));
}

/// The gate actions a capture recorded, in order.
async fn gate_actions(client: &mut common::Client, capture: &str) -> Vec<String> {
    client.stop_capture(proto::StopCaptureRequest { capture_id: capture.into() }).await.unwrap();
    let mut events = client
        .stream_events(proto::StreamEventsRequest { capture_id: capture.into(), from_seq: 0 })
        .await
        .unwrap()
        .into_inner();
    let mut actions = Vec::new();
    while let Some(e) = events.message().await.unwrap() {
        if let Some(proto::event::Kind::Gate(g)) = e.kind {
            actions.push(g.action);
        }
    }
    actions
}

/// Collects a launch stream until exit: (output lines, exit code, time from start to exit).
async fn life(mut stream: tonic::Streaming<proto::ProcessNotice>) -> (Vec<String>, i32, Duration) {
    use proto::process_notice::Notice;
    let start = Instant::now();
    let mut lines = Vec::new();
    while let Some(n) =
        tokio::time::timeout(Duration::from_secs(20), stream.message()).await.expect("process hung").unwrap()
    {
        match n.notice {
            Some(Notice::Output(o)) => lines.push(o.line),
            Some(Notice::Exited(e)) => return (lines, e.code, start.elapsed()),
            _ => {}
        }
    }
    panic!("stream ended without an exit notice");
}

#[tokio::test]
async fn hold_is_released_by_timeout() {
    let (_agent, mut client) = agent().await;
    client
        .start_capture(proto::StartCaptureRequest { capture_id: "t1".into(), ..Default::default() })
        .await
        .unwrap_or_else(|s| {
            panic!("StartCapture failed: code {:?}: {}\nagent stderr:\n{}", s.code(), s.message(), _agent.stderr())
        });
    let (tx, mut notices) = gate_channel(&mut client, "t1").await;
    let stream = client.launch(gated_echo("t1", 400)).await.unwrap().into_inner();
    let notice = tokio::time::timeout(Duration::from_secs(10), notices.message()).await.unwrap().unwrap().unwrap();
    assert_eq!(notice.gate, "echo:write#1");
    // Never released: the agent lets it go after 400 ms.
    let (lines, code, took) = life(stream).await;
    assert_eq!((lines, code), (vec!["held".to_string(), "free".to_string()], 0));
    assert!(took >= Duration::from_millis(350), "released too early: {took:?}");
    drop(tx);
    assert_eq!(gate_actions(&mut client, "t1").await, vec!["held", "timeout"]);
}

#[tokio::test]
async fn holds_are_released_when_the_coordinator_goes_away() {
    let (_agent, mut client) = agent().await;
    client
        .start_capture(proto::StartCaptureRequest { capture_id: "t2".into(), ..Default::default() })
        .await
        .unwrap_or_else(|s| {
            panic!("StartCapture failed: code {:?}: {}\nagent stderr:\n{}", s.code(), s.message(), _agent.stderr())
        });
    let (tx, mut notices) = gate_channel(&mut client, "t2").await;
    let stream = client.launch(gated_echo("t2", 60_000)).await.unwrap().into_inner();
    tokio::time::timeout(Duration::from_secs(10), notices.message()).await.unwrap().unwrap().unwrap();
    // The coordinator vanishes: its gate channel closes.
    drop(tx);
    drop(notices);
    let (lines, code, took) = life(stream).await;
    assert_eq!((lines.len(), code), (2, 0));
    assert!(took < Duration::from_secs(30), "held until the hold timeout instead of the channel close: {took:?}");
}

/// Gate channels are per capture: a capture whose coordinator opened none holds nothing (its
/// gated call goes on at once, and says so), and one capture's channel neither sees nor releases
/// another's holds.
#[tokio::test]
async fn gate_channels_are_per_capture_and_no_channel_holds_nothing() {
    let (_agent, mut client) = agent().await;
    start(&mut client, "watched").await;
    start(&mut client, "unwatched").await;
    let (tx, mut notices) = gate_channel(&mut client, "watched").await;

    // No channel for `unwatched`: its gated write goes on at once although the hold timeout is
    // a minute, and the watched capture's channel hears nothing of it.
    let (lines, code, took) = life(client.launch(gated_echo("unwatched", 60_000)).await.unwrap().into_inner()).await;
    assert_eq!((lines.len(), code), (2, 0));
    assert!(took < Duration::from_secs(10), "an unwatched gate held for {took:?}");
    let heard = tokio::time::timeout(Duration::from_millis(300), notices.message()).await;
    assert!(heard.is_err(), "the watched capture's channel heard another capture's hold: {heard:?}");
    assert_eq!(gate_actions(&mut client, "unwatched").await, vec!["held", "passed (no gate channel)"]);

    // The watched capture holds; a release naming its hold through another capture's channel
    // does nothing, through its own channel it releases.
    let mut stream = client.launch(gated_echo("watched", 60_000)).await.unwrap().into_inner();
    let started = stream.message().await.unwrap().unwrap();
    assert!(matches!(started.notice, Some(proto::process_notice::Notice::Started(_))), "{started:?}");
    let hold = tokio::time::timeout(Duration::from_secs(10), notices.message()).await.unwrap().unwrap().unwrap();
    start(&mut client, "other").await;
    let (other, _other_notices) = gate_channel(&mut client, "other").await;
    other.send(proto::GateCommand::release(hold.hold_id)).unwrap();
    // Still held: its first line never comes.
    let early = tokio::time::timeout(Duration::from_millis(500), stream.message()).await;
    assert!(early.is_err(), "another capture's channel released the hold: {early:?}");
    tx.send(proto::GateCommand::release(hold.hold_id)).unwrap();
    let (lines, code, _) = life(stream).await;
    assert_eq!((lines, code), (vec!["held".to_string(), "free".to_string()], 0));
    assert_eq!(gate_actions(&mut client, "watched").await, vec!["held", "released"]);
}
