//! The export thread: takes finished requests off the bounded queue, writes their spans as OTLP
//! protobuf ([`otlp`]) and records the GenAI metrics, and exports spans in batches (at
//! `max_batch` spans or after `schedule_delay`). A batch's `ExportTraceServiceRequest` is
//! encoded once and sent to each target with exactly that target's headers: POSTed over
//! OTLP/HTTP, or as the gRPC `TraceService/Export` call on a tonic channel running on a
//! one-thread Tokio runtime that exists only when a gRPC target does. Metrics go through the
//! SDK's meter provider and OTLP exporters. Its own OS thread, so the blocking HTTP client never
//! runs on a request worker;
//! a slow or dead collector holds up only this thread (each export bounded by the export
//! timeout) while the queue fills and further requests are dropped and counted by the settle
//! stage.

use super::{otlp, spans, Finished, DROPPED_EXPORT_FAILED, EXPORTED};
use crate::config::telemetry::{ExportTarget, OtlpProtocol, TelemetryConfig};
use opentelemetry::metrics::{Histogram, MeterProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::Resource;
use prost::Message as _;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub enum Message {
    Request(Box<Finished>),
    /// Export everything queued before this, then acknowledge.
    Flush(SyncSender<()>),
}

/// Starts the export thread; the sender is the bounded queue into it.
pub fn spawn(config: TelemetryConfig) -> std::io::Result<SyncSender<Message>> {
    let (tx, rx) = std::sync::mpsc::sync_channel(config.max_queue);
    std::thread::Builder::new()
        .name("switchboard-otel".into())
        .spawn(move || run(config, rx))?;
    Ok(tx)
}

/// Token counts: the convention's buckets, 1, 4, 16, … 4^13.
const TOKEN_BUCKETS: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];
/// Durations (s): the convention's buckets.
const DURATION_BUCKETS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
const TTFT_BUCKETS: [f64; 16] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
const TPOT_BUCKETS: [f64; 13] = [
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
];

struct Instruments {
    provider: SdkMeterProvider,
    token_usage: Histogram<u64>,
    request_duration: Histogram<f64>,
    operation_duration: Histogram<f64>,
    ttft: Histogram<f64>,
    tpot: Histogram<f64>,
}

