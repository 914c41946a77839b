"""Readers of measured tables (hardware/profiles.py) and the measured-table lookup."""
from __future__ import annotations

from pathlib import Path

import pytest

from hardware.errors import InputError
from hardware.profiles import (ModelShape, VidurMeasuredTable, read_apex_comm_csv, read_comm_csv, read_gemm_csv,
                               read_nccl_tests, read_vidur_comm_csv, read_vidur_op_csv, read_vidur_profiles)

VIDUR_OPS = ("emb", "input_layernorm", "attn_pre_proj", "attn_rope", "attn_post_proj", "post_attention_layernorm",
             "mlp_up_proj", "mlp_act", "mlp_down_proj", "add")
SHAPE_COLS = ("n_head", "n_kv_head", "n_embd", "n_expanded_embd", "vocab_size", "use_gated_mlp", "num_tokens",
              "num_tensor_parallel_workers")


def write_vidur_csv(path: Path, shape: ModelShape, points, time_ms, *, drop: str | None = None) -> Path:
    """A Vidur-format mlp.csv: ``points`` are (tokens, tp); ``time_ms(op, tokens, tp)`` gives the
    median (other statistics are derived from it).  ``drop`` leaves one column out."""
    cols = [f"time_stats.{o}.{s}" for o in VIDUR_OPS for s in ("min", "max", "mean", "median", "std")]
    cols += list(SHAPE_COLS)
    cols = [c for c in cols if c != drop]
    lines = [",".join(cols)]
    for tokens, tp in points:
        vals = {}
        for o in VIDUR_OPS:
            m = time_ms(o, tokens, tp)
            vals.update({f"time_stats.{o}.min": 0.9 * m, f"time_stats.{o}.max": 1.2 * m,
                         f"time_stats.{o}.mean": m, f"time_stats.{o}.median": m, f"time_stats.{o}.std": 0.01 * m})
        vals.update(n_head=shape.n_head, n_kv_head=shape.n_kv_head, n_embd=shape.n_embd,
                    n_expanded_embd=shape.n_expanded_embd, vocab_size=shape.vocab_size,
                    use_gated_mlp=str(shape.gated_mlp), num_tokens=tokens, num_tensor_parallel_workers=tp)
        lines.append(",".join(f"{vals[c]:.6g}" if isinstance(vals[c], float) else str(vals[c]) for c in cols))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


SMALL = ModelShape(n_head=8, n_kv_head=8, n_embd=512, n_expanded_embd=1376, vocab_size=1000, gated_mlp=True)


def _linear_ms(op: str, tokens: int, tp: int) -> float:
    return 0.01 + 0.001 * tokens / tp + 0.0001 * VIDUR_OPS.index(op)


@pytest.fixture
def vidur_csv(tmp_path: Path) -> Path:
    path = tmp_path / "compute" / "h100" / "acme" / "tiny-1b" / "mlp.csv"
    return write_vidur_csv(path, SMALL, [(t, tp) for tp in (1, 2) for t in (1, 8, 64)], _linear_ms)


def test_vidur_op_csv_reads_seconds_and_maps_op_names(vidur_csv: Path) -> None:
    samples = read_vidur_op_csv(vidur_csv)
    # 6 rows x 7 modelled ops (emb, rope and add are not in the cost model's op list)
    assert len(samples) == 6 * 7
    s = next(x for x in samples if x.op == "qkv_proj" and x.tokens == 8 and x.tp == 2)
    assert s.source_op == "attn_pre_proj"
    assert s.time_s == pytest.approx(_linear_ms("attn_pre_proj", 8, 2) * 1e-3, rel=1e-5)
    assert s.accelerator == "h100" and s.model == "acme/tiny-1b"
    assert s.shape == SMALL and s.shape.head_dim == 64
    assert {x.op for x in samples} == {"qkv_proj", "o_proj", "mlp_up_gate", "mlp_act", "mlp_down", "input_norm",
                                       "post_attn_norm"}


def test_vidur_folder_reads_every_profile(tmp_path: Path, vidur_csv: Path) -> None:
    write_vidur_csv(tmp_path / "compute" / "a100" / "acme" / "tiny-1b" / "mlp.csv", SMALL, [(1, 1)], _linear_ms)
    samples = read_vidur_profiles(tmp_path / "compute")
    assert {s.accelerator for s in samples} == {"a100", "h100"}


