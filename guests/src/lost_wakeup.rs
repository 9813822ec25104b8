//! Story 2 (lost-wakeup): the server that strace fixes.
//!
//! - `eventd`: a node's service. Two acceptor threads (TCP and a unix socket) queue accepted
//!   connections for one event loop and wake it through an eventfd that the loop waits on with
//!   an edge-triggered `epoll_wait`. A third thread answers status requests on UDP (the SNMP
//!   endpoint of the story), outside the loop. The bug, a real one: an acceptor only signals the
//!   eventfd when the queue was empty (the loop "will drain it anyway"), and the loop takes the
//!   queue, serves the batch, and only *then* acknowledges the wakeup by reading the eventfd. A
//!   connection that arrives while the loop serves a batch signals (the queue was empty again),
//!   and that signal is read away as if it were the old one: two connections inside one wakeup
//!   leave the second in the queue, no acceptor ever signals again (the queue is never empty),
//!   and the loop sits in `epoll_wait` for good. TCP and the unix socket go dark; UDP answers.
//!   When `epoll_wait` returns EINTR (a ptrace attach does that) the loop looks at the queue
//!   anyway, finds the work, and recovers.
//! - `upload`: a TCP client that sends a report in `--chunks` chunks, one `write(2)` each, and
//!   waits for the server's acknowledgement of each: the loop serves it for a while.
//! - `healthcheck`: the node's local monitoring check on the unix socket, fired once the service
//!   takes traffic (`--when-busy-ms`: it watches the status counter) and `--delay-ms` later. Without an answer it
//!   probes TCP and UDP, says the node is dark and, like the on-call engineer, attaches to the
//!   server with ptrace (`strace -p`), detaches, and asks again. It exits 1 when the node was dark.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{io, Failure, Flags};

/// A connection accepted but not yet served.
enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

struct Queue {
    conns: Mutex<Vec<(u64, Conn)>>,
    wakeup: OwnedFd,
}

impl Queue {
    /// Queues a connection; signals the loop only when the queue was empty (the bug's first half).
    fn push(&self, n: u64, conn: Conn) {
        let kind = match conn {
            Conn::Tcp(_) => "tcp",
            Conn::Unix(_) => "unix",
        };
        let was_empty = {
            let mut q = self.conns.lock().expect("queue");
            let was_empty = q.is_empty();
            q.push((n, conn));
            was_empty
        };
        if was_empty {
            let one = 1u64.to_ne_bytes();
            // SAFETY: an eventfd takes an 8-byte counter increment from a live buffer.
            unsafe { libc::write(self.wakeup.as_raw_fd(), one.as_ptr().cast(), 8) };
        }
        println!("queued connection {n} ({kind}){}", if was_empty { "" } else { " behind others" });
    }
}

pub(crate) fn eventd(flags: &Flags<'_>) -> Result<(), Failure> {
    let listen = flags.required("--listen")?;
    let socket = flags.required("--socket")?;
    if let Some(pidfile) = flags.get("--pidfile") {
        std::fs::write(pidfile, format!("{}\n", std::process::id())).map_err(io("write pidfile"))?;
    }
    // SAFETY: eventfd/epoll_create1 take flags only; the results are checked and owned below.
    let (efd, ep) = unsafe { (libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC), libc::epoll_create1(0)) };
    if efd < 0 || ep < 0 {
        return Err(io("eventfd/epoll")(std::io::Error::last_os_error()));
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    let (wakeup, ep) = unsafe { (OwnedFd::from_raw_fd(efd), OwnedFd::from_raw_fd(ep)) };
    let mut ev = libc::epoll_event { events: (libc::EPOLLIN | libc::EPOLLET) as u32, u64: 0 };
    // SAFETY: valid epoll fd, valid eventfd, live event.
    if unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, efd, &mut ev) } != 0 {
        return Err(io("epoll_ctl")(std::io::Error::last_os_error()));
    }
    let queue = Arc::new(Queue { conns: Mutex::new(Vec::new()), wakeup });
    let served = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let accepted = Arc::new(std::sync::atomic::AtomicU64::new(0));

    let tcp = TcpListener::bind(listen).map_err(io("bind tcp"))?;
    let _ = std::fs::remove_file(socket);
    let unix = UnixListener::bind(socket).map_err(io("bind unix socket"))?;
    let udp = UdpSocket::bind(listen).map_err(io("bind udp"))?;
    let (q, n) = (queue.clone(), accepted.clone());
    std::thread::spawn(move || {
        for s in tcp.incoming().flatten() {
            q.push(n.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1, Conn::Tcp(s));
        }
    });
    let (q, n) = (queue.clone(), accepted.clone());
    std::thread::spawn(move || {
        for s in unix.incoming().flatten() {
            q.push(n.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1, Conn::Unix(s));
        }
    });
    let (count, n) = (served.clone(), accepted.clone());
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((_, from)) = udp.recv_from(&mut buf) {
            let status = format!(
                "up; {} connections accepted, {} served\n",
                n.load(std::sync::atomic::Ordering::SeqCst),
                count.load(std::sync::atomic::Ordering::SeqCst)
            );
            let _ = udp.send_to(status.as_bytes(), from);
        }
    });
    println!("listening on tcp+udp {listen} and unix {socket}");
    println!("ready");

    let mut events = [libc::epoll_event { events: 0, u64: 0 }; 8];
    loop {
        // SAFETY: valid epoll fd and a live, correctly sized event array.
        let n = unsafe { libc::epoll_wait(ep.as_raw_fd(), events.as_mut_ptr(), events.len() as i32, -1) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(io("epoll_wait")(e));
            }
            // Interrupted (a signal, a debugger attaching): look at the queue anyway.
            println!("event loop: epoll_wait interrupted (EINTR); looking at the queue");
        }
        let batch = std::mem::take(&mut *queue.conns.lock().expect("queue"));
        for (n, conn) in batch {
            let answer = match conn {
                Conn::Tcp(s) => serve(s),
                Conn::Unix(s) => serve(s),
            };
            if let Some(what) = answer {
                served.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                println!("answered connection {n}: {what}");
            }
        }
        // Acknowledge the wakeup, after the batch (the bug's second half: a signal for a
        // connection queued while serving is read away here).
        let mut counter = [0u8; 8];
        // SAFETY: a nonblocking eventfd read into a live 8-byte buffer; EAGAIN is fine.
        unsafe { libc::read(queue.wakeup.as_raw_fd(), counter.as_mut_ptr().cast(), 8) };
    }
}

