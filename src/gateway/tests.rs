//! The pipeline's seams, driven without a socket: the exchange writing through a recording
//! response sink, admission refusing before routing, and a cache replaying and storing answers.

use super::exchange;
use super::respond;
use super::sink::RecordingSink;
use crate::app::{App, Live};
use crate::context::{CacheStatus, Context, Principal};
use crate::error::{ErrorKind, GatewayError};
use crate::openai::RequestBody;
use crate::pipeline::{Admit, Cache, Lookup, Settle, Stages};
use crate::providers::Operation;
use crate::router::{Snapshot, StateRegistry};
use crate::upstream::UpstreamClient;
use bytes::Bytes;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

const CONFIG: &str = "model_list:
  - model_name: m
    litellm_params: {model: openai/x, mock_response: Hello there world}
    model_info: {id: mock-1}
";

fn app_with(stages: impl FnOnce(Stages) -> Stages) -> (App, Arc<Live>) {
    let client = Arc::new(UpstreamClient::new(1));
    let registry = StateRegistry::default();
    let config = crate::config::litellm::parse(CONFIG).unwrap();
    let snapshot = Snapshot::build(config, 1, &client, &registry).unwrap();
    let app = App::new(snapshot, client, registry);
    let routing = app.snapshot.load().routing.clone();
    let live = Arc::new(Live {
        routing,
        stages: stages(Stages::default()),
    });
    (app, live)
}

/// Runs one chat call the way `Gateway::serve` does once the body is read.
async fn call(app: &App, live: &Live, body: &'static str, ctx: &mut Context) -> RecordingSink {
    let mut sink = RecordingSink::default();
    let body = Bytes::from_static(body.as_bytes());
    if let Err(e) = exchange::handle(app, live, &mut sink, ctx, Operation::Chat, body).await {
        respond::error(&mut sink, ctx, &e).await;
    }
    live.stages.settle(ctx);
    sink
}

#[tokio::test]
async fn the_sink_receives_the_answer_and_tees_usage_and_the_whole_body() {
    let (app, live) = app_with(|s| s);
    let mut ctx = Context {
        keep_answer: true,
        ..Context::default()
    };
    let sink = call(&app, &live, r#"{"model":"m","messages":[]}"#, &mut ctx).await;
    assert_eq!(sink.status(), Some(200));
    assert_eq!(sink.header("x-litellm-model-id"), Some("mock-1"));
    assert!(sink.ended);
    let body: serde_json::Value = serde_json::from_slice(&sink.body).unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Hello there world"
    );
    // Teed as it went out: the same bytes, and the usage the answer reports.
    assert_eq!(ctx.answer.as_deref(), Some(&sink.body[..]));
    let usage = ctx.usage.expect("usage recorded");
    assert_eq!(usage.completion_tokens, 3);
    assert_eq!(body["usage"]["total_tokens"], usage.total_tokens);
    assert_eq!((ctx.status, ctx.attempts), (200, 1));
}

#[tokio::test]
async fn a_streamed_answer_is_gathered_from_its_pieces() {
    let (app, live) = app_with(|s| s);
    let mut ctx = Context {
        keep_answer: true,
        ..Context::default()
    };
    let sink = call(
        &app,
        &live,
        r#"{"model":"m","messages":[],"stream":true,"stream_options":{"include_usage":true}}"#,
        &mut ctx,
    )
    .await;
    assert_eq!(sink.status(), Some(200));
    assert_eq!(sink.header("content-type"), Some("text/event-stream"));
    assert!(sink.writes > 2, "one write per event, got {}", sink.writes);
    assert!(sink.body.ends_with(b"data: [DONE]\n\n"));
    assert_eq!(ctx.answer.as_deref(), Some(&sink.body[..]));
    assert!(ctx.ttft.is_some());
    assert_eq!(ctx.usage.map(|u| u.completion_tokens), Some(3));
}

