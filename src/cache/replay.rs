//! One canonical form per entry, the whole OpenAI JSON answer, and the conversions around it:
//! - [`to_sse`]: a stored whole answer replayed to a streaming request as the same
//!   `chat.completion.chunk` events a live stream carries (written by the gateway's own
//!   [`ChunkWriter`]: role delta, content, tool calls, finish reason, the usage chunk when the
//!   client asked for it, `[DONE]`).
//! - [`assemble`]: a streamed answer (the SSE bytes the client received) gathered back into the
//!   whole answer it stands for, off the request path, before it is stored.

use crate::openai::{ChunkWriter, FinishReason, Usage};
use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::{json, Map, Value};

#[derive(Deserialize)]
struct Whole<'a> {
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
    #[serde(default)]
    created: u64,
    #[serde(borrow, default)]
    model: std::borrow::Cow<'a, str>,
    choices: Vec<WholeChoice>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct WholeChoice {
    #[serde(default)]
    message: WholeMessage,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct WholeMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Vec<WholeToolCall>,
}

#[derive(Deserialize)]
struct WholeToolCall {
    #[serde(default)]
    id: String,
    function: WholeFunction,
}

#[derive(Deserialize)]
struct WholeFunction {
    #[serde(default)]
    name: String,
    #[serde(default)]
    arguments: String,
}

