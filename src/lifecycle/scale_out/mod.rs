//! The `scale_out` kind: workers specified one by one, created and watched until they join
//! (`steps.rs`, `workflows/scale_out.yaml`); its request shape and amends
//! (`admission.rs`) and its checks against the cloud before anything is made
//! (`preflight.rs`).

// The shared parts the steps reach as `super::…`.
use super::{classify, common, leftovers, quota, spec};

mod admission;
mod preflight;
mod progress;
mod steps;

use serde_json::Value;

use super::admission::Lifecycle;
use super::kind::{JobKind, Steps};
use super::params::OwnFields;
use crate::cloud::ClusterRef;
use crate::engine::admission::AdmitFuture;
use crate::engine::request::{FieldError, JobRequest};
pub(crate) use admission::check_amend;

pub(super) const NAME: &str = "scale_out";

pub struct ScaleOut;

impl JobKind for ScaleOut {
    fn name(&self) -> &'static str {
        NAME
    }
    fn workflow(&self) -> &'static str {
        include_str!("../../../workflows/scale_out.yaml")
    }
    fn steps(&self) -> Steps {
        Steps::Cloud(|r, clients, _| steps::register(r, clients))
    }
    fn params(&self) -> OwnFields {
        OwnFields::of::<admission::ScaleOutParams>()
    }
    fn prepare(&self, body: Value) -> Result<Value, Vec<FieldError>> {
        admission::prepare(body)
    }
    fn admit<'a>(&'a self, cx: &'a Lifecycle, req: &'a mut JobRequest) -> AdmitFuture<'a> {
        Box::pin(preflight::preflight(&cx.clients, req))
    }
    fn check_amend<'a>(
        &'a self,
        cx: &'a Lifecycle,
        cluster: ClusterRef,
        amended: &'a Value,
        others: &'a [Value],
    ) -> AdmitFuture<'a> {
        Box::pin(check_amend(cx, cluster, amended, others))
    }
    fn makes_servers(&self) -> bool {
        true
    }
}
