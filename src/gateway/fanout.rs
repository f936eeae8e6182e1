//! `n` > 1 on a deployment whose provider returns one choice per call (Anthropic, Bedrock,
//! Gemini, Cohere, …): the attempt makes `n` upstream calls at once (each without `n`) and
//! merges them, so a client that asked for `n` choices gets `n`, never one silently.
//!
//! - Whole answers: one `chat.completion` whose choices are each call's, indexed `0..n`, with
//!   usage summed field by field.
//! - Streams: every call's chunks go out as they arrive, each choice's `index` set to its call;
//!   the calls' own usage chunks and `[DONE]` are held back, and once all have ended one usage
//!   chunk (when the client asked, with the summed usage and its cost) and one `[DONE]` follow.
//! - Failures: until every call has its answer (for streams: its first translated bytes)
//!   nothing is written, so one failing call fails the attempt and the request takes the usual
//!   retry / fallback / error path (the other calls are dropped). A call failing mid-stream
//!   ends the whole stream with an error event and `[DONE]`, as a single stream's failure does.
//! - Several prompts (a translated `/v1/completions` request's prompt list, see
//!   [`crate::ingress::Egress::prompts`]): one call per prompt (times `n` where the provider
//!   returns one choice per call), each with its prompt as the only message; choices are
//!   indexed `prompt × n + j`, as OpenAI answers a prompt list.
//! - Bounds and the switch: `switchboard.max_n` (default 8) caps the calls one attempt makes,
//!   `switchboard.n_fanout: false` turns fan-out off; either way such a request is a 400
//!   naming `n` (or `prompt`).
//!
//! Spend is the sum; the admission stages reserve `n` times one call (see
//! [`crate::openai::RequestBody::choices`]), a prompt list's input estimate covering every
//! prompt (the chat body lists them all). A child of `exchange` (it drives the same
//! attempt machinery).

use super::{
    attempt_failed, respond, until_ready, Answer, AttemptOutcome, Call, Ready, ResponseSink,
};
use crate::config::ServerSettings;
use crate::context::Context;
use crate::error::{GatewayError, GatewayResult};
use crate::openai::{RequestBody, Usage};
use crate::providers::{Operation, Provider, StreamTranslator};
use crate::router::{Admission, Deployment};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use serde_json::value::RawValue;
use serde_json::Value;
use std::time::Instant;

/// The calls one attempt makes and what each asks for.
pub(super) struct Plan {
    /// Calls in all: prompts × the calls per prompt.
    calls: usize,
    /// Calls per prompt: `n` when each returns one choice, else 1 (the call keeps `n`).
    per_prompt: usize,
    /// Choices each call answers with: `n` when the call keeps it, else 1.
    choices_per_call: usize,
}

/// The calls this attempt makes: `None` for one (one prompt and no `n` > 1 to fan out, a
/// provider that takes `n` itself, a pass-through, or not a chat call); a 400 naming `n` (or
/// `prompt`) when fan-out is off or the calls would be over `switchboard.max_n`.
pub(super) fn plan(
    call: &Call<'_>,
    provider: &dyn Provider,
    settings: &ServerSettings,
) -> GatewayResult<Option<Plan>> {
    if call.op != Operation::Chat || call.messages.is_some() {
        return Ok(None);
    }
    // A deployment with the client's own API gets the client's body (prompt list and all).
    if call.native.is_some_and(|r| r.api.is_native(provider)) {
        return Ok(None);
    }
    let prompts = call.reshape.map_or(0, |e| e.prompts().len()).max(1);
    let n = call.parsed.typed::<u64>("n")?.unwrap_or(1).max(1);
    let fan_n = n > 1 && !provider.native_n();
    let per_prompt = if fan_n { n } else { 1 };
    let calls = (prompts as u64).saturating_mul(per_prompt);
    if calls <= 1 {
        return Ok(None);
    }
    let (param, what) = if prompts > 1 {
        ("prompt", format!("{prompts} prompts:"))
    } else {
        ("n", format!("n is {n}, but"))
    };
    if !settings.n_fanout {
        return Err(GatewayError::invalid_param(
            param,
            format!(
                "{} returns one answer per call and this gateway does not fan out (switchboard.n_fanout is false); send {}, or make {calls} requests.",
                provider.name(),
                if prompts > 1 { "one prompt" } else { "n: 1" },
            ),
        )
        .with_code("unsupported_parameter"));
    }
    if calls > settings.max_n {
        return Err(GatewayError::invalid_param(
            param,
            format!(
                "{what} {} answers one {} per call and this gateway makes at most {} calls for one request (switchboard.max_n); {}.",
                provider.name(),
                if prompts > 1 { "prompt" } else { "choice" },
                settings.max_n,
                if prompts > 1 { "send fewer prompts (or a smaller n) per request" } else { "ask for fewer choices" },
            ),
        ));
    }
    Ok(Some(Plan {
        calls: calls as usize,
        per_prompt: per_prompt as usize,
        choices_per_call: if fan_n { 1 } else { n as usize },
    }))
}

