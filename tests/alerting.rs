//! Alerting webhooks through the running gateway (issue 17): a local receiver stands in for
//! Slack (`SLACK_WEBHOOK_URL`) and for the generic webhook (`WEBHOOK_URL`). A storm of failed
//! calls, of slow answers and of cooldowns each yields one message per destination (the rest
//! are deduplicated, which `/metrics` counts), in LiteLLM's payload shapes; `alert_types`
//! keeps the other types out.

mod support;

use serde_json::{json, Value};
use std::time::Duration;
use support::*;

fn entry(group: &str, id: &str, base: &str) -> String {
    format!(
        "  - model_name: {group}\n    litellm_params: {{model: openai/m-{id}, api_base: \"{base}/v1\", api_key: sk-up}}\n    model_info: {{id: {id}}}\n"
    )
}

async fn receiver() -> MockUpstream {
    MockUpstream::start(|_| Reply::json(200, json!({"ok": true}))).await
}

/// The alerts `rx` got on `path`, as JSON.
fn received(rx: &MockUpstream, path: &str) -> Vec<Value> {
    rx.requests()
        .iter()
        .filter(|r| r.path == path)
        .map(|r| r.json())
        .collect()
}

fn slack_with(rx: &MockUpstream, needle: &str) -> usize {
    received(rx, "/slack/T0/B0")
        .iter()
        .filter(|v| v["text"].as_str().unwrap_or_default().contains(needle))
        .count()
}

fn hooks_of(rx: &MockUpstream, event: &str) -> Vec<Value> {
    received(rx, "/hook")
        .into_iter()
        .filter(|v| v["event"] == event)
        .collect()
}

