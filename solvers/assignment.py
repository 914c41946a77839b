"""Replicated assignment: copies of weighted items into bins with slots, balanced.

The generic problem behind expert placement, stated without any LLM words:

* ``B`` independent rows (instances solved together, vectorised with numpy), each with ``E``
  items of weight ``w[b, e] >= 0``;
* bins ``k = 0..K-1`` with ``slots[k]`` slots and a ``speed[k]`` (load it clears per unit time);
  every row fills every slot, so each row places ``R = slots.sum()`` copies;
* item ``e`` gets ``c[b, e] >= 1`` copies that share its weight equally (``w / c`` each);
* **anti-affinity**: no two copies of one item in one bin (a second copy there is wasted memory
  and cannot lower the bin's load), hence ``c <= K`` and at most ``cap`` copies per item;
* objective: the largest bin time ``max_k load[k] / speed[k]``.

Optional hierarchy: items come in contiguous groups, bins in domains; every copy of a group's
items must live in one domain, and each domain receives the same number of groups.

Algorithms, all deterministic:

1. :func:`water_fill` chooses the copy counts minimising the largest per-copy weight (greedy
   "one more copy to the item with the largest weight per copy" is optimal for that min-max;
   we compute the same counts by bisection on the threshold, vectorised over rows).
2. :func:`lpt_pack` places copies heaviest first into the least-loaded bin that has a free slot
   and does not already hold the item (LPT with anti-affinity), all rows at once.
3. :func:`improve_swaps` swaps pairs of copies between the busiest bin and any other bin while
   that lowers the busiest bin without creating a new one as busy (steepest descent; all rows
   at once); a swap keeps the slot counts, so the layout stays valid.
4. :func:`refine_cpsat` certifies or improves a small row exactly with CP-SAT (aggregated
   formulation: one 0/1 variable per (item, bin), never one per interchangeable copy).
5. :func:`replan` moves from a previous placement under a budget of copies to load;
   :func:`improve_affinity` / :func:`relabel_domains` keep heavy item pairs (within a row, or
   between consecutive rows) in one bin / domain without exceeding a load cap.

Lower bounds (:func:`lower_bound`) are proven for every placement with the same bins,
whatever copy counts it uses: the mean bin time, the capped water-filling bound (an item with
``w`` split over at most ``m = min(cap, K)`` bins leaves some bin with at least ``w / m`` of it),
when every item has exactly one copy, the heaviest item plus the lightest items that must
share its bin, and :func:`heavy_items_bound`: every copy-count combination of the heaviest
items and, on few bins, every way of putting their copies into bins, with the other slots
filled at least as cheaply as :func:`fill_table` / :func:`spread_fill` allow (exact least
fill from distinct items sharing the spare copies).  With a hierarchy, the domain-level bound (the best packing of groups onto
domains, divided by the bins per domain) is added by :func:`solve_hierarchical`.
"""
from __future__ import annotations

import heapq
import time
from dataclasses import dataclass, field

import numpy as np

from solvers.milp import SolveResult, heuristic_result, relative_gap, solve_cpsat

# ----------------------------------------------------------------------------- copy counts
def water_fill(weights: np.ndarray, total: int, cap: int | np.ndarray) -> np.ndarray:
    """Copy counts ``c[b, e]`` (>= 1, <= cap, each row summing to ``total``) that minimise the
    largest per-copy weight ``max_e w[b, e] / c[b, e]`` in every row.

    Bisection on the threshold ``t``: ``c(t) = clip(ceil(w / t), 1, cap)`` is the fewest copies
    keeping every copy at or below ``t``; the smallest feasible ``t`` is the optimum.  Slots left
    over go, one at a time, to the item with the largest weight per copy (the classic greedy),
    which keeps the min-max value and spreads the heaviest items further.

    Args:
        weights: ``[B, E]`` non-negative weights.
        total: copies per row, scalar or ``[B]`` (``E <= total <= sum(cap)``).
        cap: most copies of one item (scalar or ``[E]``).

    Raises:
        ValueError: when ``total`` is outside ``[E, sum(cap)]``.
    """
    w = np.asarray(weights, dtype=float)
    if w.ndim == 1:
        w = w[None, :]
    B, E = w.shape
    capv = np.broadcast_to(np.asarray(cap, dtype=np.int64), (E,)).astype(np.int64)
    total = np.broadcast_to(np.asarray(total, dtype=np.int64), (B,))
    if np.any(total < E) or np.any(total > int(capv.sum())):
        raise ValueError(f"total copies {total.min()}..{total.max()} outside [{E}, {int(capv.sum())}]")
    lo = np.max(w / capv, axis=1)  # no threshold below this is feasible
    hi = np.maximum(w.max(axis=1), lo)
    # rows where even the cap-forced threshold fits need no search
    done = _counts_at(w, lo, capv).sum(1) <= total
    hi = np.where(done, lo, hi)
    for _ in range(64):
        mid = 0.5 * (lo + hi)
        fits = _counts_at(w, mid, capv).sum(1) <= total
        hi = np.where(fits & ~done, mid, hi)
        lo = np.where(fits | done, lo, mid)
        if np.all((hi - lo) <= 1e-12 * np.maximum(hi, 1e-300)):
            break
    counts = _counts_at(w, hi, capv)
    if done.any():
        # those rows have many copies left over for the greedy below; first give every item
        # the copies whose share (as the greedy computes it) exceeds a threshold T, the
        # smallest T found by bisection that stays within the total: the greedy takes exactly
        # those first (shares above T before any at or below it; equal shares alike), so the
        # result is the same, in ~64 passes instead of one per copy
        d = np.nonzero(done)[0]
        wd, td = w[d], total[d]
        lo_d, hi_d = np.zeros(d.size), hi[d]
        for _ in range(64):
            mid = 0.5 * (lo_d + hi_d)
            fits = _counts_above(wd, mid, capv).sum(1) <= td
            hi_d = np.where(fits, mid, hi_d)
            lo_d = np.where(fits, lo_d, mid)
            if np.all((hi_d - lo_d) <= 1e-12 * np.maximum(hi_d, 1e-300)):
                break
        counts[d] = np.maximum(counts[d], _counts_above(wd, hi_d, capv))
    left = total - counts.sum(1)
    while np.any(left > 0):
        share = np.where(counts < capv, w / counts, -np.inf)
        # ties (e.g. zero weights) go to the item with fewer copies, then the lower index
        share = share - 1e-300 * counts
        # one copy at a time to the largest share is the same as one round to every item tied
        # at the largest share, lowest index first (an item's share drops once it has its
        # copy): one pass per distinct value instead of one per copy
        top = share.max(axis=1, keepdims=True)
        tied = (share == top) & np.isfinite(top) & (left > 0)[:, None]
        take = tied & (np.cumsum(tied, axis=1) <= left[:, None])
        if not take.any():
            raise ValueError("no item below its cap takes the copies left")
        counts += take
        left = left - take.sum(1)
    return counts


def _counts_above(w: np.ndarray, t: np.ndarray, capv: np.ndarray) -> np.ndarray:
    """``1 + #{c >= 1: w / c > t}`` per item (the float quotient, as :func:`water_fill`'s greedy
    compares shares), at most the item's cap: the copies that greedy hands out before any
    share at or below ``t``."""
    t = np.asarray(t, dtype=float)[:, None]
    top = (capv - 1)[None, :]
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        n = np.floor(np.where(t > 0, w / t, np.where(w > 0, np.inf, 0.0)))
    n = np.clip(np.nan_to_num(n, posinf=float(top.max())), 0, top).astype(np.int64)
    for _ in range(8):   # the estimate is off by at most one or two: settle on the exact count
        up = (n < top) & (w / (n + 1) > t)
        down = (n >= 1) & ~(w / np.maximum(n, 1) > t)
        if not (up.any() or down.any()):
            break
        n = n + up - down
    return n + 1


def _counts_at(w: np.ndarray, t: np.ndarray, capv: np.ndarray) -> np.ndarray:
    t = np.maximum(np.asarray(t, dtype=float)[:, None], 1e-300)
    c = np.ceil(w / t * (1 - 1e-12))
    return np.clip(c, 1, capv[None, :]).astype(np.int64)


def min_max_share(weights: np.ndarray, total: int, cap: int | np.ndarray) -> np.ndarray:
    """The optimal largest per-copy weight per row (the water-filling value)."""
    w = np.atleast_2d(np.asarray(weights, dtype=float))
    c = water_fill(w, total, cap)
    return (w / c).max(axis=1)


# ----------------------------------------------------------------------------- layouts
@dataclass(frozen=True)
class Bins:
    """Bins with their slot counts and speeds; slot ``r`` of a row lives in ``bin_of_slot[r]``.

    Slots are numbered bin by bin (bin 0's slots first), so with equal slots per bin slot ``r``
    lives in bin ``r // slots_per_bin``.
    """

    slots: np.ndarray
    speed: np.ndarray

    @staticmethod
    def make(slots, speed=None) -> "Bins":
        s = np.asarray(slots, dtype=np.int64).reshape(-1)
        sp = np.ones(len(s)) if speed is None else np.asarray(speed, dtype=float).reshape(-1)
        if len(sp) != len(s):
            raise ValueError("slots and speed differ in length")
        if np.any(s < 1) or np.any(sp <= 0):
            raise ValueError("every bin needs >= 1 slot and a positive speed")
        return Bins(s, sp)

    @property
    def count(self) -> int:
        return len(self.slots)

    @property
    def total_slots(self) -> int:
        return int(self.slots.sum())

    @property
    def start(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.slots)[:-1]])

    @property
    def bin_of_slot(self) -> np.ndarray:
        return np.repeat(np.arange(self.count), self.slots)


def bin_loads(weights: np.ndarray, slot_item: np.ndarray, bins: Bins) -> np.ndarray:
    """Load per bin ``[B, K]`` (weight units, not divided by speed) of a slot table."""
    w = np.atleast_2d(np.asarray(weights, dtype=float))
    B, E = w.shape
    counts = item_counts(slot_item, E)
    share = w / np.maximum(counts, 1)
    per_slot = np.take_along_axis(share, slot_item, axis=1)
    out = np.zeros((B, bins.count))
    np.add.at(out, (np.repeat(np.arange(B), slot_item.shape[1]),
                    np.tile(bins.bin_of_slot, B)), per_slot.reshape(-1))
    return out


def item_counts(slot_item: np.ndarray, num_items: int) -> np.ndarray:
    """Copies per item ``[B, E]`` in a slot table ``[B, R]``."""
    B = slot_item.shape[0]
    out = np.zeros((B, num_items), dtype=np.int64)
    np.add.at(out, (np.repeat(np.arange(B), slot_item.shape[1]), slot_item.reshape(-1)), 1)
    return out


def duplicate_rows(slot_item: np.ndarray, bins: Bins) -> np.ndarray:
    """Per row, the number of bins holding two or more copies of one item."""
    out = np.zeros(slot_item.shape[0], dtype=np.int64)
    for s0, s in zip(bins.start, bins.slots):
        block = np.sort(slot_item[:, s0:s0 + s], axis=1)
        out += np.any(block[:, 1:] == block[:, :-1], axis=1)
    return out


def duplicate_pairs(slot_item: np.ndarray, bins: Bins) -> int:
    """Number of (row, bin) pairs holding two or more copies of one item."""
    return int(duplicate_rows(slot_item, bins).sum())


