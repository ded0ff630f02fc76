//! Secrets at rest: upstream keys are sealed with AES-256-GCM under a master key; client keys and
//! the admin token are stored only as SHA-256 hashes.
//!
//! An unsalted fast hash is right for client keys because they are 256-bit random strings: there
//! is nothing to brute-force, and a fast hash keeps key lookup off the request path's budget.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use sha2::{Digest, Sha256};
use std::path::Path;

use crate::error::{Error, Result};

const SEALED_PREFIX: &[u8] = b"nx1";
const NONCE_LEN: usize = 12;

/// The 32-byte key that encrypts upstream keys. Never printed: `Debug` shows a fingerprint only.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey(fingerprint={})", self.fingerprint())
    }
}

impl MasterKey {
    /// A fresh random key.
    pub fn generate() -> Result<Self> {
        let mut k = [0u8; 32];
        getrandom::fill(&mut k).map_err(|e| Error::Internal(format!("no randomness: {e}")))?;
        Ok(MasterKey(k))
    }

    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        MasterKey(bytes)
    }

    /// Parses the base64 form used by `NEXUS_MASTER_KEY` and key files.
    pub fn from_base64(s: &str) -> Result<Self> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .map_err(|_| Error::Config("master key is not valid base64".into()))?;
        let arr: [u8; 32] = raw.try_into().map_err(|v: Vec<u8>| {
            Error::Config(format!(
                "master key must be 32 bytes, got {} bytes",
                v.len()
            ))
        })?;
        Ok(MasterKey(arr))
    }

    /// The base64 form, for writing a key file.
    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }

    /// A short non-secret identifier of the key (first 8 hex chars of its SHA-256).
    pub fn fingerprint(&self) -> String {
        hex(&Sha256::digest(self.0)[..4])
    }

    /// Loads the key from `NEXUS_MASTER_KEY` if set, else from `key_file`, creating that file with
    /// mode 0600 when it does not exist.
    pub fn load_or_create(env_value: Option<&str>, key_file: &Path) -> Result<Self> {
        if let Some(v) = env_value.filter(|v| !v.trim().is_empty()) {
            return Self::from_base64(v);
        }
        match std::fs::read_to_string(key_file) {
            Ok(s) => Self::from_base64(&s)
                .map_err(|e| Error::Config(format!("key file {}: {e}", key_file.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate()?;
                write_private_file(key_file, key.to_base64().as_bytes())?;
                Ok(key)
            }
            Err(e) => Err(Error::Config(format!(
                "cannot read key file {}: {e}",
                key_file.display()
            ))),
        }
    }

    /// Encrypts `plaintext` with a fresh random nonce. Output: `nx1 || nonce || ciphertext+tag`.
    pub fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>> {
        let cipher = Aes256Gcm::new((&self.0).into());
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| Error::Internal(format!("no randomness: {e}")))?;
        let ct = cipher
            .encrypt(Nonce::from_slice(&nonce), plaintext)
            .map_err(|_| Error::Internal("encryption failed".into()))?;
        let mut out = Vec::with_capacity(SEALED_PREFIX.len() + NONCE_LEN + ct.len());
        out.extend_from_slice(SEALED_PREFIX);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Decrypts what [`seal`](Self::seal) produced. A wrong key is a [`Error::Config`] that says so.
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>> {
        let body = sealed
            .strip_prefix(SEALED_PREFIX)
            .filter(|b| b.len() > NONCE_LEN)
            .ok_or_else(|| Error::Storage("sealed secret has an unknown format".into()))?;
        let (nonce, ct) = body.split_at(NONCE_LEN);
        Aes256Gcm::new((&self.0).into())
            .decrypt(Nonce::from_slice(nonce), ct)
            .map_err(|_| {
                Error::Config(
                    "the master key does not decrypt this database's secrets \
                     (wrong NEXUS_MASTER_KEY or key file?)"
                        .into(),
                )
            })
    }
}

/// Writes a new file readable only by its owner; fails if it exists.
fn write_private_file(path: &Path, bytes: &[u8]) -> Result<()> {
    write_private(path, bytes, false)
}

/// Writes `bytes` to `path` (creating or replacing it), mode 0600, and syncs the file and its
/// directory so the content survives a power loss: how key files are staged and kept.
pub fn write_private_file_replacing(path: &Path, bytes: &[u8]) -> Result<()> {
    write_private(path, bytes, true)?;
    sync_parent_dir(path)
}

fn write_private(path: &Path, bytes: &[u8], replace: bool) -> Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true);
    if replace {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .map_err(|e| Error::Config(format!("cannot create key file {}: {e}", path.display())))?;
    // The mode above applies only to a file this call creates; an existing one is narrowed too.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::Config(format!("cannot chmod {}: {e}", path.display())))?;
    }
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::Config(format!("cannot write key file {}: {e}", path.display())))
}

