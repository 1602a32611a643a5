//! Source passwords are stored encrypted (ChaCha20-Poly1305) with a key kept in the
//! destination's data directory (mode 0600), so `synchdb_conninfo`, dumps of it and
//! the server log never hold them in clear text.

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

const PREFIX: &str = "sdbenc1:";
const KEY_FILE: &str = "synchdb_secret.key";

#[derive(Debug)]
pub struct SecretError(pub String);

impl std::fmt::Display for SecretError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SecretError {}

fn load_or_create_key(dir: &Path) -> Result<[u8; 32], SecretError> {
    let path = dir.join(KEY_FILE);
    if let Ok(bytes) = std::fs::read(&path) {
        return bytes.try_into().map_err(|_| {
            SecretError(format!(
                "key file {} is corrupt (expected 32 bytes)",
                path.display()
            ))
        });
    }
    let mut key = [0u8; 32];
    getrandom::getrandom(&mut key)
        .map_err(|e| SecretError(format!("no random bytes for a key: {e}")))?;
    let tmp = dir.join(format!("{KEY_FILE}.{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| SecretError(format!("cannot create {}: {e}", tmp.display())))?;
    f.write_all(&key)
        .and_then(|_| f.sync_all())
        .map_err(|e| SecretError(format!("cannot write {}: {e}", tmp.display())))?;
    // hard_link fails if another backend created the key first: then use theirs
    let linked = std::fs::hard_link(&tmp, &path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(key),
        Err(_) => {
            let bytes = std::fs::read(&path)
                .map_err(|e| SecretError(format!("cannot read {}: {e}", path.display())))?;
            bytes.try_into().map_err(|_| {
                SecretError(format!(
                    "key file {} is corrupt (expected 32 bytes)",
                    path.display()
                ))
            })
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

pub fn encrypt(dir: &Path, plain: &str) -> Result<String, SecretError> {
    encrypt_with(&load_or_create_key(dir)?, plain)
}

pub fn decrypt(dir: &Path, stored: &str) -> Result<String, SecretError> {
    if !stored.starts_with(PREFIX) {
        // written by hand into synchdb_conninfo: take it as it is
        return Ok(stored.to_string());
    }
    decrypt_with(&load_or_create_key(dir)?, stored)
}

/// The password connector `cfg` gives the source: the stored one, decrypted, or
/// (pwd NULL) the one its pgpass file has for its host, port, database and user.
pub fn source_password(dir: &Path, cfg: &crate::config::ConnectorConfig) -> Result<String, String> {
    if cfg.pwd_from_file {
        return crate::pgpass::lookup(
            cfg.passfile.as_deref(),
            &crate::pgpass::Key {
                host: &cfg.hostname,
                port: cfg.port,
                database: &cfg.srcdb,
                user: &cfg.user,
            },
        )
        .map_err(|e| format!("connector \"{}\": {e}", cfg.name));
    }
    decrypt(dir, &cfg.pwd).map_err(|e| e.to_string())
}

fn encrypt_with(key: &[u8; 32], plain: &str) -> Result<String, SecretError> {
    let cipher = ChaCha20Poly1305::new(Key::from_slice(key));
    let mut nonce = [0u8; 12];
    getrandom::getrandom(&mut nonce)
        .map_err(|e| SecretError(format!("no random bytes for a nonce: {e}")))?;
    let ct = cipher
        .encrypt(Nonce::from_slice(&nonce), plain.as_bytes())
        .map_err(|_| SecretError("encryption failed".into()))?;
    Ok(format!("{PREFIX}{}{}", hex(&nonce), hex(&ct)))
}

fn decrypt_with(key: &[u8; 32], stored: &str) -> Result<String, SecretError> {
    let bad = || {
        SecretError("the stored source password cannot be decrypted (was synchdb_secret.key replaced?); set it again with synchdb_add_conninfo".into())
    };
    let raw = unhex(&stored[PREFIX.len()..]).ok_or_else(bad)?;
    if raw.len() < 12 + 16 {
        return Err(bad());
    }
    let cipher = ChaCha20Poly1305::new(Key::from_slice(key));
    let pt = cipher
        .decrypt(Nonce::from_slice(&raw[..12]), &raw[12..])
        .map_err(|_| bad())?;
    String::from_utf8(pt).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_no_clear_text() {
        let dir = std::env::temp_dir().join(format!("sdb_secret_test_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let enc = encrypt(&dir, "s3cr3t'pw").unwrap();
        assert!(enc.starts_with(PREFIX));
        assert!(!enc.contains("s3cr3t"));
        assert_ne!(
            enc,
            encrypt(&dir, "s3cr3t'pw").unwrap(),
            "nonce must differ"
        );
        assert_eq!(decrypt(&dir, &enc).unwrap(), "s3cr3t'pw");
        let mut tampered = enc.clone();
        tampered.pop();
        tampered.push('0');
        if tampered != enc {
            assert!(decrypt(&dir, &tampered).is_err());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
