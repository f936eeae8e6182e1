//! Teams, users, end users (customers) and budgets end to end through the running gateway, on
//! a real SQLite file and on a real Postgres server: LiteLLM's admin API (`/team/*`,
//! `/user/*`, `/customer/*` and `/end_user/*`, `/budget/*`), their checks on calls (blocked
//! team, team and user model lists, blocked end user by `user` and by
//! `x-litellm-end-user-id`), spend added to the team, user, membership and end user rows,
//! changes shared by instances on one database, and a database LiteLLM made.

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

fn config(up: &MockUpstream, general: &str) -> String {
    format!(
        "model_list:\n  - model_name: gpt-4o\n    litellm_params: {{model: openai/gpt-4o, api_base: \"{b}/v1\", api_key: sk-up}}\n  - model_name: gpt-4o-mini\n    litellm_params: {{model: openai/gpt-4o-mini, api_base: \"{b}/v1\", api_key: sk-up}}\ngeneral_settings:\n  master_key: {MASTER}\n{general}",
        b = up.base()
    )
}

async fn admin(gw: &Gateway, path: &str, body: Value) -> Response {
    gw.post_as(MASTER, path, &body).await
}

async fn admin_ok(gw: &Gateway, path: &str, body: Value) -> Value {
    let r = admin(gw, path, body).await;
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    r.json()
}

async fn admin_get(gw: &Gateway, path: &str) -> Response {
    gw.get_as(MASTER, path).await
}

/// A chat call with `key`; `user` in the body and/or the end-user header when given.
async fn chat_as(
    gw: &Gateway,
    key: &str,
    model: &str,
    user: Option<&str>,
    header: Option<&str>,
) -> Response {
    let auth = format!("Bearer {key}");
    let mut headers = vec![
        ("content-type", "application/json"),
        ("authorization", auth.as_str()),
    ];
    if let Some(h) = header {
        headers.push(("x-litellm-end-user-id", h));
    }
    let mut body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    if let Some(u) = user {
        body["user"] = u.into();
    }
    gw.post_with(
        "/v1/chat/completions",
        &headers,
        body.to_string().as_bytes(),
    )
    .await
}

async fn chat(gw: &Gateway, key: &str, model: &str) -> Response {
    chat_as(gw, key, model, None, None).await
}

fn error_of(resp: &Response, status: u16) -> (String, String) {
    let e = resp.expect_error(status);
    (
        e["type"].as_str().unwrap_or_default().to_string(),
        e["message"].as_str().unwrap_or_default().to_string(),
    )
}

async fn generate(gw: &Gateway, body: Value) -> String {
    gw.generate_key(MASTER, body).await
}

/// Every team, user, customer and budget route, and their effect on calls (each part boxed:
/// one debug-build future this large overflows a test thread's stack).
async fn tenant_lifecycle(gw: &Gateway) {
    let (team_id, key) = Box::pin(teams_part(gw)).await;
    Box::pin(users_part(gw)).await;
    Box::pin(customers_part(gw, &key)).await;
    Box::pin(budgets_part(gw)).await;
    Box::pin(team_delete_part(gw, &team_id, &key)).await;
}

