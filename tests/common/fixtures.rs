//! What the tests submit and whom they act as: the admin token, the two tenants of
//! examples/config.yaml and their members' tokens, and the workers of the demo cluster.

use serde_json::{Value, json};

/// The admin token of every `capstan serve` a World starts.
pub const TOKEN: &str = "scale-out-test-token";

/// Two tenants as examples/config.yaml has them: `demo` owns namespace `default`, `acme`
/// owns `acme` (the simulator's second project and cluster `acme/prod`).
pub const TENANTS: &str = "tenants:
  demo: {namespaces: [default]}
  acme: {namespaces: [acme]}
tokens:
  - {name: alice, role: member, tenant: demo, token: alice-token-0001}
  - {name: bob, role: member, tenant: demo, token: bob-token-00001}
  - {name: dana, role: tenant_admin, tenant: demo, token: dana-token-0001}
  - {name: eve, role: member, tenant: acme, token: eve-token-00001}
  - {name: ada, role: tenant_admin, tenant: acme, token: ada-token-00001}
";

/// The tokens of `TENANTS`' members.
pub const ALICE: &str = "alice-token-0001";
pub const BOB: &str = "bob-token-00001";
pub const DANA: &str = "dana-token-0001";
pub const EVE: &str = "eve-token-00001";
pub const ADA: &str = "ada-token-00001";

/// Worker `i` on the simulator: `demo-w-NN`, pinned to a host by `i`, fixed IP
/// `10.6.0.(20+i)`, floating IP, a data volume, role ingress, label team=edge.
pub fn node(i: usize) -> Value {
    let (az, host) = match i % 4 {
        0 => ("az1", "compute-1"),
        1 => ("az1", "compute-2"),
        2 => ("az2", "compute-3"),
        _ => ("az2", "compute-4"),
    };
    json!({
        "name": format!("demo-w-{i:02}"), "availability_zone": az, "host": host,
        "ip": format!("10.6.0.{}", 20 + i), "floating_ip": true,
        "data_volumes": [{"name": "data", "size_gib": 10, "type": "hdd"}],
        "roles": ["ingress"], "labels": {"team": "edge"},
    })
}

pub fn request(nodes: Vec<Value>) -> Value {
    json!({
        "kind": "scale_out", "cluster": "default/demo",
        "defaults": {"flavor": "k8s.small", "image": "ubuntu-2204-kube-v1.30",
                     "network": "demo-net", "subnet": "demo-subnet",
                     "root_volume": {"size_gib": 20, "type": "ssd"}},
        "nodes": nodes,
    })
}

pub fn by_name<'a>(list: &'a Value, name: &str) -> Vec<&'a Value> {
    list.as_array()
        .unwrap()
        .iter()
        .filter(|x| x["name"] == name)
        .collect()
}

pub fn name_of(n: &Value) -> &str {
    n["name"].as_str().unwrap()
}
