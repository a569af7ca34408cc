//! Records: the units of meaning carried inside authenticated frames.
//!
//! A frame's payload is a concatenation of records, each `tag u8, body_len u32, body`.
//! The prover writes a ledger record for every GEMM call, a sample record for every
//! sampled call whose data it gathered, a gap record for sampled calls whose data it
//! had to drop, notices, and one end record with its totals. Specified byte for byte in
//! docs/PROTOCOL.md ("Records").
//!
//! Decoding never panics and never allocates on the word of its input: every length and
//! count is checked against the bytes actually left before anything is allocated. It
//! checks structure only; whether a sample's sizes fit its call's plan is the verifier's
//! question, answered with [`Sample::check_shape`].

use crate::call::{flags, wire_enum, DType, GemmCall, Scalar};
use crate::codec::{DecodeError, Reader, Writer};
use crate::schedule::Plan;

mod opening;
pub use opening::{Commitment, CommittedVectors, OpenedSide, OpenedVectors, Opening, SmallData};

/// Record type tags (the first byte of every record).
pub mod tag {
    /// [`super::Record::Ledger`]
    pub const LEDGER: u8 = 1;
    /// [`super::Record::Sample`]
    pub const SAMPLE: u8 = 2;
    /// [`super::Record::Gap`]
    pub const GAP: u8 = 3;
    /// [`super::Record::Notice`]
    pub const NOTICE: u8 = 4;
    /// [`super::Record::End`]
    pub const END: u8 = 5;
    /// [`super::Record::Commitment`] (commit mode)
    pub const COMMITMENT: u8 = 6;
    /// [`super::Record::Opening`] (commit mode)
    pub const OPENING: u8 = 7;
}

/// Bits of the sample record's presence byte: which device-side scalars follow.
pub mod present {
    /// alpha (f64) follows
    pub const ALPHA: u8 = 1 << 0;
    /// beta (f64) follows
    pub const BETA: u8 = 1 << 1;
    /// scale_a (f32) follows
    pub const SCALE_A: u8 = 1 << 2;
    /// scale_b (f32) follows
    pub const SCALE_B: u8 = 1 << 3;
    /// scale_c (f32) follows
    pub const SCALE_C: u8 = 1 << 4;
    /// scale_d (f32) follows
    pub const SCALE_D: u8 = 1 << 5;
    /// after the bias: the per-row and per-column scales (two u32-length-prefixed byte
    /// strings of f32), for calls flagged SCALE_A_ROWS or SCALE_B_COLS
    pub const VECTOR_SCALES: u8 = 1 << 6;
    /// every bit defined in this protocol version
    pub const ALL: u8 = ALPHA | BETA | SCALE_A | SCALE_B | SCALE_C | SCALE_D | VECTOR_SCALES;
}

/// Bytes before a record's body: the tag and the body length.
pub const RECORD_HEAD_LEN: usize = 5;

/// One record of a frame.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    /// A GEMM call, written for every call whether sampled or not.
    Ledger(GemmCall),
    /// The gathered data of one sampled call.
    Sample(Sample),
    /// Sampled calls whose data was dropped, and why.
    Gap(Gap),
    /// A message from the prover about its own state.
    Notice(Notice),
    /// The last record of a stream, with the prover's totals.
    End(End),
    /// Commit mode: a call's commitment, before any challenge for it exists.
    Commitment(Commitment),
    /// Commit mode: the opening of a challenged call.
    Opening(Box<Opening>),
}

/// The data gathered for one sampled call, as chosen by its [`Plan`].
///
/// All element data is raw little-endian in the stated dtype, exactly as in device memory.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The call index this sample belongs to.
    pub index: u64,
    /// Some iff the call's alpha is [`Scalar::Device`] (value converted exactly from the
    /// scale type).
    pub alpha: Option<f64>,
    /// Some iff the call's beta is [`Scalar::Device`].
    pub beta: Option<f64>,
    /// Some iff [`flags::SCALE_A`] is set.
    pub scale_a: Option<f32>,
    /// Some iff [`flags::SCALE_B`] is set.
    pub scale_b: Option<f32>,
    /// Some iff [`flags::SCALE_C`] is set.
    pub scale_c: Option<f32>,
    /// Some iff [`flags::SCALE_D`] is set.
    pub scale_d: Option<f32>,
    /// `op(A)[r, :]` for b in plan.batches, r in plan.rows: batches*rows*k elements of
    /// `call.a.dtype`, order `[batch][row][k]`; or a reference to a verifier-held tensor.
    pub a_rows: OperandData,
    /// `op(B)[:, s]` for b in plan.batches, s in plan.cols: batches*cols*k elements of
    /// `call.b.dtype`, order `[batch][col][k]`; or a reference to a verifier-held tensor.
    pub b_cols: OperandData,
    /// `C[r, s]` before the call: batches*rows*cols elements of `call.c.dtype`, order
    /// `[batch][row][col]`; empty iff `!call.reads_c()`.
    pub c_in: Vec<u8>,
    /// `D[r, s]` after the call: batches*rows*cols elements of `call.d.dtype`, same order.
    pub d_out: Vec<u8>,
    /// `bias[r]` for r in plan.rows, elements of `call.bias_type`; with
    /// [`flags::BIAS_PER_BATCH`] one such vector per sampled batch entry, `[batch][row]`;
    /// empty iff the call has no [`flags::BIAS`].
    pub bias: Vec<u8>,
    /// The A scales (f32) of the sampled rows, in plan order, iff the call has
    /// [`flags::SCALE_A_ROWS`]; else empty.
    pub scale_rows: Vec<u8>,
    /// The B scales (f32) of the sampled columns, in plan order, iff the call has
    /// [`flags::SCALE_B_COLS`]; else empty.
    pub scale_cols: Vec<u8>,
}

