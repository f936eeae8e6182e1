//! OpenTelemetry export end to end (issue 15): the real gateway exporting to an OTLP/HTTP
//! receiver in the test (a mock server whose recorded bodies are decoded as the real protobuf
//! `ExportTraceServiceRequest` / `ExportMetricsServiceRequest`), against mock OpenAI upstreams.

mod support;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::json;
use std::time::{Duration, Instant};
use support::*;

fn chat(model: &str) -> serde_json::Value {
    json!({"model": model, "temperature": 0.5, "max_tokens": 64,
           "messages": [{"role": "user", "content": "secret prompt text"}]})
}

/// A `model_list` entry for an OpenAI-compatible upstream at `base`.
fn upstream(group: &str, id: &str, base: &str) -> String {
    format!(
        "  - model_name: {group}\n    litellm_params: {{model: openai/m-{id}, api_base: \"{base}/v1\", api_key: k}}\n    model_info: {{id: {id}}}\n"
    )
}

fn otel_config(entries: &[String], extra: &str) -> String {
    format!(
        "model_list:\n{}litellm_settings:\n  callbacks: [\"otel\"]\n{extra}",
        entries.concat()
    )
}

/// A collector that accepts every export.
async fn collector() -> MockUpstream {
    MockUpstream::start(|_| Reply::bytes(200, "application/x-protobuf", Vec::new())).await
}

fn env_for(collector: &MockUpstream) -> Vec<(String, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), collector.base()),
        ("OTEL_BSP_SCHEDULE_DELAY".into(), "20".into()),
        ("OTEL_METRIC_EXPORT_INTERVAL".into(), "200".into()),
        ("OTEL_SERVICE_NAME".into(), "sb-test".into()),
    ]
}

fn start(yaml: &str, env: &[(String, String)]) -> Gateway {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Gateway::start_with_env(yaml, &env)
}

/// Every span the collector received so far.
fn received(collector: &MockUpstream) -> Vec<Span> {
    collector
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/v1/traces"))
        .flat_map(|r| {
            let req = ExportTraceServiceRequest::decode(&r.body[..]).expect("OTLP trace protobuf");
            req.resource_spans
                .into_iter()
                .flat_map(|rs| rs.scope_spans)
                .flat_map(|ss| ss.spans)
        })
        .collect()
}

async fn wait_spans(collector: &MockUpstream, n: usize) -> Vec<Span> {
    assert!(
        wait_until(|| received(collector).len() >= n, Duration::from_secs(10)).await,
        "collector got {} spans, wanted {n}",
        received(collector).len()
    );
    received(collector)
}

fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a AnyValue> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn str_attr<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    match attr(span, key) {
        Some(AnyValue::StringValue(s)) => Some(s),
        _ => None,
    }
}

fn int_attr(span: &Span, key: &str) -> Option<i64> {
    match attr(span, key) {
        Some(AnyValue::IntValue(i)) => Some(*i),
        _ => None,
    }
}