#[tokio::test]
async fn without_a_stage_asking_nothing_is_kept() {
    let (app, live) = app_with(|s| s);
    let mut ctx = Context::default();
    let sink = call(&app, &live, r#"{"model":"m","messages":[]}"#, &mut ctx).await;
    assert_eq!(sink.status(), Some(200));
    assert!(ctx.answer.is_none());
    assert_eq!(ctx.cache, CacheStatus::NotConfigured);
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_is_recorded() {
    let (app, live) = app_with(|s| s);
    let mut ctx = Context::default();
    let mut sink = RecordingSink {
        hang_up_after: Some(1),
        ..RecordingSink::default()
    };
    let body = Bytes::from_static(br#"{"model":"m","messages":[],"stream":true}"#);
    exchange::handle(&app, &live, &mut sink, &mut ctx, Operation::Chat, body)
        .await
        .unwrap();
    assert!(ctx.client_disconnected);
    assert!(!sink.ended);
}

/// A test-only admission stage: a per-principal request quota.
struct Quota {
    left: AtomicU32,
}

#[async_trait::async_trait]
impl Admit for Quota {
    async fn admit(&self, ctx: &mut Context, _body: &RequestBody<'_>) -> Result<(), GatewayError> {
        if ctx.principal != Principal::Open {
            return Err(GatewayError::new(
                ErrorKind::PermissionDenied,
                "unknown caller",
            ));
        }
        let took = self
            .left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        took.map(|_| ()).map_err(|_| {
            GatewayError::new(
                ErrorKind::RateLimited,
                "Request quota used up; raise it or wait for the next window.",
            )
            .with_code("quota_exceeded")
            .with_retry_after(Some(7))
        })
    }
}

#[tokio::test]
async fn an_admit_stage_refuses_with_an_openai_error_before_any_routing() {
    let (app, live) = app_with(|s| {
        s.admit_with(Quota {
            left: AtomicU32::new(1),
        })
    });
    let req = pingora_http::RequestHeader::build("POST", b"/v1/chat/completions", None).unwrap();
    let mut ctx = Context::default();
    live.stages.authenticate(&req, &mut ctx).unwrap();
    let sink = call(&app, &live, r#"{"model":"m","messages":[]}"#, &mut ctx).await;
    assert_eq!(sink.status(), Some(200));

    let mut ctx = Context::default();
    live.stages.authenticate(&req, &mut ctx).unwrap();
    let sink = call(&app, &live, r#"{"model":"m","messages":[]}"#, &mut ctx).await;
    assert_eq!(sink.status(), Some(429));
    assert_eq!(sink.header("retry-after"), Some("7"));
    let err: serde_json::Value = serde_json::from_slice(&sink.body).unwrap();
    assert_eq!(err["error"]["code"], "quota_exceeded");
    assert_eq!(err["error"]["type"], "rate_limit_error");
    assert!(err["error"]["message"].as_str().unwrap().contains("quota"));
    // Refused before routing: no deployment was tried or charged.
    assert_eq!((ctx.attempts, ctx.deployment.is_none()), (0, true));
    let d = &live.routing.group("m").unwrap().deployments[0];
    assert_eq!(d.state.requests.load(Ordering::Relaxed), 1);
}

/// A test-only cache keyed by the whole request body.
#[derive(Default)]
struct BodyCache {
    stored: Mutex<Vec<(Vec<u8>, Bytes)>>,
}

#[async_trait::async_trait]
impl Cache for Arc<BodyCache> {
    async fn lookup(
        &self,
        _ctx: &mut Context,
        body: &RequestBody<'_>,
        _group: &str,
    ) -> Result<Lookup, GatewayError> {
        let Some(key) = body.get("messages").map(|v| v.get().as_bytes().to_vec()) else {
            return Ok(Lookup::Miss { store: true });
        };
        let stored = self.stored.lock().unwrap();
        Ok(stored
            .iter()
            .find(|(k, _)| *k == key)
            .map_or(Lookup::Miss { store: true }, |(_, v)| {
                Lookup::Hit(v.clone())
            }))
    }

    fn store(&self, _ctx: &Context, answer: &Bytes) {
        // The one request these tests send (a real cache keeps the key from its lookup).
        let key = br#"[{"role":"user","content":"hi"}]"#.to_vec();
        self.stored.lock().unwrap().push((key, answer.clone()));
    }
}

/// A test-only settle stage that counts what it saw.
struct Seen(Arc<Mutex<Vec<(u16, CacheStatus)>>>);

impl Settle for Seen {
    fn settle(&self, ctx: &Context) {
        self.0.lock().unwrap().push((ctx.status, ctx.cache));
    }
}

#[tokio::test]
async fn a_cache_miss_is_stored_at_settle_and_a_hit_replays_through_the_sink() {
    let cache = Arc::new(BodyCache::default());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (app, live) = app_with(|s| s.cache_with(cache.clone()).settle_with(Seen(seen.clone())));
    const BODY: &str = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    let mut first = Context::default();
    let miss = call(&app, &live, BODY, &mut first).await;
    assert_eq!((miss.status(), first.cache), (Some(200), CacheStatus::Miss));
    assert_eq!(cache.stored.lock().unwrap().len(), 1);

    let mut second = Context::default();
    let hit = call(&app, &live, BODY, &mut second).await;
    assert_eq!((hit.status(), second.cache), (Some(200), CacheStatus::Hit));
    assert_eq!(hit.body, miss.body);
    assert_eq!(second.attempts, 0, "a hit never reaches a deployment");
    assert_eq!(
        *seen.lock().unwrap(),
        [(200, CacheStatus::Miss), (200, CacheStatus::Hit)]
    );
}

#[tokio::test]
async fn the_end_user_comes_from_the_body_unless_the_header_named_one() {
    let (app, live) = app_with(|s| s);
    let mut ctx = Context::default();
    call(
        &app,
        &live,
        r#"{"model":"m","messages":[],"user":"u-42"}"#,
        &mut ctx,
    )
    .await;
    assert_eq!(ctx.end_user.as_deref(), Some("u-42"));

    // `x-litellm-end-user-id` (read at the edge) takes precedence, as in LiteLLM.
    let mut ctx = Context {
        end_user: Some("from-header".into()),
        ..Context::default()
    };
    call(
        &app,
        &live,
        r#"{"model":"m","messages":[],"user":"u-42"}"#,
        &mut ctx,
    )
    .await;
    assert_eq!(ctx.end_user.as_deref(), Some("from-header"));

    let mut ctx = Context::default();
    call(
        &app,
        &live,
        r#"{"model":"m","messages":[],"user":""}"#,
        &mut ctx,
    )
    .await;
    assert_eq!(ctx.end_user, None);
}

/// A test-only admission stage that waits (as a Redis round trip would) before deciding.
struct RemoteLimit {
    allow: bool,
    asked: AtomicU32,
}

#[async_trait::async_trait]
impl Admit for Arc<RemoteLimit> {
    async fn admit(&self, ctx: &mut Context, _body: &RequestBody<'_>) -> Result<(), GatewayError> {
        // Pending at least once: the exchange really awaits the stage.
        tokio::task::yield_now().await;
        self.asked.fetch_add(1, Ordering::Relaxed);
        if self.allow {
            return Ok(());
        }
        ctx.error = Some("limited by the remote counter".into());
        Err(GatewayError::new(
            ErrorKind::RateLimited,
            "Rate limit reached for this key; retry after the window resets.",
        )
        .with_retry_after(Some(2)))
    }
}

#[tokio::test]
async fn an_async_admit_stage_is_awaited_before_routing_and_can_refuse() {
    for allow in [true, false] {
        let stage = Arc::new(RemoteLimit {
            allow,
            asked: AtomicU32::new(0),
        });
        let (app, live) = app_with(|s| s.admit_with(stage.clone()));
        let mut ctx = Context::default();
        let sink = call(&app, &live, r#"{"model":"m","messages":[]}"#, &mut ctx).await;
        assert_eq!(stage.asked.load(Ordering::Relaxed), 1);
        if allow {
            assert_eq!((sink.status(), ctx.attempts), (Some(200), 1));
        } else {
            assert_eq!(sink.status(), Some(429));
            assert_eq!(sink.header("retry-after"), Some("2"));
            assert_eq!((ctx.attempts, ctx.deployment.is_none()), (0, true));
        }
    }
}