async fn teams_part(gw: &Gateway) -> (String, String) {
    // Teams: a team limited to gpt-4o, with an admin member.
    let team = admin_ok(
        gw,
        "/team/new",
        json!({"team_alias": "search", "models": ["gpt-4o"], "max_budget": 50, "tpm_limit": 1000,
               "members_with_roles": [{"role": "admin", "user_id": "u-admin"}], "metadata": {"cc": "7"}}),
    )
    .await;
    let team_id = team["team_id"].as_str().unwrap().to_string();
    assert_eq!(team_id.len(), 36, "a generated uuid: {team_id}");
    assert_eq!(team["team_alias"], "search");
    assert_eq!(team["blocked"], false);
    assert_eq!(team["members_with_roles"][0]["user_id"], "u-admin");
    assert_eq!(team["admins"], json!(["u-admin"]));
    let key = generate(gw, json!({"team_id": team_id, "user_id": "u-admin"})).await;
    assert_eq!(chat(gw, &key, "gpt-4o").await.status, 200);
    let (ty, msg) = error_of(&chat(gw, &key, "gpt-4o-mini").await, 401);
    assert_eq!(ty, "team_model_access_denied");
    assert!(
        msg.starts_with("team not allowed to access model. This team can only access models=['gpt-4o']. Tried to access gpt-4o-mini"),
        "{msg}"
    );

    // Blocked team: LiteLLM's auth error, then works after /team/unblock.
    let blocked = admin_ok(gw, "/team/block", json!({"team_id": team_id})).await;
    assert_eq!(blocked["blocked"], true);
    let (ty, msg) = error_of(&chat(gw, &key, "gpt-4o").await, 401);
    assert_eq!(ty, "auth_error");
    assert_eq!(
        msg,
        format!("Authentication Error, Team={team_id} is blocked. Update via `/team/unblock` if you're an admin.")
    );
    admin_ok(gw, "/team/unblock", json!({"team_id": team_id})).await;
    assert_eq!(chat(gw, &key, "gpt-4o").await.status, 200);

    // Info, update, list.
    let info = admin_get(gw, &format!("/team/info?team_id={team_id}")).await;
    assert_eq!(info.status, 200, "{}", info.text());
    let info = info.json();
    assert_eq!(info["team_info"]["metadata"]["cc"], "7");
    assert_eq!(info["team_info"]["tpm_limit"], 1000);
    assert_eq!(info["keys"].as_array().unwrap().len(), 1);
    assert_eq!(info["team_memberships"][0]["user_id"], "u-admin");
    let upd = admin_ok(
        gw,
        "/team/update",
        json!({"team_id": team_id, "models": []}),
    )
    .await;
    assert_eq!(upd["team_id"], team_id.as_str());
    assert_eq!(upd["data"]["models"], json!([]));
    assert_eq!(upd["data"]["team_alias"], "search", "untouched fields stay");
    assert_eq!(chat(gw, &key, "gpt-4o-mini").await.status, 200);
    let list = admin_get(gw, "/team/list").await.json();
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|t| t["team_id"] == team_id.as_str()),
        "{list}"
    );

    // Members: add with a budget in the team, then remove.
    let added = admin_ok(
        gw,
        "/team/member_add",
        json!({"team_id": team_id, "member": {"role": "user", "user_id": "u-2"}, "max_budget_in_team": 5}),
    )
    .await;
    assert_eq!(added["updated_users"][0]["user_id"], "u-2");
    assert_eq!(added["updated_users"][0]["teams"], json!([team_id]));
    assert_eq!(
        added["updated_team_memberships"][0]["litellm_budget_table"]["max_budget"],
        5.0
    );
    let removed = admin_ok(
        gw,
        "/team/member_delete",
        json!({"team_id": team_id, "user_id": "u-2"}),
    )
    .await;
    assert!(
        !removed["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m == "u-2"),
        "{removed}"
    );
    let r = admin(
        gw,
        "/team/member_delete",
        json!({"team_id": team_id, "user_id": "u-2"}),
    )
    .await;
    r.expect_error(404);

    // Bad input names the field; unknown teams are 404.
    assert_eq!(
        admin(gw, "/team/new", json!({"models": "gpt-4o"}))
            .await
            .expect_error(400)["param"],
        "models"
    );
    assert_eq!(
        admin(gw, "/team/new", json!({"team_id": team_id}))
            .await
            .expect_error(400)["param"],
        "team_id"
    );
    assert_eq!(
        admin(gw, "/team/update", json!({})).await.expect_error(400)["param"],
        "team_id"
    );
    assert_eq!(
        admin(gw, "/team/new", json!({"budget_duration": "soon"}))
            .await
            .expect_error(400)["param"],
        "budget_duration"
    );
    admin(gw, "/team/block", json!({"team_id": "no-such-team"}))
        .await
        .expect_error(404);
    admin_get(gw, "/team/info?team_id=no-such-team")
        .await
        .expect_error(404);
    let r = admin(gw, "/key/generate", json!({"team_id": "no-such-team"})).await;
    let e = r.expect_error(404);
    assert_eq!(e["param"], "team_id");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .starts_with("Team doesn't exist in db. Team=no-such-team."),
        "{e}"
    );

    (team_id, key)
}

