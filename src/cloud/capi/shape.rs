//! Where CAPI's v1beta1 and v1beta2 put what Capstan reads and writes (facts from CAPI
//! v1.12's `api/core/v1beta2` types and its v1beta1 conversion):
//!
//! | what | v1beta1 | v1beta2 |
//! | --- | --- | --- |
//! | Machine's infrastructure | `spec.infrastructureRef` {apiVersion, kind, name, namespace} | {apiGroup, kind, name} |
//! | Machine's failure | `status.failureReason`, `status.failureMessage` | under `status.deprecated.v1beta1` |
//! | infrastructure ready | `status.infrastructureReady` | `status.initialization.infrastructureProvisioned` |
//! | conditions | `status.conditions` (CAPI's; v1beta2's under `status.v1beta2`) | `status.conditions` (metav1; v1beta1's under `status.deprecated.v1beta1`) |
//! | Node | `status.nodeRef` (an ObjectReference) | `status.nodeRef` {name} |
//! | MachineSet's deletion order | `spec.deletePolicy` | `spec.deletion.order` |
//!
//! The same in both: `spec.clusterName`, `spec.bootstrap.dataSecretName`, `spec.version`,
//! `spec.providerID`, `spec.failureDomain`, `status.phase`, `status.addresses`,
//! `status.nodeRef.name`, the `NodeHealthy` condition's type, a set's `spec.replicas` and
//! `spec.template.spec.version`, a Cluster's `spec.infrastructureRef.name`.
//!
//! Readers accept either shape (a v1beta1 object has no `status.deprecated`, a v1beta2 one
//! no `status.failureMessage`), so they need no version and cannot read the wrong one;
//! writers build the shape of the version Capstan speaks.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use kube::api::DynamicObject;
use serde_json::{Value, json};

use super::{CAPI_GROUP, CAPO_GROUP, CAPO_VERSION, CapiVersion, api_version};

/// What Capstan puts in a worker Machine it creates: no `configRef`; the cluster's bootstrap
/// Secret as `dataSecretName`; its OpenStackMachine, of the same name, as infrastructure.
#[derive(Debug, Clone)]
pub struct MachineFields<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub cluster_name: &'a str,
    pub bootstrap_secret: &'a str,
    pub version: Option<&'a str>,
    pub failure_domain: Option<&'a str>,
}

/// The Machine for `m`, in `version`'s shape.
pub fn machine_object(version: CapiVersion, m: &MachineFields) -> DynamicObject {
    let infrastructure_ref = match version {
        CapiVersion::V1Beta1 => json!({
            "apiVersion": api_version(CAPO_GROUP, CAPO_VERSION),
            "kind": "OpenStackMachine", "name": m.name, "namespace": m.namespace,
        }),
        // The version is looked up from the CRD's contract label; the namespace is the
        // Machine's own.
        CapiVersion::V1Beta2 => json!({
            "apiGroup": CAPO_GROUP, "kind": "OpenStackMachine", "name": m.name,
        }),
    };
    let mut spec = json!({
        "clusterName": m.cluster_name,
        "bootstrap": { "dataSecretName": m.bootstrap_secret },
        "infrastructureRef": infrastructure_ref,
    });
    if let Some(v) = m.version {
        spec["version"] = json!(v);
    }
    if let Some(fd) = m.failure_domain {
        spec["failureDomain"] = json!(fd);
    }
    serde_json::from_value(json!({
        "apiVersion": api_version(CAPI_GROUP, version.as_str()),
        "kind": "Machine",
        "metadata": { "name": m.name, "namespace": m.namespace, "labels": m.labels },
        "spec": spec,
    }))
    .expect("a Machine is a valid object")
}

/// A Machine condition, in either version's form (both have these fields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub last_transition: Option<DateTime<Utc>>,
}

/// A Machine as Capstan reads it, from either shape.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Machine {
    pub name: String,
    pub created_at: Option<DateTime<Utc>>,
    pub cluster_name: Option<String>,
    pub provider_id: Option<String>,
    pub failure_domain: Option<String>,
    pub phase: Option<String>,
    /// The Node's name, once the Machine has one.
    pub node: Option<String>,
    pub infrastructure_provisioned: bool,
    pub failure_reason: Option<String>,
    pub failure_message: Option<String>,
    pub conditions: Vec<Condition>,
    pub addresses: Vec<String>,
}

/// The Machine condition that says whether its Node is healthy.
pub const NODE_HEALTHY: &str = "NodeHealthy";

fn string(v: &Value) -> Option<String> {
    v.as_str().filter(|s| !s.is_empty()).map(str::to_string)
}

