//! The foundation end to end: the real gateway over HTTP against mock OpenAI and Azure upstreams.

mod support;

use serde_json::json;
#[allow(unused_imports)]
use std::time::{Duration, Instant};
use support::*;

fn openai_config(base: &str, extra: &str) -> String {
    format!(
        r#"
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o-2024-08-06
      api_base: {base}/v1
      api_key: sk-upstream
  - model_name: embed
    litellm_params:
      model: openai/text-embedding-3-small
      api_base: {base}/v1
      api_key: sk-upstream
{extra}
"#
    )
}

#[tokio::test]
async fn chat_completion_passes_through_with_model_rewritten() {
    let up = MockUpstream::start(|_| Reply::json(200, openai::completion("Hi there"))).await;
    let gw = Gateway::start(&openai_config(&up.base(), ""));
    let resp = gw
        .post("/v1/chat/completions", &json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}], "temperature": 0.2}))
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["choices"][0]["message"]["content"], "Hi there");
    assert_eq!(resp.json()["usage"]["total_tokens"], 18);
    assert!(resp.header("x-request-id").is_some());
    assert!(resp
        .header("x-litellm-overhead-duration-ms")
        .unwrap()
        .parse::<f64>()
        .is_ok());
    let sent = up.last();
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(sent.header("authorization"), Some("Bearer sk-upstream"));
    let body = sent.json();
    assert_eq!(body["model"], "gpt-4o-2024-08-06");
    assert_eq!(body["temperature"], 0.2);
    assert_eq!(body["messages"][0]["content"], "hello");
    assert!(
        body.get("stream_options").is_none(),
        "non-streaming requests are not given stream_options"
    );
}

#[tokio::test]
async fn stream_reaches_client_before_upstream_finishes_and_usage_is_stripped() {
    // The upstream sends its first event at once and the rest 600 ms later.
    let body = openai::sse(&["Hel", "lo"], true);
    let first_event_end = body.windows(2).position(|w| w == b"\n\n").unwrap() + 2;
    let up = MockUpstream::start(move |_| {
        let mut r = Reply::stream_split(
            "text/event-stream",
            &body,
            &[first_event_end],
            Duration::ZERO,
        );
        if let Reply::Parts { parts, .. } = &mut r {
            parts[1].0 = Duration::from_millis(600);
        }
        r
    })
    .await;
    let gw = Gateway::start(&openai_config(&up.base(), ""));
    let started = Instant::now();
    let mut s = gw
        .post_stream("/v1/chat/completions", &json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(s.status, 200);
    assert_eq!(s.header("content-type"), Some("text/event-stream"));
    let first = s.next_chunk().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "first chunk took {:?}: streaming must not wait for the upstream to finish",
        started.elapsed()
    );
    assert!(String::from_utf8_lossy(&first).contains("\"role\":\"assistant\""));
    let mut all = first;
    all.extend(s.read_to_end().await);
    let resp = Response {
        status: 200,
        headers: vec![],
        body: all,
    };
    let chunks = openai_chunks(&resp);
    assert_eq!(stream_text(&chunks), "Hello");
    assert!(
        chunks
            .iter()
            .all(|c| !c["choices"].as_array().unwrap().is_empty()),
        "usage chunk must be stripped: client did not ask"
    );
    // The gateway asked the upstream for usage anyway, so it is always known.
    assert_eq!(up.last().json()["stream_options"]["include_usage"], true);
    let line = gw.wait_for_log_line(|l| l["route"] == "chat").await;
    assert_eq!(line["total_tokens"], 7);
    assert_eq!(line["stream"], true);
}

