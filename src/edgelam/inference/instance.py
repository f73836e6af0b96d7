"""Deployment instances: heterogeneous edge nodes, links, and per-flow request rates.

An :class:`Instance` holds everything the deployment problem needs (``docs/deployment.md`` writes
the problem out): edge nodes with sustained compute (FLOP/s) and memory, undirected links with
bandwidth and delay, the user access link, and demands -- Poisson request rates of each LAM
(flow) from users attached to each node. It embeds the catalog entries it uses, so a saved
instance (JSON, schema ``edgelam.deployment-instance/1``) stays solvable when the shipped catalog
changes.

Transfers between nodes follow the path that is fastest for a 1 MB payload; a payload of ``b``
bytes from node ``n`` to node ``m`` takes ``path_delay[n, m] + 8 b * path_sec_per_bit[n, m]``
(store-and-forward, links never congested).

>>> inst = generate_instance(10, seed=0)
>>> len(inst.nodes), inst.is_connected()
(10, True)
>>> Instance.from_dict(inst.to_dict()).to_dict() == inst.to_dict()
True
"""

from __future__ import annotations

import heapq
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgelam.config import ConfigError
from edgelam.inference.catalog import Catalog, load_catalog

__all__ = [
    "INSTANCE_SCHEMA",
    "NODE_PRESETS",
    "Demand",
    "Instance",
    "InstanceError",
    "Link",
    "Node",
    "generate_instance",
    "load_instance",
]

INSTANCE_SCHEMA = "edgelam.deployment-instance/1"

NODE_PRESETS: dict[str, tuple[float, float, float]] = {
    # name: (sustained FLOP/s, usable memory MiB, draw probability). Sustained = peak dense fp16
    # x efficiency, as in edgelam.network.compute.DEVICE_PRESETS.
    # Jetson Orin Nano 8GB (Super): 67 sparse INT8 TOPS -> ~17 dense fp16 TFLOP/s (our
    # derivation) x 0.3; 8 GiB shared with the OS, 6 GiB usable.
    "jetson-orin-nano": (17e12 * 0.3, 6144.0, 0.35),
    # Jetson AGX Orin 64GB: ~42.5 dense fp16 TFLOP/s x 0.3 (DEVICE_PRESETS); 56 GiB usable.
    "jetson-agx-orin": (42.5e12 * 0.3, 57344.0, 0.30),
    # RTX 4090 edge server: 82.6 fp16 tensor TFLOP/s with fp32 accumulate (datasheet) x 0.4;
    # 24 GiB.
    "rtx4090-server": (82.6e12 * 0.4, 24576.0, 0.20),
    # A100 40GB SXM4: 312 dense fp16 TFLOP/s x 0.4 (DEVICE_PRESETS); 40 GiB.
    "a100-server": (312e12 * 0.4, 40960.0, 0.15),
}
"""Edge node classes drawn by :func:`generate_instance`."""


class InstanceError(ConfigError):
    """A malformed or infeasible instance; the message says why."""


@dataclass(frozen=True)
class Node:
    """An edge node: ``flops`` sustained FLOP/s, ``memory_mb`` usable MiB, position in metres."""

    name: str
    kind: str
    flops: float
    memory_mb: float
    x: float = 0.0
    y: float = 0.0


@dataclass(frozen=True)
class Link:
    """An undirected link between node indices ``a`` and ``b``."""

    a: int
    b: int
    bandwidth_bps: float
    delay_s: float


@dataclass(frozen=True)
class Demand:
    """Requests of flow ``flow`` from users attached to node ``node``, Poisson at ``rate``/s."""

    flow: str
    node: int
    rate: float


def _num(d: dict, key: str, where: str, *, positive: bool = True) -> float:
    if key not in d:
        raise InstanceError(f"{where}: missing field {key!r}")
    try:
        v = float(d[key])
    except (TypeError, ValueError):
        raise InstanceError(f"{where}.{key}: must be a number, got {d[key]!r}") from None
    if not math.isfinite(v) or (v <= 0 if positive else v < 0):
        raise InstanceError(f"{where}.{key}: must be {'> 0' if positive else '>= 0'}, got {v}")
    return v


