//! The realistic configs in `tests/configs/` (see its README): each passes `--check`, and the
//! gateway starts on each and lists its model groups. Where a call is made, the config's base
//! URL variables point at a local mock: no network.

mod support;

use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::*;

const KEY_PEM: &str = include_str!("fixtures/vertex_test_key.pem");
const MASTER_KEY: &str = "sk-test-master";

/// Configs that need value forms another change implements, with the key path `--check`
/// names while they are not accepted yet. Either outcome passes: accepted, or refused at
/// exactly that path (anything else is a regression).
/// Empty now: `litellm_azure_config.yaml`'s `tpm: 20_000` (YAML 1.1 integer) loads.
const PENDING: &[(&str, &str)] = &[];

fn configs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/configs")
}

fn config_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(configs_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// Every variable the configs read (`os.environ/…`, provider defaults), with `overrides`
/// (mock base URLs) on top. Keys are fake; base URLs not overridden are never dialled.
fn env(dir: &Path, overrides: &[(&str, String)]) -> Vec<(String, String)> {
    let key_file = dir.join("vertex-sa.json");
    let account = json!({
        "type": "service_account",
        "project_id": "acme-ml-prod",
        "private_key_id": "kid-1",
        "private_key": KEY_PEM,
        "client_email": "gateway@acme-ml-prod.iam.gserviceaccount.com",
        "token_uri": "http://127.0.0.1:9/token",
    });
    std::fs::write(&key_file, account.to_string()).unwrap();
    let mut vars: Vec<(String, String)> = [
        "AZURE_API_KEY",
        "OPENAI_API_KEY",
        "ANTHROPIC_API_KEY",
        "GROQ_API_KEY",
        "CEREBRAS_API_KEY",
        "NVIDIA_NIM_API_KEY",
        "GITHUB_API_KEY",
        "OPENROUTER_API_KEY",
        "CLOUDFLARE_API_KEY",
        "ZAI_API_KEY",
        "SAMBANOVA_API_KEY",
        "DEEPINFRA_API_KEY",
        "NEBIUS_API_KEY",
        "NOVITA_API_KEY",
        "HYPERBOLIC_API_KEY",
        "LAMBDA_API_KEY",
        "MOONSHOT_API_KEY",
        "DASHSCOPE_API_KEY",
        "FEATHERLESS_API_KEY",
        "NSCALE_API_KEY",
        "VLLM_KEY",
        "AZURE_EASTUS_KEY",
        "AZURE_SWEDEN_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "LANGFUSE_PROJECT1_PUBLIC",
        "LANGFUSE_PROJECT1_SECRET",
        "LANGFUSE_PROJECT2_PUBLIC",
        "LANGFUSE_PROJECT2_SECRET",
        "REDIS_PASSWORD",
    ]
    .iter()
    .map(|k| (k.to_string(), format!("test-{}", k.to_ascii_lowercase())))
    .collect();
    for (k, v) in [
        ("LITELLM_MASTER_KEY", MASTER_KEY.to_string()),
        ("CLOUDFLARE_ACCOUNT_ID", "acct-123".to_string()),
        (
            "AZURE_API_BASE",
            "https://acme.openai.azure.com".to_string(),
        ),
        (
            "AZURE_EASTUS_BASE",
            "https://acme-eastus.openai.azure.com".to_string(),
        ),
        ("OLLAMA_API_BASE", "http://127.0.0.1:9".to_string()),
        ("VLLM_BASE", "http://127.0.0.1:9/v1".to_string()),
        ("REDIS_HOST", "127.0.0.1".to_string()),
        ("REDIS_PORT", "9".to_string()),
        ("VERTEX_SA_FILE", key_file.display().to_string()),
    ] {
        vars.push((k.to_string(), v));
    }
    for (k, v) in overrides {
        vars.retain(|(name, _)| name != k);
        vars.push((k.to_string(), v.clone()));
    }
    vars
}

fn pending(name: &str) -> Option<&'static str> {
    PENDING.iter().find(|(f, _)| *f == name).map(|(_, p)| *p)
}

