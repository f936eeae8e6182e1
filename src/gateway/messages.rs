//! The `/v1/messages` and `/v1/messages/count_tokens` routes: the I/O around
//! [`crate::ingress::messages`]. A Messages call runs the chat exchange (auth, admission,
//! routing, retries, fallbacks, cooldowns, spend) on the client's own body: Anthropic-family
//! deployments get it as it is, and it is translated to chat (once) only when a deployment
//! that needs chat is chosen.

use super::exchange::{self, MessagesIngress};
use super::respond;
use super::sink::ResponseSink;
use crate::app::{App, Live};
use crate::context::Context;
use crate::error::GatewayResult;
use crate::ingress::messages;
use crate::openai::request::check_model_name;
use crate::openai::RequestBody;
use crate::providers::{MessagesEndpoint, MessagesHeaders, Operation, RequestContext};
use bytes::Bytes;
use pingora_http::RequestHeader;
use std::time::{Duration, Instant};

/// Longest wait for an upstream's token count before the estimate answers instead.
const COUNT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest upstream count_tokens answer read.
const MAX_COUNT_BODY: usize = 64 * 1024;

/// The Anthropic headers a pass-through forwards, as the client sent them.
pub fn client_headers(req: &RequestHeader) -> MessagesHeaders {
    MessagesHeaders {
        version: req.headers.get("anthropic-version").cloned(),
        beta: req.headers.get("anthropic-beta").cloned(),
    }
}

/// `POST /v1/messages`. `Err`: nothing was written yet.
pub async fn handle(
    app: &App,
    live: &Live,
    sink: &mut impl ResponseSink,
    ctx: &mut Context,
    body: Bytes,
    headers: &MessagesHeaders,
) -> GatewayResult<()> {
    // Routing reads only top-level fields (model, stream, max_tokens, the size of messages and
    // tools, metadata): the body is translated only if the chosen deployment needs chat.
    let raw = RequestBody::parse(&body)?;
    if ctx.end_user.is_none() {
        ctx.end_user = messages_user(&raw);
    }
    let ingress = MessagesIngress::new(&raw, headers);
    exchange::run(
        app,
        live,
        sink,
        ctx,
        Operation::Chat,
        &raw,
        &body,
        Some(&ingress),
    )
    .await
    .map_err(name_messages_fields)
}

/// `metadata.user_id`: the Messages API's end user.
fn messages_user(raw: &RequestBody<'_>) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Metadata<'a> {
        #[serde(default, borrow)]
        user_id: Option<std::borrow::Cow<'a, str>>,
    }
    let meta: Metadata<'_> = serde_json::from_str(raw.get("metadata")?.get()).ok()?;
    meta.user_id
        .filter(|u| !u.is_empty())
        .map(|u| u.into_owned())
}

/// A provider's refusal of a chat field the translation made, named as the client sent it.
fn name_messages_fields(mut e: crate::error::GatewayError) -> crate::error::GatewayError {
    let client_field = match e.param.as_deref() {
        Some("reasoning_effort") => "thinking",
        Some("response_format") => "output_config.format",
        _ => return e,
    };
    e.message = format!(
        "{} (from the request's {client_field})",
        e.message.trim_end_matches('.')
    );
    e.param = Some(client_field.into());
    e
}

