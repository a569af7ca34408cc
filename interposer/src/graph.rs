//! CUDA graphs: a GEMM captured into a graph is audited at every replay.
//!
//! **Capture.** When a hooked GEMM is issued on a capturing stream, the library adds
//! its own gather nodes to the same capture: `mmaudit_gather_replay(0, j, 0)` before
//! the GEMM when it reads C, `mmaudit_gather_replay(0, j, 1)` after it, where `j` is
//! the GEMM's position in the capture. Their control-block pointer is null, so they do
//! nothing in the graph as captured. The call is ledgered as a capture record
//! (CAPTURED: it computed nothing yet) and remembered, with the two node handles, for
//! the graph the capture produces ([`Graphs::end_capture`]). Nothing is allocated or
//! loaded during a capture: the gather module and the pinned ring of the context are
//! set up when a capture begins (the capture-begin hooks) or at the first eager
//! sampled call; a capture on a context without them records its GEMMs as before
//! (captured, replays not audited).
//!
//! **Instantiation.** Each executable graph of such a graph gets a control block in
//! mapped pinned memory (`cuda/gather.cu` gives its layout: a header with the replay
//! number in progress, then `MMAUDIT_GRAPH_DEPTH` (default 16) rows of one entry per GEMM) and its gather nodes
//! are bound to it once, with `cuGraphExecKernelNodeSetParams` (never per launch).
//!
//! **Launch.** Every launch is a replay `r` of its executable graph: each GEMM of the
//! graph gets a ledger record (REPLAYED, naming graph, executable graph, replay and
//! node) and the normal keyed sampling decision; a sampled GEMM gets a ring slot with
//! its gather jobs and an entry in row `r % depth` tagged `r`. Around the forwarded
//! launch the library queues, on the launch stream, a 4-byte store of `r` into the
//! control block before it and of "none" after it, then an event: the gather nodes of
//! that replay find their entries by `r` and gather into the slots; every other launch
//! (a replay with nothing sampled, a launch this library did not see) finds "none" or a
//! stale tag and gathers nothing. Each phase-1 node also writes `r` into its slot's
//! marker, so a gather that did not run for this replay becomes a gap, never stale
//! data. Launches of one executable graph run in order (CUDA orders them); when one
//! comes on a different stream than the last, the new stream first waits for the last
//! launch's event so that the stores of two replays cannot overtake each other.
//!
//! **What becomes of a replay the library cannot serve**: a row still in use by an
//! earlier replay of the same executable graph (depth replays queued) turns its
//! sampled calls into QUEUE_FULL gaps; a full ring, RING_FULL gaps; an executable graph
//! whose nodes could not be bound (or whose graph had calls the library could not
//! add nodes for) records its replays' calls as "replayed, not audited"
//! (REPLAYED | CAPTURED).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use mmaudit_protocol::call::{flags, GemmCall, ReplayOf};
use mmaudit_protocol::record::GapReason;

use crate::driver::{Driver, EventState, Handle};
use crate::gpu::{commit_layout, Block, DeviceSlot, GpuContext, Slot};
use crate::log::{self, Level};
use crate::model::gather::SlotLayout;
use crate::model::GatherSpec;
use crate::state::Runtime;
use crate::stream::{Gathered, Msg, Pending, Resolved};

/// The control block's "no replay in progress" value (`MMAUDIT_REPLAY_NONE`).
pub const REPLAY_NONE: u32 = u32::MAX;
const HEADER_BYTES: usize = 16;
const ENTRY_BYTES: usize = 48;
/// `CU_STREAM_PER_THREAD`: a different stream on each thread.
pub(crate) const PER_THREAD_STREAM: Handle = 2;
/// Grid of a replay gather node (each block strides over jobs and elements).
const GRID: (u32, u32) = (8, 8);
/// Grid of a replay leaf-hash node (blocks stride over jobs along y and over a job's
/// vectors along x). Fixed at capture, unlike an eager call's, which is sized to the
/// call; not measured on a GPU.
const LEAVES_GRID: (u32, u32) = (32, 4);

/// A GEMM recorded during a capture.
#[derive(Clone)]
struct CapturedCall {
    /// As described at capture (index and CAPTURED flag are replaced per replay).
    call: GemmCall,
    /// Where its operands are; `None` for a call outside the model (UNMODELLED), which
    /// every replay ledgers and never samples.
    gather: Option<GatherSpec>,
    pre_node: Option<Handle>,
    /// `None` when the post node could not be added: the call cannot be gathered.
    post_node: Option<Handle>,
    /// Commit mode: the leaf-hash nodes after the pre- and post-gather nodes
    /// (`mmaudit_commit_leaves_replay`), added when the capture ran in a commit-mode
    /// session.
    pre_leaves: Option<Handle>,
    post_leaves: Option<Handle>,
    /// The library rejected the call at capture: it is not part of the graph.
    rejected: bool,
}

