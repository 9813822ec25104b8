//! A capture session across agents: start recording everywhere, carry out runs of a scenario
//! (services, concurrent steps, a schedule of gate releases), then stop, pull and bundle.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use heisen_recordings::{
    Bundle, Ending, Environment, GateSpec, HostRecording, LaunchSpec, Mark, MarkKind, MessageEdge, Process,
    ProcessNotice, RunObserver, RunOutcome, Scenario, ScenarioSource, SnapshotAt, StepOutcome,
};

use crate::client::{self, Agent};
use heisen_analysis::schedule::{Action, Ordering};

const READY_TIMEOUT: Duration = Duration::from_secs(15);
const ACTION_TIMEOUT: Duration = Duration::from_secs(20);
const STEP_TIMEOUT: Duration = Duration::from_secs(heisen_recordings::DEFAULT_STEP_TIMEOUT_S as u64);
/// After the steps exit, services run on until their output has been quiet this long (at most
/// SETTLE_MAX), so the effects of what happened late in a run (a reload ending) are recorded:
/// explain reads them.
const SETTLE_QUIET: Duration = Duration::from_millis(300);
const SETTLE_MAX: Duration = Duration::from_millis(1500);
/// How long the coordinator waits, after a release, for the agent's word that the released call
/// went through (the agent itself waits at most `gate::THROUGH_BOUND`, 100 ms).
const THROUGH_TIMEOUT: Duration = Duration::from_secs(2);

/// How long an agent holds a process without a decision before releasing it.
const HOLD_TIMEOUT_MS: u64 = 30_000;
/// How often the clock of every agent is probed during a capture (a burst of 4 each time).
const PROBE_PERIOD: Duration = Duration::from_millis(500);
/// The longest a state query or a probe burst may take before the agent counts as lost.
const STATE_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest stopping a capture may take (it detaches BPF programs: about 1.4 s here).
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Values for placeholders the coordinator expands: `{host:NAME}` and `{port}`.
#[derive(Clone, Debug)]
pub struct Placeholders {
    pub host_addrs: BTreeMap<String, String>,
    pub port: u16,
    /// `{shared}`: a directory every host sees at the same path.
    pub shared: Option<String>,
    /// `{scenario_dir}`: the scenario file's directory (programs kept beside it).
    pub scenario_dir: Option<String>,
}

impl Placeholders {
    /// Expands `{port}`, `{run}` (the run number), `{shared}` and `{host:NAME}` in every argument.
    pub fn expand(&self, argv: &[String], run: u32) -> Vec<String> {
        argv.iter().map(|a| self.expand_one(a, run)).collect()
    }

    /// Expands the coordinator's placeholders in one string (an argument, a gate's path).
    pub fn expand_one(&self, text: &str, run: u32) -> String {
        let mut a = text.replace("{port}", &self.port.to_string()).replace("{run}", &run.to_string());
        if let Some(shared) = &self.shared {
            a = a.replace("{shared}", shared);
        }
        if let Some(dir) = &self.scenario_dir {
            a = a.replace("{scenario_dir}", dir);
        }
        for (name, addr) in &self.host_addrs {
            a = a.replace(&format!("{{host:{name}}}"), addr);
        }
        a
    }
}

#[derive(Default)]
struct ProcState {
    pid: i32,
    lines: Vec<String>,
    exit: Option<i32>,
    /// The signal that killed it, 0 if none.
    signal: i32,
}

#[derive(Default)]
struct Shared {
    /// (host, run, gate id) -> hold id, for holds not yet released.
    holds: HashMap<(String, u32, String), u64>,
    /// (host, hold id) of released holds whose call has gone through.
    through: HashSet<(String, u64)>,
    procs: HashMap<(u32, String), ProcState>,
    /// What placeholders stood for: `shared`, `workdir:HOST` (from the agents' started notices).
    placeholders: BTreeMap<String, String>,
}

/// A capture being recorded on every agent.
pub struct Session {
    pub capture_id: String,
    agents: BTreeMap<String, Agent>,
    gates: BTreeMap<String, client::Gates>,
    shared: Arc<Mutex<Shared>>,
    /// Clock probe samples per host: a burst at the start, every PROBE_PERIOD, and at the end.
    probes: Arc<Mutex<BTreeMap<String, Vec<heisen_recordings::ProbeSample>>>>,
    prober: Option<tokio::task::JoinHandle<()>>,
    observers: BTreeMap<String, String>,
    started_ns: i64,
    next_run: u32,
    pub runs: Vec<RunOutcome>,
    /// Causal edges made by the coordinator's own messages (it saw `from`, then caused `to`).
    causal: Vec<MessageEdge>,
    /// What the coordinator has observed so far in the current run, in order.
    observed: Vec<Mark>,
    /// Output lines each process of the current run had printed at the last release: an effect
    /// awaited after a release is a line printed after it (an older line is not its effect).
    lines_at_release: HashMap<String, usize>,
    /// Environment snapshots per host: start, each run once its services are up, end.
    environments: BTreeMap<String, Vec<Environment>>,
    /// Hosts whose agent was seen to have restarted (a new boot id) during the capture, with
    /// when the coordinator noticed.
    restarted: BTreeMap<String, String>,
}

