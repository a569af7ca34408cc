//! The opening of a live session: the verifier's hello, and the operand table it
//! carries.
//!
//! On a TCP connection the verifier speaks first. Its hello names the key it holds, a
//! fresh session nonce (which the prover must put in its stream header, so that no
//! sampling plan can be computed before the session starts), the sampling configuration
//! of the session (the verifier's rates, not the prover's: the prover samples with them
//! and writes them into its stream header) and a table of the operand tensors it holds
//! (model weights): for each, its id, type and shape and a keyed fingerprint of each
//! stored row. A prover whose sampled op(A) rows or op(B) columns are stored rows of
//! such a tensor may send a [`OperandData::Reference`] instead of the data; the verifier
//! uses its own copy.
//!
//! ```text
//! hello    = MAGIC "MMAUDHLO" version:u16 body_len:u32 body mac:[32]
//! body     = key_id:u64 nonce:[16] sampling mode:u8 tensor_count:u32 tensor*
//! sampling = call_ppm row_ppm col_ppm batch_ppm min_rows min_cols min_batches
//!            max_rows max_cols max_batches (each u32, as in the stream header)
//! tensor   = id:u32 dtype:u8 matrices:u32 rows:u64 cols:u64 fingerprint:u32 * (matrices*rows)
//! ```
//!
//! Specified byte for byte in docs/PROTOCOL.md ("Live sessions: the handshake"). The
//! reader ([`HelloReader`]) is what a prover runs on the bytes of an untrusted network:
//! it never panics, never allocates more than twice the bytes that have arrived,
//! checks each field as soon as its bytes are there and the MAC before it looks at the
//! body.
//!
//! ```
//! use mmaudit_protocol::call::DType;
//! use mmaudit_protocol::config::SamplingConfig;
//! use mmaudit_protocol::handshake::{HelloMode, HelloReader, HelloTensor, ServerHello};
//! use mmaudit_protocol::keys::Key;
//! let key = Key::from_bytes([7; 32]);
//! let hello = ServerHello {
//!     key_id: key.id(),
//!     nonce: [1; 16],
//!     // Every call sampled, the default rows, columns and batch entries.
//!     sampling: SamplingConfig {
//!         call_ppm: 1_000_000,
//!         ..SamplingConfig::default()
//!     },
//!     tensors: vec![HelloTensor {
//!         id: 0,
//!         dtype: DType::BF16,
//!         matrices: 1,
//!         rows: 2,
//!         cols: 8,
//!         fingerprints: vec![11, 22],
//!     }],
//!     mode: HelloMode::Sampling,
//! };
//! let bytes = hello.encode(&key).unwrap();
//! let mut reader = HelloReader::new(&key);
//! let mut got = None;
//! for chunk in bytes.chunks(5) {
//!     if let Some(h) = reader.push(chunk)? {
//!         got = Some(h);
//!     }
//! }
//! assert_eq!(got, Some(hello));
//! # Ok::<(), mmaudit_protocol::handshake::HandshakeError>(())
//! ```

use std::collections::HashMap;
use std::fmt;

use crate::call::{DType, MAX_DIM};
use crate::codec::{DecodeError, Reader, Writer};
use crate::config::{SamplingConfig, SAMPLING_CONFIG_LEN};
use crate::keys::Key;
use crate::record::OperandData;
use crate::stream::MAC_LEN;

/// The first eight bytes of every hello.
pub const HELLO_MAGIC: [u8; 8] = *b"MMAUDHLO";
/// The hello version this crate writes and reads (the only one it reads). Version 2
/// added the sampling configuration (version 1 had none); version 3 the session's mode.
pub const HELLO_VERSION: u16 = 3;
/// Bytes of the hello before its body: magic, version, body length.
pub const HELLO_FIXED_LEN: usize = 8 + 2 + 4;
/// Largest hello body accepted, 512 MiB (about 134 million row fingerprints).
pub const MAX_HELLO_BODY_LEN: u32 = 512 << 20;
/// Domain-separation prefix of the hello MAC input.
pub const HELLO_MAC_DOMAIN: &[u8] = b"mmaudit-hello-v1";
/// Bytes of the body before the tensor entries: key id, nonce, sampling configuration,
/// tensor count.
pub const HELLO_BODY_FIXED_LEN: usize = 8 + 16 + SAMPLING_CONFIG_LEN + 1 + 4;
/// Bytes of a tensor entry before its fingerprints: id, dtype, matrices, rows, cols.
pub const HELLO_TENSOR_FIXED_LEN: usize = 4 + 1 + 4 + 8 + 8;
/// Offset of the nonce in the hello bytes.
pub const HELLO_NONCE_OFFSET: usize = HELLO_FIXED_LEN + 8;

/// One operand tensor the verifier holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HelloTensor {
    /// The id a [`OperandData::Reference`] names it by (ascending in a hello).
    pub id: u32,
    /// Element type of its data.
    pub dtype: DType,
    /// 1 for a 2-D tensor, E for a stacked 3-D tensor of E matrices.
    pub matrices: u32,
    /// Rows of each matrix.
    pub rows: u64,
    /// Columns of each matrix: the elements of each stored row.
    pub cols: u64,
    /// [`fingerprint`] of each stored row, `matrices * rows` of them, order
    /// `[matrix][row]`.
    pub fingerprints: Vec<u32>,
}

