//! Fleet state through a real `redis-server` the tests start (`support/redis.rs`): several
//! gateway instances sharing it enforce one deployment `rpm` and one budget.

#[path = "support/redis.rs"]
mod redis_server;
mod support;

use redis_server::Redis;
use std::time::Duration;
use support::*;

fn chat_body() -> serde_json::Value {
    serde_json::json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
}

async fn syncs(gw: &Gateway) -> f64 {
    let scrape = gw.get("/metrics", &[]).await.text();
    metric_value(&scrape, "switchboard_fleet_usage_syncs_total", &[]).unwrap_or(0.0)
}

/// Waits until every instance in `gws` has finished a sync that started after this call (so
/// each has read back everything pushed before it).
async fn synced(gws: &[&Gateway]) {
    for gw in gws {
        let start = syncs(gw).await;
        let ok = wait_until_async(
            async || syncs(gw).await >= start + 2.0,
            Duration::from_secs(5),
        )
        .await;
        assert!(ok, "an instance stopped syncing");
    }
}

/// Milliseconds left in Redis' current minute.
fn ms_left_in_minute(redis: &Redis) -> u64 {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let (secs, _): (u64, u64) = redis::cmd("TIME").query(&mut conn).unwrap();
    60_000 - (secs % 60) * 1000
}

/// Deployment `rpm: 6` on three instances sharing Redis: six requests in the minute across
/// them (two on each, each pair seen by the others before the next), then every instance
/// refuses with 429 and a Retry-After within the minute; nothing more reaches the upstream.
/// Traffic spaced by the sync interval is exact (the stated bound is for bursts faster than it).
#[tokio::test]
async fn deployment_rpm_counts_across_instances() {
    let Some(redis) = Redis::start() else { return };
    let up = MockUpstream::start(|_| Reply::json(200, openai::completion("hello"))).await;
    let yaml = format!(
        "model_list:\n  - model_name: gpt-4o\n    litellm_params: {{model: openai/gpt-4o, api_base: \"{b}/v1\", api_key: sk-up, rpm: 6}}\n    model_info: {{id: dep-a}}\nrouter_settings:\n  redis_url: {u}\n  num_retries: 0\n",
        b = up.base(),
        u = redis.url()
    );
    let gws = [
        Gateway::start(&yaml),
        Gateway::start(&yaml),
        Gateway::start(&yaml),
    ];
    let all: Vec<&Gateway> = gws.iter().collect();
    // Not across a minute's edge (the counts start over there): wait for a fresh minute.
    let fresh = wait_until(
        || ms_left_in_minute(&redis) > 20_000,
        Duration::from_secs(45),
    )
    .await;
    assert!(fresh);
    synced(&all).await;
    for gw in &gws {
        for _ in 0..2 {
            let r = gw.post("/v1/chat/completions", &chat_body()).await;
            assert_eq!(r.status, 200, "{}", r.text());
        }
        synced(&all).await;
    }
    assert_eq!(up.count(), 6);
    for gw in &gws {
        let r = gw.post("/v1/chat/completions", &chat_body()).await;
        let e = r.expect_error(429);
        assert_eq!(e["type"], "rate_limit_error", "{e}");
        let secs: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=60).contains(&secs), "{secs}");
    }
    assert_eq!(up.count(), 6, "refused requests never reached the upstream");
}

/// Deployment `tpm: 36` on two instances: the mock's calls use 18 tokens each, so one call on
/// each instance spends the minute's tokens fleet-wide and both refuse the next.
#[tokio::test]
async fn deployment_tpm_counts_across_instances() {
    let Some(redis) = Redis::start() else { return };
    let up = MockUpstream::start(|_| Reply::json(200, openai::completion("hello"))).await;
    let yaml = format!(
        "model_list:\n  - model_name: gpt-4o\n    litellm_params: {{model: openai/gpt-4o, api_base: \"{b}/v1\", api_key: sk-up, tpm: 36}}\nrouter_settings:\n  redis_url: {u}\n  num_retries: 0\n",
        b = up.base(),
        u = redis.url()
    );
    let a = Gateway::start(&yaml);
    let b = Gateway::start(&yaml);
    let fresh = wait_until(
        || ms_left_in_minute(&redis) > 20_000,
        Duration::from_secs(45),
    )
    .await;
    assert!(fresh);
    for gw in [&a, &b] {
        let r = gw.post("/v1/chat/completions", &chat_body()).await;
        assert_eq!(r.status, 200, "{}", r.text());
        synced(&[&a, &b]).await;
    }
    for gw in [&a, &b] {
        gw.post("/v1/chat/completions", &chat_body())
            .await
            .expect_error(429);
    }
    assert_eq!(up.count(), 2);
}

