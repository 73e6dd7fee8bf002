//! The slot table behind source-IP hashing: each of `2^bits` slots owned by
//! its weighted-rendezvous winner.
//!
//! Weighted rendezvous gives slot `s` to the backend whose score is best,
//! where backend i's score is an independent exponential draw of rate `w_i`
//! (an "exponential race": backend i wins with probability `w_i / W`).
//! Drawing a score for every (slot, backend) pair costs `O(slots × n)`. We
//! draw the same thing in `O(slots × log block)`: the table is cut into
//! blocks of at most 4,096 slots, and in each block each backend emits a
//! Poisson stream of (time, slot) points of rate `w_i` per slot, seeded only
//! by the backend's identity and the block's number; a slot's score for that
//! backend is the time of the stream's first point on it. A slot belongs to
//! the earliest point anyone put on it. A block's scores fit in the first
//! cache levels, so every point is a cache hit: 2^20 slots build in about a
//! tenth of a second, where one stream over the whole table missed the
//! cache at nearly every point (2.8 s, and 24 bytes a slot of scratch).
//!
//! Because a backend's streams depend on nothing but its identity, weight
//! and the hash key, removing a backend changes only the slots it owned, and
//! every instance built with the same backends, weights and key builds the
//! same table. The arithmetic uses only IEEE-754 `+ - * /` (our own `ln`),
//! so the table is the same on every platform.

use super::HashOptions;
use crate::error::BuildError;
use crate::table::check_len;

/// Log2 of the most slots a block holds: 4,096 scores of 16 bytes, 64 KiB.
const BLOCK_BITS: u8 = 12;

/// Steps of the horizon past its start before the build stops drawing.
/// After `k` steps a block still has an uncovered slot with probability
/// about `e^(-3-2k)`, so 64 steps are never reached in practice; they make
/// the build's time a hard bound (at most `(ln 4096 + 131)` points a slot),
/// and the slots still uncovered then go to their weighted-rendezvous
/// winner (`rendezvous`), which keeps the table consistent.
const MAX_STEPS: u32 = 64;

/// Owner of each slot, as a backend index.
#[derive(Clone, Debug)]
pub(crate) struct SlotTable {
    owners: Box<[u16]>,
    shift: u32,
}

impl SlotTable {
    /// Builds the table for backends with these identities and weights, in
    /// time and memory bounded by the input's size whatever it holds: a
    /// backend of weight 0 owns no slot.
    ///
    /// # Errors
    ///
    /// [`BuildError::NoBackends`] for no backends (or `ids` and `weights`
    /// of different lengths), [`BuildError::TooManyBackends`] past
    /// `MAX_BACKENDS`, [`BuildError::ZeroWeight`] when every weight is 0,
    /// [`BuildError::TableBits`] for `bits` outside
    /// [`HashOptions`](crate::HashOptions)' range.
    pub(crate) fn build(ids: &[u64], weights: &[u32], bits: u8) -> Result<Self, BuildError> {
        Self::build_within(ids, weights, bits, MAX_STEPS)
    }

