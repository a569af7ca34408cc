//! The real functions behind the hooks, found at run time.
//!
//! For each hooked or helper symbol: first `dlsym(RTLD_NEXT, name)` (the library the
//! program linked, in the global scope after us); then a handle from
//! `dlopen(soname, RTLD_NOLOAD)` for each known cuBLAS soname (libraries a program
//! loaded `RTLD_LOCAL`); and whatever the `dlsym` hook saw when the program looked the
//! name up on a handle of its own ([`RealSym::remember`]). The first pointer found is
//! kept. Our own exports are never taken for the real thing.
//!
//! `dlsym` itself is the real one, from `dlvsym(RTLD_NEXT, "dlsym", GLIBC_x)`, since our
//! library exports a `dlsym` of its own. Nothing here panics or takes a lock: the
//! `dlsym` hook calls into this module for every lookup in the process.

use std::ffi::{c_char, c_void, CStr};
use std::sync::atomic::{AtomicUsize, Ordering};

/// `dlsym`'s type.
pub type DlsymFn = unsafe extern "C" fn(*mut c_void, *const c_char) -> *mut c_void;

static REAL_DLSYM: AtomicUsize = AtomicUsize::new(0);

/// The real `dlsym` (glibc's), or `None` if it cannot be found.
pub fn real_dlsym() -> Option<DlsymFn> {
    let mut p = REAL_DLSYM.load(Ordering::Acquire);
    if p == 0 {
        for version in [c"GLIBC_2.34", c"GLIBC_2.2.5", c"GLIBC_2.17"] {
            // SAFETY: dlvsym with RTLD_NEXT and NUL-terminated strings only reads them.
            let f = unsafe { libc::dlvsym(libc::RTLD_NEXT, c"dlsym".as_ptr(), version.as_ptr()) };
            if !f.is_null() {
                p = f as usize;
                break;
            }
        }
        if p == 0 {
            return None;
        }
        REAL_DLSYM.store(p, Ordering::Release);
    }
    // SAFETY: p is the address of glibc's dlsym, whose type is DlsymFn.
    Some(unsafe { std::mem::transmute::<usize, DlsymFn>(p) })
}

/// `dlsym(handle, name)` through the real `dlsym`; 0 when absent.
///
/// # Safety
/// `handle` is a handle from `dlopen`, or a pseudo-handle (`RTLD_DEFAULT`,
/// `RTLD_NEXT`).
pub unsafe fn lookup(handle: *mut c_void, name: &CStr) -> usize {
    match real_dlsym() {
        // SAFETY: the real dlsym with a valid handle (per the contract) and a
        // NUL-terminated name.
        Some(f) => unsafe { f(handle, name.as_ptr()) as usize },
        None => 0,
    }
}

/// Which library a symbol belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lib {
    /// libcublas
    Cublas,
    /// libcublasLt
    CublasLt,
    /// libcudart (the CUDA runtime's graph functions)
    Cudart,
    /// libcuda (the driver's graph functions)
    Cuda,
}

impl Lib {
    fn sonames(self) -> &'static [&'static CStr] {
        match self {
            Lib::Cublas => &[
                c"libcublas.so.13",
                c"libcublas.so.12",
                c"libcublas.so.11",
                c"libcublas.so",
            ],
            Lib::CublasLt => &[
                c"libcublasLt.so.13",
                c"libcublasLt.so.12",
                c"libcublasLt.so.11",
                c"libcublasLt.so",
            ],
            Lib::Cudart => &[
                c"libcudart.so.13",
                c"libcudart.so.12",
                c"libcudart.so.11.0",
                c"libcudart.so",
            ],
            Lib::Cuda => &[c"libcuda.so.1"],
        }
    }
}

/// One real function, resolved on first use.
pub struct RealSym {
    /// Its name.
    pub name: &'static CStr,
    lib: Lib,
    ptr: AtomicUsize,
}

impl RealSym {
    /// An unresolved symbol.
    pub const fn new(name: &'static CStr, lib: Lib) -> Self {
        RealSym {
            name,
            lib,
            ptr: AtomicUsize::new(0),
        }
    }