def test_vidur_missing_shape_column_names_file_and_column(tmp_path: Path) -> None:
    bad = write_vidur_csv(tmp_path / "mlp.csv", SMALL, [(1, 1)], _linear_ms, drop="num_tokens")
    with pytest.raises(InputError) as err:
        read_vidur_op_csv(bad)
    assert err.value.file == str(bad) and err.value.field == "num_tokens"
    assert "num_tokens" in str(err.value)


def test_vidur_bad_number_names_row_and_column(tmp_path: Path, vidur_csv: Path) -> None:
    text = vidur_csv.read_text().splitlines()
    header = text[0].split(",")
    row = text[2].split(",")
    row[header.index("time_stats.mlp_down_proj.median")] = "fast"
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([text[0], text[1], ",".join(row)]) + "\n")
    with pytest.raises(InputError) as err:
        read_vidur_op_csv(bad)
    assert err.value.field == "time_stats.mlp_down_proj.median" and "row 3" in str(err.value)


def test_vidur_without_op_columns_and_missing_file(tmp_path: Path) -> None:
    only_shape = tmp_path / "shape.csv"
    only_shape.write_text(",".join(SHAPE_COLS) + "\n8,8,512,1376,1000,True,1,1\n")
    with pytest.raises(InputError) as err:
        read_vidur_op_csv(only_shape)
    assert err.value.field == "time_stats.<op>.median"
    with pytest.raises(InputError) as err:
        read_vidur_op_csv(tmp_path / "nope.csv")
    assert "not found" in str(err.value)
    with pytest.raises(InputError):
        read_vidur_profiles(tmp_path / "empty-dir-that-does-not-exist")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(InputError) as err:
        read_vidur_op_csv(empty)
    assert err.value.field == "header" and err.value.file == str(empty)
    (tmp_path / "no-profiles").mkdir()
    with pytest.raises(InputError) as err:
        read_vidur_profiles(tmp_path / "no-profiles")
    assert "mlp.csv" in str(err.value)


def test_vidur_comm_csv_sizes_are_fp16_elements(tmp_path: Path) -> None:
    p = tmp_path / "all_reduce.csv"
    p.write_text(",time_stats.all_reduce.min,time_stats.all_reduce.max,time_stats.all_reduce.mean,"
                 "time_stats.all_reduce.median,time_stats.all_reduce.std,rank,num_workers,size,collective,"
                 "devices_per_node,max_devices_per_node\n"
                 "0,0.01,0.03,0.02,0.02,0.001,0,8,1048576,all_reduce,8,8\n"
                 "1,0.05,0.09,0.07,0.08,0.001,0,16,1048576,all_reduce,8,8\n")
    s = read_vidur_comm_csv(p)
    assert [x.message_bytes for x in s] == [2 * 1048576.0] * 2
    assert s[0].time_s == pytest.approx(2e-5) and s[0].collective == "all_reduce"
    assert not s[0].cross_node and s[1].cross_node


def test_vidur_comm_csv_missing_size(tmp_path: Path) -> None:
    p = tmp_path / "send_recv.csv"
    p.write_text("time_stats.send_recv.median,num_workers,devices_per_node\n0.1,2,1\n")
    with pytest.raises(InputError) as err:
        read_vidur_comm_csv(p)
    assert err.value.field == "size" and err.value.file == str(p)


def test_apex_comm_csv_collective_from_file_name(tmp_path: Path) -> None:
    p = tmp_path / "alltoall.csv"
    p.write_text("gpu,num_nodes,num_gpus_per_node,dtype,size(kb),time(us)\n"
                 "H100-SXM-80GB,1,8,half,0,14.0\nH100-SXM-80GB,1,8,half,1024,40.0\n")
    s = read_apex_comm_csv(p)
    assert len(s) == 1  # the zero-size row carries no bandwidth information
    assert s[0].collective == "all_to_all" and s[0].message_bytes == 1024 * 1024 and s[0].time_s == pytest.approx(4e-5)
    assert s[0].num_gpus == 8


def test_apex_comm_csv_bad_time(tmp_path: Path) -> None:
    p = tmp_path / "all_reduce.csv"
    p.write_text("gpu,num_nodes,num_gpus_per_node,dtype,size(kb),time(us)\nH100,1,8,half,4,-3\n")
    with pytest.raises(InputError) as err:
        read_apex_comm_csv(p)
    assert err.value.field == "time(us)"


