//! Benchmark workloads: each runs its loop and prints `elapsed_ns=N calls=M`, timing only the
//! loop, so a tracer's start-up and tear-down are not counted against the syscalls.

use std::os::fd::AsRawFd;
use std::time::Instant;

use crate::{io, Failure, Flags};

/// `--start-after-ms N`: wait before the timed loop (a tracer attaching to a running process
/// gets the time to do so; the wait is not timed).
fn start_after(flags: &Flags<'_>) -> Result<(), Failure> {
    std::thread::sleep(std::time::Duration::from_millis(flags.number("--start-after-ms", 0)?));
    Ok(())
}

fn report(start: Instant, calls: u64) {
    println!("elapsed_ns={} calls={calls}", start.elapsed().as_nanos());
}

/// `storm --writes N`: N one-byte writes to /dev/null.
pub fn storm(flags: &Flags<'_>) -> Result<(), Failure> {
    let n = flags.number("--writes", 1_000_000)?;
    let null = std::fs::OpenOptions::new().write(true).open("/dev/null").map_err(io("open /dev/null"))?;
    let byte = [0u8; 1];
    start_after(flags)?;
    let start = Instant::now();
    for _ in 0..n {
        // SAFETY: valid fd and a one-byte live buffer.
        unsafe { libc::write(null.as_raw_fd(), byte.as_ptr().cast(), 1) };
    }
    report(start, n);
    Ok(())
}

/// `load --mib M --file PATH`: M MiB written in 64 KiB chunks (the story-1 writer's load).
pub fn load(flags: &Flags<'_>) -> Result<(), Failure> {
    let mib = flags.number("--mib", 1024)?;
    let path = flags.required("--file")?;
    let file = std::fs::File::create(path).map_err(io("create load file"))?;
    let chunk = vec![0x5au8; 65536];
    let n = mib * 16;
    start_after(flags)?;
    let start = Instant::now();
    for _ in 0..n {
        crate::write_all_raw(file.as_raw_fd(), &chunk).map_err(io("write"))?;
    }
    report(start, n);
    drop(file);
    let _ = std::fs::remove_file(path);
    Ok(())
}

/// `getppid --calls N`: the cheapest syscall, for the tax on processes heisen does not trace.
pub fn getppid(flags: &Flags<'_>) -> Result<(), Failure> {
    let n = flags.number("--calls", 1_000_000)?;
    let start = Instant::now();
    for _ in 0..n {
        // SAFETY: getppid has no preconditions.
        std::hint::black_box(unsafe { libc::getppid() });
    }
    report(start, n);
    Ok(())
}

/// `files --iterations N --dir DIR`: a service's file work, N times on distinct paths:
/// `openat(O_WRONLY|O_CREAT|O_TRUNC)`, a 64-byte write, `rename` into place, `close` (four calls
/// per iteration, each path argument a fresh string). The renamed files are removed after the
/// timed loop.
pub fn files(flags: &Flags<'_>) -> Result<(), Failure> {
    let n = flags.number("--iterations", 20_000)?;
    let dir = std::path::PathBuf::from(flags.required("--dir")?);
    std::fs::create_dir_all(&dir).map_err(io("create the files directory"))?;
    let cstr = |p: std::path::PathBuf| {
        std::ffi::CString::new(p.into_os_string().into_encoded_bytes())
            .map_err(|_| Failure::usage("NUL in --dir".into()))
    };
    let names: Vec<(std::ffi::CString, std::ffi::CString)> = (0..n)
        .map(|i| Ok((cstr(dir.join(format!("f{i}.tmp")))?, cstr(dir.join(format!("f{i}")))?)))
        .collect::<Result<_, Failure>>()?;
    let data = [0x5au8; 64];
    start_after(flags)?;
    let start = Instant::now();
    for (tmp, name) in &names {
        // SAFETY: NUL-terminated paths and a live buffer; the fd is ours and closed below.
        unsafe {
            let fd = libc::openat(libc::AT_FDCWD, tmp.as_ptr(), libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC, 0o644);
            if fd < 0 {
                return Err(io("openat")(std::io::Error::last_os_error()));
            }
            libc::write(fd, data.as_ptr().cast(), data.len());
            libc::rename(tmp.as_ptr(), name.as_ptr());
            libc::close(fd);
        }
    }
    report(start, n * 4);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
