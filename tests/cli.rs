//! `switchboard --check`: validates a config, prints a summary, exits non-zero naming the key path.

mod support;

use std::process::Command;

fn check(yaml: &str) -> (bool, String, String) {
    let dir = support::temp_dir();
    let path = dir.join("c.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["--check", "--config"])
        .arg(&path)
        .env_remove("OPENAI_API_KEY")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(dir);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_summarises_a_good_config_and_lists_ignored_keys() {
    let (ok, out, err) = check(
        "model_list:\n  - model_name: gpt-4o\n    litellm_params: {model: openai/gpt-4o, api_key: sk-1}\n  - model_name: gpt-4o\n    litellm_params: {model: azure/dep, api_base: 'https://x.openai.azure.com', api_key: k}\nlitellm_settings:\n  success_callback: [langfuse]\n",
    );
    assert!(ok, "{err}");
    assert!(out.contains("1 model group(s), 2 deployment(s)"), "{out}");
    assert!(out.contains("azure"), "{out}");
    assert!(
        out.contains("litellm_settings.success_callback: not implemented"),
        "{out}"
    );
}

#[test]
fn check_names_the_key_path_of_an_error() {
    let (ok, _, err) = check(
        "model_list:\n  - model_name: a\n    litellm_params: {model: openai/x}\n  - model_name: b\n    litellm_params: {model: openai/x}\n  - model_name: c\n    litellm_params: {model: opnai/gpt-4o}\n",
    );
    assert!(!ok);
    assert!(
        err.contains("model_list[2].litellm_params.model: unknown provider \"opnai\""),
        "{err}"
    );

    let (ok, _, err) = check(
        "model_list:\n  - model_name: a\n    litellm_params: {model: openai/x, timeout: soon}\n",
    );
    assert!(!ok);
    assert!(
        err.contains("model_list[0].litellm_params.timeout"),
        "{err}"
    );

    let (ok, _, err) =
        check("model_list:\n  - model_name: a\n    litellm_params: {model: hosted_vllm/llama}\n");
    assert!(!ok);
    assert!(
        err.contains("model_list[0].litellm_params.api_base: required"),
        "{err}"
    );

    let (ok, _, err) = check("model_list: [\n");
    assert!(!ok);
    assert!(err.contains("not valid YAML"), "{err}");
}

#[test]
fn the_shipped_example_config_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/switchboard.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["--check", "--config", path])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
