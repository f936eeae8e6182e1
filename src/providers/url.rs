//! Model names in upstream URL paths. Gemini (`…/models/{model}:generateContent`), Vertex
//! (`…/publishers/{p}/models/{model}:rawPredict`), Azure (`…/deployments/{deployment}/…`) and
//! Bedrock (`/model/{id}/converse`) put the model in the path, and with a wildcard group
//! (`gemini/*`) that model is whatever the client sent. So it always goes in as exactly one
//! path segment:
//!
//! - [`push_segment`] (Gemini, Vertex, Azure): RFC 3986 unreserved characters and `@` (Vertex
//!   versions: `claude-3-5-sonnet@20240620`) stay, every other byte is percent-encoded, so `/`,
//!   `?`, `#`, `%`, `:`, spaces and control characters cannot add segments, a query, a fragment
//!   or a method suffix.
//! - Bedrock keeps its own documented encoding (`sigv4::uri_encode`, `:` as `%3A`, ARNs' `/`
//!   as `%2F`), checked with [`check_segment`].
//!
//! `.` and `..` cannot be made safe by encoding (servers and proxies normalise `%2E%2E` too), so
//! they are refused; clients get a 400 for them before routing (`openai::request::check_model_name`),
//! this is the backstop for configured names.

use std::fmt::Write;

/// Refuses values that cannot be a single path segment however they are encoded.
pub fn check_segment(value: &str) -> Result<(), String> {
    match value {
        "" => Err("must not be empty".into()),
        "." | ".." => Err(format!(
            "\"{value}\" is not a valid model name (it would be a relative path segment)"
        )),
        _ => Ok(()),
    }
}

/// Appends `value` to `out` as one percent-encoded path segment (see the module doc).
pub fn push_segment(out: &mut String, value: &str) -> Result<(), String> {
    check_segment(value)?;
    for &b in value.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'@') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    Ok(())
}

/// [`push_segment`] into a new string.
pub fn segment(value: &str) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    push_segment(&mut out, value)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_segment_whatever_the_input() {
        assert_eq!(segment("gemini-2.5-pro").unwrap(), "gemini-2.5-pro");
        assert_eq!(
            segment("claude-3-5-sonnet@20240620").unwrap(),
            "claude-3-5-sonnet@20240620"
        );
        assert_eq!(
            segment("../../admin?x=#f").unwrap(),
            "..%2F..%2Fadmin%3Fx%3D%23f"
        );
        assert_eq!(segment("a b\r\n%2F:m").unwrap(), "a%20b%0D%0A%252F%3Am");
        assert_eq!(segment("é").unwrap(), "%C3%A9");
        for bad in ["", ".", ".."] {
            assert!(segment(bad).is_err(), "{bad:?}");
        }
        assert_eq!(segment("...").unwrap(), "...");
    }
}
