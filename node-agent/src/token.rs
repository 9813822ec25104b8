//! The agent's token: whoever holds it can launch processes as the agent's user (root), so it is
//! always required, kept in a file only its owner can read, and compared in constant time.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq;

/// The token in `path`, refused when the file is readable or writable by group or others, or
/// owned by another user than the agent's (anyone who can read it is root on this host).
pub(crate) fn load(path: &Path) -> Result<String, String> {
    let token = heisen_certs::read_private(path, "token file").map_err(|e| e.to_string())?;
    Ok(token.trim().to_string())
}

/// The agent's own token when none is given: `DATA/token`, made on first start (32 random bytes
/// in hex, mode 0600, created exclusively) and read (with `load`'s checks) after that.
pub(crate) fn own(data: &Path) -> Result<(String, PathBuf), String> {
    let path = data.join("token");
    if !path.exists() {
        let mut bytes = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .map_err(|e| format!("cannot read /dev/urandom for a token: {e}"))?;
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let created = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path);
        match created {
            Ok(mut f) => {
                f.write_all(format!("{token}\n").as_bytes())
                    .and_then(|_| f.sync_all())
                    .map_err(|e| format!("cannot write token file {}: {e}", path.display()))?;
            }
            // Another agent on the same data directory made it first: read theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("cannot create token file {}: {e}", path.display())),
        }
    }
    Ok((load(&path)?, path))
}

/// Whether an `authorization` header carries the token, compared in constant time.
pub(crate) fn admits(expected: &str, header: Option<&str>) -> bool {
    let Some(got) = header.and_then(|h| h.strip_prefix("Bearer ")) else { return false };
    got.as_bytes().ct_eq(expected.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_token_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        std::fs::write(&path, "s3cret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load(&path).unwrap_err();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(load(&path).unwrap(), "s3cret");
    }

    #[test]
    fn the_own_token_is_made_once_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (first, path) = own(dir.path()).unwrap();
        assert_eq!(first.len(), 64);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let (again, _) = own(dir.path()).unwrap();
        assert_eq!(first, again);
    }

    #[test]
    fn only_the_exact_bearer_token_is_admitted() {
        assert!(admits("abc", Some("Bearer abc")));
        for wrong in [None, Some("abc"), Some("Bearer ab"), Some("Bearer abcd"), Some("bearer abc"), Some("Bearer ")] {
            assert!(!admits("abc", wrong), "{wrong:?}");
        }
    }
}
