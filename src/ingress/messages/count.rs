//! `/v1/messages/count_tokens` where the deployment cannot count: an estimate, documented as
//! such. It is the bytes of `system`, `messages` and `tools` as sent, at 4 bytes a token (what
//! tokenizers average on English text and code; JSON punctuation stands in for per-message
//! overhead), so it leans high for base64 images and low for dense non-Latin text. Anthropic
//! deployments answer with Anthropic's own count (passed through).

use crate::openai::RequestBody;
use bytes::Bytes;

/// The estimated input tokens of a Messages request.
pub fn estimate(body: &RequestBody<'_>) -> u64 {
    let bytes: usize = ["system", "messages", "tools"]
        .iter()
        .filter_map(|k| body.get(k))
        .map(|v| v.get().len())
        .sum();
    bytes.div_ceil(4) as u64
}

/// The count_tokens answer, `{"input_tokens":N}`.
pub fn response(tokens: u64) -> Bytes {
    Bytes::from(format!("{{\"input_tokens\":{tokens}}}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimate_counts_prompt_fields_only() {
        let body = br#"{"model":"m","messages":[{"role":"user","content":"abcdefgh"}],"max_tokens":999999}"#;
        let parsed = RequestBody::parse(body).unwrap();
        let messages_len = r#"[{"role":"user","content":"abcdefgh"}]"#.len() as u64;
        assert_eq!(estimate(&parsed), messages_len.div_ceil(4));
        assert_eq!(&response(7)[..], b"{\"input_tokens\":7}");
    }
}
