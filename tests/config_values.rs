//! LiteLLM config values through the real gateway: default call parameters from
//! `litellm_params` as an OpenAI-compatible and an Anthropic upstream receive them (the
//! request's own values win), `extra_headers`, `drop_params` lists, and `router_settings.enable_pre_call_checks`.

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
