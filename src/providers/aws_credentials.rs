//! AWS credentials for Bedrock deployments, resolved the way LiteLLM resolves them
//! (`litellm/llms/bedrock/base_aws_llm.py`, `get_credentials`), with the AWS SDK's own credential
//! providers (`aws-config`) doing the fetching:
//!
//! 1. `aws_web_identity_token` + `aws_role_name` + `aws_session_name`: STS
//!    `AssumeRoleWithWebIdentity` with that token.
//! 2. `aws_role_name`: STS `AssumeRole`, from static keys when given, else from the ambient chain
//!    (or nothing extra when the pod already runs as that role through IRSA).
//! 3. `aws_profile_name`: that profile of the shared `~/.aws/credentials` / `~/.aws/config` files
//!    (`AWS_SHARED_CREDENTIALS_FILE` / `AWS_CONFIG_FILE`), including its `role_arn`/`source_profile`
//!    and `web_identity_token_file` settings.
//! 4. `aws_access_key_id` + `aws_secret_access_key` (or the `AWS_*` variables): static keys, used
//!    as they are.
//! 5. Otherwise the SDK's default chain: `AWS_PROFILE` and the shared files, web identity
//!    (`AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`, EKS/IRSA), ECS/EKS container credentials
//!    (`AWS_CONTAINER_CREDENTIALS_FULL_URI`/`_RELATIVE_URI`), EC2 instance metadata (IMDSv2).
//!
//! Each `litellm_params` key falls back to the environment variable LiteLLM reads for it
//! (`AWS_PROFILE_NAME`, `AWS_ROLE_NAME`, `AWS_SESSION_NAME`, `AWS_WEB_IDENTITY_TOKEN`,
//! `AWS_STS_ENDPOINT`, `AWS_EXTERNAL_ID`). The SDK's endpoint variables (`AWS_ENDPOINT_URL_STS`,
//! `AWS_EC2_METADATA_SERVICE_ENDPOINT`, `AWS_CONTAINER_CREDENTIALS_FULL_URI`) apply as usual.
//!
//! Everything but static keys becomes an [`AmbientCredentials`] source: one background task (on a
//! small runtime of its own, so the source lives independently of Pingora's service runtimes and
//! of config reloads) fetches credentials, stores them in an `ArcSwap` and fetches again ahead of
//! their expiry. A request only loads the current credentials, lock-free; it waits (bounded) only
//! for the very first fetch of a source. Deployments with the same settings share one source.
//! Threads do not survive a fork (Pingora's `--daemon` forks after the config is built), so a
//! fork handler makes the child start the runtime and the refresh tasks again on first use.
//! The SDK's HTTP traffic goes through the gateway's own Pingora-based [`UpstreamClient`]
//! ([`PingoraHttpClient`]), so no second HTTP/TLS stack is built in.

use super::sigv4::Credentials;
use crate::error::{ErrorKind, GatewayError, GatewayResult};
use crate::upstream::{Endpoint, PeerSettings, UpstreamClient, UpstreamRequest};
use arc_swap::ArcSwapOption;
use aws_config::default_provider::credentials::DefaultCredentialsChain;
use aws_config::profile::ProfileFileCredentialsProvider;
use aws_config::provider_config::ProviderConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_config::{BehaviorVersion, Region};
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock, Weak};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// Credentials are fetched again this long before they expire (or at half their remaining life,
/// if shorter), like the SDK's own identity cache.
const REFRESH_EARLY: Duration = Duration::from_secs(300);
/// Shortest wait between two fetches.
const MIN_REFRESH: Duration = Duration::from_secs(1);
/// Credentials without an expiry (keys in a profile file) are read again this often.
const RECHECK_STATIC: Duration = Duration::from_secs(300);
/// Longest wait between fetches after failures (doubling from `MIN_REFRESH`).
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Longest one fetch may take (the SDK bounds each HTTP call more tightly).
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a request waits for the first fetch of its source.
const FIRST_FETCH_WAIT: Duration = Duration::from_secs(10);
/// Largest credentials-endpoint response read.
const MAX_RESPONSE: usize = 1024 * 1024;
/// What to set, for error messages.
const HOW_TO: &str = "set aws_access_key_id + aws_secret_access_key, aws_profile_name (or AWS_PROFILE with ~/.aws/credentials), aws_role_name, AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN, or run where ECS/EKS container or EC2 instance credentials are available";

