"""Prefill/decode disaggregated bundles: a ratio of prefill to decode instances on one GPU
type, or prefill on one type and decode on another of the same vendor, KV moved between
them; a bundle serves a bucket at the lesser of its two sides' rates."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from hardware.errors import InputError
from planner.fleet.options import Option, SLOCheck
from planner.fleet.request import ModelEntry


#: (prefill instances, decode instances) per disaggregated bundle
PD_RATIOS = ((1, 1), (1, 2), (2, 1), (1, 3), (3, 1))
#: prefill / decode shapes per GPU type considered for bundles: the smallest that fit
PD_SHAPES = 2


def _split_e2e_checks(entry: ModelEntry, spec, refs: list, checks: list[list[SLOCheck]],
                      buckets: np.ndarray) -> list[list[SLOCheck]]:
    """``checks`` with each end-to-end target's first-token share set (``e2e_ttft_s``,
    :func:`costmodels.serving.split_e2e`): a bundle's prefill and decode sides do not see each
    other's load, so they share the target by a split every side of the bundles built from
    these checks must agree on.  The split follows the fastest idle first token (prefill plus
    half a decode step) and decode step (s) among ``refs`` (``(accel, node, (tp, pp))``: the
    instances the bundles draw on; the KV transfer is left out, it only shifts the ratio)."""
    from costmodels.ops import Parallel
    from costmodels.serving import decode_step_s, make_context, prefill_time_s, split_e2e

    if not any(c.e2e_s is not None for b in buckets for c in checks[b]):
        return checks
    contexts = []
    for accel, node, (tp, pp) in refs:
        try:
            contexts.append(make_context(spec, accel, Parallel(tp, pp, 1), dtype=entry.dtype,
                                         kv_dtype=entry.kv_dtype, node=node))
        except InputError:
            continue
    if not contexts:
        return checks
    out = list(checks)
    for b in buckets:
        mine = []
        for c in checks[b]:
            if c.e2e_s is not None:
                ctx_len = c.input_len + c.output_len / 2
                step = min(decode_step_s(ctx, 1, ctx_len) for ctx in contexts)
                first = min(prefill_time_s(ctx, 1, c.input_len)
                            + 0.5 * decode_step_s(ctx, 1, ctx_len) for ctx in contexts)
                c = replace(c, e2e_ttft_s=split_e2e(c.e2e_s, c.output_len, first, step,
                                                    c.ttft_s, c.tpot_s))
            mine.append(c)
        out[b] = mine
    return out


def _phase_caps(entry: ModelEntry, spec, accel, node, phase: str, shape: tuple[int, int],
                checks: list[list[SLOCheck]], buckets: np.ndarray, link=None) -> dict:
    """Per active bucket, ``(estimate, check)``: the capacity of ONE prefill-only or
    decode-only instance of ``shape`` on ``accel``
    (:func:`costmodels.serving.max_rate_disaggregated`) under the bucket's check that allows
    the lowest rate; ``link``: the KV path to the decode side (prefill only).  A prefill check
    sets aside half the tightest decode TPOT limit of the bucket's checks (joining a decode
    step; :meth:`SLOCheck.decode_tpot_limit`, an end-to-end target's share included)."""
    from costmodels.serving import max_rate_disaggregated

    kwargs = {"max_num_seqs": entry.max_num_seqs} if entry.max_num_seqs else {}
    out = {}
    for b in buckets:
        mine = checks[b]
        if phase == "prefill":
            aside = min((t for t in (c.decode_tpot_limit() for c in mine) if t is not None),
                        default=None)
            mine = [replace(c, tpot_s=aside) for c in mine]
        out[b] = min(((max_rate_disaggregated(
            spec, accel, phase=phase, tp=shape[0], pp=shape[1], input_len=c.input_len,
            output_len=c.output_len, ttft_slo_s=c.ttft_s, tpot_slo_s=c.tpot_s, dtype=entry.dtype,
            kv_dtype=entry.kv_dtype, node=node, kv_link=link, e2e_slo_s=c.e2e_s,
            e2e_ttft_s=c.e2e_ttft_s, **kwargs), c) for c in mine),
            key=lambda pair: pair[0].rate_rps)
    return out


