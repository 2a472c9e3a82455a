//! The simulated Kubernetes API servers: the management cluster (CAPI/CAPO/bootstrap CRDs,
//! Secrets, Namespaces, Nodes) at `/`, and each workload cluster (its Nodes) at
//! `/workload/{namespace}/{name}`, as the `<cluster>-kubeconfig` Secret points to it.
//!
//! Clients see the apiserver's protocol: JSON `Status` errors with the upstream reasons,
//! resourceVersions and conflicts, merge/JSON/apply patches, `/status` and `/scale`,
//! finalizers, garbage collection, NDJSON watches with bookmarks and 410 Gone, the
//! discovery documents, and for the custom resources upstream's CRD schemas (pruning,
//! defaults, validation, `fieldValidation`) and CAPI's and CAPO's admission webhooks.

mod http;
pub mod resources;
pub mod schema;
pub mod selector;
pub mod store;
mod webhooks;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

pub use http::router;
use store::Objects;

/// The management cluster's key in [`KubeWorld::clusters`].
pub const MANAGEMENT: &str = "";

/// Every simulated API server.
pub struct KubeWorld {
    /// `""` for the management cluster, `namespace/name` for workload clusters.
    pub clusters: Mutex<BTreeMap<String, Objects>>,
    /// Bearer token per cluster key.
    pub tokens: Mutex<BTreeMap<String, String>>,
    /// Injected API failures and watch drops.
    pub faults: Mutex<Faults>,
}

pub type Kube = Arc<KubeWorld>;

/// Kubernetes-side faults, set through `/sim/v1/faults`.
#[derive(Default)]
pub struct Faults {
    pub errors: Vec<ErrorFault>,
    /// Bumped to end every open watch (clients resume from their last version).
    pub watch_epoch: u64,
}

/// Answer requests with an error instead of serving them.
#[derive(Debug, Clone)]
pub struct ErrorFault {
    pub id: String,
    /// 409, 429, 500, …
    pub code: u16,
    /// Only these verbs (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`); all
    /// when empty.
    pub verbs: Vec<String>,
    /// Only these resources (plural names); all when empty.
    pub resources: Vec<String>,
    /// Chance per matching request, 0..=1.
    pub rate: f64,
    /// Stop after this many injected errors.
    pub remaining: Option<u32>,
}

impl KubeWorld {
    pub fn new() -> Kube {
        let mut clusters = BTreeMap::new();
        clusters.insert(MANAGEMENT.to_string(), Objects::default());
        let mut tokens = BTreeMap::new();
        tokens.insert(MANAGEMENT.to_string(), fresh_token());
        Arc::new(KubeWorld {
            clusters: Mutex::new(clusters),
            tokens: Mutex::new(tokens),
            faults: Mutex::new(Faults::default()),
        })
    }

    /// Adds a workload cluster's API server (idempotent); returns its bearer token.
    pub fn add_workload(&self, key: &str) -> String {
        self.clusters
            .lock()
            .unwrap()
            .entry(key.to_string())
            .or_default();
        self.tokens
            .lock()
            .unwrap()
            .entry(key.to_string())
            .or_insert_with(fresh_token)
            .clone()
    }

    pub fn token(&self, key: &str) -> Option<String> {
        self.tokens.lock().unwrap().get(key).cloned()
    }

    /// Compacts every API server's history (then resuming watches get 410 Gone).
    pub fn compact(&self) {
        for objects in self.clusters.lock().unwrap().values_mut() {
            objects.compact();
        }
    }

    /// Ends every open watch; clients resume from their last resourceVersion.
    pub fn drop_watches(&self) {
        self.faults.lock().unwrap().watch_epoch += 1;
        for objects in self.clusters.lock().unwrap().values() {
            objects.poke();
        }
    }
}

fn fresh_token() -> String {
    format!("sim-{}", uuid::Uuid::new_v4().simple())
}

/// A kubeconfig for one API server, as kubectl and kube-rs read it.
pub fn kubeconfig(server: &str, name: &str, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {name}\n  cluster:\n    server: {server}\nusers:\n- name: {name}-admin\n  user:\n    token: {token}\ncontexts:\n- name: {name}\n  context:\n    cluster: {name}\n    user: {name}-admin\n    namespace: default\ncurrent-context: {name}\n"
    )
}
