//! Bedrock with ambient AWS credentials, end to end: the real gateway binary, with a temporary
//! HOME and shared config files, against mock credential endpoints on 127.0.0.1 (STS answering
//! `AssumeRoleWithWebIdentity` / `AssumeRole` in XML, an ECS/EKS container credentials endpoint,
//! EC2 instance metadata with IMDSv2 tokens) and a mock Bedrock runtime that records which key
//! signed each request. Each request's signature is recomputed with the secret the mock expects
//! for the access key id it names, so a request signed with the wrong secret fails.

mod support;

use serde_json::json;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::*;
use switchboard::providers::sigv4::{self, Credentials, SignableRequest};

const MODEL_ID: &str = "anthropic.claude-3-haiku-20240307-v1:0";

/// The secrets the mock Bedrock knows, by access key id.
type Secrets = Arc<std::sync::Mutex<HashMap<String, String>>>;

/// `YYYYMMDD'T'HHMMSS'Z'` as a time.
fn parse_amz_date(s: &str) -> Option<SystemTime> {
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (n(0..4)?, n(4..6)?, n(6..8)?);
    let (hh, mm, ss) = (n(9..11)?, n(11..13)?, n(13..15)?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    Some(UNIX_EPOCH + Duration::from_secs(secs as u64))
}

/// The access key id that signed `req`, if the signature is right for that key's secret.
fn verified_key(req: &Recorded, secrets: &Secrets) -> Result<String, String> {
    let auth = req.header("authorization").ok_or("no Authorization")?;
    let key_id = auth
        .split("Credential=")
        .nth(1)
        .and_then(|c| c.split('/').next())
        .ok_or("no Credential")?
        .to_string();
    let secret = secrets
        .lock()
        .unwrap()
        .get(&key_id)
        .cloned()
        .ok_or_else(|| format!("unknown access key id {key_id}"))?;
    let time =
        parse_amz_date(req.header("x-amz-date").ok_or("no x-amz-date")?).ok_or("bad x-amz-date")?;
    let creds = Credentials {
        access_key_id: key_id.clone(),
        secret_access_key: secret,
        session_token: req.header("x-amz-security-token").map(str::to_string),
    };
    let expected = sigv4::sign(
        &creds,
        "us-west-2",
        "bedrock",
        &SignableRequest {
            method: &req.method,
            path_and_query: &req.path,
            host: req.header("host").ok_or("no host")?,
            content_type: req.header("content-type"),
            body: &req.body,
        },
        time,
    );
    let expected_auth = &expected.last().unwrap().1;
    if expected_auth != auth {
        return Err(format!("signature mismatch for {key_id}"));
    }
    Ok(key_id)
}

/// A mock Bedrock runtime answering Converse for requests signed by a known key.
async fn bedrock_mock(secrets: Secrets) -> MockUpstream {
    MockUpstream::start(move |req| match verified_key(req, &secrets) {
        Ok(_) => Reply::json(
            200,
            json!({
                "output": {"message": {"role": "assistant", "content": [{"text": "hi"}]}},
                "stopReason": "end_turn",
                "usage": {"inputTokens": 3, "outputTokens": 1, "totalTokens": 4}
            }),
        ),
        Err(why) => Reply::json(403, json!({"message": why}))
            .with_header("x-amzn-ErrorType", "UnrecognizedClientException"),
    })
    .await
}

fn secrets(pairs: &[(&str, &str)]) -> Secrets {
    Arc::new(std::sync::Mutex::new(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    ))
}

/// A deployment per `(group, extra litellm_params lines)`, all against `base`.
fn config(base: &str, groups: &[(&str, &str)]) -> String {
    let mut yaml = String::from("model_list:\n");
    for (name, extra) in groups {
        yaml.push_str(&format!(
            "  - model_name: {name}\n    litellm_params:\n      model: bedrock/{MODEL_ID}\n      api_base: {base}\n      aws_region_name: us-west-2\n{extra}"
        ));
    }
    yaml
}

fn chat(model: &str) -> serde_json::Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello"}]})
}

