//! OpenTelemetry export (issue 15): GenAI spans and metrics over OTLP/HTTP (protobuf), to any
//! collector (`otel` callback) and to Langfuse (`langfuse`, `langfuse_otel`).
//!
//! On the request path only cheap records are kept: [`Telemetry::start_trace`] gives the request a
//! [`crate::context::Trace`] (continuing the client's `traceparent`), the exchange records each
//! upstream attempt ([`begin_attempt`] / [`end_attempt`]) and sends a `traceparent` naming it
//! upstream. At settle [`TelemetrySettle`] moves the finished record into a bounded queue
//! (`try_send`: a full queue drops it and counts the spans, never waits). One export thread
//! ([`export`]) writes the SERVER and CLIENT spans as OTLP protobuf ([`otlp`]) and records the
//! GenAI metrics from those records, and exports the spans in batches. With no telemetry callback
//! configured nothing of this exists: no stage, no record, no header.
//!
//! The exporter lives across reloads while its settings stay the same; a reload that changes
//! them starts a new one and the old one exports what it holds and stops once the last
//! generation using it is gone. [`flush`] (SIGTERM, upgrade) waits, bounded, for the queue to
//! be exported.

pub mod export;
pub mod finish;
pub mod metrics;
pub mod otlp;
pub mod propagation;
pub mod spans;

use crate::config::telemetry::{ParentlessSampler, Sampler, TelemetryConfig};
use crate::context::{AttemptRecord, Context, RequestParams, Trace};
use crate::openai::RequestBody;
use crate::pipeline::Settle;
use crate::router::Deployment;
use http::HeaderValue;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Spans dropped because the export queue was full (a slow or dead collector).
static DROPPED_QUEUE_FULL: AtomicU64 = AtomicU64::new(0);
/// Spans the exporter failed to deliver (collector down, refused, timed out).
static DROPPED_EXPORT_FAILED: AtomicU64 = AtomicU64::new(0);
/// Spans delivered.
static EXPORTED: AtomicU64 = AtomicU64::new(0);
/// Set once any exporter was configured: `/metrics` shows the counters from then on.
static EVER_ENABLED: AtomicBool = AtomicBool::new(false);

/// The exporter in use, with the settings it was built from (reused by reloads that keep them).
static CURRENT: Mutex<Option<Arc<Telemetry>>> = Mutex::new(None);

/// One configured exporter: its settings and the queue into its export thread.
pub struct Telemetry {
    pub config: TelemetryConfig,
    queue: SyncSender<export::Message>,
}

/// A finished request, as the export thread needs it.
pub struct Finished {
    pub trace: Trace,
    pub route: &'static str,
    pub model: Option<String>,
    pub deployment: Option<Arc<Deployment>>,
    pub status: u16,
    pub stream: bool,
    pub usage: Option<crate::openai::Usage>,
    pub cost: Option<f64>,
    pub ttft: Option<Duration>,
    pub duration: Duration,
    pub error: Option<String>,
    pub key: Option<Arc<crate::tenant::KeyEntry>>,
    pub end_user: Option<String>,
    pub fallback: Option<String>,
    pub client_disconnected: bool,
    /// The answer, when content capture is on and a stage kept it.
    pub answer: Option<bytes::Bytes>,
}

impl Finished {
    fn span_count(&self) -> u64 {
        1 + self.trace.attempts.len() as u64
    }
}

/// The exporter a config asks for: `None` when no telemetry callback is configured. The same
/// exporter is returned while the settings do not change.
pub fn for_config(config: &TelemetryConfig) -> Option<Arc<Telemetry>> {
    let mut current = CURRENT.lock().unwrap_or_else(|p| p.into_inner());
    if !config.enabled() {
        *current = None;
        return None;
    }
    if let Some(t) = current.as_ref().filter(|t| &t.config == config) {
        return Some(t.clone());
    }
    let t = match Telemetry::spawn(config.clone()) {
        Ok(t) => Arc::new(t),
        Err(e) => {
            log::error!("OpenTelemetry export could not start: {e}; telemetry is off");
            *current = None;
            return None;
        }
    };
    EVER_ENABLED.store(true, Ordering::Relaxed);
    *current = Some(t.clone());
    Some(t)
}

