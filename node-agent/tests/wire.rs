//! Every input from the wire is hostile: an agent is root on its host. These run the real
//! `heisen-agent` binary on loopback and send it what a hostile or buggy client would: a pid it
//! never launched (pid 1 is every process), a syscall name that is a path, a working directory
//! elsewhere on the host, an attach to pid 1. Each must be refused with a clear status, and
//! nothing on the host may change.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use heisen_proto::{
    AttachRequest, CaptureStateRequest, HelloRequest, LaunchRequest, StartCaptureRequest, StopCaptureRequest,
    StopProcessRequest, StreamEventsRequest,
};
use tonic::Code;

mod common;

const AGENT: &str = env!("CARGO_BIN_EXE_heisen-agent");

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A process still running (not gone, not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').and_then(|i| s.get(i + 2..i + 3)).map(|state| state != "Z" && state != "X"))
        .unwrap_or(false)
}

/// Starts `cmd` (the agent binary, set up by the caller) on a free loopback port with its data in
/// `data`, and waits until it listens.
fn start_agent(data: &std::path::Path, mut cmd: Command) -> (Running, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    cmd.args(["--listen", &format!("127.0.0.1:{port}"), "--name", "w", "--scope", "launched", "--data"])
        .arg(data)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let agent = Running(cmd.spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "agent did not listen on port {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
    (agent, port)
}

#[test]
fn hostile_requests_are_refused_and_change_nothing() {
    if !is_root() {
        eprintln!("SKIPPED hostile_requests_are_refused_and_change_nothing: needs root (a capture needs tracefs)");
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let (_agent, port) = start_agent(&data.path().join("agent"), Command::new(AGENT));
    // A process of the test's own, which the agent never launched.
    let mut bystander = Command::new("sleep").arg("30").spawn().unwrap();
    let outside = data.path().join("outside");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut agent = common::connect(&format!("127.0.0.1:{port}"), &data.path().join("agent/token")).await;
        let capture = |id: &str, syscalls: &[&str]| StartCaptureRequest {
            capture_id: id.into(),
            syscalls: syscalls.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };

        // A syscall name is joined into a tracefs path: a path is refused.
        let bad = agent.start_capture(capture("c1", &["write/../../../../tmp/x"])).await.unwrap_err();
        assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");

        // An unknown capture: NOT_FOUND, for every call that names one.
        let stop = |id: &str, pid: i32| StopProcessRequest { capture_id: id.into(), pid, grace_ms: 10 };
        let e = agent.stop_capture(StopCaptureRequest { capture_id: "nope".into() }).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
        let e = agent.attach(AttachRequest { capture_id: "nope".into(), pid: 1 }).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e:?}");

        agent.start_capture(capture("c1", &["openat"])).await.unwrap();

        // StopProcess signals a process group: pid 1 would be every process, another pid a
        // process the agent never launched.
        for pid in [-1, 0, 1] {
            let e = agent.stop_process(stop("c1", pid)).await.unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "pid {pid}: {e:?}");
        }
        let e = agent.stop_process(stop("c1", bystander.id() as i32)).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

        // Attach: never pid 1, never a process outside the host's scope.
        let e = agent.attach(AttachRequest { capture_id: "c1".into(), pid: 1 }).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        let e = agent.attach(AttachRequest { capture_id: "c1".into(), pid: bystander.id() as i32 }).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

        // A working directory elsewhere on the host is refused, and not created.
        let launch = |workdir: &str| LaunchRequest {
            capture_id: "c1".into(),
            run: 1,
            name: "p".into(),
            role: "step".into(),
            argv: vec!["sleep".into(), "30".into()],
            workdir: workdir.into(),
            hold_timeout_ms: u64::MAX,
            ..Default::default()
        };
        let e = agent.launch(launch(&outside.display().to_string())).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(!outside.exists(), "the agent made {}", outside.display());

        // What the agent launched for this capture it may stop; for another capture it may not.
        let mut notices = agent.launch(launch("")).await.unwrap().into_inner();
        let started = notices.message().await.unwrap().unwrap();
        let Some(heisen_proto::process_notice::Notice::Started(s)) = started.notice else {
            panic!("first notice is not Started: {started:?}")
        };
        agent.start_capture(capture("c2", &["openat"])).await.unwrap();
        let e = agent.stop_process(stop("c2", s.pid)).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        assert!(alive(s.pid as u32), "a refused stop signalled pid {}", s.pid);
        let stopped = agent.stop_process(stop("c1", s.pid)).await.unwrap().into_inner();
        assert!(stopped.signalled);

        // Reading events of a capture that never existed: nothing, and an error or an empty stream.
        let events = agent.stream_events(StreamEventsRequest { capture_id: "never".into(), from_seq: 0 }).await;
        if let Ok(stream) = events {
            let mut stream = stream.into_inner();
            assert!(stream.message().await.ok().flatten().is_none(), "events of a capture that never existed");
        }
        for id in ["c1", "c2"] {
            agent.stop_capture(StopCaptureRequest { capture_id: id.into() }).await.unwrap();
        }
    });
    assert!(alive(bystander.id()), "the agent signalled a process it never launched");
    let _ = bystander.kill();
    let _ = bystander.wait();
}

