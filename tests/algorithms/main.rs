//! The algorithms, every one in both forms: nginx's sequences, the
//! lock-free forms against their sequential models, the hashes against
//! nginx's maps, distributions, bounded loads, stress, allocation, empty
//! sets, and an algorithm of a user's own through the same matrices.

#[path = "../common/mod.rs"]
mod common;
#[path = "../common/counting_alloc.rs"]
mod counting_alloc;
#[path = "../common/seeded_script.rs"]
mod seeded_script;
#[path = "../common/user_algorithm.rs"]
mod user_algorithm;

mod bounded_load;
mod choices;
mod empty_backends;
mod ip_hash;
mod model;
mod nginx_hash;
mod no_alloc;
mod probing;
mod random;
mod sequences;
mod smooth_forms;
mod stress;
