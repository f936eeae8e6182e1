//! Rate limits and state shared by gateway instances through a real `redis-server` the tests
//! start (`support/redis.rs`): the shared-state client itself first (bounded calls, failing fast
//! while Redis is down, recovering when it is back).

#[path = "support/redis.rs"]
mod redis_server;
mod support;

use redis_server::{Redis, RedisCluster};
use std::time::{Duration, Instant};
use support::*;
use switchboard::config::redis::{FailurePolicy, RedisSettings};
use switchboard::shared_state::{CallError, SharedState};

fn settings(url: String) -> RedisSettings {
    RedisSettings {
        nodes: vec![url],
        cluster: false,
        username: None,
        password: None,
        origin: "test".into(),
        ca_certs: None,
    }
}

#[tokio::test]
async fn shared_state_client_is_bounded_fails_fast_while_down_and_recovers() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let state = SharedState::new(
        &settings(redis.url()),
        Duration::from_millis(50),
        FailurePolicy::Open,
    )
    .unwrap();
    let n: i64 = state
        .query(redis::cmd("INCRBY").arg("k").arg(41))
        .await
        .unwrap();
    assert_eq!(n, 41);
    let script = redis::Script::new("return redis.call('INCR', KEYS[1]) + tonumber(ARGV[1])");
    let v: i64 = state.eval(&script, &[b"k"], &[b"100"]).await.unwrap();
    assert_eq!(v, 142);
    let mut pipe = redis::pipe();
    pipe.cmd("GET").arg("k").cmd("TIME");
    let (k, _time): (i64, (u64, u64)) = state.pipeline(&pipe).await.unwrap();
    assert_eq!(k, 42);
    assert_eq!(state.failures(), 0);

    // Down: every call returns within the bound, never hangs; failures are counted.
    redis.kill();
    for _ in 0..20 {
        let t = Instant::now();
        let r: Result<i64, CallError> = state.query(redis::cmd("GET").arg("k")).await;
        assert!(r.is_err());
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
    }
    assert!(state.failures() >= 1);
    assert!(state.is_failing());

    // Back: calls succeed again within a few probe periods; the script is reloaded on
    // NOSCRIPT (the restarted server forgot it).
    redis.restart();
    let mut recovered = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(v) = state.eval::<i64>(&script, &[b"k"], &[b"0"]).await {
            assert_eq!(v, 1, "a new server starts empty");
            recovered = true;
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    assert!(recovered, "the client never reconnected");
    assert!(!state.is_failing());
}

// ---------------------------------------------------------------------------------------------
// Key limits through the running gateway.

const MASTER: &str = "sk-master-1234";
const KEY: &str = "sk-limited-key-0001";

/// One group on `up`, a master key, Redis at `redis` (if any), `extra` top-level YAML.
fn config(up: &MockUpstream, redis: Option<&str>, extra: &str) -> String {
    // A generous Redis timeout (unless a test sets one): a loaded CI machine must not turn a
    // slow answer into a fail-open local decision.
    let router = redis
        .map(|u| format!("router_settings:\n  redis_url: {u}\n"))
        .unwrap_or_default();
    let extra = if extra.is_empty() && redis.is_some() {
        "switchboard:\n  redis_timeout_ms: 3000\n"
    } else {
        extra
    };
    format!(
        "model_list:\n  - model_name: gpt-4o\n    litellm_params: {{model: openai/gpt-4o, api_base: \"{b}/v1\", api_key: sk-up}}\n  - model_name: gpt-4o-mini\n    litellm_params: {{model: openai/gpt-4o-mini, api_base: \"{b}/v1\", api_key: sk-up}}\ngeneral_settings:\n  master_key: {MASTER}\n{router}{extra}",
        b = up.base()
    )
}

async fn upstream() -> MockUpstream {
    MockUpstream::start(|_| Reply::json(200, openai::completion("hello"))).await
}

/// Makes [`KEY`] with `limits` (the same key on every instance given).
async fn make_key(gws: &[&Gateway], limits: serde_json::Value) {
    let mut body = limits;
    body["key"] = KEY.into();
    for gw in gws {
        gw.generate_key(MASTER, body.clone()).await;
    }
}

fn chat_json(extra: serde_json::Value) -> serde_json::Value {
    let mut b =
        serde_json::json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
    if let (Some(b), serde_json::Value::Object(e)) = (b.as_object_mut(), extra) {
        b.extend(e);
    }
    b
}

fn chat_body(extra: serde_json::Value) -> Vec<u8> {
    chat_json(extra).to_string().into_bytes()
}

async fn chat(gw: &Gateway, extra: serde_json::Value) -> Response {
    chat_with(gw, KEY, extra).await
}

/// A chat call as `key` with `extra` body fields.
async fn chat_with(gw: &Gateway, key: &str, extra: serde_json::Value) -> Response {
    gw.post_as(key, "/v1/chat/completions", &chat_json(extra))
        .await
}

/// `n` concurrent calls spread round-robin over `gws`; their responses.
async fn burst(gws: &[&Gateway], n: usize) -> Vec<Response> {
    let calls = (0..n).map(|i| chat(gws[i % gws.len()], serde_json::json!({})));
    futures_util::future::join_all(calls).await
}

fn count(rs: &[Response], status: u16) -> usize {
    rs.iter().filter(|r| r.status == status).count()
}

