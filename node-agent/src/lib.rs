//! heisen's per-host agent: records what the kernel sees (tracefs, no ptrace), launches scenario
//! processes, holds them at gates, and serves all of it over gRPC.
//!
//! The agent records and gates; it never decides what a recording means or which ordering to
//! enforce. That is the coordinator's job.

mod bpf;
mod bpf_args;
mod capture;
mod cgroup;
mod clock;
mod comms;
mod environment;
mod error;
pub use error::AgentError;
mod gate;
pub mod gate_bench;
mod launch;
mod observer;
mod ptrace;
mod rawtrace;
mod service;
mod token;
mod tracefs;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, ValueEnum};
use heisen_proto as proto;

/// heisen-agent: records one host for heisen and launches and gates its processes.
#[derive(Parser, Debug, Clone)]
#[command(name = "heisen-agent", version)]
pub struct AgentArgs {
    /// Address to serve gRPC on. Anything but loopback requires --token-file (a token you chose)
    /// and TLS (--tls-cert, --tls-key, --client-ca), or --insecure-plaintext.
    #[arg(long, default_value = "127.0.0.1:7800")]
    pub listen: SocketAddr,
    /// Directory for the agent's store (sled) and work dirs.
    #[arg(long, default_value = "/var/lib/heisen-agent")]
    pub data: PathBuf,
    /// Host name used in every recording (default: the system host name).
    #[arg(long)]
    pub name: Option<String>,
    /// File holding the token every call must carry (`authorization: Bearer TOKEN`); it must be
    /// readable by its owner only. Default: DATA/token, made on first start. The token is worth
    /// root on this host: whoever has it can launch processes as the agent's user.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// This agent's certificate (PEM), e.g. from `heisen certs issue NAME --ip ADDR`. With
    /// --tls-key and --client-ca, the agent speaks mutual TLS: only callers with a certificate
    /// from that authority get through (and they still need the token).
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM), readable by its owner only.
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// The authority whose client certificates are admitted (PEM), e.g. `ca.pem` of `heisen certs init`.
    #[arg(long, value_name = "FILE")]
    pub client_ca: Option<PathBuf>,
    /// Listen on a non-loopback address without TLS (the token then crosses the network in clear:
    /// only on a network you trust entirely).
    #[arg(long)]
    pub insecure_plaintext: bool,
    /// Which processes belong to this host: the agent's network namespace, or only what it launched
    /// (for several agents sharing one kernel on loopback).
    #[arg(long, value_enum, default_value_t = ScopeArg::Netns)]
    pub scope: ScopeArg,
    /// Testing option: pretend this host's clock is off by OFFSET and runs DRIFT fast, e.g.
    /// `+750ms,100ppm`. Every timestamp the agent produces is skewed; the coordinator must
    /// recover the skew from its clock probes.
    #[arg(long, value_name = "OFFSET[,DRIFTppm]", allow_hyphen_values = true)]
    pub clock_skew: Option<String>,
    /// A directory of crontabs to snapshot besides the system ones (`/etc/crontab`, `/etc/cron.d`,
    /// `/var/spool/cron/crontabs`), e.g. the `-c` directory of a busybox crond. Repeatable.
    #[arg(long, value_name = "DIR")]
    pub crontab_dir: Vec<PathBuf>,
}

/// `--scope` values.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScopeArg {
    Netns,
    Launched,
}

/// The helper mode of the agent's binary, which the agent starts as a process of its own:
/// `ptrace-record --pid PID --marker PATH` (the ptrace recorder). Returns the exit code when
/// `args` (without the program name) names it, None otherwise. Both `heisen-agent` and `heisen`
/// call this first.
pub fn run_helper(args: &[String]) -> Option<i32> {
    match args.split_first() {
        Some((mode, rest)) if mode == "ptrace-record" => Some(ptrace::run(rest)),
        _ => None,
    }
}

