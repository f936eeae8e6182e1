//! What rate limits cost per request (issue 13).
//!
//! - Local (criterion): one admission over a key's three scopes (parallel, rpm, tpm) plus
//!   settling it (token reconciliation and the slot given back), on one hot key and spread
//!   over 10,000 keys.
//! - Redis on loopback (when `/usr/bin/redis-server` exists): the admission script's round
//!   trip from a throwaway server this bench starts, p50/p99 over 5,000 sequential calls.
//!
//! Run: `cargo bench --bench limits`. Does nothing unless started by `cargo bench`.

use criterion::Criterion;
use std::time::{Duration, Instant};
use switchboard::config::redis::{FailurePolicy, RedisSettings};
use switchboard::limits::local::Local;
use switchboard::limits::{shared, Descriptor, Measure, Scope};

fn scopes(key: usize) -> Vec<Scope> {
    let value = format!("{key:064x}");
    [
        (Measure::Parallel, u64::MAX, 1),
        (Measure::Requests, u64::MAX / 2, 1),
        (Measure::Tokens, u64::MAX / 2, 300),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (measure, limit, cost))| Scope {
        descriptor: Descriptor::ApiKey,
        measure,
        value: value.clone(),
        id: (key as u64) << 2 | i as u64,
        limit,
        cost,
        window_ms: 60_000.0,
    })
    .collect()
}

fn local(c: &mut Criterion) {
    let cells = Local::default();
    let hot = scopes(1);
    let mut out = Vec::with_capacity(4);
    c.bench_function("limits local admit+settle, one key", |b| {
        b.iter(|| {
            assert!(cells.admit(&hot, &mut out));
            cells.give_back(&hot[0], 1.0);
            cells.give_back(&hot[2], 280.0);
        })
    });
    let many: Vec<Vec<Scope>> = (0..10_000).map(scopes).collect();
    let mut i = 0;
    c.bench_function("limits local admit+settle, 10k keys", |b| {
        b.iter(|| {
            let s = &many[i % many.len()];
            i += 1;
            assert!(cells.admit(s, &mut out));
            cells.give_back(&s[0], 1.0);
            cells.give_back(&s[2], 280.0);
        })
    });
}

fn redis_round_trip() {
    if !std::path::Path::new("/usr/bin/redis-server").exists() {
        println!("redis-server not installed: Redis figures skipped");
        return;
    }
    let port = 23_000 + (std::process::id() % 1000) as u16;
    let dir = std::env::temp_dir().join(format!("sb-bench-redis-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = std::process::Command::new("/usr/bin/redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .arg("--dir")
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let settings = RedisSettings {
        nodes: vec![format!("redis://127.0.0.1:{port}")],
        cluster: false,
        username: None,
        password: None,
        origin: "bench".into(),
        ca_certs: None,
    };
    rt.block_on(async {
        let state = switchboard::shared_state::SharedState::new(
            &settings,
            Duration::from_secs(1),
            FailurePolicy::Open,
        )
        .unwrap();
        let s = scopes(7);
        let mut samples = Vec::with_capacity(5_000);
        let deadline = Instant::now() + Duration::from_secs(5);
        while state.query::<String>(&redis::cmd("PING")).await.is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for i in 0..5_500 {
            let t = Instant::now();
            let (keys, args) = shared::admit_args(&s, i);
            let keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
            let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            let r: Vec<i64> = state
                .eval(shared::admit_script(), &keys, &args)
                .await
                .unwrap();
            assert_eq!(r[0], 0);
            if i >= 500 {
                samples.push(t.elapsed());
            }
        }
        samples.sort();
        let p = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
        println!(
            "limits over Redis (loopback, 3 scopes, one EVALSHA): p50 {:?}, p99 {:?}",
            p(0.5),
            p(0.99)
        );
    });
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    local(&mut c);
    c.final_summary();
    redis_round_trip();
}