/// rpm 5, 20 calls at once: exactly 5 answered; the rest get LiteLLM's 429 with a
/// Retry-After of the real wait (one request every 12 s: 12 s, ±1) and the headers.
#[tokio::test]
async fn rpm_is_exact_at_the_limit_under_concurrency() {
    let up = upstream().await;
    let gw = Gateway::start(&config(&up, None, ""));
    make_key(&[&gw], serde_json::json!({"rpm_limit": 5})).await;
    let rs = burst(&[&gw], 20).await;
    assert_eq!(
        count(&rs, 200),
        5,
        "{:?}",
        rs.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert_eq!(count(&rs, 429), 15);
    assert_eq!(up.count(), 5);
    let refused = rs.iter().find(|r| r.status == 429).unwrap();
    let e = refused.expect_error(429);
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.starts_with("Rate limit exceeded for api_key: ")
            && msg.contains(
                "Limit type: requests. Current limit: 5, Remaining: 0. Limit resets at: "
            )
            && msg.ends_with(" UTC"),
        "{msg}"
    );
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((11..=13).contains(&retry), "retry-after {retry}");
    assert_eq!(refused.header("x-ratelimit-limit-requests"), Some("5"));
    assert_eq!(refused.header("x-ratelimit-remaining-requests"), Some("0"));
    // Every admitted answer says what is left; one of them saw 0.
    let mut left: Vec<u64> = rs
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| {
            r.header("x-ratelimit-remaining-requests")
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    left.sort();
    assert_eq!(left, [0, 1, 2, 3, 4]);
}

/// Three instances sharing one Redis admit exactly `rpm_limit` between them.
#[tokio::test]
async fn three_instances_sharing_redis_admit_exactly_rpm() {
    let Some(redis) = Redis::start() else { return };
    let up = upstream().await;
    let yaml = config(&up, Some(&redis.url()), "");
    let (a, b, c) = (
        Gateway::start(&yaml),
        Gateway::start(&yaml),
        Gateway::start(&yaml),
    );
    make_key(&[&a, &b, &c], serde_json::json!({"rpm_limit": 7})).await;
    let rs = burst(&[&a, &b, &c], 30).await;
    assert_eq!(
        count(&rs, 200),
        7,
        "{:?}",
        rs.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert_eq!(count(&rs, 429), 23);
    // A second wave right after: nothing more (the state is shared, not per instance).
    let rs = burst(&[&c, &b, &a], 9).await;
    assert_eq!(count(&rs, 200), 0);
    let retry: u64 = rs[0].header("retry-after").unwrap().parse().unwrap();
    assert!((8..=10).contains(&retry), "60 s / 7 = 8.6 s; got {retry}");
}

/// GCRA: a full burst, then capacity returns one request per interval, never a second full
/// burst at a window edge. rpm 120: one request every 0.5 s.
#[tokio::test]
async fn no_double_burst_after_the_first_one() {
    let Some(redis) = Redis::start() else { return };
    let up = upstream().await;
    let gw = Gateway::start(&config(&up, Some(&redis.url()), ""));
    make_key(&[&gw], serde_json::json!({"rpm_limit": 120})).await;
    let rs = burst(&[&gw], 130).await;
    assert_eq!(count(&rs, 200), 120);
    let started = Instant::now();
    // Within the next ~1.2 s at most three more requests come back (one per 0.5 s), however
    // hard we ask; a fixed window would hand out nothing and then a whole second burst.
    let mut admitted = 0;
    while started.elapsed() < Duration::from_millis(1200) {
        let rs = burst(&[&gw], 10).await;
        admitted += count(&rs, 200);
    }
    assert!((1..=3).contains(&admitted), "admitted {admitted}");
}

/// tpm: admission reserves prompt/4 + max_tokens; settle gives back all but the usage (18).
#[tokio::test]
async fn tpm_reserves_the_estimate_and_reconciles_to_usage() {
    let up = upstream().await;
    let gw = Gateway::start(&config(&up, None, ""));
    make_key(&[&gw], serde_json::json!({"tpm_limit": 1000})).await;
    let r = chat(&gw, serde_json::json!({"max_tokens": 600})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-ratelimit-limit-tokens"), Some("1000"));
    let left: u64 = r
        .header("x-ratelimit-remaining-tokens")
        .unwrap()
        .parse()
        .unwrap();
    assert!((370..=399).contains(&left), "reserved ~610: {left}");
    // Without reconciliation 600 more would not fit for half a minute; with it (18 used),
    // they do as soon as the first request has settled.
    let mut statuses = Vec::new();
    let fit = wait_until_async(
        async || {
            let r = chat(&gw, serde_json::json!({"max_tokens": 600})).await;
            statuses.push(r.status);
            r.status == 200
        },
        Duration::from_secs(2),
    )
    .await;
    assert!(fit, "{statuses:?}");
    // Two reservations of 600 at once do not fit: the second is refused on tokens.
    let big = serde_json::json!({"max_tokens": 900});
    let (x, y) = tokio::join!(chat(&gw, big.clone()), chat(&gw, big));
    let mut s = [x.status, y.status];
    s.sort();
    assert_eq!(s, [200, 429]);
    let refused = if x.status == 429 { &x } else { &y };
    assert!(
        refused.text().contains("Limit type: tokens"),
        "{}",
        refused.text()
    );
}

/// max_parallel_requests 1 with a slow upstream: a second call while the first is in flight
/// is refused; the slot comes back when the first caller hangs up.
#[tokio::test]
async fn max_parallel_is_held_while_in_flight_and_released_after_hang_up() {
    let up = MockUpstream::start(|_| {
        Reply::json(200, openai::completion("slow")).delayed(Duration::from_millis(800))
    })
    .await;
    let gw = Gateway::start(&config(&up, None, ""));
    make_key(&[&gw], serde_json::json!({"max_parallel_requests": 1})).await;
    let mut first = Conn::connect(gw.port).await;
    first
        .send_head_and_body(
            "POST",
            "/v1/chat/completions",
            &[
                ("content-type", "application/json"),
                ("authorization", &format!("Bearer {KEY}")),
            ],
            &chat_body(serde_json::json!({})),
        )
        .await;
    assert!(wait_until(|| up.count() == 1, Duration::from_secs(5)).await);
    let second = chat(&gw, serde_json::json!({})).await;
    assert_eq!(second.status, 429, "{}", second.text());
    assert!(second.text().contains("Limit type: max_parallel_requests"));
    // The first caller leaves before its answer.
    drop(first);
    let started = Instant::now();
    let back = wait_until_async(
        async || chat(&gw, serde_json::json!({})).await.status == 200,
        Duration::from_secs(5),
    )
    .await;
    assert!(back, "the slot was never released");
    assert!(started.elapsed() < Duration::from_secs(4));
}

/// The headers are in a stream's head, before the first byte of the body.
#[tokio::test]
async fn rate_limit_headers_on_a_stream() {
    let up = MockUpstream::start(|_| {
        Reply::stream(
            "text/event-stream",
            &openai::sse(&["a", "b"], true),
            16,
            Duration::from_millis(5),
        )
    })
    .await;
    let gw = Gateway::start(&config(&up, None, ""));
    make_key(
        &[&gw],
        serde_json::json!({"rpm_limit": 10, "tpm_limit": 5000}),
    )
    .await;
    let mut conn = Conn::connect(gw.port).await;
    conn.send_head_and_body(
        "POST",
        "/v1/chat/completions",
        &[
            ("content-type", "application/json"),
            ("authorization", &format!("Bearer {KEY}")),
        ],
        &chat_body(serde_json::json!({"stream": true})),
    )
    .await;
    let mut s = conn.read_streaming().await;
    assert_eq!(s.header("x-ratelimit-limit-requests"), Some("10"));
    assert_eq!(s.header("x-ratelimit-remaining-requests"), Some("9"));
    assert_eq!(s.header("x-ratelimit-limit-tokens"), Some("5000"));
    assert!(s.header("x-ratelimit-reset-requests").is_some());
    // LiteLLM's per-descriptor names too, in the same head.
    assert_eq!(s.header("x-ratelimit-api_key-limit-requests"), Some("10"));
    assert_eq!(
        s.header("x-ratelimit-api_key-remaining-requests"),
        Some("9")
    );
    assert_eq!(s.header("x-ratelimit-api_key-limit-tokens"), Some("5000"));
    assert!(s.header("x-ratelimit-api_key-remaining-tokens").is_some());
    let body = String::from_utf8_lossy(&s.read_to_end().await).to_string();
    assert!(body.contains("[DONE]"), "{body}");
}

/// Redis killed mid-test: fail-open answers from this instance's own counters (bounded, no
/// hang), a metric counts it. When Redis is back (restarted, empty) what the outage admitted is
/// charged there before admissions return to it: the window stays spent, no fresh burst.
/// rpm 4: one admitted on Redis (lost with the killed server), four locally during the
/// outage, none after the restart.
#[tokio::test]
async fn redis_down_fails_open_and_recovers() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let up = upstream().await;
    let gw = Gateway::start(&config(&up, Some(&redis.url()), ""));
    make_key(&[&gw], serde_json::json!({"rpm_limit": 4})).await;
    let r = chat(&gw, serde_json::json!({})).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-ratelimit-remaining-requests"), Some("3"));
    redis.kill();
    let t = Instant::now();
    let rs = burst(&[&gw], 6).await;
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    // Local view: 4 per minute on this instance.
    assert_eq!(
        count(&rs, 200),
        4,
        "{:?}",
        rs.iter().map(|r| (r.status, r.text())).collect::<Vec<_>>()
    );
    assert_eq!(count(&rs, 429), 2);
    let scrape = gw.get("/metrics", &[]).await.text();
    let fallback = metric_value(&scrape, "switchboard_rate_limit_redis_fallback_total", &[]);
    assert!(fallback.unwrap_or(0.0) >= 6.0, "{scrape}");
    redis.restart();
    wait_for_outage_charged(&gw, &redis, 1.0).await;
    // Back on Redis, which now holds the outage's four: the window is spent.
    let rs = burst(&[&gw], 3).await;
    assert_eq!(
        count(&rs, 200),
        0,
        "{:?}",
        rs.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    let e = rs[0].expect_error(429);
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("Current limit: 4, Remaining: 0"),
        "{e}"
    );
    let retry: u64 = rs[0].header("retry-after").unwrap().parse().unwrap();
    assert!(
        (9..=16).contains(&retry),
        "one request every 15 s; got {retry}"
    );
}

/// Waits until `gw` has charged at least `cells` rate cells of an outage into Redis (its
/// admissions are back on Redis then) and Redis holds them.
async fn wait_for_outage_charged(gw: &Gateway, redis: &Redis, cells: f64) {
    let mut last = String::new();
    let charged = wait_until_async(
        async || {
            last = gw.get("/metrics", &[]).await.text();
            metric_value(&last, "switchboard_rate_limit_outage_charged_total", &[])
                .is_some_and(|v| v >= cells)
        },
        Duration::from_secs(15),
    )
    .await;
    assert!(charged, "the outage was never charged into Redis: {last}");
    assert_ne!(redis.cmd(&["DBSIZE"]).as_deref(), Some(":0"));
}

/// Recovery without a burst across a fleet: rpm 5, Redis killed, 2 admitted by instance A on
/// its own counters, Redis restarted empty. A charges those 2 into Redis; then the fleet (A
/// and B, which never saw the outage) admits exactly 5 - 2 = 3 more in the same window.
#[tokio::test]
async fn an_outage_is_charged_into_redis_so_recovery_admits_no_fresh_burst() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let up = upstream().await;
    let yaml = config(&up, Some(&redis.url()), "");
    let (a, b) = (Gateway::start(&yaml), Gateway::start(&yaml));
    make_key(&[&a, &b], serde_json::json!({"rpm_limit": 5})).await;
    // A reaches Redis once (its connection is made) on another key.
    key_with(&a, "sk-warm-up", serde_json::json!({"rpm_limit": 1000})).await;
    assert_eq!(
        chat_with(&a, "sk-warm-up", serde_json::json!({}))
            .await
            .status,
        200
    );
    redis.kill();
    for _ in 0..2 {
        let r = chat(&a, serde_json::json!({})).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    redis.restart();
    wait_for_outage_charged(&a, &redis, 1.0).await;
    let rs = burst(&[&a, &b], 10).await;
    assert_eq!(
        count(&rs, 200),
        3,
        "{:?}",
        rs.iter().map(|r| (r.status, r.text())).collect::<Vec<_>>()
    );
    assert_eq!(count(&rs, 429), 7);
    assert_eq!(up.count(), 1 + 2 + 3);
    // Both instances decided on Redis: neither fell back after the restart.
    let scrape = b.get("/metrics", &[]).await.text();
    assert_eq!(
        metric_value(&scrape, "switchboard_rate_limit_redis_fallback_total", &[]),
        Some(0.0),
        "{scrape}"
    );
}

/// A hung Redis (SIGSTOP: the connection stays open, nothing answers) costs a request at most
/// the configured bound (`redis_timeout_ms: 300`) and then nothing: deployment selection (with
/// deployment rpm shared through Redis) never waits on it, fail-open decides on the instance's
/// own counters (rpm 3: 3 of 6 admitted), and fail-closed refuses with 503 within the bound.
/// Resumed, admissions go back to Redis.
#[tokio::test]
async fn a_hung_redis_costs_at_most_the_timeout_and_the_policy_holds() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let up = upstream().await;
    let bound = Duration::from_millis(300);
    let with_policy = |policy: &str| {
        format!(
            "model_list:\n  - model_name: gpt-4o\n    litellm_params: {{model: openai/gpt-4o, api_base: \"{b}/v1\", api_key: sk-up, rpm: 100000}}\ngeneral_settings:\n  master_key: {MASTER}\nrouter_settings:\n  redis_url: {u}\nswitchboard:\n  redis_timeout_ms: {ms}\n  redis_failure_policy: {policy}\n",
            b = up.base(),
            u = redis.url(),
            ms = bound.as_millis()
        )
    };
    let open = Gateway::start(&with_policy("open"));
    let closed = Gateway::start(&with_policy("closed"));
    make_key(&[&open], serde_json::json!({"rpm_limit": 3})).await;
    // Its own key: the script that hung on `closed` runs once Redis resumes and takes from it.
    const CLOSED_KEY: &str = "sk-limited-closed-0001";
    key_with(&closed, CLOSED_KEY, serde_json::json!({"rpm_limit": 3})).await;
    wait_for_shared_limits(&open).await;
    wait_for_shared_limits(&closed).await;

    redis.pause();
    // Generous slack over the bound for a loaded machine, far below a hang.
    let most = bound + Duration::from_millis(700);
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let t = Instant::now();
        let r = chat(&open, serde_json::json!({})).await;
        assert!(t.elapsed() < most, "{:?}", t.elapsed());
        statuses.push(r.status);
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429]);
    let t = Instant::now();
    let r = chat_with(&closed, CLOSED_KEY, serde_json::json!({})).await;
    assert!(t.elapsed() < most, "{:?}", t.elapsed());
    r.expect_error(503);
    // Routing alone (no key, no limits) never waits on the hung Redis.
    for _ in 0..3 {
        let t = Instant::now();
        let r = open
            .post_as(
                MASTER,
                "/v1/chat/completions",
                &chat_json(serde_json::json!({})),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(t.elapsed() < most, "{:?}", t.elapsed());
    }

    redis.resume();
    // The outage's admissions are charged; then Redis decides again (no more fallbacks).
    wait_for_outage_charged(&open, &redis, 1.0).await;
    let fallbacks = async || {
        let scrape = open.get("/metrics", &[]).await.text();
        metric_value(&scrape, "switchboard_rate_limit_redis_fallback_total", &[]).unwrap()
    };
    let before = fallbacks().await;
    chat(&open, serde_json::json!({})).await.expect_error(429);
    assert_eq!(fallbacks().await, before);
    let back = wait_until_async(
        async || {
            chat_with(&closed, CLOSED_KEY, serde_json::json!({}))
                .await
                .status
                == 200
        },
        Duration::from_secs(10),
    )
    .await;
    assert!(back, "fail-closed never recovered");
}

