//! The database behind virtual keys and spend: SQLite (an embedded file, the default) or Postgres
//! (`general_settings.database_url` / `DATABASE_URL`), with LiteLLM's tables and columns (see
//! [`schema`]) so a database LiteLLM made works as is.
//!
//! Every query goes through [`Store`], which counts them (`queries`): the request path never
//! calls it (keys are served from memory, see [`crate::keys`]). Timestamps cross this module as
//! Unix milliseconds; JSON and text arrays as JSON text, so both backends share one row type.

pub mod schema;

use serde_json::{Map, Value};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{AssertSqlSafe, Row};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to whichever backend this store uses (the body is compiled
/// once per backend).
macro_rules! with_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            Db::Sqlite($pool) => $body,
            Db::Postgres($pool) => $body,
        }
    };
}

mod spend_report;
pub mod tenants;

pub use spend_report::{DaySpend, SpendFilter, SpendTotal};
pub use tenants::{BudgetRow, EndUserRow, MembershipRow, TeamRow, TenantRows, UserRow};

pub struct Store {
    db: Db,
    /// Queries sent so far, but the change polls (for tests and `/metrics`: the request path
    /// must send none).
    queries: AtomicU64,
    /// Change polls sent so far ([`Store::keys_marker`]).
    polls: AtomicU64,
    key_select: String,
}

/// A row of `LiteLLM_VerificationToken`, the columns Switchboard reads and writes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyRow {
    /// sha256 of the key, 64 lower-case hex digits.
    pub token: String,
    pub key_name: Option<String>,
    pub key_alias: Option<String>,
    pub spend: f64,
    /// Unix ms.
    pub expires: Option<i64>,
    pub models: Vec<String>,
    pub aliases: Map<String, Value>,
    pub metadata: Map<String, Value>,
    pub user_id: Option<String>,
    pub team_id: Option<String>,
    pub max_parallel_requests: Option<i64>,
    pub blocked: Option<bool>,
    pub tpm_limit: Option<i64>,
    pub rpm_limit: Option<i64>,
    pub max_budget: Option<f64>,
    pub budget_duration: Option<String>,
    /// When the budget window ends (Unix ms); the budget reset job writes it (read only here).
    pub budget_reset_at: Option<i64>,
    /// `{"model": {"budget_limit": USD, "time_period": "30d"}}` (read only here).
    pub model_max_budget: Map<String, Value>,
    /// The key's `LiteLLM_BudgetTable` row (LiteLLM keeps a key's `soft_budget` there; read
    /// only here).
    pub budget_id: Option<String>,
    /// The per-request cache controls the key may send (`[]`: all of them).
    pub allowed_cache_controls: Vec<String>,
    pub created_by: Option<String>,
    pub created_at: Option<i64>,
    pub updated_at: Option<i64>,
}

/// One `LiteLLM_SpendLogs` row, plus what it adds to the key, team, user and end user.
#[derive(Debug, Clone, Default)]
pub struct SpendRow {
    pub request_id: String,
    pub call_type: &'static str,
    /// The key's hash (`token`), or empty.
    pub api_key: String,
    pub spend: f64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    pub start_ms: i64,
    pub end_ms: i64,
    pub model: String,
    pub model_id: String,
    pub model_group: String,
    pub custom_llm_provider: String,
    pub api_base: String,
    pub user_id: Option<String>,
    pub team_id: Option<String>,
    pub end_user: Option<String>,
    /// The client's address as resolved at the edge (trusted proxies, PROXY protocol).
    pub requester_ip_address: Option<String>,
    pub status: &'static str,
    /// Answered from the response cache (`cache_hit` `True`/`False`, as LiteLLM writes it).
    pub cache_hit: bool,
    /// The response cache's key for the request (empty when it was not cacheable).
    pub cache_key: String,
}

pub type StoreResult<T> = Result<T, String>;

fn db_err(e: sqlx::Error) -> String {
    format!("database error: {e}")
}

