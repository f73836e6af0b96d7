"""Baseline routers and demand attackers for the orchestration MDP (:mod:`.env`).

A *router* is a callable ``(core, rng) -> route [B, K]`` (replica index per component) reading
the state of an :class:`~.env.OrchestrationCore`; an *attacker* is a callable ``(core, rng) ->
[B, A]`` adversary action (rate levels, forced moves; :meth:`~.env.OrchestrationCore.perturbation`).
The learned ones (:mod:`.ppo`) have the same shape.

Routers:

* :class:`RandomRouter` -- a uniformly drawn replica for every component.
* :class:`RoundRobinRouter` -- component ``k`` uses replica ``(t + k) mod J_k`` in slot ``t``.
* :class:`LeastLoadedRouter` -- components in decreasing order of this slot's work; each takes
  the replica with the least queued work (backlog + work already routed this slot), ties to the
  faster node.
* :class:`GreedyLatencyRouter` -- groups in decreasing order of nominal work rate, stages in
  topological order; each stage takes the replica with the earliest expected finish time
  (ready time incl. transfers + fluid wait + compute, + the transfer back for sinks).

Attackers: :class:`RandomAttacker` (uniformly random picks and moves, the same budget) and
:class:`StructuredAttacker` (a fixed surge pattern plus optional "push-away" moves);
:func:`structured_attacks` lists the family whose worst case :mod:`.evaluate` reports.
"""

from __future__ import annotations

import numpy as np

from edgelam.inference.orchestration.env import OrchestrationCore

__all__ = [
    "GreedyLatencyRouter",
    "LeastLoadedRouter",
    "RandomAttacker",
    "RandomRouter",
    "RoundRobinRouter",
    "StructuredAttacker",
    "baseline_routers",
    "structured_attacks",
]


class RandomRouter:
    """Uniformly random replica per component."""

    def __call__(self, core: OrchestrationCore, rng: np.random.Generator) -> np.ndarray:
        return rng.integers(0, core.sub.num_hosts, size=(core.batch, core.sub.num_components))


class RoundRobinRouter:
    """Replica ``(t + k) mod J_k`` for component ``k`` in slot ``t`` (stateless)."""

    def __call__(self, core: OrchestrationCore, rng: np.random.Generator) -> np.ndarray:
        k = np.arange(core.sub.num_components)
        return np.tile((core.t + k) % core.sub.num_hosts, (core.batch, 1))


class LeastLoadedRouter:
    """Least queued work (seconds) first, processing the heaviest components first."""

    def __call__(self, core: OrchestrationCore, rng: np.random.Generator) -> np.ndarray:
        s, b = core.sub, np.arange(core.batch)
        queued = core.backlog.copy()
        route = np.zeros((core.batch, s.num_components), dtype=np.int64)
        work = core.arrivals[:, s.comp_group] * s.tau.max(1)
        speed = np.array([x.flops for x in s.inst.nodes])
        for k in np.argsort(-work.mean(0), kind="stable"):
            hosts = s.hosts[k, : s.num_hosts[k]]
            score = queued[:, hosts] - 1e-9 * speed[hosts] / speed.max()  # ties -> faster
            j = score.argmin(1)
            route[:, k] = j
            queued[b, hosts[j]] += core.arrivals[:, s.comp_group[k]] * s.tau[k, hosts[j]]
        return route


