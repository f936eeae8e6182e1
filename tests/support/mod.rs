//! Test support: the real gateway binary started on a config, mock upstreams on 127.0.0.1 that
//! reply with exact bytes (split anywhere, delayed, hung, reset, cut mid-stream), a small
//! HTTP/1.1 client that reads chunked streams chunk by chunk with arrival times, and helpers that
//! wait for a condition (a log line, a metric, a listener) instead of sleeping.
//!
//! Ports never race. Mock upstreams bind port 0 and keep their listener. A gateway's port (and a
//! port that must refuse connections) is leased by [`reserve_port`]: taken from below the
//! kernel's ephemeral range, so no port-0 bind and no outgoing connection can get it, and claimed
//! across processes (parallel test binaries, other test runs on the machine) by an exclusive lock
//! on a file per port, held while the port is in use. `Gateway::start` then checks that the
//! process listening on the port is its own child, and retries on another port if the bind lost
//! to a process outside this scheme.
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

// ---------------------------------------------------------------------------------------------
// Ports.

/// A port reserved for this process until dropped: nothing else following this scheme takes it,
/// and the kernel never hands it out for port 0 or an outgoing connection.
#[derive(Debug)]
pub struct PortLease {
    pub port: u16,
    _lock: std::fs::File,
}

/// Ports below the kernel's ephemeral range (`ip_local_port_range`), where nothing is assigned
/// automatically.
fn reservable_ports() -> std::ops::Range<u16> {
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|v| v.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        });
    match ephemeral {
        Some((low, _)) if low > 12_000 => 10_000..low,
        Some((_, high)) if high < 60_000 => high + 1..65_000,
        _ => 20_000..32_000,
    }
}

/// Leases a free port (see the module doc).
pub fn reserve_port() -> PortLease {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let range = reservable_ports();
    let span = (range.end - range.start) as usize;
    let lock_dir = std::env::temp_dir().join("switchboard-test-ports");
    std::fs::create_dir_all(&lock_dir).unwrap();
    // Processes start at different places so that they rarely contend for the same locks.
    let start = std::process::id() as usize * 7919;
    for _ in 0..span {
        let port = range.start + ((start + NEXT.fetch_add(1, Ordering::Relaxed)) % span) as u16;
        let Ok(lock) = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(lock_dir.join(format!("{port}.lock")))
        else {
            continue;
        };
        if lock.try_lock().is_err() {
            continue; // leased by another test (of this process or another)
        }
        // Something outside the scheme may listen there.
        if StdListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        return PortLease { port, _lock: lock };
    }
    panic!("no free port in {range:?}");
}

/// A port nothing listens on, reserved for the rest of the process: connecting to it is
/// refused (see [`reserve_port`]).
pub fn free_port() -> u16 {
    static HELD: Mutex<Vec<PortLease>> = Mutex::new(Vec::new());
    let lease = reserve_port();
    let port = lease.port;
    HELD.lock().unwrap().push(lease);
    port
}

/// Whether the socket listening on 127.0.0.1:`port` belongs to process `pid` (Linux `/proc`;
/// `true` where that cannot be read).
fn listener_belongs_to(port: u16, pid: u32) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return true;
    };
    let local = format!("0100007F:{port:04X}");
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // local_address, st (0A = LISTEN), inode
            (f.len() > 9 && f[1] == local && f[3] == "0A").then(|| format!("socket:[{}]", f[9]))
        })
        .collect();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .is_ok_and(|target| inodes.iter().any(|i| target.as_os_str() == i.as_str()))
    })
}

// ---------------------------------------------------------------------------------------------
// Waiting for a condition.

/// How often the wait helpers poll.
pub const POLL: Duration = Duration::from_millis(10);