impl Instruments {
    fn new(provider: SdkMeterProvider) -> Instruments {
        let meter = provider.meter("switchboard");
        let f64h = |name: &'static str, desc: &'static str, buckets: &[f64]| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(desc)
                .with_boundaries(buckets.to_vec())
                .build()
        };
        Instruments {
            token_usage: meter
                .u64_histogram("gen_ai.client.token.usage")
                .with_unit("{token}")
                .with_description("Number of input and output tokens used")
                .with_boundaries(TOKEN_BUCKETS.to_vec())
                .build(),
            request_duration: f64h(
                "gen_ai.server.request.duration",
                "Generative AI server request duration",
                &DURATION_BUCKETS,
            ),
            operation_duration: f64h(
                "gen_ai.client.operation.duration",
                "GenAI operation duration (each upstream attempt)",
                &DURATION_BUCKETS,
            ),
            ttft: f64h(
                "gen_ai.server.time_to_first_token",
                "Time to generate first token for successful responses",
                &TTFT_BUCKETS,
            ),
            tpot: f64h(
                "gen_ai.server.time_per_output_token",
                "Time per output token generated after the first token for successful responses",
                &TPOT_BUCKETS,
            ),
            provider,
        }
    }

    fn record(&self, f: &Finished) {
        let op = spans::operation_name(f.route);
        let mut attrs = Vec::with_capacity(5);
        attrs.push(KeyValue::new("gen_ai.operation.name", op));
        if let Some(m) = &f.model {
            attrs.push(KeyValue::new("gen_ai.request.model", m.clone()));
        }
        if let Some(d) = &f.deployment {
            attrs.push(KeyValue::new(
                "gen_ai.provider.name",
                opentelemetry::Value::String(spans::provider_name(d.provider.name()).into()),
            ));
            attrs.push(KeyValue::new(
                "gen_ai.response.model",
                d.config.model.clone(),
            ));
        }
        let ok = f.status > 0 && f.status < 400 && !f.client_disconnected;
        let mut with_error = attrs.clone();
        if !ok {
            with_error.push(KeyValue::new(
                "error.type",
                if f.client_disconnected {
                    "client_disconnected".to_string()
                } else {
                    f.status.to_string()
                },
            ));
        }
        self.request_duration
            .record(f.duration.as_secs_f64(), &with_error);
        for a in &f.trace.attempts {
            if let Some(end) = a.end {
                let mut at = attrs.clone();
                if let Some((kind, _)) = a.error {
                    at.push(KeyValue::new("error.type", kind));
                }
                self.operation_duration
                    .record(end.saturating_duration_since(a.start).as_secs_f64(), &at);
            }
        }
        if let Some(u) = f.usage.filter(|_| ok) {
            let mut input = attrs.clone();
            input.push(KeyValue::new("gen_ai.token.type", "input"));
            self.token_usage.record(u.prompt_tokens, &input);
            let mut output = attrs.clone();
            output.push(KeyValue::new("gen_ai.token.type", "output"));
            self.token_usage.record(u.completion_tokens, &output);
            if let (Some(ttft), true) = (f.ttft, f.stream) {
                self.ttft.record(ttft.as_secs_f64(), &attrs);
                if u.completion_tokens > 1 {
                    let after = f.duration.saturating_sub(ttft).as_secs_f64();
                    self.tpot
                        .record(after / (u.completion_tokens - 1) as f64, &attrs);
                }
            }
        }
    }
}

/// The service resource: the SDK's `telemetry.sdk.*`, then `OTEL_RESOURCE_ATTRIBUTES` and
/// `OTEL_SERVICE_NAME` (else `switchboard`) as the config resolved them, from its
/// `environment_variables` first, then the process environment (so the SDK's own detectors,
/// which read only the process, are not used).
fn resource(config: &TelemetryConfig) -> Resource {
    let attributes = config
        .resource_attributes
        .iter()
        .map(|(k, v)| KeyValue::new(k.clone(), v.clone()));
    Resource::builder_empty()
        .with_detector(Box::new(
            opentelemetry_sdk::resource::TelemetryResourceDetector,
        ))
        .with_attributes(attributes)
        .with_service_name(
            config
                .service_name
                .clone()
                .unwrap_or_else(|| "switchboard".into()),
        )
        .build()
}

/// An HTTP client for the exporters: rustls on the ring provider the gateway already uses,
/// the system's roots, bounded by the export timeout. Built on this thread: the blocking client
/// must not be created or dropped inside an async runtime.
fn http_client(config: &TelemetryConfig) -> Result<reqwest::blocking::Client, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::blocking::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(config.export_timeout)
        .connect_timeout(config.export_timeout)
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())
}

/// Where one target's spans go.
enum SpanSink {
    /// OTLP/HTTP protobuf, POSTed from this thread with exactly the target's headers.
    Http {
        name: &'static str,
        url: String,
        headers: reqwest::header::HeaderMap,
    },
    /// OTLP/gRPC: the encoded request as the `TraceService/Export` call.
    Grpc {
        channel: tonic::transport::Channel,
        metadata: tonic::metadata::MetadataMap,
    },
}

fn http_headers(target: &ExportTarget) -> Result<reqwest::header::HeaderMap, String> {
    let mut map = reqwest::header::HeaderMap::new();
    for (k, v) in &target.headers {
        let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| format!("{}: header name {k:?} is not valid", target.name))?;
        let value = reqwest::header::HeaderValue::from_str(v)
            .map_err(|_| format!("{}: the value of header {k:?} is not valid", target.name))?;
        map.append(name, value);
    }
    map.insert(
        reqwest::header::CONTENT_TYPE,
        reqwest::header::HeaderValue::from_static("application/x-protobuf"),
    );
    Ok(map)
}

