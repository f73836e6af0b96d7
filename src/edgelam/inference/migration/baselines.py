r"""Baselines: never migrate, always follow the user, myopic latency-greedy, and the offline
optimum with full knowledge of the trace.

The offline problem over joint placements :math:`x_t \in \{0..N-1\}^K` (``S = N^K`` states):

.. math:: \min_{x_0..x_{T-1}} \sum_t L_t(x_t) \quad \text{s.t.} \quad
          \sum_t C(x_{t-1}, x_t) \le T\, C_{budget}, \qquad x_{-1} = \text{initial}.

The latency of a slot depends only on its placement and the cost only on consecutive
placements, so it is a resource-constrained shortest path through a layered graph. Two solvers:

* :func:`lagrangian_dp` / :func:`offline_lagrangian`: dynamic programming on
  :math:`L + \mu C` (``O(T S^2)`` per multiplier), bisection on :math:`\mu` for the smallest
  multiplier whose path meets the budget. **Not exact in general**: it returns the best
  budget-feasible path on the lower convex hull of the cost-latency trade-off (an upper bound on
  the optimum) and the dual value :math:`\max_\mu \min_x [\sum L + \mu(\sum C - T C_{budget})]` (a
  lower bound); the two coincide when the budget falls on a hull vertex.
* :func:`pareto_dp`: exact. For each slot and state it keeps the Pareto front of (cumulative
  cost, cumulative latency) over all paths reaching it, dropping paths over budget; the best
  final point is the constrained optimum. Its size is not polynomially bounded, so it is meant for
  small instances (the benchmark's and the tests').
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from edgelam.config import ConfigError
from edgelam.inference.migration.lyapunov import Solver, _placements, solve
from edgelam.inference.migration.model import MigrationSystem, SlotProblem

__all__ = [
    "FollowUser",
    "MyopicLatency",
    "NeverMigrate",
    "OfflineResult",
    "brute_force_offline",
    "lagrangian_dp",
    "offline_lagrangian",
    "pareto_dp",
    "transition_tables",
]


class NeverMigrate:
    """Every chain stays where it started."""

    name = "never"

    def decide(self, problem: SlotProblem) -> np.ndarray:
        return problem.prev.copy()

    def observe(self, cost_kj: float) -> None:
        pass


class FollowUser:
    """Every chain moves to its user's serving (nearest) server."""

    name = "follow"

    def decide(self, problem: SlotProblem) -> np.ndarray:
        return problem.system.access[problem.t].copy()

    def observe(self, cost_kj: float) -> None:
        pass


class MyopicLatency:
    """The least-latency placement of every slot, whatever it costs (drift-plus-penalty with the
    queue held at 0)."""

    name = "myopic"

    def __init__(self, solver: Solver = "auto", max_enumeration: int = 50_000) -> None:
        self.solver, self.max_enumeration = solver, max_enumeration

    def decide(self, problem: SlotProblem) -> np.ndarray:
        return solve(problem, 1.0, 0.0, self.solver, self.max_enumeration).x

    def observe(self, cost_kj: float) -> None:
        pass


def transition_tables(system: MigrationSystem, max_states: int = 4096) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:  # fmt: skip
    """Latency of every joint placement in every slot and cost of every transition.

    Args:
        system: The system (``S = N^K`` must not exceed ``max_states``).
        max_states: Refuse larger state spaces.

    Returns:
        ``(L [T, S] ms, C [S, S] kJ with C[i, j] the cost of going from state i to j, states
        int [S, K], index of the initial state)``.

    Raises:
        ConfigError: too many states.
    """
    n_states = system.N**system.K
    if n_states > max_states:
        raise ConfigError(f"offline: {system.N}^{system.K} = {n_states} joint placements exceed "
                          f"max_states = {max_states}")  # fmt: skip
    states = _placements(0, n_states, system.N, system.K)
    L = np.stack([system.slot(t, states[0]).evaluate(states)[0] for t in range(system.T)])
    C = np.stack([system.slot(0, s).evaluate(states)[1] for s in states])
    digits = system.N ** np.arange(system.K - 1, -1, -1)
    return L, C, states, int(system.initial() @ digits)


