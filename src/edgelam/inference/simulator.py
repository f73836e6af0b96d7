r"""A discrete-event simulation (SimPy) of Poisson request flows through a deployment.

It checks the analytical objective of :func:`edgelam.inference.deployment.evaluate` by playing the
same model out request by request:

* each request class :math:`c` = (flow, origin node) arrives as a Poisson process of rate
  :math:`\lambda_c` (the superposition is drawn up front from a seeded numpy ``Generator``);
* a request uploads all its user inputs over the access uplink, then each stage's user input goes
  from the origin to the stage's node; a stage starts when *all* its inputs have arrived, so
  parallel branches of the flow's DAG run concurrently;
* every node is one server (:mod:`edgelam.inference.servers`) whose stage work takes
  :math:`\tau_{v,n}` = :func:`~edgelam.inference.deployment.service_time` at full speed
  (``service="deterministic"``) or an exponential time of that mean (``"exponential"``); it
  serves jobs first-come-first-served (``discipline="fcfs"``, ``simpy.Resource`` of capacity 1)
  or time-slices its accelerator among them (``"ps"``, processor sharing, the objective's model);
* transfers between nodes take :meth:`Instance.transfer_time <edgelam.inference.instance.
  Instance.transfer_time>` and never congest (as in the analytical model); sinks send their
  outputs back to the origin, then everything goes down the access downlink.

Two stages of *one* request that may run at once (parallel branches) also share a node's server
(FCFS: in order of readiness, ties in topological order), where the analytical critical path
overlaps them at full speed. So without load a class's simulated latency is exactly
:func:`~edgelam.inference.deployment.class_latency`, except when such stages share a node.

A request's latency runs from its arrival to the end of its download. Requests arriving in
``[warmup_s, duration_s)`` are measured; arrivals stop at ``duration_s`` and the simulation runs
on until every request has finished, so no measured request is cut off. Utilisation is a node's
busy time inside ``[warmup_s, duration_s]`` divided by that window's length.

Under load, the analytical figures treat every stage visit as an independent Poisson arrival at
an M/G/1-PS node (``objective_s``) or an M/G/1-FCFS node with deterministic work
(``mg1_latency_s``). The simulation drops those assumptions: downstream nodes see departures of
upstream queues, and a request's consecutive stages on one node arrive just as its own previous
stage leaves (``docs/deployment_simulator.md`` measures the difference).

>>> from edgelam.inference.instance import generate_instance
>>> from edgelam.inference.deployment import route
>>> inst = generate_instance(4, seed=0, flows=["image-qa"], load=0.2)
>>> fits = {s: [n for n, x in enumerate(inst.nodes) if x.memory_mb >= m.memory_mb]
...         for s, m in inst.catalog.services.items()}
>>> res = simulate(inst, route(inst, fits), duration_s=300.0, warmup_s=30.0, seed=1)
>>> res.requests_completed > 0, res.mean_latency_s >= res.latency_s
(True, True)
"""

from __future__ import annotations

import math
import time
from collections.abc import Generator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import simpy
from scipy import stats

from edgelam.config import ConfigError
from edgelam.inference.deployment import Deployment, Evaluation, evaluate, service_time
from edgelam.inference.instance import Instance
from edgelam.inference.servers import DISCIPLINES, make_server
from edgelam.progress import progress_bar

__all__ = ["DISCIPLINES", "SERVICE_MODELS", "SimulationError", "SimulationResult", "simulate"]

SERVICE_MODELS = ("deterministic", "exponential")
"""Service-time distributions :func:`simulate` accepts (both with mean ``service_time``)."""

BATCHES = 20
"""Batch-means batches for the confidence interval of the mean latency."""


class SimulationError(ConfigError):
    """A deployment that cannot be simulated, or invalid simulation settings."""


