//! Sampling rates, carried in the stream header so the verifier re-derives exactly the
//! plans the prover had to follow.
//!
//! Rates are integers in parts per million so that every platform computes the same
//! counts and decisions; no floating point takes part in the schedule.
//!
//! The configuration has one encoding ([`SamplingConfig::encode`],
//! [`SamplingConfig::decode`]), shared by the stream header and the verifier's hello
//! (which states the rates of a live session): ten little-endian `u32`, in field order.

use crate::codec::{DecodeError, Reader, Writer};

/// Parts per million: the unit of every rate in the protocol.
pub const PPM: u32 = 1_000_000;

/// Bytes of an encoded [`SamplingConfig`]: ten `u32`.
pub const SAMPLING_CONFIG_LEN: usize = 10 * 4;

/// The sampling configuration of one stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SamplingConfig {
    /// Fraction of GEMM calls sampled, in ppm (default 100_000 = 10%).
    pub call_ppm: u32,
    /// Fraction of the rows of C (the m dimension) checked in a sampled call, in ppm
    /// (default 10_000 = 1%).
    pub row_ppm: u32,
    /// Fraction of the columns of C (the n dimension), in ppm (default 1_000 = 0.1%).
    pub col_ppm: u32,
    /// Fraction of the batch entries, in ppm (default 10_000 = 1%).
    pub batch_ppm: u32,
    /// Minimum rows per sampled call (default 1).
    pub min_rows: u32,
    /// Minimum columns per sampled call (default 1).
    pub min_cols: u32,
    /// Minimum batch entries per sampled call (default 1).
    pub min_batches: u32,
    /// Maximum rows per sampled call; 0 means no maximum (default 0).
    pub max_rows: u32,
    /// Maximum columns per sampled call; 0 means no maximum (default 0).
    pub max_cols: u32,
    /// Maximum batch entries per sampled call; 0 means no maximum (default 0).
    pub max_batches: u32,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig {
            call_ppm: 100_000,
            row_ppm: 10_000,
            col_ppm: 1_000,
            batch_ppm: 10_000,
            min_rows: 1,
            min_cols: 1,
            min_batches: 1,
            max_rows: 0,
            max_cols: 0,
            max_batches: 0,
        }
    }
}

/// Why a configuration is not acceptable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A rate above 1_000_000 ppm.
    #[error("{name} is {value} ppm; a rate is at most 1000000 ppm (100%)")]
    RateTooHigh {
        /// which field
        name: &'static str,
        /// its value
        value: u32,
    },
    /// A minimum above its maximum.
    #[error("{name}: minimum {min} is above maximum {max}")]
    MinAboveMax {
        /// which dimension
        name: &'static str,
        /// minimum
        min: u32,
        /// maximum
        max: u32,
    },
}

impl SamplingConfig {
    /// Checks every field; a decoder calls this on a received header.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, value) in [
            ("call rate", self.call_ppm),
            ("row rate", self.row_ppm),
            ("column rate", self.col_ppm),
            ("batch rate", self.batch_ppm),
        ] {
            if value > PPM {
                return Err(ConfigError::RateTooHigh { name, value });
            }
        }
        for (name, min, max) in [
            ("rows", self.min_rows, self.max_rows),
            ("columns", self.min_cols, self.max_cols),
            ("batch entries", self.min_batches, self.max_batches),
        ] {
            if max != 0 && min > max {
                return Err(ConfigError::MinAboveMax { name, min, max });
            }
        }
        Ok(())
    }

    /// The fields in encoding order.
    fn fields(&self) -> [u32; 10] {
        [
            self.call_ppm,
            self.row_ppm,
            self.col_ppm,
            self.batch_ppm,
            self.min_rows,
            self.min_cols,
            self.min_batches,
            self.max_rows,
            self.max_cols,
            self.max_batches,
        ]
    }

    /// Appends the configuration: `call_ppm row_ppm col_ppm batch_ppm min_rows min_cols
    /// min_batches max_rows max_cols max_batches`, each a little-endian `u32`
    /// ([`SAMPLING_CONFIG_LEN`] bytes). The stream header and the hello both use it.
    pub fn encode(&self, w: &mut Writer) {
        for v in self.fields() {
            w.u32(v);
        }
    }

    /// Reads a configuration written by [`SamplingConfig::encode`] and checks it with
    /// [`SamplingConfig::validate`]; an invalid one is a decode error at the offset of
    /// its first byte, `what` naming where it was read ("header: sampling config").
    pub fn decode(r: &mut Reader<'_>, what: &'static str) -> Result<Self, DecodeError> {
        let at = r.offset();
        let mut f = [0u32; 10];
        for v in &mut f {
            *v = r.u32(what)?;
        }
        let config = SamplingConfig {
            call_ppm: f[0],
            row_ppm: f[1],
            col_ppm: f[2],
            batch_ppm: f[3],
            min_rows: f[4],
            min_cols: f[5],
            min_batches: f[6],
            max_rows: f[7],
            max_cols: f[8],
            max_batches: f[9],
        };
        config
            .validate()
            .map_err(|e| r.error_at(at, what, e.to_string()))?;
        Ok(config)
    }

    /// How many of `dim` indices a sampled call checks:
    /// `clamp(floor(dim * ppm / 1e6), min, max)`, never more than `dim`.
    pub fn count(dim: u64, ppm: u32, min: u32, max: u32) -> u64 {
        let by_rate = (dim as u128 * ppm as u128 / PPM as u128) as u64;
        let mut count = by_rate.max(min as u64);
        if max != 0 {
            count = count.min(max as u64);
        }
        count.min(dim)
    }
}