/// The `litellm_params` (with LiteLLM's environment fallbacks) that decide where a deployment's
/// AWS credentials come from. (No `Debug`: it holds secrets.)
#[derive(Default, Clone, PartialEq, Eq, Hash)]
pub struct AwsAuthParams {
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    pub profile: Option<String>,
    pub role_arn: Option<String>,
    pub session_name: Option<String>,
    pub web_identity_token: Option<String>,
    pub external_id: Option<String>,
    pub sts_endpoint: Option<String>,
    /// The deployment's region (STS is called in it unless the environment names another).
    pub region: String,
}

impl AwsAuthParams {
    /// Reads the params: `param(key)` is a non-empty `litellm_params` string, `env(name)` a
    /// non-empty environment variable.
    pub fn read(
        param: impl Fn(&str) -> Option<String>,
        env: impl Fn(&str) -> Option<String>,
        region: &str,
    ) -> AwsAuthParams {
        let get = |key: &str, var: &str| param(key).or_else(|| env(var));
        AwsAuthParams {
            access_key_id: get("aws_access_key_id", "AWS_ACCESS_KEY_ID"),
            secret_access_key: get("aws_secret_access_key", "AWS_SECRET_ACCESS_KEY"),
            session_token: get("aws_session_token", "AWS_SESSION_TOKEN"),
            profile: get("aws_profile_name", "AWS_PROFILE_NAME"),
            role_arn: get("aws_role_name", "AWS_ROLE_NAME"),
            session_name: get("aws_session_name", "AWS_SESSION_NAME"),
            web_identity_token: get("aws_web_identity_token", "AWS_WEB_IDENTITY_TOKEN"),
            external_id: get("aws_external_id", "AWS_EXTERNAL_ID"),
            sts_endpoint: get("aws_sts_endpoint", "AWS_STS_ENDPOINT"),
            region: region.to_string(),
        }
    }

    fn static_keys(&self) -> Option<Credentials> {
        Some(Credentials {
            access_key_id: self.access_key_id.clone()?,
            secret_access_key: self.secret_access_key.clone()?,
            session_token: self.session_token.clone(),
        })
    }

    /// The STS signing region, as LiteLLM picks it: from a regional `aws_sts_endpoint`, else
    /// `AWS_REGION` / `AWS_DEFAULT_REGION`, else the deployment's region.
    fn sts_region(&self) -> String {
        self.sts_region_from_endpoint()
            .or_else(|| env_var("AWS_REGION"))
            .or_else(|| env_var("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| self.region.clone())
    }

    /// The region of a regional `sts.{region}.amazonaws.com` endpoint.
    fn sts_region_from_endpoint(&self) -> Option<String> {
        self.sts_endpoint.as_deref().and_then(|url| {
            let host = url.split("://").nth(1)?.split(['/', ':']).next()?;
            let mut labels = host.split('.');
            labels.position(|l| l == "sts" || l == "sts-fips")?;
            labels
                .next()
                .filter(|r| r.contains('-'))
                .map(str::to_string)
        })
    }
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|s| !s.is_empty())
}

/// Where a deployment's credentials come from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Method {
    WebIdentityToken { role_arn: String, session: String },
    AssumeRole { role_arn: String, base: Base },
    Profile(String),
    DefaultChain,
}

/// The credentials an `AssumeRole` call is signed with.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Base {
    StaticKeys,
    Profile(String),
    DefaultChain,
}

/// A deployment's credentials: static keys, or a shared, refreshed source.
#[derive(Clone)]
pub enum AwsAuth {
    Static(Arc<Credentials>),
    Ambient(Arc<AmbientCredentials>),
}

impl AwsAuth {
    /// Picks the method for `params` (LiteLLM's order) and, unless the keys are static, returns
    /// the running source for it (started now, or shared with deployments of the same settings).
    pub fn resolve(params: &AwsAuthParams) -> AwsAuth {
        match choose(params) {
            None => AwsAuth::Static(Arc::new(
                params.static_keys().expect("chosen for its static keys"),
            )),
            Some(method) => AwsAuth::Ambient(AmbientCredentials::shared(params, method)),
        }
    }

    /// Where the credentials come from, for `--check` and logs (never a secret).
    pub fn describe(&self) -> String {
        match self {
            AwsAuth::Static(c) if c.session_token.is_some() => {
                "static access key with a session token (litellm_params or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN)".into()
            }
            AwsAuth::Static(_) => {
                "static access key (litellm_params or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"
                    .into()
            }
            AwsAuth::Ambient(a) => a.describe.clone(),
        }
    }