/// Runs the agent until SIGINT/SIGTERM; returns the process exit code (2 on bad input).
pub fn run(args: AgentArgs) -> i32 {
    // Colours only on a terminal: a log redirected to a file or journald stays plain text.
    let _ = tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("HEISEN_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .try_init();
    if !args.listen.ip().is_loopback() && args.token_file.is_none() {
        eprintln!(
            "heisen-agent: refusing to listen on {} without --token-file: the agent launches processes as its user, \
             so a non-loopback address needs a token you chose and gave the coordinator (write one to a file only \
             you can read, and pass --token-file FILE)",
            args.listen
        );
        return 2;
    }
    let tls = match server_tls(&args) {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("heisen-agent: {e}");
            return 2;
        }
    };
    if !args.listen.ip().is_loopback() && tls.is_none() && !args.insecure_plaintext {
        eprintln!(
            "heisen-agent: refusing to listen on {} without TLS: the token would cross the network in clear, and it \
             is worth root on this host. Give --tls-cert, --tls-key and --client-ca (`heisen certs init` and `heisen \
             certs issue` make them), or --insecure-plaintext on a network you trust entirely",
            args.listen
        );
        return 2;
    }
    if let Err(e) = std::fs::create_dir_all(&args.data) {
        eprintln!("heisen-agent: cannot create data dir {}: {e}", args.data.display());
        return 2;
    }
    // Always a token, loopback included: any local user could otherwise launch processes as root.
    let token = match &args.token_file {
        Some(path) => token::load(path).map(|t| (t, path.clone())),
        None => token::own(&args.data),
    };
    let (token, token_path) = match token {
        Ok(t) => t,
        Err(e) => {
            eprintln!("heisen-agent: {e}");
            return 2;
        }
    };
    if let Some(spec) = &args.clock_skew {
        match clock::parse_skew(spec) {
            Ok((offset_ns, ppm)) => {
                let skew = clock::install(offset_ns, ppm);
                // For tests that check the coordinator's estimate; never sent over the wire.
                println!(
                    "clock skew (testing option): offset_ns={} ppm={} origin_ns={}",
                    skew.offset_ns, skew.ppm, skew.origin_ns
                );
            }
            Err(e) => {
                eprintln!("heisen-agent: {e}");
                return 2;
            }
        }
    }
    let name = args.name.clone().unwrap_or_else(hostname);
    let store = match heisen_recordings::Store::open(&args.data) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("heisen-agent: {e} (is another agent using --data {}?)", args.data.display());
            return 2;
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("heisen-agent: cannot start the async runtime: {e}");
            return 2;
        }
    };
    let scope = match args.scope {
        ScopeArg::Netns => observer::Scope::own_netns(),
        ScopeArg::Launched => observer::Scope::Launched,
    };
    let info = proto::AgentInfo {
        name: name.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
        protocol_version: proto::PROTOCOL_VERSION,
        kernel: kernel_release(),
        capabilities: Some(capabilities()),
        pid: std::process::id(),
        boot_id: boot_id(),
    };
    if info.capabilities.as_ref().is_some_and(|c| c.root) {
        tracefs::remove_stale_instances();
        cgroup::remove_stale_groups();
    }
    let sources = environment::Sources { scope: scope.clone(), crontab_dirs: args.crontab_dir.clone() };
    let service = Arc::new(service::AgentService::new(name.clone(), args.data.clone(), sources, store, info));
    tracing::info!(token = %token_path.display(), "every call must carry this token (it is worth root on this host)");
    let code = runtime.block_on(serve(args.listen, token, tls, service.clone()));
    service.stop_all(std::time::Duration::from_secs(3));
    // Streams' blocking readers may still run: the runtime does not wait for them.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    code
}

/// Mutual TLS from the three files, all or none.
fn server_tls(args: &AgentArgs) -> Result<Option<tonic::transport::ServerTlsConfig>, String> {
    use tonic::transport::{Certificate, Identity, ServerTlsConfig};
    match (&args.tls_cert, &args.tls_key, &args.client_ca) {
        (None, None, None) => Ok(None),
        (Some(cert), Some(key), Some(ca)) => {
            let cert = heisen_certs::read(cert, "certificate").map_err(|e| e.to_string())?;
            let key = heisen_certs::read_private(key, "TLS key").map_err(|e| e.to_string())?;
            let ca = heisen_certs::read(ca, "client CA").map_err(|e| e.to_string())?;
            Ok(Some(
                ServerTlsConfig::new()
                    .identity(Identity::from_pem(cert, key))
                    .client_ca_root(Certificate::from_pem(ca)),
            ))
        }
        _ => Err("--tls-cert, --tls-key and --client-ca go together: the agent speaks TLS only with client \
                  certificates (mutual TLS)"
            .into()),
    }
}

