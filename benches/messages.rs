//! Criterion benchmark of the `/v1/messages` request side before routing: what a Claude Code
//! sized body costs when it is only parsed at the top level (now: routing reads `model`,
//! `stream`, `max_tokens`, `metadata` and the size of `messages`/`tools`, and an
//! Anthropic-family deployment gets the body as it is) against parsing, translating to chat and
//! parsing the translation (before: done for every call, thrown away by a pass-through).
//!
//! Run: `cargo bench --bench messages`.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use switchboard::ingress::messages::translate;
use switchboard::openai::RequestBody;

/// A Messages body of about `target` bytes, shaped like Claude Code's: a system prompt in
/// blocks with `cache_control`, a dozen tools, then turns of text, tool use and tool results.
fn claude_code_body(target: usize) -> Vec<u8> {
    let text = "Here is some context: the quick brown fox \\\"jumps\\\" over the lazy dog; naïve café résumé — 1234567890.\\n";
    let mut body = String::with_capacity(target + 4096);
    body.push_str(
        r#"{"model":"claude","max_tokens":32000,"stream":true,"metadata":{"user_id":"user_abc"},"#,
    );
    body.push_str(r#""system":[{"type":"text","text":"You are Claude Code.","cache_control":{"type":"ephemeral"}}],"tools":["#);
    for i in 0..12 {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&format!(r#"{{"name":"tool_{i}","description":"Does thing {i}.","input_schema":{{"type":"object","properties":{{"path":{{"type":"string"}},"limit":{{"type":"integer"}}}},"required":["path"]}}}}"#));
    }
    body.push_str(r#"],"messages":["#);
    let mut i = 0;
    while body.len() < target {
        if i > 0 {
            body.push(',');
        }
        let turn = match i % 3 {
            0 => format!(
                r#"{{"role":"user","content":[{{"type":"text","text":"{}"}}]}}"#,
                text.repeat(8)
            ),
            1 => format!(
                r#"{{"role":"assistant","content":[{{"type":"text","text":"Reading."}},{{"type":"tool_use","id":"toolu_{i}","name":"tool_1","input":{{"path":"src/lib.rs","limit":200}}}}]}}"#
            ),
            _ => format!(
                r#"{{"role":"user","content":[{{"type":"tool_result","tool_use_id":"toolu_{}","content":"{}"}}]}}"#,
                i - 1,
                text.repeat(16)
            ),
        };
        body.push_str(&turn);
        i += 1;
    }
    if i % 3 != 1 {
        body.push_str(&format!(r#",{{"role":"user","content":"{text}"}}"#));
    }
    body.push_str("]}");
    body.into_bytes()
}

fn before_routing(c: &mut Criterion) {
    let mut g = c.benchmark_group("messages/before_routing");
    for (name, size) in [("20KB", 20 * 1024), ("200KB", 200 * 1024)] {
        let body = claude_code_body(size);
        assert!(translate(&RequestBody::parse(&body).unwrap()).is_ok());
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_with_input(BenchmarkId::new("parse_only", name), &body, |b, body| {
            b.iter(|| {
                let raw = RequestBody::parse(black_box(body)).unwrap();
                black_box((raw.get("model"), raw.estimated_prompt_tokens()));
            })
        });
        g.bench_with_input(
            BenchmarkId::new("parse_translate_parse", name),
            &body,
            |b, body| {
                b.iter(|| {
                    let raw = RequestBody::parse(black_box(body)).unwrap();
                    let chat = translate(&raw).unwrap();
                    let parsed = RequestBody::parse(&chat).unwrap();
                    black_box((parsed.get("model"), parsed.estimated_prompt_tokens()));
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, before_routing);
criterion_main!(benches);