/// A replay node of a captured call (if it was added): its function, grid, phase.
type ReplayNode = (Option<Handle>, Handle, (u32, u32), u32);

impl CapturedCall {
    /// Whether every replay can hash this call's vectors on the GPU: its leaf nodes
    /// follow each of its gather nodes.
    fn hashes_leaves(&self) -> bool {
        self.post_leaves.is_some() && (self.pre_node.is_none() || self.pre_leaves.is_some())
    }

    /// The kernel nodes of the call with their functions, grids and phases.
    fn nodes(&self, gpu: &GpuContext) -> [ReplayNode; 4] {
        let (gather, leaves) = (gpu.replay_function, gpu.leaves_replay_function);
        [
            (self.pre_node, gather, GRID, 0),
            (self.pre_leaves, leaves, LEAVES_GRID, 0),
            (self.post_node, gather, GRID, 1),
            (self.post_leaves, leaves, LEAVES_GRID, 1),
        ]
    }
}

/// A capture in progress.
struct Building {
    /// The context's gather resources (`None`: not set up before the capture began).
    gpu: Option<Arc<GpuContext>>,
    /// The capture began in a commit-mode session: its calls get leaf-hash nodes.
    commit: bool,
    calls: Vec<CapturedCall>,
    /// Why some call of this capture cannot be audited at replay, if one cannot.
    broken: Option<String>,
}

/// A graph made by a capture the library followed.
struct GraphInfo {
    number: u32,
    gpu: Option<Arc<GpuContext>>,
    calls: Vec<CapturedCall>,
    broken: Option<String>,
}

/// An executable graph of such a graph.
pub(crate) struct ExecInfo {
    number: u32,
    /// Rows of the control block's entry table.
    depth: u32,
    graph: Arc<GraphInfo>,
    /// The control block, or why it has none.
    ctrl: Result<Block, String>,
    state: Mutex<ExecState>,
    /// Per row: a queued replay's gathers still use it.
    busy: Vec<AtomicBool>,
    /// Recorded after every launch with samples, after its "no replay" store.
    order_event: Handle,
}

struct ExecState {
    next_replay: u64,
    /// The stream of the last launch with samples (`order_event` was recorded after its
    /// trailing "no replay" store).
    last_sampled: Option<Handle>,
    /// The stream of the last launch (the graph's nodes read the control block).
    last_launch: Option<Handle>,
    /// Recorded after the last launch once the executable graph is destroyed or
    /// updated: the control block is free when it fired.
    retired: Option<Handle>,
}

/// The graphs and executable graphs the library knows.
#[derive(Default)]
pub struct Graphs {
    building: Mutex<HashMap<u64, Building>>,
    graphs: Mutex<HashMap<Handle, Arc<GraphInfo>>>,
    execs: Mutex<HashMap<Handle, Arc<ExecInfo>>>,
    next_graph: AtomicU32,
    next_exec: AtomicU32,
}

