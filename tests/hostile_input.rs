//! Hostile clients end to end (issue 8, "Harden the edge"): duplicate JSON keys, absurd nesting,
//! model names built to break or redirect the upstream URL, and upstream errors that echo the
//! operator's credentials. Every test runs the real gateway against mock upstreams that record
//! exactly what reached them.

mod support;

use serde_json::{json, Value};
use support::*;

const OPENAI_KEY: &str = "sk-live-0123456789abcdefghijWXYZ";
const GEMINI_KEY: &str = "AIzaSyD-gemini-operator-key-7781";
const AZURE_KEY: &str = "azure-operator-key-5f3e9a";
const ANTHROPIC_KEY: &str = "sk-ant-api03-operator-key-QRST";

fn config(base: &str) -> String {
    format!(
        r#"
model_list:
  - model_name: g
    litellm_params: {{model: openai/gpt-4o, api_base: "{base}/v1", api_key: {OPENAI_KEY}}}
  - model_name: "my model"
    litellm_params: {{model: openai/gpt-4o, api_base: "{base}/v1", api_key: {OPENAI_KEY}}}
  - model_name: "openai/*"
    litellm_params: {{model: "openai/*", api_base: "{base}/v1", api_key: {OPENAI_KEY}}}
  - model_name: "gemini/*"
    litellm_params: {{model: "gemini/*", api_base: "{base}/v1beta", api_key: {GEMINI_KEY}}}
  - model_name: "azure/*"
    litellm_params: {{model: "azure/*", api_base: "{base}", api_key: {AZURE_KEY}, api_version: "2024-10-21"}}
  - model_name: "bedrock/*"
    litellm_params: {{model: "bedrock/*", api_base: "{base}", api_key: bedrock-operator-key-1234, aws_region_name: us-east-1}}
  - model_name: claude
    litellm_params: {{model: anthropic/claude-sonnet-4-5, api_base: "{base}", api_key: {ANTHROPIC_KEY}}}
"#
    )
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

fn gemini_reply() -> Value {
    json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "ok"}]}, "finishReason": "STOP", "index": 0}],
           "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 1, "totalTokenCount": 2}})
}

/// Answers like each provider would, by path.
async fn upstream() -> MockUpstream {
    MockUpstream::start(|req| {
        if req.path.contains("generateContent") {
            Reply::json(200, gemini_reply())
        } else {
            Reply::json(200, openai::completion("ok"))
        }
    })
    .await
}

async fn post_raw(gw: &Gateway, body: &[u8]) -> Response {
    gw.post_with(
        "/v1/chat/completions",
        &[("content-type", "application/json")],
        body,
    )
    .await
}

