//! `POST /v1/responses` end to end: the real gateway against mock upstreams speaking OpenAI's
//! chat wire format and Anthropic's Messages format. Requests are translated to chat (what the
//! upstream received is checked), answers come back as Response objects and streams as the
//! Responses API's typed events (upstream streams split at awkward byte offsets), with the
//! same retries, fallbacks, cost and access log as chat. Ends with the official OpenAI Python
//! SDK's `responses` client against the gateway.

mod support;

use serde_json::{json, Value};
use std::time::Duration;
use support::*;

/// An OpenAI-compatible chat server without the Responses API (vLLM): requests are
/// translated onto chat. Priced by its configured rates.
fn chat_config(base: &str) -> String {
    format!(
        r#"
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: hosted_vllm/gpt-4o
      api_base: {base}/v1
      api_key: sk-upstream
      input_cost_per_token: 2.5e-6
      output_cost_per_token: 1e-5
"#
    )
}

fn anthropic_config(base: &str) -> String {
    format!(
        r#"
model_list:
  - model_name: claude
    litellm_params:
      model: anthropic/claude-sonnet-4-5
      api_base: {base}
      api_key: sk-ant-test
"#
    )
}

fn chat_tool_call_answer() -> Value {
    json!({
        "id": "chatcmpl-up", "object": "chat.completion", "created": 1700000000, "model": "gpt-4o",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant",
            "content": "Checking.", "tool_calls": [{"id": "call_abc", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]}}],
        "usage": {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500,
            "prompt_tokens_details": {"cached_tokens": 400}}
    })
}