    /// As `build`, drawing for at most `max_steps` steps of the horizon.
    fn build_within(
        ids: &[u64],
        weights: &[u32],
        bits: u8,
        max_steps: u32,
    ) -> Result<Self, BuildError> {
        if ids.len() != weights.len() {
            return Err(BuildError::NoBackends);
        }
        check_len(ids.len())?;
        let (min, max) = (HashOptions::MIN_TABLE_BITS, HashOptions::MAX_TABLE_BITS);
        if !(min..=max).contains(&bits) {
            return Err(BuildError::TableBits { bits, min, max });
        }
        let total: f64 = weights.iter().map(|&w| f64::from(w)).sum();
        if total == 0.0 {
            return Err(BuildError::ZeroWeight { index: 0 });
        }
        let block_bits = bits.min(BLOCK_BITS);
        let block = 1usize << block_bits;
        let mut owners = vec![0u16; 1 << bits];
        // Each slot's earliest point so far: its time and the backend's id.
        let mut best = vec![(f64::INFINITY, 0u64); block];
        let mut streams: Vec<PointStream> = Vec::with_capacity(ids.len());
        for (number, owned) in owners.chunks_exact_mut(block).enumerate() {
            best.fill((f64::INFINITY, 0));
            streams.clear();
            streams.extend(
                ids.iter()
                    .zip(weights)
                    .filter(|&(_, &w)| w > 0)
                    .map(|(&id, &w)| {
                        PointStream::new(id, number as u64, f64::from(w) * block as f64, block_bits)
                    }),
            );
            let indices = weights
                .iter()
                .enumerate()
                .filter(|&(_, &w)| w > 0)
                .map(|(index, _)| index);
            let mut uncovered = block;
            // With every stream run to time `horizon`, a slot is left
            // uncovered with probability exp(-horizon * total): start where
            // about one in twenty blocks has a slot left, then go on in
            // small steps. Where the run stops does not change the table:
            // every slot's earliest point comes before it.
            let mut horizon = (ln(block as f64) + 3.0) / total;
            for _ in 0..max_steps {
                for (stream, index) in streams.iter_mut().zip(indices.clone()) {
                    while stream.time <= horizon {
                        let cell = &mut best[stream.slot];
                        // Equal times (vanishingly rare) go to the smaller id,
                        // so the order backends are listed in never matters.
                        if (stream.time, stream.id) < *cell {
                            if cell.0.is_infinite() {
                                uncovered -= 1;
                            }
                            *cell = (stream.time, stream.id);
                            // Indices fit u16: at most MAX_BACKENDS backends.
                            owned[stream.slot] = index as u16;
                        }
                        stream.advance();
                    }
                }
                if uncovered == 0 {
                    break;
                }
                horizon += 2.0 / total;
            }
            if uncovered > 0 {
                for (slot, cell) in best.iter().enumerate() {
                    if cell.0.is_infinite() {
                        let key = mix(((number as u64) << BLOCK_BITS) | slot as u64);
                        // Some backend has a weight above 0 (checked).
                        let owner = rendezvous(key, ids, weights, |_| true).unwrap_or(0);
                        owned[slot] = owner as u16;
                    }
                }
            }
        }
        Ok(Self {
            owners: owners.into_boxed_slice(),
            shift: 64 - u32::from(bits),
        })
    }

    /// The owner of the slot a 64-bit hash falls in (its top bits).
    #[inline]
    pub(crate) fn owner(&self, hash: u64) -> usize {
        usize::from(self.owners[(hash >> self.shift) as usize])
    }

    #[cfg(test)]
    pub(crate) fn owners(&self) -> &[u16] {
        &self.owners
    }
}

/// Weighted rendezvous for `key` among the backends `allowed`: the one
/// whose exponential draw of rate `w_i`, seeded by key and identity, comes
/// first, so backend i wins with probability `w_i / W` (a backend of
/// weight 0 never). It depends on nothing but each backend's own identity
/// and weight, so taking a backend away moves only the keys it won.
pub(crate) fn rendezvous(
    key: u64,
    ids: &[u64],
    weights: &[u32],
    allowed: impl Fn(usize) -> bool,
) -> Option<usize> {
    ids.iter()
        .zip(weights)
        .enumerate()
        .filter(|&(index, (_, &w))| w > 0 && allowed(index))
        .map(|(index, (&id, &w))| {
            let draw = mix(key ^ id);
            // Uniform in (0, 1]: 53 random bits, never 0, so ln is finite.
            let uniform = ((draw >> 11) + 1) as f64 / (1u64 << 53) as f64;
            (-ln(uniform) / f64::from(w), id, index)
        })
        .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)))
        .map(|(_, _, index)| index)
}

/// One backend's Poisson stream of (time, slot) points.
struct PointStream {
    id: u64,
    rng: SplitMix64,
    rate: f64,
    bits: u8,
    time: f64,
    slot: usize,
}

impl PointStream {
    /// Backend `id`'s stream over block `block`, of `2^bits` slots.
    fn new(id: u64, block: u64, rate: f64, bits: u8) -> Self {
        let mut stream = Self {
            id,
            // The block's number mixed in: each block draws anew.
            rng: SplitMix64(id ^ mix(block.wrapping_add(0x9E37_79B9_7F4A_7C15))),
            rate,
            bits,
            time: 0.0,
            slot: 0,
        };
        stream.advance();
        stream
    }