/// Exports everything queued so far (spans and metrics), waiting at most `timeout`. Called at
/// shutdown (SIGTERM, upgrade) once requests have drained. False when it did not finish in time.
pub fn flush(timeout: Duration) -> bool {
    let current = CURRENT.lock().unwrap_or_else(|p| p.into_inner()).clone();
    match current {
        Some(t) => t.flush(timeout),
        None => true,
    }
}

impl Telemetry {
    fn spawn(config: TelemetryConfig) -> std::io::Result<Telemetry> {
        let queue = export::spawn(config.clone())?;
        Ok(Telemetry { config, queue })
    }

    /// Waits (bounded) until what was queued before this call is exported.
    pub fn flush(&self, timeout: Duration) -> bool {
        let (ack, done) = std::sync::mpsc::sync_channel(1);
        let deadline = Instant::now() + timeout;
        // The queue may be full: retry until the deadline rather than block on it.
        let mut msg = export::Message::Flush(ack);
        loop {
            match self.queue.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Full(m)) if Instant::now() < deadline => {
                    msg = m;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return false,
            }
        }
        done.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
    }

    /// A new trace for a request: continues the client's `traceparent` (and keeps its
    /// `tracestate`), else starts one; the sampler decides whether its spans are exported.
    pub fn start_trace(&self, headers: &http::HeaderMap, ctx: &Context) -> Box<Trace> {
        let parent = headers
            .get("traceparent")
            .and_then(|v| propagation::parse(v.as_bytes()));
        let trace_id = parent
            .map(|p| p.trace_id)
            .unwrap_or_else(propagation::new_trace_id);
        let ratio = |r: f64| {
            // The low 8 bytes of a random trace id, as the SDKs' TraceIdRatioBased does.
            let low = u64::from_be_bytes(trace_id[8..].try_into().unwrap_or([0; 8]));
            ((low >> 1) as f64) < r * (1u64 << 63) as f64
        };
        let sampled = match (self.config.sampler, parent) {
            (Sampler::AlwaysOn, _) => true,
            (Sampler::AlwaysOff, _) => false,
            (Sampler::Ratio(r), _) => ratio(r),
            (Sampler::ParentBased(_), Some(p)) => p.sampled,
            (Sampler::ParentBased(ParentlessSampler::AlwaysOn), None) => true,
            (Sampler::ParentBased(ParentlessSampler::AlwaysOff), None) => false,
            (Sampler::ParentBased(ParentlessSampler::Ratio(r)), None) => ratio(r),
        };
        let elapsed = ctx.start.elapsed();
        Box::new(Trace {
            trace_id,
            span_id: propagation::new_span_id(),
            remote_parent: parent.map(|p| p.span_id),
            sampled,
            tracestate: parent.and_then(|_| headers.get("tracestate").cloned()),
            start: ctx.start,
            wall_start: SystemTime::now()
                .checked_sub(elapsed)
                .unwrap_or_else(SystemTime::now),
            attempts: smallvec::SmallVec::new(),
            params: RequestParams::default(),
            response_id: None,
            request_body: None,
            finish_reasons: Default::default(),
        })
    }
}

/// Records the GenAI request parameters from the body parsed once by the exchange (and the
/// body itself when content capture is on).
pub fn record_request(
    trace: &mut Trace,
    parsed: &RequestBody<'_>,
    body: &bytes::Bytes,
    capture: bool,
) {
    let num = |k: &str| parsed.get(k).and_then(|v| v.get().parse::<f64>().ok());
    let int = |k: &str| parsed.get(k).and_then(|v| v.get().parse::<u64>().ok());
    trace.params = RequestParams {
        max_tokens: int("max_completion_tokens").or_else(|| int("max_tokens")),
        temperature: num("temperature"),
        top_p: num("top_p"),
        top_k: num("top_k"),
        frequency_penalty: num("frequency_penalty"),
        presence_penalty: num("presence_penalty"),
        seed: parsed.get("seed").and_then(|v| v.get().parse::<i64>().ok()),
        choice_count: int("n"),
    };
    if capture {
        trace.request_body = Some(body.clone());
    }
}

