//! Cohere v2 through the real gateway against a mock speaking Cohere's native API: chat, tools,
//! SSE streams (text and tool calls, with and without `event:` lines), embeddings (float and
//! base64), error mapping, and `api_base` given as a base URL or as the full endpoint.

mod support;

use serde_json::{json, Value};
use std::time::Duration;
use support::*;

fn config(base: &str) -> String {
    format!(
        r#"
model_list:
  - model_name: command
    litellm_params:
      model: cohere_chat/command-r-plus
      api_base: {base}/v2/chat
      api_key: co-key
  - model_name: command-base
    litellm_params:
      model: cohere/command-r-plus
      api_base: {base}
      api_key: co-key
  - model_name: command-drop
    litellm_params:
      model: cohere_chat/command-r-plus
      api_base: {base}
      api_key: co-key
      drop_params: true
  - model_name: embed
    litellm_params:
      model: cohere/embed-english-v3.0
      api_base: {base}/v2/chat
      api_key: co-key
"#
    )
}

fn chat_response(text: &str) -> Value {
    json!({
        "id": "c1", "finish_reason": "COMPLETE",
        "message": {"role": "assistant", "content": [{"type": "text", "text": text}]},
        "usage": {"billed_units": {"input_tokens": 5, "output_tokens": 2},
                  "tokens": {"input_tokens": 14, "output_tokens": 2}}
    })
}

const TEXT_SSE: &str = concat!(
    "event: message-start\n",
    "data: {\"id\":\"s1\",\"type\":\"message-start\",\"delta\":{\"message\":{\"role\":\"assistant\",\"content\":[],\"tool_plan\":\"\",\"tool_calls\":[],\"citations\":[]}}}\n\n",
    "event: content-start\n",
    "data: {\"type\":\"content-start\",\"index\":0,\"delta\":{\"message\":{\"content\":{\"type\":\"text\",\"text\":\"\"}}}}\n\n",
    "event: content-delta\n",
    "data: {\"type\":\"content-delta\",\"index\":0,\"delta\":{\"message\":{\"content\":{\"text\":\"Bonjour\"}}}}\n\n",
    "event: content-delta\n",
    "data: {\"type\":\"content-delta\",\"index\":0,\"delta\":{\"message\":{\"content\":{\"text\":\" le monde\"}}}}\n\n",
    "event: content-end\n",
    "data: {\"type\":\"content-end\",\"index\":0}\n\n",
    "event: message-end\n",
    "data: {\"type\":\"message-end\",\"delta\":{\"finish_reason\":\"COMPLETE\",\"usage\":{\"billed_units\":{\"input_tokens\":3,\"output_tokens\":2},\"tokens\":{\"input_tokens\":9,\"output_tokens\":2}}}}\n\n",
);

const TOOL_SSE: &str = concat!(
    "data: {\"id\":\"s2\",\"type\":\"message-start\",\"delta\":{\"message\":{\"role\":\"assistant\"}}}\n\n",
    "data: {\"type\":\"tool-plan-delta\",\"delta\":{\"message\":{\"tool_plan\":\"I will check\"}}}\n\n",
    "data: {\"type\":\"tool-call-start\",\"index\":0,\"delta\":{\"message\":{\"tool_calls\":{\"id\":\"get_weather_x1\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}}}}\n\n",
    "data: {\"type\":\"tool-call-delta\",\"index\":0,\"delta\":{\"message\":{\"tool_calls\":{\"function\":{\"arguments\":\"{\\\"city\\\":\"}}}}}\n\n",
    "data: {\"type\":\"tool-call-delta\",\"index\":0,\"delta\":{\"message\":{\"tool_calls\":{\"function\":{\"arguments\":\"\\\"Paris\\\"}\"}}}}}\n\n",
    "data: {\"type\":\"tool-call-end\",\"index\":0}\n\n",
    "data: {\"type\":\"message-end\",\"delta\":{\"finish_reason\":\"TOOL_CALL\",\"usage\":{\"tokens\":{\"input_tokens\":30,\"output_tokens\":12}}}}\n\n",
);