/// Serves one connection to the end: `PING` gets `PONG`; `UPLOAD CHUNKS SIZE` gets one ack byte
/// per chunk and a summary. Returns what was answered, or None for a silent or closed client.
fn serve<S: Read + Write + AsRawFd>(mut s: S) -> Option<String> {
    set_timeouts(s.as_raw_fd(), Duration::from_secs(2));
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.last() != Some(&b'\n') {
        match s.read(&mut byte) {
            Ok(1) => line.push(byte[0]),
            _ => return None,
        }
        if line.len() > 256 {
            return None;
        }
    }
    let line = String::from_utf8_lossy(&line).trim().to_string();
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["PING"] => s.write_all(b"PONG\n").ok().map(|_| "PONG".to_string()),
        ["UPLOAD", chunks, size] => {
            let (chunks, size): (u64, usize) = (chunks.parse().ok()?, size.parse().ok()?);
            let mut chunk = vec![0u8; size.min(1 << 20)];
            let summary = format!("stored {} bytes", chunks * chunk.len() as u64);
            for k in 1..=chunks {
                s.read_exact(&mut chunk).ok()?;
                // One write per chunk: an ack, and after the last one the summary with it.
                let ack = if k == chunks { format!("+{summary}\n") } else { "+".to_string() };
                crate::write_all_raw(s.as_raw_fd(), ack.as_bytes()).ok()?;
            }
            Some(summary)
        }
        _ => {
            let _ = s.write_all(b"ERR unknown request\n");
            None
        }
    }
}

fn set_timeouts(fd: i32, t: Duration) {
    let tv = libc::timeval { tv_sec: t.as_secs() as libc::time_t, tv_usec: t.subsec_micros() as libc::suseconds_t };
    for opt in [libc::SO_RCVTIMEO, libc::SO_SNDTIMEO] {
        // SAFETY: setsockopt reads a timeval of the given size from a live local.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
    }
}

pub(crate) fn upload(flags: &Flags<'_>) -> Result<(), Failure> {
    let server = flags.required("--server")?;
    let chunks = flags.number("--chunks", 64)?;
    let size = flags.number("--chunk-size", 16384)? as usize;
    std::thread::sleep(Duration::from_millis(crate::delay_ms(flags)?));
    let mut stream = crate::connect(server)?;
    set_timeouts(stream.as_raw_fd(), Duration::from_secs(2));
    let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let silent = |what: &str| Failure { code: 1, message: format!("no answer from {server} {what}") };
    for k in 1..=chunks {
        // One write(2) per chunk (the first carries the request line), so gates can count them.
        let mut message = Vec::with_capacity(size + 32);
        if k == 1 {
            message.extend_from_slice(format!("UPLOAD {chunks} {size}\n").as_bytes());
        }
        message.extend_from_slice(&data);
        crate::write_all_raw(stream.as_raw_fd(), &message).map_err(|_| silent(&format!("taking chunk {k}")))?;
        let mut ack = [0u8; 1];
        stream.read_exact(&mut ack).map_err(|_| silent(&format!("after chunk {k}")))?;
    }
    let mut summary = String::new();
    BufReader::new(&stream).read_line(&mut summary).map_err(|_| silent("at the end"))?;
    let summary = summary.trim_start_matches('+');
    println!("uploaded {chunks} chunks of {size} bytes: {}", summary.trim());
    Ok(())
}

