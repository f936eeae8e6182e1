//! Google OAuth2 access tokens from a service-account key, as google-auth does it
//! (`google/oauth2/service_account.py`): an RS256 JWT assertion (header `kid` = the key's id;
//! claims `iss`, `scope`, `aud` = `https://oauth2.googleapis.com/token`, `iat`, `exp` = iat + 1 h)
//! POSTed form-encoded to the key file's `token_uri`. [`TokenSource`] caches the token and
//! refreshes it ahead of expiry: readers load the cached token lock-free, and one refresher at a
//! time fetches a new one (others keep using the still-valid token, or wait for that one fetch
//! when there is none), so a burst of requests never causes a burst of token requests.

use super::openai_compat::split_origin;
use super::UpstreamRequest;
use crate::error::{ErrorKind, GatewayError, GatewayResult};
use crate::upstream::{Endpoint, PeerSettings, UpstreamClient};
use arc_swap::ArcSwapOption;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::{HeaderValue, Method};
use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use serde::Deserialize;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The scope LiteLLM asks for on Vertex.
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// google-auth's `_DEFAULT_TOKEN_URI`: the JWT audience, whatever `token_uri` says.
pub const TOKEN_AUDIENCE: &str = "https://oauth2.googleapis.com/token";
const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Assertion lifetime google-auth uses (`_DEFAULT_TOKEN_LIFETIME_SECS`).
const ASSERTION_LIFETIME_SECS: u64 = 3600;
/// A token is replaced this long before it expires (or at half its life, if shorter).
const REFRESH_EARLY: Duration = Duration::from_secs(300);
/// Longest wait for the token endpoint.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest token lifetime believed (seconds), whatever `expires_in` says.
const MAX_TOKEN_LIFETIME: u64 = 86_400;
/// Largest token response read.
const MAX_TOKEN_RESPONSE: usize = 64 * 1024;

/// A parsed service-account key.
pub struct ServiceAccount {
    pub client_email: String,
    pub private_key_id: String,
    pub token_uri: String,
    pub project_id: Option<String>,
    key: RsaKeyPair,
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("client_email", &self.client_email)
            .field("private_key_id", &self.private_key_id)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct KeyFile {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    client_email: Option<String>,
    #[serde(default)]
    private_key: Option<String>,
    #[serde(default)]
    private_key_id: Option<String>,
    #[serde(default)]
    token_uri: Option<String>,
    #[serde(default)]
    project_id: Option<String>,
}

impl ServiceAccount {
    /// Reads `vertex_credentials`: a JSON object (a YAML mapping in the config), a JSON string,
    /// or a path to a key file; with none given, the file named by
    /// `GOOGLE_APPLICATION_CREDENTIALS`. `Ok(None)` when there is nothing to read. Errors are
    /// messages for a `ConfigError` at `vertex_credentials`.
    pub fn from_config(
        value: Option<&serde_json::Value>,
    ) -> Result<Option<ServiceAccount>, String> {
        match value {
            Some(serde_json::Value::Object(_)) => {
                let file: KeyFile = serde_json::from_value(value.cloned().unwrap_or_default())
                    .map_err(|e| format!("not a service-account key: {e}"))?;
                Self::from_key_file(file).map(Some)
            }
            Some(serde_json::Value::String(s)) if s.trim_start().starts_with('{') => {
                Self::from_json(s).map(Some)
            }
            Some(serde_json::Value::String(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    format!("cannot read the service-account key file \"{path}\": {e}")
                })?;
                Self::from_json(&text)
                    .map(Some)
                    .map_err(|e| format!("{path}: {e}"))
            }
            Some(serde_json::Value::Null) | None => {
                match std::env::var("GOOGLE_APPLICATION_CREDENTIALS") {
                    Ok(path) if !path.is_empty() => {
                        let text = std::fs::read_to_string(&path).map_err(|e| {
                            format!(
                                "cannot read GOOGLE_APPLICATION_CREDENTIALS file \"{path}\": {e}"
                            )
                        })?;
                        Self::from_json(&text).map(Some).map_err(|e| {
                            format!("GOOGLE_APPLICATION_CREDENTIALS file \"{path}\": {e}")
                        })
                    }
                    _ => Ok(None),
                }
            }
            Some(_) => Err(
                "expected a service-account key: a file path, a JSON string, or a mapping".into(),
            ),
        }
    }

