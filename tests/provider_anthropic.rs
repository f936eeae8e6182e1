//! The `anthropic/` provider end to end: the real gateway against mock upstreams speaking the
//! Anthropic Messages wire format (request headers and body as received, whole responses,
//! `event:`-named SSE streams split at awkward offsets, error bodies and statuses).

mod support;

use serde_json::{json, Value};
use std::time::Duration;
use support::*;

fn config(base: &str, params: &str) -> String {
    format!(
        r#"
model_list:
  - model_name: claude
    litellm_params:
      model: anthropic/claude-sonnet-4-5
      api_base: {base}
      api_key: sk-ant-test
{params}
"#
    )
}

fn user(text: &str) -> Value {
    json!({"role": "user", "content": text})
}

fn messages_response(content: Value, stop_reason: &str, usage: Value) -> Value {
    json!({"id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": content, "stop_reason": stop_reason, "stop_sequence": null, "usage": usage})
}

fn sse(events: &[Value]) -> Vec<u8> {
    let mut out = String::new();
    for ev in events {
        out.push_str(&format!(
            "event: {}\ndata: {ev}\n\n",
            ev["type"].as_str().unwrap()
        ));
    }
    out.into_bytes()
}

fn text_stream() -> Vec<u8> {
    sse(&[
        json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
            "content": [], "model": "claude-sonnet-4-5", "stop_reason": null,
            "usage": {"input_tokens": 20, "output_tokens": 1, "cache_creation_input_tokens": 2, "cache_read_input_tokens": 8}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "ping"}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " wörld"}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 9}}),
        json!({"type": "message_stop"}),
    ])
}

#[tokio::test]
async fn chat_is_translated_both_ways() {
    let up = MockUpstream::start(|_| {
        Reply::json(
            200,
            messages_response(
                json!([{"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_01X", "name": "weather", "input": {"city": "Paris"}}]),
                "tool_use",
                json!({"input_tokens": 50, "output_tokens": 12, "cache_creation_input_tokens": 10, "cache_read_input_tokens": 40}),
            ),
        )
    })
    .await;
    let gw = Gateway::start(&config(
        &up.base(),
        "    model_info:\n      max_output_tokens: 2048",
    ));
    let resp = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "claude", "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": "Metric units."},
                user("Weather in Paris?"),
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "toolu_A", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Rome\"}"}},
                    {"id": "toolu_B", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
                {"role": "tool", "tool_call_id": "toolu_A", "content": "20C"},
                {"role": "tool", "tool_call_id": "toolu_B", "content": "3C"},
                user("And Paris?")],
              "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
              "tool_choice": "auto", "temperature": 0.3, "stop": "END", "user": "user-7"}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());

    let sent = up.last();
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.header("x-api-key"), Some("sk-ant-test"));
    assert_eq!(sent.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(sent.header("content-type"), Some("application/json"));
    assert!(sent.header("authorization").is_none());
    let body = sent.json();
    assert_eq!(body["model"], "claude-sonnet-4-5");
    assert_eq!(
        body["max_tokens"], 2048,
        "model_info.max_output_tokens is the default"
    );
    assert_eq!(
        body["system"],
        json!([{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Metric units."}])
    );
    let turns = body["messages"].as_array().unwrap();
    assert_eq!(turns.len(), 3, "{body}");
    assert_eq!(turns[1]["role"], "assistant");
    assert_eq!(turns[1]["content"][1]["input"], json!({"city": "Oslo"}));
    assert_eq!(turns[2]["role"], "user");
    assert_eq!(
        turns[2]["content"],
        json!([{"type": "tool_result", "tool_use_id": "toolu_A", "content": "20C"},
               {"type": "tool_result", "tool_use_id": "toolu_B", "content": "3C"},
               {"type": "text", "text": "And Paris?"}])
    );
    assert_eq!(body["stop_sequences"], json!(["END"]));
    assert_eq!(body["metadata"], json!({"user_id": "user-7"}));
    assert_eq!(body["tool_choice"], json!({"type": "auto"}));
    assert_eq!(body["tools"][0]["input_schema"], json!({"type": "object"}));
    assert!(body.get("stream").is_none() && body.get("user").is_none());

    let v = resp.json();
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["object"], "chat.completion");
    let choice = &v["choices"][0];
    assert_eq!(choice["message"]["content"], "Checking.");
    assert_eq!(choice["message"]["tool_calls"][0]["id"], "toolu_01X");
    assert_eq!(
        choice["message"]["tool_calls"][0]["function"]["arguments"],
        "{\"city\":\"Paris\"}"
    );
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 100, "completion_tokens": 12, "total_tokens": 112,
            "prompt_tokens_details": {"cached_tokens": 40, "cache_creation_tokens": 10}})
    );
}