#[tokio::test]
async fn stream_keeps_usage_chunk_when_asked_and_survives_one_byte_pieces() {
    let body = openai::sse(&["a", "b", "c"], true);
    let up =
        MockUpstream::start(move |_| Reply::stream("text/event-stream", &body, 1, Duration::ZERO))
            .await;
    let gw = Gateway::start(&openai_config(&up.base(), ""));
    let resp = gw
        .post_stream(
            "/v1/chat/completions",
            &json!({"model": "gpt-4o", "stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "x"}]}),
        )
        .await
        .into_response()
        .await;
    let chunks = openai_chunks(&resp);
    assert_eq!(stream_text(&chunks), "abc");
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"].as_array().unwrap().len(), 0);
    assert_eq!(last["usage"]["total_tokens"], 8);
}

#[tokio::test]
async fn stream_cut_mid_way_ends_with_an_error_event() {
    let body = openai::sse(&["one", "two"], true);
    let cut_at = body.len() / 2;
    let up = MockUpstream::start(move |_| {
        Reply::stream("text/event-stream", &body[..cut_at], 7, Duration::ZERO).cut()
    })
    .await;
    let gw = Gateway::start(&openai_config(&up.base(), ""));
    let resp = gw
        .post_stream("/v1/chat/completions", &json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "x"}]}))
        .await
        .into_response()
        .await;
    let data = resp.sse_data();
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let err: serde_json::Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("upstream"),
        "{err}"
    );
}

#[tokio::test]
async fn azure_gets_deployment_path_api_version_and_api_key() {
    let up = MockUpstream::start(|req| {
        if req.path.contains("/embeddings") {
            Reply::json(200, openai::embeddings(2))
        } else {
            Reply::json(200, openai::completion("from azure"))
        }
    })
    .await;
    let cfg = format!(
        r#"
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: azure/my-gpt4o-deploy
      api_base: {}
      api_key: azure-key-1
      api_version: "2024-06-01"
  - model_name: embed
    litellm_params:
      model: azure/my-embed
      api_base: {}
      api_key: azure-key-1
"#,
        up.base(),
        up.base()
    );
    let gw = Gateway::start(&cfg);
    let resp = gw
        .post(
            "/chat/completions",
            &json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        resp.json()["choices"][0]["message"]["content"],
        "from azure"
    );
    let sent = up.last();
    assert_eq!(
        sent.path,
        "/openai/deployments/my-gpt4o-deploy/chat/completions?api-version=2024-06-01"
    );
    assert_eq!(sent.header("api-key"), Some("azure-key-1"));
    assert!(sent.header("authorization").is_none());

    let resp = gw
        .post(
            "/v1/embeddings",
            &json!({"model": "embed", "input": ["a", "b"]}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["data"].as_array().unwrap().len(), 2);
    assert_eq!(
        up.last().path,
        "/openai/deployments/my-embed/embeddings?api-version=2024-10-21"
    );
}

#[tokio::test]
async fn embeddings_and_models() {
    let up = MockUpstream::start(|_| Reply::json(200, openai::embeddings(3))).await;
    let gw = Gateway::start(&openai_config(&up.base(), ""));
    let resp = gw
        .post(
            "/embeddings",
            &json!({"model": "embed", "input": ["a", "b", "c"]}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["data"][2]["embedding"][2], 2.0);
    assert_eq!(up.last().path, "/v1/embeddings");
    assert_eq!(up.last().json()["model"], "text-embedding-3-small");

    let models = gw.get("/v1/models", &[]).await.json();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["gpt-4o", "embed"]);
    assert_eq!(
        gw.get("/v1/models/gpt-4o", &[]).await.json()["id"],
        "gpt-4o"
    );
    let e = gw.get("/v1/models/nope", &[]).await.expect_error(404);
    assert_eq!(e["code"], "model_not_found");
}

#[tokio::test]
async fn bad_input_gets_openai_errors() {
    let up = MockUpstream::start(|_| Reply::json(200, openai::completion("x"))).await;
    let gw = Gateway::start(&openai_config(
        &up.base(),
        "general_settings:\n  max_request_size_mb: 1\n",
    ));
    let ct = [("content-type", "application/json")];

    let e = gw
        .post_with("/v1/chat/completions", &ct, b"{\"model\": \"gpt-4o\", ")
        .await
        .expect_error(400);
    assert_eq!(e["code"], "invalid_json");
    let e = gw
        .post_with("/v1/chat/completions", &ct, b"")
        .await
        .expect_error(400);
    assert!(e["message"].as_str().unwrap().contains("empty"));
    let e = gw
        .post("/v1/chat/completions", &json!({"messages": []}))
        .await
        .expect_error(400);
    assert_eq!(e["param"], "model");
    let e = gw
        .post("/v1/chat/completions", &json!({"model": "gpt-4o"}))
        .await
        .expect_error(400);
    assert_eq!(e["param"], "messages");
    let e = gw
        .post("/v1/embeddings", &json!({"model": "embed"}))
        .await
        .expect_error(400);
    assert_eq!(e["param"], "input");
    let e = gw
        .post("/v1/chat/completions", &json!({"model": 7, "messages": []}))
        .await
        .expect_error(400);
    assert_eq!(e["param"], "model");
    let e = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "gpt-5", "messages": []}),
        )
        .await
        .expect_error(404);
    assert_eq!(e["code"], "model_not_found");
    let e = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "gpt-4o", "stream": "yes", "messages": []}),
        )
        .await
        .expect_error(400);
    assert_eq!(e["param"], "stream");
    gw.get("/v1/chat/completions", &[]).await.expect_error(405);
    gw.post("/v1/completions/legacy", &json!({}))
        .await
        .expect_error(404);

    // Over the size limit, declared and undeclared (chunked).
    let big = vec![b' '; 2 * 1024 * 1024];
    let e = gw
        .post_with("/v1/chat/completions", &ct, &big)
        .await
        .expect_error(413);
    assert!(e["message"]
        .as_str()
        .unwrap()
        .contains("max_request_size_mb"));
    // Chunked, no Content-Length, never finished: the 413 must come once the count passes the limit.
    let mut chunked = Vec::new();
    for _ in 0..8 {
        chunked.extend_from_slice(format!("{:x}\r\n", 256 * 1024).as_bytes());
        chunked.extend(std::iter::repeat_n(b' ', 256 * 1024));
        chunked.extend_from_slice(b"\r\n");
    }
    let mut conn = Conn::connect(gw.port).await;
    conn.send_head_and_body(
        "POST",
        "/v1/chat/completions",
        &[("transfer-encoding", "chunked")],
        &chunked,
    )
    .await;
    let resp = conn.read_streaming().await.into_response().await;
    resp.expect_error(413);
    assert_eq!(up.count(), 0, "nothing invalid reached the upstream");
}

