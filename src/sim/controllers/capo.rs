//! CAPO v0.14's OpenStackMachine and OpenStackServer controllers. The server controller
//! reaches the simulated cloud over HTTP with the cluster's `clouds.yaml` Secret, creates
//! ports `<name>-<i>`, volumes `<name>-root` and `<name>-<device>` and the Nova server
//! `<name>` (adopting same-named ones), and reports what upstream reports: a synchronous
//! refusal as `InstanceReady=False/InstanceCreateFailed` with gophercloud's message; a
//! server that goes ERROR while building **not at all** (CAPO#3375). Nothing is cleaned up
//! at failure time; deletion removes server, volumes and ports.

use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};

use super::super::kube::MANAGEMENT;
use super::super::kube::resources::ix;
use super::super::kube::store::Target;
use super::Controllers;
use super::capi::{
    add_finalizer, deleting, has_finalizer, name, namespace, owner_ref, remove_finalizer,
    set_condition, uid,
};
use super::openstack::{CallError, Session, credentials};
use super::seed::CLUSTER_NAME_LABEL;

pub const MACHINE_FINALIZER: &str = "openstackmachine.infrastructure.cluster.x-k8s.io";
pub const SERVER_FINALIZER: &str = "openstackserver.infrastructure.cluster.x-k8s.io";

/// How many servers one pass reconciles at once.
const PARALLEL: usize = 16;

/// One pass over every OpenStackMachine: its OpenStackServer, and readiness mirrored back.
pub fn reconcile_machines(ctl: &Controllers) {
    let mut clusters = ctl.kube.clusters.lock().unwrap();
    let objects = clusters.get_mut(MANAGEMENT).expect("management");
    for (ns, n) in objects.keys(ix::OPENSTACK_MACHINE) {
        let Some(osm) = objects.get(ix::OPENSTACK_MACHINE, &ns, &n).cloned() else {
            continue;
        };
        let server = objects.get(ix::OPENSTACK_SERVER, &ns, &n).cloned();
        if deleting(&osm) {
            match &server {
                Some(s) if !deleting(s) => {
                    let _ = objects.delete(ix::OPENSTACK_SERVER, &ns, &n, &json!({}), false);
                }
                Some(_) => {}
                None => {
                    objects.modify(ix::OPENSTACK_MACHINE, &ns, &n, Target::Main, |o| {
                        remove_finalizer(o, MACHINE_FINALIZER)
                    });
                }
            }
            continue;
        }
        if !has_finalizer(&osm, MACHINE_FINALIZER) {
            objects.modify(ix::OPENSTACK_MACHINE, &ns, &n, Target::Main, |o| {
                add_finalizer(o, MACHINE_FINALIZER)
            });
        }
        let owner = osm["metadata"]["ownerReferences"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["kind"] == "Machine")
            .and_then(|r| r["name"].as_str())
            .and_then(|m| objects.get(ix::MACHINE, &ns, m))
            .cloned();
        let Some(machine) = owner else {
            continue;
        };
        let Some(data_secret) = machine["spec"]["bootstrap"]["dataSecretName"]
            .as_str()
            .map(str::to_string)
        else {
            objects.modify(ix::OPENSTACK_MACHINE, &ns, &n, Target::Status, |o| {
                set_condition(
                    &mut o["status"],
                    "InstanceReady",
                    "False",
                    "WaitingForBootstrapData",
                    "Bootstrap data secret reference is not yet available",
                );
            });
            continue;
        };
        let Some(server) = server else {
            let spec = &osm["spec"];
            let mut server_spec = json!({
                "flavor": spec["flavor"], "image": spec["image"], "ports": spec["ports"],
                "identityRef": spec["identityRef"], "userDataRef": {"name": data_secret},
                "securityGroups": spec["securityGroups"],
                // A plain string in CAPO's type: always sent, empty when the machine has none.
                "sshKeyName": spec["sshKeyName"].as_str().unwrap_or(""),
                "tags": spec["tags"], "serverMetadata": spec["serverMetadata"],
                "rootVolume": spec["rootVolume"], "additionalBlockDevices": spec["additionalBlockDevices"],
                "configDrive": spec["configDrive"], "trunk": false,
            });
            if let Some(fd) = machine["spec"]["failureDomain"].as_str() {
                server_spec["availabilityZone"] = json!(fd);
            }
            if let Some(m) = server_spec.as_object_mut() {
                m.retain(|_, v| !v.is_null());
            }
            let cluster = machine["spec"]["clusterName"].clone();
            let oss = json!({
                "metadata": {"name": n, "labels": {CLUSTER_NAME_LABEL: cluster},
                    "ownerReferences": [owner_ref(&osm)]},
                "spec": server_spec,
            });
            let _ = objects.create_own(ix::OPENSTACK_SERVER, &ns, oss);
            continue;
        };
        let st = &server["status"];
        let ready = st["ready"] == true;
        let state = st["instanceState"].clone();
        let id = st["instanceID"].as_str().map(str::to_string);
        let addresses = st["addresses"].clone();
        if let Some(id) = &id
            && osm["spec"]["providerID"].is_null()
        {
            objects.modify(ix::OPENSTACK_MACHINE, &ns, &n, Target::Main, |o| {
                o["spec"]["providerID"] = json!(format!("openstack:///{id}"));
            });
        }
        objects.modify(ix::OPENSTACK_MACHINE, &ns, &n, Target::Status, |o| {
            let s = &mut o["status"];
            s["ready"] = json!(ready);
            if let Some(id) = &id {
                s["instanceID"] = json!(id);
            }
            if !state.is_null() {
                s["instanceState"] = state.clone();
            }
            if addresses.is_array() {
                s["addresses"] = addresses.clone();
            }
            // While its OpenStackServer is not ready CAPO's OpenStackMachine controller
            // only waits: an ERROR there sets no failure on the OpenStackMachine.
            if ready {
                set_condition(s, "InstanceReady", "True", "", "");
            } else {
                set_condition(
                    s,
                    "InstanceReady",
                    "False",
                    "InstanceNotReady",
                    "Server is not yet ready",
                );
            }
            s["ready"] = json!(ready);
        });
    }
}

