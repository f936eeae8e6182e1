//! The response cache end to end: the real gateway binary, a counting mock OpenAI upstream,
//! `litellm_settings.cache` with the local backend. Stores happen off the request path, so a
//! test waits for the `store` counter on `/metrics` before it expects a hit.

#[path = "support/redis.rs"]
mod redis_server;
mod support;

use redis_server::Redis;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::*;

const STORE: &[&str] = &["event=\"store\""];

fn config(base: &str, cache_params: &str) -> String {
    format!(
        r#"
model_list:
  - model_name: gpt-4o
    litellm_params: {{model: openai/gpt-4o, api_base: {base}/v1, api_key: sk-up, input_cost_per_token: 0.000001, output_cost_per_token: 0.000002}}
  - model_name: other
    litellm_params: {{model: openai/gpt-4o, api_base: {base}/v1, api_key: sk-up}}
  - model_name: embed
    litellm_params: {{model: openai/text-embedding-3-small, api_base: {base}/v1, api_key: sk-up}}
litellm_settings:
  cache: true
  cache_params: {cache_params}
"#
    )
}

/// A mock that answers chat (whole or streamed, by the request's `stream`) and embeddings, each
/// answer numbered so a test can tell which upstream call produced it.
async fn upstream() -> (MockUpstream, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let up = MockUpstream::start(move |req| {
        let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
        if req.path.ends_with("/embeddings") {
            return Reply::json(200, openai::embeddings(1));
        }
        if req.path.ends_with("/responses") {
            return native_responses_reply(n, req.json()["stream"] == true);
        }
        let answer = format!("answer {n}");
        if req.json()["stream"] == true {
            let body = openai::sse(&["answer", " ", &n.to_string()], true);
            Reply::stream("text/event-stream", &body, 7, Duration::ZERO)
        } else {
            Reply::json(200, openai::completion(&answer))
        }
    })
    .await;
    (up, calls)
}

/// The Responses API answered natively (an OpenAI deployment gets `/v1/responses` passed
/// through), numbered like the chat answers.
fn native_responses_reply(n: usize, stream: bool) -> Reply {
    let usage = json!({"input_tokens": 9, "output_tokens": 3, "total_tokens": 12});
    let response = |status: &str, usage: Value| {
        json!({"id": format!("resp_{n}"), "object": "response", "status": status, "model": "gpt-4o",
               "output": [{"id": format!("msg_{n}"), "type": "message", "role": "assistant",
                           "content": [{"type": "output_text", "text": format!("answer {n}")}]}],
               "usage": usage})
    };
    if !stream {
        return Reply::json(200, response("completed", usage));
    }
    let events = [
        json!({"type": "response.created", "sequence_number": 0, "response": response("in_progress", Value::Null)}),
        json!({"type": "response.output_text.delta", "sequence_number": 1, "item_id": format!("msg_{n}"), "output_index": 0, "content_index": 0, "delta": format!("answer {n}")}),
        json!({"type": "response.completed", "sequence_number": 2, "response": response("completed", usage)}),
    ];
    let body: String = events
        .iter()
        .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()))
        .collect();
    Reply::stream("text/event-stream", body.as_bytes(), 11, Duration::ZERO)
}

fn chat(extra: Value) -> Value {
    let mut body =
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "What is 2+2?"}]});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

async fn stores(gw: &Gateway, at_least: f64) {
    gw.wait_for_metric("switchboard_cache_events_total", STORE, |v| v >= at_least)
        .await;
}

fn content(resp: &Response) -> String {
    resp.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn a_repeat_in_any_key_order_and_spacing_is_a_hit_that_never_reaches_the_upstream() {
    let (up, calls) = upstream().await;
    let gw = Gateway::start(&config(&up.base(), "{type: local}"));
    let miss = gw
        .post("/v1/chat/completions", &chat(json!({"temperature": 0.5})))
        .await;
    assert_eq!(miss.status, 200, "{}", miss.text());
    assert_eq!(miss.header("x-switchboard-cache"), Some("miss"));
    let key = miss
        .header("x-litellm-cache-key")
        .expect("key on a miss")
        .to_string();
    assert_eq!(key.len(), 32, "{key}");
    stores(&gw, 1.0).await;

    // Same request: other key order, whitespace, an escape, 0.50 for 0.5, a user and metadata.
    let body = br#"{ "temperature" : 0.50, "user": "u-7", "metadata": {"x": 1},
        "messages" : [ { "content" : "What is 2+2\u003f", "role" : "user" } ], "model":"gpt-4o" }"#;
    let hit = gw
        .post_with(
            "/v1/chat/completions",
            &[("content-type", "application/json")],
            body,
        )
        .await;
    assert_eq!(hit.status, 200, "{}", hit.text());
    assert_eq!(hit.header("x-switchboard-cache"), Some("hit"));
    assert_eq!(hit.header("x-litellm-cache-key"), Some(key.as_str()));
    assert_eq!(
        hit.header("x-litellm-response-cost"),
        Some("0"),
        "a hit costs nothing"
    );
    assert_eq!(hit.json(), miss.json(), "the stored answer, unchanged");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the hit never reached the upstream"
    );
    let scrape = gw
        .wait_for_metric("switchboard_cache_events_total", &["event=\"hit\""], |v| {
            v >= 1.0
        })
        .await;
    assert_eq!(
        metric_value(
            &scrape,
            "switchboard_cache_events_total",
            &["type=\"local\"", "event=\"miss\""]
        ),
        Some(1.0)
    );
    assert!(metric_value(&scrape, "switchboard_cache_bytes", &["type=\"local\""]).unwrap() > 0.0);
}

#[tokio::test]
async fn anything_that_changes_the_answer_misses() {
    let (up, calls) = upstream().await;
    let gw = Gateway::start(&config(&up.base(), "{type: local}"));
    let base = gw.post("/v1/chat/completions", &chat(json!({}))).await;
    assert_eq!(base.status, 200);
    stores(&gw, 1.0).await;
    let variants = [
        json!({"seed": 7}),
        json!({"n": 2}),
        json!({"temperature": 0}),
        json!({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]}),
        json!({"response_format": {"type": "json_object"}}),
        json!({"model": "other"}),
        json!({"messages": [{"role": "user", "content": "What is 2+3?"}]}),
    ];
    let mut keys = vec![base.header("x-litellm-cache-key").unwrap().to_string()];
    for v in &variants {
        let resp = gw.post("/v1/chat/completions", &chat(v.clone())).await;
        assert_eq!(resp.status, 200, "{v}: {}", resp.text());
        assert_eq!(resp.header("x-switchboard-cache"), Some("miss"), "{v}");
        keys.push(resp.header("x-litellm-cache-key").unwrap().to_string());
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1 + variants.len());
    keys.sort();
    keys.dedup();
    assert_eq!(
        keys.len(),
        1 + variants.len(),
        "every variant has its own key"
    );
}

