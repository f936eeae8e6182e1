//! The response cache (`litellm_settings.cache`): the pipeline's [`Cache`] stage.
//!
//! ```text
//!  lookup (after admission)                        store (at settle, a miss that answered 200)
//!  controls ─► scoped? opted in? ─► key (key.rs)   answer teed by the sink ─► bounded queue
//!  ─► backend get (s-maxage) ─► hit: replay in        ─► writer thread: a stream's SSE gathered
//!     the asked format (replay.rs), cost 0              into the whole answer ─► backend put
//! ```
//!
//! One canonical entry per key: the whole OpenAI JSON answer. A streaming request is answered
//! from it as SSE and a streamed miss is stored as the whole answer it stands for (plus the
//! chunks the client received, replayed as they were: see [`replay`]), so `stream` is not part
//! of the key. `/v1/completions`, `/v1/responses` and `/v1/messages` answers are kept as the
//! client got them instead, keyed with their `stream` flag ([`verbatim`]). A hit carries the stored answer's usage (`ctx.usage`), which tpm limits count. The request path never waits on a write: `store` hands the answer
//! to a bounded queue (full: dropped and counted) drained by one background thread.
//!
//! The backend (the local LRU, bounded in bytes) outlives config reloads while its settings
//! stay the same: a SIGHUP does not empty the cache.

pub mod controls;
pub mod embeddings;
pub mod key;
pub mod local;
pub mod replay;
pub mod semantic;
pub mod verbatim;

use crate::config::redis::{FailurePolicy, RedisSettings};
use crate::config::{CacheMode, CacheScope, CacheSettings, CacheType};
use crate::context::Context;
use crate::error::GatewayError;
use crate::openai::{RequestBody, Usage};
use crate::pipeline::{Cache, Lookup};
use crate::shared_state::SharedState;
use async_trait::async_trait;
use bytes::Bytes;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// Answers waiting to be stored; past this, new ones are dropped (and counted).
const WRITE_QUEUE: usize = 1024;

/// What a cached request is, as the metrics label it (`call_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallType {
    Chat,
    Embeddings,
    /// `/v1/completions`.
    TextCompletion,
    /// `/v1/responses`.
    Responses,
    /// `/v1/messages`.
    Messages,
}

impl CallType {
    pub const ALL: [CallType; 5] = [
        CallType::Chat,
        CallType::Embeddings,
        CallType::TextCompletion,
        CallType::Responses,
        CallType::Messages,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CallType::Chat => "chat",
            CallType::Embeddings => "embeddings",
            CallType::TextCompletion => "text_completion",
            CallType::Responses => "responses",
            CallType::Messages => "anthropic_messages",
        }
    }

    /// The call type of a cacheable route.
    fn of(route: &str) -> Option<CallType> {
        match route {
            "chat" => Some(CallType::Chat),
            "embeddings" => Some(CallType::Embeddings),
            "completions" => Some(CallType::TextCompletion),
            "responses" => Some(CallType::Responses),
            "messages" => Some(CallType::Messages),
            _ => None,
        }
    }

    /// Answers kept as the client got them ([`verbatim`]), not as a chat answer.
    fn verbatim(self) -> bool {
        !matches!(self, CallType::Chat | CallType::Embeddings)
    }

    /// Whether `supported_call_types` lists this type.
    fn enabled(self, s: &CacheSettings) -> bool {
        match self {
            CallType::Chat => s.chat,
            CallType::Embeddings => s.embeddings,
            CallType::TextCompletion => s.text_completion,
            CallType::Responses => s.responses,
            CallType::Messages => s.messages,
        }
    }
}

/// Counters of one call type.
pub struct CallStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub stores: AtomicU64,
    /// Bytes written to the backend (local or Redis), entries' own size.
    pub stored_bytes: AtomicU64,
}

impl CallStats {
    const fn new() -> CallStats {
        CallStats {
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            stores: AtomicU64::new(0),
            stored_bytes: AtomicU64::new(0),
        }
    }
}

/// Process-wide cache counters, mirrored into `/metrics` at scrape: hits, misses, stores and
/// bytes stored per call type ([`Stats::of`]); evictions, errors and dropped writes overall.
pub struct Stats {
    chat: CallStats,
    embeddings: CallStats,
    text_completion: CallStats,
    responses: CallStats,
    messages: CallStats,
    pub evictions: AtomicU64,
    /// Backend failures (a Redis error or timeout), each a miss or a lost write.
    pub errors: AtomicU64,
    /// Writes dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Bytes held by the local backend.
    pub bytes: AtomicU64,
    /// Hits found by prompt similarity (also counted in `hits`).
    pub semantic_hits: AtomicU64,
}

