//! The stories: the requests Capstan and CAPO make, told to one side; each records what the
//! side answered under a label, and how the two answers are to be compared.

use reqwest::Method;
use serde_json::{Value, json};

use super::{CAPSTAN_MV, PREFIX, Pair, Reply, Side};

/// How the two answers to one request are compared.
pub enum Check {
    /// Same status and, for a success, the same shape; the paths listed are not compared.
    Shape(&'static [&'static str]),
    /// Same status, error body structure and message (IDs masked; numbers too when asked).
    Error { mask_numbers: bool },
    /// The same status and body, value for value.
    Same,
    /// The same status only.
    Status,
}

/// One answer of a story.
pub struct Seen {
    pub label: String,
    pub check: Check,
    pub reply: Reply,
}

#[derive(Default)]
struct Transcript(Vec<Seen>);

impl Transcript {
    fn shape(&mut self, label: &str, reply: Reply, ignore: &'static [&'static str]) -> Value {
        let body = reply.body.clone();
        self.push(label, Check::Shape(ignore), reply);
        body
    }

    fn error(&mut self, label: &str, reply: Reply) {
        self.push(
            label,
            Check::Error {
                mask_numbers: false,
            },
            reply,
        );
    }

    fn push(&mut self, label: &str, check: Check, reply: Reply) {
        self.0.push(Seen {
            label: label.to_string(),
            check,
            reply,
        });
    }

    /// The item named `name` of a list answer, as its own document.
    fn item(
        &mut self,
        label: &str,
        list: &Reply,
        key: &str,
        name: &str,
        ignore: &'static [&'static str],
    ) -> Value {
        let item = list.body[key]
            .as_array()
            .into_iter()
            .flatten()
            .find(|x| {
                x["name"] == name || x["zoneName"] == name || x["hypervisor_hostname"] == name
            })
            .cloned()
            .unwrap_or(Value::Null);
        let status = if item.is_null() { 404 } else { list.status };
        self.shape(
            label,
            Reply {
                status,
                body: item.clone(),
            },
            ignore,
        );
        item
    }
}

/// Objects whose keys are data (metadata, addresses by network name).
const SERVER_IGNORED: &[&str] = &[
    "map:server.metadata",
    "map:server.addresses",
    "map:servers[].metadata",
    "map:servers[].addresses",
];

/// The properties openstacksdk's upload writes on the lab's image (its own bookkeeping, not
/// Glance's).
const IMAGE_IGNORED: &[&str] = &[
    "owner_specified.openstack.md5",
    "owner_specified.openstack.object",
    "owner_specified.openstack.sha256",
];

/// What the mechanism driver that bound a port says about it: the lab's own driver there,
/// OVS or OVN elsewhere; nobody reads it.
const BOUND_PORT_IGNORED: &[&str] = &["ports[].binding:vif_details"];

const FLAVOR: &str = "k8s.small";
const BIG_FLAVOR: &str = "k8s.workload";
const IMAGE: &str = "ubuntu-2204-kube-v1.30";
/// A public key Nova accepts (generated for this suite; nothing holds its private half).
const PUBLIC_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIO7jpZy/y0BoJ50ukBbnEJ0bCiUgGF6HMM0PiyOoXcyf capstan-diff";

