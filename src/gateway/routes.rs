//! The HTTP surface: which path and method mean what. Unknown paths are 404, known paths with
//! the wrong method 405, both as OpenAI errors.

use crate::error::{ErrorKind, GatewayError};
use crate::providers::Operation;
use http::Method;

#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    Liveness,
    Readiness,
    /// `/health`: LiteLLM's model checks (see [`crate::health`]).
    ModelHealth,
    Models,
    Model(&'a str),
    /// `/model/info`: deployments in LiteLLM's shape.
    ModelInfo,
    Llm(Operation),
    /// `/v1/responses`, `/v1/completions`: translated onto chat (see [`super::ingress`]).
    Ingress(crate::ingress::Ingress),
    /// `/v1/responses/{id}` (GET, DELETE), `…/input_items` (GET), `…/cancel` (POST): a
    /// stored response, at the deployment that made it (see [`super::ingress`]); the path
    /// after `/responses/`.
    StoredResponse(&'a str),
    /// Anthropic Messages (`/v1/messages`, see [`crate::ingress::messages`]).
    Messages,
    /// `/v1/messages/count_tokens`
    CountTokens,
    Metrics,
    /// Key management (`/key/*`, see [`super::admin`]).
    Admin(super::admin::AdminRoute<'a>),
}

impl Route<'_> {
    /// Health routes are open even with a master key.
    pub fn needs_auth(&self) -> bool {
        !matches!(self, Route::Liveness | Route::Readiness | Route::Metrics)
    }
}

/// The API whose shape errors take on a path, known before (or without) a route: a wrong
/// method on `/v1/messages` is answered as Anthropic would.
pub fn wire_for_path(path: &str) -> crate::context::Wire {
    let path = path.split('?').next().unwrap_or(path);
    let trimmed = path.strip_prefix("/v1").unwrap_or(path);
    if trimmed == "/messages" || trimmed.starts_with("/messages/") {
        crate::context::Wire::Anthropic
    } else {
        crate::context::Wire::OpenAi
    }
}

pub fn route<'a>(method: &Method, path: &'a str) -> Result<Route<'a>, GatewayError> {
    let path = path.split('?').next().unwrap_or(path);
    let trimmed = path
        .strip_prefix("/v1")
        .filter(|p| p.starts_with('/'))
        .unwrap_or(path);
    if let Some((admin, takes)) = super::admin::route(path) {
        return if *method == takes {
            Ok(Route::Admin(admin))
        } else {
            Err(not_allowed(method, path, &[takes]))
        };
    }
    let (route, allowed): (Route<'a>, &[Method]) = match trimmed {
        "/chat/completions" => (Route::Llm(Operation::Chat), &[Method::POST]),
        "/embeddings" => (Route::Llm(Operation::Embeddings), &[Method::POST]),
        "/responses" => (Route::Ingress(crate::ingress::Ingress::Responses), &[Method::POST]),
        "/completions" => (Route::Ingress(crate::ingress::Ingress::Completions), &[Method::POST]),
        "/messages" => (Route::Messages, &[Method::POST]),
        "/messages/count_tokens" => (Route::CountTokens, &[Method::POST]),
        "/models" => (Route::Models, &[Method::GET]),
        "/model/info" => (Route::ModelInfo, &[Method::GET]),
        _ if path == "/health/liveliness" || path == "/health/liveness" => (Route::Liveness, &[Method::GET, Method::HEAD]),
        _ if path == "/health/readiness" => (Route::Readiness, &[Method::GET, Method::HEAD]),
        _ if path == "/health" => (Route::ModelHealth, &[Method::GET]),
        _ if path == "/metrics" => (Route::Metrics, &[Method::GET]),
        p if p.starts_with("/responses/") => {
            let rest = &p["/responses/".len()..];
            let (id, sub) = rest.split_once('/').unwrap_or((rest, ""));
            let well_formed = !id.is_empty()
                && id.len() <= 200
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            let allowed: &[Method] = match sub {
                "" => &[Method::GET, Method::DELETE],
                "input_items" => &[Method::GET],
                "cancel" => &[Method::POST],
                _ => &[],
            };
            if !well_formed || allowed.is_empty() {
                return Err(GatewayError::new(
                    ErrorKind::NotFound,
                    format!("Unknown route {path}. A stored response is /v1/responses/{{id}}, /v1/responses/{{id}}/input_items or /v1/responses/{{id}}/cancel."),
                )
                .with_code("not_found"));
            }
            (Route::StoredResponse(rest), allowed)
        }
        p => match p.strip_prefix("/models/") {
            Some(id) if !id.is_empty() => (Route::Model(id), &[Method::GET]),

            _ => {
                return Err(GatewayError::new(
                    ErrorKind::NotFound,
                    format!("Unknown route {path}. Switchboard serves /v1/chat/completions, /v1/responses, /v1/completions, /v1/messages, /v1/embeddings and /v1/models."),
                )
                .with_code("not_found"))
            }
        },
    };
    if !allowed.contains(method) {
        return Err(not_allowed(method, path, allowed));
    }
    Ok(route)
}