/// Fail-closed: 503 with a Retry-After while Redis is down, answered again once it is back.
#[tokio::test]
async fn redis_down_fails_closed_when_configured() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let up = upstream().await;
    let gw = Gateway::start(&config(
        &up,
        Some(&redis.url()),
        "switchboard:\n  redis_failure_policy: closed\n  redis_timeout_ms: 1000\n",
    ));
    make_key(&[&gw], serde_json::json!({"rpm_limit": 100})).await;
    assert_eq!(chat(&gw, serde_json::json!({})).await.status, 200);
    redis.kill();
    let t = Instant::now();
    let r = chat(&gw, serde_json::json!({})).await;
    assert!(t.elapsed() < Duration::from_secs(2));
    let e = r.expect_error(503);
    assert!(e["message"]
        .as_str()
        .unwrap()
        .contains("redis_failure_policy"));
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(up.count(), 1, "nothing reached the upstream while closed");
    redis.restart();
    let back = wait_until_async(
        async || chat(&gw, serde_json::json!({})).await.status == 200,
        Duration::from_secs(10),
    )
    .await;
    assert!(back);
}

// ---------------------------------------------------------------------------------------------
// Scopes: team, user, team member, end user, model per key. Each shares its limit across the
// keys (or requests) in it, refuses the (N+1)th with LiteLLM's 429, and leaves the other
// scopes alone.

