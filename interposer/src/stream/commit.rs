//! Commit mode on the library's side (docs/COMMIT.md): what the sink does for a session
//! whose verifier's hello asked for it.
//!
//! Every auditable call of such a session is gathered whole (the hooks take the plan of
//! every row, column and batch entry, [`crate::session::Session::decide`]). When its
//! gather completes, [`CommitSession::commit`] hashes it into the call's commitment (a
//! record the sink sends at once) and keeps what an opening needs: the vectors of each
//! operand with their tree, or, for an operand that is a tensor the verifier holds, the
//! reference and the first element of each vector. The verifier's challenge frames,
//! read from the same connection ([`CommitSession::answer_bytes`]), name the calls to
//! open and the plan of each; every other call up to the frame's `through` is released.
//!
//! Memory is bounded: kept calls take at most `MMAUDIT_RETAIN_MB`; past it the oldest
//! are dropped, and a challenge of a dropped call is answered with a "not retained" gap
//! (counted by the verifier's gap policy). A challenge the library cannot answer for
//! any other reason (a plan that does not fit the call) gets the same gap.
//!
//! The vectors of a direct call are hashed on the GPU where they lie
//! (`mmaudit_commit_leaves`, [`crate::model::gather::SlotLayout::hashing_leaves`]); the
//! background thread builds the trees over those leaf hashes, checking one vector per
//! operand against its own hash ([`Hashing::commit`]). Where the context's retention
//! ring in device memory has room, the call's operands are copied there instead of to
//! pinned host memory ([`crate::gpu::Retained`]): the host then keeps only the trees, and
//! an opening gathers the challenged vectors from device memory on the library's own
//! stream ([`CommitSession::poll_openings`]). What this version does not do yet
//! (docs/COMMIT.md, "What is left"): graph replays are gathered to host memory and
//! hashed there.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};

use mmaudit_protocol::call::GemmCall;
use mmaudit_protocol::commit::frames::{Challenge, ChallengeFrame, ChallengeReader};
use mmaudit_protocol::commit::{self, CallBinding, Side};
use mmaudit_protocol::handshake::OperandTable;
use mmaudit_protocol::keys::Key;
use mmaudit_protocol::record::{
    Commitment, CommittedVectors, Gap, GapReason, OpenedSide, Opening, OperandData, Record, Sample,
    SmallData,
};
use mmaudit_protocol::schedule::Plan;
use mmaudit_protocol::stream::MAC_LEN;

use crate::gpu::{OpeningGather, Retained};
use crate::model::gather::{checked_vector, DeviceSide, HeldA, HeldKey, HeldRef, Leaves, Picks};

/// Cleared for good once the GPU's leaf hashes disagreed with the host's check of one
/// vector: from then on no call is kept in device memory (its vectors could then only
/// be committed from those leaves), and every later call is hashed on the host.
static LEAVES_TRUSTED: AtomicBool = AtomicBool::new(true);

/// Whether the GPU's leaf hashes are still used (see [`LEAVES_TRUSTED`]).
pub fn leaves_trusted() -> bool {
    LEAVES_TRUSTED.load(Ordering::Relaxed)
}

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

    /// The opening of vectors `picks` of the plan's batch entries (`per` a member);
    /// `fetched`: the vectors, fetched from device memory where they are kept.
    fn open(
        &self,
        per: u64,
        batches: &[u64],
        picks: &[u64],
        fetched: Option<Vec<u8>>,
    ) -> OpenedSide {
        match self {
            KeptSide::Inline(v) => OpenedSide::Inline(match fetched {
                Some(f) => v.open_with(per, batches, picks, f),
                None => v.open(per, batches, picks),
            }),
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
    /// The operands kept in device memory (their trees are above).
    device: Option<Retained>,
}

/// An opening whose vectors are being gathered from device memory.
struct PendingOpening {
    kept: Kept,
    plan: Plan,
    gather: OpeningGather,
}

impl Kept {
    /// Bytes of the opening of `plan` (which fits the call), before building it.
    fn opening_len(&self, plan: &Plan) -> u128 {
        let call = &self.call;
        let paths = |per: u64, picks: &[u64]| -> u128 {
            let leaves = call.batch.saturating_mul(per);
            plan.batches
                .iter()
                .flat_map(|&b| picks.iter().map(move |&x| b * per + x))
                .map(|leaf| 32 * commit::path_len(leaf, leaves) as u128)
                .sum()
        };
        let count = |picks: &[u64]| (plan.batches.len() * picks.len()) as u128;
        let side = |s: &KeptSide, per: u64, picks: &[u64], size: u64| match s {
            KeptSide::Inline(_) => {
                count(picks) * (call.k as u128 * size as u128) + paths(per, picks)
            }
            KeptSide::Reference { elem, .. } => count(picks) * *elem as u128,
        };
        let size = dtype_size;
        let columns = |present: bool, out: u64| {
            if present {
                count(&plan.cols) * (call.m as u128 * out as u128) + paths(call.n, &plan.cols)
            } else {
                0
            }
        };
        let small =
            self.small.bias.len() + self.small.scale_rows.len() + self.small.scale_cols.len();
        side(&self.a, call.m, &plan.rows, size(call.a.dtype))
            + side(&self.b, call.n, &plan.cols, size(call.b.dtype))
            + columns(call.reads_c(), size(call.c.dtype))
            + columns(true, size(call.d.dtype))
            + small as u128
            + 1024
    }

    /// The opening of `plan`; `fetched`: the vectors of op(A), op(B), C, D gathered from
    /// device memory, for the operands kept there.
    fn opening(&self, plan: &Plan, fetched: [Option<Vec<u8>>; 4]) -> Opening {
        let call = &self.call;
        let bs = &plan.batches;
        let [fa, fb, fc, fd] = fetched;
        let columns = |v: &CommittedVectors, f: Option<Vec<u8>>| match f {
            Some(f) => v.open_with(call.n, bs, &plan.cols, f),
            None => v.open(call.n, bs, &plan.cols),
        };
        Opening {
            index: call.index,
            a: self.a.open(call.m, bs, &plan.rows, fa),
            b: self.b.open(call.n, bs, &plan.cols, fb),
            c: columns(&self.c, fc),
            d: columns(&self.d, fd),
            small: self.small.clone(),
        }
    }

    /// The vectors of `plan` to gather from device memory, per operand kept there.
    fn picks<'a>(&self, plan: &'a Plan) -> [Option<Picks<'a>>; 4] {
        let call = &self.call;
        let on = |i: usize| {
            self.device
                .as_ref()
                .is_some_and(|d| d.layout.sides[i].is_some())
        };
        let pick = |i: usize, per: u64, picks: &'a [u64]| {
            on(i).then_some(Picks {
                per,
                batches: &plan.batches,
                picks,
            })
        };
        [
            pick(0, call.m, &plan.rows),
            pick(1, call.n, &plan.cols),
            pick(2, call.n, &plan.cols).filter(|_| call.reads_c()),
            pick(3, call.n, &plan.cols),
        ]
    }
}

