"""Greedy constructions of a deployment: one request class at a time (:func:`construct`), or
one microservice at a time (:func:`construct_by_service`).

Classes are taken by decreasing work (rate x FLOPs). Each is served whole by the node that
minimises its share of the objective, ``rate x D_c + increase of rho^2/(1-rho)`` (excess over
``max_utilisation`` first), among the nodes with memory for the microservices of its LAM that
they do not host yet. What a node already hosts costs no memory, so replicas appear where the
load and latency ask for them and, in a shared deployment, LAMs reuse each other's
microservices; in a monolithic one (``shared=False``) each LAM copy brings its own. A class no
single node can take is routed stage by stage (compute + transfer from the previous stage).

>>> from edgelam.inference.instance import generate_instance
>>> from edgelam.inference.deployment import evaluate
>>> inst = generate_instance(5, seed=3)
>>> dep, problems = construct(inst)
>>> evaluate(inst, dep).feasible, problems
(True, [])
"""

from __future__ import annotations

from edgelam.inference.deployment import Deployment, class_latency, congestion, service_time
from edgelam.inference.instance import Demand, Instance

__all__ = ["construct", "construct_by_service", "demand_work"]


def demand_work(inst: Instance, d: Demand) -> float:
    """GFLOP/s a demand asks for (rate x FLOPs of its flow)."""
    cat = inst.catalog
    return d.rate * sum(cat.stage_gflops(d.flow, s.id) for s in cat.flows[d.flow].stages)


def construct(
    inst: Instance, *, shared: bool = True, passes: int = 2
) -> tuple[Deployment, list[str]]:
    """Build a deployment class by class (see the module docstring), then re-insert every class
    ``passes`` times: take it out (freeing replicas only it used) and serve it again by the best
    node given all the others, keeping its current assignment unless a node does better.

    Args:
        inst: The instance.
        shared: Microservices shared across LAMs (keys ``service``) or per-LAM copies
            (keys ``"flow/service"``, each class on one node).
        passes: Re-insertion passes over the classes.

    Returns:
        The deployment (``method`` empty) and the problems met (classes left unrouted).
    """
    state = _State(inst, shared)
    order = sorted(inst.demands, key=lambda d: -demand_work(inst, d))
    problems: list[str] = []
    for d in order:
        nodes = state.best_whole(d, None)
        if nodes is None and shared:
            nodes = _stagewise(inst, state, d)
        if nodes is None:
            problems.append(f"class ({d.flow}, node {d.node}): no node has memory for it")
            continue
        state.add(d, nodes)
    for _ in range(passes):
        changed = False
        for d in order:
            current = state.dep.routing.get((d.flow, d.node))
            if current is None:
                continue
            state.remove(d)
            nodes = state.best_whole(d, current)
            changed |= nodes != current
            state.add(d, nodes)
        if not changed:
            break
    dep = state.dep
    dep.placement = {k: sorted(n for n, c in users.items() if c > 0) for k, users in state.users.items()}  # fmt: skip
    return dep, problems


class _State:
    """Loads, free memory and replica users while classes are inserted and removed."""

    def __init__(self, inst: Instance, shared: bool) -> None:
        self.inst = inst
        self.dep = Deployment({}, {}, shared)
        self.rho = [0.0] * len(inst.nodes)
        self.free = [node.memory_mb for node in inst.nodes]
        self.users: dict[str, dict[int, int]] = {}  # key -> node -> classes using the replica

    def _stages(self, d: Demand, nodes: dict[str, int]):
        for s in self.inst.catalog.flows[d.flow].stages:
            yield s, self.dep.key(d.flow, s.service), nodes[s.id]

    def add(self, d: Demand, nodes: dict[str, int]) -> None:
        cat = self.inst.catalog
        for s, key, n in self._stages(d, nodes):
            users = self.users.setdefault(key, {})
            if users.get(n, 0) == 0:
                self.free[n] -= cat.services[s.service].memory_mb
            users[n] = users.get(n, 0) + 1
            self.rho[n] += d.rate * service_time(self.inst, d.flow, s.id, n)
        self.dep.routing[d.flow, d.node] = nodes

    def remove(self, d: Demand) -> None:
        cat = self.inst.catalog
        nodes = self.dep.routing.pop((d.flow, d.node))
        for s, key, n in self._stages(d, nodes):
            self.users[key][n] -= 1
            if self.users[key][n] == 0:
                self.free[n] += cat.services[s.service].memory_mb
            self.rho[n] -= d.rate * service_time(self.inst, d.flow, s.id, n)

    def hosts(self, key: str, n: int) -> bool:
        return self.users.get(key, {}).get(n, 0) > 0

    def cost(self, d: Demand, nodes: dict[str, int]) -> tuple[float, float]:
        """``(excess over max_utilisation, rate x D_c + congestion increase)`` of serving d."""
        add: dict[int, float] = {}
        for s in self.inst.catalog.flows[d.flow].stages:
            n = nodes[s.id]
            add[n] = add.get(n, 0.0) + d.rate * service_time(self.inst, d.flow, s.id, n)
        umax, rho = self.inst.max_utilisation, self.rho
        over = sum(max(0.0, rho[n] + a - umax) for n, a in add.items())
        extra = sum(congestion(min(rho[n] + a, 0.999)) - congestion(min(rho[n], 0.999)) for n, a in add.items())  # fmt: skip
        return over, d.rate * class_latency(self.inst, self.dep, d.flow, d.node, nodes) + extra

    def best_whole(self, d: Demand, current: dict[str, int] | None) -> dict[str, int] | None:
        """The best single node for the whole class (memory permitting), or ``current`` when
        it is at least as good; ``None`` when nothing fits."""
        cat = self.inst.catalog
        best = (self.cost(d, current), current) if current is not None else None
        for n in range(len(self.inst.nodes)):
            need = sum(
                cat.services[s].memory_mb
                for s in cat.flows[d.flow].services()
                if not self.hosts(self.dep.key(d.flow, s), n)
            )
            if need > self.free[n] + 1e-6:
                continue
            nodes = {s.id: n for s in cat.flows[d.flow].stages}
            c = self.cost(d, nodes)
            if best is None or c < (best[0][0], best[0][1] * (1 - 1e-12)):
                best = (c, nodes)
        return None if best is None else best[1]


