//! Upgrade tunnels: WebSocket, and any other HTTP/1.1 `Upgrade` but h2c
//! (nginx's `proxy_http_version 1.1` with `Upgrade` passed on), and
//! WebSocket over HTTP/2 (RFC 8441). The handshake is forwarded, the
//! backend's switch relayed, then bytes are copied both ways until either
//! side closes. The backend stays picked for the tunnel's life (counted
//! active, so least-connections sees long tunnels), as does the client's
//! admission; the client connection's idle bound (`idle_timeout_ms`, no
//! byte either way) closes an idle tunnel; `max_tunnels_per_client`
//! bounds one client's tunnels; shutdown lets tunnels run until the
//! grace period ends.
//!
//! - [`ask`]: what a request asks for, how the backend is asked, how its
//!   agreement is told to the client;
//! - [`websocket_key`]: the key and accept of a WebSocket handshake the
//!   proxy makes itself (for a client on HTTP/2);
//! - [`places`]: the tunnels open, per client and in all;
//! - [`copy`]: a tunnel's life.

mod ask;
mod copy;
mod places;
mod websocket_key;

pub(crate) use ask::{requested, websocket_over_h2};
pub(crate) use copy::{Held, run};
pub(crate) use places::Tunnels;
