//! The request pipeline's stages, in their fixed order:
//!
//! ```text
//!  authenticate ─► admit ─► cache lookup ─► route + exchange ─► settle
//!  (Principal)     (limits,  (hit: replay    (gateway::exchange)  (after the answer: cache
//!                  budgets)  through the sink)                    write, accounting; metrics
//!                                                                 and the access log today)
//! ```
//!
//! One small trait per phase. [`Stages`] is built from the config together with the routing
//! snapshot (see [`crate::app::Live`]) and swapped with it on reload. A phase with nothing
//! configured is an empty slice: it costs a length check per request, no allocation, no call
//! (`tests/stages_alloc.rs` counts the allocations).
//!
//! Sync or async, by what the phase will need:
//! - `admit` and `cache lookup` are async: rate limits and budgets shared across instances, and
//!   a shared response cache, need one Redis round trip here. A configured async stage costs a
//!   boxed future per call (`async_trait`); an unconfigured phase never creates one.
//! - `authenticate` stays sync: keys, teams and users are read from memory (refreshed in the
//!   background from the store), so a lookup never waits on I/O.
//! - `settle` and `Cache::store` stay sync: they run after the answer and hand their work to
//!   a background writer through a bounded channel (dropping with a counter when it is full),
//!   never waiting on it.
//!
//! Stages must not block the worker thread: sync ones read memory only.

use crate::auth;
use crate::config::Config;
use crate::context::{Context, Principal};
use crate::error::GatewayError;
use crate::openai::RequestBody;
use async_trait::async_trait;
use bytes::Bytes;
use pingora_http::RequestHeader;

/// Establishes who is calling from the request head.
pub trait Authenticate: Send + Sync {
    /// `Ok(Some(p))` accepts the caller as `p`; `Ok(None)` leaves the decision to the next
    /// authenticator; `Err` refuses the request (401/403 as an OpenAI error).
    fn authenticate(
        &self,
        req: &RequestHeader,
        ctx: &Context,
    ) -> Result<Option<Principal>, GatewayError>;
}

/// Decides whether an authenticated request may go ahead (rate limits, budgets, model access),
/// after its body is parsed and before any routing or upstream work. Async: a limit shared
/// across gateway instances costs one (pipelined) Redis round trip here, no more.
#[async_trait]
pub trait Admit: Send + Sync {
    /// `Err` refuses the request with that error (429 with Retry-After, 403, …).
    async fn admit(&self, ctx: &mut Context, body: &RequestBody<'_>) -> Result<(), GatewayError>;
}

/// What a cache lookup found.
pub enum Lookup {
    /// The request does not use the cache (route not cached, not opted in).
    Skip,
    /// The answer to send, already in the format asked for (SSE for a stream).
    Hit(Bytes),
    /// Not found; `store`: keep the answer for [`Cache::store`] (false with `no-store`).
    Miss { store: bool },
}

/// A response cache: looked up after admission, written at settle from the answer the response
/// sink kept.
#[async_trait]
pub trait Cache: Send + Sync {
    /// Looks the request up, recording what the store needs later (its key) in `ctx`. Async: a
    /// shared cache is one Redis round trip away. A failed or slow backend is a miss; `Err` is
    /// only the client's fault (malformed or forbidden cache controls). `group`: the model
    /// group the request's model resolves to (an alias's group), which entries are keyed on.
    async fn lookup(
        &self,
        ctx: &mut Context,
        body: &RequestBody<'_>,
        group: &str,
    ) -> Result<Lookup, GatewayError>;
    /// Offers the answer of a request that missed (`ctx.cache == Miss`, `ctx.answer` set).
    /// Sync: it runs at settle and hands the write to a background writer.
    fn store(&self, ctx: &Context, answer: &Bytes);
    /// The model group a semantic cache embeds prompts with; `None`: no semantic cache.
    fn semantic_model(&self) -> Option<&str> {
        None
    }
    /// After an exact miss: the answer to a stored prompt close to this one (`vector` is the
    /// prompt's embedding), in the asked format; `None` also keeps the vector for the store.
    async fn semantic_lookup(
        &self,
        _ctx: &mut Context,
        _body: &RequestBody<'_>,
        _group: &str,
        _vector: Vec<f32>,
    ) -> Option<Bytes> {
        None
    }
}

/// Runs once the answer is out (or the client left): reconciliation, accounting, telemetry.
/// Must not block: hand work to a background writer through a bounded channel.
pub trait Settle: Send + Sync {
    fn settle(&self, ctx: &Context);
}

/// The configured stages, in order. Built off the request path.
#[derive(Default)]
pub struct Stages {
    authenticate: Vec<Box<dyn Authenticate>>,
    admit: Vec<Box<dyn Admit>>,
    cache: Option<Box<dyn Cache>>,
    settle: Vec<Box<dyn Settle>>,
    /// The OpenTelemetry exporter, when a telemetry callback is configured: the gateway starts
    /// each request's trace with it (its settle stage is in `settle`).
    telemetry: Option<std::sync::Arc<crate::telemetry::Telemetry>>,
}

impl Stages {
    /// The stages a config asks for: with `general_settings.master_key` set, the master-key
    /// check, or (with the key store open) the virtual-key check, the spend settle stage and
    /// the budget stages.
    pub fn from_config(
        config: &Config,
        keys: Option<&std::sync::Arc<crate::keys::Keys>>,
    ) -> Stages {
        let mut stages = Stages::default();
        match (&config.general.master_key, keys) {
            (Some(master), Some(keys)) => {
                // Budgets: with Redis, prepared before the rate-limit stage (both scripts go
                // in one round trip, see `shared_state::batch`); decided after it.
                let budgets = crate::budgets::Budgets::for_keys(keys);
                let (budget_prepare, budget_admit) =
                    crate::budgets::stage::BudgetAdmit::new(config, budgets.clone());
                stages = stages.authenticate_with(crate::keys::auth::VirtualKeys {
                    keys: keys.clone(),
                    master_key: master.clone(),
                    custom_header: config.general.litellm_key_header_name.clone(),
                });
                if config.router.redis.is_some() {
                    stages = stages.admit_with(budget_prepare);
                }
                stages = stages
                    .admit_with(crate::limits::Limits::from_config(config, Some(keys)))
                    .settle_with(crate::limits::LimitsSettle)
                    .settle_with(crate::keys::spend::SpendSettle {
                        keys: keys.clone(),
                        master_hash: crate::keys::hex(&crate::keys::hash_key(master)),
                    });
                // Budgets: after the spend stage, so a key's spend is raised before its
                // reservation is released (see `budgets::stage`).
                stages = stages
                    .admit_with(budget_admit)
                    .settle_with(crate::budgets::stage::BudgetSettle { budgets });
            }
            (Some(master), None) => stages = stages.authenticate_with(MasterKey(master.clone())),
            (None, _) => {}
        }
        crate::alerting::arm(config);
        if !config.general.health.alerting.is_empty() {
            stages = stages.settle_with(crate::alerting::AlertSettle {
                threshold: config.general.health.alerting_threshold,
            });
        }
        if let Some(t) = crate::telemetry::for_config(&config.telemetry) {
            stages = stages.settle_with(crate::telemetry::TelemetrySettle(t.clone()));
            stages.telemetry = Some(t);
        }
        if let Some(cache) = crate::cache::ResponseCache::from_config(config) {
            stages = stages.cache_with(cache);
        }
        stages
    }

