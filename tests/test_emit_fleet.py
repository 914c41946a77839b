"""``planner emit``: vLLM commands and Kubernetes Deployments from a FleetPlan."""
from __future__ import annotations

import shlex
import subprocess

import pytest
import yaml

from planner import fleet as fl
from planner.cli import main
from planner.emit.kubernetes import deployment, gpu_product
from planner.emit.vllm import slug, vllm_serve_command
from planner.plan import dump_plan
from conftest import run_cli as _run


def test_vllm_serve_command_flags():
    args = vllm_serve_command("llama-3.1-70b", tp=4, pp=2, dp=2, ep=True, max_num_seqs=64,
                              dtype="bf16", kv_cache_dtype="fp8", port=9000)
    assert args[:3] == ["vllm", "serve", "meta-llama/Llama-3.1-70B-Instruct"]
    line = " ".join(args)
    for flag in ("--tensor-parallel-size 4", "--pipeline-parallel-size 2", "--data-parallel-size 2",
                 "--enable-expert-parallel", "--max-num-seqs 64", "--dtype bfloat16",
                 "--kv-cache-dtype fp8", "--port 9000"):
        assert flag in line
    plain = vllm_serve_command("org/model", tp=1)
    assert "--pipeline-parallel-size" not in plain and "--data-parallel-size" not in plain
    with pytest.raises(ValueError):
        vllm_serve_command("x", tp=0)


def test_slug_is_dns_label():
    s = slug("Chat-8B/H100-SXM/tp1-pp1/on_demand" * 3)
    assert len(s) <= 63 and s == s.lower() and s[0].isalnum() and s[-1].isalnum()
    assert set(s) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")


POOL = {"id": "m/H100-SXM/tp4-pp1/spot", "group": "m/H100-SXM/tp4-pp1", "model": "m",
        "serve_model": "llama-3.1-70b", "gpu": "H100-SXM", "shape": {"tp": 4, "pp": 1},
        "gpus_per_replica": 4, "count": 3, "price_class": "spot", "cost_per_hour": 30.0,
        "counts_by_period": [1, 3, 2], "engine": {"max_num_seqs": 48, "dtype": "bf16"}}


def test_deployment_structure():
    d = deployment(POOL)
    assert d["apiVersion"] == "apps/v1" and d["kind"] == "Deployment"
    spec = d["spec"]
    assert spec["replicas"] == 3
    match = spec["selector"]["matchLabels"]
    tmpl_labels = spec["template"]["metadata"]["labels"]
    assert match and all(tmpl_labels.get(k) == v for k, v in match.items())
    pod = spec["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    c = pod["containers"][0]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 4
    assert c["command"] == ["vllm", "serve"] and "--tensor-parallel-size" in c["args"]
    assert c["args"][c["args"].index("--max-num-seqs") + 1] == "48"
    assert {v["name"] for v in pod["volumes"]} >= {m["name"] for m in c["volumeMounts"]}
    assert d["metadata"]["name"] == slug(POOL["id"]) and len(d["metadata"]["name"]) <= 63
    assert d["metadata"]["annotations"]["planner/replicas-by-period"] == "1,3,2"
    assert pod["tolerations"]  # spot pools tolerate the spot taint
    # gated weights: the token from the hf-token Secret, optional so public models need none
    assert {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {
        "name": "hf-token", "key": "token", "optional": True}}} in c["env"]
    # every label value is a valid label value (<= 63 chars, alnum at the ends)
    for v in tmpl_labels.values():
        assert len(v) <= 63 and v[0].isalnum() and v[-1].isalnum()
    assert gpu_product("MI300X")[0] == "amd.com/gpu"
    # a weights cache claim: mounted where the images keep the Hugging Face cache
    pod = deployment(POOL, cache_pvc="weights")["spec"]["template"]["spec"]
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "hf-cache")
    assert mount["mountPath"] == "/root/.cache/huggingface"
    assert {"name": "hf-cache", "persistentVolumeClaim": {"claimName": "weights"}} in pod["volumes"]


def _plan_file(tmp_path):
    req = {"models": [{"name": "chat", "model": "llama-3.1-8b",
                       "workload": {"histogram": {"input_edges": [0, 1024], "output_edges": [0, 256],
                                                  "shares": [[1.0]]}, "rate_rps": 20},
                       "slo": {"ttft_s": 1.0, "tpot_s": 0.05}}],
           "gpus": [{"name": "A10G"}, {"name": "H100-SXM"}]}
    plan = fl.plan_fleet(req)
    path = tmp_path / "plan.yaml"
    dump_plan(plan, path)
    return plan, path


def test_emit_cli_both_formats(tmp_path, capsys):
    plan, path = _plan_file(tmp_path)
    for fmt in ("vllm", "kubernetes"):
        try:
            main(["emit", str(path), "--format", fmt, "-o", str(tmp_path / fmt)])
        except SystemExit as exc:
            assert not exc.code
    cmds = (tmp_path / "vllm" / "commands.txt").read_text()
    assert cmds.count("vllm serve") == len(plan["pools"])
    for line in cmds.splitlines():
        if line.startswith("vllm"):
            assert shlex.split(line)[2] == "meta-llama/Llama-3.1-8B-Instruct"
    docs = [yaml.safe_load(p.read_text()) for p in sorted((tmp_path / "kubernetes").glob("*.yaml"))]
    deps = [d for d in docs if d["kind"] == "Deployment"]
    assert len(deps) == len(plan["pools"])
    assert sum(d["spec"]["replicas"] for d in deps) == sum(p["count"] for p in plan["pools"])
    assert any(d["kind"] == "Service" for d in docs)


