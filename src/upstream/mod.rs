//! The upstream side of an exchange: [`Endpoint`]s (a base URL whose host is resolved
//! asynchronously and cached, never blocking a worker) and [`UpstreamClient`], a thin layer over
//! Pingora's pooled h1/h2 `Connector` that sends one [`UpstreamRequest`] and hands back the
//! response to be read whole or chunk by chunk. Connections go back to the pool only when their
//! response was read to the end.

use crate::error::{GatewayError, GatewayResult};
use arc_swap::ArcSwapOption;
use bytes::{Bytes, BytesMut};
use http::{HeaderName, HeaderValue, Method};
use pingora_core::connectors::http::Connector;
use pingora_core::connectors::ConnectorOptions;
use pingora_core::protocols::http::client::HttpSession;
use pingora_core::protocols::http::v1::client::HttpSession as Http1Session;
use pingora_core::protocols::ALPN;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::{RequestHeader, ResponseHeader};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a resolved address is used before it is refreshed in the background.
const DNS_TTL: Duration = Duration::from_secs(30);

/// Bound on each write of the request to the upstream.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Bodies up to this size are copied behind the head when the connection cannot write two
/// buffers at once (TLS), so the request still leaves in one write.
const COPY_BODY_MAX: usize = 64 * 1024;

/// An HTTP request to send upstream. `path` includes the query string.
pub struct UpstreamRequest {
    pub method: Method,
    pub path: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

impl UpstreamRequest {
    pub fn post_json(path: String, body: Vec<u8>) -> Self {
        UpstreamRequest {
            method: Method::POST,
            path,
            headers: vec![(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body: Bytes::from(body),
        }
    }

    /// Adds a header; a value with bytes HTTP forbids (a key with a newline) is a config-class 500.
    pub fn header(&mut self, name: HeaderName, value: &str) -> GatewayResult<()> {
        let value = HeaderValue::from_str(value).map_err(|_| {
            GatewayError::internal(format!(
                "The configured value for header '{name}' contains characters not allowed in HTTP headers."
            ))
        })?;
        self.headers.push((name, value));
        Ok(())
    }
}

/// An upstream base URL: `http[s]://host[:port]`, resolved lazily.
pub struct Endpoint {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// `Host` header / h2 authority.
    pub authority: String,
    options: PeerSettings,
    cached: ArcSwapOption<CachedPeer>,
    refreshing: AtomicBool,
}

#[derive(Clone, Copy, Debug)]
pub struct PeerSettings {
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
}

struct CachedPeer {
    peer: Arc<HttpPeer>,
    resolved_at: Instant,
}

impl Endpoint {
    /// Parses `scheme://host[:port][/path]`; the path is ignored here (providers own paths).
    pub fn parse(url: &str, options: PeerSettings) -> Result<Endpoint, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!("\"{url}\" must start with http:// or https://"));
        };
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        if authority.is_empty() || authority.contains('@') {
            return Err(format!("\"{url}\" has no valid host"));
        }
        let (host, port) = split_host_port(authority, if tls { 443 } else { 80 })
            .ok_or_else(|| format!("\"{url}\" has an invalid port"))?;
        let endpoint = Endpoint {
            tls,
            host: host.to_string(),
            port,
            authority: authority.to_string(),
            options,
            cached: ArcSwapOption::empty(),
            refreshing: AtomicBool::new(false),
        };
        // Literal IPs need no resolution: build the peer now.
        if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
            let peer = endpoint.make_peer(SocketAddr::new(ip, port));
            endpoint.cached.store(Some(Arc::new(CachedPeer {
                peer,
                resolved_at: Instant::now() + Duration::from_secs(u32::MAX as u64),
            })));
        }
        Ok(endpoint)
    }

    fn make_peer(&self, addr: SocketAddr) -> Arc<HttpPeer> {
        let mut peer = HttpPeer::new(addr, self.tls, self.host.clone());
        let o = &mut peer.options;
        o.connection_timeout = Some(self.options.connect_timeout);
        o.total_connection_timeout = Some(self.options.connect_timeout);
        o.idle_timeout = Some(self.options.idle_timeout);
        o.tcp_keepalive = None;
        if self.tls {
            o.alpn = ALPN::H2H1;
            o.verify_cert = true;
            o.verify_hostname = true;
        }
        Arc::new(peer)
    }

    /// The peer to connect to. Resolves on first use; afterwards a stale address keeps being used
    /// while one background task refreshes it, so DNS never sits on the request path twice.
    pub async fn peer(self: &Arc<Self>) -> GatewayResult<Arc<HttpPeer>> {
        if let Some(c) = self.cached.load_full() {
            if c.resolved_at.elapsed() > DNS_TTL && !self.refreshing.swap(true, Ordering::AcqRel) {
                let me = self.clone();
                tokio::spawn(async move {
                    let _ = me.resolve().await;
                    me.refreshing.store(false, Ordering::Release);
                });
            }
            return Ok(c.peer.clone());
        }
        self.resolve().await
    }

    async fn resolve(&self) -> GatewayResult<Arc<HttpPeer>> {
        let target = (self.host.as_str(), self.port);
        let addr = tokio::time::timeout(
            self.options.connect_timeout,
            tokio::net::lookup_host(target),
        )
        .await
        .map_err(|_| {
            GatewayError::bad_gateway(format!("Resolving upstream host {} timed out.", self.host))
                .untouched()
        })?
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| {
            GatewayError::bad_gateway(format!(
                "Upstream host {} could not be resolved.",
                self.host
            ))
            .untouched()
        })?;
        let peer = self.make_peer(addr);
        self.cached.store(Some(Arc::new(CachedPeer {
            peer: peer.clone(),
            resolved_at: Instant::now(),
        })));
        Ok(peer)
    }
}

