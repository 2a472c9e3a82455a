//! The management cluster without `--kubeconfig`: `KUBECONFIG` is honoured the way kubectl
//! honours it, and in a pod (`KUBERNETES_SERVICE_HOST`/`_PORT` set) the service account is
//! used, or its absence named.

use std::path::Path;

use crate::common::TOKEN;
use crate::common::api::Api;
use crate::common::process::{Process, SERVE_LISTENING, Sim, refuses};
use crate::serve;

#[tokio::test]
async fn without_the_flag_serve_works_on_the_cluster_kubeconfig_names_and_says_where_it_came_from()
{
    let sim = Sim::start(60, None, &[]);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    let mut cmd = serve(dir.path());
    cmd.env("KUBECONFIG", &sim.kubeconfig);
    let (_server, url) = Process::start_logged(cmd, SERVE_LISTENING, &log);

    let api = Api::new(&url, TOKEN, None);
    let nodes = api.get("/v1/clusters/default/demo/nodes").await;
    assert!(
        nodes.is_some_and(|n| n["nodes"].as_array().is_some_and(|a| !a.is_empty())),
        "the demo cluster's nodes are read through the KUBECONFIG cluster"
    );
    let logged = std::fs::read_to_string(&log).unwrap();
    let line = logged
        .lines()
        .find(|l| l.contains("the management cluster's API server"))
        .unwrap_or_else(|| panic!("no line names the source: {logged}"));
    assert!(
        line.contains(&format!("KUBECONFIG={}", sim.kubeconfig.display())),
        "{line}"
    );
    assert!(!line.contains("token"), "{line}");
}

#[test]
fn in_a_pod_without_a_service_account_serve_refuses_and_names_what_is_missing() {
    if Path::new(capstan::cloud::kube_source::SERVICE_ACCOUNT_DIR).exists() {
        eprintln!("skipped: these tests run in a pod with a service account mounted");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = serve(dir.path());
    cmd.env("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        .env("KUBERNETES_SERVICE_PORT", "6443");
    let err = refuses(cmd);
    assert!(
        err.contains("in-cluster service account")
            && err.contains(capstan::cloud::kube_source::SERVICE_ACCOUNT_DIR)
            && err.contains("--kubeconfig"),
        "{err}"
    );
}

#[test]
fn a_fallback_clouds_yaml_without_any_management_cluster_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = serve(dir.path());
    cmd.arg("--clouds-yaml").arg(dir.path().join("clouds.yaml"));
    let err = refuses(cmd);
    assert!(
        err.contains("--clouds-yaml needs a management cluster"),
        "{err}"
    );
}