/// Keystone: a token with its catalog, its validation, the projects, a wrong password; each
/// service's version document where clients discover it, and a call without a token.
pub async fn identity(s: &Side) -> Vec<Seen> {
    let mut t = Transcript::default();
    t.shape("token", s.issued.clone(), &["token.catalog"]);
    let entry = |kind: &str| {
        let e = s.issued.body["token"]["catalog"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["type"] == kind)
            .cloned()
            .unwrap_or(Value::Null);
        Reply {
            status: if e.is_null() { 404 } else { 200 },
            body: e,
        }
    };
    for kind in ["identity", "compute", "network", "image", "block-storage"] {
        t.shape(&format!("catalog entry {kind}"), entry(kind), &[]);
    }
    let identity = s.endpoint("identity").to_string();
    let wrong = s
        .send(s.http.post(format!("{identity}/auth/tokens")).json(
            &json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
                    "name": "admin", "domain": {"name": "Default"}, "password": "wrong"}}},
                    "scope": {"project": {"name": "demo", "domain": {"name": "Default"}}}}}),
        ))
        .await;
    t.error("a wrong password", wrong);
    let validated = s
        .send(
            s.http
                .get(format!("{identity}/auth/tokens?nocatalog"))
                .header("x-auth-token", &s.token)
                .header("x-subject-token", &s.token),
        )
        .await;
    t.shape("the token validated", validated, &[]);
    t.shape(
        "auth/projects",
        s.get("identity", "/auth/projects").await,
        &[],
    );
    t.shape("identity version", s.send(s.http.get(&identity)).await, &[]);
    let compute = s.endpoint("compute").to_string();
    t.shape("compute version", s.send(s.http.get(&compute)).await, &[]);
    for service in ["network", "image", "block-storage"] {
        let root = s.root(service);
        t.shape(
            &format!("{service} versions"),
            s.send(s.http.get(&root)).await,
            &[],
        );
    }
    let anonymous = s.send(s.http.get(format!("{compute}/servers"))).await;
    t.error("servers without a token", anonymous);
    t.0
}

/// What the cloud offers: flavors, images, networks, subnets, zones, hypervisors, volume
/// types — lists and single documents — and the 404s of unknown ones.
pub async fn catalogue(s: &Side) -> Vec<Seen> {
    let mut t = Transcript::default();
    let flavors = s
        .nova(Method::GET, "/flavors/detail", None, CAPSTAN_MV)
        .await;
    let flavor = t.item("flavor in flavors/detail", &flavors, "flavors", FLAVOR, &[]);
    let id = flavor["id"].as_str().unwrap_or_default();
    let one = s
        .nova(Method::GET, &format!("/flavors/{id}"), None, CAPSTAN_MV)
        .await;
    t.shape("flavor", one, &[]);
    let missing = s
        .nova(Method::GET, "/flavors/capstan-diff-nope", None, CAPSTAN_MV)
        .await;
    t.error("an unknown flavor", missing);

    let images = s.get("image", &format!("/v2/images?name={IMAGE}")).await;
    let image = t.item(
        "image in images?name=",
        &images,
        "images",
        IMAGE,
        IMAGE_IGNORED,
    );
    let id = image["id"].as_str().unwrap_or_default();
    t.shape(
        "image",
        s.get("image", &format!("/v2/images/{id}")).await,
        IMAGE_IGNORED,
    );
    let unknown = "/v2/images/5d1c1f4e-0000-4000-8000-000000000000";
    t.push(
        "an unknown image",
        Check::Status,
        s.get("image", unknown).await,
    );

    let networks = s.get("network", "/v2.0/networks?name=demo-net").await;
    let net = t.item(
        "network in networks?name=",
        &networks,
        "networks",
        "demo-net",
        &[],
    );
    let id = net["id"].as_str().unwrap_or_default();
    t.shape(
        "network",
        s.get("network", &format!("/v2.0/networks/{id}")).await,
        &[],
    );
    let public = s.get("network", "/v2.0/networks?name=public").await;
    t.item("external network", &public, "networks", "public", &[]);
    let subnets = s.get("network", "/v2.0/subnets?name=demo-subnet").await;
    let sub = t.item(
        "subnet in subnets?name=",
        &subnets,
        "subnets",
        "demo-subnet",
        &[],
    );
    let id = sub["id"].as_str().unwrap_or_default();
    t.shape(
        "subnet",
        s.get("network", &format!("/v2.0/subnets/{id}")).await,
        &[],
    );
    let unknown = "/v2.0/networks/5d1c1f4e-0000-4000-8000-000000000000";
    t.error("an unknown network", s.get("network", unknown).await);

    let zones = s
        .nova(Method::GET, "/os-availability-zone", None, CAPSTAN_MV)
        .await;
    t.item("zone", &zones, "availabilityZoneInfo", "az1", &[]);
    let detail = s
        .nova(
            Method::GET,
            "/os-availability-zone/detail",
            None,
            CAPSTAN_MV,
        )
        .await;
    t.item(
        "zone in detail",
        &detail,
        "availabilityZoneInfo",
        "az1",
        &["map:hosts"],
    );
    let hypervisors = s
        .nova(Method::GET, "/os-hypervisors/detail", None, CAPSTAN_MV)
        .await;
    t.item("hypervisor", &hypervisors, "hypervisors", "compute-1", &[]);

    let types = s.get("block-storage", "/types").await;
    t.item(
        "volume type",
        &types,
        "volume_types",
        "ssd",
        &["map:extra_specs"],
    );
    t.item(
        "the default volume type",
        &types,
        "volume_types",
        "__DEFAULT__",
        &[],
    );
    t.0
}

