//! LiteLLM's `mock_response`: a deployment answered by the gateway itself, no upstream. An
//! ordinary [`Provider`], chosen by the `mock_response` parameter whatever the model's prefix:
//! its call ([`MockCall`]) answers in-process ([`Outbound::Answered`]) instead of building an
//! upstream request, and the exchange reads that answer through the call's own
//! `parse_response` / `stream_translator` exactly as it reads an upstream's. The text is the
//! completion (streamed word by word: one chunk per word); a `litellm.<ErrorClass>` value raises
//! that error instead, as LiteLLM does, which makes retries and fallbacks testable without a
//! provider.

use super::{
    Operation, Outbound, Provider, ProviderCall, RequestContext, StreamTranslator,
    TranslatedResponse, UpstreamRequest,
};
use crate::config::{ConfigError, DeploymentConfig};
use crate::error::{ErrorKind, GatewayError, GatewayResult};
use crate::events::{EventSink, OpenAiSink, StreamEvent};
use crate::openai::request::{EmbeddingInput, EmbeddingsRequest};
use crate::openai::response::{embeddings_response, ChatCompletion};
use crate::openai::{ChunkWriter, FinishReason, RequestBody, Usage};
use crate::upstream::UpstreamClient;
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use std::sync::Arc;

/// The mock for a deployment with `litellm_params.mock_response`; `Ok(None)` without one.
pub fn build(dep: &DeploymentConfig) -> Result<Option<Arc<dyn Provider>>, ConfigError> {
    Ok(dep
        .params
        .mock_response
        .as_deref()
        .map(|text| Arc::new(MockProvider::new(text)) as Arc<dyn Provider>))
}

/// A deployment answered in-process with a fixed text (or a fixed error).
pub struct MockProvider {
    text: String,
    error: Option<GatewayError>,
}

impl MockProvider {
    pub fn new(text: &str) -> Self {
        MockProvider {
            text: text.to_string(),
            error: mock_error(text),
        }
    }

    /// A stable rough count (~4 bytes a token), enough for metering tests and dashboards.
    fn usage(&self, prompt_bytes: usize, op: Operation) -> Usage {
        let completion = match op {
            Operation::Chat => self.text.split_whitespace().count().max(1) as u64,
            Operation::Embeddings => 0,
        };
        Usage::new((prompt_bytes / 4).max(1) as u64, completion)
    }
}

#[async_trait]
impl Provider for MockProvider {
    fn name(&self) -> &'static str {
        "mock"
    }

    fn base_url(&self) -> &str {
        "mock"
    }

    fn supports(&self, _op: Operation) -> bool {
        true
    }

    fn answers_in_process(&self) -> bool {
        true
    }

    /// Never called by the exchange, which drives the mock through its call ([`MockCall`]).
    async fn build_request(
        &self,
        _body: &RequestBody<'_>,
        _cx: &RequestContext<'_>,
        _client: &UpstreamClient,
    ) -> GatewayResult<UpstreamRequest> {
        Err(GatewayError::internal(
            "A mock_response deployment answers in-process; it sends no upstream request.",
        ))
    }

    /// The mock's answers are already OpenAI JSON; without its call, usage is unknown.
    fn parse_response(
        &self,
        body: &[u8],
        _cx: &RequestContext<'_>,
    ) -> GatewayResult<TranslatedResponse> {
        Ok(TranslatedResponse {
            body: Bytes::copy_from_slice(body),
            usage: None,
        })
    }

    fn stream_translator(&self, cx: &RequestContext<'_>) -> Box<dyn StreamTranslator> {
        Box::new(MockStream::new(cx, None))
    }

    fn start(&self, _cx: &RequestContext<'_>) -> Option<Box<dyn ProviderCall + '_>> {
        Some(Box::new(MockCall {
            mock: self,
            usage: None,
        }))
    }
}

/// One request's mock answer: made when the call opens, with the usage it reports kept for
/// reading the answer back.
pub struct MockCall<'p> {
    mock: &'p MockProvider,
    usage: Option<Usage>,
}