#[tokio::test]
async fn api_base_ending_in_v1_is_not_doubled_and_env_key_is_used() {
    let up = MockUpstream::start(|_| {
        Reply::json(
            200,
            messages_response(
                json!([{"type": "text", "text": "ok"}]),
                "max_tokens",
                json!({"input_tokens": 1, "output_tokens": 2}),
            ),
        )
    })
    .await;
    let yaml = format!(
        "model_list:\n  - model_name: claude\n    litellm_params:\n      model: anthropic/claude-haiku-4-5\n      api_base: {}/v1/\n",
        up.base()
    );
    let gw = Gateway::start_with_env(&yaml, &[("ANTHROPIC_API_KEY", "sk-from-env")]);
    let resp = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "claude", "messages": [user("hi")], "max_completion_tokens": 5}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["choices"][0]["finish_reason"], "length");
    let sent = up.last();
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.header("x-api-key"), Some("sk-from-env"));
    assert_eq!(sent.json()["max_tokens"], 5);
}

#[tokio::test]
async fn text_stream_with_usage() {
    let stream = text_stream();
    let up = MockUpstream::start(move |_| {
        Reply::stream("text/event-stream", &stream, 7, Duration::from_millis(1))
    })
    .await;
    let gw = Gateway::start(&config(&up.base(), ""));
    let resp = gw
        .post_stream(
            "/v1/chat/completions",
            &json!({"model": "claude", "messages": [user("hi")], "stream": true,
                "stream_options": {"include_usage": true}}),
        )
        .await
        .into_response()
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert!(resp
        .header("content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    let sent = up.last();
    let body = sent.json();
    assert_eq!(body["stream"], true);
    assert!(
        body.get("stream_options").is_none(),
        "Anthropic takes no stream_options"
    );
    assert_eq!(body["max_tokens"], 4096);

    let chunks = openai_chunks(&resp);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(stream_text(&chunks), "Hello wörld");
    let finishes: Vec<&Value> = chunks
        .iter()
        .filter(|c| {
            c["choices"]
                .get(0)
                .is_some_and(|ch| !ch["finish_reason"].is_null())
        })
        .collect();
    assert_eq!(finishes.len(), 1);
    assert_eq!(finishes[0]["choices"][0]["finish_reason"], "stop");
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    // The cost the gateway adds (its amount is checked in tests/cost.rs).
    let mut usage = last["usage"].clone();
    assert!(usage["cost"].as_f64().is_some_and(|c| c > 0.0), "{usage}");
    usage.as_object_mut().unwrap().remove("cost");
    assert_eq!(
        usage,
        json!({"prompt_tokens": 30, "completion_tokens": 9, "total_tokens": 39,
            "prompt_tokens_details": {"cached_tokens": 8, "cache_creation_tokens": 2}})
    );
    let id = &chunks[0]["id"];
    assert!(chunks.iter().all(|c| &c["id"] == id));
}

#[tokio::test]
async fn tool_call_stream_reassembles_arguments() {
    let stream = sse(&[
        json!({"type": "message_start", "message": {"usage": {"input_tokens": 30, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Let me think"}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_P", "name": "weather", "input": {}}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"city\": \"Pa"}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "ris\"}"}}),
        json!({"type": "content_block_stop", "index": 1}),
        json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "toolu_R", "name": "weather", "input": {}}}),
        json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{\"city\": \"Rome\"}"}}),
        json!({"type": "content_block_stop", "index": 2}),
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 33}}),
        json!({"type": "message_stop"}),
    ]);
    let splits: Vec<usize> = (1..stream.len()).step_by(13).collect();
    let up = MockUpstream::start(move |_| {
        Reply::stream_split("text/event-stream", &stream, &splits, Duration::ZERO)
    })
    .await;
    let gw = Gateway::start(&config(&up.base(), ""));
    let resp = gw
        .post_stream(
            "/v1/chat/completions",
            &json!({"model": "claude", "messages": [user("weather?")], "stream": true,
                "tools": [{"type": "function", "function": {"name": "weather"}}], "parallel_tool_calls": false}),
        )
        .await
        .into_response()
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        up.last().json()["tool_choice"],
        json!({"type": "auto", "disable_parallel_tool_use": true})
    );
    let chunks = openai_chunks(&resp);
    let mut calls: Vec<(String, String, String)> = Vec::new();
    for c in &chunks {
        for tc in c["choices"]
            .get(0)
            .and_then(|ch| ch["delta"]["tool_calls"].as_array())
            .into_iter()
            .flatten()
        {
            let i = tc["index"].as_u64().unwrap() as usize;
            if let Some(id) = tc["id"].as_str() {
                assert_eq!(i, calls.len(), "tool calls are numbered 0, 1, …");
                calls.push((
                    id.into(),
                    tc["function"]["name"].as_str().unwrap().into(),
                    String::new(),
                ));
            }
            calls[i].2 += tc["function"]["arguments"].as_str().unwrap_or("");
        }
    }
    assert_eq!(
        calls,
        vec![
            (
                "toolu_P".into(),
                "weather".into(),
                "{\"city\": \"Paris\"}".into()
            ),
            (
                "toolu_R".into(),
                "weather".into(),
                "{\"city\": \"Rome\"}".into()
            ),
        ]
    );
    assert_eq!(stream_text(&chunks), "", "thinking is not content");
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );
    assert!(
        chunks
            .iter()
            .all(|c| c.get("usage").is_none_or(Value::is_null)),
        "no usage chunk unless asked"
    );
}