/// One pass over every OpenStackServer, talking to the cloud over HTTP.
pub async fn reconcile_servers(ctl: &Controllers) {
    let now = ctl.clock.now();
    // Each server is read when its turn comes, not all cloned up front.
    let keys = ctl.kube.clusters.lock().unwrap()[MANAGEMENT].keys(ix::OPENSTACK_SERVER);
    futures_util::stream::iter(keys)
        .for_each_concurrent(PARALLEL, |(ns, n)| async move {
            let Some(s) = ctl.kube.clusters.lock().unwrap()[MANAGEMENT]
                .get(ix::OPENSTACK_SERVER, &ns, &n)
                .cloned()
            else {
                return;
            };
            let key = uid(&s);
            let due = ctl
                .memory
                .lock()
                .unwrap()
                .retry_at
                .get(&key)
                .is_none_or(|(at, _)| now >= *at);
            if !due {
                return;
            }
            match reconcile_server(ctl, &s).await {
                Ok(()) => {
                    ctl.memory.lock().unwrap().retry_at.remove(&key);
                }
                Err(()) => {
                    let mut memory = ctl.memory.lock().unwrap();
                    let tries = memory.retry_at.get(&key).map(|(_, n)| n + 1).unwrap_or(0);
                    let backoff = (5.0 * 2f64.powi(tries.min(4) as i32)).min(60.0);
                    memory
                        .retry_at
                        .insert(key, (ctl.clock.now() + backoff, tries));
                }
            }
        })
        .await;
}

fn write_status(ctl: &Controllers, s: &Value, f: impl FnOnce(&mut Value)) {
    let mut clusters = ctl.kube.clusters.lock().unwrap();
    let objects = clusters.get_mut(MANAGEMENT).expect("management");
    objects.modify(
        ix::OPENSTACK_SERVER,
        &namespace(s),
        &name(s),
        Target::Status,
        |o| f(&mut o["status"]),
    );
}

fn write_main(ctl: &Controllers, s: &Value, f: impl FnOnce(&mut Value)) {
    let mut clusters = ctl.kube.clusters.lock().unwrap();
    let objects = clusters.get_mut(MANAGEMENT).expect("management");
    objects.modify(
        ix::OPENSTACK_SERVER,
        &namespace(s),
        &name(s),
        Target::Main,
        f,
    );
}