/// An upstream whose every answer is a 500 `boom`.
async fn failing_upstream() -> MockUpstream {
    MockUpstream::start(|_| {
        Reply::json(
            500,
            json!({"error": {"message": "boom", "type": "server_error"}}),
        )
    })
    .await
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test]
async fn a_call_is_one_server_span_and_one_client_span_continuing_the_clients_trace() {
    let col = collector().await;
    let up = MockUpstream::start(|_| Reply::json(200, openai::completion("hello"))).await;
    let gw = start(
        &otel_config(&[upstream("gpt-4o", "a", &up.base())], ""),
        &env_for(&col),
    );
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let r = gw
        .post_with(
            "/v1/chat/completions",
            &[
                ("traceparent", &format!("00-{trace_id}-{client_span}-01")),
                ("tracestate", "vendor=1"),
                ("content-type", "application/json"),
            ],
            chat("gpt-4o").to_string().as_bytes(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let spans = wait_spans(&col, 2).await;
    assert_eq!(spans.len(), 2, "{spans:?}");
    let server = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .unwrap();
    let client = spans
        .iter()
        .find(|s| s.kind == SpanKind::Client as i32)
        .unwrap();
    // The client's trace continues: same trace id, the SERVER span under the client's span.
    assert_eq!(hex(&server.trace_id), trace_id);
    assert_eq!(hex(&server.parent_span_id), client_span);
    assert_eq!(server.trace_state, "vendor=1");
    assert_eq!(server.name, "chat gpt-4o");
    assert_eq!(str_attr(server, "gen_ai.operation.name"), Some("chat"));
    assert_eq!(str_attr(server, "gen_ai.request.model"), Some("gpt-4o"));
    assert_eq!(str_attr(server, "gen_ai.provider.name"), Some("openai"));
    assert_eq!(str_attr(server, "gen_ai.response.model"), Some("m-a"));
    assert_eq!(int_attr(server, "gen_ai.usage.input_tokens"), Some(11));
    assert_eq!(int_attr(server, "gen_ai.usage.output_tokens"), Some(7));
    assert_eq!(int_attr(server, "gen_ai.request.max_tokens"), Some(64));
    assert_eq!(
        attr(server, "gen_ai.request.temperature"),
        Some(&AnyValue::DoubleValue(0.5))
    );
    assert_eq!(int_attr(server, "http.response.status_code"), Some(200));
    assert!(str_attr(server, "gen_ai.response.id").is_some_and(|id| id.starts_with("chatcmpl-")));
    // Content is off by default: the prompt is nowhere in the export.
    assert!(attr(server, "gen_ai.input.messages").is_none());
    assert!(!col
        .requests()
        .iter()
        .any(|r| String::from_utf8_lossy(&r.body).contains("secret prompt text")));
    // The attempt: a CLIENT span under the SERVER span, named for the upstream model.
    assert_eq!(client.trace_id, server.trace_id);
    assert_eq!(client.parent_span_id, server.span_id);
    assert_eq!(client.name, "chat m-a");
    assert_eq!(str_attr(client, "server.address"), Some("127.0.0.1"));
    assert_eq!(int_attr(client, "server.port"), Some(up.port as i64));
    assert!(attr(client, "error.type").is_none());
    assert!(client.start_time_unix_nano >= server.start_time_unix_nano);
    assert!(client.end_time_unix_nano <= server.end_time_unix_nano);
    // The upstream saw a traceparent naming the CLIENT span, and the client's tracestate.
    let seen = up.last();
    assert_eq!(
        seen.header("traceparent"),
        Some(format!("00-{trace_id}-{}-01", hex(&client.span_id)).as_str())
    );
    assert_eq!(seen.header("tracestate"), Some("vendor=1"));
    // The resource names the service.
    let req = col
        .requests()
        .into_iter()
        .find(|r| r.path == "/v1/traces")
        .unwrap();
    let decoded = ExportTraceServiceRequest::decode(&req.body[..]).unwrap();
    let resource = decoded.resource_spans[0].resource.as_ref().unwrap();
    assert!(resource.attributes.iter().any(|kv| kv.key == "service.name"
        && kv.value.as_ref().and_then(|v| v.value.as_ref())
            == Some(&AnyValue::StringValue("sb-test".into()))));

    // GenAI metrics arrive over OTLP too.
    let metric_names = || -> Vec<String> {
        col.requests()
            .iter()
            .filter(|r| r.path == "/v1/metrics")
            .flat_map(|r| {
                ExportMetricsServiceRequest::decode(&r.body[..])
                    .unwrap()
                    .resource_metrics
                    .into_iter()
                    .flat_map(|rm| rm.scope_metrics)
                    .flat_map(|sm| sm.metrics)
                    .map(|m| m.name)
            })
            .collect()
    };
    assert!(
        wait_until(
            || {
                let names = metric_names();
                [
                    "gen_ai.client.token.usage",
                    "gen_ai.server.request.duration",
                    "gen_ai.client.operation.duration",
                ]
                .iter()
                .all(|n| names.iter().any(|m| m == n))
            },
            Duration::from_secs(10)
        )
        .await,
        "metrics seen: {:?}",
        metric_names()
    );
}

/// Metrics leave from their own thread: a metrics endpoint that accepts and never answers holds
/// up neither requests nor spans, which keep arriving at the traces endpoint well within the
/// export timeout the hung metrics send is waiting out.
#[tokio::test]
async fn a_hung_metrics_endpoint_does_not_hold_up_spans() {
    let col = collector().await;
    let hung = MockUpstream::start(|_| {
        Reply::bytes(200, "application/x-protobuf", Vec::new()).delayed(Duration::from_secs(600))
    })
    .await;
    let up = MockUpstream::start(|_| Reply::json(200, openai::completion("hello"))).await;
    let mut env = env_for(&col);
    env.push((
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT".into(),
        format!("{}/v1/metrics", hung.base()),
    ));
    env.push(("OTEL_EXPORTER_OTLP_TIMEOUT".into(), "30000".into()));
    let gw = start(
        &otel_config(&[upstream("gpt-4o", "a", &up.base())], ""),
        &env,
    );
    assert_eq!(
        gw.post("/v1/chat/completions", &chat("gpt-4o"))
            .await
            .status,
        200
    );
    // The metrics export is under way (and will hang for the 30 s timeout)...
    assert!(wait_until(|| hung.count() >= 1, Duration::from_secs(10)).await);
    wait_spans(&col, 2).await;
    // ...while later calls' spans still arrive promptly.
    for n in [4, 6] {
        let t = Instant::now();
        assert_eq!(
            gw.post("/v1/chat/completions", &chat("gpt-4o"))
                .await
                .status,
            200
        );
        assert!(
            wait_until(|| received(&col).len() >= n, Duration::from_secs(5)).await,
            "spans held up behind the hung metrics export: {} after {:?}",
            received(&col).len(),
            t.elapsed()
        );
    }
}

/// The newest metrics export's histogram data points, by metric name.
fn latest_points(
    col: &MockUpstream,
) -> std::collections::HashMap<
    String,
    Vec<opentelemetry_proto::tonic::metrics::v1::HistogramDataPoint>,
> {
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
    let Some(last) = col
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.path == "/v1/metrics")
    else {
        return Default::default();
    };
    ExportMetricsServiceRequest::decode(&last.body[..])
        .expect("OTLP metrics protobuf")
        .resource_metrics
        .into_iter()
        .flat_map(|rm| rm.scope_metrics)
        .flat_map(|sm| sm.metrics)
        .filter_map(|m| match m.data {
            Some(Data::Histogram(h)) => {
                assert_eq!(h.aggregation_temporality, 2, "{}: cumulative", m.name);
                Some((m.name, h.data_points))
            }
            _ => None,
        })
        .collect()
}

fn point_attr<'a>(
    p: &'a opentelemetry_proto::tonic::metrics::v1::HistogramDataPoint,
    key: &str,
) -> Option<&'a str> {
    p.attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            AnyValue::StringValue(s) => Some(s.as_str()),
            _ => None,
        }
    })
}

