r"""Drift-plus-penalty migration control (Lyapunov optimisation), and the per-slot solvers.

Problem: choose placements :math:`x(t)` to minimise the time-average latency
:math:`\bar L = \lim \frac1T \sum_t L(t)` subject to the long-term migration budget
:math:`\bar C = \lim \frac1T \sum_t C(t) \le C_{budget}` (``budget_kj`` per slot).

Virtual queue (the accumulated budget overrun, kJ):

.. math:: Q(t+1) = \max\big(Q(t) + C(t) - C_{budget},\ 0\big)

Since :math:`Q(T) \ge \sum_{t<T} (C(t) - C_{budget})`, the time-average cost exceeds the budget
by at most :math:`Q(T)/T`: keeping the queue bounded meets the budget. With
:math:`\Lambda(Q) = Q^2/2`, the one-slot drift is at most
:math:`B + Q(t)(C(t) - C_{budget})` with :math:`B = \max_t (C(t) - C_{budget})^2 / 2`, so each
slot the controller minimises the drift-plus-penalty bound

.. math:: V\, L(x) + Q(t)\, C(x(t-1), x) \qquad (L \text{ in ms},\ C, Q \text{ in kJ}).

Theory (Neely 2010; Ouyang et al., "Follow me at the edge", JSAC 2018): for i.i.d. system states
the time-average latency is within :math:`B/V` of the best budget-feasible policy's, and the
backlog is :math:`O(V)`; for trace-driven (non-i.i.d.) states the same holds against the optimum
of every ``R``-slot frame with :math:`B` replaced by :math:`B\,R`. Here the backlog bound is
explicit (:func:`queue_bound`): once :math:`Q(t)\, c_{min} > V\, \Delta L_{max}` no migration
can pay for itself, so :math:`Q(t) \le Q(0) + V \Delta L_{max} / c_{min} + C_{max}`.

Per-slot solvers: :func:`solve_exact` (enumerate all :math:`N^K` placements, vectorised) and
:func:`solve_alternating` (alternating optimisation: steepest coordinate descent over users from
several starts, with block moves of co-located users and pairwise swaps, until no move helps;
never worse than its starts).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from edgelam.config import ConfigError
from edgelam.inference.migration.model import MigrationSystem, SlotProblem, ps_stretch

__all__ = [
    "LyapunovPolicy",
    "Policy",
    "SlotSolution",
    "Trajectory",
    "VirtualQueue",
    "queue_bound",
    "simulate",
    "solve",
    "solve_alternating",
    "solve_exact",
]

Solver = Literal["auto", "exact", "alternating"]


class VirtualQueue:
    """The migration-budget virtual queue :math:`Q(t+1) = \\max(Q(t) + C(t) - C_{budget}, 0)`.

    Args:
        budget: Budget per slot, :math:`C_{budget} \\ge 0` (kJ).
        backlog: Initial backlog :math:`Q(0) \\ge 0`.

    Raises:
        ConfigError: negative budget or backlog.

    >>> q = VirtualQueue(budget=1.0)
    >>> [q.update(c) for c in (3.0, 0.5, 0.0, 0.0)]
    [2.0, 1.5, 0.5, 0.0]
    """

    def __init__(self, budget: float, backlog: float = 0.0) -> None:
        if not budget >= 0:
            raise ConfigError(f"budget: must be >= 0 kJ per slot, got {budget}")
        if not backlog >= 0:
            raise ConfigError(f"backlog: must be >= 0, got {backlog}")
        self.budget, self.backlog = float(budget), float(backlog)

    def update(self, cost: float) -> float:
        """Apply one slot's cost; returns the new backlog."""
        self.backlog = max(self.backlog + float(cost) - self.budget, 0.0)
        return self.backlog


@dataclass
class SlotSolution:
    """A placement and its figures: ``x`` (``int [K]``), ``latency_ms``, ``cost_kj``,
    ``objective`` (``V L + Q C``) and ``evaluated`` (placements the solver scored)."""

    x: np.ndarray
    latency_ms: float
    cost_kj: float
    objective: float
    evaluated: int