impl HelloTensor {
    /// The fingerprint of row `row` of matrix `matrix`, if both are in range.
    pub fn fingerprint(&self, matrix: u32, row: u64) -> Option<u32> {
        if matrix >= self.matrices || row >= self.rows {
            return None;
        }
        let i = (matrix as u64).checked_mul(self.rows)?.checked_add(row)?;
        self.fingerprints.get(usize::try_from(i).ok()?).copied()
    }
}

/// The verifier's hello.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerHello {
    /// Id of the verifier's key ([`Key::id`]).
    pub key_id: u64,
    /// The session nonce: the stream that follows must carry it in its header.
    pub nonce: [u8; 16],
    /// The session's sampling configuration, the verifier's: the prover samples the
    /// session's calls with it and the stream that follows carries it in its header.
    /// Valid ([`SamplingConfig::validate`]) in every hello that decodes.
    pub sampling: SamplingConfig,
    /// The operand tensors the verifier holds, ids ascending.
    pub tensors: Vec<HelloTensor>,
    /// How the session is audited: the prover follows it, whatever its own settings.
    pub mode: HelloMode,
}

/// How a live session is audited (the hello's mode byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum HelloMode {
    /// The keyed schedule decides what is sampled (stream versions 1 and 2).
    Sampling = 0,
    /// Commit-before-challenge (docs/COMMIT.md, stream version 3): every call
    /// committed, the verifier's challenges sent back on the connection.
    Commit = 1,
}

crate::call::wire_enum!(HelloMode { Sampling, Commit });

/// A hello whose table does not fit the body cap, or is inconsistent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot encode the hello: {0}")]
pub struct HelloEncodeError(pub String);

/// Why a hello was refused. Offsets count bytes from the start of the hello.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// Bad magic: the peer is not an mmaudit verifier.
    #[error("not an mmaudit verifier hello: {detail}")]
    NotAHello {
        /// What was found instead.
        detail: String,
    },
    /// A hello version this build does not read.
    #[error(
        "unsupported mmaudit hello version {0} (this build reads version {HELLO_VERSION}{hint})",
        hint = version_hint(*.0)
    )]
    UnsupportedVersion(u16),
    /// The verifier holds another key.
    #[error(
        "the verifier holds key id {hello_key_id:016x}, this prover's key has id {our_key_id:016x}"
    )]
    KeyMismatch {
        /// The key id in the hello.
        hello_key_id: u64,
        /// The id of the key the reader was given.
        our_key_id: u64,
    },
    /// The MAC did not verify: altered, forged or made with another key.
    #[error("MAC check failed for the verifier's hello (MAC at offset {offset})")]
    BadMac {
        /// Offset of the MAC.
        offset: u64,
    },
    /// The input ended before the hello was complete.
    #[error("hello truncated at offset {offset}: {detail}")]
    Truncated {
        /// Bytes received.
        offset: u64,
        /// What was missing.
        detail: String,
    },
    /// Bytes after the hello: a verifier sends nothing else.
    #[error("unexpected bytes after the verifier's hello at offset {offset}")]
    AfterHello {
        /// Offset of the first such byte.
        offset: u64,
    },
    /// A length over its cap, or a malformed field of an authenticated body.
    #[error("malformed hello: {0}")]
    Decode(#[from] DecodeError),
}

/// What an unsupported hello version says about the peer.
fn version_hint(version: u16) -> &'static str {
    if version == 1 {
        ": the verifier is older than this prover, and its hello does not state the \
         session's sampling rates; upgrade mmaudit-verify"
    } else if version < HELLO_VERSION {
        ": the verifier is older than this prover, and its hello does not state the \
         session's mode; upgrade mmaudit-verify"
    } else {
        ": the verifier is newer than this prover; upgrade it"
    }
}

