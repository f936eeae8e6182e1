//! The per-request context: everything one client request is and did, filled in as it goes by
//! the stages (who is calling, what was asked), the exchange (which deployment answered,
//! attempts, timings) and the response sink (status, usage), then read once at the end by
//! settlement (metrics, access log). Nothing downstream re-derives what is recorded here.
//!
//! A leaf module: it names router and protocol types but nothing imports back into it from
//! there, and it knows nothing of Pingora's `Session`.

use crate::openai::Usage;
use crate::router::Deployment;
use bytes::{Bytes, BytesMut};
use http::HeaderValue;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Who is calling, as established by the `authenticate` stage.
#[derive(Debug, Clone, Default)]
pub enum Principal {
    /// Not authenticated (yet), or a route that needs no key.
    #[default]
    Anonymous,
    /// No `general_settings.master_key` is configured: every caller is let in.
    Open,
    /// The caller presented the gateway's master key.
    MasterKey,
    /// The caller presented a virtual key (`/key/generate`), found in the key store.
    VirtualKey(Arc<crate::tenant::KeyEntry>),
}

impl Principal {
    pub fn as_str(&self) -> &'static str {
        match self {
            Principal::Anonymous => "anonymous",
            Principal::Open => "open",
            Principal::MasterKey => "master_key",
            Principal::VirtualKey(_) => "virtual_key",
        }
    }

    /// The virtual key, when the caller used one.
    pub fn key(&self) -> Option<&Arc<crate::tenant::KeyEntry>> {
        match self {
            Principal::VirtualKey(k) => Some(k),
            _ => None,
        }
    }
}

impl PartialEq for Principal {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Principal::VirtualKey(a), Principal::VirtualKey(b)) => Arc::ptr_eq(a, b),
            _ => std::mem::discriminant(self) == std::mem::discriminant(other),
        }
    }
}

impl Eq for Principal {}

/// What the response cache did for this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheStatus {
    /// No cache stage is configured (or the route is not cacheable).
    #[default]
    NotConfigured,
    Miss,
    Hit,
}

/// The API the client speaks, which decides the shape of gateway-made errors (and stream error
/// events): set by route, before anything can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Wire {
    /// OpenAI's `{"error":{"message","type","param","code"}}`.
    #[default]
    OpenAi,
    /// Anthropic's `{"type":"error","error":{"type","message"}}` (`/v1/messages`).
    Anthropic,
}

/// A request id held inline: the client's `x-request-id` (≤ 128 printable ASCII bytes) or a
/// generated UUIDv4, without a heap allocation per request.
#[derive(Clone, Copy)]
pub struct RequestId {
    len: u8,
    buf: [u8; RequestId::MAX],
}

impl RequestId {
    /// Longest client-supplied id kept; longer ones are replaced by a generated id.
    pub const MAX: usize = 128;

    /// The client's id when it is a sane token (1–128 printable ASCII bytes, no spaces).
    pub fn from_client(s: &[u8]) -> Option<RequestId> {
        if s.is_empty() || s.len() > Self::MAX || !s.iter().all(|b| b.is_ascii_graphic()) {
            return None;
        }
        let mut id = RequestId::empty();
        id.buf[..s.len()].copy_from_slice(s);
        id.len = s.len() as u8;
        Some(id)
    }

    /// A new random UUIDv4-formatted id.
    pub fn generate() -> RequestId {
        let mut id = RequestId::empty();
        write_uuid(&mut id.buf[..36]);
        id.len = 36;
        id
    }

    fn empty() -> RequestId {
        RequestId {
            len: 0,
            buf: [0; Self::MAX],
        }
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII is ever stored.
        std::str::from_utf8(&self.buf[..self.len as usize]).unwrap_or("")
    }
}

impl Default for RequestId {
    fn default() -> Self {
        RequestId::empty()
    }
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A chat completion id, `chatcmpl-` and a UUIDv4, held inline (no allocation per request).
#[derive(Clone, Copy)]
pub struct ResponseId {
    buf: [u8; ResponseId::LEN],
}

impl ResponseId {
    const PREFIX: &'static [u8] = b"chatcmpl-";
    const LEN: usize = Self::PREFIX.len() + 36;

