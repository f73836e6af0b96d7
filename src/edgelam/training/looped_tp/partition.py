"""Choosing the partition (heads, FFN and embedding columns per device) and the uplink split.

Three schemes (:func:`plan`):

* ``equal`` -- every count split as evenly as integers allow (the first ``n mod K`` devices get
  one more); the uplink band is then split latency-optimally for that partition, so that
  ``optimal`` vs ``equal`` isolates the value of a heterogeneity-aware partition.
* ``min_storage`` -- the paper's baseline: "consistent matrix dimensions across devices,
  constraining task sizes to the minimum available storage". Every device holds a slice of the
  **same shape** (``H/K`` heads, ``FFN/K`` columns, ``E/K`` embedding columns), so ``K`` must
  divide ``H``, ``ffn_dim`` and ``embed_dim`` (ConfigError otherwise); the common share is
  bounded by the smallest device's memory, i.e. the scheme is feasible only if the ``1/K``
  slice fits the smallest device. When it does not, the model cannot be trained under
  consistent dimensions on these devices and :class:`DeviceMemoryError` names the smallest
  device, the bytes the slice needs and the bytes it has (``optimal`` may still fit, by giving
  that device less). No radio optimisation: the band is split equally.
* ``optimal`` -- minimise the iteration latency :math:`T` of
  :func:`~edgelam.training.looped_tp.costs.iteration_latency` jointly over the integer counts
  and the bandwidth split, subject to each device's memory.

**The optimisation problem.** With :math:`y_k = 1/r_k(b_k)` (seconds per bit on device
:math:`k`'s uplink):

.. math::

    \\min_{h, f, e \\in \\mathbb{Z}_{\\ge 1}^K,\\ y,\\ t}\\ \\sum_r n_r t_r
    \\quad\\text{s.t.}\\quad t_r \\ge \\frac{w_r u_{r,k}}{\\eta_k F_k} + U_{r,k} y_k\\ \\forall r, k,
    \\quad \\sum_k h_k = H,\\ \\sum_k f_k = F_{ffn},\\ \\sum_k e_k = E,

.. math::

    m^0_k + m^h h_k + m^f f_k + m^e e_k \\le M_k, \\qquad \\sum_k g_k(y_k) \\le B,

where :math:`u_{r,k}` is device :math:`k`'s count of the round's unit, :math:`n_r` the round's
multiplicity and :math:`g_k(y) = r_k^{-1}(1/y)` the bandwidth device :math:`k` needs for
:math:`y`. :math:`g_k` is convex (a convex increasing :math:`r_k^{-1}` of the convex
:math:`1/y`), so this is a convex mixed-integer program, solved by **outer approximation**:
:math:`\\sum_k g_k \\le B` is replaced by tangent cuts :math:`\\beta_k \\ge g_k(y^0) +
g_k'(y^0)(y_k - y^0)`, :math:`\\sum_k \\beta_k \\le B`, the MILP is solved with HiGHS
(``scipy.optimize.milp``), and a cut is added at every :math:`y_k` where the bandwidth is
underestimated, until :math:`\\sum_k g_k(y_k) \\le B (1 + \\epsilon)`. The MILP's value is a lower
bound on :math:`T^\\star` and the returned plan (bandwidths :math:`g_k(y_k)` scaled into
:math:`B`) an upper bound; both are reported (``lower_bound_s``, ``gap``). With the counts
fixed, the same loop solves the bandwidth split alone (an LP per cut round). Instances HiGHS
does not close within ``time_limit_s`` return its incumbent and the MIP gap it reports.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from edgelam.config import ConfigError
from edgelam.network import DeviceMemoryError
from edgelam.training.bandwidth_split import _bandwidth_for_rate, _rate_slope, rate_bps
from edgelam.training.looped_tp.costs import (
    EdgeSystem,
    LatencyBreakdown,
    Partition,
    TPWorkload,
    check_memory,
    iteration_latency,
)

__all__ = ["SCHEMES", "Plan", "equal_partition", "min_storage_partition", "plan"]

Scheme = Literal["optimal", "equal", "min_storage"]
SCHEMES = ("optimal", "equal", "min_storage")
_KINDS = ("heads", "ffn", "embed")


@dataclass(frozen=True)
class Plan:
    """A partition, its uplink split and what it costs.

    Attributes:
        scheme: how it was chosen.
        partition: counts per device.
        bandwidth_hz: uplink bandwidth per device (sums to the band).
        latency: :func:`~edgelam.training.looped_tp.costs.iteration_latency` of the plan.
        memory: per device, the bytes of :meth:`TPWorkload.device_memory`.
        lower_bound_s: a lower bound on the optimum of the problem solved (the scheme's
            partition fixed, except for ``optimal``).
        solver: iterations, cuts, MILP status.
    """

    scheme: str
    partition: Partition
    bandwidth_hz: tuple[float, ...]
    latency: LatencyBreakdown
    memory: list[dict[str, int]]
    lower_bound_s: float
    solver: dict = field(default_factory=dict)

    @property
    def gap(self) -> float:
        """Relative gap ``(T - lower bound) / T``."""
        return max(0.0, (self.latency.total_s - self.lower_bound_s) / self.latency.total_s)

    def as_dict(self) -> dict:
        return {
            "scheme": self.scheme,
            "partition": self.partition.as_dict(),
            "bandwidth_hz": list(self.bandwidth_hz),
            "latency": self.latency.as_dict(),
            "memory_bytes": self.memory,
            "lower_bound_s": self.lower_bound_s,
            "gap": self.gap,
            "solver": self.solver,
        }


def _even(total: int, k: int, name: str) -> tuple[int, ...]:
    if total < k:
        raise ConfigError(f"{name}: {total} cannot give each of {k} devices at least one")
    q, r = divmod(total, k)
    return tuple(q + (i < r) for i in range(k))


def equal_partition(workload: TPWorkload, num_devices: int) -> Partition:
    """Counts as even as integers allow (the first ``n mod K`` devices get one more).

    >>> from edgelam.training.looped_tp.model import LoopedLAMConfig
    >>> w = TPWorkload(LoopedLAMConfig(n_head=4, ffn_dim=10, embed_dim=6, d_model=8), 2)
    >>> equal_partition(w, 3)
    Partition(heads=(2, 1, 1), ffn_columns=(4, 3, 3), embed_columns=(2, 2, 2))
    """
    c = workload.cfg
    return Partition(_even(c.n_head, num_devices, "n_head"), _even(c.ffn_dim, num_devices, "ffn_dim"),
                     _even(c.embed_dim, num_devices, "embed_dim"))  # fmt: skip


def min_storage_partition(workload: TPWorkload, system: EdgeSystem) -> Partition:
    """Consistent dimensions: the same slice shape on every device, bounded by the smallest.

    Raises:
        ConfigError: ``K`` does not divide a dimension (named).
        DeviceMemoryError: the common slice does not fit the smallest device (named, bytes).
    """
    c, k = workload.cfg, system.num_devices
    for name, total in (("n_head", c.n_head), ("ffn_dim", c.ffn_dim), ("embed_dim", c.embed_dim)):
        if total % k:
            raise ConfigError(
                f"{name}: min_storage (consistent dimensions) needs K={k} to divide {name}={total}"
            )
    part = Partition(*((n // k,) * k for n in (c.n_head, c.ffn_dim, c.embed_dim)))
    small = min(range(k), key=lambda i: system.devices[i].memory_bytes)
    need = workload.device_memory(part, small)["total"]
    if need > system.devices[small].memory_bytes:
        raise DeviceMemoryError(
            f"min_storage: the common 1/{k} slice needs {need} bytes but the smallest device, "
            f"device {small} ({system.devices[small].name!r}), has "
            f"memory_bytes={system.devices[small].memory_bytes}; under consistent dimensions the "
            "model does not fit these devices (try the optimal partition)"
        )
    return part


class _Problem:
    """The outer-approximation MILP; variables ``[h, f, e | v | beta_hat | t]``.

    Scaled for HiGHS, whose tolerances are absolute (1e-7 feasibility, 1e-6 MIP gap): times are
    in units of ``t_ref``, a millionth of the equal split's latency -- ``t`` per round, and
    ``v_k = y_k U / t_ref``, the airtime of one ``[B, T, d]`` payload (``U`` bits) on device
    ``k``'s uplink; ``beta_hat`` is in units of the band ``B``.
    """

    def __init__(self, workload: TPWorkload, system: EdgeSystem) -> None:
        self.w, self.s, k = workload, system, system.num_devices
        self.k, self.rounds = k, workload.rounds()
        self.c = np.asarray(system.rate_constant_hz, dtype=np.float64)
        self.band = system.total_bandwidth_hz
        self.unit_bits = workload.tokens * workload.cfg.d_model * workload.dtype_bytes * 8.0
        self.n_vars = 5 * k + len(self.rounds)
        even = equal_partition(workload, k)
        self.t_ref = (
            1e-6 * iteration_latency(workload, system, even, np.full(k, self.band / k)).total_s
        )
        # v range: from the whole band to 1e-6 of it per device
        self.v_lo = self.airtime(np.full(k, self.band))
        self.v_hi = self.airtime(np.full(k, 1e-6 * self.band))
        self.cuts: list[np.ndarray] = []
        self.cut_rhs: list[float] = []
        for frac in (0.02, 0.1, 0.3, 1.0, 3.0):
            self.add_cuts(self.airtime(np.minimum(frac * self.band / k, self.band)))

    def airtime(self, bandwidth: np.ndarray) -> np.ndarray:
        """``v``: airtime of one payload with ``bandwidth`` (Hz), in ``t_ref`` units."""
        return self.unit_bits / rate_bps(bandwidth, self.c) / self.t_ref

    def g(self, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bandwidth (Hz) that gives airtime ``v``, and its derivative ``db/dv``."""
        rate = self.unit_bits / (v * self.t_ref)
        b = _bandwidth_for_rate(rate, self.c)
        return b, -(rate / v) / _rate_slope(b, self.c)

    def add_cuts(self, v: np.ndarray) -> None:
        b, slope = self.g(v)
        for i in range(self.k):  # beta_i >= (b + slope (v - v0)) / B
            row = np.zeros(self.n_vars)
            row[3 * self.k + i] = slope[i] / self.band
            row[4 * self.k + i] = -1.0
            self.cuts.append(row)
            self.cut_rhs.append(float((slope[i] * v[i] - b[i]) / self.band))

    def solve(self, fixed: Partition | None, time_limit: float) -> tuple[np.ndarray, float, dict]:
        k, w, nr = self.k, self.w, len(self.rounds)
        cfg = w.cfg
        totals = (cfg.n_head, cfg.ffn_dim, cfg.embed_dim)
        speed = np.array([d.sustained_flops for d in self.s.devices])
        cost = np.zeros(self.n_vars)
        rows, lo, hi = [], [], []
        for j, r in enumerate(self.rounds):
            cost[5 * k + j] = r.count
            u = _KINDS.index(r.unit)
            for i in range(k):
                row = np.zeros(self.n_vars)
                row[u * k + i] = r.flops_per_unit / speed[i] / self.t_ref
                row[3 * k + i] = w.uplink_bits(r, i) / self.unit_bits
                row[5 * k + j] = -1.0
                rows.append(row), lo.append(-np.inf), hi.append(0.0)
        for u, total in enumerate(totals):
            row = np.zeros(self.n_vars)
            row[u * k : (u + 1) * k] = 1.0
            rows.append(row), lo.append(total), hi.append(total)
        for i, dev in enumerate(self.s.devices):
            row = np.zeros(self.n_vars)
            for u, kind in enumerate(_KINDS):
                row[u * k + i] = _bytes_per_unit(w, kind)
            free = dev.memory_bytes - _fixed_bytes(w)
            rows.append(row), lo.append(-np.inf), hi.append(free)
        row = np.zeros(self.n_vars)
        row[4 * k : 5 * k] = 1.0
        rows.append(row), lo.append(-np.inf), hi.append(1.0)
        rows += self.cuts
        lo += [-np.inf] * len(self.cuts)
        hi += self.cut_rhs
        lb = np.concatenate([np.ones(3 * k), self.v_lo, np.zeros(k), np.zeros(nr)])
        ub = np.concatenate([np.repeat([t - k + 1 for t in totals], k), self.v_hi, np.ones(k),
                             np.full(nr, np.inf)])  # fmt: skip
        if fixed is not None:
            counts = np.concatenate([fixed.heads, fixed.ffn_columns, fixed.embed_columns])
            lb[: 3 * k] = ub[: 3 * k] = counts
        integrality = np.concatenate([np.ones(3 * k), np.zeros(2 * k + nr)])
        res = milp(cost, constraints=LinearConstraint(np.array(rows), lo, hi),
                   integrality=integrality, bounds=Bounds(lb, ub),
                   options={"time_limit": time_limit, "mip_rel_gap": 1e-9})  # fmt: skip
        if res.x is None:
            raise DeviceMemoryError(_infeasible_message(w, self.s))
        bound = getattr(res, "mip_dual_bound", None)
        bound = (res.fun if bound is None or not math.isfinite(bound) else bound) * self.t_ref
        return res.x, float(bound), {"status": int(res.status), "message": res.message}