/// Records a create failure the way CAPO does: `InstanceReady=False/InstanceCreateFailed`
/// with gophercloud's message and `instanceState: ERROR` — terminal: CAPO does not try to
/// create this server again (only deleting the object ends it).
fn create_failed(ctl: &Controllers, s: &Value, what: &str, e: &CallError) -> Result<(), ()> {
    let message = format!("error creating Openstack instance: {what}{e}");
    write_status(ctl, s, |st| {
        st["ready"] = json!(false);
        st["instanceState"] = json!("ERROR");
        set_condition(
            st,
            "InstanceReady",
            "False",
            "InstanceCreateFailed",
            &message,
        );
    });
    Ok(())
}

/// A lookup before the create (image, flavor, network, subnet, an existing port or server)
/// failed: CAPO returns the error and is requeued, writing no condition at all — the
/// object just shows no server yet.
fn lookup_failed() -> Result<(), ()> {
    Err(())
}

async fn session_for(ctl: &Controllers, s: &Value) -> Option<Session> {
    let ns = namespace(s);
    let secret_name = s["spec"]["identityRef"]["name"].as_str()?.to_string();
    let cloud = s["spec"]["identityRef"]["cloudName"]
        .as_str()
        .unwrap_or("openstack")
        .to_string();
    let clouds_yaml = {
        let clusters = ctl.kube.clusters.lock().unwrap();
        let secret = clusters[MANAGEMENT].get(ix::SECRET, &ns, &secret_name)?;
        let data = secret["data"]["clouds.yaml"].as_str()?;
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .ok()?;
        String::from_utf8(bytes).ok()?
    };
    let creds = credentials(&clouds_yaml, &cloud)?;
    let mut sessions = ctl.sessions.lock().await;
    if let Some(session) = sessions.get(&creds) {
        return Some(session.clone());
    }
    let session = Session::login(&ctl.http, &creds).await.ok()?;
    sessions.insert(creds, session.clone());
    Some(session)
}

/// The volumes CAPO makes for a server: `(name, size GiB, type, from image)`.
fn server_metadata(list: &Value) -> Value {
    let mut map = serde_json::Map::new();
    for kv in list.as_array().into_iter().flatten() {
        if let (Some(k), Some(v)) = (kv["key"].as_str(), kv["value"].as_str()) {
            map.insert(k.to_string(), json!(v));
        }
    }
    Value::Object(map)
}

fn volumes_of(s: &Value) -> Vec<(String, i64, Option<String>, bool)> {
    let n = name(s);
    let mut out = Vec::new();
    let root = &s["spec"]["rootVolume"];
    if let Some(size) = root["sizeGiB"].as_i64() {
        out.push((
            format!("{n}-root"),
            size,
            root["type"].as_str().map(str::to_string),
            true,
        ));
    }
    for d in s["spec"]["additionalBlockDevices"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if d["storage"]["type"] == "Local" {
            continue;
        }
        out.push((
            format!("{n}-{}", d["name"].as_str().unwrap_or("data")),
            d["sizeGiB"].as_i64().unwrap_or(1),
            d["storage"]["volume"]["type"].as_str().map(str::to_string),
            false,
        ));
    }
    out
}

fn port_names(s: &Value) -> Vec<String> {
    let n = name(s);
    let count = s["spec"]["ports"].as_array().map_or(1, Vec::len).max(1);
    (0..count).map(|i| format!("{n}-{i}")).collect()
}

async fn reconcile_server(ctl: &Controllers, s: &Value) -> Result<(), ()> {
    if deleting(s) {
        return delete_server(ctl, s).await;
    }
    if !has_finalizer(s, SERVER_FINALIZER) {
        write_main(ctl, s, |o| add_finalizer(o, SERVER_FINALIZER));
        return Ok(());
    }
    let Some(os) = session_for(ctl, s).await else {
        return Err(());
    };
    if let Some(id) = s["status"]["instanceID"].as_str() {
        return observe(ctl, s, &os, id).await;
    }
    if s["status"]["instanceState"] == "ERROR" {
        // A refused create is terminal.
        return Ok(());
    }
    create(ctl, s, &os).await
}

