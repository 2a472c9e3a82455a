//! What a simulated cloud contains at start: projects and their users and quotas, AZs,
//! hypervisors, flavors, images, volume types and networks. Read from a YAML scenario file;
//! `scenarios/demo.yaml` is built in.

use serde::Deserialize;

use crate::config::Secret;

/// The built-in demo scenario.
pub const DEMO: &str = include_str!("../../scenarios/demo.yaml");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    #[serde(default = "default_region")]
    pub region: String,
    pub projects: Vec<ProjectSpec>,
    pub availability_zones: Vec<String>,
    pub hypervisors: Vec<HypervisorSpec>,
    pub flavors: Vec<FlavorSpec>,
    pub images: Vec<ImageSpec>,
    pub volume_types: Vec<String>,
    pub networks: Vec<NetworkSpec>,
    /// CAPI clusters on the management API server, with their worker MachineSets.
    #[serde(default)]
    pub clusters: Vec<ClusterSpec>,
}

fn default_region() -> String {
    "RegionOne".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectSpec {
    pub name: String,
    pub users: Vec<UserSpec>,
    pub quotas: Quotas,
    /// Security groups besides the `default` one every project has.
    #[serde(default)]
    pub security_groups: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    pub name: String,
    pub password: Secret,
    #[serde(default)]
    pub roles: Vec<String>,
    /// The user's Nova keypairs (keypairs belong to users, not projects).
    #[serde(default)]
    pub keypairs: Vec<KeypairSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeypairSpec {
    pub name: String,
    /// An OpenSSH public key line (`ssh-ed25519 AAAA… comment`).
    pub public_key: String,
}

/// A project's limits, in the units the APIs report them.
#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Quotas {
    pub instances: i64,
    pub cores: i64,
    pub ram_mib: i64,
    pub volumes: i64,
    pub gigabytes: i64,
    pub ports: i64,
    pub floatingip: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HypervisorSpec {
    pub name: String,
    pub availability_zone: String,
    pub vcpus: i64,
    pub memory_mib: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlavorSpec {
    pub name: String,
    pub vcpus: i64,
    pub ram_mib: i64,
    pub disk_gib: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    pub name: String,
    #[serde(default)]
    pub min_disk_gib: i64,
    #[serde(default)]
    pub size_bytes: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    pub name: String,
    /// The owning project; external networks have none.
    #[serde(default)]
    pub project: Option<String>,
    #[serde(default)]
    pub external: bool,
    pub subnets: Vec<SubnetSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubnetSpec {
    pub name: String,
    pub cidr: String,
    pub gateway: Option<String>,
}

/// A workload cluster as CAPI/CAPO describe it: Cluster, OpenStackCluster, the cloud and
/// bootstrap Secrets, and worker MachineSets that the controllers fill.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    #[serde(default = "default_namespace")]
    pub namespace: String,
    pub name: String,
    /// The project (and its first user) whose credentials go into the cloud Secret.
    pub project: String,
    pub network: String,
    pub subnet: String,
    pub external_network: String,
    #[serde(default = "default_version")]
    pub kubernetes_version: String,
    #[serde(default)]
    pub machine_sets: Vec<MachineSetSpec>,
}

/// A worker MachineSet, or with `deployment: true` a MachineDeployment of that name whose
/// controller makes the MachineSet `<name>-<5 random>`. Its templates (KubeadmConfigTemplate,
/// OpenStackMachineTemplate) are named `<name>` either way.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineSetSpec {
    pub name: String,
    #[serde(default)]
    pub deployment: bool,
    pub replicas: i64,
    pub flavor: String,
    pub image: String,
    #[serde(default)]
    pub failure_domain: Option<String>,
    #[serde(default = "default_delete_policy")]
    pub delete_policy: String,
}

fn default_namespace() -> String {
    "default".into()
}

fn default_version() -> String {
    "v1.30.4".into()
}

fn default_delete_policy() -> String {
    "Random".into()
}

impl Scenario {
    /// Parses a scenario and checks what YAML cannot: references and address ranges.
    pub fn parse(text: &str) -> anyhow::Result<Scenario> {
        let s: Scenario = serde_yaml::from_str(text)?;
        for h in &s.hypervisors {
            if !s.availability_zones.contains(&h.availability_zone) {
                anyhow::bail!(
                    "hypervisor {}: availability zone `{}` is not listed",
                    h.name,
                    h.availability_zone
                );
            }
        }
        for n in &s.networks {
            if let Some(p) = &n.project
                && !s.projects.iter().any(|x| &x.name == p)
            {
                anyhow::bail!("network {}: project `{p}` is not listed", n.name);
            }
            for sub in &n.subnets {
                let net = crate::ipv4::Cidr::parse(&sub.cidr)
                    .map_err(|e| anyhow::anyhow!("subnet {}: {e}", sub.name))?;
                if let Some(gw) = &sub.gateway
                    && !net.contains_str(gw)
                {
                    anyhow::bail!("subnet {}: gateway {gw} is outside {}", sub.name, sub.cidr);
                }
            }
        }
        for c in &s.clusters {
            let project = s.projects.iter().find(|p| p.name == c.project);
            if project.is_none_or(|p| p.users.is_empty()) {
                anyhow::bail!(
                    "cluster {}: project `{}` is not listed or has no user",
                    c.name,
                    c.project
                );
            }
            // A project reaches its own networks and external ones, as Neutron scopes them.
            let Some(net) = s.networks.iter().find(|n| n.name == c.network) else {
                anyhow::bail!("cluster {}: network `{}` is not listed", c.name, c.network);
            };
            if !net.external && net.project.as_deref() != Some(c.project.as_str()) {
                anyhow::bail!(
                    "cluster {}: network `{}` is not project `{}`'s",
                    c.name,
                    c.network,
                    c.project
                );
            }
            if !net.subnets.iter().any(|x| x.name == c.subnet) {
                anyhow::bail!(
                    "cluster {}: subnet `{}` is not in network `{}`",
                    c.name,
                    c.subnet,
                    c.network
                );
            }
            if !s
                .networks
                .iter()
                .any(|n| n.name == c.external_network && n.external)
            {
                anyhow::bail!(
                    "cluster {}: `{}` is not an external network",
                    c.name,
                    c.external_network
                );
            }
            for ms in &c.machine_sets {
                if !["Random", "Newest", "Oldest"].contains(&ms.delete_policy.as_str()) {
                    anyhow::bail!(
                        "cluster {}: machine set {}: delete_policy must be Random, Newest or Oldest",
                        c.name,
                        ms.name
                    );
                }
            }
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_scenario_is_what_the_issue_describes() {
        let s = Scenario::parse(DEMO).unwrap();
        assert_eq!(s.projects[0].name, "demo");
        assert_eq!(s.availability_zones, vec!["az1", "az2"]);
        let hv: Vec<&str> = s.hypervisors.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(hv, vec!["compute-1", "compute-2", "compute-3", "compute-4"]);
        let fl: Vec<(&str, i64, i64)> = s
            .flavors
            .iter()
            .map(|f| (f.name.as_str(), f.vcpus, f.ram_mib))
            .collect();
        assert_eq!(fl, vec![("k8s.small", 2, 4096), ("k8s.workload", 4, 8192)]);
        assert_eq!(s.volume_types, vec!["ssd", "hdd"]);
        assert_eq!(s.networks[0].subnets[0].cidr, "10.6.0.0/24");
        assert!(s.networks[1].external);
        // The second tenant: a member only, a smaller quota, its own network and cluster.
        let acme = &s.projects[1];
        assert_eq!(acme.name, "acme");
        assert_eq!(acme.users[0].roles, vec!["member"]);
        assert_eq!(acme.quotas.instances, 10);
        assert_eq!(s.networks[2].project.as_deref(), Some("acme"));
        assert_eq!(s.networks[2].subnets[0].cidr, "10.7.0.0/24");
        let clusters: Vec<(&str, &str, &str)> = s
            .clusters
            .iter()
            .map(|c| (c.namespace.as_str(), c.name.as_str(), c.project.as_str()))
            .collect();
        assert_eq!(
            clusters,
            vec![("default", "demo", "demo"), ("acme", "prod", "acme")]
        );
        assert_eq!(s.clusters[0].machine_sets[0].replicas, 3);
        assert_eq!(s.clusters[1].machine_sets[0].replicas, 2);
    }

    #[test]
    fn a_cluster_on_another_projects_network_is_refused() {
        let bad = DEMO.replace("network: acme-net", "network: demo-net");
        let e = Scenario::parse(&bad).unwrap_err().to_string();
        assert!(
            e.contains("network `demo-net` is not project `acme`'s"),
            "{e}"
        );
    }

    #[test]
    fn a_gateway_outside_its_subnet_is_refused() {
        let bad = DEMO.replace("gateway: 10.6.0.1", "gateway: 10.7.0.1");
        let e = Scenario::parse(&bad).unwrap_err().to_string();
        assert!(e.contains("gateway 10.7.0.1 is outside 10.6.0.0/24"), "{e}");
    }
}