/// What a captured call's hook keeps between its two halves.
pub(crate) struct CaptureSlot {
    id: u64,
    node: usize,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Graphs {
    /// Before a GEMM is captured on `stream`: reserves its place in the capture and
    /// adds the pre-gather node when it reads C. `None` when its replays cannot be
    /// audited (the capture is then marked so).
    pub(crate) fn capture_before(
        &self,
        drv: &Driver,
        gpu: Option<Arc<GpuContext>>,
        commit: bool,
        stream: Handle,
        call: &GemmCall,
        gather: Option<&GatherSpec>,
    ) -> Option<CaptureSlot> {
        let info = drv.capture_info(stream)?;
        let mut building = lock(&self.building);
        let b = building.entry(info.id).or_insert_with(|| Building {
            broken: gpu.is_none().then(|| {
                "the gather kernel was not loaded on this context before the capture began".into()
            }),
            gpu,
            commit,
            calls: Vec::new(),
        });
        // Every GEMM of the capture is remembered, so that every replay ledgers it: as
        // audited, or, once the capture is marked broken, as "replayed, not audited".
        let node = b.calls.len();
        let mut template = call.clone();
        template.flags &= !flags::CAPTURED;
        b.calls.push(CapturedCall {
            call: template,
            gather: gather.cloned(),
            pre_node: None,
            post_node: None,
            pre_leaves: None,
            post_leaves: None,
            rejected: false,
        });
        // A call outside the model gets no nodes (it is never sampled), but its place,
        // so that the library's rejection of it is still recorded.
        if gather.is_none() {
            return Some(CaptureSlot { id: info.id, node });
        }
        let (None, Some(gpu)) = (&b.broken, b.gpu.clone()) else {
            return None;
        };
        if call.reads_c() {
            let pre_node = add_node(drv, stream, gpu.replay_function, GRID, node, 0);
            if pre_node.is_none() {
                b.broken = Some(format!(
                    "the pre-gather node of GEMM {node} could not be added"
                ));
            } else if b.commit {
                b.calls[node].pre_leaves = add_node(
                    drv,
                    stream,
                    gpu.leaves_replay_function,
                    LEAVES_GRID,
                    node,
                    0,
                );
            }
            b.calls[node].pre_node = pre_node;
        }
        b.broken
            .is_none()
            .then_some(CaptureSlot { id: info.id, node })
    }

    /// After the captured GEMM was forwarded: adds the post-gather node (or marks the
    /// call rejected when the library refused it).
    pub(crate) fn capture_after(
        &self,
        drv: &Driver,
        stream: Handle,
        slot: CaptureSlot,
        rejected: bool,
    ) {
        let mut building = lock(&self.building);
        let Some(b) = building.get_mut(&slot.id) else {
            return;
        };
        let (gpu, commit) = (b.gpu.clone(), b.commit);
        let Some(c) = b.calls.get_mut(slot.node) else {
            return;
        };
        if rejected {
            c.rejected = true;
            return;
        }
        let (Some(gpu), Some(_)) = (gpu, &c.gather) else {
            return;
        };
        c.post_node = add_node(drv, stream, gpu.replay_function, GRID, slot.node, 1);
        if c.post_node.is_none() {
            b.broken = Some(format!(
                "the gather node of GEMM {} could not be added",
                slot.node
            ));
        } else if commit {
            // Without it the replays' calls are hashed on the host, as before.
            c.post_leaves = add_node(
                drv,
                stream,
                gpu.leaves_replay_function,
                LEAVES_GRID,
                slot.node,
                1,
            );
        }
    }

    /// The capture of `stream` is about to end: its id, to hand to [`Graphs::end_capture`].
    pub fn capture_id(&self, drv: &Driver, stream: Handle) -> Option<u64> {
        drv.capture_id(stream)
    }

    /// A capture ended: with `graph` when it produced one.
    pub fn end_capture(&self, id: u64, graph: Option<Handle>) {
        let Some(b) = lock(&self.building).remove(&id) else {
            return;
        };
        let Some(graph) = graph else {
            return;
        };
        if b.calls.iter().all(|c| c.rejected) {
            return;
        }
        let number = self.next_graph.fetch_add(1, Ordering::Relaxed) + 1;
        let info = GraphInfo {
            number,
            gpu: b.gpu,
            calls: b.calls,
            broken: b.broken,
        };
        lock(&self.graphs).insert(graph, Arc::new(info));
    }

    /// A graph was destroyed (its handle may be reused).
    pub fn forget_graph(&self, graph: Handle) {
        lock(&self.graphs).remove(&graph);
    }

    /// `graph` was instantiated as `exec`: allocates its control block and binds its
    /// gather nodes to it.
    pub fn instantiated(&self, drv: &Driver, graph: Handle, exec: Handle, depth: u32) {
        let Some(info) = lock(&self.graphs).get(&graph).cloned() else {
            // A graph we did not follow (or one that replaces a known exec's handle).
            lock(&self.execs).remove(&exec);
            return;
        };
        self.bind_exec(drv, info, exec, depth);
    }

    fn bind_exec(&self, drv: &Driver, info: Arc<GraphInfo>, exec: Handle, depth: u32) {
        let number = self.next_exec.fetch_add(1, Ordering::Relaxed) + 1;
        let order_event = drv.event_create().map_err(|e| e.to_string());
        let ctrl = order_event
            .clone()
            .and_then(|_| bind(drv, &info, exec, depth));
        if let Err(e) = &ctrl {
            log::emit(
                Level::Warn,
                &format!(
                    "graph {} (executable {number}): replays are recorded, not audited: {e}",
                    info.number
                ),
            );
        }
        let exec_info = ExecInfo {
            number,
            depth,
            busy: (0..depth).map(|_| AtomicBool::new(false)).collect(),
            graph: info,
            ctrl,
            state: Mutex::new(ExecState {
                next_replay: 0,
                last_launch: None,
                retired: None,
                last_sampled: None,
            }),
            order_event: order_event.unwrap_or(0),
        };
        lock(&self.execs).insert(exec, Arc::new(exec_info));
    }

    /// `exec` was updated from `graph` (cudaGraphExecUpdate): its nodes now carry the
    /// new graph's parameters, so it is bound again (a new executable number), with the
    /// new graph's GEMMs but the node handles of the graph it was instantiated from
    /// (the ones CUDA knows its nodes by). An update to a graph with other GEMMs, or one
    /// the library did not follow, leaves the replays not audited.
    pub fn updated(&self, drv: &Driver, exec: Handle, graph: Handle, depth: u32) {
        let old = lock(&self.execs).get(&exec).cloned();
        let new = lock(&self.graphs).get(&graph).cloned();
        self.destroyed(drv, exec);
        let (Some(old), Some(new)) = (old, new) else {
            return;
        };
        let mut merged = GraphInfo {
            number: new.number,
            gpu: new.gpu.clone(),
            calls: new.calls.clone(),
            broken: new.broken.clone().or_else(|| old.graph.broken.clone()),
        };
        if merged.calls.len() != old.graph.calls.len() {
            merged.broken = Some(format!(
                "updated from a graph of {} GEMMs to one of {}",
                old.graph.calls.len(),
                merged.calls.len()
            ));
        } else {
            for (c, o) in merged.calls.iter_mut().zip(&old.graph.calls) {
                (c.pre_node, c.post_node) = (o.pre_node, o.post_node);
                (c.pre_leaves, c.post_leaves) = (o.pre_leaves, o.post_leaves);
            }
        }
        self.bind_exec(drv, Arc::new(merged), exec, depth);
    }

    /// `exec` is being destroyed (or updated): its control block may be reused once the
    /// launches already queued are done, which an event after the last one tells.
    pub fn destroyed(&self, drv: &Driver, exec: Handle) {
        let Some(info) = lock(&self.execs).remove(&exec) else {
            return;
        };
        let (Some(gpu), Ok(_)) = (&info.graph.gpu, &info.ctrl) else {
            return;
        };
        let mut st = lock(&info.state);
        let Some(stream) = st.last_launch else {
            return;
        };
        // (Never on a stream that captures now: the record would join the capture; nor
        // on the per-thread stream, which is this thread's, not the launching one's.)
        let capturing = stream == PER_THREAD_STREAM || drv.is_capturing(stream);
        let retired = gpu.take_event(drv).ok().filter(|&e| {
            if capturing {
                gpu.put_event(e);
                return false;
            }
            let ok = drv.event_record(e, stream).is_ok();
            if !ok {
                gpu.put_event(e);
            }
            ok
        });
        match retired {
            Some(e) => st.retired = Some(e),
            None => {
                // Nothing can tell when its replays are done: the block is never reused.
                drop(st);
                std::mem::forget(info);
            }
        }
    }

    pub(crate) fn exec(&self, exec: Handle) -> Option<Arc<ExecInfo>> {
        lock(&self.execs).get(&exec).cloned()
    }
}

/// Adds a replay node of `function` for GEMM `node` and `phase` to the capture of
/// `stream`; its handle, or `None` when it could not be added.
fn add_node(
    drv: &Driver,
    stream: Handle,
    function: Handle,
    grid: (u32, u32),
    node: usize,
    phase: u32,
) -> Option<Handle> {
    drv.launch_replay_node(function, grid, stream, (0, node as u32, phase))
        .ok()
        .and_then(|_| drv.capture_info(stream)?.last_node)
}

/// Allocates the control block of an executable graph and binds its nodes to it.
fn bind(drv: &Driver, info: &GraphInfo, exec: Handle, depth: u32) -> Result<Block, String> {
    if let Some(why) = &info.broken {
        return Err(why.clone());
    }
    let Some(gpu) = &info.gpu else {
        return Err("no gather resources on its context".into());
    };
    let calls = info.calls.len();
    let bytes = HEADER_BYTES + depth as usize * calls * ENTRY_BYTES;
    let (host, dev, size) = gpu
        .take_block(drv, bytes)
        .map_err(|e| format!("allocating its {bytes}-byte control block: {e}"))?;
    // SAFETY: the block is at least `bytes` long and no device work uses it (new, or
    // returned by an executable graph whose replays have all completed).
    let block = unsafe { std::slice::from_raw_parts_mut(host as *mut u8, bytes) };
    block[0..4].copy_from_slice(&REPLAY_NONE.to_le_bytes());
    block[4..8].copy_from_slice(&(calls as u32).to_le_bytes());
    block[8..12].copy_from_slice(&depth.to_le_bytes());
    block[12..16].fill(0);
    for e in block[HEADER_BYTES..].chunks_exact_mut(ENTRY_BYTES) {
        e.fill(0);
        e[TAG_AT..TAG_AT + 4].copy_from_slice(&REPLAY_NONE.to_le_bytes());
    }
    for (j, c) in info.calls.iter().enumerate() {
        if c.rejected {
            continue;
        }
        for (node, function, grid, phase) in c.nodes(gpu) {
            let Some(node) = node else { continue };
            drv.set_replay_node(exec, node, function, grid, (dev, j as u32, phase))
                .map_err(|e| format!("binding the nodes of GEMM {j}: {e}"))?;
        }
    }
    Ok((host, dev, size))
}

impl Drop for ExecInfo {
    /// The executable graph was destroyed or updated and no replay with samples holds
    /// it: its control block goes back to the context, to be reused once the event
    /// recorded after its last launch fired (replays queued without samples still read
    /// it), and its ordering event too.
    fn drop(&mut self) {
        let Some(gpu) = &self.graph.gpu else { return };
        if let Ok(block) = self.ctrl {
            let retired = lock(&self.state).retired;
            gpu.put_block(block, retired);
        }
        if self.order_event != 0 {
            gpu.put_event(self.order_event);
        }
    }
}

/// Byte offset of an entry's tag.
const TAG_AT: usize = 24;

impl ExecInfo {
    /// Writes `bytes` at offset `at` of the entry of (`row`, `node`) in the control
    /// block; false when there is no control block or no such entry. Entries are
    /// written only for a row no queued replay reads (not busy) or, for its tag, by the
    /// replay that owns the row.
    fn put(&self, row: u32, node: usize, at: usize, bytes: &[u8]) -> bool {
        let Ok((host, _, _)) = self.ctrl else {
            return false;
        };
        if row >= self.depth || node >= self.graph.calls.len() || at + bytes.len() > ENTRY_BYTES {
            return false;
        }
        let offset =
            HEADER_BYTES + (row as usize * self.graph.calls.len() + node) * ENTRY_BYTES + at;
        // SAFETY: the checks above keep [offset, offset + len) inside the control block
        // (HEADER_BYTES + depth * calls * ENTRY_BYTES bytes, mapped pinned memory that
        // lives as long as self); the device only reads it.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), (host + offset) as *mut u8, bytes.len())
        };
        true
    }

