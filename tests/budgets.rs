//! Budgets end to end through the running gateway on a real SQLite file: no overshoot under
//! concurrency (N requests against a budget that fits k admit exactly k), a stream the client
//! cuts releases its reservation and bills what was generated, `model_max_budget` trips only
//! its model, a `budget_duration` window resets on schedule, spend and the budget survive a
//! restart, LiteLLM's key headers, the unpriced-model policy and the Prometheus series.
//!
//! Prices are configured on the deployments (input 0.001, output 0.002 USD a token) so every
//! number is exact: the mock answers with 11 prompt and 7 completion tokens (0.025 USD), and a
//! request for `max_tokens: 10` with the short prompt below reserves 0.028 USD.

mod support;

use serde_json::{json, Value};
use std::time::Duration;
use support::*;
use switchboard::keys::{hash_key, hex};
use switchboard::store::{KeyRow, Store};

const MASTER: &str = "sk-master-1234";
/// What one call costs at the configured prices (11 × 0.001 + 7 × 0.002).
const CALL_COST: f64 = 0.025;

/// A non-streamed completion after `delay`; a slow stream of 60 words when asked to stream.
async fn upstream(delay: Duration) -> MockUpstream {
    MockUpstream::start(move |r| {
        if r.json()["stream"] == json!(true) {
            let words: Vec<String> = (0..60).map(|i| format!("w{i} ")).collect();
            let words: Vec<&str> = words.iter().map(String::as_str).collect();
            Reply::stream(
                "text/event-stream",
                &openai::sse(&words, true),
                60,
                Duration::from_millis(50),
            )
        } else {
            Reply::json(200, openai::completion("hello")).delayed(delay)
        }
    })
    .await
}

/// Two priced groups and an unpriced one, a master key, a database file, and `switchboard`
/// extra lines (indented 2) in a section of our own.
fn config(up: &MockUpstream, db: &std::path::Path, switchboard: &str) -> String {
    let dir = temp_dir();
    let deployment = |name: &str, model: &str, prices: &str| {
        format!(
            "  - model_name: {name}\n    litellm_params: {{model: {model}, api_base: \"{b}/v1\", api_key: sk-up{prices}}}\n",
            b = up.base()
        )
    };
    let priced = ", input_cost_per_token: 0.001, output_cost_per_token: 0.002";
    format!(
        "model_list:\n{}{}{}general_settings:\n  master_key: {MASTER}\n  database_url: \"sqlite://{db}\"\n  proxy_batch_write_at: 1\nswitchboard:\n  threads: 2\n  grace_period_seconds: 0\n  graceful_shutdown_timeout_seconds: 5\n  pid_file: {d}/sb.pid\n  upgrade_sock: {d}/sb.sock\n{switchboard}",
        deployment("gpt-4o", "openai/gpt-4o", priced),
        deployment("gpt-4o-mini", "openai/gpt-4o-mini", priced),
        deployment("house-model", "openai/house-model-unknown-to-the-table", ""),
        db = db.display(),
        d = dir.display(),
    )
}

fn db_path() -> std::path::PathBuf {
    temp_dir().join("budgets.db")
}

async fn admin(gw: &Gateway, path: &str, body: Value) -> Response {
    gw.post_as(MASTER, path, &body).await
}

async fn generate(gw: &Gateway, body: Value) -> String {
    gw.generate_key(MASTER, body).await
}

fn chat_body(model: &str) -> Vec<u8> {
    json!({"model": model, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]})
        .to_string()
        .into_bytes()
}

async fn chat(gw: &Gateway, key: &str, model: &str) -> Response {
    gw.post_with(
        "/v1/chat/completions",
        &[
            ("content-type", "application/json"),
            ("authorization", &format!("Bearer {key}")),
        ],
        &chat_body(model),
    )
    .await
}

/// Waits until the key's spend has reached `spend` (its calls have settled).
async fn settled(gw: &Gateway, key: &str, spend: f64) {
    assert!(
        wait_until_async(
            async || key_spend(gw, key).await >= spend - 1e-9,
            Duration::from_secs(10)
        )
        .await,
        "the key's spend never reached {spend}"
    );
}

