//! The agent launches processes as its user, so every call needs its token, and anything but
//! loopback needs a token chosen by the operator and TLS.
//! These run the real `heisen-agent` binary and talk real gRPC to it.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use heisen_proto::agent_client::AgentClient;
use heisen_proto::HelloRequest;

const AGENT: &str = env!("CARGO_BIN_EXE_heisen-agent");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "agent did not listen on port {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn public_listen_without_token_is_refused() {
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(AGENT)
        .args(["--listen", &format!("0.0.0.0:{}", free_port()), "--data"])
        .arg(data.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--token-file"), "{stderr}");
    // With a token but no TLS, still refused: the token would cross the network in clear.
    let token_file = data.path().join("token");
    std::fs::write(&token_file, "s3cret\n").unwrap();
    std::fs::set_permissions(&token_file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let out = Command::new(AGENT)
        .args(["--listen", &format!("0.0.0.0:{}", free_port()), "--token-file"])
        .arg(&token_file)
        .arg("--data")
        .arg(data.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("without TLS"), "{stderr}");
}

#[test]
fn calls_without_the_token_are_refused() {
    let data = tempfile::tempdir().unwrap();
    let token_file = data.path().join("token");
    std::fs::write(&token_file, "s3cret\n").unwrap();
    std::fs::set_permissions(&token_file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let port = free_port();
    let _agent = Running(
        Command::new(AGENT)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--name", "t", "--scope", "launched", "--data"])
            .arg(data.path().join("store"))
            .arg("--token-file")
            .arg(&token_file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_port(port);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let url = format!("http://127.0.0.1:{port}");
        let mut plain = AgentClient::connect(url.clone()).await.unwrap();
        let refused = plain.hello(HelloRequest {}).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        assert!(refused.message().contains("token"), "{}", refused.message());

        let mut wrong = tonic::Request::new(HelloRequest {});
        wrong.metadata_mut().insert("authorization", "Bearer nope".parse().unwrap());
        assert_eq!(plain.hello(wrong).await.unwrap_err().code(), tonic::Code::Unauthenticated);

        let mut right = tonic::Request::new(HelloRequest {});
        right.metadata_mut().insert("authorization", "Bearer s3cret".parse().unwrap());
        let info = plain.hello(right).await.unwrap().into_inner();
        assert_eq!(info.name, "t");
        assert_eq!(info.protocol_version, heisen_proto::PROTOCOL_VERSION);
    });
}
