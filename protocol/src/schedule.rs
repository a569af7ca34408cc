//! The sampling schedule: which calls are checked, and which entries of each.
//!
//! `decide` is a pure function of the key, the session nonce, the sampling configuration
//! and the call's canonical encoding. Prover and verifier both run it; the prover never
//! chooses what is checked. Specified byte for byte in docs/PROTOCOL.md ("Schedule").
//!
//! Two versions exist, named by the stream header: v1 decides each call by a keyed hash
//! of its whole encoding; v2 (what the library writes) decides whether a call is sampled
//! from its index alone, eight calls per keyed hash (so that an unsampled call costs a
//! table lookup on the application's thread), and only a sampled call's plan is drawn
//! from a keyed hash of its whole encoding. In both, which calls and which entries are
//! checked cannot be predicted without the key.

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use crate::call::{flags, GemmCall};
use crate::config::{SamplingConfig, PPM};
use crate::keys::Key;

/// Domain-separation prefix of the schedule hash input (v1).
pub const SCHEDULE_DOMAIN: &[u8] = b"mmaudit-schedule-v1";
/// Domain-separation prefix of v2's call-selection hash.
pub const SELECT_DOMAIN_V2: &[u8] = b"mmaudit-select-v2";
/// Domain-separation prefix of v2's plan hash.
pub const PLAN_DOMAIN_V2: &[u8] = b"mmaudit-plan-v2";
/// Calls decided by one v2 selection hash.
pub const SELECT_BLOCK: u64 = 8;

/// Which schedule a stream follows: named by the stream header's version field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScheduleVersion {
    /// Each call decided by a keyed hash of its whole encoding.
    V1 = 1,
    /// Selection by index, eight calls per keyed hash; plans from the whole encoding.
    V2 = 2,
    /// Commit mode (docs/COMMIT.md): no schedule the prover can compute; every call is
    /// committed and the verifier challenges with a key of its own
    /// ([`crate::commit::Challenger`]).
    Commit = 3,
}

impl ScheduleVersion {
    /// The schedule of a stream header's version field, if the field names one.
    pub fn of_stream_version(version: u16) -> Option<ScheduleVersion> {
        match version {
            1 => Some(ScheduleVersion::V1),
            2 => Some(ScheduleVersion::V2),
            3 => Some(ScheduleVersion::Commit),
            _ => None,
        }
    }
}

/// What to check in one sampled call: sorted, distinct indices of rows of C (in 0..m),
/// columns of C (in 0..n) and batch entries (in 0..batch).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Plan {
    /// rows of C, ascending
    pub rows: Vec<u64>,
    /// columns of C, ascending
    pub cols: Vec<u64>,
    /// batch entries, ascending
    pub batches: Vec<u64>,
}

impl Plan {
    /// Number of result entries the plan checks.
    pub fn entries(&self) -> u64 {
        (self.rows.len() * self.cols.len() * self.batches.len()) as u64
    }
}

/// The schedule of one stream.
#[derive(Clone)]
pub struct Schedule {
    key: [u8; 32],
    nonce: [u8; 16],
    config: SamplingConfig,
    version: ScheduleVersion,
}

impl Schedule {
    /// The v1 schedule for a stream with this key, session nonce and configuration.
    pub fn new(key: &Key, nonce: [u8; 16], config: SamplingConfig) -> Self {
        Schedule::with_version(key, nonce, config, ScheduleVersion::V1)
    }

    /// The schedule of the given version.
    pub fn with_version(
        key: &Key,
        nonce: [u8; 16],
        config: SamplingConfig,
        version: ScheduleVersion,
    ) -> Self {
        Schedule {
            key: key.schedule_key(),
            nonce,
            config,
            version,
        }
    }

    /// The schedule a stream's header names.
    pub fn for_header(key: &Key, header: &crate::stream::StreamHeader) -> Self {
        Schedule::with_version(key, header.nonce, header.config, header.schedule)
    }

    /// The schedule's version.
    pub fn version(&self) -> ScheduleVersion {
        self.version
    }

    /// The session nonce the schedule was made with.
    pub fn nonce(&self) -> [u8; 16] {
        self.nonce
    }

