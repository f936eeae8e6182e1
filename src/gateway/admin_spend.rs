//! LiteLLM's spend API (master key only, behind the admin router's check): `GET /spend/logs`,
//! `GET /global/spend`, `/global/spend/keys`, `/global/spend/teams`, `/global/spend/models` and
//! `POST /global/spend/end_users`, with LiteLLM's query parameters and response shapes
//! (`proxy/spend_tracking/spend_management_endpoints.py`). LiteLLM reads its Postgres views
//! (`Last30dKeysBySpend`, `MonthlyGlobalSpend`, ...); these are the same sums over
//! `LiteLLM_SpendLogs`, computed by [`crate::store`] on SQLite or Postgres, so they need no view.
//!
//! Queries run on the store's own runtime, never on a worker serving requests. Results are
//! bounded: `/spend/logs` returns at most `limit` rows (default and cap [`MAX_ROWS`]; LiteLLM
//! returns every row, which is how its UI times out on large tables), and every list has a cap.

use super::admin::query_get;
use crate::error::{GatewayError, GatewayResult};
use crate::keys::{hash_key, hex, now_ms, Keys};
use crate::store::{SpendFilter, SpendTotal};
use http::Method;
use serde_json::{json, Map, Value};

/// Most rows `/spend/logs` returns in one answer (and its default `limit`).
pub const MAX_ROWS: i64 = 10_000;
/// Most groups a `/global/spend/*` list returns.
pub const MAX_GROUPS: i64 = 1_000;
/// The window of the `/global/spend*` sums: LiteLLM's views cover the last 30 days.
const WINDOW_MS: i64 = 30 * 86_400_000;
const DAY_MS: i64 = 86_400_000;

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum SpendRoute {
    Logs,
    Global,
    GlobalKeys,
    GlobalTeams,
    GlobalModels,
    GlobalEndUsers,
}

/// The spend route at `path` and the one method it takes.
pub fn route(path: &str) -> Option<(SpendRoute, Method)> {
    Some(match path {
        "/spend/logs" => (SpendRoute::Logs, Method::GET),
        "/global/spend" => (SpendRoute::Global, Method::GET),
        "/global/spend/keys" => (SpendRoute::GlobalKeys, Method::GET),
        "/global/spend/teams" => (SpendRoute::GlobalTeams, Method::GET),
        "/global/spend/models" => (SpendRoute::GlobalModels, Method::GET),
        "/global/spend/end_users" => (SpendRoute::GlobalEndUsers, Method::POST),
        _ => return None,
    })
}

/// Answers a spend route (the caller has checked the master key). `query` holds the decoded
/// query parameters, `body` the parsed JSON body (empty for GETs).
pub async fn handle(
    keys: &Keys,
    route: SpendRoute,
    query: &[(String, String)],
    body: &Map<String, Value>,
) -> GatewayResult<(u16, Value)> {
    let store = keys.store.clone();
    let now = now_ms();
    let since = now - WINDOW_MS;
    let value = match route {
        SpendRoute::Logs => return logs(keys, query).await,
        SpendRoute::Global => {
            let spend = keys
                .run(async move { store.total_spend_since(since).await })
                .await
                .and_then(|r| r)
                .map_err(read_err)?;
            json!({"spend": spend, "max_budget": 0.0})
        }
        SpendRoute::GlobalKeys => {
            let limit = limit_param(query, "limit", MAX_GROUPS, MAX_GROUPS)?;
            let rows = keys
                .run(async move { store.spend_per_key(since, limit).await })
                .await
                .and_then(|r| r)
                .map_err(read_err)?;
            Value::Array(
                rows.into_iter()
                    .map(|t| {
                        json!({"api_key": t.name, "key_alias": t.detail, "key_name": t.extra, "total_spend": t.spend})
                    })
                    .collect(),
            )
        }
        SpendRoute::GlobalModels => {
            let limit = limit_param(query, "limit", 10, MAX_GROUPS)?;
            let rows = keys
                .run(async move { store.spend_per_model(since, limit).await })
                .await
                .and_then(|r| r)
                .map_err(read_err)?;
            Value::Array(
                rows.into_iter()
                    .map(|t| json!({"model": t.name, "total_spend": t.spend}))
                    .collect(),
            )
        }
        SpendRoute::GlobalTeams => {
            let rows = keys
                .run(async move { store.spend_per_team_day(since, MAX_GROUPS * 31).await })
                .await
                .and_then(|r| r)
                .map_err(read_err)?;
            teams_report(rows)
        }
        SpendRoute::GlobalEndUsers => {
            let api_key = match body.get("api_key") {
                None | Some(Value::Null) => None,
                Some(Value::String(k)) => Some(key_hash(k)),
                Some(_) => {
                    return Err(GatewayError::invalid_param(
                        "api_key",
                        "'api_key' must be a string (a key or its hash).",
                    ))
                }
            };
            let from = body_time(body, "startTime")?.unwrap_or(since);
            let to = body_time(body, "endTime")?.unwrap_or(now + 1);
            let rows = keys
                .run(async move {
                    store
                        .spend_per_end_user(api_key.as_deref(), from, to, 100)
                        .await
                })
                .await
                .and_then(|r| r)
                .map_err(read_err)?;
            Value::Array(
                rows.into_iter()
                    .map(|t| json!({"end_user": t.name, "total_count": t.count, "total_spend": t.spend}))
                    .collect(),
            )
        }
    };
    Ok((200, value))
}

