"""Kubernetes manifests: one ``apps/v1`` Deployment per FleetPlan pool.

Each Deployment runs ``count`` replicas of the pool's ``vllm serve`` command with the pool's GPUs
per replica as the GPU resource limit, a node selector on the GPU product label published by
NVIDIA GPU feature discovery (``nvidia.com/gpu.product``), shared memory for TP/PP workers, and
labels that a Service per model can select (plain replicas only).  The roles of a prefill/decode
bundle get a Service each (``service-<bundle>-prefill`` / ``-decode``) and role labels
(``planner/role``, llm-d's ``llm-d.ai/role``); clients never reach them through the model's
Service but through the bundle's router (``router-<bundle>.yaml``: vLLM's router in P/D mode,
finding the bundle's prefill and decode pods by those labels, with the RBAC it needs to watch
pods, and its Service).  Output is plain YAML (``kubectl apply -f DIR``).
A re-plan (a plan with a ``replan`` section, ``planner fleet --previous``) also gets
``transition.sh``: the move from the plan in place in an order that keeps the SLOs (grow, wait
for the rollouts, switch the routing, then shrink).

A plan over several periods (a load curve) also gets the scaling between them:
``schedule.sh PERIOD`` scales every pool to that period's counts (growing pools first, their
rollouts awaited, then shrinking ones), for a pipeline or a cron job to call at each boundary;
and where the periods tile one day or one week on whole minutes, ``keda/`` holds a KEDA
``ScaledObject`` per pool whose count varies: one cron trigger (daily, or weekly on a day of
the week) per run of periods at one count, starting
``lead_s`` early (a vLLM replica needs minutes to load its weights) and ending with the run, so
that around a boundary both counts hold (KEDA scales to the largest active trigger): growth
before shrinkage again.  KEDA manifests sit in their own folder so that ``kubectl apply -f DIR``
works on clusters without KEDA's CRDs.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from hardware.errors import InputError
from planner.emit import Artifact, write_artifacts
from planner.emit.vllm import (RAY_PORT, ContextLength, add_file, context_lengths,
                               pd_router_args, pool_command, replica_nodes, shell_line, slug)

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
#: the vLLM serving image per GPU vendor: vLLM's own CUDA image (docs.vllm.ai, "Using Docker")
#: and AMD's ROCm build of vLLM (rocm.docs.amd.com, "vLLM inference"); Intel Gaudi runs vLLM from
#: Habana's images, whose tags follow its driver release: no default, ``--image intel=IMAGE``
DEFAULT_IMAGES = {"nvidia": "vllm/vllm-openai:latest", "amd": "rocm/vllm:latest"}
DEFAULT_IMAGE = DEFAULT_IMAGES["nvidia"]
#: the Secret (key ``token``) whose Hugging Face token the serving pods read, if it exists
HF_TOKEN_SECRET = "hf-token"
#: where the vLLM images keep the Hugging Face cache (downloaded weights)
HF_CACHE_PATH = "/root/.cache/huggingface"
#: LeaderWorkerSet's API (the multi-node replicas of :func:`deployment`)
LWS_API_VERSION = "leaderworkerset.x-k8s.io/v1"
#: a GPU's vendor by its device plugin's resource name
VENDOR_OF_RESOURCE = {"nvidia.com/gpu": "nvidia", "amd.com/gpu": "amd", "habana.ai/gaudi": "intel"}
#: the prefill/decode router of a disaggregated bundle: vLLM's router (github.com/vllm-project/
#: router; ``pip install vllm-router`` holds the same binary), from the image vLLM's own
#: disaggregation docs run; ``--router-image`` pins a release
DEFAULT_ROUTER_IMAGE = "vllm/vllm-router:nightly"
#: seconds a scale-up starts before its period (KEDA cron triggers): pulling the image and
#: loading the weights of a 70B model take minutes; ten is a safe default, ``--lead-s`` sets it
DEFAULT_LEAD_S = 600
SECONDS_PER_DAY = 86_400
SECONDS_PER_WEEK = 7 * SECONDS_PER_DAY
#: days of the week as ``--weekday`` takes them, Monday first (cron numbers them from Sunday = 0)
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def gpu_product(gpu: str) -> tuple[str, str, str]:
    """(resource, node label key, node label value) for a GPU name; a name not in
    :data:`GPU_PRODUCTS` falls back to an NVIDIA GPU labelled the way GPU feature discovery
    names products, ``NVIDIA-<NAME>`` (a valid label value: other characters become ``-``,
    at most 63 characters): see :func:`gpu_fallback`."""
    if gpu in GPU_PRODUCTS:
        return GPU_PRODUCTS[gpu]
    for k, v in GPU_PRODUCTS.items():
        if k.lower() == gpu.lower():
            return v
    value = re.sub(r"[^A-Za-z0-9_.-]+", "-", "NVIDIA-" + gpu.upper())[:63]
    return ("nvidia.com/gpu", "nvidia.com/gpu.product", re.sub(r"[^A-Za-z0-9]+$", "", value))


#: GPUs of one node a replica of a GPU type outside the catalog is assumed to fit in (the
#: common largest GPU server); the catalog's node types say it for the GPUs it knows
FALLBACK_NODE_GPUS = 8


def gpu_fallback(pool: dict[str, Any], *, field: str = "pools[].gpu") -> str | None:
    """How a pool whose GPU :data:`GPU_PRODUCTS` does not know is deployed (None for the
    others): the :func:`gpu_product` fallback (resource ``nvidia.com/gpu``, node selector
    ``nvidia.com/gpu.product=NVIDIA-<NAME>``) and, outside the catalog's node types, each
    replica on one node (up to :data:`FALLBACK_NODE_GPUS` GPUs).  The emitted manifest says so
    (a comment and the ``planner/gpu-fallback`` annotation).  Raises InputError for a larger
    replica of a GPU with no catalog node: how many nodes it spans cannot be guessed."""
    from hardware.catalog import largest_node_gpus

    gpu = str(pool["gpu"])
    if any(k.lower() == gpu.lower() for k in GPU_PRODUCTS):
        return None
    gpus, per_node = int(pool["gpus_per_replica"]), largest_node_gpus(gpu)
    if per_node is None and gpus > FALLBACK_NODE_GPUS:
        raise InputError(f"pool {pool['id']}: a replica of {gpus} {gpu} GPUs, and the catalog "
                         f"has no node type of {gpu} to say how many nodes it spans",
                         field=field, expected=f"replicas of at most {FALLBACK_NODE_GPUS} GPUs, "
                                               f"or {gpu} in the hardware catalog",
                         hint=f"Add {gpu} and its node type (an accelerators/ and a nodes/ file, "
                              "the layout of hardware/catalog) to a folder named by "
                              "$PLANNER_CATALOG, or emit --format vllm")
    resource, key, value = gpu_product(gpu)
    return (f"GPU {gpu} is not in the catalog (GPU_PRODUCTS): node selector {key}={value} (GPU "
            f"feature discovery's naming; check 'kubectl get nodes -L {key}'), resource "
            f"{resource}" + (", each replica on one node" if per_node is None else ""))


def image_for(pool: dict[str, Any], images: dict[str, str] | None = None) -> str:
    """The serving image of a pool: ``images[vendor]``, else ``images["*"]`` (one image for every
    pool), else the vendor's :data:`DEFAULT_IMAGES` entry."""
    images = images or {}
    vendor = VENDOR_OF_RESOURCE[gpu_product(pool["gpu"])[0]]
    image = images.get(vendor) or images.get("*") or DEFAULT_IMAGES.get(vendor)
    if image is None:
        raise InputError(f"no default vLLM image for {vendor} GPUs (pool {pool['id']} on "
                         f"{pool['gpu']})", field="--image", expected=f"--image {vendor}=IMAGE")
    return image


