//! The prover's side of a live session with `mmaudit-verify serve`, for tests and the
//! reference prover: connect, read and check the verifier's hello, then send a stream
//! made with the hello's nonce and sampling configuration
//! ([`crate::refprover::RefProver::with_hello`]: the verifier sets the rates, as it does
//! for `libmmaudit.so`) and, optionally, references to the verifier's tensors (see
//! [`crate::refprover::RefProver::use_references`]).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use mmaudit_protocol::handshake::{HelloReader, ServerHello};
use mmaudit_protocol::keys::Key;

/// Connects to a live verifier and reads its hello (within `timeout`).
pub fn connect(
    addr: SocketAddr,
    key: &Key,
    timeout: Duration,
) -> io::Result<(TcpStream, ServerHello)> {
    let (stream, hello, _) = connect_with_mac(addr, key, timeout)?;
    Ok((stream, hello))
}

/// [`connect`], also returning the hello's MAC (what a commit-mode session's challenge
/// frames chain from).
pub fn connect_with_mac(
    addr: SocketAddr,
    key: &Key,
    timeout: Duration,
) -> io::Result<(TcpStream, ServerHello, [u8; 32])> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_nodelay(true)?;
    let (hello, mac) = read_hello_with_mac(&mut stream, key)?;
    Ok((stream, hello, mac))
}

/// Reads the verifier's hello from `stream` (a verifier sends nothing after it before
/// the prover's first commitment).
pub fn read_hello(stream: &mut impl Read, key: &Key) -> io::Result<ServerHello> {
    read_hello_with_mac(stream, key).map(|(h, _)| h)
}

/// [`read_hello`], also returning the hello's MAC (its last 32 bytes).
pub fn read_hello_with_mac(
    stream: &mut impl Read,
    key: &Key,
) -> io::Result<(ServerHello, [u8; 32])> {
    let mut reader = HelloReader::new(key);
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            let e = reader
                .finish()
                .err()
                .map_or("closed".to_string(), |e| e.to_string());
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, e));
        }
        match reader.push(&buf[..n]) {
            Ok(Some(hello)) => {
                let mac = reader.mac().ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidData, "the hello has no MAC")
                })?;
                return Ok((hello, mac));
            }
            Ok(None) => {}
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
        }
    }
}

/// Sends `bytes` in pieces of `chunk` bytes, pausing `pause` between them.
pub fn send_paced(
    stream: &mut TcpStream,
    bytes: &[u8],
    chunk: usize,
    pause: Duration,
) -> io::Result<()> {
    for piece in bytes.chunks(chunk.max(1)) {
        stream.write_all(piece)?;
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
    }
    stream.flush()
}

/// After sending a complete stream: half-closes, then waits (up to the read timeout)
/// for the verifier to close its side.
pub fn close_and_wait(mut stream: TcpStream) -> io::Result<()> {
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut buf = [0u8; 256];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

/// Plays a commit-mode session (docs/COMMIT.md) on `stream`, whose hello carried
/// `hello_mac`: the header, then for every `per_frame` calls of `specs` a frame with
/// their ledger and commitment records (and the openings of earlier challenges); after
/// each frame it reads challenge frames until the verifier has judged every call
/// committed so far, and opens what is challenged. Then the last openings, the end
/// record, and waits for the verifier to close.
pub fn commit_session(
    mut stream: TcpStream,
    key: &Key,
    hello_mac: [u8; 32],
    prover: &mut crate::commitprover::CommitProver,
    specs: &[crate::refprover::GemmSpec],
    per_frame: usize,
) -> io::Result<()> {
    use mmaudit_protocol::commit::frames::ChallengeReader;
    use mmaudit_protocol::record::Record;
    use mmaudit_protocol::stream::StreamWriter;

    let invalid = |e: String| io::Error::new(io::ErrorKind::InvalidData, e);
    let (mut writer, header) = StreamWriter::new(key, &prover.header());
    stream.write_all(&header)?;
    let mut challenges = ChallengeReader::new(key, hello_mac);
    let mut buf = vec![0u8; 64 << 10];
    let mut judged: Option<u64> = None;
    for chunk in specs.chunks(per_frame.max(1)) {
        for spec in chunk {
            prover.gemm(spec);
        }
        let records = std::mem::take(&mut prover.records);
        stream.write_all(&writer.frame(&records))?;
        let Some(last) = prover.last_committed() else {
            continue;
        };
        while judged.is_none_or(|j| j < last) {
            let n = stream.read(&mut buf)?;
            if n == 0 {
                return Err(invalid("the verifier closed the connection".into()));
            }
            for frame in challenges
                .push(&buf[..n])
                .map_err(|e| invalid(e.to_string()))?
            {
                judged = Some(frame.through);
                for c in frame.challenges {
                    prover.open(c.index, &c.plan);
                }
            }
        }
    }
    let mut records = std::mem::take(&mut prover.records);
    records.push(Record::End(prover.end()));
    stream.write_all(&writer.frame(&records))?;
    close_and_wait(stream)
}