/// The fingerprint of one stored row: the first 4 bytes, little-endian, of keyed BLAKE3
/// with `fingerprint_key` ([`Key::fingerprint_key`]) over the row's raw bytes.
pub fn fingerprint(fingerprint_key: &[u8; 32], row: &[u8]) -> u32 {
    let h = blake3::keyed_hash(fingerprint_key, row);
    let b = h.as_bytes();
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn hello_mac(mac_key: &[u8; 32], bytes: &[u8]) -> [u8; MAC_LEN] {
    let mut h = blake3::Hasher::new_keyed(mac_key);
    h.update(HELLO_MAC_DOMAIN);
    h.update(bytes);
    *h.finalize().as_bytes()
}

impl ServerHello {
    /// The hello's bytes, MACed with `key` (whose id replaces `key_id`).
    ///
    /// Fails when the sampling configuration is invalid
    /// ([`SamplingConfig::validate`]), the table is inconsistent (ids not ascending, a
    /// tensor with no row, column or matrix, a fingerprint count other than
    /// `matrices * rows`, a dimension above 2^40) or the body exceeds
    /// [`MAX_HELLO_BODY_LEN`].
    pub fn encode(&self, key: &Key) -> Result<Vec<u8>, HelloEncodeError> {
        self.sampling
            .validate()
            .map_err(|e| HelloEncodeError(format!("sampling configuration: {e}")))?;
        let mut body_len = HELLO_BODY_FIXED_LEN as u64;
        let mut last: Option<u32> = None;
        for t in &self.tensors {
            if last.is_some_and(|l| t.id <= l) {
                return Err(HelloEncodeError(format!(
                    "tensor id {} follows {}; ids must be ascending",
                    t.id,
                    last.unwrap_or(0)
                )));
            }
            last = Some(t.id);
            if t.matrices == 0 || t.rows == 0 || t.cols == 0 || t.rows > MAX_DIM || t.cols > MAX_DIM
            {
                return Err(HelloEncodeError(format!(
                    "tensor {} has {} matrices of {} x {}",
                    t.id, t.matrices, t.rows, t.cols
                )));
            }
            if t.fingerprints.len() as u128 != t.matrices as u128 * t.rows as u128 {
                return Err(HelloEncodeError(format!(
                    "tensor {} has {} fingerprints for {} matrices of {} rows",
                    t.id,
                    t.fingerprints.len(),
                    t.matrices,
                    t.rows
                )));
            }
            body_len += HELLO_TENSOR_FIXED_LEN as u64 + 4 * t.fingerprints.len() as u64;
            if body_len > MAX_HELLO_BODY_LEN as u64 {
                return Err(HelloEncodeError(format!(
                    "the table exceeds the hello body cap of {MAX_HELLO_BODY_LEN} bytes"
                )));
            }
        }
        let mut w = Writer::new();
        w.buf.reserve(HELLO_FIXED_LEN + body_len as usize + MAC_LEN);
        w.raw(&HELLO_MAGIC);
        w.u16(HELLO_VERSION);
        w.u32(body_len as u32);
        w.u64(key.id());
        w.raw(&self.nonce);
        self.sampling.encode(&mut w);
        w.u8(self.mode as u8);
        w.u32(self.tensors.len() as u32);
        for t in &self.tensors {
            w.u32(t.id);
            w.u8(t.dtype as u8);
            w.u32(t.matrices);
            w.u64(t.rows);
            w.u64(t.cols);
            for &f in &t.fingerprints {
                w.u32(f);
            }
        }
        let mac = hello_mac(&key.mac_key(), &w.buf);
        w.raw(&mac);
        Ok(w.buf)
    }

    /// Decodes one complete hello (exactly its bytes).
    pub fn decode(key: &Key, bytes: &[u8]) -> Result<ServerHello, HandshakeError> {
        let mut r = HelloReader::new(key);
        let hello = r.push(bytes)?;
        r.finish()?;
        hello.ok_or_else(|| HandshakeError::Truncated {
            offset: bytes.len() as u64,
            detail: "no hello".into(),
        })
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<ServerHello, DecodeError> {
        let key_id = r.u64("hello: key id")?;
        let nonce = r.array("hello: nonce")?;
        let sampling = SamplingConfig::decode(r, "hello: sampling config")?;
        let mode = r.enum_u8("hello: mode")?;
        let count_at = r.offset();
        let count = r.u32("hello: tensor count")? as usize;
        match count.checked_mul(HELLO_TENSOR_FIXED_LEN) {
            Some(bytes) if bytes <= r.remaining() => {}
            _ => {
                return Err(r.error_at(
                    count_at,
                    "hello: tensor count",
                    format!(
                        "{count} tensors need at least {} bytes, only {} are left",
                        count as u128 * HELLO_TENSOR_FIXED_LEN as u128,
                        r.remaining()
                    ),
                ))
            }
        }
        let mut tensors: Vec<HelloTensor> = Vec::with_capacity(count);
        for _ in 0..count {
            let at = r.offset();
            let id = r.u32("hello: tensor id")?;
            if let Some(last) = tensors.last() {
                if id <= last.id {
                    return Err(r.error_at(
                        at,
                        "hello: tensor id",
                        format!("{id} follows {}; ids must be ascending", last.id),
                    ));
                }
            }
            let dtype: DType = r.enum_u8("hello: tensor dtype")?;
            let shape_at = r.offset();
            let matrices = r.u32("hello: tensor matrices")?;
            let rows = r.u64("hello: tensor rows")?;
            let cols = r.u64("hello: tensor cols")?;
            if matrices == 0 || rows == 0 || cols == 0 || rows > MAX_DIM || cols > MAX_DIM {
                return Err(r.error_at(
                    shape_at,
                    "hello: tensor shape",
                    format!("tensor {id}: {matrices} matrices of {rows} x {cols}; each must be from 1 to 2^40"),
                ));
            }
            let prints_at = r.offset();
            let n = (matrices as u64)
                .checked_mul(rows)
                .and_then(|n| usize::try_from(n).ok())
                .filter(|n| n.checked_mul(4).is_some_and(|b| b <= r.remaining()));
            let Some(n) = n else {
                return Err(r.error_at(
                    prints_at,
                    "hello: tensor fingerprints",
                    format!(
                        "tensor {id}: {} fingerprints need {} bytes, only {} are left",
                        matrices as u128 * rows as u128,
                        matrices as u128 * rows as u128 * 4,
                        r.remaining()
                    ),
                ));
            };
            let raw = r.take(n * 4, "hello: tensor fingerprints")?;
            let fingerprints = raw
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            tensors.push(HelloTensor {
                id,
                dtype,
                matrices,
                rows,
                cols,
                fingerprints,
            });
        }
        r.finish("hello body")?;
        Ok(ServerHello {
            key_id,
            nonce,
            sampling,
            tensors,
            mode,
        })
    }
}

/// Replaces the nonce of encoded hello bytes and recomputes their MAC, so that a
/// verifier encodes its (possibly large) table once and stamps each connection's nonce.
/// Does nothing to bytes too short to be a hello.
pub fn restamp_nonce(hello: &mut [u8], key: &Key, nonce: [u8; 16]) {
    let Some(mac) = nonce_mac(hello, key, nonce) else {
        return;
    };
    hello[HELLO_NONCE_OFFSET..HELLO_NONCE_OFFSET + 16].copy_from_slice(&nonce);
    let mac_at = hello.len() - MAC_LEN;
    hello[mac_at..].copy_from_slice(&mac);
}

/// The MAC that encoded hello bytes would carry with `nonce` in place of their own,
/// computed without copying them: a verifier that sends one shared table to many
/// connections sends the table's bytes, then each connection's nonce and MAC. None for
/// bytes too short to be a hello.
pub fn nonce_mac(hello: &[u8], key: &Key, nonce: [u8; 16]) -> Option<[u8; MAC_LEN]> {
    if hello.len() < HELLO_NONCE_OFFSET + 16 + MAC_LEN {
        return None;
    }
    let mac_at = hello.len() - MAC_LEN;
    let mut h = blake3::Hasher::new_keyed(&key.mac_key());
    h.update(HELLO_MAC_DOMAIN);
    h.update(&hello[..HELLO_NONCE_OFFSET]);
    h.update(&nonce);
    h.update(&hello[HELLO_NONCE_OFFSET + 16..mac_at]);
    Some(*h.finalize().as_bytes())
}

/// Reads the verifier's hello incrementally from untrusted bytes. See the module
/// documentation.
pub struct HelloReader {
    mac_key: [u8; 32],
    key_id: u64,
    buf: Vec<u8>,
    received: u64,
    done: bool,
    failed: Option<HandshakeError>,
    /// The accepted hello's MAC (what a commit-mode session's challenge frames chain
    /// from).
    mac: Option<[u8; MAC_LEN]>,
}

impl fmt::Debug for HelloReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HelloReader")
            .field("key_id", &format_args!("{:016x}", self.key_id))
            .field("received", &self.received)
            .field("done", &self.done)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl HelloReader {
    /// A reader for hellos MACed with `key`.
    pub fn new(key: &Key) -> Self {
        HelloReader {
            mac_key: key.mac_key(),
            key_id: key.id(),
            buf: Vec::new(),
            received: 0,
            done: false,
            failed: None,
            mac: None,
        }
    }

    /// Feeds the next bytes; returns the hello once, when its last byte arrives.
    ///
    /// After an error the reader stops for good and returns the same error. Any byte
    /// after the hello is [`HandshakeError::AfterHello`].
    pub fn push(&mut self, mut input: &[u8]) -> Result<Option<ServerHello>, HandshakeError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.done {
            if input.is_empty() {
                return Ok(None);
            }
            return self.fail(HandshakeError::AfterHello {
                offset: self.received,
            });
        }
        loop {
            let need = match self.needed() {
                Ok(n) => n,
                Err(e) => return self.fail(e),
            };
            if self.buf.len() >= need {
                break;
            }
            if input.is_empty() {
                return Ok(None);
            }
            let take = (need - self.buf.len()).min(input.len());
            let len = self.buf.len() + take;
            if len > self.buf.capacity() {
                // Doubling, never beyond this hello's size: at most twice what arrived.
                let target = len.max(2 * self.buf.capacity()).min(need);
                self.buf.reserve_exact(target - self.buf.len());
            }
            self.buf.extend_from_slice(&input[..take]);
            self.received += take as u64;
            input = &input[take..];
        }
        let hello = match self.complete() {
            Ok(h) => h,
            Err(e) => return self.fail(e),
        };
        self.done = true;
        let mut mac = [0u8; MAC_LEN];
        mac.copy_from_slice(&self.buf[self.buf.len() - MAC_LEN..]);
        self.mac = Some(mac);
        self.buf = Vec::new();
        if !input.is_empty() {
            return self.fail(HandshakeError::AfterHello {
                offset: self.received,
            });
        }
        Ok(Some(hello))
    }

    /// `Ok` once the whole hello was read; otherwise the reader's error, or
    /// [`HandshakeError::Truncated`] (or `NotAHello` for nothing at all).
    pub fn finish(&self) -> Result<(), HandshakeError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.done {
            return Ok(());
        }
        if self.received == 0 {
            return Err(HandshakeError::NotAHello {
                detail: "the peer sent nothing".into(),
            });
        }
        let of = match self.needed() {
            Ok(n) if n > self.buf.len() => format!(" of {n}"),
            _ => String::new(),
        };
        Err(HandshakeError::Truncated {
            offset: self.received,
            detail: format!("{} bytes{of} of the hello received", self.buf.len()),
        })
    }

    /// Bytes received so far.
    pub fn bytes_received(&self) -> u64 {
        self.received
    }

    /// True once the hello was read.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The MAC of the hello read (its last [`MAC_LEN`] bytes), once it was accepted:
    /// a commit-mode session's challenge frames chain from it.
    pub fn mac(&self) -> Option<[u8; MAC_LEN]> {
        self.mac.filter(|_| self.failed.is_none())
    }

    fn fail(&mut self, e: HandshakeError) -> Result<Option<ServerHello>, HandshakeError> {
        self.failed = Some(e.clone());
        self.buf = Vec::new();
        Err(e)
    }

    /// The hello's total size as far as the buffered bytes tell, checking each fixed
    /// field as soon as it has arrived.
    fn needed(&self) -> Result<usize, HandshakeError> {
        let b = &self.buf;
        for (i, (&got, &want)) in b.iter().zip(HELLO_MAGIC.iter()).enumerate() {
            if got != want {
                return Err(HandshakeError::NotAHello {
                    detail: format!(
                        "byte {i} is {got:#04x}, where the magic \"MMAUDHLO\" has {want:#04x}"
                    ),
                });
            }
        }
        if b.len() < 10 {
            return Ok(HELLO_FIXED_LEN);
        }
        let version = u16::from_le_bytes([b[8], b[9]]);
        if version != HELLO_VERSION {
            return Err(HandshakeError::UnsupportedVersion(version));
        }
        if b.len() < HELLO_FIXED_LEN {
            return Ok(HELLO_FIXED_LEN);
        }
        let body_len = u32::from_le_bytes([b[10], b[11], b[12], b[13]]);
        if body_len > MAX_HELLO_BODY_LEN {
            return Err(DecodeError {
                offset: 10,
                what: "hello body length",
                problem: format!("{body_len} bytes exceeds the cap of {MAX_HELLO_BODY_LEN}"),
                unit: "hello".into(),
            }
            .into());
        }
        Ok(HELLO_FIXED_LEN + body_len as usize + MAC_LEN)
    }

    fn complete(&self) -> Result<ServerHello, HandshakeError> {
        let mac_at = self.buf.len() - MAC_LEN;
        let body = &self.buf[HELLO_FIXED_LEN..mac_at];
        if body.len() >= 8 {
            let mut id = [0u8; 8];
            id.copy_from_slice(&body[..8]);
            let hello_key_id = u64::from_le_bytes(id);
            if hello_key_id != self.key_id {
                return Err(HandshakeError::KeyMismatch {
                    hello_key_id,
                    our_key_id: self.key_id,
                });
            }
        }
        let computed = hello_mac(&self.mac_key, &self.buf[..mac_at]);
        if blake3::Hash::from_bytes(computed) != self.buf[mac_at..] {
            return Err(HandshakeError::BadMac {
                offset: mac_at as u64,
            });
        }
        let mut r = Reader::new(body, HELLO_FIXED_LEN as u64, "hello");
        Ok(ServerHello::decode_body(&mut r)?)
    }
}

