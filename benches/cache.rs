//! Criterion benchmarks of the response cache's per-request CPU work, without I/O:
//! - `cache/key`: the canonical key of a small chat request, one with tools, and one with a
//!   ~64 KiB conversation (body parse excluded: the pipeline has already parsed it).
//! - `cache/local_get`: a hit's lookup in the local LRU (mutex, map, clone of the shared bytes).
//! - `cache/replay_sse`: a stored whole answer replayed as SSE for a streaming request.
//!
//! Run: `cargo bench --bench cache`.

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use switchboard::cache::key::{compute, KeyScope};
use switchboard::cache::local::LocalStore;
use switchboard::cache::replay::to_sse;
use switchboard::openai::RequestBody;

fn small() -> Vec<u8> {
    br#"{"model":"gpt-4o","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"What is the capital of France?"}],"temperature":0.2,"max_tokens":256,"user":"u-1","stream":false}"#.to_vec()
}

fn with_tools() -> Vec<u8> {
    let tools: Vec<String> = (0..8)
        .map(|i| format!(r#"{{"type":"function","function":{{"name":"tool_{i}","description":"Does thing {i} with the given arguments.","parameters":{{"type":"object","properties":{{"city":{{"type":"string"}},"days":{{"type":"integer","minimum":1}}}},"required":["city"]}}}}}}"#))
        .collect();
    format!(
        r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":"Plan a trip."}}],"tools":[{}],"tool_choice":"auto","seed":7}}"#,
        tools.join(",")
    )
    .into_bytes()
}

fn long() -> Vec<u8> {
    let turns: Vec<String> = (0..64)
        .map(|i| {
            let role = if i % 2 == 0 { "user" } else { "assistant" };
            format!(
                r#"{{"role":"{role}","content":"{}"}}"#,
                "lorem ipsum dolor sit amet ".repeat(37)
            )
        })
        .collect();
    format!(r#"{{"model":"gpt-4o","messages":[{}]}}"#, turns.join(",")).into_bytes()
}

const ANSWER: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"The capital of France is Paris. It has been the capital since the 10th century and is the country's largest city."},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":24,"completion_tokens":27,"total_tokens":51}}"#;

fn bench(c: &mut Criterion) {
    let scope = KeyScope {
        model: "gpt-4o",
        route: "chat",
        tenant: None,
    };
    let mut g = c.benchmark_group("cache/key");
    for (name, body) in [
        ("small", small()),
        ("tools", with_tools()),
        ("long_64k", long()),
    ] {
        let parsed = RequestBody::parse(&body).unwrap();
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| compute(black_box(&scope), black_box(&parsed)).unwrap())
        });
    }
    g.finish();

    let store = LocalStore::new(64 << 20);
    for i in 0..10_000 {
        store.put(
            format!("{i:032x}"),
            Bytes::from_static(ANSWER.as_bytes()),
            None,
        );
    }
    let key = format!("{:032x}", 4242);
    c.bench_function("cache/local_get", |b| {
        b.iter(|| store.get(black_box(&key), None).unwrap())
    });
    c.bench_function("cache/replay_sse", |b| {
        b.iter(|| to_sse(black_box(ANSWER.as_bytes()), true).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
