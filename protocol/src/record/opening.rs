//! The records of commit mode (docs/COMMIT.md): a call's commitment, sent for every
//! auditable call before any challenge for it exists, and the opening of a challenged
//! call, checked against that commitment by [`Opening::verify`].
//!
//! The decoder checks structure only, as for every record; whether the vectors and paths
//! fit the call and the plan, and whether they hash to the commitment, is
//! [`Opening::verify`]'s question.

use super::{present, read_blob, read_reference, write_reference, OperandData, Sample, Scalars};
use crate::call::{flags, GemmCall};
use crate::codec::{DecodeError, Reader, Writer};
use crate::commit::{self, CallBinding, Hash, Side, Tree};
use crate::schedule::Plan;

/// A call's commitment (record tag 6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commitment {
    /// the call's index
    pub index: u64,
    /// [`commit::call_commitment`] of the call
    pub commitment: Hash,
}

/// Vectors of one operand as opened: the operand's root, the plan's vectors in order
/// `[batch entry][vector]`, and each one's audit path (`depth` hashes each).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenedVectors {
    /// the root the commitment holds
    pub root: Hash,
    /// the vectors' bytes, back to back
    pub vectors: Vec<u8>,
    /// the audit paths, back to back, 32 bytes a hash
    pub paths: Vec<u8>,
}

/// How op(A) or op(B) is opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpenedSide {
    /// committed by its root: the plan's vectors with their paths
    Inline(OpenedVectors),
    /// committed as rows of a tensor the verifier holds
    Reference {
        /// the hello's tensor id
        tensor: u32,
        /// the matrix of each batch member (all of them, as committed; empty for a 2-D
        /// tensor)
        matrices: Vec<u32>,
        /// the first element of each plan vector, `[batch entry][vector]`, as a sample's
        /// reference carries it
        evidence: Vec<u8>,
    },
}

/// What an opening carries whole: device-side scalars, the bias vector(s) and the
/// per-row and per-column scales, encoded as a sample's presence byte, scalars and
/// blobs. Its BLAKE3 hash is part of the commitment.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct SmallData {
    /// device-side alpha
    pub alpha: Option<f64>,
    /// device-side beta
    pub beta: Option<f64>,
    /// scale of A
    pub scale_a: Option<f32>,
    /// scale of B
    pub scale_b: Option<f32>,
    /// scale of C
    pub scale_c: Option<f32>,
    /// scale of D
    pub scale_d: Option<f32>,
    /// the whole bias: m elements, or m per batch member with BIAS_PER_BATCH
    pub bias: Vec<u8>,
    /// A's scale of every row (m f32), with SCALE_A_ROWS
    pub scale_rows: Vec<u8>,
    /// B's scale of every column (n f32), with SCALE_B_COLS
    pub scale_cols: Vec<u8>,
}

/// The opening of a challenged call (record tag 7).
#[derive(Clone, Debug, PartialEq)]
pub struct Opening {
    /// the call's index
    pub index: u64,
    /// op(A): the plan's rows
    pub a: OpenedSide,
    /// op(B): the plan's columns
    pub b: OpenedSide,
    /// C before the call: the plan's columns (m entries each); no vectors when beta is 0
    pub c: OpenedVectors,
    /// D after the call: the plan's columns
    pub d: OpenedVectors,
    /// the small data
    pub small: SmallData,
}

const SIDE_INLINE: u8 = 0;
const SIDE_REFERENCE: u8 = 1;

impl SmallData {
    fn scalars(&self) -> Scalars {
        Scalars {
            alpha: self.alpha,
            beta: self.beta,
            scales: [self.scale_a, self.scale_b, self.scale_c, self.scale_d],
        }
    }

    /// The encoding, as an opening carries it and as the commitment hashes it.
    pub fn encode(&self, w: &mut Writer) {
        let scalars = self.scalars();
        let p = scalars.presence(!self.scale_rows.is_empty() || !self.scale_cols.is_empty());
        w.u8(p);
        scalars.encode(w);
        w.bytes(&self.bias);
        if p & present::VECTOR_SCALES != 0 {
            w.bytes(&self.scale_rows);
            w.bytes(&self.scale_cols);
        }
    }

