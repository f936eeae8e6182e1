//! LiteLLM's management API (master key only), one file per entity: [`keys`] (`/key/*`),
//! [`teams`] (`/team/*`), [`users`] (`/user/*`), [`customers`] (`/customer/*` and the
//! `/end_user/*` aliases) and [`budgets`] (`/budget/*`); the spend API is
//! [`super::admin_spend`]. This file routes a path to its
//! entity, checks the caller and parses the body and query once; the entity files hold the
//! handlers. Shared here: parsing of LiteLLM's field types (durations, optional strings,
//! counts, lists) with 400s that name the field, and the error shapes.
//!
//! To add an entity: a file with `route(path) -> Option<(Route, Method)>` and `handle(…)`, a
//! variant in [`AdminRoute`], one line in [`route`] and one in [`handle`].

pub mod budgets;
pub mod customers;
pub mod keys;
pub mod teams;
pub mod users;

use crate::app::App;
use crate::civil_time::iso_ms;
use crate::context::{Context, Principal};
use crate::error::{ErrorKind, GatewayError, GatewayResult};
use http::Method;
use serde_json::{Map, Value};

/// A query string, decoded into pairs.
pub type Query = Vec<(String, String)>;

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum AdminRoute<'a> {
    Key(keys::KeyRoute<'a>),
    Team(teams::TeamRoute),
    User(users::UserRoute),
    Customer(customers::CustomerRoute),
    Budget(budgets::BudgetRoute),
    /// The spend API (`/spend/logs`, `/global/spend*`, see [`super::admin_spend`]).
    Spend(super::admin_spend::SpendRoute),
}

/// The admin route at `path` and the one method it takes.
pub fn route(path: &str) -> Option<(AdminRoute<'_>, Method)> {
    if let Some((r, m)) = super::admin_spend::route(path) {
        return Some((AdminRoute::Spend(r), m));
    }
    if let Some((r, m)) = keys::route(path) {
        return Some((AdminRoute::Key(r), m));
    }
    if let Some((r, m)) = teams::route(path) {
        return Some((AdminRoute::Team(r), m));
    }
    if let Some((r, m)) = users::route(path) {
        return Some((AdminRoute::User(r), m));
    }
    if let Some((r, m)) = customers::route(path) {
        return Some((AdminRoute::Customer(r), m));
    }
    budgets::route(path).map(|(r, m)| (AdminRoute::Budget(r), m))
}

/// Answers an admin route: `Ok` is the status and JSON body.
pub async fn handle(
    app: &App,
    ctx: &Context,
    route: AdminRoute<'_>,
    query: Option<&str>,
    body: &[u8],
) -> GatewayResult<(u16, Value)> {
    let Some(keys) = &app.keys else {
        return Err(GatewayError::new(
            ErrorKind::BadRequest,
            "Key management needs general_settings.master_key (and a database: general_settings.database_url, or the embedded SQLite store).",
        )
        .with_code("no_db_connection"));
    };
    if ctx.principal != Principal::MasterKey {
        return Err(GatewayError::new(
            ErrorKind::Authentication,
            "Authentication Error, Only proxy admin can be used to generate, delete, update info for new keys/users/teams. Use the master key.",
        )
        .with_type("auth_error"));
    }
    let query = parse_query(query.unwrap_or(""));
    let mut body = parse_body(body)?;
    if route == AdminRoute::Key(keys::KeyRoute::Generate) {
        let live = app.snapshot.load();
        let defaults = &live.routing.config.litellm.limit_defaults;
        crate::limits::defaults::apply_to_key_generate(defaults, &mut body)?;
    }
    match route {
        AdminRoute::Key(r) => keys::handle(keys, r, &query, body).await,
        AdminRoute::Team(r) => teams::handle(keys, r, &query, body).await,
        AdminRoute::User(r) => users::handle(keys, r, &query, body).await,
        AdminRoute::Customer(r) => customers::handle(keys, r, &query, body).await,
        AdminRoute::Budget(r) => budgets::handle(keys, r, &query, body).await,
        AdminRoute::Spend(r) => super::admin_spend::handle(keys, r, &query, &body).await,
    }
}

fn bad(field: &str, message: impl Into<String>) -> GatewayError {
    GatewayError::invalid_param(field, message)
}

fn store_err(e: String) -> GatewayError {
    log::error!("key management: {e}");
    GatewayError::new(
        ErrorKind::Unavailable,
        format!("The key database could not be written: {e}"),
    )
}

