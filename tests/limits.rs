//! Rate limits and state shared by gateway instances through a real `redis-server` the tests
//! start (`support/redis.rs`): the shared-state client itself first (bounded calls, failing fast
//! while Redis is down, recovering when it is back).

#[path = "support/redis.rs"]
mod redis_server;
mod support;

use redis_server::Redis;
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