/// An OpenAI chat stream: text, then one tool call whose arguments arrive in three pieces, then
/// the usage chunk.
fn chat_tool_stream() -> Vec<u8> {
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1700000000,
            "model": "gpt-4o", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let mut events = vec![
        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        chunk(json!({"content": "Let me look "}), Value::Null),
        chunk(json!({"content": "that up – ☀"}), Value::Null),
        chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}),
            Value::Null,
        ),
    ];
    for piece in ["{\"ci", "ty\":\"Pa", "ris\"}"] {
        events.push(chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
            Value::Null,
        ));
    }
    events.push(chunk(json!({}), json!("tool_calls")));
    events.push(json!({"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1700000000,
        "model": "gpt-4o", "choices": [], "usage": {"prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29}}));
    let mut out = String::new();
    for e in events {
        out.push_str(&format!("data: {e}\n\n"));
    }
    out.push_str("data: [DONE]\n\n");
    out.into_bytes()
}

/// The events of a Responses stream, checking the framing: `event:` equals `type`,
/// `sequence_number` counts from 0, and the stream ends with one terminal event.
fn response_events(resp: &Response) -> Vec<Value> {
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert!(
        resp.header("content-type")
            .is_some_and(|c| c.starts_with("text/event-stream")),
        "{:?}",
        resp.header("content-type")
    );
    let text = resp.text();
    let mut events = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let mut name = None;
        let mut data = None;
        for line in block.lines() {
            if let Some(n) = line.strip_prefix("event: ") {
                name = Some(n.to_string());
            } else if let Some(d) = line.strip_prefix("data: ") {
                data = Some(d.to_string());
            }
        }
        let data: Value = serde_json::from_str(&data.expect("a data line")).unwrap();
        assert_eq!(
            Some(data["type"].as_str().unwrap()),
            name.as_deref(),
            "{block}"
        );
        assert_eq!(data["sequence_number"], events.len(), "{text}");
        events.push(data);
    }
    assert_eq!(events[0]["type"], "response.created", "{text}");
    assert_eq!(events[1]["type"], "response.in_progress", "{text}");
    events
}

fn kinds(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

fn tool() -> Value {
    json!({"type": "function", "name": "get_weather", "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        "strict": true})
}

#[tokio::test]
async fn a_request_is_translated_to_chat_and_the_answer_to_a_response_object() {
    let up = MockUpstream::start(|_| Reply::json(200, chat_tool_call_answer())).await;
    let gw = Gateway::start(&chat_config(&up.base()));
    let resp = gw
        .post(
            "/v1/responses",
            &json!({
                "model": "gpt-4o", "instructions": "Be brief.", "max_output_tokens": 300,
                "temperature": 0.2, "metadata": {"run": "7"}, "store": true, "user": "u-1",
                "input": [
                    {"role": "user", "content": [{"type": "input_text", "text": "Weather in Paris?"}]},
                    {"type": "function_call", "call_id": "call_0", "name": "get_weather", "arguments": "{\"city\":\"Rome\"}"},
                    {"type": "function_call_output", "call_id": "call_0", "output": "{\"temp\":25}"},
                ],
                "tools": [tool()], "tool_choice": "auto",
                "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}}},
            }),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let sent = up.last();
    assert_eq!(sent.path, "/v1/chat/completions");
    let chat = sent.json();
    assert_eq!(
        chat["messages"],
        json!([
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_0", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}}]},
            {"role": "tool", "tool_call_id": "call_0", "content": "{\"temp\":25}"},
        ])
    );
    assert_eq!(chat["max_completion_tokens"], 300);
    assert_eq!(chat["temperature"], 0.2);
    assert_eq!(chat["tools"][0]["function"]["name"], "get_weather");
    assert_eq!(chat["tools"][0]["function"]["strict"], true);
    assert_eq!(chat["response_format"]["type"], "json_schema");
    assert_eq!(chat["response_format"]["json_schema"]["name"], "w");
    assert!(
        chat.get("metadata").is_none() && chat.get("store").is_none(),
        "{chat}"
    );

    let r = resp.json();
    assert!(r["id"].as_str().unwrap().starts_with("resp_"), "{r}");
    assert_eq!(r["object"], "response");
    assert_eq!(r["status"], "completed");
    assert_eq!(r["model"], "gpt-4o");
    assert_eq!(r["instructions"], "Be brief.");
    assert_eq!(r["metadata"], json!({"run": "7"}));
    assert_eq!(r["store"], false, "nothing is stored");
    assert_eq!(r["output"][0]["type"], "message");
    assert_eq!(r["output"][0]["content"][0]["type"], "output_text");
    assert_eq!(r["output"][0]["content"][0]["text"], "Checking.");
    let call = &r["output"][1];
    assert_eq!(call["type"], "function_call");
    assert!(call["id"].as_str().unwrap().starts_with("fc_"));
    assert_eq!(call["call_id"], "call_abc");
    assert_eq!(call["name"], "get_weather");
    assert_eq!(call["arguments"], "{\"city\":\"Paris\"}");
    assert_eq!(
        r["usage"],
        json!({"input_tokens": 1000, "input_tokens_details": {"cached_tokens": 400},
            "output_tokens": 500, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 1500})
    );
    // Priced like chat (the configured rates; no cache-read rate: 600 uncached input, 500
    // output).
    let want = 600.0 * 2.5e-6 + 500.0 * 1e-5;
    let cost: f64 = resp
        .header("x-litellm-response-cost")
        .expect("the cost header")
        .parse()
        .unwrap();
    assert!((cost - want).abs() < 1e-12, "{cost} != {want}");
    assert_eq!(
        resp.header("content-length")
            .map(|l| l.parse::<usize>().unwrap()),
        Some(resp.body.len())
    );
    let line = gw.wait_for_log_line(|l| l["route"] == "responses").await;
    assert_eq!(line["status"], 200);
    assert_eq!(line["model"], "gpt-4o");
    assert!(
        (line["cost"].as_f64().unwrap() - want).abs() < 1e-12,
        "{line}"
    );
}

#[tokio::test]
async fn a_stream_split_anywhere_becomes_typed_events_with_the_function_call() {
    let body = chat_tool_stream();
    for piece in [1usize, 7, 64] {
        let b = body.clone();
        let up = MockUpstream::start(move |_| {
            Reply::stream("text/event-stream", &b, piece, Duration::ZERO)
        })
        .await;
        let gw = Gateway::start(&chat_config(&up.base()));
        let resp = gw
            .post(
                "/v1/responses",
                &json!({"model": "gpt-4o", "input": "Weather?", "stream": true, "tools": [tool()]}),
            )
            .await;
        let sent = up.last().json();
        assert_eq!(sent["stream"], true);
        assert_eq!(sent["stream_options"]["include_usage"], true, "{sent}");
        let events = response_events(&resp);
        assert_eq!(
            kinds(&events)[2..],
            [
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ],
            "piece {piece}"
        );
        let text: String = events
            .iter()
            .filter(|e| e["type"] == "response.output_text.delta")
            .map(|e| e["delta"].as_str().unwrap())
            .collect();
        assert_eq!(text, "Let me look that up – ☀");
        let args: String = events
            .iter()
            .filter(|e| e["type"] == "response.function_call_arguments.delta")
            .map(|e| e["delta"].as_str().unwrap())
            .collect();
        assert_eq!(args, "{\"city\":\"Paris\"}");
        let added = &events[9]["item"];
        assert_eq!(
            (
                added["type"].as_str(),
                added["call_id"].as_str(),
                added["name"].as_str(),
                added["arguments"].as_str()
            ),
            (
                Some("function_call"),
                Some("call_1"),
                Some("get_weather"),
                Some("")
            )
        );
        assert_eq!(events[9]["output_index"], 1);
        let done = &events.last().unwrap()["response"];
        assert_eq!(done["status"], "completed");
        assert_eq!(
            done["output"][0]["content"][0]["text"],
            "Let me look that up – ☀"
        );
        assert_eq!(done["output"][1]["arguments"], "{\"city\":\"Paris\"}");
        assert_eq!(done["usage"]["input_tokens"], 20);
        assert_eq!(done["usage"]["output_tokens"], 9);
        assert_eq!(done["usage"]["total_tokens"], 29);
        let line = gw.wait_for_log_line(|l| l["route"] == "responses").await;
        assert_eq!(line["status"], 200);
    }
}

fn anthropic_sse(events: &[Value]) -> Vec<u8> {
    let mut out = String::new();
    for ev in events {
        out.push_str(&format!(
            "event: {}\ndata: {ev}\n\n",
            ev["type"].as_str().unwrap()
        ));
    }
    out.into_bytes()
}

/// An Anthropic upstream: a text + tool_use message, whole or as Messages SSE.
fn anthropic_reply(r: &Recorded) -> Reply {
    let whole = json!({"id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_01X", "name": "get_weather", "input": {"city": "Paris"}}],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 50, "output_tokens": 12}});
    let stream = anthropic_sse(&[
        json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
            "content": [], "model": "claude-sonnet-4-5", "stop_reason": null,
            "usage": {"input_tokens": 20, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "lo"}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {}}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"city\": "}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "\"Oslo\"}"}}),
        json!({"type": "content_block_stop", "index": 1}),
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 9}}),
        json!({"type": "message_stop"}),
    ]);
    if r.json()["stream"] == true {
        Reply::stream("text/event-stream", &stream, 5, Duration::ZERO)
    } else {
        Reply::json(200, whole)
    }
}