/// `/spend/logs`: with `start_date` and `end_date`, rows in those days (`summarize=false`) or
/// LiteLLM's per-day summary (default); else the rows of one key, request or user, or all rows.
async fn logs(keys: &Keys, query: &[(String, String)]) -> GatewayResult<(u16, Value)> {
    let mut filter = SpendFilter::default();
    let limit = limit_param(query, "limit", MAX_ROWS, MAX_ROWS)?;
    let start = date_param(query, "start_date")?;
    let end = date_param(query, "end_date")?;
    let summarize = match query_get(query, "summarize") {
        None => true,
        Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => true,
        Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => false,
        Some(v) => {
            return Err(GatewayError::invalid_param(
                "summarize",
                format!("'summarize' must be true or false, not {v:?}."),
            ))
        }
    };
    let api_key = query_get(query, "api_key").map(key_hash);
    let request_id = query_get(query, "request_id").map(str::to_string);
    let user = query_get(query, "user_id").map(str::to_string);
    let store = keys.store.clone();
    if let (Some(start), Some(end)) = (start, end) {
        if end < start {
            return Err(GatewayError::invalid_param(
                "end_date",
                "'end_date' is before 'start_date'.",
            ));
        }
        filter.from_ms = Some(start);
        // The whole end day is included.
        filter.to_ms = Some(end + DAY_MS);
        // As LiteLLM: with a date range, one of the key, the request or the user narrows it.
        if api_key.is_some() {
            filter.api_key = api_key;
        } else if request_id.is_some() {
            filter.request_id = request_id;
        } else {
            filter.user = user;
        }
        if !summarize {
            let rows = keys
                .run(async move { store.spend_logs(&filter, limit).await })
                .await
                .and_then(|r| r)
                .map_err(read_err)?;
            return Ok((
                200,
                Value::Array(rows.into_iter().map(with_iso_times).collect()),
            ));
        }
        let days = keys
            .run(async move { store.spend_by_day(&filter, MAX_ROWS).await })
            .await
            .and_then(|r| r)
            .map_err(read_err)?;
        return Ok((200, summary(days, end)));
    }
    if start.is_some() != end.is_some() {
        let missing = if start.is_none() {
            "start_date"
        } else {
            "end_date"
        };
        return Err(GatewayError::invalid_param(
            missing,
            "Give both 'start_date' and 'end_date' (YYYY-MM-DD), or neither.",
        ));
    }
    filter.api_key = api_key;
    filter.request_id = request_id;
    filter.user = user;
    let rows = keys
        .run(async move { store.spend_logs(&filter, limit).await })
        .await
        .and_then(|r| r)
        .map_err(read_err)?;
    Ok((
        200,
        Value::Array(rows.into_iter().map(with_iso_times).collect()),
    ))
}

