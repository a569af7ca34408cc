//! The verbatim copy of one connection's received bytes, so that any live verdict can be
//! re-checked offline with `check`.
//!
//! Bytes are kept in memory until the stream header is authenticated (at most one header
//! and one read), then the file is named after the stream and everything is written in
//! the order received. It must never alter, reorder or leave out a received byte of a
//! stream; a write error stops the copy (logged) but never the audit.
//!
//! Every read is written to the file as it is received (no user-space buffer), so a
//! verifier that is killed or crashes loses nothing that it had read: the capture holds
//! every byte up to the moment it died, and `check` on it re-verifies those frames. The
//! file is not fsynced: data survives the process, not a power loss of the machine.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use mmaudit_protocol::stream::StreamHeader;

/// `<stream id hex>-<segment>-<peer address>-<peer port>`: the name of a stream's
/// capture and JSON report (IPv6 colons become underscores).
pub fn base_name(header: &StreamHeader, peer: SocketAddr) -> String {
    format!(
        "{:016x}-{}-{}-{}",
        header.stream_id,
        header.segment,
        peer.ip().to_string().replace(':', "_"),
        peer.port()
    )
}

/// Creates `dir/base.ext`, or `dir/base-1.ext`, `-2`, ... if that exists; never
/// overwrites a file.
pub fn create_new(dir: &Path, base: &str, ext: &str) -> std::io::Result<(File, PathBuf)> {
    let mut n = 0u32;
    loop {
        let name = if n == 0 {
            format!("{base}.{ext}")
        } else {
            format!("{base}-{n}.{ext}")
        };
        let path = dir.join(name);
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(f) => return Ok((f, path)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 10_000 => n += 1,
            Err(e) => return Err(e),
        }
    }
}

/// Where a connection's bytes go.
pub enum Capture {
    /// No capture directory.
    Off,
    /// Header not authenticated yet: the bytes so far.
    Pending(Vec<u8>),
    /// Writing to this file.
    File {
        /// the file, written as bytes arrive
        out: File,
        /// its path
        path: PathBuf,
    },
    /// A write failed; nothing more is copied.
    Failed,
}

impl Capture {
    /// A capture that keeps bytes until [`Capture::open`], or none without a directory.
    pub fn new(enabled: bool) -> Self {
        if enabled {
            Capture::Pending(Vec::new())
        } else {
            Capture::Off
        }
    }

    /// Appends received bytes. Returns an error message once, when a write fails.
    pub fn write(&mut self, bytes: &[u8]) -> Option<String> {
        match self {
            Capture::Pending(v) => {
                v.extend_from_slice(bytes);
                None
            }
            Capture::File { out, path } => match out.write_all(bytes) {
                Ok(()) => None,
                Err(e) => {
                    let msg = format!("cannot write capture {}: {e}", path.display());
                    *self = Capture::Failed;
                    Some(msg)
                }
            },
            Capture::Off | Capture::Failed => None,
        }
    }

    /// Names the file (`dir/<base>.mma`) and writes the bytes kept so far.
    pub fn open(&mut self, dir: &Path, base: &str) -> Result<PathBuf, String> {
        let Capture::Pending(kept) = std::mem::replace(self, Capture::Failed) else {
            return Err("no capture pending".into());
        };
        let (file, path) = create_new(dir, base, "mma")
            .map_err(|e| format!("cannot create a capture in {}: {e}", dir.display()))?;
        let mut out = file;
        out.write_all(&kept)
            .map_err(|e| format!("cannot write capture {}: {e}", path.display()))?;
        *self = Capture::File {
            out,
            path: path.clone(),
        };
        Ok(path)
    }

    /// Flushes and closes the file. Returns an error message if the flush fails.
    pub fn close(&mut self) -> Option<String> {
        let result = match self {
            Capture::File { out, path } => out
                .flush()
                .err()
                .map(|e| format!("cannot write capture {}: {e}", path.display())),
            _ => None,
        };
        *self = Capture::Off;
        result
    }
}
