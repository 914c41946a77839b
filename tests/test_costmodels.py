"""Cost models: op counting, roofline bounds, collectives, memory, serving estimates."""
import math

import pytest

from costmodels.comm import LinkModel, bus_bandwidth_bytes_per_s, collective_time_s
from costmodels.memory import kv_bytes_per_token_per_gpu, memory_breakdown
from costmodels.model import load_model
from costmodels.ops import Iteration, Parallel, expected_active_experts, forward_ops, stage_layers
from costmodels.serving import decode_step_s, estimate, make_context, max_rate_under_slo, prefill_time_s
from hardware.accelerator import Link
from hardware.catalog import get_accelerator
from hardware.errors import InputError

H100 = get_accelerator("H100-SXM")


def test_forward_flops_match_two_times_parameters():
    m = load_model("llama-3.1-8b")
    ops = forward_ops(m, Parallel(), Iteration(tokens=1000, sampled_tokens=1000))
    gemm_flops = sum(o.flops * o.count for o in ops if o.kind == "gemm")
    # every weight (but the input embedding) multiplies each token once: 2 FLOPs per parameter
    expected = 2 * 1000 * (m.parameters() - m.vocab_size * m.hidden_size - m.hidden_size * (2 * m.num_layers + 1))
    assert gemm_flops == pytest.approx(expected, rel=1e-6)


def test_tp_splits_gemm_flops_and_adds_two_allreduces_per_layer():
    m = load_model("llama-3.1-70b")
    it = Iteration.prefill(1, 512)
    one = forward_ops(m, Parallel(tp=1), it)
    four = forward_ops(m, Parallel(tp=4), it)
    f1 = sum(o.flops * o.count for o in one if o.name in ("qkv_proj", "mlp_up_gate"))
    f4 = sum(o.flops * o.count for o in four if o.name in ("qkv_proj", "mlp_up_gate"))
    assert f4 == pytest.approx(f1 / 4, rel=0.01)
    ar = [o for o in four if o.name == "tp_allreduce"]
    assert sum(o.count for o in ar) == 2 * m.num_layers
    assert not [o for o in one if o.kind == "comm"]


def test_moe_decode_reads_only_active_experts():
    m = load_model("deepseek-v3")
    assert expected_active_experts(1, 256, 8) == pytest.approx(8)
    assert expected_active_experts(10_000, 256, 8) == pytest.approx(256, rel=1e-6)
    small = forward_ops(m, Parallel(tp=8), Iteration.decode(1, 1000))
    big = forward_ops(m, Parallel(tp=8), Iteration.decode(512, 1000))
    read = lambda ops: sum(o.bytes * o.count for o in ops if o.name == "moe_up_gate")
    assert read(big) > 10 * read(small)


def test_decode_is_memory_bound_and_long_prefill_compute_bound():
    e = estimate(load_model("llama-3.1-8b"), H100, input_len=4096, output_len=128, batch=4)
    bounds = {(o.name, p): o.bound for p, ops in (("pre", e.prefill_ops), ("dec", e.decode_ops)) for o in ops}
    assert bounds[("mlp_up_gate", "pre")] == "compute"
    assert bounds[("mlp_up_gate", "dec")] == "memory"


def test_decode_floor_is_weight_read_time():
    m = load_model("llama-3.1-8b")
    ctx = make_context(m, H100, Parallel())
    floor = m.weight_bytes(2.0) / H100.hbm_bandwidth_bytes_per_s
    t = decode_step_s(ctx, 1, 128)
    assert floor < t < 2.5 * floor


def test_fp8_weights_halve_decode_weight_traffic():
    m = load_model("llama-3.1-70b")
    bf16 = decode_step_s(make_context(m, H100, Parallel(tp=4)), 1, 100)
    fp8 = decode_step_s(make_context(m, H100, Parallel(tp=4), dtype="fp8"), 1, 100)
    assert 0.45 < fp8 / bf16 < 0.85  # the all-reduces and overheads do not shrink


