r"""The fixed substrate of orchestration: a replicated deployment, compiled into arrays.

Orchestration (paper Sec. III-B) assumes every microservice a request needs runs on at least two
edge nodes and asks, slot by slot, *which replica* serves each stage of the arriving requests.
:func:`replicate` builds such a deployment from an :class:`~edgelam.inference.instance.Instance`
(optionally starting from an existing placement, e.g. a deployment solver's): every needed
microservice gets ``min_replicas`` hosts, chosen greedily under the nodes' memory, then extra
replicas are added while they lower the most-utilised node's expected utilisation

.. math::

    \rho_n = \sum_{s \ni n} w_s / F_s, \qquad F_s = \sum_{m \in \text{hosts}(s)} \text{flops}_m,

(service ``s`` with work rate :math:`w_s` FLOP/s split over its hosts in proportion to speed).

:class:`Substrate` compiles instance + placement into the flat arrays the batched environment
(:mod:`.env`) works on. Request *groups* are the instance's demands (flow, home node, nominal
rate); their users move, so a group's access node changes over time. A *component* ``k`` is one
(group, stage) pair; components are listed group by group, stages in topological order.

>>> from edgelam.inference.instance import generate_instance
>>> inst = generate_instance(6, seed=1)
>>> sub = Substrate.build(inst, replicate(inst))
>>> bool((sub.num_hosts >= 2).all()), sub.hosts.shape[0] == sub.num_components
(True, True)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgelam.inference.deployment import Deployment, class_latency, service_time
from edgelam.inference.instance import Instance, InstanceError

__all__ = ["Substrate", "flow_deadlines", "replicate"]


def _work_rates(inst: Instance) -> dict[str, float]:
    """FLOP/s each needed microservice receives at the nominal rates."""
    work: dict[str, float] = {}
    for d in inst.demands:
        for s in inst.catalog.flows[d.flow].stages:
            work[s.service] = (
                work.get(s.service, 0.0) + d.rate * inst.catalog.stage_gflops(d.flow, s.id) * 1e9
            )
    return work


def _utilisation(inst: Instance, hosts: dict[str, list[int]], work: dict[str, float]) -> np.ndarray:
    flops = np.array([x.flops for x in inst.nodes])
    rho = np.zeros(len(inst.nodes))
    for s, nodes in hosts.items():
        if nodes:
            rho[nodes] += work.get(s, 0.0) / flops[nodes].sum()
    return rho


def replicate(
    inst: Instance,
    placement: dict[str, list[int]] | None = None,
    *,
    min_replicas: int = 2,
    max_replicas: int = 4,
    target_utilisation: float = 0.4,
) -> Deployment:
    """A replicated shared deployment of every microservice the demands need.

    Args:
        inst: The instance.
        placement: Hosts to start from (service -> node indices), e.g. a solver's placement.
        min_replicas: Hosts every needed microservice gets (at least 2 for orchestration).
        max_replicas: No microservice gets more hosts than this.
        target_utilisation: Add replicas while the most-utilised node exceeds this.

    Returns:
        A :class:`Deployment` with placement only (routing is the orchestrator's job).

    Raises:
        InstanceError: ``min_replicas < 2`` or ``> max_replicas``, or a replica does not fit in
            memory anywhere (the message names the microservice).
    """
    if not 2 <= min_replicas <= max_replicas:
        raise InstanceError(
            f"min_replicas: need 2 <= min_replicas <= max_replicas, got {min_replicas}, {max_replicas}"
        )
    cat = inst.catalog
    work = _work_rates(inst)
    hosts = {s: sorted(set((placement or {}).get(s, []))) for s in work}
    flops = np.array([x.flops for x in inst.nodes])
    free = np.array([x.memory_mb for x in inst.nodes])
    for s, nodes in (placement or {}).items():
        free[nodes] -= cat.services[s].memory_mb
    if (free < -1e-6).any():
        raise InstanceError(f"placement: node {int(np.argmin(free))} is over its memory")

    def candidates(s: str) -> list[int]:
        mem = cat.services[s].memory_mb
        return [n for n in range(len(inst.nodes)) if n not in hosts[s] and free[n] >= mem]

    def add(s: str, n: int) -> None:
        hosts[s].append(n)
        free[n] -= cat.services[s].memory_mb

    for s in sorted(work, key=lambda s: -cat.services[s].memory_mb):  # big ones first
        while len(hosts[s]) < min_replicas:
            options = candidates(s)
            if not options:
                raise InstanceError(
                    f"replicate: no node has {cat.services[s].memory_mb:.0f} MiB free for "
                    f"replica {len(hosts[s]) + 1} of {s}"
                )
            rho = _utilisation(inst, hosts, work)
            add(s, max(options, key=lambda n: (flops[n] * (1 - rho[n]), free[n])))
    while True:
        rho = _utilisation(inst, hosts, work)
        if rho.max() <= target_utilisation:
            break
        best = None
        for s in (s for s in work if int(rho.argmax()) in hosts[s]):
            if len(hosts[s]) >= max_replicas:
                continue
            for n in candidates(s):
                trial = {**hosts, s: [*hosts[s], n]}
                peak = _utilisation(inst, trial, work).max()
                if peak < rho.max() - 1e-9 and (best is None or peak < best[0]):
                    best = (peak, s, n)
        if best is None:
            break
        add(best[1], best[2])
    return Deployment(
        {s: sorted(v) for s, v in hosts.items()},
        method=f"replicate(min={min_replicas}, max={max_replicas})",
        info={"expected_utilisation": _utilisation(inst, hosts, work).tolist()},
    )


def flow_deadlines(inst: Instance, slack: float) -> dict[str, float]:
    """Per-flow deadline: ``slack`` x the flow's unloaded latency with every stage on the fastest
    node and the user attached to it (access upload/download included, no queueing)."""
    fastest = int(np.argmax([x.flops for x in inst.nodes]))
    out = {}
    for name, flow in inst.catalog.flows.items():
        nodes = {s.id: fastest for s in flow.stages}
        out[name] = slack * class_latency(inst, Deployment({}), name, fastest, nodes)
    return out


@dataclass
class Substrate:
    """Instance + replicated placement as arrays (N nodes, G groups, K components, J max hosts).

    Attributes:
        inst: The instance.
        placement: Service -> hosting nodes.
        group_flow: Flow name of each group (= instance demand), ``[G]``.
        home: Home (initial access) node of each group, ``[G]`` int.
        rate: Nominal Poisson rate of each group, requests/s, ``[G]``.
        upload: Access-uplink time of a request's user inputs, s, ``[G]``.
        download: Access-downlink time of a request's results, s, ``[G]``.
        comp_group: Group of each component, ``[K]`` int.
        comp_stage: Stage id of each component, ``[K]`` str.
        level: Topological depth of each component in its flow (0 = source), ``[K]``.
        inputs: Components whose outputs each component reads, -1 padded, ``[K, 2+]`` int.
        user_bytes: Bytes the user sends straight to each component, ``[K]``.
        out_bytes: Output bytes of each component, ``[K]``.
        sinks: Sink components of each group, -1 padded, ``[G, S]`` int.
        hosts: Replica nodes of each component's microservice, padded by repeating the first,
            ``[K, J]`` int.
        num_hosts: Number of replicas of each component, ``[K]`` int.
        tau: Compute time of each component on every node, s, ``[K, N]``.
        neighbours: Neighbours of every node in the link graph, padded by repeating the first,
            ``[N, D]`` int; ``degree`` ``[N]`` holds the real counts.
    """

    inst: Instance
    placement: dict[str, list[int]]
    group_flow: list[str]
    home: np.ndarray
    rate: np.ndarray
    upload: np.ndarray
    download: np.ndarray
    comp_group: np.ndarray
    comp_stage: list[str]
    level: np.ndarray
    inputs: np.ndarray
    user_bytes: np.ndarray
    out_bytes: np.ndarray
    sinks: np.ndarray
    hosts: np.ndarray
    num_hosts: np.ndarray
    tau: np.ndarray
    neighbours: np.ndarray
    degree: np.ndarray

    @property
    def num_nodes(self) -> int:
        return len(self.inst.nodes)

    @property
    def num_groups(self) -> int:
        return len(self.group_flow)

    @property
    def num_components(self) -> int:
        return len(self.comp_group)

    @classmethod
    def build(cls, inst: Instance, dep: Deployment) -> Substrate:
        """Compile ``inst`` and the placement of ``dep``.

        Raises:
            InstanceError: a needed microservice has fewer than 2 replicas, or ``dep`` is not a
                shared deployment.
        """
        if not dep.shared:
            raise InstanceError("orchestration needs a shared deployment (one key per service)")
        cat = inst.catalog
        group_flow, comp_group, comp_stage, level, rows, user, out, sinks = ([] for _ in range(8))
        hosts, upload, download = [], [], []
        for g, d in enumerate(inst.demands):
            flow = cat.flows[d.flow]
            group_flow.append(d.flow)
            index, depth = {}, {}
            for sid in flow.topological_order():
                s = flow.stage[sid]
                nodes = dep.hosts(d.flow, s.service)
                if len(nodes) < 2:
                    raise InstanceError(
                        f"substrate: microservice {s.service} has {len(nodes)} replica(s); "
                        "orchestration needs >= 2 (use replicate())"
                    )
                index[sid] = len(comp_group)
                depth[sid] = 1 + max((depth[u] for u in s.inputs), default=-1)
                comp_group.append(g)
                comp_stage.append(sid)
                level.append(depth[sid])
                rows.append([index[u] for u in s.inputs])
                user.append(s.user_input_bytes)
                out.append(cat.stage_output_bytes(d.flow, sid))
                hosts.append(sorted(nodes))
            sinks.append([index[s] for s in flow.sinks()])
            upload.append(sum(s.user_input_bytes for s in flow.stages) * 8 / inst.access_uplink_bps)
            download.append(
                sum(cat.stage_output_bytes(d.flow, s) for s in flow.sinks())
                * 8
                / inst.access_downlink_bps
            )
        width = max(2, max(len(r) for r in rows))
        jmax = max(len(h) for h in hosts)
        n = len(inst.nodes)
        tau = np.array(
            [
                [service_time(inst, group_flow[g], sid, m) for m in range(n)]
                for g, sid in zip(comp_group, comp_stage, strict=True)
            ]
        )
        adj = [sorted({m for m, _ in nb}) for nb in inst.adjacency()]
        dmax = max(len(a) for a in adj)
        return cls(
            inst=inst,
            placement={s: sorted(v) for s, v in dep.placement.items()},
            group_flow=group_flow,
            home=np.array([d.node for d in inst.demands]),
            rate=np.array([d.rate for d in inst.demands]),
            upload=np.array(upload),
            download=np.array(download),
            comp_group=np.array(comp_group),
            comp_stage=comp_stage,
            level=np.array(level),
            inputs=np.array([r + [-1] * (width - len(r)) for r in rows]),
            user_bytes=np.array(user, dtype=float),
            out_bytes=np.array(out, dtype=float),
            sinks=np.array([s + [-1] * (max(map(len, sinks)) - len(s)) for s in sinks]),
            hosts=np.array([h + [h[0]] * (jmax - len(h)) for h in hosts]),
            num_hosts=np.array([len(h) for h in hosts]),
            tau=tau,
            neighbours=np.array([a + [a[0]] * (dmax - len(a)) for a in adj]),
            degree=np.array([len(a) for a in adj]),
        )

    def transfer(self, a: np.ndarray, b: np.ndarray, nbytes: np.ndarray) -> np.ndarray:
        """Vectorised :meth:`Instance.transfer_time`: seconds to move ``nbytes`` from ``a`` to ``b``.

        Shapes:
            ``a``, ``b``, ``nbytes`` broadcast together; the result has their common shape.
        """
        t = self.inst.path_delay[a, b] + 8.0 * nbytes * self.inst.path_sec_per_bit[a, b]
        return np.where((a == b) | (nbytes <= 0), 0.0, t)