/// The prover's view of a hello's table: finds whether sampled vectors are stored rows
/// of a held tensor, and builds the [`OperandData::Reference`] that replaces them.
///
/// A reference is offered only when the fingerprint of every sampled vector equals the
/// table's for the row it claims; the verifier still compares its own copy (evidence
/// and arithmetic), so a fingerprint collision costs a failed sample, never a false
/// pass.
#[derive(Clone)]
pub struct OperandTable {
    fingerprint_key: [u8; 32],
    tensors: Vec<HelloTensor>,
    /// (dtype, cols) -> indices into `tensors`
    by_shape: HashMap<(DType, u64), Vec<usize>>,
}

impl fmt::Debug for OperandTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OperandTable")
            .field("tensors", &self.tensors.len())
            .finish_non_exhaustive()
    }
}

impl OperandTable {
    /// The table of `hello`, with the fingerprint key of `key`.
    pub fn new(key: &Key, hello: ServerHello) -> Self {
        let mut by_shape: HashMap<(DType, u64), Vec<usize>> = HashMap::new();
        for (i, t) in hello.tensors.iter().enumerate() {
            by_shape.entry((t.dtype, t.cols)).or_default().push(i);
        }
        OperandTable {
            fingerprint_key: key.fingerprint_key(),
            tensors: hello.tensors,
            by_shape,
        }
    }

