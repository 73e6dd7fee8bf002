//! Response compression (issue 26): each coding decoded by an
//! independent decoder (Debian's curl, on zlib, libbrotli and libzstd)
//! equals the original; the negotiation table; what is never compressed;
//! compressed variants kept apart in the cache.

use crate::cache::{Answer, Origin, has_stored};
use crate::harness::*;
use crate::tls::{Dir, have_curl};

use std::io::Read;
use std::process::Command;

use http_body_util::{BodyExt, Full};
use hyper::{Method, StatusCode};
use loadbalance_proxy::Proxy;

/// 20,000 bytes of text.
fn page() -> Vec<u8> {
    (0..1_000)
        .flat_map(|i| format!("<p>line {i:05} of the page</p>\n").into_bytes())
        .take(20_000)
        .collect()
}

async fn origin() -> Origin {
    Origin::start(|request, _| {
        let html = ("content-type", "text/html; charset=utf-8");
        match request.uri.path() {
            "/small" => Answer::ok(&[html], "<p>short</p>"),
            "/image" => Answer::ok(&[("content-type", "image/png")], page()),
            "/no-transform" => Answer::ok(&[html, ("cache-control", "no-transform")], page()),
            "/gzipped" => Answer::ok(&[html, ("content-encoding", "gzip")], gzip(&page())),
            "/cached" => Answer::ok(&[html, ("cache-control", "max-age=60")], page()),
            _ => Answer::ok(&[html, ("etag", "\"abc\"")], page()),
        }
    })
    .await
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).expect("compresses");
    encoder.finish().expect("finishes")
}

/// A proxy whose one route compresses (and caches, if `cache`).
async fn compressing(origin: &Origin, cache: bool) -> Proxy {
    start(&format!(
        "{}\n[[routes]]\nname = \"all\"\npath = \"/\"\npool = \"web\"\ncompress = true\ncache = {cache}\n{}",
        server_section(""),
        pool_at("web", "", &[origin.addr])
    ))
    .await
}

/// GET `path` with `Accept-Encoding: accept` (none if `None`); the head
/// and the body's bytes as sent.
async fn get_raw(
    client: &HttpClient,
    proxy: &Proxy,
    path: &str,
    accept: Option<&str>,
) -> (StatusCode, hyper::HeaderMap, Vec<u8>) {
    let mut request = build(Method::GET, proxy.addr(), "zip.test", path);
    if let Some(accept) = accept {
        request = request.header("accept-encoding", accept);
    }
    let response = client
        .request(request.body(Full::default()).expect("a request"))
        .await
        .expect("an answer");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("the body").to_bytes().to_vec();
    (parts.status, parts.headers, body)
}

fn header<'a>(headers: &'a hyper::HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

// Each coding, decoded by curl's own libraries, is the page; the response
// says its coding and varies by Accept-Encoding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_decodes_each_coding_to_the_original() {
    if !have_curl() {
        return;
    }
    bounded(async {
        let origin = origin().await;
        let proxy = compressing(&origin, false).await;
        let dir = Dir::new("compression");
        for coding in ["gzip", "br", "zstd"] {
            let headers = dir.file(&format!("{coding}.headers"));
            let url = format!("http://127.0.0.1:{}/page", proxy.addr().port());
            let headers_path = headers.clone();
            let output = tokio::task::spawn_blocking(move || {
                Command::new("curl")
                    .args(["-sS", "--max-time", "5", "--compressed", "-H"])
                    .arg(format!("Accept-Encoding: {coding}"))
                    .arg("-D")
                    .arg(&headers_path)
                    .arg(url)
                    .output()
                    .expect("runs curl")
            })
            .await
            .expect("the curl task");
            assert!(output.status.success(), "{coding}: {output:?}");
            let head = std::fs::read_to_string(&headers)
                .expect("the headers")
                .to_ascii_lowercase();
            assert!(
                head.contains(&format!("content-encoding: {coding}")),
                "{coding}: {head}"
            );
            assert!(head.contains("vary: accept-encoding"), "{coding}: {head}");
            assert!(!head.contains("content-length"), "{coding}: {head}");
            assert_eq!(output.stdout, page(), "{coding}");
        }
        proxy.shutdown().await;
    })
    .await;
}

// The negotiation: weights, `*`, identity; and what is never compressed
// (small, an image, no-transform, already encoded: never twice). A strong
// ETag is weakened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negotiation_and_what_is_never_compressed() {
    bounded(async {
        let origin = origin().await;
        let proxy = compressing(&origin, false).await;
        let client = client();
        let table: [(Option<&str>, &str); 8] = [
            (None, ""),
            (Some("identity"), ""),
            (Some("gzip"), "gzip"),
            (Some("gzip;q=0, br"), "br"),
            (Some("gzip;q=0.5, br;q=0.4"), "gzip"),
            (Some("*"), "zstd"),
            (Some("br;q=0, zstd;q=0, *;q=0.1"), "gzip"),
            (Some("gzip;q=0.5, identity"), ""),
        ];
        for (accept, expected) in table {
            let (status, headers, body) = get_raw(&client, &proxy, "/page", accept).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(header(&headers, "content-encoding"), expected, "{accept:?}");
            assert_eq!(header(&headers, "vary"), "accept-encoding", "{accept:?}");
            if expected.is_empty() {
                assert_eq!(body, page(), "{accept:?}");
                assert_eq!(header(&headers, "etag"), "\"abc\"");
            } else {
                assert!(body.len() < page().len() / 3, "{accept:?}");
                assert_eq!(header(&headers, "etag"), "W/\"abc\"", "weakened");
            }
        }
        for path in ["/small", "/image", "/no-transform"] {
            let (_, headers, body) = get_raw(&client, &proxy, path, Some("gzip, br, zstd")).await;
            assert_eq!(header(&headers, "content-encoding"), "", "{path}");
            assert_eq!(header(&headers, "vary"), "", "{path}");
            assert!(body == page() || path == "/small", "{path}");
        }
        let (_, headers, body) = get_raw(&client, &proxy, "/gzipped", Some("gzip, br")).await;
        assert_eq!(header(&headers, "content-encoding"), "gzip");
        assert_eq!(body, gzip(&page()), "passed as the backend sent it");
        proxy.shutdown().await;
    })
    .await;
}

// With the cache on, each coding is a variant of its own: a gzip client,
// a br client, then a gzip client again (written differently) asks the
// backend twice, and the third is a hit in gzip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_variants_are_cached_apart() {
    bounded(async {
        let origin = origin().await;
        let proxy = compressing(&origin, true).await;
        let client = client();
        let (_, first, _) = get_raw(&client, &proxy, "/cached", Some("gzip")).await;
        assert_eq!(header(&first, "content-encoding"), "gzip");
        assert!(has_stored(&proxy, 1).await, "the gzip variant is stored");
        let (_, second, _) = get_raw(&client, &proxy, "/cached", Some("br")).await;
        assert_eq!(header(&second, "content-encoding"), "br");
        let (_, third, body) = get_raw(&client, &proxy, "/cached", Some("GZIP;q=1.0")).await;
        assert_eq!(header(&third, "content-encoding"), "gzip");
        assert!(header(&third, "cache-status").contains("hit"), "{third:?}");
        let mut decoded = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut decoded)
            .expect("gzip");
        assert_eq!(decoded, page());
        let (_, plain, body) = get_raw(&client, &proxy, "/cached", None).await;
        assert_eq!(header(&plain, "content-encoding"), "");
        assert_eq!(body, page());
        assert_eq!(origin.count(), 3);
        proxy.shutdown().await;
    })
    .await;
}