async fn chat(gw: &Gateway, model: &str) -> Response {
    gw.post(
        "/v1/chat/completions",
        &json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await
}

fn config(rx: &MockUpstream, models: &str, general: &str) -> String {
    format!(
        "model_list:\n{models}router_settings:\n  num_retries: 0\n  cooldown_time: 60\ngeneral_settings:\n  alerting: [slack, webhook]\n  alerting_threshold: 0.3\n{general}environment_variables:\n  SLACK_WEBHOOK_URL: \"{b}/slack/T0/B0\"\n  WEBHOOK_URL: \"{b}/hook\"\n",
        b = rx.base()
    )
}

#[tokio::test]
async fn exceptions_slow_answers_and_cooldown_storms_alert_once_per_destination() {
    let rx = receiver().await;
    let failing = MockUpstream::start(|_| {
        Reply::json(
            500,
            json!({"error": {"message": "upstream exploded", "type": "server_error"}}),
        )
    })
    .await;
    let slow = MockUpstream::start(|_| {
        Reply::json(200, openai::completion("late")).delayed(Duration::from_millis(500))
    })
    .await;
    let unauthorized = MockUpstream::start(|_| {
        Reply::json(
            401,
            json!({"error": {"message": "bad key", "type": "invalid_request_error"}}),
        )
    })
    .await;
    let models = [
        entry("err", "err1", &failing.base()),
        entry("slow", "slow1", &slow.base()),
        entry("cool", "cool1", &unauthorized.base()),
        entry("cool", "cool2", &unauthorized.base()),
    ]
    .concat();
    let gw = Gateway::start(&config(&rx, &models, ""));

    for _ in 0..5 {
        assert_eq!(chat(&gw, "err").await.status, 500);
    }
    for _ in 0..3 {
        assert_eq!(chat(&gw, "slow").await.status, 200);
    }
    // Both deployments cool down on their 401; then the whole group is out (an outage).
    for _ in 0..8 {
        let s = chat(&gw, "cool").await.status;
        assert!(s == 401 || s == 503, "{s}");
    }

    // Every queued alert is processed: the repeats show up as deduplicated.
    gw.wait_for_metric(
        "switchboard_alerts_total",
        &["alert_type=\"llm_exceptions\"", "outcome=\"deduplicated\""],
        |n| n >= 4.0,
    )
    .await;
    gw.wait_for_metric(
        "switchboard_alerts_total",
        &["alert_type=\"llm_too_slow\"", "outcome=\"deduplicated\""],
        |n| n >= 2.0,
    )
    .await;
    gw.wait_for_metric(
        "switchboard_alerts_total",
        &["alert_type=\"outage_alerts\"", "outcome=\"sent\""],
        |n| n >= 2.0,
    )
    .await;
    assert!(
        wait_until(
            || hooks_of(&rx, "outage_alerts").len() == 1,
            Duration::from_secs(10)
        )
        .await
    );

    // One message per storm and destination.
    assert_eq!(
        slack_with(&rx, "upstream exploded"),
        1,
        "{:?}",
        received(&rx, "/slack/T0/B0")
    );
    let exceptions = hooks_of(&rx, "llm_exceptions");
    let err_hooks: Vec<&Value> = exceptions
        .iter()
        .filter(|v| v["event_message"].as_str().unwrap().contains("`err`"))
        .collect();
    assert_eq!(err_hooks.len(), 1, "{exceptions:?}");
    assert_eq!(slack_with(&rx, "Responses are slow"), 1);
    assert_eq!(hooks_of(&rx, "llm_too_slow").len(), 1);
    let cooldowns = hooks_of(&rx, "cooldown_deployment");
    let mut ids: Vec<&str> = cooldowns
        .iter()
        .map(|v| {
            let m = v["event_message"].as_str().unwrap();
            if m.contains("cool1") {
                "cool1"
            } else {
                "cool2"
            }
        })
        .collect();
    ids.sort();
    assert_eq!(ids, ["cool1", "cool2"], "{cooldowns:?}");
    assert_eq!(slack_with(&rx, "Deployment cooled down"), 2);

    // LiteLLM's shapes: Slack text with the level; a WebhookEvent with its fields.
    let s = received(&rx, "/slack/T0/B0");
    assert!(s[0]["text"].as_str().unwrap().starts_with("Level: `"));
    let hook = &err_hooks[0];
    assert_eq!(hook["event_group"], "proxy");
    for field in [
        "spend",
        "max_budget",
        "token",
        "user_id",
        "team_id",
        "event_message",
    ] {
        assert!(hook.get(field).is_some(), "{field} missing from {hook}");
    }
    assert!(!rx
        .requests()
        .iter()
        .any(|r| String::from_utf8_lossy(&r.body).contains("sk-up")));
}

#[tokio::test]
async fn alert_types_keep_other_alerts_out() {
    let rx = receiver().await;
    let failing = MockUpstream::start(|_| {
        Reply::json(
            500,
            json!({"error": {"message": "boom", "type": "server_error"}}),
        )
    })
    .await;
    let slow = MockUpstream::start(|_| {
        Reply::json(200, openai::completion("late")).delayed(Duration::from_millis(500))
    })
    .await;
    let models = [
        entry("err", "e1", &failing.base()),
        entry("slow", "s1", &slow.base()),
    ]
    .concat();
    let gw = Gateway::start(&config(&rx, &models, "  alert_types: [llm_too_slow]\n"));
    assert_eq!(chat(&gw, "err").await.status, 500);
    assert_eq!(chat(&gw, "slow").await.status, 200);
    gw.wait_for_metric(
        "switchboard_alerts_total",
        &["alert_type=\"llm_too_slow\"", "outcome=\"sent\""],
        |n| n >= 2.0,
    )
    .await;
    gw.wait_for_metric(
        "switchboard_alerts_total",
        &["alert_type=\"llm_exceptions\"", "outcome=\"filtered\""],
        |n| n >= 1.0,
    )
    .await;
    assert!(hooks_of(&rx, "llm_exceptions").is_empty());
    assert_eq!(hooks_of(&rx, "llm_too_slow").len(), 1);
}

/// A key over its budget alerts once per destination (the
/// webhook in LiteLLM's `WebhookEvent` shape), however many refusals follow.
#[tokio::test]
async fn a_key_over_its_budget_alerts_once_however_many_refusals() {
    let rx = receiver().await;
    let up = MockUpstream::start(|_| Reply::json(200, openai::completion("ok"))).await;
    // A priced model (gpt-4o is in the price table), so the budget can be checked.
    let models = format!(
        "  - model_name: gpt-4o\n    litellm_params: {{model: openai/gpt-4o, api_base: \"{}/v1\", api_key: sk-up}}\n",
        up.base()
    );
    let gw = Gateway::start(&config(&rx, &models, "  master_key: sk-master-1234\n"));
    let admin = |path: &'static str, body: Value| {
        let gw = &gw;
        async move {
            gw.post_with(
                path,
                &[
                    ("content-type", "application/json"),
                    ("authorization", "Bearer sk-master-1234"),
                ],
                body.to_string().as_bytes(),
            )
            .await
        }
    };
    // A budget no call fits: every call is refused, one alert.
    let r = admin(
        "/key/generate",
        json!({"key_alias": "tiny", "max_budget": 1e-9}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let tiny = r.json()["key"].as_str().unwrap().to_string();
    for _ in 0..4 {
        let r = gw
            .post_with(
                "/v1/chat/completions",
                &[
                    ("content-type", "application/json"),
                    ("authorization", &format!("Bearer {tiny}")),
                ],
                json!({"model": "gpt-4o", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]})
                    .to_string()
                    .as_bytes(),
            )
            .await;
        assert_eq!(r.expect_error(422)["type"], "budget_exceeded");
    }
    assert!(
        wait_until(
            || !hooks_of(&rx, "budget_crossed").is_empty()
                && slack_with(&rx, "Budget crossed") >= 1,
            Duration::from_secs(10)
        )
        .await,
        "budget alert sent: {:?}",
        received(&rx, "/hook")
    );
    let hooks = hooks_of(&rx, "budget_crossed");
    assert_eq!(hooks.len(), 1, "deduplicated: {hooks:?}");
    assert_eq!(hooks[0]["event_group"], "key", "{hooks:?}");
    assert_eq!(hooks[0]["max_budget"], 1e-9, "{hooks:?}");
    assert!(
        !received(&rx, "/hook")
            .iter()
            .any(|v| v.to_string().contains(&tiny)),
        "no key in alerts"
    );
}

/// Each destination has its own sender: with the webhook receiver hanging (every post answered
/// only after a minute), Slack still gets every alert promptly, and the hung deliveries are
/// counted as such later rather than holding the others up.
#[tokio::test]
async fn a_hanging_destination_does_not_hold_up_the_others() {
    let slack = receiver().await;
    let hung = MockUpstream::start(|_| {
        Reply::json(200, json!({"ok": true})).delayed(Duration::from_secs(60))
    })
    .await;
    let failing = MockUpstream::start(|_| {
        Reply::json(
            500,
            json!({"error": {"message": "boom", "type": "server_error"}}),
        )
    })
    .await;
    let b = failing.base();
    let yaml = format!(
        "model_list:\n{}{}{}router_settings:\n  num_retries: 0\ngeneral_settings:\n  alerting: [webhook, slack]\n  alert_types: [llm_exceptions]\nenvironment_variables:\n  SLACK_WEBHOOK_URL: \"{}/slack/T0/B0\"\n  WEBHOOK_URL: \"{}/hook\"\n",
        entry("a", "a", &b),
        entry("b", "b", &b),
        entry("c", "c", &b),
        slack.base(),
        hung.base(),
    );
    let gw = Gateway::start(&yaml);
    let started = std::time::Instant::now();
    for group in ["a", "b", "c"] {
        assert_eq!(chat(&gw, group).await.status, 500);
    }
    // Three groups, three alerts: all reach Slack while the webhook is still hanging on the
    // first (before, each waited behind up to 3 x 10 s of the webhook's attempts).
    assert!(
        wait_until(
            || ["`a`", "`b`", "`c`"]
                .iter()
                .all(|g| slack_with(&slack, g) == 1),
            Duration::from_secs(8),
        )
        .await,
        "slack got {:?} after {:?}",
        received(&slack, "/slack/T0/B0"),
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(received(&slack, "/slack/T0/B0").len() == 3);
    // The webhook got the first attempt of the first alert and is still on it.
    assert!(hung.count() <= 1, "{}", hung.count());
}