def _stagewise(inst: Instance, state: _State, d: Demand) -> dict[str, int] | None:
    """Route one class stage by stage when no node can take it whole: each stage goes to the
    node (hosting it already, or with memory for it) with the least compute + transfer from
    its inputs' nodes; ``None`` when some stage fits nowhere."""
    cat = inst.catalog
    f = cat.flows[d.flow]
    nodes: dict[str, int] = {}
    extra = [0.0] * len(inst.nodes)
    for sid in f.topological_order():
        st = f.stage[sid]
        key = state.dep.key(d.flow, st.service)
        mem = cat.services[st.service].memory_mb
        options = []
        for n in range(len(inst.nodes)):
            hosted = state.hosts(key, n) or any(
                nodes[o] == n for o in nodes if f.stage[o].service == st.service
            )
            if not hosted and mem > state.free[n] - extra[n] + 1e-6:
                continue
            t = service_time(inst, d.flow, sid, n) + sum(
                inst.transfer_time(nodes[u], n, cat.stage_output_bytes(d.flow, u))
                for u in st.inputs
            )
            options.append((max(0.0, state.rho[n] - inst.max_utilisation), t, n, hosted))
        if not options:
            return None
        _, _, n, hosted = min(options)
        nodes[sid] = n
        if not hosted:
            extra[n] += mem
    return nodes


def construct_by_service(inst: Instance, *, target_utilisation: float | None = None) -> dict[str, list[int]]:  # fmt: skip
    """A shared placement built microservice by microservice, largest first (the backbones are
    the hard part of the memory packing): each goes to the nodes with the lowest
    demand-weighted compute + transfer cost, one replica after another until the replicas'
    reserved capacity (``target_utilisation`` of their FLOP/s, default 2/3 of
    ``max_utilisation``) covers its work, within memory. Routing is left to the caller.

    Args:
        inst: The instance.
        target_utilisation: Utilisation each node's reserved capacity is counted at.

    Returns:
        Microservice -> hosting nodes (empty when no node has the memory).
    """
    cat = inst.catalog
    target = inst.max_utilisation * 2 / 3 if target_utilisation is None else target_utilisation
    uses: dict[str, list[tuple[Demand, str]]] = {}
    for d in inst.demands:
        for st in cat.flows[d.flow].stages:
            uses.setdefault(st.service, []).append((d, st.id))
    free_mem = [node.memory_mb for node in inst.nodes]
    free_cap = [target * node.flops for node in inst.nodes]
    placement: dict[str, list[int]] = {}
    for s in sorted(uses, key=lambda s: -cat.services[s].memory_mb):
        mem = cat.services[s].memory_mb
        work = sum(d.rate * cat.stage_gflops(d.flow, sid) * 1e9 for d, sid in uses[s])
        fits = [n for n in range(len(inst.nodes)) if free_mem[n] >= mem]
        cost = {n: sum(d.rate * _stage_cost(inst, placement, d, sid, n) for d, sid in uses[s]) for n in fits}  # fmt: skip
        placement[s] = []
        for n in sorted(fits, key=lambda n: cost[n]):
            if work <= 0:
                break
            if free_cap[n] <= 0 and placement[s]:
                continue
            placement[s].append(n)
            free_mem[n] -= mem
            take = min(free_cap[n], work)
            free_cap[n] -= take
            work -= take
        placement[s].sort()
    return placement


def _stage_cost(inst: Instance, placement: dict[str, list[int]], d: Demand, sid: str, n: int) -> float:  # fmt: skip
    """Seconds a request of ``d`` spends on stage ``sid`` at node ``n``: compute, transfers from
    the user or the nearest placed producer, to the nearest placed consumer or the user."""
    cat = inst.catalog
    f = cat.flows[d.flow]
    st = f.stage[sid]
    cost = service_time(inst, d.flow, sid, n)
    if st.user_input_bytes:
        cost += inst.transfer_time(d.node, n, st.user_input_bytes)
    for u in st.inputs:
        hosts = placement.get(f.stage[u].service)
        if hosts:
            cost += min(inst.transfer_time(h, n, cat.stage_output_bytes(d.flow, u)) for h in hosts)
    out = cat.stage_output_bytes(d.flow, sid)
    if sid in f.sinks():
        cost += inst.transfer_time(n, d.node, out)
    for w in f.stages:
        if sid in w.inputs and placement.get(w.service):
            cost += min(inst.transfer_time(n, h, out) for h in placement[w.service])
    return cost