@dataclass
class Instance:
    """One deployment problem (see the module docstring).

    Attributes:
        nodes: Edge nodes, indexed 0..N-1.
        links: Undirected links between node indices.
        demands: Request rates per (flow, origin node); one *request class* each.
        catalog: The microservices and flows the demands use.
        access_uplink_bps: User -> attached node rate (the same for every deployment).
        access_downlink_bps: Attached node -> user rate.
        max_utilisation: Compute capacity: every node's utilisation must stay at or below this.
        name: Free-form label (e.g. ``"n10-s0"``).
    """

    nodes: list[Node]
    links: list[Link]
    demands: list[Demand]
    catalog: Catalog
    access_uplink_bps: float = 100e6
    access_downlink_bps: float = 400e6
    max_utilisation: float = 0.9
    name: str = ""
    path_delay: np.ndarray = field(init=False, repr=False)
    path_sec_per_bit: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.check()
        self.path_delay, self.path_sec_per_bit = self._paths()

    # ---- validation -------------------------------------------------------------------------
    def check(self) -> None:
        """Raise :class:`InstanceError` naming the first structural problem found."""
        n = len(self.nodes)
        if n == 0:
            raise InstanceError("instance: no nodes")
        if len({x.name for x in self.nodes}) != n:
            raise InstanceError("instance: node names are not unique")
        for i, node in enumerate(self.nodes):
            if not (node.flops > 0 and node.memory_mb > 0):
                raise InstanceError(f"node {i} ({node.name}): flops and memory_mb must be > 0")
        for j, link in enumerate(self.links):
            if not (0 <= link.a < n and 0 <= link.b < n) or link.a == link.b:
                raise InstanceError(
                    f"link {j}: endpoints {link.a}, {link.b} must be two distinct nodes in 0..{n - 1}"
                )
            if not (link.bandwidth_bps > 0 and link.delay_s >= 0):
                raise InstanceError(f"link {j}: bandwidth must be > 0 and delay >= 0")
        if not self.demands:
            raise InstanceError("instance: no demands")
        seen = set()
        for j, d in enumerate(self.demands):
            if d.flow not in self.catalog.flows:
                raise InstanceError(
                    f"demand {j}: unknown flow {d.flow!r} (instance flows: {sorted(self.catalog.flows)})"
                )
            if not 0 <= d.node < n:
                raise InstanceError(f"demand {j}: origin node {d.node} not in 0..{n - 1}")
            if not d.rate > 0:
                raise InstanceError(f"demand {j}: rate must be > 0, got {d.rate}")
            if (d.flow, d.node) in seen:
                raise InstanceError(f"demand {j}: duplicate class ({d.flow}, node {d.node})")
            seen.add((d.flow, d.node))
        if not 0 < self.max_utilisation < 1:
            raise InstanceError(f"max_utilisation: must be in (0, 1), got {self.max_utilisation}")
        if not (self.access_uplink_bps > 0 and self.access_downlink_bps > 0):
            raise InstanceError("access_uplink_bps and access_downlink_bps must be > 0")
        if not self.is_connected():
            raise InstanceError(
                "instance: the node graph is not connected (some transfers are impossible)"
            )

    def is_connected(self) -> bool:
        adj = self.adjacency()
        seen, stack = {0}, [0]
        while stack:
            for m, _ in adj[stack.pop()]:
                if m not in seen:
                    seen.add(m)
                    stack.append(m)
        return len(seen) == len(self.nodes)

    def adjacency(self) -> list[list[tuple[int, Link]]]:
        adj: list[list[tuple[int, Link]]] = [[] for _ in self.nodes]
        for link in self.links:
            adj[link.a].append((link.b, link))
            adj[link.b].append((link.a, link))
        return adj

    def infeasibility_report(self) -> list[str]:
        """Necessary conditions for a feasible deployment that this instance violates (empty when
        none is violated; an empty report does not prove feasibility)."""
        reasons = []
        biggest = max(x.memory_mb for x in self.nodes)
        needed = {s for d in self.demands for s in self.catalog.flows[d.flow].services()}
        for s in sorted(needed):
            mem = self.catalog.services[s].memory_mb
            if mem > biggest:
                reasons.append(
                    f"microservice {s} needs {mem:.0f} MiB; the largest node has {biggest:.0f} MiB"
                )
        total_needed = sum(self.catalog.services[s].memory_mb for s in needed)
        total = sum(x.memory_mb for x in self.nodes)
        if total_needed > total:
            reasons.append(
                f"one instance of every needed microservice takes {total_needed:.0f} MiB; all nodes hold {total:.0f} MiB"
            )
        fastest = max(x.flops for x in self.nodes)
        work = sum(
            d.rate
            * sum(
                self.catalog.stage_gflops(d.flow, s.id) for s in self.catalog.flows[d.flow].stages
            )
            * 1e9
            for d in self.demands
        )
        capacity = self.max_utilisation * sum(x.flops for x in self.nodes)
        if work > capacity:
            reasons.append(
                f"the demands need {work / 1e12:.1f} TFLOP/s even on the fastest placement; the nodes give {capacity / 1e12:.1f} TFLOP/s at {self.max_utilisation:.0%} utilisation"
            )
        for s in sorted(needed):
            load = sum(
                d.rate * self.catalog.stage_gflops(d.flow, st.id) * 1e9 / fastest
                for d in self.demands
                for st in self.catalog.flows[d.flow].stages
                if st.service == s
            )
            if load > self.max_utilisation * len(self.nodes):
                reasons.append(f"microservice {s} alone would load {load:.1f} of the fastest nodes")
        return reasons

    # ---- paths ------------------------------------------------------------------------------
    def _paths(self) -> tuple[np.ndarray, np.ndarray]:
        """All-pairs (delay, seconds per bit) along the path fastest for a 1 MB payload."""
        n = len(self.nodes)
        adj = self.adjacency()
        delay = np.zeros((n, n))
        spb = np.zeros((n, n))
        ref_bits = 8e6
        for src in range(n):
            best = {src: 0.0}
            acc = {src: (0.0, 0.0)}
            heap = [(0.0, src)]
            while heap:
                cost, u = heapq.heappop(heap)
                if cost > best[u]:
                    continue
                for v, link in adj[u]:
                    c = cost + link.delay_s + ref_bits / link.bandwidth_bps
                    if c < best.get(v, math.inf) - 1e-15:
                        best[v] = c
                        d0, s0 = acc[u]
                        acc[v] = (d0 + link.delay_s, s0 + 1.0 / link.bandwidth_bps)
                        heapq.heappush(heap, (c, v))
            for v, (d0, s0) in acc.items():
                delay[src, v], spb[src, v] = d0, s0
        return delay, spb

    def transfer_time(self, a: int, b: int, nbytes: float) -> float:
        """Seconds to move ``nbytes`` from node ``a`` to node ``b`` (0 when ``a == b``)."""
        if a == b or nbytes <= 0:
            return 0.0
        return float(self.path_delay[a, b] + 8.0 * nbytes * self.path_sec_per_bit[a, b])

    # ---- io ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": INSTANCE_SCHEMA,
            "name": self.name,
            "access_uplink_bps": self.access_uplink_bps,
            "access_downlink_bps": self.access_downlink_bps,
            "max_utilisation": self.max_utilisation,
            "nodes": [vars(x).copy() for x in self.nodes],
            "links": [vars(x).copy() for x in self.links],
            "demands": [vars(x).copy() for x in self.demands],
            "catalog": self.catalog.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Instance:
        if not isinstance(d, dict) or d.get("schema") != INSTANCE_SCHEMA:
            raise InstanceError(f"instance: 'schema' must be {INSTANCE_SCHEMA!r}")
        for key in ("nodes", "links", "demands", "catalog"):
            if key not in d:
                raise InstanceError(f"instance: missing field {key!r}")
        nodes = []
        for i, x in enumerate(d["nodes"]):
            w = f"node {i}"
            nodes.append(
                Node(
                    str(x.get("name", f"n{i}")),
                    str(x.get("kind", "")),
                    _num(x, "flops", w),
                    _num(x, "memory_mb", w),
                    float(x.get("x", 0.0)),
                    float(x.get("y", 0.0)),
                )
            )
        links = []
        for j, x in enumerate(d["links"]):
            w = f"link {j}"
            if not all(isinstance(x.get(k), int) for k in ("a", "b")):
                raise InstanceError(f"{w}: endpoints 'a' and 'b' must be node indices")
            links.append(
                Link(
                    x["a"],
                    x["b"],
                    _num(x, "bandwidth_bps", w),
                    _num(x, "delay_s", w, positive=False),
                )
            )
        demands = []
        for j, x in enumerate(d["demands"]):
            w = f"demand {j}"
            if not isinstance(x.get("node"), int) or "flow" not in x:
                raise InstanceError(f"{w}: needs 'flow' and an integer 'node'")
            demands.append(Demand(str(x["flow"]), x["node"], _num(x, "rate", w)))
        return cls(
            nodes=nodes, links=links, demands=demands, catalog=Catalog.from_dict(d["catalog"]),
            access_uplink_bps=float(d.get("access_uplink_bps", 100e6)),
            access_downlink_bps=float(d.get("access_downlink_bps", 400e6)),
            max_utilisation=float(d.get("max_utilisation", 0.9)), name=str(d.get("name", "")),
        )  # fmt: skip

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path


