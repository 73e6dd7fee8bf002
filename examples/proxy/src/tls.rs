//! TLS termination with rustls: TLS 1.2 and 1.3, certificates from PEM
//! files chosen by the client's server name (SNI; exact names, then
//! `*.suffix` wildcards, then the first certificate as the default), ALPN
//! offering `h2` and `http/1.1`, resumption by session IDs and tickets.
//!
//! The certificates are loaded with each configuration ([`Certificates::load`],
//! a typed error naming the file, so a bad file changes nothing) and
//! swapped into the running [`Resolver`] when it is applied: new
//! handshakes see them, open connections keep theirs.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use super::config::{ConfigError, TlsConfig};

/// The protocols offered by ALPN, preferred first.
pub(crate) const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// One configuration's certificates, by server name.
#[derive(Debug)]
pub(crate) struct Certificates {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `(".example.com", key)` for `*.example.com`, longest first.
    wildcards: Vec<(String, Arc<CertifiedKey>)>,
    default: Arc<CertifiedKey>,
}

impl Certificates {
    /// Reads every certificate chain and key of `config`.
    pub(crate) fn load(config: &TlsConfig) -> Result<Self, ConfigError> {
        let mut exact = HashMap::new();
        let mut wildcards = Vec::new();
        let mut default = None;
        for (index, entry) in config.certificates.iter().enumerate() {
            let field = |key: &str| format!("tls.certificates[{index}].{key}");
            let key = certified_key(&entry.cert, &entry.key)
                .map_err(|(which, reason)| ConfigError::invalid(field(which), reason))?;
            let key = Arc::new(key);
            for name in &entry.names {
                let name = name.to_ascii_lowercase();
                match name.strip_prefix('*') {
                    Some(suffix) if suffix.starts_with('.') => {
                        wildcards.push((suffix.to_owned(), Arc::clone(&key)));
                    }
                    Some(_) => {
                        return Err(ConfigError::invalid(
                            field("names"),
                            format!("{name:?}: a wildcard is *.suffix"),
                        ));
                    }
                    None => {
                        exact.insert(name, Arc::clone(&key));
                    }
                }
            }
            default.get_or_insert(key);
        }
        let default = default
            .ok_or_else(|| ConfigError::invalid("tls.certificates", "at least one certificate"))?;
        wildcards.sort_by_key(|(suffix, _)| std::cmp::Reverse(suffix.len()));
        Ok(Self {
            exact,
            wildcards,
            default,
        })
    }

    /// The certificate for `name` (a client's SNI), or the default.
    fn for_name(&self, name: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = name else {
            return Arc::clone(&self.default);
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(key) = self.exact.get(&name) {
            return Arc::clone(key);
        }
        // A wildcard covers one label: `a.example.com`, not `example.com`
        // or `b.a.example.com` (RFC 6125 §6.4.3).
        let wildcard = self.wildcards.iter().find(|(suffix, _)| {
            name.strip_suffix(suffix.as_str())
                .is_some_and(|label| !label.is_empty() && !label.contains('.'))
        });
        Arc::clone(wildcard.map_or(&self.default, |(_, key)| key))
    }
}

/// A certificate chain and its key from PEM files; `Err` names the field
/// at fault and why.
fn certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, (&'static str, String)> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect)
        .map_err(|e| ("cert", format!("{}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(("cert", format!("{}: no certificate", cert.display())));
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| ("key", format!("{}: {e}", key.display())))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&private)
        .map_err(|e| ("key", format!("{}: {e}", key.display())))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| {
        (
            "key",
            format!("{} does not match {}: {e}", key.display(), cert.display()),
        )
    })?;
    Ok(certified)
}

/// What rustls asks for a certificate: the running configuration's.
#[derive(Debug)]
pub(crate) struct Resolver(ArcSwap<Certificates>);

impl Resolver {
    pub(crate) fn new(certificates: Arc<Certificates>) -> Arc<Self> {
        Arc::new(Self(ArcSwap::new(certificates)))
    }

    /// New handshakes use `certificates`; open connections keep theirs.
    pub(crate) fn set(&self, certificates: Arc<Certificates>) {
        self.0.store(certificates);
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load().for_name(hello.server_name()))
    }
}

/// The TLS listener's running parts.
pub(crate) struct TlsRuntime {
    pub(crate) resolver: Arc<Resolver>,
    pub(crate) acceptor: TlsAcceptor,
    pub(crate) handshake_timeout: std::time::Duration,
}

/// The crypto both sides of the proxy use, to clients and to backends:
/// ring's. It offers no post-quantum key exchange (X25519MLKEM768);
/// rustls's aws-lc-rs provider does, but builds a C library of its own,
/// minutes on this project's 2-core CI. TLS 1.3 with X25519 until then.
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    #[allow(deprecated)]
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The handshake's settings: TLS 1.2 and 1.3, no client certificates,
/// ALPN, a session cache and tickets for resumption.
pub(crate) fn acceptor(resolver: Arc<Resolver>) -> Result<TlsAcceptor, rustls::Error> {
    let provider = provider();
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