/// Reads the server's state back; an ERROR before the first ACTIVE is not surfaced.
async fn observe(ctl: &Controllers, s: &Value, os: &Session, id: &str) -> Result<(), ()> {
    let was = s["status"]["instanceState"].as_str().unwrap_or_default();
    if was == "ACTIVE" && s["status"]["ready"] == true {
        // Settled: CAPO re-checks on its resync period only.
        let due = ctl
            .memory
            .lock()
            .unwrap()
            .resync_at
            .get(&uid(s))
            .is_none_or(|at| ctl.clock.now() >= *at);
        if !due {
            return Ok(());
        }
    }
    ctl.memory
        .lock()
        .unwrap()
        .resync_at
        .insert(uid(s), ctl.clock.now() + 30.0);
    let server = match os.get("compute", &format!("/servers/{id}")).await {
        Ok(v) => v["server"].clone(),
        Err(e) if e.status == 404 => {
            write_status(ctl, s, |st| {
                st["ready"] = json!(false);
                st["instanceState"] = json!("DELETED");
            });
            return Ok(());
        }
        Err(_) => return Err(()),
    };
    let state = server["status"].as_str().unwrap_or_default().to_string();
    let addresses: Vec<Value> = server["addresses"]
        .as_object()
        .into_iter()
        .flatten()
        .flat_map(|(_, list)| list.as_array().cloned().unwrap_or_default())
        .filter(|a| a["OS-EXT-IPS:type"] == "fixed")
        .map(|a| json!({"type": "InternalIP", "address": a["addr"]}))
        .collect();
    write_status(ctl, s, |st| {
        st["instanceState"] = json!(state);
        st["ready"] = json!(state == "ACTIVE");
        if !addresses.is_empty() {
            st["addresses"] = json!(addresses);
        }
        match state.as_str() {
            "ACTIVE" => set_condition(st, "InstanceReady", "True", "", ""),
            // CAPO's OpenStackServer controller: reason InstanceStateError, no message; the
            // fault stays in Nova (CAPO#3375).
            "ERROR" => set_condition(st, "InstanceReady", "False", "InstanceStateError", ""),
            other => set_condition(
                st,
                "InstanceReady",
                "False",
                "InstanceNotReady",
                &format!("Instance state is {other}"),
            ),
        }
    });
    Ok(())
}

/// The ID of the one item of `key` named `name`, as CAPO resolves a filter by name.
async fn resolve(
    os: &Session,
    service: &str,
    path: &str,
    key: &str,
    name: &str,
) -> Result<String, CallError> {
    match os.find_by_name(service, path, key, name).await? {
        Some(x) => Ok(x["id"].as_str().unwrap_or_default().to_string()),
        None => Err(CallError {
            status: 404,
            message: format!(
                "no {} found matching name {name:?}",
                key.trim_end_matches('s')
            ),
        }),
    }
}