    /// The OpenTelemetry exporter, when configured.
    pub fn telemetry(&self) -> Option<&crate::telemetry::Telemetry> {
        self.telemetry.as_deref()
    }

    pub fn authenticate_with(mut self, stage: impl Authenticate + 'static) -> Self {
        self.authenticate.push(Box::new(stage));
        self
    }

    pub fn admit_with(mut self, stage: impl Admit + 'static) -> Self {
        self.admit.push(Box::new(stage));
        self
    }

    pub fn cache_with(mut self, cache: impl Cache + 'static) -> Self {
        self.cache = Some(Box::new(cache));
        self
    }

    pub fn settle_with(mut self, stage: impl Settle + 'static) -> Self {
        self.settle.push(Box::new(stage));
        self
    }

    /// Runs the authenticators in order and records the principal. With none configured every
    /// caller is [`Principal::Open`]; with some, a caller none accepts is refused.
    pub fn authenticate(&self, req: &RequestHeader, ctx: &mut Context) -> Result<(), GatewayError> {
        if self.authenticate.is_empty() {
            ctx.principal = Principal::Open;
            return Ok(());
        }
        for stage in &self.authenticate {
            if let Some(p) = stage.authenticate(req, ctx)? {
                ctx.principal = p;
                return Ok(());
            }
        }
        Err(auth::missing_key())
    }

    /// Runs the admission stages in order; the first refusal wins. With none configured this
    /// is a length check: no future is boxed, nothing is called.
    pub async fn admit(
        &self,
        ctx: &mut Context,
        body: &RequestBody<'_>,
    ) -> Result<(), GatewayError> {
        for stage in &self.admit {
            stage.admit(ctx, body).await?;
        }
        Ok(())
    }

    /// Whether a response cache is configured.
    pub fn has_cache(&self) -> bool {
        self.cache.is_some()
    }

