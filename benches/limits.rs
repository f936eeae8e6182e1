//! What rate limits cost per request (issue 13).
//!
//! - Local (criterion): one admission over a key's three scopes (parallel, rpm, tpm) plus
//!   settling it (token reconciliation and the slot given back), on one hot key and spread
//!   over 10,000 keys.
//! - Local, per call: p50/p99 of one admit+settle over 200,000 timed calls (the latency a
//!   request gains), and the process CPU per call.
//! - Redis on loopback (when `/usr/bin/redis-server` exists): the admission script's round
//!   trip from a throwaway server this bench starts, p50/p99 over 5,000 sequential calls and
//!   this process's CPU per call (building the arguments, the client, parsing the answer);
//!   then 16 callers at once on the one multiplexed connection (as a loaded gateway sends).
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

/// This process's user + system CPU time so far.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 (1-based), 11 and 12 after the name and state.
    let hz = 100; // USER_HZ on Linux
    Duration::from_millis((ticks(11) + ticks(12)) * 1000 / hz)
}

fn percentiles(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    let p = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    (p(0.5), p(0.99))
}

/// One admit+settle timed alone, 200,000 times over 10,000 keys: p50/p99 and CPU per call.
fn local_latency() {
    let cells = Local::default();
    let many: Vec<Vec<Scope>> = (0..10_000).map(scopes).collect();
    let mut out = Vec::with_capacity(4);
    let n = 200_000;
    let mut samples = Vec::with_capacity(n);
    let cpu = cpu_time();
    let wall = Instant::now();
    for i in 0..n {
        let s = &many[i % many.len()];
        let t = Instant::now();
        assert!(cells.admit(s, &mut out));
        cells.give_back(&s[0], 1.0);
        cells.give_back(&s[2], 280.0);
        samples.push(t.elapsed());
    }
    let (cpu, wall) = (cpu_time() - cpu, wall.elapsed());
    let (p50, p99) = percentiles(&mut samples);
    println!(
        "limits local admit+settle (10k keys, 3 scopes): p50 {p50:?}, p99 {p99:?}, CPU {:?}/call (wall {:?}/call)",
        cpu / n as u32,
        wall / n as u32
    );
}

/// One admission script call over `s`, which must admit.
async fn admit_once(state: &switchboard::shared_state::SharedState, s: &[Scope], member: u64) {
    let (keys, args) = shared::admit_args(s, member);
    let keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
    let r: Vec<i64> = state
        .eval(shared::admit_script(), &keys, &args)
        .await
        .unwrap();
    assert_eq!(r[0], 0);
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
        let mut cpu = Duration::ZERO;
        for i in 0..5_500 {
            if i == 500 {
                cpu = cpu_time();
            }
            let t = Instant::now();
            admit_once(&state, &s, i).await;
            if i >= 500 {
                samples.push(t.elapsed());
            }
        }
        let cpu = (cpu_time() - cpu) / samples.len() as u32;
        let (p50, p99) = percentiles(&mut samples);
        println!(
            "limits over Redis (loopback, 3 scopes, one EVALSHA, sequential): p50 {p50:?}, p99 {p99:?}, client CPU {cpu:?}/call"
        );
        // 16 callers at once, 1,000 calls each, on the one multiplexed connection.
        let started = Instant::now();
        let callers = (0..16u64).map(|c| {
            let state = state.clone();
            let s = scopes(100 + c as usize);
            async move {
                let mut samples = Vec::with_capacity(1_000);
                for i in 0..1_000 {
                    let t = Instant::now();
                    admit_once(&state, &s, i).await;
                    samples.push(t.elapsed());
                }
                samples
            }
        });
        let mut all: Vec<Duration> = futures_util::future::join_all(callers)
            .await
            .into_iter()
            .flatten()
            .collect();
        let rate = all.len() as f64 / started.elapsed().as_secs_f64();
        let (p50, p99) = percentiles(&mut all);
        println!(
            "limits over Redis (loopback, 16 callers at once): p50 {p50:?}, p99 {p99:?}, {rate:.0} admissions/s"
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
    local_latency();
    redis_round_trip();
}
