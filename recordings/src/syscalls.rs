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
    call("write", 1, true, true),
    call("pwrite64", 18, true, true),
    call("sendto", 44, true, true),
    call("sendmsg", 46, true, true),
    call("connect", 42, true, true),
    call("kill", 62, true, true),
    call("tgkill", 234, true, true),
    call("mount", 165, true, true),
    Syscall { name: "umount2", nr: 166, tracepoint: "umount", gateable: true, recorded_by_default: true },
    call("flock", 73, true, true),
    call("fcntl", 72, false, true),
    call("openat", 257, true, true),
    call("mkdir", 83, true, true),
    call("mkdirat", 258, true, false),
    call("symlink", 88, true, true),
    call("symlinkat", 266, true, false),
    call("epoll_wait", 232, false, true),
    call("epoll_pwait", 281, false, true),
    call("ptrace", 101, false, true),
];

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
    }
}
