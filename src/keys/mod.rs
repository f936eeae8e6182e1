//! Virtual keys (LiteLLM's `LiteLLM_VerificationToken`), served from memory.
//!
//! Every key row is loaded at start into a map keyed by the key's sha256, swapped whole
//! ([`ArcSwap`]) so a request reads it without a lock. The map is authoritative: a key not in
//! it is rejected without asking the database, so a flood of random keys costs a hash and a
//! lookup each and sends no query (no negative cache is needed: there is nothing to miss).
//! Freshness:
//! - changes made through this instance's admin API update the map right after the database
//!   write, so the next request sees them;
//! - changes made elsewhere (another instance on the same database, LiteLLM itself) are picked
//!   up by a background poll every [`REFRESH_EVERY`]: a one-row query (row count and latest
//!   `updated_at`), and a full reload only when that changes. The same poll refreshes the
//!   teams, users, end users and budgets ([`crate::tenants`]).
//!
//! Spend is written behind: see [`spend`]. The store's queries run on a small runtime of their
//! own ([`Keys::run`]), never on the request path.

pub mod auth;
pub mod spend;

use crate::store::{KeyRow, Store};
pub use crate::tenant::KeyEntry;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often the key table is checked for changes made elsewhere: the bound on how long a key
/// created, changed or deleted by another instance takes to apply here.
pub const REFRESH_EVERY: Duration = Duration::from_secs(2);

/// The sha256 of a key.
pub type KeyHash = [u8; 32];

