//! Stream continuity across connections and verifier restarts.
//!
//! A prover that loses its connection starts a new segment of the same stream (same
//! stream id) whose ledger starts at the first call it did not write to the old one
//! (`first_index`). Each segment is audited on its own, so a segment's report says
//! nothing of the calls before it; this module remembers, per stream, which calls a
//! verifier received (segment, first call, ledger records received), so that a
//! segment whose earlier calls no verifier received is reported with that hole
//! instead of a clean PASS.
//!
//! Without a state directory the memory is this process's; with one
//! (`serve --state-dir`), each stream's segments are kept in `<stream id>.seen` there
//! (rewritten through a temporary file and a rename at each segment's start and end
//! and at most every [`WRITE_EVERY`] in between, not fsynced: a killed verifier loses
//! nothing the kernel accepted, a machine that loses power may lose the last writes),
//! and a restarted verifier reads it when a later segment of the stream arrives.
//! Calls received but not yet written to the state when a verifier dies are then
//! reported as seen by no verifier although their bytes are in the capture: the error
//! is on the side of reporting a hole, never of hiding one.
//!
//! Bounds (only a holder of the key can open a stream): [`MAX_STREAMS`] streams in
//! memory (the least recently used is forgotten: a later segment of it then reports
//! a hole it may not have), [`MAX_SEGMENTS`] segments per stream (later segments are
//! not remembered), state files of at most [`MAX_FILE`] bytes.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Streams remembered in memory.
pub const MAX_STREAMS: usize = 4096;
/// Segments remembered per stream.
pub const MAX_SEGMENTS: usize = 256;
/// Largest state file read.
pub const MAX_FILE: u64 = 64 << 10;
/// Least time between two state-file writes of one segment while it runs.
pub const WRITE_EVERY: Duration = Duration::from_millis(50);

/// Calls `first..end` (end exclusive) of a stream.
pub type Range = (u64, u64);

/// What one stream's segments covered: segment -> (first call, ledger records
/// received).
type Segments = BTreeMap<u32, (u64, u64)>;

/// The per-stream memory of received calls. See the module documentation.
pub struct Continuity {
    dir: Option<PathBuf>,
    streams: HashMap<u64, (Segments, u64)>,
    clock: u64,
}

impl Continuity {
    /// Remembers in memory, and in `dir` when given (which must exist).
    pub fn new(dir: Option<PathBuf>) -> Self {
        Continuity {
            dir,
            streams: HashMap::new(),
            clock: 0,
        }
    }

    /// A segment begins: returns the ranges of calls before `first` that no segment
    /// before it is known to have received. A message for the log says why a state
    /// file could not be used, if it could not. The segment is noted in memory; the
    /// state file is written by [`Continuity::progress`].
    pub fn begin(&mut self, stream: u64, segment: u32, first: u64) -> (Vec<Range>, Option<String>) {
        let (segments, msg) = self.segments(stream);
        let holes = holes_before(segments, segment, first);
        self.note(stream, segment, first, 0);
        (holes, msg)
    }

    /// A segment received ledger records up to `received` (from its first call):
    /// noted in memory at once, written to the state file at most every
    /// [`WRITE_EVERY`] (`last` is when this segment's state was last written; `force`
    /// writes now). A message for the log says why the state could not be read or
    /// written, if it could not.
    pub fn progress(
        &mut self,
        (stream, segment, first): (u64, u32, u64),
        received: u64,
        last: &mut Option<Instant>,
        force: bool,
    ) -> Option<String> {
        let (kept, msg) = self.note(stream, segment, first, received);
        if !kept || (!force && last.is_some_and(|t| t.elapsed() < WRITE_EVERY)) {
            return msg;
        }
        *last = Some(Instant::now());
        let dir = self.dir.as_ref()?;
        let segments = &self.streams.get(&stream)?.0;
        msg.or(store(&path(dir, stream), segments).err())
    }

    /// The segments known of `stream` (read from its state file when it is not in
    /// memory), marked as just used; and why the file could not be read, if it could
    /// not.
    fn segments(&mut self, stream: u64) -> (&mut Segments, Option<String>) {
        let mut msg = None;
        if !self.streams.contains_key(&stream) {
            let loaded = match &self.dir {
                Some(dir) => load(&path(dir, stream)).unwrap_or_else(|e| {
                    msg = Some(e);
                    Segments::new()
                }),
                None => Segments::new(),
            };
            if self.streams.len() >= MAX_STREAMS {
                if let Some(oldest) = self
                    .streams
                    .iter()
                    .min_by_key(|(_, (_, used))| *used)
                    .map(|(id, _)| *id)
                {
                    self.streams.remove(&oldest);
                }
            }
            self.streams.insert(stream, (loaded, 0));
        }
        self.clock += 1;
        let entry = self.streams.entry(stream).or_default();
        entry.1 = self.clock;
        (&mut entry.0, msg)
    }

    /// Notes in memory what a segment received. False when the stream already holds
    /// [`MAX_SEGMENTS`] other segments (this one is not remembered).
    fn note(
        &mut self,
        stream: u64,
        segment: u32,
        first: u64,
        received: u64,
    ) -> (bool, Option<String>) {
        let (segments, msg) = self.segments(stream);
        if !segments.contains_key(&segment) && segments.len() >= MAX_SEGMENTS {
            return (false, msg);
        }
        let s = segments.entry(segment).or_insert((first, 0));
        *s = (first, s.1.max(received));
        (true, msg)
    }
}

