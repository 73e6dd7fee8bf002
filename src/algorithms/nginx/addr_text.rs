//! A client address as nginx's `$remote_addr` spells it (`ngx_inet_ntop`),
//! written into a stack buffer: the key of `hash $remote_addr consistent`.

use std::net::IpAddr;

/// The longest text: `ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255` is
/// 45 bytes (nginx's `NGX_INET6_ADDRSTRLEN` less the NUL).
const MAX_LEN: usize = 45;

/// An address's text, on the stack.
pub(crate) struct AddrText {
    bytes: [u8; MAX_LEN],
    len: usize,
}

impl AddrText {
    /// `addr` as nginx prints it: IPv4 dotted decimal; IPv6 as
    /// `ngx_inet6_ntop` does (lowercase hex without leading zeros, the
    /// first longest run of two or more zero groups as `::`, and the last
    /// four bytes dotted for `::ffff:a.b.c.d`, `::a.b.c.d` and `::0.0.c.d`
    /// with `c.d` not `0.x` or `x.1`). Rust's `Display` differs on the last
    /// two forms, hence this function.
    pub(crate) fn new(addr: IpAddr) -> Self {
        let mut text = Self {
            bytes: [0; MAX_LEN],
            len: 0,
        };
        match addr {
            IpAddr::V4(v4) => text.dotted(v4.octets()),
            IpAddr::V6(v6) => text.inet6(&v6.octets()),
        }
        text
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    fn push(&mut self, byte: u8) {
        // Never past MAX_LEN: the longest text fits (see above).
        if let Some(slot) = self.bytes.get_mut(self.len) {
            *slot = byte;
            self.len += 1;
        }
    }

    /// `%ud`: decimal, no leading zeros.
    fn decimal(&mut self, value: u8) {
        if value >= 100 {
            self.push(b'0' + value / 100);
        }
        if value >= 10 {
            self.push(b'0' + value / 10 % 10);
        }
        self.push(b'0' + value % 10);
    }

    /// `%xd`: lowercase hex, no leading zeros.
    fn hex(&mut self, value: u16) {
        let mut started = false;
        for shift in [12, 8, 4, 0] {
            let nibble = (value >> shift) & 0xF;
            if nibble != 0 || started || shift == 0 {
                started = true;
                self.push(b"0123456789abcdef"[usize::from(nibble)]);
            }
        }
    }

    fn dotted(&mut self, [a, b, c, d]: [u8; 4]) {
        self.decimal(a);
        self.push(b'.');
        self.decimal(b);
        self.push(b'.');
        self.decimal(c);
        self.push(b'.');
        self.decimal(d);
    }

    /// `ngx_inet6_ntop`, step by step.
    fn inet6(&mut self, p: &[u8; 16]) {
        // The first longest run of zero groups, of at least two.
        let (mut zero, mut last) = (usize::MAX, usize::MAX);
        let (mut max, mut n) = (1usize, 0usize);
        for i in (0..16).step_by(2) {
            if p[i] != 0 || p[i + 1] != 0 {
                if max < n {
                    zero = last;
                    max = n;
                }
                n = 0;
                continue;
            }
            if n == 0 {
                last = i;
            }
            n += 1;
        }
        if max < n {
            zero = last;
            max = n;
        }
        let mut end = 16;
        if zero == 0 {
            if (max == 5 && p[10] == 0xff && p[11] == 0xff)
                || max == 6
                || (max == 7 && p[14] != 0 && p[15] != 1)
            {
                end = 12;
            }
            self.push(b':');
        }
        let mut i = 0;
        while i < end {
            if i == zero {
                self.push(b':');
                i += max * 2;
                continue;
            }
            self.hex(u16::from_be_bytes([p[i], p[i + 1]]));
            if i < 14 {
                self.push(b':');
            }
            i += 2;
        }
        if end == 12 {
            self.dotted([p[12], p[13], p[14], p[15]]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(addr: &str) -> String {
        let addr: IpAddr = addr.parse().expect("an address");
        String::from_utf8(AddrText::new(addr).as_bytes().to_vec()).expect("ascii")
    }

    #[test]
    fn spells_addresses_as_nginx() {
        for (addr, nginx) in [
            ("0.0.0.0", "0.0.0.0"),
            ("192.168.100.255", "192.168.100.255"),
            ("10.0.0.1", "10.0.0.1"),
            ("::", "::"),
            ("::1", "::1"),
            ("::2", "::2"),
            ("::101", "::101"),
            ("::102", "::0.0.1.2"),
            ("::1.2.3.4", "::1.2.3.4"),
            ("::ffff:1.2.3.4", "::ffff:1.2.3.4"),
            ("2001:db8::1", "2001:db8::1"),
            ("2001:db8::", "2001:db8::"),
            ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),
            ("2001:0:0:1::1", "2001:0:0:1::1"),
            ("1:0:0:2:0:0:0:3", "1:0:0:2::3"),
            ("fe80::abcd:ef01:2345:6789", "fe80::abcd:ef01:2345:6789"),
            (
                "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            ),
        ] {
            assert_eq!(text(addr), nginx, "{addr}");
        }
    }
}