/// How an operand's sampled slices travel. Wire tag u8: 0 = inline, 1 = a reference to
/// a tensor of the verifier's hello; an unknown tag is a decode error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OperandData {
    /// The elements themselves.
    Inline(Vec<u8>),
    /// The sampled vectors are stored rows of a tensor the verifier holds, named by its
    /// id in the verifier's hello ([`crate::handshake`]); the verifier uses its own copy.
    ///
    /// For the A side, the vector of plan row r in the i-th sampled batch entry is row r
    /// of matrix `matrices[i]` of the tensor; for the B side, the vector of plan column
    /// s is row s. The tensor's rows must have exactly k elements of the call's type for
    /// that operand. A wrong claim fails verification: the verifier recomputes with its
    /// own copy.
    Reference {
        /// the tensor's id in the hello table
        tensor: u32,
        /// the matrix of the tensor used by each sampled batch entry, in plan order (0
        /// for a 2-D tensor); exactly one per sampled batch entry
        matrices: Vec<u32>,
        /// the first element (raw bytes, the operand's dtype) of each referenced row, in
        /// `[batch][row]` order: evidence that the prover saw those rows
        evidence: Vec<u8>,
    },
}

/// Wire tag of [`OperandData::Inline`].
pub const OPERAND_INLINE: u8 = 0;
/// Wire tag of [`OperandData::Reference`].
pub const OPERAND_REFERENCE: u8 = 1;

impl OperandData {
    /// The inline bytes, if the data is inline.
    pub fn inline(&self) -> Option<&[u8]> {
        match self {
            OperandData::Inline(b) => Some(b),
            OperandData::Reference { .. } => None,
        }
    }

    /// True for a reference to a verifier-held tensor.
    pub fn is_reference(&self) -> bool {
        matches!(self, OperandData::Reference { .. })
    }

    /// Bytes of the encoding: kind, then its fields.
    fn encoded_len(&self) -> usize {
        match self {
            OperandData::Inline(b) => 1 + 4 + b.len(),
            OperandData::Reference {
                matrices, evidence, ..
            } => 1 + 4 + 4 + 4 * matrices.len() + 4 + evidence.len(),
        }
    }
}

/// Sampled calls whose data was dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gap {
    /// Call indices, ascending and distinct, at least one.
    pub indices: Vec<u64>,
    /// Why they were dropped.
    pub reason: GapReason,
    /// Free text for humans (at most 65535 bytes of UTF-8 on the wire).
    pub detail: String,
}

/// Why samples were dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum GapReason {
    /// The pinned ring had no free slot.
    RingFull = 1,
    /// The queue to the background thread was full.
    QueueFull = 2,
    /// The sink could not keep up.
    SinkBackpressure = 3,
    /// The gather on the device failed.
    GatherFailed = 4,
    /// An internal error in the prover.
    Internal = 5,
    /// Commit mode: a challenged call whose data the prover no longer held.
    NotRetained = 6,
    /// Commit mode: a call the prover could not commit (counted against coverage, not
    /// as a dropped sample).
    NotCommitted = 7,
}

/// A message from the prover about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// What kind of message.
    pub kind: NoticeKind,
    /// The text (at most 65535 bytes of UTF-8 on the wire).
    pub message: String,
}

/// Kinds of [`Notice`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum NoticeKind {
    /// Informational.
    Info = 0,
    /// Something the operator should know.
    Warning = 1,
    /// From now on calls are forwarded unaudited (the verifier fails such a stream).
    AuditDisabled = 2,
}

/// The prover's totals, which the verifier cross-checks with what it received.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct End {
    /// Ledger records written.
    pub calls: u64,
    /// Sample records written.
    pub samples: u64,
    /// Call indices named by gap records.
    pub gap_calls: u64,
}

wire_enum!(GapReason {
    RingFull,
    QueueFull,
    SinkBackpressure,
    GatherFailed,
    Internal,
    NotRetained,
    NotCommitted,
});

impl GapReason {
    /// Short lower-case description, as used in reports.
    pub fn name(self) -> &'static str {
        match self {
            GapReason::RingFull => "pinned ring full",
            GapReason::QueueFull => "queue full",
            GapReason::SinkBackpressure => "sink backpressure",
            GapReason::GatherFailed => "gather failed",
            GapReason::Internal => "internal error",
            GapReason::NotRetained => "not retained",
            GapReason::NotCommitted => "not committed",
        }
    }
}

wire_enum!(NoticeKind {
    Info,
    Warning,
    AuditDisabled
});

