//! OpenAI's Responses API (`POST /v1/responses`) on every provider. Deployments whose
//! upstream has the API (OpenAI, Azure OpenAI) get the client's body passed through
//! ([`native`]: built-in tools, `store`, `previous_response_id`, `reasoning`, `include` all
//! work there); every other provider by translation onto chat: [`request`] turns the request
//! into a chat body; the answer comes back as a Response object ([`Meta::response`], from a
//! whole `chat.completion`) or as the Responses stream's typed events
//! ([`stream::ResponsesWriter`], an event sink beside the OpenAI chunk writer). A translated
//! call stores nothing: `store` is answered `false`, and what needs stored state or a hosted
//! tool is refused with a 400 naming the field (see [`request`]).

pub mod native;
pub mod request;
pub mod stream;

use super::chat_stream::{self, finish_reason};
use super::{Egress, Translated};
use crate::error::GatewayResult;
use crate::openai::{FinishReason, Usage};
use bytes::{Bytes, BytesMut};
use serde_json::{json, Map, Value};

/// Translates a Responses request for the chat pipeline.
pub fn translate(body: &[u8]) -> GatewayResult<Translated> {
    let (chat, echo) = request::to_chat(body)?;
    let meta = Meta::new(echo);
    Ok(Translated {
        chat: Bytes::from(chat),
        egress: Box::new(ResponsesEgress {
            writer: stream::ResponsesWriter::new(meta),
            reader: chat_stream::ChatStreamReader::default(),
        }),
    })
}

/// One response's identity and the request fields it echoes.
pub struct Meta {
    /// `resp_` and 32 hex digits; item ids reuse the digits.
    pub id: String,
    pub created_at: u64,
    pub model: String,
    fields: Map<String, Value>,
}

impl Meta {
    pub fn new(echo: request::Echo) -> Meta {
        let uuid = crate::context::ResponseId::generate();
        let hex: String = uuid
            .as_str()
            .trim_start_matches("chatcmpl-")
            .chars()
            .filter(|c| *c != '-')
            .collect();
        Meta {
            id: format!("resp_{hex}"),
            created_at: crate::context::unix_now(),
            model: echo.model,
            fields: echo.fields,
        }
    }

    fn hex(&self) -> &str {
        &self.id["resp_".len()..]
    }

    /// The id of the output message item.
    pub fn message_id(&self, output_index: usize) -> String {
        format!("msg_{}{output_index}", self.hex())
    }

    /// The id of a function call item.
    pub fn call_item_id(&self, output_index: usize) -> String {
        format!("fc_{}{output_index}", self.hex())
    }

    /// The Response object.
    pub fn response(
        &self,
        status: &str,
        output: Vec<Value>,
        usage: Option<&Usage>,
        incomplete_reason: Option<&str>,
        error: Option<Value>,
    ) -> Value {
        let mut r = Map::with_capacity(self.fields.len() + 12);
        r.insert("id".into(), json!(self.id));
        r.insert("object".into(), json!("response"));
        r.insert("created_at".into(), json!(self.created_at));
        r.insert("status".into(), json!(status));
        if status == "completed" {
            r.insert("completed_at".into(), json!(crate::context::unix_now()));
        }
        r.insert("model".into(), json!(self.model));
        r.insert("output".into(), Value::Array(output));
        r.insert("error".into(), error.unwrap_or(Value::Null));
        r.insert(
            "incomplete_details".into(),
            incomplete_reason.map_or(Value::Null, |reason| json!({"reason": reason})),
        );
        for (k, v) in &self.fields {
            r.insert(k.clone(), v.clone());
        }
        r.insert("usage".into(), usage.map_or(Value::Null, usage_json));
        Value::Object(r)
    }
}

/// Chat usage in the Responses shape.
pub fn usage_json(u: &Usage) -> Value {
    json!({
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": u.cached_tokens()},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens()},
        "total_tokens": u.total_tokens,
    })
}

/// A response's status and `incomplete_details.reason` from how the answer finished.
pub fn status_for(reason: Option<FinishReason>) -> (&'static str, Option<&'static str>) {
    match reason {
        Some(FinishReason::Length) => ("incomplete", Some("max_output_tokens")),
        Some(FinishReason::ContentFilter) => ("incomplete", Some("content_filter")),
        _ => ("completed", None),
    }
}

/// A finished output message item.
pub fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({
        "id": id, "type": "message", "status": status, "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    })
}

/// A function call output item.
pub fn call_item(id: &str, call_id: &str, name: &str, arguments: &str, status: &str) -> Value {
    json!({
        "type": "function_call", "id": id, "call_id": call_id, "name": name,
        "arguments": arguments, "status": status,
    })
}

struct ResponsesEgress {
    writer: stream::ResponsesWriter,
    reader: chat_stream::ChatStreamReader,
}

impl Egress for ResponsesEgress {
    fn whole(&mut self, chat: &[u8]) -> GatewayResult<Bytes> {
        let meta = self.writer.meta();
        let completion = chat_stream::parse_completion(chat)?;
        let mut output = Vec::new();
        let mut reason = None;
        if let Some(choice) = completion.choices.into_iter().find(|c| c.index == 0) {
            reason = choice.finish_reason.as_deref().map(finish_reason);
            let text = choice.message.text();
            if let Some(refusal) = choice.message.refusal.as_deref() {
                let id = meta.message_id(output.len());
                output.push(json!({
                    "id": id, "type": "message", "status": "completed", "role": "assistant",
                    "content": [{"type": "refusal", "refusal": refusal}],
                }));
            } else if !text.is_empty() || choice.message.tool_calls.is_empty() {
                let id = meta.message_id(output.len());
                output.push(message_item(&id, &text, "completed"));
            }
            for call in &choice.message.tool_calls {
                let id = meta.call_item_id(output.len());
                output.push(call_item(
                    &id,
                    &call.id,
                    &call.function.name,
                    &call.function.arguments,
                    "completed",
                ));
            }
        }
        let (status, incomplete) = status_for(reason);
        let body = meta.response(status, output, completion.usage.as_ref(), incomplete, None);
        Ok(Bytes::from(body.to_string()))
    }

    fn feed(&mut self, sse: &[u8], out: &mut BytesMut) {
        let ResponsesEgress { writer, reader } = self;
        reader.feed(sse, &mut |piece| writer.piece(piece));
        writer.drain_into(out);
    }

    fn finish(&mut self, out: &mut BytesMut) {
        let ResponsesEgress { writer, reader } = self;
        reader.finish(&mut |piece| writer.piece(piece));
        writer.end();
        writer.drain_into(out);
    }
}
