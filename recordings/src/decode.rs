//! Names for the numbers a syscall carries, as strace prints them: errno and signal names from
//! nix's complete tables (not a hand list), open flags, socket addresses. The kernel's own
//! restart codes (ERESTARTSYS and its kin) never reach a program; they have names here so a
//! recording can say what the program then saw.

use nix::errno::Errno;
use nix::libc;
use nix::sys::signal::Signal;

/// Symbolic errno name for a positive errno value (`13` -> `"EACCES"`), including the kernel's
/// restart codes a tracepoint sees before the program does.
pub fn errno_name(errno: i64) -> Option<&'static str> {
    match errno {
        512 => return Some("ERESTARTSYS"),
        513 => return Some("ERESTARTNOINTR"),
        514 => return Some("ERESTARTNOHAND"),
        515 => return Some("ENOIOCTLCMD"),
        516 => return Some("ERESTART_RESTARTBLOCK"),
        _ => {}
    }
    let e = Errno::from_raw(i32::try_from(errno).ok()?);
    (e != Errno::UnknownErrno).then(|| errno_str(e))
}

fn errno_str(e: Errno) -> &'static str {
    // Errno's Debug is its variant name (EACCES); names are a closed set, so interning is bounded.
    static NAMES: std::sync::Mutex<Vec<(i32, &'static str)>> = std::sync::Mutex::new(Vec::new());
    let mut names = NAMES.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, n)) = names.iter().find(|(k, _)| *k == e as i32) {
        return n;
    }
    let n: &'static str = Box::leak(format!("{e:?}").into_boxed_str());
    names.push((e as i32, n));
    n
}

/// What a failed call's result means to the program: `EACCES`, or for a restart code the error
/// the program sees if the call is not restarted (`EINTR (ERESTARTSYS)`), as strace explains it.
pub fn result_errno(errno: i64) -> String {
    match errno {
        512..=514 | 516 => format!("EINTR ({})", errno_name(errno).unwrap_or("restart")),
        _ => errno_name(errno).map_or_else(|| format!("errno {errno}"), str::to_string),
    }
}

/// Symbolic signal name (`1` -> `"SIGHUP"`; real-time signals as `SIGRTMIN+N`).
pub fn signal_name(sig: i32) -> String {
    match Signal::try_from(sig) {
        Ok(s) => s.as_str().to_string(),
        Err(_) if (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&sig) => {
            format!("SIGRTMIN+{}", sig - libc::SIGRTMIN())
        }
        Err(_) => format!("SIG{sig}"),
    }
}

/// Signal number for a name (`"SIGHUP"` or `"HUP"` -> 1).
pub fn signal_number(name: &str) -> Option<i32> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    full.parse::<Signal>().ok().map(|s| s as i32)
}

/// Whether a signal's default action ends the process (with or without a core dump).
pub fn default_kills(sig: i32) -> bool {
    !matches!(
        Signal::try_from(sig),
        Ok(Signal::SIGCHLD | Signal::SIGCONT | Signal::SIGSTOP | Signal::SIGTSTP | Signal::SIGTTIN)
            | Ok(Signal::SIGTTOU | Signal::SIGURG | Signal::SIGWINCH)
    )
}

/// open(2) flags as strace prints them (`O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC`).
pub fn open_flags(flags: u64) -> String {
    let flags = flags as i32;
    let mut parts = vec![match flags & libc::O_ACCMODE {
        libc::O_RDONLY => "O_RDONLY",
        libc::O_WRONLY => "O_WRONLY",
        libc::O_RDWR => "O_RDWR",
        _ => "O_ACCMODE",
    }
    .to_string()];
    let mut rest = flags & !libc::O_ACCMODE;
    // O_TMPFILE includes O_DIRECTORY, O_SYNC includes O_DSYNC: the wider first.
    let named: &[(i32, &str)] = &[
        (libc::O_TMPFILE, "O_TMPFILE"),
        (libc::O_SYNC, "O_SYNC"),
        (libc::O_CREAT, "O_CREAT"),
        (libc::O_EXCL, "O_EXCL"),
        (libc::O_NOCTTY, "O_NOCTTY"),
        (libc::O_TRUNC, "O_TRUNC"),
        (libc::O_APPEND, "O_APPEND"),
        (libc::O_NONBLOCK, "O_NONBLOCK"),
        (libc::O_DSYNC, "O_DSYNC"),
        (libc::O_DIRECT, "O_DIRECT"),
        (libc::O_LARGEFILE, "O_LARGEFILE"),
        (libc::O_DIRECTORY, "O_DIRECTORY"),
        (libc::O_NOFOLLOW, "O_NOFOLLOW"),
        (libc::O_NOATIME, "O_NOATIME"),
        (libc::O_CLOEXEC, "O_CLOEXEC"),
        (libc::O_PATH, "O_PATH"),
    ];
    for (bits, name) in named {
        if rest & bits == *bits && *bits != 0 {
            parts.push(name.to_string());
            rest &= !bits;
        }
    }
    if rest != 0 {
        parts.push(format!("{rest:#o}"));
    }
    parts.join("|")
}

