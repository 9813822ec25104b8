//! Which processes belong to this host: its network namespace, or what the agent launched.

use super::Decoder;

/// This host's IPv4 addresses other hosts can reach (loopback excluded: every namespace has one).
pub fn host_addresses() -> Vec<String> {
    crate::environment::interfaces()
        .into_iter()
        .flat_map(|i| i.addresses)
        .filter(|a| a.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| !ip.is_loopback() && !ip.is_unspecified()))
        .collect()
}
/// Which processes belong to this host.
#[derive(Clone, Debug)]
pub enum Scope {
    /// Every process in this network namespace (a netns host, or the whole machine in the root).
    Netns { inode: u64 },
    /// Only processes the agent launched and their descendants (loopback hosts sharing a kernel).
    Launched,
}

impl Scope {
    /// The scope of the calling process's network namespace.
    pub fn own_netns() -> Scope {
        Scope::Netns { inode: netns_inode("self").unwrap_or(0) }
    }
}

pub(crate) fn netns_inode(pid: &str) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()?;
    let text = link.to_string_lossy();
    text.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}
impl Decoder {
    /// Re-reads a process's network namespace when it is still there; a process already gone
    /// keeps what was known (inherited at fork), so short-lived processes are not lost.
    pub(super) fn refresh_scope(&mut self, pid: i32) {
        if let Scope::Netns { inode } = self.scope {
            if let Some(now) = netns_inode(&pid.to_string()) {
                let member = now == inode && !self.is_agent(pid);
                self.in_scope.insert(pid, member);
            }
        }
    }

    pub(super) fn is_agent(&self, pid: i32) -> bool {
        pid == self.agent_pid || std::path::Path::new(&format!("/proc/self/task/{pid}")).exists()
    }

    pub(super) fn in_scope(&mut self, pid: i32) -> bool {
        if let Some(known) = self.in_scope.get(&pid) {
            return *known;
        }
        let member = match &self.scope {
            Scope::Launched => self.run_of.contains_key(&pid),
            Scope::Netns { inode } => !self.is_agent(pid) && netns_inode(&pid.to_string()) == Some(*inode),
        };
        // In Launched scope membership can still change (a launch marker arrives later), so only
        // netns answers are cached.
        if matches!(self.scope, Scope::Netns { .. }) {
            self.in_scope.insert(pid, member);
        }
        member
    }
}

pub(super) fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].split(' ').nth(1)?.parse().ok()
}

/// The process (thread group) a task belongs to, from /proc while the task lives.
pub(super) fn tgid_of(tid: i32) -> Option<i32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("Tgid:")).and_then(|v| v.trim().parse().ok())
}
