//! TLS for client-facing listeners: certificate and key files read and checked (PEM parses, the
//! key matches the certificate, not expired; a warning inside [`EXPIRY_WARNING`]), client
//! certificate CAs for mTLS, and the live, swappable state a listener's rustls config reads on
//! every handshake, so SIGHUP can replace certificates without touching established connections.
//!
//! - [`load`] reads one listener's files into a [`Loaded`] (or a [`ConfigError`] naming the key
//!   path); `--check`, startup and reload all go through it.
//! - [`LiveTls`] is one listener's current certificate and client verifier. Pingora builds the
//!   listener's rustls `ServerConfig` once, with our [`CertResolver`] and [`ClientVerifier`]
//!   in it; both read an `ArcSwap`, so a reload's [`LiveTls::swap`] reaches the next handshake.
//! - `min_version: "1.3"`: Pingora's config always enables TLS 1.2 and 1.3, so the resolver
//!   refuses (handshake failure) a client hello that offers no TLS 1.3 cipher suite.

use crate::config::listeners::{Alpn, TlsConfig, TlsVersion};
use crate::config::ConfigError;
use arc_swap::ArcSwap;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::protocols::ALPN;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A certificate expiring within this long is reported (a warning, not an error).
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// The largest PEM file read (a chain of a few certificates is a few KiB).
const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// One listener's certificate, key and client CA, read and checked.
pub struct Loaded {
    pub certified: Arc<CertifiedKey>,
    pub verifier: Option<Arc<dyn ClientCertVerifier>>,
    /// The leaf certificate, for logs and `--check`.
    pub leaf: CertSummary,
    /// Certificates close to expiry, not yet valid, and similar.
    pub warnings: Vec<String>,
}

/// What `--check` and the logs say about a certificate.
#[derive(Debug, Clone)]
pub struct CertSummary {
    pub subject: String,
    /// Hex, as `openssl x509 -serial` prints it.
    pub serial: String,
    /// Unix seconds.
    pub not_after: i64,
}

impl std::fmt::Display for CertSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (serial {}, valid until {})",
            self.subject,
            self.serial,
            date(self.not_after)
        )
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    pingora_core::tls::install_default_crypto_provider();
    rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

fn read_pem(path: &str, key_path: &str) -> Result<Vec<u8>, ConfigError> {
    use std::io::Read;
    let file = std::fs::File::open(path)
        .map_err(|e| ConfigError::new(key_path, format!("cannot read {path}: {e}")))?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ConfigError::new(key_path, format!("cannot read {path}: {e}")))?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(ConfigError::new(
            key_path,
            format!("{path} is larger than 1 MiB; is it a PEM file?"),
        ));
    }
    Ok(bytes)
}

/// The certificates in a PEM file (at least one).
fn read_certs(path: &str, key_path: &str) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let pem = read_pem(path, key_path)?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConfigError::new(key_path, format!("{path} is not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(ConfigError::new(
            key_path,
            format!("{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"),
        ));
    }
    Ok(certs)
}

fn read_key(path: &str, key_path: &str) -> Result<PrivateKeyDer<'static>, ConfigError> {
    let pem = read_pem(path, key_path)?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| ConfigError::new(key_path, format!("{path} is not valid PEM: {e}")))?
        .ok_or_else(|| {
            ConfigError::new(
                key_path,
                format!("{path} holds no private key (PKCS#8, PKCS#1 or SEC1 PEM)"),
            )
        })
}

/// Parses a certificate's subject, serial and validity; errors name `key_path` and `what`.
fn summarize(
    der: &CertificateDer<'_>,
    key_path: &str,
    what: &str,
) -> Result<(CertSummary, i64), ConfigError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).map_err(|e| {
        ConfigError::new(
            key_path,
            format!("{what} is not a valid X.509 certificate: {e}"),
        )
    })?;
    let validity = cert.validity();
    Ok((
        CertSummary {
            subject: cert.subject().to_string(),
            serial: cert.raw_serial_as_string().replace(':', "").to_uppercase(),
            not_after: validity.not_after.timestamp(),
        },
        validity.not_before.timestamp(),
    ))
}

