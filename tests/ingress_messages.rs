//! Anthropic's Messages API (`/v1/messages`, `/v1/messages/count_tokens`) through the real
//! gateway: passed through to an Anthropic deployment byte for byte, translated to an
//! OpenAI-compatible and a Gemini deployment (whole and streamed, tool use, streams cut into
//! one-byte pieces), errors in Anthropic's shape, fallbacks, spend, and the official Anthropic
//! Python SDK (from the venv `.ci/setup` makes at `target/ci-venv`).

mod support;

use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;
use support::*;

const MASTER: &str = "sk-master";

fn config(anthropic: &str, openai: &str, gemini: &str) -> String {
    format!(
        r#"
model_list:
  - model_name: claude
    litellm_params:
      model: anthropic/claude-sonnet-4-5-20250929
      api_base: {anthropic}
      api_key: sk-ant-upstream
  - model_name: gpt
    litellm_params:
      model: openai/gpt-4o
      api_base: {openai}/v1
      api_key: sk-oa-upstream
  - model_name: flash
    litellm_params:
      model: gemini/gemini-2.0-flash
      api_base: {gemini}/v1beta
      api_key: AIza-test
  - model_name: claude-down
    litellm_params:
      model: anthropic/claude-sonnet-4-5-20250929
      api_base: {anthropic}/down
      api_key: sk-ant-upstream
router_settings:
  num_retries: 0
  fallbacks: [{{claude-down: [gpt]}}]
general_settings:
  master_key: {MASTER}
"#
    )
}

fn wants(rec: &Recorded, key: &str) -> bool {
    rec.json()
        .get(key)
        .is_some_and(|v| !v.is_null() && *v != json!(false))
}

fn sse(events: &[(&str, Value)]) -> Vec<u8> {
    let mut out = String::new();
    for (name, data) in events {
        out.push_str(&format!("event: {name}\ndata: {data}\n\n"));
    }
    out.into_bytes()
}

/// An Anthropic upstream: text, or a `get_weather` tool call when tools are offered; streamed
/// in one-byte pieces when asked. `/down/...` answers 529 overloaded.
fn anthropic_reply(rec: &Recorded) -> Reply {
    if rec.path.starts_with("/down") {
        return Reply::json(
            529,
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        );
    }
    if rec.path.ends_with("/count_tokens") {
        return Reply::json(200, json!({"input_tokens": 42}));
    }
    let tools = wants(rec, "tools");
    if !wants(rec, "stream") {
        let content = if tools {
            json!([{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}])
        } else {
            json!([{"type": "text", "text": "Hello there"}])
        };
        return Reply::json(
            200,
            json!({"id": "msg_up", "type": "message", "role": "assistant",
                "model": "claude-sonnet-4-5-20250929", "content": content,
                "stop_reason": if tools { "tool_use" } else { "end_turn" }, "stop_sequence": null,
                "usage": {"input_tokens": 1000, "output_tokens": 500, "cache_read_input_tokens": 0},
                "future_field": {"kept": true}}),
        );
    }
    let start = json!({"type": "message_start", "message": {"id": "msg_up", "type": "message",
        "role": "assistant", "model": "claude-sonnet-4-5-20250929", "content": [],
        "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 1000, "output_tokens": 1}}});
    let mut events = vec![("message_start", start)];
    if tools {
        events.push(("content_block_start", json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}})));
        for part in ["{\"ci", "ty\": \"Par", "is\"}"] {
            events.push((
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": part}}),
            ));
        }
    } else {
        events.push((
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}}),
        ));
        events.push(("ping", json!({"type": "ping"})));
        for part in ["Hello", " there"] {
            events.push((
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": part}}),
            ));
        }
    }
    events.push((
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    events.push(("message_delta", json!({"type": "message_delta",
        "delta": {"stop_reason": if tools { "tool_use" } else { "end_turn" }, "stop_sequence": null},
        "usage": {"output_tokens": 500}})));
    events.push(("message_stop", json!({"type": "message_stop"})));
    Reply::stream("text/event-stream", &sse(&events), 1, Duration::ZERO)
}

/// An OpenAI-compatible upstream, the same answers in chat's format.
fn openai_reply(rec: &Recorded) -> Reply {
    let tools = wants(rec, "tools");
    let usage = json!({"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500});
    if !wants(rec, "stream") {
        let message = if tools {
            json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]})
        } else {
            json!({"role": "assistant", "content": "Hello there"})
        };
        return Reply::json(
            200,
            json!({"id": "chatcmpl-up", "object": "chat.completion", "created": 1, "model": "gpt-4o",
                "choices": [{"index": 0, "message": message,
                    "finish_reason": if tools { "tool_calls" } else { "stop" }}],
                "usage": usage}),
        );
    }
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let mut chunks = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    if tools {
        chunks.push(chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": ""}}]}),
            Value::Null,
        ));
        for part in ["{\"ci", "ty\": \"Par", "is\"}"] {
            chunks.push(chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": part}}]}),
                Value::Null,
            ));
        }
        chunks.push(chunk(json!({}), json!("tool_calls")));
    } else {
        for part in ["Hello", " there"] {
            chunks.push(chunk(json!({"content": part}), Value::Null));
        }
        chunks.push(chunk(json!({}), json!("stop")));
    }
    chunks.push(
        json!({"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1,
        "model": "gpt-4o", "choices": [], "usage": usage}),
    );
    let mut body = String::new();
    for c in chunks {
        body.push_str(&format!("data: {c}\n\n"));
    }
    body.push_str("data: [DONE]\n\n");
    Reply::stream("text/event-stream", body.as_bytes(), 1, Duration::ZERO)
}

/// A Gemini upstream: generateContent and its SSE stream.
fn gemini_reply(rec: &Recorded) -> Reply {
    let tools = rec.json().get("tools").is_some();
    let parts = if tools {
        json!([{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}])
    } else {
        json!([{"text": "Hello there"}])
    };
    let usage =
        json!({"promptTokenCount": 1000, "candidatesTokenCount": 500, "totalTokenCount": 1500});
    if !rec.path.contains("streamGenerateContent") {
        return Reply::json(
            200,
            json!({"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP"}],
                "usageMetadata": usage}),
        );
    }
    let first = json!({"candidates": [{"content": {"role": "model", "parts": parts}}]});
    let last = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": ""}]}, "finishReason": "STOP"}],
        "usageMetadata": usage});
    let body = format!("data: {first}\r\n\r\ndata: {last}\r\n\r\n");
    Reply::stream("text/event-stream", body.as_bytes(), 1, Duration::ZERO)
}

