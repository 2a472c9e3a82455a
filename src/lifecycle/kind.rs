//! What a job kind is, and the one list of them.
//!
//! A kind is a module (`lifecycle/<kind>/`, or `smoke.rs`) with a unit type implementing
//! [`JobKind`]: its name, its workflow (`workflows/<kind>.yaml`, compiled in), its steps, its
//! own request fields and its admission (prepare, then the checks against the cloud). [`KINDS`]
//! lists them; the server's steps and workflows, the intake's admission, the unknown-field
//! errors and the sweeps all read it, so adding a kind is adding a module and one line there.
//!
//! Invariant: no code outside a kind's module tells kinds apart by their name; what differs
//! between kinds is asked of the kind.

use serde_json::Value;

use super::IntakeCell;
use super::admission::{Lifecycle, move_to_params};
use super::params::OwnFields;
use crate::cloud::{Clients, ClusterRef};
use crate::engine::admission::AdmitFuture;
use crate::engine::request::{FieldError, JobRequest};
use crate::engine::step::Registry;

/// How a kind's steps are registered.
pub enum Steps {
    /// Steps that touch no cloud: registered by every server.
    Local(fn(&mut Registry)),
    /// Steps that use the cloud's clients (and, for a kind that creates jobs, the intake):
    /// registered, with the kind's workflow, only by a server that has a cloud.
    Cloud(fn(&mut Registry, Clients, IntakeCell)),
}

/// One job kind. The parts without a default are what every kind must say; admission beyond
/// moving the kind's fields into `params` is optional.
pub trait JobKind: Sync {
    /// The kind's name, as requests, workflow files and stored jobs spell it.
    fn name(&self) -> &'static str;

    /// The kind's workflow, `include_str!("…/workflows/<name>.yaml")`.
    fn workflow(&self) -> &'static str;

    /// The kind's steps, by the names its workflow uses.
    fn steps(&self) -> Steps;

    /// The kind's own request fields as a type (`OwnFields::of::<XParams>()`): their names,
    /// their check, and their schema in the OpenAPI document.
    fn params(&self) -> OwnFields;

    /// The kind's own top-level request fields, which `prepare` moves into `params` (and
    /// which an unknown-field error lists beside the generic ones).
    fn fields(&self) -> &'static [&'static str] {
        self.params().fields
    }

    /// What the kind fills in that cannot fail (a sweep's one node task): applied by
    /// `prepare`, and alone when `prepare` refuses a body, so the generic checks do not
    /// report what the kind supplies. By default: nothing.
    fn reshape(&self, body: Value) -> Value {
        body
    }

    /// Reshapes a request body of this kind before the generic checks: by default `reshape`,
    /// then the kind's fields moved into `params` and parsed as its params type.
    fn prepare(&self, body: Value) -> Result<Value, Vec<FieldError>> {
        move_to_params(self.reshape(body), self.params())
    }

    /// Checks a parsed request against the cluster and its cloud (preflight, name
    /// resolution); may resolve nodes and fill in params. By default: nothing to check.
    fn admit<'a>(&'a self, _cx: &'a Lifecycle, _req: &'a mut JobRequest) -> AdmitFuture<'a> {
        Box::pin(async { Ok(()) })
    }

    /// Checks a node's spec as an amend would leave it, beside the job's other nodes'
    /// specs. By default: nothing to check.
    fn check_amend<'a>(
        &'a self,
        _cx: &'a Lifecycle,
        _cluster: ClusterRef,
        _amended: &'a Value,
        _others: &'a [Value],
    ) -> AdmitFuture<'a> {
        Box::pin(async { Ok(()) })
    }

    /// Whether the kind's nodes are servers Capstan makes: the orphan sweep counts what
    /// such jobs made in a cluster as Capstan's, even once their Machines are gone.
    fn makes_servers(&self) -> bool {
        false
    }
}

/// Every job kind Capstan ships.
pub static KINDS: &[&dyn JobKind] = &[
    &super::smoke::Smoke,
    &super::scale_out::ScaleOut,
    &super::delete_nodes::DeleteNodes,
    &super::repair::Repair,
    &super::sweep::RepairSweep,
    &super::sweep::OrphanSweep,
];

/// The kind of that name, if Capstan has one.
pub fn find(name: &str) -> Option<&'static dyn JobKind> {
    KINDS.iter().copied().find(|k| k.name() == name)
}

/// The workflow file a kind's YAML is reported as (by name, in workflow errors).
pub fn workflow_file(kind: &dyn JobKind) -> String {
    format!("workflows/{}.yaml", kind.name())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_is_listed_once_and_its_workflow_is_its_own() {
        let mut names: Vec<&str> = KINDS.iter().map(|k| k.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), KINDS.len(), "a kind listed twice: {names:?}");
        for k in KINDS {
            let declared = k
                .workflow()
                .lines()
                .find_map(|l| l.strip_prefix("kind:"))
                .map(str::trim);
            assert_eq!(declared, Some(k.name()), "{}", workflow_file(*k));
        }
    }

    /// The OpenAPI document's job request is a `oneOf` on `kind` with a branch per kind, each
    /// with the generic fields and exactly the kind's own (its params type's).
    #[test]
    fn the_openapi_document_describes_each_kinds_fields() {
        let doc = &*crate::api::openapi::DOCUMENT;
        let schemas = &doc["components"]["schemas"];
        let request = &schemas["JobRequest"];
        assert_eq!(request["discriminator"]["propertyName"], "kind");
        let branches: Vec<&str> = request["oneOf"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                b["$ref"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("#/components/schemas/")
            })
            .collect();
        assert_eq!(branches.len(), KINDS.len());
        for (k, branch) in KINDS.iter().zip(branches) {
            let s = &schemas[branch];
            assert_eq!(
                s["properties"]["kind"]["enum"],
                serde_json::json!([k.name()]),
                "{branch}"
            );
            assert_eq!(s["additionalProperties"], false, "{branch}");
            let mut props: Vec<&str> = s["properties"]
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            props.sort();
            let mut want: Vec<&str> = crate::engine::request::FIELDS
                .iter()
                .chain(k.fields())
                .copied()
                .collect();
            want.sort();
            assert_eq!(
                props,
                want,
                "{branch}: the generic fields and {}'s own",
                k.name()
            );
        }
    }
}
