//! A capture's own cgroup (v2): how the kernel tells a launched process tree from everything
//! else at no cost, for the write recorder (`bpf::Select::Cgroup`). A launched process joins it
//! before exec (as it joins the tracefs pid list); its descendants inherit it.
//!
//! The group is made under the agent's own cgroup, so launched processes stay under the same
//! ancestors (and their limits). Removing it moves any process still inside back to the agent's
//! group first; groups of dead agents are removed the same way when the next one starts.

use crate::error::AgentError;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub struct Cgroup {
    dir: PathBuf,
    procs: File,
    id: u64,
}

impl Cgroup {
    /// Creates `NAME` (ending in `-AGENTPID`) under the agent's own cgroup v2.
    pub fn create(name: &str) -> Result<Cgroup, AgentError> {
        let parent = own_group()?;
        remove_stale(&parent);
        let dir = parent.join(name);
        if dir.exists() {
            empty_and_remove(&dir);
        }
        std::fs::create_dir(&dir).map_err(AgentError::file("create cgroup", dir.clone()))?;
        let procs = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("cgroup.procs"))
            .map_err(AgentError::file("open", dir.join("cgroup.procs")))?;
        let id = std::fs::metadata(&dir).map_err(AgentError::file("stat", dir.clone()))?.ino();
        Ok(Cgroup { dir, procs, id })
    }

    /// The id BPF's `bpf_get_current_cgroup_id` returns for tasks inside.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The `cgroup.procs` file a child writes its own pid to before exec.
    pub fn procs(&self) -> &File {
        &self.procs
    }

    /// Makes `cmd`'s child join this group before it execs (tests of the BPF recorders).
    #[cfg(test)]
    pub fn join_before_exec(&self, cmd: &mut std::process::Command) {
        use std::os::fd::AsRawFd;
        let procs = self.procs().as_raw_fd();
        // SAFETY: pre_exec makes only async-signal-safe calls (getpid, write).
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(cmd, move || {
                let pid = libc::getpid().to_string();
                libc::write(procs, pid.as_ptr().cast(), pid.len());
                Ok(())
            });
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        empty_and_remove(&self.dir);
    }
}

/// Where cgroup v2 is mounted (`/sys/fs/cgroup` unified, `/sys/fs/cgroup/unified` hybrid).
fn mount_point() -> Option<PathBuf> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    table.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let point = left.split(' ').nth(4)?;
        right.starts_with("cgroup2 ").then(|| PathBuf::from(point))
    })
}

/// The agent's own cgroup v2 directory.
fn own_group() -> Result<PathBuf, AgentError> {
    let root = mount_point().ok_or_else(|| AgentError::Unavailable("no cgroup v2 file system is mounted".into()))?;
    let mine = std::fs::read_to_string("/proc/self/cgroup").map_err(AgentError::file("read", "/proc/self/cgroup"))?;
    let path = mine
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or_else(|| AgentError::Unavailable("this process has no cgroup v2 membership".into()))?;
    Ok(root.join(path.trim_start_matches('/')))
}

/// Moves every process of `dir` to its parent group, then removes it.
fn empty_and_remove(dir: &Path) {
    if let (Ok(pids), Some(parent)) = (std::fs::read_to_string(dir.join("cgroup.procs")), dir.parent()) {
        for pid in pids.lines() {
            let _ = std::fs::write(parent.join("cgroup.procs"), pid);
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// Removes groups dead agents left under this agent's cgroup.
pub fn remove_stale_groups() {
    if let Ok(parent) = own_group() {
        remove_stale(&parent);
    }
}

/// Removes `heisen-*-PID` groups whose agent PID is no longer alive.
fn remove_stale(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for entry in entries.flatten() {
        if crate::tracefs::of_dead_agent(&entry.file_name().to_string_lossy()) {
            empty_and_remove(&entry.path());
        }
    }
}
