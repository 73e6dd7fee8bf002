//! An HTTP/1.1 reverse proxy on this crate: routes by host and path to
//! pools of backends, balances with any of the crate's algorithms, limits
//! and bans clients, checks backends' health actively and passively,
//! reloads its configuration on SIGHUP or when the file changes, serves
//! `/metrics` on an admin port, and shuts down gracefully on SIGINT or
//! SIGTERM.
//!
//! `cargo run --release -p loadbalance-proxy -- examples/proxy/proxy.toml`
//! (`--check` before the file validates it, certificates included,
//! without starting, as `nginx -t` does)
//! (or `cargo install --path examples/proxy --profile production`, then
//! `loadbalance-proxy proxy.toml`)
//!
//! README.md's "Run the proxy" explains the configuration file.

use std::process::ExitCode;

/// mimalloc: about 6% less CPU a request than glibc's malloc
/// (BENCHMARKS.md, "The proxy as fast as nginx").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    match (args.next(), args.next(), args.next()) {
        (Some(flag), Some(path), None) if flag == "--check" => loadbalance_proxy::check(path),
        (Some(path), None, None) if path != "--check" => loadbalance_proxy::run(path),
        _ => {
            eprintln!(
                "usage: loadbalance-proxy CONFIG.toml\n       loadbalance-proxy --check CONFIG.toml"
            );
            ExitCode::from(2)
        }
    }
}
