//! Two tenants on one simulated cloud: `demo` (whose user is an admin) and `acme` (a member
//! only). Each uses its own entry of the written `clouds.yaml`; what one project owns is
//! absent (404) to the other, lists are the caller's project's, quotas and limits are per
//! project, and the admin-only policies refuse acme as Nova, Neutron, Cinder and Keystone do.
//! The acme cluster's workers run in acme's project, with acme's credentials.

use kube::Client;
use kube::api::{Api, DynamicObject};
use openstack::auth::Password;
use openstack::{ErrorKind, IdOrName};
use reqwest::Method;
use serde_json::{Value, json};

use super::k8s::{capi_in, eventually, json_of, resource};
use super::{Sim, kube_client, start_sim};

const ACME: &str = "capstan-sim-acme";
const DEMO: &str = "capstan-sim";

/// One entry of the written clouds.yaml.
fn entry(sim: &Sim, cloud: &str) -> serde_yaml::Value {
    let text = std::fs::read_to_string(&sim.clouds_yaml).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    doc["clouds"][cloud].clone()
}

fn auth_field(sim: &Sim, cloud: &str, key: &str) -> String {
    entry(sim, cloud)["auth"][key]
        .as_str()
        .unwrap_or_else(|| panic!("{cloud}: auth.{key}"))
        .to_string()
}

/// The `openstack` crate, logged in with a clouds.yaml entry.
async fn login_as(sim: &Sim, cloud: &str) -> openstack::Cloud {
    let a = |k: &str| auth_field(sim, cloud, k);
    let pw = Password::new(
        a("auth_url"),
        a("username"),
        a("password"),
        a("user_domain_name"),
    )
    .unwrap()
    .with_project_scope(
        IdOrName::Name(a("project_name")),
        IdOrName::Name(a("project_domain_name")),
    );
    openstack::Cloud::new(pw).await.unwrap()
}