/// An environment with no credentials of its own: a temporary HOME, shared files that do not
/// exist unless written, instance metadata off. Every test starts from it. (Variables cannot be
/// unset for the child, and the SDK treats an empty one as set: the tests assume the runner's
/// environment holds no AWS_* credential variables, as CI's does.)
fn clean_env(dir: &Path) -> Vec<(String, String)> {
    let p = |name: &str| dir.join(name).display().to_string();
    [
        ("HOME", p("home")),
        ("AWS_SHARED_CREDENTIALS_FILE", p("aws-credentials")),
        ("AWS_CONFIG_FILE", p("aws-config")),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn start(yaml: &str, env: &[(String, String)]) -> Gateway {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Gateway::start_with_env(yaml, &env)
}

fn set(env: &mut Vec<(String, String)>, key: &str, value: &str) {
    env.retain(|(k, _)| k != key);
    env.push((key.to_string(), value.to_string()));
}

/// One chat call that must succeed (a request waits for its source's first fetch); returns the
/// access key id that signed it upstream, and the request.
async fn signed_by(gw: &Gateway, up: &MockUpstream, model: &str) -> (String, Recorded) {
    let resp = gw.post("/v1/chat/completions", &chat(model)).await;
    assert_eq!(resp.status, 200, "{model}: {}", resp.text());
    assert_eq!(resp.json()["choices"][0]["message"]["content"], "hi");
    let sent = up.last();
    let auth = sent.header("authorization").unwrap();
    let key = auth
        .split("Credential=")
        .nth(1)
        .and_then(|c| c.split('/').next())
        .unwrap()
        .to_string();
    (key, sent)
}

#[tokio::test]
async fn shared_credentials_file_profiles_sign_requests() {
    let secrets = secrets(&[
        ("AKIDPROFILEDEV", "dev-secret"),
        ("ASIAPROFILETMP", "tmp-secret"),
        ("AKIDPROCESS", "process-secret"),
    ]);
    let up = bedrock_mock(secrets).await;
    let dir = temp_dir();
    std::fs::write(
        dir.join("aws-credentials"),
        "[default]\naws_access_key_id = AKIDDEFAULTNOTUSED\naws_secret_access_key = x\n\n\
         [dev]\naws_access_key_id = AKIDPROFILEDEV\naws_secret_access_key = dev-secret\n\n\
         [temporary]\naws_access_key_id = ASIAPROFILETMP\naws_secret_access_key = tmp-secret\naws_session_token = the-session-token\n",
    )
    .unwrap();
    // A profile of the config file whose credentials come from an external command.
    let script = dir.join("creds.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\necho '{\"Version\": 1, \"AccessKeyId\": \"AKIDPROCESS\", \"SecretAccessKey\": \"process-secret\"}'\n",
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&script)
        .status()
        .unwrap();
    std::fs::write(
        dir.join("aws-config"),
        format!(
            "[profile proc]\ncredential_process = {}\n",
            script.display()
        ),
    )
    .unwrap();
    let mut env = clean_env(&dir);
    // AWS_PROFILE drives the default chain of deployments that name no profile.
    set(&mut env, "AWS_PROFILE", "temporary");
    let gw = start(
        &config(
            &up.base(),
            &[
                ("dev", "      aws_profile_name: dev\n"),
                ("ambient", ""),
                ("process", "      aws_profile_name: proc\n"),
            ],
        ),
        &env,
    );
    let (key, sent) = signed_by(&gw, &up, "dev").await;
    assert_eq!(key, "AKIDPROFILEDEV", "{}", gw.stderr());
    assert!(sent.header("x-amz-security-token").is_none());
    let (key, sent) = signed_by(&gw, &up, "ambient").await;
    assert_eq!(key, "ASIAPROFILETMP");
    assert_eq!(
        sent.header("x-amz-security-token"),
        Some("the-session-token")
    );
    // The signed headers include the token (the mock recomputed the signature with it).
    assert!(sent
        .header("authorization")
        .unwrap()
        .contains("x-amz-security-token"));
    let (key, _) = signed_by(&gw, &up, "process").await;
    assert_eq!(key, "AKIDPROCESS");
}

/// An `AssumeRoleWithWebIdentity` / `AssumeRole` answer in STS's XML.
fn sts_answer(action: &str, key: &str, secret: &str, expires: SystemTime) -> Reply {
    let expiration = httpdate_rfc3339(expires);
    let body = format!(
        r#"<{action}Response xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <{action}Result>
    <Credentials>
      <AccessKeyId>{key}</AccessKeyId>
      <SecretAccessKey>{secret}</SecretAccessKey>
      <SessionToken>session-{key}</SessionToken>
      <Expiration>{expiration}</Expiration>
    </Credentials>
    <AssumedRoleUser>
      <AssumedRoleId>AROATEST:session</AssumedRoleId>
      <Arn>arn:aws:sts::123456789012:assumed-role/bedrock/session</Arn>
    </AssumedRoleUser>
  </{action}Result>
  <ResponseMetadata><RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId></ResponseMetadata>
</{action}Response>"#
    );
    Reply::bytes(200, "text/xml", body.into_bytes())
}

/// RFC 3339 UTC (`2026-11-30T20:00:00Z`).
fn httpdate_rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The form fields of an STS query request.
fn form(req: &Recorded) -> HashMap<String, String> {
    String::from_utf8_lossy(&req.body)
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), percent_decode(v)))
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("00");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn web_identity_and_assume_role_against_a_mock_sts() {
    let secrets = secrets(&[
        ("ASIAIRSA", "irsa-secret"),
        ("ASIALITELLMWEB", "web-secret"),
        ("ASIAASSUMED", "assumed-secret"),
    ]);
    let up = bedrock_mock(secrets).await;
    let sts = MockUpstream::start(|req| {
        let f = form(req);
        let hour = SystemTime::now() + Duration::from_secs(3600);
        match f.get("Action").map(String::as_str) {
            Some("AssumeRoleWithWebIdentity") => match (
                f.get("WebIdentityToken").map(String::as_str),
                f.get("RoleArn").map(String::as_str),
            ) {
                (Some("irsa-jwt-from-file"), Some("arn:aws:iam::123456789012:role/irsa")) => {
                    sts_answer("AssumeRoleWithWebIdentity", "ASIAIRSA", "irsa-secret", hour)
                }
                (Some("litellm-jwt"), Some("arn:aws:iam::123456789012:role/web"))
                    if f.get("RoleSessionName").map(String::as_str) == Some("litellm-session") =>
                {
                    sts_answer(
                        "AssumeRoleWithWebIdentity",
                        "ASIALITELLMWEB",
                        "web-secret",
                        hour,
                    )
                }
                _ => Reply::bytes(400, "text/xml", b"<ErrorResponse><Error><Type>Sender</Type><Code>InvalidIdentityToken</Code><Message>bad token</Message></Error></ErrorResponse>".to_vec()),
            },
            // AssumeRole is signed with the base keys (STS's own SigV4, service "sts").
            Some("AssumeRole")
                if req
                    .header("authorization")
                    .is_some_and(|a| a.contains("Credential=AKIDBASE/") && a.contains("/sts/aws4_request"))
                    && f.get("RoleArn").map(String::as_str) == Some("arn:aws:iam::123456789012:role/assumed")
                    && f.get("ExternalId").map(String::as_str) == Some("ext-1") =>
            {
                sts_answer("AssumeRole", "ASIAASSUMED", "assumed-secret", hour)
            }
            _ => Reply::bytes(403, "text/xml", b"<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>no</Message></Error></ErrorResponse>".to_vec()),
        }
    })
    .await;
    let dir = temp_dir();
    std::fs::write(dir.join("irsa-token"), "irsa-jwt-from-file").unwrap();
    let mut env = clean_env(&dir);
    // EKS/IRSA: the default chain's web identity provider, its STS pointed at the mock.
    set(
        &mut env,
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        &dir.join("irsa-token").display().to_string(),
    );
    set(
        &mut env,
        "AWS_ROLE_ARN",
        "arn:aws:iam::123456789012:role/irsa",
    );
    set(&mut env, "AWS_ENDPOINT_URL_STS", &sts.base());
    let sts_endpoint = sts.base();
    let gw = start(
        &config(
            &up.base(),
            &[
                ("irsa", ""),
                (
                    "litellm-web",
                    "      aws_web_identity_token: litellm-jwt\n      aws_role_name: arn:aws:iam::123456789012:role/web\n      aws_session_name: litellm-session\n",
                ),
                (
                    "assumed",
                    &format!("      aws_role_name: arn:aws:iam::123456789012:role/assumed\n      aws_external_id: ext-1\n      aws_access_key_id: AKIDBASE\n      aws_secret_access_key: base-secret\n      aws_sts_endpoint: {sts_endpoint}\n"),
                ),
            ],
        ),
        &env,
    );
    let (key, sent) = signed_by(&gw, &up, "irsa").await;
    assert_eq!(key, "ASIAIRSA");
    assert_eq!(
        sent.header("x-amz-security-token"),
        Some("session-ASIAIRSA")
    );
    let (key, _) = signed_by(&gw, &up, "litellm-web").await;
    assert_eq!(key, "ASIALITELLMWEB");
    let (key, sent) = signed_by(&gw, &up, "assumed").await;
    assert_eq!(key, "ASIAASSUMED");
    assert_eq!(
        sent.header("x-amz-security-token"),
        Some("session-ASIAASSUMED")
    );
    // One STS call per source, not one per request.
    let before = sts.requests().len();
    for model in ["irsa", "litellm-web", "assumed"] {
        signed_by(&gw, &up, model).await;
    }
    assert_eq!(sts.requests().len(), before);
}