@dataclass(frozen=True)
class _ClassPlan:
    """One request class compiled to flat lists indexed by stage position (topological)."""

    key: str
    nodes: list[int]
    tau: list[float]
    user_ready: list[float]  # offset from arrival at which the user input is at the node; -inf
    inputs: list[list[tuple[int, float]]]  # (input stage, transfer seconds to this stage)
    consumers: list[list[int]]
    back: list[float | None]  # sinks: transfer seconds back to the origin; None otherwise
    download: float

    @classmethod
    def compile(cls, inst: Instance, flow: str, origin: int, nodes: dict[str, int]) -> _ClassPlan:
        cat = inst.catalog
        f = cat.flows[flow]
        order = f.topological_order()
        pos = {sid: i for i, sid in enumerate(order)}
        upload = sum(s.user_input_bytes for s in f.stages) * 8 / inst.access_uplink_bps
        sinks = set(f.sinks())
        where = [nodes[sid] for sid in order]
        plan = cls(
            key=f"{flow}@{origin}",
            nodes=where,
            tau=[service_time(inst, flow, sid, nodes[sid]) for sid in order],
            user_ready=[],
            inputs=[],
            consumers=[[] for _ in order],
            back=[],
            download=sum(cat.stage_output_bytes(flow, s) for s in sinks)
            * 8
            / inst.access_downlink_bps,
        )
        for i, sid in enumerate(order):
            s = f.stage[sid]
            plan.user_ready.append(
                upload + inst.transfer_time(origin, where[i], s.user_input_bytes)
                if s.user_input_bytes
                else -math.inf
            )
            ins = []
            for u in dict.fromkeys(s.inputs):
                nbytes = cat.stage_output_bytes(flow, u)
                ins.append((pos[u], inst.transfer_time(where[pos[u]], where[i], nbytes)))
                plan.consumers[pos[u]].append(i)
            plan.inputs.append(ins)
            out = cat.stage_output_bytes(flow, sid)
            plan.back.append(inst.transfer_time(where[i], origin, out) if sid in sinks else None)
        return plan


class _Request:
    """The state of one request in flight."""

    __slots__ = ("arrival", "plan", "service", "finish", "pending", "sinks_left", "done", "index")

    def __init__(self, index: int, arrival: float, plan: _ClassPlan, service: list[float]):
        self.index = index
        self.arrival = arrival
        self.plan = plan
        self.service = service
        self.finish = [0.0] * len(plan.nodes)
        self.pending = [len(ins) for ins in plan.inputs]
        self.sinks_left = sum(b is not None for b in plan.back)
        self.done = -math.inf


class _Simulation:
    """The SimPy model: an arrival process plus one process per concurrently running branch."""

    def __init__(
        self, inst: Instance, plans: list[_ClassPlan], discipline: str, warmup_s: float,
        end_s: float,
    ):  # fmt: skip
        self.env = simpy.Environment()
        self.servers = [make_server(discipline, self.env, (warmup_s, end_s)) for _ in inst.nodes]
        self.plans = plans
        self.warmup_s = warmup_s
        n = len(inst.nodes)
        self.wait_sum, self.visits = [0.0] * n, [0] * n
        self.latency: np.ndarray = np.empty(0)

    def arrivals(
        self, times: list[float], classes: list[int], services: list[list[float]]
    ) -> Generator[simpy.Event, None, None]:
        """Start each request at its arrival time (``services[k]``: stage durations of request
        ``k`` in topological order)."""
        env = self.env
        self.latency = np.full(len(times), np.nan)
        for k, (t, c) in enumerate(zip(times, classes, strict=True)):
            if t > env.now:
                yield env.timeout(t - env.now)
            plan = self.plans[c]
            req = _Request(k, env.now, plan, services[k])
            for i, ins in enumerate(plan.inputs):
                if not ins:  # a source stage: waits only for its user input
                    env.process(self.branch(req, i, plan.user_ready[i]))

    def branch(self, req: _Request, i: int, delay: float) -> Generator[simpy.Event, None, None]:
        """Run stage ``i`` after ``delay`` seconds, then every stage it makes ready: the first in
        this process, the others in new ones (parallel branches)."""
        env, plan = self.env, req.plan
        measured = req.arrival >= self.warmup_s
        while True:
            if delay > 0:
                yield env.timeout(delay)
            node, work = plan.nodes[i], req.service[i]
            ready = env.now
            yield from self.servers[node].serve(work)
            finish = req.finish[i] = env.now
            if measured:  # waiting: time at the node beyond the work itself
                self.wait_sum[node] += finish - ready - work
                self.visits[node] += 1
            if plan.back[i] is not None:
                req.done = max(req.done, finish + plan.back[i])
                req.sinks_left -= 1
                if req.sinks_left == 0:
                    self.latency[req.index] = req.done + plan.download - req.arrival
            nxt = None
            for w in plan.consumers[i]:
                req.pending[w] -= 1
                if req.pending[w] == 0:
                    ready_w = req.arrival + plan.user_ready[w]
                    for u, d in plan.inputs[w]:
                        ready_w = max(ready_w, req.finish[u] + d)
                    if nxt is None:
                        nxt = (w, ready_w - finish)
                    else:
                        env.process(self.branch(req, w, ready_w - finish))
            if nxt is None:
                return
            i, delay = nxt


def _latency_stats(x: np.ndarray) -> dict[str, float]:
    if x.size == 0:
        return {"count": 0, "mean_s": math.nan, "p50_s": math.nan, "p95_s": math.nan,
                "p99_s": math.nan}  # fmt: skip
    p50, p95, p99 = np.percentile(x, [50, 95, 99])
    return {"count": int(x.size), "mean_s": float(x.mean()), "p50_s": float(p50),
            "p95_s": float(p95), "p99_s": float(p99)}  # fmt: skip


