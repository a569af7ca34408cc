//! `mmaudit-verify export`: a stored segment written to a capture file, or the list of
//! stored segments.

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context as _, Result};
use async_nats::jetstream;
use clap::Args;
use futures_util::StreamExt;

use super::store::{open_stored, Ended};
use super::{connect, runtime, valid_segment, SEGMENTS};

/// Options of `mmaudit-verify export`.
#[derive(Args, Debug)]
#[command(after_help = "\
Writes one stored segment (docs/FLEET.md), byte for byte as the program sent it, to a
capture file: `check FILE` then gives the verdict `check nats://HOST:PORT/SEGMENT`
gives. The file must not exist. With --list, prints the stored segments instead: id,
number of messages, and the verdict of the report on record (a segment is judged once).

Exit codes: 0 written (a segment without the relay's end marker is written as far as
it goes, and said so), 2 could not run (no such segment, no server, the file exists).

Examples:
  mmaudit-verify export --nats nats://127.0.0.1:4222 --list
  mmaudit-verify export --nats nats://127.0.0.1:4222 0123456789abcdef0123456789abcdef --out run.mma")]
pub struct ExportArgs {
    /// The NATS server, e.g. nats://127.0.0.1:4222.
    #[arg(long, value_name = "URL")]
    pub nats: String,
    /// The segment to write (32 hex digits, as the worker's report names it).
    #[arg(value_name = "SEGMENT", required_unless_present = "list")]
    pub segment: Option<String>,
    /// The capture file to create.
    #[arg(long, value_name = "FILE", required_unless_present = "list")]
    pub out: Option<PathBuf>,
    /// List the stored segments instead.
    #[arg(long, conflicts_with_all = ["segment", "out"])]
    pub list: bool,
}

/// Runs `export`.
pub fn run_export(args: &ExportArgs) -> Result<bool> {
    if args.list {
        return list(&args.nats);
    }
    let (Some(segment), Some(out)) = (&args.segment, &args.out) else {
        bail!("give a SEGMENT and --out FILE, or --list");
    };
    if !valid_segment(segment) {
        bail!("'{segment}' is not a segment id (32 hex digits)");
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)
        .with_context(|| format!("cannot create {}", out.display()))?;
    let (mut reader, reading) = open_stored(&args.nats, segment);
    let mut buf = vec![0u8; 1 << 20];
    let written = loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break Ok(());
        }
        if let Err(e) = file.write_all(&buf[..n]) {
            break Err(e);
        }
    };
    drop(reader);
    let read = reading
        .join()
        .map_err(|_| anyhow!("the reading thread failed"))?;
    let (ended, bytes) = match read {
        Ok(r) => r,
        Err(e) => {
            drop(file);
            let _ = std::fs::remove_file(out);
            return Err(e);
        }
    };
    written.with_context(|| format!("cannot write {}", out.display()))?;
    file.sync_all()
        .with_context(|| format!("cannot write {}", out.display()))?;
    eprintln!(
        "mmaudit-verify export: segment {segment}: {bytes} bytes written to {}{}",
        out.display(),
        if ended == Ended::Stored {
            " (no end marker: the relay's connection had not closed, or the relay stopped)"
        } else {
            ""
        }
    );
    Ok(true)
}

fn list(url: &str) -> Result<bool> {
    runtime()?.block_on(async {
        let client = connect(url, "mmaudit-verify export").await?;
        let js = jetstream::new(client);
        let stream = js
            .get_stream(SEGMENTS)
            .await
            .map_err(|e| anyhow!("cannot open the JetStream stream {SEGMENTS}: {e}"))?;
        let mut subjects = stream
            .info_with_subjects("mmaudit.seg.*")
            .await
            .map_err(|e| anyhow!("cannot list the segments: {e}"))?;
        let mut rows = Vec::new();
        while let Some(s) = subjects.next().await {
            let (subject, count) = s.map_err(|e| anyhow!("cannot list the segments: {e}"))?;
            if let Some(id) = subject.strip_prefix("mmaudit.seg.") {
                rows.push((id.to_string(), count));
            }
        }
        rows.sort();
        let mut text = String::new();
        for (id, count) in &rows {
            // The verdict of the report on record, if any (a report that is no JSON
            // with a verdict says so).
            let verdict = match super::report_on_record(&js, id).await? {
                None => "not judged yet".to_string(),
                Some(r) => serde_json::from_slice::<serde_json::Value>(&r)
                    .ok()
                    .and_then(|v| v["verdict"].as_str().map(str::to_uppercase))
                    .unwrap_or_else(|| "a report without a verdict".into()),
            };
            text.push_str(&format!("{id}  {count} messages  {verdict}\n"));
        }
        crate::out::stdout(&text);
        eprintln!(
            "mmaudit-verify export: {} segments on {}",
            rows.len(),
            super::redact(url)
        );
        Ok(true)
    })
}