def test_emit_bad_inputs(tmp_path, capsys):
    _, path = _plan_file(tmp_path)
    for argv, needle in ((["emit", str(path), "--format", "helm", "-o", str(tmp_path / "x")], "unknown format"),
                         (["emit", str(tmp_path / "nope.yaml"), "--format", "vllm", "-o", str(tmp_path / "x")], "not found")):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        assert needle in capsys.readouterr().err
    other = tmp_path / "other.yaml"
    other.write_text("apiVersion: planner/v1\nkind: Estimate\n")
    with pytest.raises(SystemExit):
        main(["emit", str(other), "--format", "vllm", "-o", str(tmp_path / "y")])
    assert "unsupported plan kind" in capsys.readouterr().err


def test_replan_gets_a_transition_script_that_grows_before_it_shrinks(tmp_path):
    from planner.emit.kubernetes import emit_fleet_kubernetes

    def _request(rate):
        return {"models": [{"name": "m8b", "model": "llama-3.1-8b",
                            "workload": {"histogram": {"input_edges": [0, 512, 2048, 8192],
                                                       "output_edges": [0, 128, 512],
                                                       "shares": [[0.3, 0.2], [0.2, 0.15], [0.1, 0.05]]},
                                         "rate_rps": rate},
                            "slo": {"ttft_s": 1.0, "tpot_s": 0.05}}],
                "gpus": [{"name": g} for g in ("A10G", "L4", "A100-80GB", "H100-SXM")]}

    plan = fl.plan_fleet(_request(23.0), previous=fl.plan_fleet(_request(25.0)), keep_within=0.0)
    tr = plan["replan"]["transition"]
    assert tr["grow_first"] and tr["shrink_after"]  # this load step moves pools both ways
    written = emit_fleet_kubernetes(plan, tmp_path)
    script = (tmp_path / "transition.sh").read_text()
    assert tmp_path / "transition.sh" in written
    lines = [ln for ln in script.splitlines() if ln.startswith("kubectl")]
    kinds = [ln.split()[1] for ln in lines]
    # every apply / scale-up and rollout wait comes before any scale-down or delete
    grows = len(tr["grow_first"])
    assert all(k in ("apply", "scale") for k in kinds[:grows])
    assert kinds[grows:2 * grows] == ["rollout"] * grows
    assert all(k in ("scale", "delete") for k in kinds[2 * grows:])
    manifests = {p.name for p in tmp_path.glob("*.yaml")}
    for step, line in zip(tr["grow_first"], lines):
        if step["from"] == 0:  # a new pool is applied from the manifest written beside it
            assert line.split()[-1] in manifests
    for step, line in zip(tr["shrink_after"], lines[2 * grows:]):
        assert (line.split()[1] == "delete") == (step["to"] == 0)


def _day_plan(counts: dict[str, list[int]], period_s: float = 3600.0) -> dict:
    """A minimal FleetPlan dict: one pool per entry of ``counts`` (its per-period counts)."""
    pools = []
    for pid, series in counts.items():
        pools.append({"id": pid, "model": "m", "gpu": "L4", "shape": {"tp": 1, "pp": 1},
                      "gpus_per_replica": 1, "price_class": "on_demand", "count": max(series),
                      "cost_per_hour": 1.0, "counts_by_period": series,
                      "price_per_replica_hour": 2.0})
    return {"apiVersion": "planner/v1", "kind": "FleetPlan", "period_s": period_s, "pools": pools}


def _keda_replicas(manifest: dict, minute: int, horizon_min: int = 1440) -> int:
    """What KEDA would hold at ``minute`` of the day (or of the week from Monday 00:00, for
    weekly triggers): the largest active cron trigger's count, else ``minReplicaCount`` (a
    window [start, end) that may wrap past the horizon's end)."""
    def minute_of(cron: str) -> int:
        m, h, dom, month, dow = cron.split()
        assert (dom, month) == ("*", "*") and (dow == "*") == (horizon_min == 1440)
        day = 0 if dow == "*" else (int(dow) - 1) % 7  # cron: Sunday = 0
        return day * 1440 + int(h) * 60 + int(m)

    active = [int(t["metadata"]["desiredReplicas"]) for t in manifest["spec"]["triggers"]
              if (minute - minute_of(t["metadata"]["start"])) % horizon_min
              < (minute_of(t["metadata"]["end"]) - minute_of(t["metadata"]["start"])) % horizon_min]
    return max([manifest["spec"]["minReplicaCount"], *active])


def _check_keda_holds(manifest: dict, series: list[int], *, start_min: int, lead_s: float,
                      horizon_min: int) -> None:
    """Every minute of the horizon, KEDA holds the period's count, and from ``lead_s`` before
    a boundary also the next period's (period 0 starts ``start_min`` into the horizon)."""
    period_min = horizon_min // len(series)
    for minute in range(horizon_min):
        since = (minute - start_min) % horizon_min
        period, into_s = since // period_min, 60 * (since % period_min)
        following = series[(period + 1) % len(series)]
        want = series[period] if into_s < 60 * period_min - lead_s else max(series[period], following)
        assert _keda_replicas(manifest, minute, horizon_min) == want, minute