async fn serve(
    listen: SocketAddr,
    token: String,
    tls: Option<tonic::transport::ServerTlsConfig>,
    service: Arc<service::AgentService>,
) -> i32 {
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("heisen-agent: cannot listen on {listen}: {e}");
            return 2;
        }
    };
    let tls_on = tls.is_some();
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        server = match server.tls_config(tls) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("heisen-agent: the TLS certificate or key does not load: {e}");
                return 2;
            }
        };
    }
    tracing::info!(name = %service.name, %listen, tls = tls_on, "agent ready");
    // A line on stdout that launchers can wait for.
    println!(
        "heisen-agent {} listening on {}",
        service.name,
        listener.local_addr().map(|a| a.to_string()).unwrap_or_default()
    );
    #[allow(clippy::result_large_err)] // tonic's interceptor signature: its error type is Status
    let check = move |req: tonic::Request<()>| -> Result<tonic::Request<()>, tonic::Status> {
        let header = req.metadata().get("authorization").map(|v| v.to_str().unwrap_or_default());
        if token::admits(&token, header) {
            return Ok(req);
        }
        Err(tonic::Status::unauthenticated(match header {
            Some(_) => "wrong token: pass the agent's token (heisen --token-file FILE)",
            None => {
                "this agent requires a token: pass heisen --token-file FILE with the agent's token (by default \
                 DATA/token on the agent's host, readable by root only)"
            }
        }))
    };
    let svc = tonic::service::interceptor::InterceptedService::new(
        proto::agent_server::AgentServer::from_arc(service.clone()),
        check,
    );
    tokio::spawn(service.clone().watch_leases());
    // SIGTERM or Ctrl-C: the server stops taking calls and ends when its streams do; a stream
    // that does not end (a coordinator gone quiet, a held gate) gets 0.5 s, then every launched
    // process group is ended and every capture stopped (at most 2.5 s), and the agent exits: within
    // 5 s in any state.
    let (stopping, stopped) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
        // Whatever happens below (a busy machine, a store slow to flush), the agent is gone 4.5 s
        // after the signal.
        std::thread::spawn(|| {
            std::thread::sleep(std::time::Duration::from_millis(4500));
            eprintln!("heisen-agent: still stopping 4.5 s after the stop signal; exiting now");
            std::process::exit(0);
        });
        let _ = stopping.send(());
    };
    let last = service.clone();
    tokio::spawn(async move {
        if stopped.await.is_ok() {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            tracing::warn!("streams still open 0.5 s after the stop signal: stopping every capture and exiting");
            let _ = tokio::task::spawn_blocking(move || last.stop_all(std::time::Duration::from_millis(2500))).await;
            std::process::exit(0);
        }
    });
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    match server.add_service(svc).serve_with_incoming_shutdown(incoming, shutdown).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("heisen-agent: server failed: {e}");
            1
        }
    }
}

/// Random per start of the agent (16 hex digits): the coordinator tells a restarted agent by it.
fn boot_id() -> String {
    let mut bytes = [0u8; 8];
    // SAFETY: bytes is a valid 8-byte buffer.
    let got = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    let value = if got == 8 {
        u64::from_ne_bytes(bytes)
    } else {
        // No entropy yet: the start time and pid still differ between two runs.
        capture::now_ns() as u64 ^ (u64::from(std::process::id()) << 32)
    };
    format!("{value:016x}")
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|h| h.trim().to_string()).unwrap_or_default()
}

fn capabilities() -> proto::Capabilities {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let (kernel_tracing, reason) = match tracefs::available() {
        Ok(_) if root => (true, String::new()),
        Ok(_) => (false, "not root: tracefs instances need root".to_string()),
        Err(e) => (false, e.to_string()),
    };
    let ptrace_scope = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope").unwrap_or_default();
    proto::Capabilities {
        root,
        kernel_tracing,
        ptrace: root || ptrace_scope.trim() != "3",
        seccomp_notify: std::fs::read_to_string("/proc/sys/kernel/seccomp/actions_avail")
            .is_ok_and(|actions| actions.contains("user_notif")),
        tracing_unavailable_reason: reason,
    }
}
