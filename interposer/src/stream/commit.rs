//! Commit mode on the library's side (docs/COMMIT.md): what the sink does for a session
//! whose verifier's hello asked for it.
//!
//! Every auditable call of such a session is gathered whole (the hooks take the plan of
//! every row, column and batch entry, [`crate::session::Session::decide`]). When its
//! gather completes, [`CommitSession::commit`] hashes it into the call's commitment (a
//! record the sink sends at once) and keeps what an opening needs: the vectors of each
//! operand with their tree, or, for an operand that is a tensor the verifier holds, the
//! reference and the first element of each vector. The verifier's challenge frames,
//! read from the same connection ([`CommitSession::on_bytes`]), name the calls to open
//! and the plan of each; every other call up to the frame's `through` is released.
//!
//! Memory is bounded: kept calls take at most `MMAUDIT_RETAIN_MB`; past it the oldest
//! are dropped, and a challenge of a dropped call is answered with a "not retained" gap
//! (counted by the verifier's gap policy). A challenge the library cannot answer for
//! any other reason (a plan that does not fit the call) gets the same gap.
//!
//! What this first version does not do yet (docs/COMMIT.md, "What is left"): the
//! whole call travels to pinned host memory and is hashed on the CPU by the background
//! thread, where the design keeps it in device memory and hashes it on the GPU
//! (`mmaudit_commit_leaves`); and an operand is recognised as a held tensor by the
//! fingerprints of all its rows, not by its address.

use std::collections::BTreeMap;

use mmaudit_protocol::call::GemmCall;
use mmaudit_protocol::commit::frames::{ChallengeFrame, ChallengeReader};
use mmaudit_protocol::commit::{self, CallBinding, Side};
use mmaudit_protocol::handshake::OperandTable;
use mmaudit_protocol::keys::Key;
use mmaudit_protocol::record::{
    Commitment, CommittedVectors, Gap, GapReason, OpenedSide, Opening, OperandData, Record, Sample,
    SmallData,
};
use mmaudit_protocol::schedule::Plan;
use mmaudit_protocol::stream::MAC_LEN;

use crate::model::gather::{HeldA, HeldKey, HeldRef};

/// One operand side (op(A) or op(B)) as kept.
enum KeptSide {
    /// Committed by its root: the vectors and their tree.
    Inline(CommittedVectors),
    /// A tensor the verifier holds: the reference, and the first element of each vector
    /// (`[batch member][vector]`, `elem` bytes each), the evidence an opening carries.
    Reference {
        tensor: u32,
        matrices: Vec<u32>,
        first: Vec<u8>,
        elem: usize,
    },
}

impl KeptSide {
    fn side(&self) -> Side {
        match self {
            KeptSide::Inline(v) => Side::Inline(v.root()),
            KeptSide::Reference {
                tensor, matrices, ..
            } => Side::Reference {
                tensor: *tensor,
                matrices: matrices.clone(),
            },
        }
    }

    fn held_bytes(&self) -> usize {
        match self {
            KeptSide::Inline(v) => v.held_bytes(),
            KeptSide::Reference {
                matrices, first, ..
            } => first.len() + 4 * matrices.len(),
        }
    }

    /// The opening of vectors `picks` of the plan's batch entries (`per` a member).
    fn open(&self, per: u64, batches: &[u64], picks: &[u64]) -> OpenedSide {
        match self {
            KeptSide::Inline(v) => OpenedSide::Inline(v.open(per, batches, picks)),
            KeptSide::Reference {
                tensor,
                matrices,
                first,
                elem,
            } => {
                let mut evidence = Vec::with_capacity(batches.len() * picks.len() * elem);
                for &b in batches {
                    for &x in picks {
                        let at = (b * per + x) as usize * elem;
                        evidence.extend_from_slice(first.get(at..at + elem).unwrap_or(&[]));
                    }
                }
                OpenedSide::Reference {
                    tensor: *tensor,
                    matrices: matrices.clone(),
                    evidence,
                }
            }
        }
    }
}

/// Everything committed for one call, kept until the verifier opens or releases it.
struct Kept {
    call: GemmCall,
    a: KeptSide,
    b: KeptSide,
    c: CommittedVectors,
    d: CommittedVectors,
    small: SmallData,
    bytes: usize,
}

