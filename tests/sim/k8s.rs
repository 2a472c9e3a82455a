//! The simulated management cluster through kube-rs (and a raw HTTP watch): the demo
//! cluster's objects, watches (ordered events, bookmarks, 410 → relist), conflicts, patches,
//! finalizers, garbage collection, and the CAPI/CAPO behaviours Capstan must live with.

use std::time::Duration;

use futures_util::StreamExt;
use kube::Client;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch};
use kube::api::{PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::{Value, json};

use super::common::api::poll;
use super::{Sim, kube_client, raw_token, start_sim};

pub(super) fn resource(group: &str, version: &str, kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind))
}

fn capi(client: &Client, kind: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        "default",
        &resource("cluster.x-k8s.io", "v1beta1", kind),
    )
}

/// A CAPI kind in another namespace than the demo cluster's.
pub(super) fn capi_in(client: &Client, namespace: &str, kind: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        namespace,
        &resource("cluster.x-k8s.io", "v1beta1", kind),
    )
}

fn capo(client: &Client, version: &str, kind: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        "default",
        &resource("infrastructure.cluster.x-k8s.io", version, kind),
    )
}

pub(super) fn json_of(o: &DynamicObject) -> Value {
    serde_json::to_value(o).unwrap()
}

/// Polls `check` until it yields a value; the bound only keeps a broken run from hanging.
pub(super) async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let seen = poll(600, Duration::from_millis(50), check).await;
    seen.unwrap_or_else(|| panic!("never happened: {what}"))
}

async fn workload_client(sim: &Sim, client: &Client) -> Client {
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), "default");
    let secret = secrets.get("demo-kubeconfig").await.unwrap();
    let text = secret.data.unwrap()["value"].0.clone();
    let path = sim.kubeconfig.with_file_name("workload.kubeconfig");
    std::fs::write(&path, text).unwrap();
    kube_client(&path).await
}

async fn sim_state(sim: &Sim) -> Value {
    sim.console().state("").await
}

async fn add_fault(sim: &Sim, fault: Value) -> String {
    sim.console().fault(&fault).await
}

#[tokio::test]
async fn kube_rs_reads_the_demo_cluster_and_its_workload_nodes_through_the_kubeconfigs() {
    let sim = start_sim();
    let client = kube_client(&sim.kubeconfig).await;
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.major, "1");
    let discovery = kube::Discovery::new(client.clone()).run().await.unwrap();
    let kinds: Vec<String> = discovery
        .groups()
        .flat_map(|g| g.recommended_resources())
        .map(|(r, _)| r.kind)
        .collect();
    let kinds: Vec<String> = discovery
        .groups()
        .flat_map(|g| {
            g.versions()
                .flat_map(|v| g.versioned_resources(v))
                .collect::<Vec<_>>()
        })
        .map(|(r, _)| r.kind)
        .chain(kinds)
        .collect();
    for k in [
        "Machine",
        "MachineSet",
        "OpenStackMachine",
        "OpenStackServer",
        "Secret",
    ] {
        assert!(kinds.iter().any(|x| x == k), "{k} in {kinds:?}");
    }
    let cluster = capi(&client, "Cluster").get("demo").await.unwrap();
    assert_eq!(
        json_of(&cluster)["spec"]["infrastructureRef"]["kind"],
        "OpenStackCluster"
    );
    let machines = capi(&client, "Machine")
        .list(&Default::default())
        .await
        .unwrap();
    let mut names: Vec<String> = machines
        .items
        .iter()
        .map(|m| m.metadata.name.clone().unwrap())
        .collect();
    names.sort();
    assert_eq!(names.len(), 3);
    for (m, n) in machines.items.iter().zip(&names) {
        let suffix = n.strip_prefix("demo-md-0-").expect("named after the set");
        assert_eq!(suffix.len(), 5);
        assert_eq!(json_of(m)["status"]["phase"], "Running", "{n}");
    }
    // The workload cluster, through the kubeconfig Secret CAPI writes.
    let workload = workload_client(&sim, &client).await;
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(workload);
    let mut node_names: Vec<String> = nodes
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|n| n.metadata.name.unwrap())
        .collect();
    node_names.sort();
    assert_eq!(node_names, names);
    // And the servers behind them, in Nova.
    let state = sim_state(&sim).await;
    let servers: Vec<&str> = state["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    for n in &names {
        assert!(servers.contains(&n.as_str()), "{n} in {servers:?}");
    }
}

