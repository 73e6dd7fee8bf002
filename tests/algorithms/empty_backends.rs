//! Issue 22, item 1: an empty backend list is `BuildError::NoBackends` (or
//! the configuration's `backends` field), at once, for every algorithm in
//! every form, through every constructor, builder, configuration path and
//! reload. Each call runs under a deadline, so a build that would hang
//! fails the test instead of hanging it.
#![cfg(feature = "serde")]

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use loadbalance::{
    Algorithm, Backend, BuildError, ChoiceOptions, Form, HashOptions, Live, NginxHashOptions,
    NginxIpHashOptions, PeakEwmaOptions, Pool, PoolConfig, ProbingOptions, RandomOptions, locked,
    lockfree,
};

/// Generous for a call that should return in microseconds, short enough
/// that a hang fails quickly.
const DEADLINE: Duration = Duration::from_secs(10);

/// Runs `call` on its own thread and returns what it returned, or fails the
/// test if it has not returned within `DEADLINE` (the thread is left
/// behind; the test process ends with the run).
fn within<R: Send + 'static>(what: &str, call: impl FnOnce() -> R + Send + 'static) -> R {
    let (send, receive) = mpsc::channel();
    thread::Builder::new()
        .name(what.to_owned())
        .spawn(move || {
            let _ = send.send(call());
        })
        .expect("spawns");
    match receive.recv_timeout(DEADLINE) {
        Ok(result) => result,
        Err(_) => panic!("{what}: no answer within {DEADLINE:?} (hangs)"),
    }
}