def _bundle_option(entry: ModelEntry, index: int, name: str, gpu: str, decode_gpu: str | None,
                   sp: tuple[int, int], sd: tuple[int, int], n_p: int, n_d: int, pre: dict,
                   dec: dict, n_buckets: int) -> Option | None:
    """One bundle of ``n_p`` prefill instances (``sp`` on ``gpu``) and ``n_d`` decode instances
    (``sd`` on ``decode_gpu``, or ``gpu``): it serves a bucket at ``min(n_p cap_P, n_d cap_D)``
    req/s; ``None`` when it serves no bucket.  ``pre`` / ``dec``: :func:`_phase_caps`'s."""
    cap = np.zeros(n_buckets)
    details = [dict() for _ in range(n_buckets)]
    for b in pre:
        (p_est, p_check), (d_est, d_check) = pre[b], dec[b]
        p_rate, d_rate = n_p * p_est.rate_rps, n_d * d_est.rate_rps
        cap[b] = max(0.0, min(p_rate, d_rate))
        ttft = p_est.ttft_s + (p_check.tpot_s or 0.0) / 2
        e2e_check = d_check if d_check.e2e_s is not None else p_check
        details[b] = {"binding": ("prefill:" + p_est.binding) if p_rate <= d_rate
                      else ("decode:" + d_est.binding),
                      "ttft_s": ttft, "tpot_s": d_est.tpot_s, "max_batch": d_est.max_batch,
                      "ttft_slo_s": p_check.ttft_s, "tpot_slo_s": d_check.tpot_s,
                      "e2e_s": ttft + max(e2e_check.output_len - 1, 0) * d_est.tpot_s,
                      "e2e_slo_s": e2e_check.e2e_s,
                      "percentile": (p_check if p_rate <= d_rate else d_check).percentile}
    if cap.max() <= 0:
        return None
    fidelity = pre[next(iter(pre))][0].fidelity
    return Option(index, name, gpu, sp[0], sp[1], cap, f"cost-model:{fidelity}:disaggregated",
                  details, roles=(("prefill", sp[0], sp[1], n_p), ("decode", sd[0], sd[1], n_d)),
                  decode_gpu=decode_gpu)