NCCL_OUT = """# nThread 1 nGpus 1 minBytes 8 maxBytes 134217728 step: 2(factor) warmup iters: 5 iters: 20 agg iters: 1
#
# Using devices
#  Rank  0 Group  0 Pid  12345 on    node1 device  0 [0x18] NVIDIA H100 80GB HBM3
#  Rank  1 Group  0 Pid  12346 on    node1 device  1 [0x2a] NVIDIA H100 80GB HBM3
#  Rank  2 Group  0 Pid  12347 on    node1 device  2 [0x3a] NVIDIA H100 80GB HBM3
#  Rank  3 Group  0 Pid  12348 on    node1 device  3 [0x5d] NVIDIA H100 80GB HBM3
#
#                                                              out-of-place                       in-place
#       size         count      type   redop    root     time   algbw   busbw #wrong     time   algbw   busbw #wrong
#        (B)    (elements)                               (us)  (GB/s)  (GB/s)            (us)  (GB/s)  (GB/s)
           8             2     float     sum      -1    10.50    0.00    0.00      0    10.20    0.00    0.00      0
     1048576        262144     float     sum      -1    20.00   52.43   78.64      0    19.90   52.69   79.04      0
   134217728      33554432     float     sum      -1   500.00  268.44  402.65      0   499.00  268.97  403.46      0
# Out of bounds values : 0 OK
# Avg bus bandwidth    : 160.5
"""


def test_nccl_tests_text_output(tmp_path: Path) -> None:
    p = tmp_path / "all_reduce_perf.txt"
    p.write_text(NCCL_OUT)
    s = read_nccl_tests(p)
    assert [x.message_bytes for x in s] == [8.0, 1048576.0, 134217728.0]
    assert s[1].time_s == pytest.approx(20e-6) and s[1].num_gpus == 4 and s[1].collective == "all_reduce"
    # read_comm_csv sends non-CSV files to the nccl-tests reader
    assert read_comm_csv(p) == s


def test_nccl_tests_without_rows_or_collective(tmp_path: Path) -> None:
    p = tmp_path / "all_gather_perf.log"
    p.write_text("# nThread 1 nGpus 8\n# nothing measured\n")
    with pytest.raises(InputError) as err:
        read_nccl_tests(p)
    assert err.value.field == "size"
    q = tmp_path / "mystery.txt"
    q.write_text(NCCL_OUT.replace("sum", "xyz"))
    with pytest.raises(InputError) as err:
        read_nccl_tests(q)
    assert err.value.field == "collective"


def test_comm_csv_unknown_header(tmp_path: Path) -> None:
    p = tmp_path / "weird.csv"
    p.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(InputError) as err:
        read_comm_csv(p)
    assert err.value.field == "header" and err.value.file == str(p)


def test_gemm_tables_both_layouts(tmp_path: Path) -> None:
    a = tmp_path / "gemm.csv"
    a.write_text("gpu,M,N,K,latency_ms,achieved_tflops,dtype,source_id\nA100,64,128,256,0.5,1,fp16,C1\n")
    g = read_gemm_csv(a)[0]
    assert (g.m, g.n, g.k) == (64, 128, 256) and g.time_s == pytest.approx(5e-4) and g.flops == 2 * 64 * 128 * 256
    b = tmp_path / "gemm_0.csv"
    b.write_text("gpu,dtype,m,k,n,time(us)\nV100,half,1024,512,16,12.0\n")
    g = read_gemm_csv(b)[0]
    assert (g.m, g.n, g.k) == (16, 1024, 512) and g.time_s == pytest.approx(12e-6)
    c = tmp_path / "nolatency.csv"
    c.write_text("gpu,M,N,K\nA100,1,2,3\n")
    with pytest.raises(InputError) as err:
        read_gemm_csv(c)
    assert err.value.field == "latency_ms"


class _Op:
    """The fields of costmodels.ops.Op that the lookup reads."""

    def __init__(self, name: str, gemm_mnk=None, flops: float = 0.0) -> None:
        self.name, self.gemm_mnk, self.flops = name, gemm_mnk, flops