def deployment(pool: dict[str, Any], *, image: str = DEFAULT_IMAGE, namespace: str | None = None,
               port: int = 8000, context: ContextLength | None = None,
               cache_pvc: str | None = None) -> dict[str, Any]:
    """The manifest of one pool (a plain dict, ready for ``yaml.safe_dump``): a Deployment, or
    for replicas larger than a node (:func:`planner.emit.vllm.replica_nodes`) a LeaderWorkerSet
    (github.com/kubernetes-sigs/lws, the pattern of vLLM's own multi-node docs): per replica a
    leader pod that heads a Ray cluster and serves, and worker pods that join it.

    ``context``: the pool's ``--max-model-len`` and where it came from (see
    :func:`planner.emit.vllm.context_lengths`), recorded in the ``planner/max-model-len``
    annotation.  ``cache_pvc``: a PersistentVolumeClaim mounted as the Hugging Face cache, so
    a new replica loads the weights from there instead of downloading them again."""
    name = slug(pool["id"])
    resource, label_key, label_value = gpu_product(pool["gpu"])
    nodes, gpus = replica_nodes(pool)
    labels = {"app.kubernetes.io/name": "vllm",
              "app.kubernetes.io/instance": name,
              "app.kubernetes.io/managed-by": "llm-placement-planner",
              "planner/model": slug(pool["model"]),
              "planner/price-class": pool["price_class"].replace("_", "-")}
    labels.update(serving_labels(pool))
    args = pool_command(pool, port=port, max_model_len=context.tokens if context else None)
    annotations = {"planner/pool-id": pool["id"],
                   "planner/cost-per-hour": f"{pool['cost_per_hour']:.4f}"}
    if context is not None:
        annotations["planner/max-model-len"] = context.why
    fallback = gpu_fallback(pool)
    if fallback:
        annotations["planner/gpu-fallback"] = fallback
    # gated weights (Llama, say) download with a Hugging Face token: from the Secret
    # HF_TOKEN_SECRET when it exists (optional: public models start without it)
    env: list[dict[str, Any]] = [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {
        "name": HF_TOKEN_SECRET, "key": "token", "optional": True}}}]
    if pool.get("role"):
        # NIXL's handshake: a decode pod reaches the prefill pod that holds its KV at the host
        # the prefill side reports, ``localhost`` unless told: the pod's own IP here
        env.append({"name": "VLLM_NIXL_SIDE_CHANNEL_HOST",
                    "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}})
    if "counts_by_period" in pool:
        annotations["planner/replicas-by-period"] = ",".join(str(c) for c in pool["counts_by_period"])
    volumes: list[dict[str, Any]] = [
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}}]
    mounts = [{"name": "dshm", "mountPath": "/dev/shm"}]
    if cache_pvc:
        mounts.append({"name": "hf-cache", "mountPath": HF_CACHE_PATH})
        volumes.append({"name": "hf-cache", "persistentVolumeClaim": {"claimName": cache_pvc}})

    def pod(command: list[str], cmd_args: list[str], serves: bool) -> dict[str, Any]:
        container = {"name": "vllm", "image": image, "command": command, "args": cmd_args,
                     "env": [dict(e) for e in env]}
        if serves:
            container["ports"] = [{"name": "http", "containerPort": port, "protocol": "TCP"}]
        container["resources"] = {"limits": {resource: gpus}, "requests": {resource: gpus}}
        if serves:
            container["readinessProbe"] = {"httpGet": {"path": "/health", "port": port},
                                           "initialDelaySeconds": 60, "periodSeconds": 10}
        container["volumeMounts"] = [dict(m) for m in mounts]
        spec: dict[str, Any] = {"nodeSelector": {label_key: label_value},
                                "containers": [container], "volumes": [dict(v) for v in volumes]}
        if pool["price_class"] == "spot":
            spec["tolerations"] = [{"key": "planner/spot", "operator": "Exists",
                                    "effect": "NoSchedule"}]
        return spec

    meta = {"name": name, "labels": labels, "annotations": annotations}
    if namespace:
        meta["namespace"] = namespace
    if nodes == 1:
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta,
            "spec": {
                "replicas": int(pool["count"]),
                "selector": {"matchLabels": {"app.kubernetes.io/instance": name}},
                "template": {"metadata": {"labels": dict(labels)},
                             "spec": pod(args[:2], args[2:], serves=True)},
            },
        }
    annotations["planner/nodes-per-replica"] = f"{nodes} x {gpus} GPUs"
    # workers hold GPUs but serve nothing: without the serving labels no Service picks them
    workers = {k: v for k, v in labels.items() if not k.startswith(("planner/serving",
                                                                   "planner/role", "llm-d.ai/"))}
    leader = f"ray start --head --port={RAY_PORT} && exec {shell_line(args)}"
    worker = f'exec ray start --address="${{LWS_LEADER_ADDRESS}}:{RAY_PORT}" --block'
    return {
        "apiVersion": LWS_API_VERSION,
        "kind": "LeaderWorkerSet",
        "metadata": meta,
        "spec": {
            "replicas": int(pool["count"]),
            "leaderWorkerTemplate": {
                "size": nodes,
                "restartPolicy": "RecreateGroupOnPodRestart",
                "leaderTemplate": {"metadata": {"labels": dict(labels)},
                                   "spec": pod(["/bin/sh", "-c"], [leader], serves=True)},
                "workerTemplate": {"metadata": {"labels": {**workers, "planner/lws": "worker"}},
                                   "spec": pod(["/bin/sh", "-c"], [worker], serves=False)},
            },
        },
    }