    /// Parses a service-account key file's JSON text.
    pub fn from_json(text: &str) -> Result<ServiceAccount, String> {
        let file: KeyFile = serde_json::from_str(text)
            .map_err(|e| format!("not a valid service-account JSON key ({e})"))?;
        Self::from_key_file(file)
    }

    fn from_key_file(file: KeyFile) -> Result<ServiceAccount, String> {
        match file.kind.as_deref() {
            Some("service_account") | None => {}
            Some(other) => {
                return Err(format!(
                    "credentials of type \"{other}\" are not supported; use a service-account key (\"type\": \"service_account\")"
                ))
            }
        }
        let missing = |k: &str| format!("the service-account key has no \"{k}\"");
        let client_email = file
            .client_email
            .filter(|s| !s.is_empty())
            .ok_or_else(|| missing("client_email"))?;
        let pem = file
            .private_key
            .filter(|s| !s.is_empty())
            .ok_or_else(|| missing("private_key"))?;
        let token_uri = file
            .token_uri
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| TOKEN_AUDIENCE.to_string());
        if split_origin(&token_uri).is_none() {
            return Err(format!(
                "token_uri \"{token_uri}\" must be an http:// or https:// URL"
            ));
        }
        let der = rustls_pemfile::pkcs8_private_keys(&mut pem.as_bytes())
            .next()
            .ok_or_else(|| {
                "private_key holds no PKCS#8 \"BEGIN PRIVATE KEY\" PEM block".to_string()
            })?
            .map_err(|e| format!("private_key is not valid PEM ({e})"))?;
        let key = RsaKeyPair::from_pkcs8(der.secret_pkcs8_der())
            .map_err(|e| format!("private_key is not a usable RSA key ({e})"))?;
        Ok(ServiceAccount {
            client_email,
            private_key_id: file.private_key_id.unwrap_or_default(),
            token_uri,
            project_id: file.project_id.filter(|s| !s.is_empty()),
            key,
        })
    }

    /// The signed JWT assertion for a token request issued at `iat` (Unix seconds).
    pub fn assertion(&self, scope: &str, iat: u64) -> GatewayResult<String> {
        let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": self.private_key_id});
        let claims = serde_json::json!({
            "iss": self.client_email,
            "scope": scope,
            "aud": TOKEN_AUDIENCE,
            "iat": iat,
            "exp": iat + ASSERTION_LIFETIME_SECS,
        });
        let mut jwt = String::with_capacity(1024);
        URL_SAFE_NO_PAD.encode_string(header.to_string(), &mut jwt);
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(claims.to_string(), &mut jwt);
        let mut signature = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                jwt.as_bytes(),
                &mut signature,
            )
            .map_err(|_| GatewayError::internal("Signing the Google OAuth2 assertion failed."))?;
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(&signature, &mut jwt);
        Ok(jwt)
    }

    /// The public key, DER (PKCS#1 RSAPublicKey), for verifying assertions in tests.
    pub fn public_key_der(&self) -> &[u8] {
        self.key.public().as_ref()
    }
}

/// A cached access token.
#[derive(Debug)]
pub struct AccessToken {
    /// `Bearer <token>`, ready for the `Authorization` header.
    pub header: HeaderValue,
    /// After this the token is replaced in the background of requests (one refresher).
    refresh_at: Instant,
    /// After this the token is not used at all.
    expires_at: Instant,
}

impl AccessToken {
    fn new(header: HeaderValue, now: Instant, expires_in: Duration) -> AccessToken {
        let early = REFRESH_EARLY.min(expires_in / 2);
        AccessToken {
            header,
            refresh_at: now + (expires_in - early),
            expires_at: now + expires_in,
        }
    }