/// The state file of a stream.
fn path(dir: &Path, stream: u64) -> PathBuf {
    dir.join(format!("{stream:016x}.seen"))
}

/// The calls `0..first` not covered by a segment numbered below `segment`.
pub fn holes_before(segments: &Segments, segment: u32, first: u64) -> Vec<Range> {
    let mut covered: Vec<Range> = segments
        .range(..segment)
        .map(|(_, &(f, n))| (f, f.saturating_add(n).min(first)))
        .filter(|&(f, e)| f < e)
        .collect();
    covered.sort_unstable();
    let mut holes = Vec::new();
    let mut next = 0u64;
    for (f, e) in covered {
        if f > next {
            holes.push((next, f));
        }
        next = next.max(e);
    }
    if next < first {
        holes.push((next, first));
    }
    holes
}

/// Reads a state file: one `segment first received` line per segment. A missing file
/// is an empty state.
fn load(path: &Path) -> Result<Segments, String> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Segments::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let mut text = String::new();
    file.take(MAX_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if text.len() as u64 > MAX_FILE {
        return Err(format!(
            "{} is larger than {MAX_FILE} bytes: not read",
            path.display()
        ));
    }
    let mut segments = Segments::new();
    for (i, line) in text.lines().enumerate().take(MAX_SEGMENTS) {
        let v: Vec<u64> = line
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map_err(|_| format!("{}: line {} is not three numbers", path.display(), i + 1))?;
        match v[..] {
            [segment, first, received] if segment <= u32::MAX as u64 => {
                let s = segments.entry(segment as u32).or_insert((first, 0));
                *s = (first, s.1.max(received));
            }
            _ => {
                return Err(format!(
                    "{}: line {} is not `segment first received`",
                    path.display(),
                    i + 1
                ))
            }
        }
    }
    Ok(segments)
}

/// Writes a state file through a temporary file and a rename.
fn store(path: &Path, segments: &Segments) -> Result<(), String> {
    let text: String = segments
        .iter()
        .map(|(s, (f, n))| format!("{s} {f} {n}\n"))
        .collect();
    let tmp = path.with_extension("seen.tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(list: &[(u32, u64, u64)]) -> Segments {
        list.iter().map(|&(s, f, n)| (s, (f, n))).collect()
    }

    #[test]
    fn holes_are_the_calls_no_earlier_segment_received() {
        // nothing known: everything before the segment is a hole
        assert_eq!(holes_before(&segs(&[]), 1, 100), vec![(0, 100)]);
        assert!(holes_before(&segs(&[]), 0, 0).is_empty());
        // segment 0 received all 100 calls before segment 1 began: no hole
        assert!(holes_before(&segs(&[(0, 0, 100)]), 1, 100).is_empty());
        // it received 60: calls 60..100 were seen by no verifier
        assert_eq!(holes_before(&segs(&[(0, 0, 60)]), 1, 100), vec![(60, 100)]);
        // segments 0 and 2 known, segment 1 not: its calls are a hole for segment 3
        assert_eq!(
            holes_before(&segs(&[(0, 0, 50), (2, 80, 20)]), 3, 100),
            vec![(50, 80)]
        );
        // later segments do not cover earlier calls; overlaps merge
        assert_eq!(
            holes_before(&segs(&[(0, 0, 10), (1, 5, 30), (4, 0, 100)]), 2, 50),
            vec![(35, 50)]
        );
    }

    #[test]
    fn state_survives_a_restart_through_the_state_directory() {
        let dir = std::env::temp_dir().join(format!("mmaudit-continuity-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut a = Continuity::new(Some(dir.clone()));
        let (holes, msg) = a.begin(7, 0, 0);
        assert!(holes.is_empty() && msg.is_none());
        let mut last = None;
        assert!(a.progress((7, 0, 0), 40, &mut last, true).is_none());
        // throttled: in memory at once, on disk at the next write
        assert!(a.progress((7, 0, 0), 45, &mut last, false).is_none());
        drop(a);
        // a new process knows segment 0 received 40 calls
        let mut b = Continuity::new(Some(dir.clone()));
        assert_eq!(b.begin(7, 1, 50).0, vec![(40, 50)]);
        // another stream, and a process without the directory, know nothing
        assert_eq!(b.begin(8, 1, 5).0, vec![(0, 5)]);
        assert_eq!(Continuity::new(None).begin(7, 1, 50).0, vec![(0, 50)]);
        // a damaged state file is reported, and treated as no state
        std::fs::write(dir.join(format!("{:016x}.seen", 9u64)), "0 zero 1\n").unwrap();
        let (holes, msg) = Continuity::new(Some(dir.clone())).begin(9, 1, 3);
        assert_eq!(holes, vec![(0, 3)]);
        assert!(msg.unwrap().contains("line 1"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn memory_is_bounded() {
        let mut c = Continuity::new(None);
        for id in 0..(MAX_STREAMS as u64 + 10) {
            c.begin(id, 0, 0);
        }
        assert_eq!(c.streams.len(), MAX_STREAMS);
        for s in 0..(MAX_SEGMENTS as u32 + 10) {
            c.begin(1 << 40, s, s as u64);
        }
        assert_eq!(c.streams[&(1 << 40)].0.len(), MAX_SEGMENTS);
    }
}
