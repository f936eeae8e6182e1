//! Reads OpenAI chat answers into typed pieces for an ingress format's writer: one
//! `chat.completion.chunk` (an OpenAI-speaking upstream's raw stream chunk, [`piece`]) and the
//! whole `chat.completion` body. Fields borrow from the JSON being read.

use crate::error::{GatewayError, GatewayResult};
use crate::openai::{FinishReason, Usage};
use serde::Deserialize;
use std::borrow::Cow;

/// One `chat.completion.chunk`, the fields an ingress writer needs.
#[derive(Deserialize, Default)]
pub struct Chunk<'a> {
    #[serde(borrow, default)]
    pub id: Option<Cow<'a, str>>,
    #[serde(default)]
    pub created: Option<u64>,
    #[serde(borrow, default)]
    pub model: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub choices: Vec<ChunkChoice<'a>>,
    #[serde(default)]
    pub usage: Option<Usage>,
    #[serde(default)]
    pub error: Option<ErrorBody>,
}

#[derive(Deserialize)]
pub struct ChunkChoice<'a> {
    #[serde(default)]
    pub index: usize,
    #[serde(borrow, default)]
    pub delta: Delta<'a>,
    #[serde(borrow, default)]
    pub finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Default)]
pub struct Delta<'a> {
    #[serde(borrow, default)]
    pub content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub reasoning_content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub refusal: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub tool_calls: Option<Vec<ToolCallDelta<'a>>>,
}

#[derive(Deserialize)]
pub struct ToolCallDelta<'a> {
    #[serde(default)]
    pub index: usize,
    #[serde(borrow, default)]
    pub id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub function: Option<FunctionDelta<'a>>,
}

#[derive(Deserialize, Default)]
pub struct FunctionDelta<'a> {
    #[serde(borrow, default)]
    pub name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub arguments: Option<Cow<'a, str>>,
}

/// An OpenAI error object's inner fields.
#[derive(Deserialize, Default, Debug, Clone)]
pub struct ErrorBody {
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub code: Option<serde_json::Value>,
    #[serde(default)]
    pub param: Option<String>,
}

impl ErrorBody {
    pub fn code_str(&self) -> Option<String> {
        match &self.code {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            _ => None,
        }
    }
}

/// What one SSE event of the chat stream was.
pub enum Piece<'a> {
    Chunk(Chunk<'a>),
    /// `data: [DONE]`.
    Done,
    /// An error event, or bytes that are no chat chunk.
    Error(ErrorBody),
}

/// One SSE event's data as a piece of the chat stream.
pub fn piece(data: &str) -> Piece<'_> {
    if data.trim() == "[DONE]" {
        return Piece::Done;
    }
    match serde_json::from_str::<Chunk<'_>>(data) {
        Ok(Chunk {
            error: Some(error), ..
        }) => Piece::Error(error),
        Ok(chunk) => Piece::Chunk(chunk),
        Err(e) => Piece::Error(ErrorBody {
            message: format!("The gateway could not read its own stream chunk: {e}"),
            ..Default::default()
        }),
    }
}

/// A chat finish reason as the enum (unknown values are `stop`).
pub fn finish_reason(s: &str) -> FinishReason {
    match s {
        "length" => FinishReason::Length,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        "content_filter" => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

/// A whole `chat.completion` body, the fields an ingress writer needs.
#[derive(Deserialize)]
pub struct Completion<'a> {
    #[serde(borrow, default)]
    pub id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub model: Option<Cow<'a, str>>,
    #[serde(default)]
    pub created: Option<u64>,
    #[serde(default)]
    pub choices: Vec<Choice<'a>>,
    #[serde(default)]
    pub usage: Option<Usage>,
}

#[derive(Deserialize)]
pub struct Choice<'a> {
    #[serde(default)]
    pub index: usize,
    #[serde(borrow, default)]
    pub message: Message<'a>,
    #[serde(borrow, default)]
    pub finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Default)]
pub struct Message<'a> {
    /// A string, or (some OpenAI-compatible servers) a list of text parts.
    #[serde(default)]
    pub content: Option<serde_json::Value>,
    #[serde(borrow, default)]
    pub refusal: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub tool_calls: Vec<ToolCall<'a>>,
}

impl Message<'_> {
    /// The message's text: the string, or its text parts joined.
    pub fn text(&self) -> String {
        match &self.content {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Array(parts)) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(|t| t.as_str()))
                .collect(),
            _ => String::new(),
        }
    }
}

#[derive(Deserialize)]
pub struct ToolCall<'a> {
    #[serde(borrow, default)]
    pub id: Cow<'a, str>,
    #[serde(borrow)]
    pub function: Function<'a>,
}

#[derive(Deserialize)]
pub struct Function<'a> {
    #[serde(borrow, default)]
    pub name: Cow<'a, str>,
    #[serde(borrow, default)]
    pub arguments: Cow<'a, str>,
}

/// Parses a whole chat answer; one the gateway cannot read is a 502.
pub fn parse_completion(body: &[u8]) -> GatewayResult<Completion<'_>> {
    serde_json::from_slice(body).map_err(|e| {
        GatewayError::bad_gateway(format!(
            "The upstream's answer could not be read as a chat completion: {e}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_chunks_done_and_errors() {
        let seen: Vec<String> = [
            "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"h\\u00e9\"}}]}",
            "{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c\",\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]}}]}",
            "{\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2,\"total_tokens\":3}}",
            "{\"error\":{\"message\":\"boom\",\"type\":\"x\",\"param\":null,\"code\":\"502\"}}",
            "[DONE]",
            "garbage",
        ]
        .into_iter()
        .map(|data| match piece(data) {
            Piece::Chunk(c) => match c.choices.first() {
                Some(ch) => format!(
                    "c:{}:{}",
                    ch.delta.content.as_deref().unwrap_or(""),
                    ch.delta.tool_calls.as_ref().map_or(0, |t| t.len())
                ),
                None => format!("u:{}", c.usage.map_or(0, |u| u.total_tokens)),
            },
            Piece::Done => "done".into(),
            Piece::Error(e) => format!("e:{}", &e.message[..4]),
        })
        .collect();
        assert_eq!(seen, ["c:hé:0", "c::1", "u:3", "e:boom", "done", "e:The "]);
    }
}
