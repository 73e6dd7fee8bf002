#!/usr/bin/env python3
"""nginx's upstream hashes, rewritten line by line from the C source, to
produce the reference maps that tests/nginx_hash.rs checks the Rust
balancers against, bit for bit.

    python3 tests/nginx_reference.py > tests/data/nginx_reference.txt

Sources (nginx 1.2x, src/http/modules/):
  ngx_http_upstream_ip_hash_module.c  ngx_http_upstream_get_ip_hash_peer
  ngx_http_upstream_hash_module.c     ngx_http_upstream_get_hash_peer,
                                      ngx_http_upstream_update_chash (the
                                      ring), ngx_http_upstream_find_chash_point,
                                      ngx_http_upstream_get_chash_peer
CRC-32 is zlib's (nginx's ngx_crc32_long/ngx_crc32_update are the same
reflected 0xEDB88320 CRC).

Each request object keeps the state nginx keeps per request (hash, tries,
rehash, the tried bitmap), so a second get_peer() call is nginx's retry
after the first peer failed ("next upstream").

Where nginx gives up (more than 20 tries) it falls back to round-robin,
which depends on every other request in flight. The crate falls back
deterministically instead, and so does this script (`fallback`): the first
peer that may take the pick at or after the last candidate, in server
order, wrapping. Lines where that happened end in "fallback".

Two deliberate conventions of the crate, both reproduced here:
  - an IPv4-mapped IPv6 client counts as its IPv4 address (ip_hash hashes
    three octets; $remote_addr is the dotted IPv4 text);
  - a peer is one server line (nginx would make one peer per address of a
    name that resolves to several).

Output lines: `<algorithm> <config> <key> <server picked> [second pick]
[fallback]`, where the second pick is nginx's retry after the first
failed, given only where no fallback happened.
"""

import ipaddress
import zlib

assert zlib.crc32(b"123456789") == 0xCBF43926


def crc32(data):
    return zlib.crc32(data) & 0xFFFFFFFF


class Peer:
    def __init__(self, server, weight, down=False):
        self.server = server  # the text of the `server` line
        self.weight = weight
        self.down = down


def usable(peers, p, tried):
    return p not in tried and not peers[p].down


def fallback(peers, last, tried):
    """The crate's deterministic stand-in for nginx's round-robin."""
    n = len(peers)
    for step in range(n):
        p = (last + step) % n
        if usable(peers, p, tried):
            return p
    return None


def by_weight(peers, w):
    p = 0
    while w >= peers[p].weight:
        w -= peers[p].weight
        p += 1
    return p


def total_weight(peers):
    return sum(peer.weight for peer in peers)


# ---- ip_hash -------------------------------------------------------------


def ip_hash_bytes(text):
    ip = ipaddress.ip_address(text)
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # the crate's convention (see the docstring)
    if ip.version == 4:
        return ip.packed[:3]  # iphp->addrlen = 3
    return ip.packed  # iphp->addrlen = 16


class IpHashRequest:
    def __init__(self, peers, addr):
        self.peers = peers
        self.addr = ip_hash_bytes(addr)
        self.hash = 89
        self.tries = 0
        self.tried = set()
        self.fell_back = False

    def get_peer(self):
        peers = self.peers
        if self.tries > 20 or len(peers) < 2:
            raise NotImplementedError("round-robin from the start")
        hash = self.hash
        while True:
            for byte in self.addr:
                hash = (hash * 113 + byte) % 6271
            p = by_weight(peers, hash % total_weight(peers))
            if usable(peers, p, self.tried):
                break
            self.tries += 1
            if self.tries > 20:
                self.fell_back = True
                return fallback(peers, p, self.tried)
        self.tried.add(p)
        self.hash = hash
        return p


# ---- hash $key (Cache::Memcached) ----------------------------------------


class HashRequest:
    def __init__(self, peers, key):
        self.peers = peers
        self.key = key
        self.tries = 0
        self.rehash = 0
        self.hash = 0
        self.tried = set()
        self.fell_back = False

    def get_peer(self):
        peers = self.peers
        if self.tries > 20 or len(peers) < 2 or len(self.key) == 0:
            raise NotImplementedError("round-robin from the start")
        while True:
            data = b""
            if self.rehash > 0:
                data = b"%d" % self.rehash  # ngx_sprintf(buf, "%ui", rehash)
            hash = (crc32(data + self.key) >> 16) & 0x7FFF
            self.hash = (self.hash + hash) & 0xFFFFFFFF  # uint32_t
            self.rehash += 1
            p = by_weight(peers, self.hash % total_weight(peers))
            if usable(peers, p, self.tried):
                break
            self.tries += 1
            if self.tries > 20:
                self.fell_back = True
                return fallback(peers, p, self.tried)
        self.tried.add(p)
        return p


