//! Test support: the real gateway binary started on a config, mock upstreams on 127.0.0.1 that
//! reply with exact bytes (split anywhere, delayed, hung, reset, cut mid-stream), and a small
//! HTTP/1.1 client that reads chunked streams chunk by chunk with arrival times.
#![allow(dead_code)]

use std::io::Read;
use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "switchboard-test-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

// ---------------------------------------------------------------------------------------------
// The gateway process.

pub struct Gateway {
    pub port: u16,
    pub dir: PathBuf,
    pub config_path: PathBuf,
    child: Child,
}

impl Gateway {
    /// Starts the gateway on `yaml` (a `switchboard:` section with pid/upgrade paths in a temp dir
    /// is appended unless the config has one) and waits until it answers.
    pub fn start(yaml: &str) -> Gateway {
        Self::start_with_env(yaml, &[])
    }

    pub fn start_with_env(yaml: &str, env: &[(&str, &str)]) -> Gateway {
        let dir = temp_dir();
        let port = free_port();
        let mut yaml = yaml.to_string();
        if !yaml.contains("\nswitchboard:") && !yaml.starts_with("switchboard:") {
            yaml.push_str(&format!(
                "\nswitchboard:\n  threads: 2\n  grace_period_seconds: 0\n  graceful_shutdown_timeout_seconds: 5\n  pid_file: {d}/sb.pid\n  upgrade_sock: {d}/sb.sock\n",
                d = dir.display()
            ));
        }
        let config_path = dir.join("config.yaml");
        std::fs::write(&config_path, yaml).unwrap();
        let stdout = std::fs::File::create(dir.join("stdout.log")).unwrap();
        let stderr = std::fs::File::create(dir.join("stderr.log")).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchboard"));
        cmd.arg("--config")
            .arg(&config_path)
            .arg("--host")
            .arg("127.0.0.1")
            .arg("--port")
            .arg(port.to_string())
            .stdout(stdout)
            .stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn switchboard");
        let mut gw = Gateway {
            port,
            dir,
            config_path,
            child,
        };
        gw.wait_ready();
        gw
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("switchboard exited with {status}: {}", self.stderr());
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("switchboard did not start listening: {}", self.stderr());
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Replaces the config's model and settings sections with `yaml`, keeping the
    /// `switchboard:` section the harness appended (pid file, upgrade socket, grace periods).
    pub fn rewrite_config(&self, yaml: &str) {
        let current = std::fs::read_to_string(&self.config_path).unwrap();
        let ours = current
            .find("\nswitchboard:")
            .map(|i| &current[i..])
            .unwrap_or("");
        std::fs::write(&self.config_path, format!("{yaml}\n{ours}")).unwrap();
    }

    /// Starts a second process on the same config with `--upgrade` (Pingora's zero-downtime
    /// upgrade): it waits on the upgrade socket for the listeners, which this process hands
    /// over on SIGQUIT. Its logs go to a directory of its own.
    pub fn spawn_upgrade(&self) -> Gateway {
        let dir = temp_dir();
        let stdout = std::fs::File::create(dir.join("stdout.log")).unwrap();
        let stderr = std::fs::File::create(dir.join("stderr.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .arg("--config")
            .arg(&self.config_path)
            .arg("--host")
            .arg("127.0.0.1")
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--upgrade")
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("spawn switchboard --upgrade");
        Gateway {
            port: self.port,
            dir,
            config_path: self.config_path.clone(),
            child,
        }
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.join("stdout.log")).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    /// Access-log lines as JSON.
    pub fn access_log(&self) -> Vec<serde_json::Value> {
        self.stdout()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits for the process to exit; returns whether it did within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub async fn post(&self, path: &str, body: &serde_json::Value) -> Response {
        request(
            self.port,
            "POST",
            path,
            &[("content-type", "application/json")],
            body.to_string().as_bytes(),
        )
        .await
    }

    pub async fn post_with(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        request(self.port, "POST", path, headers, body).await
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        request(self.port, "GET", path, headers, b"").await
    }

    /// Posts and returns the response head with a reader for the body as it arrives.
    pub async fn post_stream(&self, path: &str, body: &serde_json::Value) -> StreamingResponse {
        let mut conn = Conn::connect(self.port).await;
        conn.send_head_and_body(
            "POST",
            path,
            &[("content-type", "application/json")],
            body.to_string().as_bytes(),
        )
        .await;
        conn.read_streaming().await
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------------
// Client.

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts an OpenAI error object with this status; returns `error`.
    pub fn expect_error(&self, status: u16) -> serde_json::Value {
        assert_eq!(self.status, status, "body: {}", self.text());
        let v = self.json();
        let e = v
            .get("error")
            .unwrap_or_else(|| panic!("no error object: {v}"))
            .clone();
        for k in ["message", "type", "param", "code"] {
            assert!(e.get(k).is_some(), "error object lacks {k}: {v}");
        }
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
        e
    }

    /// The `data:` payloads of an SSE body, in order (including `[DONE]`).
    pub fn sse_data(&self) -> Vec<String> {
        sse_data(&self.text())
    }
}

pub fn sse_data(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter_map(|ev| {
            let data: Vec<&str> = ev
                .lines()
                .filter_map(|l| {
                    l.strip_prefix("data:")
                        .map(|d| d.strip_prefix(' ').unwrap_or(d))
                })
                .collect();
            (!data.is_empty()).then(|| data.join("\n"))
        })
        .collect()
}

/// The chunks of an OpenAI stream as JSON (without `[DONE]`), asserting it ends in `[DONE]`.
pub fn openai_chunks(resp: &Response) -> Vec<serde_json::Value> {
    let data = resp.sse_data();
    assert_eq!(
        data.last().map(String::as_str),
        Some("[DONE]"),
        "stream must end with [DONE]: {}",
        resp.text()
    );
    data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("bad chunk {d}: {e}")))
        .collect()
}

/// Concatenated `delta.content` of an OpenAI stream.
pub fn stream_text(chunks: &[serde_json::Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| {
            c["choices"]
                .get(0)
                .and_then(|ch| ch["delta"]["content"].as_str())
                .map(str::to_string)
        })
        .collect()
}

pub async fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    Conn::connect(port)
        .await
        .send(method, path, headers, body)
        .await
        .0
}

/// One client connection (keep-alive: several requests may be sent in turn).
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub async fn connect(port: u16) -> Conn {
        Conn {
            stream: TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect"),
            buf: Vec::new(),
        }
    }

    pub async fn send_head_and_body(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
        let mut has_len = false;
        for (k, v) in headers {
            has_len |= k.eq_ignore_ascii_case("content-length")
                || k.eq_ignore_ascii_case("transfer-encoding");
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if !has_len && (method != "GET" || !body.is_empty()) {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        self.stream.write_all(head.as_bytes()).await.unwrap();
        // Large bodies go out in pieces, as real clients send them.
        for piece in body.chunks(64 * 1024) {
            if self.stream.write_all(piece).await.is_err() {
                break; // the gateway may refuse early (413)
            }
        }
    }

    /// Sends a request and reads the whole response; the connection comes back for reuse.
    pub async fn send(
        mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (Response, Conn) {
        self.send_head_and_body(method, path, headers, body).await;
        let mut s = self.read_streaming().await;
        let body = s.read_to_end().await;
        let resp = Response {
            status: s.status,
            headers: s.headers.clone(),
            body,
        };
        (resp, s.conn)
    }

    async fn fill(&mut self) -> bool {
        let mut tmp = [0u8; 16384];
        match tokio::time::timeout(Duration::from_secs(60), self.stream.read(&mut tmp)).await {
            Ok(Ok(0)) | Ok(Err(_)) => false,
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&tmp[..n]);
                true
            }
            Err(_) => panic!("client read timed out after 60s"),
        }
    }

    /// Reads a response head; the body is read through the returned handle.
    pub async fn read_streaming(mut self) -> StreamingResponse {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut headers);
            if let Ok(httparse::Status::Complete(n)) = resp.parse(&self.buf) {
                let status = resp.code.unwrap();
                let headers: Vec<(String, String)> = resp
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_string(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                self.buf.drain(..n);
                let find = |name: &str| {
                    headers
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(name))
                        .map(|(_, v)| v.clone())
                };
                let framing = if find("transfer-encoding")
                    .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
                {
                    Framing::Chunked
                } else if let Some(len) = find("content-length") {
                    Framing::Length(len.trim().parse().unwrap())
                } else {
                    Framing::Close
                };
                return StreamingResponse {
                    status,
                    headers,
                    conn: self,
                    framing,
                    done: false,
                    started: Instant::now(),
                };
            }
            if !self.fill().await {
                panic!(
                    "connection closed before a response head: {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
            }
        }
    }
}

enum Framing {
    Length(usize),
    Chunked,
    Close,
}

pub struct StreamingResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    conn: Conn,
    framing: Framing,
    done: bool,
    pub started: Instant,
}