#[async_trait]
impl ProviderCall for MockCall<'_> {
    async fn open(
        &mut self,
        body: &RequestBody<'_>,
        cx: &RequestContext<'_>,
        _client: &UpstreamClient,
    ) -> GatewayResult<Outbound> {
        if let Some(err) = &self.mock.error {
            return Err(err.clone());
        }
        if cx.op == Operation::Chat {
            check_messages(body)?;
        }
        let usage = self.mock.usage(prompt_bytes(body), cx.op);
        self.usage = Some(usage);
        let chunks = match cx.op {
            Operation::Embeddings => {
                let req = EmbeddingsRequest::from_body(body)?;
                let inputs = match &req.input {
                    EmbeddingInput::Many(v) => v.len(),
                    EmbeddingInput::TokenBatches(v) => v.len(),
                    _ => 1,
                };
                vec![embeddings(cx.model, inputs, req.base64, usage)]
            }
            Operation::Chat if cx.stream => words(&self.mock.text),
            Operation::Chat => vec![ChatCompletion::single(
                cx.response_id,
                cx.created,
                cx.model,
                Some(self.mock.text.clone()),
                Vec::new(),
                FinishReason::Stop,
                usage,
            )
            .to_bytes()],
        };
        Ok(Outbound::Answered(chunks))
    }

    async fn build_request(
        &mut self,
        body: &RequestBody<'_>,
        cx: &RequestContext<'_>,
        client: &UpstreamClient,
    ) -> GatewayResult<UpstreamRequest> {
        self.mock.build_request(body, cx, client).await
    }

    fn parse_response(
        &mut self,
        body: Bytes,
        _cx: &RequestContext<'_>,
    ) -> GatewayResult<TranslatedResponse> {
        Ok(TranslatedResponse {
            body,
            usage: self.usage,
        })
    }

    fn stream_translator(&mut self, cx: &RequestContext<'_>) -> Box<dyn StreamTranslator> {
        Box::new(MockStream::new(cx, self.usage))
    }
}

/// What OpenAI refuses before answering, refused here too: `messages` missing or not a list
/// (a real upstream behind a pass-through refuses it; the mock must not answer it with 200).
fn check_messages(body: &RequestBody<'_>) -> GatewayResult<()> {
    let problem = match body.get("messages").map(|v| v.get().trim_start()) {
        None => "'messages' is a required property",
        Some(v) if v.starts_with('[') => return Ok(()),
        Some(_) => "Invalid type for 'messages': expected an array of message objects",
    };
    Err(GatewayError::new(ErrorKind::BadRequest, problem).with_param("messages"))
}

/// The request body's size as sent, near enough for the mock's token estimate.
fn prompt_bytes(body: &RequestBody<'_>) -> usize {
    body.fields()
        .map(|(k, v)| k.len() + v.get().len() + 4)
        .sum::<usize>()
        + 1
}

/// The text in pieces, one per word, each with the whitespace after it, so the pieces
/// concatenate to the text exactly.
fn words(text: &str) -> Vec<Bytes> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let end = rest
            .char_indices()
            .skip_while(|(_, c)| !c.is_whitespace())
            .find(|(_, c)| !c.is_whitespace())
            .map(|(i, _)| i)
            .unwrap_or(rest.len());
        pieces.push(Bytes::copy_from_slice(&rest.as_bytes()[..end]));
        rest = &rest[end..];
    }
    pieces
}

/// Embeddings: one deterministic 8-dimensional unit-ish vector per input.
fn embeddings(model: &str, inputs: usize, base64: bool, usage: Usage) -> Bytes {
    let vectors: Vec<Vec<f32>> = (0..inputs.max(1))
        .map(|i| (0..8).map(|j| ((i * 8 + j) as f32 * 0.125).sin()).collect())
        .collect();
    embeddings_response(model, &vectors, base64, usage)
}

/// The mock's stream: each chunk of its answer is a piece of text; the end adds the finish,
/// the usage and `Done`.
struct MockStream {
    writer: ChunkWriter,
    started: bool,
    usage: Option<Usage>,
}

impl MockStream {
    fn new(cx: &RequestContext<'_>, usage: Option<Usage>) -> Self {
        let mut writer = ChunkWriter::new(cx.response_id, cx.created, cx.model, cx.include_usage);
        if let Some(u) = usage {
            writer.set_usage(u);
        }
        MockStream {
            writer,
            started: false,
            usage,
        }
    }
}

impl StreamTranslator for MockStream {
    fn feed(&mut self, input: &[u8], out: &mut BytesMut) -> GatewayResult<()> {
        let (writer, started) = (&mut self.writer, &mut self.started);
        feed_text(started, input, &mut OpenAiSink { writer, out })
    }