/// Answers like Cohere: the scenario is picked by the last user message.
fn cohere_mock(req: &Recorded) -> Reply {
    if req.path == "/v2/embed" {
        let n = req.json()["texts"].as_array().map_or(0, |t| t.len());
        let vectors: Vec<Value> = (0..n).map(|i| json!([1.0, -0.5, i as f64])).collect();
        return Reply::json(
            200,
            json!({"id": "e1", "embeddings": {"float": vectors}, "texts": [],
                   "meta": {"api_version": {"version": "2"}, "billed_units": {"input_tokens": 6}},
                   "response_type": "embeddings_by_type"}),
        );
    }
    if req.path != "/v2/chat" {
        return Reply::json(404, json!({"message": format!("no route {}", req.path)}));
    }
    let body = req.json();
    let last = body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .to_string();
    if body["stream"] == true {
        let sse = if body.get("tools").is_some() {
            TOOL_SSE
        } else {
            TEXT_SSE
        };
        return Reply::stream("text/event-stream", sse.as_bytes(), 7, Duration::ZERO);
    }
    match last.as_str() {
        "rate" => Reply::json(429, json!({"message": "You are using a Trial key, which is limited to 10 API calls / minute."}))
            .with_header("retry-after", "12"),
        "badkey" => Reply::json(498, json!({"message": "invalid api token"})),
        "long" => Reply::json(
            400,
            json!({"message": "too many tokens: total number of tokens in the prompt cannot exceed 128000 - received 140000"}),
        ),
        "garbage" => Reply::bytes(200, "text/html", b"<html>oops</html>".to_vec()),
        _ if body.get("tools").is_some() => Reply::json(
            200,
            json!({
                "id": "c2", "finish_reason": "TOOL_CALL",
                "message": {"role": "assistant", "tool_plan": "I will call get_weather.",
                            "tool_calls": [{"id": "get_weather_q1", "type": "function",
                                            "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                "usage": {"tokens": {"input_tokens": 40, "output_tokens": 10}}
            }),
        ),
        _ => Reply::json(200, chat_response("Salut")),
    }
}

fn user(content: &str) -> Value {
    json!([{"role": "user", "content": content}])
}

#[tokio::test]
async fn chat_with_full_url_and_base_url_api_base() {
    let up = MockUpstream::start(cohere_mock).await;
    let gw = Gateway::start(&config(&up.base()));
    for model in ["command", "command-base"] {
        let resp = gw
            .post(
                "/v1/chat/completions",
                &json!({"model": model, "messages": [{"role": "system", "content": "Terse."}, {"role": "user", "content": "hi"}],
                        "max_tokens": 20, "top_p": 0.8, "stop": "END"}),
            )
            .await;
        assert_eq!(resp.status, 200, "{model}: {}", resp.text());
        let v = resp.json();
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["choices"][0]["message"]["content"], "Salut");
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert_eq!(
            v["usage"],
            json!({"prompt_tokens": 14, "completion_tokens": 2, "total_tokens": 16})
        );
        let sent = up.last();
        assert_eq!(sent.path, "/v2/chat", "{model}");
        assert_eq!(sent.header("authorization"), Some("Bearer co-key"));
        let body = sent.json();
        assert_eq!(body["model"], "command-r-plus");
        assert_eq!(
            body["messages"][0],
            json!({"role": "system", "content": "Terse."})
        );
        assert_eq!(body["max_tokens"], 20);
        assert_eq!(body["p"], 0.8);
        assert_eq!(body["stop_sequences"], json!(["END"]));
        assert_eq!(body["stream"], false);
    }
}

#[tokio::test]
async fn tools_round_trip() {
    let up = MockUpstream::start(cohere_mock).await;
    let gw = Gateway::start(&config(&up.base()));
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather by city",
                         "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    let resp = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "command", "messages": user("weather in Paris?"), "tools": tools, "tool_choice": "required"}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let v = resp.json();
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"],
        json!([{"id": "get_weather_q1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}])
    );
    let sent = up.last().json();
    assert_eq!(sent["tools"], tools);
    assert_eq!(sent["tool_choice"], "REQUIRED");

    // The follow-up turn carries the call and its result in Cohere's shape.
    let resp = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "command", "tools": tools, "messages": [
                {"role": "user", "content": "weather in Paris?"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "get_weather_q1", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "get_weather_q1", "content": "18C, sunny"}
            ]}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let sent = up.last().json();
    assert_eq!(
        sent["messages"][2],
        json!({"role": "tool", "content": "18C, sunny", "tool_call_id": "get_weather_q1"})
    );
    assert_eq!(sent["messages"][1]["tool_calls"][0]["id"], "get_weather_q1");
    assert!(sent.get("tool_choice").is_none());

    // A named tool_choice: 400 naming the parameter, unless drop_params (then REQUIRED).
    let named = json!({"type": "function", "function": {"name": "get_weather"}});
    let resp = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "command", "messages": user("x"), "tools": tools, "tool_choice": named}),
        )
        .await;
    let err = resp.expect_error(400);
    assert_eq!(err["param"], "tool_choice");
    let before = up.count();
    let resp = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "command-drop", "messages": user("x"), "tools": tools, "tool_choice": named, "logit_bias": {"1": 1}}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(up.count(), before + 1);
    let sent = up.last().json();
    assert_eq!(sent["tool_choice"], "REQUIRED");
    assert!(sent.get("logit_bias").is_none());
}

