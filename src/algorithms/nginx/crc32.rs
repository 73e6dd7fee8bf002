//! CRC-32 as zlib and nginx's `ngx_crc32` compute it: the IEEE 802.3
//! polynomial, reflected (`0xEDB88320`), initial value and final XOR
//! `0xFFFFFFFF`, one table lookup a byte. A table of our own rather than a
//! crate: 30 lines, and the hashes must stay exactly these.

/// The byte-at-a-time table, computed at compile time.
const TABLE: [u32; 256] = table();

const fn table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut byte = 0;
    while byte < 256 {
        let mut crc = byte as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[byte] = crc;
        byte += 1;
    }
    table
}

/// A running CRC-32: nginx's `ngx_crc32_init`, `ngx_crc32_update` and
/// `ngx_crc32_final`. `Copy`, so a state can be forked (the ketama ring
/// continues one base state per point).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Crc32(u32);

impl Crc32 {
    pub(crate) const fn new() -> Self {
        Self(0xFFFF_FFFF)
    }

    #[inline]
    pub(crate) fn update(mut self, bytes: &[u8]) -> Self {
        for &byte in bytes {
            self.0 = TABLE[((self.0 ^ u32::from(byte)) & 0xFF) as usize] ^ (self.0 >> 8);
        }
        self
    }

    #[inline]
    pub(crate) fn finish(self) -> u32 {
        self.0 ^ 0xFFFF_FFFF
    }
}

/// The CRC-32 of `bytes` (nginx's `ngx_crc32_long`, zlib's `crc32`).
#[inline]
pub(crate) fn crc32(bytes: &[u8]) -> u32 {
    Crc32::new().update(bytes).finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b"a"), 0xE8B7_BE43);
        assert_eq!(
            crc32(b"The quick brown fox jumps over the lazy dog"),
            0x414F_A339
        );
    }

    #[test]
    fn updates_compose() {
        let split = Crc32::new().update(b"1234").update(b"").update(b"56789");
        assert_eq!(split.finish(), 0xCBF4_3926);
    }
}
