//! `gen_ai.response.finish_reasons`: the finish reasons an answer carried, found in the bytes
//! as they go to the client (a whole body or each stream write), never by parsing the answer
//! again. Chat answers say `"finish_reason":"stop"`, Anthropic Messages answers
//! `"stop_reason":"end_turn"`; one scan finds both. Only sampled traces are scanned. A reason
//! split across two stream writes is found in the seam between them (the last piece's tail is
//! kept on the trace).

use crate::context::{FinishReasons, Trace};
use memchr::memmem::Finder;
use std::sync::LazyLock;

/// Reasons recorded as a bit each (index = bit); any other is kept as text (the first one).
pub const KNOWN: [&str; 14] = [
    "stop",
    "length",
    "tool_calls",
    "content_filter",
    "function_call",
    "end_turn",
    "max_tokens",
    "stop_sequence",
    "tool_use",
    "pause_turn",
    "refusal",
    "error",
    "model_context_window_exceeded",
    "cancelled",
];

/// Longest reason read (longer values are not finish reasons).
const MAX_REASON: usize = 40;

static KEY_END: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"_reason\""));

/// Notes the finish reasons in a piece of the answer going to the client.
pub fn note(trace: &mut Trace, bytes: &[u8]) {
    if trace.sampled && !bytes.is_empty() {
        scan(&mut trace.finish_reasons, bytes);
    }
}

pub fn scan(r: &mut FinishReasons, bytes: &[u8]) {
    const TAIL: usize = 48;
    let t = r.tail_len as usize;
    if t > 0 {
        // The seam: the previous piece's tail, then this piece's head. A reason wholly in the
        // tail was found before and is found again here: recording is idempotent.
        let mut seam = [0u8; 2 * TAIL];
        let h = bytes.len().min(TAIL);
        seam[..t].copy_from_slice(&r.tail[..t]);
        seam[t..t + h].copy_from_slice(&bytes[..h]);
        find(r, &seam[..t + h]);
    }
    find(r, bytes);
    if bytes.len() >= TAIL {
        r.tail.copy_from_slice(&bytes[bytes.len() - TAIL..]);
        r.tail_len = TAIL as u8;
    } else {
        let mut joined = [0u8; 2 * TAIL];
        joined[..t].copy_from_slice(&r.tail[..t]);
        joined[t..t + bytes.len()].copy_from_slice(bytes);
        let n = t + bytes.len();
        let keep = n.min(TAIL);
        r.tail[..keep].copy_from_slice(&joined[n - keep..n]);
        r.tail_len = keep as u8;
    }
}

fn find(r: &mut FinishReasons, hay: &[u8]) {
    for at in KEY_END.find_iter(hay) {
        let key = &hay[..at];
        if !(key.ends_with(b"\"finish") || key.ends_with(b"\"stop")) {
            continue;
        }
        if let Some(reason) = value_after(&hay[at + b"_reason\"".len()..]) {
            record(r, reason);
        }
    }
}

/// The string after `: ` (`null` or a cut-off value is `None`).
fn value_after(rest: &[u8]) -> Option<&str> {
    let mut i = 0;
    let skip = |i: &mut usize| {
        while rest.get(*i).is_some_and(|b| b.is_ascii_whitespace()) {
            *i += 1;
        }
    };
    skip(&mut i);
    (rest.get(i) == Some(&b':')).then_some(())?;
    i += 1;
    skip(&mut i);
    (rest.get(i) == Some(&b'"')).then_some(())?;
    let value = &rest[i + 1..];
    let end = memchr::memchr(b'"', &value[..value.len().min(MAX_REASON + 1)])?;
    let value = &value[..end];
    if value.is_empty()
        || !value
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return None;
    }
    std::str::from_utf8(value).ok()
}

fn record(r: &mut FinishReasons, reason: &str) {
    match KNOWN.iter().position(|k| *k == reason) {
        Some(bit) => r.known |= 1 << bit,
        None if r.other.is_none() => r.other = Some(reason.into()),
        None => {}
    }
}

/// The reasons, well-known ones in [`KNOWN`]'s order then the other one; empty when none.
pub fn reasons(r: &FinishReasons) -> smallvec::SmallVec<[&str; 4]> {
    let mut out = smallvec::SmallVec::new();
    for (bit, name) in KNOWN.iter().enumerate() {
        if r.known & (1 << bit) != 0 {
            out.push(*name);
        }
    }
    if let Some(o) = &r.other {
        out.push(&**o);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(r: &FinishReasons) -> Vec<String> {
        reasons(r).iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn whole_bodies_of_both_wires() {
        let mut r = FinishReasons::default();
        scan(
            &mut r,
            br#"{"choices":[{"index":0,"message":{"content":"say \"finish_reason\":\"x\""},"finish_reason":"stop"},{"index":1,"finish_reason" : "length"}]}"#,
        );
        assert_eq!(names(&r), ["stop", "length"]);
        let mut r = FinishReasons::default();
        scan(
            &mut r,
            br#"{"type":"message","stop_reason":"end_turn","stop_sequence":null}"#,
        );
        assert_eq!(names(&r), ["end_turn"]);
        let mut r = FinishReasons::default();
        scan(&mut r, br#"{"finish_reason":null,"x_reason":"stop"}"#);
        assert!(names(&r).is_empty());
        scan(&mut r, br#"{"finish_reason":"weird_one"}"#);
        scan(&mut r, br#"{"finish_reason":"another"}"#);
        assert_eq!(names(&r), ["weird_one"]);
    }

    #[test]
    fn a_reason_split_at_every_byte_of_a_stream_is_found() {
        let stream = concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"},\"finish_reason\":null}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
            "data: [DONE]\n\n"
        )
        .as_bytes();
        for cut in 1..stream.len() {
            for step in [1, 3, 7] {
                let mut r = FinishReasons::default();
                scan(&mut r, &stream[..cut]);
                for piece in stream[cut..].chunks(step) {
                    scan(&mut r, piece);
                }
                assert_eq!(names(&r), ["tool_calls"], "cut {cut} step {step}");
            }
        }
    }
}
