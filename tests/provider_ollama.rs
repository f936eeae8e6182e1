//! Ollama's native API through the real gateway against a mock speaking `/api/chat` and
//! `/api/embed`: chat, tools, NDJSON streams (text, tool calls, a mid-stream error), embeddings
//! (float and base64), and errors (404 model not found, 500, bad input).

mod support;

use serde_json::{json, Value};
use std::time::Duration;
use support::*;

fn config(base: &str) -> String {
    format!(
        r#"
model_list:
  - model_name: llama
    litellm_params:
      model: ollama_chat/llama3.1
      api_base: {base}
  - model_name: llama-keyed
    litellm_params:
      model: ollama/llama3.1
      api_base: {base}/
      api_key: ol-key
  - model_name: missing
    litellm_params:
      model: ollama_chat/not-pulled
      api_base: {base}
  - model_name: minilm
    litellm_params:
      model: ollama/all-minilm
      api_base: {base}
"#
    )
}

const TEXT_NDJSON: &str = concat!(
    "{\"model\":\"llama3.1\",\"created_at\":\"2024-01-01T00:00:00Z\",\"message\":{\"role\":\"assistant\",\"content\":\"Why\"},\"done\":false}\n",
    "{\"model\":\"llama3.1\",\"created_at\":\"2024-01-01T00:00:00Z\",\"message\":{\"role\":\"assistant\",\"content\":\" hello\"},\"done\":false}\n",
    "{\"model\":\"llama3.1\",\"created_at\":\"2024-01-01T00:00:00Z\",\"message\":{\"role\":\"assistant\",\"content\":\" there\"},\"done\":false}\n",
    "{\"model\":\"llama3.1\",\"created_at\":\"2024-01-01T00:00:00Z\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":true,\"done_reason\":\"length\",\"total_duration\":100,\"prompt_eval_count\":21,\"eval_count\":3}\n",
);

const TOOL_NDJSON: &str = concat!(
    "{\"model\":\"llama3.1\",\"message\":{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"function\":{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\",\"unit\":\"c\"}}}]},\"done\":false}\n",
    "{\"model\":\"llama3.1\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":true,\"done_reason\":\"stop\",\"prompt_eval_count\":50,\"eval_count\":15}\n",
);

