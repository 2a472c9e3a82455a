//! What every cloud kind's steps share: the job's cluster read from the step context, the
//! clients for it (CAPI at the served version, OpenStack with the cluster's own credentials,
//! the workload cluster's API), a Machine's Nova server, and the translation of a Kubernetes or OpenStack error into
//! a classified `StepError`.
//!
//! Invariant: a step gets its cluster and clients only through here, so a stored cluster
//! string that does not parse is an error naming it (never a default namespace), and every
//! cloud error is classified by the one table in `classify`, labelled with the service
//! that answered.

use serde_json::Value;

use super::classify::{self, Classified, Failure, Source};
use crate::cloud::capi::{Capi, Machine};
use crate::cloud::marks;
use crate::cloud::os::{CallError, OpenStack, Service};
use crate::cloud::{Clients, ClusterRef};
use crate::engine::step::{StepContext, StepError};
use crate::model::FailureClass;

/// The job's cluster, from its stored `ns/name` (checked when the job was admitted: a
/// string that does not parse now is a record Capstan never admitted).
pub(crate) fn cluster_of(ctx: &StepContext) -> Result<ClusterRef, StepError> {
    ClusterRef::parse(&ctx.cluster)
        .map_err(|e| StepError::new(FailureClass::Internal, format!("the job's cluster: {e}")))
}

/// OpenStack with the cluster's own credentials (its identityRef Secret). Credentials that
/// are missing or refused fail the node (`auth`); an unreachable apiserver or Keystone is
/// transient.
pub(crate) async fn os_of(c: &Clients, cluster: &ClusterRef) -> Result<OpenStack, StepError> {
    c.os(cluster).await.map_err(|e| {
        let class = if e.is_unavailable() {
            FailureClass::Transient
        } else {
            FailureClass::Auth
        };
        StepError::new(class, format!("OpenStack credentials of {cluster}: {e}"))
    })
}

/// CAPI and CAPO at the version the management cluster serves.
pub(crate) async fn capi_of(c: &Clients) -> Result<Capi, StepError> {
    c.capi()
        .await
        .map_err(|e| kube_error("asking which Cluster API version the apiserver serves", e))
}

/// A Kubernetes error as a step error: 5xx, 429 and timeouts are transient.
pub(crate) fn kube_error(what: &str, e: kube::Error) -> StepError {
    let (status, text) = match &e {
        kube::Error::Api(s) => (Some(s.code), s.message.clone()),
        other => (None, other.to_string()),
    };
    let c = classify::classify(&Failure::new(
        Source::Kubernetes,
        status,
        format!("{what}: {text}"),
    ));
    StepError::new(c.class, format!("{what}: {text}"))
}

/// The classifier's source for a failed call: the service that answered, or `Network`
/// when none did (status 0: refused, reset, timed out; the text still names the service).
fn source_of(e: &CallError) -> Source {
    match e.service {
        _ if e.status == 0 => Source::Network,
        Service::Compute => Source::Nova,
        Service::Network => Source::Neutron,
        Service::BlockStorage => Source::Cinder,
        Service::Image => Source::Glance,
    }
}

/// An OpenStack call's failure, classified as from the service that answered.
pub(crate) fn os_failure(e: &CallError) -> Classified {
    let status = (e.status != 0).then_some(e.status);
    classify::classify(&Failure::new(source_of(e), status, e.text.clone()))
}

/// An OpenStack call's failure as a step error, saying what was tried.
pub(crate) fn os_error(what: &str, e: CallError) -> StepError {
    let c = os_failure(&e);
    StepError::new(c.class, format!("{what}: {e}"))
}

/// Of the servers Nova lists (with `status` and `fault`), the Machine's: the one its
/// providerID names, else the one of its name that carries the cluster's mark. A server
/// that only shares the name is not this node's.
pub(crate) fn pick_server<'a>(
    servers: impl IntoIterator<Item = &'a Value>,
    cluster: &ClusterRef,
    machine: &Machine,
) -> Option<&'a Value> {
    let name = machine.name.as_str();
    let by_id = machine.server_id();
    let is_named = |s: &Value| by_id.as_deref().is_some_and(|i| s["id"] == i);
    let candidates: Vec<&Value> = servers
        .into_iter()
        .filter(|s| s["name"] == name || is_named(s))
        .collect();
    candidates
        .iter()
        .find(|s| is_named(s))
        .or_else(|| {
            candidates
                .iter()
                .find(|s| marks::server_is_marked(s, cluster))
        })
        .copied()
}

/// The Machine's Nova server, read with the cluster's credentials (see `pick_server`).
pub(crate) async fn server_of(
    os: &OpenStack,
    cluster: &ClusterRef,
    machine: &Machine,
) -> Result<Option<Value>, StepError> {
    let found = os
        .named(
            Service::Compute,
            &["servers", "detail"],
            "servers",
            &machine.name,
        )
        .await
        .map_err(|e| os_error("listing servers", e))?;
    Ok(pick_server(&found, cluster, machine).cloned())
}

/// A client for the cluster's own API, from the `<cluster>-kubeconfig` Secret CAPI keeps.
pub(crate) async fn workload_client(
    c: &Clients,
    cluster: &ClusterRef,
) -> Result<kube::Client, StepError> {
    let name = &cluster.name;
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(c.kube.clone(), &cluster.ns);
    let secret = secrets
        .get(&format!("{name}-kubeconfig"))
        .await
        .map_err(|e| kube_error("reading the cluster's kubeconfig Secret", e))?;
    let bytes = secret
        .data
        .and_then(|d| d.get("value").map(|v| v.0.clone()))
        .ok_or_else(|| {
            StepError::new(
                FailureClass::InvalidSpec,
                format!("Secret {name}-kubeconfig has no `value`"),
            )
        })?;
    let text = String::from_utf8_lossy(&bytes);
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&text).map_err(|e| {
        StepError::new(
            FailureClass::InvalidSpec,
            format!("workload kubeconfig: {e}"),
        )
    })?;
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .map_err(|e| {
        StepError::new(
            FailureClass::InvalidSpec,
            format!("workload kubeconfig: {e}"),
        )
    })?;
    crate::cloud::kube_client(config)
        .map_err(|e| StepError::new(FailureClass::Transient, format!("workload client: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_openstack_error_is_labelled_with_the_service_that_answered() {
        for (service, source) in [
            (Service::Compute, Source::Nova),
            (Service::Network, Source::Neutron),
            (Service::BlockStorage, Source::Cinder),
            (Service::Image, Source::Glance),
        ] {
            let e = CallError {
                service,
                status: 503,
                text: "Service Unavailable".into(),
            };
            let c = os_failure(&e);
            assert_eq!(c.source, source, "{service:?}");
            assert_eq!(c.class, FailureClass::Transient, "{service:?}");
        }
        // No answer at all is the network's, whichever service was asked; the step's
        // message still names it.
        let hung = CallError {
            service: Service::Image,
            status: 0,
            text: "no answer within 30s".into(),
        };
        assert_eq!(os_failure(&hung).source, Source::Network);
        assert!(os_error("listing images", hung).message.contains("glance"));
    }
}