    /// The credentials to sign a request with now.
    pub async fn current(&self, deployment: &str) -> GatewayResult<Arc<Credentials>> {
        match self {
            AwsAuth::Static(c) => Ok(c.clone()),
            AwsAuth::Ambient(a) => a.current(deployment).await,
        }
    }
}

/// The method for `params`, in LiteLLM's order; `None` for static keys.
fn choose(params: &AwsAuthParams) -> Option<Method> {
    let method = if let (Some(_), Some(role), Some(session)) = (
        &params.web_identity_token,
        &params.role_arn,
        &params.session_name,
    ) {
        Method::WebIdentityToken {
            role_arn: role.clone(),
            session: session.clone(),
        }
    } else if let Some(role) = &params.role_arn {
        let irsa_role = env_var("AWS_ROLE_ARN").filter(|_| {
            env_var("AWS_WEB_IDENTITY_TOKEN_FILE").is_some() && params.static_keys().is_none()
        });
        if irsa_role.as_deref() == Some(role.as_str()) {
            // Already running as that role (EKS/IRSA): LiteLLM skips the AssumeRole.
            Method::DefaultChain
        } else {
            let base = if params.static_keys().is_some() {
                Base::StaticKeys
            } else if let Some(p) = &params.profile {
                Base::Profile(p.clone())
            } else {
                Base::DefaultChain
            };
            Method::AssumeRole {
                role_arn: role.clone(),
                base,
            }
        }
    } else if let Some(p) = &params.profile {
        Method::Profile(p.clone())
    } else if params.static_keys().is_some() {
        return None;
    } else {
        Method::DefaultChain
    };
    Some(method)
}

/// One fetched set of credentials.
struct Current {
    credentials: Arc<Credentials>,
    expires: Option<SystemTime>,
}

/// The state of a source's fetching, for requests that wait for the first fetch.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Status {
    /// No fetch has finished yet.
    Starting,
    Ok,
    /// The last fetch failed with this message.
    Failed(String),
}

/// Credentials fetched and refreshed in the background by the SDK's providers.
pub struct AmbientCredentials {
    describe: String,
    current: ArcSwapOption<Current>,
    status: watch::Sender<Status>,
    /// What the refresh task is started from.
    params: AwsAuthParams,
    method: Method,
    /// The fork generation + 1 whose runtime runs the refresh task (0: not started).
    started: AtomicU64,
    me: Weak<AmbientCredentials>,
}

impl std::fmt::Debug for AmbientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmbientCredentials")
            .field("source", &self.describe)
            .finish_non_exhaustive()
    }
}

/// Sources by their settings, so deployments (and reloaded configs) share one.
fn registry() -> &'static Mutex<HashMap<AwsAuthParams, Weak<AmbientCredentials>>> {
    static SOURCES: OnceLock<Mutex<HashMap<AwsAuthParams, Weak<AmbientCredentials>>>> =
        OnceLock::new();
    SOURCES.get_or_init(Default::default)
}

/// Bumped in the child of a fork (Pingora's `--daemon` forks after the config is built): threads
/// do not survive a fork, so the child starts the runtime and the refresh tasks again.
static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);

extern "C" fn forked_child() {
    FORK_GENERATION.fetch_add(1, Ordering::AcqRel);
}

/// The small runtime the refresh tasks run on (whatever runtime, or none, builds the config),
/// and the SDK's HTTP client, for this process's fork generation.
fn background(generation: u64) -> (&'static tokio::runtime::Runtime, SharedHttpClient) {
    static FORK_HOOK: Once = Once::new();
    type Current = Option<(u64, &'static tokio::runtime::Runtime, SharedHttpClient)>;
    static CURRENT: Mutex<Current> = Mutex::new(None);
    FORK_HOOK.call_once(|| {
        // SAFETY: the handler only bumps an atomic, which is async-signal-safe.
        unsafe { libc::pthread_atfork(None, None, Some(forked_child)) };
    });
    let mut current = CURRENT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((g, runtime, http)) = &*current {
        if *g == generation {
            return (runtime, http.clone());
        }
    }
    // A runtime from before a fork has no threads left: it is left alone (dropping it would
    // wait for them), as is its client's pool.
    std::mem::forget(current.take());
    let runtime: &'static tokio::runtime::Runtime = Box::leak(Box::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("aws-credentials")
            .enable_all()
            .build()
            .expect("cannot start the AWS credentials runtime"),
    ));
    let http = SharedHttpClient::new(PingoraHttpClient {
        client: Arc::new(UpstreamClient::new(8)),
    });
    *current = Some((generation, runtime, http.clone()));
    (runtime, http)
}

