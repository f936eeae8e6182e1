//! The master-key check (the first `authenticate` stage, see [`crate::pipeline`]), against
//! `general_settings.master_key`: `Authorization: Bearer KEY` or
//! `x-api-key: KEY`, compared in constant time.

use crate::error::{ErrorKind, GatewayError};
use pingora_http::RequestHeader;

pub fn check(req: &RequestHeader, master_key: Option<&str>) -> Result<(), GatewayError> {
    let Some(expected) = master_key else {
        return Ok(());
    };
    let presented = req
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim())
        .map(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
                .unwrap_or(v)
                .trim()
        })
        .or_else(|| {
            req.headers
                .get("x-api-key")
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        });
    match presented {
        Some(key) if constant_time_eq(key.as_bytes(), expected.as_bytes()) => Ok(()),
        Some(_) => Err(GatewayError::new(
            ErrorKind::Authentication,
            "Invalid API key. Send the gateway's key as 'Authorization: Bearer <key>'.",
        )
        .with_code("invalid_api_key")),
        None => Err(missing_key()),
    }
}

/// The 401 for a request that presented no key.
pub fn missing_key() -> GatewayError {
    GatewayError::new(
        ErrorKind::Authentication,
        "Missing API key. Send 'Authorization: Bearer <key>' (or 'x-api-key: <key>').",
    )
    .with_code("invalid_api_key")
}

/// Compares without an early exit, so timing does not reveal how much of the key matched.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    difference(a, b) == 0
}

/// Every byte position of the longer input (and the length mismatch) ORed into one value, with
/// no early exit; zero only for equal inputs. `black_box` keeps the optimiser from turning the
/// loop into one that stops at the first difference.
fn difference(a: &[u8], b: &[u8]) -> u64 {
    let mut diff = (a.len() ^ b.len()) as u64;
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0xff);
        diff |= std::hint::black_box((x ^ y) as u64);
    }
    diff
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(h: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("POST", b"/v1/chat/completions", None).unwrap();
        for (k, v) in h {
            r.insert_header(k.to_string(), v.to_string()).unwrap();
        }
        r
    }

    #[test]
    fn auth() {
        assert!(check(&req(&[]), None).is_ok());
        assert!(check(&req(&[("authorization", "Bearer sk-1")]), Some("sk-1")).is_ok());
        assert!(check(&req(&[("x-api-key", "sk-1")]), Some("sk-1")).is_ok());
        assert_eq!(
            check(&req(&[("authorization", "Bearer sk-2")]), Some("sk-1"))
                .unwrap_err()
                .status,
            401
        );
        assert_eq!(check(&req(&[]), Some("sk-1")).unwrap_err().status, 401);
        assert!(!constant_time_eq(b"sk-1", b"sk-10"));
        assert!(!constant_time_eq(b"", b"\xff"));
    }

    /// Not a timing test: the compare's result carries a contribution from every byte position,
    /// so it cannot have stopped at the first difference.
    #[test]
    fn compare_covers_the_whole_length() {
        assert_eq!(difference(b"sk-secret", b"sk-secret"), 0);
        // Differ in the first byte (bit 0x01) and in the last (bit 0x80): both bits are in the
        // result, so the last byte was looked at although the first already differed.
        assert_eq!(difference(b"\x01sk-secret\x00", b"\x00sk-secret\x80"), 0x81);
        // A presented key shorter than the expected one (and already wrong at byte 0): the
        // expected key's last byte still contributes (0x80), as does the length mismatch (1 ^ 4).
        let d = difference(b"\x01", b"\x00\x00\x00\x80");
        assert_eq!(d, 0x80 | 0x01 | (1 ^ 4));
        // And the other way round: the presented key's bytes past the expected length count.
        assert_eq!(difference(b"sk-1\x00", b"sk-1"), (5 ^ 4) | 0xff);
        assert!(!constant_time_eq(b"sk-1\x00", b"sk-1"));
    }
}
