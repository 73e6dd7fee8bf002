//! Response compression (nginx's `gzip`, tower-http's compression layer):
//! gzip, Brotli and zstd, negotiated by the client's `Accept-Encoding`
//! with its weights, streamed as the backend sends.
//!
//! A response is compressed when its route asks for it and it is worth
//! it: a status with content (not 1xx, 204, 206, 304), no
//! `Content-Encoding` already (never twice), at least `min_bytes` when
//! its length is known, a content type listed, and no `no-transform`.
//! Such a response varies by `Accept-Encoding` whether or not this client
//! takes a coding, so `Vary: Accept-Encoding` is added to it (and caches
//! keep one variant per coding); a strong `ETag` is weakened, the
//! compressed bytes not being the ones it named, and `Content-Length`
//! goes, the length being known only at the end.
//!
//! - [`negotiate`]: `Accept-Encoding` read, a coding chosen;
//! - [`encoder`]: the body compressed as it streams.

mod encoder;
pub(crate) mod negotiate;

use hyper::header::{
    ACCEPT_RANGES, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, ETAG, HeaderMap,
    HeaderValue, VARY,
};
use hyper::{Method, Response, StatusCode};
use serde::Deserialize;

pub(crate) use encoder::{Compressing, Encoder, Levels};
pub(crate) use negotiate::{Accepted, Coding};

use crate::body::ProxyBody;

/// A route's compression (`compress = true`, or a table of these).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct CompressionConfig {
    /// Codings offered, in the server's order of preference among those a
    /// client weighs equally: `zstd`, `br`, `gzip`.
    pub(crate) codings: Vec<String>,
    /// Responses shorter than this (by `Content-Length`) are sent as they
    /// are: compression would not pay for its framing.
    pub(crate) min_bytes: u64,
    /// Media types compressed (without parameters); others (images,
    /// video, archives) are compressed already.
    pub(crate) types: Vec<String>,
    pub(crate) gzip_level: u32,
    pub(crate) brotli_level: u32,
    pub(crate) zstd_level: i32,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        Self {
            codings: vec!["zstd".into(), "br".into(), "gzip".into()],
            min_bytes: 256,
            types: [
                "text/html",
                "text/plain",
                "text/css",
                "text/xml",
                "text/javascript",
                "text/csv",
                "text/markdown",
                "application/javascript",
                "application/json",
                "application/xml",
                "application/rss+xml",
                "application/atom+xml",
                "application/manifest+json",
                "application/wasm",
                "image/svg+xml",
            ]
            .map(String::from)
            .to_vec(),
            gzip_level: 5,
            brotli_level: 4,
            zstd_level: 3,
        }
    }
}

/// A route's compression, checked and ready.
#[derive(Clone, Debug)]
pub(crate) struct Compression {
    offered: Vec<Coding>,
    min_bytes: u64,
    types: Vec<String>,
    levels: Levels,
}

impl Compression {
    /// `config` checked; the name of the field that is wrong, and why.
    pub(crate) fn new(config: &CompressionConfig) -> Result<Self, (String, String)> {
        let mut offered = Vec::new();
        for name in &config.codings {
            let coding = Coding::from_token(name)
                .ok_or_else(|| ("codings".to_owned(), format!("{name:?}: zstd, br or gzip")))?;
            if !offered.contains(&coding) {
                offered.push(coding);
            }
        }
        if offered.is_empty() {
            return Err(("codings".to_owned(), "at least one coding".to_owned()));
        }
        let level = |name: &str, value: i64, range: std::ops::RangeInclusive<i64>| {
            if range.contains(&value) {
                Ok(())
            } else {
                Err((
                    name.to_owned(),
                    format!("{value}: from {} to {}", range.start(), range.end()),
                ))
            }
        };
        level("gzip_level", config.gzip_level.into(), 1..=9)?;
        level("brotli_level", config.brotli_level.into(), 0..=11)?;
        level("zstd_level", config.zstd_level.into(), 1..=19)?;
        Ok(Self {
            offered,
            min_bytes: config.min_bytes,
            types: config
                .types
                .iter()
                .map(|t| t.to_ascii_lowercase())
                .collect(),
            levels: Levels {
                gzip: config.gzip_level,
                brotli: config.brotli_level,
                zstd: config.zstd_level,
            },
        })
    }

    /// Whether `headers` of a `status` response are worth compressing.
    fn worth(&self, status: StatusCode, headers: &HeaderMap) -> bool {
        if status.is_informational()
            || matches!(
                status,
                StatusCode::NO_CONTENT | StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED
            )
        {
            return false;
        }
        if headers.contains_key(CONTENT_ENCODING) {
            return false;
        }
        let length = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if length.is_some_and(|length| length < self.min_bytes) {
            return false;
        }
        let media = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            });
        if !media.is_some_and(|media| self.types.contains(&media)) {
            return false;
        }
        let no_transform = headers.get_all(CACHE_CONTROL).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|d| d.trim().eq_ignore_ascii_case("no-transform"))
            })
        });
        !no_transform
    }

    /// `response` to a `method` request from a client that takes
    /// `accepted`, compressed if it is worth it and the client takes a
    /// coding offered.
    pub(crate) fn apply(
        &self,
        method: &Method,
        accepted: &Accepted,
        response: Response<ProxyBody>,
    ) -> Response<ProxyBody> {
        if !self.worth(response.status(), response.headers()) {
            return response;
        }
        let (mut parts, body) = response.into_parts();
        add_vary(&mut parts.headers);
        let coding = match accepted.choose(&self.offered) {
            Some(coding) if *method != Method::HEAD => coding,
            _ => return Response::from_parts(parts, body),
        };
        // An encoder that cannot start leaves the response as it was.
        let Ok(encoder) = Encoder::new(coding, self.levels) else {
            return Response::from_parts(parts, body);
        };
        let body = ProxyBody::Layered(Box::new(Compressing::new(body, encoder)));
        parts.headers.remove(CONTENT_LENGTH);
        parts.headers.remove(ACCEPT_RANGES);
        parts
            .headers
            .insert(CONTENT_ENCODING, HeaderValue::from_static(coding.token()));
        weaken_etag(&mut parts.headers);
        Response::from_parts(parts, body)
    }
}

/// Adds `Accept-Encoding` to `Vary` unless it is there (or `*` is).
fn add_vary(headers: &mut HeaderMap) {
    let present = headers.get_all(VARY).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',').any(|name| {
                let name = name.trim();
                name == "*" || name.eq_ignore_ascii_case("accept-encoding")
            })
        })
    });
    if !present {
        headers.append(VARY, HeaderValue::from_static("accept-encoding"));
    }
}

/// `"x"` becomes `W/"x"` (RFC 9110 §8.8.3: the compressed bytes are not
/// the ones a strong tag names).
fn weaken_etag(headers: &mut HeaderMap) {
    let Some(tag) = headers.get(ETAG) else {
        return;
    };
    if tag.as_bytes().starts_with(b"W/") {
        return;
    }
    let mut weak = b"W/".to_vec();
    weak.extend_from_slice(tag.as_bytes());
    if let Ok(weak) = HeaderValue::from_bytes(&weak) {
        headers.insert(ETAG, weak);
    }
}
