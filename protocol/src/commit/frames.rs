//! Challenge frames: what a verifier in commit mode sends back on a live connection
//! after its hello (docs/COMMIT.md, "Wire format").
//!
//! ```text
//! frame     = len:u32 seq:u64 through:u64 count:u32 challenge* mac:[32]
//! challenge = index:u64 rows:u32 cols:u32 batches:u32 (rows + cols + batches) x u64
//! mac       = keyed BLAKE3 (MAC key) of "mmaudit-chal-v1" || previous MAC || len .. last challenge
//! ```
//!
//! `len` counts the bytes after it up to the MAC (at least 20). The previous MAC of
//! frame 0 is the MAC of the hello this connection received, so a frame can be neither
//! moved to another session nor reordered, dropped or replayed within one. `through`
//! says that every committed call up to that index has been judged: the calls among
//! them not listed in this or an earlier frame are not challenged, and the prover may
//! release them.
//!
//! The reader ([`ChallengeReader`]) runs in the prover on bytes from the network: it
//! never panics, caps a frame at [`MAX_CHALLENGE_FRAME`] bytes, checks the sequence and
//! the MAC before it decodes anything, and requires each plan's indices to be strictly
//! ascending.

use crate::codec::{DecodeError, Reader, Writer};
use crate::keys::Key;
use crate::schedule::Plan;
use crate::stream::MAC_LEN;

/// Domain string of the challenge frames' MAC.
pub const CHALLENGE_MAC_DOMAIN: &[u8] = b"mmaudit-chal-v1";
/// Largest `len` of a challenge frame: 16 MiB.
pub const MAX_CHALLENGE_FRAME: u32 = 16 << 20;
/// Bytes of a frame's fixed part after `len`: seq, through, count.
const FIXED: usize = 8 + 8 + 4;

/// One challenged call and its plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// the call
    pub index: u64,
    /// what to open
    pub plan: Plan,
}

/// One decoded challenge frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChallengeFrame {
    /// 0, 1, 2, ... on the connection
    pub seq: u64,
    /// every committed call up to this index is judged
    pub through: u64,
    /// the challenged calls, ascending
    pub challenges: Vec<Challenge>,
}

/// Why challenge bytes were refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChallengeError {
    /// A frame longer than the cap, or shorter than its fixed part.
    #[error("challenge frame {seq}: length {len} outside 20 ..= {MAX_CHALLENGE_FRAME}")]
    Length {
        /// the frame's sequence number (expected)
        seq: u64,
        /// its declared length
        len: u32,
    },
    /// Out of sequence.
    #[error("challenge frame: sequence {got}, expected {want}")]
    Sequence {
        /// what the frame says
        got: u64,
        /// what was expected
        want: u64,
    },
    /// The MAC does not verify: not from this session's verifier, or altered.
    #[error("challenge frame {seq}: MAC mismatch (not from this session's verifier, or altered)")]
    BadMac {
        /// the frame's sequence number
        seq: u64,
    },
    /// An authenticated frame that does not decode.
    #[error("challenge frame: {0}")]
    Decode(#[from] DecodeError),
}

fn mac(key: &[u8; 32], prev: &[u8; MAC_LEN], bytes: &[u8]) -> [u8; MAC_LEN] {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(CHALLENGE_MAC_DOMAIN);
    h.update(prev);
    h.update(bytes);
    *h.finalize().as_bytes()
}

/// The verifier's side: frames of one connection.
pub struct ChallengeWriter {
    key: [u8; 32],
    prev: [u8; MAC_LEN],
    seq: u64,
}

impl ChallengeWriter {
    /// The writer of a connection whose hello carried `hello_mac` (its last 32 bytes).
    pub fn new(key: &Key, hello_mac: [u8; MAC_LEN]) -> Self {
        ChallengeWriter {
            key: key.mac_key(),
            prev: hello_mac,
            seq: 0,
        }
    }

    /// The next frame: `challenges` (ascending indices, each at most `through`).
    pub fn frame(&mut self, through: u64, challenges: &[Challenge]) -> Vec<u8> {
        let mut w = Writer::new();
        w.u32(0);
        w.u64(self.seq);
        w.u64(through);
        w.u32(u32::try_from(challenges.len()).unwrap_or(u32::MAX));
        for c in challenges {
            w.u64(c.index);
            let p = &c.plan;
            for list in [&p.rows, &p.cols, &p.batches] {
                w.u32(u32::try_from(list.len()).unwrap_or(u32::MAX));
            }
            for list in [&p.rows, &p.cols, &p.batches] {
                for &i in list.iter() {
                    w.u64(i);
                }
            }
        }
        let len = u32::try_from(w.buf.len() - 4).unwrap_or(u32::MAX);
        w.buf[..4].copy_from_slice(&len.to_le_bytes());
        let m = mac(&self.key, &self.prev, &w.buf);
        w.raw(&m);
        self.prev = m;
        self.seq += 1;
        w.buf
    }
}