#[tokio::test]
async fn watches_deliver_ordered_events_bookmarks_and_relist_after_410() {
    let sim = start_sim();
    let client = kube_client(&sim.kubeconfig).await;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), "watched");
    let secret = |name: &str| {
        serde_json::from_value(json!({"metadata": {"name": name}, "stringData": {"k": "v"}}))
            .unwrap()
    };
    secrets
        .create(&PostParams::default(), &secret("a"))
        .await
        .unwrap();
    let mut stream = watcher(secrets.clone(), watcher::Config::default()).boxed();
    let mut seen = Vec::new();
    let mut next = async || -> String {
        let Ok(ev) = tokio::time::timeout(Duration::from_secs(10), stream.next()).await else {
            return "Timeout".into();
        };
        let ev = ev.unwrap();
        match ev {
            Ok(watcher::Event::Init) => "Init".into(),
            Ok(watcher::Event::InitApply(s)) => format!("InitApply({})", s.metadata.name.unwrap()),
            Ok(watcher::Event::InitDone) => "InitDone".into(),
            Ok(watcher::Event::Apply(s)) => format!("Apply({})", s.metadata.name.unwrap()),
            Ok(watcher::Event::Delete(s)) => format!("Delete({})", s.metadata.name.unwrap()),
            Err(watcher::Error::WatchError(s)) => format!("Error({})", s.code),
            Err(e) => format!("Err({e})"),
        }
    };
    for _ in 0..3 {
        seen.push(next().await);
    }
    assert_eq!(seen, ["Init", "InitApply(a)", "InitDone"]);
    secrets
        .create(&PostParams::default(), &secret("b"))
        .await
        .unwrap();
    secrets
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "1"}}})),
        )
        .await
        .unwrap();
    secrets.delete("b", &DeleteParams::default()).await.unwrap();
    for _ in 0..3 {
        seen.push(next().await);
    }
    // Compaction, then a dropped watch: the watcher resumes from a version that is gone,
    // gets 410 in the stream and lists again.
    add_fault(&sim, json!({"kind": "compact"})).await;
    secrets
        .create(&PostParams::default(), &secret("c"))
        .await
        .unwrap();
    add_fault(&sim, json!({"kind": "compact"})).await;
    add_fault(&sim, json!({"kind": "drop_watches"})).await;
    loop {
        let ev = next().await;
        let done = ev == "InitDone" || ev == "Timeout";
        seen.push(ev);
        if done {
            break;
        }
    }
    let tail: Vec<&str> = seen.iter().map(String::as_str).collect();
    assert_eq!(
        tail[..6],
        [
            "Init",
            "InitApply(a)",
            "InitDone",
            "Apply(b)",
            "Apply(a)",
            "Delete(b)"
        ]
    );
    let after: Vec<&str> = tail[6..]
        .iter()
        .copied()
        .filter(|e| *e != "Apply(c)")
        .collect();
    assert_eq!(
        after,
        [
            "Error(410)",
            "Init",
            "InitApply(a)",
            "InitApply(c)",
            "InitDone"
        ],
        "{tail:?}"
    );

    // A raw watch: bookmarks carry the version, and the stream ends at timeoutSeconds.
    let token = std::fs::read_to_string(&sim.kubeconfig)
        .unwrap()
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: ").map(str::to_string))
        .unwrap();
    let body = reqwest::Client::new()
        .get(format!(
            "{}/api/v1/namespaces/watched/secrets?watch=true&allowWatchBookmarks=true&timeoutSeconds=1&resourceVersion=0",
            sim.url
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let types: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["ADDED", "ADDED", "BOOKMARK"], "{body}");
    assert!(
        lines[2]["object"]["metadata"]["resourceVersion"]
            .as_str()
            .is_some_and(|rv| rv.parse::<u64>().is_ok())
    );
}

