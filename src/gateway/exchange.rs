//! One LLM call, end to end: parse the client body (read by [`super::body`]) once, then the
//! attempt loop:
//!
//! ```text
//!  group ─► select (tier, cooldown, limits, strategy) ─► attempt ─► answered
//!              ▲                                            │ failed before the first byte
//!              └── retry (another deployment first; ◄── classify: cool down? retry budget?
//!                  backoff / Retry-After)                   │ budget spent
//!  fallback group (fallbacks / context_window_fallbacks / ◄─┘
//!  content_policy_fallbacks / default_fallbacks, ≤ max_fallbacks) ─► same loop
//! ```
//!
//! A retry that could only wait for a deployment already tried is skipped when a fallback group
//! can take the request: the fallback is tried at once (backoff only when waiting is the only
//! option).
//!
//! An attempt has its provider build the native request, drives it through the pooled
//! connector and answers the client, whole (exact Content-Length) or as a stream translated
//! event by event. Nothing is written to the client until an attempt has its answer (for
//! streams: its first translated bytes), so everything before that can be retried or fall back;
//! after it, an upstream failure ends the stream with an error event. Deadlines: the request's
//! `timeout` bounds everything (retries, backoff and fallbacks included); each attempt is also
//! bounded by its deployment's `timeout`, and `stream_timeout` bounds the wait for the first
//! byte and every silence between chunks. The client connection is watched throughout: a
//! hang-up drops the upstream request at once and frees its slot.

use super::respond;
use super::sink::ResponseSink;

/// `n` > 1 on providers without `n`: a child module, as it drives this module's attempt
/// machinery.
#[path = "fanout.rs"]
mod fanout;
use crate::app::{App, Live};
use crate::context::{unix_now, Context, ResponseId, Wire};
use crate::error::{ErrorKind, GatewayError, GatewayResult};
use crate::ingress::{messages, Egress};
use crate::openai::request::check_model_name;
use crate::openai::RequestBody;
use crate::providers::{
    MessagesEndpoint, MessagesHeaders, Operation, Outbound, RequestContext, StreamTranslator,
};
use crate::router::cooldown::error_class;
use crate::router::filter::{Region, RouteFilter};
use crate::router::{clock, rng, Admission, Deployment, ModelGroup, Snapshot, Unavailable};
use crate::upstream::UpstreamResponse;
use bytes::{Bytes, BytesMut};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest upstream (non-streaming) response body read into memory.
const MAX_RESPONSE_BODY: usize = 256 * 1024 * 1024;
/// Largest upstream error body read (the rest is not needed to explain the error).
const MAX_ERROR_BODY: usize = 1024 * 1024;
/// First backoff step when a retry has to wait for the same deployment(s).
const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// Longest computed backoff (an upstream Retry-After may ask for more).
const BACKOFF_MAX: Duration = Duration::from_secs(8);

pub fn model_not_found(model: &str) -> GatewayError {
    GatewayError::new(
        ErrorKind::NotFound,
        format!("The model '{model}' does not exist on this gateway. GET /v1/models lists the model names it serves."),
    )
    .with_param("model")
    .with_code("model_not_found")
}

/// A `/v1/messages` call (see [`crate::ingress::messages`]): the client's own body for
/// Anthropic-family deployments, and what translating answers back for the rest needs.
pub struct MessagesIngress<'a> {
    /// The client's Messages body, as sent.
    pub raw: &'a RequestBody<'a>,
    /// The client's `anthropic-version` / `anthropic-beta`, forwarded to Anthropic.
    pub headers: &'a MessagesHeaders,
    /// The chat translations of `raw`, made when a deployment first needs one (never for a
    /// pass-through: routing runs on `raw`), kept for retries and fallbacks: one per way
    /// documents reach a provider ([`messages::Documents::slot`]).
    pub chat: [std::sync::OnceLock<Vec<u8>>; 3],
}

impl<'a> MessagesIngress<'a> {
    pub fn new(raw: &'a RequestBody<'a>, headers: &'a MessagesHeaders) -> Self {
        MessagesIngress {
            raw,
            headers,
            chat: Default::default(),
        }
    }

    /// The chat body for a deployment of `provider`, which does not speak Messages
    /// (translated once per way documents reach a provider).
    fn chat(&'a self, provider: &'static str) -> GatewayResult<RequestBody<'a>> {
        let documents = messages::Documents::for_provider(provider);
        let slot = &self.chat[documents.slot()];
        let bytes = match slot.get() {
            Some(b) => b,
            None => {
                let b = messages::translate_for(self.raw, documents)?;
                slot.get_or_init(|| b)
            }
        };
        RequestBody::parse(bytes)
    }
}

/// A `/v1/responses` or `/v1/completions` call whose group has a deployment with that API
/// upstream (see `gateway::ingress`): the client's own body for those deployments, and what
/// translated attempts must refuse.
pub struct NativeIngress<'a> {
    /// Which API the client speaks.
    pub api: crate::ingress::Ingress,
    /// The client's body, as sent.
    pub raw: &'a RequestBody<'a>,
    /// Why the body cannot be translated onto chat (a built-in tool, `previous_response_id`,
    /// `suffix`, …): the answer of every attempt on a deployment without the API.
    pub refusal: Option<GatewayError>,
    /// The deployment that made the client's `previous_response_id`: only it is tried.
    pub pinned: Option<Arc<str>>,
    /// Set when a native attempt answers: the answer is the upstream's, not chat's.
    pub answered_natively: std::sync::atomic::AtomicBool,
}

/// What every attempt of one client request shares.
struct Call<'a> {
    app: &'a App,
    snapshot: &'a Snapshot,
    /// The model the client asked for, as metrics label it (a wildcard group's pattern for a
    /// name it matched: never a value only the client chose).
    requested: &'a str,
    /// The model name as the client sent it (after key aliases): what a translated Messages
    /// answer names.
    requested_name: &'a str,
    parsed: &'a RequestBody<'a>,
    op: Operation,
    stream: bool,
    include_usage: bool,
    /// Embeddings: the client asked for `encoding_format: base64`.
    embeddings_base64: bool,
    response_id: &'a str,
    created: u64,
    /// `router_settings.enable_pre_call_checks`: the prompt's estimated tokens (chat only).
    prompt_tokens: Option<u64>,
    /// The whole request's deadline.
    deadline: Instant,
    /// Size of the request body: the prompt estimate when a stream ends without usage.
    prompt_bytes: usize,
    /// The tags and region this request may use, in every group it tries.
    filter: &'a RouteFilter,
    /// The client speaks Anthropic Messages: passed through or translated back per attempt.
    messages: Option<&'a MessagesIngress<'a>>,
    /// The client's body may be passed through (see `gateway::ingress`).
    native: Option<&'a NativeIngress<'a>>,
    /// The client speaks another OpenAI API (Responses, Completions): chat answers are
    /// rewritten into it per attempt.
    reshape: Option<&'a dyn Egress>,
}

