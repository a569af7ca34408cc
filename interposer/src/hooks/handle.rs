//! cuBLAS handle settings followed through their setters, so that an unsampled GEMM
//! asks cuBLAS nothing.
//!
//! A GEMM's description needs its handle's stream, pointer mode and math mode. The
//! library hooks `cublasCreate_v2` (it reads the new handle's settings once, through
//! the real getters), `cublasSetStream_v2`, `cublasSetPointerMode_v2`,
//! `cublasSetMathMode` (each successful call updates the handle's entry) and
//! `cublasDestroy_v2` (the entry goes before the handle does). A GEMM on a handle with an entry reads the entry (a few
//! atomic loads, no lock). The pointer mode decides whether the library reads alpha
//! and beta as host memory, and a wrong one could crash the program, so the entry's
//! host pointer mode is trusted only for scalars in the calling thread's live stack,
//! which are host memory in every case; for any other scalar pointer cuBLAS is asked
//! ([`lookup_for`]). A handle the library did not see created (created through
//! a path it does not hook, or while the table was full) has no entry and is read
//! through the real getters on every call, as before.
//!
//! What this trusts: that a handle the library saw created is reconfigured only
//! through the hooked setters. A program that reaches a real setter another way
//! (`dlvsym`, a copy of cuBLAS linked into another library) breaks it; every sampled
//! call therefore compares the entry with the real getters first ([`verify`]), and a
//! mismatch drops the entry for good, makes that call a gap and warns once. Unsampled
//! calls between such a change and the next sampled call are described with the old
//! settings.
//!
//! The table is a fixed array of [`SLOTS`] entries, open addressing, written under a
//! mutex (creation and destruction only) and read without one; what a setter stores
//! is read by a GEMM on another thread only as far as the program itself orders the
//! two (cuBLAS handles are not safe to reconfigure and use concurrently).

#![allow(non_snake_case)]

use std::ffi::c_int;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use super::blas::{getter, real_fn};
use crate::log::{self, Level};
use crate::model::NotDescribed;
use crate::real;
use crate::result::blas;
use crate::sys::cublas::{self as sys, CublasHandle, CublasStatus, CUBLAS_STATUS_SUCCESS};

/// Entries: handles alive at once that the library follows (more are read through
/// the getters).
pub const SLOTS: usize = 1024;
const EMPTY: usize = 0;
/// A destroyed handle's entry (probing continues past it).
const GONE: usize = 1;

/// A handle's settings as the library knows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// `cudaStream_t` as a number.
    pub stream: usize,
    /// `cublasPointerMode_t`
    pub pointer_mode: c_int,
    /// `cublasMath_t`, flag bits included
    pub math_mode: c_int,
}

struct Entry {
    handle: AtomicUsize,
    stream: AtomicUsize,
    /// pointer mode in the low 32 bits, math mode in the high 32.
    modes: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)]
const NEW: Entry = Entry {
    handle: AtomicUsize::new(EMPTY),
    stream: AtomicUsize::new(0),
    modes: AtomicU64::new(0),
};
static TABLE: [Entry; SLOTS] = [NEW; SLOTS];
static WRITER: Mutex<()> = Mutex::new(());

fn modes(pointer: c_int, math: c_int) -> u64 {
    (pointer as u32 as u64) | ((math as u32 as u64) << 32)
}

fn probe(handle: usize) -> impl Iterator<Item = &'static Entry> {
    let start = (handle >> 4).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 54;
    (0..SLOTS).map(move |i| &TABLE[(start + i) % SLOTS])
}

fn find(handle: usize) -> Option<&'static Entry> {
    if handle <= GONE {
        return None;
    }
    for e in probe(handle) {
        match e.handle.load(Ordering::Acquire) {
            h if h == handle => return Some(e),
            EMPTY => return None,
            _ => {}
        }
    }
    None
}