def workload_ref(pool: dict[str, Any]) -> str:
    """``kind/name`` of a pool's workload for kubectl: ``deployment/...``, or
    ``leaderworkerset/...`` for multi-node replicas (:func:`deployment`)."""
    kind = "leaderworkerset" if replica_nodes(pool)[0] > 1 else "deployment"
    return f"{kind}/{slug(pool['id'])}"


def wait_ready(pool: dict[str, Any], ns: str) -> str:
    """The kubectl line that waits for a pool's scale-up: a Deployment's rollout, or a
    LeaderWorkerSet's ``Available`` condition."""
    ref = workload_ref(pool)
    if ref.startswith("deployment/"):
        return f"kubectl rollout status{ns} {ref} --timeout=30m"
    return f"kubectl wait{ns} --for=condition=Available {ref} --timeout=30m"


def serving_labels(pool: dict[str, Any]) -> dict[str, str]:
    """How a pool's pods take requests: ``planner/serving: direct`` (plain replicas, behind the
    model's Service) or ``disaggregated`` with the bundle and the role (a prefill/decode router
    sends each request to a prefill pod, then to a decode pod that pulls the KV; llm-d's
    scheduler finds the roles by its ``llm-d.ai/role`` label)."""
    if not pool.get("role"):
        return {"planner/serving": "direct"}
    return {"planner/serving": "disaggregated", "planner/bundle": slug(pool["group"]),
            "planner/role": pool["role"], "llm-d.ai/role": pool["role"]}


