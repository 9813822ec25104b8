//! heisen's domain model: recorded events, the clock model, the agent's sled store, the portable
//! bundle file, scenario files and the streaming merge.
//!
//! This crate knows nothing of gRPC or the command line; the wire types and their conversions
//! live in `heisen-proto`, orchestration in the coordinator.

mod bundle;
mod chunked;
mod clock;
mod control;
mod decode;
mod env;
mod event;
mod files;
mod merge;
mod order;
mod scenario;
mod store;
pub mod synthetic;
mod syscalls;

use std::path::PathBuf;

pub use bundle::{
    bundle_path, lost_span, Bundle, BundleProblem, HostRecording, RunObserver, RunOutcome, ScenarioSource, SeqGaps,
    StepOutcome, BUNDLE_MAGIC, BUNDLE_VERSION,
};
pub use chunked::{BundleFile, BundleWriter, ChunkEntry, Damage, HostEvents, CHUNK_EVENTS};
pub use clock::{Anchor, ClockModel, Interval, ProbeSample, ASSUMED_DRIFT_PPM};
pub use control::{AgentInfo, Capabilities, CaptureStatus, Hold, LaunchSpec, ProcessNotice};
pub use decode::{
    default_kills, errno_name, open_flags, opens_cloexec, result_errno, signal_name, signal_number, sockaddr,
};
pub use env::{
    crontab_command, crontab_jobs, parse_mountinfo, Crontab, Daemon, Environment, Interface, MountEntry, SnapshotAt,
};
pub use event::{
    fcntl_lock_cmd, flock_op_name, interrupted, superseded_execs, AttachPhase, Event, EventKind, KilledBy, PathFrom,
    SignalPhase, Superseded,
};
pub use files::{open_regular, read_regular, write_atomic, AtomicFile};
pub use merge::{Merge, Placed};
pub use order::{
    recorded_edges, violates_clocks, Edge, EdgeFinder, EdgeKind, EventRef, Found, Mark, MarkKind, MessageEdge, Order,
    Relation,
};
pub use scenario::{
    BetweenHypothesis, During, Ending, ExitMatch, Failure, GateSpec, Hypothesis, OrderHypothesis, OutputMatch, Process,
    Scenario, ScenarioError, StateHypothesis, Variant, DEFAULT_STEP_TIMEOUT_S,
};
pub use store::{Store, CRASH_WINDOW_MS, FLUSH_EVERY_MS};
pub use syscalls::{
    default_syscalls, expand_syscalls, gateable, gateable_syscalls, signal_arg, syscall, syscall_of_tracepoint,
    tracepoint_name, Syscall, CLASSES, SYSCALLS,
};

/// Errors of the recordings layer, each naming the operation and the file.
#[derive(Debug, thiserror::Error)]
pub enum RecordingsError {
    #[error("{op} failed for {}: {source}", path.display())]
    Store { op: &'static str, path: PathBuf, source: sled::Error },
    #[error("{op} failed for {}: {source}", path.display())]
    Io { op: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{}: {problem}", path.display())]
    BadBundle {
        path: PathBuf,
        #[source]
        problem: BundleProblem,
    },
    #[error("{what} failed: {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: bincode::Error,
    },
    #[error("encoding a bundle failed: {0}")]
    EncodeBundle(#[source] serde_json::Error),
    #[error("{0}")]
    Invalid(String),
    #[error("corrupt stored batch: {why}")]
    CorruptBatch { why: String },
}