    fn set_tag(&self, row: u32, node: usize, tag: u32) {
        self.put(row, node, TAG_AT, &tag.to_le_bytes());
    }
}

/// A sampled replayed call prepared before the launch.
struct Prepared {
    index: u64,
    node: usize,
    slot: Slot,
    layout: SlotLayout,
    /// Offset in the slot of the gather node's marker; the leaf node's follows it.
    marker: usize,
    /// Commit mode: the slot of the device retention ring the whole call is copied
    /// into (freed when dropped).
    device: Option<DeviceSlot>,
}

impl Prepared {
    /// Its gathers may still run on the device: the slots stay allocated for good.
    fn leak(self) {
        if let Some(d) = self.device {
            d.leak();
        }
    }

    /// The seq a replay node wrote at `at` in the slot.
    fn marker_at(&self, bytes: &[u8], at: usize) -> u32 {
        u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
    }
}

/// The replay's share of the work after the launch: one per replay with samples.
struct ReplayDone {
    event: Handle,
    exec: Arc<ExecInfo>,
    row: u32,
}

impl Drop for ReplayDone {
    fn drop(&mut self) {
        // Every gather of the replay is resolved: its row may be written again.
        for node in 0..self.exec.graph.calls.len() {
            self.exec.set_tag(self.row, node, REPLAY_NONE);
        }
        if let Some(gpu) = &self.exec.graph.gpu {
            gpu.put_event(self.event);
        }
        self.exec.busy[self.row as usize].store(false, Ordering::Release);
    }
}

