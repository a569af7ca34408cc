//! The `dlsym` export: programs that `dlopen` cuBLAS and look GEMM functions up on the
//! handle (JAX/XLA, TensorFlow, ctypes) get our hooks, and we remember the real
//! pointer they would have got (so a library loaded `RTLD_LOCAL` is still forwarded to).
//!
//! Every other lookup is passed to glibc's `dlsym` by a *tail jump* from a small naked
//! trampoline (x86-64), so glibc sees the caller's own return address and
//! `dlsym(RTLD_NEXT, ...)` keeps its meaning for the caller (another preload library,
//! for instance). On other architectures the export calls glibc's `dlsym` directly, and
//! `RTLD_NEXT` lookups are resolved relative to this library instead.
//!
//! [`route`] is the decision; it only reads atomics and the symbol name, takes no
//! lock and allocates nothing, since it runs for every `dlsym` in the process,
//! including those made while the dynamic loader or our own initialisation holds locks.

use std::ffi::{c_char, c_void, CStr};

use crate::real::{self, real_dlsym};

/// Decides one lookup. Returns the address to tail-jump to (glibc's `dlsym`, called
/// with the caller's arguments), or 0 with the answer stored in `*out`.
///
/// # Safety
/// `name` is null or a NUL-terminated string; `out` is valid for one write.
pub unsafe extern "C" fn route(
    handle: *mut c_void,
    name: *const c_char,
    out: *mut *mut c_void,
) -> usize {
    let answer = std::panic::catch_unwind(|| {
        // SAFETY: forwarded from the caller's contract.
        unsafe { decide(handle, name) }
    });
    let decision = match answer {
        Ok(d) => d,
        Err(_) => Decision::PassThrough,
    };
    match decision {
        Decision::PassThrough => match real_dlsym() {
            Some(f) => f as usize,
            None => {
                // SAFETY: out is valid for one write.
                unsafe { *out = std::ptr::null_mut() };
                0
            }
        },
        Decision::Answer(p) => {
            // SAFETY: out is valid for one write.
            unsafe { *out = p as *mut c_void };
            0
        }
    }
}

enum Decision {
    PassThrough,
    Answer(usize),
}

/// # Safety
/// `name` is null or a NUL-terminated string.
unsafe fn decide(handle: *mut c_void, name: *const c_char) -> Decision {
    if name.is_null() || handle == libc::RTLD_NEXT {
        return Decision::PassThrough;
    }
    // SAFETY: non-null and NUL-terminated per the contract.
    let cname = unsafe { CStr::from_ptr(name) };
    let bytes = cname.to_bytes();
    if !bytes.starts_with(b"cublas") {
        return Decision::PassThrough;
    }
    let (Some(hook), Some(sym)) = (crate::hooks::hook_address(bytes), real::by_name(bytes)) else {
        return Decision::PassThrough;
    };
    // SAFETY: the program's own handle, which it is about to use with dlsym anyway.
    let p = unsafe { real::lookup(handle, cname) };
    if p == 0 {
        return Decision::Answer(0);
    }
    if p == hook {
        // The handle's scope found our own export (RTLD_DEFAULT, the main program):
        // offer it only if there is a real function to forward to.
        return Decision::Answer(if sym.get().is_some() { hook } else { 0 });
    }
    sym.remember(p);
    // SAFETY: as above.
    unsafe { real::remember_companions(handle, sym.lib()) };
    Decision::Answer(hook)
}

/// The exported `dlsym` (x86-64): calls [`route`], then either returns its answer or
/// tail-jumps to glibc's `dlsym` with the caller's registers and return address.
///
/// # Safety
/// The `dlsym(3)` contract.
#[cfg(all(target_arch = "x86_64", not(test)))]
#[no_mangle]
#[unsafe(naked)]
pub unsafe extern "C" fn dlsym(handle: *mut c_void, name: *const c_char) -> *mut c_void {
    // Stack at entry: return address at rsp (rsp = 8 mod 16). Two pushes and 24 bytes
    // (the `out` slot) leave rsp 16-aligned for the call.
    core::arch::naked_asm!(
        "push rdi",
        "push rsi",
        "sub rsp, 24",
        "mov rdx, rsp",
        "call {route}",
        "mov rcx, qword ptr [rsp]",
        "add rsp, 24",
        "pop rsi",
        "pop rdi",
        "test rax, rax",
        "jz 2f",
        "jmp rax",
        "2:",
        "mov rax, rcx",
        "ret",
        route = sym route,
    )
}

/// The exported `dlsym` (other architectures): `RTLD_NEXT` is resolved relative to
/// this library, not the caller.
///
/// # Safety
/// The `dlsym(3)` contract.
#[cfg(all(not(target_arch = "x86_64"), not(test)))]
#[no_mangle]
pub unsafe extern "C" fn dlsym(handle: *mut c_void, name: *const c_char) -> *mut c_void {
    let mut out: *mut c_void = std::ptr::null_mut();
    // SAFETY: forwarded from the caller's contract; out is a valid local.
    let jump = unsafe { route(handle, name, &mut out) };
    if jump == 0 {
        return out;
    }
    // SAFETY: jump is glibc's dlsym.
    let f: real::DlsymFn = unsafe { std::mem::transmute::<usize, real::DlsymFn>(jump) };
    // SAFETY: the caller's arguments.
    unsafe { f(handle, name) }
}