#[tokio::test]
async fn conflicts_patches_status_finalizers_and_garbage_collection_work_as_upstream() {
    let sim = start_sim();
    let client = kube_client(&sim.kubeconfig).await;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), "default");
    let owner = secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "owner"}})).unwrap(),
        )
        .await
        .unwrap();
    // A stale resourceVersion is a 409 Conflict.
    let mut stale = owner.clone();
    secrets
        .patch(
            "owner",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"v": "2"}}})),
        )
        .await
        .unwrap();
    stale.metadata.labels = Some([("v".to_string(), "3".to_string())].into());
    match secrets
        .replace("owner", &PostParams::default(), &stale)
        .await
    {
        Err(kube::Error::Api(s)) => assert!(s.is_conflict(), "{s:?}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    // Creating an existing name is AlreadyExists.
    match secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "owner"}})).unwrap(),
        )
        .await
    {
        Err(kube::Error::Api(s)) => assert!(s.is_already_exists(), "{s:?}"),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    // Server-side apply creates and then merges.
    let applied = secrets
        .patch(
            "applied",
            &PatchParams::apply("capstan-test"),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "applied", "labels": {"a": "1"}}})),
        )
        .await
        .unwrap();
    assert_eq!(applied.metadata.labels.unwrap()["a"], "1");
    // A dependent goes when its owner goes.
    let dependent = json!({"metadata": {"name": "dependent", "ownerReferences": [{
        "apiVersion": "v1", "kind": "Secret", "name": "owner", "uid": owner.metadata.uid.clone().unwrap()}]}});
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(dependent).unwrap(),
        )
        .await
        .unwrap();
    // A finalizer added the way kube-runtime's helper does (test-null quirk) holds deletion.
    secrets
        .patch(
            "owner",
            &PatchParams::default(),
            &Patch::Json::<()>(
                serde_json::from_value(json!([
                    {"op": "test", "path": "/metadata/finalizers", "value": null},
                    {"op": "add", "path": "/metadata/finalizers", "value": ["capstan.io/test"]}
                ]))
                .unwrap(),
            ),
        )
        .await
        .unwrap();
    let deleting = secrets
        .delete("owner", &DeleteParams::default())
        .await
        .unwrap();
    let held = deleting.left().expect("still there, being deleted");
    assert!(held.metadata.deletion_timestamp.is_some());
    assert!(secrets.get_opt("dependent").await.unwrap().is_some());
    secrets
        .patch(
            "owner",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    assert!(secrets.get_opt("owner").await.unwrap().is_none());
    assert!(secrets.get_opt("dependent").await.unwrap().is_none());

    // The status subresource: spec writes keep status, status writes keep spec.
    let machines = capi(&client, "Machine");
    let name = machines.list(&Default::default()).await.unwrap().items[0]
        .metadata
        .name
        .clone()
        .unwrap();
    let before = json_of(&machines.get(&name).await.unwrap());
    let after = machines
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Failed"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        json_of(&after)["status"]["phase"],
        before["status"]["phase"]
    );
    assert_eq!(
        json_of(&after)["metadata"]["resourceVersion"],
        before["metadata"]["resourceVersion"],
        "a no-op write makes no new version"
    );
}

