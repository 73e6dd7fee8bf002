//! TLS termination and HTTP/2 to clients (issue 25), driven by a real
//! client, Debian's `curl`, and by a rustls client where a test must hold
//! a connection across a reload. A test certificate authority and its
//! certificates are made at test time (rcgen) in a directory of the
//! test's own; no private key is checked in.

use crate::harness::*;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use loadbalance_proxy::{Config, Proxy};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

/// A directory of this test's own, removed when dropped.
pub(crate) struct Dir(PathBuf);

impl Dir {
    pub(crate) fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "loadbalance-proxy-tls-{}-{name}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).expect("creates the test directory");
        Self(path)
    }

    pub(crate) fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A certificate authority of the test's own.
pub(crate) struct Authority {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Authority {
    pub(crate) fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("a key");
        let cert = params.self_signed(&key).expect("a CA certificate");
        Self { cert, key }
    }

    /// Writes the authority's certificate to `path`.
    pub(crate) fn write(&self, path: &Path) {
        std::fs::write(path, self.cert.pem()).expect("writes the CA");
    }

    /// A leaf certificate for `names` with subject `subject`, written to
    /// `cert` and `key`.
    pub(crate) fn issue(&self, names: &[&str], subject: &str, cert: &Path, key: &Path) {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("params");
        params.distinguished_name.push(DnType::CommonName, subject);
        let leaf_key = KeyPair::generate().expect("a key");
        let leaf = params
            .signed_by(&leaf_key, &self.cert, &self.key)
            .expect("a leaf certificate");
        std::fs::write(cert, leaf.pem()).expect("writes the certificate");
        std::fs::write(key, leaf_key.serialize_pem()).expect("writes the key");
    }
}

/// Whether `curl` is here; under `CI=true` its absence fails the test.
pub(crate) fn have_curl() -> bool {
    have("curl", "curl")
}

/// Whether `tool` (Debian's `package`) is here; under `CI=true` its
/// absence fails the test.
pub(crate) fn have(tool: &str, package: &str) -> bool {
    let found = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{tool} is missing (CI=true): install it (apt-get install {package})"
        );
        eprintln!("{tool} is not installed: skipping");
    }
    found
}

/// What one `curl` run saw.
#[derive(Debug)]
pub(crate) struct Curl {
    pub(crate) ok: bool,
    /// `%{http_version}`: `2` or `1.1`.
    pub(crate) version: String,
    pub(crate) body: String,
    /// The server certificate's subject, from `-v`.
    pub(crate) subject: String,
}

/// `curl` to `https://name:port/` resolved to the proxy, trusting `ca`.
pub(crate) async fn curl(ca: &Path, name: &str, port: u16, http2: bool) -> Curl {
    let ca = ca.to_owned();
    let name = name.to_owned();
    tokio::task::spawn_blocking(move || {
        let output = Command::new("curl")
            .args(["-sS", "-v", "--max-time", "5", "--cacert"])
            .arg(&ca)
            .args(["--resolve", &format!("{name}:{port}:127.0.0.1")])
            .arg(if http2 { "--http2" } else { "--http1.1" })
            .args(["-w", "\n%{http_version}"])
            .arg(format!("https://{name}:{port}/"))
            .output()
            .expect("runs curl");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let (body, version) = stdout.rsplit_once('\n').unwrap_or(("", ""));
        let subject = stderr
            .lines()
            .find_map(|l| l.trim().strip_prefix("*  subject: "))
            .unwrap_or("")
            .to_owned();
        Curl {
            ok: output.status.success(),
            version: version.to_owned(),
            body: body.to_owned(),
            subject,
        }
    })
    .await
    .expect("the curl task")
}

/// `[tls]` over `certificates`: (names, cert, key).
fn tls_section(certificates: &[(&[&str], &Path, &Path)]) -> String {
    let entries: Vec<String> = certificates
        .iter()
        .map(|(names, cert, key)| {
            let names: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
            format!(
                "{{ names = [{}], cert = {:?}, key = {:?} }}",
                names.join(", "),
                cert.display().to_string(),
                key.display().to_string()
            )
        })
        .collect();
    format!(
        "\n[tls]\nlisten = \"127.0.0.1:0\"\nhandshake_timeout_ms = 500\ncertificates = [{}]\n",
        entries.join(", ")
    )
}

/// Three certificates: `default.test` (the default), `a.test`, `*.b.test`.
pub(crate) fn certificates(dir: &Dir, authority: &Authority, generation: &str) -> String {
    for (file, names) in [
        ("default", &["default.test"][..]),
        ("a", &["a.test"]),
        ("b", &["*.b.test"]),
    ] {
        authority.issue(
            names,
            &format!("{file} {generation}"),
            &dir.file(&format!("{file}-{generation}.pem")),
            &dir.file(&format!("{file}-{generation}.key")),
        );
    }
    let path = |file: &str, ext: &str| dir.file(&format!("{file}-{generation}.{ext}"));
    tls_section(&[
        (
            &["default.test"],
            &path("default", "pem"),
            &path("default", "key"),
        ),
        (&["a.test"], &path("a", "pem"), &path("a", "key")),
        (&["*.b.test"], &path("b", "pem"), &path("b", "key")),
    ])
}

