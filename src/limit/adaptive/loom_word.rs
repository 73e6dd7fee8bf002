//! Loom models of the adaptive limit's word (`adaptive/word.rs`): the last
//! slot given once, a lowered limit racing an admission, and no count lost
//! to a limit's update racing admissions and drops.

use loom::thread;

use super::word::Word;

/// Two requests racing for the last slot: exactly one gets it.
#[test]
fn adaptive_limit_gives_the_last_slot_once() {
    loom::model(|| {
        let word = std::sync::Arc::new(Word::new(2));
        word.try_take().expect("a free slot");
        let racers: Vec<_> = (0..2)
            .map(|_| {
                let word = std::sync::Arc::clone(&word);
                thread::spawn(move || word.try_take().is_ok())
            })
            .collect();
        let won = racers
            .into_iter()
            .map(|racer| racer.join().expect("racer"))
            .filter(|&won| won)
            .count();
        assert_eq!(won, 1);
        assert_eq!(word.get(), (2, 2));
    });
}

/// The limit lowered from 2 to 1 while a request arrives with one permit
/// held: the request is admitted only against the old limit, so it never
/// holds a slot beside the other under the new one unless it came first;
/// and the count is exact after both.
#[test]
fn adaptive_limit_lowered_while_a_request_arrives() {
    loom::model(|| {
        let word = std::sync::Arc::new(Word::new(2));
        word.try_take().expect("a free slot");
        let lower = {
            let word = std::sync::Arc::clone(&word);
            thread::spawn(move || word.set_limit(1))
        };
        let admitted = word.try_take().is_ok();
        lower.join().expect("lower");
        let (limit, in_flight) = word.get();
        assert_eq!(limit, 1, "the update is never lost");
        assert_eq!(
            in_flight,
            1 + u32::from(admitted),
            "the admission is never lost"
        );
    });
}

/// An update racing an admission and a drop: neither count step is lost,
/// and the new limit stands.
#[test]
fn adaptive_limit_update_loses_no_count() {
    loom::model(|| {
        let word = std::sync::Arc::new(Word::new(3));
        word.try_take().expect("a free slot");
        let taker = {
            let word = std::sync::Arc::clone(&word);
            thread::spawn(move || word.try_take().is_ok())
        };
        let dropper = {
            let word = std::sync::Arc::clone(&word);
            thread::spawn(move || word.give_back())
        };
        word.set_limit(5);
        let took = taker.join().expect("taker");
        dropper.join().expect("dropper");
        assert!(took, "3 is room for one more whatever the order");
        assert_eq!(word.get(), (5, 1));
    });
}