async fn users_part(gw: &Gateway) {
    // Users: /user/new returns a working key; a personal key follows the user's models.
    let user = admin_ok(gw, "/user/new", json!({"user_id": "u-new", "user_email": "n@example.com", "models": ["gpt-4o"], "max_budget": 20})).await;
    assert_eq!(user["user_id"], "u-new");
    assert_eq!(user["user_role"], "internal_user");
    let user_key = user["key"].as_str().unwrap().to_string();
    assert!(user_key.starts_with("sk-"), "{user}");
    assert_eq!(chat(gw, &user_key, "gpt-4o").await.status, 200);
    // The key takes the user's models, as LiteLLM's /user/new makes it.
    let (ty, _) = error_of(&chat(gw, &user_key, "gpt-4o-mini").await, 401);
    assert_eq!(ty, "key_model_access_denied");
    // Another key of the user, with no models of its own: the user's models still apply.
    let other_key = generate(gw, json!({"user_id": "u-new"})).await;
    assert_eq!(chat(gw, &other_key, "gpt-4o").await.status, 200);
    let (ty, msg) = error_of(&chat(gw, &other_key, "gpt-4o-mini").await, 401);
    assert_eq!(ty, "user_model_access_denied");
    assert!(
        msg.starts_with(
            "user not allowed to access model. This user can only access models=['gpt-4o']."
        ),
        "{msg}"
    );
    let key_info = admin_get(gw, &format!("/key/info?key={user_key}"))
        .await
        .json();
    assert_eq!(key_info["info"]["user_id"], "u-new");
    assert_eq!(
        key_info["info"]["max_budget"],
        Value::Null,
        "the budget is the user's"
    );
    let no_key = admin_ok(
        gw,
        "/user/new",
        json!({"user_id": "u-nokey", "auto_create_key": false}),
    )
    .await;
    assert_eq!(no_key["key"], Value::Null);
    let uinfo = admin_get(gw, "/user/info?user_id=u-new").await.json();
    assert_eq!(uinfo["user_info"]["max_budget"], 20.0);
    assert_eq!(uinfo["keys"].as_array().unwrap().len(), 2);
    let uupd = admin_ok(
        gw,
        "/user/update",
        json!({"user_id": "u-new", "user_alias": "Newbie"}),
    )
    .await;
    assert_eq!(uupd["data"]["user_alias"], "Newbie");
    let ulist = admin_get(gw, "/user/list").await.json();
    assert!(ulist["total"].as_u64().unwrap() >= 3, "{ulist}");
    assert_eq!(
        admin(gw, "/user/new", json!({"user_role": "boss"}))
            .await
            .expect_error(400)["param"],
        "user_role"
    );
    assert_eq!(
        admin(gw, "/user/new", json!({"user_id": "u-new"}))
            .await
            .expect_error(400)["param"],
        "user_id"
    );
    admin_get(gw, "/user/info?user_id=nobody")
        .await
        .expect_error(404);
    let del = admin_ok(gw, "/user/delete", json!({"user_ids": ["u-new"]})).await;
    assert_eq!(del["deleted_users"], json!(["u-new"]));
    let (_, msg) = error_of(&chat(gw, &user_key, "gpt-4o").await, 401);
    assert!(
        msg.starts_with("Authentication Error, Invalid proxy server token passed."),
        "the user's key went with them: {msg}"
    );
}

