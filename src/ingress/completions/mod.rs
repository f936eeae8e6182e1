//! OpenAI's legacy text completions (`POST /v1/completions`) on every provider, by
//! translation onto chat: the prompt becomes one user message, the answer's message text each
//! choice's `text` (`object: text_completion`, ids `cmpl-…`), streams chunk for chunk ending
//! in `data: [DONE]`. `text-completion-openai` deployments turn the chat call back into a
//! `/v1/completions` call (`providers::text_completion`), so the prompt reaches them verbatim.
//!
//! Mapping (`ingress-formats.md` §4.3): `max_tokens` defaults to 16 as on OpenAI; `stop`, `n`,
//! `temperature`, `top_p`, penalties, `logit_bias`, `seed`, `user`, `stream_options` pass on.
//! A list of several prompts is answered as OpenAI does, `n` choices per prompt indexed
//! `prompt × n + j`: the attempt makes one chat call per prompt (`gateway::fanout`, bounded
//! by `switchboard.max_n`); the chat body lists every prompt as a user message only so that
//! admission estimates the whole request. Refused with a 400 naming the field: a prompt of
//! token ids, `suffix`, `echo: true`, `best_of` > 1 and `logprobs` (their answers have no chat
//! counterpart to come back from).

use super::chat_stream::{self, Chunk, ChunkChoice, Delta, Piece};
use super::{Egress, StreamEgress, Translated};
use crate::error::{GatewayError, GatewayResult};
use crate::events::{EventSink, StreamEvent};
use crate::openai::request::write_json_string;
use crate::openai::Usage;
use bytes::{Bytes, BytesMut};
use serde_json::{json, Map, Value};
use std::borrow::Cow;

/// OpenAI's default `max_tokens` for completions.
const DEFAULT_MAX_TOKENS: u64 = 16;

/// Fields passed to the chat body unchanged.
const PASSED: &[&str] = &[
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "n",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "seed",
    "user",
    "stream",
    "stream_options",
];

/// Translates a completions request for the chat pipeline.
pub fn translate(body: &[u8]) -> GatewayResult<Translated> {
    let req: Map<String, Value> = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => m,
        Ok(_) => {
            return Err(GatewayError::bad_request(
                "The request body must be a JSON object.",
            ))
        }
        Err(e) => {
            return Err(GatewayError::bad_request(format!(
                "The request body is not valid JSON: {e}"
            )))
        }
    };
    if !matches!(req.get("model"), Some(Value::String(m)) if !m.is_empty()) {
        return Err(if req.contains_key("model") {
            GatewayError::invalid_param("model", "'model' must be a non-empty string.")
        } else {
            GatewayError::missing_field("model")
        });
    }
    let mut prompts = prompt_list(req.get("prompt"))?;
    refuse_unsupported(&req)?;
    let mut chat = Map::new();
    for k in PASSED {
        if let Some(v) = req.get(*k).filter(|v| !v.is_null()) {
            chat.insert((*k).into(), v.clone());
        }
    }
    let messages: Vec<Value> = prompts
        .iter()
        .map(|p| json!({"role": "user", "content": p}))
        .collect();
    chat.insert("messages".into(), Value::Array(messages));
    if prompts.len() == 1 {
        prompts.clear();
    }
    chat.entry("max_tokens")
        .or_insert(json!(DEFAULT_MAX_TOKENS));
    let model = req
        .get("model")
        .and_then(|m| m.as_str())
        .unwrap_or_default()
        .to_string();
    let include_usage = req
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        == Some(&Value::Bool(true));
    let chat = serde_json::to_vec(&Value::Object(chat))
        .map_err(|e| GatewayError::internal(format!("could not write the chat body: {e}")))?;
    Ok(Translated {
        chat: Bytes::from(chat),
        egress: Box::new(CompletionsEgress {
            id: completion_id(Some(crate::context::ResponseId::generate().as_str())),
            created: crate::context::unix_now(),
            model,
            include_usage,
            prompts,
        }),
    })
}

/// The prompts: a string, or a non-empty list of strings.
fn prompt_list(prompt: Option<&Value>) -> GatewayResult<Vec<String>> {
    let token_ids = || {
        GatewayError::invalid_param(
            "prompt",
            "'prompt' as token ids is not supported (the upstream may tokenize differently); send the text.",
        )
    };
    match prompt {
        None | Some(Value::Null) => Err(GatewayError::missing_field("prompt")),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(list)) if list.is_empty() => Err(GatewayError::invalid_param(
            "prompt",
            "'prompt' is an empty list; send a string, or a list of strings.",
        )),
        Some(Value::Array(list)) => list
            .iter()
            .map(|p| match p {
                Value::String(s) => Ok(s.clone()),
                _ => Err(token_ids()),
            })
            .collect(),
        Some(_) => Err(GatewayError::invalid_param(
            "prompt",
            "'prompt' must be a string or a list of strings.",
        )),
    }
}