fn date(unix: i64) -> String {
    x509_parser::time::ASN1Time::from_timestamp(unix)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| unix.to_string())
}

/// Reads and checks a listener's TLS files. `key_path` is the listener's `tls` key path
/// (`switchboard.listeners[0].tls`); errors name the file's key under it.
pub fn load(tls: &TlsConfig, key_path: &str) -> Result<Loaded, ConfigError> {
    let now = unix_now();
    let cert_key = format!("{key_path}.cert_file");
    let key_key = format!("{key_path}.key_file");
    let certs = read_certs(&tls.cert_file, &cert_key)?;
    let key = read_key(&tls.key_file, &key_key)?;
    let mut warnings = Vec::new();
    let mut leaf = None;
    for (i, der) in certs.iter().enumerate() {
        let what = if i == 0 {
            format!("the certificate in {}", tls.cert_file)
        } else {
            format!("chain certificate {} in {}", i + 1, tls.cert_file)
        };
        let (summary, not_before) = summarize(der, &cert_key, &what)?;
        if summary.not_after < now {
            return Err(ConfigError::new(
                &cert_key,
                format!(
                    "{what} ({}) expired on {}",
                    summary.subject,
                    date(summary.not_after)
                ),
            ));
        }
        if summary.not_after < now + EXPIRY_WARNING.as_secs() as i64 {
            warnings.push(format!(
                "{cert_key}: {what} ({}) expires on {}, within 14 days",
                summary.subject,
                date(summary.not_after)
            ));
        }
        if not_before > now {
            warnings.push(format!(
                "{cert_key}: {what} ({}) is not valid before {}",
                summary.subject,
                date(not_before)
            ));
        }
        if i == 0 {
            leaf = Some(summary);
        }
    }
    let provider = provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| ConfigError::new(&key_key, format!("{}: {e}", tls.key_file)))?;
    let certified = CertifiedKey::new(certs, signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => {
            return Err(ConfigError::new(
                &key_key,
                format!(
                    "the key in {} does not belong to the certificate in {}",
                    tls.key_file, tls.cert_file
                ),
            ))
        }
    }
    let verifier = match &tls.client_ca_file {
        None => None,
        Some(ca) => Some(client_verifier(
            ca,
            &format!("{key_path}.client_ca_file"),
            provider,
        )?),
    };
    Ok(Loaded {
        certified: Arc::new(certified),
        verifier,
        leaf: leaf.expect("at least one certificate"),
        warnings,
    })
}