    /// The real function's address, resolving it if needed; `None` when no library
    /// in the process defines it (other than ours).
    pub fn get(&self) -> Option<usize> {
        let p = self.ptr.load(Ordering::Acquire);
        if p != 0 {
            return Some(p);
        }
        let p = self.resolve()?;
        // Another thread (or the dlsym hook) may have won: keep the first.
        match self
            .ptr
            .compare_exchange(0, p, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Some(p),
            Err(existing) => Some(existing),
        }
    }

    fn resolve(&self) -> Option<usize> {
        let ours = crate::hooks::hook_address(self.name.to_bytes());
        let acceptable = |p: usize| p != 0 && Some(p) != ours;
        // SAFETY: RTLD_NEXT is a valid pseudo-handle.
        let p = unsafe { lookup(libc::RTLD_NEXT, self.name) };
        if acceptable(p) {
            return Some(p);
        }
        for soname in self.lib.sonames() {
            // SAFETY: RTLD_NOLOAD only returns a handle to an already loaded library
            // (raising its reference count, which dlclose lowers again).
            let h = unsafe { libc::dlopen(soname.as_ptr(), libc::RTLD_LAZY | libc::RTLD_NOLOAD) };
            if h.is_null() {
                continue;
            }
            // SAFETY: h is a live handle from dlopen.
            let p = unsafe { lookup(h, self.name) };
            // SAFETY: h came from dlopen above; the library stays loaded (the program
            // holds its own reference), so p remains valid.
            unsafe { libc::dlclose(h) };
            if acceptable(p) {
                return Some(p);
            }
        }
        None
    }

    /// Records the real address the program's own `dlsym` lookup found (first wins).
    pub fn remember(&self, p: usize) {
        let _ = self
            .ptr
            .compare_exchange(0, p, Ordering::AcqRel, Ordering::Acquire);
    }
}

macro_rules! real_syms {
    ($($ident:ident = $name:literal in $lib:ident;)*) => {
        $(
            #[doc = concat!("The real `", $name, "`.")]
            pub static $ident: RealSym = RealSym::new(
                match CStr::from_bytes_with_nul(concat!($name, "\0").as_bytes()) {
                    Ok(c) => c,
                    Err(_) => c"",
                },
                Lib::$lib,
            );
        )*
        /// Every real symbol, for the `dlsym` hook.
        pub static ALL: &[&RealSym] = &[$(&$ident),*];
    };
}