async fn customers_part(gw: &Gateway, key: &str) {
    let key = key.to_string();
    // Customers (end users): blocked by the body's `user` and by the header; /end_user alias.
    let c = admin_ok(
        gw,
        "/customer/new",
        json!({"user_id": "c-1", "max_budget": 3, "allowed_model_region": "eu"}),
    )
    .await;
    assert_eq!(c["litellm_budget_table"]["max_budget"], 3.0);
    assert_eq!(c["blocked"], false);
    let cinfo = admin_get(gw, "/end_user/info?end_user_id=c-1").await;
    assert_eq!(cinfo.status, 200, "{}", cinfo.text());
    assert_eq!(cinfo.json()["allowed_model_region"], "eu");
    // Pinned to the EU, c-1 cannot be served by these deployments (no region): refused, never
    // sent elsewhere (issue 17's region routing).
    let pinned = chat_as(gw, &key, "gpt-4o", Some("c-1"), None).await;
    assert_eq!(pinned.expect_error(400)["code"], "no_deployments_in_region");
    let c = admin_ok(
        gw,
        "/customer/update",
        json!({"user_id": "c-1", "allowed_model_region": null}),
    )
    .await;
    assert!(c["allowed_model_region"].is_null(), "{c}");
    assert_eq!(
        chat_as(gw, &key, "gpt-4o", Some("c-1"), None).await.status,
        200
    );
    let b = admin_ok(gw, "/customer/block", json!({"user_ids": ["c-1"]})).await;
    assert_eq!(b["blocked_users"], json!(["c-1"]));
    for (user, header) in [
        (Some("c-1"), None),
        (None, Some("c-1")),
        (Some("someone-else"), Some("c-1")),
    ] {
        let r = chat_as(gw, &key, "gpt-4o", user, header).await;
        let e = r.expect_error(400);
        assert_eq!(
            e["message"],
            "User blocked from making LLM API Calls. User=c-1"
        );
    }
    // The master key's calls are held to the same end-user block.
    chat_as(gw, MASTER, "gpt-4o", Some("c-1"), None)
        .await
        .expect_error(400);
    // An end user never seen before can be blocked ahead of its first call.
    admin_ok(gw, "/end_user/block", json!({"user_ids": ["c-future"]})).await;
    chat_as(gw, &key, "gpt-4o", Some("c-future"), None)
        .await
        .expect_error(400);
    admin_ok(gw, "/customer/unblock", json!({"user_ids": ["c-1"]})).await;
    assert_eq!(
        chat_as(gw, &key, "gpt-4o", Some("c-1"), None).await.status,
        200
    );
    let cupd = admin_ok(
        gw,
        "/customer/update",
        json!({"user_id": "c-1", "alias": "Acme", "max_budget": 4}),
    )
    .await;
    assert_eq!(cupd["alias"], "Acme");
    assert_eq!(cupd["litellm_budget_table"]["max_budget"], 4.0);
    let clist = admin_get(gw, "/customer/list").await.json();
    assert!(
        clist
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["user_id"] == "c-1"),
        "{clist}"
    );
    assert_eq!(
        admin(gw, "/customer/new", json!({}))
            .await
            .expect_error(400)["param"],
        "user_id"
    );
    assert_eq!(
        admin(gw, "/customer/new", json!({"user_id": "c-1"}))
            .await
            .expect_error(400)["param"],
        "user_id"
    );
    assert_eq!(
        admin(
            gw,
            "/customer/new",
            json!({"user_id": "c-2", "allowed_model_region": "mars"})
        )
        .await
        .expect_error(400)["param"],
        "allowed_model_region"
    );
    admin_get(gw, "/customer/info?end_user_id=nobody")
        .await
        .expect_error(404);
    let cdel = admin_ok(gw, "/customer/delete", json!({"user_ids": ["c-1"]})).await;
    assert_eq!(cdel["deleted_customers"], 1);
    admin_get(gw, "/customer/info?end_user_id=c-1")
        .await
        .expect_error(404);
}

async fn budgets_part(gw: &Gateway) {
    // Budgets.
    let bud = admin_ok(
        gw,
        "/budget/new",
        json!({"budget_id": "b-1", "max_budget": 10, "budget_duration": "30d", "tpm_limit": 5}),
    )
    .await;
    assert_eq!(bud["budget_id"], "b-1");
    assert_eq!(bud["budget_duration"], "30d");
    let binfo = admin_ok(gw, "/budget/info", json!({"budgets": ["b-1"]})).await;
    assert_eq!(binfo[0]["max_budget"], 10.0);
    let bupd = admin_ok(
        gw,
        "/budget/update",
        json!({"budget_id": "b-1", "soft_budget": 5}),
    )
    .await;
    assert_eq!(bupd["soft_budget"], 5.0);
    assert_eq!(bupd["max_budget"], 10.0);
    // A customer on a shared budget sees the budget's changes.
    let c3 = admin_ok(
        gw,
        "/customer/new",
        json!({"user_id": "c-3", "budget_id": "b-1"}),
    )
    .await;
    assert_eq!(c3["litellm_budget_table"]["soft_budget"], 5.0);
    let blist = admin_get(gw, "/budget/list").await.json();
    assert!(
        blist
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["budget_id"] == "b-1"),
        "{blist}"
    );
    assert_eq!(
        admin(gw, "/budget/new", json!({"max_budget": -1}))
            .await
            .expect_error(400)["param"],
        "max_budget"
    );
    admin(gw, "/budget/update", json!({"budget_id": "b-none"}))
        .await
        .expect_error(404);
    assert_eq!(
        admin(
            gw,
            "/customer/new",
            json!({"user_id": "c-4", "budget_id": "b-none"})
        )
        .await
        .expect_error(404)["param"],
        "budget_id"
    );
    let bdel = admin_ok(gw, "/budget/delete", json!({"id": "b-1"})).await;
    assert_eq!(bdel["budget_id"], "b-1");
    admin(gw, "/budget/info", json!({"budgets": ["b-1"]}))
        .await
        .expect_error(404);
}