#[tokio::test]
async fn error_event_mid_stream_ends_the_stream() {
    let mut stream = text_stream();
    let cut = String::from_utf8_lossy(&stream)
        .find("event: content_block_stop")
        .unwrap();
    stream.truncate(cut);
    stream.extend_from_slice(
        b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
    );
    let up = MockUpstream::start(move |_| {
        Reply::stream("text/event-stream", &stream, 11, Duration::ZERO)
    })
    .await;
    let gw = Gateway::start(&config(&up.base(), ""));
    let resp = gw
        .post_stream(
            "/v1/chat/completions",
            &json!({"model": "claude", "messages": [user("hi")], "stream": true}),
        )
        .await
        .into_response()
        .await;
    assert_eq!(resp.status, 200);
    let data = resp.sse_data();
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let err: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert!(err["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Overloaded"));
    assert_eq!(err["error"]["type"], "server_error");
    let chunks: Vec<Value> = data[..data.len() - 2]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(stream_text(&chunks), "Hello wörld");
}

fn anthropic_error(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

async fn error_case(reply: Reply) -> Response {
    let up = MockUpstream::start(move |_| reply.clone()).await;
    let gw = Gateway::start(&config(&up.base(), ""));
    gw.post(
        "/v1/chat/completions",
        &json!({"model": "claude", "messages": [user("hi")]}),
    )
    .await
}

#[tokio::test]
async fn overloaded_529_is_503() {
    let resp = error_case(Reply::json(
        529,
        anthropic_error("overloaded_error", "Overloaded"),
    ))
    .await;
    let e = resp.expect_error(503);
    assert!(e["message"].as_str().unwrap().contains("Overloaded"));
}

#[tokio::test]
async fn rate_limit_keeps_retry_after() {
    let resp = error_case(
        Reply::json(
            429,
            anthropic_error(
                "rate_limit_error",
                "Number of request tokens has exceeded your per-minute rate limit",
            ),
        )
        .with_header("retry-after", "23"),
    )
    .await;
    let e = resp.expect_error(429);
    assert_eq!(e["code"], "rate_limit_exceeded");
    assert_eq!(e["type"], "rate_limit_error");
    assert_eq!(resp.header("retry-after"), Some("23"));
}

#[tokio::test]
async fn prompt_too_long_is_context_length_exceeded() {
    let resp = error_case(Reply::json(
        400,
        anthropic_error(
            "invalid_request_error",
            "prompt is too long: 208310 tokens > 200000 maximum",
        ),
    ))
    .await;
    let e = resp.expect_error(400);
    assert_eq!(e["code"], "context_length_exceeded");
    assert_eq!(e["type"], "invalid_request_error");
}

#[tokio::test]
async fn bad_key_is_401() {
    let resp = error_case(Reply::json(
        401,
        anthropic_error("authentication_error", "invalid x-api-key"),
    ))
    .await;
    let e = resp.expect_error(401);
    assert_eq!(e["type"], "authentication_error");
}

#[tokio::test]
async fn malformed_2xx_is_502() {
    let resp = error_case(Reply::bytes(
        200,
        "application/json",
        b"{\"type\":\"message\",\"content\":".to_vec(),
    ))
    .await;
    resp.expect_error(502);
}

#[tokio::test]
async fn unsupported_parameter_is_400_unless_dropped() {
    let up = MockUpstream::start(|_| {
        Reply::json(
            200,
            messages_response(
                json!([{"type": "text", "text": "ok"}]),
                "end_turn",
                json!({"input_tokens": 1, "output_tokens": 1}),
            ),
        )
    })
    .await;
    let yaml = format!(
        "{}  - model_name: claude-lenient\n    litellm_params:\n      model: anthropic/claude-sonnet-4-5\n      api_base: {}\n      api_key: k\n      drop_params: true\n",
        config(&up.base(), ""),
        up.base()
    );
    let gw = Gateway::start(&yaml);
    let resp = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "claude", "messages": [user("hi")], "seed": 7}),
        )
        .await;
    let e = resp.expect_error(400);
    assert_eq!(e["param"], "seed");
    assert!(e["message"].as_str().unwrap().contains("anthropic"));
    assert_eq!(up.count(), 0, "nothing reaches the upstream");

    let resp = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "claude-lenient", "messages": [user("hi")], "seed": 7, "presence_penalty": 0.5}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let body = up.last().json();
    assert!(body.get("seed").is_none() && body.get("presence_penalty").is_none());

    // Invalid tool-call arguments in the history: a 400 naming messages.
    let resp = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "claude", "messages": [user("hi"),
                {"role": "assistant", "tool_calls": [{"id": "toolu_1", "type": "function",
                    "function": {"name": "f", "arguments": "{broken"}}]}]}),
        )
        .await;
    assert_eq!(resp.expect_error(400)["param"], "messages");
}

