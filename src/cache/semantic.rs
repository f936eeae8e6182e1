//! The semantic cache (`cache_params.type: redis-semantic`): a chat request that missed the
//! exact cache is answered from an earlier one whose prompt means the same, by the cosine
//! similarity of their embeddings (≥ `similarity_threshold`).
//!
//! Debian's Redis 7 has no vector search, so the index is a plain Redis list per scope, and
//! the comparison happens in this process:
//!
//! ```text
//!  {namespace:}semantic:{group}:{scope id}   LIST, newest first, at most semantic_max_entries
//!    entry = exact-cache key length (u16 BE) ‖ key ‖ the prompt's embedding (f32 LE each)
//! ```
//!
//! - **Lookup** (on an exact miss): the prompt (every message's text, as LiteLLM's
//!   `get_str_from_messages`) is embedded with `redis_semantic_cache_embedding_model` through
//!   the gateway's own routing (see `gateway::semantic`; bounded by [`EMBED_TIMEOUT`], a slow
//!   or failed embedding is a miss). Then one `LRANGE` fetches the scope's vectors, compared
//!   here (at most entries × dimensions multiply-adds; 256 × 1536 ≈ 0.4 M, about 0.2 ms, and
//!   1.5 MB read over the wire), and the best match's answer is one `GET` of its exact entry.
//! - **Store**: with the answer's exact entry, the writer pushes the vector onto the list,
//!   trims it to the newest `semantic_max_entries` and sets the list's expiry to the entry ttl.
//!   An entry whose answer has expired or been evicted is a miss.
//! - **Scope**: per key by default (`semantic_cache_scope: key|team|global`); the list is also
//!   per model group, so answers never cross groups.
//!
//! Limits: the newest N prompts per scope only (older ones still hit exactly); a hit costs the
//! embedding call plus two Redis round trips; lists written by instances with different
//! embedding models (dimensions) are skipped entry by entry.

use crate::openai::RequestBody;
use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::time::Duration;

/// How long the prompt's embedding may take before the lookup gives up (a miss).
pub const EMBED_TIMEOUT: Duration = Duration::from_secs(2);
/// Most prompt text embedded (bytes, cut at a character boundary).
pub const MAX_PROMPT_BYTES: usize = 32 * 1024;
/// Most dimensions an embedding may have (larger answers are not used).
pub const MAX_DIMENSIONS: usize = 8192;

/// What a semantic lookup leaves in the context for the store: where the prompt's vector goes.
pub struct Pending {
    pub list: String,
    pub vector: Vec<f32>,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Part<'a> {
    #[serde(default, borrow)]
    text: Option<std::borrow::Cow<'a, str>>,
}

/// The text a request's prompt is embedded from: every message's text content, one per line.
/// `None` without any text.
pub fn prompt(body: &RequestBody<'_>) -> Option<String> {
    let messages: Vec<Message<'_>> = serde_json::from_str(body.get("messages")?.get()).ok()?;
    let mut out = String::new();
    let mut push = |t: &str| {
        if !t.trim().is_empty() {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(t.trim());
        }
    };
    for m in &messages {
        let Some(c) = m.content else { continue };
        if let Ok(text) = serde_json::from_str::<std::borrow::Cow<'_, str>>(c.get()) {
            push(&text);
        } else if let Ok(parts) = serde_json::from_str::<Vec<Part<'_>>>(c.get()) {
            for p in parts.iter().filter_map(|p| p.text.as_deref()) {
                push(p);
            }
        }
    }
    if out.len() > MAX_PROMPT_BYTES {
        let mut end = MAX_PROMPT_BYTES;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
    }
    (!out.is_empty()).then_some(out)
}

/// The internal embeddings request for `prompt` (never cached itself).
pub fn embedding_request(model: &str, prompt: &str) -> Bytes {
    let body = serde_json::json!({
        "model": model,
        "input": prompt,
        "cache": {"no-cache": true, "no-store": true},
    });
    Bytes::from(body.to_string())
}

#[derive(Deserialize)]
struct EmbeddingAnswer {
    data: Vec<EmbeddingItem>,
}

#[derive(Deserialize)]
struct EmbeddingItem {
    embedding: Vec<f32>,
}

