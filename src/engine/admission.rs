//! Kind-specific admission: what a job kind adds to the generic request checks. `prepare`
//! reshapes the body before the generic parse (kind-specific top-level fields, resolved node
//! specs); `admit` checks the request against the world before anything is stored.

use std::future::Future;
use std::pin::Pin;

use serde_json::Value;

use super::request::{FieldError, JobRequest};

/// Why a request is refused.
#[derive(Debug, Clone)]
pub enum Refusal {
    /// 422: the request is wrong; every problem named.
    Invalid(Vec<FieldError>),
    /// 409: the request is right but the world cannot take it now (e.g. `require_quota`).
    Conflict(Vec<FieldError>),
    /// 503: the cloud could not be asked.
    Unavailable(String),
}

pub type AdmitFuture<'a> = Pin<Box<dyn Future<Output = Result<(), Refusal>> + Send + 'a>>;

pub trait Admission: Send + Sync {
    /// Reshapes a body of this kind before the generic checks; errors name their fields.
    fn prepare(&self, kind: &str, body: Value) -> Result<Value, Vec<FieldError>>;
    /// What `prepare` fills in that the generic checks need (a sweep's one node), without
    /// its checks: the body the generic checks read when `prepare` refused it, so they do
    /// not report what the kind itself supplies.
    fn reshape(&self, _kind: &str, body: Value) -> Value {
        body
    }
    /// The kind's own top-level request fields (which `prepare` moves into `params`), listed
    /// with the generic ones when a request has a field neither knows.
    fn fields(&self, _kind: &str) -> &'static [&'static str] {
        &[]
    }
    /// Checks a parsed request against the cloud (preflight); may fill in params.
    fn admit<'a>(&'a self, req: &'a mut JobRequest, tenant: &'a str) -> AdmitFuture<'a>;
    /// Checks a node's spec as an amend would leave it (`amended`), beside the job's other
    /// nodes' specs, with the same node checks the kind's admission makes (preflight
    /// against the cluster's cloud); errors name their fields.
    fn check_amend<'a>(
        &'a self,
        _kind: &'a str,
        _cluster: &'a str,
        _amended: &'a Value,
        _others: &'a [Value],
    ) -> AdmitFuture<'a> {
        Box::pin(async { Ok(()) })
    }
}