fn standalone_machine(
    name: &str,
    failure_domain: &str,
    data_secret: Option<&str>,
) -> (Value, Value) {
    let mut bootstrap = json!({});
    if let Some(s) = data_secret {
        bootstrap["dataSecretName"] = json!(s);
    } else {
        bootstrap["configRef"] = json!({"apiVersion": "bootstrap.cluster.x-k8s.io/v1beta1",
            "kind": "KubeadmConfig", "name": name, "namespace": "default"});
    }
    let machine = json!({
        "apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "Machine",
        "metadata": {"name": name, "namespace": "default", "labels": {"cluster.x-k8s.io/cluster-name": "demo"}},
        "spec": {"clusterName": "demo", "version": "v1.30.4", "bootstrap": bootstrap,
            "failureDomain": failure_domain,
            "infrastructureRef": {"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1",
                "kind": "OpenStackMachine", "name": name, "namespace": "default"}},
    });
    let osm = json!({
        "apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1", "kind": "OpenStackMachine",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"flavor": "k8s.small", "image": {"filter": {"name": "ubuntu-2204-kube-v1.30"}},
            "identityRef": {"name": "demo-cloud-config", "cloudName": "openstack"},
            "ports": [{"network": {"filter": {"name": "demo-net"}},
                "fixedIPs": [{"subnet": {"filter": {"name": "demo-subnet"}}, "ipAddress": "10.6.0.50"}]}],
            "rootVolume": {"sizeGiB": 20, "type": "ssd"},
            "additionalBlockDevices": [{"name": "data", "sizeGiB": 10,
                "storage": {"type": "Volume", "volume": {"type": "hdd"}}}]},
    });
    (machine, osm)
}

async fn create_pair(client: &Client, machine: Value, osm: Value) {
    capo(client, "v1beta1", "OpenStackMachine")
        .create(
            &PostParams::default(),
            &serde_json::from_value(osm).unwrap(),
        )
        .await
        .unwrap();
    capi(client, "Machine")
        .create(
            &PostParams::default(),
            &serde_json::from_value(machine).unwrap(),
        )
        .await
        .unwrap();
}

async fn phase(client: &Client, name: &str) -> Option<String> {
    let m = capi(client, "Machine").get_opt(name).await.unwrap()?;
    json_of(&m)["status"]["phase"].as_str().map(str::to_string)
}

