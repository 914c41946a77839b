"""Prefill/decode disaggregated bundles in the fleet: capacities, the joint choice, plans, emit."""
from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from costmodels.model import load_model
from costmodels.serving import max_rate_disaggregated, max_rate_under_slo
from hardware.catalog import get_accelerator
from hardware.errors import InputError
from planner import fleet as fl

REPO = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((REPO / "planner" / "schemas" / "fleet_plan.schema.json").read_text())


def _caps(tpot, ttft=1.0, input_len=2048, model="llama-3.1-70b", tp=4):
    m, a = load_model(model), get_accelerator("H100-SXM")
    kw = dict(tp=tp, input_len=input_len, output_len=256, ttft_slo_s=ttft, tpot_slo_s=tpot)
    return (max_rate_under_slo(m, a, **kw), max_rate_disaggregated(m, a, phase="prefill", **kw),
            max_rate_disaggregated(m, a, phase="decode", **kw))


def test_phase_capacities_follow_the_steady_state_model():
    colo, pre, dec = _caps(0.03)
    # no prefill stalls its decode steps: a decode-only instance sustains more than a replica
    # doing both, and meets the TPOT SLO exactly where it binds
    assert dec.rate_rps > colo.rate_rps > 0
    assert dec.binding in ("tpot", "memory", "max_num_seqs") and dec.tpot_s <= 0.03 + 1e-12
    # the prefill side keeps TTFT (queue + prefill + KV transfer) inside the SLO less the
    # half TPOT set aside for joining a decode step
    assert 0 < pre.ttft_s <= 1.0 - 0.03 / 2 + 1e-9
    # tighter TPOT: fewer decode sequences, less rate
    assert _caps(0.025)[2].rate_rps < dec.rate_rps
    # a TTFT below the prefill time itself cannot be met at any rate
    short = _caps(0.03, ttft=0.01)[1]
    assert short.rate_rps == 0.0 and short.binding == "ttft"
    with pytest.raises(InputError, match="phase"):
        max_rate_disaggregated(load_model("llama-3.1-8b"), get_accelerator("H100-SXM"),
                               phase="both", tp=1, input_len=10, output_len=10)


def _request(dis, tpot):
    return {"models": [{"name": "m70b", "model": "llama-3.1-70b", "disaggregation": dis,
                        "workload": {"histogram": {"input_edges": [0, 1024, 4096],
                                                   "output_edges": [0, 128, 512],
                                                   "shares": [[0.2, 0.2], [0.3, 0.3]]},
                                     "rate_rps": 20.0},
                        "slo": {"ttft_s": 1.0, "tpot_s": tpot}}],
            "gpus": [{"name": "H100-SXM"}, {"name": "A100-80GB"}, {"name": "L40S"}]}


@pytest.mark.parametrize("tpot", [0.05, 0.03])
def test_bundles_are_chosen_jointly_with_the_mix(tpot):
    off = fl.plan_fleet(_request("off", tpot))
    auto = fl.plan_fleet(_request("auto", tpot))
    jsonschema.validate(auto, SCHEMA)
    assert auto["solver"]["status"] == off["solver"]["status"] == "optimal"
    assert auto["cost_per_hour"] <= off["cost_per_hour"] + 1e-9  # more options, never dearer
    roles = [p for p in auto["pools"] if p.get("role")]
    if tpot == 0.03:
        # tight TPOT: decode without prefill stalls wins (measured: about a quarter cheaper)
        assert auto["cost_per_hour"] < 0.9 * off["cost_per_hour"] and roles
    for p in roles:
        mate = [q for q in roles if q["group"] == p["group"] and q["price_class"] == p["price_class"]
                and q["role"] != p["role"]]
        assert len(mate) == 1 and mate[0]["bundles"] == p["bundles"]
        # each bundle holds n instances of this role, as its group name says
        n = p["count"] // p["bundles"]
        assert p["count"] == n * p["bundles"] and p["gpus"] == p["count"] * p["gpus_per_replica"]
        assert f"{n}{p['role'][0]}-tp{p['shape']['tp']}-pp{p['shape']['pp']}" in p["group"]
    # pool costs add up to the plan's cost
    assert sum(p["cost_per_hour"] for p in auto["pools"]) == pytest.approx(auto["cost_per_hour"])