fn time(v: &Value) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(v.as_str()?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

impl Machine {
    pub fn read(o: &DynamicObject) -> Machine {
        let (spec, status) = (&o.data["spec"], &o.data["status"]);
        let deprecated = &status["deprecated"]["v1beta1"];
        let either = |v1beta1: &Value, v1beta2: &Value| string(v1beta2).or_else(|| string(v1beta1));
        Machine {
            name: o.metadata.name.clone().unwrap_or_default(),
            created_at: o
                .metadata
                .creation_timestamp
                .as_ref()
                .and_then(|t| DateTime::from_timestamp_millis(t.0.as_millisecond())),
            cluster_name: string(&spec["clusterName"]),
            provider_id: string(&spec["providerID"]),
            failure_domain: string(&spec["failureDomain"]),
            phase: string(&status["phase"]),
            node: string(&status["nodeRef"]["name"]),
            infrastructure_provisioned: status["initialization"]["infrastructureProvisioned"]
                == true
                || status["infrastructureReady"] == true,
            failure_reason: either(&status["failureReason"], &deprecated["failureReason"]),
            failure_message: either(&status["failureMessage"], &deprecated["failureMessage"]),
            conditions: status["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| {
                    Some(Condition {
                        type_: string(&c["type"])?,
                        status: string(&c["status"]).unwrap_or_else(|| "Unknown".into()),
                        reason: string(&c["reason"]),
                        message: string(&c["message"]),
                        last_transition: time(&c["lastTransitionTime"]),
                    })
                })
                .collect(),
            addresses: status["addresses"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| string(&a["address"]))
                .collect(),
        }
    }

    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }

    /// The `NodeHealthy` condition, once CAPI has set it (it keeps its name in v1beta2).
    pub fn node_health(&self) -> Option<&Condition> {
        self.condition(NODE_HEALTHY)
    }

    /// `NodeHealthy` is True: the Node is Ready without memory, disk or PID pressure.
    pub fn node_healthy(&self) -> bool {
        self.node_health().is_some_and(|c| c.status == "True")
    }

    /// The Nova server the Machine's providerID names, once CAPO has set it.
    pub fn server_id(&self) -> Option<String> {
        super::capo::server_id_of(self.provider_id.as_deref())
    }
}

/// A MachineSet's deletion order (`Random` when unset, CAPI's default).
pub fn deletion_order(set: &DynamicObject) -> String {
    string(&set.data["spec"]["deletion"]["order"])
        .or_else(|| string(&set.data["spec"]["deletePolicy"]))
        .unwrap_or_else(|| "Random".into())
}

/// A MachineSet's or MachineDeployment's wanted replicas.
pub fn replicas(o: &DynamicObject) -> Option<i64> {
    o.data["spec"]["replicas"].as_i64()
}

/// The Kubernetes version a MachineSet's Machines are made with.
pub fn template_version(set: &DynamicObject) -> Option<String> {
    string(&set.data["spec"]["template"]["spec"]["version"])
}

/// A merge patch setting a MachineSet's or MachineDeployment's replicas, with `metadata`
/// (a resourceVersion guard, annotations) written in the same request.
pub fn replicas_patch(metadata: Value, replicas: i64) -> Value {
    json!({ "metadata": metadata, "spec": { "replicas": replicas } })
}

