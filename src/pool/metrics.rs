//! Pools' per-backend figures in the Prometheus text exposition format
//! (version 0.0.4), written to the format's rules with no dependency.
//!
//! Names follow Prometheus conventions: the `loadbalance_backend_` prefix,
//! base units (seconds), `_total` on counters; every sample is labelled
//! with its `pool` and `backend` (the backend's `Display`). A state is an
//! enum gauge: one sample a state, 1 for the backend's own.

use std::fmt::{self, Write};

use super::{Pool, PoolBackend};
use crate::table::{BackendState, BackendStats};

/// One metric family: name, type and help.
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
}

const FAMILIES: [Family; 10] = [
    Family {
        name: "loadbalance_backend_active",
        kind: "gauge",
        help: "Guards alive on the backend: requests in flight.",
    },
    Family {
        name: "loadbalance_backend_picks_total",
        kind: "counter",
        help: "Picks of the backend since it joined the pool.",
    },
    Family {
        name: "loadbalance_backend_failures_total",
        kind: "counter",
        help: "Failures reported on the backend since it joined the pool.",
    },
    Family {
        name: "loadbalance_backend_overflows_total",
        kind: "counter",
        help: "Picks hashed to the backend and sent elsewhere because it was over its bounded-load capacity.",
    },
    Family {
        name: "loadbalance_backend_weight",
        kind: "gauge",
        help: "The backend's configured weight.",
    },
    Family {
        name: "loadbalance_backend_effective_weight",
        kind: "gauge",
        help: "The weight picks use now: 0 while down, draining or ejected, lowered by failures, scaled by slow start.",
    },
    Family {
        name: "loadbalance_backend_max_conns",
        kind: "gauge",
        help: "The backend's connection limit (0: none).",
    },
    Family {
        name: "loadbalance_backend_backup",
        kind: "gauge",
        help: "1 for a backup backend, 0 for a primary.",
    },
    Family {
        name: "loadbalance_backend_state",
        kind: "gauge",
        help: "1 for the state the backend is in, 0 for the others.",
    },
    Family {
        name: "loadbalance_backend_latency_seconds",
        kind: "gauge",
        help: "Mean reported latency, exponentially weighted (1/8 for the newest).",
    },
];

const STATES: [(BackendState, &str); 6] = [
    (BackendState::Up, "up"),
    (BackendState::Down, "down"),
    (BackendState::Draining, "draining"),
    (BackendState::Ejected, "ejected"),
    (BackendState::Trial, "trial"),
    (BackendState::SlowStart, "slow_start"),
];

/// The figures of one or more pools, rendered as one exposition: each
/// family's help and type once, then its samples from every pool.
///
/// # Examples
///
/// ```
/// use loadbalance::{Algorithm, Backend, Context, Pool, PrometheusText};
///
/// let pool = Pool::builder(Algorithm::LeastConn).build([Backend::new("10.0.0.1:80")])?;
/// let _held = pool.pick(&Context::new())?;
/// let mut metrics = PrometheusText::new();
/// metrics.pool("api", &pool);
/// let text = metrics.render();
/// assert!(text.contains(r#"loadbalance_backend_active{pool="api",backend="10.0.0.1:80"} 1"#));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Default)]
pub struct PrometheusText {
    /// Samples of each family, in `FAMILIES` order: `name{labels} value`.
    samples: [String; FAMILIES.len()],
}

impl PrometheusText {
    /// An empty exposition.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds every backend of `pool`, labelled `pool="name"`.
    pub fn pool<T: PoolBackend + Clone>(&mut self, name: &str, pool: &Pool<T>) -> &mut Self {
        for stats in pool.stats() {
            self.backend(name, &stats);
        }
        self
    }

    fn backend<T: fmt::Display>(&mut self, pool: &str, stats: &BackendStats<T>) {
        let labels = format!(
            "pool=\"{}\",backend=\"{}\"",
            Escaped(pool),
            Escaped(&stats.backend.to_string())
        );
        let values: [Option<f64>; 8] = [
            Some(stats.active as f64),
            Some(stats.picks as f64),
            Some(stats.failures as f64),
            Some(stats.overflows as f64),
            Some(f64::from(stats.weight)),
            Some(f64::from(stats.effective_weight)),
            Some(f64::from(stats.max_conns.unwrap_or(0))),
            Some(f64::from(u8::from(stats.backup))),
        ];
        for (index, value) in values.into_iter().enumerate() {
            if let Some(value) = value {
                self.sample(index, &labels, value);
            }
        }
        for (state, label) in STATES {
            let labels = format!("{labels},state=\"{label}\"");
            self.sample(8, &labels, f64::from(u8::from(stats.state == state)));
        }
        if let Some(latency) = stats.latency {
            self.sample(9, &labels, latency.as_secs_f64());
        }
    }

    fn sample(&mut self, family: usize, labels: &str, value: f64) {
        // Writing to a String cannot fail.
        let _ = writeln!(
            self.samples[family],
            "{}{{{labels}}} {value}",
            FAMILIES[family].name
        );
    }

    /// The exposition text (`Content-Type: text/plain; version=0.0.4`).
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (family, samples) in FAMILIES.iter().zip(&self.samples) {
            if samples.is_empty() {
                continue;
            }
            let _ = writeln!(out, "# HELP {} {}", family.name, family.help);
            let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind);
            out.push_str(samples);
        }
        out
    }
}

/// A label value escaped as the format asks: backslash, double quote and
/// line feed.
struct Escaped<'a>(&'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                '"' => f.write_str("\\\"")?,
                '\n' => f.write_str("\\n")?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Escaped;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(Escaped("a\\b\"c\nd").to_string(), "a\\\\b\\\"c\\nd");
    }
}
