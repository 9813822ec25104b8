//! The host's environment: snapshots (mounts, crontabs, processes, interfaces, kernel) and the
//! mount watcher, which turns changes of this mount namespace's table into events.
//!
//! The watcher sleeps in `poll(POLLPRI)` on `/proc/self/mountinfo`, which the kernel wakes on
//! every change of the namespace's mount table: no busy loop, no missed change (a change during
//! a re-read wakes the next poll).

use std::collections::BTreeMap;
use std::io::{Read, Seek};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use heisen_recordings::{
    crontab_jobs, parse_mountinfo, Crontab, Daemon, Environment, EventKind, Interface, MountEntry,
};

use crate::observer::Scope;

/// Crontab locations read on every host, besides directories given with `--crontab-dir`.
const SYSTEM_CRONTABS: &[&str] = &["/etc/crontab", "/etc/cron.d", "/var/spool/cron/crontabs"];

/// Sysctls worth comparing between hosts.
const SYSCTLS: &[&str] =
    &["kernel/hostname", "kernel/pid_max", "net/ipv4/ip_forward", "net/ipv4/ip_local_port_range", "fs/file-max"];

/// What a snapshot looks at on this host.
#[derive(Clone, Debug)]
pub struct Sources {
    pub scope: Scope,
    pub crontab_dirs: Vec<PathBuf>,
}

/// Takes a snapshot now.
pub fn snapshot(at: &str, workdir: &Path, sources: &Sources) -> Environment {
    Environment {
        at: at.into(),
        raw_ns: crate::clock::skewed(crate::clock::now_ns()),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string(),
        workdir: workdir.display().to_string(),
        mounts: std::fs::read_to_string("/proc/self/mountinfo").map(|t| parse_mountinfo(&t)).unwrap_or_default(),
        crontabs: crontabs(&sources.crontab_dirs),
        daemons: daemons(&sources.scope),
        interfaces: interfaces(),
        sysctls: SYSCTLS
            .iter()
            .filter_map(|name| {
                let value = std::fs::read_to_string(format!("/proc/sys/{name}")).ok()?;
                Some((name.replace('/', "."), value.trim().replace('\t', " ")))
            })
            .collect(),
    }
}

pub(crate) fn crontabs(extra: &[PathBuf]) -> Vec<Crontab> {
    let mut files = Vec::new();
    for place in SYSTEM_CRONTABS.iter().map(PathBuf::from).chain(extra.iter().cloned()) {
        if place.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(&place)
                .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect())
                .unwrap_or_default();
            entries.sort();
            files.extend(entries);
        } else if place.is_file() {
            files.push(place);
        }
    }
    files
        .into_iter()
        .filter_map(|path| {
            let text = std::fs::read_to_string(&path).ok()?;
            Some(Crontab { path: path.display().to_string(), lines: crontab_jobs(&text) })
        })
        .collect()
}

/// Processes of this host: its network namespace, or (loopback hosts sharing one kernel) the
/// agent's descendants. The agent's own threads are left out.
fn daemons(scope: &Scope) -> Vec<Daemon> {
    let me = std::process::id() as i32;
    let mut all: Vec<(i32, i32)> = Vec::new(); // (pid, ppid)
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        if let Some(ppid) = parent_of(pid) {
            all.push((pid, ppid));
        }
    }
    let parents: BTreeMap<i32, i32> = all.iter().copied().collect();
    let descends_from_agent = |mut pid: i32| {
        for _ in 0..64 {
            match parents.get(&pid) {
                Some(&p) if p == me => return true,
                Some(&p) if p > 1 => pid = p,
                _ => return false,
            }
        }
        false
    };
    let my_netns = std::fs::read_link("/proc/self/ns/net").ok();
    all.iter()
        .filter(|(pid, _)| *pid != me)
        .filter(|(pid, _)| match scope {
            Scope::Launched => descends_from_agent(*pid),
            Scope::Netns { .. } => {
                my_netns.is_some() && std::fs::read_link(format!("/proc/{pid}/ns/net")).ok() == my_netns
            }
        })
        .filter_map(|(pid, _)| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?.trim_end().to_string();
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = cmdline
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
                .join(" ");
            Some(Daemon { pid: *pid, comm, cmdline })
        })
        .collect()
}

fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].split(' ').nth(1)?.parse().ok()
}