/// The GenAI histograms carry what the requests measured: counts, sums and buckets per
/// attribute set (model, provider, token type, error type), cumulative across exports.
#[tokio::test]
async fn metrics_count_tokens_and_durations_per_attribute_set() {
    let col = collector().await;
    let up = MockUpstream::start(|_| Reply::json(200, openai::completion("hello"))).await;
    let gw = start(
        &otel_config(&[upstream("gpt-4o", "a", &up.base())], ""),
        &env_for(&col),
    );
    let call = |model: &'static str| {
        let gw = &gw;
        async move { gw.post("/v1/chat/completions", &chat(model)).await.status }
    };
    assert_eq!(call("gpt-4o").await, 200);
    assert_eq!(call("gpt-4o").await, 200);
    // An export happens between the calls: the next one still counts all of them.
    assert!(
        wait_until(
            || latest_points(&col)
                .get("gen_ai.client.token.usage")
                .is_some_and(|p| p.iter().any(|p| p.count == 2)),
            Duration::from_secs(10)
        )
        .await
    );
    assert_eq!(call("gpt-4o").await, 200);
    assert_eq!(call("no-such-model").await, 404);
    let done = |points: &std::collections::HashMap<
        String,
        Vec<opentelemetry_proto::tonic::metrics::v1::HistogramDataPoint>,
    >| {
        points
            .get("gen_ai.server.request.duration")
            .is_some_and(|p| p.len() == 2)
            && points
                .get("gen_ai.client.token.usage")
                .is_some_and(|p| p.iter().all(|p| p.count == 3))
    };
    assert!(
        wait_until(|| done(&latest_points(&col)), Duration::from_secs(10)).await,
        "{:?}",
        latest_points(&col)
    );
    let points = latest_points(&col);
    let tokens = &points["gen_ai.client.token.usage"];
    assert_eq!(tokens.len(), 2, "{tokens:?}");
    for (kind, per_call) in [("input", 11.0), ("output", 7.0)] {
        let p = tokens
            .iter()
            .find(|p| point_attr(p, "gen_ai.token.type") == Some(kind))
            .unwrap();
        assert_eq!((p.count, p.sum), (3, Some(3.0 * per_call)), "{kind}");
        assert_eq!((p.min, p.max), (Some(per_call), Some(per_call)));
        // 11 and 7 both fall in (4, 16]: the third bucket.
        assert_eq!(p.explicit_bounds.len() + 1, p.bucket_counts.len());
        assert_eq!(p.bucket_counts[2], 3, "{kind}: {:?}", p.bucket_counts);
        assert_eq!(p.bucket_counts.iter().sum::<u64>(), 3);
        assert_eq!(point_attr(p, "gen_ai.operation.name"), Some("chat"));
        assert_eq!(point_attr(p, "gen_ai.request.model"), Some("gpt-4o"));
        assert_eq!(point_attr(p, "gen_ai.provider.name"), Some("openai"));
        assert_eq!(point_attr(p, "gen_ai.response.model"), Some("m-a"));
        assert_eq!(point_attr(p, "error.type"), None);
    }
    let requests = &points["gen_ai.server.request.duration"];
    let ok = requests
        .iter()
        .find(|p| point_attr(p, "gen_ai.request.model") == Some("gpt-4o"))
        .unwrap();
    assert_eq!((ok.count, point_attr(ok, "error.type")), (3, None));
    assert!(ok.sum.unwrap() > 0.0 && ok.sum.unwrap() < 10.0);
    let refused = requests
        .iter()
        .find(|p| point_attr(p, "gen_ai.request.model") == Some("no-such-model"))
        .unwrap();
    assert_eq!(
        (refused.count, point_attr(refused, "error.type")),
        (1, Some("404"))
    );
    assert_eq!(point_attr(refused, "gen_ai.provider.name"), None);
    let attempts = &points["gen_ai.client.operation.duration"];
    assert_eq!(attempts.iter().map(|p| p.count).sum::<u64>(), 3);
    // Not streamed: no time-to-first-token.
    assert!(!points.contains_key("gen_ai.server.time_to_first_token"));
}

#[tokio::test]
async fn a_failed_attempt_and_its_fallback_are_sibling_client_spans_and_a_stream_is_traced() {
    let col = collector().await;
    let bad = failing_upstream().await;
    let good = MockUpstream::start(|r| {
        if r.json()["stream"] == json!(true) {
            Reply::stream(
                "text/event-stream",
                &openai::sse(&["a", "b", "c"], true),
                7,
                Duration::ZERO,
            )
        } else {
            Reply::json(200, openai::completion("ok"))
        }
    })
    .await;
    let gw = start(
        &otel_config(
            &[
                upstream("primary", "bad", &bad.base()),
                upstream("backup", "good", &good.base()),
            ],
            "router_settings:\n  num_retries: 0\n  fallbacks: [{primary: [backup]}]\n",
        ),
        &env_for(&col),
    );
    let r = gw.post("/v1/chat/completions", &chat("primary")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let spans = wait_spans(&col, 3).await;
    let server = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .unwrap();
    let mut clients: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Client as i32)
        .collect();
    clients.sort_by_key(|s| s.start_time_unix_nano);
    assert_eq!(clients.len(), 2);
    assert!(clients.iter().all(|c| c.parent_span_id == server.span_id));
    assert_eq!(str_attr(clients[0], "error.type"), Some("internal_error"));
    assert_eq!(int_attr(clients[0], "http.response.status_code"), Some(500));
    assert_eq!(
        str_attr(clients[0], "switchboard.deployment_id"),
        Some("bad")
    );
    assert!(attr(clients[1], "error.type").is_none());
    assert_eq!(
        str_attr(clients[1], "switchboard.deployment_id"),
        Some("good")
    );
    assert!(clients[0].end_time_unix_nano <= clients[1].start_time_unix_nano);
    assert_eq!(
        str_attr(server, "switchboard.fallback_group"),
        Some("backup")
    );
    assert_eq!(int_attr(server, "switchboard.attempts"), Some(2));
    // Each attempt's traceparent named its own span.
    assert!(bad
        .last()
        .header("traceparent")
        .unwrap()
        .contains(&hex(&clients[0].span_id)));
    assert!(good
        .last()
        .header("traceparent")
        .unwrap()
        .contains(&hex(&clients[1].span_id)));

    // A stream: the server span carries the time to first token.
    let r = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "backup", "stream": true, "stream_options": {"include_usage": true},
                    "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(r.status, 200);
    let spans = wait_spans(&col, 5).await;
    let stream_server = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32 && s.name == "chat backup")
        .unwrap();
    assert!(matches!(
        attr(stream_server, "gen_ai.server.time_to_first_token"),
        Some(AnyValue::DoubleValue(_))
    ));
    assert_eq!(
        attr(stream_server, "gen_ai.request.stream"),
        Some(&AnyValue::BoolValue(true))
    );

    // An error: every deployment fails; the SERVER span says why.
    let gw2 = start(
        &otel_config(
            &[upstream("only-bad", "bad2", &bad.base())],
            "router_settings:\n  num_retries: 0\n",
        ),
        &env_for(&col),
    );
    let r = gw2.post("/v1/chat/completions", &chat("only-bad")).await;
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(
        wait_until(
            || received(&col).iter().any(|s| s.name == "chat only-bad"),
            Duration::from_secs(10)
        )
        .await
    );
    let all = received(&col);
    let failed = all.iter().find(|s| s.name == "chat only-bad").unwrap();
    assert_eq!(str_attr(failed, "error.type"), Some("internal_error"));
    assert_eq!(int_attr(failed, "http.response.status_code"), Some(500));
    assert_eq!(
        failed.status.as_ref().map(|s| s.code),
        Some(2),
        "status ERROR"
    );
}

