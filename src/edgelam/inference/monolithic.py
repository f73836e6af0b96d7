r"""The monolithic baseline: every LAM deployed whole, nothing shared.

A copy of LAM :math:`f` on node :math:`n` holds its own instance of each of the LAM's
microservices (placement keys ``"flow/service"``, so two LAMs' copies of one encoder both take
memory), and a request is served entirely by one node that hosts a copy of its LAM. This is
what deploying off-the-shelf LAMs looks like; comparing it with the shared deployment measures
what microservice sharing saves in memory, instances, utilisation and latency -- and where the
monolithic one does not fit at all.

Both solvers place copies of whole LAMs (the *units*):

* ``method="greedy"``: LAMs largest first, each on the nodes with the lowest demand-weighted
  latency until their reserved capacity covers its work, then replica local search
  (:mod:`.local_search`); requests go to the hosting node minimising ``rate x latency +
  increase of congestion``.
* ``method="exact"``: CP-SAT on :math:`y_{f,n}` (copy of :math:`f` on :math:`n`) and
  :math:`z_{c,n}` (class :math:`c` served on :math:`n`, :math:`z \le y`); the latency of a class
  on one node is a constant, so the model is small (same scaling and tangents as :mod:`.cpsat`).

>>> from edgelam.inference.instance import generate_instance
>>> inst = generate_instance(4, seed=1, flows=["image-qa", "image-caption"])
>>> mono = solve_monolithic(inst, time_limit_s=5)
>>> mono.shared, mono.info["feasible"], sorted(mono.placement)[0]
(False, True, 'image-caption/clip-vit-l14')
"""

from __future__ import annotations

import time

import numpy as np
from ortools.sat.python import cp_model

from edgelam.config import ConfigError
from edgelam.inference.construction import construct
from edgelam.inference.cpsat import (
    add_congestion,
    congestion_floor,
    finish_solution,
    floor_time,
    floor_util,
    infeasible_error,
    rate_weight,
    run_cp_sat,
    tangent_points,
)
from edgelam.inference.deployment import Deployment, class_latency, congestion, service_time
from edgelam.inference.instance import Instance
from edgelam.inference.local_search import local_search

__all__ = [
    "as_shared",
    "greedy_lams",
    "lam_memory_mb",
    "route_monolithic",
    "solve_monolithic",
    "solve_monolithic_exact",
]

METHODS = ("greedy", "exact")


def lam_memory_mb(inst: Instance, flow: str) -> float:
    """MiB of one whole copy of LAM ``flow`` (one instance of each of its microservices)."""
    return sum(inst.catalog.services[s].memory_mb for s in inst.catalog.flows[flow].services())


def _on_node(inst: Instance, flow: str, origin: int, n: int) -> tuple[float, float]:
    """(latency, utilisation per request/s) of a request of (flow, origin) served whole on n."""
    f = inst.catalog.flows[flow]
    latency = class_latency(inst, Deployment({}), flow, origin, {s.id: n for s in f.stages})
    return latency, sum(service_time(inst, flow, s.id, n) for s in f.stages)


def _deployment(inst: Instance, lams: dict[str, list[int]], routing: dict) -> Deployment:
    placement = {
        f"{flow}/{s}": sorted(nodes)
        for flow, nodes in lams.items()
        for s in inst.catalog.flows[flow].services()
        if nodes
    }
    return Deployment(placement, routing, shared=False, method="monolithic")


def as_shared(dep: Deployment) -> Deployment:
    """A monolithic deployment as a shared one: copies merged per microservice, same routing
    (so the same latency and utilisation, and no more memory).

    >>> as_shared(Deployment({"a/enc": [0], "b/enc": [0, 1]}, shared=False)).placement
    {'enc': [0, 1]}
    """
    placement: dict[str, set[int]] = {}
    for key, nodes in dep.placement.items():
        placement.setdefault(key.split("/", 1)[-1], set()).update(nodes)
    return Deployment({k: sorted(v) for k, v in placement.items()}, dict(dep.routing), True, dep.method, dict(dep.info))  # fmt: skip