@functools.lru_cache(maxsize=16)
def _placements(start: int, stop: int, n: int, k: int) -> np.ndarray:
    """Placements number ``start..stop-1`` in base ``n`` (user 0 the most significant digit);
    cached, read-only."""
    ids = np.arange(start, stop, dtype=np.int64)
    out = (ids[:, None] // n ** np.arange(k - 1, -1, -1, dtype=np.int64)[None, :]) % n
    out.flags.writeable = False
    return out


def _pick(obj: np.ndarray, cost: np.ndarray, lat: np.ndarray) -> int:
    """Index of the least objective; near-ties go to the cheaper, then the faster, then the
    first placement (so that decisions do not depend on rounding)."""
    best = obj.min()
    tie = np.flatnonzero(obj <= best + 1e-9 * max(1.0, abs(best)))
    return int(tie[np.lexsort((tie, lat[tie], cost[tie]))[0]])


def solve_exact(
    problem: SlotProblem, V: float, Q: float, *, max_placements: int = 1_000_000,
    chunk: int = 65_536,
) -> SlotSolution:  # fmt: skip
    """The placement minimising ``V L + Q C`` by enumerating all ``N^K`` placements.

    Args:
        problem: The slot problem.
        V: Latency weight (>= 0).
        Q: Queue backlog (>= 0).
        max_placements: Refuse larger enumerations.
        chunk: Placements scored per vectorised batch.

    Returns:
        The optimal placement (ties broken by lower cost, then lower latency).

    Raises:
        ConfigError: ``N^K`` exceeds ``max_placements``.
    """
    n, k = problem.system.N, problem.system.K
    total = n**k
    if total > max_placements:
        raise ConfigError(f"solver: exact enumeration of {n}^{k} = {total} placements exceeds "
                          f"max_placements = {max_placements}; use the alternating solver")  # fmt: skip
    winners = []
    for start in range(0, total, chunk):
        X = _placements(start, min(start + chunk, total), n, k)
        lat, cost = problem.evaluate(X)
        obj = V * lat + Q * cost
        i = _pick(obj, cost, lat)
        winners.append((obj[i], cost[i], lat[i], X[i]))
    obj, cost, lat = (np.array([w[j] for w in winners]) for j in range(3))
    i = _pick(obj, cost, lat)
    return SlotSolution(winners[i][3].copy(), float(lat[i]), float(cost[i]), float(obj[i]), total)


def _colocated(x: np.ndarray) -> list[list[int]]:
    """Groups of two or more users whose chains share a server."""
    groups = [np.flatnonzero(x == n).tolist() for n in np.unique(x)]
    return [g for g in groups if len(g) > 1]


def _neighbours(x: np.ndarray, n: int) -> np.ndarray:
    """Every placement one move away from ``x``: one user to another server, all users sharing a
    server to another common server (a block move: they share the weights they need), or two
    users exchanging servers; ``int [M, K]`` (may repeat ``x``)."""
    k = x.size
    rows = [np.repeat(x[None], n * k, axis=0)]
    rows[0][np.arange(n * k), np.repeat(np.arange(k), n)] = np.tile(np.arange(n), k)
    for group in _colocated(x):
        block = np.repeat(x[None], n, axis=0)
        block[:, group] = np.arange(n)[:, None]
        rows.append(block)
    if k > 1:
        i, j = np.triu_indices(k, 1)
        swap = np.repeat(x[None], i.size, axis=0)
        swap[np.arange(i.size), i], swap[np.arange(i.size), j] = x[j], x[i]
        rows.append(swap)
    return np.concatenate(rows)


def solve_alternating(
    problem: SlotProblem, V: float, Q: float, *, starts: Sequence[np.ndarray] | None = None,
    max_moves: int = 1000,
) -> SlotSolution:  # fmt: skip
    """Alternating optimisation by steepest coordinate descent: from each start, score every
    placement one move away (:func:`_neighbours`: single-user moves, block moves of co-located
    users, pairwise swaps -- ``N K + N groups + K (K - 1) / 2`` placements, one vectorised batch)
    and take the best, until no move lowers ``V L + Q C``; the best end point wins.

    Each accepted move strictly lowers the objective, so the result is never worse than any start
    (default starts: the previous placement and the serving servers) and is a local optimum with
    respect to those moves.

    Args:
        problem: The slot problem.
        V: Latency weight.
        Q: Queue backlog.
        starts: Starting placements (``int [K]`` each).
        max_moves: Moves per start at most.

    Returns:
        The best placement found.
    """
    sys_ = problem.system
    if starts is None:
        starts = (problem.prev, sys_.access[problem.t])
    best: SlotSolution | None = None
    evaluated = 0
    for start in starts:
        x = np.array(start, dtype=np.int64)
        lat, cost = problem.evaluate(x[None])
        obj = float(V * lat[0] + Q * cost[0])
        evaluated += 1
        for _ in range(max_moves):
            X = _neighbours(x, sys_.N)
            lat_m, cost_m = problem.evaluate(X)
            obj_m = V * lat_m + Q * cost_m
            evaluated += X.shape[0]
            j = int(obj_m.argmin())
            if not obj_m[j] < obj - 1e-12 * max(1.0, abs(obj)):
                break
            x, obj = X[j].copy(), float(obj_m[j])
        lat, cost = problem.evaluate(x[None])
        if best is None or obj < best.objective - 1e-12 * max(1.0, abs(obj)):
            best = SlotSolution(x, float(lat[0]), float(cost[0]), obj, 0)
    assert best is not None
    best.evaluated = evaluated
    return best


def solve(problem: SlotProblem, V: float, Q: float, solver: Solver = "auto",
          max_enumeration: int = 50_000) -> SlotSolution:  # fmt: skip
    """:func:`solve_exact` when ``solver`` is ``exact`` (or ``auto`` and ``N^K <=
    max_enumeration``), else :func:`solve_alternating`."""
    if solver not in ("auto", "exact", "alternating"):
        raise ConfigError(f"solver: {solver!r} is not one of ['auto', 'exact', 'alternating']")
    n_k = problem.system.N**problem.system.K
    if solver == "exact" or (solver == "auto" and n_k <= max_enumeration):
        return solve_exact(problem, V, Q, max_placements=max(max_enumeration, n_k)
                           if solver == "exact" else max_enumeration)  # fmt: skip
    return solve_alternating(problem, V, Q)


class Policy(Protocol):
    """An online migration policy: ``decide`` a placement each slot, then ``observe`` its cost."""

    name: str

    def decide(self, problem: SlotProblem) -> np.ndarray: ...

    def observe(self, cost_kj: float) -> None: ...


@dataclass
class LyapunovPolicy:
    """Drift-plus-penalty: each slot minimise ``V L + Q C``, then update the virtual queue.

    Attributes:
        V: Latency weight, kJ^2 per ms (trades latency against budget-queue backlog).
        budget_kj: Migration budget per slot, kJ.
        solver: ``auto`` (exact up to ``max_enumeration`` placements), ``exact`` or
            ``alternating``.
        max_enumeration: See ``solver``.
    """

    V: float
    budget_kj: float
    solver: Solver = "auto"
    max_enumeration: int = 50_000
    name: str = "lyapunov"
    queue: VirtualQueue = field(init=False)

    def __post_init__(self) -> None:
        if not self.V >= 0:
            raise ConfigError(f"V: must be >= 0, got {self.V}")
        self.queue = VirtualQueue(self.budget_kj)

    def decide(self, problem: SlotProblem) -> np.ndarray:
        return solve(problem, self.V, self.queue.backlog, self.solver, self.max_enumeration).x

    def observe(self, cost_kj: float) -> None:
        self.queue.update(cost_kj)


@dataclass
class Trajectory:
    """What a policy did on a system, slot by slot (``T`` slots, ``K`` users).

    Attributes:
        policy: Policy name.
        latency_ms, cost_kj, queue_kj, migrations, moved_mb, stored_mb, max_utilisation:
            ``[T]`` per-slot values (``queue_kj``: the backlog the decision saw, 0 for
            queue-less policies).
        placements: ``int [T, K]``.
    """

    policy: str
    latency_ms: np.ndarray
    cost_kj: np.ndarray
    queue_kj: np.ndarray
    migrations: np.ndarray
    moved_mb: np.ndarray
    stored_mb: np.ndarray
    max_utilisation: np.ndarray
    placements: np.ndarray

    def summary(self, budget_kj: float | None = None) -> dict[str, Any]:
        """Time averages (and the budget check when ``budget_kj`` is given)."""
        out = {"policy": self.policy, "latency_ms": float(self.latency_ms.mean()),
               "latency_p95_ms": float(np.percentile(self.latency_ms, 95)),
               "jitter_ms": float(self.latency_ms.std()),
               "cost_kj": float(self.cost_kj.mean()), "mean_queue_kj": float(self.queue_kj.mean()),
               "max_queue_kj": float(self.queue_kj.max()),
               "migrations_per_slot": float(self.migrations.mean()),
               "moved_mb_per_slot": float(self.moved_mb.mean()),
               "stored_mb_per_slot": float(self.stored_mb.mean()),
               "overloaded_slots": int((self.max_utilisation > 1.0).sum())}  # fmt: skip
        if budget_kj is not None:
            out["budget_met"] = bool(out["cost_kj"] <= budget_kj * (1 + 1e-9) + 1e-12)
            out["budget_margin_kj"] = budget_kj - out["cost_kj"]
        return out


def simulate(system: MigrationSystem, policy: Policy | None, *, placements: np.ndarray | None = None,
             advance: Callable[[int], None] | None = None) -> Trajectory:  # fmt: skip
    """Run ``policy`` over all slots of ``system`` (or replay fixed ``placements [T, K]``).

    Args:
        system: The system.
        policy: The online policy (``None`` when ``placements`` is given).
        placements: A decision sequence to evaluate instead (e.g. the offline optimum's).
        advance: Progress callback, called with 1 per slot.

    Returns:
        The trajectory; the first slot starts from :meth:`MigrationSystem.initial`.
    """
    if policy is None and placements is None:
        raise ValueError("simulate: give a policy or placements")
    T = system.T
    rec = {k: np.zeros(T) for k in ("latency_ms", "cost_kj", "queue_kj", "migrations",
                                    "moved_mb", "stored_mb", "max_utilisation")}  # fmt: skip
    xs = np.zeros((T, system.K), dtype=np.int64)
    prev = system.initial()
    for t in range(T):
        problem = system.slot(t, prev)
        queue = getattr(policy, "queue", None)
        rec["queue_kj"][t] = queue.backlog if queue is not None else 0.0
        x = np.asarray(placements[t] if policy is None else policy.decide(problem))
        lat, cost = problem.evaluate(x[None])
        parts = problem.breakdown(x)
        if policy is not None:
            policy.observe(float(cost[0]))
        rec["latency_ms"][t], rec["cost_kj"][t] = lat[0], cost[0]
        rec["migrations"][t], rec["moved_mb"][t] = parts["migrations"], parts["moved_mb"]
        rec["stored_mb"][t] = parts["stored_mb"]
        rec["max_utilisation"][t] = problem.utilisation(x).max()
        xs[t], prev = x, x
        if advance is not None:
            advance(1)
    name = "replay" if policy is None else policy.name
    return Trajectory(name, placements=xs, **rec)


def queue_bound(system: MigrationSystem, V: float, backlog0: float = 0.0) -> dict[str, float]:
    """The deterministic :math:`O(V)` backlog bound of the drift-plus-penalty controller.

    ``dL_max`` bounds how much one slot's latency can drop by re-placing chains, ``c_min`` is the
    cheapest possible migration (one user's state one hop to the lowest-power server) and
    ``C_max`` the dearest slot; any solver never worse than "stay" keeps
    ``Q(t) <= Q(0) + V dL_max / c_min + C_max``.

    Returns:
        ``{"dL_max_ms", "c_min_kj", "C_max_kj", "Q_max_kj"}``.
    """
    s, cfg = system, system.config
    e_bit, load_s = cfg.energy_per_bit_hop_j, 1.0 / cfg.load_bytes_per_s
    worst = ps_stretch(s.load.max(axis=1).sum(), cfg.rho_max)
    hi = (s.access_ms.max(0) + s.backhaul_ms.max(axis=(1, 2)) + s.compute_ms.max(1) * worst).mean()
    lo = (s.access_ms.min(0) + s.backhaul_ms.min(axis=(1, 2)) + s.compute_ms.min(1)).mean()
    c_min = float((8 * s.state_bytes * e_bit + s.power_w.min() * s.state_bytes * load_s).min())
    diameter = int(s.hops.max())
    move_max = 8 * s.state_bytes * e_bit * diameter + s.power_w.max() * s.state_bytes * load_s
    inst_max = 8 * s.weight_bytes * e_bit * diameter + s.power_w.max() * s.weight_bytes * load_s
    c_max = float(move_max.sum() + (s.uses * inst_max[None]).sum())
    dl = float(hi - lo)
    return {"dL_max_ms": dl, "c_min_kj": c_min / 1e3, "C_max_kj": c_max / 1e3,
            "Q_max_kj": backlog0 + V * dl / (c_min / 1e3) + c_max / 1e3}  # fmt: skip
