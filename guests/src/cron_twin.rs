//! Story 4 (cron-twin): half of a team's jobs vanish because a forgotten replacement server runs
//! the same crontab and races the legitimate host for every new job file.
//!
//! - `cron-host --dir DIR --line 'SCHEDULE COMMAND'`: installs the line as root's crontab in DIR and
//!   becomes busybox `crond -f -c DIR` (a real cron daemon, Debian's busybox-static), named
//!   `crond` so it looks like one to everything that watches.
//! - `pickup --spool DIR --queue FILE --accept-from IP`: the legacy job, the same line on every
//!   host: claims each job file in the shared spool with `flock(LOCK_EX|LOCK_NB)`, then submits
//!   it to the cluster queue if the cluster accepts this host (one of its addresses is IP), or
//!   drops it with a log line; either way the file is removed.
//! - `submit --spool DIR --queue FILE --jobs N`: the team submitting N job files at once; it
//!   waits until the spool is empty and fails naming every job that never reached the queue.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{io, Failure, Flags};

/// Where busybox with the crond applet lives (Debian's busybox-static; `./scripts/setup`).
fn busybox() -> Result<PathBuf, Failure> {
    let candidates = ["/bin/busybox", "/usr/bin/busybox", "/usr/sbin/busybox"];
    for c in candidates {
        let has_crond = std::process::Command::new(c)
            .arg("--list")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).lines().any(|l| l == "crond"))
            .unwrap_or(false);
        if has_crond {
            return Ok(PathBuf::from(c));
        }
    }
    Err(Failure {
        code: 2,
        message: "no busybox with the crond applet; install Debian's busybox-static (./scripts/setup does)".into(),
    })
}

pub(crate) fn cron_host(flags: &Flags<'_>) -> Result<(), Failure> {
    let dir = PathBuf::from(flags.required("--dir")?);
    let line = flags.required("--line")?;
    std::fs::create_dir_all(&dir).map_err(io("create crontab dir"))?;
    std::fs::write(dir.join("root"), format!("{line}\n")).map_err(io("write crontab"))?;
    // busybox picks the applet from argv[0]'s name: a link called crond makes the process crond.
    let bin = dir.parent().unwrap_or(Path::new("/tmp")).join("cron-bin");
    std::fs::create_dir_all(&bin).map_err(io("create cron bin dir"))?;
    let link = bin.join("crond");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(busybox()?, &link).map_err(io("link crond"))?;
    println!("crontab {}: {line}", dir.join("root").display());
    println!("ready");
    let _ = std::io::stdout().flush();
    let err = std::process::Command::new(&link).args(["-f", "-l", "8", "-c"]).arg(&dir).env("SHELL", "/bin/sh").exec();
    Err(io("exec busybox crond")(err))
}

pub(crate) fn pickup(flags: &Flags<'_>) -> Result<(), Failure> {
    let spool = PathBuf::from(flags.required("--spool")?);
    let queue = flags.required("--queue")?;
    let accepted = flags.required("--accept-from")?;
    let mine = own_addresses();
    let host = mine.first().cloned().unwrap_or_else(|| "this host".into());
    let may_submit = mine.iter().any(|a| a == accepted);
    // Each claimed job takes a while (reading, checking, submitting). Two cron daemons fire up to a
    // second apart (each sleeps whole seconds to the minute from its own start), so the jobs of
    // both hosts overlap only when a pickup of all files takes longer than that.
    let per_job = Duration::from_millis(flags.number("--per-job-ms", 200)?);
    // Started by hand (not by cron) the job may run before the files are there: wait a little.
    let deadline = Instant::now() + Duration::from_millis(flags.number("--wait-ms", 0)?);
    let has_files = |dir: &Path| std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some());
    while !has_files(&spool) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut names: Vec<String> = match std::fs::read_dir(&spool) {
        Ok(dir) => dir.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    let (mut taken, mut dropped) = (0, 0);
    for name in names {
        let path = spool.join(&name);
        let Ok(mut file) = std::fs::File::open(&path) else { continue }; // the other host was faster
                                                                         // SAFETY: flock takes an fd and flags by value.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            continue; // claimed by the other host right now
        }
        if file.metadata().map(|m| m.nlink() == 0).unwrap_or(true) {
            continue; // claimed and removed by the other host meanwhile
        }
        let mut job = String::new();
        let _ = file.read_to_string(&mut job);
        std::thread::sleep(per_job);
        if may_submit {
            let mut q = std::fs::OpenOptions::new().create(true).append(true).open(queue).map_err(io("open queue"))?;
            writeln!(q, "{name} {host}").map_err(io("append to queue"))?;
            println!("{name}: submitted from {host}");
        } else {
            dropped += 1;
            println!("{name}: {host} may not submit to the cluster; job dropped");
        }
        std::fs::remove_file(&path).map_err(io("remove job file"))?;
        taken += 1;
    }
    println!("{host}: took {taken} job(s), dropped {dropped}");
    Ok(())
}

