//! The syscalls heisen knows by name, in one table: their number (x86_64, the only architecture
//! the agent's seccomp filter accepts), whether a gate can hold them, and whether a capture
//! records them when it names none. The scenario parser, explain and the agent's filter and
//! observer all read this table; a test checks the numbers against the kernel's own list.

/// One syscall heisen knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Syscall {
    pub name: &'static str,
    /// The x86_64 syscall number.
    pub nr: i64,
    /// The kernel's name for it in tracepoints (`syscalls/sys_enter_NAME`): its `SYSCALL_DEFINE`
    /// name, which is not always the syscall's (`umount2` is `umount`).
    pub tracepoint: &'static str,
    /// A gate can hold it (the seccomp filter traps it, the supervisor counts and matches it).
    pub gateable: bool,
    /// Recorded when a capture names no syscalls.
    pub recorded_by_default: bool,
}

const fn call(name: &'static str, nr: i64, gateable: bool, recorded_by_default: bool) -> Syscall {
    Syscall { name, nr, tracepoint: name, gateable, recorded_by_default }
}

/// Every syscall heisen knows by name. Blocking waits (`epoll_wait`, `epoll_pwait`) are kept only
/// when they return interrupted (what a tracer attaching does to them, story 2); `ptrace` only its
/// attach and detach requests.
pub const SYSCALLS: &[Syscall] = &[
    // Files: opened by path (the argument recorder reads the path at the call).
    call("open", 2, true, true),
    call("openat", 257, true, true),
    call("openat2", 437, true, true),
    call("creat", 85, true, true),
    call("rename", 82, true, true),
    call("renameat", 264, true, true),
    call("renameat2", 316, true, true),
    call("unlink", 87, true, true),
    call("unlinkat", 263, true, true),
    call("mkdir", 83, true, true),
    call("mkdirat", 258, true, true),
    call("rmdir", 84, true, true),
    call("link", 86, true, true),
    call("linkat", 265, true, true),
    call("symlink", 88, true, true),
    call("symlinkat", 266, true, true),
    call("truncate", 76, true, true),
    call("chmod", 90, true, true),
    call("fchmodat", 268, true, true),
    call("chown", 92, true, true),
    call("lchown", 94, true, true),
    call("fchownat", 260, true, true),
    // Files: by fd (the fd table names them).
    call("read", 0, true, true),
    call("pread64", 17, true, true),
    call("readv", 19, true, true),
    call("preadv", 295, true, true),
    call("write", 1, true, true),
    call("pwrite64", 18, true, true),
    call("writev", 20, true, true),
    call("close", 3, true, true),
    call("close_range", 436, false, true),
    call("dup", 32, false, true),
    call("dup2", 33, false, true),
    call("dup3", 292, false, true),
    call("fcntl", 72, false, true),
    call("fsync", 74, true, true),
    call("fdatasync", 75, true, true),
    call("ftruncate", 77, true, true),
    call("flock", 73, true, true),
    // Sockets (the argument recorder reads the addresses).
    call("socket", 41, false, true),
    call("connect", 42, true, true),
    call("bind", 49, true, true),
    call("accept", 43, true, true),
    call("accept4", 288, true, true),
    call("sendto", 44, true, true),
    call("recvfrom", 45, true, true),
    call("sendmsg", 46, true, true),
    call("recvmsg", 47, true, true),
    call("shutdown", 48, true, true),
    // Signals.
    call("kill", 62, true, true),
    call("tgkill", 234, true, true),
    call("tkill", 200, true, true),
    call("rt_sigqueueinfo", 129, true, true),
    call("pidfd_send_signal", 424, true, true),
    // Gated only where it changes a disposition (a handler installed, SIG_IGN, SIG_DFL), never a
    // query (no new action): "the signal arrived before the handler was installed".
    call("rt_sigaction", 13, true, true),
    call("rt_sigprocmask", 14, false, true),
    // Mounts.
    call("mount", 165, true, true),
    Syscall { name: "umount2", nr: 166, tracepoint: "umount", gateable: true, recorded_by_default: true },
    // Waits kept only when interrupted; ptrace's attach and detach.
    call("epoll_wait", 232, false, true),
    call("epoll_pwait", 281, false, true),
    call("ptrace", 101, false, true),
];

/// Named groups of syscalls, as strace's `-e trace=%file` classes: `heisen capture --syscalls
/// file,network,write` and a scenario's `syscalls` take these names and syscall names alike.
pub const CLASSES: &[(&str, &[&str])] = &[
    (
        "file",
        &[
            "open",
            "openat",
            "openat2",
            "creat",
            "rename",
            "renameat",
            "renameat2",
            "unlink",
            "unlinkat",
            "mkdir",
            "mkdirat",
            "rmdir",
            "link",
            "linkat",
            "symlink",
            "symlinkat",
            "truncate",
            "chmod",
            "fchmodat",
            "chown",
            "lchown",
            "fchownat",
        ],
    ),
    (
        "desc",
        &[
            "read",
            "pread64",
            "readv",
            "preadv",
            "write",
            "pwrite64",
            "writev",
            "close",
            "close_range",
            "dup",
            "dup2",
            "dup3",
            "fcntl",
            "fsync",
            "fdatasync",
            "ftruncate",
            "flock",
        ],
    ),
    ("read", &["read", "pread64", "readv", "preadv"]),
    ("write", &["write", "pwrite64", "writev"]),
    (
        "network",
        &["socket", "connect", "bind", "accept", "accept4", "sendto", "recvfrom", "sendmsg", "recvmsg", "shutdown"],
    ),
    ("signal", &["kill", "tgkill", "tkill", "rt_sigqueueinfo", "pidfd_send_signal", "rt_sigaction", "rt_sigprocmask"]),
    ("mount", &["mount", "umount2"]),
    ("lock", &["flock", "fcntl"]),
    ("process", &["ptrace", "epoll_wait", "epoll_pwait"]),
];

