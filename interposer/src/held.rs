//! Commit mode: which operands are tensors the verifier holds, found without copying
//! them.
//!
//! A hello that offers tensors (`serve --weights`) names their shapes. A whole-call
//! gather (commit mode) whose op(A) has the type, row length and at most the rows of
//! one of them *probes* it: op(A) is gathered as the first element of each row (the
//! evidence an opening of a reference carries) and one whole row per batch member (the
//! spot row), not whole. The background thread looks the spot rows' keyed fingerprints up
//! in the hello's table: found, the call is bound to the tensor by reference and op(A)'s
//! address, layout and shape ([`HeldKey`]) are remembered with it, so that later calls
//! there are checked the same way against that tensor; not found, the call cannot be
//! committed (its op(A) was not gathered whole) and the address is remembered as not
//! held, so that later calls there gather op(A) whole. Weights are never copied to the
//! host whole, however large.
//!
//! This decides only what the honest library claims: a false claim cannot help a
//! prover, because the verifier recomputes a referenced operand from its own copy.
//!
//! Everything here is forgotten whenever a session begins, and at most [`MAX_HELD`]
//! addresses are remembered (beyond it, it starts over).

use std::collections::HashMap;
use std::sync::Mutex;

use crate::model::gather::{HeldA, HeldKey, HeldRef, Pick};
use crate::model::GatherSpec;
use mmaudit_protocol::call::{DType, GemmCall};
use mmaudit_protocol::handshake::HelloTensor;

/// Addresses remembered at most.
pub const MAX_HELD: usize = 1 << 16;

/// What is known of an address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Known {
    /// op(A) there is this tensor.
    Tensor(HeldRef),
    /// op(A) there was probed and is none of the hello's tensors.
    NotHeld,
}

#[derive(Default)]
struct State {
    /// (type, row length) -> most rows of an offered tensor of that shape
    shapes: HashMap<(DType, u64), u64>,
    known: HashMap<HeldKey, Known>,
}

static HELD: Mutex<Option<State>> = Mutex::new(None);

fn with<T>(f: impl FnOnce(&mut State) -> T) -> T {
    let mut guard = HELD.lock().unwrap_or_else(|e| e.into_inner());
    f(guard.get_or_insert_with(State::default))
}

/// A session begins: everything known is forgotten, and these are the tensors its
/// hello offers (none when references are off).
pub fn begin(tensors: &[HelloTensor]) {
    with(|s| {
        s.known.clear();
        s.shapes.clear();
        for t in tensors {
            let rows = s.shapes.entry((t.dtype, t.cols)).or_insert(0);
            *rows = (*rows).max(t.rows);
        }
    });
}

/// For a whole-call gather (commit mode) of `call`: how op(A) is gathered
/// when it is (or may be) a held tensor: the tensor found there before, or a probe.
/// `None`: op(A) is gathered whole (not the whole call, no such shape offered, or the
/// address known not to hold one).
pub fn lookup(call: &GemmCall, spec: &GatherSpec, pick: &Pick) -> Option<HeldA> {
    let key = HeldKey::of(call, spec).filter(|_| *pick == Pick::Whole)?;
    let reference = with(|s| match s.known.get(&key) {
        Some(Known::Tensor(r)) => Some(Some(r.clone())),
        Some(Known::NotHeld) => None,
        None => s
            .shapes
            .get(&(key.dtype, key.k))
            .is_some_and(|&rows| key.m <= rows)
            .then_some(None),
    })?;
    Some(HeldA {
        key,
        reference,
        // Any row will do (the check is the honest library's own); this one moves.
        spot_row: call.index % call.m,
    })
}

/// Remembers what op(A) at `key` is.
pub fn remember(key: HeldKey, known: Known) {
    with(|s| {
        if s.known.len() >= MAX_HELD && !s.known.contains_key(&key) {
            s.known.clear();
        }
        s.known.insert(key, known);
    });
}

/// What is known of `key`.
pub fn known(key: &HeldKey) -> Option<Known> {
    with(|s| s.known.get(key).cloned())
}

/// Forgets `key` (its spot row no longer matched its tensor).
pub fn forget(key: &HeldKey) {
    with(|s| s.known.remove(key));
}