/// One attempt as concurrent calls on one deployment, merged (see the module doc).
pub(super) async fn attempt(
    call: &Call<'_>,
    admission: Admission,
    plan: Plan,
    sink: &mut impl ResponseSink,
    ctx: &mut Context,
) -> AttemptOutcome {
    let deployment = admission.deployment.clone();
    let cx = super::request_context(call, &deployment);
    let start = Instant::now();
    let deadline = call.deadline.min(start + deployment.timeout);
    let trace_headers = ctx.trace.as_deref_mut().map(|t| {
        let parent = crate::telemetry::begin_attempt(t, &deployment);
        (parent, t.tracestate.clone())
    });
    // Each call's body: without `n` when calls stand for choices, with its own prompt as the
    // only message when there are several.
    let prompts = call.reshape.map_or(&[][..], |e| e.prompts());
    let mut remove = Vec::with_capacity(2);
    if plan.choices_per_call == 1 {
        remove.push("n".to_owned());
    }
    if !prompts.is_empty() {
        remove.push("messages".to_owned());
    }
    let base = call.parsed.with_changes(std::iter::empty(), &remove);
    let messages: Vec<Box<RawValue>> = prompts
        .iter()
        .filter_map(|p| {
            let m = serde_json::json!([{"role": "user", "content": p}]);
            RawValue::from_string(m.to_string()).ok()
        })
        .collect();
    let bodies: Vec<RequestBody<'_>> = if messages.is_empty() {
        vec![base.with_changes(std::iter::empty(), &[])]
    } else {
        messages
            .iter()
            .map(|m| base.with_changes(std::iter::once(("messages", &**m)), &[]))
            .collect()
    };
    let singles: Vec<Call<'_>> = bodies
        .iter()
        .map(|parsed| Call { parsed, ..*call })
        .collect();
    let calls = (0..plan.calls).map(|i| {
        let single = &singles[(i / plan.per_prompt).min(singles.len() - 1)];
        until_ready(single, &deployment, &cx, deadline, trace_headers.clone())
    });
    let ready = tokio::select! {
        biased;
        r = futures_util::future::try_join_all(calls) => r,
        _ = sink.hung_up() => {
            ctx.client_disconnected = true;
            ctx.upstream_time += start.elapsed();
            if let Some(t) = ctx.trace.as_deref_mut() {
                crate::telemetry::end_attempt(t, None);
            }
            return AttemptOutcome::Done;
        }
    };
    ctx.upstream_time += start.elapsed();
    let ready = match ready {
        Ok(r) => r,
        Err(e) => {
            let e = call.snapshot.secrets.redact_error(e);
            if let Some(t) = ctx.trace.as_deref_mut() {
                crate::telemetry::end_attempt(t, Some(&e));
            }
            attempt_failed(call, admission, &e);
            return AttemptOutcome::Failed(e);
        }
    };
    let failure = if call.stream {
        let choices_per_call = plan.choices_per_call;
        stream(
            call,
            &deployment,
            ready,
            choices_per_call,
            deadline,
            sink,
            ctx,
        )
        .await
    } else {
        whole(ready, sink, ctx).await
    };
    if let Some(t) = ctx.trace.as_deref_mut() {
        crate::telemetry::end_attempt(t, failure.as_ref());
    }
    match failure {
        Some(e) => attempt_failed(call, admission, &e),
        None if ctx.client_disconnected => {}
        None => {
            let tokens = ctx.usage.map(|u| u.total_tokens).unwrap_or(0);
            call.app
                .metrics
                .deployment_attempt(&deployment, call.requested, None);
            if admission.probe {
                crate::alerting::recovered(&deployment.config.model_name, deployment.id());
            }
            let latency = start.elapsed();
            let ttft = call.stream.then_some(latency);
            admission.succeeded(Instant::now(), latency, ttft, tokens);
        }
    }
    AttemptOutcome::Done
}

