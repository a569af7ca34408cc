//! Weight identity: which named tensor of the model files the verifier holds a sampled
//! GEMM took an operand from.
//!
//! The auditor passes safetensors files (`check --weights`). They are mapped, not read:
//! loading parses each file's header only, and matching touches only the pages that
//! hold the sampled rows and columns. Every 2-D tensor `W` of shape (R, C), and every
//! 3-D tensor of shape (E, R, C) as E stacked matrices, is indexed under
//! (dtype, outer dimension, k) in both orientations. A sampled vector `x` of length k
//! (row x of op(A), or column x of op(B)) is either row x of W (outer = R, k = C: an
//! `nn.Linear` weight on the A side) or column x of W (outer = C, k = R). A sample
//! matches a tensor when every sampled vector of one operand equals the tensor's
//! element for element, bit for bit, at the plan's indices.
//!
//! Live sessions add references: the verifier's hello lists the indexed tensors by id
//! (sorted by name, [`WeightRegistry::id_of`]) with a keyed fingerprint of every stored
//! row ([`WeightRegistry::hello_tensors`]), and a prover may then name a tensor instead
//! of sending rows. [`WeightRegistry::resolve`] checks such a reference against the held
//! copy and returns the held rows, from which the arithmetic is then recomputed.
//!
//! This module must never read a whole file into memory (fingerprinting streams through
//! the mapping once), never write to a mapped file, and never take the prover's word for
//! which tensor was used: inline operands are compared bit for bit, references are
//! replaced by the held rows they name. It judges identity only; the arithmetic is
//! judged by `recompute`, independently.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use memmap2::Mmap;
use mmaudit_protocol::call::{DType, GemmCall};
use mmaudit_protocol::handshake::{self, HelloTensor};
use mmaudit_protocol::keys::Key;
use mmaudit_protocol::schedule::Plan;
use safetensors::tensor::Dtype as StDtype;
use safetensors::SafeTensors;

/// Which operand of a GEMM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// op(A): the sampled vectors are rows, indexed by the plan's rows of C
    A,
    /// op(B): the sampled vectors are columns, indexed by the plan's columns of C
    B,
}

/// How a sampled vector `x` sits in a weight matrix `W`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Orientation {
    /// vector x is `W[x, :]`: op(A) = W (an `nn.Linear` weight), or op(B) = W^T
    Rows,
    /// vector x is `W[:, x]`: op(A) = W^T, or op(B) = W
    Cols,
}

/// Which matrix of a tensor a call's batch entries used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Slice {
    /// a 2-D tensor, shared by every batch entry
    Whole,
    /// a 3-D tensor: batch entry b used matrix b
    PerBatch,
    /// a 3-D tensor: this single matrix (a call with one batch entry)
    Fixed(u64),
}

/// One operand of a sampled call that equals a held tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SideMatch {
    /// which operand
    pub side: Side,
    /// the tensor's name in its file
    pub tensor: String,
    /// how the operand sits in the tensor
    pub orientation: Orientation,
    /// which matrix of the tensor
    pub slice: Slice,
}

impl SideMatch {
    /// How the operand relates to the tensor, e.g. `op(A) = W` or `op(B)[b] = W[b]^T`.
    pub fn form(&self) -> String {
        form(self.side, self.orientation, self.slice)
    }
}

/// The held tensor of the right shape and type that came closest to an unmatched operand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NearMiss {
    /// the operand and tensor compared
    pub at: SideMatch,
    /// sampled elements that differ from the tensor's
    pub differing: u64,
    /// sampled elements compared
    pub compared: u64,
}

/// What the registry found for one sampled call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// One or both operands equal a held tensor (A first).
    Matched(Vec<SideMatch>),
    /// Neither operand equals a held tensor.
    Unmatched(Unmatched),
}

