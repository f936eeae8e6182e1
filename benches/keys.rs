//! Unknown-key flood: how many requests with random (unknown) virtual keys one core refuses per
//! second through the real authenticate stage (sha256 + in-memory lookup + the LiteLLM 401),
//! with 2,000 real keys loaded from a SQLite store, and how many database queries the flood
//! sent (must be 0: the in-memory map is authoritative).
//!
//! Run: `cargo bench --bench keys`. Does nothing unless started by `cargo bench` (`--bench`),
//! so `cargo test --all-targets` stays fast.

use pingora_http::RequestHeader;
use std::time::{Duration, Instant};
use switchboard::context::Context;
use switchboard::keys::auth::VirtualKeys;
use switchboard::keys::{hash_key, hex, Keys};
use switchboard::pipeline::Authenticate;
use switchboard::store::KeyRow;

const KNOWN: usize = 2_000;
const FLOOD: usize = 200_000;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("sb-bench-keys-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let url = format!("sqlite://{}/keys.db", dir.display());
    let keys = Keys::open(&url, Duration::from_secs(10)).expect("open the store");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for i in 0..KNOWN {
        let row = KeyRow {
            token: hex(&hash_key(&format!("sk-known-{i}"))),
            ..Default::default()
        };
        rt.block_on(keys.put(row)).expect("insert a key");
    }
    let stage = VirtualKeys {
        keys: keys.clone(),
        master_key: "sk-master".into(),
        custom_header: None,
    };
    // Requests built up front: the loop measures the stage, not header construction.
    let requests: Vec<RequestHeader> = (0..FLOOD)
        .map(|i| {
            let mut r = RequestHeader::build("POST", b"/v1/chat/completions", None).unwrap();
            r.insert_header(
                "authorization",
                format!("Bearer sk-rand{i:016x}x{}", i * 31),
            )
            .unwrap();
            r
        })
        .collect();
    let ctx = Context::default();
    let queries_before = keys.store.queries();
    let start = Instant::now();
    let mut refused = 0usize;
    for r in &requests {
        if std::hint::black_box(stage.authenticate(r, &ctx)).is_err() {
            refused += 1;
        }
    }
    let elapsed = start.elapsed();
    let queries = keys.store.queries() - queries_before;
    let rate = refused as f64 / elapsed.as_secs_f64();
    println!(
        "unknown-key flood: {refused} of {FLOOD} refused in {elapsed:.2?} on one thread = {rate:.0} rejections/s; database queries during the flood: {queries}"
    );
    assert_eq!(refused, FLOOD);
    assert_eq!(queries, 0, "an unknown key must not reach the database");
    assert!(rate >= 10_000.0, "below 10k rejections/s");
    let _ = std::fs::remove_dir_all(&dir);
}
