//! Alignment, shared by explain (phase 3) and replay: the key events of every run grouped by
//! *signature* — who (the role: a scenario process, or a cron job of one) did what (`kill(SIGHUP)`,
//! `write(fd>=3)`, `prints "reloading exports"`) — with each signature's first and last
//! occurrence per run, so that runs can be compared signature by signature.
//!
//! Two occurrences are ordered by `(host, seq)` on one host and by disjoint clock intervals across
//! hosts; otherwise they are concurrent ([`before`] says `None`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use heisen_recordings::{errno_name, signal_name, Bundle, Event, EventKind, Interval, Scenario, SignalPhase};

use crate::error::Unverifiable;

/// Who a process is: a scenario process (and its children) or a cron job started by one.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Role {
    pub(crate) host: usize,
    /// The scenario service or step the process descends from.
    pub(crate) process: String,
    /// Set when the process descends from a cron job of that service: the job's command.
    pub(crate) cron_command: Option<String>,
}

impl Role {
    pub(crate) fn label(&self) -> String {
        match &self.cron_command {
            Some(_) => format!("{}'s cron job", self.process),
            None => self.process.clone(),
        }
    }
}

/// How much an event can act on other processes (the tie-break prior).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Class {
    Output = 1,
    /// An exec changes only its own process, and it comes before that process's own calls: when
    /// both separate equally, the call (which a gate can hold) is the cause, not the birth.
    Exec = 2,
    Syscall = 3,
    SignalReceived = 4,
    Lock = 5,
    Cron = 6,
    Mount = 7,
    SignalSent = 8,
}

/// A kind of event of one role, aligned across runs by this signature.
#[derive(Clone, Debug)]
pub(crate) struct Sig {
    pub(crate) role: Role,
    /// `kill(SIGHUP)`, `write(fd>=3)`, `prints "reloading exports"`, ...
    pub(crate) what: String,
    pub(crate) class: Class,
    /// How a gate would hold it: syscall, signal, fd_at_least.
    pub(crate) gate: Option<(String, Option<i32>, Option<u64>)>,
    /// The file it acts on, as a path template the same in every run (`{shared}/app-{run}.json`):
    /// part of the signature, and the gate's path.
    pub(crate) object: Option<String>,
    /// The file a rename or link makes (its second path), as a template.
    pub(crate) target: Option<String>,
}

/// One occurrence of a signature in a run.
#[derive(Clone, Debug)]
pub(crate) struct Occ {
    pub(crate) host: usize,
    pub(crate) seq: u64,
    pub(crate) at: Interval,
    /// Target pid of a kill, for the cause's effect.
    pub(crate) target: Option<i32>,
    /// The file or object the event is about (lock path).
    pub(crate) item: Option<String>,
    pub(crate) ret: i64,
    pub(crate) desc: String,
}

/// Per run: each signature's first and last occurrence and count.
#[derive(Debug, Default)]
pub(crate) struct RunSigs {
    pub(crate) first: BTreeMap<usize, Occ>,
    pub(crate) last: BTreeMap<usize, Occ>,
    pub(crate) count: BTreeMap<usize, u32>,
    /// Every occurrence of signatures a gate can hold, in recording order per host.
    pub(crate) gateable: BTreeMap<usize, Vec<Occ>>,
    /// Every lock occurrence, for items.
    pub(crate) locks: Vec<(usize, Occ)>,
    /// Output lines of services, in time order: (role, line, occurrence).
    pub(crate) outputs: Vec<(Role, String, Occ)>,
    /// pid -> role on each host.
    pub(crate) roles: HashMap<(usize, i32), Role>,
    /// Where a stream of writes really begins: the same process's connect before its first write
    /// (a server serves a connection from its connect on, before the first byte arrives).
    pub(crate) begin: BTreeMap<usize, Occ>,
    /// ... and where it ends: that process closing its connection after its last write (the
    /// peer is still serving it until then).
    pub(crate) end: BTreeMap<usize, Occ>,
    /// Where each launched process (a step or service by its role) exited, when it did.
    pub(crate) exits: BTreeMap<Role, Occ>,
    /// When the run's first event of a scenario process happened (midpoint, ns).
    pub(crate) origin_ns: Option<i64>,
    /// TCP connections each role closed (ESTABLISHED or CLOSE_WAIT to FIN_WAIT1 or LAST_ACK).
    pub(crate) closes: Vec<(Role, Occ)>,
    /// Launched processes a signal ended, where they died.
    pub(crate) killed: BTreeMap<Role, Occ>,
    /// The roles launched as steps (they end by themselves; services are stopped after them).
    pub(crate) steps: BTreeSet<Role>,
    /// Signatures this run lacks because a signal ended their process while the run's steps
    /// were still running (the daemon a SIGHUP ended before it installed its handler): where it
    /// died. "A before B" holds when A came before that death.
    pub(crate) cut_short: BTreeMap<usize, Occ>,
}

