//! The algorithm a pool runs, as a value: chosen from configuration at run
//! time, named in the vocabulary operators know from nginx.
//!
//! The registry at the end of this file is the one place an algorithm is
//! named: its [`Algorithm`] variant, the names it parses from and prints
//! as, and the balancer types a pool runs for it come from one line each.

use std::fmt;
use std::str::FromStr;

use crate::algorithms::ip_hash::HashOptions;
use crate::algorithms::nginx::hash::NginxHashOptions;
use crate::algorithms::nginx::ip_hash::NginxIpHashOptions;
use crate::algorithms::probing::ProbingOptions;
use crate::algorithms::random::RandomOptions;
use crate::algorithms::random::least_conn::ChoiceOptions;
use crate::algorithms::random::peak_ewma::PeakEwmaOptions;
use crate::algorithms::{locked, lockfree};

/// What an algorithm's options say about its names, and whether its picks
/// need a key.
pub(crate) trait Named: Clone + Default {
    /// Picks hash a client address or key.
    const KEYED: bool = false;

    /// The options a name stands for.
    fn for_name(name: &str) -> Self {
        let _ = name;
        Self::default()
    }

    /// The name these options print as, of the algorithm's `names`.
    fn name(&self, names: &[&'static str]) -> &'static str {
        names[0]
    }
}

impl Named for () {}
impl Named for RandomOptions {}
impl Named for ChoiceOptions {}
impl Named for PeakEwmaOptions {}
impl Named for ProbingOptions {}

impl Named for NginxIpHashOptions {
    const KEYED: bool = true;
}

impl Named for HashOptions {
    const KEYED: bool = true;
}

/// `hash` and `hash consistent` are one algorithm with two names.
impl Named for NginxHashOptions {
    const KEYED: bool = true;

    fn for_name(name: &str) -> Self {
        Self::default().consistent(name == "hash consistent")
    }

    fn name(&self, _: &[&'static str]) -> &'static str {
        if self.is_consistent() {
            "hash consistent"
        } else {
            "hash"
        }
    }
}

/// The options an algorithm value holds, if it is the algorithm that takes
/// them.
trait Of: Sized {
    fn of(algorithm: &Algorithm) -> Option<Self>;
}

/// A name that is not an algorithm's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseAlgorithmError {
    input: String,
}

impl fmt::Display for ParseAlgorithmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown algorithm {:?}: expected one of ", self.input)?;
        for (i, name) in Algorithm::NAMES.iter().enumerate() {
            let separator = if i == 0 { "" } else { ", " };
            write!(f, "{separator}{name}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ParseAlgorithmError {}

/// An algorithm of your own, as a [`Pool`](crate::Pool) runs it
/// ([`Pool::custom`](crate::Pool::custom)): known by the name it was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CustomAlgorithm {
    pub(crate) name: &'static str,
}

impl CustomAlgorithm {
    /// The name it was given.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// Generates, from one line an algorithm: the [`Algorithm`] enum and its
/// names (`FromStr`, `Display`, `keyed`), the pool's balancer for each
/// (`Inner`), and `dispatch!`, which runs a body on whichever it is.
macro_rules! registry {
    ($d:tt
        $(
            $(#[$doc:meta])*
            $variant:ident $(($options:ty))? => $alias:ident, [$($name:literal),+];
        )*
    ) => {
        /// Which algorithm a [`Pool`](crate::Pool) runs, with its options.
        ///
        /// Parses from the names in the table (see [`FromStr`]), and prints
        /// as the first name of its row:
        ///
        /// | name | algorithm | balancer types |
        /// |---|---|---|
        /// | `round_robin`, `weighted_round_robin` | nginx's smooth weighted round-robin (nginx's default) | [`WeightedRoundRobin`](crate::algorithms::lockfree::WeightedRoundRobin) |
        /// | `unweighted_round_robin` | round-robin, weights ignored | [`RoundRobin`](crate::algorithms::lockfree::RoundRobin) |
        /// | `least_conn` | least-connections per weight, nginx's ties | [`LeastConn`](crate::algorithms::lockfree::LeastConn) |
        /// | `random` | weighted random | [`Random`](crate::algorithms::lockfree::Random) |
        /// | `random two least_conn`, `random two`, `random least_conn` | power-of-two-choices least-connections | [`RandomLeastConn`](crate::algorithms::lockfree::RandomLeastConn) |
        /// | `peak_ewma`, `random two peak_ewma` | latency-aware, peak EWMA over two choices | [`PeakEwma`](crate::algorithms::lockfree::PeakEwma) |
        /// | `probing`, `prequal` | Prequal's hot-cold rule over probes of requests in flight and latency ([`Pool::probes`](crate::Pool::probes)) | [`Probing`](crate::algorithms::lockfree::Probing) |
        /// | `ip_hash` | nginx's `ip_hash`, bit for bit | [`NginxIpHash`](crate::algorithms::lockfree::NginxIpHash) |
        /// | `hash` | nginx's `hash $key` | [`NginxHash`](crate::algorithms::lockfree::NginxHash) |
        /// | `hash consistent` | nginx's `hash $key consistent` (ketama) | [`NginxHash`](crate::algorithms::lockfree::NginxHash) |
        /// | `consistent_hash` | this crate's keyed hash: SipHash over a weighted rendezvous table | [`IpHash`](crate::algorithms::lockfree::IpHash) |
        ///
        /// Each runs as the [`lockfree`](crate::algorithms::lockfree) or
        /// [`locked`](crate::algorithms::locked) type of that name, as the pool's
        /// [`Form`](crate::pick::Form) says. An algorithm of your own is
        /// [`Custom`](Self::Custom).
        ///
        /// # Examples
        ///
        /// ```
        /// use loadbalance::Algorithm;
        ///
        /// let algorithm: Algorithm = "random two least_conn".parse()?;
        /// assert_eq!(algorithm.to_string(), "random two least_conn");
        /// assert!("least_connections".parse::<Algorithm>().is_err());
        /// # Ok::<(), loadbalance::ParseAlgorithmError>(())
        /// ```
        #[derive(Clone, Debug, PartialEq, Eq)]
        #[non_exhaustive]
        pub enum Algorithm {
            $(
                $(#[$doc])*
                $variant $(($options))?,
            )*
            /// An algorithm of your own ([`Pool::custom`](crate::Pool::custom)).
            Custom(CustomAlgorithm),
        }

        impl Algorithm {
            /// Every name an algorithm of this crate parses from.
            const NAMES: &'static [&'static str] = &[$($($name),+),*];

            /// Whether picks need a client address or key in their
            /// [`Context`](crate::Context).
            pub fn keyed(&self) -> bool {
                match self {
                    $(Self::$variant { .. } => <registry!(@options $($options)?) as Named>::KEYED,)*
                    Self::Custom(_) => false,
                }
            }
        }

        $($(
            impl Of for $options {
                fn of(algorithm: &Algorithm) -> Option<Self> {
                    match algorithm {
                        Algorithm::$variant(options) => Some(options.clone()),
                        _ => None,
                    }
                }
            }
        )?)*

        impl fmt::Display for Algorithm {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(match self {
                    $(Self::$variant { .. } => registry!(@options_of self $($options)?)
                        .name(&[$($name),+]),)*
                    Self::Custom(custom) => custom.name,
                })
            }
        }

        /// Parses a name of the table on [`Algorithm`], with default
        /// options. Words are separated by any whitespace; case matters
        /// (nginx's does).
        impl FromStr for Algorithm {
            type Err = ParseAlgorithmError;

            fn from_str(name: &str) -> Result<Self, Self::Err> {
                let words = name.split_whitespace().collect::<Vec<_>>().join(" ");
                $(
                    if let Some(found) = [$($name),+].into_iter().find(|name| *name == words) {
                        let _ = found; // the options of the name found, below
                        return Ok(Self::$variant $((<$options as Named>::for_name(found)))?);
                    }
                )*
                Err(ParseAlgorithmError {
                    input: name.to_owned(),
                })
            }
        }

        /// Every algorithm in both forms, as a live set, and an algorithm of
        /// the caller's.
        pub(super) enum Inner<T: PoolBackend> {
            $($variant(Forms<lockfree::$alias<T>, locked::$alias<T>>),)*
            Custom(Box<dyn AnyLive<T>>),
        }

        impl<T: PoolBackend> Inner<T> {
            /// The live set `algorithm` runs in `form`, built as `build`
            /// builds it with the algorithm's options.
            pub(super) fn build(
                algorithm: &Algorithm,
                form: Form,
                build: LiveParts<T>,
            ) -> Result<Self, BuildError> {
                Ok(match algorithm {
                    $(Algorithm::$variant { .. } => {
                        let options = registry!(@options_of algorithm $($options)?);
                        Inner::$variant(match form {
                            Form::LockFree => Forms::LockFree(build.live(options)?),
                            Form::Locked => Forms::Locked(build.live(options)?),
                        })
                    })*
                    Algorithm::Custom(custom) => {
                        return Err(BuildError::CustomAlgorithm { name: custom.name })
                    }
                })
            }
        }

        /// Runs `$body` with `$lb` bound to the pool's live balancer,
        /// whatever its type.
        macro_rules! dispatch {
            ($d inner:expr, $d lb:ident => $d body:expr) => {
                match $d inner {
                    $(
                        Inner::$variant(Forms::LockFree($d lb)) => $d body,
                        Inner::$variant(Forms::Locked($d lb)) => $d body,
                    )*
                    Inner::Custom($d lb) => $d body,
                }
            };
        }
        pub(super) use dispatch;
    };
    (@options) => { () };
    (@options $options:ty) => { $options };
    (@options_of $algorithm:ident) => { () };
    (@options_of $algorithm:ident $options:ty) => {
        <$options as Of>::of($algorithm).unwrap_or_default()
    };
}

use super::any_live::AnyLive;
use super::{Forms, LiveParts, PoolBackend};
use crate::error::BuildError;
use crate::pick::Form;

registry! { $
    /// Smooth weighted round-robin, exactly nginx's sequence.
    RoundRobin => WeightedRoundRobin, ["round_robin", "weighted_round_robin"];
    /// Round-robin over the backends in order, weights ignored.
    UnweightedRoundRobin => RoundRobin, ["unweighted_round_robin"];
    /// The fewest active guards per unit of weight, ties as nginx.
    LeastConn => LeastConn, ["least_conn"];
    /// Drawn by weight.
    Random(RandomOptions) => Random, ["random"];
    /// The least loaded of `d` candidates drawn by weight.
    RandomLeastConn(ChoiceOptions) => RandomLeastConn,
        ["random two least_conn", "random two", "random least_conn"];
    /// The lowest peak-EWMA latency × (active + 1) of `d` candidates.
    PeakEwma(PeakEwmaOptions) => PeakEwma, ["peak_ewma", "random two peak_ewma"];
    /// The cold probe answer of lowest latency (Prequal).
    Probing(ProbingOptions) => Probing, ["probing", "prequal"];
    /// nginx's `ip_hash`.
    IpHash(NginxIpHashOptions) => NginxIpHash, ["ip_hash"];
    /// nginx's `hash $key`, consistent (ketama) or not.
    Hash(NginxHashOptions) => NginxHash, ["hash", "hash consistent"];
    /// This crate's keyed hash (see [`IpHash`](crate::algorithms::lockfree::IpHash)).
    ConsistentHash(HashOptions) => IpHash, ["consistent_hash"];
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pick::Form;

    #[test]
    fn every_name_parses_and_prints_its_canonical_name() {
        for (name, canonical) in [
            ("round_robin", "round_robin"),
            ("weighted_round_robin", "round_robin"),
            ("unweighted_round_robin", "unweighted_round_robin"),
            ("least_conn", "least_conn"),
            ("random", "random"),
            ("random two least_conn", "random two least_conn"),
            ("random  two", "random two least_conn"),
            ("random least_conn", "random two least_conn"),
            ("peak_ewma", "peak_ewma"),
            ("random two peak_ewma", "peak_ewma"),
            ("probing", "probing"),
            ("prequal", "probing"),
            ("ip_hash", "ip_hash"),
            ("hash", "hash"),
            ("hash consistent", "hash consistent"),
            ("consistent_hash", "consistent_hash"),
        ] {
            let algorithm: Algorithm = name.parse().expect(name);
            assert_eq!(algorithm.to_string(), canonical);
            assert_eq!(canonical.parse::<Algorithm>().expect(canonical), algorithm);
        }
        for bad in [
            "",
            "Round_Robin",
            "least_connections",
            "hash two",
            "random three",
        ] {
            let error = bad.parse::<Algorithm>().expect_err(bad);
            assert!(error.to_string().contains(&format!("{bad:?}")));
        }
        assert_eq!("locked".parse(), Ok(Form::Locked));
        assert_eq!("lock_free".parse(), Ok(Form::LockFree));
        assert!("mutex".parse::<Form>().is_err());
    }
}
