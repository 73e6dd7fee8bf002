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

fn main() -> ExitCode {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: loadbalance-proxy CONFIG.toml");
        return ExitCode::from(2);
    };
    loadbalance_proxy::run(path)
}
