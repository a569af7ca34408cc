//! Byte-level encoding: a [`Writer`] that appends little-endian fields, and a [`Reader`]
//! cursor over untrusted bytes.
//!
//! The reader never panics and never allocates on the word of its input: every length
//! it reads is checked against what is actually left before anything is sliced or
//! allocated, and every error names what was being read and at which offset.

use std::fmt;

/// An error decoding untrusted bytes: what was being read, where, and what was wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError {
    /// Absolute offset (within the unit being decoded, see [`DecodeError::unit`]) at
    /// which the offending field starts.
    pub offset: u64,
    /// The field being read, e.g. "ledger record: m".
    pub what: &'static str,
    /// What was wrong with it.
    pub problem: String,
    /// The unit the offset counts in: "stream" for raw stream bytes, or the frame
    /// payload a record was read from, e.g. "frame 3 payload".
    pub unit: String,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at {} offset {}: {}",
            self.what, self.unit, self.offset, self.problem
        )
    }
}

impl std::error::Error for DecodeError {}

/// A cursor over untrusted bytes.
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    base: u64,
    unit: &'a str,
}

impl<'a> Reader<'a> {
    /// A reader whose offsets count from `base` within `unit` (for error messages).
    pub fn new(bytes: &'a [u8], base: u64, unit: &'a str) -> Self {
        Reader {
            bytes,
            pos: 0,
            base,
            unit,
        }
    }

    /// The offset of the next byte, as reported in errors.
    #[inline]
    pub fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    /// Bytes not yet read.
    #[inline]
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// True when every byte has been read.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// An error at the current offset.
    pub fn error(&self, what: &'static str, problem: impl Into<String>) -> DecodeError {
        self.error_at(self.offset(), what, problem)
    }

    /// An error at a given offset.
    pub fn error_at(
        &self,
        offset: u64,
        what: &'static str,
        problem: impl Into<String>,
    ) -> DecodeError {
        DecodeError {
            offset,
            what,
            problem: problem.into(),
            unit: self.unit.to_string(),
        }
    }

    /// The next `len` bytes.
    #[inline]
    pub fn take(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if len > self.remaining() {
            return Err(self.error(
                what,
                format!("needs {len} bytes, only {} left", self.remaining()),
            ));
        }
        let out = &self.bytes[self.pos..self.pos + len];
        self.pos += len;
        Ok(out)
    }

    /// A fixed-size array.
    #[inline]
    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    /// One byte.
    #[inline]
    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }

    /// One byte naming a value of a `#[repr(u8)]` enum; an unknown value is an error at
    /// that byte's offset.
    #[inline]
    pub fn enum_u8<T: TryFrom<u8, Error = u8>>(
        &mut self,
        what: &'static str,
    ) -> Result<T, DecodeError> {
        let at = self.offset();
        let v = self.u8(what)?;
        T::try_from(v).map_err(|v| self.error_at(at, what, format!("unknown value {v}")))
    }

    /// Little-endian u16.
    #[inline]
    pub fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    /// Little-endian u32.
    #[inline]
    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    /// Little-endian u64.
    #[inline]
    pub fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Little-endian i64.
    #[inline]
    pub fn i64(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.array(what)?))
    }

    /// Little-endian IEEE binary64.
    #[inline]
    pub fn f64(&mut self, what: &'static str) -> Result<f64, DecodeError> {
        Ok(f64::from_le_bytes(self.array(what)?))
    }

    /// A u32-length-prefixed byte string of at most `cap` bytes.
    pub fn bytes(&mut self, cap: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let at = self.offset();
        let len = self.u32(what)? as usize;
        if len > cap {
            return Err(self.error_at(at, what, format!("length {len} exceeds the cap of {cap}")));
        }
        self.take(len, what)
    }

    /// A u16-length-prefixed UTF-8 string.
    pub fn string(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let at = self.offset();
        let len = self.u16(what)? as usize;
        let raw = self.take(len, what)?;
        String::from_utf8(raw.to_vec()).map_err(|_| self.error_at(at, what, "not valid UTF-8"))
    }

    /// Little-endian IEEE binary32, bit pattern preserved.
    #[inline]
    pub fn f32(&mut self, what: &'static str) -> Result<f32, DecodeError> {
        Ok(f32::from_le_bytes(self.array(what)?))
    }

    /// A reader over the next `len` bytes, with offsets continuing this reader's and the
    /// same unit: a length-delimited structure decoded by it can never read past its end.
    pub fn sub(&mut self, len: usize, what: &'static str) -> Result<Reader<'a>, DecodeError> {
        let base = self.offset();
        let bytes = self.take(len, what)?;
        Ok(Reader {
            bytes,
            pos: 0,
            base,
            unit: self.unit,
        })
    }

    /// A u16-length-prefixed UTF-8 string of at most `cap` bytes; the length is checked
    /// against `cap` before anything is read or allocated.
    pub fn string_capped(&mut self, cap: usize, what: &'static str) -> Result<String, DecodeError> {
        let at = self.offset();
        let len = self.u16(what)? as usize;
        if len > cap {
            return Err(self.error_at(at, what, format!("length {len} exceeds the cap of {cap}")));
        }
        let raw = self.take(len, what)?;
        String::from_utf8(raw.to_vec()).map_err(|_| self.error_at(at, what, "not valid UTF-8"))
    }

    /// Fails unless every byte has been consumed.
    pub fn finish(&self, what: &'static str) -> Result<(), DecodeError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(self.error(
                what,
                format!("{} unexpected trailing bytes", self.remaining()),
            ))
        }
    }
}

