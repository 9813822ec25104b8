//! heisen's wire contract (`heisen.proto`, compiled with protox) and the `From` conversions
//! between wire messages and `heisen-recordings` domain types. Only this crate sees prost types
//! next to domain types; agent and coordinator logic work on the domain types.

#![allow(clippy::all)]

/// Generated code for package `heisen.v1`.
pub mod v1 {
    tonic::include_proto!("heisen.v1");
}

pub use v1::*;

use heisen_recordings as rec;

/// Version of the wire contract; bumped on a breaking change.
pub const PROTOCOL_VERSION: u32 = 1;

impl From<&rec::Event> for Event {
    fn from(e: &rec::Event) -> Self {
        use event::Kind;
        let kind = match &e.kind {
            rec::EventKind::Syscall { name, args, ret, enter_ns, fd_path } => Kind::Syscall(Syscall {
                name: name.clone(),
                args: args.clone(),
                ret: *ret,
                enter_ns: *enter_ns,
                fd_path: fd_path.clone().unwrap_or_default(),
            }),
            rec::EventKind::Signal { signal, sender_pid, sender_comm, target_pid, target_comm, phase, result } => {
                Kind::Signal(Signal {
                    signal: *signal,
                    sender_pid: *sender_pid,
                    sender_comm: sender_comm.clone(),
                    target_pid: *target_pid,
                    target_comm: target_comm.clone(),
                    phase: phase.as_str().to_string(),
                    result: *result,
                })
            }
            rec::EventKind::Exec { filename, argv, ppid } => {
                Kind::Exec(Exec { filename: filename.clone(), argv: argv.clone(), ppid: *ppid })
            }
            rec::EventKind::Fork { parent_pid, child_pid } => {
                Kind::Fork(Fork { parent_pid: *parent_pid, child_pid: *child_pid })
            }
            rec::EventKind::Exit { exit_code } => Kind::Exit(Exit { exit_code: *exit_code }),
            rec::EventKind::Lost { count, location } => Kind::Lost(Lost { count: *count, r#where: location.clone() }),
            rec::EventKind::Launch { name, role, argv } => {
                Kind::Launch(Launch { name: name.clone(), role: role.clone(), argv: argv.clone() })
            }
            rec::EventKind::Output { name, stream, line } => {
                Kind::Output(Output { name: name.clone(), stream: stream.clone(), line: line.clone() })
            }
            rec::EventKind::Gate { gate, action } => {
                Kind::Gate(GateHold { gate: gate.clone(), action: action.clone() })
            }
            rec::EventKind::Socket { local, remote, from_state, to_state } => Kind::Socket(Socket {
                local: local.clone(),
                remote: remote.clone(),
                from_state: from_state.clone(),
                to_state: to_state.clone(),
            }),
            rec::EventKind::Lock { call, op, fd, path, ret, enter_ns } => Kind::Lock(Lock {
                call: call.clone(),
                op: op.clone(),
                fd: *fd,
                path: path.clone().unwrap_or_default(),
                ret: *ret,
                enter_ns: *enter_ns,
            }),
            rec::EventKind::Cron { phase, crontab, crontab_line, command, job_pid, exit_code } => Kind::Cron(Cron {
                phase: phase.clone(),
                crontab: crontab.clone(),
                crontab_line: crontab_line.clone(),
                command: command.clone(),
                job_pid: *job_pid,
                exit_code: *exit_code,
            }),
            rec::EventKind::Attach { tracer, tracer_pid, target_pid, phase, how } => Kind::Attach(Attach {
                tracer: tracer.clone(),
                tracer_pid: *tracer_pid,
                target_pid: *target_pid,
                phase: phase.clone(),
                how: how.clone(),
            }),
            rec::EventKind::Traced { name, args, ret, enter_ns } => {
                Kind::Traced(Traced { name: name.clone(), args: args.clone(), ret: *ret, enter_ns: *enter_ns })
            }
            rec::EventKind::Mount { op, source, target, fstype, options, by_pid, by_comm } => Kind::Mount(Mount {
                op: op.clone(),
                source: source.clone(),
                target: target.clone(),
                fstype: fstype.clone(),
                options: options.clone(),
                by_pid: *by_pid,
                by_comm: by_comm.clone(),
            }),
        };
        Event { seq: e.seq, raw_ns: e.raw_ns, pid: e.pid, comm: e.comm.clone(), run: e.run, kind: Some(kind) }
    }
}

impl From<&rec::Environment> for Environment {
    fn from(e: &rec::Environment) -> Self {
        Environment {
            at: e.at.clone(),
            raw_ns: e.raw_ns,
            kernel: e.kernel.clone(),
            workdir: e.workdir.clone(),
            mounts: e
                .mounts
                .iter()
                .map(|m| MountEntry {
                    target: m.target.clone(),
                    source: m.source.clone(),
                    fstype: m.fstype.clone(),
                    options: m.options.clone(),
                })
                .collect(),
            crontabs: e.crontabs.iter().map(|c| Crontab { path: c.path.clone(), lines: c.lines.clone() }).collect(),
            daemons: e
                .daemons
                .iter()
                .map(|d| Daemon { pid: d.pid, comm: d.comm.clone(), cmdline: d.cmdline.clone() })
                .collect(),
            interfaces: e
                .interfaces
                .iter()
                .map(|i| Interface { name: i.name.clone(), state: i.state.clone(), addresses: i.addresses.clone() })
                .collect(),
            sysctls: e.sysctls.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        }
    }
}

impl From<Environment> for rec::Environment {
    fn from(e: Environment) -> Self {
        rec::Environment {
            at: e.at,
            raw_ns: e.raw_ns,
            kernel: e.kernel,
            workdir: e.workdir,
            mounts: e
                .mounts
                .into_iter()
                .map(|m| rec::MountEntry { target: m.target, source: m.source, fstype: m.fstype, options: m.options })
                .collect(),
            crontabs: e.crontabs.into_iter().map(|c| rec::Crontab { path: c.path, lines: c.lines }).collect(),
            daemons: e
                .daemons
                .into_iter()
                .map(|d| rec::Daemon { pid: d.pid, comm: d.comm, cmdline: d.cmdline })
                .collect(),
            interfaces: e
                .interfaces
                .into_iter()
                .map(|i| rec::Interface { name: i.name, state: i.state, addresses: i.addresses })
                .collect(),
            sysctls: e
                .sysctls
                .into_iter()
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (kv, String::new()),
                })
                .collect(),
        }
    }
}