/// An admin call with the master key that must succeed; its JSON.
async fn admin(gw: &Gateway, path: &str, body: serde_json::Value) -> serde_json::Value {
    let r = gw.post_as(MASTER, path, &body).await;
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    r.json()
}

/// Makes the virtual key `key` with `fields`.
async fn key_with(gw: &Gateway, key: &str, mut fields: serde_json::Value) {
    fields["key"] = key.into();
    gw.generate_key(MASTER, fields).await;
}

/// The refusal names `scope` and its limit, and its Retry-After is the real wait (60 s /
/// limit, ±1 s).
fn assert_refused_by(r: &Response, scope: &str, limit: u64) {
    let e = r.expect_error(429);
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.starts_with(&format!("Rate limit exceeded for {scope}. Limit type: requests. Current limit: {limit}, Remaining: 0.")),
        "{msg}"
    );
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    let wait = 60 / limit;
    assert!(
        (wait - 1..=wait + 1).contains(&retry),
        "retry-after {retry}, expected ~{wait}"
    );
}

/// Team rpm 3 is shared by the team's two keys: the fourth call, on either key, is refused
/// on the team scope; a key outside the team is untouched. The per-descriptor headers say
/// which scope is tight, the aggregate ones follow the tightest.
#[tokio::test]
async fn team_rpm_is_shared_by_the_team_keys() {
    let up = upstream().await;
    let gw = Gateway::start(&config(&up, None, ""));
    admin(
        &gw,
        "/team/new",
        serde_json::json!({"team_id": "t-lim", "rpm_limit": 3}),
    )
    .await;
    admin(
        &gw,
        "/team/new",
        serde_json::json!({"team_id": "t-other", "rpm_limit": 3}),
    )
    .await;
    key_with(
        &gw,
        "sk-team-a",
        serde_json::json!({"team_id": "t-lim", "rpm_limit": 100}),
    )
    .await;
    key_with(&gw, "sk-team-b", serde_json::json!({"team_id": "t-lim"})).await;
    key_with(&gw, "sk-team-c", serde_json::json!({"team_id": "t-other"})).await;
    let first = chat_with(&gw, "sk-team-a", serde_json::json!({})).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.header("x-ratelimit-team-limit-requests"), Some("3"));
    assert_eq!(
        first.header("x-ratelimit-team-remaining-requests"),
        Some("2")
    );
    assert_eq!(
        first.header("x-ratelimit-api_key-limit-requests"),
        Some("100")
    );
    assert_eq!(
        first.header("x-ratelimit-api_key-remaining-requests"),
        Some("99")
    );
    assert_eq!(
        first.header("x-ratelimit-limit-requests"),
        Some("3"),
        "the tightest"
    );
    assert_eq!(first.header("x-ratelimit-remaining-requests"), Some("2"));
    for key in ["sk-team-b", "sk-team-a"] {
        assert_eq!(chat_with(&gw, key, serde_json::json!({})).await.status, 200);
    }
    let refused = chat_with(&gw, "sk-team-b", serde_json::json!({})).await;
    assert_refused_by(&refused, "team: t-lim", 3);
    assert_eq!(
        refused.header("x-ratelimit-team-remaining-requests"),
        Some("0")
    );
    assert_eq!(
        chat_with(&gw, "sk-team-a", serde_json::json!({}))
            .await
            .status,
        429
    );
    let other = chat_with(&gw, "sk-team-c", serde_json::json!({})).await;
    assert_eq!(other.status, 200, "another team is untouched");
    assert_eq!(
        other.header("x-ratelimit-team-remaining-requests"),
        Some("2")
    );
    assert_eq!(up.count(), 4);
}