def service(model: str, *, port: int = 8000, namespace: str | None = None,
            role: str | None = None, bundle: str | None = None) -> dict[str, Any]:
    """A Service spreading one model's traffic over its plain replicas (a router that follows
    the plan's routing table would replace it); with ``role`` and ``bundle``, the Service of
    one role of a disaggregated bundle, for the prefill/decode router to call (clients must not:
    a prefill pod alone answers with one token)."""
    name = slug(model) if role is None else slug(f"{bundle}-{role}")
    meta: dict[str, Any] = {"name": name,
                            "labels": {"app.kubernetes.io/managed-by": "llm-placement-planner"}}
    selector = {"planner/model": slug(model), "planner/serving": "direct"}
    if role is not None:
        selector = {"planner/bundle": slug(bundle), "planner/role": role}
        meta["annotations"] = {"planner/note": f"the {role} side of bundle {bundle}: point a "
                               "prefill/decode router (NIXL KV transfer) at this Service and "
                               "its other role's, not clients"}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta,
            "spec": {"selector": selector,
                     "ports": [{"name": "http", "port": port, "targetPort": port}]}}


def pd_router(model: str, bundle: str, *, image: str = DEFAULT_ROUTER_IMAGE,
              namespace: str | None = None, port: int = 8000) -> list[dict[str, Any]]:
    """The prefill/decode router of one disaggregated bundle (the manifests, in apply order).

    vLLM's router in P/D mode with Kubernetes service discovery: it watches the pods labelled
    ``planner/bundle=<bundle>`` with ``planner/role=prefill`` / ``decode`` in its own namespace
    (read from the downward API, so the manifests apply anywhere), sends each request to a
    prefill pod and then to a decode pod with the prefill's KV-transfer parameters (the decode
    pod pulls the KV over NIXL).  A ServiceAccount with a Role to list and watch pods (nothing
    cluster-wide), the Deployment, and the Service clients of the bundle's traffic call."""
    name = slug(f"router-{bundle}")
    labels = {"app.kubernetes.io/name": "vllm-router", "app.kubernetes.io/instance": name,
              "app.kubernetes.io/managed-by": "llm-placement-planner",
              "planner/model": slug(model), "planner/bundle": slug(bundle)}

    def meta(**extra: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"name": name, "labels": dict(labels), **extra}
        if namespace:
            out["namespace"] = namespace
        return out

    def selector(role: str) -> list[str]:
        return [f"planner/bundle={slug(bundle)}", f"planner/role={role}"]

    args = pd_router_args(["--service-discovery",
                           "--service-discovery-namespace", "$(POD_NAMESPACE)",
                           "--service-discovery-port", str(port),
                           "--prefill-selector", *selector("prefill"),
                           "--decode-selector", *selector("decode")], port=port)
    container = {
        "name": "router", "image": image, "command": args[:1], "args": args[1:],
        "env": [{"name": "POD_NAMESPACE",
                 "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}],
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}},
        "readinessProbe": {"httpGet": {"path": "/health", "port": port},
                           "initialDelaySeconds": 5, "periodSeconds": 10},
    }
    subject = {"kind": "ServiceAccount", "name": name, **({"namespace": namespace} if namespace else {})}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta()},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta(),
         "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta(),
         "subjects": [subject],
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta(),
         "spec": {"replicas": 1,
                  "selector": {"matchLabels": {"app.kubernetes.io/instance": name}},
                  "template": {"metadata": {"labels": dict(labels)},
                               "spec": {"serviceAccountName": name, "containers": [container]}}}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": meta(annotations={"planner/note": f"the entry point of bundle {bundle} "
                                       f"(model {model}): send it the requests the plan routes "
                                       "to the bundle"}),
         "spec": {"selector": {"app.kubernetes.io/instance": name},
                  "ports": [{"name": "http", "port": port, "targetPort": port}]}},
    ]