    fn advance(&mut self) {
        // Uniform in (0, 1]: 53 random bits, never 0, so ln is finite.
        let uniform = ((self.rng.next() >> 11) + 1) as f64 / (1u64 << 53) as f64;
        self.time += -ln(uniform) / self.rate;
        self.slot = (self.rng.next() >> (64 - u32::from(self.bits))) as usize;
    }
}

/// SplitMix64: a small generator whose output we fix ourselves, so that the
/// table never changes with a dependency's version.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }
}

/// SplitMix64's output function: a bijective mix of 64 bits.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Natural logarithm of a positive, finite, normal `x` from IEEE-754 basic
/// operations only, so it is the same on every platform (the platform's
/// `ln` may differ in the last bit). Error below 1e-15 relative.
pub(crate) fn ln(x: f64) -> f64 {
    const LN_2: f64 = std::f64::consts::LN_2;
    const SQRT_2: f64 = std::f64::consts::SQRT_2;
    // x = m * 2^e with m in [1, 2), then moved to [sqrt(1/2), sqrt(2)).
    let bits = x.to_bits();
    let mut exponent = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut mantissa = f64::from_bits((bits & ((1 << 52) - 1)) | (1023 << 52));
    if mantissa > SQRT_2 {
        mantissa /= 2.0;
        exponent += 1;
    }
    // ln(m) = 2 atanh(z) = 2 (z + z^3/3 + z^5/5 + ...), |z| < 0.172, in
    // Horner's form over the reciprocals (exact constants, no division).
    const TERMS: [f64; 12] = [
        1.0,
        1.0 / 3.0,
        1.0 / 5.0,
        1.0 / 7.0,
        1.0 / 9.0,
        1.0 / 11.0,
        1.0 / 13.0,
        1.0 / 15.0,
        1.0 / 17.0,
        1.0 / 19.0,
        1.0 / 21.0,
        1.0 / 23.0,
    ];
    let z = (mantissa - 1.0) / (mantissa + 1.0);
    let z2 = z * z;
    let mut series = 0.0;
    for term in TERMS.iter().rev() {
        series = series * z2 + term;
    }
    let sum = z * series;
    2.0 * sum + exponent as f64 * LN_2
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Runs `work` on its own thread; fails if it has not returned within
    /// `limit`, so a build that would not end fails the test instead of
    /// hanging it.
    fn within<R: Send + 'static>(limit: Duration, work: impl FnOnce() -> R + Send + 'static) -> R {
        let (send, receive) = mpsc::channel();
        std::thread::spawn(move || send.send(work()));
        receive
            .recv_timeout(limit)
            .unwrap_or_else(|_| panic!("no answer within {limit:?}"))
    }

    /// The table's definition, with weight-0 backends owning nothing: the
    /// brute-force build over the others, mapped back to their indices.
    fn reference(ids: &[u64], weights: &[u32], bits: u8) -> Vec<u16> {
        let kept: Vec<usize> = (0..ids.len()).filter(|&i| weights[i] > 0).collect();
        let ids: Vec<u64> = kept.iter().map(|&i| ids[i]).collect();
        let weights: Vec<u32> = kept.iter().map(|&i| weights[i]).collect();
        by_definition(&ids, &weights, bits)
            .into_iter()
            .map(|owner| kept[usize::from(owner)] as u16)
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Issue 22: whatever the weights (zeros included) and sizes, the
        /// build returns at once, with the table of the definition or a
        /// typed error; never a hang.
        #[test]
        fn any_input_builds_the_definition_or_is_a_typed_error(
            weights in proptest::collection::vec(prop_oneof![Just(0u32), 1..4u32, Just(u32::MAX / 64)], 0..12),
            bits in 6u8..=13,
            seed in any::<u64>(),
        ) {
            let ids: Vec<u64> = (0..weights.len() as u64).map(|i| mix(seed ^ i)).collect();
            let (ids_, weights_) = (ids.clone(), weights.clone());
            let built = within(Duration::from_secs(20), move || {
                SlotTable::build(&ids_, &weights_, bits)
            });
            let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
            match built {
                Err(BuildError::NoBackends) => prop_assert!(weights.is_empty()),
                Err(BuildError::ZeroWeight { .. }) => prop_assert!(!weights.is_empty() && total == 0),
                Err(BuildError::TableBits { .. }) => prop_assert!(bits < HashOptions::MIN_TABLE_BITS),
                Err(other) => prop_assert!(false, "unexpected {other:?}"),
                Ok(table) => {
                    prop_assert!(total > 0 && bits >= HashOptions::MIN_TABLE_BITS);
                    let expected = reference(&ids, &weights, bits);
                    prop_assert_eq!(table.owners(), expected.as_slice());
                }
            }
        }
    }

    /// Issue 22: the extremes return, in bounded time: one backend, and
    /// the largest table. The largest is built here through its fallback
    /// alone (every slot by rendezvous, no draws): its 4,096 blocks each
    /// draw as a 2^20 table's 256 do (built with draws here), in about
    /// 5 s on the 2-core test machine, which `cargo bench --bench pick --
    /// build/` times instead of every test run.
    #[test]
    fn one_backend_and_the_largest_table_build_in_bounded_time() {
        let limit = Duration::from_secs(120);
        let one = within(limit, || SlotTable::build(&[7], &[1], 8)).expect("valid");
        assert!(one.owners().iter().all(|&owner| owner == 0));
        let large = within(limit, || SlotTable::build(&[1, 2], &[1, 3], 20)).expect("valid");
        let share = large.owners().iter().filter(|&&owner| owner == 1).count();
        assert!(
            (0.74..0.76).contains(&(share as f64 / f64::from(1 << 20))),
            "{share}"
        );
        let bits = HashOptions::MAX_TABLE_BITS;
        let largest = within(limit, move || {
            SlotTable::build_within(&[1, 2], &[1, 3], bits, 0)
        })
        .expect("valid");
        assert_eq!(largest.owners().len(), 1 << HashOptions::MAX_TABLE_BITS);
        let share = largest.owners().iter().filter(|&&owner| owner == 1).count();
        assert!(
            (0.74..0.76).contains(&(share as f64 / f64::from(1 << bits))),
            "{share}"
        );
        assert!(matches!(
            SlotTable::build(&[1, 2], &[1], 8),
            Err(BuildError::NoBackends)
        ));
    }

    /// Issue 22: the most backends, alike and with one all but weightless
    /// beside the rest, build in bounded time.
    #[test]
    fn the_most_backends_build_in_bounded_time() {
        let limit = Duration::from_secs(120);
        let most: Vec<u64> = (0..crate::table::MAX_BACKENDS as u64).map(mix).collect();
        let mut weights = vec![1u32; most.len()];
        let table = within(limit, {
            let (most, weights) = (most.clone(), weights.clone());
            move || SlotTable::build(&most, &weights, HashOptions::MIN_TABLE_BITS)
        })
        .expect("valid");
        assert_eq!(table.owners().len(), 1 << HashOptions::MIN_TABLE_BITS);
        weights[0] = u32::MAX - (most.len() as u32 - 1);
        let table = within(limit, move || {
            SlotTable::build(&most, &weights, HashOptions::MIN_TABLE_BITS)
        })
        .expect("valid");
        assert!(table.owners().iter().all(|&owner| owner == 0));
    }

    /// Slots left uncovered when the draw stops (forced here by stopping
    /// before the first step) go to their weighted-rendezvous winner, which
    /// keeps the table consistent: removing a backend moves only its slots.
    #[test]
    fn the_fallback_for_uncovered_slots_is_consistent() {
        let ids: Vec<u64> = (1..=6).map(|i| i * 7919).collect();
        let weights = [3, 1, 4, 1, 5, 9];
        let full = SlotTable::build_within(&ids, &weights, 10, 0).expect("valid");
        let mut owned = [0usize; 6];
        for &owner in full.owners() {
            owned[usize::from(owner)] += 1;
        }
        assert!(owned.iter().all(|&n| n > 0), "{owned:?}");
        let fewer = SlotTable::build_within(&ids[1..], &weights[1..], 10, 0).expect("valid");
        for (&before, &after) in full.owners().iter().zip(fewer.owners()) {
            if before != 0 {
                assert_eq!(ids[usize::from(before)], ids[1 + usize::from(after)]);
            }
        }
    }

    #[test]
    fn ln_matches_the_platform_closely() {
        for &x in &[
            1e-300, 1e-16, 0.001, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 65536.0, 1e300,
        ] {
            let (ours, platform) = (ln(x), x.ln());
            assert!(
                (ours - platform).abs() <= 1e-15 * platform.abs().max(1.0),
                "ln({x}): {ours} vs {platform}"
            );
        }
    }

    /// The definition, brute force: for each slot of each block, each
    /// backend's first point on it, earliest wins.
    fn by_definition(ids: &[u64], weights: &[u32], bits: u8) -> Vec<u16> {
        let block_bits = bits.min(BLOCK_BITS);
        let block = 1usize << block_bits;
        let mut owners = Vec::new();
        for number in 0..(1u64 << (bits - block_bits)) {
            let mut best = vec![(f64::INFINITY, 0u64, 0u16); block];
            for (index, (&id, &w)) in ids.iter().zip(weights).enumerate() {
                let mut stream =
                    PointStream::new(id, number, f64::from(w) * block as f64, block_bits);
                let mut first = vec![f64::INFINITY; block];
                let mut seen = 0;
                while seen < block {
                    if first[stream.slot].is_infinite() {
                        first[stream.slot] = stream.time;
                        seen += 1;
                    }
                    stream.advance();
                }
                for (slot, &time) in first.iter().enumerate() {
                    if (time, id) < (best[slot].0, best[slot].1) {
                        best[slot] = (time, id, index as u16);
                    }
                }
            }
            owners.extend(best.into_iter().map(|(_, _, owner)| owner));
        }
        owners
    }

    #[test]
    fn fast_build_equals_the_definition() {
        let ids = [11, 22, 33, 44, 55];
        let weights = [1, 5, 2, 2, 9];
        for bits in [8, 14] {
            let table = SlotTable::build(&ids, &weights, bits).expect("valid");
            assert_eq!(
                table.owners(),
                by_definition(&ids, &weights, bits).as_slice(),
                "{bits} bits"
            );
        }
    }

    #[test]
    fn every_backend_owns_its_weight_share_of_slots() {
        let ids: Vec<u64> = (1..=4).map(|i| i * 104_729).collect();
        let weights = [1, 2, 3, 4];
        let table = SlotTable::build(&ids, &weights, 16).expect("valid");
        let mut owned = [0usize; 4];
        for &owner in table.owners() {
            owned[usize::from(owner)] += 1;
        }
        for (i, &count) in owned.iter().enumerate() {
            // Binomial: share w/10 of 65,536 slots, within 5 sigma.
            let p = f64::from(weights[i]) / 10.0;
            let (mean, sigma) = (65_536.0 * p, (65_536.0 * p * (1.0 - p)).sqrt());
            assert!(
                (count as f64 - mean).abs() < 5.0 * sigma,
                "backend {i} owns {count} slots, expected about {mean}"
            );
        }
    }

    #[test]
    fn removing_a_backend_moves_only_its_slots() {
        let ids: Vec<u64> = (1..=8).map(|i| i * 7919).collect();
        let weights = [3, 1, 4, 1, 5, 9, 2, 6];
        let full = SlotTable::build(&ids, &weights, 12).expect("valid");
        let (mut fewer_ids, mut fewer_weights) = (ids.clone(), weights.to_vec());
        fewer_ids.remove(4);
        fewer_weights.remove(4);
        let fewer = SlotTable::build(&fewer_ids, &fewer_weights, 12).expect("valid");
        let mut moved = 0;
        for (&before, &after) in full.owners().iter().zip(fewer.owners()) {
            if before == 4 {
                moved += 1;
            } else {
                assert_eq!(ids[usize::from(before)], fewer_ids[usize::from(after)]);
            }
        }
        assert!(moved > 0);
    }
}