/// A user's rpm is shared by every key of the user; another user's key is untouched.
#[tokio::test]
async fn user_rpm_is_shared_by_the_user_keys() {
    let up = upstream().await;
    let gw = Gateway::start(&config(&up, None, ""));
    admin(
        &gw,
        "/user/new",
        serde_json::json!({"user_id": "u-lim", "rpm_limit": 2, "auto_create_key": false}),
    )
    .await;
    admin(
        &gw,
        "/user/new",
        serde_json::json!({"user_id": "u-free", "auto_create_key": false}),
    )
    .await;
    key_with(&gw, "sk-user-a", serde_json::json!({"user_id": "u-lim"})).await;
    key_with(&gw, "sk-user-b", serde_json::json!({"user_id": "u-lim"})).await;
    key_with(&gw, "sk-user-c", serde_json::json!({"user_id": "u-free"})).await;
    assert_eq!(
        chat_with(&gw, "sk-user-a", serde_json::json!({}))
            .await
            .status,
        200
    );
    let second = chat_with(&gw, "sk-user-b", serde_json::json!({})).await;
    assert_eq!(second.status, 200);
    assert_eq!(
        second.header("x-ratelimit-user-remaining-requests"),
        Some("0")
    );
    assert_refused_by(
        &chat_with(&gw, "sk-user-a", serde_json::json!({})).await,
        "user: u-lim",
        2,
    );
    let other = chat_with(&gw, "sk-user-c", serde_json::json!({})).await;
    assert_eq!(other.status, 200, "{}", other.text());
    assert!(other
        .header("x-ratelimit-user-remaining-requests")
        .is_none());
    assert_eq!(up.count(), 3);
}

