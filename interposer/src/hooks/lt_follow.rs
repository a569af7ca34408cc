//! cuBLASLt matmul descriptors and matrix layouts followed through their creators and
//! setters, so that an unsampled `cublasLtMatmul` asks cuBLASLt no attribute.
//!
//! A `cublasLtMatmul` call's description needs about twenty attributes of its matmul
//! descriptor and nine of each of its four layouts: read through the real getters,
//! some 57 calls per GEMM. Programs such as PyTorch create, set and destroy the
//! descriptor and its layouts around every matmul, so a cache of what was read would
//! never hit. Instead the library hooks `cublasLtMatmulDescCreate`,
//! `cublasLtMatmulDescSetAttribute`, `cublasLtMatmulDescDestroy` and the three
//! `cublasLtMatrixLayout` twins, and keeps, per live object, the value of every
//! attribute the hook reads, as the real getter would return it:
//!
//! - at creation, an object starts from the values cuBLASLt gave the first object of
//!   its class (a descriptor's compute and scale types, a layout's data type), read
//!   through the real getters once per class and process, with the creation's
//!   arguments put in;
//! - a successful set of an attribute the hook reads stores the bytes set (one of
//!   another size than the hook reads drops the object's entry);
//! - destruction drops the entry.
//!
//! An object without an entry (made through a path the library does not hook, such
//! as `cublasLtMatmulDescInit`, or evicted: the table is direct-mapped, and a second
//! object in the same slot takes it) is read through the real getters, as before.
//!
//! What this trusts, as for cuBLAS handles ([`super::handle`]): that an object the
//! library saw created is changed only through the hooked setters. Every sampled call
//! therefore reads its followed objects through the real getters and compares
//! ([`verify`]); a difference drops the entries, makes that call a gap, warns once and
//! stops following cuBLASLt objects for the rest of the process (so that a cuBLASLt
//! whose defaults differ from what the table recorded costs one gap, not one per
//! sampled call). A host pointer mode from the table is trusted only for alpha and
//! beta in the calling thread's live stack (the Lt hook asks for the pointer mode
//! otherwise): reading a device pointer as host memory would crash the program.
//!
//! Each slot is a sequence lock: writers (creation, setters, destruction) take it by
//! making its counter odd, readers copy the slot and retry nothing: a slot being
//! written, or written while it was copied, reads as absent, and the object is read
//! through the getters.

use std::ffi::c_int;
use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

use crate::sys::cublas::{desc_attr as da, layout_attr as la};

/// An attribute the Lt hook reads: its id and the bytes it reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spec {
    /// the attribute
    pub id: c_int,
    /// bytes of its value
    pub size: usize,
}

const fn spec(id: c_int, size: usize) -> Spec {
    Spec { id, size }
}

/// The matmul descriptor attributes the Lt hook reads, with their sizes.
pub static DESC: [Spec; 21] = DESC_SPECS;
const DESC_SPECS: [Spec; 21] = [
    spec(da::COMPUTE_TYPE, 4),
    spec(da::SCALE_TYPE, 4),
    spec(da::POINTER_MODE, 4),
    spec(da::TRANSA, 4),
    spec(da::TRANSB, 4),
    spec(da::TRANSC, 4),
    spec(da::EPILOGUE, 4),
    spec(da::BIAS_POINTER, 8),
    spec(da::BIAS_BATCH_STRIDE, 8),
    spec(da::BIAS_DATA_TYPE, 4),
    spec(da::A_SCALE_POINTER, 8),
    spec(da::B_SCALE_POINTER, 8),
    spec(da::C_SCALE_POINTER, 8),
    spec(da::D_SCALE_POINTER, 8),
    spec(da::A_SCALE_MODE, 4),
    spec(da::B_SCALE_MODE, 4),
    spec(da::C_SCALE_MODE, 4),
    spec(da::D_SCALE_MODE, 4),
    spec(da::EPILOGUE_AUX_SCALE_MODE, 4),
    spec(da::D_OUT_SCALE_POINTER, 8),
    spec(da::FAST_ACCUM, 1),
];

/// The matrix layout attributes the Lt hook reads, with their sizes.
pub static LAYOUT: [Spec; 9] = LAYOUT_SPECS;
const LAYOUT_SPECS: [Spec; 9] = [
    spec(la::TYPE, 4),
    spec(la::ORDER, 4),
    spec(la::ROWS, 8),
    spec(la::COLS, 8),
    spec(la::LD, 8),
    spec(la::BATCH_COUNT, 4),
    spec(la::STRIDED_BATCH_OFFSET, 8),
    spec(la::PLANE_OFFSET, 8),
    spec(la::BATCH_MODE, 4),
];