#[tokio::test]
async fn a_machine_with_a_data_secret_skips_bootstrap_and_delete_removes_what_capo_made() {
    let sim = start_sim();
    let client = kube_client(&sim.kubeconfig).await;
    let (machine, osm) = standalone_machine("demo-w-01", "az1:compute-2", Some("demo-bootstrap"));
    create_pair(&client, machine, osm).await;
    eventually("demo-w-01 Running", || async {
        (phase(&client, "demo-w-01").await.as_deref() == Some("Running")).then_some(())
    })
    .await;
    let m = json_of(&capi(&client, "Machine").get("demo-w-01").await.unwrap());
    let bootstrap = m["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "BootstrapReady")
        .unwrap();
    assert_eq!(bootstrap["reason"], "DataSecretProvided");
    assert_eq!(m["status"]["nodeRef"]["name"], "demo-w-01");
    let state = sim_state(&sim).await;
    let server = state["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "demo-w-01")
        .unwrap()
        .clone();
    assert_eq!(server["host"], "compute-2");
    let port = state["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "demo-w-01-0")
        .unwrap();
    assert_eq!(port["fixed_ips"][0]["ip_address"], "10.6.0.50");
    let mut volumes: Vec<(String, i64, String)> = state["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["name"].as_str().unwrap().starts_with("demo-w-01-"))
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_string(),
                v["size"].as_i64().unwrap(),
                v["volume_type"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    volumes.sort();
    assert_eq!(
        volumes,
        [
            ("demo-w-01-data".to_string(), 10, "hdd".to_string()),
            ("demo-w-01-root".to_string(), 20, "ssd".to_string())
        ]
    );
    // Deleting the Machine removes server, volumes and ports.
    capi(&client, "Machine")
        .delete("demo-w-01", &DeleteParams::default())
        .await
        .unwrap();
    eventually("demo-w-01 gone with all it had", || async {
        let gone = capi(&client, "Machine")
            .get_opt("demo-w-01")
            .await
            .unwrap()
            .is_none();
        let s = sim_state(&sim).await;
        let left = ["servers", "ports", "volumes"].iter().any(|k| {
            s[*k]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x["name"].as_str().unwrap_or("").starts_with("demo-w-01"))
        });
        (gone && !left).then_some(())
    })
    .await;
}

#[tokio::test]
async fn without_bootstrap_data_capo_waits_and_a_quota_refusal_shows_on_the_openstackserver() {
    let sim = start_sim();
    let client = kube_client(&sim.kubeconfig).await;
    // The control plane is not initialised, so kubeadm never writes the data Secret.
    let (machine, mut osm) = standalone_machine("demo-w-02", "az1", None);
    osm["spec"]["ports"][0]["fixedIPs"][0]["ipAddress"] = json!("10.6.0.51");
    create_pair(&client, machine, osm).await;
    let reason = eventually("CAPO waits for bootstrap data", || async {
        let o = capo(&client, "v1beta1", "OpenStackMachine")
            .get("demo-w-02")
            .await
            .ok()?;
        let o = json_of(&o);
        let c = o["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "InstanceReady")?
            .clone();
        c["reason"].as_str().map(str::to_string)
    })
    .await;
    assert_eq!(reason, "WaitingForBootstrapData");
    assert_eq!(
        phase(&client, "demo-w-02").await.as_deref(),
        Some("Pending")
    );

    // The project is at its instance quota: Nova refuses at once, CAPO says so on the
    // OpenStackServer in gophercloud's words.
    sim.console().quota("demo", &json!({"instances": 3})).await;
    let (machine, osm) = standalone_machine("demo-w-03", "az1", Some("demo-bootstrap"));
    create_pair(&client, machine, osm).await;
    let message = eventually("the quota refusal", || async {
        let o = capo(&client, "v1alpha1", "OpenStackServer")
            .get("demo-w-03")
            .await
            .ok()?;
        let o = json_of(&o);
        let c = o["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["reason"] == "InstanceCreateFailed")?
            .clone();
        c["message"].as_str().map(str::to_string)
    })
    .await;
    assert!(
        message.starts_with("error creating Openstack instance: Expected HTTP response code [202] when accessing [POST http://"),
        "{message}"
    );
    assert!(
        message.contains("/compute/v2.1/servers], but got 403 instead: {\"forbidden\":{\"code\":403,\"message\":\"Quota exceeded for instances: Requested 1, but already used 3 of 3 instances\"}}"),
        "{message}"
    );
    assert_eq!(
        phase(&client, "demo-w-03").await.as_deref(),
        Some("Provisioning")
    );
}

#[tokio::test]
async fn a_server_that_fails_while_building_is_not_surfaced_like_capo_3375() {
    let sim = start_sim();
    let client = kube_client(&sim.kubeconfig).await;
    add_fault(
        &sim,
        json!({"kind": "no_valid_host", "availability_zone": "az2"}),
    )
    .await;
    let (machine, mut osm) = standalone_machine("demo-w-04", "az2", Some("demo-bootstrap"));
    osm["spec"]["ports"][0]["fixedIPs"][0]["ipAddress"] = json!("10.6.0.52");
    create_pair(&client, machine, osm).await;
    // Nova has the fault...
    let (token, _) = raw_token(&sim).await;
    let compute = format!("{}/compute/v2.1", sim.url);
    let fault = eventually("the server's fault", || async {
        let s = sim_state(&sim).await;
        let server = s["servers"]
            .as_array()?
            .iter()
            .find(|x| x["name"] == "demo-w-04")?
            .clone();
        (server["status"] == "ERROR").then_some(())?;
        let v: Value = reqwest::Client::new()
            .get(format!("{compute}/servers/{}", server["id"].as_str()?))
            .header("X-Auth-Token", &token)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        v["server"]["fault"]["message"].as_str().map(str::to_string)
    })
    .await;
    assert_eq!(fault, "No valid host was found. ");
    // ...CAPO's OpenStackServer says ERROR with reason InstanceStateError and no message
    // (upstream's openstackserver_controller), and nothing more...
    let oss_api = capo(&client, "v1alpha1", "OpenStackServer");
    let oss = eventually("the OpenStackServer in ERROR", || async {
        let o = json_of(&oss_api.get("demo-w-04").await.ok()?);
        (o["status"]["instanceState"] == "ERROR").then_some(o)
    })
    .await;
    let ready = oss["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "InstanceReady")
        .unwrap()
        .clone();
    assert_eq!(ready["status"], "False", "{oss:#}");
    assert_eq!(ready["reason"], "InstanceStateError");
    assert!(
        ready["message"].as_str().unwrap_or("").is_empty(),
        "{ready}"
    );
    // ...and CAPI never says it: the Machine stays Provisioning, with no failure, and the
    // OpenStackMachine (whose server is not ready) carries none either.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let m = json_of(&capi(&client, "Machine").get("demo-w-04").await.unwrap());
        assert_eq!(m["status"]["phase"], "Provisioning");
        assert!(m["status"]["failureReason"].is_null());
        let osm = json_of(
            &capo(&client, "v1beta1", "OpenStackMachine")
                .get("demo-w-04")
                .await
                .unwrap(),
        );
        assert!(osm["status"]["failureReason"].is_null(), "{osm:#}");
    }
}

#[tokio::test]
async fn a_machine_set_deletes_the_annotated_machine_first_then_by_its_policy() {
    let sim = start_sim();
    let client = kube_client(&sim.kubeconfig).await;
    let sets = capi(&client, "MachineSet");
    let machines = capi(&client, "Machine");
    let originals: Vec<String> = machines
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|m| m.metadata.name.clone().unwrap())
        .collect();
    // Two more, created after the originals.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    sets.patch(
        "demo-md-0",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 5}})),
    )
    .await
    .unwrap();
    let all: Vec<String> = eventually("5 Running", || async {
        let items = machines.list(&Default::default()).await.ok()?.items;
        let running = items
            .iter()
            .filter(|m| json_of(m)["status"]["phase"] == "Running")
            .count();
        (running == 5).then(|| {
            items
                .iter()
                .map(|m| m.metadata.name.clone().unwrap())
                .collect()
        })
    })
    .await;
    let newer: Vec<&String> = all.iter().filter(|n| !originals.contains(n)).collect();
    assert_eq!(newer.len(), 2);
    // The policy is Oldest, but an annotated (newest) Machine goes first.
    machines
        .patch(
            newer[0],
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"cluster.x-k8s.io/delete-machine": "yes"}}}),
            ),
        )
        .await
        .unwrap();
    sets.patch(
        "demo-md-0",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 4}})),
    )
    .await
    .unwrap();
    eventually("the annotated one gone", || async {
        machines
            .get_opt(newer[0])
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    // Without an annotation, Oldest takes one of the originals, not the newer one.
    sets.patch(
        "demo-md-0",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 3}})),
    )
    .await
    .unwrap();
    let left: Vec<String> = eventually("3 left", || async {
        let items = machines.list(&Default::default()).await.ok()?.items;
        (items.len() == 3).then(|| {
            items
                .iter()
                .map(|m| m.metadata.name.clone().unwrap())
                .collect()
        })
    })
    .await;
    assert!(left.contains(newer[1]), "{left:?}");
    assert_eq!(left.iter().filter(|n| originals.contains(n)).count(), 2);
}

