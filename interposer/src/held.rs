//! Commit mode: where the verifier's tensors were found in device memory.
//!
//! When the background thread commits to a whole call and finds its op(A) to be stored
//! rows of a tensor the verifier's hello offers (by the keyed fingerprints of every
//! row), it remembers op(A)'s address, layout and shape ([`HeldKey`]) with the tensor.
//! A later call with op(A) at the same place then gathers only what an opening of a
//! reference needs (the first element of each row) and one whole row, whose fingerprint
//! the background thread checks before it binds the call to the tensor again; a row
//! that no longer matches forgets the address and the call is "not committed". Weights
//! are not copied to the host at every call.
//!
//! This decides only what the honest library claims: a false claim cannot help a
//! prover, because the verifier recomputes a referenced operand from its own copy.
//!
//! The map is forgotten whenever a session begins, and holds at most [`MAX_HELD`]
//! addresses (beyond it, it starts over).

use std::collections::HashMap;
use std::sync::Mutex;

use mmaudit_protocol::call::GemmCall;
use mmaudit_protocol::schedule::Plan;

use crate::model::gather::{HeldA, HeldKey, HeldRef};
use crate::model::GatherSpec;

/// Addresses remembered at most.
pub const MAX_HELD: usize = 1 << 16;

static HELD: Mutex<Option<HashMap<HeldKey, HeldRef>>> = Mutex::new(None);

fn with<T>(f: impl FnOnce(&mut HashMap<HeldKey, HeldRef>) -> T) -> T {
    let mut guard = HELD.lock().unwrap_or_else(|e| e.into_inner());
    f(guard.get_or_insert_with(HashMap::new))
}

/// For a whole-call gather (commit mode) of `call` with `plan`: the tensor found before
/// where its op(A) is, if any (op(A) is then gathered as evidence and a spot row).
/// `None` too for a plan that is not the whole call.
pub fn lookup(call: &GemmCall, spec: &GatherSpec, plan: &Plan) -> Option<HeldA> {
    let whole = plan.rows.len() as u64 == call.m
        && plan.cols.len() as u64 == call.n
        && plan.batches.len() as u64 == call.batch;
    let key = HeldKey::of(call, spec).filter(|_| whole)?;
    let reference = with(|m| m.get(&key).cloned())?;
    Some(HeldA {
        key,
        reference,
        // Any row will do (the check is the honest library's own); this one moves.
        spot_row: call.index % call.m,
    })
}

/// Remembers that op(A) at `key` is `reference`.
pub fn remember(key: HeldKey, reference: HeldRef) {
    with(|m| {
        if m.len() >= MAX_HELD && !m.contains_key(&key) {
            m.clear();
        }
        m.insert(key, reference);
    });
}

/// The tensor remembered at `key`.
pub fn known(key: &HeldKey) -> Option<HeldRef> {
    with(|m| m.get(key).cloned())
}

/// Forgets `key` (its spot row no longer matched).
pub fn forget(key: &HeldKey) {
    with(|m| m.remove(key));
}

/// Forgets every address (a session begins: its hello may offer other tensors).
pub fn clear() {
    with(|m| m.clear());
}