def check_timezone(name: str, *, field: str = "--timezone") -> str:
    """``name`` if it is an IANA time zone (``Europe/Paris``, ``Etc/UTC``): KEDA's cron
    triggers load it by that name, and an unknown one leaves the ScaledObject inert."""
    import zoneinfo

    from hardware.errors import nearest

    known = zoneinfo.available_timezones()
    try:
        ok = name in known if known else bool(zoneinfo.ZoneInfo(name))
    except (ValueError, zoneinfo.ZoneInfoNotFoundError):
        ok = False
    if not ok:
        near = nearest(name, known)
        raise InputError(f"unknown time zone {name!r}", field=field,
                         expected="an IANA time zone name such as Europe/Paris or Etc/UTC",
                         hint=f"Did you mean {', '.join(near)}?" if near else None)
    return name


def fleet_kubernetes_files(plan: dict[str, Any], *, images: dict[str, str] | None = None,
                           cache_pvc: str | None = None,
                           namespace: str | None = None, day_start_s: float = 0.0,
                           weekday: str = "mon", timezone: str = "Etc/UTC",
                           lead_s: float = DEFAULT_LEAD_S,
                           router_image: str = DEFAULT_ROUTER_IMAGE) -> dict[str, Artifact]:
    """The files of :func:`emit_fleet_kubernetes`, by path relative to the output folder;
    ``images``: serving images by vendor (:func:`image_for`); ``cache_pvc``: the weights'
    cache claim (:func:`deployment`).  The plan is checked first
    (:func:`planner.emit.plan_check.check_fleet_plan`)."""
    from planner.emit.plan_check import check_fleet_plan
    plan = check_fleet_plan(plan)
    check_timezone(timezone)
    files: dict[str, Artifact] = {}
    lengths = context_lengths(plan)
    for i, pool in enumerate(plan.get("pools", [])):
        fallback = gpu_fallback(pool, field=f"pools[{i}].gpus_per_replica")
        add_file(files, f"{slug(pool['id'])}.yaml",
                 Artifact((f"# NOTE: {fallback}\n" if fallback else "")
                          + yaml.safe_dump(deployment(pool, image=image_for(pool, images),
                                                    namespace=namespace, cache_pvc=cache_pvc,
                                                    context=lengths[pool["id"]]), sort_keys=False)),
                 pool["id"])
    if plan.get("replan"):
        files["transition.sh"] = Artifact(transition_script(plan, namespace=namespace), executable=True)
    if _varying_pools(plan):
        files["schedule.sh"] = Artifact(schedule_script(plan, namespace=namespace), executable=True)
        for name, manifest in scaled_objects(plan, day_start_s=day_start_s, weekday=weekday,
                                             timezone=timezone, lead_s=lead_s, namespace=namespace):
            files[f"keda/{name}.yaml"] = Artifact(yaml.safe_dump(manifest, sort_keys=False))
    services = [(f"service-{slug(model)}", service(model, namespace=namespace), model)
                for model in sorted({p["model"] for p in plan.get("pools", []) if not p.get("role")})]
    services += [(f"service-{slug(f'{group}-{role}')}",
                  service(model, namespace=namespace, role=role, bundle=group), f"{group}/{role}")
                 for model, group, role in sorted({(p["model"], p["group"], p["role"])
                                                   for p in plan.get("pools", []) if p.get("role")})]
    for name, manifest, source in services:
        add_file(files, f"{name}.yaml", Artifact(yaml.safe_dump(manifest, sort_keys=False)), source)
    for model, group in sorted({(p["model"], p["group"]) for p in plan.get("pools", []) if p.get("role")}):
        add_file(files, f"{slug(f'router-{group}')}.yaml",
                 Artifact(yaml.safe_dump_all(pd_router(model, group, image=router_image,
                                                       namespace=namespace), sort_keys=False)),
                 f"{group} (router)")
    return files