    /// v2: the selection words of calls `SELECT_BLOCK * block ..` (one keyed hash):
    /// word `j` decides the call of index `SELECT_BLOCK * block + j`
    /// ([`Schedule::draw_with_word`]).
    pub fn selection_block(&self, block: u64) -> [u64; SELECT_BLOCK as usize] {
        let mut hasher = blake3::Hasher::new_keyed(&self.key);
        hasher.update(SELECT_DOMAIN_V2);
        hasher.update(&self.nonce);
        hasher.update(&block.to_le_bytes());
        let mut out = [0u8; 8 * SELECT_BLOCK as usize];
        hasher.finalize_xof().fill(&mut out);
        std::array::from_fn(|j| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&out[8 * j..8 * j + 8]);
            u64::from_le_bytes(w)
        })
    }

    /// v2: the draw of `call` given its selection word (from
    /// [`Schedule::selection_block`] of `call.index / SELECT_BLOCK`): `None` unless the
    /// call is sampled, which costs no hash; a sampled call's plan seed is a keyed hash
    /// of its whole encoding.
    pub fn draw_with_word(&self, call: &GemmCall, word: u64) -> Option<Draw> {
        if !auditable(call) || !below_rate(word, self.config.call_ppm) {
            return None;
        }
        let mut hasher = blake3::Hasher::new_keyed(&self.key);
        hasher.update(PLAN_DOMAIN_V2);
        hasher.update(&self.nonce);
        hasher.update(&call.to_bytes());
        Some(Draw(*hasher.finalize().as_bytes()))
    }

    /// The configuration in force.
    pub fn config(&self) -> &SamplingConfig {
        &self.config
    }

    /// The plan for `call`, or `None` when the call is not sampled. A call with an empty
    /// result (m, n or batch zero) is never sampled: there is nothing to check; nor is a
    /// call flagged [`flags::NOT_AUDITED`] (captured, no session, rejected, unmodelled).
    pub fn decide(&self, call: &GemmCall) -> Option<Plan> {
        self.draw(call).map(|draw| self.plan(call, draw))
    }

    /// The keyed draw for `call` when it is sampled, without building its plan: its
    /// size is [`Schedule::plan_counts`], and [`Schedule::plan`] builds it from the draw
    /// (what [`Schedule::decide`] does in one step).
    pub fn draw(&self, call: &GemmCall) -> Option<Draw> {
        match self.version {
            ScheduleVersion::V1 => self.draw_seed(call).map(Draw),
            // The prover cannot know what is checked: nothing is "sampled" in advance.
            ScheduleVersion::Commit => None,
            ScheduleVersion::V2 => {
                let words = self.selection_block(call.index / SELECT_BLOCK);
                self.draw_with_word(call, words[(call.index % SELECT_BLOCK) as usize])
            }
        }
    }

    /// The plan of a sampled `call` from its [`Draw`].
    pub fn plan(&self, call: &GemmCall, draw: Draw) -> Plan {
        plan_from_seed(&self.config, call, draw.0)
    }

    /// How many rows, columns and batch entries a sampled `call`'s plan holds: cheap,
    /// so that a verifier can refuse an unreasonable plan before building it.
    pub fn plan_counts(&self, call: &GemmCall) -> [u64; 3] {
        plan_counts(&self.config, call)
    }

    /// The keyed draw of [`Schedule::decide`]: the plan's seed when `call` is sampled.
    fn draw_seed(&self, call: &GemmCall) -> Option<[u8; 32]> {
        if !auditable(call) {
            return None;
        }
        let mut hasher = blake3::Hasher::new_keyed(&self.key);
        hasher.update(SCHEDULE_DOMAIN);
        hasher.update(&self.nonce);
        hasher.update(&call.to_bytes());
        let mut out = [0u8; 40];
        hasher.finalize_xof().fill(&mut out);

        let mut u = [0u8; 8];
        u.copy_from_slice(&out[..8]);
        if !below_rate(u64::from_le_bytes(u), self.config.call_ppm) {
            return None;
        }
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&out[8..40]);
        Some(seed)
    }
}

/// How many rows, columns and batch entries a plan of `call` holds under `config`.
pub fn plan_counts(config: &SamplingConfig, call: &GemmCall) -> [u64; 3] {
    let c = config;
    [
        SamplingConfig::count(call.m, c.row_ppm, c.min_rows, c.max_rows).min(call.m),
        SamplingConfig::count(call.n, c.col_ppm, c.min_cols, c.max_cols).min(call.n),
        SamplingConfig::count(call.batch, c.batch_ppm, c.min_batches, c.max_batches)
            .min(call.batch),
    ]
}

/// The plan of `call` drawn with ChaCha20 seeded by `seed` ("The plan" in
/// docs/PROTOCOL.md): what every schedule version and the commit mode's challenge share.
pub fn plan_from_seed(config: &SamplingConfig, call: &GemmCall, seed: [u8; 32]) -> Plan {
    let mut rng = ChaCha20Rng::from_seed(seed);
    let [rows, cols, batches] = plan_counts(config, call);
    Plan {
        rows: choose(&mut rng, call.m, rows),
        cols: choose(&mut rng, call.n, cols),
        batches: choose(&mut rng, call.batch, batches),
    }
}

/// Whether `call` may be sampled at all, in both versions: it computed something
/// (m, n and the batch count non-zero) and is not flagged [`flags::NOT_AUDITED`].
pub fn auditable(call: &GemmCall) -> bool {
    !call.has(flags::NOT_AUDITED) && call.m != 0 && call.n != 0 && call.batch != 0
}