    fn freshness(&self, now: Instant) -> Freshness {
        if now < self.refresh_at {
            Freshness::Fresh
        } else if now < self.expires_at {
            Freshness::Stale
        } else {
            Freshness::Expired
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Freshness {
    /// Use it.
    Fresh,
    /// Still valid, but due for replacement.
    Stale,
    /// Unusable.
    Expired,
}

/// Access tokens for one service account and scope, cached and refreshed ahead of expiry.
pub struct TokenSource {
    account: ServiceAccount,
    scope: &'static str,
    endpoint: Arc<Endpoint>,
    /// Path and query of `token_uri`.
    token_path: String,
    cached: ArcSwapOption<AccessToken>,
    /// Held by the one task fetching a token (an async mutex: it is held across the fetch).
    /// Guards the time and error of the last failed fetch, so callers that queued behind a
    /// failing fetch share its error instead of each trying again in turn.
    refreshing: tokio::sync::Mutex<Option<(Instant, GatewayError)>>,
}

impl TokenSource {
    pub fn new(account: ServiceAccount, scope: &'static str) -> Result<TokenSource, String> {
        let (origin, path) = split_origin(&account.token_uri)
            .ok_or_else(|| format!("token_uri \"{}\" is not an http(s) URL", account.token_uri))?;
        let endpoint = Endpoint::parse(
            origin,
            PeerSettings {
                connect_timeout: Duration::from_secs(10),
                idle_timeout: Duration::from_secs(90),
            },
        )
        .map_err(|e| format!("token_uri: {e}"))?;
        let token_path = if path.is_empty() { "/" } else { path }.to_string();
        Ok(TokenSource {
            account,
            scope,
            endpoint: Arc::new(endpoint),
            token_path,
            cached: ArcSwapOption::empty(),
            refreshing: tokio::sync::Mutex::new(None),
        })
    }

    pub fn account(&self) -> &ServiceAccount {
        &self.account
    }

    /// A valid `Authorization` header value. Fresh tokens come from the cache without locking;
    /// a token due for refresh is refreshed by one caller while the others keep using it; with
    /// no valid token, callers queue behind a single fetch.
    pub async fn authorization(&self, client: &UpstreamClient) -> GatewayResult<HeaderValue> {
        let current = self.cached.load_full();
        if let Some(tok) = &current {
            match tok.freshness(Instant::now()) {
                Freshness::Fresh => return Ok(tok.header.clone()),
                Freshness::Stale => {
                    let Ok(mut last_failure) = self.refreshing.try_lock() else {
                        // Someone else is refreshing; this one is still good.
                        return Ok(tok.header.clone());
                    };
                    // Another caller may have refreshed it between the load and the lock.
                    if let Some(newer) = self.cached_if(|f| f == Freshness::Fresh) {
                        return Ok(newer);
                    }
                    return match self.fetch(client).await {
                        Ok(h) => {
                            *last_failure = None;
                            Ok(h)
                        }
                        Err(e) => {
                            log::warn!(
                                "refreshing the Google access token for {} failed, using the current one until it expires: {}",
                                self.account.client_email,
                                e.message
                            );
                            Ok(tok.header.clone())
                        }
                    };
                }
                Freshness::Expired => {}
            }
        }
        let waiting_since = Instant::now();
        let mut last_failure = self.refreshing.lock().await;
        // The fetch this caller waited on may have produced a token, or failed.
        if let Some(h) = self.cached_if(|f| f != Freshness::Expired) {
            return Ok(h);
        }
        if let Some((at, err)) = last_failure.as_ref() {
            if *at >= waiting_since {
                return Err(err.clone());
            }
        }
        match self.fetch(client).await {
            Ok(h) => {
                *last_failure = None;
                Ok(h)
            }
            Err(e) => {
                *last_failure = Some((Instant::now(), e.clone()));
                Err(e)
            }
        }
    }

    /// The cached token if its freshness passes `accept`.
    fn cached_if(&self, accept: impl Fn(Freshness) -> bool) -> Option<HeaderValue> {
        let tok = self.cached.load_full()?;
        accept(tok.freshness(Instant::now())).then(|| tok.header.clone())
    }

    /// Fetches a token, caches it and returns its header. Called with `refreshing` held.
    async fn fetch(&self, client: &UpstreamClient) -> GatewayResult<HeaderValue> {
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let assertion = self.account.assertion(self.scope, iat)?;
        let mut body = Vec::with_capacity(assertion.len() + 96);
        let _ = write!(
            body,
            "grant_type={}&assertion={assertion}",
            form_encode(JWT_BEARER_GRANT)
        );
        let req = UpstreamRequest {
            method: Method::POST,
            path: self.token_path.clone(),
            headers: vec![(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            )],
            body: bytes::Bytes::from(body),
        };
        let started = Instant::now();
        let exchange = async {
            let mut resp = client
                .send(&self.endpoint, &req, Some(TOKEN_TIMEOUT))
                .await?;
            let body = resp.body(MAX_TOKEN_RESPONSE).await?;
            Ok::<_, GatewayError>((resp.status, body))
        };
        let (status, body) = match tokio::time::timeout(TOKEN_TIMEOUT, exchange).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                return Err(GatewayError::bad_gateway(format!(
                    "Could not get a Google access token for {} from {}: {}",
                    self.account.client_email, self.account.token_uri, e.message
                )))
            }
            Err(_) => {
                return Err(GatewayError::bad_gateway(format!(
                    "The Google token endpoint {} did not answer within {}s.",
                    self.account.token_uri,
                    TOKEN_TIMEOUT.as_secs()
                )))
            }
        };
        let token = parse_token_response(status, &body, &self.account)?;
        let mut header = HeaderValue::from_str(&format!("Bearer {}", token.access_token))
            .map_err(|_| {
                GatewayError::bad_gateway(
                    "The Google token endpoint returned an access token with characters not allowed in a header.",
                )
            })?;
        header.set_sensitive(true);
        // The token endpoint's figure is bounded: Google's tokens last an hour; a day is plenty.
        let expires_in = Duration::from_secs(
            token
                .expires_in
                .unwrap_or(3600)
                .clamp(1, MAX_TOKEN_LIFETIME),
        );
        self.cached.store(Some(Arc::new(AccessToken::new(
            header.clone(),
            started,
            expires_in,
        ))));
        Ok(header)
    }
}

#[derive(Deserialize, Debug)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// Turns the token endpoint's answer into a token or an error: rejected credentials
/// (`invalid_grant`, `invalid_client`, `unauthorized_client`) are a 401 telling the operator to
/// check the key; anything else is a 502.
fn parse_token_response(
    status: u16,
    body: &[u8],
    account: &ServiceAccount,
) -> GatewayResult<TokenResponse> {
    if (200..300).contains(&status) {
        return serde_json::from_slice::<TokenResponse>(body).map_err(|e| {
            GatewayError::bad_gateway(format!(
                "The Google token endpoint {} answered {status} without an access_token ({e}).",
                account.token_uri
            ))
        });
    }
    #[derive(Deserialize)]
    struct OAuthError {
        #[serde(default)]
        error: Option<serde_json::Value>,
        #[serde(default)]
        error_description: Option<String>,
    }
    let parsed: Option<OAuthError> = serde_json::from_slice(body).ok();
    let code = parsed
        .as_ref()
        .and_then(|e| e.error.as_ref())
        .and_then(|e| e.as_str().map(str::to_string))
        .unwrap_or_default();
    let description = parsed
        .as_ref()
        .and_then(|e| e.error_description.clone())
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned());
    let rejected = matches!(
        code.as_str(),
        "invalid_grant" | "invalid_client" | "unauthorized_client"
    ) || status == 401;
    if rejected {
        return Err(GatewayError::new(
            ErrorKind::Authentication,
            format!(
                "Google rejected the service account {} ({code}: {description}). Check the deployment's vertex_credentials.",
                account.client_email
            ),
        )
        .with_code("invalid_credentials"));
    }
    Err(GatewayError::bad_gateway(format!(
        "The Google token endpoint {} answered {status} ({code} {description}).",
        account.token_uri
    )))
}

