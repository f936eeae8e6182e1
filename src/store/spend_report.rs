//! Read queries behind LiteLLM's spend API (`/spend/logs`, `/global/spend*`, served by
//! `gateway::admin_spend`): spend-log rows and sums over `LiteLLM_SpendLogs`, on SQLite and
//! Postgres alike. Every query is bounded by a `LIMIT` the caller passes (the handlers cap it),
//! so an admin call can never pull a whole multi-million-row table into memory. Times cross as
//! Unix milliseconds, days as `YYYY-MM-DD` text.

use super::{db_err, ts_in, ts_out, Db, Store, StoreResult};
use serde_json::{Map, Value};
use sqlx::{AssertSqlSafe, Row};

/// Which spend-log rows a query covers (all `None`: every row).
#[derive(Debug, Default, Clone)]
pub struct SpendFilter {
    /// The key's hash (`api_key` column).
    pub api_key: Option<String>,
    /// The `user` column (the key's `user_id`).
    pub user: Option<String>,
    pub request_id: Option<String>,
    /// `startTime >= from_ms`.
    pub from_ms: Option<i64>,
    /// `startTime < to_ms`.
    pub to_ms: Option<i64>,
}

/// Spend of one (day, key, user, model), for `/spend/logs` summaries.
#[derive(Debug, Clone, PartialEq)]
pub struct DaySpend {
    pub day: String,
    pub api_key: String,
    pub user: String,
    pub model: String,
    pub spend: f64,
}

/// A total for one name (a key, a model, a team's day, an end user).
#[derive(Debug, Clone, PartialEq)]
pub struct SpendTotal {
    pub name: Option<String>,
    /// A second name where the query has one: the key's alias, the team's day.
    pub detail: Option<String>,
    /// A third: the key's `key_name`.
    pub extra: Option<String>,
    pub count: i64,
    pub spend: f64,
}

/// A `WHERE` clause over the filter and the values to bind, in placeholder order (SQLite numbers
/// `$N` parameters by first appearance, so they are written in order and never reused).
struct Where {
    sql: String,
    texts: Vec<String>,
    times: Vec<i64>,
}

impl SpendFilter {
    fn clause(&self, pg: bool, first: usize) -> Where {
        let mut parts = Vec::new();
        let mut texts = Vec::new();
        let mut n = first;
        for (column, value) in [
            ("api_key", &self.api_key),
            ("user", &self.user),
            ("request_id", &self.request_id),
        ] {
            if let Some(v) = value {
                parts.push(format!("\"{column}\" = ${n}"));
                texts.push(v.clone());
                n += 1;
            }
        }
        let mut times = Vec::new();
        if let Some(from) = self.from_ms {
            parts.push(format!("\"startTime\" >= {}", ts_in(pg, &format!("${n}"))));
            times.push(from);
            n += 1;
        }
        if let Some(to) = self.to_ms {
            parts.push(format!("\"startTime\" < {}", ts_in(pg, &format!("${n}"))));
            times.push(to);
        }
        let sql = if parts.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", parts.join(" AND "))
        };
        Where { sql, texts, times }
    }
}

/// Binds a [`Where`]'s values onto a query, texts first then times (their placeholder order).
macro_rules! bind_where {
    ($query:expr, $w:expr) => {{
        let mut q = $query;
        for t in &$w.texts {
            q = q.bind(t.clone());
        }
        for t in &$w.times {
            q = q.bind(*t);
        }
        q
    }};
}

/// `startTime`'s day as `YYYY-MM-DD` text.
fn day_of(pg: bool) -> &'static str {
    if pg {
        "to_char(\"startTime\", 'YYYY-MM-DD')"
    } else {
        "substr(\"startTime\", 1, 10)"
    }
}