/// Why a sampled call matched no held tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unmatched {
    /// Held tensors whose shape and type fit op(A), and op(B), in either orientation.
    pub candidates: [u64; 2],
    /// The candidate with the fewest differing elements, when asked for and one exists.
    pub closest: Option<NearMiss>,
}

impl Unmatched {
    /// Whether some held tensor of the right shape and type differed (as opposed to no
    /// tensor of that shape at all).
    pub fn had_candidates(&self) -> bool {
        self.candidates.iter().any(|&c| c > 0)
    }
}

/// How an operand relates to a tensor, in the notation of the reports.
pub fn form(side: Side, orientation: Orientation, slice: Slice) -> String {
    let op = match side {
        Side::A => "op(A)",
        Side::B => "op(B)",
    };
    // op(A) = W when op(A)'s rows are W's rows; op(B) = W when op(B)'s columns are W's.
    let transposed = match (side, orientation) {
        (Side::A, Orientation::Rows) | (Side::B, Orientation::Cols) => "",
        _ => "^T",
    };
    match slice {
        Slice::Whole => format!("{op} = W{transposed}"),
        Slice::PerBatch => format!("{op}[b] = W[b]{transposed}"),
        Slice::Fixed(e) => format!("{op} = W[{e}]{transposed}"),
    }
}

/// The protocol's element type for a safetensors dtype, if the verifier can match it.
fn protocol_dtype(d: StDtype) -> Option<DType> {
    Some(match d {
        StDtype::F32 => DType::F32,
        StDtype::F16 => DType::F16,
        StDtype::BF16 => DType::BF16,
        StDtype::F8_E4M3 => DType::F8E4M3,
        StDtype::F8_E5M2 => DType::F8E5M2,
        StDtype::I8 => DType::I8,
        _ => return None,
    })
}

struct Tensor {
    name: String,
    /// index into `WeightRegistry::files`
    file: usize,
    dtype: DType,
    /// byte offset of the data in the file (and so in its mapping)
    offset: usize,
    slices: u64,
    rows: u64,
    cols: u64,
}

#[derive(Clone, Copy)]
struct Candidate {
    tensor: usize,
    orientation: Orientation,
}

struct MappedFile {
    path: PathBuf,
    map: Mmap,
}

/// The weights a stream is judged against, and whether an unmatched call fails it.
#[derive(Clone, Debug)]
pub struct WeightPolicy {
    /// the tensors held
    pub registry: std::sync::Arc<WeightRegistry>,
    /// every sampled call must take an operand from a held tensor (`--require-weights`)
    pub required: bool,
}

/// The tensors of the safetensors files the verifier holds, indexed for matching.
///
/// Shared read-only between streams (it is `Send + Sync`).
pub struct WeightRegistry {
    files: Vec<MappedFile>,
    tensors: Vec<Tensor>,
    /// tensor id (the hello table's, [`WeightRegistry::id_of`]) -> index into `tensors`:
    /// the indexed tensors sorted by name
    by_id: Vec<usize>,
    /// (dtype, outer dimension, k) -> tensors that fit, with their orientation
    index: HashMap<(DType, u64, u64), Vec<Candidate>>,
    notes: Vec<String>,
}

/// One operand of a sample, as the registry compares it.
struct Operand<'s> {
    side: Side,
    dtype: DType,
    /// m for op(A), n for op(B)
    outer: u64,
    k: usize,
    /// the plan's rows (op(A)) or columns (op(B))
    indices: &'s [u64],
    /// `[batch][index][k]` elements of `dtype`
    bytes: &'s [u8],
}

