//! The lane code in AVX-512 registers: all [`LANES`] lanes of a step in one register,
//! every operation the portable definition's own (multiply, add, the two comparisons
//! as `vminpd`/`vmaxpd`, which pick as the definition's `if` does, the absolute value by
//! clearing the sign bit), so the results are the same to the bit as the definition's
//! and the AVX2 code's (tested). Half the instructions of the AVX2 code per step.
//!
//! Every function here requires AVX-512F and AVX-512BW ([`super::Isa::Avx512`]).

use std::arch::x86_64::*;

use super::{AbsLanes, Lanes, LANES};

/// One step: the [`LANES`] values, lane 0 lowest.
type Step = __m512d;

/// Each lane's sum of |x| and largest |x| over the steps counted, as
/// [`super::lay_out_body`] computes them.
struct Acc {
    l1: __m512d,
    max: __m512d,
}

impl Acc {
    #[inline(always)]
    unsafe fn new() -> Acc {
        // SAFETY: AVX-512F (the module's contract).
        unsafe {
            Acc {
                l1: _mm512_setzero_pd(),
                max: _mm512_setzero_pd(),
            }
        }
    }

    #[inline(always)]
    unsafe fn count(&mut self, x: Step) {
        // SAFETY: AVX-512F (the module's contract).
        unsafe {
            let ax = _mm512_abs_pd(x);
            self.l1 = _mm512_add_pd(self.l1, ax);
            // vmaxpd(x, y) is `if x > y { x } else { y }`
            self.max = _mm512_max_pd(ax, self.max);
        }
    }

    #[inline(always)]
    unsafe fn lanes(&self) -> AbsLanes {
        // SAFETY: AVX-512F (the module's contract).
        unsafe { (lanes(self.l1), lanes(self.max)) }
    }
}

/// The lane dot product's running sums, as [`super::lane_dot_body`] computes them.
struct Dot {
    acc: __m512d,
    lo: __m512d,
    hi: __m512d,
    s: __m512d,
}

impl Dot {
    #[inline(always)]
    unsafe fn new() -> Dot {
        // SAFETY: AVX-512F (the module's contract).
        unsafe {
            let zero = _mm512_setzero_pd();
            Dot {
                acc: zero,
                lo: zero,
                hi: zero,
                s: zero,
            }
        }
    }

    /// One step: `x` times the step `y`.
    #[inline(always)]
    unsafe fn step(&mut self, x: Step, y: Step) {
        // SAFETY: AVX-512F (the module's contract).
        unsafe {
            let p = _mm512_mul_pd(x, y);
            self.acc = _mm512_add_pd(self.acc, p);
            // vminpd(x, y) is `if x < y { x } else { y }`, vmaxpd the same with >
            self.lo = _mm512_min_pd(self.acc, self.lo);
            self.hi = _mm512_max_pd(self.acc, self.hi);
            self.s = _mm512_add_pd(self.s, _mm512_abs_pd(p));
        }
    }

    /// Per lane: the running sum, the smallest and largest prefix sums, the sum of
    /// |products|.
    #[inline(always)]
    unsafe fn lanes(&self) -> [[f64; LANES]; 4] {
        // SAFETY: AVX-512F (the module's contract).
        unsafe {
            [
                lanes(self.acc),
                lanes(self.lo),
                lanes(self.hi),
                lanes(self.s),
            ]
        }
    }
}

/// The register's lanes as an array.
#[inline(always)]
unsafe fn lanes(x: __m512d) -> [f64; LANES] {
    let mut o = [0.0f64; LANES];
    // SAFETY: AVX-512F (the module's contract); `o` has room for eight f64.
    unsafe { _mm512_storeu_pd(o.as_mut_ptr(), x) };
    o
}

/// Eight bf16 (in lane order) as f64, decoded as [`mmaudit_protocol::num::decode`]
/// does (the bits are the upper half of an f32, widened exactly).
#[inline(always)]
unsafe fn widen(halves: __m128i) -> Step {
    // SAFETY: AVX-512F (the module's contract).
    unsafe {
        let f32s = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(halves), 16));
        _mm512_cvtps_pd(f32s)
    }
}