#[tokio::test]
async fn anthropic_deployments_answer_whole_and_streamed() {
    let up = MockUpstream::start(anthropic_reply).await;
    let gw = Gateway::start(&anthropic_config(&up.base()));
    let resp = gw
        .post(
            "/v1/responses",
            &json!({"model": "claude", "instructions": "Be brief.", "input": "Weather?", "tools": [tool()], "max_output_tokens": 100}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let sent = up.last();
    assert_eq!(sent.path, "/v1/messages");
    let m = sent.json();
    assert_eq!(m["system"][0]["text"], "Be brief.", "{m}");
    assert_eq!(m["max_tokens"], 100);
    assert_eq!(m["tools"][0]["name"], "get_weather");
    let r = resp.json();
    assert_eq!(r["output"][0]["content"][0]["text"], "Checking.");
    assert_eq!(r["output"][1]["call_id"], "toolu_01X");
    assert_eq!(
        serde_json::from_str::<Value>(r["output"][1]["arguments"].as_str().unwrap()).unwrap(),
        json!({"city": "Paris"})
    );
    assert_eq!(r["usage"]["input_tokens"], 50);
    assert_eq!(r["usage"]["output_tokens"], 12);

    let resp = gw
        .post(
            "/v1/responses",
            &json!({"model": "claude", "input": "Weather?", "tools": [tool()], "stream": true}),
        )
        .await;
    let events = response_events(&resp);
    let done = &events.last().unwrap()["response"];
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["output"][0]["content"][0]["text"], "Hello");
    assert_eq!(done["output"][1]["call_id"], "toolu_9");
    assert_eq!(done["output"][1]["arguments"], "{\"city\": \"Oslo\"}");
    assert_eq!(done["usage"]["input_tokens"], 20);
    assert_eq!(done["usage"]["output_tokens"], 9);
}

#[tokio::test]
async fn a_failing_deployment_is_retried_then_falls_back() {
    let bad = MockUpstream::start(|_| {
        Reply::json(
            500,
            json!({"error": {"message": "boom", "type": "server_error"}}),
        )
    })
    .await;
    let good = MockUpstream::start(|r| {
        if r.json()["stream"] == true {
            Reply::stream(
                "text/event-stream",
                &openai::sse(&["from ", "the fallback"], true),
                9,
                Duration::ZERO,
            )
        } else {
            Reply::json(200, openai::completion("from the fallback"))
        }
    })
    .await;
    let gw = Gateway::start(&format!(
        r#"
model_list:
  - model_name: primary
    litellm_params: {{model: hosted_vllm/gpt-4o, api_base: {}/v1, api_key: k}}
  - model_name: backup
    litellm_params: {{model: hosted_vllm/gpt-4o, api_base: {}/v1, api_key: k}}
router_settings:
  num_retries: 1
  retry_after: 0
  fallbacks: [{{primary: [backup]}}]
"#,
        bad.base(),
        good.base()
    ));
    for stream in [false, true] {
        let resp = gw
            .post(
                "/v1/responses",
                &json!({"model": "primary", "input": "hi", "stream": stream}),
            )
            .await;
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(resp.header("x-litellm-attempted-fallbacks"), Some("1"));
        let r = if stream {
            response_events(&resp).pop().unwrap()["response"].clone()
        } else {
            resp.json()
        };
        assert_eq!(
            r["output"][0]["content"][0]["text"], "from the fallback",
            "{r}"
        );
        assert_eq!(r["status"], "completed");
    }
    assert!(bad.count() >= 2, "the primary was tried: {}", bad.count());
}

#[tokio::test]
async fn refusals_and_upstream_errors_are_openai_error_objects() {
    let up = MockUpstream::start(|_| {
        Reply::json(400, json!({"error": {"message": "temperature too high", "type": "invalid_request_error", "param": "temperature", "code": null}}))
    })
    .await;
    let gw = Gateway::start(&chat_config(&up.base()));
    for (body, param) in [
        (
            json!({"model": "gpt-4o", "input": "hi", "previous_response_id": "resp_1"}),
            "previous_response_id",
        ),
        (
            json!({"model": "gpt-4o", "input": "hi", "tools": [{"type": "web_search"}]}),
            "tools[0].type",
        ),
        (json!({"model": "gpt-4o"}), "input"),
        (
            json!({"model": "gpt-4o", "input": [{"role": "robot", "content": "x"}]}),
            "input[0].role",
        ),
    ] {
        let e = gw.post("/v1/responses", &body).await.expect_error(400);
        assert_eq!(e["param"], param, "{e}");
    }
    let e = gw
        .post(
            "/v1/responses",
            &json!({"model": "gpt-4o", "input": "hi", "previous_response_id": "resp_1"}),
        )
        .await
        .expect_error(400);
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("does not store responses"),
        "{e}"
    );
    assert_eq!(up.count(), 0, "refused before any upstream call");

    let e = gw
        .post("/v1/responses", &json!({"model": "nope", "input": "hi"}))
        .await
        .expect_error(404);
    assert_eq!(e["code"], "model_not_found");
    let e = gw
        .post(
            "/v1/responses",
            &json!({"model": "gpt-4o", "input": "hi", "temperature": 9}),
        )
        .await
        .expect_error(400);
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("temperature too high"),
        "{e}"
    );
    gw.get("/v1/responses/resp_123", &[])
        .await
        .expect_error(404);
    let r = gw
        .post_with(
            "/v1/responses",
            &[("content-type", "application/json")],
            b"{not json",
        )
        .await;
    r.expect_error(400);
}

