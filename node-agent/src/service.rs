//! The agent's gRPC service: wire types in, domain calls out. No recording logic lives here.

// tonic handlers return `Status` as their error; boxing it here would only be unboxed again.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use heisen_proto as proto;
use heisen_recordings::Store;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::capture::{now_ns, Capture};
use crate::gate::{self, HoldRegistry};
use crate::launch::{self, GateChannels, LaunchSpec, Life};
use crate::observer::Scope;

/// Shared agent state.
pub struct AgentService {
    pub name: String,
    pub data: PathBuf,
    pub scope: Scope,
    /// What environment snapshots look at.
    pub sources: crate::environment::Sources,
    pub store: Arc<Store>,
    pub info: proto::AgentInfo,
    captures: Mutex<HashMap<String, Arc<Capture>>>,
    /// Captures this run of the agent stopped, with their status at the stop: never started
    /// again, still answered for.
    stopped: Mutex<HashMap<String, proto::CaptureStatus>>,
    holds: Arc<HoldRegistry>,
    gate_channels: GateChannels,
    /// Every process this agent launched, by pid (its process group), with its capture: the
    /// only processes StopProcess may signal.
    launched: Mutex<HashMap<i32, String>>,
    /// When each leased capture's lease lapses: from StartCapture (`leased`), renewed by the
    /// coordinator's clock probes every 500 ms. A capture started without a lease has none.
    leases: Mutex<HashMap<String, std::time::Instant>>,
}

/// How long a leased capture lives without a renewal: a coordinator killed -9 leaves its
/// agents recording at most this long.
pub const LEASE: Duration = Duration::from_secs(5);

/// The longest a gate may hold a process without a decision, whatever the wire asks.
const MAX_HOLD: Duration = Duration::from_secs(300);

impl AgentService {
    pub fn new(
        name: String,
        data: PathBuf,
        sources: crate::environment::Sources,
        store: Arc<Store>,
        info: proto::AgentInfo,
    ) -> AgentService {
        AgentService {
            name,
            data,
            scope: sources.scope.clone(),
            sources,
            store,
            info,
            captures: Mutex::new(HashMap::new()),
            stopped: Mutex::new(HashMap::new()),
            holds: Arc::new(HoldRegistry::default()),
            gate_channels: Arc::new(Mutex::new(HashMap::new())),
            launched: Mutex::new(HashMap::new()),
            leases: Mutex::new(HashMap::new()),
        }
    }

    fn capture(&self, id: &str) -> Result<Arc<Capture>, Status> {
        self.captures.lock().expect("captures").get(id).cloned().ok_or_else(|| {
            Status::not_found(format!("no capture `{id}` is recording on agent {}; call StartCapture first", self.name))
        })
    }

    fn status(&self, capture: &Capture, recording: bool) -> proto::CaptureStatus {
        proto::CaptureStatus {
            capture_id: capture.id.clone(),
            recording,
            events: capture.sink.events(),
            lost: capture.sink.lost(),
            observer: capture.observer.clone(),
            boot_id: self.info.boot_id.clone(),
            forgotten: false,
        }
    }

    /// Stops a live capture and remembers its final status.
    async fn stop_live(&self, capture: Arc<Capture>) -> Result<proto::CaptureStatus, Status> {
        let c = capture.clone();
        tokio::task::spawn_blocking(move || c.stop()).await.map_err(|e| Status::internal(e.to_string()))?;
        self.captures.lock().expect("captures").remove(&capture.id);
        let status = self.status(&capture, false);
        self.stopped.lock().expect("stopped").insert(capture.id.clone(), status.clone());
        Ok(status)
    }

