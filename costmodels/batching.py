"""Iteration-level (continuous-batching) serving simulation over a request trace.

Two pieces:

* :class:`IterationCostTable` turns the op-level cost model of one engine (a callable that lists
  the ops of an :class:`~costmodels.ops.Iteration`, plus a timer for one op) into an O(1)
  lookup.  Every op except attention and the LM head depends only on the number of new tokens
  in the iteration, so its time is tabulated exactly on every integer up to 32 tokens and on a
  geometric grid above (linear interpolation between grid points); attention FLOPs and bytes are
  linear in (query-key pairs, decode context, tokens), so their coefficients are read off once
  and the roofline of the attention op is evaluated exactly per iteration; the LM head depends
  on the sequences that sample.  Building a table costs ~100 op-list evaluations (tens of ms);
  a lookup costs a few microseconds.

* :func:`simulate` runs one engine (one replica, or one pipeline micro-batch lane of it) over a
  trace with a vLLM-like scheduler: running decodes first (one token each), then chunked
  prefill of partially prefilled requests and newly admitted ones within the token budget
  ``max_num_batched_tokens``; at most ``max_num_seqs`` running; admission reserves the prompt's
  KV (plus a 1% watermark); when decode growth overflows the KV capacity the most recently
  admitted request is preempted and later recomputed (prompt + generated tokens).  Per-slot
  state lives in numpy arrays; stretches of pure-decode iterations between events (an arrival
  that could be admitted, a completion, KV exhaustion) are advanced in one step, with the time
  of ``k`` steps = ``k`` x the step time at the middle context (exact when attention is
  linear in context, i.e. within one roofline regime).

Units: seconds, tokens.  The simulation is deterministic.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Callable

import numpy as np

from costmodels.ops import Iteration, Op

#: op names whose cost depends on the number of sampled sequences rather than on tokens
HEAD_OPS = ("lm_head", "final_norm")
_EXACT_TOKENS = 32
_GRID_POINTS = 40


class IterationCostTable:
    """Seconds of one engine iteration as a fast function of its content.

    Args:
        ops_for: lists the ops of one iteration (the engine's latency path).
        op_time_s: seconds of one op over all its instances (``count``).
        op_params: for an op, ``(overhead_s, peak_flops, compute_curve, hbm_bw, memory_curve)``
            used to evaluate the attention roofline exactly per iteration.
        max_tokens: largest token count tabulated (bigger ones are extrapolated linearly).
        max_seqs: largest sampled-sequence count tabulated.
        time_scale: multiplies every time (pipeline stage imbalance, calibration).
    """

    def __init__(self, ops_for: Callable[[Iteration], list[Op]], op_time_s: Callable[[Op], float],
                 op_params: Callable[[Op], tuple], *, max_tokens: int, max_seqs: int,
                 time_scale: float = 1.0) -> None:
        self.max_tokens = int(max(max_tokens, 2))
        self.max_seqs = int(max(max_seqs, 2))
        self.time_scale = float(time_scale)

        def rest(it: Iteration) -> float:
            return sum(op_time_s(o) for o in ops_for(it) if o.kind != "attention" and o.name not in HEAD_OPS)

        def head(it: Iteration) -> float:
            return sum(op_time_s(o) for o in ops_for(it) if o.name in HEAD_OPS)

        grid = _grid(self.max_tokens)
        vals = [rest(Iteration(tokens=int(t), sampled_tokens=1)) for t in grid]
        xs = np.arange(self.max_tokens + 1, dtype=float)
        self._rest = np.interp(xs, grid, vals).tolist()
        self._rest[0] = 0.0
        self._rest_slope = (vals[-1] - vals[-2]) / max(grid[-1] - grid[-2], 1)
        sgrid = _grid(self.max_seqs, exact=8, points=16)  # the LM head is near-linear in sequences
        svals = [head(Iteration(tokens=int(s), sampled_tokens=int(s))) for s in sgrid]
        self._head = np.interp(np.arange(self.max_seqs + 1, dtype=float), sgrid, svals).tolist()
        self._head[0] = 0.0
        self._head_slope = (svals[-1] - svals[-2]) / max(sgrid[-1] - sgrid[-2], 1)
        # attention: flops / bytes are affine in (pairs, decode context, tokens); read coefficients
        base = _attention_ops(ops_for(Iteration(tokens=1)))
        d_pair = _attention_ops(ops_for(Iteration(tokens=1, prefill_pairs=1e6)))
        d_ctx = _attention_ops(ops_for(Iteration(tokens=1, decode_context_tokens=1e6)))
        d_tok = _attention_ops(ops_for(Iteration(tokens=1001)))
        self._attn = []
        for b, p, c, t in zip(base, d_pair, d_ctx, d_tok):
            overhead, peak, ccurve, bw, mcurve = op_params(b)
            coef_f = ((p.flops - b.flops) / 1e6, (c.flops - b.flops) / 1e6, (t.flops - b.flops) / 1e3,
                      b.flops - (t.flops - b.flops) / 1e3)
            coef_b = ((p.bytes - b.bytes) / 1e6, (c.bytes - b.bytes) / 1e6, (t.bytes - b.bytes) / 1e3,
                      b.bytes - (t.bytes - b.bytes) / 1e3)
            self._attn.append((b.count, overhead, peak, ccurve, bw, mcurve,
                               coef_f, coef_b))

    def attention_s(self, tokens: float, pairs: float, ctx: float) -> float:
        total = 0.0
        for count, overhead, peak, cc, bw, mc, cf, cb in self._attn:
            f = cf[0] * pairs + cf[1] * ctx + cf[2] * tokens + cf[3]
            b = cb[0] * pairs + cb[1] * ctx + cb[2] * tokens + cb[3]
            tc = f / (peak * cc.at(f)) if f > 0 else 0.0
            tm = b / (bw * mc.at(b)) if b > 0 else 0.0
            total += count * (overhead + (tc if tc > tm else tm))
        return total

    def time_s(self, tokens: int, pairs: float = 0.0, ctx: float = 0.0, seqs: int = 1) -> float:
        """Seconds of an iteration with ``tokens`` new tokens, ``pairs`` prefill query-key pairs,
        ``ctx`` keys read by decode tokens and ``seqs`` sequences that sample."""
        if tokens <= 0:
            return 0.0
        if tokens <= self.max_tokens:
            r = self._rest[tokens]
        else:
            r = self._rest[-1] + self._rest_slope * (tokens - self.max_tokens)
        s = max(1, seqs)
        h = self._head[s] if s <= self.max_seqs else self._head[-1] + self._head_slope * (s - self.max_seqs)
        return (r + h + self.attention_s(tokens, pairs, ctx)) * self.time_scale

    def decode_s(self, batch: int, mean_context: float) -> float:
        """Seconds of one pure-decode step of ``batch`` sequences at ``mean_context`` tokens."""
        return self.time_s(batch, 0.0, batch * mean_context, batch)

    def prefill_s(self, input_len: int, chunk: int | None = None) -> float:
        """Seconds to prefill one prompt of ``input_len`` tokens alone, in chunks of ``chunk``."""
        chunk = chunk or input_len
        total, done = 0.0, 0
        while done < input_len:
            c = min(chunk, input_len - done)
            total += self.time_s(c, c * done + c * (c + 1) / 2, 0.0, 1)
            done += c
        return total


def _grid(n: int, exact: int = _EXACT_TOKENS, points: int = _GRID_POINTS) -> np.ndarray:
    """Every integer up to ``exact``, then ``points`` geometric points up to ``n``."""
    first = np.arange(1, min(n, exact) + 1, dtype=float)
    if n <= exact:
        return first
    geo = np.unique(np.round(np.geomspace(exact + 1, n, points)))
    return np.concatenate([first, geo])


def _attention_ops(ops: list[Op]) -> list[Op]:
    return [o for o in ops if o.kind == "attention"]


@dataclass(frozen=True)
class EngineLimits:
    """Scheduler limits of one engine (vLLM names): KV capacity in tokens, sequences, token budget."""

    kv_capacity_tokens: int
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    watermark: float = 0.01


@dataclass(frozen=True)
class Trace:
    """Requests sorted by arrival: arrival time (s), prompt tokens, output tokens (numpy arrays)."""

    arrival_s: np.ndarray
    input_len: np.ndarray
    output_len: np.ndarray

    def __len__(self) -> int:
        return int(self.arrival_s.shape[0])

    def scaled_to_rate(self, rate_rps: float) -> "Trace":
        """The same requests with inter-arrival times stretched so the mean rate is ``rate_rps``."""
        n = len(self)
        span = float(self.arrival_s[-1] - self.arrival_s[0]) if n > 1 else 0.0
        if n < 2 or span <= 0:
            arr = np.arange(n, dtype=float) / rate_rps
        else:
            native = (n - 1) / span
            arr = (self.arrival_s - self.arrival_s[0]) * (native / rate_rps)
        return Trace(arr, self.input_len, self.output_len)

    def split_round_robin(self, ways: int, lane: int = 0) -> "Trace":
        """Every ``ways``-th request starting at ``lane`` (what a round-robin router sends one replica)."""
        if ways <= 1:
            return self
        sl = slice(lane, None, ways)
        return Trace(self.arrival_s[sl], self.input_len[sl], self.output_len[sl])

    @property
    def mean_rate_rps(self) -> float:
        n = len(self)
        span = float(self.arrival_s[-1] - self.arrival_s[0]) if n > 1 else 0.0
        return (n - 1) / span if span > 0 else math.inf


@dataclass(frozen=True)
class SimResult:
    """Per-request outcomes (``inf`` where a request never got served) and engine counters."""

    ttft_s: np.ndarray
    tpot_s: np.ndarray
    finish_s: np.ndarray
    first_token_s: np.ndarray
    makespan_s: float
    iterations: int
    events: int
    preemptions: int
    aborted: bool
    output_tokens: int

    @property
    def throughput_tokens_per_s(self) -> float:
        return self.output_tokens / self.makespan_s if self.makespan_s > 0 else 0.0

    def mean_decode_residence_s(self) -> float:
        """Mean seconds a served request spends decoding (first token to finish)."""
        ok = np.isfinite(self.finish_s) & np.isfinite(self.first_token_s)
        return float((self.finish_s[ok] - self.first_token_s[ok]).mean()) if ok.any() else math.inf


def little_stable(rate_rps: float, residence_s: float, max_concurrency: float) -> bool:
    """Little's law: a steady state exists only if rate x mean residence <= the concurrency the
    engine can hold.  A finite trace shorter than the engine's capacity never fills it, so the
    simulation alone cannot see that overload; this exact check does."""
    return rate_rps * residence_s <= max_concurrency


def simulate(trace: Trace, cost: IterationCostTable, limits: EngineLimits, *, prefilled: bool = False,
             ttft_offset_s: np.ndarray | None = None, ttft_slo_s: float | None = None,
             tpot_slo_s: float | None = None, max_violations: int | None = None) -> SimResult:
    """Run one engine over ``trace``.

    Args:
        prefilled: the prompts' KV arrives ready (a decode instance of a disaggregated plan);
            admission still needs KV room but costs no prefill compute.
        ttft_offset_s: per-request seconds added to TTFT (e.g. a KV transfer), same order as trace.
        ttft_slo_s / tpot_slo_s / max_violations: stop early (``aborted``) once more than
            ``max_violations`` requests are known to miss an SLO; the caller only needs to know
            that the target is missed.
    """
    n = len(trace)
    arr = trace.arrival_s.tolist()
    in_len = trace.input_len.astype(np.int64).tolist()
    out_len = trace.output_len.astype(np.int64).tolist()
    off = ttft_offset_s.tolist() if ttft_offset_s is not None else None
    cap = int(limits.kv_capacity_tokens)
    S = int(limits.max_num_seqs)
    budget_max = int(limits.max_num_batched_tokens)
    water = int(limits.watermark * cap)
    ttft = np.full(n, np.inf)
    tpot = np.full(n, np.inf)
    finish = np.full(n, np.inf)
    first_tok = [math.inf] * n
    # per-slot numpy state
    s_req = np.full(S, -1, dtype=np.int64)
    s_left = np.zeros(S, dtype=np.int64)        # output tokens still to generate
    s_ctx = np.zeros(S, dtype=np.int64)         # KV tokens held
    s_order = np.zeros(S, dtype=np.int64)       # admission order (for LIFO preemption)
    s_dec = np.zeros(S, dtype=bool)             # slot is decoding
    free_slots = list(range(S - 1, -1, -1))
    prefilling: list[list[int]] = []            # [slot, done_tokens, prompt_tokens]
    waiting: deque[tuple[int, int]] = deque()   # (request, prompt tokens to (re)compute)
    generated = [0] * n
    next_arr = 0
    now = 0.0
    kv_used = 0
    n_dec = 0
    ctx_sum = 0
    admitted = 0
    done = 0
    iterations = events = preemptions = 0
    violations = 0
    out_tokens = 0
    dec_cache: list = [None]  # np.nonzero(s_dec), rebuilt when the decode set changes

    def dec_slots() -> np.ndarray:
        if dec_cache[0] is None:
            dec_cache[0] = np.nonzero(s_dec)[0]
        return dec_cache[0]

    def release(slot: int) -> None:
        """Free a slot and its KV cache (request finished or preempted)."""
        nonlocal kv_used
        kv_used -= int(s_ctx[slot])
        s_req[slot] = -1
        s_dec[slot] = False
        dec_cache[0] = None
        s_ctx[slot] = 0
        free_slots.append(slot)

    def complete(slot: int, t_end: float) -> None:
        nonlocal done, violations, out_tokens
        r = int(s_req[slot])
        finish[r] = t_end
        o = out_len[r]
        out_tokens += o
        if o > 1:
            tp = (t_end - first_tok[r]) / (o - 1)
            tpot[r] = tp
            if tpot_slo_s is not None and tp > tpot_slo_s:
                violations += 1
        else:
            tpot[r] = 0.0
        release(slot)
        done += 1

    def first_token(slot: int, t_end: float) -> None:
        nonlocal violations
        r = int(s_req[slot])
        if first_tok[r] == math.inf:
            first_tok[r] = t_end
            t = t_end - arr[r] + (off[r] if off is not None else 0.0)
            ttft[r] = t
            if ttft_slo_s is not None and t > ttft_slo_s:
                violations += 1

    while done < n:
        events += 1
        if max_violations is not None and violations > max_violations:
            return SimResult(ttft, tpot, finish, np.array(first_tok), now, iterations, events, preemptions, True, out_tokens)
        while next_arr < n and arr[next_arr] <= now:
            waiting.append((next_arr, in_len[next_arr]))
            next_arr += 1
        if n_dec == 0 and not prefilling and not waiting:
            now = arr[next_arr]
            continue
        # --- admission (FCFS) ---------------------------------------------------------------
        budget = budget_max - n_dec - sum(p[2] - p[1] for p in prefilling)
        while waiting and free_slots and (budget > 0 or prefilled):
            r, need = waiting[0]
            if need + 1 > cap:  # can never fit: drop it
                waiting.popleft()
                done += 1
                violations += 1
                continue
            if kv_used + need + water > cap and (n_dec or prefilling):
                break
            waiting.popleft()
            slot = free_slots.pop()
            s_req[slot] = r
            s_order[slot] = admitted
            admitted += 1
            s_left[slot] = out_len[r] - generated[r]
            kv_used += need
            s_ctx[slot] = need
            if prefilled:  # the prefill instance already produced the first token
                s_dec[slot] = True
                dec_cache[0] = None
                n_dec += 1
                ctx_sum += need
                if generated[r] == 0:
                    s_left[slot] -= 1
                    generated[r] = 1
                first_token(slot, now)
                if s_left[slot] <= 0:
                    n_dec -= 1
                    ctx_sum -= need
                    complete(slot, now)
            else:
                prefilling.append([slot, 0, need])
                budget -= need
        # --- preemption when decode growth does not fit -----------------------------------
        while n_dec and kv_used + n_dec > cap:
            cand = np.where(s_req >= 0, s_order, -1)
            slot = int(np.argmax(cand))
            r = int(s_req[slot])
            preemptions += 1
            if s_dec[slot]:
                n_dec -= 1
                ctx_sum -= int(s_ctx[slot])
                generated[r] = out_len[r] - int(s_left[slot])
            else:
                prefilling = [p for p in prefilling if p[0] != slot]
            release(slot)
            waiting.appendleft((r, in_len[r] + generated[r]))
        if n_dec == 0 and not prefilling:
            if waiting and next_arr >= n and not free_slots:
                break  # cannot happen with S >= 1; guard against a stuck loop
            if next_arr < n and not waiting:
                now = max(now, arr[next_arr])
            continue
        # --- one iteration with prefill chunks, or a jump over pure-decode steps ----------
        if prefilling:
            budget = budget_max - n_dec
            tokens, pairs, sampled = n_dec, 0.0, n_dec
            sched = []
            for p in prefilling:
                if budget <= 0:
                    break
                c = min(p[2] - p[1], budget)
                pairs += c * p[1] + c * (c + 1) / 2.0
                tokens += c
                budget -= c
                sched.append((p, c))
                if p[1] + c >= p[2]:
                    sampled += 1
            dt = cost.time_s(tokens, pairs, float(ctx_sum), sampled)
            now += dt
            iterations += 1
            if n_dec:
                dec_idx = dec_slots()
                s_left[dec_idx] -= 1
                s_ctx[dec_idx] += 1
                kv_used += n_dec
                ctx_sum += n_dec
                for slot in dec_idx[s_left[dec_idx] <= 0].tolist():
                    n_dec -= 1
                    ctx_sum -= int(s_ctx[slot])
                    complete(slot, now)
            finished = []
            for p, c in sched:
                p[1] += c
                if p[1] >= p[2]:
                    finished.append(p)
            for p in finished:
                prefilling.remove(p)
                slot = p[0]
                first_token(slot, now)
                s_left[slot] -= 1
                if s_left[slot] <= 0:
                    complete(slot, now)
                else:
                    s_dec[slot] = True
                    dec_cache[0] = None
                    n_dec += 1
                    ctx_sum += int(s_ctx[slot])
            continue
        # pure decode: advance k steps at once
        dec_idx = dec_slots()
        k = int(s_left[dec_idx].min())
        room = (cap - kv_used) // n_dec
        k = max(1, min(k, room))
        step = cost.time_s(n_dec, 0.0, float(ctx_sum), n_dec)
        if next_arr < n and free_slots and not waiting:
            # stop at the next arrival: it will be admitted (a non-empty queue is KV-blocked and
            # stays so until a completion, which bounds k already)
            gap = arr[next_arr] - now
            k = max(1, min(k, int(math.ceil(gap / step)) if gap > 0 else 1))
        if k > 1:
            dt = k * cost.time_s(n_dec, 0.0, ctx_sum + n_dec * (k - 1) / 2.0, n_dec)
        else:
            dt = step
        now += dt
        iterations += k
        s_left[dec_idx] -= k
        s_ctx[dec_idx] += k
        kv_used += n_dec * k
        ctx_sum += n_dec * k
        for slot in dec_idx[s_left[dec_idx] <= 0].tolist():
            n_dec -= 1
            ctx_sum -= int(s_ctx[slot])
            complete(slot, now)
    return SimResult(ttft, tpot, finish, np.array(first_tok), now, iterations, events, preemptions, False, out_tokens)


def percentile(values: np.ndarray, q: float) -> float:
    """``q``-th percentile (0-100) with inf for unserved requests (numpy 'higher' method: a
    reported p90 is a value that at least 90% of requests do not exceed)."""
    if values.size == 0:
        return 0.0
    return float(np.percentile(values, q, method="higher"))


def fluid_max_rate_rps(cost: IterationCostTable, limits: EngineLimits, mean_input: float,
                       mean_output: float) -> float:
    """Upper bound on the request rate one engine sustains (no SLO): with the largest batch the
    KV cache and ``max_num_seqs`` allow, every request costs its prompt's share of full-budget
    prefill iterations plus ``output`` decode steps shared by the batch."""
    per_req_kv = mean_input + mean_output / 2.0
    batch = int(max(1, min(limits.max_num_seqs, limits.kv_capacity_tokens // max(per_req_kv, 1.0))))
    chunk = int(max(1, min(limits.max_num_batched_tokens, cost.max_tokens)))
    t_chunk = cost.time_s(chunk, chunk * (mean_input / 2.0), 0.0, 1)
    prefill_per_req = t_chunk * mean_input / chunk
    dec = cost.decode_s(batch, mean_input + mean_output / 2.0)
    per_req = prefill_per_req + max(mean_output - 1.0, 0.0) * dec / batch
    return 1.0 / per_req if per_req > 0 else math.inf


__all__ = ["IterationCostTable", "EngineLimits", "Trace", "SimResult", "simulate", "percentile", "little_stable",
           "fluid_max_rate_rps", "HEAD_OPS"]
