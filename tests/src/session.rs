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
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_nodelay(true)?;
    let hello = read_hello(&mut stream, key)?;
    Ok((stream, hello))
}

/// Reads the verifier's hello from `stream`, byte-exact: nothing after it is consumed
/// (a verifier sends nothing after it).
pub fn read_hello(stream: &mut impl Read, key: &Key) -> io::Result<ServerHello> {
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
            Ok(Some(hello)) => return Ok(hello),
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