impl StreamingResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The next piece of body as it arrives (`None` at the end).
    pub async fn next_chunk(&mut self) -> Option<Vec<u8>> {
        if self.done {
            return None;
        }
        match self.framing {
            Framing::Length(0) => {
                self.done = true;
                None
            }
            Framing::Length(ref mut left) => {
                if self.conn.buf.is_empty() && !self.conn.fill().await {
                    panic!("connection closed with {left} body bytes missing");
                }
                let n = (*left).min(self.conn.buf.len());
                *left -= n;
                Some(self.conn.buf.drain(..n).collect())
            }
            Framing::Close => {
                if self.conn.buf.is_empty() && !self.conn.fill().await {
                    self.done = true;
                    return None;
                }
                Some(std::mem::take(&mut self.conn.buf))
            }
            Framing::Chunked => loop {
                if let Some(pos) = self.conn.buf.windows(2).position(|w| w == b"\r\n") {
                    let size_line = String::from_utf8_lossy(&self.conn.buf[..pos]).into_owned();
                    let size =
                        usize::from_str_radix(size_line.split(';').next().unwrap().trim(), 16)
                            .unwrap_or_else(|_| panic!("bad chunk size line {size_line:?}"));
                    if self.conn.buf.len() >= pos + 2 + size + 2 {
                        let data: Vec<u8> = self.conn.buf[pos + 2..pos + 2 + size].to_vec();
                        self.conn.buf.drain(..pos + 2 + size + 2);
                        if size == 0 {
                            self.done = true;
                            return None;
                        }
                        return Some(data);
                    }
                }
                if !self.conn.fill().await {
                    panic!(
                        "stream closed without the terminating chunk (got so far: {:?})",
                        String::from_utf8_lossy(&self.conn.buf)
                    );
                }
            },
        }
    }

    pub async fn read_to_end(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(c) = self.next_chunk().await {
            out.extend_from_slice(&c);
        }
        out
    }

    pub async fn into_response(mut self) -> Response {
        let body = self.read_to_end().await;
        Response {
            status: self.status,
            headers: self.headers.clone(),
            body,
        }
    }

    /// Drops the connection (a client hanging up).
    pub fn hang_up(self) {}
}

