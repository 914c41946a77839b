"""Reports: every plan kind renders from a real plan (made by the planners' CLI on small inputs),
with every plot present and drawn, the facts a reader needs, no external references, and the
same bytes for the same plan; bad input gives one InputError."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from hardware.errors import InputError
from planner.cli import app
from planner.plan import dump_plan, load_plan

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"

#: plot ids each report kind must contain
PLOTS = {
    "fleet": ["fleet-cost", "fleet-routing", "fleet-headroom", "fleet-periods", "fleet-savings"],
    "parallel": ["parallel-tradeoff", "parallel-time", "parallel-memory"],
    "experts": ["experts-before", "experts-after", "experts-layers", "experts-traffic"],
    "step": ["seqpar-gantt"],
    "seqplan": ["seqpar-strategies", "seqpar-batches"],
}

FLEET_REQUEST = {
    "models": [{"name": "chat-8b", "model": "llama-3.1-8b",
                "workload": {"histogram": {"input_edges": [0, 512, 2048, 8192], "output_edges": [0, 128, 512],
                                           "shares": [[0.3, 0.15], [0.25, 0.15], [0.1, 0.05]]},
                             "rate_rps": [8.0, 30.0, 16.0], "period_s": 3600},
                "slo": {"ttft_s": 1.0, "tpot_s": 0.05, "percentile": 90}}],
    "gpus": [{"name": "L4"}, {"name": "A10G", "spot_price_per_hour": 0.45},
             {"name": "H100-SXM", "reserved_price_per_hour": 3.1, "quota": 2}],
    "spot": {"max_fraction": 0.3},
    "solver": {"time_limit_s": 5},
}

_CACHE: dict[str, Path] = {}


def _synthetic_traces(layers: int = 4, experts: int = 16, tokens: int = 300, seed: int = 0) -> str:
    """JSONL routing records (top-2) with planted cross-layer structure: a token's expert at
    layer l + 1 follows its expert at layer l most of the time; skewed expert popularity."""
    import json
    import numpy as np
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, experts + 1) ** 0.8
    popularity /= popularity.sum()
    lines = []
    for t in range(tokens):
        first = int(rng.choice(experts, p=popularity))
        for layer in range(layers):
            follow = (first + 3 * layer) % experts if rng.random() < 0.7 else int(rng.choice(experts, p=popularity))
            second = (follow + 1 + int(rng.integers(experts - 1))) % experts
            lines.append(json.dumps({"request": t // 20, "token": t, "layer": layer, "experts": [follow, second]}))
    return "\n".join(lines) + "\n"


def _cli(args: list[str]) -> None:
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, (args, res.output)


def make_plans(folder: Path) -> dict[str, Path]:
    """Real plan files of every kind, written by the planners' own commands (once per session)."""
    if _CACHE:
        return dict(_CACHE)
    folder.mkdir(parents=True, exist_ok=True)
    fleet_req = folder / "fleet_request.yaml"
    fleet_req.write_text(yaml.safe_dump(FLEET_REQUEST))
    _cli(["fleet", str(fleet_req), "-o", str(folder / "fleet.yaml")])
    par = yaml.safe_load((EXAMPLES / "parallel_request.yaml").read_text())
    par["workload"]["num_requests"] = 100
    par_req = folder / "parallel_request.yaml"
    par_req.write_text(yaml.safe_dump(par))
    _cli(["parallel", str(par_req), "-o", str(folder / "parallel.yaml"), "--top", "3"])
    traces = folder / "routing.jsonl"
    traces.write_text(_synthetic_traces())
    _cli(["experts", "--traces", str(traces), "--gpus", "4", "--nodes", "2", "--slots-per-gpu", "5",
          "-o", str(folder / "experts.yaml")])
    lengths, cluster = str(EXAMPLES / "seqpar_lengths.txt"), str(EXAMPLES / "seqpar_cluster.yaml")
    _cli(["seqpar", "step", "--lengths", lengths, "--cluster", cluster, "--model", "llama-3.1-8b",
          "-o", str(folder / "step.yaml")])
    _cli(["seqpar", "plan", "--lengths", lengths, "--cluster", cluster, "--model", "llama-3.1-8b",
          "--batch-size", "64", "--batches", "2", "-o", str(folder / "seqplan.yaml")])
    _CACHE.update({k: folder / f"{k}.yaml" for k in PLOTS})
    return dict(_CACHE)