def same_gpu_bundles(entry: ModelEntry, index: int, name: str, spec, accel,
                     fitting: list[tuple[int, int]], checks: list[list[SLOCheck]],
                     active: np.ndarray) -> list[Option]:
    """Prefill/decode bundles on one GPU type: ``nP`` prefill instances of one shape feeding
    ``nD`` decode instances of another (:data:`PD_RATIOS`, the :data:`PD_SHAPES` smallest
    fitting shapes each).  A bundle serves a bucket at ``min(nP cap_P, nD cap_D)`` req/s
    (:func:`costmodels.serving.max_rate_disaggregated`); loads of buckets add on that one
    figure, which is conservative (the prefill and decode sides are each loaded at most that
    much).  The KV moves over the link tier a group of the bundle's size crosses (the node's
    scale-up fabric when it fits one node, its scale-out network otherwise)."""
    from costmodels.comm import LinkModel
    from hardware.catalog import default_node_for
    from hardware.topology import Cluster

    shapes = sorted(fitting, key=lambda s: (s[0] * s[1], s))[:PD_SHAPES]
    try:
        node = default_node_for(accel)
    except InputError:  # no node type known for this GPU: no link to move the KV over
        return []
    if not shapes:
        return []
    buckets = np.nonzero(active)[0]
    checks = _split_e2e_checks(entry, spec, [(accel, node, shapes[0])], checks, buckets)
    decode = {sh: _phase_caps(entry, spec, accel, node, "decode", sh, checks, buckets)
              for sh in shapes}
    prefill: dict = {}  # (shape, tier) -> capacities: the KV link depends on the bundle's size
    options = []
    for sp in shapes:
        for sd in shapes:
            for n_p, n_d in PD_RATIOS:
                gpus = n_p * sp[0] * sp[1] + n_d * sd[0] * sd[1]
                tier = Cluster(node, -(-gpus // node.gpus_per_node),
                               accel.scale_up).tier_for_group(gpus)
                if (sp, tier.name) not in prefill:
                    prefill[sp, tier.name] = _phase_caps(entry, spec, accel, node, "prefill", sp,
                                                         checks, buckets,
                                                         LinkModel.from_link(tier.link))
                o = _bundle_option(entry, index, name, accel.name, None, sp, sd, n_p, n_d,
                                   prefill[sp, tier.name], decode[sd], len(checks))
                if o is not None:
                    options.append(o)
    return options


#: cross-type bundles kept per model (the ones that beat every same-type option by the most on
#: some bucket, see :func:`prune_cross_bundles`): each pair of GPU types adds
#: PD_SHAPES^2 x len(PD_RATIOS) candidates, too many columns to offer them all
CROSS_BUNDLES_KEPT = 12


def cross_gpu_bundles(entry: ModelEntry, index: int, name: str, spec, accels: list,
                      fitting: dict[str, list[tuple[int, int]]], checks: list[list[SLOCheck]],
                      active: np.ndarray) -> list[Option]:
    """Bundles whose prefill instances run on one GPU type and decode instances on another of
    the same vendor (prefill wants FLOPs per $, decode HBM bandwidth and capacity per $; the
    Splitwise idea).  The two sides sit on different nodes: the KV crosses the slower of the
    two nodes' scale-out networks.  Shapes and ratios as in :func:`same_gpu_bundles`."""
    from costmodels.comm import LinkModel
    from hardware.catalog import default_node_for

    nodes = {}
    for a in accels:
        try:
            nodes[a.name] = default_node_for(a)
        except InputError:
            continue
    buckets = np.nonzero(active)[0]
    shapes = {a.name: sorted(fitting.get(a.name, []), key=lambda s: (s[0] * s[1], s))[:PD_SHAPES]
              for a in accels if a.name in nodes}
    by_name = {a.name: a for a in accels}
    # one end-to-end split for every cross bundle: any prefill side may meet any decode side
    checks = _split_e2e_checks(entry, spec, [(by_name[g], nodes[g], shs[0])
                                             for g, shs in shapes.items() if shs],
                               checks, buckets)
    decode = {(g, sh): _phase_caps(entry, spec, by_name[g], nodes[g], "decode", sh, checks,
                                   buckets)
              for g, shs in shapes.items() for sh in shs}
    options = []
    for a in accels:
        for b in accels:
            if (a.name == b.name or a.vendor != b.vendor or not shapes.get(a.name)
                    or not shapes.get(b.name)):
                continue
            link = min((nodes[a.name].scale_out, nodes[b.name].scale_out),
                       key=lambda lk: lk.bandwidth_bytes_per_s)
            for sp in shapes[a.name]:
                pre = _phase_caps(entry, spec, a, nodes[a.name], "prefill", sp, checks,
                                  buckets, LinkModel.from_link(link))
                for sd in shapes[b.name]:
                    for n_p, n_d in PD_RATIOS:
                        o = _bundle_option(entry, index, name, a.name, b.name, sp, sd, n_p, n_d,
                                           pre, decode[b.name, sd], len(checks))
                        if o is not None:
                            options.append(o)
    return options


def prune_cross_bundles(options: list[Option], prices: dict[str, dict[str, float]]
                         ) -> list[Option]:
    """Keep, per model, the :data:`CROSS_BUNDLES_KEPT` cross-type bundles that undercut every
    other option of the model on some bucket by the largest margin, in on-demand $ per req/s
    (a restriction, like the ratio and shape lists: the MILP stays exact over what is kept)."""
    def unit_cost(o: Option) -> np.ndarray:
        price = sum(prices[g].get("on_demand", min(prices[g].values())) * n
                    for g, n in o.gpus_by_type().items())
        return np.divide(price, o.capacity, out=np.full(o.capacity.shape, np.inf),
                         where=o.capacity > 0)

    keep_ids = set()
    for mi in sorted({o.model_index for o in options}):
        mine = [o for o in options if o.model_index == mi]
        cross = [o for o in mine if o.decode_gpu]
        others = [unit_cost(o) for o in mine if not o.decode_gpu]
        if not cross or not others:  # cross bundles come from the plain shapes: never alone
            continue
        best_other = np.min(others, axis=0)
        scored = []
        for k, o in enumerate(cross):
            gain = np.where(np.isfinite(best_other), 1.0 - unit_cost(o) / best_other, 0.0)
            if gain.max() > 1e-6:
                scored.append((-float(gain.max()), k))
        keep_ids |= {id(cross[k]) for _, k in sorted(scored)[:CROSS_BUNDLES_KEPT]}
    return [o for o in options if not o.decode_gpu or id(o) in keep_ids]