#[tokio::test]
async fn a_stream_cut_by_the_upstream_ends_with_response_failed() {
    let mut body = Vec::new();
    body.extend_from_slice(&chat_tool_stream()[..300]);
    let up = MockUpstream::start(move |_| {
        Reply::stream("text/event-stream", &body, 50, Duration::ZERO).cut()
    })
    .await;
    let gw = Gateway::start(&chat_config(&up.base()));
    let resp = gw
        .post(
            "/v1/responses",
            &json!({"model": "gpt-4o", "input": "hi", "stream": true}),
        )
        .await;
    let events = response_events(&resp);
    let k = kinds(&events);
    assert_eq!(&k[k.len() - 2..], ["error", "response.failed"], "{k:?}");
    assert_eq!(events.last().unwrap()["response"]["status"], "failed");
}

/// A Responses API stream as OpenAI writes it: typed events, a web search call, text with a
/// multi-byte character, the usage in `response.completed`; no `[DONE]`.
fn native_stream() -> Vec<u8> {
    let events = [
        json!({"type": "response.created", "sequence_number": 0, "response": {"id": "resp_native1", "object": "response", "status": "in_progress", "model": "gpt-4o-2024-08-06", "output": [], "store": true, "usage": null}}),
        json!({"type": "response.output_item.added", "sequence_number": 1, "output_index": 0, "item": {"id": "ws_1", "type": "web_search_call", "status": "in_progress"}}),
        json!({"type": "response.output_item.done", "sequence_number": 2, "output_index": 0, "item": {"id": "ws_1", "type": "web_search_call", "status": "completed", "action": {"type": "search", "query": "weather"}}}),
        json!({"type": "response.output_text.delta", "sequence_number": 3, "item_id": "msg_1", "output_index": 1, "content_index": 0, "delta": "Sunny ☀ in Paris", "logprobs": []}),
        json!({"type": "response.completed", "sequence_number": 4, "response": {"id": "resp_native1", "object": "response", "status": "completed", "model": "gpt-4o-2024-08-06", "output": [], "store": true,
            "usage": {"input_tokens": 1200, "input_tokens_details": {"cached_tokens": 200}, "output_tokens": 80, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 1280}}}),
    ];
    let mut out = String::new();
    for e in events {
        out.push_str(&format!(
            "event: {}\ndata: {e}\n\n",
            e["type"].as_str().unwrap()
        ));
    }
    out.into_bytes()
}

fn native_response() -> Vec<u8> {
    // Spacing and key order as the upstream chose: the client must get these exact bytes.
    br#"{"id": "resp_native2", "object": "response", "status": "completed", "model": "gpt-4o-2024-08-06",
 "output": [{"id": "ws_2", "type": "web_search_call", "status": "completed"},
  {"id": "msg_2", "type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Sunny \"resp_fake\"", "annotations": [{"type": "url_citation", "url": "https://example.com"}]}]}],
 "store": true, "previous_response_id": "resp_native1",
 "usage": {"input_tokens": 300, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 20, "output_tokens_details": {"reasoning_tokens": 5}, "total_tokens": 320}}"#
        .to_vec()
}

fn native_upstream_reply(r: &Recorded) -> Reply {
    if r.path != "/v1/responses" {
        return Reply::json(404, json!({"error": {"message": "no such route"}}));
    }
    if r.json()["stream"] == true {
        let body = native_stream();
        // Splits inside `event:`, inside a JSON key, and inside the 3-byte ☀.
        let sun = body.windows(3).position(|w| w == "☀".as_bytes()).unwrap();
        Reply::stream_split(
            "text/event-stream",
            &body,
            &[3, 31, 200, sun + 1, sun + 2, body.len() - 7],
            Duration::ZERO,
        )
    } else {
        Reply::bytes(200, "application/json", native_response())
    }
}