/// Answers with the merged `chat.completion`. `Some`: the answers could not be merged.
async fn whole(
    ready: Vec<Ready<'_>>,
    sink: &mut impl ResponseSink,
    ctx: &mut Context,
) -> Option<GatewayError> {
    let mut bodies = Vec::with_capacity(ready.len());
    let mut usage = None;
    for r in ready {
        if let Ready::Whole { body, usage: u } = r {
            bodies.push(body);
            add_usage(&mut usage, u);
        }
    }
    let body = match merge_whole(&bodies) {
        Ok(b) => b,
        Err(e) => {
            respond::error(sink, ctx, &e).await;
            return Some(e);
        }
    };
    ctx.usage = usage;
    ctx.price_usage();
    respond::json(sink, ctx, 200, body).await;
    None
}

/// Merges `chat.completion` bodies: the first one's fields, every body's choices in order
/// (indexed `0..`), the `usage` objects summed member by member.
fn merge_whole(bodies: &[Bytes]) -> GatewayResult<Bytes> {
    let bad = || {
        GatewayError::bad_gateway(
            "An upstream answer to a fanned-out call was not a chat completion.",
        )
    };
    let mut merged: Option<Value> = None;
    let mut choices = Vec::new();
    for body in bodies {
        let mut v: Value = serde_json::from_slice(body).map_err(|_| bad())?;
        let obj = v.as_object_mut().ok_or_else(bad)?;
        if let Some(Value::Array(cs)) = obj.remove("choices") {
            choices.extend(cs);
        }
        match &mut merged {
            None => merged = Some(v),
            Some(m) => {
                if let (Some(total), Some(u)) = (m.get_mut("usage"), v.get("usage")) {
                    sum_json(total, u);
                }
            }
        }
    }
    let mut merged = merged.ok_or_else(bad)?;
    for (i, c) in choices.iter_mut().enumerate() {
        if let Some(c) = c.as_object_mut() {
            c.insert("index".into(), i.into());
        }
    }
    merged["choices"] = Value::Array(choices);
    serde_json::to_vec(&merged)
        .map(Bytes::from)
        .map_err(|_| bad())
}

/// Adds `b`'s numbers into `a`, member by member (members only `b` has are copied).
fn sum_json(a: &mut Value, b: &Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, bv) in b {
                match a.get_mut(k) {
                    Some(av) => sum_json(av, bv),
                    None => {
                        a.insert(k.clone(), bv.clone());
                    }
                }
            }
        }
        (a @ Value::Number(_), Value::Number(b)) => {
            let sum = match (a.as_u64(), b.as_u64()) {
                (Some(x), Some(y)) => Value::from(x.saturating_add(y)),
                _ => Value::from(a.as_f64().unwrap_or(0.0) + b.as_f64().unwrap_or(0.0)),
            };
            *a = sum;
        }
        (a @ Value::Null, b) => *a = b.clone(),
        _ => {}
    }
}