impl Store {
    /// Spend-log rows, newest first, as LiteLLM's `/spend/logs` returns them (times as Unix ms
    /// under `startTime`, `endTime`, `completionStartTime`; the caller formats them). The
    /// `messages` and `response` columns are left out: they can be large and Switchboard does
    /// not write them.
    pub async fn spend_logs(
        &self,
        filter: &SpendFilter,
        limit: i64,
    ) -> StoreResult<Vec<Map<String, Value>>> {
        let pg = self.is_postgres();
        let w = filter.clause(pg, 1);
        let text = |c: &str| format!("\"{c}\"");
        let int = |c: &str| {
            if pg {
                format!("\"{c}\"::BIGINT AS \"{c}\"")
            } else {
                format!("\"{c}\"")
            }
        };
        let json = |c: &str, empty: &str| {
            if pg {
                format!("COALESCE(\"{c}\"::text, '{empty}') AS \"{c}\"")
            } else {
                format!("COALESCE(\"{c}\", '{empty}') AS \"{c}\"")
            }
        };
        let ts = |c: &str| format!("{} AS \"{c}\"", ts_out(pg, c));
        let columns = [
            text("request_id"),
            text("call_type"),
            text("api_key"),
            text("spend"),
            int("total_tokens"),
            int("prompt_tokens"),
            int("completion_tokens"),
            ts("startTime"),
            ts("endTime"),
            int("request_duration_ms"),
            ts("completionStartTime"),
            text("model"),
            text("model_id"),
            text("model_group"),
            text("custom_llm_provider"),
            text("api_base"),
            text("user"),
            json("metadata", "{}"),
            text("cache_hit"),
            text("cache_key"),
            json("request_tags", "[]"),
            text("team_id"),
            text("end_user"),
            text("requester_ip_address"),
            text("session_id"),
            text("status"),
        ]
        .join(", ");
        let sql = format!(
            "SELECT {columns} FROM \"LiteLLM_SpendLogs\"{} ORDER BY \"startTime\" DESC, \"request_id\" LIMIT {}",
            w.sql,
            limit.max(0)
        );
        self.count(1);
        with_pool!(&self.db, pool => {
            let rows = bind_where!(sqlx::query(AssertSqlSafe(sql.as_str())), w).fetch_all(pool).await.map_err(db_err)?;
            rows.iter().map(|r| {
                let mut out = Map::new();
                let s = |c: &str| r.try_get::<Option<String>, _>(c).map(|v| v.map(Value::String).unwrap_or(Value::Null));
                let i = |c: &str| r.try_get::<Option<i64>, _>(c).map(|v| v.map(Value::from).unwrap_or(Value::Null));
                let j = |c: &str| r.try_get::<Option<String>, _>(c).map(|v| v.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or(Value::Null));
                for c in ["request_id", "call_type", "api_key"] { out.insert(c.into(), s(c)?); }
                out.insert("spend".into(), Value::from(r.try_get::<Option<f64>, _>("spend")?.unwrap_or(0.0)));
                for c in ["total_tokens", "prompt_tokens", "completion_tokens", "startTime", "endTime", "request_duration_ms", "completionStartTime"] { out.insert(c.into(), i(c)?); }
                for c in ["model", "model_id", "model_group", "custom_llm_provider", "api_base", "user"] { out.insert(c.into(), s(c)?); }
                out.insert("metadata".into(), j("metadata")?);
                for c in ["cache_hit", "cache_key"] { out.insert(c.into(), s(c)?); }
                out.insert("request_tags".into(), j("request_tags")?);
                for c in ["team_id", "end_user", "requester_ip_address", "session_id", "status"] { out.insert(c.into(), s(c)?); }
                Ok(out)
            }).collect::<Result<Vec<_>, sqlx::Error>>().map_err(db_err)
        })
    }