/// Whether open flags ask for the fd to close on exec.
pub fn opens_cloexec(flags: u64) -> bool {
    (flags as i32) & libc::O_CLOEXEC != 0
}

/// A `struct sockaddr` as read from the caller: `10.0.0.2:8080`, `[::1]:53`, `unix:/run/x.sock`,
/// `unix:@abstract`; `None` when too short or of a family heisen does not name.
pub fn sockaddr(bytes: &[u8]) -> Option<String> {
    let family = u16::from_ne_bytes(bytes.get(0..2)?.try_into().ok()?) as i32;
    let port = || u16::from_be_bytes([bytes[2], bytes[3]]);
    match family {
        libc::AF_INET if bytes.len() >= 8 => {
            let a = &bytes[4..8];
            Some(format!("{}.{}.{}.{}:{}", a[0], a[1], a[2], a[3], port()))
        }
        libc::AF_INET6 if bytes.len() >= 24 => {
            let octets: [u8; 16] = bytes[8..24].try_into().ok()?;
            Some(format!("[{}]:{}", std::net::Ipv6Addr::from(octets), port()))
        }
        libc::AF_UNIX => {
            let path = bytes.get(2..).unwrap_or_default();
            match path.first() {
                None => Some("unix:(unnamed)".into()),
                Some(0) => {
                    let end = path[1..].iter().position(|b| *b == 0).map_or(path.len(), |i| i + 1);
                    Some(format!("unix:@{}", String::from_utf8_lossy(&path[1..end])))
                }
                Some(_) => {
                    let end = path.iter().position(|b| *b == 0).unwrap_or(path.len());
                    Some(format!("unix:{}", String::from_utf8_lossy(&path[..end])))
                }
            }
        }
        libc::AF_UNSPEC => Some("AF_UNSPEC".into()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_like_strace() {
        assert_eq!(errno_name(13), Some("EACCES"));
        assert_eq!(errno_name(95), Some("EOPNOTSUPP"));
        assert_eq!(errno_name(122), Some("EDQUOT"));
        assert_eq!(errno_name(512), Some("ERESTARTSYS"));
        assert_eq!(errno_name(9999), None);
        assert_eq!(result_errno(512), "EINTR (ERESTARTSYS)");
        assert_eq!(result_errno(2), "ENOENT");
        assert_eq!(signal_name(1), "SIGHUP");
        assert_eq!(signal_name(29), "SIGIO");
        assert_eq!(signal_name(libc::SIGRTMIN() + 2), "SIGRTMIN+2");
        assert_eq!(signal_number("hup"), Some(1));
        assert_eq!(signal_number("SIGTERM"), Some(15));
        assert_eq!(signal_number("SIGBOGUS"), None);
        assert!(default_kills(1) && !default_kills(17));
        assert_eq!(open_flags(0o1101 | 0o2000000), "O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC");
        assert_eq!(open_flags(0), "O_RDONLY");
        assert_eq!(open_flags(0o20200000), "O_RDONLY|O_TMPFILE");
    }

    #[test]
    fn socket_addresses() {
        let mut v4 = vec![2u8, 0, 0x1f, 0x90, 10, 0, 0, 2];
        v4.extend([0; 8]);
        assert_eq!(sockaddr(&v4).as_deref(), Some("10.0.0.2:8080"));
        let mut v6 = vec![10u8, 0, 0, 53, 0, 0, 0, 0];
        v6.extend(std::net::Ipv6Addr::LOCALHOST.octets());
        assert_eq!(sockaddr(&v6).as_deref(), Some("[::1]:53"));
        let mut unix = vec![1u8, 0];
        unix.extend(b"/run/x.sock\0");
        assert_eq!(sockaddr(&unix).as_deref(), Some("unix:/run/x.sock"));
        assert_eq!(sockaddr(&[1, 0, 0, b'a', b'b']).as_deref(), Some("unix:@ab"));
        assert_eq!(sockaddr(&[2]), None);
    }
}
