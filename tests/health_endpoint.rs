//! LiteLLM's `GET /health` through the running gateway (issue 17): each deployment is called
//! once with the smallest request of its mode; a healthy, a failing and a hanging upstream are
//! told apart within the check's time bound; `?model=` narrows to one group; no credential
//! appears in the answer; only the master key may ask; the liveness and readiness routes stay
//! open. With `background_health_checks` the cached result is served and routing skips the
//! deployment it found failing, until a later run finds it answering again.

mod support;

use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

const MASTER: &str = "sk-master-health";

fn entry(group: &str, id: &str, base: &str, extra: &str, info: &str) -> String {
    format!(
        "  - model_name: {group}\n    litellm_params: {{model: openai/m-{id}, api_base: \"{base}/v1\", api_key: sk-secret-{id}{extra}}}\n    model_info: {{id: {id}{info}}}\n"
    )
}

async fn health(gw: &Gateway, query: &str) -> Response {
    gw.get(
        &format!("/health{query}"),
        &[("authorization", &format!("Bearer {MASTER}"))],
    )
    .await
}

fn ids(v: &Value, list: &str) -> Vec<String> {
    let mut out: Vec<String> = v[list]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["model_id"].as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn health_tells_healthy_failing_and_hanging_apart_in_bounded_time() {
    let ok = MockUpstream::start(|r| {
        if r.path.ends_with("/embeddings") {
            Reply::json(
                200,
                json!({"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.1]}], "model": "e", "usage": {"prompt_tokens": 1, "total_tokens": 1}}),
            )
        } else {
            Reply::json(200, openai::completion("pong"))
        }
    })
    .await;
    // Echoes the key it was sent, as some upstreams do in their errors.
    let failing = MockUpstream::start(|r| {
        let auth = r.header("authorization").unwrap_or_default().to_string();
        Reply::json(
            401,
            json!({"error": {"message": format!("Incorrect API key provided: {auth}"), "type": "invalid_request_error"}}),
        )
    })
    .await;
    let hanging = MockUpstream::start(|_| Reply::Hang).await;
    let yaml = format!(
        "model_list:\n{}{}{}{}general_settings:\n  master_key: {MASTER}\n",
        entry("chat", "good", &ok.base(), "", ""),
        entry("chat", "bad", &failing.base(), "", ""),
        entry("slow", "hung", &hanging.base(), ", timeout: 1", ""),
        entry("emb", "vec", &ok.base(), "", ", mode: embedding"),
    );
    let gw = Gateway::start(&yaml);

    let started = Instant::now();
    let r = health(&gw, "").await;
    let took = started.elapsed();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let v = r.json();
    assert_eq!(ids(&v, "healthy_endpoints"), ["good", "vec"]);
    assert_eq!(ids(&v, "unhealthy_endpoints"), ["bad", "hung"]);
    assert_eq!(
        (v["healthy_count"].as_u64(), v["unhealthy_count"].as_u64()),
        (Some(2), Some(2))
    );
    let text = r.text();
    assert!(!text.contains("sk-secret"), "a credential leaked: {text}");
    let bad = &v["unhealthy_endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["model_id"] == "bad")
        .unwrap()
        .clone();
    assert_eq!(bad["model"], "openai/m-bad");
    assert_eq!(bad["api_base"], format!("{}/v1", failing.base()));
    assert!(
        bad["error"].as_str().unwrap().contains("Incorrect API key"),
        "{bad}"
    );
    // The minimal call of each mode.
    let calls = ok.requests();
    let chat = calls
        .iter()
        .find(|c| c.path.ends_with("/chat/completions"))
        .unwrap();
    assert_eq!(chat.json()["max_tokens"], 1);
    assert!(calls.iter().any(|c| c.path.ends_with("/embeddings")));

    // One group.
    let v = health(&gw, "?model=chat").await.json();
    assert_eq!(ids(&v, "healthy_endpoints"), ["good"]);
    assert_eq!(ids(&v, "unhealthy_endpoints"), ["bad"]);
    health(&gw, "?model=nope").await.expect_error(404);
    assert_eq!(
        hanging.requests().len(),
        1,
        "?model=chat checked another group"
    );

    // Master key only; liveness and readiness stay open.
    assert_eq!(gw.get("/health", &[]).await.status, 401);
    assert_eq!(gw.get("/health/liveliness", &[]).await.status, 200);
    let ready = gw.get("/health/readiness", &[]).await;
    assert!(
        ready.status == 200 || ready.status == 503,
        "{}",
        ready.text()
    );
}

#[tokio::test]
async fn background_checks_are_served_cached_and_steer_routing() {
    let up = Arc::new(AtomicBool::new(false));
    let good = MockUpstream::start(|_| Reply::json(200, openai::completion("good"))).await;
    let flaky = {
        let up = up.clone();
        MockUpstream::start(move |_| {
            if up.load(Ordering::Relaxed) {
                Reply::json(200, openai::completion("flaky"))
            } else {
                Reply::json(
                    500,
                    json!({"error": {"message": "down", "type": "server_error"}}),
                )
            }
        })
        .await
    };
    let yaml = format!(
        "model_list:\n{}{}router_settings:\n  num_retries: 0\n  disable_cooldowns: true\ngeneral_settings:\n  master_key: {MASTER}\n  background_health_checks: true\n  health_check_interval: 1\n",
        entry("g", "good", &good.base(), "", ""),
        entry("g", "flaky", &flaky.base(), "", ""),
    );
    let gw = Gateway::start(&yaml);
    let unhealthy_is = |want: &'static [&'static str]| {
        let gw = &gw;
        async move {
            let v = health(gw, "").await.json();
            ids(&v, "unhealthy_endpoints") == want
        }
    };
    assert!(
        wait_until_async(
            async || unhealthy_is(&["flaky"]).await,
            Duration::from_secs(10)
        )
        .await,
        "the background run never found the failing deployment"
    );
    // Served from the cache: asking does not call the upstreams.
    let before = good.requests().len() + flaky.requests().len();
    health(&gw, "?model=g").await;
    let after = good.requests().len() + flaky.requests().len();
    assert!(after - before <= 2, "each /health call re-ran the checks");

    // With cooldowns off and no retries, only the health verdict keeps requests off `flaky`.
    let is_chat = |r: &Recorded| r.json()["max_tokens"] != 1;
    let seen_by_flaky = || flaky.requests().iter().filter(|r| is_chat(r)).count();
    for _ in 0..12 {
        let r = gw
            .post_with(
                "/v1/chat/completions",
                &[("authorization", &format!("Bearer {MASTER}"))],
                json!({"model": "g", "messages": [{"role": "user", "content": "hi"}]})
                    .to_string()
                    .as_bytes(),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(
        seen_by_flaky(),
        0,
        "routing sent requests to a deployment the checks found down"
    );

    // It comes back: a later run finds it answering and it takes requests again.
    up.store(true, Ordering::Relaxed);
    assert!(wait_until_async(async || unhealthy_is(&[]).await, Duration::from_secs(10)).await);
    let mut reached = false;
    for _ in 0..40 {
        gw.post_with(
            "/v1/chat/completions",
            &[("authorization", &format!("Bearer {MASTER}"))],
            json!({"model": "g", "messages": [{"role": "user", "content": "hi"}]})
                .to_string()
                .as_bytes(),
        )
        .await;
        if seen_by_flaky() > 0 {
            reached = true;
            break;
        }
    }
    assert!(reached, "the recovered deployment never took a request");
}

/// `model_info.health_check_model` is the model the check asks the upstream for (LiteLLM's,
/// for wildcard routes), with its provider prefix taken off; the deployment's own is not used.
#[tokio::test]
async fn the_check_calls_health_check_model_upstream() {
    let up = MockUpstream::start(|_| Reply::json(200, openai::completion("pong"))).await;
    let yaml = format!(
        "model_list:\n{}general_settings:\n  master_key: {MASTER}\n",
        entry(
            "chat",
            "hc",
            &up.base(),
            "",
            ", health_check_model: openai/gpt-4o-mini"
        ),
    );
    let gw = Gateway::start(&yaml);
    let v = health(&gw, "").await.json();
    assert_eq!(ids(&v, "healthy_endpoints"), ["hc"], "{v}");
    let calls = up.requests();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].json()["model"], "gpt-4o-mini");
}

/// Checks run side by side: forty deployments that never answer, each bounded by LiteLLM's
/// `model_info.health_check_timeout: 1`, are all reported in about one timeout, not forty (nor
/// one per batch of a few).
#[tokio::test]
async fn hanging_deployments_are_checked_concurrently() {
    const N: usize = 40;
    let hanging = MockUpstream::start(|_| Reply::Hang).await;
    let mut models = String::new();
    for i in 0..N {
        models.push_str(&entry(
            "slow",
            &format!("h{i}"),
            &hanging.base(),
            "",
            ", health_check_timeout: 1",
        ));
    }
    let gw = Gateway::start(&format!(
        "model_list:\n{models}general_settings:\n  master_key: {MASTER}\n"
    ));
    let started = Instant::now();
    let r = health(&gw, "").await;
    let took = started.elapsed();
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["unhealthy_count"], N, "{v}");
    assert!(v["unhealthy_endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["error"].as_str().unwrap().contains("within 1.0s")));
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "took {took:?}"
    );
    assert!(
        wait_until(|| hanging.count() == N, Duration::from_secs(5)).await,
        "every deployment was called: {}",
        hanging.count()
    );
}
