//! The downstream edge: every accepted client connection passes through here before Pingora's
//! HTTP code reads it, and this bounds what one connection can hold.
//!
//! - **Connections**: at most `switchboard.max_connections` are open at once; past it a new
//!   connection gets a 503 and is closed at once.
//! - **Request head**: it must arrive within `request_header_timeout_seconds` (counted from
//!   accept, or from its first byte on a kept-alive connection) and be at most
//!   `max_request_header_kb`; else the client gets a 408 or 431 and the connection closes.
//!   Pingora 0.9.1 has no hook for either: its header read has only a per-read timeout (reset by
//!   every byte) and a fixed 1 MiB limit, so the stream wrapper here enforces both on the bytes
//!   Pingora reads while a head is expected ([`head_begins`] .. [`head_done`]).
//! - **Writes**: a client that takes no response bytes for `client_write_timeout_seconds` fails
//!   the write in progress (head, body or end of body), so the exchange drops the upstream
//!   request and frees its slot at once. Pingora's own write timeout does not cover the head.
//! - **PROXY protocol** (a listener's `proxy_protocol`): on a plaintext connection the header is
//!   read here, after the connection is counted and before Pingora reads anything (see
//!   [`crate::proxy_protocol`]); TLS listeners read it through its `PreTlsProcess` hook.

use crate::config::ServerSettings;
use crate::error::{ErrorKind, GatewayError};
use crate::proxy_protocol::ProxyProtocol;
use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::tls::{SslDigest, TlsRef};
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use pingora_core::server::ShutdownWatch;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Sleep;

/// The edge's bounds, fixed at startup, with the canned answers it writes itself.
pub struct EdgeLimits {
    pub max_connections: usize,
    pub head_timeout: Duration,
    pub head_limit: usize,
    pub write_timeout: Duration,
    head_timed_out: Vec<u8>,
    head_too_large: Vec<u8>,
    too_many_connections: Vec<u8>,
}

impl EdgeLimits {
    pub fn new(s: &ServerSettings) -> Self {
        let head_timed_out = canned(
            &GatewayError::new(
                ErrorKind::RequestTimeout,
                format!(
                    "The request head did not arrive within {:.1}s (switchboard.request_header_timeout_seconds).",
                    s.request_header_timeout.as_secs_f64()
                ),
            )
            .with_status(408),
            "Request Timeout",
        );
        let head_too_large = canned(
            &GatewayError::new(
                ErrorKind::BadRequest,
                format!(
                    "The request line and headers are larger than the gateway's limit of {} KiB (switchboard.max_request_header_kb); send less in headers.",
                    s.max_request_header / 1024
                ),
            )
            .with_status(431)
            .with_code("request_header_too_large"),
            "Request Header Fields Too Large",
        );
        let too_many_connections = canned(
            &GatewayError::new(
                ErrorKind::Unavailable,
                format!(
                    "The gateway has {} client connections open, its limit (switchboard.max_connections); retry shortly.",
                    s.max_connections
                ),
            )
            .with_retry_after(Some(1)),
            "Service Unavailable",
        );
        EdgeLimits {
            max_connections: s.max_connections,
            head_timeout: s.request_header_timeout,
            head_limit: s.max_request_header,
            write_timeout: s.client_write_timeout,
            head_timed_out,
            head_too_large,
            too_many_connections,
        }
    }
}