/// A `/v1/responses` call to an OpenAI deployment goes to its `/responses` endpoint with the
/// client's body byte for byte except `model`, built-in tools and stored state included; the
/// answer (whole, and a stream split at awkward bytes) reaches the client unchanged; its usage
/// is priced and logged; a `previous_response_id` goes back to the deployment that made it.
#[tokio::test]
async fn openai_deployments_get_the_responses_api_passed_through() {
    let one = MockUpstream::start(native_upstream_reply).await;
    let two = MockUpstream::start(native_upstream_reply).await;
    let gw = Gateway::start(&format!(
        r#"
model_list:
  - model_name: smart
    litellm_params: {{model: openai/gpt-4o-2024-08-06, api_base: {}/v1, api_key: sk-one}}
  - model_name: smart
    litellm_params: {{model: openai/gpt-4o-2024-08-06, api_base: {}/v1, api_key: sk-two}}
router_settings:
  routing_strategy: simple-shuffle
"#,
        one.base(),
        two.base()
    ));
    let client_body = |stream: bool, previous: &str| {
        format!(
            r#"{{"model":"smart","input":[{{"role":"user","content":"Weather?"}}],"tools":[{{"type":"web_search_preview","search_context_size":"low"}}],"store":true,"reasoning":{{"effort":"low","summary":"auto"}},"include":["reasoning.encrypted_content"],"previous_response_id":{previous},"a_new_field":{{"kept": [1, 2.50, "x"]}},"stream":{stream}}}"#
        )
    };
    let json_ct = ("content-type", "application/json");

    // Streamed: the exact upstream bytes, and the response id remembered.
    let body = client_body(true, "null");
    let resp = gw
        .post_with("/v1/responses", &[json_ct], body.as_bytes())
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert!(resp
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/event-stream")));
    assert_eq!(resp.text(), String::from_utf8(native_stream()).unwrap());
    let first = if one.count() == 1 { &one } else { &two };
    let sent = first.last();
    assert_eq!(sent.path, "/v1/responses");
    assert_eq!(
        String::from_utf8(sent.body.clone()).unwrap(),
        body.replace(r#""model":"smart""#, r#""model":"gpt-4o-2024-08-06""#),
        "the body is passed through except model"
    );
    let line = gw.wait_for_log_line(|l| l["route"] == "responses").await;
    assert_eq!(line["status"], 200);
    assert_eq!(
        (
            line["prompt_tokens"].as_u64(),
            line["completion_tokens"].as_u64()
        ),
        (Some(1200), Some(80)),
        "{line}"
    );
    // gpt-4o-2024-08-06: 1000 uncached input at 2.5e-6, 200 cached at 1.25e-6, 80 output at 1e-5.
    let want = 1000.0 * 2.5e-6 + 200.0 * 1.25e-6 + 80.0 * 1e-5;
    assert!(
        (line["cost"].as_f64().unwrap() - want).abs() < 1e-12,
        "{line}"
    );

    // Whole, continuing that response: sent to the deployment that made it, every time.
    for _ in 0..6 {
        let body = client_body(false, r#""resp_native1""#);
        let resp = gw
            .post_with("/v1/responses", &[json_ct], body.as_bytes())
            .await;
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(resp.body, native_response(), "the answer is passed through");
        assert_eq!(
            resp.header("content-length"),
            Some(native_response().len().to_string().as_str())
        );
        let cost: f64 = resp
            .header("x-litellm-response-cost")
            .unwrap()
            .parse()
            .unwrap();
        let want = 300.0 * 2.5e-6 + 20.0 * 1e-5;
        assert!((cost - want).abs() < 1e-12, "{cost} != {want}");
    }
    let (made, other) = if one.count() >= two.count() {
        (&one, &two)
    } else {
        (&two, &one)
    };
    assert_eq!(made.count(), 7, "previous_response_id pins the deployment");
    assert_eq!(other.count(), 0);
}

/// A native upstream that also answers for its stored responses (GET, DELETE, input items).
fn storing_upstream_reply(r: &Recorded) -> Reply {
    match (r.method.as_str(), r.path.as_str()) {
        ("POST", "/v1/responses") => native_upstream_reply(r),
        ("DELETE", p) => Reply::json(
            200,
            json!({"id": p.rsplit('/').next(), "object": "response.deleted", "deleted": true}),
        ),
        ("GET", p) if p.starts_with("/v1/responses/resp_native2") => {
            let path = p.split('?').next();
            Reply::json(
                200,
                json!({"id": "resp_native2", "object": "response", "path": path}),
            )
        }
        _ => Reply::json(
            404,
            json!({"error": {"message": "No response found with id 'resp_x'.", "type": "invalid_request_error"}}),
        ),
    }
}

/// `GET`/`DELETE /v1/responses/{id}` and `…/input_items` go to the deployment that made the
/// response; an id the gateway never saw goes to the first deployment with the API, whose
/// 404 the client gets.
#[tokio::test]
async fn stored_responses_are_read_where_they_were_made() {
    let one = MockUpstream::start(storing_upstream_reply).await;
    let two = MockUpstream::start(storing_upstream_reply).await;
    let gw = Gateway::start(&format!(
        r#"
model_list:
  - model_name: smart
    litellm_params: {{model: openai/gpt-4o, api_base: {}/v1, api_key: sk-one}}
  - model_name: smart
    litellm_params: {{model: openai/gpt-4o, api_base: {}/v1, api_key: sk-two}}
"#,
        one.base(),
        two.base()
    ));
    let resp = gw
        .post("/v1/responses", &json!({"model": "smart", "input": "hi"}))
        .await;
    assert_eq!(resp.json()["id"], "resp_native2");
    let (made, other) = if one.count() == 1 {
        (&one, &two)
    } else {
        (&two, &one)
    };
    for _ in 0..3 {
        let r = gw.get("/v1/responses/resp_native2?include=x", &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["path"], "/v1/responses/resp_native2");
        assert!(
            made.last().path.ends_with("?include=x"),
            "{}",
            made.last().path
        );
    }
    let r = gw
        .get("/v1/responses/resp_native2/input_items?limit=5", &[])
        .await;
    assert_eq!(r.json()["path"], "/v1/responses/resp_native2/input_items");
    let r = request(gw.port, "DELETE", "/v1/responses/resp_native2", &[], b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["deleted"], true);
    assert_eq!(made.count(), 6);
    assert_eq!(other.count(), 0, "always the deployment that made it");
    assert!(made.last().header("authorization").is_some());

    let r = gw.get("/v1/responses/resp_x/cancel", &[]).await;
    assert_eq!(r.status, 405);
    let e = gw
        .get("/v1/responses/resp_unknown", &[])
        .await
        .expect_error(404);
    assert!(
        e["message"].as_str().unwrap().contains("No response found"),
        "{e}"
    );
}

/// A body only the Responses API can serve (a built-in tool) works on an OpenAI deployment
/// and is refused with a 400 naming the field on a deployment that gets chat; a group with
/// both sends it only where it can be served.
#[tokio::test]
async fn built_in_tools_work_natively_and_are_refused_when_translated() {
    let native = MockUpstream::start(native_upstream_reply).await;
    let chat = MockUpstream::start(|_| Reply::json(200, openai::completion("chat"))).await;
    let gw = Gateway::start(&format!(
        r#"
model_list:
  - model_name: native
    litellm_params: {{model: openai/gpt-4o, api_base: {0}/v1, api_key: k}}
  - model_name: translated
    litellm_params: {{model: hosted_vllm/llama, api_base: {1}/v1, api_key: k}}
  - model_name: mixed
    litellm_params: {{model: hosted_vllm/llama, api_base: {1}/v1, api_key: k}}
  - model_name: mixed
    litellm_params: {{model: openai/gpt-4o, api_base: {0}/v1, api_key: k}}
router_settings:
  num_retries: 3
  retry_after: 0
"#,
        native.base(),
        chat.base()
    ));
    let body = |model: &str| json!({"model": model, "input": "Weather?", "tools": [{"type": "web_search"}], "tool_choice": "auto"});
    let resp = gw.post("/v1/responses", &body("native")).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["id"], "resp_native2");
    assert_eq!(
        native.last().json()["tools"],
        json!([{"type": "web_search"}])
    );

    let e = gw
        .post("/v1/responses", &body("translated"))
        .await
        .expect_error(400);
    assert_eq!(e["param"], "tools[0].type", "{e}");
    assert_eq!(chat.count(), 0);

    for _ in 0..4 {
        let resp = gw.post("/v1/responses", &body("mixed")).await;
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(resp.json()["id"], "resp_native2");
    }
    assert_eq!(
        chat.count(),
        0,
        "the chat deployment never gets what it cannot serve"
    );

    // A plain request on the mixed group is served by either, each in its own way.
    for _ in 0..6 {
        let resp = gw
            .post("/v1/responses", &json!({"model": "mixed", "input": "hi"}))
            .await;
        assert_eq!(resp.status, 200, "{}", resp.text());
        let r = resp.json();
        assert_eq!(r["object"], "response", "{r}");
    }
}

/// A Response object as OpenAI's Responses API returns it: text, then a function call.
fn native_sdk_response(status: &str, output: Value, usage: Value) -> Value {
    json!({"id": "resp_sdk1", "object": "response", "created_at": 1700000000, "status": status,
        "model": "gpt-4o", "output": output, "parallel_tool_calls": true, "tool_choice": "auto",
        "tools": [], "usage": usage, "error": null, "incomplete_details": null,
        "instructions": null, "metadata": {}, "temperature": 1.0, "top_p": 1.0,
        "text": {"format": {"type": "text"}}, "store": true})
}

/// OpenAI's Responses API: the whole Response, or its typed event stream, as the SDK's
/// accumulator expects them.
fn native_sdk_reply(r: &Recorded) -> Reply {
    let msg = json!({"id": "msg_n1", "type": "message", "status": "completed", "role": "assistant",
        "content": [{"type": "output_text", "text": "Native ☀ weather", "annotations": []}]});
    let call = json!({"id": "fc_n1", "type": "function_call", "status": "completed", "call_id": "call_n1",
        "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"});
    let usage = json!({"input_tokens": 30, "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 12, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 42});
    if r.json()["stream"] != true {
        return Reply::json(
            200,
            native_sdk_response("completed", json!([msg, call]), usage),
        );
    }
    let text_at = json!({"item_id": "msg_n1", "output_index": 0, "content_index": 0});
    let with = |base: &Value, extra: Value| {
        let mut v = base.clone();
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    };
    let call_at = json!({"item_id": "fc_n1", "output_index": 1});
    let events = [
        json!({"type": "response.created", "response": native_sdk_response("in_progress", json!([]), Value::Null)}),
        json!({"type": "response.in_progress", "response": native_sdk_response("in_progress", json!([]), Value::Null)}),
        json!({"type": "response.output_item.added", "output_index": 0, "item": {"id": "msg_n1", "type": "message", "status": "in_progress", "role": "assistant", "content": []}}),
        with(
            &text_at,
            json!({"type": "response.content_part.added", "part": {"type": "output_text", "text": "", "annotations": []}}),
        ),
        with(
            &text_at,
            json!({"type": "response.output_text.delta", "delta": "Native ☀ ", "logprobs": []}),
        ),
        with(
            &text_at,
            json!({"type": "response.output_text.delta", "delta": "weather", "logprobs": []}),
        ),
        with(
            &text_at,
            json!({"type": "response.output_text.done", "text": "Native ☀ weather", "logprobs": []}),
        ),
        with(
            &text_at,
            json!({"type": "response.content_part.done", "part": msg["content"][0]}),
        ),
        json!({"type": "response.output_item.done", "output_index": 0, "item": msg}),
        json!({"type": "response.output_item.added", "output_index": 1, "item": with(&call, json!({"status": "in_progress", "arguments": ""}))}),
        with(
            &call_at,
            json!({"type": "response.function_call_arguments.delta", "delta": "{\"city\":"}),
        ),
        with(
            &call_at,
            json!({"type": "response.function_call_arguments.delta", "delta": "\"Paris\"}"}),
        ),
        with(
            &call_at,
            json!({"type": "response.function_call_arguments.done", "arguments": "{\"city\":\"Paris\"}"}),
        ),
        json!({"type": "response.output_item.done", "output_index": 1, "item": call}),
        json!({"type": "response.completed", "response": native_sdk_response("completed", json!([msg, call]), usage)}),
    ];
    let mut out = String::new();
    for (seq, mut e) in events.into_iter().enumerate() {
        e["sequence_number"] = json!(seq);
        out.push_str(&format!(
            "event: {}\ndata: {e}\n\n",
            e["type"].as_str().unwrap()
        ));
    }
    Reply::stream("text/event-stream", out.as_bytes(), 11, Duration::ZERO)
}

/// Gemini's generateContent and its SSE stream: text, then a function call.
fn gemini_reply(r: &Recorded) -> Reply {
    let call = json!({"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}});
    let usage = json!({"promptTokenCount": 11, "candidatesTokenCount": 7, "totalTokenCount": 18});
    if !r.path.contains(":streamGenerateContent") {
        return Reply::json(
            200,
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Gemini says"}, call]},
                "finishReason": "STOP"}], "usageMetadata": usage}),
        );
    }
    let chunks = [
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Gemini "}]}}]}),
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "says"}]}}]}),
        json!({"candidates": [{"content": {"role": "model", "parts": [call]}, "finishReason": "STOP"}],
            "usageMetadata": usage}),
    ];
    let body: String = chunks
        .iter()
        .map(|c| format!("data: {c}\r\n\r\n"))
        .collect();
    Reply::stream("text/event-stream", body.as_bytes(), 7, Duration::ZERO)
}

