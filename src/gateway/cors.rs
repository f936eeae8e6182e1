//! CORS for browser clients, with LiteLLM's settings and defaults (any origin, method and
//! header; no credentials): `general_settings.cors_allow_origins`, `cors_allow_credentials`,
//! `cors_allow_methods`, `cors_allow_headers`, or LiteLLM's `LITELLM_CORS_ALLOW_*` environment
//! variables, which win (see `config::CorsSettings`).
//!
//! - A request with an allowed `Origin` gets `Access-Control-Allow-Origin` on whatever it is
//!   answered with (JSON, errors, streams): `*` when any origin is allowed, else its own origin
//!   with `Vary: Origin` (and `Access-Control-Allow-Credentials: true` when configured; never
//!   with `*`). [`prepare`] records the answer on the context and `respond::head` adds it
//!   ([`decorate`]). A request without `Origin` costs one header lookup.
//! - A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) on any path is
//!   answered here, before authentication and `allowed_ips` (browsers send it without
//!   credentials): 204 with the `Access-Control-Allow-*` headers, or a 400 OpenAI error naming
//!   the setting that refused it.

use super::respond;
use super::sink::ResponseSink;
use crate::config::CorsSettings;
use crate::context::Context;
use crate::error::{ErrorKind, GatewayError};
use bytes::Bytes;
use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS,
    ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderValue, Method};
use pingora_http::{RequestHeader, ResponseHeader};

/// Every method, as Starlette's CORS middleware lists them for `*`.
const ALL_METHODS: &str = "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT";
/// Request headers a browser may always send (the CORS safelist), allowed with any list.
const SAFELISTED_HEADERS: &[&str] = &[
    "accept",
    "accept-language",
    "content-language",
    "content-type",
];
/// How long a browser may cache a preflight answer (Starlette's default).
const MAX_AGE_SECONDS: &str = "600";

/// Records this request's CORS answer on `ctx`. `true`: it is a preflight, to be answered with
/// [`answer_preflight`] instead of being routed.
pub fn prepare(settings: &CorsSettings, req: &RequestHeader, ctx: &mut Context) -> bool {
    let Some(origin) = req.headers.get(ORIGIN) else {
        return false;
    };
    match &settings.origins {
        None => ctx.cors_allow_origin = Some(HeaderValue::from_static("*")),
        Some(list) if list.is_empty() => return false,
        Some(list) => {
            let allowed = origin
                .to_str()
                .is_ok_and(|o| list.iter().any(|a| a.eq_ignore_ascii_case(o)));
            if allowed {
                ctx.cors_allow_origin = Some(origin.clone());
                ctx.cors_credentials = settings.credentials;
            }
        }
    }
    req.method == Method::OPTIONS && req.headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
}