/// Resolves references, then ports, volumes and the server, adopting what already exists.
async fn create(ctl: &Controllers, s: &Value, os: &Session) -> Result<(), ()> {
    let n = name(s);
    let spec = &s["spec"];
    let image_name = spec["image"]["filter"]["name"].as_str().unwrap_or_default();
    let image = match resolve(os, "image", "/images", "images", image_name).await {
        Ok(id) => id,
        Err(_) => return lookup_failed(),
    };
    let flavor_name = spec["flavor"].as_str().unwrap_or_default();
    let flavor = match resolve(os, "compute", "/flavors/detail", "flavors", flavor_name).await {
        Ok(id) => id,
        Err(_) => return lookup_failed(),
    };
    let az = spec["availabilityZone"].as_str().map(str::to_string);
    // Security groups, looked up within the project (CAPO sets `ProjectID` on the query) and
    // applied to every port; one that cannot be found stops here, before any port.
    let mut groups = Vec::new();
    for g in spec["securityGroups"].as_array().into_iter().flatten() {
        let name = g["filter"]["name"].as_str().unwrap_or_default();
        let path = format!("/security-groups?project_id={}", os.project_id);
        match resolve(os, "network", &path, "security_groups", name).await {
            Ok(id) => groups.push(id),
            Err(_) => return lookup_failed(),
        }
    }
    // Ports.
    let mut port_ids = Vec::new();
    let ports = spec["ports"].as_array().cloned().unwrap_or_default();
    for (i, port_name) in port_names(s).into_iter().enumerate() {
        let p = ports.get(i).cloned().unwrap_or(json!({}));
        match os
            .find_by_name("network", "/ports", "ports", &port_name)
            .await
        {
            Ok(Some(existing)) => {
                port_ids.push(existing["id"].as_str().unwrap_or_default().to_string());
                continue;
            }
            Ok(None) => {}
            Err(_) => return lookup_failed(),
        }
        let net_name = p["network"]["filter"]["name"].as_str().unwrap_or_default();
        let network = match resolve(os, "network", "/networks", "networks", net_name).await {
            Ok(id) => id,
            Err(_) => return lookup_failed(),
        };
        let mut fixed = Vec::new();
        for f in p["fixedIPs"].as_array().into_iter().flatten() {
            let mut entry = json!({});
            if let Some(sub) = f["subnet"]["filter"]["name"].as_str() {
                match resolve(os, "network", "/subnets", "subnets", sub).await {
                    Ok(id) => entry["subnet_id"] = json!(id),
                    Err(_) => return lookup_failed(),
                }
            }
            if let Some(ip) = f["ipAddress"].as_str() {
                entry["ip_address"] = json!(ip);
            }
            fixed.push(entry);
        }
        let mut body = json!({"port": {
            "name": port_name, "network_id": network,
            "description": format!("Created by cluster-api-provider-openstack cluster {}-{}",
                namespace(s), s["metadata"]["labels"][CLUSTER_NAME_LABEL].as_str().unwrap_or_default()),
        }});
        if !fixed.is_empty() {
            body["port"]["fixed_ips"] = json!(fixed);
        }
        if !groups.is_empty() {
            body["port"]["security_groups"] = json!(groups);
        }
        match os
            .call(Method::POST, "network", "/ports", Some(&body), &[201])
            .await
        {
            Ok(v) => {
                let id = v["port"]["id"].as_str().unwrap_or_default().to_string();
                // CAPO tags the port with the machine's tags right after creating it.
                if let Some(tags) = spec["tags"].as_array().filter(|t| !t.is_empty()) {
                    let body = json!({ "tags": tags });
                    // A refusal is a plain requeue with no condition, as in CAPO.
                    if os
                        .call(
                            Method::PUT,
                            "network",
                            &format!("/ports/{id}/tags"),
                            Some(&body),
                            &[200],
                        )
                        .await
                        .is_err()
                    {
                        return lookup_failed();
                    }
                }
                port_ids.push(id);
            }
            Err(e) => return create_failed(ctl, s, "", &e),
        }
    }
    // Volumes.
    let mut bdm = Vec::new();
    for (vol_name, size, vol_type, from_image) in volumes_of(s) {
        let id = match os
            .find_by_name("block-storage", "/volumes/detail", "volumes", &vol_name)
            .await
        {
            Ok(Some(v)) => v["id"].as_str().unwrap_or_default().to_string(),
            Ok(None) => {
                // CAPO's descriptions (getBlockDevices): the volume's only link to its node.
                let description = if from_image {
                    format!("Root volume for {n}")
                } else {
                    format!("Additional block device for {n}")
                };
                let mut body =
                    json!({"volume": {"name": vol_name, "size": size, "description": description}});
                if let Some(t) = &vol_type {
                    body["volume"]["volume_type"] = json!(t);
                }
                if from_image {
                    body["volume"]["imageRef"] = json!(image);
                }
                if let Some(az) = &az {
                    body["volume"]["availability_zone"] = json!(az.split(':').next().unwrap_or(az));
                }
                match os
                    .call(
                        Method::POST,
                        "block-storage",
                        "/volumes",
                        Some(&body),
                        &[202],
                    )
                    .await
                {
                    Ok(v) => v["volume"]["id"].as_str().unwrap_or_default().to_string(),
                    Err(e) => return create_failed(ctl, s, "", &e),
                }
            }
            Err(_) => return lookup_failed(),
        };
        bdm.push(json!({
            "source_type": "volume", "destination_type": "volume", "uuid": id,
            "boot_index": if from_image { 0 } else { -1 }, "delete_on_termination": false,
        }));
    }
    // The server, adopted when one of that name exists.
    let existing = match os.find_by_name("compute", "/servers", "servers", &n).await {
        Ok(x) => x,
        Err(_) => return lookup_failed(),
    };
    let id = match existing {
        Some(x) => x["id"].as_str().unwrap_or_default().to_string(),
        None => {
            let user_data = {
                let clusters = ctl.kube.clusters.lock().unwrap();
                spec["userDataRef"]["name"]
                    .as_str()
                    .and_then(|sn| clusters[MANAGEMENT].get(ix::SECRET, &namespace(s), sn))
                    .and_then(|sec| sec["data"]["value"].as_str())
                    .map(str::to_string)
            };
            let has_root = spec["rootVolume"]["sizeGiB"].is_i64();
            let mut server = json!({
                "name": n, "flavorRef": flavor,
                "imageRef": if has_root { String::new() } else { image.clone() },
                "networks": port_ids.iter().map(|p| json!({"port": p})).collect::<Vec<_>>(),
                // v1beta1's serverMetadata is a list of {key, value}; Nova takes a map.
                "metadata": server_metadata(&spec["serverMetadata"]),
                "tags": spec["tags"].as_array().cloned().unwrap_or_default(),
            });
            if !bdm.is_empty() {
                server["block_device_mapping_v2"] = json!(bdm);
            }
            if let Some(az) = &az {
                server["availability_zone"] = json!(az);
            }
            if let Some(ud) = user_data {
                server["user_data"] = json!(ud);
            }
            // gophercloud's `key_name` is `omitempty`: CAPO's empty sshKeyName (its Go type
            // always writes the field) sends no key at all.
            if let Some(k) = spec["sshKeyName"].as_str().filter(|k| !k.is_empty()) {
                server["key_name"] = json!(k);
            }
            match os
                .call(
                    Method::POST,
                    "compute",
                    "/servers",
                    Some(&json!({ "server": server })),
                    &[202],
                )
                .await
            {
                Ok(v) => v["server"]["id"].as_str().unwrap_or_default().to_string(),
                Err(e) => return create_failed(ctl, s, "", &e),
            }
        }
    };
    let ports_status: Vec<Value> = port_ids.iter().map(|p| json!({"id": p})).collect();
    write_status(ctl, s, |st| {
        st["instanceID"] = json!(id);
        st["instanceState"] = json!("BUILD");
        st["ready"] = json!(false);
        st["resolved"] = json!({"imageID": image, "flavorID": flavor});
        st["resources"] = json!({"ports": ports_status});
        set_condition(
            st,
            "InstanceReady",
            "False",
            "InstanceNotReady",
            "Instance state is BUILD",
        );
    });
    Ok(())
}