/// A launched process starts as init would start it, whatever the agent inherited: an agent
/// run under nohup ignores SIGHUP, and a daemon it launched must not (its SIGHUP race is the bug
/// a user came to see).
#[test]
fn launched_processes_start_with_every_signal_at_its_default() {
    if !is_root() {
        eprintln!(
            "SKIPPED launched_processes_start_with_every_signal_at_its_default: needs root (a capture needs tracefs)"
        );
        return;
    }
    use std::os::unix::process::CommandExt;
    let data = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(AGENT);
    // SAFETY: signal() is async-signal-safe; the agent starts with SIGHUP and SIGUSR1 ignored, as
    // under nohup.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGHUP, libc::SIG_IGN);
            libc::signal(libc::SIGUSR1, libc::SIG_IGN);
            Ok(())
        });
    }
    let (_agent, port) = start_agent(&data.path().join("agent"), cmd);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let lines = runtime.block_on(async {
        let mut agent = common::connect(&format!("127.0.0.1:{port}"), &data.path().join("agent/token")).await;
        agent
            .start_capture(StartCaptureRequest {
                capture_id: "s".into(),
                syscalls: vec!["openat".into()],
                ..Default::default()
            })
            .await
            .unwrap();
        let launch = LaunchRequest {
            capture_id: "s".into(),
            run: 1,
            name: "p".into(),
            role: "step".into(),
            argv: vec!["grep".into(), "-E".into(), "^Sig(Ign|Blk)".into(), "/proc/self/status".into()],
            ..Default::default()
        };
        let mut notices = agent.launch(launch).await.unwrap().into_inner();
        let mut lines = Vec::new();
        while let Ok(Some(n)) = tokio::time::timeout(Duration::from_secs(10), notices.message()).await.unwrap() {
            match n.notice {
                Some(heisen_proto::process_notice::Notice::Output(o)) => lines.push(o.line),
                Some(heisen_proto::process_notice::Notice::Exited(_)) => break,
                _ => {}
            }
        }
        agent.stop_capture(StopCaptureRequest { capture_id: "s".into() }).await.unwrap();
        lines
    });
    assert_eq!(lines, vec!["SigBlk:\t0000000000000000", "SigIgn:\t0000000000000000"], "{lines:?}");
}

/// A capture is recorded by one run of one agent, once: a stopped capture is never started
/// again, an unknown id is NOT_FOUND for state and events and creates nothing, and after a
/// kill -9 and restart the agent has a new boot id, tells the capture it was recording
/// (forgotten) from the one it had stopped, and refuses to start the forgotten one again.
#[test]
fn a_capture_is_recorded_once_and_a_restart_forgets_nothing_in_silence() {
    if !is_root() {
        eprintln!(
            "SKIPPED a_capture_is_recorded_once_and_a_restart_forgets_nothing_in_silence: needs root (a capture needs \
             tracefs)"
        );
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("agent");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let start =
        |id: &str| StartCaptureRequest { capture_id: id.into(), syscalls: vec!["openat".into()], ..Default::default() };
    let state = |id: &str| CaptureStateRequest { capture_id: id.into() };

    let (agent, port) = start_agent(&dir, Command::new(AGENT));
    let first_boot = runtime.block_on(async {
        let mut agent = common::connect(&format!("127.0.0.1:{port}"), &dir.join("token")).await;
        let boot = agent.hello(HelloRequest {}).await.unwrap().into_inner().boot_id;
        agent.start_capture(start("stopped")).await.unwrap();
        agent.start_capture(start("running")).await.unwrap();
        let s = agent.stop_capture(StopCaptureRequest { capture_id: "stopped".into() }).await.unwrap().into_inner();
        assert!(!s.recording && !s.forgotten && s.boot_id == boot, "{s:?}");
        let e = agent.start_capture(start("stopped")).await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        assert!(e.message().contains("never started again"), "{}", e.message());
        for id in ["nope", "nope"] {
            let e = agent.capture_state(state(id)).await.unwrap_err();
            assert_eq!(e.code(), Code::NotFound, "{e:?}");
            let e = agent.stream_events(StreamEventsRequest { capture_id: id.into(), from_seq: 0 }).await.unwrap_err();
            assert_eq!(e.code(), Code::NotFound, "{e:?}");
        }
        let s = agent.capture_state(state("running")).await.unwrap().into_inner();
        assert!(s.recording && !s.forgotten, "{s:?}");
        boot
    });
    drop(agent); // SIGKILL, mid-capture of `running`

    let (_agent, port) = start_agent(&dir, Command::new(AGENT));
    runtime.block_on(async {
        let mut agent = common::connect(&format!("127.0.0.1:{port}"), &dir.join("token")).await;
        let boot = agent.hello(HelloRequest {}).await.unwrap().into_inner().boot_id;
        assert_ne!(boot, first_boot, "a restarted agent kept its boot id");
        let s = agent.capture_state(state("stopped")).await.unwrap().into_inner();
        assert!(!s.recording && !s.forgotten, "a cleanly stopped capture counts as forgotten: {s:?}");
        let s = agent.capture_state(state("running")).await.unwrap().into_inner();
        assert!(!s.recording && s.forgotten && s.boot_id == boot, "{s:?}");
        let e = agent.start_capture(start("running")).await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        assert!(e.message().contains("earlier run of this agent"), "{}", e.message());
        // Stopping it again is harmless and says what it is.
        let s = agent.stop_capture(StopCaptureRequest { capture_id: "running".into() }).await.unwrap().into_inner();
        assert!(s.forgotten, "{s:?}");
    });
}