#[tokio::test]
async fn a_stream_is_answered_from_a_whole_entry_and_a_whole_request_from_a_streamed_one() {
    let (up, calls) = upstream().await;
    let gw = Gateway::start(&config(&up.base(), "{type: local}"));

    // Whole miss, then a streaming hit replayed as SSE with the usage chunk it asked for.
    let whole = gw.post("/v1/chat/completions", &chat(json!({}))).await;
    assert_eq!(content(&whole), "answer 1");
    stores(&gw, 1.0).await;
    let streamed = gw
        .post_stream(
            "/v1/chat/completions",
            &chat(json!({"stream": true, "stream_options": {"include_usage": true}})),
        )
        .await;
    assert_eq!(streamed.header("x-switchboard-cache"), Some("hit"));
    assert_eq!(streamed.header("content-type"), Some("text/event-stream"));
    let resp = streamed.into_response().await;
    let chunks = openai_chunks(&resp);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(stream_text(&chunks), "answer 1");
    let finish: Vec<_> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["finish_reason"].as_str())
        .collect();
    assert_eq!(finish, ["stop"]);
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"], whole.json()["usage"]);
    assert!(resp.text().ends_with("data: [DONE]\n\n"));
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // A streamed miss (another prompt) is stored whole: a plain request then hits it.
    let q = json!({"messages": [{"role": "user", "content": "stream first"}]});
    let mut ask = chat(q.clone());
    ask["stream"] = json!(true);
    let live = gw.post_stream("/v1/chat/completions", &ask).await;
    assert_eq!(live.header("x-switchboard-cache"), Some("miss"));
    let live = live.into_response().await;
    assert_eq!(stream_text(&openai_chunks(&live)), "answer 2");
    stores(&gw, 2.0).await;
    let hit = gw.post("/v1/chat/completions", &chat(q)).await;
    assert_eq!(hit.header("x-switchboard-cache"), Some("hit"));
    assert_eq!(content(&hit), "answer 2");
    assert_eq!(hit.json()["object"], "chat.completion");
    assert_eq!(
        hit.json()["usage"]["total_tokens"],
        8,
        "the stream's usage is kept"
    );
    // And streamed again, without usage this time: byte-for-byte what a live stream carries,
    // but for the chunk framing of the text.
    let again = gw
        .post_stream("/v1/chat/completions", &ask)
        .await
        .into_response()
        .await;
    let chunks = openai_chunks(&again);
    assert_eq!(stream_text(&chunks), "answer 2");
    assert!(
        chunks.iter().all(|c| c.get("usage").is_none()),
        "usage only when asked"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn no_cache_skips_the_lookup_and_no_store_the_write() {
    let (up, calls) = upstream().await;
    let gw = Gateway::start(&config(&up.base(), "{type: local}"));
    let first = gw
        .post(
            "/v1/chat/completions",
            &chat(json!({"cache": {"no-store": true}})),
        )
        .await;
    assert_eq!(first.header("x-switchboard-cache"), Some("miss"));
    let second = gw.post("/v1/chat/completions", &chat(json!({}))).await;
    assert_eq!(
        second.header("x-switchboard-cache"),
        Some("miss"),
        "no-store kept nothing"
    );
    assert_eq!(content(&second), "answer 2");
    stores(&gw, 1.0).await;
    let fresh = gw
        .post(
            "/v1/chat/completions",
            &chat(json!({"cache": {"no-cache": true}})),
        )
        .await;
    assert_eq!(fresh.header("x-switchboard-cache"), Some("miss"));
    assert_eq!(content(&fresh), "answer 3", "no-cache went upstream");
    // The controls are the gateway's: OpenAI would refuse an unknown `cache` field.
    assert_eq!(up.last().json().get("cache"), None);
    // no-cache still stored its fresh answer.
    stores(&gw, 2.0).await;
    let hit = gw.post("/v1/chat/completions", &chat(json!({}))).await;
    assert_eq!(
        (hit.header("x-switchboard-cache"), content(&hit).as_str()),
        (Some("hit"), "answer 3")
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    let bad = gw
        .post(
            "/v1/chat/completions",
            &chat(json!({"cache": {"ttl": "soon"}})),
        )
        .await;
    let err = bad.expect_error(400);
    assert_eq!(err["param"], "cache", "{err}");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn ttl_expires_entries_and_s_maxage_refuses_older_ones() {
    let (up, calls) = upstream().await;
    let gw = Gateway::start(&config(&up.base(), "{type: local}"));
    gw.post("/v1/chat/completions", &chat(json!({"cache": {"ttl": 1}})))
        .await;
    stores(&gw, 1.0).await;
    let hit = gw.post("/v1/chat/completions", &chat(json!({}))).await;
    assert_eq!(hit.header("x-switchboard-cache"), Some("hit"));
    // s-maxage: 0 accepts no entry; a generous one accepts it.
    let strict = gw
        .post(
            "/v1/chat/completions",
            &chat(json!({"cache": {"s-maxage": 0, "no-store": true}})),
        )
        .await;
    assert_eq!(strict.header("x-switchboard-cache"), Some("miss"));
    let lenient = gw
        .post(
            "/v1/chat/completions",
            &chat(json!({"cache": {"s-maxage": 60}})),
        )
        .await;
    assert_eq!(lenient.header("x-switchboard-cache"), Some("hit"));
    // The entry expires after its 1 s ttl (no-store: polling does not store it again).
    let expired = wait_until_async(
        async || {
            gw.post(
                "/v1/chat/completions",
                &chat(json!({"cache": {"no-store": true}})),
            )
            .await
            .header("x-switchboard-cache")
                == Some("miss")
        },
        Duration::from_secs(6),
    )
    .await;
    assert!(expired, "the entry outlived its ttl");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn namespaces_keep_entries_apart() {
    let (up, _calls) = upstream().await;
    let gw = Gateway::start(&config(&up.base(), "{type: local, namespace: team-a}"));
    let a = gw.post("/v1/chat/completions", &chat(json!({}))).await;
    let key = a.header("x-litellm-cache-key").unwrap().to_string();
    assert!(key.starts_with("team-a:"), "{key}");
    stores(&gw, 1.0).await;
    let b = gw
        .post(
            "/v1/chat/completions",
            &chat(json!({"cache": {"namespace": "team-b"}})),
        )
        .await;
    assert_eq!(b.header("x-switchboard-cache"), Some("miss"));
    assert_eq!(
        b.header("x-litellm-cache-key").unwrap(),
        key.replace("team-a:", "team-b:")
    );
    let meta = gw
        .post(
            "/v1/chat/completions",
            &chat(json!({"metadata": {"redis_namespace": "team-a"}})),
        )
        .await;
    assert_eq!(meta.header("x-switchboard-cache"), Some("hit"));
}

#[tokio::test]
async fn default_off_caches_only_requests_that_opt_in() {
    let (up, calls) = upstream().await;
    let gw = Gateway::start(&config(&up.base(), "{type: local, mode: default_off}"));
    let plain = gw.post("/v1/chat/completions", &chat(json!({}))).await;
    assert_eq!(plain.status, 200);
    assert!(
        plain.header("x-litellm-cache-key").is_none(),
        "not cacheable"
    );
    assert!(plain.header("x-switchboard-cache").is_none());
    let opt_in = json!({"cache": {"use-cache": true}});
    let miss = gw.post("/v1/chat/completions", &chat(opt_in.clone())).await;
    assert_eq!(miss.header("x-switchboard-cache"), Some("miss"));
    stores(&gw, 1.0).await;
    let hit = gw.post("/v1/chat/completions", &chat(opt_in)).await;
    assert_eq!(hit.header("x-switchboard-cache"), Some("hit"));
    let plain = gw.post("/v1/chat/completions", &chat(json!({}))).await;
    assert_eq!(
        content(&plain),
        "answer 3",
        "without use-cache the cache is not used"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn the_local_cache_stays_within_its_byte_bound_by_evicting_the_oldest() {
    let (up, calls) = upstream().await;
    // Each entry is about 400 bytes of answer + key + overhead: four fit, not ten.
    let gw = Gateway::start(&config(&up.base(), "{type: local, max_bytes: 2048}"));
    for i in 0..10 {
        let q = json!({"messages": [{"role": "user", "content": format!("question {i}")}]});
        gw.post("/v1/chat/completions", &chat(q)).await;
        stores(&gw, (i + 1) as f64).await;
    }
    let scrape = gw
        .wait_for_metric(
            "switchboard_cache_events_total",
            &["event=\"eviction\""],
            |v| v >= 5.0,
        )
        .await;
    let bytes = metric_value(&scrape, "switchboard_cache_bytes", &["type=\"local\""]).unwrap();
    assert!(bytes > 0.0 && bytes <= 2048.0, "{bytes}");
    // The oldest was evicted, the newest is still there.
    let newest = json!({"messages": [{"role": "user", "content": "question 9"}]});
    let r = gw.post("/v1/chat/completions", &chat(newest)).await;
    assert_eq!(r.header("x-switchboard-cache"), Some("hit"));
    let oldest = json!({"messages": [{"role": "user", "content": "question 0"}], "cache": {"no-store": true}});
    let r = gw.post("/v1/chat/completions", &chat(oldest)).await;
    assert_eq!(r.header("x-switchboard-cache"), Some("miss"));
    assert_eq!(calls.load(Ordering::SeqCst), 11);
}

#[tokio::test]
async fn embeddings_are_cached_and_supported_call_types_limit_the_cache() {
    let (up, calls) = upstream().await;
    let gw = Gateway::start(&config(&up.base(), "{type: local}"));
    let body = json!({"model": "embed", "input": ["hello"]});
    let miss = gw.post("/v1/embeddings", &body).await;
    assert_eq!(
        miss.header("x-switchboard-cache"),
        Some("miss"),
        "{}",
        miss.text()
    );
    stores(&gw, 1.0).await;
    let hit = gw.post("/v1/embeddings", &body).await;
    assert_eq!(hit.header("x-switchboard-cache"), Some("hit"));
    assert_eq!(hit.json()["data"], miss.json()["data"]);
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    let (up, calls) = upstream().await;
    let gw = Gateway::start(&config(
        &up.base(),
        "{type: local, supported_call_types: [acompletion]}",
    ));
    for _ in 0..2 {
        let r = gw.post("/v1/embeddings", &body).await;
        assert!(r.header("x-switchboard-cache").is_none());
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

const MASTER: &str = "sk-master-cache";

async fn as_key(gw: &Gateway, key: &str, path: &str, body: &Value) -> Response {
    gw.post_with(
        path,
        &[
            ("content-type", "application/json"),
            ("authorization", &format!("Bearer {key}")),
        ],
        body.to_string().as_bytes(),
    )
    .await
}

/// `hits` cache hits for `key`, then repeats until one is refused with a 429 (its settle
/// charges the hits' stored tokens after the answers); the refusal's text.
async fn hits_then_refused(
    gw: &Gateway,
    key: &str,
    path: &str,
    ask: &Value,
    hits: usize,
) -> String {
    for _ in 0..hits {
        let hit = as_key(gw, key, path, ask).await;
        assert_eq!(hit.status, 200, "{}", hit.text());
        assert_eq!(hit.header("x-switchboard-cache"), Some("hit"));
    }
    let mut last = String::new();
    let refused = wait_until_async(
        async || {
            let r = as_key(gw, key, path, ask).await;
            last = r.text();
            r.status == 429
        },
        Duration::from_secs(5),
    )
    .await;
    assert!(refused, "hits were never charged their tokens: {last}");
    last
}

async fn new_key(gw: &Gateway) -> String {
    let r = as_key(gw, MASTER, "/key/generate", &json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["key"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn hits_are_logged_at_zero_spend_and_a_key_scoped_cache_keeps_keys_apart() {
    let (up, calls) = upstream().await;
    let cfg = format!(
        "{}general_settings: {{master_key: {MASTER}}}\n",
        config(&up.base(), "{type: local, scope: key}")
    );
    let gw = Gateway::start(&cfg);
    let (a, b) = (new_key(&gw).await, new_key(&gw).await);
    let path = "/v1/chat/completions";
    let miss = as_key(&gw, &a, path, &chat(json!({}))).await;
    assert_eq!(
        miss.header("x-switchboard-cache"),
        Some("miss"),
        "{}",
        miss.text()
    );
    assert!(
        miss.header("x-litellm-response-cost")
            .unwrap()
            .parse::<f64>()
            .unwrap()
            > 0.0
    );
    stores(&gw, 1.0).await;
    let hit = as_key(&gw, &a, path, &chat(json!({}))).await;
    assert_eq!(hit.header("x-switchboard-cache"), Some("hit"));
    // Another key does not see key a's entry.
    let other = as_key(&gw, &b, path, &chat(json!({"cache": {"no-store": true}}))).await;
    assert_eq!(other.header("x-switchboard-cache"), Some("miss"));
    assert_ne!(
        other.header("x-litellm-cache-key"),
        hit.header("x-litellm-cache-key")
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    // Key a's spend log: the miss priced, the hit at 0 marked cache_hit, both with the key.
    let mut rows = Vec::new();
    let logged = wait_until_async(
        async || {
            let r = gw
                .get(
                    &format!("/spend/logs?api_key={a}"),
                    &[("authorization", &format!("Bearer {MASTER}"))],
                )
                .await;
            rows = r.json().as_array().cloned().unwrap_or_default();
            rows.len() == 2
        },
        Duration::from_secs(15),
    )
    .await;
    assert!(logged, "two spend rows for key a: {rows:?}");
    let hit_row = rows
        .iter()
        .find(|r| r["cache_hit"] == "True")
        .expect("a hit row");
    assert_eq!(hit_row["spend"], 0.0);
    assert_eq!(
        hit_row["cache_key"],
        hit.header("x-litellm-cache-key").unwrap()
    );
    let miss_row = rows
        .iter()
        .find(|r| r["cache_hit"] == "False")
        .expect("a miss row");
    assert!(miss_row["spend"].as_f64().unwrap() > 0.0);
}

#[tokio::test]
async fn two_instances_share_one_redis_cache_and_a_dead_redis_is_a_bounded_miss() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let (up, calls) = upstream().await;
    let cfg = config(
        &up.base(),
        &format!("{{type: redis, url: \"{}\", ttl: 60}}", redis.url()),
    );
    let (one, two) = (Gateway::start(&cfg), Gateway::start(&cfg));
    let miss = one.post("/v1/chat/completions", &chat(json!({}))).await;
    assert_eq!(
        miss.header("x-switchboard-cache"),
        Some("miss"),
        "{}",
        miss.text()
    );
    let key = miss.header("x-litellm-cache-key").unwrap().to_string();
    one.wait_for_metric(
        "switchboard_cache_events_total",
        &["type=\"redis\"", "event=\"store\""],
        |v| v >= 1.0,
    )
    .await;
    assert_eq!(
        redis.cmd(&["EXISTS", &key]).as_deref(),
        Some(":1"),
        "in Redis under its key"
    );
    let ttl: i64 = redis.cmd(&["TTL", &key]).unwrap()[1..].parse().unwrap();
    assert!(
        (1..=60).contains(&ttl),
        "stored with the configured ttl: {ttl}"
    );
    // The other instance answers from the same entry, streamed this time.
    let hit = two.post("/v1/chat/completions", &chat(json!({}))).await;
    assert_eq!(hit.header("x-switchboard-cache"), Some("hit"));
    assert_eq!(hit.json(), miss.json());
    let streamed = two
        .post_stream("/v1/chat/completions", &chat(json!({"stream": true})))
        .await
        .into_response()
        .await;
    assert_eq!(stream_text(&openai_chunks(&streamed)), "answer 1");
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // Redis dies: requests are still answered (misses), each within a small bound.
    redis.kill();
    for i in 0..3 {
        let started = std::time::Instant::now();
        let r = two.post("/v1/chat/completions", &chat(json!({}))).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-switchboard-cache"), Some("miss"));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "request {i} took {:?}",
            started.elapsed()
        );
    }
    two.wait_for_metric(
        "switchboard_cache_events_total",
        &["type=\"redis\"", "event=\"error\""],
        |v| v >= 1.0,
    )
    .await;
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn a_key_may_send_only_its_allowed_cache_controls() {
    let (up, calls) = upstream().await;
    let cfg = format!(
        "{}general_settings: {{master_key: {MASTER}}}\n",
        config(&up.base(), "{type: local}")
    );
    let gw = Gateway::start(&cfg);
    let made = as_key(
        &gw,
        MASTER,
        "/key/generate",
        &json!({"allowed_cache_controls": ["no-cache"]}),
    )
    .await;
    assert_eq!(made.status, 200, "{}", made.text());
    assert_eq!(made.json()["allowed_cache_controls"], json!(["no-cache"]));
    let key = made.json()["key"].as_str().unwrap().to_string();
    let path = "/v1/chat/completions";

    // A listed control is fine; any other is LiteLLM's 403, whatever its value, before any
    // upstream call.
    let ok = as_key(&gw, &key, path, &chat(json!({"cache": {"no-cache": true}}))).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    for cache in [
        json!({"ttl": 60}),
        json!({"no-cache": true, "no-store": false}),
    ] {
        let refused = as_key(&gw, &key, path, &chat(json!({ "cache": cache }))).await;
        let err = refused.expect_error(403);
        let control = cache
            .as_object()
            .unwrap()
            .keys()
            .next_back()
            .unwrap()
            .clone();
        assert_eq!(
            err["message"],
            format!("Not allowed to set {control} as a cache control. Contact admin to change permissions.")
        );
        assert_eq!(err["type"], "permission_error");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // The master key and a key without a list may send any control.
    let master = as_key(&gw, MASTER, path, &chat(json!({"cache": {"ttl": 60}}))).await;
    assert_eq!(master.status, 200, "{}", master.text());

    // /key/update widens the list ([] allows everything) and /key/info shows it.
    let update = json!({"key": key, "allowed_cache_controls": []});
    let r = as_key(&gw, MASTER, "/key/update", &update).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = as_key(&gw, &key, path, &chat(json!({"cache": {"ttl": 60}}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let update = json!({"key": key, "allowed_cache_controls": ["ttl", 5]});
    let r = as_key(&gw, MASTER, "/key/update", &update).await;
    assert_eq!(r.expect_error(400)["param"], "allowed_cache_controls");
}

#[tokio::test]
async fn an_alias_and_its_group_share_entries() {
    let (up, calls) = upstream().await;
    let cfg = format!(
        "{}router_settings: {{model_group_alias: {{smart: gpt-4o}}}}\n",
        config(&up.base(), "{type: local}")
    );
    let gw = Gateway::start(&cfg);
    let miss = gw
        .post("/v1/chat/completions", &chat(json!({"model": "smart"})))
        .await;
    assert_eq!(
        miss.header("x-switchboard-cache"),
        Some("miss"),
        "{}",
        miss.text()
    );
    stores(&gw, 1.0).await;
    let hit = gw.post("/v1/chat/completions", &chat(json!({}))).await;
    assert_eq!(hit.header("x-switchboard-cache"), Some("hit"));
    assert_eq!(
        hit.header("x-litellm-cache-key"),
        miss.header("x-litellm-cache-key")
    );
    // Another group serving the same upstream model is another entry.
    let other = gw
        .post("/v1/chat/completions", &chat(json!({"model": "other"})))
        .await;
    assert_eq!(other.header("x-switchboard-cache"), Some("miss"));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// The embedding the mock gives a text: distinct per text, so a merged answer shows which
/// input each item came from.
fn vector(text: &str) -> Value {
    json!([text.len() as f64, text.bytes().map(f64::from).sum::<f64>()])
}

#[tokio::test]
async fn embeddings_are_cached_per_input_and_only_the_missing_inputs_go_upstream() {
    per_input("{type: local}", "").await;
}

#[tokio::test]
async fn embeddings_are_cached_per_input_in_redis_too() {
    let Some(redis) = Redis::start() else {
        return;
    };
    // A loaded test machine may take longer than the default 50 ms for a first round trip.
    per_input(
        &format!("{{type: redis, url: \"{}\"}}", redis.url()),
        "switchboard: {redis_timeout_ms: 2000}\n",
    )
    .await;
}

async fn per_input(cache_params: &str, extra_yaml: &str) {
    let sent: Arc<std::sync::Mutex<Vec<Value>>> = Arc::default();
    let seen = sent.clone();
    let up = MockUpstream::start(move |req| {
        let input = req.json()["input"].clone();
        seen.lock().unwrap().push(input.clone());
        let data: Vec<Value> = input
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": vector(t.as_str().unwrap())}))
            .collect();
        let n = data.len();
        Reply::json(
            200,
            json!({"object": "list", "data": data, "model": "text-embedding-3-small",
                   "usage": {"prompt_tokens": n, "total_tokens": n}}),
        )
    })
    .await;
    let gw = Gateway::start(&(config(&up.base(), cache_params) + extra_yaml));
    let embed = async |input: Value, extra: Value| {
        let mut body = json!({"model": "embed", "input": input});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let r = gw.post("/v1/embeddings", &body).await;
        assert_eq!(r.status, 200, "{}", r.text());
        r
    };
    let check = |r: &Response, texts: &[&str]| {
        let v = r.json();
        let data = v["data"].as_array().unwrap();
        assert_eq!(data.len(), texts.len(), "{v}");
        for (i, (d, t)) in data.iter().zip(texts).enumerate() {
            assert_eq!(
                (d["index"].as_u64(), &d["embedding"]),
                (Some(i as u64), &vector(t)),
                "{v}"
            );
        }
    };

    let first = embed(json!(["alpha", "beta"]), json!({})).await;
    assert_eq!(first.header("x-switchboard-cache"), Some("miss"));
    check(&first, &["alpha", "beta"]);
    stores(&gw, 2.0).await;

    // Two of three inputs are cached: only the third goes upstream; the answer is in the
    // client's order and its usage is the upstream's.
    let partial = embed(json!(["beta", "gamma", "alpha"]), json!({})).await;
    assert_eq!(partial.header("x-switchboard-cache"), Some("miss"));
    check(&partial, &["beta", "gamma", "alpha"]);
    assert_eq!(partial.json()["usage"]["prompt_tokens"], 1);
    assert_eq!(sent.lock().unwrap().last().unwrap(), &json!(["gamma"]));
    stores(&gw, 3.0).await;

    // Every input cached (a lone string too): the upstream is not asked, usage is 0.
    let hit = embed(json!(["gamma", "alpha"]), json!({})).await;
    assert_eq!(hit.header("x-switchboard-cache"), Some("hit"));
    check(&hit, &["gamma", "alpha"]);
    assert_eq!(hit.json()["usage"]["prompt_tokens"], 0);
    let one = embed(json!("beta"), json!({})).await;
    assert_eq!(one.header("x-switchboard-cache"), Some("hit"));
    check(&one, &["beta"]);
    assert_eq!(sent.lock().unwrap().len(), 2);

    // A parameter that changes the vectors is another entry.
    let other = embed(json!(["alpha"]), json!({"dimensions": 8})).await;
    assert_eq!(other.header("x-switchboard-cache"), Some("miss"));
    assert_eq!(sent.lock().unwrap().len(), 3);
}

/// The mock embedder's vector for a prompt: paraphrases of "2+2" point the same way.
fn meaning(prompt: &str) -> Value {
    let p = prompt.to_lowercase();
    if p.contains("capital") {
        json!([0.0, 1.0])
    } else if p.contains("roughly") {
        json!([1.0, 0.6])
    } else if p.contains("two plus two") {
        json!([1.0, 0.1])
    } else {
        json!([1.0, 0.0])
    }
}

#[tokio::test]
async fn redis_semantic_answers_a_paraphrase_per_key_above_the_threshold() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let chats = Arc::new(AtomicUsize::new(0));
    let embedded: Arc<std::sync::Mutex<Vec<Value>>> = Arc::default();
    let (seen_chats, seen_embeds) = (chats.clone(), embedded.clone());
    let up = MockUpstream::start(move |req| {
        if req.path.ends_with("/embeddings") {
            let input = req.json()["input"].clone();
            seen_embeds.lock().unwrap().push(input.clone());
            let text = input.as_str().unwrap_or_default().to_string();
            return Reply::json(
                200,
                json!({"object": "list", "model": "e",
                       "data": [{"object": "embedding", "index": 0, "embedding": meaning(&text)}],
                       "usage": {"prompt_tokens": 3, "total_tokens": 3}}),
            );
        }
        let n = seen_chats.fetch_add(1, Ordering::SeqCst) + 1;
        if req.json()["stream"] == true {
            let body = openai::sse(&["answer", " ", &n.to_string()], true);
            Reply::stream("text/event-stream", &body, 7, Duration::ZERO)
        } else {
            Reply::json(200, openai::completion(&format!("answer {n}")))
        }
    })
    .await;
    let cfg = format!(
        "{}general_settings: {{master_key: {MASTER}}}\nswitchboard: {{redis_timeout_ms: 2000}}\n",
        config(
            &up.base(),
            &format!(
                "{{type: redis-semantic, url: \"{}\", similarity_threshold: 0.9, redis_semantic_cache_embedding_model: embed, ttl: 60}}",
                redis.url()
            ),
        )
    );
    let gw = Gateway::start(&cfg);
    let made = as_key(&gw, MASTER, "/key/generate", &json!({})).await;
    let (a, token) = (
        made.json()["key"].as_str().unwrap().to_string(),
        made.json()["token_id"].as_str().unwrap().to_string(),
    );
    let b = new_key(&gw).await;
    let ask = |q: &str| chat(json!({"messages": [{"role": "user", "content": q}]}));
    let path = "/v1/chat/completions";

    let first = as_key(&gw, &a, path, &ask("What is 2+2?")).await;
    assert_eq!(
        first.header("x-switchboard-cache"),
        Some("miss"),
        "{}",
        first.text()
    );
    assert_eq!(
        embedded.lock().unwrap().as_slice(),
        &[json!("What is 2+2?")]
    );
    let list = format!("semantic:gpt-4o:{token}");
    let indexed = wait_until(
        || redis.cmd(&["LLEN", &list]).as_deref() == Some(":1"),
        Duration::from_secs(10),
    )
    .await;
    assert!(indexed, "the prompt's vector is in {list}");

    // A paraphrase (cosine 0.995) is answered from the first answer, streamed or whole.
    let hit = as_key(&gw, &a, path, &ask("And two plus two?")).await;
    assert_eq!(
        hit.header("x-switchboard-cache"),
        Some("hit"),
        "{}",
        hit.text()
    );
    assert_eq!(content(&hit), "answer 1");
    assert_eq!(
        hit.header("x-litellm-cache-key"),
        first.header("x-litellm-cache-key")
    );
    let streamed = gw
        .post_with(
            path,
            &[
                ("authorization", &format!("Bearer {a}")),
                ("content-type", "application/json"),
            ],
            ask("two plus two, please")
                .as_object()
                .map(|o| {
                    let mut o = o.clone();
                    o.insert("stream".into(), json!(true));
                    Value::Object(o).to_string()
                })
                .unwrap()
                .as_bytes(),
        )
        .await;
    assert_eq!(streamed.header("x-switchboard-cache"), Some("hit"));
    assert_eq!(stream_text(&openai_chunks(&streamed)), "answer 1");
    assert_eq!(chats.load(Ordering::SeqCst), 1);

    // Below the threshold (cosine 0.86) or another meaning: a miss.
    let near = as_key(&gw, &a, path, &ask("roughly 2 and 2?")).await;
    assert_eq!(near.header("x-switchboard-cache"), Some("miss"));
    let other = as_key(&gw, &a, path, &ask("The capital of France?")).await;
    assert_eq!(other.header("x-switchboard-cache"), Some("miss"));
    // Another key does not see key a's prompts.
    let b_ask = as_key(&gw, &b, path, &ask("And two plus two?")).await;
    assert_eq!(b_ask.header("x-switchboard-cache"), Some("miss"));
    assert_eq!(chats.load(Ordering::SeqCst), 4);
    gw.wait_for_metric(
        "switchboard_cache_events_total",
        &["type=\"redis-semantic\"", "event=\"semantic_hit\""],
        |v| v >= 2.0,
    )
    .await;
}

#[tokio::test]
async fn a_slow_embedder_makes_a_semantic_lookup_a_bounded_miss() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let up = MockUpstream::start(move |req| {
        if req.path.ends_with("/embeddings") {
            return Reply::json(200, openai::embeddings(1)).delayed(Duration::from_secs(30));
        }
        Reply::json(200, openai::completion("fresh"))
    })
    .await;
    let gw = Gateway::start(&config(
        &up.base(),
        &format!(
            "{{type: redis-semantic, url: \"{}\", redis_semantic_cache_embedding_model: embed}}",
            redis.url()
        ),
    ));
    let started = std::time::Instant::now();
    let r = gw.post("/v1/chat/completions", &chat(json!({}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-switchboard-cache"), Some("miss"));
    assert_eq!(content(&r), "fresh");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the embedding wait is bounded: {:?}",
        started.elapsed()
    );
}

/// A key with `fields` (limits) made by the master key.
async fn new_key_with(gw: &Gateway, fields: Value) -> String {
    let r = as_key(gw, MASTER, "/key/generate", &fields).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["key"].as_str().unwrap().to_string()
}

/// A hit never reaches the upstream but still counts toward the key's limits, as LiteLLM
/// counts it: rpm 3 admits one miss and two hits, then 429 with the upstream called once; tpm
/// is charged the tokens the stored answer had (1000 a hit, limit 2500: three hits fit, then
/// 429), where a hit charging nothing (its reservation refunded) would never be refused.
#[tokio::test]
async fn cache_hits_count_toward_rpm_and_tpm_limits() {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let up = MockUpstream::start(move |_| {
        seen.fetch_add(1, Ordering::SeqCst);
        let mut answer = openai::completion("cached");
        answer["usage"] =
            json!({"prompt_tokens": 400, "completion_tokens": 600, "total_tokens": 1000});
        Reply::json(200, answer)
    })
    .await;
    let cfg = format!(
        "{}general_settings: {{master_key: {MASTER}}}\n",
        config(&up.base(), "{type: local}")
    );
    let gw = Gateway::start(&cfg);
    let path = "/v1/chat/completions";

    let rpm = new_key_with(&gw, json!({"rpm_limit": 3})).await;
    let ask = chat(json!({"max_tokens": 1}));
    let miss = as_key(&gw, &rpm, path, &ask).await;
    assert_eq!(
        miss.header("x-switchboard-cache"),
        Some("miss"),
        "{}",
        miss.text()
    );
    stores(&gw, 1.0).await;
    for left in ["1", "0"] {
        let hit = as_key(&gw, &rpm, path, &ask).await;
        assert_eq!(hit.status, 200, "{}", hit.text());
        assert_eq!(hit.header("x-switchboard-cache"), Some("hit"));
        assert_eq!(hit.header("x-ratelimit-remaining-requests"), Some(left));
    }
    let refused = as_key(&gw, &rpm, path, &ask).await;
    let e = refused.expect_error(429);
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("Limit type: requests"),
        "{e}"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "hits never reached the upstream"
    );

    let tpm = new_key_with(&gw, json!({"tpm_limit": 2500})).await;
    // Once the third hit has settled (after its answer), its 1000 tokens are charged.
    let last = hits_then_refused(&gw, &tpm, path, &ask, 3).await;
    assert!(last.contains("Limit type: tokens"), "{last}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// A streamed hit is the live stream again, event for event: the same chunk objects (content
/// split the same way, the upstream's own fields kept), the same usage chunk when asked, none
/// when not, then `[DONE]`.
#[tokio::test]
async fn a_streamed_hit_replays_the_live_stream_event_for_event() {
    let (up, calls) = upstream().await;
    let gw = Gateway::start(&config(&up.base(), "{type: local}"));
    let with_usage = chat(json!({"stream": true, "stream_options": {"include_usage": true}}));
    let live = gw
        .post_stream("/v1/chat/completions", &with_usage)
        .await
        .into_response()
        .await;
    assert_eq!(live.header("x-switchboard-cache"), Some("miss"));
    stores(&gw, 1.0).await;
    let hit = gw
        .post_stream("/v1/chat/completions", &with_usage)
        .await
        .into_response()
        .await;
    assert_eq!(hit.header("x-switchboard-cache"), Some("hit"));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let events = |r: &Response| -> Vec<Value> {
        openai_chunks(r)
            .into_iter()
            .map(|mut c| {
                let o = c.as_object_mut().unwrap();
                o.remove("id");
                o.remove("created");
                c
            })
            .collect()
    };
    let live_events = events(&live);
    assert!(live_events.len() >= 5, "{}", live.text());
    assert_eq!(events(&hit), live_events);
    assert_eq!(live_events.last().unwrap()["choices"], json!([]));
    assert!(hit.text().ends_with("data: [DONE]\n\n"));
    assert_eq!(
        hit.sse_data(),
        live.sse_data(),
        "byte for byte, [DONE] included"
    );

    // Without include_usage: the same chunks, no usage chunk.
    let mut plain = with_usage.clone();
    plain.as_object_mut().unwrap().remove("stream_options");
    let hit = gw
        .post_stream("/v1/chat/completions", &plain)
        .await
        .into_response()
        .await;
    assert_eq!(hit.header("x-switchboard-cache"), Some("hit"));
    assert_eq!(events(&hit), live_events[..live_events.len() - 1]);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// `switchboard_cache_events_total` says hit, miss and store per call type (chat,
/// embeddings), and `switchboard_cache_stored_bytes_total` what was written, for the local
/// backend and for Redis alike.
#[tokio::test]
async fn cache_metrics_count_hits_misses_and_bytes_per_call_type() {
    let Some(redis) = Redis::start() else {
        return;
    };
    for (kind, params, extra) in [
        ("local", "{type: local}".to_string(), ""),
        (
            "redis",
            format!("{{type: redis, url: \"{}\"}}", redis.url()),
            "switchboard: {redis_timeout_ms: 2000}\n",
        ),
    ] {
        let (up, calls) = upstream().await;
        let gw = Gateway::start(&(config(&up.base(), &params) + extra));
        let ty = format!("type=\"{kind}\"");
        let event = |call: &str, event: &str, scrape: &str| {
            metric_value(
                scrape,
                "switchboard_cache_events_total",
                &[
                    &ty,
                    &format!("call_type=\"{call}\""),
                    &format!("event=\"{event}\""),
                ],
            )
        };
        for (call, path, body) in [
            ("chat", "/v1/chat/completions", chat(json!({}))),
            (
                "embeddings",
                "/v1/embeddings",
                json!({"model": "embed", "input": ["hello"]}),
            ),
        ] {
            let miss = gw.post(path, &body).await;
            assert_eq!(
                miss.header("x-switchboard-cache"),
                Some("miss"),
                "{}",
                miss.text()
            );
            gw.wait_for_metric(
                "switchboard_cache_events_total",
                &[&ty, &format!("call_type=\"{call}\""), "event=\"store\""],
                |v| v >= 1.0,
            )
            .await;
            let hit = gw.post(path, &body).await;
            assert_eq!(
                hit.header("x-switchboard-cache"),
                Some("hit"),
                "{kind} {call}"
            );
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        let scrape = gw.get("/metrics", &[]).await.text();
        for call in ["chat", "embeddings"] {
            for e in ["hit", "miss", "store"] {
                assert_eq!(
                    event(call, e, &scrape),
                    Some(1.0),
                    "{kind} {call} {e}:\n{scrape}"
                );
            }
            let bytes = metric_value(
                &scrape,
                "switchboard_cache_stored_bytes_total",
                &[&ty, &format!("call_type=\"{call}\"")],
            );
            assert!(
                bytes.unwrap_or(0.0) > 10.0,
                "{kind} {call}: {bytes:?}\n{scrape}"
            );
        }
    }
}

/// Stores of one call type so far, waited for until at least `at_least`.
async fn stores_of(gw: &Gateway, call_type: &str, at_least: f64) {
    let label = format!("call_type=\"{call_type}\"");
    gw.wait_for_metric(
        "switchboard_cache_events_total",
        &[&label, "event=\"store\""],
        |v| v >= at_least,
    )
    .await;
}

/// A client body of each ingress route, and the same request written with its keys in another
/// order and a delivery field (`user`) added.
fn ingress_bodies(route: &str, stream: bool) -> (String, String) {
    match route {
        "/v1/completions" => (
            format!(r#"{{"model":"gpt-4o","prompt":"Say hi","max_tokens":20,"stream":{stream}}}"#),
            format!(
                r#"{{ "stream": {stream}, "user": "u-1", "max_tokens": 20.0, "prompt": "Say hi", "model": "gpt-4o" }}"#
            ),
        ),
        "/v1/responses" => (
            format!(
                r#"{{"model":"gpt-4o","input":[{{"role":"user","content":"Say hi"}}],"temperature":0.5,"stream":{stream}}}"#
            ),
            format!(
                r#"{{"stream":{stream},"temperature":0.50,"user":"u-1","input":[{{"content":"Say hi","role":"user"}}],"model":"gpt-4o"}}"#
            ),
        ),
        _ => (
            format!(
                r#"{{"model":"gpt-4o","max_tokens":50,"messages":[{{"role":"user","content":"Say hi"}}],"stream":{stream}}}"#
            ),
            format!(
                r#"{{"messages":[{{"content":"Say hi","role":"user"}}],"stream":{stream},"metadata":{{"user_id":"u-1"}},"max_tokens":50,"model":"gpt-4o"}}"#
            ),
        ),
    }
}

const JSON: (&str, &str) = ("content-type", "application/json");

/// `/v1/completions`, `/v1/responses` and `/v1/messages`: a repeat, keys reordered and a
/// delivery field added, is a hit that never reaches the upstream and replays the first answer
/// byte for byte (a stream: the same SSE bytes), with the cache headers and no cost. Whole and
/// streamed answers are separate entries.
#[tokio::test]
async fn ingress_answers_replay_byte_for_byte_whole_and_streamed() {
    let (up, calls) = upstream().await;
    let gw = Gateway::start(&config(
        &up.base(),
        "{type: local, supported_call_types: [atext_completion, aresponses, anthropic_messages]}",
    ));
    let mut stored = 0.0;
    for (route, call_type) in [
        ("/v1/completions", "text_completion"),
        ("/v1/responses", "responses"),
        ("/v1/messages", "anthropic_messages"),
    ] {
        let mut stores_here = 0.0;
        for stream in [false, true] {
            let (first, again) = ingress_bodies(route, stream);
            let before = calls.load(Ordering::SeqCst);
            let miss = gw.post_with(route, &[JSON], first.as_bytes()).await;
            assert_eq!(miss.status, 200, "{route} {stream}: {}", miss.text());
            assert_eq!(
                miss.header("x-switchboard-cache"),
                Some("miss"),
                "{route} stream={stream}: whole and streamed answers are separate entries"
            );
            assert_eq!(calls.load(Ordering::SeqCst), before + 1);
            let key = miss.header("x-litellm-cache-key").unwrap().to_string();
            stores_here += 1.0;
            stored += 1.0;
            stores_of(&gw, call_type, stores_here).await;

            let hit = gw.post_with(route, &[JSON], again.as_bytes()).await;
            assert_eq!(hit.status, 200, "{route} {stream}: {}", hit.text());
            assert_eq!(hit.header("x-switchboard-cache"), Some("hit"), "{route}");
            assert_eq!(hit.header("x-litellm-cache-key"), Some(key.as_str()));
            assert_eq!(hit.header("x-litellm-response-cost"), Some("0"));
            let content_type = if stream {
                "text/event-stream"
            } else {
                "application/json"
            };
            assert!(
                hit.header("content-type")
                    .is_some_and(|c| c.starts_with(content_type)),
                "{route} {stream}: {:?}",
                hit.header("content-type")
            );
            assert_eq!(hit.text(), miss.text(), "{route} stream={stream}");
            assert!(!hit.text().is_empty());
            assert_eq!(
                calls.load(Ordering::SeqCst),
                before + 1,
                "{route} stream={stream}: the hit never reached the upstream"
            );
        }
    }
    let scrape = gw
        .wait_for_metric(
            "switchboard_cache_events_total",
            &["call_type=\"anthropic_messages\"", "event=\"hit\""],
            |v| v >= 2.0,
        )
        .await;
    for call_type in ["text_completion", "responses"] {
        let label = format!("call_type=\"{call_type}\"");
        assert_eq!(
            metric_value(
                &scrape,
                "switchboard_cache_events_total",
                &[&label, "event=\"hit\""]
            ),
            Some(2.0),
            "{call_type}"
        );
    }
    assert_eq!(stored, 6.0);
}

/// The per-request controls apply on the ingress routes as on chat: `no-store` keeps the
/// answer out, `no-cache` skips the lookup, and under `mode: default_off` only `use-cache`
/// opts in.
#[tokio::test]
async fn ingress_routes_honour_the_cache_controls_and_default_off() {
    let (up, calls) = upstream().await;
    let gw = Gateway::start(&config(
        &up.base(),
        "{type: local, mode: default_off, supported_call_types: [atext_completion, anthropic_messages]}",
    ));
    let ask = |cache: &str| {
        format!(
            r#"{{"model":"gpt-4o","max_tokens":50,"messages":[{{"role":"user","content":"Say hi"}}]{cache}}}"#
        )
    };
    // Not opted in: no cache at all (no key header).
    let plain = gw
        .post_with("/v1/messages", &[JSON], ask("").as_bytes())
        .await;
    assert_eq!(plain.status, 200, "{}", plain.text());
    assert_eq!(plain.header("x-switchboard-cache"), None);
    // Opted in but no-store: looked up, never stored.
    let opted = r#","cache":{"use-cache":true,"no-store":true}"#;
    let first = gw
        .post_with("/v1/messages", &[JSON], ask(opted).as_bytes())
        .await;
    assert_eq!(first.header("x-switchboard-cache"), Some("miss"));
    let opted = r#","cache":{"use-cache":true}"#;
    let second = gw
        .post_with("/v1/messages", &[JSON], ask(opted).as_bytes())
        .await;
    assert_eq!(
        second.header("x-switchboard-cache"),
        Some("miss"),
        "no-store kept it out"
    );
    stores_of(&gw, "anthropic_messages", 1.0).await;
    let third = gw
        .post_with("/v1/messages", &[JSON], ask(opted).as_bytes())
        .await;
    assert_eq!(third.header("x-switchboard-cache"), Some("hit"));
    assert_eq!(third.text(), second.text());
    // no-cache: answered by the upstream although an entry exists.
    let fresh = r#","cache":{"use-cache":true,"no-cache":true}"#;
    let before = calls.load(Ordering::SeqCst);
    let skipped = gw
        .post_with("/v1/messages", &[JSON], ask(fresh).as_bytes())
        .await;
    assert_eq!(skipped.status, 200);
    assert_eq!(skipped.header("x-switchboard-cache"), Some("miss"));
    assert_eq!(calls.load(Ordering::SeqCst), before + 1);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        4,
        "only the hit was not asked upstream"
    );
}

/// A call type left out of `supported_call_types` is never cached (the default list, like
/// LiteLLM's, has text completions and responses but not anthropic_messages), and a Responses
/// call continuing a stored conversation (`previous_response_id`) never is either.
#[tokio::test]
async fn unlisted_types_and_stateful_responses_are_never_cached() {
    let (up, calls) = upstream().await;
    let gw = Gateway::start(&config(&up.base(), "{type: local}"));
    let (messages, _) = ingress_bodies("/v1/messages", false);
    let stateful = r#"{"model":"gpt-4o","input":"And then?","previous_response_id":"resp_1"}"#;
    for _ in 0..2 {
        for (route, body) in [
            ("/v1/messages", messages.as_str()),
            ("/v1/responses", stateful),
        ] {
            let before = calls.load(Ordering::SeqCst);
            let resp = gw.post_with(route, &[JSON], body.as_bytes()).await;
            assert_eq!(resp.status, 200, "{route}: {}", resp.text());
            assert_eq!(resp.header("x-switchboard-cache"), None, "{route}");
            assert_eq!(calls.load(Ordering::SeqCst), before + 1, "{route}");
        }
    }
    // The default list does cache completions: a store shows the cache ran meanwhile.
    let (completion, _) = ingress_bodies("/v1/completions", false);
    let resp = gw
        .post_with("/v1/completions", &[JSON], completion.as_bytes())
        .await;
    assert_eq!(resp.header("x-switchboard-cache"), Some("miss"));
    stores_of(&gw, "text_completion", 1.0).await;
    let scrape = gw.get("/metrics", &[]).await.text();
    for call_type in ["anthropic_messages", "responses"] {
        let label = format!("call_type=\"{call_type}\"");
        assert_eq!(
            metric_value(&scrape, "switchboard_cache_events_total", &[&label]),
            None,
            "{call_type}: never looked up"
        );
    }
    assert_eq!(
        up.requests()
            .iter()
            .filter(|r| r.path.ends_with("/responses"))
            .count(),
        2,
        "previous_response_id passed through natively both times"
    );
}

/// An ingress hit counts toward tpm with the usage its entry kept: a `/v1/messages` miss and
/// two hits of 1000 tokens each pass a 2500 limit, then the key is refused, the upstream
/// called once (a hit charging nothing would never be refused).
#[tokio::test]
async fn ingress_hits_are_charged_their_stored_usage_toward_tpm() {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let up = MockUpstream::start(move |_| {
        seen.fetch_add(1, Ordering::SeqCst);
        let mut answer = openai::completion("cached");
        answer["usage"] =
            json!({"prompt_tokens": 400, "completion_tokens": 600, "total_tokens": 1000});
        Reply::json(200, answer)
    })
    .await;
    let cfg = format!(
        "{}general_settings: {{master_key: {MASTER}}}\n",
        config(
            &up.base(),
            "{type: local, supported_call_types: [anthropic_messages]}"
        )
    );
    let gw = Gateway::start(&cfg);
    let path = "/v1/messages";
    let ask: Value = serde_json::from_str(&ingress_bodies(path, false).0).unwrap();
    let tpm = new_key_with(&gw, json!({"tpm_limit": 2500})).await;
    let miss = as_key(&gw, &tpm, path, &ask).await;
    assert_eq!(miss.status, 200, "{}", miss.text());
    assert_eq!(miss.header("x-switchboard-cache"), Some("miss"));
    stores_of(&gw, "anthropic_messages", 1.0).await;
    let last = hits_then_refused(&gw, &tpm, path, &ask, 2).await;
    assert!(
        last.contains("rate_limit_error"),
        "Anthropic's error shape: {last}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}
