//! The kernel observer's decoder: turns tracefs lines into domain events for this host.
//!
//! It pairs syscall enter/exit per thread, keeps signal senders (the tracepoint at generation
//! runs in the sender's context), follows fork lineage to tag events with the scenario run of the
//! launched process tree, and drops what is outside the host's scope. Notes that the agent
//! itself writes into the trace (launches, output lines, gate holds) come back through here too,
//! so everything on a host is ordered by one clock: the kernel's.

use fxhash::FxHashMap;

use heisen_recordings::{EventKind, SignalPhase};
use serde::{Deserialize, Serialize};

mod calls;
mod fds;
mod host;
mod scope;
#[cfg(test)]
mod tests;

pub use calls::PTRACE_FILTER;
pub(crate) use scope::netns_inode;
pub use scope::{host_addresses, Scope};

use crate::tracefs::TraceLine;
use scope::parent_of;

/// Tracepoints the observer enables besides the syscall set.
pub const BASE_EVENTS: &[&str] = &[
    "sched/sched_process_exec",
    "sched/sched_process_fork",
    "sched/sched_process_exit",
    "signal/signal_generate",
    "signal/signal_deliver",
    "sock/inet_sock_set_state",
    // Renames (prctl PR_SET_NAME): raw records carry no comm, so the reader follows renames.
    "task/task_rename",
    // The exit status a process asks for (sched_process_exit carries none).
    "syscalls/sys_enter_exit_group",
];
/// A note the agent writes into the trace (`heisen:` + JSON), decoded back into an event.
#[derive(Serialize, Deserialize)]
pub struct AgentNote {
    /// The process the note is about; 0 means the marker writer itself (a child before exec).
    pub pid: i32,
    pub comm: String,
    pub run: u32,
    pub kind: EventKind,
}

/// A decoded event before it gets its sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub raw_ns: i64,
    pub pid: i32,
    pub comm: String,
    pub run: u32,
    pub kind: EventKind,
}

/// What a trace line meant to the decoder.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Event(Decoded),
    /// Several events from one trace record (an exec that is also a cron job's start).
    Events(Vec<Decoded>),
    Nothing,
    /// The stop marker with this token.
    Stop(String),
}

/// Stateful line decoder of one capture.
pub struct Decoder {
    scope: Scope,
    agent_pid: i32,
    /// CLOCK_REALTIME - CLOCK_MONOTONIC, to put kernel stamps into the host clock domain (then
    /// through the agent's clock skew, if any).
    mono_to_raw_ns: i64,
    in_scope: FxHashMap<i32, bool>,
    run_of: FxHashMap<i32, u32>,
    launched_roots: FxHashMap<i32, String>,
    pending: FxHashMap<i32, (&'static str, Vec<u64>, i64)>,
    last_sender: FxHashMap<(i32, i32), (i32, String)>,
    /// What every process's fds name, from the recorded calls.
    fds: fds::Fds,
    /// Strings and addresses the argument recorder read for a call in progress, per thread.
    call_args: FxHashMap<i32, calls::CallArgs>,
    /// The programs each process ran before, in order (its exec chain through shims).
    exec_chain: FxHashMap<i32, Vec<String>>,
    /// argv of an exec in progress, as the argument recorder read it at the call.
    exec_argv: FxHashMap<i32, (Vec<String>, bool)>,
    /// Addresses that make a TCP socket this host's (empty: socket events are not recorded).
    local_addrs: Vec<String>,
    /// The last successful mount/umount2 in scope (pid, comm, host ns): the mount watcher's
    /// next change is attributed to it.
    last_mount_call: Option<(i32, String, i64)>,
    /// Exit status each process passed to exit_group, for its exit event.
    exit_codes: FxHashMap<i32, i32>,
    /// The last signal generated for each process whose default action ends it, and its sender:
    /// what ended a process that exits without exit_group.
    fatal: FxHashMap<i32, (i32, i32, String)>,
    /// Cron jobs in progress: pid -> (crontab, line, command).
    cron_jobs: FxHashMap<i32, (String, String, String)>,
    /// Crontab directories besides the system ones and the cron daemon's own `-c DIR`.
    crontab_dirs: Vec<std::path::PathBuf>,
    /// Our ptrace recorders: every stop of a tracee sends them a SIGCHLD, which is the
    /// recorder's own noise, not the traced program's behaviour.
    tracers: std::collections::HashSet<i32>,
    /// Launched processes between their launch note and their exec: their calls are the
    /// launcher's plumbing (the note's own write into the trace), not the program's.
    launching: std::collections::HashSet<i32>,
}

/// How long after a mount syscall a mount-table change is still attributed to it.
const MOUNT_ATTRIBUTION_NS: i64 = 2_000_000_000;

impl Decoder {
    pub fn new(scope: Scope, mono_to_raw_ns: i64) -> Decoder {
        Decoder {
            scope,
            agent_pid: std::process::id() as i32,
            mono_to_raw_ns,
            in_scope: FxHashMap::default(),
            run_of: FxHashMap::default(),
            launched_roots: FxHashMap::default(),
            pending: FxHashMap::default(),
            last_sender: FxHashMap::default(),
            fds: fds::Fds::default(),
            call_args: FxHashMap::default(),
            exec_argv: FxHashMap::default(),
            exec_chain: FxHashMap::default(),
            local_addrs: Vec::new(),
            last_mount_call: None,
            exit_codes: FxHashMap::default(),
            fatal: FxHashMap::default(),
            cron_jobs: FxHashMap::default(),
            crontab_dirs: Vec::new(),
            tracers: std::collections::HashSet::new(),
            launching: std::collections::HashSet::new(),
        }
    }

