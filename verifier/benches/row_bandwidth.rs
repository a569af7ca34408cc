//! How fast one core reads held weight rows from memory, with no arithmetic: the
//! ceiling on the held-weights part of checking decode GEMMs, where each sampled row of
//! a weight (k = 4096 bf16: 8 KiB) meets one column and is read once.
//!
//! It fills a buffer far larger than any last-level cache, then reads 200 000 rows of
//! 8 KiB at random row-aligned places, summing their bytes (so that every byte is
//! loaded), best of three; with 4 KiB pages and again with transparent huge pages asked
//! for (`MADV_HUGEPAGE`), and with the next `d` rows' lines asked for ahead (software
//! prefetch). A benchmark, not a test: it prints GB/s (recorded in docs/PERFORMANCE.md).
//!
//! Run: cargo bench -p mmaudit-verify --bench row_bandwidth [-- GIB] (default 4)

use std::time::Instant;

const ROW: usize = 8192;
const READS: usize = 200_000;

/// The sum of the row's bytes (the compiler vectorises it).
fn sum(row: &[u8]) -> u64 {
    row.chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()) & 0x00ff_00ff_00ff_00ff)
        .fold(0u64, u64::wrapping_add)
}

fn prefetch(row: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for line in row.chunks(64) {
        // SAFETY: a prefetch never faults and changes nothing but the cache; SSE is part
        // of x86-64.
        unsafe {
            std::arch::x86_64::_mm_prefetch(line.as_ptr().cast(), std::arch::x86_64::_MM_HINT_T0)
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = row;
}

fn main() {
    let gib: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(4);
    let len = gib << 30;
    println!("random {ROW}-byte rows read by one core from a {gib} GiB buffer, {READS} reads, best of three");
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let rows: Vec<usize> = (0..READS)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % (len / ROW) as u64) as usize
        })
        .collect();
    for huge in [false, true] {
        // 2 MiB-aligned, so that huge pages can back it
        let mut raw = vec![0u8; len + (2 << 20)];
        let start = (2 << 20) - raw.as_ptr() as usize % (2 << 20);
        let buf = &mut raw[start..start + len];
        if huge {
            // SAFETY: the range lies within `raw`, which outlives it; MADV_HUGEPAGE only
            // changes how the kernel backs the pages.
            let rc = unsafe { libc::madvise(buf.as_mut_ptr().cast(), len, libc::MADV_HUGEPAGE) };
            if rc != 0 {
                println!("huge pages: madvise refused; skipped");
                continue;
            }
        }
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (i.wrapping_mul(2_654_435_761) >> 13) as u8;
        }
        for depth in [0usize, 1, 2, 4] {
            let mut best = f64::INFINITY;
            let mut check = 0u64;
            for _ in 0..3 {
                let t = Instant::now();
                for (i, &r) in rows.iter().enumerate() {
                    if let Some(&next) = rows.get(i + depth).filter(|_| depth > 0) {
                        prefetch(&buf[next * ROW..][..ROW]);
                    }
                    check = check.wrapping_add(sum(&buf[r * ROW..][..ROW]));
                }
                best = best.min(t.elapsed().as_secs_f64());
            }
            let bytes = (READS * ROW) as f64;
            println!(
                "  {:<16} rows prefetched ahead {depth}: {:>6.2} GB/s  {:.3} ns/byte  (sum {check:x})",
                if huge { "huge pages" } else { "4 KiB pages" },
                bytes / best / 1e9,
                best * 1e9 / bytes
            );
        }
    }
}
