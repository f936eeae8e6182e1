//! The GenAI metrics (`gen_ai.server.request.duration`, `gen_ai.client.operation.duration`,
//! `gen_ai.client.token.usage`, `gen_ai.server.time_to_first_token`,
//! `gen_ai.server.time_per_output_token`), aggregated on the export thread from the finished
//! records and exported as OTLP cumulative histograms every `metric_interval`.
//!
//! A request costs one xxh3 hash of its operation, model and deployment, one map lookup and a
//! few bucket increments; the attribute sets are built only at export. (The SDK's instruments
//! hashed and compared every attribute set, from freshly allocated `KeyValue`s, on every
//! measurement.) The number of series is bounded: past [`MAX_SERIES`], measurements go to one
//! series marked `otel.metric.overflow`, as the SDK's cardinality limit does.

use super::otlp::unix_nanos;
use super::spans::{operation_name, provider_name};
use super::Finished;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, AggregationTemporality, Histogram, HistogramDataPoint, Metric, ResourceMetrics,
    ScopeMetrics,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;
use std::borrow::Cow;
use std::collections::HashMap;
use std::time::SystemTime;
use xxhash_rust::xxh3::Xxh3;

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

/// Distinct (operation, model, deployment) series kept; the rest share the overflow series.
pub const MAX_SERIES: usize = 2000;

/// A histogram with explicit bounds, cumulative since the exporter started.
struct Hist {
    /// `bounds.len() + 1` buckets; bucket i holds (bounds[i-1], bounds[i]].
    counts: Box<[u64]>,
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
}

impl Hist {
    fn new(bounds: &[f64]) -> Hist {
        Hist {
            counts: vec![0; bounds.len() + 1].into_boxed_slice(),
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }

    fn record(&mut self, bounds: &[f64], v: f64) {
        if !v.is_finite() {
            return;
        }
        self.counts[bounds.partition_point(|b| *b < v)] += 1;
        self.count += 1;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }
}

/// `error.type` of a request: its status, or the client going away.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RequestError {
    Status(u16),
    ClientDisconnected,
}

/// What a series is measured under.
struct Base {
    op: &'static str,
    model: Option<Box<str>>,
    provider: Option<Box<str>>,
    response_model: Option<Box<str>>,
}

impl Base {
    fn is(
        &self,
        op: &str,
        model: Option<&str>,
        provider: Option<&str>,
        response_model: Option<&str>,
    ) -> bool {
        self.op == op
            && self.model.as_deref() == model
            && self.provider.as_deref() == provider
            && self.response_model.as_deref() == response_model
    }
}

/// Every instrument's histograms under one [`Base`].
#[derive(Default)]
struct Series {
    request_duration: Vec<(Option<RequestError>, Hist)>,
    operation_duration: Vec<(Option<&'static str>, Hist)>,
    input_tokens: Option<Hist>,
    output_tokens: Option<Hist>,
    ttft: Option<Hist>,
    tpot: Option<Hist>,
}

fn hist_for<'a, K: PartialEq>(
    list: &'a mut Vec<(K, Hist)>,
    key: K,
    bounds: &[f64],
) -> &'a mut Hist {
    let i = match list.iter().position(|(k, _)| *k == key) {
        Some(i) => i,
        None => {
            list.push((key, Hist::new(bounds)));
            list.len() - 1
        }
    };
    &mut list[i].1
}

/// The aggregated metrics and what their export carries.
pub struct Metrics {
    /// xxh3 of a base → its positions in `series` (more than one only on a hash collision).
    index: HashMap<u64, smallvec::SmallVec<[usize; 1]>>,
    series: Vec<(Base, Series)>,
    overflow: Series,
    start_nanos: u64,
    resource: Resource,
    schema_url: String,
}

impl Metrics {
    pub fn new(resource: Resource, schema_url: String) -> Metrics {
        Metrics {
            index: HashMap::new(),
            series: Vec::new(),
            overflow: Series::default(),
            start_nanos: unix_nanos(SystemTime::now()),
            resource,
            schema_url,
        }
    }

    fn series(
        &mut self,
        op: &'static str,
        model: Option<&str>,
        provider: Option<&str>,
        response_model: Option<&str>,
    ) -> &mut Series {
        let mut h = Xxh3::new();
        for part in [Some(op), model, provider, response_model] {
            match part {
                Some(s) => {
                    h.update(&[1]);
                    h.update(&(s.len() as u64).to_le_bytes());
                    h.update(s.as_bytes());
                }
                None => h.update(&[0]),
            }
        }
        let hash = h.digest();
        let found = self.index.get(&hash).and_then(|slots| {
            slots
                .iter()
                .copied()
                .find(|&i| self.series[i].0.is(op, model, provider, response_model))
        });
        let i = match found {
            Some(i) => i,
            None if self.series.len() >= MAX_SERIES => return &mut self.overflow,
            None => {
                self.series.push((
                    Base {
                        op,
                        model: model.map(Into::into),
                        provider: provider.map(Into::into),
                        response_model: response_model.map(Into::into),
                    },
                    Series::default(),
                ));
                let i = self.series.len() - 1;
                self.index.entry(hash).or_default().push(i);
                i
            }
        };
        &mut self.series[i].1
    }

