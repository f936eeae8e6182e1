//! PROXY protocol v1 (text) and v2 (binary) headers from load balancers, on listeners with
//! `switchboard.proxy_protocol: true`. The header is read before anything else on the
//! connection (before TLS: see the [`PreTlsProcess`] impl; on plaintext listeners from
//! [`crate::edge`]), and the source address it reports replaces the connection's peer address
//! in its socket digest, so everything after (`Session::client_addr`, the forwarding-header
//! walk in [`crate::client_addr`], the access log) sees the real client.
//!
//! Rules:
//! - **Only from trusted peers.** A peer outside `switchboard.trusted_proxies` that sends a
//!   PROXY header is refused: the connection is closed as soon as the signature is seen
//!   (believing it would let anyone pick their address; ignoring it would feed the header to
//!   the HTTP parser as garbage).
//! - **Optional.** A connection that does not start with a PROXY signature (a health check
//!   straight from the orchestrator, a direct client) is served as is, with its socket peer: a
//!   header only ever changes the address when it comes from a trusted peer.
//! - **Bounded.** v1 at most 107 bytes (the spec's limit); v2 at most [`MAX_V2_BYTES`] in all
//!   (its length field is checked before the rest is read); the whole header must arrive within
//!   `request_header_timeout_seconds`. A malformed, oversized or late header closes the
//!   connection.
//! - `LOCAL` (v2) and `UNKNOWN` (v1), and v2's unspecified/Unix families, keep the socket peer.
//!
//! Parsing is the `ppp` crate's; this module does the reading, bounds and trust.

use crate::client_addr::{in_any, Cidr};
use async_trait::async_trait;
use pingora_core::listeners::PreTlsProcess;
use pingora_core::protocols::l4::socket::SocketAddr as PeerAddr;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::{GetSocketDigest, SocketDigest};
use ppp::{v1, v2, HeaderResult, PartialResult};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::io::AsRawFd;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// Largest v2 header accepted (16-byte preamble, addresses and TLVs). Load balancers send far
/// less (AWS NLB: under 300 bytes with its TLVs).
pub const MAX_V2_BYTES: usize = 4096;
/// The spec's limit for a v1 header, CRLF included.
const V1_MAX_BYTES: usize = 107;
const V1_SIGNATURE: &[u8] = b"PROXY ";
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
const V2_PREAMBLE: usize = 16;

/// The PROXY protocol reader of one listener.
pub struct ProxyProtocol {
    trusted: Vec<Cidr>,
    timeout: Duration,
}

/// What a connection started with.
#[derive(Debug, PartialEq)]
enum Start {
    /// No PROXY header: these bytes are the connection's own and go back to be read again.
    Plain(Vec<u8>),
    /// A header: the source it reports (`None`: keep the socket peer) and the bytes read past it.
    Header {
        source: Option<SocketAddr>,
        rest: Vec<u8>,
    },
}

impl ProxyProtocol {
    pub fn new(trusted: Vec<Cidr>, timeout: Duration) -> Self {
        ProxyProtocol { trusted, timeout }
    }

