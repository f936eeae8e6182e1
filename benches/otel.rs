//! CPU cost of OpenTelemetry per request (issue 15), telemetry on with every trace sampled:
//! - `otel/request_path`: what a request itself pays: starting the trace from the client's
//!   `traceparent`, recording the request parameters from the parsed body, one upstream
//!   attempt (its `traceparent` header built), and the settle stage moving the finished record
//!   into the export queue (`try_send`; the queue is drained by the export thread).
//! - `otel/build_spans`: what the export thread pays per request to write the record's SERVER
//!   and CLIENT spans, with their GenAI attributes, as OTLP protobuf (the HTTP export, per
//!   batch, is not counted here).
//! - `otel/record_metrics`: what the export thread pays per request to add its measurements to
//!   the GenAI histograms (the export, once per interval, is not counted here).
//!
//! Run: `cargo bench --bench otel`. Compare with the ~50 µs of CPU a proxied request costs
//! (benches/README.md, `load`).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use std::sync::Arc;
use switchboard::context::Context;
use switchboard::openai::RequestBody;
use switchboard::pipeline::Settle;
use switchboard::router::{Snapshot, StateRegistry};
use switchboard::telemetry::{self, Finished, TelemetrySettle};
use switchboard::upstream::UpstreamClient;

const CONFIG: &str = "model_list:
  - model_name: gpt-4o
    litellm_params: {model: openai/gpt-4o, api_base: \"http://127.0.0.1:9/v1\", api_key: k}
litellm_settings:
  callbacks: [otel]
";

const BODY: &[u8] = br#"{"model":"gpt-4o","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Write a haiku about proxies."}],"temperature":0.7,"max_tokens":256,"user":"bench"}"#;

fn bench(c: &mut Criterion) {
    // A collector that is not there: exports fail fast and are counted, the queue keeps moving.
    std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9");
    std::env::set_var("OTEL_BSP_MAX_QUEUE_SIZE", "65536");
    std::env::set_var("OTEL_METRICS_EXPORTER", "none");
    let client = Arc::new(UpstreamClient::new(1));
    let registry = StateRegistry::default();
    let config = switchboard::config::litellm::parse(CONFIG).unwrap();
    let telemetry = telemetry::for_config(&config.telemetry).expect("otel configured");
    let snapshot = Snapshot::build(config, 1, &client, &registry).unwrap();
    let deployment = snapshot.deployments().next().unwrap().clone();
    let settle = TelemetrySettle(telemetry.clone());
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "traceparent",
        http::HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    );
    let body = bytes::Bytes::from_static(BODY);
    let usage = switchboard::openai::Usage {
        prompt_tokens: 25,
        completion_tokens: 17,
        total_tokens: 42,
        ..Default::default()
    };

    let mut g = c.benchmark_group("otel");
    g.bench_function("request_path", |b| {
        b.iter(|| {
            let mut ctx = Context::default();
            ctx.route = "chat";
            ctx.model = Some("gpt-4o".into());
            let mut trace = telemetry.start_trace(black_box(&headers), &ctx);
            let parsed = RequestBody::parse(BODY).unwrap();
            telemetry::record_request(&mut trace, &parsed, &body, false);
            let parent = telemetry::begin_attempt(&mut trace, &deployment);
            black_box(parent);
            telemetry::end_attempt(&mut trace, None);
            ctx.trace = Some(trace);
            ctx.deployment = Some(deployment.clone());
            ctx.status = 200;
            ctx.usage = Some(usage);
            ctx.cost = Some(0.0001);
            settle.settle(&ctx);
        })
    });

    let mut ctx = Context::default();
    ctx.route = "chat";
    let mut trace = telemetry.start_trace(&headers, &ctx);
    let parsed = RequestBody::parse(BODY).unwrap();
    telemetry::record_request(&mut trace, &parsed, &body, false);
    telemetry::begin_attempt(&mut trace, &deployment);
    telemetry::end_attempt(&mut trace, None);
    ctx.trace = Some(trace);
    let finished = Finished {
        trace: (**ctx.trace.as_ref().unwrap()).clone(),
        route: "chat",
        model: Some("gpt-4o".into()),
        deployment: Some(deployment.clone()),
        status: 200,
        stream: false,
        usage: Some(usage),
        cost: Some(0.0001),
        ttft: None,
        duration: std::time::Duration::from_millis(300),
        error: None,
        key: None,
        end_user: Some("bench".into()),
        fallback: None,
        client_disconnected: false,
        answer: None,
    };
    let mut out = telemetry::otlp::Batch::default();
    g.bench_function("build_spans", |b| {
        b.iter(|| {
            out.clear();
            telemetry::spans::build(black_box(&finished), &telemetry.config, &mut out);
            black_box(&out);
        })
    });
    let mut metrics = telemetry::metrics::Metrics::new(Default::default(), String::new());
    g.bench_function("record_metrics", |b| {
        b.iter(|| metrics.record(black_box(&finished)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