/// What a host's state looks like to the live counter.
pub enum HostState {
    Recording {
        events: u64,
    },
    /// Its agent restarted and forgot the capture: nothing is recorded there any more.
    Restarted {
        stored: u64,
    },
    Unreachable(anyhow::Error),
}

impl Session {
    /// Starts capture `capture_id` of `scenario` on every agent (recording the syscalls it
    /// names, or the agents' default set) and opens the gate channels.
    pub async fn open(agents: BTreeMap<String, Agent>, capture_id: &str, scenario: &Scenario) -> Result<Session> {
        let selection = client::Selection { syscalls: scenario.syscalls.clone(), ..Default::default() };
        Session::open_selected(agents, capture_id, &selection).await
    }

    /// Like `open`, recording syscalls only of the selected processes (ad-hoc captures).
    pub async fn open_selected(
        agents: BTreeMap<String, Agent>,
        capture_id: &str,
        selection: &client::Selection,
    ) -> Result<Session> {
        let mut session = Session {
            capture_id: capture_id.to_string(),
            agents,
            gates: BTreeMap::new(),
            shared: Arc::new(Mutex::new(Shared::default())),
            probes: Arc::new(Mutex::new(BTreeMap::new())),
            prober: None,
            observers: BTreeMap::new(),
            started_ns: client::now_ns(),
            next_run: 1,
            runs: Vec::new(),
            causal: Vec::new(),
            observed: Vec::new(),
            lines_at_release: HashMap::new(),
            environments: BTreeMap::new(),
            restarted: BTreeMap::new(),
        };
        for (name, agent) in session.agents.iter_mut() {
            let samples = agent.probe(8).await?;
            session.probes.lock().expect("probes").insert(name.clone(), samples);
            // Leased: the prober's probes renew it, so a coordinator killed -9 leaves nothing
            // recording or running on its agents beyond the lease.
            let status =
                agent.start_capture(capture_id, &client::Selection { leased: true, ..selection.clone() }).await?;
            let env = agent.snapshot(capture_id, "start").await?;
            session.environments.entry(name.clone()).or_default().push(env);
            session.observers.insert(name.clone(), status.observer);
            let (tx, mut notices) = agent.open_gates(capture_id).await?;
            let (shared, host) = (session.shared.clone(), name.clone());
            tokio::spawn(async move {
                while let Ok(Some(n)) = notices.next().await {
                    let mut s = shared.lock().expect("shared");
                    if n.through {
                        s.through.insert((host.clone(), n.hold_id));
                    } else {
                        s.holds.insert((host.clone(), n.run, n.gate), n.hold_id);
                    }
                }
            });
            session.gates.insert(name.clone(), tx);
        }
        session.start_prober();
        Ok(session)
    }