    /// BLAKE3 of the encoding: what [`CallBinding::small`] holds.
    pub fn hash(&self) -> Hash {
        let mut w = Writer::new();
        self.encode(&mut w);
        *blake3::hash(&w.buf).as_bytes()
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let what = "opening record: small data";
        let (p, sc) = Scalars::decode(r, what)?;
        let bias = read_blob(r, what)?;
        let at = r.offset();
        let (scale_rows, scale_cols) = if p & present::VECTOR_SCALES != 0 {
            (read_blob(r, what)?, read_blob(r, what)?)
        } else {
            (Vec::new(), Vec::new())
        };
        // One encoding per value: the commitment hashes the canonical one.
        if p & present::VECTOR_SCALES != 0 && scale_rows.is_empty() && scale_cols.is_empty() {
            return Err(r.error_at(at, what, "vector scales announced, none sent"));
        }
        let [scale_a, scale_b, scale_c, scale_d] = sc.scales;
        Ok(SmallData {
            alpha: sc.alpha,
            beta: sc.beta,
            scale_a,
            scale_b,
            scale_c,
            scale_d,
            bias,
            scale_rows,
            scale_cols,
        })
    }
}

/// The prover's side of one operand: its vectors as committed (`[batch member][vector]`,
/// all of the same width, back to back) and the tree over their leaf hashes, kept until
/// the challenge says which to open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedVectors {
    bytes: Vec<u8>,
    width: usize,
    tree: Tree,
}

impl CommittedVectors {
    /// Commits to `count` vectors of equal width, back to back in `bytes` (hashing each
    /// and building the tree). An error when the bytes do not split into `count`.
    pub fn new(bytes: Vec<u8>, count: usize) -> Result<Self, String> {
        let width = Self::width(&bytes, count)?;
        let leaves = (0..count)
            .map(|i| commit::leaf_hash(&bytes[i * width..][..width]))
            .collect();
        Ok(CommittedVectors {
            bytes,
            width,
            tree: Tree::new(leaves),
        })
    }

    /// Commits to `count` vectors of equal width, back to back in `bytes`, whose leaf
    /// hashes were computed elsewhere (on the GPU): only the tree is built here. An
    /// error when the bytes do not split into `count` or `leaves` are not `count`
    /// hashes. Nothing checks that `leaves` are the vectors' hashes: a wrong one makes
    /// the openings of its vector fail at the verifier.
    pub fn from_leaves(bytes: Vec<u8>, count: usize, leaves: Vec<Hash>) -> Result<Self, String> {
        let width = Self::width(&bytes, count)?;
        if leaves.len() != count {
            return Err(format!("{} leaf hashes for {count} vectors", leaves.len()));
        }
        Ok(CommittedVectors {
            bytes,
            width,
            tree: Tree::new(leaves),
        })
    }

    /// Commits to `count` vectors of `width` bytes kept elsewhere (in GPU memory), from
    /// their leaf hashes: only the tree is built and kept here, and an opening brings
    /// its vectors ([`CommittedVectors::open_with`]). An error when `leaves` are not
    /// `count` hashes.
    pub fn elsewhere(width: usize, count: usize, leaves: Vec<Hash>) -> Result<Self, String> {
        if leaves.len() != count {
            return Err(format!("{} leaf hashes for {count} vectors", leaves.len()));
        }
        Ok(CommittedVectors {
            bytes: Vec::new(),
            width,
            tree: Tree::new(leaves),
        })
    }

    /// The width of each of `count` vectors back to back in `bytes`.
    fn width(bytes: &[u8], count: usize) -> Result<usize, String> {
        match (count, bytes.len()) {
            (0, 0) => Ok(0),
            (0, len) => Err(format!("{len} bytes for no vectors")),
            (count, len) if len % count == 0 => Ok(len / count),
            (count, len) => Err(format!("{len} bytes do not split into {count} vectors")),
        }
    }

    /// No vectors (C when beta is zero).
    pub fn none() -> Self {
        CommittedVectors {
            bytes: Vec::new(),
            width: 0,
            tree: Tree::new(Vec::new()),
        }
    }

    /// The root the commitment holds.
    pub fn root(&self) -> Hash {
        self.tree.root()
    }