    /// Number of tensors in the table.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// True when the verifier holds no tensor.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Whether `data` (one vector of `k` elements of `dtype` per batch member, back to
    /// back) is row `row` of matrix `matrices[b]` of held tensor `tensor` for every batch
    /// member `b`, by the keyed fingerprints: a check of one tensor, where
    /// [`OperandTable::reference`] searches them all (two tensors may share a row).
    pub fn holds(
        &self,
        tensor: u32,
        matrices: &[u32],
        dtype: DType,
        k: u64,
        row: u64,
        data: &[u8],
    ) -> bool {
        let Some(vec_bytes) = usize::try_from(k)
            .ok()
            .and_then(|k| k.checked_mul(dtype.size()))
        else {
            return false;
        };
        let Some(t) = self.tensors.iter().find(|t| t.id == tensor) else {
            return false;
        };
        if t.dtype != dtype
            || t.cols != k
            || vec_bytes == 0
            || matrices.is_empty()
            || matrices.len().checked_mul(vec_bytes) != Some(data.len())
        {
            return false;
        }
        matrices.iter().enumerate().all(|(b, &e)| {
            let v = &data[b * vec_bytes..][..vec_bytes];
            t.fingerprint(e, row) == Some(fingerprint(&self.fingerprint_key, v))
        })
    }

