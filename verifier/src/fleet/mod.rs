//! The fleet: audit streams carried by NATS JetStream (docs/FLEET.md).
//!
//! - `relay` runs beside the audited programs: it accepts the library's TCP sink
//!   protocol on a local port, obtains each connection's hello from the workers by
//!   request-reply, and publishes the bytes of the stream that comes back, in order and
//!   de-duplicated (a message id per chunk), into the segment stream, the durable capture
//!   store. Each connection is one segment, named by a random id.
//! - `worker` (any number, on any machines) answers hellos (recording each nonce it
//!   issues in the stream MMAUDIT_NONCES) and verifies segments: a work-queue stream holds one
//!   item per segment, taken by exactly one worker at a time through a durable pull
//!   consumer; a worker that dies stops acknowledging, and the item is delivered again,
//!   to another worker, which verifies the segment from its first byte.
//! - `check nats://HOST:PORT/SEGMENT` and `export` read a stored segment back.
//!
//! Relay and broker are outside the trust boundary for integrity: the stream's MAC chain
//! is checked by the worker exactly as `check` checks a file.

pub mod export;
pub mod relay;
pub mod store;
pub mod worker;

use std::io::Read;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use async_nats::jetstream::{self, message::PublishMessage, stream};
use bytes::Bytes;

/// The stream of segments: every chunk a relay received, subject [`segment_subject`].
pub const SEGMENTS: &str = "MMAUDIT_SEGMENTS";
/// The work queue: one message per segment, its id.
pub const WORK: &str = "MMAUDIT_WORK";
/// The subject of work items.
pub const WORK_SUBJECT: &str = "mmaudit.work";
/// Reports, one per verified segment, subject `mmaudit.report.<segment>`.
pub const REPORTS: &str = "MMAUDIT_REPORTS";
/// Nonces issued by workers, subject `mmaudit.nonce.<nonce in hex>`: "issued", then
/// "used <segment>" (written only over "issued", by compare-and-set). A plain stream
/// with one message per subject rather than a key-value bucket: the client's bucket
/// creation does not work against nats-server 2.9.10 (its reply does not parse).
pub const NONCES: &str = "MMAUDIT_NONCES";
/// Calls each segment delivered, subject `mmaudit.seen.<stream id>.<segment number>`:
/// "first received", as `serve --state-dir` keeps them (serve::continuity).
pub const SEEN: &str = "MMAUDIT_SEEN";
/// Most segments of one stream read from [`SEEN`].
const MAX_SEEN_SEGMENTS: usize = 256;
/// Relays ask for a hello here; workers answer in one queue group.
pub const HELLO_SUBJECT: &str = "mmaudit.hello";
/// The queue group of workers answering hellos.
pub const WORKER_QUEUE: &str = "mmaudit-workers";
/// The durable consumer of the work queue that every worker pulls from.
pub const WORK_CONSUMER: &str = "mmaudit-workers";
/// Header of the message a relay publishes when a segment's connection closed.
pub const END_HEADER: &str = "Mmaudit-End";
/// Largest chunk a relay publishes (smaller when the server's max_payload, 1 MiB by
/// default, is below it plus 1 KiB).
pub const MAX_CHUNK: usize = 512 << 10;
/// How long JetStream remembers message ids to drop duplicates.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(600);

/// The subject of one segment's chunks.
pub fn segment_subject(segment: &str) -> String {
    format!("mmaudit.seg.{segment}")
}

/// The subject a segment's report is published on.
pub fn report_subject(segment: &str) -> String {
    format!("mmaudit.report.{segment}")
}

/// A segment id: 32 lowercase hex digits (a relay draws 16 random bytes).
pub fn valid_segment(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `n` random bytes from the kernel.
pub fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .context("cannot read /dev/urandom")?;
    Ok(b)
}

/// Lowercase hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A runtime for the NATS client (the audit itself runs on threads of its own).
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the NATS client's runtime")
}

/// How a client logs in to the NATS server, from the address's user information.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Login {
    /// `nats://USER:PASSWORD@HOST:PORT`
    User(String, String),
    /// `nats://TOKEN@HOST:PORT`
    Token(String),
}

