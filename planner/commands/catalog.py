"""``planner catalog gpus|nodes|models``: what the planner knows about, with sources."""
from __future__ import annotations

import typer

from planner.commands.common import echo_json, print_table


def register(app: typer.Typer) -> None:
    cat = typer.Typer(help="List the accelerator, node and model catalogs.", no_args_is_help=True)
    cat.command("gpus")(gpus)
    cat.command("nodes")(nodes)
    cat.command("models")(models)
    app.add_typer(cat, name="catalog")


def gpus(as_json: bool = typer.Option(False, "--json", help="Print JSON on stdout.")) -> None:
    """Accelerators: memory, bandwidth, dense FLOP/s per dtype, links, TDP, price with source."""
    from hardware.catalog import list_accelerators

    accs = list_accelerators()
    if as_json:
        echo_json([a.model_dump(mode="json") for a in accs])
        return
    print_table("Accelerators (dense FLOP/s; bandwidth per direction)",
                ["name", "mem GB", "HBM TB/s", "bf16 TF", "fp8 TF", "int8 TOPS", "scale-up", "TDP W", "$/h", "price source"],
                [(a.name, a.memory_bytes / 2**30, a.hbm_bandwidth_bytes_per_s / 1e12,
                  a.flops_per_s.get("bf16", 0) / 1e12, a.flops_per_s.get("fp8", 0) / 1e12 or "-",
                  a.flops_per_s.get("int8", 0) / 1e12 or "-",
                  f"{a.scale_up.kind} {a.scale_up.bandwidth_bytes_per_s / 1e9:.0f} GB/s x{a.scale_up.domain_size}",
                  a.tdp_w, a.price.usd_per_hour if a.price else "-",
                  f"{a.price.source} ({a.price.date})" if a.price else "-") for a in accs])


def nodes(as_json: bool = typer.Option(False, "--json", help="Print JSON on stdout.")) -> None:
    """Node types: GPUs per node, scale-up fabric, scale-out network."""
    from hardware.catalog import get_accelerator, list_nodes

    items = list_nodes()
    if as_json:
        echo_json([n.model_dump(mode="json") for n in items])
        return
    rows = []
    for n in items:
        acc = get_accelerator(n.accelerator)
        rows.append((n.name, n.accelerator, n.gpus_per_node,
                     f"{acc.scale_up.kind} {acc.scale_up.bandwidth_bytes_per_s / 1e9:.0f} GB/s",
                     f"{n.scale_out.kind} {n.scale_out.bandwidth_bytes_per_s * 8 / 1e9:.0f} Gb/s per GPU", n.description))
    print_table("Node types", ["name", "accelerator", "GPUs", "scale-up", "scale-out", "description"], rows)


def models(as_json: bool = typer.Option(False, "--json", help="Print JSON on stdout.")) -> None:
    """Model aliases (checked-in config.json files) with layers, experts, parameters, KV bytes/token."""
    from costmodels.model import aliases, load_model

    specs = [load_model(a).summary() for a in aliases()]
    if as_json:
        echo_json(specs)
        return
    print_table("Models (aliases for checked-in config.json files)",
                ["alias", "family", "layers", "attention", "experts (top-k)", "parameters", "active", "KV bytes/token (bf16)"],
                [(s["name"], s["family"], s["layers"], s["attention"],
                  f"{s['experts']} ({s['experts_per_token']})" if s["experts"] else "-",
                  f"{s['parameters'] / 1e9:.2f}B", f"{s['active_parameters'] / 1e9:.2f}B",
                  int(s["kv_bytes_per_token"])) for s in specs])
