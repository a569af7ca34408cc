//! "Every length capped before allocation", measured: a counting global allocator
//! records the largest single allocation while the reader refuses hostile inputs that
//! declare huge lengths. The only unsafe code of the protocol crate's tests: the
//! allocator forwards to the system allocator unchanged.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use mmaudit_protocol::codec::Writer;
use mmaudit_protocol::config::SamplingConfig;
use mmaudit_protocol::fuzzing;
use mmaudit_protocol::handshake::{
    restamp_nonce, HandshakeError, HelloReader, HELLO_FIXED_LEN, MAX_HELLO_BODY_LEN,
};
use mmaudit_protocol::record::tag;
use mmaudit_protocol::stream::{
    StreamError, StreamReader, StreamWriter, CODEC_NONE, CODEC_ZSTD, HEADER_FIXED_LEN,
    MAX_PAYLOAD_LEN,
};

struct Counting;

static ARMED: AtomicBool = AtomicBool::new(false);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so
// `System`'s guarantees hold; the bookkeeping only touches atomics and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if ARMED.load(Ordering::Relaxed) {
            LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        }
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract for `layout`.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` (through `alloc`/`realloc` above) with
        // `layout`, as the caller guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if ARMED.load(Ordering::Relaxed) {
            LARGEST.fetch_max(new_size, Ordering::Relaxed);
        }
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract; `ptr` came from
        // `System` with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The largest single allocation made while `f` runs.
fn largest_allocation(f: impl FnOnce()) -> usize {
    LARGEST.store(0, Ordering::Relaxed);
    ARMED.store(true, Ordering::Relaxed);
    f();
    ARMED.store(false, Ordering::Relaxed);
    LARGEST.load(Ordering::Relaxed)
}

const SMALL: usize = 1 << 20;

/// One test function only: the allocator's counters are global to the process.
#[test]
fn hostile_lengths_never_cause_large_allocations() {
    let key = fuzzing::key();
    let (mut w, head) = StreamWriter::new(&key, &fuzzing::seed_header());

    // A header declaring a 4 GiB body, followed by 4 MiB of junk.
    let mut bad_header = head[..HEADER_FIXED_LEN].to_vec();
    bad_header[10..14].copy_from_slice(&u32::MAX.to_le_bytes());
    bad_header.extend_from_slice(&vec![7u8; 4 << 20]);

    // A frame declaring a payload at the 16 MiB cap of which 4 KiB arrive.
    let mut starved = head.clone();
    starved.extend_from_slice(&MAX_PAYLOAD_LEN.to_le_bytes());
    starved.extend_from_slice(&0u64.to_le_bytes());
    starved.extend_from_slice(&MAX_PAYLOAD_LEN.to_le_bytes());
    starved.push(CODEC_NONE);
    starved.extend_from_slice(&[0u8; 4096]);

    // Authenticated frames whose records declare 4 GiB fields.
    let mut records = Vec::new();
    for (t, body) in [
        (tag::GAP, {
            let mut b = Writer::new();
            b.u8(1);
            b.u32(u32::MAX); // gap index count
            b.raw(&[0; 64]);
            b.buf
        }),
        (tag::SAMPLE, {
            let mut b = Writer::new();
            b.u64(0);
            b.u8(0);
            b.u8(0);
            b.u32(u32::MAX); // inline operand length
            b.raw(&[0; 64]);
            b.buf
        }),
        (tag::SAMPLE, {
            let mut b = Writer::new();
            b.u64(0);
            b.u8(0);
            b.u8(1); // a reference
            b.u32(0);
            b.u32(u32::MAX); // matrix count
            b.raw(&[0; 64]);
            b.buf
        }),
    ] {
        let mut p = Writer::new();
        p.u8(t);
        p.u32(body.len() as u32);
        p.raw(&body);
        records.push(p.buf);
    }
    let mut huge_record = Writer::new();
    huge_record.u8(tag::LEDGER);
    huge_record.u32(u32::MAX); // record body length
    records.push(huge_record.buf);
    let mut authenticated = Vec::new();
    for payload in &records {
        let (mut w, mut s) = StreamWriter::new(&key, &fuzzing::seed_header());
        s.extend_from_slice(&w.seal_unchecked(CODEC_NONE, payload.len() as u32, payload));
        authenticated.push(s);
    }

    // A decompression bomb: 64 MiB of zeros declared as 4 KiB.
    let bomb = zstd::bulk::compress(&vec![0u8; 64 << 20], 3).unwrap();
    let mut bombed = head.clone();
    bombed.extend_from_slice(&w.seal_unchecked(CODEC_ZSTD, 4096, &bomb));

    let mut inputs = vec![bad_header, starved, bombed];
    inputs.extend(authenticated);
    for (i, input) in inputs.iter().enumerate() {
        let mut outcome = None;
        let largest = largest_allocation(|| {
            let mut r = StreamReader::new(&key);
            let pushed = input.chunks(64 << 10).try_for_each(|c| r.push(c).map(drop));
            outcome = Some(pushed.and_then(|()| r.finish()));
        });
        let outcome = outcome.unwrap();
        assert!(
            matches!(
                outcome,
                Err(StreamError::Decode(_) | StreamError::Truncated { .. })
            ),
            "input {i}: {outcome:?}"
        );
        assert!(
            largest < SMALL,
            "input {i}: an allocation of {largest} bytes ({outcome:?})"
        );
    }

    // The verifier's hello: a body declared at the 512 MiB cap of which 64 KiB arrive,
    // and a MACed body whose tensor declares 2^32-1 matrices of 2^40 rows.
    let hello = fuzzing::seed_hello_bytes();
    let mut starved_hello = hello[..HELLO_FIXED_LEN].to_vec();
    starved_hello[10..14].copy_from_slice(&MAX_HELLO_BODY_LEN.to_le_bytes());
    starved_hello.extend_from_slice(&vec![0u8; 64 << 10]);
    let mut body = Writer::new();
    body.u64(key.id());
    body.raw(&[0; 16]);
    SamplingConfig::default().encode(&mut body);
    body.u32(1);
    body.u32(0);
    body.u8(1);
    body.u32(u32::MAX);
    body.u64(1 << 40);
    body.u64(1);
    body.raw(&[0; 64]);
    let mut huge_table = hello[..10].to_vec();
    huge_table.extend_from_slice(&(body.buf.len() as u32).to_le_bytes());
    huge_table.extend_from_slice(&body.buf);
    huge_table.extend_from_slice(&[0; 32]);
    restamp_nonce(&mut huge_table, &key, [0; 16]);
    for (i, input) in [starved_hello, huge_table].iter().enumerate() {
        let mut outcome = None;
        let largest = largest_allocation(|| {
            let mut r = HelloReader::new(&key);
            let pushed = input.chunks(4096).try_for_each(|c| r.push(c).map(drop));
            outcome = Some(pushed.and_then(|()| r.finish()));
        });
        let outcome = outcome.unwrap();
        assert!(
            matches!(
                outcome,
                Err(HandshakeError::Decode(_) | HandshakeError::Truncated { .. })
            ),
            "hello input {i}: {outcome:?}"
        );
        assert!(
            largest <= 2 * input.len(),
            "hello input {i}: an allocation of {largest} bytes for {} received ({outcome:?})",
            input.len()
        );
    }
}