    /// A reference for sampled vectors, if they are stored rows of one held tensor.
    ///
    /// `indices` are the plan's rows (op(A)) or columns (op(B)); `data` holds the
    /// vectors as a sample carries them inline: `batches * indices.len()` vectors of `k`
    /// elements of `dtype`, order `[batch][index][k]`. Vector `x` of batch entry `i`
    /// must be row `x` of one matrix of the tensor (its own per batch entry). `None`
    /// when no held tensor fits, or `data` has the wrong length.
    pub fn reference(
        &self,
        dtype: DType,
        k: u64,
        indices: &[u64],
        batches: usize,
        data: &[u8],
    ) -> Option<OperandData> {
        let (tensor, matrices) = self.find(dtype, k, indices, batches, data, 1).pop()?;
        let es = dtype.size();
        let vec_bytes = k as usize * es;
        let per_batch = indices.len() * vec_bytes;
        let mut evidence = Vec::with_capacity(batches * indices.len() * es);
        for bi in 0..batches {
            for xi in 0..indices.len() {
                evidence.extend_from_slice(&data[bi * per_batch + xi * vec_bytes..][..es]);
            }
        }
        Some(OperandData::Reference {
            tensor,
            matrices,
            evidence,
        })
    }

    /// How many held tensors have these vectors as their rows, as
    /// [`OperandTable::reference`] looks for them (counting stops at 2): more than one,
    /// and the rows alone cannot tell which tensor it is (two tensors may share rows).
    pub fn count_references(
        &self,
        dtype: DType,
        k: u64,
        indices: &[u64],
        batches: usize,
        data: &[u8],
    ) -> usize {
        self.find(dtype, k, indices, batches, data, 2).len()
    }