def emit_fleet_kubernetes(plan: dict[str, Any], out_dir: Path, *,
                          images: dict[str, str] | None = None, cache_pvc: str | None = None,
                          namespace: str | None = None, day_start_s: float = 0.0,
                          weekday: str = "mon", timezone: str = "Etc/UTC",
                          lead_s: float = DEFAULT_LEAD_S, replace: bool = False,
                          router_image: str = DEFAULT_ROUTER_IMAGE) -> list[Path]:
    """``<pool>.yaml`` (a Deployment) per pool and ``service-<model>.yaml`` per model; per
    prefill/decode bundle ``service-<bundle>-<role>.yaml`` and ``router-<bundle>.yaml``
    (:func:`pd_router`, its image ``router_image``); for a
    re-plan ``transition.sh``; for a plan over several periods ``schedule.sh`` and, where
    :func:`scaled_objects` applies, ``keda/<pool>.yaml``.

    ``day_start_s``: the time of day period 0 starts (seconds after midnight in
    ``timezone``, an IANA name); ``weekday``: its day of the week (a one-week plan's KEDA
    triggers); ``lead_s``: how early a KEDA scale-up starts.  The folder
    rules (empty, or ``replace``) are :func:`planner.emit.write_artifacts`'s."""
    files = fleet_kubernetes_files(plan, images=images, cache_pvc=cache_pvc, namespace=namespace,
                                   day_start_s=day_start_s,
                                   weekday=weekday, timezone=timezone, lead_s=lead_s,
                                   router_image=router_image)
    return write_artifacts(out_dir, files, replace=replace)


def transition_script(plan: dict[str, Any], *, namespace: str | None = None) -> str:
    """A shell script moving the cluster from the plan in place to ``plan`` (its ``replan``
    section): new pools are applied from their manifests and growing ones scaled up, every
    rollout awaited, then (after the routing switch) shrinking pools scaled down and vanished
    ones deleted.  Workload names are the pools' slugs, as :func:`deployment` names them."""
    tr = plan["replan"]["transition"]
    ns = f" -n {namespace}" if namespace else ""
    # a step names its pool: this plan's, or one the plan in place had (retired_pools)
    pools = {p["id"]: p for p in [*plan["replan"].get("retired_pools", []), *plan.get("pools", [])]
             if "id" in p}
    pools.update({r["pool"]: {"id": r["pool"], "gpu": r.get("gpu", ""),
                              "gpus_per_replica": r.get("gpus_per_replica", 1)}
                  for r in plan["replan"].get("retired_pools", []) if r["pool"] not in pools})

    def pool_of(step: dict[str, Any]) -> dict[str, Any]:
        return pools.get(step["pool"]) or {"id": step["pool"], "gpu": "", "gpus_per_replica": 1}

    lines = ["#!/bin/sh",
             "# Move from the plan in place to this one without breaking the SLOs "
             "(planner fleet --previous).",
             f"# Counts are period {tr['period']}'s; GPUs changed: "
             f"{plan['replan']['gpus_changed']:g}; $/h while both are up: "
             f"{tr['cost_per_hour_during_switch']:.2f}.",
             "set -eu", 'cd "$(dirname "$0")"  # the manifests sit next to this script', "",
             "# 1. grow first"]
    lines += [_kubectl(step, pool_of(step), ns) for step in tr["grow_first"]]
    lines += [wait_ready(pool_of(step), ns) for step in tr["grow_first"]]
    lines += ["", "# 2. switch the router to this plan's routing table (plan.routing)", "",
              "# 3. then shrink"]
    lines += [_kubectl(step, pool_of(step), ns) for step in tr["shrink_after"]]
    return "\n".join(lines) + "\n"