    /// Spend summed per (day, key, user, model) over the filter's rows, oldest day first.
    pub async fn spend_by_day(
        &self,
        filter: &SpendFilter,
        limit: i64,
    ) -> StoreResult<Vec<DaySpend>> {
        let pg = self.is_postgres();
        let w = filter.clause(pg, 1);
        let day = day_of(pg);
        let sql = format!(
            "SELECT {day} AS day, COALESCE(\"api_key\", '') AS api_key, COALESCE(\"user\", '') AS usr, COALESCE(\"model\", '') AS model, SUM(\"spend\") AS spend FROM \"LiteLLM_SpendLogs\"{} GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4 LIMIT {}",
            w.sql,
            limit.max(0)
        );
        self.count(1);
        with_pool!(&self.db, pool => {
            let rows = bind_where!(sqlx::query(AssertSqlSafe(sql.as_str())), w).fetch_all(pool).await.map_err(db_err)?;
            rows.iter().map(|r| Ok(DaySpend {
                day: r.try_get::<String, _>("day")?,
                api_key: r.try_get::<String, _>("api_key")?,
                user: r.try_get::<String, _>("usr")?,
                model: r.try_get::<String, _>("model")?,
                spend: r.try_get::<Option<f64>, _>("spend")?.unwrap_or(0.0),
            })).collect::<Result<Vec<_>, sqlx::Error>>().map_err(db_err)
        })
    }

    /// Total spend of the rows since `since_ms` (LiteLLM's `MonthlyGlobalSpend` sum).
    pub async fn total_spend_since(&self, since_ms: i64) -> StoreResult<f64> {
        let filter = SpendFilter {
            from_ms: Some(since_ms),
            ..Default::default()
        };
        let w = filter.clause(self.is_postgres(), 1);
        let sql = format!(
            "SELECT SUM(\"spend\") AS spend FROM \"LiteLLM_SpendLogs\"{}",
            w.sql
        );
        self.count(1);
        with_pool!(&self.db, pool => {
            let row = bind_where!(sqlx::query(AssertSqlSafe(sql.as_str())), w).fetch_one(pool).await.map_err(db_err)?;
            row.try_get::<Option<f64>, _>("spend").map(|v| v.unwrap_or(0.0)).map_err(db_err)
        })
    }

    /// Spend per key since `since_ms`, highest first, with the key's alias (`detail`) and
    /// `key_name` (`extra`) (LiteLLM's `Last30dKeysBySpend`).
    pub async fn spend_per_key(&self, since_ms: i64, limit: i64) -> StoreResult<Vec<SpendTotal>> {
        let pg = self.is_postgres();
        let sql = format!(
            "SELECT L.\"api_key\" AS name, V.\"key_alias\" AS detail, V.\"key_name\" AS extra, COUNT(*) AS n, SUM(L.\"spend\") AS spend FROM \"LiteLLM_SpendLogs\" L LEFT JOIN \"LiteLLM_VerificationToken\" V ON L.\"api_key\" = V.\"token\" WHERE L.\"startTime\" >= {} GROUP BY L.\"api_key\", V.\"key_alias\", V.\"key_name\" ORDER BY spend DESC, name LIMIT {}",
            ts_in(pg, "$1"),
            limit.max(0)
        );
        self.totals(&sql, &[], Some(since_ms)).await
    }

    /// Spend per model since `since_ms`, highest first (LiteLLM's `Last30dModelsBySpend`).
    pub async fn spend_per_model(&self, since_ms: i64, limit: i64) -> StoreResult<Vec<SpendTotal>> {
        let pg = self.is_postgres();
        let sql = format!(
            "SELECT \"model\" AS name, NULL AS detail, NULL AS extra, COUNT(*) AS n, SUM(\"spend\") AS spend FROM \"LiteLLM_SpendLogs\" WHERE \"startTime\" >= {} AND \"model\" <> '' GROUP BY \"model\" ORDER BY spend DESC, name LIMIT {}",
            ts_in(pg, "$1"),
            limit.max(0)
        );
        self.totals(&sql, &[], Some(since_ms)).await
    }

