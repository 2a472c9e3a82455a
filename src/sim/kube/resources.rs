//! The resource types the simulated API servers serve: one table, read by routing,
//! discovery and the object store alike.

/// One served resource type.
#[derive(Debug)]
pub struct Kind {
    /// API group; `""` is the core group under `/api`.
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    /// Has a `/status` subresource: main writes keep the stored status, status writes keep
    /// everything else, and `generation` counts spec changes.
    pub status: bool,
    /// Has a `/scale` subresource (`spec.replicas`).
    pub scale: bool,
    pub short_names: &'static [&'static str],
    /// Served by workload clusters too (their Nodes), not only by the management cluster.
    pub workload: bool,
}

impl Kind {
    /// `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// How the apiserver names the resource in messages: `machines.cluster.x-k8s.io`.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// A custom resource: stricter updates (`resourceVersion` required on PUT) and a
    /// `generation`.
    pub fn is_custom(&self) -> bool {
        !self.group.is_empty()
    }
}

const CAPI: &str = "cluster.x-k8s.io";
const CAPO: &str = "infrastructure.cluster.x-k8s.io";
const KUBEADM: &str = "bootstrap.cluster.x-k8s.io";

const fn kind(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    short_names: &'static [&'static str],
) -> Kind {
    Kind {
        group,
        version,
        plural,
        singular,
        kind,
        namespaced: true,
        status: true,
        scale: false,
        short_names,
        workload: false,
    }
}

/// Every served type. Indexes into this table identify kinds in the store.
pub static KINDS: &[Kind] = &[
    Kind {
        status: false,
        workload: true,
        ..kind("", "v1", "secrets", "secret", "Secret", &[])
    },
    Kind {
        namespaced: false,
        workload: true,
        ..kind("", "v1", "nodes", "node", "Node", &["no"])
    },
    Kind {
        namespaced: false,
        workload: true,
        ..kind("", "v1", "namespaces", "namespace", "Namespace", &["ns"])
    },
    kind(CAPI, "v1beta1", "clusters", "cluster", "Cluster", &["cl"]),
    kind(CAPI, "v1beta1", "machines", "machine", "Machine", &["ma"]),
    Kind {
        scale: true,
        ..kind(
            CAPI,
            "v1beta1",
            "machinesets",
            "machineset",
            "MachineSet",
            &["ms"],
        )
    },
    Kind {
        scale: true,
        ..kind(
            CAPI,
            "v1beta1",
            "machinedeployments",
            "machinedeployment",
            "MachineDeployment",
            &["md"],
        )
    },
    kind(
        CAPO,
        "v1beta1",
        "openstackclusters",
        "openstackcluster",
        "OpenStackCluster",
        &["osc"],
    ),
    kind(
        CAPO,
        "v1beta1",
        "openstackmachines",
        "openstackmachine",
        "OpenStackMachine",
        &["osm"],
    ),
    Kind {
        status: false,
        ..kind(
            CAPO,
            "v1beta1",
            "openstackmachinetemplates",
            "openstackmachinetemplate",
            "OpenStackMachineTemplate",
            &["osmt"],
        )
    },
    kind(
        CAPO,
        "v1alpha1",
        "openstackservers",
        "openstackserver",
        "OpenStackServer",
        &[],
    ),
    kind(
        KUBEADM,
        "v1beta1",
        "kubeadmconfigs",
        "kubeadmconfig",
        "KubeadmConfig",
        &[],
    ),
    Kind {
        status: false,
        ..kind(
            KUBEADM,
            "v1beta1",
            "kubeadmconfigtemplates",
            "kubeadmconfigtemplate",
            "KubeadmConfigTemplate",
            &[],
        )
    },
];

/// Indexes of the kinds the simulator's controllers handle.
pub mod ix {
    pub const SECRET: usize = 0;
    pub const NODE: usize = 1;
    pub const NAMESPACE: usize = 2;
    pub const CLUSTER: usize = 3;
    pub const MACHINE: usize = 4;
    pub const MACHINE_SET: usize = 5;
    pub const MACHINE_DEPLOYMENT: usize = 6;
    pub const OPENSTACK_CLUSTER: usize = 7;
    pub const OPENSTACK_MACHINE: usize = 8;
    pub const OPENSTACK_MACHINE_TEMPLATE: usize = 9;
    pub const OPENSTACK_SERVER: usize = 10;
    pub const KUBEADM_CONFIG: usize = 11;
    pub const KUBEADM_CONFIG_TEMPLATE: usize = 12;
}

/// The kind served at `group`/`version`/`plural`.
pub fn find(group: &str, version: &str, plural: &str) -> Option<usize> {
    KINDS
        .iter()
        .position(|k| k.group == group && k.version == version && k.plural == plural)
}

/// The kind an object's `apiVersion` and `kind` name.
pub fn by_type(api_version: &str, kind: &str) -> Option<usize> {
    KINDS
        .iter()
        .position(|k| k.api_version() == api_version && k.kind == kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_constants_name_their_kinds() {
        assert_eq!(KINDS[ix::SECRET].kind, "Secret");
        assert_eq!(KINDS[ix::NODE].kind, "Node");
        assert_eq!(KINDS[ix::NAMESPACE].kind, "Namespace");
        assert_eq!(KINDS[ix::CLUSTER].kind, "Cluster");
        assert_eq!(KINDS[ix::MACHINE].kind, "Machine");
        assert_eq!(KINDS[ix::MACHINE_SET].kind, "MachineSet");
        assert_eq!(KINDS[ix::MACHINE_DEPLOYMENT].kind, "MachineDeployment");
        assert_eq!(KINDS[ix::OPENSTACK_CLUSTER].kind, "OpenStackCluster");
        assert_eq!(KINDS[ix::OPENSTACK_MACHINE].kind, "OpenStackMachine");
        assert_eq!(
            KINDS[ix::OPENSTACK_MACHINE_TEMPLATE].kind,
            "OpenStackMachineTemplate"
        );
        assert_eq!(KINDS[ix::OPENSTACK_SERVER].kind, "OpenStackServer");
        assert_eq!(KINDS[ix::KUBEADM_CONFIG].kind, "KubeadmConfig");
        assert_eq!(
            KINDS[ix::KUBEADM_CONFIG_TEMPLATE].kind,
            "KubeadmConfigTemplate"
        );
        assert_eq!(find(CAPI, "v1beta1", "machines"), Some(ix::MACHINE));
        assert_eq!(
            by_type(
                "infrastructure.cluster.x-k8s.io/v1alpha1",
                "OpenStackServer"
            ),
            Some(ix::OPENSTACK_SERVER)
        );
    }
}