impl Record {
    /// The record's type tag.
    pub fn tag(&self) -> u8 {
        match self {
            Record::Ledger(_) => tag::LEDGER,
            Record::Sample(_) => tag::SAMPLE,
            Record::Gap(_) => tag::GAP,
            Record::Notice(_) => tag::NOTICE,
            Record::End(_) => tag::END,
            Record::Commitment(_) => tag::COMMITMENT,
            Record::Opening(_) => tag::OPENING,
        }
    }

    /// Appends the record: tag, body length, body.
    ///
    /// A body longer than `u32::MAX` bytes cannot be represented; its length field then
    /// saturates and the record fails to decode (never decodes as something else). Frames
    /// are capped far below that, see [`crate::stream::StreamWriter::frame`].
    pub fn encode(&self, w: &mut Writer) {
        w.u8(self.tag());
        let len_at = w.buf.len();
        w.u32(0);
        match self {
            Record::Ledger(call) => call.encode(w),
            Record::Sample(s) => s.encode_body(w),
            Record::Gap(g) => g.encode_body(w),
            Record::Notice(n) => {
                w.u8(n.kind as u8);
                w.string(&n.message);
            }
            Record::End(e) => {
                w.u64(e.calls);
                w.u64(e.samples);
                w.u64(e.gap_calls);
            }
            Record::Commitment(c) => c.encode_body(w),
            Record::Opening(o) => o.encode_body(w),
        }
        let body_len = w.buf.len() - len_at - 4;
        let field = u32::try_from(body_len).unwrap_or(u32::MAX).to_le_bytes();
        w.buf[len_at..len_at + 4].copy_from_slice(&field);
    }

    /// Appends the ledger record of `call` with `extra` set in its flags, exactly as
    /// [`Record::encode`] would append `Record::Ledger` of the call with those flags.
    pub fn encode_ledger(call: &GemmCall, extra: u16, w: &mut Writer) {
        w.u8(tag::LEDGER);
        w.u32(call.encoded_len() as u32);
        call.encode_flagged(w, extra);
    }

    /// The encoding as a fresh vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.encode(&mut w);
        w.buf
    }

    /// The length of [`Record::encode`]'s output, computed without encoding.
    pub fn encoded_len(&self) -> usize {
        let body = match self {
            Record::Ledger(call) => call.encoded_len(),
            Record::Sample(s) => {
                let scalars = [s.alpha.is_some(), s.beta.is_some()]
                    .iter()
                    .filter(|&&p| p)
                    .count()
                    * 8
                    + [s.scale_a, s.scale_b, s.scale_c, s.scale_d]
                        .iter()
                        .filter(|p| p.is_some())
                        .count()
                        * 4;
                8 + 1
                    + scalars
                    + s.a_rows.encoded_len()
                    + s.b_cols.encoded_len()
                    + 3 * 4
                    + s.c_in.len()
                    + s.d_out.len()
                    + s.bias.len()
                    + if s.presence() & present::VECTOR_SCALES != 0 {
                        8 + s.scale_rows.len() + s.scale_cols.len()
                    } else {
                        0
                    }
            }
            Record::Gap(g) => 1 + 4 + 8 * g.indices.len() + 2 + wire_str_len(&g.detail),
            Record::Notice(n) => 1 + 2 + wire_str_len(&n.message),
            Record::End(_) => 24,
            Record::Commitment(_) => 40,
            Record::Opening(_) => return self.to_bytes().len(),
        };
        RECORD_HEAD_LEN + body
    }

    /// Decodes one record. The body must be consumed exactly; an unknown tag, an unknown
    /// enum value or flag, a length beyond the bytes left, or a gap whose indices are not
    /// ascending and distinct is an error.
    pub fn decode(r: &mut Reader<'_>) -> Result<Record, DecodeError> {
        let at = r.offset();
        let tag = r.u8("record tag")?;
        let (what, name): (&'static str, &str) = match tag {
            tag::LEDGER => ("ledger record", "ledger"),
            tag::SAMPLE => ("sample record", "sample"),
            tag::GAP => ("gap record", "gap"),
            tag::NOTICE => ("notice record", "notice"),
            tag::END => ("end record", "end"),
            tag::COMMITMENT => ("commitment record", "commitment"),
            tag::OPENING => ("opening record", "opening"),
            t => return Err(r.error_at(at, "record tag", format!("unknown record type {t}"))),
        };
        let len_at = r.offset();
        let len = r.u32("record body length")? as usize;
        if len > r.remaining() {
            return Err(r.error_at(
                len_at,
                "record body length",
                format!(
                    "a {name} record of {len} bytes is declared, only {} bytes are left",
                    r.remaining()
                ),
            ));
        }
        let mut body = r.sub(len, what)?;
        let record = match tag {
            tag::LEDGER => Record::Ledger(GemmCall::decode(&mut body)?),
            tag::SAMPLE => Record::Sample(Sample::decode_body(&mut body)?),
            tag::GAP => Record::Gap(Gap::decode_body(&mut body)?),
            tag::NOTICE => Record::Notice(Notice {
                kind: body.enum_u8("notice record: kind")?,
                message: body.string("notice record: message")?,
            }),
            tag::COMMITMENT => Record::Commitment(Commitment::decode_body(&mut body)?),
            tag::OPENING => Record::Opening(Box::new(Opening::decode_body(&mut body)?)),
            _ => Record::End(End {
                calls: body.u64("end record: calls")?,
                samples: body.u64("end record: samples")?,
                gap_calls: body.u64("end record: gap calls")?,
            }),
        };
        body.finish(what)?;
        Ok(record)
    }
}

