//! One file an algorithm, each holding its lock-free and its sequential form.

mod bounded_load;
mod effective;
pub(crate) mod ip_hash;
pub(crate) mod least_conn;
pub(crate) mod nginx;
pub(crate) mod random;
pub(crate) mod round_robin;
mod slot_table;
pub(crate) mod weighted_round_robin;
mod windows;
