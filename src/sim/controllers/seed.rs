//! A scenario's clusters as the objects an operator would have applied: Cluster,
//! OpenStackCluster, the cloud and bootstrap Secrets, templates and worker MachineSets or
//! MachineDeployments (the procedure of the seed notes: no control plane, `dataSecretName`
//! on the workers).

use base64::Engine;
use serde_json::{Value, json};

use super::super::kube::resources::ix;
use super::super::kube::store::Objects;
use super::super::kube::{KubeWorld, kubeconfig};
use super::super::scenario::{ClusterSpec, Scenario};

/// The cloud name inside the cluster's `clouds.yaml` Secret, as CAPO templates use it.
pub const CAPO_CLOUD: &str = "openstack";

pub const CLUSTER_NAME_LABEL: &str = "cluster.x-k8s.io/cluster-name";

/// Creates every scenario cluster's objects on the management API server and registers its
/// workload API server. `base` is the simulator's URL.
pub fn seed(kube: &KubeWorld, scenario: &Scenario, base: &str, ids: &dyn Fn(&str) -> String) {
    for c in &scenario.clusters {
        let key = format!("{}/{}", c.namespace, c.name);
        let token = kube.add_workload(&key);
        let mut clusters = kube.clusters.lock().unwrap();
        let objects = clusters
            .get_mut(super::super::kube::MANAGEMENT)
            .expect("management");
        for obj in cluster_objects(scenario, c, base, &token, ids) {
            let kind = super::super::kube::resources::by_type(
                obj["apiVersion"].as_str().unwrap_or_default(),
                obj["kind"].as_str().unwrap_or_default(),
            )
            .expect("seeded kinds are served");
            let ns = if kind == ix::NAMESPACE {
                ""
            } else {
                &c.namespace
            };
            create_once(objects, kind, ns, obj);
        }
    }
}

