//! `mmaudit-verify relay`: the library's TCP sink protocol in, JetStream out.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use async_nats::jetstream::{self, message::PublishMessage};
use async_nats::HeaderMap;
use bytes::Bytes;
use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{
    connect_with, hex, random_bytes, reply_allowed, runtime, segment_subject, END_HEADER,
    HELLO_SUBJECT, INBOX_PREFIX, MAX_CHUNK, SEGMENTS, WORK, WORK_SUBJECT,
};

/// How long a chunk is retried while the server does not acknowledge it; after that the
/// connection is closed (the library reconnects and sends the next segment).
const RETRY_FOR: Duration = Duration::from_secs(30);

/// Options of `mmaudit-verify relay`.
#[derive(Args, Debug)]
#[command(after_help = "\
Runs beside the audited programs (docs/FLEET.md): each program's libmmaudit.so
connects to it as to `serve` (MMAUDIT_SINK=tcp://ADDR). For each connection the relay
asks the fleet's workers for a hello (request-reply on mmaudit.hello; any worker
answers, and records the nonce it issued), passes it to the program, and publishes
every byte the program sends, in order, into the JetStream stream MMAUDIT_SEGMENTS
(subject mmaudit.seg.<segment>, a message id per chunk, so that a chunk sent twice is
stored once), then an end marker when the connection closes. The first chunk also
puts the segment on the work queue MMAUDIT_WORK, where one worker takes it.

The relay holds no key: it cannot read or change what it carries without the workers
noticing (each stream is authenticated end to end). When the server does not
acknowledge a chunk for 30 s, the relay closes that connection; the library then
reconnects and sends the next segment of its stream.

