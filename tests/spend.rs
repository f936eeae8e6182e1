//! LiteLLM's spend API through the running gateway (`/spend/logs`, `/global/spend*`) on a real
//! SQLite file and a real Postgres server, and the billing properties behind it: each call is
//! billed exactly once (retries, fallbacks, concurrent calls, a stream the client cut), the log
//! rows add up to the key's spend, and queued spend survives SIGTERM, a binary upgrade and,
//! up to the last batch interval, `kill -9`.

#[path = "support/postgres.rs"]
mod postgres;
mod support;

use postgres::Postgres;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::*;
use switchboard::keys::{hash_key, hex};
use switchboard::store::Store;

const MASTER: &str = "sk-master-1234";

fn config(base: &str, general: &str, router: &str) -> String {
    format!(
        "model_list:\n  - model_name: gpt-4o\n    litellm_params: {{model: openai/gpt-4o, api_base: \"{base}/v1\", api_key: sk-up}}\n  - model_name: gpt-4o-mini\n    litellm_params: {{model: openai/gpt-4o-mini, api_base: \"{base}/v1\", api_key: sk-up}}\ngeneral_settings:\n  master_key: {MASTER}\n{general}router_settings:\n  retry_after: 0\n{router}"
    )
}

async fn admin_post(gw: &Gateway, path: &str, body: Value) -> Response {
    gw.post_as(MASTER, path, &body).await
}

async fn admin_get(gw: &Gateway, path: &str) -> Response {
    gw.get_as(MASTER, path).await
}

async fn generate(gw: &Gateway, body: Value) -> String {
    gw.generate_key(MASTER, body).await
}

async fn chat(gw: &Gateway, key: &str, body: Value) -> Response {
    gw.post_as(key, "/v1/chat/completions", &body).await
}

fn ask(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

fn sqlite_url(gw: &Gateway) -> String {
    format!("sqlite://{}", gw.dir.join("switchboard.db").display())
}

async fn scalar(store: &Store, sql: &str) -> f64 {
    store.scalar_f64(sql).await.unwrap()
}

async fn log_rows(store: &Store) -> f64 {
    scalar(
        store,
        "SELECT CAST(COUNT(*) AS DOUBLE PRECISION) FROM \"LiteLLM_SpendLogs\"",
    )
    .await
}

fn today() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    switchboard::civil_time::iso_ms(ms)[..10].to_string()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1e-9)
}

