//! Recorded events: what one host's kernel (or agent) saw, in that host's own terms.
//!
//! An event is immutable once recorded. Its `raw_ns` is the host's clock and is never rewritten;
//! the coordinator's view of when it happened is an [`crate::Interval`] computed beside it.

use serde::{Deserialize, Serialize};

/// One recorded event on one host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Per-host sequence number. Same-host order is `(host, seq)`, never the clock.
    pub seq: u64,
    /// Host clock (CLOCK_REALTIME domain) in nanoseconds. Replay and merge need the host's own
    /// reading; clock correction happens beside it, not in it.
    pub raw_ns: i64,
    /// Thread id that produced the event (tracepoint `common_pid`).
    pub pid: i32,
    /// Kernel comm of `pid` when known, so a reader need not resolve pids that no longer exist.
    pub comm: String,
    /// Run of the scenario this event belongs to (by launched process tree); 0 when none.
    pub run: u32,
    /// What happened.
    pub kind: EventKind,
}

/// What an event records, with the fields replay and analysis need.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// A completed syscall: enter and exit paired by the agent.
    Syscall {
        /// Syscall name (`write`, `kill`, ...).
        name: String,
        /// Raw register arguments; pointers are addresses (`strings` and `addr` hold what they
        /// pointed to, when recorded).
        args: Vec<u64>,
        /// Return value; negative values are `-errno`.
        ret: i64,
        /// Host clock at entry; the event's `raw_ns` is the exit. Gives the syscall's duration.
        enter_ns: i64,
        /// What the fd argument (or the fd returned) named at the time of the call: a path from
        /// the fd table built from the recorded calls (`/x (deleted)`, `/a.tmp (renamed to /a)`),
        /// a socket and its peer, or what /proc said for an fd opened before the capture.
        fd_path: Option<String>,
        /// The string arguments (paths, fstype) as the caller's memory held them at the call, in
        /// argument order; empty when the argument recorder did not run.
        #[serde(default)]
        strings: Vec<String>,
        /// The socket address the call was given or filled in (`10.0.0.2:8080`, `unix:/run/x`).
        #[serde(default)]
        addr: Option<String>,
        /// Where `fd_path` came from.
        #[serde(default)]
        path_from: Option<PathFrom>,
    },
    /// A signal generated (sender context) or delivered (target context). The sender is what
    /// single-host tools miss in story 1, so it is recorded at generation.
    Signal {
        signal: i32,
        sender_pid: i32,
        sender_comm: String,
        target_pid: i32,
        target_comm: String,
        phase: SignalPhase,
        /// Kernel's generation result (0 delivered, 1 ignored, 2 already pending, ...).
        result: i32,
    },
    /// A successful execve: gives process lineage and what ran.
    Exec {
        filename: String,
        argv: Vec<String>,
        ppid: i32,
        /// The programs this process ran before this one, in order: the shims it went through
        /// (a shell, `env`, pyenv's) on its way to its program.
        #[serde(default)]
        chain: Vec<String>,
    },
    /// A new task: the fork -> child causal edge.
    Fork { parent_pid: i32, child_pid: i32 },
    /// A process ended; `exit_code` is -1 when only the tracepoint saw it.
    Exit {
        /// The status it asked for (exit_group), 128+signal when a signal ended it, -1 when
        /// neither was seen.
        exit_code: i32,
        /// The signal whose default action ended the process, with its sender when the signal's
        /// generation was seen; None for an exit through exit_group.
        #[serde(default)]
        killed_by: Option<KilledBy>,
    },
    /// Events dropped by the kernel buffer or the agent, or a span of time nothing was recorded
    /// (an agent that crashed or restarted, a host the coordinator lost). Loss is never silent.
    Lost {
        /// Events known to be missing (the kernel's count, or a gap in sequence numbers); 0 when
        /// unknown (a span of time).
        count: u64,
        location: String,
        /// When the loss is a span of time: its start on the host clock (the event's `raw_ns` is
        /// its end).
        #[serde(default)]
        from_ns: Option<i64>,
    },
    /// The agent launched a scenario process (service or step).
    Launch { name: String, role: String, argv: Vec<String> },
    /// A line of a launched process's output (failure predicates may match it).
    Output { name: String, stream: String, line: String },
    /// A gate held, released or timed out on a process.
    Gate { gate: String, action: String },
    /// A TCP state change of a socket of this host (`inet_sock_set_state`). Recorded for the
    /// transitions that pair with the peer's across hosts (connect/accept, FIN exchange), which
    /// give causal edges matched by address tuple.
    Socket { local: String, remote: String, from_state: String, to_state: String },
    /// A file-lock call (`flock`, or `fcntl` with a lock command) and its outcome. `raw_ns` is
    /// the return; `enter_ns` the call, so the time spent blocked is their difference.
    Lock {
        /// `flock` or `fcntl`.
        call: String,
        /// `LOCK_EX`, `LOCK_SH|LOCK_NB`, `LOCK_UN`, `F_SETLKW`, ...
        op: String,
        fd: u64,
        /// The locked file when /proc could resolve the fd at the call.
        path: Option<String>,
        ret: i64,
        enter_ns: i64,
    },
    /// A job a cron daemon started (`start`, at the exec under the cron parent) or that ended
    /// (`end`, with its exit code), matched to the crontab line whose command it runs.
    Cron {
        /// `start` or `end`.
        phase: String,
        /// The crontab file, or empty when no line matched.
        crontab: String,
        /// The whole crontab line (schedule and command), or empty when no line matched.
        crontab_line: String,
        /// The command the daemon ran (`sh -c COMMAND`).
        command: String,
        job_pid: i32,
        /// At `end`: the job's exit status (-1 when killed or unknown).
        exit_code: Option<i32>,
    },
    /// A tracer attached to or detached from a process. Attaching perturbs (a blocked
    /// `epoll_wait` returns EINTR), so every attach heisen makes is on the timeline.
    Attach {
        /// `ptrace`.
        tracer: String,
        tracer_pid: i32,
        target_pid: i32,
        phase: AttachPhase,
        /// The mechanism, in words.
        how: String,
    },
    /// A syscall seen by the ptrace recorder, with its arguments decoded while the caller was
    /// stopped (paths, flags in words). `raw_ns` is the return; `enter_ns` the call.
    Traced { name: String, args: Vec<String>, ret: i64, enter_ns: i64 },
    /// A change of this host's mount table, seen by the mount watcher. `by_pid`/`by_comm` name the
    /// process whose mount syscall made it when the kernel observer saw one (0/empty otherwise).
    Mount {
        /// `mount`, `umount` or `remount`.
        op: String,
        source: String,
        target: String,
        fstype: String,
        options: String,
        by_pid: i32,
        by_comm: String,
    },
}

