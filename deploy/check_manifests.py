#!/usr/bin/env python3
"""Checks deploy/k8s offline (issue 26); run by deploy/test.sh.

1. Every resource file, and every kustomization rendered, is validated strictly against the Kubernetes
   schemas that kubernetes-validate bundles (its newest release): an unknown field is an error, and so
   is a kind it has no schema for (the command-line tool only warns about those).
2. Rendering: `kubectl kustomize` when kubectl is installed, else the small renderer below, which covers
   what these kustomizations use (resources, patches by path, images). With kubectl both run and must
   agree, so the fallback stays honest.
3. The manifests agree with the gateway: each rendered ConfigMap's config.yaml passes `ai-gateway check`
   with the rendered Secret's variables, the grace period outlasts the preStop pause plus
   server.shutdown_grace_s, readiness probes /health/ready and the container runs non-root on a
   read-only root filesystem.

usage: check_manifests.py <ai-gateway binary> <deploy/k8s directory>
"""

import copy
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from kubernetes_validate import utils as kv

FAILURES = []


def fail(message):
    FAILURES.append(message)
    print(f"FAIL {message}")


def load_all(path):
    with open(path) as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


def validate(doc, where, version):
    name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
    try:
        kv.validate(doc, version, strict=True)
    except kv.ValidationError as e:
        path = ".".join(str(p) for p in e.path)
        fail(f"{where}: {name}: {path}: {e.message}")
        return
    except kv.SchemaNotFoundError:
        fail(f"{where}: {name}: no schema for {doc.get('apiVersion')} {doc.get('kind')} in Kubernetes {version}")
        return
    print(f"ok   {where}: {name}")


def merge(target, patch):
    """Strategic merge as far as these patches need it: maps merge, lists and scalars replace."""
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def render_fallback(directory):
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    known = {"apiVersion", "kind", "resources", "patches", "images"}
    unknown = set(kustomization) - known
    if unknown:
        raise SystemExit(f"{directory}: the fallback renderer does not know {sorted(unknown)}; install kubectl")
    docs = []
    for resource in kustomization.get("resources", []):
        path = directory / resource
        docs += render_fallback(path) if path.is_dir() else load_all(path)
    for patch in kustomization.get("patches", []):
        for change in load_all(directory / patch["path"]):
            matches = [d for d in docs if d["kind"] == change["kind"]
                       and d["metadata"]["name"] == change["metadata"]["name"]]
            if len(matches) != 1:
                raise SystemExit(f"{directory}: patch {patch['path']} matches {len(matches)} resources")
            merge(matches[0], change)
    for image in kustomization.get("images", []):
        for doc in docs:
            spec = doc.get("spec", {}).get("template", {}).get("spec", {})
            for container in spec.get("containers", []) + spec.get("initContainers", []):
                if container["image"].split(":")[0] == image["name"]:
                    container["image"] = f"{image.get('newName', image['name'])}:{image.get('newTag', 'latest')}"
    return docs


def render(directory):
    ours = render_fallback(directory)
    kubectl = shutil.which("kubectl")
    if not kubectl or os.environ.get("AIGW_NO_KUBECTL"):
        print(f"note {directory}: rendered by the fallback renderer (no kubectl, or AIGW_NO_KUBECTL set)")
        return ours
    out = subprocess.run([kubectl, "kustomize", str(directory)], check=True, capture_output=True, text=True)
    theirs = [doc for doc in yaml.safe_load_all(out.stdout) if doc]
    key = lambda d: (d["kind"], d["metadata"]["name"])  # noqa: E731
    if sorted(ours, key=key) != sorted(theirs, key=key):
        fail(f"{directory}: the fallback renderer disagrees with kubectl kustomize")
    print(f"ok   {directory}: rendered by kubectl kustomize (the fallback renderer agrees)")
    return theirs


def check_against_gateway(binary, docs, where):
    by_kind = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    env = dict(os.environ)
    for secret in by_kind.get("Secret", []):
        env.update({k: str(v) for k, v in secret.get("stringData", {}).items()})
    grace = None
    for config_map in by_kind.get("ConfigMap", []):
        text = config_map.get("data", {}).get("config.yaml")
        if text is None:
            continue
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write(text)
        result = subprocess.run([binary, "check", "--config", f.name], env=env, capture_output=True, text=True)
        os.unlink(f.name)
        if result.returncode != 0:
            fail(f"{where}: ConfigMap {config_map['metadata']['name']}: {result.stderr.strip()}")
        else:
            print(f"ok   {where}: ConfigMap {config_map['metadata']['name']} passes ai-gateway check")
        grace = (yaml.safe_load(text).get("server") or {}).get("shutdown_grace_s", 30)
    gateways = [d for d in by_kind.get("Deployment", []) if d["metadata"]["name"] == "ai-gateway"]
    if len(gateways) != 1:
        fail(f"{where}: expected one Deployment ai-gateway")
        return
    pod = gateways[0]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    pause = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    period = pod.get("terminationGracePeriodSeconds", 30)
    if grace is None or period <= pause + grace:
        fail(f"{where}: terminationGracePeriodSeconds {period} must exceed preStop {pause} s + shutdown_grace_s {grace}")
    if container.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/health/ready":
        fail(f"{where}: the readiness probe must ask /health/ready")
    security = container.get("securityContext", {})
    if not (pod.get("securityContext", {}).get("runAsNonRoot") and security.get("readOnlyRootFilesystem")):
        fail(f"{where}: the gateway must run non-root on a read-only root filesystem")
    mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
    if not {"/etc/ai-gateway", "/data"} <= mounts:
        fail(f"{where}: the config must be mounted at /etc/ai-gateway and a volume at /data")


def main():
    binary, root = sys.argv[1], Path(sys.argv[2])
    version = kv.latest_version()
    print(f"Kubernetes schemas: {version} (kubernetes-validate {kv.__version__})")
    kustomizations = sorted(p.parent for p in root.rglob("kustomization.yaml"))
    for directory in kustomizations:
        listed = yaml.safe_load((directory / "kustomization.yaml").read_text())
        files = [directory / r for r in listed.get("resources", []) if (directory / r).is_file()]
        files += [directory / p["path"] for p in listed.get("patches", [])]
        for path in files:
            for doc in load_all(path):
                validate(doc, path.relative_to(root), version)
        docs = render(directory)
        for doc in docs:
            validate(doc, f"{directory.relative_to(root)} (rendered)", version)
        check_against_gateway(binary, docs, directory.relative_to(root))
    stray = {p for p in root.rglob("*.yaml") if p.name != "kustomization.yaml"}
    for directory in kustomizations:
        listed = yaml.safe_load((directory / "kustomization.yaml").read_text())
        stray -= {directory / r for r in listed.get("resources", [])}
        stray -= {directory / p["path"] for p in listed.get("patches", [])}
    for path in sorted(stray):
        fail(f"{path}: in no kustomization")
    if FAILURES:
        print(f"{len(FAILURES)} manifest check(s) failed")
        sys.exit(1)
    print(f"every manifest of {len(kustomizations)} kustomizations validated against Kubernetes {version}")


if __name__ == "__main__":
    main()
