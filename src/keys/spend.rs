//! Spend write-behind: each settled call hands one [`SpendRow`] to a bounded channel (never
//! waiting: when it is full the row is counted in `dropped` and let go), and a writer task on
//! the store's runtime writes what gathered every `proxy_batch_write_at` in one transaction.
//! [`SpendWriter::flush`] writes at once (graceful shutdown, reload, upgrade).
//!
//! Each row adds its cost to the key, the key's team and user, their team membership and the
//! end user (creating the end user's row when missing), in the batch's one transaction; the
//! in-memory counters of the same entries are raised at settle.

use crate::store::{SpendRow, Store};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Rows waiting for the writer, at most; past it new rows are dropped and counted.
pub const CHANNEL_CAPACITY: usize = 10_000;
/// Rows the writer keeps when the database is down, at most (oldest dropped first).
const MAX_PENDING: usize = 100_000;

// Nearly every message is a row: boxing it would add an allocation per call and save nothing.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Row(SpendRow),
    Flush(oneshot::Sender<()>),
    /// A budget window ended (see [`SpendWriter::reset_budget`]).
    Reset {
        table: &'static str,
        id: String,
        next_reset_ms: i64,
    },
}

pub struct SpendWriter {
    tx: mpsc::Sender<Msg>,
    /// Rows dropped (channel full, or the database down too long).
    pub dropped: Arc<AtomicU64>,
    /// Rows written.
    pub written: Arc<AtomicU64>,
}

impl SpendWriter {
    pub fn start(
        runtime: &tokio::runtime::Handle,
        store: Arc<Store>,
        every: Duration,
    ) -> SpendWriter {
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let dropped = Arc::new(AtomicU64::new(0));
        let written = Arc::new(AtomicU64::new(0));
        let every = every.max(Duration::from_millis(10));
        runtime.spawn(run(rx, store, every, dropped.clone(), written.clone()));
        SpendWriter {
            tx,
            dropped,
            written,
        }
    }

    /// Hands a row to the writer without waiting.
    pub fn record(&self, row: SpendRow) {
        if self.tx.try_send(Msg::Row(row)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A budget window ended: writes the rows handed over before it, then sets the entity's
    /// spend to 0 and its next `budget_reset_at`, in that order (so spend settled before the
    /// reset never lands in the new window). Without waiting; `false` when the queue is full.
    pub fn reset_budget(&self, table: &'static str, id: String, next_reset_ms: i64) -> bool {
        self.tx
            .try_send(Msg::Reset {
                table,
                id,
                next_reset_ms,
            })
            .is_ok()
    }

    /// Writes everything handed over so far, waiting at most `timeout`.
    pub async fn flush(&self, timeout: Duration) {
        let (done, wait) = oneshot::channel();
        let sent = tokio::time::timeout(timeout, self.tx.send(Msg::Flush(done))).await;
        if matches!(sent, Ok(Ok(()))) && tokio::time::timeout(timeout, wait).await.is_ok() {
            return;
        }
        log::warn!("spend: flush did not finish within {timeout:?}");
    }
}

async fn run(
    mut rx: mpsc::Receiver<Msg>,
    store: Arc<Store>,
    every: Duration,
    dropped: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
) {
    let mut pending: Vec<SpendRow> = Vec::new();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(Msg::Row(row)) => {
                    pending.push(row);
                    if pending.len() > MAX_PENDING {
                        let over = pending.len() - MAX_PENDING;
                        pending.drain(..over);
                        dropped.fetch_add(over as u64, Ordering::Relaxed);
                    }
                }
                Some(Msg::Reset { table, id, next_reset_ms }) => {
                    write(&store, &mut pending, &written).await;
                    if let Err(e) = store.reset_budget(table, &id, next_reset_ms).await {
                        log::warn!("budgets: persisting the reset of {table} {id} failed: {e}");
                    }
                }
                Some(Msg::Flush(done)) => {
                    // Take every row already queued behind the flush request's senders.
                    let mut waiting = vec![done];
                    while let Ok(msg) = rx.try_recv() {
                        match msg {
                            Msg::Row(row) => pending.push(row),
                            Msg::Reset { table, id, next_reset_ms } => {
                                write(&store, &mut pending, &written).await;
                                let _ = store.reset_budget(table, &id, next_reset_ms).await;
                            }
                            Msg::Flush(other) => waiting.push(other),
                        }
                    }
                    write(&store, &mut pending, &written).await;
                    for done in waiting {
                        let _ = done.send(());
                    }
                }
                None => {
                    write(&store, &mut pending, &written).await;
                    return;
                }
            },
            _ = tick.tick() => write(&store, &mut pending, &written).await,
        }
    }
}