    /// Vector `i` (empty when out of range).
    pub fn vector(&self, i: usize) -> &[u8] {
        self.bytes
            .get(i * self.width..(i + 1) * self.width)
            .unwrap_or(&[])
    }

    /// Bytes held: the vectors and the tree.
    pub fn held_bytes(&self) -> usize {
        self.bytes.len() + 32 * self.tree.hashes()
    }

    /// [`CommittedVectors::open`] of vectors kept elsewhere: `vectors` are the opened
    /// vectors, `[batch][pick]`, as fetched from where they are kept; the paths come
    /// from the tree.
    pub fn open_with(
        &self,
        per: u64,
        batches: &[u64],
        picks: &[u64],
        vectors: Vec<u8>,
    ) -> OpenedVectors {
        let mut out = self.open(per, batches, picks);
        out.vectors = vectors;
        out
    }

    /// The opening at the plan's batch entries `batches` and indices `picks` (`per`
    /// vectors a batch member), each vector with its audit path.
    pub fn open(&self, per: u64, batches: &[u64], picks: &[u64]) -> OpenedVectors {
        let mut out = OpenedVectors {
            root: self.root(),
            vectors: Vec::new(),
            paths: Vec::new(),
        };
        for &b in batches {
            for &x in picks {
                let leaf = (b * per + x) as usize;
                out.vectors.extend_from_slice(self.vector(leaf));
                for h in self.tree.path(leaf).unwrap_or_default() {
                    out.paths.extend_from_slice(&h);
                }
            }
        }
        out
    }
}

impl OpenedVectors {
    fn encode(&self, w: &mut Writer) {
        w.raw(&self.root);
        w.bytes(&self.vectors);
        w.bytes(&self.paths);
    }

    fn decode(r: &mut Reader<'_>, what: &'static str) -> Result<Self, DecodeError> {
        let root = r.array(what)?;
        let vectors = read_blob(r, what)?;
        let at = r.offset();
        let paths = read_blob(r, what)?;
        if !paths.len().is_multiple_of(32) {
            return Err(r.error_at(
                at,
                what,
                format!(
                    "{} bytes of paths are not whole 32-byte hashes",
                    paths.len()
                ),
            ));
        }
        Ok(OpenedVectors {
            root,
            vectors,
            paths,
        })
    }

    /// Checks that the vectors are `count` of `width` bytes, each proven by its path at
    /// leaf `leaf(i)` of a tree of `leaves`.
    fn verify(
        &self,
        name: &str,
        width: u64,
        count: usize,
        leaves: u64,
        leaf: impl Fn(usize) -> u64,
    ) -> Result<(), String> {
        // Every leaf of a tree of two or more leaves has a path of at least one hash, and
        // a tree of one leaf or none has at most one leaf: so the work below is bounded by
        // the bytes received, whatever the plan's size.
        if (leaves <= 1 && count > 1)
            || (leaves > 1 && count as u128 > (self.paths.len() / 32) as u128)
        {
            return Err(format!(
                "opening of {name}: {} bytes of paths cannot prove {count} vectors",
                self.paths.len()
            ));
        }
        let hashes: u64 = (0..count).map(|i| commit::path_len(leaf(i), leaves)).sum();
        let want = width as u128 * count as u128;
        if self.vectors.len() as u128 != want || self.paths.len() as u128 != hashes as u128 * 32 {
            return Err(format!(
                "opening of {name}: {} bytes of vectors and {} of paths, the plan needs {want} and {}",
                self.vectors.len(),
                self.paths.len(),
                hashes as u128 * 32
            ));
        }
        let mut at = 0;
        for i in 0..count {
            let v = &self.vectors[i * width as usize..][..width as usize];
            let len = commit::path_len(leaf(i), leaves) as usize * 32;
            let path: Vec<Hash> = self.paths[at..at + len]
                .chunks_exact(32)
                .map(|h| h.try_into().expect("32-byte chunk"))
                .collect();
            at += len;
            if !commit::verify_path(&self.root, &commit::leaf_hash(v), leaf(i), leaves, &path) {
                return Err(format!(
                    "opening does not match the commitment: vector {} of {name} (leaf {} of {leaves}) is not under its root",
                    i,
                    leaf(i)
                ));
            }
        }
        Ok(())
    }
}

