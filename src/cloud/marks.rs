//! What ties an OpenStack resource to a cluster: the marks Capstan puts on what it makes,
//! and the marks CAPO puts on what it makes for a cluster's Machines.
//!
//! Invariant (the scoping rule): a step touches an OpenStack resource only with proof that it
//! belongs to the job's cluster — its ID referenced by the cluster's objects (a Machine's
//! providerID), or one of the marks below. A name alone is never proof.

use serde_json::{Value, json};

use super::ClusterRef;

/// Server metadata keys Capstan sets (through the OpenStackMachine's `serverMetadata`, which
/// CAPO passes to Nova). Nova's schema allows only letters, digits and `-_:. ` in a key: a
/// `/` is a 400 for the whole server create (the lab's real Nova refused `capstan.io/cluster`).
pub const SERVER_CLUSTER_KEY: &str = "capstan.io:cluster";
pub const SERVER_JOB_KEY: &str = "capstan.io:job";

/// The `serverMetadata` of an OpenStackMachine Capstan creates.
pub fn server_metadata(cluster: &ClusterRef, job: &str) -> Value {
    json!([
        { "key": SERVER_CLUSTER_KEY, "value": cluster.mark() },
        { "key": SERVER_JOB_KEY, "value": job },
    ])
}

/// Whether a Nova server (as `GET /servers/detail` shows it) carries this cluster's mark.
pub fn server_is_marked(server: &Value, cluster: &ClusterRef) -> bool {
    server["metadata"][SERVER_CLUSTER_KEY].as_str() == Some(cluster.mark().as_str())
}

/// The description of a floating IP Capstan allocates for a node.
pub fn floating_ip_description(cluster: &ClusterRef, job: &str, node: &str) -> String {
    format!("capstan cluster {} job {job} node {node}", cluster.mark())
}

/// What a floating IP's description says, if Capstan wrote it: `(cluster, job, node)`.
pub fn read_floating_ip_description(desc: &str) -> Option<(ClusterRef, String, String)> {
    let rest = desc.strip_prefix("capstan cluster ")?;
    let (cluster, rest) = rest.split_once(" job ")?;
    let (job, node) = rest.split_once(" node ")?;
    Some((
        ClusterRef::parse(cluster).ok()?,
        job.to_string(),
        node.to_string(),
    ))
}

/// The description CAPO gives the ports it creates for a cluster's machines
/// (`Created by cluster-api-provider-openstack cluster <namespace>-<name>`).
pub fn capo_port_description(cluster: &ClusterRef) -> String {
    format!(
        "Created by cluster-api-provider-openstack cluster {}-{}",
        cluster.ns, cluster.name
    )
}

/// Whether a volume's description is CAPO's for node `node` (root or additional device).
pub fn capo_volume_described_for(volume: &Value, node: &str) -> bool {
    let d = volume["description"].as_str().unwrap_or_default();
    d == format!("Root volume for {node}") || d == format!("Additional block device for {node}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acme() -> ClusterRef {
        ClusterRef::parse("acme/prod").unwrap()
    }

    #[test]
    fn a_floating_ip_description_reads_back_and_others_do_not() {
        let d = floating_ip_description(&acme(), "j-1", "w-1");
        assert_eq!(d, "capstan cluster acme/prod job j-1 node w-1");
        let (c, j, n) = read_floating_ip_description(&d).unwrap();
        assert_eq!((c, j.as_str(), n.as_str()), (acme(), "j-1", "w-1"));
        assert!(read_floating_ip_description("capstan job j-1 node w-1").is_none());
        assert!(read_floating_ip_description("made by hand").is_none());
    }

    #[test]
    fn a_server_is_marked_only_for_its_own_cluster() {
        let s = json!({"metadata": {"capstan.io:cluster": "acme/prod"}});
        assert!(server_is_marked(&s, &acme()));
        assert!(!server_is_marked(
            &s,
            &ClusterRef::parse("default/demo").unwrap()
        ));
        assert!(!server_is_marked(&json!({"name": "w-1"}), &acme()));
    }
}