# ----------------------------------------------------------------------------- bounds
def lower_bound(weights: np.ndarray, bins: Bins, cap: int | np.ndarray | None = None, *,
                deadline: float | None = None) -> np.ndarray:
    """Proven lower bound on the largest bin time ``max_k load_k / speed_k``, per row.

    Holds for every anti-affine placement into ``bins`` with any copy counts (>= 1 each, at
    most ``cap``, all slots used), and for placements with duplicates too, because a duplicate
    bin carries at least the share a single copy would.

    * mean: total weight / total speed;
    * water-filling: any item spread over at most ``m = min(cap, K)`` bins leaves a bin with at
      least ``w / m`` of it; with ``R`` slots the copy counts that minimise the largest share are
      the water-filling ones, so ``max share >= min_max_share(w, R, min(cap, K))``; that share
      sits on some bin, which clears it no faster than the fastest bin;
    * single copies (``R == E``): the bin with the heaviest item also fills its other
      ``min(slots) - 1`` slots, at least with the lightest other items.

    ``deadline`` (``time.perf_counter()``) only cuts :func:`heavy_items_bound` short (rows it
    did not reach keep the other parts, which are valid on their own).
    """
    w = np.atleast_2d(np.asarray(weights, dtype=float))
    B, E = w.shape
    K, R = bins.count, bins.total_slots
    capv = np.minimum(np.broadcast_to(np.asarray(K if cap is None else cap), (E,)), K)
    mean = w.sum(1) / bins.speed.sum()
    share = min_max_share(w, R, capv) / bins.speed.max()
    lb = np.maximum(mean, share)
    if R == E:
        smin = int(bins.slots.min())
        srt = np.sort(w, axis=1)
        heavy = srt[:, -1]
        light = srt[:, :smin - 1].sum(1) if smin > 1 else 0.0
        lb = np.maximum(lb, (heavy + light) / bins.speed.max())
    return np.maximum(lb, heavy_items_bound(w, bins, capv, deadline=deadline))


#: most copy-count combinations of the heaviest items enumerated by :func:`heavy_items_bound`
HEAVY_COMBOS = 4096
#: most combinations of the two heaviest items' counts (beyond: the heaviest item alone, so
#: that many bins with many spare slots cost neither minutes nor gigabytes)
HEAVY_PAIR_COMBOS = 16384
#: rows x combinations :func:`heavy_items_bound` evaluates at once (memory)
HEAVY_CHUNK = 1 << 20
#: the aggregate (h bins) argument of :func:`heavy_items_bound` runs up to this many bins (it
#: matters when few bins share heavy items; with many bins the mean bound dominates)
AGG_MAX_BINS = 16


