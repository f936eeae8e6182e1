//! The cache key: an xxh3-128 hash of a canonical form of everything that changes an answer.
//!
//! The key covers the model group (the group the name resolves to after the key's aliases and
//! `model_group_alias`, as LiteLLM keys on `metadata.model_group`; a wildcard-served name is
//! its own, so a wildcard group's models stay apart), every top-level body field except those that only shape
//! delivery or bookkeeping ([`IGNORED_FIELDS`]: `stream`, `stream_options`, `user`, `metadata`,
//! the `cache` controls, …), and the tenant when the cache is scoped. Canonical: object keys at
//! every depth are order-free and whitespace never reaches the hash, numbers are compared by
//! value (`1` and `1.0` are the same), strings by their unescaped text.
//!
//! The body is parsed once by [`RequestBody`] into raw top-level slices; each kept value is
//! walked here by a serde visitor that hashes as it goes (no `serde_json::Value` tree, no owned
//! strings unless the JSON escapes them). An object's entries are hashed separately and
//! combined in the order of their key hashes, so key order cannot matter.

use crate::openai::RequestBody;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use smallvec::SmallVec;
use std::fmt;
use xxhash_rust::xxh3::{xxh3_128_with_seed, Xxh3};

/// Body fields that never change the answer's content: how it is delivered (`stream`,
/// `stream_options`), who asked (`user`, `metadata`), the cache's own controls, and the
/// gateway's routing and retry knobs.
pub const IGNORED_FIELDS: &[&str] = &[
    "model",
    "stream",
    "stream_options",
    "user",
    "metadata",
    "litellm_metadata",
    "cache",
    "caching",
    "timeout",
    "request_timeout",
    "num_retries",
    "max_retries",
    "fallbacks",
    "context_window_fallbacks",
    "tags",
    "litellm_session_id",
    "litellm_trace_id",
];

// Type tags keep values of different types from hashing alike (`"1"` vs `1`, `[]` vs `{}`).
const T_NULL: u8 = 0;
const T_BOOL: u8 = 1;
const T_INT: u8 = 2;
const T_FLOAT: u8 = 3;
const T_STR: u64 = 4;
const T_ARR: u8 = 5;
const T_OBJ: u8 = 6;
/// Seeds a per-input key (batch base + one input).
const T_INPUT: u64 = 7;

/// A 128-bit cache key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey(pub u128);

impl CacheKey {
    /// `{namespace}:{32 hex digits}`, or just the digits: the `x-litellm-cache-key` value and
    /// the storage key.
    pub fn render(self, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) => format!("{ns}:{:032x}", self.0),
            None => format!("{:032x}", self.0),
        }
    }
}

/// What the key covers besides the body.
pub struct KeyScope<'a> {
    /// The model group the request resolves to (see the module doc).
    pub model: &'a str,
    /// The operation (`chat`, `embeddings`, an ingress route; `+stream` appended for a
    /// streamed request of a type kept verbatim): the same body on two routes is two answers.
    pub route: &'a str,
    /// The tenant id when the cache is scoped per key or team.
    pub tenant: Option<&'a str>,
}

/// Hashes a request's canonical form. `Err` only for a value that is not valid JSON, which
/// [`RequestBody::parse`] has already ruled out.
pub fn compute(
    scope: &KeyScope<'_>,
    body: &RequestBody<'_>,
) -> Result<CacheKey, serde_json::Error> {
    compute_without(scope, body, None)
}

/// The keys of an embeddings request's inputs, one per input, in order: each covers what
/// [`compute`] covers but the other inputs (`dimensions`, `encoding_format`, … still count),
/// so the same text in two batches is one entry.
pub fn compute_inputs(
    scope: &KeyScope<'_>,
    body: &RequestBody<'_>,
    inputs: &[&serde_json::value::RawValue],
) -> Result<Vec<CacheKey>, serde_json::Error> {
    let base = compute_without(scope, body, Some("input"))?.0.to_le_bytes();
    inputs
        .iter()
        .map(|raw| {
            let Hashed(input) = serde_json::from_str(raw.get())?;
            let mut both = [0u8; 32];
            both[..16].copy_from_slice(&base);
            both[16..].copy_from_slice(&input.to_le_bytes());
            Ok(CacheKey(xxh3_128_with_seed(&both, T_INPUT)))
        })
        .collect()
}