#[tokio::test]
async fn container_credentials_are_refreshed_before_they_expire() {
    let secrets = secrets(&[]);
    let up = bedrock_mock(secrets.clone()).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let (calls_in, secrets_in) = (calls.clone(), secrets.clone());
    // Each answer is a new key that expires 4 s later: refreshed at half-life.
    let container = MockUpstream::start(move |req| {
        if req.header("authorization") != Some("container-auth-token") {
            return Reply::json(401, json!({"message": "no token"}));
        }
        let n = calls_in.fetch_add(1, Ordering::SeqCst) + 1;
        let key = format!("ASIACONTAINER{n}");
        secrets_in
            .lock()
            .unwrap()
            .insert(key.clone(), format!("secret-{n}"));
        Reply::json(
            200,
            json!({
                "AccessKeyId": key,
                "SecretAccessKey": format!("secret-{n}"),
                "Token": format!("token-{n}"),
                "Expiration": httpdate_rfc3339(SystemTime::now() + Duration::from_secs(4)),
            }),
        )
    })
    .await;
    let dir = temp_dir();
    let mut env = clean_env(&dir);
    set(
        &mut env,
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        &format!("{}/v2/credentials", container.base()),
    );
    set(
        &mut env,
        "AWS_CONTAINER_AUTHORIZATION_TOKEN",
        "container-auth-token",
    );
    let gw = start(&config(&up.base(), &[("ecs", "")]), &env);
    let (first, sent) = signed_by(&gw, &up, "ecs").await;
    assert!(first.starts_with("ASIACONTAINER"), "{first}");
    let token = sent.header("x-amz-security-token").unwrap().to_string();
    assert_eq!(token, format!("token-{}", &first["ASIACONTAINER".len()..]));
    // Fetched again in the background, without requests.
    let start_calls = calls.load(Ordering::SeqCst);
    assert!(
        wait_until(
            || calls.load(Ordering::SeqCst) >= start_calls + 2,
            Duration::from_secs(30)
        )
        .await,
        "the container credentials were not refreshed ({} calls)",
        calls.load(Ordering::SeqCst)
    );
    let (later, _) = signed_by(&gw, &up, "ecs").await;
    assert_ne!(later, first, "requests sign with the refreshed credentials");
    assert!(container
        .requests()
        .iter()
        .all(|r| r.path == "/v2/credentials"));
}

