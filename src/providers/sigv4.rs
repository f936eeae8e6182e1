//! AWS Signature Version 4 (header-based) for non-S3 services, with `ring` for SHA-256 and
//! HMAC-SHA256. Owns the canonical request (the wire path URI-encoded once more, as every
//! service but S3 requires), the string to sign, the signing-key derivation and the
//! `Authorization` header. Pure functions of their inputs (the time is a parameter), so the
//! published AWS test vectors check them directly.

use crate::civil_time::civil_from_days;
use ring::{digest, hmac};
use std::fmt::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// Long-lived or temporary (STS) AWS credentials.
#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Sent (and signed) as `x-amz-security-token` for temporary credentials.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret or the token.
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// What one request needs signed: the wire path (already URI-encoded, with an optional
/// `?query`), the `Host` header value, the content type and the exact body bytes sent.
pub struct SignableRequest<'a> {
    pub method: &'a str,
    pub path_and_query: &'a str,
    pub host: &'a str,
    pub content_type: Option<&'a str>,
    pub body: &'a [u8],
}

/// The headers to add to the request (lowercase names), `authorization` last.
pub type SignedHeaders = Vec<(&'static str, String)>;

/// Signs a request at `time` for `region`/`service`: returns `x-amz-date`,
/// `x-amz-content-sha256`, `x-amz-security-token` (temporary credentials) and `authorization`.
pub fn sign(
    creds: &Credentials,
    region: &str,
    service: &str,
    req: &SignableRequest<'_>,
    time: SystemTime,
) -> SignedHeaders {
    let amz_date = amz_date(time);
    let payload_hash = hex(digest::digest(&digest::SHA256, req.body).as_ref());
    let mut headers: Vec<(&'static str, &str)> = Vec::with_capacity(5);
    if let Some(ct) = req.content_type {
        headers.push(("content-type", ct));
    }
    headers.push(("host", req.host));
    headers.push(("x-amz-content-sha256", &payload_hash));
    headers.push(("x-amz-date", &amz_date));
    if let Some(token) = &creds.session_token {
        headers.push(("x-amz-security-token", token));
    }
    // Already in lexical order: content-type < host < x-amz-content-sha256 < x-amz-date < x-amz-security-token.
    let (path, query) = match req.path_and_query.split_once('?') {
        Some((p, q)) => (p, q),
        None => (req.path_and_query, ""),
    };
    let authorization = authorization(
        creds,
        region,
        service,
        &amz_date,
        req.method,
        &canonical_uri(path),
        &canonical_query(query),
        &headers,
        &payload_hash,
    );
    let mut out: SignedHeaders = Vec::with_capacity(4);
    out.push(("x-amz-date", amz_date.clone()));
    out.push(("x-amz-content-sha256", payload_hash.clone()));
    if let Some(token) = &creds.session_token {
        out.push(("x-amz-security-token", token.clone()));
    }
    out.push(("authorization", authorization));
    out
}

/// The `Authorization` header value from already-canonical parts. `headers` are lowercase
/// names with their values, sorted by name; `amz_date` is `YYYYMMDD'T'HHMMSS'Z'`.
#[allow(clippy::too_many_arguments)]
pub fn authorization(
    creds: &Credentials,
    region: &str,
    service: &str,
    amz_date: &str,
    method: &str,
    canonical_uri: &str,
    canonical_query: &str,
    headers: &[(&str, &str)],
    payload_hash: &str,
) -> String {
    let signed_headers = headers
        .iter()
        .map(|(k, _)| *k)
        .collect::<Vec<_>>()
        .join(";");
    let creq = canonical_request(
        method,
        canonical_uri,
        canonical_query,
        headers,
        &signed_headers,
        payload_hash,
    );
    let date = &amz_date[..amz_date.len().min(8)];
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex(digest::digest(&digest::SHA256, creq.as_bytes()).as_ref())
    );
    let key = signing_key(&creds.secret_access_key, date, region, service);
    let signature = hex(hmac::sign(&key, string_to_sign.as_bytes()).as_ref());
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
        creds.access_key_id
    )
}