@pytest.fixture(scope="module")
def plans(tmp_path_factory) -> dict[str, Path]:
    return make_plans(tmp_path_factory.mktemp("plans"))


_HTML: dict[str, str] = {}


def make_reports(plans: dict[str, Path]) -> dict[str, str]:
    """Each plan's report, rendered once (per session) through ``planner report``."""
    for kind, path in plans.items():
        if kind not in _HTML:
            html = path.with_suffix(".html")
            res = CliRunner().invoke(app, ["report", str(path), "-o", str(html)])
            assert res.exit_code == 0, res.output
            _HTML[kind] = html.read_text()
    return dict(_HTML)


@pytest.fixture(scope="module")
def reports(plans) -> dict[str, str]:
    return make_reports(plans)


def _figures(html: str) -> dict[str, str]:
    return dict(re.findall(r'<figure class="plot" id="plot-[^"]*" data-plot="([^"]+)">(.*?)</figure>', html, re.S))


@pytest.mark.parametrize("kind", list(PLOTS))
def test_each_plan_kind_renders_every_plot(plans, reports, kind):
    html = reports[kind]
    figs = _figures(html)
    assert set(PLOTS[kind]) <= set(figs), (kind, sorted(figs))
    for name in PLOTS[kind]:
        svg = figs[name]
        assert svg.lstrip().startswith("<svg"), name
        # drawn, not an empty frame: many path / text elements
        assert len(re.findall(r"<(path|use|rect|text)\b", svg)) > 10, name
    plan = load_plan(plans[kind])
    # the facts every report states
    for section in ("facts-inputs", "facts-assumptions", "facts-fidelity", "facts-solver", "facts-version"):
        assert f'id="{section}"' in html, section
    assert plan["metadata"]["tool_version"] in html
    assert plan["metadata"]["inputs_sha256"] in html
    # self-contained: no scripts, no external resources
    assert "<script" not in html
    assert not re.search(r'(src|href)\s*=\s*"(https?:)?//', html)


def test_reports_show_solver_status_gap_and_fidelity(plans, reports):
    fleet = load_plan(plans["fleet"])
    html = reports["fleet"]
    assert f">{fleet['solver']['status']}<" in html
    assert "analytical speed-of-light" in html  # the plan's capacity source is cost-model:analytical
    step = load_plan(plans["step"])
    html = reports["step"]
    assert f">{step['solver']['status']}<" in html
    assert step["cost_model"]["fidelity"] in html
    par = load_plan(plans["parallel"])
    html = reports["parallel"]
    assert par["plans"][0]["label"] in html
    assert "records no solver status or gap" in html  # the parallel plan carries search facts only


def test_report_is_deterministic(plans, reports):
    from planner.report import report_file
    for kind in ("step", "experts"):
        assert report_file(plans[kind]) == reports[kind]


def test_expert_gpu_loads_match_the_plan(plans):
    import numpy as np
    from planner.experts import read_loads
    from planner.report.experts import _slot_to_gpu, gpu_loads
    plan = load_plan(plans["experts"])
    w = read_loads(plan["spec"]["loads"]).weights
    ratio = gpu_loads(w, plan["placement"]["phy2log"], _slot_to_gpu(plan), plan["spec"]["gpus"])
    want = [r["max_mean_gpu_load"] for r in plan["per_layer"]]
    assert np.allclose(ratio.max(1), want, rtol=1e-9)