def test_measured_table_lookup_interpolates_and_declines(vidur_csv: Path) -> None:
    table = VidurMeasuredTable(read_vidur_op_csv(vidur_csv), SMALL)
    assert table.tp_degrees == [1, 2]
    exact = table.lookup(_Op("qkv_proj", (8, 1536, 512)), tp=1)
    assert exact == pytest.approx(_linear_ms("attn_pre_proj", 8, 1) * 1e-3, rel=1e-5)
    mid = table.lookup(_Op("mlp_down", (36, 512, 1376)), tp=1)  # halfway between 8 and 64 tokens
    lo, hi = (_linear_ms("mlp_down_proj", t, 1) * 1e-3 for t in (8, 64))
    assert mid == pytest.approx((lo + hi) / 2, rel=1e-4)
    # norms: tokens come from FLOPs (4 x hidden per token)
    norm = table.lookup(_Op("input_norm", None, 4.0 * 64 * 512), tp=2)
    assert norm == pytest.approx(_linear_ms("input_layernorm", 64, 2) * 1e-3, rel=1e-5)
    assert table.lookup(_Op("qkv_proj", (128, 1536, 512)), tp=1) is None  # beyond the profiled tokens
    assert table.lookup(_Op("qkv_proj", (8, 1536, 512)), tp=4) is None    # TP not profiled
    assert table.lookup(_Op("attention", None, 1.0), tp=1) is None        # op not in the table


def test_shared_vidur_profile_reads(shared_data: Path) -> None:
    path = shared_data / "vidur/profiling/compute/h100/meta-llama/Llama-2-7b-hf/mlp.csv"
    samples = read_vidur_op_csv(path)
    assert samples[0].accelerator == "h100" and samples[0].model == "meta-llama/Llama-2-7b-hf"
    assert {s.tp for s in samples} == {1, 2, 4, 8}
    one = [s for s in samples if s.op == "qkv_proj" and s.tokens == 1 and s.tp == 1]
    assert len(one) == 1 and 1e-5 < one[0].time_s < 1e-4  # ~38 us for the 4096 x 12288 weight read
    comm = read_comm_csv(shared_data / "vidur/profiling/network/h100_dgx/all_reduce.csv")
    assert {s.num_gpus for s in comm} == {2, 4, 8} and max(s.message_bytes for s in comm) == 2 * 67108864


def test_comm_csv_other_layouts(tmp_path: Path) -> None:
    from hardware.profiles import read_comm_tables
    a = tmp_path / "nccl_perf.csv"
    a.write_text("op,ngpu,dtype,size_bytes,count_elems,t_us_out,algbw_out_gbs,busbw_out_gbs\n"
                 "all_gather,4,half,8388608,4194304,35.5,236,177\n")
    s = read_comm_csv(a)[0]
    assert (s.collective, s.num_gpus, s.message_bytes, s.time_s) == ("all_gather", 4, 8388608, pytest.approx(35.5e-6))
    b = tmp_path / "x4_allreduce_measured.csv"
    b.write_text("num_gpus,size_bytes,latency_us,algbw_gbps,busbw_gbps,source_id\n4,1024,12.5,0.1,0.1,C2\n")
    s = read_comm_csv(b)[0]
    assert s.collective == "all_reduce" and s.time_s == pytest.approx(12.5e-6)
    c = tmp_path / "summary.csv"
    c.write_text("cluster,collective,num_gpus,gpus_per_node,size_bytes,median_ms,algbw_gbps,busbw_gbps\n"
                 "A100-DGX,send_recv,2,1,2048,0.02,0.1,0.1\n")
    s = read_comm_csv(c)[0]
    assert s.collective == "p2p" and s.cross_node and s.time_s == pytest.approx(2e-5)
    assert len(read_comm_tables([tmp_path])) == 3                       # a folder: every table in it
    bad = tmp_path / "badop.csv"
    bad.write_text("op,ngpu,size_bytes,t_us_out\nbroadcast,2,8,1.0\n")
    with pytest.raises(InputError) as err:
        read_comm_csv(bad)
    assert err.value.field == "collective"
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError):
        read_comm_tables([tmp_path / "empty"])


def test_shared_comm_and_gemm_tables_read(shared_data: Path) -> None:
    apex = read_comm_csv(shared_data / "apex_plus/comm/H100-SXM-80GB/alltoall.csv")
    assert apex and {s.collective for s in apex} == {"all_to_all"} and {s.num_gpus for s in apex} == {2, 4, 8}
    nccl = read_comm_csv(shared_data / "sp-profiles/distca_nccl_perf_H100.csv")
    assert {s.collective for s in nccl} == {"all_gather", "all_reduce", "reduce_scatter"}
    val = read_comm_csv(shared_data / "validation/a100x4_nvlink_allreduce_measured.csv")
    assert all(s.num_gpus == 4 and s.collective == "all_reduce" for s in val)
    gemm = read_gemm_csv(shared_data / "validation/a100_mi210_gemm_measured.csv")
    assert {g.gpu for g in gemm} == {"A100", "MI210"}