/// The key's spend as `/key/info` reports it.
async fn key_spend(gw: &Gateway, key: &str) -> f64 {
    let r = gw
        .get(
            &format!("/key/info?key={key}"),
            &[("authorization", &format!("Bearer {MASTER}"))],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["info"]["spend"].as_f64().unwrap()
}

async fn scrape(gw: &Gateway) -> String {
    gw.get(
        "/metrics",
        &[("authorization", &format!("Bearer {MASTER}"))],
    )
    .await
    .text()
}

fn assert_budget_exceeded(r: &Response, prefix: &str) {
    let e = r.expect_error(422);
    assert_eq!(e["type"], "budget_exceeded", "{e}");
    let message = e["message"].as_str().unwrap();
    assert!(message.starts_with(prefix), "{message}");
}

#[tokio::test]
async fn concurrent_requests_never_overshoot_the_budget() {
    let up = upstream(Duration::from_millis(800)).await;
    let gw = Gateway::start(&config(&up, &db_path(), ""));
    // Fits 3 reservations (0.084), not 4 (0.112); and 3 calls' actual cost (0.075) leaves no
    // room for a 4th reservation either, whatever the interleaving.
    let key = generate(&gw, json!({"max_budget": 0.1, "key_alias": "team-a"})).await;
    let calls: Vec<_> = (0..8).map(|_| chat(&gw, &key, "gpt-4o")).collect();
    let answers = futures_util::future::join_all(calls).await;
    let ok = answers.iter().filter(|r| r.status == 200).count();
    assert_eq!(
        ok,
        3,
        "{:?}",
        answers.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for r in answers.iter().filter(|r| r.status != 200) {
        assert_budget_exceeded(r, "Budget has been exceeded! Key=team-a Current cost: ");
    }
    assert_eq!(up.count(), 3, "refused requests never reach the upstream");
    // Settle runs just after the last byte is out: wait for it.
    assert!(
        wait_until_async(
            async || (key_spend(&gw, &key).await - 3.0 * CALL_COST).abs() < 1e-9,
            Duration::from_secs(5)
        )
        .await,
        "{}",
        key_spend(&gw, &key).await
    );
    // Nothing is held once they are done; and the budget still refuses the next call.
    let m = scrape(&gw).await;
    assert_eq!(
        metric_value(&m, "switchboard_budget_reserved_usd", &["scope=\"key\""]),
        Some(0.0),
        "{m}"
    );
    assert_budget_exceeded(
        &chat(&gw, &key, "gpt-4o").await,
        "Budget has been exceeded!",
    );
    let m = scrape(&gw).await;
    assert_eq!(
        metric_value(&m, "switchboard_budget_exceeded_total", &["scope=\"key\""]),
        Some(6.0),
        "{m}"
    );
}

#[tokio::test]
async fn a_cut_stream_releases_its_reservation_and_bills_what_was_generated() {
    let up = upstream(Duration::ZERO).await;
    let gw = Gateway::start(&config(&up, &db_path(), ""));
    // The stream reserves 0.068 (max_tokens 30); a call's 0.028 more does not fit beside it.
    let key = generate(&gw, json!({"max_budget": 0.09})).await;
    let mut conn = Conn::connect(gw.port).await;
    let body = json!({"model": "gpt-4o", "max_tokens": 30, "stream": true,
                      "messages": [{"role": "user", "content": "hi"}]});
    conn.send_head_and_body(
        "POST",
        "/v1/chat/completions",
        &[
            ("content-type", "application/json"),
            ("authorization", &format!("Bearer {key}")),
        ],
        body.to_string().as_bytes(),
    )
    .await;
    let mut stream = conn.read_streaming().await;
    assert_eq!(stream.status, 200);
    // Headers go before the first byte: the spend so far (this call's cost is not known yet).
    assert_eq!(stream.header("x-litellm-key-spend"), Some("0.0"));
    assert_eq!(stream.header("x-litellm-key-max-budget"), Some("0.09"));
    assert!(stream.next_chunk().await.is_some());
    // While it streams, its reservation holds the budget.
    assert_budget_exceeded(
        &chat(&gw, &key, "gpt-4o").await,
        "Budget has been exceeded!",
    );
    stream.hang_up();
    assert!(
        wait_until_async(
            async || metric_value(
                &scrape(&gw).await,
                "switchboard_budget_reserved_usd",
                &["scope=\"key\""]
            ) == Some(0.0),
            Duration::from_secs(10)
        )
        .await,
        "the reservation was released"
    );
    // Billed: the prompt estimate and a token per event sent (far from the 60 words).
    let spend = key_spend(&gw, &key).await;
    assert!(spend > 0.0 && spend < 0.06, "{spend}");
    // Room again for a call.
    assert_eq!(chat(&gw, &key, "gpt-4o").await.status, 200);
}

#[tokio::test]
async fn model_max_budget_trips_only_its_model() {
    let db = db_path();
    let store = Store::open(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let key = "sk-per-model-budget-key-01";
    let hash = hex(&hash_key(key));
    store
        .upsert_key(&KeyRow {
            token: hash.clone(),
            key_alias: Some("per-model".into()),
            ..KeyRow::default()
        })
        .await
        .unwrap();
    store
        .execute(&format!(
            "UPDATE \"LiteLLM_VerificationToken\" SET model_max_budget = '{{\"gpt-4o\": {{\"budget_limit\": 0.03, \"time_period\": \"1d\"}}}}' WHERE token = '{hash}'"
        ))
        .await
        .unwrap();
    let up = upstream(Duration::ZERO).await;
    let gw = Gateway::start(&config(&up, &db, ""));
    assert_eq!(chat(&gw, key, "gpt-4o").await.status, 200);
    // 0.025 spent on gpt-4o: another 0.028 does not fit its 0.03.
    assert_budget_exceeded(
        &chat(&gw, key, "gpt-4o").await,
        &format!(
            "LiteLLM Virtual Key: {hash}, key_alias: per-model, exceeded budget for model=gpt-4o"
        ),
    );
    for _ in 0..3 {
        assert_eq!(chat(&gw, key, "gpt-4o-mini").await.status, 200);
    }
}

#[tokio::test]
async fn a_budget_window_resets_on_schedule() {
    let up = upstream(Duration::ZERO).await;
    let db = db_path();
    let gw = Gateway::start(&config(&up, &db, ""));
    let key = generate(&gw, json!({"max_budget": 0.03, "budget_duration": "2s"})).await;
    // The first call may straddle a reset; find a window where the second is refused.
    let mut refused = false;
    for _ in 0..5 {
        assert_eq!(chat(&gw, &key, "gpt-4o").await.status, 200);
        let r = chat(&gw, &key, "gpt-4o").await;
        if r.status == 422 {
            refused = true;
            break;
        }
    }
    assert!(refused, "a second call in one window is refused");
    assert!(
        wait_until_async(
            async || chat(&gw, &key, "gpt-4o").await.status == 200,
            Duration::from_secs(5)
        )
        .await,
        "the next window admits calls again"
    );
    // The reset is in the database too: spend back to (at most) this window's call, and the
    // next reset time stored.
    let store = Store::open(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let hash = hex(&hash_key(&key));
    assert!(
        wait_until_async(
            async || {
                let spend = store
                    .scalar_f64(&format!(
                        "SELECT COALESCE(MAX(spend), -1.0) FROM \"LiteLLM_VerificationToken\" WHERE token = '{hash}' AND budget_reset_at IS NOT NULL"
                    ))
                    .await
                    .unwrap();
                (0.0..=CALL_COST).contains(&spend)
            },
            Duration::from_secs(10)
        )
        .await
    );
    let m = scrape(&gw).await;
    assert!(
        metric_value(&m, "switchboard_budget_resets_total", &[]).unwrap_or(0.0) >= 1.0,
        "{m}"
    );
}

#[tokio::test]
async fn spend_and_the_budget_survive_a_restart() {
    let up = upstream(Duration::ZERO).await;
    let db = db_path();
    let mut gw = Gateway::start(&config(&up, &db, ""));
    let key = generate(&gw, json!({"max_budget": 0.06})).await;
    assert_eq!(chat(&gw, &key, "gpt-4o").await.status, 200);
    // Settle runs just after the answer is sent; until it has, the call's spend and its
    // reservation both count (on the safe side, see `budgets::ledger`), and the next call
    // would not fit.
    settled(&gw, &key, CALL_COST).await;
    assert_eq!(chat(&gw, &key, "gpt-4o").await.status, 200);
    settled(&gw, &key, 2.0 * CALL_COST).await;
    assert_budget_exceeded(
        &chat(&gw, &key, "gpt-4o").await,
        "Budget has been exceeded!",
    );
    gw.signal("TERM");
    assert!(gw.exited(Duration::from_secs(15)).await.is_some());
    drop(gw);

    let gw = Gateway::start(&config(&up, &db, ""));
    let r = chat(&gw, &key, "gpt-4o").await;
    assert_budget_exceeded(&r, "Budget has been exceeded! Key=");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("Current cost: {}", 2.0 * CALL_COST)),
        "{}",
        r.text()
    );
    assert_eq!(r.header("x-litellm-key-spend"), Some("0.05"));
    assert_eq!(up.count(), 2);
}

#[tokio::test]
async fn key_headers_unpriced_policy_and_prometheus_series() {
    let up = upstream(Duration::ZERO).await;
    let gw = Gateway::start(&config(&up, &db_path(), ""));
    let key = generate(
        &gw,
        json!({"max_budget": 1.0, "tpm_limit": 1000, "rpm_limit": 10, "key_alias": "hdr"}),
    )
    .await;
    let r = chat(&gw, &key, "gpt-4o").await;
    assert_eq!(r.status, 200);
    // LiteLLM: the spend including this call's cost, and the key's budget and limits.
    assert_eq!(r.header("x-litellm-response-cost"), Some("0.025"));
    assert_eq!(r.header("x-litellm-key-spend"), Some("0.025"));
    assert_eq!(r.header("x-litellm-key-max-budget"), Some("1.0"));
    assert_eq!(r.header("x-litellm-key-tpm-limit"), Some("1000"));
    assert_eq!(r.header("x-litellm-key-rpm-limit"), Some("10"));
    let r = chat(&gw, &key, "gpt-4o").await;
    assert_eq!(r.header("x-litellm-key-spend"), Some("0.05"));
    // A key without limits gets only its spend.
    let plain = generate(&gw, json!({})).await;
    let r = chat(&gw, &plain, "gpt-4o").await;
    assert_eq!(r.header("x-litellm-key-spend"), Some("0.025"));
    assert_eq!(r.header("x-litellm-key-max-budget"), None);
    assert_eq!(r.header("x-litellm-key-rpm-limit"), None);

    // Unpriced model, default policy: admitted (nothing reserved), counted.
    assert_eq!(chat(&gw, &key, "house-model").await.status, 200);

    let hash = hex(&hash_key(&key));
    let labels = [
        format!("hashed_api_key=\"{hash}\""),
        "api_key_alias=\"hdr\"".to_string(),
    ];
    let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
    let m = scrape(&gw).await;
    let remaining = metric_value(&m, "litellm_remaining_api_key_budget_metric", &labels).unwrap();
    assert!((remaining - (1.0 - 2.0 * CALL_COST)).abs() < 1e-9, "{m}");
    assert_eq!(
        metric_value(&m, "litellm_api_key_max_budget_metric", &labels),
        Some(1.0)
    );
    let spent = metric_value(
        &m,
        "litellm_spend_metric_total",
        &[labels[0], "model=\"gpt-4o\""],
    )
    .unwrap();
    assert!((spent - 2.0 * CALL_COST).abs() < 1e-9, "{m}");
    assert_eq!(
        metric_value(&m, "switchboard_budget_unpriced_requests_total", &[]),
        Some(1.0)
    );
    drop(gw);

    // `deny`: the unpriced model is refused to budgeted keys, still served to others.
    let gw = Gateway::start(&config(
        &up,
        &db_path(),
        "  unpriced_budget_policy: deny\n  budget_exceeded_status: 400\n",
    ));
    let key = generate(&gw, json!({"max_budget": 1.0})).await;
    let e = chat(&gw, &key, "house-model").await.expect_error(400);
    assert_eq!(e["type"], "budget_exceeded");
    assert!(
        e["message"].as_str().unwrap().contains("has no price"),
        "{e}"
    );
    let plain = generate(&gw, json!({})).await;
    assert_eq!(chat(&gw, &plain, "house-model").await.status, 200);
}

/// Team and end-user budgets (rows as LiteLLM's admin API writes them): a team key is refused
/// once the team's budget is spent, and concurrent first requests for an end user whose budget
/// fits one call admit exactly one (LiteLLM #40095's race).
#[tokio::test]
async fn team_and_end_user_budgets_hold_under_concurrency() {
    let db = db_path();
    let store = Store::open(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    for sql in [
        "INSERT INTO \"LiteLLM_TeamTable\" (team_id, team_alias, max_budget, spend) VALUES ('t1', 'platform', 0.03, 0)",
        "INSERT INTO \"LiteLLM_BudgetTable\" (budget_id, max_budget, created_by, updated_by) VALUES ('b1', 0.03, 'test', 'test')",
        "INSERT INTO \"LiteLLM_EndUserTable\" (user_id, budget_id, spend, blocked) VALUES ('cust-1', 'b1', 0, false)",
    ] {
        store.execute(sql).await.unwrap();
    }
    let up = upstream(Duration::from_millis(500)).await;
    let gw = Gateway::start(&config(&up, &db, ""));

    let key = generate(&gw, json!({"team_id": "t1"})).await;
    assert_eq!(chat(&gw, &key, "gpt-4o").await.status, 200);
    assert_budget_exceeded(
        &chat(&gw, &key, "gpt-4o").await,
        "Budget has been exceeded! Team=t1 Current cost: 0.025, Max budget: 0.03",
    );
    let m = scrape(&gw).await;
    let remaining = metric_value(
        &m,
        "litellm_remaining_team_budget_metric",
        &["team=\"t1\"", "team_alias=\"platform\""],
    )
    .unwrap();
    assert!((remaining - (0.03 - CALL_COST)).abs() < 1e-9, "{m}");

    // The master key, for end user cust-1: six at once, one fits.
    let auth = format!("Bearer {MASTER}");
    let headers = [
        ("content-type", "application/json"),
        ("authorization", auth.as_str()),
        ("x-litellm-end-user-id", "cust-1"),
    ];
    let body = chat_body("gpt-4o");
    let as_end_user = || gw.post_with("/v1/chat/completions", &headers, &body);
    let answers = futures_util::future::join_all((0..6).map(|_| as_end_user())).await;
    let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    for r in answers.iter().filter(|r| r.status != 200) {
        assert_budget_exceeded(r, "ExceededBudget: End User=cust-1 over budget.");
    }
    // Another end user (no budget) is not held back.
    let other = gw
        .post_with(
            "/v1/chat/completions",
            &[
                ("content-type", "application/json"),
                ("authorization", &format!("Bearer {MASTER}")),
                ("x-litellm-end-user-id", "cust-2"),
            ],
            &chat_body("gpt-4o"),
        )
        .await;
    assert_eq!(other.status, 200);
}

/// A key's soft budget (in its budget row, as LiteLLM's `/key/generate` stores it) is reported
/// once per window when crossed and never blocks.
#[tokio::test]
async fn a_soft_budget_is_reported_once_and_never_blocks() {
    let db = db_path();
    let store = Store::open(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let key = "sk-soft-budget-key-000001";
    let hash = hex(&hash_key(key));
    store
        .upsert_key(&KeyRow {
            token: hash.clone(),
            ..KeyRow::default()
        })
        .await
        .unwrap();
    for sql in [
        "INSERT INTO \"LiteLLM_BudgetTable\" (budget_id, soft_budget, created_by, updated_by) VALUES ('kb', 0.02, 'test', 'test')".to_string(),
        format!("UPDATE \"LiteLLM_VerificationToken\" SET budget_id = 'kb' WHERE token = '{hash}'"),
    ] {
        store.execute(&sql).await.unwrap();
    }
    let up = upstream(Duration::ZERO).await;
    let gw = Gateway::start(&config(&up, &db, ""));
    for _ in 0..4 {
        assert_eq!(chat(&gw, key, "gpt-4o").await.status, 200);
    }
    let m = scrape(&gw).await;
    assert_eq!(
        metric_value(&m, "switchboard_budget_soft_crossed_total", &[]),
        Some(1.0),
        "{m}"
    );
    gw.wait_for_stderr("crossed its soft budget").await;
}

/// A team's `soft_budget` (set through `/team/new`) is reported once per window and never
/// blocks its keys; the team's hard budget is not involved.
#[tokio::test]
async fn a_team_soft_budget_is_reported_once_and_never_blocks() {
    let up = upstream(Duration::ZERO).await;
    let gw = Gateway::start(&config(&up, &db_path(), ""));
    let r = admin(
        &gw,
        "/team/new",
        json!({"team_id": "soft-team", "soft_budget": CALL_COST * 1.5}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["soft_budget"], CALL_COST * 1.5);
    let key = generate(&gw, json!({"team_id": "soft-team"})).await;
    for _ in 0..4 {
        assert_eq!(chat(&gw, &key, "gpt-4o").await.status, 200);
    }
    let m = scrape(&gw).await;
    assert_eq!(
        metric_value(&m, "switchboard_budget_soft_crossed_total", &[]),
        Some(1.0),
        "{m}"
    );
    let info = gw
        .get(
            "/team/info?team_id=soft-team",
            &[("authorization", &format!("Bearer {MASTER}"))],
        )
        .await;
    assert_eq!(info.status, 200, "{}", info.text());
}
