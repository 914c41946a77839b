"""Kubernetes manifests: one ``apps/v1`` Deployment per FleetPlan pool.

Each Deployment runs ``count`` replicas of the pool's ``vllm serve`` command with the pool's GPUs
per replica as the GPU resource limit, a node selector on the GPU product label published by
NVIDIA GPU feature discovery (``nvidia.com/gpu.product``), shared memory for TP/PP workers, and
labels that a Service per model can select.  Output is plain YAML (``kubectl apply -f DIR``).
A re-plan (a plan with a ``replan`` section, ``planner fleet --previous``) also gets
``transition.sh``: the move from the plan in place in an order that keeps the SLOs (grow, wait
for the rollouts, switch the routing, then shrink).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from planner.emit.vllm import pool_command, slug

#: catalog GPU name -> (resource name, node label key, node label value)
GPU_PRODUCTS = {
    "A10G": ("nvidia.com/gpu", "nvidia.com/gpu.product", "NVIDIA-A10G"),
    "L4": ("nvidia.com/gpu", "nvidia.com/gpu.product", "NVIDIA-L4"),
    "L40S": ("nvidia.com/gpu", "nvidia.com/gpu.product", "NVIDIA-L40S"),
    "A100-40GB-SXM": ("nvidia.com/gpu", "nvidia.com/gpu.product", "NVIDIA-A100-SXM4-40GB"),
    "A100-80GB-SXM": ("nvidia.com/gpu", "nvidia.com/gpu.product", "NVIDIA-A100-SXM4-80GB"),
    "A100-80GB": ("nvidia.com/gpu", "nvidia.com/gpu.product", "NVIDIA-A100-SXM4-80GB"),
    "H100-SXM": ("nvidia.com/gpu", "nvidia.com/gpu.product", "NVIDIA-H100-80GB-HBM3"),
    "H100-PCIE": ("nvidia.com/gpu", "nvidia.com/gpu.product", "NVIDIA-H100-PCIe"),
    "H200-SXM": ("nvidia.com/gpu", "nvidia.com/gpu.product", "NVIDIA-H200"),
    "B200": ("nvidia.com/gpu", "nvidia.com/gpu.product", "NVIDIA-B200"),
    "MI300X": ("amd.com/gpu", "amd.com/gpu.product-name", "AMD_Instinct_MI300X_OAM"),
    "Gaudi3": ("habana.ai/gaudi", "habana.ai/gaudi.product", "HL-325L"),
}
DEFAULT_IMAGE = "vllm/vllm-openai:latest"


def gpu_product(gpu: str) -> tuple[str, str, str]:
    """(resource, node label key, node label value) for a GPU name; unknown NVIDIA names get a
    label derived from the name."""
    if gpu in GPU_PRODUCTS:
        return GPU_PRODUCTS[gpu]
    for k, v in GPU_PRODUCTS.items():
        if k.lower() == gpu.lower():
            return v
    return ("nvidia.com/gpu", "nvidia.com/gpu.product", "NVIDIA-" + gpu.upper())


def deployment(pool: dict[str, Any], *, image: str = DEFAULT_IMAGE, namespace: str | None = None,
               port: int = 8000) -> dict[str, Any]:
    """The Deployment manifest of one pool (a plain dict, ready for ``yaml.safe_dump``)."""
    name = slug(pool["id"])
    resource, label_key, label_value = gpu_product(pool["gpu"])
    gpus = int(pool["gpus_per_replica"])
    labels = {"app.kubernetes.io/name": "vllm",
              "app.kubernetes.io/instance": name,
              "app.kubernetes.io/managed-by": "llm-placement-planner",
              "planner/model": slug(pool["model"]),
              "planner/price-class": pool["price_class"].replace("_", "-")}
    args = pool_command(pool, port=port)
    annotations = {"planner/pool-id": pool["id"],
                   "planner/cost-per-hour": f"{pool['cost_per_hour']:.4f}"}
    if "counts_by_period" in pool:
        annotations["planner/replicas-by-period"] = ",".join(str(c) for c in pool["counts_by_period"])
    container = {
        "name": "vllm",
        "image": image,
        "command": args[:2],
        "args": args[2:],
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "resources": {"limits": {resource: gpus}, "requests": {resource: gpus}},
        "readinessProbe": {"httpGet": {"path": "/health", "port": port},
                           "initialDelaySeconds": 60, "periodSeconds": 10},
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
    }
    meta = {"name": name, "labels": labels, "annotations": annotations}
    if namespace:
        meta["namespace"] = namespace
    pod_spec: dict[str, Any] = {
        "nodeSelector": {label_key: label_value},
        "containers": [container],
        "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}}],
    }
    if pool["price_class"] == "spot":
        pod_spec["tolerations"] = [{"key": "planner/spot", "operator": "Exists", "effect": "NoSchedule"}]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": int(pool["count"]),
            "selector": {"matchLabels": {"app.kubernetes.io/instance": name}},
            "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
        },
    }


def service(model: str, *, port: int = 8000, namespace: str | None = None) -> dict[str, Any]:
    """A Service spreading one model's traffic over all its pools (a router that follows the
    plan's routing table would replace it)."""
    meta = {"name": slug(model), "labels": {"app.kubernetes.io/managed-by": "llm-placement-planner"}}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta,
            "spec": {"selector": {"planner/model": slug(model)},
                     "ports": [{"name": "http", "port": port, "targetPort": port}]}}


