//! The prover's side: turns a header and batches of records into stream bytes.
//!
//! The writer is total: it never fails and never panics. Anything that could not be
//! represented within the frame caps is split (gap records) or replaced by a gap record
//! that says so (an oversized sample), never silently dropped.

use std::borrow::Cow;
use std::fmt;

use super::mac::{frame_mac, header_mac};
use super::{
    StreamHeader, CODEC_NONE, CODEC_ZSTD, FRAME_HEAD_LEN, MAC_LEN, MAGIC, MAX_PAYLOAD_LEN,
    MAX_RAW_LEN,
};
use crate::codec::Writer;
use crate::keys::Key;
use crate::record::{Gap, GapReason, Record, RECORD_HEAD_LEN};

/// How frame payloads are compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Payloads travel as they are (codec 0).
    None,
    /// zstd at this level (codec 1); a payload that zstd does not shrink travels as it is.
    Zstd {
        /// zstd compression level (1..=22; 3 is the default).
        level: i32,
    },
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Zstd { level: 3 }
    }
}

/// A payload that no frame can carry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a frame payload of {len} bytes does not fit in one frame (at most {MAX_RAW_LEN} bytes raw and {MAX_PAYLOAD_LEN} bytes as sent)")]
pub struct FrameTooLarge {
    /// The payload's length before compression.
    pub len: usize,
}

/// A piece of a frame's payload for [`StreamWriter::frame_parts`].
#[derive(Clone, Copy, Debug)]
pub enum Part<'a> {
    /// A record: the writer encodes it (splitting or replacing it when it is too large
    /// for a frame, as [`StreamWriter::frame`] does).
    Record(&'a Record),
    /// Whole records already encoded as [`Record::encode`] writes them (for example by
    /// [`Record::encode_ledger`]), concatenated.
    Encoded(&'a [u8]),
}

/// Where the record that starts at `at` ends, by its head (`None` when its head is cut
/// short; the end may lie beyond `bytes`).
fn record_end(bytes: &[u8], at: usize) -> Option<usize> {
    let head = bytes.get(at..at.checked_add(RECORD_HEAD_LEN)?)?;
    let body = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
    Some(at.saturating_add(RECORD_HEAD_LEN).saturating_add(body))
}

/// The length of the longest run of whole records at the front of `bytes` that is at
/// most `limit` bytes long, read from the record heads (a head that does not fit, or
/// says more than is there, ends the run).
fn whole_records_within(bytes: &[u8], limit: usize) -> usize {
    if bytes.len() <= limit {
        return bytes.len();
    }
    let mut at = 0usize;
    while let Some(end) = record_end(bytes, at) {
        if end > limit || end > bytes.len() {
            break;
        }
        at = end;
    }
    at
}

/// The length of the first record in `bytes` by its head (all of `bytes` when the head
/// is cut short or claims more than is there; at least 1 byte of a non-empty run).
fn first_record_len(bytes: &[u8]) -> usize {
    record_end(bytes, 0).map_or(bytes.len(), |end| end.min(bytes.len()))
}

/// Writes one stream: a header, then frames numbered 0, 1, 2, ..., each MAC chained to
/// the one before.
pub struct StreamWriter {
    mac_key: [u8; 32],
    prev_mac: [u8; MAC_LEN],
    next_seq: u64,
    compression: Compression,
    compressor: Option<(i32, zstd::bulk::Compressor<'static>)>,
    replaced_samples: u64,
    /// The payload buffer, kept between frames.
    scratch: Vec<u8>,
}

impl fmt::Debug for StreamWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamWriter")
            .field("next_seq", &self.next_seq)
            .field("compression", &self.compression)
            .finish_non_exhaustive()
    }
}

/// The largest payload buffer kept between frames.
const SCRATCH_KEPT: usize = 4 << 20;

/// Gap indices per record when a gap too large for one frame is split.
const GAP_INDICES_PER_RECORD: usize =
    (MAX_PAYLOAD_LEN as usize - RECORD_HEAD_LEN - 1 - 4 - 2 - u16::MAX as usize) / 8;

