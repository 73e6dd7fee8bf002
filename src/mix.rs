//! SplitMix64: the word of a seeded stream, `splitmix(seed + k)` for its
//! `k`-th draw. Every seeded draw of the crate (the random algorithms,
//! the probe targets, the adaptive limit's jitter and reservoir) uses it,
//! so a seed gives the same draws on every run and in both forms.

/// SplitMix64's output for counter value `x`.
#[inline]
pub(crate) fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
