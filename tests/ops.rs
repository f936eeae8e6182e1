//! Operations through the real gateway process: SIGHUP hot reload (also under load and with a
//! broken file), SIGTERM drain, zero-downtime upgrade, `/metrics` and the access log.

mod support;

use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

fn chat(model: &str) -> serde_json::Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

fn model_ids(resp: &Response) -> Vec<String> {
    resp.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

/// Polls readiness until `pred` holds on its body (10 s at most).
async fn wait_readiness(
    gw: &Gateway,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    let matched = wait_until_async(
        async || {
            last = gw.get("/health/readiness", &[]).await.json();
            pred(&last)
        },
        Duration::from_secs(10),
    )
    .await;
    assert!(matched, "readiness never matched: {last}");
    last
}

async fn reload(gw: &Gateway, yaml: &str, generation: u64) {
    gw.rewrite_config(yaml);
    gw.signal("HUP");
    wait_readiness(gw, |b| b["config_generation"] == generation).await;
}

/// Chat requests fired at a model from several tasks until finished.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    handle: tokio::task::JoinHandle<Vec<String>>,
}

impl Load {
    /// Waits until `n` more requests have succeeded since the call (10 s at most): the load
    /// really runs across whatever the test does next.
    async fn progress(&self, n: usize) {
        let target = self.ok.load(Ordering::Relaxed) + n;
        let ok = wait_until(
            || self.ok.load(Ordering::Relaxed) >= target,
            Duration::from_secs(10),
        )
        .await;
        assert!(
            ok,
            "the load stalled at {} ok, {} failed",
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed)
        );
    }

    /// Stops the load; returns (ok, failures).
    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let failures = self.handle.await.unwrap();
        (self.ok.load(Ordering::Relaxed), failures)
    }
}

/// Fires chat requests at `model` from `tasks` tasks until [`Load::finish`].
fn load(port: u16, model: &'static str, tasks: usize) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let (stop2, ok2, failed2) = (stop.clone(), ok.clone(), failed.clone());
    let handle = tokio::spawn(async move {
        let failures = Arc::new(Mutex::new(Vec::new()));
        let mut handles = Vec::new();
        for _ in 0..tasks {
            let (stop, ok, failed, failures) = (
                stop2.clone(),
                ok2.clone(),
                failed2.clone(),
                failures.clone(),
            );
            handles.push(tokio::spawn(async move {
                let body = chat(model).to_string();
                while !stop.load(Ordering::Relaxed) {
                    let body = body.clone();
                    // A panic in the client (refused connection, cut response) is a failure too.
                    let r = tokio::spawn(async move {
                        request(
                            port,
                            "POST",
                            "/v1/chat/completions",
                            &[("content-type", "application/json")],
                            body.as_bytes(),
                        )
                        .await
                    })
                    .await;
                    match r {
                        Ok(resp) if resp.status == 200 => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(resp) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            failures.lock().unwrap().push(format!(
                                "{}: {}",
                                resp.status,
                                resp.text()
                            ))
                        }
                        Err(e) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            failures.lock().unwrap().push(format!("client: {e}"))
                        }
                    }
                }
            }));
        }
        for h in handles {
            let _ = h.await;
        }
        let failures = failures.lock().unwrap().clone();
        failures
    });
    Load {
        stop,
        ok,
        failed,
        handle,
    }
}

fn mock_group(name: &str, text: &str) -> String {
    format!(
        "  - model_name: {name}\n    litellm_params:\n      model: openai/{name}\n      mock_response: \"{text}\"\n"
    )
}

