//! A reverse proxy on the pool, in one file: the pool from a TOML
//! configuration (weighted least-connections, nginx's passive health),
//! requests balanced through the tower service with each backend held
//! until its response body ends, and the pool's metrics on `/metrics`.
//!
//! Everything runs on loopback and stops by itself: three upstreams that
//! answer with their name (`b` answers 503 on `/flaky`), the proxy, and a
//! client that sends 60 requests and prints who answered. Request bodies
//! stream, so they are not replayed: `b`'s first 503s reach the client,
//! and its third failure ejects it for 10 s (`max_fails = 3`). `a` has
//! weight 2 and takes twice `c`'s share.
//!
//! `cargo run --example pool_proxy --features tower,serde,metrics`

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, Response, StatusCode};
use axum::response::IntoResponse;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use loadbalance::tower::{Balance, BalanceError, BalanceLayer, Http, UntilBodyEnd};
use loadbalance::{Pool, PoolConfig, PrometheusText, RetryBudget, RetryPolicy};
use tokio::net::TcpListener;
use tower_layer::Layer;
use tower_service::Service;

type Upstream = Balance<Client<HttpConnector, Body>, String, Http, UntilBodyEnd>;

#[derive(Clone)]
struct Proxy {
    pool: Arc<Pool<String>>,
    upstream: Upstream,
}

/// Every request but `/metrics` goes upstream; no backend is a 503, a
/// failed exchange a 502.
async fn proxy(State(mut proxy): State<Proxy>, req: Request<Body>) -> Response<Body> {
    if req.uri().path() == "/metrics" {
        let mut metrics = PrometheusText::new();
        metrics.pool("upstreams", &proxy.pool);
        return metrics.render().into_response();
    }
    match proxy.upstream.call(req).await {
        Ok(res) => res.map(Body::new),
        Err(BalanceError::Pick(_)) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}

/// An upstream that answers with its name, or 503 on `/flaky` if `flaky`.
async fn upstream(name: &'static str, flaky: bool) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("loopback");
    let addr = listener.local_addr().expect("bound").to_string();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let answer = service_fn(move |req: Request<Incoming>| async move {
                let status = if flaky && req.uri().path() == "/flaky" {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::OK
                };
                let mut res = Response::new(Full::new(Bytes::from(name)));
                *res.status_mut() = status;
                Ok::<_, Infallible>(res)
            });
            tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), answer));
        }
    });
    addr
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (a, b, c) = (
        upstream("a", false).await,
        upstream("b", true).await,
        upstream("c", false).await,
    );
    let config: PoolConfig<String> = toml::from_str(&format!(
        r#"
        algorithm = "least_conn"
        health = {{ max_fails = 3, fail_timeout_ms = 10000, slow_start_ms = 0, when_all_ejected = "panic" }}
        backends = [
            {{ server = "{a}", weight = 2 }},
            {{ server = "{b}" }},
            {{ server = "{c}", max_conns = 100 }},
        ]
        "#
    ))?;
    let pool = Arc::new(config.build()?);
    let budget = Arc::new(RetryBudget::new(20, 10, 100));
    let upstream = BalanceLayer::new(Arc::clone(&pool))
        .retry(RetryPolicy::attempts(2).budget(budget))
        .hold_body()
        .layer(Client::builder(TokioExecutor::new()).build_http());
    let app = axum::Router::new()
        .fallback(proxy)
        .with_state(Proxy { pool, upstream });
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let at = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut answered: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..60 {
        let path = if i % 2 == 0 { "/" } else { "/flaky" };
        let res = client.get(format!("http://{at}{path}").parse()?).await?;
        let status = res.status();
        let name = String::from_utf8(res.into_body().collect().await?.to_bytes().to_vec())?;
        *answered.entry(format!("{status} from {name}")).or_default() += 1;
    }
    println!("60 requests through the proxy at {at}:");
    for (answer, count) in &answered {
        println!("  {count:>3}  {answer}");
    }
    let metrics = client.get(format!("http://{at}/metrics").parse()?).await?;
    let text = String::from_utf8(metrics.into_body().collect().await?.to_bytes().to_vec())?;
    println!("\n/metrics (picks and failures):");
    for line in text.lines().filter(|l| {
        l.starts_with("loadbalance_backend_picks_total")
            || l.starts_with("loadbalance_backend_failures_total")
    }) {
        println!("  {line}");
    }
    Ok(())
}