impl Stats {
    /// The counters of one call type.
    pub fn of(&self, call: CallType) -> &CallStats {
        match call {
            CallType::Chat => &self.chat,
            CallType::Embeddings => &self.embeddings,
            CallType::TextCompletion => &self.text_completion,
            CallType::Responses => &self.responses,
            CallType::Messages => &self.messages,
        }
    }

    /// The event counters by their metric labels: `(call_type, event, count)`; hits, misses
    /// and stores per call type, the rest with an empty call type.
    pub fn events(&self) -> Vec<(&'static str, &'static str, u64)> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = Vec::with_capacity(4 + 3 * CallType::ALL.len());
        for call in CallType::ALL {
            let c = self.of(call);
            out.push((call.as_str(), "hit", get(&c.hits)));
            out.push((call.as_str(), "miss", get(&c.misses)));
            out.push((call.as_str(), "store", get(&c.stores)));
        }
        out.push(("", "eviction", get(&self.evictions)));
        out.push(("", "error", get(&self.errors)));
        out.push(("", "dropped", get(&self.dropped)));
        out.push(("chat", "semantic_hit", get(&self.semantic_hits)));
        out
    }
}

static STATS: Stats = Stats {
    chat: CallStats::new(),
    embeddings: CallStats::new(),
    text_completion: CallStats::new(),
    responses: CallStats::new(),
    messages: CallStats::new(),
    evictions: AtomicU64::new(0),
    errors: AtomicU64::new(0),
    dropped: AtomicU64::new(0),
    bytes: AtomicU64::new(0),
    semantic_hits: AtomicU64::new(0),
};

/// The counters (and the configured type's label), for the metrics scrape.
pub fn stats() -> &'static Stats {
    &STATS
}

/// The cache type label of the running backend (`local`, `redis`), empty without one.
pub fn type_label() -> &'static str {
    match SHARED
        .lock()
        .ok()
        .and_then(|s| s.as_ref().map(|b| b.0.kind))
    {
        Some(CacheType::Local) => "local",
        Some(CacheType::Redis) => "redis",
        Some(CacheType::RedisSemantic) => "redis-semantic",
        None => "",
    }
}

/// One answer to store.
struct Write {
    key: String,
    answer: Bytes,
    ttl: Option<Duration>,
    /// The answer is a stream's SSE: gather it first.
    stream: bool,
    usage: Option<Usage>,
    /// An embeddings batch: each input's key, and whether to store it (not found at lookup).
    inputs: Option<(Vec<String>, Vec<bool>)>,
    /// A semantic miss: the list its prompt's vector joins, and the list's bound.
    semantic: Option<(String, Vec<f32>, usize)>,
    call: CallType,
}

/// Where entries live.
enum Store {
    Local(local::LocalStore),
    /// A shared Redis: the value is the store time (unix ms, 8 bytes big-endian, for
    /// `s-maxage`) then the answer; the entry's ttl is Redis's own (`SET … PX`).
    Redis(SharedState),
}

/// Bytes before the answer in a Redis value.
const REDIS_HEADER: usize = 8;

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A Redis value's answer, if younger than `max_age`.
fn redis_entry(value: Option<Vec<u8>>, max_age: Option<Duration>) -> Option<Bytes> {
    let value = value.filter(|v| v.len() > REDIS_HEADER)?;
    let stored = u64::from_be_bytes(value[..REDIS_HEADER].try_into().ok()?);
    if max_age.is_some_and(|m| unix_ms().saturating_sub(stored) > m.as_millis() as u64) {
        return None;
    }
    let mut b = Bytes::from(value);
    Some(b.split_off(REDIS_HEADER))
}

impl Store {
    /// The entry, if live (and younger than `max_age`). A Redis failure or timeout (bounded by
    /// `switchboard.redis_timeout_ms`) is counted and is a miss.
    async fn get(&self, key: &str, max_age: Option<Duration>) -> Option<Bytes> {
        match self {
            Store::Local(l) => l.get(key, max_age),
            Store::Redis(r) => match r.query(redis::cmd("GET").arg(key)).await {
                Ok(v) => redis_entry(v, max_age),
                Err(_) => {
                    // Logged (rate-limited) by shared_state.
                    STATS.errors.fetch_add(1, Ordering::Relaxed);
                    None
                }
            },
        }
    }