impl Kept {
    fn opening(&self, plan: &Plan) -> Opening {
        let call = &self.call;
        let bs = &plan.batches;
        Opening {
            index: call.index,
            a: self.a.open(call.m, bs, &plan.rows),
            b: self.b.open(call.n, bs, &plan.cols),
            c: self.c.open(call.n, bs, &plan.cols),
            d: self.d.open(call.n, bs, &plan.cols),
            small: self.small.clone(),
        }
    }
}

/// Dropped calls remembered by index (for the reason of their gap), at most.
const MAX_DROPPED_NAMED: usize = 1 << 20;

/// Counters of one session, for the exit summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitTotals {
    /// Calls committed.
    pub committed: u64,
    /// Challenges answered with an opening.
    pub opened: u64,
    /// Challenges answered with a "not retained" gap.
    pub not_retained: u64,
    /// Kept calls dropped to stay within the retention bound.
    pub dropped: u64,
    /// Calls whose op(A) was bound by reference from its address (evidence and a spot
    /// row gathered, not the whole operand).
    pub by_address: u64,
}

impl CommitTotals {
    /// Adds another session's counters.
    pub fn add(&mut self, other: &CommitTotals) {
        self.committed += other.committed;
        self.opened += other.opened;
        self.not_retained += other.not_retained;
        self.dropped += other.dropped;
        self.by_address += other.by_address;
    }
}

/// The library's side of one commit-mode session (one connection).
pub struct CommitSession {
    reader: ChallengeReader,
    kept: BTreeMap<u64, Kept>,
    kept_bytes: usize,
    budget: usize,
    /// The `through` of the verifier's last challenge frame.
    through: Option<u64>,
    /// The last call committed.
    last: Option<u64>,
    /// Calls dropped for the retention bound, not yet released by a frame.
    dropped: std::collections::BTreeSet<u64>,
    /// Counters.
    pub totals: CommitTotals,
}

/// The whole of `len` entries `[batch][row][col]` (`rows` x `cols` a batch member,
/// `elem` bytes each) as columns, `[batch][col][row]`.
fn columns(entries: &[u8], batch: usize, rows: usize, cols: usize, elem: usize) -> Vec<u8> {
    let mut out = vec![0u8; entries.len()];
    let member = rows * cols * elem;
    for b in 0..batch {
        for r in 0..rows {
            for c in 0..cols {
                let from = b * member + (r * cols + c) * elem;
                let to = b * member + (c * rows + r) * elem;
                out[to..to + elem].copy_from_slice(&entries[from..from + elem]);
            }
        }
    }
    out
}

/// Checks that `v` holds `count` vectors of `width` bytes.
fn fits(what: &str, v: &[u8], count: u64, width: u64) -> Result<(), String> {
    match count.checked_mul(width) {
        Some(n) if n == v.len() as u64 => Ok(()),
        _ => Err(format!(
            "{what}: {} bytes gathered, {count} vectors of {width} bytes expected",
            v.len()
        )),
    }
}

impl CommitSession {
    /// A session whose hello carried `hello_mac`, keeping at most `budget` bytes.
    pub fn new(key: &Key, hello_mac: [u8; MAC_LEN], budget: usize) -> Self {
        CommitSession {
            reader: ChallengeReader::new(key, hello_mac),
            kept: BTreeMap::new(),
            kept_bytes: 0,
            budget,
            through: None,
            last: None,
            dropped: std::collections::BTreeSet::new(),
            totals: CommitTotals::default(),
        }
    }

    /// True while a committed call waits for the verifier's judgement (a challenge
    /// frame whose `through` reaches it): the stream must not end before.
    pub fn awaiting(&self) -> bool {
        self.last
            .is_some_and(|l| self.through.is_none_or(|t| t < l))
    }

    /// Bytes kept.
    pub fn kept_bytes(&self) -> usize {
        self.kept_bytes
    }