#[tokio::test]
async fn a_machine_set_adopts_matching_orphans_and_never_a_machine_that_does_not_match() {
    let sim = start_sim();
    let client = kube_client(&sim.kubeconfig).await;
    let machines = capi(&client, "Machine");
    // One Machine carrying the set's labels and one that only names the cluster (what
    // Capstan's standalone Machines carry).
    for (name, labels) in [
        (
            "stray-1",
            json!({"cluster.x-k8s.io/cluster-name": "demo", "cluster.x-k8s.io/set-name": "demo-md-0",
            "cluster.x-k8s.io/deployment-name": "demo-md-0"}),
        ),
        (
            "standalone-1",
            json!({"cluster.x-k8s.io/cluster-name": "demo"}),
        ),
    ] {
        let (mut machine, mut osm) = standalone_machine(name, "az1", Some("demo-bootstrap"));
        machine["metadata"]["labels"] = labels;
        osm["spec"]["ports"][0]["fixedIPs"][0]["ipAddress"] = json!(if name == "stray-1" {
            "10.6.0.61"
        } else {
            "10.6.0.62"
        });
        create_pair(&client, machine, osm).await;
    }
    let owner = |m: &Value| -> Option<String> {
        m["metadata"]["ownerReferences"]
            .as_array()?
            .iter()
            .find(|r| r["controller"] == true)
            .and_then(|r| r["name"].as_str().map(str::to_string))
    };
    // Adopted, it counts: the set has one more than its replicas and deletes one — the
    // stray itself, having no nodeRef yet (unhealthy goes first).
    eventually("the stray adopted, then deleted by its set", || async {
        match machines.get_opt("stray-1").await.ok()? {
            None => Some(()),
            Some(m) => {
                let m = json_of(&m);
                (owner(&m).as_deref() == Some("demo-md-0")
                    && m["metadata"]["deletionTimestamp"].is_string())
                .then_some(())
            }
        }
    })
    .await;
    let standalone = json_of(&machines.get("standalone-1").await.unwrap());
    assert_eq!(owner(&standalone), None, "{standalone:#}");
}

