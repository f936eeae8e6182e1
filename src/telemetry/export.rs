//! The export thread: takes finished requests off the bounded queue, writes their spans as OTLP
//! protobuf ([`otlp`]) and adds their measurements to the GenAI histograms ([`Metrics`]). Spans
//! go out in batches (at `max_batch` spans or after `schedule_delay`), metrics every
//! `metric_interval`. Each export request is encoded once and sent to each target with exactly
//! that target's headers: POSTed over OTLP/HTTP, or as the gRPC `Export` call on a tonic channel
//! running on a one-thread Tokio runtime that exists only when a gRPC target does. Its own OS
//! thread, so the blocking HTTP client never runs on a request worker; a slow or dead collector
//! holds up only this thread (each export bounded by the export timeout) while the queue fills
//! and further requests are dropped and counted by the settle stage. Metrics are sent from a
//! thread of their own ([`MetricsSender`]), so a hung metrics endpoint never holds up spans.

use super::metrics::Metrics;
use super::{otlp, spans, Finished, DROPPED_EXPORT_FAILED, EXPORTED};
use crate::config::telemetry::{ExportTarget, OtlpProtocol, TelemetryConfig};
use opentelemetry::KeyValue;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_sdk::Resource;
use prost::Message as _;
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

/// An HTTP client for the exports: rustls on the ring provider the gateway already uses,
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

/// Where one target's spans, or its metrics, go.
enum Sink {
    /// OTLP/HTTP protobuf, POSTed from this thread with exactly the target's headers.
    Http {
        name: &'static str,
        url: String,
        headers: reqwest::header::HeaderMap,
    },
    /// OTLP/gRPC: the encoded request as the service's `Export` call.
    Grpc {
        name: &'static str,
        channel: tonic::transport::Channel,
        metadata: tonic::metadata::MetadataMap,
    },
}

/// The gRPC methods the encoded requests are sent to.
const TRACES_EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
const METRICS_EXPORT: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";

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
fn grpc_metadata(target: &ExportTarget) -> Result<tonic::metadata::MetadataMap, String> {
    let mut headers = http::HeaderMap::new();
    for (k, v) in &target.headers {
        let name = http::HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| format!("{}: header name {k:?} is not valid", target.name))?;
        let value = http::HeaderValue::from_str(v)
            .map_err(|_| format!("{}: the value of header {k:?} is not valid", target.name))?;
        headers.append(name, value);
    }
    Ok(tonic::metadata::MetadataMap::from_headers(headers))
}

/// TLS for an https gRPC endpoint: the system's roots.
fn grpc_tls(url: &str) -> Option<tonic::transport::ClientTlsConfig> {
    url.starts_with("https://")
        .then(|| tonic::transport::ClientTlsConfig::new().with_native_roots())
}

/// The sink for one target's `url` (its traces or its metrics endpoint).
fn sink(target: &ExportTarget, url: &str, config: &TelemetryConfig) -> Result<Sink, String> {
    match target.protocol {
        OtlpProtocol::HttpProtobuf => Ok(Sink::Http {
            name: target.name,
            url: url.to_string(),
            headers: http_headers(target)?,
        }),
        OtlpProtocol::Grpc => {
            let invalid = |e: tonic::transport::Error| format!("{}: {e}", target.name);
            let mut endpoint = tonic::transport::Endpoint::from_shared(url.to_string())
                .map_err(invalid)?
                .connect_timeout(config.export_timeout)
                .timeout(config.export_timeout);
            if let Some(tls) = grpc_tls(url) {
                endpoint = endpoint.tls_config(tls).map_err(invalid)?;
            }
            Ok(Sink::Grpc {
                name: target.name,
                channel: endpoint.connect_lazy(),
                metadata: grpc_metadata(target)?,
            })
        }
    }
}

/// How an encoded request reaches a sink: the blocking HTTP client, and the runtime the gRPC
/// channels run on (present only when a target speaks gRPC).
#[derive(Clone)]
struct Transport {
    client: reqwest::blocking::Client,
    grpc: Option<tokio::runtime::Handle>,
}

/// What the export thread sends through.
struct Exporters {
    transport: Transport,
    spans: Vec<Sink>,
    /// The metrics sender thread, when some target takes metrics.
    metrics: Option<MetricsSender>,
    envelope: otlp::Envelope,
    /// Owns the gRPC runtime; dropped after the metrics sender has stopped.
    _grpc_runtime: Option<tokio::runtime::Runtime>,
}

/// Metrics leave from their own thread, so a metrics endpoint that hangs never holds up the
/// spans (each send is still bounded by the export timeout).
struct MetricsSender {
    jobs: SyncSender<MetricsJob>,
    thread: std::thread::JoinHandle<()>,
}

/// One metrics export: the encoded request, and whom to tell when it was sent (a flush).
struct MetricsJob {
    request: bytes::Bytes,
    done: Option<SyncSender<()>>,
}

