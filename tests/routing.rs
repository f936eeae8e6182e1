//! Routing and resilience through the real gateway: retries landing elsewhere, every fallback
//! kind, cooldown entered and left, deadlines, client hang-ups freeing slots, limits, routing
//! strategies, and zero client-visible errors under load from a group with broken deployments.
//! Cooldown timing details are unit-tested with a controllable clock (`router::cooldown`);
//! here cooldown_time is a fraction of a second.

mod support;

use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

fn chat(model: &str) -> serde_json::Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

fn chat_stream(model: &str) -> serde_json::Value {
    json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "hi"}]})
}

/// A `model_list` entry for an OpenAI-compatible upstream at `base`.
fn upstream(group: &str, id: &str, base: &str, extra: &str) -> String {
    format!(
        "  - model_name: {group}\n    litellm_params: {{model: openai/m-{id}, api_base: \"{base}/v1\", api_key: k{extra}}}\n    model_info: {{id: {id}}}\n"
    )
}

/// A `model_list` entry answered by the gateway (`mock_response`).
fn mock(group: &str, id: &str, response: &str, extra: &str) -> String {
    format!(
        "  - model_name: {group}\n    litellm_params: {{model: openai/m-{id}, mock_response: \"{response}\"{extra}}}\n    model_info: {{id: {id}}}\n"
    )
}

fn config(entries: &[String], router: &str) -> String {
    format!(
        "model_list:\n{}router_settings:\n{router}",
        entries.concat()
    )
}

/// An address nothing listens on (connection refused).
fn dead_base() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