/// Phase 3's result.
pub(crate) struct Aligned {
    pub(crate) sigs: Vec<Sig>,
    pub(crate) runs: BTreeMap<u32, RunSigs>,
}

/// Where the symptom begins in each failing run: the first occurrence of a signature that every
/// failing run has and no passing run has (the error, the timeout message). What a run does after
/// it is its reaction to the failure (retries, diagnostics, a debugger attaching), not its cause,
/// and would stretch the failing runs' streams. Empty when there are no passing runs to tell.
///
/// Only the roles that show a symptom react to it: another process (the deploy job on another
/// host still writing the file the failing reader read half of) goes on as in any run, and its
/// events after the onset are kept.
pub(crate) fn symptom_onsets(aligned: &Aligned, failing: &[u32]) -> Cuts {
    let passing: Vec<&RunSigs> = aligned.runs.iter().filter(|(r, _)| !failing.contains(r)).map(|(_, rs)| rs).collect();
    let failing_runs: Vec<(u32, &RunSigs)> = failing.iter().filter_map(|r| Some((*r, aligned.runs.get(r)?))).collect();
    if passing.is_empty() || failing_runs.is_empty() {
        return BTreeMap::new();
    }
    // A call that acted on a named file and succeeded is something a process did, not the
    // failure showing: a janitor's delete of a file in flight happens only in failing runs
    // because it is the cause, and what the victim does after it must stay in view.
    let acted = |s: usize| {
        let sig = &aligned.sigs[s];
        sig.gate.is_some()
            && sig.object.is_some()
            && failing_runs.iter().all(|(_, rs)| rs.first.get(&s).is_some_and(|o| o.ret >= 0))
    };
    let symptoms: Vec<usize> = (0..aligned.sigs.len())
        .filter(|s| passing.iter().all(|rs| !rs.first.contains_key(s)))
        .filter(|s| failing_runs.iter().all(|(_, rs)| rs.first.contains_key(s)))
        .filter(|s| !acted(*s))
        .collect();
    let roles: BTreeSet<Role> = symptoms.iter().map(|s| aligned.sigs[*s].role.clone()).collect();
    failing_runs
        .iter()
        .filter_map(|(r, rs)| {
            let at = symptoms.iter().filter_map(|s| Some(rs.first.get(s)?.at.midpoint_ns())).min()?;
            Some((*r, Cut { at, roles: roles.clone() }))
        })
        .collect()
}

/// Where a failing run's symptom begins, and whose events after it are its reaction.
#[derive(Clone, Debug)]
pub(crate) struct Cut {
    pub(crate) at: i64,
    pub(crate) roles: BTreeSet<Role>,
}

impl Cut {
    /// Whether an event of `role` at `ns` is after the cut.
    fn drops(&self, role: &Role, ns: i64) -> bool {
        ns > self.at && self.roles.contains(role)
    }
}

/// The cut of each failing run that has one.
pub(crate) type Cuts = BTreeMap<u32, Cut>;