/// `url` (`nats://[USER:PASSWORD@ | TOKEN@]HOST:PORT`) split into the address without
/// its credentials and the login they give.
fn split_login(url: &str) -> Result<(String, Option<Login>)> {
    let Some(rest) = url.strip_prefix("nats://") else {
        bail!("{}: not a nats:// address", redact(url));
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return Ok((url.to_string(), None));
    };
    let login = match userinfo.split_once(':') {
        Some((user, password)) if !user.is_empty() => Login::User(user.into(), password.into()),
        None if !userinfo.is_empty() => Login::Token(userinfo.into()),
        _ => bail!("{}: the user name is empty", redact(url)),
    };
    Ok((format!("nats://{host}{path}"), Some(login)))
}

/// `url` with its credentials (if any) replaced by `***`, for logs and report names.
pub fn redact(url: &str) -> String {
    match url.strip_prefix("nats://") {
        Some(rest) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            match authority.rsplit_once('@') {
                Some((_, host)) => format!("nats://***@{host}{path}"),
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    }
}

/// Connects to the NATS server at `url` (`nats://[USER:PASSWORD@ | TOKEN@]HOST:PORT`),
/// naming this client; with `inbox`, replies come to subjects under that prefix (a
/// relay's own, which its permissions allow it to read).
pub async fn connect_with(
    url: &str,
    name: &str,
    inbox: Option<&str>,
) -> Result<async_nats::Client> {
    let (address, login) = split_login(url)?;
    let mut options = async_nats::ConnectOptions::new()
        .name(name)
        .request_timeout(Some(Duration::from_secs(10)))
        .connection_timeout(Duration::from_secs(5));
    match login {
        Some(Login::User(user, password)) => options = options.user_and_password(user, password),
        Some(Login::Token(token)) => options = options.token(token),
        None => {}
    }
    if let Some(prefix) = inbox {
        options = options.custom_inbox_prefix(prefix);
    }
    options
        .connect(address)
        .await
        .with_context(|| format!("cannot connect to the NATS server at {}", redact(url)))
}

/// [`connect_with`] with the default inbox prefix.
pub async fn connect(url: &str, name: &str) -> Result<async_nats::Client> {
    connect_with(url, name, None).await
}

/// Replies of the fleet's requests go to subjects under this prefix (`_INBOX`, or a
/// relay's own `_INBOX_<name>`): a worker answers a hello only there, never on a
/// subject of the fleet's records.
pub const INBOX_PREFIX: &str = "_INBOX";

/// True for a subject a worker may publish a hello on: one under [`INBOX_PREFIX`]
/// (`_INBOX.` or `_INBOX_<name>.`).
pub fn reply_allowed(subject: &str) -> bool {
    subject
        .strip_prefix(INBOX_PREFIX)
        .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('_'))
        && !subject.contains(['*', '>', ' '])
}

