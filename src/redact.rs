//! Keeps the operator's credentials out of what upstreams say. Upstream error text reaches
//! clients (error bodies, mid-stream error events) and logs, and some upstreams quote the
//! credential they were sent (`Incorrect API key provided: sk-…`). [`Secrets`] is the set of
//! configured credentials, built once per config load (off the hot path) and held by the routing
//! snapshot; the exchange passes every failed attempt's error through [`Secrets::redact_error`]
//! before it is logged or answered, so no provider can forget to.
//!
//! What is redacted, each occurrence replaced by [`REDACTED`]:
//! - every configured secret of at least [`MIN_SECRET_LEN`] bytes: deployments' `api_key` and
//!   secret-like `litellm_params` (`*key`, `*key_id`, `*secret`, `*token`, `*password`:
//!   `aws_secret_access_key`, `aws_session_token`, …), the master key, and the values of
//!   environment variables providers read credentials from (`*_API_KEY`, `*_ACCESS_KEY_ID`,
//!   `*_SECRET_ACCESS_KEY`, `*_SESSION_TOKEN`);
//! - masked echoes (`sk-abc1****wxyz`, `sk-...wxyz`): a word with a run of `*` or `...` whose
//!   visible start or end (4+ characters) is the start or end of a secret;
//! - whatever follows `Bearer ` and Google access tokens (`ya29.…`), which are minted at run
//!   time (Vertex) and so cannot be listed in advance.

use crate::config::Config;
use crate::error::GatewayError;
use aho_corasick::{AhoCorasick, MatchKind};
use std::borrow::Cow;

/// What a secret is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// Shorter values are not treated as secrets: placeholders like `none` or `ollama` would
/// otherwise blank out ordinary words (provider names) in every error message.
pub const MIN_SECRET_LEN: usize = 8;

/// Visible characters of a masked echo that must match a secret's start or end.
const MASK_MATCH_LEN: usize = 4;

/// The configured secrets, and the matcher that finds them all in one pass.
#[derive(Default)]
pub struct Secrets {
    secrets: Vec<String>,
    matcher: Option<AhoCorasick>,
}

impl Secrets {
    /// Collects the credentials `config` (and the process environment) gives the gateway.
    pub fn from_config(config: &Config) -> Secrets {
        let mut found: Vec<String> = Vec::new();
        found.extend(config.general.master_key.clone());
        for dep in &config.deployments {
            found.extend(dep.params.api_key.clone());
            for (key, value) in &dep.params.extra {
                if let Some(v) = value.as_str().filter(|_| is_secret_param(key)) {
                    found.push(v.to_string());
                }
            }
        }
        // vars_os: `vars` panics on a variable that is not UTF-8.
        for (name, value) in std::env::vars_os() {
            if let (Some(name), Some(value)) = (name.to_str(), value.to_str()) {
                if is_secret_env(name) {
                    found.push(value.to_string());
                }
            }
        }
        Secrets::new(found)
    }

    /// A set of these secrets (short ones dropped, duplicates removed).
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Secrets {
        let mut secrets: Vec<String> = secrets
            .into_iter()
            .map(|s| s.trim().to_string())
            .filter(|s| s.len() >= MIN_SECRET_LEN)
            .collect();
        secrets.sort();
        secrets.dedup();
        let matcher = (!secrets.is_empty())
            .then(|| {
                AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(&secrets)
                    .ok()
            })
            .flatten();
        Secrets { secrets, matcher }
    }

    /// `text` with every secret, masked echo and bearer token replaced by [`REDACTED`].
    pub fn redact<'t>(&self, text: &'t str) -> Cow<'t, str> {
        let mut text = Cow::Borrowed(text);
        if let Some(m) = &self.matcher {
            if m.is_match(text.as_ref()) {
                let mut out = String::with_capacity(text.len());
                m.replace_all_with(&text, &mut out, |_, _, out| {
                    out.push_str(REDACTED);
                    true
                });
                text = Cow::Owned(out);
            }
        }
        let t = text.as_ref();
        if t.contains('*')
            || t.contains("...")
            || t.contains('…')
            || t.contains("Bearer ")
            || t.contains("bearer ")
            || t.contains("ya29.")
        {
            if let Some(words) = self.redact_words(t) {
                text = Cow::Owned(words);
            }
        }
        text
    }

    /// The error with its message (and upstream code) redacted.
    pub fn redact_error(&self, mut err: GatewayError) -> GatewayError {
        if let Cow::Owned(m) = self.redact(&err.message) {
            err.message = m;
        }
        if let Some(code) = &err.code {
            if let Cow::Owned(c) = self.redact(code) {
                err.code = Some(c);
            }
        }
        err
    }

    /// The word-level rules (masked echoes, bearer tokens); `None` when nothing changed.
    fn redact_words(&self, text: &str) -> Option<String> {
        let mut out = String::with_capacity(text.len());
        let mut changed = false;
        let mut after_bearer = false;
        let mut rest = text;
        while !rest.is_empty() {
            let ws = rest.len() - rest.trim_start().len();
            out.push_str(&rest[..ws]);
            rest = &rest[ws..];
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            let word = &rest[..end];
            rest = &rest[end..];
            if word.is_empty() {
                break;
            }
            // The token without quotes and punctuation around it.
            let core = word.trim_matches(|c: char| {
                matches!(
                    c,
                    '"' | '\'' | '`' | ',' | ';' | '(' | ')' | '[' | ']' | '{' | '}' | '<' | '>'
                )
            });
            let core = core.trim_end_matches(['.', ':']);
            let secret_like = !core.is_empty()
                && !word.contains(REDACTED)
                && (after_bearer || core.starts_with("ya29.") || self.is_masked_secret(core));
            after_bearer = core.eq_ignore_ascii_case("bearer");
            if secret_like {
                let start = word.find(core).unwrap_or(0);
                out.push_str(&word[..start]);
                out.push_str(REDACTED);
                out.push_str(&word[start + core.len()..]);
                changed = true;
            } else {
                out.push_str(word);
            }
        }
        changed.then_some(out)
    }

    /// `sk-abc1****wxyz`, `sk-...wxyz`: a mask with a secret's start or end visible around it.
    fn is_masked_secret(&self, word: &str) -> bool {
        let mask_at = ["***", "...", "…"]
            .iter()
            .filter_map(|m| word.find(m).map(|i| (i, m.len())))
            .min();
        let Some((start, _)) = mask_at else {
            return false;
        };
        let head = &word[..start];
        let tail = word[start..].trim_start_matches(['*', '.', '…']);
        let matches = |part: &str, f: fn(&str, &str) -> bool| {
            part.len() >= MASK_MATCH_LEN && self.secrets.iter().any(|s| f(s, part))
        };
        matches(head, |s, p| s.starts_with(p)) || matches(tail, |s, p| s.ends_with(p))
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }
}

