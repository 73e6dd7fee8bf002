//! The pick: what a request offers ([`Context`], [`Tried`]), how an
//! algorithm chooses ([`Choose`], built by [`Build`] over a [`Set`]), the
//! one driver that runs every choice and claims what it chose, the two
//! forms a state runs in ([`LockFree`], [`Locked`]), and the balancer that
//! puts a table and a form together ([`Static`], a [`Balancer`]).
//!
//! A pick reads top to bottom: [`Balancer::pick`] on a [`Static`] hands
//! its table to the form's `pick`, which runs the driver (`driver.rs`)
//! with the state: the plain path asks [`Choose::plain`]; otherwise
//! [`Candidates`] (`candidates.rs`) says which backends may take the pick,
//! [`Choose::choose`] answers one, and the driver claims it and makes the
//! guard (the table's).

mod balancer;
mod build;
mod candidates;
mod choose;
mod context;
mod driver;
mod forms;
mod static_balancer;
mod tried;

pub use balancer::Balancer;
pub use build::{Build, NewBackends, Set};
pub use candidates::Candidates;
pub(crate) use candidates::Selection;
pub(crate) use candidates::capacity;
pub use choose::Choose;
pub use context::Context;
pub(crate) use context::normalise;
pub use forms::{Form, LockFree, Locked, ParseFormError, Sharing};
pub use static_balancer::{Rotation, Static};
pub use tried::Tried;