struct Setup {
    gw: Gateway,
    anthropic: MockUpstream,
    openai: MockUpstream,
    gemini: MockUpstream,
    /// Bedrock Claude (`bclaude`, InvokeModel) and Nova (`nova`, Converse), signed with SigV4.
    bedrock: MockUpstream,
}

async fn setup() -> Setup {
    let anthropic = MockUpstream::start(anthropic_reply).await;
    let openai = MockUpstream::start(openai_reply).await;
    let gemini = MockUpstream::start(gemini_reply).await;
    let bedrock = MockUpstream::start(bedrock_claude_reply).await;
    let yaml = config(&anthropic.base(), &openai.base(), &gemini.base()).replace(
        "router_settings:",
        &format!(
            "  - model_name: bclaude\n    litellm_params:\n      model: bedrock/us.anthropic.claude-sonnet-4-5-20250929-v1:0\n      api_base: {b}\n      aws_access_key_id: AKIDEXAMPLE\n      aws_secret_access_key: secret\n      aws_region_name: us-west-2\n  - model_name: nova\n    litellm_params:\n      model: bedrock/amazon.nova-pro-v1:0\n      api_base: {b}\n      aws_access_key_id: AKIDEXAMPLE\n      aws_secret_access_key: secret\n      aws_region_name: us-west-2\nrouter_settings:",
            b = bedrock.base()
        ),
    );
    let gw = Gateway::start(&yaml);
    Setup {
        gw,
        anthropic,
        openai,
        gemini,
        bedrock,
    }
}

async fn messages(gw: &Gateway, body: &Value) -> Response {
    gw.post_with(
        "/v1/messages",
        &[
            ("content-type", "application/json"),
            ("x-api-key", MASTER),
            ("anthropic-version", "2023-06-01"),
        ],
        body.to_string().as_bytes(),
    )
    .await
}

fn ask(model: &str, stream: bool, tools: bool) -> Value {
    let mut body = json!({"model": model, "max_tokens": 100, "stream": stream,
        "messages": [{"role": "user", "content": "Weather in Paris?"}]});
    if tools {
        body["tools"] = json!([{"name": "get_weather", "description": "Weather",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]);
    }
    body
}

/// A Messages SSE body as (event, data) pairs, checking the framing (`event:` on every event).
fn events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let (name, data) = e.split_once('\n').unwrap_or_else(|| panic!("event: {e:?}"));
            let name = name.strip_prefix("event: ").expect("event line");
            let data = data.strip_prefix("data: ").expect("data line");
            (
                name.to_string(),
                serde_json::from_str(data).expect("JSON data"),
            )
        })
        .collect()
}

/// What a Messages stream adds up to, as the SDK accumulates it: blocks by index, text deltas
/// appended, tool input JSON joined and parsed at the block's stop.
fn accumulate(evs: &[(String, Value)]) -> Value {
    let mut message = Value::Null;
    let mut json_parts: Vec<String> = Vec::new();
    for (name, data) in evs {
        assert_eq!(data["type"], name.as_str(), "event name matches its type");
        match name.as_str() {
            "message_start" => message = data["message"].clone(),
            "content_block_start" => {
                let i = data["index"].as_u64().unwrap() as usize;
                let blocks = message["content"].as_array_mut().unwrap();
                assert_eq!(blocks.len(), i, "blocks start in order");
                blocks.push(data["content_block"].clone());
                json_parts.push(String::new());
            }
            "content_block_delta" => {
                let i = data["index"].as_u64().unwrap() as usize;
                let d = &data["delta"];
                match d["type"].as_str().unwrap() {
                    "text_delta" => {
                        let block = &mut message["content"][i];
                        let text = format!(
                            "{}{}",
                            block["text"].as_str().unwrap(),
                            d["text"].as_str().unwrap()
                        );
                        block["text"] = json!(text);
                    }
                    "input_json_delta" => {
                        json_parts[i].push_str(d["partial_json"].as_str().unwrap())
                    }
                    "thinking_delta" => {
                        let block = &mut message["content"][i];
                        let text = format!(
                            "{}{}",
                            block["thinking"].as_str().unwrap(),
                            d["thinking"].as_str().unwrap()
                        );
                        block["thinking"] = json!(text);
                    }
                    other => panic!("unexpected delta {other}"),
                }
            }
            "content_block_stop" => {
                let i = data["index"].as_u64().unwrap() as usize;
                if message["content"][i]["type"] == "tool_use" {
                    message["content"][i]["input"] =
                        serde_json::from_str(&json_parts[i]).expect("tool input JSON parses");
                }
            }
            "message_delta" => {
                message["stop_reason"] = data["delta"]["stop_reason"].clone();
                message["usage"]["output_tokens"] = data["usage"]["output_tokens"].clone();
            }
            "message_stop" | "ping" => {}
            other => panic!("unexpected event {other}: {data}"),
        }
    }
    assert_eq!(evs.last().map(|e| e.0.as_str()), Some("message_stop"));
    message
}

