//! The verifier's side: an incremental decoder of untrusted stream bytes.
//!
//! Bytes may arrive in any chunking; the reader buffers at most one header or frame
//! (at most [`FRAME_HEAD_LEN`] + [`MAX_PAYLOAD_LEN`] + [`MAC_LEN`] bytes), plus one
//! decompressed payload of at most [`MAX_RAW_LEN`] bytes while a frame is decoded. Every
//! declared length is checked against its cap before bytes are buffered for it, and a
//! frame's MAC is checked before anything inside it is decompressed or decoded. Every
//! check happens as soon as the bytes it needs have arrived, so the outcome does not
//! depend on the chunking. It never panics.

use std::borrow::Cow;
use std::fmt;

use super::mac::{frame_mac, header_mac, mac_matches};
use super::{
    Event, StreamError, StreamHeader, CODEC_NONE, CODEC_ZSTD, FRAME_HEAD_LEN, HEADER_FIXED_LEN,
    MAC_LEN, MAGIC, MAX_HEADER_BODY_LEN, MAX_PAYLOAD_LEN, MAX_RAW_LEN,
};
use crate::codec::{DecodeError, Reader};
use crate::keys::Key;
use crate::record::Record;
use crate::schedule::ScheduleVersion;

/// Buffer capacity kept between frames; a larger buffer (after a large frame) is freed
/// so that an idle reader does not hold up to a frame's worth of memory.
const KEEP_CAPACITY: usize = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Reading the stream header.
    Header,
    /// Reading frames.
    Frames,
    /// The End record was seen; nothing may follow.
    Ended,
}

/// The head fields of a frame, read before its payload arrives.
struct FrameHead {
    payload_len: usize,
    seq: u64,
    raw_len: usize,
    codec: u8,
}

/// Decodes one stream incrementally. See the module documentation.
pub struct StreamReader {
    mac_key: [u8; 32],
    key_id: u64,
    /// The bytes of the header or frame being read; `buf[0]` is at `unit_start`.
    buf: Vec<u8>,
    unit_start: u64,
    phase: Phase,
    prev_mac: [u8; MAC_LEN],
    next_seq: u64,
    header: Option<StreamHeader>,
    failed: Option<StreamError>,
    salvaged: Vec<Unit>,
    decompressor: Option<zstd::bulk::Decompressor<'static>>,
    /// Frames are authenticated only, and handed out to be decoded elsewhere
    /// ([`StreamReader::authenticating`]).
    defer: bool,
}

/// What a reader completes: an event, or (a reader made with
/// [`StreamReader::authenticating`]) a frame authenticated but not yet decoded.
#[derive(Debug)]
pub enum Unit {
    /// A decoded header or frame.
    Event(Event),
    /// An authenticated frame, to decode with [`Authenticated::decode`].
    Frame(Authenticated),
}