/// Phase 3: key events of every valid run, grouped by signature; in a run with a cut, key events
/// after it are left out (service output is kept: the effect of a cause may outlast the cut).
pub(crate) fn align(bundle: &Bundle, valid: &[u32], cuts: &Cuts) -> Aligned {
    let mut index: BTreeMap<(Role, String), usize> = BTreeMap::new();
    let mut sigs: Vec<Sig> = Vec::new();
    let places = Places::of(bundle);
    let mut runs: BTreeMap<u32, RunSigs> = valid.iter().map(|r| (*r, RunSigs::default())).collect();
    for (h, rec) in bundle.hosts.iter().enumerate() {
        let mut roles: HashMap<i32, Role> = HashMap::new();
        let mut launched: std::collections::HashSet<i32> = Default::default();
        // A shim's exec (superseded by the same process's next) says nothing of the program.
        let shims = heisen_recordings::superseded_execs(&rec.events);
        for e in rec.events.iter().filter(|e| !shims.contains(&e.seq)) {
            assign_role(h, e, &mut roles);
            let Some(rs) = runs.get_mut(&e.run) else { continue };
            let Some(role) = roles.get(&e.pid).cloned() else { continue };
            rs.roles.insert((h, e.pid), role.clone());
            let mid = rec.clock.interval(e.raw_ns).midpoint_ns();
            rs.origin_ns = Some(rs.origin_ns.map_or(mid, |o| o.min(mid)));
            match &e.kind {
                EventKind::Launch { role: kind, .. } => {
                    launched.insert(e.pid);
                    if kind == "step" {
                        rs.steps.insert(role.clone());
                    }
                }
                EventKind::Exit { exit_code, killed_by } if launched.contains(&e.pid) => {
                    let at = rec.clock.interval(e.raw_ns);
                    let desc = format!("exit {exit_code}");
                    let occ = Occ { host: h, seq: e.seq, at, target: None, item: None, ret: 0, desc };
                    if killed_by.is_some() {
                        rs.killed.insert(role.clone(), occ.clone());
                    }
                    rs.exits.insert(role.clone(), occ);
                }
                _ => {}
            }
            if let EventKind::Fork { child_pid, .. } = &e.kind {
                rs.roles.insert((h, *child_pid), role.clone());
            }
            if let EventKind::Socket { from_state, to_state, .. } = &e.kind {
                let closing = matches!(from_state.as_str(), "ESTABLISHED" | "CLOSE_WAIT")
                    && matches!(to_state.as_str(), "FIN_WAIT1" | "LAST_ACK");
                if closing
                    && cuts.get(&e.run).is_none_or(|cut| !cut.drops(&role, rec.clock.interval(e.raw_ns).midpoint_ns()))
                {
                    let at = rec.clock.interval(e.raw_ns);
                    let occ = Occ { host: h, seq: e.seq, at, target: None, item: None, ret: 0, desc: String::new() };
                    rs.closes.push((role.clone(), occ));
                }
            }
            let Some((mut what, class, gate, desc)) = key_of(e) else { continue };
            let object = gate.as_ref().and_then(|_| places.object(e));
            let makes = places.target(e);
            if let Some(o) = &object {
                let to = what.starts_with("connect");
                what = format!("{what} {} {o}", if to { "to" } else { "on" });
            }
            let at = rec.clock.interval(e.raw_ns);
            let (target, item, ret) = match &e.kind {
                EventKind::Syscall { name, args, ret, .. } if name.contains("kill") => {
                    (args.first().map(|p| *p as i32), None, *ret)
                }
                EventKind::Syscall { ret, .. } | EventKind::Traced { ret, .. } => (None, None, *ret),
                EventKind::Lock { path, ret, .. } => (None, path.clone(), *ret),
                _ => (None, None, 0),
            };
            let occ = Occ { host: h, seq: e.seq, at, target, item, ret, desc };
            if let EventKind::Output { line, .. } = &e.kind {
                rs.outputs.push((role.clone(), line.clone(), occ.clone()));
            }
            if cuts.get(&e.run).is_some_and(|cut| cut.drops(&role, occ.at.midpoint_ns())) {
                continue;
            }
            let key = (role.clone(), what.clone());
            let id = *index.entry(key).or_insert_with(|| {
                sigs.push(Sig { role: role.clone(), what, class, gate, object, target: makes });
                sigs.len() - 1
            });
            if matches!(e.kind, EventKind::Lock { .. }) {
                rs.locks.push((id, occ.clone()));
            }
            if sigs[id].gate.is_some() {
                rs.gateable.entry(id).or_default().push(occ.clone());
            }
            rs.first.entry(id).or_insert_with(|| occ.clone());
            *rs.count.entry(id).or_default() += 1;
            rs.last.insert(id, occ);
        }
    }
    for rs in runs.values_mut() {
        rs.outputs.sort_by_key(|(_, _, o)| o.at.earliest_ns);
        // A process a signal ended while a step still ran (not the coordinator stopping the
        // run's services after its steps): the calls it would have made later never came.
        let last_step_exit =
            rs.exits.iter().filter(|(r, _)| rs.steps.contains(*r)).map(|(_, o)| o).max_by_key(|o| o.at.latest_ns);
        for (role, death) in &rs.killed {
            if last_step_exit.is_none_or(|end| before(death, end) != Some(true)) {
                continue;
            }
            for (b, sb) in sigs.iter().enumerate() {
                if sb.role == *role && !rs.first.contains_key(&b) {
                    rs.cut_short.insert(b, death.clone());
                }
            }
        }
        for (b, sb) in sigs.iter().enumerate() {
            if let (Some(c), Some(first)) = (connection_of(&sigs, b), rs.first.get(&b)) {
                if let Some(at) = rs.first.get(&c).filter(|o| o.host == first.host && o.seq < first.seq) {
                    rs.begin.insert(b, at.clone());
                    let last_seq = rs.last.get(&b).map(|o| o.seq).unwrap_or(first.seq);
                    let close = rs
                        .closes
                        .iter()
                        .filter(|(r, o)| *r == sb.role && o.host == first.host && o.seq > last_seq)
                        .min_by_key(|(_, o)| o.seq);
                    if let Some((_, o)) = close {
                        rs.end.insert(b, o.clone());
                    }
                    if let Some(o) = file_close_of(&sigs, b).and_then(|c| rs.last.get(&c)) {
                        if o.host == first.host && o.seq > last_seq {
                            rs.end.insert(b, o.clone());
                        }
                    }
                }
            }
        }
    }
    Aligned { sigs, runs }
}

