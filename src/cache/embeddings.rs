//! Embeddings cached per input: each input of an `/v1/embeddings` batch is its own entry (its
//! embedding, the raw JSON value), keyed on the group, that input and every other field that
//! changes the vectors (`dimensions`, `encoding_format`, …; see [`super::key::compute_inputs`]).
//!
//! ```text
//!  lookup: split `input` ─► one key per input ─► one backend round trip for all of them
//!    all found  ─► the answer assembled here (indexes in order, usage 0): a hit
//!    none found ─► a miss; at store, every input's embedding is kept
//!    some found ─► a miss whose upstream body carries only the rest ([`take_reduced`]); the
//!                  upstream's answer is merged with the found ones in order ([`merge`]),
//!                  its usage (the upstream's only) kept; at store, only the new ones are kept
//! ```
//!
//! A string input, or a single list of token ids, is one input. Batches past [`MAX_INPUTS`]
//! are not cached. What a lookup found rides in [`Context::cache_state`] until the store.

use super::key::CacheKey;
use crate::context::Context;
use crate::openai::RequestBody;
use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;

/// The largest batch cached per input (OpenAI's own limit is 2048 inputs).
pub const MAX_INPUTS: usize = 2048;

/// A batch's inputs as looked up: kept in the request's context until the answer is stored.
pub struct Batch {
    /// Each input's storage key, in order.
    pub keys: Vec<String>,
    /// Each input's cached embedding (raw JSON), if found.
    pub found: Vec<Option<Bytes>>,
    /// The body to send upstream when some inputs were found (only the others' inputs).
    reduced: Option<Bytes>,
}

impl Batch {
    pub fn new(keys: Vec<String>, found: Vec<Option<Bytes>>) -> Batch {
        Batch {
            keys,
            found,
            reduced: None,
        }
    }

    pub fn all_found(&self) -> bool {
        self.found.iter().all(Option::is_some)
    }

    fn none_found(&self) -> bool {
        self.found.iter().all(Option::is_none)
    }
}

/// The request's inputs, one raw value each; `None` when it is not a batch cached per input
/// (no `input`, an empty list, too many inputs).
pub fn inputs<'a>(body: &RequestBody<'a>) -> Option<Vec<&'a RawValue>> {
    let raw = body.get("input")?;
    let text = raw.get();
    if !text.starts_with('[') {
        return Some(vec![raw]);
    }
    let items: Vec<&'a RawValue> = serde_json::from_str(text).ok()?;
    match items.first() {
        None => None,
        // A list of token ids is one input.
        Some(first) if !first.get().starts_with(['[', '"']) => Some(vec![raw]),
        Some(_) if items.len() > MAX_INPUTS => None,
        Some(_) => Some(items),
    }
}

/// The storage keys for `keys` under `namespace`.
pub fn render(keys: Vec<CacheKey>, namespace: Option<&str>) -> Vec<String> {
    keys.into_iter().map(|k| k.render(namespace)).collect()
}

/// The whole answer for a batch found in full: OpenAI's shape, inputs in order, usage 0.
pub fn assemble(batch: &Batch, model: &str) -> Bytes {
    let size: usize = batch.found.iter().flatten().map(|e| e.len() + 48).sum();
    let mut out = BytesMut::with_capacity(size + 128);
    out.put_slice(b"{\"object\":\"list\",\"data\":[");
    for (i, e) in batch.found.iter().enumerate() {
        item(&mut out, i, e.as_deref().unwrap_or(b"null"));
    }
    out.put_slice(b"],\"model\":");
    out.put_slice(
        serde_json::to_string(model)
            .unwrap_or_else(|_| "\"\"".into())
            .as_bytes(),
    );
    out.put_slice(b",\"usage\":{\"prompt_tokens\":0,\"total_tokens\":0}}");
    out.freeze()
}

