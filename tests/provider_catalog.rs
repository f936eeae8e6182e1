//! The OpenAI-compatible provider table end to end: the real gateway calling a mock upstream
//! for providers taken from the table (base URL and key from LiteLLM's environment variables,
//! path quirks, auth headers, `stream_options`), and deployments that load but cannot be
//! called (an unknown provider, `sagemaker`) answering 400 while the
//! other groups keep working.

mod support;

use serde_json::json;
use support::*;

fn chat(model: &str) -> serde_json::Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

/// Base URL and key come from each provider's own variables (as LiteLLM reads them), the path
/// below the base is the provider's, the key travels as its header, and the model is rewritten
/// to the deployment's.
#[tokio::test]
async fn table_providers_take_base_and_key_from_their_variables() {
    let up = MockUpstream::start(|_| Reply::json(200, openai::completion("ok"))).await;
    let base = up.base();
    let cfg = r#"
model_list:
  - model_name: cerebras
    litellm_params: {model: cerebras/llama3.1-8b}
  - model_name: zai
    litellm_params: {model: zai/glm-4.6}
  - model_name: nim
    litellm_params: {model: nvidia_nim/meta/llama-3.1-8b-instruct}
  - model_name: github
    litellm_params: {model: github/gpt-4o-mini}
  - model_name: together
    litellm_params: {model: together_ai/meta-llama/Llama-3-8b}
"#;
    let cerebras = format!("{base}/v1");
    let zai = format!("{base}/api/paas/v4");
    let nim = format!("{base}/v1");
    let env = [
        ("CEREBRAS_API_BASE", cerebras.as_str()),
        ("CEREBRAS_API_KEY", "csk-1"),
        ("ZAI_API_BASE", zai.as_str()),
        ("ZAI_API_KEY", "zai-1"),
        ("NVIDIA_NIM_API_BASE", nim.as_str()),
        ("NVIDIA_NIM_API_KEY", "nvapi-1"),
        // GitHub Models' base has no version path: routes sit at the root.
        ("GITHUB_API_BASE", base.as_str()),
        ("GITHUB_API_KEY", "ghp-1"),
        // Together: the second of LiteLLM's four key variables.
        ("TOGETHER_AI_API_BASE", cerebras.as_str()),
        ("TOGETHER_AI_API_KEY", "tg-1"),
    ];
    let gw = Gateway::start_with_env(cfg, &env);
    for (group, path, key, model) in [
        ("cerebras", "/v1/chat/completions", "csk-1", "llama3.1-8b"),
        ("zai", "/api/paas/v4/chat/completions", "zai-1", "glm-4.6"),
        (
            "nim",
            "/v1/chat/completions",
            "nvapi-1",
            "meta/llama-3.1-8b-instruct",
        ),
        ("github", "/chat/completions", "ghp-1", "gpt-4o-mini"),
        (
            "together",
            "/v1/chat/completions",
            "tg-1",
            "meta-llama/Llama-3-8b",
        ),
    ] {
        let r = gw.post("/v1/chat/completions", &chat(group)).await;
        assert_eq!(r.status, 200, "{group}: {}", r.text());
        assert_eq!(r.json()["choices"][0]["message"]["content"], "ok");
        let sent = up.last();
        assert_eq!(sent.path, path, "{group}");
        assert_eq!(
            sent.header("authorization"),
            Some(format!("Bearer {key}").as_str()),
            "{group}"
        );
        let body = sent.json();
        assert_eq!(body["model"], model, "{group}");
        assert_eq!(body["messages"][0]["content"], "hi", "{group}");
    }
}