/// A replayed call's gather in flight.
struct ReplayGather {
    prepared: Prepared,
    replay: u32,
    done: Arc<ReplayDone>,
}

impl Drop for ReplayGather {
    /// A gather dropped before it was resolved (never polled to the end) may still be
    /// queued on the device: its device slot stays allocated for good.
    fn drop(&mut self) {
        if let Some(d) = self.prepared.device.take() {
            d.leak();
        }
    }
}

impl Pending for ReplayGather {
    fn index(&self) -> u64 {
        self.prepared.index
    }

    fn poll(&mut self) -> Option<Resolved> {
        let drv = crate::driver::driver()?;
        let gpu = &self.prepared.slot.gpu;
        crate::gpu::bind_thread(drv, gpu.ctx);
        let state = drv.event_query(self.done.event);
        let resolved = match state {
            Ok(EventState::Pending) => return None,
            Err(e) => Resolved::Gap(GapReason::GatherFailed, e.to_string()),
            Ok(EventState::Done) => {
                // SAFETY: the event fired: the replay and its nodes are done with the
                // slot, which this gather owns until freed below.
                let bytes = unsafe { self.prepared.slot.host_bytes() };
                let device = self.prepared.device.take();
                let p = &self.prepared;
                let ran = |at: usize| p.marker_at(bytes, at) == self.replay;
                let hashed = p.layout.leaves.is_some() && ran(p.marker + 4);
                if !ran(p.marker) {
                    Resolved::Gap(
                        GapReason::GatherFailed,
                        format!(
                            "the graph's gather node did not run for replay {} (the executable graph was changed or launched outside this library)",
                            self.replay
                        ),
                    )
                } else {
                    // A call kept in device memory whose leaf node did not run comes
                    // without leaf hashes: the commit copies it back to host memory
                    // and hashes it there (CommitSession::commit_or_refetch).
                    match Gathered::from_slot(&p.layout, bytes, hashed, device) {
                        Ok(g) => Resolved::Sample(Box::new(g)),
                        Err(e) => Resolved::Gap(GapReason::Internal, e),
                    }
                }
            }
        };
        gpu.free(self.prepared.slot.offset);
        Some(resolved)
    }
}