impl StreamWriter {
    /// Starts a stream: returns the writer and the header bytes to send first.
    ///
    /// The header's key id is always `key.id()` (the `key_id` field of `header` is not
    /// used). Names longer than [`super::MAX_NAME_LEN`] are cut and devices beyond
    /// [`super::MAX_DEVICES`] left out (see [`StreamHeader::encode_body`]).
    pub fn new(key: &Key, header: &StreamHeader) -> (Self, Vec<u8>) {
        let mac_key = key.mac_key();
        let mut body = Writer::new();
        header.encode_body(&mut body);
        body.buf[..8].copy_from_slice(&key.id().to_le_bytes());
        let mut out = Vec::with_capacity(super::HEADER_FIXED_LEN + body.buf.len() + MAC_LEN);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&(header.schedule as u16).to_le_bytes());
        // At most about 17 KiB: names and device count are capped by encode_body.
        out.extend_from_slice(&(body.buf.len() as u32).to_le_bytes());
        out.extend_from_slice(&body.buf);
        let mac = header_mac(&mac_key, &out);
        out.extend_from_slice(&mac);
        let writer = StreamWriter {
            mac_key,
            prev_mac: mac,
            next_seq: 0,
            compression: Compression::default(),
            compressor: None,
            replaced_samples: 0,
            scratch: Vec::new(),
        };
        (writer, out)
    }

    /// The writer with another compression setting.
    pub fn with_compression(mut self, compression: Compression) -> Self {
        self.set_compression(compression);
        self
    }

    /// Changes the compression of the frames that follow.
    pub fn set_compression(&mut self, compression: Compression) {
        self.compression = compression;
    }

    /// The sequence number the next frame will carry (= frames written so far).
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// How many sample (or opening) records were too large for any frame and were
    /// replaced by gap records (reason [`GapReason::Internal`]). A producer that counts totals for its
    /// End record counts these as gap calls, not samples.
    pub fn replaced_samples(&self) -> u64 {
        self.replaced_samples
    }

    /// Encodes `records` into one frame, or into several consecutive frames if they do
    /// not fit in one (each frame's records take at most [`MAX_PAYLOAD_LEN`] bytes before
    /// compression, so every frame fits even if zstd cannot shrink it). An empty slice
    /// gives one empty frame. A gap record too large for a frame is split into several;
    /// a sample record too large for a frame (over 16 MiB encoded) is replaced by a gap
    /// record naming its call, counted in [`StreamWriter::replaced_samples`].
    ///
    /// The writer does not police record order: a frame after the End record, or a
    /// record after it, gives a stream the reader refuses.
    pub fn frame(&mut self, records: &[Record]) -> Vec<u8> {
        self.frame_parts(records.iter().map(Part::Record))
    }

    /// [`StreamWriter::frame`] for records of which some are encoded already: the
    /// parts' records in order, in as few frames as fit. An [`Part::Encoded`] run is cut
    /// between frames only at record boundaries (read from the record heads).
    pub fn frame_parts<'p>(&mut self, parts: impl IntoIterator<Item = Part<'p>>) -> Vec<u8> {
        let target = MAX_PAYLOAD_LEN as usize;
        let mut out = Vec::new();
        let mut payload = Writer {
            buf: std::mem::take(&mut self.scratch),
        };
        payload.buf.clear();
        for part in parts {
            match part {
                Part::Record(record) => {
                    let pieces = self.fit(record, target);
                    for piece in pieces.iter() {
                        if !payload.buf.is_empty()
                            && payload.buf.len() + piece.encoded_len() > target
                        {
                            self.seal_into(&mut out, &mut payload);
                        }
                        piece.encode(&mut payload);
                    }
                }
                Part::Encoded(mut run) => {
                    while !run.is_empty() {
                        let room = target.saturating_sub(payload.buf.len());
                        let mut take = whole_records_within(run, room);
                        if take == 0 {
                            if !payload.buf.is_empty() {
                                self.seal_into(&mut out, &mut payload);
                                continue;
                            }
                            // One record longer than a frame: not one this crate
                            // encodes (see `fit`); it goes alone and the reader refuses it.
                            take = first_record_len(run);
                        }
                        payload.raw(&run[..take]);
                        run = &run[take..];
                    }
                }
            }
        }
        if !payload.buf.is_empty() || out.is_empty() {
            self.seal_into(&mut out, &mut payload);
        }
        // Kept for the next frame unless an unusually large one grew it.
        if payload.buf.capacity() <= SCRATCH_KEPT {
            self.scratch = payload.buf;
        }
        out
    }

    /// One frame whose payload is `raw`: concatenated encoded records, or anything else
    /// (a reader decodes it as records). Fails when `raw` exceeds [`MAX_RAW_LEN`] or
    /// does not compress to at most [`MAX_PAYLOAD_LEN`] bytes.
    pub fn frame_raw(&mut self, raw: &[u8]) -> Result<Vec<u8>, FrameTooLarge> {
        if raw.len() > MAX_RAW_LEN as usize {
            return Err(FrameTooLarge { len: raw.len() });
        }
        let (codec, sent) = self.compress(raw);
        if sent.len() > MAX_PAYLOAD_LEN as usize {
            return Err(FrameTooLarge { len: raw.len() });
        }
        let sent = sent.into_owned();
        Ok(self.seal_unchecked(codec, raw.len() as u32, &sent))
    }

    /// A frame with exactly these head fields and payload, MACed and numbered like any
    /// other, with no check at all: for tests and fuzzing of the reader.
    #[doc(hidden)]
    pub fn seal_unchecked(&mut self, codec: u8, raw_len: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(FRAME_HEAD_LEN + payload.len() + MAC_LEN);
        out.extend_from_slice(
            &u32::try_from(payload.len())
                .unwrap_or(u32::MAX)
                .to_le_bytes(),
        );
        out.extend_from_slice(&self.next_seq.to_le_bytes());
        out.extend_from_slice(&raw_len.to_le_bytes());
        out.push(codec);
        out.extend_from_slice(payload);
        let mac = frame_mac(&self.mac_key, &self.prev_mac, &out);
        out.extend_from_slice(&mac);
        self.prev_mac = mac;
        self.next_seq = self.next_seq.wrapping_add(1);
        out
    }

    /// Seals `payload` into a frame appended to `out`, and empties it.
    fn seal_into(&mut self, out: &mut Vec<u8>, payload: &mut Writer) {
        out.extend_from_slice(&self.seal_records(&payload.buf));
        payload.buf.clear();
    }

    /// Seals records of at most [`MAX_PAYLOAD_LEN`] bytes: compressed only when that
    /// shrinks them, so the sent payload is never longer than `raw` and always fits.
    fn seal_records(&mut self, raw: &[u8]) -> Vec<u8> {
        let (codec, sent) = self.compress(raw);
        let sent = sent.into_owned();
        self.seal_unchecked(codec, raw.len() as u32, &sent)
    }

    /// The codec and bytes to send for `raw`: zstd when configured and shorter.
    fn compress<'r>(&mut self, raw: &'r [u8]) -> (u8, Cow<'r, [u8]>) {
        let Compression::Zstd { level } = self.compression else {
            return (CODEC_NONE, Cow::Borrowed(raw));
        };
        if !matches!(&self.compressor, Some((l, _)) if *l == level) {
            self.compressor = zstd::bulk::Compressor::new(level).ok().map(|c| (level, c));
        }
        let compressed = match &mut self.compressor {
            Some((_, c)) => c.compress(raw).ok(),
            None => None,
        };
        match compressed {
            Some(c) if c.len() < raw.len() => (CODEC_ZSTD, Cow::Owned(c)),
            _ => (CODEC_NONE, Cow::Borrowed(raw)),
        }
    }

    /// `record` itself when it fits in a frame; else the records that replace it.
    fn fit<'r>(&mut self, record: &'r Record, target: usize) -> Cow<'r, [Record]> {
        let len = record.encoded_len();
        if len <= target {
            return Cow::Borrowed(std::slice::from_ref(record));
        }
        match record {
            Record::Sample(_) | Record::Opening(_) => {
                let (index, what) = match record {
                    Record::Opening(o) => (o.index, "opening"),
                    Record::Sample(s) => (s.index, "sample"),
                    _ => unreachable!("matched above"),
                };
                self.replaced_samples += 1;
                Cow::Owned(vec![Record::Gap(Gap {
                    indices: vec![index],
                    reason: GapReason::Internal,
                    detail: format!(
                        "{what} record of {len} bytes exceeds the frame limit of {target} bytes"
                    ),
                })])
            }
            Record::Gap(g) => Cow::Owned(
                g.indices
                    .chunks(GAP_INDICES_PER_RECORD)
                    .map(|c| {
                        Record::Gap(Gap {
                            indices: c.to_vec(),
                            reason: g.reason,
                            detail: g.detail.clone(),
                        })
                    })
                    .collect(),
            ),
            // Ledger (157 bytes), notice (at most 65543 bytes) and end (29 bytes)
            // records always fit.
            _ => Cow::Borrowed(std::slice::from_ref(record)),
        }
    }
}
