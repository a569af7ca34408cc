//! The ring allocator over one big mapped pinned buffer per CUDA context.
//!
//! Sampled calls take a slot (jobs, index lists and gathered outputs) at hook time, in
//! call order; the background thread frees it when the call's gather has completed,
//! which may be out of order across streams. The ring hands out contiguous byte ranges
//! from a moving head and reclaims space only from its oldest live allocation, so a
//! freed slot behind a still-busy one waits for it: simple, no fragmentation, O(1)
//! amortised. When there is no room the caller records a gap (`RingFull`); the ring
//! never blocks and never grows.
//!
//! Pure bookkeeping on offsets: it never touches the memory itself.

use std::collections::VecDeque;

/// Every allocation starts at a multiple of this (the gather reads u64 lists and
/// elements of up to 8 bytes; 256 keeps slots on separate cache lines and DMA bursts).
pub const ALIGN: usize = 256;

#[derive(Clone, Copy, Debug)]
struct Live {
    offset: usize,
    len: usize,
    freed: bool,
}

/// Offsets into a buffer of `capacity` bytes.
#[derive(Debug)]
pub struct Ring {
    capacity: usize,
    live: VecDeque<Live>,
    used: usize,
}

impl Ring {
    /// A ring over `capacity` bytes (rounded down to [`ALIGN`]).
    pub fn new(capacity: usize) -> Self {
        Ring {
            capacity: capacity - capacity % ALIGN,
            live: VecDeque::new(),
            used: 0,
        }
    }

    /// Usable bytes.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes held by live (not yet reclaimed) allocations, padding included.
    pub fn used(&self) -> usize {
        self.used
    }

    /// Live allocations, freed-but-not-reclaimed ones included.
    pub fn live(&self) -> usize {
        self.live.len()
    }

    /// Takes `len` bytes; returns their offset, or `None` when there is no room (or
    /// `len` is 0 or larger than the ring).
    pub fn alloc(&mut self, len: usize) -> Option<usize> {
        let len = len.checked_add(ALIGN - 1)? / ALIGN * ALIGN;
        if len == 0 || len > self.capacity {
            return None;
        }
        let offset = match (self.live.front(), self.live.back()) {
            (Some(first), Some(last)) => {
                let tail = first.offset;
                let head = last.offset + last.len;
                if last.offset >= first.offset {
                    // Not wrapped: free space is [head, capacity) then [0, tail).
                    if self.capacity - head >= len {
                        head
                    } else if tail >= len {
                        0
                    } else {
                        return None;
                    }
                } else if tail - head >= len {
                    // Wrapped: free space is [head, tail).
                    head
                } else {
                    return None;
                }
            }
            _ => 0,
        };
        self.live.push_back(Live {
            offset,
            len,
            freed: false,
        });
        self.used += len;
        Some(offset)
    }

    /// Returns the allocation at `offset`. Space is reclaimed once every older
    /// allocation has been freed too. Unknown offsets are ignored (returns false).
    pub fn free(&mut self, offset: usize) -> bool {
        let Some(entry) = self
            .live
            .iter_mut()
            .find(|l| l.offset == offset && !l.freed)
        else {
            return false;
        };
        entry.freed = true;
        while let Some(first) = self.live.front() {
            if !first.freed {
                break;
            }
            self.used -= first.len;
            self.live.pop_front();
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_are_aligned_and_disjoint() {
        let mut r = Ring::new(4096);
        let a = r.alloc(1).unwrap();
        let b = r.alloc(300).unwrap();
        let c = r.alloc(256).unwrap();
        assert_eq!((a, b, c), (0, 256, 768));
        assert_eq!(r.used(), 1024);
        assert!(r.alloc(0).is_none());
        assert!(r.alloc(4097).is_none());
    }

    #[test]
    fn full_ring_refuses_then_reclaims_in_order() {
        let mut r = Ring::new(1024);
        let s: Vec<usize> = (0..4).map(|_| r.alloc(200).unwrap()).collect();
        assert_eq!(s, vec![0, 256, 512, 768]);
        assert!(r.alloc(1).is_none(), "full");
        // Freeing a younger slot reclaims nothing while the oldest is busy.
        assert!(r.free(512));
        assert!(r.alloc(1).is_none());
        assert_eq!(r.live(), 4);
        assert!(r.free(0));
        assert_eq!(r.used(), 768);
        // The head is at the end: the next slot wraps to offset 0.
        assert_eq!(r.alloc(256), Some(0));
        assert!(r.alloc(256).is_none(), "256..512 still busy");
        assert!(r.free(256));
        // 256 and 512 reclaimed; wrapped free space is [256, 768).
        assert_eq!(r.alloc(512), Some(256));
        assert!(r.alloc(1).is_none());
        assert!(!r.free(12345), "unknown offsets are ignored");
        assert!(!r.free(512), "a reclaimed offset is not live any more");
    }

    #[test]
    fn wrap_needs_room_before_the_tail() {
        let mut r = Ring::new(1024);
        let a = r.alloc(512).unwrap();
        let b = r.alloc(256).unwrap();
        r.free(a);
        // 256 bytes at the end, 512 before the tail at 512: a 512-byte slot wraps.
        assert_eq!(r.alloc(512), Some(0));
        // Wrapped, nothing between head 512 and tail 512.
        assert!(r.alloc(1).is_none());
        r.free(b);
        r.free(0);
        assert_eq!(r.used(), 0);
        assert_eq!(r.alloc(1024), Some(0), "empty again: the whole ring");
    }

    #[test]
    fn random_workload_never_overlaps() {
        // A deterministic pseudo-random mix of allocations and out-of-order frees.
        let mut r = Ring::new(64 * 1024);
        let mut live: Vec<(usize, usize)> = Vec::new();
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if !x.is_multiple_of(3) || live.is_empty() {
                let len = 1 + (x >> 20) as usize % 9000;
                if let Some(off) = r.alloc(len) {
                    assert_eq!(off % ALIGN, 0);
                    assert!(off + len <= r.capacity());
                    for &(o, l) in &live {
                        assert!(off + len <= o || o + l <= off, "overlap");
                    }
                    live.push((off, len));
                }
            } else {
                let i = (x >> 33) as usize % live.len();
                let (off, _) = live.swap_remove(i);
                assert!(r.free(off));
            }
        }
        for (off, _) in live.drain(..) {
            r.free(off);
        }
        assert_eq!(r.used(), 0);
        assert_eq!(r.live(), 0);
    }
}