/// Four calls by two keys on two models, one for an end user; then every spend route.
async fn spend_api(gw: &Gateway, store: &Store) {
    let a = generate(gw, json!({"key_alias": "alpha", "user_id": "u-1"})).await;
    let b = generate(gw, json!({"key_alias": "beta"})).await;
    let (ha, hb) = (hex(&hash_key(&a)), hex(&hash_key(&b)));
    let mut ids = Vec::new();
    for (key, body) in [
        (&a, ask("gpt-4o")),
        (&a, ask("gpt-4o")),
        (
            &a,
            json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "user": "end-7"}),
        ),
        (&b, ask("gpt-4o")),
    ] {
        let r = chat(gw, key, body).await;
        assert_eq!(r.status, 200, "{}", r.text());
        ids.push(r.header("x-request-id").unwrap_or_default().to_string());
    }
    // Written behind: wait for the batch.
    assert!(
        wait_until_async(
            async || log_rows(store).await == 4.0,
            Duration::from_secs(15)
        )
        .await,
        "4 spend rows"
    );

    // Rows of one key, by plaintext key or by hash.
    let rows = admin_get(gw, &format!("/spend/logs?api_key={a}")).await;
    assert_eq!(rows.status, 200, "{}", rows.text());
    let rows = rows.json();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    for r in rows {
        assert_eq!(r["api_key"], ha.as_str());
        assert!(r["spend"].as_f64().unwrap() > 0.0, "{r}");
        assert_eq!(r["total_tokens"], 18);
        assert_eq!(r["status"], "success");
        let t = r["startTime"].as_str().unwrap();
        assert!(
            t.starts_with(&today()) && t.ends_with('Z') && t.contains('T'),
            "{t}"
        );
    }
    assert_eq!(
        admin_get(gw, &format!("/spend/logs?api_key={hb}"))
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // One request by its id.
    if !ids[3].is_empty() {
        let one = admin_get(gw, &format!("/spend/logs?request_id={}", ids[3]))
            .await
            .json();
        assert_eq!(one.as_array().unwrap().len(), 1, "{one}");
        assert_eq!(one[0]["api_key"], hb.as_str());
    }
    // By user.
    let by_user = admin_get(gw, "/spend/logs?user_id=u-1").await.json();
    assert_eq!(by_user.as_array().unwrap().len(), 3, "{by_user}");
    // All rows, bounded by `limit`.
    assert_eq!(
        admin_get(gw, "/spend/logs")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        4
    );
    assert_eq!(
        admin_get(gw, "/spend/logs?limit=2")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        2
    );

    let total_a = scalar(
        store,
        &format!("SELECT spend FROM \"LiteLLM_VerificationToken\" WHERE token = '{ha}'"),
    )
    .await;
    let total_b = scalar(
        store,
        &format!("SELECT spend FROM \"LiteLLM_VerificationToken\" WHERE token = '{hb}'"),
    )
    .await;
    assert!(total_a > total_b && total_b > 0.0, "{total_a} {total_b}");

    // A day range: LiteLLM's per-day summary by default, the rows with summarize=false.
    let day = today();
    let summary = admin_get(gw, &format!("/spend/logs?start_date={day}&end_date={day}")).await;
    assert_eq!(summary.status, 200, "{}", summary.text());
    let summary = summary.json();
    assert_eq!(summary.as_array().unwrap().len(), 1, "{summary}");
    assert_eq!(summary[0]["startTime"], day.as_str());
    assert!(
        close(summary[0]["spend"].as_f64().unwrap(), total_a + total_b),
        "{summary}"
    );
    assert!(
        close(summary[0][ha.as_str()].as_f64().unwrap(), total_a),
        "{summary}"
    );
    assert!(
        summary[0]["models"]["gpt-4o-mini"].as_f64().unwrap() > 0.0,
        "{summary}"
    );
    let rows = admin_get(
        gw,
        &format!("/spend/logs?start_date={day}&end_date={day}&summarize=false"),
    )
    .await
    .json();
    assert_eq!(rows.as_array().unwrap().len(), 4, "{rows}");
    let none = admin_get(
        gw,
        "/spend/logs?start_date=2000-01-01&end_date=2000-01-02&summarize=false",
    )
    .await
    .json();
    assert_eq!(none, json!([]));

    // Global sums.
    let global = admin_get(gw, "/global/spend").await.json();
    assert!(
        close(global["spend"].as_f64().unwrap(), total_a + total_b),
        "{global}"
    );
    let keys = admin_get(gw, "/global/spend/keys").await.json();
    assert_eq!(keys.as_array().unwrap().len(), 2, "{keys}");
    assert_eq!(
        keys[0]["api_key"],
        ha.as_str(),
        "highest spend first: {keys}"
    );
    assert_eq!(keys[0]["key_alias"], "alpha");
    assert!(close(keys[0]["total_spend"].as_f64().unwrap(), total_a));
    assert_eq!(
        admin_get(gw, "/global/spend/keys?limit=1")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let models = admin_get(gw, "/global/spend/models").await.json();
    let names: Vec<&str> = models
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["model"].as_str())
        .collect();
    assert_eq!(names.len(), 2, "{models}");
    assert!(names.iter().any(|m| m.contains("gpt-4o-mini")), "{models}");
    let teams = admin_get(gw, "/global/spend/teams").await.json();
    assert_eq!(teams["teams"], json!(["Unassigned"]), "{teams}");
    assert_eq!(teams["daily_spend"][0]["date"], day.as_str());
    let end_users = admin_post(gw, "/global/spend/end_users", json!({"api_key": a})).await;
    assert_eq!(end_users.status, 200, "{}", end_users.text());
    let end_users = end_users.json();
    assert!(
        end_users
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["end_user"] == "end-7" && e["total_count"] == 1),
        "{end_users}"
    );

    // Bad input names the parameter; only the master key may read spend.
    for (path, param) in [
        (
            "/spend/logs?start_date=2024-13-01&end_date=2024-12-01",
            "start_date",
        ),
        ("/spend/logs?start_date=2024-01-01", "end_date"),
        (
            "/spend/logs?start_date=2024-01-02&end_date=2024-01-01",
            "end_date",
        ),
        ("/spend/logs?limit=0", "limit"),
        ("/spend/logs?summarize=maybe", "summarize"),
        ("/global/spend/keys?limit=x", "limit"),
    ] {
        let r = admin_get(gw, path).await;
        let e = r.expect_error(400);
        assert_eq!(e["param"], param, "{path}: {e}");
    }
    let r = gw
        .get("/spend/logs", &[("authorization", &format!("Bearer {a}"))])
        .await;
    assert!(r.status == 401 || r.status == 403, "{}", r.text());
}