impl AmbientCredentials {
    fn shared(params: &AwsAuthParams, method: Method) -> Arc<AmbientCredentials> {
        let mut sources = registry().lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = sources.get(params).and_then(Weak::upgrade) {
            return existing;
        }
        sources.retain(|_, weak| weak.strong_count() > 0);
        let source = Arc::new_cyclic(|me| AmbientCredentials {
            describe: describe(params, &method),
            current: ArcSwapOption::empty(),
            status: watch::Sender::new(Status::Starting),
            params: params.clone(),
            method,
            started: AtomicU64::new(0),
            me: me.clone(),
        });
        sources.insert(params.clone(), Arc::downgrade(&source));
        drop(sources);
        source.ensure_started();
        source
    }

    /// Starts the refresh task unless it runs in this process already (again after a fork).
    fn ensure_started(&self) {
        let generation = FORK_GENERATION.load(Ordering::Acquire);
        let tag = generation + 1;
        if self.started.load(Ordering::Acquire) == tag
            || self.started.swap(tag, Ordering::AcqRel) == tag
        {
            return;
        }
        let (runtime, http) = background(generation);
        runtime.spawn(refresh_loop(
            self.me.clone(),
            self.params.clone(),
            self.method.clone(),
            http,
        ));
    }

    /// The current credentials; waits only for the first fetch, at most `FIRST_FETCH_WAIT`.
    pub async fn current(&self, deployment: &str) -> GatewayResult<Arc<Credentials>> {
        self.ensure_started();
        if let Some(c) = self.usable() {
            return Ok(c);
        }
        let mut status = self.status.subscribe();
        let first = status.wait_for(|s| *s != Status::Starting);
        let _ = tokio::time::timeout(FIRST_FETCH_WAIT, first).await;
        if let Some(c) = self.usable() {
            return Ok(c);
        }
        let why = match &*self.status.borrow() {
            Status::Starting => format!(
                "the first fetch ({}) has not finished within {}s",
                self.describe,
                FIRST_FETCH_WAIT.as_secs()
            ),
            Status::Failed(e) => format!("{} failed: {e}", self.describe),
            Status::Ok => format!("the credentials from {} have expired", self.describe),
        };
        Err(GatewayError::new(
            ErrorKind::Internal,
            format!(
                "No AWS credentials for bedrock deployment {deployment}: {why}. To fix, {HOW_TO}."
            ),
        )
        .with_code("aws_credentials_unavailable")
        .untouched())
    }

    /// The current credentials unless missing or expired.
    fn usable(&self) -> Option<Arc<Credentials>> {
        let c = self.current.load_full()?;
        match c.expires {
            Some(at) if at <= SystemTime::now() => None,
            _ => Some(c.credentials.clone()),
        }
    }

    pub fn describe(&self) -> &str {
        &self.describe
    }
}

fn describe(params: &AwsAuthParams, method: &Method) -> String {
    let sts = match &params.sts_endpoint {
        Some(url) => format!(" at {url}"),
        None => String::new(),
    };
    match method {
        Method::WebIdentityToken { role_arn, session } => format!(
            "STS AssumeRoleWithWebIdentity{sts} for role {role_arn} (session {session}) with aws_web_identity_token"
        ),
        Method::AssumeRole { role_arn, base } => {
            let base = match base {
                Base::StaticKeys => "the static access key".to_string(),
                Base::Profile(p) => format!("profile \"{p}\""),
                Base::DefaultChain => "the default AWS credential chain".to_string(),
            };
            format!("STS AssumeRole{sts} for role {role_arn} signed with {base}")
        }
        Method::Profile(p) => format!("profile \"{p}\" of the shared AWS config files ({})", profile_files()),
        Method::DefaultChain => format!("the default AWS credential chain: {}", default_chain_hint()),
    }
}

fn profile_files() -> String {
    let credentials =
        env_var("AWS_SHARED_CREDENTIALS_FILE").unwrap_or_else(|| "~/.aws/credentials".to_string());
    let config = env_var("AWS_CONFIG_FILE").unwrap_or_else(|| "~/.aws/config".to_string());
    format!("{credentials}, {config}")
}