#[tokio::test]
async fn anthropic_deployment_gets_the_clients_body_and_answers_unchanged() {
    let s = setup().await;
    // cache_control, a signed thinking block and a field no version of the gateway knows.
    let raw = r#"{"model":"claude","max_tokens":100,"system":[{"type":"text","text":"Be brief.","cache_control":{"type":"ephemeral","ttl":"1h"}}],"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":[{"type":"thinking","thinking":"hmm","signature":"EqQBCgIYAhIM"},{"type":"text","text":"yo"}]},{"role":"user","content":[{"type":"text","text":"again","cache_control":{"type":"ephemeral"}}]}],"thinking":{"type":"enabled","budget_tokens":1024},"future_knob":{"a":[1,2]}}"#;
    // LiteLLM's per-request `cache` controls and routing `tags` are the gateway's: Anthropic
    // would refuse them as unknown fields.
    let sent = raw.replacen(
        r#""max_tokens":100,"#,
        r#""max_tokens":100,"tags":["team-a"],"cache":{"no-cache":true},"#,
        1,
    );
    let resp =
        s.gw.post_with(
            "/v1/messages?beta=true",
            &[
                ("content-type", "application/json"),
                ("authorization", &format!("Bearer {MASTER}")),
                ("anthropic-version", "2023-06-01"),
                (
                    "anthropic-beta",
                    "prompt-caching-2024-07-31,extended-cache-ttl-2025-04-11",
                ),
            ],
            sent.as_bytes(),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let up = s.anthropic.last();
    assert_eq!(up.path, "/v1/messages");
    // Byte for byte but the model and the gateway's own fields.
    let expected = raw.replace(
        r#""model":"claude""#,
        r#""model":"claude-sonnet-4-5-20250929""#,
    );
    assert_eq!(String::from_utf8_lossy(&up.body), expected);
    assert_eq!(up.header("x-api-key"), Some("sk-ant-upstream"));
    assert_eq!(
        up.header("authorization"),
        None,
        "the client's key stays here"
    );
    assert_eq!(up.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(
        up.header("anthropic-beta"),
        Some("prompt-caching-2024-07-31,extended-cache-ttl-2025-04-11")
    );
    // The answer as the upstream sent it, unknown fields included.
    let answer = resp.json();
    assert_eq!(answer["id"], "msg_up");
    assert_eq!(answer["future_field"], json!({"kept": true}));
    // Usage read on the way: priced and logged.
    let cost: f64 = resp
        .header("x-litellm-response-cost")
        .expect("cost header")
        .parse()
        .unwrap();
    assert!(cost > 0.0);
    let line = s.gw.wait_for_log_line(|l| l["route"] == "messages").await;
    assert!(
        (line["cost"].as_f64().unwrap() - cost).abs() < 1e-12,
        "{line}"
    );
    assert_eq!(s.openai.count() + s.gemini.count(), 0);
}

#[tokio::test]
async fn anthropic_stream_passes_through_byte_for_byte_and_is_priced() {
    let s = setup().await;
    for tools in [false, true] {
        let resp = messages(&s.gw, &ask("claude", true, tools)).await;
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(resp.header("content-type"), Some("text/event-stream"));
        let Reply::Parts { parts, .. } = anthropic_reply(&s.anthropic.last()) else {
            unreachable!()
        };
        let sent: Vec<u8> = parts.into_iter().flat_map(|p| p.1).collect();
        assert_eq!(resp.text(), String::from_utf8(sent).unwrap());
        let message = accumulate(&events(&resp.text()));
        if tools {
            assert_eq!(message["content"][0]["input"], json!({"city": "Paris"}));
        }
    }
    let line =
        s.gw.wait_for_log_line(|l| l["route"] == "messages" && l["stream"] == true)
            .await;
    assert!(line["cost"].as_f64().unwrap() > 0.0, "{line}");
    assert!(line.get("usage_estimated").is_none(), "{line}");
}

#[tokio::test]
async fn openai_deployment_is_translated_whole_and_streamed_with_tool_use() {
    let s = setup().await;
    let resp = messages(&s.gw, &ask("gpt", false, false)).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let m = resp.json();
    assert_eq!(m["type"], "message");
    assert_eq!(m["role"], "assistant");
    assert_eq!(m["model"], "gpt");
    assert!(m["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(
        m["content"],
        json!([{"type": "text", "text": "Hello there"}])
    );
    assert_eq!(m["stop_reason"], "end_turn");
    assert_eq!(m["usage"]["input_tokens"], 1000);
    assert_eq!(m["usage"]["output_tokens"], 500);
    assert!(resp.header("x-litellm-response-cost").is_some());
    // The upstream got chat: the Messages fields mapped.
    let up = s.openai.last().json();
    assert_eq!(up["model"], "gpt-4o");
    assert_eq!(
        up["messages"],
        json!([{"role": "user", "content": "Weather in Paris?"}])
    );
    assert_eq!(up["max_tokens"], 100);

    let resp = messages(&s.gw, &ask("gpt", false, true)).await;
    let m = resp.json();
    assert_eq!(
        m["content"],
        json!([{"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}}])
    );
    assert_eq!(m["stop_reason"], "tool_use");
    let up = s.openai.last().json();
    assert_eq!(up["tools"][0]["function"]["name"], "get_weather");

    // Streams: the upstream's bytes arrive one at a time (every split of the tool JSON).
    let resp = messages(&s.gw, &ask("gpt", true, false)).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let m = accumulate(&events(&resp.text()));
    assert_eq!(
        m["content"],
        json!([{"type": "text", "text": "Hello there"}])
    );
    assert_eq!(m["stop_reason"], "end_turn");
    assert_eq!(m["usage"]["output_tokens"], 500);
    assert_eq!(
        s.openai.last().json()["stream_options"]["include_usage"],
        true
    );

    let resp = messages(&s.gw, &ask("gpt", true, true)).await;
    let evs = events(&resp.text());
    let m = accumulate(&evs);
    assert_eq!(
        m["content"],
        json!([{"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}}])
    );
    let joined: String = evs
        .iter()
        .filter(|(_, d)| d["delta"]["type"] == "input_json_delta")
        .map(|(_, d)| d["delta"]["partial_json"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        joined, "{\"city\": \"Paris\"}",
        "the arguments exactly as sent"
    );
    assert_eq!(m["stop_reason"], "tool_use");
    let line =
        s.gw.wait_for_log_line(|l| l["route"] == "messages" && l["stream"] == true)
            .await;
    assert!(line["cost"].as_f64().unwrap() > 0.0, "{line}");
}

#[tokio::test]
async fn gemini_deployment_is_translated_whole_and_streamed_with_tool_use() {
    let s = setup().await;
    let resp = messages(&s.gw, &ask("flash", false, true)).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let m = resp.json();
    assert_eq!(m["content"][0]["type"], "tool_use");
    assert_eq!(m["content"][0]["name"], "get_weather");
    assert_eq!(m["content"][0]["input"], json!({"city": "Paris"}));
    assert_eq!(m["stop_reason"], "tool_use");
    let up = s.gemini.last().json();
    assert_eq!(
        up["tools"][0]["functionDeclarations"][0]["name"],
        "get_weather"
    );

    let resp = messages(&s.gw, &ask("flash", true, false)).await;
    let m = accumulate(&events(&resp.text()));
    assert_eq!(
        m["content"],
        json!([{"type": "text", "text": "Hello there"}])
    );
    assert_eq!(m["usage"]["output_tokens"], 500);

    let resp = messages(&s.gw, &ask("flash", true, true)).await;
    let m = accumulate(&events(&resp.text()));
    assert_eq!(m["content"][0]["input"], json!({"city": "Paris"}));
    assert_eq!(m["stop_reason"], "tool_use");
}

#[tokio::test]
async fn errors_take_anthropics_shape() {
    let s = setup().await;
    let check = |resp: &Response, status: u16, kind: &str| {
        assert_eq!(resp.status, status, "{}", resp.text());
        let v = resp.json();
        assert_eq!(v["type"], "error", "{v}");
        assert_eq!(v["error"]["type"], kind, "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{v}"
        );
        v
    };
    // No key: refused by the authenticate stage, rendered for this route.
    let resp =
        s.gw.post_with(
            "/v1/messages",
            &[("content-type", "application/json")],
            ask("gpt", false, false).to_string().as_bytes(),
        )
        .await;
    check(&resp, 401, "authentication_error");
    let resp = messages(&s.gw, &ask("no-such-model", false, false)).await;
    check(&resp, 404, "not_found_error");
    let resp = messages(&s.gw, &json!({"model": "gpt", "messages": []})).await;
    let v = check(&resp, 400, "invalid_request_error");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_tokens"),
        "{v}"
    );
    let resp =
        s.gw.post_with("/v1/messages", &[("x-api-key", MASTER)], b"{not json")
            .await;
    check(&resp, 400, "invalid_request_error");
    let resp = s.gw.get("/v1/messages", &[("x-api-key", MASTER)]).await;
    check(&resp, 405, "invalid_request_error");
    // The chat route keeps OpenAI's shape.
    let resp =
        s.gw.post_with(
            "/v1/chat/completions",
            &[("content-type", "application/json")],
            b"{}",
        )
        .await;
    assert_eq!(resp.status, 401);
    assert!(resp.json()["error"]["message"].is_string());
    assert!(resp.json().get("type").is_none());
}

#[tokio::test]
async fn upstream_errors_and_fallbacks() {
    let s = setup().await;
    // claude-down answers 529: the fallback group (OpenAI) answers, translated.
    let resp = messages(&s.gw, &ask("claude-down", false, false)).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header("x-litellm-attempted-fallbacks"), Some("1"));
    let m = resp.json();
    assert_eq!(m["type"], "message");
    assert_eq!(m["content"][0]["text"], "Hello there");
    assert_eq!(s.anthropic.last().path, "/down/v1/messages");
    // A stream falls back the same way and is translated.
    let resp = messages(&s.gw, &ask("claude-down", true, true)).await;
    let m = accumulate(&events(&resp.text()));
    assert_eq!(m["content"][0]["input"], json!({"city": "Paris"}));

    // Without a fallback the upstream's status and Anthropic's type come through.
    let up = MockUpstream::start(|_| {
        Reply::json(
            429,
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}),
        )
        .with_header("retry-after", "30")
    })
    .await;
    let gw = Gateway::start(&format!(
        "model_list:\n  - model_name: c\n    litellm_params: {{model: anthropic/claude-sonnet-4-5-20250929, api_base: {}, api_key: k}}\nrouter_settings:\n  num_retries: 0\n",
        up.base()
    ));
    let resp = messages(&gw, &ask("c", false, false)).await;
    assert_eq!(resp.status, 429, "{}", resp.text());
    assert_eq!(resp.json()["error"]["type"], "rate_limit_error");
    assert_eq!(resp.header("retry-after"), Some("30"));
}

#[tokio::test]
async fn a_translated_stream_cut_midway_ends_with_an_anthropic_error_event() {
    let up = MockUpstream::start(|_| {
        let body = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},\"finish_reason\":null}]}\n\n";
        Reply::stream("text/event-stream", body.as_bytes(), 7, Duration::ZERO).cut()
    })
    .await;
    let gw = Gateway::start(&format!(
        "model_list:\n  - model_name: m\n    litellm_params: {{model: openai/m, api_base: {}/v1, api_key: k}}\n",
        up.base()
    ));
    let resp = messages(&gw, &ask("m", true, false)).await;
    assert_eq!(resp.status, 200);
    let evs = events(&resp.text());
    let (name, data) = evs.last().unwrap();
    assert_eq!(name, "error", "{evs:?}");
    assert_eq!(data["type"], "error");
    assert_eq!(data["error"]["type"], "api_error");
    assert!(!resp.text().contains("[DONE]"));
    assert!(evs.iter().any(|(_, d)| d["delta"]["text"] == "Hel"));
}

#[tokio::test]
async fn count_tokens_asks_anthropic_and_estimates_elsewhere() {
    let s = setup().await;
    let body = json!({"model": "claude", "messages": [{"role": "user", "content": "hello there"}]});
    let resp =
        s.gw.post_with(
            "/v1/messages/count_tokens",
            &[
                ("x-api-key", MASTER),
                ("anthropic-beta", "token-counting-2024-11-01"),
            ],
            body.to_string().as_bytes(),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json(), json!({"input_tokens": 42}));
    assert_eq!(resp.header("x-switchboard-token-count"), Some("provider"));
    let up = s.anthropic.last();
    assert_eq!(up.path, "/v1/messages/count_tokens");
    assert_eq!(up.json()["model"], "claude-sonnet-4-5-20250929");
    assert_eq!(
        up.header("anthropic-beta"),
        Some("token-counting-2024-11-01")
    );

    let body = json!({"model": "gpt", "messages": [{"role": "user", "content": "hello there"}]});
    let resp =
        s.gw.post_with(
            "/v1/messages/count_tokens",
            &[("x-api-key", MASTER)],
            body.to_string().as_bytes(),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header("x-switchboard-token-count"), Some("estimate"));
    let n = resp.json()["input_tokens"].as_u64().unwrap();
    assert!((5..=20).contains(&n), "{n}");
    assert_eq!(s.openai.count(), 0, "nothing is sent to count");
    let resp =
        s.gw.post_with(
            "/v1/messages/count_tokens",
            &[],
            body.to_string().as_bytes(),
        )
        .await;
    assert_eq!(resp.status, 401);
    assert_eq!(resp.json()["error"]["type"], "authentication_error");
}

/// The official Anthropic Python SDK, non-streamed, streamed and with tool use, over Anthropic
/// and Bedrock Claude deployments (pass-through) and OpenAI and Gemini ones (translated).
#[tokio::test]
async fn anthropic_python_sdk_works_through_the_gateway() {
    let python = python_with("anthropic");
    let s = setup().await;
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/anthropic_sdk_client.py");
    let base_url = format!("http://127.0.0.1:{}", s.gw.port);
    for model in ["claude", "gpt", "flash", "bclaude"] {
        let out = tokio::process::Command::new(&python)
            .arg(&script)
            .args([&base_url, MASTER, model])
            .output()
            .await
            .expect("run python");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "SDK on {model}: {stderr}{stdout}");
        let seen: Value = serde_json::from_str(stdout.trim()).expect("the script's JSON");
        assert_eq!(seen["text"], "Hello there", "{model}: {seen}");
        assert_eq!(seen["stop_reason"], "end_turn", "{model}: {seen}");
        assert_eq!(seen["usage"]["output"], 500, "{model}: {seen}");
        assert_eq!(seen["stream_final_text"], "Hello there", "{model}: {seen}");
        let deltas = seen["deltas"].as_array().unwrap();
        // Gemini sends the text in one piece; the others in two.
        assert!(
            deltas.len() >= if model == "flash" { 1 } else { 2 },
            "{model}: {seen}"
        );
        assert_eq!(seen["stream_stop_reason"], "end_turn", "{model}: {seen}");
        assert_eq!(seen["stream_output_tokens"], 500, "{model}: {seen}");
        let tool = json!([{"name": "get_weather", "input": {"city": "Paris"}}]);
        assert_eq!(seen["stream_tool"], tool, "{model}: {seen}");
        assert_eq!(
            seen["stream_tool_stop_reason"], "tool_use",
            "{model}: {seen}"
        );
        assert_eq!(
            seen["tool"][0]["input"],
            json!({"city": "Paris"}),
            "{model}: {seen}"
        );
        assert_eq!(seen["unknown_model"], "NotFoundError", "{model}: {seen}");
        assert_eq!(
            seen["unknown_model_type"], "not_found_error",
            "{model}: {seen}"
        );
    }
}

/// Claude on Vertex AI: the client's body without `model`, with Vertex's `anthropic_version`,
/// to `publishers/anthropic/...:rawPredict` / `:streamRawPredict` with the service account's
/// token; the answers come back unchanged.
#[tokio::test]
async fn vertex_claude_gets_the_clients_body_without_model() {
    const TOKEN: &str = "ya29.messages-test";
    let base_path =
        "/v1/projects/proj-x/locations/us-east5/publishers/anthropic/models/claude-sonnet-4-5@20250929";
    let up = MockUpstream::start(move |req| {
        if req.path == "/token" {
            return Reply::json(
                200,
                json!({"access_token": TOKEN, "expires_in": 3599, "token_type": "Bearer"}),
            );
        }
        if req.header("authorization") != Some(&format!("Bearer {TOKEN}")) {
            return Reply::json(401, json!({"error": {"code": 401, "status": "UNAUTHENTICATED", "message": "bad token"}}));
        }
        let mut rec = req.clone();
        // Answer as Anthropic would (the same bodies as the Anthropic mock).
        rec.path = if req.path == format!("{base_path}:rawPredict") || req.path == format!("{base_path}:streamRawPredict") {
            "/v1/messages".into()
        } else {
            return Reply::json(404, json!({"error": {"code": 404, "status": "NOT_FOUND", "message": req.path}}));
        };
        anthropic_reply(&rec)
    })
    .await;
    let sa = json!({
        "type": "service_account",
        "project_id": "proj-x",
        "private_key_id": "kid-42",
        "private_key": include_str!("fixtures/vertex_test_key.pem"),
        "client_email": "gateway@proj-x.iam.gserviceaccount.com",
        "token_uri": format!("{}/token", up.base()),
    });
    let gw = Gateway::start(&format!(
        "model_list:\n  - model_name: vclaude\n    litellm_params:\n      model: vertex_ai/claude-sonnet-4-5@20250929\n      api_base: {}\n      vertex_project: proj-x\n      vertex_location: us-east5\n      vertex_credentials: {sa}\n",
        up.base()
    ));
    let raw = r#"{"model":"vclaude","max_tokens":100,"messages":[{"role":"user","content":[{"type":"text","text":"hi","cache_control":{"type":"ephemeral"}}]}],"future_knob":1}"#;
    let resp = gw
        .post_with(
            "/v1/messages",
            &[("content-type", "application/json")],
            raw.as_bytes(),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["future_field"], json!({"kept": true}));
    let sent = up.last();
    assert_eq!(sent.path, format!("{base_path}:rawPredict"));
    assert_eq!(
        String::from_utf8_lossy(&sent.body),
        r#"{"max_tokens":100,"messages":[{"role":"user","content":[{"type":"text","text":"hi","cache_control":{"type":"ephemeral"}}]}],"future_knob":1,"anthropic_version":"vertex-2023-10-16"}"#
    );
    // The client's anthropic-beta flags reach Vertex as the body's `anthropic_beta` array.
    let resp = gw
        .post_with(
            "/v1/messages",
            &[
                ("content-type", "application/json"),
                (
                    "anthropic-beta",
                    "context-1m-2025-08-07, interleaved-thinking-2025-05-14",
                ),
            ],
            raw.as_bytes(),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        up.last().json()["anthropic_beta"],
        json!(["context-1m-2025-08-07", "interleaved-thinking-2025-05-14"])
    );

    let resp = messages(&gw, &ask("vclaude", true, true)).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(up.last().path, format!("{base_path}:streamRawPredict"));
    let m = accumulate(&events(&resp.text()));
    assert_eq!(m["content"][0]["input"], json!({"city": "Paris"}));
    assert_eq!(m["id"], "msg_up", "the upstream's own stream");
}

/// A virtual key works with `x-api-key` as the Anthropic SDK sends it, and its Messages calls
/// are billed like chat: one spend row per call (pass-through and translated, streamed too),
/// with the end user from `metadata.user_id`.
#[tokio::test]
async fn virtual_keys_pay_for_messages_calls() {
    let s = setup().await;
    let r =
        s.gw.post_with(
            "/key/generate",
            &[("authorization", &format!("Bearer {MASTER}"))],
            b"{}",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let key = r.json()["key"].as_str().unwrap().to_string();
    for (model, stream) in [("claude", false), ("gpt", true)] {
        let mut body = ask(model, stream, false);
        body["metadata"] = json!({"user_id": "end-9"});
        let resp =
            s.gw.post_with(
                "/v1/messages",
                &[("content-type", "application/json"), ("x-api-key", &key)],
                body.to_string().as_bytes(),
            )
            .await;
        assert_eq!(resp.status, 200, "{}", resp.text());
    }
    let mut rows = Value::Null;
    let found = wait_until_async(
        async || {
            let r =
                s.gw.get(
                    &format!("/spend/logs?api_key={key}"),
                    &[("authorization", &format!("Bearer {MASTER}"))],
                )
                .await;
            rows = r.json();
            rows.as_array().is_some_and(|a| a.len() == 2)
        },
        Duration::from_secs(15),
    )
    .await;
    assert!(found, "two spend rows: {rows}");
    for row in rows.as_array().unwrap() {
        assert_eq!(row["call_type"], "anthropic_messages", "{row}");
        assert_eq!(row["end_user"], "end-9", "{row}");
        assert!(row["spend"].as_f64().unwrap() > 0.0, "{row}");
    }
    let info =
        s.gw.get(
            &format!("/key/info?key={key}"),
            &[("authorization", &format!("Bearer {MASTER}"))],
        )
        .await;
    assert!(
        info.json()["info"]["spend"].as_f64().unwrap() > 0.0,
        "{}",
        info.text()
    );
}

/// Claude on Bedrock: the client's body on InvokeModel (no `model`/`stream`, Bedrock's
/// `anthropic_version`, `anthropic-beta` as `anthropic_beta`), SigV4-signed; the stream's
/// eventstream `chunk`s come back as Anthropic SSE, event for event, split at any byte.
/// Bedrock's InvokeModel for Claude: the Anthropic mock's answers, streams re-framed as AWS
/// eventstream `chunk` events as Bedrock sends them.
fn bedrock_claude_reply(req: &Recorded) -> Reply {
    use base64::Engine;
    use switchboard::codec::eventstream::encode_event;
    // Converse (the non-Claude models): Bedrock's own answer shape.
    if req.path.ends_with("/converse") {
        return Reply::json(
            200,
            json!({"output": {"message": {"role": "assistant", "content": [{"text": "Read it."}]}},
                   "stopReason": "end_turn",
                   "usage": {"inputTokens": 12, "outputTokens": 3, "totalTokens": 15}}),
        );
    }
    let mut rec = req.clone();
    rec.path = "/v1/messages".into();
    let stream = req.path.ends_with("/invoke-with-response-stream");
    if stream {
        // The Anthropic mock's SSE, re-framed as Bedrock does.
        let mut as_json = rec.json();
        as_json["stream"] = json!(true);
        rec.body = as_json.to_string().into_bytes();
        let Reply::Parts { parts, .. } = anthropic_reply(&rec) else {
            unreachable!()
        };
        let sse: Vec<u8> = parts.into_iter().flat_map(|p| p.1).collect();
        let mut frames = Vec::new();
        for (_, data) in events(&String::from_utf8(sse).unwrap()) {
            let b64 = base64::engine::general_purpose::STANDARD.encode(data.to_string());
            encode_event(
                "chunk",
                json!({"bytes": b64}).to_string().as_bytes(),
                &mut frames,
            );
        }
        return Reply::stream(
            "application/vnd.amazon.eventstream",
            &frames,
            1,
            Duration::ZERO,
        );
    }
    anthropic_reply(&rec)
}

#[tokio::test]
async fn bedrock_claude_gets_the_clients_body_on_invoke_model() {
    let wire_model = "us.anthropic.claude-sonnet-4-5-20250929-v1%3A0";
    let up = MockUpstream::start(bedrock_claude_reply).await;
    let gw = Gateway::start(&format!(
        "model_list:\n  - model_name: bclaude\n    litellm_params:\n      model: bedrock/us.anthropic.claude-sonnet-4-5-20250929-v1:0\n      api_base: {}\n      aws_access_key_id: AKIDEXAMPLE\n      aws_secret_access_key: secret\n      aws_region_name: us-west-2\n",
        up.base()
    ));
    let raw = r#"{"model":"bclaude","max_tokens":100,"messages":[{"role":"user","content":[{"type":"text","text":"hi","cache_control":{"type":"ephemeral"}}]}],"future_knob":1}"#;
    let resp = gw
        .post_with(
            "/v1/messages",
            &[
                ("content-type", "application/json"),
                ("anthropic-beta", "a-1, b-2"),
            ],
            raw.as_bytes(),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["future_field"], json!({"kept": true}));
    let sent = up.last();
    assert_eq!(sent.path, format!("/model/{wire_model}/invoke"));
    assert_eq!(
        String::from_utf8_lossy(&sent.body),
        r#"{"max_tokens":100,"messages":[{"role":"user","content":[{"type":"text","text":"hi","cache_control":{"type":"ephemeral"}}]}],"future_knob":1,"anthropic_version":"bedrock-2023-05-31","anthropic_beta":["a-1","b-2"]}"#
    );
    assert!(sent
        .header("authorization")
        .is_some_and(|a| a.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")));

    let resp = messages(&gw, &ask("bclaude", true, true)).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        up.last().path,
        format!("/model/{wire_model}/invoke-with-response-stream")
    );
    assert!(up.last().json().get("stream").is_none());
    let m = accumulate(&events(&resp.text()));
    assert_eq!(m["id"], "msg_up");
    assert_eq!(m["content"][0]["input"], json!({"city": "Paris"}));
    assert_eq!(m["stop_reason"], "tool_use");
    let line = gw
        .wait_for_log_line(|l| l["route"] == "messages" && l["stream"] == true)
        .await;
    assert!(line["cost"].as_f64().is_some_and(|c| c > 0.0), "{line}");
}

#[tokio::test]
async fn server_tools_are_refused_when_translated_and_pass_through_to_claude_untranslated() {
    let s = setup().await;
    let mut body = ask("gpt", false, true);
    body["tools"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "web_search_20250305", "name": "web_search", "max_uses": 3}));
    let resp = messages(&s.gw, &body).await;
    assert_eq!(resp.status, 400, "{}", resp.text());
    let v = resp.json();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("tools[1]"), "{message}");
    assert!(message.contains("web_search_20250305"), "{message}");
    assert_eq!(s.openai.count(), 0, "refused, not dropped");

    // Claude gets the body as sent: the translation (which would refuse it) never runs.
    body["model"] = json!("claude");
    let resp = messages(&s.gw, &body).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        s.anthropic.last().json()["tools"][1],
        json!({"type": "web_search_20250305", "name": "web_search", "max_uses": 3})
    );
}

/// A Gemini stream that thinks, then answers.
fn thinking_gemini(rec: &Recorded) -> Reply {
    assert!(rec.path.contains("streamGenerateContent"), "{}", rec.path);
    let thought = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Pondering", "thought": true}]}}]});
    let thought2 = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": " deeply.", "thought": true}]}}]});
    let answer = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hello"}]}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5, "thoughtsTokenCount": 4, "totalTokenCount": 19}});
    let body = format!("data: {thought}\r\n\r\ndata: {thought2}\r\n\r\ndata: {answer}\r\n\r\n");
    Reply::stream("text/event-stream", body.as_bytes(), 3, Duration::ZERO)
}

#[tokio::test]
async fn thinking_top_k_and_effort_are_translated_and_thoughts_come_back_as_thinking_blocks() {
    let anthropic = MockUpstream::start(anthropic_reply).await;
    let openai = MockUpstream::start(openai_reply).await;
    let gemini = MockUpstream::start(thinking_gemini).await;
    let mut yaml = config(&anthropic.base(), &openai.base(), &gemini.base());
    yaml = yaml.replace(
        "router_settings:",
        &format!(
            "  - model_name: command\n    litellm_params:\n      model: cohere_chat/command-r\n      api_base: {}\n      api_key: co-test\nrouter_settings:",
            openai.base()
        ),
    );
    let gw = Gateway::start(&yaml);

    // Gemini: a thinking budget of 2000 is `medium` (2048), top_k is topK; thoughts stream
    // back as a thinking block ahead of the text.
    let mut body = ask("flash", true, false);
    body["thinking"] = json!({"type": "enabled", "budget_tokens": 2000});
    body["top_k"] = json!(7);
    let resp = messages(&gw, &body).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let sent = gemini.last().json();
    assert_eq!(sent["generationConfig"]["topK"], 7, "{sent}");
    assert_eq!(
        sent["generationConfig"]["thinkingConfig"],
        json!({"thinkingBudget": 2048, "includeThoughts": true})
    );
    let m = accumulate(&events(&resp.text()));
    assert_eq!(
        m["content"],
        json!([{"type": "thinking", "thinking": "Pondering deeply.", "signature": ""},
               {"type": "text", "text": "Hello"}]),
        "{m}"
    );

    // OpenAI: output_config.effort is reasoning_effort, output_config.format response_format.
    let mut body = ask("gpt", false, false);
    body["output_config"] = json!({"effort": "high",
        "format": {"type": "json_schema", "schema": {"type": "object"}}});
    let resp = messages(&gw, &body).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let sent = openai.last().json();
    assert_eq!(sent["reasoning_effort"], "high");
    assert_eq!(sent["response_format"]["type"], "json_schema");
    assert_eq!(
        sent["response_format"]["json_schema"]["schema"],
        json!({"type": "object"})
    );

    // Cohere has no thinking: a 400 that names the Messages field, nothing sent.
    let before = openai.count();
    let mut body = ask("command", false, false);
    body["thinking"] = json!({"type": "enabled", "budget_tokens": 1024});
    let resp = messages(&gw, &body).await;
    assert_eq!(resp.status, 400, "{}", resp.text());
    let message = resp.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.contains("thinking"), "{message}");
    assert_eq!(openai.count(), before);
}

/// The body of an Anthropic error answer, checked for its shape and type.
fn anthropic_error(resp: &Response, status: u16, kind: &str) -> String {
    assert_eq!(resp.status, status, "{}", resp.text());
    let v = resp.json();
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], kind, "{v}");
    v["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn messages_as(gw: &Gateway, key: &str, body: &Value) -> Response {
    gw.post_with(
        "/v1/messages",
        &[("content-type", "application/json"), ("x-api-key", key)],
        body.to_string().as_bytes(),
    )
    .await
}