async fn write(store: &Store, pending: &mut Vec<SpendRow>, written: &AtomicU64) {
    if pending.is_empty() {
        return;
    }
    match store.write_spend(pending).await {
        Ok(()) => {
            written.fetch_add(pending.len() as u64, Ordering::Relaxed);
            pending.clear();
        }
        // Kept for the next tick: the batch is one transaction, so nothing was half written.
        Err(e) => log::warn!(
            "spend: writing {} row(s) failed, will retry: {e}",
            pending.len()
        ),
    }
}

/// The `settle` stage: one spend row per LLM call made with a virtual key (or the master key),
/// and the key's in-memory spend raised at once.
pub struct SpendSettle {
    pub keys: Arc<super::Keys>,
    /// sha256 of the master key, the `api_key` LiteLLM logs for master-key calls.
    pub master_hash: String,
}

impl crate::pipeline::Settle for SpendSettle {
    fn settle(&self, ctx: &crate::context::Context) {
        // LiteLLM's call types; other routes (health, models, admin) cost nothing.
        let call_type = match ctx.route {
            "chat" => "acompletion",
            "embeddings" => "aembedding",
            "responses" => "aresponses",
            "completions" => "atext_completion",
            // `/v1/messages` (LiteLLM's call type for it).
            "messages" => "anthropic_messages",
            _ => return,
        };
        // Refused before any upstream was tried (auth, model access, bad input): not a call,
        // as in LiteLLM's spend logs. A cache hit is one (logged with spend 0, `cache_hit`).
        let hit = ctx.cache == crate::context::CacheStatus::Hit;
        if ctx.deployment.is_none() && !hit {
            return;
        }
        let key = ctx.principal.key();
        let api_key = match (&ctx.principal, key) {
            (_, Some(k)) => k.row.token.clone(),
            (crate::context::Principal::MasterKey, None) => self.master_hash.clone(),
            _ => return,
        };
        let cost = ctx.cost.unwrap_or(0.0);
        if let Some(k) = key {
            k.add_spend(cost);
        }
        // The key's team, user and membership and the end user, as resolved at admission; a
        // new end user's row is created by the batch and loaded by the next refresh.
        ctx.tenancy.add_spend(cost);
        let end_ms = super::now_ms();
        let elapsed = ctx.start.elapsed().as_millis() as i64;
        let usage = ctx.usage.as_ref();
        let deployment = ctx.deployment.as_deref();
        let row = SpendRow {
            request_id: ctx.request_id.as_str().to_string(),
            call_type,
            api_key,
            spend: cost,
            prompt_tokens: usage.map_or(0, |u| u.prompt_tokens as i64),
            completion_tokens: usage.map_or(0, |u| u.completion_tokens as i64),
            total_tokens: usage.map_or(0, |u| u.total_tokens as i64),
            start_ms: end_ms - elapsed,
            end_ms,
            model: deployment.map_or_else(String::new, |d| d.config.model.clone()),
            model_id: deployment.map_or_else(String::new, |d| d.config.id.clone()),
            model_group: ctx.model.clone().unwrap_or_default(),
            custom_llm_provider: deployment.map_or_else(String::new, |d| d.config.provider.clone()),
            api_base: deployment
                .and_then(|d| d.config.params.api_base.clone())
                .unwrap_or_default(),
            user_id: key.and_then(|k| k.row.user_id.clone()),
            team_id: key.and_then(|k| k.row.team_id.clone()),
            end_user: ctx.end_user.clone(),
            requester_ip_address: ctx.client_addr.map(|a| a.to_string()),
            status: if ctx.status < 400 {
                "success"
            } else {
                "failure"
            },
            cache_hit: hit,
            cache_key: ctx.cache_key.clone().unwrap_or_default(),
        };
        self.keys.spend.record(row);
    }
}
