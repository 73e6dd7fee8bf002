//! How the proxy reaches backends, per pool (`[upstreams.NAME]`):
//! - `http1` (the default): HTTP/1.1, each worker thread its own
//!   connections ([`Http1`]), so a request and its backend connection
//!   share an event loop;
//! - `h2c`: HTTP/2 by prior knowledge (gRPC backends);
//! - `https`: TLS, HTTP/2 or HTTP/1.1 by ALPN, the backend's certificate
//!   verified against the system's roots or the pool's `ca`, for its
//!   address or `server_name` (SNI). Not verifying takes a setting named
//!   for what it is, `insecure_skip_verify`, and is logged at start.
//!
//! The `h2c` and `https` clients are the pool's own, shared by the
//! workers.

mod http1;

use std::sync::Arc;
use std::time::Duration;

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::http::uri::{Authority, Scheme};
use hyper::upgrade::OnUpgrade;
use hyper::{HeaderMap, Method, Request, Response, Uri};
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::body::{BoxError, UpstreamBody};
use super::config::{ConfigError, ServerConfig, UpstreamConfig};
use super::tls;

pub(crate) use http1::{Http1, Switched};

/// HTTP/2 by prior knowledge to backends.
pub(crate) type H2c = Client<HttpConnector, UpstreamBody>;

/// TLS to backends.
pub(crate) type TlsBackends = Client<HttpsConnector<HttpConnector>, UpstreamBody>;

/// One pool's own client, when it does not speak the workers' HTTP/1.1.
/// A clone shares its connections.
#[derive(Clone)]
pub(crate) enum Own {
    H2c(H2c),
    Tls(TlsBackends),
}

/// The client a request goes out on.
pub(crate) enum Link<'a> {
    Http1(&'a Http1),
    H2c(&'a H2c),
    Tls(&'a TlsBackends),
}

/// A request on its way to a backend: borrowed from the client's, so a
/// second attempt needs no copy of its head.
pub(crate) struct Outgoing<'a> {
    pub(crate) method: &'a Method,
    /// In origin form, every byte visible ASCII ([`sendable`]).
    pub(crate) target: &'a str,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) body: UpstreamBody,
}

/// Whether `target` can go on a request line as it is: visible ASCII
/// only (no space, CR or LF to end it early), and not empty.
pub(crate) fn sendable(target: &str) -> bool {
    !target.is_empty() && target.bytes().all(|b| b.is_ascii_graphic())
}

impl Outgoing<'_> {
    /// As a request of its own, with the target in absolute form, as
    /// hyper-util's clients take it (they pool by scheme and authority).
    fn absolute(self, scheme: Scheme, address: &str) -> Result<Request<UpstreamBody>, BoxError> {
        let mut parts = Uri::try_from(self.target)?.into_parts();
        parts.scheme = Some(scheme);
        parts.authority = Some(Authority::try_from(address)?);
        let mut request = Request::new(self.body);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = Uri::from_parts(parts)?;
        *request.headers_mut() = self.headers.clone();
        Ok(request)
    }
}

impl Link<'_> {
    /// Sends `request` to the backend at `address`; the response head, or
    /// why there is none.
    pub(crate) async fn request(
        &self,
        address: &str,
        request: Outgoing<'_>,
    ) -> Result<Response<Answer>, BoxError> {
        match self {
            Self::Http1(client) => Ok(client.request(address, request).await?.map(Answer::Http1)),
            Self::H2c(client) => Ok(client
                .request(request.absolute(Scheme::HTTP, address)?)
                .await?
                .map(Answer::Hyper)),
            Self::Tls(client) => Ok(client
                .request(request.absolute(Scheme::HTTPS, address)?)
                .await?
                .map(Answer::Hyper)),
        }
    }
}

/// A backend's response body, from whichever client fetched it.
// The HTTP/1.1 form is the common one and is not boxed: a box would be an
// allocation a response.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Answer {
    Http1(http1::Streaming),
    Hyper(Incoming),
}

/// The backend's side of a `101`: a connection now the tunnel's.
pub(crate) enum Switch {
    Http1(Option<Switched>),
    Hyper(OnUpgrade),
}

