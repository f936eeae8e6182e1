//! Cheap scans of OpenAI JSON the gateway forwards unchanged (pass-through responses and stream
//! chunks): is there a `usage` or `error` member, and what is the top-level `usage`, without
//! parsing the whole document. The scans look for the key's bytes (`"usage"` then `:`), which
//! JSON cannot produce inside a string value (its quotes would be escaped); a key of that name
//! nested deeper can match, so callers confirm a match with a parse, and matches are rare.

use super::response::Usage;
use memchr::memmem::{Finder, FinderRev};
use std::sync::LazyLock;

static USAGE_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"usage\""));
static ERROR_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"error\""));
static USAGE_KEY_REV: LazyLock<FinderRev<'static>> = LazyLock::new(|| FinderRev::new(b"\"usage\""));

/// Whether `json` is, at first sight, one JSON object: `{` … `}` around optional whitespace.
/// Catches what an upstream sends instead of JSON (HTML, plain text, a truncated body); what
/// it lets through is forwarded to the client unchanged, as the upstream sent it.
pub fn looks_like_object(json: &[u8]) -> bool {
    let json = json.trim_ascii();
    json.first() == Some(&b'{') && json.last() == Some(&b'}')
}

/// Whether `json` may have a `usage` member that is not `null`. Never false when there is one
/// (keys written without escapes); may be true for a nested `usage` key.
pub fn may_have_usage(json: &[u8]) -> bool {
    may_have_value(json, &USAGE_KEY)
}

/// Whether `json` may have an `error` member that is not `null` (see [`may_have_usage`]).
pub fn may_have_error(json: &[u8]) -> bool {
    may_have_value(json, &ERROR_KEY)
}

fn may_have_value(json: &[u8], key: &Finder<'_>) -> bool {
    key.find_iter(json)
        .any(|pos| match value_start(json, pos, key.needle().len()) {
            Some(start) => !json[start..].starts_with(b"null"),
            None => false,
        })
}

/// Where the value of the key whose quoted name starts at `pos` begins: after the name,
/// whitespace, `:` and whitespace. `None` when the match is not a key (no `:` follows) or its
/// opening quote is escaped (the end of a longer string).
fn value_start(json: &[u8], pos: usize, name_len: usize) -> Option<usize> {
    let backslashes = json[..pos]
        .iter()
        .rev()
        .take_while(|&&b| b == b'\\')
        .count();
    if backslashes % 2 == 1 {
        return None;
    }
    let mut i = pos + name_len;
    while json.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    if json.get(i) != Some(&b':') {
        return None;
    }
    i += 1;
    while json.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    Some(i)
}

/// The top-level `usage` of a whole OpenAI body (`chat.completion`, embeddings list), found
/// from the end, where OpenAI writes it: the last `"usage":` key whose value parses as usage
/// and after which only the top-level object's remaining members follow. Costs a SIMD search
/// plus a scan of the bytes after `usage`, not a parse of the body. `Ok(None)`: the body has no
/// top-level usage (or `usage: null`). `Err(())`: a `usage` key was there but could not be read
/// this way; parse the body to be sure.
#[allow(clippy::result_unit_err)]
pub fn top_level_usage(json: &[u8]) -> Result<Option<Usage>, ()> {
    top_level_usage_as(json)
}

/// [`top_level_usage`] read as another API's usage shape (the Responses API's).
#[allow(clippy::result_unit_err)]
pub fn top_level_usage_as<T: serde::de::DeserializeOwned>(json: &[u8]) -> Result<Option<T>, ()> {
    let mut unreadable = false;
    for pos in USAGE_KEY_REV.rfind_iter(json) {
        let Some(start) = value_start(json, pos, USAGE_KEY_REV.needle().len()) else {
            continue;
        };
        let mut values = serde_json::Deserializer::from_slice(&json[start..]).into_iter();
        match values.next() {
            Some(Ok::<Option<T>, _>(usage)) => {
                if closes_top_level(&json[start + values.byte_offset()..]) {
                    return Ok(usage);
                }
            }
            _ => unreadable = true,
        }
    }
    if unreadable {
        Err(())
    } else {
        Ok(None)
    }
}

/// Whether `tail` (what follows a member's value) closes the enclosing object as the last
/// thing in the document: the first bracket it closes without opening is the final `}`.
fn closes_top_level(tail: &[u8]) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, &b) in tail.iter().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' if depth > 0 => depth -= 1,
            b'}' => return tail[i + 1..].trim_ascii().is_empty(),
            b']' => return false,
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_keys_are_found_and_null_or_quoted_ones_are_not() {
        assert!(may_have_usage(
            br#"{"choices":[],"usage":{"prompt_tokens":1}}"#
        ));
        assert!(may_have_usage(br#"{"usage" : {"prompt_tokens":1}}"#));
        assert!(!may_have_usage(
            br#"{"choices":[{"delta":{}}],"usage":null}"#
        ));
        assert!(!may_have_usage(br#"{"usage":   null}"#));
        // The word inside content, quoted or not, is not a key.
        assert!(!may_have_usage(
            br#"{"delta":{"content":"say \"usage\": 5, \"usage\" and usage"}}"#
        ));
        assert!(!may_have_usage(br#"{"delta":{"content":"the \"usage"}}"#));
        assert!(may_have_error(br#"{"error":{"message":"boom"}}"#));
        assert!(!may_have_error(br#"{"id":"x","error":null}"#));
        assert!(!may_have_error(
            br#"{"delta":{"content":"\"error\": none"}}"#
        ));
    }

    #[test]
    fn top_level_usage_from_the_end() {
        let body = br#"{"id":"c","choices":[{"message":{"content":"\"usage\": {\"prompt_tokens\": 9}"}}],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7,"prompt_tokens_details":{"cached_tokens":2}},"system_fingerprint":"fp_{x}"}"#;
        let u = top_level_usage(body).unwrap().unwrap();
        assert_eq!(u, Usage::new(3, 4).with_cached(2));
        // A nested `usage` after the top-level one (Groq's x_groq) is not taken for it.
        let body = br#"{"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3},"x_groq":{"usage":{"prompt_tokens":50}}}"#;
        assert_eq!(top_level_usage(body).unwrap(), Some(Usage::new(1, 2)));
        // Only nested: none at the top.
        let body = br#"{"x":{"usage":{"prompt_tokens":50}}}"#;
        assert_eq!(top_level_usage(body).unwrap(), None);
        assert_eq!(top_level_usage(br#"{"usage":null}"#).unwrap(), None);
        assert_eq!(top_level_usage(br#"{"id":"x"}"#).unwrap(), None);
        // A usage value that is not usage: the caller must parse.
        assert!(top_level_usage(br#"{"usage":"lots"}"#).is_err());
    }

    #[test]
    fn objects_at_first_sight() {
        assert!(looks_like_object(b" {\"a\":1}\n"));
        assert!(!looks_like_object(b"<html></html>"));
        assert!(!looks_like_object(b"{\"a\":"));
        assert!(!looks_like_object(b""));
    }
}