// ---------------------------------------------------------------------------------------------
// Mock upstreams.

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "upstream got non-JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// What a mock upstream does with one request.
#[derive(Clone)]
pub enum Reply {
    /// Status, headers, body pieces each written after its delay. With `finish: false` the
    /// connection is closed after the last piece without ending the body (a cut stream).
    Parts {
        status: u16,
        headers: Vec<(String, String)>,
        parts: Vec<(Duration, Vec<u8>)>,
        chunked: bool,
        finish: bool,
    },
    /// Never answers (the connection stays open).
    Hang,
    /// Closes the connection without answering.
    Reset,
}

impl Reply {
    pub fn json(status: u16, v: serde_json::Value) -> Reply {
        Reply::bytes(status, "application/json", v.to_string().into_bytes())
    }

    pub fn bytes(status: u16, content_type: &str, body: Vec<u8>) -> Reply {
        Reply::Parts {
            status,
            headers: vec![("content-type".into(), content_type.into())],
            parts: vec![(Duration::ZERO, body)],
            chunked: false,
            finish: true,
        }
    }

    /// A chunked streaming body cut into pieces of `piece` bytes (awkward boundaries on purpose).
    pub fn stream(content_type: &str, body: &[u8], piece: usize, delay: Duration) -> Reply {
        Reply::Parts {
            status: 200,
            headers: vec![("content-type".into(), content_type.into())],
            parts: body
                .chunks(piece.max(1))
                .map(|c| (delay, c.to_vec()))
                .collect(),
            chunked: true,
            finish: true,
        }
    }

