//! The access log: one line a request, written when its response ends
//! (or the client leaves), in nginx's `combined` format or as JSON lines
//! with every field: client, method, target, protocol, status, bytes,
//! referer, user agent, route, upstream, request and upstream times, TLS
//! version.
//!
//! Lines go through a bounded channel to a writer thread of their own, so
//! a slow disk never blocks a request: when the channel is full a line is
//! dropped and counted (`proxy_access_log_dropped_total`), never waited
//! for. The writer flushes whenever the channel runs empty.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::{HeaderName, REFERER, USER_AGENT};
use hyper::{Request, Response, Version};

use super::body::{BoxError, ProxyBody};
use super::config::{ConfigError, LogConfig};
use super::forward::{Outcome, Protocol};

/// Lines waiting for the writer at most.
const QUEUE: usize = 65_536;

/// How lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// nginx's `combined`.
    Combined,
    /// One JSON object a line.
    Json,
}

/// A running access log.
pub(crate) struct AccessLog {
    format: Format,
    lines: SyncSender<String>,
    /// Lines dropped because the writer was behind.
    pub(crate) dropped: AtomicU64,
}

/// One request, as logged.
#[derive(Debug, Default)]
pub(crate) struct Entry {
    pub(crate) client: Option<IpAddr>,
    pub(crate) method: String,
    pub(crate) target: String,
    pub(crate) protocol: &'static str,
    pub(crate) tls: Option<&'static str>,
    pub(crate) status: u16,
    pub(crate) bytes: u64,
    pub(crate) referer: Option<String>,
    pub(crate) user_agent: Option<String>,
    pub(crate) route: Option<String>,
    pub(crate) upstream: Option<String>,
    pub(crate) upstream_time: Option<Duration>,
    pub(crate) request_time: Duration,
}

impl AccessLog {
    /// Starts the writer for `config`, or `None` when the log is off.
    pub(crate) fn open(config: &LogConfig) -> Result<Option<Arc<Self>>, ConfigError> {
        let format = match config.access.as_str() {
            "off" => return Ok(None),
            "combined" => Format::Combined,
            "json" => Format::Json,
            other => {
                return Err(ConfigError::invalid(
                    "log.access",
                    format!("{other:?}: off, combined or json"),
                ));
            }
        };
        let out: Box<dyn std::io::Write + Send> = match &config.access_file {
            None => Box::new(std::io::stderr()),
            Some(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| {
                        ConfigError::invalid("log.access_file", format!("{}: {e}", path.display()))
                    })?,
            ),
        };
        let (lines, receiver) = std::sync::mpsc::sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("access-log".to_owned())
            .spawn(move || write_lines(&receiver, out))
            .map_err(|e| ConfigError::invalid("log.access", e))?;
        Ok(Some(Arc::new(Self {
            format,
            lines,
            dropped: AtomicU64::new(0),
        })))
    }

    /// Queues `entry`'s line; never waits.
    pub(crate) fn record(&self, entry: &Entry) {
        let line = match self.format {
            Format::Combined => combined(entry, SystemTime::now()),
            Format::Json => json(entry, SystemTime::now()),
        };
        match self.lines.try_send(line) {
            Ok(()) => {}
            // Relaxed: a count on its own.
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Relaxed);
            }
        }
    }
}

/// The writer thread: lines as they come, flushed whenever none wait;
/// ends when the log is dropped.
fn write_lines(lines: &Receiver<String>, out: Box<dyn std::io::Write + Send>) {
    let mut out = std::io::BufWriter::new(out);
    while let Ok(line) = lines.recv() {
        let _ = out.write_all(line.as_bytes());
        // Everything already queued, then a flush.
        while let Ok(line) = lines.try_recv() {
            let _ = out.write_all(line.as_bytes());
        }
        let _ = out.flush();
    }
}

