//! UTC calendar arithmetic, the one copy: days since 1970-01-01 to and from a civil (proleptic
//! Gregorian) date, and the timestamp texts the admin API, spend routes and key errors print.
//! Howard Hinnant's `days_from_civil` / `civil_from_days` algorithms: exact for every i64 day
//! count a timestamp in ms can reach, no table, no allocation.

/// (year, month 1–12, day 1–31) of a day number since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Days since 1970-01-01 of a civil date. Out-of-range days roll over (Feb 30 is Mar 2);
/// callers that must refuse them print the result back and compare.
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Unix ms as `YYYY-MM-DD HH:MM:SS.mmm` UTC (LiteLLM's text in key-expiry errors).
pub fn iso_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms.rem_euclid(1000)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_across_eras_and_leap_days() {
        for days in [
            -719_468 - 1,
            -1,
            0,
            59,
            60,
            11_016,
            19_782,
            20_422,
            2_932_896,
        ] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, i64::from(m), i64::from(d)), days);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(days_from_civil(2026, 2, 30), days_from_civil(2026, 3, 2));
    }

    #[test]
    fn prints_milliseconds_utc() {
        assert_eq!(iso_ms(1_700_000_000_123), "2023-11-14 22:13:20.123");
        assert_eq!(iso_ms(-1), "1969-12-31 23:59:59.999");
    }
}