fn refuse_unsupported(req: &Map<String, Value>) -> GatewayResult<()> {
    if req
        .get("suffix")
        .is_some_and(|s| s.as_str().is_some_and(|s| !s.is_empty()))
    {
        return Err(GatewayError::invalid_param(
            "suffix",
            "'suffix' (insertion after the completion) is not supported; omit it.",
        ));
    }
    if req.get("echo") == Some(&Value::Bool(true)) {
        return Err(GatewayError::invalid_param(
            "echo",
            "'echo: true' is not supported; prepend the prompt to the text yourself.",
        ));
    }
    if req
        .get("best_of")
        .and_then(|b| b.as_u64())
        .is_some_and(|b| b > 1)
    {
        return Err(GatewayError::invalid_param(
            "best_of",
            "'best_of' is not supported; use 'n' for several completions.",
        ));
    }
    if req.get("logprobs").is_some_and(|l| l.is_number()) {
        return Err(GatewayError::invalid_param(
            "logprobs",
            "'logprobs' is not supported on /v1/completions through Switchboard; omit it.",
        ));
    }
    Ok(())
}

/// `chatcmpl-…` → `cmpl-…`.
fn completion_id(chat_id: Option<&str>) -> String {
    match chat_id {
        Some(id) => match id.strip_prefix("chatcmpl-") {
            Some(rest) => format!("cmpl-{rest}"),
            None => id.to_string(),
        },
        None => "cmpl-".to_string(),
    }
}

/// What a completions answer is written with: the identity its stream chunks carry (a
/// provider's events have none of their own) and whether the client asked for usage.
struct CompletionsEgress {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    /// A request's prompts when it has several (each answered by its own call), else empty.
    prompts: Vec<String>,
}

impl Egress for CompletionsEgress {
    fn prompts(&self) -> &[String] {
        &self.prompts
    }

    fn whole(&self, chat: &[u8]) -> GatewayResult<Bytes> {
        let c = chat_stream::parse_completion(chat)?;
        let choices: Vec<Value> = c
            .choices
            .iter()
            .map(|ch| {
                json!({
                    "text": ch.message.text(),
                    "index": ch.index,
                    "logprobs": null,
                    "finish_reason": ch.finish_reason.as_deref().unwrap_or("stop"),
                })
            })
            .collect();
        let mut body = json!({
            "id": completion_id(c.id.as_deref()),
            "object": "text_completion",
            "created": c.created.unwrap_or_else(crate::context::unix_now),
            "model": c.model.as_deref().unwrap_or(""),
            "choices": choices,
        });
        if let Some(u) = c.usage {
            body["usage"] = json!({
                "prompt_tokens": u.prompt_tokens,
                "completion_tokens": u.completion_tokens,
                "total_tokens": u.total_tokens,
            });
        }
        Ok(Bytes::from(body.to_string()))
    }

    fn stream(&self) -> Box<dyn StreamEgress> {
        Box::new(CompletionsStream {
            id: self.id.clone(),
            created: self.created,
            model: self.model.clone(),
            include_usage: self.include_usage,
            usage: None,
            usage_sent: false,
            done: false,
            out: BytesMut::new(),
        })
    }
}

/// One attempt's `text_completion` stream, written from stream events.
struct CompletionsStream {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    usage: Option<Usage>,
    /// A usage chunk went out (an OpenAI upstream's own).
    usage_sent: bool,
    done: bool,
    out: BytesMut,
}

impl CompletionsStream {
    /// A chunk of this stream's own for choice 0.
    fn chunk(&mut self, text: Option<&str>, finish: Option<&'static str>) {
        let chunk = Chunk {
            id: Some(Cow::Borrowed(&self.id)),
            created: Some(self.created),
            model: Some(Cow::Borrowed(&self.model)),
            choices: vec![ChunkChoice {
                index: 0,
                delta: Delta {
                    content: text.map(Cow::Borrowed),
                    ..Delta::default()
                },
                finish_reason: finish.map(Cow::Borrowed),
            }],
            ..Chunk::default()
        };
        write_piece(Piece::Chunk(chunk), &mut self.done, &mut self.out);
    }
}

impl StreamEgress for CompletionsStream {
    fn drain_into(&mut self, out: &mut BytesMut) {
        out.extend_from_slice(&self.out);
        self.out.clear();
    }
}