enum GroupOutcome {
    /// A response went out (or the client left): the request is over.
    Done,
    /// Every attempt failed before answering; the last error.
    Failed(GatewayError),
    /// No deployment could take the request (cooling down / at limits); nothing was tried.
    Unavailable(Unavailable),
}

enum AttemptOutcome {
    Done,
    /// Failed before anything reached the client: may be retried or fall back.
    Failed(GatewayError),
}

/// What an attempt has in hand once it can commit to answering. Lives on the stack for one
/// move; boxing the stream variant would cost an allocation per stream for nothing.
#[allow(clippy::large_enum_variant)]
enum Ready<'a> {
    Whole {
        body: Bytes,
        usage: Option<crate::openai::Usage>,
    },
    Stream {
        response: Answer<'a>,
        translator: Box<dyn StreamTranslator>,
        /// Translated bytes so far (never empty unless `ended`).
        first: BytesMut,
        ended: bool,
    },
}

/// Handles a chat or embeddings call. `Err` means nothing was written yet and the caller should
/// answer with the error; once a response has started, errors are written here.
pub async fn handle(
    app: &App,
    live: &Live,
    sink: &mut impl ResponseSink,
    ctx: &mut Context,
    op: Operation,
    body: Bytes,
) -> GatewayResult<()> {
    let parsed = RequestBody::parse(&body)?;
    run(app, live, sink, ctx, op, &parsed, &body, None).await
}

/// [`handle`] for the gateway's own calls made on a client's behalf (the semantic cache's
/// embedding of the prompt): routed under the client's `filter`, so the prompt stays within
/// the client's tags and region, while the client's key (model list, limits, budget) does not
/// apply to it.
pub async fn handle_on_behalf(
    app: &App,
    live: &Live,
    sink: &mut impl ResponseSink,
    ctx: &mut Context,
    op: Operation,
    body: Bytes,
    filter: &RouteFilter,
) -> GatewayResult<()> {
    let parsed = RequestBody::parse(&body)?;
    run_call(
        app,
        live,
        sink,
        ctx,
        op,
        &parsed,
        &body,
        None,
        None,
        None,
        Some(filter),
    )
    .await
}

/// Handles a call whose OpenAI body is parsed: from [`handle`], or translated from another
/// client format (`messages`: Anthropic Messages, see [`crate::ingress`]). `body` is the
/// client's body (its size is the prompt estimate for a stream cut short; telemetry's content
/// capture records it).
#[allow(clippy::too_many_arguments)]
pub async fn run(
    app: &App,
    live: &Live,
    sink: &mut impl ResponseSink,
    ctx: &mut Context,
    op: Operation,
    parsed: &RequestBody<'_>,
    body: &Bytes,
    messages: Option<&MessagesIngress<'_>>,
) -> GatewayResult<()> {
    run_call(
        app, live, sink, ctx, op, parsed, body, messages, None, None, None,
    )
    .await
}

