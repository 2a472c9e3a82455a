//! CAPI's MachineDeployment, MachineSet and Machine controllers and the workload clusters'
//! kubelets, as they behave in CAPI v1.10/1.11: one owned MachineSet per MachineDeployment
//! (no rollouts), random-suffix set and Machine names, delete policies with the
//! `cluster.x-k8s.io/delete-machine` annotation and unhealthy Machines first, phases,
//! the `dataSecretName` bypass of bootstrap, `nodeRef`/`NodeHealthy`, upstream's
//! `failureMessage` wording, and label sync to Nodes.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Value, json};

use super::super::kube::resources::ix;
use super::super::kube::store::{Objects, Target, random_suffix, timestamp};
use super::super::kube::{KubeWorld, MANAGEMENT};
use super::Controllers;
use super::seed::CLUSTER_NAME_LABEL;

pub const MACHINE_FINALIZER: &str = "machine.cluster.x-k8s.io";
pub const DELETE_MACHINE_ANNOTATION: &str = "cluster.x-k8s.io/delete-machine";
const CAPO_V1BETA1: &str = "infrastructure.cluster.x-k8s.io/v1beta1";

pub fn name(o: &Value) -> String {
    o["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

pub fn namespace(o: &Value) -> String {
    o["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

pub fn uid(o: &Value) -> String {
    o["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

pub fn deleting(o: &Value) -> bool {
    o["metadata"]["deletionTimestamp"].is_string()
}

pub fn has_finalizer(o: &Value, f: &str) -> bool {
    o["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|a| a.iter().any(|x| x == f))
}

pub fn add_finalizer(o: &mut Value, f: &str) {
    if !o["metadata"]["finalizers"].is_array() {
        o["metadata"]["finalizers"] = json!([]);
    }
    let list = o["metadata"]["finalizers"].as_array_mut().expect("array");
    if !list.iter().any(|x| x == f) {
        list.push(json!(f));
    }
}

pub fn remove_finalizer(o: &mut Value, f: &str) {
    if let Some(list) = o["metadata"]["finalizers"].as_array_mut() {
        list.retain(|x| x != f);
    }
}

pub fn owned_by(o: &Value, owner_uid: &str) -> bool {
    o["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|refs| refs.iter().any(|r| r["uid"] == owner_uid))
}

pub fn owner_ref(owner: &Value) -> Value {
    json!({
        "apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true,
    })
}

/// Sets (or replaces) one condition, keeping `lastTransitionTime` when the status holds.
pub fn set_condition(status: &mut Value, kind: &str, state: &str, reason: &str, message: &str) {
    if !status["conditions"].is_array() {
        status["conditions"] = json!([]);
    }
    let list = status["conditions"].as_array_mut().expect("array");
    let mut c = json!({ "type": kind, "status": state, "lastTransitionTime": timestamp() });
    if !reason.is_empty() {
        c["reason"] = json!(reason);
        c["severity"] = json!(if state == "True" { "" } else { "Warning" });
    }
    if state == "True" {
        c.as_object_mut().expect("object").remove("severity");
    }
    if !message.is_empty() {
        c["message"] = json!(message);
    }
    match list.iter_mut().find(|x| x["type"] == kind) {
        Some(old) => {
            if old["status"] == state {
                c["lastTransitionTime"] = old["lastTransitionTime"].clone();
            }
            *old = c;
        }
        None => list.push(c),
    }
}

pub fn condition<'a>(o: &'a Value, kind: &str) -> Option<&'a Value> {
    o["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

/// CAPI's notion of an unhealthy Machine, for delete ordering (`isMachineHealthy`): no
/// nodeRef yet, a failure, or NodeHealthy False. NodeHealthy Unknown is not held against a
/// Machine ("we are not making any assumption about Health when ConditionUnknown").
fn unhealthy(m: &Value) -> bool {
    m["status"]["nodeRef"]["name"]
        .as_str()
        .is_none_or(str::is_empty)
        || m["status"]["failureReason"].is_string()
        || m["status"]["failureMessage"].is_string()
        || condition(m, "NodeHealthy").is_some_and(|c| c["status"] == "False")
}

/// Upstream's delete priorities: being deleted, then annotated, then unhealthy, then by the
/// set's policy (Oldest/Newest by age; Random equal).
fn delete_priority(m: &Value, policy: &str, now: chrono::DateTime<chrono::Utc>) -> f64 {
    if deleting(m) {
        return 100.0;
    }
    if m["metadata"]["annotations"]
        .get(DELETE_MACHINE_ANNOTATION)
        .is_some()
    {
        return 75.0;
    }
    if unhealthy(m) {
        return 50.0;
    }
    let age = m["metadata"]["creationTimestamp"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| (now - t.with_timezone(&chrono::Utc)).num_milliseconds() as f64 / 1000.0)
        .unwrap_or(0.0)
        .max(0.0);
    const TEN_DAYS: f64 = 864_000.0;
    let oldest = 50.0 * (1.0 - (-age / TEN_DAYS).exp());
    match policy {
        "Oldest" => oldest,
        "Newest" => 50.0 - oldest,
        _ => 20.0,
    }
}

/// A MachineSet adopts the Machines of its namespace and cluster that no controller owns
/// and that match its selector, as upstream's `adoptOrphan` does.
fn adopt_orphans(objects: &mut Objects, set: &Value) {
    let ns = namespace(set);
    let wanted = set["spec"]["selector"]["matchLabels"].as_object().cloned();
    let Some(wanted) = wanted.filter(|w| !w.is_empty()) else {
        return;
    };
    let cluster = set["spec"]["clusterName"].clone();
    let orphans: Vec<String> = objects
        .list(ix::MACHINE, Some(&ns))
        .filter(|m| !deleting(m) && m["spec"]["clusterName"] == cluster)
        .filter(|m| {
            !m["metadata"]["ownerReferences"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|r| r["controller"] == true)
        })
        .filter(|m| {
            wanted
                .iter()
                .all(|(k, v)| m["metadata"]["labels"][k.as_str()] == *v)
        })
        .map(name)
        .collect();
    for m in orphans {
        let owner = json!({"apiVersion": set["apiVersion"], "kind": "MachineSet",
            "name": name(set), "uid": uid(set), "controller": true, "blockOwnerDeletion": true});
        objects.modify(ix::MACHINE, &ns, &m, Target::Main, |o| {
            let refs = o["metadata"]["ownerReferences"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let mut refs = refs;
            refs.push(owner.clone());
            o["metadata"]["ownerReferences"] = json!(refs);
        });
    }
}

/// Which `count` of these Machines a set deletes first.
pub fn pick_for_deletion(machines: &[&Value], policy: &str, count: usize) -> Vec<String> {
    let now = chrono::Utc::now();
    let mut ranked: Vec<(f64, String, &Value)> = machines
        .iter()
        .map(|&m| {
            let created = m["metadata"]["creationTimestamp"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            (delete_priority(m, policy, now), created, m)
        })
        .collect();
    // Equal priorities (creation times have seconds precision): Newest takes the latest
    // created, otherwise the earliest; then by name.
    ranked.sort_by(|a, b| {
        b.0.partial_cmp(&a.0)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| {
                if policy == "Newest" {
                    b.1.cmp(&a.1)
                } else {
                    a.1.cmp(&b.1)
                }
            })
            .then_with(|| name(a.2).cmp(&name(b.2)))
    });
    ranked
        .into_iter()
        .take(count)
        .map(|(_, _, m)| name(m))
        .collect()
}

pub const DEPLOYMENT_NAME_LABEL: &str = "cluster.x-k8s.io/deployment-name";

/// `matchLabels` as the `k=v,...` string CAPI puts in `status.selector`.
fn selector_string(match_labels: &Value) -> String {
    match_labels
        .as_object()
        .map(|l| {
            l.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// One pass over every MachineDeployment: exactly one owned MachineSet
/// (`<md>-<5 random>`), kept at the deployment's replicas, delete policy and template; the
/// deployment's status summed from it.
///
/// Simplified from upstream: there are no rollouts. Upstream creates a new MachineSet when
/// the template's hash changes and moves Machines over by the strategy; here a changed
/// template is copied into the one set, so only Machines created afterwards use it.
pub fn reconcile_machine_deployments(kube: &KubeWorld) {
    let mut clusters = kube.clusters.lock().unwrap();
    let objects = clusters.get_mut(MANAGEMENT).expect("management");
    let deployments: Vec<Value> = objects
        .list(ix::MACHINE_DEPLOYMENT, None)
        .cloned()
        .collect();
    for md in deployments {
        if deleting(&md) {
            continue;
        }
        let ns = namespace(&md);
        let md_name = name(&md);
        let md_uid = uid(&md);
        let replicas = md["spec"]["replicas"].as_i64().unwrap_or(1).max(0);
        let policy = md["spec"]["strategy"]["rollingUpdate"]["deletePolicy"]
            .as_str()
            .unwrap_or("Random")
            .to_string();
        let cluster_name = md["spec"]["clusterName"].clone();
        // The set's selector and template labels: the deployment's, plus its name (as
        // upstream's defaulting webhook adds it).
        let mut match_labels = md["spec"]["selector"]["matchLabels"].clone();
        if !match_labels.is_object() {
            match_labels = json!({});
        }
        match_labels[DEPLOYMENT_NAME_LABEL] = json!(md_name);
        let mut template = md["spec"]["template"].clone();
        if !template["metadata"]["labels"].is_object() {
            template["metadata"]["labels"] = json!({});
        }
        for (k, v) in match_labels.as_object().expect("object") {
            template["metadata"]["labels"][k] = v.clone();
        }
        let set_spec = json!({
            "clusterName": cluster_name, "replicas": replicas, "deletePolicy": policy,
            "selector": {"matchLabels": match_labels}, "template": template,
        });
        let mut sets: Vec<Value> = objects
            .list(ix::MACHINE_SET, Some(&ns))
            .filter(|s| owned_by(s, &md_uid) && !deleting(s))
            .cloned()
            .collect();
        sets.sort_by_key(|s| {
            s["metadata"]["creationTimestamp"]
                .as_str()
                .map(str::to_string)
        });
        // Exactly one: extras (never made here) go, the oldest stays.
        for extra in sets.iter().skip(1) {
            let _ = objects.delete(ix::MACHINE_SET, &ns, &name(extra), &json!({}), false);
        }
        match sets.first() {
            None => {
                let set_name = loop {
                    let candidate = format!("{md_name}-{}", random_suffix());
                    if objects.get(ix::MACHINE_SET, &ns, &candidate).is_none() {
                        break candidate;
                    }
                };
                let set = json!({
                    "apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "MachineSet",
                    "metadata": {
                        "name": set_name, "ownerReferences": [owner_ref(&md)],
                        "labels": {CLUSTER_NAME_LABEL: cluster_name, DEPLOYMENT_NAME_LABEL: md_name},
                    },
                    "spec": set_spec,
                });
                let _ = objects.create_own(ix::MACHINE_SET, &ns, set);
            }
            Some(set) => {
                objects.modify(ix::MACHINE_SET, &ns, &name(set), Target::Main, |s| {
                    for field in ["clusterName", "replicas", "deletePolicy", "template"] {
                        s["spec"][field] = set_spec[field].clone();
                    }
                });
            }
        }
        let owned: Vec<&Value> = objects
            .list(ix::MACHINE_SET, Some(&ns))
            .filter(|s| owned_by(s, &md_uid))
            .collect();
        let sum = |field: &str| -> i64 {
            owned
                .iter()
                .map(|s| s["status"][field].as_i64().unwrap_or(0))
                .sum()
        };
        let (current, ready, available) = (
            sum("replicas"),
            sum("readyReplicas"),
            sum("availableReplicas"),
        );
        // Upstream's phase compares the desired count with the ready one.
        let phase = match replicas.cmp(&ready) {
            std::cmp::Ordering::Greater => "ScalingUp",
            std::cmp::Ordering::Less => "ScalingDown",
            std::cmp::Ordering::Equal => "Running",
        };
        let selector = selector_string(&match_labels);
        let generation = md["metadata"]["generation"].clone();
        objects.modify(ix::MACHINE_DEPLOYMENT, &ns, &md_name, Target::Status, |o| {
            let st = &mut o["status"];
            st["replicas"] = json!(current);
            // Without rollouts every Machine is of the current template.
            st["updatedReplicas"] = json!(current);
            st["readyReplicas"] = json!(ready);
            st["availableReplicas"] = json!(available);
            st["unavailableReplicas"] = json!((replicas - available).max(0));
            st["selector"] = json!(selector);
            st["observedGeneration"] = generation;
            st["phase"] = json!(phase);
        });
    }
}

/// One pass over every MachineSet.
pub fn reconcile_machine_sets(kube: &KubeWorld) {
    let mut clusters = kube.clusters.lock().unwrap();
    let objects = clusters.get_mut(MANAGEMENT).expect("management");
    let sets: Vec<Value> = objects.list(ix::MACHINE_SET, None).cloned().collect();
    for set in sets {
        if deleting(&set) {
            continue;
        }
        let ns = namespace(&set);
        let set_uid = uid(&set);
        adopt_orphans(objects, &set);
        let active: Vec<&Value> = objects
            .list(ix::MACHINE, Some(&ns))
            .filter(|m| owned_by(m, &set_uid) && !deleting(m))
            .collect();
        let replicas = set["spec"]["replicas"].as_i64().unwrap_or(1).max(0) as usize;
        if active.len() < replicas {
            for _ in active.len()..replicas {
                create_machine(objects, &set);
            }
        } else if active.len() > replicas {
            let policy = set["spec"]["deletePolicy"].as_str().unwrap_or("Random");
            for m in pick_for_deletion(&active, policy, active.len() - replicas) {
                let _ = objects.delete(ix::MACHINE, &ns, &m, &json!({}), false);
            }
        }
        let (owned, ready) = objects
            .list(ix::MACHINE, Some(&ns))
            .filter(|m| owned_by(m, &set_uid))
            .fold((0, 0), |(owned, ready), m| {
                let healthy = condition(m, "NodeHealthy").is_some_and(|c| c["status"] == "True");
                (owned + 1, ready + usize::from(healthy))
            });
        let selector = selector_string(&set["spec"]["selector"]["matchLabels"]);
        let generation = set["metadata"]["generation"].clone();
        objects.modify(ix::MACHINE_SET, &ns, &name(&set), Target::Status, |s| {
            let st = &mut s["status"];
            st["replicas"] = json!(owned);
            st["fullyLabeledReplicas"] = json!(owned);
            st["readyReplicas"] = json!(ready);
            st["availableReplicas"] = json!(ready);
            st["selector"] = json!(selector);
            st["observedGeneration"] = generation;
        });
    }
}

/// A Machine named `<set>-<5 random>` from the set's template, with its infrastructure
/// (and, when the template has a `configRef`, bootstrap) object cloned from their templates.
fn create_machine(objects: &mut Objects, set: &Value) {
    let ns = namespace(set);
    let set_name = name(set);
    let machine_name = loop {
        let candidate = format!("{set_name}-{}", random_suffix());
        if objects.get(ix::MACHINE, &ns, &candidate).is_none() {
            break candidate;
        }
    };
    let template = &set["spec"]["template"];
    let mut labels = template["metadata"]["labels"].clone();
    if !labels.is_object() {
        labels = json!({});
    }
    labels[CLUSTER_NAME_LABEL] = set["spec"]["clusterName"].clone();
    labels["cluster.x-k8s.io/set-name"] = json!(set_name);
    let mut spec = template["spec"].clone();
    let infra = spec["infrastructureRef"].clone();
    if infra["kind"] == "OpenStackMachineTemplate" {
        let Some(osmt) = objects
            .get(
                ix::OPENSTACK_MACHINE_TEMPLATE,
                &ns,
                infra["name"].as_str().unwrap_or_default(),
            )
            .cloned()
        else {
            return;
        };
        let osm = json!({
            "metadata": {
                "name": machine_name, "labels": labels,
                "annotations": {
                    "cluster.x-k8s.io/cloned-from-name": infra["name"],
                    "cluster.x-k8s.io/cloned-from-groupkind": "OpenStackMachineTemplate.infrastructure.cluster.x-k8s.io",
                },
            },
            "spec": osmt["spec"]["template"]["spec"],
        });
        if objects.create_own(ix::OPENSTACK_MACHINE, &ns, osm).is_err() {
            return;
        }
        spec["infrastructureRef"] = json!({
            "apiVersion": CAPO_V1BETA1, "kind": "OpenStackMachine", "name": machine_name, "namespace": ns,
        });
    }
    let config_ref = spec["bootstrap"]["configRef"].clone();
    if config_ref["kind"] == "KubeadmConfigTemplate" {
        let tmpl = objects
            .get(
                ix::KUBEADM_CONFIG_TEMPLATE,
                &ns,
                config_ref["name"].as_str().unwrap_or_default(),
            )
            .cloned()
            .unwrap_or_else(|| json!({"spec": {"template": {"spec": {}}}}));
        let config = json!({
            "metadata": {"name": machine_name, "labels": labels},
            "spec": tmpl["spec"]["template"]["spec"],
        });
        let _ = objects.create_own(ix::KUBEADM_CONFIG, &ns, config);
        spec["bootstrap"]["configRef"] = json!({
            "apiVersion": "bootstrap.cluster.x-k8s.io/v1beta1", "kind": "KubeadmConfig",
            "name": machine_name, "namespace": ns,
        });
    }
    let machine = json!({
        "apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "Machine",
        "metadata": {"name": machine_name, "labels": labels, "ownerReferences": [owner_ref(set)]},
        "spec": spec,
    });
    let _ = objects.create_own(ix::MACHINE, &ns, machine);
}

/// The kubeadm bootstrap provider: a KubeadmConfig gets its data Secret only once the
/// control plane is initialised — the lock `dataSecretName` bypasses.
pub fn reconcile_kubeadm_configs(kube: &KubeWorld) {
    let mut clusters = kube.clusters.lock().unwrap();
    let objects = clusters.get_mut(MANAGEMENT).expect("management");
    let configs: Vec<Value> = objects.list(ix::KUBEADM_CONFIG, None).cloned().collect();
    for cfg in configs {
        let ns = namespace(&cfg);
        let cluster = cfg["metadata"]["labels"][CLUSTER_NAME_LABEL]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let initialised = objects
            .get(ix::CLUSTER, &ns, &cluster)
            .is_some_and(|c| c["status"]["controlPlaneReady"] == true);
        let ready = cfg["status"]["ready"] == true;
        if ready {
            continue;
        }
        let n = name(&cfg);
        if !initialised {
            objects.modify(ix::KUBEADM_CONFIG, &ns, &n, Target::Status, |c| {
                set_condition(
                    &mut c["status"],
                    "DataSecretAvailable",
                    "False",
                    "WaitingForControlPlaneAvailable",
                    "",
                );
            });
            continue;
        }
        let secret = json!({
            "type": "cluster.x-k8s.io/secret",
            "metadata": {"name": n, "labels": {CLUSTER_NAME_LABEL: cluster}, "ownerReferences": [owner_ref(&cfg)]},
            "stringData": {"format": "cloud-config", "value": "#cloud-config\n"},
        });
        let _ = objects.create_own(ix::SECRET, &ns, secret);
        objects.modify(ix::KUBEADM_CONFIG, &ns, &n, Target::Status, |c| {
            c["status"]["ready"] = json!(true);
            c["status"]["dataSecretName"] = json!(n);
            set_condition(&mut c["status"], "DataSecretAvailable", "True", "", "");
        });
    }
}

/// One pass over every Machine: finalizer, ownership of its infrastructure, bootstrap,
/// provisioning, the Node, failures, phase, and deletion.
pub fn reconcile_machines(ctl: &Controllers) {
    let kube = &ctl.kube;
    let mut clusters = kube.clusters.lock().unwrap();
    let machines = clusters[MANAGEMENT].keys(ix::MACHINE);
    // Nodes by provider ID, per workload cluster: one look-up per Machine, not a scan.
    let nodes_by_provider: HashMap<(String, String), String> = clusters
        .iter()
        .filter(|(key, _)| key.as_str() != MANAGEMENT)
        .flat_map(|(key, objects)| {
            objects.list(ix::NODE, None).filter_map(move |nd| {
                let pid = nd["spec"]["providerID"].as_str()?;
                Some(((key.clone(), pid.to_string()), name(nd)))
            })
        })
        .collect();
    for (ns, n) in machines {
        let Some(m) = clusters[MANAGEMENT].get(ix::MACHINE, &ns, &n).cloned() else {
            continue;
        };
        let cluster_name = m["spec"]["clusterName"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let workload_key = format!("{ns}/{cluster_name}");
        let infra_name = m["spec"]["infrastructureRef"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let objects = clusters.get_mut(MANAGEMENT).expect("management");
        let infra = objects
            .get(ix::OPENSTACK_MACHINE, &ns, &infra_name)
            .cloned();
        if deleting(&m) {
            if let Some(osm) = &infra
                && !deleting(osm)
            {
                let _ = objects.delete(ix::OPENSTACK_MACHINE, &ns, &infra_name, &json!({}), false);
            }
            if let Some(cfg) = m["spec"]["bootstrap"]["configRef"]["name"].as_str() {
                let _ = objects.delete(ix::KUBEADM_CONFIG, &ns, cfg, &json!({}), false);
            }
            objects.modify(ix::MACHINE, &ns, &n, Target::Status, |o| {
                o["status"]["phase"] = json!("Deleting");
            });
            if infra.is_some() {
                continue;
            }
            if let Some(node) = m["status"]["nodeRef"]["name"].as_str()
                && let Some(workload) = clusters.get_mut(&workload_key)
            {
                let _ = workload.delete(ix::NODE, "", node, &json!({}), false);
            }
            if ctl.faults.lock().unwrap().stuck_finalizers.contains(&n) {
                continue;
            }
            let objects = clusters.get_mut(MANAGEMENT).expect("management");
            objects.modify(ix::MACHINE, &ns, &n, Target::Main, |o| {
                remove_finalizer(o, MACHINE_FINALIZER)
            });
            continue;
        }
        // Metadata: finalizer and cluster label on the Machine; ownership and label on
        // its infrastructure.
        objects.modify(ix::MACHINE, &ns, &n, Target::Main, |o| {
            add_finalizer(o, MACHINE_FINALIZER);
            o["metadata"]["labels"][CLUSTER_NAME_LABEL] = json!(cluster_name);
        });
        let Some(m) = objects.get(ix::MACHINE, &ns, &n).cloned() else {
            continue;
        };
        if let Some(osm) = &infra
            && !owned_by(osm, &uid(&m))
        {
            let owner = owner_ref(&m);
            objects.modify(ix::OPENSTACK_MACHINE, &ns, &infra_name, Target::Main, |o| {
                let refs = &mut o["metadata"]["ownerReferences"];
                if !refs.is_array() {
                    *refs = json!([]);
                }
                refs.as_array_mut().expect("array").push(owner);
                o["metadata"]["labels"][CLUSTER_NAME_LABEL] = json!(cluster_name);
            });
        }
        // Bootstrap: `dataSecretName` without a `configRef` needs no bootstrap provider.
        let mut data_secret = m["spec"]["bootstrap"]["dataSecretName"]
            .as_str()
            .map(str::to_string);
        let mut bootstrap_reason = "DataSecretProvided";
        if data_secret.is_none()
            && let Some(cfg) = m["spec"]["bootstrap"]["configRef"]["name"].as_str()
        {
            bootstrap_reason = "";
            data_secret = objects
                .get(ix::KUBEADM_CONFIG, &ns, cfg)
                .and_then(|c| c["status"]["dataSecretName"].as_str())
                .map(str::to_string);
            if let Some(secret) = &data_secret {
                objects.modify(ix::MACHINE, &ns, &n, Target::Main, |o| {
                    o["spec"]["bootstrap"]["dataSecretName"] = json!(secret);
                });
            }
        }
        let infra_ready = infra.as_ref().is_some_and(|o| o["status"]["ready"] == true);
        let provider_id = infra
            .as_ref()
            .and_then(|o| o["spec"]["providerID"].as_str())
            .map(str::to_string);
        if let Some(pid) = &provider_id
            && m["spec"]["providerID"].as_str() != Some(pid)
        {
            objects.modify(ix::MACHINE, &ns, &n, Target::Main, |o| {
                o["spec"]["providerID"] = json!(pid);
            });
        }
        let failure = infra.as_ref().and_then(|o| {
            let reason = o["status"]["failureReason"].as_str()?;
            let message = o["status"]["failureMessage"].as_str().unwrap_or_default();
            Some((
                reason.to_string(),
                format!(
                    "Failure detected from referenced resource {CAPO_V1BETA1}, Kind=OpenStackMachine with name \"{infra_name}\": {message}"
                ),
            ))
        });
        // The Node, found by provider ID in the workload cluster; CAPI syncs the
        // `node-role.kubernetes.io/` and `node.cluster.x-k8s.io/` labels onto it.
        let mut node = None;
        if let Some(pid) = &provider_id
            && let Some(workload) = clusters.get_mut(&workload_key)
        {
            node = nodes_by_provider
                .get(&(workload_key.clone(), pid.clone()))
                .and_then(|nd| workload.get(ix::NODE, "", nd))
                .cloned();
            if let Some(nd) = &node {
                let synced: BTreeMap<String, Value> = m["metadata"]["labels"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(k, _)| {
                        k.starts_with("node-role.kubernetes.io/")
                            || k.starts_with("node.cluster.x-k8s.io/")
                    })
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                if synced
                    .iter()
                    .any(|(k, v)| nd["metadata"]["labels"].get(k) != Some(v))
                {
                    workload.modify(ix::NODE, "", &name(nd), Target::Main, |o| {
                        for (k, v) in &synced {
                            o["metadata"]["labels"][k] = v.clone();
                        }
                    });
                }
            }
        }
        let objects = clusters.get_mut(MANAGEMENT).expect("management");
        let addresses = infra
            .as_ref()
            .map(|o| o["status"]["addresses"].clone())
            .unwrap_or(Value::Null);
        objects.modify(ix::MACHINE, &ns, &n, Target::Status, |o| {
            let generation = o["metadata"]["generation"].clone();
            let st = &mut o["status"];
            st["bootstrapReady"] = json!(data_secret.is_some());
            if data_secret.is_some() {
                set_condition(st, "BootstrapReady", "True", "", "");
                if !bootstrap_reason.is_empty() {
                    st["conditions"]
                        .as_array_mut()
                        .expect("array")
                        .iter_mut()
                        .filter(|c| c["type"] == "BootstrapReady")
                        .for_each(|c| c["reason"] = json!(bootstrap_reason));
                }
            } else {
                set_condition(
                    st,
                    "BootstrapReady",
                    "False",
                    "WaitingForDataSecret",
                    "",
                );
            }
            st["infrastructureReady"] = json!(infra_ready);
            if infra_ready {
                set_condition(st, "InfrastructureReady", "True", "", "");
            } else {
                set_condition(
                    st,
                    "InfrastructureReady",
                    "False",
                    "WaitingForInfrastructure",
                    "",
                );
            }
            if addresses.is_array() {
                st["addresses"] = addresses.clone();
            }
            if let Some((reason, message)) = &failure {
                st["failureReason"] = json!(reason);
                st["failureMessage"] = json!(message);
            }
            match &node {
                Some(nd) => {
                    st["nodeRef"] = json!({"apiVersion": "v1", "kind": "Node", "name": nd["metadata"]["name"], "uid": nd["metadata"]["uid"]});
                    st["nodeInfo"] = nd["status"]["nodeInfo"].clone();
                    match node_health(nd) {
                        ("True", _) => set_condition(st, "NodeHealthy", "True", "", ""),
                        (status, message) => set_condition(
                            st,
                            "NodeHealthy",
                            status,
                            "NodeConditionsFailed",
                            &message,
                        ),
                    }
                }
                None if st["nodeRef"].is_object() => {
                    set_condition(
                        st,
                        "NodeHealthy",
                        "False",
                        "NodeNotFound",
                        "",
                    );
                }
                None => {
                    set_condition(
                        st,
                        "NodeHealthy",
                        "False",
                        "NodeProvisioning",
                        "",
                    );
                }
            }
            let phase = if st["failureReason"].is_string() {
                "Failed"
            } else if st["nodeRef"].is_object() {
                "Running"
            } else if infra_ready {
                "Provisioned"
            } else if data_secret.is_some() {
                "Provisioning"
            } else {
                "Pending"
            };
            st["phase"] = json!(phase);
            st["observedGeneration"] = generation;
        });
    }
}

/// A healthy kubelet's four conditions, in its order.
fn kubelet_conditions() -> Value {
    let now = timestamp();
    let c = |kind: &str, status: &str, reason: &str, message: &str| {
        json!({"type": kind, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    json!([
        c(
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available"
        ),
        c(
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure"
        ),
        c(
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available"
        ),
        c(
            "Ready",
            "True",
            "KubeletReady",
            "kubelet is posting ready status"
        ),
    ])
}

/// What the node lifecycle controller makes of a Node whose kubelet stopped posting: every
/// condition Unknown, the last heartbeat kept.
fn stopped_posting(conditions: &Value) -> Value {
    let now = timestamp();
    let list: Vec<Value> = conditions
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            json!({"type": c["type"], "status": "Unknown", "reason": "NodeStatusUnknown",
                   "message": "Kubelet stopped posting node status.",
                   "lastHeartbeatTime": c["lastHeartbeatTime"], "lastTransitionTime": now})
        })
        .collect();
    json!(list)
}

/// Upstream's v1beta1 NodeHealthy from a Node's conditions (`summarizeNodeV1beta1Conditions`):
/// False if a condition says trouble (a pressure True, Ready False), Unknown only when all
/// four are unknown or bad, else True; the message names each condition not as it should be.
fn node_health(node: &Value) -> (&'static str, String) {
    let (mut bad, mut unknown) = (0, 0);
    let mut message = String::new();
    for c in node["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let good = match c["type"].as_str().unwrap_or_default() {
            "MemoryPressure" | "DiskPressure" | "PIDPressure" => "False",
            "Ready" => "True",
            _ => continue,
        };
        let status = c["status"].as_str().unwrap_or_default();
        if status == good {
            continue;
        }
        message += &format!(
            "Node condition {} is {status}. ",
            c["type"].as_str().unwrap_or_default()
        );
        if status == "Unknown" {
            unknown += 1;
        } else {
            bad += 1;
        }
    }
    let message = message.trim_end_matches(". ").to_string();
    if bad > 0 {
        ("False", message)
    } else if bad + unknown < 4 {
        ("True", message)
    } else {
        ("Unknown", message)
    }
}

/// The workload clusters' kubelets: a Node joins some time after its server went ACTIVE,
/// goes NotReady when its server breaks or a fault says so (as upstream leaves a Node whose
/// kubelet stopped posting).
pub fn reconcile_nodes(ctl: &Controllers) {
    let now = ctl.clock.now();
    let join_after = ctl.node_join_seconds;
    let mut clusters = ctl.kube.clusters.lock().unwrap();
    let servers = clusters[MANAGEMENT].keys(ix::OPENSTACK_SERVER);
    let mut memory = ctl.memory.lock().unwrap();
    for (ns, n) in servers {
        let Some(oss) = clusters[MANAGEMENT]
            .get(ix::OPENSTACK_SERVER, &ns, &n)
            .cloned()
        else {
            continue;
        };
        let cluster = oss["metadata"]["labels"][CLUSTER_NAME_LABEL]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let key = format!("{ns}/{cluster}");
        let Some(id) = oss["status"]["instanceID"].as_str() else {
            continue;
        };
        let state = oss["status"]["instanceState"].as_str().unwrap_or_default();
        let became_active = *memory
            .active_since
            .entry(uid(&oss))
            .or_insert(if state == "ACTIVE" { now } else { f64::MAX });
        if state == "ACTIVE" && became_active == f64::MAX {
            memory.active_since.insert(uid(&oss), now);
            continue;
        }
        let Some(workload) = clusters.get_mut(&key) else {
            continue;
        };
        let provider_id = format!("openstack:///{id}");
        let existing = workload.get(ix::NODE, "", &n).cloned();
        let forced_down = ctl
            .faults
            .lock()
            .unwrap()
            .nodes_not_ready
            .iter()
            .any(|(node, at)| node == &n && now >= *at);
        let healthy = state == "ACTIVE" && !forced_down && !deleting(&oss);
        match existing {
            None if state == "ACTIVE" && now - became_active >= join_after => {
                let address = oss["status"]["addresses"][0]["address"].clone();
                let node = json!({
                    "metadata": {"name": n, "labels": {
                        "kubernetes.io/hostname": n, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                        "node.kubernetes.io/instance-type": oss["spec"]["flavor"],
                        "topology.kubernetes.io/zone": oss["spec"]["availabilityZone"],
                    }},
                    "spec": {"providerID": provider_id},
                    "status": {
                        "conditions": kubelet_conditions(),
                        "addresses": [{"type": "InternalIP", "address": address}, {"type": "Hostname", "address": n}],
                        "nodeInfo": {"kubeletVersion": "v1.30.4", "osImage": "Ubuntu 22.04.4 LTS",
                            "containerRuntimeVersion": "containerd://1.7.13", "architecture": "amd64",
                            "operatingSystem": "linux", "kernelVersion": "5.15.0-105-generic",
                            "machineID": id.replace('-', ""), "systemUUID": id, "bootID": id,
                            "kubeProxyVersion": "v1.30.4"},
                    },
                });
                let _ = workload.create(ix::NODE, "", node, true, false);
            }
            Some(nd) => {
                let ready = nd["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True");
                if ready != healthy {
                    workload.modify(ix::NODE, "", &n, Target::Status, |o| {
                        o["status"]["conditions"] = if healthy {
                            kubelet_conditions()
                        } else {
                            stopped_posting(&o["status"]["conditions"])
                        };
                    });
                }
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::scenario::{DEMO, Scenario};

    /// A scenario worker pool with `deployment: true` becomes a MachineDeployment whose one
    /// MachineSet follows its replicas and delete policy.
    #[test]
    fn a_deployment_keeps_one_owned_set_at_its_replicas() {
        // The first cluster's (default/demo) pool list only.
        let text = DEMO.replacen(
            "delete_policy: Oldest}",
            "delete_policy: Oldest}\n      - {name: demo-md-1, deployment: true, replicas: 2, flavor: k8s.small, image: ubuntu-2204-kube-v1.30, delete_policy: Newest}",
            1,
        );
        let scenario = Scenario::parse(&text).unwrap();
        let kube = KubeWorld::new();
        super::super::seed::seed(&kube, &scenario, "http://sim", &|_| String::new());
        for _ in 0..2 {
            reconcile_machine_deployments(&kube);
            reconcile_machine_sets(&kube);
        }
        let sets = |kube: &KubeWorld| -> Vec<Value> {
            let clusters = kube.clusters.lock().unwrap();
            clusters[MANAGEMENT]
                .list(ix::MACHINE_SET, None)
                .filter(|s| name(s).starts_with("demo-md-1-"))
                .cloned()
                .collect()
        };
        let owned = sets(&kube);
        assert_eq!(owned.len(), 1);
        let set = &owned[0];
        assert_eq!(name(set).len(), "demo-md-1-".len() + 5);
        let owner = &set["metadata"]["ownerReferences"][0];
        assert_eq!(
            (&owner["kind"], owner["controller"].as_bool()),
            (&json!("MachineDeployment"), Some(true))
        );
        assert_eq!(set["spec"]["deletePolicy"], "Newest");
        assert_eq!(
            set["spec"]["template"]["metadata"]["labels"][DEPLOYMENT_NAME_LABEL],
            "demo-md-1"
        );
        let machines = |kube: &KubeWorld| {
            let clusters = kube.clusters.lock().unwrap();
            clusters[MANAGEMENT]
                .list(ix::MACHINE, None)
                .filter(|m| owned_by(m, &uid(set)))
                .count()
        };
        assert_eq!(machines(&kube), 2);
        {
            let mut clusters = kube.clusters.lock().unwrap();
            let objects = clusters.get_mut(MANAGEMENT).unwrap();
            objects.modify(
                ix::MACHINE_DEPLOYMENT,
                "default",
                "demo-md-1",
                Target::Main,
                |o| {
                    o["spec"]["replicas"] = json!(3);
                },
            );
        }
        reconcile_machine_deployments(&kube);
        reconcile_machine_sets(&kube);
        reconcile_machine_deployments(&kube);
        assert_eq!(sets(&kube).len(), 1);
        assert_eq!(machines(&kube), 3);
        let clusters = kube.clusters.lock().unwrap();
        let md = clusters[MANAGEMENT]
            .get(ix::MACHINE_DEPLOYMENT, "default", "demo-md-1")
            .unwrap();
        assert_eq!(md["status"]["replicas"], 3);
        // No Machine has a Node yet.
        assert_eq!(md["status"]["phase"], "ScalingUp");
        assert_eq!(md["status"]["observedGeneration"], 2);
    }
}
