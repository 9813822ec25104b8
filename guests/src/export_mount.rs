//! `export-mount`: the client side of story 1's export, like an NFS client in the kernel.
//!
//! It mounts a one-directory FUSE filesystem; every `write(2)` on a file in it is sent as one chunk
//! over TCP to the `export-server`, and the server's status becomes the result of the caller's
//! `write(2)`: a refusal is `-EACCES` from the kernel, exactly what the story's writer saw. Files
//! are opened with direct I/O so each write reaches the server synchronously.
//!
//! Without `/dev/fuse` access (not root) it says so and stays up as a plain service; the writer
//! then talks to the server directly.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner, MountOption,
    OpenFlags, ReplyAttr, ReplyCreate, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, Request, WriteFlags,
};

use crate::{io, Failure, Flags};

/// The FUSE super magic (`statfs.f_type`) of a mounted FUSE filesystem.
pub const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

const ROOT: u64 = 1;
const TTL: Duration = Duration::from_millis(100);

struct ExportFs {
    server: Mutex<TcpStream>,
    /// name -> (inode, size); one flat directory.
    files: Mutex<Vec<(String, u64)>>,
    uid: u32,
    gid: u32,
}

impl ExportFs {
    fn attr(&self, ino: u64, size: u64) -> FileAttr {
        let now = SystemTime::now();
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: now,
            mtime: now,
            ctime: now,
            crtime: UNIX_EPOCH,
            kind: if ino == ROOT { FileType::Directory } else { FileType::RegularFile },
            perm: if ino == ROOT { 0o755 } else { 0o644 },
            nlink: if ino == ROOT { 2 } else { 1 },
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 65536,
            flags: 0,
        }
    }

    fn file(&self, ino: u64) -> Option<(String, u64)> {
        let files = self.files.lock().expect("files");
        files.get((ino as usize).checked_sub(2)?).cloned()
    }

    /// Sends one chunk to the export server; true when the server stored it.
    fn forward(&self, data: &[u8]) -> std::io::Result<bool> {
        let mut server = self.server.lock().expect("server");
        server.write_all(&(data.len() as u32).to_le_bytes())?;
        server.write_all(data)?;
        let mut status = [0u8; 1];
        server.read_exact(&mut status)?;
        Ok(status[0] == 0)
    }
}

impl Filesystem for ExportFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let files = self.files.lock().expect("files");
        match files.iter().position(|(n, _)| OsStr::new(n) == name) {
            Some(i) if parent.0 == ROOT => reply.entry(&TTL, &self.attr(i as u64 + 2, files[i].1), Generation(0)),
            _ => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        if ino.0 == ROOT {
            return reply.attr(&TTL, &self.attr(ROOT, 0));
        }
        match self.file(ino.0) {
            Some((_, size)) => reply.attr(&TTL, &self.attr(ino.0, size)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        if let (Some(size), Some(i)) = (size, (ino.0 as usize).checked_sub(2)) {
            if let Some(f) = self.files.lock().expect("files").get_mut(i) {
                f.1 = size;
            }
        }
        self.getattr(_req, ino, None, reply);
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.file(ino.0) {
            Some(_) => reply.opened(FileHandle(ino.0), FopenFlags::FOPEN_DIRECT_IO),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        if parent.0 != ROOT {
            return reply.error(Errno::ENOENT);
        }
        let mut files = self.files.lock().expect("files");
        let name = name.to_string_lossy().to_string();
        let i = match files.iter().position(|(n, _)| *n == name) {
            Some(i) => i,
            None => {
                files.push((name, 0));
                files.len() - 1
            }
        };
        let ino = i as u64 + 2;
        reply.created(&TTL, &self.attr(ino, 0), Generation(0), FileHandle(ino), FopenFlags::FOPEN_DIRECT_IO);
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.forward(data) {
            Ok(true) => {
                let end = offset + data.len() as u64;
                if let Some(f) =
                    (ino.0 as usize).checked_sub(2).and_then(|i| self.files.lock().expect("files").get_mut(i).cloned())
                {
                    let i = ino.0 as usize - 2;
                    self.files.lock().expect("files")[i] = (f.0, f.1.max(end));
                }
                reply.written(data.len() as u32)
            }
            Ok(false) => reply.error(Errno::EACCES),
            Err(_) => reply.error(Errno::EIO),
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        reply.ok();
    }
}

/// True when `dir` is a mounted FUSE filesystem.
pub fn is_fuse_mount(dir: &Path) -> bool {
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs fills a zeroed, correctly sized struct from a NUL-terminated path.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(path.as_ptr(), &mut st) == 0 && st.f_type as i64 == FUSE_SUPER_MAGIC
    }
}

pub fn run(flags: &Flags<'_>) -> Result<(), Failure> {
    let server = flags.required("--server")?;
    let mount = PathBuf::from(flags.required("--mount")?);
    // A previous run killed hard may have left a dead mount behind.
    if let Ok(path) = std::ffi::CString::new(mount.as_os_str().as_encoded_bytes()) {
        // SAFETY: umount2 of a NUL-terminated path; failure (nothing mounted) is fine.
        unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
    }
    std::fs::create_dir_all(&mount).map_err(io("create mount point"))?;
    let stream = crate::connect(server)?;
    // Block the stop signals before any thread starts, then wait for them below.
    let set = crate::block_stop_signals();
    // SAFETY: getuid/getgid have no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let fs = ExportFs { server: Mutex::new(stream), files: Mutex::new(Vec::new()), uid, gid };
    let mut config = Config::default();
    config.mount_options = vec![MountOption::FSName("heisen-export".into()), MountOption::RW];
    let session = match fuser::spawn_mount(fs, &mount, &config) {
        Ok(session) => {
            println!("mounted {server} at {}; ready", mount.display());
            Some(session)
        }
        Err(e) => {
            println!("cannot mount the export with FUSE ({e}); writers talk to {server} directly; ready");
            None
        }
    };
    crate::wait_for_stop(&set);
    drop(session); // unmounts
    Ok(())
}