    /// Also looks for cron jobs' lines in these crontab directories.
    pub fn with_crontab_dirs(mut self, dirs: Vec<std::path::PathBuf>) -> Decoder {
        self.crontab_dirs = dirs;
        self
    }
    /// Records TCP state changes of sockets bound to these addresses. They fire in softirq
    /// context (any task's pid), so they are attributed by address, never by pid.
    pub fn with_socket_addresses(mut self, addrs: Vec<String>) -> Decoder {
        self.local_addrs = addrs;
        self
    }
    pub(super) fn event(&self, line: &TraceLine<'_>, pid: i32, comm: &str, kind: EventKind) -> Step {
        Step::Event(self.decoded(line, pid, comm, kind))
    }

    pub(super) fn decoded(&self, line: &TraceLine<'_>, pid: i32, comm: &str, kind: EventKind) -> Decoded {
        Decoded {
            raw_ns: crate::clock::skewed(line.mono_ns + self.mono_to_raw_ns),
            pid,
            comm: comm.to_string(),
            run: self.run_of.get(&pid).copied().unwrap_or(0),
            kind,
        }
    }

    /// `first`, followed by a second event of the same record when there is one.
    pub(super) fn with_second(&self, line: &TraceLine<'_>, first: Decoded, second: Option<EventKind>) -> Step {
        match second {
            Some(kind) => Step::Events(vec![first, self.decoded(line, line.pid, &line.comm, kind)]),
            None => Step::Event(first),
        }
    }

