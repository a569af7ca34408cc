//! Whether a pointer lies in the calling thread's live stack: memory the library may
//! read on the host whatever a cuBLAS handle's pointer mode says.
//!
//! A GEMM in host pointer mode passes alpha and beta as host pointers, and programs
//! almost always pass the addresses of local variables (PyTorch, CuPy and the C
//! examples do). The library follows each handle's pointer mode through the hooked
//! setter ([`crate::hooks::handle`]); a program that switched a handle to device
//! pointer mode through a path the library does not follow would make it read a
//! device pointer as host memory, and crash. A scalar between the hook's own frame
//! and the top of the thread's stack is mapped host memory in every case, so the
//! library reads it without asking cuBLAS for the pointer mode; any other scalar
//! pointer makes it ask.
//!
//! The thread's stack bounds come from `pthread_getattr_np`, once per thread (for the
//! main thread glibc reads `/proc/self/maps`; the answer is kept). A hook running on
//! another stack (a signal handler's alternate stack, a coroutine's) finds its own
//! frame outside those bounds and trusts nothing.

use std::cell::Cell;

/// Bounds not looked up yet.
const UNKNOWN: (usize, usize) = (0, 0);
/// The lookup failed: no pointer is trusted on this thread.
const UNAVAILABLE: (usize, usize) = (usize::MAX, usize::MAX);

thread_local! {
    /// The calling thread's stack as `[bottom, top)`.
    static BOUNDS: Cell<(usize, usize)> = const { Cell::new(UNKNOWN) };
}

/// The calling thread's stack, `[bottom, top)`, from the C library.
fn lookup() -> Option<(usize, usize)> {
    // SAFETY: pthread_attr_t is plain data that pthread_getattr_np initialises; it is
    // destroyed once read.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return None;
        }
        let mut addr: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let r = libc::pthread_attr_getstack(&attr, &mut addr, &mut size);
        libc::pthread_attr_destroy(&mut attr);
        let bottom = addr as usize;
        (r == 0 && size > 0).then(|| (bottom, bottom.saturating_add(size)))
    }
}

fn bounds() -> (usize, usize) {
    let known = BOUNDS.try_with(Cell::get).unwrap_or(UNAVAILABLE);
    if known != UNKNOWN {
        return known;
    }
    let found = lookup().unwrap_or(UNAVAILABLE);
    let _ = BOUNDS.try_with(|b| b.set(found));
    found
}

/// Whether `len` bytes at `p` lie between this function's frame and the top of the
/// calling thread's stack: in a frame of one of its callers, mapped and readable.
#[inline(never)]
pub fn on_live_stack(p: *const u8, len: usize) -> bool {
    let marker = 0u8;
    let here = std::hint::black_box(std::ptr::addr_of!(marker)) as usize;
    let (bottom, top) = bounds();
    let p = p as usize;
    bottom <= here && here < p && p.checked_add(len).is_some_and(|end| end <= top)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn check_from_a_callee(p: *const u8, len: usize) -> bool {
        on_live_stack(p, len)
    }

    #[test]
    fn a_callers_local_is_on_the_live_stack_and_nothing_else_is() {
        let local = std::hint::black_box(1.0f64);
        let p = std::ptr::addr_of!(local).cast::<u8>();
        assert!(check_from_a_callee(p, 8));
        // Heap, static data and the stack below the checking frame are not.
        let boxed = Box::new(1.0f64);
        assert!(!check_from_a_callee(std::ptr::addr_of!(*boxed).cast(), 8));
        static STATIC: f64 = 1.0;
        assert!(!check_from_a_callee(std::ptr::addr_of!(STATIC).cast(), 8));
        let (bottom, top) = bounds();
        assert!(!check_from_a_callee((bottom + 64) as *const u8, 8));
        // Past the top of the stack, or wrapping around, is not.
        assert!(!check_from_a_callee((top - 4) as *const u8, 8));
        assert!(!check_from_a_callee(usize::MAX as *const u8, 8));
        assert!(!check_from_a_callee(std::ptr::null(), 8));
    }

    #[test]
    fn every_thread_has_its_own_bounds() {
        let main_local = std::hint::black_box(3u32);
        let p = std::ptr::addr_of!(main_local) as usize;
        assert!(check_from_a_callee(p as *const u8, 4));
        let other = std::thread::spawn(move || {
            let mine = std::hint::black_box(4u32);
            (
                check_from_a_callee(std::ptr::addr_of!(mine).cast(), 4),
                check_from_a_callee(p as *const u8, 4),
            )
        })
        .join()
        .expect("the thread");
        assert_eq!(other, (true, false), "a thread trusts its own stack only");
    }
}