pub fn hash_key(key: &str) -> KeyHash {
    let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

pub fn hex(hash: &KeyHash) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(64);
    for b in hash {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn parse_hex(token: &str) -> Option<KeyHash> {
    if token.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in token.as_bytes().chunks(2).enumerate() {
        let s = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// A new key: `sk-` and 22 URL-safe characters (16 random bytes), as LiteLLM makes them.
pub fn generate_key() -> String {
    use base64::Engine;
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system random source failed");
    format!(
        "sk-{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// LiteLLM's `key_name`: the key abbreviated to `sk-...` and its last four characters.
pub fn abbreviate(key: &str) -> String {
    let tail: String = key
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("sk-...{tail}")
}

type KeyMap = HashMap<KeyHash, Arc<KeyEntry>>;

/// The key store: the in-memory map, the database behind it and the spend writer.
pub struct Keys {
    map: ArcSwap<KeyMap>,
    pub store: Arc<Store>,
    runtime: tokio::runtime::Handle,
    /// The key table's fingerprint at the last load (see [`Store::keys_marker`]).
    marker: Mutex<(i64, i64)>,
    /// Serialises admin writes with the refresh, so a reload never resurrects a change.
    write_lock: tokio::sync::Mutex<()>,
    pub spend: spend::SpendWriter,
    /// Teams, users, end users, budgets and memberships, refreshed by the same poll.
    pub tenants: Arc<crate::tenants::Tenants>,
}

impl Keys {
    /// Opens the store at `url` on a runtime of its own, loads every key and starts the refresh
    /// poll and the spend writer (flushing every `batch_every`). Blocking: call at start, off
    /// any async runtime.
    pub fn open(url: &str, batch_every: Duration) -> Result<Arc<Keys>, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("switchboard-store")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the store runtime: {e}"))?;
        // The store outlives every request; the process ends with it (a runtime dropped inside
        // another would panic, so it is never dropped).
        let runtime: &'static tokio::runtime::Runtime = Box::leak(Box::new(runtime));
        let store = Arc::new(runtime.block_on(Store::open(url))?);
        let spend = spend::SpendWriter::start(runtime.handle(), store.clone(), batch_every);
        let tenants = Arc::new(runtime.block_on(crate::tenants::Tenants::open(
            store.clone(),
            runtime.handle().clone(),
        ))?);
        let keys = Arc::new(Keys {
            map: ArcSwap::from_pointee(KeyMap::new()),
            store,
            runtime: runtime.handle().clone(),
            marker: Mutex::new((-1, -1)),
            write_lock: tokio::sync::Mutex::new(()),
            spend,
            tenants,
        });
        runtime.block_on(keys.reload())?;
        let weak = Arc::downgrade(&keys);
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(REFRESH_EVERY).await;
                let Some(keys) = weak.upgrade() else { return };
                // Tenants first: a key made elsewhere is never served before its team is
                // known here (its team's checks would be skipped until the next poll).
                if let Err(e) = keys.tenants.refresh().await {
                    log::warn!("tenants: refresh failed (keeping the teams, users and end users loaded): {e}");
                }
                if let Err(e) = keys.refresh().await {
                    log::warn!("virtual keys: refresh failed (keeping the keys loaded): {e}");
                }
            }
        });
        Ok(keys)
    }

    /// Runs `fut` on the store's runtime and waits for it (admin handlers: their queries run
    /// there, whatever runtime serves the request).
    pub async fn run<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, String> {
        self.runtime
            .spawn(fut)
            .await
            .map_err(|e| format!("store task failed: {e}"))
    }

    /// Runs `fut` on the store's runtime without waiting for it (background writes).
    pub fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        self.runtime.spawn(fut);
    }

    /// The key presented, by its hash: a map lookup, no I/O.
    pub fn get(&self, hash: &KeyHash) -> Option<Arc<KeyEntry>> {
        self.map.load().get(hash).cloned()
    }

    pub fn get_hex(&self, token: &str) -> Option<Arc<KeyEntry>> {
        parse_hex(token).and_then(|h| self.get(&h))
    }

    /// Every key (admin listing).
    pub fn all(&self) -> Vec<Arc<KeyEntry>> {
        self.map.load().values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.map.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reloads when the key table changed since the last load.
    async fn refresh(&self) -> Result<(), String> {
        let marker = self.store.keys_marker().await?;
        if *self.marker.lock().unwrap_or_else(|p| p.into_inner()) == marker {
            return Ok(());
        }
        self.reload().await
    }

    /// Loads every key and swaps the map. Spend settled here but not yet written survives:
    /// the loaded spend never goes below what this instance already counted.
    async fn reload(&self) -> Result<(), String> {
        let _guard = self.write_lock.lock().await;
        let marker = self.store.keys_marker().await?;
        let rows = self.store.load_keys().await?;
        let old = self.map.load();
        let mut map = KeyMap::with_capacity(rows.len());
        for row in rows {
            let Some(hash) = parse_hex(&row.token) else {
                log::warn!(
                    "virtual keys: skipping a row whose token is not a sha256 hex digest ({} chars)",
                    row.token.len()
                );
                continue;
            };
            let entry = match old.get(&hash) {
                Some(prev) => KeyEntry::replacing(row, prev),
                None => KeyEntry::new(row),
            };
            map.insert(hash, entry);
        }
        self.map.store(Arc::new(map));
        *self.marker.lock().unwrap_or_else(|p| p.into_inner()) = marker;
        Ok(())
    }

    /// Writes `row` and then puts it in the map (admin create and update).
    pub async fn put(self: &Arc<Self>, row: KeyRow) -> Result<Arc<KeyEntry>, String> {
        let hash = parse_hex(&row.token).ok_or("a key's token must be its sha256 in hex")?;
        let keys = self.clone();
        self.run(async move {
            let _guard = keys.write_lock.lock().await;
            keys.store.upsert_key(&row).await?;
            // The row's spend is not written by an update: the counter carries on.
            let entry = match keys.map.load().get(&hash) {
                Some(prev) => KeyEntry::replacing(row, prev),
                None => KeyEntry::new(row),
            };
            keys.map.rcu(|m| {
                let mut m = KeyMap::clone(m);
                m.insert(hash, entry.clone());
                m
            });
            Ok(entry)
        })
        .await?
    }

    /// Deletes keys by hash (database, then map); returns the hashes that existed.
    pub async fn remove(self: &Arc<Self>, tokens: Vec<String>) -> Result<Vec<String>, String> {
        let keys = self.clone();
        self.run(async move {
            let _guard = keys.write_lock.lock().await;
            let existing: Vec<String> = tokens
                .into_iter()
                .filter(|t| keys.get_hex(t).is_some())
                .collect();
            keys.store.delete_keys(&existing).await?;
            keys.map.rcu(|m| {
                let mut m = KeyMap::clone(m);
                for t in &existing {
                    if let Some(h) = parse_hex(t) {
                        m.remove(&h);
                    }
                }
                m
            });
            Ok(existing)
        })
        .await?
    }

    /// Replaces a key by a new one with the same settings and spend (regenerate): the new row
    /// is written first, so a failure leaves the old key working.
    pub async fn replace(
        self: &Arc<Self>,
        old_token: String,
        new_row: KeyRow,
    ) -> Result<Arc<KeyEntry>, String> {
        let entry = self.put(new_row).await?;
        self.remove(vec![old_token]).await?;
        Ok(entry)
    }

    /// The store's counters in Prometheus text format, appended to `/metrics`.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = write!(
            out,
            "# HELP switchboard_store_queries_total Queries sent to the key/spend database (kind=change_poll: the key table's change check).\n\
             # TYPE switchboard_store_queries_total counter\n\
             switchboard_store_queries_total{{kind=\"other\"}} {}\n\
             switchboard_store_queries_total{{kind=\"change_poll\"}} {}\n\
             # HELP switchboard_virtual_keys Virtual keys loaded in memory.\n\
             # TYPE switchboard_virtual_keys gauge\n\
             switchboard_virtual_keys {}\n\
             # HELP switchboard_spend_rows_written_total Spend log rows written to the database.\n\
             # TYPE switchboard_spend_rows_written_total counter\n\
             switchboard_spend_rows_written_total {}\n\
             # HELP switchboard_spend_rows_dropped_total Spend log rows dropped (writer queue full, or the database down too long).\n\
             # TYPE switchboard_spend_rows_dropped_total counter\n\
             switchboard_spend_rows_dropped_total {}\n",
            self.store.queries(),
            self.store.polls(),
            self.len(),
            self.spend.written.load(Ordering::Relaxed),
            self.spend.dropped.load(Ordering::Relaxed),
        );
    }

    /// Writes the spend batched so far (shutdown, reload), waiting at most `timeout`.
    pub async fn flush(&self, timeout: Duration) {
        self.spend.flush(timeout).await;
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_look_like_litellm_keys() {
        let k = generate_key();
        assert!(k.starts_with("sk-") && k.len() == 25, "{k}");
        assert!(k[3..]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_ne!(k, generate_key());
        assert_eq!(abbreviate("sk-abcdef1234"), "sk-...1234");
        let h = hash_key("abc");
        // sha256 in lower-case hex, as LiteLLM's hash_token stores it.
        assert_eq!(
            hex(&h),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(parse_hex(&hex(&h)), Some(h));
        assert_eq!(parse_hex("zz"), None);
    }
}