    /// Several entries at once: the GETs are sent together (the multiplexed connection writes
    /// them back to back, so they cost one round trip; on a cluster each goes to its own slot's
    /// node, where one pipeline could not). A failure is a miss for that entry.
    async fn get_many(&self, keys: &[String], max_age: Option<Duration>) -> Vec<Option<Bytes>> {
        match self {
            Store::Local(l) => keys.iter().map(|k| l.get(k, max_age)).collect(),
            Store::Redis(_) => {
                futures_util::future::join_all(keys.iter().map(|k| self.get(k, max_age))).await
            }
        }
    }

    async fn put(&self, w: Write) {
        if let Some((keys, store)) = &w.inputs {
            for (key, embedding) in embeddings::entries(keys, store, &w.answer) {
                self.put_one(key, embedding, w.ttl, w.call).await;
            }
            return;
        }
        let answer = if w.call.verbatim() {
            verbatim::entry(&w.answer, w.usage)
        } else if w.stream {
            match replay::stream_entry(&w.answer, w.usage) {
                Some(a) => a,
                None => return,
            }
        } else {
            w.answer
        };
        if let (Some((list, vector, max)), Store::Redis(r)) = (&w.semantic, self) {
            // The list only points at the exact entry: pushed after it is written.
            let mut pipe = redis::pipe();
            pipe.cmd("LPUSH")
                .arg(list)
                .arg(semantic::encode(&w.key, vector))
                .ignore();
            pipe.cmd("LTRIM").arg(list).arg(0).arg(max - 1).ignore();
            if let Some(ttl) = w.ttl {
                pipe.cmd("PEXPIRE")
                    .arg(list)
                    .arg((ttl.as_millis() as u64).max(1))
                    .ignore();
            }
            self.put_one(w.key, answer, w.ttl, w.call).await;
            if r.pipeline::<()>(&pipe).await.is_err() {
                STATS.errors.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        self.put_one(w.key, answer, w.ttl, w.call).await;
    }

    async fn put_one(&self, key: String, answer: Bytes, ttl: Option<Duration>, call: CallType) {
        let stats = STATS.of(call);
        let size = answer.len() as u64;
        match self {
            Store::Local(l) => {
                let out = l.put(key, answer, ttl);
                if out.stored {
                    stats.stores.fetch_add(1, Ordering::Relaxed);
                    stats.stored_bytes.fetch_add(size, Ordering::Relaxed);
                }
                STATS.evictions.fetch_add(out.evicted, Ordering::Relaxed);
                STATS.bytes.store(l.bytes() as u64, Ordering::Relaxed);
            }
            Store::Redis(r) => {
                let mut value = Vec::with_capacity(REDIS_HEADER + answer.len());
                value.extend_from_slice(&unix_ms().to_be_bytes());
                value.extend_from_slice(&answer);
                let mut cmd = redis::cmd("SET");
                cmd.arg(&key).arg(value);
                if let Some(ttl) = ttl {
                    cmd.arg("PX").arg((ttl.as_millis() as u64).max(1));
                }
                match r.query::<()>(&cmd).await {
                    Ok(()) => {
                        stats.stores.fetch_add(1, Ordering::Relaxed);
                        stats.stored_bytes.fetch_add(size, Ordering::Relaxed);
                    }
                    Err(_) => {
                        STATS.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }
}

/// What outlives a reload: the store and its writer.
struct Backend {
    store: Arc<Store>,
    writes: mpsc::Sender<Write>,
}

/// What a backend is built from: two configs with the same one share it across a reload.
#[derive(Clone, PartialEq)]
struct BackendSpec {
    kind: CacheType,
    max_bytes: usize,
    redis: Option<RedisSettings>,
    redis_timeout: Duration,
}

static SHARED: Mutex<Option<(BackendSpec, Arc<Backend>)>> = Mutex::new(None);

impl Backend {
    /// The running backend for `spec`, or a new one. Its writer thread runs its own small Tokio
    /// runtime, which also hosts the Redis client (made there: a cluster client spawns its
    /// connection task, and writes never run on the request workers).
    fn shared(spec: BackendSpec) -> Result<Arc<Backend>, String> {
        let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((s, b)) = shared.as_ref() {
            if *s == spec {
                return Ok(b.clone());
            }
        }
        let (tx, mut rx) = mpsc::channel::<Write>(WRITE_QUEUE);
        let (made_tx, made_rx) = std::sync::mpsc::sync_channel::<Result<Arc<Store>, String>>(1);
        let thread_spec = spec.clone();
        std::thread::Builder::new()
            .name("cache-writer".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = made_tx.send(Err(format!("cache writer runtime: {e}")));
                        return;
                    }
                };
                let store = {
                    let _in_runtime = rt.enter();
                    match (thread_spec.kind, &thread_spec.redis) {
                        (CacheType::Local, _) => {
                            Ok(Store::Local(local::LocalStore::new(thread_spec.max_bytes)))
                        }
                        (_, Some(redis)) => SharedState::new(
                            redis,
                            thread_spec.redis_timeout,
                            FailurePolicy::Open,
                        )
                        .map(Store::Redis),
                        (_, None) => Err("cache type redis needs a Redis server: set cache_params host/port or url, or REDIS_HOST/REDIS_URL".to_string()),
                    }
                };
                let store = match store {
                    Ok(s) => Arc::new(s),
                    Err(e) => {
                        let _ = made_tx.send(Err(e));
                        return;
                    }
                };
                let _ = made_tx.send(Ok(store.clone()));
                rt.block_on(async move {
                    while let Some(w) = rx.recv().await {
                        store.put(w).await;
                    }
                });
            })
            .map_err(|e| format!("cannot start the cache writer thread: {e}"))?;
        let store = made_rx
            .recv()
            .map_err(|_| "the cache writer thread stopped".to_string())??;
        let backend = Arc::new(Backend { store, writes: tx });
        *shared = Some((spec, backend.clone()));
        Ok(backend)
    }
}

/// The cache stage built from `litellm_settings.cache`.
pub struct ResponseCache {
    settings: CacheSettings,
    backend: Arc<Backend>,
}

impl ResponseCache {
    /// The stage for `config`'s cache settings, if it has any. A backend that cannot be made
    /// (no Redis server configured, a bad URL) is logged and the cache left off: requests are
    /// served without it.
    pub fn from_config(config: &crate::config::Config) -> Option<ResponseCache> {
        let settings = config.litellm.cache.as_ref()?;
        let spec = BackendSpec {
            kind: settings.kind,
            max_bytes: settings.max_bytes,
            redis: match settings.kind {
                CacheType::Local => None,
                _ => config.litellm.cache_redis.clone(),
            },
            redis_timeout: config.server.redis_timeout,
        };
        match Backend::shared(spec) {
            Ok(backend) => Some(ResponseCache {
                settings: settings.clone(),
                backend,
            }),
            Err(e) => {
                log::error!("cache: {e}; the response cache is off");
                None
            }
        }
    }

    /// The tenant an entry belongs to under the configured scope.
    fn tenant<'c>(&self, ctx: &'c Context) -> Option<&'c str> {
        tenant_of(self.settings.scope, ctx)
    }
}

/// The key's route part for a streamed request of a verbatim type.
fn verbatim_stream_route(call: CallType) -> &'static str {
    match call {
        CallType::TextCompletion => "completions+stream",
        CallType::Responses => "responses+stream",
        _ => "messages+stream",
    }
}