/// Bytes [`Writer::string`] writes for `s` after its length prefix.
fn wire_str_len(s: &str) -> usize {
    let mut end = s.len().min(u16::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    end
}

/// The fields of a reference to a held tensor after its kind byte: tensor, matrix count,
/// matrices, evidence (a sample's operand data and a commit-mode opening's side alike).
fn write_reference(w: &mut Writer, tensor: u32, matrices: &[u32], evidence: &[u8]) {
    w.u32(tensor);
    w.u32(u32::try_from(matrices.len()).unwrap_or(u32::MAX));
    for &m in matrices {
        w.u32(m);
    }
    w.bytes(evidence);
}

/// Reads what [`write_reference`] writes; the matrix count is checked against the bytes
/// left before anything is allocated.
fn read_reference(
    r: &mut Reader<'_>,
    what: &'static str,
) -> Result<(u32, Vec<u32>, Vec<u8>), DecodeError> {
    let tensor = r.u32(what)?;
    let count_at = r.offset();
    let count = r.u32(what)? as usize;
    match count.checked_mul(4) {
        Some(bytes) if bytes <= r.remaining() => {}
        _ => {
            return Err(r.error_at(
                count_at,
                what,
                format!(
                    "a reference with {count} matrix indices needs {} bytes, only {} are left",
                    count as u128 * 4,
                    r.remaining()
                ),
            ))
        }
    }
    let mut matrices = Vec::with_capacity(count);
    for _ in 0..count {
        matrices.push(r.u32(what)?);
    }
    Ok((tensor, matrices, read_blob(r, what)?))
}

/// A u32-length-prefixed byte string, its length checked against the bytes left.
fn read_blob(r: &mut Reader<'_>, what: &'static str) -> Result<Vec<u8>, DecodeError> {
    let at = r.offset();
    let len = r.u32(what)? as usize;
    if len > r.remaining() {
        return Err(r.error_at(
            at,
            what,
            format!("{len} bytes declared, only {} are left", r.remaining()),
        ));
    }
    Ok(r.take(len, what)?.to_vec())
}

impl OperandData {
    fn encode(&self, w: &mut Writer) {
        match self {
            OperandData::Inline(b) => {
                w.u8(OPERAND_INLINE);
                w.bytes(b);
            }
            OperandData::Reference {
                tensor,
                matrices,
                evidence,
            } => {
                w.u8(OPERAND_REFERENCE);
                write_reference(w, *tensor, matrices, evidence);
            }
        }
    }

    fn decode(r: &mut Reader<'_>, what: &'static str) -> Result<Self, DecodeError> {
        let at = r.offset();
        match r.u8(what)? {
            OPERAND_INLINE => Ok(OperandData::Inline(read_blob(r, what)?)),
            OPERAND_REFERENCE => {
                let (tensor, matrices, evidence) = read_reference(r, what)?;
                Ok(OperandData::Reference {
                    tensor,
                    matrices,
                    evidence,
                })
            }
            t => Err(r.error_at(at, what, format!("unknown operand data kind {t}"))),
        }
    }
}

/// The device-side scalars and scale factors a sample record carries, and a
/// commit-mode opening's small data ([`SmallData`]): the same presence bits and the same
/// encoding in both.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub(crate) struct Scalars {
    pub alpha: Option<f64>,
    pub beta: Option<f64>,
    /// scale_a, scale_b, scale_c, scale_d
    pub scales: [Option<f32>; 4],
}

impl Scalars {
    /// The presence byte, with [`present::VECTOR_SCALES`] when `vector_scales`.
    pub fn presence(&self, vector_scales: bool) -> u8 {
        let bits = [
            present::ALPHA,
            present::BETA,
            present::SCALE_A,
            present::SCALE_B,
            present::SCALE_C,
            present::SCALE_D,
        ];
        let set = [self.alpha.is_some(), self.beta.is_some()]
            .into_iter()
            .chain(self.scales.iter().map(Option::is_some));
        let p = bits
            .iter()
            .zip(set)
            .filter(|(_, on)| *on)
            .fold(0, |p, (bit, _)| p | bit);
        if vector_scales {
            p | present::VECTOR_SCALES
        } else {
            p
        }
    }

    /// The present values, in order (after the presence byte).
    pub fn encode(&self, w: &mut Writer) {
        for v in [self.alpha, self.beta].into_iter().flatten() {
            w.f64(v);
        }
        for v in self.scales.into_iter().flatten() {
            w.f32(v);
        }
    }

    /// Reads a presence byte (unknown bits are an error) and the values it announces.
    pub fn decode(r: &mut Reader<'_>, what: &'static str) -> Result<(u8, Scalars), DecodeError> {
        let at = r.offset();
        let p = r.u8(what)?;
        if p & !present::ALL != 0 {
            return Err(r.error_at(at, what, format!("unknown bits {:#04x}", p & !present::ALL)));
        }
        let mut s = Scalars::default();
        for (bit, v) in [(present::ALPHA, &mut s.alpha), (present::BETA, &mut s.beta)] {
            if p & bit != 0 {
                *v = Some(r.f64(what)?);
            }
        }
        let bits = [
            present::SCALE_A,
            present::SCALE_B,
            present::SCALE_C,
            present::SCALE_D,
        ];
        for (bit, v) in bits.into_iter().zip(&mut s.scales) {
            if p & bit != 0 {
                *v = Some(r.f32(what)?);
            }
        }
        Ok((p, s))
    }
}

