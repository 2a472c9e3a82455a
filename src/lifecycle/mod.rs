//! The job kinds' steps, registered by name for the workflows in `workflows/`.
//!
//! Invariant: steps reach the world only through the Kubernetes and OpenStack clients; they
//! never import the simulator, and never sleep (waiting is an outcome).

pub mod admission;
pub(crate) mod classify;
mod common;
mod delete_nodes;
mod leftovers;
pub mod quota;
mod repair;
mod scale_out;
mod smoke;
pub(crate) mod spec;
mod sweep;
pub mod watch;

use crate::engine::step::Registry;

/// The workflow files shipped with the binary, as `(file name, YAML)`.
pub const WORKFLOWS: &[(&str, &str)] = &[
    (
        "workflows/smoke.yaml",
        include_str!("../../workflows/smoke.yaml"),
    ),
    (
        "workflows/scale_out.yaml",
        include_str!("../../workflows/scale_out.yaml"),
    ),
    (
        "workflows/delete_nodes.yaml",
        include_str!("../../workflows/delete_nodes.yaml"),
    ),
    (
        "workflows/repair.yaml",
        include_str!("../../workflows/repair.yaml"),
    ),
    (
        "workflows/repair_sweep.yaml",
        include_str!("../../workflows/repair_sweep.yaml"),
    ),
    (
        "workflows/orphan_sweep.yaml",
        include_str!("../../workflows/orphan_sweep.yaml"),
    ),
];

/// Registers the steps that touch no cloud.
pub fn register(registry: &mut Registry) {
    smoke::register(registry);
}

/// The intake (and through it the store), set once the server has built it: the sweeps
/// create jobs only through it.
pub type IntakeCell =
    std::sync::Arc<std::sync::OnceLock<std::sync::Arc<crate::engine::intake::Intake>>>;

/// Registers the cloud kinds' steps, which use the cloud's clients.
pub fn register_cloud(registry: &mut Registry, clients: crate::cloud::Clients, intake: IntakeCell) {
    scale_out::register(registry, clients.clone());
    delete_nodes::register(registry, clients.clone());
    repair::register(registry, clients.clone());
    sweep::register(registry, clients, intake);
}

/// The built-in workflows as owned `(file, text)` pairs; the cloud kinds only with a cloud.
pub fn workflow_sources(with_cloud: bool) -> Vec<(String, String)> {
    WORKFLOWS
        .iter()
        .filter(|(f, _)| with_cloud || *f == "workflows/smoke.yaml")
        .map(|(f, t)| (f.to_string(), t.to_string()))
        .collect()
}