/// What the environment suggests the default chain will find (the chain decides at run time).
fn default_chain_hint() -> String {
    if let (Some(_), Some(role)) = (
        env_var("AWS_WEB_IDENTITY_TOKEN_FILE"),
        env_var("AWS_ROLE_ARN"),
    ) {
        return format!("web identity (AWS_WEB_IDENTITY_TOKEN_FILE) for role {role}");
    }
    if let Some(p) = env_var("AWS_PROFILE") {
        return format!("AWS_PROFILE \"{p}\" ({})", profile_files());
    }
    if env_var("AWS_CONTAINER_CREDENTIALS_FULL_URI").is_some()
        || env_var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI").is_some()
    {
        return "ECS/EKS container credentials (AWS_CONTAINER_CREDENTIALS_*_URI)".into();
    }
    let imds =
        if env_var("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            "instance metadata disabled"
        } else {
            "then EC2 instance metadata"
        };
    format!("default profile ({}), {imds}", profile_files())
}

/// Builds the SDK provider for `method`, then fetches, stores and re-fetches until the source
/// is dropped.
async fn refresh_loop(
    source: Weak<AmbientCredentials>,
    params: AwsAuthParams,
    method: Method,
    http: SharedHttpClient,
) {
    let fetcher = Fetcher::build(&params, &method, http).await;
    let mut failures: u32 = 0;
    loop {
        let result = match tokio::time::timeout(FETCH_TIMEOUT, fetcher.fetch()).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {}s", FETCH_TIMEOUT.as_secs())),
        };
        let Some(shared) = source.upgrade() else {
            return;
        };
        let wait = match result {
            Ok(creds) => {
                if failures > 0 || *shared.status.borrow() == Status::Starting {
                    log::info!("bedrock: AWS credentials loaded from {}", shared.describe);
                }
                failures = 0;
                let expires = creds.expiry();
                shared.current.store(Some(Arc::new(Current {
                    credentials: Arc::new(Credentials {
                        access_key_id: creds.access_key_id().to_string(),
                        secret_access_key: creds.secret_access_key().to_string(),
                        session_token: creds.session_token().map(str::to_string),
                    }),
                    expires,
                })));
                shared.status.send_replace(Status::Ok);
                refresh_delay(expires, SystemTime::now())
            }
            Err(message) => {
                failures = failures.saturating_add(1);
                let previous = shared.status.send_replace(Status::Failed(message.clone()));
                if previous != Status::Failed(message.clone()) {
                    let still = if shared.usable().is_some() {
                        "; the current credentials stay in use until they expire"
                    } else {
                        ""
                    };
                    log::warn!(
                        "bedrock: no AWS credentials from {}: {message}{still}. To fix, {HOW_TO}.",
                        shared.describe
                    );
                }
                backoff(failures)
            }
        };
        drop(shared);
        tokio::time::sleep(wait).await;
    }
}

/// How long to keep credentials expiring at `expires` before fetching new ones.
fn refresh_delay(expires: Option<SystemTime>, now: SystemTime) -> Duration {
    match expires {
        None => RECHECK_STATIC,
        Some(at) => {
            let life = at.duration_since(now).unwrap_or_default();
            let early = REFRESH_EARLY.min(life / 2);
            (life - early).max(MIN_REFRESH)
        }
    }
}

fn backoff(failures: u32) -> Duration {
    MIN_REFRESH
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(MAX_BACKOFF)
}

/// The SDK pieces one source fetches with.
enum Fetcher {
    Provider(SharedCredentialsProvider),
    WebIdentityToken {
        sts: aws_sdk_sts::Client,
        role_arn: String,
        session: String,
        token: String,
    },
}