fn create_once(objects: &mut Objects, kind: usize, ns: &str, obj: Value) {
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    if objects.get(kind, ns, name).is_none() {
        objects
            .create(kind, ns, obj, true, false)
            .expect("seed objects are valid");
    }
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn cluster_objects(
    s: &Scenario,
    c: &ClusterSpec,
    base: &str,
    workload_token: &str,
    ids: &dyn Fn(&str) -> String,
) -> Vec<Value> {
    let project = s
        .projects
        .iter()
        .find(|p| p.name == c.project)
        .expect("checked when the scenario was parsed");
    let user = &project.users[0];
    let ns = &c.namespace;
    let name = &c.name;
    let labels = json!({ CLUSTER_NAME_LABEL: name });
    // The cluster's own project's credentials: CAPO acts in that project and sees only it.
    let clouds_yaml = format!(
        "clouds:\n  {CAPO_CLOUD}:\n    auth:\n      auth_url: {base}/identity/v3\n      username: {}\n      password: {:?}\n      project_name: {}\n      project_id: {}\n      user_domain_name: Default\n      project_domain_name: Default\n    region_name: {}\n    interface: public\n    identity_api_version: 3\n",
        user.name,
        user.password.expose(),
        project.name,
        ids(&format!("project:{}", project.name)),
        s.region
    );
    let subnet_cidr = s
        .networks
        .iter()
        .flat_map(|n| &n.subnets)
        .find(|x| x.name == c.subnet)
        .map(|x| x.cidr.clone())
        .unwrap_or_default();
    // The (absent) control plane's endpoint: the tenth address of the cluster's subnet.
    let endpoint = crate::ipv4::Cidr::parse(&subnet_cidr)
        .ok()
        .map(|cidr| std::net::Ipv4Addr::from(u32::from(cidr.network) + 10).to_string())
        .unwrap_or_else(|| "10.6.0.10".into());
    let workload_server = format!("{base}/workload/{ns}/{name}");
    let identity_ref = json!({ "name": format!("{name}-cloud-config"), "cloudName": CAPO_CLOUD });
    let mut out = vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        json!({
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": format!("{name}-cloud-config"), "labels": {"clusterctl.cluster.x-k8s.io/move": "true"}},
            "data": {"clouds.yaml": b64(&clouds_yaml), "cacert": b64("\n")},
        }),
        json!({
            "apiVersion": "v1", "kind": "Secret", "type": "cluster.x-k8s.io/secret",
            "metadata": {"name": format!("{name}-bootstrap"), "labels": labels},
            "data": {"format": b64("cloud-config"), "value": b64(&format!(
                "#cloud-config\n# kubeadm join for the workers of {ns}/{name} (simulated)\nruncmd:\n  - kubeadm join --config /run/kubeadm/kubeadm-join-config.yaml\n"))},
        }),
        json!({
            "apiVersion": "v1", "kind": "Secret", "type": "cluster.x-k8s.io/secret",
            "metadata": {"name": format!("{name}-kubeconfig"), "labels": labels},
            "data": {"value": b64(&kubeconfig(&workload_server, name, workload_token))},
        }),
        json!({
            "apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "Cluster",
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "clusterNetwork": {"pods": {"cidrBlocks": ["192.168.0.0/16"]}, "serviceDomain": "cluster.local"},
                "controlPlaneEndpoint": {"host": endpoint, "port": 6443},
                "infrastructureRef": {"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1", "kind": "OpenStackCluster", "name": name, "namespace": ns},
            },
            "status": {
                "phase": "Provisioned", "infrastructureReady": true, "controlPlaneReady": false,
                "failureDomains": Value::Object(s.availability_zones.iter().map(|z| (z.clone(), json!({"controlPlane": true}))).collect()),
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": super::super::kube::store::timestamp()}],
            },
        }),
        json!({
            "apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1", "kind": "OpenStackCluster",
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "identityRef": identity_ref,
                "externalNetwork": {"filter": {"name": c.external_network}},
                "network": {"filter": {"name": c.network}},
                "subnets": [{"filter": {"name": c.subnet}}],
                "managedSecurityGroups": {"allowAllInClusterTraffic": true},
                "apiServerLoadBalancer": {"enabled": false},
                "disableAPIServerFloatingIP": true,
                "controlPlaneEndpoint": {"host": endpoint, "port": 6443},
            },
            "status": {
                "ready": true,
                "network": {"id": ids(&format!("network:{}", c.network)), "name": c.network,
                    "subnets": [{"id": ids(&format!("subnet:{}", c.subnet)), "name": c.subnet, "cidr": subnet_cidr}]},
                "externalNetwork": {"id": ids(&format!("network:{}", c.external_network)), "name": c.external_network},
                "failureDomains": Value::Object(s.availability_zones.iter().map(|z| (z.clone(), json!({"controlPlane": true}))).collect()),
            },
        }),
    ];
    for ms in &c.machine_sets {
        let set_labels = json!({
            CLUSTER_NAME_LABEL: name,
            "cluster.x-k8s.io/deployment-name": ms.name,
            "cluster.x-k8s.io/set-name": ms.name,
        });
        out.push(json!({
            "apiVersion": "bootstrap.cluster.x-k8s.io/v1beta1", "kind": "KubeadmConfigTemplate",
            "metadata": {"name": ms.name, "labels": labels},
            "spec": {"template": {"spec": {"joinConfiguration": {"nodeRegistration": {
                "name": "{{ local_hostname }}", "kubeletExtraArgs": {"cloud-provider": "external"}}}}}},
        }));
        out.push(json!({
            "apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1", "kind": "OpenStackMachineTemplate",
            "metadata": {"name": ms.name, "labels": labels},
            "spec": {"template": {"spec": {
                "flavor": ms.flavor,
                "image": {"filter": {"name": ms.image}},
                "identityRef": identity_ref,
                "ports": [{"network": {"filter": {"name": c.network}}, "fixedIPs": [{"subnet": {"filter": {"name": c.subnet}}}]}],
                "securityGroups": [],
            }}},
        }));
        let mut template_spec = json!({
            "clusterName": name,
            "version": c.kubernetes_version,
            "bootstrap": {"dataSecretName": format!("{name}-bootstrap")},
            "infrastructureRef": {"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1", "kind": "OpenStackMachineTemplate", "name": ms.name, "namespace": ns},
        });
        if let Some(fd) = &ms.failure_domain {
            template_spec["failureDomain"] = json!(fd);
        }
        if ms.deployment {
            let md_labels =
                json!({CLUSTER_NAME_LABEL: name, "cluster.x-k8s.io/deployment-name": ms.name});
            out.push(json!({
                "apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "MachineDeployment",
                "metadata": {"name": ms.name, "labels": labels},
                "spec": {
                    "clusterName": name, "replicas": ms.replicas,
                    "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0, "deletePolicy": ms.delete_policy}},
                    "selector": {"matchLabels": md_labels},
                    "template": {"metadata": {"labels": md_labels}, "spec": template_spec},
                },
            }));
            continue;
        }
        out.push(json!({
            "apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "MachineSet",
            "metadata": {"name": ms.name, "labels": labels},
            "spec": {
                "clusterName": name, "replicas": ms.replicas, "deletePolicy": ms.delete_policy,
                "selector": {"matchLabels": set_labels},
                "template": {"metadata": {"labels": set_labels}, "spec": template_spec},
            },
        }));
    }
    out
}
