//! The GPU side of a sampled call: the gather module loaded once per context, a ring of
//! mapped pinned memory per context, an event pool, and the launches.
//!
//! Everything here runs on the caller's current context and stream, right around the
//! forwarded GEMM: the pre-gather (C entries, when beta may be non-zero) just before
//! it, the post-gather and an event record just after. The host never waits: the
//! background thread polls the event ([`InFlight`]) and reads the slot once it fired.
//! Setup (module load, pinned allocation) happens at the first sampled call of a
//! context whose stream is not capturing, never during a capture, and a context whose
//! setup failed is remembered so that its calls become gaps without retrying.

use std::ffi::CStr;
use std::ops::Range;
use std::sync::{Arc, Mutex, OnceLock};

use mmaudit_protocol::record::GapReason;

use crate::driver::{Driver, EventState, Handle};
use crate::log::{self, Level};
use crate::model::gather::{
    DeviceLayout, LeafJobs, OpeningLayout, Picks, SlotLayout, COMMIT_JOB_BYTES, JOB_BYTES,
};
use crate::ring::Ring;
use crate::stream::{Gathered, Pending, Resolved};

/// The gather kernel's PTX (cuda/gather.ptx, generated from cuda/gather.cu), with the
/// terminating NUL the driver wants.
static PTX: &str = concat!(include_str!("../../cuda/gather.ptx"), "\0");
/// The kernel's entry point.
const ENTRY: &CStr = c"mmaudit_gather";
/// The entry point of graph replays' gather nodes.
const REPLAY_ENTRY: &CStr = c"mmaudit_gather_replay";
/// The entry point that hashes a whole call's vectors (commit mode).
const LEAVES_ENTRY: &CStr = c"mmaudit_commit_leaves";
/// The entry point of graph replays' leaf-hash nodes (commit mode).
const LEAVES_REPLAY_ENTRY: &CStr = c"mmaudit_commit_leaves_replay";
/// Most blocks per job along x (each grid-strides over its elements).
const MAX_BLOCKS_X: u64 = 1024;

/// A mapped pinned block: host address, device address, bytes.
pub type Block = (usize, u64, usize);

/// One CUDA context's gather resources.
pub struct GpuContext {
    /// The context handle.
    pub ctx: Handle,
    /// Its device ordinal.
    pub device: u32,
    function: Handle,
    /// The leaf-hash kernel (`mmaudit_commit_leaves`).
    leaves_function: Handle,
    /// The replay gather kernel (`mmaudit_gather_replay`).
    pub replay_function: Handle,
    /// The replay leaf-hash kernel (`mmaudit_commit_leaves_replay`).
    pub leaves_replay_function: Handle,
    host: usize,
    dev: u64,
    ring: Mutex<Ring>,
    events: Mutex<Vec<Handle>>,
    /// Commit mode's retention ring in device memory and the library's own stream,
    /// made at the first whole-call gather ([`GpuContext::retention`]); an error is
    /// remembered.
    retention: OnceLock<Result<DeviceRing, String>>,
    /// Mapped pinned blocks of destroyed executable graphs, for reuse once the event
    /// recorded after their last launch fired: (block, event). Never freed: freeing
    /// pinned memory may synchronise, which a hook or the background thread must not.
    blocks: Mutex<Vec<(Block, Option<Handle>)>>,
}

/// Commit mode: device memory that keeps whole calls until the verifier's challenge
/// (`MMAUDIT_RETAIN_MB` per context), with a stream of the library's own on which
/// openings are gathered from it, off the application's streams.
pub struct DeviceRing {
    base: u64,
    ring: Mutex<Ring>,
    stream: Handle,
}

/// A slot of a context's device retention ring, returned to the ring when dropped.
/// Whoever holds it makes sure no device work that reads or writes it is still queued
/// by then ([`DeviceSlot::leak`] otherwise).
pub struct DeviceSlot {
    gpu: Arc<GpuContext>,
    offset: usize,
}

impl DeviceSlot {
    /// Device address of the slot.
    pub fn address(&self) -> u64 {
        self.gpu.device_ring().map_or(0, |r| r.base) + self.offset as u64
    }

    /// Keeps the slot allocated for good (device work that may still use it cannot be
    /// waited for).
    pub fn leak(self) {
        std::mem::forget(self);
    }
}