impl Fetcher {
    async fn build(params: &AwsAuthParams, method: &Method, http: SharedHttpClient) -> Fetcher {
        let region = Region::new(params.region.clone());
        let provider_config = ProviderConfig::default()
            .with_http_client(http.clone())
            .with_region(Some(region.clone()));
        let default_chain = |profile: Option<&str>| {
            let mut builder = DefaultCredentialsChain::builder()
                .region(region.clone())
                .configure(provider_config.clone());
            if let Some(p) = profile {
                builder = builder.profile_name(p);
            }
            builder.build()
        };
        let sts_config = || async {
            let mut loader = aws_config::defaults(BehaviorVersion::latest())
                .http_client(http.clone())
                .region(Region::new(params.sts_region()))
                .no_credentials();
            if let Some(url) = &params.sts_endpoint {
                loader = loader.endpoint_url(url);
            }
            loader.load().await
        };
        match method {
            Method::DefaultChain => {
                Fetcher::Provider(SharedCredentialsProvider::new(default_chain(None).await))
            }
            Method::Profile(name) => Fetcher::Provider(SharedCredentialsProvider::new(
                ProfileFileCredentialsProvider::builder()
                    .profile_name(name)
                    .configure(&provider_config)
                    .build(),
            )),
            Method::WebIdentityToken { role_arn, session } => Fetcher::WebIdentityToken {
                sts: aws_sdk_sts::Client::new(&sts_config().await),
                role_arn: role_arn.clone(),
                session: session.clone(),
                token: params.web_identity_token.clone().unwrap_or_default(),
            },
            Method::AssumeRole { role_arn, base } => {
                let base = match (base, params.static_keys()) {
                    (Base::StaticKeys, Some(keys)) => {
                        SharedCredentialsProvider::new(aws_credential_types::Credentials::new(
                            keys.access_key_id,
                            keys.secret_access_key,
                            keys.session_token,
                            None,
                            "litellm_params",
                        ))
                    }
                    (Base::Profile(p), _) => SharedCredentialsProvider::new(
                        ProfileFileCredentialsProvider::builder()
                            .profile_name(p)
                            .configure(&provider_config)
                            .build(),
                    ),
                    _ => SharedCredentialsProvider::new(default_chain(None).await),
                };
                let mut builder = AssumeRoleProvider::builder(role_arn.clone())
                    .region(Region::new(params.sts_region()))
                    .configure(&sts_config().await);
                if let Some(s) = &params.session_name {
                    builder = builder.session_name(s);
                }
                if let Some(id) = &params.external_id {
                    builder = builder.external_id(id);
                }
                Fetcher::Provider(SharedCredentialsProvider::new(
                    builder.build_from_provider(base).await,
                ))
            }
        }
    }

    async fn fetch(&self) -> Result<aws_credential_types::Credentials, String> {
        match self {
            Fetcher::Provider(p) => p.provide_credentials().await.map_err(|e| error_chain(&e)),
            Fetcher::WebIdentityToken {
                sts,
                role_arn,
                session,
                token,
            } => {
                let out = sts
                    .assume_role_with_web_identity()
                    .role_arn(role_arn)
                    .role_session_name(session)
                    .web_identity_token(token)
                    .duration_seconds(3600)
                    .send()
                    .await
                    .map_err(|e| error_chain(&e))?;
                let c = out
                    .credentials()
                    .ok_or("STS answered AssumeRoleWithWebIdentity without credentials")?;
                let expires = SystemTime::try_from(*c.expiration()).ok();
                Ok(aws_credential_types::Credentials::new(
                    c.access_key_id(),
                    c.secret_access_key(),
                    Some(c.session_token().to_string()),
                    expires,
                    "WebIdentityToken",
                ))
            }
        }
    }
}

/// An error and its sources, `: `-separated, without the `Debug` dumps (raw responses) the
/// SDK's own error formatter adds: this text reaches clients and logs.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let next = e.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = e.source();
    }
    text
}

/// The AWS SDK's HTTP client (one per process, see [`background`]), backed by the gateway's Pingora connector: credential endpoints
/// (STS, IMDS, container credentials) are called like any upstream, honouring the SDK's
/// connect/read timeouts, with responses bounded in size.
pub struct PingoraHttpClient {
    client: Arc<UpstreamClient>,
}

impl std::fmt::Debug for PingoraHttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PingoraHttpClient")
    }
}

impl HttpClient for PingoraHttpClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(PingoraConnector {
            client: self.client.clone(),
            connect_timeout: settings.connect_timeout().unwrap_or(Duration::from_secs(5)),
            read_timeout: settings.read_timeout().unwrap_or(FETCH_TIMEOUT),
        })
    }
}

struct PingoraConnector {
    client: Arc<UpstreamClient>,
    connect_timeout: Duration,
    read_timeout: Duration,
}

impl std::fmt::Debug for PingoraConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PingoraConnector")
            .field("connect_timeout", &self.connect_timeout)
            .field("read_timeout", &self.read_timeout)
            .finish_non_exhaustive()
    }
}