def route_monolithic(inst: Instance, lams: dict[str, list[int]]) -> Deployment:
    """Route every class to one node hosting its LAM (classes by decreasing work; each takes the
    host minimising ``(excess over max_utilisation, rate x latency + congestion increase)``).

    Args:
        inst: The instance.
        lams: LAM (flow) -> nodes hosting a whole copy.

    Returns:
        The monolithic deployment (classes whose LAM is hosted nowhere stay unrouted).
    """
    rho = np.zeros(len(inst.nodes))
    routing: dict[tuple[str, int], dict[str, int]] = {}
    cost = {}
    for d in inst.demands:
        for n in lams.get(d.flow, []):
            cost[d.flow, d.node, n] = _on_node(inst, d.flow, d.node, n)
    work = {d: d.rate * sum(inst.catalog.stage_gflops(d.flow, s.id) for s in inst.catalog.flows[d.flow].stages) for d in inst.demands}  # fmt: skip
    for d in sorted(inst.demands, key=lambda d: -work[d]):
        best = None
        for n in lams.get(d.flow, []):
            latency, tau = cost[d.flow, d.node, n]
            new = rho[n] + d.rate * tau
            extra = congestion(min(new, 0.999)) - congestion(min(rho[n], 0.999))
            key = (max(0.0, new - inst.max_utilisation), d.rate * latency + extra)
            if best is None or key < best[0]:
                best = (key, n, tau)
        if best is None:
            continue
        _, n, tau = best
        rho[n] += d.rate * tau
        routing[d.flow, d.node] = {s.id: n for s in inst.catalog.flows[d.flow].stages}
    return _deployment(inst, lams, routing)


def greedy_lams(inst: Instance) -> dict[str, list[int]]:
    """Whole-LAM placement by :func:`~edgelam.inference.construction.construct` with
    ``shared=False``: classes by decreasing work, each on the node minimising its share of the
    objective among those hosting its LAM or with memory for a new copy.

    Args:
        inst: The instance.

    Returns:
        LAM (flow) -> nodes hosting a whole copy (empty when no node has the memory).
    """
    dep, _ = construct(inst, shared=False)
    lams: dict[str, list[int]] = {d.flow: [] for d in inst.demands}
    for (flow, _), nodes in dep.routing.items():
        n = next(iter(nodes.values()))
        if n not in lams[flow]:
            lams[flow].append(n)
    return {f: sorted(v) for f, v in lams.items()}


def _solve_monolithic_greedy(inst: Instance, *, seed: int, time_limit_s: float) -> Deployment:
    start = time.perf_counter()
    lams = greedy_lams(inst)
    memory = {flow: lam_memory_mb(inst, flow) for flow in lams}
    dep, ev, stats = local_search(
        inst, lams, lambda p, _: route_monolithic(inst, p), memory, seed=seed,
        deadline=start + time_limit_s,
    )  # fmt: skip
    dep.info = {
        "objective_s": float(ev.objective_s),
        "feasible": ev.feasible,
        "solve_time_s": time.perf_counter() - start,
        "evaluations": stats.evaluations,
        "improvements": stats.improvements,
        "stopped": stats.stopped,
    }
    if not ev.feasible:
        dep.info["violations"] = ev.violations
        missing = [f for f, nodes in lams.items() if not nodes]
        dep.info["reasons"] = [
            f"no node has {lam_memory_mb(inst, f):.0f} MiB free for a whole copy of LAM {f}"
            for f in missing
        ] + inst.infeasibility_report()
    return dep