/// Interfaces of this network namespace from `getifaddrs` (netlink), which, unlike a `/sys`
/// mounted by another namespace, always describes the caller's own namespace.
pub(crate) fn interfaces() -> Vec<Interface> {
    let mut by_name: BTreeMap<String, Interface> = BTreeMap::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list`, which is walked read-only and freed once below.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            return Vec::new();
        }
        let mut cur = list;
        while !cur.is_null() {
            let name = std::ffi::CStr::from_ptr((*cur).ifa_name).to_string_lossy().into_owned();
            let flags = (*cur).ifa_flags;
            let entry = by_name.entry(name.clone()).or_insert_with(|| Interface {
                name,
                state: String::new(),
                addresses: Vec::new(),
            });
            entry.state = if flags & libc::IFF_UP as u32 == 0 {
                "down".into()
            } else if flags & libc::IFF_RUNNING as u32 != 0 {
                "up".into()
            } else {
                "no-carrier".into()
            };
            let addr = (*cur).ifa_addr;
            if !addr.is_null() && (*addr).sa_family as i32 == libc::AF_INET {
                let sin = &*(addr as *const libc::sockaddr_in);
                entry.addresses.push(std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)).to_string());
            }
            cur = (*cur).ifa_next;
        }
        libc::freeifaddrs(list);
    }
    by_name.into_values().collect()
}

/// The differences between two mount tables as mount events (`by_pid` left for the decoder).
pub fn mount_changes(before: &[MountEntry], after: &[MountEntry]) -> Vec<EventKind> {
    let key = |m: &MountEntry| (m.target.clone(), m.source.clone(), m.fstype.clone());
    let event = |op: &str, m: &MountEntry| EventKind::Mount {
        op: op.to_string(),
        source: m.source.clone(),
        target: m.target.clone(),
        fstype: m.fstype.clone(),
        options: m.options.clone(),
        by_pid: 0,
        by_comm: String::new(),
    };
    let mut out = Vec::new();
    // Unmounts first (a remount of a target shows as umount + mount only if its source changed).
    for old in before {
        match after.iter().find(|m| key(m) == key(old)) {
            None => out.push(event("umount", old)),
            Some(new) if new.options != old.options => out.push(event("remount", new)),
            Some(_) => {}
        }
    }
    // Stacked mounts on one target: one event per new layer.
    let mut done: Vec<(String, String, String)> = Vec::new();
    for new in after {
        let k = key(new);
        if done.contains(&k) {
            continue;
        }
        let had = before.iter().filter(|m| key(m) == k).count();
        let has = after.iter().filter(|m| key(m) == k).count();
        for _ in had..has {
            out.push(event("mount", new));
        }
        done.push(k);
    }
    out
}

/// Watches this mount namespace's table until `stopped`, reporting each change. In launched
/// scope (loopback hosts share the machine's table) only targets under `only_under` count.
pub fn watch_mounts(stopped: Arc<AtomicBool>, only_under: Option<PathBuf>, report: impl Fn(EventKind)) {
    let Ok(mut file) = std::fs::File::open("/proc/self/mountinfo") else {
        tracing::warn!("cannot open /proc/self/mountinfo; mount changes are not recorded");
        return;
    };
    let relevant = |m: &MountEntry| only_under.as_ref().is_none_or(|p| Path::new(&m.target).starts_with(p));
    let read = |file: &mut std::fs::File| -> Vec<MountEntry> {
        let mut text = String::new();
        if file.rewind().is_err() || file.read_to_string(&mut text).is_err() {
            return Vec::new();
        }
        parse_mountinfo(&text).into_iter().filter(|m| relevant(m)).collect()
    };
    let mut table = read(&mut file);
    while !stopped.load(Ordering::Relaxed) {
        let mut pfd = libc::pollfd { fd: file.as_raw_fd(), events: libc::POLLPRI, revents: 0 };
        // SAFETY: one valid pollfd; the timeout only bounds how late `stopped` is noticed.
        let ready = unsafe { libc::poll(&mut pfd, 1, 100) };
        if ready <= 0 || pfd.revents & (libc::POLLPRI | libc::POLLERR) == 0 {
            continue;
        }
        let now = read(&mut file);
        for change in mount_changes(&table, &now) {
            report(change);
        }
        table = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(target: &str, fstype: &str, options: &str) -> MountEntry {
        MountEntry { target: target.into(), source: fstype.into(), fstype: fstype.into(), options: options.into() }
    }

    fn ops(changes: &[EventKind]) -> Vec<(String, String)> {
        changes
            .iter()
            .map(|c| match c {
                EventKind::Mount { op, target, .. } => (op.clone(), target.clone()),
                _ => unreachable!(),
            })
            .collect()
    }

    #[test]
    fn table_differences_become_mount_umount_and_remount() {
        let before = vec![entry("/", "ext4", "rw"), entry("/a", "tmpfs", "rw"), entry("/b", "tmpfs", "rw")];
        let after = vec![entry("/", "ext4", "rw"), entry("/b", "tmpfs", "ro"), entry("/c", "tmpfs", "rw")];
        assert_eq!(
            ops(&mount_changes(&before, &after)),
            vec![("umount".into(), "/a".into()), ("remount".into(), "/b".into()), ("mount".into(), "/c".into())]
        );
        assert!(mount_changes(&after, &after).is_empty());
    }

    #[test]
    fn a_stacked_mount_on_the_same_target_is_one_new_mount() {
        let before = vec![entry("/s", "tmpfs", "rw")];
        let after = vec![entry("/s", "tmpfs", "rw"), entry("/s", "tmpfs", "rw")];
        assert_eq!(ops(&mount_changes(&before, &after)), vec![("mount".into(), "/s".into())]);
    }
}