/// The first embedding of an OpenAI embeddings answer (floats), if it is one.
pub fn vector_of(answer: &[u8]) -> Option<Vec<f32>> {
    let a: EmbeddingAnswer = serde_json::from_slice(answer).ok()?;
    let v = a.data.into_iter().next()?.embedding;
    (!v.is_empty() && v.len() <= MAX_DIMENSIONS && v.iter().all(|x| x.is_finite())).then_some(v)
}

/// The list a scope's prompts live in.
pub fn list_key(namespace: Option<&str>, group: &str, scope: &str) -> String {
    match namespace {
        Some(ns) => format!("{ns}:semantic:{group}:{scope}"),
        None => format!("semantic:{group}:{scope}"),
    }
}

/// One list entry: the exact entry's key and the prompt's vector.
pub fn encode(key: &str, vector: &[f32]) -> Vec<u8> {
    let mut out = BytesMut::with_capacity(2 + key.len() + 4 * vector.len());
    out.put_u16(key.len().min(u16::MAX as usize) as u16);
    out.put_slice(&key.as_bytes()[..key.len().min(u16::MAX as usize)]);
    for x in vector {
        out.put_f32_le(*x);
    }
    out.to_vec()
}

fn decode(entry: &[u8]) -> Option<(&str, &[u8])> {
    let len = u16::from_be_bytes(entry.get(..2)?.try_into().ok()?) as usize;
    let key = std::str::from_utf8(entry.get(2..2 + len)?).ok()?;
    let vector = entry.get(2 + len..)?;
    (vector.len() % 4 == 0).then_some((key, vector))
}

/// Cosine similarity of `query` and a stored vector (f32 LE bytes); `None` when their
/// dimensions differ or either is zero.
fn cosine(query: &[f32], query_norm: f32, stored: &[u8]) -> Option<f32> {
    if stored.len() != 4 * query.len() {
        return None;
    }
    let (mut dot, mut norm) = (0f32, 0f32);
    for (q, s) in query.iter().zip(stored.chunks_exact(4)) {
        let s = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
        dot += q * s;
        norm += s * s;
    }
    let denom = query_norm * norm.sqrt();
    (denom > 0.0).then(|| dot / denom)
}

/// The exact-entry key of the most similar stored prompt at or above `threshold`.
pub fn best_match<'e>(
    query: &[f32],
    entries: &'e [Vec<u8>],
    threshold: f64,
) -> Option<(&'e str, f32)> {
    let query_norm = query.iter().map(|x| x * x).sum::<f32>().sqrt();
    entries
        .iter()
        .filter_map(|e| decode(e))
        .filter_map(|(key, v)| Some((key, cosine(query, query_norm, v)?)))
        .filter(|(_, sim)| f64::from(*sim) >= threshold)
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prompt_is_every_messages_text() {
        let b = RequestBody::parse(
            br#"{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"What is 2+2?"},{"type":"image_url","image_url":{"url":"x"}}]},{"role":"assistant","content":null}]}"#,
        )
        .unwrap();
        assert_eq!(prompt(&b).as_deref(), Some("Be brief.\nWhat is 2+2?"));
        let b = RequestBody::parse(br#"{"messages":[]}"#).unwrap();
        assert_eq!(prompt(&b), None);
    }

    #[test]
    fn the_closest_entry_at_or_above_the_threshold_wins() {
        let entries = vec![
            encode("far", &[0.0, 1.0]),
            encode("near", &[1.0, 0.1]),
            encode("nearer", &[1.0, 0.05]),
            encode("other-dims", &[1.0, 0.0, 0.0]),
            vec![0, 9, 1],
        ];
        let (key, sim) = best_match(&[1.0, 0.0], &entries, 0.9).unwrap();
        assert_eq!(key, "nearer");
        assert!(sim > 0.99);
        assert!(best_match(&[0.0, 1.0], &entries[1..], 0.9).is_none());
        assert_eq!(best_match(&[0.0, 1.0], &entries, 1.0).unwrap().0, "far");
        assert_eq!(
            vector_of(br#"{"data":[{"embedding":[0.5,1]}]}"#),
            Some(vec![0.5, 1.0])
        );
        assert_eq!(vector_of(br#"{"data":[]}"#), None);
    }
}