impl std::fmt::Debug for DeviceSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceSlot({:#x})", self.address())
    }
}

impl Drop for DeviceSlot {
    fn drop(&mut self) {
        if let Some(r) = self.gpu.device_ring() {
            r.ring
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .free(self.offset);
        }
    }
}

/// A whole call kept in device memory (commit mode): its slot, what lies where in it,
/// and the host's copies of the vectors that check the GPU's leaf hashes.
#[derive(Debug)]
pub struct Retained {
    /// The slot (freed when this is dropped).
    pub slot: DeviceSlot,
    /// What lies where in it.
    pub layout: DeviceLayout,
    /// The checked vector of op(A), op(B), C, D ([`crate::model::gather::DeviceSide`]).
    pub checks: [Option<Vec<u8>>; 4],
}

/// The gather of an opening's vectors from a [`Retained`] call into pinned memory, on
/// the library's stream; polled by the background thread.
pub struct OpeningGather {
    retained: Option<Retained>,
    slot: Option<Slot>,
    event: Handle,
    outputs: [Option<Range<usize>>; 4],
}

impl Retained {
    /// Launches the gather of `picks` (per operand; `None`: not opened here) from the
    /// device slot into pinned memory. An error says why it cannot be (the opening is
    /// then a "not retained" gap).
    pub fn open(self, picks: [Option<Picks<'_>>; 4]) -> Result<OpeningGather, String> {
        let Some(drv) = crate::driver::driver() else {
            return Err("libcuda.so.1 could not be loaded".into());
        };
        let gpu = Arc::clone(&self.slot.gpu);
        let Some(ring) = gpu.device_ring() else {
            return Err("the context has no device retention ring".into());
        };
        let Some(layout) = OpeningLayout::new(&self.layout, &picks) else {
            return Err("the opening's plan is empty or too large".into());
        };
        let Some(slot) = gpu.alloc(layout.len) else {
            return Err(format!(
                "no room for the opening's {} bytes in the {} MiB pinned ring (MMAUDIT_RING_MB)",
                layout.len,
                gpu.ring_capacity() >> 20
            ));
        };
        let dev = slot.device_address();
        // SAFETY: the slot was just allocated: nobody else uses it until launched.
        layout.write(dev, self.slot.address(), unsafe { slot.host_bytes() });
        let outputs = layout.outputs.clone();
        let (max, njobs) = (layout.max_elements, layout.jobs);
        let x = max.div_ceil(256).clamp(1, MAX_BLOCKS_X) as u32;
        bind_thread(drv, gpu.ctx);
        let launched = drv
            .launch_jobs(gpu.function, (x, njobs), ring.stream, dev, njobs)
            .map_err(|e| e.to_string())
            .and_then(|()| gpu.take_event(drv))
            .and_then(|event| match drv.event_record(event, ring.stream) {
                Ok(()) => Ok(event),
                Err(e) => {
                    gpu.put_event(event);
                    Err(e.to_string())
                }
            });
        match launched {
            Ok(event) => Ok(OpeningGather {
                retained: Some(self),
                slot: Some(slot),
                event,
                outputs,
            }),
            Err(e) => {
                // Whether the gather was queued is unknown: both slots stay allocated.
                self.slot.leak();
                Err(format!("gathering the opening from device memory: {e}"))
            }
        }
    }
}

impl OpeningGather {
    /// `None` while the gather runs; then the opened vectors of op(A), op(B), C, D
    /// (`[batch][pick]` order, as an opening carries them), or why they cannot be had.
    pub fn poll(&mut self) -> Option<Result<[Option<Vec<u8>>; 4], String>> {
        let drv = crate::driver::driver()?;
        let slot = self.slot.as_ref()?;
        let gpu = Arc::clone(&slot.gpu);
        bind_thread(drv, gpu.ctx);
        match drv.event_query(self.event) {
            Ok(EventState::Pending) => None,
            Ok(EventState::Done) => {
                let slot = self.slot.take()?;
                // SAFETY: the event fired: the gather wrote the slot and nothing else
                // uses it until it is freed below.
                let bytes = unsafe { slot.host_bytes() };
                let mut out: [Option<Vec<u8>>; 4] = Default::default();
                for (o, r) in out.iter_mut().zip(&self.outputs) {
                    *o = r
                        .as_ref()
                        .and_then(|r| bytes.get(r.clone()))
                        .map(<[u8]>::to_vec);
                }
                gpu.put_event(self.event);
                gpu.free(slot.offset);
                // The device slot is free once the opening is read from it.
                self.retained = None;
                Some(Ok(out))
            }
            Err(e) => {
                // The device reports an error: what still runs is unknown, so the
                // slots stay allocated.
                self.slot = None;
                if let Some(r) = self.retained.take() {
                    r.slot.leak();
                }
                Some(Err(format!(
                    "gathering the opening from device memory: {e}"
                )))
            }
        }
    }
}

impl Drop for OpeningGather {
    /// Dropped before it completed (the session ended): the slots are freed only if
    /// the gather is known to be done, and stay allocated otherwise.
    fn drop(&mut self) {
        let Some(slot) = self.slot.take() else {
            return;
        };
        let done = crate::driver::driver().is_some_and(|drv| {
            bind_thread(drv, slot.gpu.ctx);
            drv.event_query(self.event) == Ok(EventState::Done)
        });
        if done {
            slot.gpu.put_event(self.event);
            slot.gpu.free(slot.offset);
        } else if let Some(r) = self.retained.take() {
            r.slot.leak();
        }
    }
}

/// A slot of one context's ring.
pub struct Slot {
    /// Its context.
    pub gpu: Arc<GpuContext>,
    /// Offset in the ring.
    pub offset: usize,
    /// Bytes.
    pub len: usize,
}

impl Slot {
    /// Device address of the slot.
    pub fn device_address(&self) -> u64 {
        self.gpu.dev + self.offset as u64
    }