# ---- hash $key consistent -------------------------------------------------


def split_server(server):
    if len(server) >= 5 and server[:5].lower() == b"unix:":
        return server[5:], b""
    for j in range(len(server)):
        c = server[len(server) - j - 1 : len(server) - j]
        if c == b":":
            return server[: len(server) - j - 1], server[len(server) - j :]
        if c < b"0" or c > b"9":
            break
    return server, b""


def chash_points(peers):
    points = []
    for index, peer in enumerate(peers):
        host, port = split_server(peer.server)
        base = host + b"\0" + port
        prev = (0).to_bytes(4, "little")
        for _ in range(peer.weight * 160):
            hash = crc32(base + prev)
            points.append((hash, index))
            prev = hash.to_bytes(4, "little")  # little-endian prev_hash
    points.sort(key=lambda point: point[0])  # stable, as glibc's qsort
    unique = [points[0]]
    for point in points[1:]:
        if point[0] != unique[-1][0]:
            unique.append(point)
    return unique


def find_chash_point(points, hash):
    i, j = 0, len(points)
    while i < j:
        k = (i + j) // 2
        if hash > points[k][0]:
            i = k + 1
        elif hash < points[k][0]:
            j = k
        else:
            return k
    return i


class ChashRequest:
    def __init__(self, peers, points, key):
        self.peers = peers
        self.points = points
        self.hash = find_chash_point(points, crc32(key))
        self.tries = 0
        self.tried = set()
        self.fell_back = False

    def get_peer(self):
        peers, points = self.peers, self.points
        if self.tries > 20 or len(peers) == 1:
            raise NotImplementedError("round-robin from the start")
        while True:
            server = peers[points[self.hash % len(points)][1]].server
            # One peer a server line here, so the smooth weighted
            # round-robin among a name's peers has one candidate.
            best = None
            for i, peer in enumerate(peers):
                if i in self.tried or peer.down or peer.server != server:
                    continue
                best = i
            if best is not None:
                self.tried.add(best)
                return best
            last = points[self.hash % len(points)][1]
            self.hash += 1
            self.tries += 1
            if self.tries > 20:
                self.fell_back = True
                return fallback(peers, last, self.tried)


# ---- the reference --------------------------------------------------------

SERVERS = [("10.0.0.1:80", 1), ("10.0.0.2:80", 2), ("10.0.0.3:80", 3), ("10.0.0.4:80", 1)]


def configs():
    """Each config: the peers in order. `down2`: server 2 marked down;
    `removed2`: server 2 gone; `readded2`: removed and added back, which a
    live set appends at the end."""
    all_ = [Peer(s.encode(), w) for s, w in SERVERS]
    down = [Peer(s.encode(), w, s == "10.0.0.2:80") for s, w in SERVERS]
    removed = [Peer(s.encode(), w) for s, w in SERVERS if s != "10.0.0.2:80"]
    readded = removed + [Peer(b"10.0.0.2:80", 2)]
    return {"all": all_, "down2": down, "removed2": removed, "readded2": readded}


def addresses():
    """300 clients: IPv4 spread over the space (an LCG), some IPv6, some
    IPv4-mapped."""
    state = 12345
    out = []
    for i in range(300):
        state = (state * 1103515245 + 12345) & 0xFFFFFFFF
        if i % 10 == 7:
            out.append(str(ipaddress.IPv6Address((0x20010DB8 << 96) | (state << 32) | i)))
        elif i % 10 == 9:
            out.append("::ffff:" + str(ipaddress.IPv4Address(state)))
        else:
            out.append(str(ipaddress.IPv4Address(state)))
    return out


def keys():
    return ["key-%d" % i for i in range(200)] + ["/videos/%d.mp4" % i for i in range(100)]


def line(algorithm, config, key, peers, request):
    first = request.get_peer()
    fields = [algorithm, config, key, peers[first].server.decode()]
    if request.fell_back:
        fields.append("fallback")
    else:
        second = request.get_peer()
        fields.append("-" if second is None else peers[second].server.decode())
        if request.fell_back:
            fields.append("fallback")
    return " ".join(fields)


def main():
    for name, peers in configs().items():
        points = chash_points(peers)
        for addr in addresses():
            print(line("ip_hash", name, addr, peers, IpHashRequest(peers, addr)))
        for key in keys() + addresses():
            # An address-like key is also `hash $remote_addr`: the address's
            # text (IPv4-mapped as IPv4, the crate's convention).
            text = key
            if ":" in key and "." in key and key.startswith("::ffff:"):
                text = str(ipaddress.ip_address(key).ipv4_mapped)
            data = text.encode()
            print(line("chash", name, key, peers, ChashRequest(peers, points, data)))
            print(line("hash", name, key, peers, HashRequest(peers, data)))


if __name__ == "__main__":
    main()
