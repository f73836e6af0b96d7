"""Routing refinement: per-class best responses for a fixed placement.

:func:`~edgelam.inference.deployment.route` routes stage by stage, so it cannot see that moving
the vision encoder *and* its projector next to the backbone saves a 2 MB transfer.
:func:`refine_routing` takes any complete routing and, class by class (largest work first),
replaces the class's assignment by the best of a few candidates, judged with the other classes'
loads fixed:

* each single stage moved to another node hosting its microservice;
* for each node, every stage it can host moved onto it (co-location).

The cost of a candidate is ``(excess over max_utilisation, rate x D_c + increase of
sum_n rho_n^2/(1-rho_n))``, the class's share of the objective. A pass never makes the
objective worse; passes repeat until nothing changes or ``passes`` is reached.

>>> from edgelam.inference.instance import generate_instance
>>> from edgelam.inference.deployment import evaluate, route
>>> inst = generate_instance(6, seed=2, flows=["image-qa", "speech-vision-qa"])
>>> placement = {s: [0, 4, 5] for s in inst.catalog.services}
>>> placement["llm-7b"] = [4, 5]
>>> dep = route(inst, placement)
>>> better = refine_routing(inst, dep)
>>> bool(evaluate(inst, better).objective_s <= evaluate(inst, dep).objective_s)
True
"""

from __future__ import annotations

from edgelam.inference.deployment import Deployment, class_latency, congestion, service_time
from edgelam.inference.instance import Instance

__all__ = ["refine_routing"]


def _loads(inst: Instance, dep: Deployment) -> list[float]:
    rho = [0.0] * len(inst.nodes)
    for d in inst.demands:
        for sid, n in dep.routing.get((d.flow, d.node), {}).items():
            rho[n] += d.rate * service_time(inst, d.flow, sid, n)
    return rho


def refine_routing(
    inst: Instance,
    dep: Deployment,
    *,
    passes: int = 2,
    classes: set[tuple[str, int]] | None = None,
) -> Deployment:
    """Improve ``dep``'s routing class by class (see the module docstring).

    Args:
        inst: The instance.
        dep: A deployment; unrouted classes stay unrouted.
        passes: Maximum passes over the classes.
        classes: Only these (flow, origin) classes may change (default: all).

    Returns:
        A new deployment with the same placement and a routing no worse for the objective.
    """
    cat = inst.catalog
    routing = {c: dict(nodes) for c, nodes in dep.routing.items()}
    out = Deployment(dep.placement, routing, dep.shared, dep.method, dict(dep.info))
    rho = _loads(inst, out)
    umax = inst.max_utilisation
    work = {d: d.rate * sum(cat.stage_gflops(d.flow, s.id) for s in cat.flows[d.flow].stages) for d in inst.demands}  # fmt: skip
    order = sorted(
        (d for d in inst.demands if (d.flow, d.node) in routing
         and (classes is None or (d.flow, d.node) in classes)),
        key=lambda d: -work[d],
    )  # fmt: skip
    for _ in range(passes):
        changed = False
        for d in order:
            stages = cat.flows[d.flow].stages
            hosts = {s.id: out.hosts(d.flow, s.service) for s in stages}
            tau = {(s.id, n): service_time(inst, d.flow, s.id, n) for s in stages for n in hosts[s.id]}  # fmt: skip
            current = routing[d.flow, d.node]
            for sid, n in current.items():
                rho[n] -= d.rate * tau[sid, n]

            def cost(nodes: dict[str, int], d=d, tau=tau) -> tuple[float, float]:
                add: dict[int, float] = {}
                for sid, n in nodes.items():
                    add[n] = add.get(n, 0.0) + d.rate * tau[sid, n]
                over = sum(max(0.0, rho[n] + a - umax) for n, a in add.items())
                extra = sum(congestion(min(rho[n] + a, 0.999)) - congestion(min(rho[n], 0.999)) for n, a in add.items())  # fmt: skip
                return over, d.rate * class_latency(inst, out, d.flow, d.node, nodes) + extra

            best, best_cost = current, cost(current)
            candidates = [
                {**current, sid: m} for sid in current for m in hosts[sid] if m != current[sid]
            ]
            for m in {m for h in hosts.values() for m in h}:
                colocated = {sid: (m if m in hosts[sid] else n) for sid, n in current.items()}
                if colocated != current:
                    candidates.append(colocated)
            for cand in candidates:
                c = cost(cand)
                if c < (best_cost[0], best_cost[1] * (1 - 1e-12)):
                    best, best_cost = cand, c
            if best is not current:
                changed = True
                routing[d.flow, d.node] = best
            for sid, n in best.items():
                rho[n] += d.rate * tau[sid, n]
        if not changed:
            break
    return out