    /// Records a finished request's measurements.
    pub fn record(&mut self, f: &Finished) {
        let provider: Option<Cow<'static, str>> = f
            .deployment
            .as_ref()
            .map(|d| provider_name(d.provider.name()));
        let response_model = f.deployment.as_ref().map(|d| d.config.model.as_str());
        let s = self.series(
            operation_name(f.route),
            f.model.as_deref(),
            provider.as_deref(),
            response_model,
        );
        let ok = f.status > 0 && f.status < 400 && !f.client_disconnected;
        let error = match (ok, f.client_disconnected) {
            (true, _) => None,
            (false, true) => Some(RequestError::ClientDisconnected),
            (false, false) => Some(RequestError::Status(f.status)),
        };
        hist_for(&mut s.request_duration, error, &DURATION_BUCKETS)
            .record(&DURATION_BUCKETS, f.duration.as_secs_f64());
        for a in &f.trace.attempts {
            if let Some(end) = a.end {
                hist_for(
                    &mut s.operation_duration,
                    a.error.map(|(kind, _)| kind),
                    &DURATION_BUCKETS,
                )
                .record(
                    &DURATION_BUCKETS,
                    end.saturating_duration_since(a.start).as_secs_f64(),
                );
            }
        }
        let Some(u) = f.usage.filter(|_| ok) else {
            return;
        };
        let tokens = |h: &mut Option<Hist>, v: u64| {
            h.get_or_insert_with(|| Hist::new(&TOKEN_BUCKETS))
                .record(&TOKEN_BUCKETS, v as f64)
        };
        tokens(&mut s.input_tokens, u.prompt_tokens);
        tokens(&mut s.output_tokens, u.completion_tokens);
        if let (Some(ttft), true) = (f.ttft, f.stream) {
            s.ttft
                .get_or_insert_with(|| Hist::new(&TTFT_BUCKETS))
                .record(&TTFT_BUCKETS, ttft.as_secs_f64());
            if u.completion_tokens > 1 {
                let after = f.duration.saturating_sub(ttft).as_secs_f64();
                s.tpot
                    .get_or_insert_with(|| Hist::new(&TPOT_BUCKETS))
                    .record(&TPOT_BUCKETS, after / (u.completion_tokens - 1) as f64);
            }
        }
    }

    /// Nothing recorded yet: no export.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty() && self.overflow.request_duration.is_empty()
    }

    /// The `ExportMetricsServiceRequest` with every series so far (cumulative).
    pub fn request(&self) -> Vec<u8> {
        let now = unix_nanos(SystemTime::now());
        let point = |attributes: Vec<KeyValue>, h: &Hist, bounds: &[f64]| HistogramDataPoint {
            attributes,
            start_time_unix_nano: self.start_nanos,
            time_unix_nano: now,
            count: h.count,
            sum: Some(h.sum),
            bucket_counts: h.counts.to_vec(),
            explicit_bounds: bounds.to_vec(),
            exemplars: vec![],
            flags: 0,
            min: (h.count > 0).then_some(h.min),
            max: (h.count > 0).then_some(h.max),
        };
        let mut points: [Vec<HistogramDataPoint>; 5] = Default::default();
        let bases = self
            .series
            .iter()
            .map(|(b, s)| (base_attributes(Some(b)), s))
            .chain(std::iter::once((base_attributes(None), &self.overflow)));
        for (base, s) in bases {
            let with = |k: &str, v: String| {
                let mut a = base.clone();
                a.push(attr(k, any_value::Value::StringValue(v)));
                a
            };
            for (e, h) in &s.request_duration {
                let attrs = match e {
                    None => base.clone(),
                    Some(RequestError::Status(code)) => with("error.type", code.to_string()),
                    Some(RequestError::ClientDisconnected) => {
                        with("error.type", "client_disconnected".into())
                    }
                };
                points[0].push(point(attrs, h, &DURATION_BUCKETS));
            }
            for (e, h) in &s.operation_duration {
                let attrs = match e {
                    None => base.clone(),
                    Some(kind) => with("error.type", kind.to_string()),
                };
                points[1].push(point(attrs, h, &DURATION_BUCKETS));
            }
            for (kind, h) in [("input", &s.input_tokens), ("output", &s.output_tokens)] {
                if let Some(h) = h {
                    points[2].push(point(
                        with("gen_ai.token.type", kind.into()),
                        h,
                        &TOKEN_BUCKETS,
                    ));
                }
            }
            if let Some(h) = &s.ttft {
                points[3].push(point(base.clone(), h, &TTFT_BUCKETS));
            }
            if let Some(h) = &s.tpot {
                points[4].push(point(base.clone(), h, &TPOT_BUCKETS));
            }
        }
        let [request, operation, tokens, ttft, tpot] = points;
        let metrics = [
            (
                "gen_ai.server.request.duration",
                "Generative AI server request duration",
                "s",
                request,
            ),
            (
                "gen_ai.client.operation.duration",
                "GenAI operation duration (each upstream attempt)",
                "s",
                operation,
            ),
            (
                "gen_ai.client.token.usage",
                "Number of input and output tokens used",
                "{token}",
                tokens,
            ),
            (
                "gen_ai.server.time_to_first_token",
                "Time to generate first token for successful responses",
                "s",
                ttft,
            ),
            (
                "gen_ai.server.time_per_output_token",
                "Time per output token generated after the first token for successful responses",
                "s",
                tpot,
            ),
        ]
        .into_iter()
        .filter(|(.., p)| !p.is_empty())
        .map(|(name, description, unit, data_points)| Metric {
            name: name.into(),
            description: description.into(),
            unit: unit.into(),
            metadata: vec![],
            data: Some(metric::Data::Histogram(Histogram {
                data_points,
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            })),
        })
        .collect();
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(self.resource.clone()),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: "switchboard".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        attributes: vec![],
                        dropped_attributes_count: 0,
                    }),
                    metrics,
                    schema_url: String::new(),
                }],
                schema_url: self.schema_url.clone(),
            }],
        }
        .encode_to_vec()
    }
}