def test_missing_optional_fields_are_said_not_invented(plans, tmp_path):
    from planner.report import report_file
    plan = load_plan(plans["fleet"])
    for key in ("periods", "workload", "capacity", "peak_provisioning"):
        plan.pop(key, None)
    # a section the planner always writes is null, not absent (absent: the plan looks cut short)
    plan["baseline_single_gpu"] = None
    plan["solver"] = {"status": "feasible"}
    path = tmp_path / "thin.yaml"
    dump_plan(plan, path)
    html = report_file(path)
    assert "one period" in html
    assert "no single-GPU-type baseline" in html
    assert "not recorded in the plan" in html  # the gap


@pytest.mark.parametrize("mutate, needle", [
    (lambda p: p.update(kind="Estimate"), "unsupported plan kind"),  # a kind with no report
    (lambda p: p.update(kind="Bogus"), "unsupported plan kind"),
    (lambda p: p.update(apiVersion="planner/v9"), "unsupported apiVersion"),
])
def test_unknown_kind_or_version_is_one_input_error(plans, tmp_path, mutate, needle):
    from planner.report import report_file
    plan = load_plan(plans["step"])
    mutate(plan)
    path = tmp_path / "bad.yaml"
    dump_plan(plan, path)
    with pytest.raises(InputError, match=needle):
        report_file(path)
    res = CliRunner().invoke(app, ["report", str(path), "-o", str(tmp_path / "r.html")])
    assert res.exit_code != 0
    assert not (tmp_path / "r.html").exists()


def test_cli_bad_input_is_one_line_exit_2(plans, tmp_path, capsys):
    from planner.cli import main
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: planner/v1\nkind: Nonsense\n")
    with pytest.raises(SystemExit) as exc:
        main(["report", str(bad), "-o", str(tmp_path / "r.html")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "kind" in err[0] and "Traceback" not in err[0]
    with pytest.raises(SystemExit) as exc:
        main(["report", str(plans["fleet"]), "-o", str(tmp_path / "r.txt")])
    assert exc.value.code == 2


def test_report_never_overwrites_its_input(plans, tmp_path):
    from planner.cli import main
    copy = tmp_path / "plan.html"  # a plan that happens to end in .html
    copy.write_text(plans["step"].read_text())
    with pytest.raises(SystemExit) as exc:
        main(["report", str(copy), "-o", str(copy)])
    assert exc.value.code == 2
    assert copy.read_text() == plans["step"].read_text()


def test_disaggregated_parallel_plan_shows_memory_per_phase(plans, tmp_path):
    from planner.report import report_file
    plan = load_plan(plans["parallel"])
    top = plan["plans"][0]
    replica = top.pop("replica")
    top.update(disaggregated=True, tp=None, pp=None, dp=None, ep=None, prefill=replica, decode=replica)
    path = tmp_path / "disagg.yaml"
    dump_plan(plan, path)
    figs = _figures(report_file(path))
    assert "prefill" in figs["parallel-memory"] and "decode" in figs["parallel-memory"]


def test_expert_report_without_its_loads_file_says_so(plans, tmp_path):
    from planner.report import report_file
    plan = load_plan(plans["experts"])
    plan["spec"]["loads"] = "gone.npz"
    path = tmp_path / "experts.yaml"
    dump_plan(plan, path)
    html = report_file(path)
    assert "gone.npz named by the plan was not found" in html
    figs = _figures(html)
    assert "replicas per expert" in figs["experts-before"]
    assert "distinct experts per GPU" in figs["experts-after"]


def test_parallel_per_op_breakdown_is_drawn_when_the_plan_holds_one(plans, tmp_path):
    from planner.report import report_file
    plan = load_plan(plans["parallel"])
    plan["plans"][0]["op_breakdown"] = {"prefill": [{"op": "attention", "time_s": 0.01},
                                                    {"op": "mlp", "time_s": 0.02}],
                                        "decode": {"attention": 0.004, "all_reduce": 0.001}}
    path = tmp_path / "ops.yaml"
    dump_plan(plan, path)
    svg = _figures(report_file(path))["parallel-time"]
    for label in ("prefill: attention", "prefill: mlp", "decode: all_reduce"):
        assert label in svg