fn gate_is(s: &Sig, names: &[&str]) -> bool {
    s.gate.as_ref().is_some_and(|g| names.contains(&g.0.as_str()))
}

/// Calls on an open file's fd: a stream of them runs from the file's open to its close.
pub(crate) const FILE_FD_CALLS: &[&str] =
    &["read", "pread64", "readv", "preadv", "write", "pwrite64", "writev", "fsync", "fdatasync", "ftruncate"];

/// Where a stream of calls begins: for calls over a connection (write, sendto, recvfrom, ...)
/// the same role's `connect`; for calls on a file's fd the same role's open of that file.
pub(crate) fn connection_of(sigs: &[Sig], b: usize) -> Option<usize> {
    let s = &sigs[b];
    if s.object.is_some() && gate_is(s, FILE_FD_CALLS) {
        return file_open_of(sigs, b);
    }
    if s.object.is_some() || !gate_is(s, &["write", "sendto", "sendmsg", "recvfrom", "recvmsg"]) {
        return None;
    }
    sigs.iter().position(|c| c.role == s.role && gate_is(c, &["connect"]))
}

/// Where a process's use of a file begins: its open of that file, for a call on the file's fd
/// (a read, a write, the close).
pub(crate) fn file_open_of(sigs: &[Sig], b: usize) -> Option<usize> {
    let s = &sigs[b];
    (s.object.is_some() && (gate_is(s, FILE_FD_CALLS) || gate_is(s, &["close"])))
        .then(|| {
            sigs.iter().position(|c| {
                c.role == s.role && c.object == s.object && gate_is(c, &["open", "openat", "openat2", "creat"])
            })
        })
        .flatten()
}

/// Where a stream of calls on a file ends: the same role's close of that file.
fn file_close_of(sigs: &[Sig], b: usize) -> Option<usize> {
    let s = &sigs[b];
    (s.object.is_some() && gate_is(s, FILE_FD_CALLS))
        .then(|| sigs.iter().position(|c| c.role == s.role && c.object == s.object && gate_is(c, &["close"])))?
}

