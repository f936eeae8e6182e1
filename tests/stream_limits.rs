//! Upstream streams whose events never end, through the real gateway: an OpenAI-compatible SSE
//! upstream sending `data:` lines with no blank line, and an Ollama NDJSON upstream sending
//! bytes with no newline, each forever. The gateway must cut the stream at
//! `switchboard.max_stream_event_bytes` (a 502 before the first byte, an error event after it),
//! close the upstream connection, and count it in `/metrics`, instead of buffering without end.

mod support;

use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The bound the gateway runs with in these tests.
const BOUND: usize = 256 * 1024;
/// The mock gives up after this much, so a gateway that buffers fails the test instead of
/// eating the machine's memory.
const MOCK_GIVES_UP_AFTER: u64 = 64 * BOUND as u64;

/// An upstream that answers every request with 200, `prefix`, then `filler` repeated forever,
/// until the peer closes the connection.
struct EndlessUpstream {
    port: u16,
    /// A write failed: the gateway closed the connection.
    closed: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl EndlessUpstream {
    async fn start(content_type: &'static str, prefix: Vec<u8>, filler: Vec<u8>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let closed = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (c, s) = (closed.clone(), sent.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let (closed, sent, prefix, filler) =
                    (c.clone(), s.clone(), prefix.clone(), filler.clone());
                tokio::spawn(async move {
                    read_request(&mut sock).await;
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ntransfer-encoding: chunked\r\n\r\n"
                    );
                    let mut result = sock.write_all(head.as_bytes()).await;
                    let mut piece = prefix;
                    while result.is_ok() && sent.load(Ordering::Relaxed) < MOCK_GIVES_UP_AFTER {
                        // An empty chunk would end the body.
                        if !piece.is_empty() {
                            let mut chunk = format!("{:x}\r\n", piece.len()).into_bytes();
                            chunk.extend_from_slice(&piece);
                            chunk.extend_from_slice(b"\r\n");
                            result = sock.write_all(&chunk).await;
                            sent.fetch_add(piece.len() as u64, Ordering::Relaxed);
                        }
                        piece = filler.clone();
                    }
                    if result.is_err() {
                        closed.store(true, Ordering::Relaxed);
                    }
                });
            }
        });
        EndlessUpstream {
            port,
            closed,
            sent,
            task,
        }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Polls until a write to the gateway failed; panics after `within`.
    async fn wait_closed(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.closed.load(Ordering::Relaxed) {
            assert!(
                Instant::now() < deadline,
                "the gateway kept reading the endless stream ({} bytes sent)",
                self.sent.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for EndlessUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one request head and its Content-Length body.
async fn read_request(sock: &mut tokio::net::TcpStream) {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        match sock.read(&mut tmp).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        match sock.read(&mut tmp).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
}

fn config(model: &str, base: &str) -> String {
    config_with_bound(model, base, BOUND, &temp_dir())
}

fn config_with_bound(model: &str, base: &str, bound: usize, dir: &std::path::Path) -> String {
    format!(
        r#"
model_list:
  - model_name: m
    litellm_params:
      model: {model}
      api_base: {base}
      api_key: k
      stream_timeout: 30
router_settings:
  num_retries: 0
switchboard:
  threads: 2
  grace_period_seconds: 0
  graceful_shutdown_timeout_seconds: 5
  pid_file: {d}/sb.pid
  upgrade_sock: {d}/sb.sock
  max_stream_event_bytes: {bound}
"#,
        d = dir.display()
    )
}

fn chat() -> serde_json::Value {
    json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]})
}

