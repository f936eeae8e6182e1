//! OTLP trace protobuf written straight from our finished records: a batch is one growing byte
//! buffer of encoded `Span` messages, wrapped at export into an `ExportTraceServiceRequest`
//! (one resource, one scope) whose bytes are both the OTLP/HTTP body and the gRPC message.
//!
//! This replaces building the SDK's `SpanData` (a `KeyValue` allocation per attribute), the
//! SDK's conversion to the generated protobuf structs (more allocations and a hash map keyed by
//! scope) and prost's length pass plus encoding pass: here each attribute is written once, its
//! lengths computed from the strings it already has. Field numbers are those of
//! `opentelemetry/proto/trace/v1/trace.proto` and `common/v1/common.proto`; the tests decode the
//! output with the generated types.

use std::time::SystemTime;

const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;
const FIXED32: u32 = 5;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_tag(out: &mut Vec<u8>, field: u32, wire: u32) {
    put_varint(out, u64::from(field << 3 | wire));
}

/// A length-delimited field's size on the wire (one-byte tag: every field here is < 16).
fn delimited_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_tag(out, field, LEN);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// An attribute value (`AnyValue`).
#[derive(Clone, Copy, Debug)]
pub enum Val<'a> {
    Str(&'a str),
    Bool(bool),
    Int(i64),
    Double(f64),
    StrArray(&'a [&'a str]),
}

impl Val<'_> {
    /// The encoded `AnyValue` message's length.
    fn len(&self) -> usize {
        match self {
            Val::Str(s) => delimited_len(s.len()),
            Val::Bool(_) => 2,
            Val::Int(i) => 1 + varint_len(*i as u64),
            Val::Double(_) => 9,
            Val::StrArray(items) => delimited_len(array_len(items)),
        }
    }

    fn put(&self, out: &mut Vec<u8>) {
        match *self {
            Val::Str(s) => put_bytes(out, 1, s.as_bytes()),
            Val::Bool(b) => {
                put_tag(out, 2, VARINT);
                out.push(b as u8);
            }
            Val::Int(i) => {
                put_tag(out, 3, VARINT);
                put_varint(out, i as u64);
            }
            Val::Double(d) => {
                put_tag(out, 4, FIXED64);
                out.extend_from_slice(&d.to_le_bytes());
            }
            Val::StrArray(items) => {
                put_tag(out, 5, LEN);
                put_varint(out, array_len(items) as u64);
                for s in items {
                    // ArrayValue.values = 1, each an AnyValue with string_value = 1.
                    put_tag(out, 1, LEN);
                    put_varint(out, delimited_len(s.len()) as u64);
                    put_bytes(out, 1, s.as_bytes());
                }
            }
        }
    }
}

/// The `ArrayValue` message's length for strings.
fn array_len(items: &[&str]) -> usize {
    items
        .iter()
        .map(|s| delimited_len(delimited_len(s.len())))
        .sum()
}

/// Writes a `KeyValue` as field `field` of the enclosing message.
fn put_attribute(out: &mut Vec<u8>, field: u32, key: &str, value: Val<'_>) {
    let value_len = value.len();
    put_tag(out, field, LEN);
    put_varint(
        out,
        (delimited_len(key.len()) + delimited_len(value_len)) as u64,
    );
    put_bytes(out, 1, key.as_bytes());
    put_tag(out, 2, LEN);
    put_varint(out, value_len as u64);
    value.put(out);
}

/// `SpanKind`.
#[derive(Clone, Copy)]
pub enum Kind {
    Server = 2,
    Client = 3,
}

/// `SpanFlags`: the W3C trace flags, and whether the parent is known to be remote.
pub fn span_flags(sampled: bool, parent_is_remote: bool) -> u32 {
    const HAS_IS_REMOTE: u32 = 0x100;
    const IS_REMOTE: u32 = 0x200;
    u32::from(sampled) | HAS_IS_REMOTE | if parent_is_remote { IS_REMOTE } else { 0 }
}

/// Nanoseconds since the Unix epoch, as OTLP timestamps are (0 before it).
pub(super) fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Encoded spans waiting for export.
#[derive(Default)]
pub struct Batch {
    /// `ScopeSpans.spans` fields, each a whole `Span`.
    spans: Vec<u8>,
    count: usize,
    /// The span being written.
    scratch: Vec<u8>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Drops the spans written so far.
    pub fn clear(&mut self) {
        self.spans.clear();
        self.count = 0;
    }