// Issue 25, 1 and 2: each SNI name gets its certificate (a wildcard
// covers one label, the first certificate the rest), ALPN picks HTTP/2 or
// HTTP/1.1 as the client asks, and both reach the backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_chooses_the_certificate_and_alpn_the_protocol() {
    if !have_curl() {
        return;
    }
    bounded(async {
        let dir = Dir::new("sni");
        let authority = Authority::new("test CA");
        authority.write(&dir.file("ca.pem"));
        let web = backend("web").await;
        let toml = format!(
            "{}{}{}",
            web_config("", "", &[&web]),
            certificates(&dir, &authority, "one"),
            ""
        );
        let proxy = start(&toml).await;
        let port = proxy.tls_addr().expect("a TLS listener").port();
        let ca = dir.file("ca.pem");
        for (name, subject) in [
            ("a.test", "CN=a one"),
            ("x.b.test", "CN=b one"),
            ("default.test", "CN=default one"),
        ] {
            for http2 in [true, false] {
                let seen = curl(&ca, name, port, http2).await;
                assert!(seen.ok, "{name} http2={http2}: {seen:?}");
                assert_eq!(seen.subject, subject, "{name}");
                assert_eq!(seen.version, if http2 { "2" } else { "1.1" }, "{name}");
                assert_eq!(seen.body, "web");
            }
        }
        // Names no certificate covers get the default, which curl refuses
        // for them: `b.test` itself, two labels under `*.b.test`.
        for name in ["b.test", "y.x.b.test", "other.test"] {
            let seen = curl(&ca, name, port, true).await;
            assert!(!seen.ok, "{name}: {seen:?}");
        }
        let forwarded = last_headers(&web);
        assert_eq!(forwarded["x-forwarded-proto"], "https");
        assert!(proxy.counters().tls_handshakes.load(Relaxed) >= 6);
        proxy.shutdown().await;
    })
    .await;
}

/// A TLS connection to the proxy's TLS port for `name`, offering `alpn`,
/// trusting `ca`.
pub(crate) async fn tls_stream(
    ca: &Path,
    addr: std::net::SocketAddr,
    name: &'static str,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("reads the CA") {
        roots
            .add(cert.expect("a certificate"))
            .expect("adds the CA");
    }
    #[allow(deprecated)] // ring, as the proxy's own
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let stream = TcpStream::connect(addr).await.expect("connects");
    connector
        .connect(ServerName::try_from(name).expect("a name"), stream)
        .await
        .expect("the handshake")
}

/// An HTTP/1.1 connection over TLS to the proxy for `name`.
async fn tls_client(
    ca: &Path,
    addr: std::net::SocketAddr,
    name: &'static str,
) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let tls = tls_stream(ca, addr, name, b"http/1.1").await;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("an HTTP/1.1 connection");
    tokio::spawn(connection);
    sender
}

// Issue 25, 1: certificates reload with the configuration: new
// connections see the new one, an open connection keeps working; a bad
// certificate file is a typed error naming it, and the old one stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_reload_without_dropping_connections() {
    if !have_curl() {
        return;
    }
    bounded(async {
        let dir = Dir::new("reload");
        let authority = Authority::new("test CA");
        authority.write(&dir.file("ca.pem"));
        let ca = dir.file("ca.pem");
        let web = backend("web").await;
        let base = web_config("", "", &[&web]);
        let proxy = start(&format!("{base}{}", certificates(&dir, &authority, "one"))).await;
        let addr = proxy.tls_addr().expect("a TLS listener");
        let mut old = tls_client(&ca, addr, "a.test").await;
        let get = |sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>| {
            let request = Request::get("/")
                .header("host", "a.test")
                .body(Empty::new())
                .expect("a request");
            sender.send_request(request)
        };
        let answer = get(&mut old).await.expect("answered");
        assert_eq!(answer.status(), 200);
        let _ = answer.into_body().collect().await;

        let bad = format!(
            "{base}{}",
            tls_section(&[(
                &["a.test"],
                &dir.file("missing.pem"),
                &dir.file("a-one.key")
            )])
        );
        let error = proxy
            .apply(Config::parse(&bad).expect("parses"))
            .await
            .expect_err("a missing certificate file is refused");
        let text = error.to_string();
        assert!(
            text.contains("tls.certificates[0].cert") && text.contains("missing.pem"),
            "{text}"
        );
        assert_eq!(
            curl(&ca, "a.test", addr.port(), true).await.subject,
            "CN=a one"
        );

        let next = format!("{base}{}", certificates(&dir, &authority, "two"));
        proxy
            .apply(Config::parse(&next).expect("parses"))
            .await
            .expect("applies");
        let seen = curl(&ca, "a.test", addr.port(), true).await;
        assert_eq!(seen.subject, "CN=a two", "{seen:?}");
        // The connection opened before the reload still serves.
        let answer = get(&mut old).await.expect("the old connection answers");
        assert_eq!(answer.status(), 200);
        proxy.shutdown().await;
    })
    .await;
}