    /// Up to `limit` held tensors (id, matrix of each batch entry) of which the vectors
    /// are rows, in table order.
    fn find(
        &self,
        dtype: DType,
        k: u64,
        indices: &[u64],
        batches: usize,
        data: &[u8],
        limit: usize,
    ) -> Vec<(u32, Vec<u32>)> {
        let mut out = Vec::new();
        let es = dtype.size();
        let Some(vec_bytes) = usize::try_from(k).ok().and_then(|k| k.checked_mul(es)) else {
            return out;
        };
        let Some(per_batch) = indices.len().checked_mul(vec_bytes) else {
            return out;
        };
        if indices.is_empty()
            || batches == 0
            || vec_bytes == 0
            || per_batch.checked_mul(batches) != Some(data.len())
        {
            return out;
        }
        let (Some(candidates), Some(&max_index)) =
            (self.by_shape.get(&(dtype, k)), indices.iter().max())
        else {
            return out;
        };
        let fp = |bi: usize, xi: usize| {
            fingerprint(
                &self.fingerprint_key,
                &data[bi * per_batch + xi * vec_bytes..][..vec_bytes],
            )
        };
        // Fingerprints of the sampled vectors, computed as they are needed.
        let mut prints: Vec<Vec<Option<u32>>> = vec![vec![None; indices.len()]; batches];
        let mut print =
            |bi: usize, xi: usize| -> u32 { *prints[bi][xi].get_or_insert_with(|| fp(bi, xi)) };
        'tensor: for &ti in candidates {
            let t = &self.tensors[ti];
            if max_index >= t.rows {
                continue;
            }
            let mut matrices = Vec::with_capacity(batches);
            for bi in 0..batches {
                let found = (0..t.matrices).find(|&e| {
                    indices
                        .iter()
                        .enumerate()
                        .all(|(xi, &x)| t.fingerprint(e, x) == Some(print(bi, xi)))
                });
                match found {
                    Some(e) => matrices.push(e),
                    None => continue 'tensor,
                }
            }
            out.push((t.id, matrices));
            if out.len() >= limit {
                break;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key::from_bytes([3; 32])
    }

    /// A configuration in which every field differs from the default.
    fn policy() -> SamplingConfig {
        SamplingConfig {
            call_ppm: 1_000_000,
            row_ppm: 250_000,
            col_ppm: 5,
            batch_ppm: 999_999,
            min_rows: 2,
            min_cols: 3,
            min_batches: 4,
            max_rows: 64,
            max_cols: 0,
            max_batches: 7,
        }
    }

    /// Hello bytes around `body`: magic, `version`, length, body and a correct MAC.
    fn sealed(key: &Key, version: u16, body: &[u8]) -> Vec<u8> {
        let mut w = Writer::new();
        w.raw(&HELLO_MAGIC);
        w.u16(version);
        w.u32(body.len() as u32);
        w.raw(body);
        let mac = hello_mac(&key.mac_key(), &w.buf);
        w.raw(&mac);
        w.buf
    }

    /// A bf16 tensor of 2 matrices of 4 rows x 3 columns; element (e, r, c) has the
    /// bytes [e, r, c, 0x3f].
    fn stacked(key: &Key, id: u32) -> (HelloTensor, Vec<u8>) {
        let mut data = Vec::new();
        let mut fingerprints = Vec::new();
        for e in 0..2u8 {
            for r in 0..4u8 {
                let row: Vec<u8> = (0..3u8).flat_map(|c| [e * 16 + r, c]).collect();
                fingerprints.push(fingerprint(&key.fingerprint_key(), &row));
                data.extend_from_slice(&row);
            }
        }
        (
            HelloTensor {
                id,
                dtype: DType::BF16,
                matrices: 2,
                rows: 4,
                cols: 3,
                fingerprints,
            },
            data,
        )
    }

    #[test]
    fn hello_round_trips_in_any_chunking() {
        let key = key();
        let (t, _) = stacked(&key, 5);
        let hello = ServerHello {
            key_id: 0,
            nonce: [9; 16],
            sampling: policy(),
            tensors: vec![t],
            mode: HelloMode::Sampling,
        };
        let bytes = hello.encode(&key).unwrap();
        let want = ServerHello {
            key_id: key.id(),
            ..hello
        };
        for size in [1, 2, 7, bytes.len()] {
            let mut r = HelloReader::new(&key);
            let mut got = None;
            for c in bytes.chunks(size) {
                if let Some(h) = r.push(c).unwrap() {
                    assert!(got.is_none());
                    got = Some(h);
                }
            }
            assert_eq!(got.as_ref(), Some(&want));
            assert_eq!(r.finish(), Ok(()));
        }
        assert_eq!(ServerHello::decode(&key, &bytes), Ok(want));
    }

    #[test]
    fn the_sampling_configuration_follows_the_nonce_in_the_header_encoding() {
        let key = key();
        let hello = ServerHello {
            key_id: key.id(),
            nonce: [9; 16],
            sampling: policy(),
            tensors: vec![],
            mode: HelloMode::Sampling,
        };
        let bytes = hello.encode(&key).unwrap();
        assert_eq!(
            bytes.len(),
            HELLO_FIXED_LEN + HELLO_BODY_FIXED_LEN + MAC_LEN
        );
        let mut config = Writer::new();
        policy().encode(&mut config);
        let at = HELLO_NONCE_OFFSET + 16;
        assert_eq!(&bytes[at..at + SAMPLING_CONFIG_LEN], &config.buf[..]);
        assert_eq!(&bytes[at..at + 4], &1_000_000u32.to_le_bytes());
        assert_eq!(
            ServerHello::decode(&key, &bytes).unwrap().sampling,
            policy()
        );
    }

    #[test]
    fn a_sampling_configuration_the_header_would_refuse_is_refused() {
        let key = key();
        let mut bad = Vec::new();
        for (i, c) in [
            SamplingConfig {
                call_ppm: 1_000_001,
                ..policy()
            },
            SamplingConfig {
                row_ppm: u32::MAX,
                ..policy()
            },
            SamplingConfig {
                batch_ppm: 1_000_001,
                ..policy()
            },
            SamplingConfig {
                min_rows: 65,
                ..policy()
            },
        ]
        .into_iter()
        .enumerate()
        {
            // Behind a correct MAC (the encoder itself refuses to write it).
            let hello = ServerHello {
                key_id: key.id(),
                nonce: [0; 16],
                sampling: c,
                tensors: vec![],
                mode: HelloMode::Sampling,
            };
            let e = hello.encode(&key).unwrap_err();
            assert!(e.0.contains("sampling configuration"), "{e}");
            let mut body = Writer::new();
            body.u64(key.id());
            body.raw(&[i as u8; 16]);
            c.encode(&mut body);
            body.u32(0);
            let bytes = sealed(&key, HELLO_VERSION, &body.buf);
            let e = ServerHello::decode(&key, &bytes).unwrap_err();
            let HandshakeError::Decode(d) = &e else {
                panic!("config {i}: {e}");
            };
            assert_eq!(
                (d.what, d.offset),
                ("hello: sampling config", HELLO_NONCE_OFFSET as u64 + 16),
                "{e}"
            );
            bad.push(e.to_string());
        }
        assert!(bad[0].contains("call rate is 1000001 ppm"), "{}", bad[0]);
        assert!(
            bad[3].contains("minimum 65 is above maximum 64"),
            "{}",
            bad[3]
        );
        // The same bytes with a valid configuration decode.
        let mut body = Writer::new();
        body.u64(key.id());
        body.raw(&[0; 16]);
        policy().encode(&mut body);
        body.u8(HelloMode::Commit as u8);
        body.u32(0);
        let ok = ServerHello::decode(&key, &sealed(&key, HELLO_VERSION, &body.buf)).unwrap();
        assert_eq!(ok.sampling, policy());
        assert_eq!(ok.mode, HelloMode::Commit);
        // An unknown mode is refused.
        let at = HELLO_NONCE_OFFSET + 16 + SAMPLING_CONFIG_LEN;
        let mut b = sealed(&key, HELLO_VERSION, &body.buf);
        b[at] = 2;
        let mac = hello_mac(&key.mac_key(), &b[..b.len() - MAC_LEN]);
        let n = b.len();
        b[n - MAC_LEN..].copy_from_slice(&mac);
        let e = ServerHello::decode(&key, &b).unwrap_err();
        assert!(e.to_string().contains("hello: mode"), "{e}");
    }

    #[test]
    fn a_version_1_hello_is_refused_with_a_clear_error() {
        let key = key();
        // A well-formed version-1 hello: no sampling configuration, correctly MACed.
        let mut body = Writer::new();
        body.u64(key.id());
        body.raw(&[5; 16]);
        body.u32(0);
        let v1 = sealed(&key, 1, &body.buf);
        let e = ServerHello::decode(&key, &v1).unwrap_err();
        assert_eq!(e, HandshakeError::UnsupportedVersion(1));
        let text = e.to_string();
        assert!(
            text.starts_with("unsupported mmaudit hello version 1 (this build reads version 3"),
            "{text}"
        );
        assert!(text.contains("upgrade mmaudit-verify"), "{text}");
        // Refused from the version bytes alone, before the rest arrives.
        let mut r = HelloReader::new(&key);
        assert_eq!(
            r.push(&v1[..10]),
            Err(HandshakeError::UnsupportedVersion(1))
        );
        let newer = HandshakeError::UnsupportedVersion(4).to_string();
        assert!(newer.contains("newer than this prover"), "{newer}");
        let v2 = HandshakeError::UnsupportedVersion(2).to_string();
        assert!(v2.contains("does not state the session's mode"), "{v2}");
    }

    #[test]
    fn restamping_changes_the_nonce_and_keeps_the_mac_valid() {
        let key = key();
        let hello = ServerHello {
            key_id: key.id(),
            nonce: [0; 16],
            sampling: SamplingConfig::default(),
            tensors: vec![],
            mode: HelloMode::Sampling,
        };
        let mut bytes = hello.encode(&key).unwrap();
        restamp_nonce(&mut bytes, &key, [7; 16]);
        assert_eq!(ServerHello::decode(&key, &bytes).unwrap().nonce, [7; 16]);
    }

    #[test]
    fn refusals_name_their_cause() {
        let key = key();
        let hello = ServerHello {
            key_id: key.id(),
            nonce: [0; 16],
            sampling: SamplingConfig::default(),
            tensors: vec![],
            mode: HelloMode::Sampling,
        };
        let bytes = hello.encode(&key).unwrap();
        let err = |b: &[u8]| ServerHello::decode(&key, b).unwrap_err();
        assert!(matches!(
            err(b"MMAUDIT\0"),
            HandshakeError::NotAHello { .. }
        ));
        assert!(matches!(
            err(&bytes[..20]),
            HandshakeError::Truncated { .. }
        ));
        for v in [0u8, 1, 2, 4] {
            let mut b = bytes.clone();
            b[8] = v;
            assert_eq!(err(&b), HandshakeError::UnsupportedVersion(v as u16));
        }
        let mut b = bytes.clone();
        b[HELLO_NONCE_OFFSET] ^= 1;
        assert!(matches!(err(&b), HandshakeError::BadMac { .. }));
        assert!(matches!(
            ServerHello::decode(&Key::from_bytes([4; 32]), &bytes).unwrap_err(),
            HandshakeError::KeyMismatch { .. }
        ));
        let mut b = bytes.clone();
        b.push(0);
        assert!(matches!(err(&b), HandshakeError::AfterHello { .. }));
        // A body length over the cap is refused from its 4 bytes alone.
        let mut r = HelloReader::new(&key);
        let mut head = bytes[..10].to_vec();
        head.extend_from_slice(&(MAX_HELLO_BODY_LEN + 1).to_le_bytes());
        let e = r.push(&head).unwrap_err();
        assert!(e.to_string().contains("exceeds the cap"), "{e}");
    }

    #[test]
    fn counts_beyond_the_body_are_refused_before_allocating() {
        let key = key();
        // A tensor claiming 2^32-1 matrices of 2^40 rows, inside a correctly MACed body.
        let mut body = Writer::new();
        body.u64(key.id());
        body.raw(&[0; 16]);
        SamplingConfig::default().encode(&mut body);
        body.u8(0);
        body.u32(1);
        body.u32(0);
        body.u8(DType::F32 as u8);
        body.u32(u32::MAX);
        body.u64(MAX_DIM);
        body.u64(4);
        let e = ServerHello::decode(&key, &sealed(&key, HELLO_VERSION, &body.buf)).unwrap_err();
        assert!(e.to_string().contains("only 0 are left"), "{e}");
        // And a tensor count beyond the body.
        let mut body = Writer::new();
        body.u64(key.id());
        body.raw(&[0; 16]);
        SamplingConfig::default().encode(&mut body);
        body.u8(0);
        body.u32(u32::MAX);
        let e = ServerHello::decode(&key, &sealed(&key, HELLO_VERSION, &body.buf)).unwrap_err();
        assert!(e.to_string().contains("hello: tensor count"), "{e}");
    }

    #[test]
    fn the_table_finds_stored_rows_and_builds_evidence() {
        let key = key();
        let (t, data) = stacked(&key, 2);
        let table = OperandTable::new(
            &key,
            ServerHello {
                key_id: key.id(),
                nonce: [0; 16],
                sampling: SamplingConfig::default(),
                tensors: vec![t],
                mode: HelloMode::Sampling,
            },
        );
        let row = |e: usize, r: usize| &data[(e * 4 + r) * 6..][..6];
        // Two batch entries: the first uses matrix 1, the second matrix 0; rows 1 and 3.
        let mut sent = Vec::new();
        for (e, r) in [(1, 1), (1, 3), (0, 1), (0, 3)] {
            sent.extend_from_slice(row(e, r));
        }
        let got = table.reference(DType::BF16, 3, &[1, 3], 2, &sent).unwrap();
        assert_eq!(
            got,
            OperandData::Reference {
                tensor: 2,
                matrices: vec![1, 0],
                evidence: [row(1, 1), row(1, 3), row(0, 1), row(0, 3)]
                    .iter()
                    .flat_map(|r| r[..2].to_vec())
                    .collect(),
            }
        );
        // Rows in another order, another type, another k, or changed data: no reference.
        let mut swapped = sent.clone();
        swapped[..6].copy_from_slice(row(1, 3));
        assert_eq!(table.reference(DType::BF16, 3, &[1, 3], 2, &swapped), None);
        assert_eq!(table.reference(DType::F16, 3, &[1, 3], 2, &sent), None);
        assert_eq!(table.reference(DType::BF16, 3, &[1, 4], 2, &sent), None);
        assert_eq!(table.reference(DType::BF16, 3, &[1, 3], 1, &sent), None);
        let mut changed = sent.clone();
        changed[7] ^= 1;
        assert_eq!(table.reference(DType::BF16, 3, &[1, 3], 2, &changed), None);
    }
}
