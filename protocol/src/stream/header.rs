//! The stream header body: who made the stream, with which key, nonce and sampling
//! configuration. Everything the verifier needs to re-derive the schedule.

use super::{MAX_DEVICES, MAX_NAME_LEN};
use crate::codec::{DecodeError, Reader, Writer};
use crate::config::SamplingConfig;
use crate::schedule::ScheduleVersion;

/// The stream header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamHeader {
    /// Id of the key the stream is MACed with ([`crate::keys::Key::id`]).
    pub key_id: u64,
    /// Session nonce: part of every schedule hash, fresh per stream.
    pub nonce: [u8; 16],
    /// The sampling configuration the prover follows.
    pub config: SamplingConfig,
    /// Random per process (and per fork child); distinguishes streams of one host.
    pub stream_id: u64,
    /// Segment number: 0 for the first stream of a prover, incremented each time the
    /// prover starts a new stream after losing its connection to the verifier.
    pub segment: u32,
    /// Index of the first call in this stream's ledger: 0 for segment 0; for a later
    /// segment, the first call not carried by the previous one.
    pub first_index: u64,
    /// Process id of the prover.
    pub pid: u32,
    /// Host name (at most [`MAX_NAME_LEN`] bytes).
    pub host: String,
    /// When the stream started, nanoseconds since the Unix epoch.
    pub started_unix_ns: u64,
    /// Device names or UUIDs, at most [`MAX_DEVICES`], each at most [`MAX_NAME_LEN`] bytes.
    pub devices: Vec<String>,
    /// What produced the stream, e.g. "libmmaudit 0.1.0" (at most [`MAX_NAME_LEN`] bytes).
    pub producer: String,
    /// The sampling schedule the stream follows: written as the header's version field
    /// (1 or 2), not in the body.
    pub schedule: ScheduleVersion,
}

/// `s` cut to at most `cap` bytes at a character boundary.
fn cut(s: &str, cap: usize) -> &str {
    let mut end = s.len().min(cap);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl StreamHeader {
    /// Appends the header body. Names longer than [`MAX_NAME_LEN`] bytes are cut at a
    /// character boundary and devices beyond [`MAX_DEVICES`] are left out, so that the
    /// output always decodes.
    pub fn encode_body(&self, w: &mut Writer) {
        w.u64(self.key_id);
        w.raw(&self.nonce);
        self.config.encode(w);
        w.u64(self.stream_id);
        w.u32(self.segment);
        w.u64(self.first_index);
        w.u32(self.pid);
        w.u64(self.started_unix_ns);
        w.string(cut(&self.host, MAX_NAME_LEN));
        let devices = &self.devices[..self.devices.len().min(MAX_DEVICES)];
        w.u16(devices.len() as u16);
        for d in devices {
            w.string(cut(d, MAX_NAME_LEN));
        }
        w.string(cut(&self.producer, MAX_NAME_LEN));
    }

    /// Decodes a header body, which must be consumed exactly; the sampling configuration
    /// must pass [`SamplingConfig::validate`].
    pub fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let key_id = r.u64("header: key id")?;
        let nonce = r.array("header: nonce")?;
        let config = SamplingConfig::decode(r, "header: sampling config")?;
        let stream_id = r.u64("header: stream id")?;
        let segment = r.u32("header: segment")?;
        let first_index = r.u64("header: first call index")?;
        let pid = r.u32("header: pid")?;
        let started_unix_ns = r.u64("header: start time")?;
        let host = r.string_capped(MAX_NAME_LEN, "header: host")?;
        let count_at = r.offset();
        let count = r.u16("header: device count")? as usize;
        if count > MAX_DEVICES {
            return Err(r.error_at(
                count_at,
                "header: device count",
                format!("{count} devices, at most {MAX_DEVICES} are allowed"),
            ));
        }
        let mut devices = Vec::with_capacity(count);
        for _ in 0..count {
            devices.push(r.string_capped(MAX_NAME_LEN, "header: device name")?);
        }
        let producer = r.string_capped(MAX_NAME_LEN, "header: producer")?;
        r.finish("header body")?;
        Ok(StreamHeader {
            key_id,
            nonce,
            config,
            stream_id,
            segment,
            first_index,
            pid,
            host,
            started_unix_ns,
            devices,
            producer,
            // The version field precedes the body: the reader sets it.
            schedule: ScheduleVersion::V1,
        })
    }
}