    /// The slot's bytes as seen from the host.
    ///
    /// # Safety
    /// The caller must be the slot's only user (its owner, before the launch or after
    /// the event fired) for the life of the returned slice.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn host_bytes(&self) -> &mut [u8] {
        // SAFETY: [offset, offset+len) lies inside the ring's pinned allocation (the
        // ring never hands out ranges beyond its capacity) and, per the contract, no
        // other reference to it exists.
        unsafe {
            std::slice::from_raw_parts_mut((self.gpu.host + self.offset) as *mut u8, self.len)
        }
    }
}

impl GpuContext {
    fn create(
        drv: &Driver,
        ctx: Handle,
        device: u32,
        ring_bytes: usize,
    ) -> Result<GpuContext, String> {
        let ptx = CStr::from_bytes_with_nul(PTX.as_bytes())
            .map_err(|_| "the embedded PTX holds a NUL byte".to_string())?;
        drv.relaxed(|| {
            let [function, replay_function, leaves_function, leaves_replay_function] = drv
                .load_functions(
                    ptx,
                    [ENTRY, REPLAY_ENTRY, LEAVES_ENTRY, LEAVES_REPLAY_ENTRY],
                )
                .map_err(|e| format!("loading the gather kernel: {e}"))?;
            let (host, dev) = drv.host_alloc_mapped(ring_bytes).map_err(|e| {
                format!(
                    "allocating {} MiB of mapped pinned memory: {e}",
                    ring_bytes >> 20
                )
            })?;
            Ok(GpuContext {
                ctx,
                device,
                function,
                leaves_function,
                replay_function,
                leaves_replay_function,
                host: host as usize,
                dev,
                ring: Mutex::new(Ring::new(ring_bytes)),
                events: Mutex::new(Vec::new()),
                retention: OnceLock::new(),
                blocks: Mutex::new(Vec::new()),
            })
        })
    }

    /// A mapped pinned block of at least `bytes`: one given back whose event fired (no
    /// device work reads it any more), or a new one, allocated with the calling
    /// thread's capture mode relaxed.
    pub fn take_block(&self, drv: &Driver, bytes: usize) -> Result<Block, String> {
        {
            let mut blocks = self.blocks.lock().unwrap_or_else(|e| e.into_inner());
            let idle = |e: &Option<Handle>| {
                e.is_none_or(|e| drv.relaxed(|| drv.event_query(e)) == Ok(EventState::Done))
            };
            if let Some(i) = blocks.iter().position(|(b, e)| b.2 >= bytes && idle(e)) {
                let (block, event) = blocks.swap_remove(i);
                if let Some(e) = event {
                    self.put_event(e);
                }
                return Ok(block);
            }
        }
        let (host, dev) = drv
            .relaxed(|| drv.host_alloc_mapped(bytes))
            .map_err(|e| e.to_string())?;
        Ok((host as usize, dev, bytes))
    }

