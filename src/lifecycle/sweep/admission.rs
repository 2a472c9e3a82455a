//! The sweeps' admission: a sweep acts on its cluster, not on named nodes, and on its
//! cluster's cloud with the cluster's credentials, which must both exist.

use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::cloud::Clients;
use crate::engine::admission::Refusal;
use crate::engine::request::JobRequest;
use crate::lifecycle::admission::cluster_os;
use crate::lifecycle::params::{Flag, HumanDuration, KindParams};

/// `orphan_sweep`'s own request fields.
#[derive(Debug, Deserialize, ToSchema)]
pub struct OrphanSweepParams {
    /// Only resources older than this are orphans (default 1h).
    #[schema(inline)]
    pub grace: Option<HumanDuration>,
    /// List orphans without deleting them.
    #[schema(inline)]
    pub dry_run: Option<Flag>,
}

impl KindParams for OrphanSweepParams {
    const FIELDS: &'static [&'static str] = &["grace", "dry_run"];
}

/// The one node task a sweep runs as. Stored rows name it, so it never changes.
pub(crate) const SWEEP_NODE: &str = "sweep";

/// A sweep acts on its cluster, not on named nodes: a request without `nodes` gets the one
/// task the engine runs it as; one that names them (`["sweep"]`, the older form) is kept.
pub(super) fn sweep_node(mut body: Value) -> Value {
    if let Some(obj) = body.as_object_mut()
        && !obj.contains_key("nodes")
    {
        obj.insert("nodes".into(), json!([SWEEP_NODE]));
    }
    body
}

/// The cluster and its OpenStack credentials exist.
pub(super) async fn admit(c: &Clients, req: &JobRequest) -> Result<(), Refusal> {
    cluster_os(c, &req.cluster).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::kind::JobKind;
    use crate::lifecycle::sweep::{OrphanSweep, RepairSweep};

    #[test]
    fn a_sweep_needs_no_node_list_and_the_older_form_still_works() {
        for kind in [&RepairSweep as &dyn JobKind, &OrphanSweep] {
            let name = kind.name();
            let bare = kind
                .prepare(json!({"kind": name, "cluster": "default/demo"}))
                .unwrap();
            assert_eq!(bare["nodes"], json!([SWEEP_NODE]), "{name}");
            let old = kind
                .prepare(json!({"kind": name, "cluster": "default/demo", "nodes": ["sweep"]}))
                .unwrap();
            assert_eq!(old["nodes"], json!(["sweep"]), "{name}");
        }
        // The kind's own fields still move into params.
        let b = OrphanSweep
            .prepare(json!({"kind": "orphan_sweep", "cluster": "default/demo", "grace": "0s"}))
            .unwrap();
        assert_eq!(b["params"]["grace"], "0s");
    }
}
