"""Queueing formulas for request latencies at a percentile: waits behind a prefill queue, for a
free batch slot, and the prompts that arrive while a request decodes.  Pure functions; times in
seconds, rates in requests per second.
"""
from __future__ import annotations

import functools
import math
from statistics import NormalDist

from scipy.stats import poisson

#: beyond this many service times Erlang's M/D/1 sum loses precision (alternating terms up
#: to ~exp(lambda t), i.e. e^15 x 1e-16 here); the waiting time there is taken from the
#: exponential tail
_MD1_EXACT_SERVICES = 15


#: Poisson means above which quantiles come from the normal approximation (a capacity search
#: asks for hundreds of thousands; walking the pmf costs O(mean) each)
POISSON_EXACT_MEAN = 40.0


@functools.lru_cache(maxsize=64)
def _normal_quantile(q: float) -> float:
    return NormalDist().inv_cdf(q)


def poisson_pmf(mean: float, kmax: int) -> list[float]:
    """P(N = k) for k = 0..``kmax``, ``N`` Poisson with ``mean`` (>= 0), by the recurrence
    ``p_k = p_{k-1} mean / k`` (a capacity search asks for thousands of short ones)."""
    if mean > 600.0:  # exp(-mean) underflows: scipy's log-space pmf
        return [float(x) for x in poisson.pmf(range(kmax + 1), mean)]
    out = [math.exp(-mean)]
    for k in range(1, kmax + 1):
        out.append(out[-1] * mean / k)
    return out


def poisson_quantile(q: float, mean: float) -> int:
    """Smallest ``k`` with P(N <= k) >= ``q`` for ``N`` Poisson with ``mean`` (>= 0): exact up
    to a mean of ``POISSON_EXACT_MEAN``, above it the Cornish-Fisher normal approximation with
    the Poisson skew (within one of the exact quantile there)."""
    if mean <= 0.0:
        return 0
    if mean > POISSON_EXACT_MEAN:
        z = _normal_quantile(q)
        return max(0, math.ceil(mean + z * math.sqrt(mean) + (z * z - 1.0) / 6.0 - 0.5))
    p = math.exp(-mean)
    total, k = p, 0
    while total < q and k < 10_000:
        k += 1
        p *= mean / k
        total += p
    return k


def _md1_cdf(t: float, rate: float, service_s: float) -> float:
    """P(W <= t) of the M/D/1 queue's waiting time (Erlang): ``(1 - rho) sum_{k=0}^{floor(t/S)}
    (lambda (kS - t))^k / k! exp(-lambda (kS - t))``."""
    total = 0.0
    for k in range(int(t // service_s) + 1):
        x = rate * (k * service_s - t)  # <= 0
        total += x ** k / math.factorial(k) * math.exp(-x)
    return (1.0 - rate * service_s) * total


def md1_wait_quantile(rate: float, service_s: float, q: float) -> float:
    """The ``q``-quantile (0..1) of the waiting time (s) before service in an M/D/1 queue with
    Poisson arrivals at ``rate`` (1/s) and a fixed service time ``service_s`` (s): 0 when at
    least a share ``q`` of arrivals find the server free (``1 - rho >= q``), inf when
    ``rho = rate * service_s >= 1``.  Exact (Erlang's formula) up to
    ``_MD1_EXACT_SERVICES`` service times, beyond that the exponential tail
    ``P(W > t) ~ rho exp(-theta t)`` with ``rate (exp(theta S) - 1) = theta``."""
    rho = rate * service_s
    if rho >= 1.0:
        return math.inf
    if 1.0 - rho >= q:
        return 0.0
    limit = _MD1_EXACT_SERVICES * service_s
    if _md1_cdf(limit, rate, service_s) < q:  # far out: the exponential tail
        theta = 2.0 * (1.0 - rho) / (rho * service_s)  # heavy-traffic start, then Newton
        for _ in range(60):
            f = rate * math.expm1(theta * service_s) - theta
            step = f / (rate * service_s * math.exp(theta * service_s) - 1.0)
            theta = max(theta - step, 0.5 * theta)
            if abs(step) <= 1e-12 * theta:
                break
        return math.log(rho / (1.0 - q)) / theta
    lo, hi = 0.0, service_s
    while hi < limit and _md1_cdf(hi, rate, service_s) < q:
        lo, hi = hi, min(2.0 * hi, limit)
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _md1_cdf(mid, rate, service_s) < q else (lo, mid)
        if hi - lo <= 1e-6 * hi:
            break
    return hi


def erlang_c(servers: int, offered: float) -> float:
    """Probability that an arrival waits in an M/M/c queue with ``servers`` servers and offered
    load ``offered`` = rate x mean service time (< servers), via Erlang B's recursion."""
    if offered <= 0.0:
        return 0.0
    b = 1.0
    for k in range(1, servers + 1):
        b = offered * b / (k + offered * b)
    rho = offered / servers
    return b / (1.0 - rho + rho * b)


def mmc_wait_quantile(servers: int, offered: float, service_s: float, q: float) -> float:
    """The ``q``-quantile (s) of the wait for a free server in an M/M/c queue (``servers``,
    offered load ``offered`` < servers, mean service ``service_s`` s): P(W > t) = C exp(-(c -
    a) t / S) with C Erlang's C; 0 when C <= 1 - q."""
    if offered >= servers:
        return math.inf
    waits = erlang_c(servers, offered)
    if waits <= 1.0 - q:
        return 0.0
    return math.log(waits / (1.0 - q)) * service_s / (servers - offered)