impl EventSink for CompletionsStream {
    fn event(&mut self, event: StreamEvent<'_>) {
        if self.done {
            return;
        }
        match event {
            StreamEvent::Text(t) if !t.is_empty() => self.chunk(Some(t), None),
            StreamEvent::Finish(reason) => self.chunk(None, Some(reason.as_str())),
            StreamEvent::Usage(u) => self.usage = Some(u),
            // An OpenAI-speaking upstream's chunk, parsed here (and only here); its usage
            // chunk goes out only when the client asked for usage.
            StreamEvent::RawOpenAiChunk { json, usage_only } => {
                if usage_only && !self.include_usage {
                    return;
                }
                self.usage_sent |= usage_only;
                write_piece(chat_stream::piece(json), &mut self.done, &mut self.out);
            }
            StreamEvent::Done => {
                if let (true, false, Some(u)) = (self.include_usage, self.usage_sent, self.usage) {
                    let chunk = Chunk {
                        id: Some(Cow::Borrowed(&self.id)),
                        created: Some(self.created),
                        model: Some(Cow::Borrowed(&self.model)),
                        usage: Some(u),
                        ..Chunk::default()
                    };
                    write_piece(Piece::Chunk(chunk), &mut self.done, &mut self.out);
                }
                write_piece(Piece::Done, &mut self.done, &mut self.out);
            }
            StreamEvent::Error(e) => {
                self.out.extend_from_slice(&e.sse_event());
                write_piece(Piece::Done, &mut self.done, &mut self.out);
            }
            StreamEvent::Start
            | StreamEvent::Text(_)
            | StreamEvent::Reasoning(_)
            | StreamEvent::ToolCallStart { .. }
            | StreamEvent::ToolCallArgs { .. } => {}
        }
    }
}

