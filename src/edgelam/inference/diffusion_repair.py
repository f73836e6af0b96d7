"""Turning a sampled deployment indicator into a feasible deployment.

A sample of the diffusion model is a bool indicator ``x[S, N]`` together with the denoiser's
last probabilities ``score[S, N]`` (:math:`p_\\theta(x_0 = 1)`). :func:`repair_indicator` makes it
memory-feasible and complete, the way DIFUSCO decodes heatmaps greedily:

1. drop entries of microservices no demand needs and entries that cannot fit on their node;
2. on every node over its memory, drop entries lowest score first (copies that exist elsewhere
   before sole copies) until it fits;
3. place every needed microservice that has no host, largest first, on the highest-scoring node
   with enough free memory; if none has, evict duplicate copies (lowest score first) from the
   highest-scoring node whose memory could hold it.

:func:`finalize_candidate` then routes the placement (:func:`~edgelam.inference.deployment.route`)
and, while some node exceeds the utilisation cap, adds a replica of the microservice loading that
node most on the best-scoring node with free memory and spare compute, and routes again.

>>> import numpy as np
>>> from edgelam.inference.instance import generate_instance
>>> inst = generate_instance(6, seed=0)
>>> x = repair_indicator(inst, np.ones((16, 6), bool), np.zeros((16, 6)))
>>> bool(memory_feasible(inst, x)), bool((x.any(1) >= needed_services(inst)).all())
(True, True)
"""

from __future__ import annotations

import numpy as np

from edgelam.inference.deployment import Deployment, Evaluation, evaluate, route, service_time
from edgelam.inference.diffusion_features import needed_services
from edgelam.inference.instance import Instance

__all__ = ["finalize_candidate", "memory_feasible", "repair_indicator"]


def _sizes(inst: Instance) -> tuple[np.ndarray, np.ndarray]:
    mem_s = np.array([s.memory_mb for s in inst.catalog.services.values()])
    mem_n = np.array([x.memory_mb for x in inst.nodes])
    return mem_s, mem_n


def memory_feasible(inst: Instance, x: np.ndarray) -> bool:
    """Whether indicator ``x`` (bool ``[S, N]``) fits every node's memory."""
    mem_s, mem_n = _sizes(inst)
    return bool(((mem_s @ x) <= mem_n + 1e-6).all())


def repair_indicator(inst: Instance, x: np.ndarray, score: np.ndarray) -> np.ndarray:
    """A memory-feasible indicator hosting every needed microservice, close to ``x``.

    Args:
        inst: The instance.
        x: Sampled indicator, bool ``[S, N]`` (services in catalog order).
        score: Preference of each entry (higher is kept/added first), float ``[S, N]``.

    Returns:
        The repaired indicator, bool ``[S, N]`` (a new array). It covers every needed
        microservice whenever some node's memory can hold it next to the other sole copies.

    Raises:
        ValueError: ``x`` or ``score`` is not ``[S, N]``.
    """
    mem_s, mem_n = _sizes(inst)
    if x.shape != (len(mem_s), len(mem_n)) or score.shape != x.shape:
        raise ValueError(
            f"x and score must be [S, N] = {(len(mem_s), len(mem_n))}, got {x.shape}, {score.shape}"
        )
    needed = needed_services(inst)
    fits = mem_s[:, None] <= mem_n[None, :] + 1e-6
    x = x.astype(bool) & needed[:, None] & fits
    for n in range(len(mem_n)):
        while mem_s @ x[:, n] > mem_n[n] + 1e-6:
            hosted = np.flatnonzero(x[:, n])
            sole = x[hosted].sum(1) == 1
            drop = hosted[np.lexsort((score[hosted, n], sole))[0]]  # duplicates first, low score
            x[drop, n] = False
    for s in sorted(np.flatnonzero(needed & ~x.any(1)), key=lambda s: -mem_s[s]):
        free = mem_n - mem_s @ x
        order = np.argsort(-score[s], kind="stable")
        room = [n for n in order if free[n] >= mem_s[s] - 1e-6]
        if room:
            x[s, room[0]] = True
            continue
        for n in (n for n in order if fits[s, n]):
            dup = [h for h in np.flatnonzero(x[:, n]) if x[h].sum() > 1]
            dup.sort(key=lambda h: score[h, n])
            freed, evict = free[n], []
            for h in dup:
                if freed >= mem_s[s] - 1e-6:
                    break
                evict.append(h)
                freed += mem_s[h]
            if freed >= mem_s[s] - 1e-6:
                x[evict, n] = False
                x[s, n] = True
                break
    return x


def _node_load(inst: Instance, dep: Deployment, node: int) -> dict[str, float]:
    """Utilisation each microservice puts on ``node`` under ``dep`` 's routing."""
    load: dict[str, float] = {}
    for d in inst.demands:
        nodes = dep.routing.get((d.flow, d.node), {})
        for st in inst.catalog.flows[d.flow].stages:
            if nodes.get(st.id) == node:
                tau = service_time(inst, d.flow, st.id, node)
                load[st.service] = load.get(st.service, 0.0) + d.rate * tau
    return load


def finalize_candidate(
    inst: Instance, x: np.ndarray, score: np.ndarray, *, capacity_rounds: int = 4
) -> tuple[Deployment, Evaluation]:
    """Repair, route and evaluate one sampled indicator.

    Args:
        inst: The instance.
        x: Sampled indicator, bool ``[S, N]``.
        score: Entry preferences, float ``[S, N]`` (the denoiser's probabilities).
        capacity_rounds: At most this many replica-adding rounds for overloaded nodes.

    Returns:
        The routed deployment (``method="diffusion"``) and its evaluation.
    """
    services = list(inst.catalog.services)
    mem_s, mem_n = _sizes(inst)
    x = repair_indicator(inst, x, score)
    dep = route(inst, Deployment.from_indicator(inst, x).placement, method="diffusion")
    ev = evaluate(inst, dep)
    cap = inst.max_utilisation
    for _ in range(capacity_rounds):
        hot = [n for n, u in enumerate(ev.utilisation) if u > cap + 1e-9]
        if not hot:
            break
        added = False
        for n in hot:
            load = _node_load(inst, dep, n)
            for name in sorted(load, key=lambda k: -load[k]):
                s = services.index(name)
                free = mem_n - mem_s @ x
                util = np.array(ev.utilisation)
                ok = [
                    m
                    for m in range(len(mem_n))
                    if not x[s, m] and free[m] >= mem_s[s] - 1e-6 and util[m] < cap - 0.05
                ]
                if ok:
                    best = max(ok, key=lambda m: (score[s, m], -util[m]))
                    x[s, best] = True
                    added = True
                    break
        if not added:
            break
        dep = route(inst, Deployment.from_indicator(inst, x).placement, method="diffusion")
        ev = evaluate(inst, dep)
    return dep, ev