/// The tenant id under `scope`.
fn tenant_of(scope: CacheScope, ctx: &Context) -> Option<&str> {
    let key = ctx.principal.key();
    match scope {
        CacheScope::Global => None,
        CacheScope::Key => Some(key.map_or("", |k| k.row.token.as_str())),
        CacheScope::Team => Some(key.map_or("", |k| {
            k.row.team_id.as_deref().unwrap_or(k.row.token.as_str())
        })),
    }
}

impl ResponseCache {
    /// An embeddings request, input by input (see [`embeddings`]): a hit only when every
    /// input was found.
    async fn lookup_inputs(
        &self,
        ctx: &mut Context,
        body: &RequestBody<'_>,
        group: &str,
        inputs: &[&serde_json::value::RawValue],
        keys: Vec<String>,
        controls: &controls::Controls,
    ) -> Lookup {
        let found = if controls.no_cache {
            vec![None; keys.len()]
        } else {
            self.backend.store.get_many(&keys, controls.max_age).await
        };
        let batch = embeddings::Batch::new(keys, found);
        let stats = STATS.of(CallType::Embeddings);
        if batch.all_found() {
            stats.hits.fetch_add(1, Ordering::Relaxed);
            ctx.cost = Some(0.0);
            return Lookup::Hit(embeddings::assemble(
                &batch,
                ctx.model.as_deref().unwrap_or(group),
            ));
        }
        stats.misses.fetch_add(1, Ordering::Relaxed);
        embeddings::keep(ctx, body, inputs, batch);
        Lookup::Miss {
            store: !controls.no_store,
        }
    }
}