/// A key's rpm_limit and max_budget hold on /v1/messages as on chat, passed through or
/// translated, refused before any upstream sees the call, in Anthropic's error shape with
/// LiteLLM's rate-limit headers.
#[tokio::test]
async fn rate_limited_and_over_budget_keys_are_refused_in_anthropics_shape() {
    let s = setup().await;
    let limited = s.gw.generate_key(MASTER, json!({"rpm_limit": 1})).await;
    let resp = messages_as(&s.gw, &limited, &ask("claude", false, false)).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let upstream_calls = s.anthropic.count() + s.openai.count();
    for model in ["claude", "gpt"] {
        let resp = messages_as(&s.gw, &limited, &ask(model, false, false)).await;
        resp.expect_rpm_refusal(1);
        let message = anthropic_error(&resp, 429, "rate_limit_error");
        assert!(message.starts_with("Rate limit exceeded"), "{message}");
    }
    let resp = messages_as(&s.gw, &limited, &ask("gpt", true, false)).await;
    anthropic_error(&resp, 429, "rate_limit_error");

    let broke = s.gw.generate_key(MASTER, json!({"max_budget": 0.0})).await;
    for model in ["claude", "gpt"] {
        let resp = messages_as(&s.gw, &broke, &ask(model, false, false)).await;
        let message = anthropic_error(&resp, 422, "billing_error");
        assert!(
            message.starts_with("Budget has been exceeded!"),
            "{message}"
        );
    }
    assert_eq!(s.anthropic.count() + s.openai.count(), upstream_calls);
}