#[tokio::test]
async fn reload_adds_removes_and_changes_deployments() {
    let up = MockUpstream::start(|_| Reply::json(200, openai::completion("from upstream"))).await;
    let v1 = format!(
        "model_list:\n{}{}",
        mock_group("alpha", "alpha one"),
        mock_group("beta", "beta one")
    );
    let gw = Gateway::start(&v1);
    let ready = gw.get("/health/readiness", &[]).await.json();
    assert_eq!(ready["config_generation"], 1);
    assert!(ready.get("last_reload").is_none());
    assert_eq!(
        model_ids(&gw.get("/v1/models", &[]).await),
        ["alpha", "beta"]
    );

    // Remove beta, change alpha, add gamma (a real upstream).
    let v2 = format!(
        "model_list:\n{}  - model_name: gamma\n    litellm_params:\n      model: openai/gpt-4o\n      api_base: {}/v1\n      api_key: sk-x\n",
        mock_group("alpha", "alpha two"),
        up.base()
    );
    reload(&gw, &v2, 2).await;
    assert_eq!(
        model_ids(&gw.get("/v1/models", &[]).await),
        ["alpha", "gamma"]
    );
    let r = gw.post("/v1/chat/completions", &chat("alpha")).await;
    assert_eq!(r.json()["choices"][0]["message"]["content"], "alpha two");
    let r = gw.post("/v1/chat/completions", &chat("gamma")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "from upstream"
    );
    assert_eq!(up.count(), 1);
    gw.post("/v1/chat/completions", &chat("beta"))
        .await
        .expect_error(404);
    let ready = gw.get("/health/readiness", &[]).await.json();
    assert_eq!(ready["last_reload"]["result"], "ok");
    assert_eq!(ready["last_reload"]["generation"], 2);
    assert_eq!(ready["deployments"], 2);
}

#[tokio::test]
async fn broken_config_keeps_the_old_snapshot() {
    let gw = Gateway::start(&format!(
        "model_list:\n{}",
        mock_group("alpha", "still here")
    ));
    // A value of the wrong type: a validation error with a key path, not a YAML error.
    gw.rewrite_config(
        "model_list:\n  - model_name: alpha\n    litellm_params:\n      model: openai/gpt-4o\n      timeout: soon\n",
    );
    gw.signal("HUP");
    let ready = wait_readiness(&gw, |b| b.get("last_reload").is_some()).await;
    assert_eq!(ready["status"], "healthy");
    assert_eq!(ready["config_generation"], 1);
    assert_eq!(ready["last_reload"]["result"], "failed");
    assert_eq!(ready["last_reload"]["generation"], 1);
    let err = ready["last_reload"]["error"].as_str().unwrap();
    assert!(
        err.starts_with("model_list[0].litellm_params.timeout"),
        "{err}"
    );
    let r = gw.post("/v1/chat/completions", &chat("alpha")).await;
    assert_eq!(r.json()["choices"][0]["message"]["content"], "still here");
    let metrics = gw.get("/metrics", &[]).await.text();
    assert!(metrics.contains("switchboard_config_reloads_total{result=\"failed\"} 1"));
    assert!(metrics.contains("switchboard_config_generation 1"));
    assert!(gw.stderr().contains("model_list[0].litellm_params.timeout"));

    // Not even YAML: same.
    gw.rewrite_config("model_list: [\n");
    gw.signal("HUP");
    wait_readiness(&gw, |b| {
        b["last_reload"]["error"]
            .as_str()
            .unwrap_or("")
            .contains("YAML")
    })
    .await;
    // Fixed again: the generation moves on.
    reload(
        &gw,
        &format!("model_list:\n{}", mock_group("alpha", "fixed")),
        2,
    )
    .await;
    let r = gw.post("/v1/chat/completions", &chat("alpha")).await;
    assert_eq!(r.json()["choices"][0]["message"]["content"], "fixed");
}