/// Expands class names (`file`, `network`, ...; a leading `%` as strace writes it is accepted)
/// and syscall names into syscall names, in table order, each once. Unknown names are errors:
/// the returned `Err` is the first name neither a class nor a syscall heisen knows.
pub fn expand_syscalls(names: &[String]) -> Result<Vec<&'static str>, String> {
    let mut wanted = std::collections::BTreeSet::new();
    for raw in names.iter().flat_map(|n| n.split(',')).map(str::trim).filter(|n| !n.is_empty()) {
        let name = raw.trim_start_matches('%');
        if name == "default" {
            wanted.extend(default_syscalls());
        } else if let Some((_, members)) = CLASSES.iter().find(|(c, _)| *c == name) {
            wanted.extend(members.iter().copied());
        } else if let Some(s) = syscall(name) {
            wanted.insert(s.name);
        } else {
            return Err(raw.to_string());
        }
    }
    Ok(SYSCALLS.iter().map(|s| s.name).filter(|n| wanted.contains(n)).collect())
}

/// The syscall called `name`, if heisen knows it.
pub fn syscall(name: &str) -> Option<&'static Syscall> {
    SYSCALLS.iter().find(|s| s.name == name)
}

/// The tracepoint name of syscall `name` (`umount2` -> `umount`); `name` itself when unknown.
pub fn tracepoint_name(name: &str) -> &str {
    syscall(name).map_or(name, |s| s.tracepoint)
}

/// The syscall a tracepoint name stands for (`umount` -> `umount2`); `tracepoint` itself when
/// the table does not rename it.
pub fn syscall_of_tracepoint(tracepoint: &str) -> &str {
    SYSCALLS.iter().find(|s| s.tracepoint == tracepoint).map_or(tracepoint, |s| s.name)
}

/// Which argument of a signal call is the signal: `kill(pid, sig)`, `tgkill(tgid, tid, sig)`,
/// `rt_sigaction(sig, act, oldact)`, ... None for calls that carry none.
pub fn signal_arg(name: &str) -> Option<usize> {
    match name {
        "kill" | "tkill" | "rt_sigqueueinfo" | "pidfd_send_signal" => Some(1),
        "tgkill" => Some(2),
        "rt_sigaction" => Some(0),
        _ => None,
    }
}

/// Whether a gate can hold `name`.
pub fn gateable(name: &str) -> bool {
    syscall(name).is_some_and(|s| s.gateable)
}

/// The names a gate can hold, in table order.
pub fn gateable_syscalls() -> Vec<&'static str> {
    SYSCALLS.iter().filter(|s| s.gateable).map(|s| s.name).collect()
}

/// The names a capture records when it names none, in table order.
pub fn default_syscalls() -> Vec<&'static str> {
    SYSCALLS.iter().filter(|s| s.recorded_by_default).map(|s| s.name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's own list: its uapi header (Debian's linux-libc-dev, which scripts/setup
    /// installs) defines `__NR_name number` for every x86_64 syscall.
    #[test]
    fn numbers_are_the_kernels() {
        let path = "/usr/include/x86_64-linux-gnu/asm/unistd_64.h";
        let header = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("{path}: {e}; install linux-libc-dev (./scripts/setup does)"));
        let kernel: std::collections::HashMap<&str, i64> = header
            .lines()
            .filter_map(|l| {
                let mut words = l.strip_prefix("#define __NR_")?.split_whitespace();
                Some((words.next()?, words.next()?.parse().ok()?))
            })
            .collect();
        assert!(kernel.len() > 300, "{path} lists only {} syscalls", kernel.len());
        for s in SYSCALLS {
            assert_eq!(kernel.get(s.name), Some(&s.nr), "{} in {path}", s.name);
        }
        let names: std::collections::HashSet<_> = SYSCALLS.iter().map(|s| s.name).collect();
        assert_eq!(names.len(), SYSCALLS.len(), "a name stands twice in the table");
        for (class, members) in CLASSES {
            assert!(members.iter().all(|m| names.contains(m)), "class {class} names a syscall the table lacks");
        }
    }

    /// As root (CI), every tracepoint the table names exists in this kernel's tracefs.
    #[test]
    fn tracepoints_are_the_kernels() {
        let root = std::path::Path::new("/sys/kernel/tracing/events/syscalls");
        if !root.exists() {
            eprintln!("SKIPPED tracepoints_are_the_kernels: no tracefs at /sys/kernel/tracing (needs root; ./scripts/setup mounts it)");
            return;
        }
        for s in SYSCALLS {
            for part in ["enter", "exit"] {
                let dir = root.join(format!("sys_{part}_{}", s.tracepoint));
                assert!(dir.exists(), "{} has no tracepoint {}", s.name, dir.display());
            }
        }
    }

    #[test]
    fn classes_expand_like_strace() {
        let names = |v: &[&str]| expand_syscalls(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(names(&["%network"]).unwrap().len(), 10);
        assert_eq!(names(&["write,kill"]).unwrap(), vec!["write", "pwrite64", "writev", "kill"]);
        assert_eq!(names(&["bogus"]), Err("bogus".to_string()));
        assert_eq!(names(&["default"]).unwrap(), default_syscalls());
    }
}
