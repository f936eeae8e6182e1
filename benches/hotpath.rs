//! Criterion benchmarks of the gateway's per-request CPU work, without any I/O: what one chat
//! request costs between "body read" and "bytes handed to the connector", and what each upstream
//! response byte or stream event costs on its way back.
//!
//! Groups:
//! - `request/parse`: `RequestBody::parse` (top-level fields only, values stay raw slices).
//! - `request/passthrough`: parse + `OpenAiCompat::build_request` (model rewrite, path, headers),
//!   the whole request-side work of the pass-through path; plus the streaming variant, which also
//!   injects `stream_options`.
//! - `response/usage_scan`: `parse_response_owned` on a non-streaming completion, as the exchange
//!   calls it (the body is handed on; usage is found by a scan from the end).
//! - `stream/passthrough`: the pass-through `StreamTranslator` on a realistic OpenAI SSE stream,
//!   fed as it arrives from the network (one read per event) and in 16 KiB reads; throughput is
//!   reported per event.
//! - `stream/chunk_writer`: `ChunkWriter::text`, the cost of one emitted text delta for
//!   translating providers.
//! - `codec/sse_decoder`: raw SSE decoding throughput (bytes/s).
//! - `metrics/record_request`: recording one finished request's metrics, through the
//!   deployment's pre-resolved handles (`answered`) and by label lookups (`by_alias`).
//! - `anthropic/*` (the `translated providers` section): the same request, response and stream
//!   measurements for the Anthropic translator; other translating providers go there too.
//!
//! Run: `cargo bench --bench hotpath` (add a filter, e.g. `-- stream/`, to run one group).

use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use switchboard::config::{DeploymentConfig, LitellmParams, ModelInfo};
use switchboard::openai::{ChunkWriter, RequestBody};
use switchboard::providers::{build_provider, BuildContext, Operation, Provider, RequestContext};
use switchboard::upstream::UpstreamClient;

// ---------------------------------------------------------------------------------------------
// Fixtures

/// A typical small chat request (system + user message, a few sampling parameters).
fn small_chat_body() -> Vec<u8> {
    br#"{"model":"gpt-4o","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Write a haiku about proxies."}],"temperature":0.7,"max_tokens":256,"user":"bench"}"#.to_vec()
}