The relay never creates the fleet's streams: it waits until a worker has. The address
may carry a login (nats://USER:PASSWORD@HOST:PORT); give each host's relay an account
that may only publish chunks, work items and hello requests, with replies under its
own --inbox-prefix (docs/FLEET.md, \"Permissions\").

Exit on SIGINT or SIGTERM (open connections are closed, their segments end without an
end marker and are reported truncated). Exit code 2: could not run.

Example:
  mmaudit-verify relay --nats nats://10.0.0.5:4222 --listen 127.0.0.1:7150
  LD_PRELOAD=libmmaudit.so MMAUDIT_KEY_FILE=audit.key MMAUDIT_SINK=tcp://127.0.0.1:7150 python serve.py")]
pub struct RelayArgs {
    /// The NATS server, e.g. nats://127.0.0.1:4222.
    #[arg(long, value_name = "URL")]
    pub nats: String,
    /// Address the audited programs connect to, e.g. 127.0.0.1:7150 (port 0: any free
    /// port, printed).
    #[arg(long, value_name = "ADDR")]
    pub listen: String,
    /// Seconds to wait for a worker's hello before closing a connection.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub hello_timeout: f64,
    /// Subjects the server's replies (hellos, acknowledgements) come to: `_INBOX`, or
    /// `_INBOX_<name>` for a relay whose permissions allow it to read only its own
    /// replies (docs/FLEET.md, "Permissions").
    #[arg(long, value_name = "PREFIX", default_value = INBOX_PREFIX)]
    pub inbox_prefix: String,
}

/// Runs `relay` until SIGINT or SIGTERM.
pub fn run_relay(args: &RelayArgs) -> Result<bool> {
    if !(args.hello_timeout.is_finite() && args.hello_timeout > 0.0) {
        bail!("--hello-timeout must be a positive number of seconds");
    }
    let hello_timeout = Duration::from_secs_f64(args.hello_timeout);
    let inbox = &args.inbox_prefix;
    if !(inbox == INBOX_PREFIX || reply_allowed(&format!("{inbox}.x"))) || inbox.contains('.') {
        bail!("--inbox-prefix must be {INBOX_PREFIX} or {INBOX_PREFIX}_<name> (letters, digits, - and _): workers answer hellos only there");
    }
    runtime()?.block_on(async {
        let client = connect_with(&args.nats, "mmaudit-verify relay", Some(inbox)).await?;
        let js = jetstream::new(client.clone());
        wait_for_streams(&js).await?;
        let listener = TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        eprintln!(
            "mmaudit-verify relay: listening on {}, publishing to {}",
            listener.local_addr()?,
            super::redact(&args.nats)
        );
        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot watch SIGTERM")?;
        loop {
            let (socket, peer) = tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = sigterm.recv() => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        eprintln!("mmaudit-verify relay: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let (client, js) = (client.clone(), js.clone());
            tokio::spawn(async move {
                if let Err(e) = relay(client, js, socket, peer, hello_timeout).await {
                    eprintln!("mmaudit-verify relay: {peer}: {e:#}");
                }
            });
        }
        eprintln!("mmaudit-verify relay: stopping");
        let _ = tokio::time::timeout(Duration::from_secs(5), client.flush()).await;
        Ok(true)
    })
}

/// Waits until the streams a relay publishes into exist. A relay never creates them
/// (workers do, or the operator): its permissions need not include the JetStream API
/// beyond reading their state.
async fn wait_for_streams(js: &jetstream::Context) -> Result<()> {
    let mut said = false;
    loop {
        let mut missing = Vec::new();
        for name in [SEGMENTS, WORK] {
            if let Err(e) = js.get_stream(name).await {
                missing.push(format!("{name} ({e})"));
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        if !said {
            eprintln!(
                "mmaudit-verify relay: waiting for the fleet's streams, which a worker creates: {}",
                missing.join(", ")
            );
            said = true;
        }
        tokio::select! {
            _ = tokio::signal::ctrl_c() => bail!("stopped before the fleet's streams existed"),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// One connection: the hello in, the stream out.
async fn relay(
    client: async_nats::Client,
    js: jetstream::Context,
    mut socket: TcpStream,
    peer: SocketAddr,
    hello_timeout: Duration,
) -> Result<()> {
    let hello = tokio::time::timeout(
        hello_timeout,
        client.request(HELLO_SUBJECT, peer.to_string().into()),
    )
    .await
    .map_err(|_| anyhow!("no worker answered the hello request within {hello_timeout:?}; closing"))?
    .map_err(|e| anyhow!("no hello ({e}); closing"))?;
    socket
        .write_all(&hello.payload)
        .await
        .context("cannot send the hello")?;
    let segment = hex(&random_bytes::<16>()?);
    let subject = segment_subject(&segment);
    // Below the server's max_payload, leaving room for the headers.
    let chunk = MAX_CHUNK.min(
        client
            .server_info()
            .max_payload
            .saturating_sub(1024)
            .max(4096),
    );
    let mut buf = vec![0u8; chunk];
    let (mut chunks, mut bytes) = (0u64, 0u64);
    loop {
        let n = match socket.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                eprintln!("mmaudit-verify relay: {peer}: read error: {e}");
                break;
            }
        };
        if chunks == 0 {
            publish(&js, WORK_SUBJECT, segment.clone().into(), &segment, false).await?;
            eprintln!("mmaudit-verify relay: {peer}: segment {segment}");
        }
        let id = format!("{segment}.{chunks}");
        publish(&js, &subject, Bytes::copy_from_slice(&buf[..n]), &id, false)
            .await
            .with_context(|| format!("segment {segment}: closing the connection"))?;
        chunks += 1;
        bytes += n as u64;
    }
    if chunks > 0 {
        let id = format!("{segment}.end");
        publish(&js, &subject, Bytes::new(), &id, true).await?;
        eprintln!(
            "mmaudit-verify relay: {peer}: segment {segment} closed ({:.1} MB in {chunks} chunks)",
            bytes as f64 / 1e6
        );
    }
    Ok(())
}

/// Publishes one message with message id `id` and waits until the server stored it,
/// retrying (the id makes a retry of a stored message a no-op) for [`RETRY_FOR`].
async fn publish(
    js: &jetstream::Context,
    subject: &str,
    payload: Bytes,
    id: &str,
    end: bool,
) -> Result<()> {
    let deadline = Instant::now() + RETRY_FOR;
    let mut wait = Duration::from_millis(50);
    loop {
        let mut headers = HeaderMap::new();
        if end {
            headers.insert(END_HEADER, "closed");
        }
        let message = PublishMessage::build()
            .payload(payload.clone())
            .headers(headers)
            .message_id(id);
        let stored = match js.send_publish(subject.to_string(), message).await {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match stored {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                bail!("the server did not store {subject} ({id}) for {RETRY_FOR:?}: {e}")
            }
            Err(_) => {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
        }
    }
}
