//! The WebSocket handshake's key and its accept (RFC 6455 §4.2.2), for
//! a WebSocket that came over HTTP/2: its client sends no key (RFC 8441
//! §5), so the proxy asks the backend with a key of its own and checks
//! the backend's accept, which proves the backend speaks WebSocket and
//! answered this handshake.

use std::hash::BuildHasher;

use hyper::header::HeaderValue;

/// The GUID a WebSocket server appends to the key (RFC 6455 §1.3).
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A handshake's key: 16 bytes, base64.
#[derive(Clone, Debug)]
pub(crate) struct Key(String);

impl Key {
    /// A fresh key. The nonce only has to differ between handshakes; std's
    /// `RandomState` is seeded from the system's randomness and never
    /// repeats its keys within a process, so no generator is needed.
    pub(crate) fn new() -> Self {
        let state = std::collections::hash_map::RandomState::new();
        let mut nonce = [0u8; 16];
        nonce[..8].copy_from_slice(&state.hash_one(0u8).to_le_bytes());
        nonce[8..].copy_from_slice(&state.hash_one(1u8).to_le_bytes());
        Self(base64(&nonce))
    }

    /// The key as a header value.
    pub(crate) fn value(&self) -> HeaderValue {
        // Base64 is visible ASCII: always a valid value.
        HeaderValue::from_str(&self.0).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// The accept a WebSocket server answers this key with:
    /// base64(SHA-1(key ‖ GUID)).
    pub(crate) fn accept(&self) -> String {
        let mut context = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
        context.update(self.0.as_bytes());
        context.update(GUID);
        base64(context.finish().as_ref())
    }

    /// Whether `accept` is the backend's right answer to this key.
    pub(crate) fn accepted_by(&self, accept: &[u8]) -> bool {
        self.accept().as_bytes() == accept
    }
}

/// Standard base64 with padding (RFC 4648 §4).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let triple = (byte(0) << 16) | (byte(1) << 8) | byte(2);
        for i in 0..4 {
            if i <= chunk.len() {
                let sextet = (triple >> (18 - 6 * i)) & 63;
                out.push(char::from(ALPHABET[sextet as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648s_vectors() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in vectors {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
    }

    #[test]
    fn the_accept_is_rfc_6455s_example() {
        // RFC 6455 §1.3: the key of "the sample nonce".
        let key = Key(base64(b"the sample nonce"));
        assert_eq!(key.0, "dGhlIHNhbXBsZSBub25jZQ==");
        assert!(key.accepted_by(b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
        assert!(!key.accepted_by(b"s3pPLMBiTxaQ9kYGzzhZRbK+xOp="));
        assert!(!key.accepted_by(b""));
    }

    #[test]
    fn keys_are_16_bytes_and_differ() {
        let keys: Vec<String> = (0..64).map(|_| Key::new().0).collect();
        for key in &keys {
            assert_eq!(key.len(), 24);
            assert!(key.ends_with("=="));
        }
        let distinct: std::collections::HashSet<&String> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len());
    }
}
