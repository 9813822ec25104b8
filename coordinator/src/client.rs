//! The coordinator's side of the wire: a connection to one agent, speaking domain types.
//!
//! This is the only module of the coordinator that names `heisen_proto`: every request is built
//! and every reply converted here, so sessions, commands and benches see `recordings` types
//! (`LaunchSpec`, `ProcessNotice`, `Hold`, `CaptureStatus`, `AgentInfo`) and never a prost one.

use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use heisen_proto as proto;
use heisen_recordings::{AgentInfo, CaptureStatus, ClockModel, Event, Hold, LaunchSpec, ProbeSample, ProcessNotice};
use proto::agent_client::AgentClient;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Adds the bearer token (if any) to every request.
#[derive(Clone)]
struct Auth(Option<MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            req.metadata_mut().insert("authorization", token.clone());
        }
        Ok(req)
    }
}

type Rpc = AgentClient<InterceptedService<Channel, Auth>>;

/// What it takes to call agents: their token and, for agents that speak TLS, the client side of
/// mutual TLS (PEM text).
#[derive(Clone, Default)]
pub struct Credentials {
    pub token: Option<String>,
    pub tls: Option<ClientTls>,
}

#[derive(Clone)]
pub struct ClientTls {
    /// The authority that signed the agents' certificates.
    pub ca: String,
    pub cert: String,
    pub key: String,
}

/// A connected agent.
#[derive(Clone)]
pub struct Agent {
    /// The name the scenario (or `--agent NAME=`) knows the host by.
    pub name: String,
    pub addr: String,
    rpc: Rpc,
    pub info: AgentInfo,
}

/// Why an agent could not be reached, with what to check: a TLS mismatch (one side speaks TLS,
/// the other does not, or the certificates are not of one authority) looks like a broken
/// connection, so say so.
fn unreachable(name: &str, addr: &str, tls: bool, e: &dyn std::error::Error) -> anyhow::Error {
    let mut chain = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        source = s.source();
    }
    let hint = if tls {
        "is heisen-agent running there with --tls-cert/--tls-key/--client-ca, its certificate from the authority \
         of --ca and naming this address, and --cert issued by that authority (`heisen certs issue NAME --client`)?"
    } else {
        "is heisen-agent running there and listening on that address? If it speaks TLS (every agent off loopback does), pass \
         --ca, --cert and --key"
    };
    anyhow!("agent {name} at {addr} is unreachable ({chain}); {hint}")
}

/// How often an idle or busy connection to an agent is pinged (HTTP/2 PING).
const KEEPALIVE: Duration = Duration::from_secs(1);
/// How long an unanswered ping may wait before the connection and its calls fail.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(3);

/// The longest a pull may go without a message before the agent counts as lost.
const PULL_QUIET: Duration = Duration::from_secs(10);

/// Coordinator clock: CLOCK_REALTIME nanoseconds.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

/// Which processes' syscalls a capture records (empty: every process of the host).
#[derive(Clone, Debug, Default)]
pub struct Selection {
    pub comms: Vec<String>,
    pub pids: Vec<i32>,
    /// Writes through the BPF write recorder (see `StartCaptureRequest.bpf_writes`).
    pub bpf_writes: bool,
    /// Syscalls and classes to record (empty: the agent's default set).
    pub syscalls: Vec<String>,
    /// The capture lives while its lease is renewed (a session's clock probes renew it).
    pub leased: bool,
}

