"""Group-size selection and item assignment over rounds (a makespan partition problem).

The problem, in generic words: ``n`` items must be split into rounds that run one after another;
inside a round the ``N`` devices are cut into groups, each group of some *kind* ``k`` (using
``devices[k]`` devices), and every item goes to exactly one group.  The time of a group is
``fixed[k] + sum(cost[i, k] for its items)``, a round lasts as long as its slowest group, and the
objective is the sum of the round times.  Constraints: a group's items weigh at most
``capacity[k]``; the devices of a round's groups add up to ``N`` exactly (``fill_devices``) or at
most ``N``; optionally every group holds at least one item.

How it is solved (deterministic unless the time limit, a safety net, cuts a phase short):

1. the memory-forced number of rounds ``m_min`` and valid lower bounds: the simple one (total
   device-work at each item's cheapest kind spread over all devices, plus the smallest
   per-group constant once per round for ``m_min`` rounds) and a refined one that also makes
   every item finish within the slowest round (see :func:`lower_bound`);
2. for each tried round count, greedy constructions at several target heights: items that
   cannot finish within the height in their cheapest kind (device-time) open groups of the
   cheapest kind that can, either spread over the rounds or concentrated in the first rounds
   (a long round of long items, as sorted chunking does); free devices are covered with groups;
   the rest goes longest-first onto the group that finishes earliest (in concentrate mode the
   long round is first filled up to its end).  Heights include the break points where the
   longest items change kind;
3. an exact-cost local search on the real items: moves and swaps between groups of any round
   driven by each round's slowest group (plateau moves inside a round, and towards longer
   rounds only, so it cannot cycle), plus switching a group to a same-size kind that runs its
   items faster;
4. where time allows and the incumbent is not within 1% of the bound, a makespan MILP per
   round over (group counts per kind) x (length-bucket counts per kind), solved with HiGHS by
   bisection on the round's end (linear at each fixed end; counts, never slots, so no
   symmetry), warm-started by the incumbent (its round end is the bisection's upper end); the
   configuration found is realised on the real items and polished by the same local search,
   so that bucketing costs nothing;
5. the best plan found, its status ("optimal" only when it meets the bound), bound and gap.

Knows nothing about LLMs: items, kinds, devices, costs.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from solvers.milp import SolveResult, relative_gap

_EPS = 1e-9


class PartitionInfeasible(ValueError):
    """No plan exists; ``binding`` names the constraint that binds ("capacity", "devices")."""

    def __init__(self, message: str, binding: str, item: int | None = None) -> None:
        self.binding = binding
        self.item = item
        super().__init__(message)


@dataclass(frozen=True)
class PartitionProblem:
    """Input of :func:`solve_partition`.

    Attributes:
        cost: (n_items, n_kinds) time of item i in a group of kind k (any unit, e.g. seconds);
            ``inf`` where the item may not go to that kind.
        weight: (n_items,) memory weight of each item (any unit).
        devices: (n_kinds,) devices one group of kind k uses (positive ints).
        capacity: (n_kinds,) weight one group of kind k may hold.
        fixed: (n_kinds,) constant time a group of kind k pays once per round.
        num_devices: N, the devices available to every round.
        fill_devices: the groups of a round must use exactly N devices (else at most N).
        nonempty_groups: every group must hold at least one item.
    """

    cost: np.ndarray
    weight: np.ndarray
    devices: np.ndarray
    capacity: np.ndarray
    fixed: np.ndarray
    num_devices: int
    fill_devices: bool = True
    nonempty_groups: bool = True

    def __post_init__(self) -> None:
        cost = np.asarray(self.cost, dtype=float)
        if cost.ndim != 2:
            raise ValueError("cost must be a 2-D array (items x kinds)")
        n, k = cost.shape
        object.__setattr__(self, "cost", cost)
        for name in ("weight",):
            arr = np.asarray(getattr(self, name), dtype=float).reshape(-1)
            if arr.shape != (n,):
                raise ValueError(f"{name} must have one entry per item")
            object.__setattr__(self, name, arr)
        for name, dtype in (("devices", int), ("capacity", float), ("fixed", float)):
            arr = np.asarray(getattr(self, name), dtype=dtype).reshape(-1)
            if arr.size == 1 and k > 1:
                arr = np.full(k, arr[0], dtype=dtype)
            if arr.shape != (k,):
                raise ValueError(f"{name} must have one entry per kind")
            object.__setattr__(self, name, arr)
        if np.any(self.devices <= 0) or self.num_devices <= 0:
            raise ValueError("devices and num_devices must be positive")
        if np.any(np.isnan(cost)) or np.any(cost < 0):
            raise ValueError("cost must be non-negative (inf = not allowed)")

    @property
    def n_items(self) -> int:
        return int(self.cost.shape[0])

    @property
    def n_kinds(self) -> int:
        return int(self.cost.shape[1])

    def allowed(self) -> np.ndarray:
        """(n, K) bool: item i may go to a group of kind k (finite cost, fits alone, fits N).
        Computed once per problem (the solver asks often; large batches over many kinds make
        it tens of millions of entries) and returned read-only."""
        def build() -> np.ndarray:
            return (np.isfinite(self.cost) & (self.weight[:, None] <= self.capacity[None, :] + _EPS)
                    & (self.devices[None, :] <= self.num_devices))
        return self._cached("_allowed", build)

    def area(self) -> np.ndarray:
        """(n, K) device-time of item i in kind k (``devices * cost``), inf where not allowed
        (computed once, read-only)."""
        return self._cached("_area", lambda: np.where(self.allowed(),
                                                      self.devices[None, :] * self.cost, np.inf))

    def _cached(self, name: str, build) -> np.ndarray:
        value = self.__dict__.get(name)
        if value is None:
            value = build()
            value.flags.writeable = False
            object.__setattr__(self, name, value)
        return value


@dataclass
class Group:
    """One group of a round: its kind, its items and its time (fixed + sum of costs)."""

    kind: int
    items: list[int]
    time: float


@dataclass
class PartitionSolution:
    """Result of :func:`solve_partition`.

    Attributes:
        rounds: per round, its groups.
        round_times: time of each round (its slowest group).
        objective: sum of round times.
        lower_bound: valid lower bound on the objective of any feasible plan (refined).
        simple_lower_bound: the simple spread-the-work bound (see :func:`lower_bound`).
        gap: ``(objective - lower_bound) / objective``.
        method: which path produced the plan ("greedy+ls", "milp+ls", ...).
        result: a :class:`SolveResult` describing the whole solve (status, bound, gap, time).
        milp: the last MILP's :class:`SolveResult` as a dict, or ``None`` when none ran.
        tried: per round count tried, the objective reached.
    """

    rounds: list[list[Group]]
    round_times: list[float]
    objective: float
    lower_bound: float
    gap: float
    method: str
    result: SolveResult
    milp: dict[str, Any] | None = None
    tried: list[dict[str, Any]] = field(default_factory=list)
    simple_lower_bound: float = 0.0


# ----------------------------------------------------------------------------------------------
# bounds and round counts


def min_rounds(problem: PartitionProblem) -> int:
    """Fewest rounds memory allows: a round holds at most ``N * max_k(capacity_k / devices_k)``."""
    allowed = problem.allowed()
    bad = np.flatnonzero(~allowed.any(axis=1))
    if bad.size:
        i = int(bad[0])
        raise PartitionInfeasible(f"item {i} fits in no group kind", "capacity", item=i)
    per_device = float(np.max(problem.capacity / problem.devices))
    total = float(problem.weight.sum())
    if total <= 0:
        return 1
    return max(1, int(math.ceil(total / (problem.num_devices * per_device) - 1e-12)))


def lower_bound(problem: PartitionProblem, rounds: int | None = None, *,
                refined: bool = True) -> float:
    """A valid lower bound on the objective of any feasible plan with at least ``rounds`` rounds.

    Simple bound: each round lasts at least ``min(fixed) + (device-time of its items) / N``
    (its slowest group is no faster than the device-weighted mean of its groups, and the
    devices of its groups add up to at most N), and an item's device-time is at least its
    cheapest ``devices * cost`` over the kinds it may use; summed over rounds, with at least
    the memory-forced number of rounds.  It is also at least one round holding the item whose
    cheapest finish is latest.

    Refined bound (``refined``): the slowest round lasts ``T <= S - (m-1) min(fixed)`` where S is
    the objective, so every item must use a kind that finishes within that ``T``; its
    device-time is at least ``a_i(T) = min{devices_k cost_ik : fixed_k + cost_ik <= T}``, which
    only grows as T shrinks.  Hence ``S >= m min(fixed) + sum_i a_i(S - (m-1) min(fixed)) / N``
    and the smallest S satisfying it (found by bisection) is a bound at least as strong.  It
    matters when a few very long items cannot be spread thinly without finishing late.
    """
    m = max(min_rounds(problem), rounds or 0)
    if not problem.n_items:
        return 0.0
    allowed = problem.allowed()
    area = problem.area()
    fmin = float(problem.fixed.min())
    N = problem.num_devices
    spread = m * fmin + float(area.min(axis=1).sum()) / N
    finish = np.where(allowed, problem.fixed[None, :] + problem.cost, np.inf)
    single = float(finish.min(axis=1).max()) + (m - 1) * fmin
    simple = max(spread, single)
    if not refined:
        return simple

    def rhs(S: float) -> float:
        T = S - (m - 1) * fmin
        a = np.where(finish <= T * (1 + 1e-12), area, np.inf).min(axis=1)
        return m * fmin + float(a.sum()) / N if np.all(np.isfinite(a)) else np.inf

    lo = simple
    if lo >= rhs(lo):
        return simple
    hi = max(lo * 2, lo + 1e-9)
    while hi < rhs(hi):
        hi *= 2
        if hi > 1e12 * max(lo, 1.0):
            return simple
    for _ in range(60):  # bisection: S >= rhs(S) is monotone (rhs never grows with S)
        mid = 0.5 * (lo + hi)
        if mid >= rhs(mid):
            hi = mid
        else:
            lo = mid
        if hi - lo <= 1e-9 * hi:
            break
    return max(simple, lo)


# ----------------------------------------------------------------------------------------------
# plan state used by construction and local search


class _State:
    """Mutable plan: groups with round, kind, load (sum of costs), weight, item lists."""

    def __init__(self, problem: PartitionProblem, n_rounds: int) -> None:
        self.p = problem
        self.m = n_rounds
        self.g_round: list[int] = []
        self.g_kind: list[int] = []
        self.g_items: list[list[int]] = []
        self.load = np.zeros(0)
        self.mem = np.zeros(0)
        self.item_group = np.full(problem.n_items, -1, dtype=int)
        self.free = np.full(n_rounds, problem.num_devices, dtype=int)

    # -- building
    def open(self, r: int, k: int) -> int:
        self.g_round.append(r)
        self.g_kind.append(k)
        self.g_items.append([])
        self.load = np.append(self.load, 0.0)
        self.mem = np.append(self.mem, 0.0)
        self.free[r] -= int(self.p.devices[k])
        return len(self.g_round) - 1

    def put(self, i: int, g: int) -> None:
        k = self.g_kind[g]
        self.g_items[g].append(i)
        self.load[g] += self.p.cost[i, k]
        self.mem[g] += self.p.weight[i]
        self.item_group[i] = g

    def take(self, i: int, g: int) -> None:
        k = self.g_kind[g]
        self.g_items[g].remove(i)
        self.load[g] -= self.p.cost[i, k]
        self.mem[g] -= self.p.weight[i]
        self.item_group[i] = -1

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.g_round, dtype=int), np.asarray(self.g_kind, dtype=int)

    def round_times(self) -> np.ndarray:
        rounds, kinds = self.arrays()
        out = np.zeros(self.m)
        t = self.p.fixed[kinds] + self.load
        np.maximum.at(out, rounds, t)
        return out

    def objective(self) -> float:
        return float(self.round_times().sum())

    def recompute(self) -> None:
        """Reset loads from scratch (removes floating-point drift after many moves)."""
        _, kinds = self.arrays()
        for g, items in enumerate(self.g_items):
            idx = np.asarray(items, dtype=int)
            self.load[g] = float(self.p.cost[idx, kinds[g]].sum()) if idx.size else 0.0
            self.mem[g] = float(self.p.weight[idx].sum()) if idx.size else 0.0

    def compact(self) -> None:
        """Drop empty groups (only used when groups may be empty or are re-created)."""
        keep = [g for g, items in enumerate(self.g_items) if items]
        self._select(keep)

    def _select(self, keep: list[int]) -> None:
        self.g_round = [self.g_round[g] for g in keep]
        self.g_kind = [self.g_kind[g] for g in keep]
        self.g_items = [self.g_items[g] for g in keep]
        self.load = self.load[keep]
        self.mem = self.mem[keep]
        for g, items in enumerate(self.g_items):
            for i in items:
                self.item_group[i] = g
        self.free = np.full(self.m, self.p.num_devices, dtype=int)
        for r, k in zip(self.g_round, self.g_kind):
            self.free[r] -= int(self.p.devices[k])

    def to_rounds(self) -> list[list[Group]]:
        out: list[list[Group]] = [[] for _ in range(self.m)]
        for g, (r, k) in enumerate(zip(self.g_round, self.g_kind)):
            items = sorted(self.g_items[g])
            t = float(self.p.fixed[k] + self.p.cost[items, k].sum()) if items else float(self.p.fixed[k])
            out[r].append(Group(kind=k, items=items, time=t))
        for groups in out:  # canonical order: larger groups first, then by first item
            groups.sort(key=lambda grp: (-int(self.p.devices[grp.kind]), grp.kind,
                                         grp.items[0] if grp.items else -1))
        return out


# ----------------------------------------------------------------------------------------------
# construction


def _fill_devices(free: int, kinds_by_pref: list[int], devices: np.ndarray,
                  max_groups: int | None = None) -> list[int] | None:
    """Kinds whose devices add up to ``free`` exactly: as many groups of the first (preferred)
    kind as possible, the remainder covered by the fewest groups of the other kinds, with at
    most ``max_groups`` groups (every group needs an item)."""
    if free == 0:
        return []
    first, others = kinds_by_pref[0], kinds_by_pref[1:]
    d0 = int(devices[first])
    top = free // d0
    if max_groups is not None:
        top = min(top, max_groups)
    table = None  # one table serves every remainder (built when a remainder is not 0)
    for q in range(top, -1, -1):
        rest = free - q * d0
        if rest and table is None:
            table = _coin_table(free, others, devices)
        fill = _coin_walk(table, rest, devices) if rest else []
        if fill is not None and (max_groups is None or q + len(fill) <= max_groups):
            return [first] * q + fill
        if top - q > 256 and max_groups is None:
            break
    return None


def _coin_table(x: int, kinds: list[int], devices: np.ndarray) -> tuple[list[int], list[int]]:
    """Fewest groups of ``kinds`` whose devices add up to each amount ``0..x``: (count per
    amount, ``x + 1`` where impossible; the kind of the last group, -1 where none).  Among
    equally few groups the earliest kind in ``kinds`` is taken.  Kinds with the same device
    count are interchangeable here, so only the first of each count is tried (the large
    clusters' hundreds of kinds reduce to their distinct sizes)."""
    first_of: dict[int, int] = {}
    for k in kinds:
        first_of.setdefault(int(devices[k]), int(k))
    ds = list(first_of)
    ks = list(first_of.values())
    inf = x + 1
    best = [0] + [inf] * x
    parent = [-1] * (x + 1)
    if len(ds) * x <= 200_000:
        for v in range(1, x + 1):
            for d, k in zip(ds, ks):
                if d <= v and best[v - d] + 1 < best[v]:
                    best[v] = best[v - d] + 1
                    parent[v] = k
        return best, parent
    # the same recurrence with the kinds vectorised (one step per amount)
    d_arr = np.asarray(ds, dtype=np.int64)
    b = np.full(x + 1, inf, dtype=np.int64)
    b[0] = 0
    for v in range(1, x + 1):
        ok = d_arr <= v
        cand = np.where(ok, b[np.where(ok, v - d_arr, 0)] + 1, inf + 1)
        j = int(np.argmin(cand))  # the first kind (in order) reaching the fewest groups
        if cand[j] < inf:
            b[v] = cand[j]
            parent[v] = ks[j]
    return b.tolist(), parent


def _coin_walk(table: tuple[list[int], list[int]], x: int, devices: np.ndarray) -> list[int] | None:
    """The groups :func:`_coin_table` found for amount ``x`` (None when impossible)."""
    if x == 0:
        return []
    best, parent = table
    if best[x] >= len(best):
        return None
    out, v = [], x
    while v > 0:
        out.append(parent[v])
        v -= int(devices[parent[v]])
    return out


def _coin_change(x: int, kinds: list[int], devices: np.ndarray) -> list[int] | None:
    """Fewest groups of ``kinds`` whose devices add up to ``x`` (None when impossible)."""
    return _coin_walk(_coin_table(x, kinds, devices), x, devices)


def _construct(problem: PartitionProblem, m: int, height: float, area: np.ndarray,
               default_kinds: list[int], forced_kind: np.ndarray | None = None,
               concentrate: bool = False) -> _State:
    """Greedy plan with ``m`` rounds aiming at per-group load ``height``.

    Items whose cheapest kind (in device-time) cannot finish within ``height`` are "big": they
    open a group of the cheapest kind that can (or join an open group of that kind with room),
    in the round with the most free devices (``concentrate``: in the first round with room, so
    that long items share rounds, as sorted chunking does).  Free devices are then covered by
    groups of the
    default kinds; the remaining items go longest-first to the group where they finish earliest.
    ``forced_kind`` (optional, per item, -1 = free) pins items to a kind (used by the MILP path).
    """
    p = problem
    st = _State(p, m)
    allowed = p.allowed()
    cost = np.where(allowed, p.cost, np.inf)
    order = np.argsort(-area.min(axis=1), kind="stable")
    pref_kind = np.argmin(area, axis=1)  # cheapest device-time kind
    default = set(default_kinds)
    placed = np.zeros(p.n_items, dtype=bool)
    for i in order:
        if forced_kind is not None and forced_kind[i] >= 0:
            k = int(forced_kind[i])
        else:
            k = int(pref_kind[i])
            if cost[i, k] > height or k not in default:
                ok = np.flatnonzero(cost[i] <= height)
                k = int(ok[np.argmin(area[i, ok])]) if ok.size else int(np.argmin(cost[i]))
            if k in default and cost[i, k] <= height:
                continue  # a small item: placed in the filling phase
        # join an open group of kind k with room in time and memory, else open one
        rounds, kinds = st.arrays()
        cand = np.flatnonzero((kinds == k) & (st.load + cost[i, k] <= height + _EPS) &
                              (st.mem + p.weight[i] <= p.capacity[k] + _EPS)) if kinds.size else []
        if len(cand):
            g = int(cand[np.argmax(st.load[cand])])  # best fit
        else:
            if concentrate:
                room = np.flatnonzero(st.free >= p.devices[k])
                r = int(room[0]) if room.size else 0
            else:
                r = int(np.argsort(-st.free, kind="stable")[0])
            if st.free[r] < p.devices[k]:
                continue  # no room for a new group: leave for the filling phase
            g = st.open(r, k)
        st.put(int(i), g)
        placed[i] = True
    # cover free devices with default kinds (largest share to the cheapest default kind)
    pref = sorted(default_kinds, key=lambda k: int(p.devices[k]))
    all_pref = pref + [k for k in np.argsort(p.devices, kind="stable") if k not in default]
    spare = p.n_items - len(st.g_round)  # items left to give new groups one each
    for r in range(m):
        cap = None
        if p.nonempty_groups:
            cap = max(0, spare - (m - r - 1))  # keep one item for each later round
        fill = _fill_devices(int(st.free[r]), [int(k) for k in all_pref], p.devices, cap)
        if fill is None and p.fill_devices and st.free[r] > 0 and _absorb_free(st, r, cost):
            fill = []  # too few items for new groups: a group of this round grew instead
        if fill is not None:
            spare -= len(fill)
        if fill is None:
            if p.fill_devices:
                raise PartitionInfeasible("the group kinds cannot cover all devices", "devices")
            # devices may idle: as many groups as fit, preferred kinds first
            fill, left = [], int(st.free[r])
            for k in all_pref:
                while int(p.devices[k]) <= left:
                    fill.append(int(k))
                    left -= int(p.devices[k])
        for k in fill:
            st.open(r, int(k))
    # fill: remaining items longest-first onto the group where they finish earliest
    # (one heap of finish times per kind; lazy deletion of stale entries)
    import heapq

    rounds, kinds = st.arrays()
    fixed_g = p.fixed[kinds]
    finish_g = fixed_g + st.load
    # concentrate mode: a round already made long by its long items is first filled up to that
    # end (its groups rank first while the item fits under it); past that, all groups compete on
    # absolute finish, so the shorter rounds catch up before the long one grows (water-filling
    # with a step).  Spread mode: plain earliest finish.
    end0_g = np.full(len(rounds), -np.inf)
    if concentrate and len(rounds):
        ends = np.full(m, -np.inf)
        np.maximum.at(ends, rounds, finish_g)
        end0_g = ends[rounds]
    heaps: dict[int, list[tuple[float, int]]] = {}
    for g, k in enumerate(kinds):
        heaps.setdefault(int(k), []).append((float(finish_g[g]), g))
    for h in heaps.values():
        heapq.heapify(h)
    # groups with room under their round's initial end, by finish (concentrate mode only)
    under: dict[int, list[tuple[float, int]]] = {}
    if concentrate:
        for g, k in enumerate(kinds):
            if finish_g[g] < end0_g[g]:
                under.setdefault(int(k), []).append((float(finish_g[g]), g))
        for h in under.values():
            heapq.heapify(h)
    rest = [int(i) for i in order if not placed[i]]
    for i in rest:
        best_g, best_val = -1, (2, math.inf)
        for k, h in heaps.items():
            c = cost[i, k]
            if not np.isfinite(c):
                continue
            u = under.get(k)
            while u and (u[0][0] != finish_g[u[0][1]] or finish_g[u[0][1]] >= end0_g[u[0][1]]):
                heapq.heappop(u)  # stale or full
            if u:
                g = u[0][1]
                if finish_g[g] + c <= end0_g[g] and st.mem[g] + p.weight[i] <= p.capacity[k] + _EPS:
                    val = (0, finish_g[g] - end0_g[g] + c + 1e-9 * area[i, k])
                    if val < best_val:
                        best_g, best_val = g, val
            while h and h[0][0] != finish_g[h[0][1]]:
                heapq.heappop(h)  # stale entry
            if not h:
                continue
            g = h[0][1]
            if st.mem[g] + p.weight[i] > p.capacity[k] + _EPS:  # rare: scan this kind
                members = np.flatnonzero((kinds == k) & (st.mem + p.weight[i] <= p.capacity[k] + _EPS))
                if not members.size:
                    continue
                g = int(members[np.argmin(finish_g[members])])
            # tie-break towards cheaper device-time so that small kinds absorb small items
            val = (1, finish_g[g] + c + 1e-9 * area[i, k])
            if val < best_val:
                best_g, best_val = g, val
        if best_g < 0:
            raise PartitionInfeasible(f"item {i} fits in no group with room left", "capacity",
                                      item=i)
        st.put(i, best_g)
        finish_g[best_g] = fixed_g[best_g] + st.load[best_g]
        heapq.heappush(heaps[int(kinds[best_g])], (float(finish_g[best_g]), best_g))
        if concentrate and finish_g[best_g] < end0_g[best_g]:
            heapq.heappush(under.setdefault(int(kinds[best_g]), []), (float(finish_g[best_g]), best_g))
    if p.nonempty_groups:
        _fix_empty(st, cost)
    return st


def _absorb_free(st: _State, r: int, cost: np.ndarray) -> bool:
    """Give round ``r``'s free devices to one of its groups by switching that group to a kind
    exactly that much larger that all its items may use (used when too few items are left to
    open new groups)."""
    p = st.p
    free = int(st.free[r])
    allowed = np.isfinite(cost)
    for g in sorted((g for g in range(len(st.g_round)) if st.g_round[g] == r),
                    key=lambda g: -st.load[g]):
        k = st.g_kind[g]
        want = int(p.devices[k]) + free
        items = st.g_items[g]
        for k2 in np.flatnonzero(p.devices == want):
            if allowed[items, k2].all() and p.weight[items].sum() <= p.capacity[k2] + _EPS:
                st.g_kind[g] = int(k2)
                st.load[g] = float(p.cost[items, k2].sum())
                st.free[r] -= free
                return True
    return False


def _fix_empty(st: _State, cost: np.ndarray) -> None:
    """Give every empty group one item from the fullest group that can spare one."""
    p = st.p
    for g in range(len(st.g_items)):
        if st.g_items[g]:
            continue
        k = st.g_kind[g]
        best = None
        for h in np.argsort(-st.load, kind="stable"):
            if len(st.g_items[h]) < 2:
                continue
            for i in sorted(st.g_items[h], key=lambda i: cost[i, k]):
                if np.isfinite(cost[i, k]) and p.weight[i] <= p.capacity[k] + _EPS:
                    best = (i, int(h))
                    break
            if best:
                break
        if best is None:
            # drop the group instead (its devices stay idle) when filling is not required
            if not p.fill_devices:
                continue
            raise PartitionInfeasible("too few items to give every group one", "devices")
        st.take(best[0], best[1])
        st.put(best[0], g)


# ----------------------------------------------------------------------------------------------
# local search


def _retype_groups(st: _State, groups: list[int] | None = None) -> int:
    """Switch groups to the kind with the same device count that runs their items fastest
    (two kinds with equal device counts but different per-item costs); returns how many
    switched."""
    p = st.p
    allowed = p.allowed()
    switched = 0
    for g in (range(len(st.g_round)) if groups is None else groups):
        items = st.g_items[g]
        if not items:
            continue
        k = st.g_kind[g]
        same = np.flatnonzero(p.devices == p.devices[k])
        if same.size < 2:
            continue
        ok = allowed[np.ix_(items, same)].all(axis=0) & \
            (p.weight[items].sum() <= p.capacity[same] + _EPS)
        loads = np.where(ok, p.cost[np.ix_(items, same)].sum(axis=0) + p.fixed[same], np.inf)
        best = int(same[int(np.argmin(loads))])
        if best != k and loads.min() < p.fixed[k] + st.load[g] - 1e-12:
            st.g_kind[g] = best
            st.load[g] = float(p.cost[items, best].sum())
            switched += 1
    return switched


def _local_search(st: _State, deadline: float, max_iter: int = 100000) -> int:
    """Improve the plan with item moves and swaps driven by each round's slowest group.

    A move is taken when it lowers the objective, or keeps it and lowers the slowest group's
    load without raising any round (plateau moves when several groups tie at the top).
    Returns the number of moves applied.
    """
    p = st.p
    _retype_groups(st)
    cost = np.where(p.allowed(), p.cost, np.inf)
    weight = p.weight
    rounds, kinds = st.arrays()
    cap_g = p.capacity[kinds]
    fixed_g = p.fixed[kinds]
    n_groups = len(rounds)
    applied = 0
    stuck = np.zeros(st.m, dtype=bool)
    it = 0
    while it < max_iter:
        it += 1
        if it % 16 == 0 and time.perf_counter() > deadline:
            break
        t = fixed_g + st.load
        rmax = np.full(st.m, -np.inf)
        np.maximum.at(rmax, rounds, t)
        # the round whose top group we try to lower: the not-stuck round with the largest time
        cand_r = [r for r in np.argsort(-rmax, kind="stable") if not stuck[r]]
        if not cand_r:
            break
        r = int(cand_r[0])
        in_r = rounds == r
        tr = np.where(in_r, t, -np.inf)
        g = int(np.argmax(tr))
        second = float(np.max(np.where(np.arange(n_groups) == g, -np.inf, tr)))
        second = max(second, -np.inf)
        tg = t[g]
        items = np.asarray(st.g_items[g], dtype=int)
        can_leave = len(items) > 1 or not p.nonempty_groups
        best = None  # (delta, pairmax, kind, ...)
        others_max = rmax.copy()  # round max of the target's round
        # ---- moves
        if can_leave:
            new_g = tg - cost[items, kinds[g]]  # (I,)
            new_h = t[None, :] + cost[items][:, kinds]  # (I, G)
            ok = np.isfinite(new_h) & (st.mem[None, :] + weight[items, None] <= cap_g[None, :] + _EPS)
            ok[:, g] = False
            top_r = np.maximum(new_g, second)[:, None]  # new time of round r without target
            same = in_r[None, :]
            new_r_same = np.maximum(top_r, new_h)
            delta_same = new_r_same - tg
            delta_cross = (np.maximum(top_r, -np.inf) - tg) + \
                np.maximum(0.0, new_h - others_max[rounds][None, :])
            delta = np.where(same, delta_same, delta_cross)
            pairmax = np.maximum(new_g[:, None], new_h)
            # plateau moves: inside a round, the pair's max must drop; across rounds, work may
            # only flow to a round that lasts longer, under its current end (no cycles)
            tol = 1e-9 * max(tg, 1.0)
            up = (others_max[rounds] > tg + tol)[None, :] & (new_h <= others_max[rounds][None, :] + tol)
            plateau = np.where(same, pairmax < tg - tol, up)
            accept = ok & ((delta < -tol) | ((delta <= 1e-12) & plateau))
            if accept.any():
                score = np.where(accept, delta * 1e6 + np.where(same, pairmax, new_g[:, None]), np.inf)
                a, h = np.unravel_index(int(np.argmin(score)), score.shape)
                best = ("move", float(score[a, h]), int(items[a]), int(h))
        # ---- swaps with any item outside g (only when no move helps: they cost n x |g|)
        others = np.flatnonzero(st.item_group != g) if best is None else np.zeros(0, dtype=int)
        if others.size and len(items):
            hj = st.item_group[others]  # group of j
            cj_g = cost[others, kinds[g]]  # j in g
            cj_h = cost[others, kinds[hj]]  # j in its own group (current)
            ci_h = cost[items][:, kinds[hj]]  # (I, J): i in j's group
            new_g = tg - cost[items, kinds[g]][:, None] + cj_g[None, :]
            new_h = t[hj][None, :] - cj_h[None, :] + ci_h
            ok = (np.isfinite(new_g) & np.isfinite(new_h)
                  & (st.mem[g] - weight[items][:, None] + weight[others][None, :] <= cap_g[g] + _EPS)
                  & (st.mem[hj][None, :] - weight[others][None, :] + weight[items][:, None]
                     <= cap_g[hj][None, :] + _EPS))
            same = (rounds[hj] == r)[None, :]
            top_r = np.maximum(new_g, second)
            delta_same = np.maximum(top_r, new_h) - tg
            delta_cross = (top_r - tg) + np.maximum(0.0, new_h - others_max[rounds[hj]][None, :])
            delta = np.where(same, delta_same, delta_cross)
            pairmax = np.maximum(new_g, new_h)
            tol = 1e-9 * max(tg, 1.0)
            rmax_h = others_max[rounds[hj]][None, :]
            up = (rmax_h > tg + tol) & (new_h <= rmax_h + tol) & (new_g < tg - tol)
            plateau = np.where(same, pairmax < tg - tol, up)
            accept = ok & ((delta < -tol) | ((delta <= 1e-12) & plateau))
            if accept.any():
                score = np.where(accept, delta * 1e6 + np.where(same, pairmax, new_g), np.inf)
                a, b = np.unravel_index(int(np.argmin(score)), score.shape)
                if best is None or score[a, b] < best[1]:
                    best = ("swap", float(score[a, b]), int(items[a]), int(others[b]))
        if best is None:
            if _retype_groups(st, [g]):  # same devices, faster kind for what g now holds
                kinds = np.asarray(st.g_kind, dtype=int)
                cap_g = p.capacity[kinds]
                fixed_g = p.fixed[kinds]
                applied += 1
                continue
            stuck[r] = True
            continue
        if best[0] == "move":
            _, _, i, h = best
            st.take(i, g)
            st.put(i, h)
            stuck[rounds[h]] = False
        else:
            _, _, i, j = best
            h = int(st.item_group[j])
            st.take(i, g)
            st.take(j, h)
            st.put(i, h)
            st.put(j, g)
            stuck[rounds[h]] = False
        stuck[r] = False
        applied += 1
        if applied % 256 == 0:
            st.recompute()
    st.recompute()
    return applied


# ----------------------------------------------------------------------------------------------
# solve


def _buckets(key: np.ndarray, num_buckets: int, singles: int) -> list[np.ndarray]:
    """Items sorted by ``key`` descending: the ``singles`` largest alone, the rest in buckets of
    (nearly) equal count.  Returns index arrays, largest bucket first."""
    order = np.argsort(-key, kind="stable")
    singles = min(singles, len(order))
    out = [order[i:i + 1] for i in range(singles)]
    rest = order[singles:]
    nb = max(1, min(num_buckets - singles, len(rest)))
    if len(rest):
        out.extend(b for b in np.array_split(rest, nb) if len(b))
    return out


def _round_config_milp(p: PartitionProblem, items: np.ndarray, area: np.ndarray, end: float,
                       num_buckets: int, time_limit_s: float):
    """Feasibility MILP for one round holding ``items``: can groups be chosen (integer counts
    per kind, devices filled) and the items' buckets spread over the kinds (integer counts) so
    that every kind's bucket-mean load fits its groups within ``end``, with memory, non-empty
    groups and every item finishing within ``end``?  Linear because ``end`` is fixed (the
    caller bisects on it).  Returns (group counts, per-bucket counts, buckets, SolveResult)."""
    import pulp

    from solvers.milp import solve_pulp

    allowed = p.allowed()
    K = p.n_kinds
    singles = int(min(8, max(1, num_buckets // 3)))
    buckets = [items[b] for b in _buckets(area[items].min(axis=1), num_buckets, singles)]
    prob = pulp.LpProblem("round", pulp.LpMinimize)
    room = end - p.fixed
    n = {k: pulp.LpVariable(f"n_{k}", 0, p.num_devices // int(p.devices[k]), cat="Integer")
         for k in range(K) if p.devices[k] <= p.num_devices and room[k] > 0}
    x = {}
    for b, idx in enumerate(buckets):
        ok = allowed[idx].all(axis=0)
        for k in n:
            if ok[k] and p.cost[idx, k].max() <= room[k] * (1 + 1e-12):
                x[b, k] = pulp.LpVariable(f"x_{b}_{k}", 0, len(idx), cat="Integer")
    for b, idx in enumerate(buckets):
        terms = [x[b, k] for k in n if (b, k) in x]
        if not terms:
            return None, None, buckets, None
        prob += pulp.lpSum(terms) == len(idx)
    devs = pulp.lpSum(int(p.devices[k]) * v for k, v in n.items())
    prob += (devs == p.num_devices) if p.fill_devices else (devs <= p.num_devices)
    for k, nk in n.items():
        xs = [(b, x[b, k]) for b in range(len(buckets)) if (b, k) in x]
        if not xs:
            prob += nk == 0
            continue
        prob += pulp.lpSum(v * float(p.cost[buckets[b], k].mean()) for b, v in xs) <= float(room[k]) * nk
        prob += pulp.lpSum(v * float(p.weight[buckets[b]].mean()) for b, v in xs) <= float(p.capacity[k]) * nk
        if p.nonempty_groups:
            prob += pulp.lpSum(v for _, v in xs) >= nk
    # among the configurations that fit, the least device-time
    prob += pulp.lpSum(v * float(area[buckets[b], k].mean()) for (b, k), v in x.items())
    res = solve_pulp(prob, time_limit_s=max(0.02, time_limit_s), backend="highs", gap_rel=1e-2)
    if not res.has_solution:
        return None, None, buckets, res
    counts = {k: int(round(v.value() or 0)) for k, v in n.items()}
    xb = {(b, k): int(round(v.value() or 0)) for (b, k), v in x.items()}
    return counts, xb, buckets, res


def _milp_plan(p: PartitionProblem, m: int, incumbent: _State, area: np.ndarray,
               num_buckets: int, time_limit_s: float) -> tuple[_State | None, dict[str, Any]]:
    """Per round, a makespan MILP over (group counts per kind) x (bucket counts per
    kind), warm-started by the incumbent: its round end is the upper end of a bisection on the
    round's end (each step the linear feasibility MILP of :func:`_round_config_milp`), the
    round's lower bound the lower end.  The best configuration found per round is realised on
    the real items (largest items to the largest kinds, longest-first inside a kind) and the
    whole plan polished by the local search, so that bucketing costs nothing.  Counts, never
    slots: no symmetric formulation."""
    start = time.perf_counter()
    deadline = start + time_limit_s
    rounds_g, kinds_g = incumbent.arrays()
    t = p.fixed[kinds_g] + incumbent.load
    ends = np.zeros(m)
    np.maximum.at(ends, rounds_g, t)
    info: dict[str, Any] = {"rounds": [], "backend": "highs"}
    st = _State(p, m)
    improved = False
    cost = np.where(p.allowed(), p.cost, np.inf)
    fmin = float(p.fixed.min())
    for r in range(m):
        items = np.asarray(sorted(i for g, rr in enumerate(rounds_g) if rr == r
                                  for i in incumbent.g_items[g]), dtype=int)
        lo = fmin + float(area[items].min(axis=1).sum()) / p.num_devices
        lo = max(lo, float((p.fixed[None, :] + cost[items]).min(axis=1).max()))
        hi = float(ends[r])
        best = None
        steps = 0
        last = None
        # a fixed number of steps with a fixed limit per MILP keeps plans reproducible; the
        # deadline is only a safety net
        while hi - lo > 2e-3 * hi and time.perf_counter() < deadline and steps < 4:
            mid = 0.5 * (lo + hi) if best is not None or steps else lo + 0.7 * (hi - lo)
            counts, xb, buckets, res = _round_config_milp(p, items, area, mid, num_buckets, 0.25)
            last = res
            steps += 1
            if counts is not None:
                best = (mid, counts, xb, buckets)
                hi = mid
            else:
                lo = mid
        info["rounds"].append({"round": r, "incumbent_end": float(ends[r]),
                               "milp_end": None if best is None else float(best[0]),
                               "bisection_steps": steps,
                               "last_status": None if last is None else last.status})
        if best is None:  # keep the incumbent's groups for this round
            for g, rr in enumerate(rounds_g):
                if rr == r:
                    h = st.open(r, int(kinds_g[g]))
                    for i in incumbent.g_items[g]:
                        st.put(i, h)
            continue
        improved = True
        _, counts, xb, buckets = best
        quota: dict[int, list[int]] = {}
        for b, idx in enumerate(buckets):
            its = idx[np.argsort(-area[idx].min(axis=1), kind="stable")]
            cls = sorted((k for k in counts if (b, k) in xb and xb[b, k] > 0),
                         key=lambda k: (-int(p.devices[k]), k))
            pos = 0
            for k in cls:
                quota.setdefault(k, []).extend(int(i) for i in its[pos:pos + xb[b, k]])
                pos += xb[b, k]
            if pos < len(its):
                quota.setdefault(cls[0] if cls else -1, []).extend(int(i) for i in its[pos:])
        left: list[int] = list(quota.pop(-1, []))
        for k in sorted(counts):
            groups = [st.open(r, k) for _ in range(counts[k])]
            for i in sorted(quota.get(k, []), key=lambda i: -cost[i, k]):
                fit = [g for g in groups if st.mem[g] + p.weight[i] <= p.capacity[k] + _EPS]
                if not fit:
                    left.append(i)
                    continue
                st.put(i, min(fit, key=lambda g: (st.load[g], g)))
        rg, kg = st.arrays()
        for i in left:
            mask = (rg == r) & np.isfinite(cost[i, kg]) & (st.mem + p.weight[i] <= p.capacity[kg] + _EPS)
            if not mask.any():
                return None, info
            g = int(np.flatnonzero(mask)[np.argmin((st.load + cost[i, kg])[mask])])
            st.put(i, g)
    info["time_s"] = time.perf_counter() - start
    info["status"] = "feasible" if improved else "no_better_configuration"
    if not improved:
        return None, info
    if p.nonempty_groups:
        try:
            _fix_empty(st, cost)
        except PartitionInfeasible:
            return None, info
    return st, info


def _breakpoint_heights(p: PartitionProblem, area: np.ndarray, h0: float,
                        heights: tuple[float, ...], top: int = 2) -> list[float]:
    """Absolute heights (above ``h0 * (1 + max(heights))``) at which one of the ``top``
    longest items may switch to a kind with less device-time."""
    finite = np.isfinite(area)
    out: set[float] = set()
    hi = h0 * (1 + max(heights))
    for i in np.argsort(-area.min(axis=1), kind="stable")[:top]:
        ks = np.flatnonzero(finite[i])
        for k in ks:
            c = float(p.cost[i, k]) * (1 + 1e-9)
            cheaper = area[i, k] <= area[i, ks][p.cost[i, ks] <= c].min() + 1e-12
            if c > hi and cheaper:
                out.add(round(c, 12))
    return sorted(out)


def _default_kinds(problem: PartitionProblem, area: np.ndarray) -> list[int]:
    """Kinds that most items find cheapest in device-time (at least the single best one)."""
    pref = np.argmin(area, axis=1)
    counts = np.bincount(pref, minlength=problem.n_kinds)
    top = int(np.argmax(counts))
    return [top]


def solve_partition(problem: PartitionProblem, *, rounds: int | None = None,
                    extra_rounds: int = 1, time_limit_s: float = 0.8, method: str = "auto",
                    num_buckets: int = 24,
                    heights: tuple[float, ...] = (0.0, 0.02, 0.05, 0.1, 0.2, 0.35, 0.6)
                    ) -> PartitionSolution:
    """Split the items into rounds of groups minimising the sum of round makespans.

    Args:
        problem: the instance (see :class:`PartitionProblem`).
        rounds: a fixed number of rounds, or ``None`` to try ``m_min .. m_min + extra_rounds``.
        extra_rounds: how many round counts beyond the memory-forced one to try.
        time_limit_s: wall-clock budget for the whole solve (seconds); checked between phases
            and inside the local search.
        method: "auto" (greedy + MILP + local search while time allows), "milp" (always run the
            MILP), "heuristic" (greedy + local search only: the fast path).
        num_buckets: item buckets in the aggregated MILP.
        heights: relative slack over the per-round lower bound tried as target heights by the
            greedy construction.

    Raises:
        PartitionInfeasible: an item fits no kind, or the kinds cannot cover the devices.
    """
    if method not in ("auto", "milp", "heuristic"):
        raise ValueError(f"unknown method {method!r}")
    start = time.perf_counter()
    deadline = start + time_limit_s
    p = problem
    if p.n_items == 0:
        raise PartitionInfeasible("no items", "items")
    m_min = min_rounds(p)
    area = p.area()
    min_area = area.min(axis=1)
    default = _default_kinds(p, area)
    candidates = [rounds] if rounds else list(range(m_min, m_min + extra_rounds + 1))
    candidates = [m for m in candidates if m >= 1 and m <= p.n_items]
    if rounds and rounds < m_min:
        raise PartitionInfeasible(f"{rounds} rounds cannot hold the items' weight "
                                  f"(at least {m_min} needed)", "capacity")
    best_st: _State | None = None
    best_obj = math.inf
    best_method = ""
    milp_info: dict[str, Any] | None = None
    tried: list[dict[str, Any]] = []
    single = float(np.where(p.allowed(), p.cost, np.inf).min(axis=1).max())
    for idx, m in enumerate(candidates):
        if idx > 0 and time.perf_counter() > deadline:
            break
        # a round count whose bound is already worse than the incumbent cannot win
        if lower_bound(p, m) >= best_obj:
            tried.append({"rounds": m, "objective": None, "skipped": "bound"})
            continue
        h0 = max(float(min_area.sum()) / (m * p.num_devices), single)
        m_best: _State | None = None
        m_obj = math.inf
        m_method = ""
        now = time.perf_counter()
        # later round counts rarely win (one more per-group constant): most time to this one
        budget_end = now + (deadline - now) * (0.75 if idx < len(candidates) - 1 else 1.0)
        use_milp = method == "milp" or (method == "auto" and p.n_items <= 4096)
        ls_end = now + (budget_end - now) * (0.7 if use_milp else 1.0)
        # cheap variants first, so the slow ones (long rounds of long items) inherit spare time
        variants = [(slack, False) for slack in heights] + \
            ([(slack, True) for slack in heights] if m > 1 else [])
        if p.n_items > 3000:  # the fast path for very large batches: the variants that win there
            variants = [v for v in variants if v in ((0.0, False), (0.05, False), (0.2, True), (0.6, True))] \
                or variants[:2]
        # heights where the longest items change kind: a long round built around the longest
        # item in its cheapest (device-time) kind can beat spreading it thinly
        if m > 1:
            for h in _breakpoint_heights(p, area, h0, heights):
                variants.append((h / h0 - 1.0, True))
        for j, (slack, conc) in enumerate(variants):
            if j > 0 and time.perf_counter() > deadline:
                break  # safety net only: normally every variant runs (deterministic plans)
            try:
                st = _construct(p, m, h0 * (1 + slack), area, default, concentrate=conc)
            except PartitionInfeasible:
                continue
            per = (ls_end - time.perf_counter()) / max(1, len(variants) - j)
            _local_search(st, time.perf_counter() + max(per, 0.02))
            obj = st.objective()
            if obj < m_obj - 1e-12:
                m_best, m_obj, m_method = st, obj, "greedy+ls"
        # the MILP only where the incumbent is not already within 1% of the bound
        if use_milp and m_best is not None and (method == "milp" or
                                                 (m_obj - lower_bound(p, m)) > 0.01 * m_obj):
            st2, info = _milp_plan(p, m, m_best, area, num_buckets,
                                   max(0.05, deadline + time_limit_s - time.perf_counter()))
            milp_info = info
            if st2 is not None:
                _local_search(st2, max(budget_end, time.perf_counter() + 0.05))
                obj2 = st2.objective()
                if obj2 < m_obj - 1e-12:
                    m_best, m_obj, m_method = st2, obj2, "milp+ls"
        tried.append({"rounds": m, "objective": None if m_best is None else m_obj})
        if m_best is not None and m_obj < best_obj:
            best_st, best_obj, best_method = m_best, m_obj, m_method
    if best_st is None and not rounds:
        # packing long items needs more rounds than memory alone says: grow the count
        m = (candidates[-1] if candidates else m_min) + 1
        while best_st is None and m <= p.n_items and time.perf_counter() < deadline + time_limit_s:
            h0 = max(float(min_area.sum()) / (m * p.num_devices), single)
            for slack, conc in ((0.0, False), (0.0, True), (0.6, True)):
                try:
                    st = _construct(p, m, h0 * (1 + slack), area, default, concentrate=conc)
                except PartitionInfeasible:
                    continue
                _local_search(st, time.perf_counter() + max(0.05, deadline - time.perf_counter()))
                if st.objective() < best_obj:
                    best_st, best_obj, best_method = st, st.objective(), "greedy+ls"
            tried.append({"rounds": m, "objective": None if best_st is None else best_obj})
            m += max(1, m // 4)
    if best_st is None:
        raise PartitionInfeasible("no feasible plan found for the round counts tried", "capacity")
    best_st.compact() if not p.nonempty_groups else None
    lb = lower_bound(p)
    lb_simple = lower_bound(p, refined=False)
    elapsed = time.perf_counter() - start
    gap = relative_gap(best_obj, lb)
    status = "optimal" if gap is not None and gap <= 1e-9 else "feasible"
    result = SolveResult(status, best_obj, lb, gap, elapsed, best_method, time_limit_s)
    rnds = best_st.to_rounds()
    return PartitionSolution(rounds=rnds, round_times=[max(g.time for g in grp) for grp in rnds],
                             objective=best_obj, lower_bound=lb, simple_lower_bound=lb_simple,
                             gap=float(gap or 0.0),
                             method=best_method, result=result, milp=milp_info, tried=tried)


def evaluate(problem: PartitionProblem, rounds: list[list[tuple[int, list[int]]]]) -> dict[str, Any]:
    """Score and check a plan given as rounds of (kind, items).

    Returns ``{"objective", "round_times", "group_times", "violations"}``; ``violations`` lists
    broken rules (partition, capacity, devices, empty groups, disallowed kind) and is empty
    for a valid plan.
    """
    p = problem
    seen = np.zeros(p.n_items, dtype=int)
    violations: list[str] = []
    round_times, group_times = [], []
    allowed = p.allowed()
    for r, groups in enumerate(rounds):
        used = 0
        times = []
        for k, items in groups:
            used += int(p.devices[k])
            idx = np.asarray(items, dtype=int)
            seen[idx] += 1
            if not len(idx) and p.nonempty_groups:
                violations.append(f"round {r}: empty group")
            if len(idx) and not allowed[idx, k].all():
                violations.append(f"round {r}: item in a kind it may not use")
            if p.weight[idx].sum() > p.capacity[k] + 1e-6:
                violations.append(f"round {r}: group over capacity")
            times.append(float(p.fixed[k] + p.cost[idx, k].sum()))
        if used > p.num_devices or (p.fill_devices and used != p.num_devices):
            violations.append(f"round {r}: groups use {used} of {p.num_devices} devices")
        group_times.append(times)
        round_times.append(max(times) if times else 0.0)
    if np.any(seen != 1):
        violations.append("not a partition of the items")
    return {"objective": float(sum(round_times)), "round_times": round_times,
            "group_times": group_times, "violations": violations}