async fn team_delete_part(gw: &Gateway, team_id: &str, key: &str) {
    // Only the master key manages tenants.
    let r = gw
        .post_with(
            "/team/new",
            &[("authorization", &format!("Bearer {key}"))],
            b"{}",
        )
        .await;
    assert_eq!(error_of(&r, 401).0, "auth_error");

    // Deleting a team deletes its keys, as LiteLLM does.
    let del = admin_ok(gw, "/team/delete", json!({"team_ids": [team_id]})).await;
    assert_eq!(del["deleted_teams"], json!([team_id]));
    let (_, msg) = error_of(&chat(gw, key, "gpt-4o").await, 401);
    assert!(
        msg.starts_with("Authentication Error, Invalid proxy server token passed."),
        "{msg}"
    );
    admin(gw, "/team/delete", json!({"team_ids": [team_id]}))
        .await
        .expect_error(404);
}

#[tokio::test]
async fn tenant_admin_api_on_sqlite() {
    let up = upstream().await;
    let gw = Gateway::start(&config(&up, ""));
    tenant_lifecycle(&gw).await;
}

#[tokio::test]
async fn tenant_admin_api_on_postgres() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.create_db("tenants");
    let up = upstream().await;
    let gw = Gateway::start(&config(&up, &format!("  database_url: {url}\n")));
    tenant_lifecycle(&gw).await;
    let store = Store::open(&url).await.unwrap();
    let n = store
        .scalar_f64("SELECT COUNT(*)::float8 FROM \"LiteLLM_TeamTable\"")
        .await
        .unwrap();
    assert_eq!(n, 0.0, "the lifecycle deleted its team");
    let n = store
        .scalar_f64("SELECT COUNT(*)::float8 FROM \"LiteLLM_UserTable\" WHERE user_id IN ('u-admin', 'u-2', 'u-nokey')")
        .await
        .unwrap();
    assert_eq!(n, 3.0, "users live in LiteLLM's table");
}

async fn scalar(store: &Store, sql: &str) -> f64 {
    store.scalar_f64(sql).await.unwrap_or(-1.0)
}

