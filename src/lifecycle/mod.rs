//! The job kinds' steps, registered by name for the workflows in `workflows/`.
//!
//! Invariant: steps reach the world only through the Kubernetes and OpenStack clients; they
//! never import the simulator, and never sleep (waiting is an outcome).

mod smoke;
// Pure building blocks the scale_out and repair steps use next; nothing calls them yet.
#[allow(dead_code)]
pub(crate) mod classify;
#[allow(dead_code)]
pub(crate) mod spec;

use crate::engine::step::Registry;

/// The workflow files shipped with the binary, as `(file name, YAML)`.
pub const WORKFLOWS: &[(&str, &str)] = &[(
    "workflows/smoke.yaml",
    include_str!("../../workflows/smoke.yaml"),
)];

/// Registers every built-in step.
pub fn register(registry: &mut Registry) {
    smoke::register(registry);
}

/// The built-in workflows as owned `(file, text)` pairs.
pub fn workflow_sources() -> Vec<(String, String)> {
    WORKFLOWS
        .iter()
        .map(|(f, t)| (f.to_string(), t.to_string()))
        .collect()
}
