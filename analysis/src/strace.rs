//! A recorded syscall as strace prints it: `openat(AT_FDCWD, "/srv/a.tmp", O_WRONLY|O_CREAT|O_TRUNC, 0644) = 3</srv/a.tmp>`.
//! Each syscall's arguments have kinds (an fd, a path, open flags, a signal ...) in one table;
//! what the recording holds for them (the strings read at the call, the fd table's names, the
//! socket address) is shown in their place, and what it does not hold stays a number.

use heisen_recordings::{fcntl_lock_cmd, flock_op_name, open_flags, result_errno, signal_name};

/// How one argument is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Arg {
    /// An fd: `3</path>` when the fd table named it (first fd argument only).
    Fd,
    /// A directory fd for an `*at` call: `AT_FDCWD` or a number.
    DirFd,
    /// The Nth recorded string argument (a path), quoted.
    Str(usize),
    /// open(2) flags.
    OpenFlags,
    /// A file mode, in octal.
    Mode,
    Signal,
    /// A socket address the call was given or filled in.
    Addr,
    FlockOp,
    FcntlCmd,
    /// A user-space buffer or structure: its address.
    Ptr,
    /// A plain number.
    Int,
}

use Arg::*;

/// The argument kinds of each syscall heisen decodes; others print their numbers.
fn kinds(name: &str) -> &'static [Arg] {
    match name {
        "open" => &[Str(0), OpenFlags, Mode],
        "openat" => &[DirFd, Str(0), OpenFlags, Mode],
        "openat2" => &[DirFd, Str(0), Ptr, Int],
        "creat" => &[Str(0), Mode],
        "read" | "write" => &[Fd, Ptr, Int],
        "pread64" | "pwrite64" => &[Fd, Ptr, Int, Int],
        "readv" | "writev" => &[Fd, Ptr, Int],
        "preadv" | "pwritev" => &[Fd, Ptr, Int, Int],
        "close" | "fsync" | "fdatasync" | "dup" => &[Fd],
        "dup2" => &[Fd, Int],
        "dup3" => &[Fd, Int, Int],
        "ftruncate" | "shutdown" | "listen" => &[Fd, Int],
        "close_range" => &[Int, Int, Int],
        "rename" | "link" | "symlink" => &[Str(0), Str(1)],
        "renameat" => &[DirFd, Str(0), DirFd, Str(1)],
        "renameat2" => &[DirFd, Str(0), DirFd, Str(1), Int],
        "linkat" => &[DirFd, Str(0), DirFd, Str(1), Int],
        "symlinkat" => &[Str(0), DirFd, Str(1)],
        "unlink" | "rmdir" => &[Str(0)],
        "unlinkat" => &[DirFd, Str(0), Int],
        "mkdir" | "chmod" => &[Str(0), Mode],
        "mkdirat" | "fchmodat" => &[DirFd, Str(0), Mode],
        "truncate" => &[Str(0), Int],
        "chown" | "lchown" => &[Str(0), Int, Int],
        "fchownat" => &[DirFd, Str(0), Int, Int, Int],
        "mount" => &[Str(0), Str(1), Str(2), Int, Ptr],
        "umount2" => &[Str(0), Int],
        "kill" | "tkill" => &[Int, Signal],
        "tgkill" => &[Int, Int, Signal],
        "rt_sigqueueinfo" => &[Int, Signal, Ptr],
        "pidfd_send_signal" => &[Fd, Signal, Ptr, Int],
        "rt_sigaction" => &[Signal, Ptr, Ptr, Int],
        "rt_sigprocmask" => &[Int, Ptr, Ptr, Int],
        "connect" | "bind" => &[Fd, Addr, Int],
        "accept" => &[Fd, Addr, Ptr],
        "accept4" => &[Fd, Addr, Ptr, Int],
        "sendto" => &[Fd, Ptr, Int, Int, Addr, Int],
        "recvfrom" => &[Fd, Ptr, Int, Int, Addr, Ptr],
        "sendmsg" | "recvmsg" => &[Fd, Ptr, Int],
        "socket" => &[Int, Int, Int],
        "flock" => &[Fd, FlockOp],
        "fcntl" => &[Fd, FcntlCmd, Int],
        "epoll_wait" | "epoll_pwait" => &[Fd, Ptr, Int, Int],
        "exit_group" => &[Int],
        _ => &[],
    }
}

/// Calls whose result is a new fd, named in the result (`= 3</srv/a>`).
fn returns_fd(name: &str) -> bool {
    matches!(name, "open" | "openat" | "openat2" | "creat" | "accept" | "accept4" | "dup" | "dup2" | "dup3" | "socket")
}

/// `AT_FDCWD` as the kernel receives it (an int in a 64-bit register).
const AT_FDCWD: i32 = -100;