/// A team member's limit (the membership's budget row) holds for that member's keys in the
/// team; another member of the same team is untouched.
#[tokio::test]
async fn team_member_rpm_holds_for_that_member_only() {
    let up = upstream().await;
    let gw = Gateway::start(&config(&up, None, ""));
    admin(&gw, "/team/new", serde_json::json!({"team_id": "t-m"})).await;
    let added = admin(
        &gw,
        "/team/member_add",
        serde_json::json!({"team_id": "t-m", "member": [{"user_id": "m-lim", "role": "user"}, {"user_id": "m-free", "role": "user"}], "max_budget_in_team": 100}),
    )
    .await;
    let budget_id = added["updated_team_memberships"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["user_id"] == "m-lim")
        .and_then(|m| m["budget_id"].as_str())
        .unwrap()
        .to_string();
    admin(
        &gw,
        "/budget/update",
        serde_json::json!({"budget_id": budget_id, "rpm_limit": 2}),
    )
    .await;
    key_with(
        &gw,
        "sk-member-a",
        serde_json::json!({"team_id": "t-m", "user_id": "m-lim"}),
    )
    .await;
    key_with(
        &gw,
        "sk-member-b",
        serde_json::json!({"team_id": "t-m", "user_id": "m-lim"}),
    )
    .await;
    key_with(
        &gw,
        "sk-member-c",
        serde_json::json!({"team_id": "t-m", "user_id": "m-free"}),
    )
    .await;
    assert_eq!(
        chat_with(&gw, "sk-member-a", serde_json::json!({}))
            .await
            .status,
        200
    );
    let second = chat_with(&gw, "sk-member-b", serde_json::json!({})).await;
    assert_eq!(second.status, 200, "{}", second.text());
    assert_eq!(
        second.header("x-ratelimit-team_member-remaining-requests"),
        Some("0")
    );
    assert_refused_by(
        &chat_with(&gw, "sk-member-a", serde_json::json!({})).await,
        "team_member: t-m:m-lim",
        2,
    );
    for _ in 0..3 {
        let r = chat_with(&gw, "sk-member-c", serde_json::json!({})).await;
        assert_eq!(r.status, 200, "the other member: {}", r.text());
    }
}

/// An end user's limit (the customer's budget row) follows the `user` field across keys;
/// another end user, and a call naming none, are untouched.
#[tokio::test]
async fn end_user_rpm_follows_the_user_field_across_keys() {
    let up = upstream().await;
    let gw = Gateway::start(&config(&up, None, ""));
    admin(
        &gw,
        "/customer/new",
        serde_json::json!({"user_id": "cust-lim", "rpm_limit": 2}),
    )
    .await;
    key_with(&gw, "sk-eu-a", serde_json::json!({})).await;
    key_with(&gw, "sk-eu-b", serde_json::json!({})).await;
    let as_customer = serde_json::json!({"user": "cust-lim"});
    assert_eq!(
        chat_with(&gw, "sk-eu-a", as_customer.clone()).await.status,
        200
    );
    let second = chat_with(&gw, "sk-eu-b", as_customer.clone()).await;
    assert_eq!(second.status, 200, "{}", second.text());
    assert_eq!(
        second.header("x-ratelimit-end_user-remaining-requests"),
        Some("0")
    );
    assert_refused_by(
        &chat_with(&gw, "sk-eu-a", as_customer).await,
        "end_user: cust-lim",
        2,
    );
    let other = chat_with(&gw, "sk-eu-a", serde_json::json!({"user": "cust-other"})).await;
    assert_eq!(other.status, 200, "{}", other.text());
    assert_eq!(
        chat_with(&gw, "sk-eu-b", serde_json::json!({}))
            .await
            .status,
        200
    );
}

/// `model_rpm_limit` limits one model on one key; another model on the key, and the same
/// model on another key, are untouched.
#[tokio::test]
async fn model_rpm_limit_is_per_model_per_key() {
    let up = upstream().await;
    let gw = Gateway::start(&config(&up, None, ""));
    key_with(
        &gw,
        "sk-model-a",
        serde_json::json!({"model_rpm_limit": {"gpt-4o": 2}}),
    )
    .await;
    key_with(&gw, "sk-model-b", serde_json::json!({})).await;
    let first = chat_with(&gw, "sk-model-a", serde_json::json!({})).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(
        first.header("x-ratelimit-model_per_key-limit-requests"),
        Some("2")
    );
    assert_eq!(
        first.header("x-ratelimit-model_per_key-remaining-requests"),
        Some("1")
    );
    assert_eq!(
        chat_with(&gw, "sk-model-a", serde_json::json!({}))
            .await
            .status,
        200
    );
    let hash = switchboard::keys::hex(&switchboard::keys::hash_key("sk-model-a"));
    assert_refused_by(
        &chat_with(&gw, "sk-model-a", serde_json::json!({})).await,
        &format!("model_per_key: {hash}:gpt-4o"),
        2,
    );
    let mini = chat_with(
        &gw,
        "sk-model-a",
        serde_json::json!({"model": "gpt-4o-mini"}),
    )
    .await;
    assert_eq!(mini.status, 200, "another model: {}", mini.text());
    assert!(mini
        .header("x-ratelimit-model_per_key-limit-requests")
        .is_none());
    assert_eq!(
        chat_with(&gw, "sk-model-b", serde_json::json!({}))
            .await
            .status,
        200
    );
}

// ---------------------------------------------------------------------------------------------
// LiteLLM's default limits from `litellm_settings`.