def test_day_plan_keda_triggers_cover_every_period_and_grow_before_shrinking(tmp_path):
    from planner.emit.kubernetes import emit_fleet_kubernetes

    counts = {"m/L4/a/on_demand": [0, 0, 1, 3, 3, 2, 0, 1] * 3,
              "m/L4/b/on_demand": [2] * 23 + [4],          # grows into the last period
              "m/L4/c/reserved": [1] * 24}                 # constant: no ScaledObject
    plan = _day_plan(counts)
    lead_s, day_start_s = 900, 6 * 3600 + 30 * 60
    emit_fleet_kubernetes(plan, tmp_path, day_start_s=day_start_s, lead_s=lead_s,
                          timezone="Europe/Paris")
    keda = {yaml.safe_load(p.read_text())["spec"]["scaleTargetRef"]["name"]: yaml.safe_load(p.read_text())
            for p in (tmp_path / "keda").glob("*.yaml")}
    assert set(keda) == {slug("m/L4/a/on_demand"), slug("m/L4/b/on_demand")}
    for pid in ("m/L4/a/on_demand", "m/L4/b/on_demand"):
        manifest, series = keda[slug(pid)], counts[pid]
        assert manifest["apiVersion"] == "keda.sh/v1alpha1" and manifest["kind"] == "ScaledObject"
        assert all(t["metadata"]["timezone"] == "Europe/Paris" for t in manifest["spec"]["triggers"])
        _check_keda_holds(manifest, series, start_min=day_start_s // 60, lead_s=lead_s,
                          horizon_min=1440)
    # the extra $/h the early starts cost: what KEDA holds over the day beyond the plan's counts
    from planner.emit.kubernetes import lead_cost_per_hour
    held_minutes = sum(_keda_replicas(keda[slug(pid)], m) - counts[pid][int((m * 60 - day_start_s) // 3600) % 24]
                       for pid in ("m/L4/a/on_demand", "m/L4/b/on_demand") for m in range(1440))
    assert lead_cost_per_hour(plan, lead_s) == pytest.approx(held_minutes / 60 * 2.0 / 24)
    # a Deployment per pool still goes to the top folder (kubectl apply -f DIR needs no KEDA)
    assert len(list(tmp_path.glob("*.yaml"))) == 3 + 1  # + the model's Service


def test_week_plan_keda_triggers_are_weekly_from_the_given_weekday(tmp_path):
    from planner.emit.kubernetes import emit_fleet_kubernetes

    # hourly over a week: five busy days then two quiet ones, and a surge across the night from
    # the plan's fourth day to its fifth
    series = ([1] * 8 + [3] * 10 + [2] * 6) * 5 + [1] * 48
    series[3 * 24 + 22: 3 * 24 + 27] = [5] * 5
    counts = {"m/L4/a/on_demand": series, "m/L4/b/on_demand": [2] * 167 + [0]}
    plan = _day_plan(counts)
    lead_s, day_start_s = 600, 7 * 3600 + 15 * 60
    emit_fleet_kubernetes(plan, tmp_path, day_start_s=day_start_s, weekday="wed", lead_s=lead_s)
    keda = {yaml.safe_load(p.read_text())["spec"]["scaleTargetRef"]["name"]: yaml.safe_load(p.read_text())
            for p in (tmp_path / "keda").glob("*.yaml")}
    assert set(keda) == {slug(pid) for pid in counts}
    # period 0: Wednesday 07:15, cron day 3; the week's runs are the triggers
    first = keda[slug("m/L4/a/on_demand")]["spec"]["triggers"][0]["metadata"]
    # the first 3-replica run: periods 8-17, Wednesday 15:15 (less the lead) to Thursday 01:15
    assert (first["start"], first["end"], first["desiredReplicas"]) == ("5 15 * * 3", "15 1 * * 4", "3")
    for pid, series_ in counts.items():
        _check_keda_holds(keda[slug(pid)], series_, start_min=2 * 1440 + day_start_s // 60,
                          lead_s=lead_s, horizon_min=7 * 1440)


def test_schedule_script_scales_to_each_period_growing_first(tmp_path):
    from planner.emit.kubernetes import emit_fleet_kubernetes

    counts = {"m/L4/a/on_demand": [1, 3, 0, 2], "m/L4/b/on_demand": [2, 1, 1, 3]}
    plan = _day_plan(counts, period_s=900.0)  # 1 hour: no daily cron triggers
    written = emit_fleet_kubernetes(plan, tmp_path)
    assert not (tmp_path / "keda").exists()
    assert tmp_path / "schedule.sh" in written
    script = (tmp_path / "schedule.sh").read_text()
    assert subprocess.run(["sh", "-n", str(tmp_path / "schedule.sh")]).returncode == 0
    bad = subprocess.run([str(tmp_path / "schedule.sh"), "9"], capture_output=True, text=True)
    assert bad.returncode == 2 and "usage" in bad.stderr
    blocks = script.split(";;")[:-2]  # the last two: the usage branch, then esac
    assert len(blocks) == 4 and "usage" in script.split(";;")[-2]
    for t, block in enumerate(blocks):
        lines = [ln.strip() for ln in block.splitlines() if ln.strip().startswith("kubectl")]
        targets = {ln.split()[2].split("/")[1]: int(ln.split("=")[1])
                   for ln in lines if ln.split()[1] == "scale"}
        assert targets == {slug(pid): series[t] for pid, series in counts.items()}
        kinds = [ln.split()[1] for ln in lines]
        grows = [pid for pid, s in counts.items() if s[t] > s[t - 1]]
        # scale-ups, then their rollouts (not for a pool scaled to zero), then the rest
        assert kinds[:len(grows)] == ["scale"] * len(grows)
        assert kinds[len(grows):2 * len(grows)] == ["rollout"] * len(grows)
        assert all(k == "scale" for k in kinds[2 * len(grows):])


def test_emit_schedule_options_are_checked(tmp_path, capsys):
    path = tmp_path / "plan.yaml"
    dump_plan(_day_plan({"m/L4/a/on_demand": [0, 1] * 12}), path)
    for argv, field in ((["--day-start", "25:00"], "--day-start"),
                        (["--day-start", "6h"], "--day-start"),
                        (["--lead-s", "3600"], "--lead-s"),
                        (["--lead-s", "-5"], "--lead-s"),
                        (["--weekday", "someday"], "--weekday")):
        with pytest.raises(SystemExit) as exc:
            main(["emit", str(path), "--format", "kubernetes", "-o", str(tmp_path / "k"), *argv])
        assert exc.value.code == 2
        assert field in capsys.readouterr().err
    try:
        main(["emit", str(path), "--format", "kubernetes", "-o", str(tmp_path / "k"),
              "--day-start", "23:30", "--lead-s", "300", "--weekday", "Friday"])
    except SystemExit as exc:
        assert not exc.code
    assert len(list((tmp_path / "k" / "keda").glob("*.yaml"))) == 1


def test_vllm_schedule_csv_lists_each_periods_replicas(tmp_path):
    import csv

    from planner.emit.vllm import emit_fleet_vllm

    counts = {"m/L4/a/on_demand": [1, 3, 0, 2], "m,odd/L4/b/on_demand": [2, 1, 1, 3]}
    written = emit_fleet_vllm(_day_plan(counts, period_s=900.0), tmp_path)
    assert tmp_path / "schedule.csv" in written
    rows = list(csv.DictReader((tmp_path / "schedule.csv").open()))
    assert len(rows) == 8
    for row in rows:
        t = int(row["period"])
        assert float(row["start_s"]) == 900.0 * t
        assert int(row["replicas"]) == counts[row["pool"]][t]
    # a plan with one period has no schedule
    single = {"pools": [{**_day_plan(counts)["pools"][0]}]}
    del single["pools"][0]["counts_by_period"]
    (tmp_path / "one").mkdir()
    assert not any(p.name == "schedule.csv" for p in emit_fleet_vllm(single, tmp_path / "one"))


# ------------------------------------------------------------------ --max-model-len per pool

def _routed_plan() -> dict:
    """A FleetPlan dict with three pools of one 8B model: one served by a short and a long
    bucket, one by a bucket longer than the model's context, one that routing never names."""
    def pool(gpu, model="chat", serve="meta-llama/Llama-3.1-8B-Instruct"):
        group = f"{model}/{gpu}/tp1-pp1"
        return {"id": f"{group}/on_demand", "group": group, "model": model, "serve_model": serve,
                "gpu": gpu, "shape": {"tp": 1, "pp": 1}, "gpus_per_replica": 1,
                "price_class": "on_demand", "count": 1, "cost_per_hour": 1.0,
                "engine": {"dtype": "bf16"}}

    def route(group, lo_in, hi_in, hi_out):
        return {"model": "chat", "bucket": {"label": f"in({lo_in:g},{hi_in:g}]xout(0,{hi_out:g}]",
                                            "input_tokens": [lo_in, hi_in],
                                            "output_tokens": [0.0, hi_out]},
                "pools": {group: 1.0}}

    return {"apiVersion": "planner/v1", "kind": "FleetPlan",
            "pools": [pool("A10G"), pool("H100-SXM"), pool("L4")],
            "routing": [route("chat/A10G/tp1-pp1", 0.0, 512.0, 128.0),
                        route("chat/A10G/tp1-pp1", 512.0, 4096.0, 1024.5),
                        route("chat/H100-SXM/tp1-pp1", 4096.0, 200000.0, 2048.0)]}


def test_max_model_len_is_the_longest_bucket_routed_to_each_pool():
    from costmodels.model import load_model
    from costmodels.ops import Parallel
    from costmodels.serving import make_context, max_kv_tokens
    from hardware.catalog import get_accelerator
    from planner.emit.vllm import context_lengths

    plan = _routed_plan()
    lengths = context_lengths(plan)
    a10g, h100, l4 = (lengths[p["id"]] for p in plan["pools"])
    assert a10g.tokens == 5121  # 4096 + 1024.5, rounded up: the longer of its two buckets
    assert "in(512,4096]" in a10g.why
    assert h100.tokens == 131072 and "max_position_embeddings 131072" in h100.why  # capped
    # nothing routed to L4: the most one replica's KV cache holds, by the cost model
    kv = max_kv_tokens(make_context(load_model("llama-3.1-8b"), get_accelerator("L4"), Parallel(1, 1)))
    assert 0 < kv < 131072 and l4.tokens == kv and "KV cache" in l4.why
    # a routed bucket whose upper edge outgrows one replica's KV cache: capped at the cache
    a10g_kv = max_kv_tokens(make_context(load_model("llama-3.1-8b"), get_accelerator("A10G"),
                                         Parallel(1, 1)))
    plan["routing"].append({**plan["routing"][2], "pools": {"chat/A10G/tp1-pp1": 0.5}})
    capped = context_lengths(plan)[plan["pools"][0]["id"]]
    assert 5121 < a10g_kv < 131072 and capped.tokens == a10g_kv and "KV cache" in capped.why
    plan["routing"].pop()
    # a model the catalog does not know and no routing: no flag, and the comment says so
    plan["pools"][2]["serve_model"] = "acme/unknown-model"
    assert context_lengths(plan)[plan["pools"][2]["id"]].tokens is None
    # a length the plan itself sets wins
    plan["pools"][0]["engine"]["max_model_len"] = 4000
    assert context_lengths(plan)[plan["pools"][0]["id"]].tokens == 4000


def test_emitted_commands_carry_max_model_len_and_say_why(tmp_path):
    from planner.emit.kubernetes import emit_fleet_kubernetes
    from planner.emit.vllm import emit_fleet_vllm

    plan = _routed_plan()
    emit_fleet_vllm(plan, tmp_path / "v")
    emit_fleet_kubernetes(plan, tmp_path / "k")
    for pool, want in zip(plan["pools"][:2], ("5121", "131072")):
        script = (tmp_path / "v" / f"{slug(pool['id'])}.sh").read_text()
        line = next(ln for ln in script.splitlines() if ln.startswith("exec vllm serve"))
        args = shlex.split(line)
        assert args[args.index("--max-model-len") + 1] == want
        assert any(ln.startswith("# --max-model-len: the longest bucket") for ln in script.splitlines())
        d = yaml.safe_load((tmp_path / "k" / f"{slug(pool['id'])}.yaml").read_text())
        c = d["spec"]["template"]["spec"]["containers"][0]
        assert c["args"][c["args"].index("--max-model-len") + 1] == want
        assert "longest bucket" in d["metadata"]["annotations"]["planner/max-model-len"]
    cmds = (tmp_path / "v" / "commands.txt").read_text()
    assert cmds.count("--max-model-len") == 2 * 3  # the comment and the flag of each pool


def test_cli_emit_bounds_context_by_the_plans_buckets(tmp_path, capsys):
    plan, path = _plan_file(tmp_path)  # one bucket: in(0,1024] x out(0,256]
    try:
        main(["emit", str(path), "--format", "vllm", "-o", str(tmp_path / "v")])
    except SystemExit as exc:
        assert not exc.code
    lines = [ln for ln in (tmp_path / "v" / "commands.txt").read_text().splitlines()
             if ln.startswith("vllm serve")]
    assert len(lines) == len(plan["pools"])
    for ln in lines:
        args = shlex.split(ln)
        assert args[args.index("--max-model-len") + 1] == "1280"


# ------------------------------------------------------------------ names, bad plans and options

DNS_1035 = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"


def test_names_are_dns_1035_labels_even_for_a_model_named_by_digits(tmp_path):
    import re

    from planner.emit.kubernetes import emit_fleet_kubernetes

    assert slug("8b-chat") == "m-8b-chat" and slug("chat-8b") == "chat-8b"
    long = slug("70B/" + "x" * 80)
    assert len(long) <= 63 and re.match(DNS_1035, long)
    plan = _day_plan({"8b-chat/L4/tp1-pp1/on_demand": [1, 2] * 12})
    for p in plan["pools"]:
        p["model"] = "8b-chat"
    emit_fleet_kubernetes(plan, tmp_path)
    docs = [yaml.safe_load(p.read_text()) for p in tmp_path.rglob("*.yaml")]
    assert {d["kind"] for d in docs} == {"Deployment", "Service", "ScaledObject"}
    for d in docs:
        assert re.match(DNS_1035, d["metadata"]["name"]) and len(d["metadata"]["name"]) <= 63
    svc = next(d for d in docs if d["kind"] == "Service")
    dep = next(d for d in docs if d["kind"] == "Deployment")
    keda = next(d for d in docs if d["kind"] == "ScaledObject")
    assert svc["metadata"]["name"] == "m-8b-chat"
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert all(pod_labels.get(k) == v for k, v in svc["spec"]["selector"].items())  # still selects
    assert keda["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    script = (tmp_path / "schedule.sh").read_text()
    assert f"deployment/{dep['metadata']['name']} " in script




def test_emit_refuses_a_melange_plan_which_names_no_model(tmp_path, capsys):
    plan = _day_plan({"model/A10G/tp1-pp1/on_demand": [1]})
    plan["pools"][0].update(model="model", serve_model="melange")
    plan["melange_result"] = {"A10G": 1, "cost": 2.0}
    path = tmp_path / "mel.yaml"
    dump_plan(plan, path)
    for fmt in ("vllm", "kubernetes"):
        code, out, err = _run(["emit", path, "--format", fmt, "-o", tmp_path / fmt], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1
        assert "pools[0].serve_model" in err and "no servable model id" in err
        assert "models[].serve_model" in err  # how to get a plan that can be emitted
        assert not (tmp_path / fmt).exists() and "vllm serve" not in out


@pytest.mark.parametrize("argv,needles", [
    (["--timezone", "Mars/Olympus"], ("--timezone", "IANA")),
    (["--timezone", "europe/paris"], ("--timezone", "Europe/Paris")),  # names are case-sensitive
    (["--lead-s", "nan"], ("--lead-s", "finite")),
    (["--lead-s", "inf"], ("--lead-s", "finite")),
])
def test_emit_options_are_checked_before_anything_is_written(tmp_path, capsys, argv, needles):
    path = tmp_path / "plan.yaml"
    dump_plan(_day_plan({"m/L4/a/on_demand": [0, 1] * 12}), path)
    code, _, err = _run(["emit", path, "--format", "kubernetes", "-o", tmp_path / "k", *argv], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert all(n in err for n in needles)
    assert not (tmp_path / "k").exists()


def test_emit_without_format_lists_the_formats(tmp_path, capsys):
    path = tmp_path / "plan.yaml"
    dump_plan(_day_plan({"m/L4/a/on_demand": [1]}), path)
    code, _, err = _run(["emit", path, "-o", tmp_path / "x"], capsys)
    assert code == 2 and err.strip().splitlines() == [
        "error: field '--format': no format given (expected vllm or kubernetes)"]


# ------------------------------------------------------------------ emitting into a used folder

def test_emit_into_a_used_folder_needs_replace_which_removes_only_its_own_files(tmp_path, capsys):
    from planner.emit import LISTING

    before = _day_plan({"m/L4/a/on_demand": [0, 1] * 12, "m/L4/b/on_demand": [1, 2] * 12})
    after = _day_plan({"m/L4/a/on_demand": [1] * 24})  # pool b retired, nothing varies any more
    p0, p1 = tmp_path / "p0.yaml", tmp_path / "p1.yaml"
    dump_plan(before, p0)
    dump_plan(after, p1)
    out = tmp_path / "deploy"
    emit = ["emit", None, "--format", "kubernetes", "-o", out]

    assert _run([*emit[:1], p0, *emit[2:]], capsys)[0] == 0
    first = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert {f"{slug('m/L4/b/on_demand')}.yaml", "schedule.sh", LISTING} <= first
    assert any(name.startswith("keda/") for name in first)
    (out / "NOTES.md").write_text("mine\n")
    snapshot = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    # without --replace: refused, nothing touched
    code, _, err = _run([*emit[:1], p1, *emit[2:]], capsys)
    assert code == 2 and "not empty" in err and "--replace" in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == snapshot

    # with --replace: the retired pool's manifest, schedule.sh and keda/ go; the user's file stays
    code, _, err = _run([*emit[:1], p1, *emit[2:], "--replace"], capsys)
    assert code == 0, err
    now = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert now == {f"{slug('m/L4/a/on_demand')}.yaml", "service-m.yaml", LISTING, "NOTES.md"}
    assert not (out / "keda").exists()
    assert (out / "NOTES.md").read_text() == "mine\n"
    listed = {line.split("  ", 1)[1] for line in (out / LISTING).read_text().splitlines()}
    assert listed == now - {LISTING, "NOTES.md"}

    # a listed file edited since, or a user's file where emit would write, stops it untouched
    (out / "service-m.yaml").write_text("# edited\n")
    code, _, err = _run([*emit[:1], p0, *emit[2:], "--replace"], capsys)
    assert code == 2 and "service-m.yaml changed" in err
    assert (out / "service-m.yaml").read_text() == "# edited\n"
    (out / "service-m.yaml").unlink()
    (out / "schedule.sh").write_text("mine too\n")
    code, _, err = _run([*emit[:1], p0, *emit[2:], "--replace"], capsys)
    assert code == 2 and "would overwrite schedule.sh" in err
    assert (out / "schedule.sh").read_text() == "mine too\n"


def _schema_plan() -> dict:
    """A plan touching every manifest shape emit writes for plain pools: two models (two
    Services), a spot pool (tolerations), an AMD pool (``amd.com/gpu``), a pipeline-parallel
    pool, a pool whose replicas span two nodes (a LeaderWorkerSet), and counts that vary over a
    day of hourly periods (KEDA ScaledObjects)."""
    day = [1, 1, 2, 3, 3, 2] * 4
    pools = [dict(POOL, counts_by_period=[2 * c for c in day], count=6, price_per_replica_hour=8.0),
             {"id": "m/MI300X/tp8-pp1/reserved", "group": "m/MI300X/tp8-pp1", "model": "m",
              "serve_model": "llama-3.1-70b", "gpu": "MI300X", "shape": {"tp": 8, "pp": 1},
              "gpus_per_replica": 8, "count": 1, "price_class": "reserved", "cost_per_hour": 14.4,
              "counts_by_period": [1] * 24, "engine": {"dtype": "fp8"}},
             {"id": "chat/L4/tp2-pp2/on_demand", "group": "chat/L4/tp2-pp2", "model": "chat",
              "serve_model": "llama-3.1-8b", "gpu": "L4", "shape": {"tp": 2, "pp": 2},
              "gpus_per_replica": 4, "count": 3, "price_class": "on_demand", "cost_per_hour": 9.6,
              "counts_by_period": [0, 0, 1, 3, 3, 2] * 4, "price_per_replica_hour": 3.2},
             {"id": "big/H100-SXM/tp8-pp2/on_demand", "group": "big/H100-SXM/tp8-pp2",
              "model": "big", "serve_model": "llama-3.1-405b", "gpu": "H100-SXM",
              "shape": {"tp": 8, "pp": 2}, "gpus_per_replica": 16, "count": 2,
              "price_class": "on_demand", "cost_per_hour": 120.0,
              "counts_by_period": [1, 1, 2, 2, 2, 1] * 4, "price_per_replica_hour": 78.7}]
    return {"apiVersion": "planner/v1", "kind": "FleetPlan", "period_s": 3600.0, "pools": pools}


@pytest.mark.parametrize("source", ["pools", "bundles"])
@pytest.mark.parametrize("namespace", [None, "llm"])
def test_every_manifest_passes_the_kubernetes_schemas_strictly(source, namespace):
    """What ``kubectl apply --dry-run=client`` checks: every emitted object against the
    Kubernetes OpenAPI schemas (strict: an unknown or misplaced field fails) of the oldest and
    newest releases kubernetes-validate bundles, and KEDA's ScaledObjects against the fields of
    KEDA's CRD."""
    import json
    from pathlib import Path

    import jsonschema
    kv = pytest.importorskip("kubernetes_validate", reason="the test extra installs kubernetes-validate")
    from planner.emit.kubernetes import fleet_kubernetes_files

    if source == "pools":
        plan = _schema_plan()
    else:  # prefill/decode bundles: role Deployments, role Services, the router with its RBAC
        from test_fleet_disagg import _request
        plan = fl.plan_fleet(_request("auto", 0.03))
        assert any(p.get("role") for p in plan["pools"])
    files = fleet_kubernetes_files(plan, namespace=namespace, day_start_s=6 * 3600,
                                   timezone="Europe/Paris", cache_pvc=namespace and "hf-cache")
    data = Path(__file__).parent / "data"
    keda_schema = json.loads((data / "keda_scaledobject_v1alpha1.schema.json").read_text())
    lws_schema = json.loads((data / "leaderworkerset_v1.schema.json").read_text())
    versions = sorted({"1.25.0", kv.latest_version()}, key=lambda v: tuple(map(int, v.split("."))))
    kinds = []
    for path, artifact in sorted(files.items()):
        if not path.endswith(".yaml"):
            continue
        for doc in yaml.safe_load_all(artifact.text):
            kinds.append(doc["kind"])
            assert doc["metadata"].get("namespace") == namespace, path
            if doc["apiVersion"] == "keda.sh/v1alpha1":
                jsonschema.validate(doc, keda_schema)
                continue
            objects = [doc]
            if doc["kind"] == "LeaderWorkerSet":  # its pod templates, as the Pods they become
                jsonschema.validate(doc, lws_schema)
                objects = [{"apiVersion": "v1", "kind": "Pod",
                            "metadata": {"name": doc["metadata"]["name"], **template["metadata"]},
                            "spec": template["spec"]}
                           for template in doc["spec"]["leaderWorkerTemplate"].values()
                           if isinstance(template, dict)]
            for obj in objects:
                for version in versions:
                    try:
                        kv.validate(obj, version, strict=True)
                    except kv.ValidationError as exc:
                        pytest.fail(f"{path} ({obj['kind']}) against Kubernetes {version}: "
                                    f"{exc.message} at {list(exc.path)}")
    want = {"Deployment", "Service"} | ({"ScaledObject", "LeaderWorkerSet"} if source == "pools"
                                        else {"ServiceAccount", "Role", "RoleBinding"})
    assert set(kinds) == want


def test_each_pool_gets_its_vendors_serving_image(tmp_path, capsys):
    """vLLM's CUDA image does not run on AMD or Gaudi nodes: every pool gets its vendor's image,
    ``--image IMAGE`` sets every pool's, ``--image VENDOR=IMAGE`` one vendor's."""
    from planner.emit.kubernetes import DEFAULT_IMAGES

    plan = _schema_plan()  # H100 (NVIDIA), MI300X (AMD) and L4 (NVIDIA) pools
    path = tmp_path / "plan.yaml"
    dump_plan(plan, path)

    def images(*argv: str, out: str) -> dict[str, str]:
        code, _, err = _run(["emit", path, "--format", "kubernetes", "-o", tmp_path / out, *argv], capsys)
        assert code == 0, err
        return {d["metadata"]["name"]: d["spec"]["template"]["spec"]["containers"][0]["image"]
                for f in (tmp_path / out).glob("*.yaml") for d in yaml.safe_load_all(f.read_text())
                if d["kind"] == "Deployment"}

    amd = slug("m/MI300X/tp8-pp1/reserved")
    got = images(out="a")
    assert got.pop(amd) == DEFAULT_IMAGES["amd"] and set(got.values()) == {DEFAULT_IMAGES["nvidia"]}
    got = images("--image", "reg/vllm:1", "--image", "AMD=reg/vllm-rocm:1", out="b")
    assert got.pop(amd) == "reg/vllm-rocm:1" and set(got.values()) == {"reg/vllm:1"}
    # Gaudi has no default: the pool and the flag to give are named
    gaudi = dict(plan["pools"][1], id="m/Gaudi3/tp8-pp1/reserved", gpu="Gaudi3")
    dump_plan({**plan, "pools": [gaudi]}, tmp_path / "gaudi.yaml")
    code, _, err = _run(["emit", tmp_path / "gaudi.yaml", "--format", "kubernetes", "-o", tmp_path / "c"], capsys)
    assert code == 2 and "no default vLLM image for intel GPUs" in err and "--image intel=IMAGE" in err
    for bad, needle in ((["--image", "tpu=x"], "VENDOR one of amd, intel, nvidia"),
                        (["--image", "a", "--image", "b"], "two images for every pool"),
                        (["--cache-pvc", "HF_Cache"], "a PersistentVolumeClaim name")):
        code, _, err = _run(["emit", path, "--format", "kubernetes", "-o", tmp_path / "d", *bad], capsys)
        assert code == 2 and needle in err


def test_replicas_larger_than_a_node_run_over_ray_on_several_nodes(tmp_path):
    """A 16-GPU replica on 8-GPU H100 nodes: a LeaderWorkerSet of two 8-GPU pods per replica
    (the leader heads a Ray cluster and serves, the worker joins it), scaled as a
    LeaderWorkerSet by schedule.sh and KEDA; the vLLM script starts either side."""
    import os

    from planner.emit.kubernetes import fleet_kubernetes_files
    from planner.emit.vllm import fleet_vllm_files

    plan = _schema_plan()
    big = next(p for p in plan["pools"] if p["gpus_per_replica"] == 16)
    name = slug(big["id"])
    files = fleet_kubernetes_files(plan)
    lws = yaml.safe_load(files[f"{name}.yaml"].text)
    assert lws["kind"] == "LeaderWorkerSet" and lws["spec"]["replicas"] == big["count"]
    group = lws["spec"]["leaderWorkerTemplate"]
    assert group["size"] == 2 and group["restartPolicy"] == "RecreateGroupOnPodRestart"
    leader, worker = (group[k]["spec"]["containers"][0] for k in ("leaderTemplate", "workerTemplate"))
    assert leader["resources"]["limits"] == worker["resources"]["limits"] == {"nvidia.com/gpu": 8}
    head = leader["args"][0]
    assert head.startswith("ray start --head --port=6379 && exec vllm serve")
    serve = shlex.split(head.split("&& exec ", 1)[1])
    assert serve[serve.index("--pipeline-parallel-size") + 1] == "2"
    assert serve[serve.index("--distributed-executor-backend") + 1] == "ray"
    assert worker["args"] == ['exec ray start --address="${LWS_LEADER_ADDRESS}:6379" --block']
    assert "readinessProbe" in leader and "ports" not in worker
    # the model's Service reaches the leaders (which serve), never the workers
    svc = yaml.safe_load(files[f"service-{slug(big['model'])}.yaml"].text)["spec"]["selector"]
    picks = lambda labels: all(labels.get(k) == v for k, v in svc.items())  # noqa: E731
    assert picks(group["leaderTemplate"]["metadata"]["labels"])
    assert not picks(group["workerTemplate"]["metadata"]["labels"])
    # scaled as what it is
    schedule = files["schedule.sh"].text
    assert f"kubectl scale leaderworkerset/{name} --replicas=2" in schedule
    assert f"kubectl wait --for=condition=Available leaderworkerset/{name} --timeout=30m" in schedule
    assert f"deployment/{name}" not in schedule
    keda = yaml.safe_load(fleet_kubernetes_files(plan, day_start_s=0)[f"keda/{name}.yaml"].text)
    assert keda["spec"]["scaleTargetRef"] == {"apiVersion": "leaderworkerset.x-k8s.io/v1",
                                              "kind": "LeaderWorkerSet", "name": name}
    # the vLLM script: 'head' (the default) starts Ray's head then serves, 'worker IP' joins
    script = tmp_path / f"{name}.sh"
    script.write_text(fleet_vllm_files(plan)[f"{name}.sh"].text)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("ray", "vllm"):
        (bin_dir / tool).write_text(f'#!/bin/sh\necho {tool} "$@"\n')
        (bin_dir / tool).chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    out = subprocess.run(["sh", str(script)], capture_output=True, text=True, env=env).stdout
    assert out.startswith("ray start --head --port=6379\nvllm serve")
    assert "--distributed-executor-backend ray" in out
    out = subprocess.run(["sh", str(script), "worker", "10.0.0.7"], capture_output=True, text=True,
                         env=env).stdout
    assert out == "ray start --address=10.0.0.7:6379 --block\n"
    bad = subprocess.run(["sh", str(script), "worker"], capture_output=True, text=True, env=env)
    assert bad.returncode != 0 and "head node's IP" in bad.stderr



def test_a_retired_multi_node_pool_is_deleted_as_a_leader_worker_set():
    """The re-plan's transition deletes a vanished pool by what it was in the plan in place: a
    LeaderWorkerSet for replicas larger than a node (the retired pool's GPU and size say so)."""
    from planner.emit.kubernetes import transition_script

    plan = {"apiVersion": "planner/v1", "kind": "FleetPlan", "pools": [POOL], "replan": {
        "gpus_changed": 32, "retired_pools": [
            {"pool": "big/H100-SXM/tp8-pp2/on_demand", "count": 2, "gpus": 32.0,
             "cost_per_hour": 120.0, "gpu": "H100-SXM", "gpus_per_replica": 16}],
        "transition": {"period": 0, "cost_per_hour_during_switch": 150.0,
                       "grow_first": [{"pool": POOL["id"], "from": 1, "to": 3}],
                       "shrink_after": [{"pool": "big/H100-SXM/tp8-pp2/on_demand", "from": 2, "to": 0}]}}}
    lines = transition_script(plan).splitlines()
    assert f"kubectl scale deployment/{slug(POOL['id'])} --replicas=3" in lines
    assert f"kubectl rollout status deployment/{slug(POOL['id'])} --timeout=30m" in lines
    assert (f"kubectl delete leaderworkerset/{slug('big/H100-SXM/tp8-pp2/on_demand')} "
            "--ignore-not-found") in lines
