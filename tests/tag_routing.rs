//! Tag and region routing through the running gateway (issue 17): every deployment is its own
//! mock upstream that counts calls, so each test sees exactly which one was hit. Tags come from
//! the `x-litellm-tags` header, the body's `tags` / `metadata.tags`, or the virtual key's
//! `metadata.tags`; untagged requests go to the `default` deployment; a tag nothing serves is
//! refused without an upstream call; a key pinned to a region never reaches another region,
//! not through retries and not through fallbacks; nor does an end user's region, nor the
//! prompt in `/v1/messages/count_tokens` or in the semantic cache's embedding call.

#[path = "support/redis.rs"]
mod redis_server;
mod support;

use redis_server::Redis;
use serde_json::{json, Value};
use support::*;

const MASTER: &str = "sk-master-tags";

async fn named(text: &'static str) -> MockUpstream {
    MockUpstream::start(move |_| Reply::json(200, openai::completion(text))).await
}

fn entry(group: &str, id: &str, up: &MockUpstream, params: &str) -> String {
    format!(
        "  - model_name: {group}\n    litellm_params: {{model: openai/m-{id}, api_base: \"{}/v1\", api_key: sk-up-{id}{params}}}\n    model_info: {{id: {id}}}\n",
        up.base()
    )
}

fn content(r: &Response) -> String {
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn call(gw: &Gateway, key: &str, headers: &[(&str, &str)], body: Value) -> Response {
    let auth = format!("Bearer {key}");
    let mut h = vec![
        ("content-type", "application/json"),
        ("authorization", &auth),
    ];
    h.extend_from_slice(headers);
    gw.post_with("/v1/chat/completions", &h, body.to_string().as_bytes())
        .await
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

async fn key_with(gw: &Gateway, metadata: Value) -> String {
    let auth = format!("Bearer {MASTER}");
    let r = gw
        .post_with(
            "/key/generate",
            &[
                ("content-type", "application/json"),
                ("authorization", &auth),
            ],
            json!({"metadata": metadata}).to_string().as_bytes(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["key"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn tags_from_header_body_and_key_route_to_the_tagged_deployment() {
    let (free, paid, default) = (
        named("free").await,
        named("paid").await,
        named("default").await,
    );
    let yaml = format!(
        "model_list:\n{}{}{}router_settings:\n  enable_tag_filtering: true\ngeneral_settings:\n  master_key: {MASTER}\n",
        entry("g", "free", &free, ", tags: [free]"),
        entry("g", "paid", &paid, ", tags: [paid, premium]"),
        entry("g", "dflt", &default, ", tags: [default]"),
    );
    let gw = Gateway::start(&yaml);

    let header = call(
        &gw,
        MASTER,
        &[("x-litellm-tags", " other , paid")],
        chat("g"),
    )
    .await;
    assert_eq!(content(&header), "paid");
    let mut body = chat("g");
    body["metadata"] = json!({"tags": ["free"]});
    assert_eq!(content(&call(&gw, MASTER, &[], body).await), "free");
    let mut body = chat("g");
    body["tags"] = json!(["premium"]);
    assert_eq!(content(&call(&gw, MASTER, &[], body).await), "paid");
    // Untagged, an unknown tag, and tags of the wrong shape: the `default` deployment.
    assert_eq!(content(&call(&gw, MASTER, &[], chat("g")).await), "default");
    let mut body = chat("g");
    body["tags"] = json!(["nobody-has-this"]);
    assert_eq!(content(&call(&gw, MASTER, &[], body).await), "default");
    let mut body = chat("g");
    body["metadata"] = json!({"tags": "free"});
    assert_eq!(content(&call(&gw, MASTER, &[], body).await), "default");
    // A key's tags are inherited by its requests.
    let key = key_with(&gw, json!({"tags": ["free"]})).await;
    for _ in 0..3 {
        assert_eq!(content(&call(&gw, &key, &[], chat("g")).await), "free");
    }
    assert_eq!(
        (
            free.requests().len(),
            paid.requests().len(),
            default.requests().len()
        ),
        (4, 2, 3)
    );
}

#[tokio::test]
async fn a_tag_no_deployment_serves_is_refused_without_an_upstream_call() {
    let (a, b) = (named("a").await, named("b").await);
    let yaml = format!(
        "model_list:\n{}{}router_settings:\n  enable_tag_filtering: true\n  tag_filtering_match_any: false\ngeneral_settings:\n  master_key: {MASTER}\n",
        entry("g", "a", &a, ", tags: [teamA]"),
        entry("g", "b", &b, ", tags: [teamB]"),
    );
    let gw = Gateway::start(&yaml);
    let r = call(&gw, MASTER, &[("x-litellm-tags", "teamC")], chat("g")).await;
    let e = r.expect_error(400);
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.contains("Not allowed to access model due to tags configuration")
            && msg.contains("teamC"),
        "{msg}"
    );
    // match_any false: every request tag must be on the deployment.
    let r = call(&gw, MASTER, &[("x-litellm-tags", "teamA,teamB")], chat("g")).await;
    r.expect_error(400);
    assert_eq!(
        content(&call(&gw, MASTER, &[("x-litellm-tags", "teamB")], chat("g")).await),
        "b"
    );
    // Untagged requests with no `default` deployment: every deployment serves.
    assert_eq!(call(&gw, MASTER, &[], chat("g")).await.status, 200);
    assert_eq!(a.requests().len() + b.requests().len(), 2);
}

/// LiteLLM's markers: `!tag` keeps a request off the deployments carrying the tag, `&tag`
/// keeps it on those carrying it; from the header, the body and a key's tags alike; a request
/// the markers leave nothing for is refused without an upstream call.
#[tokio::test]
async fn not_and_must_markers_narrow_the_deployments() {
    let (eu_free, us_free, eu_paid, default) = (
        named("eu-free").await,
        named("us-free").await,
        named("eu-paid").await,
        named("default").await,
    );
    let yaml = format!(
        "model_list:\n{}{}{}{}router_settings:\n  enable_tag_filtering: true\ngeneral_settings:\n  master_key: {MASTER}\n",
        entry("g", "eufree", &eu_free, ", tags: [free, eu]"),
        entry("g", "usfree", &us_free, ", tags: [free, us]"),
        entry("g", "eupaid", &eu_paid, ", tags: [paid, eu]"),
        entry("g", "dflt", &default, ", tags: [default]"),
    );
    let gw = Gateway::start(&yaml);
    // `free` alone could be either free deployment; `!us` leaves the EU one only.
    for _ in 0..4 {
        let r = call(&gw, MASTER, &[("x-litellm-tags", "free,!us")], chat("g")).await;
        assert_eq!(content(&r), "eu-free");
    }
    // `&eu` with `&paid`: only the deployment carrying both.
    let mut body = chat("g");
    body["tags"] = json!(["&eu", "&paid"]);
    assert_eq!(content(&call(&gw, MASTER, &[], body).await), "eu-paid");
    // `!default` alone picks from the default deployments: none is left, refused.
    let r = call(&gw, MASTER, &[("x-litellm-tags", "!default")], chat("g")).await;
    let msg = r.expect_error(400)["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("Not allowed to access model due to tags configuration")
            && msg.contains("!default")
            && msg.contains("markers"),
        "{msg}"
    );
    // A known tag the markers rule out is refused, never sent to the default deployment.
    let r = call(&gw, MASTER, &[("x-litellm-tags", "paid,!eu")], chat("g")).await;
    r.expect_error(400);
    // A key that must stay in the EU: its requests never reach the US deployment.
    let key = key_with(&gw, json!({"tags": ["&eu"]})).await;
    for _ in 0..6 {
        let r = call(&gw, &key, &[("x-litellm-tags", "free")], chat("g")).await;
        assert_eq!(content(&r), "eu-free");
    }
    assert_eq!(
        (
            eu_free.requests().len(),
            us_free.requests().len(),
            eu_paid.requests().len(),
            default.requests().len()
        ),
        (10, 0, 1, 0)
    );
}

#[tokio::test]
async fn a_region_pinned_key_never_leaves_its_region_on_retries_or_fallbacks() {
    let broken_eu = MockUpstream::start(|_| {
        Reply::json(
            500,
            json!({"error": {"message": "eu down", "type": "server_error"}}),
        )
    })
    .await;
    let (us, us_only, eu_backup) = (
        named("us").await,
        named("us-only").await,
        named("eu-backup").await,
    );
    let yaml = format!(
        "model_list:\n{}{}{}{}router_settings:\n  num_retries: 2\n  fallbacks: [{{g: [us-group, eu-group]}}]\ngeneral_settings:\n  master_key: {MASTER}\n",
        entry("g", "eu1", &broken_eu, ", region_name: eu-west-1"),
        entry("g", "us1", &us, ", region_name: us-east-1"),
        entry("us-group", "us2", &us_only, ", region_name: us"),
        entry("eu-group", "eu2", &eu_backup, ", region_name: eu"),
    );
    let gw = Gateway::start(&yaml);

    // Unpinned, the failing EU deployment is retried on the US one: the setup can leak.
    let r = call(&gw, MASTER, &[], chat("g")).await;
    assert_eq!(content(&r), "us");
    let us_before = us.requests().len();
    assert!(us_before >= 1);

    // Pinned to the EU: retries stay on eu1, the US fallback group is skipped, eu-group answers.
    let key = key_with(&gw, json!({"allowed_model_region": "eu"})).await;
    let r = call(&gw, &key, &[], chat("g")).await;
    assert_eq!(content(&r), "eu-backup");
    assert_eq!(us.requests().len(), us_before, "a retry left the region");
    assert_eq!(us_only.requests().len(), 0, "a fallback left the region");
    assert_eq!(eu_backup.requests().len(), 1);

    // A group with nothing in the region: a clear refusal, nothing sent.
    let r = call(&gw, &key, &[], chat("us-group")).await;
    let e = r.expect_error(400);
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.contains("region 'eu'") && msg.contains("us-group"),
        "{msg}"
    );
    assert_eq!(us_only.requests().len(), 0);
}

/// An Anthropic upstream that counts tokens (`/v1/messages/count_tokens`) and answers chat.
async fn anthropic_counter() -> MockUpstream {
    MockUpstream::start(|r| {
        if r.path.ends_with("/count_tokens") {
            Reply::json(200, json!({"input_tokens": 42}))
        } else {
            Reply::json(
                200,
                json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
                    "content": [{"type": "text", "text": "us-claude"}], "stop_reason": "end_turn",
                    "stop_sequence": null, "usage": {"input_tokens": 3, "output_tokens": 2}}),
            )
        }
    })
    .await
}

async fn count_tokens(gw: &Gateway, key: &str, model: &str) -> Response {
    let body =
        json!({"model": model, "messages": [{"role": "user", "content": "a secret prompt"}]});
    gw.post_with(
        "/v1/messages/count_tokens",
        &[("x-api-key", key), ("content-type", "application/json")],
        body.to_string().as_bytes(),
    )
    .await
}

/// `/v1/messages/count_tokens` sends the prompt to an Anthropic deployment to count: only to
/// one the request may use. A key pinned to the EU never reaches the US Anthropic deployment:
/// the estimate answers when the EU deployments left cannot count, and a group with nothing in
/// the EU is refused as `/v1/messages` would be.
#[tokio::test]
async fn count_tokens_never_sends_a_pinned_prompt_out_of_its_region() {
    let us_claude = anthropic_counter().await;
    let eu_gpt = named("eu-gpt").await;
    let anthropic = |group: &str, id: &str| {
        format!(
            "  - model_name: {group}\n    litellm_params: {{model: anthropic/claude-{id}, api_base: \"{}\", api_key: sk-ant-{id}, region_name: us-east-1}}\n    model_info: {{id: {id}}}\n",
            us_claude.base()
        )
    };
    let yaml = format!(
        "model_list:\n{}{}{}general_settings:\n  master_key: {MASTER}\n",
        anthropic("claude", "us1"),
        entry("claude", "eu1", &eu_gpt, ", region_name: eu-west-1"),
        anthropic("claude-us", "us2"),
    );
    let gw = Gateway::start(&yaml);

    // Unpinned, the US deployment counts: the setup can leak.
    let r = count_tokens(&gw, MASTER, "claude").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-switchboard-token-count"), Some("provider"));
    assert_eq!(us_claude.count(), 1);

    let eu_key = key_with(&gw, json!({"allowed_model_region": "eu"})).await;
    let r = count_tokens(&gw, &eu_key, "claude").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-switchboard-token-count"), Some("estimate"));
    assert!(r.json()["input_tokens"].as_u64().is_some_and(|n| n > 0));
    // Nothing in the EU at all: refused in Anthropic's error shape, nothing sent.
    let r = count_tokens(&gw, &eu_key, "claude-us").await;
    assert_eq!(r.status, 400, "{}", r.text());
    let v = r.json();
    assert_eq!(v["type"], "error", "{v}");
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("region 'eu'") && msg.contains("claude-us"),
        "{msg}"
    );
    assert_eq!(us_claude.count(), 1, "a pinned prompt reached the US");
    assert_eq!(eu_gpt.count(), 0, "the estimate needs no upstream");
}

async fn customer(gw: &Gateway, id: &str, region: &str) {
    let r = gw
        .post_as(
            MASTER,
            "/customer/new",
            &json!({"user_id": id, "allowed_model_region": region}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

fn chat_for(model: &str, user: &str) -> Value {
    let mut body = chat(model);
    body["user"] = json!(user);
    body
}

/// An end user's `allowed_model_region` (their customer row) pins their requests; with a key
/// pinned too, the most restrictive wins: the same region is that region, two different ones
/// are refused with nothing sent (an end user never widens a key's region).
#[tokio::test]
async fn end_user_regions_pin_and_never_override_the_keys() {
    let (us, eu) = (named("us").await, named("eu").await);
    let yaml = format!(
        "model_list:\n{}{}general_settings:\n  master_key: {MASTER}\n",
        entry("g", "us1", &us, ", region_name: us-east-1"),
        entry("g", "eu1", &eu, ", region_name: eu-west-1"),
    );
    let gw = Gateway::start(&yaml);
    customer(&gw, "c-eu", "eu").await;
    customer(&gw, "c-us", "us").await;

    for _ in 0..6 {
        let r = call(&gw, MASTER, &[], chat_for("g", "c-eu")).await;
        assert_eq!(content(&r), "eu");
    }
    // The end-user header names them as well as the body's `user`.
    let r = call(&gw, MASTER, &[("x-litellm-end-user-id", "c-eu")], chat("g")).await;
    assert_eq!(content(&r), "eu");
    assert_eq!(us.count(), 0, "an EU end user reached the US");

    let eu_key = key_with(&gw, json!({"allowed_model_region": "eu"})).await;
    for _ in 0..4 {
        assert_eq!(
            content(&call(&gw, &eu_key, &[], chat_for("g", "c-eu")).await),
            "eu"
        );
    }
    // Key in the EU, end user in the US: refused, not routed to the end user's region.
    let r = call(&gw, &eu_key, &[], chat_for("g", "c-us")).await;
    let e = r.expect_error(400);
    assert_eq!(e["code"], "no_deployments_in_region", "{e}");
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.contains("'eu'") && msg.contains("'us'") && msg.contains("c-us"),
        "{msg}"
    );
    assert_eq!((us.count(), eu.count()), (0, 11));
}

/// A fallback group is filtered by the request's tags like the primary: its only deployment
/// carrying the tag answers, its untagged one never does.
#[tokio::test]
async fn tags_hold_across_a_fallback() {
    let broken = MockUpstream::start(|_| {
        Reply::json(
            500,
            json!({"error": {"message": "down", "type": "server_error"}}),
        )
    })
    .await;
    let (tagged, untagged) = (named("tagged").await, named("untagged").await);
    let yaml = format!(
        "model_list:\n{}{}{}router_settings:\n  enable_tag_filtering: true\n  num_retries: 0\n  fallbacks: [{{g: [fb]}}]\ngeneral_settings:\n  master_key: {MASTER}\n",
        entry("g", "g1", &broken, ", tags: [private]"),
        entry("fb", "x", &tagged, ", tags: [private]"),
        entry("fb", "y", &untagged, ""),
    );
    let gw = Gateway::start(&yaml);
    for _ in 0..8 {
        let r = call(&gw, MASTER, &[("x-litellm-tags", "private")], chat("g")).await;
        assert_eq!(content(&r), "tagged");
    }
    assert_eq!(untagged.count(), 0, "the fallback left the request's tags");
    assert!(broken.count() >= 1);
}

/// The semantic cache embeds the prompt through the gateway's own routing: under the client's
/// region, so a key pinned to the EU has its prompt embedded by the EU embedder only.
#[tokio::test]
async fn the_semantic_cache_embeds_a_pinned_prompt_in_its_region() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let embedder = || MockUpstream::start(|_| Reply::json(200, openai::embeddings(1)));
    let (us_embed, eu_embed, eu_chat) = (embedder().await, embedder().await, named("eu").await);
    let yaml = format!(
        "model_list:
{}{}{}litellm_settings:
  cache: true
  cache_params: {{type: redis-semantic, url: \"{}\", redis_semantic_cache_embedding_model: embed}}
general_settings:
  master_key: {MASTER}
",
        entry("g", "eu1", &eu_chat, ", region_name: eu-west-1"),
        entry("embed", "use", &us_embed, ", region_name: us-east-1"),
        entry("embed", "eue", &eu_embed, ", region_name: eu-west-1"),
        redis.url(),
    );
    let gw = Gateway::start(&yaml);
    let key = key_with(&gw, json!({"allowed_model_region": "eu"})).await;
    for i in 0..6 {
        let mut body = chat("g");
        body["messages"][0]["content"] = json!(format!("question {i}"));
        let r = call(&gw, &key, &[], body).await;
        assert_eq!(content(&r), "eu");
    }
    assert_eq!(eu_embed.count(), 6, "every prompt was embedded");
    assert_eq!(
        us_embed.count(),
        0,
        "a pinned prompt was embedded in the US"
    );
}

/// `tag_regex` on the User-Agent, as LiteLLM routes Claude Code: the agent alone picks the
/// deployment whose pattern matches, on chat and on `/v1/messages`; another agent goes to the
/// `default` deployment, as does a request with no agent.
#[tokio::test]
async fn tag_regex_routes_on_the_user_agent() {
    let (claude, other) = (named("claude-code").await, named("default").await);
    let yaml = format!(
        "model_list:\n{}{}router_settings:\n  enable_tag_filtering: true\ngeneral_settings:\n  master_key: {MASTER}\n",
        entry("g", "cc", &claude, ", tag_regex: [\"^User-Agent: claude-cli/\"]"),
        entry("g", "dflt", &other, ", tags: [default]"),
    );
    let gw = Gateway::start(&yaml);
    let ua = |agent: &'static str| [("user-agent", agent)];
    for _ in 0..3 {
        let r = call(
            &gw,
            MASTER,
            &ua("claude-cli/2.1.3 (external, cli)"),
            chat("g"),
        )
        .await;
        assert_eq!(content(&r), "claude-code");
    }
    let r = call(&gw, MASTER, &ua("python-httpx/0.27"), chat("g")).await;
    assert_eq!(content(&r), "default");
    let r = call(&gw, MASTER, &[], chat("g")).await;
    assert_eq!(content(&r), "default");
    // The Messages route reads the same agent.
    let auth = format!("Bearer {MASTER}");
    let r = gw
        .post_with(
            "/v1/messages",
            &[
                ("content-type", "application/json"),
                ("authorization", &auth),
                ("user-agent", "claude-cli/2.1.3"),
            ],
            json!({"model": "g", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]})
                .to_string()
                .as_bytes(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["content"][0]["text"], "claude-code");
    assert_eq!((claude.count(), other.count()), (4, 2));
}