/// Polls `cond` until it holds; returns whether it did within `timeout`. Never sleeps longer
/// than needed: use it (with an assertion on the result) instead of a fixed sleep.
pub async fn wait_until(mut cond: impl FnMut() -> bool, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// [`wait_until`] for a condition that has to await (a request to the gateway, say).
pub async fn wait_until_async(mut cond: impl AsyncFnMut() -> bool, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The value of the first series of metric `name` (exactly that name) whose labels include
/// every one of `labels` (each like `model_id="a"`), in a Prometheus text scrape.
pub fn metric_value(scrape: &str, name: &str, labels: &[&str]) -> Option<f64> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
                && labels.iter().all(|x| l.contains(x))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
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

/// Waits until `child` (not another process that took the port) accepts connections on `port`.
/// `Err(None)`: the port is in use by someone else (Pingora retries such a bind for a while
/// instead of exiting), so try another; `Err(Some(why))`: the gateway failed.
/// The request id of the harness's own readiness probes, left out of [`Gateway::access_log`].
const HARNESS_PROBE_ID: &str = "switchboard-test-harness-probe";

/// Readiness says `starting` until the gateway listens for SIGHUP (a signal sent before that
/// would be lost). Anything else, including a listener that does not speak plaintext HTTP
/// (TLS), counts as started.
fn still_starting(port: u16) -> bool {
    use std::io::Write;
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(format!("GET /health/readiness HTTP/1.1\r\nHost: t\r\nx-request-id: {HARNESS_PROBE_ID}\r\nConnection: close\r\n\r\n").as_bytes())
        .is_err()
    {
        return false;
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).contains("\"status\":\"starting\"")
}

fn wait_ready(child: &mut Child, port: u16, dir: &std::path::Path) -> Result<(), Option<String>> {
    let stderr = || read_file(&dir.join("stderr.log"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            if stderr().contains("address in use") {
                return Err(None);
            }
            return Err(Some(format!(
                "switchboard exited with {status}: {}",
                stderr()
            )));
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            && listener_belongs_to(port, child.id())
            && !still_starting(port)
        {
            return Ok(());
        }
        if stderr().contains("is in use, will try again") {
            return Err(None);
        }
        std::thread::sleep(POLL);
    }
    Err(Some(format!(
        "switchboard did not start listening: {}",
        stderr()
    )))
}

pub struct Gateway {
    pub port: u16,
    pub dir: PathBuf,
    pub config_path: PathBuf,
    child: Child,
    /// Shared with an upgraded successor on the same port.
    lease: Arc<PortLease>,
}

impl Gateway {
    /// Starts the gateway on `yaml` (a `switchboard:` section with pid/upgrade paths in a temp dir
    /// is appended unless the config has one) and waits until it answers.
    pub fn start(yaml: &str) -> Gateway {
        Self::start_with_env(yaml, &[])
    }

    pub fn start_with_env(yaml: &str, env: &[(&str, &str)]) -> Gateway {
        let dir = temp_dir();
        let mut yaml = yaml.to_string();
        if !yaml.contains("\nswitchboard:") && !yaml.starts_with("switchboard:") {
            yaml.push_str(&format!(
                "\nswitchboard:\n  threads: 2\n  grace_period_seconds: 0\n  graceful_shutdown_timeout_seconds: 5\n  pid_file: {d}/sb.pid\n  upgrade_sock: {d}/sb.sock\n",
                d = dir.display()
            ));
        }
        let config_path = dir.join("config.yaml");
        std::fs::write(&config_path, yaml).unwrap();
        for _attempt in 0..5 {
            let lease = reserve_port();
            let stdout = std::fs::File::create(dir.join("stdout.log")).unwrap();
            let stderr = std::fs::File::create(dir.join("stderr.log")).unwrap();
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchboard"));
            cmd.arg("--config")
                .arg(&config_path)
                .arg("--host")
                .arg("127.0.0.1")
                .arg("--port")
                .arg(lease.port.to_string())
                .stdout(stdout)
                .stderr(stderr);
            // The embedded key store (with a master key) lives in the test's directory.
            cmd.env("STATE_DIRECTORY", &dir);
            for (k, v) in env {
                cmd.env(k, v);
            }
            let mut child = cmd.spawn().expect("spawn switchboard");
            match wait_ready(&mut child, lease.port, &dir) {
                Ok(()) => {
                    return Gateway {
                        port: lease.port,
                        dir,
                        config_path,
                        child,
                        lease: Arc::new(lease),
                    }
                }
                Err(failure) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    if let Some(reason) = failure {
                        let _ = std::fs::remove_dir_all(&dir);
                        panic!("{reason}");
                    }
                    // The port was taken by a process outside the lease scheme: another one.
                }
            }
        }
        panic!("switchboard could not bind a port in 5 attempts");
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
            .env("STATE_DIRECTORY", &self.dir)
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("spawn switchboard --upgrade");
        Gateway {
            port: self.port,
            dir,
            config_path: self.config_path.clone(),
            child,
            lease: self.lease.clone(),
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
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|l| l["request_id"] != HARNESS_PROBE_ID)
            .collect()
    }

    /// Waits (10 s at most) for the access-log line that `pred` accepts and returns it. Access
    /// logging follows the response, so a test reads the log through this, not right away.
    pub async fn wait_for_log_line(
        &self,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let mut found = None;
        let ok = wait_until(
            || {
                found = self.access_log().into_iter().find(|l| pred(l));
                found.is_some()
            },
            Duration::from_secs(10),
        )
        .await;
        assert!(ok, "no such access-log line in: {}", self.stdout());
        found.unwrap()
    }

    /// Waits (10 s at most) for a diagnostics (stderr) line containing `needle`; returns it.
    pub async fn wait_for_stderr(&self, needle: &str) -> String {
        let mut found = None;
        let ok = wait_until(
            || {
                found = self
                    .stderr()
                    .lines()
                    .find(|l| l.contains(needle))
                    .map(str::to_string);
                found.is_some()
            },
            Duration::from_secs(10),
        )
        .await;
        assert!(ok, "no stderr line with {needle:?} in: {}", self.stderr());
        found.unwrap()
    }

    /// Scrapes `/metrics` until the series `name` with `labels` (see [`metric_value`]; a missing
    /// series counts as 0) satisfies `pred` (10 s at most); returns that scrape. Metrics are
    /// recorded just after the response is written, so a test reads them through this.
    pub async fn wait_for_metric(
        &self,
        name: &str,
        labels: &[&str],
        pred: impl Fn(f64) -> bool,
    ) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let last = self.get("/metrics", &[]).await.text();
            if pred(metric_value(&last, name, labels).unwrap_or(0.0)) {
                return last;
            }
            assert!(
                Instant::now() < deadline,
                "{name}{labels:?} never matched; last scrape:\n{last}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits (10 s at most) until connecting to the gateway's port is refused (its listeners
    /// closed); returns whether they did.
    pub async fn wait_not_listening(&self, timeout: Duration) -> bool {
        let port = self.port;
        wait_until(
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            timeout,
        )
        .await
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

    /// Waits for the process to exit without blocking the test's runtime (mock upstreams and
    /// client tasks keep running meanwhile); returns its status if it exited within `timeout`.
    pub async fn exited(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut status = None;
        wait_until(
            || {
                status = self.child.try_wait().unwrap();
                status.is_some()
            },
            timeout,
        )
        .await;
        status
    }

    /// SIGTERM, then waits (up to 20 s) for the process to exit, and asserts it exited 0.
    pub async fn terminate(&mut self) {
        self.signal("TERM");
        let status = self
            .exited(Duration::from_secs(20))
            .await
            .expect("exits after SIGTERM");
        assert!(status.success(), "{status:?}");
    }

    /// Waits for the process to exit; returns whether it did within `timeout`. This blocks the
    /// thread: in an async test, where a mock upstream or client task on the same runtime may
    /// have to make progress for the process to finish, use [`Gateway::exited`].
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

    /// POSTs JSON with `Authorization: Bearer {bearer}` (a master or virtual key): admin routes
    /// and calls made as a key.
    pub async fn post_as(&self, bearer: &str, path: &str, body: &serde_json::Value) -> Response {
        let auth = format!("Bearer {bearer}");
        let headers = [
            ("content-type", "application/json"),
            ("authorization", auth.as_str()),
        ];
        request(
            self.port,
            "POST",
            path,
            &headers,
            body.to_string().as_bytes(),
        )
        .await
    }

    /// GETs with `Authorization: Bearer {bearer}`.
    pub async fn get_as(&self, bearer: &str, path: &str) -> Response {
        let auth = format!("Bearer {bearer}");
        request(
            self.port,
            "GET",
            path,
            &[("authorization", auth.as_str())],
            b"",
        )
        .await
    }

    /// `/key/generate` as `master`; asserts a 200 and returns the new key.
    pub async fn generate_key(&self, master: &str, body: serde_json::Value) -> String {
        let r = self.post_as(master, "/key/generate", &body).await;
        assert_eq!(r.status, 200, "/key/generate: {}", r.text());
        r.json()["key"].as_str().expect("a key").to_string()
    }

    /// `/v1/chat/completions` with one user message "hi" to `model`, as `key`.
    pub async fn chat_as(&self, key: &str, model: &str) -> Response {
        let body =
            serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
        self.post_as(key, "/v1/chat/completions", &body).await
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

    /// Asserts a refusal by a key's `rpm_limit` of `limit`, whatever the error body's shape:
    /// 429, a Retry-After in seconds within the minute, and LiteLLM's rate-limit headers.
    pub fn expect_rpm_refusal(&self, limit: u64) {
        assert_eq!(self.status, 429, "body: {}", self.text());
        let retry: u64 = self
            .header("retry-after")
            .expect("a Retry-After header")
            .parse()
            .expect("Retry-After in seconds");
        assert!((1..=61).contains(&retry), "retry-after {retry}");
        assert_eq!(
            self.header("x-ratelimit-limit-requests"),
            Some(limit.to_string().as_str())
        );
        assert_eq!(self.header("x-ratelimit-remaining-requests"), Some("0"));
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

/// What the gateway sent back on one raw connection.
pub struct RawExchange {
    /// Everything read, responses and all.
    pub bytes: Vec<u8>,
    /// Whether the gateway closed the connection (rather than the read timing out).
    pub closed: bool,
}

impl RawExchange {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// The status codes of every response head in the bytes, in order.
    pub fn statuses(&self) -> Vec<u16> {
        self.text()
            .match_indices("HTTP/1.")
            .filter_map(|(i, _)| {
                let line = &self.text()[i..];
                let code = line.get(9..12)?;
                line.get(8..9)
                    .filter(|sp| *sp == " ")
                    .and(code.parse().ok())
            })
            .collect()
    }

    /// The body of the first response (after the blank line; up to any next response).
    pub fn first_body(&self) -> String {
        let text = self.text();
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        body.split("HTTP/1.").next().unwrap_or("").to_string()
    }
}

/// Writes `bytes` on a new connection exactly as given and reads until the gateway closes it or
/// `quiet` passes with nothing more arriving: for requests the client helpers cannot send
/// (malformed framing, odd methods, HEAD).
pub async fn raw_exchange(port: u16, bytes: &[u8], quiet: Duration) -> RawExchange {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let _ = stream.write_all(bytes).await;
    let mut out = Vec::new();
    let mut tmp = [0u8; 16384];
    loop {
        match tokio::time::timeout(quiet, stream.read(&mut tmp)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return RawExchange {
                    bytes: out,
                    closed: true,
                }
            }
            Ok(Ok(n)) => out.extend_from_slice(&tmp[..n]),
            Err(_) => {
                return RawExchange {
                    bytes: out,
                    closed: false,
                }
            }
        }
    }
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

    /// Writes `bytes` exactly as given (a request the other helpers cannot build); read the
    /// answer with [`Conn::read_streaming`].
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
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

    /// The whole response, and the connection back for the next request.
    pub async fn into_response_and_conn(mut self) -> (Response, Conn) {
        let body = self.read_to_end().await;
        let resp = Response {
            status: self.status,
            headers: self.headers.clone(),
            body,
        };
        (resp, self.conn)
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
        Self::start_with(handler, false).await
    }

    /// [`MockUpstream::start`] with TCP_NODELAY on its connections: a reply's head and body are
    /// separate writes, and without it Nagle may hold the body for the peer's delayed ACK
    /// (~40 ms) on some connections; for tests that compare latencies.
    pub async fn start_nodelay(
        handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
    ) -> MockUpstream {
        Self::start_with(handler, true).await
    }

    async fn start_with(
        handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
        nodelay: bool,
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
                if nodelay {
                    let _ = sock.set_nodelay(true);
                }
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

/// The Python interpreter for the official-SDK tests: `SWITCHBOARD_TEST_PYTHON`, else the venv
/// `.ci/setup` makes. Panics (never skips) when it cannot `import` every one of `modules`
/// (comma-separated, e.g. `"openai, h2"`): a missing SDK must not pass as a green test.
#[allow(dead_code)]
pub fn python_with(modules: &str) -> PathBuf {
    let python = std::env::var_os("SWITCHBOARD_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ci-venv/bin/python")
        });
    let ok = Command::new(&python)
        .args(["-c", &format!("import {modules}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "{} cannot import {modules}: run .ci/setup (or set SWITCHBOARD_TEST_PYTHON to a python that has them)",
        python.display()
    );
    python
}

/// Runs `tests/fixtures/openai_sdk_ingress.py` against the gateway on `port` with `args`
/// (`responses MODEL` or `completions MODEL`) and returns the JSON it prints of what the
/// OpenAI SDK saw; panics with its stderr when it fails.
#[allow(dead_code)]
pub async fn openai_sdk_ingress(port: u16, args: &[&str]) -> serde_json::Value {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/openai_sdk_ingress.py");
    let out = tokio::process::Command::new(python_with("openai"))
        .arg(&script)
        .arg(format!("http://127.0.0.1:{port}/v1"))
        .args(args)
        .output()
        .await
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{args:?}: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).expect("the script's JSON")
}