    /// Commits to `sample`, the whole of `call` as gathered: returns the commitment
    /// record, and keeps the call for its opening. Operands that are rows of a tensor of
    /// `table` are bound by reference, and op(A)'s address (`a_key`) is then remembered
    /// ([`crate::held`]). With `held`, op(A) was gathered as that tensor's evidence and a
    /// spot row, which must still match it. An error says why the call cannot be
    /// committed (its data does not have the call's shape, or the spot row no longer
    /// matches).
    pub fn commit(
        &mut self,
        call: GemmCall,
        sample: Sample,
        table: Option<&OperandTable>,
        a_key: Option<HeldKey>,
        held: Option<(HeldA, Vec<u8>)>,
    ) -> Result<Record, String> {
        let Sample {
            alpha,
            beta,
            scale_a,
            scale_b,
            scale_c,
            scale_d,
            a_rows,
            b_cols,
            c_in,
            d_out,
            bias,
            scale_rows,
            scale_cols,
            ..
        } = sample;
        let (m, n, k, batch) = (call.m, call.n, call.k, call.batch);
        let side = |data: OperandData, dtype, count: u64, what: &str| {
            let OperandData::Inline(bytes) = data else {
                return Err(format!("{what}: gathered as a reference, not whole"));
            };
            let width = k.saturating_mul(dtype_size(dtype));
            fits(what, &bytes, batch.saturating_mul(count), width)?;
            let all: Vec<u64> = (0..count).collect();
            if let Some(OperandData::Reference {
                tensor,
                matrices,
                evidence,
            }) = table.and_then(|t| t.reference(dtype, k, &all, batch as usize, &bytes))
            {
                return Ok(KeptSide::Reference {
                    tensor,
                    matrices,
                    first: evidence,
                    elem: dtype_size(dtype) as usize,
                });
            }
            CommittedVectors::new(bytes, (batch * count) as usize).map(KeptSide::Inline)
        };
        let held_a = held.is_some();
        let a = match held {
            Some((h, spot)) => held_side(&call, table, h, &spot, a_rows)?,
            None => side(a_rows, call.a.dtype, m, "op(A)")?,
        };
        if let (
            false,
            Some(key),
            KeptSide::Reference {
                tensor, matrices, ..
            },
        ) = (held_a, a_key, &a)
        {
            crate::held::remember(
                key,
                HeldRef {
                    tensor: *tensor,
                    matrices: matrices.clone(),
                },
            );
        }
        self.totals.by_address += held_a as u64;
        let b = side(b_cols, call.b.dtype, n, "op(B)")?;
        let entries = |data: Vec<u8>, dtype, what: &str| -> Result<CommittedVectors, String> {
            let elem = dtype_size(dtype);
            fits(what, &data, batch.saturating_mul(n), m.saturating_mul(elem))?;
            let cols = columns(&data, batch as usize, m as usize, n as usize, elem as usize);
            CommittedVectors::new(cols, (batch * n) as usize)
        };
        let c = if call.reads_c() {
            entries(c_in, call.c.dtype, "C")?
        } else {
            CommittedVectors::none()
        };
        let d = entries(d_out, call.d.dtype, "D")?;
        let small = SmallData {
            alpha,
            beta,
            scale_a,
            scale_b,
            scale_c,
            scale_d,
            bias,
            scale_rows,
            scale_cols,
        };
        let binding = CallBinding {
            a: a.side(),
            b: b.side(),
            c: c.root(),
            d: d.root(),
            small: small.hash(),
        };
        let commitment = commit::call_commitment(&call, &binding);
        let index = call.index;
        let bytes = a.held_bytes()
            + b.held_bytes()
            + c.held_bytes()
            + d.held_bytes()
            + small.bias.len()
            + small.scale_rows.len()
            + small.scale_cols.len();
        self.totals.committed += 1;
        self.last = Some(self.last.map_or(index, |l| l.max(index)));
        if bytes > self.budget {
            self.drop_call(index);
        } else {
            self.kept.insert(
                index,
                Kept {
                    call,
                    a,
                    b,
                    c,
                    d,
                    small,
                    bytes,
                },
            );
            self.kept_bytes += bytes;
            while self.kept_bytes > self.budget {
                let Some((&oldest, _)) = self.kept.first_key_value() else {
                    break;
                };
                if let Some(k) = self.kept.remove(&oldest) {
                    self.kept_bytes -= k.bytes;
                }
                self.drop_call(oldest);
            }
        }
        Ok(Record::Commitment(Commitment { index, commitment }))
    }

    fn drop_call(&mut self, index: u64) {
        self.totals.dropped += 1;
        self.dropped.insert(index);
        // Only the reason of a later gap depends on it: bounded, oldest forgotten first.
        while self.dropped.len() > MAX_DROPPED_NAMED {
            self.dropped.pop_first();
        }
    }

    /// Reads bytes from the verifier: for every complete challenge frame, the records
    /// that answer it (openings, and "not retained" gaps). An error (a bad frame: wrong
    /// MAC, sequence or length) ends the connection.
    pub fn on_bytes(&mut self, bytes: &[u8]) -> Result<Vec<Record>, String> {
        let frames = self
            .reader
            .push(bytes)
            .map_err(|e| format!("challenge frame: {e}"))?;
        let mut out = Vec::new();
        for frame in frames {
            self.answer(frame, &mut out);
        }
        Ok(out)
    }