def test_allreduce_alpha_beta():
    link = Link(kind="nvswitch", bandwidth_bytes_per_s=100e9, latency_s=1e-6, efficiency=1.0, domain_size=8)
    lm = LinkModel.from_link(link, overhead_s=0.0)
    t = collective_time_s("all_reduce", 1e9, 8, lm)
    assert t == pytest.approx(14e-6 + 2 * 7 / 8 * 1e9 / 100e9)
    assert collective_time_s("all_reduce", 1e9, 1, lm) == 0.0
    assert collective_time_s("p2p", 1e6, 2, lm) == pytest.approx(1e-6 + 1e-5)
    assert bus_bandwidth_bytes_per_s("all_reduce", 1e9, 8, t) < 100e9
    with pytest.raises(ValueError):
        collective_time_s("broadcastx", 1, 2, lm)


def test_memory_tp_and_mla_kv():
    m = load_model("llama-3.1-70b")
    one = memory_breakdown(m, Parallel(tp=1), H100.memory_bytes)
    eight = memory_breakdown(m, Parallel(tp=8), H100.memory_bytes)
    assert not one.fits and eight.fits
    assert eight.weights == pytest.approx(one.weights / 8, rel=0.01)
    # GQA KV shrinks with TP until TP exceeds the KV heads; MLA's latent is replicated
    assert kv_bytes_per_token_per_gpu(m, Parallel(tp=8), 2) == m.kv_bytes_per_token(2) / 8
    assert kv_bytes_per_token_per_gpu(m, Parallel(tp=16), 2) == m.kv_bytes_per_token(2) / 8
    ds = load_model("deepseek-v3")
    assert kv_bytes_per_token_per_gpu(ds, Parallel(tp=8), 2) == ds.kv_bytes_per_token(2)


def test_pipeline_split_and_latency():
    assert stage_layers(80, 3) == [27, 27, 26]
    m = load_model("llama-3.1-70b")
    one = prefill_time_s(make_context(m, H100, Parallel(tp=8)), 1, 2048)
    two = prefill_time_s(make_context(m, H100, Parallel(tp=4, pp=2)), 1, 2048)
    assert two > one  # a single request sees every stage in turn on half the GPUs each


def test_bad_layouts_name_the_field():
    m = load_model("llama-3.1-70b")
    with pytest.raises(InputError) as e:
        estimate(m, H100, tp=3, input_len=10, output_len=10)
    assert e.value.field == "tp"
    with pytest.raises(InputError, match="at least 2"):
        estimate(m, H100, tp=1, input_len=10, output_len=10)
    with pytest.raises(InputError, match="dense"):
        estimate(m, H100, tp=8, ep=2, input_len=10, output_len=10)
    with pytest.raises(InputError, match="fp8"):
        estimate(load_model("llama-3.1-8b"), get_accelerator("A100"), dtype="fp8", input_len=10, output_len=10)


def test_capacity_monotone_in_slo_and_zero_when_unreachable():
    m = load_model("llama-3.1-8b")
    loose = max_rate_under_slo(m, H100, tp=1, input_len=512, output_len=128, tpot_slo_s=0.1)
    tight = max_rate_under_slo(m, H100, tp=1, input_len=512, output_len=128, tpot_slo_s=0.02)
    assert loose.rate_rps > tight.rate_rps > 0
    never = max_rate_under_slo(m, H100, tp=1, input_len=512, output_len=128, tpot_slo_s=1e-4)
    assert never.rate_rps == 0.0 and never.binding == "tpot"
    nofit = max_rate_under_slo(load_model("llama-3.1-70b"), get_accelerator("L4"), tp=1, input_len=512, output_len=128)
    assert nofit.rate_rps == 0.0 and nofit.binding == "fit"


def test_estimate_is_deterministic():
    m = load_model("mixtral-8x7b")
    a = estimate(m, H100, tp=2, ep=2, input_len=1000, output_len=200, batch=8).to_dict()
    b = estimate(m, H100, tp=2, ep=2, input_len=1000, output_len=200, batch=8).to_dict()
    assert a == b
    assert {"moe_dispatch", "moe_combine"} <= {o["name"] for o in a["ops"]}
    assert all(math.isfinite(o["time_s"]) for o in a["ops"])
