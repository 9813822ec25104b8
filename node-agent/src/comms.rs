//! Task names for raw trace records, which carry only a pid.

use std::time::{Duration, Instant};

use crate::tracefs;

/// Task names by pid (raw records carry none), re-read from /proc at most every 20 ms per pid
/// (of trace time: the records' own stamps, so no clock is read per event) so a rename (exec,
/// prctl) shows up promptly without a read per event. For a task that is gone,
/// the kernel's own record of names it saw while tracing (`saved_cmdlines`) is asked: that is
/// the name at the task's last traced event, which the text format shows too.
#[derive(Default)]
pub(crate) struct CommCache {
    /// Name and when it was read (trace-clock ns; `i64::MAX`: told by the kernel, never stale).
    by_pid: fxhash::FxHashMap<i32, (String, i64)>,
    saved: std::collections::HashMap<i32, String>,
    saved_at: Option<Instant>,
}

impl CommCache {
    /// Keeps names exact across forks, execs and renames, which the kernel reports as events:
    /// a short-lived process (`nginx -s reload`) is often gone before /proc can be asked, and a
    /// name the kernel gave is never stale the way a reused pid's /proc entry or
    /// `saved_cmdlines` slot can be.
    pub(crate) fn follow(&mut self, format: &crate::rawtrace::Format, data: &[u8]) {
        use crate::rawtrace::{int, string};
        let pid_of = |key: &str| format.field(key).and_then(|f| int(data, f)).map(|p| p as i32);
        let text = |key: &str| format.field(key).and_then(|f| string(data, f));
        let known = i64::MAX;
        match format.name.as_str() {
            "task_rename" => {
                if let (Some(pid), Some(comm)) = (pid_of("pid"), text("newcomm")) {
                    self.by_pid.insert(pid, (comm, known));
                }
            }
            "sched_process_fork" => {
                if let (Some(pid), Some(comm)) = (pid_of("child_pid"), text("child_comm")) {
                    self.by_pid.insert(pid, (comm, known));
                }
            }
            "sched_process_exec" => {
                if let (Some(pid), Some(filename)) = (pid_of("pid"), text("filename")) {
                    // The kernel names an exec'd task after its file, cut to 15 bytes.
                    let base = filename.rsplit('/').next().unwrap_or(&filename);
                    let mut end = base.len().min(15);
                    while !base.is_char_boundary(end) {
                        end -= 1;
                    }
                    self.by_pid.insert(pid, (base[..end].to_string(), known));
                }
            }
            _ => {}
        }
    }

    /// The name of `pid` at trace time `now_ns`.
    pub(crate) fn get(&mut self, pid: i32, now_ns: i64) -> &str {
        if pid == 0 {
            return "<idle>";
        }
        let fresh = self.by_pid.get(&pid).is_some_and(|(_, at)| now_ns.saturating_sub(*at) < 20_000_000);
        if !fresh {
            if let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) {
                self.by_pid.insert(pid, (comm.trim_end().to_string(), now_ns));
            } else {
                let stale = self.saved_at.is_none_or(|at| at.elapsed() > Duration::from_millis(5));
                if stale || !self.saved.contains_key(&pid) {
                    self.saved = tracefs::saved_cmdlines();
                    self.saved_at = Some(Instant::now());
                }
                if let Some(comm) = self.saved.get(&pid) {
                    return comm;
                }
            }
        }
        self.by_pid.get(&pid).map_or("<...>", |(c, _)| c.as_str())
    }
}
