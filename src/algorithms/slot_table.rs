//! The slot table behind source-IP hashing: each of `2^bits` slots owned by
//! its weighted-rendezvous winner.
//!
//! Weighted rendezvous gives slot `s` to the backend whose score is best,
//! where backend i's score is an independent exponential draw of rate `w_i`
//! (an "exponential race": backend i wins with probability `w_i / W`).
//! Drawing a score for every (slot, backend) pair costs `O(slots × n)`. We
//! draw the same thing in `O(slots × log slots)`: each backend emits a
//! Poisson stream of (time, slot) points of rate `w_i` per slot, seeded only
//! by the backend's identity, and a slot's score for that backend is the
//! time of the stream's first point on it. A slot belongs to the earliest
//! point anyone put on it.
//!
//! Because a backend's stream depends on nothing but its identity, weight
//! and the hash key, removing a backend changes only the slots it owned, and
//! every instance built with the same backends, weights and key builds the
//! same table. The arithmetic uses only IEEE-754 `+ - * /` (our own `ln`),
//! so the table is the same on every platform.

/// Owner of each slot, as a backend index.
#[derive(Clone, Debug)]
pub(crate) struct SlotTable {
    owners: Box<[u16]>,
    shift: u32,
}

impl SlotTable {
    /// Builds the table for backends with these identities and weights.
    /// `ids` and `weights` have the same length, at most `MAX_BACKENDS`,
    /// and `bits` is at most 24.
    pub(crate) fn build(ids: &[u64], weights: &[u32], bits: u8) -> Self {
        let slots = 1usize << bits;
        let total: f64 = weights.iter().map(|&w| f64::from(w)).sum();
        let mut best: Vec<(f64, u64, u16)> = vec![(f64::INFINITY, 0, 0); slots];
        let mut uncovered = slots;
        let mut streams: Vec<Stream> = ids
            .iter()
            .zip(weights)
            .map(|(&id, &w)| Stream::new(id, f64::from(w) * slots as f64, bits))
            .collect();
        // With every stream run to time `horizon`, a slot is left uncovered
        // with probability exp(-horizon * total): start where that is
        // 1 / slots^2 and double in the rare case a slot is still empty.
        let mut horizon = 2.0 * ln(slots as f64) / total;
        loop {
            for (index, stream) in streams.iter_mut().enumerate() {
                while stream.time <= horizon {
                    let cell = &mut best[stream.slot];
                    // Equal times (vanishingly rare) go to the smaller id, so
                    // the order backends are listed in never matters.
                    if (stream.time, stream.id) < (cell.0, cell.1) {
                        if cell.0.is_infinite() {
                            uncovered -= 1;
                        }
                        *cell = (stream.time, stream.id, index as u16);
                    }
                    stream.advance();
                }
            }
            if uncovered == 0 {
                break;
            }
            horizon *= 2.0;
        }
        Self {
            owners: best.into_iter().map(|(_, _, owner)| owner).collect(),
            shift: 64 - u32::from(bits),
        }
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

/// One backend's Poisson stream of (time, slot) points.
struct Stream {
    id: u64,
    rng: SplitMix64,
    rate: f64,
    bits: u8,
    time: f64,
    slot: usize,
}

impl Stream {
    fn new(id: u64, rate: f64, bits: u8) -> Self {
        let mut stream = Self {
            id,
            rng: SplitMix64(id),
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
    // ln(m) = 2 atanh(z) = 2 (z + z^3/3 + z^5/5 + ...), |z| < 0.172.
    let z = (mantissa - 1.0) / (mantissa + 1.0);
    let z2 = z * z;
    let mut term = z;
    let mut sum = 0.0;
    for k in 0..12 {
        sum += term / f64::from(2 * k + 1);
        term *= z2;
    }
    2.0 * sum + exponent as f64 * LN_2
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// The definition, brute force: for each slot, each backend's first
    /// point on it, earliest wins.
    fn by_definition(ids: &[u64], weights: &[u32], bits: u8) -> Vec<u16> {
        let slots = 1usize << bits;
        let mut best = vec![(f64::INFINITY, 0u64, 0u16); slots];
        for (index, (&id, &w)) in ids.iter().zip(weights).enumerate() {
            let mut stream = Stream::new(id, f64::from(w) * slots as f64, bits);
            let mut first = vec![f64::INFINITY; slots];
            let mut seen = 0;
            while seen < slots {
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
        best.into_iter().map(|(_, _, owner)| owner).collect()
    }

    #[test]
    fn fast_build_equals_the_definition() {
        let ids = [11, 22, 33, 44, 55];
        let weights = [1, 5, 2, 2, 9];
        let table = SlotTable::build(&ids, &weights, 8);
        assert_eq!(table.owners(), by_definition(&ids, &weights, 8).as_slice());
    }

    #[test]
    fn removing_a_backend_moves_only_its_slots() {
        let ids: Vec<u64> = (1..=8).map(|i| i * 7919).collect();
        let weights = [3, 1, 4, 1, 5, 9, 2, 6];
        let full = SlotTable::build(&ids, &weights, 12);
        let (mut fewer_ids, mut fewer_weights) = (ids.clone(), weights.to_vec());
        fewer_ids.remove(4);
        fewer_weights.remove(4);
        let fewer = SlotTable::build(&fewer_ids, &fewer_weights, 12);
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