    /// A streaming body split at exactly these byte offsets.
    pub fn stream_split(
        content_type: &str,
        body: &[u8],
        splits: &[usize],
        delay: Duration,
    ) -> Reply {
        let mut parts = Vec::new();
        let mut start = 0;
        for &s in splits.iter().chain(std::iter::once(&body.len())) {
            if s > start {
                parts.push((delay, body[start..s].to_vec()));
                start = s;
            }
        }
        Reply::Parts {
            status: 200,
            headers: vec![("content-type".into(), content_type.into())],
            parts,
            chunked: true,
            finish: true,
        }
    }

    pub fn with_header(mut self, k: &str, v: &str) -> Reply {
        if let Reply::Parts { headers, .. } = &mut self {
            headers.push((k.to_string(), v.to_string()));
        }
        self
    }

    /// Leaves the body unfinished and closes the connection after the last piece.
    pub fn cut(mut self) -> Reply {
        if let Reply::Parts { finish, .. } = &mut self {
            *finish = false;
        }
        self
    }

    /// Waits `d` before the first byte.
    pub fn delayed(mut self, d: Duration) -> Reply {
        if let Reply::Parts { parts, .. } = &mut self {
            if let Some(p) = parts.first_mut() {
                p.0 += d;
            } else {
                parts.push((d, Vec::new()));
            }
        }
        self
    }
}

type Handler = dyn Fn(&Recorded) -> Reply + Send + Sync;