/// An upstream's error status reaches a Messages client as Anthropic's API would answer it:
/// 529 stays 529 `overloaded_error` (the SDK's OverloadedError; chat clients get 503), and
/// each status carries Anthropic's error type.
#[tokio::test]
async fn upstream_statuses_reach_messages_clients_with_anthropics_types() {
    let up = MockUpstream::start(|r| {
        let status: u16 = r
            .path
            .trim_start_matches("/s")
            .split('/')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(500);
        Reply::json(
            status,
            json!({"type": "error", "error": {"type": "upstream_said", "message": format!("status {status}")}}),
        )
    })
    .await;
    let cases = [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (529, "overloaded_error"),
    ];
    let mut yaml = String::from("model_list:\n");
    for (status, _) in cases {
        yaml.push_str(&format!(
            "  - model_name: s{status}\n    litellm_params: {{model: anthropic/claude-sonnet-4-5-20250929, api_base: {}/s{status}, api_key: k}}\n",
            up.base()
        ));
    }
    yaml.push_str("router_settings:\n  num_retries: 0\n  disable_cooldowns: true\n");
    let gw = Gateway::start(&yaml);
    for (status, kind) in cases {
        for stream in [false, true] {
            let resp = messages(&gw, &ask(&format!("s{status}"), stream, false)).await;
            let message = anthropic_error(&resp, status, kind);
            assert!(message.contains(&format!("status {status}")), "{message}");
        }
    }
    // A chat client of the same upstream gets OpenAI's 503 for Anthropic's 529.
    let resp = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "s529", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    resp.expect_error(503);
}