    pub fn generate() -> ResponseId {
        let mut buf = [0u8; Self::LEN];
        buf[..Self::PREFIX.len()].copy_from_slice(Self::PREFIX);
        write_uuid(&mut buf[Self::PREFIX.len()..]);
        ResponseId { buf }
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII is ever stored.
        std::str::from_utf8(&self.buf).unwrap_or("")
    }
}

/// Writes a random UUIDv4 (`xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx`) into 36 bytes.
fn write_uuid(out: &mut [u8]) {
    use crate::router::rng::next_u64;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let (a, b) = (next_u64(), next_u64());
    // 32 random nibbles; the version nibble is 4 and the variant's top bits are 10.
    let mut nibbles = [0u8; 32];
    for (i, n) in nibbles.iter_mut().enumerate() {
        let word = if i < 16 { a } else { b };
        *n = ((word >> ((i % 16) * 4)) & 0xf) as u8;
    }
    nibbles[12] = 4;
    nibbles[16] = 0x8 | (nibbles[16] & 0x3);
    let mut j = 0;
    for (i, slot) in out.iter_mut().enumerate().take(36) {
        *slot = if matches!(i, 8 | 13 | 18 | 23) {
            b'-'
        } else {
            let c = HEX[nibbles[j] as usize];
            j += 1;
            c
        };
    }
}

/// What one request is and did, filled in as it goes and settled at the end.
pub struct Context {
    pub request_id: RequestId,
    pub start: Instant,
    pub route: &'static str,
    /// The client's API: the shape its errors take.
    pub wire: Wire,
    /// `Access-Control-Allow-Origin` for this request's `Origin`, set by `gateway::cors`; `None`:
    /// no CORS headers.
    pub cors_allow_origin: Option<HeaderValue>,
    /// Also send `Access-Control-Allow-Credentials: true` (only with an echoed origin).
    pub cors_credentials: bool,
    /// Who is calling (set by the `authenticate` stage).
    pub principal: Principal,
    /// The client's address: the connection's peer, or what a trusted proxy reported for it
    /// (PROXY protocol, forwarding header; see [`crate::client_addr`]). `None` for a Unix-socket
    /// peer that forwarded nothing.
    pub client_addr: Option<IpAddr>,
    /// The end user the caller acts for, as LiteLLM finds it: the `x-litellm-end-user-id`
    /// header, else the body's `user`. Client-chosen and not validated: anything that uses it
    /// as a metric label or a key must bound it.
    pub end_user: Option<String>,
    /// The `x-litellm-tags` header as sent (comma-separated tags for tag routing), when present.
    pub tags_header: Option<Box<str>>,
    /// The `User-Agent` header, kept only when some deployment routes on it (`tag_regex`).
    pub user_agent: Option<Box<str>>,
    /// The key's team, user and team membership and the end user's row, resolved from memory
    /// after authentication (see [`crate::tenant`] for which limits each carries). Empty for
    /// the master key (but its end user) and without a key store.
    pub tenancy: crate::tenant::Tenancy,
    /// The model name the client asked for.
    pub model: Option<String>,
    pub deployment: Option<Arc<Deployment>>,
    pub status: u16,
    /// Attempts made (first try, retries and fallback attempts).
    pub attempts: u32,
    /// The fallback group in use: the one that answered when a fallback did.
    pub fallback: Option<String>,
    /// Fallback groups tried.
    pub fallbacks_attempted: u32,
    pub stream: bool,
    /// Time spent waiting on upstreams (for the overhead header and metrics).
    pub upstream_time: Duration,
    pub ttft: Option<Duration>,
    pub usage: Option<Usage>,
    /// What the answer cost, in USD, from `usage` and the answering deployment's prices
    /// ([`Context::price_usage`]); `None` when the deployment is unpriced or nothing answered.
    pub cost: Option<f64>,
    /// `usage` (and so `cost`) is an estimate: a stream ended without the provider's final
    /// usage (client hang-up, upstream cut); see [`crate::cost::estimate_usage`].
    pub usage_estimated: bool,
    /// SSE events a stream wrote to the client (the completion estimate when its usage never
    /// came).
    pub events_sent: u64,
    pub cache: CacheStatus,
    /// The response cache's key for this request (`x-litellm-cache-key`), set by its lookup.
    pub cache_key: Option<String>,
    /// How long to keep this answer when it is stored (the request's `cache.ttl`, else the
    /// configured default; `None`: no expiry).
    pub cache_ttl: Option<Duration>,
    /// What the cache's lookup keeps for its store: an embeddings batch's per-input lookup
    /// (`cache::embeddings::Batch`) or a semantic miss's prompt vector
    /// (`cache::semantic::Pending`). Typed by the cache.
    pub cache_state: Option<Box<dyn std::any::Any + Send + Sync>>,
    /// Set by a stage that needs the whole answer (a cache that missed): the response sink
    /// then keeps it in [`Context::answer`].
    pub keep_answer: bool,
    /// The whole answer as sent, when `keep_answer` asked for it (a whole body is shared, not
    /// copied).
    pub answer: Option<Bytes>,
    /// A streamed answer gathered so far (while `keep_answer`).
    pub(crate) answer_parts: BytesMut,
    pub client_disconnected: bool,
    pub error: Option<String>,
    /// The request's trace, only when an OpenTelemetry exporter is configured
    /// ([`crate::telemetry`]); `None` costs nothing.
    pub trace: Option<Box<Trace>>,
    /// The rate limits this request was measured against (set at admission; every answer's
    /// head carries them as `x-ratelimit-*`).
    pub rate_limit: RateLimitStatus,
    /// What admission holds until the request settles (parallel slots, token reservations):
    /// the stage that set it reconciles it at settle; dropping it releases what is held.
    pub admission: Option<Box<dyn std::any::Any + Send + Sync>>,
    /// What an admission stage holds for this request (the budget ledger's reservation):
    /// settled by its settle stage, released when dropped unsettled (errors, panics,
    /// cancelled requests). Typed by the stage that put it here.
    pub reservation: Option<Box<dyn std::any::Any + Send + Sync>>,
    /// The admission stages' Redis scripts, sent in one round trip
    /// ([`crate::shared_state::batch`]); empty unless a stage uses Redis.
    pub redis_batch: crate::shared_state::batch::Batch,
}

/// The tightest request and token windows a request was admitted (or refused) under, and
/// every scope's own standing (LiteLLM's per-descriptor headers).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RateLimitStatus {
    pub requests: Option<RateWindow>,
    pub tokens: Option<RateWindow>,
    pub scopes: smallvec::SmallVec<[ScopeWindow; 4]>,
}