#[tokio::test]
async fn langfuse_preset_posts_to_its_otel_path_with_basic_auth() {
    let col = collector().await;
    let up = MockUpstream::start(|_| Reply::json(200, openai::completion("hello"))).await;
    let yaml = format!(
        "model_list:\n{}litellm_settings:\n  success_callback: [\"langfuse\"]\n",
        upstream("gpt-4o", "a", &up.base())
    );
    let env = vec![
        ("LANGFUSE_PUBLIC_KEY".to_string(), "pk-lf-1".to_string()),
        ("LANGFUSE_SECRET_KEY".to_string(), "sk-lf-2".to_string()),
        ("LANGFUSE_HOST".to_string(), col.base()),
        ("OTEL_BSP_SCHEDULE_DELAY".to_string(), "20".to_string()),
    ];
    let gw = start(&yaml, &env);
    let r = gw.post("/v1/chat/completions", &chat("gpt-4o")).await;
    assert_eq!(r.status, 200);
    assert!(wait_until(|| col.count() > 0, Duration::from_secs(10)).await);
    let req = col.last();
    assert_eq!(req.path, "/api/public/otel/v1/traces");
    assert_eq!(
        req.header("authorization"),
        Some("Basic cGstbGYtMTpzay1sZi0y")
    );
    assert_eq!(req.header("content-type"), Some("application/x-protobuf"));
    let decoded = ExportTraceServiceRequest::decode(&req.body[..]).unwrap();
    assert!(!decoded.resource_spans.is_empty());
    // Missing credentials: a warning naming the variable, the callback off, requests served.
    let gw2 = start(&yaml, &[]);
    let log = gw2.wait_for_stderr("LANGFUSE_PUBLIC_KEY").await;
    assert!(log.contains("LANGFUSE_SECRET_KEY"), "{log}");
    assert_eq!(
        gw2.post("/v1/chat/completions", &chat("gpt-4o"))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn a_hung_collector_neither_blocks_nor_slows_requests_and_drops_are_counted() {
    // Accepts connections and never answers.
    let hung = MockUpstream::start(|_| {
        Reply::bytes(200, "application/x-protobuf", Vec::new()).delayed(Duration::from_secs(600))
    })
    .await;
    // Without Nagle, so the p50s below compare the gateways, not the mock's delayed ACKs.
    let up = MockUpstream::start_nodelay(|_| Reply::json(200, openai::completion("hello"))).await;
    let env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT".to_string(), hung.base()),
        ("OTEL_BSP_SCHEDULE_DELAY".to_string(), "1".to_string()),
        ("OTEL_BSP_MAX_QUEUE_SIZE".to_string(), "4".to_string()),
        (
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE".to_string(),
            "2".to_string(),
        ),
        (
            "OTEL_EXPORTER_OTLP_TIMEOUT".to_string(),
            "60000".to_string(),
        ),
        ("OTEL_METRICS_EXPORTER".to_string(), "none".to_string()),
    ];
    let gw = start(
        &otel_config(&[upstream("gpt-4o", "a", &up.base())], ""),
        &env,
    );
    // The baseline: the same gateway exporting to a healthy collector.
    let healthy = collector().await;
    let mut healthy_env = env.clone();
    healthy_env[0].1 = healthy.base();
    let baseline = start(
        &otel_config(&[upstream("gpt-4o", "a", &up.base())], ""),
        &healthy_env,
    );
    let mut worst = Duration::ZERO;
    let began = Instant::now();
    let (mut hung_times, mut healthy_times) = (Vec::new(), Vec::new());
    for i in 0..60 {
        let t = Instant::now();
        let r = gw.post("/v1/chat/completions", &chat("gpt-4o")).await;
        assert_eq!(r.status, 200);
        let took = t.elapsed();
        worst = worst.max(took);
        // Alternating with the baseline, so the machine's load falls on both alike; the
        // last 20 of each, once the hung exporter's queue is full.
        let t = Instant::now();
        let r = baseline.post("/v1/chat/completions", &chat("gpt-4o")).await;
        assert_eq!(r.status, 200);
        if i >= 40 {
            hung_times.push(took);
            healthy_times.push(t.elapsed());
        }
    }
    // 60 calls to a local mock: well under a second each even on a loaded machine; a request
    // that waited on the collector would take its 60 s export timeout.
    assert!(worst < Duration::from_secs(2), "slowest request {worst:?}");
    assert!(began.elapsed() < Duration::from_secs(60));
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (hung_p50, healthy_p50) = (median(&mut hung_times), median(&mut healthy_times));
    assert!(
        hung_p50 <= healthy_p50 + Duration::from_millis(5),
        "p50 with a hung collector {hung_p50:?}, with a healthy one {healthy_p50:?}"
    );
    assert!(healthy.count() >= 1, "the baseline exported");
    assert!(hung.count() >= 1, "the exporter tried the collector");
    let scrape = gw
        .wait_for_metric(
            "switchboard_otel_dropped_spans_total",
            &["reason=\"queue_full\""],
            |v| v > 0.0,
        )
        .await;
    let dropped = metric_value(
        &scrape,
        "switchboard_otel_dropped_spans_total",
        &["reason=\"queue_full\""],
    )
    .unwrap();
    // At most queue (4) + one batch in flight (2 spans per request) were not dropped.
    assert!(
        dropped >= (60.0 - 4.0 - 2.0) * 2.0 - 2.0,
        "dropped {dropped}"
    );
}

#[tokio::test]
async fn spans_of_the_last_requests_are_flushed_on_sigterm() {
    let col = collector().await;
    let up = MockUpstream::start(|_| Reply::json(200, openai::completion("hello"))).await;
    let mut env = env_for(&col);
    // Nothing would be exported for an hour but for the flush.
    env[1].1 = "600000".into();
    env.push(("OTEL_METRIC_EXPORT_INTERVAL".into(), "3600000".into()));
    let mut gw = start(
        &otel_config(&[upstream("gpt-4o", "a", &up.base())], ""),
        &env,
    );
    for _ in 0..3 {
        assert_eq!(
            gw.post("/v1/chat/completions", &chat("gpt-4o"))
                .await
                .status,
            200
        );
    }
    assert_eq!(received(&col).len(), 0);
    gw.terminate().await;
    assert_eq!(received(&col).len(), 6, "3 SERVER + 3 CLIENT spans flushed");
    assert!(
        col.requests().iter().any(|r| r.path == "/v1/metrics"),
        "metrics flushed too"
    );
}

#[tokio::test]
async fn content_capture_is_opt_in_and_capped() {
    let col = collector().await;
    let up = MockUpstream::start(|_| Reply::json(200, openai::completion("the answer text"))).await;
    let d = temp_dir();
    let yaml = format!(
        "{}switchboard:\n  threads: 2\n  grace_period_seconds: 0\n  graceful_shutdown_timeout_seconds: 5\n  pid_file: {d}/sb.pid\n  upgrade_sock: {d}/sb.sock\n  otel_capture_content: true\n  otel_content_max_bytes: 40\n",
        otel_config(&[upstream("gpt-4o", "a", &up.base())], ""),
        d = d.display()
    );
    let gw = start(&yaml, &env_for(&col));
    let r = gw.post("/v1/chat/completions", &chat("gpt-4o")).await;
    assert_eq!(r.status, 200);
    let spans = wait_spans(&col, 2).await;
    let server = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .unwrap();
    let input = str_attr(server, "gen_ai.input.messages").expect("prompt captured");
    assert!(input.contains("secret prompt"), "{input}");
    assert!(input.len() <= 40, "capped: {input}");
    let output = str_attr(server, "gen_ai.output.messages").expect("completion captured");
    assert!(output.len() <= 40, "capped: {output}");
}

#[tokio::test]
async fn a_reload_that_moves_the_exporter_flushes_the_old_one_and_uses_the_new_one() {
    let (old, new) = (collector().await, collector().await);
    let up = MockUpstream::start(|_| Reply::json(200, openai::completion("hello"))).await;
    // The endpoint comes from the config's environment_variables, so a reload can move it.
    let yaml = |col: &MockUpstream| {
        format!(
            "environment_variables:\n  OTEL_EXPORTER_OTLP_ENDPOINT: \"{}\"\n{}",
            col.base(),
            otel_config(&[upstream("gpt-4o", "a", &up.base())], "")
        )
    };
    let env = vec![
        // Nothing is exported on a timer: only a flush sends spans.
        ("OTEL_BSP_SCHEDULE_DELAY".to_string(), "600000".to_string()),
        ("OTEL_METRICS_EXPORTER".to_string(), "none".to_string()),
    ];
    let mut gw = start(&yaml(&old), &env);
    assert_eq!(
        gw.post("/v1/chat/completions", &chat("gpt-4o"))
            .await
            .status,
        200
    );
    assert_eq!(received(&old).len(), 0);
    gw.rewrite_config(&yaml(&new));
    gw.signal("HUP");
    // The old generation's exporter sends what it held once the old generation is gone.
    wait_spans(&old, 2).await;
    assert_eq!(
        gw.post("/v1/chat/completions", &chat("gpt-4o"))
            .await
            .status,
        200
    );
    gw.signal("TERM");
    assert!(gw.exited(Duration::from_secs(20)).await.is_some());
    assert_eq!(
        received(&new).len(),
        2,
        "the new exporter got the request after the reload"
    );
    assert_eq!(received(&old).len(), 2);
}

fn finish_reasons(span: &Span) -> Option<Vec<String>> {
    match attr(span, "gen_ai.response.finish_reasons") {
        Some(AnyValue::ArrayValue(a)) => Some(
            a.values
                .iter()
                .filter_map(|v| match &v.value {
                    Some(AnyValue::StringValue(s)) => Some(s.clone()),
                    _ => None,
                })
                .collect(),
        ),
        _ => None,
    }
}

#[tokio::test]
async fn finish_reasons_are_on_the_server_and_client_spans_of_a_call_and_a_stream() {
    let col = collector().await;
    // The stream ends with `length`, sent in 5-byte pieces so the reason arrives split.
    let sse = String::from_utf8(openai::sse(&["a", "b"], true))
        .unwrap()
        .replace("\"finish_reason\":\"stop\"", "\"finish_reason\":\"length\"");
    let up = MockUpstream::start(move |r| {
        if r.json()["stream"] == json!(true) {
            Reply::stream("text/event-stream", sse.as_bytes(), 5, Duration::ZERO)
        } else {
            Reply::json(200, openai::completion("hello"))
        }
    })
    .await;
    let gw = start(
        &otel_config(&[upstream("gpt-4o", "a", &up.base())], ""),
        &env_for(&col),
    );
    let r = gw.post("/v1/chat/completions", &chat("gpt-4o")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let spans = wait_spans(&col, 2).await;
    for s in &spans {
        assert_eq!(
            finish_reasons(s).as_deref(),
            Some(&["stop".to_string()][..]),
            "{}",
            s.name
        );
    }
    let r = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "gpt-4o", "stream": true,
                    "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(r.status, 200);
    let spans = wait_spans(&col, 4).await;
    let streamed: Vec<&Span> = spans
        .iter()
        .filter(|s| attr(s, "gen_ai.request.stream").is_some() || s.kind == SpanKind::Client as i32)
        .filter(|s| finish_reasons(s).as_deref() != Some(&["stop".to_string()][..]))
        .collect();
    assert_eq!(streamed.len(), 2, "{spans:?}");
    for s in streamed {
        assert_eq!(
            finish_reasons(s).as_deref(),
            Some(&["length".to_string()][..]),
            "{}",
            s.name
        );
    }
}

#[tokio::test]
async fn otel_exporter_headers_from_the_environment_never_reach_langfuse() {
    let (otel, langfuse) = (collector().await, collector().await);
    let up = MockUpstream::start(|_| Reply::json(200, openai::completion("hello"))).await;
    let yaml = format!(
        "model_list:\n{}litellm_settings:\n  callbacks: [\"otel\", \"langfuse_otel\"]\n",
        upstream("gpt-4o", "a", &up.base())
    );
    let mut env = env_for(&otel);
    env.extend([
        ("OTEL_EXPORTER_OTLP_HEADERS".into(), "x-secret=1".into()),
        ("LANGFUSE_PUBLIC_KEY".into(), "pk-lf-1".into()),
        ("LANGFUSE_SECRET_KEY".into(), "sk-lf-2".into()),
        ("LANGFUSE_HOST".into(), langfuse.base()),
    ]);
    let gw = start(&yaml, &env);
    let r = gw.post("/v1/chat/completions", &chat("gpt-4o")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    wait_spans(&otel, 2).await;
    assert!(wait_until(|| langfuse.count() > 0, Duration::from_secs(10)).await);
    // The collector the OTel variables name gets their headers, on spans and metrics alike.
    assert!(
        wait_until(
            || otel.requests().iter().any(|r| r.path == "/v1/metrics"),
            Duration::from_secs(10)
        )
        .await
    );
    for r in otel.requests() {
        assert_eq!(r.header("x-secret"), Some("1"), "{}", r.path);
        assert_eq!(r.header("authorization"), None, "{}", r.path);
    }
    // Langfuse gets its own Basic auth and nothing else.
    for r in langfuse.requests() {
        assert_eq!(r.path, "/api/public/otel/v1/traces");
        assert_eq!(r.header("x-secret"), None);
        assert_eq!(
            r.header("authorization"),
            Some("Basic cGstbGYtMTpzay1sZi0y")
        );
        let decoded = ExportTraceServiceRequest::decode(&r.body[..]).unwrap();
        assert!(!decoded.resource_spans.is_empty());
    }
}

/// One gRPC call a [`GrpcCollector`] received: its path, metadata and message.
struct GrpcCall {
    path: String,
    headers: http::HeaderMap,
    message: Vec<u8>,
}

/// An OTLP/gRPC receiver: HTTP/2 (h2) with gRPC's framing decoded by hand, answering every
/// unary call with an empty message and `grpc-status: 0`.
struct GrpcCollector {
    port: u16,
    calls: std::sync::Arc<std::sync::Mutex<Vec<GrpcCall>>>,
}

impl GrpcCollector {
    async fn start() -> GrpcCollector {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let calls = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = calls.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let Ok(mut conn) = h2::server::handshake(sock).await else {
                        return;
                    };
                    while let Some(Ok((req, mut respond))) = conn.accept().await {
                        let seen = seen.clone();
                        tokio::spawn(async move {
                            let (parts, mut body) = req.into_parts();
                            let mut buf = Vec::new();
                            while let Some(Ok(chunk)) = body.data().await {
                                let _ = body.flow_control().release_capacity(chunk.len());
                                buf.extend_from_slice(&chunk);
                            }
                            // One length-prefixed message: a compressed flag, a u32 length.
                            assert!(buf.len() >= 5 && buf[0] == 0, "gRPC frame {buf:?}");
                            let len = u32::from_be_bytes(buf[1..5].try_into().unwrap()) as usize;
                            assert_eq!(buf.len(), 5 + len);
                            seen.lock().unwrap().push(GrpcCall {
                                path: parts.uri.path().to_string(),
                                headers: parts.headers,
                                message: buf[5..].to_vec(),
                            });
                            let head = http::Response::builder()
                                .status(200)
                                .header("content-type", "application/grpc")
                                .body(())
                                .unwrap();
                            let Ok(mut send) = respond.send_response(head, false) else {
                                return;
                            };
                            let _ = send.send_data(bytes::Bytes::from_static(&[0; 5]), false);
                            let mut trailers = http::HeaderMap::new();
                            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                            let _ = send.send_trailers(trailers);
                        });
                    }
                });
            }
        });
        GrpcCollector { port, calls }
    }

    fn spans(&self) -> Vec<Span> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.path == "/opentelemetry.proto.collector.trace.v1.TraceService/Export")
            .flat_map(|c| {
                ExportTraceServiceRequest::decode(&c.message[..])
                    .expect("OTLP trace protobuf")
                    .resource_spans
                    .into_iter()
                    .flat_map(|rs| rs.scope_spans)
                    .flat_map(|ss| ss.spans)
            })
            .collect()
    }

    fn metric_names(&self) -> Vec<String> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.path == "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export")
            .flat_map(|c| {
                ExportMetricsServiceRequest::decode(&c.message[..])
                    .expect("OTLP metrics protobuf")
                    .resource_metrics
                    .into_iter()
                    .flat_map(|rm| rm.scope_metrics)
                    .flat_map(|sm| sm.metrics)
                    .map(|m| m.name)
            })
            .collect()
    }
}