/// `total += u`, field by field (`None` + `None` stays `None`).
fn add_usage(total: &mut Option<Usage>, u: Option<Usage>) {
    let Some(u) = u else { return };
    let Some(t) = total else {
        *total = Some(u);
        return;
    };
    t.prompt_tokens += u.prompt_tokens;
    t.completion_tokens += u.completion_tokens;
    t.total_tokens += u.total_tokens;
    if let Some(d) = u.prompt_tokens_details {
        let td = t.prompt_tokens_details.get_or_insert_with(Default::default);
        td.cached_tokens += d.cached_tokens;
        td.cache_creation_tokens += d.cache_creation_tokens;
        td.cache_creation_1h_tokens += d.cache_creation_1h_tokens;
    }
    if let Some(d) = u.completion_tokens_details {
        t.completion_tokens_details
            .get_or_insert_with(Default::default)
            .reasoning_tokens += d.reasoning_tokens;
    }
}

/// What one call's stream yields to the merge.
enum LaneEvent {
    /// Translated OpenAI SSE from call `.0`.
    Bytes(usize, BytesMut),
    /// Call `.0` ended cleanly, with its usage.
    End(usize, Option<Usage>),
    Failed(GatewayError),
}

/// One call's stream, from its first translated bytes on.
struct Lane<'a> {
    index: usize,
    response: Answer<'a>,
    translator: Box<dyn StreamTranslator>,
    first: Option<BytesMut>,
    ended: bool,
    over: bool,
}

impl Lane<'_> {
    async fn next(&mut self, deployment: &Deployment, deadline: Instant) -> Option<LaneEvent> {
        if let Some(first) = self.first.take() {
            return Some(LaneEvent::Bytes(self.index, first));
        }
        if self.over {
            return None;
        }
        if self.ended {
            self.over = true;
            return Some(LaneEvent::End(self.index, self.translator.usage()));
        }
        let mut out = BytesMut::new();
        loop {
            let gap = deployment
                .stream_timeout
                .min(deadline.saturating_duration_since(Instant::now()));
            let step = match tokio::time::timeout(gap, self.response.chunk()).await {
                Err(_) => Err(GatewayError::timeout(format!(
                    "The upstream stream went silent for more than {:.1}s.",
                    gap.as_secs_f64()
                ))),
                Ok(Err(e)) => Err(e),
                Ok(Ok(None)) => {
                    self.ended = true;
                    self.translator.finish(&mut out)
                }
                Ok(Ok(Some(chunk))) => self.translator.feed(&chunk, &mut out),
            };
            if let Err(e) = step {
                self.over = true;
                return Some(LaneEvent::Failed(e));
            }
            if !out.is_empty() {
                return Some(LaneEvent::Bytes(self.index, out));
            }
            if self.ended {
                self.over = true;
                return Some(LaneEvent::End(self.index, self.translator.usage()));
            }
        }
    }
}