/// Whether the uniform 64-bit word `u` selects a call at `ppm` parts per million:
/// floor(u * 10^6 / 2^64) is uniform on 0..10^6 up to a bias below 2^-44.
pub(crate) fn below_rate(u: u64, ppm: u32) -> bool {
    (((u as u128 * PPM as u128) >> 64) as u32) < ppm
}

/// That a call is sampled, and the seed of its plan ([`Schedule::draw`]).
#[derive(Clone, Copy, Debug)]
pub struct Draw([u8; 32]);

/// Convenience form of [`Schedule::decide`].
pub fn decide(key: &Key, nonce: [u8; 16], config: SamplingConfig, call: &GemmCall) -> Option<Plan> {
    Schedule::new(key, nonce, config).decide(call)
}

/// A uniform integer in `0..=max` by rejection: draw 64-bit words until one falls below
/// the largest multiple of `max + 1`, then reduce.
fn uniform_inclusive(rng: &mut ChaCha20Rng, max: u64) -> u64 {
    let Some(range) = max.checked_add(1) else {
        return rng.next_u64();
    };
    let zone = u64::MAX - (u64::MAX - range + 1) % range;
    loop {
        let x = rng.next_u64();
        if x <= zone {
            return x % range;
        }
    }
}

/// `count` distinct indices of `0..dim` by Robert Floyd's algorithm, sorted ascending.
fn choose(rng: &mut ChaCha20Rng, dim: u64, count: u64) -> Vec<u64> {
    let count = count.min(dim);
    let mut picked = std::collections::BTreeSet::new();
    for j in dim - count..dim {
        let t = uniform_inclusive(rng, j);
        if !picked.insert(t) {
            picked.insert(j);
        }
    }
    picked.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::tests::sample_call;

    fn key() -> Key {
        Key::from_bytes(*b"0123456789abcdef0123456789abcdef")
    }

    #[test]
    fn call_rate_is_respected() {
        let s = Schedule::new(&key(), [1; 16], SamplingConfig::default());
        let sampled = (0..20_000)
            .filter(|&i| s.decide(&sample_call(i, 64, 64, 64)).is_some())
            .count();
        // 10% of 20000 = 2000; binomial sd ~ 42.
        assert!((1800..2200).contains(&sampled), "{sampled}");
    }

    #[test]
    fn plans_are_sorted_distinct_and_in_range() {
        let cfg = SamplingConfig {
            call_ppm: PPM,
            row_ppm: 300_000,
            col_ppm: 500_000,
            ..SamplingConfig::default()
        };
        let s = Schedule::new(&key(), [2; 16], cfg);
        for i in 0..200 {
            let mut call = sample_call(i, 1 + i % 37, 1 + i % 11, 8);
            call.batch = 1 + i % 5;
            let p = s.decide(&call).unwrap();
            for (v, dim) in [
                (&p.rows, call.m),
                (&p.cols, call.n),
                (&p.batches, call.batch),
            ] {
                assert!(!v.is_empty());
                assert!(v.windows(2).all(|w| w[0] < w[1]));
                assert!(v.iter().all(|&x| x < dim));
            }
        }
    }

    #[test]
    fn choose_is_uniform_enough() {
        let mut rng = ChaCha20Rng::from_seed([9; 32]);
        let mut hits = [0u32; 10];
        for _ in 0..10_000 {
            for x in choose(&mut rng, 10, 3) {
                hits[x as usize] += 1;
            }
        }
        // each index expected 3000 times
        assert!(hits.iter().all(|&h| (2800..3200).contains(&h)), "{hits:?}");
    }

    #[test]
    fn everything_is_chosen_when_count_equals_dim() {
        let mut rng = ChaCha20Rng::from_seed([3; 32]);
        assert_eq!(choose(&mut rng, 5, 5), vec![0, 1, 2, 3, 4]);
        assert_eq!(choose(&mut rng, 5, 9), vec![0, 1, 2, 3, 4]);
        assert!(choose(&mut rng, 0, 1).is_empty());
    }

    #[test]
    fn the_nonce_and_the_key_change_the_schedule() {
        let cfg = SamplingConfig::default();
        let a = Schedule::new(&key(), [1; 16], cfg);
        let b = Schedule::new(&key(), [2; 16], cfg);
        let c = Schedule::new(&Key::from_bytes([5; 32]), [1; 16], cfg);
        let pick = |s: &Schedule| -> Vec<bool> {
            (0..256)
                .map(|i| s.decide(&sample_call(i, 8, 8, 8)).is_some())
                .collect()
        };
        assert_ne!(pick(&a), pick(&b));
        assert_ne!(pick(&a), pick(&c));
    }
}
