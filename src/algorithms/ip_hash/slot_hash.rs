//! The consistent hash's state: keyed SipHash into a table of slots.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;

use siphasher::sip::SipHasher13;

use super::HashOptions;
use super::slot_table::{SlotTable, mix, rendezvous};
use crate::algorithms::bounded_load::{Bound, from_home};
use crate::backend::health::FULL;
use crate::error::{BuildError, PickError};
use crate::pick::{Build, Candidates, Choose, Context, Set, normalise};
use crate::table::{Backends, Weights};

/// The consistent hash's state (both forms): the slot table, each slot
/// owned by its weighted-rendezvous winner, and how to hash a context into
/// it.
pub struct SlotHash {
    table: SlotTable,
    /// Each backend's identity hash and weight, for the per-client
    /// rendezvous that finds a client's backend when its own is out.
    ids: Box<[u64]>,
    weights: Box<[u32]>,
    /// The SipHash key as the two words SipHash works with.
    keys: (u64, u64),
    ipv4_prefix_24: bool,
    /// The capacity rule, with bounded loads.
    bound: Option<Bound>,
}

/// Never shows the key words (see `HashOptions`'s `Debug`).
impl fmt::Debug for SlotHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlotHash")
            .field("backends", &self.ids.len())
            .field("ipv4_prefix_24", &self.ipv4_prefix_24)
            .finish_non_exhaustive()
    }
}

/// How many other slots a client over capacity probes before walking every
/// backend in order.
const PROBES: u64 = 16;
/// An odd constant that spreads the probes over the table.
const PROBE_STEP: u64 = 0x9E37_79B9_7F4A_7C15;

/// Domain tags, so that a key never hashes like an address of the same bytes.
const TAG_V4: u8 = 4;
const TAG_V6: u8 = 6;
const TAG_KEY: u8 = 0;
const TAG_BACKEND: u8 = 0xb;

impl SlotHash {
    fn new<'v, T: Hash + 'v>(
        values: impl Iterator<Item = &'v T>,
        weights: &Weights,
        options: HashOptions,
    ) -> Result<Self, BuildError> {
        let keys = key_words(&options.key);
        let ids: Vec<u64> = values
            .map(|value| {
                let mut hasher = SipHasher13::new_with_keys(keys.0, keys.1);
                hasher.write_u8(TAG_BACKEND);
                value.hash(&mut hasher);
                hasher.finish()
            })
            .collect();
        let mut sorted: Vec<(u64, usize)> = ids.iter().copied().zip(0..).collect();
        sorted.sort_unstable();
        if let Some(pair) = sorted.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            let (a, b) = (pair[0].1, pair[1].1);
            return Err(BuildError::DuplicateBackend {
                first: a.min(b),
                second: a.max(b),
            });
        }
        let bound = Bound::new(options.bounded_load, weights)?;
        Ok(Self {
            bound,
            table: SlotTable::build(&ids, weights.as_slice(), options.table_bits)?,
            ids: ids.into_boxed_slice(),
            weights: weights.as_slice().into(),
            keys,
            ipv4_prefix_24: options.ipv4_prefix_24,
        })
    }

    /// The client's hash: its slot is in the top bits, its place in slow
    /// start in the bottom 16.
    #[inline(always)]
    fn client(&self, ctx: &Context<'_>) -> Result<u64, PickError> {
        let mut hasher = SipHasher13::new_with_keys(self.keys.0, self.keys.1);
        if let Some(addr) = ctx.addr() {
            match normalise(addr) {
                IpAddr::V4(v4) => {
                    let mut octets = v4.octets();
                    if self.ipv4_prefix_24 {
                        octets[3] = 0;
                    }
                    hasher.write_u8(TAG_V4);
                    hasher.write(&octets);
                }
                IpAddr::V6(v6) => {
                    hasher.write_u8(TAG_V6);
                    hasher.write(&v6.octets());
                }
            }
        } else if let Some(key) = ctx.key() {
            hasher.write_u8(TAG_KEY);
            hasher.write(key);
        } else {
            return Err(PickError::MissingKey);
        }
        Ok(hasher.finish())
    }

    /// The client's slot owner when it can take the pick, else the winner of
    /// a weighted rendezvous between the client and the backends that can:
    /// the same fallback for every pick of the client, and only clients of
    /// an unavailable backend move. A backend in slow start takes the
    /// clients whose place (`client & 0xffff`) falls within its progress,
    /// so its clients come back in a fixed order as it ramps.
    fn choose_available<T>(
        &self,
        ctx: &Context<'_>,
        candidates: &mut Candidates<'_, '_, T>,
    ) -> Result<Option<usize>, PickError> {
        let client = self.client(ctx)?;
        let owner = self.table.owner(client);
        let place = (client & 0xffff) * FULL / 0x1_0000;
        let admits = |open: &Candidates<'_, '_, T>, index: usize| place < open.ramp(index);
        let home = if candidates.eligible(owner)? && admits(candidates, owner) {
            owner
        } else {
            let selection = candidates.selection()?;
            let eligible = |index: usize| selection.eligible(index);
            let ramped = |index: usize| eligible(index) && place < selection.ramp(index);
            let fallback = self
                .rendezvous(client, |index| index != owner && ramped(index))
                .or_else(|| self.rendezvous(client, eligible));
            match fallback {
                Some(index) => index,
                None => return Ok(None),
            }
        };
        let Some(bound) = &self.bound else {
            return Ok(Some(home));
        };
        let (selection, backends) = (candidates.selection()?, candidates.backends());
        let load = bound.load_among(backends, |index| selection.eligible(index));
        let open = |index: usize| selection.eligible(index) && place < selection.ramp(index);
        Ok(Some(bound.place(
            backends,
            load,
            home,
            self.preference(client, owner),
            open,
        )))
    }

    /// The plain path: the client's slot owner, or with bounded loads the
    /// first backend in the client's preference order under capacity.
    #[inline(always)]
    fn plain_index<T>(
        &self,
        ctx: &Context<'_>,
        backends: &Backends<T>,
    ) -> Result<usize, PickError> {
        let client = self.client(ctx)?;
        let owner = self.table.owner(client);
        Ok(match &self.bound {
            None => owner,
            Some(bound) => bound.place(
                backends,
                bound.load_of_all(backends),
                owner,
                self.preference(client, owner),
                |_| true,
            ),
        })
    }

    /// The client's own order of backends for bounded loads: its slot's
    /// owner, the owners of the slots it probes next (drawn by weight, as
    /// the slots are), then every backend from the owner on.
    fn preference(&self, client: u64, owner: usize) -> impl Iterator<Item = usize> + '_ {
        let probes =
            (1..=PROBES).map(move |k| self.table.owner(mix(client ^ k.wrapping_mul(PROBE_STEP))));
        std::iter::once(owner)
            .chain(probes)
            .chain(from_home(owner, self.ids.len()))
    }

    /// Weighted rendezvous between the client and the backends `allowed`.
    fn rendezvous(&self, client: u64, allowed: impl Fn(usize) -> bool) -> Option<usize> {
        rendezvous(client, &self.ids, &self.weights, allowed)
    }
}