#[tokio::test]
async fn grpc_export_sends_spans_and_metrics_to_a_grpc_collector() {
    let col = GrpcCollector::start().await;
    let up = MockUpstream::start(|_| Reply::json(200, openai::completion("hello"))).await;
    let env = vec![
        (
            "OTEL_EXPORTER_OTLP_PROTOCOL".to_string(),
            "grpc".to_string(),
        ),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT".to_string(),
            format!("http://127.0.0.1:{}", col.port),
        ),
        (
            "OTEL_EXPORTER_OTLP_HEADERS".to_string(),
            "x-team=blue".to_string(),
        ),
        ("OTEL_BSP_SCHEDULE_DELAY".to_string(), "20".to_string()),
        ("OTEL_METRIC_EXPORT_INTERVAL".to_string(), "200".to_string()),
        ("OTEL_SERVICE_NAME".to_string(), "sb-grpc".to_string()),
    ];
    let gw = start(
        &otel_config(&[upstream("gpt-4o", "a", &up.base())], ""),
        &env,
    );
    let log = gw.stderr();
    assert!(!log.contains("OTEL_EXPORTER_OTLP_PROTOCOL"), "{log}");
    let r = gw.post("/v1/chat/completions", &chat("gpt-4o")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        wait_until(|| col.spans().len() >= 2, Duration::from_secs(10)).await,
        "spans over gRPC: {:?}",
        col.spans()
    );
    let spans = col.spans();
    let server = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .unwrap();
    let client = spans
        .iter()
        .find(|s| s.kind == SpanKind::Client as i32)
        .unwrap();
    assert_eq!(server.name, "chat gpt-4o");
    assert_eq!(str_attr(server, "gen_ai.provider.name"), Some("openai"));
    assert_eq!(int_attr(server, "gen_ai.usage.output_tokens"), Some(7));
    assert_eq!(
        finish_reasons(server).as_deref(),
        Some(&["stop".to_string()][..])
    );
    assert_eq!(client.parent_span_id, server.span_id);
    assert_eq!(client.name, "chat m-a");
    {
        let calls = col.calls.lock().unwrap();
        let call = &calls[0];
        assert_eq!(
            call.headers.get("content-type").unwrap(),
            "application/grpc"
        );
        assert_eq!(call.headers.get("x-team").unwrap(), "blue");
    }
    assert!(
        wait_until(
            || col
                .metric_names()
                .iter()
                .any(|m| m == "gen_ai.client.token.usage"),
            Duration::from_secs(10)
        )
        .await,
        "metrics over gRPC: {:?}",
        col.metric_names()
    );
}

