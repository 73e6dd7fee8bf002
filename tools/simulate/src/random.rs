//! A seeded generator of our own (SplitMix64: the same sequence from the
//! same seed on every platform and version) and the service-time
//! distributions drawn from it.

use std::time::Duration;

/// SplitMix64 (Steele, Lea and Flood, 2014): 64 bits of state, every seed
/// a full-period sequence.
#[derive(Clone, Debug)]
pub struct Random(u64);

impl Random {
    /// The sequence of `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1]: never 0, so its logarithm is finite.
    pub fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    /// Exponential with `mean`.
    pub fn exponential(&mut self, mean: f64) -> f64 {
        -mean * self.unit().ln()
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit(), self.unit());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// Uniform in `0..n` (`n` at least 1).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n.max(1))) >> 64) as u64
    }
}

/// How long a server takes over one request.
#[derive(Clone, Debug, PartialEq)]
pub enum Service {
    /// Always this long.
    Fixed(Duration),
    /// Exponential with this mean.
    Exponential(Duration),
    /// Uniform between the two.
    Uniform(Duration, Duration),
    /// Log-normal with this median and shape `sigma` (0.5: a p99 about
    /// 3.2 times the median).
    LogNormal {
        /// Its median.
        median: Duration,
        /// Its shape.
        sigma: f64,
    },
}

impl Service {
    /// One draw, in seconds.
    pub fn sample(&self, random: &mut Random) -> f64 {
        match self {
            Self::Fixed(time) => time.as_secs_f64(),
            Self::Exponential(mean) => random.exponential(mean.as_secs_f64()),
            Self::Uniform(from, to) => {
                let (from, to) = (from.as_secs_f64(), to.as_secs_f64());
                from + (to - from) * random.unit()
            }
            Self::LogNormal { median, sigma } => {
                median.as_secs_f64() * (sigma * random.normal()).exp()
            }
        }
    }

    /// Its mean, in seconds.
    pub fn mean(&self) -> f64 {
        match self {
            Self::Fixed(time) | Self::Exponential(time) => time.as_secs_f64(),
            Self::Uniform(from, to) => (from.as_secs_f64() + to.as_secs_f64()) / 2.0,
            Self::LogNormal { median, sigma } => median.as_secs_f64() * (sigma * sigma / 2.0).exp(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_one_sequence() {
        let (mut a, mut b) = (Random::new(7), Random::new(7));
        for _ in 0..1_000 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert_ne!(Random::new(7).next_u64(), Random::new(8).next_u64());
    }

    #[test]
    fn draws_have_their_means() {
        let mut random = Random::new(1);
        let n = 200_000;
        for service in [
            Service::Exponential(Duration::from_millis(10)),
            Service::LogNormal {
                median: Duration::from_millis(10),
                sigma: 0.5,
            },
        ] {
            let mean: f64 = (0..n).map(|_| service.sample(&mut random)).sum::<f64>() / n as f64;
            let expected = service.mean();
            assert!(
                (mean - expected).abs() < 0.01 * expected,
                "{service:?}: {mean} against {expected}"
            );
        }
        let below: Vec<u64> = (0..10_000).map(|_| random.below(3)).collect();
        assert!(below.iter().all(|&x| x < 3));
        assert!((0..3).all(|x| below.iter().filter(|&&y| y == x).count() > 3_000));
    }
}
