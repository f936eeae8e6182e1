//! `switchboard --check`: validates a config, prints a summary, exits non-zero naming the key path.

mod support;

use std::process::Command;

fn check(yaml: &str) -> (bool, String, String) {
    check_with(&["--check"], yaml).map_code()
}

struct CheckOutput {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl CheckOutput {
    fn map_code(self) -> (bool, String, String) {
        (self.code == Some(0), self.stdout, self.stderr)
    }
}

fn check_with(args: &[&str], yaml: &str) -> CheckOutput {
    let dir = support::temp_dir();
    let path = dir.join("c.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(args)
        .arg("--config")
        .arg(&path)
        .env_remove("OPENAI_API_KEY")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(dir);
    CheckOutput {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn check_summarises_a_good_config_and_lists_ignored_keys() {
    let (ok, out, err) = check(
        "model_list:\n  - model_name: gpt-4o\n    litellm_params: {model: openai/gpt-4o, api_key: sk-1}\n  - model_name: gpt-4o\n    litellm_params: {model: azure/dep, api_base: 'https://x.openai.azure.com', api_key: k}\nlitellm_settings:\n  success_callback: [datadog]\n",
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

/// An unknown provider, and providers LiteLLM has that Switchboard does not serve, no longer
/// fail the config: each is a warning naming its key path, listed by `--check` (exit 0), and
/// the other groups are listed as usual.
#[test]
fn check_lists_deployments_that_cannot_be_called_as_warnings() {
    let yaml = "model_list:\n  - model_name: a\n    litellm_params: {model: openai/x, api_key: k}\n  - model_name: b\n    litellm_params: {model: cerebras/llama3.1-8b, api_key: k}\n  - model_name: c\n    litellm_params: {model: opnai/gpt-4o}\n  - model_name: d\n    litellm_params: {model: sagemaker/jumpstart-llama}\n  - model_name: e\n    litellm_params: {model: auto_router/router}\n  - model_name: f\n    litellm_params: {model: text-completion-openai/gpt-3.5-turbo-instruct, api_key: k}\n  - model_name: g\n    litellm_params: {model: replicate/meta/llama-3}\n";
    let out = check_with(&["--check"], yaml);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let o = &out.stdout;
    assert!(o.contains("7 model group(s), 7 deployment(s)"), "{o}");
    assert!(
        o.contains("- cerebras cerebras/llama3.1-8b @ https://api.cerebras.ai"),
        "{o}"
    );
    // text-completion-openai is served (issue 16): no warning for `f`.
    assert!(o.contains("4 warning(s)"), "{o}");
    for (i, what) in [
        (2, "unknown provider \"opnai\""),
        (3, "provider \"sagemaker\": SageMaker endpoints"),
        (4, "provider \"auto_router\""),
        (
            6,
            "provider \"replicate\" is a LiteLLM provider Switchboard does not serve yet",
        ),
    ] {
        let line = format!("model_list[{i}].litellm_params.model: {what}");
        assert!(o.contains(&line), "missing {line:?} in {o}");
    }
    assert!(
        o.contains("calls to model group \"c\" on this deployment fail with 400"),
        "{o}"
    );
    // A prefix that is no provider, with a known endpoint as api_base: LiteLLM infers the
    // provider from the endpoint, and so does Switchboard (no warning).
    let out = check_with(
        &["--check", "--strict"],
        "model_list:\n  - model_name: llama\n    litellm_params: {model: meta-llama/Llama-3.3-70B-Instruct, api_base: 'https://api.deepinfra.com/v1/openai', api_key: k}\n",
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout
            .contains("- deepinfra meta-llama/Llama-3.3-70B-Instruct @ https://api.deepinfra.com"),
        "{}",
        out.stdout
    );
    // A mock deployment is never called upstream: whatever its prefix, no warning.
    let out = check_with(
        &["--check"],
        "model_list:\n  - model_name: m\n    litellm_params: {model: nowhere/x, mock_response: hi}\n",
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("no warnings"), "{}", out.stdout);
}

/// `--check --strict` turns every warning (ignored keys, deployments that cannot be called)
/// into a failure for CI: exit 1, each warning on stderr. Without warnings it passes, and
/// `--strict` alone (without `--check`) is refused.
#[test]
fn check_strict_fails_on_any_warning_and_prints_each() {
    let yaml = "model_list:\n  - model_name: a\n    litellm_params: {model: openai/x, api_key: k}\n  - model_name: c\n    litellm_params: {model: opnai/gpt-4o}\nlitellm_settings:\n  success_callback: [datadog]\n";
    let relaxed = check_with(&["--check"], yaml);
    assert_eq!(relaxed.code, Some(0), "{}", relaxed.stderr);
    let strict = check_with(&["--check", "--strict"], yaml);
    assert_eq!(strict.code, Some(1), "{}", strict.stdout);
    let e = &strict.stderr;
    assert!(
        e.contains("warning: model_list[1].litellm_params.model: unknown provider \"opnai\""),
        "{e}"
    );
    assert!(
        e.contains("warning: litellm_settings.success_callback: not implemented"),
        "{e}"
    );
    assert!(e.contains("--strict: 2 warning(s)"), "{e}");

    let clean = check_with(
        &["--check", "--strict"],
        "model_list:\n  - model_name: a\n    litellm_params: {model: groq/llama-3.1-8b-instant, api_key: k}\n",
    );
    assert_eq!(clean.code, Some(0), "{}", clean.stderr);
    assert!(clean.stdout.contains("no warnings"), "{}", clean.stdout);

    // An error is still an error (exit 2), strict or not.
    let broken = check_with(
        &["--check", "--strict"],
        "model_list:\n  - model_name: a\n    litellm_params: {model: openai/x, timeout: soon}\n",
    );
    assert_eq!(broken.code, Some(2), "{}", broken.stdout);

    let alone = check_with(&["--strict"], yaml);
    assert_eq!(alone.code, Some(2), "{}", alone.stdout);
    assert!(alone.stderr.contains("--check"), "{}", alone.stderr);
}