class GreedyLatencyRouter:
    """Earliest expected finish per stage (fluid wait incl. work already routed this slot)."""

    def __call__(self, core: OrchestrationCore, rng: np.random.Generator) -> np.ndarray:
        s, bs = core.sub, core.batch
        b = np.arange(bs)
        flow_work = np.array([s.tau[s.comp_group == g].min(1).sum() for g in range(s.num_groups)])
        added = np.zeros_like(core.backlog)
        route = np.zeros((bs, s.num_components), dtype=np.int64)
        node_of = np.zeros((bs, s.num_components), dtype=np.int64)
        finish = np.zeros((bs, s.num_components))
        is_sink = np.zeros(s.num_components, bool)
        is_sink[s.sinks[s.sinks >= 0]] = True
        for g in np.argsort(-s.rate * flow_work, kind="stable"):
            a = core.location[:, g]
            arrivals = core.arrivals[:, g]
            for k in np.flatnonzero(s.comp_group == g):  # topological within the group
                hosts = s.hosts[k, : s.num_hosts[k]]  # [J]
                ready = np.full((bs, len(hosts)), -np.inf)
                if s.user_bytes[k] > 0:
                    ready = s.upload[g] + s.transfer(a[:, None], hosts, s.user_bytes[k])
                for u in s.inputs[k][s.inputs[k] >= 0]:
                    arrive = finish[:, u, None] + s.transfer(
                        node_of[:, u, None], hosts, s.out_bytes[u]
                    )
                    ready = np.maximum(ready, arrive)
                work = arrivals[:, None] * s.tau[k, hosts]
                done = (
                    ready
                    + core.backlog[:, hosts]
                    + 0.5 * (added[:, hosts] + work)
                    + s.tau[k, hosts]
                )
                score = done + (s.transfer(hosts, a[:, None], s.out_bytes[k]) if is_sink[k] else 0)
                j = score.argmin(1)
                route[:, k], node_of[:, k], finish[:, k] = j, hosts[j], done[b, j]
                added[b, hosts[j]] += work[b, j]
        return route


def baseline_routers() -> dict[str, object]:
    """The four baselines by name."""
    return {
        "random": RandomRouter(),
        "round-robin": RoundRobinRouter(),
        "least-loaded": LeastLoadedRouter(),
        "greedy-latency": GreedyLatencyRouter(),
    }


class RandomAttacker:
    """Uniformly random adversary actions (picked groups and moves) within the budget."""

    def __call__(self, core: OrchestrationCore, rng: np.random.Generator) -> np.ndarray:
        return rng.integers(0, core.adv_nvec, size=(core.batch, len(core.adv_nvec)))


class StructuredAttacker:
    """A fixed attack: the P picks cycle over ``targets`` (the extra rate goes to them), and
    with ``push`` the ``move_budget`` highest-rate groups each move to the neighbour farthest
    (path delay) from the nearest replica of their first stage.

    Args:
        targets: Group indices that receive the extra rate.
        push: Whether to use the forced moves.
    """

    def __init__(self, targets: np.ndarray, push: bool = False):
        self.targets = np.asarray(targets, int)
        self.push = push

    def __call__(self, core: OrchestrationCore, rng: np.random.Generator) -> np.ndarray:
        s, cfg = core.sub, core.cfg
        p = cfg.rate_picks
        act = np.zeros((core.batch, len(core.adv_nvec)), dtype=np.int64)
        act[:, :p] = self.targets[np.arange(p) % len(self.targets)]
        moves = act[:, p:].reshape(core.batch, cfg.move_budget, 2)
        moves[:, :, 0] = s.num_groups  # no move
        if self.push and cfg.move_budget:
            for m, g in enumerate(np.argsort(-s.rate, kind="stable")[: cfg.move_budget]):
                first = s.hosts[np.flatnonzero(s.comp_group == g)[0]]
                here = core.location[:, g]
                nbrs = s.neighbours[here]  # [B, D]
                dist = s.inst.path_delay[nbrs[..., None], first].min(-1)
                dist = np.where(np.arange(nbrs.shape[1]) < s.degree[here][:, None], dist, -1)
                moves[:, m] = np.stack([np.full(core.batch, g), dist.argmax(1)], axis=1)
        act[:, p:] = moves.reshape(core.batch, -1)
        return act


def structured_attacks(core: OrchestrationCore) -> dict[str, StructuredAttacker]:
    """The family of structured attacks: the extra rate on the highest-rate groups of one flow
    (for every flow), or on the P highest-rate groups overall; each with and without push-away
    moves."""
    s = core.sub
    by_rate = np.argsort(-s.rate, kind="stable")
    patterns = {"surge-top-rate": by_rate[: core.cfg.rate_picks]}
    for f in sorted(set(s.group_flow)):
        patterns[f"surge-{f}"] = np.array([g for g in by_rate if s.group_flow[g] == f])
    out = {}
    for name, targets in patterns.items():
        out[name] = StructuredAttacker(targets)
        if core.cfg.move_budget:
            out[f"{name}+push"] = StructuredAttacker(targets, push=True)
    return out