def _bytes_per_unit(w: TPWorkload, kind: str) -> float:
    per = w.memory_per_unit()[kind]
    return 4 * per["parameters"] + per["activations"]  # params, grads, 2 AdamW moments


def _fixed_bytes(w: TPWorkload) -> float:
    return w.fixed_activation_bytes() + 4 * w.param_tensors()


def _infeasible_message(w: TPWorkload, system: EdgeSystem) -> str:
    """Name the device that cannot hold even one head, FFN column and embedding column."""
    least = _fixed_bytes(w) + sum(_bytes_per_unit(w, u) for u in _KINDS)
    for k, dev in enumerate(system.devices):
        if dev.memory_bytes < least:
            return (f"device {k} ({dev.name!r}): even the smallest share (1 head, 1 FFN column, 1 "
                    f"embedding column) needs {int(least)} bytes but it has memory_bytes="
                    f"{dev.memory_bytes}")  # fmt: skip
    total = sum(d.memory_bytes for d in system.devices)
    return (f"no partition fits: the devices' memory ({total} bytes in all, "
            f"{[d.memory_bytes for d in system.devices]}) cannot hold the block's "
            f"{workload_block_bytes(w)} bytes plus each device's fixed {int(_fixed_bytes(w))} bytes")  # fmt: skip


