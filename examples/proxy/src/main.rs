//! An HTTP/1.1 reverse proxy on this crate: routes by host and path to
//! pools of backends, balances with any of the crate's algorithms, limits
//! and bans clients, checks backends' health actively and passively,
//! reloads its configuration on SIGHUP or when the file changes, serves
//! `/metrics` on an admin port, and shuts down gracefully on SIGINT or
//! SIGTERM.
//!
//! `cargo run --release -p loadbalance-proxy -- examples/proxy/proxy.toml`
//! (or `cargo install --path examples/proxy`, then
//! `loadbalance-proxy proxy.toml`)
//!
//! README.md's "Run the proxy" explains the configuration file.

use std::process::ExitCode;

use loadbalance_proxy::Proxy;

fn main() -> ExitCode {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: loadbalance-proxy CONFIG.toml");
        return ExitCode::from(2);
    };
    // Reloads, active checks, signals and /metrics; requests are served by
    // the proxy's worker threads.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let proxy = match Proxy::from_file(&path).await {
            Ok(proxy) => proxy,
            Err(error) => {
                eprintln!("{error}");
                return ExitCode::FAILURE;
            }
        };
        eprintln!("listening on {}", proxy.addr());
        eprintln!("metrics on http://{}/metrics", proxy.admin_addr());
        if let Err(error) = signals(&proxy).await {
            eprintln!("signals: {error}");
        }
        eprintln!("shutting down: finishing requests in flight");
        let cut = proxy.shutdown().await;
        if cut > 0 {
            eprintln!("{cut} connections were still busy at the end of the grace period");
        }
        ExitCode::SUCCESS
    })
}

/// Reloads on SIGHUP; returns on SIGINT or SIGTERM.
async fn signals(proxy: &Proxy) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangup = signal(SignalKind::hangup())?;
    let mut terminate = signal(SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = hangup.recv() => { let _ = proxy.reload().await; }
            _ = terminate.recv() => return Ok(()),
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}
