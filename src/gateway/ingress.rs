//! The ingress APIs' hook into the exchange (`/v1/responses`, `/v1/completions`): the request
//! is translated into a chat body ([`crate::ingress`]) and run by the chat exchange, so it gets
//! the same stages, routing, retries, fallbacks, cooldowns and accounting; each attempt's answer
//! is rewritten into the client's format there ([`crate::ingress::Egress`]). Error answers are
//! OpenAI error objects, which both APIs use.
//!
//! A call whose model group has a deployment with the client's API upstream (the Responses
//! API on OpenAI and Azure OpenAI, legacy completions on `text-completion-openai`) also carries
//! the client's own body ([`exchange::NativeIngress`]): such a deployment gets it with only
//! `model` replaced, and its answer reaches the client unchanged ([`NoteResponseId`] notes a
//! Responses answer's id, so a `previous_response_id` goes back to that deployment). A body
//! only that API can serve (built-in tools, stored state, `suffix`, ...) is then refused,
//! naming the field, by the deployments without it.

use super::exchange::{self, NativeIngress};
use super::sink::ResponseSink;
use crate::app::{App, Live};
use crate::context::Context;
use crate::error::{GatewayError, GatewayResult};
use crate::ingress::Ingress;
use crate::openai::RequestBody;
use bytes::Bytes;
use pingora_http::ResponseHeader;
use std::sync::atomic::{AtomicBool, Ordering};

/// Serves one ingress request. `Err`: nothing was written; answer with the error.
pub async fn handle(
    app: &App,
    live: &Live,
    sink: &mut impl ResponseSink,
    ctx: &mut Context,
    ingress: Ingress,
    body: Bytes,
) -> GatewayResult<()> {
    if live
        .routing
        .deployments()
        .any(|d| ingress.is_native(&*d.provider))
    {
        let raw = RequestBody::parse(&body)?;
        if has_native_deployment(app, live, ctx, ingress, &raw) {
            return native_capable(app, live, sink, ctx, ingress, &raw, &body).await;
        }
    }
    let translated = crate::ingress::translate(ingress, &body)?;
    let parsed = RequestBody::parse(&translated.chat)?;
    let egress = Some(translated.egress.as_ref());
    exchange::run_ingress(app, live, sink, ctx, &parsed, &body, egress, None).await
}

/// Largest stored-response answer read (a Response object, a page of input items).
const MAX_STORED_BODY: usize = 64 * 1024 * 1024;

/// `GET`/`DELETE /v1/responses/{id}`, `GET …/input_items`, `POST …/cancel` (`rest`: the path
/// after `/responses/`): forwarded to the deployment that made the response, as remembered
/// ([`crate::ingress::responses::native::Origins`]), else to the first deployment with the
/// Responses API; the answer goes back as the upstream gave it (a streamed retrieval, `stream`
/// in the query, is refused). The key must be allowed that deployment's model group.
pub async fn stored_response(
    app: &App,
    live: &Live,
    sink: &mut impl ResponseSink,
    ctx: &mut Context,
    method: http::Method,
    rest: &str,
    query: Option<&str>,
) -> GatewayResult<()> {
    if query.is_some_and(|q| q.split('&').any(|kv| kv == "stream=true")) {
        return Err(GatewayError::invalid_param(
            "stream",
            "Streaming a stored response back is not supported; retrieve it without 'stream'.",
        ));
    }
    let snapshot = &live.routing;
    let id = rest.split('/').next().unwrap_or(rest);
    let origin = app.response_origins.get(id);
    let deployment = origin
        .as_deref()
        .and_then(|origin| snapshot.deployments().find(|d| d.id() == origin))
        .or_else(|| snapshot.deployments().find(|d| d.provider.has_responses_api()))
        .ok_or_else(|| {
            GatewayError::new(
                crate::error::ErrorKind::NotFound,
                format!("No deployment here has the Responses API (OpenAI, Azure OpenAI), so response '{id}' cannot be found: responses answered by translation onto chat are not stored."),
            )
            .with_code("not_found")
        })?
        .clone();
    if let (Some(key), Some(keys)) = (ctx.principal.key(), &app.keys) {
        let group = std::borrow::Cow::Borrowed(deployment.config.model_name.as_str());
        let team = crate::keys::auth::key_team(keys, key);
        crate::keys::auth::resolve_model(key, team.as_deref(), group)?;
    }
    ctx.model = Some(deployment.config.model_name.to_string());
    ctx.deployment = Some(deployment.clone());
    let provider = deployment.provider.as_ref();
    let request = provider
        .responses_resource_request(method, rest, query)
        .ok_or_else(|| GatewayError::internal("The deployment has no Responses API."))??;
    let endpoint = deployment
        .endpoint
        .as_ref()
        .ok_or_else(|| GatewayError::internal("The deployment has no upstream endpoint."))?;
    let start = std::time::Instant::now();
    let answered = tokio::time::timeout(deployment.timeout, async {
        let mut response = app.client.send(endpoint, &request, None).await?;
        let body = response.body(MAX_STORED_BODY).await?;
        GatewayResult::Ok((response.status, response.header.clone(), body))
    })
    .await;
    ctx.upstream_time += start.elapsed();
    let (status, header, body) = answered.map_err(|_| {
        GatewayError::timeout(format!(
            "{} did not answer within {:.1}s.",
            provider.name(),
            deployment.timeout.as_secs_f64()
        ))
    })??;
    if !(200..300).contains(&status) {
        return Err(snapshot
            .secrets
            .redact_error(provider.map_error(status, &header, &body)));
    }
    super::respond::json(sink, ctx, status, body).await;
    Ok(())
}