def workload_block_bytes(w: TPWorkload) -> int:
    """Bytes of the whole shared block's share-dependent memory (all units on one device)."""
    c = w.cfg
    return int(sum(_bytes_per_unit(w, u) * n for u, n in
                   zip(_KINDS, (c.n_head, c.ffn_dim, c.embed_dim), strict=True)))  # fmt: skip


def _optimise(workload: TPWorkload, system: EdgeSystem, fixed: Partition | None,
              tol: float, max_iter: int, time_limit: float) -> tuple[Partition, np.ndarray, float, dict]:  # fmt: skip
    prob, k = _Problem(workload, system), system.num_devices
    it, stalled, best = 0, 0, np.inf
    while True:
        it += 1
        x, bound, info = prob.solve(fixed, time_limit)
        v = x[3 * k : 4 * k]
        b, _ = prob.g(v)
        excess = b.sum() / prob.band - 1
        stalled = stalled + 1 if excess > 0.5 * best else 0  # cuts no longer help (tolerances)
        best = min(best, excess)
        if excess <= tol or it == max_iter or stalled == 5:
            break
        prob.add_cuts(v)
    counts = np.rint(x[: 3 * k]).astype(int)
    part = Partition(*(tuple(counts[u * k : (u + 1) * k]) for u in range(3)))
    bandwidth = b * (prob.band / b.sum())
    const = sum(r.count * r.downlink_bits / system.downlink_rate_bps for r in workload.rounds())
    const += workload.server_flops() / system.server.sustained_flops
    return part, bandwidth, bound + const, {**info, "iterations": it, "cuts": len(prob.cuts)}