/// Answers like Ollama: the scenario is picked by the model and the last message.
fn ollama_mock(req: &Recorded) -> Reply {
    let body = req.json();
    let model = body["model"].as_str().unwrap_or("").to_string();
    if model == "not-pulled" {
        return Reply::json(
            404,
            json!({"error": "model \"not-pulled\" not found, try pulling it first"}),
        );
    }
    if req.path == "/api/embed" {
        let n = body["input"].as_array().map_or(0, |t| t.len());
        let vectors: Vec<Value> = (0..n).map(|i| json!([0.5, i as f64])).collect();
        return Reply::json(
            200,
            json!({"model": model, "embeddings": vectors, "total_duration": 1, "load_duration": 1, "prompt_eval_count": 7}),
        );
    }
    if req.path != "/api/chat" {
        return Reply::json(404, json!({"error": format!("no route {}", req.path)}));
    }
    let last = body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .to_string();
    let nd = "application/x-ndjson";
    if body["stream"] == true {
        return match last.as_str() {
            "crash" => {
                let first = TEXT_NDJSON.lines().next().unwrap();
                let body =
                    format!("{first}\n{{\"error\":\"llama runner process has terminated\"}}\n");
                Reply::stream(nd, body.as_bytes(), 5, Duration::ZERO)
            }
            _ if body.get("tools").is_some() => {
                Reply::stream(nd, TOOL_NDJSON.as_bytes(), 9, Duration::ZERO)
            }
            _ => Reply::stream(nd, TEXT_NDJSON.as_bytes(), 9, Duration::ZERO),
        };
    }
    match last.as_str() {
        "oom" => Reply::json(500, json!({"error": "model requires more system memory"})),
        "garbage" => Reply::bytes(200, "text/plain", b"not json".to_vec()),
        _ if body.get("tools").is_some() => Reply::json(
            200,
            json!({"model": "llama3.1", "created_at": "2024-01-01T00:00:00Z",
                   "message": {"role": "assistant", "content": "",
                               "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
                   "done": true, "done_reason": "stop", "prompt_eval_count": 40, "eval_count": 8}),
        ),
        _ => Reply::json(
            200,
            json!({"model": "llama3.1", "created_at": "2024-01-01T00:00:00Z",
                   "message": {"role": "assistant", "content": "Hello!"},
                   "done": true, "done_reason": "stop", "total_duration": 5, "prompt_eval_count": 12, "eval_count": 4}),
        ),
    }
}

fn user(content: &str) -> Value {
    json!([{"role": "user", "content": content}])
}

#[tokio::test]
async fn chat_sends_native_request() {
    let up = MockUpstream::start(ollama_mock).await;
    let gw = Gateway::start(&config(&up.base()));
    let resp = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "llama", "messages": [
                        {"role": "developer", "content": "Terse."},
                        {"role": "user", "content": [{"type": "text", "text": "hi"},
                            {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}}]}],
                    "max_tokens": 64, "temperature": 0.2, "seed": 1, "response_format": {"type": "json_object"}}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let v = resp.json();
    assert_eq!(v["choices"][0]["message"]["content"], "Hello!");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16})
    );
    let sent = up.last();
    assert_eq!(sent.path, "/api/chat");
    assert_eq!(sent.header("authorization"), None);
    assert_eq!(
        sent.json(),
        json!({"model": "llama3.1", "stream": false, "format": "json",
               "messages": [{"role": "system", "content": "Terse."},
                            {"role": "user", "content": "hi", "images": ["/9j/4AAQ"]}],
               "options": {"temperature": 0.2, "num_predict": 64, "seed": 1}})
    );

    // With an api_key configured it is sent as a Bearer token (trailing slash in api_base ok).
    let resp = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "llama-keyed", "messages": user("hi")}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let sent = up.last();
    assert_eq!(sent.path, "/api/chat");
    assert_eq!(sent.header("authorization"), Some("Bearer ol-key"));
}

#[tokio::test]
async fn tools_round_trip() {
    let up = MockUpstream::start(ollama_mock).await;
    let gw = Gateway::start(&config(&up.base()));
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
                        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let resp = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "llama", "messages": user("weather?"), "tools": tools}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let v = resp.json();
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(call["function"]["arguments"], "{\"city\":\"Paris\"}");
    let id = call["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("call_"), "{id}");
    assert_eq!(up.last().json()["tools"], tools);

    // Sending the call and its result back: arguments as an object, tool_name from the call.
    let resp = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "llama", "messages": [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": null, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": id, "content": "sunny"}
            ]}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let sent = up.last().json();
    assert_eq!(
        sent["messages"][1]["tool_calls"],
        json!([{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}])
    );
    assert_eq!(
        sent["messages"][2],
        json!({"role": "tool", "content": "sunny", "tool_name": "get_weather"})
    );
}

