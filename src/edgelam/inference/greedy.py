"""Greedy deployment of shared microservices, improved by replica local search.

1. **Construction**, two ways, keeping the better after routing:
   :func:`~edgelam.inference.construction.construct` serves request classes, by decreasing
   work, each whole on the node that minimises its share of the objective among nodes with
   memory for what they do not host yet (replicas appear where load and latency justify the
   memory; LAMs reuse each other's microservices);
   :func:`~edgelam.inference.construction.construct_by_service` places microservices largest
   first on the cheapest nodes until their capacity covers the work (better when memory is
   tight: the backbones claim the fast nodes before smaller LAMs fill them).
2. **Routing**: :func:`~edgelam.inference.deployment.route`, then
   :func:`~edgelam.inference.routing.refine_routing` lets each class split its stages over the
   hosts (or co-locate them) where that lowers the objective.
3. **Local search** (:func:`~edgelam.inference.local_search.local_search`): add, remove or move
   one replica; after a move only the classes using the changed microservice are re-routed
   (stages whose host disappeared go to the fastest remaining host, then those classes are
   refined); a move is kept when :func:`~edgelam.inference.deployment.evaluate` improves.
4. Replicas no class uses are dropped.

>>> from edgelam.inference.instance import generate_instance
>>> inst = generate_instance(4, seed=1, flows=["image-qa", "image-caption"])
>>> dep = solve_greedy(inst, time_limit_s=5)
>>> dep.info["feasible"], dep.method
(True, 'greedy')
"""

from __future__ import annotations

import time

from edgelam.inference.construction import construct, construct_by_service
from edgelam.inference.deployment import Deployment, evaluate, route, service_time
from edgelam.inference.instance import Instance
from edgelam.inference.routing import refine_routing

__all__ = ["drop_unused", "reroute", "solve_greedy"]


def reroute(
    inst: Instance,
    placement: dict[str, list[int]],
    incumbent: Deployment | None,
    *,
    passes: int = 1,
) -> Deployment:
    """Route ``placement``, re-using ``incumbent``'s routing where the placement did not change.

    Args:
        inst: The instance.
        placement: Microservice -> hosting nodes.
        incumbent: A routed deployment whose placement differs from ``placement`` by a few
            replicas, or ``None`` to route from scratch (:func:`~.deployment.route`).
        passes: Refinement passes (:func:`~.routing.refine_routing`).

    Returns:
        A shared deployment of ``placement`` (classes using an unplaced microservice unrouted).
    """
    if incumbent is None:
        return refine_routing(inst, route(inst, placement, method="greedy"), passes=passes)
    cat = inst.catalog
    old = incumbent.placement
    changed = {s for s in set(placement) | set(old) if placement.get(s, []) != old.get(s, [])}
    routing = {c: dict(v) for c, v in incumbent.routing.items()}
    affected = set()
    for d in inst.demands:
        c, stages = (d.flow, d.node), cat.flows[d.flow].stages
        if not all(placement.get(s.service) for s in stages):
            routing.pop(c, None)
            continue
        if c not in routing:
            routing[c] = {}
        elif not any(s.service in changed for s in stages):
            continue
        affected.add(c)
        for s in stages:
            hosts = placement[s.service]
            if routing[c].get(s.id) not in hosts:
                routing[c][s.id] = min(hosts, key=lambda n, s=s: service_time(inst, d.flow, s.id, n))  # fmt: skip
    dep = Deployment({s: sorted(v) for s, v in placement.items()}, routing, True, "greedy")
    return refine_routing(inst, dep, passes=passes, classes=affected)


def drop_unused(inst: Instance, dep: Deployment) -> Deployment:
    """``dep`` without the replicas no routed stage uses (same routing and objective, less
    memory); a key keeps its hosts when no routed stage uses it at all."""
    used: dict[str, set[int]] = {}
    for (flow, _), nodes in dep.routing.items():
        stage = inst.catalog.flows[flow].stage
        for sid, n in nodes.items():
            used.setdefault(dep.key(flow, stage[sid].service), set()).add(n)
    placement = {k: sorted(used[k]) if k in used else v for k, v in dep.placement.items()}
    return Deployment(placement, dep.routing, dep.shared, dep.method, dict(dep.info))


def solve_greedy(
    inst: Instance,
    *,
    local_search: bool = True,
    seed: int = 0,
    time_limit_s: float = 20.0,
    max_evaluations: int | None = None,
    refine_passes: int = 1,
) -> Deployment:
    """Greedy construction + routing refinement, improved by replica local search.

    Args:
        inst: The instance.
        local_search: Run the local search after the construction.
        seed: Seed of the local search's move order.
        time_limit_s: Wall-clock budget of the whole solve (the local search stops there).
        max_evaluations: Optional cap on the local search's evaluated candidates.
        refine_passes: Passes of :func:`~edgelam.inference.routing.refine_routing` per
            (re-)routing; 0 keeps :func:`~edgelam.inference.deployment.route`'s routing.

    Returns:
        The deployment; ``info`` holds ``objective_s``, ``feasible``, ``solve_time_s``,
        ``evaluations``, ``improvements``, ``stopped``, and when infeasible, ``violations`` and
        ``reasons`` (construction problems and the instance's violated necessary conditions).
    """
    from edgelam.inference.local_search import local_search as search
    from edgelam.inference.local_search import score

    start = time.perf_counter()
    needed = {st.service for d in inst.demands for st in inst.catalog.flows[d.flow].stages}
    unit_memory = {s: inst.catalog.services[s].memory_mb for s in needed}
    built, problems = construct(inst, shared=True)
    starts = [
        Deployment(
            {**dict.fromkeys(needed, []), **built.placement}, built.routing, True, "greedy"
        ),  # fmt: skip
        route(inst, construct_by_service(inst), method="greedy"),
    ]
    starts = [refine_routing(inst, dep, passes=refine_passes) for dep in starts]
    first = min(starts, key=lambda dep: score(inst, evaluate(inst, dep)))

    def build(p: dict[str, list[int]], incumbent: Deployment | None) -> Deployment:
        return reroute(inst, p, incumbent or first, passes=refine_passes)

    deadline = start + (time_limit_s if local_search else 0.0)
    dep, ev, stats = search(
        inst, first.placement, build, unit_memory, seed=seed, deadline=deadline,
        max_evaluations=max_evaluations if local_search else 0,
    )  # fmt: skip
    dep = drop_unused(inst, dep)
    dep.method = "greedy"
    dep.info = {
        "objective_s": float(ev.objective_s),
        "feasible": ev.feasible,
        "solve_time_s": time.perf_counter() - start,
        "local_search": local_search,
        "evaluations": stats.evaluations,
        "improvements": stats.improvements,
        "stopped": stats.stopped if local_search else "no local search",
    }
    if not ev.feasible:
        dep.info["violations"] = ev.violations
        dep.info["reasons"] = problems + inst.infeasibility_report()
    return dep