/// Where the store lives: `database_url`, else `DATABASE_URL`, else `switchboard.db` in the
/// state directory (`switchboard.state_dir`, else systemd's `$STATE_DIRECTORY`, else `./state`).
pub fn resolve_url(database_url: Option<&str>, state_dir: Option<&Path>) -> String {
    if let Some(url) = database_url {
        return url.to_string();
    }
    if let Ok(url) = std::env::var("DATABASE_URL") {
        if !url.is_empty() {
            return url;
        }
    }
    let dir = state_dir.map(Path::to_path_buf).unwrap_or_else(|| {
        std::env::var_os("STATE_DIRECTORY")
            .map(|d| {
                // systemd may list several directories separated by ':'; the first is ours.
                let d = d.to_string_lossy().into_owned();
                PathBuf::from(d.split(':').next().unwrap_or("").to_string())
            })
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("./state"))
    });
    format!("sqlite://{}", dir.join("switchboard.db").display())
}

impl Store {
    /// Connects (creating the SQLite file and its directory on first start) and brings the
    /// schema up to date.
    pub async fn open(url: &str) -> StoreResult<Store> {
        let postgres = url.starts_with("postgres://") || url.starts_with("postgresql://");
        let db = if postgres {
            let pool = PgPoolOptions::new()
                .max_connections(5)
                .acquire_timeout(Duration::from_secs(10))
                .connect(url)
                .await
                .map_err(|e| format!("cannot connect to the database: {e}"))?;
            Db::Postgres(pool)
        } else {
            let path = url
                .strip_prefix("sqlite://")
                .or_else(|| url.strip_prefix("sqlite:"))
                .ok_or_else(|| {
                    format!("database_url {url:?}: use postgres://… or sqlite://PATH")
                })?;
            if let Some(dir) = Path::new(path)
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
            {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("cannot create the state directory {dir:?}: {e}"))?;
            }
            let options = SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(5));
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(options)
                .await
                .map_err(|e| format!("cannot open the SQLite store {path:?}: {e}"))?;
            Db::Sqlite(pool)
        };
        let key_select = key_select(postgres);
        let store = Store {
            db,
            queries: AtomicU64::new(0),
            polls: AtomicU64::new(0),
            key_select,
        };
        store.migrate().await?;
        Ok(store)
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.db, Db::Postgres(_))
    }

    /// Queries sent so far, change polls aside.
    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }

    /// Change polls sent so far.
    pub fn polls(&self) -> u64 {
        self.polls.load(Ordering::Relaxed)
    }

    fn count(&self, n: u64) {
        self.queries.fetch_add(n, Ordering::Relaxed);
    }

    /// Creates missing tables, columns and indexes; never drops or alters existing columns.
    async fn migrate(&self) -> StoreResult<()> {
        let postgres = self.is_postgres();
        for table in schema::TABLES {
            let create = schema::create_table(table, postgres);
            let existing: Vec<String> = with_pool!(&self.db, pool => {
                sqlx::query(AssertSqlSafe(create.as_str())).execute(pool).await.map_err(db_err)?;
                let sql = if postgres {
                    "SELECT column_name::text FROM information_schema.columns WHERE table_name = $1 AND table_schema = current_schema()"
                } else {
                    "SELECT name FROM pragma_table_info($1)"
                };
                sqlx::query(sql).bind(table.name).fetch_all(pool).await.map_err(db_err)?
                    .iter().map(|r| r.try_get::<String, _>(0)).collect::<Result<_, _>>().map_err(db_err)?
            });
            self.count(2);
            for column in table.columns {
                if !existing.iter().any(|c| c == column.name) {
                    let sql = schema::add_column(table, column, postgres);
                    with_pool!(&self.db, pool => { sqlx::query(AssertSqlSafe(sql.as_str())).execute(pool).await.map_err(db_err)?; });
                    self.count(1);
                }
            }
        }
        for index in schema::INDEXES {
            with_pool!(&self.db, pool => { sqlx::query(*index).execute(pool).await.map_err(db_err)?; });
            self.count(1);
        }
        Ok(())
    }

    /// Every key row.
    pub async fn load_keys(&self) -> StoreResult<Vec<KeyRow>> {
        self.count(1);
        with_pool!(&self.db, pool => {
            let rows = sqlx::query(AssertSqlSafe(self.key_select.as_str())).fetch_all(pool).await.map_err(db_err)?;
            rows.iter().map(|r| -> StoreResult<KeyRow> {
                Ok(KeyRow {
                    token: r.try_get("token").map_err(db_err)?,
                    key_name: r.try_get("key_name").map_err(db_err)?,
                    key_alias: r.try_get("key_alias").map_err(db_err)?,
                    spend: r.try_get::<Option<f64>, _>("spend").map_err(db_err)?.unwrap_or(0.0),
                    expires: r.try_get("expires").map_err(db_err)?,
                    models: json_list(r.try_get("models").map_err(db_err)?),
                    aliases: json_object(r.try_get("aliases").map_err(db_err)?),
                    metadata: json_object(r.try_get("metadata").map_err(db_err)?),
                    user_id: r.try_get("user_id").map_err(db_err)?,
                    team_id: r.try_get("team_id").map_err(db_err)?,
                    max_parallel_requests: r.try_get("max_parallel_requests").map_err(db_err)?,
                    blocked: r.try_get("blocked").map_err(db_err)?,
                    tpm_limit: r.try_get("tpm_limit").map_err(db_err)?,
                    rpm_limit: r.try_get("rpm_limit").map_err(db_err)?,
                    max_budget: r.try_get("max_budget").map_err(db_err)?,
                    budget_duration: r.try_get("budget_duration").map_err(db_err)?,
                    budget_reset_at: r.try_get("budget_reset_at").map_err(db_err)?,
                    model_max_budget: json_object(r.try_get("model_max_budget").map_err(db_err)?),
                    budget_id: r.try_get("budget_id").map_err(db_err)?,
                    allowed_cache_controls: json_list(r.try_get("allowed_cache_controls").map_err(db_err)?),
                    created_by: r.try_get("created_by").map_err(db_err)?,
                    created_at: r.try_get("created_at").map_err(db_err)?,
                    updated_at: r.try_get("updated_at").map_err(db_err)?,
                })
            }).collect()
        })
    }

    /// A cheap fingerprint of the key table (row count, latest `updated_at`): when it changes,
    /// another instance (or LiteLLM) changed a key.
    pub async fn keys_marker(&self) -> StoreResult<(i64, i64)> {
        self.polls.fetch_add(1, Ordering::Relaxed);
        let sql = format!(
            "SELECT COUNT(*) AS n, COALESCE(MAX({}), 0) AS latest FROM \"LiteLLM_VerificationToken\"",
            ts_out(self.is_postgres(), "updated_at")
        );
        with_pool!(&self.db, pool => {
            let row = sqlx::query(AssertSqlSafe(sql.as_str())).fetch_one(pool).await.map_err(db_err)?;
            Ok((row.try_get("n").map_err(db_err)?, row.try_get("latest").map_err(db_err)?))
        })
    }

    /// Inserts the key, or replaces every column Switchboard manages (not `spend`).
    pub async fn upsert_key(&self, k: &KeyRow) -> StoreResult<()> {
        self.count(1);
        let pg = self.is_postgres();
        let cols = [
            "token",
            "key_name",
            "key_alias",
            "spend",
            "expires",
            "models",
            "aliases",
            "metadata",
            "user_id",
            "team_id",
            "max_parallel_requests",
            "blocked",
            "tpm_limit",
            "rpm_limit",
            "max_budget",
            "budget_duration",
            "created_by",
            "created_at",
            "updated_at",
            "allowed_cache_controls",
        ];
        let values: Vec<String> = cols
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let p = format!("${}", i + 1);
                match *c {
                    "expires" | "created_at" | "updated_at" => ts_in(pg, &p),
                    "models" | "allowed_cache_controls" => arr_in(pg, &p),
                    "aliases" | "metadata" if pg => format!("{p}::jsonb"),
                    _ => p,
                }
            })
            .collect();
        let updates: Vec<String> = cols
            .iter()
            .filter(|c| !matches!(**c, "token" | "spend" | "created_at" | "created_by"))
            .map(|c| format!("\"{c}\" = excluded.\"{c}\""))
            .collect();
        let sql = format!(
            "INSERT INTO \"LiteLLM_VerificationToken\" ({}) VALUES ({}) ON CONFLICT (\"token\") DO UPDATE SET {}",
            cols.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", "),
            values.join(", "),
            updates.join(", ")
        );
        let models = Value::from(k.models.clone()).to_string();
        let aliases = Value::Object(k.aliases.clone()).to_string();
        let metadata = Value::Object(k.metadata.clone()).to_string();
        with_pool!(&self.db, pool => {
            sqlx::query(AssertSqlSafe(sql.as_str()))
                .bind(&k.token)
                .bind(&k.key_name)
                .bind(&k.key_alias)
                .bind(k.spend)
                .bind(k.expires)
                .bind(&models)
                .bind(&aliases)
                .bind(&metadata)
                .bind(&k.user_id)
                .bind(&k.team_id)
                .bind(k.max_parallel_requests)
                .bind(k.blocked)
                .bind(k.tpm_limit)
                .bind(k.rpm_limit)
                .bind(k.max_budget)
                .bind(&k.budget_duration)
                .bind(&k.created_by)
                .bind(k.created_at)
                .bind(k.updated_at)
                .bind(Value::from(k.allowed_cache_controls.clone()).to_string())
                .execute(pool)
                .await
                .map_err(db_err)?;
        });
        Ok(())
    }

    /// Deletes the keys with these hashes; returns how many there were.
    pub async fn delete_keys(&self, tokens: &[String]) -> StoreResult<u64> {
        let mut deleted = 0;
        for token in tokens {
            self.count(1);
            deleted += with_pool!(&self.db, pool => sqlx::query(
                "DELETE FROM \"LiteLLM_VerificationToken\" WHERE \"token\" = $1",
            )
            .bind(token)
            .execute(pool)
            .await
            .map_err(db_err)?
            .rows_affected());
        }
        Ok(deleted)
    }

    /// Writes a batch of spend in one transaction (all or nothing, so a failed batch can be
    /// retried whole): the log rows and the sums added to each key, team, user and end user.
    pub async fn write_spend(&self, rows: &[SpendRow]) -> StoreResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let pg = self.is_postgres();
        let insert = format!(
            "INSERT INTO \"LiteLLM_SpendLogs\" (\"request_id\", \"call_type\", \"api_key\", \"spend\", \"prompt_tokens\", \"completion_tokens\", \"total_tokens\", \"startTime\", \"endTime\", \"request_duration_ms\", \"model\", \"model_id\", \"model_group\", \"custom_llm_provider\", \"api_base\", \"user\", \"team_id\", \"end_user\", \"status\", \"requester_ip_address\", \"cache_hit\", \"cache_key\") VALUES ($1, $2, $3, $4, $5, $6, $7, {}, {}, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22) ON CONFLICT (\"request_id\") DO NOTHING",
            ts_in(pg, "$8"),
            ts_in(pg, "$9")
        );
        // Sums per entity, so each is one UPDATE however many calls it made.
        let mut sums: std::collections::HashMap<(&str, &str), f64> = Default::default();
        // A key's user within its team: `LiteLLM_TeamMembership` (user_id, team_id).
        let mut members: std::collections::HashMap<(&str, &str), f64> = Default::default();
        for r in rows {
            if r.spend == 0.0 {
                continue;
            }
            if let (Some(user), Some(team)) = (r.user_id.as_deref(), r.team_id.as_deref()) {
                *members.entry((user, team)).or_default() += r.spend;
            }
            let targets = [
                (
                    "LiteLLM_VerificationToken",
                    Some(r.api_key.as_str()).filter(|k| !k.is_empty()),
                ),
                ("LiteLLM_TeamTable", r.team_id.as_deref()),
                ("LiteLLM_UserTable", r.user_id.as_deref()),
                ("LiteLLM_EndUserTable", r.end_user.as_deref()),
            ];
            for (table, id) in targets {
                if let Some(id) = id {
                    *sums.entry((table, id)).or_default() += r.spend;
                }
            }
        }
        self.count((rows.len() + sums.len() + members.len()) as u64 + 1);
        with_pool!(&self.db, pool => {
            let mut tx = pool.begin().await.map_err(db_err)?;
            for r in rows {
                sqlx::query(AssertSqlSafe(insert.as_str()))
                    .bind(&r.request_id)
                    .bind(r.call_type)
                    .bind(&r.api_key)
                    .bind(r.spend)
                    .bind(r.prompt_tokens)
                    .bind(r.completion_tokens)
                    .bind(r.total_tokens)
                    .bind(r.start_ms)
                    .bind(r.end_ms)
                    .bind(r.end_ms.saturating_sub(r.start_ms))
                    .bind(&r.model)
                    .bind(&r.model_id)
                    .bind(&r.model_group)
                    .bind(&r.custom_llm_provider)
                    .bind(&r.api_base)
                    .bind(r.user_id.as_deref().unwrap_or(""))
                    .bind(&r.team_id)
                    .bind(&r.end_user)
                    .bind(r.status)
                    .bind(&r.requester_ip_address)
                    .bind(if r.cache_hit { "True" } else { "False" })
                    .bind(&r.cache_key)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
            }
            for ((table, id), spend) in &sums {
                let sql = match *table {
                    "LiteLLM_EndUserTable" => "INSERT INTO \"LiteLLM_EndUserTable\" (\"user_id\", \"spend\") VALUES ($1, $2) ON CONFLICT (\"user_id\") DO UPDATE SET \"spend\" = \"LiteLLM_EndUserTable\".\"spend\" + excluded.\"spend\"".to_string(),
                    "LiteLLM_VerificationToken" => "UPDATE \"LiteLLM_VerificationToken\" SET \"spend\" = \"spend\" + $2 WHERE \"token\" = $1".to_string(),
                    "LiteLLM_TeamTable" => "UPDATE \"LiteLLM_TeamTable\" SET \"spend\" = \"spend\" + $2 WHERE \"team_id\" = $1".to_string(),
                    _ => format!("UPDATE \"{table}\" SET \"spend\" = \"spend\" + $2 WHERE \"user_id\" = $1"),
                };
                sqlx::query(AssertSqlSafe(sql.as_str())).bind(*id).bind(*spend).execute(&mut *tx).await.map_err(db_err)?;
            }
            // Memberships are made by /team/member_add; a call by a user outside the team
            // adds to the team and the user, and there is no membership row to add to.
            for ((user, team), spend) in &members {
                sqlx::query("UPDATE \"LiteLLM_TeamMembership\" SET \"spend\" = \"spend\" + $3 WHERE \"user_id\" = $1 AND \"team_id\" = $2")
                    .bind(*user).bind(*team).bind(*spend).execute(&mut *tx).await.map_err(db_err)?;
            }
            tx.commit().await.map_err(db_err)?;
        });
        Ok(())
    }

    /// Runs one statement (tests and fixtures: load LiteLLM's DDL, insert a LiteLLM-made row).
    pub async fn execute(&self, sql: &str) -> StoreResult<u64> {
        self.count(1);
        with_pool!(&self.db, pool => Ok(sqlx::raw_sql(AssertSqlSafe(sql.to_string())).execute(pool).await.map_err(db_err)?.rows_affected()))
    }

    /// A budget window ended: the entity's `spend` back to 0 and its next `budget_reset_at`
    /// (LiteLLM's reset job does the same). `table` is one of LiteLLM's budgeted tables; `id`
    /// its key column's value. `LiteLLM_EndUserTable` has no `budget_reset_at` (its budget row
    /// holds it): only its spend is reset.
    pub async fn reset_budget(
        &self,
        table: &'static str,
        id: &str,
        next_reset_ms: i64,
    ) -> StoreResult<()> {
        let column = budget_key_column(table)?;
        let next = ts_in(self.is_postgres(), "$2");
        self.count(1);
        if table == "LiteLLM_EndUserTable" {
            let sql = format!("UPDATE \"{table}\" SET \"spend\" = 0 WHERE \"{column}\" = $1");
            with_pool!(&self.db, pool => {
                sqlx::query(AssertSqlSafe(sql.as_str())).bind(id).execute(pool).await.map_err(db_err)?;
            });
            return Ok(());
        }
        let sql = {
            // Only a window not already reset to this time: instances sharing the database
            // compute the same standardized reset time, and the second must not zero the spend
            // the first instance's calls added in the new window.
            format!(
                "UPDATE \"{table}\" SET \"spend\" = 0, \"budget_reset_at\" = {next} WHERE \"{column}\" = $1 AND (\"budget_reset_at\" IS NULL OR \"budget_reset_at\" < {next})"
            )
        };
        with_pool!(&self.db, pool => {
            sqlx::query(AssertSqlSafe(sql.as_str())).bind(id).bind(next_reset_ms).execute(pool).await.map_err(db_err)?;
        });
        Ok(())
    }

    /// Sets an entity's `budget_reset_at` (the first window's end), leaving its spend.
    pub async fn set_budget_reset_at(
        &self,
        table: &'static str,
        id: &str,
        at_ms: i64,
    ) -> StoreResult<()> {
        let column = budget_key_column(table)?;
        let sql = format!(
            "UPDATE \"{table}\" SET \"budget_reset_at\" = {} WHERE \"{column}\" = $1",
            ts_in(self.is_postgres(), "$2")
        );
        self.count(1);
        with_pool!(&self.db, pool => {
            sqlx::query(AssertSqlSafe(sql.as_str())).bind(id).bind(at_ms).execute(pool).await.map_err(db_err)?;
        });
        Ok(())
    }

    /// One number from a query (tests: row counts, spend sums).
    pub async fn scalar_f64(&self, sql: &str) -> StoreResult<f64> {
        self.count(1);
        with_pool!(&self.db, pool => {
            let row = sqlx::query(AssertSqlSafe(sql.to_string())).fetch_one(pool).await.map_err(db_err)?;
            row.try_get::<Option<f64>, _>(0).map(|v| v.unwrap_or(0.0)).map_err(db_err)
        })
    }
}

