//! The Pingora service. Pingora's stock pipeline cannot route on a JSON body over 64 KiB, so the
//! whole exchange happens in `request_filter`, which always answers and returns `Ok(true)`:
//!
//! ```text
//!  client ──► request_filter ─┬─ route (path, method) ─► 404 / 405
//!                             ├─ health, models ───────► answered from the snapshot
//!                             └─ chat, embeddings (responses, completions: translated to
//!                                  chat by `ingress`, answers rewritten on the way out;
//!                                  messages: translated or passed through by `messages`)
//!                                  authenticate (stages) ─► read body (≤ max_request_size_mb)
//!                                  ─► parse once ─► admit, cache lookup (stages)
//!                                  ─► model group ─► deployment ─► provider.build_request
//!                                  ─► Connector (pooled h1/h2) ─► upstream
//!                                  ◄─ whole body: translate, exact Content-Length
//!                                  ◄─ stream: translate event by event, flush each
//!          settle (stages), then logging ◄── metrics and one JSON line per request (request
//!                                 id, model, deployment, status, latency, attempts, tokens)
//! ```
//! Everything the client receives goes through a [`sink::ResponseSink`]; [`sink::SessionSink`]
//! is the only writer that knows Pingora's `Session`. What is read from the client (the body,
//! the raw head for the framing check) goes through [`body::ClientRequest`], which `Session`
//! implements.
//! `upstream_peer` is never reached.

pub mod admin;
pub mod admin_spend;
pub mod body;
pub mod cors;
pub mod exchange;
pub mod framing;
pub mod ingress;
pub mod messages;
pub mod model_info;
pub mod respond;
pub mod routes;
pub mod semantic;
pub mod sink;
#[cfg(test)]
mod tests;

use crate::app::{App, Live};
use crate::context::{unix_now, Context, RequestId};
use crate::logging;
use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_proxy::{ProxyHttp, Session};
use routes::Route;
use sink::SessionSink;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

pub struct Gateway {
    pub app: Arc<App>,
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Context;

    fn new_ctx(&self) -> Context {
        Context::default()
    }

    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut Context,
    ) -> pingora_core::Result<bool> {
        crate::edge::head_done(session);
        // A request sent before the previous answer is read (HTTP/1.1 pipelining) is answered
        // after it, in order; without this Pingora drops it (and, when it arrives while the
        // first is in flight, leaves the connection open and silent).
        session.set_pipelining_enabled(true);
        ctx.start = Instant::now();
        ctx.request_id = request_id(session);
        ctx.end_user = end_user_header(session);
        ctx.tags_header = session
            .req_header()
            .headers
            .get("x-litellm-tags")
            .and_then(|v| v.to_str().ok())
            .map(Box::from);
        let _serving = self.app.in_flight.enter();
        if let Err(e) = framing::check(session) {
            session.set_keepalive(None);
            respond::error(&mut SessionSink::new(session), ctx, &e).await;
            return Ok(true);
        }
        // A guard, not a clone of the Arc: no write to the snapshot's shared reference count
        // on the fast path (arc-swap falls back to a counted reference when a thread holds
        // more guards than it has fast slots, which is no worse than cloning).
        let live = self.app.snapshot.load();
        if live.routing.tag_regex_in_use {
            ctx.user_agent = session
                .req_header()
                .headers
                .get(http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(Box::from);
        }
        if let Some(t) = live.stages.telemetry() {
            ctx.trace = Some(t.start_trace(&session.req_header().headers, ctx));
        }
        self.serve(&live, session, ctx).await;
        live.stages.settle(ctx);
        if ctx.client_disconnected {
            // A write failed or timed out part-way: this connection's framing is lost.
            session.set_keepalive(None);
        }
        Ok(true)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut Context,
    ) -> pingora_core::Result<Box<HttpPeer>> {
        // request_filter always answers; reaching here is a bug.
        pingora_core::Error::e_explain(
            pingora_core::ErrorType::InternalError,
            "no upstream phase in Switchboard",
        )
    }

    async fn logging(
        &self,
        session: &mut Session,
        _e: Option<&pingora_core::Error>,
        ctx: &mut Context,
    ) {
        self.app.metrics.observe(ctx, &self.app.snapshot.load());
        logging::access(session.req_header(), ctx);
    }
}