fn compute_without(
    scope: &KeyScope<'_>,
    body: &RequestBody<'_>,
    skip: Option<&str>,
) -> Result<CacheKey, serde_json::Error> {
    let mut fields: SmallVec<[(&str, &serde_json::value::RawValue); 16]> = body
        .fields()
        .filter(|(name, _)| !IGNORED_FIELDS.contains(name) && Some(*name) != skip)
        .collect();
    fields.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut h = Xxh3::new();
    for part in [scope.route, scope.model, scope.tenant.unwrap_or("")] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    for (name, raw) in fields {
        h.update(&(name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        let Hashed(v) = serde_json::from_str(raw.get())?;
        h.update(&v.to_le_bytes());
    }
    Ok(CacheKey(h.digest128()))
}

/// A JSON value's canonical hash.
struct Hashed(u128);

fn tagged(tag: u8, bytes: &[u8]) -> u128 {
    let mut h = Xxh3::new();
    h.update(&[tag]);
    h.update(bytes);
    h.digest128()
}

fn int(n: i128) -> Hashed {
    Hashed(tagged(T_INT, &n.to_le_bytes()))
}

fn string(s: &str) -> Hashed {
    Hashed(xxh3_128_with_seed(s.as_bytes(), T_STR))
}

impl<'de> Deserialize<'de> for Hashed {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(HashVisitor)
    }
}

struct HashVisitor;

impl<'de> Visitor<'de> for HashVisitor {
    type Value = Hashed;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Hashed, E> {
        Ok(Hashed(tagged(T_NULL, &[])))
    }

    fn visit_bool<E>(self, b: bool) -> Result<Hashed, E> {
        Ok(Hashed(tagged(T_BOOL, &[b as u8])))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Hashed, E> {
        Ok(int(n as i128))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Hashed, E> {
        Ok(int(n as i128))
    }

    fn visit_f64<E>(self, f: f64) -> Result<Hashed, E> {
        // A whole number written as `1.0` is the integer 1.
        if f.fract() == 0.0 && f.abs() < 9.2e18 {
            return Ok(int(f as i128));
        }
        Ok(Hashed(tagged(T_FLOAT, &f.to_bits().to_le_bytes())))
    }

    fn visit_str<E>(self, s: &str) -> Result<Hashed, E> {
        Ok(string(s))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Hashed, A::Error> {
        let mut h = Xxh3::new();
        h.update(&[T_ARR]);
        while let Some(Hashed(v)) = seq.next_element()? {
            h.update(&v.to_le_bytes());
        }
        Ok(Hashed(h.digest128()))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Hashed, A::Error> {
        let mut entries: SmallVec<[(u128, u128); 8]> = SmallVec::new();
        while let Some(KeyHash(k)) = map.next_key()? {
            let Hashed(v) = map.next_value()?;
            entries.push((k, v));
        }
        entries.sort_unstable();
        let mut h = Xxh3::new();
        h.update(&[T_OBJ]);
        for (k, v) in entries {
            h.update(&k.to_le_bytes());
            h.update(&v.to_le_bytes());
        }
        Ok(Hashed(h.digest128()))
    }
}

/// An object key's hash (keys are strings; borrowed unless escaped).
struct KeyHash(u128);

impl<'de> Deserialize<'de> for KeyHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KeyHash;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<KeyHash, E> {
                Ok(KeyHash(string(s).0))
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(body: &str) -> CacheKey {
        key_for("gpt", body)
    }

    fn key_for(model: &str, body: &str) -> CacheKey {
        let body = RequestBody::parse(body.as_bytes()).unwrap();
        let scope = KeyScope {
            model,
            route: "chat",
            tenant: None,
        };
        compute(&scope, &body).unwrap()
    }

    #[test]
    fn key_order_whitespace_escapes_and_number_forms_do_not_matter() {
        let a =
            key(r#"{"model":"gpt","messages":[{"role":"user","content":"hi"}],"temperature":1}"#);
        let b = key(
            "{ \"temperature\" : 1.0,\n \"messages\": [ {\"content\":\"h\\u0069\", \"role\":\"user\"} ],\"model\":\"gpt\"}",
        );
        assert_eq!(a, b);
        // Delivery and bookkeeping fields do not matter either.
        let c = key(
            r#"{"model":"gpt","messages":[{"role":"user","content":"hi"}],"temperature":1,"stream":true,"stream_options":{"include_usage":true},"user":"u1","metadata":{"a":1},"cache":{"ttl":5}}"#,
        );
        assert_eq!(a, c);
    }

    #[test]
    fn anything_that_changes_the_answer_changes_the_key() {
        let base = r#"{"model":"gpt","messages":[{"role":"user","content":"hi"}]}"#;
        let k = key(base);
        for other in [
            r#"{"model":"gpt","messages":[{"role":"user","content":"hi!"}]}"#,
            r#"{"model":"gpt","messages":[{"role":"system","content":"hi"}]}"#,
            r#"{"model":"gpt","messages":[{"role":"user","content":"hi"}],"seed":1}"#,
            r#"{"model":"gpt","messages":[{"role":"user","content":"hi"}],"n":2}"#,
            r#"{"model":"gpt","messages":[{"role":"user","content":"hi"}],"temperature":0}"#,
            r#"{"model":"gpt","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f"}}]}"#,
            r#"{"model":"gpt","messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_object"}}"#,
            r#"{"model":"gpt","messages":[{"role":"user","content":"hi"},{"role":"user","content":"hi"}]}"#,
        ] {
            assert_ne!(key(other), k, "{other}");
        }
        assert_ne!(
            key_for("other", base),
            k,
            "the model group is part of the key"
        );
        // Types are kept apart: "1" is not 1, [] is not {}.
        assert_ne!(
            key(r#"{"model":"gpt","seed":"1"}"#),
            key(r#"{"model":"gpt","seed":1}"#)
        );
        assert_ne!(
            key(r#"{"model":"gpt","x":[]}"#),
            key(r#"{"model":"gpt","x":{}}"#)
        );
        // Nested key order is free, nested values are not.
        assert_eq!(
            key(r#"{"model":"gpt","x":{"a":1,"b":{"c":2,"d":3}}}"#),
            key(r#"{"model":"gpt","x":{"b":{"d":3,"c":2},"a":1}}"#)
        );
        assert_ne!(
            key(r#"{"model":"gpt","x":{"a":1,"b":2}}"#),
            key(r#"{"model":"gpt","x":{"a":2,"b":1}}"#)
        );
    }

    #[test]
    fn keys_render_with_their_namespace() {
        let k = CacheKey(0xab);
        assert_eq!(k.render(None), format!("{:032x}", 0xab));
        assert_eq!(k.render(Some("ns")), format!("ns:{:032x}", 0xab));
    }
}
