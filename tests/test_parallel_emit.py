"""Launch-command builders for parallel plans (SGLang, vLLM with KV transfer, placement)."""
from planner.emit.disagg import _placements, vllm_serve_args
from planner.emit.sglang import SglangInstance, sglang_commands, sglang_router_command


def test_placements_pack_nodes_without_overlap_and_continue_from_a_cursor():
    pre, cur = _placements(3, 2, 8)
    assert pre == [(0, [0, 1]), (0, [2, 3]), (0, [4, 5])] and cur == (0, 6)
    dec, cur2 = _placements(1, 4, 8, cur)
    assert dec == [(1, [0, 1, 2, 3])]           # does not fit the 2 GPUs left on node 0
    big, _ = _placements(2, 16, 8)
    assert [n for n, _ in big] == [0, 2]        # a 16-GPU instance spans nodes 0-1, the next starts at 2


def test_sglang_attention_dp_multi_node_command():
    inst = SglangInstance("deepseek-ai/DeepSeek-V3", tp=16, dp=16, ep=16, enable_dp_attention=True,
                          disaggregation_mode="decode", kv_cache_dtype="fp8_e4m3")
    lines = sglang_commands(inst)
    assert len(lines) == 2
    for rank, line in enumerate(lines):
        for flag in ("--tp-size 16", "--dp-size 16", "--enable-dp-attention", "--ep-size 16",
                     "--disaggregation-mode decode", "--nnodes 2", f"--node-rank {rank}", "--kv-cache-dtype fp8_e4m3"):
            assert flag in line
    router = sglang_router_command(["http://p:30000"], ["http://d:31000"])
    assert "--pd-disaggregation" in router and "--prefill http://p:30000" in router


def test_vllm_args_add_nixl_kv_transfer_and_expert_parallel():
    a = vllm_serve_args("mixtral-8x7b", tp=2, dp=4, expert_parallel=True, kv_transfer=True, port=8100)
    line = " ".join(a)
    assert line.startswith("vllm serve mistralai/Mixtral-8x7B-Instruct-v0.1 --tensor-parallel-size 2")
    assert "--data-parallel-size 4" in line and "--enable-expert-parallel" in line
    assert '"kv_connector":"NixlConnector"' in line and "--port 8100" in line