impl Gateway {
    async fn serve(&self, live: &Live, session: &mut Session, ctx: &mut Context) {
        let snapshot = &live.routing;
        let method = session.req_header().method.clone();
        // Shares the request's bytes (no copy): the route borrows from it.
        let uri = session.req_header().uri.clone();
        let config = &snapshot.config;
        ctx.client_addr = crate::client_addr::from_request(
            session.client_addr(),
            session.req_header(),
            &config.server.trusted_proxies,
            config.server.forwarded_header,
        );
        if cors::prepare(&config.general.cors, session.req_header(), ctx) {
            let req = session.req_header().clone();
            let mut sink = SessionSink::new(session);
            return cors::answer_preflight(&mut sink, &config.general.cors, &req, ctx).await;
        }
        // From here on, errors (auth, limits, budgets, upstreams) take the route's API's shape.
        ctx.wire = routes::wire_for_path(uri.path());
        let route = match routes::route(&method, uri.path()) {
            Ok(r) => r,
            Err(e) => return respond::error(&mut SessionSink::new(session), ctx, &e).await,
        };
        if let (Some(allowed), false) = (
            &config.general.allowed_ips,
            matches!(route, Route::Liveness | Route::Readiness),
        ) {
            if let Err(e) = crate::client_addr::check_allowed(allowed, ctx.client_addr) {
                return respond::error(&mut SessionSink::new(session), ctx, &e).await;
            }
        }
        if route.needs_auth() {
            if let Err(e) = live.stages.authenticate(session.req_header(), ctx) {
                return respond::error(&mut SessionSink::new(session), ctx, &e).await;
            }
        }
        let mut sink = SessionSink::new(session);
        match route {
            Route::Liveness => {
                ctx.route = "liveness";
                if self.app.draining.load(Ordering::Relaxed) {
                    respond::json(
                        &mut sink,
                        ctx,
                        503,
                        Bytes::from_static(b"{\"status\":\"shutting_down\"}"),
                    )
                    .await
                } else {
                    respond::json(&mut sink, ctx, 200, Bytes::from_static(b"\"I'm alive!\"")).await
                }
            }
            Route::Readiness => {
                ctx.route = "readiness";
                let draining = self.app.draining.load(Ordering::Relaxed);
                let starting = !self.app.reload_armed.load(Ordering::Relaxed);
                let mut body = serde_json::json!({
                    "status": if draining { "shutting_down" } else if starting { "starting" } else { "healthy" },
                    "config_generation": snapshot.generation,
                    "model_groups": snapshot.group_names.len(),
                    "deployments": snapshot.config.deployments.len(),
                });
                if let Some(r) = self.app.last_reload.load().as_deref() {
                    body["last_reload"] = r.to_json();
                }
                let status = if draining || starting { 503 } else { 200 };
                respond::json(&mut sink, ctx, status, Bytes::from(body.to_string())).await
            }
            Route::ModelHealth => {
                ctx.route = "health";
                let app = &self.app;
                match crate::health::answer(
                    snapshot,
                    &app.client,
                    &app.model_health,
                    &ctx.principal,
                    uri.query(),
                )
                .await
                {
                    Ok(body) => {
                        respond::json(&mut sink, ctx, 200, Bytes::from(body.to_string())).await
                    }
                    Err(e) => respond::error(&mut sink, ctx, &e).await,
                }
            }
            Route::Metrics => {
                ctx.route = "metrics";
                if snapshot.config.litellm.require_auth_for_metrics_endpoint {
                    if let Err(e) = live.stages.authenticate(sink.session().req_header(), ctx) {
                        return respond::error(&mut sink, ctx, &e).await;
                    }
                }
                let mut text =
                    self.app
                        .metrics
                        .render(snapshot, self.app.in_flight.count(), &self.app.client);
                if let Some(keys) = &self.app.keys {
                    keys.render_metrics(&mut text);
                    crate::budgets::metrics::render(keys, &mut text);
                }
                crate::alerting::render_metrics(&mut text);
                crate::limits::render_metrics(&mut text);
                crate::shared_state::render_metrics(&mut text);
                crate::telemetry::render_metrics(&mut text);
                let mut h = respond::head(200, ctx, "text/plain; version=0.0.4; charset=utf-8");
                let _ = h.insert_header(http::header::CONTENT_LENGTH, text.len().to_string());
                respond::whole(&mut sink, ctx, h, Bytes::from(text)).await
            }
            Route::Models => {
                ctx.route = "models";
                let created = unix_now();
                let data: Vec<_> = snapshot
                    .group_names
                    .iter()
                    .map(|id| model_object(id, created))
                    .collect();
                let body = serde_json::json!({"object": "list", "data": data});
                respond::json(&mut sink, ctx, 200, Bytes::from(body.to_string())).await
            }
            Route::Model(id) => {
                ctx.route = "model";
                if snapshot.serves(id) {
                    let body = model_object(id, unix_now()).to_string();
                    respond::json(&mut sink, ctx, 200, Bytes::from(body)).await
                } else {
                    let e = exchange::model_not_found(id);
                    respond::error(&mut sink, ctx, &e).await
                }
            }
            Route::Admin(admin) => {
                ctx.route = "admin";
                let limit = snapshot.config.general.max_request_size;
                let timeout = snapshot.config.server.request_body_timeout;
                let body = if sink.session().req_header().method == http::Method::POST {
                    body::read_body(sink.session(), limit, timeout).await
                } else {
                    Ok(Bytes::new())
                };
                let result = match body {
                    Ok(body) => admin::handle(&self.app, ctx, admin, uri.query(), &body).await,
                    Err(e) => Err(e),
                };
                match result {
                    Ok((status, json)) => {
                        respond::json(&mut sink, ctx, status, Bytes::from(json.to_string())).await
                    }
                    Err(e) => respond::error(&mut sink, ctx, &e).await,
                }
            }
            Route::ModelInfo => {
                ctx.route = "model_info";
                match model_info::response(snapshot, uri.query()) {
                    Ok(body) => respond::json(&mut sink, ctx, 200, body).await,
                    Err(e) => respond::error(&mut sink, ctx, &e).await,
                }
            }
            Route::Ingress(kind) => {
                ctx.route = kind.as_str();
                let limit = snapshot.config.general.max_request_size;
                let timeout = snapshot.config.server.request_body_timeout;
                let result = match body::read_body(sink.session(), limit, timeout).await {
                    Ok(body) => ingress::handle(&self.app, live, &mut sink, ctx, kind, body).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = result {
                    respond::error(&mut sink, ctx, &e).await
                }
            }
            Route::StoredResponse(rest) => {
                ctx.route = "responses";
                let method = sink.session().req_header().method.clone();
                let result = ingress::stored_response(
                    &self.app,
                    live,
                    &mut sink,
                    ctx,
                    method,
                    rest,
                    uri.query(),
                )
                .await;
                if let Err(e) = result {
                    respond::error(&mut sink, ctx, &e).await
                }
            }
            Route::Messages | Route::CountTokens => {
                let headers = messages::client_headers(sink.session().req_header());
                let limit = snapshot.config.general.max_request_size;
                let timeout = snapshot.config.server.request_body_timeout;
                let result = match body::read_body(sink.session(), limit, timeout).await {
                    Ok(body) if route == Route::Messages => {
                        ctx.route = "messages";
                        messages::handle(&self.app, live, &mut sink, ctx, body, &headers).await
                    }
                    Ok(body) => {
                        ctx.route = "count_tokens";
                        messages::count_tokens(&self.app, live, &mut sink, ctx, body, &headers)
                            .await
                    }
                    Err(e) => Err(e),
                };
                if let Err(e) = result {
                    respond::error(&mut sink, ctx, &e).await
                }
            }
            Route::Llm(op) => {
                ctx.route = op.as_str();
                let limit = snapshot.config.general.max_request_size;
                let timeout = snapshot.config.server.request_body_timeout;
                let result = match body::read_body(sink.session(), limit, timeout).await {
                    Ok(body) => exchange::handle(&self.app, live, &mut sink, ctx, op, body).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = result {
                    respond::error(&mut sink, ctx, &e).await
                }
            }
        }
    }
}

fn model_object(id: &str, created: u64) -> serde_json::Value {
    serde_json::json!({"id": id, "object": "model", "created": created, "owned_by": "openai"})
}

/// LiteLLM's end-user header, `x-litellm-end-user-id`, when present and not blank (it takes
/// precedence over the body's `user`).
fn end_user_header(session: &Session) -> Option<String> {
    let value = session
        .req_header()
        .headers
        .get("x-litellm-end-user-id")?
        .to_str()
        .ok()?
        .trim();
    (!value.is_empty()).then(|| value.to_string())
}

/// The client's `x-request-id` when it is a sane token, else a new random one.
fn request_id(session: &Session) -> RequestId {
    session
        .req_header()
        .headers
        .get("x-request-id")
        .and_then(|v| RequestId::from_client(v.as_bytes()))
        .unwrap_or_else(RequestId::generate)
}