#[tokio::test]
async fn streams_text_and_tool_calls_with_usage() {
    let up = MockUpstream::start(cohere_mock).await;
    let gw = Gateway::start(&config(&up.base()));
    let resp = gw
        .post_stream(
            "/v1/chat/completions",
            &json!({"model": "command", "messages": user("hi"), "stream": true, "stream_options": {"include_usage": true}}),
        )
        .await
        .into_response()
        .await;
    assert_eq!(resp.status, 200);
    assert!(resp
        .header("content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    let sent = up.last();
    assert_eq!(sent.json()["stream"], true);
    assert_eq!(sent.header("accept"), Some("text/event-stream"));
    let chunks = openai_chunks(&resp);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(stream_text(&chunks), "Bonjour le monde");
    let finishes: Vec<_> = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0))
        .filter(|c| !c["finish_reason"].is_null())
        .collect();
    assert_eq!(finishes.len(), 1);
    assert_eq!(finishes[0]["finish_reason"], "stop");
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    // The final usage chunk also carries the call's cost, as LiteLLM's does.
    let mut usage = last["usage"].clone();
    let cost = usage.as_object_mut().unwrap().remove("cost");
    assert!(
        cost.and_then(|c| c.as_f64()).is_some_and(|c| c > 0.0),
        "{usage}"
    );
    assert_eq!(
        usage,
        json!({"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11})
    );
    let id = &chunks[0]["id"];
    assert!(chunks.iter().all(|c| &c["id"] == id));

    // Tool-call stream (data-only SSE lines), without include_usage.
    let resp = gw
        .post_stream(
            "/v1/chat/completions",
            &json!({"model": "command-base", "messages": user("weather?"), "stream": true,
                    "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]}),
        )
        .await
        .into_response()
        .await;
    let chunks = openai_chunks(&resp);
    let calls: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0)?["delta"].get("tool_calls"))
        .collect();
    assert_eq!(calls[0][0]["id"], "get_weather_x1");
    assert_eq!(calls[0][0]["function"]["name"], "get_weather");
    let args: String = calls
        .iter()
        .filter_map(|c| c[0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(args, "{\"city\":\"Paris\"}");
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
    assert!(!resp.text().contains("I will check"));
}

#[tokio::test]
async fn embeddings_float_and_base64() {
    let up = MockUpstream::start(cohere_mock).await;
    let gw = Gateway::start(&config(&up.base()));
    let resp = gw
        .post(
            "/v1/embeddings",
            &json!({"model": "embed", "input": ["alpha", "beta"]}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let v = resp.json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][1]["embedding"], json!([1.0, -0.5, 1.0]));
    assert_eq!(v["usage"]["prompt_tokens"], 6);
    let sent = up.last();
    // api_base is the full /v2/chat endpoint: embeddings go to its sibling.
    assert_eq!(sent.path, "/v2/embed");
    assert_eq!(sent.header("authorization"), Some("Bearer co-key"));
    assert_eq!(
        sent.json(),
        json!({"model": "embed-english-v3.0", "texts": ["alpha", "beta"], "input_type": "search_document", "embedding_types": ["float"]})
    );

    let resp = gw
        .post(
            "/v1/embeddings",
            &json!({"model": "embed", "input": "q", "encoding_format": "base64", "input_type": "search_query"}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    // [1.0, -0.5, 0.0] as little-endian f32.
    assert_eq!(resp.json()["data"][0]["embedding"], "AACAPwAAAL8AAAAA");
    assert_eq!(up.last().json()["input_type"], "search_query");
}

#[tokio::test]
async fn errors_are_openai_errors() {
    let up = MockUpstream::start(cohere_mock).await;
    let gw = Gateway::start(&config(&up.base()));
    let chat = |content: &str| json!({"model": "command", "messages": user(content)});

    let resp = gw.post("/v1/chat/completions", &chat("rate")).await;
    let err = resp.expect_error(429);
    assert_eq!(err["code"], "rate_limit_exceeded");
    assert_eq!(err["type"], "rate_limit_error");
    assert_eq!(resp.header("retry-after"), Some("12"));

    let resp = gw.post("/v1/chat/completions", &chat("badkey")).await;
    let err = resp.expect_error(401);
    assert_eq!(err["type"], "authentication_error");
    assert!(err["message"]
        .as_str()
        .unwrap()
        .contains("invalid api token"));

    let resp = gw.post("/v1/chat/completions", &chat("long")).await;
    assert_eq!(resp.expect_error(400)["code"], "context_length_exceeded");

    let resp = gw.post("/v1/chat/completions", &chat("garbage")).await;
    resp.expect_error(502);

    // An unsupported parameter without drop_params never reaches Cohere.
    let before = up.count();
    let resp = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "command", "messages": user("hi"), "logprobs": true}),
        )
        .await;
    let err = resp.expect_error(400);
    assert_eq!(err["param"], "logprobs");
    assert!(err["message"].as_str().unwrap().contains("cohere"));
    assert_eq!(up.count(), before);
}