/// [`run`] for `/v1/responses` and `/v1/completions` (see [`crate::ingress`]): `parsed` is the
/// chat translation (or a stand-in when only a native pass-through can serve it), `reshape`
/// rewrites chat answers into the client's API (`None`: none can be translated), `native`
/// the client's own body for deployments that have its API.
#[allow(clippy::too_many_arguments)]
pub async fn run_ingress(
    app: &App,
    live: &Live,
    sink: &mut impl ResponseSink,
    ctx: &mut Context,
    parsed: &RequestBody<'_>,
    body: &Bytes,
    reshape: Option<&dyn Egress>,
    native: Option<&NativeIngress<'_>>,
) -> GatewayResult<()> {
    let op = Operation::Chat;
    run_call(
        app, live, sink, ctx, op, parsed, body, None, native, reshape, None,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn run_call(
    app: &App,
    live: &Live,
    sink: &mut impl ResponseSink,
    ctx: &mut Context,
    op: Operation,
    parsed: &RequestBody<'_>,
    body: &Bytes,
    messages: Option<&MessagesIngress<'_>>,
    native: Option<&NativeIngress<'_>>,
    reshape: Option<&dyn Egress>,
    on_behalf_of: Option<&RouteFilter>,
) -> GatewayResult<()> {
    let snapshot = &live.routing;
    let mut model = parsed.required_str("model")?;
    let requested = model.clone();
    if let (Some(key), Some(keys)) = (ctx.principal.key(), &app.keys) {
        // The team's and key's aliases and the allowed models, before the name is resolved
        // to a group.
        let team = crate::keys::auth::key_team(keys, key);
        model = crate::keys::auth::resolve_model(key, team.as_deref(), model)?;
    }
    check_model_name(&model, || snapshot.group(&model).is_some())?;
    ctx.model = Some(model.to_string());
    match op {
        Operation::Chat if !parsed.has("messages") => {
            return Err(GatewayError::missing_field("messages"))
        }
        Operation::Embeddings if !parsed.has("input") => {
            return Err(GatewayError::missing_field("input"))
        }
        _ => {}
    }
    if ctx.end_user.is_none() {
        ctx.end_user = end_user(parsed);
    }
    if let Some(keys) = &app.keys {
        // Team, user, membership and end user from memory, with their access checks.
        crate::keys::auth::resolve_tenancy(keys, ctx, &requested, &model)?;
    }
    // The tags and region the request may use: refused here (before admission counts it)
    // when they contradict each other; a call on a client's behalf inherits the client's.
    let own_filter;
    let filter = match on_behalf_of {
        Some(f) => f,
        None => {
            own_filter = route_filter(snapshot, parsed, ctx)?;
            &own_filter
        }
    };
    let stream = op == Operation::Chat && parsed.bool_field("stream")?;
    // A translated Messages stream ends with usage in `message_delta`: always asked for.
    let include_usage = stream && (messages.is_some() || parsed.include_usage()?);
    ctx.stream = stream;

    live.stages.admit(ctx, parsed).await?;
    // Keyed on the group (an alias shares its group's entries); a wildcard-served name is
    // its own.
    let group = snapshot.group(&model).map_or(&*model, |g| g.name.as_str());
    if messages.is_none() && native.is_none() && reshape.is_none() {
        if let Some(answer) = live.stages.cache_lookup(ctx, parsed, group).await? {
            respond::cached(sink, ctx, answer).await;
            return Ok(());
        }
        if let Some(answer) = super::semantic::lookup(app, live, ctx, parsed, group, filter).await {
            respond::cached(sink, ctx, answer).await;
            return Ok(());
        }
    } else if live.stages.has_cache() {
        // Messages, Responses and Completions: keyed on the client's own body, the answer kept
        // as the client got it (see `cache::verbatim`).
        let translated_client;
        let client = match (messages, native) {
            (Some(m), _) => m.raw,
            (None, Some(n)) => n.raw,
            (None, None) => {
                translated_client = RequestBody::parse(body)?;
                &translated_client
            }
        };
        if let Some(answer) = live.stages.cache_lookup(ctx, client, group).await? {
            respond::cached(sink, ctx, answer).await;
            return Ok(());
        }
    }
    // An embeddings batch partly found in the cache asks upstream for the rest only; the
    // answer is merged back in `attempt`.
    let reduced = crate::cache::embeddings::take_reduced(ctx);
    let reduced_body;
    let parsed = match &reduced {
        Some(b) => {
            reduced_body = RequestBody::parse(b)?;
            &reduced_body
        }
        None => parsed,
    };

    let primary = snapshot
        .resolve(&model)
        .ok_or_else(|| model_not_found(&model))?;
    let response_id = ResponseId::generate();
    if let Some(trace) = ctx.trace.as_deref_mut() {
        let capture = live
            .stages
            .telemetry()
            .is_some_and(|t| t.config.capture_content);
        crate::telemetry::record_request(trace, parsed, body, capture);
        trace.response_id = Some(response_id);
        // Content capture reports the answer: the response sink keeps it.
        ctx.keep_answer |= capture;
    }
    let call = Call {
        app,
        requested: snapshot.metric_label(&model).unwrap_or(&primary.name),
        requested_name: &model,
        snapshot,
        parsed,
        op,
        stream,
        include_usage,
        embeddings_base64: op == Operation::Embeddings
            && parsed.get("encoding_format").map(|v| v.get()) == Some("\"base64\""),
        response_id: response_id.as_str(),
        created: unix_now(),
        prompt_tokens: (snapshot.config.router.enable_pre_call_checks && op == Operation::Chat)
            .then(|| parsed.estimated_prompt_tokens()),
        deadline: ctx.start + snapshot.request_timeout,
        prompt_bytes: body.len(),
        filter,
        messages,
        native,
        reshape,
    };
    let router = &snapshot.config.router;
    let wait_until = router
        .cooldown_wait
        .map(|w| clock::later(Instant::now(), w));
    loop {
        let mut last_err: Option<GatewayError> = None;
        // Stays Some while every group tried was merely unavailable (nothing was attempted).
        let mut only_unavailable = Some(Unavailable::default());
        let mut fallbacks: &[String] = &[];
        let mut next_fallback = 0;
        let mut group = primary.clone();
        ctx.fallback = None;
        loop {
            // The primary's fallbacks depend on how it fails; a fallback's are what is left.
            let then = if Arc::ptr_eq(&group, &primary) {
                FallbackAfter::ByError
            } else {
                FallbackAfter::Remaining(fallbacks.len() > next_fallback)
            };
            match run_group(&call, &group, then, sink, ctx).await {
                GroupOutcome::Done => return Ok(()),
                GroupOutcome::Failed(e) => {
                    only_unavailable = None;
                    last_err = Some(e);
                }
                GroupOutcome::Unavailable(u) => {
                    if let Some(all) = &mut only_unavailable {
                        all.merge(u);
                    }
                    if last_err.is_none() {
                        last_err = Some(u.to_error(&group.name, Instant::now()));
                    }
                }
            }
            if Arc::ptr_eq(&group, &primary) {
                let kind = last_err
                    .as_ref()
                    .map(|e| e.kind)
                    .unwrap_or(ErrorKind::Internal);
                fallbacks = snapshot.fallbacks_for(&primary.name, kind);
            }
            let Some(next) = fallbacks
                .get(next_fallback)
                .and_then(|name| snapshot.resolve(name))
            else {
                break;
            };
            next_fallback += 1;
            if Instant::now() >= call.deadline {
                break;
            }
            group = next;
            ctx.fallback = Some(group.name.clone());
            ctx.fallbacks_attempted += 1;
        }
        let now = Instant::now();
        if let Some(all) = only_unavailable {
            let err = all.to_error(&primary.name, now);
            if all.all_cooling() {
                crate::alerting::outage(&primary.name, &err.message);
            }
            // Configured: wait (bounded) for the first deployment to recover, then start over.
            if let (true, Some(until), Some(recovery)) =
                (all.all_cooling(), wait_until, all.earliest_recovery)
            {
                let wake = recovery.min(until).min(call.deadline);
                if wake > now && recovery <= until.min(call.deadline) {
                    if !sleep_or_hang_up(wake + Duration::from_millis(1), sink, ctx).await {
                        return Ok(());
                    }
                    continue;
                }
            }
            return Err(err);
        }
        return Err(last_err.unwrap_or_else(|| GatewayError::internal("no attempt was made")));
    }
}

/// What the request may route to: its tags, when `router_settings.enable_tag_filtering` is on
/// (the body's `tags` and `metadata.tags`, the `x-litellm-tags` header, and the key's and its
/// team's `metadata.tags`, as LiteLLM merges them), and its region: the end user's and the
/// key's `allowed_model_region` (`metadata.allowed_model_region`), the most restrictive
/// winning. Both set and different is a request no deployment may serve: refused (400,
/// `no_deployments_in_region`), never settled by letting one side override the other.
/// Tags of the wrong shape are no tags, as in LiteLLM. Allocates nothing when there is none
/// of this.
pub(crate) fn route_filter(
    snapshot: &Snapshot,
    body: &RequestBody<'_>,
    ctx: &Context,
) -> GatewayResult<RouteFilter> {
    let mut filter = RouteFilter::new(&snapshot.config.router);
    let key_meta = ctx.principal.key().map(|k| &k.row.metadata);
    if filter.tag_filtering {
        let tags_of = |raw: Option<&serde_json::value::RawValue>| -> Vec<String> {
            raw.and_then(|r| serde_json::from_str::<Vec<String>>(r.get()).ok())
                .unwrap_or_default()
        };
        #[derive(serde::Deserialize)]
        struct Meta<'a> {
            #[serde(borrow)]
            tags: Option<&'a serde_json::value::RawValue>,
        }
        let meta: Option<Meta<'_>> = body
            .get("metadata")
            .and_then(|m| serde_json::from_str(m.get()).ok());
        filter.add_tags(tags_of(body.get("tags")).iter().map(String::as_str));
        filter.add_tags(
            tags_of(meta.and_then(|m| m.tags))
                .iter()
                .map(String::as_str),
        );
        if let Some(h) = &ctx.tags_header {
            filter.add_tags(h.split(','));
        }
        if snapshot.tag_regex_in_use {
            filter.user_agent_line = ctx
                .user_agent
                .as_deref()
                .map(|ua| format!("User-Agent: {ua}"));
        }
        // Inherited: the key's and its team's `metadata.tags`.
        let team_meta = ctx.tenancy.team.as_ref().map(|t| &t.row.metadata);
        for meta in [key_meta, team_meta].into_iter().flatten() {
            if let Some(tags) = meta.get("tags").and_then(|t| t.as_array()) {
                filter.add_tags(tags.iter().filter_map(|t| t.as_str()));
            }
        }
    }
    let end_user = ctx.tenancy.end_user.as_ref();
    let end_user_region = end_user
        .and_then(|e| e.row.allowed_model_region.as_deref())
        .and_then(Region::parse);
    let key_region = key_meta
        .and_then(|m| m.get("allowed_model_region"))
        .and_then(|r| r.as_str())
        .and_then(Region::parse);
    (filter.region, filter.region_from) = match (key_region, end_user_region) {
        (Some(k), Some(e)) if k != e => {
            return Err(GatewayError::new(
                ErrorKind::BadRequest,
                format!(
                    "The key is pinned to region '{}' (its metadata.allowed_model_region) and the end user '{}' to region '{}' (their allowed_model_region): no deployment can serve both, so the request was not sent. Pin the end user to '{}' (/customer/update) or call with a key for region '{}'.",
                    k.as_str(),
                    end_user.map_or("", |e| e.row.user_id.as_str()),
                    e.as_str(),
                    k.as_str(),
                    e.as_str(),
                ),
            )
            .with_param("user")
            .with_code("no_deployments_in_region"));
        }
        (Some(k), Some(_)) => (Some(k), "key and end user"),
        (Some(k), None) => (Some(k), "key"),
        (None, Some(e)) => (Some(e), "end user"),
        (None, None) => (None, ""),
    };
    Ok(filter)
}

/// The body's `user` (OpenAI's end-user field), when it is a non-empty string.
fn end_user(body: &RequestBody<'_>) -> Option<String> {
    let raw = body.get("user")?;
    let user: std::borrow::Cow<'_, str> = serde_json::from_str(raw.get()).ok()?;
    (!user.is_empty()).then(|| user.into_owned())
}

/// Whether another group takes over when this one gives up (see [`run_group`]).
#[derive(Clone, Copy)]
enum FallbackAfter {
    /// The primary group: its fallbacks depend on the error (`Snapshot::fallbacks_for`).
    ByError,
    /// A fallback group: whether the chain has another group after it.
    Remaining(bool),
}

/// Attempts (and retries) one group until it answers, its retry budget is spent, or it has
/// nothing available. A retry that could only go back to a deployment already tried (and so
/// would have to wait out a backoff) is not made when a fallback group can take the request at
/// once: the group gives up and the fallback answers (LiteLLM and Portkey do the same).
async fn run_group(
    call: &Call<'_>,
    group: &ModelGroup,
    then: FallbackAfter,
    sink: &mut impl ResponseSink,
    ctx: &mut Context,
) -> GroupOutcome {
    let router = &call.snapshot.config.router;
    // Deployments tried in this group: a handful at most, on the stack.
    let mut tried: smallvec::SmallVec<[usize; 8]> = smallvec::SmallVec::new();
    let mut retries = 0u32;
    let mut last_err: Option<GatewayError> = None;
    // Pre-call checks: deployments too small for the prompt are never picked.
    let too_small = match call.prompt_tokens {
        Some(tokens) => group.too_small_for(tokens),
        None => Vec::new(),
    };
    if !too_small.is_empty() && too_small.len() == group.deployments.len() {
        let tokens = call.prompt_tokens.unwrap_or_default();
        return GroupOutcome::Failed(group.context_window_exceeded(tokens));
    }
    // Tags and region: what they rule out is never picked, by this or any later attempt.
    let excluded = match group.ruled_out(call.filter) {
        Ok(ruled_out) if ruled_out.is_empty() => too_small,
        Ok(mut ruled_out) => {
            ruled_out.extend(too_small);
            if ruled_out.len() >= group.deployments.len()
                && (0..group.deployments.len()).all(|i| ruled_out.contains(&i))
            {
                let tokens = call.prompt_tokens.unwrap_or_default();
                return GroupOutcome::Failed(group.context_window_exceeded(tokens));
            }
            ruled_out
        }
        Err(e) => return GroupOutcome::Failed(e),
    };
    let excluded = responses_exclusions(call, group, excluded);
    loop {
        let now = Instant::now();
        if now >= call.deadline {
            return GroupOutcome::Failed(last_err.unwrap_or_else(|| request_deadline(call)));
        }
        let admission = match group.select_excluding(now, call.stream, &tried, &excluded, router) {
            Ok(a) => a,
            Err(u) => {
                return match last_err {
                    Some(e) => GroupOutcome::Failed(e),
                    None => GroupOutcome::Unavailable(u),
                }
            }
        };
        if !tried.contains(&admission.index) {
            tried.push(admission.index);
        }
        let deployment = admission.deployment.clone();
        ctx.attempts += 1;
        ctx.deployment = Some(deployment.clone());
        let err = match attempt(call, admission, sink, ctx).await {
            AttemptOutcome::Done => return GroupOutcome::Done,
            AttemptOutcome::Failed(e) => e,
        };
        let budget = match router.retry_policy.get(&error_class(&err)) {
            Some(n) => *n,
            None if err.is_retryable() => deployment
                .config
                .params
                .num_retries
                .unwrap_or(router.num_retries),
            None => 0,
        };
        if retries >= budget {
            return GroupOutcome::Failed(err);
        }
        retries += 1;
        let elsewhere = group.deployments.iter().enumerate().any(|(i, d)| {
            !tried.contains(&i)
                && !excluded.contains(&i)
                && !matches!(
                    d.state.availability(Instant::now()),
                    crate::router::Availability::Cooling(_)
                )
        });
        if !elsewhere {
            let fallback_waits = match then {
                FallbackAfter::ByError => !call
                    .snapshot
                    .fallbacks_for(&group.name, err.kind)
                    .is_empty(),
                FallbackAfter::Remaining(more) => more,
            };
            if fallback_waits {
                // Waiting for the same deployment(s) would only delay the fallback.
                return GroupOutcome::Failed(err);
            }
        }
        if !elsewhere
            && err
                .retry_after
                .is_some_and(|s| Duration::from_secs(s) > BACKOFF_MAX)
        {
            // The upstream asks for a longer pause than we would ever hold a client for: answer
            // now and pass its Retry-After on (the client's SDK waits for it anyway).
            return GroupOutcome::Failed(err);
        }
        let wait = backoff(&err, retries, router.retry_after, elsewhere);
        let now = Instant::now();
        if clock::later(now, wait) >= call.deadline {
            // Waiting as asked would outlive the request: answer now with what we know.
            return GroupOutcome::Failed(err);
        }
        if !wait.is_zero() && !sleep_or_hang_up(clock::later(now, wait), sink, ctx).await {
            return GroupOutcome::Done;
        }
        last_err = Some(err);
    }
}

/// A native-capable ingress call's own exclusions: a `previous_response_id` lives on the
/// deployment that made it, so when this group has that one every other is ruled out; a body
/// only the client's API can serve rules out the deployments without it (unless none has it:
/// they then refuse it, naming the field).
fn responses_exclusions(
    call: &Call<'_>,
    group: &ModelGroup,
    mut excluded: Vec<usize>,
) -> Vec<usize> {
    let Some(r) = call.native else {
        return excluded;
    };
    let deployments = &group.deployments;
    let pinned = r
        .pinned
        .as_deref()
        .and_then(|id| deployments.iter().position(|d| d.id() == id));
    if let Some(at) = pinned {
        excluded.extend((0..deployments.len()).filter(|&i| i != at));
    } else if r.refusal.is_some() && deployments.iter().any(|d| r.api.is_native(&*d.provider)) {
        let without = |i: &usize| !r.api.is_native(&*deployments[*i].provider);
        excluded.extend((0..deployments.len()).filter(without));
    }
    excluded
}

/// How long to wait before retry number `retry` (1-based). Another deployment can take it:
/// at once (LiteLLM does the same), else exponential backoff with jitter; an upstream
/// Retry-After replaces the computed wait, and `retry_after` is always the least wait.
fn backoff(err: &GatewayError, retry: u32, least: Duration, elsewhere: bool) -> Duration {
    if elsewhere {
        return least;
    }
    let computed = match err.retry_after {
        Some(secs) => Duration::from_secs(secs),
        None => {
            let exp = BACKOFF_BASE
                .saturating_mul(1u32 << retry.saturating_sub(1).min(8))
                .min(BACKOFF_MAX);
            // Jitter in [50%, 100%] so synchronized clients spread out.
            exp.mul_f64(0.5 + rng::unit() * 0.5)
        }
    };
    computed.max(least)
}

/// Sleeps until `until`, or returns false at once if the client hangs up meanwhile.
async fn sleep_or_hang_up(until: Instant, sink: &mut impl ResponseSink, ctx: &mut Context) -> bool {
    tokio::select! {
        biased;
        _ = tokio::time::sleep_until(until.into()) => true,
        _ = sink.hung_up() => {
            ctx.client_disconnected = true;
            false
        }
    }
}

fn request_deadline(call: &Call<'_>) -> GatewayError {
    GatewayError::timeout(format!(
        "The request did not complete within its timeout of {:.1}s (router_settings.timeout).",
        call.snapshot.request_timeout.as_secs_f64()
    ))
}

/// One attempt on one deployment. Everything up to the point of answering races the client
/// connection: a hang-up drops the attempt (and with it the upstream request and the slot).
async fn attempt(
    call: &Call<'_>,
    admission: Admission,
    sink: &mut impl ResponseSink,
    ctx: &mut Context,
) -> AttemptOutcome {
    let deployment = admission.deployment.clone();
    match fanout::plan(
        call,
        deployment.provider.as_ref(),
        &call.snapshot.config.server,
    ) {
        Ok(None) => {}
        Ok(Some(plan)) => return fanout::attempt(call, admission, plan, sink, ctx).await,
        Err(e) => return AttemptOutcome::Failed(e),
    }
    let cx = request_context(call, &deployment);
    let start = Instant::now();
    let deadline = call.deadline.min(start + deployment.timeout);
    // With telemetry on: the attempt's CLIENT span, named upstream in `traceparent`.
    let trace_headers = ctx.trace.as_deref_mut().map(|t| {
        let parent = crate::telemetry::begin_attempt(t, &deployment);
        (parent, t.tracestate.clone())
    });
    let ready = tokio::select! {
        biased;
        r = until_ready(call, &deployment, &cx, deadline, trace_headers) => r,
        _ = sink.hung_up() => {
            ctx.client_disconnected = true;
            ctx.upstream_time += start.elapsed();
            if let Some(t) = ctx.trace.as_deref_mut() {
                crate::telemetry::end_attempt(t, None);
            }
            return AttemptOutcome::Done;
        }
    };
    ctx.upstream_time += start.elapsed();
    let ready = match ready {
        Ok(r) => r,
        Err(e) => {
            // Upstream text may quote the credential it was sent: redacted before it is logged
            // or can reach the client.
            let e = call.snapshot.secrets.redact_error(e);
            if let Some(t) = ctx.trace.as_deref_mut() {
                crate::telemetry::end_attempt(t, Some(&e));
            }
            attempt_failed(call, admission, &e);
            return AttemptOutcome::Failed(e);
        }
    };
    match ready {
        Ready::Whole { body, usage } => {
            let latency = start.elapsed();
            ctx.usage = usage;
            ctx.price_usage();
            if let Some(t) = ctx.trace.as_deref_mut() {
                crate::telemetry::end_attempt(t, None);
            }
            let body = crate::cache::embeddings::merge(ctx, body);
            respond::json(sink, ctx, 200, body).await;
            let tokens = usage.map(|u| u.total_tokens).unwrap_or(0);
            call.app
                .metrics
                .deployment_attempt(&deployment, call.requested, None);
            if admission.probe {
                crate::alerting::recovered(&deployment.config.model_name, deployment.id());
            }
            admission.succeeded(Instant::now(), latency, None, tokens);
        }
        Ready::Stream {
            mut response,
            mut translator,
            first,
            ended,
        } => {
            let ttft = start.elapsed();
            let failure = stream_to_client(
                &mut response,
                translator.as_mut(),
                first,
                ended,
                &deployment,
                &call.snapshot.secrets,
                deadline,
                sink,
                ctx,
            )
            .await;
            ctx.usage = translator.usage();
            if let Some(t) = ctx.trace.as_deref_mut() {
                crate::telemetry::end_attempt(t, failure.as_ref());
            }
            let complete = failure.is_none() && !ctx.client_disconnected && ctx.usage.is_some();
            ctx.settle_stream_usage(complete, call.prompt_bytes);
            let now = Instant::now();
            match failure {
                Some(e) => attempt_failed(call, admission, &e),
                None if ctx.client_disconnected => {}
                None => {
                    // A stream's length is the answer's, not the deployment's speed: streams
                    // feed the time to first token only (as LiteLLM's latency routing does).
                    let tokens = ctx.usage.map(|u| u.total_tokens).unwrap_or(0);
                    call.app
                        .metrics
                        .deployment_attempt(&deployment, call.requested, None);
                    if admission.probe {
                        crate::alerting::recovered(&deployment.config.model_name, deployment.id());
                    }
                    admission.succeeded(now, ttft, Some(ttft), tokens);
                }
            }
        }
    }
    AttemptOutcome::Done
}

/// What the deployment's provider is told about this call besides the body.
fn request_context<'c>(call: &Call<'c>, deployment: &'c Deployment) -> RequestContext<'c> {
    RequestContext {
        op: call.op,
        model: &deployment.config.model,
        stream: call.stream,
        include_usage: call.include_usage,
        response_id: call.response_id,
        created: call.created,
        drop_params: deployment.drop_params,
        embeddings_base64: call.embeddings_base64,
    }
}

/// Records a failed attempt against its deployment: the cooldown rules, the per-deployment
/// failure metric, and the cooldown metric (with the status that caused it) when one starts.
fn attempt_failed(call: &Call<'_>, admission: Admission, err: &GatewayError) {
    let deployment = admission.deployment.clone();
    call.app
        .metrics
        .deployment_attempt(&deployment, call.requested, Some(err.status));
    if let Some(d) = admission.failed(Instant::now(), err, &call.snapshot.cooldown) {
        call.app.metrics.cooled_down(&deployment, err.status);
        crate::alerting::cooled_down(
            &deployment.config.model_name,
            deployment.id(),
            deployment.api_base(),
            d,
            &err.message,
        );
        log::warn!(
            "deployment {} ({}) cooling down for {:.1}s after: {}",
            deployment.id(),
            deployment.config.model_name,
            d.as_secs_f64(),
            err
        );
    }
}

/// Drives an attempt up to the point where the gateway can answer: a whole translated body,
/// or a stream's first translated bytes. Any error here can still be retried.
async fn until_ready<'a>(
    call: &Call<'a>,
    deployment: &'a Deployment,
    cx: &RequestContext<'_>,
    deadline: Instant,
    trace_headers: Option<(http::HeaderValue, Option<http::HeaderValue>)>,
) -> GatewayResult<Ready<'a>> {
    let provider = deployment.provider.as_ref();
    if !provider.supports(call.op) {
        return Err(GatewayError::invalid_param(
            "model",
            match call.op {
                Operation::Chat => format!(
                    "The model '{}' is served by {}, which does not do chat completions; send it to /v1/embeddings instead.",
                    deployment.config.model_name,
                    provider.name()
                ),
                Operation::Embeddings => format!(
                    "The model '{}' is served by {}, which does not do embeddings; send it to /v1/chat/completions instead.",
                    deployment.config.model_name,
                    provider.name()
                ),
            },
        ));
    }
    let client = &call.app.client;
    let mut provider_call = crate::providers::Call::start(provider, cx);
    // The deployment's default call parameters, extra headers and dropped parameters.
    let defaults = &deployment.config.params.call_defaults;
    // A Messages client's own body, to a deployment that speaks Messages natively.
    let native = match call.messages {
        Some(m) => {
            let request =
                provider.messages_request(m.raw, cx, MessagesEndpoint::Create, m.headers, client);
            within(deadline, async { request.await.transpose() }).await?
        }
        None => match call.native {
            Some(r) => match r.api.native_request(provider, r.raw, cx, client).await {
                Some(request) => Some(request?),
                // Only the Responses API can serve this body: refused here, naming the field.
                None => match &r.refusal {
                    Some(refusal) => return Err(refusal.clone()),
                    None => None,
                },
            },
            None => None,
        },
    };
    let passthrough = native.is_some();
    let outbound = match native {
        Some(request) => Outbound::Send(request),
        None => {
            let translated = match call.messages {
                Some(m) => Some(m.chat(provider.name())?),
                None => None,
            };
            let parsed = translated.as_ref().unwrap_or(call.parsed);
            let shaped = defaults.apply(parsed, call.op == Operation::Chat);
            let body = shaped.as_ref().unwrap_or(parsed);
            // Opening may call upstreams itself (Bedrock Titan embeddings): under the
            // deadline too.
            within(deadline, provider_call.open(body, cx, client)).await?
        }
    };
    let mut response = match outbound {
        // A provider with no upstream (the mock) answered in-process.
        Outbound::Answered(chunks) => Answer::InProcess(chunks.into_iter()),
        Outbound::Send(mut request) => {
            defaults.apply_headers(&mut request.headers);
            if let Some((traceparent, tracestate)) = trace_headers {
                request
                    .headers
                    .retain(|(n, _)| n != "traceparent" && n != "tracestate");
                request.headers.push((
                    http::header::HeaderName::from_static("traceparent"),
                    traceparent,
                ));
                if let Some(state) = tracestate {
                    request
                        .headers
                        .push((http::header::HeaderName::from_static("tracestate"), state));
                }
            }
            let endpoint = deployment.endpoint.as_ref().ok_or_else(|| {
                GatewayError::internal("The deployment's provider has no upstream endpoint.")
            })?;
            // Until the first byte: `stream_timeout` for streams, the attempt's deadline
            // otherwise.
            let left = deadline.saturating_duration_since(Instant::now());
            let first_byte = if call.stream {
                deployment.stream_timeout.min(left)
            } else {
                left
            };
            // Pinned where it is built, so the timeout wraps a pointer instead of taking (and
            // moving) the whole connect-and-send future.
            let send = std::pin::pin!(client.send(endpoint, &request, None));
            let sent = tokio::time::timeout(first_byte, send).await;
            let mut response = match sent {
                Ok(r) => r?,
                Err(_) => {
                    return Err(GatewayError::timeout(format!(
                        "{} did not start answering within {:.1}s.",
                        provider.name(),
                        first_byte.as_secs_f64()
                    )))
                }
            };
            if !(200..300).contains(&response.status) {
                let err_body = within(deadline, response.body(MAX_ERROR_BODY))
                    .await
                    .unwrap_or_default();
                return Err(provider_call.map_error(response.status, &response.header, &err_body));
            }
            Answer::Upstream(response)
        }
    };
    if !call.stream {
        let whole = within(deadline, response.body(MAX_RESPONSE_BODY)).await?;
        if passthrough {
            let usage = match call.messages {
                Some(_) => messages::usage_of(&whole),
                None => match call.native.map(|n| n.api) {
                    Some(crate::ingress::Ingress::Completions) => {
                        crate::openai::scan::top_level_usage(&whole).ok().flatten()
                    }
                    _ => crate::ingress::responses::native::usage_of(&whole),
                },
            };
            mark_native(call);
            return Ok(Ready::Whole { body: whole, usage });
        }
        let translated = provider_call.parse_response(whole, cx)?;
        let body = match (call.messages, call.reshape) {
            (Some(_), _) => {
                messages::from_openai(&translated.body, call.response_id, call.requested_name)?
            }
            (None, Some(egress)) => egress.whole(&translated.body)?,
            (None, None) => translated.body,
        };
        return Ok(Ready::Whole {
            body,
            usage: translated.usage,
        });
    }
    let mut translator: Box<dyn StreamTranslator> = match call.messages {
        None if passthrough => {
            mark_native(call);
            match call.native.map(|n| n.api) {
                Some(crate::ingress::Ingress::Completions) => {
                    crate::providers::openai_compat::passthrough(provider.name(), cx.include_usage)
                }
                _ => Box::<crate::ingress::responses::native::PassThrough>::default(),
            }
        }
        Some(_) if passthrough => Box::new(messages::PassThrough::new(provider.messages_framing())),
        Some(_) => Box::new(messages::ToMessages::new(
            provider_call.stream_translator(cx),
            call.response_id,
            call.requested_name,
        )),
        None => match call.reshape {
            Some(egress) => Box::new(crate::ingress::Rewritten::new(
                provider_call.stream_translator(cx),
                egress.stream(),
            )),
            None => provider_call.stream_translator(cx),
        },
    };
    let mut first = BytesMut::with_capacity(4096);
    loop {
        let gap = deployment
            .stream_timeout
            .min(deadline.saturating_duration_since(Instant::now()));
        match tokio::time::timeout(gap, response.chunk()).await {
            Err(_) => {
                return Err(GatewayError::timeout(format!(
                    "{} sent no stream data within {:.1}s.",
                    provider.name(),
                    gap.as_secs_f64()
                )))
            }
            Ok(Err(e)) => return Err(e),
            Ok(Ok(None)) => {
                translator.finish(&mut first)?;
                return Ok(Ready::Stream {
                    response,
                    translator,
                    first,
                    ended: true,
                });
            }
            Ok(Ok(Some(chunk))) => {
                translator.feed(&chunk, &mut first)?;
                if !first.is_empty() {
                    return Ok(Ready::Stream {
                        response,
                        translator,
                        first,
                        ended: false,
                    });
                }
            }
        }
    }
}