fn finish_reason(s: Option<&str>) -> FinishReason {
    match s {
        Some("length") => FinishReason::Length,
        Some("tool_calls") | Some("function_call") => FinishReason::ToolCalls,
        Some("content_filter") => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

/// A stored chat answer as SSE for a streaming request. `None` when it cannot be replayed as
/// a stream (not a one-choice chat completion): the request is then treated as a miss.
pub fn to_sse(answer: &[u8], include_usage: bool) -> Option<Bytes> {
    let whole: Whole<'_> = serde_json::from_slice(answer).ok()?;
    let [choice] = &whole.choices[..] else {
        return None;
    };
    let mut w = ChunkWriter::new(&whole.id, whole.created, &whole.model, include_usage);
    let mut out = BytesMut::with_capacity(answer.len() * 2 + 256);
    w.start(&mut out);
    if let Some(text) = &choice.message.content {
        w.text(text, &mut out);
    }
    for (i, call) in choice.message.tool_calls.iter().enumerate() {
        w.tool_call_start(i, &call.id, &call.function.name, &mut out);
        w.tool_call_args(i, &call.function.arguments, &mut out);
    }
    w.finish(finish_reason(choice.finish_reason.as_deref()), &mut out);
    if let Some(u) = whole.usage {
        w.set_usage(u);
    }
    w.done(&mut out);
    Some(out.freeze())
}

#[derive(Default)]
struct Gathered {
    role_seen: bool,
    content: String,
    has_content: bool,
    /// By tool-call index: id, name, arguments.
    tool_calls: Vec<(String, String, String)>,
    finish: Option<String>,
}

/// Gathers a streamed chat answer back into the whole `chat.completion` it stands for.
/// `usage` is what the exchange recorded (the stream may not carry it when the client did not
/// ask). `None` for anything that is not a complete, error-free stream: it is not stored.
pub fn assemble(sse: &[u8], usage: Option<Usage>) -> Option<Bytes> {
    let text = std::str::from_utf8(sse).ok()?;
    let (mut id, mut created, mut model) = (None::<String>, 0u64, String::new());
    let mut choices: Vec<Gathered> = Vec::new();
    let mut stream_usage = None::<Usage>;
    let mut done = false;
    for line in text.lines() {
        let Some(data) = line.strip_prefix("data:") else {
            continue;
        };
        let data = data.trim_start();
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let chunk: Value = serde_json::from_str(data).ok()?;
        if chunk.get("error").is_some() {
            return None;
        }
        if id.is_none() {
            id = chunk.get("id").and_then(Value::as_str).map(str::to_string);
            created = chunk.get("created").and_then(Value::as_u64).unwrap_or(0);
            model = chunk
                .get("model")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
        }
        if let Some(u) = chunk.get("usage").filter(|u| !u.is_null()) {
            stream_usage = serde_json::from_value(u.clone()).ok();
        }
        for c in chunk
            .get("choices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let index = c.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
            if index >= 128 {
                return None;
            }
            if choices.len() <= index {
                choices.resize_with(index + 1, Gathered::default);
            }
            let g = &mut choices[index];
            if let Some(delta) = c.get("delta") {
                g.role_seen |= delta.get("role").is_some();
                if let Some(t) = delta.get("content").and_then(Value::as_str) {
                    g.content.push_str(t);
                    g.has_content = true;
                }
                for tc in delta
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let i = tc.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
                    if i >= 128 {
                        return None;
                    }
                    if g.tool_calls.len() <= i {
                        g.tool_calls.resize_with(i + 1, Default::default);
                    }
                    let slot = &mut g.tool_calls[i];
                    if let Some(v) = tc.get("id").and_then(Value::as_str) {
                        slot.0 = v.to_string();
                    }
                    if let Some(f) = tc.get("function") {
                        if let Some(v) = f.get("name").and_then(Value::as_str) {
                            slot.1.push_str(v);
                        }
                        if let Some(v) = f.get("arguments").and_then(Value::as_str) {
                            slot.2.push_str(v);
                        }
                    }
                }
            }
            if let Some(r) = c.get("finish_reason").and_then(Value::as_str) {
                g.finish = Some(r.to_string());
            }
        }
    }
    if !done || choices.is_empty() || choices.iter().any(|c| c.finish.is_none()) {
        return None;
    }
    let choices: Vec<Value> = choices
        .into_iter()
        .enumerate()
        .map(|(i, g)| {
            let mut message = Map::new();
            message.insert("role".into(), json!("assistant"));
            message.insert(
                "content".into(),
                if g.has_content || g.tool_calls.is_empty() {
                    json!(g.content)
                } else {
                    Value::Null
                },
            );
            if !g.tool_calls.is_empty() {
                let calls: Vec<Value> = g
                    .tool_calls
                    .into_iter()
                    .map(|(id, name, args)| {
                        json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}})
                    })
                    .collect();
                message.insert("tool_calls".into(), Value::Array(calls));
            }
            json!({"index": i, "message": message, "logprobs": null, "finish_reason": g.finish})
        })
        .collect();
    let mut whole = json!({
        "id": id.unwrap_or_default(),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": choices,
    });
    if let Some(u) = stream_usage.or(usage) {
        whole["usage"] = serde_json::to_value(u).ok()?;
    }
    serde_json::to_vec(&whole).ok().map(Bytes::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WHOLE: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","created":7,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there"},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;

    #[test]
    fn a_whole_answer_replays_as_a_stream_and_gathers_back() {
        let sse = to_sse(WHOLE.as_bytes(), true).unwrap();
        let text = std::str::from_utf8(&sse).unwrap();
        assert!(
            text.starts_with("data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\"")
        );
        assert!(text.contains(r#""delta":{"role":"assistant","content":""}"#));
        assert!(text.contains(r#""delta":{"content":"Hello there"}"#));
        assert!(text.contains(r#""finish_reason":"stop""#));
        assert!(text.contains(r#""choices":[],"usage":{"prompt_tokens":3"#));
        assert!(text.ends_with("data: [DONE]\n\n"));
        // Without include_usage there is no usage chunk.
        let plain = to_sse(WHOLE.as_bytes(), false).unwrap();
        assert!(!std::str::from_utf8(&plain).unwrap().contains("usage"));

        let back: Value = serde_json::from_slice(&assemble(&sse, None).unwrap()).unwrap();
        let want: Value = serde_json::from_str(WHOLE).unwrap();
        assert_eq!(back["choices"], want["choices"]);
        assert_eq!(back["usage"]["total_tokens"], 5);
        assert_eq!(
            (back["id"].clone(), back["created"].clone()),
            (want["id"].clone(), want["created"].clone())
        );
    }

    #[test]
    fn tool_calls_survive_both_ways_and_incomplete_streams_are_not_kept() {
        let whole = r#"{"id":"c","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},"finish_reason":"tool_calls"}]}"#;
        let sse = to_sse(whole.as_bytes(), false).unwrap();
        let back: Value =
            serde_json::from_slice(&assemble(&sse, Some(Usage::new(1, 2))).unwrap()).unwrap();
        let call = &back["choices"][0]["message"]["tool_calls"][0];
        assert_eq!(call["function"]["arguments"], "{\"a\":1}");
        assert_eq!(call["id"], "call_1");
        assert_eq!(back["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(back["usage"]["completion_tokens"], 2);

        let cut = &sse[..sse.len() - "data: [DONE]\n\n".len()];
        assert!(assemble(cut, None).is_none(), "no [DONE]");
        let err = b"data: {\"error\":{\"message\":\"x\"}}\n\ndata: [DONE]\n\n";
        assert!(assemble(err, None).is_none(), "an error event");
        // Two choices cannot be replayed as a one-choice stream: a miss.
        let two =
            r#"{"id":"c","choices":[{"message":{"content":"a"}},{"message":{"content":"b"}}]}"#;
        assert!(to_sse(two.as_bytes(), false).is_none());
    }
}