fn ok_upstream(text: &'static str) -> impl Fn(&Recorded) -> Reply + Send + Sync + 'static {
    move |_| Reply::json(200, openai::completion(text))
}

fn content(resp: &Response) -> String {
    resp.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn retry_lands_on_another_deployment() {
    let bad = MockUpstream::start(|_| {
        Reply::json(
            500,
            json!({"error": {"message": "boom", "type": "server_error"}}),
        )
    })
    .await;
    let good = MockUpstream::start(ok_upstream("from good")).await;
    let gw = Gateway::start(&config(
        &[
            upstream("g", "bad", &bad.base(), ""),
            upstream("g", "good", &good.base(), ""),
        ],
        "  num_retries: 1\n  disable_cooldowns: true\n",
    ));
    for _ in 0..12 {
        let r = gw.post("/v1/chat/completions", &chat("g")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(content(&r), "from good");
        assert_eq!(r.header("x-litellm-model-id"), Some("good"));
        let retries: u32 = r
            .header("x-litellm-attempted-retries")
            .map(|v| v.parse().unwrap())
            .unwrap_or(0);
        assert!(retries <= 1);
    }
    // The shuffle sent some first attempts to the bad deployment; each was retried once,
    // on the good one (never twice on the bad one).
    assert!(
        bad.count() > 0 && bad.count() < 12,
        "bad got {}",
        bad.count()
    );
    assert_eq!(good.count(), 12);
}

#[tokio::test]
async fn client_errors_are_not_retried_nor_fallen_back() {
    let up = MockUpstream::start(|_| {
        Reply::json(
            400,
            json!({"error": {"message": "bad temperature", "type": "invalid_request_error"}}),
        )
    })
    .await;
    let gw = Gateway::start(&config(
        &[
            upstream("g", "a", &up.base(), ""),
            upstream("g", "b", &up.base(), ""),
            mock("other", "o", "should not be used", ""),
        ],
        "  num_retries: 3\n  fallbacks: [{g: [other]}]\n",
    ));
    let r = gw.post("/v1/chat/completions", &chat("g")).await;
    r.expect_error(400);
    assert_eq!(up.count(), 1);
    // 401 is not retried either (and cools that deployment at once).
    let auth = MockUpstream::start(|_| {
        Reply::json(
            401,
            json!({"error": {"message": "bad key", "type": "auth"}}),
        )
    })
    .await;
    let gw = Gateway::start(&config(
        &[upstream("g", "a", &auth.base(), "")],
        "  num_retries: 3\n",
    ));
    gw.post("/v1/chat/completions", &chat("g"))
        .await
        .expect_error(401);
    assert_eq!(auth.count(), 1);
}

#[tokio::test]
async fn upstream_retry_after_is_honoured_before_retrying() {
    let n = Arc::new(AtomicUsize::new(0));
    let seen = n.clone();
    let up = MockUpstream::start(move |_| {
        if seen.fetch_add(1, Ordering::SeqCst) == 0 {
            Reply::json(
                429,
                json!({"error": {"message": "slow down", "type": "rate_limit"}}),
            )
            .with_header("retry-after", "1")
        } else {
            Reply::json(200, openai::completion("after waiting"))
        }
    })
    .await;
    let gw = Gateway::start(&config(
        &[upstream("g", "only", &up.base(), "")],
        "  num_retries: 2\n",
    ));
    let t = Instant::now();
    let r = gw.post("/v1/chat/completions", &chat("g")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(content(&r), "after waiting");
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(950), "retried after {took:?}");
    assert!(took < Duration::from_millis(2500), "{took:?}");
    assert_eq!(r.header("x-litellm-attempted-retries"), Some("1"));
}

#[tokio::test]
async fn every_fallback_kind() {
    let gw = Gateway::start(&config(
        &[
            mock("limited", "l", "litellm.RateLimitError", ""),
            mock("small", "s", "litellm.ContextWindowExceededError", ""),
            mock("strict", "p", "litellm.ContentPolicyViolationError", ""),
            mock("orphan", "x", "litellm.InternalServerError", ""),
            mock("backup", "b", "from backup", ""),
            mock("big", "big", "from big", ""),
            mock("lenient", "len", "from lenient", ""),
            mock("last-resort", "d", "from default", ""),
        ],
        "  num_retries: 0\n  fallbacks: [{limited: [backup]}, {small: [backup]}, {strict: [backup]}]\n  context_window_fallbacks: [{small: [big]}]\n  content_policy_fallbacks: [{strict: [lenient]}]\n  default_fallbacks: [last-resort]\n",
    ));
    for (group, want, answered) in [
        ("limited", "from backup", "backup"),
        ("small", "from big", "big"),
        ("strict", "from lenient", "lenient"),
        ("orphan", "from default", "last-resort"),
    ] {
        let r = gw.post("/v1/chat/completions", &chat(group)).await;
        assert_eq!(r.status, 200, "{group}: {}", r.text());
        assert_eq!(content(&r), want, "{group}");
        assert_eq!(r.header("x-litellm-model-group"), Some(answered));
        assert_eq!(r.header("x-litellm-attempted-fallbacks"), Some("1"));
    }
    // The access log says which fallback answered.
    gw.wait_for_log_line(|l| l["fallback"] == "big" && l["status"] == 200)
        .await;
}

#[tokio::test]
async fn fallback_chain_is_followed_in_order_and_bounded() {
    let gw = Gateway::start(&config(
        &[
            mock("a", "a", "litellm.ServiceUnavailableError", ""),
            mock("b", "b", "litellm.InternalServerError", ""),
            mock("c", "c", "from c", ""),
        ],
        "  num_retries: 0\n  fallbacks: [{a: [b, c]}]\n",
    ));
    let r = gw.post("/v1/chat/completions", &chat("a")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(content(&r), "from c");
    assert_eq!(r.header("x-litellm-attempted-fallbacks"), Some("2"));
    let gw = Gateway::start(&config(
        &[
            mock("a", "a", "litellm.ServiceUnavailableError", ""),
            mock("b", "b", "litellm.InternalServerError", ""),
            mock("c", "c", "from c", ""),
        ],
        "  num_retries: 0\n  max_fallbacks: 1\n  fallbacks: [{a: [b, c]}]\n",
    ));
    let r = gw.post("/v1/chat/completions", &chat("a")).await;
    r.expect_error(500);
}

#[tokio::test]
async fn cooldown_is_entered_skipped_and_left_through_a_probe() {
    let bad = MockUpstream::start(|_| {
        Reply::json(
            503,
            json!({"error": {"message": "overloaded", "type": "server_error"}}),
        )
    })
    .await;
    let good = MockUpstream::start(ok_upstream("ok")).await;
    let gw = Gateway::start(&config(
        &[
            upstream("g", "bad", &bad.base(), ""),
            upstream("g", "good", &good.base(), ""),
        ],
        "  num_retries: 2\n  cooldown_time: 1\n",
    ));
    // Enough requests that the bad deployment fails >50% of its minute and cools down. The
    // cooldown began during the request that brought it to two failures.
    let mut cooling_since = None;
    for _ in 0..40 {
        let sent = Instant::now();
        let r = gw.post("/v1/chat/completions", &chat("g")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        if bad.count() >= 2 {
            cooling_since = Some(sent);
            break;
        }
    }
    let cooling_since = cooling_since.expect("the bad deployment was never picked twice");
    let bad_before = bad.count();
    // While it cools (1 s), it gets no traffic. Only requests that surely end inside the
    // cooldown count, so a slow machine cannot make this fail.
    let skipped = requests_until(&gw, "g", cooling_since + Duration::from_millis(800)).await;
    assert_eq!(bad.count(), bad_before, "a cooling deployment got traffic");
    eprintln!("{skipped} requests skipped the cooling deployment");
    // After the cooldown it is tried again (one probe), fails, and cools again at once.
    let probed = wait_until_async(
        async || {
            gw.post("/v1/chat/completions", &chat("g")).await;
            bad.count() > bad_before
        },
        Duration::from_secs(10),
    )
    .await;
    assert!(probed, "never probed after the cooldown");
    let probe_failed = Instant::now();
    assert_eq!(bad.count(), bad_before + 1, "exactly one probe");
    requests_until(&gw, "g", probe_failed + Duration::from_millis(800)).await;
    assert_eq!(
        bad.count(),
        bad_before + 1,
        "a failed probe cools down again"
    );
}

/// Sends requests to `group` one after another as long as each would end before `until`;
/// returns how many (each answered 200).
async fn requests_until(gw: &Gateway, group: &str, until: Instant) -> usize {
    let mut n = 0;
    let mut slowest = Duration::ZERO;
    while Instant::now() + slowest < until {
        let sent = Instant::now();
        let r = gw.post("/v1/chat/completions", &chat(group)).await;
        assert_eq!(r.status, 200, "{}", r.text());
        slowest = slowest.max(sent.elapsed());
        n += 1;
    }
    n
}

#[tokio::test]
async fn all_cooling_down_is_503_with_retry_after_then_recovers() {
    let n = Arc::new(AtomicUsize::new(0));
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let (seen, fail) = (n.clone(), failing.clone());
    let up = MockUpstream::start(move |_| {
        seen.fetch_add(1, Ordering::SeqCst);
        if fail.load(Ordering::SeqCst) {
            Reply::json(
                500,
                json!({"error": {"message": "down", "type": "server_error"}}),
            )
        } else {
            Reply::json(200, openai::completion("back"))
        }
    })
    .await;
    let gw = Gateway::start(&config(
        &[
            upstream("g", "a", &up.base(), ""),
            upstream("g", "b", &up.base(), ""),
            mock("fb", "fb1", "litellm.ServiceUnavailableError", ""),
            mock("fb", "fb2", "litellm.ServiceUnavailableError", ""),
        ],
        "  num_retries: 1\n  cooldown_time: 2\n  fallbacks: [{g: [fb]}]\n",
    ));
    // Two rounds fail every deployment of the group and of its fallback (each then >50%
    // failed): all cool down. The client sees the last group's error.
    for _ in 0..2 {
        gw.post("/v1/chat/completions", &chat("g"))
            .await
            .expect_error(503);
    }
    let calls = n.load(Ordering::SeqCst);
    let t = Instant::now();
    let r = gw.post("/v1/chat/completions", &chat("g")).await;
    let e = r.expect_error(503);
    assert!(t.elapsed() < Duration::from_millis(300), "fails fast");
    assert_eq!(e["code"], "no_deployments_available");
    let retry_after: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(
        n.load(Ordering::SeqCst),
        calls,
        "no upstream call while cooling"
    );
    failing.store(false, Ordering::SeqCst);
    // Once the cooldown ends, a probe finds the upstream back.
    let mut last = None;
    let recovered = wait_until_async(
        async || {
            let r = gw.post("/v1/chat/completions", &chat("g")).await;
            let ok = r.status == 200;
            last = Some(r);
            ok
        },
        Duration::from_secs(10),
    )
    .await;
    let r = last.unwrap();
    assert!(recovered, "{} {}", r.status, r.text());
}

#[tokio::test]
async fn cooldown_wait_waits_for_the_first_recovery() {
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let fail = failing.clone();
    let up = MockUpstream::start(move |_| {
        if fail.load(Ordering::SeqCst) {
            Reply::json(
                500,
                json!({"error": {"message": "down", "type": "server_error"}}),
            )
        } else {
            Reply::json(200, openai::completion("back"))
        }
    })
    .await;
    let gw = Gateway::start(&config(
        &[
            upstream("g", "a", &up.base(), ""),
            upstream("g", "b", &up.base(), ""),
        ],
        "  num_retries: 1\n  cooldown_time: 0.4\n  cooldown_wait: 2\n",
    ));
    for _ in 0..2 {
        gw.post("/v1/chat/completions", &chat("g")).await;
    }
    failing.store(false, Ordering::SeqCst);
    let t = Instant::now();
    let r = gw.post("/v1/chat/completions", &chat("g")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(1500),
        "{took:?}"
    );
}

#[tokio::test]
async fn streams_retry_until_the_first_byte_then_end_with_an_error_event() {
    let cut = MockUpstream::start(|_| Reply::Reset).await;
    let good = MockUpstream::start(|_| {
        Reply::stream(
            "text/event-stream",
            &openai::sse(&["Hel", "lo"], false),
            7,
            Duration::ZERO,
        )
    })
    .await;
    let gw = Gateway::start(&config(
        &[
            upstream("g", "cut", &cut.base(), ""),
            upstream("g", "good", &good.base(), ""),
        ],
        "  num_retries: 1\n  disable_cooldowns: true\n",
    ));
    for _ in 0..6 {
        let r = gw
            .post_stream("/v1/chat/completions", &chat_stream("g"))
            .await
            .into_response()
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(stream_text(&openai_chunks(&r)), "Hello");
    }
    // After the first byte, a cut upstream ends the stream with an error event; no retry.
    let body = openai::sse(&["one", "two", "three"], false);
    let half = body.len() / 2;
    let midway = MockUpstream::start(move |_| {
        Reply::stream("text/event-stream", &body[..half], 40, Duration::ZERO).cut()
    })
    .await;
    let other = MockUpstream::start(ok_upstream("unused")).await;
    let gw = Gateway::start(&config(
        &[
            upstream("s", "midway", &midway.base(), ", order: 1"),
            upstream("s", "other", &other.base(), ", order: 2"),
        ],
        "  num_retries: 2\n",
    ));
    let r = gw
        .post_stream("/v1/chat/completions", &chat_stream("s"))
        .await
        .into_response()
        .await;
    assert_eq!(r.status, 200);
    let data = r.sse_data();
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let err: serde_json::Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert!(err["error"]["message"].is_string(), "{}", r.text());
    assert_eq!((midway.count(), other.count()), (1, 0));
}

#[tokio::test]
async fn stream_timeout_moves_a_slow_first_byte_elsewhere() {
    let slow = MockUpstream::start(|_| {
        Reply::stream(
            "text/event-stream",
            &openai::sse(&["slow"], false),
            1000,
            Duration::ZERO,
        )
        .delayed(Duration::from_secs(3))
    })
    .await;
    let fast = MockUpstream::start(|_| {
        Reply::stream(
            "text/event-stream",
            &openai::sse(&["fast"], false),
            1000,
            Duration::ZERO,
        )
    })
    .await;
    let gw = Gateway::start(&config(
        &[
            upstream("g", "slow", &slow.base(), ", order: 1"),
            upstream("g", "fast", &fast.base(), ", order: 2"),
        ],
        "  num_retries: 1\n  stream_timeout: 0.3\n",
    ));
    let t = Instant::now();
    let r = gw
        .post_stream("/v1/chat/completions", &chat_stream("g"))
        .await
        .into_response()
        .await;
    assert_eq!(stream_text(&openai_chunks(&r)), "fast");
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(r.header("x-litellm-model-id"), Some("fast"));
}

#[tokio::test]
async fn the_request_deadline_covers_retries() {
    let hang = MockUpstream::start(|_| Reply::Hang).await;
    let gw = Gateway::start(&config(
        &[
            upstream("g", "a", &hang.base(), ", timeout: 0.3"),
            upstream("g", "b", &hang.base(), ", timeout: 0.3"),
        ],
        "  num_retries: 5\n  timeout: 0.8\n  disable_cooldowns: true\n",
    ));
    let t = Instant::now();
    let r = gw.post("/v1/chat/completions", &chat("g")).await;
    let took = t.elapsed();
    r.expect_error(504);
    assert!(
        took >= Duration::from_millis(550) && took < Duration::from_millis(1300),
        "{took:?}"
    );
    // Each attempt got at most its own 0.3 s; the request stopped at 0.8 s.
    assert!((2..=3).contains(&hang.count()), "{}", hang.count());
}

#[tokio::test]
async fn a_client_hang_up_frees_the_slot_at_once() {
    let n = Arc::new(AtomicUsize::new(0));
    let seen = n.clone();
    let up = MockUpstream::start(move |_| {
        if seen.fetch_add(1, Ordering::SeqCst) == 0 {
            Reply::Hang
        } else {
            Reply::json(200, openai::completion("next"))
        }
    })
    .await;
    let gw = Gateway::start(&config(
        &[upstream(
            "g",
            "one",
            &up.base(),
            ", max_parallel_requests: 1",
        )],
        "  num_retries: 0\n",
    ));
    let mut conn = Conn::connect(gw.port).await;
    let body = chat("g").to_string();
    conn.send_head_and_body(
        "POST",
        "/v1/chat/completions",
        &[("content-type", "application/json")],
        body.as_bytes(),
    )
    .await;
    // Wait until the upstream has it, then hang up.
    assert!(
        wait_until(|| n.load(Ordering::SeqCst) > 0, Duration::from_secs(10)).await,
        "the upstream never got the request"
    );
    // While it runs, the only slot is taken: 429 with Retry-After.
    let r = gw.post("/v1/chat/completions", &chat("g")).await;
    r.expect_error(429);
    assert!(r.header("retry-after").is_some());
    drop(conn);
    // The upstream never answers: only the hang-up can free the slot.
    let mut last = None;
    let freed = wait_until_async(
        async || {
            let r = gw.post("/v1/chat/completions", &chat("g")).await;
            let ok = r.status == 200;
            last = Some(r);
            ok
        },
        Duration::from_secs(5),
    )
    .await;
    let r = last.unwrap();
    assert!(freed, "slot not freed: {}", r.text());
    assert_eq!(content(&r), "next");
}

#[tokio::test]
async fn weighted_shuffle_follows_weights() {
    let gw = Arc::new(Gateway::start(&config(
        &[
            mock("g", "light", "l", ", weight: 1"),
            mock("g", "heavy", "h", ", weight: 3"),
        ],
        "",
    )));
    let mut counts: HashMap<String, u32> = HashMap::new();
    let total = 400;
    for _ in 0..total / 20 {
        let batch: Vec<_> = (0..20)
            .map(|_| {
                let gw = gw.clone();
                tokio::spawn(async move { gw.post("/v1/chat/completions", &chat("g")).await })
            })
            .collect();
        for h in batch {
            let r = h.await.unwrap();
            *counts
                .entry(r.header("x-litellm-model-id").unwrap().to_string())
                .or_default() += 1;
        }
    }
    let heavy = counts.get("heavy").copied().unwrap_or(0) as f64 / total as f64;
    // Expected 0.75; 4 standard deviations at n=400 is ±0.087.
    assert!((heavy - 0.75).abs() < 0.087, "{counts:?}");
}

#[tokio::test]
async fn least_busy_avoids_the_busy_deployment() {
    let handler = |r: &Recorded| {
        if String::from_utf8_lossy(&r.body).contains("slow") {
            Reply::json(200, openai::completion("slow")).delayed(Duration::from_secs(3))
        } else {
            Reply::json(200, openai::completion("fast"))
        }
    };
    let a = MockUpstream::start(handler).await;
    let b = MockUpstream::start(handler).await;
    let gw = Arc::new(Gateway::start(&config(
        &[
            upstream("g", "a", &a.base(), ""),
            upstream("g", "b", &b.base(), ""),
        ],
        "  routing_strategy: least-busy\n",
    )));
    let gw2 = gw.clone();
    let slow = tokio::spawn(async move {
        gw2.post(
            "/v1/chat/completions",
            &json!({"model": "g", "messages": [{"role": "user", "content": "slow"}]}),
        )
        .await
    });
    assert!(
        wait_until(|| a.count() + b.count() > 0, Duration::from_secs(10)).await,
        "the slow request never reached an upstream"
    );
    let busy = if a.count() == 1 { "a" } else { "b" };
    for _ in 0..6 {
        let r = gw.post("/v1/chat/completions", &chat("g")).await;
        assert_ne!(r.header("x-litellm-model-id"), Some(busy));
    }
    assert_eq!(slow.await.unwrap().status, 200);
}

#[tokio::test]
async fn latency_based_routing_prefers_the_fast_deployment() {
    let slow = MockUpstream::start(|_| {
        Reply::json(200, openai::completion("slow")).delayed(Duration::from_millis(120))
    })
    .await;
    let fast = MockUpstream::start(ok_upstream("fast")).await;
    let gw = Gateway::start(&config(
        &[
            upstream("g", "slow", &slow.base(), ""),
            upstream("g", "fast", &fast.base(), ""),
        ],
        "  routing_strategy: latency-based-routing\n",
    ));
    // Unmeasured deployments are tried first, so both get measured within two requests.
    for _ in 0..2 {
        gw.post("/v1/chat/completions", &chat("g")).await;
    }
    assert_eq!(slow.count(), 1);
    for _ in 0..10 {
        let r = gw.post("/v1/chat/completions", &chat("g")).await;
        assert_eq!(r.header("x-litellm-model-id"), Some("fast"));
    }
}

#[tokio::test]
async fn cost_based_routing_order_tiers_and_aliases() {
    let gw = Gateway::start(&config(
        &[
            mock(
                "c",
                "pricey",
                "p",
                ", input_cost_per_token: 0.00001, output_cost_per_token: 0.00003",
            ),
            mock(
                "c",
                "cheap",
                "c",
                ", input_cost_per_token: 0.0000001, output_cost_per_token: 0.0000004",
            ),
        ],
        "  routing_strategy: cost-based-routing\n  model_group_alias: {cheapest: c}\n",
    ));
    for _ in 0..8 {
        let r = gw.post("/v1/chat/completions", &chat("cheapest")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-litellm-model-id"), Some("cheap"));
    }
    let primary = MockUpstream::start(|_| {
        Reply::json(
            500,
            json!({"error": {"message": "down", "type": "server_error"}}),
        )
    })
    .await;
    let gw = Gateway::start(&config(
        &[
            upstream("t", "first", &primary.base(), ", order: 1"),
            mock("t", "second", "second tier", ", order: 2"),
            mock("t", "third", "third tier", ", order: 3"),
        ],
        "  num_retries: 1\n",
    ));
    let r = gw.post("/v1/chat/completions", &chat("t")).await;
    assert_eq!(content(&r), "second tier");
    assert_eq!(primary.count(), 1);
}

#[tokio::test]
async fn rpm_limit_skips_the_deployment_then_429s() {
    let gw = Gateway::start(&config(
        &[
            mock("g", "small", "s", ", rpm: 2, order: 1"),
            mock("g", "overflow", "o", ", rpm: 1, order: 2"),
        ],
        "",
    ));
    let ids: Vec<String> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            let r = gw.post("/v1/chat/completions", &chat("g")).await;
            v.push(r.header("x-litellm-model-id").unwrap().to_string());
        }
        v
    };
    assert_eq!(ids, ["small", "small", "overflow"]);
    let r = gw.post("/v1/chat/completions", &chat("g")).await;
    let e = r.expect_error(429);
    assert_eq!(e["type"], "rate_limit_error");
    let secs: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&secs));
}

/// The acceptance scenario: one deployment is down (connection refused), another fails every
/// request, the third works. Under concurrent load (half the requests streaming), clients
/// never see an error.
#[tokio::test]
async fn zero_client_errors_with_a_down_and_a_failing_deployment() {
    let failing = MockUpstream::start(|_| {
        Reply::json(
            500,
            json!({"error": {"message": "always", "type": "server_error"}}),
        )
    })
    .await;
    let good = MockUpstream::start(|r: &Recorded| {
        if String::from_utf8_lossy(&r.body).contains("\"stream\":true") {
            Reply::stream(
                "text/event-stream",
                &openai::sse(&["o", "k"], false),
                9,
                Duration::ZERO,
            )
        } else {
            Reply::json(200, openai::completion("ok"))
        }
    })
    .await;
    let gw = Arc::new(Gateway::start(&config(
        &[
            upstream("g", "down", &dead_base(), ""),
            upstream("g", "failing", &failing.base(), ""),
            upstream("g", "good", &good.base(), ""),
        ],
        "  cooldown_time: 0.2\n",
    )));
    let total = 300;
    let concurrency = 30;
    let t = Instant::now();
    let mut errors = Vec::new();
    for _ in 0..total / concurrency {
        let batch: Vec<_> = (0..concurrency)
            .map(|i| {
                let gw = gw.clone();
                tokio::spawn(async move {
                    if i % 2 == 0 {
                        let r = gw.post("/v1/chat/completions", &chat("g")).await;
                        (r.status == 200 && content(&r) == "ok", r.text())
                    } else {
                        let r = gw
                            .post_stream("/v1/chat/completions", &chat_stream("g"))
                            .await
                            .into_response()
                            .await;
                        let text = r.text();
                        let ok = r.status == 200 && stream_text(&openai_chunks(&r)) == "ok";
                        (ok, text)
                    }
                })
            })
            .collect();
        for h in batch {
            let (ok, text) = h.await.unwrap();
            if !ok {
                errors.push(text);
            }
        }
    }
    assert!(
        errors.is_empty(),
        "{} errors, first: {:?}",
        errors.len(),
        errors.first()
    );
    assert_eq!(good.count(), total);
    // Cooldown kept most traffic off the failing deployment.
    assert!(
        failing.count() < total / 3,
        "failing got {}",
        failing.count()
    );
    eprintln!(
        "{total} requests in {:?}; failing deployment saw {}",
        t.elapsed(),
        failing.count()
    );
}

#[tokio::test]
async fn active_health_checks_skip_unhealthy_deployments() {
    let healthy = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = healthy.clone();
    let pool = MockUpstream::start(move |r| {
        if r.path == "/health" {
            let status = if flag.load(Ordering::SeqCst) {
                200
            } else {
                503
            };
            Reply::json(status, json!({}))
        } else {
            Reply::json(200, openai::completion("from pool"))
        }
    })
    .await;
    let other = MockUpstream::start(ok_upstream("from other")).await;
    let dead = dead_base();
    let gw = Gateway::start(&format!(
        "model_list:\n{}    model_info: {{id: pool, health_check: {{path: /health, interval: 0.05, timeout: 0.2}}}}\n{}    model_info: {{id: dead, health_check: {{type: tcp, interval: 0.05, timeout: 0.2}}}}\n{}",
        "  - model_name: g\n    litellm_params: {model: openai/pool, api_base: \"BASE/v1\", api_key: k}\n"
            .replace("BASE", &pool.base()),
        "  - model_name: g\n    litellm_params: {model: openai/dead, api_base: \"BASE/v1\", api_key: k}\n"
            .replace("BASE", &dead),
        upstream("g", "other", &other.base(), ""),
    ));
    assert!(!gw.stderr().contains("not implemented"), "{}", gw.stderr());
    // The checks mark both failing deployments down (state 2).
    for id in ["pool", "dead"] {
        gw.wait_for_metric(
            "litellm_deployment_state",
            &[&format!("model_id=\"{id}\"")],
            |v| v == 2.0,
        )
        .await;
    }
    let chat_calls = |up: &MockUpstream| {
        up.requests()
            .iter()
            .filter(|r| r.path.ends_with("/chat/completions"))
            .count()
    };
    for _ in 0..12 {
        let r = gw.post("/v1/chat/completions", &chat("g")).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-litellm-model-id"), Some("other"));
        assert!(r.header("x-litellm-attempted-retries").is_none());
    }
    assert_eq!(chat_calls(&pool), 0);
    assert!(pool.count() >= 3, "the pool was health-checked");
    // The pool recovers: traffic comes back.
    healthy.store(true, Ordering::SeqCst);
    gw.wait_for_metric("litellm_deployment_state", &["model_id=\"pool\""], |v| {
        v == 0.0
    })
    .await;
    for _ in 0..30 {
        gw.post("/v1/chat/completions", &chat("g")).await;
    }
    assert!(chat_calls(&pool) > 0);
}

#[tokio::test]
async fn wildcard_groups_route_concrete_models() {
    let up = MockUpstream::start(ok_upstream("wild")).await;
    let gw = Gateway::start(&format!(
        "model_list:\n  - model_name: \"openai/*\"\n    litellm_params: {{model: \"openai/*\", api_base: \"{}/v1\", api_key: k}}\n  - model_name: \"*\"\n    litellm_params: {{model: \"openai/*\", mock_response: catch-all}}\n  - model_name: exact\n    litellm_params: {{model: openai/e, mock_response: exact}}\n",
        up.base()
    ));
    for model in ["openai/gpt-4o-mini", "openai/o3"] {
        let r = gw.post("/v1/chat/completions", &chat(model)).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            up.last().json()["model"],
            model.strip_prefix("openai/").unwrap()
        );
        assert_eq!(r.header("x-litellm-model-group"), Some(model));
    }
    assert_eq!(
        content(&gw.post("/v1/chat/completions", &chat("exact")).await),
        "exact"
    );
    let r = gw
        .post("/v1/chat/completions", &chat("anything-else"))
        .await;
    assert_eq!(content(&r), "catch-all");
    assert_eq!(up.count(), 2);
    assert_eq!(gw.get("/v1/models/openai/gpt-x", &[]).await.status, 200);
}

#[tokio::test]
async fn short_retry_after_is_honoured_long_one_is_passed_to_the_client_at_once() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    // The first request is asked to wait 1 s, after which the upstream recovers.
    let up = MockUpstream::start(move |_| {
        if c.fetch_add(1, Ordering::SeqCst) == 0 {
            Reply::json(
                429,
                json!({"error": {"message": "slow down", "type": "requests"}}),
            )
            .with_header("retry-after", "1")
        } else {
            Reply::json(200, openai::completion("after the pause"))
        }
    })
    .await;
    let long = MockUpstream::start(|_| {
        Reply::json(
            429,
            json!({"error": {"message": "quota", "type": "requests"}}),
        )
        .with_header("retry-after", "120")
    })
    .await;
    let gw = Gateway::start(&config(
        &[
            upstream("short", "s1", &up.base(), ""),
            upstream("long", "l1", &long.base(), ""),
        ],
        "  num_retries: 2\n",
    ));

    let started = Instant::now();
    let resp = gw.post("/v1/chat/completions", &chat("short")).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(content(&resp), "after the pause");
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "the 1 s Retry-After was honoured"
    );

    // 120 s is longer than any backoff the gateway holds a client for: the 429 goes back at once
    // with the upstream's Retry-After, and the upstream is not hammered.
    let started = Instant::now();
    let resp = gw.post("/v1/chat/completions", &chat("long")).await;
    resp.expect_error(429);
    assert_eq!(resp.header("retry-after"), Some("120"));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(long.count(), 1);
}