/// One scope's standing: `x-ratelimit-{descriptor}-limit-{measure}` and
/// `x-ratelimit-{descriptor}-remaining-{measure}` (the two names, static), and their values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScopeWindow {
    pub names: &'static [&'static str; 2],
    pub limit: u64,
    pub remaining: u64,
}

/// One limit's standing: `x-ratelimit-limit-*`, `-remaining-*`, `-reset-*`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateWindow {
    pub limit: u64,
    pub remaining: u64,
    /// Until the limit is whole again.
    pub reset: Duration,
}

/// What one request's trace records as it goes, for the telemetry settle stage to turn into
/// spans off the request path: ids (the client's `traceparent` continued), the attempts made,
/// and the request parameters the GenAI conventions name.
#[derive(Clone)]
pub struct Trace {
    pub trace_id: [u8; 16],
    /// The SERVER span's id.
    pub span_id: [u8; 8],
    /// The client's span, when its `traceparent` continued a trace.
    pub remote_parent: Option<[u8; 8]>,
    /// Spans are exported (metrics are recorded either way).
    pub sampled: bool,
    /// The client's `tracestate`, passed on upstream unchanged.
    pub tracestate: Option<HeaderValue>,
    /// [`Context::start`], and the wall-clock time it was (spans carry wall-clock times).
    pub start: Instant,
    pub wall_start: SystemTime,
    /// One record per upstream attempt, in order.
    pub attempts: smallvec::SmallVec<[AttemptRecord; 2]>,
    /// The request parameters spans report (read from the parsed body, no second parse).
    pub params: RequestParams,
    /// The id the gateway gave the answer.
    pub response_id: Option<ResponseId>,
    /// The request body, kept only when content capture is on.
    pub request_body: Option<Bytes>,
    /// The answer's finish reasons, as they went out (sampled traces only).
    pub finish_reasons: FinishReasons,
}

/// The distinct finish reasons an answer carried (`gen_ai.response.finish_reasons`): a bit per
/// well-known reason ([`crate::telemetry::finish::KNOWN`]), the first other one as text, and
/// the tail of the last piece scanned, so a reason split across stream writes is still found.
#[derive(Clone)]
pub struct FinishReasons {
    pub known: u16,
    pub other: Option<Box<str>>,
    pub tail: [u8; 48],
    pub tail_len: u8,
}

impl Default for FinishReasons {
    fn default() -> Self {
        FinishReasons {
            known: 0,
            other: None,
            tail: [0; 48],
            tail_len: 0,
        }
    }
}