fn parse_body(body: &[u8]) -> GatewayResult<Map<String, Value>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(GatewayError::bad_request(
            "The request body must be a JSON object.",
        )),
        Err(e) => Err(GatewayError::bad_request(format!(
            "The request body is not valid JSON: {e}"
        ))),
    }
}

fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A query parameter's value; empty counts as absent.
pub(super) fn query_get<'q>(query: &'q [(String, String)], name: &str) -> Option<&'q str> {
    query
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// LiteLLM's durations: `(\d+)(mo|[smhdw]?)` (no unit: seconds), and `daily`, `weekly`,
/// `monthly`, in ms; the budget windows' parser ([`crate::budgets::duration`]), so a
/// `budget_duration` the admin API accepts is one the budget stage enforces.
pub fn parse_duration(s: &str) -> Option<i64> {
    crate::budgets::duration::Duration::parse(s).map(|d| d.as_ms())
}

fn opt_string(body: &Map<String, Value>, field: &str) -> GatewayResult<Option<Option<String>>> {
    match body.get(field) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(s)) => Ok(Some(Some(s.clone()))),
        Some(_) => Err(bad(field, format!("'{field}' must be a string or null."))),
    }
}

fn opt_count(body: &Map<String, Value>, field: &str) -> GatewayResult<Option<Option<i64>>> {
    match body.get(field) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(v) => match v.as_i64() {
            Some(n) if n >= 0 => Ok(Some(Some(n))),
            _ => Err(bad(
                field,
                format!("'{field}' must be a whole number ≥ 0 or null."),
            )),
        },
    }
}

fn iso(ms: Option<i64>) -> Value {
    ms.map_or(Value::Null, |ms| {
        Value::String(format!("{}Z", iso_ms(ms).replacen(' ', "T", 1)))
    })
}

fn not_found(message: String) -> GatewayError {
    GatewayError::new(ErrorKind::NotFound, message).with_code("404")
}

fn opt_float(body: &Map<String, Value>, field: &str) -> GatewayResult<Option<Option<f64>>> {
    match body.get(field) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(v) => match v.as_f64() {
            Some(n) if n >= 0.0 && n.is_finite() => Ok(Some(Some(n))),
            _ => Err(bad(
                field,
                format!("'{field}' must be a number ≥ 0 (USD) or null."),
            )),
        },
    }
}

fn opt_bool(body: &Map<String, Value>, field: &str) -> GatewayResult<Option<bool>> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(bad(field, format!("'{field}' must be true or false."))),
    }
}

/// A list of strings; `None` when absent or null.
fn opt_list(body: &Map<String, Value>, field: &str) -> GatewayResult<Option<Vec<String>>> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .map(Some)
            .ok_or_else(|| bad(field, format!("'{field}' must be a list of strings."))),
        Some(_) => Err(bad(field, format!("'{field}' must be a list of strings."))),
    }
}

fn opt_object(body: &Map<String, Value>, field: &str) -> GatewayResult<Option<Map<String, Value>>> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m.clone())),
        Some(_) => Err(bad(field, format!("'{field}' must be a JSON object."))),
    }
}

/// A required, non-blank string field.
fn required_str(body: &Map<String, Value>, field: &str) -> GatewayResult<String> {
    match body.get(field) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            Err(GatewayError::missing_field(field))
        }
        Some(_) => Err(bad(field, format!("'{field}' must be a string."))),
    }
}

/// A required query parameter.
fn required_query<'q>(query: &'q Query, name: &str, hint: &str) -> GatewayResult<&'q str> {
    query_get(query, name).ok_or_else(|| bad(name, format!("Pass '{name}': {hint}")))
}

/// `budget_duration`: a LiteLLM duration or null.
fn opt_duration(body: &Map<String, Value>, field: &str) -> GatewayResult<Option<Option<String>>> {
    let v = opt_string(body, field)?;
    if let Some(Some(d)) = &v {
        if parse_duration(d).is_none() {
            return Err(bad(
                field,
                format!("'{field}' {d:?} is not a duration: use e.g. \"1d\", \"30d\", \"1mo\"."),
            ));
        }
    }
    Ok(v)
}

/// Page numbers for the list routes: `page` from 1, `size` (or `page_size`) 1 to 100.
fn paging(query: &Query, size_name: &str, default_size: usize) -> GatewayResult<(usize, usize)> {
    let number = |name: &str, default: usize, max: usize| -> GatewayResult<usize> {
        match query_get(query, name) {
            None => Ok(default),
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| {
                    bad(
                        name,
                        format!("'{name}' must be a whole number from 1 to {max}."),
                    )
                }),
        }
    };
    Ok((
        number("page", 1, 1_000_000)?,
        number(size_name, default_size, 100)?,
    ))
}
