//! What the gateway puts on the wire to an HTTP/1.1 upstream: the request head and body leave in
//! one write (one segment on loopback, so the upstream's first read holds the whole request),
//! in the exact form Pingora's own writer used, over one pooled connection.

mod support;

use serde_json::json;
use std::sync::{Arc, Mutex};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What one request looked like to the upstream: its bytes as the first read returned them, and
/// the whole request.
#[derive(Debug, Clone)]
struct Arrival {
    first_read: Vec<u8>,
    whole: Vec<u8>,
}

/// A raw upstream that records each request's first read and answers a small completion, keeping
/// connections alive. Returns its port, the arrivals and how many connections it accepted.
async fn recording_upstream() -> (u16, Arc<Mutex<Vec<Arrival>>>, Arc<Mutex<usize>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let connections = Arc::new(Mutex::new(0));
    let (arr, conns) = (arrivals.clone(), connections.clone());
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            *conns.lock().unwrap() += 1;
            let arr = arr.clone();
            tokio::spawn(async move {
                let reply = openai::completion("ok").to_string();
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{reply}",
                    reply.len()
                );
                loop {
                    let mut buf = vec![0u8; 256 * 1024];
                    let Ok(n) = sock.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    let first_read = buf[..n].to_vec();
                    let mut whole = first_read.clone();
                    // Read on until the head and the Content-Length body are all here.
                    loop {
                        if let Some(need) = request_len(&whole) {
                            if whole.len() >= need {
                                break;
                            }
                        }
                        let Ok(n) = sock.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        whole.extend_from_slice(&buf[..n]);
                    }
                    arr.lock().unwrap().push(Arrival { first_read, whole });
                    if sock.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, arrivals, connections)
}

/// Head length plus Content-Length, once the head is complete.
fn request_len(bytes: &[u8]) -> Option<usize> {
    let head_end = bytes.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&bytes[..head_end]).ok()?;
    let length = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    Some(head_end + length)
}

fn config(port: u16) -> String {
    format!(
        r#"
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o-2024-08-06
      api_base: http://127.0.0.1:{port}/v1
      api_key: sk-upstream
"#
    )
}

#[tokio::test]
async fn request_head_and_body_reach_the_upstream_in_one_write() {
    let (port, arrivals, connections) = recording_upstream().await;
    let gw = Gateway::start(&config(port));
    // Sequential requests: each may go out on the pooled connection of the one before.
    for i in 0..20 {
        let resp = gw
            .post(
                "/v1/chat/completions",
                &json!({"model": "gpt-4o", "messages": [{"role": "user", "content": format!("hello {i}")}]}),
            )
            .await;
        assert_eq!(resp.status, 200, "{}", resp.text());
    }
    let arrivals = arrivals.lock().unwrap().clone();
    assert_eq!(arrivals.len(), 20);
    // The head, byte for byte as Pingora's writer produced it (its few title-case names, the
    // rest lowercase; Host first, Content-Length last), then the body with the model rewritten.
    let whole = String::from_utf8(arrivals[0].whole.clone()).unwrap();
    let (head, body) = whole.split_once("\r\n\r\n").unwrap();
    assert_eq!(
        head,
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nauthorization: Bearer sk-upstream\r\nContent-Length: {}",
            body.len()
        )
    );
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["model"], "gpt-4o-2024-08-06");
    assert_eq!(body["messages"][0]["content"], "hello 0");
    for (i, a) in arrivals.iter().enumerate() {
        assert_eq!(
            a.first_read,
            a.whole,
            "request {i}: the upstream's first read held only part of it:\n{}",
            String::from_utf8_lossy(&a.first_read)
        );
    }
    assert_eq!(
        *connections.lock().unwrap(),
        1,
        "the connection goes back to the pool after each answer"
    );
}

#[tokio::test]
async fn a_large_request_body_arrives_whole() {
    // Past the size copied behind the head: head and body go out as two buffers of one
    // vectored write, which may take several syscalls; the bytes must still be exact.
    let (port, arrivals, _) = recording_upstream().await;
    let gw = Gateway::start(&config(port));
    let text = "x".repeat(200_000);
    let resp = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "gpt-4o", "messages": [{"role": "user", "content": text}]}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let arrivals = arrivals.lock().unwrap().clone();
    let whole = String::from_utf8(arrivals[0].whole.clone()).unwrap();
    let (_, body) = whole.split_once("\r\n\r\n").unwrap();
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["messages"][0]["content"], text.as_str());
}