/// This network namespace's IPv4 addresses, loopback excluded.
fn own_addresses() -> Vec<String> {
    let mut out = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list`, which is walked read-only and freed once below.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            return out;
        }
        let mut cur = list;
        while !cur.is_null() {
            let addr = (*cur).ifa_addr;
            if !addr.is_null() && (*addr).sa_family as i32 == libc::AF_INET {
                let sin = &*(addr as *const libc::sockaddr_in);
                let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                if !ip.is_loopback() {
                    out.push(ip.to_string());
                }
            }
            cur = (*cur).ifa_next;
        }
        libc::freeifaddrs(list);
    }
    out
}

pub(crate) fn submit(flags: &Flags<'_>) -> Result<(), Failure> {
    let spool = PathBuf::from(flags.required("--spool")?);
    let queue = flags.required("--queue")?;
    let jobs = flags.number("--jobs", 8)?;
    let wait = Duration::from_millis(flags.number("--wait-ms", 75_000)?);
    let _ = std::fs::remove_file(queue);
    let _ = std::fs::remove_dir_all(&spool); // a previous capture's run of the same number
                                             // All files appear at once (a rename of a staged directory), like a batch copied in.
    let staging = spool.with_extension("staging");
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(io("create staging dir"))?;
    let names: Vec<String> = (1..=jobs).map(|i| format!("job-{i:02}")).collect();
    for name in &names {
        std::fs::write(staging.join(name), format!("run analysis {name}\n")).map_err(io("write job file"))?;
    }
    if let Some(parent) = spool.parent() {
        std::fs::create_dir_all(parent).map_err(io("create spool parent"))?;
    }
    std::fs::rename(&staging, &spool).map_err(io("publish the spool"))?;
    println!("{jobs} job files in {}", spool.display());
    let deadline = Instant::now() + wait;
    loop {
        let left = std::fs::read_dir(&spool).map(|d| d.count()).unwrap_or(0);
        if left == 0 {
            break;
        }
        if Instant::now() >= deadline {
            return Err(Failure {
                code: 1,
                message: format!(
                    "{left} job file(s) still in the spool after {} s: nobody picked them up",
                    wait.as_secs()
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let queued = std::fs::read_to_string(queue).unwrap_or_default();
    let lost: Vec<&String> = names.iter().filter(|n| !queued.lines().any(|l| l.split(' ').next() == Some(n))).collect();
    if lost.is_empty() {
        println!("all {jobs} jobs reached the cluster");
        return Ok(());
    }
    let lost: Vec<&str> = lost.iter().map(|s| s.as_str()).collect();
    println!("lost: {}", lost.join(" "));
    Err(Failure {
        code: 1,
        message: format!("{} of {jobs} jobs never reached the cluster: {}", lost.len(), lost.join(" ")),
    })
}
