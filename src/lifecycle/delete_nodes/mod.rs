//! The `delete_nodes` kind: its steps (`steps.rs`).

// The shared parts the steps reach as `super::…`.
use super::{common, leftovers};

mod steps;

pub use steps::register;