    /// Probes every agent's clock periodically until the session closes, so the clock model can
    /// fit drift and bound the error throughout the capture, not only at its ends.
    /// The same probes renew the capture's lease on every agent: a coordinator killed -9 stops
    /// renewing, and its agents stop the capture and end what they launched for it.
    fn start_prober(&mut self) {
        let mut agents: Vec<Agent> = self.agents.values().cloned().collect();
        let probes = self.probes.clone();
        let renew = vec![self.capture_id.clone()];
        self.prober = Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(PROBE_PERIOD).await;
                for agent in agents.iter_mut() {
                    // One agent that does not answer must not keep the others from their renewal.
                    let probed = tokio::time::timeout(PROBE_PERIOD * 4, agent.probe_renewing(4, &renew)).await;
                    if let Ok(Ok(samples)) = probed {
                        probes.lock().expect("probes").entry(agent.name.clone()).or_default().extend(samples);
                    }
                }
            }
        }));
    }

    /// Each host's state: its recorded event count so far, or that its agent restarted (and
    /// forgot the capture) or does not answer. Never starts anything.
    pub async fn counts(&mut self) -> BTreeMap<String, HostState> {
        let id = self.capture_id.clone();
        // Every agent at once, each within STATE_TIMEOUT: one lost agent never stalls the rest.
        let asked = futures::future::join_all(self.agents.iter_mut().map(|(name, agent)| {
            let id = id.clone();
            async move {
                let answer = tokio::time::timeout(STATE_TIMEOUT, agent.capture_state(&id)).await;
                (name.clone(), agent.info.boot_id.clone(), answer)
            }
        }))
        .await;
        let mut out = BTreeMap::new();
        for (name, old_boot, answer) in asked {
            let state = match answer {
                Err(_) => HostState::Unreachable(anyhow!("no answer within {} s", STATE_TIMEOUT.as_secs())),
                Ok(Err(e)) => HostState::Unreachable(e),
                Ok(Ok(Some(s))) if s.boot_id == old_boot && !s.forgotten => HostState::Recording { events: s.events },
                Ok(Ok(status)) => {
                    let stored = status.as_ref().map_or(0, |s| s.events);
                    let new_boot = status.map(|s| s.boot_id).unwrap_or_default();
                    self.restarted.entry(name.clone()).or_insert_with(|| restart_note(&name, &old_boot, &new_boot));
                    HostState::Restarted { stored }
                }
            };
            out.insert(name, state);
        }
        out
    }

    /// Attaches the ptrace recorder to `pid` on `host` for the rest of the capture.
    pub async fn attach(&mut self, host: &str, pid: i32) -> Result<i32> {
        self.agent(host)?.attach(&self.capture_id, pid).await
    }

    /// One line per host whose observer is not the plain default ("tracefs"): what became of an
    /// option (`tracefs (writes by BPF)`), or why there is no kernel observer.
    pub fn observer_notes(&self) -> Vec<String> {
        self.observers
            .iter()
            .filter(|(_, observer)| *observer != "tracefs")
            .map(|(host, observer)| match observer.strip_prefix("tracefs") {
                Some(detail) => format!("note: host {host} records with tracefs {}", detail.trim()),
                None => format!("note: host {host} records without the kernel observer: {observer}"),
            })
            .collect()
    }

    fn agent(&self, host: &str) -> Result<Agent> {
        self.agents.get(host).cloned().ok_or_else(|| anyhow!("no agent for host `{host}`; pass --agent {host}=ADDR"))
    }

    async fn launch(&self, p: &Process, role: &str, run: u32, gates: &[GateSpec], vars: &Placeholders) -> Result<i32> {
        let mut agent = self.agent(&p.host)?;
        let spec = LaunchSpec {
            capture_id: self.capture_id.clone(),
            run,
            name: p.name.clone(),
            role: role.into(),
            argv: vars.expand(&p.command, run),
            gates: gates.iter().filter(|g| g.step == p.name).cloned().collect(),
            hold_timeout_ms: HOLD_TIMEOUT_MS,
            ptrace: p.ptrace,
            ..LaunchSpec::default()
        };
        let key = (run, p.name.clone());
        self.shared.lock().expect("shared").procs.insert(key.clone(), ProcState::default());
        let mut launched = agent.launch(&spec).await?;
        let pid = launched.pid;
        {
            let mut s = self.shared.lock().expect("shared");
            s.procs.get_mut(&key).expect("proc").pid = pid;
            s.placeholders.entry(format!("workdir:{}", p.host)).or_insert_with(|| launched.workdir.clone());
        }
        let shared = self.shared.clone();
        tokio::spawn(async move {
            loop {
                let notice = match launched.next().await {
                    Ok(Some(n)) => n,
                    _ => {
                        // The stream broke (agent gone): the process's fate is unknown.
                        let mut s = shared.lock().expect("shared");
                        let proc = s.procs.get_mut(&key).expect("proc");
                        proc.exit.get_or_insert(-1);
                        return;
                    }
                };
                let mut s = shared.lock().expect("shared");
                let proc = s.procs.get_mut(&key).expect("proc");
                match notice {
                    ProcessNotice::Output(line) => proc.lines.push(line),
                    ProcessNotice::Exited { code, signal } => {
                        proc.exit = Some(code);
                        proc.signal = signal;
                        return;
                    }
                    ProcessNotice::Started { .. } => {}
                }
            }
        });
        Ok(pid)
    }

    /// Polls `check` every 2 ms until it yields a value or `timeout` passes.
    async fn wait_for<T>(&self, timeout: Duration, mut check: impl FnMut(&mut Shared) -> Option<T>) -> Option<T> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = check(&mut self.shared.lock().expect("shared")) {
                return Some(v);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Waits until the run's services have printed nothing for SETTLE_QUIET (bounded by SETTLE_MAX).
    async fn settle(&self, run: u32, services: &[(String, i32)]) {
        if !services.is_empty() {
            self.quiet(run, None).await;
        }
    }

    /// Waits until the run's processes (or only `process`) have printed nothing for SETTLE_QUIET,
    /// at most SETTLE_MAX.
    async fn quiet(&self, run: u32, process: Option<&str>) {
        let lines = |s: &Shared| {
            s.procs
                .iter()
                .filter(|((r, name), _)| *r == run && process.is_none_or(|p| p == name))
                .map(|(_, p)| p.lines.len())
                .sum::<usize>()
        };
        let deadline = Instant::now() + SETTLE_MAX;
        let (mut seen, mut since) = (lines(&self.shared.lock().expect("shared")), Instant::now());
        while Instant::now() < deadline && since.elapsed() < SETTLE_QUIET {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let now = lines(&self.shared.lock().expect("shared"));
            if now != seen {
                (seen, since) = (now, Instant::now());
            }
        }
    }

    async fn wait_output(&self, run: u32, process: &str, text: &str, timeout: Duration) -> bool {
        self.wait_output_from(run, process, text, 0, timeout).await
    }

    /// Waits for a line containing `text` among the process's lines from index `from` on.
    async fn wait_output_from(&self, run: u32, process: &str, text: &str, from: usize, timeout: Duration) -> bool {
        let key = (run, process.to_string());
        self.wait_for(timeout, |s| {
            s.procs.get(&key).and_then(|p| p.lines.iter().skip(from).any(|l| l.contains(text)).then_some(()))
        })
        .await
        .is_some()
    }

    async fn wait_hold(&self, host: &str, run: u32, gate: &GateSpec) -> Option<u64> {
        let key = (host.to_string(), run, gate.id());
        self.wait_for(ACTION_TIMEOUT, |s| s.holds.get(&key).copied()).await
    }

    fn release(&self, host: &str, run: u32, gate: &GateSpec, hold_id: u64) {
        self.shared.lock().expect("shared").holds.remove(&(host.to_string(), run, gate.id()));
        if let Some(gates) = self.gates.get(host) {
            gates.release(hold_id);
        }
    }

    /// Carries out one run: services up, steps concurrently (gated per `ordering`), the schedule,
    /// steps down, the failure predicate, services down.
    pub async fn run(
        &mut self,
        scenario: &Scenario,
        ordering: Option<&Ordering>,
        vars: &Placeholders,
    ) -> Result<RunOutcome> {
        let run = self.next_run;
        self.next_run += 1;
        {
            // What the placeholders stood for, so explain can turn recorded paths and addresses
            // back into templates (`{shared}/x-{run}`, `{host:node}:{port}`).
            let mut s = self.shared.lock().expect("shared");
            if let Some(dir) = &vars.shared {
                s.placeholders.insert("shared".into(), dir.clone());
            }
            s.placeholders.insert("port".into(), vars.port.to_string());
            for (name, addr) in &vars.host_addrs {
                s.placeholders.insert(format!("host:{name}"), addr.clone());
            }
        }
        // Gate paths name files as commands do: `{shared}/cache-{run}` is this run's file.
        let resolved = ordering.map(|o| o.with_gate_paths(|p| vars.expand_one(p, run)));
        let ordering = resolved.as_ref();
        self.observed.clear();
        self.lines_at_release.clear();
        let mut notes = Vec::new();
        let mut service_pids = Vec::new();
        let variants = ordering.map(|o| o.variants.clone()).unwrap_or_else(|| scenario.default_variants());
        let on = |p: &&Process| p.variant.as_ref().is_none_or(|v| variants.contains(v));
        let services = scenario.services.iter().filter(on);
        let steps: Vec<&Process> = scenario.steps.iter().filter(on).collect();
        // Services are gated too: a hold counts its calls from the service's launch, and the
        // schedule (after every service is ready) releases it like a step's.
        let gates = ordering.map(|o| o.gates.clone()).unwrap_or_default();
        for service in services {
            let pid = self.launch(service, "service", run, &gates, vars).await?;
            service_pids.push((service.host.clone(), pid));
            if let Some(ready) = &service.ready {
                if !self.wait_output(run, &service.name, ready, READY_TIMEOUT).await {
                    notes.push(format!("service {} never printed {ready:?}", service.name));
                }
            }
        }
        if notes.is_empty() {
            self.snapshot_all(&SnapshotAt::Run(run).to_string()).await;
        }
        if notes.is_empty() {
            // The steps of a run start together: launched concurrently, so one host's launch
            // latency (a pid filter update can take tens of ms) does not stagger the others.
            futures::future::try_join_all(steps.iter().map(|step| self.launch(step, "step", run, &gates, vars)))
                .await?;
            if let Some(ordering) = ordering {
                for action in &ordering.actions {
                    if let Err(problem) = self.act(scenario, run, action).await {
                        notes.push(problem);
                        break;
                    }
                }
            }
            // Never leave a step held: release whatever this run still holds.
            let leftover: Vec<_> = {
                let s = self.shared.lock().expect("shared");
                s.holds
                    .iter()
                    .filter(|((_, r, _), _)| *r == run)
                    .map(|((h, _, g), id)| (h.clone(), g.clone(), *id))
                    .collect()
            };
            for (host, gate, hold_id) in leftover {
                if notes.is_empty() {
                    notes.push(format!("gate {gate} on {host} was held but not released by the schedule"));
                }
                self.shared.lock().expect("shared").holds.remove(&(host.clone(), run, gate));
                if let Some(gates) = self.gates.get(&host) {
                    gates.release(hold_id);
                }
            }
            for step in &steps {
                let key = (run, step.name.clone());
                let timeout = Duration::from_secs(step.timeout_s.into());
                if self.wait_for(timeout, |s| s.procs.get(&key).and_then(|p| p.exit)).await.is_none() {
                    notes.push(format!(
                        "step {} did not exit within {} s (its `timeout`); stopped",
                        step.name, step.timeout_s
                    ));
                    let pid = self.shared.lock().expect("shared").procs.get(&key).map(|p| p.pid).unwrap_or(0);
                    self.stop_process(&step.host, pid).await;
                }
            }
        }
        self.settle(run, &service_pids).await;
        for (host, pid) in service_pids {
            self.stop_process(&host, pid).await;
        }
        let outcome = self.outcome(scenario, run, ordering, notes);
        self.runs.push(outcome.clone());
        Ok(outcome)
    }

    /// Takes an environment snapshot on every host. A host that cannot answer only loses its
    /// snapshot (the run goes on; `diff` says what is missing).
    async fn snapshot_all(&mut self, at: &str) {
        let id = self.capture_id.clone();
        // Every host at once, each bounded: a snapshot reads /proc and the mount table (well under
        // a second); an agent that does not answer gets none.
        let taken = futures::future::join_all(self.agents.iter_mut().map(|(name, agent)| {
            let id = id.clone();
            async move { (name.clone(), tokio::time::timeout(STOP_TIMEOUT, agent.snapshot(&id, at)).await) }
        }))
        .await;
        for (name, env) in taken {
            match env {
                Ok(Ok(env)) => self.environments.entry(name).or_default().push(env),
                Ok(Err(e)) => tracing::warn!(host = %name, error = %e, "no environment snapshot"),
                Err(_) => tracing::warn!(host = %name, "no environment snapshot within {} s", STOP_TIMEOUT.as_secs()),
            }
        }
    }

    /// Notes that the coordinator has seen `what` on `host`.
    fn observe(&mut self, host: &str, run: u32, what: MarkKind) {
        self.observed.push(Mark { host: host.to_string(), run, what });
    }

    /// The coordinator is about to cause `to`: everything it has observed on other hosts precedes it.
    fn cause(&mut self, to: Mark) {
        let mut latest: BTreeMap<&str, &Mark> = BTreeMap::new();
        for m in &self.observed {
            latest.insert(m.host.as_str(), m);
        }
        let edges: Vec<MessageEdge> = latest
            .into_values()
            .filter(|m| m.host != to.host)
            .map(|from| MessageEdge { from: from.clone(), to: to.clone() })
            .collect();
        self.causal.extend(edges);
    }

    async fn act(&mut self, scenario: &Scenario, run: u32, action: &Action) -> Result<(), String> {
        let host_of = |step: &str| scenario.process(step).map(|p| p.host.clone()).unwrap_or_default();
        let gate_mark = |gate: &GateSpec, action: &str| MarkKind::Gate { gate: gate.id(), action: action.to_string() };
        match action {
            Action::Reached(gate) => {
                let host = host_of(&gate.step);
                self.wait_hold(&host, run, gate).await.ok_or_else(|| not_reached(gate))?;
                self.observe(&host, run, gate_mark(gate, "held"));
            }
            Action::Release(gate) => {
                let host = host_of(&gate.step);
                // A process a signal ended before its call (the SIGHUP released first killed the
                // daemon that had not installed its handler) never makes it: what was released
                // before came first, and the schedule goes on.
                let key = (host.clone(), run, gate.id());
                let proc_key = (run, gate.step.clone());
                let reached = self
                    .wait_for(ACTION_TIMEOUT, |s| match s.holds.get(&key) {
                        Some(id) => Some(Some(*id)),
                        None => s.procs.get(&proc_key).filter(|p| p.exit.is_some() && p.signal != 0).map(|_| None),
                    })
                    .await
                    .ok_or_else(|| not_reached(gate))?;
                let Some(hold) = reached else {
                    tracing::info!(gate = %gate.id(), %host, "a signal ended the process before its gated call");
                    return Ok(());
                };
                self.observe(&host, run, gate_mark(gate, "held"));
                self.cause(Mark { host: host.clone(), run, what: gate_mark(gate, "released") });
                self.lines_at_release = {
                    let s = self.shared.lock().expect("shared");
                    s.procs
                        .iter()
                        .filter(|((r, _), _)| *r == run)
                        .map(|((_, n), p)| (n.clone(), p.lines.len()))
                        .collect()
                };
                self.release(&host, run, gate, hold);
                // What the schedule does next comes after the released call, not beside it (a
                // rename let go, then the reader released: the reader must see it renamed).
                let key = (host.clone(), hold);
                if self.wait_for(THROUGH_TIMEOUT, |s| s.through.remove(&key).then_some(())).await.is_none() {
                    tracing::warn!(gate = %gate.id(), %host, "no word that the released call went through; going on");
                }
            }
            Action::Output(m) => {
                let from = self.lines_at_release.get(&m.process).copied().unwrap_or(0);
                if !self.wait_output_from(run, &m.process, &m.text, from, ACTION_TIMEOUT).await {
                    return Err(format!("{} never printed {:?}", m.process, m.text));
                }
                let what = MarkKind::Output { process: m.process.clone(), text: m.text.clone() };
                self.observe(&host_of(&m.process), run, what);
            }
            Action::Exit(step) => {
                let key = (run, step.clone());
                let timeout = scenario.process(step).map_or(STEP_TIMEOUT, |p| Duration::from_secs(p.timeout_s.into()));
                self.wait_for(timeout, |s| s.procs.get(&key).and_then(|p| p.exit))
                    .await
                    .ok_or_else(|| format!("step {step} did not exit"))?;
                self.observe(&host_of(step), run, MarkKind::Exit { process: step.clone() });
            }
            Action::Settle(service) => self.quiet(run, Some(service)).await,
        }
        Ok(())
    }

    async fn stop_process(&self, host: &str, pid: i32) {
        if let Ok(mut agent) = self.agent(host) {
            let _ = agent.stop_process(&self.capture_id, pid, 500).await;
        }
        let _ = self
            .wait_for(Duration::from_secs(3), |s| s.procs.values().find(|p| p.pid == pid).and_then(|p| p.exit))
            .await;
    }

    fn outcome(&self, scenario: &Scenario, run: u32, ordering: Option<&Ordering>, notes: Vec<String>) -> RunOutcome {
        let s = self.shared.lock().expect("shared");
        // Steps of a variant that was off in this run were never launched.
        let steps: Vec<StepOutcome> = scenario
            .steps
            .iter()
            .filter(|step| s.procs.contains_key(&(run, step.name.clone())))
            .map(|step| {
                let p = s.procs.get(&(run, step.name.clone()));
                let lines = p.map(|p| p.lines.clone()).unwrap_or_default();
                StepOutcome {
                    name: step.name.clone(),
                    host: step.host.clone(),
                    exit_code: p.and_then(|p| p.exit).unwrap_or(-1),
                    signal: p.map(|p| p.signal).unwrap_or(0),
                    output_tail: lines[lines.len().saturating_sub(5)..].to_vec(),
                }
            })
            .collect();
        let f = &scenario.failure;
        let failing = steps.iter().find(|st| st.name == f.step);
        let lines = s.procs.get(&(run, f.step.clone())).map(|p| p.lines.clone()).unwrap_or_default();
        let failed = failing.is_some_and(|st| f.holds(Ending { code: st.exit_code, signal: st.signal, lines: &lines }));
        let valid = notes.is_empty();
        let note = if !valid {
            notes.join("; ")
        } else if failed {
            let st = failing.expect("failed implies found");
            let how = match st.signal {
                0 => format!("exited {}", st.exit_code),
                sig => format!("was killed by {}", heisen_recordings::signal_name(sig)),
            };
            match st.output_tail.last() {
                Some(line) => format!("{} {how}: {line}", st.name),
                None => format!("{} {how}", st.name),
            }
        } else {
            String::new()
        };
        // The ptrace recorder on any launched process perturbs the run: say so.
        let traced = scenario
            .services
            .iter()
            .chain(scenario.steps.iter())
            .any(|p| p.ptrace && s.procs.contains_key(&(run, p.name.clone())));
        let observer = if traced { RunObserver::Ptrace } else { RunObserver::Kernel };
        let variants = ordering.map(|o| o.variants.clone()).unwrap_or_else(|| scenario.default_variants());
        RunOutcome {
            run,
            ordering: ordering.map(|o| o.name.to_string()),
            failed,
            valid,
            note,
            steps,
            observer,
            variants,
        }
    }

    /// Stops recording everywhere, pulls every host's events and returns the bundle.
    pub async fn close(self, scenario: Option<&Scenario>, scenario_path: &str) -> Result<Bundle> {
        let (mut bundle, events, _) =
            self.end(scenario, scenario_path, |head| Ok(vec![Vec::new(); head.hosts.len()])).await?;
        for (host, events) in bundle.hosts.iter_mut().zip(events) {
            host.events = events;
        }
        Ok(bundle)
    }

    /// Stops recording everywhere and streams every host's events into a bundle at `path` as
    /// they arrive: the coordinator's memory does not grow with the capture. Returns the bundle
    /// without its events, and how many each host has.
    pub async fn close_to(
        self,
        scenario: Option<&Scenario>,
        scenario_path: &str,
        path: &std::path::Path,
    ) -> Result<(Bundle, Vec<u64>)> {
        let (head, writer, counts) =
            self.end(scenario, scenario_path, |head| Ok(heisen_recordings::BundleWriter::create(path, head)?)).await?;
        writer.finish(&head)?;
        Ok((head, counts))
    }

    /// Ends the capture on every agent, then pulls every host's events into the sink `open`
    /// makes from the bundle's head (its hosts in order): returns the final head (no events),
    /// the sink, and each host's event count.
    async fn end<S: Sink>(
        mut self,
        scenario: Option<&Scenario>,
        scenario_path: &str,
        open: impl FnOnce(&Bundle) -> Result<S>,
    ) -> Result<(Bundle, S, Vec<u64>)> {
        self.gates.clear(); // closing the gate channels releases anything still held
        if let Some(prober) = self.prober.take() {
            prober.abort();
        }
        // Which agents still answer, all at once: one that does not costs STATE_TIMEOUT once,
        // and nothing more is asked of it.
        let silent: HashSet<String> = self
            .counts()
            .await
            .into_iter()
            .filter(|(_, state)| matches!(state, HostState::Unreachable(_)))
            .map(|(name, _)| name)
            .collect();
        let mut answering: BTreeMap<String, Agent> = std::mem::take(&mut self.agents);
        let mut lost_agents: BTreeMap<String, Agent> = BTreeMap::new();
        for name in &silent {
            if let Some(agent) = answering.remove(name) {
                lost_agents.insert(name.clone(), agent);
            }
        }
        self.agents = answering;
        self.snapshot_all(&SnapshotAt::End.to_string()).await;
        // Every agent ends at once, each bounded.
        let id = self.capture_id.clone();
        let mut ends = futures::future::join_all(self.agents.iter_mut().map(|(name, agent)| {
            let id = id.clone();
            async move {
                let probed = tokio::time::timeout(STATE_TIMEOUT, agent.probe(8)).await.ok().and_then(Result::ok);
                let stopped = match tokio::time::timeout(STOP_TIMEOUT, agent.stop_capture(&id)).await {
                    Ok(Ok(status)) => Stop::Done(status),
                    Ok(Err(e)) => Stop::Failed(e),
                    Err(_) => Stop::Silent(STOP_TIMEOUT),
                };
                // An agent that let the stop time out does not answer: do not wait on it again.
                // One whose stop failed is pulled only if it still answers at all.
                let answers = match &stopped {
                    Stop::Silent(_) => false,
                    Stop::Done(_) => true,
                    Stop::Failed(_) => {
                        matches!(tokio::time::timeout(STATE_TIMEOUT, agent.capture_state(&id)).await, Ok(Ok(_)))
                    }
                };
                (name.clone(), probed, stopped, answers, client::now_ns())
            }
        }))
        .await;
        for name in lost_agents.keys() {
            ends.push((name.clone(), None, Stop::Silent(STATE_TIMEOUT), false, client::now_ns()));
        }
        self.agents.append(&mut lost_agents);

        // The head, hosts in `ends` order; the clocks are fitted from every probe taken.
        let mut hosts = Vec::new();
        for (name, probed, stopped, _, _) in &mut ends {
            let agent = &self.agents[name.as_str()];
            let mut samples = self.probes.lock().expect("probes").remove(name.as_str()).unwrap_or_default();
            samples.extend(probed.take().unwrap_or_default());
            let clock = client::fit(name, &samples)?;
            let mut incomplete = self.restarted.remove(name.as_str());
            let mut lost = 0;
            match stopped {
                Stop::Done(status) => {
                    lost = status.lost;
                    if status.forgotten || status.boot_id != agent.info.boot_id {
                        incomplete.get_or_insert_with(|| restart_note(name, &agent.info.boot_id, &status.boot_id));
                    }
                }
                Stop::Failed(e) => {
                    incomplete.get_or_insert_with(|| format!("agent {name} could not stop the capture: {e:#}"));
                }
                Stop::Silent(waited) => {
                    incomplete.get_or_insert_with(|| {
                        format!("agent {name} ({}) did not answer within {} s at the end", agent.addr, waited.as_secs())
                    });
                }
            }
            hosts.push(HostRecording {
                name: name.clone(),
                agent_version: agent.info.version.clone(),
                kernel: agent.info.kernel.clone(),
                observer: self.observers.get(name.as_str()).cloned().unwrap_or_default(),
                clock,
                probes: samples,
                events: Vec::new(),
                lost,
                environments: self.environments.remove(name.as_str()).unwrap_or_default(),
                incomplete,
            });
        }
        let mut head = Bundle {
            capture_id: self.capture_id.clone(),
            started_ns: self.started_ns,
            scenario: scenario.map(|s| ScenarioSource { path: scenario_path.to_string(), text: s.text.clone() }),
            hosts,
            runs: std::mem::take(&mut self.runs),
            causal: std::mem::take(&mut self.causal),
            placeholders: std::mem::take(&mut self.shared.lock().expect("shared").placeholders),
        };

        // Every answering agent's events, pulled at once into the sink as they arrive.
        let sink = Mutex::new(open(&head)?);
        let order: Vec<String> = ends.iter().map(|(name, ..)| name.clone()).collect();
        let answers: HashSet<String> =
            ends.iter().filter(|(_, _, _, answers, _)| *answers).map(|(name, ..)| name.clone()).collect();
        let sink_ref = &sink;
        let pulled = futures::future::join_all(self.agents.iter_mut().filter(|(name, _)| answers.contains(*name)).map(
            |(name, agent)| {
                let id = id.clone();
                let host = order.iter().position(|n| n == name).expect("every agent has a host");
                async move {
                    let mut gaps = heisen_recordings::SeqGaps::default();
                    let mut tracked = heisen_analysis::losses::Losses::default();
                    let mut last = None;
                    let mut count = 0u64;
                    let result = agent
                        .pull_each(&id, |batch| {
                            let batch = gaps.mark(batch);
                            batch.iter().for_each(|e| tracked.push(e));
                            last = batch.last().map(|e| (e.seq, e.raw_ns)).or(last);
                            count += batch.len() as u64;
                            sink_ref.lock().expect("sink").events(host, &batch)
                        })
                        .await;
                    (host, Pulled { result, gaps: gaps.missing, disordered: gaps.disordered, tracked, last, count })
                }
            },
        ))
        .await;
        let mut sink = sink.into_inner().expect("sink");
        let mut by_host: Vec<Pulled> = (0..order.len()).map(|_| Pulled::none()).collect();
        for (host, p) in pulled {
            by_host[host] = p;
        }
        let mut tracked = Vec::new();
        let mut counts = Vec::new();
        for (index, ((h, (name, _, _, answers, end_ns)), mut p)) in
            head.hosts.iter_mut().zip(&ends).zip(by_host).enumerate()
        {
            let agent = &self.agents[name.as_str()];
            let failed = p.result.as_ref().err().map(|e| format!(" ({e:#})"));
            if failed.is_some() || !answers {
                let pulled = if p.count == 0 {
                    "none of its events could be pulled".to_string()
                } else {
                    format!("only its first {} events could be pulled", p.count)
                };
                let why = format!(
                    "{pulled}{}; once its agent answers, `heisen pull --agent {name}={} --capture {}` recovers what it \
                     stored",
                    failed.unwrap_or_default(),
                    agent.addr,
                    self.capture_id
                );
                h.incomplete = Some(match h.incomplete.take() {
                    Some(first) => format!("{first}; {why}"),
                    None => why,
                });
            }
            if p.gaps > 0 && h.incomplete.is_none() {
                h.incomplete = Some(format!("{} events are missing from agent {name}'s store (sequence gaps)", p.gaps));
            }
            if p.disordered > 0 {
                let why =
                    format!("agent {name} sent {} events out of sequence order; they were left out", p.disordered);
                h.incomplete = Some(match h.incomplete.take() {
                    Some(first) => format!("{first}; {why}"),
                    None => why,
                });
            }
            if let Some(why) = &h.incomplete {
                let host_ns = |t: i64| t + h.clock.offset_at(t);
                let lost = heisen_recordings::lost_span(p.last, host_ns(self.started_ns), host_ns(*end_ns), why);
                p.tracked.push(&lost);
                sink.events(index, std::slice::from_ref(&lost))?;
                p.count += 1;
            }
            counts.push(p.count);
            tracked.push(p.tracked);
        }
        // A run during which a host recorded nothing cannot be judged: it counts as invalid.
        let hosts: Vec<(&str, &heisen_recordings::ClockModel, heisen_analysis::losses::Losses)> =
            head.hosts.iter().zip(tracked).map(|(h, t)| (h.name.as_str(), &h.clock, t)).collect();
        let touched = heisen_analysis::losses::runs_touched(&hosts);
        for (run, why) in touched {
            if let Some(outcome) = head.runs.iter_mut().find(|r| r.run == run && r.valid) {
                outcome.valid = false;
                outcome.note = format!("a host lost events during this run ({why})");
            }
        }
        Ok((head, sink, counts))
    }
}