/// A chat request of about `target` bytes: a conversation of alternating turns whose contents
/// carry escapes and non-ASCII text, as real prompts do.
fn chat_body_of_size(target: usize) -> Vec<u8> {
    let turn = "Here is some context: the quick brown fox \\\"jumps\\\" over the lazy dog; \
                naïve café résumé — 1234567890.\\n";
    let mut body = String::with_capacity(target + 1024);
    body.push_str(r#"{"model":"gpt-4o","messages":["#);
    let mut i = 0;
    while body.len() < target {
        if i > 0 {
            body.push(',');
        }
        let role = if i % 2 == 0 { "user" } else { "assistant" };
        body.push_str(&format!(r#"{{"role":"{role}","content":""#));
        for _ in 0..16 {
            body.push_str(turn);
        }
        body.push_str("\"}");
        i += 1;
    }
    body.push_str(r#"],"temperature":0.2,"tools":[{"type":"function","function":{"name":"lookup","parameters":{"type":"object","properties":{"q":{"type":"string"}}}}}]}"#);
    body.into_bytes()
}

fn completion_body() -> Vec<u8> {
    br#"{"id":"chatcmpl-abc123","object":"chat.completion","created":1732230000,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"message":{"role":"assistant","content":"Packets pass like wind,\nthe proxy holds the doorway,\nbytes flow, none are lost.","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":27,"completion_tokens":21,"total_tokens":48,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"system_fingerprint":"fp_abc"}"#.to_vec()
}

/// An OpenAI chat stream as the upstream sends it: role chunk, `n` content chunks of a few
/// tokens each, the finish chunk, the usage chunk (asked for by the gateway) and `[DONE]`.
/// Returns the events separately (each one network read) so per-event costs can be measured.
fn openai_stream_events(n: usize) -> Vec<Vec<u8>> {
    let head = r#"{"id":"chatcmpl-abc123","object":"chat.completion.chunk","created":1732230000,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_abc","#;
    let mut events = Vec::with_capacity(n + 4);
    events.push(format!(
        "data: {head}\"choices\":[{{\"index\":0,\"delta\":{{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null}},\"logprobs\":null,\"finish_reason\":null}}],\"usage\":null}}\n\n"
    ));
    let words = [
        " the",
        " proxy",
        " holds",
        " doorway,",
        " bytes",
        " flow\\n",
        " café",
    ];
    for i in 0..n {
        events.push(format!(
            "data: {head}\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{}\"}},\"logprobs\":null,\"finish_reason\":null}}],\"usage\":null}}\n\n",
            words[i % words.len()]
        ));
    }
    events.push(format!(
        "data: {head}\"choices\":[{{\"index\":0,\"delta\":{{}},\"logprobs\":null,\"finish_reason\":\"stop\"}}],\"usage\":null}}\n\n"
    ));
    events.push(format!(
        "data: {head}\"choices\":[],\"usage\":{{\"prompt_tokens\":27,\"completion_tokens\":{n},\"total_tokens\":{}}}}}\n\n",
        27 + n
    ));
    events.push("data: [DONE]\n\n".to_string());
    events.into_iter().map(String::into_bytes).collect()
}

/// A deployment of `openai/gpt-4o-2024-08-06` on a local base URL, as the config loader
/// would produce it.
fn openai_deployment() -> DeploymentConfig {
    DeploymentConfig {
        index: 0,
        model_name: "gpt-4o".into(),
        id: "bench-0".into(),
        derived_id: false,
        provider: "openai".into(),
        model: "gpt-4o-2024-08-06".into(),
        params: LitellmParams {
            api_base: Some("http://127.0.0.1:9/v1".into()),
            api_key: Some("sk-bench-0123456789abcdef".into()),
            ..LitellmParams::default()
        },
        model_info: ModelInfo::default(),
    }
}

fn context(stream: bool) -> RequestContext<'static> {
    RequestContext {
        op: Operation::Chat,
        model: "gpt-4o-2024-08-06",
        stream,
        include_usage: false,
        response_id: "chatcmpl-bench0000000000000000",
        created: 1_732_230_000,
        drop_params: false,
        embeddings_base64: false,
    }
}

/// Resolves a future that never waits (pass-through `build_request` does no I/O). Panics if it
/// would block, which would mean the hot path started doing I/O.
fn ready<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("build_request awaited; the benchmark expects no I/O"),
    }
}

struct Setup {
    provider: Arc<dyn Provider>,
    client: Arc<UpstreamClient>,
}

fn setup() -> Setup {
    let client = Arc::new(UpstreamClient::new(8));
    let provider = build_provider(
        &openai_deployment(),
        &BuildContext {
            client: client.clone(),
        },
    )
    .expect("openai deployment builds");
    Setup { provider, client }
}

// ---------------------------------------------------------------------------------------------
// Request side

fn request(c: &mut Criterion) {
    let s = setup();
    let bodies = [
        ("small", small_chat_body()),
        ("100KB", chat_body_of_size(100 * 1024)),
        ("2MB", chat_body_of_size(2 * 1024 * 1024)),
    ];
    for (_, body) in &bodies {
        // The fixtures must be what the gateway accepts.
        let parsed = RequestBody::parse(body).expect("fixture parses");
        assert!(parsed.has("messages"));
    }

    let mut g = c.benchmark_group("request/parse");
    for (name, body) in &bodies {
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(name), body, |b, body| {
            b.iter(|| RequestBody::parse(black_box(body)).unwrap())
        });
    }
    g.finish();

    let mut g = c.benchmark_group("request/passthrough");
    for stream in [false, true] {
        let cx = context(stream);
        for (name, body) in &bodies {
            g.throughput(Throughput::Bytes(body.len() as u64));
            let id = format!("{}{name}", if stream { "stream/" } else { "" });
            g.bench_with_input(BenchmarkId::from_parameter(id), body, |b, body| {
                b.iter(|| {
                    // Exactly what exchange::handle does before sending.
                    let parsed = RequestBody::parse(black_box(body)).unwrap();
                    let _model = parsed.required_str("model").unwrap();
                    let _stream = parsed.bool_field("stream").unwrap();
                    ready(s.provider.build_request(&parsed, &cx, &s.client)).unwrap()
                })
            });
        }
    }
    g.finish();

    // The rewrite alone, on an already parsed body.
    let mut g = c.benchmark_group("request/write_with");
    for (name, body) in &bodies {
        let parsed = RequestBody::parse(body).unwrap();
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                let mut out = Vec::with_capacity(body.len() + 64);
                parsed.write_with(&[("model", "\"gpt-4o-2024-08-06\"")], &[], &mut out);
                out
            })
        });
    }
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// Response side

fn response(c: &mut Criterion) {
    let s = setup();
    let cx = context(false);
    let body = bytes::Bytes::from(completion_body());
    let mut g = c.benchmark_group("response/usage_scan");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("completion", |b| {
        b.iter(|| {
            s.provider
                .parse_response_owned(black_box(body.clone()), &cx)
                .unwrap()
        })
    });
    g.finish();
}