/// What the launch hook decided for one replay, before forwarding the launch.
pub(crate) struct Replay {
    exec: Arc<ExecInfo>,
    replay: u64,
    row: u32,
    /// Ledger indices of the replay's calls: `first .. first + count`.
    first: u64,
    count: u64,
    prepared: Vec<Prepared>,
    /// Sampled calls without data: (index, reason, detail), sent if the launch succeeds.
    gaps: Vec<(u64, GapReason, String)>,
}

/// Before a launch of `exec` on `stream`: ledgers the replay's calls, decides their
/// sampling, prepares the sampled ones' gathers and queues the replay's number.
pub(crate) fn before_launch(
    rt: &Runtime,
    drv: &Driver,
    exec: Arc<ExecInfo>,
    stream: Handle,
) -> Result<Replay, String> {
    let replay = lock(&exec.state).next_replay;
    let row = (replay % exec.depth as u64) as u32;
    let tag = u32::try_from(replay).ok().filter(|&t| t != REPLAY_NONE);
    let audited = exec.ctrl.is_ok() && tag.is_some();
    let row_free = !exec.busy[row as usize].load(Ordering::Acquire);
    let mut calls: Vec<GemmCall> = Vec::with_capacity(exec.graph.calls.len());
    let mut nodes: Vec<usize> = Vec::with_capacity(exec.graph.calls.len());
    for (node, c) in exec.graph.calls.iter().enumerate() {
        if c.rejected {
            continue;
        }
        let mut call = c.call.clone();
        call.flags |= flags::REPLAYED;
        call.stream = stream as u64;
        if !audited {
            call.flags |= flags::CAPTURED;
        }
        call.replay = Some(ReplayOf {
            graph: exec.graph.number,
            exec: exec.number,
            replay,
            node: node as u32,
        });
        calls.push(call);
        nodes.push(node);
    }
    let (calls, session) = rt.ledger_many(calls)?;
    let mut out = Replay {
        exec: Arc::clone(&exec),
        replay,
        row,
        first: calls.first().map_or(0, |c| c.index),
        count: calls.len() as u64,
        prepared: Vec::new(),
        gaps: Vec::new(),
    };
    let session = session.as_ref().filter(|_| audited);
    let mut sampled = Vec::new();
    for (call, node) in calls.iter().zip(nodes) {
        let Some(gather) = &exec.graph.calls[node].gather else {
            continue; // outside the model: ledgered, never sampled
        };
        let Some(plan) = session.and_then(|s| s.decide(call)) else {
            continue;
        };
        sampled.push(call.index);
        rt.shared.inflight.fetch_add(1, Ordering::AcqRel);
        if matches!(plan, crate::model::gather::Pick::Whole)
            && !exec.graph.calls[node].hashes_leaves()
        {
            log::once(
                Level::Warn,
                "graph captured before commit mode",
                &format!(
                    "graph {} was captured before this commit-mode session (it has no leaf-hash nodes): its replays' calls are copied whole to host memory and hashed there",
                    exec.graph.number
                ),
            );
        }
        match prepare(drv, &exec, row, row_free, node, call, gather, &plan) {
            Ok(p) => out.prepared.push(p),
            Err((reason, detail)) => out.gaps.push((call.index, reason, detail)),
        }
    }
    if !sampled.is_empty() {
        rt.send(Msg::Sampled(sampled));
    }
    // After a launch with samples on another stream (or on a per-thread default
    // stream, which is another stream on another thread), this replay, sampled or not,
    // must not start before that launch's trailing "no replay" store: CUDA runs the
    // two graphs in order, but not the stores around them.
    let last = lock(&exec.state).last_sampled;
    if last.is_some_and(|l| l != stream || stream == PER_THREAD_STREAM) {
        if let Err(e) = drv.stream_wait_event(stream, exec.order_event) {
            log::once(
                Level::Warn,
                "graph-order",
                &format!("a graph replay could not be ordered after the previous one ({e}); its samples are dropped"),
            );
            return Ok(out.fail_gathers(&format!("ordering after the previous replay: {e}")));
        }
    }
    let Some(tag) = tag.filter(|_| !out.prepared.is_empty()) else {
        return Ok(out);
    };
    for p in &out.prepared {
        exec.set_tag(row, p.node, tag);
    }
    let Ok((_, dev, _)) = exec.ctrl else {
        return Ok(out);
    };
    if let Err(e) = drv.memset_u32_async(dev, tag, stream) {
        return Ok(out.fail_gathers(&e.to_string()));
    }
    Ok(out)
}