impl WeightRegistry {
    /// Maps each safetensors file and indexes its 2-D and 3-D tensors.
    ///
    /// Fails, naming the file, when a file is missing, unreadable, not a safetensors
    /// file, or holds a tensor whose name another file also holds. Tensors of types the
    /// verifier does not match (I64, U8, ...) are skipped with a note ([`Self::notes`]).
    pub fn load<P: AsRef<Path>>(paths: &[P]) -> Result<Self> {
        let mut registry = WeightRegistry {
            files: Vec::new(),
            tensors: Vec::new(),
            by_id: Vec::new(),
            index: HashMap::new(),
            notes: Vec::new(),
        };
        let mut owner: HashMap<String, usize> = HashMap::new();
        for path in paths {
            registry.load_file(path.as_ref(), &mut owner)?;
        }
        // Ids: the indexed tensors sorted by name (unique across files), so that every
        // verifier given the same files numbers them alike (docs/PROTOCOL.md).
        let mut by_id: Vec<usize> = (0..registry.tensors.len()).collect();
        by_id.sort_by(|&a, &b| registry.tensors[a].name.cmp(&registry.tensors[b].name));
        registry.by_id = by_id;
        if registry.tensors.is_empty() {
            let names: Vec<String> = registry
                .files
                .iter()
                .map(|f| f.path.display().to_string())
                .collect();
            bail!(
                "{} holds no 2-D or 3-D tensor of a type the verifier matches (f32, f16, bf16, F8_E4M3, F8_E5M2, i8)",
                names.join(", ")
            );
        }
        Ok(registry)
    }

    fn load_file(&mut self, path: &Path, owner: &mut HashMap<String, usize>) -> Result<()> {
        let name = path.display().to_string();
        let meta = std::fs::metadata(path).with_context(|| format!("cannot read {name}"))?;
        if meta.is_dir() {
            bail!("{name} is a directory, not a safetensors file");
        }
        let file = File::open(path).with_context(|| format!("cannot open {name}"))?;
        // SAFETY: Mmap::map is unsafe because Rust requires the bytes behind the `&[u8]`
        // it yields not to change while borrowed, which the OS does not enforce for a
        // file mapping. The mapping is read-only, private to the registry (no reference
        // to it outlives a method call), and the weights files are the auditor's own
        // read-only inputs, which nothing rewrites while a check runs; that is the
        // invariant the caller keeps, stated in `check --help`'s description of
        // --weights. (A truncation during a check would raise SIGBUS, not corrupt memory.)
        let map = unsafe { Mmap::map(&file) }.with_context(|| format!("cannot map {name}"))?;
        if map.starts_with(b"MMAUDIT\0") {
            bail!("{name} is an mmaudit capture, not a safetensors file (put capture files before --weights)");
        }
        let (header_len, metadata) = SafeTensors::read_metadata(&map)
            .map_err(|e| anyhow!("{name} is not a safetensors file: {e}"))?;
        let data_start = 8 + header_len;
        let file_index = self.files.len();
        let mut listed: Vec<(String, &safetensors::tensor::TensorInfo)> =
            metadata.tensors().into_iter().collect();
        listed.sort_by(|a, b| a.0.cmp(&b.0));
        let mut skipped: HashMap<String, Vec<String>> = HashMap::new();
        for (tensor, info) in listed {
            if let Some(&other) = owner.get(&tensor) {
                bail!(
                    "tensor {tensor} is in both {} and {name}: each tensor name must be in one file only",
                    self.files[other].path.display()
                );
            }
            owner.insert(tensor.clone(), file_index);
            let (slices, rows, cols) = match info.shape[..] {
                [r, c] => (1, r, c),
                [e, r, c] => (e, r, c),
                _ => continue, // vectors (norms, biases) and scalars are not GEMM operands
            };
            let Some(dtype) = protocol_dtype(info.dtype) else {
                skipped
                    .entry(format!("{:?}", info.dtype))
                    .or_default()
                    .push(tensor);
                continue;
            };
            if slices == 0 || rows == 0 || cols == 0 {
                continue;
            }
            let t = self.tensors.len();
            let (rows, cols) = (rows as u64, cols as u64);
            for (outer, k, orientation) in [
                (rows, cols, Orientation::Rows),
                (cols, rows, Orientation::Cols),
            ] {
                self.index
                    .entry((dtype, outer, k))
                    .or_default()
                    .push(Candidate {
                        tensor: t,
                        orientation,
                    });
            }
            self.tensors.push(Tensor {
                name: tensor,
                file: file_index,
                dtype,
                offset: data_start + info.data_offsets.0,
                slices: slices as u64,
                rows,
                cols,
            });
        }
        let mut skipped: Vec<_> = skipped.into_iter().collect();
        skipped.sort();
        for (dtype, names) in skipped {
            self.notes.push(format!(
                "{name}: {} {dtype} tensor{} skipped (type not matched), e.g. {}",
                names.len(),
                if names.len() == 1 { "" } else { "s" },
                names[0]
            ));
        }
        self.files.push(MappedFile {
            path: path.to_path_buf(),
            map,
        });
        Ok(())
    }

