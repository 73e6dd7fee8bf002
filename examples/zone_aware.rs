//! An algorithm of your own inside the crate's live sets and pools: prefer
//! the backends of the caller's zone, the least loaded of them; when none
//! of the zone can take a pick (down, draining, ejected, full), the least
//! loaded elsewhere.
//!
//! It is written once against the public API: `Build` (its state over a
//! backend set, rebuilt on every change of the set) and `Choose` (its step).
//! Everything else comes with it: updates by identity, guards, passive
//! health, `max_conns`, slow start, backups, retries, waiting and metrics.
//!
//! `cargo run --example zone_aware`

use std::error::Error;
use std::fmt;

use loadbalance::{
    AdminState, Backend, Backends, Balancer, Build, BuildError, Candidates, Choose, Context, Live,
    LockFree, PickError, Pool, Set, Static,
};

/// A backend and the zone it runs in.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Server {
    addr: &'static str,
    zone: &'static str,
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.addr, self.zone)
    }
}

/// The state: for each backend, in order, whether it is in the caller's
/// zone. Rebuilt when the set changes, so it never sees a stale list.
#[derive(Debug)]
struct ZoneAware {
    local: Box<[bool]>,
}

impl Build<Server> for ZoneAware {
    /// The caller's zone.
    type Options = &'static str;

    fn build(set: &Set<'_, Server>, zone: &&'static str) -> Result<Self, BuildError> {
        Ok(Self {
            local: set.values().map(|server| server.zone == *zone).collect(),
        })
    }
}

impl ZoneAware {
    /// The least loaded of the backends `allowed`, those of the zone first;
    /// ties to the lowest index.
    fn least(
        &self,
        active: impl Fn(usize) -> usize,
        mut allowed: impl FnMut(usize) -> Result<bool, PickError>,
    ) -> Result<Option<usize>, PickError> {
        let mut best: Option<(bool, usize, usize)> = None;
        for (index, &local) in self.local.iter().enumerate() {
            if !allowed(index)? {
                continue;
            }
            let rank = (!local, active(index), index);
            if best.is_none_or(|best| rank < best) {
                best = Some(rank);
            }
        }
        Ok(best.map(|(_, _, index)| index))
    }
}

/// Shared by every picking thread: it reads its state and the counts,
/// writes nothing, so it runs lock-free.
impl Choose for &ZoneAware {
    /// Every backend can take the pick: the least loaded of the zone.
    fn plain<T>(
        &mut self,
        _: &Context<'_>,
        backends: &Backends<T>,
    ) -> Result<Option<usize>, PickError> {
        self.least(|index| backends.active(index), |_| Ok(true))
    }

    /// Some backend is out: the same rule over those that may take it.
    fn choose<T>(
        &mut self,
        _: &Context<'_>,
        candidates: &mut Candidates<'_, '_, T>,
    ) -> Result<Option<usize>, PickError> {
        let backends = candidates.backends();
        self.least(
            |index| backends.active(index),
            |index| candidates.eligible(index),
        )
    }
}

/// The balancer type: the state in its lock-free form.
type ZoneBalancer = Static<Server, LockFree<ZoneAware>>;

fn servers() -> Vec<Backend<Server>> {
    [
        ("10.0.0.1:8080", "eu-west"),
        ("10.0.0.2:8080", "eu-west"),
        ("10.1.0.1:8080", "us-east"),
        ("10.1.0.2:8080", "us-east"),
    ]
    .into_iter()
    .map(|(addr, zone)| Backend::new(Server { addr, zone }))
    .collect()
}

fn main() -> Result<(), Box<dyn Error>> {
    // A live set in zone eu-west: guards held, so picks spread over the
    // zone by load and never leave it while it can serve.
    let live = Live::<ZoneBalancer>::builder()
        .options("eu-west")
        .build(servers())?;
    let held: Vec<_> = (0..4)
        .map(|_| live.pick(&Context::new()))
        .collect::<Result<_, _>>()?;
    println!("four requests from eu-west, held:");
    for guard in &held {
        println!("  {}", **guard);
    }
    assert!(held.iter().all(|guard| guard.zone == "eu-west"));
    drop(held);

    // The zone goes away: picks fail over to us-east, then come back.
    let eu = |addr| Server {
        addr,
        zone: "eu-west",
    };
    for addr in ["10.0.0.1:8080", "10.0.0.2:8080"] {
        live.set_state(&eu(addr), AdminState::Down)?;
    }
    let failover = live.pick(&Context::new())?;
    println!("eu-west down: {}", *failover);
    assert_eq!(failover.zone, "us-east");
    drop(failover);
    live.set_state(&eu("10.0.0.2:8080"), AdminState::Up)?;
    println!("10.0.0.2 back: {}", *live.pick(&Context::new())?);

    // The same algorithm in a pool, with nginx's passive health: a failing
    // backend of the zone is ejected and its traffic stays in the zone.
    let pool = Pool::custom::<LockFree<ZoneAware>>("zone_aware", "us-east").build(servers())?;
    let first = pool.pick(&Context::new())?;
    println!("pool in us-east: {} ({})", *first, pool.algorithm());
    assert_eq!(first.zone, "us-east");
    let failed = first.addr;
    first.failure();
    for _ in 0..3 {
        let next = pool.pick(&Context::new())?;
        assert_eq!(next.zone, "us-east");
        assert_ne!(next.addr, failed);
        next.success();
    }
    println!("after a failure of {failed}: its zone neighbour takes the picks");
    Ok(())
}
