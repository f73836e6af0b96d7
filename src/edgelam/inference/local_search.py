"""Replica local search shared by the greedy and monolithic heuristics.

A *unit* is what gets replicated: a microservice (shared deployments) or a whole LAM
(monolithic ones). Starting from a placement ``unit -> nodes``, the search tries, in a seeded
random order, to add a replica, remove one (never the last) or move one to another node, keeping
every node within its memory; each candidate is routed and judged by
:func:`~edgelam.inference.deployment.evaluate`, and kept when it lowers
:func:`score` -- constraint violation first, then the objective. It stops when a full pass over
the moves finds nothing better, or at the deadline.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edgelam.inference.deployment import Deployment, Evaluation, evaluate
from edgelam.inference.instance import Instance

__all__ = ["SearchStats", "free_memory", "local_search", "score"]

Placement = dict[str, list[int]]


@dataclass
class SearchStats:
    """What a local search did.

    Attributes:
        evaluations: Candidate placements routed and evaluated.
        improvements: Moves kept.
        passes: Full passes over the move list.
        stopped: Why it stopped: ``"local optimum"``, ``"deadline"`` or ``"max evaluations"``.
    """

    evaluations: int = 0
    improvements: int = 0
    passes: int = 0
    stopped: str = ""


def score(inst: Instance, ev: Evaluation) -> tuple[float, float]:
    """``(violation, objective)``: total excess utilisation, relative memory overflow and 1 per
    unrouted class, then the objective (``inf`` while infeasible is left to the first entry).

    >>> from edgelam.inference.instance import generate_instance
    >>> from edgelam.inference.deployment import Deployment
    >>> inst = generate_instance(3, seed=0, flows=["image-caption"])
    >>> score(inst, evaluate(inst, Deployment({})))[0] == len(inst.demands)
    True
    """
    excess = sum(max(0.0, r - inst.max_utilisation) for r in ev.utilisation)
    excess += sum(
        max(0.0, used - node.memory_mb) / node.memory_mb
        for used, node in zip(ev.memory_used_mb, inst.nodes, strict=True)
    )
    excess += sum(1 for v in ev.class_latency_s.values() if not math.isfinite(v))
    objective = ev.objective_s if math.isfinite(ev.objective_s) else 1e30
    return (excess if excess > 1e-9 else 0.0, objective)


def free_memory(inst: Instance, placement: Placement, unit_memory: dict[str, float]) -> list[float]:
    """MiB left on each node by ``placement``."""
    free = [node.memory_mb for node in inst.nodes]
    for unit, nodes in placement.items():
        for n in nodes:
            free[n] -= unit_memory[unit]
    return free


def _moves(inst: Instance, placement: Placement, unit_memory: dict[str, float]) -> list[tuple]:
    free = free_memory(inst, placement, unit_memory)
    n_nodes = len(inst.nodes)
    moves: list[tuple] = []
    for unit, hosts in placement.items():
        mem = unit_memory[unit]
        targets = [m for m in range(n_nodes) if m not in hosts and free[m] >= mem - 1e-6]
        moves += [("add", unit, None, m) for m in targets]
        for n in hosts:
            if len(hosts) > 1:
                moves.append(("remove", unit, n, None))
            moves += [("move", unit, n, m) for m in targets]
    return moves


def _apply(placement: Placement, move: tuple) -> Placement:
    kind, unit, old, new = move
    out = {u: list(v) for u, v in placement.items()}
    if old is not None:
        out[unit].remove(old)
    if new is not None:
        out[unit].append(new)
    out[unit].sort()
    return out


def local_search(
    inst: Instance,
    placement: Placement,
    build: Callable[[Placement, Deployment | None], Deployment],
    unit_memory: dict[str, float],
    *,
    seed: int,
    deadline: float,
    max_evaluations: int | None = None,
) -> tuple[Deployment, Evaluation, SearchStats]:
    """First-improvement local search over replica moves.

    Args:
        inst: The instance.
        placement: Starting placement, unit -> hosting nodes (every unit hosted at least once).
        build: ``build(placement, incumbent)`` routes a placement into a deployment; the
            incumbent (``None`` for the start) lets it re-route only what a move changed.
        unit_memory: MiB one replica of each unit takes.
        seed: Seed of the move order.
        deadline: ``time.perf_counter()`` value at which to stop.
        max_evaluations: Optional cap on evaluated candidates.

    Returns:
        The best deployment found, its evaluation and :class:`SearchStats`.
    """
    rng = np.random.default_rng(seed)
    best_dep = build(placement, None)
    best_ev = evaluate(inst, best_dep)
    best = score(inst, best_ev)
    stats = SearchStats()
    while True:
        stats.passes += 1
        moves = _moves(inst, placement, unit_memory)
        improved = False
        for i in rng.permutation(len(moves)):
            if time.perf_counter() > deadline:
                stats.stopped = "deadline"
                return best_dep, best_ev, stats
            if max_evaluations is not None and stats.evaluations >= max_evaluations:
                stats.stopped = "max evaluations"
                return best_dep, best_ev, stats
            candidate = _apply(placement, moves[i])
            dep = build(candidate, best_dep)
            ev = evaluate(inst, dep)
            stats.evaluations += 1
            s = score(inst, ev)
            if s < (best[0], best[1] * (1 - 1e-9)):
                placement, best_dep, best_ev, best = candidate, dep, ev, s
                stats.improvements += 1
                improved = True
                break
        if not improved:
            stats.stopped = "local optimum"
            return best_dep, best_ev, stats