    /// Decodes one line.
    pub fn decode(&mut self, line: &TraceLine<'_>) -> Step {
        match line.event {
            "tracing_mark_write" => self.marker(line),
            "inet_sock_set_state" => self.socket(line),
            "sched_process_fork" => {
                let parent = line.int("parent_pid").unwrap_or(line.pid as i64) as i32;
                let Some(child) = line.int("child_pid").map(|c| c as i32) else {
                    return Step::Nothing;
                };
                // A process can enter the host's namespace (setns, `ip netns exec`) after its
                // membership was cached: ask again for the parent as it forks.
                self.refresh_scope(parent);
                let member = self.in_scope(parent);
                if let Some(run) = self.run_of.get(&parent).copied() {
                    self.run_of.insert(child, run);
                }
                // A thread shares its process's fds; a process gets a copy. Only /proc tells
                // which (the tracepoint carries no clone flags); a child gone already was a process
                // as far as any later event can tell.
                let thread = scope::tgid_of(child).is_some_and(|tgid| tgid != child);
                self.fds.fork(parent, child, thread);
                self.in_scope.insert(child, member);
                if !member {
                    return Step::Nothing;
                }
                self.event(line, parent, &line.comm, EventKind::Fork { parent_pid: parent, child_pid: child })
            }
            "sched_process_exec" => {
                self.launching.remove(&line.pid);
                self.fds.exec(line.pid);
                let recorded_argv = self.exec_argv.remove(&line.pid);
                self.refresh_scope(line.pid); // see fork: entered after setns
                if !self.in_scope(line.pid) {
                    return Step::Nothing;
                }
                let filename = line.text("filename").unwrap_or_default();
                // argv as the exec call had it (the argument recorder); /proc without it, where it
                // may already show a later exec's, or when the recorded one was cut short and
                // /proc's begins with it (the same exec, whole).
                let proc_argv = || -> Vec<String> {
                    std::fs::read(format!("/proc/{}/cmdline", line.pid))
                        .map(|raw| {
                            raw.split(|b| *b == 0)
                                .filter(|a| !a.is_empty())
                                .map(|a| String::from_utf8_lossy(a).into())
                                .collect()
                        })
                        .unwrap_or_default()
                };
                let argv = match recorded_argv {
                    None => proc_argv(),
                    Some((recorded, false)) => recorded,
                    Some((recorded, true)) => {
                        let whole = proc_argv();
                        let extends = recorded.len() <= whole.len()
                            && recorded.iter().zip(&whole).all(|(cut, full)| full.starts_with(cut.as_str()));
                        if extends {
                            whole
                        } else {
                            recorded
                        }
                    }
                };
                let ppid = parent_of(line.pid).unwrap_or(0);
                let cron = self.cron_start(line.pid, ppid, &argv);
                let before = self.exec_chain.entry(line.pid).or_default();
                let chain = before.clone();
                before.push(filename.clone());
                let kind = EventKind::Exec { filename, argv, ppid, chain };
                let exec = self.decoded(line, line.pid, &line.comm, kind);
                self.with_second(line, exec, cron)
            }
            "sched_process_exit" => {
                let group_dead = line.flag("group_dead").unwrap_or(true);
                let member = self.in_scope(line.pid);
                self.pending.remove(&line.pid);
                self.call_args.remove(&line.pid);
                self.exec_argv.remove(&line.pid);
                self.exec_chain.remove(&line.pid);
                // The thread that dies last reports the process's exit; exit_group and a fatal
                // signal may have been another thread's, and are kept by process.
                let process = self.fds.owner(line.pid);
                self.fds.exit(line.pid, group_dead);
                let (asked, fatal) = if group_dead {
                    (
                        self.exit_codes.remove(&process),
                        self.fatal.remove(&process).or_else(|| self.fatal.remove(&line.pid)),
                    )
                } else {
                    (None, None)
                };
                if !member || !group_dead || self.launched_roots.contains_key(&line.pid) {
                    return Step::Nothing; // the launcher reports launched processes' exit codes
                }
                // No exit_group: a signal's default action ended it (the last one generated for it).
                let (exit_code, killed_by) = match (asked, fatal) {
                    (Some(code), _) => (code, None),
                    (None, Some((signal, sender_pid, sender_comm))) => {
                        (128 + signal, Some(heisen_recordings::KilledBy { signal, sender_pid, sender_comm }))
                    }
                    (None, None) => (-1, None),
                };
                let exit = self.decoded(line, line.pid, &line.comm, EventKind::Exit { exit_code, killed_by });
                let end = self.cron_jobs.remove(&line.pid).map(|(crontab, crontab_line, command)| EventKind::Cron {
                    phase: "end".into(),
                    crontab,
                    crontab_line,
                    command,
                    job_pid: line.pid,
                    exit_code: Some(exit_code),
                });
                self.with_second(line, exit, end)
            }
            "signal_generate" => {
                let (Some(sig), Some(target)) = (line.int("sig"), line.int("pid")) else {
                    return Step::Nothing;
                };
                let (sig, target) = (sig as i32, target as i32);
                if sig == libc::SIGCHLD && self.tracers.contains(&target) {
                    return Step::Nothing;
                }
                if !(self.in_scope(line.pid) || self.in_scope(target)) {
                    return Step::Nothing;
                }
                let target_comm = line.text("comm").unwrap_or_default();
                self.last_sender.insert((target, sig), (line.pid, line.comm.to_string()));
                if heisen_recordings::default_kills(sig) {
                    self.fatal.insert(target, (sig, line.pid, line.comm.to_string()));
                }
                let result = line.int("result").unwrap_or(0) as i32;
                self.event(
                    line,
                    line.pid,
                    &line.comm,
                    EventKind::Signal {
                        signal: sig,
                        sender_pid: line.pid,
                        sender_comm: line.comm.to_string(),
                        target_pid: target,
                        target_comm,
                        phase: SignalPhase::Generate,
                        result,
                    },
                )
            }
            "signal_deliver" => {
                let Some(sig) = line.int("sig").map(|s| s as i32) else {
                    return Step::Nothing;
                };
                if !self.in_scope(line.pid) {
                    return Step::Nothing;
                }
                let (mut sig, (mut sender_pid, mut sender_comm)) =
                    (sig, self.last_sender.remove(&(line.pid, sig)).unwrap_or((0, String::new())));
                // A fatal signal's default action reaches every thread as a SIGKILL the kernel
                // makes up: the signal that was sent is the one to show, with its sender.
                let process = self.fds.owner(line.pid);
                if sig == libc::SIGKILL && sender_pid == 0 {
                    let fatal = self.fatal.get(&process).or_else(|| self.fatal.get(&line.pid));
                    if let Some((fatal, pid, comm)) = fatal.filter(|f| f.0 != libc::SIGKILL) {
                        (sig, sender_pid, sender_comm) = (*fatal, *pid, comm.clone());
                    } else if self.exit_codes.contains_key(&process) {
                        // Its process called exit_group: the kernel ends the other threads with a
                        // SIGKILL nobody sent. The process's exit says how it ended.
                        return Step::Nothing;
                    }
                }
                self.event(
                    line,
                    line.pid,
                    &line.comm,
                    EventKind::Signal {
                        signal: sig,
                        sender_pid,
                        sender_comm,
                        target_pid: line.pid,
                        target_comm: line.comm.to_string(),
                        phase: SignalPhase::Deliver,
                        result: 0,
                    },
                )
            }
            crate::bpf_args::ARGS_EVENT => self.call_arguments(line),
            name if name.starts_with("sys_") => {
                self.syscall(line, heisen_recordings::syscall_of_tracepoint(&name[4..]))
            }
            _ => Step::Nothing,
        }
    }