/// The canonical request: method, URI, query, `name:value\n` per header, signed header list,
/// payload hash, each on its own line.
pub fn canonical_request(
    method: &str,
    canonical_uri: &str,
    canonical_query: &str,
    headers: &[(&str, &str)],
    signed_headers: &str,
    payload_hash: &str,
) -> String {
    let mut s = String::with_capacity(256);
    s.push_str(method);
    s.push('\n');
    s.push_str(canonical_uri);
    s.push('\n');
    s.push_str(canonical_query);
    s.push('\n');
    for (name, value) in headers {
        s.push_str(name);
        s.push(':');
        push_trimmed(&mut s, value);
        s.push('\n');
    }
    s.push('\n');
    s.push_str(signed_headers);
    s.push('\n');
    s.push_str(payload_hash);
    s
}

/// kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request").
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> hmac::Key {
    let mut k = Vec::with_capacity(4 + secret.len());
    k.extend_from_slice(b"AWS4");
    k.extend_from_slice(secret.as_bytes());
    let mut key = hmac::Key::new(hmac::HMAC_SHA256, &k);
    for part in [date, region, service, "aws4_request"] {
        let tag = hmac::sign(&key, part.as_bytes());
        key = hmac::Key::new(hmac::HMAC_SHA256, tag.as_ref());
    }
    key
}

/// The canonical URI of a non-S3 request: every segment of the (already encoded) wire path
/// URI-encoded once more, so `%3A` becomes `%253A`. An empty path is `/`.
pub fn canonical_uri(path: &str) -> String {
    if path.is_empty() {
        return "/".to_string();
    }
    let mut out = String::with_capacity(path.len() + 16);
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        uri_encode(segment, &mut out);
    }
    out
}