/// The settings of a handle the library follows; `None`: read them through the
/// getters.
pub fn lookup(handle: CublasHandle) -> Option<Settings> {
    let e = find(handle as usize)?;
    let m = e.modes.load(Ordering::Acquire);
    Some(Settings {
        stream: e.stream.load(Ordering::Acquire),
        pointer_mode: m as u32 as c_int,
        math_mode: (m >> 32) as u32 as c_int,
    })
}

/// [`lookup`] for a GEMM whose alpha and beta are `scalars` (`len` bytes each): the
/// entry's pointer mode is trusted when it says device memory (the library then
/// reads neither) or when both scalars lie in the calling thread's live stack
/// ([`crate::stack`]: host memory, whatever the mode). Otherwise cuBLAS is asked, since
/// reading a device pointer as host memory would crash the program; a pointer mode that
/// differs from the entry's (changed through a setter the library does not follow)
/// drops the entry, and the handle is read through the getters from then on.
///
/// # Safety
/// `handle` is a handle the application passed to cuBLAS.
pub unsafe fn lookup_for(
    handle: CublasHandle,
    scalars: [*const std::ffi::c_void; 2],
    len: usize,
) -> Option<Settings> {
    let s = lookup(handle)?;
    let on_stack = |p: *const std::ffi::c_void| crate::stack::on_live_stack(p.cast(), len);
    if s.pointer_mode == sys::POINTER_MODE_DEVICE || scalars.into_iter().all(on_stack) {
        return Some(s);
    }
    let get_mode: sys::GetPointerModeFn = getter(&real::GET_POINTER_MODE).ok()?;
    let mut mode: c_int = 0;
    // SAFETY: the real getter with the application's handle and a valid out pointer.
    let r = unsafe { get_mode(handle, &mut mode) };
    if r == CUBLAS_STATUS_SUCCESS && mode == s.pointer_mode {
        return Some(s);
    }
    forget(handle as usize);
    None
}

/// Reads a handle's settings through the real getters.
///
/// # Safety
/// `handle` is a handle the application passed to cuBLAS.
pub unsafe fn read(handle: CublasHandle) -> Result<Settings, NotDescribed> {
    let get_stream: sys::GetStreamFn = getter(&real::GET_STREAM)?;
    let get_mode: sys::GetPointerModeFn = getter(&real::GET_POINTER_MODE)?;
    let get_math: sys::GetMathModeFn = getter(&real::GET_MATH_MODE)?;
    let invalid = |e: crate::result::BlasError| NotDescribed::Invalid(e.to_string());
    let mut stream: sys::Stream = std::ptr::null_mut();
    let (mut pointer_mode, mut math_mode): (c_int, c_int) = (0, 0);
    // SAFETY: the real getters with the application's handle and valid out pointers.
    let r = unsafe { get_stream(handle, &mut stream) };
    blas(r, "cublasGetStream_v2").map_err(invalid)?;
    // SAFETY: as above.
    let r = unsafe { get_mode(handle, &mut pointer_mode) };
    blas(r, "cublasGetPointerMode_v2").map_err(invalid)?;
    // SAFETY: as above.
    let r = unsafe { get_math(handle, &mut math_mode) };
    blas(r, "cublasGetMathMode").map_err(invalid)?;
    Ok(Settings {
        stream: stream as usize,
        pointer_mode,
        math_mode,
    })
}

/// Before a sampled call on a followed handle: true when the entry still matches what
/// cuBLAS says; otherwise the entry is dropped (the handle is read through the
/// getters from now on) and the caller records a gap.
///
/// # Safety
/// As [`read`].
pub unsafe fn verify(handle: CublasHandle, seen: Settings) -> bool {
    // SAFETY: the caller's contract.
    match unsafe { read(handle) } {
        Ok(real) if real == seen => true,
        Ok(real) => {
            log::once(
                Level::Warn,
                "handle settings changed behind the library",
                &format!(
                    "a cuBLAS handle was reconfigured through a path the library does not follow (it saw {seen:?}, cuBLAS has {real:?}): this handle's settings are read from cuBLAS on every call from now on"
                ),
            );
            forget(handle as usize);
            false
        }
        Err(_) => {
            forget(handle as usize);
            false
        }
    }
}