// Issue 25, 1: a client that never finishes its handshake is cut at the
// handshake timeout and counted; one that sends garbage is counted as a
// failure; other clients are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_and_broken_handshakes_are_cut_and_counted() {
    bounded(async {
        let dir = Dir::new("handshake");
        let authority = Authority::new("test CA");
        let web = backend("web").await;
        let proxy: Proxy = start(&format!(
            "{}{}",
            web_config("", "", &[&web]),
            certificates(&dir, &authority, "one")
        ))
        .await;
        let addr = proxy.tls_addr().expect("a TLS listener");
        let mut silent = TcpStream::connect(addr).await.expect("connects");
        let garbage = raw(
            addr,
            b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n",
            Duration::from_secs(2),
        )
        .await;
        assert!(!garbage.starts_with("HTTP/1.1 200"), "{garbage:?}");
        let (_, closed) = read_all(&mut silent, Duration::from_secs(3)).await;
        assert!(closed, "cut at the 0.5 s handshake timeout");
        // Counted as the handshake task ends, just after the close.
        let counters = proxy.counters();
        let counted = || {
            (
                counters.tls_handshake_timeouts.load(Relaxed),
                counters.tls_handshake_failures.load(Relaxed),
            )
        };
        assert!(
            eventually(Duration::from_secs(1), || counted() == (1, 1)).await,
            "timeouts and failures: {:?}",
            counted()
        );
        // Plaintext still serves beside TLS.
        let reply = get(&client(), proxy.addr(), "site.test", "/").await;
        assert_eq!(reply.body, "web");
        proxy.shutdown().await;
    })
    .await;
}

/// A backend over TLS (HTTP/1.1) with a certificate from `authority` for
/// `backend.test` and 127.0.0.1, answering `secure`.
async fn tls_backend(dir: &Dir, authority: &Authority) -> std::net::SocketAddr {
    let (cert, key) = (dir.file("backend.pem"), dir.file("backend.key"));
    authority.issue(&["backend.test", "127.0.0.1"], "backend", &cert, &key);
    let config = loadbalance_proxy_test_tls::server_config(&cert, &key);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(|_request| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(Bytes::from_static(b"secure")),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// A rustls server configuration from PEM files (the test backend's).
mod loadbalance_proxy_test_tls {
    use std::path::Path;
    use std::sync::Arc;

    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};

    pub(crate) fn server_config(cert: &Path, key: &Path) -> rustls::ServerConfig {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .expect("reads the certificate")
            .collect::<Result<_, _>>()
            .expect("certificates");
        let key = PrivateKeyDer::from_pem_file(key).expect("reads the key");
        #[allow(deprecated)] // ring, as the proxy's own
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("a certificate and its key")
    }
}

// Issue 25, 3: TLS to backends, their certificates verified against the
// pool's CA (or the system's roots), for their address or `server_name`;
// not verifying only by the setting named for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_over_tls_are_verified() {
    bounded(async {
        let dir = Dir::new("upstream-tls");
        let authority = Authority::new("backend CA");
        authority.write(&dir.file("backend-ca.pem"));
        let backend = tls_backend(&dir, &authority).await;
        let ca = dir.file("backend-ca.pem").display().to_string();
        for (upstream, served) in [
            (format!("ca = {ca:?}"), true),
            (format!("ca = {ca:?}\nserver_name = \"backend.test\""), true),
            (format!("ca = {ca:?}\nserver_name = \"other.test\""), false),
            // The system's roots do not know the test CA.
            (String::new(), false),
            ("insecure_skip_verify = true".to_owned(), true),
        ] {
            let toml = format!(
                "{}{}{}\n[upstreams.web]\nprotocol = \"https\"\n{upstream}\n",
                server_section("attempts = 1"),
                catch_all("web"),
                pool_at("web", "health = { max_fails = 0 }", &[backend])
            );
            let proxy = start(&toml).await;
            let reply = get(&client(), proxy.addr(), "site.test", "/").await;
            if served {
                assert_eq!(
                    (reply.status.as_u16(), reply.body.as_str()),
                    (200, "secure"),
                    "{upstream}"
                );
            } else {
                assert_eq!(reply.status.as_u16(), 502, "{upstream}: {}", reply.body);
            }
            proxy.shutdown().await;
        }
        // A CA file that cannot be read is a typed error naming it.
        let toml = format!(
            "{}{}{}\n[upstreams.web]\nprotocol = \"https\"\nca = \"/nonexistent/ca.pem\"\n",
            server_section(""),
            catch_all("web"),
            pool_at("web", "", &[backend])
        );
        let config = Config::parse(&toml).expect("parses");
        let error = Proxy::start(config, None).await.err().expect("refused");
        assert!(error.to_string().contains("upstreams.web.ca"), "{error}");
    })
    .await;
}