/// The steps of `seg * LANES` bf16 elements (little-endian bytes, segment `l` at
/// elements `l * seg ..`), handed to `f` with their step number, in order. Eight steps
/// at a time: eight elements of each segment loaded together and transposed by two
/// word permutations.
///
/// # Safety
/// AVX-512F and AVX-512BW are present and `bytes` holds at least `2 * seg * LANES`
/// bytes.
#[inline(always)]
unsafe fn bf16_steps(bytes: &[u8], seg: usize, mut f: impl FnMut(usize, Step)) {
    let src = bytes.as_ptr().cast::<u16>();
    // Word p of a transposed half is step p / 8 (of four), lane p % 8; the sources
    // hold lane l's eight words at l * 8 (lanes 0-3 in the first register, 4-7 in the
    // second, which the permutation numbers from 32).
    let index = |first: usize| -> __m512i {
        let w: [i16; 32] = std::array::from_fn(|p| ((p % 8) * 8 + first + p / 8) as i16);
        // SAFETY: AVX-512F (the caller's contract); 64 bytes read from a 64-byte array.
        unsafe { _mm512_loadu_si512(w.as_ptr().cast()) }
    };
    // SAFETY: the caller's contract; element j of segment l is at l * seg + j < seg *
    // LANES, within the bytes (read unaligned; x86 is little-endian, as the stream).
    unsafe {
        let (lo, hi) = (index(0), index(4));
        let mut j = 0;
        while j + 8 <= seg {
            let r = |l: usize| _mm_loadu_si128(src.add(l * seg + j).cast());
            let four = |l: usize| {
                let x = _mm512_castsi128_si512(r(l));
                let x = _mm512_inserti32x4(x, r(l + 1), 1);
                let x = _mm512_inserti32x4(x, r(l + 2), 2);
                _mm512_inserti32x4(x, r(l + 3), 3)
            };
            let (a, b) = (four(0), four(4));
            for (h, index) in [lo, hi].into_iter().enumerate() {
                let t = _mm512_permutex2var_epi16(a, index, b);
                f(j + 4 * h, widen(_mm512_extracti32x4_epi32(t, 0)));
                f(j + 4 * h + 1, widen(_mm512_extracti32x4_epi32(t, 1)));
                f(j + 4 * h + 2, widen(_mm512_extracti32x4_epi32(t, 2)));
                f(j + 4 * h + 3, widen(_mm512_extracti32x4_epi32(t, 3)));
            }
            j += 8;
        }
        while j < seg {
            f(j, widen(super::avx2::step_at(src, seg, j)));
            j += 1;
        }
    }
}

/// [`super::lane_dot_body`]'s loop over the laid-out steps: the lane sums for
/// [`super::lane_dot_tail`].
///
/// # Safety
/// AVX-512F and AVX-512BW are present.
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn lane_dot(a: &Lanes, b: &Lanes) -> [[f64; LANES]; 4] {
    let n = a.main.len().min(b.main.len()) / LANES * LANES;
    let (x, y) = (a.main.as_ptr(), b.main.as_ptr());
    // SAFETY: AVX-512F (this function's requirement); i + 8 <= n, within both vectors.
    unsafe {
        let mut dot = Dot::new();
        let mut i = 0;
        while i < n {
            dot.step(_mm512_loadu_pd(x.add(i)), _mm512_loadu_pd(y.add(i)));
            i += LANES;
        }
        dot.lanes()
    }
}

/// [`super::lay_out_body`] of the values of bf16 elements (little-endian bytes).
///
/// # Safety
/// AVX-512F and AVX-512BW are present.
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn lay_out_bf16(bytes: &[u8], seg: usize, out: &mut Vec<f64>) -> AbsLanes {
    assert!(bytes.len() >= 2 * seg * LANES);
    out.reserve(seg * LANES);
    let dst = out.spare_capacity_mut().as_mut_ptr().cast::<f64>();
    // SAFETY: AVX-512 (this function's requirement); `dst` has room for seg * LANES
    // elements (reserved), all written before the length is set.
    unsafe {
        let mut acc = Acc::new();
        bf16_steps(bytes, seg, |j, x| {
            _mm512_storeu_pd(dst.add(j * LANES), x);
            acc.count(x);
        });
        out.set_len(out.len() + seg * LANES);
        acc.lanes()
    }
}

/// A bf16 row's `seg * LANES` elements (little-endian bytes) decoded, laid out and
/// multiplied by the laid-out column `b` at once, never stored: the lane sums for
/// [`super::lane_dot_tail`], and the row's lane sums and maxima of |x|. (With 32
/// registers the eight transposed steps and the running sums fit together: no block
/// in memory between decoding and multiplying, as the AVX2 code needs.)
///
/// # Safety
/// AVX-512F and AVX-512BW are present.
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn lane_dot_bf16(
    bytes: &[u8],
    seg: usize,
    b: &Lanes,
) -> ([[f64; LANES]; 4], AbsLanes) {
    assert!(bytes.len() >= 2 * seg * LANES && b.main.len() >= seg * LANES);
    let y = b.main.as_ptr();
    // SAFETY: AVX-512 (this function's requirement); the steps are within the bytes
    // and the column (asserted above).
    unsafe {
        let mut acc = Acc::new();
        let mut dot = Dot::new();
        bf16_steps(bytes, seg, |j, x| {
            acc.count(x);
            dot.step(x, _mm512_loadu_pd(y.add(j * LANES)));
        });
        (dot.lanes(), acc.lanes())
    }
}