    /// The state of a capture that is not recording: stopped by this run of the agent, or
    /// stored by an earlier run (forgotten); None when the store has no such capture.
    fn not_recording(&self, id: &str) -> Result<Option<proto::CaptureStatus>, Status> {
        if let Some(status) = self.stopped.lock().expect("stopped").get(id) {
            return Ok(Some(status.clone()));
        }
        if !self.store.has(id) {
            return Ok(None);
        }
        let events = self.store.next_seq(id).map_err(|e| Status::internal(e.to_string()))?;
        let stopped = self.store.was_stopped(id).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Some(proto::CaptureStatus {
            capture_id: id.to_string(),
            recording: false,
            events,
            lost: 0,
            observer: String::new(),
            boot_id: self.info.boot_id.clone(),
            forgotten: !stopped,
        }))
    }

    /// Where a capture's launched processes run (`{workdir}`).
    pub fn workdir(&self, capture_id: &str) -> PathBuf {
        self.data.join("work").join(capture_id)
    }

    /// Whether `pid` may be attached to for a capture: a process of this host's scope (its network
    /// namespace, or what this agent launched and their descendants), never pid 1 or the agent.
    fn attachable(&self, pid: i32) -> Result<(), Status> {
        if pid <= 1 || pid as u32 == std::process::id() {
            return Err(Status::invalid_argument(format!("pid {pid} is not a process heisen may attach to")));
        }
        let ours = match self.scope {
            Scope::Netns { inode } => crate::observer::netns_inode(&pid.to_string()) == Some(inode),
            Scope::Launched => {
                let launched = self.launched.lock().expect("launched");
                let mut at = pid;
                // Up the parent chain (bounded) to a process this agent launched.
                (0..64).any(|_| {
                    if launched.contains_key(&at) {
                        return true;
                    }
                    at = parent_of(at).unwrap_or(0);
                    at <= 1
                }) && launched.contains_key(&at)
            }
        };
        if !ours {
            return Err(Status::permission_denied(format!(
                "pid {pid} is not in the scope of agent {} (its network namespace, or the processes it launched)",
                self.name
            )));
        }
        Ok(())
    }

    /// Stops every capture and ends every process group it launched (agent shutdown), so
    /// nothing recorded is lost and nothing is left running.
    /// Bounded: what has not stopped within `within` is left to the process's exit.
    pub fn stop_all(&self, within: Duration) {
        let deadline = std::time::Instant::now() + within;
        self.holds.release_all();
        let captures: Vec<Arc<Capture>> = self.captures.lock().expect("captures").drain().map(|(_, c)| c).collect();
        let stopping: Vec<_> = captures.into_iter().map(|c| std::thread::spawn(move || c.stop())).collect();
        let pids: Vec<i32> = self.launched.lock().expect("launched").keys().copied().collect();
        end_groups(&pids);
        while std::time::Instant::now() < deadline && stopping.iter().any(|t| !t.is_finished()) {
            std::thread::sleep(Duration::from_millis(10));
        }
        if stopping.iter().any(|t| !t.is_finished()) {
            tracing::warn!("a capture did not stop within {} ms; exiting without it", within.as_millis());
        }
    }

    /// Stops the leased captures whose coordinator stopped renewing them, and ends the processes
    /// launched for them. Runs until the agent stops.
    pub async fn watch_leases(self: Arc<Self>) {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = std::time::Instant::now();
            let lapsed: Vec<String> = {
                let mut leases = self.leases.lock().expect("leases");
                let ids: Vec<String> =
                    leases.iter().filter(|(_, until)| **until < now).map(|(id, _)| id.clone()).collect();
                for id in &ids {
                    leases.remove(id);
                }
                ids
            };
            for id in lapsed {
                let Some(capture) = self.captures.lock().expect("captures").remove(&id) else { continue };
                let pids: Vec<i32> = self
                    .launched
                    .lock()
                    .expect("launched")
                    .iter()
                    .filter(|(_, c)| **c == id)
                    .map(|(p, _)| *p)
                    .collect();
                let ended = pids.len();
                // The stored capture says why it ends here: nothing after this was recorded.
                capture.note(crate::observer::AgentNote {
                    pid: 0,
                    comm: String::new(),
                    run: 0,
                    kind: heisen_recordings::EventKind::Lost {
                        count: 0,
                        location: format!(
                            "no lease renewal from the coordinator for {} s: the agent stopped the capture here and \
                             ended {ended} launched process group(s)",
                            LEASE.as_secs()
                        ),
                        from_ns: Some(now_ns()),
                    },
                });
                self.holds.release_capture(&id);
                let _ = tokio::task::spawn_blocking(move || end_groups(&pids)).await;
                let _ = self.stop_live(capture).await;
                tracing::warn!(
                    capture = %id,
                    ended,
                    "no lease renewal from the coordinator for {} s: capture stopped, its tracefs instance removed, \
                     {ended} launched process group(s) ended",
                    LEASE.as_secs()
                );
            }
        }
    }
}

