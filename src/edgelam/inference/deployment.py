r"""Deployments (placement + routing) and the analytical objective they are judged by.

A :class:`Deployment` says which microservices run on which nodes (the *deployment indicator*
:math:`x_{s,n}`) and, for every request class :math:`c` = (flow, origin node), which node serves
each of the flow's stages (the routing :math:`r_{c,v} \in \{n : x_{s(v),n} = 1\}`). Shared
deployments key instances by microservice; monolithic ones (each LAM deployed whole, nothing
shared) key them by ``"flow/microservice"``, so two LAMs' copies of one encoder both take memory.

The objective (``docs/deployment.md`` has the derivation) is the expected end-to-end latency of a
request, averaged over classes by rate :math:`\lambda_c` (:math:`\Lambda = \sum_c \lambda_c`):

.. math::

    J = \frac{1}{\Lambda}\Big[\sum_c \lambda_c D_c(r) + \sum_n \frac{\rho_n^2}{1 - \rho_n}\Big],
    \qquad \rho_n = \sum_{c, v: r_{c,v} = n} \lambda_c \tau_{v,n},

where :math:`D_c` is the class's critical-path latency without queueing (access upload,
transfers between stage nodes, compute :math:`\tau_{v,n}` = FLOPs / node FLOP/s, transfer back,
access download) and the second sum is the congestion term. Each node serves the requests it
holds by *processor sharing* (an accelerator time-sliced among the concurrent requests of the
microservices it hosts). For an M/G/1-PS queue a request of work :math:`\tau` stays
:math:`\tau / (1 - \rho)` on average, whatever the work distribution (insensitivity), so the
rate-weighted extra delay of all requests at node :math:`n` is exactly
:math:`\sum_i \lambda_i \tau_i \rho_n / (1 - \rho_n) = \rho_n^2 / (1 - \rho_n)`: linear
routing loads enter one convex function per node. (The only approximation: arrivals at
downstream stages are not exactly Poisson.) Constraints: memory per node, and
:math:`\rho_n \le \rho_{max}`.

:func:`evaluate` also reports the estimate for first-come-first-served nodes instead
(Pollaczek-Khinchine M/G/1 with deterministic work, ``mg1_latency_s``; a request's consecutive
stages on one node count as one job), which is much larger when long and short requests share a
node; the discrete-event simulator
(:mod:`edgelam.inference.simulator`) checks both.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgelam.config import ConfigError
from edgelam.inference.instance import Instance

__all__ = [
    "DEPLOYMENT_SCHEMA",
    "Deployment",
    "Evaluation",
    "congestion",
    "evaluate",
    "load_deployment",
    "route",
    "service_time",
]

DEPLOYMENT_SCHEMA = "edgelam.deployment/1"

Class = tuple[str, int]


def congestion(rho: float) -> float:
    """Rate-weighted extra delay of a processor-sharing node, :math:`\\rho^2 / (1 - \\rho)` (the
    M/M/1 mean number waiting; infinite at or above 1)."""
    return math.inf if rho >= 1 else rho * rho / (1.0 - rho)


def service_time(inst: Instance, flow: str, stage: str, node: int) -> float:
    """Seconds node ``node`` takes for ``stage`` of ``flow`` (its FLOPs / sustained FLOP/s)."""
    return inst.catalog.stage_gflops(flow, stage) * 1e9 / inst.nodes[node].flops


@dataclass
class Deployment:
    """Placement and routing (see the module docstring).

    Attributes:
        placement: Service key -> node indices hosting one instance of it.
        routing: ``(flow, origin)`` -> stage id -> serving node.
        shared: Microservices shared across flows (``True``) or per-flow copies (monolithic).
        method: Which solver produced it.
        info: Solver details (status, bound, gap, ...).
    """

    placement: dict[str, list[int]]
    routing: dict[Class, dict[str, int]] = field(default_factory=dict)
    shared: bool = True
    method: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    def key(self, flow: str, service: str) -> str:
        return service if self.shared else f"{flow}/{service}"

    def hosts(self, flow: str, service: str) -> list[int]:
        return self.placement.get(self.key(flow, service), [])

    def indicator(self, inst: Instance) -> np.ndarray:
        """The deployment indicator ``x[s, n]`` (bool ``[S, N]``, services in catalog order) of a
        shared deployment."""
        if not self.shared:
            raise ValueError("indicator(): only shared deployments have one row per microservice")
        services = list(inst.catalog.services)
        x = np.zeros((len(services), len(inst.nodes)), dtype=bool)
        for s, nodes in self.placement.items():
            x[services.index(s), nodes] = True
        return x

    @classmethod
    def from_indicator(cls, inst: Instance, x: np.ndarray, **kw: Any) -> Deployment:
        services = list(inst.catalog.services)
        if x.shape != (len(services), len(inst.nodes)):
            raise ValueError(
                f"indicator must be [S, N] = {(len(services), len(inst.nodes))}, got {x.shape}"
            )
        return cls(
            {s: [int(n) for n in np.flatnonzero(x[i])] for i, s in enumerate(services)}, **kw
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": DEPLOYMENT_SCHEMA,
            "method": self.method,
            "shared": self.shared,
            "placement": {k: sorted(v) for k, v in self.placement.items() if v},
            "routing": [
                {"flow": f, "origin": o, "stages": st} for (f, o), st in self.routing.items()
            ],
            "info": self.info,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Deployment:
        if not isinstance(d, dict) or d.get("schema") != DEPLOYMENT_SCHEMA:
            raise ConfigError(f"deployment: 'schema' must be {DEPLOYMENT_SCHEMA!r}")
        try:
            routing = {
                (r["flow"], int(r["origin"])): {k: int(v) for k, v in r["stages"].items()}
                for r in d.get("routing", [])
            }
            placement = {k: [int(n) for n in v] for k, v in d["placement"].items()}
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(f"deployment: malformed placement or routing ({err!r})") from None
        return cls(
            placement,
            routing,
            bool(d.get("shared", True)),
            str(d.get("method", "")),
            dict(d.get("info", {})),
        )

    def save(self, path: str | Path, evaluation: Evaluation | None = None) -> Path:
        d = self.to_dict()
        if evaluation is not None:
            d["evaluation"] = evaluation.to_dict()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(d, indent=1))
        return path


def load_deployment(path: str | Path) -> Deployment:
    path = Path(path)
    try:
        return Deployment.from_dict(json.loads(path.read_text()))
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON ({err})") from None
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


@dataclass
class Evaluation:
    """What :func:`evaluate` measures. Times in seconds, memory in MiB."""

    objective_s: float
    feasible: bool
    violations: list[str]
    latency_s: float
    congestion_s: float
    mg1_latency_s: float
    class_latency_s: dict[str, float]
    utilisation: list[float]
    memory_used_mb: list[float]
    memory_total_mb: float
    instances: int

    def to_dict(self) -> dict[str, Any]:
        return {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in asdict(self).items()
        }


def class_latency(
    inst: Instance, dep: Deployment, flow: str, origin: int, nodes: dict[str, int]
) -> float:
    """Critical-path latency ``D_c`` without queueing of one request of class (flow, origin)."""
    cat = inst.catalog
    f = cat.flows[flow]
    upload = sum(s.user_input_bytes for s in f.stages) * 8 / inst.access_uplink_bps
    finish: dict[str, float] = {}
    for sid in f.topological_order():
        s = f.stage[sid]
        n = nodes[sid]
        ready = (
            [upload + inst.transfer_time(origin, n, s.user_input_bytes)]
            if s.user_input_bytes
            else []
        )
        ready += [
            finish[u] + inst.transfer_time(nodes[u], n, cat.stage_output_bytes(flow, u))
            for u in s.inputs
        ]
        finish[sid] = max(ready) + service_time(inst, flow, sid, n)
    sinks = f.sinks()
    back = max(
        finish[s] + inst.transfer_time(nodes[s], origin, cat.stage_output_bytes(flow, s))
        for s in sinks
    )
    return back + sum(cat.stage_output_bytes(flow, s) for s in sinks) * 8 / inst.access_downlink_bps


def evaluate(inst: Instance, dep: Deployment) -> Evaluation:
    """The analytical objective and constraint check of ``dep`` on ``inst`` (never raises for an
    infeasible deployment: ``feasible`` is False and ``violations`` says why)."""
    cat = inst.catalog
    n_nodes = len(inst.nodes)
    violations: list[str] = []
    memory = [0.0] * n_nodes
    for key, nodes in dep.placement.items():
        service = key.split("/", 1)[-1]
        if service not in cat.services:
            violations.append(f"placement: unknown microservice {service!r}")
            continue
        for n in nodes:
            if not 0 <= n < n_nodes:
                violations.append(f"placement: {key} on unknown node {n}")
                continue
            memory[n] += cat.services[service].memory_mb
    for n, used in enumerate(memory):
        if used > inst.nodes[n].memory_mb + 1e-6:
            violations.append(
                f"node {n} ({inst.nodes[n].kind}): memory {used:.0f} MiB > {inst.nodes[n].memory_mb:.0f} MiB"
            )
    rho = np.zeros(n_nodes)
    second_moment = np.zeros(n_nodes)  # sum of lambda * tau^2 (M/G/1)
    visits = np.zeros(n_nodes)
    weighted, lat = 0.0, {}
    total_rate = sum(d.rate for d in inst.demands)
    for d in inst.demands:
        nodes = dep.routing.get((d.flow, d.node))
        flow = cat.flows[d.flow]
        if nodes is None or any(s.id not in nodes for s in flow.stages):
            problems = [f"class ({d.flow}, node {d.node}): not routed"]
        else:
            problems = [
                f"class ({d.flow}, node {d.node}): stage {s.id} routed to node {nodes[s.id]}, "
                f"which does not host {dep.key(d.flow, s.service)}"
                for s in flow.stages
                if not 0 <= nodes[s.id] < n_nodes or nodes[s.id] not in dep.hosts(d.flow, s.service)
            ]
        if problems:
            violations += problems
            lat[f"{d.flow}@{d.node}"] = weighted = math.inf
            continue
        # FCFS estimate: a stage that continues its only input on the same node (and is that
        # input's only consumer) joins the node's queue as it leaves it, so the run of such
        # stages counts as one job of their summed work.
        head: dict[str, str] = {}
        runs: dict[str, float] = {}
        for sid in flow.topological_order():
            s, n = flow.stage[sid], nodes[sid]
            tau = service_time(inst, d.flow, sid, n)
            rho[n] += d.rate * tau
            u = s.inputs[0] if len(s.inputs) == 1 else None
            alone = u is not None and sum(u in c.inputs for c in flow.stages) == 1
            head[sid] = head[u] if alone and nodes[u] == n else sid
            runs[head[sid]] = runs.get(head[sid], 0.0) + tau
        for h, work in runs.items():
            second_moment[nodes[h]] += d.rate * work * work
            visits[nodes[h]] += d.rate
        lat[f"{d.flow}@{d.node}"] = D = class_latency(inst, dep, d.flow, d.node, nodes)
        weighted += d.rate * D
    for n in range(n_nodes):
        if rho[n] > inst.max_utilisation + 1e-9:
            violations.append(
                f"node {n} ({inst.nodes[n].kind}): utilisation {rho[n]:.3f} > {inst.max_utilisation}"
            )
    cong = sum(congestion(r) for r in rho)
    mg1 = sum(
        visits[n] * second_moment[n] / (2 * (1 - rho[n])) if rho[n] < 1 else math.inf
        for n in range(n_nodes)
        if visits[n] > 0
    )
    return Evaluation(
        objective_s=(weighted + cong) / total_rate,
        feasible=not violations,
        violations=violations,
        latency_s=weighted / total_rate,
        congestion_s=cong / total_rate,
        mg1_latency_s=(weighted + mg1) / total_rate,
        class_latency_s=lat,
        utilisation=[float(r) for r in rho],
        memory_used_mb=memory,
        memory_total_mb=float(sum(memory)),
        instances=sum(len(v) for v in dep.placement.values()),
    )


def route(
    inst: Instance, placement: dict[str, list[int]], *, shared: bool = True, method: str = ""
) -> Deployment:
    """Greedy routing for a given placement.

    Classes are taken by decreasing work rate; each stage, in topological order, goes to the
    hosting node that minimises ``lambda_c * finish time + increase of the congestion term``,
    among nodes that stay within ``max_utilisation`` when any does. A class with a stage whose
    microservice is placed nowhere stays unrouted (:func:`evaluate` reports it).
    """
    cat = inst.catalog
    dep = Deployment({k: sorted(v) for k, v in placement.items()}, {}, shared, method)
    rho = np.zeros(len(inst.nodes))
    work = {
        id(d): d.rate * sum(cat.stage_gflops(d.flow, s.id) for s in cat.flows[d.flow].stages)
        for d in inst.demands
    }
    for d in sorted(inst.demands, key=lambda d: -work[id(d)]):
        f = cat.flows[d.flow]
        if any(not dep.hosts(d.flow, s.service) for s in f.stages):
            continue
        upload = sum(s.user_input_bytes for s in f.stages) * 8 / inst.access_uplink_bps
        sinks = f.sinks()
        nodes: dict[str, int] = {}
        finish: dict[str, float] = {}
        for sid in f.topological_order():
            s = f.stage[sid]
            best = None
            for n in dep.hosts(d.flow, s.service):
                tau = service_time(inst, d.flow, sid, n)
                ready = (
                    [upload + inst.transfer_time(d.node, n, s.user_input_bytes)]
                    if s.user_input_bytes
                    else []
                )
                ready += [
                    finish[u] + inst.transfer_time(nodes[u], n, cat.stage_output_bytes(d.flow, u))
                    for u in s.inputs
                ]
                done = max(ready) + tau
                back = inst.transfer_time(n, d.node, cat.stage_output_bytes(d.flow, sid))
                new = rho[n] + d.rate * tau
                over = max(0.0, new - inst.max_utilisation)
                extra = congestion(min(new, 0.999)) - congestion(min(rho[n], 0.999))
                cost = (over, d.rate * (done + (back if sid in sinks else 0.0)) + extra)
                if best is None or cost < best[0]:
                    best = (cost, n, done)
            _, n, finish[sid] = best
            nodes[sid] = n
            rho[n] += d.rate * service_time(inst, d.flow, sid, n)
        dep.routing[(d.flow, d.node)] = nodes
    return dep