/// Bedrock's Converse and ConverseStream (AWS eventstream): text, then a tool use.
fn bedrock_reply(r: &Recorded) -> Reply {
    use switchboard::codec::eventstream::encode_event;
    if !r.path.ends_with("/converse-stream") {
        return Reply::json(
            200,
            json!({"output": {"message": {"role": "assistant", "content": [{"text": "Bedrock says"},
                {"toolUse": {"toolUseId": "tooluse_1", "name": "get_weather", "input": {"city": "Paris"}}}]}},
                "stopReason": "tool_use", "usage": {"inputTokens": 13, "outputTokens": 8, "totalTokens": 21}}),
        );
    }
    let mut frames = Vec::new();
    for (kind, body) in [
        ("messageStart", json!({"role": "assistant"})),
        (
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"text": "Bedrock "}}),
        ),
        (
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"text": "says"}}),
        ),
        ("contentBlockStop", json!({"contentBlockIndex": 0})),
        (
            "contentBlockStart",
            json!({"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "tooluse_1", "name": "get_weather"}}}),
        ),
        (
            "contentBlockDelta",
            json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "{\"city\":"}}}),
        ),
        (
            "contentBlockDelta",
            json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "\"Paris\"}"}}}),
        ),
        ("contentBlockStop", json!({"contentBlockIndex": 1})),
        ("messageStop", json!({"stopReason": "tool_use"})),
        (
            "metadata",
            json!({"usage": {"inputTokens": 13, "outputTokens": 8, "totalTokens": 21}, "metrics": {"latencyMs": 5}}),
        ),
    ] {
        encode_event(kind, body.to_string().as_bytes(), &mut frames);
    }
    Reply::stream(
        "application/vnd.amazon.eventstream",
        &frames,
        9,
        Duration::ZERO,
    )
}