/// The key column of a table a budget is set on.
fn budget_key_column(table: &str) -> StoreResult<&'static str> {
    match table {
        "LiteLLM_VerificationToken" => Ok("token"),
        "LiteLLM_TeamTable" => Ok("team_id"),
        "LiteLLM_UserTable" | "LiteLLM_EndUserTable" => Ok("user_id"),
        _ => Err(format!("no budget reset for table {table}")),
    }
}

fn key_select(pg: bool) -> String {
    let json = |c: &str, empty: &str| {
        if pg {
            format!("COALESCE(\"{c}\"::text, '{empty}') AS \"{c}\"")
        } else {
            format!("COALESCE(\"{c}\", '{empty}') AS \"{c}\"")
        }
    };
    let list = |c: &str| {
        if pg {
            format!("COALESCE(array_to_json(\"{c}\")::text, '[]') AS \"{c}\"")
        } else {
            json(c, "[]")
        }
    };
    let int = |c: &str| {
        if pg {
            format!("\"{c}\"::BIGINT AS \"{c}\"")
        } else {
            format!("\"{c}\"")
        }
    };
    let ts = |c: &str| format!("{} AS \"{c}\"", ts_out(pg, c));
    let cols = [
        "\"token\"".to_string(),
        "\"key_name\"".into(),
        "\"key_alias\"".into(),
        "\"spend\"".into(),
        ts("expires"),
        list("models"),
        json("aliases", "{}"),
        json("metadata", "{}"),
        "\"user_id\"".into(),
        "\"team_id\"".into(),
        int("max_parallel_requests"),
        "\"blocked\"".into(),
        int("tpm_limit"),
        int("rpm_limit"),
        "\"max_budget\"".into(),
        "\"budget_duration\"".into(),
        ts("budget_reset_at"),
        json("model_max_budget", "{}"),
        "\"budget_id\"".into(),
        list("allowed_cache_controls"),
        "\"created_by\"".into(),
        ts("created_at"),
        ts("updated_at"),
    ]
    .join(", ");
    format!("SELECT {cols} FROM \"LiteLLM_VerificationToken\"")
}

