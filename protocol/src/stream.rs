//! The byte stream between prover and verifier: a header, then MAC-chained frames of
//! records. A capture file is exactly the bytes a TCP sink would carry.
//!
//! ```text
//! stream = header frame*          (the last frame holds the End record)
//! header = MAGIC version:u16 body_len:u32 body mac:[32]
//! frame  = payload_len:u32 seq:u64 raw_len:u32 codec:u8 payload mac:[32]
//! ```
//!
//! The writer ([`StreamWriter`]) is what the prover's background thread runs; the
//! reader ([`StreamReader`]) is what the verifier runs on untrusted bytes, fed in any
//! chunking. The reader must never panic, never allocate on the word of its input beyond
//! the caps below, and must check a frame's MAC before decompressing or decoding
//! anything inside it. Specified byte for byte in docs/PROTOCOL.md ("Stream layout",
//! "Header", "Frames and the MAC chain").
//!
//! ```
//! use mmaudit_protocol::keys::Key;
//! use mmaudit_protocol::record::{End, Record};
//! use mmaudit_protocol::stream::{Event, StreamReader, StreamWriter};
//! # let header = mmaudit_protocol::fuzzing::seed_header();
//! let key = Key::from_bytes([7; 32]);
//! let (mut writer, mut bytes) = StreamWriter::new(&key, &header);
//! let end = Record::End(End { calls: 0, samples: 0, gap_calls: 0 });
//! bytes.extend_from_slice(&writer.frame(&[end]));
//!
//! let mut reader = StreamReader::new(&key);
//! let mut events = Vec::new();
//! for chunk in bytes.chunks(10) {
//!     events.extend(reader.push(chunk)?);
//! }
//! reader.finish()?; // Ok only for a complete stream
//! assert!(matches!(events[0], Event::Header(_)));
//! assert!(matches!(events[1], Event::Frame { seq: 0, .. }));
//! # Ok::<(), mmaudit_protocol::stream::StreamError>(())
//! ```

use crate::codec::DecodeError;

mod header;
mod mac;
mod reader;
mod writer;

pub use header::StreamHeader;
pub use reader::{Authenticated, PayloadDecoder, StreamReader, Unit};
pub use writer::{Compression, FrameTooLarge, Part, StreamWriter};

/// The first eight bytes of every stream.
pub const MAGIC: [u8; 8] = *b"MMAUDIT\0";
/// The newest protocol version this crate writes and reads. Versions 1 and 2 differ
/// only in the sampling schedule the stream follows ([`StreamHeader::schedule`]);
/// version 3 is commit mode (docs/COMMIT.md).
pub const VERSION: u16 = 3;

/// Bytes of the header before its body: magic, version, body length.
pub const HEADER_FIXED_LEN: usize = 8 + 2 + 4;
/// Largest header body accepted (64 KiB); a valid one is far smaller.
pub const MAX_HEADER_BODY_LEN: u32 = 64 * 1024;
/// Largest host, device or producer name in the header, in bytes of UTF-8.
pub const MAX_NAME_LEN: usize = 256;
/// Most device names in the header.
pub const MAX_DEVICES: usize = 64;

/// Bytes of a frame before its payload: payload_len, seq, raw_len, codec.
pub const FRAME_HEAD_LEN: usize = 4 + 8 + 4 + 1;
/// Largest frame payload as sent (compressed), 16 MiB.
pub const MAX_PAYLOAD_LEN: u32 = 16 * 1024 * 1024;
/// Largest frame payload after decompression, 64 MiB.
pub const MAX_RAW_LEN: u32 = 64 * 1024 * 1024;
/// Bytes of every MAC (keyed BLAKE3 output).
pub const MAC_LEN: usize = 32;

/// Frame codec: the payload is the records as they are.
pub const CODEC_NONE: u8 = 0;
/// Frame codec: the payload is zstd-compressed records.
pub const CODEC_ZSTD: u8 = 1;

/// Domain-separation prefix of the header MAC input.
pub const HEADER_MAC_DOMAIN: &[u8] = b"mmaudit-header-v1";
/// Domain-separation prefix of every frame MAC input.
pub const FRAME_MAC_DOMAIN: &[u8] = b"mmaudit-frame-v1";

/// What the reader delivers, in stream order.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// The authenticated stream header (always the first event).
    Header(StreamHeader),
    /// An authenticated frame's records.
    Frame {
        /// The frame's sequence number (0, 1, 2, ...).
        seq: u64,
        /// Its records, in order.
        records: Vec<crate::record::Record>,
    },
}

/// Why a stream was refused. Offsets count bytes from the start of the stream.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// Bad magic, or an input shorter than the magic.
    #[error("not an mmaudit capture: {detail}")]
    NotACapture {
        /// What was found instead.
        detail: String,
    },
    /// A version this build does not read.
    #[error("unsupported mmaudit stream version {0} (this build reads versions 1 to {VERSION})")]
    UnsupportedVersion(u16),
    /// The header names another key than the one given.
    #[error("the stream was made with key id {stream_key_id:016x}, but the key given has id {our_key_id:016x}")]
    KeyMismatch {
        /// The key id in the header.
        stream_key_id: u64,
        /// The id of the key the reader was given.
        our_key_id: u64,
    },
    /// A MAC did not verify: the bytes were altered, forged, spliced from another stream,
    /// or made with another key.
    #[error("MAC check failed for {what} (MAC at stream offset {offset}): the stream was altered, forged or spliced")]
    BadMac {
        /// "header" or "frame N".
        what: String,
        /// Offset of the MAC that failed.
        offset: u64,
    },
    /// A frame's sequence number is not the next one.
    #[error("frame sequence number {found} at stream offset {offset}, expected {expected}: a frame was removed, duplicated or reordered")]
    Sequence {
        /// The number the next frame must carry.
        expected: u64,
        /// The number it carries.
        found: u64,
        /// Offset of the sequence number field.
        offset: u64,
    },
    /// The stream ended before its End record (or in the middle of a header or frame).
    #[error("stream truncated at offset {offset}: {detail}")]
    Truncated {
        /// Bytes received.
        offset: u64,
        /// What was missing.
        detail: String,
    },
    /// Bytes after the frame holding the End record.
    #[error("unexpected bytes after the End frame at stream offset {offset}")]
    AfterEnd {
        /// Offset of the first such byte.
        offset: u64,
    },
    /// A malformed header or frame field, or malformed content of an authenticated frame.
    #[error("malformed stream: {0}")]
    Decode(#[from] DecodeError),
}
