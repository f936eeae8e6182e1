//! Virtual keys end to end through the running gateway, on a real SQLite file and on a real
//! Postgres server the test starts: LiteLLM's admin API (`/key/*`), the key check on calls
//! with LiteLLM's rejections, keys shared by instances on one database, a database LiteLLM
//! made, no database query for unknown keys, and spend written behind and drained on SIGTERM
//! and SIGHUP.

#[path = "support/postgres.rs"]
mod postgres;
mod support;

use postgres::Postgres;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::*;
use switchboard::keys::{hash_key, hex};
use switchboard::store::Store;

const MASTER: &str = "sk-master-1234";

async fn upstream() -> MockUpstream {
    MockUpstream::start(|_| Reply::json(200, openai::completion("hello"))).await
}

/// Two groups on one upstream, a master key, and `general` extra lines (indented 2).
fn config(up: &MockUpstream, general: &str) -> String {
    format!(
        "model_list:\n  - model_name: gpt-4o\n    litellm_params: {{model: openai/gpt-4o, api_base: \"{b}/v1\", api_key: sk-up}}\n  - model_name: gpt-4o-mini\n    litellm_params: {{model: openai/gpt-4o-mini, api_base: \"{b}/v1\", api_key: sk-up}}\ngeneral_settings:\n  master_key: {MASTER}\n{general}",
        b = up.base()
    )
}

async fn admin(gw: &Gateway, path: &str, body: Value) -> Response {
    gw.post_as(MASTER, path, &body).await
}

async fn admin_get(gw: &Gateway, path: &str) -> Response {
    gw.get_as(MASTER, path).await
}

async fn chat(gw: &Gateway, key: &str, model: &str) -> Response {
    gw.chat_as(key, model).await
}

fn error_of(resp: &Response, status: u16) -> (String, String) {
    let e = resp.expect_error(status);
    (
        e["type"].as_str().unwrap_or_default().to_string(),
        e["message"].as_str().unwrap_or_default().to_string(),
    )
}