/// Ends process groups this agent launched: SIGTERM, and SIGKILL to those still there after a
/// moment. Only groups whose leader is still the agent's child (not a reused number).
fn end_groups(pids: &[i32]) {
    let ours: Vec<i32> = pids
        .iter()
        .copied()
        .filter(|p| *p > 1 && parent_of(*p).is_some_and(|parent| parent as u32 == std::process::id()))
        .collect();
    for pid in &ours {
        // SAFETY: signalling a process group this agent created (pgid == pid).
        unsafe { libc::kill(-pid, libc::SIGTERM) };
    }
    let deadline = std::time::Instant::now() + Duration::from_millis(500);
    while std::time::Instant::now() < deadline && ours.iter().any(|p| launch::alive(*p)) {
        std::thread::sleep(Duration::from_millis(10));
    }
    for pid in &ours {
        // SAFETY: as above.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
}

/// A process's parent, from /proc.
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.get(stat.rfind(')')? + 2..)?.split_whitespace().nth(1)?.parse().ok()
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn valid_id(id: &str) -> Result<(), Status> {
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(Status::invalid_argument(format!("capture id `{id}` must be non-empty [A-Za-z0-9_-]")));
    }
    Ok(())
}

#[tonic::async_trait]
impl proto::agent_server::Agent for AgentService {
    async fn hello(&self, _: Request<proto::HelloRequest>) -> Result<Response<proto::AgentInfo>, Status> {
        Ok(Response::new(self.info.clone()))
    }

    async fn clock_probe(&self, request: Request<proto::ProbeRequest>) -> Result<Response<proto::ProbeReply>, Status> {
        let t2 = now_ns();
        let req = request.into_inner();
        let t1 = req.t1_ns;
        if !req.renew.is_empty() {
            let until = std::time::Instant::now() + LEASE;
            let captures = self.captures.lock().expect("captures");
            let mut leases = self.leases.lock().expect("leases");
            for id in req.renew.iter().filter(|id| captures.contains_key(*id)) {
                leases.insert(id.clone(), until);
            }
        }
        Ok(Response::new(proto::ProbeReply { t1_ns: t1, t2_ns: t2, t3_ns: now_ns() }))
    }

