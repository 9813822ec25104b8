//! What the coordinator asks of an agent and what it hears back, as domain types: who an agent
//! is, a capture's status, a process to launch (with its gate points), what a launched process
//! reports, and a hold at a gate point. The wire forms and their conversions are in
//! `heisen-proto`; the coordinator's agent client is the only code that crosses between them.

use std::collections::HashMap;

use crate::GateSpec;

/// Who an agent is and what its host can do.
#[derive(Clone, Debug, Default)]
pub struct AgentInfo {
    pub name: String,
    pub version: String,
    /// `uname -r` of the agent's host.
    pub kernel: String,
    pub pid: u32,
    pub capabilities: Capabilities,
    /// Random per start of the agent: a new one means it restarted and forgot its captures.
    pub boot_id: String,
}

/// What an agent's host can do.
#[derive(Clone, Debug, Default)]
pub struct Capabilities {
    pub root: bool,
    pub kernel_tracing: bool,
    pub ptrace: bool,
    pub seccomp_notify: bool,
    /// Why `kernel_tracing` is false, in words (empty when it is true).
    pub tracing_unavailable_reason: String,
}

/// A capture on one agent.
#[derive(Clone, Debug, Default)]
pub struct CaptureStatus {
    pub capture_id: String,
    pub recording: bool,
    /// Events stored so far.
    pub events: u64,
    pub lost: u64,
    /// Which observer records (`tracefs`, `tracefs (writes by BPF)`, or why there is none).
    pub observer: String,
    /// The answering agent's boot id (random per start of the agent).
    pub boot_id: String,
    /// Stored by an earlier run of the agent that ended while it recorded (crash, restart).
    pub forgotten: bool,
}

/// A process for an agent to launch into a capture.
#[derive(Clone, Debug, Default)]
pub struct LaunchSpec {
    pub capture_id: String,
    pub run: u32,
    /// The scenario process's name (its output and exit are reported under it).
    pub name: String,
    /// `service` or `step`.
    pub role: String,
    /// Placeholders already expanded but `{fixture}` and `{workdir}`, which the agent resolves.
    pub argv: Vec<String>,
    /// Empty: a fresh directory under the agent's data directory.
    pub workdir: String,
    pub env: HashMap<String, String>,
    /// Gate points of this process; none means no seccomp filter at all.
    pub gates: Vec<GateSpec>,
    /// A hold is released after this long even if the coordinator never does.
    pub hold_timeout_ms: u64,
    /// Attach the ptrace recorder to the process from its start.
    pub ptrace: bool,
}

/// What a launched process reports, in order: started, its output lines, its exit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProcessNotice {
    Started {
        pid: i32,
        workdir: String,
    },
    Output(String),
    /// `code` is the exit status, or 128+signal with `signal` (0 if none) when a signal ended it.
    Exited {
        code: i32,
        signal: i32,
    },
}

/// A process held at one of its gate points, waiting for its release.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hold {
    /// What a release names.
    pub hold_id: u64,
    /// The gate point's id ([`GateSpec::id`]).
    pub gate: String,
    pub process: String,
    pub pid: i32,
    pub run: u32,
    /// Host clock when the process stopped at the gate.
    pub raw_ns: i64,
    /// False: a new hold. True: the hold `hold_id`, released, has gone through (its call was
    /// made and the process moved past it, or a bounded wait for that ended).
    pub through: bool,
}