def heavy_items_bound(weights: np.ndarray, bins: Bins, cap: np.ndarray,
                      top: int | None = None, deadline: float | None = None) -> np.ndarray:
    """Proven lower bound from the copy counts of the ``m`` heaviest items (``m`` = 3 or 2, or
    ``top``: :func:`solve_flat` asks for more on rows its heuristics leave above the bound).

    For any anti-affine placement, let the ``m`` heaviest items have ``n_1..n_m`` copies (each
    ``<= cap``, and ``sum n + (E - m) <= R`` since every other item needs a copy), pieces
    ``p_i = w_i / n_i``; the other items then share ``spare = R - sum n - (E - m)`` copies
    beyond their first.  Pigeonhole facts about the ``K`` bins, each holding an item at most
    once: every piece sits in some bin; two items with ``n_i + n_k > K`` share a bin; three with
    ``n_1 + n_2 + n_3 > 2K`` share one; some bin holds ``ceil(sum n / K)`` of these copies (at
    least its smallest pieces).  Such a bin also fills its other ``t`` slots (``t >= min(slots)``
    less the forced copies): ``j`` of them with top pieces (at least the ``j`` smallest; the
    pool admits the bin's own, a relaxation) and ``t - j`` with distinct other items, which
    weigh at least ``fill_table[spare, t - j]`` (the exact least total of ``t - j`` pieces of
    distinct other items sharing ``spare`` extra copies); we take the least over ``j``.
    Finally, for each prefix ``T`` of the top items, the ``h`` bins holding a copy of ``T``
    (``max n_T <= h <= min(K, sum n_T)``) carry all of ``T``'s weight plus the copies filling
    their other ``>= h * min(slots) - sum n_T`` slots, of which at most ``2 * spare_T`` come from
    split items (``spare_T = R - sum n_T - (E - |T|)`` copies beyond one for the others; a split
    item has at most twice as many pieces as extra copies), so the rest are whole distinct
    items, at least the lightest ones: the busiest of those bins carries at least the average.

    Patterns (``K <= PATTERN_MAX_BINS``): the set of top items each bin holds is, up to the
    order of the bins, one of the multisets of ``K`` subsets of the top items whose column sums
    are ``n``; all are enumerated.  For one pattern, bin ``k`` carries its top load
    ``L_k = sum_{i in k} p_i`` and ``>= min(slots) - q_k`` other copies (``q_k`` top items in
    it); take the ``h`` bins with the largest ``L_k``: together they carry ``sum L_k`` plus at
    least ``spread_fill[spare, sum (min(slots) - q_k)]`` (``fill_table`` for ``h = 1``), the
    least load of that many slots of ``h`` bins from distinct-per-bin other items sharing
    ``spare`` extra copies, so the busiest carries at least the average.  A combination ``n``
    forces the least of these values over its patterns (every placement with counts ``n``
    realises one of them).  E.g. an item of 5.2x the mean bin load with 4 copies and one of 2.6x
    with 2 on 4 bins: the two bins holding both carry 2.6 + 7 whole light items each.

    Loads become times on the fastest bin (``speed.max()``), and bins with more slots than
    ``min(slots)`` only carry more, so every value is a valid bound on the largest bin time.
    The bound is the minimum over all ``n`` of the largest forced value.  It catches what
    water-filling misses when a few heavy items share few bins (e.g. an item of 8x a bin's mean
    and one of 3.5x on 4 bins with 4 spare slots: the optimum keeps the second item whole).
    """
    from itertools import combinations

    w = np.atleast_2d(np.asarray(weights, dtype=float))
    B, E = w.shape
    K, R = bins.count, bins.total_slots
    spare_total = R - E
    capv = np.broadcast_to(np.asarray(cap), (E,))
    top_cap = int(min(int(np.max(capv)), K, spare_total + 1))
    if top is not None:
        m = min(top, E)
    else:
        m = min(3 if top_cap ** 3 <= HEAVY_COMBOS else
                (2 if top_cap ** 2 <= HEAVY_PAIR_COMBOS else 1), E)
    if m == 0 or top_cap < 1:
        return np.zeros(B)
    if B > 1 and B * top_cap ** m > HEAVY_CHUNK:
        # a few rows at a time (memory); rows not reached by the deadline get no bound here
        step = max(1, HEAVY_CHUNK // top_cap ** m)
        out = np.zeros(B)
        for i in range(0, B, step):
            if deadline is not None and time.perf_counter() > deadline:
                break
            out[i:i + step] = heavy_items_bound(w[i:i + step], bins, cap, top)
        return out
    order = np.argsort(-w, axis=1, kind="stable")
    top = np.take_along_axis(w, order[:, :m], 1)                     # [B, m]
    rest = np.sort(np.take_along_axis(w, order[:, m:], 1), axis=1)   # ascending [B, E-m]
    top_caps = np.minimum(np.take_along_axis(np.broadcast_to(capv, (B, E)), order[:, :m], 1),
                          top_cap)
    grids = np.meshgrid(*[np.arange(1, top_cap + 1)] * m, indexing="ij")
    n = np.stack([g.reshape(-1) for g in grids], axis=1)              # [C, m]
    C = n.shape[0]
    total_n = n.sum(1)
    spare = spare_total - (total_n - m)                               # copies left for others
    feasible = (spare >= 0)[None, :] & np.all(n[None, :, :] <= top_caps[:, None, :], axis=2)
    p = top[:, None, :] / n[None, :, :]                               # [B, C, m]
    ps = np.sort(p, axis=2)
    smin = int(bins.slots.min())
    # ps_c[..., j]: the j smallest top pieces (a relaxation: the bin's own may be among them)
    ps_c = np.concatenate([np.zeros((B, C, 1)), np.cumsum(ps, axis=2)], axis=2)
    cap_rest = int(np.max(capv))   # any other item's cap (a relaxation when caps differ)
    patterns = K <= PATTERN_MAX_BINS   # the per-bin pattern argument needs fills of h bins
    F1 = fill_table(rest, cap_rest, max(spare_total, 0), (K if patterns else 1) * smin)
    s_idx = _spare_index(spare, F1.shape[1])                          # [C]
    rows_b = np.arange(B)[:, None]

    def fill(k: np.ndarray | int) -> np.ndarray:
        """Least load of the ``smin - k`` other slots of a bin: ``j`` top pieces (the smallest)
        plus ``smin - k - j`` pieces of distinct other items sharing ``spare`` extra copies."""
        t = np.clip(smin - np.broadcast_to(np.asarray(k), (C,)), 0, None)          # [C]
        out = np.full((B, C), np.inf)
        for j in range(m + 1):
            ok = t >= j
            tj = np.where(ok, t - j, 0)
            cand = ps_c[:, :, j] + F1[rows_b, s_idx[None, :], tj[None, :]]
            out = np.where(ok[None, :], np.minimum(out, cand), out)
        return np.where(np.isfinite(out), out, 0.0)

    value = ps[:, :, -1] + fill(1)
    for i, k in combinations(range(m), 2):
        pair = np.where((n[:, i] + n[:, k] > K)[None, :], p[:, :, i] + p[:, :, k] + fill(2), 0.0)
        value = np.maximum(value, pair)
    if m == 3:
        value = np.maximum(value, np.where((total_n > 2 * K)[None, :], p.sum(2) + fill(3), 0.0))
    j = np.minimum(-(-total_n // K), m)
    core = np.take_along_axis(np.cumsum(ps, axis=2),
                              np.broadcast_to((j - 1)[None, :, None], (B, C, 1)), 2)[..., 0]
    value = np.maximum(value, core + fill(j))
    # for each prefix T of the top items: the h bins holding a copy of T carry all of T's
    # weight plus the copies filling their other >= h * min(slots) - sum n_T slots; at most
    # 2 * spare_T of those come from split items, so the rest are whole distinct items (the
    # lightest ones at least), and (spread_fill, few bins) they weigh at least
    # H[spare_T, slots]; the busiest of the h bins carries at least the average
    hs = np.arange(1, K + 1)
    for jt in range(1, m + 1 if K <= AGG_MAX_BINS else 1):
        nt = n[:, :jt]
        tot_t = nt.sum(1)
        spare_t = np.maximum(spare_total - (tot_t - jt), 0)                       # [C]
        h_ok = (hs[None, :] >= nt.max(1)[:, None]) & (hs[None, :] <= np.minimum(K, tot_t)[:, None])
        others = np.sort(np.concatenate([rest, top[:, jt:]], axis=1), axis=1)
        oc = np.concatenate([np.zeros((B, 1)), np.cumsum(others, axis=1)], axis=1)
        whole = np.clip(hs[None, :] * smin - tot_t[:, None] - 2 * spare_t[:, None], 0,
                        others.shape[1])                                           # [C, H]
        filled = oc[:, whole]                                                      # [B, C, H]
        if patterns:   # few bins (few combinations): the exact spread fill too
            need = np.clip(hs[None, :] * smin - tot_t[:, None], 0, None)          # [C, H]
            H = spread_fill(fill_table(others, cap_rest, max(spare_total, 0), int(need.max())))
            filled = np.maximum(filled, H[np.arange(B)[:, None, None],
                                          _spare_index(spare_t, H.shape[1])[None, :, None],
                                          need[None]])
        agg = (top[:, :jt].sum(1)[:, None, None] + filled) / hs[None, None, :]
        agg = np.where(h_ok[None, :, :], agg, np.inf).min(2)
        value = np.maximum(value, np.where(np.isfinite(agg), agg, 0.0))
    if patterns:
        value = np.maximum(value, _pattern_values(top, top_caps, n, top_cap, F1,
                                                  spread_fill(F1), spare_total, smin, K))
    best = np.where(feasible, value, np.inf).min(1)
    return np.where(np.isfinite(best), best, 0.0) / bins.speed.max()


#: extra copies up to which :func:`fill_table` is exact (beyond: every piece at its smallest)
FILL_EXACT_SPARE = 16
#: :func:`heavy_items_bound` enumerates which bins hold the heaviest items up to this many bins
PATTERN_MAX_BINS = 6


def fill_table(rest: np.ndarray, cap: int, spare_max: int, t_max: int) -> np.ndarray:
    """``F[b, s, t]``: the least total of ``t`` pieces of ``t`` distinct items of ``rest[b]``
    (sorted ascending) when those items have at most ``s`` copies beyond one each in all and
    at most ``cap`` copies each (an item with ``c`` copies has pieces ``w / c``).

    ``inf`` when ``t`` exceeds the number of items.  Exact for ``s <= S = min(spare_max,
    FILL_EXACT_SPARE)``; the last index ``S + 1`` holds the relaxation for any ``s`` (every piece
    ``w / cap``).  Proof of exactness: (1) the ``t`` lightest items are a best choice (swap a
    chosen item for a lighter unchosen one, copies and all: the sum does not grow); (2) giving
    an item its ``c``-th extra copy lowers its piece by ``w / (c (c + 1))``, decreasing in
    ``c``, so (separable convex allocation) the best ``s`` extra copies are the ``s`` largest
    of these gains over all (item, c), which come from the ``s`` heaviest of the ``t`` items
    and ``c <= s``; taking the largest gains never skips a larger gain of the same item.
    Vectorised over rows; ``O(B t_max S^2 log S)``.
    """
    r = np.atleast_2d(np.asarray(rest, dtype=float))
    B, M = r.shape
    S = int(max(0, min(spare_max, FILL_EXACT_SPARE)))
    lev = int(max(0, min(S, cap - 1)))
    ts = np.arange(t_max + 1)
    pref = np.concatenate([np.zeros((B, 1)), np.cumsum(r, axis=1)], axis=1)     # [B, M + 1]
    whole = pref[:, np.minimum(ts, M)]                                          # [B, T + 1]
    out = np.full((B, S + 2, t_max + 1), np.inf)
    gains = np.zeros((B, t_max + 1, S))
    if S and lev and M:
        idx = ts[:, None] - 1 - np.arange(S)[None, :]                           # [T + 1, S]
        cand = np.where((idx >= 0)[None], r[:, np.clip(idx, 0, M - 1)], 0.0)    # [B, T + 1, S]
        c = np.arange(1, lev + 1, dtype=float)
        g = (cand[..., None] / (c * (c + 1))).reshape(B, t_max + 1, -1)
        g = -np.sort(-g, axis=2)[..., :S]
        gains[..., :g.shape[2]] = g
    saved = np.concatenate([np.zeros((B, t_max + 1, 1)), np.cumsum(gains, axis=2)], axis=2)
    out[:, :S + 1, :] = np.transpose(whole[:, :, None] - saved, (0, 2, 1))
    out[:, S + 1, :] = whole / max(cap, 1)
    out[:, :, ts > M] = np.inf
    return out


def spread_fill(F: np.ndarray) -> np.ndarray:
    """``H[b, s, t] = min_{D <= s} F[b, s - D, t - D]``: the least load of ``t`` slots of *several*
    bins, each bin holding an item at most once, from items with ``s`` extra copies in all.

    Proof: say item ``f`` has ``c_f = 1 + e_f`` copies, ``a_f = 1 + d_f`` of them in those
    slots (``d_f <= e_f``); it adds ``w_f (1 + d_f) / (1 + e_f) >= w_f / (1 + e_f - d_f)``
    (since ``d_f (e_f - d_f) >= 0``).  With ``D = sum d_f <= s`` the slots hold ``t - D``
    distinct items whose reduced extra copies ``e_f - d_f`` sum to at most ``s - D``: at least
    ``F[s - D, t - D]``.  The last (relaxed) index of ``F`` gives no bound here (0).
    """
    H = F.copy()
    S = F.shape[1] - 2
    for D in range(1, S + 1):
        H[:, D:S + 1, D:] = np.minimum(H[:, D:S + 1, D:], F[:, :S + 1 - D, :-D])
    H[:, S + 1, :] = 0.0
    return H


def _spare_index(spare: np.ndarray, layers: int) -> np.ndarray:
    """Index into :func:`fill_table`'s spare axis: exact layer, or the relaxed last one."""
    s = np.maximum(np.asarray(spare), 0)
    return np.where(s > layers - 2, layers - 1, s).astype(np.int64)


_PATTERNS: dict = {}
#: most patterns :func:`pattern_top` lets a finer bound enumerate
PATTERN_LIMIT = 60000


def pattern_top(K: int, most: int = 5) -> int:
    """The most top items (<= ``most``) whose bin patterns on ``K`` bins stay within
    ``PATTERN_LIMIT`` (multisets of ``K`` subsets: ``C(2^m + K - 1, K)``)."""
    from math import comb

    m = 1
    while m < most and comb((1 << (m + 1)) + K - 1, K) <= PATTERN_LIMIT:
        m += 1
    return m


def _top_patterns(K: int, m: int, top_cap: int, most: int):
    """Which of the ``m`` top items each of ``K`` interchangeable bins holds: ``bits[P, K, m]``
    (one multiset of bin contents per pattern) and the copy counts ``n[P, m]`` (1..top_cap,
    at most ``most`` copies in all),
    grouped by counts: the distinct count combinations (flat index) and where each group starts."""
    from itertools import combinations_with_replacement

    key = (K, m, top_cap, most)
    if key not in _PATTERNS:
        masks = np.array(list(combinations_with_replacement(range(1 << m), K)), dtype=np.int64)
        bits = (masks[..., None] >> np.arange(m)) & 1                          # [P, K, m]
        n = bits.sum(1)
        keep = np.all((n >= 1) & (n <= top_cap), axis=1) & (n.sum(1) <= most)
        bits, n = bits[keep], n[keep]
        combo = np.ravel_multi_index(tuple((n - 1).T), (top_cap,) * m)
        order = np.argsort(combo, kind="stable")        # patterns grouped by copy counts
        combo = combo[order]
        first = np.nonzero(np.r_[True, combo[1:] != combo[:-1]])[0]
        _PATTERNS[key] = (bits[order].astype(float), n[order], combo[first], first)
    return _PATTERNS[key]


def _pattern_values(top: np.ndarray, top_caps: np.ndarray, n_grid: np.ndarray, top_cap: int,
                    F1: np.ndarray, Fh: np.ndarray, spare_total: int, smin: int,
                    K: int) -> np.ndarray:
    """Per row and copy-count combination of the top items (``n_grid`` rows), the least over
    the ways of putting those copies into the bins of the largest forced average load of the
    ``h`` bins with the most top load (see :func:`heavy_items_bound`); ``[B, C]``."""
    B, m = top.shape
    bits, n, combos, first = _top_patterns(K, m, top_cap, m + max(spare_total, 0))
    spare = spare_total - (n.sum(1) - m)                                       # [P]
    ok = (spare >= 0)[None, :] & np.all(n[None] <= top_caps[:, None, :], axis=2)   # [B, P]
    load = np.einsum("pkm,bpm->bpk", bits, top[:, None, :] / n[None])           # [B, P, K]
    q = np.broadcast_to(bits.sum(2), load.shape)
    order = np.argsort(-load, axis=2, kind="stable")
    cum_load = np.cumsum(np.take_along_axis(load, order, 2), axis=2)
    hs = np.arange(1, K + 1)
    slots = np.clip(hs * smin - np.cumsum(np.take_along_axis(q, order, 2), axis=2), 0,
                    F1.shape[2] - 1).astype(np.int64)
    s_idx = _spare_index(spare, F1.shape[1])[None, :, None]
    rb = np.arange(B)[:, None, None]
    fill = np.where(hs == 1, F1[rb, s_idx, slots], Fh[rb, s_idx, slots])
    val = np.where(ok, ((cum_load + fill) / hs).max(2), np.inf)                 # [B, P]
    out = np.full((B, n_grid.shape[0]), np.inf)    # counts no pattern realises: impossible
    if first.size:
        out[:, combos] = np.minimum.reduceat(val, first, axis=1)
    return out


# ----------------------------------------------------------------------------- packing
def expand_copies(weights: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Copy list per row: item ``[B, R]`` and per-copy weight ``[B, R]``, heaviest first."""
    w = np.atleast_2d(np.asarray(weights, dtype=float))
    B, E = w.shape
    R = int(counts[0].sum())
    item = np.empty((B, R), dtype=np.int64)
    ar = np.arange(E)
    for b in range(B):
        item[b] = np.repeat(ar, counts[b])
    load = np.take_along_axis(w / counts, item, axis=1)
    # heaviest first; copies of one item stay adjacent (stable sort on equal loads)
    order = np.argsort(-load, axis=1, kind="stable")
    return np.take_along_axis(item, order, 1), np.take_along_axis(load, order, 1)


def lpt_pack(weights: np.ndarray, counts: np.ndarray, bins: Bins) -> np.ndarray:
    """Greedy LPT with anti-affinity, all rows at once; returns the slot table ``[B, R]``.

    Copies go heaviest first to the bin with the smallest resulting time among bins with a free
    slot that do not hold the item yet.  When none qualifies (rare: only possible for the last,
    lightest copies) the copy goes to the emptiest bin with a free slot and
    :func:`repair_duplicates` fixes it afterwards.
    """
    w = np.atleast_2d(np.asarray(weights, dtype=float))
    B, E = w.shape
    K, R = bins.count, bins.total_slots
    item, load = expand_copies(w, counts)
    rows = np.arange(B)
    loads = np.zeros((B, K))
    free = np.broadcast_to(bins.slots, (B, K)).copy()
    full = free <= 0
    has = np.zeros((B, E, K), dtype=bool)   # item-major: has[rows, it] is one contiguous row
    fill = np.zeros((B, K), dtype=np.int64)
    slot_item = np.empty((B, R), dtype=np.int64)
    start = bins.start
    inv_speed = 1.0 / bins.speed
    uniform = bool(np.all(bins.speed == 1.0))   # x * 1.0 == x: skip the product
    for j in range(R):
        it = item[:, j]
        ld = load[:, j]
        score = loads + ld[:, None]
        if not uniform:
            score *= inv_speed
        score[full | has[rows, it]] = np.inf
        k = np.argmin(score, axis=1)
        bad = ~np.isfinite(score[rows, k])
        if bad.any():
            alt = np.argmin(np.where(free > 0, loads * inv_speed, np.inf), axis=1)
            k = np.where(bad, alt, k)
        loads[rows, k] += ld
        free[rows, k] -= 1
        full[rows, k] = free[rows, k] <= 0
        has[rows, it, k] = True
        slot_item[rows, start[k] + fill[rows, k]] = it
        fill[rows, k] += 1
    if duplicate_pairs(slot_item, bins):
        slot_item = repair_duplicates(w, slot_item, bins)
    return slot_item


def repair_duplicates(weights: np.ndarray, slot_item: np.ndarray, bins: Bins) -> np.ndarray:
    """Swap away second copies of an item in one bin (the partner with the closest load)."""
    w = np.atleast_2d(np.asarray(weights, dtype=float))
    slot_item = slot_item.copy()
    bos = bins.bin_of_slot
    E = w.shape[1]
    for b in range(slot_item.shape[0]):
        row = slot_item[b]
        for _ in range(row.size):
            dups = _duplicate_slots(row, bos, E)
            if dups.size == 0:
                break
            r = int(dups[0])
            k, x = bos[r], row[r]
            present = np.zeros((bins.count, E), dtype=bool)
            present[bos, row] = True
            # partner slots s in other bins: x not in bin(s), row[s] not in bin k
            ok = (bos != k) & ~present[bos, x] & ~present[k, row]
            if not ok.any():
                raise ValueError("no swap removes a duplicate copy (cap larger than the bins?)")
            share = w[b] / np.bincount(row, minlength=E)
            s = int(np.argmin(np.where(ok, np.abs(share[row] - share[x]), np.inf)))
            row[r], row[s] = row[s], row[r]
    return slot_item


def _duplicate_slots(row: np.ndarray, bos: np.ndarray, num_items: int) -> np.ndarray:
    """Slots holding a second (third...) copy of an item already in their bin."""
    key = bos * num_items + row
    order = np.argsort(key, kind="stable")
    sk = key[order]
    return order[1:][sk[1:] == sk[:-1]]


def improve_swaps(weights: np.ndarray, slot_item: np.ndarray, bins: Bins, *,
                  deadline: float | None = None, max_iter: int = 100000,
                  target: np.ndarray | None = None, partner_bins: int = 12) -> np.ndarray:
    """Steepest-descent pair swaps between the busiest bin and any other bin, all rows at once.

    A swap exchanges copy ``a`` (busiest bin ``g``) with copy ``x`` (bin ``h``); it is taken
    when both new times are below ``g``'s old time, choosing the swap with the smallest larger
    new time, and never when it would put two copies of one item in a bin.  Partners are first
    sought in the ``partner_bins`` least-loaded bins (cheap, and where the good swaps are), then
    in all bins for rows where that found nothing.  Rows stop when no swap helps, when they
    reach ``target`` (e.g. the lower bound), or at ``deadline`` (``time.perf_counter()``).
    Copy counts and slot counts never change.
    """
    w = np.atleast_2d(np.asarray(weights, dtype=float))
    slot_item = slot_item.copy()
    B, E = w.shape
    K, R = bins.count, bins.total_slots
    bos = bins.bin_of_slot
    counts = item_counts(slot_item, E)
    share = w / np.maximum(counts, 1)
    inv_speed = 1.0 / bins.speed
    smax = int(bins.slots.max())
    start = bins.start
    # per bin, the slot ids padded to smax (padding points at the bin's first slot, masked)
    pad_idx = start[:, None] + np.minimum(np.arange(smax)[None, :], bins.slots[:, None] - 1)
    pad_ok = np.arange(smax)[None, :] < bins.slots[:, None]
    slot_load = np.take_along_axis(share, slot_item, 1)
    loads = np.zeros((B, K))
    np.add.at(loads, (np.repeat(np.arange(B), R), np.tile(bos, B)), slot_load.reshape(-1))
    has = np.zeros((B, K, E), dtype=bool)
    has[np.repeat(np.arange(B), R), np.tile(bos, B), slot_item.reshape(-1)] = True
    active = np.ones(B, dtype=bool)
    tgt = None if target is None else np.asarray(target, dtype=float)
    few = partner_bins if 0 < partner_bins < K - 1 else None

    def best_swaps(idx, g, tg, cand):
        """Best swap per row among candidate partner slots ``cand`` [n, C] (-1 = none)."""
        n = idx.size
        a_slot = pad_idx[g]
        a_ok = pad_ok[g]
        a_item = slot_item[idx[:, None], a_slot]
        a_load = slot_load[idx[:, None], a_slot]
        c_ok = cand >= 0
        cs = np.maximum(cand, 0)
        x_item = slot_item[idx[:, None], cs]
        x_load = slot_load[idx[:, None], cs]
        h = bos[cs]
        d = a_load[:, :, None] - x_load[:, None, :]
        new_g = (loads[idx, g][:, None, None] - d) * inv_speed[g][:, None, None]
        new_h = (loads[idx[:, None], h][:, None, :] + d) * inv_speed[h][:, None, :]
        valid = (d > 0) & a_ok[:, :, None] & (c_ok & (h != g[:, None]))[:, None, :]
        valid &= ~has[idx[:, None], g[:, None], x_item][:, None, :]
        valid &= ~has[idx[:, None, None], h[:, None, :], a_item[:, :, None]]
        worst = np.where(valid, np.maximum(new_g, new_h), np.inf).reshape(n, -1)
        best = np.argmin(worst, axis=1)
        bval = worst[np.arange(n), best]
        ai, xi = np.divmod(best, cs.shape[1])
        return bval < tg * (1 - 1e-12), a_slot[np.arange(n), ai], cs[np.arange(n), xi]

    for _ in range(max_iter):
        idx = np.nonzero(active)[0]
        if idx.size == 0 or (deadline is not None and time.perf_counter() > deadline):
            break
        t = loads[idx] * inv_speed
        g = np.argmax(t, axis=1)
        tg = t[np.arange(idx.size), g]
        if tgt is not None:
            keep = tg > tgt[idx]
            active[idx[~keep]] = False
            idx, g, tg, t = idx[keep], g[keep], tg[keep], t[keep]
            if idx.size == 0:
                break
        if few is not None:
            light = np.argsort(t, axis=1, kind="stable")[:, :few]             # [n, few]
            cand = np.where(pad_ok[light], pad_idx[light], -1).reshape(idx.size, -1)
            improve, sa, sx = best_swaps(idx, g, tg, cand)
            miss = np.nonzero(~improve)[0]
            for part in _row_chunks(miss, 8 * smax * R):   # every slot: a few rows at a time
                full = np.broadcast_to(np.arange(R), (part.size, R))
                imp2, sa2, sx2 = best_swaps(idx[part], g[part], tg[part], full)
                improve[part], sa[part], sx[part] = imp2, sa2, sx2
        else:
            improve = np.zeros(idx.size, dtype=bool)
            sa = np.zeros(idx.size, dtype=np.int64)
            sx = np.zeros(idx.size, dtype=np.int64)
            for part in _row_chunks(np.arange(idx.size), 8 * smax * R):
                full = np.broadcast_to(np.arange(R), (part.size, R))
                improve[part], sa[part], sx[part] = best_swaps(idx[part], g[part], tg[part], full)
        active[idx[~improve]] = False
        if not improve.any():
            continue
        sel = np.nonzero(improve)[0]
        rows, sa, sx = idx[sel], sa[sel], sx[sel]
        gk, hk = bos[sa], bos[sx]
        ia, ix = slot_item[rows, sa], slot_item[rows, sx]
        la, lx = slot_load[rows, sa], slot_load[rows, sx]
        slot_item[rows, sa], slot_item[rows, sx] = ix, ia
        slot_load[rows, sa], slot_load[rows, sx] = lx, la
        loads[rows, gk] += lx - la
        loads[rows, hk] += la - lx
        has[rows, gk, ia] = False
        has[rows, hk, ix] = False
        has[rows, gk, ix] = True
        has[rows, hk, ia] = True
    return slot_item



def _spread_spare_copies(c: np.ndarray, left: np.ndarray, w: np.ndarray, capv: np.ndarray) -> None:
    """Give ``left[b]`` more copies in row ``b`` of ``c`` (in place), one at a time, to the items
    with the fewest copies (lightest first among equals) below their cap, so that the fillers stay
    distinct: many copies of one light item would collide in the bins."""
    left = np.asarray(left).copy()
    never = np.iinfo(np.int64).max
    while np.any(left > 0):
        below = c < capv[None, :]
        fewest = np.where(below, c, never).min(1, keepdims=True)
        # fewest copies first, then the lightest, then the lowest index (no scale involved);
        # every item with the fewest copies gets one in that order before any gets a second,
        # so a whole round is given at once
        group = below & (c == fewest) & (left > 0)[:, None]
        if not group.any():
            raise ValueError("no item below its cap takes the spare copies")
        order = np.argsort(np.where(group, w, np.inf), axis=1, kind="stable")
        ranked = np.take_along_axis(group, order, 1)
        take = np.zeros_like(group)
        np.put_along_axis(take, order, ranked & (np.cumsum(ranked, axis=1) <= left[:, None]), 1)
        c += take
        left = left - take.sum(1)

def threshold_counts(weights: np.ndarray, total: int, cap: np.ndarray,
                     threshold: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Copy counts that keep every copy at or below ``threshold[b]``, the slots left over going
    to the items with the lightest copies (fine filler that packs well).

    Water-filling spends every spare slot on the heaviest items, which minimises the largest
    copy but can leave many copies just above half a bin, which pair badly.  Capping copies
    near a bin's share instead gives one large copy per bin plus light filler.  Returns the
    counts and a mask of the rows where the threshold was reachable with ``total`` copies
    (other rows get the water-filling counts).
    """
    w = np.atleast_2d(np.asarray(weights, dtype=float))
    B, E = w.shape
    capv = np.broadcast_to(np.asarray(cap, dtype=np.int64), (E,))
    t = np.maximum(np.asarray(threshold, dtype=float), 1e-300)[:, None]
    c = np.clip(np.ceil(w / t * (1 - 1e-12)), 1, capv[None, :]).astype(np.int64)
    ok = (c.sum(1) <= total) & np.all(w / capv[None, :] <= t * (1 + 1e-12), axis=1)
    if not ok.all():
        c[~ok] = water_fill(w[~ok], total, capv)
    _spread_spare_copies(c, total - c.sum(1), w, capv)  # spare slots
    return c, ok


@dataclass
class Solution:
    """A placement for every row, with its proven bounds.

    Attributes:
        slot_item: ``[B, R]`` item held by each slot (slots numbered bin by bin).
        bins: the bins.
        bound: ``[B]`` proven lower bound on the largest bin time of any valid placement.
        domain_bound: ``[B]`` the domain-level part of ``bound`` (hierarchy only), else None.
        method: ``[B]`` which heuristic / solver produced each row.
        result: aggregate :class:`SolveResult`; objective = sum over rows of the largest bin
            time, bound = sum of the row bounds.
    """

    slot_item: np.ndarray
    bins: Bins
    bound: np.ndarray
    domain_bound: np.ndarray | None = None
    method: list[str] = field(default_factory=list)
    result: SolveResult | None = None


def bin_times(weights: np.ndarray, slot_item: np.ndarray, bins: Bins) -> np.ndarray:
    """Bin time ``load / speed`` per row and bin ``[B, K]``."""
    return bin_loads(weights, slot_item, bins) / bins.speed[None, :]


#: copy thresholds tried (fractions of the mean bin load) when water-filling counts pack badly
THRESHOLDS = (0.8, 0.9, 0.7, 0.95, 0.6, 1.0, 0.5)


def solve_flat(weights: np.ndarray, bins: Bins, *, cap: int | np.ndarray | None = None,
               time_limit_s: float | None = 10.0, tol: float = 1e-3,
               thresholds=THRESHOLDS, cpsat_time_s: float = 0.0) -> Solution:
    """Balance every row: copy counts, anti-affine LPT, swap descent; portfolio over counts.

    Rows still more than ``tol`` above their bound are retried with other copy counts
    (thresholds, piece sizes, the heaviest items' counts enumerated, single copy moves), get a
    finer bound on few bins (more heavy items in :func:`heavy_items_bound`), and, when
    ``cpsat_time_s > 0``, refined with CP-SAT worst row first (the time shared among them).  Deterministic for a given input (the time limit only cuts work short).

    The time limit covers everything but the first placement of every row (water-filling
    counts, LPT, which always completes): the heavy-items part of the bound gets up to half of
    it (rows it does not reach keep the simpler bounds), and every later stage works on a few
    rows at a time and stops at the limit.
    """
    start = time.perf_counter()
    deadline = None if time_limit_s is None else start + float(time_limit_s)
    bound_deadline = None if time_limit_s is None else start + 0.5 * float(time_limit_s)
    w = np.atleast_2d(np.asarray(weights, dtype=float))
    B, E = w.shape
    K, R = bins.count, bins.total_slots
    capv = np.minimum(np.broadcast_to(np.asarray(K if cap is None else cap, dtype=np.int64), (E,)), K)
    if R < E or R > int(capv.sum()):
        raise ValueError(f"{R} slots cannot hold {E} items with 1..{int(capv.max())} copies each")
    lb = lower_bound(w, bins, capv, deadline=bound_deadline)
    target = lb * (1 + tol) * (1 + 1e-9)   # the same test improve_swaps stops on
    counts = water_fill(w, R, capv)
    slot_item, _ = _pack_rows(w, counts, bins, deadline, target, complete=True)
    obj = bin_times(w, slot_item, bins).max(1)
    method = ["water-filling+lpt+swaps"] * B
    tried = [{counts[r].tobytes()} for r in range(B)]
    mean_time = w.sum(1) / bins.speed.sum()
    # (a) copies capped near a fraction of the mean bin load: one large copy per bin + filler
    stages = [(f"threshold{theta:g}", theta * mean_time) for theta in thresholds]
    # (b) copies capped at the piece sizes just above the bound: keeps a heavy item whole when
    #     splitting it would force two heavy pieces into one bin
    floor = (w / counts).max(1) / bins.speed.max()  # the water-filling largest piece
    stages += [(f"piece{j + 1}", t) for j, t in enumerate(_piece_thresholds(w, capv, floor, obj))]
    for name, thr in stages:
        todo = np.nonzero((obj > target) & np.isfinite(thr) & (thr < obj))[0]
        if todo.size == 0:
            continue
        if deadline is not None and time.perf_counter() > deadline:
            break
        c, ok = threshold_counts(w[todo], R, capv, thr[todo] * bins.speed.max())
        fresh = np.array([ok[i] and _first_try(tried[r], c[i]) for i, r in enumerate(todo)],
                         dtype=bool)   # skip count vectors this row has packed already
        todo, c = todo[fresh], c[fresh]
        if todo.size == 0:
            continue
        cand, done = _pack_rows(w[todo], c, bins, deadline, target[todo])
        cobj = _row_times(w[todo], cand, bins, done)
        better = cobj < obj[todo] * (1 - 1e-12)
        for i in np.nonzero(better)[0]:
            r = todo[i]
            slot_item[r], obj[r] = cand[i], cobj[i]
            method[r] = f"{name}+lpt+swaps"
    # (c) few bins: enumerate the copy counts of the heaviest items (the same combinations the
    #     bound enumerates), water-fill the rest, pack each combination, keep the best
    todo = np.nonzero(obj > target)[0]
    for part in _row_chunks(todo, 2 * ENUM_COMBOS * E):
        if deadline is not None and time.perf_counter() > deadline:
            break
        cand_rows, cand_counts = _heavy_count_combos(w[part], R, capv)
        _adopt_best_counts(w, bins, part, cand_rows, cand_counts, tried, target, deadline,
                           slot_item, obj, method, "heavy-counts+lpt+swaps")
    # (d) rows still above target: move one copy from an item that loses little by it to one
    #     of the items with the largest pieces (e.g. split a mid-sized item that otherwise
    #     lands whole beside a heavy piece), repacked; a few rounds from the best so far
    for _ in range(COUNT_MOVE_ROUNDS):
        todo = np.nonzero(obj > target)[0]
        if todo.size == 0 or (deadline is not None and time.perf_counter() > deadline):
            break
        improved = False
        for part in _row_chunks(todo, E * (K + COUNT_MOVE_FROM * (COUNT_MOVE_TO +
                                                                  int(bins.slots.max())))):
            if deadline is not None and time.perf_counter() > deadline:
                break
            busy = np.argmax(bin_times(w[part], slot_item[part], bins), axis=1)
            held = bin_sets(slot_item[part], bins, E)[np.arange(part.size), busy] > 0   # [n, E]
            cand_rows, cand_counts = _count_moves(w[part], item_counts(slot_item[part], E), capv,
                                                  held)
            improved |= _adopt_best_counts(w, bins, part, cand_rows, cand_counts, tried, target,
                                           deadline, slot_item, obj, method,
                                           "count-moves+lpt+swaps")
        if not improved:
            break
    # (e) few bins, rows still above target: a finer bound (more top items in the patterns)
    todo = np.nonzero(obj > target)[0]
    if todo.size and K <= PATTERN_MAX_BINS and (deadline is None or time.perf_counter() < deadline):
        lb[todo] = np.maximum(lb[todo], heavy_items_bound(w[todo], bins, capv, top=pattern_top(K),
                                                          deadline=deadline))
    used_cpsat = False
    if cpsat_time_s > 0:
        cp_end = time.perf_counter() + cpsat_time_s
        if deadline is not None:
            cp_end = min(cp_end, deadline)
        todo = [r for r in np.argsort(-(obj / np.maximum(lb, 1e-300)), kind="stable")
                if obj[r] > target[r]]
        for i, r in enumerate(todo):
            left = cp_end - time.perf_counter()
            if left < 0.05:
                break
            new, res = refine_cpsat(w[r], bins, capv, slot_item[r],
                                    time_limit_s=max(0.05, left / (len(todo) - i)))
            used_cpsat = used_cpsat or res.backend.startswith("cp-sat/")
            if res.bound is not None and res.backend == "cp-sat/counts":
                lb[r] = max(lb[r], res.bound)
            if new is not None:
                nobj = bin_times(w[r:r + 1], new[None, :], bins).max()
                if nobj < obj[r] * (1 - 1e-12):
                    slot_item[r], obj[r] = new, nobj
                    method[r] = "cp-sat"
    elapsed = time.perf_counter() - start
    res = _aggregate(obj, lb, elapsed, "cp-sat+heuristic" if used_cpsat else "lpt+swaps",
                     time_limit_s)
    return Solution(slot_item, bins, lb, None, method, res)


#: rounds of single copy moves between items tried by :func:`solve_flat` on rows above target
COUNT_MOVE_ROUNDS = 2
#: rows x items x bins that :func:`_pack_rows` packs at once, and the size of the row chunks of
#: the other per-row stages of :func:`solve_flat` (memory, and how often the time is checked)
PACK_CHUNK = 1 << 24


def _row_chunks(rows: np.ndarray, per_row: int) -> list[np.ndarray]:
    """``rows`` in consecutive pieces of at most ``PACK_CHUNK // per_row`` (at least one)."""
    step = max(1, PACK_CHUNK // max(int(per_row), 1))
    return [rows[i:i + step] for i in range(0, rows.size, step)]


def _pack_rows(w: np.ndarray, counts: np.ndarray, bins: Bins, deadline: float | None,
               target: np.ndarray, complete: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """LPT then swap descent (:func:`lpt_pack`, :func:`improve_swaps`) for every row, a few rows
    at a time; between pieces it stops at ``deadline`` unless ``complete``.  Returns the tables
    and which rows were packed (rows not reached hold zeros)."""
    n = w.shape[0]
    out = np.zeros((n, bins.total_slots), dtype=np.int64)
    done = np.zeros(n, dtype=bool)
    for part in _row_chunks(np.arange(n), w.shape[1] * bins.count):
        if part[0] and not complete and deadline is not None and time.perf_counter() > deadline:
            break
        out[part] = improve_swaps(w[part], lpt_pack(w[part], counts[part], bins), bins,
                                  deadline=deadline, target=target[part])
        done[part] = True
    return out, done


def _row_times(w: np.ndarray, tables: np.ndarray, bins: Bins, done: np.ndarray) -> np.ndarray:
    """Largest bin time of each packed row (inf for rows :func:`_pack_rows` did not reach)."""
    out = np.full(w.shape[0], np.inf)
    if done.any():
        out[done] = bin_times(w[done], tables[done], bins).max(1)
    return out


def _adopt_best_counts(w, bins, todo, cand_rows, cand_counts, tried, target, deadline,
                       slot_item, obj, method, name) -> bool:
    """Pack candidate copy counts (``cand_rows`` index ``todo``) with LPT + swaps, skipping
    count vectors a row has packed already; each row adopts its best candidate when it beats
    the row's current objective (``slot_item``, ``obj``, ``method`` updated in place).
    Returns whether any row improved."""
    keep = np.array([_first_try(tried[todo[i]], c) for i, c in zip(cand_rows, cand_counts)],
                    dtype=bool)
    cand_rows, cand_counts = cand_rows[keep], cand_counts[keep]
    if cand_rows.size == 0:
        return False
    cw = w[todo][cand_rows]
    cand, done = _pack_rows(cw, cand_counts, bins, deadline, target[todo][cand_rows])
    cobj = _row_times(cw, cand, bins, done)
    improved = False
    for i in range(todo.size):
        mine = np.nonzero(cand_rows == i)[0]
        if mine.size == 0:
            continue
        k = mine[np.argmin(cobj[mine])]
        r = todo[i]
        if cobj[k] < obj[r] * (1 - 1e-12):
            slot_item[r], obj[r] = cand[k], cobj[k]
            method[r] = name
            improved = True
    return improved


#: items a copy may leave / join per row in :func:`_count_moves`
COUNT_MOVE_FROM, COUNT_MOVE_TO = 4, 6


def _count_moves(w: np.ndarray, counts: np.ndarray, capv: np.ndarray, busy: np.ndarray):
    """Copy counts one move away from ``counts``: a copy leaves one of the ``COUNT_MOVE_FROM``
    items whose piece grows least by it (``>= 2`` copies) and joins an item below its cap that
    is one of the ``COUNT_MOVE_TO`` with the largest pieces or sits in the busiest bin
    (``busy[b, e]``: splitting it lightens that bin).  Returns (row index per candidate,
    counts)."""
    B, E = w.shape
    c = counts.astype(float)
    grow = np.where(counts >= 2, w / np.maximum(c - 1, 1) - w / c, np.inf)
    piece = np.where(counts < capv[None, :], w / c, -np.inf)
    src = np.argsort(grow, axis=1, kind="stable")[:, :COUNT_MOVE_FROM]
    dst = np.zeros((B, E), dtype=bool)
    np.put_along_axis(dst, np.argsort(-piece, axis=1, kind="stable")[:, :COUNT_MOVE_TO], True, 1)
    dst = (dst | busy) & np.isfinite(piece)
    rows, out = [], []
    for b in range(B):
        for x in src[b]:
            if not np.isfinite(grow[b, x]):
                continue
            for y in np.nonzero(dst[b])[0]:
                if x == y:
                    continue
                new = counts[b].copy()
                new[x] -= 1
                new[y] += 1
                rows.append(b)
                out.append(new)
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros((0, E), dtype=np.int64)
    return np.asarray(rows, dtype=np.int64), np.asarray(out, dtype=np.int64)


#: most copy-count combinations of the heaviest items tried per row by :func:`solve_flat`
ENUM_COMBOS = 64


def _heavy_count_combos(w: np.ndarray, total: int, capv: np.ndarray):
    """All copy counts for the ``m`` heaviest items (``top_cap ** m <= ENUM_COMBOS``), the
    other items either water-filled into the remaining slots or kept whole with the spares as
    filler.  Returns (row index per candidate, counts)."""
    B, E = w.shape
    top_cap = int(min(int(capv.max()), total - E + 1))
    m = 3 if top_cap ** 3 <= ENUM_COMBOS else (2 if top_cap ** 2 <= ENUM_COMBOS else 0)
    m = min(m, E)
    empty = np.zeros(0, dtype=np.int64), np.zeros((0, E), dtype=np.int64)
    if m == 0 or top_cap <= 1 or E == m:
        return empty
    grids = np.meshgrid(*[np.arange(1, top_cap + 1)] * m, indexing="ij")
    n = np.stack([g.reshape(-1) for g in grids], axis=1)               # [C, m]
    order = np.argsort(-w, axis=1, kind="stable")
    top, rest = order[:, :m], order[:, m:]
    rest_total = total - n.sum(1)                                       # [C]
    ok = (rest_total[None, :] >= E - m) & \
        (rest_total[None, :] <= capv[rest].sum(1)[:, None]) & \
        np.all(n[None, :, :] <= capv[top][:, None, :], axis=2)          # [B, C]
    rows, ci = np.nonzero(ok)
    if rows.size == 0:
        return empty
    rw = np.take_along_axis(w, rest, 1)[rows]                           # [N, E - m]
    rc = capv[rest][rows]
    if not np.all(rc == rc[:1]):
        return empty   # per-item caps that differ: keep this stage simple and skip it
    tot = rest_total[ci]
    base = np.zeros((rows.size, E), dtype=np.int64)
    np.put_along_axis(base, top[rows], n[ci], 1)
    c1, c2 = base.copy(), base
    np.put_along_axis(c1, rest[rows], water_fill(rw, tot, rc[0]), 1)
    np.put_along_axis(c2, rest[rows], _filler_counts(rw, tot, rc[0]), 1)
    return np.concatenate([rows, rows]), np.concatenate([c1, c2])


def _filler_counts(w: np.ndarray, total: np.ndarray, capv: np.ndarray) -> np.ndarray:
    """One copy each, spare copies one at a time to the lightest items with the fewest copies."""
    B, E = w.shape
    c = np.ones((B, E), dtype=np.int64)
    left = np.asarray(total) - E
    _spread_spare_copies(c, left, w, capv)
    return c


#: piece-size thresholds tried per row by :func:`solve_flat`
PIECE_CANDIDATES = 8


def _piece_thresholds(w: np.ndarray, capv: np.ndarray, floor: np.ndarray,
                      obj: np.ndarray) -> list[np.ndarray]:
    """Per row, candidate copy-size caps (bin-time units with the fastest bin): the distinct
    piece sizes ``w_e / n`` in ``[floor, obj)``, the ``PIECE_CANDIDATES / 2`` largest and the
    same number of smallest; padded with inf; one array per stage (rows a few at a time:
    the candidates take rows x items x copies)."""
    B, E = w.shape
    step = max(1, PACK_CHUNK // (4 * E * int(capv.max())))
    cols = np.concatenate([_piece_columns(w[i:i + step], capv, floor[i:i + step], obj[i:i + step])
                           for i in range(0, B, step)], axis=1)
    return [c for c in cols if np.isfinite(c).any()]


def _piece_columns(w: np.ndarray, capv: np.ndarray, floor: np.ndarray,
                   obj: np.ndarray) -> np.ndarray:
    """:func:`_piece_thresholds` for some rows: ``[PIECE_CANDIDATES, rows]``, inf padded."""
    B, E = w.shape
    cmax = int(capv.max())
    n = np.arange(1, cmax + 1, dtype=float)
    pieces = (w[:, :, None] / n[None, None, :])
    pieces = np.where(n[None, None, :] <= capv[None, :, None], pieces, np.inf).reshape(B, -1)
    lo, hi = floor[:, None] * (1 - 1e-9), obj[:, None] * (1 - 1e-9)
    pieces = np.where((pieces >= lo) & (pieces < hi), pieces, np.inf)
    pieces = np.sort(pieces, axis=1)
    dup = np.zeros_like(pieces, dtype=bool)
    dup[:, 1:] = pieces[:, 1:] <= pieces[:, :-1] * (1 + 1e-12)
    pieces = np.sort(np.where(dup, np.inf, pieces), axis=1)
    half = PIECE_CANDIDATES // 2
    count = np.isfinite(pieces).sum(1)
    cols = []
    for j in range(half):  # largest first: the most likely to help
        idx = np.maximum(count - 1 - j, 0)
        cols.append(np.where(count - 1 - j >= 0, pieces[np.arange(B), idx], np.inf))
    for j in range(half):  # then the smallest not already taken
        cols.append(np.where(j < count - half, pieces[:, j] if j < pieces.shape[1] else np.inf,
                             np.inf))
    return np.stack([np.broadcast_to(c, (B,)) for c in cols])


def _first_try(seen: set, counts: np.ndarray) -> bool:
    """True (and remembered) the first time a row meets this copy-count vector."""
    key = counts.tobytes()
    if key in seen:
        return False
    seen.add(key)
    return True


def _aggregate(obj: np.ndarray, lb: np.ndarray, elapsed: float, backend: str,
               time_limit_s: float | None) -> SolveResult:
    objective, bound = float(obj.sum()), float(lb.sum())
    gap = relative_gap(objective, bound)
    if gap is not None and gap <= 1e-9:
        return SolveResult("optimal", objective, bound, 0.0, elapsed, backend, time_limit_s)
    res = heuristic_result(objective, elapsed, backend, bound)
    return SolveResult(res.status, res.objective, res.bound, res.gap, elapsed, backend,
                       time_limit_s)


# ----------------------------------------------------------------------------- CP-SAT
#: largest (items x allowed copy counts x bins) for which CP-SAT also chooses copy counts
CPSAT_COUNT_VARS = 12000
#: largest items x bins for a fixed-count CP-SAT refinement
CPSAT_FIXED_VARS = 20000


def refine_cpsat(weights: np.ndarray, bins: Bins, cap: np.ndarray, warm: np.ndarray, *,
                 time_limit_s: float = 5.0, scale: float = 1e6):
    """Improve or certify one row with CP-SAT, warm-started from ``warm`` (a slot table).

    Aggregated formulation (no variable per interchangeable copy): ``y[e, k] = 1`` when bin
    ``k`` holds a copy of item ``e``; when small enough CP-SAT also picks each item's copy count
    (``x[e, n]``, with ``z[e, n, k] = x[e, n] AND y[e, k]`` carrying the load ``w_e / n``).
    Loads are rounded down and speeds up, so the bound CP-SAT proves is a valid lower bound
    on the true (float) objective; it is reported as such only when counts were free
    (backend ``"cp-sat/counts"``).  Identical bins are ordered by load to break symmetry.

    Returns ``(slot_table or None, SolveResult)``; objective and bound are in bin-time units.
    """
    from ortools.sat.python import cp_model

    w = np.asarray(weights, dtype=float)
    E, K = w.size, bins.count
    capv = np.minimum(np.broadcast_to(np.asarray(cap), (E,)), K).astype(int)
    R = bins.total_slots
    wmax = max(float(w.max()), 1e-300)
    unit = scale / wmax                      # integer load = floor(w * unit)
    sp_int = np.ceil(bins.speed / bins.speed.max() * 1000).astype(int)
    free_counts = int(capv.sum()) * K <= CPSAT_COUNT_VARS
    if not free_counts and E * K > CPSAT_FIXED_VARS:
        return None, SolveResult("no_solution", None, None, None, 0.0, "cp-sat", time_limit_s)
    warm_counts = np.bincount(warm, minlength=E)
    bos = bins.bin_of_slot
    # hint: warm bins reordered so identical bins are sorted by load (matches the symmetry cut)
    wl = np.zeros(K)
    np.add.at(wl, bos, w[warm] / warm_counts[warm])
    order = _symmetric_order(bins, wl / bins.speed)
    m = cp_model.CpModel()
    y = {(e, k): m.NewBoolVar(f"y{e}_{k}") for e in range(E) for k in range(K)}
    held = np.zeros((E, K), dtype=bool)
    held[warm, bos] = True
    loads = []
    if free_counts:
        x = {(e, n): m.NewBoolVar(f"x{e}_{n}") for e in range(E) for n in range(1, capv[e] + 1)}
        for e in range(E):
            m.AddExactlyOne(x[e, n] for n in range(1, capv[e] + 1))
            m.Add(sum(y[e, k] for k in range(K)) ==
                  sum(n * x[e, n] for n in range(1, capv[e] + 1)))
        for k in range(K):
            terms = []
            for e in range(E):
                for n in range(1, capv[e] + 1):
                    q = int(np.floor(w[e] / n * unit))
                    if q == 0:
                        continue
                    z = m.NewBoolVar(f"z{e}_{n}_{k}")
                    m.AddImplication(z, x[e, n])
                    m.AddImplication(z, y[e, k])
                    m.AddBoolOr([x[e, n].Not(), y[e, k].Not(), z])
                    terms.append(q * z)
            loads.append(sum(terms))
        for e in range(E):
            for n in range(1, capv[e] + 1):
                m.AddHint(x[e, n], int(warm_counts[e] == n))
    else:
        for e in range(E):
            m.Add(sum(y[e, k] for k in range(K)) == int(warm_counts[e]))
        q = np.floor(w / np.maximum(warm_counts, 1) * unit).astype(int)
        for k in range(K):
            loads.append(sum(int(q[e]) * y[e, k] for e in range(E) if q[e]))
    for k in range(K):
        m.Add(sum(y[e, k] for e in range(E)) == int(bins.slots[k]))
    ub = int(np.ceil(float(w.sum()) * unit)) + 1
    zmax = m.NewIntVar(0, ub * 1000, "zmax")
    for k in range(K):
        m.Add(loads[k] * 1000 <= zmax * int(sp_int[k]))
    for a, b in _symmetric_pairs(bins):
        m.Add(loads[a] >= loads[b])
    for k in range(K):
        for e in range(E):
            m.AddHint(y[e, k], int(held[e, order[k]]))
    m.Minimize(zmax)
    solver, res = solve_cpsat(m, time_limit_s=time_limit_s)
    backend = "cp-sat/counts" if free_counts else "cp-sat/fixed-counts"
    bound = None
    if res.bound is not None:
        # any true placement with largest time T fits zmax = ceil(unit * speed_max * T)
        # (loads rounded down, speeds up), so T >= (bound - 1) / (unit * speed_max)
        bound = max(0.0, (float(res.bound) - 1.0) / (unit * bins.speed.max()))
    out = None
    if res.has_solution:
        table = np.empty(R, dtype=np.int64)
        fill = bins.start.copy()
        for k in range(K):
            for e in range(E):
                if solver.Value(y[e, k]):
                    table[fill[k]] = e
                    fill[k] += 1
        out = table
    res = SolveResult(res.status, res.objective, bound, res.gap, res.time_s, backend, time_limit_s)
    return out, res


def _symmetric_order(bins: Bins, times: np.ndarray) -> np.ndarray:
    """Bin order that sorts identical consecutive bins by decreasing time (for the hint)."""
    order = np.arange(bins.count)
    for a, b in _runs(bins):
        seg = np.arange(a, b)
        order[a:b] = seg[np.argsort(-times[seg], kind="stable")]
    return order


def _runs(bins: Bins):
    a = 0
    for k in range(1, bins.count + 1):
        if k == bins.count or bins.slots[k] != bins.slots[a] or bins.speed[k] != bins.speed[a]:
            yield a, k
            a = k


def _symmetric_pairs(bins: Bins):
    for a, b in _runs(bins):
        for k in range(a, b - 1):
            yield k, k + 1


# ----------------------------------------------------------------------------- hierarchy
def solve_hierarchical(weights: np.ndarray, bins: Bins, *, num_domains: int, num_groups: int,
                       cap: int | np.ndarray | None = None, time_limit_s: float | None = 10.0,
                       tol: float = 1e-3, cpsat_time_s: float = 0.0) -> Solution:
    """Every copy of a group's items in one domain; equal groups per domain.

    Bins are numbered domain by domain (``K / num_domains`` each) and every domain must have the
    same layout (slots and speeds).  Items are ``num_groups`` contiguous equal groups.

    1. groups onto domains: one group per domain keeps group ``g`` on domain ``g`` (domains are
       identical, so every such map balances equally); otherwise anti-affine LPT + swaps with
       ``groups / domains`` slots per domain;
    2. inside each domain, :func:`solve_flat` on the domain's items with the domain's slots and
       at most one copy per bin, all (row, domain) pairs in one vectorised batch.

    Bound per row: the largest of (a) the domain-level bound (best packing of group weights onto
    domains: mean, heaviest group plus the lightest ones sharing its domain) divided into the
    domain's speed; (b) with one group per domain, every domain's own flat bound (valid for any
    group-to-domain map, domains being identical); otherwise the flat bound with copies capped
    at the bins of one domain; (c) the flat bound.
    """
    start = time.perf_counter()
    w = np.atleast_2d(np.asarray(weights, dtype=float))
    B, E = w.shape
    K, R = bins.count, bins.total_slots
    N = int(num_domains)
    if K % N or E % num_groups or num_groups % N:
        raise ValueError("bins must split evenly into domains, items into groups, groups into domains")
    kd = K // N
    layout = Bins.make(bins.slots[:kd], bins.speed[:kd])
    if not (np.all(bins.slots.reshape(N, kd) == layout.slots) and
            np.all(bins.speed.reshape(N, kd) == layout.speed)):
        raise ValueError("every domain must have the same bins (slots and speeds)")
    rd = layout.total_slots
    gsize, gpd = E // num_groups, num_groups // N
    ed = gsize * gpd
    capv = np.broadcast_to(np.asarray(K if cap is None else cap, dtype=np.int64), (E,))
    capd = np.minimum(capv, kd)
    group_w = w.reshape(B, num_groups, gsize).sum(-1)
    dom_bins = Bins.make([gpd] * N, [layout.speed.sum()] * N)
    if gpd == 1:
        group_of_domain = np.broadcast_to(np.arange(N)[:, None], (B, N, 1)).copy()
    else:
        ones = np.ones((B, num_groups), dtype=np.int64)
        gt = lower_bound(group_w, dom_bins, 1)
        table = improve_swaps(group_w, lpt_pack(group_w, ones, dom_bins), dom_bins,
                              target=gt * (1 + 1e-9))
        group_of_domain = np.sort(table.reshape(B, N, gpd), axis=2)
    dom_bound = lower_bound(group_w, dom_bins, 1)
    # items of each (row, domain), in group order then item order
    items = (group_of_domain[:, :, :, None] * gsize + np.arange(gsize)).reshape(B, N, ed)
    sub_w = np.take_along_axis(w, items.reshape(B, N * ed), 1).reshape(B * N, ed)
    sub_cap = np.take_along_axis(np.broadcast_to(capd, (B, E)), items.reshape(B, N * ed),
                                 1).reshape(B * N, ed)
    if rd < ed or rd > int(sub_cap.sum(1).min()):
        raise ValueError(f"{rd} slots per domain cannot hold {ed} items with at most {kd} copies each")
    left = None if time_limit_s is None else max(0.0, time_limit_s - (time.perf_counter() - start))
    # per-item caps differ only when the user gave a per-item cap vector; solve row by row then
    if np.all(sub_cap == sub_cap[:1]):
        sub = solve_flat(sub_w, layout, cap=sub_cap[0], time_limit_s=left, tol=tol,
                         cpsat_time_s=cpsat_time_s)
        sub_table, sub_bound, sub_method = sub.slot_item, sub.bound, sub.method
    else:
        parts = [solve_flat(sub_w[i:i + 1], layout, cap=sub_cap[i], time_limit_s=left, tol=tol,
                            cpsat_time_s=cpsat_time_s) for i in range(B * N)]
        sub_table = np.concatenate([p.slot_item for p in parts])
        sub_bound = np.concatenate([p.bound for p in parts])
        sub_method = [m for p in parts for m in p.method]
    local = sub_table.reshape(B, N, rd)
    slot_item = np.take_along_axis(items, local, 2).reshape(B, R)
    if gpd == 1:
        inner = sub_bound.reshape(B, N).max(1)
    else:
        inner = lower_bound(w, bins, capd)
    lb = np.maximum.reduce([dom_bound, inner, lower_bound(w, bins, capv)])
    obj = bin_times(w, slot_item, bins).max(1)
    method = [";".join(sorted(set(sub_method[b * N:(b + 1) * N]))) for b in range(B)]
    backend = "cp-sat+heuristic" if any("cp-sat" in m for m in method) else "lpt+swaps"
    res = _aggregate(obj, lb, time.perf_counter() - start, backend, time_limit_s)
    return Solution(slot_item, bins, lb, dom_bound, method, res)


# ----------------------------------------------------------------------------- migration
def bin_sets(slot_item: np.ndarray, bins: Bins, num_items: int) -> np.ndarray:
    """Copies of each item in each bin ``[B, K, E]`` (0/1 for anti-affine tables)."""
    B, R = slot_item.shape
    out = np.zeros((B, bins.count, num_items), dtype=np.int64)
    np.add.at(out, (np.repeat(np.arange(B), R), np.tile(bins.bin_of_slot, B),
                    slot_item.reshape(-1)), 1)
    return out


def moved_copies(prev: np.ndarray, new: np.ndarray, bins: Bins, num_items: int) -> np.ndarray:
    """Copies each row must load: per bin, the copies in ``new`` that ``prev`` lacks ``[B]``.

    Slot order inside a bin does not matter (an engine keeps a copy already in the bin).
    """
    a, b = bin_sets(prev, bins, num_items), bin_sets(new, bins, num_items)
    return np.maximum(b - a, 0).sum(axis=(1, 2))


def align_bins(prev: np.ndarray, new: np.ndarray, bins: Bins, num_items: int,
               bin_class: np.ndarray | None = None, deadline: float | None = None) -> np.ndarray:
    """Relabel ``new``'s bins (within classes of interchangeable bins) to keep as many copies
    where ``prev`` has them (Hungarian assignment per row), then order each bin's slots so
    copies already there keep their slot.  Loads are unchanged.

    ``bin_class[k]``: bins may only be exchanged within one class (default: same slots and
    speed; pass domain ids combined with that for a hierarchy).  Rows reached after
    ``deadline`` keep ``new``'s bin labels (still a valid table, only more copies move).
    """
    from scipy.optimize import linear_sum_assignment

    if bin_class is None:
        bin_class = default_bin_classes(bins)
    B, R = new.shape
    K = bins.count
    a, b = bin_sets(prev, bins, num_items), bin_sets(new, bins, num_items)
    out = np.empty_like(new)
    start = bins.start
    for r in range(B):
        perm = np.arange(K)   # perm[k_prev] = k_new placed at k_prev
        if deadline is not None and time.perf_counter() > deadline:
            out[r] = new[r]
            continue
        # [K_prev, K_new] copies in common: sum_e min(a, b) = sum_t [a >= t] . [b >= t]
        # (exact: integer sums far below 2^53), without a [K, K, E] array
        top = int(min(a[r].max(initial=0), b[r].max(initial=0)))
        overlap = sum((a[r] >= t).astype(float) @ (b[r] >= t).astype(float).T
                      for t in range(1, top + 1)) if top else np.zeros((K, K))
        for cls in np.unique(bin_class):
            ks = np.nonzero(bin_class == cls)[0]
            ri, ci = linear_sum_assignment(-overlap[np.ix_(ks, ks)])
            perm[ks[ri]] = ks[ci]
        for k in range(K):
            src = new[r, start[perm[k]]:start[perm[k]] + bins.slots[k]]
            old = prev[r, start[k]:start[k] + bins.slots[k]]
            out[r, start[k]:start[k] + bins.slots[k]] = _keep_positions(old, src)
    return out


def default_bin_classes(bins: Bins) -> np.ndarray:
    keys = {}
    return np.array([keys.setdefault((int(s), float(v)), len(keys))
                     for s, v in zip(bins.slots, bins.speed)])


def _keep_positions(old: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Order ``items`` so that those also in ``old`` sit at ``old``'s positions."""
    out = np.full(old.size, -1, dtype=np.int64)
    rest = list(items)
    for i, x in enumerate(old):
        if x in rest:
            out[i] = x
            rest.remove(x)
    out[out < 0] = rest
    return out


def rebalance_with_budget(weights: np.ndarray, prev: np.ndarray, bins: Bins, budget: int, *,
                          cap: int | np.ndarray | None = None, allowed: np.ndarray | None = None,
                          deadline: float | None = None, tol: float = 1e-3) -> np.ndarray:
    """Improve ``prev`` for new ``weights`` loading at most ``budget`` copies in total.

    Greedy over all rows, best gain per loaded copy first.  Moves, all out of a row's busiest
    bin: a *re-purpose* (cost 1) turns a copy of ``x`` (which keeps >= 1 copy) into a copy of
    ``y`` (changing both items' counts and so every bin holding them); a *swap* (cost 2)
    exchanges copies with another bin.  A move's gain is the drop in the row's *excess*
    (``sum_k max(0, time_k - target)``, target = the row's lower bound, relative to its mean),
    which, unlike the row maximum, rewards progress when several bins tie at the top.
    ``allowed[b, e, k]`` (optional) says which bins may hold item ``e`` (hierarchy).
    """
    w = np.atleast_2d(np.asarray(weights, dtype=float))
    table = prev.copy()
    B, E = w.shape
    K = bins.count
    capv = np.minimum(np.broadcast_to(np.asarray(K if cap is None else cap), (E,)), K)
    mean_t = w.sum(1) / bins.speed.sum()
    target = lower_bound(w, bins, capv, deadline=deadline) * (1 + tol)
    left = int(budget)
    heap = []

    def push(b):
        mv = _best_move(w[b], table[b], bins, capv, None if allowed is None else allowed[b],
                        mean_t[b], target[b], left)
        if mv is not None:
            heapq.heappush(heap, (-mv[0] / mv[1], b, mv))

    for b in range(B):
        push(b)
    while heap and left > 0:
        if deadline is not None and time.perf_counter() > deadline:
            break
        _, b, mv = heapq.heappop(heap)
        gain, cost, kind, s1, val = mv
        if cost > left:
            push(b)
            continue
        if kind == "swap":
            table[b, s1], table[b, val] = table[b, val], table[b, s1]
        else:
            table[b, s1] = val
        left -= cost
        push(b)
    return table


def _best_move(w: np.ndarray, row: np.ndarray, bins: Bins, capv: np.ndarray,
               allowed: np.ndarray | None, mean_t: float, target: float, budget: int):
    """Best (gain, cost, kind, slot, partner) for one row, or None."""
    E, K = w.size, bins.count
    bos = bins.bin_of_slot
    counts = np.bincount(row, minlength=E)
    share = w / np.maximum(counts, 1)
    load = np.zeros(K)
    np.add.at(load, bos, share[row])
    t = load / bins.speed
    g = int(np.argmax(t))
    tmax = t[g]
    if tmax <= target:
        return None
    held = np.zeros((K, E), dtype=bool)
    held[bos, row] = True
    gs = np.arange(bins.start[g], bins.start[g] + bins.slots[g])
    norm = max(mean_t, 1e-300)
    over = np.maximum(t - target, 0.0)
    excess = over.sum()
    best = None
    # re-purpose: slot a in g (item x, counts >= 2) becomes item y
    x = row[gs]
    okx = counts[x] >= 2
    if okx.any() and budget >= 1:
        y_ok = ~held[g] & (counts < capv)
        if allowed is not None:
            y_ok &= allowed[:, g]
        if y_ok.any():
            dx = np.where(okx, w[x] / np.maximum(counts[x] - 1, 1) - share[x], 0)          # [S]
            dy = w / (counts + 1) - share                                                  # [E]
            base = load[None, None, :] + held.T[x][:, None, :] * dx[:, None, None] + \
                held.T[None, :, :] * dy[None, :, None]
            base[:, :, g] = load[g] - share[x][:, None] + (w / (counts + 1))[None, :]
            newt = base / bins.speed[None, None, :]
            valid = okx[:, None] & y_ok[None, :] & (newt.max(2) < tmax * (1 - 1e-12))
            gain = np.where(valid, (excess - np.maximum(newt - target, 0).sum(2)) / norm, -np.inf)
            i = np.unravel_index(np.argmax(gain), gain.shape)
            if gain[i] > 1e-12:
                best = (float(gain[i]), 1, "repurpose", int(gs[i[0]]), int(i[1]))
    if budget >= 2:
        d = share[row[gs]][:, None] - share[row][None, :]                 # [S, R]
        h = np.broadcast_to(bos[None, :], d.shape)
        new_g = (load[g] - d) / bins.speed[g]
        new_h = (load[h] + d) / bins.speed[h]
        valid = (d > 0) & (h != g) & ~held[g][row][None, :] & ~held[h, row[gs][:, None]]
        valid &= np.maximum(new_g, new_h) < tmax * (1 - 1e-12)
        if allowed is not None:
            valid &= allowed[row[gs]][:, bos] & allowed[row, g][None, :]
        gain = (over[g] + over[h] - np.maximum(new_g - target, 0) - np.maximum(new_h - target, 0))
        gain = np.where(valid, gain / norm - 1e-9 * np.maximum(new_g, new_h) / norm, -np.inf)
        i = np.unravel_index(np.argmax(gain), gain.shape)
        if gain[i] > 1e-12 and (best is None or gain[i] / 2 > best[0]):
            best = (float(gain[i]), 2, "swap", int(gs[i[0]]), int(i[1]))
    return best


# ----------------------------------------------------------------------------- affinity
def copy_fractions(slot_item: np.ndarray, bins: Bins, num_items: int) -> np.ndarray:
    """``X[b, k, e]``: share of item ``e``'s traffic its copy in bin ``k`` takes, assuming the
    traffic of an item is split evenly over its copies (``held / count``)."""
    sets = bin_sets(slot_item, bins, num_items).astype(float)
    return sets / np.maximum(sets.sum(1, keepdims=True), 1.0)


def split_pair_weight(x_a: np.ndarray, x_b: np.ndarray, pairs: np.ndarray,
                      group: np.ndarray | None = None) -> float:
    """Pair weight that crosses bins (or bin groups): ``sum P[e, f] (1 - P(same bin))``.

    ``x_a`` / ``x_b``: ``[K, E]`` copy fractions of the two rows (the same row for pairs within
    a row); ``pairs``: ``[E, E]`` pair weights; ``group``: optional bin -> group map, to count
    crossings between groups of bins instead.  With independent even splits, the chance that
    ``e`` and ``f`` meet in one bin is ``sum_k x_a[k, e] x_b[k, f]``.
    """
    if group is not None:
        ng = int(group.max()) + 1
        ga = np.zeros((ng, x_a.shape[1]))
        gb = np.zeros((ng, x_b.shape[1]))
        np.add.at(ga, group, x_a)
        np.add.at(gb, group, x_b)
        x_a, x_b = ga, gb
    same = x_a.T @ x_b
    return float((pairs * (1.0 - same)).sum())


def improve_affinity(weights: np.ndarray, slot_item: np.ndarray, bins: Bins, *,
                     between: np.ndarray | None = None, within: np.ndarray | None = None,
                     cap_time: np.ndarray, bin_class: np.ndarray | None = None,
                     allowed: np.ndarray | None = None, max_swaps: int | None = None,
                     deadline: float | None = None) -> np.ndarray:
    """Keep heavy item pairs in one bin without letting any bin exceed ``cap_time[b]``.

    ``between[b]``: ``[E, E]`` pair weights from row ``b`` to row ``b + 1`` (e.g. how often
    traffic passes from item e of one row to item f of the next); ``within[b]``: pairs inside
    row ``b``.  Rows are visited in order: (1) the row's interchangeable bins are relabelled
    (Hungarian) to meet the previous row's placement (free: loads do not change); (2) pair
    swaps with the best affinity gain are applied while they keep every bin under the cap.
    Copy counts never change, so replication and balance come from the load-only solution.
    """
    from scipy.optimize import linear_sum_assignment

    w = np.atleast_2d(np.asarray(weights, dtype=float))
    table = slot_item.copy()
    B, E = w.shape
    K, R = bins.count, bins.total_slots
    bos = bins.bin_of_slot
    start = bins.start
    if bin_class is None:
        bin_class = default_bin_classes(bins)
    max_swaps = R if max_swaps is None else max_swaps
    for b in range(B):
        if deadline is not None and time.perf_counter() > deadline:
            break
        counts = np.bincount(table[b], minlength=E)
        share = w[b] / np.maximum(counts, 1)
        X = copy_fractions(table[b:b + 1], bins, E)[0]                      # [K, E]
        # A[k, e]: affinity of item e (per unit copy fraction) to bin k from fixed neighbours
        A = np.zeros((K, E))
        if between is not None and b > 0:
            Xp = copy_fractions(table[b - 1:b], bins, E)[0]
            A += Xp @ between[b - 1]
        if b > 0 and between is not None:
            # (1) relabel interchangeable bins to maximise sum_k X[k] . A[k]
            score = A @ X.T                                                  # [K_to, K_from]
            perm = np.arange(K)
            for cls in np.unique(bin_class):
                ks = np.nonzero(bin_class == cls)[0]
                ri, ci = linear_sum_assignment(-score[np.ix_(ks, ks)])
                perm[ks[ri]] = ks[ci]
            if not np.array_equal(perm, np.arange(K)):
                new = np.empty(R, dtype=np.int64)
                for k in range(K):
                    s0 = start[perm[k]]
                    new[start[k]:start[k] + bins.slots[k]] = table[b, s0:s0 + bins.slots[k]]
                table[b] = new
                X = copy_fractions(table[b:b + 1], bins, E)[0]
        C = None if within is None else within[b] - np.diag(np.diag(within[b]))
        load = np.zeros(K)
        np.add.at(load, bos, share[table[b]])
        capk = cap_time[b] * bins.speed * (1 + 1e-12)
        for _ in range(max_swaps):
            if deadline is not None and time.perf_counter() > deadline:
                break
            G = A.copy()
            if C is not None:
                G += X @ C
            G = G / np.maximum(counts, 1)[None, :]                          # gain per copy moved
            row = table[b]
            held = np.zeros((K, E), dtype=bool)
            held[bos, row] = True
            gx = G[:, row]                                                   # [K, R]
            own = gx[bos, np.arange(R)]                                      # G[bin(s), item(s)]
            # swap s (bin g) <-> u (bin h): gain = G[h,x]-G[g,x] + G[g,y]-G[h,y]
            gain = gx[bos[None, :], np.arange(R)[:, None]] - own[:, None] + \
                gx[bos[:, None], np.arange(R)[None, :]] - own[None, :]
            d = share[row][:, None] - share[row][None, :]
            new_g = load[bos][:, None] - d
            new_h = load[bos][None, :] + d
            valid = (bos[:, None] != bos[None, :]) & \
                (new_g <= capk[bos][:, None]) & (new_h <= capk[bos][None, :]) & \
                ~held[bos[None, :], row[:, None]] & ~held[bos[:, None], row[None, :]]
            if allowed is not None:
                valid &= allowed[b][row[:, None], bos[None, :]] & allowed[b][row[None, :], bos[:, None]]
            gain = np.where(valid, gain, -np.inf)
            i, j = np.unravel_index(np.argmax(gain), gain.shape)
            if not gain[i, j] > 1e-12 * max(1.0, float(np.abs(G).max())):
                break
            x, y = row[i], row[j]
            g, h = bos[i], bos[j]
            table[b, i], table[b, j] = y, x
            load[g] += share[y] - share[x]
            load[h] += share[x] - share[y]
            X[g, x] -= 1.0 / counts[x]
            X[h, x] += 1.0 / counts[x]
            X[h, y] -= 1.0 / counts[y]
            X[g, y] += 1.0 / counts[y]
    return table


def replan(weights: np.ndarray, prev: np.ndarray, bins: Bins, budget: int | None, *,
           cap: int | np.ndarray | None = None, tol: float = 1e-3,
           allowed: np.ndarray | None = None, fresh: np.ndarray | None = None,
           bin_class: np.ndarray | None = None,
           time_limit_s: float | None = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """Re-place for new ``weights`` starting from ``prev``, loading at most ``budget`` copies.

    Greedy moves from ``prev`` (:func:`rebalance_with_budget`) until the budget is spent or
    every row is within ``tol`` of its bound; then, for rows where the greedy got stuck, a
    from-scratch solution ``fresh`` (bins relabelled to match ``prev``) replaces the row when it
    balances better and the budget still covers the extra copies it moves.
    Returns the new slot table and the copies moved per row.
    """
    start = time.perf_counter()
    deadline = None if time_limit_s is None else start + time_limit_s
    w = np.atleast_2d(np.asarray(weights, dtype=float))
    E = w.shape[1]
    big = bins.total_slots * w.shape[0] * 4
    table = rebalance_with_budget(w, prev, bins, big if budget is None else int(budget),
                                  cap=cap, allowed=allowed, deadline=deadline, tol=tol)
    if fresh is not None:
        # rows where greedy moves got stuck: adopt the fresh row (relabelled to match prev)
        # when it balances better, best gain per extra copy moved first, within the budget
        aligned = align_bins(prev, fresh, bins, E, bin_class, deadline=deadline)
        a = bin_times(w, table, bins).max(1)
        f = bin_times(w, aligned, bins).max(1)
        extra = moved_copies(prev, aligned, bins, E) - moved_copies(prev, table, bins, E)
        left = np.inf if budget is None else budget - moved_copies(prev, table, bins, E).sum()
        gain = (a - f) / np.maximum(w.sum(1), 1e-300)
        for r in np.argsort(-(gain / np.maximum(extra, 1)), kind="stable"):
            if f[r] < a[r] * (1 - tol) and extra[r] <= left:
                table[r] = aligned[r]
                left -= max(int(extra[r]), 0)
    return table, moved_copies(prev, table, bins, E)


def relabel_domains(slot_item: np.ndarray, bins: Bins, num_domains: int,
                    between: np.ndarray) -> np.ndarray:
    """Permute whole domains (identical blocks of bins) row by row so that heavy pairs between
    consecutive rows land in the same domain (Hungarian per row, rows in order).

    Loads, copy counts and every within-domain arrangement stay as they are; only which domain
    a block sits on changes, so a hierarchy that pins groups to one domain still holds.
    """
    from scipy.optimize import linear_sum_assignment

    table = slot_item.copy()
    B, R = table.shape
    E = between.shape[1]
    rd = R // num_domains
    dom_of_bin = np.arange(bins.count) // (bins.count // num_domains)
    for b in range(1, B):
        if b - 1 >= len(between):
            break
        X = copy_fractions(table[b - 1:b + 1], bins, E)                     # [2, K, E]
        prev_d = np.zeros((num_domains, E))
        cur_d = np.zeros((num_domains, E))
        np.add.at(prev_d, dom_of_bin, X[0])
        np.add.at(cur_d, dom_of_bin, X[1])
        score = prev_d @ between[b - 1] @ cur_d.T                             # [to, from]
        ri, ci = linear_sum_assignment(-score)
        perm = np.empty(num_domains, dtype=np.int64)
        perm[ri] = ci
        table[b] = table[b].reshape(num_domains, rd)[perm].reshape(R)
    return table
