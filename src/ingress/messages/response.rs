//! Whole answers: a translated deployment's OpenAI `chat.completion` into a Messages response,
//! and the usage read out of an Anthropic-family deployment's own answer (which goes back to
//! the client unchanged).

use crate::error::{GatewayError, GatewayResult};
use crate::openai::{FinishReason, Usage};
use crate::providers::anthropic::AnthropicUsage;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};
use std::borrow::Cow;

/// Chat's `finish_reason` as Anthropic's `stop_reason` (`stop` becomes `end_turn`: chat does
/// not say whether a stop sequence matched).
pub fn stop_reason(finish: Option<FinishReason>) -> &'static str {
    match finish {
        Some(FinishReason::Length) => "max_tokens",
        Some(FinishReason::ToolCalls) => "tool_use",
        Some(FinishReason::ContentFilter) => "refusal",
        _ => "end_turn",
    }
}

fn finish_from_str(s: Option<&str>) -> Option<FinishReason> {
    Some(match s? {
        "length" => FinishReason::Length,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        "content_filter" => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    })
}

pub(crate) fn parse_finish(s: Option<&str>) -> Option<FinishReason> {
    finish_from_str(s)
}

/// Chat usage in Anthropic's terms: `input_tokens` excludes cache reads and writes.
pub fn usage_json(usage: Option<Usage>) -> Value {
    let u = usage.unwrap_or_default();
    let cached = u.cached_tokens();
    let written = u.cache_creation_tokens();
    json!({
        "input_tokens": u.prompt_tokens.saturating_sub(cached + written),
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": cached,
        "output_tokens": u.completion_tokens,
    })
}

/// A Messages id from the exchange's response id (`chatcmpl-<uuid>` → `msg_<hex>`).
pub fn message_id(response_id: &str) -> String {
    let uuid = response_id.strip_prefix("chatcmpl-").unwrap_or(response_id);
    let mut id = String::with_capacity(4 + uuid.len());
    id.push_str("msg_");
    id.extend(uuid.chars().filter(|c| *c != '-'));
    id
}

#[derive(Deserialize)]
struct Completion<'a> {
    #[serde(default, borrow)]
    choices: Vec<Choice<'a>>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(borrow)]
    message: Msg<'a>,
    #[serde(default, borrow)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Msg<'a> {
    /// Reasoning text, as DeepSeek, vLLM and LiteLLM name it.
    #[serde(default, borrow)]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    tool_calls: Vec<Call<'a>>,
}

#[derive(Deserialize)]
struct Call<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    function: Function<'a>,
}

#[derive(Deserialize)]
struct Function<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(default, borrow)]
    arguments: Cow<'a, str>,
}

/// Translates an OpenAI `chat.completion` (as the gateway's providers produce it) into a
/// Messages response naming `model`.
pub fn from_openai(openai: &[u8], response_id: &str, model: &str) -> GatewayResult<Bytes> {
    let c: Completion<'_> = serde_json::from_slice(openai).map_err(|e| {
        GatewayError::bad_gateway(format!(
            "The upstream's answer could not be read as a chat completion ({e})."
        ))
    })?;
    let mut content = Vec::new();
    let mut finish = None;
    if let Some(choice) = c.choices.into_iter().next() {
        finish = finish_from_str(choice.finish_reason.as_deref());
        if let Some(thinking) = choice.message.reasoning_content.filter(|t| !t.is_empty()) {
            // Unsigned: nothing upstream signs it in Anthropic's terms.
            content.push(json!({"type": "thinking", "thinking": thinking, "signature": ""}));
        }
        if let Some(text) = choice.message.content.filter(|t| !t.is_empty()) {
            content.push(json!({"type": "text", "text": text}));
        }
        for call in choice.message.tool_calls {
            // Anthropic's input is an object; arguments that are not one (a model's broken
            // JSON) are kept as a string under `_raw` rather than lost.
            let input = match serde_json::from_str::<Value>(&call.function.arguments) {
                Ok(v @ Value::Object(_)) => v,
                _ if call.function.arguments.trim().is_empty() => json!({}),
                _ => json!({"_raw": call.function.arguments}),
            };
            content.push(json!({
                "type": "tool_use", "id": call.id, "name": call.function.name, "input": input,
            }));
        }
    }
    let body = json!({
        "id": message_id(response_id),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(finish),
        "stop_sequence": null,
        "usage": usage_json(c.usage),
    });
    serde_json::to_vec(&body)
        .map(Bytes::from)
        .map_err(|e| GatewayError::internal(e.to_string()))
}

#[derive(Deserialize)]
struct WithUsage {
    #[serde(default)]
    usage: Option<AnthropicUsage>,
}

/// The usage in an Anthropic Messages response (or a `message_delta` event), as OpenAI usage
/// for cost and spend; `None` when the body has none or is not JSON.
pub fn usage_of(body: &[u8]) -> Option<Usage> {
    serde_json::from_slice::<WithUsage>(body)
        .ok()?
        .usage
        .map(AnthropicUsage::to_openai)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_with_tool_call_becomes_a_message() {
        let openai = br#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt",
            "choices":[{"index":0,"message":{"role":"assistant","content":"Let me check.",
            "tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},
            "finish_reason":"tool_calls"}],
            "usage":{"prompt_tokens":30,"completion_tokens":7,"total_tokens":37,"prompt_tokens_details":{"cached_tokens":10}}}"#;
        let out = from_openai(openai, "chatcmpl-0a1b-2c", "claude-alias").unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            json!({
                "id": "msg_0a1b2c", "type": "message", "role": "assistant", "model": "claude-alias",
                "content": [
                    {"type": "text", "text": "Let me check."},
                    {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}}
                ],
                "stop_reason": "tool_use", "stop_sequence": null,
                "usage": {"input_tokens": 20, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 10, "output_tokens": 7}
            })
        );
    }

    #[test]
    fn anthropic_usage_is_read_for_spend() {
        let u = usage_of(br#"{"id":"msg_1","usage":{"input_tokens":5,"cache_read_input_tokens":3,"output_tokens":2}}"#).unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.cached_tokens()),
            (8, 2, 3)
        );
        assert!(usage_of(b"not json").is_none());
    }
}