/// Where a session's end puts the hosts' events as they are pulled: memory, or a bundle file.
trait Sink {
    fn events(&mut self, host: usize, events: &[heisen_recordings::Event]) -> Result<()>;
}

impl Sink for Vec<Vec<heisen_recordings::Event>> {
    fn events(&mut self, host: usize, events: &[heisen_recordings::Event]) -> Result<()> {
        self[host].extend_from_slice(events);
        Ok(())
    }
}

impl Sink for heisen_recordings::BundleWriter {
    fn events(&mut self, host: usize, events: &[heisen_recordings::Event]) -> Result<()> {
        Ok(heisen_recordings::BundleWriter::events(self, host, events)?)
    }
}

/// What pulling one host gave.
struct Pulled {
    result: Result<()>,
    /// Events missing from its sequence.
    gaps: u64,
    /// Events left out for not following the one before.
    disordered: u64,
    tracked: heisen_analysis::losses::Losses,
    /// Its last event (seq, raw_ns).
    last: Option<(u64, i64)>,
    count: u64,
}

impl Pulled {
    /// A host that was not asked (its agent did not answer).
    fn none() -> Pulled {
        Pulled { result: Ok(()), gaps: 0, disordered: 0, tracked: Default::default(), last: None, count: 0 }
    }
}

/// How stopping a capture on one agent went at the end of a session.
enum Stop {
    Done(heisen_recordings::CaptureStatus),
    Failed(anyhow::Error),
    /// No answer within this long.
    Silent(Duration),
}

/// Why a host's recording stops early when its agent restarted.
fn restart_note(host: &str, old_boot: &str, new_boot: &str) -> String {
    let new_boot = if new_boot.is_empty() { "unknown" } else { new_boot };
    format!(
        "agent {host} restarted during the capture (boot id {old_boot}, then {new_boot}) and never records a capture \
         it forgot: nothing of {host} after its last stored event is in this bundle (a crash loses at most the last \
         {} ms before it)",
        heisen_recordings::CRASH_WINDOW_MS
    )
}

fn not_reached(gate: &GateSpec) -> String {
    format!("gate {} was never reached within {} s", gate.id(), ACTION_TIMEOUT.as_secs())
}