/// The prover's side: an incremental reader of one connection's challenge frames.
pub struct ChallengeReader {
    key: [u8; 32],
    prev: [u8; MAC_LEN],
    seq: u64,
    buf: Vec<u8>,
    failed: Option<ChallengeError>,
}

impl ChallengeReader {
    /// The reader of a connection whose hello carried `hello_mac`.
    pub fn new(key: &Key, hello_mac: [u8; MAC_LEN]) -> Self {
        ChallengeReader {
            key: key.mac_key(),
            prev: hello_mac,
            seq: 0,
            buf: Vec::new(),
            failed: None,
        }
    }

    /// Feeds bytes; returns the frames they complete. After an error every call
    /// returns it again.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<ChallengeFrame>, ChallengeError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        self.buf.extend_from_slice(bytes);
        let mut frames = Vec::new();
        loop {
            match self.next_frame() {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => return Ok(frames),
                Err(e) => {
                    self.failed = Some(e.clone());
                    return Err(e);
                }
            }
        }
    }

    /// Bytes held of an incomplete frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    fn next_frame(&mut self) -> Result<Option<ChallengeFrame>, ChallengeError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_le_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
        if !(FIXED as u32..=MAX_CHALLENGE_FRAME).contains(&len) {
            return Err(ChallengeError::Length { seq: self.seq, len });
        }
        if self.buf.len() >= 12 {
            let got = u64::from_le_bytes(self.buf[4..12].try_into().expect("8 bytes"));
            if got != self.seq {
                return Err(ChallengeError::Sequence {
                    got,
                    want: self.seq,
                });
            }
        }
        let total = 4 + len as usize + MAC_LEN;
        if self.buf.len() < total {
            return Ok(None);
        }
        let body_end = 4 + len as usize;
        let want = mac(&self.key, &self.prev, &self.buf[..body_end]);
        if want[..] != self.buf[body_end..total] {
            return Err(ChallengeError::BadMac { seq: self.seq });
        }
        let frame = decode(&self.buf[4..body_end])?;
        self.prev = want;
        self.seq += 1;
        self.buf.drain(..total);
        Ok(Some(frame))
    }
}