impl MetricsSender {
    fn spawn(transport: Transport, sinks: Vec<Sink>) -> std::io::Result<MetricsSender> {
        // One waiting export at most: cumulative, so a skipped one loses nothing.
        let (jobs, rx) = std::sync::mpsc::sync_channel::<MetricsJob>(1);
        let thread = std::thread::Builder::new()
            .name("switchboard-otel-metrics".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    for sink in &sinks {
                        send_metrics(&transport, sink, job.request.clone());
                    }
                    if let Some(done) = job.done {
                        let _ = done.try_send(());
                    }
                }
            })?;
        Ok(MetricsSender { jobs, thread })
    }

    /// Stops the thread once what it holds is sent (bounded by the export timeout).
    fn stop(self) {
        drop(self.jobs);
        let _ = self.thread.join();
    }
}

fn exporters(config: &TelemetryConfig, resource: &Resource) -> Result<Exporters, String> {
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
    let spans = config
        .targets
        .iter()
        .map(|t| sink(t, &t.traces_endpoint, config))
        .collect::<Result<Vec<_>, _>>()?;
    let metrics = config
        .targets
        .iter()
        .filter_map(|t| t.metrics_endpoint.as_ref().map(|url| sink(t, url, config)))
        .collect::<Result<Vec<_>, _>>()?;
    drop(_in_runtime);
    let transport = Transport {
        client,
        grpc: grpc.as_ref().map(|rt| rt.handle().clone()),
    };
    let metrics = if metrics.is_empty() {
        None
    } else {
        Some(
            MetricsSender::spawn(transport.clone(), metrics)
                .map_err(|e| format!("the metrics thread could not start: {e}"))?,
        )
    };
    Ok(Exporters {
        transport,
        spans,
        metrics,
        envelope: envelope(resource),
        _grpc_runtime: grpc,
    })
}

/// The service resource as OTLP carries it, and its schema URL.
fn resource_proto(
    resource: &Resource,
) -> (opentelemetry_proto::tonic::resource::v1::Resource, String) {
    let with_schema = ResourceAttributesWithSchema::from(resource);
    (
        opentelemetry_proto::tonic::resource::v1::Resource {
            attributes: with_schema.attributes.0,
            dropped_attributes_count: 0,
            entity_refs: vec![],
        },
        with_schema.schema_url.unwrap_or_default(),
    )
}

/// The resource and scope every export carries, encoded once.
fn envelope(resource: &Resource) -> otlp::Envelope {
    use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
    let (resource, schema_url) = resource_proto(resource);
    otlp::Envelope {
        resource: resource.encode_to_vec(),
        scope: InstrumentationScope {
            name: "switchboard".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            attributes: vec![],
            dropped_attributes_count: 0,
        }
        .encode_to_vec(),
        schema_url,
    }
}

/// How long the export thread lets requests queue up after it wakes (see [`run`]).
const GATHER: Duration = Duration::from_millis(10);

fn run(config: TelemetryConfig, rx: Receiver<Message>) {
    let resource = resource(&config);
    let mut exporters = match exporters(&config, &resource) {
        Ok(e) => Some(e),
        Err(e) => {
            log::error!("OpenTelemetry exporter could not be built: {e}; spans are dropped");
            None
        }
    };
    // Metrics are aggregated only when some target takes them.
    let mut metrics = exporters.as_ref().filter(|e| e.metrics.is_some()).map(|_| {
        let (resource, schema_url) = resource_proto(&resource);
        Metrics::new(resource, schema_url)
    });
    let mut metrics_due = metrics
        .as_ref()
        .map(|_| Instant::now() + config.metric_interval);
    let mut batch = otlp::Batch::default();
    let mut due: Option<Instant> = None;
    // After a wake-up, the thread sleeps for `GATHER` and then takes everything queued
    // meanwhile without blocking: a request's `try_send` then finds no receiver waiting and
    // wakes no thread, instead of one futex wake and context switch per request.
    let mut gathered = false;
    loop {
        let now = Instant::now();
        if due.is_some_and(|at| now >= at) {
            export_spans(&exporters, &mut batch);
            due = None;
        }
        if let Some(at) = metrics_due.filter(|at| now >= *at) {
            export_metrics(&exporters, metrics.as_ref(), None);
            // The next interval from its due time, or from now when the export overran it.
            metrics_due = Some((at + config.metric_interval).max(Instant::now()));
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
            let wake = match (due, metrics_due) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let msg = match wake {
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
                if let Some(m) = &mut metrics {
                    m.record(&f);
                }
                if f.trace.sampled {
                    spans::build(&f, &config, &mut batch);
                }
                if batch.len() >= config.max_batch {
                    export_spans(&exporters, &mut batch);
                    due = None;
                } else if due.is_none() && !batch.is_empty() {
                    due = Some(Instant::now() + config.schedule_delay);
                }
            }
            Ok(Message::Flush(ack)) => {
                export_spans(&exporters, &mut batch);
                due = None;
                export_metrics(&exporters, metrics.as_ref(), Some(config.export_timeout));
                let _ = ack.try_send(());
            }
            // A timer is due: the top of the loop exports.
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                // The last generation using this exporter is gone: export what is left.
                export_spans(&exporters, &mut batch);
                export_metrics(&exporters, metrics.as_ref(), Some(config.export_timeout));
                if let Some(sender) = exporters.as_mut().and_then(|e| e.metrics.take()) {
                    sender.stop();
                }
                return;
            }
        }
    }
}

