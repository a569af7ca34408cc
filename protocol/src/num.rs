//! Number formats: the exact value of every element encoding the protocol carries, and
//! the roundings a prover applies to produce honest outputs.
//!
//! Samples travel as raw little-endian bytes in the call's own element types. The
//! verifier turns them into `f64` with [`decode_into`]: every supported type decodes
//! *exactly* (each f32, f16, bf16, fp8, i8 and i32 value is an f64 value), so the
//! recomputation starts from the very numbers the GPU read. The other direction,
//! [`round_to`] and [`encode_into`], is round-to-nearest-even onto a type's grid with
//! that type's overflow rule; a prover (or a simulated GPU) uses it to store results.
//!
//! The fp8 formats are decoded by their bit rules, not by lookup tables:
//!
//! - E4M3 is the OCP / NVIDIA "FN" variant (`__nv_fp8_e4m3`): 1 sign, 4 exponent bits
//!   with bias 7, 3 mantissa bits, subnormals, no infinities, and one NaN pattern per
//!   sign (`0x7f`, `0xff`). Largest finite value 448, smallest subnormal 2^-9.
//! - E5M2 (`__nv_fp8_e5m2`) is IEEE-like: bias 15, 2 mantissa bits, infinities
//!   (`0x7c`, `0xfc`) and NaNs. Largest finite value 57344, smallest subnormal 2^-16. It
//!   is exactly the upper byte of an IEEE binary16.
//!
//! Rounding to f16 and bf16 is done here by one generic rule rather than by `half`'s
//! `from_f64`, which (depending on the CPU) rounds through f32 first or drops low bits
//! before rounding and so is not correctly rounded for every f64 input. Decoding still
//! uses `half`; the tests check the two agree on every 16-bit pattern.
//!
//! This module must never allocate on behalf of untrusted lengths beyond the bytes it is
//! given, and never panic on any input.

use crate::call::DType;

/// An error decoding element bytes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NumError {
    /// The byte count is not a multiple of the element size (or, for
    /// [`decode_one`], not exactly one element).
    #[error("{len} bytes is not a whole number of {} elements ({} bytes each)", dtype.name(), dtype.size())]
    Length {
        /// The element type being decoded.
        dtype: DType,
        /// The byte count given.
        len: usize,
    },
}

/// What happens to a value beyond a format's largest finite value when rounding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overflow {
    /// IEEE round-to-nearest: values that round beyond the largest finite value become
    /// infinity (f32, f16, bf16, tf32, f64).
    Infinity,
    /// Clamp to the largest finite value of the same sign, infinities included (fp8
    /// outputs of cuBLASLt, `__NV_SATFINITE`; int8 outputs).
    Saturate,
    /// Two's-complement wrap-around of the (rounded) integer (i32 accumulators).
    Wrap,
}

/// The facts about one number format that decoding, rounding and the tolerance use.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Format {
    /// Short lower-case name.
    pub name: &'static str,
    /// True for the integer types (i8, i32).
    pub integer: bool,
    /// Significand bits including the implicit leading bit (floating-point formats);
    /// value bits excluding the sign (integers).
    pub precision: u32,
    /// Exponent of the smallest normal number (floating-point formats; 0 for integers).
    pub min_exp: i32,
    /// Largest finite value.
    pub max_finite: f64,
    /// Overflow rule applied by [`Format::round`].
    pub overflow: Overflow,
}

/// IEEE binary64.
pub const F64: Format = Format {
    name: "f64",
    integer: false,
    precision: 53,
    min_exp: -1022,
    max_finite: f64::MAX,
    overflow: Overflow::Infinity,
};
/// IEEE binary32.
pub const F32: Format = Format {
    name: "f32",
    integer: false,
    precision: 24,
    min_exp: -126,
    max_finite: f32::MAX as f64,
    overflow: Overflow::Infinity,
};
/// TensorFloat-32: binary32's exponent range with 10 explicit mantissa bits. Not a
/// storage type; the input format of `CUBLAS_COMPUTE_32F_FAST_TF32`.
pub const TF32: Format = Format {
    name: "tf32",
    integer: false,
    precision: 11,
    min_exp: -126,
    // (2 - 2^-10) * 2^127
    max_finite: 3.4011621342146535e38,
    overflow: Overflow::Infinity,
};
/// IEEE binary16.
pub const F16: Format = Format {
    name: "f16",
    integer: false,
    precision: 11,
    min_exp: -14,
    max_finite: 65504.0,
    overflow: Overflow::Infinity,
};
/// bfloat16.
pub const BF16: Format = Format {
    name: "bf16",
    integer: false,
    precision: 8,
    min_exp: -126,
    // (2 - 2^-7) * 2^127
    max_finite: 3.3895313892515355e38,
    overflow: Overflow::Infinity,
};
/// fp8 E4M3 ("FN": no infinities); results saturate.
pub const E4M3: Format = Format {
    name: "e4m3",
    integer: false,
    precision: 4,
    min_exp: -6,
    max_finite: 448.0,
    overflow: Overflow::Saturate,
};
/// fp8 E5M2; results saturate (as cuBLASLt's fp8 outputs do).
pub const E5M2: Format = Format {
    name: "e5m2",
    integer: false,
    precision: 3,
    min_exp: -14,
    max_finite: 57344.0,
    overflow: Overflow::Saturate,
};
/// Signed 8-bit integer; results saturate.
pub const I8: Format = Format {
    name: "i8",
    integer: true,
    precision: 7,
    min_exp: 0,
    max_finite: 127.0,
    overflow: Overflow::Saturate,
};
/// Signed 32-bit integer; results wrap.
pub const I32: Format = Format {
    name: "i32",
    integer: true,
    precision: 31,
    min_exp: 0,
    max_finite: 2147483647.0,
    overflow: Overflow::Wrap,
};

