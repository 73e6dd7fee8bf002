//! A pool's configuration as data (feature `serde`): what a proxy reads
//! from its TOML or JSON file, builds a pool from, and applies to the
//! running pool on reload.
//!
//! Validation builds the configured pool for real (over a manual clock)
//! and maps each construction error to the field that caused it, so the
//! rules are exactly the constructors' and a bad file changes nothing.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Algorithm, CustomAlgorithm, Form, Pool, PoolBackend};
use crate::algorithms::ip_hash::HashOptions;
use crate::algorithms::nginx::hash::NginxHashOptions;
use crate::algorithms::nginx::ip_hash::NginxIpHashOptions;
use crate::algorithms::random::RandomOptions;
use crate::algorithms::random::least_conn::ChoiceOptions;
use crate::algorithms::random::peak_ewma::PeakEwmaOptions;
use crate::backend::{HealthPolicy, WhenAllEjected};
use crate::error::{BuildError, UpdateError};
use crate::live::{AdminState, Backend};
use crate::time::ManualClock;

/// A pool as configured: algorithm, form, options, health policy and
/// backends, in the order the algorithm sees them.
///
/// # Examples
///
/// ```
/// use loadbalance::{Context, PoolConfig};
///
/// let config: PoolConfig<String> = serde_json::from_str(r#"{
///     "algorithm": "random two least_conn",
///     "health": { "max_fails": 3, "fail_timeout_ms": 5000 },
///     "backends": [
///         { "server": "10.0.0.1:80", "weight": 2 },
///         { "server": "10.0.0.2:80", "max_conns": 100 },
///         { "server": "10.0.0.3:80", "backup": true }
///     ]
/// }"#)?;
/// let pool = config.build()?;
/// pool.pick(&Context::new())?.success();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig<T> {
    /// A name from [`Algorithm`]'s table, such as `"least_conn"`.
    pub algorithm: String,
    /// `"lockfree"` (the default) or `"locked"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub form: Option<String>,
    /// The algorithm's options; each must apply to the algorithm.
    #[serde(default, skip_serializing_if = "OptionsConfig::is_empty")]
    pub options: OptionsConfig,
    /// Passive health and slow start (default: nginx's).
    #[serde(default)]
    pub health: HealthConfig,
    /// The backends, in order.
    pub backends: Vec<BackendConfig<T>>,
}

/// Options of the algorithms that have them; unset ones keep their
/// defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptionsConfig {
    /// Candidates a pick draws (`random two least_conn`, `peak_ewma`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choices: Option<u8>,
    /// A seed for reproducible draws (`random`, `random two least_conn`, `probing`,
    /// `peak_ewma`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// The peak-EWMA decay time in milliseconds (`peak_ewma`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decay_ms: Option<u64>,
    /// The estimate of a backend with no sample, in milliseconds
    /// (`peak_ewma`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_rtt_ms: Option<u64>,
    /// Probes asked for after each pick (`probing`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes: Option<u8>,
    /// Answers the probe pool keeps, 1 to 16 (`probing`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_pool: Option<u8>,
    /// Picks one probe answer may steer (`probing`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_uses: Option<u8>,
    /// How long a probe answer stays in the pool, in milliseconds
    /// (`probing`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_max_age_ms: Option<u64>,
    /// The percentile of requests in flight above which a probe answer is
    /// hot (`probing`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hot_percentile: Option<u8>,
    /// A bounded-load factor in percent (the hashes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bounded_load: Option<u32>,
    /// The hash table's log2 size (`consistent_hash`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_bits: Option<u8>,
    /// Hash IPv4 clients by /24 (`consistent_hash`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4_prefix_24: Option<bool>,
}

impl OptionsConfig {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// A health policy as configured (see [`HealthPolicy`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Failures within `fail_timeout` that eject a backend (0: never).
    pub max_fails: u32,
    /// The failure window and the ejection's cooldown, in milliseconds.
    pub fail_timeout_ms: u64,
    /// How long a backend ramps up to its weight, in milliseconds (0: off).
    pub slow_start_ms: u64,
    /// `"panic"` (pick among the ejected as if healthy) or `"fail"`.
    pub when_all_ejected: String,
}