/// Redis down: deployment selection never waits on it; each instance counts on its own (the
/// limit per instance), and answers come at once.
#[tokio::test]
async fn deployment_rpm_falls_back_to_each_instance_while_redis_is_down() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let up = MockUpstream::start(|_| Reply::json(200, openai::completion("hello"))).await;
    let yaml = format!(
        "model_list:\n  - model_name: gpt-4o\n    litellm_params: {{model: openai/gpt-4o, api_base: \"{b}/v1\", api_key: sk-up, rpm: 2}}\nrouter_settings:\n  redis_url: {u}\n  num_retries: 0\n",
        b = up.base(),
        u = redis.url()
    );
    let a = Gateway::start(&yaml);
    let b = Gateway::start(&yaml);
    synced(&[&a, &b]).await;
    redis.kill();
    let t = std::time::Instant::now();
    for gw in [&a, &b] {
        for _ in 0..2 {
            let r = gw.post("/v1/chat/completions", &chat_body()).await;
            assert_eq!(r.status, 200, "{}", r.text());
        }
        gw.post("/v1/chat/completions", &chat_body())
            .await
            .expect_error(429);
    }
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_eq!(up.count(), 4);
}

// ---------------------------------------------------------------------------------------------
// Budgets over Redis.
//
// Prices on the deployment (input 0.001, output 0.002 USD a token): the mock answers with 11
// prompt and 7 completion tokens (0.025 USD), and `max_tokens: 10` with the short prompt
// reserves 0.028 USD (as in `tests/budgets.rs`).

const MASTER: &str = "sk-master-1234";
const KEY: &str = "sk-fleet-budget-0001";
const CALL_COST: f64 = 0.025;

/// Answers after 600 ms, or never (30 s) when the prompt says "hang".
async fn budget_upstream() -> MockUpstream {
    MockUpstream::start(|r| {
        let hang = String::from_utf8_lossy(&r.body).contains("hang");
        Reply::json(200, openai::completion("hello")).delayed(Duration::from_millis(if hang {
            30_000
        } else {
            600
        }))
    })
    .await
}

fn budget_config(up: &MockUpstream, redis: &Redis, switchboard: &str) -> String {
    format!(
        "model_list:\n  - model_name: gpt-4o\n    litellm_params: {{model: openai/gpt-4o, api_base: \"{b}/v1\", api_key: sk-up, input_cost_per_token: 0.001, output_cost_per_token: 0.002}}\ngeneral_settings:\n  master_key: {MASTER}\nrouter_settings:\n  redis_url: {u}\nswitchboard:\n  redis_timeout_ms: 3000\n{switchboard}",
        b = up.base(),
        u = redis.url()
    )
}

/// Makes [`KEY`] with `body`'s settings on every instance (each keeps its own key store).
async fn make_key(gws: &[&Gateway], body: serde_json::Value) {
    let mut body = body;
    body["key"] = KEY.into();
    for gw in gws {
        gw.generate_key(MASTER, body.clone()).await;
    }
}

async fn keyed_chat(gw: &Gateway, content: &str) -> Response {
    let body = serde_json::json!({"model": "gpt-4o", "max_tokens": 10, "messages": [{"role": "user", "content": content}]});
    gw.post_as(KEY, "/v1/chat/completions", &body).await
}

/// A field of the key's budget hash in Redis (`spend`, `reserved`).
fn key_budget_field(redis: &Redis, field: &str) -> Option<f64> {
    let hash = switchboard::keys::hex(&switchboard::keys::hash_key(KEY));
    let client = redis::Client::open(redis.url()).ok()?;
    let mut conn = client.get_connection().ok()?;
    let v: Option<String> = redis::cmd("HGET")
        .arg(format!("{{switchboard:budgets}}:key:{hash}"))
        .arg(field)
        .query(&mut conn)
        .ok()?;
    v?.parse().ok()
}

async fn scrape(gw: &Gateway) -> String {
    gw.get_as(MASTER, "/metrics").await.text()
}

