//! Events about the host rather than one call: cron jobs (an exec under a cron daemon, matched to
//! its crontab line), TCP state changes of this host's sockets, and mount-table changes.

use heisen_recordings::EventKind;

use super::{Decoded, Decoder, Step, MOUNT_ATTRIBUTION_NS};
use crate::tracefs::TraceLine;

/// Names of cron daemons: an exec whose parent has one of these names is a cron job.
const CRON_DAEMONS: &[&str] = &["crond", "cron"];

/// TCP transitions worth recording: each pairs with a transition of the peer socket, which gives
/// a causal edge across hosts (see `heisen_recordings::recorded_edges`).
const SOCKET_TRANSITIONS: &[(&str, &str)] = &[
    ("SYN_SENT", "ESTABLISHED"),
    ("SYN_RECV", "ESTABLISHED"),
    ("ESTABLISHED", "FIN_WAIT1"),
    ("ESTABLISHED", "CLOSE_WAIT"),
    ("CLOSE_WAIT", "LAST_ACK"),
    ("FIN_WAIT2", "TIME_WAIT"),
];
impl Decoder {
    /// An exec under a cron daemon: the job's start, matched to its crontab line.
    pub(super) fn cron_start(&mut self, pid: i32, ppid: i32, argv: &[String]) -> Option<EventKind> {
        let parent = std::fs::read_to_string(format!("/proc/{ppid}/comm")).ok()?;
        if !CRON_DAEMONS.contains(&parent.trim_end()) {
            return None;
        }
        // Cron runs `sh -c COMMAND`.
        let command = match argv {
            [_, flag, command, ..] if flag == "-c" => command.clone(),
            _ => argv.join(" "),
        };
        let mut dirs = self.crontab_dirs.clone();
        // busybox crond -c DIR: the daemon's own crontab directory.
        let daemon_args: Vec<String> = std::fs::read(format!("/proc/{ppid}/cmdline"))
            .map(|raw| raw.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect())
            .unwrap_or_default();
        if let Some(i) = daemon_args.iter().position(|a| a == "-c") {
            if let Some(dir) = daemon_args.get(i + 1) {
                dirs.push(dir.into());
            }
        }
        let (crontab, line) = crate::environment::crontabs(&dirs)
            .into_iter()
            .flat_map(|c| c.lines.into_iter().map(move |l| (c.path.clone(), l)))
            .find(|(path, line)| heisen_recordings::crontab_command(path, line).as_deref() == Some(command.trim()))
            .unwrap_or_default();
        self.cron_jobs.insert(pid, (crontab.clone(), line.clone(), command.clone()));
        Some(EventKind::Cron {
            phase: "start".into(),
            crontab,
            crontab_line: line,
            command,
            job_pid: pid,
            exit_code: None,
        })
    }
    pub(super) fn socket(&mut self, line: &TraceLine<'_>) -> Step {
        let tcp_v4 = matches!(line.text("protocol").as_deref(), Some("IPPROTO_TCP") | Some("6"))
            && matches!(line.text("family").as_deref(), Some("AF_INET") | Some("2"));
        if self.local_addrs.is_empty() || !tcp_v4 {
            return Step::Nothing;
        }
        let field_text = |key: &str| line.text(key).unwrap_or_default();
        let saddr = field_text("saddr");
        if !self.local_addrs.contains(&saddr) {
            return Step::Nothing;
        }
        let from_state = field_text("oldstate").trim_start_matches("TCP_").to_string();
        let to_state = field_text("newstate").trim_start_matches("TCP_").to_string();
        if !SOCKET_TRANSITIONS.iter().any(|(f, t)| *f == from_state && *t == to_state) {
            return Step::Nothing;
        }
        let local = format!("{saddr}:{}", field_text("sport"));
        let remote = format!("{}:{}", field_text("daddr"), field_text("dport"));
        let in_scope = self.in_scope(line.pid);
        let (pid, comm) = if in_scope { (line.pid, line.comm.to_string()) } else { (0, String::new()) };
        self.event(line, pid, &comm, EventKind::Socket { local, remote, from_state, to_state })
    }

    /// A change the mount watcher saw, attributed to the mount syscall just before it, if any.
    pub(super) fn mount_change(
        &mut self,
        line: &TraceLine<'_>,
        op: String,
        source: String,
        target: String,
        fstype: String,
        options: String,
    ) -> Step {
        let at = crate::clock::skewed(line.mono_ns + self.mono_to_raw_ns);
        let (by_pid, by_comm) = match &self.last_mount_call {
            Some((pid, comm, when)) if at - when <= MOUNT_ATTRIBUTION_NS => (*pid, comm.clone()),
            _ => (0, String::new()),
        };
        Step::Event(Decoded {
            raw_ns: at,
            pid: by_pid,
            comm: by_comm.clone(),
            run: self.run_of.get(&by_pid).copied().unwrap_or(0),
            kind: EventKind::Mount { op, source, target, fstype, options, by_pid, by_comm },
        })
    }
}