#[tokio::test]
async fn multi_mib_bodies_go_through_intact() {
    let up = MockUpstream::start(|req| {
        Reply::json(
            200,
            openai::completion(&format!("got {} bytes", req.body.len())),
        )
    })
    .await;
    let gw = Gateway::start(&openai_config(&up.base(), ""));
    // ~6 MiB of prompt with escapes and non-ASCII, well past Pingora's 64 KiB retry buffer.
    let text: String = "Ünïcödé \"quoted\" line\n".repeat(6 * 1024 * 1024 / 24);
    let resp = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "gpt-4o", "messages": [{"role": "user", "content": text}]}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let sent = up.last().json();
    assert_eq!(sent["messages"][0]["content"].as_str().unwrap(), text);
    assert_eq!(sent["model"], "gpt-4o-2024-08-06");
}

#[tokio::test]
async fn upstream_faults_map_to_502_504_and_upstream_statuses() {
    let up = MockUpstream::start(|req| {
        let body = String::from_utf8_lossy(&req.body).into_owned();
        if body.contains("hang") {
            Reply::Hang
        } else if body.contains("reset") {
            Reply::Reset
        } else if body.contains("ratelimit") {
            Reply::json(429, json!({"error": {"message": "Rate limit reached for gpt-4o", "type": "requests", "code": "rate_limit_exceeded"}}))
                .with_header("retry-after", "7")
        } else if body.contains("toolong") {
            Reply::json(400, json!({"error": {"message": "This model's maximum context length is 128000 tokens.", "type": "invalid_request_error", "code": "context_length_exceeded"}}))
        } else if body.contains("garbage") {
            Reply::bytes(200, "application/json", b"<html>oops</html>".to_vec())
        } else if body.contains("authfail") {
            Reply::json(401, json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error", "code": "invalid_api_key"}}))
        } else {
            Reply::json(200, openai::completion("fine"))
        }
    })
    .await;
    let dead_port = free_port();
    let cfg = format!(
        r#"
model_list:
  - model_name: gpt-4o
    litellm_params: {{model: openai/gpt-4o, api_base: "{base}/v1", api_key: k, timeout: 0.8}}
  - model_name: dead
    litellm_params: {{model: openai/gpt-4o, api_base: "http://127.0.0.1:{dead_port}/v1", api_key: k}}
  - model_name: streamy
    litellm_params: {{model: openai/gpt-4o, api_base: "{base}/v1", api_key: k, timeout: 5, stream_timeout: 0.5}}
router_settings:
  num_retries: 0   # one attempt each: this test is about how a single fault is reported
"#,
        base = up.base()
    );
    let gw = Gateway::start(&cfg);
    let chat = |model: &str, content: &str| json!({"model": model, "messages": [{"role": "user", "content": content}]});

    let e = gw
        .post("/v1/chat/completions", &chat("dead", "hi"))
        .await
        .expect_error(502);
    assert!(e["message"].as_str().unwrap().contains("connect"), "{e}");

    let started = Instant::now();
    gw.post("/v1/chat/completions", &chat("gpt-4o", "hang"))
        .await
        .expect_error(504);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(750) && took < Duration::from_millis(2000),
        "504 after {took:?}, deadline 0.8 s"
    );

    let started = Instant::now();
    let mut stream_req = chat("streamy", "hang");
    stream_req["stream"] = json!(true);
    gw.post("/v1/chat/completions", &stream_req)
        .await
        .expect_error(504);
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "stream_timeout 0.5 s bounds the first byte"
    );

    gw.post("/v1/chat/completions", &chat("gpt-4o", "reset"))
        .await
        .expect_error(502);

    let resp = gw
        .post("/v1/chat/completions", &chat("gpt-4o", "ratelimit"))
        .await;
    let e = resp.expect_error(429);
    assert_eq!(e["code"], "rate_limit_exceeded");
    assert_eq!(resp.header("retry-after"), Some("7"));

    let e = gw
        .post("/v1/chat/completions", &chat("gpt-4o", "toolong"))
        .await
        .expect_error(400);
    assert_eq!(e["code"], "context_length_exceeded");

    gw.post("/v1/chat/completions", &chat("gpt-4o", "authfail"))
        .await
        .expect_error(401);
    gw.post("/v1/chat/completions", &chat("gpt-4o", "garbage"))
        .await
        .expect_error(502);

    // The gateway is still healthy after all of that.
    assert_eq!(
        gw.post("/v1/chat/completions", &chat("gpt-4o", "ok"))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn master_key_guards_api_routes_not_health() {
    let up = MockUpstream::start(|_| Reply::json(200, openai::completion("x"))).await;
    let gw = Gateway::start(&openai_config(
        &up.base(),
        "general_settings:\n  master_key: sk-gateway-123\n",
    ));
    let body =
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let ct = ("content-type", "application/json");

    let e = gw
        .post_with("/v1/chat/completions", &[ct], body.as_bytes())
        .await
        .expect_error(401);
    // LiteLLM's rejection (with a master key, virtual keys are on): type `auth_error`.
    assert_eq!(e["type"], "auth_error");
    assert!(e["message"]
        .as_str()
        .unwrap()
        .starts_with("Authentication Error, No api key passed in."));
    gw.post_with(
        "/v1/chat/completions",
        &[ct, ("authorization", "Bearer sk-gateway-12")],
        body.as_bytes(),
    )
    .await
    .expect_error(401);
    gw.get("/v1/models", &[]).await.expect_error(401);
    let ok = gw
        .post_with(
            "/v1/chat/completions",
            &[ct, ("authorization", "Bearer sk-gateway-123")],
            body.as_bytes(),
        )
        .await;
    assert_eq!(ok.status, 200);
    let ok = gw
        .post_with(
            "/v1/chat/completions",
            &[ct, ("x-api-key", "sk-gateway-123")],
            body.as_bytes(),
        )
        .await;
    assert_eq!(ok.status, 200);
    assert_eq!(gw.get("/health/liveliness", &[]).await.status, 200);
    assert_eq!(gw.get("/health/readiness", &[]).await.status, 200);
    // The client's key never reaches the upstream; the deployment's does.
    assert_eq!(
        up.last().header("authorization"),
        Some("Bearer sk-upstream")
    );
}

#[tokio::test]
async fn keep_alive_both_sides_and_request_ids() {
    let up = MockUpstream::start(|_| Reply::json(200, openai::completion("x"))).await;
    let gw = Gateway::start(&openai_config(&up.base(), ""));
    let body =
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let mut conn = Conn::connect(gw.port).await;
    for i in 0..5 {
        let rid = format!("req-{i}");
        let (resp, c) = conn
            .send(
                "POST",
                "/v1/chat/completions",
                &[("content-type", "application/json"), ("x-request-id", &rid)],
                body.as_bytes(),
            )
            .await;
        conn = c;
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("x-request-id"), Some(rid.as_str()));
    }
    assert_eq!(up.count(), 5);
    assert_eq!(
        up.connections.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "upstream connections are pooled"
    );
}

