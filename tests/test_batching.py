"""Continuous-batching simulation and the fast iteration-cost table."""
import math

import numpy as np
import pytest

from costmodels.batching import (EngineLimits, IterationCostTable, Trace, fluid_max_rate_rps, little_stable,
                                 percentile, simulate)
from costmodels.model import load_model
from costmodels.ops import Iteration, Parallel
from costmodels.roofline import op_time
from costmodels.serving import iteration_ops, iteration_time, make_context
from hardware.catalog import get_accelerator

H100 = get_accelerator("H100-SXM")


def _table(model="llama-3.1-8b", tp=1, ep=1, max_tokens=8448, max_seqs=256):
    ctx = make_context(load_model(model), H100, Parallel(tp, 1, ep))

    def params(o):
        k = ctx.eff.for_op(o)
        return (k.overhead_s, H100.peak_flops("bf16"), k.compute, H100.hbm_bandwidth_bytes_per_s, k.memory)

    table = IterationCostTable(lambda it: iteration_ops(ctx, it),
                               lambda o: op_time(o, H100, dtype=ctx.dtype, eff=ctx.eff, links=ctx.links,
                                                 tp=tp).time_s,
                               params, max_tokens=max_tokens, max_seqs=max_seqs)
    return ctx, table


@pytest.fixture(scope="module")
def llama8b():
    return _table()


def test_table_is_exact_on_small_decode_batches(llama8b):
    ctx, table = llama8b
    for b in (1, 7, 32):
        for c in (100, 3000):
            exact = iteration_time(ctx, Iteration.decode(b, c))
            assert table.decode_s(b, c) == pytest.approx(exact, rel=1e-6)


@pytest.mark.parametrize("model,tp,ep", [("llama-3.1-8b", 1, 1), ("mixtral-8x7b", 4, 4)])
def test_table_interpolates_large_iterations_within_two_percent(model, tp, ep):
    ctx, table = _table(model, tp, ep)
    for tokens, pairs, ctxlen, seqs in ((1000, 1000 * 1001 / 2, 0, 1), (2200, 2048 * 2049 / 2, 152 * 900, 153),
                                        (5000, 4800 * 4801 / 2, 200 * 2000, 201)):
        exact = iteration_time(ctx, Iteration(tokens, pairs, ctxlen, seqs))
        assert table.time_s(tokens, pairs, ctxlen, seqs) == pytest.approx(exact, rel=0.02)


def test_single_request_latency_is_prefill_plus_decode_steps(llama8b):
    _, table = llama8b
    trace = Trace(np.array([0.0]), np.array([500]), np.array([11]))
    res = simulate(trace, table, EngineLimits(kv_capacity_tokens=100_000))
    assert res.ttft_s[0] == pytest.approx(table.time_s(500, 500 * 501 / 2, 0.0, 1), rel=1e-12)
    # ten decode steps at contexts 500..509 (jumped over as one stretch at the middle context)
    steps = 10 * table.decode_s(1, 500 + 4.5)
    assert res.finish_s[0] - res.ttft_s[0] == pytest.approx(steps, rel=1e-3)
    assert res.tpot_s[0] == pytest.approx(steps / 10, rel=1e-3)


def test_every_request_finishes_and_tokens_are_conserved(llama8b):
    _, table = llama8b
    rng = np.random.default_rng(1)
    n = 300
    trace = Trace(np.cumsum(rng.exponential(0.05, n)), rng.integers(50, 2000, n), rng.integers(1, 300, n))
    res = simulate(trace, table, EngineLimits(kv_capacity_tokens=200_000, max_num_seqs=64))
    assert np.isfinite(res.finish_s).all()
    assert res.output_tokens == int(trace.output_len.sum())
    assert (res.finish_s >= trace.arrival_s + res.ttft_s - 1e-9).all()
    assert not res.aborted and res.preemptions == 0


def test_small_kv_cache_preempts_and_recomputes_but_serves_all(llama8b):
    _, table = llama8b
    n = 40
    trace = Trace(np.zeros(n), np.full(n, 1000), np.full(n, 400))
    tight = simulate(trace, table, EngineLimits(kv_capacity_tokens=6000))
    roomy = simulate(trace, table, EngineLimits(kv_capacity_tokens=10 ** 6))
    assert tight.preemptions > 0 and roomy.preemptions == 0
    assert np.isfinite(tight.finish_s).all()
    assert tight.makespan_s > roomy.makespan_s


def test_request_larger_than_kv_cache_is_dropped_not_looped(llama8b):
    _, table = llama8b
    trace = Trace(np.array([0.0, 0.1]), np.array([100, 5000]), np.array([5, 5]))
    res = simulate(trace, table, EngineLimits(kv_capacity_tokens=2000))
    assert math.isfinite(res.ttft_s[0]) and math.isinf(res.ttft_s[1])


def test_higher_rate_means_longer_ttft(llama8b):
    _, table = llama8b
    rng = np.random.default_rng(0)
    n = 400
    base = Trace(np.cumsum(rng.exponential(1.0, n)), np.full(n, 1500), np.full(n, 200))
    lim = EngineLimits(kv_capacity_tokens=400_000, max_num_seqs=128)
    p90 = [percentile(simulate(base.scaled_to_rate(r), table, lim).ttft_s, 90) for r in (2.0, 20.0, 60.0)]
    assert p90[0] < p90[1] < p90[2]


def test_early_abort_on_violations(llama8b):
    _, table = llama8b
    n = 500
    trace = Trace(np.zeros(n), np.full(n, 4000), np.full(n, 100))
    res = simulate(trace, table, EngineLimits(kv_capacity_tokens=10 ** 6), ttft_slo_s=0.05, max_violations=10)
    assert res.aborted


def test_prefilled_mode_skips_prefill_compute(llama8b):
    _, table = llama8b
    trace = Trace(np.array([0.0]), np.array([8000]), np.array([2]))
    res = simulate(trace, table, EngineLimits(kv_capacity_tokens=100_000), prefilled=True)
    assert res.ttft_s[0] == 0.0
    assert res.finish_s[0] == pytest.approx(table.decode_s(1, 8000), rel=1e-9)


def test_trace_scaling_and_round_robin_split():
    tr = Trace(np.arange(101, dtype=float), np.ones(101, int), np.ones(101, int))
    assert tr.scaled_to_rate(4.0).mean_rate_rps == pytest.approx(4.0)
    half = tr.split_round_robin(2, 1)
    assert len(half) == 50 and half.arrival_s[0] == 1.0


def test_fluid_rate_and_little_law(llama8b):
    _, table = llama8b
    lim = EngineLimits(kv_capacity_tokens=500_000, max_num_seqs=256)
    r = fluid_max_rate_rps(table, lim, 1000, 200)
    assert 1.0 < r < 1000.0
    assert fluid_max_rate_rps(table, EngineLimits(kv_capacity_tokens=5_000), 1000, 200) < r
    assert little_stable(10.0, 5.0, 64) and not little_stable(20.0, 5.0, 64)