fn split_host_port(authority: &str, default_port: u16) -> Option<(&str, u16)> {
    if authority.starts_with('[') {
        let end = authority.find(']')?;
        let host = &authority[..=end];
        return match authority[end + 1..].strip_prefix(':') {
            Some(p) => Some((host, p.parse().ok()?)),
            None => Some((host, default_port)),
        };
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => Some((h, p.parse().ok()?)),
        None => Some((authority, default_port)),
    }
}

/// Sends requests upstream over pooled connections. One per process, shared by all snapshots,
/// so pooled connections survive config reloads.
pub struct UpstreamClient {
    connector: Connector,
    pub connections_reused: AtomicU64,
    pub connections_new: AtomicU64,
}

impl UpstreamClient {
    pub fn new(pool_size: usize) -> Self {
        let mut options = ConnectorOptions::new(pool_size);
        options.keepalive_pool_size = pool_size;
        UpstreamClient {
            connector: Connector::new(Some(options)),
            connections_reused: AtomicU64::new(0),
            connections_new: AtomicU64::new(0),
        }
    }

    /// Sends the request and reads the response header. `read_timeout` bounds each wait for
    /// upstream bytes (the header, then each body chunk). Connect failures are marked
    /// `untouched` (safe to retry anywhere).
    pub async fn send(
        &self,
        endpoint: &Arc<Endpoint>,
        req: &UpstreamRequest,
        read_timeout: Option<Duration>,
    ) -> GatewayResult<UpstreamResponse<'_>> {
        let peer = endpoint.peer().await?;
        let (session, reused) = self.connector.get_http_session(&*peer).await.map_err(|e| {
            GatewayError::bad_gateway(format!(
                "Could not connect to the upstream at {}:{} ({}).",
                endpoint.host,
                endpoint.port,
                e.etype().as_str()
            ))
            .untouched()
        })?;
        if reused {
            self.connections_reused.fetch_add(1, Ordering::Relaxed);
        } else {
            self.connections_new.fetch_add(1, Ordering::Relaxed);
        }
        let io_err = |what: &str, e: Box<pingora_core::Error>, reused: bool| {
            let err = GatewayError::bad_gateway(format!(
                "The upstream at {} failed while {what} ({}).",
                endpoint.authority,
                e.etype().as_str()
            ));
            // A pooled connection the server had already closed: nothing was processed.
            if reused {
                err.untouched()
            } else {
                err
            }
        };
        let mut session = match session {
            // HTTP/1.1: head and body go out in one write (Pingora's session flushes the head
            // on its own, costing a second syscall and a second wake-up of the upstream).
            HttpSession::H1(h1) if req.method != Method::HEAD => {
                let mut stream = h1.into_inner();
                let head = h1_request_head(endpoint, req)?;
                write_request(&mut stream, head, &req.body)
                    .await
                    .map_err(|e| io_err("sending the request", e, reused))?;
                // A fresh session over the same connection, as the pool hands out. It has no
                // record of the request head, which Pingora consults only for HEAD requests,
                // upgrades and `Connection: close`; `h1_request_head` sends none of those.
                let mut h1 = Http1Session::new_with_options(stream, &*peer);
                h1.read_timeout = read_timeout;
                HttpSession::H1(h1)
            }
            mut session => {
                session.set_read_timeout(read_timeout);
                session.set_write_timeout(Some(WRITE_TIMEOUT));
                let header =
                    self.request_header(endpoint, req, matches!(session, HttpSession::H2(_)))?;
                session
                    .write_request_header(Box::new(header))
                    .await
                    .map_err(|e| io_err("sending the request", e, reused))?;
                if !req.body.is_empty() {
                    session
                        .write_request_body(req.body.clone(), true)
                        .await
                        .map_err(|e| io_err("sending the request body", e, reused))?;
                }
                session
                    .finish_request_body()
                    .await
                    .map_err(|e| io_err("sending the request body", e, reused))?;
                session
            }
        };
        if let Err(e) = session.read_response_header().await {
            return Err(if e.etype() == &pingora_core::ErrorType::ReadTimedout {
                GatewayError::timeout(format!(
                    "The upstream at {} did not answer within the deadline.",
                    endpoint.authority
                ))
            } else {
                io_err("reading the response", e, reused)
            });
        }
        let header = session
            .response_header()
            .cloned()
            .ok_or_else(|| GatewayError::bad_gateway("The upstream sent no response header."))?;
        Ok(UpstreamResponse {
            client: self,
            session: Some(session),
            peer,
            status: header.status.as_u16(),
            header,
            idle_timeout: endpoint.options.idle_timeout,
            endpoint: endpoint.clone(),
        })
    }

    fn request_header(
        &self,
        endpoint: &Endpoint,
        req: &UpstreamRequest,
        h2: bool,
    ) -> GatewayResult<RequestHeader> {
        let bad = |_| GatewayError::internal("Failed to build the upstream request header.");
        let mut header = RequestHeader::build(
            req.method.clone(),
            req.path.as_bytes(),
            Some(req.headers.len() + 3),
        )
        .map_err(bad)?;
        if h2 {
            let uri = http::Uri::builder()
                .scheme(if endpoint.tls { "https" } else { "http" })
                .authority(endpoint.authority.as_str())
                .path_and_query(req.path.as_str())
                .build()
                .map_err(|_| GatewayError::internal("Failed to build the upstream URI."))?;
            header.set_uri(uri);
        } else {
            header
                .insert_header(http::header::HOST, endpoint.authority.as_str())
                .map_err(bad)?;
        }
        for (name, value) in &req.headers {
            header
                .append_header(name.clone(), value.clone())
                .map_err(bad)?;
        }
        header
            .insert_header(http::header::CONTENT_LENGTH, req.body.len().to_string())
            .map_err(bad)?;
        Ok(header)
    }
}

