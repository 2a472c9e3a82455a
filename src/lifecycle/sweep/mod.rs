//! The `repair_sweep` and `orphan_sweep` kinds: their steps (`steps.rs`).

// The shared parts the steps reach as `super::…`.
use super::{IntakeCell, common, repair};

mod steps;

pub use steps::register;