def emit_fleet_kubernetes(plan: dict[str, Any], out_dir: Path, *, image: str = DEFAULT_IMAGE,
                          namespace: str | None = None) -> list[Path]:
    """``<pool>.yaml`` (a Deployment) per pool and ``service-<model>.yaml`` per model."""
    written = []
    for pool in plan.get("pools", []):
        path = out_dir / f"{slug(pool['id'])}.yaml"
        path.write_text(yaml.safe_dump(deployment(pool, image=image, namespace=namespace),
                                       sort_keys=False), encoding="utf-8")
        written.append(path)
    if plan.get("replan"):
        path = out_dir / "transition.sh"
        path.write_text(transition_script(plan, namespace=namespace), encoding="utf-8")
        path.chmod(0o755)
        written.append(path)
    for model in sorted({p["model"] for p in plan.get("pools", [])}):
        path = out_dir / f"service-{slug(model)}.yaml"
        path.write_text(yaml.safe_dump(service(model, namespace=namespace), sort_keys=False),
                        encoding="utf-8")
        written.append(path)
    return written


def transition_script(plan: dict[str, Any], *, namespace: str | None = None) -> str:
    """A shell script moving the cluster from the plan in place to ``plan`` (its ``replan``
    section): new pools are applied from their manifests and growing ones scaled up, every
    rollout awaited, then (after the routing switch) shrinking pools scaled down and vanished
    ones deleted.  Deployment names are the pools' slugs, as :func:`deployment` names them."""
    tr = plan["replan"]["transition"]
    ns = f" -n {namespace}" if namespace else ""
    lines = ["#!/bin/sh",
             "# Move from the plan in place to this one without breaking the SLOs "
             "(planner fleet --previous).",
             f"# Counts are period {tr['period']}'s; GPUs changed: "
             f"{plan['replan']['gpus_changed']:g}; $/h while both are up: "
             f"{tr['cost_per_hour_during_switch']:.2f}.",
             "set -eu", 'cd "$(dirname "$0")"  # the manifests sit next to this script', "",
             "# 1. grow first"]
    lines += [_kubectl(step, ns) for step in tr["grow_first"]]
    for step in tr["grow_first"]:
        lines.append(f"kubectl rollout status{ns} deployment/{slug(step['pool'])} --timeout=30m")
    lines += ["", "# 2. switch the router to this plan's routing table (plan.routing)", "",
              "# 3. then shrink"]
    lines += [_kubectl(step, ns) for step in tr["shrink_after"]]
    return "\n".join(lines) + "\n"


def _kubectl(step: dict[str, Any], ns: str) -> str:
    """The kubectl line of one transition step: a new pool is applied from its manifest, a
    vanished one deleted, any other scaled."""
    name = slug(step["pool"])
    if step["from"] == 0:
        return f"kubectl apply{ns} -f {name}.yaml"
    if step["to"] == 0:
        return f"kubectl delete{ns} deployment/{name} --ignore-not-found"
    return f"kubectl scale{ns} deployment/{name} --replicas={step['to']}"