fn item(out: &mut BytesMut, index: usize, embedding: &[u8]) {
    if index > 0 {
        out.put_u8(b',');
    }
    out.put_slice(b"{\"object\":\"embedding\",\"index\":");
    out.put_slice(index.to_string().as_bytes());
    out.put_slice(b",\"embedding\":");
    out.put_slice(embedding);
    out.put_u8(b'}');
}

/// Records the lookup in `ctx`; when some inputs were found and some not, also the body for
/// the upstream: the client's fields with `input` narrowed to the missing ones.
pub fn keep(ctx: &mut Context, body: &RequestBody<'_>, inputs: &[&RawValue], mut batch: Batch) {
    if !batch.none_found() && !batch.all_found() {
        let mut out = BytesMut::with_capacity(256);
        out.put_u8(b'{');
        for (n, (name, raw)) in body.fields().enumerate() {
            if n > 0 {
                out.put_u8(b',');
            }
            out.put_slice(serde_json::to_string(name).unwrap_or_default().as_bytes());
            out.put_u8(b':');
            if name == "input" {
                out.put_u8(b'[');
                let missing = inputs.iter().zip(&batch.found).filter(|(_, f)| f.is_none());
                for (m, (input, _)) in missing.enumerate() {
                    if m > 0 {
                        out.put_u8(b',');
                    }
                    out.put_slice(input.get().as_bytes());
                }
                out.put_u8(b']');
            } else {
                out.put_slice(raw.get().as_bytes());
            }
        }
        out.put_u8(b'}');
        batch.reduced = Some(out.freeze());
    }
    ctx.cache_state = Some(Box::new(batch));
}

fn batch(ctx: &Context) -> Option<&Batch> {
    ctx.cache_state.as_deref()?.downcast_ref::<Batch>()
}

/// The body to send upstream instead of the client's, when some inputs were found.
pub fn take_reduced(ctx: &mut Context) -> Option<Bytes> {
    ctx.cache_state
        .as_deref_mut()?
        .downcast_mut::<Batch>()?
        .reduced
        .take()
}

#[derive(Deserialize)]
struct Answer<'a> {
    #[serde(borrow)]
    data: Vec<Item<'a>>,
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
    #[serde(borrow, default)]
    usage: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Item<'a> {
    #[serde(default)]
    index: Option<usize>,
    #[serde(borrow)]
    embedding: &'a RawValue,
}

/// Each item's embedding by its index (position when it has none); `None` for an answer that
/// is not OpenAI's embeddings list.
fn embeddings<'a>(answer: &'a [u8]) -> Option<(Answer<'a>, Vec<Option<&'a RawValue>>)> {
    let parsed: Answer<'a> = serde_json::from_slice(answer).ok()?;
    let mut by_index = vec![None; parsed.data.len()];
    for (pos, it) in parsed.data.iter().enumerate() {
        let slot = by_index.get_mut(it.index.unwrap_or(pos))?;
        *slot = Some(it.embedding);
    }
    Some((parsed, by_index))
}

/// The client's answer for a batch some of whose inputs were found: the upstream's answer (for
/// the others, in their order) merged with the found ones, every index the client's. The
/// upstream's `model` and `usage` are kept. Without a partial batch, `upstream` unchanged.
pub fn merge(ctx: &Context, upstream: Bytes) -> Bytes {
    let Some(batch) = batch(ctx).filter(|b| !b.none_found() && !b.all_found()) else {
        return upstream;
    };
    let Some((answer, fresh)) = embeddings(&upstream) else {
        return upstream;
    };
    let missing = batch.found.iter().filter(|f| f.is_none()).count();
    if fresh.len() != missing || fresh.iter().any(Option::is_none) {
        // Not one embedding per input sent: pass the upstream's answer on as it is.
        return upstream;
    }
    let mut fresh = fresh.into_iter().flatten();
    let mut out = BytesMut::with_capacity(upstream.len() * batch.found.len() / missing + 128);
    out.put_slice(b"{\"object\":\"list\",\"data\":[");
    for (i, f) in batch.found.iter().enumerate() {
        match f {
            Some(e) => item(&mut out, i, e),
            None => item(
                &mut out,
                i,
                fresh.next().map_or(&b"null"[..], |r| r.get().as_bytes()),
            ),
        }
    }
    out.put_slice(b"],\"model\":");
    out.put_slice(answer.model.map_or("null", |m| m.get()).as_bytes());
    out.put_slice(b",\"usage\":");
    out.put_slice(answer.usage.map_or("null", |u| u.get()).as_bytes());
    out.put_u8(b'}');
    out.freeze()
}

