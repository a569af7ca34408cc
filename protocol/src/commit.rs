//! Commit-before-challenge (docs/COMMIT.md): the hashes that bind a prover to a GEMM
//! call's operands and result before it can know which of them will be checked, and the
//! verifier's challenge, which depends on a secret the prover never holds.
//!
//! - A *vector* is one row of op(A), one column of op(B), or one column of C or D (m
//!   entries, contiguous in cuBLAS's column-major storage): its elements' raw
//!   little-endian bytes in order, exactly as a sample record carries them.
//! - [`leaf_hash`]: BLAKE3 in keyed mode with the public [`leaf_key`] over a vector's
//!   bytes; [`node_hash`]: keyed with [`node_key`] over the two children. Two public keys
//!   instead of a prefix byte keep a vector's bytes aligned as they lie in GPU memory.
//! - [`tree_root`]: the Merkle tree of RFC 6962 (section 2.1) with those two hashes: the
//!   left subtree holds the largest power of two of leaves below the count, which is the
//!   same as pairing neighbours level by level and carrying an odd last node up unchanged
//!   (what a GPU computes). [`audit_path`] and [`verify_path`] are RFC 6962's audit path
//!   and RFC 9162's verification, with these hashes.
//! - [`call_commitment`]: one hash over the call's ledger encoding and the roots of its
//!   four operands ([`Side`]) and of its small data (device scalars, bias, vector
//!   scales).
//! - [`Challenger`]: whether a committed call is checked, and which rows, columns and
//!   batch entries, from the verifier's challenge key, the session nonce, the call's
//!   encoding and its commitment.

use crate::call::GemmCall;
use crate::config::SamplingConfig;
use crate::schedule::{self, Plan};

/// A 32-byte hash.
pub type Hash = [u8; 32];

/// The string whose BLAKE3 hash is [`leaf_key`].
pub const LEAF_KEY_TEXT: &[u8] = b"mmaudit-commit-leaf-v1";
/// The string whose BLAKE3 hash is [`node_key`].
pub const NODE_KEY_TEXT: &[u8] = b"mmaudit-commit-node-v1";
/// Domain of [`call_commitment`].
pub const CALL_DOMAIN: &[u8] = b"mmaudit-commit-call-v1";
/// Domain of [`Challenger::challenge`].
pub const CHALLENGE_DOMAIN: &[u8] = b"mmaudit-challenge-v1";
/// Domain of the tag of a verifier-issued nonce ([`issue_nonce`]).
pub const NONCE_DOMAIN: &[u8] = b"mmaudit-commit-nonce-v1";

/// A session nonce only a holder of the challenge key can make: 8 random bytes, then
/// the first 8 bytes of keyed BLAKE3 (the challenge key) over `"mmaudit-commit-nonce-v1"`
/// ‖ those 8 bytes. A commit-mode audit accepts only such nonces ([`nonce_issued`]), so
/// a prover cannot pick nonces of its own and grind its commitments against repeated
/// checks of captures it made itself.
pub fn issue_nonce(challenge_key: &Hash, random: [u8; 8]) -> [u8; 16] {
    let mut nonce = [0u8; 16];
    nonce[..8].copy_from_slice(&random);
    nonce[8..].copy_from_slice(&nonce_tag(challenge_key, &random));
    nonce
}

/// Whether `nonce` was made by [`issue_nonce`] with this challenge key.
pub fn nonce_issued(challenge_key: &Hash, nonce: &[u8; 16]) -> bool {
    let random: [u8; 8] = nonce[..8].try_into().expect("8 bytes");
    nonce_tag(challenge_key, &random)[..] == nonce[8..]
}

fn nonce_tag(challenge_key: &Hash, random: &[u8; 8]) -> [u8; 8] {
    let mut h = blake3::Hasher::new_keyed(challenge_key);
    h.update(NONCE_DOMAIN);
    h.update(random);
    h.finalize().as_bytes()[..8].try_into().expect("8 bytes")
}

/// The public key of leaf hashes: BLAKE3 of `"mmaudit-commit-leaf-v1"` (computed once).
pub fn leaf_key() -> Hash {
    static KEY: std::sync::OnceLock<Hash> = std::sync::OnceLock::new();
    *KEY.get_or_init(|| *blake3::hash(LEAF_KEY_TEXT).as_bytes())
}

/// The public key of inner-node hashes: BLAKE3 of `"mmaudit-commit-node-v1"` (computed
/// once).
pub fn node_key() -> Hash {
    static KEY: std::sync::OnceLock<Hash> = std::sync::OnceLock::new();
    *KEY.get_or_init(|| *blake3::hash(NODE_KEY_TEXT).as_bytes())
}

/// The hash of one vector's bytes.
pub fn leaf_hash(vector: &[u8]) -> Hash {
    *blake3::keyed_hash(&leaf_key(), vector).as_bytes()
}

