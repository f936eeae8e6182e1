//! Downstream connection hardening, over raw TCP against the real gateway binary: stalled
//! readers, slow and oversized request heads, slow bodies, declared-but-unsent bodies, the
//! connection cap, HTTP/1.0 streams and pipelined requests; and the bounded Bedrock Titan
//! embeddings fan-out.

mod support;

use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Starts the gateway on `models` with these extra `switchboard:` settings.
fn start(models: &str, settings: &str) -> Gateway {
    let d = temp_dir();
    Gateway::start(&format!(
        "{models}\nswitchboard:\n  threads: 2\n  grace_period_seconds: 0\n  graceful_shutdown_timeout_seconds: 5\n  pid_file: {d}/sb.pid\n  upgrade_sock: {d}/sb.sock\n{settings}",
        d = d.display()
    ))
}

const MOCK_MODEL: &str =
    "model_list:\n  - model_name: m\n    litellm_params: {model: openai/gpt-4o, mock_response: \"Hi from the mock\"}\n";

async fn connect(port: u16) -> TcpStream {
    TcpStream::connect(("127.0.0.1", port)).await.unwrap()
}

/// Reads until the peer closes (or resets) the connection, or `limit` passes: what arrived,
/// and whether the connection ended.
async fn read_until_close(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match tokio::time::timeout_at(deadline.into(), s.read(&mut buf)).await {
            Err(_) => return (out, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

fn status_of(response: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(response);
    text.strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
}

fn chat_request(model: &str, stream: bool) -> String {
    let body =
        json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
            .to_string();
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn a_client_that_stops_reading_a_stream_frees_the_upstream_and_the_slot() {
    // One stream of ~8 MB: far more than the socket buffers between gateway and client hold.
    let word = "x".repeat(4000);
    let words: Vec<&str> = (0..2000).map(|_| word.as_str()).collect();
    let big = openai::sse(&words, false);
    let up = MockUpstream::start(move |req| {
        if req.json()["stream"] == true {
            Reply::stream("text/event-stream", &big, 64 * 1024, Duration::ZERO)
        } else {
            Reply::json(200, openai::completion("ok"))
        }
    })
    .await;
    let gw = start(
        &format!(
            "model_list:\n  - model_name: m\n    litellm_params: {{model: openai/gpt-4o, api_base: {}, api_key: k, max_parallel_requests: 1}}\n",
            up.base()
        ),
        "  client_write_timeout_seconds: 1\n",
    );
    // A client with a small receive window that reads nothing after sending its request.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut stalled = sock
        .connect(format!("127.0.0.1:{}", gw.port).parse().unwrap())
        .await
        .unwrap();
    stalled
        .write_all(chat_request("m", true).as_bytes())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while up.count() == 0 {
        assert!(
            Instant::now() < deadline,
            "the stream never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Its stream holds the only slot: others are turned away meanwhile...
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut saw_busy = false;
    loop {
        let r = gw
            .post(
                "/v1/chat/completions",
                &json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
            )
            .await;
        match r.status {
            200 => break,
            429 => saw_busy = true,
            s => panic!("unexpected {s}: {}", r.text()),
        }
        assert!(
            Instant::now() < deadline,
            "the stalled stream still holds its slot after 10s (client write timeout 1s)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        saw_busy,
        "the stalled stream should have held the slot for a while"
    );
    // ...and once the write timeout fired, the stream was cut: the client sees its end.
    let (_, closed) = read_until_close(&mut stalled, Duration::from_secs(10)).await;
    assert!(closed, "the stalled client's connection should be closed");
    let log = gw.access_log();
    assert!(
        log.iter()
            .any(|l| l["stream"] == true && l["client_disconnected"] == true),
        "{log:?}"
    );
}

#[tokio::test]
async fn a_request_head_sent_a_line_at_a_time_is_cut_off_at_the_header_deadline() {
    let gw = start(MOCK_MODEL, "  request_header_timeout_seconds: 1\n");
    let mut s = connect(gw.port).await;
    let began = Instant::now();
    s.write_all(b"GET /health/liveliness HTTP/1.1\r\n")
        .await
        .unwrap();
    // One header line every 200 ms, never finishing the head.
    let mut i = 0;
    let mut closed_at = None;
    while began.elapsed() < Duration::from_secs(6) {
        if s.write_all(format!("X-Slow-{i}: y\r\n").as_bytes())
            .await
            .is_err()
        {
            closed_at = Some(began.elapsed());
            break;
        }
        i += 1;
        let mut buf = [0u8; 4096];
        match tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
            Err(_) => continue,
            Ok(Ok(n)) if n > 0 => {
                assert_eq!(status_of(&buf[..n]), Some(408), "{:?}", &buf[..n]);
                let text = String::from_utf8_lossy(&buf[..n]);
                assert!(text.contains("request_header_timeout_seconds"), "{text}");
                let (_, closed) = read_until_close(&mut s, Duration::from_secs(2)).await;
                assert!(closed);
                closed_at = Some(began.elapsed());
                break;
            }
            Ok(_) => {
                closed_at = Some(began.elapsed());
                break;
            }
        }
    }
    let at = closed_at.expect("a head trickling in for 6s was never cut off");
    assert!(at < Duration::from_secs(3), "cut off only after {at:?}");
}

#[tokio::test]
async fn an_idle_new_connection_is_closed_at_the_header_deadline() {
    let gw = start(MOCK_MODEL, "  request_header_timeout_seconds: 1\n");
    let mut s = connect(gw.port).await;
    let (got, closed) = read_until_close(&mut s, Duration::from_secs(5)).await;
    assert!(closed, "a connection that sends nothing stays open");
    assert!(
        got.is_empty(),
        "nothing is answered to a connection that said nothing"
    );
    // A kept-alive connection is not cut off by the head deadline while idle between requests
    // (its keep-alive timeout governs that): a second request well after the first still works.
    let conn = Conn::connect(gw.port).await;
    let (r, conn) = conn.send("GET", "/health/liveliness", &[], b"").await;
    assert_eq!(r.status, 200);
    let idle_from = Instant::now();
    let mut probe = connect(gw.port).await;
    let (_, probe_closed) = read_until_close(&mut probe, Duration::from_secs(5)).await;
    assert!(probe_closed);
    assert!(idle_from.elapsed() >= Duration::from_secs(1));
    let (r, _) = conn.send("GET", "/health/liveliness", &[], b"").await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn an_oversized_request_head_is_refused_with_431() {
    let gw = start(MOCK_MODEL, "  max_request_header_kb: 8\n");
    // Just over the limit: refused with an OpenAI error, not read any further.
    let mut s = connect(gw.port).await;
    let head = format!(
        "GET /health/liveliness HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(9 * 1024)
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let (got, closed) = read_until_close(&mut s, Duration::from_secs(5)).await;
    assert!(closed);
    assert_eq!(
        status_of(&got),
        Some(431),
        "{}",
        String::from_utf8_lossy(&got)
    );
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("max_request_header_kb"), "{text}");
    // Under the limit: served.
    let (r, _) = Conn::connect(gw.port)
        .await
        .send(
            "GET",
            "/health/liveliness",
            &[("X-Fine", &"b".repeat(6 * 1024))],
            b"",
        )
        .await;
    assert_eq!(r.status, 200);
    // A 1 MB head (Pingora's own limit) never gets a 200.
    let mut s = connect(gw.port).await;
    let head = format!(
        "GET /health/liveliness HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(1000 * 1024)
    );
    let _ = s.write_all(head.as_bytes()).await;
    let (got, closed) = read_until_close(&mut s, Duration::from_secs(5)).await;
    assert!(closed);
    assert_ne!(status_of(&got), Some(200));
}

#[tokio::test]
async fn connections_past_max_connections_get_503_until_one_closes() {
    let gw = start(MOCK_MODEL, "  max_connections: 3\n");
    let mut held = Vec::new();
    for _ in 0..3 {
        let (r, conn) = Conn::connect(gw.port)
            .await
            .send("GET", "/health/liveliness", &[], b"")
            .await;
        assert_eq!(r.status, 200);
        held.push(conn);
    }
    let mut s = connect(gw.port).await;
    let (got, closed) = read_until_close(&mut s, Duration::from_secs(5)).await;
    assert!(closed);
    assert_eq!(
        status_of(&got),
        Some(503),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert!(String::from_utf8_lossy(&got).contains("max_connections"));
    // A connection that closes frees its place.
    held.pop();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut s = connect(gw.port).await;
        s.write_all(b"GET /health/liveliness HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let (got, _) = read_until_close(&mut s, Duration::from_secs(5)).await;
        if status_of(&got) == Some(200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the freed place was never reused"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_body_trickling_in_is_cut_off_at_the_total_body_deadline() {
    let gw = start(MOCK_MODEL, "  request_body_timeout_seconds: 1\n");
    let mut s = connect(gw.port).await;
    s.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n",
    )
    .await
    .unwrap();
    let began = Instant::now();
    let mut buf = [0u8; 4096];
    let got = loop {
        assert!(
            began.elapsed() < Duration::from_secs(6),
            "a body sent a byte every 100 ms was read for 6s"
        );
        if s.write_all(b" ").await.is_err() {
            break Vec::new();
        }
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
            break buf[..r.unwrap_or(0)].to_vec();
        }
    };
    assert!(
        began.elapsed() < Duration::from_secs(3),
        "{:?}",
        began.elapsed()
    );
    assert_eq!(
        status_of(&got),
        Some(408),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert!(String::from_utf8_lossy(&got).contains("request_body_timeout_seconds"));
}

/// The gateway's virtual memory size, in bytes.
fn vm_size(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmSize:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

#[tokio::test]
async fn a_declared_content_length_is_not_reserved_before_the_bytes_arrive() {
    let gw = start(MOCK_MODEL, "");
    let before = vm_size(gw.pid());
    // 20 bodies declared at 100 MB (the default limit), one byte sent each.
    let mut conns = Vec::new();
    for _ in 0..20 {
        let mut s = connect(gw.port).await;
        s.write_all(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 104857600\r\n\r\n{",
        )
        .await
        .unwrap();
        conns.push(s);
    }
    // Each is now waiting for body bytes; watch the address space for a while.
    let until = Instant::now() + Duration::from_millis(1500);
    let mut peak = before;
    while Instant::now() < until {
        peak = peak.max(vm_size(gw.pid()));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let grown = peak.saturating_sub(before);
    assert!(
        grown < 512 * 1024 * 1024,
        "20 one-byte bodies grew the address space by {} MB",
        grown / (1024 * 1024)
    );
    // The connections are live and still served when they finish (one checked).
    drop(conns);
    assert_eq!(
        gw.get("/health/liveliness", &[]).await.status,
        200,
        "gateway still serves"
    );
}

#[tokio::test]
async fn an_http10_stream_is_close_delimited_not_chunked() {
    let gw = start(MOCK_MODEL, "");
    let mut s = connect(gw.port).await;
    let body =
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]})
            .to_string();
    s.write_all(
        format!(
            "POST /v1/chat/completions HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let (got, closed) = read_until_close(&mut s, Duration::from_secs(10)).await;
    assert!(closed, "an HTTP/1.0 stream ends by closing the connection");
    let text = String::from_utf8_lossy(&got);
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(!lower.contains("transfer-encoding"), "{head}");
    assert!(!lower.contains("content-length"), "{head}");
    assert!(lower.contains("connection: close"), "{head}");
    // Raw SSE, no chunk-size lines.
    assert!(body.starts_with("data: {"), "{body}");
    assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
    assert_eq!(stream_text(&sse_chunks(body)), "Hi from the mock");
}

fn sse_chunks(body: &str) -> Vec<serde_json::Value> {
    sse_data(body)
        .into_iter()
        .filter(|d| d != "[DONE]")
        .map(|d| serde_json::from_str(&d).unwrap())
        .collect()
}

/// Reads exactly `n` complete responses (Content-Length framed) from `s`.
async fn read_responses(s: &mut TcpStream, n: usize) -> Vec<(u16, String)> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while out.len() < n {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(h)) = resp.parse(&buf) {
            let len: usize = resp
                .headers
                .iter()
                .find(|x| x.name.eq_ignore_ascii_case("content-length"))
                .map(|x| std::str::from_utf8(x.value).unwrap().parse().unwrap())
                .unwrap();
            if buf.len() >= h + len {
                let status = resp.code.unwrap();
                out.push((
                    status,
                    String::from_utf8_lossy(&buf[h..h + len]).into_owned(),
                ));
                buf.drain(..h + len);
                continue;
            }
        }
        let mut tmp = [0u8; 65536];
        match tokio::time::timeout_at(deadline.into(), s.read(&mut tmp)).await {
            Ok(Ok(k)) if k > 0 => buf.extend_from_slice(&tmp[..k]),
            other => panic!(
                "connection ended after {} of {n} responses ({other:?}): {:?}",
                out.len(),
                String::from_utf8_lossy(&buf)
            ),
        }
    }
    out
}

#[tokio::test]
async fn pipelined_requests_sent_together_are_answered_in_order() {
    let gw = start(MOCK_MODEL, "");
    let mut s = connect(gw.port).await;
    let both = format!(
        "{}GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n{}",
        chat_request("m", false),
        chat_request("nope", false)
    );
    s.write_all(both.as_bytes()).await.unwrap();
    let got = read_responses(&mut s, 3).await;
    assert_eq!(got[0].0, 200);
    assert!(got[0].1.contains("Hi from the mock"), "{}", got[0].1);
    assert_eq!(got[1].0, 200);
    assert!(got[1].1.contains("\"list\""), "{}", got[1].1);
    assert_eq!(got[2].0, 404, "{}", got[2].1);
}

#[tokio::test]
async fn a_request_pipelined_while_the_first_is_in_flight_is_answered_after_it() {
    let up = MockUpstream::start(|_| {
        Reply::json(200, openai::completion("slow answer")).delayed(Duration::from_millis(500))
    })
    .await;
    let gw = start(
        &format!(
            "model_list:\n  - model_name: m\n    litellm_params: {{model: openai/gpt-4o, api_base: {}, api_key: k}}\n",
            up.base()
        ),
        "",
    );
    let mut s = connect(gw.port).await;
    s.write_all(chat_request("m", false).as_bytes())
        .await
        .unwrap();
    // Wait until the first request reached the upstream, then send the second.
    let deadline = Instant::now() + Duration::from_secs(10);
    while up.count() == 0 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    s.write_all(b"GET /health/liveliness HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let got = read_responses(&mut s, 2).await;
    assert_eq!(got[0].0, 200);
    assert!(got[0].1.contains("slow answer"), "{}", got[0].1);
    assert_eq!(got[1].0, 200);
    assert!(got[1].1.contains("alive"), "{}", got[1].1);
}

fn titan_config(base: &str, extra: &str) -> String {
    format!(
        "model_list:\n  - model_name: titan\n    litellm_params:\n      model: bedrock/amazon.titan-embed-text-v2:0\n      aws_bedrock_runtime_endpoint: {base}\n      api_key: bedrock-key\n      aws_region_name: us-west-2\n{extra}"
    )
}

#[tokio::test]
async fn titan_embedding_inputs_run_four_at_a_time() {
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let seen = arrivals.clone();
    let up = MockUpstream::start(move |req| {
        seen.lock().unwrap().push(Instant::now());
        let text = req.json()["inputText"].as_str().unwrap().to_string();
        Reply::json(
            200,
            json!({"embedding": [text.len() as f32], "inputTextTokenCount": 1}),
        )
        .delayed(Duration::from_millis(300))
    })
    .await;
    let gw = start(&titan_config(&up.base(), ""), "");
    let inputs: Vec<String> = (1..=9).map(|i| "a".repeat(i)).collect();
    let began = Instant::now();
    let r = gw
        .post(
            "/v1/embeddings",
            &json!({"model": "titan", "input": inputs}),
        )
        .await;
    let took = began.elapsed();
    assert_eq!(r.status, 200, "{}", r.text());
    let lens: Vec<f64> = r.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["embedding"][0].as_f64().unwrap())
        .collect();
    assert_eq!(
        lens,
        (1..=9).map(f64::from).collect::<Vec<_>>(),
        "input order kept"
    );
    // 8 extra inputs, 4 at a time, then the first: 3 rounds of 300 ms, not 9.
    assert!(took < Duration::from_millis(2000), "took {took:?}");
    let mut at = arrivals.lock().unwrap().clone();
    at.sort();
    assert_eq!(at.len(), 9);
    assert!(
        at[3] - at[0] < Duration::from_millis(200),
        "the first four start together"
    );
    assert!(
        at[4] - at[0] >= Duration::from_millis(250),
        "a fifth waits for a free place"
    );
}

#[tokio::test]
async fn titan_embeddings_refuse_more_inputs_than_the_bound() {
    let up = MockUpstream::start(|_| {
        Reply::json(200, json!({"embedding": [1.0], "inputTextTokenCount": 1}))
    })
    .await;
    let gw = start(&titan_config(&up.base(), ""), "");
    let inputs: Vec<String> = (0..129).map(|i| format!("t{i}")).collect();
    let r = gw
        .post(
            "/v1/embeddings",
            &json!({"model": "titan", "input": inputs}),
        )
        .await;
    let err = r.expect_error(400);
    assert_eq!(err["param"], "input");
    let msg = err["message"].as_str().unwrap();
    assert!(msg.contains("129") && msg.contains("128"), "{msg}");
    assert_eq!(up.count(), 0, "nothing is sent for a refused batch");
}

#[tokio::test]
async fn titan_extra_inputs_run_under_the_request_deadline() {
    let up = MockUpstream::start(|_| {
        Reply::json(200, json!({"embedding": [1.0], "inputTextTokenCount": 1}))
            .delayed(Duration::from_secs(30))
    })
    .await;
    let gw = start(
        &titan_config(
            &up.base(),
            "router_settings: {timeout: 1, num_retries: 0}\n",
        ),
        "",
    );
    let began = Instant::now();
    let r = gw
        .post(
            "/v1/embeddings",
            &json!({"model": "titan", "input": ["a", "b", "c"]}),
        )
        .await;
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "answered after {:?}",
        began.elapsed()
    );
    assert_eq!(r.status, 504, "{}", r.text());
}
