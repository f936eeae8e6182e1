//! Entries of the call types answered in their own API's format (`/v1/completions`,
//! `/v1/responses`, `/v1/messages`): the answer exactly as the client got it (the whole JSON
//! body, or a stream's SSE bytes), replayed byte for byte. No conversion between a whole answer
//! and a stream: the `stream` flag is part of these keys. The answer's usage is kept beside it,
//! so a hit counts toward tpm limits as a chat hit does: `usage JSON (or nothing), NUL, the
//! answer`. NUL never occurs in JSON text.

use crate::openai::Usage;
use bytes::{BufMut, Bytes, BytesMut};

const SECTION: u8 = 0;

/// The stored form of an answer and its usage.
pub fn entry(answer: &[u8], usage: Option<Usage>) -> Bytes {
    let usage = usage.and_then(|u| serde_json::to_vec(&u).ok());
    let usage = usage.as_deref().unwrap_or_default();
    let mut out = BytesMut::with_capacity(usage.len() + 1 + answer.len());
    out.put_slice(usage);
    out.put_u8(SECTION);
    out.put_slice(answer);
    out.freeze()
}

/// The answer and its usage of a stored entry (without copying the answer). `None`: not an
/// entry of this form (then a miss).
pub fn parse(stored: Bytes) -> Option<(Bytes, Option<Usage>)> {
    let i = stored.iter().position(|b| *b == SECTION)?;
    let usage = serde_json::from_slice(&stored[..i]).ok();
    let answer = stored.slice(i + 1..);
    (!answer.is_empty()).then_some((answer, usage))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_gives_back_its_answer_and_usage() {
        let usage = Usage {
            prompt_tokens: 3,
            completion_tokens: 4,
            total_tokens: 7,
            ..Usage::default()
        };
        let sse = b"event: message_start\ndata: {\"a\":1}\n\n";
        let (answer, got) = parse(entry(sse, Some(usage))).unwrap();
        assert_eq!(&answer[..], sse);
        assert_eq!(got, Some(usage));
        let (answer, got) = parse(entry(b"{}", None)).unwrap();
        assert_eq!((&answer[..], got), (&b"{}"[..], None));
        assert!(parse(Bytes::from_static(b"{\"no\":\"section\"}")).is_none());
        assert!(parse(entry(b"", None)).is_none());
    }
}