/// Spend reaches the key, team, user, membership and end user rows (the end user's row is
/// created on its first call), and the in-memory totals the admin API shows.
#[tokio::test]
async fn spend_is_added_to_team_user_membership_and_end_user() {
    let up = upstream().await;
    let gw = Gateway::start(&config(&up, "  proxy_batch_write_at: 0.2\n"));
    let team = admin_ok(&gw, "/team/new", json!({"team_id": "t-spend", "members_with_roles": [{"role": "user", "user_id": "u-spend"}]})).await;
    assert_eq!(team["team_id"], "t-spend");
    let key = generate(&gw, json!({"team_id": "t-spend", "user_id": "u-spend"})).await;
    let hash = hex(&hash_key(&key));
    for _ in 0..2 {
        let r = chat_as(&gw, &key, "gpt-4o", Some("cust-new"), None).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let url = format!("sqlite://{}", gw.dir.join("switchboard.db").display());
    let store = Store::open(&url).await.unwrap();
    // Both calls' rows are in (each batch is one transaction with its totals).
    let written = wait_until_async(
        async || {
            scalar(
                &store,
                "SELECT CAST(COUNT(*) AS REAL) FROM \"LiteLLM_SpendLogs\"",
            )
            .await
                == 2.0
        },
        Duration::from_secs(10),
    )
    .await;
    assert!(written, "both calls were written");
    let key_spend = scalar(
        &store,
        &format!("SELECT spend FROM \"LiteLLM_VerificationToken\" WHERE token = '{hash}'"),
    )
    .await;
    assert!(key_spend > 0.0);
    let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
    for (what, sql) in [
        ("team", "SELECT spend FROM \"LiteLLM_TeamTable\" WHERE team_id = 't-spend'"),
        ("user", "SELECT spend FROM \"LiteLLM_UserTable\" WHERE user_id = 'u-spend'"),
        ("membership", "SELECT spend FROM \"LiteLLM_TeamMembership\" WHERE team_id = 't-spend' AND user_id = 'u-spend'"),
        ("end user", "SELECT spend FROM \"LiteLLM_EndUserTable\" WHERE user_id = 'cust-new'"),
    ] {
        let spend = scalar(&store, sql).await;
        assert!(close(spend, key_spend), "{what}: {spend} vs the key's {key_spend}");
    }
    // In memory at once (settle), and the new end user after the refresh loads its row.
    let info = admin_get(&gw, "/team/info?team_id=t-spend").await.json();
    assert!(
        close(info["team_info"]["spend"].as_f64().unwrap(), key_spend),
        "{info}"
    );
    assert!(
        close(
            info["team_memberships"][0]["spend"].as_f64().unwrap(),
            key_spend
        ),
        "{info}"
    );
    let loaded = wait_until_async(
        async || {
            admin_get(&gw, "/customer/info?end_user_id=cust-new")
                .await
                .status
                == 200
        },
        Duration::from_secs(10),
    )
    .await;
    assert!(
        loaded,
        "the lazily created end user is loaded by the refresh"
    );
    let c = admin_get(&gw, "/customer/info?end_user_id=cust-new")
        .await
        .json();
    assert!(close(c["spend"].as_f64().unwrap(), key_spend), "{c}");
    // The third call adds to the now-known end user in memory as well.
    assert_eq!(
        chat_as(&gw, &key, "gpt-4o", Some("cust-new"), None)
            .await
            .status,
        200
    );
    // The call is settled after its answer is sent: poll for it.
    let added = wait_until_async(
        async || {
            let c = admin_get(&gw, "/customer/info?end_user_id=cust-new")
                .await
                .json();
            c["spend"].as_f64().unwrap_or(0.0) > key_spend * 1.4
        },
        Duration::from_secs(10),
    )
    .await;
    let c = admin_get(&gw, "/customer/info?end_user_id=cust-new")
        .await
        .json();
    assert!(added, "{c}");
}

#[tokio::test]
async fn tenant_changes_on_one_instance_apply_on_another_sharing_postgres() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.create_db("shared_tenants");
    let up = upstream().await;
    let yaml = config(&up, &format!("  database_url: {url}\n"));
    let a = Gateway::start(&yaml);
    let b = Gateway::start(&yaml);
    admin_ok(&a, "/team/new", json!({"team_id": "t-shared"})).await;
    let key = generate(&a, json!({"team_id": "t-shared"})).await;
    assert!(
        wait_until_async(
            async || chat(&b, &key, "gpt-4o").await.status == 200,
            Duration::from_secs(10)
        )
        .await,
        "B never took A's key"
    );
    // A team blocked on B is refused on A within the poll bound (2 s; 5 s for a slow machine).
    admin_ok(&b, "/team/block", json!({"team_id": "t-shared"})).await;
    let t0 = Instant::now();
    assert!(
        wait_until_async(
            async || chat(&a, &key, "gpt-4o").await.status == 401,
            Duration::from_secs(10)
        )
        .await,
        "A never saw the block"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t0.elapsed()
    );
    admin_ok(&a, "/team/unblock", json!({"team_id": "t-shared"})).await;
    // A customer blocked on A (an end user with no updated_at column) is refused on B.
    admin_ok(&a, "/customer/new", json!({"user_id": "c-shared"})).await;
    assert!(
        wait_until_async(
            async || chat_as(&b, &key, "gpt-4o", Some("c-shared"), None)
                .await
                .status
                == 200,
            Duration::from_secs(10)
        )
        .await
    );
    admin_ok(&a, "/customer/block", json!({"user_ids": ["c-shared"]})).await;
    let t0 = Instant::now();
    assert!(
        wait_until_async(
            async || chat_as(&b, &key, "gpt-4o", Some("c-shared"), None)
                .await
                .status
                == 400,
            Duration::from_secs(10)
        )
        .await,
        "B never saw the customer block"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t0.elapsed()
    );
    // A team restricted to gpt-4o-mini on A is enforced on B.
    admin_ok(
        &a,
        "/team/update",
        json!({"team_id": "t-shared", "models": ["gpt-4o-mini"]}),
    )
    .await;
    assert!(
        wait_until_async(
            async || chat(&b, &key, "gpt-4o").await.status == 401,
            Duration::from_secs(10)
        )
        .await,
        "B never saw the team's models"
    );
}