    /// Starts a span; it joins the batch when [`SpanWriter::finish`] is called.
    pub fn span(&mut self) -> SpanWriter<'_> {
        self.scratch.clear();
        SpanWriter { batch: self }
    }

    /// The `ExportTraceServiceRequest` holding every span of the batch under `envelope`'s
    /// resource and scope; the batch is left empty (its buffers kept for the next one).
    pub fn take_request(&mut self, envelope: &Envelope) -> Vec<u8> {
        let scope_spans = delimited_len(envelope.scope.len()) + self.spans.len();
        let resource_spans = delimited_len(envelope.resource.len())
            + delimited_len(scope_spans)
            + if envelope.schema_url.is_empty() {
                0
            } else {
                delimited_len(envelope.schema_url.len())
            };
        let mut out = Vec::with_capacity(delimited_len(resource_spans));
        // ExportTraceServiceRequest.resource_spans = 1
        put_tag(&mut out, 1, LEN);
        put_varint(&mut out, resource_spans as u64);
        // ResourceSpans.resource = 1, .scope_spans = 2, .schema_url = 3
        put_bytes(&mut out, 1, &envelope.resource);
        put_tag(&mut out, 2, LEN);
        put_varint(&mut out, scope_spans as u64);
        // ScopeSpans.scope = 1, .spans = 2 (already tagged)
        put_bytes(&mut out, 1, &envelope.scope);
        out.extend_from_slice(&self.spans);
        if !envelope.schema_url.is_empty() {
            put_bytes(&mut out, 3, envelope.schema_url.as_bytes());
        }
        self.clear();
        out
    }
}

/// What every export request carries around its spans: the encoded `Resource` and
/// `InstrumentationScope`, and the resource's schema URL.
pub struct Envelope {
    pub resource: Vec<u8>,
    pub scope: Vec<u8>,
    pub schema_url: String,
}

/// One span being written into a [`Batch`]. Fields may come in any order (protobuf allows it).
pub struct SpanWriter<'a> {
    batch: &'a mut Batch,
}

