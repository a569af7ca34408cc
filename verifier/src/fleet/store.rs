//! Reading a stored segment back from the segment stream, in order: for the worker
//! while it is still being written, for `check nats://` and `export` as stored.

use std::io::Read;
use std::time::Duration;

use anyhow::{anyhow, Result};
use async_nats::jetstream::{self, consumer};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::{segment_subject, END_HEADER, SEGMENTS};

/// How far to read.
#[derive(Clone, Copy, Debug)]
pub enum Follow {
    /// Up to what the server holds now.
    Stored,
    /// Up to the end marker, waiting for more; give up when nothing arrived for this
    /// long (a relay that died leaves no end marker).
    Live(Duration),
}

/// Why reading stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The relay's end marker: its connection closed.
    Closed,
    /// Everything stored was read, and it has no end marker (yet).
    Stored,
    /// Nothing arrived for the idle time.
    Idle,
    /// The reader on the other side stopped taking chunks.
    ReaderGone,
}

impl Ended {
    /// In words, for logs and reports.
    pub fn describe(self) -> &'static str {
        match self {
            Ended::Closed => "the relay's connection closed",
            Ended::Stored => "read to the last chunk stored, which is not the relay's end marker",
            Ended::Idle => "nothing arrived for the idle timeout (no end marker: the relay or its program stopped)",
            Ended::ReaderGone => "the audit stopped reading",
        }
    }
}

/// Chunks of a segment fetched from the server ahead of the one being handed on, at most.
const FETCH_AHEAD: i64 = 32;
/// Chunks handed on to the audit's reader ahead of the one it reads, at most.
pub const HAND_AHEAD: usize = 16;

/// A chunk of a segment and when the server stored it (nanoseconds since the Unix
/// epoch).
pub type Chunk = (Bytes, i64);

/// Sends the chunks of `segment` in stream order to `tx`; how it ended and the bytes
/// sent. An error when the server cannot be read (or, with [`Follow::Stored`], holds no
/// chunk of the segment).
pub async fn read_segment(
    js: &jetstream::Context,
    segment: &str,
    follow: Follow,
    tx: mpsc::Sender<Chunk>,
) -> Result<(Ended, u64)> {
    let subject = segment_subject(segment);
    let stream = js
        .get_stream(SEGMENTS)
        .await
        .map_err(|e| anyhow!("cannot open the JetStream stream {SEGMENTS}: {e}"))?;
    let last = match follow {
        Follow::Stored => Some(
            stream
                .get_last_raw_message_by_subject(&subject)
                .await
                .map_err(|e| anyhow!("no segment {segment} on the server ({e})"))?
                .sequence,
        ),
        Follow::Live(_) => None,
    };
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: subject.clone(),
            deliver_policy: consumer::DeliverPolicy::All,
            // At most this many chunks fetched ahead of the audit (the client's default
            // is 500, about 250 MiB of 512 KiB chunks per segment).
            max_batch: FETCH_AHEAD,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow!("cannot read segment {segment}: {e}"))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| anyhow!("cannot read segment {segment}: {e}"))?;
    let mut bytes = 0u64;
    loop {
        let next = match follow {
            Follow::Stored => messages.next().await,
            Follow::Live(idle) => match tokio::time::timeout(idle, messages.next()).await {
                Ok(next) => next,
                Err(_) => return Ok((Ended::Idle, bytes)),
            },
        };
        let message = match next {
            Some(Ok(m)) => m,
            Some(Err(e)) => return Err(anyhow!("reading segment {segment}: {e}")),
            None => {
                return Err(anyhow!(
                    "reading segment {segment}: the server ended the read"
                ))
            }
        };
        let info = message.info().map_err(|e| anyhow!("{e}"))?;
        let sequence = info.stream_sequence;
        let stored = i64::try_from(info.published.unix_timestamp_nanos()).unwrap_or(i64::MAX);
        if message
            .headers
            .as_ref()
            .is_some_and(|h| h.get(END_HEADER).is_some())
        {
            return Ok((Ended::Closed, bytes));
        }
        bytes += message.payload.len() as u64;
        if tx.send((message.payload.clone(), stored)).await.is_err() {
            return Ok((Ended::ReaderGone, bytes));
        }
        if last.is_some_and(|l| sequence >= l) {
            return Ok((Ended::Stored, bytes));
        }
    }
}

/// The chunks sent by [`read_segment`] as one byte stream, read on a thread that is not
/// the runtime's. Each read returns bytes of one chunk only, and [`ChunkReader::stored`]
/// says when the server stored the chunk the last read came from.
pub struct ChunkReader {
    rx: mpsc::Receiver<Chunk>,
    chunk: Bytes,
    stored: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

impl ChunkReader {
    /// Reads what arrives on `rx` until its sender is dropped.
    pub fn new(rx: mpsc::Receiver<Chunk>) -> Self {
        ChunkReader {
            rx,
            chunk: Bytes::new(),
            stored: Default::default(),
        }
    }

    /// When the server stored the chunk of the last read (nanoseconds since the Unix
    /// epoch; 0 before the first read), for a thread that judges what was read.
    pub fn stored(&self) -> std::sync::Arc<std::sync::atomic::AtomicI64> {
        self.stored.clone()
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                Some((c, stored)) => {
                    self.chunk = c;
                    self.stored
                        .store(stored, std::sync::atomic::Ordering::Relaxed);
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        let _ = self.chunk.split_to(n);
        Ok(n)
    }
}

/// A stored segment as a byte stream, read from the server at `url` on a thread of its
/// own; join the thread after reading to its end for how it ended (or why it could not
/// be read: the reader then ends early).
pub fn open_stored(
    url: &str,
    segment: &str,
) -> (ChunkReader, std::thread::JoinHandle<Result<(Ended, u64)>>) {
    let (tx, rx) = mpsc::channel(HAND_AHEAD);
    let (url, segment) = (url.to_string(), segment.to_string());
    let reading = std::thread::spawn(move || {
        super::runtime()?.block_on(async {
            let client = super::connect(&url, "mmaudit-verify").await?;
            let js = jetstream::new(client);
            read_segment(&js, &segment, Follow::Stored, tx).await
        })
    });
    (ChunkReader::new(rx), reading)
}