impl Agent {
    /// Connects and says hello; errors name the host and address and say what to check.
    pub async fn connect(name: &str, addr: &str, credentials: &Credentials) -> Result<Agent> {
        let scheme = if credentials.tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .with_context(|| format!("agent {name}: `{addr}` is not a valid HOST:PORT"))?
            .connect_timeout(Duration::from_secs(3))
            .tcp_nodelay(true)
            // An agent that stops answering (stopped, partitioned, its host gone) fails every call
            // in flight on its connection within KEEPALIVE + KEEPALIVE_TIMEOUT, streams included:
            // no call waits on a lost agent for longer.
            .http2_keep_alive_interval(KEEPALIVE)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        if let Some(tls) = &credentials.tls {
            let config = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&tls.ca))
                .identity(Identity::from_pem(&tls.cert, &tls.key));
            endpoint = endpoint
                .tls_config(config)
                .map_err(|e| anyhow!("agent {name}: the TLS files do not load ({e}); check --ca, --cert and --key"))?;
        }
        let channel = endpoint.connect().await.map_err(|e| unreachable(name, addr, credentials.tls.is_some(), &e))?;
        let auth = Auth(match &credentials.token {
            Some(t) => Some(
                format!("Bearer {t}")
                    .parse()
                    .map_err(|_| anyhow!("the token contains characters not allowed in a header"))?,
            ),
            None => None,
        });
        let mut rpc = AgentClient::with_interceptor(channel, auth).max_decoding_message_size(64 << 20);
        let info = tokio::time::timeout(Duration::from_secs(5), rpc.hello(proto::HelloRequest {}))
            .await
            .map_err(|_| anyhow!("agent {name} at {addr} did not answer Hello within 5 s"))?
            .map_err(|s| match s.code() {
                tonic::Code::Unauthenticated => anyhow!("agent {name} at {addr} refused Hello: {}", s.message()),
                _ => unreachable(name, addr, credentials.tls.is_some(), &s),
            })?
            .into_inner();
        if info.protocol_version != proto::PROTOCOL_VERSION {
            return Err(anyhow!(
                "agent {name} at {addr} speaks protocol {} but this heisen speaks {}; run matching versions",
                info.protocol_version,
                proto::PROTOCOL_VERSION
            ));
        }
        Ok(Agent { name: name.to_string(), addr: addr.to_string(), rpc, info: info.into() })
    }

    /// Takes `n` clock probes.
    pub async fn probe(&mut self, n: usize) -> Result<Vec<ProbeSample>> {
        self.probe_renewing(n, &[]).await
    }

    /// Clock probes that also renew the leases of `captures` (the agent stops a capture whose
    /// coordinator stopped renewing it).
    pub async fn probe_renewing(&mut self, n: usize, captures: &[String]) -> Result<Vec<ProbeSample>> {
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n {
            let t1 = now_ns();
            let reply = self
                .rpc
                .clock_probe(proto::ProbeRequest { t1_ns: t1, renew: captures.to_vec() })
                .await
                .map_err(|s| self.err("clock probe", s))?
                .into_inner();
            let t4 = now_ns();
            samples.push(ProbeSample { t1_ns: t1, t2_ns: reply.t2_ns, t3_ns: reply.t3_ns, t4_ns: t4 });
        }
        Ok(samples)
    }

    fn err(&self, op: &str, status: tonic::Status) -> anyhow::Error {
        anyhow!("{op} failed on agent {} ({}): {}", self.name, self.addr, status.message())
    }

    pub async fn start_capture(&mut self, capture: &str, selection: &Selection) -> Result<CaptureStatus> {
        let req = proto::StartCaptureRequest {
            capture_id: capture.into(),
            syscalls: selection.syscalls.clone(),
            comms: selection.comms.clone(),
            pids: selection.pids.clone(),
            bpf_writes: selection.bpf_writes,
            leased: selection.leased,
        };
        Ok(self.rpc.start_capture(req).await.map_err(|s| self.err("start capture", s))?.into_inner().into())
    }

    /// Opens the gate channel of `capture`: releases go through the [`Gates`] handle, holds come
    /// out of [`Holds`].
    pub async fn open_gates(&mut self, capture: &str) -> Result<(Gates, Holds)> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tx.send(proto::GateCommand::open(capture))?;
        let notices = self
            .rpc
            .gate(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
            .await
            .map_err(|s| self.err("open gate channel", s))?
            .into_inner();
        Ok((Gates(tx), Holds { agent: self.clone(), notices }))
    }

    /// A capture's state without changing it; None when the agent has no such capture (an
    /// agent that restarted on a fresh data directory).
    pub async fn capture_state(&mut self, capture: &str) -> Result<Option<CaptureStatus>> {
        let req = proto::CaptureStateRequest { capture_id: capture.into() };
        match self.rpc.capture_state(req).await {
            Ok(reply) => Ok(Some(reply.into_inner().into())),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(self.err("capture state", s)),
        }
    }

    pub async fn stop_capture(&mut self, capture: &str) -> Result<CaptureStatus> {
        let req = proto::StopCaptureRequest { capture_id: capture.into() };
        Ok(self.rpc.stop_capture(req).await.map_err(|s| self.err("stop capture", s))?.into_inner().into())
    }

    /// Launches a process; returns once the agent reports it started.
    pub async fn launch(&mut self, spec: &LaunchSpec) -> Result<Launched> {
        let op = format!("launch {}", spec.name);
        let mut stream =
            self.rpc.launch(proto::LaunchRequest::from(spec)).await.map_err(|s| self.err(&op, s))?.into_inner();
        let first = stream.message().await.map_err(|s| self.err(&op, s))?;
        let Some(ProcessNotice::Started { pid, workdir }) = first.and_then(proto::ProcessNotice::into_domain) else {
            return Err(anyhow!("agent {} did not report `{}` as started", self.name, spec.name));
        };
        Ok(Launched { pid, workdir, agent: self.clone(), op, stream })
    }

    /// Attaches the ptrace recorder to `pid` for the rest of `capture`; returns the tracer's pid.
    pub async fn attach(&mut self, capture: &str, pid: i32) -> Result<i32> {
        let req = proto::AttachRequest { capture_id: capture.into(), pid };
        let reply = self.rpc.attach(req).await.map_err(|s| self.err(&format!("attach to pid {pid}"), s))?;
        Ok(reply.into_inner().tracer_pid)
    }

    /// Stops a process the agent launched into `capture` (SIGTERM, SIGKILL after `grace_ms`).
    pub async fn stop_process(&mut self, capture: &str, pid: i32, grace_ms: u64) -> Result<()> {
        let req = proto::StopProcessRequest { capture_id: capture.into(), pid, grace_ms };
        self.rpc.stop_process(req).await.map_err(|s| self.err(&format!("stop pid {pid}"), s))?;
        Ok(())
    }

    /// The host's environment now (`at` says what for: `start`, `run 3`, `end`).
    pub async fn snapshot(&mut self, capture: &str, at: &str) -> Result<heisen_recordings::Environment> {
        let req = proto::SnapshotRequest { at: at.into(), capture_id: capture.into() };
        Ok(self.rpc.snapshot(req).await.map_err(|s| self.err("environment snapshot", s))?.into_inner().into())
    }

    /// Pulls every stored event of a capture.
    pub async fn pull(&mut self, capture: &str) -> Result<Vec<Event>> {
        let mut events = Vec::new();
        self.pull_each(capture, |batch| {
            events.extend(batch);
            Ok(())
        })
        .await?;
        Ok(events)
    }

    /// Pulls every stored event of a capture, handing them to `each` in batches as they arrive,
    /// so the caller need not hold them all.
    pub async fn pull_each(&mut self, capture: &str, mut each: impl FnMut(Vec<Event>) -> Result<()>) -> Result<()> {
        const BATCH: usize = 4096;
        let req = proto::StreamEventsRequest { capture_id: capture.into(), from_seq: 0 };
        let mut stream = self.rpc.stream_events(req).await.map_err(|s| self.err("stream events", s))?.into_inner();
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            let next = tokio::time::timeout(PULL_QUIET, stream.message()).await.map_err(|_| {
                anyhow!(
                    "agent {} ({}) sent nothing for {} s while its events were pulled",
                    self.name,
                    self.addr,
                    PULL_QUIET.as_secs()
                )
            })?;
            let Some(item) = next.map_err(|s| self.err("stream events", s))? else { break };
            batch.push(Event::try_from(item).map_err(|e| anyhow!("agent {}: {e}", self.name))?);
            if batch.len() == BATCH {
                each(std::mem::replace(&mut batch, Vec::with_capacity(BATCH)))?;
            }
        }
        if !batch.is_empty() {
            each(batch)?;
        }
        Ok(())
    }
}