/// `application/x-www-form-urlencoded` for a value (the JWT itself needs no escaping).
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};

    pub(crate) fn test_key_json(token_uri: &str) -> String {
        let pem = include_str!("../../tests/fixtures/vertex_test_key.pem");
        serde_json::json!({
            "type": "service_account",
            "project_id": "test-project",
            "private_key_id": "test-kid-1",
            "private_key": pem,
            "client_email": "gw@test-project.iam.gserviceaccount.com",
            "token_uri": token_uri,
        })
        .to_string()
    }

    fn decode_part(p: &str) -> serde_json::Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap()
    }

    #[test]
    fn assertion_is_google_auth_shaped_and_verifies() {
        let sa = ServiceAccount::from_json(&test_key_json("http://127.0.0.1:9/token")).unwrap();
        let jwt = sa.assertion(CLOUD_PLATFORM_SCOPE, 1_700_000_000).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header = decode_part(parts[0]);
        assert_eq!(
            header,
            serde_json::json!({"alg":"RS256","typ":"JWT","kid":"test-kid-1"})
        );
        let claims = decode_part(parts[1]);
        assert_eq!(claims["iss"], "gw@test-project.iam.gserviceaccount.com");
        assert_eq!(claims["scope"], CLOUD_PLATFORM_SCOPE);
        // Always Google's audience, even with a custom token_uri.
        assert_eq!(claims["aud"], TOKEN_AUDIENCE);
        assert_eq!(claims["iat"], 1_700_000_000u64);
        assert_eq!(claims["exp"], 1_700_003_600u64);
        let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        let signed = &jwt[..parts[0].len() + 1 + parts[1].len()];
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, sa.public_key_der())
            .verify(signed.as_bytes(), &sig)
            .expect("signature verifies with the key's public half");
        let mut tampered = signed.to_string();
        tampered.push('x');
        assert!(
            UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, sa.public_key_der())
                .verify(tampered.as_bytes(), &sig)
                .is_err()
        );
    }

    #[test]
    fn credentials_from_every_config_form() {
        let json = test_key_json("https://oauth2.googleapis.com/token");
        let as_string = serde_json::Value::String(json.clone());
        assert!(ServiceAccount::from_config(Some(&as_string))
            .unwrap()
            .is_some());
        let as_object: serde_json::Value = serde_json::from_str(&json).unwrap();
        let sa = ServiceAccount::from_config(Some(&as_object))
            .unwrap()
            .unwrap();
        assert_eq!(sa.project_id.as_deref(), Some("test-project"));
        let path = std::env::temp_dir().join(format!("sb-sa-{}.json", std::process::id()));
        std::fs::write(&path, &json).unwrap();
        let as_path = serde_json::Value::String(path.display().to_string());
        assert!(ServiceAccount::from_config(Some(&as_path))
            .unwrap()
            .is_some());
        let _ = std::fs::remove_file(&path);
        let missing = serde_json::Value::String("/nonexistent/sa.json".into());
        assert!(ServiceAccount::from_config(Some(&missing))
            .unwrap_err()
            .contains("/nonexistent/sa.json"));
    }

    #[test]
    fn bad_keys_are_named() {
        let mut v: serde_json::Value =
            serde_json::from_str(&test_key_json("https://x/token")).unwrap();
        v["private_key"] = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".into();
        let err = ServiceAccount::from_config(Some(&v)).unwrap_err();
        assert!(err.contains("private_key"), "{err}");
        v["private_key"] = "nope".into();
        assert!(ServiceAccount::from_config(Some(&v))
            .unwrap_err()
            .contains("PKCS#8"));
        v["type"] = "authorized_user".into();
        assert!(ServiceAccount::from_config(Some(&v))
            .unwrap_err()
            .contains("authorized_user"));
        assert!(ServiceAccount::from_json("{not json").is_err());
        assert!(ServiceAccount::from_json(r#"{"type":"service_account"}"#)
            .unwrap_err()
            .contains("client_email"));
    }

    #[test]
    fn refresh_windows() {
        let now = Instant::now();
        let h = HeaderValue::from_static("Bearer t");
        let tok = AccessToken::new(h.clone(), now, Duration::from_secs(3600));
        assert_eq!(tok.freshness(now), Freshness::Fresh);
        assert_eq!(
            tok.freshness(now + Duration::from_secs(3299)),
            Freshness::Fresh
        );
        assert_eq!(
            tok.freshness(now + Duration::from_secs(3301)),
            Freshness::Stale
        );
        assert_eq!(
            tok.freshness(now + Duration::from_secs(3600)),
            Freshness::Expired
        );
        // Short-lived tokens refresh at half-life rather than never being fresh.
        let short = AccessToken::new(h, now, Duration::from_secs(60));
        assert_eq!(
            short.freshness(now + Duration::from_secs(29)),
            Freshness::Fresh
        );
        assert_eq!(
            short.freshness(now + Duration::from_secs(31)),
            Freshness::Stale
        );
    }

    #[test]
    fn token_endpoint_answers() {
        let sa = ServiceAccount::from_json(&test_key_json("https://x/token")).unwrap();
        let ok = parse_token_response(
            200,
            br#"{"access_token":"ya29.x","expires_in":3599,"token_type":"Bearer"}"#,
            &sa,
        )
        .unwrap();
        assert_eq!(
            (ok.access_token.as_str(), ok.expires_in),
            ("ya29.x", Some(3599))
        );
        let rejected = parse_token_response(
            400,
            br#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#,
            &sa,
        )
        .unwrap_err();
        assert_eq!(rejected.status, 401);
        assert!(rejected.message.contains("Invalid JWT Signature"));
        assert_eq!(
            parse_token_response(500, b"oops", &sa).unwrap_err().status,
            502
        );
        assert_eq!(
            parse_token_response(200, b"{}", &sa).unwrap_err().status,
            502
        );
    }

    #[test]
    fn grant_type_is_form_encoded() {
        assert_eq!(
            form_encode(JWT_BEARER_GRANT),
            "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer"
        );
    }

    /// A one-route HTTP/1.1 server answering every request after 100 ms with `status` and
    /// `body`, counting requests.
    async fn token_server(
        status: u16,
        body: &'static str,
    ) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let hits2 = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let hits = hits2.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    let mut got = Vec::new();
                    loop {
                        let n = sock.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        got.extend_from_slice(&buf[..n]);
                        let text = String::from_utf8_lossy(&got);
                        if let Some(end) = text.find("\r\n\r\n") {
                            let len: usize = text[..end]
                                .lines()
                                .find_map(|l| {
                                    l.to_ascii_lowercase()
                                        .strip_prefix("content-length:")
                                        .map(|v| v.trim().parse().unwrap())
                                })
                                .unwrap_or(0);
                            if got.len() >= end + 4 + len {
                                break;
                            }
                        }
                    }
                    hits.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let resp = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = sock.write_all(resp.as_bytes()).await;
                });
            }
        });
        (port, hits)
    }

    async fn burst(
        port: u16,
        callers: usize,
    ) -> (Arc<TokenSource>, Vec<GatewayResult<HeaderValue>>) {
        burst_with(port, callers, None).await
    }

    async fn burst_with(
        port: u16,
        callers: usize,
        cached: Option<AccessToken>,
    ) -> (Arc<TokenSource>, Vec<GatewayResult<HeaderValue>>) {
        let sa =
            ServiceAccount::from_json(&test_key_json(&format!("http://127.0.0.1:{port}/token")))
                .unwrap();
        let source = Arc::new(TokenSource::new(sa, CLOUD_PLATFORM_SCOPE).unwrap());
        source.cached.store(cached.map(Arc::new));
        let client = Arc::new(UpstreamClient::new(8));
        let mut tasks = Vec::new();
        for _ in 0..callers {
            let (s, c) = (source.clone(), client.clone());
            tasks.push(tokio::spawn(async move { s.authorization(&c).await }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        (source, out)
    }

    /// Many concurrent callers with no token share one fetch; later calls hit the cache.
    #[tokio::test]
    async fn concurrent_callers_share_one_fetch() {
        use std::sync::atomic::Ordering;
        let (port, hits) = token_server(
            200,
            r#"{"access_token":"tok-1","expires_in":3600,"token_type":"Bearer"}"#,
        )
        .await;
        let (source, results) = burst(port, 8).await;
        for r in results {
            assert_eq!(r.unwrap(), "Bearer tok-1");
        }
        let client = UpstreamClient::new(1);
        assert_eq!(source.authorization(&client).await.unwrap(), "Bearer tok-1");
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }

    /// Callers queued behind a failing fetch get its error rather than retrying one by one;
    /// a later caller tries again.
    #[tokio::test]
    async fn a_failed_fetch_is_shared_by_its_waiters() {
        use std::sync::atomic::Ordering;
        let (port, hits) = token_server(
            400,
            r#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#,
        )
        .await;
        let (source, results) = burst(port, 6).await;
        for r in results {
            assert_eq!(r.unwrap_err().status, 401);
        }
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        let client = UpstreamClient::new(1);
        assert!(source.authorization(&client).await.is_err());
        assert_eq!(hits.load(Ordering::SeqCst), 2);
    }

    /// A token due for refresh is replaced by one caller; the others keep using it meanwhile,
    /// and a failed refresh falls back to it while it is still valid.
    #[tokio::test]
    async fn stale_token_is_refreshed_once_in_the_background_of_requests() {
        use std::sync::atomic::Ordering;
        let stale = || {
            let now = Instant::now();
            AccessToken {
                header: HeaderValue::from_static("Bearer old"),
                refresh_at: now - Duration::from_secs(1),
                expires_at: now + Duration::from_secs(60),
            }
        };
        let (port, hits) = token_server(
            200,
            r#"{"access_token":"new","expires_in":3600,"token_type":"Bearer"}"#,
        )
        .await;
        let (source, results) = burst_with(port, 6, Some(stale())).await;
        let got: Vec<_> = results.into_iter().map(|r| r.unwrap()).collect();
        assert_eq!(
            got.iter().filter(|h| *h == "Bearer new").count(),
            1,
            "{got:?}"
        );
        assert_eq!(got.iter().filter(|h| *h == "Bearer old").count(), 5);
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        let client = UpstreamClient::new(1);
        assert_eq!(source.authorization(&client).await.unwrap(), "Bearer new");

        let (port, _) = token_server(500, "{}").await;
        let (_, results) = burst_with(port, 3, Some(stale())).await;
        for r in results {
            assert_eq!(r.unwrap(), "Bearer old");
        }
    }
}