    /// Looks the request up in the cache, recording hit or miss. `Ok(None)` without a cache
    /// (an `Option` check, nothing boxed).
    pub async fn cache_lookup(
        &self,
        ctx: &mut Context,
        body: &RequestBody<'_>,
        group: &str,
    ) -> Result<Option<Bytes>, GatewayError> {
        let Some(cache) = self.cache.as_ref() else {
            return Ok(None);
        };
        use crate::context::CacheStatus;
        match cache.lookup(ctx, body, group).await? {
            Lookup::Skip => Ok(None),
            Lookup::Hit(answer) => {
                ctx.cache = CacheStatus::Hit;
                Ok(Some(answer))
            }
            Lookup::Miss { store } => {
                ctx.cache = CacheStatus::Miss;
                // Asks the response sink to keep the whole answer for `store`.
                ctx.keep_answer = store;
                Ok(None)
            }
        }
    }

    /// The semantic cache's embedding model group, when one is configured.
    pub fn semantic_model(&self) -> Option<&str> {
        self.cache.as_ref()?.semantic_model()
    }

    /// The semantic cache's lookup (see [`Cache::semantic_lookup`]), recording a hit.
    pub async fn semantic_lookup(
        &self,
        ctx: &mut Context,
        body: &RequestBody<'_>,
        group: &str,
        vector: Vec<f32>,
    ) -> Option<Bytes> {
        let answer = self
            .cache
            .as_ref()?
            .semantic_lookup(ctx, body, group, vector)
            .await?;
        ctx.cache = crate::context::CacheStatus::Hit;
        ctx.keep_answer = false;
        Some(answer)
    }

    /// Runs after the answer: the cache write, then the settle stages in order.
    pub fn settle(&self, ctx: &Context) {
        if let (Some(cache), crate::context::CacheStatus::Miss, Some(answer), false) =
            (&self.cache, ctx.cache, &ctx.answer, ctx.status >= 300)
        {
            cache.store(ctx, answer);
        }
        for stage in &self.settle {
            stage.settle(ctx);
        }
    }
}

/// `general_settings.master_key`: `Authorization: Bearer KEY` or `x-api-key: KEY`.
pub struct MasterKey(pub String);

impl Authenticate for MasterKey {
    fn authenticate(
        &self,
        req: &RequestHeader,
        _ctx: &Context,
    ) -> Result<Option<Principal>, GatewayError> {
        auth::check(req, Some(&self.0)).map(|()| Some(Principal::MasterKey))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn req(h: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("POST", b"/v1/chat/completions", None).unwrap();
        for (k, v) in h {
            r.insert_header(k.to_string(), v.to_string()).unwrap();
        }
        r
    }

    /// A test-only admission stage: refuses every caller that is not the master key.
    struct MasterOnly;
    #[async_trait]
    impl Admit for MasterOnly {
        async fn admit(
            &self,
            ctx: &mut Context,
            _body: &RequestBody<'_>,
        ) -> Result<(), GatewayError> {
            if ctx.principal == Principal::MasterKey {
                Ok(())
            } else {
                Err(
                    GatewayError::new(ErrorKind::PermissionDenied, "Only the master key may call.")
                        .with_code("forbidden"),
                )
            }
        }
    }

    #[tokio::test]
    async fn unconfigured_chain_lets_everyone_in_as_open() {
        let stages = Stages::default();
        let mut ctx = Context::default();
        stages.authenticate(&req(&[]), &mut ctx).unwrap();
        assert_eq!(ctx.principal, Principal::Open);
        let body = RequestBody::parse(br#"{"model":"m"}"#).unwrap();
        stages.admit(&mut ctx, &body).await.unwrap();
        assert!(stages
            .cache_lookup(&mut ctx, &body, "m")
            .await
            .unwrap()
            .is_none());
        assert_eq!(ctx.cache, crate::context::CacheStatus::NotConfigured);
    }

    #[tokio::test]
    async fn master_key_is_the_first_authenticator_and_an_admit_stage_can_refuse() {
        let stages = Stages::default()
            .authenticate_with(MasterKey("sk-1".into()))
            .admit_with(MasterOnly);
        let body = RequestBody::parse(br#"{"model":"m"}"#).unwrap();

        let mut ctx = Context::default();
        let e = stages.authenticate(&req(&[]), &mut ctx).unwrap_err();
        assert_eq!(
            (e.status, e.code.as_deref()),
            (401, Some("invalid_api_key"))
        );
        assert_eq!(ctx.principal, Principal::Anonymous);
        // Not authenticated: the admission stage refuses with its own 4xx.
        let e = stages.admit(&mut ctx, &body).await.unwrap_err();
        assert_eq!((e.status, e.code.as_deref()), (403, Some("forbidden")));
        assert!(String::from_utf8_lossy(&e.body()).contains("Only the master key may call."));

        let mut ctx = Context::default();
        stages
            .authenticate(&req(&[("authorization", "Bearer sk-1")]), &mut ctx)
            .unwrap();
        assert_eq!(ctx.principal, Principal::MasterKey);
        stages.admit(&mut ctx, &body).await.unwrap();
    }
}