/// A retry on the primary group's other deployment and then its fallback: one SERVER span,
/// every attempt a CLIENT span under it in order, the failed ones with `error.type` and their
/// status. (With a fallback waiting, a group retries elsewhere, not on the deployment that
/// just failed.)
#[tokio::test]
async fn retries_and_then_a_fallback_are_client_spans_under_one_server_span() {
    let col = collector().await;
    let bad = failing_upstream().await;
    let good = MockUpstream::start(|_| Reply::json(200, openai::completion("ok"))).await;
    let gw = start(
        &otel_config(
            &[
                upstream("primary", "bad1", &bad.base()),
                upstream("primary", "bad2", &bad.base()),
                upstream("backup", "good", &good.base()),
            ],
            "router_settings:\n  num_retries: 2\n  retry_after: 0\n  disable_cooldowns: true\n  fallbacks: [{primary: [backup]}]\n",
        ),
        &env_for(&col),
    );
    let r = gw.post("/v1/chat/completions", &chat("primary")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let tries = bad.count();
    assert!(tries >= 2, "the primary was retried: {tries} calls");
    let spans = wait_spans(&col, tries + 2).await;
    assert_eq!(spans.len(), tries + 2, "{spans:?}");
    let servers: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Server as i32)
        .collect();
    assert_eq!(servers.len(), 1);
    let server = servers[0];
    let mut clients: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Client as i32)
        .collect();
    clients.sort_by_key(|s| s.start_time_unix_nano);
    assert_eq!(clients.len(), tries + 1);
    for c in &clients {
        assert_eq!(c.trace_id, server.trace_id);
        assert_eq!(c.parent_span_id, server.span_id);
        assert!(c.start_time_unix_nano >= server.start_time_unix_nano);
        assert!(c.end_time_unix_nano <= server.end_time_unix_nano);
    }
    let (failed, last) = clients.split_at(tries);
    for (i, c) in failed.iter().enumerate() {
        assert!(
            str_attr(c, "switchboard.deployment_id").is_some_and(|d| d.starts_with("bad")),
            "try {i}"
        );
        assert_eq!(str_attr(c, "error.type"), Some("internal_error"), "try {i}");
        assert_eq!(int_attr(c, "http.response.status_code"), Some(500));
        assert_eq!(c.status.as_ref().map(|s| s.code), Some(2), "status ERROR");
    }
    for pair in clients.windows(2) {
        assert!(pair[0].end_time_unix_nano <= pair[1].start_time_unix_nano);
    }
    assert_eq!(str_attr(last[0], "switchboard.deployment_id"), Some("good"));
    assert!(attr(last[0], "error.type").is_none());
    assert_eq!(int_attr(last[0], "http.response.status_code"), Some(200));
    assert_eq!(
        int_attr(server, "switchboard.attempts"),
        Some(tries as i64 + 1)
    );
    assert_eq!(
        str_attr(server, "switchboard.fallback_group"),
        Some("backup")
    );
    assert!(attr(server, "error.type").is_none());
}