#[tokio::test]
async fn a_litellm_database_with_teams_users_and_end_users_works() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.create_db("litellm_tenants");
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(include_str!(
        "fixtures/litellm_schema.sql"
    )))
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    let store = Store::open(&url).await.unwrap();
    let key = "sk-litellm-team-key-01";
    let hash = hex(&hash_key(key));
    store
        .execute(&format!(
            "INSERT INTO \"LiteLLM_BudgetTable\" (budget_id, max_budget, created_by, updated_by) VALUES ('bud-1', 9.5, 'admin', 'admin'); \
             INSERT INTO \"LiteLLM_TeamTable\" (team_id, team_alias, models, spend, max_budget, members_with_roles, created_at, updated_at) \
               VALUES ('t-legacy', 'Legacy', ARRAY['gpt-4o']::TEXT[], 3.0, 100, '[{{\"role\": \"admin\", \"user_id\": \"u-legacy\"}}]', now(), now()); \
             INSERT INTO \"LiteLLM_UserTable\" (user_id, teams, spend) VALUES ('u-legacy', ARRAY['t-legacy']::TEXT[], 1.0); \
             INSERT INTO \"LiteLLM_TeamMembership\" (user_id, team_id, spend, budget_id) VALUES ('u-legacy', 't-legacy', 0.5, 'bud-1'); \
             INSERT INTO \"LiteLLM_EndUserTable\" (user_id, spend, blocked, budget_id) VALUES ('c-bad', 0, true, 'bud-1'), ('c-good', 2.0, false, NULL); \
             INSERT INTO \"LiteLLM_VerificationToken\" (token, key_name, team_id, user_id, created_at, updated_at) \
               VALUES ('{hash}', 'sk-...ey01', 't-legacy', 'u-legacy', now(), now());"
        ))
        .await
        .unwrap();
    let up = upstream().await;
    let gw = Gateway::start(&config(
        &up,
        &format!("  database_url: {url}\n  proxy_batch_write_at: 0.2\n"),
    ));
    let info = admin_get(&gw, "/team/info?team_id=t-legacy").await;
    assert_eq!(info.status, 200, "{}", info.text());
    let info = info.json();
    assert_eq!(info["team_info"]["team_alias"], "Legacy");
    assert_eq!(info["team_info"]["spend"], 3.0);
    assert_eq!(
        info["team_memberships"][0]["litellm_budget_table"]["max_budget"],
        9.5
    );
    let c = admin_get(&gw, "/customer/info?end_user_id=c-bad")
        .await
        .json();
    assert_eq!(c["blocked"], true);
    assert_eq!(c["litellm_budget_table"]["budget_id"], "bud-1");
    // The team's models and the blocked end user apply; the good end user's spend grows.
    assert_eq!(
        error_of(&chat(&gw, key, "gpt-4o-mini").await, 401).0,
        "team_model_access_denied"
    );
    chat_as(&gw, key, "gpt-4o", Some("c-bad"), None)
        .await
        .expect_error(400);
    let r = chat_as(&gw, key, "gpt-4o", Some("c-good"), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        wait_until_async(
            async || scalar(
                &store,
                "SELECT spend FROM \"LiteLLM_EndUserTable\" WHERE user_id = 'c-good'"
            )
            .await
                > 2.0,
            Duration::from_secs(10)
        )
        .await
    );
    assert!(
        scalar(
            &store,
            "SELECT spend FROM \"LiteLLM_TeamTable\" WHERE team_id = 't-legacy'"
        )
        .await
            > 3.0
    );
    assert!(
        scalar(
            &store,
            "SELECT spend FROM \"LiteLLM_UserTable\" WHERE user_id = 'u-legacy'"
        )
        .await
            > 1.0
    );
    assert!(
        scalar(
            &store,
            "SELECT spend FROM \"LiteLLM_TeamMembership\" WHERE team_id = 't-legacy'"
        )
        .await
            > 0.5
    );
}