impl HttpConnector for PingoraConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let client = self.client.clone();
        let connect_timeout = self.connect_timeout;
        let read_timeout = self.read_timeout;
        HttpConnectorFuture::new(async move {
            let (origin, path) = split_uri(request.uri()).ok_or_else(|| {
                ConnectorError::other(format!("unsupported URL {}", request.uri()).into(), None)
            })?;
            let endpoint = Arc::new(
                Endpoint::parse(
                    origin,
                    PeerSettings {
                        connect_timeout,
                        idle_timeout: Duration::from_secs(30),
                    },
                )
                .map_err(|e| ConnectorError::other(e.into(), None))?,
            );
            let mut headers = Vec::with_capacity(8);
            for (name, value) in request.headers().iter() {
                // The client sets Host and Content-Length itself.
                if name.eq_ignore_ascii_case("host") || name.eq_ignore_ascii_case("content-length")
                {
                    continue;
                }
                let name = http::HeaderName::from_bytes(name.as_bytes())
                    .map_err(|e| ConnectorError::other(e.into(), None))?;
                let value = http::HeaderValue::from_str(value)
                    .map_err(|e| ConnectorError::other(e.into(), None))?;
                headers.push((name, value));
            }
            let body = request
                .body()
                .bytes()
                .map(bytes::Bytes::copy_from_slice)
                .ok_or_else(|| {
                    ConnectorError::other("streaming request bodies are not supported".into(), None)
                })?;
            let method = http::Method::from_bytes(request.method().as_bytes())
                .map_err(|e| ConnectorError::other(e.into(), None))?;
            let upstream_request = UpstreamRequest {
                method,
                path: path.to_string(),
                headers,
                body,
            };
            let exchange = async {
                let mut response = client
                    .send(&endpoint, &upstream_request, Some(read_timeout))
                    .await?;
                let body = response.body(MAX_RESPONSE).await?;
                Ok::<_, GatewayError>((response.status, response.header, body))
            };
            let (status, header, body) =
                tokio::time::timeout(connect_timeout + read_timeout, exchange)
                    .await
                    .map_err(|_| ConnectorError::timeout("no answer in time".into()))?
                    .map_err(|e| {
                        if e.kind == ErrorKind::Timeout {
                            ConnectorError::timeout(e.message.into())
                        } else {
                            ConnectorError::io(e.message.into())
                        }
                    })?;
            let status =
                status
                    .try_into()
                    .map_err(|e: aws_smithy_runtime_api::http::HttpError| {
                        ConnectorError::other(e.into(), None)
                    })?;
            let mut response = HttpResponse::new(status, SdkBody::from(body));
            for (name, value) in header.headers.iter() {
                if let Ok(value) = value.to_str() {
                    response
                        .headers_mut()
                        .append(name.as_str().to_string(), value.to_string());
                }
            }
            Ok(response)
        })
    }
}