/// One upstream attempt: a CLIENT span at export.
#[derive(Clone)]
pub struct AttemptRecord {
    pub span_id: [u8; 8],
    pub deployment: Arc<Deployment>,
    pub start: Instant,
    /// `None` while it runs (or when its future was dropped).
    pub end: Option<Instant>,
    /// The failed attempt's `error.type` and HTTP status.
    pub error: Option<(&'static str, u16)>,
}

/// The GenAI `gen_ai.request.*` parameters of a call.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestParams {
    pub max_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub seed: Option<i64>,
    pub choice_count: Option<u64>,
}

impl Default for Context {
    fn default() -> Self {
        Context {
            request_id: RequestId::empty(),
            start: Instant::now(),
            route: "",
            wire: Wire::OpenAi,
            cors_allow_origin: None,
            cors_credentials: false,
            principal: Principal::Anonymous,
            client_addr: None,
            end_user: None,
            tags_header: None,
            user_agent: None,
            tenancy: crate::tenant::Tenancy::default(),
            model: None,
            deployment: None,
            status: 0,
            attempts: 0,
            fallback: None,
            fallbacks_attempted: 0,
            stream: false,
            upstream_time: Duration::ZERO,
            ttft: None,
            usage: None,
            cost: None,
            usage_estimated: false,
            events_sent: 0,
            cache: CacheStatus::NotConfigured,
            cache_key: None,
            cache_ttl: None,
            cache_state: None,
            keep_answer: false,
            answer: None,
            answer_parts: BytesMut::new(),
            client_disconnected: false,
            error: None,
            rate_limit: RateLimitStatus::default(),
            admission: None,
            trace: None,
            reservation: None,
            redis_batch: Default::default(),
        }
    }
}

/// Largest answer kept for a stage (a cache); a longer one is not kept at all.
pub const MAX_KEPT_ANSWER: usize = 8 * 1024 * 1024;

impl Context {
    /// Keeps a piece of the answer as it goes out: a whole body is shared, not copied; a
    /// stream's pieces are gathered and frozen at its end. Past [`MAX_KEPT_ANSWER`] nothing is
    /// kept (and `keep_answer` turns off).
    pub fn tee_answer(&mut self, bytes: &Bytes, end: bool) {
        if end && self.answer_parts.is_empty() && self.answer.is_none() {
            self.answer = Some(bytes.clone());
            return;
        }
        if self.answer_parts.len() + bytes.len() > MAX_KEPT_ANSWER {
            self.keep_answer = false;
            self.answer_parts = BytesMut::new();
            self.answer = None;
            return;
        }
        self.answer_parts.extend_from_slice(bytes);
        if end {
            self.answer = Some(self.answer_parts.split().freeze());
        }
    }
}

impl Context {
    /// Prices `usage` with the answering deployment's pre-resolved rates (no lookup here).
    pub fn price_usage(&mut self) {
        self.cost = match (&self.deployment, &self.usage) {
            (Some(d), Some(u)) => d.price.as_ref().map(|p| p.cost(u)),
            _ => None,
        };
    }

    /// A stream is over: when it ended without the provider's final usage (`complete` false:
    /// the client hung up or the upstream cut it), bills an estimate of what was generated
    /// (one token per event sent, the prompt from `request_bytes`), then prices it.
    pub fn settle_stream_usage(&mut self, complete: bool, request_bytes: usize) {
        if !complete {
            self.usage = Some(crate::cost::estimate_usage(
                self.usage,
                request_bytes,
                self.events_sent,
            ));
            self.usage_estimated = true;
        }
        self.price_usage();
    }
}

/// Unix seconds now (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A random UUIDv4-formatted id.
pub fn new_id() -> String {
    RequestId::generate().as_str().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids() {
        let id = RequestId::generate();
        let s = id.as_str();
        assert_eq!(s.len(), 36);
        let parts: Vec<&str> = s.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('4'));
        assert!(matches!(parts[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'));
        assert_ne!(s, RequestId::generate().as_str());
        assert_eq!(RequestId::from_client(b"abc-1").unwrap().as_str(), "abc-1");
        assert!(RequestId::from_client(b"").is_none());
        assert!(RequestId::from_client(b"a b").is_none());
        assert!(RequestId::from_client(&[b'x'; 129]).is_none());
        assert_eq!(
            RequestId::from_client(&[b'x'; 128]).unwrap().as_str().len(),
            128
        );
        let rid = ResponseId::generate();
        let (prefix, uuid) = rid.as_str().split_at(9);
        assert_eq!((prefix, uuid.len()), ("chatcmpl-", 36));
        assert_eq!(uuid.split('-').count(), 5);
        assert_ne!(rid.as_str(), ResponseId::generate().as_str());
    }
}
