//! Files read and written on a user's word: opened so that a FIFO, a device or a planted symlink
//! cannot hang, exhaust or redirect heisen (which often runs as root).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Opens `path` for reading only if it is a regular file: a FIFO is opened without blocking and
/// refused, as are devices (`/dev/zero`), sockets and directories.
pub fn open_regular(path: &Path) -> io::Result<(File, u64)> {
    let file = std::fs::OpenOptions::new().read(true).custom_flags(nix::libc::O_NONBLOCK).open(path)?;
    let meta = file.metadata()?;
    let kind = meta.file_type();
    if !kind.is_file() {
        let what = if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_char_device() || kind.is_block_device() {
            "a device"
        } else if kind.is_dir() {
            "a directory"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{what}, not a regular file")));
    }
    // Reads block as usual from here on.
    // SAFETY: fcntl on an fd this function owns.
    unsafe {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
        let flags = nix::libc::fcntl(fd, nix::libc::F_GETFL);
        if flags >= 0 {
            nix::libc::fcntl(fd, nix::libc::F_SETFL, flags & !nix::libc::O_NONBLOCK);
        }
    }
    Ok((file, meta.len()))
}

/// Reads a whole regular file of at most `max` bytes; a larger one is refused before anything is
/// allocated for it.
pub fn read_regular(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let (file, len) = open_regular(path)?;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{len} bytes; files of this kind are at most {max} bytes"),
        ));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("grew past {max} bytes while read")));
    }
    Ok(bytes)
}

/// Writes `bytes` to `path` atomically: into a new file created exclusively beside it (a name
/// nobody can predict and an existing file or symlink there is never followed), synced, then
/// renamed over `path`. A crash leaves the old file or the new one, never half of one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = AtomicFile::create(path)?;
    file.write_all(bytes)?;
    file.commit()
}

/// A file written as a stream and put in place atomically: it is written under a temporary name
/// beside `path` (created exclusively, so a file or symlink planted there is never followed),
/// then synced and renamed over `path` by [`AtomicFile::commit`]. Dropped without a commit, the
/// temporary file is removed and `path` is untouched.
pub struct AtomicFile {
    file: Option<io::BufWriter<File>>,
    tmp: PathBuf,
    path: PathBuf,
}

impl AtomicFile {
    pub fn create(path: &Path) -> io::Result<AtomicFile> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "bundle".into());
        let mut last = None;
        for attempt in 0..16u32 {
            let tmp = dir.join(format!(".{name}.{}.{:08x}.partial", std::process::id(), nonce(attempt)));
            match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o644).open(&tmp) {
                Ok(f) => {
                    let file = Some(io::BufWriter::with_capacity(1 << 20, f));
                    return Ok(AtomicFile { file, tmp, path: path.to_path_buf() });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no temporary name was free")))
    }

    /// Syncs the file and renames it over the path it was created for.
    pub fn commit(mut self) -> io::Result<()> {
        let file = self.file.take().expect("a file not yet committed");
        let file = file.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&self.tmp, &self.path)
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.as_mut().expect("a file not yet committed").write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().expect("a file not yet committed").flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.is_some() || std::fs::symlink_metadata(&self.tmp).is_ok() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// A number nobody can predict: the clock's nanoseconds mixed with the attempt.
fn nonce(attempt: u32) -> u32 {
    let ns = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let mut x = (ns as u64) ^ ((attempt as u64) << 32) ^ (std::process::id() as u64).rotate_left(17);
    // splitmix64's finaliser
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (x ^ (x >> 31)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_and_a_device_are_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid C string path.
        assert_eq!(unsafe { nix::libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = read_regular(&fifo, 1 << 20).unwrap_err();
        assert!(e.to_string().contains("FIFO"), "{e}");
        let e = read_regular(Path::new("/dev/zero"), 1 << 20).unwrap_err();
        assert!(e.to_string().contains("device"), "{e}");
        let big = dir.path().join("big");
        File::create(&big).unwrap().set_len(3 << 30).unwrap();
        let e = read_regular(&big, 1 << 20).unwrap_err();
        assert!(e.to_string().contains("at most"), "{e}");
    }

    #[test]
    fn a_planted_symlink_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        let out = dir.path().join("out.heisen");
        std::os::unix::fs::symlink(&victim, &out).unwrap();
        // The old predictable temporary name, planted too.
        std::os::unix::fs::symlink(&victim, dir.path().join("out.partial")).unwrap();
        write_atomic(&out, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "new");
        assert!(!std::fs::symlink_metadata(&out).unwrap().file_type().is_symlink());
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".partial") && n != "out.partial")
            .collect();
        assert!(left.is_empty(), "temporary files left: {left:?}");
    }
}