/// The canonical query string: parameters decoded, re-encoded strictly, sorted by name then
/// value, `=` always present.
pub fn canonical_query(query: &str) -> String {
    if query.is_empty() {
        return String::new();
    }
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let mut ek = String::new();
            let mut ev = String::new();
            uri_encode(&percent_decode(k), &mut ek);
            uri_encode(&percent_decode(v), &mut ev);
            (ek, ev)
        })
        .collect();
    pairs.sort();
    let mut out = String::with_capacity(query.len() + 8);
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// RFC 3986 encoding as SigV4 wants it: unreserved characters (`A-Za-z0-9-._~`) as they are,
/// every other byte as `%XX` (uppercase hex).
pub fn uri_encode(s: &str, out: &mut String) {
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex_val(b[i + 1]), hex_val(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Header values are trimmed and inner runs of spaces collapsed to one.
fn push_trimmed(out: &mut String, value: &str) {
    let mut prev_space = false;
    for c in value.trim().chars() {
        if c == ' ' {
            if !prev_space {
                out.push(' ');
            }
            prev_space = true;
        } else {
            out.push(c);
            prev_space = false;
        }
    }
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(H[(b >> 4) as usize] as char);
        s.push(H[(b & 15) as usize] as char);
    }
    s
}

/// `YYYYMMDD'T'HHMMSS'Z'` in UTC.
pub fn amz_date(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn example_creds() -> Credentials {
        Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        }
    }

    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    /// AWS SigV4 test suite, `get-vanilla`: `GET /` with `Host: example.amazonaws.com` and
    /// `X-Amz-Date: 20150830T123600Z`, service `service`, region `us-east-1`.
    #[test]
    fn aws_test_suite_get_vanilla() {
        let auth = authorization(
            &example_creds(),
            "us-east-1",
            "service",
            "20150830T123600Z",
            "GET",
            &canonical_uri("/"),
            &canonical_query(""),
            &[
                ("host", "example.amazonaws.com"),
                ("x-amz-date", "20150830T123600Z"),
            ],
            EMPTY_SHA256,
        );
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    /// AWS SigV4 test suite, `post-vanilla`: as get-vanilla with `POST`.
    #[test]
    fn aws_test_suite_post_vanilla() {
        let auth = authorization(
            &example_creds(),
            "us-east-1",
            "service",
            "20150830T123600Z",
            "POST",
            &canonical_uri("/"),
            "",
            &[
                ("host", "example.amazonaws.com"),
                ("x-amz-date", "20150830T123600Z"),
            ],
            EMPTY_SHA256,
        );
        assert!(auth.ends_with(
            "Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"
        ));
    }

    /// AWS docs' IAM example (GET ?Action=ListUsers&Version=2010-05-08, service iam), which
    /// also exercises the canonical query and a content-type header.
    #[test]
    fn aws_docs_iam_list_users() {
        let auth = authorization(
            &example_creds(),
            "us-east-1",
            "iam",
            "20150830T123600Z",
            "GET",
            &canonical_uri("/"),
            &canonical_query("Version=2010-05-08&Action=ListUsers"),
            &[
                (
                    "content-type",
                    "application/x-www-form-urlencoded; charset=utf-8",
                ),
                ("host", "iam.amazonaws.com"),
                ("x-amz-date", "20150830T123600Z"),
            ],
            EMPTY_SHA256,
        );
        assert!(
            auth.ends_with(
                "Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
            ),
            "{auth}"
        );
    }

    #[test]
    fn canonical_uri_encodes_the_wire_path_again() {
        assert_eq!(
            canonical_uri("/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"),
            "/model/anthropic.claude-3-haiku-20240307-v1%253A0/converse"
        );
        assert_eq!(canonical_uri(""), "/");
        assert_eq!(canonical_query("b=2&a=x%20y&a=1"), "a=1&a=x%20y&b=2");
    }

    #[test]
    fn amz_date_formats_utc() {
        // 2015-08-30T12:36:00Z
        let t = UNIX_EPOCH + Duration::from_secs(1_440_938_160);
        assert_eq!(amz_date(t), "20150830T123600Z");
        assert_eq!(amz_date(UNIX_EPOCH), "19700101T000000Z");
        // A leap day.
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(amz_date(t), "20000229T000000Z");
    }

    /// A full signed Bedrock request, checked against an independent implementation: Python's
    /// `hmac`/`hashlib`, canonical path from `urllib.parse.quote(segment, safe="-_.~")` over the
    /// wire path `"/model/" + quote(model_id, safe="")`, computed once offline.
    #[test]
    fn signs_a_bedrock_request_with_session_token() {
        let creds = Credentials {
            session_token: Some("TOKEN/xyz=".into()),
            ..example_creds()
        };
        let body = br#"{"messages":[{"role":"user","content":[{"text":"hi"}]}]}"#;
        let t = UNIX_EPOCH + Duration::from_secs(1_440_938_160);
        let headers = sign(
            &creds,
            "us-east-1",
            "bedrock",
            &SignableRequest {
                method: "POST",
                path_and_query: "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse",
                host: "bedrock-runtime.us-east-1.amazonaws.com",
                content_type: Some("application/json"),
                body,
            },
            t,
        );
        let get = |k: &str| {
            headers
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.as_str())
                .unwrap()
        };
        assert_eq!(get("x-amz-date"), "20150830T123600Z");
        assert_eq!(get("x-amz-security-token"), "TOKEN/xyz=");
        assert_eq!(get("authorization"), PYTHON_BEDROCK_SIGNATURE);
    }

    const PYTHON_BEDROCK_SIGNATURE: &str =
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/bedrock/aws4_request, \
         SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date;x-amz-security-token, \
         Signature=de19bc6b4f69953dac86034415c10515096d77317dc1cec740338858554eb753";
}