fn decode(body: &[u8]) -> Result<ChallengeFrame, DecodeError> {
    let mut r = Reader::new(body, 4, "challenge frame");
    let seq = r.u64("challenge frame: seq")?;
    let through = r.u64("challenge frame: through")?;
    let count = r.u32("challenge frame: count")? as usize;
    let mut challenges = Vec::with_capacity(count.min(r.remaining() / 20));
    let mut last: Option<u64> = None;
    for _ in 0..count {
        let at = r.offset();
        let index = r.u64("challenge: call index")?;
        if last.is_some_and(|l| index <= l) || index > through {
            return Err(r.error_at(
                at,
                "challenge: call index",
                format!("call {index} is out of order or beyond through = {through}"),
            ));
        }
        last = Some(index);
        let mut counts = [0usize; 3];
        for c in &mut counts {
            *c = r.u32("challenge: plan count")? as usize;
        }
        let total = counts.iter().sum::<usize>();
        if total.checked_mul(8).is_none_or(|b| b > r.remaining()) {
            return Err(r.error_at(
                at,
                "challenge: plan count",
                format!(
                    "{total} plan indices do not fit in the {} bytes left",
                    r.remaining()
                ),
            ));
        }
        let mut lists = counts.map(Vec::with_capacity);
        for list in &mut lists {
            for _ in 0..list.capacity() {
                let at = r.offset();
                let i = r.u64("challenge: plan index")?;
                if list.last().is_some_and(|&l| i <= l) {
                    return Err(r.error_at(
                        at,
                        "challenge: plan index",
                        "indices must be strictly ascending",
                    ));
                }
                list.push(i);
            }
        }
        let [rows, cols, batches] = lists;
        challenges.push(Challenge {
            index,
            plan: Plan {
                rows,
                cols,
                batches,
            },
        });
    }
    r.finish("challenge frame")?;
    Ok(ChallengeFrame {
        seq,
        through,
        challenges,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(rows: &[u64], cols: &[u64]) -> Plan {
        Plan {
            rows: rows.to_vec(),
            cols: cols.to_vec(),
            batches: vec![0],
        }
    }

    #[test]
    fn frames_round_trip_in_any_chunking_and_refuse_every_change() {
        let key = Key::from_bytes([3; 32]);
        let hello_mac = [9; MAC_LEN];
        let mut w = ChallengeWriter::new(&key, hello_mac);
        let frames = [
            w.frame(4, &[]),
            w.frame(
                9,
                &[
                    Challenge {
                        index: 5,
                        plan: plan(&[1, 7], &[0]),
                    },
                    Challenge {
                        index: 9,
                        plan: plan(&[2], &[3, 4]),
                    },
                ],
            ),
            w.frame(12, &[]),
        ];
        let all: Vec<u8> = frames.concat();
        for chunk in [1, 3, 17, all.len()] {
            let mut r = ChallengeReader::new(&key, hello_mac);
            let mut got = Vec::new();
            for c in all.chunks(chunk) {
                got.extend(r.push(c).unwrap());
            }
            assert_eq!(got.len(), 3);
            assert_eq!(got[1].through, 9);
            assert_eq!(got[1].challenges[1].plan.cols, vec![3, 4]);
            assert_eq!(r.buffered(), 0);
        }
        // Every single changed byte is refused (length, sequence, MAC or decode).
        for i in 0..all.len() {
            let mut bad = all.clone();
            bad[i] ^= 0x01;
            let mut r = ChallengeReader::new(&key, hello_mac);
            let out = r.push(&bad);
            let complete = out.as_ref().map_or(0, |f| f.len());
            assert!(
                out.is_err() || complete < 3,
                "byte {i} changed, still accepted"
            );
        }
        // Another session's hello MAC, a dropped or repeated frame: refused.
        let mut r = ChallengeReader::new(&key, [8; MAC_LEN]);
        assert_eq!(r.push(&frames[0]), Err(ChallengeError::BadMac { seq: 0 }));
        let mut r = ChallengeReader::new(&key, hello_mac);
        assert!(matches!(
            r.push(&frames[1]),
            Err(ChallengeError::Sequence { got: 1, want: 0 })
        ));
        let mut r = ChallengeReader::new(&key, hello_mac);
        r.push(&frames[0]).unwrap();
        assert!(r.push(&frames[0]).is_err());
        assert!(r.push(&frames[1]).is_err(), "a failed reader stays failed");
    }

    /// The fuzzing harnesses' properties hold on the seed frames, on every prefix and on
    /// every single-bit change of them (as bytes received, and as a frame body behind a
    /// valid MAC), in one piece and in pieces of 5 bytes.
    #[test]
    fn fuzzing_harnesses_hold_on_every_prefix_and_bit_flip() {
        use crate::fuzzing;
        let frames = fuzzing::seed_challenge_frames();
        let all = frames.concat();
        let whole = fuzzing::challenges(&[&[0u8][..], &all].concat());
        assert_eq!(whole.frames.len(), frames.len());
        assert_eq!(whole.result, Ok(0));
        let both = |bytes: &[u8]| {
            fuzzing::challenges(&[&[0u8][..], bytes].concat());
            fuzzing::challenges(&[&[1u8, 5][..], bytes].concat());
        };
        for end in 0..all.len() {
            both(&all[..end]);
        }
        for i in 0..all.len() * 8 {
            let mut bad = all.clone();
            bad[i / 8] ^= 1 << (i % 8);
            both(&bad);
        }
        for f in &frames {
            let body = &f[4..f.len() - MAC_LEN];
            fuzzing::challenge_body(body);
            for end in 0..body.len() {
                fuzzing::challenge_body(&body[..end]);
            }
            for i in 0..body.len() * 8 {
                let mut bad = body.to_vec();
                bad[i / 8] ^= 1 << (i % 8);
                fuzzing::challenge_body(&bad);
            }
        }
    }

    #[test]
    fn lengths_and_counts_are_capped_before_allocating() {
        let key = Key::from_bytes([3; 32]);
        let mut r = ChallengeReader::new(&key, [0; MAC_LEN]);
        assert!(matches!(
            r.push(&(MAX_CHALLENGE_FRAME + 1).to_le_bytes()),
            Err(ChallengeError::Length { .. })
        ));
        // A correctly MACed frame claiming 2^32-1 plan indices.
        let mut w = Writer::new();
        w.u32(0);
        w.u64(0);
        w.u64(5);
        w.u32(1);
        w.u64(5);
        w.u32(u32::MAX);
        w.u32(0);
        w.u32(0);
        let len = (w.buf.len() - 4) as u32;
        w.buf[..4].copy_from_slice(&len.to_le_bytes());
        let m = mac(&key.mac_key(), &[0; MAC_LEN], &w.buf);
        w.raw(&m);
        let e = ChallengeReader::new(&key, [0; MAC_LEN])
            .push(&w.buf)
            .unwrap_err();
        assert!(e.to_string().contains("do not fit"), "{e}");
    }
}