fn expect_no_backends<B>(what: &str, call: impl FnOnce() -> Result<B, BuildError> + Send + 'static)
where
    B: Send + 'static,
{
    let error = within(what, move || call().err());
    assert_eq!(error, Some(BuildError::NoBackends), "{what}");
}

/// Every static constructor of every balancer type, both forms.
#[test]
fn every_constructor_refuses_an_empty_list() {
    macro_rules! constructors {
        ($($form:ident :: $name:ident { $($call:tt)* }),* $(,)?) => {$(
            constructors!(@each $form::$name $($call)*);
        )*};
        (@each $form:ident :: $name:ident new $($rest:tt)*) => {
            expect_no_backends(concat!(stringify!($form), "::", stringify!($name), "::new"), || {
                $form::$name::new(Vec::<u32>::new())
            });
            constructors!(@each $form::$name $($rest)*);
        };
        (@each $form:ident :: $name:ident weighted $($rest:tt)*) => {
            expect_no_backends(
                concat!(stringify!($form), "::", stringify!($name), "::weighted"),
                || $form::$name::weighted(Vec::<(u32, u32)>::new()),
            );
            constructors!(@each $form::$name $($rest)*);
        };
        (@each $form:ident :: $name:ident options($options:expr) $($rest:tt)*) => {
            expect_no_backends(
                concat!(stringify!($form), "::", stringify!($name), "::with_options"),
                || $form::$name::with_options(Vec::<(u32, u32)>::new(), $options),
            );
            constructors!(@each $form::$name $($rest)*);
        };
        (@each $form:ident :: $name:ident) => {};
    }
    constructors! {
        lockfree::RoundRobin { new },
        locked::RoundRobin { new },
        lockfree::LeastConn { new weighted },
        locked::LeastConn { new weighted },
        lockfree::Random { new weighted options(RandomOptions::default()) },
        locked::Random { new weighted options(RandomOptions::default()) },
        lockfree::RandomLeastConn { new weighted options(ChoiceOptions::default()) },
        locked::RandomLeastConn { new weighted options(ChoiceOptions::default()) },
        lockfree::PeakEwma { new weighted options(PeakEwmaOptions::default()) },
        locked::PeakEwma { new weighted options(PeakEwmaOptions::default()) },
        lockfree::Probing { new weighted options(ProbingOptions::default()) },
        locked::Probing { new weighted options(ProbingOptions::default()) },
        lockfree::IpHash { new weighted options(HashOptions::default()) },
        locked::IpHash { new weighted options(HashOptions::default()) },
        lockfree::NginxIpHash { new weighted options(NginxIpHashOptions::default()) },
        locked::NginxIpHash { new weighted options(NginxIpHashOptions::default()) },
        lockfree::NginxHash { new weighted options(NginxHashOptions::default()) },
        locked::NginxHash { new weighted options(NginxHashOptions::default()) },
    }
    expect_no_backends("lockfree::WeightedRoundRobin::new", || {
        lockfree::WeightedRoundRobin::new(Vec::<(u32, u32)>::new())
    });
    expect_no_backends("locked::WeightedRoundRobin::new", || {
        locked::WeightedRoundRobin::new(Vec::<(u32, u32)>::new())
    });
    expect_no_backends("lockfree::NginxHash::with_options, not consistent", || {
        lockfree::NginxHash::with_options(
            Vec::<(u32, u32)>::new(),
            NginxHashOptions::default().consistent(false),
        )
    });
}

/// `Live` over every balancer type, by `new` and by its builder.
#[test]
fn every_live_balancer_refuses_an_empty_list() {
    macro_rules! live {
        ($($form:ident :: $name:ident),* $(,)?) => {$(
            expect_no_backends(concat!("Live<", stringify!($form), "::", stringify!($name), ">::new"), || {
                Live::<$form::$name<u32>>::new(Vec::<Backend<u32>>::new())
            });
            expect_no_backends(concat!("Live<", stringify!($form), "::", stringify!($name), ">::builder"), || {
                Live::<$form::$name<u32>>::builder().build(Vec::<Backend<u32>>::new())
            });
        )*};
    }
    live! {
        lockfree::RoundRobin, locked::RoundRobin,
        lockfree::WeightedRoundRobin, locked::WeightedRoundRobin,
        lockfree::LeastConn, locked::LeastConn,
        lockfree::Random, locked::Random,
        lockfree::RandomLeastConn, locked::RandomLeastConn,
        lockfree::PeakEwma, locked::PeakEwma,
        lockfree::Probing, locked::Probing,
        lockfree::IpHash, locked::IpHash,
        lockfree::NginxIpHash, locked::NginxIpHash,
        lockfree::NginxHash, locked::NginxHash,
    }
}

/// Every name `Algorithm` parses, canonical and alias.
const NAMES: [&str; 16] = [
    "round_robin",
    "weighted_round_robin",
    "unweighted_round_robin",
    "least_conn",
    "random",
    "random two least_conn",
    "random two",
    "random least_conn",
    "peak_ewma",
    "random two peak_ewma",
    "probing",
    "prequal",
    "ip_hash",
    "hash",
    "hash consistent",
    "consistent_hash",
];

const FORMS: [Form; 2] = [Form::LockFree, Form::Locked];

#[test]
fn every_pool_builder_refuses_an_empty_list() {
    for name in NAMES {
        for form in FORMS {
            let what = format!("Pool::builder({name:?}).form({form}).build([])");
            let algorithm: Algorithm = name.parse().expect("a name of the table");
            expect_no_backends(&what, move || {
                Pool::<String>::builder(algorithm)
                    .form(form)
                    .build(Vec::new())
            });
        }
    }
}

fn config(name: &str, form: Form, servers: &[&str]) -> PoolConfig<String> {
    let backends: String = servers
        .iter()
        .map(|server| format!("[[backends]]\nserver = {server:?}\n"))
        .collect();
    let text = format!(
        "algorithm = {name:?}\nform = \"{form}\"\n{}{backends}",
        if servers.is_empty() {
            "backends = []\n"
        } else {
            ""
        }
    );
    toml::from_str(&text).expect("a well-formed file")
}

/// A file with `backends = []`: `validate` and `build` name the field.
#[test]
fn every_configuration_refuses_an_empty_list() {
    for name in NAMES {
        for form in FORMS {
            let empty = config(name, form, &[]);
            for (path, call) in [("validate", 0), ("build", 1)] {
                let empty = empty.clone();
                let what = format!("{name:?} ({form}): PoolConfig::{path}");
                let error = within(&what, move || match call {
                    0 => empty.validate().err(),
                    _ => empty.build().err(),
                })
                .unwrap_or_else(|| panic!("{what}: accepted an empty list"));
                assert_eq!(error.field, "backends", "{what}: {error}");
                assert!(error.to_string().contains("no backends"), "{what}: {error}");
            }
        }
    }
}

/// A reload to an emptied file is refused with the field named, and the
/// running pool keeps its backends and keeps picking.
#[test]
fn every_reload_to_an_empty_list_is_refused_and_changes_nothing() {
    for name in NAMES {
        for form in FORMS {
            let what = format!("{name:?} ({form}): Pool::apply(backends = [])");
            let running = config(name, form, &["10.0.0.1:80", "10.0.0.2:80"])
                .build()
                .expect("a valid pool");
            let empty = config(name, form, &[]);
            let (running, error) = within(&what, move || {
                let error = running.apply(&empty).err();
                (running, error)
            });
            let error = error.unwrap_or_else(|| panic!("{what}: applied"));
            assert_eq!(error.field, "backends", "{what}: {error}");
            assert_eq!(running.len(), 2, "{what}: the set changed");
            let ctx = loadbalance::Context::from_addr([192, 0, 2, 1].into());
            assert!(running.pick(&ctx).is_ok(), "{what}: no pick after");
        }
    }
}