/// `flock(2)` operation bits in words (`2|4` -> `LOCK_EX|LOCK_NB`).
pub fn flock_op_name(op: u64) -> String {
    let mut parts = Vec::new();
    match op & !4 {
        1 => parts.push("LOCK_SH".to_string()),
        2 => parts.push("LOCK_EX".to_string()),
        8 => parts.push("LOCK_UN".to_string()),
        other => parts.push(format!("op {other}")),
    }
    if op & 4 != 0 {
        parts.push("LOCK_NB".into());
    }
    parts.join("|")
}

/// `fcntl(2)` lock commands in words; None for commands that are not locks.
pub fn fcntl_lock_cmd(cmd: u64) -> Option<&'static str> {
    Some(match cmd {
        5 => "F_GETLK",
        6 => "F_SETLK",
        7 => "F_SETLKW",
        36 => "F_OFD_GETLK",
        37 => "F_OFD_SETLK",
        38 => "F_OFD_SETLKW",
        _ => return None,
    })
}

/// Where a signal event was observed.
/// The signal that ended a process and who sent it (pid 0 and an empty name: not seen).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KilledBy {
    pub signal: i32,
    pub sender_pid: i32,
    pub sender_comm: String,
}

/// Where an fd's name came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PathFrom {
    /// The fd table the decoder keeps from the recorded calls (open, dup, fork, exec, close).
    Trace,
    /// `/proc/PID/fd` when the event was decoded: the fd was opened before the capture began
    /// (or by a call heisen does not record), and may name a later file.
    Proc,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SignalPhase {
    Generate,
    Deliver,
}

