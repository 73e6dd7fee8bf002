//! The algorithm a pool runs, as a value: chosen from configuration at run
//! time, named in the vocabulary operators know from nginx.

use std::fmt;
use std::str::FromStr;

use crate::{
    ChoiceOptions, HashOptions, NginxHashOptions, NginxIpHashOptions, PeakEwmaOptions,
    RandomOptions,
};

/// Which algorithm a [`Pool`](crate::Pool) runs, with its options.
///
/// Parses from the names in the table (see [`FromStr`]), and prints as the
/// first name of its row:
///
/// | name | algorithm |
/// |---|---|
/// | `round_robin`, `weighted_round_robin` | nginx's smooth weighted round-robin (nginx's default) |
/// | `unweighted_round_robin` | round-robin, weights ignored |
/// | `least_conn` | least-connections per weight, nginx's ties |
/// | `random` | weighted random |
/// | `random two least_conn`, `random two`, `random least_conn` | power-of-two-choices least-connections |
/// | `peak_ewma`, `random two peak_ewma` | latency-aware, peak EWMA over two choices |
/// | `ip_hash` | nginx's `ip_hash`, bit for bit |
/// | `hash` | nginx's `hash $key` |
/// | `hash consistent` | nginx's `hash $key consistent` (ketama) |
/// | `consistent_hash` | this crate's keyed hash: SipHash over a weighted rendezvous table |
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
    /// Smooth weighted round-robin, exactly nginx's sequence.
    RoundRobin,
    /// Round-robin over the backends in order, weights ignored.
    UnweightedRoundRobin,
    /// The fewest active guards per unit of weight, ties as nginx.
    LeastConn,
    /// Drawn by weight.
    Random(RandomOptions),
    /// The least loaded of `d` candidates drawn by weight.
    RandomLeastConn(ChoiceOptions),
    /// The lowest peak-EWMA latency × (active + 1) of `d` candidates.
    PeakEwma(PeakEwmaOptions),
    /// nginx's `ip_hash`.
    IpHash(NginxIpHashOptions),
    /// nginx's `hash $key`, consistent (ketama) or not.
    Hash(NginxHashOptions),
    /// This crate's keyed hash (see [`IpHash`](crate::lockfree::IpHash)).
    ConsistentHash(HashOptions),
}

impl Algorithm {
    /// Whether picks need a client address or key in their
    /// [`Context`](crate::Context).
    pub fn keyed(&self) -> bool {
        matches!(
            self,
            Self::IpHash(_) | Self::Hash(_) | Self::ConsistentHash(_)
        )
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::RoundRobin => "round_robin",
            Self::UnweightedRoundRobin => "unweighted_round_robin",
            Self::LeastConn => "least_conn",
            Self::Random(_) => "random",
            Self::RandomLeastConn(_) => "random two least_conn",
            Self::PeakEwma(_) => "peak_ewma",
            Self::IpHash(_) => "ip_hash",
            Self::Hash(options) if options.is_consistent() => "hash consistent",
            Self::Hash(_) => "hash",
            Self::ConsistentHash(_) => "consistent_hash",
        })
    }
}

/// Parses a name of the table on [`Algorithm`], with default options.
/// Words are separated by any whitespace; case matters (nginx's does).
impl FromStr for Algorithm {
    type Err = ParseAlgorithmError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let words: Vec<&str> = name.split_whitespace().collect();
        Ok(match words.as_slice() {
            ["round_robin"] | ["weighted_round_robin"] => Self::RoundRobin,
            ["unweighted_round_robin"] => Self::UnweightedRoundRobin,
            ["least_conn"] => Self::LeastConn,
            ["random"] => Self::Random(RandomOptions::default()),
            ["random", "two", "least_conn"] | ["random", "two"] | ["random", "least_conn"] => {
                Self::RandomLeastConn(ChoiceOptions::default())
            }
            ["peak_ewma"] | ["random", "two", "peak_ewma"] => {
                Self::PeakEwma(PeakEwmaOptions::default())
            }
            ["ip_hash"] => Self::IpHash(NginxIpHashOptions::default()),
            ["hash"] => Self::Hash(NginxHashOptions::default().consistent(false)),
            ["hash", "consistent"] => Self::Hash(NginxHashOptions::default()),
            ["consistent_hash"] => Self::ConsistentHash(HashOptions::default()),
            _ => {
                return Err(ParseAlgorithmError {
                    input: name.to_owned(),
                })
            }
        })
    }
}

/// A name that is not an algorithm's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseAlgorithmError {
    input: String,
}

impl fmt::Display for ParseAlgorithmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown algorithm {:?}: expected one of round_robin, unweighted_round_robin, \
             least_conn, random, random two least_conn, peak_ewma, ip_hash, hash, \
             hash consistent, consistent_hash",
            self.input
        )
    }
}

impl std::error::Error for ParseAlgorithmError {}

/// Which form of the algorithm a pool runs (see [`docs`](crate::docs)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Form {
    /// Atomics only: no lock and no allocation on the pick path.
    #[default]
    LockFree,
    /// The sequential algorithm behind a mutex.
    Locked,
}

impl fmt::Display for Form {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::LockFree => "lockfree",
            Self::Locked => "locked",
        })
    }
}

/// `lockfree` (or `lock_free`) and `locked`.
impl FromStr for Form {
    type Err = ParseFormError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name.trim() {
            "lockfree" | "lock_free" => Ok(Self::LockFree),
            "locked" => Ok(Self::Locked),
            _ => Err(ParseFormError {
                input: name.to_owned(),
            }),
        }
    }
}

/// A name that is not a form's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseFormError {
    input: String,
}

impl fmt::Display for ParseFormError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown form {:?}: expected lockfree or locked",
            self.input
        )
    }
}

impl std::error::Error for ParseFormError {}

#[cfg(test)]
mod tests {
    use super::*;

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