    /// Gives a block from [`GpuContext::take_block`] back, to be reused once `event`
    /// (recorded after the last device work that reads it) has fired.
    pub fn put_block(&self, block: Block, event: Option<Handle>) {
        self.blocks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((block, event));
    }

    /// Takes a slot of `len` bytes, or `None` when the ring is full.
    pub fn alloc(self: &Arc<Self>, len: usize) -> Option<Slot> {
        let offset = self
            .ring
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .alloc(len)?;
        Some(Slot {
            gpu: Arc::clone(self),
            offset,
            len,
        })
    }

    /// Returns a slot's space to the ring.
    pub fn free(&self, offset: usize) {
        self.ring
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .free(offset);
    }

    /// Commit mode: the context's retention ring in device memory, made at the first
    /// call (`bytes` of device memory and a stream of the library's own, with the
    /// calling thread's capture mode relaxed); `None` when it cannot be had (said once;
    /// retained calls then stay in pinned host memory).
    pub fn retention(&self, drv: &Driver, bytes: usize) -> Option<&DeviceRing> {
        let r = self.retention.get_or_init(|| {
            let made = drv.relaxed(|| -> Result<DeviceRing, String> {
                let base = drv.device_alloc(bytes).map_err(|e| e.to_string())?;
                let stream = drv.stream_create().map_err(|e| e.to_string())?;
                Ok(DeviceRing {
                    base,
                    ring: Mutex::new(Ring::new(bytes)),
                    stream,
                })
            });
            match &made {
                Ok(_) => log::emit(
                    Level::Debug,
                    &format!(
                        "device {}: {} MiB of device memory keep committed calls",
                        self.device,
                        bytes >> 20
                    ),
                ),
                Err(e) => log::emit(
                    Level::Warn,
                    &format!(
                        "device {}: no retention ring in device memory ({e}); committed calls are kept in host memory",
                        self.device
                    ),
                ),
            }
            made
        });
        r.as_ref().ok()
    }

    fn device_ring(&self) -> Option<&DeviceRing> {
        self.retention.get().and_then(|r| r.as_ref().ok())
    }

    /// A slot of `len` bytes of the device retention ring, or `None` when it has no
    /// room (or there is none).
    pub fn alloc_device(self: &Arc<Self>, len: usize) -> Option<DeviceSlot> {
        let offset = self
            .device_ring()?
            .ring
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .alloc(len)?;
        Some(DeviceSlot {
            gpu: Arc::clone(self),
            offset,
        })
    }

    /// The ring's capacity.
    pub fn ring_capacity(&self) -> usize {
        self.ring
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .capacity()
    }

    pub(crate) fn take_event(&self, drv: &Driver) -> Result<Handle, String> {
        if let Some(e) = self.events.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            return Ok(e);
        }
        drv.relaxed(|| drv.event_create())
            .map_err(|e| e.to_string())
    }

    pub(crate) fn put_event(&self, e: Handle) {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(e);
    }

    /// Launches jobs `first..first + count` of the slot on `stream`.
    fn launch(
        &self,
        drv: &Driver,
        slot: &Slot,
        layout: &SlotLayout,
        first: u32,
        count: u32,
        stream: Handle,
    ) -> Result<(), String> {
        if count == 0 {
            return Ok(());
        }
        let x = layout.max_elements.div_ceil(256).clamp(1, MAX_BLOCKS_X) as u32;
        let jobs = slot.device_address() + (first as usize * JOB_BYTES) as u64;
        drv.launch_jobs(self.function, (x, count), stream, jobs, count)
            .map_err(|e| e.to_string())
    }

    /// Launches the leaf-hash jobs of the slot's [`LeafJobs`] for `phase` (0 before the
    /// GEMM, 1 after) on `stream`; nothing when there are none.
    fn launch_leaves(
        &self,
        drv: &Driver,
        slot: &Slot,
        leaves: &LeafJobs,
        phase: usize,
        stream: Handle,
    ) -> Result<(), String> {
        let (first, count) = match phase {
            0 => (0, leaves.pre),
            _ => (leaves.pre, leaves.post),
        };
        if count == 0 {
            return Ok(());
        }
        let jobs = slot.device_address() + (leaves.at + first as usize * COMMIT_JOB_BYTES) as u64;
        let x = leaves.blocks_x[phase.min(1)];
        drv.launch_jobs(self.leaves_function, (x, count), stream, jobs, count)
            .map_err(|e| e.to_string())
    }
}

