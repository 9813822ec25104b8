//! Environment snapshots: the state of a host that no event shows but a failure can depend on
//! (story 3's missing tmpfs, story 4's twin crontab, story 5's absent status daemon).
//!
//! The agent takes them at capture start and end, and the coordinator asks for one in every run
//! once the run's services are up. `heisen diff` compares them.

use serde::{Deserialize, Serialize};

/// When a snapshot was taken; written as `start`, `run N` or `end` (bundles and the wire).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", from = "String")]
pub enum SnapshotAt {
    /// When the capture started.
    #[default]
    Start,
    /// In run N, once its services were up.
    Run(u32),
    /// When the capture stopped.
    End,
    /// Any other label (kept as written).
    Other(String),
}

impl std::fmt::Display for SnapshotAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnapshotAt::Start => write!(f, "start"),
            SnapshotAt::Run(n) => write!(f, "run {n}"),
            SnapshotAt::End => write!(f, "end"),
            SnapshotAt::Other(label) => write!(f, "{label}"),
        }
    }
}

impl From<&str> for SnapshotAt {
    /// `start`, `end`, `run N` (or `run:N`, as `heisen diff --at` spells it).
    fn from(text: &str) -> SnapshotAt {
        let run = text.strip_prefix("run ").or_else(|| text.strip_prefix("run:"));
        match (text, run.and_then(|n| n.trim().parse().ok())) {
            (_, Some(n)) => SnapshotAt::Run(n),
            ("start", None) => SnapshotAt::Start,
            ("end", None) => SnapshotAt::End,
            (other, None) => SnapshotAt::Other(other.to_string()),
        }
    }
}

impl From<String> for SnapshotAt {
    fn from(text: String) -> SnapshotAt {
        SnapshotAt::from(text.as_str())
    }
}

impl From<SnapshotAt> for String {
    fn from(at: SnapshotAt) -> String {
        at.to_string()
    }
}

/// One host's environment at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Environment {
    /// When it was taken.
    pub at: SnapshotAt,
    /// Host clock (CLOCK_REALTIME domain) when taken.
    pub raw_ns: i64,
    /// `uname -r`.
    pub kernel: String,
    /// The agent's working directory on that host. Paths under it are host-specific by
    /// construction, so comparisons rewrite them to `{workdir}`.
    pub workdir: String,
    /// The mount table (`/proc/self/mountinfo` of the agent's mount namespace).
    pub mounts: Vec<MountEntry>,
    /// Crontab files and their job lines.
    pub crontabs: Vec<Crontab>,
    /// Processes running on the host (its network namespace), the agent excluded.
    pub daemons: Vec<Daemon>,
    pub interfaces: Vec<Interface>,
    /// Selected sysctls (`name = value`).
    pub sysctls: Vec<(String, String)>,
}

/// One line of the mount table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountEntry {
    pub target: String,
    pub source: String,
    pub fstype: String,
    pub options: String,
}

/// A crontab file and its job lines (comments, blank lines and variables left out).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Crontab {
    pub path: String,
    pub lines: Vec<String>,
}

/// A running process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Daemon {
    pub pid: i32,
    pub comm: String,
    /// Command line, space-joined.
    pub cmdline: String,
}

/// A network interface and its state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    /// `operstate` (`up`, `down`, `unknown`).
    pub state: String,
    pub addresses: Vec<String>,
}

impl Environment {
    /// `path` with this host's workdir replaced by `{workdir}`.
    pub fn portable(&self, path: &str) -> String {
        if self.workdir.is_empty() {
            return path.to_string();
        }
        path.replace(&self.workdir, "{workdir}")
    }
}

/// Parses `/proc/PID/mountinfo` text into mount entries (escapes like `\040` decoded).
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let mut right = right.split(' ');
            let fstype = right.next()?.to_string();
            let source = unescape(right.next()?);
            let super_options = right.next().unwrap_or("");
            let options = match super_options {
                "" => left.get(5)?.to_string(),
                s => format!("{},{}", left.get(5)?, s),
            };
            Some(MountEntry { target: unescape(left.get(4)?), source, fstype, options })
        })
        .collect()
}

fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The job lines of a crontab's text: no comments, blank lines or `NAME=value` settings.
pub fn crontab_jobs(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter(|l| {
            let first = l.split_whitespace().next().unwrap_or("");
            !first.contains('=') || first.starts_with('@')
        })
        .map(String::from)
        .collect()
}

/// The command of a crontab job line: what follows the schedule (five fields or an `@keyword`)
/// and, in system crontabs (`/etc/crontab`, `/etc/cron.d/*`), the user field.
pub fn crontab_command(path: &str, line: &str) -> Option<String> {
    let system = path == "/etc/crontab" || path.starts_with("/etc/cron.d/");
    let mut rest = line.trim_start();
    let fields = if rest.starts_with('@') { 1 } else { 5 } + usize::from(system);
    for _ in 0..fields {
        let end = rest.find(char::is_whitespace)?;
        rest = rest[end..].trim_start();
    }
    (!rest.is_empty()).then(|| rest.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn snapshot_times_are_the_strings_they_were() {
        for (at, text) in [
            (SnapshotAt::Start, "start"),
            (SnapshotAt::Run(3), "run 3"),
            (SnapshotAt::End, "end"),
            (SnapshotAt::Other("before upgrade".into()), "before upgrade"),
        ] {
            assert_eq!(serde_json::to_string(&at).unwrap(), format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<SnapshotAt>(&format!("\"{text}\"")).unwrap(), at);
        }
        assert_eq!(SnapshotAt::from("run:12"), SnapshotAt::Run(12));
    }

    use super::*;

    #[test]
    fn mountinfo_lines_give_target_source_type_and_options() {
        let text = "36 35 98:0 /mnt1 /mnt/my\\040dir rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n\
                    40 36 0:44 / /dev/shm rw,nosuid,nodev - tmpfs tmpfs rw,size=65536k\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].target, "/mnt/my dir");
        assert_eq!((m[0].fstype.as_str(), m[0].source.as_str()), ("ext3", "/dev/root"));
        assert_eq!(m[0].options, "rw,noatime,rw,errors=continue");
        assert_eq!((m[1].target.as_str(), m[1].fstype.as_str()), ("/dev/shm", "tmpfs"));
    }

    #[test]
    fn crontab_jobs_skip_comments_and_settings() {
        let text = "# m h dom mon dow command\nSHELL=/bin/sh\n\n* * * * * /usr/bin/pickup --dir /spool\n@reboot x\n";
        assert_eq!(crontab_jobs(text), vec!["* * * * * /usr/bin/pickup --dir /spool", "@reboot x"]);
    }

    #[test]
    fn crontab_commands_follow_the_schedule_and_system_user_field() {
        assert_eq!(crontab_command("/c/root", "*/5 * * * *  pickup --spool /s").as_deref(), Some("pickup --spool /s"));
        assert_eq!(
            crontab_command("/etc/crontab", "17 * * * * root cd / && run-parts").as_deref(),
            Some("cd / && run-parts")
        );
        assert_eq!(crontab_command("/c/root", "@hourly x y").as_deref(), Some("x y"));
        assert_eq!(crontab_command("/c/root", "* * * *"), None);
    }

    #[test]
    fn portable_paths_hide_the_workdir() {
        let env = Environment { workdir: "/tmp/h/good".into(), ..Environment::default() };
        assert_eq!(env.portable("/tmp/h/good/chroot/dev/shm"), "{workdir}/chroot/dev/shm");
    }
}