/// Streams the calls' chunks as they arrive (see the module doc). Returns the failure that
/// cut the stream.
async fn stream(
    call: &Call<'_>,
    deployment: &Deployment,
    ready: Vec<Ready<'_>>,
    choices_per_call: usize,
    deadline: Instant,
    sink: &mut impl ResponseSink,
    ctx: &mut Context,
) -> Option<GatewayError> {
    let n = ready.len();
    let lanes = ready
        .into_iter()
        .enumerate()
        .filter_map(|(index, r)| match r {
            Ready::Stream {
                response,
                translator,
                first,
                ended,
            } => Some(Lane {
                index,
                response,
                translator,
                first: (!first.is_empty()).then_some(first),
                ended,
                over: false,
            }),
            Ready::Whole { .. } => None,
        });
    let mut merged = futures_util::stream::select_all(lanes.map(|lane| {
        Box::pin(futures_util::stream::unfold(
            lane,
            move |mut lane| async move {
                let event = lane.next(deployment, deadline).await?;
                Some((event, lane))
            },
        ))
    }));
    if !respond::sse_head(sink, ctx).await {
        return None;
    }
    let mut rewriter = Rewriter::new(n, choices_per_call);
    let mut usages: Vec<Option<Option<Usage>>> = vec![None; n];
    let mut failure = None;
    let mut out = BytesMut::with_capacity(4096);
    loop {
        let next = tokio::select! {
            biased;
            e = merged.next() => e,
            _ = sink.hung_up() => {
                ctx.client_disconnected = true;
                break;
            }
        };
        let last = match next {
            None => {
                if call.include_usage {
                    let mut total = None;
                    for u in usages.iter().flatten() {
                        add_usage(&mut total, *u);
                    }
                    if let Some(total) = total {
                        rewriter.usage_chunk(call, &total, &mut out);
                        if let Some(price) = &deployment.price {
                            crate::cost::stamp_stream_usage(&mut out, || price.cost(&total));
                        }
                    }
                }
                out.extend_from_slice(b"data: [DONE]\n\n");
                true
            }
            Some(LaneEvent::Bytes(i, bytes)) => {
                rewriter.feed(i, &bytes, &mut out);
                false
            }
            Some(LaneEvent::End(i, usage)) => {
                usages[i] = Some(usage);
                false
            }
            Some(LaneEvent::Failed(e)) => {
                let e = call.snapshot.secrets.redact_error(e);
                ctx.error = Some(e.message.clone());
                out.extend_from_slice(&e.sse_event());
                out.extend_from_slice(b"data: [DONE]\n\n");
                failure = Some(e);
                true
            }
        };
        if !out.is_empty() || last {
            if ctx.ttft.is_none() {
                ctx.ttft = Some(ctx.start.elapsed());
            }
            ctx.events_sent += memchr::memmem::find_iter(&out, b"data: ").count() as u64;
            if !respond::send_body(sink, ctx, out.split().freeze(), last).await {
                break;
            }
        }
        if last {
            break;
        }
    }
    let mut total = None;
    let mut complete = failure.is_none() && !ctx.client_disconnected;
    for u in &usages {
        match u {
            Some(Some(u)) => add_usage(&mut total, Some(*u)),
            _ => complete = false,
        }
    }
    ctx.usage = total;
    ctx.settle_stream_usage(complete, call.prompt_bytes.saturating_mul(n));
    failure
}

/// Rewrites each call's OpenAI SSE: choices get their index in the merged answer (call ×
/// choices per call + the call's own index); usage chunks, `usage` members and `[DONE]` are
/// held back (the merge sends its own at the end).
struct Rewriter {
    /// Per call: bytes of an event not yet complete.
    partial: Vec<Vec<u8>>,
    /// Choices each call answers with.
    choices_per_call: usize,
    /// The `model` the chunks name, for the final usage chunk.
    model: Option<String>,
    /// The `id` and `object` the chunks carry (`chatcmpl-…` / `chat.completion.chunk`, or a
    /// translated `/v1/completions` stream's `cmpl-…` / `text_completion`): the usage chunk
    /// names the stream as its chunks did.
    id: Option<String>,
    object: Option<String>,
}

impl Rewriter {
    fn new(calls: usize, choices_per_call: usize) -> Rewriter {
        Rewriter {
            partial: vec![Vec::new(); calls],
            choices_per_call,
            model: None,
            id: None,
            object: None,
        }
    }

    fn feed(&mut self, lane: usize, bytes: &[u8], out: &mut BytesMut) {
        let mut buf = std::mem::take(&mut self.partial[lane]);
        buf.extend_from_slice(bytes);
        let mut from = 0;
        while let Some(end) = memchr::memmem::find(&buf[from..], b"\n\n") {
            let event = &buf[from..from + end];
            from += end + 2;
            self.event(lane, event, out);
        }
        buf.drain(..from);
        self.partial[lane] = buf;
    }