/// A timestamp column as Unix ms (Prisma's `TIMESTAMP(3)` holds UTC without a zone).
fn ts_out(pg: bool, column: &str) -> String {
    if pg {
        format!("(EXTRACT(EPOCH FROM \"{column}\") * 1000)::BIGINT")
    } else {
        format!("CAST(ROUND((julianday(\"{column}\") - 2440587.5) * 86400000.0) AS INTEGER)")
    }
}

/// A Unix-ms parameter as a timestamp value.
fn ts_in(pg: bool, param: &str) -> String {
    if pg {
        format!("(to_timestamp({param}::double precision / 1000.0) AT TIME ZONE 'UTC')")
    } else {
        format!("strftime('%Y-%m-%d %H:%M:%f', {param} / 1000.0, 'unixepoch')")
    }
}

/// A JSON-list parameter as a `TEXT[]` (Postgres) or JSON text (SQLite).
fn arr_in(pg: bool, param: &str) -> String {
    if pg {
        format!("ARRAY(SELECT jsonb_array_elements_text({param}::jsonb))")
    } else {
        param.to_string()
    }
}

fn json_list(text: String) -> Vec<String> {
    serde_json::from_str::<Vec<Value>>(&text)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

fn json_object(text: String) -> Map<String, Value> {
    match serde_json::from_str(&text) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sqlite_round_trip_and_spend() {
        let dir = std::env::temp_dir().join(format!("sb-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let url = resolve_url(None, Some(&dir.join("nested")));
        let store = Store::open(&url).await.unwrap();
        // Opening again finds every table and column in place.
        let store2 = Store::open(&url).await.unwrap();
        let mut aliases = Map::new();
        aliases.insert("fast".into(), "gpt-4o-mini".into());
        let row = KeyRow {
            token: "ab".repeat(32),
            key_alias: Some("team-a".into()),
            expires: Some(1_900_000_000_123),
            models: vec!["gpt-4o".into()],
            aliases,
            blocked: Some(false),
            tpm_limit: Some(10),
            allowed_cache_controls: vec!["no-cache".into(), "ttl".into()],
            created_at: Some(1_800_000_000_000),
            updated_at: Some(1_800_000_000_000),
            ..Default::default()
        };
        store.upsert_key(&row).await.unwrap();
        let loaded = store2.load_keys().await.unwrap();
        assert_eq!(loaded, vec![row.clone()]);
        assert_eq!(store.keys_marker().await.unwrap(), (1, 1_800_000_000_000));
        let spend = SpendRow {
            request_id: "r1".into(),
            call_type: "acompletion",
            api_key: row.token.clone(),
            spend: 0.25,
            end_user: Some("u1".into()),
            requester_ip_address: Some("10.1.2.3".into()),
            status: "success",
            ..Default::default()
        };
        store.write_spend(&[spend]).await.unwrap();
        assert_eq!(store.load_keys().await.unwrap()[0].spend, 0.25);
        let n = store
            .scalar_f64("SELECT CAST(COUNT(*) AS REAL) FROM \"LiteLLM_SpendLogs\" WHERE \"requester_ip_address\" = '10.1.2.3'")
            .await
            .unwrap();
        assert_eq!(n, 1.0);
        // A budget reset: spend to 0 and the next reset time; a second instance resetting the
        // same window afterwards leaves the new window's spend alone.
        store
            .reset_budget("LiteLLM_VerificationToken", &row.token, 1_900_000_000_000)
            .await
            .unwrap();
        let reset = &store.load_keys().await.unwrap()[0];
        assert_eq!(
            (reset.spend, reset.budget_reset_at),
            (0.0, Some(1_900_000_000_000))
        );
        store
            .execute(&format!(
                "UPDATE \"LiteLLM_VerificationToken\" SET spend = 0.5 WHERE token = '{}'",
                row.token
            ))
            .await
            .unwrap();
        store
            .reset_budget("LiteLLM_VerificationToken", &row.token, 1_900_000_000_000)
            .await
            .unwrap();
        assert_eq!(store.load_keys().await.unwrap()[0].spend, 0.5);
        assert_eq!(store.delete_keys(&[row.token]).await.unwrap(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
