//! The CAPI/CAPO API versions and names Capstan uses, in one place (so v1beta2 can follow),
//! and the labels that mark what Capstan made.

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};

pub const CAPI_GROUP: &str = "cluster.x-k8s.io";
pub const CAPI_VERSION: &str = "v1beta1";
pub const CAPO_GROUP: &str = "infrastructure.cluster.x-k8s.io";
pub const CAPO_VERSION: &str = "v1beta1";
/// CAPO serves OpenStackServer only at v1alpha1.
pub const CAPO_SERVER_VERSION: &str = "v1alpha1";

pub const CLUSTER_NAME_LABEL: &str = "cluster.x-k8s.io/cluster-name";
pub const DELETE_MACHINE_ANNOTATION: &str = "cluster.x-k8s.io/delete-machine";
/// On control-plane Machines: never workers to delete, repair or count.
pub const CONTROL_PLANE_LABEL: &str = "cluster.x-k8s.io/control-plane";
/// Capstan's marks on what it creates: the job and the node spec it came from.
pub const JOB_LABEL: &str = "capstan.io/job";
pub const NODE_LABEL: &str = "capstan.io/node";
pub const MANAGED_LABEL: &str = "app.kubernetes.io/managed-by";

fn resource(group: &str, version: &str, kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind))
}

pub fn machine_resource() -> ApiResource {
    resource(CAPI_GROUP, CAPI_VERSION, "Machine")
}

pub fn openstack_machine_resource() -> ApiResource {
    resource(CAPO_GROUP, CAPO_VERSION, "OpenStackMachine")
}

pub fn openstack_server_resource() -> ApiResource {
    resource(CAPO_GROUP, CAPO_SERVER_VERSION, "OpenStackServer")
}

pub fn machines(c: &kube::Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(c.clone(), ns, &machine_resource())
}

pub fn machine_sets(c: &kube::Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        c.clone(),
        ns,
        &resource(CAPI_GROUP, CAPI_VERSION, "MachineSet"),
    )
}

pub fn machine_deployments(c: &kube::Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        c.clone(),
        ns,
        &resource(CAPI_GROUP, CAPI_VERSION, "MachineDeployment"),
    )
}

pub fn clusters(c: &kube::Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        c.clone(),
        ns,
        &resource(CAPI_GROUP, CAPI_VERSION, "Cluster"),
    )
}

pub fn openstack_clusters(c: &kube::Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        c.clone(),
        ns,
        &resource(CAPO_GROUP, CAPO_VERSION, "OpenStackCluster"),
    )
}

pub fn openstack_machines(c: &kube::Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(c.clone(), ns, &openstack_machine_resource())
}

pub fn openstack_servers(c: &kube::Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(c.clone(), ns, &openstack_server_resource())
}

pub fn api_version(group: &str, version: &str) -> String {
    format!("{group}/{version}")
}
