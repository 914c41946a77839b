"""Hardware catalog: required entries, dense numbers, aliases and clear errors."""
import pytest

from hardware.catalog import default_node_for, get_accelerator, get_node, list_accelerators, list_nodes
from hardware.errors import InputError
from hardware.topology import Cluster

REQUIRED = ["A10G", "L4", "L40S", "A100-40GB-SXM", "A100-80GB-SXM", "H100-SXM", "H100-PCIE", "H200-SXM",
            "B200", "MI300X", "Gaudi3"]


def test_required_accelerators_present():
    names = {a.name for a in list_accelerators()}
    assert set(REQUIRED) <= names


@pytest.mark.parametrize("name", REQUIRED)
def test_every_entry_is_complete(name):
    a = get_accelerator(name)
    assert a.memory_bytes > 10e9 and a.hbm_bandwidth_bytes_per_s > 1e11
    assert a.flops_per_s["bf16"] > 1e13
    assert a.scale_up.bandwidth_bytes_per_s > 0 and a.host_link.bandwidth_bytes_per_s > 0
    assert a.tdp_w > 0 and a.price is not None and a.price.source and a.price.date
    assert a.sources


def test_dense_not_sparse_and_no_fp8_on_ampere():
    assert get_accelerator("H100-SXM").flops_per_s["bf16"] == pytest.approx(989e12)  # sparse headline: 1979
    assert "fp8" not in get_accelerator("A100-80GB-SXM").flops_per_s
    with pytest.raises(InputError, match="no fp8"):
        get_accelerator("A100-80GB-SXM").peak_flops("fp8")


@pytest.mark.parametrize("alias,name", [("h100", "H100-SXM"), ("H100-sxm", "H100-SXM"), ("a100", "A100-80GB-SXM"),
                                        ("mi300x", "MI300X"), ("h100-pcie", "H100-PCIE"), ("l4", "L4")])
def test_aliases_case_insensitive(alias, name):
    assert get_accelerator(alias).name == name


def test_unknown_gpu_suggests_nearest():
    with pytest.raises(InputError) as e:
        get_accelerator("H100-SMX")
    assert "H100-SXM" in str(e.value) and e.value.field == "gpu"


def test_price_override_keeps_catalog_untouched():
    a = get_accelerator("L4")
    b = a.with_price(0.5)
    assert b.price_per_hour == 0.5 and a.price_per_hour != 0.5


def test_nodes_and_tiers():
    assert {n.name for n in list_nodes()} >= {"hgx-h100", "hgx-h200", "hgx-b200", "mi300x-8", "g5-xlarge"}
    node = get_node("dgx-h100")
    assert node.gpus_per_node == 8 and node.scale_out.bandwidth_bytes_per_s == pytest.approx(50e9)
    cluster = Cluster(node, 4, get_accelerator(node.accelerator).scale_up)
    assert cluster.tier_for_group(8).name == "intra-node"
    assert cluster.tier_for_group(16).name == "inter-node"
    assert cluster.tier_for_group(16).nodes_spanned == 2
    assert default_node_for("H100").name == "hgx-h100"


def test_efficiency_curve_interpolates_in_log_size():
    curve = get_accelerator("H100-SXM").matmul_efficiency
    assert curve.at(1e3) == curve.efficiencies[0]
    assert curve.at(1e15) == curve.efficiencies[-1]
    mid = curve.at((1e9 * 1e10) ** 0.5)
    assert curve.at(1e9) < mid < curve.at(1e10)


def test_extra_catalog_folder(tmp_path, monkeypatch):
    from hardware import catalog
    (tmp_path / "accelerators").mkdir()
    src = (catalog.CATALOG_DIR / "accelerators" / "l4.yaml").read_text()
    # a new GPU keeps none of L4's aliases: a name or alias another entry answers to is refused
    (tmp_path / "accelerators" / "mygpu.yaml").write_text(
        src.replace("name: L4", "name: MyGPU").replace("- l4-24gb", "- mygpu-alias").replace("- nvidia-l4\n", ""))
    monkeypatch.setenv("PLANNER_CATALOG", str(tmp_path))
    catalog.clear_cache()
    try:
        assert get_accelerator("mygpu").name == "MyGPU"
    finally:
        monkeypatch.delenv("PLANNER_CATALOG")
        catalog.clear_cache()


def test_malformed_catalog_file_names_file_and_field(tmp_path):
    from hardware.catalog import load_accelerator_file
    p = tmp_path / "bad.yaml"
    p.write_text("name: X\nvendor: Y\n")
    with pytest.raises(InputError) as e:
        load_accelerator_file(p)
    assert str(p) in str(e.value) and e.value.field