/// LiteLLM's summary: one object per day with the day's `spend`, spend per key hash (as a
/// top-level field), per user (`users`) and per model (`models`); days after the last one with
/// spend, up to `end`, are filled with zeros.
fn summary(days: Vec<crate::store::DaySpend>, end_ms: i64) -> Value {
    let mut out: Vec<Map<String, Value>> = Vec::new();
    for d in days {
        if out
            .last()
            .and_then(|m| m.get("startTime"))
            .and_then(Value::as_str)
            != Some(d.day.as_str())
        {
            let mut m = Map::new();
            m.insert("startTime".into(), Value::String(d.day.clone()));
            m.insert("spend".into(), json!(0.0));
            m.insert("users".into(), json!({}));
            m.insert("models".into(), json!({}));
            out.push(m);
        }
        let m = out.last_mut().expect("pushed above");
        add(m, "spend", d.spend);
        add(m, &d.api_key, d.spend);
        if let Some(Value::Object(users)) = m.get_mut("users") {
            add(users, &d.user, d.spend);
        }
        if let Some(Value::Object(models)) = m.get_mut("models") {
            add(models, &d.model, d.spend);
        }
    }
    let end_day = day_string(end_ms);
    if let Some(last) = out
        .last()
        .and_then(|m| m.get("startTime"))
        .and_then(Value::as_str)
    {
        let mut day = parse_day(last).unwrap_or(end_ms) + DAY_MS;
        let mut filled = 0;
        while day_string(day) <= end_day && filled < 366 {
            out.push(
                json!({"startTime": day_string(day), "spend": 0, "users": {}, "models": {}})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
            );
            day += DAY_MS;
            filled += 1;
        }
    }
    Value::Array(out.into_iter().map(Value::Object).collect())
}

fn add(m: &mut Map<String, Value>, field: &str, spend: f64) {
    let now = m.get(field).and_then(Value::as_f64).unwrap_or(0.0);
    m.insert(field.to_string(), json!(now + spend));
}

/// LiteLLM's `/global/spend/teams`: spend per day per team alias (`Unassigned` without a
/// team), the aliases seen, and the ten teams that spent most.
fn teams_report(rows: Vec<SpendTotal>) -> Value {
    let mut daily: Vec<Map<String, Value>> = Vec::new();
    let mut teams: Vec<String> = Vec::new();
    let mut totals: Vec<(String, f64)> = Vec::new();
    for t in rows {
        let Some(day) = t.detail else { continue };
        let team = t.name.unwrap_or_else(|| "Unassigned".to_string());
        let spend = (t.spend * 100.0).round() / 100.0;
        if daily
            .last()
            .and_then(|m| m.get("date"))
            .and_then(Value::as_str)
            != Some(day.as_str())
        {
            let mut m = Map::new();
            m.insert("date".into(), Value::String(day.clone()));
            daily.push(m);
        }
        if let Some(m) = daily.last_mut() {
            add(m, &team, spend);
        }
        if !teams.contains(&team) {
            teams.push(team.clone());
        }
        match totals.iter_mut().find(|(name, _)| *name == team) {
            Some((_, total)) => *total += spend,
            None => totals.push((team, spend)),
        }
    }
    totals.sort_by(|a, b| b.1.total_cmp(&a.1));
    totals.truncate(10);
    json!({
        "daily_spend": daily,
        "teams": teams,
        "total_spend_per_team": totals.into_iter().map(|(team_id, total_spend)| json!({"team_id": team_id, "total_spend": total_spend})).collect::<Vec<_>>(),
    })
}

/// Times of a spend-log row as LiteLLM returns them (ISO 8601, UTC).
fn with_iso_times(mut row: Map<String, Value>) -> Value {
    for c in ["startTime", "endTime", "completionStartTime"] {
        if let Some(ms) = row.get(c).and_then(Value::as_i64) {
            row.insert(c.into(), Value::String(iso_8601(ms)));
        }
    }
    Value::Object(row)
}

/// A key given as plaintext (`sk-…`) or as its hash, as the hash the spend logs hold.
fn key_hash(k: &str) -> String {
    if k.starts_with("sk-") {
        hex(&hash_key(k))
    } else {
        k.to_string()
    }
}

fn read_err(e: String) -> GatewayError {
    log::error!("spend API: {e}");
    GatewayError::new(
        crate::error::ErrorKind::Unavailable,
        format!("The spend database could not be read: {e}"),
    )
}

fn limit_param(
    query: &[(String, String)],
    name: &str,
    default: i64,
    cap: i64,
) -> GatewayResult<i64> {
    match query_get(query, name) {
        None => Ok(default),
        Some(v) => match v.parse::<i64>() {
            Ok(n) if n >= 1 => Ok(n.min(cap)),
            _ => Err(GatewayError::invalid_param(
                name,
                format!(
                    "'{name}' must be a whole number ≥ 1 (at most {cap} are returned), not {v:?}."
                ),
            )),
        },
    }
}

fn date_param(query: &[(String, String)], name: &str) -> GatewayResult<Option<i64>> {
    match query_get(query, name) {
        None => Ok(None),
        Some(v) => parse_day(v).map(Some).ok_or_else(|| {
            GatewayError::invalid_param(
                name,
                format!("'{name}' must be a date as YYYY-MM-DD, not {v:?}."),
            )
        }),
    }
}

