//! Admission of the lifecycle kinds: `Lifecycle` is the engine's admission hook, and hands
//! each request to its kind (`kind::KINDS`) — the kind's own admission lives in its folder
//! (`scale_out/admission.rs`, `delete_nodes/admission.rs`, …). Here are the parts the kinds
//! share: their fields moved into `params`, and the cluster and its cloud, read with the
//! cluster's own credentials.

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::kind;
use super::params::OwnFields;
use crate::cloud::capi;
use crate::cloud::os::{CallError, OpenStack, Service};
use crate::cloud::{Clients, ClusterRef, CredentialError};
use crate::engine::admission::{Admission, AdmitFuture, Refusal};
use crate::engine::request::{FieldError, JobRequest};

pub struct Lifecycle {
    pub clients: Clients,
    /// Capstan's own record: a repaired node's original spec, when Capstan made it.
    pub store: crate::store::Store,
}

impl Admission for Lifecycle {
    fn prepare(&self, kind: &str, body: Value) -> Result<Value, Vec<FieldError>> {
        match kind::find(kind) {
            Some(k) => k.prepare(body),
            None => Ok(body),
        }
    }

    fn fields(&self, kind: &str) -> &'static [&'static str] {
        kind::find(kind).map_or(&[], |k| k.fields())
    }

    fn reshape(&self, kind: &str, body: Value) -> Value {
        match kind::find(kind) {
            Some(k) => k.reshape(body),
            None => body,
        }
    }

    fn check_amend<'a>(
        &'a self,
        kind: &'a str,
        cluster: &'a str,
        amended: &'a Value,
        others: &'a [Value],
    ) -> AdmitFuture<'a> {
        let Some(k) = kind::find(kind) else {
            return Box::pin(async { Ok(()) });
        };
        match ClusterRef::parse(cluster) {
            Ok(cluster) => k.check_amend(self, cluster, amended, others),
            Err(e) => {
                Box::pin(async move { Err(Refusal::Invalid(vec![FieldError::new("cluster", e)])) })
            }
        }
    }

    fn admit<'a>(&'a self, req: &'a mut JobRequest, _tenant: &'a str) -> AdmitFuture<'a> {
        match kind::find(&req.kind) {
            Some(k) => k.admit(self, req),
            None => Box::pin(async { Ok(()) }),
        }
    }
}

/// Moves a kind's own top-level fields into `params`, parsed as its params type.
pub(crate) fn move_to_params(mut body: Value, own: OwnFields) -> Result<Value, Vec<FieldError>> {
    let Some(obj) = body.as_object_mut() else {
        return Ok(body);
    };
    let mut params = match obj.remove("params") {
        Some(Value::Object(p)) => p,
        _ => Map::new(),
    };
    for f in own.fields {
        if let Some(v) = obj.remove(*f) {
            params.insert(f.to_string(), v);
        }
    }
    let checked = (own.check)(&params);
    obj.insert("params".into(), Value::Object(params));
    checked.map(|()| body)
}

pub(super) fn kube_unavailable(e: kube::Error) -> Refusal {
    Refusal::Unavailable(format!("could not read the cluster: {e}"))
}

/// The cluster's OpenStack, with its own credentials. A cluster that does not exist, or
/// whose credentials are missing or refused, is a 422 naming the Secret and the field; a
/// cloud that cannot be reached is a 503.
pub(super) async fn cluster_os(c: &Clients, cluster: &ClusterRef) -> Result<OpenStack, Refusal> {
    c.os(cluster).await.map_err(|e| match e {
        e if e.is_unavailable() => {
            Refusal::Unavailable(format!("could not log in to {cluster}'s cloud: {e}"))
        }
        CredentialError::NoCluster(_) => {
            Refusal::Invalid(vec![FieldError::new("cluster", e.to_string())])
        }
        e => Refusal::Invalid(vec![FieldError::new(
            "cluster",
            format!("the OpenStack credentials of {cluster}: {e}"),
        )]),
    })
}

/// The worker Machines of a cluster (by CAPI's cluster-name label; control-plane Machines
/// are not workers).
pub(super) async fn cluster_machines(
    c: &Clients,
    ns: &str,
    cluster: &str,
) -> Result<Vec<kube::api::DynamicObject>, Refusal> {
    Ok(c.capi()
        .await
        .map_err(kube_unavailable)?
        .machines(ns)
        .list(&kube::api::ListParams::default().labels(&format!(
            "{}={cluster},!{}",
            capi::CLUSTER_NAME_LABEL,
            capi::CONTROL_PLANE_LABEL
        )))
        .await
        .map_err(kube_unavailable)?
        .items)
}

pub(super) fn field(i: usize, f: &str) -> String {
    format!("nodes[{i}].{f}")
}

pub(super) fn names<'a>(list: &'a Value, key: &str) -> HashSet<&'a str> {
    list[key]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x["name"].as_str())
        .collect()
}

pub(super) fn unavailable(what: &str, e: CallError) -> Refusal {
    Refusal::Unavailable(format!("preflight could not read {what}: {e}"))
}

/// One list the checks need from the cloud; a failure is a 503 naming what could not be read.
pub(super) async fn read(
    os: &crate::cloud::os::OpenStack,
    service: Service,
    path: &[&str],
    what: &str,
) -> Result<Value, Refusal> {
    os.get(service, path, &[])
        .await
        .map_err(|e| unavailable(what, e))
}