#[tokio::test]
async fn instance_metadata_with_imdsv2_tokens() {
    let secrets = secrets(&[("ASIAINSTANCE", "instance-secret")]);
    let up = bedrock_mock(secrets).await;
    let imds = MockUpstream::start(|req| {
        let token_ok = req.header("x-aws-ec2-metadata-token") == Some("imds-session");
        match (req.method.as_str(), req.path.as_str()) {
            ("PUT", "/latest/api/token")
                if req.header("x-aws-ec2-metadata-token-ttl-seconds").is_some() =>
            {
                Reply::bytes(200, "text/plain", b"imds-session".to_vec())
                    .with_header("x-aws-ec2-metadata-token-ttl-seconds", "21600")
            }
            ("GET", "/latest/meta-data/iam/security-credentials/") if token_ok => {
                Reply::bytes(200, "text/plain", b"bedrock-role".to_vec())
            }
            ("GET", "/latest/meta-data/iam/security-credentials/bedrock-role") if token_ok => {
                Reply::json(
                    200,
                    json!({
                        "Code": "Success",
                        "Type": "AWS-HMAC",
                        "AccessKeyId": "ASIAINSTANCE",
                        "SecretAccessKey": "instance-secret",
                        "Token": "instance-token",
                        "Expiration": httpdate_rfc3339(SystemTime::now() + Duration::from_secs(6 * 3600)),
                    }),
                )
            }
            _ => Reply::json(401, json!({"message": "unauthorized"})),
        }
    })
    .await;
    let dir = temp_dir();
    let mut env = clean_env(&dir);
    set(&mut env, "AWS_EC2_METADATA_DISABLED", "false");
    set(&mut env, "AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds.base());
    let gw = start(&config(&up.base(), &[("ec2", "")]), &env);
    let (key, sent) = signed_by(&gw, &up, "ec2").await;
    assert_eq!(key, "ASIAINSTANCE");
    assert_eq!(sent.header("x-amz-security-token"), Some("instance-token"));
}

#[tokio::test]
async fn no_credentials_is_a_clear_error_not_a_hang() {
    let up = bedrock_mock(secrets(&[])).await;
    let dir = temp_dir();
    let env = clean_env(&dir);
    let yaml = config(&up.base(), &[("nothing", "")]);
    let gw = start(&yaml, &env);
    // A warning at load, naming the fix.
    let line = gw.wait_for_stderr("no AWS credentials").await;
    assert!(line.contains("aws_profile_name"), "{line}");
    let resp = gw.post("/v1/chat/completions", &chat("nothing")).await;
    let err = resp.expect_error(500);
    let msg = err["message"].as_str().unwrap();
    assert!(
        msg.contains("No AWS credentials for bedrock deployment model_list[0] (nothing)"),
        "{msg}"
    );
    assert!(msg.contains("aws_access_key_id"), "{msg}");
    // Every call says so (no cooldown hides the reason behind "no deployment available").
    for _ in 0..4 {
        let resp = gw.post("/v1/chat/completions", &chat("nothing")).await;
        let err = resp.expect_error(500);
        assert!(
            err["message"]
                .as_str()
                .unwrap()
                .contains("No AWS credentials"),
            "{err}"
        );
    }
    assert!(up.requests().is_empty(), "nothing unsigned goes upstream");

    // `--check` says where the credentials would come from, without secrets.
    let mut check_env = env.clone();
    set(&mut check_env, "AWS_PROFILE", "ops");
    let config_path = dir.join("check.yaml");
    std::fs::write(
        &config_path,
        config(
            &up.base(),
            &[
                ("ambient", ""),
                (
                    "static",
                    "      aws_access_key_id: AKIDSTATIC\n      aws_secret_access_key: very-secret-value\n",
                ),
                ("profile", "      aws_profile_name: dev\n"),
            ],
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["--check", "--config"])
        .arg(&config_path)
        .envs(check_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("credentials: the default AWS credential chain: AWS_PROFILE \"ops\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("credentials: static access key"),
        "{stdout}"
    );
    assert!(stdout.contains("credentials: profile \"dev\""), "{stdout}");
    assert!(!stdout.contains("very-secret-value"), "{stdout}");
}

/// Kills the daemonized gateway (by the pid it wrote) when the test ends, however it ends.
struct DaemonGuard(std::path::PathBuf);

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        if let Some(pid) = std::fs::read_to_string(&self.0)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
        {
            let _ = std::process::Command::new("kill")
                .arg(pid.to_string())
                .status();
        }
    }
}

#[tokio::test]
async fn daemon_mode_fetches_credentials_after_the_fork() {
    // `--daemon` forks after the config is built: a fetch still running then (this one takes
    // a second) must be done again in the child, whose threads start afresh.
    let secrets = secrets(&[("AKIDSLOWPROCESS", "slow-secret")]);
    let up = bedrock_mock(secrets).await;
    let dir = temp_dir();
    let script = dir.join("slow.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nsleep 1\necho '{\"Version\": 1, \"AccessKeyId\": \"AKIDSLOWPROCESS\", \"SecretAccessKey\": \"slow-secret\"}'\n",
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&script)
        .status()
        .unwrap();
    std::fs::write(
        dir.join("aws-config"),
        format!(
            "[profile slow]\ncredential_process = {}\n",
            script.display()
        ),
    )
    .unwrap();
    let pid_file = dir.join("daemon.pid");
    let yaml = format!(
        "{}switchboard:\n  pid_file: {}\n  upgrade_sock: {}\n  error_log: {}\n",
        config(&up.base(), &[("slow", "      aws_profile_name: slow\n")]),
        pid_file.display(),
        dir.join("daemon.sock").display(),
        dir.join("daemon.log").display(),
    );
    std::fs::write(dir.join("daemon.yaml"), yaml).unwrap();
    let lease = reserve_port();
    let _guard = DaemonGuard(pid_file.clone());
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("--config")
        .arg(dir.join("daemon.yaml"))
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &lease.port.to_string(),
            "--daemon",
        ])
        .envs(clean_env(&dir))
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        wait_until_async(
            async || tokio::net::TcpStream::connect(("127.0.0.1", lease.port))
                .await
                .is_ok(),
            Duration::from_secs(20)
        )
        .await,
        "the daemon did not listen: {}",
        std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default()
    );
    let resp = request(
        lease.port,
        "POST",
        "/v1/chat/completions",
        &[("content-type", "application/json")],
        chat("slow").to_string().as_bytes(),
    )
    .await;
    assert_eq!(
        resp.status,
        200,
        "{} / {}",
        resp.text(),
        std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default()
    );
    assert!(up
        .last()
        .header("authorization")
        .unwrap()
        .contains("Credential=AKIDSLOWPROCESS/"));
}