/// The Machines a set made: `<set>-<5 random>`.
async fn machines_of(machines: &Api<DynamicObject>, set: &str) -> Option<Vec<Value>> {
    let items = machines.list(&Default::default()).await.ok()?.items;
    Some(
        items
            .iter()
            .map(json_of)
            .filter(|m| {
                let n = m["metadata"]["name"].as_str().unwrap_or_default();
                n.len() == set.len() + 6 && n.starts_with(&format!("{set}-"))
            })
            .collect(),
    )
}

#[tokio::test]
async fn a_machine_deployment_scales_through_its_one_machine_set_and_takes_it_along_when_deleted() {
    let sim = start_sim();
    let client = kube_client(&sim.kubeconfig).await;
    let deployments = capi(&client, "MachineDeployment");
    let sets = capi(&client, "MachineSet");
    let machines = capi(&client, "Machine");
    let labels = json!({"cluster.x-k8s.io/cluster-name": "demo", "cluster.x-k8s.io/deployment-name": "pool"});
    let md: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "MachineDeployment",
        "metadata": {"name": "pool"},
        "spec": {
            "clusterName": "demo", "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {
                "clusterName": "demo", "version": "v1.30.4",
                "bootstrap": {"dataSecretName": "demo-bootstrap"},
                "infrastructureRef": {"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1",
                    "kind": "OpenStackMachineTemplate", "name": "demo-md-0"},
            }},
        },
    }))
    .unwrap();
    let md = json_of(
        &deployments
            .create(&PostParams::default(), &md)
            .await
            .unwrap(),
    );
    // One MachineSet `pool-xxxxx`, controlled by the deployment, with two Running Machines.
    let set = eventually("a MachineSet owned by the deployment", || async {
        let items = sets.list(&Default::default()).await.ok()?.items;
        let owned: Vec<Value> = items
            .iter()
            .map(json_of)
            .filter(|s| {
                s["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|r| {
                        r.iter()
                            .any(|r| r["uid"] == md["metadata"]["uid"] && r["controller"] == true)
                    })
            })
            .collect();
        (owned.len() == 1).then(|| owned[0]["metadata"]["name"].as_str().unwrap().to_string())
    })
    .await;
    assert!(
        set.starts_with("pool-") && set.len() == "pool-".len() + 5,
        "{set}"
    );
    let running = |want: usize| {
        let (machines, set) = (&machines, &set);
        async move {
            let ms = machines_of(machines, set).await?;
            let all_running = ms.iter().all(|m| m["status"]["phase"] == "Running");
            (ms.len() == want && all_running).then_some(ms)
        }
    };
    let two = eventually("two Running Machines", || running(2)).await;
    eventually("the deployment Running with 2 ready", || async {
        let d = json_of(&deployments.get("pool").await.ok()?);
        let st = &d["status"];
        (st["phase"] == "Running" && st["readyReplicas"] == 2 && st["updatedReplicas"] == 2)
            .then_some(())
    })
    .await;
    // Scale down by the deployment's spec: one Machine goes.
    deployments
        .patch(
            "pool",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 1}})),
        )
        .await
        .unwrap();
    let one = eventually("one Machine left", || running(1)).await;
    assert!(
        two.iter()
            .any(|m| m["metadata"]["name"] == one[0]["metadata"]["name"])
    );
    // And up through the scale subresource, as `kubectl scale` does.
    deployments
        .patch_scale(
            "pool",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 2}})),
        )
        .await
        .unwrap();
    let scale = deployments.get_scale("pool").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(2));
    let two = eventually("two Running again", || running(2)).await;
    let servers: Vec<String> = two
        .iter()
        .map(|m| m["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert!(
        sim_state(&sim).await["servers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| servers.iter().any(|n| s["name"] == n.as_str()))
            .count()
            == 2
    );
    // Deleting the deployment takes its set, Machines and servers along.
    deployments
        .delete("pool", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the set, its Machines and their servers gone", || async {
        let set_gone = sets.get_opt(&set).await.ok()?.is_none();
        let machines_gone = machines_of(&machines, &set).await?.is_empty();
        let state = sim_state(&sim).await;
        let servers_gone = !state["servers"].as_array()?.iter().any(|s| {
            s["name"]
                .as_str()
                .unwrap_or("")
                .starts_with(&format!("{set}-"))
        });
        (set_gone && machines_gone && servers_gone).then_some(())
    })
    .await;
    // The demo's own MachineSet is untouched.
    assert_eq!(machines_of(&machines, "demo-md-0").await.unwrap().len(), 3);
}