/// Commit mode: the layout of a whole call's gather, its vectors hashed on the GPU
/// where they lie, and copied into a slot of the context's retention ring in device
/// memory (returned with it) when there is room: op(B), C and D, and op(A) unless it
/// is, or may be, a tensor the hello offers (the background thread then looks its rows
/// up, as it does op(B)'s when its shape is offered: those stay in pinned memory). The
/// whole call goes to pinned memory, as before, when the ring cannot be had or is full,
/// when the leaf hashes do not fit, or once the GPU's leaf hashes disagreed with the
/// host's check (they are then no longer used: [`crate::stream::commit::leaves_trusted`]).
///
/// `make_ring`: the ring's size, to make it now if the context has none (the caller has
/// the context current); `None` uses only a ring made before (a graph launch, whose
/// thread may have another context current).
pub(crate) fn commit_layout(
    drv: &Driver,
    gpu: &Arc<GpuContext>,
    layout: SlotLayout,
    gather: &crate::model::GatherSpec,
    make_ring: Option<usize>,
) -> (SlotLayout, Option<DeviceSlot>) {
    let capacity = gpu.ring_capacity();
    let c = &layout.call;
    let sides = [
        layout.held.is_none()
            && !crate::held::may_hold(c.a.dtype, c.k, c.batch.saturating_mul(c.m)),
        !crate::held::may_hold(c.b.dtype, c.k, c.batch.saturating_mul(c.n)),
        true,
        true,
    ];
    let device = (|| {
        if !crate::stream::commit::leaves_trusted() {
            return None;
        }
        match make_ring {
            Some(bytes) => gpu.retention(drv, bytes).map(drop)?,
            None => gpu.device_ring().map(drop)?,
        }
        let mut l = layout.to_device(sides)?.hashing_leaves(gather, capacity);
        l.leaves.as_ref()?;
        let slot = gpu.alloc_device(l.device.as_ref()?.len)?;
        l.place_device(slot.address());
        Some((l, slot))
    })();
    match device {
        Some((l, slot)) => (l, Some(slot)),
        None => (layout.hashing_leaves(gather, capacity), None),
    }
}

/// A context's gather resources, or why it has none.
type Setup = Result<Arc<GpuContext>, String>;

/// The gather resources of every context seen so far.
#[derive(Default)]
pub struct Contexts {
    list: Mutex<Vec<(Handle, Setup)>>,
}

impl Contexts {
    /// The resources of `ctx` if they were set up (successfully) already.
    pub fn existing(&self, ctx: Handle) -> Option<Arc<GpuContext>> {
        let list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        list.iter()
            .find(|(c, _)| *c == ctx)
            .and_then(|(_, r)| r.as_ref().ok().cloned())
    }

    /// The resources of `ctx`, set up on first use (the caller checked that its stream
    /// is not capturing). A failed setup is remembered and returned again.
    pub fn get(
        &self,
        drv: &Driver,
        ctx: Handle,
        device: u32,
        ring_bytes: usize,
    ) -> Result<Arc<GpuContext>, String> {
        let mut list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, r)) = list.iter().find(|(c, _)| *c == ctx) {
            return r.clone();
        }
        let r = GpuContext::create(drv, ctx, device, ring_bytes).map(Arc::new);
        match &r {
            Ok(_) => log::emit(
                Level::Debug,
                &format!("device {device}: gather kernel loaded, {} MiB pinned ring", ring_bytes >> 20),
            ),
            Err(e) => log::emit(
                Level::Warn,
                &format!("device {device}: sampled calls cannot be gathered ({e}); they are recorded as gaps"),
            ),
        }
        list.push((ctx, r.clone()));
        r
    }
}

