//! Story 3 (butterfly): a build host without tmpfs on /dev/shm produces an image that hangs at boot.
//!
//! - `tmpfs-mount --target DIR [--hold]`: mounts a tmpfs on DIR (the build chroot's /dev/shm).
//!   With `--hold` it stays up as a service and unmounts on SIGTERM.
//! - `tidy-mounts --under DIR`: a service that, when stopped, unmounts whatever was mounted under
//!   DIR during the run, so runs never see each other's mounts.
//! - `postinst --root DIR`: the package's post-install script in the chroot, then a hard reset
//!   and boot of the image. It reads the mount table; if the chroot's /dev/shm is a tmpfs it
//!   links `etc/network/run` into it (`symlink`), otherwise it makes a plain directory (`mkdir`).
//!   `ifup lo` records `lo=up` there; the reset empties tmpfs; at boot a surviving state file
//!   makes lo look configured, so it is never brought up and the HA daemon, reached over
//!   loopback, never answers: exit 1 "waiting for HA to become consistent".

use std::path::{Path, PathBuf};

use crate::{block_stop_signals, io, wait_for_stop, Failure, Flags};

fn mount_tmpfs(target: &Path) -> Result<(), Failure> {
    std::fs::create_dir_all(target).map_err(io("create mount point"))?;
    let c = |s: &str| std::ffi::CString::new(s).map_err(|_| Failure::usage(format!("bad path {s}")));
    let (source, dir, fstype, options) =
        (c("tmpfs")?, c(&target.display().to_string())?, c("tmpfs")?, c("size=1m,mode=1777")?);
    // SAFETY: every pointer is a NUL-terminated string that outlives the call.
    let rc = unsafe { libc::mount(source.as_ptr(), dir.as_ptr(), fstype.as_ptr(), 0, options.as_ptr().cast()) };
    if rc != 0 {
        return Err(io("mount tmpfs")(std::io::Error::last_os_error()));
    }
    Ok(())
}

fn unmount(target: &str) {
    if let Ok(c) = std::ffi::CString::new(target) {
        // SAFETY: a NUL-terminated path.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

pub(crate) fn tmpfs_mount(flags: &Flags<'_>) -> Result<(), Failure> {
    let target = PathBuf::from(flags.required("--target")?);
    let hold = flags.0.iter().any(|a| a == "--hold");
    let stop = hold.then(block_stop_signals);
    mount_tmpfs(&target)?;
    println!("mounted tmpfs on {}", target.display());
    if let Some(stop) = stop {
        println!("ready");
        wait_for_stop(&stop);
        unmount(&target.display().to_string());
        println!("unmounted {}", target.display());
    }
    Ok(())
}

pub(crate) fn tidy_mounts(flags: &Flags<'_>) -> Result<(), Failure> {
    let under = PathBuf::from(flags.required("--under")?);
    let stop = block_stop_signals();
    println!("ready");
    wait_for_stop(&stop);
    let table = std::fs::read_to_string("/proc/self/mountinfo").map_err(io("read mount table"))?;
    let mut targets: Vec<String> = table
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(String::from))
        .filter(|t| Path::new(t).starts_with(&under))
        .collect();
    targets.reverse(); // innermost (latest) first
    for t in &targets {
        unmount(t);
    }
    println!("unmounted {} mount(s) under {}", targets.len(), under.display());
    Ok(())
}

/// Whether `dir` is a tmpfs mount point according to the mount table.
fn is_tmpfs_mount(table: &str, dir: &Path) -> bool {
    table.lines().any(|line| {
        let Some((left, right)) = line.split_once(" - ") else { return false };
        left.split(' ').nth(4).is_some_and(|t| Path::new(t) == dir) && right.starts_with("tmpfs ")
    })
}

pub(crate) fn postinst(flags: &Flags<'_>) -> Result<(), Failure> {
    let root = PathBuf::from(flags.required("--root")?);
    let shm = root.join("dev/shm");
    let run = root.join("etc/network/run");
    std::fs::create_dir_all(&shm).map_err(io("create dev/shm"))?;
    std::fs::create_dir_all(root.join("etc/network")).map_err(io("create etc/network"))?;

    // The post-install script: where does volatile network state go?
    let table = std::fs::read_to_string("/proc/self/mountinfo").map_err(io("read the mount table"))?;
    if is_tmpfs_mount(&table, &shm) {
        std::fs::create_dir_all(shm.join("network")).map_err(io("create dev/shm/network"))?;
        std::os::unix::fs::symlink("../../dev/shm/network", &run).map_err(io("symlink etc/network/run"))?;
        println!("postinst: /dev/shm is tmpfs; etc/network/run -> /dev/shm/network");
    } else {
        std::fs::create_dir(&run).map_err(io("mkdir etc/network/run"))?;
        println!("postinst: /dev/shm is not tmpfs; etc/network/run is a plain directory");
    }

    // First boot: ifup lo records its state.
    std::fs::write(run.join("ifstate"), "lo=up\n").map_err(io("write ifstate"))?;
    println!("ifup lo: lo=up recorded in etc/network/run/ifstate");

    // Hard reset: whatever lived on tmpfs is gone.
    if is_tmpfs_mount(&table, &shm) {
        let _ = std::fs::remove_dir_all(shm.join("network"));
        std::fs::create_dir_all(shm.join("network")).map_err(io("recreate dev/shm/network"))?;
    }
    println!("hard reset");

    // Boot: a surviving state file says lo is up already, so it is never configured.
    match std::fs::read_to_string(run.join("ifstate")) {
        Ok(state) if state.contains("lo=up") => {
            println!("boot: ifstate says lo is up; not configuring lo");
            Err(Failure {
                code: 1,
                message: "HA daemon unreachable over loopback: waiting for HA to become consistent".into(),
            })
        }
        _ => {
            println!("boot: lo configured; HA daemon reachable; image OK");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_tmpfs_mount_on_the_directory_counts() {
        let table = "40 36 0:44 / /c/dev/shm rw - tmpfs tmpfs rw\n41 36 0:45 / /d/dev/shm rw - ext4 /dev/sda rw\n";
        assert!(is_tmpfs_mount(table, Path::new("/c/dev/shm")));
        assert!(!is_tmpfs_mount(table, Path::new("/d/dev/shm")));
        assert!(!is_tmpfs_mount(table, Path::new("/c/dev")));
    }
}