/// The official OpenAI Python SDK: `responses.create`, `responses.create(stream=True)` and the
/// `responses.stream` helper (whose accumulator checks event order and indices), with a
/// function call, over an OpenAI deployment (the Responses API passed through) and, translated,
/// an OpenAI-compatible chat server, Anthropic, Gemini and Bedrock.
#[tokio::test]
async fn the_openai_python_sdk_responses_client_works() {
    let stream = chat_tool_stream();
    let chat = MockUpstream::start(move |r| {
        if r.json()["stream"] == true {
            Reply::stream("text/event-stream", &stream, 13, Duration::ZERO)
        } else {
            Reply::json(200, chat_tool_call_answer())
        }
    })
    .await;
    let native = MockUpstream::start(native_sdk_reply).await;
    let anthropic = MockUpstream::start(anthropic_reply).await;
    let gemini = MockUpstream::start(gemini_reply).await;
    let bedrock = MockUpstream::start(bedrock_reply).await;
    let gw = Gateway::start(&format!(
        r#"{}  - model_name: openai
    litellm_params: {{model: openai/gpt-4o, api_base: {}/v1, api_key: k}}
  - model_name: claude
    litellm_params: {{model: anthropic/claude-sonnet-4-5, api_base: {}, api_key: k}}
  - model_name: gemini
    litellm_params: {{model: gemini/gemini-2.0-flash, api_base: {}/v1beta, api_key: k}}
  - model_name: nova
    litellm_params: {{model: bedrock/amazon.nova-pro-v1:0, api_base: {}, aws_access_key_id: AKIDEXAMPLE, aws_secret_access_key: secret, aws_region_name: us-west-2}}
"#,
        chat_config(&chat.base()),
        native.base(),
        anthropic.base(),
        gemini.base(),
        bedrock.base()
    ));
    let paris = "{\"city\":\"Paris\"}";
    // (group, whole: text, call, usage; streamed: text, call, usage; whether it is refused
    // `previous_response_id`). Calls are (call id or "" when the gateway makes it, name, args).
    type Answer<'a> = (&'a str, (&'a str, &'a str), [u64; 3]);
    let cases: [(&str, Answer, Answer, bool); 5] = [
        (
            "gpt-4o",
            ("Checking.", ("call_abc", paris), [1000, 500, 1500]),
            ("Let me look that up – ☀", ("call_1", paris), [20, 9, 29]),
            true,
        ),
        (
            "openai",
            ("Native ☀ weather", ("call_n1", paris), [30, 12, 42]),
            ("Native ☀ weather", ("call_n1", paris), [30, 12, 42]),
            false,
        ),
        (
            "claude",
            ("Checking.", ("toolu_01X", paris), [50, 12, 62]),
            ("Hello", ("toolu_9", "{\"city\": \"Oslo\"}"), [20, 9, 29]),
            true,
        ),
        (
            "gemini",
            ("Gemini says", ("", paris), [11, 7, 18]),
            ("Gemini says", ("", paris), [11, 7, 18]),
            true,
        ),
        (
            "nova",
            ("Bedrock says", ("tooluse_1", paris), [13, 8, 21]),
            ("Bedrock says", ("tooluse_1", paris), [13, 8, 21]),
            true,
        ),
    ];
    for (model, whole, streamed, refuses) in cases {
        let seen = openai_sdk_ingress(gw.port, &["responses", model]).await;
        for (k, (text, (call_id, args), usage)) in [
            ("whole", whole),
            ("created", streamed),
            ("stream_helper", streamed),
        ] {
            let got = &seen[k];
            assert_eq!(got["text"], text, "{model} {k}: {seen}");
            let calls = got["calls"].as_array().unwrap();
            assert_eq!(calls.len(), 1, "{model} {k}: {seen}");
            let id = calls[0][0].as_str().unwrap();
            if call_id.is_empty() {
                assert!(!id.is_empty(), "{model} {k}: {seen}");
            } else {
                assert_eq!(id, call_id, "{model} {k}");
            }
            assert_eq!(calls[0][1], "get_weather", "{model} {k}");
            assert_eq!(calls[0][2], args, "{model} {k}");
            assert_eq!(got["usage"], json!(usage), "{model} {k}");
        }
        if refuses {
            assert_eq!(seen["error"]["status"], 400, "{model}: {seen}");
        } else {
            assert!(seen.get("error").is_none(), "{model}: {seen}");
        }
    }
    assert_eq!(
        native
            .requests()
            .iter()
            .filter(|r| r.path == "/v1/responses")
            .count(),
        4
    );
    assert!(bedrock
        .requests()
        .iter()
        .all(|r| r.path.contains("/model/amazon.nova-pro-v1")));
}