/// An upstream attempt starts: records it and returns the `traceparent` naming its CLIENT span
/// (sent upstream with the trace's `tracestate`).
pub fn begin_attempt(trace: &mut Trace, deployment: &Arc<Deployment>) -> HeaderValue {
    let span_id = propagation::new_span_id();
    trace.attempts.push(AttemptRecord {
        span_id,
        deployment: deployment.clone(),
        start: Instant::now(),
        end: None,
        error: None,
    });
    let value = propagation::format(&trace.trace_id, &span_id, trace.sampled);
    HeaderValue::from_bytes(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The last attempt ended: `error` is the failed attempt's error.
pub fn end_attempt(trace: &mut Trace, error: Option<&crate::error::GatewayError>) {
    if let Some(a) = trace.attempts.last_mut() {
        if a.end.is_none() {
            a.end = Some(Instant::now());
            a.error = error.map(|e| (error_type(e.kind), e.status));
        }
    }
}

/// `error.type`: a short, fixed name per error kind.
pub fn error_type(kind: crate::error::ErrorKind) -> &'static str {
    use crate::error::ErrorKind::*;
    match kind {
        BadRequest => "bad_request",
        ContextLengthExceeded => "context_length_exceeded",
        ContentPolicy => "content_policy_violation",
        Authentication => "authentication_error",
        PermissionDenied => "permission_denied",
        NotFound => "not_found",
        MethodNotAllowed => "method_not_allowed",
        RequestTimeout => "request_timeout",
        Conflict => "conflict",
        PayloadTooLarge => "payload_too_large",
        Unprocessable => "unprocessable_entity",
        RateLimited => "rate_limited",
        Internal => "internal_error",
        BadGateway => "bad_gateway",
        Unavailable => "service_unavailable",
        Timeout => "timeout",
    }
}

/// The settle stage: hands the finished request to the export thread.
pub struct TelemetrySettle(pub Arc<Telemetry>);

impl Settle for TelemetrySettle {
    fn settle(&self, ctx: &Context) {
        let Some(trace) = ctx.trace.as_deref() else {
            return;
        };
        // LLM calls only: health probes, /metrics scrapes and admin calls are not GenAI spans.
        // (A request refused before its route was known has an empty route and is kept.)
        if matches!(
            ctx.route,
            "liveness"
                | "readiness"
                | "metrics"
                | "models"
                | "model"
                | "model_info"
                | "admin"
                | "cors_preflight"
        ) {
            return;
        }
        let finished = Box::new(Finished {
            trace: trace.clone(),
            route: ctx.route,
            model: ctx.model.clone(),
            deployment: ctx.deployment.clone(),
            status: ctx.status,
            stream: ctx.stream,
            usage: ctx.usage,
            cost: ctx.cost,
            ttft: ctx.ttft,
            duration: ctx.start.elapsed(),
            error: ctx.error.clone(),
            key: ctx.principal.key().cloned(),
            end_user: ctx.end_user.clone(),
            fallback: ctx.fallback.clone(),
            client_disconnected: ctx.client_disconnected,
            answer: if self.0.config.capture_content {
                ctx.answer.clone()
            } else {
                None
            },
        });
        let spans = if trace.sampled {
            finished.span_count()
        } else {
            0
        };
        match self.0.queue.try_send(export::Message::Request(finished)) {
            Ok(()) => {}
            Err(_) => {
                DROPPED_QUEUE_FULL.fetch_add(spans, Ordering::Relaxed);
            }
        }
    }
}

/// The export counters, in Prometheus text, for `/metrics` (once telemetry was configured).
pub fn render_metrics(out: &mut String) {
    use std::fmt::Write;
    if !EVER_ENABLED.load(Ordering::Relaxed) {
        return;
    }
    let _ = write!(
        out,
        "# HELP switchboard_otel_dropped_spans_total OpenTelemetry spans not delivered: the export queue was full (slow or dead collector) or the export failed.\n\
         # TYPE switchboard_otel_dropped_spans_total counter\n\
         switchboard_otel_dropped_spans_total{{reason=\"queue_full\"}} {}\n\
         switchboard_otel_dropped_spans_total{{reason=\"export_failed\"}} {}\n\
         # HELP switchboard_otel_exported_spans_total OpenTelemetry spans delivered to a collector.\n\
         # TYPE switchboard_otel_exported_spans_total counter\n\
         switchboard_otel_exported_spans_total {}\n",
        DROPPED_QUEUE_FULL.load(Ordering::Relaxed),
        DROPPED_EXPORT_FAILED.load(Ordering::Relaxed),
        EXPORTED.load(Ordering::Relaxed),
    );
}