fn client_verifier(
    path: &str,
    key_path: &str,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, ConfigError> {
    let mut roots = RootCertStore::empty();
    for (i, der) in read_certs(path, key_path)?.into_iter().enumerate() {
        let (summary, _) = summarize(&der, key_path, &format!("CA certificate {}", i + 1))?;
        roots.add(der).map_err(|e| {
            ConfigError::new(
                key_path,
                format!(
                    "CA certificate {} ({}) in {path}: {e}",
                    i + 1,
                    summary.subject
                ),
            )
        })?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| ConfigError::new(key_path, format!("{path}: {e}")))
}

/// One TLS listener's live certificate and client verifier, swapped whole on reload.
pub struct LiveTls {
    certified: ArcSwap<CertifiedKey>,
    verifier: Option<ArcSwap<Arc<dyn ClientCertVerifier>>>,
    pub config: ArcSwap<TlsConfig>,
}

impl LiveTls {
    pub fn new(config: &TlsConfig, loaded: Loaded) -> Arc<Self> {
        Arc::new(LiveTls {
            certified: ArcSwap::new(loaded.certified),
            verifier: loaded.verifier.map(ArcSwap::from_pointee),
            config: ArcSwap::from_pointee(config.clone()),
        })
    }

    /// Pingora's settings for this listener: our resolver and verifier, the ALPN list.
    pub fn settings(self: &Arc<Self>, config: &TlsConfig) -> TlsSettings {
        let tls13_only = config.min_version == TlsVersion::Tls13;
        let mut settings = TlsSettings::with_callbacks(Box::new(VersionFloor { tls13_only }))
            .expect("TLS settings without files");
        settings.set_cert_resolver(Arc::new(CertResolver {
            live: self.clone(),
            tls13_only,
        }));
        if self.verifier.is_some() {
            settings.set_client_cert_verifier(Arc::new(ClientVerifier { live: self.clone() }));
        }
        settings.set_alpn(match config.alpn.as_slice() {
            [Alpn::H2] => ALPN::H2,
            [Alpn::Http11] => ALPN::H1,
            // Both, whichever order: the server prefers h2 when the client offers it.
            _ => ALPN::H2H1,
        });
        settings
    }

    /// Whether new files can be swapped in (mTLS on or off needs a restart).
    pub fn compatible(&self, new: &TlsConfig) -> Result<(), String> {
        let old = self.config.load();
        if old.client_ca_file.is_some() != new.client_ca_file.is_some() {
            return Err("turning client_ca_file on or off takes a restart".into());
        }
        if old.min_version != new.min_version || old.alpn != new.alpn {
            return Err("min_version and alpn take effect on restart".into());
        }
        Ok(())
    }

    /// New handshakes use `loaded`; established connections keep what they negotiated.
    pub fn swap(&self, config: &TlsConfig, loaded: Loaded) {
        self.certified.store(loaded.certified);
        if let (Some(slot), Some(v)) = (&self.verifier, loaded.verifier) {
            slot.store(Arc::new(v));
        }
        self.config.store(Arc::new(config.clone()));
    }
}

/// After the handshake: marks a connection that negotiated less than the listener's minimum
/// version (a client that lists TLS 1.3 cipher suites without supporting 1.3 gets past the
/// resolver's check), for [`below_min_version`] to refuse.
struct VersionFloor {
    tls13_only: bool,
}

/// The marker [`VersionFloor`] leaves in the connection's TLS digest.
struct BelowMinVersion;

#[async_trait::async_trait]
impl pingora_core::listeners::TlsAccept for VersionFloor {
    async fn handshake_complete_callback(
        &self,
        tls: &pingora_core::protocols::tls::TlsRef,
    ) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        // rustls names it "TLSv1_3".
        let is_13 = tls
            .version()
            .is_some_and(|v| v.ends_with("1_3") || v.ends_with("1.3"));
        if self.tls13_only && !is_13 {
            return Some(Arc::new(BelowMinVersion));
        }
        None
    }
}

/// Whether `stream` negotiated a TLS version below its listener's `min_version`: the edge
/// closes it before reading a request.
pub fn below_min_version(stream: &pingora_core::protocols::Stream) -> bool {
    stream
        .get_ssl_digest()
        .is_some_and(|d| d.extension.get::<BelowMinVersion>().is_some())
}

/// Hands every handshake the listener's current certificate.
#[derive(Debug)]
struct CertResolver {
    live: Arc<LiveTls>,
    tls13_only: bool,
}

impl std::fmt::Debug for LiveTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveTls").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // TLS 1.3 cipher suites are 0x13XX; a client offering none cannot speak 1.3.
        if self.tls13_only
            && !hello
                .cipher_suites()
                .iter()
                .any(|s| u16::from(*s) >> 8 == 0x13)
        {
            return None;
        }
        Some(self.live.certified.load_full())
    }
}

/// The listener's current client-certificate verifier. Sends no CA hints (they would have to
/// outlive a swap); clients present their certificate regardless.
#[derive(Debug)]
struct ClientVerifier {
    live: Arc<LiveTls>,
}

impl ClientVerifier {
    fn current(&self) -> Arc<dyn ClientCertVerifier> {
        let slot = self.live.verifier.as_ref().expect("mTLS listener");
        Arc::clone(&slot.load())
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.current()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.current().supported_verify_schemes()
    }
}
