//! `budget_duration` as LiteLLM reads it (`litellm_core_utils/duration_parser.py`): `(\d+)` and a
//! unit `s`, `m` (minutes), `h`, `d`, `w`, `mo` (no unit: seconds), or the aliases `daily`,
//! `weekly`, `monthly`; and the next reset time, "standardized" as LiteLLM's
//! `get_next_standardized_reset_time` makes it (in UTC; LiteLLM's `reset_time_of_day` timezone
//! setting is not read):
//! - `Ns`, `Nm`, `Nh`: the next multiple of N within the minute, hour or day (`2s` at the next
//!   even second, `30m` at :00 and :30), rolling over into the next minute/hour/day;
//! - `1d` the next midnight, `7d`/`1w` the next Monday midnight, `30d` the 1st of next month,
//!   other `Nd` midnight today + N days (`Nw` is `7N` days);
//! - `Nmo`: the 1st of the month N months on, at midnight.

use crate::civil_time::{civil_from_days, days_from_civil};

/// The longest duration accepted, in seconds: 100 years.
const MAX_SECS: u64 = 100 * 365 * 86_400;

/// A parsed duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Duration {
    Seconds(u32),
    Minutes(u32),
    Hours(u32),
    Days(u32),
    Months(u32),
}

impl Duration {
    /// `None` for anything that is not a LiteLLM duration (the admin API refuses those; a row
    /// written elsewhere with one is treated as having no window).
    pub fn parse(s: &str) -> Option<Duration> {
        let s = s.trim();
        match s {
            "daily" => return Some(Duration::Days(1)),
            "weekly" => return Some(Duration::Days(7)),
            "monthly" => return Some(Duration::Days(30)),
            _ => {}
        }
        let digits = s.bytes().take_while(u8::is_ascii_digit).count();
        let n: u64 = s[..digits].parse().ok()?;
        let (unit, make): (u64, fn(u32) -> Duration) = match &s[digits..] {
            "" | "s" => (1, Duration::Seconds),
            "m" => (60, Duration::Minutes),
            "h" => (3_600, Duration::Hours),
            "d" => (86_400, Duration::Days),
            "w" => (7 * 86_400, |n| Duration::Days(n * 7)),
            "mo" => (30 * 86_400, Duration::Months),
            _ => return None,
        };
        // Bounded: at most 100 years (a month counted as 30 days), more than any budget or key
        // lifetime needs; within that every count fits a u32 (and `7 ×` weeks too).
        if n.checked_mul(unit)? > MAX_SECS {
            return None;
        }
        Some(make(u32::try_from(n).ok()?))
    }

    /// The length in ms, a month counted as 30 days (a key's `duration`; LiteLLM's
    /// `duration_in_seconds`).
    pub fn as_ms(self) -> i64 {
        let secs = match self {
            Duration::Seconds(n) => u64::from(n),
            Duration::Minutes(n) => u64::from(n) * 60,
            Duration::Hours(n) => u64::from(n) * 3_600,
            Duration::Days(n) => u64::from(n) * 86_400,
            Duration::Months(n) => u64::from(n) * 30 * 86_400,
        };
        secs as i64 * 1000
    }

    /// The next reset after `now_ms` (Unix ms), always later than `now_ms` (a zero duration
    /// resets a second on, never in a tight loop).
    pub fn next_reset(self, now_ms: i64) -> i64 {
        let secs = now_ms.div_euclid(1000);
        let day_start = secs - secs.rem_euclid(86_400);
        let sod = secs - day_start; // seconds of the day
        let (h, m, s) = (sod / 3600, sod % 3600 / 60, sod % 60);
        let next = |cur: i64, n: i64| cur + n - cur % n;
        let at = match self {
            Duration::Seconds(0)
            | Duration::Minutes(0)
            | Duration::Hours(0)
            | Duration::Days(0) => secs + 1,
            Duration::Seconds(n) => {
                // Aligned within the minute; seconds past 59 roll into minutes (LiteLLM's arithmetic).
                day_start + h * 3600 + m * 60 + next(s, i64::from(n))
            }
            Duration::Minutes(n) => day_start + h * 3600 + next(m, i64::from(n)) * 60,
            Duration::Hours(n) => {
                let nh = next(h, i64::from(n));
                if nh >= 24 {
                    day_start + 86_400 + (nh % 24) * 3600
                } else {
                    day_start + nh * 3600
                }
            }
            Duration::Days(1) => day_start + 86_400,
            Duration::Days(7) => {
                // 1970-01-01 was a Thursday: weekday 0 = Monday.
                let weekday = (day_start / 86_400 + 3).rem_euclid(7);
                let until_monday = match (7 - weekday) % 7 {
                    0 => 7,
                    d => d,
                };
                day_start + until_monday * 86_400
            }
            Duration::Days(30) => first_of_month_after(day_start, 1),
            Duration::Days(n) => day_start + i64::from(n) * 86_400,
            Duration::Months(n) => first_of_month_after(day_start, n.max(1)),
        };
        // Minute/hour rollovers past midnight land in the next day naturally (plain seconds).
        at.max(secs + 1) * 1000
    }
}