/// What the capture's placeholders stood for, to turn recorded paths into templates.
struct Places {
    /// Bundles written before placeholders were kept: no objects (a literal capture directory
    /// would make a gate that never matches in a later capture).
    known: bool,
    shared: Option<String>,
    /// `{port}`: the capture's TCP port.
    port: Option<String>,
    /// `{host:NAME}`: each host's address, as (address, name).
    hosts: Vec<(String, String)>,
}

/// Trees of the system's own files: opening them is a program loading, not the test's state.
const SYSTEM_TREES: &[&str] = &["/usr/", "/lib/", "/lib32/", "/lib64/", "/bin/", "/sbin/", "/etc/", "/sys/", "/dev/"];

impl Places {
    fn of(bundle: &Bundle) -> Places {
        let p = &bundle.placeholders;
        let hosts = p.iter().filter_map(|(k, v)| Some((v.clone(), k.strip_prefix("host:")?.to_string()))).collect();
        Places { known: !p.is_empty(), shared: p.get("shared").cloned(), port: p.get("port").cloned(), hosts }
    }

    /// The address a connect or bind names, as a template: `{host:node}:{port}`,
    /// `0.0.0.0:{port}`. Only addresses on the capture's `{port}` are named: another port may be
    /// chosen afresh in every run (an ephemeral one), and a gate naming it would never match.
    fn address(&self, addr: &str) -> Option<String> {
        let (host, port) = addr.rsplit_once(':')?;
        if Some(port) != self.port.as_deref() {
            return None;
        }
        // A host's name only when the address is that host's alone (loopback hosts share one).
        let named: Vec<&String> = self.hosts.iter().filter(|(a, _)| a == host).map(|(_, n)| n).collect();
        let host = match named.as_slice() {
            [name] => format!("{{host:{name}}}"),
            _ => host.to_string(),
        };
        Some(format!("{host}:{{port}}"))
    }

    /// The file a call acts on, as a template: `{shared}` for the capture's shared directory,
    /// `{run}` for the run number in a name under it. None for calls on no file, on sockets and
    /// pipes, on the system's own trees, on another process's /proc entries, and (for now) on
    /// files outside `{shared}`.
    fn object(&self, e: &Event) -> Option<String> {
        let EventKind::Syscall { name, strings, fd_path, addr, .. } = &e.kind else { return None };
        if !self.known {
            return None;
        }
        // A sendto keeps no object: a datagram probe and the sends on a connection made just
        // before are one stream of the process's sends, and splitting them by address made the
        // connection's own ping a rival of its connect (story 2 on loopback ranked it first).
        if name == "connect" || name == "bind" {
            return self.address(addr.as_deref()?);
        }
        let raw = if FILE_FD_CALLS.contains(&name.as_str()) || name == "close" {
            // `/a.tmp (renamed to /a)`, `/x (deleted)`: the path the fd was opened with.
            fd_path.as_deref()?.split(" (").next()?
        } else {
            strings.first()?.as_str()
        };
        self.template(raw, e.run)
    }

    /// The file a rename or link makes (its second path), as a template like [`Places::object`].
    fn target(&self, e: &Event) -> Option<String> {
        let EventKind::Syscall { name, strings, .. } = &e.kind else { return None };
        if !self.known || !(name.starts_with("rename") || name.starts_with("link")) {
            return None;
        }
        self.template(strings.get(1)?, e.run)
    }

    fn template(&self, raw: &str, run: u32) -> Option<String> {
        if !raw.starts_with('/') || SYSTEM_TREES.iter().any(|t| raw.starts_with(t)) {
            return None;
        }
        if raw.strip_prefix("/proc/").is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit())) {
            return None;
        }
        let under = |dir: &str| raw.strip_prefix(dir).filter(|rest| rest.starts_with('/')).map(str::to_string);
        // For now only files under `{shared}` (what hosts share, where cross-host races on files
        // live) are named: objects elsewhere are not yet proven against the seed stories' gates
        // (a FUSE file under `{workdir}`, /proc/self/mountinfo).
        let rest = self.shared.as_deref().and_then(under)?;
        Some(run_placeholder(&format!("{{shared}}{rest}"), run))
    }
}