/// Polls `f` every 10 ms until it returns Some, for at most `limit`.
async fn poll_until<T, F: std::future::Future<Output = Option<T>>>(
    limit: Duration,
    mut f: impl FnMut() -> F,
) -> Option<T> {
    let t = Instant::now();
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if t.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Upstreams that answer 429/503 with a Retry-After no clock can add (`inf`, `1e30`, a huge
/// `retry-after-ms`): every client gets an answer (no dropped connection, no panic), the
/// Retry-After passed on is capped at an hour, and the healthy deployment keeps serving.
#[tokio::test]
async fn endless_retry_after_is_answered_capped_and_never_panics() {
    let endless = |status: u16, header: &'static str, value: &'static str| {
        move |_: &Recorded| {
            Reply::json(
                status,
                json!({"error": {"message": "go away", "type": "requests"}}),
            )
            .with_header(header, value)
        }
    };
    let inf = MockUpstream::start(endless(429, "retry-after", "inf")).await;
    let huge = MockUpstream::start(endless(503, "retry-after", "1e30")).await;
    let huge_ms = MockUpstream::start(endless(429, "retry-after-ms", "1e300")).await;
    let good = MockUpstream::start(ok_upstream("steady")).await;
    let gw = Gateway::start(&config(
        &[
            upstream("mixed", "inf", &inf.base(), ""),
            upstream("mixed", "huge", &huge.base(), ""),
            upstream("mixed", "good", &good.base(), ""),
            upstream("hostile", "h-inf", &inf.base(), ""),
            upstream("hostile", "h-ms", &huge_ms.base(), ""),
        ],
        "  num_retries: 3\n  cooldown_time: 0.2\n",
    ));
    // Enough requests that the hostile deployments fail more than half their minute and cool.
    for _ in 0..30 {
        let r = gw.post("/v1/chat/completions", &chat("mixed")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(content(&r), "steady");
    }
    assert!(good.count() >= 30);
    for _ in 0..10 {
        let r = gw.post("/v1/chat/completions", &chat("hostile")).await;
        assert!(matches!(r.status, 429 | 503), "{} {}", r.status, r.text());
        let secs: u64 = r
            .header("retry-after")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no numeric retry-after: {:?}", r.header("retry-after")));
        assert!((1..=3600).contains(&secs), "retry-after {secs}");
    }
    // Both hostile deployments are now cooling (bounded): the gateway answers 503 at once.
    let r = gw.post("/v1/chat/completions", &chat("hostile")).await;
    assert_eq!(r.expect_error(503)["code"], "no_deployments_available");
    assert!(!gw.stderr().contains("panicked"), "{}", gw.stderr());
    let r = gw.post("/v1/chat/completions", &chat("mixed")).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// A half-open probe whose client hangs up mid-attempt is given up: the next request probes
/// the deployment again and, now that it is healthy, gets its answer.
#[tokio::test]
async fn an_abandoned_probe_does_not_keep_the_deployment_out() {
    // 0: 500 (cools the deployment), 1: hang (the probe), 2: healthy.
    let mode = Arc::new(AtomicUsize::new(0));
    let m = mode.clone();
    let up = MockUpstream::start(move |_| match m.load(Ordering::SeqCst) {
        0 => Reply::json(
            500,
            json!({"error": {"message": "down", "type": "server_error"}}),
        ),
        1 => Reply::Hang,
        _ => Reply::json(200, openai::completion("back")),
    })
    .await;
    let gw = Gateway::start(&config(
        &[upstream("g", "only", &up.base(), "")],
        "  num_retries: 0\n  allowed_fails: 0\n  cooldown_time: 0.2\n",
    ));
    gw.post("/v1/chat/completions", &chat("g"))
        .await
        .expect_error(500);
    assert_eq!(up.count(), 1);
    mode.store(1, Ordering::SeqCst);
    // Once the cooldown ends, one request probes and hangs; its client gives up.
    let probe = poll_until(Duration::from_secs(5), || async {
        let mut conn = Conn::connect(gw.port).await;
        conn.send_head_and_body(
            "POST",
            "/v1/chat/completions",
            &[("content-type", "application/json")],
            chat("g").to_string().as_bytes(),
        )
        .await;
        let reached = poll_until(Duration::from_millis(100), || async {
            (up.count() == 2).then_some(())
        })
        .await;
        reached.map(|_| conn)
    })
    .await
    .expect("no probe reached the upstream");
    drop(probe);
    mode.store(2, Ordering::SeqCst);
    let r = poll_until(Duration::from_secs(5), || async {
        let r = gw.post("/v1/chat/completions", &chat("g")).await;
        (r.status == 200).then_some(r)
    })
    .await
    .expect("the deployment never came back after its probe was abandoned");
    assert_eq!(content(&r), "back");
}

/// A group whose only deployment fails, with a fallback configured, goes to the fallback at
/// once: the failing deployment is called once, with no backoff before the fallback answers.
#[tokio::test]
async fn a_failing_single_deployment_group_falls_back_at_once() {
    let e500 = MockUpstream::start(|_| {
        Reply::json(
            500,
            json!({"error": {"message": "boom", "type": "server_error"}}),
        )
    })
    .await;
    let e429 = MockUpstream::start(|_| {
        Reply::json(
            429,
            json!({"error": {"message": "slow down", "type": "requests"}}),
        )
        .with_header("retry-after", "2")
    })
    .await;
    let lone = MockUpstream::start(|_| {
        Reply::json(
            500,
            json!({"error": {"message": "boom", "type": "server_error"}}),
        )
    })
    .await;
    let backup = MockUpstream::start(ok_upstream("from backup")).await;
    let gw = Gateway::start(&config(
        &[
            upstream("a", "a500", &e500.base(), ""),
            upstream("r", "r429", &e429.base(), ""),
            upstream("lone", "lone", &lone.base(), ""),
            upstream("b", "b", &backup.base(), ""),
        ],
        "  num_retries: 2\n  disable_cooldowns: true\n  fallbacks: [{a: [b]}, {r: [b]}]\n",
    ));
    for (group, failing) in [("a", &e500), ("r", &e429)] {
        for round in 1..=3 {
            let t = Instant::now();
            let r = gw.post("/v1/chat/completions", &chat(group)).await;
            let took = t.elapsed();
            assert_eq!(r.status, 200, "{group}: {}", r.text());
            assert_eq!(content(&r), "from backup");
            assert_eq!(r.header("x-litellm-attempted-fallbacks"), Some("1"));
            assert_eq!(
                failing.count(),
                round,
                "{group} was retried before the fallback"
            );
            assert!(took < Duration::from_millis(300), "{group}: took {took:?}");
        }
    }
    // No fallback: retrying the same deployment still waits out the backoff (500 ms base,
    // jitter 50-100%).
    let t = Instant::now();
    gw.post("/v1/chat/completions", &chat("lone"))
        .await
        .expect_error(500);
    assert_eq!(lone.count(), 3);
    assert!(
        t.elapsed() >= Duration::from_millis(700),
        "{:?}",
        t.elapsed()
    );
}