/// One chat stream piece as `text_completion` chunks (a role-only or tool-call chunk has no
/// completion counterpart and is skipped).
fn write_piece(piece: Piece<'_>, done: &mut bool, out: &mut BytesMut) {
    if *done {
        return;
    }
    match piece {
        Piece::Done => {
            *done = true;
            out.extend_from_slice(b"data: [DONE]\n\n");
        }
        Piece::Error(e) => {
            let mut err = GatewayError::bad_gateway(e.message.clone());
            err.code = e.code_str();
            err.param = e.param.clone();
            out.extend_from_slice(&err.sse_event());
        }
        Piece::Chunk(chunk) => {
            let has_text = chunk.choices.iter().any(|c| {
                c.finish_reason.is_some()
                    || c.delta.content.as_deref().is_some_and(|t| !t.is_empty())
            });
            if !has_text && chunk.usage.is_none() {
                return;
            }
            let mut buf = Vec::with_capacity(160);
            buf.extend_from_slice(b"data: {\"id\":");
            write_json_string(&mut buf, &completion_id(chunk.id.as_deref()));
            buf.extend_from_slice(b",\"object\":\"text_completion\",\"created\":");
            buf.extend_from_slice(chunk.created.unwrap_or(0).to_string().as_bytes());
            buf.extend_from_slice(b",\"model\":");
            write_json_string(&mut buf, chunk.model.as_deref().unwrap_or(""));
            buf.extend_from_slice(b",\"choices\":[");
            let mut first = true;
            for c in &chunk.choices {
                let text = c.delta.content.as_deref().unwrap_or("");
                if text.is_empty() && c.finish_reason.is_none() {
                    continue;
                }
                if !first {
                    buf.push(b',');
                }
                first = false;
                buf.extend_from_slice(b"{\"text\":");
                write_json_string(&mut buf, text);
                buf.extend_from_slice(
                    format!(
                        ",\"index\":{},\"logprobs\":null,\"finish_reason\":",
                        c.index
                    )
                    .as_bytes(),
                );
                match c.finish_reason.as_deref() {
                    Some(r) => write_json_string(&mut buf, r),
                    None => buf.extend_from_slice(b"null"),
                }
                buf.push(b'}');
            }
            buf.push(b']');
            if let Some(u) = chunk.usage {
                buf.extend_from_slice(
                    format!(
                        ",\"usage\":{{\"prompt_tokens\":{},\"completion_tokens\":{},\"total_tokens\":{}}}",
                        u.prompt_tokens, u.completion_tokens, u.total_tokens
                    )
                    .as_bytes(),
                );
            }
            buf.extend_from_slice(b"}\n\n");
            out.extend_from_slice(&buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_becomes_one_user_message_with_default_max_tokens() {
        let t =
            translate(br#"{"model":"m","prompt":["Say hi"],"stop":"\n","stream":true}"#).unwrap();
        let chat: Value = serde_json::from_slice(&t.chat).unwrap();
        assert_eq!(
            chat["messages"],
            json!([{"role": "user", "content": "Say hi"}])
        );
        assert_eq!(
            (chat["max_tokens"].as_u64(), chat["stop"].as_str()),
            (Some(16), Some("\n"))
        );
        assert_eq!(chat["stream"], true);
        // Several prompts: each a user message (for admission's estimate), each its own call.
        let t = translate(br#"{"model":"m","prompt":["a","b"],"n":2}"#).unwrap();
        let chat: Value = serde_json::from_slice(&t.chat).unwrap();
        assert_eq!(
            chat["messages"],
            json!([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
        );
        assert_eq!(t.egress.prompts(), ["a", "b"]);
        assert!(translate(br#"{"model":"m","prompt":["a"]}"#)
            .unwrap()
            .egress
            .prompts()
            .is_empty());
        for (body, param) in [
            (json!({"model": "m", "prompt": []}), "prompt"),
            (json!({"model": "m", "prompt": ["a", 2]}), "prompt"),
            (json!({"model": "m", "prompt": [1, 2]}), "prompt"),
            (json!({"model": "m"}), "prompt"),
            (
                json!({"model": "m", "prompt": "a", "suffix": "z"}),
                "suffix",
            ),
            (json!({"model": "m", "prompt": "a", "echo": true}), "echo"),
            (
                json!({"model": "m", "prompt": "a", "logprobs": 2}),
                "logprobs",
            ),
            (
                json!({"model": "m", "prompt": "a", "best_of": 3}),
                "best_of",
            ),
        ] {
            let e = translate(body.to_string().as_bytes())
                .err()
                .expect("refused");
            assert_eq!((e.status, e.param.as_deref()), (400, Some(param)), "{body}");
        }
    }

    #[test]
    fn stream_chunks_under_every_split() {
        let chat = concat!(
            "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":5,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":5,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi \\\"you\\\"\"},\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":5,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"length\"}]}\n\n",
            "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":5,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":3,\"total_tokens\":5}}\n\n",
            "data: [DONE]\n\n",
        );
        let expected = concat!(
            "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":5,\"model\":\"m\",\"choices\":[{\"text\":\"Hi \\\"you\\\"\",\"index\":0,\"logprobs\":null,\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":5,\"model\":\"m\",\"choices\":[{\"text\":\"\",\"index\":0,\"logprobs\":null,\"finish_reason\":\"length\"}]}\n\n",
            "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":5,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":3,\"total_tokens\":5}}\n\n",
            "data: [DONE]\n\n",
        );
        for split in 0..chat.len() {
            let mut w = egress(true).stream();
            let out = crate::ingress::replay_chat_sse(chat.as_bytes(), split, w.as_mut());
            assert_eq!(
                std::str::from_utf8(&out).unwrap(),
                expected,
                "split {split}"
            );
        }
    }

    fn egress(include_usage: bool) -> CompletionsEgress {
        CompletionsEgress {
            id: "cmpl-own".into(),
            created: 7,
            model: "alias".into(),
            include_usage,
            prompts: Vec::new(),
        }
    }

    /// A provider's own events (not an OpenAI upstream's chunks) become chunks with the
    /// request's identity; usage goes out only when asked for.
    #[test]
    fn provider_events_become_chunks() {
        for include_usage in [false, true] {
            let mut w = egress(include_usage).stream();
            w.event(StreamEvent::Start);
            w.event(StreamEvent::Text("Hé"));
            w.event(StreamEvent::Finish(crate::openai::FinishReason::Stop));
            w.event(StreamEvent::Usage(Usage::new(4, 2)));
            w.event(StreamEvent::Done);
            w.event(StreamEvent::Done);
            let mut out = BytesMut::new();
            w.drain_into(&mut out);
            let mut want = String::from(concat!(
                "data: {\"id\":\"cmpl-own\",\"object\":\"text_completion\",\"created\":7,\"model\":\"alias\",\"choices\":[{\"text\":\"Hé\",\"index\":0,\"logprobs\":null,\"finish_reason\":null}]}\n\n",
                "data: {\"id\":\"cmpl-own\",\"object\":\"text_completion\",\"created\":7,\"model\":\"alias\",\"choices\":[{\"text\":\"\",\"index\":0,\"logprobs\":null,\"finish_reason\":\"stop\"}]}\n\n",
            ));
            if include_usage {
                want.push_str("data: {\"id\":\"cmpl-own\",\"object\":\"text_completion\",\"created\":7,\"model\":\"alias\",\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":2,\"total_tokens\":6}}\n\n");
            }
            want.push_str("data: [DONE]\n\n");
            assert_eq!(std::str::from_utf8(&out).unwrap(), want);
        }
    }

    #[test]
    fn whole_answer_is_a_text_completion() {
        let e = egress(false);
        let body = e
            .whole(br#"{"id":"chatcmpl-9","object":"chat.completion","created":3,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#)
            .unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["id"], "cmpl-9");
        assert_eq!(v["object"], "text_completion");
        assert_eq!(v["choices"][0]["text"], "Hello");
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert_eq!(v["usage"]["total_tokens"], 2);
    }
}