async fn generate(gw: &Gateway, body: Value) -> String {
    let r = admin(gw, "/key/generate", body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let key = r.json()["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("sk-") && key.len() == 25, "{key}");
    assert_eq!(r.json()["token_id"], hex(&hash_key(&key)).as_str());
    key
}

/// generate → call → info/list → block → 401 → unblock → ok → models → delete → 401; and the
/// admin API's refusals.
async fn key_lifecycle(gw: &Gateway) {
    let key = generate(
        gw,
        json!({"key_alias": "alpha", "models": ["gpt-4o", "gpt-4o-mini"], "metadata": {"owner": "t"}, "tpm_limit": 100}),
    )
    .await;
    let hash = hex(&hash_key(&key));
    let ok = chat(gw, &key, "gpt-4o").await;
    assert_eq!(ok.status, 200, "{}", ok.text());

    let info = admin_get(gw, &format!("/key/info?key={key}")).await;
    assert_eq!(info.status, 200, "{}", info.text());
    let info = info.json();
    assert_eq!(info["info"]["token"], hash.as_str());
    assert_eq!(info["info"]["key_alias"], "alpha");
    assert_eq!(info["info"]["tpm_limit"], 100);
    assert_eq!(info["info"]["metadata"]["owner"], "t");
    let list = admin_get(gw, "/key/list").await.json();
    assert!(
        list["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k == &json!(hash)),
        "{list}"
    );
    assert_eq!(list["current_page"], 1);

    let blocked = admin(gw, "/key/block", json!({"key": key})).await;
    assert_eq!(blocked.status, 200, "{}", blocked.text());
    assert_eq!(blocked.json()["blocked"], true);
    let (ty, msg) = error_of(&chat(gw, &key, "gpt-4o").await, 401);
    assert_eq!(ty, "auth_error");
    assert!(
        msg.starts_with(
            "Authentication Error, Key is blocked. Update via `/key/unblock` if you're an admin."
        ),
        "{msg}"
    );
    admin(gw, "/key/unblock", json!({"key": key})).await;
    assert_eq!(chat(gw, &key, "gpt-4o").await.status, 200);

    // Narrow the models: the other group is refused.
    let upd = admin(
        gw,
        "/key/update",
        json!({"key": key, "models": ["gpt-4o-mini"]}),
    )
    .await;
    assert_eq!(upd.status, 200, "{}", upd.text());
    let (ty, _) = error_of(&chat(gw, &key, "gpt-4o").await, 401);
    assert_eq!(ty, "key_model_access_denied");
    assert_eq!(chat(gw, &key, "gpt-4o-mini").await.status, 200);

    // Only the master key manages keys.
    let r = gw
        .post_with(
            "/key/generate",
            &[("authorization", &format!("Bearer {key}"))],
            b"{}",
        )
        .await;
    assert_eq!(error_of(&r, 401).0, "auth_error");
    // Bad input names the field; an unknown key is 404.
    let r = admin(gw, "/key/generate", json!({"duration": "soon"})).await;
    assert_eq!(r.expect_error(400)["param"], "duration");
    let r = admin(gw, "/key/generate", json!({"key_alias": "alpha"})).await;
    assert_eq!(r.expect_error(400)["param"], "key_alias");
    let r = admin(gw, "/key/block", json!({"key": "sk-nope"})).await;
    r.expect_error(404);
    admin_get(gw, "/key/info?key=sk-nope")
        .await
        .expect_error(404);

    let del = admin(gw, "/key/delete", json!({"keys": [key]})).await;
    assert_eq!(del.status, 200, "{}", del.text());
    assert_eq!(del.json()["deleted_keys"], json!([key]));
    let (ty, msg) = error_of(&chat(gw, &key, "gpt-4o").await, 401);
    assert_eq!(ty, "auth_error");
    assert!(
        msg.starts_with("Authentication Error, Invalid proxy server token passed."),
        "{msg}"
    );
    // No key at all.
    let r = gw
        .post_with("/v1/chat/completions", &[], br#"{"model":"gpt-4o"}"#)
        .await;
    assert!(error_of(&r, 401)
        .1
        .starts_with("Authentication Error, No api key passed in."));
    // The master key still calls.
    assert_eq!(chat(gw, MASTER, "gpt-4o").await.status, 200);
}

#[tokio::test]
async fn key_lifecycle_on_sqlite() {
    let up = upstream().await;
    let gw = Gateway::start(&config(&up, ""));
    // No database_url: the embedded store is created in the state directory.
    assert!(gw.dir.join("switchboard.db").exists());
    key_lifecycle(&gw).await;
}

#[tokio::test]
async fn key_lifecycle_on_postgres() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.create_db("lifecycle");
    let up = upstream().await;
    let gw = Gateway::start(&config(&up, &format!("  database_url: {url}\n")));
    key_lifecycle(&gw).await;
    // The keys live in LiteLLM's table.
    let store = Store::open(&url).await.unwrap();
    let n = store
        .scalar_f64("SELECT COUNT(*)::float8 FROM \"LiteLLM_VerificationToken\"")
        .await
        .unwrap();
    assert_eq!(n, 0.0, "the lifecycle deleted its key");
}

#[tokio::test]
async fn expired_keys_are_refused_and_aliases_map_to_groups() {
    let up = upstream().await;
    let gw = Gateway::start(&config(&up, ""));
    let key = generate(&gw, json!({"duration": "1s"})).await;
    assert_eq!(chat(&gw, &key, "gpt-4o").await.status, 200);
    let mut last = None;
    let expired = wait_until_async(
        async || {
            let r = chat(&gw, &key, "gpt-4o").await;
            let done = r.status == 401;
            last = Some(r);
            done
        },
        Duration::from_secs(10),
    )
    .await;
    assert!(expired);
    let (ty, msg) = error_of(last.as_ref().unwrap(), 401);
    assert_eq!(ty, "expired_key");
    assert!(
        msg.starts_with("Authentication Error - Expired Key. Key Expiry time"),
        "{msg}"
    );

    let key = generate(
        &gw,
        json!({"models": ["gpt-4o-mini"], "aliases": {"fast": "gpt-4o-mini"}}),
    )
    .await;
    let before = up.count();
    let r = chat(&gw, &key, "fast").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.count(), before + 1);
    assert_eq!(up.last().json()["model"], "gpt-4o-mini");
    assert_eq!(
        error_of(&chat(&gw, &key, "gpt-4o").await, 401).0,
        "key_model_access_denied"
    );
}

#[tokio::test]
async fn a_key_made_on_one_instance_works_on_another_sharing_postgres() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.create_db("shared");
    let up = upstream().await;
    let yaml = config(&up, &format!("  database_url: {url}\n"));
    let a = Gateway::start(&yaml);
    let b = Gateway::start(&yaml);
    let key = generate(&a, json!({"key_alias": "shared"})).await;
    let made = Instant::now();
    let accepted = wait_until_async(
        async || chat(&b, &key, "gpt-4o").await.status == 200,
        Duration::from_secs(10),
    )
    .await;
    let took = made.elapsed();
    assert!(accepted, "instance B never accepted the key");
    // The documented bound is the refresh interval (2 s); allow for a slow machine.
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // A block on B reaches A the same way.
    admin(&b, "/key/block", json!({"key": key})).await;
    assert!(
        wait_until_async(
            async || chat(&a, &key, "gpt-4o").await.status == 401,
            Duration::from_secs(10)
        )
        .await
    );
}

#[tokio::test]
async fn a_database_litellm_made_works_and_gets_our_spend() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.create_db("litellm");
    // The tables exactly as LiteLLM's Prisma made them, before Switchboard ever connects.
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(include_str!(
        "fixtures/litellm_schema.sql"
    )))
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    let store = Store::open(&url).await.unwrap();
    let key = "sk-made-by-litellm-0001";
    let hash = hex(&hash_key(key));
    store
        .execute(&format!(
            "INSERT INTO \"LiteLLM_VerificationToken\" (token, key_name, key_alias, models, spend, metadata, user_id, created_at, updated_at) \
             VALUES ('{hash}', 'sk-...0001', 'legacy', ARRAY['gpt-4o']::TEXT[], 1.5, '{{\"from\": \"litellm\"}}', 'u-1', now(), now()); \
             INSERT INTO \"LiteLLM_UserTable\" (user_id, spend) VALUES ('u-1', 2.0);"
        ))
        .await
        .unwrap();
    let up = upstream().await;
    let gw = Gateway::start(&config(
        &up,
        &format!("  database_url: {url}\n  proxy_batch_write_at: 0.2\n"),
    ));
    let r = chat(&gw, key, "gpt-4o").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        error_of(&chat(&gw, key, "gpt-4o-mini").await, 401).0,
        "key_model_access_denied"
    );
    let info = admin_get(&gw, &format!("/key/info?key={key}")).await.json();
    assert_eq!(info["info"]["metadata"]["from"], "litellm");
    let logged = format!(
        "SELECT COUNT(*)::float8 FROM \"LiteLLM_SpendLogs\" WHERE api_key = '{hash}' AND call_type = 'acompletion' AND \"user\" = 'u-1' AND model_group = 'gpt-4o' AND total_tokens = 18 AND requester_ip_address = '127.0.0.1'"
    );
    assert!(
        wait_until_async(
            async || store.scalar_f64(&logged).await.unwrap() == 1.0,
            Duration::from_secs(10)
        )
        .await,
        "the call is logged (the refused one is not)"
    );
    // gpt-4o is priced: the key's and the user's spend grew past what LiteLLM had.
    let key_spend = store
        .scalar_f64(&format!(
            "SELECT spend FROM \"LiteLLM_VerificationToken\" WHERE token = '{hash}'"
        ))
        .await
        .unwrap();
    assert!(key_spend > 1.5, "{key_spend}");
    let user_spend = store
        .scalar_f64("SELECT spend FROM \"LiteLLM_UserTable\" WHERE user_id = 'u-1'")
        .await
        .unwrap();
    assert!(user_spend > 2.0, "{user_spend}");
    // LiteLLM's own columns are still there, untouched.
    let n = store
        .scalar_f64("SELECT COUNT(*)::float8 FROM information_schema.columns WHERE table_name = 'LiteLLM_VerificationToken' AND column_name IN ('rotation_count', 'budget_limits', 'router_settings')")
        .await
        .unwrap();
    assert_eq!(n, 3.0);
}

