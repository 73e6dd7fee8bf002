//! Prequal's hot-cold rule over the probe pool: an answer whose requests
//! in flight are above the pool's `hot`-th percentile is hot; the pick
//! takes the cold answer of lowest latency, or, when every answer it may
//! take is hot, the one with the fewest requests in flight. The answer
//! taken counts the request it steers (one more in flight) and is used up
//! after its last use; answers of backends no longer in the set leave the
//! pool. (Answers past their age leave when a newer one comes: a pick
//! does not read the clock.)

use crate::backend::probes::Ring;
use crate::error::PickError;

/// What the rule is set with.
#[derive(Clone, Copy, Debug)]
pub(super) struct Rule {
    /// The percentile of requests in flight above which an answer is hot.
    pub(super) hot: u32,
}

impl Rule {
    /// The backend a pick takes from `slots`, `None` when no answer in the
    /// pool may take it. `index_of` maps a record id to its index in the
    /// set the pick sees (`None`: not in it); `eligible` says whether an
    /// index may take this pick.
    ///
    /// # Errors
    ///
    /// What `eligible` returns.
    pub(super) fn select(
        self,
        ring: &mut Ring,
        epoch: u64,
        mut index_of: impl FnMut(u64) -> Option<usize>,
        mut eligible: impl FnMut(usize) -> Result<bool, PickError>,
    ) -> Result<Option<usize>, PickError> {
        // Indices are looked up once a state and an answer, then cached.
        // An answer of a backend not in this set leaves the pool if this
        // is the newest state; an older one (a pick begun before a
        // rebuild) only passes it over.
        let mut unresolved = ring.unresolved(epoch);
        let mut passed = 0u16;
        while unresolved != 0 {
            let k = unresolved.trailing_zeros() as usize;
            unresolved &= unresolved - 1;
            let slot = &ring.slots()[k];
            if slot.uses == 0 {
                continue;
            }
            match index_of(slot.id) {
                Some(index) => ring.set_index(k, index as u32),
                None if ring.is_newest(epoch) => ring.clear(k),
                None => {
                    passed |= 1 << k;
                    ring.unresolve(k);
                }
            }
        }
        let count = ring.in_use();
        if count == 0 {
            return Ok(None);
        }
        let rank = (count * self.hot as usize).div_ceil(100).clamp(1, count);
        let threshold = ring.smallest(rank);
        // Ordered by one number: a cold answer by latency then in flight,
        // a hot one after every cold one, by in flight then latency; the
        // earlier slot on a tie.
        let (mut best_key, mut best) = (u128::MAX, None);
        for (k, slot) in ring.slots().iter().enumerate() {
            if slot.uses == 0 || passed & 1 << k != 0 || !eligible(slot.index as usize)? {
                continue;
            }
            let own = u128::from(slot.in_flight);
            // Never `u128::MAX`: bits 96 to 126 are always clear.
            let key = if slot.in_flight > threshold {
                1 << 127 | own << 64 | u128::from(slot.latency)
            } else {
                u128::from(slot.latency) << 32 | own
            };
            if key < best_key {
                (best_key, best) = (key, Some(k));
            }
        }
        let Some(k) = best else {
            return Ok(None);
        };
        let index = ring.slots()[k].index as usize;
        ring.take(k);
        Ok(Some(index))
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::backend::probes::Slot;
    use proptest::prelude::*;

    const RULE: Rule = Rule { hot: 50 };

    #[test]
    fn the_cold_answer_of_lowest_latency_wins() {
        // In flight 1, 2, 9, 9: the median is 2; 9s are hot.
        let mut slots = Ring::with(&[
            Slot::answer(0, 9, 1, 0, 1),
            Slot::answer(1, 2, 30, 0, 1),
            Slot::answer(2, 1, 50, 0, 1),
            Slot::answer(3, 9, 2, 0, 1),
        ]);
        let index = |id: u64| Some(id as usize);
        assert_eq!(RULE.select(&mut slots, 1, index, |_| Ok(true)), Ok(Some(1)));
        // Used up. Of the three left (9, 1, 9) the median is 9: none is
        // hot, and the lowest latency wins.
        assert_eq!(slots.slots()[1].uses, 0);
        assert_eq!(RULE.select(&mut slots, 1, index, |_| Ok(true)), Ok(Some(0)));
    }

    #[test]
    fn when_every_answer_it_may_take_is_hot_the_fewest_in_flight_wins() {
        let mut slots = Ring::with(&[
            Slot::answer(0, 1, 1, 0, 5),
            Slot::answer(1, 9, 3, 0, 5),
            Slot::answer(2, 7, 9, 0, 5),
        ]);
        let index = |id: u64| Some(id as usize);
        assert_eq!(
            RULE.select(&mut slots, 1, index, |i| Ok(i != 0)),
            Ok(Some(2))
        );
        assert_eq!(
            slots.slots()[2].in_flight,
            8,
            "the pick counts in its answer"
        );
    }

    #[test]
    fn answers_of_removed_backends_leave_the_pool() {
        let mut slots = Ring::with(&[Slot::answer(0, 0, 5, 0, 5), Slot::answer(9, 0, 0, 500, 5)]);
        let index = |id: u64| (id < 5).then_some(id as usize);
        assert_eq!(RULE.select(&mut slots, 1, index, |_| Ok(true)), Ok(Some(0)));
        assert_eq!(slots.slots()[1].uses, 0, "not in the set");
        // Another state, in which backend 0 is gone too.
        assert_eq!(RULE.select(&mut slots, 2, |_| None, |_| Ok(true)), Ok(None));
        assert_eq!(slots.in_use(), 0);
    }

    #[test]
    fn an_error_of_eligibility_is_the_picks() {
        let mut slots = Ring::with(&[Slot::answer(0, 0, 1, 0, 5)]);
        let error = RULE.select(
            &mut slots,
            1,
            |id| Some(id as usize),
            |_| Err(PickError::AllDown),
        );
        assert_eq!(error, Err(PickError::AllDown));
    }

    /// The rule as written in the paper, over vectors: backend `id` is at
    /// `map(id)` in the set.
    fn model(
        slots: &mut [Slot],
        rule: Rule,
        in_set: &[bool],
        newest: bool,
        map: impl Fn(u64) -> usize,
        eligible: &[bool],
    ) -> Option<usize> {
        let gone = |slot: &Slot| slot.id as usize >= in_set.len() || !in_set[slot.id as usize];
        if newest {
            for slot in slots.iter_mut() {
                if slot.uses > 0 && gone(slot) {
                    *slot = Slot::default();
                }
            }
        }
        let fresh: Vec<usize> = (0..slots.len()).filter(|&k| slots[k].uses > 0).collect();
        if fresh.is_empty() {
            return None;
        }
        let mut sorted: Vec<u32> = fresh.iter().map(|&k| slots[k].in_flight).collect();
        sorted.sort_unstable();
        let n = sorted.len() as f64;
        // The smallest value with at least hot% of the answers at or below.
        let threshold = *sorted
            .iter()
            .find(|&&v| {
                sorted.iter().filter(|&&w| w <= v).count() as f64 >= n * f64::from(rule.hot) / 100.0
            })
            .unwrap_or(&sorted[0]);
        // A state that is not the newest passes over what it lacks.
        let may: Vec<usize> = fresh
            .into_iter()
            .filter(|&k| !gone(&slots[k]) && eligible[map(slots[k].id)])
            .collect();
        let cold: Vec<usize> = may
            .iter()
            .copied()
            .filter(|&k| slots[k].in_flight <= threshold)
            .collect();
        let chosen = if cold.is_empty() {
            may.into_iter()
                .min_by_key(|&k| (slots[k].in_flight, slots[k].latency, k))?
        } else {
            cold.into_iter()
                .min_by_key(|&k| (slots[k].latency, slots[k].in_flight, k))?
        };
        let slot = &mut slots[chosen];
        let index = map(slot.id);
        slot.in_flight += 1;
        slot.uses -= 1;
        if slot.uses == 0 {
            *slot = Slot::default();
        }
        Some(index)
    }

    /// What an answer says, without the pick's cache of its index.
    fn said(slots: &[Slot]) -> Vec<(u64, u32, u64, u64, u32)> {
        slots
            .iter()
            .map(|s| (s.id, s.in_flight, s.latency, s.at, s.uses))
            .collect()
    }

    /// The pool's insert, over vectors: answers more than `max_age` older
    /// leave; then the same backend's place, an empty one, or the oldest.
    fn model_insert(slots: &mut [Slot], answer: Slot, max_age: u64) {
        for slot in slots.iter_mut() {
            if slot.uses > 0 && answer.at - slot.at > max_age {
                *slot = Slot::default();
            }
        }
        let place = (0..slots.len())
            .find(|&k| slots[k].uses > 0 && slots[k].id == answer.id)
            .or_else(|| (0..slots.len()).find(|&k| slots[k].uses == 0))
            .or_else(|| (0..slots.len()).min_by_key(|&k| slots[k].at));
        if let Some(k) = place {
            slots[k] = answer;
        }
    }

    #[derive(Clone, Debug)]
    enum Step {
        Pick,
        Answer(u64, u32, u64, u32),
    }

    proptest! {
        /// Picks and answers interleave; every third step the set is
        /// rebuilt with the backends numbered the other way: the index a
        /// slot caches is never read for another state, and an answer's
        /// is looked up before it steers. State 2 is the newest: state 1
        /// (a pick begun before the rebuild) passes over the answers of
        /// backends it lacks rather than forget them.
        #[test]
        fn the_rule_is_the_papers(
            answers in proptest::collection::vec((0u64..8, 0u32..6, 0u64..6, 0u64..100, 0u32..3), 1..=16),
            hot in 1u32..=100,
            in_set in proptest::collection::vec(any::<bool>(), 8),
            eligible in proptest::collection::vec(any::<bool>(), 8),
            steps in proptest::collection::vec(prop_oneof![
                Just(Step::Pick),
                (0u64..8, 0u32..6, 0u64..6, 1u32..3).prop_map(|(a, b, c, d)| Step::Answer(a, b, c, d)),
            ], 1..24),
        ) {
            const MAX_AGE: u64 = 30;
            let rule = Rule { hot };
            let mut slow: Vec<Slot> = answers
                .iter()
                .map(|&(id, in_flight, latency, at, uses)| Slot::answer(id, in_flight, latency, at, uses))
                .collect();
            let mut fast = Ring::with(&slow);
            fast.built(2);
            for (step, what) in steps.into_iter().enumerate() {
                let (epoch, reversed) = if (step / 3) % 2 == 0 { (1, false) } else { (2, true) };
                let map = |id: u64| if reversed { 7 - id as usize } else { id as usize };
                match what {
                    Step::Pick => {
                        let got = rule.select(
                            &mut fast,
                            epoch,
                            |id| in_set[id as usize].then_some(map(id)),
                            |i| Ok(eligible[i]),
                        );
                        let want = model(&mut slow, rule, &in_set, epoch == 2, map, &eligible);
                        prop_assert_eq!(got, Ok(want));
                    }
                    Step::Answer(id, in_flight, latency, uses) => {
                        let answer = Slot::answer(id, in_flight, latency, 100 + step as u64, uses);
                        fast.insert(answer, MAX_AGE);
                        model_insert(&mut slow, answer, MAX_AGE);
                    }
                }
                prop_assert_eq!(said(fast.slots()), said(&slow));
            }
        }
    }
}