/// gRPC metadata: the target's headers (the SDK adds `OTEL_EXPORTER_OTLP_HEADERS` from the
/// process environment to gRPC exporters too; only the `otel` target speaks gRPC, and those are
/// its own headers).
fn grpc_metadata(
    target: &ExportTarget,
) -> Result<opentelemetry_otlp::tonic_types::metadata::MetadataMap, String> {
    let mut headers = http::HeaderMap::new();
    for (k, v) in &target.headers {
        let name = http::HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| format!("{}: header name {k:?} is not valid", target.name))?;
        let value = http::HeaderValue::from_str(v)
            .map_err(|_| format!("{}: the value of header {k:?} is not valid", target.name))?;
        headers.append(name, value);
    }
    Ok(opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(headers))
}

/// TLS for an https gRPC endpoint: the system's roots.
fn grpc_tls(url: &str) -> Option<opentelemetry_otlp::tonic_types::transport::ClientTlsConfig> {
    url.starts_with("https://").then(|| {
        opentelemetry_otlp::tonic_types::transport::ClientTlsConfig::new().with_native_roots()
    })
}

fn span_sink(target: &ExportTarget, config: &TelemetryConfig) -> Result<SpanSink, String> {
    match target.protocol {
        OtlpProtocol::HttpProtobuf => Ok(SpanSink::Http {
            name: target.name,
            url: target.traces_endpoint.clone(),
            headers: http_headers(target)?,
        }),
        OtlpProtocol::Grpc => {
            let invalid = |e: tonic::transport::Error| format!("{}: {e}", target.name);
            let mut endpoint =
                tonic::transport::Endpoint::from_shared(target.traces_endpoint.clone())
                    .map_err(invalid)?
                    .connect_timeout(config.export_timeout)
                    .timeout(config.export_timeout);
            if let Some(tls) = grpc_tls(&target.traces_endpoint) {
                endpoint = endpoint.tls_config(tls).map_err(invalid)?;
            }
            Ok(SpanSink::Grpc {
                channel: endpoint.connect_lazy(),
                metadata: grpc_metadata(target)?,
            })
        }
    }
}

fn meter_provider(
    config: &TelemetryConfig,
    client: &reqwest::blocking::Client,
    resource: &Resource,
) -> Result<Option<SdkMeterProvider>, String> {
    let mut builder = SdkMeterProvider::builder().with_resource(resource.clone());
    let mut any = false;
    for target in &config.targets {
        let Some(url) = &target.metrics_endpoint else {
            continue;
        };
        let exporter = match target.protocol {
            OtlpProtocol::HttpProtobuf => opentelemetry_otlp::MetricExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(url.clone())
                .with_timeout(config.export_timeout)
                .with_http_client(client.clone())
                .with_headers(target.headers.iter().cloned().collect::<HashMap<_, _>>())
                .build(),
            OtlpProtocol::Grpc => {
                let mut b = opentelemetry_otlp::MetricExporter::builder()
                    .with_tonic()
                    .with_protocol(Protocol::Grpc)
                    .with_endpoint(url.clone())
                    .with_timeout(config.export_timeout)
                    .with_metadata(grpc_metadata(target)?);
                if let Some(tls) = grpc_tls(url) {
                    b = b.with_tls_config(tls);
                }
                b.build()
            }
        }
        .map_err(|e| format!("{} metrics: {e}", target.name))?;
        builder = builder.with_reader(
            PeriodicReader::builder(exporter)
                .with_interval(config.metric_interval)
                .build(),
        );
        any = true;
    }
    Ok(any.then(|| builder.build()))
}

/// What the export thread sends through.
struct Exporters {
    client: reqwest::blocking::Client,
    sinks: Vec<SpanSink>,
    envelope: otlp::Envelope,
    /// Runs the gRPC channels (present only when a target speaks gRPC).
    grpc: Option<tokio::runtime::Runtime>,
}