    /// Spend per team alias (`name`, `None` when the row has no team or the team is gone) and
    /// day (`detail`) since `since_ms`, oldest day first.
    pub async fn spend_per_team_day(
        &self,
        since_ms: i64,
        limit: i64,
    ) -> StoreResult<Vec<SpendTotal>> {
        let pg = self.is_postgres();
        let day = if pg {
            "to_char(S.\"startTime\", 'YYYY-MM-DD')"
        } else {
            "substr(S.\"startTime\", 1, 10)"
        };
        let sql = format!(
            "SELECT T.\"team_alias\" AS name, {day} AS detail, S.\"team_id\" AS extra, COUNT(*) AS n, SUM(S.\"spend\") AS spend FROM \"LiteLLM_SpendLogs\" S LEFT JOIN \"LiteLLM_TeamTable\" T ON S.\"team_id\" = T.\"team_id\" WHERE S.\"startTime\" >= {} GROUP BY T.\"team_alias\", 2, S.\"team_id\" ORDER BY 2, spend DESC LIMIT {}",
            ts_in(pg, "$1"),
            limit.max(0)
        );
        self.totals(&sql, &[], Some(since_ms)).await
    }

    /// Requests and spend per end user in `[from_ms, to_ms)`, optionally for one key (hash),
    /// highest spend first.
    pub async fn spend_per_end_user(
        &self,
        api_key: Option<&str>,
        from_ms: i64,
        to_ms: i64,
        limit: i64,
    ) -> StoreResult<Vec<SpendTotal>> {
        let filter = SpendFilter {
            api_key: api_key.map(str::to_string),
            from_ms: Some(from_ms),
            to_ms: Some(to_ms),
            ..Default::default()
        };
        let w = filter.clause(self.is_postgres(), 1);
        let sql = format!(
            "SELECT \"end_user\" AS name, NULL AS detail, NULL AS extra, COUNT(*) AS n, SUM(\"spend\") AS spend FROM \"LiteLLM_SpendLogs\"{} GROUP BY \"end_user\" ORDER BY spend DESC, name LIMIT {}",
            w.sql,
            limit.max(0)
        );
        self.count(1);
        with_pool!(&self.db, pool => {
            let rows = bind_where!(sqlx::query(AssertSqlSafe(sql.as_str())), w).fetch_all(pool).await.map_err(db_err)?;
            rows.iter().map(total_of).collect::<Result<Vec<_>, sqlx::Error>>().map_err(db_err)
        })
    }

    async fn totals(
        &self,
        sql: &str,
        texts: &[String],
        since_ms: Option<i64>,
    ) -> StoreResult<Vec<SpendTotal>> {
        self.count(1);
        with_pool!(&self.db, pool => {
            let mut q = sqlx::query(AssertSqlSafe(sql.to_string()));
            for t in texts {
                q = q.bind(t.clone());
            }
            if let Some(s) = since_ms {
                q = q.bind(s);
            }
            let rows = q.fetch_all(pool).await.map_err(db_err)?;
            rows.iter().map(total_of).collect::<Result<Vec<_>, sqlx::Error>>().map_err(db_err)
        })
    }
}

fn total_of<R: Row>(r: &R) -> Result<SpendTotal, sqlx::Error>
where
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'v> Option<String>: sqlx::Decode<'v, R::Database> + sqlx::Type<R::Database>,
    for<'v> Option<f64>: sqlx::Decode<'v, R::Database> + sqlx::Type<R::Database>,
    for<'v> i64: sqlx::Decode<'v, R::Database> + sqlx::Type<R::Database>,
{
    Ok(SpendTotal {
        name: r.try_get("name")?,
        detail: r.try_get("detail")?,
        extra: r.try_get("extra")?,
        count: r.try_get("n")?,
        spend: r.try_get::<Option<f64>, _>("spend")?.unwrap_or(0.0),
    })
}
