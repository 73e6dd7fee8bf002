//! Typed errors: what construction rejects and when a pick cannot answer.

use std::fmt;

/// Why a balancer could not be built. The input is returned untouched to the
/// caller's scope (construction takes it by value and drops it), and nothing
/// is half-built.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// The backend list was empty.
    NoBackends,
    /// More backends than [`MAX_BACKENDS`](crate::MAX_BACKENDS): indices are
    /// stored as `u16` in schedules and hash tables.
    TooManyBackends {
        /// How many backends were given.
        len: usize,
        /// The most one balancer holds.
        max: usize,
    },
    /// A backend had weight 0; the first such index is reported.
    ZeroWeight {
        /// Position of the backend in the list given.
        index: usize,
    },
    /// The weights add up to more than `u32::MAX` (Envoy's limit too).
    WeightOverflow,
    /// Two backends of a hash balancer have the same identity (the same
    /// value), so they could not be told apart when the set changes.
    DuplicateBackend {
        /// Position of the first occurrence.
        first: usize,
        /// Position of the repeat.
        second: usize,
    },
    /// The hash table size is outside the supported range.
    TableBits {
        /// The requested log2 of the table size.
        bits: u8,
        /// The smallest accepted value.
        min: u8,
        /// The largest accepted value.
        max: u8,
    },
    /// The number of candidates a pick draws is outside the supported range.
    Choices {
        /// The requested number.
        choices: u8,
        /// The smallest accepted value.
        min: u8,
        /// The largest accepted value.
        max: u8,
    },
    /// A duration option is zero or too long to count in nanoseconds.
    Duration {
        /// Which option.
        option: &'static str,
    },
    /// A bounded-load factor of 100% or less: backends could not hold the
    /// guards between them.
    BoundedLoad {
        /// The factor given, in percent.
        percent: u32,
    },
    /// The total weight of an nginx consistent hash ring is past
    /// [`NginxHashOptions::MAX_CONSISTENT_TOTAL_WEIGHT`](crate::NginxHashOptions::MAX_CONSISTENT_TOTAL_WEIGHT)
    /// (160 points a unit of weight).
    RingTooLarge {
        /// The total weight given.
        total_weight: u32,
        /// The largest accepted.
        max: u32,
    },
    /// A count or a share of an algorithm's options outside its range.
    Range {
        /// Which option.
        option: &'static str,
        /// The value given.
        value: u32,
        /// The smallest accepted value.
        min: u32,
        /// The largest accepted value.
        max: u32,
    },
    /// [`Algorithm::Custom`](crate::Algorithm::Custom) given to
    /// [`Pool::builder`](crate::Pool::builder): an algorithm of your own
    /// is built with [`Pool::custom`](crate::Pool::custom), which has its
    /// type.
    CustomAlgorithm {
        /// The name it was given.
        name: &'static str,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoBackends => f.write_str("no backends were given"),
            Self::TooManyBackends { len, max } => {
                write!(
                    f,
                    "{len} backends were given but a balancer holds at most {max}"
                )
            }
            Self::ZeroWeight { index } => write!(f, "backend {index} has weight 0"),
            Self::WeightOverflow => f.write_str("the weights add up to more than u32::MAX"),
            Self::DuplicateBackend { first, second } => {
                write!(f, "backends {first} and {second} have the same identity")
            }
            Self::TableBits { bits, min, max } => {
                write!(f, "hash table bits {bits} is outside {min}..={max}")
            }
            Self::Choices { choices, min, max } => {
                write!(f, "{choices} candidates a pick is outside {min}..={max}")
            }
            Self::Duration { option } => {
                write!(f, "{option} must be above zero and below 584 years")
            }
            Self::BoundedLoad { percent } => {
                write!(f, "a bounded-load factor of {percent}% is not above 100%")
            }
            Self::RingTooLarge { total_weight, max } => write!(
                f,
                "a consistent hash ring of total weight {total_weight} is past the limit of {max}"
            ),
            Self::Range {
                option,
                value,
                min,
                max,
            } => write!(f, "{option} {value} is outside {min}..={max}"),
            Self::CustomAlgorithm { name } => write!(
                f,
                "{name} is an algorithm of your own: build its pool with Pool::custom"
            ),
        }
    }
}

impl std::error::Error for BuildError {}

/// Why a pick returned no backend.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PickError {
    /// A hashing balancer was called with a [`Context`](crate::Context) that
    /// carries neither a client address nor a key.
    MissingKey,
    /// Every backend is down or draining.
    AllDown,
    /// Every backend that is not down was already tried by this request
    /// (see [`Tried`](crate::Tried)).
    AllTried,
    /// Every backend that could take the pick is ejected by passive health,
    /// and the policy is [`WhenAllEjected::Fail`](crate::WhenAllEjected::Fail).
    AllEjected,
    /// Every backend that could take the pick already has `max_conns`
    /// active guards.
    AllFull,
}

impl fmt::Display for PickError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingKey => f.write_str("a hashing balancer needs a client address or a key"),
            Self::AllDown => f.write_str("every backend is down or draining"),
            Self::AllTried => f.write_str("every available backend was already tried"),
            Self::AllEjected => f.write_str("every available backend is ejected as unhealthy"),
            Self::AllFull => f.write_str("every available backend is at its connection limit"),
        }
    }
}

impl std::error::Error for PickError {}

/// Why a live balancer rejected an update. The balancer is unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpdateError {
    /// A backend with the same identity is already in the set.
    Duplicate,
    /// No backend with that identity is in the set.
    NotFound,
    /// The update would remove the last backend; mark it down instead.
    LastBackend,
    /// The new set is not one a balancer can be built over (too many
    /// backends, a zero weight, weights that overflow, a hash collision).
    Build(BuildError),
    /// The update is applied for every pick that starts from now on, but
    /// the deadline passed while picks that began before it were still in
    /// flight: one of them may still hand out the old state.
    InFlight,
}

impl fmt::Display for UpdateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Duplicate => f.write_str("a backend with this identity is already in the set"),
            Self::NotFound => f.write_str("no backend with this identity is in the set"),
            Self::LastBackend => {
                f.write_str("the last backend cannot be removed; mark it down instead")
            }
            Self::Build(error) => write!(f, "the updated set is invalid: {error}"),
            Self::InFlight => f.write_str(
                "the update is applied but picks that began before it may still be in flight",
            ),
        }
    }
}

impl std::error::Error for UpdateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Build(error) => Some(error),
            _ => None,
        }
    }
}

impl From<BuildError> for UpdateError {
    fn from(error: BuildError) -> Self {
        Self::Build(error)
    }
}