impl Sample {
    fn scalars(&self) -> Scalars {
        Scalars {
            alpha: self.alpha,
            beta: self.beta,
            scales: [self.scale_a, self.scale_b, self.scale_c, self.scale_d],
        }
    }

    fn presence(&self) -> u8 {
        self.scalars()
            .presence(!self.scale_rows.is_empty() || !self.scale_cols.is_empty())
    }

    fn encode_body(&self, w: &mut Writer) {
        w.u64(self.index);
        w.u8(self.presence());
        self.scalars().encode(w);
        self.a_rows.encode(w);
        self.b_cols.encode(w);
        w.bytes(&self.c_in);
        w.bytes(&self.d_out);
        w.bytes(&self.bias);
        if self.presence() & present::VECTOR_SCALES != 0 {
            w.bytes(&self.scale_rows);
            w.bytes(&self.scale_cols);
        }
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let index = r.u64("sample record: call index")?;
        let (p, sc) = Scalars::decode(r, "sample record: presence bits")?;
        let [scale_a, scale_b, scale_c, scale_d] = sc.scales;
        Ok(Sample {
            index,
            alpha: sc.alpha,
            beta: sc.beta,
            scale_a,
            scale_b,
            scale_c,
            scale_d,
            a_rows: OperandData::decode(r, "sample record: op(A) rows")?,
            b_cols: OperandData::decode(r, "sample record: op(B) columns")?,
            c_in: read_blob(r, "sample record: C entries before the call")?,
            d_out: read_blob(r, "sample record: D entries after the call")?,
            bias: read_blob(r, "sample record: bias entries")?,
            scale_rows: if p & present::VECTOR_SCALES != 0 {
                read_blob(r, "sample record: row scales")?
            } else {
                Vec::new()
            },
            scale_cols: if p & present::VECTOR_SCALES != 0 {
                read_blob(r, "sample record: column scales")?
            } else {
                Vec::new()
            },
        })
    }
}

impl Gap {
    fn encode_body(&self, w: &mut Writer) {
        w.u8(self.reason as u8);
        w.u32(u32::try_from(self.indices.len()).unwrap_or(u32::MAX));
        for &i in &self.indices {
            w.u64(i);
        }
        w.string(&self.detail);
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let reason = r.enum_u8("gap record: reason")?;
        let at = r.offset();
        let count = r.u32("gap record: index count")? as usize;
        if count == 0 {
            return Err(r.error_at(at, "gap record: index count", "a gap names no call"));
        }
        // Capped by the bytes actually left before anything is allocated.
        match count.checked_mul(8) {
            Some(bytes) if bytes <= r.remaining() => {}
            _ => {
                return Err(r.error_at(
                    at,
                    "gap record: index count",
                    format!(
                        "{count} indices need {} bytes, only {} are left",
                        count as u128 * 8,
                        r.remaining()
                    ),
                ))
            }
        }
        let mut indices = Vec::with_capacity(count);
        for _ in 0..count {
            let at = r.offset();
            let i = r.u64("gap record: call index")?;
            if let Some(&last) = indices.last() {
                if i <= last {
                    return Err(r.error_at(
                        at,
                        "gap record: call index",
                        format!("{i} follows {last}; indices must be ascending and distinct"),
                    ));
                }
            }
            indices.push(i);
        }
        Ok(Gap {
            indices,
            reason,
            detail: r.string("gap record: detail")?,
        })
    }
}

/// The byte lengths a [`Sample`] must have for a call and its plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SampleShape {
    /// bytes of [`Sample::a_rows`] when inline: batches*rows*k*size(a.dtype)
    pub a_rows: u64,
    /// bytes of [`Sample::b_cols`] when inline: batches*cols*k*size(b.dtype)
    pub b_cols: u64,
    /// bytes of [`Sample::c_in`]: batches*rows*cols*size(c.dtype), or 0 when C is not read
    pub c_in: u64,
    /// bytes of [`Sample::d_out`]: batches*rows*cols*size(d.dtype)
    pub d_out: u64,
    /// bytes of [`Sample::bias`]: rows*size(bias_type) with [`flags::BIAS`], else 0
    pub bias: u64,
}

impl SampleShape {
    /// The lengths for `call` sampled by `plan`; an error if one does not fit in u64.
    pub fn of(call: &GemmCall, plan: &Plan) -> Result<SampleShape, String> {
        let (rows, cols, batches) = (
            plan.rows.len() as u64,
            plan.cols.len() as u64,
            plan.batches.len() as u64,
        );
        let product = |what: &str, factors: &[u64], dtype: DType| -> Result<u64, String> {
            factors
                .iter()
                .try_fold(dtype.size() as u64, |acc, &f| acc.checked_mul(f))
                .ok_or_else(|| format!("{what}: the byte length overflows 64 bits"))
        };
        Ok(SampleShape {
            a_rows: product("op(A) rows", &[batches, rows, call.k], call.a.dtype)?,
            b_cols: product("op(B) columns", &[batches, cols, call.k], call.b.dtype)?,
            c_in: if call.reads_c() {
                product("C entries", &[batches, rows, cols], call.c.dtype)?
            } else {
                0
            },
            d_out: product("D entries", &[batches, rows, cols], call.d.dtype)?,
            bias: if call.has(flags::BIAS_PER_BATCH) {
                product("bias entries", &[batches, rows], call.bias_type)?
            } else if call.has(flags::BIAS) {
                product("bias entries", &[rows], call.bias_type)?
            } else {
                0
            },
        })
    }
}