fn exporters(
    config: &TelemetryConfig,
    resource: &Resource,
) -> Result<(Exporters, Option<SdkMeterProvider>), String> {
    let client = http_client(config)?;
    let grpc = if config
        .targets
        .iter()
        .any(|t| t.protocol == OtlpProtocol::Grpc)
    {
        Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("switchboard-otel-grpc")
                .enable_all()
                .build()
                .map_err(|e| format!("the gRPC runtime could not start: {e}"))?,
        )
    } else {
        None
    };
    // tonic's channels start their connection tasks on the runtime they are built in.
    let _in_runtime = grpc.as_ref().map(|rt| rt.enter());
    let sinks = config
        .targets
        .iter()
        .map(|t| span_sink(t, config))
        .collect::<Result<Vec<_>, _>>()?;
    let meters = meter_provider(config, &client, resource)?;
    drop(_in_runtime);
    Ok((
        Exporters {
            client,
            sinks,
            envelope: envelope(resource),
            grpc,
        },
        meters,
    ))
}

/// The resource and scope every export carries, encoded once.
fn envelope(resource: &Resource) -> otlp::Envelope {
    use opentelemetry_proto::tonic::{common::v1::InstrumentationScope, resource::v1};
    let with_schema = ResourceAttributesWithSchema::from(resource);
    otlp::Envelope {
        resource: v1::Resource {
            attributes: with_schema.attributes.0,
            dropped_attributes_count: 0,
            entity_refs: vec![],
        }
        .encode_to_vec(),
        scope: InstrumentationScope {
            name: "switchboard".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            attributes: vec![],
            dropped_attributes_count: 0,
        }
        .encode_to_vec(),
        schema_url: with_schema.schema_url.unwrap_or_default(),
    }
}

/// How long the export thread lets requests queue up after it wakes (see [`run`]).
const GATHER: Duration = Duration::from_millis(10);

fn run(config: TelemetryConfig, rx: Receiver<Message>) {
    let resource = resource(&config);
    let (exporters, meters) = match exporters(&config, &resource) {
        Ok((e, m)) => (Some(e), m),
        Err(e) => {
            log::error!("OpenTelemetry exporter could not be built: {e}; spans are dropped");
            (None, None)
        }
    };
    let instruments = meters.map(Instruments::new);
    let mut batch = otlp::Batch::default();
    let mut due: Option<Instant> = None;
    // After a wake-up, the thread sleeps for `GATHER` and then takes everything queued
    // meanwhile without blocking: a request's `try_send` then finds no receiver waiting and
    // wakes no thread, instead of one futex wake and context switch per request.
    let mut gathered = false;
    loop {
        if due.is_some_and(|at| Instant::now() >= at) {
            export(&exporters, &mut batch);
            due = None;
        }
        let msg = if gathered {
            match rx.try_recv() {
                Ok(m) => Ok(m),
                Err(TryRecvError::Empty) => {
                    gathered = false;
                    continue;
                }
                Err(TryRecvError::Disconnected) => Err(RecvTimeoutError::Disconnected),
            }
        } else {
            let msg = match due {
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(at) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
            };
            if matches!(msg, Ok(Message::Request(_))) {
                std::thread::sleep(GATHER);
                gathered = true;
            }
            msg
        };
        match msg {
            Ok(Message::Request(f)) => {
                if let Some(i) = &instruments {
                    i.record(&f);
                }
                if f.trace.sampled {
                    spans::build(&f, &config, &mut batch);
                }
                if batch.len() >= config.max_batch {
                    export(&exporters, &mut batch);
                    due = None;
                } else if due.is_none() && !batch.is_empty() {
                    due = Some(Instant::now() + config.schedule_delay);
                }
            }
            Ok(Message::Flush(ack)) => {
                export(&exporters, &mut batch);
                due = None;
                if let Some(i) = &instruments {
                    let _ = i.provider.force_flush();
                }
                let _ = ack.try_send(());
            }
            Err(RecvTimeoutError::Timeout) => {
                export(&exporters, &mut batch);
                due = None;
            }
            Err(RecvTimeoutError::Disconnected) => {
                // The last generation using this exporter is gone: export what is left.
                export(&exporters, &mut batch);
                if let Some(i) = &instruments {
                    let _ = i.provider.shutdown();
                }
                return;
            }
        }
    }
}