/// Adds the CORS answer recorded by [`prepare`] to a response head.
pub fn decorate(h: &mut ResponseHeader, ctx: &Context) {
    let Some(origin) = &ctx.cors_allow_origin else {
        return;
    };
    let _ = h.insert_header(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    if origin != "*" {
        let _ = h.append_header(VARY, "Origin");
    }
    if ctx.cors_credentials {
        let _ = h.insert_header(ACCESS_CONTROL_ALLOW_CREDENTIALS, "true");
    }
}

/// Answers a preflight: 204 with the allowed methods and headers, or a 400 naming the setting
/// that refused it.
pub async fn answer_preflight(
    sink: &mut impl ResponseSink,
    settings: &CorsSettings,
    req: &RequestHeader,
    ctx: &mut Context,
) {
    ctx.route = "cors_preflight";
    match preflight_head(settings, req, ctx) {
        Ok(h) => respond::whole(sink, ctx, h, Bytes::new()).await,
        Err(e) => respond::error(sink, ctx, &e).await,
    }
}

fn preflight_head(
    settings: &CorsSettings,
    req: &RequestHeader,
    ctx: &Context,
) -> Result<ResponseHeader, GatewayError> {
    let refuse = |what: String| {
        GatewayError::new(
            ErrorKind::BadRequest,
            format!("CORS preflight refused: {what}."),
        )
        .with_code("cors_preflight_refused")
    };
    if ctx.cors_allow_origin.is_none() {
        let origin = req
            .headers
            .get(ORIGIN)
            .map(|o| String::from_utf8_lossy(o.as_bytes()).into_owned())
            .unwrap_or_default();
        return Err(refuse(format!(
            "origin {origin} is not in general_settings.cors_allow_origins (LITELLM_CORS_ALLOW_ORIGINS)"
        )));
    }
    let method = req
        .headers
        .get(ACCESS_CONTROL_REQUEST_METHOD)
        .and_then(|m| m.to_str().ok())
        .unwrap_or("")
        .trim();
    let methods = match &settings.methods {
        None => ALL_METHODS.to_string(),
        Some(list) => {
            if !list.iter().any(|m| m.eq_ignore_ascii_case(method)) {
                return Err(refuse(format!(
                    "method {method} is not in general_settings.cors_allow_methods (LITELLM_CORS_ALLOW_METHODS)"
                )));
            }
            list.join(", ")
        }
    };
    let requested = req.headers.get(ACCESS_CONTROL_REQUEST_HEADERS);
    let headers = match (&settings.headers, requested) {
        (None, Some(r)) => Some(r.clone()),
        (None, None) => None,
        (Some(list), r) => {
            let requested = r.and_then(|r| r.to_str().ok()).unwrap_or("");
            for name in requested
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
            {
                let name = name.to_ascii_lowercase();
                if !SAFELISTED_HEADERS.contains(&name.as_str()) && !list.contains(&name) {
                    return Err(refuse(format!(
                        "header {name} is not in general_settings.cors_allow_headers (LITELLM_CORS_ALLOW_HEADERS)"
                    )));
                }
            }
            let mut all: Vec<&str> = SAFELISTED_HEADERS.to_vec();
            all.extend(list.iter().map(String::as_str));
            HeaderValue::from_str(&all.join(", ")).ok()
        }
    };
    let mut h = respond::head(204, ctx, "text/plain");
    h.remove_header(&http::header::CONTENT_TYPE);
    let _ = h.insert_header(ACCESS_CONTROL_ALLOW_METHODS, methods);
    if let Some(v) = headers {
        let _ = h.insert_header(ACCESS_CONTROL_ALLOW_HEADERS, v);
    }
    let _ = h.insert_header(ACCESS_CONTROL_MAX_AGE, MAX_AGE_SECONDS);
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::sink::RecordingSink;

    fn req(method: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build(method, b"/v1/chat/completions", None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn listed(credentials: bool) -> CorsSettings {
        CorsSettings {
            origins: Some(vec!["https://app.example.com".into()]),
            credentials,
            methods: Some(vec!["GET".into(), "POST".into()]),
            headers: Some(vec!["authorization".into()]),
        }
    }

    async fn preflight(settings: &CorsSettings, r: &RequestHeader) -> RecordingSink {
        let mut ctx = Context::default();
        assert!(prepare(settings, r, &mut ctx));
        let mut sink = RecordingSink::default();
        answer_preflight(&mut sink, settings, r, &mut ctx).await;
        sink
    }

    #[test]
    fn no_origin_no_cors() {
        let mut ctx = Context::default();
        assert!(!prepare(
            &CorsSettings::default(),
            &req("POST", &[]),
            &mut ctx
        ));
        assert!(ctx.cors_allow_origin.is_none());
    }

    #[test]
    fn wildcard_never_with_credentials() {
        let mut ctx = Context::default();
        let settings = CorsSettings {
            credentials: true,
            ..Default::default()
        };
        prepare(
            &settings,
            &req("POST", &[("origin", "https://x.example")]),
            &mut ctx,
        );
        let mut h = ResponseHeader::build(200, None).unwrap();
        decorate(&mut h, &ctx);
        assert_eq!(h.headers["access-control-allow-origin"], "*");
        assert!(h.headers.get("access-control-allow-credentials").is_none());
        assert!(h.headers.get("vary").is_none());
    }

    #[test]
    fn listed_origin_is_echoed() {
        let mut ctx = Context::default();
        prepare(
            &listed(true),
            &req("POST", &[("origin", "https://app.example.com")]),
            &mut ctx,
        );
        let mut h = ResponseHeader::build(200, None).unwrap();
        decorate(&mut h, &ctx);
        assert_eq!(
            h.headers["access-control-allow-origin"],
            "https://app.example.com"
        );
        assert_eq!(h.headers["access-control-allow-credentials"], "true");
        assert_eq!(h.headers["vary"], "Origin");

        let mut other = Context::default();
        prepare(
            &listed(true),
            &req("POST", &[("origin", "https://evil.example")]),
            &mut other,
        );
        assert!(other.cors_allow_origin.is_none());
        assert!(!other.cors_credentials);
    }

    #[tokio::test]
    async fn preflights() {
        let any = CorsSettings::default();
        let r = req(
            "OPTIONS",
            &[
                ("origin", "https://x.example"),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "authorization, x-custom"),
            ],
        );
        let sink = preflight(&any, &r).await;
        assert_eq!(sink.status(), Some(204));
        assert_eq!(sink.header("access-control-allow-origin"), Some("*"));
        assert_eq!(
            sink.header("access-control-allow-headers"),
            Some("authorization, x-custom")
        );
        assert_eq!(
            sink.header("access-control-allow-methods"),
            Some(ALL_METHODS)
        );
        assert_eq!(sink.header("access-control-max-age"), Some("600"));
        assert!(sink.header("content-type").is_none());
        assert!(sink.body.is_empty());

        let ok = req(
            "OPTIONS",
            &[
                ("origin", "https://app.example.com"),
                ("access-control-request-method", "POST"),
                (
                    "access-control-request-headers",
                    "Authorization, Content-Type",
                ),
            ],
        );
        let sink = preflight(&listed(false), &ok).await;
        assert_eq!(sink.status(), Some(204));
        assert_eq!(
            sink.header("access-control-allow-methods"),
            Some("GET, POST")
        );

        for (headers, needle) in [
            (
                vec![
                    ("origin", "https://evil.example"),
                    ("access-control-request-method", "POST"),
                ],
                "cors_allow_origins",
            ),
            (
                vec![
                    ("origin", "https://app.example.com"),
                    ("access-control-request-method", "DELETE"),
                ],
                "cors_allow_methods",
            ),
            (
                vec![
                    ("origin", "https://app.example.com"),
                    ("access-control-request-method", "POST"),
                    ("access-control-request-headers", "x-secret"),
                ],
                "cors_allow_headers",
            ),
        ] {
            let sink = preflight(&listed(false), &req("OPTIONS", &headers)).await;
            assert_eq!(sink.status(), Some(400), "{needle}");
            assert!(
                String::from_utf8_lossy(&sink.body).contains(needle),
                "{needle}"
            );
        }
    }
}
