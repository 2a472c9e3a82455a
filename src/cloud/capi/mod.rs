//! Cluster API as Capstan speaks it: which `cluster.x-k8s.io` version the management cluster
//! serves (`v1beta2` where it does, else `v1beta1`), handles on the CAPI and CAPO kinds at
//! those versions, and the labels that mark what Capstan made. `shape.rs` knows how the two
//! CAPI versions lay out the fields Capstan reads and writes; `capo.rs` knows CAPO's kinds,
//! the names CAPO gives OpenStack resources and its providerIDs.
//!
//! **Invariant:** no CAPI or CAPO JSON path outside this module: the lifecycle steps, the
//! API views and the credentials lookup read Machines, MachineSets and Clusters through
//! `shape`, CAPO's kinds through `capo`, and write them through `Capi`, so a third version
//! changes only this module.

pub mod capo;
pub mod shape;

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PatchParams, PostParams};

pub use shape::{Condition, Machine, MachineFields};

pub const CAPI_GROUP: &str = "cluster.x-k8s.io";
pub const CAPO_GROUP: &str = "infrastructure.cluster.x-k8s.io";
/// CAPO v0.14 serves its machine and cluster kinds only at v1beta1, whichever CAPI version
/// core serves.
pub const CAPO_VERSION: &str = "v1beta1";
/// CAPO serves OpenStackServer only at v1alpha1.
pub const CAPO_SERVER_VERSION: &str = "v1alpha1";

/// The field manager of Capstan's writes: `metadata.managedFields` names it, with the API
/// version each write used.
pub const FIELD_MANAGER: &str = "capstan";

pub const CLUSTER_NAME_LABEL: &str = "cluster.x-k8s.io/cluster-name";
pub const DELETE_MACHINE_ANNOTATION: &str = "cluster.x-k8s.io/delete-machine";
/// On control-plane Machines: never workers to delete, repair or count.
pub const CONTROL_PLANE_LABEL: &str = "cluster.x-k8s.io/control-plane";
/// Capstan's marks on what it creates: the job and the node spec it came from.
pub const JOB_LABEL: &str = "capstan.io/job";
pub const NODE_LABEL: &str = "capstan.io/node";
pub const MANAGED_LABEL: &str = "app.kubernetes.io/managed-by";

/// A `cluster.x-k8s.io` API version Capstan speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapiVersion {
    /// CAPI up to v1.10, and any apiserver that serves nothing newer (the simulator).
    V1Beta1,
    /// CAPI v1.11 and later store v1beta2; v1beta1 is served only through conversion.
    V1Beta2,
}

impl CapiVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            CapiVersion::V1Beta1 => "v1beta1",
            CapiVersion::V1Beta2 => "v1beta2",
        }
    }

    /// The version to speak, of those the apiserver serves for CAPI's group: v1beta2 when
    /// served, else v1beta1 (also when CAPI is not installed: its calls then fail by name).
    pub fn choose<'a>(served: impl IntoIterator<Item = &'a str>) -> CapiVersion {
        if served.into_iter().any(|v| v == "v1beta2") {
            CapiVersion::V1Beta2
        } else {
            CapiVersion::V1Beta1
        }
    }

    /// Asks the apiserver which versions of `cluster.x-k8s.io` it serves (one `GET /apis`);
    /// `None` when it serves the group not at all (CAPI not installed yet, or mid-upgrade):
    /// a guess then must not be kept.
    pub async fn discover(kube: &kube::Client) -> Result<Option<CapiVersion>, kube::Error> {
        let groups = kube.list_api_groups().await?;
        let Some(group) = groups.groups.iter().find(|g| g.name == CAPI_GROUP) else {
            return Ok(None);
        };
        Ok(Some(CapiVersion::choose(
            group.versions.iter().map(|v| v.version.as_str()),
        )))
    }
}

impl std::fmt::Display for CapiVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The management cluster's CAPI and CAPO kinds, at the CAPI version it serves.
#[derive(Clone)]
pub struct Capi {
    kube: kube::Client,
    version: CapiVersion,
}

fn resource(group: &str, version: &str, kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind))
}

impl Capi {
    pub fn new(kube: kube::Client, version: CapiVersion) -> Capi {
        Capi { kube, version }
    }

    fn capi(&self, ns: &str, kind: &str) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.kube.clone(),
            ns,
            &resource(CAPI_GROUP, self.version.as_str(), kind),
        )
    }

    pub fn machine_resource(&self) -> ApiResource {
        resource(CAPI_GROUP, self.version.as_str(), "Machine")
    }

    pub fn machines(&self, ns: &str) -> Api<DynamicObject> {
        self.capi(ns, "Machine")
    }

    /// Every namespace's Machines.
    pub fn all_machines(&self) -> Api<DynamicObject> {
        Api::all_with(self.kube.clone(), &self.machine_resource())
    }

    pub fn machine_sets(&self, ns: &str) -> Api<DynamicObject> {
        self.capi(ns, "MachineSet")
    }

    pub fn machine_deployments(&self, ns: &str) -> Api<DynamicObject> {
        self.capi(ns, "MachineDeployment")
    }

    pub fn clusters(&self, ns: &str) -> Api<DynamicObject> {
        self.capi(ns, "Cluster")
    }

    /// Every namespace's Clusters.
    pub fn all_clusters(&self) -> Api<DynamicObject> {
        Api::all_with(
            self.kube.clone(),
            &resource(CAPI_GROUP, self.version.as_str(), "Cluster"),
        )
    }

    pub fn openstack_clusters(&self, ns: &str) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.kube.clone(),
            ns,
            &resource(CAPO_GROUP, CAPO_VERSION, "OpenStackCluster"),
        )
    }

    pub fn openstack_machines(&self, ns: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.kube.clone(), ns, &openstack_machine_resource())
    }

    pub fn openstack_servers(&self, ns: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.kube.clone(), ns, &openstack_server_resource())
    }

    /// A Machine to create, in this version's shape.
    pub fn machine(&self, m: &MachineFields) -> DynamicObject {
        shape::machine_object(self.version, m)
    }
}

pub fn openstack_machine_resource() -> ApiResource {
    resource(CAPO_GROUP, CAPO_VERSION, "OpenStackMachine")
}

pub fn openstack_server_resource() -> ApiResource {
    resource(CAPO_GROUP, CAPO_SERVER_VERSION, "OpenStackServer")
}

pub fn api_version(group: &str, version: &str) -> String {
    format!("{group}/{version}")
}

/// Create options for Capstan's writes (its field manager).
pub fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

/// Patch options for Capstan's writes (its field manager).
pub fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::CapiVersion;

    #[test]
    fn v1beta2_is_spoken_where_it_is_served_and_v1beta1_elsewhere() {
        // CAPI v1.12's APIGroup lists v1beta2 (preferred) and v1beta1.
        assert_eq!(
            CapiVersion::choose(["v1beta2", "v1beta1"]),
            CapiVersion::V1Beta2
        );
        // CAPI up to v1.10, and the simulator.
        assert_eq!(CapiVersion::choose(["v1beta1"]), CapiVersion::V1Beta1);
        // No CAPI at all: v1beta1, whose calls then fail naming the kind.
        assert_eq!(CapiVersion::choose([]), CapiVersion::V1Beta1);
    }
}