/// Quirks from the table: Cloudflare's native `…/ai/run/` base is served by the account's
/// OpenAI-compatible `…/ai/v1` routes; Sarvam gets its key in a second header; Mistral's
/// family (codestral) is never sent `stream_options`, while the others are asked for usage.
#[tokio::test]
async fn table_quirks_reach_the_wire() {
    let up = MockUpstream::start(|req| {
        if req.json()["stream"] == true {
            Reply::bytes(200, "text/event-stream", openai::sse(&["a", "b"], true))
        } else {
            Reply::json(200, openai::completion("ok"))
        }
    })
    .await;
    let cfg = format!(
        r#"
model_list:
  - model_name: workers
    litellm_params:
      model: cloudflare/@cf/meta/llama-3.1-8b-instruct
      api_base: {b}/client/v4/accounts/acc-9/ai/run/
      api_key: cf-1
  - model_name: sarvam
    litellm_params: {{model: sarvam/sarvam-m, api_base: {b}/v1, api_key: sv-1}}
  - model_name: codestral
    litellm_params: {{model: codestral/codestral-latest, api_base: {b}/v1, api_key: cs-1}}
  - model_name: deepinfra
    litellm_params: {{model: deepinfra/meta-llama/Llama-3.3-70B-Instruct, api_base: {b}/v1/openai, api_key: di-1}}
"#,
        b = up.base()
    );
    let gw = Gateway::start(&cfg);

    let r = gw.post("/v1/chat/completions", &chat("workers")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = up.last();
    assert_eq!(
        sent.path,
        "/client/v4/accounts/acc-9/ai/v1/chat/completions"
    );
    assert_eq!(sent.header("authorization"), Some("Bearer cf-1"));
    assert_eq!(sent.json()["model"], "@cf/meta/llama-3.1-8b-instruct");

    let r = gw.post("/v1/chat/completions", &chat("sarvam")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = up.last();
    assert_eq!(sent.header("authorization"), Some("Bearer sv-1"));
    assert_eq!(sent.header("api-subscription-key"), Some("sv-1"));

    let mut streamed = chat("codestral");
    streamed["stream"] = json!(true);
    let r = gw.post("/v1/chat/completions", &streamed).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(stream_text(&openai_chunks(&r)), "ab");
    let sent = up.last();
    assert_eq!(sent.path, "/v1/chat/completions");
    assert!(
        sent.json().get("stream_options").is_none(),
        "{}",
        sent.json()
    );

    let mut streamed = chat("deepinfra");
    streamed["stream"] = json!(true);
    let r = gw.post("/v1/chat/completions", &streamed).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = up.last();
    assert_eq!(sent.path, "/v1/openai/chat/completions");
    assert_eq!(
        sent.json()["stream_options"],
        json!({"include_usage": true})
    );
    // The usage chunk the gateway asked for is not passed on: the client did not ask.
    assert!(openai_chunks(&r)
        .iter()
        .all(|c| c.get("usage").is_none_or(|u| u.is_null())));
}

/// A deployment whose provider is unknown loads (LiteLLM does too) and a call to its group is
/// a 400 in LiteLLM's words, naming what to fix, before anything is sent; other groups work.
/// Providers LiteLLM has that Switchboard cannot serve say why.
#[tokio::test]
async fn unknown_and_unserved_providers_fail_their_calls_only() {
    let up = MockUpstream::start(|_| Reply::json(200, openai::completion("fine"))).await;
    let cfg = format!(
        r#"
model_list:
  - model_name: good
    litellm_params: {{model: openai/gpt-4o, api_base: {b}/v1, api_key: k}}
  - model_name: typo
    litellm_params: {{model: opnai/gpt-4o, api_base: {b}/v1, api_key: k}}
  - model_name: sm
    litellm_params: {{model: sagemaker/jumpstart-dft-llama, aws_region_name: us-east-1}}
"#,
        b = up.base()
    );
    let gw = Gateway::start(&cfg);
    // The load warned, naming the key path.
    gw.wait_for_stderr("model_list[1].litellm_params.model: unknown provider")
        .await;
    let stderr = gw.stderr();
    assert!(
        stderr.contains("model_list[2].litellm_params.model: provider \\\"sagemaker\\\""),
        "{stderr}"
    );

    let r = gw.post("/v1/chat/completions", &chat("typo")).await;
    let err = r.expect_error(400);
    let msg = err["message"].as_str().unwrap();
    assert!(
        msg.starts_with("litellm.BadRequestError: LLM Provider NOT provided."),
        "{msg}"
    );
    assert!(msg.contains("You passed model=opnai/gpt-4o"), "{msg}");
    assert_eq!(err["type"], "invalid_request_error");
    assert_eq!(err["param"], "model");

    let mut streamed = chat("typo");
    streamed["stream"] = json!(true);
    gw.post("/v1/chat/completions", &streamed)
        .await
        .expect_error(400);
    let r = gw
        .post("/v1/embeddings", &json!({"model": "typo", "input": "x"}))
        .await;
    r.expect_error(400);

    let r = gw.post("/v1/chat/completions", &chat("sm")).await;
    let msg = r.expect_error(400)["message"].as_str().unwrap().to_string();
    assert!(msg.contains("SageMaker"), "{msg}");

    // Nothing reached the upstream for those; the good group answers.
    assert_eq!(up.count(), 0);
    let r = gw.post("/v1/chat/completions", &chat("good")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["choices"][0]["message"]["content"], "fine");
    assert_eq!(up.count(), 1);
}
