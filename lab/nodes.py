#!/usr/bin/env python3
"""A stand-in for the kubelets of the simulated servers, until the simulator registers
Nodes in the real apiserver itself (issue 10): every few seconds, for each OpenStackMachine
whose providerID is set (CAPO sets it once the server is ACTIVE), make sure a Node of the
same name exists with that spec.providerID and the conditions a healthy kubelet reports;
delete the Nodes it made whose OpenStackMachine is gone.

  nodes.py --kubectl BIN --kubeconfig FILE [--interval 2] [--nudge-only]

What CAPI v1.12 needs, found in the lab: the Machine gets status.nodeRef from a Node whose
spec.providerID equals the Machine's; its NodeHealthy is True only with Ready=True and
MemoryPressure, DiskPressure and PIDPressure all reported False (missing ones leave it
Unknown: "Condition not yet reported"), and only once the Cluster's control plane is
initialised (a control-plane Machine with a nodeRef, for a Cluster without controlPlaneRef).
"""
import argparse
import datetime
import json
import subprocess
import time

MARK = "lab.capstan.dev/fake-kubelet"


def kubectl(a, *args, stdin=None):
    r = subprocess.run([a.kubectl, "--kubeconfig", a.kubeconfig, *args], input=stdin,
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


def conditions(now):
    c = [("MemoryPressure", "False", "KubeletHasSufficientMemory"),
         ("DiskPressure", "False", "KubeletHasNoDiskPressure"),
         ("PIDPressure", "False", "KubeletHasSufficientPID"),
         ("Ready", "True", "KubeletReady")]
    return [{"type": t, "status": s, "reason": r, "message": "lab/nodes.py stand-in kubelet",
             "lastHeartbeatTime": now, "lastTransitionTime": now} for t, s, r in c]


def nudge(a, now):
    """CAPI watches Nodes only once the control plane is initialised; before that, a Node
    that appears after its Machine's last reconcile goes unseen until the next resync
    (10 min), since CAPI does not requeue a Machine waiting for its Node. A Machine with a
    providerID, no nodeRef, and a Node of that providerID gets one annotation (per Node)
    to be reconciled again. Applies to the sim's Nodes and the stand-in's alike."""
    machines = json.loads(kubectl(a, "get", "machines.cluster.x-k8s.io", "-A", "-o", "json"))["items"]
    by_pid = {n.get("spec", {}).get("providerID"): n for n in
              json.loads(kubectl(a, "get", "nodes", "-o", "json"))["items"]}
    for m in machines:
        pid = m.get("spec", {}).get("providerID")
        node = by_pid.get(pid) if pid else None
        if node is None or (m.get("status") or {}).get("nodeRef"):
            continue
        uid = node["metadata"]["uid"]
        if (m["metadata"].get("annotations") or {}).get(MARK + "-nudged") == uid:
            continue
        kubectl(a, "-n", m["metadata"]["namespace"], "annotate", "machine", m["metadata"]["name"],
                "--overwrite", f"{MARK}-nudged={uid}")
        print(f"nodes: nudged Machine {m['metadata']['name']} (Node {node['metadata']['name']} is there)", flush=True)


def once(a):
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    oms = json.loads(kubectl(a, "get", "openstackmachines", "-A", "-o", "json"))["items"]
    nodes = {n["metadata"]["name"]: n for n in
             json.loads(kubectl(a, "get", "nodes", "-o", "json"))["items"]}
    wanted = {}
    deleting = set()
    for om in oms:
        pid = om.get("spec", {}).get("providerID")
        if pid:
            wanted[om["metadata"]["name"]] = pid
            if om["metadata"].get("deletionTimestamp"):
                deleting.add(om["metadata"]["name"])
    for name, pid in wanted.items():
        n = nodes.get(name)
        if name in deleting:
            # CAPI drains, then deletes the Node itself: keep it, never bring it back.
            continue
        if n is None:
            node = {"apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": name, "annotations": {MARK: "true"},
                                 "labels": {"kubernetes.io/hostname": name,
                                            "kubernetes.io/os": "linux",
                                            "kubernetes.io/arch": "amd64"}},
                    "spec": {"providerID": pid}}
            kubectl(a, "create", "-f", "-", stdin=json.dumps(node))
            print(f"nodes: registered Node {name} ({pid})", flush=True)
        elif (n["metadata"].get("annotations") or {}).get(MARK) != "true":
            continue
        have = {c["type"]: c["status"] for c in ((n or {}).get("status") or {}).get("conditions") or []}
        want = {c["type"]: c["status"] for c in conditions(now)}
        if have != want:
            # No heartbeats after that: the lab runs no node-lifecycle controller.
            kubectl(a, "patch", "node", name, "--subresource=status", "--type=merge", "-p",
                    json.dumps({"status": {"conditions": conditions(now)}}))
    for name, n in nodes.items():
        if (n["metadata"].get("annotations") or {}).get(MARK) == "true" and name not in wanted:
            kubectl(a, "delete", "node", name, "--wait=false")
            print(f"nodes: deleted Node {name} (its OpenStackMachine is gone)", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kubectl", required=True)
    ap.add_argument("--kubeconfig", required=True)
    ap.add_argument("--interval", type=float, default=2.0)
    ap.add_argument("--nudge-only", action="store_true",
                    help="register no Nodes (the sim does); only nudge Machines whose Node is there")
    a = ap.parse_args()
    while True:
        try:
            if not a.nudge_only:
                once(a)
            nudge(a, None)
        except Exception as e:  # keep going: the apiserver may restart
            print(f"nodes: {e}", flush=True)
        time.sleep(a.interval)


if __name__ == "__main__":
    main()