    /// Number of tensors indexed.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// True when no tensor is indexed (never, for a registry [`Self::load`] returned).
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// The files loaded, in order.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|f| f.path.as_path())
    }

    /// Names of the indexed tensors, in file order then name order.
    pub fn tensor_names(&self) -> impl Iterator<Item = &str> {
        self.tensors.iter().map(|t| t.name.as_str())
    }

    /// What loading skipped (tensors of unsupported types), one line each.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Bytes of tensor data indexed (what matching may touch, never all read).
    pub fn indexed_bytes(&self) -> u64 {
        self.tensors
            .iter()
            .map(|t| t.slices * t.rows * t.cols * t.dtype.size() as u64)
            .sum()
    }

    /// Which held tensors the sampled operands of a call came from.
    ///
    /// `a_rows` and `b_cols` are the sample's operand data (`[batch][row][k]` and
    /// `[batch][col][k]`, raw little-endian in the call's dtypes); `None` for an operand
    /// that did not travel inline. Data whose length does not fit the call and plan
    /// matches nothing. With `closest`, an unmatched result names the candidate closest to
    /// the data: the one with the fewest differing elements in the first sampled vector,
    /// with its differing elements counted over all sampled vectors.
    pub fn identify(
        &self,
        call: &GemmCall,
        plan: &Plan,
        a_rows: Option<&[u8]>,
        b_cols: Option<&[u8]>,
        closest: bool,
    ) -> Identity {
        let Ok(k) = usize::try_from(call.k) else {
            return Identity::Unmatched(Unmatched {
                candidates: [0, 0],
                closest: None,
            });
        };
        let operands = [
            a_rows.map(|bytes| Operand {
                side: Side::A,
                dtype: call.a.dtype,
                outer: call.m,
                k,
                indices: &plan.rows,
                bytes,
            }),
            b_cols.map(|bytes| Operand {
                side: Side::B,
                dtype: call.b.dtype,
                outer: call.n,
                k,
                indices: &plan.cols,
                bytes,
            }),
        ];
        let mut matched = Vec::new();
        let mut candidates = [0u64; 2];
        for (i, op) in operands.iter().enumerate() {
            let Some(op) = op else { continue };
            if !fits(op, plan) {
                continue;
            }
            let list = self.candidates(op);
            // a square tensor is listed twice under one key, once per orientation, in a row
            let mut distinct: Vec<usize> = list.iter().map(|c| c.tensor).collect();
            distinct.dedup();
            candidates[i] = distinct.len() as u64;
            for c in list {
                if let Some((slice, _)) = self.find(c, op, call.batch, plan, Compare::Exact) {
                    matched.push(SideMatch {
                        side: op.side,
                        tensor: self.tensors[c.tensor].name.clone(),
                        orientation: c.orientation,
                        slice,
                    });
                    break;
                }
            }
        }
        if !matched.is_empty() {
            return Identity::Matched(matched);
        }
        // The closest candidate: screened on the first sampled vector (a fraction of
        // differing elements), then counted in full for the best one only.
        let mut screened: Option<(f64, &Operand<'_>, &Candidate, Slice)> = None;
        if closest {
            for op in operands.iter().flatten().filter(|op| fits(op, plan)) {
                for c in self.candidates(op) {
                    let Some((slice, d)) = self.find(c, op, call.batch, plan, Compare::Screen)
                    else {
                        continue;
                    };
                    let fraction = d as f64 / op.k.max(1) as f64;
                    if screened.is_none_or(|(f, ..)| fraction < f) {
                        screened = Some((fraction, op, c, slice));
                    }
                }
            }
        }
        let best = screened.and_then(|(_, op, c, slice)| {
            let t = &self.tensors[c.tensor];
            let differing =
                self.differing(t, c.orientation, op, plan, fixed(slice), Compare::Count)?;
            Some(NearMiss {
                at: SideMatch {
                    side: op.side,
                    tensor: t.name.clone(),
                    orientation: c.orientation,
                    slice,
                },
                differing,
                compared: (plan.batches.len() * op.indices.len() * op.k) as u64,
            })
        });
        Identity::Unmatched(Unmatched {
            candidates,
            closest: best,
        })
    }

    fn candidates(&self, op: &Operand<'_>) -> &[Candidate] {
        self.index
            .get(&(op.dtype, op.outer, op.k as u64))
            .map_or(&[], Vec::as_slice)
    }

    /// Compares an operand with one candidate. With [`Compare::Exact`], returns the
    /// slice that matches exactly, if any; otherwise the slice with the fewest differing
    /// elements and that count. None when the tensor cannot serve the call's batch.
    fn find(
        &self,
        c: &Candidate,
        op: &Operand<'_>,
        batch: u64,
        plan: &Plan,
        mode: Compare,
    ) -> Option<(Slice, u64)> {
        let t = &self.tensors[c.tensor];
        let choices: Vec<Slice> = if t.slices == 1 {
            vec![Slice::Whole]
        } else if t.slices == batch {
            vec![Slice::PerBatch]
        } else if batch == 1 {
            (0..t.slices).map(Slice::Fixed).collect()
        } else {
            return None;
        };
        let mut best: Option<(Slice, u64)> = None;
        for slice in choices {
            let differing = self.differing(t, c.orientation, op, plan, fixed(slice), mode)?;
            if mode == Compare::Exact {
                if differing == 0 {
                    return Some((slice, 0));
                }
            } else if best.is_none_or(|(_, d)| differing < d) {
                best = Some((slice, differing));
            }
        }
        best
    }

    /// Elements of the operand that differ from the tensor's (see [`Compare`]).
    /// `fixed`: the matrix every batch entry used, or None for matrix b for batch entry
    /// b. None when the tensor's data cannot be addressed.
    fn differing(
        &self,
        t: &Tensor,
        orientation: Orientation,
        op: &Operand<'_>,
        plan: &Plan,
        fixed: Option<u64>,
        mode: Compare,
    ) -> Option<u64> {
        let es = t.dtype.size();
        let (rows, cols) = (usize::try_from(t.rows).ok()?, usize::try_from(t.cols).ok()?);
        let matrix_bytes = rows.checked_mul(cols)?.checked_mul(es)?;
        let data = self.files[t.file]
            .map
            .get(t.offset..)?
            .get(..matrix_bytes.checked_mul(usize::try_from(t.slices).ok()?)?)?;
        let vec_bytes = op.k * es;
        let (batches, vectors) = match mode {
            Compare::Screen => (1, 1),
            _ => (plan.batches.len(), op.indices.len()),
        };
        let mut count = 0u64;
        for (bi, &b) in plan.batches.iter().enumerate().take(batches) {
            let slice = usize::try_from(fixed.unwrap_or(b)).ok()?;
            let matrix = data
                .get(slice.checked_mul(matrix_bytes)?..)?
                .get(..matrix_bytes)?;
            let sent = &op.bytes[bi * op.indices.len() * vec_bytes..][..vectors * vec_bytes];
            let xs = &op.indices[..vectors];
            match orientation {
                Orientation::Rows => {
                    // vector x is W[x, :], contiguous (k == cols)
                    for (&x, got) in xs.iter().zip(sent.chunks_exact(vec_bytes)) {
                        let x = usize::try_from(x).ok()?;
                        let want = matrix.get(x.checked_mul(vec_bytes)?..)?.get(..vec_bytes)?;
                        if got != want {
                            if mode == Compare::Exact {
                                return Some(1);
                            }
                            count += got
                                .chunks_exact(es)
                                .zip(want.chunks_exact(es))
                                .filter(|(g, w)| g != w)
                                .count() as u64;
                        }
                    }
                }
                Orientation::Cols => {
                    // vector x is W[:, x] (k == rows): walk W row by row, comparing the
                    // sampled columns of each row, so memory is read in order and the
                    // first row is the cheap pre-check.
                    if xs.iter().any(|&x| x >= t.cols) {
                        return None;
                    }
                    let row_bytes = cols * es;
                    for (j, row) in matrix.chunks_exact(row_bytes).enumerate() {
                        for (xi, &x) in xs.iter().enumerate() {
                            let at = x as usize * es;
                            let got = &sent[xi * vec_bytes + j * es..];
                            if !same_element(es, got, &row[at..]) {
                                if mode == Compare::Exact {
                                    return Some(1);
                                }
                                count += 1;
                            }
                        }
                    }
                }
            }
        }
        Some(count)
    }
}