/// What [`Authenticated::decode`] keeps between frames (a zstd context, made on first
/// use); one per thread.
#[derive(Default)]
pub struct PayloadDecoder(Option<zstd::bulk::Decompressor<'static>>);

impl PayloadDecoder {
    /// No context yet.
    pub const fn new() -> Self {
        PayloadDecoder(None)
    }
}

/// A frame whose MAC and place in the chain were checked, its payload not yet looked
/// at.
#[derive(Debug)]
pub struct Authenticated {
    seq: u64,
    codec: u8,
    raw_len: usize,
    payload: Vec<u8>,
    /// stream offset of the payload
    payload_at: u64,
    /// stream offset of the byte after the frame
    end: u64,
}

impl Authenticated {
    /// The frame's sequence number.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Bytes of the payload once decompressed, as the frame declares (at most
    /// [`MAX_RAW_LEN`]).
    pub fn raw_len(&self) -> usize {
        self.raw_len
    }

    /// The stream offset just after the frame.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Decompresses and decodes the payload, as [`StreamReader::push`] does: the
    /// frame's event, and whether it holds the End record (nothing may follow it), or
    /// the error the reader would have stopped with.
    pub fn decode(&self, with: &mut PayloadDecoder) -> Result<(Event, bool), StreamError> {
        let (records, ended) = decode_payload(
            (self.seq, self.codec, self.raw_len),
            &self.payload,
            self.payload_at,
            &mut with.0,
        )?;
        Ok((
            Event::Frame {
                seq: self.seq,
                records,
            },
            ended,
        ))
    }
}

impl fmt::Debug for StreamReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamReader")
            .field("key_id", &format_args!("{:016x}", self.key_id))
            .field("phase", &self.phase)
            .field("bytes_consumed", &self.unit_start)
            .field("buffered", &self.buf.len())
            .field("next_seq", &self.next_seq)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

fn stream_error(offset: u64, what: &'static str, problem: impl Into<String>) -> StreamError {
    StreamError::Decode(DecodeError {
        offset,
        what,
        problem: problem.into(),
        unit: "stream".to_string(),
    })
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

impl StreamReader {
    /// A reader for streams MACed with `key`.
    pub fn new(key: &Key) -> Self {
        StreamReader {
            mac_key: key.mac_key(),
            key_id: key.id(),
            buf: Vec::new(),
            unit_start: 0,
            phase: Phase::Header,
            prev_mac: [0; MAC_LEN],
            next_seq: 0,
            header: None,
            failed: None,
            salvaged: Vec::new(),
            decompressor: None,
            defer: false,
        }
    }

    /// A reader that authenticates frames (MAC, chain, sequence, lengths, codec) and
    /// hands each out as [`Unit::Frame`] without decompressing or decoding it, so that
    /// frames can be decoded on other threads ([`Authenticated::decode`]). It cannot see
    /// the End record: the caller stops at it, and treats anything after it as
    /// [`StreamError::AfterEnd`] at the frame's end; [`StreamReader::finish`] then
    /// answers as if no End record had come.
    pub fn authenticating(key: &Key) -> Self {
        StreamReader {
            defer: true,
            ..StreamReader::new(key)
        }
    }

    /// Feeds the next bytes of the stream; returns the events they complete.
    ///
    /// Partial headers and frames are buffered until the rest arrives. On an error the
    /// reader stops for good: this and every later call return the same error. Events
    /// completed earlier in the failing call are not returned; they are kept for
    /// [`StreamReader::take_events_before_error`].
    pub fn push(&mut self, input: &[u8]) -> Result<Vec<Event>, StreamError> {
        let units = self.push_units(input)?;
        Ok(units.into_iter().filter_map(Unit::into_event).collect())
    }

    /// [`StreamReader::push`] for a reader made with [`StreamReader::authenticating`]
    /// (the same for any other reader, each event as [`Unit::Event`]).
    pub fn push_units(&mut self, mut input: &[u8]) -> Result<Vec<Unit>, StreamError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let mut events = Vec::new();
        loop {
            if self.phase == Phase::Ended {
                if input.is_empty() {
                    return Ok(events);
                }
                let offset = self.unit_start;
                return self.fail(StreamError::AfterEnd { offset }, events);
            }
            let need = match self.needed() {
                Ok(n) => n,
                Err(e) => return self.fail(e, events),
            };
            if self.buf.len() < need {
                if input.is_empty() {
                    return Ok(events);
                }
                let take = (need - self.buf.len()).min(input.len());
                // Grow by doubling, but never beyond this unit's size: the buffer holds
                // at most one header or frame.
                let len = self.buf.len() + take;
                if len > self.buf.capacity() {
                    let target = len.max(2 * self.buf.capacity()).min(need);
                    self.buf.reserve_exact(target - self.buf.len());
                }
                self.buf.extend_from_slice(&input[..take]);
                input = &input[take..];
                continue;
            }
            match self.complete(need) {
                Ok(event) => events.push(event),
                Err(e) => return self.fail(e, events),
            }
            self.unit_start += need as u64;
            self.buf.clear();
            if self.buf.capacity() > KEEP_CAPACITY {
                self.buf = Vec::new();
            }
        }
    }

    /// Says whether the stream is complete: `Ok` only when the frame holding the End
    /// record was read and nothing trails it. Otherwise the error of a failed reader,
    /// [`StreamError::NotACapture`] for an input shorter than the magic, or
    /// [`StreamError::Truncated`].
    pub fn finish(&self) -> Result<(), StreamError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let offset = self.bytes_received();
        let expected = self.needed().ok();
        let partial = |unit: String| {
            let of = match expected {
                Some(n) if n > self.buf.len() => format!(" of {n}"),
                _ => String::new(),
            };
            format!("in {unit} ({} bytes{of} received)", self.buf.len())
        };
        match self.phase {
            Phase::Ended => Ok(()),
            Phase::Header if offset < MAGIC.len() as u64 => Err(StreamError::NotACapture {
                detail: format!(
                    "the input is {offset} bytes long, shorter than the {}-byte magic",
                    MAGIC.len()
                ),
            }),
            Phase::Header => Err(StreamError::Truncated {
                offset,
                detail: partial("the stream header".to_string()),
            }),
            Phase::Frames if self.buf.is_empty() => Err(StreamError::Truncated {
                offset,
                detail: format!(
                    "the stream ends after {} frames without an End record",
                    self.next_seq
                ),
            }),
            Phase::Frames => Err(StreamError::Truncated {
                offset,
                detail: partial(format!("frame {}", self.next_seq)),
            }),
        }
    }

    /// Bytes of the headers and frames read completely and accepted so far.
    pub fn bytes_consumed(&self) -> u64 {
        self.unit_start
    }

    /// Bytes accepted so far, including a partial header or frame waiting for the rest.
    pub fn bytes_received(&self) -> u64 {
        self.unit_start + self.buf.len() as u64
    }

    /// The authenticated header, once read.
    pub fn header(&self) -> Option<&StreamHeader> {
        self.header.as_ref()
    }

    /// Frames authenticated and decoded so far.
    pub fn frames(&self) -> u64 {
        self.next_seq
    }

    /// True once the frame holding the End record was read.
    pub fn is_ended(&self) -> bool {
        self.phase == Phase::Ended
    }

    /// The error that stopped the reader, if any.
    pub fn error(&self) -> Option<&StreamError> {
        self.failed.as_ref()
    }

    /// The events completed in the call to [`StreamReader::push`] that failed, before
    /// the failure (each is authenticated and well formed). Empty after the first call.
    pub fn take_events_before_error(&mut self) -> Vec<Event> {
        self.take_units_before_error()
            .into_iter()
            .filter_map(Unit::into_event)
            .collect()
    }

    /// [`StreamReader::take_events_before_error`] as units.
    pub fn take_units_before_error(&mut self) -> Vec<Unit> {
        std::mem::take(&mut self.salvaged)
    }

    fn fail(&mut self, e: StreamError, events: Vec<Unit>) -> Result<Vec<Unit>, StreamError> {
        self.failed = Some(e.clone());
        self.salvaged = events;
        self.buf = Vec::new();
        Err(e)
    }

    /// How many bytes the current header or frame has in all, as far as the buffered
    /// bytes tell; checks every field as soon as it is complete.
    fn needed(&self) -> Result<usize, StreamError> {
        match self.phase {
            Phase::Header => self.header_needed(),
            Phase::Frames => Ok(self
                .frame_head()?
                .map_or(FRAME_HEAD_LEN, |h| FRAME_HEAD_LEN + h.payload_len + MAC_LEN)),
            Phase::Ended => Ok(0),
        }
    }

    fn header_needed(&self) -> Result<usize, StreamError> {
        let b = &self.buf;
        for (i, (&got, &want)) in b.iter().zip(MAGIC.iter()).enumerate() {
            if got != want {
                return Err(StreamError::NotACapture {
                    detail: format!(
                        "byte {i} is {got:#04x}, where the magic \"MMAUDIT\\0\" has {want:#04x}"
                    ),
                });
            }
        }
        if b.len() < 10 {
            return Ok(HEADER_FIXED_LEN);
        }
        let version = u16::from_le_bytes([b[8], b[9]]);
        if ScheduleVersion::of_stream_version(version).is_none() {
            return Err(StreamError::UnsupportedVersion(version));
        }
        if b.len() < HEADER_FIXED_LEN {
            return Ok(HEADER_FIXED_LEN);
        }
        let body_len = le_u32(&b[10..]);
        if body_len > MAX_HEADER_BODY_LEN {
            return Err(stream_error(
                self.unit_start + 10,
                "header body length",
                format!("{body_len} bytes exceeds the cap of {MAX_HEADER_BODY_LEN}"),
            ));
        }
        Ok(HEADER_FIXED_LEN + body_len as usize + MAC_LEN)
    }

    /// The frame head fields, checked, once its bytes are buffered.
    fn frame_head(&self) -> Result<Option<FrameHead>, StreamError> {
        let b = &self.buf;
        if b.len() < FRAME_HEAD_LEN {
            return Ok(None);
        }
        let at = self.unit_start;
        let payload_len = le_u32(b);
        if payload_len > MAX_PAYLOAD_LEN {
            return Err(stream_error(
                at,
                "frame payload length",
                format!("{payload_len} bytes exceeds the cap of {MAX_PAYLOAD_LEN}"),
            ));
        }
        let seq = le_u64(&b[4..]);
        if seq != self.next_seq {
            return Err(StreamError::Sequence {
                expected: self.next_seq,
                found: seq,
                offset: at + 4,
            });
        }
        let raw_len = le_u32(&b[12..]);
        if raw_len > MAX_RAW_LEN {
            return Err(stream_error(
                at + 12,
                "frame raw length",
                format!("{raw_len} bytes exceeds the cap of {MAX_RAW_LEN}"),
            ));
        }
        let codec = b[16];
        match codec {
            CODEC_NONE if raw_len != payload_len => {
                return Err(stream_error(
                    at + 12,
                    "frame raw length",
                    format!(
                    "an uncompressed frame declares {raw_len} raw bytes but carries {payload_len}"
                ),
                ))
            }
            CODEC_NONE | CODEC_ZSTD => {}
            c => {
                return Err(stream_error(
                    at + 16,
                    "frame codec",
                    format!("unknown codec {c}"),
                ))
            }
        }
        Ok(Some(FrameHead {
            payload_len: payload_len as usize,
            seq,
            raw_len: raw_len as usize,
            codec,
        }))
    }

    /// Authenticates and decodes the complete header or frame in `buf[..need]`.
    fn complete(&mut self, need: usize) -> Result<Unit, StreamError> {
        match self.phase {
            Phase::Header => self.complete_header(need).map(Unit::Event),
            _ => self.complete_frame(need),
        }
    }

    fn complete_header(&mut self, need: usize) -> Result<Event, StreamError> {
        let mac_at = need - MAC_LEN;
        let body = &self.buf[HEADER_FIXED_LEN..mac_at];
        if body.len() >= 8 {
            let stream_key_id = le_u64(body);
            if stream_key_id != self.key_id {
                return Err(StreamError::KeyMismatch {
                    stream_key_id,
                    our_key_id: self.key_id,
                });
            }
        }
        let mac = &self.buf[mac_at..need];
        if !mac_matches(header_mac(&self.mac_key, &self.buf[..mac_at]), mac) {
            return Err(StreamError::BadMac {
                what: "header".to_string(),
                offset: self.unit_start + mac_at as u64,
            });
        }
        let mut r = Reader::new(body, self.unit_start + HEADER_FIXED_LEN as u64, "stream");
        let mut header = StreamHeader::decode_body(&mut r)?;
        // the version was checked when the header's length was read
        header.schedule =
            ScheduleVersion::of_stream_version(u16::from_le_bytes([self.buf[8], self.buf[9]]))
                .unwrap_or(ScheduleVersion::V1);
        self.prev_mac.copy_from_slice(mac);
        self.phase = Phase::Frames;
        self.header = Some(header.clone());
        Ok(Event::Header(header))
    }

    fn complete_frame(&mut self, need: usize) -> Result<Unit, StreamError> {
        let Some(head) = self.frame_head()? else {
            return Err(stream_error(
                self.unit_start,
                "frame",
                "incomplete frame head",
            ));
        };
        let mac_at = FRAME_HEAD_LEN + head.payload_len;
        let mac = &self.buf[mac_at..mac_at + MAC_LEN];
        if !mac_matches(
            frame_mac(&self.mac_key, &self.prev_mac, &self.buf[..mac_at]),
            mac,
        ) {
            return Err(StreamError::BadMac {
                what: format!("frame {}", head.seq),
                offset: self.unit_start + mac_at as u64,
            });
        }
        // Authenticated: only now is anything inside the frame looked at.
        let payload = &self.buf[FRAME_HEAD_LEN..mac_at];
        let payload_at = self.unit_start + FRAME_HEAD_LEN as u64;
        let unit = if self.defer {
            Unit::Frame(Authenticated {
                seq: head.seq,
                codec: head.codec,
                raw_len: head.raw_len,
                payload: payload.to_vec(),
                payload_at,
                end: self.unit_start + need as u64,
            })
        } else {
            let (records, ended) = decode_payload(
                (head.seq, head.codec, head.raw_len),
                payload,
                payload_at,
                &mut self.decompressor,
            )?;
            if ended {
                self.phase = Phase::Ended;
            }
            Unit::Event(Event::Frame {
                seq: head.seq,
                records,
            })
        };
        self.prev_mac
            .copy_from_slice(&self.buf[mac_at..mac_at + MAC_LEN]);
        self.next_seq = self.next_seq.checked_add(1).ok_or_else(|| {
            stream_error(self.unit_start + 4, "frame sequence number", "exhausted")
        })?;
        Ok(unit)
    }
}

