//! `POST /v1/completions` end to end: the real gateway translating legacy text completions
//! onto a chat deployment (OpenAI chat wire format, Anthropic Messages) and back, and passing
//! them to a `text-completion-openai` deployment's `/v1/completions` with the prompt verbatim;
//! streams split at awkward byte offsets; refusals as OpenAI errors; the OpenAI Python SDK's
//! `completions` client.

mod support;

use serde_json::{json, Value};
use std::time::Duration;
use support::*;

fn config(base: &str) -> String {
    format!(
        r#"
model_list:
  - model_name: gpt-4o
    litellm_params: {{model: openai/gpt-4o, api_base: {base}/v1, api_key: sk-upstream}}
  - model_name: instruct
    litellm_params: {{model: text-completion-openai/gpt-3.5-turbo-instruct, api_base: {base}/v1, api_key: sk-upstream}}
  - model_name: claude
    litellm_params: {{model: anthropic/claude-sonnet-4-5, api_base: {base}, api_key: sk-ant}}
"#
    )
}

fn text_completion(text: &str) -> Value {
    json!({"id": "cmpl-up", "object": "text_completion", "created": 1700000000, "model": "gpt-3.5-turbo-instruct",
        "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 4, "completion_tokens": 16, "total_tokens": 20}})
}

fn text_completion_sse(pieces: &[&str]) -> Vec<u8> {
    let mut out = String::new();
    for p in pieces {
        out.push_str(&format!(
            "data: {}\n\n",
            json!({"id": "cmpl-up", "object": "text_completion", "created": 1, "model": "gpt-3.5-turbo-instruct",
                "choices": [{"text": p, "index": 0, "logprobs": null, "finish_reason": null}]})
        ));
    }
    out.push_str(&format!(
        "data: {}\n\n",
        json!({"id": "cmpl-up", "object": "text_completion", "created": 1, "model": "gpt-3.5-turbo-instruct",
            "choices": [{"text": "", "index": 0, "logprobs": null, "finish_reason": "stop"}]})
    ));
    out.push_str(&format!(
        "data: {}\n\n",
        json!({"id": "cmpl-up", "object": "text_completion", "created": 1, "model": "gpt-3.5-turbo-instruct",
            "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": pieces.len(), "total_tokens": 3 + pieces.len()}})
    ));
    out.push_str("data: [DONE]\n\n");
    out.into_bytes()
}

/// A mock upstream answering each API in its own wire format, streams in `piece`-byte writes.
async fn upstream(piece: usize) -> MockUpstream {
    MockUpstream::start(move |r| {
        let body = r.json();
        let stream = body["stream"] == true;
        match r.path.as_str() {
            "/v1/completions" if stream => Reply::stream(
                "text/event-stream",
                &text_completion_sse(&["Once", " upon", " a tïme"]),
                piece,
                Duration::ZERO,
            ),
            "/v1/completions" => Reply::json(200, text_completion(" upon a time")),
            "/v1/chat/completions" if stream => Reply::stream(
                "text/event-stream",
                &openai::sse(&["Hel", "lo ", "wörld"], true),
                piece,
                Duration::ZERO,
            ),
            "/v1/chat/completions" => Reply::json(200, openai::completion("Hello wörld")),
            "/v1/messages" => Reply::json(
                200,
                json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
                    "content": [{"type": "text", "text": "From Claude"}], "stop_reason": "max_tokens",
                    "stop_sequence": null, "usage": {"input_tokens": 7, "output_tokens": 16}}),
            ),
            _ => Reply::json(404, json!({"error": {"message": "no such path"}})),
        }
    })
    .await
}

fn completion_chunks(resp: &Response) -> Vec<Value> {
    assert_eq!(resp.status, 200, "{}", resp.text());
    let chunks = openai_chunks(resp);
    for c in &chunks {
        assert_eq!(c["object"], "text_completion", "{c}");
        assert!(c["id"].as_str().unwrap().starts_with("cmpl-"), "{c}");
    }
    chunks
}