/// A stored row of a held tensor, as a reference names it.
struct RowRef<'r> {
    bytes: &'r [u8],
    /// where it starts in its file
    at: usize,
}

/// The rows of a held tensor that a sample's operand references, where they lie in the
/// verifier's copy (resolved and checked by [`WeightRegistry::resolve`]; nothing is
/// copied). Shares the registry, so it can go to another thread with its sample.
#[derive(Clone)]
pub struct HeldRows {
    registry: Arc<WeightRegistry>,
    file: usize,
    /// each row's offset in the file, in the sample's order (`[batch][index]`)
    offsets: Vec<usize>,
    /// bytes per row (k elements)
    len: usize,
}

impl HeldRows {
    /// The rows, in the sample's order.
    pub fn rows(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let map = &self.registry.files[self.file].map;
        // in bounds: `resolve` took each row from the map at these offsets
        self.offsets.iter().map(move |&at| &map[at..at + self.len])
    }

    /// Bytes of the rows, all together.
    pub fn bytes(&self) -> usize {
        self.offsets.len() * self.len
    }

    /// The rows one after the other, as the sample would have carried them inline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.offsets.len() * self.len);
        self.rows().for_each(|r| out.extend_from_slice(r));
        out
    }
}

impl std::fmt::Debug for HeldRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "HeldRows({} rows of {} bytes)",
            self.offsets.len(),
            self.len
        )
    }
}

