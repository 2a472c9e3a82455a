//! The `scale_out` kind: its steps (`steps.rs`).

// The shared parts the steps reach as `super::…`.
use super::{classify, common, leftovers, quota, spec};

mod steps;

pub use steps::register;