/// Appends little-endian fields to a byte vector.
#[derive(Default)]
pub struct Writer {
    /// The bytes written so far.
    pub buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Writer::default()
    }

    /// An empty writer with room for `bytes` (no reallocation below that).
    pub fn with_capacity(bytes: usize) -> Self {
        Writer {
            buf: Vec::with_capacity(bytes),
        }
    }

    /// One byte.
    #[inline]
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    /// Little-endian u16.
    #[inline]
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// Little-endian u32.
    #[inline]
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// Little-endian u64.
    #[inline]
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// Little-endian i64.
    #[inline]
    pub fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// Little-endian IEEE binary32, bit pattern preserved.
    #[inline]
    pub fn f32(&mut self, v: f32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// Little-endian IEEE binary64.
    #[inline]
    pub fn f64(&mut self, v: f64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// Raw bytes, no length.
    #[inline]
    pub fn raw(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }

    /// A u32-length-prefixed byte string.
    ///
    /// Callers keep byte strings far below 4 GiB (frames are capped much lower); a
    /// longer one is truncated in its length field and would fail to decode, never
    /// silently succeed.
    pub fn bytes(&mut self, v: &[u8]) {
        self.u32(u32::try_from(v.len()).unwrap_or(u32::MAX));
        self.raw(v);
    }

    /// A u16-length-prefixed UTF-8 string, cut at a character boundary to fit.
    pub fn string(&mut self, v: &str) {
        let mut end = v.len().min(u16::MAX as usize);
        while !v.is_char_boundary(end) {
            end -= 1;
        }
        self.u16(end as u16);
        self.raw(&v.as_bytes()[..end]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_reports_offset_and_field() {
        let mut r = Reader::new(&[1, 0, 0], 100, "stream");
        assert_eq!(r.u16("x").unwrap(), 1);
        let e = r.u32("ledger record: m").unwrap_err();
        assert_eq!(e.offset, 102);
        assert_eq!(e.what, "ledger record: m");
        assert!(e.to_string().contains("stream offset 102"));
    }

    #[test]
    fn length_cap_checked_before_allocation() {
        let mut w = Writer::new();
        w.u32(u32::MAX);
        let mut r = Reader::new(&w.buf, 0, "t");
        let e = r.bytes(1024, "blob").unwrap_err();
        assert!(e.problem.contains("exceeds the cap"));
    }

    #[test]
    fn string_is_cut_at_char_boundary() {
        let s = "é".repeat(40_000);
        let mut w = Writer::new();
        w.string(&s);
        let mut r = Reader::new(&w.buf, 0, "t");
        let back = r.string("s").unwrap();
        assert!(back.len() <= u16::MAX as usize && s.starts_with(&back));
    }
}
