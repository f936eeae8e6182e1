//! Alerting webhooks through the running gateway (issue 17): a local receiver stands in for
//! Slack (`SLACK_WEBHOOK_URL`) and for the generic webhook (`WEBHOOK_URL`). A storm of failed
//! calls, of slow answers and of cooldowns each yields one message per destination (repeats
//! are deduplicated, other alerts of the type folded into the message, which `/metrics`
//! counts), in LiteLLM's payload shapes; `alert_types` keeps the other types out; a failing
//! destination gets a bounded number of tries.

mod support;

use serde_json::{json, Value};
use std::time::Duration;
use support::*;

fn entry(group: &str, id: &str, base: &str) -> String {
    format!(
        "  - model_name: {group}\n    litellm_params: {{model: openai/m-{id}, api_base: \"{base}/v1\", api_key: sk-up}}\n    model_info: {{id: {id}}}\n"
    )
}

/// An upstream whose every answer is a 500 with `message`.
async fn failing_upstream(message: &'static str) -> MockUpstream {
    MockUpstream::start(move |_| {
        Reply::json(
            500,
            json!({"error": {"message": message, "type": "server_error"}}),
        )
    })
    .await
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
    let failing = failing_upstream("upstream exploded").await;
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
    const COOLING: [&str; 5] = ["cool1", "cool2", "cool3", "cool4", "cool5"];
    let mut models = [
        entry("err", "err1", &failing.base()),
        entry("slow", "slow1", &slow.base()),
    ]
    .concat();
    for id in COOLING {
        models.push_str(&entry("cool", id, &unauthorized.base()));
    }
    let gw = Gateway::start(&config(&rx, &models, ""));

    for _ in 0..5 {
        assert_eq!(chat(&gw, "err").await.status, 500);
    }
    // Every deployment of `cool` cools down on its 401 (a storm of five cooldowns), then the
    // whole group is out (an outage).
    let mut refused = 0;
    for _ in 0..20 {
        let s = chat(&gw, "cool").await.status;
        assert!(s == 401 || s == 503, "{s}");
        refused += (s == 503) as u32;
        if refused == 3 {
            break;
        }
    }
    assert_eq!(refused, 3, "the group never ran out of deployments");
    for _ in 0..3 {
        assert_eq!(chat(&gw, "slow").await.status, 200);
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
    // Each type's message goes out once its storm has gathered.
    for alert_type in ["llm_exceptions", "llm_too_slow", "outage_alerts"] {
        gw.wait_for_metric(
            "switchboard_alerts_total",
            &[&format!("alert_type=\"{alert_type}\""), "outcome=\"sent\""],
            |n| n >= 2.0,
        )
        .await;
    }
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
    // Five deployments cooling down: one message per destination, naming each of them.
    gw.wait_for_metric(
        "switchboard_alerts_total",
        &["alert_type=\"cooldown_deployment\"", "outcome=\"folded\""],
        |n| n >= 4.0,
    )
    .await;
    gw.wait_for_metric(
        "switchboard_alerts_total",
        &["alert_type=\"cooldown_deployment\"", "outcome=\"sent\""],
        |n| n >= 2.0,
    )
    .await;
    let cooldowns = hooks_of(&rx, "cooldown_deployment");
    assert_eq!(cooldowns.len(), 1, "{cooldowns:?}");
    let storm = cooldowns[0]["event_message"].as_str().unwrap();
    for id in COOLING {
        assert!(storm.contains(&format!("`{id}`")), "{id} missing: {storm}");
    }
    assert_eq!(cooldowns[0]["alert_count"], 5, "{storm}");
    assert_eq!(slack_with(&rx, "Deployment cooled down"), 1);
    let slack_storm = received(&rx, "/slack/T0/B0")
        .into_iter()
        .find(|v| {
            v["text"]
                .as_str()
                .unwrap()
                .contains("Deployment cooled down")
        })
        .unwrap();
    assert!(COOLING
        .iter()
        .all(|id| slack_storm["text"].as_str().unwrap().contains(id)));

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
    let failing = failing_upstream("boom").await;
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
    let failing = failing_upstream("boom").await;
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
    // Three groups, one storm of three alerts: it reaches Slack while the webhook (listed
    // first) is still hanging on its first attempt (with a shared sender it would wait behind
    // up to 3 x 10 s of the webhook's attempts).
    assert!(
        wait_until(
            || slack_with(&slack, "`a`") == 1
                && ["`b`", "`c`"].iter().all(|g| slack_with(&slack, g) == 1),
            Duration::from_secs(8),
        )
        .await,
        "slack got {:?} after {:?}",
        received(&slack, "/slack/T0/B0"),
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(received(&slack, "/slack/T0/B0").len(), 1);
    // The webhook got the first attempt and is still on it.
    assert!(hung.count() <= 1, "{}", hung.count());
}

/// A destination that keeps failing gets `MAX_DELIVERY_ATTEMPTS` (3) tries per message, no
/// more, counted at the receiver, and the give-up is counted in `/metrics` as `failed`, while
/// the healthy destination's delivery counts as `sent`.
#[tokio::test]
async fn a_failing_webhook_gets_a_bounded_number_of_tries() {
    let slack = receiver().await;
    let broken = MockUpstream::start(|_| Reply::json(500, json!({"error": "receiver down"}))).await;
    let failing = failing_upstream("boom").await;
    let yaml = format!(
        "model_list:\n{}router_settings:\n  num_retries: 0\ngeneral_settings:\n  alerting: [webhook, slack]\n  alert_types: [llm_exceptions]\nenvironment_variables:\n  SLACK_WEBHOOK_URL: \"{}/slack/T0/B0\"\n  WEBHOOK_URL: \"{}/hook\"\n",
        entry("a", "a", &failing.base()),
        slack.base(),
        broken.base(),
    );
    let gw = Gateway::start(&yaml);
    assert_eq!(chat(&gw, "a").await.status, 500);
    gw.wait_for_metric(
        "switchboard_alerts_total",
        &["alert_type=\"llm_exceptions\"", "outcome=\"failed\""],
        |n| n >= 1.0,
    )
    .await;
    assert_eq!(broken.count(), 3, "tries at the failing receiver");
    assert!(broken.requests().iter().all(|r| r.path == "/hook"));
    gw.wait_for_metric(
        "switchboard_alerts_total",
        &["alert_type=\"llm_exceptions\"", "outcome=\"sent\""],
        |n| n >= 1.0,
    )
    .await;
    assert_eq!(slack.count(), 1);
}

/// `daily_reports` on a short `alerting_args.daily_report_frequency`: one report per period to
/// each destination, in LiteLLM's message (top deployments by failed requests and by latency
/// per output token) and as a `WebhookEvent`; each covers only its own period, and a period
/// with nothing to report sends nothing.
#[tokio::test]
async fn the_daily_report_arrives_once_per_period_with_the_periods_figures() {
    let rx = receiver().await;
    let failing = failing_upstream("boom").await;
    let ok = MockUpstream::start(|_| Reply::json(200, openai::completion("fine"))).await;
    let yaml = config(
        &rx,
        &format!(
            "{}{}",
            entry("bad", "bad", &failing.base()),
            entry("good", "good", &ok.base())
        ),
        "  alert_types: [daily_reports]\n  alerting_args: {daily_report_frequency: 2, report_check_interval: 0.2}\n",
    );
    let gw = Gateway::start(&yaml);
    let reports = |rx: &MockUpstream| slack_with(rx, "Here are today's key metrics");
    let hooks = |rx: &MockUpstream| hooks_of(rx, "daily_reports");
    for _ in 0..3 {
        assert_eq!(chat(&gw, "bad").await.status, 500);
    }
    assert_eq!(chat(&gw, "good").await.status, 200);
    assert!(
        wait_until(
            || reports(&rx) == 1 && hooks(&rx).len() == 1,
            Duration::from_secs(8)
        )
        .await,
        "no first report: {:?}",
        rx.requests().iter().map(|r| r.json()).collect::<Vec<_>>()
    );
    let first = received(&rx, "/slack/T0/B0")[0]["text"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        first.contains("Top Deployments with Most Failed Requests"),
        "{first}"
    );
    assert!(first.contains("m-bad`, Failed Requests: `"), "{first}");
    assert!(first.contains("Top Slowest Deployments"), "{first}");
    assert!(!first.contains("m-good`, Failed"), "{first}");

    // The next period: one more failure, reported on its own.
    assert_eq!(chat(&gw, "bad").await.status, 500);
    assert!(
        wait_until(
            || reports(&rx) == 2 && hooks(&rx).len() == 2,
            Duration::from_secs(8)
        )
        .await,
        "no second report"
    );
    let second = received(&rx, "/slack/T0/B0")[1]["text"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(second.contains("1. Deployment: `"), "{second}");
    assert!(second.contains("m-bad`, Failed Requests: `1`"), "{second}");
    let hook = &hooks(&rx)[1];
    assert_eq!(
        hook["top_failed_deployments"][0]["model_id"], "bad",
        "{hook}"
    );
    assert_eq!(
        hook["top_failed_deployments"][0]["failed_requests"], 1.0,
        "{hook}"
    );
    assert!(hook["event_message"]
        .as_str()
        .unwrap()
        .contains("Failed Requests: `1`"));

    // Periods with no traffic send nothing: still two reports two and a half periods later.
    let quiet_until = std::time::Instant::now() + Duration::from_secs(5);
    assert!(
        !wait_until(
            || reports(&rx) > 2 || hooks(&rx).len() > 2,
            quiet_until - std::time::Instant::now()
        )
        .await,
        "an empty period was reported"
    );
}

/// Alerting settings that would do nothing (the `email` destination, alert types Switchboard
/// never raises) load with one warning each, naming the key path; the rest of the settings
/// still work.
#[tokio::test]
async fn alerting_settings_that_do_nothing_warn_once_and_load() {
    let rx = receiver().await;
    let failing = failing_upstream("boom").await;
    let gw = Gateway::start(
        &config(
            &rx,
            &entry("err", "e1", &failing.base()),
            "  alert_types: [spend_reports, llm_exceptions, llm_requests_hanging]\n",
        )
        .replace("alerting: [slack, webhook]", "alerting: [email, webhook]"),
    );
    let email = gw.wait_for_stderr("general_settings.alerting[0]").await;
    assert!(
        email.contains("email") && email.to_lowercase().contains("warn"),
        "{email}"
    );
    let spend = gw.wait_for_stderr("general_settings.alert_types[0]").await;
    assert!(spend.contains("spend_reports"), "{spend}");
    let hanging = gw.wait_for_stderr("general_settings.alert_types[2]").await;
    assert!(hanging.contains("llm_requests_hanging"), "{hanging}");
    let stderr = gw.stderr();
    assert!(
        !stderr.contains("alert_types[1]"),
        "llm_exceptions is raised: {stderr}"
    );
    assert_eq!(stderr.matches("alert_types[0]").count(), 1, "{stderr}");
    // The webhook still gets the alert type that is raised.
    assert_eq!(chat(&gw, "err").await.status, 500);
    assert!(
        wait_until(
            || hooks_of(&rx, "llm_exceptions").len() == 1,
            Duration::from_secs(10)
        )
        .await
    );
}

/// Alerts still collecting into their storm's message (it goes out 2 s after the first) when
/// the gateway is told to stop are sent before it exits, not lost.
#[tokio::test]
async fn alerts_still_collecting_at_shutdown_are_sent_before_exit() {
    let rx = receiver().await;
    let failing = failing_upstream("boom at shutdown").await;
    let mut gw = Gateway::start(&config(&rx, &entry("err", "e1", &failing.base()), ""));
    assert_eq!(chat(&gw, "err").await.status, 500);
    // The storm is open: nothing sent yet.
    assert!(hooks_of(&rx, "llm_exceptions").is_empty());
    gw.terminate().await;
    assert_eq!(
        hooks_of(&rx, "llm_exceptions").len(),
        1,
        "the webhook got it"
    );
    assert_eq!(slack_with(&rx, "boom at shutdown"), 1, "and Slack");
}