/// A complete `Connection: close` HTTP/1.1 response carrying `err`'s OpenAI error object.
fn canned(err: &GatewayError, reason: &str) -> Vec<u8> {
    let body = err.body();
    let mut out = format!(
        "HTTP/1.1 {} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        err.status,
        body.len()
    );
    if let Some(secs) = err.retry_after {
        out.push_str(&format!("retry-after: {secs}\r\n"));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(&body);
    out
}

/// The listening service's app: counts connections, refuses those past the cap, and hands the
/// rest to `inner` wrapped in an [`EdgeStream`].
pub struct Edge<A> {
    inner: Arc<A>,
    limits: Arc<EdgeLimits>,
    open: Arc<AtomicUsize>,
    /// Set on the service of listeners with `proxy_protocol`: read on plaintext connections
    /// here (TLS ones read it before the handshake, through the same reader).
    proxy_protocol: Option<Arc<ProxyProtocol>>,
}

impl<A> Edge<A> {
    pub fn new(inner: A, limits: EdgeLimits) -> Self {
        Edge {
            inner: Arc::new(inner),
            limits: Arc::new(limits),
            open: Arc::new(AtomicUsize::new(0)),
            proxy_protocol: None,
        }
    }

    /// Reads PROXY protocol headers on this service's plaintext connections.
    pub fn with_proxy_protocol(mut self, reader: Option<Arc<ProxyProtocol>>) -> Self {
        self.proxy_protocol = reader;
        self
    }

    /// An edge sharing `limits` and the open-connection count with other listening services
    /// (one per set of HTTP options), so `max_connections` bounds them together.
    pub fn with_count(inner: A, limits: Arc<EdgeLimits>, open: Arc<AtomicUsize>) -> Self {
        Edge {
            inner: Arc::new(inner),
            limits,
            open,
            proxy_protocol: None,
        }
    }

    /// Client connections open now.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Edge<A> {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let Some(open) = OpenConnection::enter(&self.open, self.limits.max_connections) else {
            log::debug!("refused a client connection: max_connections reached");
            // Best effort, bounded: the answer fits in any socket buffer of a new connection.
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                stream.write_all(&self.limits.too_many_connections).await?;
                stream.shutdown().await
            })
            .await;
            return None;
        };
        if crate::tls::below_min_version(&stream) {
            log::debug!("refused a client connection: TLS version below min_version");
            return None;
        }
        let stream = match &self.proxy_protocol {
            Some(pp) if stream.as_any().is::<L4Stream>() => {
                let mut l4: Box<L4Stream> = stream.into_any().downcast().ok()?;
                pp.accept(&mut l4).await.ok()?;
                l4
            }
            _ => stream,
        };
        let wrapped = EdgeStream::new(stream, self.limits.clone(), open);
        self.inner.process_new(Box::new(wrapped), shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await
    }
}

/// One open connection in the count, released when its stream is dropped.
struct OpenConnection(Arc<AtomicUsize>);

impl OpenConnection {
    fn enter(open: &Arc<AtomicUsize>, max: usize) -> Option<Self> {
        let prev = open.fetch_add(1, Ordering::AcqRel);
        if prev >= max {
            open.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(OpenConnection(open.clone()))
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Marks that Pingora is about to read a request head on this session's connection.
pub fn head_begins(session: &ServerSession) {
    if let Some(edge) = edge_stream(session) {
        edge.set_reading_head(true);
    }
}

/// Marks that the request head on this session's connection has been read.
pub fn head_done(session: &ServerSession) {
    if let Some(edge) = edge_stream(session) {
        edge.set_reading_head(false);
    }
}

fn edge_stream(session: &ServerSession) -> Option<&EdgeStream> {
    let stream: &Stream = session.stream()?;
    (**stream).as_any().downcast_ref::<EdgeStream>()
}

/// A client connection with the edge's bounds on it (see the module doc).
pub struct EdgeStream {
    inner: Stream,
    limits: Arc<EdgeLimits>,
    /// Odd while a request head is expected; bumped on every change, so a new head is told
    /// apart from the last one even when no read happened in between.
    phase: AtomicU32,
    /// The `phase` the head state below belongs to.
    head_phase: u32,
    head_bytes: usize,
    /// When the current head must be complete; `None` until its first byte on a reused
    /// connection.
    head_deadline: Option<Instant>,
    head_timer: Option<Pin<Box<Sleep>>>,
    /// Armed while a write is waiting on the client.
    write_timer: Option<Pin<Box<Sleep>>>,
    write_stalled: bool,
    /// Bytes of the HTTP/2 connection preface seen at the start of the connection; once all of
    /// it has arrived the connection is HTTP/2 and no request head is read through here
    /// (the h2 codec bounds its header blocks itself). `usize::MAX`: not HTTP/2.
    h2_preface: usize,
    _open: OpenConnection,
}

/// What an HTTP/2 client sends first (RFC 9113 §3.4), over TLS with ALPN `h2` or as h2c.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

impl std::fmt::Debug for EdgeStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeStream")
            .field("inner", &self.inner)
            .finish()
    }
}

impl EdgeStream {
    fn new(inner: Stream, limits: Arc<EdgeLimits>, open: OpenConnection) -> Self {
        // The first head is expected from accept on.
        let head_deadline = Some(Instant::now() + limits.head_timeout);
        EdgeStream {
            inner,
            limits,
            phase: AtomicU32::new(1),
            head_phase: 1,
            head_bytes: 0,
            head_deadline,
            head_timer: None,
            write_timer: None,
            write_stalled: false,
            h2_preface: 0,
            _open: open,
        }
    }