/// Limits and quota sets with usage, as Capstan's quota step reads them.
pub async fn quotas(s: &Side) -> Vec<Seen> {
    let mut t = Transcript::default();
    let p = s.project_id.clone();
    t.shape(
        "nova limits",
        s.nova(Method::GET, "/limits", None, CAPSTAN_MV).await,
        &[],
    );
    let set = s
        .nova(
            Method::GET,
            &format!("/os-quota-sets/{p}"),
            None,
            CAPSTAN_MV,
        )
        .await;
    t.shape("nova quota set", set, &[]);
    let detail = s
        .nova(
            Method::GET,
            &format!("/os-quota-sets/{p}/detail"),
            None,
            CAPSTAN_MV,
        )
        .await;
    t.shape("nova quota set detail", detail, &[]);
    let cinder = s
        .get("block-storage", &format!("/os-quota-sets/{p}?usage=true"))
        .await;
    t.shape("cinder quota set with usage", cinder, &[]);
    t.shape(
        "cinder limits",
        s.get("block-storage", "/limits").await,
        &[],
    );
    t.shape(
        "neutron quota",
        s.get("network", &format!("/v2.0/quotas/{p}")).await,
        &[],
    );
    let details = s.get("network", &format!("/v2.0/quotas/{p}/details")).await;
    t.shape("neutron quota details", details, &[]);
    t.0
}