/// The same keys and spend as chat: a call without a key is a 401 (nothing sent upstream), a
/// virtual key's call is logged in LiteLLM's spend table with call type `aresponses`.
#[tokio::test]
async fn keys_are_checked_and_spend_is_logged_as_aresponses() {
    const MASTER: &str = "sk-master-1234";
    let up = MockUpstream::start(|_| Reply::json(200, openai::completion("hello"))).await;
    let gw = Gateway::start(&format!(
        "{}general_settings:\n  master_key: {MASTER}\n",
        chat_config(&up.base())
    ));
    let body = json!({"model": "gpt-4o", "input": "hi"}).to_string();
    let json_ct = ("content-type", "application/json");
    let r = gw
        .post_with("/v1/responses", &[json_ct], body.as_bytes())
        .await;
    r.expect_error(401);
    assert_eq!(up.count(), 0);

    let master = format!("Bearer {MASTER}");
    let r = gw
        .post_with(
            "/key/generate",
            &[json_ct, ("authorization", &master)],
            b"{}",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let key = r.json()["key"].as_str().unwrap().to_string();
    let bearer = format!("Bearer {key}");
    let r = gw
        .post_with(
            "/v1/responses",
            &[json_ct, ("authorization", &bearer)],
            body.as_bytes(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["output"][0]["content"][0]["text"], "hello");

    let hash = switchboard::keys::hex(&switchboard::keys::hash_key(&key));
    let url = format!("sqlite://{}", gw.dir.join("switchboard.db").display());
    let store = switchboard::store::Store::open(&url).await.unwrap();
    let logged = format!(
        "SELECT CAST(COUNT(*) AS REAL) FROM \"LiteLLM_SpendLogs\" WHERE api_key = '{hash}' AND call_type = 'aresponses' AND model_group = 'gpt-4o' AND total_tokens = 18 AND spend > 0"
    );
    assert!(
        wait_until_async(
            async || store.scalar_f64(&logged).await.unwrap_or(0.0) == 1.0,
            Duration::from_secs(15)
        )
        .await,
        "the call's spend row"
    );

    // A key's rpm_limit holds on this route as on chat: the second call in the minute is
    // LiteLLM's 429, in OpenAI's shape, and never reaches the upstream.
    let limited = gw.generate_key(MASTER, json!({"rpm_limit": 1})).await;
    let before = up.count();
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        gw.post_as(&limited, "/v1/responses", &body).await.status,
        200
    );
    let refused = gw.post_as(&limited, "/v1/responses", &body).await;
    refused.expect_rpm_refusal(1);
    assert_eq!(refused.expect_error(429)["type"], "rate_limit_error");
    assert_eq!(up.count(), before + 1);
}