/// `{run}` for every number in `path` that is the run's: `app-3.json` in run 3 is `app-{run}.json`.
fn run_placeholder(path: &str, run: u32) -> String {
    let run = run.to_string();
    let mut out = String::with_capacity(path.len());
    let mut digits = String::new();
    for c in path.chars().chain(std::iter::once('\0')) {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        if !digits.is_empty() {
            out.push_str(if digits == run { "{run}" } else { &digits });
            digits.clear();
        }
        if c != '\0' {
            out.push(c);
        }
    }
    out
}

pub(crate) fn assign_role(host: usize, e: &Event, roles: &mut HashMap<i32, Role>) {
    match &e.kind {
        EventKind::Launch { name, .. } => {
            roles.insert(e.pid, Role { host, process: name.clone(), cron_command: None });
        }
        EventKind::Fork { parent_pid, child_pid } => {
            if let Some(r) = roles.get(parent_pid).or(roles.get(&e.pid)).cloned() {
                roles.insert(*child_pid, r);
            }
        }
        EventKind::Cron { phase, command, job_pid, .. } if phase == "start" => {
            if let Some(r) = roles.get(job_pid).or(roles.get(&e.pid)).cloned() {
                roles.insert(*job_pid, Role { cron_command: Some(command.clone()), ..r });
            }
        }
        _ => {}
    }
}

pub(crate) type Key = (String, Class, Option<(String, Option<i32>, Option<u64>)>, String);

/// The signature of an event worth aligning, or None for the rest (plain successful syscalls that
/// no gate can hold, stdio writes, ...).
pub(crate) fn key_of(e: &Event) -> Option<Key> {
    let errno = |ret: i64| {
        (ret < 0).then(|| {
            errno_name(ret.saturating_neg())
                .map(str::to_string)
                .unwrap_or_else(|| format!("errno {}", ret.saturating_neg()))
        })
    };
    match &e.kind {
        EventKind::Syscall { name, args, ret, fd_path, .. } => {
            let gateable = heisen_recordings::gateable(name);
            let arg = |i: usize| args.get(i).copied().unwrap_or(0);
            // A handler installed (or SIG_IGN, SIG_DFL): "the signal came before the handler".
            // A query (no new action) says nothing.
            if name == "rt_sigaction" {
                let sig = arg(0) as i32;
                if sig <= 0 || arg(1) == 0 || *ret < 0 {
                    return None;
                }
                let what = format!("rt_sigaction({})", signal_name(sig));
                let desc = format!("{what}: sets its disposition");
                return Some((what, Class::Syscall, Some((name.clone(), Some(sig), None)), desc));
            }
            if name == "kill" || name == "tgkill" || name == "tkill" {
                let sig = heisen_recordings::signal_arg(name).map_or(0, arg) as i32;
                if sig == 0 {
                    return None;
                }
                let what = format!("{name}({})", signal_name(sig));
                let desc =
                    format!("{what} to pid {}{}", arg(0), errno(*ret).map(|e| format!(" = {e}")).unwrap_or_default());
                return Some((what, Class::SignalSent, Some((name.clone(), Some(sig), None)), desc));
            }
            let fd_call = matches!(name.as_str(), "write" | "pwrite64" | "sendto" | "sendmsg" | "recvfrom" | "recvmsg");
            // Stdio on the agent's pipes is what the output events carry. A shell's `echo x >
            // file` writes fd 1 too, but to a file: that write is the file's.
            let to_file = fd_path.as_deref().is_some_and(|p| p.starts_with('/') && !p.starts_with("/dev/"));
            if fd_call && arg(0) < 3 && !to_file {
                return None;
            }
            let class = if name == "mount" || name == "umount2" { Class::Mount } else { Class::Syscall };
            let fd_at_least = ((fd_call && arg(0) >= 3) || name == "connect").then_some(3);
            let err = errno(*ret);
            if !gateable && err.is_none() {
                return None;
            }
            let mut what =
                if fd_at_least.is_some() && name != "connect" { format!("{name}(fd>=3)") } else { name.clone() };
            if !gateable {
                what = format!("{what} = {}", err.clone().unwrap_or_default());
            }
            let on = fd_path.as_ref().map(|p| format!(" on {p}")).unwrap_or_default();
            let desc = format!("{name}{on}{}", err.map(|e| format!(" = {e}")).unwrap_or_default());
            Some((what, class, gateable.then(|| (name.clone(), None, fd_at_least)), desc))
        }
        EventKind::Traced { name, args, ret, .. } => {
            let err = errno(*ret)?;
            let what = format!("{name} = {err}");
            Some((what.clone(), Class::Syscall, None, format!("{name}({}) = {err}", args.join(", "))))
        }
        EventKind::Signal { signal, phase: SignalPhase::Deliver, sender_comm, .. } => {
            let what = format!("receives {}", signal_name(*signal));
            let desc = format!("{what} (sent by {sender_comm})");
            Some((what, Class::SignalReceived, None, desc))
        }
        EventKind::Lock { call, op, path, ret, .. } => {
            let what = format!("{call} {op}");
            let desc = format!(
                "{call}({op}) on {}{}",
                path.as_deref().unwrap_or("?"),
                errno(*ret).map(|e| format!(" = {e}")).unwrap_or_default()
            );
            Some((what, Class::Lock, Some((call.clone(), None, None)), desc))
        }
        EventKind::Mount { op, fstype, target, .. } => {
            let what = format!("{op} {fstype}");
            Some((what.clone(), Class::Mount, None, format!("{what} on {target}")))
        }
        EventKind::Cron { phase, crontab_line, .. } if phase == "start" => {
            Some(("cron job starts".into(), Class::Cron, None, format!("cron job starts: {crontab_line}")))
        }
        EventKind::Exec { filename, .. } => {
            let base = filename.rsplit('/').next().unwrap_or(filename).to_string();
            Some((format!("exec {base}"), Class::Exec, None, format!("exec {filename}")))
        }
        EventKind::Output { line, .. } => {
            let text = stable_text(line);
            if text.is_empty() {
                return None;
            }
            Some((format!("prints \"{text}\""), Class::Output, None, format!("prints \"{line}\"")))
        }
        _ => None,
    }
}