impl Unit {
    fn into_event(self) -> Option<Event> {
        match self {
            Unit::Event(e) => Some(e),
            Unit::Frame(_) => None,
        }
    }
}

/// Decompresses (with `decompressor`, made on first use) and decodes the authenticated
/// payload of frame `seq` at stream offset `payload_at`: its records, and whether the
/// last is the End record.
fn decode_payload(
    (seq, codec, raw_len): (u64, u8, usize),
    payload: &[u8],
    payload_at: u64,
    decompressor: &mut Option<zstd::bulk::Decompressor<'static>>,
) -> Result<(Vec<Record>, bool), StreamError> {
    let raw: Cow<'_, [u8]> = if codec == CODEC_NONE {
        Cow::Borrowed(payload)
    } else {
        if decompressor.is_none() {
            let d = zstd::bulk::Decompressor::new().map_err(|e| {
                stream_error(payload_at, "frame payload", format!("zstd setup: {e}"))
            })?;
            *decompressor = Some(d);
        }
        let Some(d) = decompressor.as_mut() else {
            return Err(stream_error(payload_at, "frame payload", "no zstd context"));
        };
        // The capacity bounds the output: zstd refuses to write more than raw_len.
        let out = d.decompress(payload, raw_len).map_err(|e| {
            stream_error(
                payload_at,
                "frame payload",
                format!("zstd cannot decompress it into the declared {raw_len} bytes: {e}"),
            )
        })?;
        if out.len() != raw_len {
            return Err(stream_error(
                payload_at,
                "frame payload",
                format!(
                    "decompresses to {} bytes, the frame declares {raw_len}",
                    out.len()
                ),
            ));
        }
        Cow::Owned(out)
    };
    let unit = format!("frame {seq} payload");
    let mut r = Reader::new(&raw, 0, &unit);
    let mut records = Vec::new();
    let mut ended = false;
    while !r.is_empty() {
        if ended {
            return Err(r
                .error(
                    "record after the End record",
                    "the End record must be the last record of the stream",
                )
                .into());
        }
        let record = Record::decode(&mut r)?;
        ended = matches!(record, Record::End(_));
        records.push(record);
    }
    Ok((records, ended))
}