/// Dropped calls remembered by index (for the reason of their gap), at most.
const MAX_DROPPED_NAMED: usize = 1 << 20;
/// Calls whose commitment is expected in order, at most (the verifier keeps 2^16 calls
/// awaiting their commitment).
const MAX_DUE: usize = 1 << 16;
/// Records held back behind an expected call that has not come, at most.
const MAX_HELD_BACK: usize = 1 << 14;
/// The largest opening built: what fits in a frame, less room for the record head.
const MAX_OPENING: u32 = mmaudit_protocol::stream::MAX_PAYLOAD_LEN - 4096;
/// Heap allocations of a kept call (vectors, trees' levels, small data), about.
const KEPT_ALLOCATIONS: usize = 16;
/// What an allocation costs besides its bytes, about (allocator header and rounding,
/// the map's node share).
const ALLOCATION_OVERHEAD: usize = 32;

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
    /// Calls whose op(A) was found to be a held tensor by its spot rows (evidence and a
    /// spot row per batch member gathered, not the whole operand).
    pub by_address: u64,
    /// Calls committed from leaf hashes the GPU computed (at least one operand).
    pub gpu_hashed: u64,
    /// Operands whose GPU leaf hashes disagreed with the host's hash of a vector: they
    /// were hashed on the host instead.
    pub leaf_mismatches: u64,
    /// Calls kept in device memory (at least one operand).
    pub on_device: u64,
    /// Calls kept in device memory whose GPU leaf hashes disagreed (or were not
    /// computed), copied back to host memory and committed to from there (not counted
    /// in `on_device`).
    pub refetched: u64,
}

impl CommitTotals {
    /// Adds another session's counters.
    pub fn add(&mut self, other: &CommitTotals) {
        self.committed += other.committed;
        self.opened += other.opened;
        self.not_retained += other.not_retained;
        self.dropped += other.dropped;
        self.by_address += other.by_address;
        self.gpu_hashed += other.gpu_hashed;
        self.leaf_mismatches += other.leaf_mismatches;
        self.on_device += other.on_device;
        self.refetched += other.refetched;
    }
}

