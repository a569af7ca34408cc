//! The shared audit key and the independent subkeys derived from it.
//!
//! One 32-byte key is shared by prover and verifier. It is never used directly: BLAKE3's
//! key derivation gives one subkey for the sampling schedule, one for MACs, one for
//! operand fingerprints and a public key id, so that no output of one use can be
//! replayed as another.

use std::fmt;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Context strings for BLAKE3 `derive_key`; part of the protocol.
pub const SCHEDULE_CONTEXT: &str = "mmaudit v1 sampling schedule";
/// See [`SCHEDULE_CONTEXT`].
pub const MAC_CONTEXT: &str = "mmaudit v1 frame mac";
/// See [`SCHEDULE_CONTEXT`].
pub const KEY_ID_CONTEXT: &str = "mmaudit v1 key id";
/// See [`SCHEDULE_CONTEXT`]: the key of the operand fingerprints of the verifier's hello
/// ([`crate::handshake`]).
pub const FINGERPRINT_CONTEXT: &str = "mmaudit v1 operand fingerprint";
/// See [`SCHEDULE_CONTEXT`]: the commit mode's challenge key
/// ([`crate::commit::Challenger`]), derived from a key that only the verifier holds
/// (never the audit key the prover has).
pub const CHALLENGE_CONTEXT: &str = "mmaudit v1 challenge";

/// A 32-byte audit key.
#[derive(Clone, PartialEq, Eq)]
pub struct Key([u8; 32]);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key(id {:016x})", self.id())
    }
}

/// Why a key text was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not 64 characters once surrounding whitespace is removed.
    #[error("a key is 64 hex characters; this one has {0}")]
    Length(usize),
    /// A character that is not a hex digit.
    #[error("a key is 64 hex characters; found '{0}' at position {1}")]
    NotHex(char, usize),
}

impl Key {
    /// A key from raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Key(bytes)
    }

    /// Parses 64 hex characters (surrounding whitespace, such as a final newline, is ignored).
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        let t = text.trim();
        if t.chars().count() != 64 {
            return Err(KeyError::Length(t.chars().count()));
        }
        let mut out = [0u8; 32];
        for (i, c) in t.chars().enumerate() {
            let v = c.to_digit(16).ok_or(KeyError::NotHex(c, i))? as u8;
            out[i / 2] |= if i % 2 == 0 { v << 4 } else { v };
        }
        Ok(Key(out))
    }

    /// The key as 64 lower-case hex characters.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The public key id carried in stream headers: the first 8 bytes of a derived
    /// value, little-endian. It tells a verifier which key a stream claims, nothing more.
    pub fn id(&self) -> u64 {
        let d = blake3::derive_key(KEY_ID_CONTEXT, &self.0);
        u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
    }

    /// The subkey of the sampling schedule.
    pub fn schedule_key(&self) -> [u8; 32] {
        blake3::derive_key(SCHEDULE_CONTEXT, &self.0)
    }

    /// The subkey of the frame MAC chain (also MACs the verifier's hello).
    pub fn mac_key(&self) -> [u8; 32] {
        blake3::derive_key(MAC_CONTEXT, &self.0)
    }

    /// The challenge subkey of commit mode, when this is the verifier's own challenge
    /// key file (docs/COMMIT.md).
    pub fn challenge_key(&self) -> [u8; 32] {
        blake3::derive_key(CHALLENGE_CONTEXT, &self.0)
    }

    /// The subkey of operand fingerprints ([`crate::handshake::fingerprint`]).
    pub fn fingerprint_key(&self) -> [u8; 32] {
        blake3::derive_key(FINGERPRINT_CONTEXT, &self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_errors() {
        let k = Key::from_bytes([0xab; 32]);
        assert_eq!(Key::from_hex(&format!("{}\n", k.to_hex())).unwrap(), k);
        assert_eq!(Key::from_hex("abc"), Err(KeyError::Length(3)));
        let bad = format!("{}g", "0".repeat(63));
        assert_eq!(Key::from_hex(&bad), Err(KeyError::NotHex('g', 63)));
    }

    #[test]
    fn subkeys_differ() {
        let k = Key::from_bytes([7; 32]);
        assert_ne!(k.schedule_key(), k.mac_key());
        assert_ne!(k.fingerprint_key(), k.mac_key());
        assert_ne!(k.fingerprint_key(), k.schedule_key());
        assert_ne!(Key::from_bytes([8; 32]).id(), k.id());
    }
}

/// The most bytes a key file may hold: 64 hex characters and some whitespace.
pub const MAX_KEY_FILE_LEN: u64 = 4096;

/// Reads a key file's text without ever blocking or reading much: the file is opened
/// non-blocking (a FIFO with no writer cannot hang the caller), must be a regular file
/// (not a FIFO, device or directory: `/dev/zero` is refused before any byte is read)
/// of at most [`MAX_KEY_FILE_LEN`] bytes, and at most that many bytes are read.
pub fn read_key_text(path: &Path) -> std::io::Result<String> {
    use std::io::{Error, ErrorKind};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "not a regular file (a key file holds 64 hex characters)",
        ));
    }
    if meta.len() > MAX_KEY_FILE_LEN {
        return Err(Error::new(
            ErrorKind::InvalidData,
            format!("{} bytes; a key file holds 64 hex characters", meta.len()),
        ));
    }
    let mut text = String::new();
    file.take(MAX_KEY_FILE_LEN + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_KEY_FILE_LEN {
        return Err(Error::new(
            ErrorKind::InvalidData,
            "it grew while being read; a key file holds 64 hex characters",
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod file_tests {
    use super::*;

    #[test]
    fn key_files_that_are_not_small_regular_files_are_refused_at_once() {
        let dir = std::env::temp_dir().join(format!("mmaudit-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good");
        std::fs::write(&good, format!("{}\n", "ab".repeat(32))).unwrap();
        assert!(Key::from_hex(&read_key_text(&good).unwrap()).is_ok());
        let big = dir.join("big");
        std::fs::write(&big, vec![b'a'; 5000]).unwrap();
        assert!(read_key_text(&big)
            .unwrap_err()
            .to_string()
            .contains("5000 bytes"));
        for special in ["/dev/zero", "/dev/null", "/"] {
            let e = read_key_text(Path::new(special)).unwrap_err();
            assert!(
                e.to_string().contains("not a regular file"),
                "{special}: {e}"
            );
        }
        // A FIFO with no writer: refused, not waited on.
        let fifo = dir.join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let start = std::time::Instant::now();
        let e = read_key_text(&fifo).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