/// The format of a [`DType`].
pub fn format(dtype: DType) -> &'static Format {
    match dtype {
        DType::F32 => &F32,
        DType::F16 => &F16,
        DType::BF16 => &BF16,
        DType::F8E4M3 => &E4M3,
        DType::F8E5M2 => &E5M2,
        DType::I8 => &I8,
        DType::I32 => &I32,
        DType::F64 => &F64,
    }
}

/// 2^n as an f64, exactly, for -1074 <= n <= 1023 (clamped outside).
pub fn exp2i(n: i32) -> f64 {
    if n >= -1022 {
        f64::from_bits(((n.min(1023) + 1023) as u64) << 52)
    } else {
        // Subnormal: a single mantissa bit.
        f64::from_bits(1u64 << (n.max(-1074) + 1074))
    }
}

impl Format {
    /// Unit roundoff of round-to-nearest: half the spacing of the grid relative to a
    /// value, 2^-precision (f32 2^-24, f16 2^-11, bf16 2^-8, e4m3 2^-4, e5m2 2^-3).
    /// Zero for integers, whose rounding error is absolute (see [`Format::min_subnormal`]).
    pub fn unit_roundoff(&self) -> f64 {
        if self.integer {
            0.0
        } else {
            exp2i(-(self.precision as i32))
        }
    }

    /// Smallest positive value (the spacing of the grid near zero): the smallest
    /// subnormal for floating-point formats, 1 for integers.
    pub fn min_subnormal(&self) -> f64 {
        if self.integer {
            1.0
        } else {
            exp2i(self.min_exp - (self.precision as i32 - 1))
        }
    }

    /// Smallest positive normal value (1 for integers).
    pub fn min_normal(&self) -> f64 {
        if self.integer {
            1.0
        } else {
            exp2i(self.min_exp)
        }
    }

    /// The value this format stores for `x` under round-to-nearest, ties to even, with
    /// this format's [`Overflow`] rule. NaN stays NaN for floating-point formats and
    /// becomes 0 for integers (as CUDA's float-to-int conversions do); infinities
    /// saturate under [`Overflow::Saturate`] and [`Overflow::Wrap`].
    pub fn round(&self, x: f64) -> f64 {
        if self.integer {
            return self.round_integer(x);
        }
        if x.is_nan() {
            return f64::NAN;
        }
        if x.is_infinite() {
            return match self.overflow {
                Overflow::Infinity => x,
                _ => self.max_finite.copysign(x),
            };
        }
        if x == 0.0 || self.precision >= 53 {
            return x;
        }
        if self.precision == 24 && self.min_exp == -126 && self.overflow == Overflow::Infinity {
            // The hardware conversion is exactly this rule, and much faster.
            return f64::from(x as f32);
        }
        let quantum = self.spacing(x);
        // Both the division and the multiplication are exact (scaling by a power of
        // two well inside f64's range); only the integer rounding rounds.
        let r = round_ties_even_small(x / quantum) * quantum;
        if r.abs() > self.max_finite {
            match self.overflow {
                Overflow::Infinity => f64::INFINITY.copysign(x),
                _ => self.max_finite.copysign(x),
            }
        } else {
            r
        }
    }

    /// The grid spacing of this (floating-point, below f64) format at `|x|`: the
    /// distance from the value of `|x|`'s binade to the next one up (the spacing of the
    /// subnormals below the smallest normal, zero included).
    pub fn spacing(&self, x: f64) -> f64 {
        // Exponent of |x| (f64 subnormals and zero report -1023, below every min_exp).
        let e = ((x.to_bits() >> 52) & 0x7ff) as i32 - 1023;
        exp2i(e.max(self.min_exp) - (self.precision as i32 - 1))
    }