impl SpanWriter<'_> {
    /// Trace and span ids, the parent (absent for a root), `tracestate` and flags.
    pub fn ids(
        &mut self,
        trace_id: &[u8; 16],
        span_id: &[u8; 8],
        parent: Option<&[u8; 8]>,
        trace_state: &str,
        flags: u32,
    ) -> &mut Self {
        let out = &mut self.batch.scratch;
        put_bytes(out, 1, trace_id);
        put_bytes(out, 2, span_id);
        if !trace_state.is_empty() {
            put_bytes(out, 3, trace_state.as_bytes());
        }
        if let Some(p) = parent {
            put_bytes(out, 4, p);
        }
        put_tag(out, 16, FIXED32);
        out.extend_from_slice(&flags.to_le_bytes());
        self
    }

    /// The name `{op} {model}`, or `{op}` without a model.
    pub fn name(&mut self, op: &str, model: &str) -> &mut Self {
        let out = &mut self.batch.scratch;
        put_tag(out, 5, LEN);
        if model.is_empty() {
            put_varint(out, op.len() as u64);
            out.extend_from_slice(op.as_bytes());
        } else {
            put_varint(out, (op.len() + 1 + model.len()) as u64);
            out.extend_from_slice(op.as_bytes());
            out.push(b' ');
            out.extend_from_slice(model.as_bytes());
        }
        self
    }

    pub fn kind(&mut self, kind: Kind) -> &mut Self {
        put_tag(&mut self.batch.scratch, 6, VARINT);
        put_varint(&mut self.batch.scratch, kind as u64);
        self
    }

    pub fn times(&mut self, start: SystemTime, end: SystemTime) -> &mut Self {
        let out = &mut self.batch.scratch;
        put_tag(out, 7, FIXED64);
        out.extend_from_slice(&unix_nanos(start).to_le_bytes());
        put_tag(out, 8, FIXED64);
        out.extend_from_slice(&unix_nanos(end).to_le_bytes());
        self
    }

    pub fn attr(&mut self, key: &str, value: Val<'_>) -> &mut Self {
        put_attribute(&mut self.batch.scratch, 9, key, value);
        self
    }

    pub fn str(&mut self, key: &str, value: &str) -> &mut Self {
        self.attr(key, Val::Str(value))
    }

    pub fn int(&mut self, key: &str, value: i64) -> &mut Self {
        self.attr(key, Val::Int(value))
    }

    pub fn double(&mut self, key: &str, value: f64) -> &mut Self {
        self.attr(key, Val::Double(value))
    }

    /// The status: `Some(description)` is an error, `None` unset.
    pub fn status(&mut self, error: Option<&str>) -> &mut Self {
        let out = &mut self.batch.scratch;
        put_tag(out, 15, LEN);
        match error {
            None => put_varint(out, 0),
            Some(message) => {
                // Status.message = 2, .code = 3 (STATUS_CODE_ERROR = 2)
                let message_len = if message.is_empty() {
                    0
                } else {
                    delimited_len(message.len())
                };
                put_varint(out, (message_len + 2) as u64);
                if !message.is_empty() {
                    put_bytes(out, 2, message.as_bytes());
                }
                put_tag(out, 3, VARINT);
                out.push(2);
            }
        }
        self
    }

    /// Adds the span to the batch.
    pub fn finish(self) {
        let batch = self.batch;
        put_bytes(&mut batch.spans, 2, &batch.scratch);
        batch.count += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    use prost::Message as _;
    use std::time::Duration;

    #[test]
    fn varint_lengths() {
        for v in [0u64, 1, 127, 128, 16383, 16384, u32::MAX as u64, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "{v}");
        }
    }

    #[test]
    fn a_batch_decodes_as_the_generated_messages() {
        let envelope = Envelope {
            resource: opentelemetry_proto::tonic::resource::v1::Resource {
                attributes: vec![opentelemetry_proto::tonic::common::v1::KeyValue {
                    key: "service.name".into(),
                    value: Some(opentelemetry_proto::tonic::common::v1::AnyValue {
                        value: Some(Any::StringValue("sb".into())),
                    }),
                    ..Default::default()
                }],
                dropped_attributes_count: 0,
                entity_refs: vec![],
            }
            .encode_to_vec(),
            scope: opentelemetry_proto::tonic::common::v1::InstrumentationScope {
                name: "switchboard".into(),
                version: "1".into(),
                attributes: vec![],
                dropped_attributes_count: 0,
            }
            .encode_to_vec(),
            schema_url: String::new(),
        };
        let mut batch = Batch::default();
        let start = SystemTime::UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        let long = "é".repeat(300);
        let reasons = ["stop", "length"];
        for round in 0..2 {
            let mut s = batch.span();
            s.ids(
                &[7; 16],
                &[3; 8],
                Some(&[9; 8]),
                "a=b",
                span_flags(true, true),
            )
            .name("chat", &long)
            .kind(Kind::Server)
            .times(start, start + Duration::from_millis(5))
            .str("gen_ai.request.model", &long)
            .int("negative", -5)
            .int("big", i64::MAX)
            .double("gen_ai.usage.cost", 0.25)
            .attr("flag", Val::Bool(true))
            .attr("gen_ai.response.finish_reasons", Val::StrArray(&reasons))
            .attr("empty", Val::Str(""))
            .status(Some("upstream failed"));
            s.finish();
            let mut s = batch.span();
            s.ids(&[7; 16], &[4; 8], None, "", span_flags(false, false))
                .name("chat", "")
                .kind(Kind::Client)
                .times(start, start)
                .status(if round == 0 { None } else { Some("") });
            s.finish();
            assert_eq!(batch.len(), 2);
            let bytes = batch.take_request(&envelope);
            assert!(batch.is_empty());
            let req = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
            assert_eq!(req.resource_spans.len(), 1);
            let rs = &req.resource_spans[0];
            assert_eq!(
                rs.resource.as_ref().unwrap().attributes[0].key,
                "service.name"
            );
            let ss = &rs.scope_spans[0];
            assert_eq!(ss.scope.as_ref().unwrap().name, "switchboard");
            assert_eq!(ss.spans.len(), 2);
            let server = &ss.spans[0];
            assert_eq!(server.trace_id, vec![7; 16]);
            assert_eq!(server.span_id, vec![3; 8]);
            assert_eq!(server.parent_span_id, vec![9; 8]);
            assert_eq!(server.trace_state, "a=b");
            assert_eq!(server.flags, 0x301);
            assert_eq!(server.name, format!("chat {long}"));
            assert_eq!(server.kind, 2);
            assert_eq!(server.start_time_unix_nano, 1_700_000_000_123_456_789);
            assert_eq!(server.end_time_unix_nano, 1_700_000_000_128_456_789);
            let attr = |k: &str| {
                server
                    .attributes
                    .iter()
                    .find(|a| a.key == k)
                    .and_then(|a| a.value.clone())
                    .and_then(|v| v.value)
                    .unwrap_or_else(|| panic!("{k} missing"))
            };
            assert_eq!(attr("gen_ai.request.model"), Any::StringValue(long.clone()));
            assert_eq!(attr("negative"), Any::IntValue(-5));
            assert_eq!(attr("big"), Any::IntValue(i64::MAX));
            assert_eq!(attr("gen_ai.usage.cost"), Any::DoubleValue(0.25));
            assert_eq!(attr("flag"), Any::BoolValue(true));
            assert_eq!(attr("empty"), Any::StringValue(String::new()));
            match attr("gen_ai.response.finish_reasons") {
                Any::ArrayValue(a) => {
                    let items: Vec<_> = a.values.into_iter().map(|v| v.value.unwrap()).collect();
                    assert_eq!(
                        items,
                        [
                            Any::StringValue("stop".into()),
                            Any::StringValue("length".into())
                        ]
                    );
                }
                other => panic!("{other:?}"),
            }
            let status = server.status.as_ref().unwrap();
            assert_eq!(
                (status.code, status.message.as_str()),
                (2, "upstream failed")
            );
            let client = &ss.spans[1];
            assert!(client.parent_span_id.is_empty() && client.trace_state.is_empty());
            assert_eq!(
                (client.name.as_str(), client.kind, client.flags),
                ("chat", 3, 0x100)
            );
            let status = client.status.as_ref().unwrap();
            assert_eq!(status.code, if round == 0 { 0 } else { 2 });
            assert_eq!(status.message, "");
        }
    }
}