/// `scheme://authority` and the path with its query (the path `/` when none).
fn split_uri(uri: &str) -> Option<(&str, Cow<'_, str>)> {
    let scheme_end = uri.find("://")? + 3;
    Some(match uri[scheme_end..].find(['/', '?']) {
        Some(i) if uri.as_bytes()[scheme_end + i] == b'/' => (
            &uri[..scheme_end + i],
            Cow::Borrowed(&uri[scheme_end + i..]),
        ),
        Some(i) => (
            &uri[..scheme_end + i],
            Cow::Owned(format!("/{}", &uri[scheme_end + i..])),
        ),
        None => (uri, Cow::Borrowed("/")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> AwsAuthParams {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        AwsAuthParams::read(|k| map.get(k).cloned(), |_| None, "us-east-1")
    }

    #[test]
    fn static_keys_are_used_as_they_are() {
        let p = params(&[
            ("aws_access_key_id", "AK"),
            ("aws_secret_access_key", "SK"),
            ("aws_session_token", "TOK"),
        ]);
        match AwsAuth::resolve(&p) {
            AwsAuth::Static(c) => {
                assert_eq!(c.access_key_id, "AK");
                assert_eq!(c.session_token.as_deref(), Some("TOK"));
            }
            AwsAuth::Ambient(_) => panic!("static keys need no source"),
        }
    }

    #[test]
    fn methods_follow_litellms_order() {
        let role = "arn:aws:iam::1:role/r".to_string();
        let web = params(&[
            ("aws_web_identity_token", "jwt"),
            ("aws_role_name", &role),
            ("aws_session_name", "s"),
            ("aws_profile_name", "p"),
        ]);
        let m = choose(&web).unwrap();
        assert_eq!(
            m,
            Method::WebIdentityToken {
                role_arn: role.clone(),
                session: "s".into()
            }
        );
        let d = describe(&web, &m);
        assert!(d.contains("AssumeRoleWithWebIdentity"), "{d}");
        assert!(!d.contains("jwt"), "never the token: {d}");
        // A role without a web identity token: AssumeRole from the static keys.
        let assume = params(&[
            ("aws_role_name", &role),
            ("aws_access_key_id", "AK"),
            ("aws_secret_access_key", "SECRET"),
        ]);
        let m = choose(&assume).unwrap();
        assert_eq!(
            m,
            Method::AssumeRole {
                role_arn: role.clone(),
                base: Base::StaticKeys
            }
        );
        let d = describe(&assume, &m);
        assert!(
            d.contains(
                "AssumeRole for role arn:aws:iam::1:role/r signed with the static access key"
            ),
            "{d}"
        );
        assert!(!d.contains("SECRET"));
        let from_profile = params(&[("aws_role_name", &role), ("aws_profile_name", "dev")]);
        assert_eq!(
            choose(&from_profile),
            Some(Method::AssumeRole {
                role_arn: role.clone(),
                base: Base::Profile("dev".into())
            })
        );
        // A profile wins over static keys, as in LiteLLM.
        let profile = params(&[
            ("aws_profile_name", "dev"),
            ("aws_access_key_id", "AK"),
            ("aws_secret_access_key", "SK"),
        ]);
        assert_eq!(choose(&profile), Some(Method::Profile("dev".into())));
        // A web identity token without a session name is not enough (LiteLLM's rule).
        let no_session = params(&[("aws_web_identity_token", "jwt"), ("aws_role_name", &role)]);
        assert!(matches!(
            choose(&no_session),
            Some(Method::AssumeRole { .. })
        ));
    }

    #[test]
    fn deployments_with_the_same_settings_share_a_source() {
        // A profile source reads local files only.
        let p = params(&[("aws_profile_name", "switchboard-unit-test-missing-profile")]);
        let (AwsAuth::Ambient(a), AwsAuth::Ambient(b)) =
            (AwsAuth::resolve(&p), AwsAuth::resolve(&p))
        else {
            panic!("profiles are refreshed sources");
        };
        assert!(Arc::ptr_eq(&a, &b));
        assert!(a
            .describe()
            .starts_with("profile \"switchboard-unit-test-missing-profile\""));
    }

    #[test]
    fn refresh_ahead_of_expiry() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        // An hour of life: refreshed five minutes early.
        assert_eq!(
            refresh_delay(Some(now + Duration::from_secs(3600)), now),
            Duration::from_secs(3300)
        );
        // Short-lived: at half its life, but never sooner than a second apart.
        assert_eq!(
            refresh_delay(Some(now + Duration::from_secs(4)), now),
            Duration::from_secs(2)
        );
        assert_eq!(refresh_delay(Some(now), now), MIN_REFRESH);
        assert_eq!(refresh_delay(None, now), RECHECK_STATIC);
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(4));
        assert_eq!(backoff(100), MAX_BACKOFF);
    }

    #[test]
    fn sts_region_from_a_regional_endpoint() {
        let mut p = params(&[("aws_sts_endpoint", "https://sts.eu-central-1.amazonaws.com")]);
        assert_eq!(p.sts_region_from_endpoint(), Some("eu-central-1".into()));
        p.sts_endpoint = Some("http://127.0.0.1:9000".into());
        assert_eq!(p.sts_region_from_endpoint(), None);
    }

    #[test]
    fn error_chains_without_debug_dumps() {
        let e = aws_credential_types::provider::error::CredentialsError::provider_error(
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        );
        assert_eq!(
            error_chain(&e),
            "an error occurred while loading credentials: no such file"
        );
    }

    #[test]
    fn uri_split() {
        assert_eq!(
            split_uri("http://127.0.0.1:80/latest/api/token"),
            Some(("http://127.0.0.1:80", "/latest/api/token".into()))
        );
        assert_eq!(
            split_uri("https://sts.amazonaws.com"),
            Some(("https://sts.amazonaws.com", "/".into()))
        );
        assert_eq!(
            split_uri("https://sts.amazonaws.com?Action=x"),
            Some(("https://sts.amazonaws.com", "/?Action=x".into()))
        );
        assert_eq!(split_uri("nonsense"), None);
    }
}