/// Base64 PDF documents reach Gemini as inline PDF data, OpenAI as a `file` part and Bedrock
/// Converse as a `document` block; URL documents are refused naming the block and the
/// provider; images and documents in a tool result follow the tool message.
#[tokio::test]
async fn documents_and_tool_result_images_reach_each_provider_or_are_refused_by_name() {
    let s = setup().await;
    let pdf = json!({"type": "document", "title": "spec.pdf",
        "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjQK"}});
    let with_document = |model: &str, document: &Value| {
        json!({"model": model, "max_tokens": 100, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "Summarize this."}, document]}]})
    };
    let resp = messages(&s.gw, &with_document("flash", &pdf)).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let parts = s.gemini.last().json()["contents"][0]["parts"].clone();
    assert!(
        parts
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["inlineData"]
                == json!({"mimeType": "application/pdf", "data": "JVBERi0xLjQK"})),
        "{parts}"
    );

    let resp = messages(&s.gw, &with_document("gpt", &pdf)).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        s.openai.last().json()["messages"][0]["content"][1],
        json!({"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0xLjQK", "filename": "spec.pdf"}})
    );

    let resp = messages(&s.gw, &with_document("nova", &pdf)).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["content"][0]["text"], "Read it.");
    let sent = s.bedrock.last();
    assert!(sent.path.ends_with("/converse"), "{}", sent.path);
    assert_eq!(
        sent.json()["messages"][0]["content"][1],
        json!({"document": {"format": "pdf", "name": "Document 1", "source": {"bytes": "JVBERi0xLjQK"}}})
    );

    let by_url = json!({"type": "document", "source": {"type": "url", "url": "https://example.com/spec.pdf"}});
    let openai_calls = s.openai.count();
    let resp = messages(&s.gw, &with_document("gpt", &by_url)).await;
    let message = anthropic_error(&resp, 400, "invalid_request_error");
    assert!(
        message.starts_with("messages[0].content[1]: a document given by URL cannot be sent to"),
        "{message}"
    );
    assert_eq!(s.openai.count(), openai_calls);

    // An image a tool returned: the tool message keeps the text, the image follows it.
    let body = json!({"model": "gpt", "max_tokens": 100, "messages": [
        {"role": "user", "content": "What does the camera see?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "camera", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [
            {"type": "text", "text": "frame 1"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0K"}}]}]}]});
    let resp = messages(&s.gw, &body).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let sent = s.openai.last().json()["messages"].clone();
    assert_eq!(
        sent[2],
        json!({"role": "tool", "tool_call_id": "toolu_1", "content": "frame 1"})
    );
    assert_eq!(
        sent[3],
        json!({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}}]})
    );
    // A document in a tool result follows it on Bedrock too, named apart from the others.
    let mut body = body;
    body["model"] = json!("nova");
    body["messages"][0]["content"] = json!([{"type": "text", "text": "Read both."}, pdf.clone()]);
    body["messages"][2]["content"][0]["content"][1] = pdf;
    let resp = messages(&s.gw, &body).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let sent = s.bedrock.last().json();
    let names: Vec<&str> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|m| m["content"].as_array().unwrap())
        .filter_map(|b| b["document"]["name"].as_str())
        .collect();
    assert_eq!(names, ["Document 1", "Document 2"], "{sent}");
    // ... and a URL document there is refused by name.
    body["messages"][2]["content"][0]["content"][1] = by_url;
    let resp = messages(&s.gw, &body).await;
    let message = anthropic_error(&resp, 400, "invalid_request_error");
    assert!(
        message.starts_with("messages[2].content[0].content[1]: a document given by URL"),
        "{message}"
    );
}