impl WeightRegistry {
    /// The id of a tensor in the hello table: its rank among the indexed tensors sorted
    /// by name. None for a name that is not indexed.
    pub fn id_of(&self, name: &str) -> Option<u32> {
        let i = self
            .by_id
            .binary_search_by(|&t| self.tensors[t].name.as_str().cmp(name))
            .ok()?;
        u32::try_from(i).ok()
    }

    /// The name of the tensor with this id.
    pub fn name_of(&self, id: u32) -> Option<&str> {
        let t = *self.by_id.get(usize::try_from(id).ok()?)?;
        Some(self.tensors[t].name.as_str())
    }

    /// The table of the verifier's hello: every indexed tensor in id order, with the
    /// fingerprint of each stored row (this reads every byte of the indexed tensors
    /// once). Rows are fingerprinted on up to `threads` threads.
    pub fn hello_tensors(&self, key: &Key, threads: usize) -> Result<Vec<HelloTensor>> {
        let fk = key.fingerprint_key();
        let mut out: Vec<Option<Result<HelloTensor>>> =
            (0..self.by_id.len()).map(|_| None).collect();
        let threads = threads.clamp(1, 64);
        let next = std::sync::atomic::AtomicUsize::new(0);
        let results = std::sync::Mutex::new(&mut out);
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| loop {
                    let id = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if id >= self.by_id.len() {
                        break;
                    }
                    let r = self.hello_tensor(id, &fk);
                    if let Ok(mut o) = results.lock() {
                        o[id] = Some(r);
                    }
                });
            }
        });
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| Err(anyhow!("a fingerprinting thread failed"))))
            .collect()
    }

    fn hello_tensor(&self, id: usize, fk: &[u8; 32]) -> Result<HelloTensor> {
        let t = &self.tensors[self.by_id[id]];
        let row_bytes = usize::try_from(t.cols)
            .ok()
            .and_then(|c| c.checked_mul(t.dtype.size()))
            .ok_or_else(|| anyhow!("tensor {}: rows too long", t.name))?;
        let count = usize::try_from(t.slices * t.rows)?;
        let data = self.files[t.file]
            .map
            .get(t.offset..)
            .and_then(|d| d.get(..count.checked_mul(row_bytes)?))
            .ok_or_else(|| anyhow!("tensor {}: its data lie beyond the end of its file", t.name))?;
        Ok(HelloTensor {
            id: id as u32,
            dtype: t.dtype,
            matrices: u32::try_from(t.slices)?,
            rows: t.rows,
            cols: t.cols,
            fingerprints: data
                .chunks_exact(row_bytes)
                .map(|row| handshake::fingerprint(fk, row))
                .collect(),
        })
    }

    /// Resolves an operand sent as a reference (docs/PROTOCOL.md, "Sample record"):
    /// checks the tensor, matrices, rows and evidence against the held copy and returns
    /// where the sampled vectors lie in it (`[batch][index]`, each of k elements) and how
    /// the operand sits in the tensor. The error names the tensor and what does not fit.
    ///
    /// `indices` are the plan's rows (op(A)) or columns (op(B)); `matrices` and
    /// `evidence` have the lengths [`mmaudit_protocol::record::Sample::check_shape`]
    /// checked.
    #[allow(clippy::too_many_arguments)]
    pub fn resolve(
        registry: &Arc<WeightRegistry>,
        side: Side,
        tensor: u32,
        dtype: DType,
        k: u64,
        indices: &[u64],
        matrices: &[u32],
        evidence: &[u8],
    ) -> Result<(HeldRows, SideMatch), String> {
        let op = match side {
            Side::A => "op(A)",
            Side::B => "op(B)",
        };
        let this = registry.as_ref();
        let Some(t) = usize::try_from(tensor)
            .ok()
            .and_then(|i| this.by_id.get(i))
            .map(|&i| &this.tensors[i])
        else {
            return Err(format!(
                "{op} references tensor id {tensor}, which the verifier's table does not have ({} tensors)",
                this.by_id.len()
            ));
        };
        let name = &t.name;
        if t.dtype != dtype || t.cols != k {
            return Err(format!(
                "{op} references tensor {name} (id {tensor}), whose rows are {} {} elements; the call's {op} rows are {k} {} elements",
                t.cols,
                t.dtype.name(),
                dtype.name()
            ));
        }
        let es = dtype.size();
        let mut offsets = Vec::with_capacity(matrices.len() * indices.len());
        for (bi, &e) in matrices.iter().enumerate() {
            if e as u64 >= t.slices {
                return Err(format!(
                    "{op} references matrix {e} of tensor {name} (id {tensor}), which has {} matri{}",
                    t.slices,
                    if t.slices == 1 { "x" } else { "ces" }
                ));
            }
            for (xi, &x) in indices.iter().enumerate() {
                let row = this.row(t, e as u64, x).ok_or_else(|| {
                    format!(
                        "{op} references row {x} of tensor {name} (id {tensor}), which has {} rows",
                        t.rows
                    )
                })?;
                let at = (bi * indices.len() + xi) * es;
                let claimed = evidence.get(at..at + es).unwrap_or_default();
                if claimed != &row.bytes[..es] {
                    return Err(format!(
                        "{op} references row {x} of matrix {e} of tensor {name} (id {tensor}), but its evidence {} differs from the held row's first element {}",
                        hex(claimed),
                        hex(&row.bytes[..es])
                    ));
                }
                offsets.push(row.at);
            }
        }
        let slice = if t.slices == 1 {
            Slice::Whole
        } else if matrices.windows(2).all(|w| w[0] == w[1]) {
            Slice::Fixed(matrices.first().copied().unwrap_or(0) as u64)
        } else {
            Slice::PerBatch
        };
        Ok((
            HeldRows {
                registry: Arc::clone(registry),
                file: t.file,
                offsets,
                len: es * k as usize,
            },
            SideMatch {
                side,
                tensor: name.clone(),
                orientation: Orientation::Rows,
                slice,
            },
        ))
    }

    /// Row `x` of matrix `e` of `t`, if it is in range and in the file.
    fn row<'r>(&'r self, t: &Tensor, e: u64, x: u64) -> Option<RowRef<'r>> {
        if e >= t.slices || x >= t.rows {
            return None;
        }
        let es = t.dtype.size() as u64;
        let at = e
            .checked_mul(t.rows)?
            .checked_add(x)?
            .checked_mul(t.cols)?
            .checked_mul(es)?;
        let len = usize::try_from(t.cols.checked_mul(es)?).ok()?;
        let at = t.offset.checked_add(usize::try_from(at).ok()?)?;
        let bytes = self.files[t.file].map.get(at..)?.get(..len)?;
        Some(RowRef { bytes, at })
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// How far [`WeightRegistry::differing`] compares.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Compare {
    /// every sampled element, stopping at the first difference (returning 1)
    Exact,
    /// every sampled element, counting the differences
    Count,
    /// the first sampled vector of the first batch entry, counting the differences
    Screen,
}