#[async_trait]
impl Cache for ResponseCache {
    async fn lookup(
        &self,
        ctx: &mut Context,
        body: &RequestBody<'_>,
        group: &str,
    ) -> Result<Lookup, GatewayError> {
        if let Some(key) = ctx.principal.key() {
            check_allowed(&key.row.allowed_cache_controls, body)?;
        }
        let s = &self.settings;
        let Some(call) = CallType::of(ctx.route).filter(|c| c.enabled(s)) else {
            return Ok(Lookup::Skip);
        };
        // A Responses call continuing a stored conversation answers from upstream state the
        // key cannot see.
        if call == CallType::Responses
            && body
                .get("previous_response_id")
                .is_some_and(|v| v.get() != "null")
        {
            return Ok(Lookup::Skip);
        }
        let controls = controls::read(body)?;
        if s.mode == CacheMode::DefaultOff && !controls.use_cache {
            return Ok(Lookup::Skip);
        }
        // No conversion between a whole answer and a stream in the verbatim formats: the flag
        // is part of their key.
        let route = match (call.verbatim(), body.bool_field("stream")?) {
            (true, true) => verbatim_stream_route(call),
            _ => ctx.route,
        };
        let scope = key::KeyScope {
            model: group,
            route,
            tenant: self.tenant(ctx),
        };
        let invalid = |e: serde_json::Error| {
            GatewayError::bad_request(format!("The request body is not valid JSON: {e}"))
        };
        let key = key::compute(&scope, body).map_err(invalid)?;
        let inputs = match ctx.route {
            "embeddings" => embeddings::inputs(body),
            _ => None,
        };
        let input_keys = match &inputs {
            Some(inputs) => Some(key::compute_inputs(&scope, body, inputs).map_err(invalid)?),
            None => None,
        };
        let namespace = controls.namespace.as_deref().or(s.namespace.as_deref());
        let rendered = key.render(namespace);
        ctx.cache_ttl = controls.ttl.or(s.ttl);
        if let (Some(inputs), Some(keys)) = (inputs, input_keys) {
            ctx.cache_key = Some(rendered);
            let keys = embeddings::render(keys, namespace);
            return Ok(self
                .lookup_inputs(ctx, body, group, &inputs, keys, &controls)
                .await);
        }
        let found = if controls.no_cache {
            None
        } else {
            self.backend.store.get(&rendered, controls.max_age).await
        };
        ctx.cache_key = Some(rendered);
        let hit = match found {
            Some(stored) if call.verbatim() => verbatim::parse(stored),
            Some(stored) => {
                let entry = replay::Entry::parse(stored);
                let answer = if ctx.stream {
                    entry.to_stream(body.include_usage()?)
                } else {
                    Some(entry.whole.clone())
                };
                answer.map(|a| (a, entry.usage()))
            }
            None => None,
        };
        let stats = STATS.of(call);
        match hit {
            Some((answer, usage)) => {
                stats.hits.fetch_add(1, Ordering::Relaxed);
                ctx.cost = Some(0.0);
                // The tokens the answer had: tpm limits count a hit as LiteLLM does.
                ctx.usage = usage;
                Ok(Lookup::Hit(answer))
            }
            None => {
                stats.misses.fetch_add(1, Ordering::Relaxed);
                Ok(Lookup::Miss {
                    store: !controls.no_store,
                })
            }
        }
    }

    fn semantic_model(&self) -> Option<&str> {
        match self.settings.kind {
            CacheType::RedisSemantic => self.settings.embedding_model.as_deref(),
            _ => None,
        }
    }

