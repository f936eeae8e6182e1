//! One canonical form per entry, the whole OpenAI JSON answer, and the conversions around it:
//! - [`to_sse`]: a stored whole answer replayed to a streaming request as the same
//!   `chat.completion.chunk` events a live stream carries (written by the gateway's own
//!   [`ChunkWriter`]: role delta, content, tool calls, finish reason, the usage chunk when the
//!   client asked for it, `[DONE]`).
//! - [`assemble`]: a streamed answer (the SSE bytes the client received) gathered back into the
//!   whole answer it stands for, off the request path, before it is stored.
//! - [`stream_entry`] / [`Entry`]: an answer that was streamed keeps, after its whole answer,
//!   the chunks the client received, so a streamed hit replays the live stream chunk for chunk
//!   (its content split the same way, the upstream's own fields kept), not a re-chunking:
//!   `whole JSON, NUL, the chunks' SSE without the usage chunk and [DONE], NUL, the usage
//!   chunk's JSON (or nothing)`. NUL never occurs in JSON text, so an entry without it is a
//!   plain whole answer (a non-streamed miss, or an entry written before this format).

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

/// Separates an entry's sections (see the module doc).
const SECTION: u8 = 0;

/// A stored entry read back: the whole answer, and the live stream's chunks when the answer
/// was streamed.
pub struct Entry {
    /// The whole `chat.completion` (what a non-streaming request gets).
    pub whole: Bytes,
    /// The chunks' SSE (no usage chunk, no `[DONE]`), and the usage chunk's JSON.
    stream: Option<(Bytes, Option<Bytes>)>,
}

impl Entry {
    /// Splits a stored value into its sections (without copying).
    pub fn parse(stored: Bytes) -> Entry {
        let Some(i) = stored.iter().position(|b| *b == SECTION) else {
            return Entry {
                whole: stored,
                stream: None,
            };
        };
        let rest = stored.slice(i + 1..);
        let (chunks, usage) = match rest.iter().position(|b| *b == SECTION) {
            Some(j) => (rest.slice(..j), rest.slice(j + 1..)),
            None => (rest, Bytes::new()),
        };
        Entry {
            whole: stored.slice(..i),
            stream: Some((chunks, Some(usage).filter(|u| !u.is_empty()))),
        }
    }

    /// The answer for a streaming request: the live stream's own chunks when the answer was
    /// streamed (the usage chunk only when `include_usage`: the stored one, else one made from
    /// the whole answer's usage), else the whole answer as chunks ([`to_sse`]). `None` when it
    /// cannot be replayed as a stream.
    pub fn to_stream(&self, include_usage: bool) -> Option<Bytes> {
        let Some((chunks, usage)) = &self.stream else {
            return to_sse(&self.whole, include_usage);
        };
        let mut out = BytesMut::with_capacity(chunks.len() + 512);
        out.extend_from_slice(chunks);
        if include_usage {
            match usage {
                Some(u) => {
                    out.extend_from_slice(b"data: ");
                    out.extend_from_slice(u);
                    out.extend_from_slice(b"\n\n");
                }
                None => {
                    let whole: Whole<'_> = serde_json::from_slice(&self.whole).ok()?;
                    let mut w = ChunkWriter::new(&whole.id, whole.created, &whole.model, true);
                    w.set_usage(whole.usage.unwrap_or_default());
                    // Finished already: `done` writes only the usage chunk and `[DONE]`.
                    w.finish(FinishReason::Stop, &mut BytesMut::new());
                    w.done(&mut out);
                    return Some(out.freeze());
                }
            }
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
        Some(out.freeze())
    }

    /// The tokens the stored answer used (its `usage`), which a hit counts toward tpm limits.
    pub fn usage(&self) -> Option<Usage> {
        usage_of(&self.whole)
    }
}

/// The `usage` of a whole answer (chat or embeddings).
pub fn usage_of(answer: &[u8]) -> Option<Usage> {
    #[derive(Deserialize)]
    struct WithUsage {
        #[serde(default)]
        usage: Option<Usage>,
    }
    serde_json::from_slice::<WithUsage>(answer).ok()?.usage
}

/// The entry of a streamed answer (the SSE the client received): the whole answer it stands
/// for ([`assemble`]), then its chunks (see [`Entry`]). `None` for anything that is not a
/// complete, error-free stream: it is not stored.
pub fn stream_entry(sse: &[u8], usage: Option<Usage>) -> Option<Bytes> {
    let whole = assemble(sse, usage)?;
    let text = std::str::from_utf8(sse).ok()?;
    let mut out = Vec::with_capacity(whole.len() + sse.len() + 2);
    out.extend_from_slice(&whole);
    out.push(SECTION);
    let mut usage_chunk: Option<&str> = None;
    for line in text.lines() {
        let Some(data) = line.strip_prefix("data:") else {
            continue;
        };
        let data = data.trim_start();
        if data == "[DONE]" {
            continue;
        }
        #[derive(Deserialize)]
        struct Shape<'a> {
            #[serde(borrow, default)]
            choices: Option<Vec<&'a serde_json::value::RawValue>>,
            #[serde(default)]
            usage: Option<serde::de::IgnoredAny>,
        }
        let shape: Shape<'_> = serde_json::from_str(data).ok()?;
        if shape.usage.is_some() && shape.choices.as_ref().is_none_or(|c| c.is_empty()) {
            usage_chunk = Some(data);
            continue;
        }
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(data.as_bytes());
        out.extend_from_slice(b"\n\n");
    }
    out.push(SECTION);
    if let Some(u) = usage_chunk {
        out.extend_from_slice(u.as_bytes());
    }
    Some(Bytes::from(out))
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
    fn a_streamed_entry_replays_its_own_chunks_and_the_usage_chunk_on_demand() {
        let live = concat!(
            "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"system_fingerprint\":\"fp\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"system_fingerprint\":\"fp\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"system_fingerprint\":\"fp\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}]}\n\n",
        );
        let usage = "{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}";
        let with_usage = format!("{live}data: {usage}\n\ndata: [DONE]\n\n");
        let entry = Entry::parse(stream_entry(with_usage.as_bytes(), None).unwrap());
        let whole: Value = serde_json::from_slice(&entry.whole).unwrap();
        assert_eq!(whole["choices"][0]["message"]["content"], "Hello");
        assert_eq!(entry.usage().unwrap().total_tokens, 5);
        assert_eq!(&entry.to_stream(true).unwrap()[..], with_usage.as_bytes());
        let without = format!("{live}data: [DONE]\n\n");
        assert_eq!(&entry.to_stream(false).unwrap()[..], without.as_bytes());

        // Streamed without the usage chunk: asked for, it is made from the recorded usage.
        let entry = Entry::parse(stream_entry(without.as_bytes(), Some(Usage::new(3, 2))).unwrap());
        let replay = entry.to_stream(true).unwrap();
        let text = std::str::from_utf8(&replay).unwrap();
        assert!(text.starts_with(live), "{text}");
        assert!(
            text.ends_with("\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}\n\ndata: [DONE]\n\n"),
            "{text}"
        );
        // A plain whole answer has no stream section.
        let plain = Entry::parse(Bytes::from_static(WHOLE.as_bytes()));
        assert_eq!(&plain.whole[..], WHOLE.as_bytes());
        assert_eq!(plain.usage().unwrap().total_tokens, 5);
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
