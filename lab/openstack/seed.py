"""Seed the lab cloud with scenarios/demo.yaml's objects (run by lab/openstack-up, in the lab venv).

    seed.py identity   # service project/user, catalog, projects demo/acme and their users
    seed.py cloud      # hosts/AZs, flavors, image, networks, routers, volume types, quotas,
                       # DIR/clouds.yaml

Idempotent: everything is found by name first and created only when missing.
"""
import os
import subprocess
import sys
import time

import openstack

H = os.environ["LAB_HOST"]
P = {k: os.environ["LAB_P_" + k.upper()] for k in
     ("keystone", "placement", "nova", "neutron", "glance", "cinder")}
CINDER = os.environ.get("LAB_CINDER", "1") == "1"
STATE = os.environ["LAB_STATE"]
SVC_USER = os.environ["LAB_SVC_USER"]
SVC_PASS = os.environ["LAB_SVC_PASS"]
AUTH_URL = f"http://{H}:{P['keystone']}/v3"
REGION = "RegionOne"

# scenarios/demo.yaml, written out (the lab reads no YAML to stay dependency-free)
PROJECTS = [
    {"name": "demo", "user": "admin", "password": "demo-secret", "roles": ["admin", "member"],
     "quotas": dict(instances=50, cores=200, ram=409600, volumes=100, gigabytes=10000,
                    port=200, floatingip=50),
     "network": ("demo-net", "demo-subnet", "10.6.0.0/24", "10.6.0.1"), "router": "demo-router"},
    {"name": "acme", "user": "acme-admin", "password": "acme-secret", "roles": ["member"],
     "quotas": dict(instances=10, cores=40, ram=81920, volumes=20, gigabytes=1000,
                    port=40, floatingip=5),
     "network": ("acme-net", "acme-subnet", "10.7.0.0/24", "10.7.0.1"), "router": "acme-router"},
]
HOSTS = {"az1": ["compute-1", "compute-2"], "az2": ["compute-3", "compute-4"]}
FLAVORS = [("k8s.small", 2, 4096, 20), ("k8s.workload", 4, 8192, 40)]
IMAGE = ("ubuntu-2204-kube-v1.30", 10)
VOLUME_TYPES = ["ssd", "hdd"]
# the demo user's keypair, as scenarios/demo.yaml has it (keypairs belong to users: `admin`
# is the demo project's user and the cloud admin alike)
KEYPAIR = ("demo-key", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIROVYX7NVVLmws+3YPvd9llxvL34OWY/jgtXLw7eH7a capstan-demo")


def log(*a):
    print(time.strftime("%H:%M:%S"), "seed:", *a, flush=True)


def admin():
    return openstack.connect(
        auth_url=AUTH_URL, username="admin", password="demo-secret", project_name="admin",
        user_domain_name="Default", project_domain_name="Default", region_name=REGION,
        identity_api_version="3")


def identity():
    c = admin()
    idn = c.identity
    roles = {r.name: r for r in idn.roles()}
    for r in ("admin", "member", "reader", "service"):
        if r not in roles:
            roles[r] = idn.create_role(name=r)

    def project(name, desc):
        p = idn.find_project(name, domain_id="default")
        return p or idn.create_project(name=name, domain_id="default", description=desc)

    def user(name, password, proj):
        u = idn.find_user(name, domain_id="default")
        if u is None:
            u = idn.create_user(name=name, password=password, domain_id="default",
                                default_project_id=proj.id)
        return u

    svc = project("service", "OpenStack services (lab)")
    su = user(SVC_USER, SVC_PASS, svc)
    for r in ("admin", "service"):
        idn.assign_project_role_to_user(svc, su, roles[r])

    catalog = [
        ("placement", "placement", f"http://{H}:{P['placement']}"),
        ("nova", "compute", f"http://{H}:{P['nova']}/v2.1"),
        ("neutron", "network", f"http://{H}:{P['neutron']}"),
        ("glance", "image", f"http://{H}:{P['glance']}"),
    ]
    if CINDER:
        catalog.append(("cinderv3", "volumev3", f"http://{H}:{P['cinder']}/v3/%(project_id)s"))
        catalog.append(("cinder", "block-storage", f"http://{H}:{P['cinder']}/v3/%(project_id)s"))
    services = {s.type: s for s in idn.services()}
    for name, typ, url in catalog:
        s = services.get(typ) or idn.create_service(name=name, type=typ, enabled=True)
        have = {e.interface for e in idn.endpoints(service_id=s.id)}
        for iface in ("public", "internal", "admin"):
            if iface not in have:
                idn.create_endpoint(service_id=s.id, interface=iface, url=url, region_id=REGION)

    for spec in PROJECTS:
        p = project(spec["name"], f"Capstan lab: scenarios/demo.yaml project {spec['name']}")
        u = user(spec["user"], spec["password"], p)
        for r in spec["roles"]:
            idn.assign_project_role_to_user(p, u, roles[r])
    log("identity and catalog seeded")


def dead_services(prefix):
    dead = []
    with open(os.path.join(STATE, "pids")) as f:
        for line in f:
            name, pid = line.split()
            if name.startswith(prefix):
                try:
                    os.kill(int(pid), 0)
                except ProcessLookupError:
                    dead.append(name)
    return dead


def wait_computes(c, timeout=300):
    want = {h for hs in HOSTS.values() for h in hs}
    deadline = time.time() + timeout
    while True:
        try:
            up = {s.host for s in c.compute.services(binary="nova-compute")
                  if s.state == "up" and s.status == "enabled"}
        except Exception as e:  # nova-api may still be warming up
            log("waiting for nova-api:", e)
            up = set()
        if want <= up:
            return
        dead = dead_services("nova-compute")
        if dead:
            sys.exit(f"{', '.join(dead)} exited; see {STATE}/log/<name>.log")
        if time.time() > deadline:
            sys.exit(f"nova-compute services not up after {timeout}s: missing {sorted(want - up)}")
        time.sleep(3)


def cloud():
    c = admin()
    wait_computes(c)
    subprocess.run(["nova-manage", "--config-file", f"{STATE}/etc/nova/nova.conf",
                    "cell_v2", "discover_hosts", "--verbose"], check=True)
    # hypervisors appear once each compute has reported its resources
    deadline = time.time() + 300
    while {h.name for h in c.compute.hypervisors()} < {h for hs in HOSTS.values() for h in hs}:
        if time.time() > deadline:
            sys.exit("hypervisors did not all appear")
        time.sleep(3)

    for az, hosts in HOSTS.items():
        agg = next((a for a in c.compute.aggregates() if a.name == az), None)
        if agg is None:
            agg = c.compute.create_aggregate(name=az, availability_zone=az)
        for h in hosts:
            if h not in (agg.hosts or []):
                agg = c.compute.add_host_to_aggregate(agg, h)
    log("aggregates/AZs:", {a.name: a.hosts for a in c.compute.aggregates()})

    name, key = KEYPAIR
    if c.compute.find_keypair(name) is None:
        c.compute.create_keypair(name=name, public_key=key)

    for name, vcpus, ram, disk in FLAVORS:
        if c.compute.find_flavor(name) is None:
            c.compute.create_flavor(name=name, vcpus=vcpus, ram=ram, disk=disk, is_public=True)

    name, min_disk = IMAGE
    if c.image.find_image(name) is None:
        path = os.path.join(STATE, "ubuntu-2204-kube-v1.30.img")
        with open(path, "wb") as f:
            f.write(b"capstan lab image\n" + b"\0" * (1 << 20))
        c.create_image(name, filename=path, disk_format="raw", container_format="bare",
                       min_disk=min_disk, visibility="public", wait=True, use_import=False,
                       validate_checksum=False)
    log("image:", c.image.find_image(name).status)

    net = c.network
    projects = {spec["name"]: c.identity.find_project(spec["name"], domain_id="default")
                for spec in PROJECTS}
    public = net.find_network("public")
    if public is None:
        public = net.create_network(name="public", is_router_external=True,
                                    provider_network_type="flat",
                                    provider_physical_network="public")
    if net.find_subnet("public-subnet") is None:
        net.create_subnet(name="public-subnet", network_id=public.id, ip_version=4,
                          cidr="172.35.0.0/24", gateway_ip="172.35.0.1", is_dhcp_enabled=False)
    for spec in PROJECTS:
        pid = projects[spec["name"]].id
        nname, sname, cidr, gw = spec["network"]
        n = net.find_network(nname, project_id=pid)
        if n is None:
            n = net.create_network(name=nname, project_id=pid)
        s = net.find_subnet(sname, project_id=pid)
        if s is None:
            s = net.create_subnet(name=sname, network_id=n.id, project_id=pid, ip_version=4,
                                  cidr=cidr, gateway_ip=gw, is_dhcp_enabled=False)
        r = net.find_router(spec["router"], project_id=pid)
        if r is None:
            r = net.create_router(name=spec["router"], project_id=pid,
                                  external_gateway_info={"network_id": public.id})
            net.add_interface_to_router(r, subnet_id=s.id)
        q = spec["quotas"]
        c.set_compute_quotas(pid, instances=q["instances"], cores=q["cores"], ram=q["ram"])
        c.set_network_quotas(pid, port=q["port"], floatingip=q["floatingip"])
        if CINDER:
            c.set_volume_quotas(pid, volumes=q["volumes"], gigabytes=q["gigabytes"])
    log("networks:", [n.name for n in net.networks()])

    if CINDER:
        bs = c.block_storage
        have = {t.name for t in bs.types()}
        for t in VOLUME_TYPES:
            if t not in have:
                bs.create_type(name=t, is_public=True,
                               extra_specs={"volume_backend_name": "fake"})
        log("volume types:", [t.name for t in bs.types()])
        # cinder-scheduler learns the backends from their periodic reports; a volume asked
        # for before both AZs' backends have reported fails with "No valid backend"
        deadline = time.time() + 180
        while len(list(bs.backend_pools())) < 2:
            if time.time() > deadline:
                sys.exit("cinder-scheduler does not know both backends (fake-az1, fake-az2)")
            time.sleep(3)
        log("cinder pools:", [p.name for p in bs.backend_pools()])

    write_clouds()


def write_clouds():
    entries = {"capstan-lab": PROJECTS[0], "capstan-lab-acme": PROJECTS[1]}
    out = ["# written by lab/openstack-up: the lab's real OpenStack on 127.0.0.1", "clouds:"]
    for cloud, spec in entries.items():
        out += [f"  {cloud}:",
                "    auth:",
                f"      auth_url: {AUTH_URL}",
                f"      username: {spec['user']}",
                f"      password: {spec['password']}",
                f"      project_name: {spec['name']}",
                "      user_domain_name: Default",
                "      project_domain_name: Default",
                f"    region_name: {REGION}",
                "    interface: public",
                "    identity_api_version: 3"]
    out += ["  capstan-lab-cloud-admin:",
            "    auth:",
            f"      auth_url: {AUTH_URL}",
            "      username: admin",
            "      password: demo-secret",
            "      project_name: admin",
            "      user_domain_name: Default",
            "      project_domain_name: Default",
            f"    region_name: {REGION}",
            "    interface: public",
            "    identity_api_version: 3"]
    path = os.path.join(STATE, "clouds.yaml")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")
    os.chmod(path, 0o600)
    log("wrote", path)


if __name__ == "__main__":
    {"identity": identity, "cloud": cloud}[sys.argv[1]]()