real_syms! {
    SGEMM = "cublasSgemm_v2" in Cublas;
    SGEMM_64 = "cublasSgemm_v2_64" in Cublas;
    HGEMM = "cublasHgemm" in Cublas;
    SGEMM_STRIDED_BATCHED = "cublasSgemmStridedBatched" in Cublas;
    HGEMM_STRIDED_BATCHED = "cublasHgemmStridedBatched" in Cublas;
    GEMM_EX = "cublasGemmEx" in Cublas;
    GEMM_EX_64 = "cublasGemmEx_64" in Cublas;
    GEMM_STRIDED_BATCHED_EX = "cublasGemmStridedBatchedEx" in Cublas;
    GEMM_STRIDED_BATCHED_EX_64 = "cublasGemmStridedBatchedEx_64" in Cublas;
    GEMM_BATCHED_EX = "cublasGemmBatchedEx" in Cublas;
    GEMM_BATCHED_EX_64 = "cublasGemmBatchedEx_64" in Cublas;
    LT_MATMUL = "cublasLtMatmul" in CublasLt;
    DGEMM = "cublasDgemm_v2" in Cublas;
    DGEMM_STRIDED_BATCHED = "cublasDgemmStridedBatched" in Cublas;
    SGEMM_EX = "cublasSgemmEx" in Cublas;
    SGEMM_BATCHED = "cublasSgemmBatched" in Cublas;
    HGEMM_BATCHED = "cublasHgemmBatched" in Cublas;
    SGEMV = "cublasSgemv_v2" in Cublas;
    DGEMV = "cublasDgemv_v2" in Cublas;
    GEMM_GROUPED_BATCHED_EX = "cublasGemmGroupedBatchedEx" in Cublas;
    SGEMM_GROUPED_BATCHED = "cublasSgemmGroupedBatched" in Cublas;
    DGEMM_64 = "cublasDgemm_v2_64" in Cublas;
    HGEMM_64 = "cublasHgemm_64" in Cublas;
    DGEMM_STRIDED_BATCHED_64 = "cublasDgemmStridedBatched_64" in Cublas;
    SGEMM_STRIDED_BATCHED_64 = "cublasSgemmStridedBatched_64" in Cublas;
    HGEMM_STRIDED_BATCHED_64 = "cublasHgemmStridedBatched_64" in Cublas;
    SGEMM_EX_64 = "cublasSgemmEx_64" in Cublas;
    SGEMM_BATCHED_64 = "cublasSgemmBatched_64" in Cublas;
    HGEMM_BATCHED_64 = "cublasHgemmBatched_64" in Cublas;
    DGEMM_BATCHED = "cublasDgemmBatched" in Cublas;
    DGEMM_BATCHED_64 = "cublasDgemmBatched_64" in Cublas;
    SGEMV_64 = "cublasSgemv_v2_64" in Cublas;
    DGEMV_64 = "cublasDgemv_v2_64" in Cublas;
    GEMM_GROUPED_BATCHED_EX_64 = "cublasGemmGroupedBatchedEx_64" in Cublas;
    SGEMM_GROUPED_BATCHED_64 = "cublasSgemmGroupedBatched_64" in Cublas;
    DGEMM_GROUPED_BATCHED = "cublasDgemmGroupedBatched" in Cublas;
    DGEMM_GROUPED_BATCHED_64 = "cublasDgemmGroupedBatched_64" in Cublas;
    CGEMM = "cublasCgemm_v2" in Cublas;
    CGEMM_64 = "cublasCgemm_v2_64" in Cublas;
    CGEMM_STRIDED_BATCHED = "cublasCgemmStridedBatched" in Cublas;
    CGEMM_STRIDED_BATCHED_64 = "cublasCgemmStridedBatched_64" in Cublas;
    CGEMM_BATCHED = "cublasCgemmBatched" in Cublas;
    CGEMM_BATCHED_64 = "cublasCgemmBatched_64" in Cublas;
    ZGEMM = "cublasZgemm_v2" in Cublas;
    ZGEMM_64 = "cublasZgemm_v2_64" in Cublas;
    ZGEMM_STRIDED_BATCHED = "cublasZgemmStridedBatched" in Cublas;
    ZGEMM_STRIDED_BATCHED_64 = "cublasZgemmStridedBatched_64" in Cublas;
    ZGEMM_BATCHED = "cublasZgemmBatched" in Cublas;
    ZGEMM_BATCHED_64 = "cublasZgemmBatched_64" in Cublas;
    CGEMM3M = "cublasCgemm3m" in Cublas;
    CGEMM3M_64 = "cublasCgemm3m_64" in Cublas;
    CGEMM3M_STRIDED_BATCHED = "cublasCgemm3mStridedBatched" in Cublas;
    CGEMM3M_STRIDED_BATCHED_64 = "cublasCgemm3mStridedBatched_64" in Cublas;
    CGEMM3M_BATCHED = "cublasCgemm3mBatched" in Cublas;
    CGEMM3M_BATCHED_64 = "cublasCgemm3mBatched_64" in Cublas;
    CGEMV = "cublasCgemv_v2" in Cublas;
    CGEMV_64 = "cublasCgemv_v2_64" in Cublas;
    ZGEMV = "cublasZgemv_v2" in Cublas;
    ZGEMV_64 = "cublasZgemv_v2_64" in Cublas;
    GET_STREAM = "cublasGetStream_v2" in Cublas;
    GET_POINTER_MODE = "cublasGetPointerMode_v2" in Cublas;
    GET_MATH_MODE = "cublasGetMathMode" in Cublas;
    CREATE = "cublasCreate_v2" in Cublas;
    DESTROY = "cublasDestroy_v2" in Cublas;
    SET_STREAM = "cublasSetStream_v2" in Cublas;
    SET_POINTER_MODE = "cublasSetPointerMode_v2" in Cublas;
    SET_MATH_MODE = "cublasSetMathMode" in Cublas;
    LT_DESC_GET_ATTRIBUTE = "cublasLtMatmulDescGetAttribute" in CublasLt;
    LT_LAYOUT_GET_ATTRIBUTE = "cublasLtMatrixLayoutGetAttribute" in CublasLt;
    LT_ALGO_CONFIG_GET_ATTRIBUTE = "cublasLtMatmulAlgoConfigGetAttribute" in CublasLt;
    LT_DESC_CREATE = "cublasLtMatmulDescCreate" in CublasLt;
    LT_DESC_SET_ATTRIBUTE = "cublasLtMatmulDescSetAttribute" in CublasLt;
    LT_DESC_DESTROY = "cublasLtMatmulDescDestroy" in CublasLt;
    LT_LAYOUT_CREATE = "cublasLtMatrixLayoutCreate" in CublasLt;
    LT_LAYOUT_SET_ATTRIBUTE = "cublasLtMatrixLayoutSetAttribute" in CublasLt;
    LT_LAYOUT_DESTROY = "cublasLtMatrixLayoutDestroy" in CublasLt;
    CUDA_STREAM_BEGIN_CAPTURE = "cudaStreamBeginCapture" in Cudart;
    CUDA_STREAM_END_CAPTURE = "cudaStreamEndCapture" in Cudart;
    CUDA_GRAPH_INSTANTIATE = "cudaGraphInstantiate" in Cudart;
    CUDA_GRAPH_INSTANTIATE_WITH_FLAGS = "cudaGraphInstantiateWithFlags" in Cudart;
    CUDA_GRAPH_INSTANTIATE_WITH_PARAMS = "cudaGraphInstantiateWithParams" in Cudart;
    CUDA_GRAPH_LAUNCH = "cudaGraphLaunch" in Cudart;
    CUDA_GRAPH_LAUNCH_PTSZ = "cudaGraphLaunch_ptsz" in Cudart;
    CUDA_GRAPH_EXEC_UPDATE = "cudaGraphExecUpdate" in Cudart;
    CUDA_GRAPH_EXEC_DESTROY = "cudaGraphExecDestroy" in Cudart;
    CUDA_GRAPH_DESTROY = "cudaGraphDestroy" in Cudart;
    CU_STREAM_BEGIN_CAPTURE = "cuStreamBeginCapture_v2" in Cuda;
    CU_STREAM_END_CAPTURE = "cuStreamEndCapture" in Cuda;
    CU_GRAPH_INSTANTIATE_WITH_FLAGS = "cuGraphInstantiateWithFlags" in Cuda;
    CU_GRAPH_INSTANTIATE_WITH_PARAMS = "cuGraphInstantiateWithParams" in Cuda;
    CU_GRAPH_LAUNCH = "cuGraphLaunch" in Cuda;
    CU_GRAPH_LAUNCH_PTSZ = "cuGraphLaunch_ptsz" in Cuda;
    CU_GRAPH_EXEC_UPDATE = "cuGraphExecUpdate_v2" in Cuda;
    CU_GRAPH_EXEC_DESTROY = "cuGraphExecDestroy" in Cuda;
    CU_GRAPH_DESTROY = "cuGraphDestroy" in Cuda;
}

