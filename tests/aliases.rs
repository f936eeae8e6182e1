//! Tenant routing through key and team model aliases, end to end through the running gateway
//! on a real SQLite file: two teams asking `gpt-4o` land on their own deployment groups (the
//! mocks record which), LiteLLM's order of team then key aliases, fallbacks from an aliased
//! group staying in that team's chain, the team's model list still holding, and the aliases
//! surviving a restart (read back from `LiteLLM_ModelTable`).

mod support;

use serde_json::{json, Value};
use support::*;

const MASTER: &str = "sk-master-1234";

struct Upstreams {
    public: MockUpstream,
    team_a: MockUpstream,
    team_b: MockUpstream,
    team_b_backup: MockUpstream,
    key_group: MockUpstream,
}

async fn ok() -> MockUpstream {
    MockUpstream::start(|_| Reply::json(200, openai::completion("hello"))).await
}

impl Upstreams {
    async fn start() -> Upstreams {
        Upstreams {
            public: ok().await,
            team_a: ok().await,
            // Team B's own group always fails: its fallback must be team B's backup.
            team_b: MockUpstream::start(|_| {
                Reply::json(
                    500,
                    json!({"error": {"message": "down", "type": "server_error"}}),
                )
            })
            .await,
            team_b_backup: ok().await,
            key_group: ok().await,
        }
    }

    fn config(&self, db: &str) -> String {
        let group = |name: &str, up: &MockUpstream| {
            format!(
                "  - model_name: {name}\n    litellm_params: {{model: openai/gpt-4o, api_base: \"{}/v1\", api_key: sk-up}}\n",
                up.base()
            )
        };
        format!(
            "model_list:\n{}{}{}{}{}{}router_settings:\n  num_retries: 0\n  fallbacks: [{{team-b-gpt-4o: [team-b-backup]}}, {{gpt-4o: [gpt-4o-mini]}}]\ngeneral_settings:\n  master_key: {MASTER}\n  database_url: \"sqlite://{db}\"\n",
            group("gpt-4o", &self.public),
            group("gpt-4o-mini", &self.public),
            group("team-a-gpt-4o", &self.team_a),
            group("team-b-gpt-4o", &self.team_b),
            group("team-b-backup", &self.team_b_backup),
            group("key-gpt-4o", &self.key_group),
        )
    }
}

async fn admin_ok(gw: &Gateway, path: &str, body: Value) -> Value {
    let r = gw
        .post_with(
            path,
            &[
                ("content-type", "application/json"),
                ("authorization", &format!("Bearer {MASTER}")),
            ],
            body.to_string().as_bytes(),
        )
        .await;
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    r.json()
}

async fn chat(gw: &Gateway, key: &str, model: &str) -> Response {
    let body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    gw.post_with(
        "/v1/chat/completions",
        &[
            ("content-type", "application/json"),
            ("authorization", &format!("Bearer {key}")),
        ],
        body.to_string().as_bytes(),
    )
    .await
}