/// A port with a fixed IP, the same IP again (409), an IP outside the subnet (400), a port's
/// tags; a floating IP of an exact address, twice (409), one outside the network (400);
/// deletes, twice.
pub async fn addresses(s: &Side) -> Vec<Seen> {
    let mut t = Transcript::default();
    let net = s
        .id_of(
            "network",
            "/v2.0/networks?name=demo-net",
            "networks",
            "demo-net",
        )
        .await;
    let subnet = s
        .id_of(
            "network",
            "/v2.0/subnets?name=demo-subnet",
            "subnets",
            "demo-subnet",
        )
        .await;
    let port = |name: &str, ip: &str| {
        json!({"port": {"network_id": net, "name": format!("{PREFIX}{name}"),
        "description": "Created by capstan-diff", "fixed_ips": [{"subnet_id": subnet, "ip_address": ip}]}})
    };
    let created = s
        .post("network", "/v2.0/ports", &port("port", "10.6.0.200"))
        .await;
    let created = t.shape("a port with a fixed IP", created, &[]);
    let again = s
        .post("network", "/v2.0/ports", &port("port-2", "10.6.0.200"))
        .await;
    t.error("the same fixed IP again", again);
    let outside = s
        .post("network", "/v2.0/ports", &port("port-3", "10.7.0.5"))
        .await;
    t.error("a fixed IP outside the subnet", outside);
    let id = created["port"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let listed = s
        .get("network", &format!("/v2.0/ports?name={PREFIX}port"))
        .await;
    t.item(
        "port in ports?name=",
        &listed,
        "ports",
        &format!("{PREFIX}port"),
        &[],
    );
    let tags = json!({"tags": ["capstan-diff", "k8s"]});
    let tagged = s
        .call(
            "network",
            Method::PUT,
            &format!("/v2.0/ports/{id}/tags"),
            Some(&tags),
            &[],
        )
        .await;
    t.shape("port tags replaced", tagged, &[]);
    let by_tag = s.get("network", "/v2.0/ports?tags=capstan-diff").await;
    t.item(
        "port in ports?tags=",
        &by_tag,
        "ports",
        &format!("{PREFIX}port"),
        &[],
    );
    t.push(
        "port deleted",
        Check::Status,
        s.delete("network", &format!("/v2.0/ports/{id}")).await,
    );
    t.error(
        "port deleted again",
        s.delete("network", &format!("/v2.0/ports/{id}")).await,
    );
    t.error(
        "a deleted port",
        s.get("network", &format!("/v2.0/ports/{id}")).await,
    );

    let public = s
        .id_of(
            "network",
            "/v2.0/networks?name=public",
            "networks",
            "public",
        )
        .await;
    let fip = |ip: &str| {
        json!({"floatingip": {"floating_network_id": public,
        "floating_ip_address": ip, "description": format!("{PREFIX}fip")}})
    };
    let created = s
        .post("network", "/v2.0/floatingips", &fip("172.35.0.200"))
        .await;
    let created = t.shape("a floating IP of an exact address", created, &[]);
    let again = s
        .post("network", "/v2.0/floatingips", &fip("172.35.0.200"))
        .await;
    t.error("the same floating IP again", again);
    let outside = s
        .post("network", "/v2.0/floatingips", &fip("172.36.0.5"))
        .await;
    t.error("a floating IP outside the network", outside);
    let listed = s
        .get(
            "network",
            "/v2.0/floatingips?floating_ip_address=172.35.0.200",
        )
        .await;
    t.shape("floatingips?floating_ip_address=", listed, &[]);
    let id = created["floatingip"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let path = format!("/v2.0/floatingips/{id}");
    t.push(
        "floating IP deleted",
        Check::Status,
        s.delete("network", &path).await,
    );
    t.error(
        "floating IP deleted again",
        s.delete("network", &path).await,
    );
    t.0
}

/// A server request of the demo project: `extra` is merged into it.
async fn server_body(s: &Side, name: &str, flavor: &str, extra: Value) -> Value {
    let flavor = s.id_of("compute", "/flavors", "flavors", flavor).await;
    let image = s
        .id_of(
            "image",
            &format!("/v2/images?name={IMAGE}"),
            "images",
            IMAGE,
        )
        .await;
    let mut server = json!({"name": format!("{PREFIX}{name}"), "flavorRef": flavor,
        "imageRef": image, "networks": "none"});
    for (k, v) in extra.as_object().unwrap() {
        server[k] = v.clone();
    }
    json!({ "server": server })
}

/// Keypairs (Nova) and security groups (Neutron): listed, shown, created twice, unknown
/// ones refused by Nova at server create, deleted twice.
pub async fn keys_and_groups(s: &Side) -> Vec<Seen> {
    let mut t = Transcript::default();
    let key = json!({"keypair": {"name": format!("{PREFIX}key"), "public_key": PUBLIC_KEY}});
    let created = s
        .nova(Method::POST, "/os-keypairs", Some(&key), CAPSTAN_MV)
        .await;
    t.shape("a keypair created", created, &[]);
    let again = s
        .nova(Method::POST, "/os-keypairs", Some(&key), CAPSTAN_MV)
        .await;
    t.error("the same keypair again", again);
    let listed = s.nova(Method::GET, "/os-keypairs", None, CAPSTAN_MV).await;
    let item = listed.body["keypairs"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|k| k["keypair"]["name"] == format!("{PREFIX}key").as_str())
        .cloned()
        .unwrap_or(Value::Null);
    let status = if item.is_null() { 404 } else { listed.status };
    t.shape("keypair in os-keypairs", Reply { status, body: item }, &[]);
    let path = format!("/os-keypairs/{PREFIX}key");
    t.shape(
        "keypair",
        s.nova(Method::GET, &path, None, CAPSTAN_MV).await,
        &[],
    );
    let unknown = format!("/os-keypairs/{PREFIX}nope");
    t.error(
        "an unknown keypair",
        s.nova(Method::GET, &unknown, None, CAPSTAN_MV).await,
    );
    let body = server_body(
        s,
        "nokey",
        FLAVOR,
        json!({"key_name": format!("{PREFIX}nope")}),
    )
    .await;
    let refused = s
        .nova(Method::POST, "/servers", Some(&body), CAPSTAN_MV)
        .await;
    t.error("a server with an unknown key_name", refused);
    t.push(
        "keypair deleted",
        Check::Status,
        s.nova(Method::DELETE, &path, None, CAPSTAN_MV).await,
    );
    t.error(
        "keypair deleted again",
        s.nova(Method::DELETE, &path, None, CAPSTAN_MV).await,
    );

    let groups = s.get("network", "/v2.0/security-groups?name=default").await;
    let group = t.item(
        "security group default",
        &groups,
        "security_groups",
        "default",
        &[],
    );
    let id = group["id"].as_str().unwrap_or_default();
    let one = s
        .get("network", &format!("/v2.0/security-groups/{id}"))
        .await;
    t.shape("security group", one, &[]);
    let unknown = s
        .get(
            "network",
            &format!("/v2.0/security-groups?name={PREFIX}nope"),
        )
        .await;
    t.shape("security-groups?name= of none", unknown, &[]);
    let body = server_body(
        s,
        "nogroup",
        FLAVOR,
        json!({"security_groups": [{"name": format!("{PREFIX}nope")}]}),
    )
    .await;
    let refused = s
        .nova(Method::POST, "/servers", Some(&body), CAPSTAN_MV)
        .await;
    t.error("a server with an unknown security group", refused);
    t.0
}

/// A server that boots (its documents), one over the instance quota (403), servers pinned
/// to one host until it is full (ERROR, "No valid host was found. "), deletes.
pub async fn servers(s: &Side, pair: &Pair) -> Vec<Seen> {
    let mut t = Transcript::default();
    let net = s
        .id_of(
            "network",
            "/v2.0/networks?name=demo-net",
            "networks",
            "demo-net",
        )
        .await;
    let body = server_body(s, "a", FLAVOR,
        json!({"availability_zone": "az1", "networks": [{"uuid": net}], "metadata": {"capstan.io:job": "x"}})).await;
    let created = s
        .nova(Method::POST, "/servers", Some(&body), CAPSTAN_MV)
        .await;
    let created = t.shape("a server created", created, &[]);
    let id = created["server"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let active = s.settled_server(&id).await;
    t.shape("an ACTIVE server", active, SERVER_IGNORED);
    let listed = s
        .nova(
            Method::GET,
            &format!("/servers/detail?name={PREFIX}a"),
            None,
            CAPSTAN_MV,
        )
        .await;
    t.shape("servers/detail?name=", listed, SERVER_IGNORED);
    let ports = s
        .get("network", &format!("/v2.0/ports?device_id={id}"))
        .await;
    t.shape("the port Nova made", ports, BOUND_PORT_IGNORED);

    // Over quota: the limit lowered to what is in use.
    let limits = s.nova(Method::GET, "/limits", None, CAPSTAN_MV).await;
    let absolute = &limits.body["limits"]["absolute"];
    let (used, limit) = (
        absolute["totalInstancesUsed"].as_i64().unwrap(),
        absolute["maxTotalInstances"].as_i64().unwrap(),
    );
    let body = server_body(s, "over", FLAVOR, json!({})).await;
    pair.set_instances_quota(s, &s.project_id, used).await;
    let refused = s
        .nova(Method::POST, "/servers", Some(&body), CAPSTAN_MV)
        .await;
    t.push(
        "a server over the instance quota",
        Check::Error { mask_numbers: true },
        refused,
    );
    pair.set_instances_quota(s, &s.project_id, limit).await;

    // A host filled through the scheduler (2.74's requested destination, not a forced host).
    let mut made = vec![id.clone()];
    let mut fault = None;
    for i in 0..8 {
        let body = server_body(
            s,
            &format!("full-{i}"),
            BIG_FLAVOR,
            json!({"hypervisor_hostname": "compute-4"}),
        )
        .await;
        let r = s.nova(Method::POST, "/servers", Some(&body), "2.74").await;
        assert_eq!(r.status, 202, "{}: {}", s.name, r.body);
        let id = r.body["server"]["id"].as_str().unwrap().to_string();
        made.push(id.clone());
        let done = s.settled_server(&id).await;
        if done.body["server"]["status"] == "ERROR" {
            fault = Some(done);
            break;
        }
    }
    let fault = fault.unwrap_or_else(|| panic!("{}: compute-4 never filled up", s.name));
    let what = &fault.body["server"]["fault"];
    t.shape("a server on a full host", fault.clone(), SERVER_IGNORED);
    let seen = json!({"status": fault.body["server"]["status"], "code": what["code"], "message": what["message"]});
    t.push(
        "the full host's fault",
        Check::Same,
        Reply {
            status: 200,
            body: seen,
        },
    );

    for (i, id) in made.iter().enumerate() {
        let path = format!("/servers/{id}");
        let deleted = s.nova(Method::DELETE, &path, None, CAPSTAN_MV).await;
        t.push(&format!("server {i} deleted"), Check::Status, deleted);
        let gone = s.gone("compute", &path).await;
        t.error(&format!("server {i} once gone"), gone);
    }
    let again = s
        .nova(Method::DELETE, &format!("/servers/{id}"), None, CAPSTAN_MV)
        .await;
    t.error("a server deleted again", again);
    t.0
}

/// Volumes: an unknown type (404), below the image's min_disk (400), over the gigabytes
/// quota (413, in the smaller project), one created, shown, deleted, twice.
pub async fn volumes(s: &Side, acme: &Side) -> Vec<Seen> {
    let mut t = Transcript::default();
    let image = s
        .id_of(
            "image",
            &format!("/v2/images?name={IMAGE}"),
            "images",
            IMAGE,
        )
        .await;
    let volume = |extra: Value| {
        let mut v = json!({"name": format!("{PREFIX}vol"), "size": 10});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        json!({ "volume": v })
    };
    let unknown = s
        .post(
            "block-storage",
            "/volumes",
            &volume(json!({"volume_type": format!("{PREFIX}nope")})),
        )
        .await;
    t.error("a volume of an unknown type", unknown);
    let small = s
        .post(
            "block-storage",
            "/volumes",
            &volume(json!({"size": 5, "imageRef": image})),
        )
        .await;
    t.error("a volume below the image's min_disk", small);
    let big = acme
        .post("block-storage", "/volumes", &volume(json!({"size": 1001})))
        .await;
    t.error("a volume over the gigabytes quota", big);
    let created = s
        .post(
            "block-storage",
            "/volumes",
            &volume(json!({"volume_type": "ssd", "availability_zone": "az2"})),
        )
        .await;
    let created = t.shape("a volume created", created, &[]);
    let id = created["volume"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let path = format!("/volumes/{id}");
    t.shape("an available volume", s.settled_volume(&id).await, &[]);
    let listed = s.get("block-storage", "/volumes/detail").await;
    t.item(
        "volume in volumes/detail",
        &listed,
        "volumes",
        &format!("{PREFIX}vol"),
        &[],
    );
    t.push(
        "volume deleted",
        Check::Status,
        s.delete("block-storage", &path).await,
    );
    t.error("volume once gone", s.gone("block-storage", &path).await);
    t.error(
        "volume deleted again",
        s.delete("block-storage", &path).await,
    );
    t.0
}