/// Cost, cached input tokens, key alias, team and end user are on the SERVER span; the key,
/// its hash and the master key appear nowhere in what is exported.
#[tokio::test]
async fn caller_and_cost_attributes_are_exported_and_the_key_never_is() {
    const MASTER: &str = "sk-master-otel";
    let col = collector().await;
    let up = MockUpstream::start(|_| {
        let mut v = openai::completion("hello");
        v["usage"]["prompt_tokens_details"] = json!({"cached_tokens": 4});
        Reply::json(200, v)
    })
    .await;
    let entry = format!(
        "  - model_name: gpt-4o\n    litellm_params: {{model: openai/m-a, api_base: \"{}/v1\", api_key: k, input_cost_per_token: 0.001, output_cost_per_token: 0.002}}\n    model_info: {{id: a}}\n",
        up.base()
    );
    let gw = start(
        &otel_config(
            &[entry],
            &format!("general_settings:\n  master_key: {MASTER}\n"),
        ),
        &env_for(&col),
    );
    let team = gw
        .post_as(MASTER, "/team/new", &json!({"team_id": "team-42"}))
        .await;
    assert_eq!(team.status, 200, "{}", team.text());
    let key = gw
        .generate_key(MASTER, json!({"key_alias": "ci-bot", "team_id": "team-42"}))
        .await;
    let mut body = chat("gpt-4o");
    body["user"] = json!("end-user-7");
    let r = gw.post_as(&key, "/v1/chat/completions", &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let spans = wait_spans(&col, 2).await;
    let server = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .unwrap();
    // 11 in at 0.001 (at most), 7 out at 0.002.
    match attr(server, "gen_ai.usage.cost") {
        Some(AnyValue::DoubleValue(c)) => assert!(*c > 0.014 && *c <= 0.025, "cost {c}"),
        other => panic!("gen_ai.usage.cost: {other:?}"),
    }
    assert_eq!(
        int_attr(server, "gen_ai.usage.cache_read.input_tokens"),
        Some(4)
    );
    assert_eq!(str_attr(server, "switchboard.key_alias"), Some("ci-bot"));
    assert_eq!(str_attr(server, "switchboard.team_id"), Some("team-42"));
    assert_eq!(str_attr(server, "gen_ai.user.id"), Some("end-user-7"));
    let hash = switchboard::keys::hex(&switchboard::keys::hash_key(&key));
    for r in col.requests() {
        let raw = String::from_utf8_lossy(&r.body);
        for secret in [key.as_str(), hash.as_str(), MASTER] {
            assert!(!raw.contains(secret), "{} carries {secret}", r.path);
        }
    }
}

/// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT takes the spans while the metrics go to the general
/// endpoint; OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES from the config's
/// environment_variables name the resource.
#[tokio::test]
async fn traces_endpoint_and_resource_attributes_from_the_config_environment() {
    let (general, traces) = (collector().await, collector().await);
    let up = MockUpstream::start(|_| Reply::json(200, openai::completion("hello"))).await;
    let yaml = format!(
        "environment_variables:\n  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: \"{}/custom/v1/traces\"\n  OTEL_RESOURCE_ATTRIBUTES: \"deployment.environment=staging,team=ml%20ops\"\n  OTEL_SERVICE_NAME: from-config\n{}",
        traces.base(),
        otel_config(&[upstream("gpt-4o", "a", &up.base())], "")
    );
    let mut env = env_for(&general);
    env.retain(|(k, _)| k != "OTEL_SERVICE_NAME");
    let gw = start(&yaml, &env);
    assert_eq!(
        gw.post("/v1/chat/completions", &chat("gpt-4o"))
            .await
            .status,
        200
    );
    wait_spans(&traces, 2).await;
    assert!(traces
        .requests()
        .iter()
        .all(|r| r.path == "/custom/v1/traces"));
    assert!(
        wait_until(
            || general.requests().iter().any(|r| r.path == "/v1/metrics"),
            Duration::from_secs(10)
        )
        .await,
        "metrics go to the general endpoint"
    );
    assert!(
        received(&general).is_empty(),
        "no spans at the general endpoint"
    );
    let req = &traces.requests()[0];
    let decoded = ExportTraceServiceRequest::decode(&req.body[..]).unwrap();
    let resource = decoded.resource_spans[0].resource.as_ref().unwrap();
    let value = |key: &str| {
        resource
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| v.value.clone())
    };
    let text = |s: &str| Some(AnyValue::StringValue(s.into()));
    assert_eq!(value("service.name"), text("from-config"));
    assert_eq!(value("deployment.environment"), text("staging"));
    assert_eq!(value("team"), text("ml ops"));
}