impl SignalPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            SignalPhase::Generate => "generate",
            SignalPhase::Deliver => "deliver",
        }
    }
}

/// What a tracer did to its target; written `attach`, `detach` or `failed` in bundles, on the
/// wire and in `timeline --json`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachPhase {
    /// The tracer attached: from here on the target is perturbed.
    Attach,
    Detach,
    /// An attach that did not take.
    Failed,
}

impl AttachPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            AttachPhase::Attach => "attach",
            AttachPhase::Detach => "detach",
            AttachPhase::Failed => "failed",
        }
    }

    /// The phase `text` names, if any.
    pub fn parse(text: &str) -> Option<AttachPhase> {
        [AttachPhase::Attach, AttachPhase::Detach, AttachPhase::Failed].into_iter().find(|p| p.as_str() == text)
    }
}

/// The exec events of `events` (one host's, in seq order) that the same process superseded with
/// another exec before it exited: a shim's, not the program's. Their seqs.
pub fn superseded_execs(events: &[Event]) -> std::collections::HashSet<u64> {
    let mut s = Superseded::default();
    for e in events {
        s.push(e);
    }
    s.found
}

/// [`superseded_execs`] as events stream by: memory grows with the processes alive and the
/// shims found, not with the events.
#[derive(Default)]
pub struct Superseded {
    /// Per pid, its last exec.
    last: std::collections::HashMap<i32, u64>,
    /// The seqs of execs a later exec of the same process superseded.
    pub found: std::collections::HashSet<u64>,
}

impl Superseded {
    pub fn push(&mut self, e: &Event) {
        match &e.kind {
            EventKind::Exec { .. } => {
                if let Some(earlier) = self.last.insert(e.pid, e.seq) {
                    self.found.insert(earlier);
                }
            }
            // An exit ends the pid's life (a later exec is a reused pid); a fork's child starts
            // a new one.
            EventKind::Fork { child_pid, .. } => {
                self.last.remove(child_pid);
            }
            EventKind::Exit { .. } => {
                self.last.remove(&e.pid);
            }
            _ => {}
        }
    }
}

impl EventKind {
    /// Every name `name` gives, in its order: what `timeline --kind` accepts.
    pub const NAMES: &'static [&'static str] = &[
        "syscall", "signal", "exec", "fork", "exit", "lost", "launch", "output", "gate", "socket", "lock", "mount",
        "cron", "attach",
    ];

    /// The position of its name in [`EventKind::NAMES`].
    pub fn index(&self) -> usize {
        match self {
            EventKind::Syscall { .. } | EventKind::Traced { .. } => 0,
            EventKind::Signal { .. } => 1,
            EventKind::Exec { .. } => 2,
            EventKind::Fork { .. } => 3,
            EventKind::Exit { .. } => 4,
            EventKind::Lost { .. } => 5,
            EventKind::Launch { .. } => 6,
            EventKind::Output { .. } => 7,
            EventKind::Gate { .. } => 8,
            EventKind::Socket { .. } => 9,
            EventKind::Lock { .. } => 10,
            EventKind::Mount { .. } => 11,
            EventKind::Cron { .. } => 12,
            EventKind::Attach { .. } => 13,
        }
    }

    /// The stable kind name used in `timeline --json` (`syscall`, `signal`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Syscall { .. } => "syscall",
            EventKind::Signal { .. } => "signal",
            EventKind::Exec { .. } => "exec",
            EventKind::Fork { .. } => "fork",
            EventKind::Exit { .. } => "exit",
            EventKind::Lost { .. } => "lost",
            EventKind::Launch { .. } => "launch",
            EventKind::Output { .. } => "output",
            EventKind::Gate { .. } => "gate",
            EventKind::Socket { .. } => "socket",
            EventKind::Lock { .. } => "lock",
            EventKind::Mount { .. } => "mount",
            EventKind::Cron { .. } => "cron",
            EventKind::Attach { .. } => "attach",
            EventKind::Traced { .. } => "syscall",
        }
    }
}