/// A sampled call's gather, prepared in its slot (jobs and index lists written).
pub struct Prepared {
    slot: Slot,
    layout: SlotLayout,
    /// Commit mode: the device slot the whole call is copied into.
    device: Option<DeviceSlot>,
    pre_launched: bool,
    /// Every leaf-hash job of the layout launched so far (none failed).
    hashed: bool,
}

impl Prepared {
    /// Takes a slot for `layout` and writes its jobs (with `device`, the slot of the
    /// device retention ring the layout copies the whole call into, placed already);
    /// `Err` is the gap to record.
    pub fn new(
        gpu: &Arc<GpuContext>,
        layout: SlotLayout,
        device: Option<DeviceSlot>,
    ) -> Result<Prepared, (GapReason, String)> {
        let Some(slot) = gpu.alloc(layout.len) else {
            return Err((
                GapReason::RingFull,
                format!(
                    "no room for {} bytes in the {} MiB pinned ring (MMAUDIT_RING_MB)",
                    layout.len,
                    gpu.ring_capacity() >> 20
                ),
            ));
        };
        // SAFETY: the slot was just allocated: nobody else uses it until launched.
        let bytes = unsafe { slot.host_bytes() };
        if let Err(e) = layout.write(slot.device_address(), bytes) {
            gpu.free(slot.offset);
            return Err((GapReason::Internal, e));
        }
        let hashed = layout.leaves.is_some();
        Ok(Prepared {
            slot,
            layout,
            device,
            pre_launched: false,
            hashed,
        })
    }

    /// Launches the leaf-hash jobs of `phase` (0 before the GEMM, 1 after), if the
    /// layout has them; one that fails to launch leaves the hashing to the host.
    fn launch_leaves(&mut self, drv: &Driver, phase: usize, stream: Handle) {
        if let (Some(leaves), true) = (&self.layout.leaves, self.hashed) {
            let gpu = &self.slot.gpu;
            if let Err(e) = gpu.launch_leaves(drv, &self.slot, leaves, phase, stream) {
                self.hashed = false;
                log::emit(
                    Level::Debug,
                    &format!(
                        "call {}: leaf hashes left to the host: {e}",
                        self.layout.call.index
                    ),
                );
            }
        }
    }

    /// Launches the jobs that must run before the GEMM (C entries, and in commit mode
    /// the hashes of C's columns), on `stream`.
    pub fn launch_pre(&mut self, drv: &Driver, stream: Handle) -> Result<(), (GapReason, String)> {
        let n = self.layout.pre_jobs;
        if n == 0 {
            return Ok(());
        }
        match self
            .slot
            .gpu
            .launch(drv, &self.slot, &self.layout, 0, n, stream)
        {
            Ok(()) => {
                self.pre_launched = true;
                self.launch_leaves(drv, 0, stream);
                Ok(())
            }
            Err(e) => {
                self.slot.gpu.free(self.slot.offset);
                Err((GapReason::GatherFailed, e))
            }
        }
    }

    /// After the forwarded GEMM (which the library accepted): launches the remaining
    /// jobs and records an event. Returns what the background thread waits on, or the
    /// gap to record at once.
    pub fn finish(mut self, drv: &Driver, stream: Handle) -> Result<InFlight, (GapReason, String)> {
        let gpu = Arc::clone(&self.slot.gpu);
        let (first, n) = (self.layout.pre_jobs, self.layout.post_jobs);
        let failed = gpu
            .launch(drv, &self.slot, &self.layout, first, n, stream)
            .err();
        if let (Some(why), false) = (&failed, self.pre_launched) {
            // Nothing of ours runs on the device: the slot is free at once.
            gpu.free(self.slot.offset);
            return Err((GapReason::GatherFailed, why.clone()));
        }
        if failed.is_none() {
            self.launch_leaves(drv, 1, stream);
        }
        let event = self.record_event(drv, stream)?;
        Ok(InFlight {
            slot: self.slot,
            layout: self.layout,
            device: self.device,
            event,
            failed,
            discard: false,
            hashed: self.hashed,
        })
    }

