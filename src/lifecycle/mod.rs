//! The job kinds, a module each (`kind.rs` says what a kind is and lists them in `KINDS`),
//! and the parts they share: admission helpers, the failure classifier, quota, node specs,
//! the cloud helpers steps use, and the watches that wake waiting nodes.
//!
//! Invariant: steps reach the world only through the Kubernetes and OpenStack clients; they
//! never import the simulator, and never sleep (waiting is an outcome).

pub mod admission;
pub(crate) mod classify;
pub(crate) mod common;
mod delete_nodes;
pub mod kind;
mod leftovers;
pub mod params;
pub mod quota;
mod repair;
mod scale_out;
mod smoke;
pub(crate) mod spec;
mod sweep;
pub mod watch;

use crate::engine::step::Registry;
use kind::{KINDS, Steps};

/// Registers the steps that touch no cloud.
pub fn register(registry: &mut Registry) {
    for k in KINDS {
        if let Steps::Local(register) = k.steps() {
            register(registry);
        }
    }
}

/// The intake (and through it the store), set once the server has built it: the sweeps
/// create jobs only through it.
pub type IntakeCell =
    std::sync::Arc<std::sync::OnceLock<std::sync::Arc<crate::engine::intake::Intake>>>;

/// Registers the cloud kinds' steps, which use the cloud's clients.
pub fn register_cloud(registry: &mut Registry, clients: crate::cloud::Clients, intake: IntakeCell) {
    for k in KINDS {
        if let Steps::Cloud(register) = k.steps() {
            register(registry, clients.clone(), intake.clone());
        }
    }
}

/// The built-in workflows as owned `(file, text)` pairs; the cloud kinds only with a cloud.
pub fn workflow_sources(with_cloud: bool) -> Vec<(String, String)> {
    KINDS
        .iter()
        .filter(|k| with_cloud || matches!(k.steps(), Steps::Local(_)))
        .map(|k| (kind::workflow_file(*k), k.workflow().to_string()))
        .collect()
}