/// A key budget that fits three reservations (0.09 USD: 3 × 0.028, not 4), twelve concurrent
/// requests over three instances: exactly three admitted fleet-wide (each instance alone
/// would admit three), the rest refused with LiteLLM's `budget_exceeded`; once settled, the
/// fleet's spend is exactly three calls' cost, and nothing more is admitted anywhere.
#[tokio::test]
async fn a_budget_that_fits_k_admits_k_across_instances() {
    let Some(redis) = Redis::start() else { return };
    let up = budget_upstream().await;
    let yaml = budget_config(&up, &redis, "");
    let (a, b, c) = (
        Gateway::start(&yaml),
        Gateway::start(&yaml),
        Gateway::start(&yaml),
    );
    let gws = [&a, &b, &c];
    make_key(&gws, serde_json::json!({"max_budget": 0.09})).await;
    let calls = (0..12).map(|i| keyed_chat(gws[i % 3], "hi"));
    let rs = futures_util::future::join_all(calls).await;
    let statuses: Vec<u16> = rs.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        3,
        "{statuses:?}"
    );
    let refused = rs.iter().find(|r| r.status != 200).unwrap();
    let e = refused.expect_error(422);
    assert_eq!(e["type"], "budget_exceeded", "{e}");
    assert_eq!(up.count(), 3);
    // Settled in the background: the reservations swapped for the actual cost.
    let settled = wait_until(
        || {
            key_budget_field(&redis, "spend").is_some_and(|s| (s - 3.0 * CALL_COST).abs() < 1e-9)
                && key_budget_field(&redis, "reserved") == Some(0.0)
        },
        Duration::from_secs(5),
    )
    .await;
    assert!(
        settled,
        "spend {:?} reserved {:?}",
        key_budget_field(&redis, "spend"),
        key_budget_field(&redis, "reserved")
    );
    // 0.075 spent + 0.028 > 0.09: refused on every instance.
    for gw in gws {
        keyed_chat(gw, "hi").await.expect_error(422);
    }
    assert_eq!(up.count(), 3);
}

/// A reservation whose instance is killed mid-request holds the budget only until its TTL
/// (`budget_reservation_ttl_s: 2`): the other instance refuses while it is held, then admits.
/// A client hanging up on a live instance gives its reservation back at once.
#[tokio::test]
async fn an_unsettled_reservation_expires_and_a_hang_up_releases_at_once() {
    let Some(redis) = Redis::start() else { return };
    let up = budget_upstream().await;
    let yaml = budget_config(&up, &redis, "  budget_reservation_ttl_s: 2\n");
    let a = Gateway::start(&yaml);
    let b = Gateway::start(&yaml);
    // Fits one reservation (0.028), not two.
    make_key(&[&a, &b], serde_json::json!({"max_budget": 0.04})).await;
    let held = || key_budget_field(&redis, "reserved").is_some_and(|r| r > 0.0);

    // A client hangs up on B: released without waiting for the TTL.
    let port = b.port;
    let hang_up = tokio::spawn(async move {
        let body = serde_json::json!({"model": "gpt-4o", "max_tokens": 10, "messages": [{"role": "user", "content": "hang"}]}).to_string();
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nauthorization: Bearer {KEY}\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        let mut conn = Conn::connect(port).await;
        conn.send_raw(format!("{head}{body}").as_bytes()).await;
        conn
    });
    assert!(wait_until(held, Duration::from_secs(5)).await);
    drop(hang_up.await.unwrap());
    let released = wait_until(|| !held(), Duration::from_millis(1500)).await;
    assert!(released, "a hang-up kept its reservation");

    // A is killed mid-request: its reservation stays until the TTL.
    let a_port = a.port;
    let stuck = tokio::spawn(async move {
        let _ = request(
            a_port,
            "POST",
            "/v1/chat/completions",
            &[
                ("content-type", "application/json"),
                ("authorization", &format!("Bearer {KEY}")),
            ],
            serde_json::json!({"model": "gpt-4o", "max_tokens": 10, "messages": [{"role": "user", "content": "hang"}]}).to_string().as_bytes(),
        )
        .await;
    });
    assert!(wait_until(held, Duration::from_secs(5)).await);
    drop(a);
    stuck.abort();
    keyed_chat(&b, "hi").await.expect_error(422);
    let t = std::time::Instant::now();
    let back = wait_until_async(
        async || keyed_chat(&b, "hi").await.status == 200,
        Duration::from_secs(10),
    )
    .await;
    assert!(back, "the killed instance's reservation never expired");
    assert!(t.elapsed() < Duration::from_secs(6), "{:?}", t.elapsed());
}