/// The last export failed (a warning is logged when this turns on).
static FAILING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Sends the batch to every target, counting the outcome per target.
fn export(exporters: &Option<Exporters>, batch: &mut otlp::Batch) {
    if batch.is_empty() {
        return;
    }
    let n = batch.len() as u64;
    let Some(ex) = exporters.as_ref().filter(|e| !e.sinks.is_empty()) else {
        DROPPED_EXPORT_FAILED.fetch_add(n, Ordering::Relaxed);
        batch.clear();
        return;
    };
    // The ExportTraceServiceRequest: the OTLP/HTTP body and the gRPC message alike.
    let request = bytes::Bytes::from(batch.take_request(&ex.envelope));
    for sink in &ex.sinks {
        let (name, outcome) = match sink {
            SpanSink::Grpc { channel, metadata } => {
                let outcome = match &ex.grpc {
                    Some(rt) => rt.block_on(grpc_export(
                        channel.clone(),
                        metadata.clone(),
                        request.clone(),
                    )),
                    None => Err("no gRPC runtime".to_string()),
                };
                ("otel", outcome)
            }
            SpanSink::Http { name, url, headers } => {
                (*name, post(&ex.client, url, headers, request.clone()))
            }
        };
        match outcome {
            Ok(()) => {
                EXPORTED.fetch_add(n, Ordering::Relaxed);
                FAILING.store(false, Ordering::Relaxed);
            }
            Err(err) => {
                DROPPED_EXPORT_FAILED.fetch_add(n, Ordering::Relaxed);
                // Once per outage, not once per batch.
                if !FAILING.swap(true, Ordering::Relaxed) {
                    log::warn!("OpenTelemetry export to {name} failed ({err}); spans are dropped and counted in switchboard_otel_dropped_spans_total until it recovers");
                }
            }
        }
    }
}

/// One OTLP/gRPC export: the unary `TraceService/Export` call carrying the encoded request (the
/// channel bounds it by the export timeout); any OK status is success (the answer, a
/// partial-success report, is not read).
async fn grpc_export(
    channel: tonic::transport::Channel,
    metadata: tonic::metadata::MetadataMap,
    request: bytes::Bytes,
) -> Result<(), String> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| e.to_string())?;
    let mut call = tonic::Request::new(request);
    *call.metadata_mut() = metadata;
    grpc.unary(
        call,
        http::uri::PathAndQuery::from_static(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        ),
        RawCodec,
    )
    .await
    .map(|_| ())
    .map_err(|status| {
        format!(
            "the collector answered {:?}: {}",
            status.code(),
            status.message()
        )
    })
}

/// A gRPC codec for bytes already encoded: sent as they are, the answer read and discarded.
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = bytes::Bytes;
    type Decode = ();
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = bytes::Bytes;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: bytes::Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut as _;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = ();
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<()>, tonic::Status> {
        use bytes::Buf as _;
        src.advance(src.remaining());
        Ok(Some(()))
    }
}

/// One OTLP/HTTP export: any 2xx is success (the body, a partial-success report, is not read).
fn post(
    client: &reqwest::blocking::Client,
    url: &str,
    headers: &reqwest::header::HeaderMap,
    body: bytes::Bytes,
) -> Result<(), String> {
    let response = client
        .post(url)
        .headers(headers.clone())
        .body(body)
        .send()
        .map_err(|e| e.to_string())?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("the collector answered {status}"))
    }
}