/// Attribute ids below this are looked up in [`DESC_INDEX`] and [`LAYOUT_INDEX`].
const IDS: usize = 64;

/// Position of each id in `specs` (`u8::MAX`: not read by the hook).
const fn index_table(specs: &[Spec]) -> [u8; IDS] {
    let mut t = [u8::MAX; IDS];
    let mut i = 0;
    while i < specs.len() {
        t[specs[i].id as usize] = i as u8;
        i += 1;
    }
    t
}

const DESC_INDEX: [u8; IDS] = index_table(&DESC_SPECS);
const LAYOUT_INDEX: [u8; IDS] = index_table(&LAYOUT_SPECS);

/// Position of attribute `id` in `specs` ([`DESC`] or [`LAYOUT`], or a scan).
#[inline]
fn index(specs: &[Spec], id: c_int) -> Option<usize> {
    let table = if std::ptr::eq(specs, &DESC[..]) {
        &DESC_INDEX
    } else if std::ptr::eq(specs, &LAYOUT[..]) {
        &LAYOUT_INDEX
    } else {
        return specs.iter().position(|s| s.id == id);
    };
    let i = *table.get(usize::try_from(id).ok()?)?;
    (i != u8::MAX).then_some(i as usize)
}

/// Most attributes of one kind of object.
const MAX: usize = 21;
/// Slots of each table (a power of two).
const SLOTS: usize = 512;
/// Classes whose first object's values are remembered, per kind.
const MAX_CLASSES: usize = 64;

/// The attributes of one object as the getters would return them: `vals[i]` for
/// `specs[i]` (its bytes, little-endian), `None` where the getter fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Snapshot {
    vals: [Option<u64>; MAX],
}

impl Snapshot {
    /// Every attribute absent.
    pub const EMPTY: Snapshot = Snapshot { vals: [None; MAX] };

    /// The `N` bytes of attribute `id` under `specs`, as a getter of `N` bytes returns
    /// them; `None` when the attribute is not one of them, has another size, or the
    /// getter fails for it.
    #[inline]
    pub fn get<const N: usize>(&self, specs: &[Spec], id: c_int) -> Option<[u8; N]> {
        let i = index(specs, id)?;
        if specs[i].size != N {
            return None;
        }
        let v = self.vals[i]?.to_le_bytes();
        let mut out = [0u8; N];
        out.copy_from_slice(&v[..N]);
        Some(out)
    }

    /// Reads every attribute of `specs` with `read(id, size)` (the real getter).
    pub fn read(specs: &[Spec], mut read: impl FnMut(c_int, usize) -> Option<u64>) -> Self {
        let mut s = Snapshot::EMPTY;
        for (i, sp) in specs.iter().enumerate() {
            s.vals[i] = read(sp.id, sp.size);
        }
        s
    }

    /// Sets attribute `id` to `bytes` as a successful setter did; false when it is
    /// one of `specs` but `bytes` has another size (the entry is then not to be
    /// trusted). Attributes not in `specs` are not read by the hook: ignored.
    fn set(&mut self, specs: &[Spec], id: c_int, bytes: &[u8]) -> bool {
        let Some(i) = index(specs, id) else {
            return true;
        };
        if bytes.len() != specs[i].size {
            return false;
        }
        let mut v = [0u8; 8];
        v[..bytes.len()].copy_from_slice(bytes);
        self.vals[i] = Some(u64::from_le_bytes(v));
        true
    }
}

struct Slot {
    /// Even: stable; odd: being written.
    seq: AtomicU32,
    key: AtomicUsize,
    /// Bit i: `vals[i]` holds a value.
    present: AtomicU64,
    vals: [AtomicU64; MAX],
}

#[allow(clippy::declare_interior_mutable_const)]
const SLOT: Slot = Slot {
    seq: AtomicU32::new(0),
    key: AtomicUsize::new(0),
    present: AtomicU64::new(0),
    vals: [const { AtomicU64::new(0) }; MAX],
};

/// One kind of object: descriptors or layouts.
pub struct Table {
    specs: &'static [Spec],
    slots: [Slot; SLOTS],
    /// The values of the first object of each class, as the getters returned them
    /// (filled from the front; read without a lock).
    classes: [OnceLock<(u64, Snapshot)>; MAX_CLASSES],
}

/// Matmul descriptors.
pub static DESCS: Table = Table::new(&DESC);
/// Matrix layouts.
pub static LAYOUTS: Table = Table::new(&LAYOUT);

/// Cleared for good after a sampled call found a followed object that differed from
/// cuBLASLt's: the tables are then no longer read.
static FOLLOWING: AtomicBool = AtomicBool::new(true);

/// Whether followed objects are still read from the tables.
pub fn following() -> bool {
    FOLLOWING.load(Ordering::Relaxed)
}