/// The library's side of one commit-mode session (one connection).
pub struct CommitSession {
    reader: ChallengeReader,
    kept: BTreeMap<u64, Kept>,
    kept_bytes: usize,
    budget: usize,
    /// Calls committed and not yet judged (no frame's `through` reached them).
    unjudged: BTreeSet<u64>,
    /// Auditable calls whose commitment or gap has not gone out yet.
    due: BTreeSet<u64>,
    /// Commitments and gaps made for calls above the first of `due`, waiting for it.
    held_back: BTreeMap<u64, Record>,
    /// Calls dropped for the retention bound, not yet released by a frame.
    dropped: BTreeSet<u64>,
    /// The GPU's leaf hashes disagreed with the library's check once: not used again.
    leaves_distrusted: bool,
    /// Openings being gathered from device memory.
    pending: Vec<PendingOpening>,
    /// Calls kept in device memory whose GPU leaf hashes disagreed with the host's
    /// check, being copied back to host memory to be hashed there.
    refetching: Vec<Refetch>,
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

/// A call kept in device memory being copied back to host memory to be hashed there.
struct Refetch {
    call: GemmCall,
    sample: Sample,
    a_key: Option<HeldKey>,
    held: Option<(HeldA, Vec<u8>)>,
    /// Operands kept in device memory (op(A), op(B), C, D).
    sides: [bool; 4],
    gather: OpeningGather,
}

impl Refetch {
    /// The sample with the vectors copied back in place of the device-kept operands:
    /// op(A)'s rows and op(B)'s columns as gathered, C and D as entries.
    fn with_vectors(&self, fetched: [Option<Vec<u8>>; 4]) -> Result<Sample, String> {
        let mut sample = self.sample.clone();
        let c = &self.call;
        let (batch, m, n) = (c.batch as usize, c.m as usize, c.n as usize);
        for (i, v) in fetched.into_iter().enumerate() {
            if !self.sides[i] {
                continue;
            }
            let v = v.ok_or("an operand kept in device memory did not come back")?;
            let elem = |d| dtype_size(d) as usize;
            let fits = |elem: usize| {
                (v.len() == batch * m * n * elem)
                    .then_some(())
                    .ok_or("C or D came back with another size than the call's")
            };
            match i {
                0 => sample.a_rows = OperandData::Inline(v),
                1 => sample.b_cols = OperandData::Inline(v),
                2 => {
                    fits(elem(c.c.dtype))?;
                    // Columns back to entries: the transposition of n x m.
                    sample.c_in = columns(&v, batch, n, m, elem(c.c.dtype));
                }
                _ => {
                    fits(elem(c.d.dtype))?;
                    sample.d_out = columns(&v, batch, n, m, elem(c.d.dtype));
                }
            }
        }
        Ok(sample)
    }
}

/// How the vectors of one call's operands were hashed, for the session's counters.
#[derive(Default)]
struct Hashing {
    /// operands committed from the GPU's leaf hashes
    gpu: u64,
    /// operands whose GPU leaf hashes disagreed with the host's
    mismatches: u64,
}

impl Hashing {
    /// Commits to `count` vectors back to back in `bytes`: from `leaves`, the GPU's
    /// hashes of them, when the host's hash of one vector ([`checked_vector`] of the
    /// call `index`) agrees; otherwise by hashing every vector here. The one vector checked
    /// catches a kernel or a launch that went wrong (and, with every call checked at
    /// another vector, a GPU that hashes some vectors wrong is found over a run, after
    /// which the session uses no GPU leaves: [`CommitSession::commit`]); it is no
    /// defence and needs none: a leaf that is not its vector's hash makes that vector's
    /// opening fail at the verifier.
    fn commit(
        &mut self,
        bytes: Vec<u8>,
        count: usize,
        leaves: Option<Vec<commit::Hash>>,
        index: u64,
    ) -> Result<CommittedVectors, String> {
        if let Some(leaves) = leaves.filter(|l| l.len() == count && count > 0) {
            let width = bytes.len() / count;
            let i = checked_vector(index, count);
            let vector = bytes.get(i * width..(i + 1) * width).unwrap_or(&[]);
            if commit::leaf_hash(vector) == leaves[i] {
                self.gpu += 1;
                return CommittedVectors::from_leaves(bytes, count, leaves);
            }
            self.mismatches += 1;
        }
        CommittedVectors::new(bytes, count)
    }
}

impl Hashing {
    /// Commits to the vectors of an operand kept in device memory (`side`), from
    /// `leaves`, the GPU's hashes of them, when the host's hash of the checked vector
    /// (`check`, its copy) agrees. Otherwise the call cannot be committed: its vectors
    /// are not in host memory to be hashed here.
    fn device(
        &mut self,
        what: &str,
        side: &DeviceSide,
        leaves: Option<Vec<commit::Hash>>,
        check: Option<&[u8]>,
    ) -> Result<CommittedVectors, String> {
        let Some(leaves) = leaves.filter(|l| l.len() == side.count) else {
            return Err(format!(
                "{what} is kept in device memory and its leaf hashes were not computed there"
            ));
        };
        match (check, leaves.get(side.check)) {
            (Some(v), Some(leaf)) if commit::leaf_hash(v) == *leaf => {
                self.gpu += 1;
                CommittedVectors::elsewhere(side.width, side.count, leaves)
            }
            _ => {
                self.mismatches += 1;
                Err(format!(
                    "the GPU's leaf hash of vector {} of {what} disagrees with the library's own hash of it; the operand is kept in device memory, so it cannot be hashed on the host",
                    side.check
                ))
            }
        }
    }
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
            unjudged: BTreeSet::new(),
            due: BTreeSet::new(),
            held_back: BTreeMap::new(),
            dropped: BTreeSet::new(),
            leaves_distrusted: false,
            pending: Vec::new(),
            refetching: Vec::new(),
            totals: CommitTotals::default(),
        }
    }

    /// True while a committed call waits for the verifier's judgement (a challenge
    /// frame whose `through` reaches it): the stream must not end before.
    pub fn awaiting(&self) -> bool {
        !self.unjudged.is_empty() || !self.pending.is_empty() || !self.refetching.is_empty()
    }

    /// [`CommitSession::commit`] for a call as the sink receives it. When operands kept
    /// in device memory have GPU leaf hashes that disagree with the host's check (or
    /// none), the call cannot be committed from them: its device-kept vectors are copied
    /// back to host memory (one gather, on the library's own stream) and `None` is
    /// returned; [`CommitSession::poll_refetches`] commits to the call, hashed on the
    /// host, once they came. The disagreement is counted and distrusts the GPU's leaves
    /// as [`CommitSession::commit`] does.
    #[allow(clippy::too_many_arguments)]
    pub fn commit_or_refetch(
        &mut self,
        call: GemmCall,
        sample: Sample,
        table: Option<&OperandTable>,
        a_key: Option<HeldKey>,
        held: Option<(HeldA, Vec<u8>)>,
        leaves: Leaves,
        device: Option<Retained>,
    ) -> Result<Option<Record>, String> {
        let Some(d) = &device else {
            return self
                .commit(call, sample, table, a_key, held, leaves, None)
                .map(Some);
        };
        let agrees = |i: usize| {
            let Some(side) = &d.layout.sides[i] else {
                return true;
            };
            let leaf = leaves.sides[i]
                .as_ref()
                .filter(|l| l.len() == side.count && !self.leaves_distrusted)
                .and_then(|l| l.get(side.check));
            matches!((leaf, d.checks[i].as_deref()), (Some(leaf), Some(v)) if commit::leaf_hash(v) == *leaf)
        };
        let disagreeing = (0..4).filter(|&i| !agrees(i)).count() as u64;
        if disagreeing == 0 {
            return self
                .commit(call, sample, table, a_key, held, leaves, device)
                .map(Some);
        }
        if !self.leaves_distrusted {
            self.totals.leaf_mismatches += disagreeing;
        }
        self.distrust_leaves(call.index);
        let sides: [bool; 4] = std::array::from_fn(|i| d.layout.sides[i].is_some());
        let (m, n) = (call.m, call.n);
        let all: Vec<u64> = (0..m.max(n)).collect();
        let batches: Vec<u64> = (0..call.batch).collect();
        let picks: [Option<Picks>; 4] = std::array::from_fn(|i| {
            let per = if i == 0 { m } else { n };
            sides[i].then(|| Picks {
                per,
                batches: &batches,
                picks: &all[..per as usize],
            })
        });
        let Some(device) = device else {
            unreachable!("checked above")
        };
        let gather = device.open(picks).map_err(|e| {
            format!("the GPU's leaf hashes of the call disagree with the library's own, and its vectors kept in device memory could not be copied back to be hashed on the host: {e}")
        })?;
        self.refetching.push(Refetch {
            call,
            sample,
            a_key,
            held,
            sides,
            gather,
        });
        Ok(None)
    }

    /// The commitments (or "not committed" gaps) of calls whose device-kept vectors
    /// have come back to host memory since the last call ([`Self::commit_or_refetch`]),
    /// hashed here.
    pub fn poll_refetches(&mut self, table: Option<&OperandTable>) -> Vec<Record> {
        let mut done = Vec::new();
        let mut i = 0;
        while i < self.refetching.len() {
            let Some(result) = self.refetching[i].gather.poll() else {
                i += 1;
                continue;
            };
            let r = self.refetching.swap_remove(i);
            let index = r.call.index;
            let committed = result.and_then(|fetched| {
                let sample = r.with_vectors(fetched)?;
                self.commit(
                    r.call,
                    sample,
                    table,
                    r.a_key,
                    r.held,
                    Leaves::default(),
                    None,
                )
            });
            self.totals.refetched += committed.is_ok() as u64;
            done.push(committed.unwrap_or_else(|e| {
                Record::Gap(Gap {
                    indices: vec![index],
                    reason: GapReason::NotCommitted,
                    detail: e,
                })
            }));
        }
        done
    }

    /// Stops using the GPU's leaf hashes for the rest of the session (and keeping calls
    /// in device memory), with a warning the first time.
    fn distrust_leaves(&mut self, index: u64) {
        LEAVES_TRUSTED.store(false, Ordering::Relaxed);
        if !self.leaves_distrusted {
            self.leaves_distrusted = true;
            crate::log::emit(
                crate::log::Level::Warn,
                &format!("call {index}: the GPU's leaf hashes of an operand disagree with the library's own hash of one of its vectors; the rest of this session's calls are hashed on the host"),
            );
        }
    }

    /// Bytes kept.
    pub fn kept_bytes(&self) -> usize {
        self.kept_bytes
    }

    /// Commits to `sample`, the whole of `call` as gathered: returns the commitment
    /// record, and keeps the call for its opening. Operands that are rows of a tensor of
    /// `table` are bound by reference, and op(A)'s address (`a_key`) is then remembered
    /// ([`crate::held`]). With `held`, op(A) was gathered as that tensor's evidence and a
    /// spot row, which must still match it. `leaves` are the leaf hashes the GPU
    /// computed, where it did ([`Hashing::commit`]); `device`: the operands copied into
    /// device memory instead of `sample` ([`Hashing::device`]). An error says why the
    /// call cannot be committed (its data does not have the call's shape, the spot row
    /// no longer matches, or a kept-in-device operand's leaf hashes fail the check).
    #[allow(clippy::too_many_arguments)]
    pub fn commit(
        &mut self,
        call: GemmCall,
        sample: Sample,
        table: Option<&OperandTable>,
        a_key: Option<HeldKey>,
        held: Option<(HeldA, Vec<u8>)>,
        leaves: Leaves,
        device: Option<Retained>,
    ) -> Result<Record, String> {
        // A GPU whose leaf hashes disagreed once is not trusted with the session's
        // later calls: an unchecked wrong leaf would fail an honest opening.
        let leaves = if self.leaves_distrusted {
            Leaves::default()
        } else {
            leaves
        };
        let [a_leaves, b_leaves, c_leaves, d_leaves] = leaves.sides;
        let mut hashing = Hashing::default();
        // Another vector of each operand checked against the GPU's hash at every call.
        let index = call.index;
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
        // Operand `i` as kept in device memory: where, and the host's copy of the
        // vector that checks the GPU's leaf hashes.
        let kept_on_device = |i: usize| {
            let d = device.as_ref()?;
            Some((d.layout.sides[i].clone()?, d.checks[i].clone()))
        };
        let sides = (|| -> Result<_, String> {
            let mut side = |data: OperandData, dtype, count: u64, what: &str, leaves, i: usize| {
                if let Some((ds, check)) = kept_on_device(i) {
                    return hashing
                        .device(what, &ds, leaves, check.as_deref())
                        .map(KeptSide::Inline);
                }
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
                hashing
                    .commit(bytes, (batch * count) as usize, leaves, index)
                    .map(KeptSide::Inline)
            };
            let held_a = held.is_some();
            let a = match held {
                Some((h, spot)) => held_side(&call, table, h, &spot, a_rows)?,
                None => side(a_rows, call.a.dtype, m, "op(A)", a_leaves, 0)?,
            };
            // The tensor op(A) is found to be, whole or from spot rows, is remembered
            // where op(A) lies.
            if let (
                Some(key),
                KeptSide::Reference {
                    tensor, matrices, ..
                },
            ) = (a_key, &a)
            {
                crate::held::remember(
                    key,
                    HeldRef {
                        tensor: *tensor,
                        matrices: matrices.clone(),
                    },
                );
            }
            let b = side(b_cols, call.b.dtype, n, "op(B)", b_leaves, 1)?;
            let mut entries = |data: Vec<u8>, dtype, what: &str, leaves, i: usize| {
                if let Some((ds, check)) = kept_on_device(i) {
                    return hashing.device(what, &ds, leaves, check.as_deref());
                }
                let elem = dtype_size(dtype);
                fits(what, &data, batch.saturating_mul(n), m.saturating_mul(elem))?;
                let cols = columns(&data, batch as usize, m as usize, n as usize, elem as usize);
                hashing.commit(cols, (batch * n) as usize, leaves, index)
            };
            let c = if call.reads_c() {
                entries(c_in, call.c.dtype, "C", c_leaves, 2)?
            } else {
                CommittedVectors::none()
            };
            let d = entries(d_out, call.d.dtype, "D", d_leaves, 3)?;
            Ok((a, b, c, d, held_a))
        })();
        self.totals.gpu_hashed += (hashing.gpu > 0) as u64;
        self.totals.leaf_mismatches += hashing.mismatches;
        if hashing.mismatches > 0 {
            self.distrust_leaves(call.index);
        }
        let (a, b, c, d, held_a) = sides?;
        self.totals.by_address += held_a as u64;
        self.totals.on_device += device.is_some() as u64;
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
        // The entry itself and its allocations count too (what is kept in device memory
        // does not: the device ring bounds it).
        let bytes = std::mem::size_of::<Kept>()
            + KEPT_ALLOCATIONS * ALLOCATION_OVERHEAD
            + a.held_bytes()
            + b.held_bytes()
            + c.held_bytes()
            + d.held_bytes()
            + small.bias.len()
            + small.scale_rows.len()
            + small.scale_cols.len();
        self.totals.committed += 1;
        self.unjudged.insert(index);
        if bytes > self.budget {
            self.drop_call(index);
        } else {
            let old = self.kept.insert(
                index,
                Kept {
                    call,
                    a,
                    b,
                    c,
                    d,
                    small,
                    bytes,
                    device,
                },
            );
            self.kept_bytes += bytes;
            self.kept_bytes -= old.map_or(0, |o| o.bytes);
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

    /// The challenge frames `bytes` complete.
    fn frames(&mut self, bytes: &[u8]) -> Result<Vec<ChallengeFrame>, String> {
        self.reader
            .push(bytes)
            .map_err(|e| format!("challenge frame: {e}"))
    }

    /// Reads bytes from the verifier and answers the challenge frames they complete,
    /// one challenge at a time ([`CommitSession::answer`]), releasing each frame's
    /// `through`: `queue` takes each answer and says whether there is room for the next
    /// (`room`: for the first). An error (a bad frame: wrong MAC, sequence or length)
    /// ends the connection.
    pub fn answer_bytes(
        &mut self,
        bytes: &[u8],
        room: bool,
        mut queue: impl FnMut(Record) -> bool,
    ) -> Result<(), String> {
        let mut room = room;
        for frame in self.frames(bytes)? {
            for c in frame.challenges {
                if let Some(answer) = self.answer(c, room) {
                    room = queue(answer);
                }
            }
            self.release(frame.through);
        }
        Ok(())
    }

    /// The answers whose vectors have come from device memory since the last call
    /// (openings, or "not retained" gaps when the gather failed).
    pub fn poll_openings(&mut self) -> Vec<Record> {
        let mut done = Vec::new();
        let mut i = 0;
        while i < self.pending.len() {
            let Some(result) = self.pending[i].gather.poll() else {
                i += 1;
                continue;
            };
            let p = self.pending.swap_remove(i);
            done.push(match result {
                Ok(fetched) => {
                    self.totals.opened += 1;
                    Record::Opening(Box::new(p.kept.opening(&p.plan, fetched)))
                }
                Err(e) => {
                    self.totals.not_retained += 1;
                    crate::log::emit(
                        crate::log::Level::Debug,
                        &format!(
                            "challenge of call {} answered \"not retained\": {e}",
                            p.kept.call.index
                        ),
                    );
                    Record::Gap(Gap {
                        indices: vec![p.kept.call.index],
                        reason: GapReason::NotRetained,
                        detail: e,
                    })
                }
            });
        }
        done
    }

    /// [`CommitSession::answer_bytes`] with room for every answer: the records in order.
    #[cfg(test)]
    pub fn on_bytes(&mut self, bytes: &[u8]) -> Result<Vec<Record>, String> {
        let mut out = Vec::new();
        self.answer_bytes(bytes, true, |r| {
            out.push(r);
            true
        })?;
        Ok(out)
    }

    /// The answer to one challenge: its opening, or a "not retained" gap when the call
    /// is not kept, the plan does not fit it, or the opening would not fit in a frame;
    /// without `room` (the sink's buffer is full) a "sink backpressure" gap, made
    /// without building the opening. `None`: the opening's vectors are being gathered
    /// from device memory, and [`CommitSession::poll_openings`] gives it when they came.
    pub fn answer(&mut self, c: Challenge, room: bool) -> Option<Record> {
        let kept = self.kept.remove(&c.index);
        if let Some(k) = &kept {
            self.kept_bytes -= k.bytes;
        }
        let gap = |reason, detail: String| {
            Record::Gap(Gap {
                indices: vec![c.index],
                reason,
                detail,
            })
        };
        let why = match &kept {
            Some(_) if !room => {
                self.totals.not_retained += 1;
                return Some(gap(
                    GapReason::SinkBackpressure,
                    super::sink::BACKPRESSURE.into(),
                ));
            }
            Some(k) if plan_fits(&k.call, &c.plan) => {
                let len = k.opening_len(&c.plan);
                if len > MAX_OPENING as u128 {
                    format!("the opening would take {len} bytes, more than a frame holds")
                } else if k.device.is_none() {
                    self.totals.opened += 1;
                    return Some(Record::Opening(Box::new(
                        k.opening(&c.plan, Default::default()),
                    )));
                } else {
                    let mut k = kept?;
                    let picks = k.picks(&c.plan);
                    let retained = k.device.take()?;
                    match retained.open(picks) {
                        Ok(gather) => {
                            self.pending.push(PendingOpening {
                                kept: k,
                                plan: c.plan,
                                gather,
                            });
                            return None;
                        }
                        Err(e) => e,
                    }
                }
            }
            Some(_) => "the challenge's plan does not fit the call".to_string(),
            None if self.dropped.remove(&c.index) => format!(
                "dropped to keep the retained calls within MMAUDIT_RETAIN_MB ({} MiB)",
                self.budget >> 20
            ),
            None => "the library kept no data for this call".to_string(),
        };
        self.totals.not_retained += 1;
        crate::log::emit(
            crate::log::Level::Debug,
            &format!(
                "challenge of call {} answered \"not retained\": {why}",
                c.index
            ),
        );
        Some(gap(GapReason::NotRetained, why))
    }

    /// A frame's `through`: the verifier has judged every call up to it; what it did
    /// not challenge is released.
    pub fn release(&mut self, through: u64) {
        let after = through.saturating_add(1);
        let later = self.kept.split_off(&after);
        for k in std::mem::replace(&mut self.kept, later).into_values() {
            self.kept_bytes -= k.bytes;
        }
        self.dropped = self.dropped.split_off(&after);
        self.unjudged = self.unjudged.split_off(&after);
    }

    /// An auditable call of the session whose ledger record went out: its commitment
    /// (or "not committed" gap) goes out in index order ([`CommitSession::order`]).
    pub fn expect(&mut self, index: u64) {
        if self.due.len() < MAX_DUE {
            self.due.insert(index);
        }
    }

    /// A commitment or "not committed" gap of call `index`: the records that can go out
    /// now, in index order (this one, once every expected call below it has gone).
    /// Past [`MAX_HELD_BACK`] records held back behind a call that does not come, they
    /// all go, in index order (the verifier judges commitments in any order).
    pub fn order(&mut self, index: u64, record: Record) -> Vec<Record> {
        if !self.due.contains(&index) {
            return vec![record];
        }
        self.held_back.insert(index, record);
        let mut out = Vec::new();
        while let Some(&first) = self.due.first() {
            let Some(r) = self.held_back.remove(&first) else {
                break;
            };
            self.due.pop_first();
            out.push(r);
        }
        if self.held_back.len() > MAX_HELD_BACK {
            out.extend(self.flush());
        }
        out
    }

    /// Every record held back, in index order (the stream ends, or too many wait).
    pub fn flush(&mut self) -> Vec<Record> {
        let held = std::mem::take(&mut self.held_back);
        for i in held.keys() {
            self.due.remove(i);
        }
        held.into_values().collect()
    }
}

/// op(A) gathered as evidence (`first`: one element a row) and spot rows (`spot`, one
/// per batch member) of a tensor the hello offers (`h`: a probe, or the tensor found at
/// its address before): bound by reference to the tensor the spot rows are rows of,
/// the one found before if they still are (two tensors may share a row), else any
/// offered one (a buffer reused for another weight). Spot rows of no offered tensor
/// make the address forgotten and the call cannot be committed: op(A) was not gathered
/// whole.
fn held_side(
    call: &GemmCall,
    table: Option<&OperandTable>,
    h: HeldA,
    spot: &[u8],
    first: OperandData,
) -> Result<KeptSide, String> {
    let (dtype, k) = (call.a.dtype, call.k);
    let still = h.reference.filter(|r| {
        table.is_some_and(|t| t.holds(r.tensor, &r.matrices, dtype, k, h.spot_row, spot))
    });
    let batches = call.batch as usize;
    let rows = [h.spot_row];
    let reference = match (still, table) {
        (Some(r), _) => r,
        // Rows two tensors share cannot tell which one is there: the next call at the
        // address looks at another row.
        (None, Some(t)) if t.count_references(dtype, k, &rows, batches, spot) > 1 => {
            crate::held::forget(&h.key);
            return Err(format!(
                "op(A) at {:#x}: row {} is a row of more than one tensor of the verifier's hello, which cannot tell which; it cannot be committed",
                h.key.base, h.spot_row
            ));
        }
        (None, Some(t)) => match t.reference(dtype, k, &rows, batches, spot) {
            Some(OperandData::Reference {
                tensor, matrices, ..
            }) => HeldRef { tensor, matrices },
            _ => {
                crate::held::forget(&h.key);
                return Err(format!(
                    "op(A) at {:#x} is not a tensor of the verifier's hello (row {} matches none): gathered as a held tensor's evidence, it cannot be committed",
                    h.key.base, h.spot_row
                ));
            }
        },
        (None, None) => {
            crate::held::forget(&h.key);
            return Err(
                "op(A) gathered as a held tensor's evidence, but the hello offers no tensors"
                    .into(),
            );
        }
    };
    let OperandData::Inline(first) = first else {
        return Err("op(A): evidence gathered as a reference".into());
    };
    let elem = dtype_size(dtype);
    fits(
        "op(A) evidence",
        &first,
        call.batch.saturating_mul(call.m),
        elem,
    )?;
    Ok(KeptSide::Reference {
        tensor: reference.tensor,
        matrices: reference.matrices,
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

    // ---- commit mode: reconnects

    use mmaudit_protocol::call::{
        flags, BatchForm, ComputeType, DType, EntryPoint, Epilogue, Op, Operand, Order, Scalar,
    };
    use mmaudit_protocol::commit::frames::{Challenge, ChallengeWriter};

    fn test_key() -> Key {
        Key::from_bytes([7; 32])
    }

    /// A small xorshift: deterministic "random" plans without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        /// A non-empty ascending subset of 0..n.
        fn subset(&mut self, n: u64) -> Vec<u64> {
            let mut v: Vec<u64> = (0..n).filter(|_| self.next().is_multiple_of(3)).collect();
            if v.is_empty() {
                v.push(self.next() % n);
            }
            v
        }
    }

    /// A strided batched call: m x n x k, `batch` members, A/B of `ab`, C/D of `cd`.
    fn batched_call(
        index: u64,
        (m, n, k, batch): (u64, u64, u64, u64),
        ab: DType,
        cd: DType,
    ) -> GemmCall {
        let op = |dtype, ld| Operand {
            dtype,
            order: Order::Col,
            ld,
            batch_stride: 1 << 20,
        };
        GemmCall {
            index,
            entry: EntryPoint::LtMatmul,
            device: 0,
            stream: 0,
            op_a: Op::N,
            op_b: Op::N,
            m,
            n,
            k,
            batch,
            batch_form: if batch > 1 {
                BatchForm::Strided
            } else {
                BatchForm::Single
            },
            a: op(ab, m.max(1)),
            b: op(ab, k.max(1)),
            c: op(cd, m.max(1)),
            d: op(cd, m.max(1)),
            compute: ComputeType::F32,
            scale_type: DType::F32,
            alpha: Scalar::Device,
            beta: Scalar::Host(1.0),
            epilogue: Epilogue::Default,
            bias_type: DType::F32,
            flags: 0,
            replay: None,
        }
    }

    /// The whole of `call` as a commit-mode gather makes it (every byte distinct-ish).
    fn whole(call: &GemmCall) -> Sample {
        let mut counter = 0u8;
        let mut bytes = |len: u64| -> Vec<u8> {
            (0..len)
                .map(|_| {
                    counter = counter.wrapping_add(37);
                    counter
                })
                .collect()
        };
        let (m, n, k, batch) = (call.m, call.n, call.k, call.batch);
        let s = |d: DType| d.size() as u64;
        Sample {
            index: call.index,
            alpha: matches!(call.alpha, Scalar::Device).then_some(1.5),
            beta: matches!(call.beta, Scalar::Device).then_some(0.5),
            scale_a: call.has(flags::SCALE_A).then_some(2.0),
            scale_b: call.has(flags::SCALE_B).then_some(4.0),
            scale_c: None,
            scale_d: None,
            a_rows: OperandData::Inline(bytes(batch * m * k * s(call.a.dtype))),
            b_cols: OperandData::Inline(bytes(batch * n * k * s(call.b.dtype))),
            c_in: if call.reads_c() {
                bytes(batch * m * n * s(call.c.dtype))
            } else {
                Vec::new()
            },
            d_out: bytes(batch * m * n * s(call.d.dtype)),
            bias: if call.has(flags::BIAS_PER_BATCH) {
                bytes(batch * m * s(call.bias_type))
            } else if call.has(flags::BIAS) {
                bytes(m * s(call.bias_type))
            } else {
                Vec::new()
            },
            scale_rows: if call.has(flags::SCALE_A_ROWS) {
                bytes(4 * m)
            } else {
                Vec::new()
            },
            scale_cols: if call.has(flags::SCALE_B_COLS) {
                bytes(4 * n)
            } else {
                Vec::new()
            },
        }
    }

    /// Commits to `call` gathered whole, its vectors hashed on the host.
    fn commit_whole(s: &mut CommitSession, call: GemmCall) -> Result<Record, String> {
        let w = whole(&call);
        s.commit(call, w, None, None, None, Leaves::default(), None)
    }

    /// What a sampled gather of `plan` would have carried, picked from the whole.
    fn picked(call: &GemmCall, w: &Sample, plan: &Plan) -> Sample {
        let (m, n, k) = (call.m as usize, call.n as usize, call.k as usize);
        let inline = |d: &OperandData| match d {
            OperandData::Inline(b) => b.clone(),
            OperandData::Reference { .. } => unreachable!(),
        };
        let vecs = |all: &[u8], per: usize, width: usize, picks: &[u64]| -> Vec<u8> {
            let mut out = Vec::new();
            for &b in &plan.batches {
                for &x in picks {
                    let at = (b as usize * per + x as usize) * width;
                    out.extend_from_slice(&all[at..at + width]);
                }
            }
            out
        };
        let entries = |all: &[u8], es: usize| -> Vec<u8> {
            let mut out = Vec::new();
            for &b in &plan.batches {
                for &r in &plan.rows {
                    for &c in &plan.cols {
                        let at = ((b as usize * m + r as usize) * n + c as usize) * es;
                        out.extend_from_slice(&all[at..at + es]);
                    }
                }
            }
            out
        };
        let bs = call.bias_type.size();
        let bias = if call.has(flags::BIAS_PER_BATCH) {
            vecs(&w.bias, m, bs, &plan.rows)
        } else if call.has(flags::BIAS) {
            plan.rows
                .iter()
                .flat_map(|&r| w.bias[r as usize * bs..][..bs].to_vec())
                .collect()
        } else {
            Vec::new()
        };
        let pick4 = |all: &[u8], picks: &[u64]| -> Vec<u8> {
            if all.is_empty() {
                return Vec::new();
            }
            picks
                .iter()
                .flat_map(|&i| all[i as usize * 4..][..4].to_vec())
                .collect()
        };
        Sample {
            a_rows: OperandData::Inline(vecs(
                &inline(&w.a_rows),
                m,
                k * call.a.dtype.size(),
                &plan.rows,
            )),
            b_cols: OperandData::Inline(vecs(
                &inline(&w.b_cols),
                n,
                k * call.b.dtype.size(),
                &plan.cols,
            )),
            c_in: if call.reads_c() {
                entries(&w.c_in, call.c.dtype.size())
            } else {
                Vec::new()
            },
            d_out: entries(&w.d_out, call.d.dtype.size()),
            bias,
            scale_rows: pick4(&w.scale_rows, &plan.rows),
            scale_cols: pick4(&w.scale_cols, &plan.cols),
            ..w.clone()
        }
    }

    /// Commits `call` (whole), challenges it with random plans (one session per plan),
    /// and checks that each opening verifies and gives exactly the plan's entries.
    fn opens_and_verifies(call: GemmCall, seeds: u64) {
        let w = whole(&call);
        for seed in 1..=seeds {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let plan = Plan {
                rows: rng.subset(call.m),
                cols: rng.subset(call.n),
                batches: rng.subset(call.batch),
            };
            let mac = [seed as u8; MAC_LEN];
            let mut s = CommitSession::new(&test_key(), mac, 1 << 30);
            let Ok(Record::Commitment(c)) = s.commit(
                call.clone(),
                w.clone(),
                None,
                None,
                None,
                Default::default(),
                None,
            ) else {
                panic!("no commitment");
            };
            let predicted = s.kept[&call.index].opening_len(&plan);
            let frame = ChallengeWriter::new(&test_key(), mac).frame(
                call.index,
                &[Challenge {
                    index: call.index,
                    plan: plan.clone(),
                }],
            );
            let out = s.on_bytes(&frame).unwrap();
            let [Record::Opening(o)] = &out[..] else {
                panic!("{out:?}");
            };
            // The size the bound is judged by, before building: never below the real
            // one, and close to it.
            let actual = out[0].encoded_len() as u128;
            assert!(
                (actual..=actual + 1024).contains(&predicted),
                "seed {seed}: predicted {predicted}, made {actual}"
            );
            let got = o
                .verify(&call, &plan, &c.commitment)
                .unwrap_or_else(|e| panic!("seed {seed} {plan:?}: {e}"));
            got.check_shape(&call, &plan)
                .unwrap_or_else(|e| panic!("seed {seed} {plan:?}: {e}"));
            assert_eq!(got, picked(&call, &w, &plan), "seed {seed} {plan:?}");
            assert_eq!(s.kept_bytes(), 0);
            assert!(!s.awaiting());
        }
    }

    #[test]
    fn a_batched_call_reading_c_with_a_bias_per_batch_opens_and_verifies() {
        // batch 3, strided, beta = 1 in place, device alpha, a bias per batch entry;
        // element sizes differ between A/B (bf16), C/D (f16) and the bias (f32).
        let mut call = batched_call(41, (5, 3, 4, 3), DType::BF16, DType::F16);
        call.flags = flags::IN_PLACE | flags::BIAS | flags::BIAS_PER_BATCH;
        opens_and_verifies(call, 40);
    }

    #[test]
    fn fp8_rowwise_scales_batched_open_and_verify() {
        let mut call = batched_call(7, (6, 5, 3, 2), DType::F8E4M3, DType::BF16);
        call.flags = flags::SCALE_A_ROWS | flags::SCALE_B_COLS | flags::BIAS;
        call.beta = Scalar::Device;
        opens_and_verifies(call, 40);
    }

    #[test]
    fn k_zero_and_beta_zero_open_and_verify() {
        let mut call = batched_call(3, (4, 3, 0, 2), DType::F32, DType::F32);
        call.beta = Scalar::Host(0.0);
        opens_and_verifies(call.clone(), 10);
        call.k = 5;
        call.batch = 1;
        opens_and_verifies(call, 10);
    }

    /// The leaf hashes the library's leaf jobs would write for `w` (op(A) rows, op(B)
    /// columns, C and D columns), all correct.
    fn gpu_leaves(call: &GemmCall, w: &Sample) -> Leaves {
        let (m, n, batch) = (call.m as usize, call.n as usize, call.batch as usize);
        let inline = |d: &OperandData| match d {
            OperandData::Inline(b) => b.clone(),
            OperandData::Reference { .. } => unreachable!(),
        };
        let hashes = |bytes: &[u8], count: usize| -> Vec<commit::Hash> {
            bytes
                .chunks_exact(bytes.len() / count)
                .map(commit::leaf_hash)
                .collect()
        };
        let cols = |e: &[u8], d: DType| columns(e, batch, m, n, d.size());
        Leaves {
            sides: [
                Some(hashes(&inline(&w.a_rows), batch * m)),
                Some(hashes(&inline(&w.b_cols), batch * n)),
                call.reads_c()
                    .then(|| hashes(&cols(&w.c_in, call.c.dtype), batch * n)),
                Some(hashes(&cols(&w.d_out, call.d.dtype), batch * n)),
            ],
        }
    }

    /// The vector of `count` that [`Hashing::commit`] checks for `call`.
    fn checked(call: &GemmCall, count: u64) -> usize {
        checked_vector(call.index, count as usize)
    }

    #[test]
    fn correct_gpu_leaves_commit_as_host_hashing_does() {
        let call = batched_call(11, (5, 4, 3, 2), DType::BF16, DType::F16);
        let w = whole(&call);
        let mut host = CommitSession::new(&test_key(), [0; MAC_LEN], 1 << 30);
        let mut gpu = CommitSession::new(&test_key(), [0; MAC_LEN], 1 << 30);
        let h = host.commit(
            call.clone(),
            w.clone(),
            None,
            None,
            None,
            Leaves::default(),
            None,
        );
        let g = gpu.commit(
            call.clone(),
            w.clone(),
            None,
            None,
            None,
            gpu_leaves(&call, &w),
            None,
        );
        assert_eq!(h.unwrap(), g.unwrap());
        assert_eq!((gpu.totals.gpu_hashed, gpu.totals.leaf_mismatches), (1, 0));
    }

    #[test]
    fn after_one_disagreement_no_gpu_leaf_is_used_so_a_partly_wrong_gpu_fails_no_opening() {
        // An honest program on a GPU whose leaf kernel is wrong for some vectors only
        // (say, one alignment class). Call 0: every D leaf wrong, noticed, hashed on the
        // host. Call 1: one D leaf wrong, not the one checked: the session no longer
        // uses GPU leaves, so its opening verifies. (Absent the first disagreement, a
        // wrong unchecked leaf would go into the commitment: see the next test.)
        let mac = [9; MAC_LEN];
        let mut s = CommitSession::new(&test_key(), mac, 1 << 30);
        let c0 = batched_call(0, (5, 4, 3, 1), DType::F32, DType::F32);
        let w0 = whole(&c0);
        let mut l0 = gpu_leaves(&c0, &w0);
        for h in l0.sides[3].as_mut().unwrap() {
            h[0] ^= 1;
        }
        s.commit(c0.clone(), w0, None, None, None, l0, None)
            .unwrap();
        assert_eq!((s.totals.gpu_hashed, s.totals.leaf_mismatches), (1, 1));
        let c1 = batched_call(1, (5, 4, 3, 1), DType::F32, DType::F32);
        let (j, plan, commitment, opening) = one_wrong_unchecked_leaf(&mut s, &c1);
        assert_eq!(s.totals.gpu_hashed, 1, "call 1 hashed on the host");
        opening
            .verify(&c1, &plan, &commitment)
            .unwrap_or_else(|e| panic!("column {j}: {e}"));
    }

    #[test]
    fn a_wrong_leaf_the_check_misses_fails_its_opening_at_the_verifier() {
        // What the docs state: before any disagreement, a GPU wrong on a vector the
        // check does not pick commits to it, and that vector's opening fails (an honest
        // FAIL on a broken GPU, never a false PASS).
        let mut s = CommitSession::new(&test_key(), [9; MAC_LEN], 1 << 30);
        let c1 = batched_call(1, (5, 4, 3, 1), DType::F32, DType::F32);
        let (_, plan, commitment, opening) = one_wrong_unchecked_leaf(&mut s, &c1);
        assert_eq!((s.totals.gpu_hashed, s.totals.leaf_mismatches), (1, 0));
        let e = opening
            .verify(&c1, &plan, &commitment)
            .expect_err("the wrong leaf's opening fails");
        assert!(e.to_string().contains("not under its root"), "{e}");
    }

    /// Commits `call` (whole, index 1) in `s` with GPU leaves of which one D leaf, not
    /// the one checked, is wrong, and opens that column: (the column, the plan, the
    /// commitment, the opening).
    fn one_wrong_unchecked_leaf(
        s: &mut CommitSession,
        call: &GemmCall,
    ) -> (usize, Plan, commit::Hash, Opening) {
        let w = whole(call);
        let mut leaves = gpu_leaves(call, &w);
        let j = (checked(call, call.n) + 1) % call.n as usize;
        leaves.sides[3].as_mut().unwrap()[j][0] ^= 1;
        let Ok(Record::Commitment(c)) = s.commit(call.clone(), w, None, None, None, leaves, None)
        else {
            panic!("no commitment");
        };
        let plan = Plan {
            rows: vec![0],
            cols: vec![j as u64],
            batches: vec![0],
        };
        let challenge = Challenge {
            index: call.index,
            plan: plan.clone(),
        };
        let Some(Record::Opening(o)) = s.answer(challenge, true) else {
            panic!("no opening");
        };
        (j, plan, c.commitment, *o)
    }

    #[test]
    fn retention_drops_oldest_answers_not_retained_and_releases() {
        let call = |i| batched_call(i, (4, 4, 4, 1), DType::F32, DType::F32);
        // Find one call's kept size, then keep room for two.
        let mut probe = CommitSession::new(&test_key(), [0; MAC_LEN], usize::MAX);
        commit_whole(&mut probe, call(0)).unwrap();
        let one = probe.kept_bytes();
        let mac = [1; MAC_LEN];
        let mut s = CommitSession::new(&test_key(), mac, 2 * one);
        for i in 0..3 {
            commit_whole(&mut s, call(i)).unwrap();
            assert!(s.kept_bytes() <= 2 * one);
        }
        assert_eq!((s.totals.dropped, s.kept_bytes()), (1, 2 * one));
        let plan = Plan {
            rows: vec![0],
            cols: vec![1],
            batches: vec![0],
        };
        let ch = |index| Challenge {
            index,
            plan: plan.clone(),
        };
        let mut w = ChallengeWriter::new(&test_key(), mac);
        // Call 0 was dropped: "not retained", with the reason; call 1 opens; call 2 is
        // released by `through` = 2; a second challenge of call 0 (a hostile verifier)
        // gets a gap too, and nothing underflows.
        let out = s.on_bytes(&w.frame(2, &[ch(0), ch(1)])).unwrap();
        assert!(
            matches!(&out[0], Record::Gap(g) if g.reason == GapReason::NotRetained && g.detail.contains("dropped"))
        );
        assert!(matches!(&out[1], Record::Opening(_)));
        assert_eq!(s.kept_bytes(), 0);
        assert!(!s.awaiting());
        let out = s.on_bytes(&w.frame(2, &[ch(0), ch(2)])).unwrap();
        assert!(out
            .iter()
            .all(|r| matches!(r, Record::Gap(g) if g.reason == GapReason::NotRetained)));
        assert_eq!(s.kept_bytes(), 0);
        // A call larger than the whole budget is committed, not kept.
        let mut tiny = CommitSession::new(&test_key(), mac, 1);
        assert!(matches!(
            commit_whole(&mut tiny, call(0)),
            Ok(Record::Commitment(_))
        ));
        assert_eq!((tiny.kept_bytes(), tiny.totals.dropped), (0, 1));
    }

    #[test]
    fn a_small_frame_cannot_make_the_library_build_an_undeliverable_opening() {
        // A skinny batched call (k = 1): 64 x 1024 rows of op(A), 4 bytes each. Kept:
        // about 4.5 MiB (data and trees). A frame of about 9 KiB that names every row and
        // batch entry would make an opening of about 34 MiB (a 16-level path per 4-byte
        // row), more than a frame holds: the library answers with a gap, from the
        // opening's size computed before building anything.
        let call = batched_call(5, (1024, 1, 1, 64), DType::F32, DType::F32);
        let mut call = call;
        call.beta = Scalar::Host(0.0);
        let mac = [4; MAC_LEN];
        let mut s = CommitSession::new(&test_key(), mac, 1 << 30);
        commit_whole(&mut s, call.clone()).unwrap();
        let kept = s.kept_bytes();
        let plan = Plan {
            rows: (0..1024).collect(),
            cols: vec![0],
            batches: (0..64).collect(),
        };
        let frame =
            ChallengeWriter::new(&test_key(), mac).frame(5, &[Challenge { index: 5, plan }]);
        let out = s.on_bytes(&frame).unwrap();
        assert!(
            matches!(&out[..], [Record::Gap(g)] if g.reason == GapReason::NotRetained && g.detail.contains("more than a frame holds")),
            "{out:?}"
        );
        let len = out[0].encoded_len();
        assert!(
            len <= mmaudit_protocol::stream::MAX_PAYLOAD_LEN as usize,
            "a {} byte frame made a {len} byte opening ({:.1}x the {kept} bytes kept), over the {} byte frame limit",
            frame.len(),
            len as f64 / kept as f64,
            mmaudit_protocol::stream::MAX_PAYLOAD_LEN
        );
    }

    #[test]
    fn kept_bytes_count_what_a_kept_call_really_holds() {
        // MMAUDIT_RETAIN_MB bounds `kept_bytes`; a 1 x 1 x 1 call is counted by its
        // vectors and hashes only, not by the Kept entry itself (the GemmCall, the
        // BTreeMap node, the Vec headers and their allocations).
        let call = batched_call(0, (1, 1, 1, 1), DType::F32, DType::F32);
        let mut s = CommitSession::new(&test_key(), [0; MAC_LEN], 1 << 30);
        commit_whole(&mut s, call.clone()).unwrap();
        let counted = s.kept_bytes();
        let fixed = std::mem::size_of::<Kept>() + std::mem::size_of::<u64>();
        assert!(
            fixed <= counted,
            "a kept 1x1x1 call is counted as {counted} bytes; its entry alone is {fixed} bytes before any allocation"
        );
    }

    #[test]
    fn a_commitment_made_after_a_frame_that_passed_its_index_is_still_awaited() {
        // The session waits for the judgement of every call it committed, not only of
        // the highest: a call committed (made) after a frame whose `through` passed its
        // index is still awaited, so that the stream does not end before its challenge.
        let call = |i| batched_call(i, (4, 4, 4, 1), DType::F32, DType::F32);
        let mac = [2; MAC_LEN];
        let mut w = ChallengeWriter::new(&test_key(), mac);
        let mut s = CommitSession::new(&test_key(), mac, 1 << 30);
        commit_whole(&mut s, call(1)).unwrap();
        s.on_bytes(&w.frame(1, &[])).unwrap();
        assert!(!s.awaiting());
        commit_whole(&mut s, call(0)).unwrap();
        assert!(
            s.awaiting(),
            "call 0 was committed after the last frame: its judgement is still to come"
        );
    }

    #[test]
    fn commitments_go_out_in_index_order_whatever_order_they_are_made_in() {
        // Gathers complete in any order; the verifier wants commitments in index order.
        let call = |i| batched_call(i, (4, 4, 4, 1), DType::F32, DType::F32);
        let mut s = CommitSession::new(&test_key(), [6; MAC_LEN], 1 << 30);
        for i in 0..4 {
            s.expect(i);
        }
        let made = |s: &mut CommitSession, i: u64| {
            let r = commit_whole(s, call(i)).unwrap();
            s.order(i, r)
                .iter()
                .map(|r| match r {
                    Record::Commitment(c) => c.index,
                    Record::Gap(g) => 100 + g.indices[0],
                    other => panic!("{other:?}"),
                })
                .collect::<Vec<u64>>()
        };
        assert_eq!(made(&mut s, 2), Vec::<u64>::new(), "waits for 0 and 1");
        assert_eq!(made(&mut s, 1), Vec::<u64>::new(), "waits for 0");
        assert_eq!(made(&mut s, 0), vec![0, 1, 2]);
        // A "not committed" gap takes its place in the order like a commitment.
        let gap = Record::Gap(Gap {
            indices: vec![3],
            reason: GapReason::NotCommitted,
            detail: "test".into(),
        });
        assert_eq!(s.order(3, gap).len(), 1);
        // A call never expected (not auditable, another session) goes at once.
        assert_eq!(made(&mut s, 9), vec![9]);
        // Behind a call that never comes, at most MAX_HELD_BACK wait; then all go, in
        // index order.
        s.expect(10);
        for i in 11..11 + MAX_HELD_BACK as u64 {
            s.expect(i);
            let r = Record::Commitment(Commitment {
                index: i,
                commitment: [0; 32],
            });
            assert!(s.order(i, r).is_empty(), "{i}");
        }
        let i = 11 + MAX_HELD_BACK as u64;
        s.expect(i);
        let out = s.order(
            i,
            Record::Commitment(Commitment {
                index: i,
                commitment: [0; 32],
            }),
        );
        let indices: Vec<u64> = out
            .iter()
            .map(|r| match r {
                Record::Commitment(c) => c.index,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(indices, (11..=i).collect::<Vec<u64>>());
        assert!(s.flush().is_empty());
    }
}