/// A wire event that cannot become a domain event.
#[derive(Debug, PartialEq, Eq)]
pub struct MissingKind {
    pub seq: u64,
}

impl std::fmt::Display for MissingKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "event {} has no kind (agent newer than this coordinator?)", self.seq)
    }
}

impl TryFrom<Event> for rec::Event {
    type Error = MissingKind;

    fn try_from(e: Event) -> Result<Self, MissingKind> {
        use event::Kind;
        let kind = match e.kind.ok_or(MissingKind { seq: e.seq })? {
            Kind::Syscall(s) => rec::EventKind::Syscall {
                name: s.name,
                args: s.args,
                ret: s.ret,
                enter_ns: s.enter_ns,
                fd_path: Some(s.fd_path).filter(|p| !p.is_empty()),
            },
            Kind::Signal(s) => rec::EventKind::Signal {
                signal: s.signal,
                sender_pid: s.sender_pid,
                sender_comm: s.sender_comm,
                target_pid: s.target_pid,
                target_comm: s.target_comm,
                phase: if s.phase == "deliver" { rec::SignalPhase::Deliver } else { rec::SignalPhase::Generate },
                result: s.result,
            },
            Kind::Exec(x) => rec::EventKind::Exec { filename: x.filename, argv: x.argv, ppid: x.ppid },
            Kind::Fork(f) => rec::EventKind::Fork { parent_pid: f.parent_pid, child_pid: f.child_pid },
            Kind::Exit(x) => rec::EventKind::Exit { exit_code: x.exit_code },
            Kind::Lost(l) => rec::EventKind::Lost { count: l.count, location: l.r#where },
            Kind::Launch(l) => rec::EventKind::Launch { name: l.name, role: l.role, argv: l.argv },
            Kind::Output(o) => rec::EventKind::Output { name: o.name, stream: o.stream, line: o.line },
            Kind::Gate(g) => rec::EventKind::Gate { gate: g.gate, action: g.action },
            Kind::Socket(s) => rec::EventKind::Socket {
                local: s.local,
                remote: s.remote,
                from_state: s.from_state,
                to_state: s.to_state,
            },
            Kind::Lock(l) => rec::EventKind::Lock {
                call: l.call,
                op: l.op,
                fd: l.fd,
                path: Some(l.path).filter(|p| !p.is_empty()),
                ret: l.ret,
                enter_ns: l.enter_ns,
            },
            Kind::Cron(c) => rec::EventKind::Cron {
                phase: c.phase,
                crontab: c.crontab,
                crontab_line: c.crontab_line,
                command: c.command,
                job_pid: c.job_pid,
                exit_code: c.exit_code,
            },
            Kind::Attach(a) => rec::EventKind::Attach {
                tracer: a.tracer,
                tracer_pid: a.tracer_pid,
                target_pid: a.target_pid,
                phase: a.phase,
                how: a.how,
            },
            Kind::Traced(t) => rec::EventKind::Traced { name: t.name, args: t.args, ret: t.ret, enter_ns: t.enter_ns },
            Kind::Mount(m) => rec::EventKind::Mount {
                op: m.op,
                source: m.source,
                target: m.target,
                fstype: m.fstype,
                options: m.options,
                by_pid: m.by_pid,
                by_comm: m.by_comm,
            },
        };
        Ok(rec::Event { seq: e.seq, raw_ns: e.raw_ns, pid: e.pid, comm: e.comm, run: e.run, kind })
    }
}

impl From<&rec::GateSpec> for GatePoint {
    fn from(g: &rec::GateSpec) -> Self {
        let (arg_index, arg_equals, arg_at_least) = match (g.signal, g.fd_at_least) {
            (Some(sig), _) => (Some(1), Some(sig as u64), None),
            (None, Some(fd)) => (Some(0), None, Some(fd)),
            (None, None) => (None, None, None),
        };
        GatePoint {
            id: g.id(),
            syscall: g.syscall.clone(),
            nth: g.nth,
            arg_index,
            arg_equals,
            arg_at_least,
            path: g.path.clone(),
        }
    }
}

impl From<AgentInfo> for rec::AgentInfo {
    fn from(i: AgentInfo) -> Self {
        let c = i.capabilities.unwrap_or_default();
        rec::AgentInfo {
            name: i.name,
            version: i.version,
            kernel: i.kernel,
            pid: i.pid,
            capabilities: rec::Capabilities {
                root: c.root,
                kernel_tracing: c.kernel_tracing,
                ptrace: c.ptrace,
                seccomp_notify: c.seccomp_notify,
                tracing_unavailable_reason: c.tracing_unavailable_reason,
            },
        }
    }
}

impl From<CaptureStatus> for rec::CaptureStatus {
    fn from(s: CaptureStatus) -> Self {
        rec::CaptureStatus {
            capture_id: s.capture_id,
            recording: s.recording,
            events: s.events,
            lost: s.lost,
            observer: s.observer,
        }
    }
}

impl From<&rec::LaunchSpec> for LaunchRequest {
    fn from(l: &rec::LaunchSpec) -> Self {
        LaunchRequest {
            capture_id: l.capture_id.clone(),
            run: l.run,
            name: l.name.clone(),
            role: l.role.clone(),
            argv: l.argv.clone(),
            workdir: l.workdir.clone(),
            env: l.env.clone(),
            gates: l.gates.iter().map(GatePoint::from).collect(),
            hold_timeout_ms: l.hold_timeout_ms,
            ptrace: l.ptrace,
        }
    }
}

impl ProcessNotice {
    /// The domain notice, or None for a notice this side does not know (a newer agent's).
    pub fn into_domain(self) -> Option<rec::ProcessNotice> {
        Some(match self.notice? {
            process_notice::Notice::Started(s) => rec::ProcessNotice::Started { pid: s.pid, workdir: s.workdir },
            process_notice::Notice::Output(o) => rec::ProcessNotice::Output(o.line),
            process_notice::Notice::Exited(e) => rec::ProcessNotice::Exited { code: e.code, signal: e.signal },
        })
    }
}

impl From<GateNotice> for rec::Hold {
    fn from(n: GateNotice) -> Self {
        rec::Hold { hold_id: n.hold_id, gate: n.gate, process: n.process, pid: n.pid, run: n.run, raw_ns: n.raw_ns }
    }
}

impl GateCommand {
    /// Opens the gate channel of a capture (the first command on it).
    pub fn open(capture_id: &str) -> GateCommand {
        GateCommand { command: Some(gate_command::Command::OpenCapture(capture_id.into())) }
    }