/// `POST /v1/messages/count_tokens`: an Anthropic deployment of the model's group counts
/// (pass-through); otherwise, or when it cannot answer, the documented estimate
/// ([`messages::count`]). `x-switchboard-token-count` says which (`provider` / `estimate`).
///
/// The body is a prompt: it goes only to a deployment the same call to `/v1/messages` could
/// use. The request's tags and `allowed_model_region` (key, team, end user) rule deployments
/// out exactly as in the exchange; when they rule out every deployment of the group the
/// answer is the exchange's refusal (400 `no_deployments_in_region` /
/// `no_deployments_with_tag_routing`), and when the deployments left include no Anthropic
/// one the estimate answers, computed here, so the prompt never leaves the gateway.
pub async fn count_tokens(
    app: &App,
    live: &Live,
    sink: &mut impl ResponseSink,
    ctx: &mut Context,
    body: Bytes,
    headers: &MessagesHeaders,
) -> GatewayResult<()> {
    let snapshot = &live.routing;
    let raw = RequestBody::parse(&body)?;
    let mut model = raw.required_str("model")?;
    let requested = model.clone();
    if let (Some(key), Some(keys)) = (ctx.principal.key(), &app.keys) {
        let team = crate::keys::auth::key_team(keys, key);
        model = crate::keys::auth::resolve_model(key, team.as_deref(), model)?;
    }
    check_model_name(&model, || snapshot.group(&model).is_some())?;
    if !raw.has("messages") {
        return Err(crate::error::GatewayError::missing_field("messages"));
    }
    ctx.model = Some(model.to_string());
    if ctx.end_user.is_none() {
        ctx.end_user = messages_user(&raw);
    }
    if let Some(keys) = &app.keys {
        // The end user's region and the team's tags, with their access checks.
        crate::keys::auth::resolve_tenancy(keys, ctx, &requested, &model)?;
    }
    let filter = exchange::route_filter(snapshot, &raw, ctx)?;
    let group = snapshot
        .resolve(&model)
        .ok_or_else(|| exchange::model_not_found(&model))?;
    let ruled_out = group.ruled_out(&filter)?;
    let deadline = Instant::now() + COUNT_TIMEOUT.min(snapshot.request_timeout);
    let allowed = group
        .deployments
        .iter()
        .enumerate()
        .filter(|(i, _)| !ruled_out.contains(i))
        .map(|(_, d)| d);
    for deployment in allowed {
        let cx = RequestContext {
            op: Operation::Chat,
            model: &deployment.config.model,
            stream: false,
            include_usage: false,
            response_id: "",
            created: 0,
            drop_params: deployment.drop_params,
            embeddings_base64: false,
        };
        let provider = deployment.provider.as_ref();
        let request = provider.messages_request(
            &raw,
            &cx,
            MessagesEndpoint::CountTokens,
            headers,
            &app.client,
        );
        // `None`: this deployment cannot count (not Anthropic, no credentials, unreachable).
        let counted = tokio::time::timeout_at(deadline.into(), async {
            let request = request.await?.ok()?;
            let endpoint = deployment.endpoint.as_ref()?;
            let mut response = app.client.send(endpoint, &request, None).await.ok()?;
            let status = response.status;
            let answer = response.body(MAX_COUNT_BODY).await.ok()?;
            Some(if (200..300).contains(&status) {
                Ok(answer)
            } else {
                Err(provider.map_error(status, &response.header, &answer))
            })
        })
        .await;
        match counted {
            Ok(Some(Ok(answer))) => {
                ctx.deployment = Some(deployment.clone());
                return answer_count(sink, ctx, answer, "provider").await;
            }
            // The client's request is at fault: the provider's words say why.
            Ok(Some(Err(e))) if (400..500).contains(&e.status) && e.status != 429 => return Err(e),
            Ok(None) => continue,
            Ok(Some(Err(_))) | Err(_) => {
                log::warn!(
                    "count_tokens on deployment {} failed; answering with the estimate",
                    deployment.id()
                );
                break;
            }
        }
    }
    let tokens = messages::count::estimate(&raw);
    answer_count(sink, ctx, messages::count::response(tokens), "estimate").await
}

async fn answer_count(
    sink: &mut impl ResponseSink,
    ctx: &mut Context,
    body: Bytes,
    source: &'static str,
) -> GatewayResult<()> {
    let mut h = respond::head(200, ctx, "application/json");
    let _ = h.insert_header(http::header::CONTENT_LENGTH, body.len().to_string());
    let _ = h.insert_header("x-switchboard-token-count", source);
    respond::whole(sink, ctx, h, body).await;
    Ok(())
}