fn remember(handle: usize, s: Settings) {
    if handle <= GONE {
        return;
    }
    let _w = WRITER.lock().unwrap_or_else(|e| e.into_inner());
    let slot = find(handle).or_else(|| {
        probe(handle).find(|e| matches!(e.handle.load(Ordering::Acquire), EMPTY | GONE))
    });
    let Some(e) = slot else {
        log::once(
            Level::Debug,
            "handle table full",
            &format!(
                "more than {SLOTS} cuBLAS handles alive: the others are read through the getters"
            ),
        );
        return;
    };
    e.stream.store(s.stream, Ordering::Release);
    e.modes
        .store(modes(s.pointer_mode, s.math_mode), Ordering::Release);
    e.handle.store(handle, Ordering::Release);
}

fn forget(handle: usize) {
    let _w = WRITER.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(e) = find(handle) {
        e.handle.store(GONE, Ordering::Release);
    }
}

/// The address of our hook for a handle function name, if we export one.
pub fn hook_address(name: &[u8]) -> Option<usize> {
    Some(match name {
        b"cublasCreate_v2" => cublasCreate_v2 as *const () as usize,
        b"cublasDestroy_v2" => cublasDestroy_v2 as *const () as usize,
        b"cublasSetStream_v2" => cublasSetStream_v2 as *const () as usize,
        b"cublasSetPointerMode_v2" => cublasSetPointerMode_v2 as *const () as usize,
        b"cublasSetMathMode" => cublasSetMathMode as *const () as usize,
        _ => return None,
    })
}

type CreateFn = unsafe extern "C" fn(*mut CublasHandle) -> CublasStatus;
type DestroyFn = unsafe extern "C" fn(CublasHandle) -> CublasStatus;
type SetStreamFn = unsafe extern "C" fn(CublasHandle, sys::Stream) -> CublasStatus;
type SetModeFn = unsafe extern "C" fn(CublasHandle, c_int) -> CublasStatus;

/// Runs the library's bookkeeping; a panic in it is swallowed (the entry is then
/// dropped, so the handle is read through the getters).
fn quietly(handle: usize, work: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).is_err() {
        let _ = std::panic::catch_unwind(|| forget(handle));
    }
}

/// Hook of `cublasCreate_v2`.
///
/// # Safety
/// The cuBLAS contract.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn cublasCreate_v2(out: *mut CublasHandle) -> CublasStatus {
    let f: CreateFn = match real_fn(&real::CREATE) {
        Ok(f) => f,
        Err(s) => return s,
    };
    // SAFETY: the application's argument, passed on unchanged.
    let status = unsafe { f(out) };
    if status == CUBLAS_STATUS_SUCCESS && !out.is_null() {
        // SAFETY: the call succeeded, so cuBLAS wrote a handle through `out`.
        let handle = unsafe { *out };
        quietly(handle as usize, || {
            // SAFETY: a handle cuBLAS just created.
            if let Ok(s) = unsafe { read(handle) } {
                remember(handle as usize, s);
            }
        });
    }
    status
}

/// Hook of `cublasDestroy_v2`.
///
/// # Safety
/// The cuBLAS contract.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn cublasDestroy_v2(handle: CublasHandle) -> CublasStatus {
    let f: DestroyFn = match real_fn(&real::DESTROY) {
        Ok(f) => f,
        Err(s) => return s,
    };
    quietly(handle as usize, || forget(handle as usize));
    // SAFETY: the application's argument, passed on unchanged.
    unsafe { f(handle) }
}

/// Updates a followed handle's entry after a successful setter.
fn update(handle: CublasHandle, status: CublasStatus, set: impl FnOnce(&Entry)) {
    if status != CUBLAS_STATUS_SUCCESS {
        return;
    }
    quietly(handle as usize, || {
        if let Some(e) = find(handle as usize) {
            set(e);
        }
    });
}