def lagrangian_dp(L: np.ndarray, C: np.ndarray, s0: int, mu: float) -> tuple[np.ndarray, float, float]:  # fmt: skip
    """The path minimising ``sum L + mu sum C`` (dynamic programming, ``O(T S^2)``).

    Returns:
        ``(path int [T], total latency, total cost)``; ties go to the lower state index.
    """
    T, S = L.shape
    value = L[0] + mu * C[s0]
    back = np.zeros((T, S), dtype=np.int64)
    for t in range(1, T):
        total = value[:, None] + mu * C  # [from, to]
        back[t] = total.argmin(axis=0)
        value = L[t] + total[back[t], np.arange(S)]
    path = np.zeros(T, dtype=np.int64)
    path[-1] = int(value.argmin())
    for t in range(T - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    prev = np.concatenate([[s0], path[:-1]])
    return path, float(L[np.arange(T), path].sum()), float(C[prev, path].sum())


@dataclass
class OfflineResult:
    """An offline solution: ``path`` (state per slot), ``placements`` (``int [T, K]``), total
    ``latency_ms`` and ``cost_kj``, ``lower_bound_ms`` (on the constrained optimum's total
    latency; equal to ``latency_ms`` when exact), ``exact``, ``method``, ``multiplier``."""

    path: np.ndarray
    placements: np.ndarray
    latency_ms: float
    cost_kj: float
    lower_bound_ms: float
    exact: bool
    method: str
    multiplier: float = float("nan")


def offline_lagrangian(L: np.ndarray, C: np.ndarray, states: np.ndarray, s0: int,
                       budget_total_kj: float, *, iterations: int = 60) -> OfflineResult:  # fmt: skip
    """Lagrangian DP with bisection on the multiplier (see the module docstring).

    Args:
        L, C, states, s0: From :func:`transition_tables`.
        budget_total_kj: Total budget ``T x C_budget``.
        iterations: Bisection steps.

    Returns:
        The feasible path of the smallest multiplier found, with the dual lower bound.
    """
    tol = 1e-9 * max(1.0, budget_total_kj)
    path, lat, cost = lagrangian_dp(L, C, s0, 0.0)
    dual = lat
    if cost <= budget_total_kj + tol:
        return OfflineResult(path, states[path], lat, cost, lat, True, "lagrangian-dp", 0.0)
    lo, hi = 0.0, 1.0
    best = None
    while best is None:
        p, lt, c = lagrangian_dp(L, C, s0, hi)
        dual = max(dual, lt + hi * (c - budget_total_kj))
        if c <= budget_total_kj + tol:
            best = (p, lt, c, hi)
        else:
            lo, hi = hi, hi * 4.0
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        p, lt, c = lagrangian_dp(L, C, s0, mid)
        dual = max(dual, lt + mid * (c - budget_total_kj))
        if c <= budget_total_kj + tol:
            hi, best = mid, (p, lt, c, mid)
        else:
            lo = mid
    p, lt, c, mu = best
    return OfflineResult(p, states[p], lt, c, min(dual, lt), bool(dual >= lt - 1e-9 * lt),
                         "lagrangian-dp", mu)  # fmt: skip


def pareto_dp(L: np.ndarray, C: np.ndarray, states: np.ndarray, s0: int,
              budget_total_kj: float, *, max_front: int = 20_000) -> OfflineResult:  # fmt: skip
    """Exact constrained offline optimum by Pareto-front dynamic programming.

    Args:
        L, C, states, s0: From :func:`transition_tables`.
        budget_total_kj: Total budget ``T x C_budget``.
        max_front: Refuse fronts larger than this (per state and slot).

    Returns:
        The optimal path (``exact=True``).

    Raises:
        ConfigError: a front grew beyond ``max_front``.
    """
    T, S = L.shape
    cap = budget_total_kj + 1e-9 * max(1.0, budget_total_kj)
    # fronts[s] = (cost [F], latency [F], parent index into the previous slot's flat arrays)
    cost = C[s0].copy()
    lat = L[0].copy()
    keep = cost <= cap
    flat_state, flat_cost, flat_lat = np.flatnonzero(keep), cost[keep], lat[keep]
    parents: list[np.ndarray] = [np.full(flat_state.size, -1)]
    states_hist = [flat_state]
    for t in range(1, T):
        # every (front point, next state) pair
        nc = flat_cost[:, None] + C[flat_state]  # [F, S]
        nl = flat_lat[:, None] + L[t][None, :]
        src = np.broadcast_to(np.arange(flat_state.size)[:, None], nc.shape)
        dst = np.broadcast_to(np.arange(S)[None, :], nc.shape)
        ok = nc <= cap
        nc, nl, src, dst = nc[ok], nl[ok], src[ok], dst[ok]
        order = np.lexsort((nl, nc, dst))  # by state, then cost, then latency
        nc, nl, src, dst = nc[order], nl[order], src[order], dst[order]
        keep = np.zeros(nc.size, dtype=bool)
        starts = np.flatnonzero(np.r_[True, dst[1:] != dst[:-1]])
        ends = np.r_[starts[1:], nc.size]
        for a, b in zip(starts, ends, strict=True):
            best = np.minimum.accumulate(nl[a:b])
            # a point survives if its latency beats every cheaper (or equal-cost, earlier) one
            k = np.r_[True, nl[a + 1 : b] < best[:-1] - 1e-12]
            if k.sum() > max_front:
                raise ConfigError(f"offline: Pareto front of {k.sum()} points exceeds "
                                  f"max_front = {max_front}")  # fmt: skip
            keep[a:b] = k
        flat_state, flat_cost, flat_lat = dst[keep], nc[keep], nl[keep]
        parents.append(src[keep])
        states_hist.append(flat_state)
    i = int(np.lexsort((flat_cost, flat_lat))[0])
    total_lat, total_cost = float(flat_lat[i]), float(flat_cost[i])
    path = np.zeros(T, dtype=np.int64)
    for t in range(T - 1, -1, -1):
        path[t] = states_hist[t][i]
        i = int(parents[t][i])
    return OfflineResult(path, states[path], total_lat, total_cost, total_lat, True, "pareto-dp")


def brute_force_offline(L: np.ndarray, C: np.ndarray, states: np.ndarray, s0: int,
                        budget_total_kj: float) -> OfflineResult:  # fmt: skip
    """The constrained optimum by trying every decision sequence (``S^T`` of them: tiny cases
    only, for tests)."""
    T, S = L.shape
    if S**T > 2_000_000:
        raise ConfigError(f"brute force: {S}^{T} sequences is too many")
    cap = budget_total_kj + 1e-9 * max(1.0, budget_total_kj)
    best = None
    for seq in itertools.product(range(S), repeat=T):
        prev, lat, cost = s0, 0.0, 0.0
        for t, s in enumerate(seq):
            lat, cost, prev = lat + L[t, s], cost + C[prev, s], s
        if cost <= cap and (best is None or (lat, cost) < best[:2]):
            best = (lat, cost, seq)
    assert best is not None  # staying put costs nothing
    path = np.array(best[2])
    return OfflineResult(path, states[path], best[0], best[1], best[0], True, "brute-force")