/// `default_key_generate_params` fills a new key's unset limits and
/// `upperbound_key_generate_params` fills the rest and refuses a value over its cap with
/// LiteLLM's 400; the key made is then held to those limits on real calls.
#[tokio::test]
async fn key_generate_applies_the_default_and_upper_bound_limits() {
    let up = upstream().await;
    let gw = Gateway::start(&config(
        &up,
        None,
        "litellm_settings:\n  default_key_generate_params: {rpm_limit: 2}\n  upperbound_key_generate_params: {rpm_limit: 5, tpm_limit: 10000}\n",
    ));
    let made = admin(
        &gw,
        "/key/generate",
        serde_json::json!({"key": "sk-defaulted"}),
    )
    .await;
    assert_eq!(made["rpm_limit"], 2, "{made}");
    assert_eq!(made["tpm_limit"], 10000, "{made}");
    let over = gw
        .post_as(
            MASTER,
            "/key/generate",
            &serde_json::json!({"rpm_limit": 6}),
        )
        .await;
    let e = over.expect_error(400);
    assert_eq!(
        e["message"],
        "rpm_limit is over max limit set in config - user_value=6; max_value=5"
    );
    let at_cap = admin(&gw, "/key/generate", serde_json::json!({"rpm_limit": 5})).await;
    assert_eq!(at_cap["rpm_limit"], 5);
    // The defaulted key is held to 2 a minute.
    for _ in 0..2 {
        let r = chat_with(&gw, "sk-defaulted", serde_json::json!({})).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-ratelimit-api_key-limit-tokens"), Some("10000"));
    }
    let hash = switchboard::keys::hex(&switchboard::keys::hash_key("sk-defaulted"));
    assert_refused_by(
        &chat_with(&gw, "sk-defaulted", serde_json::json!({})).await,
        &format!("api_key: {hash}"),
        2,
    );
}

/// `default_internal_user_params` gives a new user (not a proxy admin) its limits, which then
/// hold across the user's keys.
#[tokio::test]
async fn new_users_get_the_default_internal_user_limits() {
    let up = upstream().await;
    let gw = Gateway::start(&config(
        &up,
        None,
        "litellm_settings:\n  default_internal_user_params: {rpm_limit: 2}\n",
    ));
    let user = admin(
        &gw,
        "/user/new",
        serde_json::json!({"user_id": "u-default", "auto_create_key": false}),
    )
    .await;
    assert_eq!(user["rpm_limit"], 2, "{user}");
    let boss = admin(
        &gw,
        "/user/new",
        serde_json::json!({"user_id": "u-admin", "user_role": "proxy_admin", "auto_create_key": false}),
    )
    .await;
    assert!(boss["rpm_limit"].is_null(), "{boss}");
    key_with(
        &gw,
        "sk-udef-a",
        serde_json::json!({"user_id": "u-default"}),
    )
    .await;
    key_with(
        &gw,
        "sk-udef-b",
        serde_json::json!({"user_id": "u-default"}),
    )
    .await;
    assert_eq!(
        chat_with(&gw, "sk-udef-a", serde_json::json!({}))
            .await
            .status,
        200
    );
    assert_eq!(
        chat_with(&gw, "sk-udef-b", serde_json::json!({}))
            .await
            .status,
        200
    );
    assert_refused_by(
        &chat_with(&gw, "sk-udef-a", serde_json::json!({})).await,
        "user: u-default",
        2,
    );
}