/// A native attempt is about to answer: the client gets the upstream's answer as
/// it is (see `gateway::ingress`).
fn mark_native(call: &Call<'_>) {
    if let Some(r) = call.native {
        r.answered_natively
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Awaits `fut` until `deadline`, as a 504 after it.
async fn within<T>(
    deadline: Instant,
    fut: impl std::future::Future<Output = GatewayResult<T>>,
) -> GatewayResult<T> {
    // The timeout wraps a pointer to the pinned future rather than moving it once more.
    let fut = std::pin::pin!(fut);
    match tokio::time::timeout_at(deadline.into(), fut).await {
        Ok(r) => r,
        Err(_) => Err(GatewayError::timeout(
            "The upstream did not finish within the request timeout.",
        )),
    }
}

/// Pipes a 2xx upstream stream to the client through the translator, starting with the bytes
/// already translated. Waits on the upstream and on the client at once, so a client hang-up
/// drops the upstream request immediately. Returns the upstream failure that cut the stream.
#[allow(clippy::too_many_arguments)]
async fn stream_to_client(
    response: &mut Answer<'_>,
    translator: &mut dyn StreamTranslator,
    mut out: BytesMut,
    mut ended: bool,
    deployment: &Deployment,
    secrets: &crate::redact::Secrets,
    deadline: Instant,
    sink: &mut impl ResponseSink,
    ctx: &mut Context,
) -> Option<GatewayError> {
    if !respond::sse_head(sink, ctx).await {
        return None;
    }
    let mut failure = None;
    let mut cost_stamped = false;
    loop {
        if !out.is_empty() {
            if ctx.ttft.is_none() {
                ctx.ttft = Some(ctx.start.elapsed());
            }
            // The final usage chunk (only sent when the client asked for usage) carries the
            // cost, as LiteLLM's does.
            if let (false, false, Wire::OpenAi, Some(price), Some(usage)) = (
                cost_stamped,
                !translator.writes_chat_chunks(),
                ctx.wire,
                &deployment.price,
                translator.usage(),
            ) {
                cost_stamped = crate::cost::stamp_stream_usage(&mut out, || price.cost(&usage));
            }
            ctx.events_sent += memchr::memmem::find_iter(&out, b"data: ").count() as u64;
            if !respond::send_body(sink, ctx, out.split().freeze(), ended).await {
                return failure;
            }
        } else if ended {
            respond::send_body(sink, ctx, Bytes::new(), true).await;
        }
        if ended {
            return failure;
        }
        let gap = deployment
            .stream_timeout
            .min(deadline.saturating_duration_since(Instant::now()));
        let next = tokio::select! {
            biased;
            r = tokio::time::timeout(gap, response.chunk()) => r,
            _ = sink.hung_up() => {
                ctx.client_disconnected = true;
                return None;
            }
        };
        let result = match next {
            Err(_) if Instant::now() >= deadline => Err(GatewayError::timeout(
                "The stream did not finish within the request timeout.",
            )),
            Err(_) => Err(GatewayError::timeout(format!(
                "The upstream stream went silent for more than {:.1}s.",
                gap.as_secs_f64()
            ))),
            Ok(Err(e)) => Err(e),
            Ok(Ok(None)) => translator.finish(&mut out).map(|_| true),
            Ok(Ok(Some(chunk))) => {
                let mut r = translator.feed(&chunk, &mut out).map(|_| false);
                // Pingora hands out one HTTP chunk per call even when the upstream's last read
                // brought several (OpenAI sends one per event): take the ones already here so
                // they reach the client in one write instead of one syscall each. Never waits.
                while matches!(r, Ok(false)) && out.len() < COALESCE_LIMIT {
                    r = match ready_now(response.chunk()).await {
                        None => break,
                        Some(Ok(Some(c))) => translator.feed(&c, &mut out).map(|_| false),
                        Some(Ok(None)) => translator.finish(&mut out).map(|_| true),
                        Some(Err(e)) => Err(e),
                    };
                }
                r
            }
        };
        ended = match result {
            Ok(ended) => ended,
            Err(e) => {
                // Mid-stream failure: end the stream with an error event in the client's API.
                let e = secrets.redact_error(e);
                ctx.error = Some(e.message.clone());
                // The client's API's error event: the translator's own, else by the wire.
                if !translator.write_error(&e, &mut out) {
                    if ctx.wire == Wire::Anthropic {
                        out.extend_from_slice(&messages::error::sse_event(&e));
                    } else {
                        out.extend_from_slice(&e.sse_event());
                        out.extend_from_slice(b"data: [DONE]\n\n");
                    }
                }
                failure = Some(e);
                true
            }
        };
    }
}

/// Most bytes gathered from already-arrived upstream chunks before writing to the client.
const COALESCE_LIMIT: usize = 64 * 1024;

/// Polls `fut` once: its output if it is ready now, `None` (dropping it) if it would wait.
/// Used only on futures that are cancel-safe while pending (Pingora's body reads).
async fn ready_now<F: std::future::Future>(fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match std::future::Future::poll(fut.as_mut(), cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        })
    })
    .await
}

