//! TLS material for a fleet of agents: a small certificate authority, a certificate per agent
//! (server) and per coordinator (client), and reading private files with the checks a credential
//! worth root deserves.
//!
//! An agent's certificate can only serve (serverAuth) and a coordinator's can only call
//! (clientAuth): a key stolen from one agent's host does not open the other agents.
//!
//! Layout of a directory made by [`init`] and [`issue`]:
//!
//! ```text
//! ca.pem   ca.key         the authority (keep ca.key off the agents' hosts)
//! NAME.pem NAME.key       one agent or client; keys are 0600, created exclusively
//! ```

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot read {what} {path}: {source}")]
    Read { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{path} already exists: heisen never overwrites keys and certificates; remove it first, or use another directory")]
    Exists { path: PathBuf },
    #[error("{what} {path} is owned by uid {owner}, not by this user (uid {euid}): whoever owns it can replace it; chown it")]
    Owner { what: &'static str, path: PathBuf, owner: u32, euid: u32 },
    #[error(
        "{what} {path} has mode {mode:o}: group or others can read it, and it is worth root on every agent that \
         trusts it; chmod 600 {path}"
    )]
    Mode { what: &'static str, path: PathBuf, mode: u32 },
    #[error("{what} {path} is empty")]
    Empty { what: &'static str, path: PathBuf },
    #[error("`{name}` cannot name a certificate: use letters, digits, `.`, `_` and `-`")]
    BadName { name: String },
    #[error("`{san}` is neither an IP address nor a DNS name: {reason}")]
    BadSan { san: String, reason: String },
    #[error("an agent's certificate needs at least one address it is reached at (--ip or --dns)")]
    NoSan,
    #[error("{path} is not a certificate authority of heisen's (or is damaged): {source}")]
    BadCa { path: PathBuf, source: rcgen::Error },
    #[error("cannot make {what}: {source}")]
    Generate { what: String, source: rcgen::Error },
}

pub type Result<T, E = CertError> = std::result::Result<T, E>;

/// What a certificate is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// An agent, reached at these IP addresses and DNS names.
    Agent { sans: Vec<String> },
    /// A coordinator (or anyone who calls agents).
    Client,
}

/// A certificate and its key, as files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The authority's files in `dir`.
pub fn ca_files(dir: &Path) -> Pair {
    Pair { cert: dir.join("ca.pem"), key: dir.join("ca.key") }
}

/// The files of certificate `name` in `dir`.
pub fn files(dir: &Path, name: &str) -> Pair {
    Pair { cert: dir.join(format!("{name}.pem")), key: dir.join(format!("{name}.key")) }
}

/// Makes a new authority in `dir` (created if missing): `ca.pem` and `ca.key` (0600), valid for
/// `days`. Refuses to replace an existing one.
pub fn init(dir: &Path, days: u32) -> Result<Pair> {
    let out = ca_files(dir);
    for path in [&out.cert, &out.key] {
        if path.exists() {
            return Err(CertError::Exists { path: path.clone() });
        }
    }
    std::fs::create_dir_all(dir).map_err(|source| CertError::Write { path: dir.into(), source })?;
    let key = KeyPair::generate().map_err(|source| CertError::Generate { what: "the CA key".into(), source })?;
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(&format!("heisen CA {}", random_hex(4)));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    validity(&mut params, days);
    let cert =
        params.self_signed(&key).map_err(|source| CertError::Generate { what: "the CA certificate".into(), source })?;
    write_new(&out.key, key.serialize_pem().as_bytes(), 0o600)?;
    write_new(&out.cert, cert.pem().as_bytes(), 0o644)?;
    Ok(out)
}

/// Issues certificate `name` for `role`, signed by the authority in `dir`: `NAME.pem` and
/// `NAME.key` (0600) in `dir`, valid for `days`.
pub fn issue(dir: &Path, name: &str, role: &Role, days: u32) -> Result<Pair> {
    if name.is_empty() || name == "ca" || !name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
        return Err(CertError::BadName { name: name.into() });
    }
    let out = files(dir, name);
    for path in [&out.cert, &out.key] {
        if path.exists() {
            return Err(CertError::Exists { path: path.clone() });
        }
    }
    let ca = ca_files(dir);
    let ca_pem = read(&ca.cert, "CA certificate")?;
    let ca_key = read_private(&ca.key, "CA key")?;
    let ca_params = CertificateParams::from_ca_cert_pem(&ca_pem)
        .map_err(|source| CertError::BadCa { path: ca.cert.clone(), source })?;
    let ca_key = KeyPair::from_pem(&ca_key).map_err(|source| CertError::BadCa { path: ca.key.clone(), source })?;
    // The issuer as rcgen needs it: the authority's own name, signed again by its own key.
    let issuer = ca_params.self_signed(&ca_key).map_err(|source| CertError::BadCa { path: ca.cert.clone(), source })?;

    let mut params = CertificateParams::default();
    params.distinguished_name = dn(name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    match role {
        Role::Agent { sans } => {
            if sans.is_empty() {
                return Err(CertError::NoSan);
            }
            params.subject_alt_names = sans.iter().map(|s| san(s)).collect::<Result<_>>()?;
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        }
        Role::Client => params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth],
    }
    validity(&mut params, days);
    let key =
        KeyPair::generate().map_err(|source| CertError::Generate { what: format!("the key of {name}"), source })?;
    let cert = params
        .signed_by(&key, &issuer, &ca_key)
        .map_err(|source| CertError::Generate { what: format!("the certificate of {name}"), source })?;
    write_new(&out.key, key.serialize_pem().as_bytes(), 0o600)?;
    write_new(&out.cert, cert.pem().as_bytes(), 0o644)?;
    Ok(out)
}

