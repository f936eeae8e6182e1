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