/// The hash of an inner node from its two children.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut both = [0u8; 64];
    both[..32].copy_from_slice(left);
    both[32..].copy_from_slice(right);
    *blake3::keyed_hash(&node_key(), &both).as_bytes()
}

/// The root of the tree over `leaves` (leaf hashes, in order). The root of no leaves is
/// the leaf hash of the empty vector (an operand that is not there, such as C when beta
/// is zero).
pub fn tree_root(leaves: &[Hash]) -> Hash {
    Tree::new(leaves.to_vec()).root()
}

/// The whole tree over some leaf hashes, level by level: built once (N - 1 node
/// hashes), it gives the root and any leaf's audit path without hashing again, where
/// [`audit_path`] rebuilds the subtrees it needs.
///
/// Level `i + 1` pairs neighbours of level `i` and carries an odd last node up
/// unchanged, which is RFC 6962's tree (docs/COMMIT.md).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tree {
    /// The leaves first, the root last (one level of one hash); none for no leaves.
    levels: Vec<Vec<Hash>>,
}

impl Tree {
    /// The tree over `leaves`.
    pub fn new(leaves: Vec<Hash>) -> Tree {
        let mut levels = Vec::new();
        if !leaves.is_empty() {
            levels.push(leaves);
        }
        while let Some(top) = levels.last().filter(|l| l.len() > 1) {
            let next = top
                .chunks(2)
                .map(|pair| match pair {
                    [l, r] => node_hash(l, r),
                    [odd] => *odd,
                    _ => unreachable!("chunks(2) yields one or two"),
                })
                .collect();
            levels.push(next);
        }
        Tree { levels }
    }

    /// The root; for no leaves the leaf hash of the empty vector.
    pub fn root(&self) -> Hash {
        match self.levels.last() {
            Some(top) => top[0],
            None => leaf_hash(&[]),
        }
    }

    /// How many leaves.
    pub fn leaves(&self) -> usize {
        self.levels.first().map_or(0, Vec::len)
    }

    /// Hashes held, all levels together: at most 2N + depth(N) for N leaves.
    pub fn hashes(&self) -> usize {
        self.levels.iter().map(Vec::len).sum()
    }

    /// The audit path of leaf `index`, from the leaf up (the same as
    /// [`audit_path`]); `None` when `index` is out of range.
    pub fn path(&self, index: usize) -> Option<Vec<Hash>> {
        if index >= self.leaves() {
            return None;
        }
        let mut at = index;
        let mut path = Vec::new();
        for level in &self.levels[..self.levels.len() - 1] {
            // A node without a right neighbour is carried up: no hash on the path.
            if let Some(sibling) = level.get(at ^ 1) {
                path.push(*sibling);
            }
            at /= 2;
        }
        Some(path)
    }
}

/// The levels of the tree over `leaves` leaves: the length of its longest audit path,
/// `ceil(log2(leaves))` (0 for one leaf or none).
pub fn depth(leaves: u64) -> u64 {
    if leaves <= 1 {
        0
    } else {
        64 - (leaves - 1).leading_zeros() as u64
    }
}

/// The root of the tree over the leaf hashes of `vectors` (an operand's root).
pub fn vectors_root<V: AsRef<[u8]>>(vectors: &[V]) -> Hash {
    let leaves: Vec<Hash> = vectors.iter().map(|v| leaf_hash(v.as_ref())).collect();
    tree_root(&leaves)
}

/// The length of the audit path of leaf `index` among `leaves`: [`depth`] for a full
/// tree, less for leaves of a right subtree that is not (0 when `index` is out of
/// range).
pub fn path_len(index: u64, leaves: u64) -> u64 {
    let (mut at, mut n, mut len) = (index, leaves, 0);
    if index >= leaves {
        return 0;
    }
    while n > 1 {
        let k = 1u64 << (63 - (n - 1).leading_zeros());
        if at < k {
            n = k;
        } else {
            at -= k;
            n -= k;
        }
        len += 1;
    }
    len
}