fn streamed_text(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| {
            c["choices"]
                .get(0)
                .and_then(|ch| ch["text"].as_str())
                .map(str::to_string)
        })
        .collect()
}

#[tokio::test]
async fn a_chat_deployment_answers_a_text_completion() {
    let up = upstream(7).await;
    let gw = Gateway::start(&config(&up.base()));
    let resp = gw
        .post(
            "/v1/completions",
            &json!({"model": "gpt-4o", "prompt": "Say hi", "stop": ["\n"], "temperature": 0}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let sent = up.last();
    assert_eq!(sent.path, "/v1/chat/completions");
    let chat = sent.json();
    assert_eq!(
        chat["messages"],
        json!([{"role": "user", "content": "Say hi"}])
    );
    assert_eq!(chat["max_tokens"], 16, "OpenAI's default for completions");
    assert_eq!(chat["stop"], json!(["\n"]));
    let c = resp.json();
    assert_eq!(c["object"], "text_completion");
    assert!(c["id"].as_str().unwrap().starts_with("cmpl-"), "{c}");
    assert_eq!(c["choices"][0]["text"], "Hello wörld");
    assert_eq!(c["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        c["usage"],
        json!({"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18})
    );
    assert!(
        resp.header("x-litellm-response-cost").is_some(),
        "priced as chat"
    );
    let line = gw.wait_for_log_line(|l| l["route"] == "completions").await;
    assert_eq!(line["status"], 200);
    assert!(line["cost"].as_f64().is_some_and(|c| c > 0.0), "{line}");

    // Anthropic too.
    let resp = gw
        .post(
            "/v1/completions",
            &json!({"model": "claude", "prompt": ["Say hi"], "max_tokens": 16}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let c = resp.json();
    assert_eq!(c["choices"][0]["text"], "From Claude");
    assert_eq!(c["choices"][0]["finish_reason"], "length");
    let sent = up.last();
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.json()["max_tokens"], 16);
}

#[tokio::test]
async fn streams_split_anywhere_become_text_completion_chunks() {
    for piece in [1usize, 5, 33] {
        let up = upstream(piece).await;
        let gw = Gateway::start(&config(&up.base()));
        for model in ["gpt-4o", "instruct"] {
            let resp = gw
                .post(
                    "/v1/completions",
                    &json!({"model": model, "prompt": "Once", "stream": true, "stream_options": {"include_usage": true}}),
                )
                .await;
            let chunks = completion_chunks(&resp);
            let want = if model == "gpt-4o" {
                "Hello wörld"
            } else {
                "Once upon a tïme"
            };
            assert_eq!(streamed_text(&chunks), want, "{model} piece {piece}");
            let last = chunks.last().unwrap();
            assert_eq!(last["choices"], json!([]), "{last}");
            assert!(
                last["usage"]["total_tokens"].as_u64().unwrap() > 0,
                "{last}"
            );
            let finish: Vec<&Value> = chunks
                .iter()
                .filter_map(|c| c["choices"].get(0).map(|ch| &ch["finish_reason"]))
                .filter(|f| !f.is_null())
                .collect();
            assert_eq!(finish, [&json!("stop")], "{model}");
        }
        // Without include_usage no usage chunk reaches the client.
        let resp = gw
            .post(
                "/v1/completions",
                &json!({"model": "instruct", "prompt": "Once", "stream": true}),
            )
            .await;
        let chunks = completion_chunks(&resp);
        assert!(
            chunks
                .iter()
                .all(|c| c.get("usage").is_none_or(|u| u.is_null())),
            "{chunks:?}"
        );
    }
}

#[tokio::test]
async fn text_completion_openai_gets_the_prompt_verbatim_at_v1_completions() {
    let up = upstream(9).await;
    let gw = Gateway::start(&config(&up.base()));
    let resp = gw
        .post(
            "/v1/completions",
            &json!({"model": "instruct", "prompt": "def fib(n):\n", "max_tokens": 40, "stop": ["\n\n"], "seed": 3}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let sent = up.last();
    assert_eq!(sent.path, "/v1/completions");
    assert_eq!(sent.header("authorization"), Some("Bearer sk-upstream"));
    let body = sent.json();
    assert_eq!(
        body,
        json!({"prompt": "def fib(n):\n", "model": "gpt-3.5-turbo-instruct", "max_tokens": 40, "stop": ["\n\n"], "seed": 3})
    );
    let c = resp.json();
    assert_eq!(c["object"], "text_completion");
    assert_eq!(c["choices"][0]["text"], " upon a time");
    assert_eq!(c["choices"][0]["finish_reason"], "length");
    assert_eq!(c["usage"]["total_tokens"], 20);

    // Chat calls reach it too (LiteLLM does the same), as a prompt.
    let resp = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "instruct", "messages": [{"role": "user", "content": "Once"}]}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        resp.json()["choices"][0]["message"]["content"],
        " upon a time"
    );
    assert_eq!(up.last().json()["prompt"], "Once");

    // The client's own body passes through: fields only the completions API has (`suffix`,
    // `echo`, `best_of`, `logprobs`) reach the upstream as sent, and the stream comes back
    // byte for byte.
    let resp = gw
        .post(
            "/v1/completions",
            &json!({"model": "instruct", "prompt": "a", "suffix": "z", "echo": true, "best_of": 2, "logprobs": 1}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        up.last().json(),
        json!({"model": "gpt-3.5-turbo-instruct", "prompt": "a", "suffix": "z", "echo": true, "best_of": 2, "logprobs": 1})
    );
    let resp = gw
        .post(
            "/v1/completions",
            &json!({"model": "instruct", "prompt": "a", "stream": true, "stream_options": {"include_usage": true}}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    // Byte for byte up to the usage chunk, which gains the call's `cost` as on chat.
    let sent = String::from_utf8(text_completion_sse(&["Once", " upon", " a tïme"])).unwrap();
    let text = resp.text();
    let usage_at = sent.find(r#"data: {"choices":[],"#).unwrap();
    assert_eq!(text[..usage_at], sent[..usage_at]);
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let usage: Value =
        serde_json::from_str(text[usage_at + 6..].split("\n\n").next().unwrap()).unwrap();
    assert_eq!(usage["usage"]["total_tokens"], 6, "{usage}");
    assert!(usage["usage"]["cost"].as_f64() > Some(0.0), "{usage}");
}

#[tokio::test]
async fn refusals_are_openai_errors_naming_the_field() {
    let up = upstream(9).await;
    let gw = Gateway::start(&config(&up.base()));
    for (body, param) in [
        (json!({"model": "gpt-4o", "prompt": ["a", 2]}), "prompt"),
        (json!({"model": "gpt-4o", "prompt": []}), "prompt"),
        (json!({"model": "gpt-4o", "prompt": [1, 2, 3]}), "prompt"),
        (json!({"model": "gpt-4o"}), "prompt"),
        (
            json!({"model": "gpt-4o", "prompt": "a", "suffix": "z"}),
            "suffix",
        ),
        (
            json!({"model": "gpt-4o", "prompt": "a", "echo": true}),
            "echo",
        ),
        (
            json!({"model": "gpt-4o", "prompt": "a", "logprobs": 1}),
            "logprobs",
        ),
        (json!({"prompt": "a"}), "model"),
    ] {
        let e = gw.post("/v1/completions", &body).await.expect_error(400);
        assert_eq!(e["param"], param, "{body}: {e}");
    }
    assert_eq!(up.count(), 0);
    gw.post("/v1/completions", &json!({"model": "nope", "prompt": "a"}))
        .await
        .expect_error(404);
    gw.get("/v1/completions", &[]).await.expect_error(405);
}

/// The official OpenAI Python SDK's `completions.create`, whole and streamed with usage, over a
/// chat deployment and a text-completion-openai one; a field chat cannot take is its
/// BadRequestError on the chat deployment and reaches the upstream on the other.
#[tokio::test]
async fn the_openai_python_sdk_completions_client_works() {
    let up = upstream(11).await;
    let gw = Gateway::start(&config(&up.base()));
    for (model, whole, streamed) in [
        ("gpt-4o", "Hello wörld", "Hello wörld"),
        ("instruct", " upon a time", "Once upon a tïme"),
    ] {
        let seen = openai_sdk_ingress(gw.port, &["completions", model]).await;
        assert_eq!(seen["whole"]["text"], whole, "{seen}");
        assert_eq!(seen["whole"]["object"], "text_completion");
        assert_eq!(seen["stream"]["text"], streamed, "{seen}");
        assert!(seen["stream"]["usage"][1].as_u64() > Some(0), "{seen}");
        if model == "gpt-4o" {
            // Translated onto chat, `suffix` has no equivalent: refused, naming it.
            assert_eq!(seen["error"]["status"], 400, "{seen}");
        } else {
            // Passed through: the upstream with the completions API takes `suffix` itself.
            assert!(seen["error"].is_null(), "{seen}");
            assert_eq!(up.last().json()["suffix"], "y");
        }
    }
}

/// Keys and spend as for chat: no key is a 401; a virtual key's call is logged in LiteLLM's
/// spend table with call type `atext_completion`.
#[tokio::test]
async fn keys_are_checked_and_spend_is_logged_as_atext_completion() {
    const MASTER: &str = "sk-master-1234";
    let up = upstream(9).await;
    let gw = Gateway::start(&format!(
        "{}general_settings:\n  master_key: {MASTER}\n",
        config(&up.base())
    ));
    let body = json!({"model": "gpt-4o", "prompt": "hi"}).to_string();
    let json_ct = ("content-type", "application/json");
    gw.post_with("/v1/completions", &[json_ct], body.as_bytes())
        .await
        .expect_error(401);
    assert_eq!(up.count(), 0);
    let master = format!("Bearer {MASTER}");
    let r = gw
        .post_with(
            "/key/generate",
            &[json_ct, ("authorization", &master)],
            b"{}",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let key = r.json()["key"].as_str().unwrap().to_string();
    let bearer = format!("Bearer {key}");
    let r = gw
        .post_with(
            "/v1/completions",
            &[json_ct, ("authorization", &bearer)],
            body.as_bytes(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let hash = switchboard::keys::hex(&switchboard::keys::hash_key(&key));
    let url = format!("sqlite://{}", gw.dir.join("switchboard.db").display());
    let store = switchboard::store::Store::open(&url).await.unwrap();
    let logged = format!(
        "SELECT CAST(COUNT(*) AS REAL) FROM \"LiteLLM_SpendLogs\" WHERE api_key = '{hash}' AND call_type = 'atext_completion' AND model_group = 'gpt-4o' AND spend > 0"
    );
    assert!(
        wait_until_async(
            async || store.scalar_f64(&logged).await.unwrap_or(0.0) == 1.0,
            Duration::from_secs(15)
        )
        .await,
        "the call's spend row"
    );

    // A key's rpm_limit holds on this route as on chat: the second call in the minute is
    // LiteLLM's 429, in OpenAI's shape, and never reaches the upstream.
    let limited = gw.generate_key(MASTER, json!({"rpm_limit": 1})).await;
    let before = up.count();
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        gw.post_as(&limited, "/v1/completions", &body).await.status,
        200
    );
    let refused = gw.post_as(&limited, "/v1/completions", &body).await;
    refused.expect_rpm_refusal(1);
    assert_eq!(refused.expect_error(429)["type"], "rate_limit_error");
    assert_eq!(up.count(), before + 1);
}
