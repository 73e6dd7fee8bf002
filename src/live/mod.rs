//! Live balancers: backend sets that change while other threads pick.
//!
//! A live balancer publishes an immutable snapshot (backends plus the
//! algorithm's state) with `arc-swap`; a pick loads the current snapshot
//! and never waits for an update. Updates are serialised among themselves
//! by a mutex no pick takes. Backends are known by identity (their value's
//! `Eq`), and each snapshot shares the entries of the one before, so active
//! counts, health and statistics carry across updates.
//!
//! A pick allocates nothing, with one exception that is arc-swap's: the
//! first load by a thread that holds no arc-swap slot yet allocates one
//! (once; slots of exited threads are reused).
//!
//! - `set`: [`Live`], the set and every update of it;
//! - `builder`: [`LiveBuilder`], the policy, clock and options it is built
//!   with;
//! - `backend`: [`Backend`] and [`AdminState`], a backend as an update
//!   gives it;
//! - `members`: the member list updates change, and the snapshots picks
//!   load;
//! - `retire`: how an update that excludes a backend waits for the picks
//!   still in older snapshots;
//! - `assemble`: [`Assemble`], how a new snapshot's balancer is built.

mod assemble;
mod backend;
mod builder;
mod members;
mod retire;
mod set;

#[cfg(all(test, loom))]
mod loom_retire;

pub use assemble::Assemble;
pub use backend::{AdminState, Backend};
pub use builder::LiveBuilder;
pub use set::Live;
