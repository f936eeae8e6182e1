//! Wildcard groups (`openai/*`, `*`) through the real gateway: model names the client chooses
//! are served from the template deployment's provider with per-name live state (limits and
//! cooldowns hold between requests of one name), and never become metric label values, so
//! `/metrics` stays bounded however many names clients send.

mod support;

use serde_json::json;
use support::*;

fn chat(model: &str) -> serde_json::Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

/// Series lines in a Prometheus text exposition (not comments).
fn series(metrics: &str) -> usize {
    metrics
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count()
}

/// A derived name keeps its rpm limit between requests (the 2nd request of a name is refused
/// with 429 while another name still gets through), and each name reaches the upstream with
/// its own concrete model.
#[tokio::test]
async fn a_wildcard_names_limits_hold_across_requests() {
    let up = MockUpstream::start(|_| Reply::json(200, openai::completion("wild"))).await;
    let gw = Gateway::start(&format!(
        "model_list:\n  - model_name: \"openai/*\"\n    litellm_params: {{model: \"openai/*\", api_base: \"{}/v1\", api_key: k, rpm: 1}}\n    model_info: {{id: w}}\n",
        up.base()
    ));
    let r = gw.post("/v1/chat/completions", &chat("openai/a")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.last().json()["model"], "a");
    let r = gw.post("/v1/chat/completions", &chat("openai/a")).await;
    let err = r.expect_error(429);
    assert!(r.header("retry-after").is_some(), "{err}");
    let r = gw.post("/v1/chat/completions", &chat("openai/b")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.last().json()["model"], "b");
    assert_eq!(up.count(), 2);
}

/// 2,000 distinct model names (half served by a wildcard group, half unknown: 404) leave
/// `/metrics` with as many series as a handful of names do: every client-chosen name is
/// recorded under the wildcard's pattern or as `__unknown__`.
#[tokio::test]
async fn metrics_stay_bounded_under_many_model_names() {
    let up = MockUpstream::start(|_| Reply::json(200, openai::completion("wild"))).await;
    let gw = Gateway::start(&format!(
        "model_list:\n  - model_name: \"openai/*\"\n    litellm_params: {{model: \"openai/*\", api_base: \"{}/v1\", api_key: k}}\n    model_info: {{id: w}}\n  - model_name: fixed\n    litellm_params: {{model: openai/f, mock_response: ok}}\n",
        up.base()
    ));
    let send = |i: usize| {
        let served = i.is_multiple_of(2);
        let model = if served {
            format!("openai/model-{i}")
        } else {
            format!("unknown-{i}")
        };
        let gw = &gw;
        async move {
            let r = gw.post("/v1/chat/completions", &chat(&model)).await;
            assert_eq!(r.status, if served { 200 } else { 404 }, "{model}");
        }
    };
    for i in 0..10 {
        send(i).await;
    }
    let few = series(&gw.get("/metrics", &[]).await.text());
    for i in 10..2000 {
        send(i).await;
    }
    // A request is recorded just after its response is written: wait for the last ones.
    let served = "litellm_proxy_total_requests_metric_total{api_key_alias=\"\",end_user=\"\",hashed_api_key=\"\",requested_model=\"openai/*\",status_code=\"200\",team=\"\",team_alias=\"\",user=\"\"} 1000";
    let unknown = "litellm_proxy_total_requests_metric_total{api_key_alias=\"\",end_user=\"\",hashed_api_key=\"\",requested_model=\"__unknown__\",status_code=\"404\",team=\"\",team_alias=\"\",user=\"\"} 1000";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut metrics = gw.get("/metrics", &[]).await.text();
    while !(metrics.contains(served) && metrics.contains(unknown))
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        metrics = gw.get("/metrics", &[]).await.text();
    }
    assert!(metrics.contains(served), "{metrics}");
    assert!(metrics.contains(unknown), "{metrics}");
    assert_eq!(series(&metrics), few, "series grew with model names");
    assert!(
        !metrics.contains("model-1"),
        "a client's model name is a label value"
    );
    assert!(
        !metrics.contains("unknown-"),
        "a client's model name is a label value"
    );
    assert!(metrics.contains("litellm_deployment_total_requests_total{api_base=\"http://127.0.0.1"));
    assert!(metrics.contains("litellm_model_name=\"openai/*\",model_id=\"w\""));
    assert_eq!(up.count(), 1000);
}