def plan(scheme: Scheme, workload: TPWorkload, system: EdgeSystem, *, tol: float = 1e-8,
         max_iter: int = 200, time_limit_s: float = 60.0) -> Plan:  # fmt: skip
    """The partition and uplink split of ``scheme``, with its latency and memory.

    Args:
        scheme: ``optimal``, ``equal`` or ``min_storage`` (also ``min-storage``; see the module
            docstring).
        workload: the model and batch.
        system: devices, links and server.
        tol: relative bandwidth excess at which outer approximation stops (it also stops
            after 5 cut rounds that do not halve the excess).
        max_iter: cut rounds at most.
        time_limit_s: HiGHS time limit per MILP.

    Raises:
        ConfigError: unknown scheme, or a dimension the scheme cannot split.
        DeviceMemoryError: a share does not fit its device (named, with the bytes).
    """
    scheme = scheme.replace("-", "_")  # the CLI spells it min-storage
    if scheme not in SCHEMES:
        raise ConfigError(f"partition: {scheme!r} is not one of {list(SCHEMES)}")
    k = system.num_devices
    if scheme == "min_storage":
        part = min_storage_partition(workload, system)
        bandwidth = np.full(k, system.total_bandwidth_hz / k)
        latency = iteration_latency(workload, system, part, bandwidth)
        return Plan(scheme, part, tuple(bandwidth.tolist()), latency,
                    check_memory(workload, system, part), latency.total_s, {"bandwidth": "equal"})  # fmt: skip
    fixed = equal_partition(workload, k) if scheme == "equal" else None
    if fixed is not None:
        check_memory(workload, system, fixed)
    part, bandwidth, bound, info = _optimise(workload, system, fixed, tol, max_iter, time_limit_s)
    latency = iteration_latency(workload, system, part, bandwidth)
    return Plan(scheme, part, tuple(bandwidth.tolist()), latency,
                check_memory(workload, system, part), min(bound, latency.total_s), info)  # fmt: skip