/// A public file (certificate) as text.
pub fn read(path: &Path, what: &'static str) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|source| CertError::Read { what, path: path.into(), source })?;
    if text.trim().is_empty() {
        return Err(CertError::Empty { what, path: path.into() });
    }
    Ok(text)
}

/// A private file (key, token) as text, refused when another user owns it or group or others
/// can read or write it: whoever can is root wherever it is trusted.
pub fn read_private(path: &Path, what: &'static str) -> Result<String> {
    let meta = std::fs::metadata(path).map_err(|source| CertError::Read { what, path: path.into(), source })?;
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if meta.uid() != euid {
        return Err(CertError::Owner { what, path: path.into(), owner: meta.uid(), euid });
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(CertError::Mode { what, path: path.into(), mode });
    }
    read(path, what)
}

fn san(s: &str) -> Result<SanType> {
    match s.parse::<std::net::IpAddr>() {
        Ok(ip) => Ok(SanType::IpAddress(ip)),
        Err(_) if !is_dns_name(s) => Err(CertError::BadSan {
            san: s.into(),
            reason: "a DNS name is letters, digits and `-` in labels separated by dots".into(),
        }),
        Err(_) => s
            .to_string()
            .try_into()
            .map(SanType::DnsName)
            .map_err(|e| CertError::BadSan { san: s.into(), reason: e.to_string() }),
    }
}

/// Letters, digits and `-` in dot-separated labels of at most 63 characters.
fn is_dns_name(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

/// From a day ago (clocks of a fleet differ) to `days` from now.
fn validity(params: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(i64::from(days.max(1)));
}

fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    // getrandom(2) never fails for small sizes once the pool is ready; fall back to the clock.
    // SAFETY: bytes is a valid buffer of n bytes.
    let got = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), n, 0) };
    if got != n as isize {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        bytes.iter_mut().enumerate().for_each(|(i, b)| *b = (t >> (8 * (i % 16))) as u8);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Creates `path` exclusively with `mode` (never through a planted file or symlink) and writes
/// `bytes` durably.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut file =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                CertError::Exists { path: path.into() }
            } else {
                CertError::Write { path: path.into(), source }
            }
        })?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|source| CertError::Write { path: path.into(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_authority_issues_agent_and_client_certificates_with_private_keys() {
        let dir = tempfile::tempdir().unwrap();
        let ca = init(dir.path(), 30).unwrap();
        let agent =
            issue(dir.path(), "web-1", &Role::Agent { sans: vec!["10.0.0.7".into(), "web-1.lan".into()] }, 30).unwrap();
        let client = issue(dir.path(), "coordinator", &Role::Client, 30).unwrap();
        for key in [&ca.key, &agent.key, &client.key] {
            assert_eq!(std::fs::metadata(key).unwrap().permissions().mode() & 0o777, 0o600, "{}", key.display());
            assert!(read_private(key, "key").unwrap().contains("PRIVATE KEY"));
        }
        for cert in [&ca.cert, &agent.cert, &client.cert] {
            assert!(read(cert, "certificate").unwrap().starts_with("-----BEGIN CERTIFICATE-----"));
        }
        // Never overwritten: a second init or issue of the same name is refused.
        assert!(matches!(init(dir.path(), 30), Err(CertError::Exists { .. })));
        assert!(matches!(issue(dir.path(), "coordinator", &Role::Client, 30), Err(CertError::Exists { .. })));
    }

    #[test]
    fn bad_names_addresses_and_missing_authorities_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(issue(dir.path(), "a", &Role::Client, 30), Err(CertError::Read { .. })));
        init(dir.path(), 30).unwrap();
        for name in ["", "ca", "../x", "a b"] {
            assert!(matches!(issue(dir.path(), name, &Role::Client, 30), Err(CertError::BadName { .. })), "{name}");
        }
        assert!(matches!(issue(dir.path(), "a", &Role::Agent { sans: vec![] }, 30), Err(CertError::NoSan)));
        let bad = issue(dir.path(), "a", &Role::Agent { sans: vec!["not a name!".into()] }, 30);
        assert!(matches!(bad, Err(CertError::BadSan { .. })), "{bad:?}");
    }

    #[test]
    fn a_key_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, "secret").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = read_private(&path, "key").unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
    }
}