/// The largest power of two strictly below `n` (`n >= 2`).
fn split(n: usize) -> usize {
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// RFC 6962's audit path of leaf `index` among `leaves`: the sibling hashes from the
/// leaf up to the root. `None` when `index` is out of range.
pub fn audit_path(leaves: &[Hash], index: usize) -> Option<Vec<Hash>> {
    if index >= leaves.len() {
        return None;
    }
    let mut path = Vec::new();
    let (mut lo, mut hi, mut at) = (0, leaves.len(), index);
    // Walk down from the root, remembering each sibling subtree's root.
    let mut siblings = Vec::new();
    while hi - lo > 1 {
        let k = split(hi - lo);
        if at < k {
            siblings.push(tree_root(&leaves[lo + k..hi]));
            hi = lo + k;
        } else {
            siblings.push(tree_root(&leaves[lo..lo + k]));
            lo += k;
            at -= k;
        }
    }
    path.extend(siblings.into_iter().rev());
    Some(path)
}

/// RFC 9162 (section 2.1.3.2): whether `path` proves `leaf` at `index` of a tree of
/// `count` leaves whose root is `root`. False for any index, count or path length that
/// does not fit.
pub fn verify_path(root: &Hash, leaf: &Hash, index: u64, count: u64, path: &[Hash]) -> bool {
    if index >= count {
        return false;
    }
    let (mut fn_, mut sn) = (index, count - 1);
    let mut r = *leaf;
    for p in path {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && r == *root
}

/// How one operand of a call is bound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Side {
    /// By the root of the tree over its vectors, in order `[batch][vector]`.
    Inline(Hash),
    /// As stored rows of tensor `tensor` of the verifier's hello, matrix `matrices[b]`
    /// for batch member `b` (empty for a 2-D tensor): the verifier's own copy is the
    /// operand.
    Reference {
        /// the hello's tensor id
        tensor: u32,
        /// the matrix of a stacked tensor per batch member
        matrices: Vec<u32>,
    },
}

impl Side {
    fn absorb(&self, h: &mut blake3::Hasher) {
        match self {
            Side::Inline(root) => {
                h.update(&[0]);
                h.update(root);
            }
            Side::Reference { tensor, matrices } => {
                h.update(&[1]);
                h.update(&tensor.to_le_bytes());
                h.update(&(matrices.len() as u32).to_le_bytes());
                for m in matrices {
                    h.update(&m.to_le_bytes());
                }
            }
        }
    }
}

/// Everything one call is bound to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallBinding {
    /// op(A): its rows
    pub a: Side,
    /// op(B): its columns
    pub b: Side,
    /// C before the call, by columns; [`tree_root`] of nothing when beta is zero
    pub c: Hash,
    /// D after the call, by columns
    pub d: Hash,
    /// BLAKE3 (unkeyed) of the call's small data, as an opening carries it
    pub small: Hash,
}

/// The call's commitment: BLAKE3 of `"mmaudit-commit-call-v1"` ‖ the call's ledger
/// encoding ‖ A's side ‖ B's side ‖ C's root ‖ D's root ‖ the small data's hash, where a
/// side is `00` ‖ root, or `01` ‖ tensor (`u32`) ‖ count (`u32`) ‖ count × matrix (`u32`).
pub fn call_commitment(call: &GemmCall, binding: &CallBinding) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(CALL_DOMAIN);
    h.update(&call.to_bytes());
    binding.a.absorb(&mut h);
    binding.b.absorb(&mut h);
    h.update(&binding.c);
    h.update(&binding.d);
    h.update(&binding.small);
    *h.finalize().as_bytes()
}

/// The verifier's side of the challenge: a key the prover never sees, the session's
/// nonce and sampling configuration.
#[derive(Clone)]
pub struct Challenger {
    key: Hash,
    nonce: [u8; 16],
    config: SamplingConfig,
}

impl Challenger {
    /// The challenger of one session.
    pub fn new(key: Hash, nonce: [u8; 16], config: SamplingConfig) -> Challenger {
        Challenger { key, nonce, config }
    }

    /// Whether `call`, committed to `commitment`, is checked, and its plan: keyed BLAKE3
    /// (the challenge key) over `"mmaudit-challenge-v1"` ‖ nonce ‖ the call's encoding ‖
    /// the commitment, 40 bytes of output; the first 8 decide as the schedule's call
    /// rate does, the other 32 seed the plan exactly as a v1 schedule's seed does.
    pub fn challenge(&self, call: &GemmCall, commitment: &Hash) -> Option<Plan> {
        self.seed(call, commitment)
            .map(|seed| schedule::plan_from_seed(&self.config, call, seed))
    }

    /// [`Challenger::challenge`] in two steps: the seed of a challenged call's plan,
    /// which [`schedule::plan_from_seed`] turns into the plan (a verifier checks the
    /// plan's size, [`schedule::plan_counts`], before building it).
    pub fn seed(&self, call: &GemmCall, commitment: &Hash) -> Option<[u8; 32]> {
        if !schedule::auditable(call) {
            return None;
        }
        let mut h = blake3::Hasher::new_keyed(&self.key);
        h.update(CHALLENGE_DOMAIN);
        h.update(&self.nonce);
        h.update(&call.to_bytes());
        h.update(commitment);
        let mut out = [0u8; 40];
        h.finalize_xof().fill(&mut out);
        let mut u = [0u8; 8];
        u.copy_from_slice(&out[..8]);
        if !schedule::below_rate(u64::from_le_bytes(u), self.config.call_ppm) {
            return None;
        }
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&out[8..]);
        Some(seed)
    }

    /// The session's sampling configuration (the challenge's rates).
    pub fn config(&self) -> &SamplingConfig {
        &self.config
    }
}

pub mod frames;

#[cfg(test)]
mod tests;
