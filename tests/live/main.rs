//! Live sets: updates by identity while threads pick, the contracts each
//! update keeps under every race, a model of the set, and stress.

#[path = "../common/live_forms.rs"]
#[macro_use]
mod live_forms;
#[path = "../common/user_algorithm.rs"]
mod user_algorithm;

mod live;
mod live_contracts;
mod live_model;
mod live_stress;