    async fn start_capture(
        &self,
        request: Request<proto::StartCaptureRequest>,
    ) -> Result<Response<proto::CaptureStatus>, Status> {
        let mut req = request.into_inner();
        valid_id(&req.capture_id)?;
        // Names become tracefs paths: only the table's names and classes, never a path from the wire.
        req.syscalls = heisen_recordings::expand_syscalls(&req.syscalls)
            .map_err(|bad| {
                Status::invalid_argument(format!(
                    "unknown syscall or class {bad:?}; classes: {}",
                    heisen_recordings::CLASSES.iter().map(|(c, _)| *c).collect::<Vec<_>>().join(", ")
                ))
            })?
            .into_iter()
            .map(str::to_string)
            .collect();
        if let Ok(existing) = self.capture(&req.capture_id) {
            return Ok(Response::new(self.status(&existing, true)));
        }
        // A capture is recorded by one run of one agent, once: starting it again would reuse
        // its sequence numbers and hide the time it was not recorded.
        if let Some(status) = self.not_recording(&req.capture_id)? {
            let why = if status.forgotten {
                "was recording when an earlier run of this agent ended (a crash or restart): nothing after its last \
                 stored event was recorded"
            } else {
                "was stopped"
            };
            return Err(Status::failed_precondition(format!(
                "capture `{}` {why}; it is never started again. Its {} stored events can still be pulled \
                 (`heisen pull`)",
                req.capture_id, status.events
            )));
        }
        let (store, name, scope) = (self.store.clone(), self.name.clone(), self.scope.clone());
        let id = req.capture_id.clone();
        let workdir = self.workdir(&id);
        let crontab_dirs = self.sources.crontab_dirs.clone();
        let selection =
            crate::capture::Selection { comms: req.comms.clone(), pids: req.pids.clone(), bpf_writes: req.bpf_writes };
        let capture = tokio::task::spawn_blocking(move || {
            Capture::start(store, &id, &name, &req.syscalls, scope, &workdir, &crontab_dirs, &selection)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::failed_precondition(format!("cannot start capture on {}: {e}", self.name)))?;
        let capture = Arc::new(capture);
        if req.leased {
            self.leases.lock().expect("leases").insert(req.capture_id.clone(), std::time::Instant::now() + LEASE);
        }
        self.captures.lock().expect("captures").insert(req.capture_id, capture.clone());
        Ok(Response::new(self.status(&capture, true)))
    }

    async fn stop_capture(
        &self,
        request: Request<proto::StopCaptureRequest>,
    ) -> Result<Response<proto::CaptureStatus>, Status> {
        let id = request.into_inner().capture_id;
        valid_id(&id)?;
        match self.capture(&id) {
            Ok(capture) => Ok(Response::new(self.stop_live(capture).await?)),
            Err(not_live) => self.not_recording(&id)?.map(Response::new).ok_or(not_live),
        }
    }

    async fn capture_state(
        &self,
        request: Request<proto::CaptureStateRequest>,
    ) -> Result<Response<proto::CaptureStatus>, Status> {
        let id = request.into_inner().capture_id;
        valid_id(&id)?;
        if let Ok(capture) = self.capture(&id) {
            return Ok(Response::new(self.status(&capture, true)));
        }
        self.not_recording(&id)?
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("agent {} has no capture `{id}`", self.name)))
    }

    async fn snapshot(&self, request: Request<proto::SnapshotRequest>) -> Result<Response<proto::Environment>, Status> {
        let req = request.into_inner();
        if !req.capture_id.is_empty() {
            valid_id(&req.capture_id)?;
        }
        let workdir = if req.capture_id.is_empty() { self.data.clone() } else { self.workdir(&req.capture_id) };
        let sources = self.sources.clone();
        let env = tokio::task::spawn_blocking(move || crate::environment::snapshot(&req.at, &workdir, &sources))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(proto::Environment::from(&env)))
    }

    async fn attach(&self, request: Request<proto::AttachRequest>) -> Result<Response<proto::AttachReply>, Status> {
        let req = request.into_inner();
        let capture = self.capture(&req.capture_id)?;
        self.attachable(req.pid)?;
        let tracer = tokio::task::spawn_blocking(move || capture.attach_ptrace(req.pid))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::failed_precondition(format!("cannot attach on {}: {e}", self.name)))?;
        Ok(Response::new(proto::AttachReply { tracer_pid: tracer }))
    }

    type StreamEventsStream = BoxStream<proto::Event>;

    async fn stream_events(
        &self,
        request: Request<proto::StreamEventsRequest>,
    ) -> Result<Response<Self::StreamEventsStream>, Status> {
        let req = request.into_inner();
        valid_id(&req.capture_id)?;
        if !self.store.has(&req.capture_id) {
            return Err(Status::not_found(format!(
                "agent {} has no capture `{}` in its store",
                self.name, req.capture_id
            )));
        }
        let store = self.store.clone();
        let (tx, rx) = mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            let mut from = req.from_seq;
            loop {
                match store.read(&req.capture_id, from, 1024) {
                    Ok(page) if page.is_empty() => return,
                    Ok(page) => {
                        from = page.last().map(|e| e.seq + 1).unwrap_or(from);
                        for event in &page {
                            if tx.blocking_send(Ok(proto::Event::from(event))).is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(Status::internal(e.to_string())));
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    type LaunchStream = BoxStream<proto::ProcessNotice>;

    async fn launch(&self, request: Request<proto::LaunchRequest>) -> Result<Response<Self::LaunchStream>, Status> {
        let req = request.into_inner();
        let capture = self.capture(&req.capture_id)?;
        if req.argv.is_empty() {
            return Err(Status::invalid_argument("argv is empty"));
        }
        // A process runs in the capture's work dir, or a directory under the agent's work root:
        // never a directory named from the wire elsewhere on the host.
        let workdir = if req.workdir.is_empty() { self.workdir(&req.capture_id) } else { PathBuf::from(&req.workdir) };
        let root = self.data.join("work");
        if !workdir.is_absolute()
            || workdir.components().any(|c| matches!(c, std::path::Component::ParentDir))
            || !workdir.starts_with(&root)
        {
            return Err(Status::invalid_argument(format!(
                "workdir {} is not under the agent's work directory {}",
                workdir.display(),
                root.display()
            )));
        }
        let mut gates = Vec::new();
        for g in &req.gates {
            let nr = gate::syscall_number(&g.syscall)
                .ok_or_else(|| Status::invalid_argument(format!("cannot gate syscall `{}`", g.syscall)))?;
            gates.push(gate::GatePoint {
                id: g.id.clone(),
                nr,
                nth: g.nth.max(1),
                arg_index: g.arg_index.map(|i| i as usize),
                arg_equals: g.arg_equals,
                arg_at_least: g.arg_at_least,
                // `{workdir}` is this host's: the coordinator expanded the rest.
                path: g.path.as_ref().map(|p| p.replace("{workdir}", &workdir.display().to_string())),
            });
        }
        let spec = LaunchSpec {
            run: req.run,
            name: req.name.clone(),
            role: req.role.clone(),
            argv: req.argv,
            workdir,
            env: req.env,
            gates,
            hold_timeout: Duration::from_millis(if req.hold_timeout_ms == 0 { 30_000 } else { req.hold_timeout_ms })
                .min(MAX_HOLD),
        };
        let (tx, rx) = mpsc::channel(launch::NOTICE_DEPTH);
        let traced = req.ptrace.then(|| capture.clone());
        let pid = launch::launch(spec, capture, self.holds.clone(), self.gate_channels.clone(), tx).map_err(|e| {
            Status::failed_precondition(format!("launch of `{}` on {} failed: {e}", req.name, self.name))
        })?;
        self.launched.lock().expect("launched").insert(pid, req.capture_id.clone());
        if let Some(capture) = traced {
            // Attached right after the start: the first calls before the attach are not decoded.
            let attached = tokio::task::spawn_blocking(move || capture.attach_ptrace(pid))
                .await
                .map_err(|e| Status::internal(e.to_string()))?;
            if let Err(e) = attached {
                tracing::warn!(process = %req.name, error = %e, "ptrace recorder not attached");
            }
        }
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx).map(|life| {
            use proto::process_notice::Notice;
            let notice = match life {
                Life::Started { pid, workdir } => {
                    Notice::Started(proto::Started { pid, workdir: workdir.display().to_string() })
                }
                Life::Output { stream, line } => {
                    Notice::Output(proto::Output { name: String::new(), stream: stream.into(), line })
                }
                Life::Exited { code, signal } => Notice::Exited(proto::Exited { code, signal }),
            };
            Ok(proto::ProcessNotice { notice: Some(notice) })
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn stop_process(
        &self,
        request: Request<proto::StopProcessRequest>,
    ) -> Result<Response<proto::StopProcessReply>, Status> {
        let req = request.into_inner();
        // Only a process group this agent launched for that capture: a pid from the wire is
        // never signalled otherwise (`kill(-1)` would be every process on the host).
        if req.pid <= 1 {
            return Err(Status::invalid_argument(format!("pid {} is not a process heisen launched", req.pid)));
        }
        let launched_for = self.launched.lock().expect("launched").get(&req.pid).cloned();
        match launched_for {
            Some(capture) if capture == req.capture_id => {}
            _ => {
                return Err(Status::permission_denied(format!(
                    "pid {} was not launched by agent {} for capture `{}`",
                    req.pid, self.name, req.capture_id
                )))
            }
        }
        // The agent's own child, not a process that took the number after ours was reaped.
        if parent_of(req.pid).is_some_and(|parent| parent as u32 != std::process::id()) {
            return Ok(Response::new(proto::StopProcessReply { signalled: false }));
        }
        let signalled = launch::stop(req.pid, Duration::from_millis(req.grace_ms.clamp(10, 60_000))).await;
        Ok(Response::new(proto::StopProcessReply { signalled }))
    }

    type GateStream = BoxStream<proto::GateNotice>;

    async fn gate(
        &self,
        request: Request<Streaming<proto::GateCommand>>,
    ) -> Result<Response<Self::GateStream>, Status> {
        use proto::gate_command::Command;
        let mut commands = request.into_inner();
        // The first command names the capture whose gates this channel watches.
        let capture = match commands.next().await {
            Some(Ok(proto::GateCommand { command: Some(Command::OpenCapture(id)) })) => id,
            Some(Err(status)) => return Err(status),
            _ => return Err(Status::invalid_argument("a gate channel opens with OpenCapture(capture id)")),
        };
        valid_id(&capture)?;
        self.capture(&capture)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let replaced = self.gate_channels.lock().expect("gate channels").insert(capture.clone(), tx.clone());
        if replaced.is_some() {
            tracing::warn!(%capture, "a second gate channel for the capture replaces the first");
        }
        let (holds, channels, name) = (self.holds.clone(), self.gate_channels.clone(), self.name.clone());
        tokio::spawn(async move {
            while let Some(Ok(cmd)) = commands.next().await {
                if let Some(Command::Release(release)) = cmd.command {
                    if !holds.release(release.hold_id, &capture) {
                        tracing::warn!(
                            hold = release.hold_id,
                            %capture,
                            "release of an unknown hold (already released, timed out, or another capture's)"
                        );
                    }
                }
            }
            // The coordinator went away: never leave a process of its capture held, and hold
            // none from now on (no channel: a gate lets the call go on at once).
            {
                let mut open = channels.lock().expect("gate channels");
                if open.get(&capture).is_some_and(|mine| mine.same_channel(&tx)) {
                    open.remove(&capture);
                }
            }
            let released = holds.release_capture(&capture);
            if released > 0 {
                tracing::warn!(agent = %name, %capture, released, "gate channel closed; released its held processes");
            }
        });
        let stream = UnboundedReceiverStream::new(rx).map(|n| {
            Ok(proto::GateNotice {
                hold_id: n.hold_id,
                gate: n.gate,
                process: n.process,
                pid: n.pid,
                run: n.run,
                raw_ns: n.raw_ns,
                through: n.through,
            })
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