/// A chat call continuing the client trace `trace` (its id, its flags) when given.
async fn traced_call(gw: &Gateway, trace: Option<(&str, &str)>) {
    let parent = trace.map(|(id, flags)| format!("00-{id}-00f067aa0ba902b7-{flags}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(p) = &parent {
        headers.push(("traceparent", p.as_str()));
    }
    let r = gw
        .post_with(
            "/v1/chat/completions",
            &headers,
            chat("gpt-4o").to_string().as_bytes(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// `always_off` and `traceidratio` 0 export no span (metrics still flow); under the default
/// `parentbased_always_on` a client's unsampled `traceparent` is not exported while a sampled
/// one and a request without one are. Checked after the SIGTERM flush, which exports
/// everything queued.
#[tokio::test]
async fn samplers_decide_which_traces_are_exported() {
    let up = MockUpstream::start(|_| Reply::json(200, openai::completion("hello"))).await;
    let unsampled = "0af7651916cd43dd8448eb211c80319c";
    let sampled = "4bf92f3577b34da6a3ce929d0e0e4736";
    for sampler in [
        vec![("OTEL_TRACES_SAMPLER", "always_off")],
        vec![
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0"),
        ],
    ] {
        let col = collector().await;
        let mut env = env_for(&col);
        env.extend(sampler.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut gw = start(
            &otel_config(&[upstream("gpt-4o", "a", &up.base())], ""),
            &env,
        );
        traced_call(&gw, None).await;
        traced_call(&gw, Some((sampled, "01"))).await;
        gw.signal("TERM");
        assert!(gw.exited(Duration::from_secs(20)).await.is_some());
        assert!(
            col.requests().iter().any(|r| r.path == "/v1/metrics"),
            "{sampler:?}: the exporter ran (metrics flushed)"
        );
        assert_eq!(received(&col).len(), 0, "{sampler:?}: no span exported");
    }

    let col = collector().await;
    let mut gw = start(
        &otel_config(&[upstream("gpt-4o", "a", &up.base())], ""),
        &env_for(&col),
    );
    traced_call(&gw, Some((unsampled, "00"))).await;
    traced_call(&gw, Some((sampled, "01"))).await;
    traced_call(&gw, None).await;
    gw.signal("TERM");
    assert!(gw.exited(Duration::from_secs(20)).await.is_some());
    let spans = received(&col);
    assert_eq!(spans.len(), 4, "two traces of two spans: {spans:?}");
    assert!(spans.iter().all(|s| hex(&s.trace_id) != unsampled));
    assert_eq!(
        spans.iter().filter(|s| hex(&s.trace_id) == sampled).count(),
        2
    );
    // The unsampled trace still went upstream, unsampled.
    assert!(up.requests().iter().any(|r| r
        .header("traceparent")
        .is_some_and(|t| t.starts_with(&format!("00-{unsampled}-")) && t.ends_with("-00"))));
}