def load_instance(path: str | Path) -> Instance:
    """Read an instance JSON file; raises :class:`InstanceError` naming the file and problem."""
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InstanceError(f"{path}: not valid JSON ({err})") from None
    try:
        return Instance.from_dict(d)
    except ConfigError as err:
        raise InstanceError(f"{path}: {err}") from None


def generate_instance(
    num_nodes: int,
    seed: int,
    *,
    flows: list[str] | None = None,
    load: float = 0.3,
    flows_per_node: tuple[int, int] = (1, 3),
    catalog: Catalog | None = None,
) -> Instance:
    """A seeded random instance.

    Nodes are drawn from :data:`NODE_PRESETS` (at least one node of each server class, so the
    largest microservices fit) and placed uniformly in a square of side ``sqrt(N / 10)`` km;
    links join the Euclidean minimum spanning tree plus each node's two nearest neighbours, with 1
    or 10 Gbit/s and 0.1 ms + distance / (2e8 m/s) delay. Each node's users request between
    ``flows_per_node`` distinct flows; rates are scaled so that the total work is ``load`` times
    the nodes' total sustained FLOP/s.

    Raises:
        InstanceError: ``num_nodes < 2``, ``load`` outside (0, 1), or unknown flows.
    """
    if num_nodes < 2:
        raise InstanceError(f"num_nodes: need at least 2 nodes, got {num_nodes}")
    if not 0 < load < 1:
        raise InstanceError(f"load: must be in (0, 1), got {load}")
    rng = np.random.default_rng(seed)
    catalog = catalog or load_catalog()
    flows = list(flows or catalog.flows)
    catalog = catalog.subset(flows)
    kinds = list(NODE_PRESETS)
    prob = np.array([NODE_PRESETS[k][2] for k in kinds])
    draw = list(rng.choice(len(kinds), size=num_nodes, p=prob / prob.sum()))
    for required in (2, 3):  # at least one RTX 4090 and one A100 server
        if required not in draw:
            free = [i for i, k in enumerate(draw) if k < 2]
            draw[free[int(rng.integers(len(free)))] if free else 0] = required
    side = 1000.0 * math.sqrt(num_nodes / 10)
    pos = rng.uniform(0, side, size=(num_nodes, 2))
    nodes = [Node(f"n{i}", kinds[k], NODE_PRESETS[kinds[k]][0], NODE_PRESETS[kinds[k]][1], float(pos[i, 0]), float(pos[i, 1])) for i, k in enumerate(draw)]  # fmt: skip
    dist = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    edges = set()
    in_tree, rest = {0}, set(range(1, num_nodes))  # Prim's MST
    while rest:
        a, b = min(((a, b) for a in in_tree for b in rest), key=lambda e: dist[e])
        edges.add((min(a, b), max(a, b)))
        in_tree.add(b)
        rest.remove(b)
    for a in range(num_nodes):
        for b in np.argsort(dist[a])[1:3]:
            edges.add((min(a, int(b)), max(a, int(b))))
    links = [Link(a, b, float(rng.choice([1e9, 10e9], p=[0.6, 0.4])), 1e-4 + dist[a, b] / 2e8) for a, b in sorted(edges)]  # fmt: skip
    lo, hi = flows_per_node
    demands = []
    for n in range(num_nodes):
        k = int(rng.integers(lo, min(hi, len(flows)) + 1))
        for f in sorted(rng.choice(len(flows), size=k, replace=False)):
            demands.append(Demand(flows[f], n, float(rng.uniform(0.5, 1.5))))
    work = sum(d.rate * sum(catalog.stage_gflops(d.flow, s.id) for s in catalog.flows[d.flow].stages) * 1e9 for d in demands)  # fmt: skip
    scale = load * sum(x.flops for x in nodes) / work
    demands = [Demand(d.flow, d.node, round(d.rate * scale, 6)) for d in demands]
    return Instance(nodes, links, demands, catalog, name=f"n{num_nodes}-s{seed}")