    fn event(&mut self, lane: usize, event: &[u8], out: &mut BytesMut) {
        let data = event
            .strip_prefix(b"data: ")
            .or_else(|| event.strip_prefix(b"data:"));
        let Some(data) = data else {
            // A comment or another field: as it came.
            out.extend_from_slice(event);
            out.extend_from_slice(b"\n\n");
            return;
        };
        if data.trim_ascii() == b"[DONE]" {
            return;
        }
        let Ok(mut chunk) = serde_json::from_slice::<Value>(data) else {
            out.extend_from_slice(event);
            out.extend_from_slice(b"\n\n");
            return;
        };
        let Some(obj) = chunk.as_object_mut() else {
            return;
        };
        let named = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_owned);
        if self.model.is_none() {
            self.model = named("model");
        }
        if self.id.is_none() {
            self.id = named("id");
        }
        if self.object.is_none() {
            self.object = named("object");
        }
        match obj.get_mut("choices") {
            Some(Value::Array(choices)) if !choices.is_empty() => {
                for c in choices.iter_mut().filter_map(Value::as_object_mut) {
                    let own = c.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
                    let index = lane * self.choices_per_call + own.min(self.choices_per_call - 1);
                    c.insert("index".into(), index.into());
                }
            }
            // The call's own usage chunk.
            _ => return,
        }
        obj.remove("usage");
        out.extend_from_slice(b"data: ");
        if let Ok(json) = serde_json::to_vec(&chunk) {
            out.extend_from_slice(&json);
        }
        out.extend_from_slice(b"\n\n");
    }

    /// The one usage chunk (`choices: []`) with every call's usage summed.
    fn usage_chunk(&self, call: &Call<'_>, usage: &Usage, out: &mut BytesMut) {
        let chunk = serde_json::json!({
            "id": self.id.as_deref().unwrap_or(call.response_id),
            "object": self.object.as_deref().unwrap_or("chat.completion.chunk"),
            "created": call.created,
            "model": self.model.as_deref().unwrap_or(call.requested_name),
            "choices": [],
            "usage": usage,
        });
        out.extend_from_slice(b"data: ");
        if let Ok(json) = serde_json::to_vec(&chunk) {
            out.extend_from_slice(&json);
        }
        out.extend_from_slice(b"\n\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_answers_merge_with_indices_and_summed_usage() {
        let a = Bytes::from_static(br#"{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"A"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7,"prompt_tokens_details":{"cached_tokens":1}}}"#);
        let b = Bytes::from_static(br#"{"id":"y","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"B"},"finish_reason":"length"}],"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8,"prompt_tokens_details":{"cached_tokens":2}}}"#);
        let merged: Value = serde_json::from_slice(&merge_whole(&[a, b]).unwrap()).unwrap();
        assert_eq!(merged["id"], "x");
        assert_eq!(merged["choices"][0]["index"], 0);
        assert_eq!(merged["choices"][1]["index"], 1);
        assert_eq!(merged["choices"][1]["message"]["content"], "B");
        assert_eq!(merged["usage"]["total_tokens"], 15);
        assert_eq!(merged["usage"]["prompt_tokens_details"]["cached_tokens"], 3);
    }

    #[test]
    fn stream_events_take_their_lane_index_and_lose_usage_and_done() {
        let mut r = Rewriter::new(2, 1);
        let mut out = BytesMut::new();
        let events = b"data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\ndata: {\"id\":\"c\",\"choices\":[],\"usage\":{\"total_tokens\":3}}\n\ndata: [DONE]\n\n";
        // Split at every byte: events are rewritten whole.
        for b in events.chunks(1) {
            r.feed(1, b, &mut out);
        }
        let text = std::str::from_utf8(&out).unwrap();
        assert_eq!(text.matches("data: ").count(), 1, "{text}");
        let v: Value = serde_json::from_str(text.trim().strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(v["choices"][0]["index"], 1);
        assert!(v.get("usage").is_none());
        assert_eq!(r.model.as_deref(), Some("m"));
    }
}