/// What to store from a batch's whole answer (the client's, merged): each input that was not
/// found, under its key. Empty when the answer does not have one embedding per input.
pub fn entries(keys: &[String], store: &[bool], answer: &[u8]) -> Vec<(String, Bytes)> {
    let Some((_, by_index)) = embeddings(answer) else {
        return Vec::new();
    };
    if by_index.len() != keys.len() {
        return Vec::new();
    }
    keys.iter()
        .zip(store)
        .zip(by_index)
        .filter_map(|((key, keep), e)| {
            keep.then_some(())?;
            Some((key.clone(), Bytes::copy_from_slice(e?.get().as_bytes())))
        })
        .collect()
}

/// The keys and which of them to store, from the lookup kept in `ctx`.
pub fn to_store(ctx: &Context) -> Option<(Vec<String>, Vec<bool>)> {
    let b = batch(ctx)?;
    Some((
        b.keys.clone(),
        b.found.iter().map(Option::is_none).collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs_of(body: &str) -> Option<usize> {
        let b = RequestBody::parse(body.as_bytes()).unwrap();
        inputs(&b).map(|v| v.len())
    }

    #[test]
    fn strings_and_token_lists_split_as_openai_counts_inputs() {
        assert_eq!(inputs_of(r#"{"input":"a"}"#), Some(1));
        assert_eq!(inputs_of(r#"{"input":["a","b"]}"#), Some(2));
        assert_eq!(inputs_of(r#"{"input":[1,2,3]}"#), Some(1));
        assert_eq!(inputs_of(r#"{"input":[[1,2],[3]]}"#), Some(2));
        assert_eq!(inputs_of(r#"{"input":[]}"#), None);
        assert_eq!(inputs_of(r#"{}"#), None);
    }

    #[test]
    fn a_partial_batch_merges_in_order_with_the_upstreams_usage() {
        let batch = Batch::new(
            vec!["k0".into(), "k1".into(), "k2".into()],
            vec![None, Some(Bytes::from_static(b"[1.0]")), None],
        );
        let mut ctx = Context::default();
        let body =
            RequestBody::parse(br#"{"model":"e","input":["a","b","c"],"dimensions":2}"#).unwrap();
        let ins = inputs(&body).unwrap();
        keep(&mut ctx, &body, &ins, batch);
        let reduced = take_reduced(&mut ctx).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&reduced).unwrap();
        assert_eq!(v["input"], serde_json::json!(["a", "c"]));
        assert_eq!(v["dimensions"], 2);
        let upstream = Bytes::from_static(br#"{"object":"list","data":[{"object":"embedding","index":1,"embedding":[2.0]},{"object":"embedding","index":0,"embedding":[0.0]}],"model":"m","usage":{"prompt_tokens":2,"total_tokens":2}}"#);
        let merged = merge(&ctx, upstream);
        let v: serde_json::Value = serde_json::from_slice(&merged).unwrap();
        let got: Vec<_> = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["index"].as_u64().unwrap(),
                    d["embedding"][0].as_f64().unwrap(),
                )
            })
            .collect();
        assert_eq!(got, vec![(0, 0.0), (1, 1.0), (2, 2.0)]);
        assert_eq!(v["usage"]["prompt_tokens"], 2);
        let (keys, store) = to_store(&ctx).unwrap();
        let e = entries(&keys, &store, &merged);
        assert_eq!(
            e,
            vec![
                ("k0".to_string(), Bytes::from_static(b"[0.0]")),
                ("k2".to_string(), Bytes::from_static(b"[2.0]"))
            ]
        );
    }
}
