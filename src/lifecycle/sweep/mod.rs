//! The scheduled sweeps, two kinds that share their steps' helpers (`steps.rs`): `repair_sweep`
//! (`workflows/repair_sweep.yaml`) and `orphan_sweep` (`workflows/orphan_sweep.yaml`). A
//! sweep's request names no nodes (`admission.rs` gives it its one task).

// The shared parts the steps reach as `super::…`.
use super::{IntakeCell, common, repair};

mod admission;
mod steps;

use serde_json::Value;

use super::admission::Lifecycle;
use super::kind::{JobKind, Steps};
use super::params::OwnFields;
use crate::engine::admission::AdmitFuture;
use crate::engine::request::JobRequest;

pub struct RepairSweep;

impl JobKind for RepairSweep {
    fn name(&self) -> &'static str {
        "repair_sweep"
    }
    fn workflow(&self) -> &'static str {
        include_str!("../../../workflows/repair_sweep.yaml")
    }
    fn steps(&self) -> Steps {
        Steps::Cloud(steps::register_repair_sweep)
    }
    fn params(&self) -> OwnFields {
        OwnFields::of::<repair::HealthParams>()
    }
    fn reshape(&self, body: Value) -> Value {
        admission::sweep_node(body)
    }
    fn admit<'a>(&'a self, cx: &'a Lifecycle, req: &'a mut JobRequest) -> AdmitFuture<'a> {
        Box::pin(admission::admit(&cx.clients, req))
    }
}

pub struct OrphanSweep;

impl JobKind for OrphanSweep {
    fn name(&self) -> &'static str {
        "orphan_sweep"
    }
    fn workflow(&self) -> &'static str {
        include_str!("../../../workflows/orphan_sweep.yaml")
    }
    fn steps(&self) -> Steps {
        Steps::Cloud(steps::register_orphan_sweep)
    }
    fn params(&self) -> OwnFields {
        OwnFields::of::<admission::OrphanSweepParams>()
    }
    fn reshape(&self, body: Value) -> Value {
        admission::sweep_node(body)
    }
    fn admit<'a>(&'a self, cx: &'a Lifecycle, req: &'a mut JobRequest) -> AdmitFuture<'a> {
        Box::pin(admission::admit(&cx.clients, req))
    }
}