impl OpenedSide {
    fn encode(&self, w: &mut Writer) {
        match self {
            OpenedSide::Inline(v) => {
                w.u8(SIDE_INLINE);
                v.encode(w);
            }
            OpenedSide::Reference {
                tensor,
                matrices,
                evidence,
            } => {
                w.u8(SIDE_REFERENCE);
                write_reference(w, *tensor, matrices, evidence);
            }
        }
    }

    fn decode(r: &mut Reader<'_>, what: &'static str) -> Result<Self, DecodeError> {
        let at = r.offset();
        match r.u8(what)? {
            SIDE_INLINE => Ok(OpenedSide::Inline(OpenedVectors::decode(r, what)?)),
            SIDE_REFERENCE => {
                let (tensor, matrices, evidence) = read_reference(r, what)?;
                Ok(OpenedSide::Reference {
                    tensor,
                    matrices,
                    evidence,
                })
            }
            t => Err(r.error_at(at, what, format!("unknown side kind {t}"))),
        }
    }

    /// The side as the commitment binds it.
    pub fn side(&self) -> Side {
        match self {
            OpenedSide::Inline(v) => Side::Inline(v.root),
            OpenedSide::Reference {
                tensor, matrices, ..
            } => Side::Reference {
                tensor: *tensor,
                matrices: matrices.clone(),
            },
        }
    }
}

impl Commitment {
    pub(super) fn encode_body(&self, w: &mut Writer) {
        w.u64(self.index);
        w.raw(&self.commitment);
    }

    pub(super) fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Commitment {
            index: r.u64("commitment record: call index")?,
            commitment: r.array("commitment record: commitment")?,
        })
    }
}

impl Opening {
    pub(super) fn encode_body(&self, w: &mut Writer) {
        w.u64(self.index);
        self.a.encode(w);
        self.b.encode(w);
        self.c.encode(w);
        self.d.encode(w);
        self.small.encode(w);
    }