/// Whether a blocking call's return value says a signal or a tracer interrupted it: EINTR, or
/// one of the restart codes (ERESTARTSYS 512, ERESTARTNOINTR 513, ERESTARTNOHAND 514,
/// ERESTART_RESTARTBLOCK 516) the kernel turns into a restart or EINTR on the way out. The agent
/// keeps a blocking wait only when it was interrupted, and explain looks for those it kept.
pub fn interrupted(ret: i64) -> bool {
    matches!(ret, -4 | -512 | -513 | -514 | -516)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(flock_op_name(2 | 4), "LOCK_EX|LOCK_NB");
        assert_eq!(flock_op_name(1), "LOCK_SH");
        assert_eq!(fcntl_lock_cmd(7), Some("F_SETLKW"));
        assert_eq!(fcntl_lock_cmd(3), None);
    }

    #[test]
    fn a_kinds_index_is_where_names_lists_it() {
        let s = String::new;
        let kinds = [
            EventKind::Signal {
                signal: 1,
                sender_pid: 0,
                sender_comm: s(),
                target_pid: 0,
                target_comm: s(),
                phase: SignalPhase::Deliver,
                result: 0,
            },
            EventKind::Exec { filename: s(), argv: vec![], ppid: 0, chain: vec![] },
            EventKind::Fork { parent_pid: 0, child_pid: 0 },
            EventKind::Exit { exit_code: 0, killed_by: None },
            EventKind::Lost { count: 0, location: s(), from_ns: None },
            EventKind::Launch { name: s(), role: s(), argv: vec![] },
            EventKind::Gate { gate: s(), action: s() },
            EventKind::Socket { local: s(), remote: s(), from_state: s(), to_state: s() },
            EventKind::Traced { name: s(), args: vec![], ret: 0, enter_ns: 0 },
        ];
        for k in &kinds {
            assert_eq!(EventKind::NAMES[k.index()], k.name());
        }
    }
}

#[cfg(test)]
mod shim_tests {
    use super::*;

    fn ev(seq: u64, pid: i32, kind: EventKind) -> Event {
        Event { seq, raw_ns: seq as i64, pid, comm: String::new(), run: 0, kind }
    }

    fn exec(seq: u64, pid: i32, file: &str) -> Event {
        ev(seq, pid, EventKind::Exec { filename: file.into(), argv: vec![], ppid: 1, chain: vec![] })
    }

    /// A shim chain in one process (sh, pyenv, python): the first two are superseded. A forked
    /// child's first exec and a reused pid's exec after an exit are not.
    #[test]
    fn a_processes_earlier_execs_are_its_shims() {
        let events = vec![
            exec(1, 10, "/bin/sh"),
            exec(2, 10, "/usr/bin/pyenv"),
            ev(3, 10, EventKind::Fork { parent_pid: 10, child_pid: 11 }),
            exec(4, 11, "/usr/libexec/pyenv-hooks"),
            exec(5, 10, "/usr/bin/python3"),
            ev(6, 10, EventKind::Exit { exit_code: 0, killed_by: None }),
            exec(7, 10, "/bin/true"),
        ];
        let mut shims: Vec<u64> = superseded_execs(&events).into_iter().collect();
        shims.sort_unstable();
        assert_eq!(shims, vec![1, 2]);
    }
}