/// Deletion: the server (waiting until Nova forgets it), then volumes and ports by name —
/// unless a fault says they leak — then the finalizer.
async fn delete_server(ctl: &Controllers, s: &Value) -> Result<(), ()> {
    if !has_finalizer(s, SERVER_FINALIZER) {
        return Ok(());
    }
    let Some(os) = session_for(ctl, s).await else {
        return Err(());
    };
    let n = name(s);
    let id = match s["status"]["instanceID"].as_str() {
        Some(id) => Some(id.to_string()),
        None => os
            .find_by_name("compute", "/servers", "servers", &n)
            .await
            .map_err(|_| ())?
            .and_then(|x| x["id"].as_str().map(str::to_string)),
    };
    if let Some(id) = id {
        match os.get("compute", &format!("/servers/{id}")).await {
            Ok(_) => {
                os.call(
                    Method::DELETE,
                    "compute",
                    &format!("/servers/{id}"),
                    None,
                    &[204, 404],
                )
                .await
                .map_err(|_| ())?;
                if os.get("compute", &format!("/servers/{id}")).await.is_ok() {
                    return Err(());
                }
            }
            Err(e) if e.status == 404 => {}
            Err(_) => return Err(()),
        }
    }
    let (leak_ports, leak_volumes) = {
        let f = ctl.faults.lock().unwrap();
        (f.leak_ports, f.leak_volumes)
    };
    if !leak_volumes {
        for (vol_name, ..) in volumes_of(s) {
            delete_named(&os, "block-storage", "/volumes", "volumes", &vol_name, 202).await?;
        }
    }
    if !leak_ports {
        for port_name in port_names(s) {
            delete_named(&os, "network", "/ports", "ports", &port_name, 204).await?;
        }
    }
    write_main(ctl, s, |o| remove_finalizer(o, SERVER_FINALIZER));
    Ok(())
}

/// Deletes the item of `collection` named `name`, if there is one (a 404 counts as done).
async fn delete_named(
    os: &Session,
    service: &str,
    collection: &str,
    key: &str,
    name: &str,
    deleted: u16,
) -> Result<(), ()> {
    let list = if key == "volumes" {
        format!("{collection}/detail")
    } else {
        collection.to_string()
    };
    let Some(item) = os
        .find_by_name(service, &list, key, name)
        .await
        .map_err(|_| ())?
    else {
        return Ok(());
    };
    let id = item["id"].as_str().unwrap_or_default();
    os.call(
        Method::DELETE,
        service,
        &format!("{collection}/{id}"),
        None,
        &[deleted, 404],
    )
    .await
    .map(|_| ())
    .map_err(|_| ())
}