def _batch_means_ci(x: np.ndarray, batches: int = BATCHES) -> float:
    """95% half-width of the mean of ``x`` (in arrival order) by non-overlapping batch means."""
    if x.size < 2 * batches:
        return math.nan
    means = np.array([b.mean() for b in np.array_split(x, batches)])
    t = stats.t.ppf(0.975, batches - 1)
    return float(t * means.std(ddof=1) / math.sqrt(batches))


@dataclass
class SimulationResult:
    """What :func:`simulate` measured, next to the analytical figures of ``evaluate``.

    Times in seconds. Relative errors are ``(analytical - simulated) / simulated`` of the mean
    latency: positive when the formula overestimates.

    Attributes:
        service: ``"deterministic"`` or ``"exponential"``.
        discipline: ``"fcfs"`` or ``"ps"`` (see :mod:`edgelam.inference.servers`).
        duration_s: Arrival horizon (arrivals in ``[0, duration_s)``), warm-up included.
        warmup_s: Requests arriving earlier are not measured.
        seed: Seed of the arrival and service-time draws.
        requests_arrived: All arrivals, warm-up included.
        requests_completed: Measured (post-warm-up) requests; all of them complete.
        mean_latency_s: Mean end-to-end latency of measured requests.
        mean_latency_ci_s: 95% half-width of that mean (batch means over arrival order).
        p50_latency_s: Median latency. p95_latency_s, p99_latency_s: tail percentiles.
        class_latency: Class key ``"flow@origin"`` -> ``count``, ``mean_s``, ``p50_s``,
            ``p95_s``, ``p99_s`` and ``analytical_s`` (critical path without queueing).
        mean_waiting_s: Per node, mean time a stage spent there beyond its work (FCFS: in the
            queue; PS: slowed down by sharing); NaN if no measured request visited it.
        visits: Per node, stage executions of measured requests.
        utilisation: Per node, busy time in the measured window / its length.
        analytical_utilisation: Per node, :math:`\rho_n` from ``evaluate``.
        objective_s: Analytical objective (M/G/1-PS congestion term).
        latency_s: Analytical mean latency without queueing.
        mg1_latency_s: Pollaczek-Khinchine (M/G/1-FCFS, deterministic work) estimate.
        objective_rel_error: Relative error of ``objective_s``.
        mg1_rel_error: Relative error of ``mg1_latency_s``.
        utilisation_max_abs_error: Largest ``|utilisation - analytical_utilisation|``.
        wall_s: Wall-clock seconds the simulation took.
    """

    service: str
    discipline: str
    duration_s: float
    warmup_s: float
    seed: int
    requests_arrived: int
    requests_completed: int
    mean_latency_s: float
    mean_latency_ci_s: float
    p50_latency_s: float
    p95_latency_s: float
    p99_latency_s: float
    class_latency: dict[str, dict[str, float]]
    mean_waiting_s: list[float]
    visits: list[int]
    utilisation: list[float]
    analytical_utilisation: list[float]
    objective_s: float
    latency_s: float
    mg1_latency_s: float
    objective_rel_error: float
    mg1_rel_error: float
    utilisation_max_abs_error: float
    wall_s: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN and infinities become ``None``)."""

        def clean(v: Any) -> Any:
            if isinstance(v, float):
                return v if math.isfinite(v) else None
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            if isinstance(v, list):
                return [clean(x) for x in v]
            return v

        return clean(asdict(self))


def _check(
    inst: Instance, dep: Deployment, duration_s: float, warmup_s: float, service: str,
    discipline: str,
) -> Evaluation:  # fmt: skip
    if service not in SERVICE_MODELS:
        raise SimulationError(f"service: {service!r} is not one of {list(SERVICE_MODELS)}")
    if discipline not in DISCIPLINES:
        raise SimulationError(f"discipline: {discipline!r} is not one of {list(DISCIPLINES)}")
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise SimulationError(f"duration_s: must be a finite number > 0, got {duration_s}")
    if not 0 <= warmup_s < duration_s:
        raise SimulationError(
            f"warmup_s: must be in [0, duration_s = {duration_s}), got {warmup_s}"
        )
    missing = [
        f"{d.flow}@{d.node}"
        for d in inst.demands
        if any(
            s.id not in dep.routing.get((d.flow, d.node), {})
            for s in inst.catalog.flows[d.flow].stages
        )
    ]
    if missing:
        raise SimulationError(
            f"deployment: no route (for every stage) of {len(missing)} request classes: "
            + ", ".join(missing[:10])
            + (" ..." if len(missing) > 10 else "")
        )
    ev = evaluate(inst, dep)
    if not ev.feasible:
        raise SimulationError(
            "deployment is infeasible, not simulated:\n  - " + "\n  - ".join(ev.violations)
        )
    return ev


def simulate(
    inst: Instance,
    dep: Deployment,
    *,
    duration_s: float = 2000.0,
    warmup_s: float = 200.0,
    seed: int = 0,
    service: str = "deterministic",
    discipline: str = "ps",
    progress: bool = False,
) -> SimulationResult:
    """Simulate Poisson requests through ``dep`` on ``inst`` and compare with ``evaluate``.

    Args:
        inst: The instance (nodes, links, demands).
        dep: A feasible deployment routing every request class.
        duration_s: Arrival horizon in simulated seconds, warm-up included.
        warmup_s: Requests arriving before this are simulated but not measured.
        seed: Seed of the numpy ``Generator`` drawing arrivals and service times (the same seed
            gives the same arrivals for both service models).
        service: ``"deterministic"`` (work = FLOPs / FLOP/s) or ``"exponential"`` (that mean).
        discipline: ``"fcfs"`` (one job at a time, in arrival order) or ``"ps"`` (processor
            sharing, the model of the analytical objective).
        progress: Draw a progress bar over simulated time.

    Returns:
        The measured statistics and the analytical figures, see :class:`SimulationResult`.

    Raises:
        SimulationError: unknown ``service`` or ``discipline``, bad ``duration_s`` or
            ``warmup_s``, a class without a complete route, or an infeasible deployment (the
            message lists the violations).
    """
    ev = _check(inst, dep, duration_s, warmup_s, service, discipline)
    t0 = time.perf_counter()
    plans = [_ClassPlan.compile(inst, d.flow, d.node, dep.routing[(d.flow, d.node)])
             for d in inst.demands]  # fmt: skip
    rates = np.array([d.rate for d in inst.demands])
    rng = np.random.default_rng(seed)
    n = int(rng.poisson(rates.sum() * duration_s))
    times = np.sort(rng.uniform(0.0, duration_s, n))
    classes = rng.choice(len(plans), size=n, p=rates / rates.sum())
    if service == "exponential":
        width = max(len(p.tau) for p in plans)
        draws = rng.standard_exponential((n, width))
        taus = np.array([p.tau + [0.0] * (width - len(p.tau)) for p in plans])
        services = (draws * taus[classes]).tolist()
    else:
        services = [plans[c].tau for c in classes.tolist()]

    sim = _Simulation(inst, plans, discipline, warmup_s, duration_s)
    sim.env.process(sim.arrivals(times.tolist(), classes.tolist(), services))
    steps = 100
    with progress_bar("simulating", total=steps, enabled=progress) as advance:
        if progress:
            for k in range(1, steps + 1):
                sim.env.run(until=duration_s * k / steps)
                advance(1)
    sim.env.run()  # drain: every request that arrived finishes

    measured = times >= warmup_s
    lat = sim.latency[measured]
    if np.isnan(lat).any():  # every stage of every request must have run
        raise RuntimeError("simulator: some measured requests did not complete")
    overall = _latency_stats(lat)
    cls_measured = classes[measured]
    class_latency = {}
    for c, plan in enumerate(plans):
        s = _latency_stats(lat[cls_measured == c])
        s["analytical_s"] = ev.class_latency_s[plan.key]
        class_latency[plan.key] = s
    window = duration_s - warmup_s
    util = [server.busy / window for server in sim.servers]
    mean = overall["mean_s"]
    return SimulationResult(
        service=service, discipline=discipline, duration_s=float(duration_s),
        warmup_s=float(warmup_s), seed=seed,
        requests_arrived=n, requests_completed=overall["count"],
        mean_latency_s=mean, mean_latency_ci_s=_batch_means_ci(lat),
        p50_latency_s=overall["p50_s"], p95_latency_s=overall["p95_s"],
        p99_latency_s=overall["p99_s"], class_latency=class_latency,
        mean_waiting_s=[w / v if v else math.nan
                        for w, v in zip(sim.wait_sum, sim.visits, strict=True)],
        visits=list(sim.visits), utilisation=util, analytical_utilisation=list(ev.utilisation),
        objective_s=float(ev.objective_s), latency_s=float(ev.latency_s),
        mg1_latency_s=float(ev.mg1_latency_s),
        objective_rel_error=float((ev.objective_s - mean) / mean) if mean else math.nan,
        mg1_rel_error=float((ev.mg1_latency_s - mean) / mean) if mean else math.nan,
        utilisation_max_abs_error=float(np.max(np.abs(np.array(util) - ev.utilisation))),
        wall_s=time.perf_counter() - t0,
    )  # fmt: skip
