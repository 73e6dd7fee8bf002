//! Prequal's hot-cold rule over the probe pool: an answer whose requests
//! in flight are above the pool's `hot`-th percentile is hot; the pick
//! takes the cold answer of lowest latency, or, when every answer it may
//! take is hot, the one with the fewest requests in flight. The answer
//! taken counts the request it steers (one more in flight) and is used up
//! after its last use; answers past their age, or of backends no longer in
//! the set, leave the pool.

use crate::backend::probes::{MAX_PROBES, Slot};
use crate::error::PickError;

/// What the rule is set with.
#[derive(Clone, Copy, Debug)]
pub(super) struct Rule {
    /// An answer older than this (nanoseconds) leaves the pool.
    pub(super) max_age: u64,
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
        slots: &mut [Slot],
        now: u64,
        mut index_of: impl FnMut(u64) -> Option<usize>,
        mut eligible: impl FnMut(usize) -> Result<bool, PickError>,
    ) -> Result<Option<usize>, PickError> {
        // The fresh answers of backends in the set: slot and index.
        let mut fresh = [(0usize, 0usize); MAX_PROBES];
        let mut count = 0;
        for (k, slot) in slots.iter_mut().enumerate() {
            if slot.uses == 0 {
                continue;
            }
            let index = index_of(slot.id).filter(|_| now.saturating_sub(slot.at) <= self.max_age);
            match index {
                Some(index) if count < MAX_PROBES => {
                    fresh[count] = (k, index);
                    count += 1;
                }
                _ => *slot = Slot::default(),
            }
        }
        if count == 0 {
            return Ok(None);
        }
        let threshold = {
            let mut in_flight = [0u32; MAX_PROBES];
            for (value, &(k, _)) in in_flight.iter_mut().zip(&fresh[..count]) {
                *value = slots[k].in_flight;
            }
            let in_flight = &mut in_flight[..count];
            in_flight.sort_unstable();
            // The `hot`-th percentile: the smallest value at or above
            // `hot`% of the answers.
            let rank = (count * self.hot as usize).div_ceil(100).clamp(1, count);
            in_flight[rank - 1]
        };
        // (hot, then by in flight and latency for a hot one, by latency and
        // in flight for a cold one; the earlier slot on a tie).
        let mut best: Option<((bool, u64, u64), usize, usize)> = None;
        for &(k, index) in &fresh[..count] {
            if !eligible(index)? {
                continue;
            }
            let slot = &slots[k];
            let in_flight = u64::from(slot.in_flight);
            let key = if slot.in_flight > threshold {
                (true, in_flight, slot.latency)
            } else {
                (false, slot.latency, in_flight)
            };
            if best.is_none_or(|(best, _, _)| key < best) {
                best = Some((key, k, index));
            }
        }
        let Some((_, k, index)) = best else {
            return Ok(None);
        };
        let slot = &mut slots[k];
        slot.in_flight = slot.in_flight.saturating_add(1);
        slot.uses -= 1;
        if slot.uses == 0 {
            *slot = Slot::default();
        }
        Ok(Some(index))
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn slot(id: u64, in_flight: u32, latency: u64, at: u64, uses: u32) -> Slot {
        Slot {
            id,
            in_flight,
            latency,
            at,
            uses,
        }
    }

    const RULE: Rule = Rule {
        max_age: 1_000,
        hot: 50,
    };

    #[test]
    fn the_cold_answer_of_lowest_latency_wins() {
        // In flight 1, 2, 9, 9: the median is 2; 9s are hot.
        let mut slots = [
            slot(0, 9, 1, 0, 1),
            slot(1, 2, 30, 0, 1),
            slot(2, 1, 50, 0, 1),
            slot(3, 9, 2, 0, 1),
        ];
        let index = |id: u64| Some(id as usize);
        assert_eq!(
            RULE.select(&mut slots, 10, index, |_| Ok(true)),
            Ok(Some(1))
        );
        // Used up. Of the three left (9, 1, 9) the median is 9: none is
        // hot, and the lowest latency wins.
        assert_eq!(slots[1].uses, 0);
        assert_eq!(
            RULE.select(&mut slots, 10, index, |_| Ok(true)),
            Ok(Some(0))
        );
    }

    #[test]
    fn when_every_answer_it_may_take_is_hot_the_fewest_in_flight_wins() {
        let mut slots = [
            slot(0, 1, 1, 0, 5),
            slot(1, 9, 3, 0, 5),
            slot(2, 7, 9, 0, 5),
        ];
        let index = |id: u64| Some(id as usize);
        assert_eq!(
            RULE.select(&mut slots, 0, index, |i| Ok(i != 0)),
            Ok(Some(2))
        );
        assert_eq!(slots[2].in_flight, 8, "the pick counts in its answer");
    }

    #[test]
    fn old_answers_and_answers_of_removed_backends_leave_the_pool() {
        let mut slots = [
            slot(0, 0, 1, 0, 5),
            slot(1, 0, 1, 500, 5),
            slot(9, 0, 0, 500, 5),
        ];
        let index = |id: u64| (id < 5).then_some(id as usize);
        assert_eq!(
            RULE.select(&mut slots, 1_200, index, |_| Ok(true)),
            Ok(Some(1))
        );
        assert_eq!(slots[0].uses, 0, "older than the age");
        assert_eq!(slots[2].uses, 0, "not in the set");
        assert_eq!(
            RULE.select(&mut slots, 1_600, index, |_| Ok(true)),
            Ok(None)
        );
    }

    #[test]
    fn an_error_of_eligibility_is_the_picks() {
        let mut slots = [slot(0, 0, 1, 0, 5)];
        let error = RULE.select(
            &mut slots,
            0,
            |id| Some(id as usize),
            |_| Err(PickError::AllDown),
        );
        assert_eq!(error, Err(PickError::AllDown));
    }

    /// The rule as written in the paper, over vectors.
    fn model(
        slots: &mut [Slot],
        rule: Rule,
        now: u64,
        in_set: &[bool],
        eligible: &[bool],
    ) -> Option<usize> {
        for slot in slots.iter_mut() {
            let gone = slot.id as usize >= in_set.len() || !in_set[slot.id as usize];
            if slot.uses > 0 && (gone || now - slot.at > rule.max_age) {
                *slot = Slot::default();
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
        let may: Vec<usize> = fresh
            .into_iter()
            .filter(|&k| eligible[slots[k].id as usize])
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
        slot.in_flight += 1;
        slot.uses -= 1;
        if slot.uses == 0 {
            *slot = Slot::default();
        }
        Some(chosen)
    }

    proptest! {
        #[test]
        fn the_rule_is_the_papers(
            answers in proptest::collection::vec((0u64..8, 0u32..6, 0u64..6, 0u64..100, 0u32..3), 1..=16),
            hot in 1u32..=100,
            max_age in 0u64..100,
            in_set in proptest::collection::vec(any::<bool>(), 8),
            eligible in proptest::collection::vec(any::<bool>(), 8),
            picks in 1usize..6,
        ) {
            let rule = Rule { max_age, hot };
            let mut fast: Vec<Slot> = answers
                .iter()
                .map(|&(id, in_flight, latency, at, uses)| slot(id, in_flight, latency, at, uses))
                .collect();
            let mut slow = fast.clone();
            for pick in 0..picks {
                let now = 100 + pick as u64;
                let got = rule.select(
                    &mut fast,
                    now,
                    |id| in_set[id as usize].then_some(id as usize),
                    |i| Ok(eligible[i]),
                );
                let want = model(&mut slow, rule, now, &in_set, &eligible).map(|k| answers[k].0 as usize);
                prop_assert_eq!(got, Ok(want));
                prop_assert_eq!(&fast, &slow);
            }
        }
    }
}