/// Fits a clock model for an agent from probes (best of `samples`).
pub fn fit(agent: &str, samples: &[ProbeSample]) -> Result<ClockModel> {
    ClockModel::fit(samples).ok_or_else(|| anyhow!("no clock probes for agent {agent}"))
}

/// A launched process: its pid, and what it reports from now on.
pub struct Launched {
    pub pid: i32,
    /// Where it runs on its host (`{workdir}`).
    pub workdir: String,
    agent: Agent,
    op: String,
    stream: tonic::Streaming<proto::ProcessNotice>,
}

impl Launched {
    /// The next output line or the exit; `Ok(None)` when the agent ended the stream.
    pub async fn next(&mut self) -> Result<Option<ProcessNotice>> {
        loop {
            match self.stream.message().await.map_err(|s| self.agent.err(&self.op, s))? {
                None => return Ok(None),
                Some(n) => match n.into_domain() {
                    Some(n) => return Ok(Some(n)),
                    None => continue, // a notice of a newer agent: nothing to do with it
                },
            }
        }
    }
}

/// Releases holds on one agent's gate channel (cheap to clone; sends never block).
#[derive(Clone)]
pub struct Gates(tokio::sync::mpsc::UnboundedSender<proto::GateCommand>);

impl Gates {
    /// Releases a hold; false when the channel is closed (the agent releases every hold then).
    pub fn release(&self, hold_id: u64) -> bool {
        self.0.send(proto::GateCommand::release(hold_id)).is_ok()
    }
}

/// The holds an agent reports on its gate channel.
pub struct Holds {
    agent: Agent,
    notices: tonic::Streaming<proto::GateNotice>,
}

impl Holds {
    /// The next hold; `Ok(None)` when the agent closed the channel.
    pub async fn next(&mut self) -> Result<Option<Hold>> {
        Ok(self.notices.message().await.map_err(|s| self.agent.err("gate channel", s))?.map(Hold::from))
    }
}