#[tokio::test]
async fn spend_api_on_sqlite() {
    let up = MockUpstream::start(|_| Reply::json(200, openai::completion("hello"))).await;
    let gw = Gateway::start(&config(&up.base(), "  proxy_batch_write_at: 1\n", ""));
    let store = Store::open(&sqlite_url(&gw)).await.unwrap();
    spend_api(&gw, &store).await;
}

#[tokio::test]
async fn spend_api_on_postgres() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.create_db("spendapi");
    let up = MockUpstream::start(|_| Reply::json(200, openai::completion("hello"))).await;
    let gw = Gateway::start(&config(
        &up.base(),
        &format!("  proxy_batch_write_at: 1\n  database_url: {url}\n"),
        "",
    ));
    let store = Store::open(&url).await.unwrap();
    spend_api(&gw, &store).await;
}

/// A retried call, a call answered by its fallback, and 24 concurrent calls: one row each, and
/// the rows add up to the key's spend.
#[tokio::test]
async fn each_call_is_billed_once_through_retries_fallbacks_and_concurrency() {
    // gpt-4o fails its first attempt of each call with a 500 (the retry answers); gpt-4o-mini
    // always fails, so its calls go to the fallback.
    let seen = Arc::new(AtomicUsize::new(0));
    let s = seen.clone();
    let up = MockUpstream::start(move |req| {
        let body = req.json();
        let model = body["model"].as_str().unwrap_or_default().to_string();
        let retry_mark = body["messages"][0]["content"] == "retry-me";
        if model == "gpt-4o-mini"
            || (retry_mark && s.fetch_add(1, Ordering::SeqCst).is_multiple_of(2))
        {
            return Reply::json(
                500,
                json!({"error": {"message": "boom", "type": "server_error"}}),
            );
        }
        Reply::json(200, openai::completion("ok"))
    })
    .await;
    let gw = Gateway::start(&config(
        &up.base(),
        "  proxy_batch_write_at: 1\n",
        "  num_retries: 1\n  fallbacks: [{gpt-4o-mini: [gpt-4o]}]\n",
    ));
    let store = Store::open(&sqlite_url(&gw)).await.unwrap();
    let key = generate(&gw, json!({})).await;
    let hash = hex(&hash_key(&key));

    let r = chat(
        &gw,
        &key,
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "retry-me"}]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let retried = r.header("x-request-id").unwrap().to_string();
    let r = chat(&gw, &key, ask("gpt-4o-mini")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-litellm-attempted-fallbacks"), Some("1"));
    let fell_back = r.header("x-request-id").unwrap().to_string();

    let calls: Vec<_> = (0..24)
        .map(|_| {
            let (port, key) = (gw.port, key.clone());
            tokio::spawn(async move {
                let body = ask("gpt-4o").to_string();
                let auth = format!("Bearer {key}");
                request(
                    port,
                    "POST",
                    "/v1/chat/completions",
                    &[
                        ("content-type", "application/json"),
                        ("authorization", &auth),
                    ],
                    body.as_bytes(),
                )
                .await
            })
        })
        .collect();
    for c in calls {
        assert_eq!(c.await.unwrap().status, 200);
    }
    assert!(
        wait_until_async(
            async || log_rows(&store).await == 26.0,
            Duration::from_secs(15)
        )
        .await,
        "26 calls, 26 rows: {}",
        log_rows(&store).await
    );
    for id in [&retried, &fell_back] {
        let n = scalar(&store, &format!("SELECT CAST(COUNT(*) AS DOUBLE PRECISION) FROM \"LiteLLM_SpendLogs\" WHERE request_id = '{id}'")).await;
        assert_eq!(n, 1.0, "{id} billed once");
    }
    // The fallback's row names the model that answered, under the group the client asked for.
    let rows = admin_get(&gw, &format!("/spend/logs?request_id={fell_back}"))
        .await
        .json();
    assert_eq!(rows[0]["model"], "gpt-4o", "{rows}");
    assert_eq!(rows[0]["model_group"], "gpt-4o-mini", "{rows}");
    let logged = scalar(&store, "SELECT SUM(spend) FROM \"LiteLLM_SpendLogs\"").await;
    // The key's total is written in the same batch transaction as its rows.
    assert!(
        wait_until_async(
            async || close(
                scalar(
                    &store,
                    &format!(
                        "SELECT spend FROM \"LiteLLM_VerificationToken\" WHERE token = '{hash}'"
                    )
                )
                .await,
                logged
            ),
            Duration::from_secs(5)
        )
        .await,
        "log rows add up to the key's spend"
    );
    assert!(logged > 0.0);
    // Six-and-twenty rows, and the /key/info spend agrees.
    let info = admin_get(&gw, &format!("/key/info?key={key}")).await.json();
    assert!(
        close(info["info"]["spend"].as_f64().unwrap(), logged),
        "{info}"
    );
}