/// One syscall in strace's notation. `fd_path` names the fd argument, or for calls that return
/// an fd, the new fd.
pub fn call(
    name: &str,
    args: &[u64],
    ret: i64,
    strings: &[String],
    addr: Option<&str>,
    fd_path: Option<&str>,
) -> String {
    let kinds = kinds(name);
    let fd_is_result = returns_fd(name) && !matches!(name, "dup" | "dup2" | "dup3");
    let mut shown = Vec::new();
    let count = if kinds.is_empty() { args.len().min(3) } else { kinds.len().min(args.len()) };
    for (i, raw) in args.iter().take(count).enumerate() {
        let kind = kinds.get(i).copied().unwrap_or(Int);
        shown.push(match kind {
            Fd if i == 0 && !fd_is_result => match fd_path {
                Some(p) => format!("{}<{p}>", *raw as i32),
                None => (*raw as i32).to_string(),
            },
            Fd | Int => {
                let v = *raw as i64;
                if v.unsigned_abs() < 1 << 20 || (*raw as i32 as i64) == v {
                    v.to_string()
                } else {
                    format!("{raw:#x}")
                }
            }
            DirFd if *raw as i32 == AT_FDCWD => "AT_FDCWD".into(),
            DirFd => (*raw as i32).to_string(),
            Str(n) => match strings.get(n) {
                Some(s) => format!("{s:?}"),
                None if *raw == 0 => "NULL".into(),
                None => format!("{raw:#x}"),
            },
            OpenFlags => open_flags(*raw),
            Mode => format!("0{:03o}", raw & 0o7777),
            Signal => signal_name(*raw as i32),
            Addr => match addr {
                Some(a) => format!("{{{a}}}"),
                None if *raw == 0 => "NULL".into(),
                None => format!("{raw:#x}"),
            },
            FlockOp => flock_op_name(*raw),
            FcntlCmd => fcntl_lock_cmd(*raw).map_or_else(|| fcntl_cmd(*raw), str::to_string),
            Ptr if *raw == 0 => "NULL".into(),
            Ptr => format!("{raw:#x}"),
        });
    }
    // open's mode means something only when it creates: strace leaves it out otherwise.
    let flags_at = kinds.iter().position(|k| *k == OpenFlags);
    if let Some(at) = flags_at {
        let creates = args.get(at).is_some_and(|f| f & (0o100 | 0o20000000) != 0);
        if !creates && shown.len() > at + 1 {
            shown.truncate(at + 1);
        }
    }
    format!("{name}({}) = {}", shown.join(", "), result(name, ret, fd_path, fd_is_result))
}

/// A call's result: `-1 ENOENT`, `3</path>` for a new fd, the number otherwise.
pub fn result(name: &str, ret: i64, fd_path: Option<&str>, fd_is_result: bool) -> String {
    if (-4095..0).contains(&ret) {
        return format!("-1 {}", result_errno(ret.saturating_neg()));
    }
    match fd_path {
        Some(p) if fd_is_result || matches!(name, "dup" | "dup2" | "dup3") && ret >= 0 => format!("{ret}<{p}>"),
        _ => ret.to_string(),
    }
}

fn fcntl_cmd(cmd: u64) -> String {
    match cmd {
        0 => "F_DUPFD".into(),
        1 => "F_GETFD".into(),
        2 => "F_SETFD".into(),
        3 => "F_GETFL".into(),
        4 => "F_SETFL".into(),
        1030 => "F_DUPFD_CLOEXEC".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_like_strace() {
        let at = AT_FDCWD as i64 as u64;
        let open = call(
            "openat",
            &[at, 0x7f00, 0o1101 | 0o2000000, 0o644],
            3,
            &["/srv/a.tmp".into()],
            None,
            Some("/srv/a.tmp"),
        );
        assert_eq!(open, r#"openat(AT_FDCWD, "/srv/a.tmp", O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC, 0644) = 3</srv/a.tmp>"#);
        let write = call("write", &[3, 0x7f00, 5], 5, &[], None, Some("/srv/a (deleted)"));
        assert_eq!(write, "write(3</srv/a (deleted)>, 0x7f00, 5) = 5");
        assert_eq!(call("kill", &[812, 1], 0, &[], None, None), "kill(812, SIGHUP) = 0");
        let refused = call("connect", &[4, 0x7f00, 16], -111, &[], Some("10.0.0.2:8080"), Some("socket"));
        assert_eq!(refused, "connect(4<socket>, {10.0.0.2:8080}, 16) = -1 ECONNREFUSED");
        assert_eq!(
            call("rename", &[1, 2], 0, &["a.tmp".into(), "a".into()], None, None),
            r#"rename("a.tmp", "a") = 0"#
        );
        // Not recorded: the pointer, as strace would print an unreadable one.
        assert_eq!(call("unlink", &[0x7f00], -2, &[], None, None), "unlink(0x7f00) = -1 ENOENT");
        assert_eq!(call("read", &[3, 0x10, 4], -512, &[], None, None), "read(3, 0x10, 4) = -1 EINTR (ERESTARTSYS)");
        assert_eq!(call("dup2", &[3, 1], 1, &[], None, Some("/x")), "dup2(3</x>, 1) = 1</x>");
    }
}