/// Keystone's answer to a password login (status, subject token, body).
async fn password_login(
    sim: &Sim,
    user: &str,
    password: &str,
    project: &str,
) -> (u16, Option<String>, Value) {
    let body = json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": user, "domain": {"name": "Default"}, "password": password}}},
        "scope": {"project": {"name": project, "domain": {"name": "Default"}}}}});
    let resp = reqwest::Client::new()
        .post(format!("{}/identity/v3/auth/tokens", sim.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let token = resp
        .headers()
        .get("x-subject-token")
        .map(|v| v.to_str().unwrap().to_string());
    (status, token, resp.json().await.unwrap_or(Value::Null))
}

/// A token for a clouds.yaml entry, and its project's ID.
async fn token_for(sim: &Sim, cloud: &str) -> (String, String) {
    let a = |k: &str| auth_field(sim, cloud, k);
    let (status, token, body) =
        password_login(sim, &a("username"), &a("password"), &a("project_name")).await;
    assert_eq!(status, 201, "{cloud}: {body}");
    (
        token.unwrap(),
        body["token"]["project"]["id"].as_str().unwrap().to_string(),
    )
}

/// A raw call (`path` from the service prefix on) with extra headers; status and body.
async fn call_with(
    sim: &Sim,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method, format!("{}{path}", sim.url))
        .header("x-auth-token", token);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn call(sim: &Sim, token: &str, method: Method, path: &str) -> (u16, Value) {
    call_with(sim, token, method, path, None, &[]).await
}

fn names(list: &Value) -> Vec<String> {
    let mut out: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap_or_default().to_string())
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn clouds_yaml_has_an_entry_per_project_user_with_everything_a_client_reads() {
    let sim = start_sim();
    for (cloud, user, project) in [(DEMO, "admin", "demo"), (ACME, "acme-admin", "acme")] {
        let e = entry(&sim, cloud);
        for key in [
            "auth_url",
            "username",
            "password",
            "project_id",
            "project_name",
            "user_domain_name",
            "project_domain_name",
        ] {
            assert!(e["auth"][key].as_str().is_some(), "{cloud}: auth.{key}");
        }
        assert_eq!(e["auth"]["username"].as_str(), Some(user), "{cloud}");
        assert_eq!(e["auth"]["project_name"].as_str(), Some(project), "{cloud}");
        assert_eq!(e["region_name"].as_str(), Some("RegionOne"), "{cloud}");
        assert_eq!(e["interface"].as_str(), Some("public"), "{cloud}");
        assert_eq!(e["identity_api_version"].as_u64(), Some(3), "{cloud}");
        // The project ID written is the one Keystone scopes the token to.
        let (_, project_id) = token_for(&sim, cloud).await;
        assert_eq!(auth_field(&sim, cloud, "project_id"), project_id, "{cloud}");
    }
    assert_ne!(
        auth_field(&sim, DEMO, "project_id"),
        auth_field(&sim, ACME, "project_id")
    );
}

#[tokio::test]
async fn acme_sees_its_own_network_and_servers_and_no_other_projects() {
    let sim = start_sim();
    let acme = login_as(&sim, ACME).await;
    let mut networks: Vec<String> = acme
        .list_networks()
        .await
        .unwrap()
        .iter()
        .filter_map(|n| n.name().clone())
        .collect();
    networks.sort();
    assert_eq!(networks, vec!["acme-net", "public"]);
    assert_eq!(
        acme.get_network("demo-net").await.unwrap_err().kind(),
        ErrorKind::ResourceNotFound
    );

    let servers: Vec<String> = acme
        .list_servers()
        .await
        .unwrap()
        .iter()
        .map(|s| s.name().clone())
        .collect();
    assert_eq!(servers.len(), 2, "{servers:?}");
    assert!(
        servers.iter().all(|n| n.starts_with("prod-md-0-")),
        "{servers:?}"
    );
    // demo's three workers are demo's alone, even to its admin without all_tenants.
    let demo = login_as(&sim, DEMO).await;
    let demo_servers: Vec<String> = demo
        .list_servers()
        .await
        .unwrap()
        .iter()
        .map(|s| s.name().clone())
        .collect();
    assert_eq!(demo_servers.len(), 3, "{demo_servers:?}");
    assert!(
        demo_servers.iter().all(|n| n.starts_with("demo-md-0-")),
        "{demo_servers:?}"
    );

    // all_tenants: Nova's policy refuses a member; an admin gets every project's servers.
    let (acme_token, acme_id) = token_for(&sim, ACME).await;
    for (path, rule) in [
        ("/compute/v2.1/servers?all_tenants=1", "index"),
        ("/compute/v2.1/servers/detail?all_tenants=1", "detail"),
    ] {
        let (status, body) = call(&sim, &acme_token, Method::GET, path).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert_eq!(
            body["forbidden"]["message"],
            format!(
                "Policy doesn't allow os_compute_api:servers:{rule}:get_all_tenants to be performed."
            )
        );
    }
    let (demo_token, _) = token_for(&sim, DEMO).await;
    let (status, all) = call(
        &sim,
        &demo_token,
        Method::GET,
        "/compute/v2.1/servers/detail?all_tenants=1",
    )
    .await;
    assert_eq!(status, 200);
    let all = all["servers"].as_array().unwrap();
    assert_eq!(all.len(), 5);
    assert_eq!(all.iter().filter(|s| s["tenant_id"] == acme_id).count(), 2);
}

/// Creates a port on demo-net, a floating IP and a volume with demo's token; their IDs.
async fn demo_resources(sim: &Sim, token: &str) -> (String, String, String) {
    let (_, nets) = call(
        sim,
        token,
        Method::GET,
        "/networking/v2.0/networks?name=demo-net",
    )
    .await;
    let net = nets["networks"][0]["id"].as_str().unwrap().to_string();
    let (_, nets) = call(
        sim,
        token,
        Method::GET,
        "/networking/v2.0/networks?name=public",
    )
    .await;
    let public = nets["networks"][0]["id"].as_str().unwrap().to_string();
    let post = |path: &'static str, body: Value| async move {
        let (status, v) = call_with(sim, token, Method::POST, path, Some(body), &[]).await;
        assert!(status == 201 || status == 202, "{path}: {status} {v}");
        v
    };
    let port = post(
        "/networking/v2.0/ports",
        json!({"port": {"network_id": net, "name": "demo-probe"}}),
    )
    .await;
    let fip = post(
        "/networking/v2.0/floatingips",
        json!({"floatingip": {"floating_network_id": public}}),
    )
    .await;
    let volume = post(
        "/volume/v3/volumes",
        json!({"volume": {"size": 1, "name": "demo-probe"}}),
    )
    .await;
    (
        port["port"]["id"].as_str().unwrap().to_string(),
        fip["floatingip"]["id"].as_str().unwrap().to_string(),
        volume["volume"]["id"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn another_projects_resources_are_not_found_to_acme_and_survive_its_deletes() {
    let sim = start_sim();
    let (demo, demo_id) = token_for(&sim, DEMO).await;
    let (acme, acme_id) = token_for(&sim, ACME).await;
    let (port, fip, volume) = demo_resources(&sim, &demo).await;
    let (_, servers) = call(&sim, &demo, Method::GET, "/compute/v2.1/servers").await;
    let server = servers["servers"][0]["id"].as_str().unwrap().to_string();

    // What each records of its owner, as upstream shows it.
    let (_, p) = call(
        &sim,
        &demo,
        Method::GET,
        &format!("/networking/v2.0/ports/{port}"),
    )
    .await;
    assert_eq!(
        (&p["port"]["project_id"], &p["port"]["tenant_id"]),
        (&json!(demo_id), &json!(demo_id))
    );
    let (_, f) = call(
        &sim,
        &demo,
        Method::GET,
        &format!("/networking/v2.0/floatingips/{fip}"),
    )
    .await;
    assert_eq!(
        (
            &f["floatingip"]["project_id"],
            &f["floatingip"]["tenant_id"]
        ),
        (&json!(demo_id), &json!(demo_id))
    );
    let (_, v) = call(
        &sim,
        &demo,
        Method::GET,
        &format!("/volume/v3/volumes/{volume}"),
    )
    .await;
    assert_eq!(v["volume"]["os-vol-tenant-attr:tenant_id"], demo_id);

    let cases = [
        (
            format!("/compute/v2.1/servers/{server}"),
            json!({"itemNotFound": {"code": 404, "message": format!("Instance {server} could not be found.")}}),
        ),
        (
            format!("/networking/v2.0/ports/{port}"),
            json!({"NeutronError": {"type": "PortNotFound", "message": format!("Port {port} could not be found."), "detail": ""}}),
        ),
        (
            format!("/networking/v2.0/floatingips/{fip}"),
            json!({"NeutronError": {"type": "FloatingIPNotFound", "message": format!("Floating IP {fip} could not be found"), "detail": ""}}),
        ),
        (
            format!("/volume/v3/volumes/{volume}"),
            json!({"itemNotFound": {"code": 404, "message": format!("Volume {volume} could not be found.")}}),
        ),
    ];
    for (path, want) in &cases {
        for method in [Method::GET, Method::DELETE] {
            let (status, body) = call(&sim, &acme, method.clone(), path).await;
            assert_eq!(status, 404, "{method} {path} as acme: {body}");
            let key = want.as_object().unwrap().keys().next().unwrap();
            for (k, v) in want[key].as_object().unwrap() {
                assert_eq!(&body[key][k], v, "{method} {path} as acme: {body}");
            }
        }
    }
    // Still there, to their owner.
    for (path, _) in &cases {
        let (status, body) = call(&sim, &demo, Method::GET, path).await;
        assert_eq!(status, 200, "GET {path} as demo: {body}");
    }

    // Lists: acme's own only. demo's admin sees every project's ports, as Neutron shows
    // them to an admin, unless it filters by project.
    let (_, ports) = call(&sim, &acme, Method::GET, "/networking/v2.0/ports").await;
    let ports = ports["ports"].as_array().unwrap();
    assert_eq!(ports.len(), 2, "acme's two workers' ports");
    assert!(ports.iter().all(|p| p["project_id"] == acme_id));
    let (_, fips) = call(&sim, &acme, Method::GET, "/networking/v2.0/floatingips").await;
    assert_eq!(fips["floatingips"], json!([]));
    let (_, vols) = call(&sim, &acme, Method::GET, "/volume/v3/volumes/detail").await;
    assert_eq!(vols["volumes"], json!([]));
    let (_, all) = call(&sim, &demo, Method::GET, "/networking/v2.0/ports").await;
    assert_eq!(all["ports"].as_array().unwrap().len(), 3 + 2 + 1);
    let (_, own) = call(
        &sim,
        &demo,
        Method::GET,
        &format!("/networking/v2.0/ports?project_id={demo_id}"),
    )
    .await;
    assert_eq!(own["ports"].as_array().unwrap().len(), 3 + 1);
    // Cinder widens only an admin's list, and only with all_tenants.
    let (_, vols) = call(
        &sim,
        &acme,
        Method::GET,
        "/volume/v3/volumes/detail?all_tenants=1",
    )
    .await;
    assert_eq!(vols["volumes"], json!([]));
}

#[tokio::test]
async fn limits_quotas_and_admin_only_calls_are_per_project() {
    let sim = start_sim();
    let (demo, demo_id) = token_for(&sim, DEMO).await;
    let (acme, acme_id) = token_for(&sim, ACME).await;

    let (status, limits) = call(&sim, &acme, Method::GET, "/compute/v2.1/limits").await;
    assert_eq!(status, 200);
    let abs = &limits["limits"]["absolute"];
    assert_eq!(
        (
            &abs["maxTotalInstances"],
            &abs["maxTotalCores"],
            &abs["maxTotalRAMSize"]
        ),
        (&json!(10), &json!(40), &json!(81920))
    );
    assert_eq!(
        (
            &abs["totalInstancesUsed"],
            &abs["totalCoresUsed"],
            &abs["totalRAMUsed"]
        ),
        (&json!(2), &json!(4), &json!(8192))
    );
    let (_, limits) = call(&sim, &demo, Method::GET, "/compute/v2.1/limits").await;
    assert_eq!(limits["limits"]["absolute"]["maxTotalInstances"], 50);
    assert_eq!(limits["limits"]["absolute"]["totalInstancesUsed"], 3);

    let (status, q) = call(
        &sim,
        &acme,
        Method::GET,
        &format!("/compute/v2.1/os-quota-sets/{acme_id}/detail"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(q["quota_set"]["instances"]["limit"], 10);
    assert_eq!(q["quota_set"]["instances"]["in_use"], 2);
    let (_, v) = call(&sim, &acme, Method::GET, "/volume/v3/limits").await;
    assert_eq!(v["limits"]["absolute"]["maxTotalVolumes"], 20);
    assert_eq!(v["limits"]["absolute"]["maxTotalVolumeGigabytes"], 1000);
    let (_, v) = call(
        &sim,
        &acme,
        Method::GET,
        &format!("/volume/v3/os-quota-sets/{acme_id}?usage=true"),
    )
    .await;
    assert_eq!(v["quota_set"]["volumes"]["limit"], 20);
    let (status, n) = call(
        &sim,
        &acme,
        Method::GET,
        &format!("/networking/v2.0/quotas/{acme_id}/details"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        n["quota"]["port"],
        json!({"limit": 40, "used": 2, "reserved": 0})
    );
    assert_eq!(n["quota"]["floatingip"]["limit"], 5);

    // Another project's quota is an admin's business.
    let refused = [
        (
            format!("/compute/v2.1/os-quota-sets/{demo_id}"),
            "forbidden",
            "Policy doesn't allow os_compute_api:os-quota-sets:show to be performed.",
        ),
        (
            format!("/compute/v2.1/limits?tenant_id={demo_id}"),
            "forbidden",
            "Policy doesn't allow os_compute_api:limits:other_project to be performed.",
        ),
        (
            format!("/volume/v3/os-quota-sets/{demo_id}"),
            "forbidden",
            "Policy doesn't allow volume_extension:quotas:show to be performed.",
        ),
        (
            format!("/networking/v2.0/quotas/{demo_id}/details"),
            "NeutronError",
            "get_quota is disallowed by policy",
        ),
        (
            "/compute/v2.1/os-hypervisors/detail".to_string(),
            "forbidden",
            "Policy doesn't allow os_compute_api:os-hypervisors:list-detail to be performed.",
        ),
    ];
    for (path, key, message) in &refused {
        let (status, body) = call(&sim, &acme, Method::GET, path).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert_eq!(body[key]["message"], *message, "{path}");
    }
    let (status, q) = call(
        &sim,
        &demo,
        Method::GET,
        &format!("/compute/v2.1/os-quota-sets/{acme_id}"),
    )
    .await;
    assert_eq!(status, 200, "an admin reads any project's quota");
    assert_eq!(q["quota_set"]["instances"], 10);
    let (status, h) = call(
        &sim,
        &demo,
        Method::GET,
        "/compute/v2.1/os-hypervisors/detail",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(h["hypervisors"].as_array().unwrap().len(), 4);

    // Host pinning is an admin's: `az:host`, and 2.74's `host`.
    let (_, f) = call(&sim, &acme, Method::GET, "/compute/v2.1/flavors").await;
    let flavor = f["flavors"][0]["id"].as_str().unwrap().to_string();
    let (_, i) = call(&sim, &acme, Method::GET, "/image/v2/images").await;
    let image = i["images"][0]["id"].as_str().unwrap().to_string();
    let server = |extra: Value| {
        let mut s = json!({"name": "acme-pinned", "flavorRef": flavor, "imageRef": image, "networks": "none"});
        s.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!({ "server": s })
    };
    for (extra, version, rule) in [
        (
            json!({"availability_zone": "az2:compute-3"}),
            "2.60",
            "forced_host",
        ),
        (
            json!({"host": "compute-3"}),
            "2.74",
            "requested_destination",
        ),
    ] {
        let (status, body) = call_with(
            &sim,
            &acme,
            Method::POST,
            "/compute/v2.1/servers",
            Some(server(extra)),
            &[("x-openstack-nova-api-version", version)],
        )
        .await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(
            body["forbidden"]["message"],
            format!("Policy doesn't allow os_compute_api:servers:create:{rule} to be performed.")
        );
    }
    let (_, servers) = call(&sim, &acme, Method::GET, "/compute/v2.1/servers").await;
    assert_eq!(
        servers["servers"].as_array().unwrap().len(),
        2,
        "nothing created"
    );
}

#[tokio::test]
async fn keystone_lists_the_users_projects_and_validates_tokens() {
    let sim = start_sim();
    let (demo, _) = token_for(&sim, DEMO).await;
    let (acme, acme_id) = token_for(&sim, ACME).await;
    let http = reqwest::Client::new();
    let identity = format!("{}/identity/v3", sim.url);

    let resp = http
        .get(format!("{identity}/auth/projects"))
        .header("x-auth-token", &acme)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let projects: Value = resp.json().await.unwrap();
    let list = projects["projects"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{projects}");
    assert_eq!(
        (
            &list[0]["id"],
            &list[0]["name"],
            &list[0]["domain_id"],
            &list[0]["enabled"]
        ),
        (
            &json!(acme_id),
            &json!("acme"),
            &json!("default"),
            &json!(true)
        )
    );
    assert!(
        list[0]["links"]["self"]
            .as_str()
            .unwrap()
            .ends_with(&acme_id)
    );
    assert!(
        projects["links"]["self"]
            .as_str()
            .unwrap()
            .ends_with("/auth/projects")
    );

    let validate = |auth: &str, subject: &str| {
        http.get(format!("{identity}/auth/tokens"))
            .header("x-auth-token", auth)
            .header("x-subject-token", subject)
            .send()
    };
    let resp = validate(&acme, &acme).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-subject-token"], acme.as_str());
    let t: Value = resp.json().await.unwrap();
    assert_eq!(t["token"]["project"]["id"], acme_id);
    assert_eq!(t["token"]["project"]["name"], "acme");
    assert_eq!(t["token"]["user"]["name"], "acme-admin");
    assert_eq!(
        t["token"]["roles"],
        json!([{"id": "member", "name": "member"}])
    );
    // An admin validates anyone's token; a member only its own.
    let resp = validate(&demo, &acme).await.unwrap();
    assert_eq!(resp.status(), 200);
    let t: Value = resp.json().await.unwrap();
    assert_eq!(t["token"]["project"]["name"], "acme");
    let resp = validate(&acme, &demo).await.unwrap();
    assert_eq!(resp.status(), 403);
    let resp = validate(&acme, "no-such-token").await.unwrap();
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["error"]["message"],
        "Could not find token: no-such-token."
    );
    let resp = validate("no-such-token", &acme).await.unwrap();
    assert_eq!(resp.status(), 401);

    // A wrong password, and a project the user has no role on, are Keystone's 401.
    for (password, project) in [("not-acme-secret", "acme"), ("acme-secret", "demo")] {
        let (status, token, body) = password_login(&sim, "acme-admin", password, project).await;
        assert_eq!((status, token), (401, None), "{password} {project}");
        assert_eq!(
            body["error"]["message"],
            "The request you have made requires authentication."
        );
    }
}

fn secret_clouds_yaml(secret: &k8s_openapi::api::core::v1::Secret) -> serde_yaml::Value {
    let data = secret.data.as_ref().unwrap()["clouds.yaml"].0.clone();
    serde_yaml::from_slice(&data).unwrap()
}

#[tokio::test]
async fn the_acme_cluster_runs_its_workers_in_acmes_project_with_acmes_credentials() {
    let sim = start_sim();
    let client: Client = kube_client(&sim.kubeconfig).await;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    namespaces.get("acme").await.expect("namespace acme");

    // Each cluster's identityRef names a Secret in its namespace with its project's user.
    for (ns, cluster, user, project) in [
        ("default", "demo", "admin", "demo"),
        ("acme", "prod", "acme-admin", "acme"),
    ] {
        let osc: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            ns,
            &resource(
                "infrastructure.cluster.x-k8s.io",
                "v1beta1",
                "OpenStackCluster",
            ),
        );
        let osc = json_of(&osc.get(cluster).await.unwrap());
        let secret_name = format!("{cluster}-cloud-config");
        assert_eq!(osc["spec"]["identityRef"]["name"], secret_name.as_str());
        let cloud_name = osc["spec"]["identityRef"]["cloudName"].as_str().unwrap();
        let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), ns);
        let yaml = secret_clouds_yaml(&secrets.get(&secret_name).await.unwrap());
        let auth = &yaml["clouds"][cloud_name]["auth"];
        assert_eq!(auth["username"].as_str(), Some(user), "{ns}/{cluster}");
        assert_eq!(
            auth["project_name"].as_str(),
            Some(project),
            "{ns}/{cluster}"
        );
    }

    let (acme, acme_id) = token_for(&sim, ACME).await;
    let machines = capi_in(&client, "acme", "Machine");
    let running: Vec<Value> = eventually("acme's two Machines Running", || {
        let machines = machines.clone();
        async move {
            let list = machines.list(&Default::default()).await.ok()?;
            let items: Vec<Value> = list.items.iter().map(json_of).collect();
            (items.len() == 2 && items.iter().all(|m| m["status"]["phase"] == "Running"))
                .then_some(items)
        }
    })
    .await;
    let mut ips = Vec::new();
    for m in &running {
        let name = m["metadata"]["name"].as_str().unwrap();
        assert!(name.starts_with("prod-md-0-"), "{name}");
        assert_eq!(m["spec"]["failureDomain"], "az2", "{name}");
        let id = m["spec"]["providerID"]
            .as_str()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .to_string();
        let (status, s) = call(
            &sim,
            &acme,
            Method::GET,
            &format!("/compute/v2.1/servers/{id}"),
        )
        .await;
        assert_eq!(status, 200, "{name}'s server, to acme");
        assert_eq!(s["server"]["tenant_id"], acme_id, "{name}");
        assert_eq!(s["server"]["name"], name);
        assert_eq!(s["server"]["status"], "ACTIVE");
        ips.push(s["server"]["addresses"]["acme-net"][0]["addr"].clone());
    }
    assert!(
        ips.iter()
            .all(|ip| ip.as_str().is_some_and(|a| a.starts_with("10.7.0."))),
        "{ips:?}"
    );
    // The ground truth agrees: acme's servers are the two, demo's the other three.
    let console = sim.console();
    let state = |project: &'static str| {
        let console = &console;
        async move { console.state(&format!("?project={project}")).await }
    };
    let acme_state = state("acme").await;
    let mut want: Vec<String> = running
        .iter()
        .map(|m| m["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    want.sort();
    assert_eq!(names(&acme_state["servers"]), want);
    assert_eq!(state("demo").await["servers"].as_array().unwrap().len(), 3);
}