    async fn semantic_lookup(
        &self,
        ctx: &mut Context,
        body: &RequestBody<'_>,
        group: &str,
        vector: Vec<f32>,
    ) -> Option<Bytes> {
        let Store::Redis(redis) = &*self.backend.store else {
            return None;
        };
        let controls = controls::read(body).ok()?;
        let namespace = ctx
            .cache_key
            .as_deref()
            .and_then(|k| k.rsplit_once(':'))
            .map(|(ns, _)| ns);
        let scope = tenant_of(self.settings.semantic_scope, ctx).unwrap_or("");
        let list = semantic::list_key(namespace, group, scope);
        let mut found = None;
        if !controls.no_cache {
            let max = self.settings.semantic_max_entries as i64;
            let lrange = redis::cmd("LRANGE").arg(&list).arg(0).arg(max - 1).clone();
            match redis.query::<Vec<Vec<u8>>>(&lrange).await {
                Ok(entries) => {
                    let best =
                        semantic::best_match(&vector, &entries, self.settings.similarity_threshold)
                            .map(|(key, _)| key.to_string());
                    if let Some(key) = best {
                        found = self
                            .backend
                            .store
                            .get(&key, controls.max_age)
                            .await
                            .map(|a| (key, a));
                    }
                }
                Err(_) => {
                    STATS.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let hit = match found {
            Some((key, stored)) => {
                let entry = replay::Entry::parse(stored);
                let answer = if ctx.stream {
                    entry.to_stream(body.include_usage().ok()?)?
                } else {
                    entry.whole.clone()
                };
                Some((key, answer, entry.usage()))
            }
            None => None,
        };
        match hit {
            Some((key, answer, usage)) => {
                // The exact lookup counted a miss; this request is a hit after all.
                let chat = STATS.of(CallType::Chat);
                chat.misses.fetch_sub(1, Ordering::Relaxed);
                chat.hits.fetch_add(1, Ordering::Relaxed);
                STATS.semantic_hits.fetch_add(1, Ordering::Relaxed);
                ctx.cost = Some(0.0);
                ctx.usage = usage;
                ctx.cache_key = Some(key);
                Some(answer)
            }
            None => {
                ctx.cache_state = Some(Box::new(semantic::Pending { list, vector }));
                None
            }
        }
    }

    fn store(&self, ctx: &Context, answer: &Bytes) {
        let Some(key) = &ctx.cache_key else {
            return;
        };
        let call = CallType::of(ctx.route).unwrap_or(CallType::Chat);
        // A stream cut short (client gone, upstream cut) is not the answer, nor is one that
        // ended with an error event.
        if ctx.client_disconnected
            || ctx.usage_estimated
            || (call.verbatim() && ctx.error.is_some())
        {
            return;
        }
        let write = Write {
            key: key.clone(),
            answer: answer.clone(),
            ttl: ctx.cache_ttl,
            stream: ctx.stream,
            usage: ctx.usage,
            inputs: embeddings::to_store(ctx),
            semantic: ctx
                .cache_state
                .as_deref()
                .and_then(|s| s.downcast_ref::<semantic::Pending>())
                .map(|p| {
                    (
                        p.list.clone(),
                        p.vector.clone(),
                        self.settings.semantic_max_entries,
                    )
                }),
            call,
        };
        if self.backend.writes.try_send(write).is_err() {
            STATS.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A key's `allowed_cache_controls`, enforced as LiteLLM's cache-control check does: every
/// name in the body's `cache` object must be listed (whatever its value), else 403 naming the
/// first one that is not. An empty list allows every control; a `cache` that is not an object
/// is left to [`controls::read`]. Parses nothing unless the key has a list and the body a
/// `cache`.
pub fn check_allowed(allowed: &[String], body: &RequestBody<'_>) -> Result<(), GatewayError> {
    if allowed.is_empty() {
        return Ok(());
    }
    let Some(raw) = body.get("cache") else {
        return Ok(());
    };
    let Ok(names) = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(raw.get())
    else {
        return Ok(());
    };
    match names.keys().find(|name| !allowed.iter().any(|a| a == *name)) {
        None => Ok(()),
        Some(name) => Err(GatewayError::new(
            crate::error::ErrorKind::PermissionDenied,
            format!("Not allowed to set {name} as a cache control. Contact admin to change permissions."),
        )
        .with_param("cache")),
    }
}
