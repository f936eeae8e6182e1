//! LiteLLM's `mock_response`: a deployment answered by the gateway itself, no upstream. The text
//! is the completion (streamed word by word when asked); a `litellm.<ErrorClass>` value raises
//! that error instead, as LiteLLM does, which makes retries and fallbacks testable without a
//! provider.

use crate::error::{ErrorKind, GatewayError};
use crate::openai::response::{embeddings_response, ChatCompletion};
use crate::openai::{ChunkWriter, FinishReason, Usage};
use bytes::{Bytes, BytesMut};

pub struct MockResponder {
    text: String,
    model: String,
    error: Option<GatewayError>,
}

impl MockResponder {
    pub fn new(text: &str, model: &str) -> Self {
        MockResponder {
            text: text.to_string(),
            model: model.to_string(),
            error: mock_error(text),
        }
    }

    /// A configured error, if the mock raises one.
    pub fn error(&self) -> Option<GatewayError> {
        self.error.clone()
    }

    fn usage(&self, prompt_bytes: usize) -> Usage {
        // A stable rough count (~4 bytes a token), enough for metering tests and dashboards.
        Usage::new(
            (prompt_bytes / 4).max(1) as u64,
            self.text.split_whitespace().count().max(1) as u64,
        )
    }

    pub fn completion(&self, id: &str, created: u64, prompt_bytes: usize) -> (Bytes, Usage) {
        let usage = self.usage(prompt_bytes);
        let body = ChatCompletion::single(
            id,
            created,
            &self.model,
            Some(self.text.clone()),
            Vec::new(),
            FinishReason::Stop,
            usage,
        )
        .to_bytes();
        (body, usage)
    }

    /// The whole stream as OpenAI SSE events, one per word.
    pub fn stream_events(
        &self,
        id: &str,
        created: u64,
        include_usage: bool,
        prompt_bytes: usize,
    ) -> (Vec<Bytes>, Usage) {
        let usage = self.usage(prompt_bytes);
        let mut writer = ChunkWriter::new(id, created, &self.model, include_usage);
        let mut events = Vec::new();
        let mut out = BytesMut::new();
        writer.start(&mut out);
        events.push(out.split().freeze());
        let mut rest = self.text.as_str();
        while !rest.is_empty() {
            // Split after each run of whitespace so concatenated deltas equal the text exactly.
            let end = rest
                .char_indices()
                .skip_while(|(_, c)| !c.is_whitespace())
                .find(|(_, c)| !c.is_whitespace())
                .map(|(i, _)| i)
                .unwrap_or(rest.len());
            writer.text(&rest[..end], &mut out);
            events.push(out.split().freeze());
            rest = &rest[end..];
        }
        writer.set_usage(usage);
        writer.done(&mut out);
        events.push(out.split().freeze());
        (events, usage)
    }

    /// Embeddings: one deterministic 8-dimensional unit-ish vector per input.
    pub fn embeddings(&self, inputs: usize, base64: bool, prompt_bytes: usize) -> (Bytes, Usage) {
        let vectors: Vec<Vec<f32>> = (0..inputs.max(1))
            .map(|i| (0..8).map(|j| ((i * 8 + j) as f32 * 0.125).sin()).collect())
            .collect();
        let usage = Usage::new((prompt_bytes / 4).max(1) as u64, 0);
        (
            embeddings_response(&self.model, &vectors, base64, usage),
            usage,
        )
    }
}

fn mock_error(text: &str) -> Option<GatewayError> {
    let class = text.strip_prefix("litellm.")?;
    let (kind, status, msg) = match class {
        "RateLimitError" => (ErrorKind::RateLimited, 429, "Mock rate limit error"),
        "InternalServerError" => (ErrorKind::Internal, 500, "Mock internal server error"),
        "ServiceUnavailableError" => (ErrorKind::Unavailable, 503, "Mock service unavailable"),
        "Timeout" => (ErrorKind::Timeout, 504, "Mock timeout"),
        "BadRequestError" => (ErrorKind::BadRequest, 400, "Mock bad request"),
        "AuthenticationError" => (ErrorKind::Authentication, 401, "Mock authentication error"),
        "NotFoundError" => (ErrorKind::NotFound, 404, "Mock not found"),
        "ContextWindowExceededError" => (
            ErrorKind::ContextLengthExceeded,
            400,
            "Mock context window exceeded",
        ),
        "ContentPolicyViolationError" => (
            ErrorKind::ContentPolicy,
            400,
            "Mock content policy violation",
        ),
        _ => return None,
    };
    let mut err = GatewayError::new(kind, msg).with_status(status);
    err.code = match kind {
        ErrorKind::ContextLengthExceeded => Some("context_length_exceeded".into()),
        ErrorKind::ContentPolicy => Some("content_policy_violation".into()),
        ErrorKind::RateLimited => Some("rate_limit_exceeded".into()),
        _ => None,
    };
    Some(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_deltas_concatenate_to_the_text() {
        let m = MockResponder::new("Hello  there, world", "mock-gpt");
        let (events, _) = m.stream_events("id", 1, true, 10);
        let all: Vec<u8> = events.concat();
        let text: String = std::str::from_utf8(&all)
            .unwrap()
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .filter_map(|d| {
                let v: serde_json::Value = serde_json::from_str(d).unwrap();
                v["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_string)
            })
            .collect();
        assert_eq!(text, "Hello  there, world");
    }

    #[test]
    fn error_mocks() {
        assert_eq!(
            MockResponder::new("litellm.RateLimitError", "m")
                .error()
                .unwrap()
                .status,
            429
        );
        assert!(MockResponder::new("plain text", "m").error().is_none());
    }
}