fn attr(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// A base's attributes; `None` is the overflow series.
fn base_attributes(base: Option<&Base>) -> Vec<KeyValue> {
    let Some(b) = base else {
        return vec![attr(
            "otel.metric.overflow",
            any_value::Value::BoolValue(true),
        )];
    };
    let s = |v: &str| any_value::Value::StringValue(v.to_string());
    let mut out = vec![attr("gen_ai.operation.name", s(b.op))];
    if let Some(m) = &b.model {
        out.push(attr("gen_ai.request.model", s(m)));
    }
    if let Some(p) = &b.provider {
        out.push(attr("gen_ai.provider.name", s(p)));
    }
    if let Some(m) = &b.response_model {
        out.push(attr("gen_ai.response.model", s(m)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_take_values_up_to_their_bound() {
        let mut h = Hist::new(&TOKEN_BUCKETS);
        for v in [0.5, 1.0, 1.5, 4.0, 5.0, 1e9] {
            h.record(&TOKEN_BUCKETS, v);
        }
        h.record(&TOKEN_BUCKETS, f64::NAN);
        assert_eq!(&h.counts[..4], &[2, 2, 1, 0]);
        assert_eq!(h.counts[TOKEN_BUCKETS.len()], 1);
        assert_eq!((h.count, h.min, h.max), (6, 0.5, 1e9));
    }

    #[test]
    fn series_are_bounded_and_the_rest_overflow() {
        let mut m = Metrics::new(Resource::default(), String::new());
        for i in 0..MAX_SERIES + 10 {
            let model = format!("m{i}");
            m.series("chat", Some(&model), None, None)
                .input_tokens
                .get_or_insert_with(|| Hist::new(&TOKEN_BUCKETS))
                .record(&TOKEN_BUCKETS, 1.0);
        }
        // The same model again finds its own series.
        m.series("chat", Some("m7"), None, None)
            .input_tokens
            .as_mut()
            .unwrap()
            .record(&TOKEN_BUCKETS, 1.0);
        assert_eq!(m.series.len(), MAX_SERIES);
        assert_eq!(m.series[7].1.input_tokens.as_ref().unwrap().count, 2);
        assert_eq!(m.overflow.input_tokens.as_ref().unwrap().count, 10);
        let req = ExportMetricsServiceRequest::decode(m.request().as_slice()).unwrap();
        let metric = &req.resource_metrics[0].scope_metrics[0].metrics[0];
        assert_eq!(metric.name, "gen_ai.client.token.usage");
        let Some(metric::Data::Histogram(h)) = &metric.data else {
            panic!("a histogram");
        };
        assert_eq!(h.data_points.len(), MAX_SERIES + 1);
        let overflow = h.data_points.last().unwrap();
        assert_eq!(overflow.attributes[0].key, "otel.metric.overflow");
        assert_eq!(overflow.count, 10);
    }
}