#[tokio::test]
async fn ndjson_streams_translate() {
    let up = MockUpstream::start(ollama_mock).await;
    let gw = Gateway::start(&config(&up.base()));
    let resp = gw
        .post_stream(
            "/v1/chat/completions",
            &json!({"model": "llama", "messages": user("hi"), "stream": true, "stream_options": {"include_usage": true}}),
        )
        .await
        .into_response()
        .await;
    assert_eq!(resp.status, 200);
    assert_eq!(up.last().json()["stream"], true);
    let chunks = openai_chunks(&resp);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(stream_text(&chunks), "Why hello there");
    let finishes: Vec<_> = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0))
        .filter(|c| !c["finish_reason"].is_null())
        .collect();
    assert_eq!(finishes.len(), 1);
    assert_eq!(finishes[0]["finish_reason"], "length");
    assert_eq!(
        chunks.last().unwrap()["usage"],
        json!({"prompt_tokens": 21, "completion_tokens": 3, "total_tokens": 24})
    );

    let resp = gw
        .post_stream(
            "/v1/chat/completions",
            &json!({"model": "llama", "messages": user("weather?"), "stream": true,
                    "tools": [{"type": "function", "function": {"name": "get_weather"}}]}),
        )
        .await
        .into_response()
        .await;
    let chunks = openai_chunks(&resp);
    let calls: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0)?["delta"].get("tool_calls"))
        .collect();
    assert_eq!(calls[0][0]["function"]["name"], "get_weather");
    assert!(calls[0][0]["id"].as_str().unwrap().starts_with("call_"));
    let args: String = calls
        .iter()
        .filter_map(|c| c[0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(args, "{\"city\":\"Paris\",\"unit\":\"c\"}");
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );

    // An error line mid-stream ends the stream with an error event and [DONE].
    let resp = gw
        .post_stream(
            "/v1/chat/completions",
            &json!({"model": "llama", "messages": user("crash"), "stream": true}),
        )
        .await
        .into_response()
        .await;
    let chunks = openai_chunks(&resp);
    assert_eq!(stream_text(&chunks), "Why");
    let last = chunks.last().unwrap();
    assert!(last["error"]["message"]
        .as_str()
        .unwrap()
        .contains("llama runner process has terminated"));
}

#[tokio::test]
async fn embeddings_float_and_base64() {
    let up = MockUpstream::start(ollama_mock).await;
    let gw = Gateway::start(&config(&up.base()));
    let resp = gw
        .post(
            "/v1/embeddings",
            &json!({"model": "minilm", "input": ["a", "b"], "dimensions": 2}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let v = resp.json();
    assert_eq!(v["data"][1]["embedding"], json!([0.5, 1.0]));
    assert_eq!(v["usage"]["prompt_tokens"], 7);
    let sent = up.last();
    assert_eq!(sent.path, "/api/embed");
    assert_eq!(
        sent.json(),
        json!({"model": "all-minilm", "input": ["a", "b"], "dimensions": 2})
    );
    let resp = gw
        .post(
            "/v1/embeddings",
            &json!({"model": "minilm", "input": "a", "encoding_format": "base64"}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    // [0.5, 0.0] as little-endian f32.
    assert_eq!(resp.json()["data"][0]["embedding"], "AAAAPwAAAAA=");
}

#[tokio::test]
async fn errors_are_openai_errors() {
    let up = MockUpstream::start(ollama_mock).await;
    let gw = Gateway::start(&config(&up.base()));

    let resp = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "missing", "messages": user("hi")}),
        )
        .await;
    let err = resp.expect_error(404);
    assert_eq!(err["code"], "model_not_found");
    let msg = err["message"].as_str().unwrap();
    assert!(
        msg.contains("not-pulled") && msg.contains("ollama pull"),
        "{msg}"
    );

    let resp = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "llama", "messages": user("oom")}),
        )
        .await;
    let err = resp.expect_error(500);
    assert!(err["message"]
        .as_str()
        .unwrap()
        .contains("more system memory"));

    let resp = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "llama", "messages": user("garbage")}),
        )
        .await;
    resp.expect_error(502);

    // An image URL cannot be sent to Ollama: a clear 400, nothing sent upstream.
    let before = up.count();
    let resp = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "llama", "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]}),
        )
        .await;
    let err = resp.expect_error(400);
    assert!(err["message"].as_str().unwrap().contains("data:"));
    let resp = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "llama", "messages": user("hi"), "tool_choice": "required",
                    "tools": [{"type": "function", "function": {"name": "f"}}]}),
        )
        .await;
    assert_eq!(resp.expect_error(400)["param"], "tool_choice");
    assert_eq!(up.count(), before);
}