fn stream(c: &mut Criterion) {
    let s = setup();
    let events = openai_stream_events(200);
    let whole: Vec<u8> = events.concat();
    let mut g = c.benchmark_group("stream/passthrough");
    g.throughput(Throughput::Elements(events.len() as u64));
    for include_usage in [false, true] {
        let cx = RequestContext {
            include_usage,
            ..context(true)
        };
        let suffix = if include_usage { "+usage" } else { "" };
        g.bench_function(format!("per_read_event{suffix}"), |b| {
            b.iter(|| {
                let mut t = s.provider.stream_translator(&cx);
                let mut out = BytesMut::with_capacity(4096);
                for ev in &events {
                    t.feed(black_box(ev), &mut out).unwrap();
                    // The exchange hands each batch to the client and starts afresh.
                    black_box(out.split());
                }
                t.finish(&mut out).unwrap();
                t.usage()
            })
        });
        g.bench_function(format!("16KiB_reads{suffix}"), |b| {
            b.iter(|| {
                let mut t = s.provider.stream_translator(&cx);
                let mut out = BytesMut::with_capacity(16 * 1024);
                for piece in whole.chunks(16 * 1024) {
                    t.feed(black_box(piece), &mut out).unwrap();
                    black_box(out.split());
                }
                t.finish(&mut out).unwrap();
                t.usage()
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("stream/chunk_writer");
    let deltas = [
        " the",
        " proxy",
        " holds",
        " doorway,",
        " bytes",
        " flow\n",
        " café",
    ];
    g.throughput(Throughput::Elements(200));
    g.bench_function("text_delta", |b| {
        b.iter(|| {
            let mut w = ChunkWriter::new(
                "chatcmpl-bench0000000000000000",
                1_732_230_000,
                "claude-3-5-sonnet",
                false,
            );
            let mut out = BytesMut::with_capacity(4096);
            for i in 0..200 {
                w.text(black_box(deltas[i % deltas.len()]), &mut out);
                black_box(out.split());
            }
        })
    });
    g.finish();
}

fn sse_decoder(c: &mut Criterion) {
    use switchboard::codec::sse::{SseDecoder, SseError};
    let whole: Vec<u8> = openai_stream_events(2000).concat();
    let mut g = c.benchmark_group("codec/sse_decoder");
    g.throughput(Throughput::Bytes(whole.len() as u64));
    for piece in [64usize, 1500, 16 * 1024] {
        g.bench_with_input(BenchmarkId::new("read_size", piece), &piece, |b, &piece| {
            b.iter(|| {
                let mut d = SseDecoder::new();
                let mut n = 0usize;
                for p in whole.chunks(piece) {
                    d.feed(p, &mut |ev| {
                        n += ev.data.len();
                        Ok::<(), SseError>(())
                    })
                    .unwrap();
                }
                n
            })
        });
    }
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// translated providers
//
// Translating providers, measured like the pass-through path so the figures compare:
//   - request: parse + `build_request` (for them: `ChatRequest::from_body` + serializing the native
//     body) on the small / 100KB / 2MB bodies;
//   - response: `parse_response` on a native completion (translated into OpenAI JSON);
//   - stream: `stream_translator().feed` on the native stream, one read per event, with
//     `Throughput::Elements(events)` so the per-event cost compares with stream/passthrough.
// To add one (gemini, bedrock, cohere, ...): build it with `provider_for(prefix, model)`, write a
// native response and stream fixture, and copy the three blocks of `anthropic` below.

fn provider_for(prefix: &str, model: &str) -> Arc<dyn Provider> {
    let mut dep = openai_deployment();
    dep.provider = prefix.into();
    dep.model = model.into();
    dep.params.api_base = Some("http://127.0.0.1:9".into());
    let client = Arc::new(UpstreamClient::new(8));
    build_provider(&dep, &BuildContext { client }).expect("deployment builds")
}

/// Anthropic's Messages stream: message_start, a text block of `n` deltas, message_delta with
/// the stop reason and usage, message_stop. One entry per event (one network read each).
fn anthropic_stream_events(n: usize) -> Vec<Vec<u8>> {
    let mut events = vec![
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-5\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":27,\"output_tokens\":1}}}\n\n".to_string(),
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n".to_string(),
    ];
    let words = [
        " the",
        " proxy",
        " holds",
        " doorway,",
        " bytes",
        " flow\\n",
        " café",
    ];
    for i in 0..n {
        events.push(format!(
            "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"{}\"}}}}\n\n",
            words[i % words.len()]
        ));
    }
    events.push(
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n"
            .to_string(),
    );
    events.push(format!("event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"end_turn\",\"stop_sequence\":null}},\"usage\":{{\"output_tokens\":{n}}}}}\n\n"));
    events.push("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n".to_string());
    events.into_iter().map(String::into_bytes).collect()
}

const ANTHROPIC_RESPONSE: &str = r#"{"id":"msg_01","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"Packets pass like wind,\nthe proxy holds the doorway,\nbytes flow, none are lost."}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":27,"output_tokens":21,"cache_creation_input_tokens":0,"cache_read_input_tokens":0}}"#;

fn translated_providers(c: &mut Criterion) {
    let client = UpstreamClient::new(8);
    let anthropic = provider_for("anthropic", "claude-sonnet-4-5");
    let bodies = [
        ("small", small_chat_body()),
        ("100KB", chat_body_of_size(100 * 1024)),
        ("2MB", chat_body_of_size(2 * 1024 * 1024)),
    ];
    let cx = context(false);

    let mut g = c.benchmark_group("anthropic/request");
    for (name, body) in &bodies {
        let parsed = RequestBody::parse(body).unwrap();
        ready(anthropic.build_request(&parsed, &cx, &client)).expect("fixture translates");
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(name), body, |b, body| {
            b.iter(|| {
                let parsed = RequestBody::parse(black_box(body)).unwrap();
                ready(anthropic.build_request(&parsed, &cx, &client)).unwrap()
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("anthropic/response");
    g.throughput(Throughput::Bytes(ANTHROPIC_RESPONSE.len() as u64));
    anthropic
        .parse_response(ANTHROPIC_RESPONSE.as_bytes(), &cx)
        .expect("fixture translates");
    g.bench_function("completion", |b| {
        b.iter(|| {
            anthropic
                .parse_response(black_box(ANTHROPIC_RESPONSE.as_bytes()), &cx)
                .unwrap()
        })
    });
    g.finish();

    let events = anthropic_stream_events(200);
    let mut g = c.benchmark_group("anthropic/stream");
    g.throughput(Throughput::Elements(events.len() as u64));
    let scx = context(true);
    g.bench_function("per_read_event", |b| {
        b.iter(|| {
            let mut t = anthropic.stream_translator(&scx);
            let mut out = BytesMut::with_capacity(4096);
            for ev in &events {
                t.feed(black_box(ev), &mut out).unwrap();
                black_box(out.split());
            }
            t.finish(&mut out).unwrap();
            t.usage()
        })
    });
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// Metrics

/// Recording one finished request's metrics (`Metrics::observe` plus the attempt's
/// `deployment_attempt`), as the logging phase and the exchange do. `answered` is the common
/// case, through the deployment's pre-resolved handles; `by_alias` is a request that named an
/// alias, which looks every series up by its labels (what every request did before handles).
fn metrics(c: &mut Criterion) {
    use switchboard::context::Context;
    use switchboard::metrics::Metrics;
    use switchboard::router::{Snapshot, StateRegistry};
    let config = switchboard::config::litellm::parse(
        "model_list:\n  - {model_name: gpt-4o, litellm_params: {model: openai/gpt-4o-2024-08-06, api_base: \"http://127.0.0.1:9/v1\", api_key: k}, model_info: {id: d1}}\nrouter_settings: {model_group_alias: {alias: gpt-4o}}\n",
    )
    .expect("bench config");
    let client = Arc::new(UpstreamClient::new(8));
    let snapshot = Snapshot::build(config, 1, &client, &StateRegistry::default()).unwrap();
    let deployment = snapshot.group("gpt-4o").unwrap().deployments[0].clone();
    let metrics = Metrics::new();
    let mut g = c.benchmark_group("metrics/record_request");
    for (name, model) in [("answered", "gpt-4o"), ("by_alias", "alias")] {
        let mut log = Context::default();
        log.route = "chat";
        log.model = Some(model.to_string());
        log.deployment = Some(deployment.clone());
        log.status = 200;
        log.attempts = 1;
        log.stream = true;
        log.ttft = Some(std::time::Duration::from_millis(80));
        log.upstream_time = std::time::Duration::from_millis(300);
        log.usage = Some(switchboard::openai::Usage::new(27, 21));
        let requested = snapshot.metric_label(model).unwrap();
        g.bench_function(name, |b| {
            b.iter(|| {
                metrics.deployment_attempt(&deployment, black_box(requested), None);
                metrics.observe(black_box(&log), &snapshot);
            })
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    metrics,
    request,
    response,
    stream,
    sse_decoder,
    translated_providers
);
criterion_main!(benches);
