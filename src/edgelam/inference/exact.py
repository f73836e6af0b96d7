r"""Exact deployment of shared microservices with OR-Tools CP-SAT.

The model (``docs/deployment.md`` writes it out) has, for every microservice :math:`s` and node
:math:`n`, the deployment indicator :math:`x_{s,n}`; for every request class :math:`c` and stage
:math:`v` of its flow, booleans :math:`r_{c,v,n}` (exactly one true, :math:`r_{c,v,n} \le
x_{s(v),n}`). The transfer time along a DAG edge :math:`u \to v` is an integer
:math:`T_{c,uv} \ge \sum_b T(a, b)\, r_{c,v,b}`, enforced by :math:`r_{c,u,a}` for each node
:math:`a` (exact, and linear in the consumer's booleans; ``AddElement`` on the pair index
:math:`N \nu_{c,u} + \nu_{c,v}` gets expanded by the presolve into one boolean per node pair,
which does not scale to 50 nodes). Finish times follow the critical path,

.. math:: t_{c,v} \ge t_{c,u} + T_{c,uv} + \tau_{c,v}, \qquad
          D_c \ge t_{c,s} + T^{back}_{c,s} + \text{download} \ \ (s \text{ a sink}),

and the objective is :math:`\sum_c \lambda_c D_c + \sum_n w_n` with :math:`w_n` above the tangent
lines of the congestion term (:mod:`.cpsat`), subject to memory and :math:`\rho_n \le
\rho_{max}`. All rounding keeps the model a relaxation, so CP-SAT's bound is a valid lower bound.

>>> from edgelam.inference.instance import generate_instance
>>> inst = generate_instance(3, seed=0, flows=["image-caption"])
>>> dep = solve_exact(inst, time_limit_s=10)
>>> dep.info["status"], dep.info["lower_bound_s"] <= dep.info["objective_s"]
('OPTIMAL', True)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ortools.sat.python import cp_model

from edgelam.config import ConfigError
from edgelam.inference.cpsat import (
    InfeasibleDeploymentError,
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
from edgelam.inference.deployment import Deployment, service_time
from edgelam.inference.instance import Instance

__all__ = ["InfeasibleDeploymentError", "solve_exact", "warm_start_hint"]

MEMORY_UNITS_PER_MIB = 1000


@dataclass
class _Stage:
    """The variables of one stage of one class, and the integer data to recompute them."""

    sid: str
    service: str
    r: dict[int, cp_model.IntVar]
    finish: cp_model.IntVar
    compute: dict[int, int]
    util: dict[int, int]
    user: tuple[int, dict[int, int]] | None  # (upload, transfer from origin per node)
    edges: list[tuple[str, cp_model.IntVar, list[int]]] = field(default_factory=list)
    back: dict[int, int] | None = None  # sinks: transfer back to the origin per node


@dataclass
class _Class:
    flow: str
    origin: int
    rate: float
    stages: dict[str, _Stage]
    latency: cp_model.IntVar
    download: int


class _SharedModel:
    """The CP-SAT model of one instance (built in ``__init__``)."""

    def __init__(self, inst: Instance, tangent_tolerance: float) -> None:
        self.inst = inst
        cat = inst.catalog
        n_nodes = len(inst.nodes)
        self.model = m = cp_model.CpModel()
        self.points = tangent_points(inst.max_utilisation, tangent_tolerance)
        self.util_cap = floor_util(inst.max_utilisation + 1e-9)
        needed = list(dict.fromkeys(s for d in inst.demands for s in cat.flows[d.flow].services()))
        self.x: dict[tuple[str, int], cp_model.IntVar] = {}
        for n, node in enumerate(inst.nodes):
            cap = int((node.memory_mb + 1e-6) * MEMORY_UNITS_PER_MIB)
            mem = {s: int(cat.services[s].memory_mb * MEMORY_UNITS_PER_MIB * (1 - 1e-12)) for s in needed}  # fmt: skip
            fits = [s for s in needed if mem[s] <= cap]
            for s in fits:
                self.x[s, n] = m.new_bool_var(f"x[{s},{n}]")
            m.add(sum(mem[s] * self.x[s, n] for s in fits) <= cap)
        loads: list[list] = [[] for _ in range(n_nodes)]
        self.classes = [self._add_class(d.flow, d.node, d.rate, loads) for d in inst.demands]
        self.congestion: dict[int, cp_model.IntVar] = {}
        self.utilisation: dict[int, cp_model.IntVar] = {}
        for n in range(n_nodes):
            if loads[n]:
                util = m.new_int_var(0, self.util_cap, f"rho[{n}]")
                m.add(util == sum(loads[n]))
                self.utilisation[n] = util
                self.congestion[n] = add_congestion(m, util, self.util_cap, self.points, f"w[{n}]")
        m.minimize(
            sum(rate_weight(c.rate) * c.latency for c in self.classes)
            + sum(self.congestion.values())
        )

    def _add_class(self, flow: str, origin: int, rate: float, loads: list[list]) -> _Class:
        inst, m, cat = self.inst, self.model, self.inst.catalog
        n_nodes = len(inst.nodes)
        f = cat.flows[flow]
        name = f"{flow}@{origin}"
        upload = floor_time(sum(s.user_input_bytes for s in f.stages) * 8 / inst.access_uplink_bps)
        sinks = f.sinks()
        download = floor_time(
            sum(cat.stage_output_bytes(flow, s) for s in sinks) * 8 / inst.access_downlink_bps
        )
        horizon = upload + download
        stages: dict[str, _Stage] = {}
        for sid in f.topological_order():
            st = f.stage[sid]
            taus = [service_time(inst, flow, sid, n) for n in range(n_nodes)]
            util = {n: floor_util(rate * taus[n]) for n in range(n_nodes)}
            allowed = [
                n for n in range(n_nodes) if (st.service, n) in self.x and util[n] <= self.util_cap
            ]
            if not allowed:
                raise infeasible_error(inst, "shared", [
                    f"stage {sid} ({st.service}) of class ({flow}, node {origin}) fits on no node "
                    "within memory and max_utilisation"
                ])  # fmt: skip
            r = {n: m.new_bool_var(f"r[{name},{sid},{n}]") for n in allowed}
            m.add_exactly_one(r.values())
            for n, var in r.items():
                if (st.service, n) in self.x:
                    m.add_implication(var, self.x[st.service, n])
                loads[n].append(util[n] * var)
            compute = {n: floor_time(taus[n]) for n in allowed}
            horizon += max(compute.values())
            user = None
            if st.user_input_bytes:
                user = (
                    upload,
                    {n: floor_time(inst.transfer_time(origin, n, st.user_input_bytes)) for n in allowed},
                )  # fmt: skip
                horizon += max(user[1].values())
            stage = _Stage(sid, st.service, r, None, compute, util, user)  # type: ignore[arg-type]
            for u in st.inputs:
                nbytes = cat.stage_output_bytes(flow, u)
                table = [floor_time(inst.transfer_time(a, b, nbytes)) for a in range(n_nodes) for b in range(n_nodes)]  # fmt: skip
                t = m.new_int_var(0, max(table), f"T[{name},{u}->{sid}]")
                for a, ra in stages[u].r.items():  # T >= T(a, node of v) when u is on a
                    terms = [table[a * n_nodes + b] * rb for b, rb in r.items() if table[a * n_nodes + b]]  # fmt: skip
                    if terms:
                        m.add(t >= sum(terms)).only_enforce_if(ra)
                stage.edges.append((u, t, table))
                horizon += max(table)
            if sid in sinks:
                nbytes = cat.stage_output_bytes(flow, sid)
                stage.back = {n: floor_time(inst.transfer_time(n, origin, nbytes)) for n in allowed}
                horizon += max(stage.back.values())
            stages[sid] = stage
        latency = m.new_int_var(0, horizon, f"D[{name}]")
        for stage in stages.values():
            stage.finish = m.new_int_var(0, horizon, f"t[{name},{stage.sid}]")
            comp = sum(c * stage.r[n] for n, c in stage.compute.items())
            if stage.user is not None:
                up, tr = stage.user
                m.add(stage.finish >= up + sum(c * stage.r[n] for n, c in tr.items()) + comp)
            for u, t, _ in stage.edges:
                m.add(stage.finish >= stages[u].finish + t + comp)
            if stage.back is not None:
                back = sum(c * stage.r[n] for n, c in stage.back.items())
                m.add(latency >= stage.finish + back + download)
        return _Class(flow, origin, rate, stages, latency, download)

    # ---- hints and decoding -----------------------------------------------------------------
    def model_values(
        self, routing: dict[tuple[str, int], dict[str, int]]
    ) -> tuple[list[tuple[cp_model.IntVar, int]], int] | None:
        """The least model values of every variable for a complete routing, and the model
        objective; ``None`` when the routing uses a node the model does not allow."""
        n_nodes = len(self.inst.nodes)
        values: list[tuple[cp_model.IntVar, int]] = []
        loads = [0] * n_nodes
        objective = 0
        for c in self.classes:
            nodes = routing.get((c.flow, c.origin))
            if nodes is None or any(nodes.get(s.sid) not in s.r for s in c.stages.values()):
                return None
            finish: dict[str, int] = {}
            latency = 0
            for sid, s in c.stages.items():
                n = nodes[sid]
                values += [(var, int(k == n)) for k, var in s.r.items()]
                loads[n] += s.util[n]
                ready = [s.user[0] + s.user[1][n]] if s.user is not None else []
                for u, t, table in s.edges:
                    transfer = table[n_nodes * nodes[u] + n]
                    values.append((t, transfer))
                    ready.append(finish[u] + transfer)
                finish[sid] = max(ready) + s.compute[n]
                values.append((s.finish, finish[sid]))
                if s.back is not None:
                    latency = max(latency, finish[sid] + s.back[n] + c.download)
            values.append((c.latency, latency))
            objective += rate_weight(c.rate) * latency
        for n, w in self.congestion.items():
            values.append((self.utilisation[n], loads[n]))
            values.append((w, congestion_floor(loads[n], self.points)))
            objective += values[-1][1]
        used = {(s.service, routing[c.flow, c.origin][s.sid]) for c in self.classes for s in c.stages.values()}  # fmt: skip
        values += [(var, int(key in used)) for key, var in self.x.items()]
        return values, objective

    def add_hint(self, dep: Deployment) -> bool:
        """Hint CP-SAT with ``dep``'s routing (every variable; False when it is incomplete or
        uses a node the model excludes)."""
        out = self.model_values(dep.routing)
        if out is None:
            return False
        for var, v in out[0]:
            self.model.add_hint(var, v)
        return True

    def decode(self, solver: cp_model.CpSolver) -> Deployment:
        routing: dict[tuple[str, int], dict[str, int]] = {}
        placement: dict[str, set[int]] = {}
        for c in self.classes:
            nodes = {}
            for sid, s in c.stages.items():
                nodes[sid] = next(n for n, var in s.r.items() if solver.boolean_value(var))
                placement.setdefault(s.service, set()).add(nodes[sid])
            routing[c.flow, c.origin] = nodes
        return Deployment({k: sorted(v) for k, v in placement.items()}, routing, True, "exact")


def solve_exact(
    inst: Instance,
    *,
    time_limit_s: float = 60.0,
    workers: int = 1,
    monolithic: bool = False,
    hint: Deployment | None = None,
    seed: int = 0,
    warm_start: bool = True,
    tangent_tolerance: float = 1e-4,
) -> Deployment:
    """Solve the deployment problem with CP-SAT (optimal, or best found with a proven bound).

    Args:
        inst: The instance.
        time_limit_s: Wall-clock budget in seconds, warm start included.
        workers: CP-SAT search workers (threads).
        monolithic: Solve the monolithic problem instead (each LAM deployed whole, nothing
            shared; see :mod:`.monolithic`).
        hint: A deployment to warm-start from; ``None`` computes :func:`warm_start_hint`
            with 30 % of the time limit (unless ``warm_start`` is False).
        seed: CP-SAT random seed (and the greedy warm start's).
        warm_start: Compute a hint when ``hint`` is None.
        tangent_tolerance: Largest gap (requests per node) between the congestion term and
            the tangent lines that bound it from below (about 200 lines at 1e-4).

    Returns:
        The deployment; ``info`` holds ``status`` (CP-SAT's: OPTIMAL, FEASIBLE, UNKNOWN),
        ``objective_s`` (true objective by :func:`~.deployment.evaluate`), ``lower_bound_s``
        (proven), ``gap``, ``solve_time_s``, ``source`` (``cp-sat``, or ``hint`` when the hint is
        better than anything CP-SAT found).

    Raises:
        InfeasibleDeploymentError: CP-SAT proved the instance infeasible (the message gives
            the violated necessary conditions), or found nothing and there is no hint.
        ConfigError: non-positive ``time_limit_s``, ``workers`` or ``tangent_tolerance``.
    """
    if monolithic:
        from edgelam.inference.monolithic import solve_monolithic_exact

        return solve_monolithic_exact(inst, time_limit_s=time_limit_s, workers=workers, hint=hint, seed=seed, warm_start=warm_start, tangent_tolerance=tangent_tolerance)  # fmt: skip
    start = time.perf_counter()
    if not time_limit_s > 0:
        raise ConfigError(f"time_limit_s: must be > 0, got {time_limit_s}")
    if hint is None and warm_start:
        hint = warm_start_hint(inst, seed=seed, time_limit_s=0.3 * time_limit_s, workers=workers)
    sm = _SharedModel(inst, tangent_tolerance)
    hinted = hint is not None and sm.add_hint(hint)
    remaining = max(1.0, time_limit_s - (time.perf_counter() - start))
    solver, status, cp_time = run_cp_sat(sm.model, time_limit_s=remaining, workers=workers, seed=seed)  # fmt: skip
    return finish_solution(
        inst, sm, solver, status, hint, hinted, start, cp_time, "shared", "exact"
    )


def warm_start_hint(
    inst: Instance, *, seed: int, time_limit_s: float, workers: int = 1
) -> Deployment:
    """The best of two warm starts, by :func:`~.deployment.evaluate`: the greedy shared
    deployment (a third of ``time_limit_s``), and the monolithic optimum read as shared
    (:func:`~.monolithic.as_shared`; the rest of the budget). Every monolithic deployment is a
    shared one with the same latency and no more memory, and the monolithic model is small
    (one boolean per class and node), so CP-SAT often proves its optimum in seconds; the shared
    search then starts from there."""
    from edgelam.inference.deployment import evaluate
    from edgelam.inference.greedy import solve_greedy
    from edgelam.inference.local_search import score
    from edgelam.inference.monolithic import as_shared, solve_monolithic_exact

    start = time.perf_counter()
    candidates = [solve_greedy(inst, seed=seed, time_limit_s=time_limit_s / 3)]
    remaining = max(1.0, time_limit_s - (time.perf_counter() - start))
    try:
        mono = solve_monolithic_exact(inst, time_limit_s=remaining, workers=workers, seed=seed)
        candidates.append(as_shared(mono))
    except InfeasibleDeploymentError:
        pass  # the shared problem may still be feasible
    return min(candidates, key=lambda dep: score(inst, evaluate(inst, dep)))
