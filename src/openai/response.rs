//! OpenAI response bodies the gateway builds for translated providers: `chat.completion`,
//! embeddings lists, and the shared `usage` and `finish_reason` types.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
            FinishReason::ContentFilter => "content_filter",
        }
    }
}

impl Serialize for FinishReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Token usage as OpenAI reports it (with the cache-write and reasoning counts LiteLLM adds,
/// which pricing needs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<CompletionTokensDetails>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptTokensDetails {
    /// Prompt tokens read from the provider's prompt cache (inside `prompt_tokens`).
    #[serde(default)]
    pub cached_tokens: u64,
    /// Prompt tokens written to the prompt cache (inside `prompt_tokens`), as LiteLLM names
    /// them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_creation_tokens: u64,
    /// Of the cache writes, those kept for an hour (Anthropic's `ephemeral_1h_input_tokens`),
    /// priced apart. Kept for pricing only: LiteLLM reports it in a different shape.
    #[serde(skip)]
    pub cache_creation_1h_tokens: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletionTokensDetails {
    /// Completion tokens spent thinking (inside `completion_tokens`).
    #[serde(default)]
    pub reasoning_tokens: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Usage {
    pub fn new(prompt: u64, completion: u64) -> Usage {
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
            prompt_tokens_details: None,
            completion_tokens_details: None,
        }
    }

    pub fn with_cached(mut self, cached: u64) -> Usage {
        if cached > 0 {
            self.prompt_tokens_details
                .get_or_insert_with(Default::default)
                .cached_tokens = cached;
        }
        self
    }

    /// Cache writes (inside `prompt_tokens`), of which `one_hour` kept for an hour.
    pub fn with_cache_creation(mut self, written: u64, one_hour: u64) -> Usage {
        if written > 0 {
            let d = self
                .prompt_tokens_details
                .get_or_insert_with(Default::default);
            d.cache_creation_tokens = written;
            d.cache_creation_1h_tokens = one_hour.min(written);
        }
        self
    }

    /// Reasoning tokens (inside `completion_tokens`).
    pub fn with_reasoning(mut self, reasoning: u64) -> Usage {
        if reasoning > 0 {
            self.completion_tokens_details = Some(CompletionTokensDetails {
                reasoning_tokens: reasoning,
            });
        }
        self
    }

    pub fn cached_tokens(&self) -> u64 {
        self.prompt_tokens_details.map_or(0, |d| d.cached_tokens)
    }

    pub fn cache_creation_tokens(&self) -> u64 {
        self.prompt_tokens_details
            .map_or(0, |d| d.cache_creation_tokens)
    }

    pub fn reasoning_tokens(&self) -> u64 {
        self.completion_tokens_details
            .map_or(0, |d| d.reasoning_tokens)
    }
}

/// A non-streaming `chat.completion`.
#[derive(Serialize, Debug)]
pub struct ChatCompletion<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub created: u64,
    pub model: &'a str,
    pub choices: Vec<Choice>,
    pub usage: Usage,
}

#[derive(Serialize, Debug)]
pub struct Choice {
    pub index: u32,
    pub message: AssistantMessage,
    pub logprobs: Option<()>,
    pub finish_reason: FinishReason,
}

#[derive(Serialize, Debug, Default)]
pub struct AssistantMessage {
    pub role: &'static str,
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCallOut>,
    pub refusal: Option<String>,
}

#[derive(Serialize, Debug, Clone)]
pub struct ToolCallOut {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: FunctionOut,
}

#[derive(Serialize, Debug, Clone)]
pub struct FunctionOut {
    pub name: String,
    /// JSON text.
    pub arguments: String,
}

impl ToolCallOut {
    pub fn new(id: String, name: String, arguments: String) -> Self {
        ToolCallOut {
            id,
            kind: "function",
            function: FunctionOut { name, arguments },
        }
    }
}

impl<'a> ChatCompletion<'a> {
    /// A one-choice completion, the shape every translator produces.
    pub fn single(
        id: &'a str,
        created: u64,
        model: &'a str,
        content: Option<String>,
        tool_calls: Vec<ToolCallOut>,
        finish_reason: FinishReason,
        usage: Usage,
    ) -> Self {
        ChatCompletion {
            id,
            object: "chat.completion",
            created,
            model,
            choices: vec![Choice {
                index: 0,
                message: AssistantMessage {
                    role: "assistant",
                    content,
                    tool_calls,
                    refusal: None,
                },
                logprobs: None,
                finish_reason,
            }],
            usage,
        }
    }

    pub fn to_bytes(&self) -> bytes::Bytes {
        bytes::Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }
}

/// Builds an OpenAI embeddings list from float vectors, base64-encoding them (little-endian f32,
/// as OpenAI does) when the client asked for `encoding_format: base64`.
pub fn embeddings_response(
    model: &str,
    vectors: &[Vec<f32>],
    base64: bool,
    usage: Usage,
) -> bytes::Bytes {
    use std::io::Write;
    let mut out = Vec::with_capacity(64 + vectors.iter().map(|v| v.len() * 12).sum::<usize>());
    out.extend_from_slice(b"{\"object\":\"list\",\"data\":[");
    for (i, v) in vectors.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let _ = write!(
            out,
            "{{\"object\":\"embedding\",\"index\":{i},\"embedding\":"
        );
        if base64 {
            let mut raw = Vec::with_capacity(v.len() * 4);
            for x in v {
                raw.extend_from_slice(&x.to_le_bytes());
            }
            out.push(b'"');
            out.extend_from_slice(base64_encode(&raw).as_bytes());
            out.push(b'"');
        } else {
            let _ = serde_json::to_writer(&mut out, v);
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"],\"model\":");
    let _ = serde_json::to_writer(&mut out, model);
    let _ = write!(
        out,
        ",\"usage\":{{\"prompt_tokens\":{},\"total_tokens\":{}}}}}",
        usage.prompt_tokens,
        usage.prompt_tokens.max(usage.total_tokens)
    );
    bytes::Bytes::from(out)
}

/// Standard base64 with padding.
pub fn base64_encode(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn embeddings_list_shape() {
        let body = embeddings_response("m", &[vec![0.5, 1.0]], false, Usage::new(3, 0));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["data"][0]["embedding"][1], 1.0);
        assert_eq!(v["usage"]["total_tokens"], 3);
        let b64 = embeddings_response("m", &[vec![1.0]], true, Usage::new(1, 0));
        let v: serde_json::Value = serde_json::from_slice(&b64).unwrap();
        assert_eq!(v["data"][0]["embedding"], "AACAPw==");
    }
}