    fn marker(&mut self, line: &TraceLine<'_>) -> Step {
        let Some(text) = line.marker() else { return Step::Nothing };
        if let Some(token) = text.strip_prefix("heisen-stop:") {
            return Step::Stop(token.trim().to_string());
        }
        let Some(json) = text.strip_prefix("heisen:") else {
            return Step::Nothing;
        };
        let Ok(note) = serde_json::from_str::<AgentNote>(json.trim()) else {
            return Step::Nothing;
        };
        if let EventKind::Mount { op, source, target, fstype, options, .. } = note.kind {
            return self.mount_change(line, op, source, target, fstype, options);
        }
        if let EventKind::Attach { tracer_pid, .. } = &note.kind {
            // From now on the recorder's own syscalls and signals are not the host's behaviour.
            self.tracers.insert(*tracer_pid);
            self.in_scope.insert(*tracer_pid, false);
        }
        let pid = if note.pid == 0 { line.pid } else { note.pid };
        if let EventKind::Launch { name, .. } = &note.kind {
            self.run_of.insert(pid, note.run);
            self.launched_roots.insert(pid, name.clone());
            if note.pid == 0 {
                self.launching.insert(pid);
            }
            self.in_scope.insert(pid, true);
        }
        let mut note = note;
        if let EventKind::Exit { killed_by: Some(k), .. } = &mut note.kind {
            if let Some((signal, sender_pid, sender_comm)) = self.fatal.remove(&pid).filter(|f| f.0 == k.signal) {
                (k.signal, k.sender_pid, k.sender_comm) = (signal, sender_pid, sender_comm);
            }
        }
        // Notes of other recorders (ptrace) do not know the run: the process's lineage does.
        let run = if note.run == 0 { self.run_of.get(&pid).copied().unwrap_or(0) } else { note.run };
        Step::Event(Decoded {
            raw_ns: crate::clock::skewed(line.mono_ns + self.mono_to_raw_ns),
            pid,
            comm: note.comm,
            run,
            kind: note.kind,
        })
    }
}