/// Takes a ring slot for a sampled replayed call and fills its entry (all but the tag).
/// In commit mode, a call whose graph has leaf-hash nodes is hashed on the GPU and
/// kept in the device retention ring, as a direct call is ([`commit_layout`]).
/// The device ring is the one made when the capture began (never here: the launching
/// thread may have another context current).
#[allow(clippy::too_many_arguments)]
fn prepare(
    drv: &Driver,
    exec: &ExecInfo,
    row: u32,
    row_free: bool,
    node: usize,
    call: &GemmCall,
    gather: &GatherSpec,
    pick: &crate::model::gather::Pick,
) -> Result<Prepared, (GapReason, String)> {
    if !row_free {
        return Err((
            GapReason::QueueFull,
            format!("{} replays of this executable graph with samples are still queued (MMAUDIT_GRAPH_DEPTH)", exec.depth),
        ));
    }
    let Some(gpu) = &exec.graph.gpu else {
        return Err((GapReason::GatherFailed, "no gather resources".into()));
    };
    let layout = crate::held::layout(call, gather, pick, || gpu.ring_capacity())
        .map_err(|e| (GapReason::Internal, e))?;
    let whole = matches!(pick, crate::model::gather::Pick::Whole);
    let (layout, device) = if whole && exec.graph.calls[node].hashes_leaves() {
        commit_layout(drv, gpu, layout, gather, None)
    } else {
        (layout, None)
    };
    let marker = (layout.len + 7) & !7;
    let Some(slot) = gpu.alloc(marker + 8) else {
        return Err((
            GapReason::RingFull,
            format!(
                "no room for {} bytes in the {} MiB pinned ring (MMAUDIT_RING_MB)",
                marker + 8,
                gpu.ring_capacity() >> 20
            ),
        ));
    };
    // SAFETY: the slot was just allocated: nothing else uses it until launched.
    let bytes = unsafe { slot.host_bytes() };
    let base = slot.device_address();
    let (leaves, leaves_pre, leaves_post) = match &layout.leaves {
        Some(l) => (base + l.at as u64, l.pre, l.post),
        None => (0, 0, 0),
    };
    let mut entry = [0u8; ENTRY_BYTES];
    entry[0..8].copy_from_slice(&base.to_le_bytes());
    entry[8..16].copy_from_slice(&(base + marker as u64).to_le_bytes());
    entry[16..20].copy_from_slice(&layout.pre_jobs.to_le_bytes());
    entry[20..24].copy_from_slice(&layout.post_jobs.to_le_bytes());
    entry[32..40].copy_from_slice(&leaves.to_le_bytes());
    entry[40..44].copy_from_slice(&leaves_pre.to_le_bytes());
    entry[44..48].copy_from_slice(&leaves_post.to_le_bytes());
    let written = layout.write(base, bytes);
    // All but the tag, which the launch sets once every entry of the replay is written.
    let put = exec.put(row, node, 0, &entry[..TAG_AT]) && exec.put(row, node, 32, &entry[32..]);
    if written.is_err() || !put {
        gpu.free(slot.offset);
        return Err((
            GapReason::Internal,
            "the gather could not be written".into(),
        ));
    }
    bytes[marker..marker + 8].copy_from_slice(&[0xff; 8]);
    Ok(Prepared {
        index: call.index,
        node,
        slot,
        layout,
        marker,
        device,
    })
}

