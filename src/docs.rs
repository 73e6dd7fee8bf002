//! How the algorithms behave, and what the two forms trade.
//!
//! # Exact sequences
//!
//! Backends are numbered 0..n in the order given. "Dropped at once" means
//! each guard is dropped before the next pick.
//!
//! | algorithm | guards dropped at once | guards held |
//! |---|---|---|
//! | [`RoundRobin`](crate::lockfree::RoundRobin) | 0, 1, …, n−1, 0, … from an optional start offset | same |
//! | [`WeightedRoundRobin`](crate::lockfree::WeightedRoundRobin) | nginx's smooth weighted round-robin: weights 5,1,1 give 0 0 1 0 2 0 0 | same |
//! | [`LeastConn::new`](crate::lockfree::LeastConn::new) | round-robin order | a backend with the fewest active guards |
//! | [`LeastConn::weighted`](crate::lockfree::LeastConn::weighted) | the smooth weighted round-robin sequence | a backend with the fewest active per unit of weight (`a_i * w_j < a_j * w_i` in `u64`) |
//! | [`IpHash`](crate::lockfree::IpHash) | the same client always reaches the same backend | same |
//! | [`Random`](crate::lockfree::Random) | drawn by weight with exact shares (an alias table), `O(1)`; seedable | same |
//! | [`RandomLeastConn`](crate::lockfree::RandomLeastConn) | the first of d distinct candidates drawn by weight | the candidate with the fewest active per weight (`a_i * w_j < a_j * w_i`), `O(d)` |
//! | [`PeakEwma`](crate::lockfree::PeakEwma) | the candidate with the lowest peak-EWMA latency per weight | the lowest latency × (active + 1) per weight, `O(d)` |
//! | [`Probing`](crate::lockfree::Probing) | the cold probe answer of lowest latency (Prequal's rule over the answers of [`Probe`](crate::Probe)s); power-of-two-choices least-connections while none is on hand | same, each pick counting one more in flight in its answer |
//! | [`NginxIpHash`](crate::lockfree::NginxIpHash) | nginx's `ip_hash` map bit for bit (3 IPv4 octets or 16 IPv6 bytes, `(hash * 113 + byte) % 6271`, by weight; rehash on an unavailable backend) | same |
//! | [`NginxHash`](crate::lockfree::NginxHash) | nginx's `hash $key consistent` (ketama ring, `weight * 160` CRC-32 points a server) or `hash $key` map bit for bit | same |
//!
//! The mutex-backed forms are nginx's algorithms exactly, ties included:
//! least-connections breaks a tie by running smooth weighted round-robin
//! over the tied backends only. The lock-free forms make exactly the same
//! picks on one thread, held guards or not; the property tests check this
//! against the mutex-backed forms on random scripts of picks and drops.
//!
//! # Lock-free or locked
//!
//! A lock-free pick never waits for another thread. Under concurrency:
//!
//! - round-robin and smooth weighted round-robin hand each pick its own step
//!   of the exact sequence (one atomic cursor step), so the multiset of
//!   picks over any number of threads is exactly the sequence's;
//! - least-connections may let two simultaneous picks read the same counts
//!   and choose the same least-loaded backend; the mutex-backed form takes
//!   the guard while it holds the lock, so the next pick always sees it.
//!   Ties keep rotating: every tie-break adds exactly what it subtracts, so
//!   the current weights sum to zero and a backend passed over gains
//!   priority until it wins;
//! - hashing has no shared state but the guard's count; with bounded
//!   loads, one total of active guards that every guard raises and lowers,
//!   and lock-free picks racing each other may each see a backend just
//!   under its capacity (each adds at most one guard past it), where the
//!   mutex-backed form holds the bound exactly;
//! - random, power-of-two-choices and peak EWMA draw from a generator per
//!   thread (no shared write); seeded, they number their draws with one
//!   shared counter, so one thread's picks equal the mutex-backed form's.
//!   Two racing power-of-two-choices picks may read the same counts, as
//!   least-connections' may;
//! - probing reads its pool of probe answers under a lock it only tries:
//!   a pick that finds it held (another pick, or an answer being kept)
//!   takes the power-of-two-choices fallback rather than wait.
//!
//! The mutex-backed forms serialise every pick on one lock, so a pick that
//! costs `O(n)` (smooth weighted round-robin, least-connections) holds every
//! other thread up for that long: from 1,024 backends the lock-free forms
//! pick 3 to 30 times faster on two threads. With few backends the lock is
//! cheap and both forms pay for the same shared cache lines (the cursor, the
//! guards' counts); there the mutex forms, which let one core run a burst of
//! picks on lines it already holds, can be as fast or faster.
//! `cargo bench --bench pick` measures both forms side by side, and
//! `BENCHMARKS.md` in the repository has the figures.
//!
//! # Memory bounds
//!
//! The lock-free smooth weighted round-robin precomputes one period of
//! `sum(w) / gcd(w)` picks as `u16` indices when that period is at most
//! [`SCHEDULE_LIMIT`](crate::lockfree::WeightedRoundRobin::SCHEDULE_LIMIT)
//! picks and computing it takes at most
//! [`BUILD_WORK_LIMIT`](crate::lockfree::WeightedRoundRobin::BUILD_WORK_LIMIT)
//! steps. It keeps two such buffers (2 MiB at the limit): the period in
//! use, and one a new period is recorded into after a pick left nginx's
//! sequence (a backend down, full, tried, ramping or degraded). Such a pick
//! moves the state into explicit current weights (replaying the period up
//! to its position, at most one period of steps, once), and picks then run
//! nginx's loop on atomics, `O(n)` each, exactly as the mutex-backed form
//! continues; back to plain picks, one period is recorded and, once the
//! state is periodic again, replayed as before. Past either bound it
//! computes the same exact sequence in windows of about 2^20 / n picks,
//! published without a lock into one of three windows allocated at build,
//! so no pick allocates, the first included; a pick then costs `O(n)`
//! amortised, like the mutex-backed form, without its lock. A pick that
//! finds its window used up computes the next one (about a millisecond);
//! it waits only if both spare windows are busy, each being computed by
//! another pick or still read by a pick descheduled mid-step.
//!
//! nginx's consistent ring holds `160 * total weight` points of 6 bytes
//! (at most [`MAX_CONSISTENT_TOTAL_WEIGHT`](crate::NginxHashOptions::MAX_CONSISTENT_TOTAL_WEIGHT),
//! 63 MiB); its `ip_hash` and plain `hash` keep one `u32` a backend.
//!
//! # nginx's hashes
//!
//! [`NginxIpHash`](crate::lockfree::NginxIpHash) and
//! [`NginxHash`](crate::lockfree::NginxHash) give a client the sequence of
//! candidates nginx's loop would try, and take the first that may take the
//! pick, within nginx's 21 tries; a retry walks again and counts tries as
//! nginx's continued walk does. Where they differ from nginx, and why:
//!
//! - past 21 tries nginx goes round-robin, which depends on every other
//!   request; here the first backend that may take the pick at or after
//!   the last candidate, in order, wrapping: deterministic per client;
//! - an IPv4-mapped IPv6 client counts as its IPv4 address, as nginx sees
//!   it behind its default IPv6-only `listen [::]` (behind `ipv6only=off`
//!   nginx hashes the 16 mapped bytes, or the `::ffff:` text);
//! - nginx makes one peer per address a name resolves to, which share the
//!   name's ring points; here a backend is one name, and two backends with
//!   the same name are rejected;
//! - nginx refuses `backup` and slow start with these methods; here a
//!   backup keeps its share of the hash and takes picks only while no
//!   primary can, and slow start does not hold a backend back;
//! - an empty key sends nginx to round-robin; here it is hashed like any
//!   other (`crc32("") = 0`);
//! - equal ring points of two servers (a CRC-32 collision) keep the
//!   earlier server's, as glibc's merge-sort `qsort` does.
//!
//! `ip_hash` and plain `hash` are not consistent: removing one of four
//! servers moved 56 % of the other servers' clients in
//! `tests/algorithms/nginx_hash.rs`; `down` moves only the server's own.
//!
//! The hash table holds `2^bits` `u16` owners (128 KiB by default), whatever
//! the number of backends.
//!
//! # Guards
//!
//! A [`Guard`](crate::Guard) is a reference-counted handle to its backend;
//! the reference count is the active count. Dropping a guard, by scope end,
//! early return or unwinding, decrements it exactly once; a guard may
//! outlive the balancer that made it.
//!
//! # Architecture
//!
//! The library is layered: each layer a folder whose `mod.rs` is its
//! contents page, and every `use crate::` points down.
//!
//! ```text
//!  route      limit      pool ─────────────── tower, metrics, config, wait
//!    │          │          │
//!    │          │      algorithms ── one file (or folder) an algorithm:
//!    │          │          │         its state(s), Build and Choose
//!    │          │        live ────── Live: snapshots, updates, retirement
//!    │          │          │
//!    └──────────┴──────  pick ────── Context, Tried, Candidates, the driver,
//!                          │         the forms (LockFree, Locked), Static
//!                        table ───── Backends, Guard, BackendStats, Probe, weights
//!                          │
//!                       backend ──── the record, health, Common, peak EWMA,
//!                          │         the probe pool
//!                          │
//!                 sync, time, error ─ the loom shim, Clock and Nanos, errors
//! ```
//!
//! A pick reads top to bottom: [`Balancer::pick`](crate::Balancer::pick)
//! on a [`Live`](crate::Live) set loads its snapshot, a
//! [`Static`](crate::Static) balancer; its form runs the one driver with
//! the algorithm's state: the plain path asks
//! [`Choose::plain`](crate::Choose::plain), the slow path builds
//! [`Candidates`](crate::Candidates) over the records and asks
//! [`Choose::choose`](crate::Choose::choose); the driver claims what was
//! chosen and the table makes the [`Guard`](crate::Guard).
//!
//! Where a new piece goes:
//!
//! - **An algorithm**: one file (or folder) in `algorithms/` with its
//!   state (two, if its lock-free and sequential forms differ),
//!   [`Build`](crate::Build) and [`Choose`](crate::Choose) for each, and
//!   the two aliases `lockfree::X` and `locked::X`; then one line in the
//!   registry of `pool/algorithm.rs` gives it its [`Algorithm`](crate::Algorithm)
//!   names and a place in [`Pool`](crate::Pool). An algorithm outside the
//!   crate writes the same two traits and runs in [`Live`](crate::Live)
//!   and [`Pool::custom`](crate::Pool::custom) (`examples/zone_aware.rs`).
//! - **A limit**: a file in `limit/` (a rule over `limit/table.rs`'s keyed
//!   store, or a shared word with a loom model beside it), composed into
//!   `FlowControl` if it gates requests.
//! - **An integration** (an async runtime, a protocol, a store): a file
//!   behind its own feature, in the layer it serves (`pool/tower.rs`,
//!   `pool/wait.rs`, `limit/redis/`), so that a reader of the core never
//!   meets it and `cargo build --no-default-features` stays small.
//!
//! Every protocol of atomic words opens with a "Synchronization" section,
//! routes its atomics and locks through `sync/`, and has its loom model
//! beside it (`loom_*.rs`).