/// The value of `switchboard_stream_event_too_large_total{framing=...}` in `/metrics`.
async fn too_large_count(gw: &Gateway, framing: &str) -> u64 {
    let metrics = gw.get("/metrics", &[]).await.text();
    let series = format!("switchboard_stream_event_too_large_total{{framing=\"{framing}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .unwrap_or_else(|| panic!("no {series} in /metrics"))
        .trim()
        .parse()
        .unwrap()
}

/// Before any byte reached the client: a 502 that names the setting.
async fn expect_502(gw: &Gateway, upstream: &EndlessUpstream) {
    let started = Instant::now();
    let resp = gw.post("/v1/chat/completions", &chat()).await;
    let err = resp.expect_error(502);
    let message = err["message"].as_str().unwrap_or_default();
    assert!(message.contains("max_stream_event_bytes"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    upstream.wait_closed(Duration::from_secs(10)).await;
    assert!(upstream.sent.load(Ordering::Relaxed) < MOCK_GIVES_UP_AFTER);
}

/// After the first chunk reached the client: the stream ends with an error event and [DONE].
async fn expect_error_event(gw: &Gateway, upstream: &EndlessUpstream, first_text: &str) {
    let resp = gw
        .post_stream("/v1/chat/completions", &chat())
        .await
        .into_response()
        .await;
    assert_eq!(resp.status, 200);
    let events = resp.sse_data();
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    let error: serde_json::Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    let message = error["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("max_stream_event_bytes"), "{events:?}");
    let text: String = events[..events.len() - 2]
        .iter()
        .filter_map(|e| serde_json::from_str::<serde_json::Value>(e).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(String::from)
        })
        .collect();
    assert_eq!(text, first_text);
    upstream.wait_closed(Duration::from_secs(10)).await;
}

fn openai_chunk(text: &str) -> String {
    let chunk = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]});
    format!("data: {chunk}\n\n")
}

#[tokio::test]
async fn endless_sse_data_lines_are_cut_with_a_502() {
    let upstream = EndlessUpstream::start(
        "text/event-stream",
        b"data: {\"x\":".to_vec(),
        b"data: 0123456789abcdef0123456789abcdef\n".to_vec(),
    )
    .await;
    let gw = Gateway::start(&config("openai/gpt-4o", &upstream.base()));
    expect_502(&gw, &upstream).await;
    assert!(too_large_count(&gw, "sse").await >= 1);
}

#[tokio::test]
async fn endless_sse_data_lines_mid_stream_end_with_an_error_event() {
    let upstream = EndlessUpstream::start(
        "text/event-stream",
        openai_chunk("Hello").into_bytes(),
        b"data: 0123456789abcdef0123456789abcdef\n".to_vec(),
    )
    .await;
    let gw = Gateway::start(&config("openai/gpt-4o", &upstream.base()));
    expect_error_event(&gw, &upstream, "Hello").await;
    assert!(too_large_count(&gw, "sse").await >= 1);
}

#[tokio::test]
async fn endless_ndjson_line_is_cut_with_a_502() {
    let upstream = EndlessUpstream::start(
        "application/x-ndjson",
        b"{\"message\":{\"role\":\"assistant\",\"content\":\"".to_vec(),
        vec![b'x'; 4096],
    )
    .await;
    let gw = Gateway::start(&config("ollama_chat/llama3.1", &upstream.base()));
    expect_502(&gw, &upstream).await;
    assert!(too_large_count(&gw, "ndjson").await >= 1);
}

#[tokio::test]
async fn endless_ndjson_line_mid_stream_ends_with_an_error_event() {
    let first = "{\"model\":\"llama3.1\",\"message\":{\"role\":\"assistant\",\"content\":\"Hi\"},\"done\":false}\n";
    let upstream = EndlessUpstream::start(
        "application/x-ndjson",
        first.as_bytes().to_vec(),
        vec![b'x'; 4096],
    )
    .await;
    let gw = Gateway::start(&config("ollama_chat/llama3.1", &upstream.base()));
    expect_error_event(&gw, &upstream, "Hi").await;
    assert!(too_large_count(&gw, "ndjson").await >= 1);
}

#[tokio::test]
async fn a_reload_changes_the_bound_for_new_streams() {
    let upstream =
        EndlessUpstream::start("application/x-ndjson", Vec::new(), vec![b'x'; 4096]).await;
    let dir = temp_dir();
    let model = "ollama_chat/llama3.1";
    let gw = Gateway::start(&config_with_bound(model, &upstream.base(), BOUND, &dir));
    let message = |r: Response| {
        r.expect_error(502)["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let before = message(gw.post("/v1/chat/completions", &chat()).await);
    assert!(before.contains("256 KiB"), "{before}");

    std::fs::write(
        &gw.config_path,
        config_with_bound(model, &upstream.base(), 64 * 1024, &dir),
    )
    .unwrap();
    gw.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gw
        .get("/metrics", &[])
        .await
        .text()
        .contains("\nswitchboard_config_generation 2")
    {
        assert!(Instant::now() < deadline, "the reload did not happen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after = message(gw.post("/v1/chat/completions", &chat()).await);
    assert!(after.contains("64 KiB"), "{after}");
}