/// Redis killed mid-test: fail-open decides on the instance's own ledger (counted), fail-closed
/// answers 503; neither hangs; both use Redis again once it is back.
#[tokio::test]
async fn budgets_follow_the_failure_policy_while_redis_is_down() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let up = MockUpstream::start(|_| Reply::json(200, openai::completion("hello"))).await;
    let open = Gateway::start(&budget_config(&up, &redis, ""));
    let closed = Gateway::start(&budget_config(
        &up,
        &redis,
        "  redis_failure_policy: closed\n",
    ));
    make_key(&[&open, &closed], serde_json::json!({"max_budget": 10.0})).await;
    assert_eq!(keyed_chat(&open, "hi").await.status, 200);
    assert_eq!(keyed_chat(&closed, "hi").await.status, 200);
    redis.kill();
    let t = std::time::Instant::now();
    assert_eq!(keyed_chat(&open, "hi").await.status, 200);
    let r = keyed_chat(&closed, "hi").await;
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    let e = r.expect_error(503);
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("redis_failure_policy"),
        "{e}"
    );
    let fallback = metric_value(
        &scrape(&open).await,
        "switchboard_budget_redis_fallback_total",
        &[],
    );
    assert!(fallback.unwrap_or(0.0) >= 1.0);
    redis.restart();
    let back = wait_until_async(
        async || keyed_chat(&closed, "hi").await.status == 200,
        Duration::from_secs(10),
    )
    .await;
    assert!(back, "fail-closed never recovered");
    // Back on Redis: the scope is seeded again from the instance's spend.
    assert!(
        wait_until(
            || key_budget_field(&redis, "spend").is_some(),
            Duration::from_secs(5)
        )
        .await
    );
}