    /// After a forwarded GEMM that the library rejected: nothing more is launched and
    /// nothing will be recorded. A slot that no launched gather writes is freed at
    /// once (`None`); otherwise an event is recorded after the pre-gather and the slot
    /// is freed by the background thread once it has fired, never before (a queued
    /// kernel may still write it). If no event can be recorded the slot stays
    /// allocated for good (the ring shrinks by one slot) and `None` is returned.
    pub fn abandon(self, drv: &Driver, stream: Handle) -> Option<InFlight> {
        if !self.pre_launched {
            self.slot.gpu.free(self.slot.offset);
            return None;
        }
        match self.record_event(drv, stream) {
            Ok(event) => Some(InFlight {
                slot: self.slot,
                layout: self.layout,
                device: self.device,
                event,
                failed: None,
                discard: true,
                hashed: false,
            }),
            Err((_, why)) => {
                if let Some(d) = self.device {
                    d.leak();
                }
                log::emit(
                    Level::Warn,
                    &format!("a rejected call's gather slot cannot be released ({why}); it stays allocated"),
                );
                None
            }
        }
    }

    /// An event recorded on `stream` after what was launched for this slot.
    fn record_event(&self, drv: &Driver, stream: Handle) -> Result<Handle, (GapReason, String)> {
        let gpu = &self.slot.gpu;
        // If no event can be had, the slot may still be written by a launched gather
        // and nothing can say when it is done: it stays allocated (the ring shrinks by
        // one slot).
        let event = gpu
            .take_event(drv)
            .map_err(|e| (GapReason::GatherFailed, format!("cuEventCreate: {e}")))?;
        if let Err(e) = drv.event_record(event, stream) {
            gpu.put_event(event);
            return Err((GapReason::GatherFailed, e.to_string()));
        }
        Ok(event)
    }
}

/// A gather in flight, polled by the background thread.
pub struct InFlight {
    slot: Slot,
    layout: SlotLayout,
    /// Commit mode: the device slot holding the whole call (freed when dropped).
    device: Option<DeviceSlot>,
    event: Handle,
    failed: Option<String>,
    /// The call was rejected: release the slot once the event fired, record nothing.
    discard: bool,
    /// The slot holds the leaf hashes of the whole call's vectors, hashed on the GPU.
    hashed: bool,
}

impl InFlight {
    fn release(&self) {
        self.slot.gpu.put_event(self.event);
        self.slot.gpu.free(self.slot.offset);
    }
}

thread_local! {
    static BOUND_CTX: std::cell::Cell<Handle> = const { std::cell::Cell::new(0) };
}

/// Makes the (existing) context `ctx` current on the calling thread, the background
/// thread, for its event queries.
pub(crate) fn bind_thread(drv: &Driver, ctx: Handle) {
    if BOUND_CTX.with(|c| c.get()) != ctx && drv.set_current(ctx).is_ok() {
        BOUND_CTX.with(|c| c.set(ctx));
    }
}

impl Pending for InFlight {
    fn index(&self) -> u64 {
        self.layout.call.index
    }

    fn discards(&self) -> bool {
        self.discard
    }

    fn poll(&mut self) -> Option<Resolved> {
        let drv = crate::driver::driver()?;
        let ctx = self.slot.gpu.ctx;
        bind_thread(drv, ctx);
        match drv.event_query(self.event) {
            Ok(EventState::Pending) => None,
            Err(e) if self.discard => {
                // The device reports an error: whether the pre-gather still runs is
                // unknown, so the slot stays allocated.
                if let Some(d) = self.device.take() {
                    d.leak();
                }
                log::emit(
                    Level::Warn,
                    &format!("a rejected call's gather slot cannot be released ({e}); it stays allocated"),
                );
                Some(Resolved::Released)
            }
            Err(e) => {
                self.release();
                Some(Resolved::Gap(GapReason::GatherFailed, e.to_string()))
            }
            Ok(EventState::Done) => {
                let result = match (&self.failed, self.discard) {
                    (_, true) => Resolved::Released,
                    (Some(why), false) => Resolved::Gap(GapReason::GatherFailed, why.clone()),
                    (None, false) => {
                        // SAFETY: the event fired, so the device finished writing the
                        // slot; this InFlight owns it until release() below.
                        let bytes = unsafe { self.slot.host_bytes() };
                        let device = self.device.take();
                        match Gathered::from_slot(&self.layout, bytes, self.hashed, device) {
                            Ok(g) => Resolved::Sample(Box::new(g)),
                            Err(e) => Resolved::Gap(GapReason::Internal, e),
                        }
                    }
                };
                self.release();
                Some(result)
            }
        }
    }
}