    /// Releases a hold.
    pub fn release(hold_id: u64) -> GateCommand {
        GateCommand { command: Some(gate_command::Command::Release(Release { hold_id })) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_the_wire() {
        let kinds = vec![
            rec::EventKind::Syscall {
                name: "write".into(),
                args: vec![3, 0, 65536],
                ret: -13,
                enter_ns: 5,
                fd_path: Some("socket:[1]".into()),
            },
            rec::EventKind::Signal {
                signal: 1,
                sender_pid: 10,
                sender_comm: "remount".into(),
                target_pid: 11,
                target_comm: "exportd".into(),
                phase: rec::SignalPhase::Deliver,
                result: 0,
            },
            rec::EventKind::Lost { count: 3, location: "cpu0".into() },
            rec::EventKind::Gate { gate: "w:write#3".into(), action: "held".into() },
            rec::EventKind::Socket {
                local: "10.0.0.2:7070".into(),
                remote: "10.0.0.3:4242".into(),
                from_state: "SYN_RECV".into(),
                to_state: "ESTABLISHED".into(),
            },
            rec::EventKind::Lock {
                call: "flock".into(),
                op: "LOCK_EX".into(),
                fd: 3,
                path: Some("/var/lib/app.lock".into()),
                ret: -4,
                enter_ns: 1,
            },
            rec::EventKind::Attach {
                tracer: "ptrace".into(),
                tracer_pid: 5,
                target_pid: 6,
                phase: "attach".into(),
                how: "seize".into(),
            },
            rec::EventKind::Traced {
                name: "openat".into(),
                args: vec!["AT_FDCWD".into(), "\"/etc/hostname\"".into()],
                ret: 3,
                enter_ns: 1,
            },
            rec::EventKind::Cron {
                phase: "end".into(),
                crontab: "/c/root".into(),
                crontab_line: "* * * * * pickup".into(),
                command: "pickup".into(),
                job_pid: 4,
                exit_code: Some(3),
            },
            rec::EventKind::Mount {
                op: "mount".into(),
                source: "tmpfs".into(),
                target: "/dev/shm".into(),
                fstype: "tmpfs".into(),
                options: "rw".into(),
                by_pid: 9,
                by_comm: "mount".into(),
            },
        ];
        for (seq, kind) in kinds.into_iter().enumerate() {
            let event = rec::Event { seq: seq as u64, raw_ns: 42, pid: 7, comm: "c".into(), run: 2, kind };
            let wire = Event::from(&event);
            assert_eq!(rec::Event::try_from(wire).unwrap(), event);
        }
        assert_eq!(rec::Event::try_from(Event::default()), Err(MissingKind { seq: 0 }));
    }

    #[test]
    fn environments_round_trip_through_the_wire() {
        let env = rec::Environment {
            at: "run 2".into(),
            raw_ns: 5,
            kernel: "6.18".into(),
            workdir: "/w".into(),
            mounts: vec![rec::MountEntry {
                target: "/dev/shm".into(),
                source: "tmpfs".into(),
                fstype: "tmpfs".into(),
                options: "rw".into(),
            }],
            crontabs: vec![rec::Crontab { path: "/c/root".into(), lines: vec!["* * * * * x".into()] }],
            daemons: vec![rec::Daemon { pid: 3, comm: "statd".into(), cmdline: "statd -F".into() }],
            interfaces: vec![rec::Interface { name: "lo".into(), state: "unknown".into(), addresses: vec![] }],
            sysctls: vec![("kernel.pid_max".into(), "4194304".into())],
        };
        assert_eq!(rec::Environment::from(Environment::from(&env)), env);
    }
}
