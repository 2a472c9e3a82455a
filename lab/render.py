#!/usr/bin/env python3
"""Render CAPI's and CAPO's CRDs and webhook configurations from the Go module cache,
patched as their kustomize overlays (config/default) would, but for processes on loopback:
every clientConfig.service becomes a URL on the manager's webhook port, with the lab's CA.

  render.py --capi-dir D --capo-dir D --capi-webhook https://127.0.0.1:P \
            --capo-webhook https://127.0.0.1:P --ca-file ca.crt --out manifests.yaml

What the overlays do that is reproduced here (checked against config/*/kustomization.yaml
of CAPI v1.12.10 and CAPO v0.14.7):
- CAPI config/default: namePrefix `capi-`, label cluster.x-k8s.io/provider=cluster-api on
  every object; config/crd: a conversion webhook (`/convert`) on each CRD that has a
  patches/webhook_in_<plural>.yaml listed in config/crd/kustomization.yaml.
- CAPO config/default: namePrefix `capo-`, label cluster.x-k8s.io/provider=
  infrastructure-openstack; config/crd: the contract label (labels.pairs there, i.e.
  cluster.x-k8s.io/v1beta1: v1beta1) and the listed conversion webhooks.
- ORC's config/crd: its CRDs as they are (CAPO v0.14 needs them; its manager is not run).
- cert-manager's CA injection: caBundle = the lab CA, on CRD conversion and webhooks.
Namespaces, RBAC, Deployments and cert-manager objects are not rendered: the managers run
as local processes with an admin kubeconfig.
"""
import argparse
import base64
import os
import sys

import yaml


def load_all(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def kustomization(dir_):
    with open(os.path.join(dir_, "kustomization.yaml")) as f:
        return yaml.safe_load(f)


def crd_labels(kust):
    """labels.pairs of config/crd/kustomization.yaml (CAPO's contract label)."""
    out = {}
    for entry in kust.get("labels") or []:
        out.update(entry.get("pairs") or {})
    out.update(kust.get("commonLabels") or {})
    return out


def conversion_patched(crd_dir, kust):
    """CRD names whose conversion-webhook patch the kustomization enables."""
    names = set()
    for p in kust.get("patches") or []:
        path = p["path"] if isinstance(p, dict) else p
        if "webhook_in_" not in path:
            continue
        for doc in load_all(os.path.join(crd_dir, path)):
            if doc.get("kind") == "CustomResourceDefinition":
                names.add(doc["metadata"]["name"])
    return names


def render_provider(mod_dir, prefix, provider_label, url, ca_b64):
    out = []
    crd_dir = os.path.join(mod_dir, "config", "crd")
    kust = kustomization(crd_dir)
    extra_labels = crd_labels(kust)
    convert = conversion_patched(crd_dir, kust)
    for res in kust["resources"]:
        for crd in load_all(os.path.join(crd_dir, res)):
            md = crd.setdefault("metadata", {})
            labels = md.setdefault("labels", {})
            labels.update(extra_labels)
            if provider_label:
                labels["cluster.x-k8s.io/provider"] = provider_label
            if md["name"] in convert:
                crd["spec"]["conversion"] = {
                    "strategy": "Webhook",
                    "webhook": {
                        "conversionReviewVersions": ["v1", "v1beta1"],
                        "clientConfig": {"url": url + "/convert", "caBundle": ca_b64},
                    },
                }
            out.append(crd)
    webhooks = os.path.join(mod_dir, "config", "webhook", "manifests.yaml")
    for doc in load_all(webhooks) if os.path.exists(webhooks) else []:
        if doc.get("kind") not in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
            continue
        doc["metadata"]["name"] = prefix + doc["metadata"]["name"]
        doc["metadata"].setdefault("labels", {})["cluster.x-k8s.io/provider"] = provider_label
        for wh in doc.get("webhooks") or []:
            svc = wh["clientConfig"].pop("service")
            wh["clientConfig"] = {"url": url + svc.get("path", "/"), "caBundle": ca_b64}
        out.append(doc)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--capi-dir", required=True)
    ap.add_argument("--capo-dir", required=True)
    ap.add_argument("--capi-webhook", required=True)
    ap.add_argument("--capo-webhook", required=True)
    ap.add_argument("--orc-dir", required=True)
    ap.add_argument("--ca-file", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    with open(a.ca_file, "rb") as f:
        ca_b64 = base64.b64encode(f.read()).decode()
    docs = render_provider(a.capi_dir, "capi-", "cluster-api", a.capi_webhook, ca_b64)
    docs += render_provider(a.capo_dir, "capo-", "infrastructure-openstack", a.capo_webhook, ca_b64)
    # ORC (openstack-resource-controller), a prerequisite of CAPO since v0.12: CAPO watches
    # its Image kind and its manager exits when the CRD is missing. Only the CRDs, as its
    # config/crd installs them (no webhooks, no conversion).
    docs += render_provider(a.orc_dir, "orc-", None, None, ca_b64)
    with open(a.out, "w") as f:
        yaml.safe_dump_all(docs, f, sort_keys=False)
    kinds = {}
    for d in docs:
        kinds[d["kind"]] = kinds.get(d["kind"], 0) + 1
    print("rendered " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())), file=sys.stderr)


if __name__ == "__main__":
    main()
