"""costmodels/training.py: FLOPs, memory, ZeRO states and SP communication, with units."""
from __future__ import annotations

import numpy as np
import pytest

from costmodels import training as tr
from costmodels.comm import collective_time_s
from costmodels.model import load_model
from hardware.catalog import default_node_for, get_accelerator


@pytest.fixture(scope="module")
def llama8b():
    return load_model("llama-3.1-8b")


@pytest.fixture(scope="module")
def h100():
    return get_accelerator("h100")


def test_flops_counts(llama8b):
    s = 4096.0
    lin_tok = tr.linear_flops_per_token(llama8b)
    # about 2 x 8B parameters per token (embedding lookup excluded, LM head included)
    assert 1.4e10 < lin_tok < 1.7e10
    att = tr.attention_flops(llama8b, s)
    assert att == pytest.approx(2 * s * s * (4096 + 4096) * 32 * 0.5)
    lin_none, att_none = tr.training_flops(llama8b, s, "none")
    lin_sel, att_sel = tr.training_flops(llama8b, s, "selective")
    lin_full, att_full = tr.training_flops(llama8b, s, "full")
    assert lin_none == pytest.approx(3 * lin_tok * s) and att_none == pytest.approx(3 * att)
    assert lin_sel == lin_none and att_sel == pytest.approx(4 * att)
    assert lin_full == pytest.approx(4 * lin_tok * s) and att_full == pytest.approx(4 * att)
    with pytest.raises(ValueError):
        tr.training_flops(llama8b, s, "sometimes")


def test_compute_time_respects_peak_and_splits(llama8b, h100):
    s = 32768.0
    t1 = tr.compute_time_s(llama8b, h100, s, 1)
    t8 = tr.compute_time_s(llama8b, h100, s, 8)
    lin, att = tr.training_flops(llama8b, s)
    assert t1 >= (lin + att) / h100.peak_flops("bf16")  # never faster than peak
    assert t8 < t1 and t8 > t1 / 8  # splitting helps, but smaller GEMMs run less efficiently
    arr = tr.compute_time_s(llama8b, h100, np.array([1024.0, s]), 8)
    assert arr[1] == pytest.approx(t8) and arr[0] < arr[1]


def test_efficiency_and_collective_helpers_match_the_scalar_models(h100):
    curve = h100.matmul_efficiency
    xs = np.array([1.0, 3e7, 5e9, 1e13])
    assert np.allclose(tr.efficiency_at(curve, xs), [curve.at(x) for x in xs])
    link = h100.scale_up
    fixed, per_byte = tr.collective_line("all_to_all", 8, link)
    for m in (1e3, 1e6, 1e9):
        assert fixed + per_byte * m == pytest.approx(collective_time_s("all_to_all", m, 8, link))


def test_activation_memory_by_recompute_mode(llama8b):
    none = tr.activation_bytes_per_token(llama8b, "none")
    sel = tr.activation_bytes_per_token(llama8b, "selective")
    full = tr.activation_bytes_per_token(llama8b, "full")
    assert none > sel > full > 0
    # full recompute keeps one hidden vector per layer plus one layer's working set and logits
    per_layer_none = (none - 4 * llama8b.vocab_size) / llama8b.num_layers
    assert full == pytest.approx(2 * 4096 * 32 + per_layer_none + 4 * llama8b.vocab_size)


def test_zero_stages_shard_model_states(llama8b):
    p = llama8b.parameters()
    assert tr.model_state_bytes(llama8b, 0, 64) == pytest.approx(16 * p)
    assert tr.model_state_bytes(llama8b, 1, 64) == pytest.approx(4 * p + 12 * p / 64)
    assert tr.model_state_bytes(llama8b, 2, 64) == pytest.approx(2 * p + 14 * p / 64)
    assert tr.model_state_bytes(llama8b, 3, 64) == pytest.approx(16 * p / 64)
    with pytest.raises(ValueError):
        tr.model_state_bytes(llama8b, 4, 64)


def test_ulysses_traffic_and_kv_replication(llama8b, h100):
    link = h100.scale_up
    assert tr.ulysses_comm_time_s(llama8b, 8192.0, 1, link) == 0.0
    t1 = tr.ulysses_comm_time_s(llama8b, 8192.0, 8, link)
    t2 = tr.ulysses_comm_time_s(llama8b, 16384.0, 8, link)
    assert t2 == pytest.approx(2 * t1)  # bandwidth part is linear in tokens
    # 8 KV heads: a degree of 16 replicates K and V to 16 heads
    qkv8, _ = tr.ulysses_a2a_bytes(llama8b, 16384.0, 8)
    qkv16, _ = tr.ulysses_a2a_bytes(llama8b, 16384.0, 16)
    assert qkv8 == pytest.approx(16384 / 8 * (4096 + 2 * 8 * 128) * 2)
    assert qkv16 == pytest.approx(16384 / 16 * (4096 + 2 * 16 * 128) * 2)
    full = tr.ulysses_comm_time_s(llama8b, 8192.0, 8, link, recompute="full")
    assert full == pytest.approx(1.5 * t1)


def test_ring_traffic_hides_behind_long_sequences(llama8b, h100):
    node = default_node_for(h100)
    ib = node.scale_out
    short = tr.ring_comm_time_s(llama8b, h100, 2048.0, 8, ib)
    long_ = tr.ring_comm_time_s(llama8b, h100, 262144.0, 8, h100.scale_up)
    assert short > 0.0  # few tokens per rank across nodes: traffic shows
    assert long_ == 0.0  # many tokens per rank over NVLink: fully overlapped
    assert tr.ring_comm_time_s(llama8b, h100, 2048.0, 1, ib) == 0.0


def test_sequence_and_group_times(llama8b, h100):
    node = default_node_for(h100)
    uly = tr.SPGroupSpec("ulysses", 8, 1, h100.scale_up, None)
    ring = tr.SPGroupSpec("ring", 1, 8, None, h100.scale_up)
    hyb = tr.SPGroupSpec("hybrid", 8, 2, h100.scale_up, node.scale_out)
    s = 65536.0
    base = tr.compute_time_s(llama8b, h100, s, 8)
    assert tr.sequence_time_s(llama8b, h100, s, uly) > base
    assert tr.sequence_time_s(llama8b, h100, s, ring) >= base
    assert hyb.size == 16
    assert tr.sequence_time_s(llama8b, h100, s, hyb) < tr.sequence_time_s(llama8b, h100, s, uly)
    assert tr.group_fixed_time_s(llama8b, h100, uly) > tr.group_fixed_time_s(
        llama8b, h100, tr.SPGroupSpec("single", 1, 1, None, None))
    assert tr.zero3_microbatch_time_s(llama8b, 64, node.scale_out) > 0.0