/// Hook of `cublasSetStream_v2`.
///
/// # Safety
/// The cuBLAS contract.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn cublasSetStream_v2(
    handle: CublasHandle,
    stream: sys::Stream,
) -> CublasStatus {
    let f: SetStreamFn = match real_fn(&real::SET_STREAM) {
        Ok(f) => f,
        Err(s) => return s,
    };
    // SAFETY: the application's arguments, passed on unchanged.
    let status = unsafe { f(handle, stream) };
    update(handle, status, |e| {
        e.stream.store(stream as usize, Ordering::Release)
    });
    status
}

/// Hook of `cublasSetPointerMode_v2`.
///
/// # Safety
/// The cuBLAS contract.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn cublasSetPointerMode_v2(
    handle: CublasHandle,
    mode: c_int,
) -> CublasStatus {
    // SAFETY: the caller's contract.
    unsafe { set_mode(&real::SET_POINTER_MODE, handle, mode, true) }
}

/// Hook of `cublasSetMathMode`.
///
/// # Safety
/// The cuBLAS contract.
#[cfg_attr(not(test), no_mangle)]
pub unsafe extern "C" fn cublasSetMathMode(handle: CublasHandle, mode: c_int) -> CublasStatus {
    // SAFETY: the caller's contract.
    unsafe { set_mode(&real::SET_MATH_MODE, handle, mode, false) }
}

/// A mode setter's hook: forwards, then replaces the pointer mode (`pointer`) or the
/// math mode in the handle's entry.
///
/// # Safety
/// The cuBLAS contract of `sym`.
unsafe fn set_mode(
    sym: &real::RealSym,
    handle: CublasHandle,
    mode: c_int,
    pointer: bool,
) -> CublasStatus {
    let f: SetModeFn = match real_fn(sym) {
        Ok(f) => f,
        Err(s) => return s,
    };
    // SAFETY: the application's arguments, passed on unchanged.
    let status = unsafe { f(handle, mode) };
    update(handle, status, |e| {
        let old = e.modes.load(Ordering::Acquire);
        let (p, m) = (old as u32 as c_int, (old >> 32) as u32 as c_int);
        let new = if pointer {
            modes(mode, m)
        } else {
            modes(p, mode)
        };
        e.modes.store(new, Ordering::Release);
    });
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(stream: usize, p: c_int, m: c_int) -> Settings {
        Settings {
            stream,
            pointer_mode: p,
            math_mode: m,
        }
    }

    #[test]
    fn entries_follow_creation_updates_and_destruction() {
        let h = 0x7000_0010usize;
        assert_eq!(lookup(h as CublasHandle), None);
        remember(h, s(5, 0, 0));
        assert_eq!(lookup(h as CublasHandle), Some(s(5, 0, 0)));
        update(h as CublasHandle, CUBLAS_STATUS_SUCCESS, |e| {
            e.modes.store(modes(1, 16 | 3), Ordering::Release)
        });
        assert_eq!(lookup(h as CublasHandle), Some(s(5, 1, 16 | 3)));
        // A failed setter changes nothing.
        update(h as CublasHandle, 7, |e| {
            e.stream.store(9, Ordering::Release)
        });
        assert_eq!(lookup(h as CublasHandle).unwrap().stream, 5);
        forget(h);
        assert_eq!(lookup(h as CublasHandle), None);
        // Colliding handles (same probe start) and a reused address.
        let hs: Vec<usize> = (0..50).map(|i| 0x9000_0000 + (i << 58 >> 4)).collect();
        for (i, &x) in hs.iter().enumerate() {
            remember(x, s(i, 0, 0));
        }
        forget(hs[10]);
        for (i, &x) in hs.iter().enumerate() {
            let want = (i != 10).then(|| s(i, 0, 0));
            assert_eq!(lookup(x as CublasHandle), want, "handle {i}");
        }
        remember(hs[10], s(99, 1, 0));
        assert_eq!(lookup(hs[10] as CublasHandle), Some(s(99, 1, 0)));
        for &x in &hs {
            forget(x);
        }
        assert!(hs.iter().all(|&x| lookup(x as CublasHandle).is_none()));
    }
}