#[tokio::test]
async fn json_object_response_format_returns_content() {
    let up = MockUpstream::start(|_| {
        Reply::json(
            200,
            messages_response(
                json!([{"type": "tool_use", "id": "toolu_J", "name": "json_tool_call", "input": {"answer": 42}}]),
                "tool_use",
                json!({"input_tokens": 5, "output_tokens": 6}),
            ),
        )
    })
    .await;
    let gw = Gateway::start(&config(&up.base(), ""));
    let resp = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "claude", "messages": [user("answer as JSON")],
                "response_format": {"type": "json_object"}}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let sent = up.last().json();
    assert_eq!(
        sent["tool_choice"],
        json!({"type": "tool", "name": "json_tool_call"})
    );
    let v = resp.json();
    assert_eq!(v["choices"][0]["message"]["content"], "{\"answer\":42}");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(v["choices"][0]["message"].get("tool_calls").is_none());
}

#[tokio::test]
async fn json_schema_response_format_forces_the_schema_tool() {
    let up = MockUpstream::start(|_| {
        Reply::json(
            200,
            messages_response(
                json!([{"type": "tool_use", "id": "toolu_S", "name": "json_tool_call", "input": {"city": "Paris"}}]),
                "tool_use",
                json!({"input_tokens": 5, "output_tokens": 6}),
            ),
        )
    })
    .await;
    let gw = Gateway::start(&config(&up.base(), ""));
    let schema =
        json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]});
    let resp = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "claude", "messages": [user("where?")],
                "response_format": {"type": "json_schema", "json_schema": {"name": "place", "schema": schema, "strict": true}}}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let sent = up.last().json();
    let tool = sent["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "json_tool_call")
        .expect("schema tool sent");
    assert_eq!(tool["input_schema"], schema);
    assert_eq!(
        sent["tool_choice"],
        json!({"type": "tool", "name": "json_tool_call"})
    );
    assert_eq!(
        resp.json()["choices"][0]["message"]["content"],
        "{\"city\":\"Paris\"}"
    );
}