/// Sends `PING` and waits up to `timeout` for `PONG`.
fn ping<S: Read + Write + AsRawFd>(mut s: S, timeout: Duration) -> bool {
    set_timeouts(s.as_raw_fd(), timeout);
    if s.write_all(b"PING\n").is_err() {
        return false;
    }
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply).is_ok() && reply.trim() == "PONG"
}

/// The service's status line over UDP (the SNMP endpoint of the story), if it answers in 300 ms.
fn udp_status(addr: &str) -> Option<String> {
    let u = UdpSocket::bind("0.0.0.0:0").ok()?;
    u.set_read_timeout(Some(Duration::from_millis(300))).ok()?;
    u.send_to(b"status\n", addr).ok()?;
    let mut buf = [0u8; 256];
    let (n, _) = u.recv_from(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).trim().to_string())
}

fn ping_unix(socket: &str, timeout: Duration) -> bool {
    UnixStream::connect(socket).is_ok_and(|s| ping(s, timeout))
}

pub(crate) fn healthcheck(flags: &Flags<'_>) -> Result<(), Failure> {
    let socket = flags.required("--socket")?;
    let tcp = flags.required("--tcp")?;
    let timeout = Duration::from_millis(flags.number("--timeout-ms", 1000)?);
    // The check fires once the service takes traffic: it watches the status endpoint's
    // connection counter (bounded), then waits its own delay.
    let busy_wait = Duration::from_millis(flags.number("--when-busy-ms", 0)?);
    let started = Instant::now();
    while started.elapsed() < busy_wait && udp_status(tcp).is_none_or(|s| s.contains(" 0 connections accepted")) {
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(crate::delay_ms(flags)?));
    if ping_unix(socket, timeout) {
        println!("unix socket answered PONG: healthy");
        return Ok(());
    }
    println!("no answer on the unix socket {socket} within {} ms", timeout.as_millis());
    let tcp_answered = TcpStream::connect(tcp).is_ok_and(|s| ping(s, Duration::from_millis(300)));
    println!("tcp {tcp}: {}", if tcp_answered { "answered" } else { "no answer" });
    let udp = udp_status(tcp);
    match &udp {
        Some(status) => println!("udp {tcp} answered: {status}"),
        None => println!("udp {tcp}: no answer"),
    }
    println!(
        "node is dark: the unix socket{} silent, udp {}",
        if tcp_answered { " is" } else { " and tcp are" },
        if udp.is_some() { "answers" } else { "silent too" }
    );
    if let Some(pidfile) = flags.get("--attach-pidfile") {
        match std::fs::read_to_string(pidfile).ok().and_then(|t| t.trim().parse::<i32>().ok()) {
            None => println!("cannot attach: no pid in {pidfile}"),
            Some(pid) => match attach_and_detach(pid) {
                Ok(()) => println!("attached to pid {pid} with ptrace (like strace -p) and detached"),
                Err(e) => println!("cannot attach to pid {pid}: {e}"),
            },
        }
        // Give the loop a moment to look at its queue, as a person reading strace output would.
        std::thread::sleep(Duration::from_millis(100));
        if ping_unix(socket, timeout) {
            println!("after the attach the unix socket answered PONG: the server recovered");
        } else {
            println!("after the attach the unix socket is still silent");
        }
    }
    Err(Failure { code: 1, message: "the node went dark (no answer on its unix socket)".into() })
}

/// What `strace -p PID` does first: seize, interrupt (the tracee stops; a blocked call returns
/// EINTR), wait for the stop; then let go.
fn attach_and_detach(pid: i32) -> std::io::Result<()> {
    let call = |req: libc::c_uint| {
        // SAFETY: seize/interrupt/detach take no memory arguments.
        if unsafe { libc::ptrace(req, pid, std::ptr::null_mut::<libc::c_void>(), std::ptr::null_mut::<libc::c_void>()) }
            < 0
        {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    call(libc::PTRACE_SEIZE)?;
    if let Err(e) = call(libc::PTRACE_INTERRUPT) {
        let _ = call(libc::PTRACE_DETACH);
        return Err(e);
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut status = 0;
    // Wait (bounded) for the interrupt stop.
    loop {
        // SAFETY: status is a valid out-pointer; WNOHANG keeps the loop bounded.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::__WALL | libc::WNOHANG) };
        if r == pid || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(50));
    call(libc::PTRACE_DETACH)
}
