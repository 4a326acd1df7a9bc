//! Sealed bus messages: the records on the Kafka topic encrypted and authenticated (AES-256-GCM)
//! with a key the instances share, so the brokers, their disks and backups, and whoever reads
//! the topic never hold the clear records (secrets included: masking is the detector's job and
//! runs after the bus).
//!
//! Wire form: `PRMS` | version (1) | key id (4: the key's SHA-256, first bytes) | session salt
//! (16) | nonce (12) | ciphertext and tag. Each producer draws a random salt when it starts and
//! seals with a key derived from the configured one and that salt (HKDF-SHA256), numbering its
//! messages with a counter nonce: nonces never repeat under one derived key, however many
//! messages a producer sends (random nonces under one key would be safe for only about 2^32 of
//! them). The header is the tag's associated data.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

const MAGIC: &[u8; 4] = b"PRMS";
const VERSION: u8 = 1;
const KEY_ID_LEN: usize = 4;
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = aead::NONCE_LEN;
const HEADER_LEN: usize = MAGIC.len() + 1 + KEY_ID_LEN + SALT_LEN + NONCE_LEN;
/// What sealing adds to a message: the header and the tag.
pub(crate) const SEAL_OVERHEAD: usize = HEADER_LEN + 16;
/// The context of the derived keys.
const HKDF_INFO: &[u8] = b"perimeter kafka bus payload v1";
/// Derived keys of other producers' salts an opener keeps (producers restart rarely).
const MAX_OPENED_SESSIONS: usize = 1024;

/// A configured key: its id and bytes.
struct PayloadKey {
    id: [u8; KEY_ID_LEN],
    bytes: [u8; 32],
}

/// The id and bytes of the key in the file at `path`; an error names the file and never quotes
/// its content.
pub(crate) fn read_key(path: &Path) -> Result<([u8; KEY_ID_LEN], [u8; 32]), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("payload key {}: {e}", path.display()))?;
    let bytes = hex::decode(text.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| {
            format!(
                "payload key {}: not 32 bytes as 64 hex digits (make one with `openssl rand -hex 32`)",
                path.display()
            )
        })?;
    let digest = Sha256::digest(bytes);
    let mut id = [0; KEY_ID_LEN];
    id.copy_from_slice(&digest[..KEY_ID_LEN]);
    Ok((id, bytes))
}

fn load_keys(paths: &[PathBuf]) -> Result<Vec<PayloadKey>, String> {
    paths
        .iter()
        .map(|path| {
            let (id, bytes) = read_key(path)?;
            Ok(PayloadKey { id, bytes })
        })
        .collect()
}

/// The message key derived from `key` for a producer's `salt` (HKDF-SHA256).
fn session_key(key: &PayloadKey, salt: &[u8]) -> LessSafeKey {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(&key.bytes);
    let okm = prk
        .expand(&[HKDF_INFO], &AES_256_GCM)
        .expect("an AES-256 key of HKDF output");
    LessSafeKey::new(UnboundKey::from(okm))
}

/// Seals what a producer puts on the topic with the first configured key.
pub(crate) struct Sealer {
    key_id: [u8; KEY_ID_LEN],
    salt: [u8; SALT_LEN],
    key: LessSafeKey,
    counter: AtomicU64,
}

impl Sealer {
    /// A sealer with the first of `paths`; `None` when there is none (messages in clear).
    pub(crate) fn new(paths: &[PathBuf]) -> Result<Option<Sealer>, String> {
        let Some(key) = load_keys(paths)?.into_iter().next() else {
            return Ok(None);
        };
        let mut salt = [0u8; SALT_LEN];
        SystemRandom::new()
            .fill(&mut salt)
            .map_err(|_| "no random numbers for the payload key's salt".to_string())?;
        Ok(Some(Sealer {
            key_id: key.id,
            salt,
            key: session_key(&key, &salt),
            counter: AtomicU64::new(0),
        }))
    }

    pub(crate) fn seal(&self, clear: &[u8]) -> Vec<u8> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut nonce = [0u8; NONCE_LEN];
        nonce[NONCE_LEN - 8..].copy_from_slice(&n.to_be_bytes());
        let mut out = Vec::with_capacity(clear.len() + SEAL_OVERHEAD);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&self.key_id);
        out.extend_from_slice(&self.salt);
        out.extend_from_slice(&nonce);
        let mut body = clear.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&out[..HEADER_LEN]),
                &mut body,
            )
            .expect("a bus message within AES-GCM's size limit");
        out.extend_from_slice(&body);
        out
    }
}

/// Why a sealed message was not opened.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum OpenError {
    /// Sealed with a key this instance does not hold (hex key id): a configuration to fix,
    /// not a bad message.
    UnknownKey(String),
    /// Sealed with a key it holds, but it does not authenticate: corrupted or forged.
    Forged,
}

/// A producer's session: the id of the key it seals with and its salt.
type Session = ([u8; KEY_ID_LEN], [u8; SALT_LEN]);

/// Opens sealed messages with any configured key.
pub(crate) struct Opener {
    keys: Vec<PayloadKey>,
    sessions: Mutex<HashMap<Session, LessSafeKey>>,
    /// Whether a message in clear is refused.
    require_sealed: bool,
}

