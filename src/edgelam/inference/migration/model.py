r"""The per-slot migration system: latency of every placement of the users' chains, and the cost
of moving them.

``K`` users move along a :class:`~.traces.Trace`; user ``k`` runs one multimodal LAM (a flow of
the microservice catalog) as a whole chain on one edge server per slot, :math:`x_k(t) \in
\{0..N-1\}` (the decision). All chains start, free of charge, on their serving server of slot 0.

**Latency** of user ``k`` in slot ``t`` (milliseconds; docs/migration.md has the table of
constants):

.. math::

    L_k = \underbrace{\frac{8 b^{in}_k}{R^{ul}_k} + \frac{8 b^{out}_k}{R^{dl}_k}}_{\text{access}}
        + \underbrace{D(a_k, x_k, b^{in}_k) + D(x_k, a_k, b^{out}_k)}_{\text{backhaul}}
        + \underbrace{\tau_{k,x_k}\, s(\rho_{x_k})}_{\text{compute}}

* access: the user's inputs up and the sink outputs down over the radio link to its serving
  server :math:`a_k` (nearest): 38.901 LOS path loss, Shannon rate over the bandwidth shared
  equally by the users in the cell (it does not depend on the decision);
* backhaul: :meth:`Instance.transfer_time <edgelam.inference.instance.Instance.transfer_time>`
  over the server graph (per link: ``hop_delay_s`` + distance / 2e8 m/s + bits / 1 Gbit/s);
* compute: :math:`\tau_{k,n}` = the flow's FLOPs / the server's sustained FLOP/s, stretched by
  processor sharing: every chain on server ``n`` shares it, utilisation :math:`\rho_n =
  \sum_{j: x_j = n} \lambda_j \tau_{j,n}`, and the M/G/1-PS mean response time is
  :math:`\tau / (1 - \rho)` (:func:`ps_stretch`; beyond ``rho_max`` its tangent line, a finite
  penalty for overload). This couples the users. The slot's latency is the mean over users.

**Migration cost** (kilojoules) of going from :math:`x(t-1)` to :math:`x(t)`:

* each user whose chain moves ships its state -- the LLM's KV cache of its context plus its last
  inputs -- over the backhaul (``energy_per_bit_hop_j`` per bit per hop) and the destination
  loads it (accelerator power x bytes / ``load_bytes_per_s``);
* each (server, microservice) pair needed at ``t`` that was not running at ``t - 1`` (an instance
  lives while some chain on that server uses it) costs its weights (params x 2 bytes) shipped from
  the nearest server that ran it, plus the load energy. Pairs are counted once, so users moving
  together to a server share the weights.

Bandwidth (bytes moved) and storage (bytes newly stored) are reported next to the energy.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgelam.config import ConfigError, option
from edgelam.inference.catalog import Catalog, load_catalog
from edgelam.inference.instance import NODE_PRESETS, Demand, Instance, Link, Node
from edgelam.inference.migration.traces import Trace

__all__ = [
    "KV_BYTES_PER_TOKEN",
    "SERVER_POWER_W",
    "MigrationSystem",
    "SlotProblem",
    "SystemConfig",
    "MigrationError",
    "ps_stretch",
]

SERVER_POWER_W: dict[str, float] = {
    # Accelerator board power while loading weights/state (an upper bound: TDP / max power
    # mode; the host is not counted).
    "jetson-orin-nano": 25.0,  # Orin Nano Super, 25 W mode
    "jetson-agx-orin": 60.0,  # AGX Orin 64GB, 60 W mode
    "rtx4090-server": 450.0,  # RTX 4090 total board power
    "a100-server": 400.0,  # A100 SXM4 TDP
}
"""Power (W) charged while a server loads migrated bytes, by node class."""

KV_BYTES_PER_TOKEN: dict[str, float] = {
    # 2 (K and V) x layers x KV width x 2 bytes (fp16), from the architectures' configs.
    "llm-1b": 2 * 22 * 256 * 2,  # TinyLlama-1.1B: 22 layers, 4 KV heads x 64 (GQA)
    "llm-3b": 2 * 32 * 2560 * 2,  # Phi-2: 32 layers, width 2560, multi-head attention
    "llm-7b": 2 * 32 * 4096 * 2,  # LLaMA-2-7B / Vicuna-7B: 32 layers, width 4096
}
"""KV-cache bytes per context token of the catalog's backbones. Other backbones: estimated as
``2 x L x d x 2`` with width ``d`` = output bytes per token / 2 and ``L = round(params / 12 d^2)``
(multi-head attention assumed)."""


class MigrationError(ConfigError):
    """Invalid migration-system settings (unknown flow or server class, memory too small, ...)."""


@dataclass
class SystemConfig:
    """The migration system's constants (every unit in the field's help)."""

    flows: tuple[str, ...] = option(("image-qa", "speech-qa", "image-caption"),
                                    "LAMs (catalog flows) the users run, assigned round-robin")  # fmt: skip
    server_kinds: tuple[str, ...] = option(("a100-server",),
                                           "edge server classes (NODE_PRESETS), assigned to "
                                           "servers round-robin")  # fmt: skip
    user_load: float = option(0.15, "utilisation one user's requests put on a server of the "
                              "first class (sets each user's Poisson request rate)")  # fmt: skip
    context_requests: int = option(4, "past requests whose KV cache a user's context holds")
    rho_max: float = option(0.95, "utilisation beyond which the processor-sharing stretch "
                            "1/(1-rho) continues as its tangent line (overload penalty)")  # fmt: skip
    backhaul_bps: float = option(1e9, "backhaul link rate between neighbouring servers, bit/s")
    hop_delay_s: float = option(2e-3, "switching/queueing delay per backhaul hop, s (plus "
                                "propagation at 2e8 m/s)")  # fmt: skip
    energy_per_bit_hop_j: float = option(20e-9, "network energy per migrated bit per hop, J")
    load_bytes_per_s: float = option(2e9, "rate at which a server loads migrated bytes "
                                     "(storage -> accelerator memory), byte/s")  # fmt: skip
    scenario: str = option("uma", "38.901 path-loss scenario of the access link (uma/umi)")
    carrier_hz: float = option(3.5e9, "access carrier frequency, Hz")
    bandwidth_hz: float = option(100e6, "access bandwidth per server, shared equally, Hz")
    ue_power_dbm: float = option(23.0, "user transmit power, dBm")
    bs_power_dbm: float = option(43.0, "server (base station) transmit power, dBm")
    noise_figure_db: float = option(7.0, "receiver noise figure, dB")
    bs_height_m: float = option(25.0, "base station antenna height, m")
    ue_height_m: float = option(1.5, "user antenna height, m")

    def __post_init__(self) -> None:
        if not self.flows:
            raise MigrationError("flows: need at least one flow")
        unknown = [k for k in self.server_kinds if k not in NODE_PRESETS]
        if not self.server_kinds or unknown:
            raise MigrationError(f"server_kinds: {unknown or '()'} not in {sorted(NODE_PRESETS)}")
        if not 0 < self.user_load < 1:
            raise MigrationError(f"user_load: must be in (0, 1), got {self.user_load}")
        if not 0 < self.rho_max < 1:
            raise MigrationError(f"rho_max: must be in (0, 1), got {self.rho_max}")
        if self.context_requests < 0:
            raise MigrationError(f"context_requests: must be >= 0, got {self.context_requests}")
        if self.scenario not in ("uma", "umi"):
            raise MigrationError(f"scenario: {self.scenario!r} is not one of ['uma', 'umi']")
        for name in ("backhaul_bps", "load_bytes_per_s", "carrier_hz", "bandwidth_hz"):
            if not getattr(self, name) > 0:
                raise MigrationError(f"{name}: must be > 0, got {getattr(self, name)}")
        for name in ("hop_delay_s", "energy_per_bit_hop_j"):
            if not getattr(self, name) >= 0:
                raise MigrationError(f"{name}: must be >= 0, got {getattr(self, name)}")


def ps_stretch(rho: np.ndarray | float, rho_max: float) -> np.ndarray:
    """Processor-sharing response-time stretch ``1 / (1 - rho)``, linear beyond ``rho_max``.

    >>> ps_stretch(np.array([0.0, 0.5, 0.95, 1.05]), 0.95).round(2).tolist()
    [1.0, 2.0, 20.0, 60.0]
    """
    rho = np.asarray(rho, dtype=float)
    inside = 1.0 / (1.0 - np.minimum(rho, rho_max))
    slope = 1.0 / (1.0 - rho_max) ** 2
    return np.where(rho <= rho_max, inside, inside + slope * (rho - rho_max))


def _kv_bytes_per_token(catalog: Catalog, service: str) -> float:
    if service in KV_BYTES_PER_TOKEN:
        return float(KV_BYTES_PER_TOKEN[service])
    ms = catalog.services[service]
    d = ms.output_bytes_per_unit / 2
    layers = max(1, round(ms.params / (12 * d * d)))
    return 2.0 * layers * d * 2.0


def _hops(n: int, links: tuple[tuple[int, int], ...]) -> np.ndarray:
    adj: list[list[int]] = [[] for _ in range(n)]
    for a, b in links:
        adj[a].append(b)
        adj[b].append(a)
    hops = np.full((n, n), -1, dtype=np.int64)
    for src in range(n):
        hops[src, src] = 0
        queue = deque([src])
        while queue:
            u = queue.popleft()
            for v in adj[u]:
                if hops[src, v] < 0:
                    hops[src, v] = hops[src, u] + 1
                    queue.append(v)
    if (hops < 0).any():
        raise MigrationError("trace: the backhaul graph is not connected")
    return hops


class MigrationSystem:
    """Users of a trace running catalog flows on the trace's edge servers (module docstring).

    Attributes (after construction; ``K`` users, ``N`` servers, ``S`` microservices, ``T`` slots):
        flows: Each user's flow name, ``[K]``.
        services: Microservices any user needs, ``[S]``; ``uses[k, s]`` bool ``[K, S]``, and
            ``flow_bit[k]`` is ``1 << (index of user k's flow among the distinct flows)`` and
            ``combo_uses[m, s]``: microservice ``s`` is used by a flow of bit mask ``m``.
        weight_bytes: Bytes of each microservice's weights (params x 2), ``[S]``.
        state_bytes: Bytes of each user's state (KV cache + last inputs), ``[K]``.
        rate: Each user's request rate, requests/s, ``[K]``.
        compute_ms: Service time of a user's request on each server, ms, ``[K, N]``.
        load: Utilisation a user puts on each server, ``rate x service time``, ``[K, N]``.
        hops: Backhaul hop counts, ``[N, N]``.
        backhaul_ms: ``[K, A, N]``: inputs from serving server ``A`` to host ``N`` and back.
        access: Serving server, ``[T, K]``; ``access_ms``: radio latency, ms, ``[T, K]``.
        power_w: Each server's load power, W, ``[N]``.
        instance: The server graph as a deployment :class:`Instance`.

    Raises:
        MigrationError: unknown flows, or a server that cannot hold every needed microservice.
    """

    def __init__(self, trace: Trace, config: SystemConfig | None = None,
                 catalog: Catalog | None = None) -> None:  # fmt: skip
        import torch

        from edgelam.network.link import achievable_rate, snr_db, thermal_noise_dbm
        from edgelam.network.pathloss import pathloss_los

        cfg = self.config = config or SystemConfig()
        catalog = catalog or load_catalog()
        unknown = [f for f in cfg.flows if f not in catalog.flows]
        if unknown:
            raise MigrationError(f"flows: {unknown} not in the catalog ({sorted(catalog.flows)})")
        self.trace, self.catalog = trace, catalog.subset(sorted(set(cfg.flows)))
        K, N, T = trace.num_users, trace.num_servers, trace.num_slots
        self.K, self.N, self.T = K, N, T
        self.flows = [cfg.flows[k % len(cfg.flows)] for k in range(K)]
        self.services = list(dict.fromkeys(s for f in self.flows
                                           for s in catalog.flows[f].services()))  # fmt: skip
        self.uses = np.array([[s in catalog.flows[f].services() for s in self.services]
                              for f in self.flows])  # fmt: skip
        self.weight_bytes = np.array([2.0 * catalog.services[s].params for s in self.services])
        distinct = list(dict.fromkeys(self.flows))
        self.flow_bit = np.array([1 << distinct.index(f) for f in self.flows], dtype=np.int64)
        uses_of = np.array([[s in catalog.flows[f].services() for s in self.services]
                            for f in distinct])  # fmt: skip
        combos = (np.arange(2 ** len(distinct))[:, None] >> np.arange(len(distinct))) & 1
        self.combo_uses = (combos @ uses_of) > 0  # [2^F, S]: services of each set of flows
        kinds = [cfg.server_kinds[n % len(cfg.server_kinds)] for n in range(N)]
        need_mb = sum(catalog.services[s].memory_mb for s in self.services)
        for kind in set(kinds):
            if NODE_PRESETS[kind][1] < need_mb:
                raise MigrationError(f"server_kinds: {kind} holds {NODE_PRESETS[kind][1]:.0f} MiB, "
                                  f"but one instance of every microservice of {sorted(set(cfg.flows))} "
                                  f"needs {need_mb:.0f} MiB")  # fmt: skip
        self.kinds = kinds
        flops = np.array([NODE_PRESETS[k][0] for k in kinds])
        self.power_w = np.array([SERVER_POWER_W[k] for k in kinds])
        work, state, b_in, b_out = [], [], [], []
        for f in self.flows:
            flow = catalog.flows[f]
            work.append(sum(catalog.stage_gflops(f, s.id) for s in flow.stages) * 1e9)
            b_in.append(sum(s.user_input_bytes for s in flow.stages))
            b_out.append(sum(catalog.stage_output_bytes(f, sid) for sid in flow.sinks()))
            tokens = {s.service: s.units for s in flow.stages
                      if catalog.services[s.service].kind == "backbone"}  # fmt: skip
            kv = sum(cfg.context_requests * u * _kv_bytes_per_token(catalog, s)
                     for s, u in tokens.items())  # fmt: skip
            state.append(kv + b_in[-1])
        work = np.array(work)
        self.state_bytes = np.array(state)
        self.input_bytes, self.output_bytes = np.array(b_in), np.array(b_out)
        self.rate = cfg.user_load * flops[0] / work
        compute_s = work[:, None] / flops[None, :]
        self.compute_ms = 1e3 * compute_s
        self.load = self.rate[:, None] * compute_s
        self.hops = _hops(N, trace.links)
        nodes = [
            Node(
                f"s{n}",
                kinds[n],
                float(flops[n]),
                NODE_PRESETS[kinds[n]][1],
                float(trace.servers[n, 0]),
                float(trace.servers[n, 1]),
            )
            for n in range(N)
        ]
        links = [Link(a, b, cfg.backhaul_bps, cfg.hop_delay_s
                      + float(np.linalg.norm(trace.servers[a] - trace.servers[b])) / 2e8)
                 for a, b in trace.links]  # fmt: skip
        self.access = trace.serving()
        rates: dict[tuple[str, int], float] = {}
        for k in range(K):
            key = (self.flows[k], int(self.access[0, k]))
            rates[key] = rates.get(key, 0.0) + float(self.rate[k])
        demands = [Demand(f, n, r) for (f, n), r in rates.items()]
        self.instance = Instance(
            nodes, links, demands, self.catalog, name=f"{trace.name}-migration"
        )
        self.backhaul_ms = np.array([[[1e3 * (self.instance.transfer_time(a, m, b_in[k])
                                              + self.instance.transfer_time(m, a, b_out[k]))
                                       for m in range(N)] for a in range(N)] for k in range(K)])  # fmt: skip
        # access radio: LOS path loss at the serving distance, bandwidth shared in the cell
        d = np.take_along_axis(trace.distances(), self.access[..., None], axis=-1)[..., 0]
        pl = pathloss_los(cfg.scenario, torch.from_numpy(np.clip(d, 10.0, 5000.0)),
                          cfg.bs_height_m, cfg.ue_height_m, cfg.carrier_hz)  # fmt: skip
        in_cell = np.zeros((T, N))
        np.add.at(in_cell, (np.arange(T)[:, None], self.access), 1.0)
        share = torch.from_numpy(cfg.bandwidth_hz / np.take_along_axis(in_cell, self.access, 1))
        noise = thermal_noise_dbm(share, cfg.noise_figure_db)
        r_ul = achievable_rate(share, snr_db(cfg.ue_power_dbm, pl, noise)).numpy()
        r_dl = achievable_rate(share, snr_db(cfg.bs_power_dbm, pl, noise)).numpy()
        self.access_ms = 1e3 * (8 * self.input_bytes / r_ul + 8 * self.output_bytes / r_dl)

    def initial(self) -> np.ndarray:
        """The free starting placement: every chain on its serving server of slot 0, ``[K]``."""
        return self.access[0].copy()

    def slot(self, t: int, prev: np.ndarray) -> SlotProblem:
        """The slot-``t`` problem given the previous placement ``prev`` (``int [K]``)."""
        cfg, prev = self.config, np.asarray(prev, dtype=np.int64)
        if prev.shape != (self.K,) or prev.min() < 0 or prev.max() >= self.N:
            raise ValueError(f"prev: need {self.K} server indices in 0..{self.N - 1}, got {prev}")
        e_bit, load_s = cfg.energy_per_bit_hop_j, 1.0 / cfg.load_bytes_per_s
        base = self.access_ms[t][:, None] + self.backhaul_ms[np.arange(self.K), self.access[t]]
        move = (8 * self.state_bytes[:, None] * e_bit * self.hops[prev]
                + self.power_w[None, :] * self.state_bytes[:, None] * load_s) / 1e3  # fmt: skip
        move[np.arange(self.K), prev] = 0.0
        present = np.zeros((self.N, len(self.services)), dtype=bool)
        for k in range(self.K):
            present[prev[k]] |= self.uses[k]
        src_hops = np.array([[self.hops[present[:, s], n].min() for s in range(len(self.services))]
                             for n in range(self.N)])  # fmt: skip
        inst = (8 * self.weight_bytes[None, :] * e_bit * src_hops
                + self.power_w[:, None] * self.weight_bytes[None, :] * load_s) / 1e3  # fmt: skip
        return SlotProblem(self, t, prev, base, move, present, np.where(present, 0.0, inst))


@dataclass
class SlotProblem:
    """One slot's placement problem (``K`` users, ``N`` servers, ``S`` microservices).

    Attributes:
        system: The system it belongs to.
        t: Slot index.
        prev: Previous placement, ``int [K]``.
        base_ms: Access + backhaul latency of user ``k`` hosted on ``n``, ms, ``[K, N]``.
        move_kj: Cost of moving user ``k``'s state to ``n``, kJ, ``[K, N]`` (0 at ``prev``).
        present: Microservice ``s`` running on ``n`` in the previous slot, ``bool [N, S]``.
        instantiate_kj: Cost of starting ``s`` on ``n`` (0 where present), kJ, ``[N, S]``.
    """

    system: MigrationSystem
    t: int
    prev: np.ndarray
    base_ms: np.ndarray
    move_kj: np.ndarray
    present: np.ndarray
    instantiate_kj: np.ndarray
    _combo_kj: np.ndarray | None = field(default=None, init=False, repr=False)

    def evaluate(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean latency (ms) and migration cost (kJ) of a batch of placements.

        Args:
            X: Placements, ``int [B, K]``.

        Returns:
            ``(latency_ms [B], cost_kj [B])``.
        """
        sys_, X = self.system, np.asarray(X, dtype=np.int64)
        rows = np.arange(X.shape[0])
        rho = np.zeros((X.shape[0], sys_.N))
        for k in range(sys_.K):
            rho[rows, X[:, k]] += sys_.load[k, X[:, k]]
        stretch = ps_stretch(rho, sys_.config.rho_max)
        lat = np.zeros(X.shape[0])
        cost = np.zeros(X.shape[0])
        hosted = np.zeros((X.shape[0], sys_.N), dtype=np.int64)  # bit mask of flows on n
        for k in range(sys_.K):
            n = X[:, k]
            lat += self.base_ms[k, n] + sys_.compute_ms[k, n] * stretch[rows, n]
            cost += self.move_kj[k, n]
            hosted[rows, n] |= sys_.flow_bit[k]
        if self._combo_kj is None:  # [N, 2^F]: cost of starting what a set of flows needs
            self._combo_kj = self.instantiate_kj @ sys_.combo_uses.T
        cost += self._combo_kj[np.arange(sys_.N)[None, :], hosted].sum(axis=1)
        return lat / sys_.K, cost

    def latency(self, x: np.ndarray) -> float:
        """Mean latency (ms) of placement ``x``: the reference definition, one user at a time."""
        sys_ = self.system
        util = [0.0] * sys_.N
        for k, n in enumerate(x):
            util[n] += float(sys_.rate[k] * sys_.compute_ms[k, n] / 1e3)
        rho_max, total = sys_.config.rho_max, 0.0
        for k, n in enumerate(x):
            a = int(sys_.access[self.t, k])
            rho = util[n]
            stretch = (1 / (1 - rho) if rho <= rho_max
                       else 1 / (1 - rho_max) + (rho - rho_max) / (1 - rho_max) ** 2)  # fmt: skip
            bh = sys_.instance.transfer_time(a, int(n), float(sys_.input_bytes[k]))
            bh += sys_.instance.transfer_time(int(n), a, float(sys_.output_bytes[k]))
            total += sys_.access_ms[self.t, k] + 1e3 * bh + sys_.compute_ms[k, n] * stretch
        return total / sys_.K

    def breakdown(self, x: np.ndarray) -> dict[str, Any]:
        """Migration cost of ``x`` with its parts: the reference definition, with Python sets.

        Returns:
            ``cost_kj``, ``migrations`` (users moved), ``new_instances`` ((server, microservice)
            pairs started), ``moved_mb`` (bytes over the backhaul, MB = 1e6 bytes),
            ``moved_mb_hops``, ``stored_mb`` (memory newly taken at destinations: migrated
            state plus each new instance's ``memory_mb``, weights and workspace).
        """
        sys_, cfg = self.system, self.system.config
        x = [int(n) for n in x]
        before = {(int(n), s) for k, n in enumerate(self.prev) for s in self._services(k)}
        after = {(n, s) for k, n in enumerate(x) for s in self._services(k)}
        joules = moved = byte_hops = stored = 0.0
        moves = 0
        for k, n in enumerate(x):
            if n != self.prev[k]:
                moves += 1
                b = float(sys_.state_bytes[k])
                h = int(sys_.hops[self.prev[k], n])
                joules += 8 * b * h * cfg.energy_per_bit_hop_j
                joules += sys_.power_w[n] * b / cfg.load_bytes_per_s
                moved, byte_hops, stored = moved + b, byte_hops + b * h, stored + b
        for n, s in sorted(after - before):
            b = float(sys_.weight_bytes[sys_.services.index(s)])
            h = min(int(sys_.hops[m, n]) for m, s2 in before if s2 == s)
            joules += (
                8 * b * h * cfg.energy_per_bit_hop_j + sys_.power_w[n] * b / cfg.load_bytes_per_s
            )
            moved, byte_hops = moved + b, byte_hops + b * h
            stored += sys_.catalog.services[s].memory_mb * 2**20
        return {"cost_kj": joules / 1e3, "migrations": moves, "new_instances": len(after - before),
                "moved_mb": moved / 1e6, "moved_mb_hops": byte_hops / 1e6,
                "stored_mb": stored / 1e6}  # fmt: skip

    def cost(self, x: np.ndarray) -> float:
        """Migration cost (kJ) of placement ``x`` (reference definition, :meth:`breakdown`)."""
        return float(self.breakdown(x)["cost_kj"])

    def utilisation(self, x: np.ndarray) -> np.ndarray:
        """Each server's utilisation under placement ``x``, ``[N]``."""
        rho = np.zeros(self.system.N)
        np.add.at(rho, np.asarray(x), self.system.load[np.arange(self.system.K), np.asarray(x)])
        return rho

    def _services(self, k: int) -> list[str]:
        return self.system.catalog.flows[self.system.flows[k]].services()