#[tokio::test]
async fn mock_response_streams_without_upstream() {
    let gw = Gateway::start(
        "model_list:\n  - model_name: m\n    litellm_params: {model: openai/gpt-4o, mock_response: \"Hi from the mock\"}\n",
    );
    let resp = gw
        .post_stream(
            "/v1/chat/completions",
            &json!({"model": "m", "stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "x"}]}),
        )
        .await
        .into_response()
        .await;
    let chunks = openai_chunks(&resp);
    assert_eq!(stream_text(&chunks), "Hi from the mock");
    assert!(
        chunks.last().unwrap()["usage"]["completion_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
    let finishes = chunks
        .iter()
        .filter(|c| {
            c["choices"]
                .get(0)
                .is_some_and(|ch| !ch["finish_reason"].is_null())
        })
        .count();
    assert_eq!(finishes, 1);
}

/// `mock_response` is an ordinary provider answering in-process: whole chat, embeddings (one
/// vector per input, base64 when asked) and an error mock all go through the same exchange as
/// an upstream's answer, labelled as the mock's.
#[tokio::test]
async fn mock_response_answers_chat_embeddings_and_errors_in_process() {
    let gw = Gateway::start(
        "model_list:\n  - model_name: m\n    litellm_params: {model: openai/gpt-4o, mock_response: \"Hi from the mock\"}\n  - model_name: e\n    litellm_params: {model: openai/text-embedding-3-small, mock_response: x}\n  - model_name: limited\n    litellm_params: {model: openai/gpt-4o, mock_response: litellm.RateLimitError, num_retries: 0}\n",
    );
    let r = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "m", "messages": [{"role": "user", "content": "hello"}]}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-litellm-model-api-base"), Some("mock"));
    let v = r.json();
    assert_eq!(v["choices"][0]["message"]["content"], "Hi from the mock");
    assert_eq!(v["model"], "gpt-4o");
    assert_eq!(v["usage"]["completion_tokens"], 4);
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));

    let r = gw
        .post(
            "/v1/embeddings",
            &json!({"model": "e", "input": ["a", "b", "c"]}),
        )
        .await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"].as_array().unwrap().len(), 3);
    assert_eq!(v["data"][2]["index"], 2);
    assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 8);
    assert_eq!(v["model"], "text-embedding-3-small");
    let r = gw
        .post(
            "/v1/embeddings",
            &json!({"model": "e", "input": "a", "encoding_format": "base64"}),
        )
        .await;
    assert!(r.json()["data"][0]["embedding"].is_string());

    // What OpenAI refuses, the mock refuses too: `messages` missing or not a list.
    for body in [
        json!({"model": "m", "messages": "x"}),
        json!({"model": "m"}),
    ] {
        let r = gw.post("/v1/chat/completions", &body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        let v = r.json();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], "messages");
    }

    let r = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "limited", "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    assert_eq!(r.status, 429);
    let v = r.json();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Mock rate limit error"));
}