/// What a `101` response switched to on the backend's side.
pub(crate) fn switched(response: &mut Response<Answer>) -> Switch {
    match response.body_mut() {
        Answer::Http1(body) => Switch::Http1(body.switched()),
        Answer::Hyper(_) => Switch::Hyper(hyper::upgrade::on(response)),
    }
}

impl Body for Answer {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Http1(body) => Pin::new(body).poll_frame(cx),
            Self::Hyper(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|frame| frame.map(|f| f.map_err(Into::into))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Http1(body) => body.is_end_stream(),
            Self::Hyper(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Http1(body) => body.size_hint(),
            Self::Hyper(body) => body.size_hint(),
        }
    }
}

/// The connector for `settings`' connect timeout.
fn connector(settings: &ServerConfig) -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(settings.connect_timeout()));
    connector.set_nodelay(true);
    connector
}

/// A worker's HTTP/1.1 client.
pub(crate) fn backends(settings: &ServerConfig) -> Http1 {
    Http1::new(settings.connect_timeout(), settings.upstream_timeout())
}

/// Pool `name`'s own client for `upstream`, if it needs one.
pub(crate) fn own(
    name: &str,
    upstream: &UpstreamConfig,
    settings: &ServerConfig,
) -> Result<Option<Own>, ConfigError> {
    let field = |key: &str| format!("upstreams.{name}.{key}");
    match upstream.protocol.as_str() {
        "h2c" => Ok(Some(Own::H2c(
            Client::builder(TokioExecutor::new())
                .http2_only(true)
                .pool_idle_timeout(Duration::from_secs(30))
                .timer(TokioTimer::new())
                .build(connector(settings)),
        ))),
        "https" => {
            let config = tls_config(upstream, &field)?;
            let mut http = connector(settings);
            http.enforce_http(false);
            let builder = HttpsConnectorBuilder::new()
                .with_tls_config(config)
                .https_only();
            let builder = match &upstream.server_name {
                Some(server_name) => {
                    let server_name = ServerName::try_from(server_name.clone())
                        .map_err(|e| ConfigError::invalid(field("server_name"), e))?;
                    builder.with_server_name_resolver(FixedServerNameResolver::new(server_name))
                }
                None => builder,
            };
            let connector = builder.enable_all_versions().wrap_connector(http);
            Ok(Some(Own::Tls(
                Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(Duration::from_secs(30))
                    .timer(TokioTimer::new())
                    .build(connector),
            )))
        }
        _ => Ok(None),
    }
}

/// TLS 1.2 and 1.3 to a backend, ALPN h2 and http/1.1, its certificate
/// verified against `ca` or the system's roots (or, by the explicit
/// setting, not at all).
fn tls_config(
    upstream: &UpstreamConfig,
    field: &dyn Fn(&str) -> String,
) -> Result<rustls::ClientConfig, ConfigError> {
    let provider = tls::provider();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::invalid(field("protocol"), e))?;
    let config = if upstream.insecure_skip_verify {
        tracing::warn!(
            "{}: backends' certificates are NOT verified (insecure_skip_verify)",
            field("insecure_skip_verify")
        );
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        match &upstream.ca {
            Some(ca) => {
                let certificates = CertificateDer::pem_file_iter(ca)
                    .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                    .map_err(|e| {
                        ConfigError::invalid(field("ca"), format!("{}: {e}", ca.display()))
                    })?;
                for certificate in certificates {
                    roots.add(certificate).map_err(|e| {
                        ConfigError::invalid(field("ca"), format!("{}: {e}", ca.display()))
                    })?;
                }
            }
            None => {
                let native = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(native.certs);
            }
        }
        if roots.is_empty() {
            return Err(ConfigError::invalid(
                field("ca"),
                "no certificate authority to verify backends against",
            ));
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(config)
}

/// Accepts any certificate: `insecure_skip_verify`, and nothing else.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::sendable;

    #[test]
    fn only_visible_ascii_goes_on_a_request_line() {
        assert!(sendable("/a/b?c=d%20e"));
        for bad in [
            "",
            "/a b",
            "/a\r\nX-Injected: 1",
            "/a\tb",
            "/caf\u{e9}",
            "/a\u{7f}",
        ] {
            assert!(!sendable(bad), "{bad:?}");
        }
    }
}