    fn round_integer(&self, x: f64) -> f64 {
        if x.is_nan() {
            return 0.0;
        }
        let lo = -self.max_finite - 1.0;
        if x.is_infinite() {
            return if x > 0.0 { self.max_finite } else { lo };
        }
        let r = x.round_ties_even();
        match self.overflow {
            Overflow::Wrap => {
                // r is an integer; fmod by 2^(bits) is exact in f64.
                let m = 2.0 * (self.max_finite + 1.0);
                let w = r.rem_euclid(m);
                if w > self.max_finite {
                    w - m
                } else {
                    w
                }
            }
            _ => r.clamp(lo, self.max_finite),
        }
    }

    /// True when every finite value of `self` is exactly a value of `other` (so
    /// converting to `other` never rounds).
    pub fn is_subset_of(&self, other: &Format) -> bool {
        if other.integer {
            return self.integer && self.max_finite <= other.max_finite;
        }
        if self.integer {
            // Integers up to 2^p are exact in a format with p significand bits.
            return self.max_finite + 1.0 <= exp2i(other.precision as i32)
                && self.max_finite <= other.max_finite;
        }
        self.precision <= other.precision
            && self.min_subnormal() >= other.min_subnormal()
            && self.max_finite <= other.max_finite
    }
}

/// `y` rounded to the nearest integer, ties to even, for `|y| < 2^52`: adding and
/// removing 2^52 leaves no fraction bits, and IEEE addition rounds to nearest even.
/// (`f64::round_ties_even` does the same through a library call on baseline x86-64.)
fn round_ties_even_small(y: f64) -> f64 {
    const TWO_52: f64 = 4503599627370496.0;
    let r = (y.abs() + TWO_52) - TWO_52;
    r.copysign(y)
}

/// Decodes one fp8 E4M3 (FN) byte exactly.
pub fn decode_e4m3(b: u8) -> f64 {
    let sign = if b & 0x80 != 0 { -1.0 } else { 1.0 };
    let e = i32::from((b >> 3) & 0x0f);
    let m = f64::from(b & 0x07);
    if e == 0x0f && b & 0x07 == 0x07 {
        return f64::NAN;
    }
    if e == 0 {
        sign * m * exp2i(-9)
    } else {
        sign * (8.0 + m) * exp2i(e - 7 - 3)
    }
}

/// Decodes one fp8 E5M2 byte exactly.
pub fn decode_e5m2(b: u8) -> f64 {
    let sign = if b & 0x80 != 0 { -1.0 } else { 1.0 };
    let e = i32::from((b >> 2) & 0x1f);
    let m = f64::from(b & 0x03);
    if e == 0x1f {
        return if m == 0.0 {
            sign * f64::INFINITY
        } else {
            f64::NAN
        };
    }
    if e == 0 {
        sign * m * exp2i(-16)
    } else {
        sign * (4.0 + m) * exp2i(e - 15 - 2)
    }
}

/// The bits of a value already on an fp8 grid (`v == fmt.round(v)`, finite or NaN):
/// sign, biased exponent and mantissa by the same rules as decoding.
fn fp8_bits(v: f64, fmt: &Format, nan: u8) -> u8 {
    if v.is_nan() {
        return nan;
    }
    let sign = if v.is_sign_negative() { 0x80u8 } else { 0 };
    let mbits = fmt.precision - 1;
    let a = v.abs();
    if a < fmt.min_normal() {
        // Subnormal or zero: mantissa counts min_subnormal steps.
        return sign | (a / fmt.min_subnormal()) as u8;
    }
    let e = ((a.to_bits() >> 52) & 0x7ff) as i32 - 1023;
    let biased = (e - fmt.min_exp + 1) as u8;
    let m = (a / exp2i(e - mbits as i32)) as u8 - (1u8 << mbits);
    sign | (biased << mbits) | m
}

/// Encodes `x` as fp8 E4M3 (round to nearest even, saturating; NaN becomes `0x7f`).
pub fn encode_e4m3(x: f64) -> u8 {
    fp8_bits(E4M3.round(x), &E4M3, 0x7f)
}

/// Encodes `x` as fp8 E5M2 (round to nearest even, saturating; NaN becomes `0x7e`).
pub fn encode_e5m2(x: f64) -> u8 {
    fp8_bits(E5M2.round(x), &E5M2, 0x7e)
}