/// Creates the streams the fleet uses, or checks that they exist (every worker does
/// this at start; the first one creates them; relays only wait for them). File storage: what
/// the server acknowledged survives its restart.
pub async fn ensure_streams(js: &jetstream::Context) -> Result<()> {
    use stream::RetentionPolicy::{Limits, WorkQueue};
    let streams = [
        (SEGMENTS, "mmaudit.seg.*", Limits, -1),
        (WORK, WORK_SUBJECT, WorkQueue, -1),
        (REPORTS, "mmaudit.report.*", Limits, -1),
        (NONCES, "mmaudit.nonce.*", Limits, 1),
        (SEEN, "mmaudit.seen.*.*", Limits, 1),
    ];
    for (name, subject, retention, per_subject) in streams {
        js.get_or_create_stream(stream::Config {
            name: name.to_string(),
            subjects: vec![subject.to_string()],
            retention,
            max_messages_per_subject: per_subject,
            storage: stream::StorageType::File,
            duplicate_window: DUPLICATE_WINDOW,
            // Records are never deleted or purged through the API (the work queue's
            // items go when they are acknowledged).
            deny_delete: retention == Limits,
            deny_purge: retention == Limits,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow!("cannot create or open the JetStream stream {name}: {e}"))?;
    }
    Ok(())
}

/// The last message on `subject` of the record stream `stream` (`what` names the record
/// in errors), if any: its payload, sequence, and when the server stored it
/// (nanoseconds since the Unix epoch).
async fn last_record(
    js: &jetstream::Context,
    stream: &str,
    subject: &str,
    what: &str,
) -> Result<Option<(Bytes, u64, i128)>> {
    use async_nats::jetstream::stream::LastRawMessageErrorKind;
    let st = js
        .get_stream(stream)
        .await
        .map_err(|e| anyhow!("cannot open the JetStream stream {stream}: {e}"))?;
    match st.get_last_raw_message_by_subject(subject).await {
        Ok(m) => Ok(Some((m.payload, m.sequence, m.time.unix_timestamp_nanos()))),
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(anyhow!("cannot read the record of {what} ({stream}): {e}")),
    }
}

/// The report on record for `segment` (the first one published: a segment is judged
/// once), if any.
pub async fn report_on_record(js: &jetstream::Context, segment: &str) -> Result<Option<Bytes>> {
    let last = last_record(js, REPORTS, &report_subject(segment), "reports").await?;
    Ok(last.map(|(payload, ..)| payload))
}

fn nonce_subject(nonce: &[u8; 16]) -> String {
    format!("mmaudit.nonce.{}", hex(nonce))
}

/// Stores `payload` on the record subject `subject` only if the subject's last message
/// is still the one at `sequence` (0: it has none), and waits until the server stored
/// it: the compare-and-set of the fleet's records. An error when the server refused it
/// (another writer came first) or could not store it.
pub async fn put_record(
    js: &jetstream::Context,
    subject: String,
    payload: Bytes,
    sequence: u64,
) -> Result<()> {
    let message = PublishMessage::build()
        .payload(payload)
        .expected_last_subject_sequence(sequence);
    js.send_publish(subject, message)
        .await
        .map_err(|e| anyhow!("{e}"))?
        .await
        .map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// Records `nonce` as issued; an error if it was recorded before or cannot be stored.
pub async fn record_nonce(js: &jetstream::Context, nonce: &[u8; 16]) -> Result<()> {
    put_record(js, nonce_subject(nonce), Bytes::from_static(b"issued"), 0).await
}

/// A record of a nonce: what it says, its sequence, and when the server stored it
/// (nanoseconds since the Unix epoch).
pub type NonceRecord = (Bytes, u64, i128);

/// What the record of `nonce` says; None when there is none.
pub async fn nonce_record(
    js: &jetstream::Context,
    nonce: &[u8; 16],
) -> Result<Option<NonceRecord>> {
    last_record(js, NONCES, &nonce_subject(nonce), "nonces").await
}

/// Replaces the record of `nonce` with `value` if it is still the one at `sequence`.
pub async fn update_nonce(
    js: &jetstream::Context,
    nonce: &[u8; 16],
    value: String,
    sequence: u64,
) -> Result<()> {
    put_record(js, nonce_subject(nonce), value.into(), sequence).await
}

fn seen_subject(stream: u64, segment: u32) -> String {
    format!("mmaudit.seen.{stream:016x}.{segment}")
}

/// Records that segment `segment` of stream `stream`, starting at call `first`,
/// delivered `received` ledger records; with `ended`, all it will deliver (its
/// verification read it to its end).
pub async fn record_seen(
    js: &jetstream::Context,
    (stream, segment, first): (u64, u32, u64),
    received: u64,
    ended: bool,
) -> Result<()> {
    let end = if ended { " end" } else { "" };
    js.publish(
        seen_subject(stream, segment),
        format!("{first} {received}{end}").into(),
    )
    .await
    .map_err(|e| anyhow!("{e}"))?
    .await
    .map_err(|e| anyhow!("cannot record the calls received ({SEEN}): {e}"))?;
    Ok(())
}

/// What the segments of `stream` delivered: segment -> (first call, ledger records,
/// read to its end), for at most the 256 lowest-numbered segments.
pub async fn seen_segments(
    js: &jetstream::Context,
    stream: u64,
) -> Result<std::collections::BTreeMap<u32, (u64, u64, bool)>> {
    use futures_util::StreamExt;
    let st = js
        .get_stream(SEEN)
        .await
        .map_err(|e| anyhow!("cannot open the JetStream stream {SEEN}: {e}"))?;
    let prefix = format!("mmaudit.seen.{stream:016x}.");
    let mut listed = st
        .info_with_subjects(format!("{prefix}*"))
        .await
        .map_err(|e| anyhow!("cannot read the record of calls received ({SEEN}): {e}"))?;
    let mut numbers = Vec::new();
    while let Some(s) = listed.next().await {
        let (subject, _) = s.map_err(|e| anyhow!("cannot read {SEEN}: {e}"))?;
        if let Some(n) = subject
            .strip_prefix(&prefix)
            .and_then(|n| n.parse::<u32>().ok())
        {
            numbers.push(n);
        }
    }
    numbers.sort_unstable();
    let mut out = std::collections::BTreeMap::new();
    for n in numbers.into_iter().take(MAX_SEEN_SEGMENTS) {
        let m = st
            .get_last_raw_message_by_subject(&seen_subject(stream, n))
            .await
            .map_err(|e| anyhow!("cannot read {SEEN}: {e}"))?;
        let text = String::from_utf8_lossy(&m.payload);
        let mut parts = text.split(' ');
        let mut number = || parts.next().and_then(|p| p.parse::<u64>().ok());
        let (first, received) = (number(), number());
        let ended = match parts.next() {
            None => Some(false),
            Some("end") if parts.next().is_none() => Some(true),
            Some(_) => None,
        };
        if let (Some(first), Some(received), Some(ended)) = (first, received, ended) {
            out.insert(n, (first, received, ended));
        }
    }
    Ok(out)
}

/// `nats://[LOGIN@]HOST:PORT/SEGMENT` split into the server's URL (with its login) and
/// the segment id. Errors show the address without its credentials.
pub fn parse_segment_url(text: &str) -> Result<(String, String)> {
    let shown = redact(text);
    let Some(rest) = text.strip_prefix("nats://") else {
        bail!("{shown}: not a nats:// address");
    };
    let Some((server, segment)) = rest.rsplit_once('/') else {
        bail!("{shown}: no segment: the form is nats://HOST:PORT/SEGMENT");
    };
    if server.is_empty() || server.ends_with('@') || server.contains('/') {
        bail!("{shown}: no server: the form is nats://HOST:PORT/SEGMENT");
    }
    if !valid_segment(segment) {
        bail!("{shown}: '{segment}' is not a segment id (32 hex digits, as a worker's report names it)");
    }
    Ok((format!("nats://{server}"), segment.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins_come_from_the_address_and_never_reach_a_log() {
        let (url, login) = split_login("nats://worker:p:w@10.0.0.5:4222").unwrap();
        assert_eq!(url, "nats://10.0.0.5:4222");
        assert_eq!(login, Some(Login::User("worker".into(), "p:w".into())));
        let (url, login) = split_login("nats://s3cret@h:1/0123").unwrap();
        assert_eq!(url, "nats://h:1/0123");
        assert_eq!(login, Some(Login::Token("s3cret".into())));
        assert_eq!(
            split_login("nats://h:1").unwrap(),
            ("nats://h:1".into(), None)
        );
        assert!(split_login("nats://:pw@h:1").is_err());
        assert!(split_login("tls://h:1").is_err());
        assert_eq!(redact("nats://worker:pw@h:1/seg"), "nats://***@h:1/seg");
        assert_eq!(redact("nats://h:1"), "nats://h:1");
        let e = split_login("nats://@h:1").unwrap_err().to_string();
        assert!(!e.contains("pw"), "{e}");
    }

    #[test]
    fn hellos_are_answered_on_inboxes_only() {
        for ok in ["_INBOX.abc.1", "_INBOX_relay7.xyz"] {
            assert!(reply_allowed(ok), "{ok}");
        }
        for bad in [
            "mmaudit.seen.0000000000000071.0",
            "mmaudit.nonce.00",
            "$JS.API.STREAM.DELETE.MMAUDIT_NONCES",
            "_INBOXX.a",
            "_INBOX",
            "x._INBOX.a",
            "_INBOX.>",
        ] {
            assert!(!reply_allowed(bad), "{bad}");
        }
    }

    #[test]
    fn segment_addresses_are_checked() {
        let id = "0123456789abcdef0123456789abcdef";
        let (url, seg) = parse_segment_url(&format!("nats://127.0.0.1:4222/{id}")).unwrap();
        assert_eq!((url.as_str(), seg.as_str()), ("nats://127.0.0.1:4222", id));
        for bad in [
            "http://x/0123456789abcdef0123456789abcdef",
            "nats://127.0.0.1:4222",
            "nats:///0123456789abcdef0123456789abcdef",
            "nats://h:1/0123456789ABCDEF0123456789abcdef",
            "nats://h:1/0123",
            "nats://h:1/mmaudit.seg.*",
            "nats://h:1/a/0123456789abcdef0123456789abcdef",
        ] {
            assert!(parse_segment_url(bad).is_err(), "{bad}");
        }
        let (url, _) = parse_segment_url(&format!("nats://u:pw@h:1/{id}")).unwrap();
        assert_eq!(url, "nats://u:pw@h:1");
        let e = parse_segment_url("nats://u:pw@h:1/zz")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("pw"), "{e}");
    }
}
