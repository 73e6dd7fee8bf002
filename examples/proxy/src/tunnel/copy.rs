//! A tunnel's life: bytes copied both ways between the client's and the
//! backend's connections, with the backend's pick, the client's
//! admission and its tunnel place held until the end.

use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use loadbalance::Picked;
use loadbalance::limit::Admission;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use super::places::TunnelPermit;
use crate::links::Switch;
use crate::stopped;

/// What a tunnel holds for its life.
pub(crate) struct Held {
    pub(crate) picked: Picked<String>,
    pub(crate) admission: Option<Admission>,
    pub(crate) permit: TunnelPermit,
}

/// Copies bytes both ways between the client's and the backend's
/// upgraded connections until either closes, either fails (the client
/// side's idle bound included), or shutdown's grace period ends.
pub(crate) async fn run(
    client: OnUpgrade,
    backend: Switch,
    held: Held,
    stop: watch::Receiver<bool>,
    grace: Duration,
) {
    let Ok(client) = client.await else {
        return;
    };
    let client = TokioIo::new(client);
    match backend {
        Switch::Http1(Some(backend)) => copy(client, backend, held, stop, grace).await,
        Switch::Hyper(backend) => {
            if let Ok(backend) = backend.await {
                copy(client, TokioIo::new(backend), held, stop, grace).await;
            }
        }
        Switch::Http1(None) => {}
    }
}

async fn copy<C, B>(
    mut client: C,
    mut backend: B,
    held: Held,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    held.permit.opened();
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut backend) => {}
        () = async {
            stopped(&mut stop).await;
            tokio::time::sleep(grace).await;
        } => {}
    }
    // However it ended (a close, the idle bound, a reset), the tunnel is
    // no failure of the backend's: either side may end a tunnel.
    held.picked.finish(true);
    drop(held.admission);
    drop(held.permit);
}
