//! The access log (issue 25, 6): every field of its lines read back, in
//! JSON and in nginx's combined format, over plaintext HTTP/1.1 and HTTP/2
//! over TLS, and none lost under load; `--check` on good and bad files.

use crate::harness::*;
use crate::tls::{Authority, Dir, certificates, curl, have_curl};

use std::process::Command;
use std::time::Duration;

use hyper::{Method, StatusCode};

/// The lines of `path` once there are `count` of them (within 5 s).
async fn lines(path: &std::path::Path, count: usize) -> Vec<String> {
    let read = || {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    eventually(Duration::from_secs(5), || read().len() >= count).await;
    read()
}

// JSON lines: every field, for HTTP/1.1, an error of the proxy's own, and
// HTTP/2 over TLS; 2,000 requests from 8 clients at once, no line lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_access_lines_carry_every_field_and_none_is_lost() {
    if !have_curl() {
        return;
    }
    bounded(async {
        let dir = Dir::new("access-json");
        let authority = Authority::new("test CA");
        authority.write(&dir.file("ca.pem"));
        let log = dir.file("access.log");
        let web = backend("web").await;
        let proxy = start(&format!(
            "{}{}\n[log]\naccess = \"json\"\naccess_file = {:?}\n",
            web_config("", "", &[&web]),
            certificates(&dir, &authority, "one"),
            log.display().to_string()
        ))
        .await;
        let request = build(Method::GET, proxy.addr(), "site.test", "/path?q=1")
            .header("user-agent", "tester/1")
            .header("referer", "http://ref.test/")
            .body(Default::default())
            .expect("a request");
        assert_eq!(send(&client(), request).await.status, StatusCode::OK);
        let refused = raw(
            proxy.addr(),
            b"GET /../x HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n",
            Duration::from_secs(2),
        )
        .await;
        assert!(refused.starts_with("HTTP/1.1 400"), "{refused:?}");
        let port = proxy.tls_addr().expect("a TLS listener").port();
        assert!(curl(&dir.file("ca.pem"), "a.test", port, true).await.ok);

        let first = lines(&log, 3).await;
        let parsed: Vec<serde_json::Value> = first
            .iter()
            .map(|line| serde_json::from_str(line).expect("a JSON line"))
            .collect();
        let find = |target: &str| {
            parsed
                .iter()
                .find(|line| line["target"] == target)
                .unwrap_or_else(|| panic!("no line for {target}: {first:?}"))
        };
        let ok = find("/path?q=1");
        assert_eq!(ok["client"], "127.0.0.1");
        assert_eq!(ok["method"], "GET");
        assert_eq!(ok["protocol"], "HTTP/1.1");
        assert_eq!(ok["tls"], serde_json::Value::Null);
        assert_eq!(ok["status"], 200);
        assert_eq!(ok["bytes"], 3);
        assert_eq!(ok["referer"], "http://ref.test/");
        assert_eq!(ok["user_agent"], "tester/1");
        assert_eq!(ok["route"], "all");
        assert_eq!(ok["upstream"], web.addr.to_string());
        let request_time = ok["request_time"].as_f64().expect("a time");
        let upstream_time = ok["upstream_time"].as_f64().expect("a time");
        assert!(upstream_time > 0.0 && request_time >= upstream_time, "{ok}");
        assert!(ok["time"].as_f64().expect("a time") > 1.7e9);
        let bad = find("/../x");
        assert_eq!(bad["status"], 400);
        assert_eq!(bad["upstream"], serde_json::Value::Null);
        assert_eq!(bad["route"], serde_json::Value::Null);
        let h2 = find("/");
        assert_eq!(h2["protocol"], "HTTP/2.0");
        assert_eq!(h2["tls"], "TLSv1.3");
        assert_eq!(h2["status"], 200);

        // Under load: 8 clients, 250 requests each.
        let mut clients = Vec::new();
        for _ in 0..8 {
            let addr = proxy.addr();
            clients.push(tokio::spawn(async move {
                let client = client();
                for _ in 0..250 {
                    assert_eq!(
                        get(&client, addr, "site.test", "/load").await.status,
                        StatusCode::OK
                    );
                }
            }));
        }
        for done in clients {
            done.await.expect("a client");
        }
        let all = lines(&log, 2_003).await;
        assert_eq!(all.len(), 2_003, "every request a line");
        assert_eq!(
            all.iter()
                .filter(|l| l.contains("\"target\":\"/load\""))
                .count(),
            2_000
        );
        let scrape = parse_metrics(&proxy.metrics());
        assert_eq!(
            sample(&scrape, "proxy_access_log_dropped_total", &[]),
            Some(0.0)
        );
        proxy.shutdown().await;
    })
    .await;
}

// nginx's combined format, with its escapes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn combined_access_lines_are_nginx_s() {
    bounded(async {
        let dir = Dir::new("access-combined");
        let log = dir.file("access.log");
        let web = backend("web").await;
        let proxy = start(&format!(
            "{}\n[log]\naccess = \"combined\"\naccess_file = {:?}\n",
            web_config("", "", &[&web]),
            log.display().to_string()
        ))
        .await;
        let answer = raw(
            proxy.addr(),
            b"GET /a%22b HTTP/1.1\r\nHost: site.test\r\nUser-Agent: say \"hi\"\r\nConnection: close\r\n\r\n",
            Duration::from_secs(2),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
        let line = lines(&log, 1).await.remove(0);
        let (start, rest) = line.split_once(" [").expect("a time");
        assert_eq!(start, "127.0.0.1 - -");
        let (time, rest) = rest.split_once("] ").expect("a time");
        assert_eq!(time.len(), "06/Dec/2026:05:45:00 +0000".len(), "{time}");
        assert!(time.ends_with(" +0000"), "{time}");
        assert_eq!(
            rest,
            "\"GET /a%22b HTTP/1.1\" 200 3 \"-\" \"say \\x22hi\\x22\""
        );
        proxy.shutdown().await;
    })
    .await;
}

// `--check` validates without starting: certificates and keys loaded,
// every setting checked, the field at fault named.
#[test]
fn check_validates_a_file_and_names_what_is_wrong() {
    let dir = Dir::new("check");
    let authority = Authority::new("test CA");
    let good = format!(
        "{}{}{}",
        server_section(""),
        catch_all("web"),
        pool_at("web", "", &["127.0.0.1:9".parse().expect("an address")])
    ) + &certificates(&dir, &authority, "one");
    let run = |name: &str, text: &str| {
        let path = dir.file(name);
        std::fs::write(&path, text).expect("writes the file");
        let output = Command::new(env!("CARGO_BIN_EXE_loadbalance-proxy"))
            .arg("--check")
            .arg(&path)
            .output()
            .expect("runs the proxy");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, said) = run("good.toml", &good);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("valid"), "{said}");
    for (name, text, field) in [
        (
            "typo.toml",
            good.replace("[server]", "[server]\nlistne = 1"),
            "listne",
        ),
        (
            "cert.toml",
            good.replace("a-one.pem", "missing.pem"),
            "tls.certificates[1].cert",
        ),
        (
            "key.toml",
            good.replace("a-one.key", "b-one.key"),
            "tls.certificates[1].key",
        ),
        (
            "level.toml",
            format!("{good}\n[log]\nlevel = \"loud\"\n"),
            "log.level",
        ),
    ] {
        let (code, said) = run(name, &text);
        assert_eq!(code, Some(1), "{name}: {said}");
        assert!(said.contains(field), "{name}: {said}");
    }
}