/// `$remote_addr - - [$time_local] "$request" $status $body_bytes_sent
/// "$http_referer" "$http_user_agent"`, nginx's escaping (`"`, `\` and
/// bytes outside printable ASCII as `\xHH`).
fn combined(entry: &Entry, now: SystemTime) -> String {
    let mut line = String::with_capacity(160);
    let client = entry.client.map_or("-".to_owned(), |c| c.to_string());
    let _ = write!(line, "{client} - - [{}] \"", clf_time(now));
    escape_clf(&mut line, &entry.method);
    line.push(' ');
    escape_clf(&mut line, &entry.target);
    let _ = write!(
        line,
        " {}\" {} {} \"",
        entry.protocol, entry.status, entry.bytes
    );
    escape_clf(&mut line, entry.referer.as_deref().unwrap_or("-"));
    line.push_str("\" \"");
    escape_clf(&mut line, entry.user_agent.as_deref().unwrap_or("-"));
    line.push_str("\"\n");
    line
}

fn escape_clf(out: &mut String, text: &str) {
    for byte in text.bytes() {
        match byte {
            b'"' | b'\\' => {
                let _ = write!(out, "\\x{byte:02X}");
            }
            0x20..=0x7e => out.push(char::from(byte)),
            _ => {
                let _ = write!(out, "\\x{byte:02X}");
            }
        }
    }
}

/// Every field, one JSON object.
fn json(entry: &Entry, now: SystemTime) -> String {
    let mut line = String::with_capacity(320);
    let seconds = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let _ = write!(line, "{{\"time\":{:.3},\"client\":", seconds.as_secs_f64());
    json_opt(&mut line, entry.client.map(|c| c.to_string()).as_deref());
    line.push_str(",\"method\":");
    json_str(&mut line, &entry.method);
    line.push_str(",\"target\":");
    json_str(&mut line, &entry.target);
    line.push_str(",\"protocol\":");
    json_str(&mut line, entry.protocol);
    line.push_str(",\"tls\":");
    json_opt(&mut line, entry.tls);
    let _ = write!(
        line,
        ",\"status\":{},\"bytes\":{},\"referer\":",
        entry.status, entry.bytes
    );
    json_opt(&mut line, entry.referer.as_deref());
    line.push_str(",\"user_agent\":");
    json_opt(&mut line, entry.user_agent.as_deref());
    line.push_str(",\"route\":");
    json_opt(&mut line, entry.route.as_deref());
    line.push_str(",\"upstream\":");
    json_opt(&mut line, entry.upstream.as_deref());
    let _ = write!(
        line,
        ",\"request_time\":{:.6},\"upstream_time\":",
        entry.request_time.as_secs_f64()
    );
    match entry.upstream_time {
        Some(time) => {
            let _ = write!(line, "{:.6}", time.as_secs_f64());
        }
        None => line.push_str("null"),
    }
    line.push_str("}\n");
    line
}

fn json_opt(out: &mut String, text: Option<&str>) {
    match text {
        Some(text) => json_str(out, text),
        None => out.push_str("null"),
    }
}