/// After the program found a hooked symbol of `lib` on its own `handle` (a library it
/// may have loaded `RTLD_LOCAL`), takes the helper functions from the same handle.
///
/// # Safety
/// `handle` is a handle the program got from `dlopen` (or a pseudo-handle).
pub unsafe fn remember_companions(handle: *mut c_void, lib: Lib) {
    let helpers: &[&RealSym] = match lib {
        Lib::Cublas => &[&GET_STREAM, &GET_POINTER_MODE, &GET_MATH_MODE],
        Lib::CublasLt => &[
            &LT_DESC_GET_ATTRIBUTE,
            &LT_LAYOUT_GET_ATTRIBUTE,
            &LT_ALGO_CONFIG_GET_ATTRIBUTE,
        ],
        Lib::Cudart | Lib::Cuda => &[],
    };
    for h in helpers {
        if h.ptr.load(Ordering::Acquire) == 0 {
            // SAFETY: a valid handle per the contract.
            let p = unsafe { lookup(handle, h.name) };
            if p != 0 {
                h.remember(p);
            }
        }
    }
}

/// The library a symbol belongs to.
impl RealSym {
    /// Which library defines it.
    pub fn lib(&self) -> Lib {
        self.lib
    }
}

/// The real symbol called `name`, if it is one of ours.
pub fn by_name(name: &[u8]) -> Option<&'static RealSym> {
    ALL.iter().copied().find(|s| s.name.to_bytes() == name)
}