    fn answer(&mut self, frame: ChallengeFrame, out: &mut Vec<Record>) {
        for c in frame.challenges {
            let kept = self.kept.remove(&c.index);
            if let Some(k) = &kept {
                self.kept_bytes -= k.bytes;
            }
            let why = match &kept {
                Some(k) if plan_fits(&k.call, &c.plan) => {
                    self.totals.opened += 1;
                    out.push(Record::Opening(Box::new(k.opening(&c.plan))));
                    continue;
                }
                Some(_) => "the challenge's plan does not fit the call".to_string(),
                None if self.dropped.remove(&c.index) => format!(
                    "dropped to keep the retained calls within MMAUDIT_RETAIN_MB ({} MiB)",
                    self.budget >> 20
                ),
                None => "the library kept no data for this call".to_string(),
            };
            self.totals.not_retained += 1;
            out.push(Record::Gap(Gap {
                indices: vec![c.index],
                reason: GapReason::NotRetained,
                detail: why,
            }));
        }
        // Everything up to `through` that was not challenged is released.
        let later = self.kept.split_off(&frame.through.saturating_add(1));
        for k in std::mem::replace(&mut self.kept, later).into_values() {
            self.kept_bytes -= k.bytes;
        }
        let later = self.dropped.split_off(&frame.through.saturating_add(1));
        self.dropped = later;
        self.through = Some(self.through.map_or(frame.through, |t| t.max(frame.through)));
    }
}

/// op(A) gathered as held tensor `h`'s evidence (`first`: one element a row) and one
/// spot row: bound by reference if the spot row is still that tensor's row; otherwise
/// the address is forgotten and the call cannot be committed.
fn held_side(
    call: &GemmCall,
    table: Option<&OperandTable>,
    h: HeldA,
    spot: &[u8],
    first: OperandData,
) -> Result<KeptSide, String> {
    let r = &h.reference;
    let still = table
        .and_then(|t| t.reference(call.a.dtype, call.k, &[h.spot_row], 1, spot))
        .is_some_and(|found| {
            matches!(found, OperandData::Reference { tensor, matrices, .. }
                if tensor == r.tensor && matrices.first() == r.matrices.first())
        });
    if !still {
        crate::held::forget(&h.key);
        return Err(format!(
            "op(A) at {:#x} is no longer tensor {} of the verifier's hello (row {} does not match); the address is forgotten",
            h.key.base, r.tensor, h.spot_row
        ));
    }
    let OperandData::Inline(first) = first else {
        return Err("op(A): evidence gathered as a reference".into());
    };
    let elem = dtype_size(call.a.dtype);
    fits(
        "op(A) evidence",
        &first,
        call.batch.saturating_mul(call.m),
        elem,
    )?;
    Ok(KeptSide::Reference {
        tensor: r.tensor,
        matrices: r.matrices.clone(),
        first,
        elem: elem as usize,
    })
}

fn dtype_size(d: mmaudit_protocol::call::DType) -> u64 {
    d.size() as u64
}

/// Whether every index of `plan` names a row, column and batch member of `call`, each
/// once and in ascending order (so that an opening is never larger than the call kept).
fn plan_fits(call: &GemmCall, plan: &Plan) -> bool {
    let ascending_below = |v: &[u64], bound: u64| {
        !v.is_empty() && v.windows(2).all(|w| w[0] < w[1]) && v.last().is_some_and(|&x| x < bound)
    };
    ascending_below(&plan.rows, call.m)
        && ascending_below(&plan.cols, call.n)
        && ascending_below(&plan.batches, call.batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_become_columns() {
        // 2 batch members of 2 x 3 entries, one byte each: [b][row][col].
        let e: Vec<u8> = (0..12).collect();
        let c = columns(&e, 2, 2, 3, 1);
        assert_eq!(c, vec![0, 3, 1, 4, 2, 5, 6, 9, 7, 10, 8, 11]);
        let e2: Vec<u8> = (0..8).collect(); // 2 x 2 of 2-byte entries
        assert_eq!(columns(&e2, 1, 2, 2, 2), vec![0, 1, 4, 5, 2, 3, 6, 7]);
    }
}
