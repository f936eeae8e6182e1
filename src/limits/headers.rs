//! The `x-ratelimit-*` response headers from a request's [`RateLimitStatus`], written into
//! every answer's head (errors and streams included: the head goes out before the first byte):
//! OpenAI's aggregate names for the tightest scope, and LiteLLM v3's per-descriptor
//! `x-ratelimit-{descriptor}-{limit|remaining}-{requests|tokens|max_parallel_requests}` for
//! every scope; and the `Retry-After` / reset-time text of a refusal.

use super::{Descriptor, Measure};
use crate::context::{RateLimitStatus, RateWindow};
use pingora_http::ResponseHeader;
use std::time::Duration;

/// Adds `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` for the windows that are set.
pub fn decorate(h: &mut ResponseHeader, status: &RateLimitStatus) {
    if let Some(w) = &status.requests {
        put(
            h,
            w,
            [
                "x-ratelimit-limit-requests",
                "x-ratelimit-remaining-requests",
                "x-ratelimit-reset-requests",
            ],
        );
    }
    if let Some(w) = &status.tokens {
        put(
            h,
            w,
            [
                "x-ratelimit-limit-tokens",
                "x-ratelimit-remaining-tokens",
                "x-ratelimit-reset-tokens",
            ],
        );
    }
    for s in &status.scopes {
        let _ = h.insert_header(s.names[0], s.limit);
        let _ = h.insert_header(s.names[1], s.remaining);
    }
}

/// LiteLLM's per-descriptor header names of a scope: `[limit, remaining]` (static: no
/// allocation per request).
pub fn scope_names(d: Descriptor, m: Measure) -> &'static [&'static str; 2] {
    macro_rules! names {
        ($d:literal) => {
            match m {
                Measure::Requests => &[
                    concat!("x-ratelimit-", $d, "-limit-requests"),
                    concat!("x-ratelimit-", $d, "-remaining-requests"),
                ],
                Measure::Tokens => &[
                    concat!("x-ratelimit-", $d, "-limit-tokens"),
                    concat!("x-ratelimit-", $d, "-remaining-tokens"),
                ],
                Measure::Parallel => &[
                    concat!("x-ratelimit-", $d, "-limit-max_parallel_requests"),
                    concat!("x-ratelimit-", $d, "-remaining-max_parallel_requests"),
                ],
            }
        };
    }
    match d {
        Descriptor::ApiKey => names!("api_key"),
        Descriptor::ModelPerKey => names!("model_per_key"),
        Descriptor::Team => names!("team"),
        Descriptor::User => names!("user"),
        Descriptor::TeamMember => names!("team_member"),
        Descriptor::EndUser => names!("end_user"),
    }
}

fn put(h: &mut ResponseHeader, w: &RateWindow, names: [&'static str; 3]) {
    let _ = h.insert_header(names[0], w.limit);
    let _ = h.insert_header(names[1], w.remaining);
    let _ = h.insert_header(names[2], duration_text(w.reset));
}

/// OpenAI's duration form: `250ms`, `1.5s`, `6m0s`.
pub fn duration_text(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        let s = d.as_secs_f64();
        let text = format!("{s:.3}");
        format!("{}s", text.trim_end_matches('0').trim_end_matches('.'))
    } else {
        let s = d.as_secs();
        format!("{}m{}s", s / 60, s % 60)
    }
}

/// Whole seconds for `Retry-After`, rounded up (a client that waits this long is admitted).
pub fn retry_after_secs(wait: Duration) -> u64 {
    let ms = wait.as_millis() as u64;
    ms.div_ceil(1000).max(1)
}

/// `YYYY-MM-DD HH:MM:SS UTC` for a Unix time in milliseconds (LiteLLM's "Limit resets at").
pub fn utc_text(unix_ms: u64) -> String {
    let text = crate::civil_time::iso_ms(unix_ms as i64);
    format!("{} UTC", &text[..19])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts() {
        assert_eq!(duration_text(Duration::from_millis(250)), "250ms");
        assert_eq!(duration_text(Duration::from_millis(1500)), "1.5s");
        assert_eq!(duration_text(Duration::from_secs(2)), "2s");
        assert_eq!(duration_text(Duration::from_secs(360)), "6m0s");
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(6001)), 7);
        assert_eq!(retry_after_secs(Duration::from_millis(6000)), 6);
        assert_eq!(utc_text(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_text(1_709_251_199_000), "2024-02-29 23:59:59 UTC");
    }

    #[test]
    fn headers_written() {
        let mut h = ResponseHeader::build(200, None).unwrap();
        decorate(
            &mut h,
            &RateLimitStatus {
                requests: Some(RateWindow {
                    limit: 10,
                    remaining: 3,
                    reset: Duration::from_millis(4200),
                }),
                tokens: None,
                scopes: [crate::context::ScopeWindow {
                    names: scope_names(Descriptor::Team, Measure::Requests),
                    limit: 10,
                    remaining: 3,
                }]
                .into_iter()
                .collect(),
            },
        );
        let get = |n: &str| h.headers.get(n).map(|v| v.to_str().unwrap().to_string());
        assert_eq!(get("x-ratelimit-limit-requests").as_deref(), Some("10"));
        assert_eq!(get("x-ratelimit-remaining-requests").as_deref(), Some("3"));
        assert_eq!(get("x-ratelimit-reset-requests").as_deref(), Some("4.2s"));
        assert!(get("x-ratelimit-limit-tokens").is_none());
        assert_eq!(
            get("x-ratelimit-team-limit-requests").as_deref(),
            Some("10")
        );
        assert_eq!(
            get("x-ratelimit-team-remaining-requests").as_deref(),
            Some("3")
        );
    }

    #[test]
    fn scope_names_follow_the_descriptor() {
        for d in [
            Descriptor::ApiKey,
            Descriptor::ModelPerKey,
            Descriptor::Team,
            Descriptor::User,
            Descriptor::TeamMember,
            Descriptor::EndUser,
        ] {
            for m in [Measure::Requests, Measure::Tokens, Measure::Parallel] {
                let [limit, remaining] = scope_names(d, m);
                assert_eq!(
                    *limit,
                    format!("x-ratelimit-{}-limit-{}", d.as_str(), m.as_str())
                );
                assert_eq!(
                    *remaining,
                    format!("x-ratelimit-{}-remaining-{}", d.as_str(), m.as_str())
                );
            }
        }
    }
}