/// The name of the infrastructure cluster (OpenStackCluster) a Cluster names.
pub fn infrastructure_name(cluster: &DynamicObject) -> Option<String> {
    string(&cluster.data["spec"]["infrastructureRef"]["name"])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(text: &str) -> DynamicObject {
        serde_json::from_str(text).expect("a fixture object")
    }

    /// The same Machine as CAPI v1.12 serves it at v1beta2 and at v1beta1 (captured from
    /// the lab): a Running worker whose server was deleted behind CAPO's back, which CAPO
    /// v0.14 reports as the OpenStackMachine's failure and CAPI copies to the Machine.
    const FAILED_V1BETA2: &str = include_str!("testdata/machine-failed-v1beta2.json");
    const FAILED_V1BETA1: &str = include_str!("testdata/machine-failed-v1beta1.json");
    /// A Running worker with a healthy Node, at both versions.
    const RUNNING_V1BETA2: &str = include_str!("testdata/machine-running-v1beta2.json");
    const RUNNING_V1BETA1: &str = include_str!("testdata/machine-running-v1beta1.json");

    #[test]
    fn a_failed_machine_reads_the_same_from_both_shapes() {
        let v2 = Machine::read(&object(FAILED_V1BETA2));
        let v1 = Machine::read(&object(FAILED_V1BETA1));
        let message = v2
            .failure_message
            .clone()
            .expect("v1beta2's failure message");
        assert_eq!(
            message,
            r#"Failure detected from referenced resource infrastructure.cluster.x-k8s.io/v1beta1, Kind=OpenStackMachine with name "fixture-gone": The server was unexpectedly deleted"#
        );
        assert_eq!(v2.failure_reason.as_deref(), Some("UpdateError"));
        assert_eq!(v1.failure_message, v2.failure_message);
        assert_eq!(v1.failure_reason, v2.failure_reason);
        for m in [&v1, &v2] {
            assert_eq!(m.node.as_deref(), Some("fixture-gone"));
            // Set once when provisioned, never reset.
            assert!(m.infrastructure_provisioned);
            assert!(!m.node_healthy(), "{m:?}");
        }
        assert_eq!(v1.phase, v2.phase);
    }

    #[test]
    fn a_running_machine_reads_the_same_from_both_shapes() {
        let v2 = Machine::read(&object(RUNNING_V1BETA2));
        let v1 = Machine::read(&object(RUNNING_V1BETA1));
        for m in [&v1, &v2] {
            assert_eq!(m.phase.as_deref(), Some("Running"));
            assert!(m.infrastructure_provisioned, "{m:?}");
            assert!(m.node_healthy(), "{m:?}");
            assert_eq!(m.failure_message, None);
            assert!(m.server_id().is_some(), "{m:?}");
        }
        assert_eq!(v1.node, v2.node);
        assert!(v2.node.is_some());
        assert_eq!(v1.provider_id, v2.provider_id);
        assert_eq!(v1.failure_domain, v2.failure_domain);
        assert_eq!(v1.cluster_name.as_deref(), Some("demo"));
        assert_eq!(v1.addresses, v2.addresses);
        assert_eq!(v1.created_at, v2.created_at);
        // v1beta2's conditions are metav1.Conditions; v1beta1's are CAPI's own. NodeHealthy
        // is in both, with a transition time.
        let healthy = v2.condition("NodeHealthy").unwrap();
        assert!(healthy.last_transition.is_some());
        assert!(
            v1.condition("NodeHealthy")
                .unwrap()
                .last_transition
                .is_some()
        );
    }

    #[test]
    fn a_machine_is_written_in_the_shape_of_the_version_spoken() {
        let labels = BTreeMap::from([("capstan.io/job".to_string(), "j1".to_string())]);
        let fields = MachineFields {
            name: "w-1",
            namespace: "acme",
            labels: &labels,
            cluster_name: "prod",
            bootstrap_secret: "prod-bootstrap",
            version: Some("v1.30.4"),
            failure_domain: Some("az1"),
        };
        let v2 = serde_json::to_value(machine_object(CapiVersion::V1Beta2, &fields)).unwrap();
        assert_eq!(v2["apiVersion"], "cluster.x-k8s.io/v1beta2");
        assert_eq!(
            v2["spec"]["infrastructureRef"],
            json!({"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "OpenStackMachine", "name": "w-1"})
        );
        let v1 = serde_json::to_value(machine_object(CapiVersion::V1Beta1, &fields)).unwrap();
        assert_eq!(v1["apiVersion"], "cluster.x-k8s.io/v1beta1");
        assert_eq!(
            v1["spec"]["infrastructureRef"],
            json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1", "kind": "OpenStackMachine",
                   "name": "w-1", "namespace": "acme"})
        );
        for m in [&v1, &v2] {
            assert_eq!(m["spec"]["bootstrap"]["dataSecretName"], "prod-bootstrap");
            assert_eq!(m["spec"]["clusterName"], "prod");
            assert_eq!(m["spec"]["version"], "v1.30.4");
            assert_eq!(m["spec"]["failureDomain"], "az1");
            assert_eq!(m["metadata"]["labels"]["capstan.io/job"], "j1");
        }
        // What Capstan writes reads back as what it meant.
        let read = Machine::read(&machine_object(CapiVersion::V1Beta2, &fields));
        assert_eq!(read.failure_domain.as_deref(), Some("az1"));
        assert_eq!(read.cluster_name.as_deref(), Some("prod"));
    }

    #[test]
    fn a_sets_deletion_order_and_replicas_read_from_both_shapes() {
        let v2 = object(include_str!("testdata/machineset-v1beta2.json"));
        let v1 = object(include_str!("testdata/machineset-v1beta1.json"));
        assert_eq!(deletion_order(&v2), "Oldest");
        assert_eq!(deletion_order(&v1), "Oldest");
        assert_eq!(replicas(&v2), replicas(&v1));
        assert!(replicas(&v2).is_some());
        assert_eq!(template_version(&v2).as_deref(), Some("v1.30.4"));
        assert_eq!(template_version(&v1).as_deref(), Some("v1.30.4"));
        // Unset: CAPI's default.
        let mut bare = v2.clone();
        bare.data["spec"]["deletion"] = json!({});
        assert_eq!(deletion_order(&bare), "Random");
    }

    #[test]
    fn a_clusters_infrastructure_reads_from_both_shapes() {
        let v2 = object(include_str!("testdata/cluster-v1beta2.json"));
        let v1 = object(include_str!("testdata/cluster-v1beta1.json"));
        assert_eq!(infrastructure_name(&v2).as_deref(), Some("demo"));
        assert_eq!(infrastructure_name(&v1).as_deref(), Some("demo"));
        // The two shapes of the reference itself.
        assert_eq!(
            v2.data["spec"]["infrastructureRef"]["apiGroup"],
            "infrastructure.cluster.x-k8s.io"
        );
        assert_eq!(
            v1.data["spec"]["infrastructureRef"]["apiVersion"],
            "infrastructure.cluster.x-k8s.io/v1beta1"
        );
    }
}
