//! LiteLLM config values through the real gateway: default call parameters from
//! `litellm_params` as an OpenAI-compatible and an Anthropic upstream receive them (the
//! request's own values win), `extra_headers`, `drop_params` lists, `GET /model/info` in
//! LiteLLM's shape without credentials, and `router_settings.enable_pre_call_checks`.

mod support;

use serde_json::{json, Value};
use support::*;

fn chat(model: &str, extra: Value) -> Value {
    let mut body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

const KEY_PEM: &str = include_str!("fixtures/vertex_test_key.pem");

fn anthropic_reply() -> Value {
    json!({"id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": 3, "output_tokens": 1}})
}

#[tokio::test]
async fn defaults_reach_an_openai_compatible_upstream_and_requests_override_them() {
    let up = MockUpstream::start(|_| Reply::json(200, openai::completion("ok"))).await;
    let gw = Gateway::start(&format!(
        r#"
model_list:
  - model_name: vllm
    litellm_params:
      model: hosted_vllm/qwen
      api_base: {base}/v1
      api_key: sk-up
      temperature: 0.2
      max_tokens: 1_024
      stop: ["<END>"]
      extra_body: {{chat_template_kwargs: {{enable_thinking: false}}, top_k: 20}}
      extra_headers: {{X-Tenant: acme, Authorization: "Bearer sk-override"}}
      drop_params: [user]
"#,
        base = up.base()
    ));
    let r = gw
        .post("/v1/chat/completions", &chat("vllm", json!({"user": "u1"})))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = up.last();
    let body = got.json();
    assert_eq!(body["temperature"], 0.2);
    assert_eq!(body["max_tokens"], 1024);
    assert_eq!(body["stop"], json!(["<END>"]));
    assert_eq!(
        body["chat_template_kwargs"],
        json!({"enable_thinking": false})
    );
    assert_eq!(body["top_k"], 20);
    assert!(body.get("user").is_none(), "dropped: {body}");
    assert_eq!(body["model"], "qwen");
    assert_eq!(got.header("x-tenant"), Some("acme"));
    assert_eq!(
        got.header("authorization"),
        Some("Bearer sk-override"),
        "extra_headers replace the provider's"
    );
    assert_eq!(
        got.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("authorization"))
            .count(),
        1
    );

    // The request's own values win, null counts as unset, and streams get the defaults too.
    let r = gw
        .post(
            "/v1/chat/completions",
            &chat(
                "vllm",
                json!({"temperature": 0.9, "max_tokens": null, "top_k": 5}),
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = up.last().json();
    assert_eq!(body["temperature"], 0.9);
    assert_eq!(body["max_tokens"], 1024);
    assert_eq!(body["top_k"], 5);
    let obj = body.as_object().unwrap();
    assert_eq!(
        obj.keys().filter(|k| *k == "temperature").count(),
        1,
        "one temperature key"
    );
}

#[tokio::test]
async fn defaults_reach_anthropic_through_the_translation() {
    let up = MockUpstream::start(|_| Reply::json(200, anthropic_reply())).await;
    let gw = Gateway::start(&format!(
        r#"
model_list:
  - model_name: claude
    litellm_params:
      model: anthropic/claude-sonnet-4-5
      api_base: {base}
      api_key: sk-ant-test
      max_tokens: 777
      temperature: 0.3
      thinking: {{type: enabled, budget_tokens: 1024}}
      extra_headers: {{anthropic-beta: interleaved-thinking-2025-05-14}}
"#,
        base = up.base()
    ));
    let r = gw
        .post("/v1/chat/completions", &chat("claude", json!({})))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = up.last();
    let body = got.json();
    assert_eq!(body["max_tokens"], 777);
    assert_eq!(body["temperature"], 0.3);
    assert_eq!(
        body["thinking"],
        json!({"type": "enabled", "budget_tokens": 1024})
    );
    assert_eq!(
        got.header("anthropic-beta"),
        Some("interleaved-thinking-2025-05-14")
    );
    assert_eq!(got.header("x-api-key"), Some("sk-ant-test"));

    let r = gw
        .post(
            "/v1/chat/completions",
            &chat("claude", json!({"max_tokens": 50, "temperature": 1})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = up.last().json();
    assert_eq!(body["max_tokens"], 50);
    assert_eq!(body["temperature"], 1.0);
}

#[tokio::test]
async fn model_info_in_litellm_shape_without_secrets() {
    let sa = json!({
        "type": "service_account",
        "project_id": "proj-from-key",
        "private_key_id": "kid-42",
        "private_key": KEY_PEM,
        "client_email": "gateway@proj-x.iam.gserviceaccount.com",
        "token_uri": "http://127.0.0.1:9/token",
    });
    let gw = Gateway::start_with_env(
        &format!(
            r#"
model_list:
  - model_name: gpt
    litellm_params:
      model: openai/gpt-4o
      api_base: "https://api.example.com/v1?key=query-secret-456"
      api_key: os.environ/SB_MI_KEY
      rpm: 600
      temperature: 0.1
      extra_headers: {{X-Api-Token: header-secret-789}}
    model_info:
      id: gpt-1
      description: Fast
      supports_vision: true
      max_input_tokens: 128_000
  - model_name: claude
    litellm_params:
      model: bedrock/anthropic.claude-3-haiku
      aws_access_key_id: AKIAEXAMPLEKEY000001
      aws_secret_access_key: aws-secret-abcdefghijklmnop
      aws_region_name: us-east-1
  - model_name: gem
    litellm_params:
      model: vertex_ai/gemini-2.0-flash
      vertex_project: proj
      vertex_location: us-central1
      vertex_credentials: {sa}
    model_info: {{mode: embedding}}
general_settings: {{master_key: sk-master-1234}}
"#,
        ),
        &[("SB_MI_KEY", "sk-openai-secret-000")],
    );
    let r = gw.get("/model/info", &[]).await;
    r.expect_error(401);
    let auth = [("authorization", "Bearer sk-master-1234")];
    let r = gw.get("/model/info", &auth).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    for secret in [
        "sk-openai-secret-000",
        "query-secret-456",
        "header-secret-789",
        "AKIAEXAMPLEKEY000001",
        "aws-secret-abcdefghijklmnop",
        "PRIVATE KEY",
        "kid-42",
        "sk-master-1234",
    ] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
    let v = r.json();
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    let gpt = &data[0];
    assert_eq!(gpt["model_name"], "gpt");
    assert_eq!(gpt["litellm_params"]["model"], "openai/gpt-4o");
    assert_eq!(
        gpt["litellm_params"]["api_base"],
        "https://api.example.com/v1"
    );
    assert_eq!(gpt["litellm_params"]["rpm"], 600);
    assert_eq!(gpt["litellm_params"]["temperature"], 0.1);
    assert!(gpt["litellm_params"].get("api_key").is_none());
    let mi = &gpt["model_info"];
    assert_eq!(mi["id"], "gpt-1");
    assert_eq!(mi["db_model"], false);
    assert_eq!(mi["mode"], "chat");
    assert_eq!(mi["max_input_tokens"], 128_000);
    assert_eq!(mi["supports_vision"], true);
    assert_eq!(mi["description"], "Fast");
    assert_eq!(mi["litellm_provider"], "openai");
    assert!(mi.get("input_cost_per_token").is_some());
    // Unset in the config: the price table's, as LiteLLM merges it.
    assert_eq!(mi["max_output_tokens"], 16_384);
    assert!(mi["input_cost_per_token"].as_f64().is_some_and(|p| p > 0.0));
    assert_eq!(data[1]["litellm_params"]["aws_region_name"], "us-east-1");
    assert_eq!(data[2]["litellm_params"]["vertex_project"], "proj");
    assert_eq!(data[2]["model_info"]["mode"], "embedding");

    // /v1/model/info and the litellm_model_id filter.
    let r = gw.get("/v1/model/info?litellm_model_id=gpt-1", &auth).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
    assert_eq!(v["data"][0]["model_info"]["id"], "gpt-1");
    let r = gw.get("/v1/model/info?litellm_model_id=nope", &auth).await;
    let e = r.expect_error(404);
    assert_eq!(e["param"], "litellm_model_id");
}

fn pre_call_config(small: &str, big: &str, checks: bool) -> String {
    format!(
        r#"
model_list:
  - model_name: g
    litellm_params: {{model: openai/small, api_base: "{small}/v1", api_key: k}}
    model_info: {{id: small, max_input_tokens: 100}}
  - model_name: g
    litellm_params: {{model: openai/big, api_base: "{big}/v1", api_key: k}}
    model_info: {{id: big, max_tokens: 100_000}}
  - model_name: tiny
    litellm_params: {{model: openai/tiny, api_base: "{small}/v1", api_key: k}}
    model_info: {{id: tiny, max_input_tokens: 50}}
router_settings:
  enable_pre_call_checks: {checks}
"#
    )
}

fn long_prompt(model: &str) -> Value {
    // ~2000 bytes of text: about 500 tokens by any count.
    let text = "lorem ipsum dolor sit amet ".repeat(75);
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

#[tokio::test]
async fn pre_call_checks_route_to_the_big_window_and_refuse_when_none_fits() {
    let small = MockUpstream::start(|_| Reply::json(200, openai::completion("small"))).await;
    let big = MockUpstream::start(|_| Reply::json(200, openai::completion("big"))).await;
    let gw = Gateway::start(&pre_call_config(&small.base(), &big.base(), true));
    for _ in 0..8 {
        let r = gw.post("/v1/chat/completions", &long_prompt("g")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["choices"][0]["message"]["content"], "big");
    }
    assert_eq!(small.count(), 0);
    // A short prompt fits both.
    for _ in 0..20 {
        let r = gw.post("/v1/chat/completions", &chat("g", json!({}))).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert!(
        small.count() > 0,
        "short prompts still use the small window"
    );
    // None fits: LiteLLM's ContextWindowExceededError, nothing sent upstream.
    let before = small.count();
    let r = gw.post("/v1/chat/completions", &long_prompt("tiny")).await;
    let e = r.expect_error(400);
    assert_eq!(e["code"], "context_length_exceeded");
    assert!(e["message"].as_str().unwrap().contains("tiny"), "{e}");
    assert_eq!(small.count(), before);
}

#[tokio::test]
async fn pre_call_checks_feed_context_window_fallbacks() {
    let small = MockUpstream::start(|_| Reply::json(200, openai::completion("small"))).await;
    let big = MockUpstream::start(|_| Reply::json(200, openai::completion("big"))).await;
    let gw = Gateway::start(&format!(
        "{}  context_window_fallbacks: [{{tiny: [g]}}]\n",
        pre_call_config(&small.base(), &big.base(), true)
    ));
    let r = gw.post("/v1/chat/completions", &long_prompt("tiny")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["choices"][0]["message"]["content"], "big");
    assert_eq!(small.count(), 0);
}

#[tokio::test]
async fn without_pre_call_checks_windows_are_not_consulted() {
    let small = MockUpstream::start(|_| Reply::json(200, openai::completion("small"))).await;
    let big = MockUpstream::start(|_| Reply::json(200, openai::completion("big"))).await;
    let gw = Gateway::start(&pre_call_config(&small.base(), &big.base(), false));
    let r = gw.post("/v1/chat/completions", &long_prompt("tiny")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(small.count(), 1);
}
