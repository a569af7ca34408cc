//! Counters of the live server and their Prometheus text rendering, served by a minimal
//! HTTP/1.0 responder on the server's own event loop.
//!
//! The responder reads one request (at most 8 KiB, headers only), answers `GET
//! /metrics` (or `/`) and closes. It must never block the event loop or hold more than
//! one small buffer per client.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::time::Instant;

use mio::net::TcpStream;

/// Totals over the server's life (streams finished so far plus those still open).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// streams whose header is authenticated and that have not finished
    pub streams_active: u64,
    /// streams whose header was authenticated
    pub streams_total: u64,
    /// finished streams that passed
    pub streams_passed_total: u64,
    /// finished streams that failed
    pub streams_failed_total: u64,
    /// prover connections open (handshaking or streaming)
    pub connections_active: u64,
    /// ledger calls
    pub calls_total: u64,
    /// sampled calls
    pub sampled_total: u64,
    /// sampled calls verified
    pub verified_total: u64,
    /// failures recorded in reports
    pub failures_total: u64,
    /// gap calls
    pub gaps_total: u64,
    /// bytes received from provers
    pub bytes_received_total: u64,
    /// connections refused or closed before they carried a stream
    pub connections_rejected_total: u64,
}

impl Counters {
    /// The Prometheus text exposition (version 0.0.4).
    pub fn to_prometheus(&self) -> String {
        let mut s = String::new();
        let rows: [(&str, &str, &str, u64); 12] = [
            (
                "streams_active",
                "gauge",
                "streams open (header authenticated, not finished)",
                self.streams_active,
            ),
            (
                "connections_active",
                "gauge",
                "prover connections open",
                self.connections_active,
            ),
            (
                "streams_total",
                "counter",
                "streams whose header was authenticated",
                self.streams_total,
            ),
            (
                "streams_passed_total",
                "counter",
                "finished streams that passed",
                self.streams_passed_total,
            ),
            (
                "streams_failed_total",
                "counter",
                "finished streams that failed",
                self.streams_failed_total,
            ),
            (
                "calls_total",
                "counter",
                "GEMM calls in the ledgers",
                self.calls_total,
            ),
            (
                "sampled_total",
                "counter",
                "calls the schedule selected",
                self.sampled_total,
            ),
            (
                "verified_total",
                "counter",
                "sampled calls whose entries all matched",
                self.verified_total,
            ),
            (
                "failures_total",
                "counter",
                "failures recorded in stream reports",
                self.failures_total,
            ),
            (
                "gaps_total",
                "counter",
                "sampled calls the provers reported as dropped",
                self.gaps_total,
            ),
            (
                "bytes_received_total",
                "counter",
                "bytes received from provers",
                self.bytes_received_total,
            ),
            (
                "connections_rejected_total",
                "counter",
                "connections refused or closed before carrying a stream",
                self.connections_rejected_total,
            ),
        ];
        for (name, kind, help, value) in rows {
            let _ = writeln!(s, "# HELP mmaudit_{name} {help}");
            let _ = writeln!(s, "# TYPE mmaudit_{name} {kind}");
            let _ = writeln!(s, "mmaudit_{name} {value}");
        }
        s
    }
}

/// Largest request read.
const MAX_REQUEST: usize = 8 << 10;

/// One HTTP client of the metrics endpoint.
pub struct MetricsConn {
    /// the socket
    pub stream: TcpStream,
    request: Vec<u8>,
    response: Vec<u8>,
    off: usize,
    /// when it connected (closed after a few seconds whatever its state)
    pub since: Instant,
}

/// What a metrics client needs next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// wait for readiness
    Wait,
    /// done: close it
    Close,
}

impl MetricsConn {
    /// A new client.
    pub fn new(stream: TcpStream) -> Self {
        MetricsConn {
            stream,
            request: Vec::new(),
            response: Vec::new(),
            off: 0,
            since: Instant::now(),
        }
    }

    /// Reads the request (until its blank line) and writes the answer, as far as the
    /// socket allows; `counters` is asked for the body when the request is complete.
    pub fn service(&mut self, counters: impl FnOnce() -> Counters) -> Step {
        if self.response.is_empty() {
            let mut buf = [0u8; 2048];
            loop {
                match self.stream.read(&mut buf) {
                    Ok(0) => return Step::Close,
                    Ok(n) => {
                        self.request.extend_from_slice(&buf[..n]);
                        if self.request.windows(4).any(|w| w == b"\r\n\r\n")
                            || self.request.windows(2).any(|w| w == b"\n\n")
                        {
                            break;
                        }
                        if self.request.len() > MAX_REQUEST {
                            self.response = answer("431 Request Header Fields Too Large", "");
                            break;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Step::Wait,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => return Step::Close,
                }
            }
            if self.response.is_empty() {
                let line = self
                    .request
                    .split(|&b| b == b'\n')
                    .next()
                    .unwrap_or_default();
                let line = String::from_utf8_lossy(line);
                let mut parts = line.split_whitespace();
                self.response = match (parts.next(), parts.next()) {
                    (Some("GET"), Some("/metrics" | "/")) => {
                        answer("200 OK", &counters().to_prometheus())
                    }
                    (Some("GET"), Some(_)) => answer("404 Not Found", "try /metrics\n"),
                    _ => answer("400 Bad Request", ""),
                };
            }
        }
        while self.off < self.response.len() {
            match self.stream.write(&self.response[self.off..]) {
                Ok(0) => return Step::Close,
                Ok(n) => self.off += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Step::Wait,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return Step::Close,
            }
        }
        Step::Close
    }
}

fn answer(status: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