/// Stops reading the tables for the rest of the process.
pub fn stop_following() {
    FOLLOWING.store(false, Ordering::Relaxed);
}

impl Table {
    const fn new(specs: &'static [Spec]) -> Table {
        Table {
            specs,
            slots: [SLOT; SLOTS],
            classes: [const { OnceLock::new() }; MAX_CLASSES],
        }
    }

    fn slot(&self, key: usize) -> &Slot {
        let i = (key >> 4).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - SLOTS.trailing_zeros());
        &self.slots[i % SLOTS]
    }

    /// Runs `write` with the slot of `key` held. A slot that cannot be had after a long
    /// wait (a writer stopped in it: a fork, a real-time thread) stops the following
    /// for good instead of waiting on: the tables are then no longer read.
    fn write(&self, key: usize, write: impl FnOnce(&Slot)) {
        let slot = self.slot(key);
        let mut spins = 0u32;
        let seq = loop {
            if spins >= 1 << 20 {
                stop_following();
                return;
            }
            let s = slot.seq.load(Ordering::Relaxed);
            if s.is_multiple_of(2)
                && slot
                    .seq
                    .compare_exchange_weak(s, s + 1, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                break s;
            }
            spins += 1;
            if spins.is_multiple_of(64) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        };
        fence(Ordering::Release);
        write(slot);
        slot.seq.store(seq.wrapping_add(2), Ordering::Release);
    }

    fn store(slot: &Slot, key: usize, s: &Snapshot) {
        let mut present = 0u64;
        for (i, v) in s.vals.iter().enumerate() {
            if let Some(v) = v {
                present |= 1 << i;
                slot.vals[i].store(*v, Ordering::Relaxed);
            }
        }
        slot.present.store(present, Ordering::Relaxed);
        slot.key.store(key, Ordering::Relaxed);
    }

    /// The attributes of a followed object; `None` when it has no entry (or its slot
    /// is being written).
    pub fn get(&self, key: usize) -> Option<Snapshot> {
        if key == 0 || !following() {
            return None;
        }
        let slot = self.slot(key);
        let before = slot.seq.load(Ordering::Acquire);
        if before % 2 == 1 || slot.key.load(Ordering::Relaxed) != key {
            return None;
        }
        let present = slot.present.load(Ordering::Relaxed);
        let mut s = Snapshot::EMPTY;
        for (i, v) in s.vals.iter_mut().enumerate().take(self.specs.len()) {
            if present & (1 << i) != 0 {
                *v = Some(slot.vals[i].load(Ordering::Relaxed));
            }
        }
        fence(Ordering::Acquire);
        (slot.seq.load(Ordering::Relaxed) == before).then_some(s)
    }

    /// An object of class `class` was created at `key`, with the creation's arguments
    /// `args` (attribute id, bytes): it starts from its class's values, read with
    /// `read_class` (the real getters, on this object) for the first of its class
    /// (`None`: no getter, nothing followed).
    pub fn created(
        &self,
        key: usize,
        class: u64,
        args: &[(c_int, &[u8])],
        read_class: impl FnOnce() -> Option<Snapshot>,
    ) {
        if key == 0 {
            return;
        }
        let known = self
            .classes
            .iter()
            .map_while(OnceLock::get)
            .find(|(c, _)| *c == class)
            .map(|(_, s)| *s);
        let mut s = match known {
            Some(s) => s,
            None => {
                // No getter: nothing is followed (the hook reads nothing without one).
                let Some(s) = read_class() else { return };
                // The first empty place (another thread may take it first: then the
                // next; a class recorded twice is harmless).
                for place in &self.classes {
                    if place.set((class, s)).is_ok() {
                        break;
                    }
                }
                s
            }
        };
        let ok = args.iter().all(|(id, bytes)| s.set(self.specs, *id, bytes));
        self.write(key, |slot| {
            if ok {
                Table::store(slot, key, &s);
            } else {
                slot.key.store(0, Ordering::Relaxed);
            }
        });
    }

    /// A setter succeeded on `key`: the attribute's new bytes go into its entry.
    pub fn set(&self, key: usize, id: c_int, bytes: &[u8]) {
        if key == 0 {
            return;
        }
        let Some(i) = index(self.specs, id) else {
            return;
        };
        self.write(key, |slot| {
            if slot.key.load(Ordering::Relaxed) != key {
                return;
            }
            if bytes.len() != self.specs[i].size {
                slot.key.store(0, Ordering::Relaxed);
                return;
            }
            let mut v = [0u8; 8];
            v[..bytes.len()].copy_from_slice(bytes);
            slot.vals[i].store(u64::from_le_bytes(v), Ordering::Relaxed);
            slot.present.fetch_or(1 << i, Ordering::Relaxed);
        });
    }

    /// `key` is destroyed, or not to be trusted: its entry goes.
    pub fn forget(&self, key: usize) {
        if key == 0 {
            return;
        }
        self.write(key, |slot| {
            if slot.key.load(Ordering::Relaxed) == key {
                slot.key.store(0, Ordering::Relaxed);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> &'static Table {
        Box::leak(Box::new(Table::new(&LAYOUT)))
    }

    /// A layout's getters: every attribute present, its value id * 100 (+ size).
    fn class_values() -> Snapshot {
        Snapshot::read(&LAYOUT, |id, size| Some(id as u64 * 100 + size as u64))
    }

    #[test]
    fn an_object_starts_from_its_class_with_its_arguments_and_follows_its_setters() {
        let t = table();
        let mut reads = 0;
        let rows = 7u64.to_le_bytes();
        t.created(0x1000, 1, &[(la::ROWS, &rows)], || {
            reads += 1;
            Some(class_values())
        });
        let s = t.get(0x1000).expect("an entry");
        assert_eq!(s.get::<8>(&LAYOUT, la::ROWS), Some(rows));
        assert_eq!(
            s.get::<4>(&LAYOUT, la::ORDER),
            Some(((la::ORDER as u32) * 100 + 4).to_le_bytes())
        );
        // The class is read once: a second object of it reads nothing.
        t.created(0x2000, 1, &[], || panic!("the class is known"));
        assert_eq!(reads, 1);
        // A setter's bytes; one of the wrong size drops the entry.
        t.set(0x2000, la::LD, &99i64.to_le_bytes());
        assert_eq!(
            t.get(0x2000).unwrap().get::<8>(&LAYOUT, la::LD),
            Some(99i64.to_le_bytes())
        );
        t.set(0x2000, 1234, &[1, 2, 3]); // an attribute the hook does not read
        assert!(t.get(0x2000).is_some());
        t.set(0x2000, la::LD, &5i32.to_le_bytes());
        assert_eq!(t.get(0x2000), None);
        // A getter of another size finds nothing; destruction drops the entry.
        assert_eq!(t.get(0x1000).unwrap().get::<4>(&LAYOUT, la::ROWS), None);
        t.forget(0x1000);
        assert_eq!(t.get(0x1000), None);
        // A setter on an object without an entry does nothing.
        t.set(0x3000, la::LD, &1i64.to_le_bytes());
        assert_eq!(t.get(0x3000), None);
    }

    #[test]
    fn an_attribute_the_getters_fail_for_stays_absent() {
        let t = table();
        t.created(0x10, 2, &[], || {
            Some(Snapshot::read(&LAYOUT, |id, _| {
                (id != la::PLANE_OFFSET).then_some(1)
            }))
        });
        let s = t.get(0x10).unwrap();
        assert_eq!(s.get::<8>(&LAYOUT, la::PLANE_OFFSET), None);
        assert_eq!(s.get::<8>(&LAYOUT, la::ROWS), Some(1u64.to_le_bytes()));
    }

    #[test]
    fn a_second_object_in_the_same_slot_evicts_the_first() {
        let t = table();
        let a = 0x4000usize;
        let b = (a..)
            .step_by(16)
            .skip(1)
            .find(|&k| std::ptr::eq(t.slot(k), t.slot(a)))
            .unwrap();
        t.created(a, 3, &[], || Some(class_values()));
        t.created(b, 3, &[], || Some(class_values()));
        assert_eq!(t.get(a), None);
        assert!(t.get(b).is_some());
        // The first one's setters and destruction leave the second's entry alone.
        t.set(a, la::LD, &1i64.to_le_bytes());
        t.forget(a);
        assert_eq!(t.get(b), Some(class_values()));
    }

    #[test]
    fn readers_never_see_a_half_written_entry() {
        // A writer re-creates one object alternately from two classes whose values
        // differ in every attribute while a reader copies it: every copy is wholly
        // one or the other, or absent.
        let t = table();
        let key = 0x8000;
        let one = Snapshot::read(&LAYOUT, |_, _| Some(1));
        let two = Snapshot::read(&LAYOUT, |_, _| Some(2));
        t.created(key, 9, &[], || Some(one));
        t.created(key, 10, &[], || Some(two));
        let mut seen = [0u32; 3];
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0..50_000 {
                    t.created(key, 9 + (i % 2), &[], || unreachable!("both classes known"));
                }
            });
            for _ in 0..50_000 {
                match t.get(key) {
                    None => seen[0] += 1,
                    Some(s) if s == one => seen[1] += 1,
                    Some(s) if s == two => seen[2] += 1,
                    Some(s) => panic!("a torn copy: {s:?}"),
                }
            }
        });
        assert!(seen[1] + seen[2] > 0, "{seen:?}");
    }
}