    pub(super) fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Opening {
            index: r.u64("opening record: call index")?,
            a: OpenedSide::decode(r, "opening record: op(A)")?,
            b: OpenedSide::decode(r, "opening record: op(B)")?,
            c: OpenedVectors::decode(r, "opening record: C")?,
            d: OpenedVectors::decode(r, "opening record: D")?,
            small: SmallData::decode(r)?,
        })
    }

    /// What the opening says the call was bound to.
    pub fn binding(&self) -> CallBinding {
        CallBinding {
            a: self.a.side(),
            b: self.b.side(),
            c: self.c.root,
            d: self.d.root,
            small: self.small.hash(),
        }
    }

    /// Checks the opening of `call`, challenged with `plan`, against `commitment`: the
    /// sides, roots and small data hash to it, and every opened vector is under its root
    /// at the plan's position. Then returns the sample record the same data makes, for
    /// the arithmetic check. An error names what does not match.
    pub fn verify(
        &self,
        call: &GemmCall,
        plan: &Plan,
        commitment: &Hash,
    ) -> Result<Sample, String> {
        if commit::call_commitment(call, &self.binding()) != *commitment {
            return Err("opening does not match the commitment: the sides, roots or small data differ from what was committed".into());
        }
        let size = |d: crate::call::DType| d.size() as u64;
        let (e, r, s) = (plan.batches.len(), plan.rows.len(), plan.cols.len());
        let rows_leaf = |i: usize| plan.batches[i / r] * call.m + plan.rows[i % r];
        let cols_leaf = |i: usize| plan.batches[i / s] * call.n + plan.cols[i % s];
        let (Some(batch_m), Some(batch_n)) = (
            call.batch.checked_mul(call.m),
            call.batch.checked_mul(call.n),
        ) else {
            return Err(format!(
                "opening of a call of batch {} x m {} or x n {}: more leaves than 2^64",
                call.batch, call.m, call.n
            ));
        };
        let side =
            |o: &OpenedSide, name: &str, width, count, leaves, leaf: &dyn Fn(usize) -> u64| match o
            {
                OpenedSide::Inline(v) => v
                    .verify(name, width, count, leaves, leaf)
                    .map(|()| OperandData::Inline(v.vectors.clone())),
                OpenedSide::Reference {
                    tensor,
                    matrices,
                    evidence,
                } => {
                    if !matrices.is_empty() && matrices.len() as u64 != call.batch {
                        return Err(format!(
                            "opening of {name}: a reference names {} matrices for {} batch members",
                            matrices.len(),
                            call.batch
                        ));
                    }
                    Ok(OperandData::Reference {
                        tensor: *tensor,
                        matrices: plan
                            .batches
                            .iter()
                            .map(|&b| matrices.get(b as usize).copied().unwrap_or(0))
                            .collect(),
                        evidence: evidence.clone(),
                    })
                }
            };
        let a_rows = side(
            &self.a,
            "op(A)",
            call.k * size(call.a.dtype),
            e * r,
            batch_m,
            &rows_leaf,
        )?;
        let b_cols = side(
            &self.b,
            "op(B)",
            call.k * size(call.b.dtype),
            e * s,
            batch_n,
            &cols_leaf,
        )?;
        let column = |v: &OpenedVectors, name: &str, dtype| -> Result<Vec<u8>, String> {
            let width = call.m * size(dtype);
            v.verify(name, width, e * s, batch_n, cols_leaf)?;
            // The plan's entries, [batch][row][col], from columns [batch][col].
            let es = size(dtype) as usize;
            let mut out = Vec::with_capacity(e * r * s * es);
            for bi in 0..e {
                for &row in &plan.rows {
                    for ci in 0..s {
                        let col = &v.vectors[(bi * s + ci) * width as usize..][..width as usize];
                        out.extend_from_slice(&col[row as usize * es..][..es]);
                    }
                }
            }
            Ok(out)
        };
        let c_in = if call.reads_c() {
            column(&self.c, "C", call.c.dtype)?
        } else {
            if !self.c.vectors.is_empty() || self.c.root != commit::tree_root(&[]) {
                return Err(
                    "opening of C: beta is zero, yet C is opened or its root is not the empty tree"
                        .into(),
                );
            }
            Vec::new()
        };
        let d_out = column(&self.d, "D", call.d.dtype)?;
        let sm = &self.small;
        let pick = |bytes: &[u8],
                    name: &str,
                    vectors: u64,
                    len: u64,
                    es: usize,
                    picks: &mut dyn Iterator<Item = (u64, u64)>|
         -> Result<Vec<u8>, String> {
            if bytes.is_empty() {
                return Ok(Vec::new());
            }
            if bytes.len() as u128 != vectors as u128 * len as u128 * es as u128 {
                return Err(format!(
                    "opening: {name} has {} bytes, the call needs {}",
                    bytes.len(),
                    vectors as u128 * len as u128 * es as u128
                ));
            }
            Ok(picks
                .flat_map(|(v, i)| bytes[((v * len + i) as usize) * es..][..es].to_vec())
                .collect())
        };
        let per_batch = call.has(flags::BIAS_PER_BATCH);
        let bias_vectors = if per_batch { call.batch } else { 1 };
        let bias_picks: Vec<(u64, u64)> = if per_batch {
            plan.batches
                .iter()
                .flat_map(|&b| plan.rows.iter().map(move |&r| (b, r)))
                .collect()
        } else {
            plan.rows.iter().map(|&r| (0, r)).collect()
        };
        let bias = pick(
            &sm.bias,
            "the bias",
            bias_vectors,
            call.m,
            call.bias_type.size(),
            &mut bias_picks.into_iter(),
        )?;
        let scale_rows = pick(
            &sm.scale_rows,
            "the row scales",
            1,
            call.m,
            4,
            &mut plan.rows.iter().map(|&r| (0, r)),
        )?;
        let scale_cols = pick(
            &sm.scale_cols,
            "the column scales",
            1,
            call.n,
            4,
            &mut plan.cols.iter().map(|&c| (0, c)),
        )?;
        Ok(Sample {
            index: self.index,
            alpha: sm.alpha,
            beta: sm.beta,
            scale_a: sm.scale_a,
            scale_b: sm.scale_b,
            scale_c: sm.scale_c,
            scale_d: sm.scale_d,
            a_rows,
            b_cols,
            c_in,
            d_out,
            bias,
            scale_rows,
            scale_cols,
        })
    }
}
