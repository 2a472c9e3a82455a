//! The `repair` kind: its steps and health assessment (`steps.rs`).

// The shared parts the steps reach as `super::…`.
use super::{common, spec};

mod steps;

pub use steps::{Thresholds, assess, read_back, register, release_params};