/// The last export failed (a warning is logged when this turns on).
static FAILING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Sends the batch to every target, counting the outcome per target.
fn export_spans(exporters: &Option<Exporters>, batch: &mut otlp::Batch) {
    if batch.is_empty() {
        return;
    }
    let n = batch.len() as u64;
    let Some(ex) = exporters.as_ref().filter(|e| !e.spans.is_empty()) else {
        DROPPED_EXPORT_FAILED.fetch_add(n, Ordering::Relaxed);
        batch.clear();
        return;
    };
    // The ExportTraceServiceRequest: the OTLP/HTTP body and the gRPC message alike.
    let request = bytes::Bytes::from(batch.take_request(&ex.envelope));
    for sink in &ex.spans {
        match ex.transport.send(sink, TRACES_EXPORT, request.clone()) {
            Ok(()) => {
                EXPORTED.fetch_add(n, Ordering::Relaxed);
                FAILING.store(false, Ordering::Relaxed);
            }
            Err(err) => {
                DROPPED_EXPORT_FAILED.fetch_add(n, Ordering::Relaxed);
                // Once per outage, not once per batch.
                if !FAILING.swap(true, Ordering::Relaxed) {
                    log::warn!("OpenTelemetry export to {} failed ({err}); spans are dropped and counted in switchboard_otel_dropped_spans_total until it recovers", sink.name());
                }
            }
        }
    }
}

/// The last metrics export failed (a warning is logged when this turns on).
static METRICS_FAILING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Hands the cumulative metrics to the metrics thread. Periodically (`wait` `None`) an export
/// is skipped when the previous one is still being sent (the next carries the same
/// measurements and more); a flush (`wait` `Some`) waits, bounded, until they are sent.
fn export_metrics(
    exporters: &Option<Exporters>,
    metrics: Option<&Metrics>,
    wait: Option<Duration>,
) {
    let (Some(sender), Some(metrics)) =
        (exporters.as_ref().and_then(|e| e.metrics.as_ref()), metrics)
    else {
        return;
    };
    if metrics.is_empty() {
        return;
    }
    let request = bytes::Bytes::from(metrics.request());
    let Some(wait) = wait else {
        let _ = sender.jobs.try_send(MetricsJob {
            request,
            done: None,
        });
        return;
    };
    let deadline = Instant::now() + wait;
    let (done, sent) = std::sync::mpsc::sync_channel(1);
    let mut job = MetricsJob {
        request,
        done: Some(done),
    };
    loop {
        match sender.jobs.try_send(job) {
            Ok(()) => break,
            Err(std::sync::mpsc::TrySendError::Full(j)) if Instant::now() < deadline => {
                job = j;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => return,
        }
    }
    let _ = sent.recv_timeout(deadline.saturating_duration_since(Instant::now()));
}

/// One metrics export to one sink, its failure logged once per outage.
fn send_metrics(transport: &Transport, sink: &Sink, request: bytes::Bytes) {
    match transport.send(sink, METRICS_EXPORT, request) {
        Ok(()) => METRICS_FAILING.store(false, Ordering::Relaxed),
        Err(err) => {
            // Cumulative: the next export carries these measurements again.
            if !METRICS_FAILING.swap(true, Ordering::Relaxed) {
                log::warn!(
                    "OpenTelemetry metrics export to {} failed ({err}); retried at the next interval",
                    sink.name()
                );
            }
        }
    }
}

impl Sink {
    fn name(&self) -> &'static str {
        match self {
            Sink::Http { name, .. } | Sink::Grpc { name, .. } => name,
        }
    }
}

impl Transport {
    /// One export of an encoded request to one sink (`method`: its gRPC method).
    fn send(&self, sink: &Sink, method: &'static str, request: bytes::Bytes) -> Result<(), String> {
        match sink {
            Sink::Grpc {
                channel, metadata, ..
            } => match &self.grpc {
                Some(rt) => rt.block_on(grpc_export(
                    channel.clone(),
                    metadata.clone(),
                    method,
                    request,
                )),
                None => Err("no gRPC runtime".to_string()),
            },
            Sink::Http { url, headers, .. } => post(&self.client, url, headers, request),
        }
    }
}

/// One OTLP/gRPC export: the unary `Export` call carrying the encoded request (the
/// channel bounds it by the export timeout); any OK status is success (the answer, a
/// partial-success report, is not read).
async fn grpc_export(
    channel: tonic::transport::Channel,
    metadata: tonic::metadata::MetadataMap,
    method: &'static str,
    request: bytes::Bytes,
) -> Result<(), String> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| e.to_string())?;
    let mut call = tonic::Request::new(request);
    *call.metadata_mut() = metadata;
    grpc.unary(call, http::uri::PathAndQuery::from_static(method), RawCodec)
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