/// The HTTP/1.1 request head: request line, `Host`, the request's headers and `Content-Length`,
/// byte for byte as Pingora's own writer produced it ([`wire_name`]). `Host` and `Content-Length`
/// headers among the request's own are dropped, as the header map this replaces did.
fn h1_request_head(endpoint: &Endpoint, req: &UpstreamRequest) -> GatewayResult<BytesMut> {
    if req.path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(GatewayError::internal(
            "Failed to build the upstream request header.",
        ));
    }
    let headers_len: usize = req
        .headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    let mut head = BytesMut::with_capacity(
        req.method.as_str().len() + req.path.len() + endpoint.authority.len() + headers_len + 64,
    );
    head.extend_from_slice(req.method.as_str().as_bytes());
    head.extend_from_slice(b" ");
    head.extend_from_slice(req.path.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    head.extend_from_slice(endpoint.authority.as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in &req.headers {
        if name == http::header::HOST || name == http::header::CONTENT_LENGTH {
            continue;
        }
        head.extend_from_slice(wire_name(name).as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    // `fmt::Write` for `BytesMut` cannot fail.
    let _ = write!(head, "Content-Length: {}\r\n\r\n", req.body.len());
    Ok(head)
}

/// A header name as Pingora's request writer spells it: the few it knows in title case, the
/// rest lowercase.
fn wire_name(name: &HeaderName) -> &str {
    use http::header;
    match *name {
        header::CONTENT_TYPE => "Content-Type",
        header::CONTENT_ENCODING => "Content-Encoding",
        header::CACHE_CONTROL => "Cache-Control",
        header::CONNECTION => "Connection",
        header::DATE => "Date",
        _ => name.as_str(),
    }
}

/// Writes head and body with one syscall where possible (a vectored write, or the body copied
/// behind the head when it is small), then flushes; each write is bounded by [`WRITE_TIMEOUT`].
async fn write_request(
    stream: &mut pingora_core::protocols::Stream,
    mut head: BytesMut,
    body: &[u8],
) -> Result<(), Box<pingora_core::Error>> {
    use pingora_core::{Error, ErrorType};
    use tokio::io::AsyncWriteExt;
    let vectored = stream.is_write_vectored();
    let (mut first, mut rest): (&[u8], &[u8]) = if !vectored && body.len() <= COPY_BODY_MAX {
        head.extend_from_slice(body);
        (&head, &[])
    } else {
        (&head, body)
    };
    let write = async {
        while !first.is_empty() || !rest.is_empty() {
            let n = if first.is_empty() {
                stream.write(rest).await?
            } else if vectored && !rest.is_empty() {
                let bufs = [std::io::IoSlice::new(first), std::io::IoSlice::new(rest)];
                stream.write_vectored(&bufs).await?
            } else {
                stream.write(first).await?
            };
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            let from_first = n.min(first.len());
            first = &first[from_first..];
            rest = &rest[n - from_first..];
        }
        stream.flush().await
    };
    match tokio::time::timeout(WRITE_TIMEOUT, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Error::because(
            ErrorType::WriteError,
            "while writing the request",
            e,
        )),
        Err(_) => Err(Error::explain(
            ErrorType::WriteTimedout,
            "while writing the request",
        )),
    }
}

/// A response whose header has been read.
pub struct UpstreamResponse<'c> {
    client: &'c UpstreamClient,
    session: Option<HttpSession>,
    peer: Arc<HttpPeer>,
    pub status: u16,
    pub header: ResponseHeader,
    idle_timeout: Duration,
    endpoint: Arc<Endpoint>,
}

impl UpstreamResponse<'_> {
    /// The next body chunk, `None` at the end.
    pub async fn chunk(&mut self) -> GatewayResult<Option<Bytes>> {
        let Some(session) = self.session.as_mut() else {
            return Ok(None);
        };
        match session.read_response_body().await {
            Ok(Some(b)) => Ok(Some(b)),
            Ok(None) => {
                self.release().await;
                Ok(None)
            }
            Err(e) => {
                self.session = None;
                Err(if e.etype() == &pingora_core::ErrorType::ReadTimedout {
                    GatewayError::timeout(format!(
                        "The upstream at {} went silent for longer than the stream timeout.",
                        self.endpoint.authority
                    ))
                } else {
                    GatewayError::bad_gateway(format!(
                        "The upstream at {} broke off the response ({}).",
                        self.endpoint.authority,
                        e.etype().as_str()
                    ))
                })
            }
        }
    }

    /// The whole body, refusing more than `limit` bytes.
    pub async fn body(&mut self, limit: usize) -> GatewayResult<Bytes> {
        let mut first: Option<Bytes> = None;
        let mut buf = BytesMut::new();
        while let Some(chunk) = self.chunk().await? {
            if first.is_none() && buf.is_empty() {
                first = Some(chunk);
                continue;
            }
            if let Some(f) = first.take() {
                buf.extend_from_slice(&f);
            }
            buf.extend_from_slice(&chunk);
            if buf.len() > limit {
                self.session = None;
                return Err(GatewayError::bad_gateway(format!(
                    "The upstream response exceeded {limit} bytes."
                )));
            }
        }
        Ok(first.unwrap_or_else(|| buf.freeze()))
    }

    /// Returns the connection to the pool if the response was read to its end; otherwise drops it.
    async fn release(&mut self) {
        if let Some(mut session) = self.session.take() {
            if session.response_done() {
                self.client
                    .connector
                    .release_http_session(session, &*self.peer, Some(self.idle_timeout))
                    .await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_endpoints() {
        let o = PeerSettings {
            connect_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
        };
        let e = Endpoint::parse("https://api.openai.com/v1", o).unwrap();
        assert!(e.tls);
        assert_eq!((e.host.as_str(), e.port), ("api.openai.com", 443));
        let e = Endpoint::parse("http://127.0.0.1:8000", o).unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.authority.as_str()),
            ("127.0.0.1", 8000, "127.0.0.1:8000")
        );
        assert!(e.cached.load().is_some());
        let e = Endpoint::parse("http://[::1]:9/x", o).unwrap();
        assert_eq!(e.port, 9);
        assert!(Endpoint::parse("ftp://x", o).is_err());
        assert!(Endpoint::parse("http://host:notaport", o).is_err());
    }
}
