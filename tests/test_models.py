"""Model specs from checked-in config.json fixtures: golden parameter counts and KV sizes."""
import json

import pytest

from costmodels.model import aliases, load_model, model_from_config
from hardware.errors import InputError

# Published totals (model cards / papers).  Our counts come from the shapes alone.
PUBLISHED_TOTAL = {
    "llama-3.1-8b": 8.03e9,       # Meta model card
    "llama-3.1-70b": 70.6e9,      # Meta model card
    "llama-3.1-405b": 405e9,      # Meta model card ("405B")
    "mixtral-8x7b": 46.7e9,       # Mistral: 46.7B total, 12.9B active
    "qwen3-235b-a22b": 235e9,     # Qwen3 model card: 235B total, 22B active
    "qwen3-30b-a3b": 30.5e9,      # Qwen3 model card
    "deepseek-v3": 671e9,         # DeepSeek-V3 report: 671B total (685B with the MTP module), 37B active
    "qwen2.5-72b": 72.7e9,        # Qwen2.5 model card
    "qwen2.5-7b": 7.61e9,
    "mistral-7b": 7.24e9,
    "llama-2-70b": 69e9,
    "gpt-oss-120b": 116.8e9,      # OpenAI gpt-oss model card: 116.8B total
}
PUBLISHED_ACTIVE = {"mixtral-8x7b": 12.9e9, "qwen3-235b-a22b": 22e9, "deepseek-v3": 37e9, "qwen3-30b-a3b": 3.3e9}


@pytest.mark.parametrize("alias,total", sorted(PUBLISHED_TOTAL.items()))
def test_total_parameters_within_one_percent(alias, total):
    assert load_model(alias).parameters() == pytest.approx(total, rel=0.01)


@pytest.mark.parametrize("alias,active", sorted(PUBLISHED_ACTIVE.items()))
def test_active_parameters_within_two_percent(alias, active):
    assert load_model(alias).active_parameters() == pytest.approx(active, rel=0.02)


def test_required_fixtures_are_checked_in():
    for alias in ("llama-3.1-8b", "llama-3.1-70b", "mixtral-8x7b", "qwen3-235b-a22b", "deepseek-v3"):
        assert alias in aliases()


def test_mla_kv_is_576_values_per_token_per_layer():
    m = load_model("deepseek-v3")
    assert m.kv_values_per_token_per_layer() == 576
    assert m.kv_bytes_per_token(2) == 576 * 61 * 2


def test_gqa_kv_bytes_per_token():
    m = load_model("llama-3.1-70b")  # 8 KV heads x 128 x K and V x 80 layers x 2 bytes
    assert m.kv_bytes_per_token(2) == 2 * 8 * 128 * 80 * 2
    assert load_model("llama-2-7b").kv_bytes_per_token(2) == 2 * 32 * 128 * 32 * 2  # MHA


def test_deepseek_structure():
    m = load_model("deepseek-v3")
    assert m.moe.first_dense_layers == 3 and m.num_moe_layers == 58
    assert (m.moe.num_expert_groups, m.moe.topk_groups) == (8, 4)
    assert m.expert_parameters() == 3 * 7168 * 2048
    assert m.weight_dtype == "fp8"


def test_sliding_window_caps_kv_for_long_sequences():
    m = load_model("gpt-oss-120b")
    assert m.sliding_layers == 18
    full = m.kv_bytes_per_token(2) * 10_000
    assert m.kv_bytes_for_sequence(10_000) < 0.6 * full


def test_alias_is_case_insensitive_and_hf_id_works():
    assert load_model("Llama-3.1-8B").name == "llama-3.1-8b"
    assert load_model("meta-llama/llama-3.1-8b").parameters() == load_model("llama-3.1-8b").parameters()


def test_config_path(tmp_path):
    cfg = json.loads((aliases()["mixtral-8x7b"]).read_text())
    p = tmp_path / "config.json"
    p.write_text(json.dumps(cfg))
    assert load_model(str(p)).moe.num_experts == 8
    assert load_model(str(tmp_path)).moe.num_experts == 8  # a folder holding config.json


def test_unknown_alias_suggests_names():
    with pytest.raises(InputError) as e:
        load_model("llama-3.1-7b")
    assert "llama-3.1-70b" in str(e.value) or "llama-3.1-8b" in str(e.value)


def test_missing_and_malformed_config(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_model(str(tmp_path / "nope.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="malformed JSON"):
        load_model(str(bad))


def test_unsupported_and_incomplete_config():
    with pytest.raises(InputError, match="unsupported model_type"):
        model_from_config({"model_type": "mamba"}, source="x.json")
    with pytest.raises(InputError) as e:
        model_from_config({"model_type": "llama", "hidden_size": 4096}, source="x.json")
    assert e.value.field == "num_attention_heads" and e.value.file == "x.json"
    with pytest.raises(InputError, match="num_key_value_heads"):
        model_from_config({"model_type": "llama", "hidden_size": 64, "num_attention_heads": 6, "num_key_value_heads": 4,
                           "num_hidden_layers": 2, "vocab_size": 10, "intermediate_size": 8}, source="x.json")


@pytest.mark.parametrize("layers,first_dense,freq", [(61, 3, 1), (32, 0, 2), (48, 5, 3), (4, 4, 1),
                                                      (3, 5, 2), (1, 0, 1)])
def test_moe_layer_count_matches_the_layer_by_layer_rule(layers, first_dense, freq):
    from dataclasses import replace

    base = load_model("deepseek-v3")
    m = replace(base, num_layers=layers, moe=replace(base.moe, first_dense_layers=first_dense,
                                                     layer_freq=freq))
    assert m.num_moe_layers == sum(m.is_moe_layer(i) for i in range(layers))
    assert m.num_dense_layers == layers - m.num_moe_layers