/// Decodes one element of `dtype` from exactly `dtype.size()` little-endian bytes.
pub fn decode_one(dtype: DType, bytes: &[u8]) -> Result<f64, NumError> {
    if bytes.len() != dtype.size() {
        return Err(NumError::Length {
            dtype,
            len: bytes.len(),
        });
    }
    Ok(decode_unchecked(dtype, bytes))
}

/// Decodes one element; `bytes.len() == dtype.size()` is the caller's guarantee.
fn decode_unchecked(dtype: DType, b: &[u8]) -> f64 {
    match dtype {
        DType::F32 => f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        DType::F16 => half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f64(),
        DType::BF16 => half::bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f64(),
        DType::F8E4M3 => decode_e4m3(b[0]),
        DType::F8E5M2 => decode_e5m2(b[0]),
        DType::I8 => f64::from(b[0] as i8),
        DType::I32 => f64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        DType::F64 => f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
    }
}

/// Decodes a run of little-endian elements of `dtype`, *appending* their exact values
/// to `out`. An error (byte count not a multiple of the element size) leaves `out`
/// untouched.
pub fn decode_into(dtype: DType, bytes: &[u8], out: &mut Vec<f64>) -> Result<(), NumError> {
    let size = dtype.size();
    if bytes.len() / size * size != bytes.len() {
        return Err(NumError::Length {
            dtype,
            len: bytes.len(),
        });
    }
    out.reserve(bytes.len() / size);
    // One loop per type, so that the type is not dispatched per element (the loops
    // vectorise); the others fall back to the element decoder.
    match dtype {
        DType::BF16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|c| bf16_value(u16::from_le_bytes([c[0], c[1]]))),
        ),
        DType::F32 => out.extend(
            bytes
                .chunks_exact(4)
                .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
        ),
        DType::F8E4M3 | DType::F8E5M2 => {
            let table = fp8_table(dtype);
            out.extend(bytes.iter().map(|&b| table[usize::from(b)]));
        }
        _ => out.extend(bytes.chunks_exact(size).map(|c| decode_unchecked(dtype, c))),
    }
    Ok(())
}

/// The value of a bf16 element: the upper half of an f32, so exact; NaN stays NaN.
#[inline]
fn bf16_value(bits: u16) -> f64 {
    f64::from(f32::from_bits(u32::from(bits) << 16))
}

/// The value of every byte of an fp8 type, built once: e4m3 for [`DType::F8E4M3`],
/// e5m2 for any other type.
fn fp8_table(dtype: DType) -> &'static [f64; 256] {
    static E4M3: std::sync::OnceLock<[f64; 256]> = std::sync::OnceLock::new();
    static E5M2: std::sync::OnceLock<[f64; 256]> = std::sync::OnceLock::new();
    if dtype == DType::F8E4M3 {
        E4M3.get_or_init(|| std::array::from_fn(|b| decode_e4m3(b as u8)))
    } else {
        E5M2.get_or_init(|| std::array::from_fn(|b| decode_e5m2(b as u8)))
    }
}

/// [`decode_into`] a fresh vector.
pub fn decode(dtype: DType, bytes: &[u8]) -> Result<Vec<f64>, NumError> {
    let mut out = Vec::new();
    decode_into(dtype, bytes, &mut out)?;
    Ok(out)
}

/// The value `dtype` stores for `x` under round-to-nearest-even: f16, bf16 and f32
/// overflow to infinity; fp8 and i8 saturate to their largest finite value of the same
/// sign (infinities included); i32 wraps as two's complement (after rounding a
/// non-integer to the nearest even integer); f64 is the identity. NaN stays NaN for the
/// floating-point types and becomes 0 for the integer types.
pub fn round_to(dtype: DType, x: f64) -> f64 {
    format(dtype).round(x)
}

/// Rounds `x` as [`round_to`] does and appends its little-endian bits. NaN is written as
/// the type's canonical quiet NaN (f32 `0x7fc00000`, f16 `0x7e00`, bf16 `0x7fc0`, e4m3
/// `0x7f`, e5m2 `0x7e`).
pub fn encode_one(dtype: DType, x: f64, out: &mut Vec<u8>) {
    let r = round_to(dtype, x);
    match dtype {
        DType::F32 => out.extend_from_slice(&(r as f32).to_le_bytes()),
        // r is on the f16 / bf16 grid (or NaN / inf), so the conversion is exact.
        DType::F16 => out.extend_from_slice(&half::f16::from_f64(r).to_bits().to_le_bytes()),
        DType::BF16 => {
            out.extend_from_slice(&half::bf16::from_f64(r).to_bits().to_le_bytes());
        }
        DType::F8E4M3 => out.push(fp8_bits(r, &E4M3, 0x7f)),
        DType::F8E5M2 => out.push(fp8_bits(r, &E5M2, 0x7e)),
        DType::I8 => out.push(r as i8 as u8),
        DType::I32 => out.extend_from_slice(&(r as i32).to_le_bytes()),
        DType::F64 => out.extend_from_slice(&r.to_le_bytes()),
    }
}