class _MonolithicModel:
    """CP-SAT model of the monolithic problem."""

    def __init__(self, inst: Instance, tangent_tolerance: float) -> None:
        self.inst = inst
        self.model = m = cp_model.CpModel()
        self.points = tangent_points(inst.max_utilisation, tangent_tolerance)
        util_cap = floor_util(inst.max_utilisation + 1e-9)
        flows = list(dict.fromkeys(d.flow for d in inst.demands))
        mem = {f: int(lam_memory_mb(inst, f) * 1000 * (1 - 1e-12)) for f in flows}
        self.y: dict[tuple[str, int], cp_model.IntVar] = {}
        for n, node in enumerate(inst.nodes):
            cap = int((node.memory_mb + 1e-6) * 1000)
            fits = [f for f in flows if mem[f] <= cap]
            self.y.update({(f, n): m.new_bool_var(f"y[{f},{n}]") for f in fits})
            m.add(sum(mem[f] * self.y[f, n] for f in fits) <= cap)
        loads: list[list] = [[] for _ in inst.nodes]
        latency_terms = []
        self.z: list[tuple[str, int, dict[int, cp_model.IntVar]]] = []
        self.data: list[dict[int, tuple[int, int]]] = []  # per class: node -> (latency, util)
        for d in inst.demands:
            data = {}
            for n in range(len(inst.nodes)):
                latency, tau = _on_node(inst, d.flow, d.node, n)
                if (d.flow, n) in self.y and floor_util(d.rate * tau) <= util_cap:
                    data[n] = (floor_time(latency), floor_util(d.rate * tau))
            if not data:
                raise infeasible_error(inst, "monolithic", [
                    f"no node has the memory ({lam_memory_mb(inst, d.flow):.0f} MiB) and "
                    f"capacity for a whole copy of {d.flow} serving node {d.node}'s requests"
                ])  # fmt: skip
            z = {n: m.new_bool_var(f"z[{d.flow}@{d.node},{n}]") for n in data}
            m.add_exactly_one(z.values())
            for n, var in z.items():
                m.add_implication(var, self.y[d.flow, n])
                loads[n].append(data[n][1] * var)
                latency_terms.append(rate_weight(d.rate) * data[n][0] * var)
            self.z.append((d.flow, d.node, z))
            self.data.append(data)
        self.w: dict[int, cp_model.IntVar] = {}
        self.util: dict[int, cp_model.IntVar] = {}
        for n, load in enumerate(loads):
            if load:
                self.util[n] = m.new_int_var(0, util_cap, f"rho[{n}]")
                m.add(self.util[n] == sum(load))
                self.w[n] = add_congestion(m, self.util[n], util_cap, self.points, f"w[{n}]")
        m.minimize(sum(latency_terms) + sum(self.w.values()))

    def add_hint(self, dep: Deployment) -> bool:
        """Hint the class-to-node choices of a monolithic ``dep``; False if it does not fit."""
        chosen = []
        for (flow, origin, _), data in zip(self.z, self.data, strict=True):
            nodes = set(dep.routing.get((flow, origin), {}).values())
            if len(nodes) != 1 or next(iter(nodes)) not in data:
                return False
            chosen.append(next(iter(nodes)))
        loads = [0] * len(self.inst.nodes)
        for (_, _, z), data, n in zip(self.z, self.data, chosen, strict=True):
            for k, var in z.items():
                self.model.add_hint(var, int(k == n))
            loads[n] += data[n][1]
        used = {(flow, n) for (flow, _, _), n in zip(self.z, chosen, strict=True)}
        for key, var in self.y.items():
            self.model.add_hint(var, int(key in used))
        for n, w in self.w.items():
            self.model.add_hint(self.util[n], loads[n])
            self.model.add_hint(w, congestion_floor(loads[n], self.points))
        return True

    def decode(self, solver: cp_model.CpSolver) -> Deployment:
        lams: dict[str, set[int]] = {}
        routing = {}
        for flow, origin, z in self.z:
            n = next(k for k, var in z.items() if solver.boolean_value(var))
            lams.setdefault(flow, set()).add(n)
            routing[flow, origin] = {s.id: n for s in self.inst.catalog.flows[flow].stages}
        return _deployment(self.inst, {f: sorted(v) for f, v in lams.items()}, routing)


def solve_monolithic_exact(
    inst: Instance,
    *,
    time_limit_s: float = 60.0,
    workers: int = 1,
    hint: Deployment | None = None,
    seed: int = 0,
    warm_start: bool = True,
    tangent_tolerance: float = 1e-4,
) -> Deployment:
    """The monolithic problem solved by CP-SAT (arguments and ``info`` as
    :func:`~edgelam.inference.exact.solve_exact`).

    Raises:
        InfeasibleDeploymentError: no monolithic deployment fits (proved).
    """
    start = time.perf_counter()
    if hint is None and warm_start:
        hint = _solve_monolithic_greedy(inst, seed=seed, time_limit_s=min(10.0, 0.2 * time_limit_s))  # fmt: skip
    mm = _MonolithicModel(inst, tangent_tolerance)
    hinted = hint is not None and mm.add_hint(hint)
    remaining = max(1.0, time_limit_s - (time.perf_counter() - start))
    solver, status, cp_time = run_cp_sat(mm.model, time_limit_s=remaining, workers=workers, seed=seed)  # fmt: skip
    return finish_solution(inst, mm, solver, status, hint, hinted, start, cp_time, "monolithic", "monolithic-exact")  # fmt: skip


def solve_monolithic(
    inst: Instance,
    *,
    method: str = "greedy",
    time_limit_s: float = 60.0,
    workers: int = 1,
    seed: int = 0,
) -> Deployment:
    """Deploy each LAM whole (nothing shared).

    Args:
        inst: The instance.
        method: ``"greedy"`` (construction + local search within ``time_limit_s``) or
            ``"exact"`` (CP-SAT within ``time_limit_s``).
        time_limit_s: Wall-clock budget in seconds.
        workers: CP-SAT workers (``exact`` only).
        seed: Seed of the local search / CP-SAT.

    Returns:
        A deployment with ``shared=False`` and placement keys ``"flow/service"``.

    Raises:
        ConfigError: unknown ``method``.
        InfeasibleDeploymentError: ``exact`` proved that no monolithic deployment fits.
    """
    if method == "greedy":
        return _solve_monolithic_greedy(inst, seed=seed, time_limit_s=time_limit_s)
    if method == "exact":
        return solve_monolithic_exact(inst, time_limit_s=time_limit_s, workers=workers, seed=seed)
    raise ConfigError(f"method: {method!r} is not one of {list(METHODS)}")