    fn finish(&mut self, out: &mut BytesMut) -> GatewayResult<()> {
        let (writer, started) = (&mut self.writer, &mut self.started);
        finish_text(started, self.usage, &mut OpenAiSink { writer, out });
        Ok(())
    }

    fn feed_events(&mut self, input: &[u8], sink: &mut dyn EventSink) -> GatewayResult<()> {
        feed_text(&mut self.started, input, sink)
    }

    fn finish_events(&mut self, sink: &mut dyn EventSink) -> GatewayResult<()> {
        finish_text(&mut self.started, self.usage, sink);
        Ok(())
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

fn feed_text(started: &mut bool, input: &[u8], sink: &mut dyn EventSink) -> GatewayResult<()> {
    let text = std::str::from_utf8(input)
        .map_err(|_| GatewayError::internal("The mock's answer split a character."))?;
    if !std::mem::replace(started, true) {
        sink.event(StreamEvent::Start);
    }
    if !text.is_empty() {
        sink.event(StreamEvent::Text(text));
    }
    Ok(())
}

fn finish_text(started: &mut bool, usage: Option<Usage>, sink: &mut dyn EventSink) {
    if !std::mem::replace(started, true) {
        sink.event(StreamEvent::Start);
    }
    sink.event(StreamEvent::Finish(FinishReason::Stop));
    if let Some(u) = usage {
        sink.event(StreamEvent::Usage(u));
    }
    sink.event(StreamEvent::Done);
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
    use crate::events::{EventLog, RecordedEvent};

    fn cx(op: Operation, stream: bool) -> RequestContext<'static> {
        RequestContext {
            op,
            model: "mock-gpt",
            stream,
            include_usage: true,
            response_id: "id",
            created: 1,
            drop_params: false,
            embeddings_base64: false,
        }
    }

    async fn open<'m>(
        mock: &'m MockProvider,
        cx: &RequestContext<'_>,
        body: &[u8],
    ) -> GatewayResult<(Vec<Bytes>, Box<dyn ProviderCall + 'm>)> {
        let body = RequestBody::parse(body).unwrap();
        let mut call = mock.start(cx).expect("the mock keeps per-call state");
        let client = UpstreamClient::new(1);
        match call.open(&body, cx, &client).await? {
            Outbound::Answered(chunks) => Ok((chunks, call)),
            Outbound::Send(_) => panic!("the mock never goes upstream"),
        }
    }

    #[tokio::test]
    async fn stream_pieces_are_words_and_concatenate_to_the_text() {
        let m = MockProvider::new("Hello  there, world");
        let cx = cx(Operation::Chat, true);
        let (chunks, mut call) = open(&m, &cx, br#"{"model":"m","messages":[]}"#)
            .await
            .unwrap();
        assert_eq!(chunks, ["Hello  ", "there, ", "world"]);
        let mut t = call.stream_translator(&cx);
        let mut log = EventLog::default();
        for c in &chunks {
            t.feed_events(c, &mut log).unwrap();
        }
        t.finish_events(&mut log).unwrap();
        let usage = t.usage().expect("usage known from the call");
        assert_eq!(usage.completion_tokens, 3);
        assert_eq!(
            log.events,
            [
                RecordedEvent::Start,
                RecordedEvent::Text("Hello  ".into()),
                RecordedEvent::Text("there, ".into()),
                RecordedEvent::Text("world".into()),
                RecordedEvent::Finish(FinishReason::Stop),
                RecordedEvent::Usage(usage),
                RecordedEvent::Done,
            ]
        );
    }

    #[tokio::test]
    async fn error_mocks_fail_the_call() {
        let m = MockProvider::new("litellm.RateLimitError");
        let err = open(&m, &cx(Operation::Chat, false), br#"{"model":"m"}"#)
            .await
            .err()
            .unwrap();
        assert_eq!(
            (err.status, err.code.as_deref()),
            (429, Some("rate_limit_exceeded"))
        );
        assert!(mock_error("plain text").is_none());
    }

    #[tokio::test]
    async fn embeddings_answer_one_vector_per_input() {
        let m = MockProvider::new("ignored");
        let cx = cx(Operation::Embeddings, false);
        let (chunks, mut call) = open(&m, &cx, br#"{"model":"m","input":["a","b"]}"#)
            .await
            .unwrap();
        let answer = call.parse_response(chunks.concat().into(), &cx).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
        assert_eq!(v["data"].as_array().unwrap().len(), 2);
        assert_eq!(answer.usage.unwrap().completion_tokens, 0);
    }
}