/// Whether the first `es` bytes of `a` and `b` are equal (`es` is 1, 2, 4 or 8): a
/// fixed-size comparison rather than a call to memcmp for each element.
#[inline]
fn same_element(es: usize, a: &[u8], b: &[u8]) -> bool {
    match es {
        1 => a[0] == b[0],
        2 => a[..2] == b[..2],
        4 => a[..4] == b[..4],
        _ => a[..es] == b[..es],
    }
}

/// The matrix every batch entry used, or None for matrix b for batch entry b.
fn fixed(slice: Slice) -> Option<u64> {
    match slice {
        Slice::Whole => Some(0),
        Slice::PerBatch => None,
        Slice::Fixed(e) => Some(e),
    }
}

/// Whether an operand has something to compare (a plan with no vector proves nothing)
/// and its data have the length its plan implies.
fn fits(op: &Operand<'_>, plan: &Plan) -> bool {
    !op.indices.is_empty()
        && !plan.batches.is_empty()
        && op.k > 0
        && op.indices.iter().all(|&x| x < op.outer)
        && plan
            .batches
            .len()
            .checked_mul(op.indices.len())
            .and_then(|n| n.checked_mul(op.k))
            .and_then(|n| n.checked_mul(op.dtype.size()))
            == Some(op.bytes.len())
}

impl std::fmt::Debug for WeightRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeightRegistry")
            .field(
                "files",
                &self.files.iter().map(|m| &m.path).collect::<Vec<_>>(),
            )
            .field("tensors", &self.tensors.len())
            .finish()
    }
}