#[tokio::test]
async fn reloads_under_load_fail_no_request_and_streams_finish() {
    let a = MockUpstream::start(|r| {
        if r.json()["stream"] == true {
            Reply::stream(
                "text/event-stream",
                &openai::sse(&["one", " two", " three", " four"], false),
                40,
                Duration::from_millis(60),
            )
        } else {
            Reply::json(200, openai::completion("from a"))
        }
    })
    .await;
    let b = MockUpstream::start(|_| Reply::json(200, openai::completion("from b"))).await;
    let dep = |name: &str, base: &str, id: &str| {
        format!("  - model_name: {name}\n    litellm_params:\n      model: openai/gpt-4o\n      api_base: {base}/v1\n      api_key: sk-x\n    model_info:\n      id: {id}\n")
    };
    let v1 = format!("model_list:\n{}", dep("steady", &a.base(), "a"));
    let gw = Gateway::start(&v1);

    // A slow stream that starts on generation 1.
    let mut stream = gw
        .post_stream("/v1/chat/completions", &json!({"model": "steady", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(stream.status, 200);

    let loader = load(gw.port, "steady", 4);
    loader.progress(10).await;
    // Add b, then change a (weight), then a broken file, then remove a.
    let v2 = format!(
        "model_list:\n{}{}",
        dep("steady", &a.base(), "a"),
        dep("steady", &b.base(), "b")
    );
    reload(&gw, &v2, 2).await;
    loader.progress(10).await;
    let v3 = format!(
        "model_list:\n{}{}",
        dep("steady", &a.base(), "a").replace("sk-x\n", "sk-x\n      weight: 3\n"),
        dep("steady", &b.base(), "b")
    );
    reload(&gw, &v3, 3).await;
    loader.progress(10).await;
    gw.rewrite_config("model_list:\n  - model_name: steady\n    litellm_params: {rpm: nope}\n");
    gw.signal("HUP");
    wait_readiness(&gw, |b| b["last_reload"]["result"] == "failed").await;
    loader.progress(10).await;
    let v4 = format!("model_list:\n{}", dep("steady", &b.base(), "b"));
    reload(&gw, &v4, 4).await;
    loader.progress(10).await;
    let (ok, failures) = loader.finish().await;
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(ok > 20, "only {ok} requests went through");
    // After the last reload only b answers.
    let r = gw.post("/v1/chat/completions", &chat("steady")).await;
    assert_eq!(r.json()["choices"][0]["message"]["content"], "from b");

    // The stream begun before all of this ends whole, on the deployment it started on.
    let body = stream.read_to_end().await;
    let resp = Response {
        status: 200,
        headers: vec![],
        body,
    };
    let chunks = openai_chunks(&resp);
    assert_eq!(stream_text(&chunks), "one two three four");
    assert!(resp.text().ends_with("data: [DONE]\n\n"));
    // Surviving deployment b kept its pooled connections across reloads: far fewer connections
    // than requests.
    assert!(b.count() > 5);
    assert!(
        b.connections.load(Ordering::Relaxed) < b.count(),
        "{} connections for {} requests",
        b.connections.load(Ordering::Relaxed),
        b.count()
    );
}

#[tokio::test]
async fn sigterm_drains_an_in_flight_stream_then_exits() {
    let up = MockUpstream::start(|_| {
        Reply::stream(
            "text/event-stream",
            &openai::sse(&["a", "b", "c", "d", "e", "f"], false),
            30,
            Duration::from_millis(80),
        )
    })
    .await;
    let dir = temp_dir();
    let yaml = format!(
        "model_list:\n  - model_name: slow\n    litellm_params:\n      model: openai/gpt-4o\n      api_base: {}/v1\n      api_key: sk-x\nswitchboard:\n  threads: 2\n  grace_period_seconds: 2\n  graceful_shutdown_timeout_seconds: 10\n  pid_file: {d}/sb.pid\n  upgrade_sock: {d}/sb.sock\n",
        up.base(),
        d = dir.display()
    );
    let mut gw = Gateway::start(&yaml);
    let mut stream = gw
        .post_stream("/v1/chat/completions", &json!({"model": "slow", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(stream.status, 200);
    let first = stream.next_chunk().await.unwrap();
    assert!(!first.is_empty());
    let term_at = Instant::now();
    gw.signal("TERM");
    // During the grace period the listener is open and health says shutting down.
    let mut r = None;
    let shutting_down = wait_until_async(
        async || {
            let resp = gw.get("/health/readiness", &[]).await;
            let done = resp.status == 503;
            r = Some(resp);
            done
        },
        Duration::from_secs(1),
    )
    .await;
    let r = r.unwrap();
    assert!(
        shutting_down,
        "readiness after SIGTERM: {} {}",
        r.status,
        r.text()
    );
    assert_eq!(r.json()["status"], "shutting_down");
    let r = gw.get("/health/liveliness", &[]).await;
    assert_eq!(r.status, 503);

    // The stream finishes whole.
    let mut rest = first;
    rest.extend(stream.read_to_end().await);
    let resp = Response {
        status: 200,
        headers: vec![],
        body: rest,
    };
    assert_eq!(stream_text(&openai_chunks(&resp)), "abcdef");
    // After the grace period (2 s) new connections are refused.
    assert!(
        gw.wait_not_listening(Duration::from_secs(10)).await,
        "still accepting long after the grace period"
    );
    assert!(
        term_at.elapsed() >= Duration::from_millis(1900),
        "the listener closed before the grace period ended"
    );
    let status = gw
        .exited(Duration::from_secs(10))
        .await
        .expect("exits after draining");
    assert!(status.success(), "{status}");
    // Grace (2 s) plus the drain timeout (10 s) would be 12 s.
    assert!(
        term_at.elapsed() < Duration::from_secs(9),
        "waited out the drain timeout instead of exiting when drained"
    );
    // The drained stream was logged.
    let log = gw.access_log();
    assert!(log
        .iter()
        .any(|l| l["model"] == "slow" && l["status"] == 200 && l["stream"] == true));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn zero_downtime_upgrade_under_load() {
    let up = MockUpstream::start(|_| Reply::json(200, openai::completion("hi"))).await;
    let yaml = format!(
        "model_list:\n  - model_name: m\n    litellm_params:\n      model: openai/gpt-4o\n      api_base: {}/v1\n      api_key: sk-x\n",
        up.base()
    );
    let mut old = Gateway::start(&yaml);
    let loader = load(old.port, "m", 3);
    loader.progress(10).await;
    let mut new = old.spawn_upgrade();
    // The new process listens on the upgrade socket, then polls it for the listeners once a
    // second, saying so (Pingora's transfer_fd).
    new.wait_for_stderr("No incoming socket transfer").await;
    assert!(new.running(), "upgraded process died: {}", new.stderr());
    old.signal("QUIT");
    let status = old
        .exited(Duration::from_secs(12))
        .await
        .expect("old process exits after handing over");
    assert!(status.success(), "{status}");
    // With the old process gone, the new one serves the load.
    loader.progress(10).await;
    let (ok, failures) = loader.finish().await;
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(ok > 20, "only {ok} requests went through");
    // The new process serves, and it served part of the load.
    let r = new.post("/v1/chat/completions", &chat("m")).await;
    assert_eq!(r.status, 200);
    assert!(new.running());
    // Access-log lines follow their responses: wait for them.
    assert!(
        wait_until(|| new.access_log().len() > 10, Duration::from_secs(10)).await,
        "new process served {} requests",
        new.access_log().len()
    );
    new.signal("TERM");
    assert!(new.exited(Duration::from_secs(5)).await.unwrap().success());
}

fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_use_litellm_names_and_move() {
    let up = MockUpstream::start(|r| {
        if r.json()["stream"] == true {
            Reply::stream(
                "text/event-stream",
                &openai::sse(&["x", "y"], true),
                64,
                Duration::ZERO,
            )
        } else {
            Reply::json(200, openai::completion("hi"))
        }
    })
    .await;
    let gw = Gateway::start(&format!(
        "model_list:\n  - model_name: g\n    litellm_params:\n      model: openai/gpt-4o\n      api_base: {}/v1\n      api_key: sk-x\n    model_info:\n      id: dep-1\n",
        up.base()
    ));
    for _ in 0..2 {
        assert_eq!(
            gw.post("/v1/chat/completions", &chat("g")).await.status,
            200
        );
    }
    let s = gw
        .post("/v1/chat/completions", &json!({"model": "g", "stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(s.status, 200);
    gw.post("/v1/chat/completions", &chat("no-such-model"))
        .await
        .expect_error(404);
    // Recorded in the logging phase, just after each response: wait for the last request's.
    gw.wait_for_metric(
        "litellm_proxy_failed_requests_metric_total",
        &["requested_model=\"__unknown__\""],
        |v| v == 1.0,
    )
    .await;
    gw.wait_for_metric(
        "litellm_total_tokens_total",
        &["requested_model=\"g\""],
        |v| v == 43.0,
    )
    .await;
    let r = gw.get("/metrics", &[]).await;
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let t = r.text();
    let key = "end_user=\"\",hashed_api_key=\"\"";
    let ok = format!("litellm_proxy_total_requests_metric_total{{api_key_alias=\"\",{key},requested_model=\"g\",status_code=\"200\",team=\"\",team_alias=\"\",user=\"\"}}");
    assert_eq!(metric(&t, &ok), 3.0, "{t}");
    let unknown = "litellm_proxy_failed_requests_metric_total{api_key_alias=\"\",end_user=\"\",exception_class=\"NotFoundError\",exception_status=\"404\",hashed_api_key=\"\",requested_model=\"__unknown__\",team=\"\",team_alias=\"\",user=\"\"}";
    assert_eq!(metric(&t, unknown), 1.0, "{t}");
    let tok = |name: &str| {
        format!("{name}{{api_key_alias=\"\",{key},model=\"gpt-4o\",requested_model=\"g\",team=\"\",team_alias=\"\",user=\"\"}}")
    };
    // Two completions (11 + 7) and one stream (5 + 2).
    assert_eq!(metric(&t, &tok("litellm_input_tokens_total")), 27.0);
    assert_eq!(metric(&t, &tok("litellm_output_tokens_total")), 16.0);
    assert_eq!(metric(&t, &tok("litellm_total_tokens_total")), 43.0);
    let dep = "api_base=\"http://127.0.0.1";
    assert!(t.contains(&format!(
        "litellm_deployment_success_responses_total{{{dep}"
    )));
    let state = t
        .lines()
        .find(|l| l.starts_with("litellm_deployment_state{"))
        .unwrap();
    assert!(
        state.contains("model_id=\"dep-1\"")
            && state.contains("litellm_model_name=\"openai/gpt-4o\"")
            && state.contains("api_provider=\"openai\""),
        "{state}"
    );
    assert!(t.contains("litellm_request_total_latency_metric_bucket{"));
    assert!(t.contains("litellm_llm_api_latency_metric_count{"));
    assert_eq!(metric(&t, &format!("litellm_llm_api_time_to_first_token_metric_count{{api_key_alias=\"\",{key},model=\"gpt-4o\",requested_model=\"g\",team=\"\",team_alias=\"\",user=\"\"}}")), 1.0);
    assert!(t.contains("litellm_overhead_latency_metric_sum{"));
    assert!(t.contains("switchboard_config_generation 1"));
    // Pooled upstream connections were reused.
    assert!(
        metric(
            &t,
            "switchboard_upstream_connections_total{reused=\"true\"}"
        ) >= 1.0,
        "{t}"
    );
    // Health and metrics requests are not LLM requests.
    assert!(!t.contains("requested_model=\"\""));

    // A second scrape sees the counters move.
    gw.post("/v1/chat/completions", &chat("g")).await;
    let t2 = gw
        .wait_for_metric(
            "litellm_proxy_total_requests_metric_total",
            &["requested_model=\"g\"", "status_code=\"200\""],
            |v| v >= 4.0,
        )
        .await;
    assert_eq!(metric(&t2, &ok), 4.0);
}

#[tokio::test]
async fn metrics_auth_is_optional() {
    let cfg = |require: bool| {
        format!(
            "model_list:\n{}general_settings:\n  master_key: sk-master\nlitellm_settings:\n  require_auth_for_metrics_endpoint: {require}\n",
            mock_group("m", "x")
        )
    };
    let open = Gateway::start(&cfg(false));
    assert_eq!(open.get("/metrics", &[]).await.status, 200);
    let closed = Gateway::start(&cfg(true));
    closed.get("/metrics", &[]).await.expect_error(401);
    let r = closed
        .get("/metrics", &[("authorization", "Bearer sk-master")])
        .await;
    assert_eq!(r.status, 200);
    // Vectors appear once they have a series; plain gauges always do.
    assert!(r.text().contains("switchboard_config_generation 1"));
}

#[tokio::test]
async fn access_log_has_one_json_line_per_request() {
    let up = MockUpstream::start(|_| {
        Reply::stream(
            "text/event-stream",
            &openai::sse(&["p", "q"], true),
            16,
            Duration::from_millis(5),
        )
    })
    .await;
    let gw = Gateway::start(&format!(
        "model_list:\n  - model_name: g\n    litellm_params:\n      model: openai/gpt-4o\n      api_base: {}/v1\n      api_key: sk-x\n    model_info:\n      id: dep-1\n",
        up.base()
    ));
    let r = gw
        .post_with(
            "/v1/chat/completions",
            &[("content-type", "application/json"), ("x-request-id", "req-123")],
            json!({"model": "g", "stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "hi"}]}).to_string().as_bytes(),
        )
        .await;
    assert_eq!(r.status, 200);
    let line = gw.wait_for_log_line(|l| l["request_id"] == "req-123").await;
    assert_eq!(line["model"], "g");
    assert_eq!(line["model_group"], "g");
    assert_eq!(line["deployment"], "dep-1");
    assert_eq!(line["provider"], "openai");
    assert_eq!(line["status"], 200);
    assert_eq!(line["attempts"], 1);
    assert_eq!(line["stream"], true);
    assert!(line["latency_ms"].as_f64().unwrap() > 0.0);
    assert!(line["ttft_ms"].as_f64().unwrap() > 0.0);
    assert!(line["ttft_ms"].as_f64() <= line["latency_ms"].as_f64());
    assert_eq!(line["prompt_tokens"], 5);
    assert_eq!(line["completion_tokens"], 2);
    assert_eq!(line["total_tokens"], 7);
    assert!(line["ts"].as_str().unwrap().ends_with('Z'));
    assert!(line.get("client_disconnected").is_none());
    // Exactly one line for that request.
    assert_eq!(
        gw.access_log()
            .iter()
            .filter(|l| l["request_id"] == "req-123")
            .count(),
        1
    );
}

/// SIGUSR2 (the systemd upgrade path): the running process starts its successor with
/// `--upgrade` itself, hands over the listeners and exits; no request fails.
#[tokio::test]
async fn sigusr2_self_upgrade_under_load() {
    let up = MockUpstream::start(|_| Reply::json(200, openai::completion("hi"))).await;
    let yaml = format!(
        "model_list:\n  - model_name: m\n    litellm_params:\n      model: openai/gpt-4o\n      api_base: {}/v1\n      api_key: sk-x\n",
        up.base()
    );
    let mut old = Gateway::start(&yaml);
    let loader = load(old.port, "m", 3);
    loader.progress(10).await;
    old.signal("USR2");
    let status = old
        .exited(Duration::from_secs(12))
        .await
        .expect("old process exits after handing over");
    assert!(status.success(), "{status}");
    let stderr = old.stderr();
    let new_pid: u32 = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|l| {
            l["msg"]
                .as_str()?
                .strip_prefix("SIGUSR2: started upgraded process ")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no successor logged: {stderr}"));
    // With the old process gone, the successor serves the load.
    loader.progress(10).await;
    let (ok, failures) = loader.finish().await;
    let alive = |pid: u32| {
        std::process::Command::new("kill")
            .args(["-0", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    };
    let served = old.post("/v1/chat/completions", &chat("m")).await.status;
    // Stop the successor (not a child of this test) before asserting.
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &new_pid.to_string()])
        .status();
    wait_until(|| !alive(new_pid), Duration::from_secs(10)).await;
    assert!(
        !alive(new_pid),
        "successor {new_pid} did not stop on SIGTERM"
    );
    assert_eq!(served, 200, "the successor serves on the same port");
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(ok > 20, "only {ok} requests went through");
}

/// sd_notify through a stand-in `$NOTIFY_SOCKET`: READY once listening, RELOADING/READY around
/// a reload, watchdog pings, STOPPING on SIGTERM.
#[tokio::test]
async fn tells_systemd_ready_reloading_watchdog_stopping() {
    let dir = temp_dir();
    let sock_path = dir.join("notify.sock");
    let sock = tokio::net::UnixDatagram::bind(&sock_path).unwrap();
    let mut gw = Gateway::start_with_env(
        &format!("model_list:\n{}", mock_group("m", "x")),
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "200000"),
        ],
    );
    let mut seen: Vec<String> = Vec::new();
    let ready = next_notification(&sock, &mut seen, "READY=1").await;
    assert!(ready.contains("STATUS=serving on 127.0.0.1:"), "{ready}");
    // The listener accepted before READY was sent.
    assert_eq!(gw.get("/health/readiness", &[]).await.status, 200);
    next_notification(&sock, &mut seen, "WATCHDOG=1").await;
    next_notification(&sock, &mut seen, "WATCHDOG=1").await;
    gw.signal("HUP");
    let reloading = next_notification(&sock, &mut seen, "RELOADING=1").await;
    assert!(reloading.contains("\nMONOTONIC_USEC="), "{reloading}");
    let ready = next_notification(&sock, &mut seen, "READY=1").await;
    assert!(ready.contains("config generation 2"), "{ready}");
    gw.signal("TERM");
    next_notification(&sock, &mut seen, "STOPPING=1").await;
    assert!(gw.exited(Duration::from_secs(5)).await.unwrap().success());
    let _ = std::fs::remove_dir_all(dir);
}

async fn next_notification(
    sock: &tokio::net::UnixDatagram,
    seen: &mut Vec<String>,
    want: &str,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout_at(deadline.into(), sock.recv(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {want} notification; got {seen:?}"))
            .unwrap();
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        seen.push(msg.clone());
        if msg.starts_with(want) {
            return msg;
        }
    }
}

/// A reload sees API keys changed in `$SWITCHBOARD_ENV_FILE` (the process environment is fixed
/// at start).
#[tokio::test]
async fn reload_rereads_the_environment_file() {
    let up = MockUpstream::start(|_| Reply::json(200, openai::completion("ok"))).await;
    let dir = temp_dir();
    let env_file = dir.join("switchboard.env");
    std::fs::write(&env_file, "UPSTREAM_KEY=sk-first\n").unwrap();
    let gw = Gateway::start_with_env(
        &format!(
            "model_list:\n  - model_name: m\n    litellm_params:\n      model: openai/gpt-4o\n      api_base: {}/v1\n      api_key: os.environ/UPSTREAM_KEY\n",
            up.base()
        ),
        &[("SWITCHBOARD_ENV_FILE", env_file.to_str().unwrap())],
    );
    assert_eq!(
        gw.post("/v1/chat/completions", &chat("m")).await.status,
        200
    );
    assert_eq!(up.last().header("authorization"), Some("Bearer sk-first"));
    std::fs::write(&env_file, "# rotated\nUPSTREAM_KEY=\"sk-second\"\n").unwrap();
    gw.signal("HUP");
    wait_readiness(&gw, |b| b["config_generation"] == 2).await;
    assert_eq!(
        gw.post("/v1/chat/completions", &chat("m")).await.status,
        200
    );
    assert_eq!(up.last().header("authorization"), Some("Bearer sk-second"));
    let _ = std::fs::remove_dir_all(dir);
}

/// A client that hangs up mid-stream is logged as such, and the request leaves the in-flight
/// count.
#[tokio::test]
async fn access_log_records_client_disconnect() {
    let up = MockUpstream::start(|_| {
        Reply::stream(
            "text/event-stream",
            &openai::sse(&["a", "b", "c", "d", "e", "f", "g", "h"], false),
            20,
            Duration::from_millis(100),
        )
    })
    .await;
    let gw = Gateway::start(&format!(
        "model_list:\n  - model_name: g\n    litellm_params:\n      model: openai/gpt-4o\n      api_base: {}/v1\n      api_key: sk-x\n",
        up.base()
    ));
    let mut s = gw
        .post_stream(
            "/v1/chat/completions",
            &json!({"model": "g", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert!(s.next_chunk().await.is_some());
    s.hang_up();
    let line = gw.wait_for_log_line(|l| l["model"] == "g").await;
    assert_eq!(line["client_disconnected"], true, "{line}");
    assert_eq!(line["status"], 200);
    let metrics = gw
        .wait_for_metric(
            "switchboard_deployment_in_flight_requests",
            &["model_group=\"g\""],
            |v| v == 0.0,
        )
        .await;
    // Only the scrape itself is in flight.
    assert!(
        metrics.contains("switchboard_in_flight_requests 1"),
        "{metrics}"
    );
    let dep = metrics
        .lines()
        .find(|l| l.starts_with("switchboard_deployment_in_flight_requests{model_group=\"g\""))
        .expect("per-deployment in-flight gauge");
    assert!(dep.ends_with(" 0"), "{dep}");
}

/// The value of the first series of `name` whose labels contain every one of `labels`.
fn series(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")) && labels.iter().all(|x| l.contains(x)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_count_every_attempt_cooldowns_and_fallbacks() {
    let bad = MockUpstream::start(|_| {
        Reply::json(
            500,
            json!({"error": {"message": "boom", "type": "server_error"}}),
        )
    })
    .await;
    let good = MockUpstream::start(|_| Reply::json(200, openai::completion("ok"))).await;
    let gw = Gateway::start(&format!(
        r#"
model_list:
  - model_name: primary
    litellm_params: {{model: openai/m, api_base: "{bad}/v1", api_key: k, order: 1}}
    model_info: {{id: bad}}
  - model_name: primary
    litellm_params: {{model: openai/m, api_base: "{good}/v1", api_key: k, order: 2, input_cost_per_token: 0.001, output_cost_per_token: 0.002}}
    model_info: {{id: good}}
  - model_name: limited
    litellm_params: {{model: openai/m, mock_response: litellm.RateLimitError, num_retries: 0}}
    model_info: {{id: limited-1}}
  - model_name: spare
    litellm_params: {{model: openai/m, mock_response: "from the spare"}}
    model_info: {{id: spare-1}}
router_settings:
  num_retries: 1
  cooldown_time: 30
  fallbacks: [{{limited: [spare]}}]
"#,
        bad = bad.base(),
        good = good.base()
    ));
    // Each request tries `bad` (priority tier 1) first, then retries on `good`. The second
    // failure in the minute puts `bad` over the 50% rule: it cools down.
    for _ in 0..2 {
        let r = gw.post("/v1/chat/completions", &chat("primary")).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let r = gw.post("/v1/chat/completions", &chat("limited")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "from the spare"
    );
    // Recorded just after each response: wait for the last request's.
    gw.wait_for_metric(
        "litellm_deployment_success_responses_total",
        &["model_id=\"good\""],
        |v| v == 2.0,
    )
    .await;
    let t = gw
        .wait_for_metric(
            "litellm_deployment_successful_fallbacks_total",
            &["requested_model=\"limited\""],
            |v| v == 1.0,
        )
        .await;

    // Every attempt counts against its own deployment, not only the one that answered.
    assert_eq!(
        series(
            &t,
            "litellm_deployment_failure_responses_total",
            &["model_id=\"bad\"", "exception_status=\"500\""]
        ),
        2.0,
        "{t}"
    );
    assert_eq!(
        series(
            &t,
            "litellm_deployment_total_requests_total",
            &["model_id=\"bad\""]
        ),
        2.0,
        "{t}"
    );
    assert_eq!(
        series(
            &t,
            "litellm_deployment_success_responses_total",
            &["model_id=\"good\""]
        ),
        2.0,
        "{t}"
    );
    assert_eq!(
        series(
            &t,
            "litellm_deployment_cooled_down_total",
            &["model_id=\"bad\"", "exception_status=\"500\""]
        ),
        1.0,
        "{t}"
    );
    assert_eq!(
        series(&t, "litellm_deployment_state", &["model_id=\"bad\""]),
        2.0,
        "{t}"
    );
    assert_eq!(
        series(&t, "litellm_deployment_state", &["model_id=\"good\""]),
        0.0,
        "{t}"
    );
    assert_eq!(
        series(
            &t,
            "switchboard_retries_total",
            &["model_group=\"primary\""]
        ),
        2.0,
        "{t}"
    );
    // The fallback from `limited` to `spare` answered.
    assert_eq!(
        series(
            &t,
            "litellm_deployment_successful_fallbacks_total",
            &["requested_model=\"limited\"", "fallback_model=\"spare\""]
        ),
        1.0,
        "{t}"
    );
    assert_eq!(
        series(
            &t,
            "litellm_deployment_failure_responses_total",
            &["model_id=\"limited-1\"", "exception_status=\"429\""]
        ),
        1.0,
        "{t}"
    );
}