/// The two little-endian words of a 16-byte SipHash key, as
/// `SipHasher13::new_with_key` reads them.
fn key_words(key: &[u8; 16]) -> (u64, u64) {
    let [k0 @ .., _, _, _, _, _, _, _, _] = *key;
    let [_, _, _, _, _, _, _, _, k1 @ ..] = *key;
    (u64::from_le_bytes(k0), u64::from_le_bytes(k1))
}

impl Choose for &SlotHash {
    #[inline]
    fn plain<T>(
        &mut self,
        ctx: &Context<'_>,
        backends: &Backends<T>,
    ) -> Result<Option<usize>, PickError> {
        self.plain_index(ctx, backends).map(Some)
    }

    fn choose<T>(
        &mut self,
        ctx: &Context<'_>,
        candidates: &mut Candidates<'_, '_, T>,
    ) -> Result<Option<usize>, PickError> {
        self.choose_available(ctx, candidates)
    }
}

/// The mutex-backed form runs the same choice under the lock. The plain
/// choice calls the always-inlined `plain_index` rather than `&SlotHash`'s
/// impl: that change and `client` always inlined took the locked pick from
/// 34.6 to 29.1 ns (`pick/n=4/ip_hash/locked`).
impl Choose for SlotHash {
    #[inline]
    fn plain<T>(
        &mut self,
        ctx: &Context<'_>,
        backends: &Backends<T>,
    ) -> Result<Option<usize>, PickError> {
        self.plain_index(ctx, backends).map(Some)
    }

    fn choose<T>(
        &mut self,
        ctx: &Context<'_>,
        candidates: &mut Candidates<'_, '_, T>,
    ) -> Result<Option<usize>, PickError> {
        (&*self).choose(ctx, candidates)
    }
}

impl<T: Hash> Build<T> for SlotHash {
    type Options = HashOptions;

    /// A new table over the set; every backend keeps its slots (its
    /// identity is its value's hash), so only the slots of backends that
    /// left or joined change hands.
    fn build(set: &Set<'_, T>, options: &HashOptions) -> Result<Self, BuildError> {
        Self::new(set.values(), set.validated(), options.clone())
    }

    fn counts_total(&self) -> bool {
        self.bound.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_words_are_the_words_siphash_reads() {
        let key = *b"0123456789abcdef";
        let (k0, k1) = key_words(&key);
        let mut by_words = SipHasher13::new_with_keys(k0, k1);
        let mut by_bytes = SipHasher13::new_with_key(&key);
        by_words.write(b"client");
        by_bytes.write(b"client");
        assert_eq!(by_words.finish(), by_bytes.finish());
    }
}
