//! The `delete_nodes` kind: exactly the named nodes go (`steps.rs`,
//! `workflows/delete_nodes.yaml`); each name is resolved to a Machine of the cluster before
//! the job is stored (`admission.rs`).

// The shared parts the steps reach as `super::…`.
use super::{common, leftovers};

mod admission;
mod progress;
mod steps;

use super::admission::Lifecycle;
use super::kind::{JobKind, Steps};
use super::params::OwnFields;
use crate::engine::admission::AdmitFuture;
use crate::engine::request::JobRequest;

pub struct DeleteNodes;

impl JobKind for DeleteNodes {
    fn name(&self) -> &'static str {
        "delete_nodes"
    }
    fn workflow(&self) -> &'static str {
        include_str!("../../../workflows/delete_nodes.yaml")
    }
    fn steps(&self) -> Steps {
        Steps::Cloud(|r, clients, _| steps::register(r, clients))
    }
    fn params(&self) -> OwnFields {
        OwnFields::of::<admission::DeleteNodesParams>()
    }
    fn admit<'a>(&'a self, cx: &'a Lifecycle, req: &'a mut JobRequest) -> AdmitFuture<'a> {
        Box::pin(admission::resolve(&cx.clients, req))
    }
}