    fn set_reading_head(&self, reading: bool) {
        let phase = self.phase.load(Ordering::Acquire);
        if (phase & 1 == 1) != reading {
            self.phase.store(phase.wrapping_add(1), Ordering::Release);
        }
    }

    /// Answers a head that broke a bound (best effort: one write attempt, never waiting) and
    /// fails the read, which makes Pingora close the connection.
    fn refuse_head(&mut self, cx: &mut Context<'_>, too_large: bool) -> io::Result<()> {
        let (answer, kind, what) = if too_large {
            (
                &self.limits.head_too_large,
                io::ErrorKind::InvalidData,
                "request head over max_request_header_kb",
            )
        } else {
            (
                &self.limits.head_timed_out,
                io::ErrorKind::TimedOut,
                "request head not complete within request_header_timeout_seconds",
            )
        };
        if self.head_bytes > 0 {
            let _ = Pin::new(&mut self.inner).poll_write(cx, answer);
            let _ = Pin::new(&mut self.inner).poll_flush(cx);
        }
        Err(io::Error::new(kind, what))
    }

    /// After a write-side poll: a result resets the stall timer, `Pending` arms it and fails
    /// the write once the client has taken nothing for the write timeout.
    fn watch_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if r.is_ready() {
            self.write_stalled = false;
            return r;
        }
        let deadline = tokio::time::Instant::now() + self.limits.write_timeout;
        let timer = self
            .write_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.write_stalled {
            self.write_stalled = true;
            timer.as_mut().reset(deadline);
        }
        if timer.as_mut().poll(cx).is_ready() {
            self.write_stalled = false;
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client took no response bytes within client_write_timeout_seconds",
            )));
        }
        Poll::Pending
    }
}

impl AsyncRead for EdgeStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let phase = this.phase.load(Ordering::Acquire);
        if phase & 1 == 0 || this.h2_preface == H2_PREFACE.len() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        if phase != this.head_phase {
            // A new head on a kept-alive connection: its time starts with its first byte.
            this.head_phase = phase;
            this.head_bytes = 0;
            this.head_deadline = None;
        }
        if let Some(deadline) = this.head_deadline {
            let deadline = tokio::time::Instant::from_std(deadline);
            let timer = this
                .head_timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            if timer.deadline() != deadline {
                timer.as_mut().reset(deadline);
            }
            if timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(this.refuse_head(cx, false));
            }
        }
        let room = this.limits.head_limit.saturating_sub(this.head_bytes);
        if room == 0 {
            return Poll::Ready(this.refuse_head(cx, true));
        }
        // Read no further than the limit, so an oversized head is never buffered.
        let mut limited = buf.take(room);
        let start = limited.filled().as_ptr();
        ready!(Pin::new(&mut this.inner).poll_read(cx, &mut limited))?;
        assert_eq!(limited.filled().as_ptr(), start);
        let n = limited.filled().len();
        // SAFETY: `limited` is the unfilled part of `buf`, and the inner read initialized and
        // filled its first `n` bytes.
        unsafe { buf.assume_init(n) };
        buf.advance(n);
        if this.h2_preface < H2_PREFACE.len() {
            this.h2_preface =
                match_preface(this.h2_preface, &buf.filled()[buf.filled().len() - n..]);
        }
        if n > 0 && this.head_bytes == 0 && this.head_deadline.is_none() {
            this.head_deadline = Some(Instant::now() + this.limits.head_timeout);
        }
        this.head_bytes += n;
        Poll::Ready(Ok(()))
    }
}

/// Continues matching the HTTP/2 preface (`seen` bytes matched so far) with `read`: the new
/// count, all of it once complete, or `usize::MAX` on a mismatch.
fn match_preface(seen: usize, read: &[u8]) -> usize {
    let want = &H2_PREFACE[seen..];
    let n = want.len().min(read.len());
    if want[..n] == read[..n] {
        seen + n
    } else {
        usize::MAX
    }
}

impl AsyncWrite for EdgeStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.watch_write(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.watch_write(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        this.watch_write(cx, r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.watch_write(cx, r)
    }
}

// Pingora's connection traits: all the inner stream's.

#[async_trait]
impl Shutdown for EdgeStream {
    async fn shutdown(&mut self) {
        // Bounded like every write (Pingora's own stream flushes first).
        let _ = AsyncWriteExt::shutdown(self).await;
    }
}

impl UniqueID for EdgeStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for EdgeStream {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for EdgeStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for EdgeStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for EdgeStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, socket_digest: SocketDigest) {
        self.inner.set_socket_digest(socket_digest)
    }
}

#[async_trait]
impl Peek for EdgeStream {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}