def _kubectl(step: dict[str, Any], pool: dict[str, Any], ns: str) -> str:
    """The kubectl line of one transition step of ``pool``: a new pool is applied from its
    manifest, a vanished one deleted, any other scaled."""
    if step["from"] == 0:
        return f"kubectl apply{ns} -f {slug(step['pool'])}.yaml"
    if step["to"] == 0:
        return f"kubectl delete{ns} {workload_ref(pool)} --ignore-not-found"
    return f"kubectl scale{ns} {workload_ref(pool)} --replicas={step['to']}"


def _varying_pools(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Pools whose replica count changes between the plan's periods."""
    return [p for p in plan.get("pools", [])
            if len(set(p.get("counts_by_period") or [])) > 1]


def schedule_script(plan: dict[str, Any], *, namespace: str | None = None) -> str:
    """``schedule.sh PERIOD``: scale every pool whose count varies to period ``PERIOD``'s
    count.  Pools that grow from the period before are scaled first and their rollouts
    awaited; only then do the others shrink (the same order as a re-plan's transition).
    Counts are absolute, so running a period twice, or out of turn, is harmless."""
    ns = f" -n {namespace}" if namespace else ""
    pools = _varying_pools(plan)
    n_periods = len(pools[0]["counts_by_period"])
    period_s = float(plan.get("period_s") or 0.0)
    lines = ["#!/bin/sh",
             "# Scale the fleet to one period of the plan: ./schedule.sh PERIOD",
             f"# {n_periods} periods of {period_s:g} s; call it at each period's start "
             "(period i starts i x period_s after period 0).",
             "# Pools with one count throughout keep their workload's replicas.",
             "set -eu", 'case "${1:-}" in']
    for t in range(n_periods):
        before = (t - 1) % n_periods
        grow = [p for p in pools if p["counts_by_period"][t] > p["counts_by_period"][before]]
        rest = [p for p in pools if p["counts_by_period"][t] <= p["counts_by_period"][before]]
        body = [f"kubectl scale{ns} {workload_ref(p)} --replicas={p['counts_by_period'][t]}"
                for p in grow]
        body += [wait_ready(p, ns) for p in grow if p["counts_by_period"][t] > 0]
        body += [f"kubectl scale{ns} {workload_ref(p)} --replicas={p['counts_by_period'][t]}"
                 for p in rest]
        lines.append(f"  {t})  # starts at {t * period_s:g} s")
        lines += [f"    {b}" for b in body] + ["    ;;"]
    lines += ['  *) echo "usage: $0 PERIOD (0..' + str(n_periods - 1) + ')" >&2; exit 2 ;;',
              "esac"]
    return "\n".join(lines) + "\n"


def lead_cost_per_hour(plan: dict[str, Any], lead_s: float) -> float:
    """Average $/h that starting every scale-up ``lead_s`` early adds to the plan: before each
    boundary where a pool grows, its larger count runs ``lead_s`` longer (periods repeat)."""
    from solvers.binpack import starts_of  # pulls in PuLP: only when a schedule is priced

    pools = _varying_pools(plan)
    if not pools:
        return 0.0
    counts = np.array([p["counts_by_period"] for p in pools])
    prices = np.array([float(p.get("price_per_replica_hour") or 0.0) for p in pools])
    started = starts_of(counts, np.zeros_like(counts)).sum(axis=1)
    horizon_s = float(plan.get("period_s") or 0.0) * counts.shape[1]
    return float(prices @ started) * lead_s / horizon_s if horizon_s > 0 else 0.0


def _cron(seconds: float, horizon_s: float) -> str:
    """Cron expression of a moment ``seconds`` after Monday 00:00 (whole minutes) that repeats
    every ``horizon_s``: daily ("M H * * *") for a one-day horizon, weekly on that day of the
    week ("M H * * D", D = 0 for Sunday) for a one-week one."""
    minute = int(round(seconds / 60.0)) % int(round(horizon_s / 60.0))
    day = "*" if horizon_s == SECONDS_PER_DAY else str((minute // 1440 + 1) % 7)
    minute %= 1440
    return f"{minute % 60} {minute // 60} * * {day}"


def _keda_horizon_s(span_s: float) -> float | None:
    """The span KEDA cron triggers repeat a plan's periods over: one day or one week (s), or
    ``None`` when the periods (``span_s`` in all) tile neither (``schedule.sh`` covers that)."""
    return next((h for h in (SECONDS_PER_DAY, SECONDS_PER_WEEK) if abs(span_s - h) <= 1e-6), None)


def _scale_target(pool: dict[str, Any]) -> dict[str, str]:
    """A ScaledObject's ``scaleTargetRef``: the pool's Deployment (KEDA's default kind), or its
    LeaderWorkerSet, which has the scale subresource KEDA drives."""
    name = slug(pool["id"])
    if replica_nodes(pool)[0] == 1:
        return {"name": name}
    return {"apiVersion": LWS_API_VERSION, "kind": "LeaderWorkerSet", "name": name}


def scaled_objects(plan: dict[str, Any], *, day_start_s: float = 0.0, weekday: str = "mon",
                   timezone: str = "Etc/UTC", lead_s: float = DEFAULT_LEAD_S,
                   namespace: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    """KEDA ``ScaledObject`` manifests (``(name, manifest)``) for the pools whose count varies,
    or ``[]`` when the plan's periods do not tile one day or one week on whole minutes (cron
    triggers repeat daily, or weekly; ``schedule.sh`` covers every other case).

    ``day_start_s``: the time of day period 0 starts (s after midnight in ``timezone``);
    ``weekday``: its day of the week (one of :data:`WEEKDAYS`; read for a one-week plan only).
    Per pool: ``minReplicaCount`` = its smallest count over the horizon, one cron trigger per
    run of consecutive periods at a larger count, from the run's start less ``lead_s`` to its
    end.
    """
    pools = _varying_pools(plan)
    if not pools:
        return []
    n_periods = len(pools[0]["counts_by_period"])
    period_s = float(plan.get("period_s") or 0.0)
    horizon_s = _keda_horizon_s(period_s * n_periods)
    if horizon_s is None:
        return []
    week_start_s = WEEKDAYS.index(weekday) * SECONDS_PER_DAY + day_start_s
    starts = [week_start_s + t * period_s for t in range(n_periods + 1)]
    if any(abs(s / 60.0 - round(s / 60.0)) > 1e-9 for s in starts + [s - lead_s for s in starts]):
        return []
    out = []
    for pool in pools:
        counts = [int(c) for c in pool["counts_by_period"]]
        low = min(counts)
        triggers = []
        t = 0
        while t < n_periods:
            end = t
            while end + 1 < n_periods and counts[end + 1] == counts[t]:
                end += 1
            if counts[t] > low:
                triggers.append({"type": "cron", "metadata": {
                    "timezone": timezone, "start": _cron(starts[t] - lead_s, horizon_s),
                    "end": _cron(starts[end + 1], horizon_s), "desiredReplicas": str(counts[t])}})
            t = end + 1
        name = slug(pool["id"])
        meta: dict[str, Any] = {"name": name,
                                "labels": {"app.kubernetes.io/managed-by": "llm-placement-planner"},
                                "annotations": {"planner/pool-id": pool["id"],
                                                "planner/replicas-by-period":
                                                    ",".join(str(c) for c in counts)}}
        if namespace:
            meta["namespace"] = namespace
        out.append((name, {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
                           "metadata": meta,
                           "spec": {"scaleTargetRef": _scale_target(pool),
                                    "minReplicaCount": low, "maxReplicaCount": max(counts),
                                    "triggers": triggers}}))
    return out