/// `litellm_params` keys that hold credentials (`aws_secret_access_key`, `aws_session_token`,
/// `aws_access_key_id`, …). `max_tokens` and the like do not match.
fn is_secret_param(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["key", "key_id", "secret", "token", "password"]
        .iter()
        .any(|s| key.ends_with(s))
}

/// Environment variables providers read credentials from (`OPENAI_API_KEY`, `AWS_…`).
fn is_secret_env(name: &str) -> bool {
    [
        "_API_KEY",
        "_ACCESS_KEY_ID",
        "_SECRET_ACCESS_KEY",
        "_SESSION_TOKEN",
        "_MASTER_KEY",
    ]
    .iter()
    .any(|s| name.ends_with(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets() -> Secrets {
        Secrets::new(
            [
                "sk-live-0123456789abcdefWXYZ",
                "wJalrXUtnFEMI/K7MDENG/bPxRfiCY",
                "ollama",
                "sk-live-0123",
            ]
            .map(String::from),
        )
    }

    #[test]
    fn whole_secrets_are_replaced_longest_first() {
        let s = secrets();
        assert_eq!(
            s.redact("openai: Incorrect API key provided: sk-live-0123456789abcdefWXYZ."),
            "openai: Incorrect API key provided: [REDACTED]."
        );
        assert_eq!(
            s.redact("sig for wJalrXUtnFEMI/K7MDENG/bPxRfiCY and sk-live-0123 x"),
            "sig for [REDACTED] and [REDACTED] x"
        );
        // Too short to be a secret: ordinary words survive.
        assert_eq!(
            s.redact("ollama: model not found"),
            "ollama: model not found"
        );
        assert!(matches!(s.redact("nothing here"), Cow::Borrowed(_)));
    }

    #[test]
    fn masked_echoes_and_bearer_tokens() {
        let s = secrets();
        assert_eq!(
            s.redact("Incorrect API key provided: sk-liv**************WXYZ. See docs."),
            "Incorrect API key provided: [REDACTED]. See docs."
        );
        assert_eq!(
            s.redact("key 'sk-...WXYZ' is invalid"),
            "key '[REDACTED]' is invalid"
        );
        assert_eq!(
            s.redact("got Authorization: Bearer abc.def-ghi, rejected"),
            "got Authorization: Bearer [REDACTED], rejected"
        );
        assert_eq!(
            s.redact("token ya29.a0AfH6SMB is expired"),
            "token [REDACTED] is expired"
        );
        // A mask that matches no secret, and ordinary ellipses, stay.
        assert_eq!(
            s.redact("sk-abcd****zzzz ... and so on"),
            "sk-abcd****zzzz ... and so on"
        );
    }

    #[test]
    fn secret_params_and_env_names() {
        for k in [
            "api_key",
            "aws_secret_access_key",
            "aws_access_key_id",
            "aws_session_token",
            "password",
        ] {
            assert!(is_secret_param(k), "{k}");
        }
        for k in [
            "max_tokens",
            "aws_region_name",
            "vertex_project",
            "api_base",
        ] {
            assert!(!is_secret_param(k), "{k}");
        }
        assert!(is_secret_env("OPENAI_API_KEY") && is_secret_env("AWS_SECRET_ACCESS_KEY"));
        assert!(!is_secret_env("AWS_REGION") && !is_secret_env("HOME"));
    }

    #[test]
    fn errors_are_redacted_in_place() {
        let e = GatewayError::from_upstream(401, "bad key sk-live-0123456789abcdefWXYZ");
        let e = secrets().redact_error(e);
        assert_eq!(e.message, "bad key [REDACTED]");
        assert_eq!(e.status, 401);
    }
}