impl Opener {
    pub(crate) fn new(paths: &[PathBuf]) -> Result<Opener, String> {
        Ok(Opener {
            keys: load_keys(paths)?,
            sessions: Mutex::default(),
            require_sealed: false,
        })
    }

    /// This opener refusing messages in clear (`require_sealed`) or not.
    pub(crate) fn requiring_seal(mut self, require: bool) -> Opener {
        self.require_sealed = require;
        self
    }

    pub(crate) fn requires_seal(&self) -> bool {
        self.require_sealed
    }

    /// Whether `payload` is a sealed message (else it travelled in clear).
    pub(crate) fn is_sealed(payload: &[u8]) -> bool {
        payload.len() >= SEAL_OVERHEAD && payload.starts_with(MAGIC)
    }

    /// The clear message of a sealed `payload` ([`Self::is_sealed`]).
    pub(crate) fn open(&self, payload: &[u8]) -> Result<Vec<u8>, OpenError> {
        let (header, body) = payload.split_at(HEADER_LEN);
        let version = header[MAGIC.len()];
        let at = MAGIC.len() + 1;
        let key_id: [u8; KEY_ID_LEN] = header[at..at + KEY_ID_LEN].try_into().expect("4 bytes");
        let at = at + KEY_ID_LEN;
        let salt: [u8; SALT_LEN] = header[at..at + SALT_LEN].try_into().expect("16 bytes");
        let nonce: [u8; NONCE_LEN] = header[at + SALT_LEN..].try_into().expect("12 bytes");
        if version != VERSION {
            return Err(OpenError::Forged);
        }
        let Some(key) = self.keys.iter().find(|k| k.id == key_id) else {
            return Err(OpenError::UnknownKey(hex::encode(key_id)));
        };
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if sessions.len() >= MAX_OPENED_SESSIONS && !sessions.contains_key(&(key_id, salt)) {
            sessions.clear();
        }
        let session = sessions
            .entry((key_id, salt))
            .or_insert_with(|| session_key(key, &salt));
        let mut body = body.to_vec();
        let clear = session
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(header),
                &mut body,
            )
            .map_err(|_| OpenError::Forged)?;
        let len = clear.len();
        body.truncate(len);
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_file(dir: &Path, name: &str, hex_text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, hex_text).unwrap();
        path
    }

    #[test]
    fn sealed_messages_open_with_the_key_only_and_hide_their_content() {
        let dir = tempfile::tempdir().unwrap();
        let current = key_file(dir.path(), "current.key", &format!("{}\n", "ab".repeat(32)));
        let old = key_file(dir.path(), "old.key", &"cd".repeat(32));
        let other = key_file(dir.path(), "other.key", &"ef".repeat(32));
        let clear = br#"{"record":{"password":"hunter2-Secret","user":"alice"}}"#;

        let sealer = Sealer::new(&[current.clone(), old.clone()])
            .unwrap()
            .unwrap();
        let (a, b) = (sealer.seal(clear), sealer.seal(clear));
        assert!(Opener::is_sealed(&a) && a.len() == clear.len() + SEAL_OVERHEAD);
        assert_ne!(a, b, "each message has its own nonce");
        for text in ["hunter2", "alice", "password"] {
            assert!(
                !a.windows(text.len()).any(|w| w == text.as_bytes()),
                "{text}"
            );
        }
        // Every configured key opens (a rotation lists the new key beside the old one).
        let opener = Opener::new(&[old.clone(), current.clone()]).unwrap();
        assert_eq!(opener.open(&a).unwrap(), clear);
        assert_eq!(opener.open(&b).unwrap(), clear);
        // Another producer of the same key (its own salt) is opened too.
        let again = Sealer::new(std::slice::from_ref(&current))
            .unwrap()
            .unwrap();
        assert_eq!(opener.open(&again.seal(clear)).unwrap(), clear);

        let (id, _) = read_key(&current).unwrap();
        let stranger = Opener::new(&[other]).unwrap();
        assert_eq!(
            stranger.open(&a),
            Err(OpenError::UnknownKey(hex::encode(id)))
        );
        let mut forged = a.clone();
        *forged.last_mut().unwrap() ^= 1;
        assert_eq!(opener.open(&forged), Err(OpenError::Forged));
        let mut moved_header = a.clone();
        moved_header[HEADER_LEN - 1] ^= 1;
        assert_eq!(opener.open(&moved_header), Err(OpenError::Forged));
        assert!(!Opener::is_sealed(br#"{"v":1}"#));
    }

    #[test]
    fn a_bad_key_file_is_named_and_not_quoted() {
        let dir = tempfile::tempdir().unwrap();
        let short = key_file(dir.path(), "short.key", "deadbeef-not-a-key");
        let err = Sealer::new(std::slice::from_ref(&short)).err().unwrap();
        assert!(
            err.contains("short.key") && err.contains("64 hex digits"),
            "{err}"
        );
        assert!(!err.contains("deadbeef"), "{err}");
        let missing = dir.path().join("missing.key");
        let err = Opener::new(&[missing]).err().unwrap();
        assert!(err.contains("missing.key"), "{err}");
        assert!(Sealer::new(&[]).unwrap().is_none(), "no key: in clear");
    }
}