pub struct MockUpstream {
    pub port: u16,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    pub connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl MockUpstream {
    pub async fn start(
        handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
    ) -> MockUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let handler: Arc<Handler> = Arc::new(handler);
        let (reqs, conns) = (requests.clone(), connections.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    break;
                };
                conns.fetch_add(1, Ordering::Relaxed);
                let (handler, reqs) = (handler.clone(), reqs.clone());
                tokio::spawn(async move {
                    let _ = serve_conn(sock, handler, reqs).await;
                });
            }
        });
        MockUpstream {
            port,
            requests,
            connections,
            task,
        }
    }

    /// The same mock behind TLS (HTTP/1.1 via ALPN) with the given PEM certificate chain and key.
    pub async fn start_tls(
        cert_pem: &std::path::Path,
        key_pem: &std::path::Path,
        handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
    ) -> MockUpstream {
        use pingora_core::tls::{
            install_default_crypto_provider, load_certs_and_key_files, ServerConfig, TlsAcceptor,
        };
        install_default_crypto_provider();
        let (certs, key) =
            load_certs_and_key_files(cert_pem.to_str().unwrap(), key_pem.to_str().unwrap())
                .unwrap()
                .expect("cert and key");
        let mut config = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let handler: Arc<Handler> = Arc::new(handler);
        let (reqs, conns) = (requests.clone(), connections.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    break;
                };
                conns.fetch_add(1, Ordering::Relaxed);
                let (handler, reqs, acceptor) = (handler.clone(), reqs.clone(), acceptor.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(sock).await {
                        let _ = serve_conn(tls, handler, reqs).await;
                    }
                });
            }
        });
        MockUpstream {
            port,
            requests,
            connections,
            task,
        }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    pub fn last(&self) -> Recorded {
        self.requests()
            .pop()
            .expect("the upstream received no request")
    }

    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_conn<S>(
    mut sock: S,
    handler: Arc<Handler>,
    reqs: Arc<Mutex<Vec<Recorded>>>,
) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut buf = Vec::new();
    loop {
        // Read a request head.
        let (rec, consumed) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut headers);
            if let Ok(httparse::Status::Complete(n)) = req.parse(&buf) {
                let rec = Recorded {
                    method: req.method.unwrap_or("").to_string(),
                    path: req.path.unwrap_or("").to_string(),
                    headers: req
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_string(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect(),
                    body: Vec::new(),
                };
                break (rec, n);
            }
            let mut tmp = [0u8; 65536];
            let n = sock.read(&mut tmp).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&tmp[..n]);
        };
        buf.drain(..consumed);
        let mut rec = rec;
        let len: usize = rec
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < len {
            let mut tmp = vec![0u8; 1 << 20];
            let n = sock.read(&mut tmp).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&tmp[..n]);
        }
        rec.body = buf.drain(..len).collect();
        reqs.lock().unwrap().push(rec.clone());
        match handler(&rec) {
            Reply::Hang => {
                // Hold the connection open until the peer goes away.
                let mut tmp = [0u8; 1024];
                while sock.read(&mut tmp).await? > 0 {}
                return Ok(());
            }
            Reply::Reset => return Ok(()),
            Reply::Parts {
                status,
                headers,
                parts,
                chunked,
                finish,
            } => {
                let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
                for (k, v) in &headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                if chunked {
                    head.push_str("transfer-encoding: chunked\r\n");
                } else {
                    let total: usize = parts.iter().map(|p| p.1.len()).sum();
                    head.push_str(&format!("content-length: {total}\r\n"));
                }
                head.push_str("\r\n");
                sock.write_all(head.as_bytes()).await?;
                for (delay, data) in &parts {
                    if !delay.is_zero() {
                        tokio::time::sleep(*delay).await;
                    }
                    if data.is_empty() {
                        continue;
                    }
                    if chunked {
                        sock.write_all(format!("{:x}\r\n", data.len()).as_bytes())
                            .await?;
                        sock.write_all(data).await?;
                        sock.write_all(b"\r\n").await?;
                    } else {
                        sock.write_all(data).await?;
                    }
                    sock.flush().await?;
                }
                if !finish {
                    let _ = sock.shutdown().await;
                    return Ok(());
                }
                if chunked {
                    sock.write_all(b"0\r\n\r\n").await?;
                }
            }
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// A blocking read of a whole file, for assertions on logs.
pub fn read_file(p: &std::path::Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(p) {
        let _ = f.read_to_string(&mut s);
    }
    s
}

/// OpenAI-format fixtures for mock upstreams.
pub mod openai {
    use serde_json::json;

    pub fn completion(content: &str) -> serde_json::Value {
        json!({
            "id": "chatcmpl-upstream", "object": "chat.completion", "created": 1700000000,
            "model": "gpt-4o-2024-08-06", "system_fingerprint": "fp_1",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": null},
                         "logprobs": null, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
        })
    }

    /// An OpenAI SSE body streaming `words`, with the usage chunk (as sent when
    /// `stream_options.include_usage` is set) and `[DONE]`.
    pub fn sse(words: &[&str], with_usage: bool) -> Vec<u8> {
        let mut out = String::new();
        let chunk = |delta: serde_json::Value, finish: serde_json::Value| {
            json!({"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1700000000,
                   "model": "gpt-4o", "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
        };
        out.push_str(&format!(
            "data: {}\n\n",
            chunk(json!({"role": "assistant", "content": ""}), json!(null))
        ));
        for w in words {
            out.push_str(&format!(
                "data: {}\n\n",
                chunk(json!({"content": w}), json!(null))
            ));
        }
        out.push_str(&format!("data: {}\n\n", chunk(json!({}), json!("stop"))));
        if with_usage {
            out.push_str(&format!(
                "data: {}\n\n",
                json!({"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1700000000, "model": "gpt-4o",
                       "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": words.len(), "total_tokens": 5 + words.len()}})
            ));
        }
        out.push_str("data: [DONE]\n\n");
        out.into_bytes()
    }

    pub fn embeddings(n: usize) -> serde_json::Value {
        let data: Vec<_> = (0..n)
            .map(|i| json!({"object": "embedding", "index": i, "embedding": [0.1, 0.2, i as f64]}))
            .collect();
        json!({"object": "list", "data": data, "model": "text-embedding-3-small",
               "usage": {"prompt_tokens": 4, "total_tokens": 4}})
    }
}