impl Sample {
    /// Checks that this sample has exactly the fields and byte lengths that `call`
    /// sampled by `plan` requires: the same call index, device-side alpha/beta present iff
    /// the call's are [`Scalar::Device`], scales present iff their flags are set, and
    /// every data field the length given by [`SampleShape::of`]. An operand sent as a
    /// [`OperandData::Reference`] must name one matrix per sampled batch entry and carry
    /// one evidence element per referenced row; whether the tensor exists and fits is the
    /// holder of the tensors' question. The error says which field is wrong and what was
    /// expected.
    pub fn check_shape(&self, call: &GemmCall, plan: &Plan) -> Result<(), String> {
        if self.index != call.index {
            return Err(format!(
                "sample for call {} checked against call {}",
                self.index, call.index
            ));
        }
        let presence = [
            (
                "alpha",
                self.alpha.is_some(),
                call.alpha == Scalar::Device,
                "the call's alpha is in device memory",
            ),
            (
                "beta",
                self.beta.is_some(),
                call.beta == Scalar::Device,
                "the call's beta is in device memory",
            ),
            (
                "scale_a",
                self.scale_a.is_some(),
                call.has(flags::SCALE_A),
                "the call has the SCALE_A flag",
            ),
            (
                "scale_b",
                self.scale_b.is_some(),
                call.has(flags::SCALE_B),
                "the call has the SCALE_B flag",
            ),
            (
                "scale_c",
                self.scale_c.is_some(),
                call.has(flags::SCALE_C),
                "the call has the SCALE_C flag",
            ),
            (
                "scale_d",
                self.scale_d.is_some(),
                call.has(flags::SCALE_D),
                "the call has the SCALE_D flag",
            ),
        ];
        for (name, has, wants, when) in presence {
            if has != wants {
                let verb = if has { "present" } else { "missing" };
                return Err(format!(
                    "call {}: sample {name} is {verb}; it is present iff {when}",
                    call.index
                ));
            }
        }
        let shape = SampleShape::of(call, plan)?;
        let (rows, cols, batches) = (plan.rows.len(), plan.cols.len(), plan.batches.len());
        let k = call.k;
        // The descriptions are formatted only for an error (this runs for every sample).
        let vector_bytes = |flag: u16, n: usize| if call.has(flag) { 4 * n as u64 } else { 0 };
        let vector_how = |flag: u16, n: usize, what: &str| {
            if call.has(flag) {
                format!("{n} {what} x 4 bytes (f32)")
            } else {
                "none: the call has no such scales".to_string()
            }
        };
        type How<'a> = &'a dyn Fn() -> String;
        let fields: [(&str, Option<usize>, u64, How<'_>); 7] = [
            (
                "op(A) rows",
                self.a_rows.inline().map(<[u8]>::len),
                shape.a_rows,
                &|| {
                    format!(
                        "{batches} batches x {rows} rows x k={k} x {} bytes ({})",
                        call.a.dtype.size(),
                        call.a.dtype.name()
                    )
                },
            ),
            (
                "op(B) columns",
                self.b_cols.inline().map(<[u8]>::len),
                shape.b_cols,
                &|| {
                    format!(
                        "{batches} batches x {cols} columns x k={k} x {} bytes ({})",
                        call.b.dtype.size(),
                        call.b.dtype.name()
                    )
                },
            ),
            ("C entries", Some(self.c_in.len()), shape.c_in, &|| {
                if call.reads_c() {
                    format!(
                        "{batches} batches x {rows} rows x {cols} columns x {} bytes ({})",
                        call.c.dtype.size(),
                        call.c.dtype.name()
                    )
                } else {
                    "none: beta is 0, C is not read".to_string()
                }
            }),
            ("D entries", Some(self.d_out.len()), shape.d_out, &|| {
                format!(
                    "{batches} batches x {rows} rows x {cols} columns x {} bytes ({})",
                    call.d.dtype.size(),
                    call.d.dtype.name()
                )
            }),
            ("bias entries", Some(self.bias.len()), shape.bias, &|| {
                if call.has(flags::BIAS) {
                    format!(
                        "{rows} rows x {} bytes ({})",
                        call.bias_type.size(),
                        call.bias_type.name()
                    )
                } else {
                    "none: the call has no bias".to_string()
                }
            }),
            (
                "row scales",
                Some(self.scale_rows.len()),
                vector_bytes(flags::SCALE_A_ROWS, rows),
                &|| vector_how(flags::SCALE_A_ROWS, rows, "rows"),
            ),
            (
                "column scales",
                Some(self.scale_cols.len()),
                vector_bytes(flags::SCALE_B_COLS, cols),
                &|| vector_how(flags::SCALE_B_COLS, cols, "columns"),
            ),
        ];
        for (name, got, want, how) in fields {
            let Some(got) = got else {
                continue; // a reference, checked below
            };
            if got as u64 != want {
                return Err(format!(
                    "call {}: {name} have {got} bytes, expected {want} ({})",
                    call.index,
                    how()
                ));
            }
        }
        for (name, data, vectors, dtype) in [
            ("op(A) rows", &self.a_rows, rows, call.a.dtype),
            ("op(B) columns", &self.b_cols, cols, call.b.dtype),
        ] {
            let OperandData::Reference {
                matrices, evidence, ..
            } = data
            else {
                continue;
            };
            if matrices.len() != batches {
                return Err(format!(
                    "call {}: the reference for {name} names {} matrices, expected one per sampled batch entry ({batches})",
                    call.index,
                    matrices.len()
                ));
            }
            let want = batches as u128 * vectors as u128 * dtype.size() as u128;
            if evidence.len() as u128 != want {
                return Err(format!(
                    "call {}: the reference for {name} has {} bytes of evidence, expected {want} ({batches} batches x {vectors} x {} bytes ({}), the first element of each referenced row)",
                    call.index,
                    evidence.len(),
                    dtype.size(),
                    dtype.name()
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::call::tests::sample_call;

    /// A small sample matching `sample_call(index, m, n, k)` and a 1x1x1 plan.
    pub fn small_sample(index: u64, k: usize) -> Sample {
        Sample {
            index,
            alpha: None,
            beta: None,
            scale_a: None,
            scale_b: None,
            scale_c: None,
            scale_d: None,
            a_rows: OperandData::Inline(vec![1; 4 * k]),
            b_cols: OperandData::Inline(vec![2; 4 * k]),
            c_in: vec![],
            d_out: vec![3; 4],
            bias: vec![],
            scale_rows: Vec::new(),
            scale_cols: Vec::new(),
        }
    }

    fn round_trip(rec: &Record) -> Record {
        let bytes = rec.to_bytes();
        assert_eq!(bytes.len(), rec.encoded_len(), "{rec:?}");
        let mut r = Reader::new(&bytes, 0, "t");
        let back = Record::decode(&mut r).unwrap();
        assert!(r.is_empty());
        assert_eq!(back.to_bytes(), bytes);
        back
    }

    #[test]
    fn every_record_type_round_trips() {
        let mut s = small_sample(3, 5);
        s.alpha = Some(-0.0);
        s.scale_c = Some(f32::MIN_POSITIVE);
        let records = [
            Record::Ledger(sample_call(9, 4, 5, 6)),
            Record::Sample(s),
            Record::Gap(Gap {
                indices: vec![1, 5, u64::MAX],
                reason: GapReason::SinkBackpressure,
                detail: "é".into(),
            }),
            Record::Notice(Notice {
                kind: NoticeKind::AuditDisabled,
                message: String::new(),
            }),
            Record::End(End {
                calls: 1,
                samples: 2,
                gap_calls: 3,
            }),
        ];
        for rec in &records {
            assert_eq!(&round_trip(rec), rec);
        }
    }

    fn decode_err(bytes: &[u8]) -> DecodeError {
        Record::decode(&mut Reader::new(bytes, 0, "frame 0 payload")).unwrap_err()
    }

    #[test]
    fn small_data_has_one_encoding_per_value() {
        use crate::commit::Hash;
        let o = Opening {
            index: 3,
            a: OpenedSide::Reference {
                tensor: 1,
                matrices: vec![],
                evidence: vec![1, 2],
            },
            b: OpenedSide::Inline(OpenedVectors {
                root: [4; 32],
                vectors: vec![5; 6],
                paths: vec![7; 64],
            }),
            c: OpenedVectors {
                root: [8; 32],
                vectors: vec![],
                paths: vec![],
            },
            d: OpenedVectors {
                root: [9; 32],
                vectors: vec![1; 4],
                paths: vec![],
            },
            small: SmallData {
                alpha: Some(1.5),
                scale_d: Some(0.5),
                bias: vec![1, 2],
                ..SmallData::default()
            },
        };
        let bytes = Record::Opening(Box::new(o.clone())).to_bytes();
        let mut r = Reader::new(&bytes, 0, "test");
        assert_eq!(
            Record::decode(&mut r).unwrap(),
            Record::Opening(Box::new(o.clone()))
        );
        assert_eq!(
            Record::Opening(Box::new(o.clone())).encoded_len(),
            bytes.len()
        );
        // The presence byte of the small data with the vector-scales bit set and two
        // empty blobs after the bias: the same values, another encoding; refused.
        let mut w = Writer::new();
        let mut small = Writer::new();
        o.small.encode(&mut small);
        let mut alt = small.buf.clone();
        alt[0] |= present::VECTOR_SCALES;
        alt.extend_from_slice(&[0; 8]);
        let body_head = bytes.len() - small.buf.len();
        w.raw(&bytes[..body_head]);
        w.raw(&alt);
        let len = (w.buf.len() - RECORD_HEAD_LEN) as u32;
        w.buf[1..5].copy_from_slice(&len.to_le_bytes());
        let mut r = Reader::new(&w.buf, 0, "test");
        let e = Record::decode(&mut r).unwrap_err();
        assert!(e.problem.contains("vector scales announced"), "{e}");
        let _: Hash = o.small.hash();
    }

    #[test]
    fn malformed_records_are_named() {
        assert!(decode_err(&[9, 0, 0, 0, 0])
            .problem
            .contains("unknown record type 9"));
        let e = decode_err(&[tag::END, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!((e.what, e.offset), ("record body length", 1));
        // A gap declaring 2^32-1 indices in a 10-byte body: refused before allocating.
        let mut w = Writer::new();
        w.u8(tag::GAP);
        w.u32(10);
        w.u8(1);
        w.u32(u32::MAX);
        w.raw(&[0; 5]);
        let e = decode_err(&w.buf);
        assert_eq!(e.what, "gap record: index count");
        assert!(e.problem.contains("only 5 are left"), "{e}");
        // Descending gap indices.
        let g = Record::Gap(Gap {
            indices: vec![5, 4],
            reason: GapReason::RingFull,
            detail: String::new(),
        });
        assert!(decode_err(&g.to_bytes()).problem.contains("ascending"));
        // Unknown presence bits, unknown operand kind, trailing bytes.
        let mut b = Record::Sample(small_sample(0, 1)).to_bytes();
        b[13] = 0x80;
        assert_eq!(decode_err(&b).what, "sample record: presence bits");
        let mut b = Record::Sample(small_sample(0, 1)).to_bytes();
        b[14] = 7;
        assert!(decode_err(&b)
            .problem
            .contains("unknown operand data kind 7"));
        let mut b = Record::End(End {
            calls: 0,
            samples: 0,
            gap_calls: 0,
        })
        .to_bytes();
        b[1] = 25;
        b.push(0);
        let e = decode_err(&b);
        assert_eq!((e.what, e.offset), ("end record", 29));
        assert!(e.to_string().contains("frame 0 payload offset 29"));
    }

    #[test]
    fn references_round_trip_and_are_shape_checked() {
        let call = sample_call(3, 8, 8, 5);
        let plan = Plan {
            rows: vec![1, 4],
            cols: vec![2],
            batches: vec![0],
        };
        let mut s = small_sample(3, 5);
        s.a_rows = OperandData::Reference {
            tensor: 7,
            matrices: vec![0],
            evidence: vec![9; 8],
        };
        s.d_out = vec![3; 8];
        let rec = Record::Sample(s.clone());
        assert_eq!(round_trip(&rec), rec);
        assert_eq!(s.check_shape(&call, &plan), Ok(()));
        let mut bad = s.clone();
        bad.a_rows = OperandData::Reference {
            tensor: 7,
            matrices: vec![0, 0],
            evidence: vec![9; 8],
        };
        let e = bad.check_shape(&call, &plan).unwrap_err();
        assert!(
            e.contains("names 2 matrices, expected one per sampled batch entry (1)"),
            "{e}"
        );
        bad.a_rows = OperandData::Reference {
            tensor: 7,
            matrices: vec![0],
            evidence: vec![9; 4],
        };
        let e = bad.check_shape(&call, &plan).unwrap_err();
        assert!(e.contains("4 bytes of evidence, expected 8"), "{e}");
        // A matrix count beyond the bytes left is refused before allocating.
        let mut w = Writer::new();
        w.u8(tag::SAMPLE);
        w.u32(8 + 1 + 1 + 4 + 4);
        w.u64(0);
        w.u8(0);
        w.u8(OPERAND_REFERENCE);
        w.u32(1);
        w.u32(u32::MAX);
        let e = decode_err(&w.buf);
        assert!(e.problem.contains("only 0 are left"), "{e}");
    }

    #[test]
    fn check_shape_names_the_wrong_field() {
        let call = sample_call(3, 8, 8, 5);
        let plan = Plan {
            rows: vec![1],
            cols: vec![2],
            batches: vec![0],
        };
        let s = small_sample(3, 5);
        assert_eq!(s.check_shape(&call, &plan), Ok(()));
        let mut bad = s.clone();
        bad.d_out.push(0);
        let e = bad.check_shape(&call, &plan).unwrap_err();
        assert!(e.contains("D entries have 5 bytes, expected 4"), "{e}");
        // the description, formatted only for the error, says where the size comes from
        assert!(
            e.contains("(1 batches x 1 rows x 1 columns x 4 bytes (f32))"),
            "{e}"
        );
        let mut bad = s.clone();
        bad.scale_rows = vec![0; 4];
        let e = bad.check_shape(&call, &plan).unwrap_err();
        assert!(
            e.contains("row scales have 4 bytes, expected 0 (none: the call has no such scales)"),
            "{e}"
        );
        let mut bad = s.clone();
        bad.alpha = Some(1.0);
        assert!(bad.check_shape(&call, &plan).unwrap_err().contains("alpha"));
        let mut c2 = call.clone();
        c2.beta = Scalar::Host(0.5);
        let e = s.check_shape(&c2, &plan).unwrap_err();
        assert!(e.contains("C entries have 0 bytes, expected 4"), "{e}");
        let mut c3 = call.clone();
        c3.flags = flags::BIAS;
        assert!(s.check_shape(&c3, &plan).unwrap_err().contains("bias"));
        assert!(s.check_shape(&sample_call(4, 8, 8, 5), &plan).is_err());
    }
}