/// [`encode_one`] for every value, appending to `out`.
pub fn encode_into(dtype: DType, values: &[f64], out: &mut Vec<u8>) {
    out.reserve(values.len() * dtype.size());
    for &v in values {
        encode_one(dtype, v, out);
    }
}

/// Rounds an f32 to TF32 (10 explicit mantissa bits) with round-to-nearest-even,
/// keeping it in f32 storage. NaN and infinities pass through; a value that rounds
/// beyond the largest TF32 value becomes infinity.
pub fn round_tf32(x: f32) -> f32 {
    // Every TF32 value is an f32 value, so the final conversion is exact.
    TF32.round(f64::from(x)) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [DType; 8] = [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::F8E4M3,
        DType::F8E5M2,
        DType::I8,
        DType::I32,
        DType::F64,
    ];

    /// An E4M3 decoder that shares no code with [`decode_e4m3`]: it builds the binary32
    /// bit pattern, normalising subnormals by shifting the mantissa.
    fn e4m3_via_f32_bits(b: u8) -> f64 {
        let sign = u32::from(b >> 7) << 31;
        let mut e = i32::from((b >> 3) & 0xf);
        let mut m = u32::from(b & 7);
        if e == 15 && m == 7 {
            return f64::NAN;
        }
        if e == 0 {
            if m == 0 {
                return f64::from(f32::from_bits(sign));
            }
            // Normalise: value = m * 2^-9 = 1.xxx * 2^(e'-7) with e' <= 0.
            e = 1;
            while m & 8 == 0 {
                m <<= 1;
                e -= 1;
            }
            m &= 7;
        }
        let bits = sign | (((e - 7 + 127) as u32) << 23) | (m << 20);
        f64::from(f32::from_bits(bits))
    }

    #[test]
    fn e4m3_exhaustive() {
        let mut nans = 0;
        for b in 0..=255u8 {
            let v = decode_e4m3(b);
            let w = e4m3_via_f32_bits(b);
            if v.is_nan() {
                assert!(w.is_nan(), "{b:#04x}");
                assert!(b & 0x7f == 0x7f, "{b:#04x} must not be NaN");
                nans += 1;
                continue;
            }
            assert!(v.is_finite(), "e4m3 has no infinities: {b:#04x}");
            assert_eq!(v.to_bits(), w.to_bits(), "{b:#04x}: {v} vs {w}");
            // The encoding round-trips, signed zero included.
            assert_eq!(encode_e4m3(v), b, "{b:#04x}");
            assert_eq!(round_to(DType::F8E4M3, v).to_bits(), v.to_bits());
            let mut out = Vec::new();
            encode_one(DType::F8E4M3, v, &mut out);
            assert_eq!(out, [b]);
        }
        assert_eq!(nans, 2);
        for (b, v) in [
            (0x7e, 448.0),
            (0xfe, -448.0),
            (0x01, exp2i(-9)),
            (0x07, 7.0 * exp2i(-9)),
            (0x08, exp2i(-6)),
            (0x38, 1.0),
            (0x40, 2.0),
            (0x3c, 1.5),
            (0x00, 0.0),
        ] {
            assert_eq!(decode_e4m3(b), v, "{b:#04x}");
        }
        assert!(decode_e4m3(0x80) == 0.0 && decode_e4m3(0x80).is_sign_negative());
        // Positive codes are strictly increasing, and the spacing doubles every 8 codes
        // after the first two groups (subnormals and the first binade share a spacing).
        for b in 1..0x7eu8 {
            let (lo, hi) = (decode_e4m3(b), decode_e4m3(b + 1));
            let gap = hi - lo;
            let expect = exp2i(-9) * exp2i((i32::from(b) / 8 - 1).max(0));
            assert_eq!(gap, expect, "gap after {b:#04x}");
        }
    }

    #[test]
    fn e5m2_exhaustive() {
        let (mut nans, mut infs) = (0, 0);
        for b in 0..=255u8 {
            let v = decode_e5m2(b);
            // Independent rule: e5m2 is the upper byte of a binary16.
            let w = half::f16::from_bits(u16::from(b) << 8).to_f64();
            if v.is_nan() {
                assert!(w.is_nan(), "{b:#04x}");
                nans += 1;
                continue;
            }
            assert_eq!(v.to_bits(), w.to_bits(), "{b:#04x}: {v} vs {w}");
            if v.is_infinite() {
                infs += 1;
                // Saturating encoding: infinity goes to the largest finite value.
                assert_eq!(encode_e5m2(v), b - 1, "{b:#04x}");
                continue;
            }
            assert_eq!(encode_e5m2(v), b, "{b:#04x}");
            let mut out = Vec::new();
            encode_one(DType::F8E5M2, v, &mut out);
            assert_eq!(out, [b]);
        }
        assert_eq!((nans, infs), (6, 2));
        for (b, v) in [
            (0x7b, 57344.0),
            (0xfb, -57344.0),
            (0x7c, f64::INFINITY),
            (0xfc, f64::NEG_INFINITY),
            (0x01, exp2i(-16)),
            (0x04, exp2i(-14)),
            (0x3c, 1.0),
        ] {
            assert_eq!(decode_e5m2(b), v, "{b:#04x}");
        }
    }

    #[test]
    fn fp8_rounding_ties_saturation() {
        for (fmt, dtype, dec) in [
            (&E4M3, DType::F8E4M3, decode_e4m3 as fn(u8) -> f64),
            (&E5M2, DType::F8E5M2, decode_e5m2),
        ] {
            let max_code = if dtype == DType::F8E4M3 { 0x7e } else { 0x7b };
            for b in 0..max_code {
                let (lo, hi) = (dec(b), dec(b + 1));
                let mid = 0.5 * (lo + hi);
                // Ties go to the even mantissa, i.e. the even code.
                let even = if b % 2 == 0 { lo } else { hi };
                assert_eq!(round_to(dtype, mid), even, "{} tie {lo}..{hi}", fmt.name);
                assert_eq!(round_to(dtype, -mid), -even);
                let eps = (hi - lo) * 1e-6;
                assert_eq!(round_to(dtype, mid - eps), lo);
                assert_eq!(round_to(dtype, mid + eps), hi);
            }
            let max = fmt.max_finite;
            for x in [max * 1.01, max * 4.0, 1e300, f64::INFINITY] {
                assert_eq!(round_to(dtype, x), max);
                assert_eq!(round_to(dtype, -x), -max);
            }
            // Below half the smallest subnormal rounds to (signed) zero; exactly half
            // is a tie with zero, which is even.
            let s = fmt.min_subnormal();
            assert_eq!(round_to(dtype, 0.5 * s), 0.0);
            assert_eq!(round_to(dtype, 0.5 * s * 1.0001), s);
            assert!(round_to(dtype, -0.25 * s).is_sign_negative());
        }
        assert_eq!(encode_e4m3(f64::NAN), 0x7f);
        assert!(decode_e5m2(encode_e5m2(f64::NAN)).is_nan());
    }

    fn check_16bit_exhaustive(dtype: DType, to_f64: fn(u16) -> f64, from_f32: fn(f32) -> u16) {
        let fmt = format(dtype);
        let mut prev: Option<(u16, f64)> = None;
        for bits in 0..=u16::MAX {
            let v = decode_one(dtype, &bits.to_le_bytes()).unwrap();
            let w = to_f64(bits);
            if w.is_nan() {
                assert!(v.is_nan());
                assert!(round_to(dtype, v).is_nan());
                continue;
            }
            assert_eq!(v.to_bits(), w.to_bits(), "{bits:#06x}");
            let mut out = Vec::new();
            encode_one(dtype, v, &mut out);
            assert_eq!(out, bits.to_le_bytes(), "{} {bits:#06x} = {v}", fmt.name);
            // Ties between consecutive positive values: half (from f32, which rounds
            // correctly from binary32) and this module must agree, and pick the even one.
            if let Some((pb, pv)) = prev {
                if v.is_finite() && bits < 0x8000 {
                    let mid = 0.5 * (pv + v);
                    let even = if pb % 2 == 0 { pv } else { v };
                    assert_eq!(round_to(dtype, mid), even, "{} tie at {mid}", fmt.name);
                    assert_eq!(to_f64(from_f32(mid as f32)), even);
                    // Just off the tie, in f64 only: the nearest value wins.
                    let eps = (v - pv) * exp2i(-30);
                    assert_eq!(round_to(dtype, mid - eps), pv);
                    assert_eq!(round_to(dtype, mid + eps), v);
                }
            }
            if bits < 0x8000 {
                prev = Some((bits, v));
            }
        }
        // Overflow: just below the halfway point to the next binade stays finite.
        let max = fmt.max_finite;
        let ulp = max * fmt.unit_roundoff() / (1.0 - fmt.unit_roundoff());
        assert_eq!(round_to(dtype, max + 0.49 * ulp), max);
        assert_eq!(round_to(dtype, max + 0.5 * ulp), f64::INFINITY);
        assert_eq!(round_to(dtype, -max - 0.5 * ulp), f64::NEG_INFINITY);
    }

    #[test]
    fn f16_exhaustive() {
        check_16bit_exhaustive(
            DType::F16,
            |b| half::f16::from_bits(b).to_f64(),
            |x| half::f16::from_f32(x).to_bits(),
        );
        assert_eq!(F16.min_subnormal(), exp2i(-24));
        assert_eq!(F16.unit_roundoff(), exp2i(-11));
    }

    #[test]
    fn bf16_exhaustive() {
        check_16bit_exhaustive(
            DType::BF16,
            |b| half::bf16::from_bits(b).to_f64(),
            |x| half::bf16::from_f32(x).to_bits(),
        );
        assert_eq!(BF16.min_subnormal(), exp2i(-133));
        assert_eq!(BF16.max_finite, f64::from(half::bf16::MAX.to_f32()));
        assert_eq!(BF16.unit_roundoff(), exp2i(-8));
    }

    #[test]
    fn f32_rounding_matches_hardware_conversion() {
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..100_000 {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            // Random f64 bit patterns in a range that covers f32 subnormals and overflow.
            let e = (s >> 52) % 300 + 1023 - 160;
            let x = f64::from_bits((s & ((1 << 63) | ((1 << 52) - 1))) | (e << 52));
            // `as f32` is IEEE round-to-nearest-even in Rust.
            assert_eq!(round_to(DType::F32, x), f64::from(x as f32), "{x:e}");
        }
        assert_eq!(F32.max_finite, f64::from(f32::MAX));
        assert_eq!(F32.min_subnormal(), f64::from(f32::from_bits(1)));
    }

    #[test]
    fn small_integer_rounding_matches_std() {
        let mut y = -70000.0;
        while y < 70000.0 {
            assert_eq!(
                round_ties_even_small(y).to_bits(),
                y.round_ties_even().to_bits(),
                "{y}"
            );
            y += 0.125;
        }
        for y in [0.5, 1.5, 2.5, -0.5, -2.5, 4503599627370495.5, 1e-300, -0.0] {
            assert_eq!(
                round_ties_even_small(y).to_bits(),
                y.round_ties_even().to_bits(),
                "{y}"
            );
        }
    }

    #[test]
    fn tf32_anchors() {
        let one = 1.0f32;
        let ulp = exp2i(-10) as f32;
        assert_eq!(round_tf32(one), one);
        // Exactly halfway between 1 and 1 + 2^-10: ties to even (1.0).
        assert_eq!(round_tf32(one + ulp / 2.0), one);
        // Halfway between 1 + 2^-10 (odd) and 1 + 2^-9 (even): up.
        assert_eq!(round_tf32(one + 1.5 * ulp), one + 2.0 * ulp);
        // The 13 dropped bits: anything below half an ulp goes down.
        assert_eq!(round_tf32(f32::from_bits(0x3f80_0fff)), one);
        assert_eq!(
            round_tf32(f32::from_bits(0x3f80_1001)),
            f32::from_bits(0x3f80_2000)
        );
        assert_eq!(round_tf32(-1.2345678), -round_tf32(1.2345678));
        assert!(round_tf32(f32::NAN).is_nan());
        assert_eq!(round_tf32(f32::INFINITY), f32::INFINITY);
        assert_eq!(round_tf32(f32::MAX), f32::INFINITY);
        assert_eq!(f64::from(round_tf32(3.0e38)), TF32.round(3.0e38));
        // The result always has its low 13 mantissa bits clear.
        let mut x = 0.000123f32;
        while x < 1e30 {
            assert_eq!(round_tf32(x).to_bits() & 0x1fff, 0);
            let r = round_tf32(x);
            assert!((f64::from(r) - f64::from(x)).abs() <= f64::from(x) * exp2i(-11));
            x *= 1.37;
        }
        assert_eq!(TF32.max_finite, (2.0 - exp2i(-10)) * exp2i(127));
        assert_eq!(BF16.max_finite, (2.0 - exp2i(-7)) * exp2i(127));
    }

    #[test]
    fn integers_round_saturate_and_wrap() {
        assert_eq!(round_to(DType::I8, 127.4), 127.0);
        assert_eq!(round_to(DType::I8, 300.0), 127.0);
        assert_eq!(round_to(DType::I8, -300.0), -128.0);
        assert_eq!(round_to(DType::I8, 2.5), 2.0);
        assert_eq!(round_to(DType::I8, -3.5), -4.0);
        assert_eq!(round_to(DType::I8, f64::NAN), 0.0);
        assert_eq!(round_to(DType::I32, 2147483648.0), -2147483648.0);
        assert_eq!(round_to(DType::I32, 4294967297.0), 1.0);
        assert_eq!(round_to(DType::I32, -2147483649.0), 2147483647.0);
        assert_eq!(round_to(DType::I32, -7.0), -7.0);
        assert_eq!(round_to(DType::I32, 1e300), 0.0);
        let mut out = Vec::new();
        encode_into(DType::I32, &[-1.0, 2147483648.0], &mut out);
        assert_eq!(decode(DType::I32, &out).unwrap(), [-1.0, -2147483648.0]);
        for b in 0..=255u8 {
            let v = decode_one(DType::I8, &[b]).unwrap();
            assert_eq!(v, f64::from(b as i8));
            let mut o = Vec::new();
            encode_one(DType::I8, v, &mut o);
            assert_eq!(o, [b]);
        }
    }

    /// The per-type loops of `decode_into` decode every bit pattern of the 8- and
    /// 16-bit types, and a sweep of f32 patterns, as the element decoder does.
    #[test]
    fn run_decoding_is_element_decoding() {
        let same = |x: f64, y: f64| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan());
        for dtype in ALL {
            let bytes: Vec<u8> = match dtype.size() {
                1 => (0..=255u8).collect(),
                2 => (0..=u16::MAX).flat_map(u16::to_le_bytes).collect(),
                4 => (0..1u32 << 20)
                    .map(|i| i.wrapping_mul(0x9e37_79b9).rotate_left(7))
                    .chain([0, 0x8000_0000, 0x7f80_0000, 0xff80_0000, 0x7fc0_0000, 1])
                    .flat_map(u32::to_le_bytes)
                    .collect(),
                _ => (0..1u64 << 16)
                    .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
                    .flat_map(u64::to_le_bytes)
                    .collect(),
            };
            let run = decode(dtype, &bytes).unwrap();
            for (c, &v) in bytes.chunks_exact(dtype.size()).zip(&run) {
                let one = decode_one(dtype, c).unwrap();
                assert!(same(v, one), "{dtype:?} {c:?}: {v} vs {one}");
            }
        }
    }

    #[test]
    fn decode_lengths_and_appending() {
        for dtype in ALL {
            let n = dtype.size();
            let bytes = vec![0u8; 3 * n];
            let mut out = vec![7.0];
            decode_into(dtype, &bytes, &mut out).unwrap();
            assert_eq!(out, [7.0, 0.0, 0.0, 0.0]);
            if n > 1 {
                let e = decode_into(dtype, &bytes[..3 * n - 1], &mut out).unwrap_err();
                assert_eq!(
                    e,
                    NumError::Length {
                        dtype,
                        len: 3 * n - 1
                    }
                );
                assert_eq!(out.len(), 4, "an error leaves the output untouched");
                assert!(!e.to_string().is_empty());
            }
            assert!(decode_one(dtype, &bytes[..n + 1]).is_err());
            assert_eq!(decode_one(dtype, &bytes[..n]).unwrap(), 0.0);
        }
        let v = [1.5, -2.25, 65504.0, 1.0e-3];
        for dtype in [DType::F32, DType::F64, DType::F16, DType::BF16] {
            let mut bytes = Vec::new();
            encode_into(dtype, &v, &mut bytes);
            assert_eq!(bytes.len(), v.len() * dtype.size());
            let back = decode(dtype, &bytes).unwrap();
            for (x, y) in v.iter().zip(&back) {
                assert_eq!(round_to(dtype, *x), *y);
            }
        }
        let mut bytes = Vec::new();
        encode_one(DType::F32, f64::NAN, &mut bytes);
        assert_eq!(bytes, 0x7fc0_0000u32.to_le_bytes());
    }

    #[test]
    fn subset_relation_matches_brute_force() {
        let small: [(DType, u32); 5] = [
            (DType::F8E4M3, 8),
            (DType::F8E5M2, 8),
            (DType::I8, 8),
            (DType::F16, 16),
            (DType::BF16, 16),
        ];
        let targets = [&F32, &TF32, &F16, &BF16, &E4M3, &E5M2];
        for (dtype, bits) in small {
            for t in targets {
                let exact = (0..1u32 << bits).all(|p| {
                    let bytes = p.to_le_bytes();
                    let v = decode_one(dtype, &bytes[..dtype.size()]).unwrap();
                    !v.is_finite() || t.round(v) == v
                });
                assert_eq!(
                    format(dtype).is_subset_of(t),
                    exact,
                    "{} in {}",
                    dtype.name(),
                    t.name
                );
            }
        }
    }
}