    /// Reads a PROXY header if the connection starts with one and applies it (see the module
    /// doc). `Err`: close the connection.
    pub async fn accept(&self, stream: &mut L4Stream) -> io::Result<()> {
        let peer = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().cloned());
        // A Unix-socket peer has no address to check; like `client_addr`, it is trusted.
        let trusted = match peer.as_ref().and_then(|p| p.as_inet()) {
            Some(inet) => in_any(&self.trusted, inet.ip()),
            None => true,
        };
        let start = tokio::time::timeout(self.timeout, read_start(stream, trusted))
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    "PROXY protocol header not complete within request_header_timeout_seconds",
                )
            })?;
        let start = start.map_err(|e| {
            if e.kind() == io::ErrorKind::PermissionDenied {
                log::warn!(
                    "refused a PROXY protocol header from {}, which is not in switchboard.trusted_proxies",
                    peer.as_ref().map_or_else(|| "?".to_string(), |p| p.to_string())
                );
            } else {
                log::debug!("closed a connection with a bad PROXY protocol header: {e}");
            }
            e
        })?;
        match start {
            Start::Plain(bytes) => stream.rewind(&bytes),
            Start::Header { source, rest } => {
                stream.rewind(&rest);
                if let Some(source) = source {
                    let digest = SocketDigest::from_raw_fd(stream.as_raw_fd());
                    let _ = digest.peer_addr.set(Some(PeerAddr::Inet(source)));
                    stream.set_socket_digest(digest);
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl PreTlsProcess for ProxyProtocol {
    async fn process(&self, stream: &mut L4Stream) -> pingora_core::Result<()> {
        self.accept(stream).await.map_err(|e| {
            pingora_core::Error::because(
                pingora_core::ErrorType::AcceptError,
                "PROXY protocol header",
                e,
            )
        })
    }
}

/// Reads the start of a connection until it is known to be plain or a whole PROXY header.
async fn read_start<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    trusted: bool,
) -> io::Result<Start> {
    let mut buf = Vec::with_capacity(128);
    let mut chunk = [0u8; 512];
    loop {
        if let Some(start) = decide(&buf, trusted)? {
            return Ok(start);
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return if has_signature(&buf) {
                Err(invalid(
                    "the connection closed inside a PROXY protocol header",
                ))
            } else {
                // Too short to be a header (or empty): let the HTTP side see what there is.
                Ok(Start::Plain(buf))
            };
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn has_signature(buf: &[u8]) -> bool {
    buf.starts_with(V1_SIGNATURE) || buf.starts_with(V2_SIGNATURE)
}

/// `buf` could still grow into a signature (or already holds one).
fn is_signature_prefix(buf: &[u8]) -> bool {
    has_signature(buf) || V1_SIGNATURE.starts_with(buf) || V2_SIGNATURE.starts_with(buf)
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// `Ok(None)`: more bytes are needed to decide.
fn decide(buf: &[u8], trusted: bool) -> io::Result<Option<Start>> {
    if !has_signature(buf) {
        return Ok(if is_signature_prefix(buf) {
            None
        } else {
            Some(Start::Plain(buf.to_vec()))
        });
    }
    if !trusted {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "PROXY protocol header from an untrusted peer",
        ));
    }
    if buf.starts_with(V2_SIGNATURE) && buf.len() >= V2_PREAMBLE {
        let total = V2_PREAMBLE + u16::from_be_bytes([buf[14], buf[15]]) as usize;
        if total > MAX_V2_BYTES {
            return Err(invalid(format!(
                "a PROXY v2 header of {total} bytes is over the {MAX_V2_BYTES}-byte limit"
            )));
        }
    }
    let parsed = if buf.starts_with(V1_SIGNATURE) {
        // Parsed only once its CRLF is in: `ppp` reads a CR that arrived without its LF as
        // part of the last field.
        match buf.windows(2).position(|w| w == b"\r\n") {
            Some(end) => HeaderResult::V1(v1::Header::try_from(&buf[..end + 2])),
            None if buf.len() >= V1_MAX_BYTES => {
                return Err(invalid(format!(
                    "a PROXY v1 header has no CRLF within {V1_MAX_BYTES} bytes"
                )))
            }
            None => return Ok(None),
        }
    } else {
        HeaderResult::parse(buf)
    };
    if parsed.is_incomplete() {
        return Ok(None);
    }
    let (len, source) = match parsed {
        HeaderResult::V1(Ok(h)) => (h.header.len(), v1_source(&h.addresses)),
        HeaderResult::V2(Ok(h)) => (h.header.len(), v2_source(&h)),
        HeaderResult::V1(Err(e)) => return Err(invalid(format!("bad PROXY v1 header: {e}"))),
        HeaderResult::V2(Err(e)) => return Err(invalid(format!("bad PROXY v2 header: {e}"))),
    };
    Ok(Some(Start::Header {
        source,
        rest: buf[len..].to_vec(),
    }))
}

fn v1_source(a: &v1::Addresses) -> Option<SocketAddr> {
    match a {
        v1::Addresses::Tcp4(a) => {
            Some(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port))
        }
        v1::Addresses::Tcp6(a) => {
            Some(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port))
        }
        v1::Addresses::Unknown => None,
    }
}

fn v2_source(h: &v2::Header<'_>) -> Option<SocketAddr> {
    if h.command == v2::Command::Local {
        return None;
    }
    match h.addresses {
        v2::Addresses::IPv4(a) => {
            Some(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port))
        }
        v2::Addresses::IPv6(a) => {
            Some(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port))
        }
        v2::Addresses::Unspecified | v2::Addresses::Unix(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes.
    async fn start(input: &[u8], step: usize, trusted: bool) -> io::Result<Start> {
        let mut b = tokio_test_reader(input, step);
        read_start(&mut b, trusted).await
    }

    fn tokio_test_reader(input: &[u8], step: usize) -> impl tokio::io::AsyncRead + Unpin {
        let (mut tx, rx) = tokio::io::duplex(64 * 1024);
        let input = input.to_vec();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for piece in input.chunks(step.max(1)) {
                if tx.write_all(piece).await.is_err() {
                    return;
                }
                tokio::task::yield_now().await;
            }
        });
        rx
    }

    fn v2_header(command: u8, family: u8, addr: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&((addr.len() + tlvs.len()) as u16).to_be_bytes());
        h.extend_from_slice(addr);
        h.extend_from_slice(tlvs);
        h
    }

    #[tokio::test]
    async fn v1_headers() {
        for step in [1, 3, 1000] {
            let got = start(
                b"PROXY TCP4 198.51.100.7 10.0.0.1 5555 80\r\nGET / HTTP/1.1\r\n",
                step,
                true,
            )
            .await
            .unwrap();
            let Start::Header { source, rest } = got else {
                panic!("{got:?}")
            };
            assert_eq!(source, Some("198.51.100.7:5555".parse().unwrap()));
            // What was read past the header goes back (however the reads were cut).
            assert!(b"GET / HTTP/1.1\r\n".starts_with(&rest), "{rest:?}");
            if step == 1000 {
                assert_eq!(rest, b"GET / HTTP/1.1\r\n");
            }
        }
        let got = start(b"PROXY TCP6 2001:db8::7 2001:db8::1 443 80\r\n", 1000, true)
            .await
            .unwrap();
        assert_eq!(
            got,
            Start::Header {
                source: Some("[2001:db8::7]:443".parse().unwrap()),
                rest: vec![]
            }
        );
        let got = start(b"PROXY UNKNOWN\r\n", 1000, true).await.unwrap();
        assert_eq!(
            got,
            Start::Header {
                source: None,
                rest: vec![]
            }
        );
    }

    #[tokio::test]
    async fn v2_headers() {
        let addr = [198, 51, 100, 7, 10, 0, 0, 1, 0x15, 0xb3, 0, 80];
        let mut input = v2_header(1, 0x11, &addr, &[0x04, 0, 1, 42]);
        input.extend_from_slice(b"GET");
        for step in [1, 7, 1000] {
            let got = start(&input, step, true).await.unwrap();
            let Start::Header { source, .. } = got else {
                panic!("{got:?}")
            };
            assert_eq!(source, Some("198.51.100.7:5555".parse().unwrap()));
        }
        // LOCAL keeps the peer.
        let got = start(&v2_header(0, 0x00, &[], &[]), 1000, true)
            .await
            .unwrap();
        assert_eq!(
            got,
            Start::Header {
                source: None,
                rest: vec![]
            }
        );
    }

    #[tokio::test]
    async fn plain_connections_pass() {
        assert_eq!(
            start(b"GET / HTTP/1.1\r\n\r\n", 1000, true).await.unwrap(),
            Start::Plain(b"GET / HTTP/1.1\r\n\r\n".to_vec())
        );
        assert_eq!(
            start(b"P", 1, false).await.unwrap(),
            Start::Plain(b"P".to_vec())
        );
        let Start::Plain(got) = start(b"POST /", 1, false).await.unwrap() else {
            panic!()
        };
        assert!(got.len() >= 2 && b"POST /".starts_with(&got), "{got:?}");
        // A TLS ClientHello.
        assert_eq!(
            start(&[0x16, 3, 1], 1000, false).await.unwrap(),
            Start::Plain(vec![0x16, 3, 1])
        );
        assert_eq!(start(b"", 1, true).await.unwrap(), Start::Plain(vec![]));
    }

    #[tokio::test]
    async fn refused() {
        let untrusted = start(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", 1000, false)
            .await
            .unwrap_err();
        assert_eq!(untrusted.kind(), io::ErrorKind::PermissionDenied);
        let v2 = v2_header(1, 0x11, &[0; 12], &[]);
        assert_eq!(
            start(&v2, 1000, false).await.unwrap_err().kind(),
            io::ErrorKind::PermissionDenied
        );
        // Over 107 bytes without an end.
        let long = format!("PROXY TCP4 {}\r\n", "1".repeat(200));
        assert_eq!(
            start(long.as_bytes(), 1000, true).await.unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        assert!(start(b"PROXY TCP4 nonsense\r\n", 1000, true).await.is_err());
        // A v2 length past the limit is refused from the preamble, before the rest arrives.
        let mut big = V2_SIGNATURE.to_vec();
        big.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert_eq!(
            start(&big, 1000, true).await.unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        // A v2 length shorter than its address family's block.
        let short = v2_header(1, 0x11, &[1, 2, 3], &[]);
        assert!(start(&short, 1000, true).await.is_err());
        // Cut off inside the header.
        assert!(start(b"PROXY TCP4 1.2.3.4", 1000, true).await.is_err());
    }
}