#[tokio::test]
async fn unknown_fields_are_refused_warned_about_or_dropped_as_field_validation_says() {
    let sim = start_sim();
    let token = std::fs::read_to_string(&sim.kubeconfig)
        .unwrap()
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: ").map(str::to_string))
        .unwrap();
    let http = reqwest::Client::new();
    let machine = |name: &str| {
        json!({"apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "Machine",
               "metadata": {"name": name},
               "spec": {"clusterName": "demo", "foo": 1,
                        "bootstrap": {"dataSecretName": "demo-bootstrap"},
                        "infrastructureRef": {"kind": "OpenStackMachine", "name": name}}})
    };
    let post = |name: &str, mode: &str| {
        http.post(format!(
            "{}/apis/cluster.x-k8s.io/v1beta1/namespaces/default/machines{mode}",
            sim.url
        ))
        .bearer_auth(&token)
        .json(&machine(name))
        .send()
    };
    let strict = post("strict", "?fieldValidation=Strict").await.unwrap();
    assert_eq!(strict.status().as_u16(), 400);
    let body: Value = strict.json().await.unwrap();
    assert_eq!(
        body["message"],
        "Machine in version \"v1beta1\" cannot be handled as a Machine: strict decoding error: unknown field \"spec.foo\""
    );
    let warned = post("warned", "").await.unwrap();
    assert_eq!(warned.status().as_u16(), 201);
    let warnings: Vec<String> = warned
        .headers()
        .get_all("warning")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(
        warnings,
        [
            "299 - \"cluster.x-k8s.io/v1beta1 Machine is deprecated; use cluster.x-k8s.io/v1beta2 Machine\"",
            "299 - \"unknown field \\\"spec.foo\\\"\""
        ]
    );
    let stored: Value = warned.json().await.unwrap();
    assert!(stored["spec"].get("foo").is_none(), "{stored}");
    assert_eq!(
        stored["metadata"]["labels"]["cluster.x-k8s.io/cluster-name"], "demo",
        "CAPI's defaulting webhook labels the Machine"
    );
    let ignored = post("ignored", "?fieldValidation=Ignore").await.unwrap();
    assert_eq!(ignored.status().as_u16(), 201);
    assert_eq!(ignored.headers().get_all("warning").iter().count(), 1);
    // A changed clusterName is the Machine webhook's refusal.
    let resp = http
        .patch(format!(
            "{}/apis/cluster.x-k8s.io/v1beta1/namespaces/default/machines/warned",
            sim.url
        ))
        .bearer_auth(&token)
        .header("content-type", "application/merge-patch+json")
        .body(json!({"spec": {"clusterName": "other"}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 422);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["message"],
        "admission webhook \"validation.machine.cluster.x-k8s.io\" denied the request: Machine.cluster.x-k8s.io \"warned\" is invalid: spec.clusterName: Forbidden: field is immutable"
    );
}