/// Limits and budgets cost one Redis round trip per admission, counted where the gateway's
/// own counters cannot lie: the gateway reaches Redis through a proxy that delays every chunk
/// it sends by `D`, so an admission needing n sequential round trips takes between n·D and
/// (n+1)·D; and Redis' `INFO commandstats` counts the scripts that arrived (per request: the
/// budget's and the rate limit's `EVALSHA` in one pipeline, then the budget's settle in the
/// background). After `SCRIPT FLUSH` (what a restarted Redis looks like) the first request pays
/// what the code says: the pipeline answers `NOSCRIPT`, and the scripts are loaded and sent
/// again in a second round trip, never more.
#[tokio::test]
async fn limits_and_budgets_cost_one_round_trip_per_admission() {
    const D: Duration = Duration::from_millis(250);
    let Some(redis) = Redis::start() else { return };
    let proxy = redis_server::DelayProxy::start(redis.port, D).await;
    let up = MockUpstream::start(|_| Reply::json(200, openai::completion("hello"))).await;
    let yaml = format!(
        "model_list:\n  - model_name: gpt-4o\n    litellm_params: {{model: openai/gpt-4o, api_base: \"{b}/v1\", api_key: sk-up, input_cost_per_token: 0.001, output_cost_per_token: 0.002}}\ngeneral_settings:\n  master_key: {MASTER}\nrouter_settings:\n  redis_url: {u}\nswitchboard:\n  redis_timeout_ms: 3000\n  redis_failure_policy: closed\n",
        b = up.base(),
        u = proxy.url()
    );
    let gw = Gateway::start(&yaml);
    make_key(
        &[&gw],
        serde_json::json!({"max_budget": 10.0, "rpm_limit": 100}),
    )
    .await;
    let settled = async |calls: f64| {
        let ok = wait_until(
            || {
                key_budget_field(&redis, "spend")
                    .is_some_and(|s| (s - calls * CALL_COST).abs() < 1e-9)
            },
            Duration::from_secs(10),
        )
        .await;
        assert!(ok, "{:?}", key_budget_field(&redis, "spend"));
    };
    // The first request connects and loads the scripts: not what is measured.
    assert_eq!(keyed_chat(&gw, "hi").await.status, 200);
    settled(1.0).await;

    // Scripts sent for requests: every `EVALSHA` but the shared-cooldown reader's, which runs
    // on its own every 200 ms and calls `HGETALL` exactly once (nothing else here does).
    let scripts = || {
        let (evalsha, failed) = redis.command_calls("evalsha");
        let (cooldown_reads, _) = redis.command_calls("hgetall");
        (evalsha - cooldown_reads, failed)
    };
    let (before, failed) = scripts();
    for i in 0..5 {
        let t = std::time::Instant::now();
        let r = keyed_chat(&gw, "hi").await;
        let took = t.elapsed();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-ratelimit-limit-requests"), Some("100"));
        assert!(
            took >= D && took < 2 * D,
            "request {i}: {took:?} is not one round trip of {D:?}"
        );
    }
    settled(6.0).await;
    let (after, failed_after) = scripts();
    assert_eq!(
        after - before,
        5 * 3,
        "2 admission scripts + 1 settle per request"
    );
    assert_eq!(failed_after, failed);

    // A Redis that forgot its scripts: NOSCRIPT, then load + retry in one more round trip.
    assert_eq!(redis.cmd(&["SCRIPT", "FLUSH"]).as_deref(), Some("+OK"));
    // Once the cooldown reader has reloaded its own script (it read twice since), only the
    // request's scripts change the counts.
    let (reads, _) = redis.command_calls("hgetall");
    assert!(
        wait_until(
            || redis.command_calls("hgetall").0 >= reads + 2,
            Duration::from_secs(5)
        )
        .await
    );
    let (before, failed) = scripts();
    let (loads, _) = redis.command_calls("script|load");
    let t = std::time::Instant::now();
    let r = keyed_chat(&gw, "hi").await;
    let took = t.elapsed();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        took >= 2 * D && took < 3 * D,
        "{took:?} is not two round trips of {D:?}"
    );
    settled(7.0).await;
    let (after, failed_after) = scripts();
    let (loads_after, _) = redis.command_calls("script|load");
    // Admission: 2 refused with NOSCRIPT, 2 loaded, 2 sent again; the settle: 1, 1, 1.
    assert_eq!(after - before, 6);
    assert_eq!(failed_after - failed, 3);
    assert_eq!(loads_after - loads, 3);
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let limit_keys: Vec<String> = redis::cmd("KEYS")
        .arg("{switchboard:limits}*")
        .query(&mut conn)
        .unwrap();
    assert!(!limit_keys.is_empty());
}

/// A `budget_duration: 10s` window over Redis: spend on A counts on B (which alone has spent
/// nothing), and when the window ends the fleet's spend starts over for every instance.
#[tokio::test]
async fn a_budget_window_resets_across_instances() {
    let Some(redis) = Redis::start() else { return };
    let up = MockUpstream::start(|_| Reply::json(200, openai::completion("hello"))).await;
    let yaml = budget_config(&up, &redis, "");
    let a = Gateway::start(&yaml);
    let b = Gateway::start(&yaml);
    // Early in a 10 s window (windows are standardized: they end at multiples of 10 s).
    let secs_into_window = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            % 10
    };
    assert!(wait_until(|| secs_into_window() < 2, Duration::from_secs(12)).await);
    // Fits one call's reservation (0.028); after it (0.025 spent) nothing more this window.
    make_key(
        &[&a, &b],
        serde_json::json!({"max_budget": 0.03, "budget_duration": "10s"}),
    )
    .await;
    assert_eq!(keyed_chat(&a, "hi").await.status, 200);
    let settled = wait_until(
        || key_budget_field(&redis, "spend").is_some_and(|s| (s - CALL_COST).abs() < 1e-9),
        Duration::from_secs(3),
    )
    .await;
    assert!(settled, "{:?}", key_budget_field(&redis, "spend"));
    keyed_chat(&b, "hi").await.expect_error(422);
    // The next window: B admits again, and the fleet's spend is that one call.
    let back = wait_until_async(
        async || keyed_chat(&b, "hi").await.status == 200,
        Duration::from_secs(15),
    )
    .await;
    assert!(back, "the window never reset");
    let one_call = wait_until(
        || key_budget_field(&redis, "spend").is_some_and(|s| (s - CALL_COST).abs() < 1e-9),
        Duration::from_secs(3),
    )
    .await;
    assert!(one_call, "{:?}", key_budget_field(&redis, "spend"));
    assert_eq!(up.count(), 2);
}