#[tokio::test]
async fn a_flood_of_random_keys_sends_no_database_query() {
    let up = upstream().await;
    let gw = Gateway::start(&config(&up, ""));
    let queries = async || {
        let scrape = gw.get("/metrics", &[]).await.text();
        metric_value(
            &scrape,
            "switchboard_store_queries_total",
            &["kind=\"other\""],
        )
        .expect("the store's query counter is exported")
    };
    let before = queries().await;
    for i in 0..300 {
        let r = chat(&gw, &format!("sk-random-{i}-{}", i * 7919), "gpt-4o").await;
        assert_eq!(r.status, 401);
    }
    assert_eq!(
        queries().await,
        before,
        "an unknown key must not reach the database"
    );
    assert_eq!(up.count(), 0);
}

async fn spend_rows(store: &Store, hash: &str) -> f64 {
    store
        .scalar_f64(&format!(
            "SELECT CAST(COUNT(*) AS REAL) FROM \"LiteLLM_SpendLogs\" WHERE api_key = '{hash}'"
        ))
        .await
        .unwrap()
}

#[tokio::test]
async fn batched_spend_is_written_on_sigterm_and_on_sighup() {
    let up = upstream().await;
    // A batch interval far beyond the test: only the drains write.
    let mut gw = Gateway::start(&config(&up, "  proxy_batch_write_at: 3600\n"));
    let key = generate(&gw, json!({})).await;
    let hash = hex(&hash_key(&key));
    let url = format!("sqlite://{}", gw.dir.join("switchboard.db").display());
    let store = Store::open(&url).await.unwrap();

    assert_eq!(chat(&gw, &key, "gpt-4o").await.status, 200);
    gw.signal("HUP");
    assert!(
        wait_until_async(
            async || spend_rows(&store, &hash).await == 1.0,
            Duration::from_secs(10)
        )
        .await,
        "SIGHUP wrote the batch"
    );

    assert_eq!(chat(&gw, &key, "gpt-4o").await.status, 200);
    assert_eq!(spend_rows(&store, &hash).await, 1.0, "not yet: batched");
    gw.signal("TERM");
    assert!(gw.exited(Duration::from_secs(15)).await.is_some());
    assert_eq!(
        spend_rows(&store, &hash).await,
        2.0,
        "SIGTERM drained the batch"
    );
    let spend = store
        .scalar_f64(&format!(
            "SELECT spend FROM \"LiteLLM_VerificationToken\" WHERE token = '{hash}'"
        ))
        .await
        .unwrap();
    assert!(spend > 0.0, "{spend}");
}