/// Syncs the directory holding `path`, so a create or rename in it is durable.
pub fn sync_parent_dir(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::Config(format!("cannot sync {}: {e}", dir.display())))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// SHA-256 of a secret, hex encoded: how client keys and the admin token are stored.
pub fn hash_secret(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// Length of the visible prefix of a client key (`nx-` plus 8 characters).
pub const KEY_PREFIX_LEN: usize = 11;

/// A new client key: `nx-` followed by 43 base64url characters (256 random bits).
pub fn generate_client_key() -> Result<String> {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| Error::Internal(format!("no randomness: {e}")))?;
    Ok(format!(
        "nx-{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    ))
}

/// The visible prefix of a key, safe to show and log.
pub fn key_prefix(key: &str) -> String {
    key.chars().take(KEY_PREFIX_LEN).collect()
}

/// A hint of an upstream key, e.g. `sk-...wxyz`: enough to recognise it, not enough to use it.
pub fn key_hint(key: &str) -> String {
    let n = key.chars().count();
    if n <= 8 {
        return "****".to_owned();
    }
    let head: String = key.chars().take(3).collect();
    let tail: String = key.chars().skip(n - 4).collect();
    format!("{head}...{tail}")
}

/// A unique 128-bit hex id, used for request, conversation and session ids: 48 bits of unix
/// milliseconds, then 80 random bits (the layout of UUIDv7). Ids made later sort later, so the
/// stats tables' indexes on them grow at their right edge instead of at random pages: the stats
/// writer then dirties a few pages per batch instead of one per row.
pub fn random_id() -> String {
    let mut raw = [0u8; 16];
    let t = (crate::time::now_ms().max(0) as u64).to_be_bytes();
    raw[..6].copy_from_slice(&t[2..]);
    if getrandom::fill(&mut raw[6..]).is_err() {
        // Ids need uniqueness, not secrecy: fall back to a counter.
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        raw[8..].copy_from_slice(&N.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    }
    hex(&raw)
}

fn hex(bytes: &[u8]) -> String {
    // A table, not `write!("{:02x}")`: this runs several times per request (ids, key hashes),
    // and the formatting machinery cost ~6% of the gateway's CPU.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xf) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_wrong_key() {
        let k = MasterKey::generate().unwrap();
        let sealed = k.seal(b"sk-secret").unwrap();
        assert!(!sealed.windows(9).any(|w| w == b"sk-secret"));
        assert_eq!(k.open(&sealed).unwrap(), b"sk-secret");
        let other = MasterKey::generate().unwrap();
        let err = other.open(&sealed).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Config);
        assert!(err.to_string().contains("master key"));
    }

    #[test]
    fn base64_and_debug_hide_key() {
        let k = MasterKey::generate().unwrap();
        let k2 = MasterKey::from_base64(&k.to_base64()).unwrap();
        assert_eq!(k.fingerprint(), k2.fingerprint());
        assert!(!format!("{k:?}").contains(&k.to_base64()));
        assert!(MasterKey::from_base64("aGVsbG8=").is_err());
    }

    #[test]
    fn key_file_created_private() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nexus.key");
        let a = MasterKey::load_or_create(None, &p).unwrap();
        let b = MasterKey::load_or_create(None, &p).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn client_keys_are_random_and_hinted() {
        let a = generate_client_key().unwrap();
        let b = generate_client_key().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("nx-") && a.len() == 46);
        assert_eq!(key_prefix(&a).len(), KEY_PREFIX_LEN);
        assert_eq!(hash_secret("abc").len(), 64);
        assert_eq!(
            hash_secret("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        let (a, b) = (random_id(), random_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(random_id()[..12] > a[..12], "later ids sort later");
        assert_eq!(key_hint("sk-1234567890abcd"), "sk-...abcd");
        assert_eq!(key_hint("short"), "****");
    }
}