impl Default for HealthConfig {
    fn default() -> Self {
        let policy = HealthPolicy::default();
        Self {
            max_fails: policy.get_max_fails(),
            fail_timeout_ms: millis(policy.get_fail_timeout()),
            slow_start_ms: millis(policy.get_slow_start()),
            when_all_ejected: "panic".to_owned(),
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// One backend as configured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig<T> {
    /// The backend itself (its address or name): its identity.
    pub server: T,
    /// Its weight (default 1).
    #[serde(default = "one")]
    pub weight: u32,
    /// At most this many active guards (default 0: no limit).
    #[serde(default)]
    pub max_conns: u32,
    /// A backup (default: a primary).
    #[serde(default)]
    pub backup: bool,
    /// `"up"` (the default), `"down"` or `"draining"`.
    #[serde(default = "up")]
    pub state: String,
}

fn one() -> u32 {
    1
}

fn up() -> String {
    "up".to_owned()
}

impl<T> BackendConfig<T> {
    /// A primary of weight 1, up, without a limit.
    pub fn new(server: T) -> Self {
        Self {
            server,
            weight: 1,
            max_conns: 0,
            backup: false,
            state: up(),
        }
    }
}

/// A configuration that cannot be applied: the field, its value and why.
/// Nothing was built or changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Where, as a path: `algorithm`, `options.choices`,
    /// `backends[2].weight`, ...
    pub field: String,
    /// The value found there.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ConfigError {
    fn new(field: impl Into<String>, value: impl fmt::Display, reason: impl fmt::Display) -> Self {
        Self {
            field: field.into(),
            value: value.to_string(),
            reason: reason.to_string(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} = {}: {}", self.field, self.value, self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// A configuration turned into what a pool is built from.
struct Parsed<T> {
    algorithm: Algorithm,
    form: Form,
    policy: HealthPolicy,
    backends: Vec<Backend<T>>,
}

impl<T: PoolBackend + Clone> PoolConfig<T> {
    /// Builds a pool as configured.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first field that is wrong.
    pub fn build(&self) -> Result<Pool<T>, ConfigError> {
        let parsed = self.parse()?;
        self.build_parsed(parsed, None)
    }

    /// Checks the whole configuration as [`build`](Self::build) would,
    /// without keeping what it builds.
    ///
    /// # Errors
    ///
    /// As [`build`](Self::build).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let parsed = self.parse()?;
        self.build_parsed(parsed, Some(ManualClock::new()))
            .map(drop)
    }

    fn build_parsed(
        &self,
        parsed: Parsed<T>,
        clock: Option<ManualClock>,
    ) -> Result<Pool<T>, ConfigError> {
        let mut builder = Pool::builder(parsed.algorithm)
            .form(parsed.form)
            .health(parsed.policy);
        if let Some(clock) = clock {
            builder = builder.clock(clock);
        }
        builder
            .build(parsed.backends)
            .map_err(|error| self.blame(&error))
    }

    fn parse(&self) -> Result<Parsed<T>, ConfigError> {
        let algorithm: Algorithm = self
            .algorithm
            .parse()
            .map_err(|error| ConfigError::new("algorithm", &self.algorithm, error))?;
        let form = self.form()?;
        let algorithm = self.options.apply(algorithm)?;
        let policy = self.health.policy()?;
        let backends = self.parse_backends()?;
        Ok(Parsed {
            algorithm,
            form,
            policy,
            backends,
        })
    }

    /// The form named, lock-free if none is.
    fn form(&self) -> Result<Form, ConfigError> {
        match &self.form {
            None => Ok(Form::default()),
            Some(form) => form
                .parse()
                .map_err(|error| ConfigError::new("form", form, error)),
        }
    }

    /// Every backend, each checked.
    fn parse_backends(&self) -> Result<Vec<Backend<T>>, ConfigError> {
        self.backends
            .iter()
            .enumerate()
            .map(|(index, backend)| backend.backend(index))
            .collect()
    }

    /// The field a construction error comes from.
    fn blame(&self, error: &BuildError) -> ConfigError {
        let weights = || {
            let total: u64 = self.backends.iter().map(|b| u64::from(b.weight)).sum();
            format!("total weight {total}")
        };
        match error {
            BuildError::NoBackends | BuildError::TooManyBackends { .. } => ConfigError::new(
                "backends",
                format!("{} backends", self.backends.len()),
                error,
            ),
            BuildError::ZeroWeight { index } => {
                ConfigError::new(format!("backends[{index}].weight"), 0, error)
            }
            BuildError::DuplicateBackend { second, .. } => ConfigError::new(
                format!("backends[{second}].server"),
                &self.backends[*second].server,
                error,
            ),
            BuildError::WeightOverflow | BuildError::RingTooLarge { .. } => {
                ConfigError::new("backends", weights(), error)
            }
            BuildError::Choices { choices, .. } => {
                ConfigError::new("options.choices", choices, error)
            }
            BuildError::Duration { option: "max_age" } => {
                let value = self.options.probe_max_age_ms.unwrap_or_default();
                ConfigError::new("options.probe_max_age_ms", value, error)
            }
            BuildError::Duration { .. } => {
                let value = self.options.decay_ms.unwrap_or_default();
                ConfigError::new("options.decay_ms", value, error)
            }
            BuildError::Range { option, value, .. } => {
                let field = match *option {
                    "pool" => "probe_pool",
                    "uses" => "probe_uses",
                    other => other,
                };
                ConfigError::new(format!("options.{field}"), value, error)
            }
            BuildError::BoundedLoad { percent } => {
                ConfigError::new("options.bounded_load", percent, error)
            }
            BuildError::TableBits { bits, .. } => {
                ConfigError::new("options.table_bits", bits, error)
            }
            BuildError::CustomAlgorithm { name } => ConfigError::new("algorithm", name, error),
        }
    }
}

impl<T: PoolBackend + Clone> Pool<T> {
    /// Applies `config` to this running pool as a diff by identity: backends
    /// added, removed, re-weighted, re-limited, re-flagged and re-ordered in
    /// one step (see [`Live::replace`](crate::Live::replace)), counts and
    /// health kept, and the health policy replaced. The whole
    /// configuration is checked first; on any error nothing changes.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first field that is wrong, or
    /// `algorithm` when the configuration names another algorithm, form or
    /// options than the pool runs (build a new pool for those).
    pub fn apply(&self, config: &PoolConfig<T>) -> Result<(), ConfigError> {
        if let Algorithm::Custom(custom) = self.algorithm() {
            return self.apply_custom(*custom, config);
        }
        config.validate()?;
        let parsed = config.parse()?;
        if parsed.algorithm != self.algorithm || parsed.form != self.form {
            return Err(ConfigError::new(
                "algorithm",
                format!("{} ({})", parsed.algorithm, parsed.form),
                format!(
                    "the pool runs {} ({}); a running pool keeps its algorithm, form and \
                     options: build a new pool to change them",
                    self.algorithm, self.form
                ),
            ));
        }
        self.set_health(parsed.policy);
        self.replace(parsed.backends)
            .map_err(|error| ConfigError::new("backends", "", error))
    }
}

impl<T: PoolBackend + Clone> Pool<T> {
    /// [`apply`](Self::apply) to a pool of an algorithm of the caller's:
    /// the configuration names it, takes its form, no options (its options
    /// are code), and its health and backends are applied as for any pool.
    fn apply_custom(
        &self,
        custom: CustomAlgorithm,
        config: &PoolConfig<T>,
    ) -> Result<(), ConfigError> {
        let named = config
            .algorithm
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        if named != custom.name() {
            return Err(ConfigError::new(
                "algorithm",
                &config.algorithm,
                format!(
                    "the pool runs {}, an algorithm of your own; a running pool keeps its \
                     algorithm: build a new pool to change it",
                    custom.name()
                ),
            ));
        }
        let form = config.form()?;
        if config.form.is_some() && form != self.form() {
            return Err(ConfigError::new(
                "form",
                form,
                format!(
                    "the pool runs {} in the form {}",
                    custom.name(),
                    self.form()
                ),
            ));
        }
        if config.options != OptionsConfig::default() {
            return Err(ConfigError::new(
                "options",
                "set",
                format!(
                    "{} is an algorithm of your own: its options are set in code",
                    custom.name()
                ),
            ));
        }
        let policy = config.health.policy()?;
        let backends = config.parse_backends()?;
        self.replace(backends).map_err(|error| match error {
            UpdateError::Build(error) => config.blame(&error),
            other => ConfigError::new("backends", "", other),
        })?;
        self.set_health(policy);
        Ok(())
    }
}

impl OptionsConfig {
    /// `algorithm` with these options; an option the algorithm has no use
    /// for is an error.
    fn apply(&self, algorithm: Algorithm) -> Result<Algorithm, ConfigError> {
        let random = matches!(
            algorithm,
            Algorithm::Random(_)
                | Algorithm::RandomLeastConn(_)
                | Algorithm::PeakEwma(_)
                | Algorithm::Probing(_)
        );
        let probing = matches!(algorithm, Algorithm::Probing(_));
        let choices = matches!(
            algorithm,
            Algorithm::RandomLeastConn(_) | Algorithm::PeakEwma(_)
        );
        let ewma = matches!(algorithm, Algorithm::PeakEwma(_));
        let table = matches!(algorithm, Algorithm::ConsistentHash(_));
        let keyed = algorithm.keyed();
        only_for(&algorithm, "choices", self.choices, choices)?;
        only_for(&algorithm, "seed", self.seed, random)?;
        only_for(&algorithm, "decay_ms", self.decay_ms, ewma)?;
        only_for(&algorithm, "default_rtt_ms", self.default_rtt_ms, ewma)?;
        only_for(&algorithm, "probes", self.probes, probing)?;
        only_for(&algorithm, "probe_pool", self.probe_pool, probing)?;
        only_for(&algorithm, "probe_uses", self.probe_uses, probing)?;
        only_for(
            &algorithm,
            "probe_max_age_ms",
            self.probe_max_age_ms,
            probing,
        )?;
        only_for(&algorithm, "hot_percentile", self.hot_percentile, probing)?;
        only_for(&algorithm, "bounded_load", self.bounded_load, keyed)?;
        only_for(&algorithm, "table_bits", self.table_bits, table)?;
        only_for(&algorithm, "ipv4_prefix_24", self.ipv4_prefix_24, table)?;
        Ok(match algorithm {
            Algorithm::Random(mut options) => {
                if let Some(seed) = self.seed {
                    options = options.seed(seed);
                }
                Algorithm::Random(options)
            }
            Algorithm::RandomLeastConn(mut options) => {
                if let Some(seed) = self.seed {
                    options = options.seed(seed);
                }
                if let Some(choices) = self.choices {
                    options = options.choices(choices);
                }
                Algorithm::RandomLeastConn(options)
            }
            Algorithm::PeakEwma(mut options) => {
                if let Some(seed) = self.seed {
                    options = options.seed(seed);
                }
                if let Some(choices) = self.choices {
                    options = options.choices(choices);
                }
                if let Some(ms) = self.decay_ms {
                    options = options.decay(Duration::from_millis(ms));
                }
                if let Some(ms) = self.default_rtt_ms {
                    options = options.default_rtt(Duration::from_millis(ms));
                }
                Algorithm::PeakEwma(options)
            }
            Algorithm::Probing(mut options) => {
                if let Some(seed) = self.seed {
                    options = options.seed(seed);
                }
                if let Some(probes) = self.probes {
                    options = options.probes(probes);
                }
                if let Some(pool) = self.probe_pool {
                    options = options.pool(pool);
                }
                if let Some(uses) = self.probe_uses {
                    options = options.uses(uses);
                }
                if let Some(ms) = self.probe_max_age_ms {
                    options = options.max_age(Duration::from_millis(ms));
                }
                if let Some(percent) = self.hot_percentile {
                    options = options.hot_percentile(percent);
                }
                Algorithm::Probing(options)
            }
            Algorithm::IpHash(options) => Algorithm::IpHash(match self.bounded_load {
                Some(percent) => options.bounded_load(percent),
                None => options,
            }),
            Algorithm::Hash(options) => Algorithm::Hash(match self.bounded_load {
                Some(percent) => options.bounded_load(percent),
                None => options,
            }),
            Algorithm::ConsistentHash(mut options) => {
                if let Some(percent) = self.bounded_load {
                    options = options.bounded_load(percent);
                }
                if let Some(bits) = self.table_bits {
                    options = options.table_bits(bits);
                }
                if let Some(on) = self.ipv4_prefix_24 {
                    options = options.ipv4_prefix_24(on);
                }
                Algorithm::ConsistentHash(options)
            }
            other => other,
        })
    }
}

/// An error if option `field` is set for an algorithm without a `use` for
/// it.
fn only_for<V: fmt::Display>(
    algorithm: &Algorithm,
    field: &str,
    value: Option<V>,
    used: bool,
) -> Result<(), ConfigError> {
    match value {
        Some(value) if !used => Err(ConfigError::new(
            format!("options.{field}"),
            value,
            format!("does not apply to {algorithm}"),
        )),
        _ => Ok(()),
    }
}

impl HealthConfig {
    fn policy(&self) -> Result<HealthPolicy, ConfigError> {
        let when = match self.when_all_ejected.as_str() {
            "panic" => WhenAllEjected::Panic,
            "fail" => WhenAllEjected::Fail,
            other => {
                return Err(ConfigError::new(
                    "health.when_all_ejected",
                    other,
                    "expected panic or fail",
                ));
            }
        };
        Ok(HealthPolicy::default()
            .max_fails(self.max_fails)
            .fail_timeout(Duration::from_millis(self.fail_timeout_ms))
            .slow_start(Duration::from_millis(self.slow_start_ms))
            .when_all_ejected(when))
    }
}

impl<T: Clone> BackendConfig<T> {
    fn backend(&self, index: usize) -> Result<Backend<T>, ConfigError> {
        let state = match self.state.as_str() {
            "up" => AdminState::Up,
            "down" => AdminState::Down,
            "draining" => AdminState::Draining,
            other => {
                return Err(ConfigError::new(
                    format!("backends[{index}].state"),
                    other,
                    "expected up, down or draining",
                ));
            }
        };
        Ok(Backend::new(self.server.clone())
            .weight(self.weight)
            .max_conns(self.max_conns)
            .backup(self.backup)
            .state(state))
    }
}

// Options types compare by value; the pool keeps what it was built with.
const _: fn() = || {
    fn comparable<T: PartialEq>() {}
    comparable::<RandomOptions>();
    comparable::<ChoiceOptions>();
    comparable::<PeakEwmaOptions>();
    comparable::<HashOptions>();
    comparable::<NginxHashOptions>();
    comparable::<NginxIpHashOptions>();
};