impl Replay {
    /// The gathers cannot run: every prepared one becomes a gap (entries and slots
    /// freed).
    fn fail_gathers(mut self, why: &str) -> Replay {
        for p in std::mem::take(&mut self.prepared) {
            self.exec.set_tag(self.row, p.node, REPLAY_NONE);
            p.slot.gpu.free(p.slot.offset);
            self.gaps
                .push((p.index, GapReason::GatherFailed, why.to_string()));
        }
        self
    }
}

/// After the forwarded launch returned `ok`: settles the replay's ledger records and
/// hands its gathers to the background thread (or releases them).
pub(crate) fn after_launch(rt: &Runtime, drv: &Driver, r: Replay, stream: Handle, ok: bool) {
    rt.send(Msg::SettleRange {
        first: r.first,
        count: r.count,
        rejected: !ok,
    });
    let exec = Arc::clone(&r.exec);
    if !ok {
        // Nothing ran: the row is free again and nothing is owed.
        let r = r.fail_gathers("the launch failed");
        for _ in &r.gaps {
            rt.sample_dropped();
        }
        return;
    }
    {
        let mut st = lock(&exec.state);
        st.next_replay += 1;
        st.last_launch = Some(stream);
    }
    let mut r = r;
    let gaps = std::mem::take(&mut r.gaps);
    if !r.prepared.is_empty() {
        match finish_replay(drv, &exec, r.row, stream) {
            Ok(done) => {
                exec.busy[r.row as usize].store(true, Ordering::Release);
                let done = Arc::new(done);
                let tag = r.replay as u32;
                for p in std::mem::take(&mut r.prepared) {
                    rt.send(Msg::Sample(Box::new(ReplayGather {
                        prepared: p,
                        replay: tag,
                        done: Arc::clone(&done),
                    })));
                }
            }
            Err(e) => {
                // The gather nodes may still run for this replay: the slots stay
                // allocated (the ring shrinks) rather than be reused under them.
                log::emit(
                    Level::Warn,
                    &format!(
                        "a graph replay's samples are lost ({e}); their ring slots stay allocated"
                    ),
                );
                for p in std::mem::take(&mut r.prepared) {
                    rt.send(Msg::Gap {
                        index: p.index,
                        reason: GapReason::GatherFailed,
                        detail: e.clone(),
                    });
                    p.leak();
                }
            }
        }
    }
    for (index, reason, detail) in gaps {
        rt.send(Msg::Gap {
            index,
            reason,
            detail,
        });
    }
}

/// Queues "no replay" and the replay's event after a launch with samples.
fn finish_replay(
    drv: &Driver,
    exec: &Arc<ExecInfo>,
    row: u32,
    stream: Handle,
) -> Result<ReplayDone, String> {
    let (_, dev, _) = *exec.ctrl.as_ref().map_err(|e| e.clone())?;
    drv.memset_u32_async(dev, REPLAY_NONE, stream)
        .map_err(|e| e.to_string())?;
    let gpu = exec.graph.gpu.as_ref().ok_or("no gather resources")?;
    let event = gpu.take_event(drv)?;
    if let Err(e) = drv.event_record(event, stream) {
        gpu.put_event(event);
        return Err(e.to_string());
    }
    if drv.event_record(exec.order_event, stream).is_ok() {
        lock(&exec.state).last_sampled = Some(stream);
    }
    Ok(ReplayDone {
        event,
        exec: Arc::clone(exec),
        row,
    })
}
