//! Who a virtual key is, as a request carries it in [`crate::context::Principal`]: the key's
//! row and the spend this instance knows for it. A leaf beside `context` (the key store in
//! [`crate::keys`] builds these).

use crate::store::KeyRow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A key as served: its row, and its spend as this instance knows it (the row's plus calls
/// settled here since, added at once; the database gets them in the next spend batch).
#[derive(Debug)]
pub struct KeyEntry {
    pub row: KeyRow,
    spend_bits: AtomicU64,
}

impl KeyEntry {
    pub fn new(row: KeyRow) -> Arc<KeyEntry> {
        Arc::new(KeyEntry {
            spend_bits: AtomicU64::new(row.spend.to_bits()),
            row,
        })
    }

    pub fn spend(&self) -> f64 {
        f64::from_bits(self.spend_bits.load(Ordering::Relaxed))
    }

    pub fn set_spend(&self, spend: f64) {
        self.spend_bits.store(spend.to_bits(), Ordering::Relaxed);
    }

    pub fn add_spend(&self, cost: f64) {
        let _ = self
            .spend_bits
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + cost).to_bits())
            });
    }

    /// The row with the spend this instance knows.
    pub fn current_row(&self) -> KeyRow {
        let mut row = self.row.clone();
        row.spend = self.spend();
        row
    }
}