async fn key_for(gw: &Gateway, body: Value) -> String {
    admin_ok(gw, "/key/generate", body).await["key"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Which group answered, by the gateway's header.
fn group_of(r: &Response) -> String {
    assert_eq!(r.status, 200, "{}", r.text());
    r.header("x-litellm-model-group")
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn team_and_key_aliases_route_each_tenant_to_its_groups() {
    let up = Upstreams::start().await;
    let dir = temp_dir();
    let db = dir.join("aliases.db").display().to_string();
    let gw = Gateway::start(&up.config(&db));

    let team_a = admin_ok(
        &gw,
        "/team/new",
        json!({"team_id": "team-a", "models": ["gpt-4o", "key-gpt-4o"],
               "model_aliases": {"gpt-4o": "team-a-gpt-4o"}}),
    )
    .await;
    assert_eq!(
        team_a["model_aliases"]["gpt-4o"], "team-a-gpt-4o",
        "{team_a}"
    );
    assert!(
        team_a["model_id"].is_i64(),
        "a LiteLLM_ModelTable row: {team_a}"
    );
    admin_ok(
        &gw,
        "/team/new",
        json!({"team_id": "team-b", "model_aliases": {"gpt-4o": "team-b-gpt-4o"}}),
    )
    .await;
    let key_a = key_for(&gw, json!({"team_id": "team-a"})).await;
    let key_b = key_for(&gw, json!({"team_id": "team-b"})).await;
    let key_none = key_for(&gw, json!({})).await;
    // A team-A key with its own aliases: one for a name the team does not alias, one for the
    // name the team does.
    let key_a_own = key_for(
        &gw,
        json!({"team_id": "team-a", "aliases": {"smart": "key-gpt-4o", "gpt-4o": "key-gpt-4o"}}),
    )
    .await;

    // Two teams asking gpt-4o land on their own groups; a key with no team on the public one.
    assert_eq!(
        group_of(&chat(&gw, &key_a, "gpt-4o").await),
        "team-a-gpt-4o"
    );
    assert_eq!(up.team_a.count(), 1);
    assert_eq!(group_of(&chat(&gw, &key_none, "gpt-4o").await), "gpt-4o");
    assert_eq!(up.public.count(), 1);
    // Team B's group fails: the fallback is team B's backup, never the public gpt-4o (whose
    // own fallback is gpt-4o-mini on the public mock).
    assert_eq!(
        group_of(&chat(&gw, &key_b, "gpt-4o").await),
        "team-b-backup"
    );
    assert_eq!(up.team_b.count(), 1);
    assert_eq!(up.team_b_backup.count(), 1);
    assert_eq!(
        up.public.count(),
        1,
        "team B never reached the public group"
    );

    // The key's alias applies to a name the team does not alias...
    assert_eq!(
        group_of(&chat(&gw, &key_a_own, "smart").await),
        "key-gpt-4o"
    );
    assert_eq!(up.key_group.count(), 1);
    // ...and, as in LiteLLM (team aliases first, then the key's on the result), the team's
    // alias of the same name is the one applied.
    assert_eq!(
        group_of(&chat(&gw, &key_a_own, "gpt-4o").await),
        "team-a-gpt-4o"
    );
    assert_eq!(up.key_group.count(), 1);

    // Access checks hold: team A may call gpt-4o (through its alias), not another group,
    // not even team B's by its group name.
    for model in ["gpt-4o-mini", "team-b-gpt-4o"] {
        let r = chat(&gw, &key_a, model).await;
        let e = r.expect_error(401);
        assert_eq!(e["type"], "team_model_access_denied", "{model}: {e}");
        assert!(
            e["message"]
                .as_str()
                .unwrap()
                .contains(&format!("Tried to access {model}")),
            "{e}"
        );
    }
    assert_eq!(up.team_b.count(), 1);

    // /team/update moves the team's alias; the next call follows it.
    admin_ok(
        &gw,
        "/team/update",
        json!({"team_id": "team-a", "model_aliases": {"gpt-4o": "key-gpt-4o"}}),
    )
    .await;
    assert_eq!(group_of(&chat(&gw, &key_a, "gpt-4o").await), "key-gpt-4o");
    // A bad alias map is refused with the field named.
    let r = gw
        .post_with(
            "/team/update",
            &[
                ("content-type", "application/json"),
                ("authorization", &format!("Bearer {MASTER}")),
            ],
            json!({"team_id": "team-a", "model_aliases": {"gpt-4o": 4}})
                .to_string()
                .as_bytes(),
        )
        .await;
    assert!(r.expect_error(400)["message"]
        .as_str()
        .unwrap()
        .contains("model_aliases"));

    // A restart reads the aliases back from LiteLLM_ModelTable.
    drop(gw);
    let gw = Gateway::start(&up.config(&db));
    let before = up.key_group.count();
    assert_eq!(group_of(&chat(&gw, &key_a, "gpt-4o").await), "key-gpt-4o");
    assert_eq!(up.key_group.count(), before + 1);
    assert_eq!(
        group_of(&chat(&gw, &key_b, "gpt-4o").await),
        "team-b-backup"
    );
}