/// Where an attempt's 2xx answer comes from: an upstream response, or the chunks a provider
/// call made in-process (the mock), read the same way. On the stack for one attempt: boxing the
/// upstream variant would cost an allocation per request for nothing.
#[allow(clippy::large_enum_variant)]
enum Answer<'c> {
    Upstream(UpstreamResponse<'c>),
    InProcess(std::vec::IntoIter<Bytes>),
}

impl Answer<'_> {
    /// The next body chunk, `None` at the end. An in-process chunk is handed out after a yield,
    /// as if it had just arrived: a stream goes out a chunk per write, as an upstream's would.
    /// Cancel-safe: a chunk is taken only once the future completes.
    async fn chunk(&mut self) -> GatewayResult<Option<Bytes>> {
        match self {
            Answer::Upstream(r) => r.chunk().await,
            Answer::InProcess(chunks) => {
                if !chunks.as_slice().is_empty() {
                    tokio::task::yield_now().await;
                }
                Ok(chunks.next())
            }
        }
    }

    /// The whole body, refusing more than `limit` bytes.
    async fn body(&mut self, limit: usize) -> GatewayResult<Bytes> {
        match self {
            Answer::Upstream(r) => r.body(limit).await,
            Answer::InProcess(chunks) => Ok(match chunks.len() {
                1 => chunks.next().unwrap_or_default(),
                _ => chunks.collect::<Vec<_>>().concat().into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_goes_elsewhere_at_once_else_waits() {
        let e500 = GatewayError::from_upstream(500, "x");
        assert_eq!(backoff(&e500, 1, Duration::ZERO, true), Duration::ZERO);
        assert_eq!(
            backoff(&e500, 1, Duration::from_millis(200), true),
            Duration::from_millis(200)
        );
        for retry in 1..=6 {
            let d = backoff(&e500, retry, Duration::ZERO, false);
            let cap = BACKOFF_BASE
                .saturating_mul(1 << (retry - 1))
                .min(BACKOFF_MAX);
            assert!(d >= cap / 2 && d <= cap, "retry {retry}: {d:?}");
        }
        let rl = GatewayError::from_upstream(429, "x").with_retry_after(Some(3));
        assert_eq!(
            backoff(&rl, 1, Duration::ZERO, false),
            Duration::from_secs(3)
        );
        assert_eq!(
            backoff(&rl, 1, Duration::from_secs(5), false),
            Duration::from_secs(5)
        );
    }
}
