//! Commit mode: which operands are tensors the verifier holds, found without copying
//! them.
//!
//! A hello that offers tensors (`serve --weights`) names their shapes. The first
//! whole-call gather (commit mode) at an address whose op(A) has the type, row length
//! and at most the rows of one of them copies the call whole when it fits in the pinned
//! ring: the background thread looks every row up in the hello's table and remembers
//! what op(A) there is. When it does not fit (a weight larger than the
//! ring), op(A) is *probed*: gathered as the first element of each row (the evidence an
//! opening of a reference carries) and one whole row per batch member (the spot row).
//! The spot rows' keyed fingerprints find the tensor; not found, that call cannot be
//! committed (its op(A) was not gathered whole). Once a tensor is known at an address
//! (op(A)'s address, layout and shape, [`HeldKey`]), later calls there gather evidence
//! and a spot row, checked against that tensor first (two tensors may share a row);
//! spot rows of another offered tensor (a buffer reused for the next layer's weight)
//! rebind the address to it, and spot rows of none make the address forgotten. A held
//! weight crosses to the host whole at most once per address, and never when it is
//! larger than the ring.
//!
//! This decides only what the honest library claims: a false claim cannot help a
//! prover, because the verifier recomputes a referenced operand from its own copy.
//!
//! Everything here is forgotten whenever a session begins, and at most [`MAX_HELD`]
//! addresses are remembered (beyond it, it starts over).

use std::collections::HashMap;
use std::sync::Mutex;

use crate::model::gather::{HeldA, HeldKey, HeldRef, Pick, SlotLayout};
use crate::model::GatherSpec;
use mmaudit_protocol::call::{DType, GemmCall};
use mmaudit_protocol::handshake::HelloTensor;

/// Addresses remembered at most.
pub const MAX_HELD: usize = 1 << 16;

#[derive(Default)]
struct State {
    /// (type, row length) -> most rows of an offered tensor of that shape
    shapes: HashMap<(DType, u64), u64>,
    /// op(A) at an address is this tensor
    known: HashMap<HeldKey, HeldRef>,
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
/// `None`: op(A) is gathered whole (not the whole call, or no such shape offered).
fn lookup(call: &GemmCall, spec: &GatherSpec, pick: &Pick) -> Option<HeldA> {
    let key = HeldKey::of(call, spec).filter(|_| *pick == Pick::Whole)?;
    let reference = with(|s| match s.known.get(&key) {
        Some(r) => Some(Some(r.clone())),
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

/// The gather layout of `call` for `pick`, `ring()` bytes of pinned ring at hand: op(A)
/// as evidence and spot rows where a held tensor was found before; where one may be
/// (its shape is offered, nothing known at the address), the whole call when it fits
/// in the ring (the background thread then looks every row up and remembers what it
/// found), a probe only when it does not (a weight larger than the ring). So an
/// activation that happens to have a weight's shape is gathered whole, not refused.
pub fn layout(
    call: &GemmCall,
    spec: &GatherSpec,
    pick: &Pick,
    ring: impl FnOnce() -> usize,
) -> Result<SlotLayout, String> {
    match lookup(call, spec, pick) {
        Some(h) if h.reference.is_some() => SlotLayout::with_held(call, spec, pick, Some(h)),
        Some(probe) => match SlotLayout::with_held(call, spec, pick, None) {
            Ok(whole) if whole.len <= ring() => Ok(whole),
            _ => SlotLayout::with_held(call, spec, pick, Some(probe)),
        },
        None => SlotLayout::with_held(call, spec, pick, None),
    }
}

/// Whether `count` vectors of `k` elements of `dtype` may be rows of a tensor the
/// hello offers (its shape is offered): such an operand is kept where the background
/// thread can look it up, not in device memory.
pub fn may_hold(dtype: DType, k: u64, count: u64) -> bool {
    with(|s| s.shapes.get(&(dtype, k)).is_some_and(|&rows| count <= rows))
}

/// Remembers that op(A) at `key` is `known`.
pub fn remember(key: HeldKey, known: HeldRef) {
    with(|s| {
        if s.known.len() >= MAX_HELD && !s.known.contains_key(&key) {
            s.known.clear();
        }
        s.known.insert(key, known);
    });
}

/// The tensor known at `key`.
#[cfg(test)]
pub fn known(key: &HeldKey) -> Option<HeldRef> {
    with(|s| s.known.get(key).cloned())
}

/// Forgets `key` (its spot rows are rows of no offered tensor).
pub fn forget(key: &HeldKey) {
    with(|s| s.known.remove(key));
}