def test_bundle_pools_emit_kv_transfer_and_replan_cleanly(tmp_path):
    from planner.emit.kubernetes import emit_fleet_kubernetes
    from planner.emit.vllm import emit_fleet_vllm, pool_command, slug

    plan = fl.plan_fleet(_request("auto", 0.03))
    roles = [p for p in plan["pools"] if p.get("role")]
    assert roles
    for p in plan["pools"]:
        assert ("--kv-transfer-config" in pool_command(p)) == bool(p.get("role"))
    emit_fleet_vllm(plan, tmp_path / "vllm")  # each format its own folder: emit wants it empty
    emit_fleet_kubernetes(plan, tmp_path / "k8s")
    for p in roles:  # one script and one Deployment per role pool
        assert (tmp_path / "vllm" / f"{slug(p['id'])}.sh").exists()
        assert (tmp_path / "k8s" / f"{slug(p['id'])}.yaml").exists()
    # clients reach plain replicas only; each bundle role has its own Service, each bundle a
    # router that finds its two roles' pods and a Service in front of it
    docs = [d for f in (tmp_path / "k8s").glob("*.yaml") for d in yaml.safe_load_all(f.read_text())]
    pods = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
            for d in docs if d["kind"] == "Deployment"}
    routers = {n for n, labels in pods.items() if labels["app.kubernetes.io/name"] == "vllm-router"}
    services = [d for d in docs if d["kind"] == "Service"]
    for svc in services:
        sel = svc["spec"]["selector"]
        chosen = {n for n, labels in pods.items() if all(labels.get(k) == v for k, v in sel.items())}
        assert chosen  # no Service without pods
        if "planner/role" in sel:
            assert {slug(p["id"]) for p in roles if p["role"] == sel["planner/role"]
                    and slug(p["group"]) == sel["planner/bundle"]} == chosen
        elif chosen <= routers:
            assert len(chosen) == 1
        else:
            assert not chosen & ({slug(p["id"]) for p in roles} | routers)
    assert {(slug(p["group"]), p["role"]) for p in roles} == {
        (s["spec"]["selector"]["planner/bundle"], s["spec"]["selector"]["planner/role"])
        for s in services if "planner/role" in s["spec"]["selector"]}
    assert len(routers) == len({p["group"] for p in roles})
    for d in docs:
        if d["kind"] == "Deployment" and d["metadata"]["name"] in routers:
            pod = d["spec"]["template"]["spec"]
            args = pod["containers"][0]["args"]
            for role in ("prefill", "decode"):  # the router's selectors pick this bundle's role pods
                at = args.index(f"--{role}-selector") + 1
                sel = dict(a.split("=", 1) for a in args[at:at + 2])
                assert {n for n, labels in pods.items()
                        if all(labels.get(k) == v for k, v in sel.items())} == {
                    slug(p["id"]) for p in roles if p["role"] == role
                    and slug(p["group"]) == sel["planner/bundle"]}
            # it may list and watch pods in its namespace: a Role bound to its ServiceAccount
            account = pod["serviceAccountName"]
            binding = next(b for b in docs if b["kind"] == "RoleBinding"
                           and b["subjects"][0]["name"] == account)
            rules = next(r for r in docs if r["kind"] == "Role"
                         and r["metadata"]["name"] == binding["roleRef"]["name"])["rules"]
            assert any("pods" in r["resources"] and {"list", "watch"} <= set(r["verbs"]) for r in rules)
        elif d["kind"] == "Deployment" and d["metadata"]["name"] in {slug(p["id"]) for p in roles}:
            # NIXL's handshake host: the pod's own address (vLLM's default is localhost)
            env = d["spec"]["template"]["spec"]["containers"][0]["env"]
            assert {"name": "VLLM_NIXL_SIDE_CHANNEL_HOST",
                    "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}} in env
    # against itself a re-plan moves nothing: both roles of a bundle read back as one count
    again = fl.plan_fleet(_request("auto", 0.03), previous=plan)
    assert again["replan"]["gpus_changed"] == 0
    assert {p["id"]: p["count"] for p in again["pools"]} == {p["id"]: p["count"] for p in plan["pools"]}


def test_bundle_scripts_start_the_router_and_need_nixl_host(tmp_path):
    """The vLLM scripts of a bundle run as written: the router takes its servers from
    PREFILL_URLS / DECODE_URLS, a role's server stops at once without NIXL's handshake host."""
    import os
    import subprocess

    from planner.emit.vllm import emit_fleet_vllm, slug

    plan = fl.plan_fleet(_request("auto", 0.03))
    emit_fleet_vllm(plan, tmp_path / "vllm")
    bin_dir = tmp_path / "bin"  # stand-ins for vllm-router and vllm: they print their arguments
    bin_dir.mkdir()
    for tool in ("vllm-router", "vllm"):
        (bin_dir / tool).write_text('#!/bin/sh\nfor a in "$@"; do echo "$a"; done\n')
        (bin_dir / tool).chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    bundle = next(p for p in plan["pools"] if p.get("role"))["group"]
    router = tmp_path / "vllm" / f"{slug(f'router-{bundle}')}.sh"
    run = subprocess.run(["sh", str(router)], capture_output=True, text=True,
                         env={**env, "PREFILL_URLS": "http://a:8000 http://b:8000",
                              "DECODE_URLS": "http://c:8000"})
    args = run.stdout.split("\n")
    assert run.returncode == 0 and args[0] == "--vllm-pd-disaggregation"
    assert [args[i + 1] for i, a in enumerate(args) if a == "--prefill"] == ["http://a:8000", "http://b:8000"]
    assert [args[i + 1] for i, a in enumerate(args) if a == "--decode"] == ["http://c:8000"]
    assert args[-3:] == ["--port", "8090", ""]  # ROUTER_PORT unset: the default
    missing = subprocess.run(["sh", str(router)], capture_output=True, text=True, env=env)
    assert missing.returncode != 0 and "PREFILL_URLS" in missing.stderr
    role = next(p for p in plan["pools"] if p.get("role"))
    script = tmp_path / "vllm" / f"{slug(role['id'])}.sh"
    bare = subprocess.run(["sh", str(script)], capture_output=True, text=True, env=env)
    assert bare.returncode != 0 and "VLLM_NIXL_SIDE_CHANNEL_HOST" in bare.stderr and not bare.stdout
    ok = subprocess.run(["sh", str(script)], capture_output=True, text=True,
                        env={**env, "VLLM_NIXL_SIDE_CHANNEL_HOST": "10.0.0.5"})
    assert ok.returncode == 0 and "--kv-transfer-config" in ok.stdout.split("\n")


NVIDIA_FIVE = ["H100-PCIE", "H100-SXM", "H200-SXM", "A100-80GB", "L40S"]


def _five(dis, quota=None, gpus=NVIDIA_FIVE):
    req = _request(dis, 0.03)
    req["gpus"] = [{"name": g, **({"quota": quota[g]} if quota and g in quota else {})} for g in gpus]
    return req


def test_cross_type_bundles_prefill_on_one_gpu_decode_on_another():
    plans = {dis: fl.plan_fleet(_five(dis)) for dis in ("off", "same_gpu", "auto")}
    assert all(p["solver"]["status"] == "optimal" for p in plans.values())
    # each setting offers a superset of the one before: never dearer
    assert plans["auto"]["cost_per_hour"] <= plans["same_gpu"]["cost_per_hour"] + 1e-9
    assert plans["same_gpu"]["cost_per_hour"] <= plans["off"]["cost_per_hour"] + 1e-9
    same = [p for p in plans["same_gpu"]["pools"] if p.get("role")]
    assert same and all("+" not in p["group"] for p in same)
    auto = plans["auto"]
    jsonschema.validate(auto, SCHEMA)
    groups: dict = {}
    for p in auto["pools"]:
        if p.get("role"):
            groups.setdefault((p["group"], p["price_class"]), {})[p["role"]] = p["gpu"]
    mixed = [roles for roles in groups.values() if roles["prefill"] != roles["decode"]]
    # measured: prefill on H100 (FLOPs per $) feeding decode on H200 (HBM per $), about 4%
    # below the best same-type bundles at TPOT 30 ms
    assert mixed and auto["cost_per_hour"] < 0.99 * plans["same_gpu"]["cost_per_hour"]
    assert sum(p["cost_per_hour"] for p in auto["pools"]) == pytest.approx(auto["cost_per_hour"])
    by_gpu: dict = {}
    for p in auto["pools"]:
        by_gpu[p["gpu"]] = by_gpu.get(p["gpu"], 0) + p["gpus"]
    assert by_gpu == {g: n for g, n in auto["gpus"].items() if n}
    # the best single GPU type stays single-type (its own bundles included)
    assert "+" not in str(auto["baseline_single_gpu"])


def test_cross_type_bundles_respect_each_types_quota_and_vendor():
    capped = fl.plan_fleet(_five("auto", {"H200-SXM": 6}))
    assert capped["gpus"].get("H200-SXM", 0) <= 6
    assert sum(p["gpus"] for p in capped["pools"] if p["gpu"] == "H200-SXM") <= 6
    # NIXL pairs one vendor's GPUs: no bundle mixes AMD and NVIDIA
    req = _five("auto", gpus=["H100-PCIE", "H200-SXM", "MI300X"])
    req["gpus"][2]["price_per_hour"] = 12.0  # dear enough that NVIDIA pairs are worth offering
    fp = fl.build_problem(fl.FleetRequest.model_validate(req))
    cross = [o for o in fp.options if o.decode_gpu]
    assert cross and len(cross) <= fl.CROSS_BUNDLES_KEPT
    assert all("MI300X" not in (o.gpu, o.decode_gpu) for o in cross)