fn not_allowed(method: &Method, path: &str, allowed: &[Method]) -> GatewayError {
    let names: Vec<&str> = allowed.iter().map(|m| m.as_str()).collect();
    GatewayError::new(
        ErrorKind::MethodNotAllowed,
        format!(
            "Method {method} is not allowed on {path}; use {}.",
            names.join(" or ")
        ),
    )
    .with_code("method_not_allowed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            route(&Method::POST, "/v1/chat/completions").unwrap(),
            Route::Llm(Operation::Chat)
        );
        assert_eq!(
            route(&Method::POST, "/chat/completions?x=1").unwrap(),
            Route::Llm(Operation::Chat)
        );
        assert_eq!(
            route(&Method::GET, "/v1/models/openai/gpt-4o").unwrap(),
            Route::Model("openai/gpt-4o")
        );
        assert_eq!(route(&Method::GET, "/models").unwrap(), Route::Models);
        assert_eq!(
            route(&Method::POST, "/v1/messages?beta=true").unwrap(),
            Route::Messages
        );
        assert_eq!(
            route(&Method::POST, "/v1/messages/count_tokens").unwrap(),
            Route::CountTokens
        );
        assert_eq!(
            route(&Method::GET, "/v1/model/info?litellm_model_id=a").unwrap(),
            Route::ModelInfo
        );
        assert_eq!(
            route(&Method::GET, "/model/info").unwrap(),
            Route::ModelInfo
        );
        assert_eq!(
            route(&Method::GET, "/health/liveness").unwrap(),
            Route::Liveness
        );
        assert_eq!(
            route(&Method::GET, "/v1/chat/completions")
                .unwrap_err()
                .status,
            405
        );
        assert_eq!(route(&Method::POST, "/v2/nope").unwrap_err().status, 404);
        assert_eq!(
            route(&Method::POST, "/v1/responses").unwrap(),
            Route::Ingress(crate::ingress::Ingress::Responses)
        );
        assert_eq!(
            route(&Method::POST, "/completions").unwrap(),
            Route::Ingress(crate::ingress::Ingress::Completions)
        );
        assert_eq!(
            route(&Method::GET, "/v1/responses").unwrap_err().status,
            405
        );
        assert_eq!(
            route(&Method::GET, "/v1/responses/resp_1").unwrap(),
            Route::StoredResponse("resp_1")
        );
        assert_eq!(
            route(&Method::POST, "/v1/responses/resp_1/cancel").unwrap(),
            Route::StoredResponse("resp_1/cancel")
        );
        assert_eq!(
            route(&Method::POST, "/v1/responses/resp_1")
                .unwrap_err()
                .status,
            405
        );
        for bad in [
            "/v1/responses/resp_1/x",
            "/v1/responses/a%2Fb",
            "/v1/responses//input_items",
        ] {
            assert_eq!(route(&Method::GET, bad).unwrap_err().status, 404, "{bad}");
        }
        assert_eq!(route(&Method::GET, "/v1/models/").unwrap_err().status, 404);
    }
}