#[tokio::test]
async fn duplicate_top_level_keys_are_refused_naming_the_key() {
    let up = upstream().await;
    let gw = Gateway::start(&config(&up.base()));
    // The gateway would read the first `stream`, the upstream the last.
    let e = post_raw(
        &gw,
        br#"{"model":"g","stream":false,"messages":[{"role":"user","content":"hi"}],"stream":true}"#,
    )
    .await
    .expect_error(400);
    assert_eq!(e["param"], "stream");
    assert!(e["message"].as_str().unwrap().contains("'stream'"), "{e}");
    // The same key spelled with an escape is the same key.
    let e = post_raw(
        &gw,
        br#"{"model":"g","messages":[{"role":"user","content":"hi"}],"\u006dodel":"openai/other"}"#,
    )
    .await
    .expect_error(400);
    assert_eq!(e["param"], "model");
    // Inside a field the gateway interprets.
    let e = post_raw(
        &gw,
        br#"{"model":"g","stream":true,"stream_options":{"include_usage":false,"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await
    .expect_error(400);
    assert_eq!(e["param"], "stream_options");
    assert_eq!(up.count(), 0, "nothing ambiguous reached the upstream");
    // Unique keys still go through.
    let r = gw.post("/v1/chat/completions", &chat("g")).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn nesting_past_the_limit_is_refused_and_never_forwarded() {
    let up = upstream().await;
    let gw = Gateway::start(&config(&up.base()));
    let deep = |levels: usize| {
        let mut body = br#"{"model":"g","messages":[{"role":"user","content":"hi"}],"x":"#.to_vec();
        body.extend(std::iter::repeat_n(b'[', levels));
        body.extend(std::iter::repeat_n(b']', levels));
        body.push(b'}');
        body
    };
    let e = post_raw(&gw, &deep(100_000)).await.expect_error(400);
    assert_eq!(e["param"], "x");
    assert!(e["message"].as_str().unwrap().contains("128"), "{e}");
    // Brackets inside strings do not count.
    let mut in_string = br#"{"model":"g","messages":[{"role":"user","content":""#.to_vec();
    in_string.extend(std::iter::repeat_n(b'[', 10_000));
    in_string.extend_from_slice(br#"\"\\"}]}"#);
    let r = post_raw(&gw, &in_string).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.count(), 1);
    // Deep inside messages, through the pass-through path.
    let mut body = br#"{"model":"g","messages":[{"role":"user","content":"#.to_vec();
    body.extend(std::iter::repeat_n(b'[', 200));
    body.extend(std::iter::repeat_n(b']', 200));
    body.extend_from_slice(b"}]}");
    let e = post_raw(&gw, &body).await.expect_error(400);
    assert_eq!(e["param"], "messages");
    assert_eq!(up.count(), 1, "the deep bodies never reached the upstream");
    // At the limit (the body object is level 1): accepted.
    let r = post_raw(&gw, &deep(127)).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn model_names_with_control_characters_or_spaces_are_the_clients_error() {
    let up = upstream().await;
    let gw = Gateway::start(&config(&up.base()));
    for model in [
        "gemini/gem\r\nX-Injected: 1",
        "gemini/tab\there",
        "openai/gpt\n4o",
        "gemini/gem ini",
        "azure/dep loyment",
        "gemini/nul\u{0}",
    ] {
        let e = gw
            .post("/v1/chat/completions", &chat(model))
            .await
            .expect_error(400);
        assert_eq!(e["param"], "model", "{model:?}: {e}");
    }
    let long = format!("openai/{}", "x".repeat(300));
    let e = gw
        .post("/v1/chat/completions", &chat(&long))
        .await
        .expect_error(400);
    assert_eq!(e["param"], "model");
    assert_eq!(up.count(), 0);
    // A configured group whose name has a space is still served.
    let r = gw.post("/v1/chat/completions", &chat("my model")).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn client_model_names_cannot_change_the_upstream_path() {
    let up = upstream().await;
    let gw = Gateway::start(&config(&up.base()));
    // Dot segments: refused before anything is built or sent.
    for model in [
        "gemini/../../../admin?x=",
        "gemini/..",
        "azure/..",
        "azure/../../admin",
        "bedrock/..",
        "openai/./x",
    ] {
        let e = gw
            .post("/v1/chat/completions", &chat(model))
            .await
            .expect_error(400);
        assert_eq!(e["param"], "model", "{model:?}: {e}");
    }
    assert_eq!(up.count(), 0);
    // Anything else path-unsafe is percent-encoded into a single segment.
    let r = gw
        .post("/v1/chat/completions", &chat("gemini/evil/x?key=1#f%2F"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        up.last().path,
        "/v1beta/models/evil%2Fx%3Fkey%3D1%23f%252F:generateContent"
    );
    let r = gw
        .post(
            "/v1/chat/completions",
            &chat("azure/dep/../x?api-version=1"),
        )
        .await;
    assert_eq!(r.status, 400, "dot segment: {}", r.text());
    let r = gw
        .post("/v1/chat/completions", &chat("azure/dep?api-version=1#"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        up.last().path,
        "/openai/deployments/dep%3Fapi-version%3D1%23/chat/completions?api-version=2024-10-21"
    );
    for req in up.requests() {
        assert!(!req.path.contains("/../") && !req.path.contains("admin?"));
    }
}

#[tokio::test]
async fn upstream_errors_never_echo_the_operators_credentials() {
    // An upstream that answers 401 quoting the credential it received, whole and masked.
    let up = MockUpstream::start(|req| {
        let sent = req
            .header("authorization")
            .or(req.header("x-goog-api-key"))
            .or(req.header("api-key"))
            .or(req.header("x-api-key"))
            .unwrap_or("")
            .to_string();
        let bare = sent.trim_start_matches("Bearer ").to_string();
        let masked = format!("{}****************{}", &bare[..6], &bare[bare.len() - 4..]);
        let message = format!(
            "Incorrect API key provided: {sent}. Masked: {masked}. Raw: '{bare}'. See https://platform.example/account."
        );
        if req.header("x-api-key").is_some() {
            // Anthropic: a stream that starts, then fails with an error event quoting the key.
            let body = format!(
                "event: message_start\ndata: {}\n\nevent: content_block_start\ndata: {}\n\nevent: content_block_delta\ndata: {}\n\nevent: error\ndata: {}\n\n",
                json!({"type": "message_start", "message": {"id": "m", "type": "message", "role": "assistant", "content": [],
                       "model": "claude-sonnet-4-5", "stop_reason": null, "usage": {"input_tokens": 1, "output_tokens": 1}}}),
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
                json!({"type": "error", "error": {"type": "overloaded_error", "message": message}}),
            );
            return Reply::stream("text/event-stream", body.as_bytes(), 7, std::time::Duration::ZERO);
        }
        Reply::json(
            401,
            json!({"error": {"message": message, "type": "invalid_request_error", "code": "invalid_api_key"}}),
        )
    })
    .await;
    let gw = Gateway::start(&config(&up.base()));
    let leaks = |text: &str, key: &str| {
        text.contains(key) || text.contains(&key[key.len() - 4..]) || text.contains(&key[..8])
    };
    for (model, key) in [
        ("g", OPENAI_KEY),
        ("gemini/gemini-2.0-flash", GEMINI_KEY),
        ("azure/my-deployment", AZURE_KEY),
    ] {
        let r = gw.post("/v1/chat/completions", &chat(model)).await;
        let e = r.expect_error(401);
        let text = r.text();
        assert!(!leaks(&text, key), "{model}: the key leaked: {text}");
        assert!(text.contains("[REDACTED]"), "{model}: {text}");
        assert!(
            e["message"]
                .as_str()
                .unwrap()
                .contains("https://platform.example/account"),
            "the rest of the message is kept: {e}"
        );
    }
    // Mid-stream error events too.
    let mut body = chat("claude");
    body["stream"] = json!(true);
    let r = gw.post_stream("/v1/chat/completions", &body).await;
    let text = r.into_response().await.text();
    assert!(text.contains("Hi"), "{text}");
    assert!(text.contains("[REDACTED]"), "{text}");
    assert!(!leaks(&text, ANTHROPIC_KEY), "the key leaked: {text}");
    // Nor in the access log (written once each response is done: wait for all four lines).
    let requests = |log: &[Value]| log.iter().filter(|l| l.get("status").is_some()).count();
    wait_until(
        || requests(&gw.access_log()) >= 4,
        std::time::Duration::from_secs(10),
    )
    .await;
    let log = gw.access_log();
    assert_eq!(requests(&log), 4, "{log:?}");
    let log_text = serde_json::to_string(&log).unwrap();
    for key in [OPENAI_KEY, GEMINI_KEY, AZURE_KEY, ANTHROPIC_KEY] {
        assert!(!log_text.contains(key), "the access log leaked a key");
    }
}