/// A body time: `YYYY-MM-DD` or ISO 8601 `YYYY-MM-DDTHH:MM:SS[.fff][Z]` (UTC).
fn body_time(body: &Map<String, Value>, name: &str) -> GatewayResult<Option<i64>> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => parse_time(s).map(Some).ok_or_else(|| {
            GatewayError::invalid_param(
                name,
                format!("'{name}' must be a date (YYYY-MM-DD) or an ISO 8601 time, not {s:?}."),
            )
        }),
        Some(_) => Err(GatewayError::invalid_param(
            name,
            format!("'{name}' must be a string (YYYY-MM-DD or ISO 8601)."),
        )),
    }
}

/// `YYYY-MM-DD` as Unix ms at 00:00 UTC.
fn parse_day(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let days = crate::civil_time::days_from_civil(y, m, d);
    // Reject days that do not exist (Feb 30 rolls into March).
    (day_string(days * DAY_MS) == s).then_some(days * DAY_MS)
}

fn parse_time(s: &str) -> Option<i64> {
    if s.len() == 10 {
        return parse_day(s);
    }
    let day = parse_day(s.get(..10)?)?;
    let rest = s.get(10..)?.trim_end_matches('Z');
    let rest = rest.strip_prefix('T').or_else(|| rest.strip_prefix(' '))?;
    let (hms, frac) = rest.split_once('.').unwrap_or((rest, ""));
    let parts: Vec<&str> = hms.split(':').collect();
    if parts.len() != 3 || !frac.bytes().all(|c| c.is_ascii_digit()) || frac.len() > 9 {
        return None;
    }
    let n = |t: &str, max: i64| t.parse::<i64>().ok().filter(|v| (0..=max).contains(v));
    let (h, m, sec) = (n(parts[0], 23)?, n(parts[1], 59)?, n(parts[2], 60)?);
    let ms = format!("{frac:0<3}").get(..3)?.parse::<i64>().ok()?;
    Some(day + ((h * 60 + m) * 60 + sec) * 1000 + ms)
}

/// Unix ms as its UTC day, `YYYY-MM-DD`.
fn day_string(ms: i64) -> String {
    crate::civil_time::iso_ms(ms)[..10].to_string()
}

/// Unix ms as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn iso_8601(ms: i64) -> String {
    let t = crate::civil_time::iso_ms(ms);
    format!("{}T{}Z", &t[..10], &t[11..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_parse_and_print_back() {
        assert_eq!(parse_day("1970-01-01"), Some(0));
        assert_eq!(parse_day("2024-02-29"), Some(1_709_164_800_000));
        assert_eq!(parse_day("2023-02-29"), None);
        assert_eq!(parse_day("2024-13-01"), None);
        assert_eq!(parse_day("2024-1-01"), None);
        assert_eq!(parse_day("+024-01-01"), None);
        assert_eq!(day_string(1_709_164_800_000), "2024-02-29");
        assert_eq!(
            parse_time("2024-02-29T01:02:03.5Z"),
            Some(1_709_164_800_000 + 3_723_500)
        );
        assert_eq!(
            parse_time("2024-02-29 01:02:03"),
            Some(1_709_164_800_000 + 3_723_000)
        );
        assert_eq!(parse_time("2024-02-29T25:00:00"), None);
        assert_eq!(iso_8601(1_709_164_800_123), "2024-02-29T00:00:00.123Z");
    }

    #[test]
    fn summary_fills_days_up_to_the_end() {
        let d = |day: &str, key: &str, spend: f64| crate::store::DaySpend {
            day: day.into(),
            api_key: key.into(),
            user: "u".into(),
            model: "m".into(),
            spend,
        };
        let v = summary(
            vec![
                d("2024-01-01", "k1", 1.0),
                d("2024-01-01", "k2", 2.0),
                d("2024-01-02", "k1", 0.5),
            ],
            parse_day("2024-01-04").unwrap(),
        );
        let days = v.as_array().unwrap();
        assert_eq!(days.len(), 4);
        assert_eq!(days[0]["spend"], 3.0);
        assert_eq!(days[0]["k2"], 2.0);
        assert_eq!(days[0]["users"]["u"], 3.0);
        assert_eq!(days[1]["models"]["m"], 0.5);
        assert_eq!(days[3]["startTime"], "2024-01-04");
        assert_eq!(days[3]["spend"], 0);
    }
}