/// Parses a rate written as a fraction (`0.1`), a percentage (`10%`) or ppm (`100000ppm`)
/// into ppm. Used by every command-line and environment parser so they agree.
pub fn parse_rate(text: &str) -> Result<u32, String> {
    let t = text.trim();
    let (number, scale) = if let Some(p) = t.strip_suffix("ppm") {
        (p.trim(), 1.0)
    } else if let Some(p) = t.strip_suffix('%') {
        (p.trim(), 10_000.0)
    } else {
        (t, PPM as f64)
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a rate (write 0.1, 10% or 100000ppm)"))?;
    let ppm = (value * scale).round();
    if !(0.0..=PPM as f64).contains(&ppm) || !value.is_finite() {
        return Err(format!("'{text}' is not between 0 and 1 (0% to 100%)"));
    }
    Ok(ppm as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_worked_case_checks_160_entries() {
        let c = SamplingConfig::default();
        let rows = SamplingConfig::count(4096, c.row_ppm, c.min_rows, c.max_rows);
        let cols = SamplingConfig::count(4096, c.col_ppm, c.min_cols, c.max_cols);
        assert_eq!((rows, cols), (40, 4));
        assert_eq!(rows * cols, 160);
    }

    #[test]
    fn count_respects_min_max_and_dim() {
        assert_eq!(SamplingConfig::count(10, 1_000, 1, 0), 1);
        assert_eq!(SamplingConfig::count(0, 1_000, 1, 0), 0);
        assert_eq!(SamplingConfig::count(100_000, 10_000, 1, 64), 64);
        assert_eq!(SamplingConfig::count(3, 10_000, 5, 0), 3);
        assert_eq!(SamplingConfig::count(u64::MAX, PPM, 1, 0), u64::MAX);
    }

    #[test]
    fn parse_rate_forms() {
        assert_eq!(parse_rate("0.1"), Ok(100_000));
        assert_eq!(parse_rate("10%"), Ok(100_000));
        assert_eq!(parse_rate("250ppm"), Ok(250));
        assert_eq!(parse_rate("1"), Ok(PPM));
        assert!(parse_rate("1.5").is_err());
        assert!(parse_rate("-0.1").is_err());
        assert!(parse_rate("abc").is_err());
        assert!(parse_rate("nan").is_err());
    }

    #[test]
    fn encoding_round_trips_and_is_validated() {
        let c = SamplingConfig {
            call_ppm: PPM,
            row_ppm: 2,
            col_ppm: 3,
            batch_ppm: 4,
            min_rows: 5,
            min_cols: 6,
            min_batches: 7,
            max_rows: 8,
            max_cols: 9,
            max_batches: 10,
        };
        let mut w = Writer::new();
        c.encode(&mut w);
        assert_eq!(w.buf.len(), SAMPLING_CONFIG_LEN);
        assert_eq!(&w.buf[..8], &[0x40, 0x42, 0x0f, 0, 2, 0, 0, 0]);
        let mut r = Reader::new(&w.buf, 100, "test");
        assert_eq!(SamplingConfig::decode(&mut r, "test: config"), Ok(c));
        assert!(r.is_empty());
        // A rate above 100%, and a minimum above its maximum: refused, at the start.
        for bad in [
            SamplingConfig {
                col_ppm: PPM + 1,
                ..c
            },
            SamplingConfig { max_cols: 5, ..c },
        ] {
            let mut w = Writer::new();
            bad.encode(&mut w);
            let e = SamplingConfig::decode(&mut Reader::new(&w.buf, 100, "test"), "test: config")
                .unwrap_err();
            assert_eq!((e.offset, e.what), (100, "test: config"), "{e}");
        }
    }

    #[test]
    fn validate_rejects_bad_fields() {
        let mut c = SamplingConfig::default();
        assert!(c.validate().is_ok());
        c.row_ppm = PPM + 1;
        assert!(c.validate().is_err());
        let c = SamplingConfig {
            min_cols: 5,
            max_cols: 2,
            ..SamplingConfig::default()
        };
        assert!(c.validate().is_err());
    }
}