fn json_str(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `06/Dec/2026:05:45:00 +0000` (nginx's `$time_local`, in UTC).
fn clf_time(now: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let seconds = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil(days);
    format!(
        "{day:02}/{}/{year}:{:02}:{:02}:{:02} +0000",
        MONTHS[usize::from(month - 1)],
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// The civil date of `days` since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil(days: u64) -> (i64, u8, u8) {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A request's line, begun when its head arrives.
pub(crate) struct Pending {
    log: Arc<AccessLog>,
    entry: Entry,
    started: Instant,
}

impl Pending {
    /// What `request`'s head says, for `log`.
    pub(crate) fn begin<B>(log: &Arc<AccessLog>, request: &Request<B>, protocol: Protocol) -> Self {
        let header = |name: HeaderName| {
            request
                .headers()
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        let entry = Entry {
            method: request.method().to_string(),
            target: request
                .uri()
                .path_and_query()
                .map_or_else(|| request.uri().to_string(), |pq| pq.as_str().to_owned()),
            protocol: match request.version() {
                Version::HTTP_10 => "HTTP/1.0",
                Version::HTTP_2 => "HTTP/2.0",
                _ => "HTTP/1.1",
            },
            tls: match protocol {
                Protocol::Http1 | Protocol::H2c => None,
                Protocol::Https1 { tls13 } | Protocol::H2 { tls13 } => {
                    Some(if tls13 { "TLSv1.3" } else { "TLSv1.2" })
                }
            },
            referer: header(REFERER),
            user_agent: header(USER_AGENT),
            ..Entry::default()
        };
        Self {
            log: Arc::clone(log),
            entry,
            started: Instant::now(),
        }
    }
}

/// `response` with its access line written when its body ends.
pub(crate) fn logged(response: Response<ProxyBody>, pending: Option<Pending>) -> Response<Logged> {
    let Some(mut pending) = pending else {
        return response.map(|body| Logged { body, line: None });
    };
    pending.entry.status = response.status().as_u16();
    if let Some(outcome) = response.extensions().get::<Outcome>() {
        pending.entry.client = outcome.client;
        pending.entry.route.clone_from(&outcome.route);
        pending.entry.upstream.clone_from(&outcome.upstream);
        pending.entry.upstream_time = outcome.upstream_time;
    }
    response.map(|body| Logged {
        body,
        line: Some(Box::new(pending)),
    })
}

/// A response body that writes its request's access line when it ends,
/// or when it is dropped (the client left), with the bytes sent.
pub(crate) struct Logged {
    body: ProxyBody,
    line: Option<Box<Pending>>,
}

impl Logged {
    fn finish(&mut self) {
        if let Some(pending) = self.line.take() {
            let Pending {
                log,
                mut entry,
                started,
            } = *pending;
            entry.request_time = started.elapsed();
            log.record(&entry);
        }
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        self.finish();
    }
}

impl Body for Logged {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.body).poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let (Some(data), Some(line)) = (frame.data_ref(), this.line.as_mut()) {
                    line.entry.bytes += data.len() as u64;
                }
                if this.body.is_end_stream() {
                    this.finish();
                }
            }
            None | Some(Err(_)) => this.finish(),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            client: Some("192.0.2.7".parse().expect("an address")),
            method: "GET".to_owned(),
            target: "/a \"b\"?q=\u{e9}".to_owned(),
            protocol: "HTTP/1.1",
            tls: Some("TLSv1.3"),
            status: 200,
            bytes: 512,
            referer: None,
            user_agent: Some("curl/7.88".to_owned()),
            route: Some("api".to_owned()),
            upstream: Some("127.0.0.1:9001".to_owned()),
            upstream_time: Some(Duration::from_millis(3)),
            request_time: Duration::from_millis(4),
        }
    }

    #[test]
    fn combined_is_nginx_s_with_its_escapes() {
        let at = UNIX_EPOCH + Duration::from_secs(1_796_535_900);
        assert_eq!(
            combined(&entry(), at),
            "192.0.2.7 - - [06/Dec/2026:05:45:00 +0000] \"GET /a \\x22b\\x22?q=\\xC3\\xA9 HTTP/1.1\" \
             200 512 \"-\" \"curl/7.88\"\n"
        );
    }

    #[test]
    fn json_has_every_field() {
        let at = UNIX_EPOCH + Duration::from_secs(1_796_535_900);
        assert_eq!(
            json(&entry(), at),
            "{\"time\":1796535900.000,\"client\":\"192.0.2.7\",\"method\":\"GET\",\
             \"target\":\"/a \\\"b\\\"?q=\u{e9}\",\"protocol\":\"HTTP/1.1\",\"tls\":\"TLSv1.3\",\
             \"status\":200,\"bytes\":512,\"referer\":null,\"user_agent\":\"curl/7.88\",\
             \"route\":\"api\",\"upstream\":\"127.0.0.1:9001\",\"request_time\":0.004000,\
             \"upstream_time\":0.003000}\n"
        );
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(11_016), (2000, 2, 29));
        assert_eq!(civil(20_793), (2026, 12, 6));
    }
}
