//! The `repair` kind: an unhealthy node deleted and recreated with its spec (`steps.rs`, with
//! the health assessment and the spec's read-back; `workflows/repair.yaml`, which includes
//! delete_nodes' and scale_out's states); `max_unhealthy` and each node's spec checked before
//! the job is stored (`admission.rs`).

// The shared parts the steps reach as `super::…`.
use super::{common, spec};

mod admission;
mod steps;

use serde_json::Value;

use super::admission::Lifecycle;
use super::kind::{JobKind, Steps};
use super::params::OwnFields;
use crate::cloud::ClusterRef;
use crate::engine::admission::AdmitFuture;
use crate::engine::request::JobRequest;
pub use admission::HealthParams;
pub use steps::{Thresholds, assess, read_back, release_params};

pub(super) const NAME: &str = "repair";

pub struct Repair;

impl JobKind for Repair {
    fn name(&self) -> &'static str {
        NAME
    }
    fn workflow(&self) -> &'static str {
        include_str!("../../../workflows/repair.yaml")
    }
    fn steps(&self) -> Steps {
        Steps::Cloud(|r, clients, _| steps::register(r, clients))
    }
    fn params(&self) -> OwnFields {
        OwnFields::of::<admission::RepairParams>()
    }
    fn admit<'a>(&'a self, cx: &'a Lifecycle, req: &'a mut JobRequest) -> AdmitFuture<'a> {
        Box::pin(admission::admit(&cx.clients, &cx.store, req))
    }
    /// A repaired node is recreated from a scale_out node spec: its amends are checked as
    /// scale_out's are.
    fn check_amend<'a>(
        &'a self,
        cx: &'a Lifecycle,
        cluster: ClusterRef,
        amended: &'a Value,
        others: &'a [Value],
    ) -> AdmitFuture<'a> {
        Box::pin(super::scale_out::check_amend(cx, cluster, amended, others))
    }
    fn makes_servers(&self) -> bool {
        true
    }
}
