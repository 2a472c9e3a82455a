//! Quota headroom as the tenant's credentials see it: Nova limits, Cinder quota sets with
//! usage, Neutron quota details. `-1` means unlimited.

use serde::Serialize;
use serde_json::Value;

use super::spec::NodeSpec;
use crate::cloud::os::{CallError, OpenStack, Service};

/// One quota: what is allowed and what is used.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Item {
    pub resource: &'static str,
    pub limit: i64,
    pub used: i64,
}

/// The project's quotas, in the order DESIGN §3 lists them.
#[derive(Debug, Clone, Serialize)]
pub struct Usage {
    pub items: Vec<Item>,
}

/// What nodes need, per resource.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Need {
    pub instances: i64,
    pub cores: i64,
    pub ram: i64,
    pub volumes: i64,
    pub gigabytes: i64,
    pub port: i64,
    pub floatingip: i64,
}

impl Need {
    /// One node's needs; the flavor's size is read from Nova.
    pub async fn of(os: &OpenStack, spec: &NodeSpec) -> Result<Need, CallError> {
        let flavors = os
            .get(Service::Compute, &["flavors", "detail"], &[])
            .await?;
        let flavor = flavors["flavors"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|f| f["name"] == spec.flavor.as_str() || f["id"] == spec.flavor.as_str());
        Ok(Need::with_flavor(spec, flavor))
    }

    pub fn with_flavor(spec: &NodeSpec, flavor: Option<&Value>) -> Need {
        let cores = flavor.and_then(|f| f["vcpus"].as_i64()).unwrap_or(0);
        let ram = flavor.and_then(|f| f["ram"].as_i64()).unwrap_or(0);
        let mut volumes = spec.data_volumes.len() as i64;
        let mut gigabytes: i64 = spec.data_volumes.iter().map(|d| d.size_gib as i64).sum();
        if let Some(r) = &spec.root_volume {
            volumes += 1;
            gigabytes += r.size_gib as i64;
        }
        Need {
            instances: 1,
            cores,
            ram,
            volumes,
            gigabytes,
            port: 1,
            floatingip: i64::from(!spec.floating_ip.is_none()),
        }
    }

    pub fn add(&mut self, o: &Need) {
        self.instances += o.instances;
        self.cores += o.cores;
        self.ram += o.ram;
        self.volumes += o.volumes;
        self.gigabytes += o.gigabytes;
        self.port += o.port;
        self.floatingip += o.floatingip;
    }

    fn get(&self, resource: &str) -> i64 {
        match resource {
            "instances" => self.instances,
            "cores" => self.cores,
            "ram" => self.ram,
            "volumes" => self.volumes,
            "gigabytes" => self.gigabytes,
            "port" => self.port,
            "floatingip" => self.floatingip,
            _ => 0,
        }
    }
}

impl Usage {
    /// What is short for `need`, worded for operators: `cores: need 8, free 4 (196 of 200 used)`.
    pub fn short_for(&self, need: &Need) -> Vec<String> {
        self.items
            .iter()
            .filter(|i| i.limit >= 0)
            .filter_map(|i| {
                let n = need.get(i.resource);
                let free = (i.limit - i.used).max(0);
                (n > free).then(|| {
                    format!(
                        "{}: need {n}, free {free} ({} of {} used)",
                        i.resource, i.used, i.limit
                    )
                })
            })
            .collect()
    }
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

/// Reads the project's limits and usage from the three services.
pub async fn read(os: &OpenStack) -> Result<Usage, CallError> {
    let limits = os.get(Service::Compute, &["limits"], &[]).await?;
    let a = &limits["limits"]["absolute"];
    let cinder = os
        .get(
            Service::BlockStorage,
            &["os-quota-sets", &os.project_id],
            &[("usage", "true")],
        )
        .await?;
    let q = &cinder["quota_set"];
    let neutron = os
        .get(
            Service::Network,
            &["quotas", &os.project_id, "details"],
            &[],
        )
        .await?;
    let n = &neutron["quota"];
    let item = |resource, limit: &Value, used: &Value| Item {
        resource,
        limit: int(limit),
        used: int(used),
    };
    Ok(Usage {
        items: vec![
            item(
                "instances",
                &a["maxTotalInstances"],
                &a["totalInstancesUsed"],
            ),
            item("cores", &a["maxTotalCores"], &a["totalCoresUsed"]),
            item("ram", &a["maxTotalRAMSize"], &a["totalRAMUsed"]),
            item("volumes", &q["volumes"]["limit"], &q["volumes"]["in_use"]),
            item(
                "gigabytes",
                &q["gigabytes"]["limit"],
                &q["gigabytes"]["in_use"],
            ),
            item("port", &n["port"]["limit"], &n["port"]["used"]),
            item(
                "floatingip",
                &n["floatingip"]["limit"],
                &n["floatingip"]["used"],
            ),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_each_resource_that_does_not_fit() {
        let usage = Usage {
            items: vec![
                Item {
                    resource: "instances",
                    limit: 10,
                    used: 4,
                },
                Item {
                    resource: "cores",
                    limit: 40,
                    used: 36,
                },
                Item {
                    resource: "port",
                    limit: -1,
                    used: 500,
                },
            ],
        };
        let need = Need {
            instances: 6,
            cores: 8,
            port: 6,
            ..Need::default()
        };
        assert_eq!(
            usage.short_for(&need),
            vec!["cores: need 8, free 4 (36 of 40 used)".to_string()]
        );
        let need = Need {
            instances: 7,
            ..Need::default()
        };
        assert_eq!(
            usage.short_for(&need),
            vec!["instances: need 7, free 6 (4 of 10 used)".to_string()]
        );
    }
}