/// The part of an output line that is the same in every run: up to its first digit.
pub(crate) fn stable_text(line: &str) -> String {
    let cut = line.find(|c: char| c.is_ascii_digit()).unwrap_or(line.len());
    line[..cut].trim().trim_end_matches([':', '(', '#', '-', '=']).trim().to_string()
}

/// Ordering of two occurrences: Some(true) when `x` is before `y`, Some(false) when after, None
/// when the clocks cannot tell (concurrent).
pub(crate) fn before(x: &Occ, y: &Occ) -> Option<bool> {
    if x.host == y.host {
        return Some(x.seq < y.seq);
    }
    if x.at.before(&y.at) {
        Some(true)
    } else if y.at.before(&x.at) {
        Some(false)
    } else {
        None
    }
}

/// The process a role's gate can hold: a scenario step or service, or the step that runs a cron
/// job's command by hand on the same host.
pub(crate) fn gate_step(bundle: &Bundle, scenario: Option<&Scenario>, role: &Role) -> Result<String, Unverifiable> {
    let s = scenario.ok_or(Unverifiable::NoScenario)?;
    let host = &bundle.hosts[role.host].name;
    match &role.cron_command {
        None => s
            .process(&role.process)
            .map(|p| p.name.clone())
            .ok_or_else(|| Unverifiable::NoProcess { process: role.process.clone() }),
        Some(_) => {
            // The cron daemon's service carries the crontab line: a step on the same host whose
            // command starts with that line's command runs the job by hand.
            let service =
                s.process(&role.process).ok_or_else(|| Unverifiable::NoProcess { process: role.process.clone() })?;
            let lines: Vec<Vec<String>> = service
                .command
                .iter()
                .filter_map(|arg| heisen_recordings::crontab_command("", arg))
                .map(|cmd| cmd.split_whitespace().map(str::to_string).collect())
                .collect();
            s.steps
                .iter()
                .find(|p| &p.host == host && lines.iter().any(|l| !l.is_empty() && p.command.starts_with(l)))
                .map(|p| p.name.clone())
                .ok_or_else(|| Unverifiable::NoCronStep { host: host.clone(), process: role.process.clone() })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_number_in_a_shared_name_becomes_a_placeholder() {
        assert_eq!(run_placeholder("{shared}/app-3.json", 3), "{shared}/app-{run}.json");
        assert_eq!(run_placeholder("{shared}/cache-12.tmp", 12), "{shared}/cache-{run}.tmp");
        // Only whole numbers equal to the run: 13 is not run 3, v2 stays.
        assert_eq!(run_placeholder("{shared}/v2/app-13", 3), "{shared}/v2/app-13");
        assert_eq!(run_placeholder("{shared}/3", 3), "{shared}/{run}");
    }

    #[test]
    fn objects_are_files_under_shared_only() {
        let places = Places {
            known: true,
            shared: Some("/mnt/s".into()),
            port: Some("4711".into()),
            hosts: vec![("10.0.0.2".into(), "node".into())],
        };
        let call = |name: &str, strings: &[&str], fd_path: Option<&str>| Event {
            seq: 1,
            raw_ns: 0,
            pid: 1,
            comm: "c".into(),
            run: 4,
            kind: EventKind::Syscall {
                name: name.into(),
                args: vec![],
                ret: 0,
                enter_ns: 0,
                fd_path: fd_path.map(str::to_string),
                strings: strings.iter().map(|s| s.to_string()).collect(),
                addr: None,
                path_from: None,
            },
        };
        let object = |e: Event| places.object(&e);
        assert_eq!(object(call("openat", &["/mnt/s/app-4.json"], None)).as_deref(), Some("{shared}/app-{run}.json"));
        assert_eq!(
            object(call("write", &[], Some("/mnt/s/app-4.json.tmp (renamed to /mnt/s/app-4.json)"))).as_deref(),
            Some("{shared}/app-{run}.json.tmp")
        );
        assert_eq!(object(call("openat", &["/usr/lib/libc.so.6"], None)), None, "a system tree");
        assert_eq!(object(call("openat", &["/var/lib/app/x"], None)), None, "outside {{shared}}, for now");
        assert_eq!(object(call("openat", &["/mnt/sx/app"], None)), None, "a sibling of the shared dir");
        assert_eq!(object(call("write", &[], Some("socket:[123]"))), None);
        // A socket call's address on the capture's port, with the host named.
        let at = |name: &str, addr: &str| {
            let mut e = call(name, &[], None);
            if let EventKind::Syscall { addr: a, .. } = &mut e.kind {
                *a = Some(addr.to_string());
            }
            places.object(&e)
        };
        assert_eq!(at("connect", "10.0.0.2:4711").as_deref(), Some("{host:node}:{port}"));
        assert_eq!(at("bind", "0.0.0.0:4711").as_deref(), Some("0.0.0.0:{port}"));
        assert_eq!(at("connect", "10.0.0.2:39112"), None, "another port may be new in every run");
        assert_eq!(at("sendto", "10.0.0.2:4711"), None, "a send is its stream's, not its address's");
        let loopback = Places {
            hosts: vec![("127.0.0.1".into(), "a".into()), ("127.0.0.1".into(), "b".into())],
            ..Places { known: true, shared: None, port: Some("4711".into()), hosts: vec![] }
        };
        let mut e = call("connect", &[], None);
        if let EventKind::Syscall { addr, .. } = &mut e.kind {
            *addr = Some("127.0.0.1:4711".into());
        }
        assert_eq!(loopback.object(&e).as_deref(), Some("127.0.0.1:{port}"), "hosts sharing an address");
        let old = Places { known: false, shared: Some("/mnt/s".into()), port: None, hosts: vec![] };
        assert_eq!(old.object(&call("openat", &["/mnt/s/app-4.json"], None)), None, "an older bundle");
    }
}