/// `--check` accepts every config (exit 0, its groups listed) but the pending ones, which may
/// only fail at their listed key path.
#[test]
fn every_config_passes_check() {
    let dir = temp_dir();
    let vars = env(&dir, &[]);
    let files = config_files();
    assert!(files.len() >= 6, "{files:?}");
    for file in &files {
        let name = file.file_name().unwrap().to_str().unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["--check", "--config"])
            .arg(file)
            .envs(vars.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        match pending(name) {
            Some(path) if !out.status.success() => {
                assert!(stderr.contains(path), "{name}: {stderr}");
                continue;
            }
            _ => assert!(out.status.success(), "{name}: {stderr}"),
        }
        assert!(stdout.contains(": OK"), "{name}: {stdout}");
        let text = std::fs::read_to_string(file).unwrap();
        let yaml: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        for entry in yaml["model_list"].as_sequence().unwrap() {
            let group = entry["model_name"].as_str().unwrap();
            assert!(
                stdout.contains(&format!("\n    {group}\n")),
                "{name}: group {group} not listed in {stdout}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// The gateway starts on every config and serves its group list.
#[tokio::test]
async fn the_gateway_starts_on_every_config() {
    let dir = temp_dir();
    let vars = env(&dir, &[]);
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    for file in config_files() {
        let name = file.file_name().unwrap().to_str().unwrap().to_string();
        let text = std::fs::read_to_string(&file).unwrap();
        if pending(&name).is_some() && !check_ok(&file, &vars) {
            continue;
        }
        let gw = Gateway::start_with_env(&text, &vars);
        let key = if text.contains("master_key: sk-1234") {
            "Bearer sk-1234".to_string()
        } else {
            format!("Bearer {MASTER_KEY}")
        };
        let r = gw.get("/v1/models", &[("authorization", &key)]).await;
        assert_eq!(r.status, 200, "{name}: {}", r.text());
        let listed = r.json()["data"].as_array().unwrap().len();
        assert!(listed >= 2, "{name}: {}", r.text());
    }
    let _ = std::fs::remove_dir_all(dir);
}

fn check_ok(file: &Path, vars: &[(&str, &str)]) -> bool {
    Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["--check", "--config"])
        .arg(file)
        .envs(vars.iter().copied())
        .output()
        .unwrap()
        .status
        .success()
}

fn chat(model: &str) -> Vec<u8> {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
        .to_string()
        .into_bytes()
}

async fn start(name: &str, overrides: &[(&str, String)]) -> (Gateway, PathBuf) {
    let dir = temp_dir();
    let vars = env(&dir, overrides);
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let text = std::fs::read_to_string(configs_dir().join(name)).unwrap();
    (Gateway::start_with_env(&text, &vars), dir)
}

/// The homelab config calls its clouds through the table's base URL variables; the master key
/// from the environment guards it.
#[tokio::test]
async fn homelab_calls_reach_groq_cerebras_and_nim() {
    let up = MockUpstream::start(|_| Reply::json(200, openai::completion("home"))).await;
    let v1 = format!("{}/v1", up.base());
    let (gw, dir) = start(
        "homelab.yaml",
        &[
            ("GROQ_API_BASE", format!("{}/openai/v1", up.base())),
            ("CEREBRAS_API_BASE", v1.clone()),
            ("NVIDIA_NIM_API_BASE", v1),
        ],
    )
    .await;
    let auth = format!("Bearer {MASTER_KEY}");
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    let r = gw
        .post_with("/v1/chat/completions", &[], &chat("fast"))
        .await;
    r.expect_error(401);
    for _ in 0..4 {
        let r = gw
            .post_with("/v1/chat/completions", &headers, &chat("fast"))
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let sent = up.last();
        match sent.json()["model"].as_str().unwrap() {
            "llama-3.3-70b-versatile" => {
                assert_eq!(sent.path, "/openai/v1/chat/completions");
                assert_eq!(
                    sent.header("authorization"),
                    Some("Bearer test-groq_api_key")
                );
            }
            "llama-3.3-70b" => {
                assert_eq!(sent.path, "/v1/chat/completions");
                assert_eq!(
                    sent.header("authorization"),
                    Some("Bearer test-cerebras_api_key")
                );
            }
            other => panic!("unexpected model {other}"),
        }
    }
    let r = gw
        .post_with("/v1/chat/completions", &headers, &chat("big"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.last().json()["model"], "meta/llama-3.1-405b-instruct");
    let _ = std::fs::remove_dir_all(dir);
}

/// The company gateway's first-tier Azure deployment gets its deployment path, api-version
/// and api-key from the config and the environment.
#[tokio::test]
async fn company_gateway_calls_azure_first() {
    let up = MockUpstream::start(|_| Reply::json(200, openai::completion("corp"))).await;
    let (gw, dir) = start("company_gateway.yaml", &[("AZURE_EASTUS_BASE", up.base())]).await;
    let auth = format!("Bearer {MASTER_KEY}");
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    let r = gw
        .post_with("/v1/chat/completions", &headers, &chat("gpt-4o"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["choices"][0]["message"]["content"], "corp");
    let sent = up.last();
    assert_eq!(
        sent.path,
        "/openai/deployments/gpt-4o-eastus/chat/completions?api-version=2024-10-21"
    );
    assert_eq!(sent.header("api-key"), Some("test-azure_eastus_key"));
    let _ = std::fs::remove_dir_all(dir);
}

/// The issue's rejected prefixes: `zai` is served from the table (text-completion-openai is
/// served since issue 16); sagemaker and auto_router load and answer 400 saying why.
#[tokio::test]
async fn issue10_prefixes_serve_or_say_why() {
    let up = MockUpstream::start(|_| Reply::json(200, openai::completion("glm"))).await;
    let (gw, dir) = start(
        "issue10_prefixes.yaml",
        &[("ZAI_API_BASE", format!("{}/api/paas/v4", up.base()))],
    )
    .await;
    let headers = [("content-type", "application/json")];
    let r = gw
        .post_with("/v1/chat/completions", &headers, &chat("zai"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = up.last();
    assert_eq!(sent.path, "/api/paas/v4/chat/completions");
    assert_eq!(
        sent.header("authorization"),
        Some("Bearer test-zai_api_key")
    );
    for (group, says) in [("sagemaker-llama", "SageMaker"), ("auto", "auto_router")] {
        let r = gw
            .post_with("/v1/chat/completions", &headers, &chat(group))
            .await;
        let msg = r.expect_error(400)["message"].as_str().unwrap().to_string();
        assert!(msg.contains(says), "{group}: {msg}");
    }
    assert_eq!(up.count(), 1);
    let _ = std::fs::remove_dir_all(dir);
}