/// Whether the group the request names has a deployment with the client's API upstream.
fn has_native_deployment(
    app: &App,
    live: &Live,
    ctx: &Context,
    ingress: Ingress,
    raw: &RequestBody<'_>,
) -> bool {
    let Ok(mut model) = raw.required_str("model") else {
        return false;
    };
    if let (Some(key), Some(keys)) = (ctx.principal.key(), &app.keys) {
        let team = crate::keys::auth::key_team(keys, key);
        match crate::keys::auth::resolve_model(key, team.as_deref(), model) {
            Ok(m) => model = m,
            Err(_) => return false,
        }
    }
    live.routing.resolve(&model).is_some_and(|group| {
        group
            .deployments
            .iter()
            .any(|d| ingress.is_native(&*d.provider))
    })
}

/// A call that may be passed through (see the module doc).
async fn native_capable(
    app: &App,
    live: &Live,
    sink: &mut impl ResponseSink,
    ctx: &mut Context,
    ingress: Ingress,
    raw: &RequestBody<'_>,
    body: &Bytes,
) -> GatewayResult<()> {
    let (chat, egress, refusal) = match crate::ingress::translate(ingress, body) {
        Ok(t) => (t.chat, Some(t.egress), None),
        Err(e) => (stand_in(raw)?, None, Some(e)),
    };
    let parsed = RequestBody::parse(&chat)?;
    let pinned = raw
        .typed::<std::borrow::Cow<'_, str>>("previous_response_id")
        .ok()
        .flatten()
        .and_then(|id| app.response_origins.get(&id));
    let native = NativeIngress {
        api: ingress,
        raw,
        refusal,
        pinned,
        answered_natively: AtomicBool::new(false),
    };
    let mut noting = NoteResponseId {
        inner: sink,
        natively: &native.answered_natively,
        responses: ingress == Ingress::Responses,
        scanning: false,
        start: Vec::new(),
        id: None,
    };
    let reshape = egress.as_deref();
    let result = exchange::run_ingress(
        app,
        live,
        &mut noting,
        ctx,
        &parsed,
        body,
        reshape,
        Some(&native),
    )
    .await;
    if let (Some(id), Some(deployment)) = (noting.id.as_deref(), &ctx.deployment) {
        app.response_origins.record(id, deployment.id());
    }
    result
}

/// The chat body admission, routing and accounting read for a body that cannot be translated
/// (only a native deployment can serve it): its model, stream flag and user.
fn stand_in(raw: &RequestBody<'_>) -> GatewayResult<Bytes> {
    let model = raw
        .get("model")
        .ok_or_else(|| GatewayError::missing_field("model"))?;
    raw.required_str("model")?;
    let stream = raw.bool_field("stream")?;
    let mut chat = format!(
        r#"{{"model":{},"messages":[],"stream":{stream}"#,
        model.get()
    );
    if let Some(user) = raw.get("user") {
        chat.push_str(r#","user":"#);
        chat.push_str(user.get());
    }
    chat.push('}');
    Ok(Bytes::from(chat))
}

/// Most bytes of a native answer searched for its response id (it comes first).
const ID_SCAN_LIMIT: usize = 16 * 1024;

/// A response sink that passes everything through and, when a native Responses attempt
/// answered, notes the response id from the answer's first bytes.
pub struct NoteResponseId<'s, S> {
    inner: &'s mut S,
    /// Set by the exchange when a native attempt answers.
    natively: &'s AtomicBool,
    /// The client speaks the Responses API (only its answers carry an id worth noting).
    responses: bool,
    scanning: bool,
    /// The answer's start, while the id is looked for.
    start: Vec<u8>,
    id: Option<String>,
}

impl<S: ResponseSink> ResponseSink for NoteResponseId<'_, S> {
    async fn head(&mut self, head: ResponseHeader) -> bool {
        self.scanning = self.responses
            && (200..300).contains(&head.status.as_u16())
            && self.natively.load(Ordering::Relaxed);
        self.inner.head(head).await
    }

    async fn body(&mut self, bytes: Bytes, end: bool) -> bool {
        if self.scanning && self.id.is_none() && self.start.len() < ID_SCAN_LIMIT {
            let take = bytes.len().min(ID_SCAN_LIMIT - self.start.len());
            self.start.extend_from_slice(&bytes[..take]);
            // `None` until the id's closing quote has arrived.
            if let Some(id) = crate::ingress::responses::native::response_id_in(&self.start) {
                self.id = Some(id.to_string());
                self.start = Vec::new();
            }
        }
        self.inner.body(bytes, end).await
    }

    async fn hung_up(&mut self) {
        self.inner.hung_up().await
    }
}