/// Midnight UTC on the 1st of the month `months` after the one holding `day_start` (Unix s).
fn first_of_month_after(day_start: i64, months: u32) -> i64 {
    let (y, m, _) = civil_from_days(day_start.div_euclid(86_400));
    let total = y * 12 + i64::from(m - 1) + i64::from(months);
    days_from_civil(total.div_euclid(12), total.rem_euclid(12) + 1, 1) * 86_400
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-30 23:08:59.500 UTC, a Monday.
    const NOW: i64 = 1_796_080_139_500;

    fn at(y: i64, mo: i64, d: i64, h: i64, mi: i64, s: i64) -> i64 {
        (days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s) * 1000
    }

    #[test]
    fn parses_litellm_durations() {
        assert_eq!(Duration::parse("30s"), Some(Duration::Seconds(30)));
        assert_eq!(Duration::parse("45"), Some(Duration::Seconds(45)));
        assert_eq!(Duration::parse("5m"), Some(Duration::Minutes(5)));
        assert_eq!(Duration::parse("2h"), Some(Duration::Hours(2)));
        assert_eq!(Duration::parse("1d"), Some(Duration::Days(1)));
        assert_eq!(Duration::parse("2w"), Some(Duration::Days(14)));
        assert_eq!(Duration::parse("1mo"), Some(Duration::Months(1)));
        assert_eq!(Duration::parse("daily"), Some(Duration::Days(1)));
        assert_eq!(Duration::parse("weekly"), Some(Duration::Days(7)));
        assert_eq!(Duration::parse("monthly"), Some(Duration::Days(30)));
        for bad in ["", "d", "1y", "1 d", "-1d", "99999999999d", "1.5h"] {
            assert_eq!(Duration::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn next_resets_are_standardized_like_litellm() {
        assert_eq!(at(2026, 11, 30, 23, 8, 59), NOW - 500);
        let next = |d: &str| Duration::parse(d).unwrap().next_reset(NOW);
        assert_eq!(next("2s"), at(2026, 11, 30, 23, 9, 0));
        assert_eq!(next("10s"), at(2026, 11, 30, 23, 9, 0));
        assert_eq!(next("1m"), at(2026, 11, 30, 23, 9, 0));
        assert_eq!(next("30m"), at(2026, 11, 30, 23, 30, 0));
        assert_eq!(next("1h"), at(2026, 12, 1, 0, 0, 0));
        assert_eq!(next("5h"), at(2026, 12, 1, 1, 0, 0));
        assert_eq!(next("1d"), at(2026, 12, 1, 0, 0, 0));
        // Monday today: the next Monday is a week on.
        assert_eq!(next("7d"), at(2026, 12, 7, 0, 0, 0));
        assert_eq!(next("1w"), at(2026, 12, 7, 0, 0, 0));
        assert_eq!(next("30d"), at(2026, 12, 1, 0, 0, 0));
        assert_eq!(next("3d"), at(2026, 12, 3, 0, 0, 0));
        assert_eq!(next("1mo"), at(2026, 12, 1, 0, 0, 0));
        assert_eq!(next("2mo"), at(2027, 1, 1, 0, 0, 0));
        assert!(next("0s") > NOW);
        // Always in the future, even exactly on a boundary.
        let boundary = at(2026, 11, 30, 23, 9, 0);
        assert_eq!(
            Duration::Seconds(2).next_reset(boundary),
            at(2026, 11, 30, 23, 9, 2)
        );
    }
}