/// A stream the client leaves after the first words is billed once, for what was generated.
#[tokio::test]
async fn a_stream_the_client_cut_is_billed_once() {
    let words: Vec<String> = (0..200).map(|i| format!("w{i} ")).collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let body = openai::sse(&words, true);
    let up = MockUpstream::start(move |_| {
        Reply::stream("text/event-stream", &body, 200, Duration::from_millis(20))
    })
    .await;
    let gw = Gateway::start(&config(&up.base(), "  proxy_batch_write_at: 1\n", ""));
    let store = Store::open(&sqlite_url(&gw)).await.unwrap();
    let key = generate(&gw, json!({})).await;
    let mut conn = Conn::connect(gw.port).await;
    let auth = format!("Bearer {key}");
    conn.send_head_and_body(
        "POST",
        "/v1/chat/completions",
        &[
            ("content-type", "application/json"),
            ("authorization", &auth),
        ],
        json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "hi"}]})
            .to_string()
            .as_bytes(),
    )
    .await;
    let mut stream = conn.read_streaming().await;
    assert_eq!(stream.status, 200);
    assert!(stream.next_chunk().await.is_some());
    assert!(stream.next_chunk().await.is_some());
    stream.hang_up();
    assert!(
        wait_until_async(
            async || log_rows(&store).await == 1.0,
            Duration::from_secs(15)
        )
        .await,
        "the cut stream is billed"
    );
    let spend = scalar(&store, "SELECT spend FROM \"LiteLLM_SpendLogs\"").await;
    assert!(spend > 0.0, "bills what was generated: {spend}");
    // Nothing more arrives for it later.
    let rows = admin_get(&gw, "/spend/logs").await.json();
    assert_eq!(rows.as_array().unwrap().len(), 1, "{rows}");
}

/// Queued spend is written by the old process of a binary upgrade; a `kill -9` loses at most
/// the batch not yet written, never one already flushed.
#[tokio::test]
async fn spend_survives_an_upgrade_and_kill_9_loses_at_most_one_batch() {
    let up = MockUpstream::start(|_| Reply::json(200, openai::completion("hello"))).await;
    let yaml = format!(
        "{}switchboard:\n  threads: 2\n  grace_period_seconds: 0\n  graceful_shutdown_timeout_seconds: 5\n",
        config(&up.base(), "  proxy_batch_write_at: 3600\n", "")
    );
    let mut old = Gateway::start(&yaml);
    let store = Store::open(&sqlite_url(&old)).await.unwrap();
    let key = generate(&old, json!({})).await;
    for _ in 0..3 {
        assert_eq!(chat(&old, &key, ask("gpt-4o")).await.status, 200);
    }
    assert_eq!(log_rows(&store).await, 0.0, "batched, not yet written");
    let mut new = old.spawn_upgrade();
    new.wait_for_stderr("No incoming socket transfer").await;
    old.signal("QUIT");
    assert!(old.exited(Duration::from_secs(15)).await.is_some());
    assert_eq!(
        log_rows(&store).await,
        3.0,
        "the old process wrote its batch on the way out"
    );

    // The new process serves the same store; a SIGHUP flushes its batch, then a call that is
    // still queued when the process is killed is the only loss.
    assert_eq!(chat(&new, &key, ask("gpt-4o")).await.status, 200);
    new.signal("HUP");
    assert!(
        wait_until_async(
            async || log_rows(&store).await == 4.0,
            Duration::from_secs(10)
        )
        .await,
        "flushed batch"
    );
    assert_eq!(chat(&new, &key, ask("gpt-4o")).await.status, 200);
    new.signal("KILL");
    assert!(new.exited(Duration::from_secs(10)).await.is_some());
    assert_eq!(
        log_rows(&store).await,
        4.0,
        "flushed rows survive kill -9; only the open batch is lost"
    );
}