/// `max_end_user_budget_id`: end users with no budget of their own (no row at all, as
/// LiteLLM's implicit customers) each get that budget's rpm; a customer with its own budget
/// keeps its own.
#[tokio::test]
async fn end_users_without_a_budget_get_the_default_budget_limits() {
    let up = upstream().await;
    let gw = Gateway::start(&config(
        &up,
        None,
        "litellm_settings:\n  max_end_user_budget_id: eu-default\n",
    ));
    admin(
        &gw,
        "/budget/new",
        serde_json::json!({"budget_id": "eu-default", "rpm_limit": 2}),
    )
    .await;
    admin(
        &gw,
        "/customer/new",
        serde_json::json!({"user_id": "cust-own", "rpm_limit": 4}),
    )
    .await;
    key_with(&gw, "sk-eu-default", serde_json::json!({})).await;
    let anon = serde_json::json!({"user": "anon-1"});
    for _ in 0..2 {
        let r = chat_with(&gw, "sk-eu-default", anon.clone()).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-ratelimit-end_user-limit-requests"), Some("2"));
    }
    assert_refused_by(
        &chat_with(&gw, "sk-eu-default", anon).await,
        "end_user: anon-1",
        2,
    );
    // Another end user has a limit of its own, not a share of anon-1's.
    let r = chat_with(&gw, "sk-eu-default", serde_json::json!({"user": "anon-2"})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    for _ in 0..4 {
        let r = chat_with(
            &gw,
            "sk-eu-default",
            serde_json::json!({"user": "cust-own"}),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-ratelimit-end_user-limit-requests"), Some("4"));
    }
    // No end user: no end-user limit.
    let r = chat_with(&gw, "sk-eu-default", serde_json::json!({})).await;
    assert_eq!(r.status, 200);
    assert!(r.header("x-ratelimit-end_user-limit-requests").is_none());
}

// ---------------------------------------------------------------------------------------------
// Redis over TLS and Redis Cluster.

/// Waits until `gw` decides limits on Redis (a key with a huge limit answered 200 rather than
/// the fail-closed 503 of a connection still being made).
async fn wait_for_shared_limits(gw: &Gateway) {
    key_with(
        gw,
        "sk-warm-up",
        serde_json::json!({"rpm_limit": 1_000_000}),
    )
    .await;
    let mut last = String::new();
    let ready = wait_until_async(
        async || {
            let r = chat_with(gw, "sk-warm-up", serde_json::json!({})).await;
            last = r.text();
            r.status == 200
        },
        Duration::from_secs(15),
    )
    .await;
    assert!(ready, "limits never reached Redis: {last}");
}

/// Two instances reach Redis at `rediss://` trusting the test's private CA
/// (`REDIS_SSL_CA_CERTS`) and admit exactly rpm between them (fail-closed, so every decision
/// is Redis'). An instance that does not trust the CA fails the handshake and refuses with
/// 503: the certificate is verified, never skipped.
#[tokio::test]
async fn rate_limits_shared_over_redis_tls_with_a_private_ca() {
    let Some(redis) = Redis::start_tls() else {
        return;
    };
    let up = upstream().await;
    let yaml = config(
        &up,
        Some(&redis.tls_url()),
        "switchboard:\n  redis_failure_policy: closed\n  redis_timeout_ms: 3000\n",
    );
    let ca = redis.ca_file();
    let env = [("REDIS_SSL_CA_CERTS", ca.to_str().unwrap())];
    let (a, b) = (
        Gateway::start_with_env(&yaml, &env),
        Gateway::start_with_env(&yaml, &env),
    );
    wait_for_shared_limits(&a).await;
    wait_for_shared_limits(&b).await;
    make_key(
        &[&a, &b],
        serde_json::json!({"rpm_limit": 3, "tpm_limit": 100000}),
    )
    .await;
    let rs = burst(&[&a, &b], 8).await;
    assert_eq!(
        count(&rs, 200),
        3,
        "{:?}",
        rs.iter().map(|r| (r.status, r.text())).collect::<Vec<_>>()
    );
    assert_eq!(count(&rs, 429), 5);
    assert_ne!(redis.cmd(&["DBSIZE"]).as_deref(), Some(":0"));
    // No CA: the handshake fails (the system roots do not know it), so closed means 503.
    let c = Gateway::start(&yaml);
    make_key(&[&c], serde_json::json!({"rpm_limit": 3})).await;
    let r = chat(&c, serde_json::json!({})).await;
    let e = r.expect_error(503);
    assert!(e["message"].as_str().unwrap().contains("Redis"), "{e}");
}

/// Two instances share limits over a 3-primary Redis Cluster (`cache_params.
/// redis_startup_nodes`): the admission script's keys hash to one slot, so a key with rpm and
/// tpm limits is checked in one script and exactly rpm calls are admitted across both.
#[tokio::test]
async fn rate_limits_shared_over_a_redis_cluster() {
    let Some(cluster) = RedisCluster::start(3) else {
        return;
    };
    let up = upstream().await;
    let nodes = cluster
        .nodes
        .iter()
        .map(|n| format!("{{host: 127.0.0.1, port: {}}}", n.port))
        .collect::<Vec<_>>()
        .join(", ");
    let yaml = config(
        &up,
        None,
        &format!(
            "litellm_settings:\n  cache_params:\n    redis_startup_nodes: [{nodes}]\nswitchboard:\n  redis_failure_policy: closed\n  redis_timeout_ms: 3000\n"
        ),
    );
    let (a, b) = (Gateway::start(&yaml), Gateway::start(&yaml));
    wait_for_shared_limits(&a).await;
    wait_for_shared_limits(&b).await;
    make_key(
        &[&a, &b],
        serde_json::json!({"rpm_limit": 4, "tpm_limit": 100000}),
    )
    .await;
    let rs = burst(&[&a, &b], 12).await;
    assert_eq!(
        count(&rs, 200),
        4,
        "{:?}",
        rs.iter().map(|r| (r.status, r.text())).collect::<Vec<_>>()
    );
    assert_eq!(count(&rs, 429), 8);
    assert!(cluster.dbsize() > 0, "the state is on the cluster");
}

// ---------------------------------------------------------------------------------------------
// Fleet state.

/// A deployment that cools down on one instance cools down on the other (read from B's
/// /metrics, which sends nothing upstream), within the sync bound.
#[tokio::test]
async fn a_cooldown_entered_on_one_instance_is_seen_by_another() {
    let Some(redis) = Redis::start() else { return };
    let up = MockUpstream::start(|_| {
        Reply::json(
            500,
            serde_json::json!({"error": {"message": "boom", "type": "server_error"}}),
        )
    })
    .await;
    let yaml = format!(
        "model_list:\n  - model_name: gpt-4o\n    litellm_params: {{model: openai/gpt-4o, api_base: \"{b}/v1\", api_key: sk-up}}\n    model_info: {{id: shared-dep}}\nrouter_settings:\n  redis_url: {u}\n  allowed_fails: 0\n  cooldown_time: 30\n  num_retries: 0\n",
        b = up.base(),
        u = redis.url()
    );
    let a = Gateway::start(&yaml);
    let b = Gateway::start(&yaml);
    let state_on = async |gw: &Gateway| {
        let scrape = gw.get("/metrics", &[]).await.text();
        metric_value(
            &scrape,
            "litellm_deployment_state",
            &["model_id=\"shared-dep\""],
        )
    };
    assert_eq!(state_on(&b).await, Some(0.0));
    let r = a
        .post("/v1/chat/completions", &serde_json::json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert!(r.status >= 500, "{}", r.status);
    assert_eq!(state_on(&a).await, Some(2.0), "A cooled down");
    let seen = wait_until_async(
        async || state_on(&b).await == Some(2.0),
        Duration::from_secs(3),
    )
    .await;
    assert!(seen, "B never saw A's cooldown");
    assert_eq!(up.count(), 1, "B sent nothing upstream");
}
