"""Wireless accounting and online uplink-bandwidth allocation for split federated fine-tuning.

**Round model.** In one iteration each scheduled device :math:`k` runs a chain: device compute,
uplink of its activations/Jacobians, server compute, downlink, device compute, uplink, ... Every
link except the uplink is fixed for the round, so the chain is summarised by
:class:`RoundDemand`: :math:`U_k` uplink bits (all uplink transfers of the iteration, sent over
the same sub-band), :math:`a_k` seconds that do not depend on the uplink bandwidth (device and
server compute, downlink airtime) and :math:`e_k` joules of device compute energy. The uplink
band :math:`B_{tot}` is split by FDMA; with bandwidth :math:`b` the noise grows with :math:`b`,
so from the SNR :math:`s_k` measured over the reference bandwidth :math:`b_{ref}`

.. math::

    r_k(b) = b \\log_2\\!\\Big(1 + \\frac{s_k b_{ref}}{\\Gamma b}\\Big)
           = b \\log_2\\!\\Big(1 + \\frac{c_k}{b}\\Big), \\qquad c_k = \\frac{s_k b_{ref}}{\\Gamma},

increasing and concave in :math:`b`, with :math:`r_k(b) \\to c_k / \\ln 2` as
:math:`b \\to \\infty` (power-limited). Device :math:`k` completes at
:math:`t_k = a_k + U_k / r_k(b_k)` and spends :math:`E_k = p_k U_k / r_k(b_k) + e_k`; the round
latency is :math:`T = \\max_{k \\in S} t_k` over the scheduled set :math:`S`.

**Policies** (``allocate(demand, round) -> Allocation``, ``update(allocation)``):
:class:`EqualBandwidth` (:math:`B_{tot}/K` each), :class:`LatencyOptimal` (min-max split, see its
docstring) and :class:`LyapunovScheduler`, an online drift-plus-penalty scheduler with virtual
energy queues :math:`Q_k(t+1) = \\max(Q_k(t) + E_k(t) - \\bar E_k, 0)`. Each round it solves

.. math::

    \\min_{S,\\ |S| \\ge m}\\; V\\Big(\\lambda\\, T^\\star(S) - \\sum_{k \\in S} w_k\\Big)
    + \\sum_{k \\in S} Q_k E_k(S)

where :math:`T^\\star(S)` is the latency-optimal round latency of :math:`S` and :math:`E_k(S)`
the energy under that split. For :math:`K \\le` ``exact_max_devices`` every subset is evaluated
(one vectorised min-max solve for all :math:`2^K - 1` sets); above, a greedy starts from the
best single device and adds the device with the largest decrease while the objective decreases.

>>> demand = RoundDemand(uplink_bits=[8e6, 8e6], fixed_seconds=[0.1, 0.5],
...     compute_energy_j=[1.0, 1.0], tx_power_w=0.2, snr_ref=[100.0, 10.0],
...     reference_bandwidth_hz=1e6, total_bandwidth_hz=2e6)
>>> equal = EqualBandwidth().allocate(demand, 0)
>>> best = LatencyOptimal().allocate(demand, 0)
>>> round(equal.latency_s, 4), round(best.latency_s, 4)  # the slow link gets more band
(2.8125, 2.2952)
>>> t = best.completion_seconds  # equalised; the whole band is used
>>> round(best.bandwidth_hz.sum().item()), float(t.max() - t.min()) < 1e-9
(2000000, True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import numpy as np
import torch

from edgelam.config import ConfigError, option
from edgelam.network.compute import DeviceProfile, compute_energy, compute_latency
from edgelam.network.link import achievable_rate, db_to_linear, dbm_to_watt, linear_to_db
from edgelam.network.topology import LinkState, Network
from edgelam.training.bandwidth_split import min_latency_split, rate_bps

__all__ = [
    "RoundDemand",
    "Allocation",
    "demand_from_network",
    "evaluate_allocation",
    "AllocationPolicy",
    "EqualBandwidth",
    "LatencyOptimal",
    "LyapunovScheduler",
    "ResourceAllocationConfig",
    "build_policy",
]

Vector = float | Sequence[float] | torch.Tensor


def _vector(name: str, value: Any, k: int, lower: float, strict: bool = False) -> torch.Tensor:
    """``value`` as a finite float64 ``[k]`` tensor (a scalar broadcasts), ``>``/``>= lower``."""
    t = torch.as_tensor(value, dtype=torch.float64)
    if t.ndim == 0:
        t = t.expand(k)
    if t.shape != (k,):
        raise ConfigError(f"{name}: expected a scalar or {k} values, got shape {list(t.shape)}")
    ok = t > lower if strict else t >= lower
    if not bool(torch.isfinite(t).all()) or not bool(ok.all()):
        raise ConfigError(
            f"{name}: every value must be finite and {'>' if strict else '>='} {lower}"
        )
    return t.clone()


@dataclass(frozen=True)
class RoundDemand:
    """What one round asks of the uplink band (every ``[K]`` field is float64; scalars broadcast).

    Attributes:
        uplink_bits: :math:`U_k`, bits device ``k`` sends in the round (all its uplink transfers).
        fixed_seconds: :math:`a_k`, seconds of its chain that do not depend on its uplink band.
        compute_energy_j: :math:`e_k`, device compute energy (J).
        tx_power_w: :math:`p_k`, uplink transmit power (W).
        snr_ref: :math:`s_k`, linear uplink SNR over ``reference_bandwidth_hz``.
        reference_bandwidth_hz: :math:`b_{ref}` (Hz) at which ``snr_ref`` was measured.
        total_bandwidth_hz: :math:`B_{tot}` (Hz), the uplink band shared by the scheduled devices.
        rate_gap_db: SNR gap :math:`\\Gamma` to capacity (dB).

    Raises:
        ConfigError: a wrong length, a negative or non-finite value, or a bandwidth ``<= 0``
            (the message names the field).
    """

    uplink_bits: torch.Tensor
    fixed_seconds: torch.Tensor
    compute_energy_j: torch.Tensor
    tx_power_w: torch.Tensor
    snr_ref: torch.Tensor
    reference_bandwidth_hz: float
    total_bandwidth_hz: float
    rate_gap_db: float = 0.0

    def __post_init__(self) -> None:
        bits = torch.as_tensor(self.uplink_bits, dtype=torch.float64)
        if bits.ndim != 1 or bits.numel() == 0:
            raise ConfigError(
                f"uplink_bits: expected a non-empty [K] vector, got {list(bits.shape)}"
            )
        k = bits.numel()
        for name, strict in [
            ("uplink_bits", False),
            ("fixed_seconds", False),
            ("compute_energy_j", False),
            ("tx_power_w", False),
            ("snr_ref", True),
        ]:
            object.__setattr__(self, name, _vector(name, getattr(self, name), k, 0.0, strict))
        for name in ("reference_bandwidth_hz", "total_bandwidth_hz", "rate_gap_db"):
            value = float(getattr(self, name))
            positive = name != "rate_gap_db"
            if not math.isfinite(value) or (positive and value <= 0):
                rule = "finite and > 0" if positive else "finite"
                raise ConfigError(f"{name}: must be {rule}, got {value}")
            object.__setattr__(self, name, value)

    @property
    def num_devices(self) -> int:
        """Number of devices :math:`K`."""
        return self.uplink_bits.numel()

    @property
    def rate_constant_hz(self) -> torch.Tensor:
        """:math:`c_k = s_k b_{ref} / \\Gamma` (Hz); the rate saturates at :math:`c_k/\\ln 2`."""
        return self.snr_ref * self.reference_bandwidth_hz / db_to_linear(self.rate_gap_db)

    def uplink_rate(self, bandwidth_hz: Vector) -> torch.Tensor:
        """:math:`r_k(b_k)` (bit/s) with the network's rate formula; 0 where :math:`b_k = 0`.

        Args:
            bandwidth_hz: :math:`b_k` (Hz), scalar or ``[K]``, ``>= 0``.

        Returns:
            ``[K]`` float64 rates.
        """
        b = _vector("bandwidth_hz", bandwidth_hz, self.num_devices, 0.0)
        snr = self.snr_ref * self.reference_bandwidth_hz / b.clamp_min(1e-300)
        rate = achievable_rate(b, linear_to_db(snr), self.rate_gap_db)
        return torch.where(b > 0, rate, torch.zeros_like(rate))


def demand_from_network(
    network: Network,
    state: LinkState | int,
    uplink_bits: Vector,
    downlink_bits: Vector,
    device_flops: Vector,
    server_flops: Vector,
    device_profile: DeviceProfile | Sequence[DeviceProfile],
    server_profile: DeviceProfile,
    total_uplink_bandwidth_hz: float | None = None,
) -> RoundDemand:
    """The :class:`RoundDemand` of one round of ``network``.

    :math:`a_k` = device compute + server compute + unicast downlink airtime
    (:meth:`Network.downlink_cost`); the server is assumed to serve the devices' streams in
    parallel, each at its full sustained throughput. :math:`s_k` is ``state.uplink_snr_db`` over
    ``uplink_bandwidth_hz`` and :math:`p_k` the configured device transmit power.

    Args:
        network: The cell.
        state: Its :class:`LinkState` this round, or a round index.
        uplink_bits: Bits each device sends up per iteration, scalar or ``[K]``.
        downlink_bits: Bits the server sends each device per iteration, scalar or ``[K]``.
        device_flops: Device compute per iteration (FLOPs), scalar or ``[K]``.
        server_flops: Server compute per device per iteration (FLOPs), scalar or ``[K]``.
        device_profile: One :class:`DeviceProfile` for all devices, or ``K`` of them.
        server_profile: The edge server's profile.
        total_uplink_bandwidth_hz: :math:`B_{tot}`; ``None`` means ``K * uplink_bandwidth_hz``.

    Returns:
        The round's demand.
    """
    cfg, k = network.config, network.num_devices
    state = network.round(state) if isinstance(state, int) else state
    profiles = [device_profile] * k if isinstance(device_profile, DeviceProfile) else device_profile
    if len(profiles) != k:
        raise ConfigError(f"device_profile: expected 1 or {k} profiles, got {len(profiles)}")
    dev_flops = _vector("device_flops", device_flops, k, 0.0)
    srv_flops = _vector("server_flops", server_flops, k, 0.0)
    down_bits = _vector("downlink_bits", downlink_bits, k, 0.0)
    device_s = torch.stack(
        [compute_latency(f, p) for f, p in zip(dev_flops, profiles, strict=True)]
    )
    device_j = torch.stack([compute_energy(f, p) for f, p in zip(dev_flops, profiles, strict=True)])
    downlink_s = network.downlink_cost(down_bits, state).seconds
    total = (
        k * cfg.uplink_bandwidth_hz
        if total_uplink_bandwidth_hz is None
        else total_uplink_bandwidth_hz
    )
    return RoundDemand(
        uplink_bits=_vector("uplink_bits", uplink_bits, k, 0.0),
        fixed_seconds=device_s + compute_latency(srv_flops, server_profile) + downlink_s,
        compute_energy_j=device_j,
        tx_power_w=dbm_to_watt(cfg.device_tx_power_dbm),
        snr_ref=db_to_linear(state.uplink_snr_db),
        reference_bandwidth_hz=cfg.uplink_bandwidth_hz,
        total_bandwidth_hz=total,
        rate_gap_db=cfg.rate_gap_db,
    )


@dataclass(frozen=True)
class Allocation:
    """One round's schedule and uplink split, with its latency and energy.

    Attributes:
        round: Round index (``None`` if not given).
        scheduled: ``[K]`` bool, the scheduled set :math:`S`.
        bandwidth_hz: ``[K]`` uplink bandwidth :math:`b_k` (0 off :math:`S`).
        uplink_rate_bps: ``[K]`` :math:`r_k(b_k)` (0 off :math:`S`).
        uplink_seconds: ``[K]`` :math:`U_k / r_k(b_k)` (0 off :math:`S` or with no bits).
        completion_seconds: ``[K]`` :math:`a_k + U_k/r_k(b_k)` (0 off :math:`S`).
        energy_j: ``[K]`` :math:`p_k U_k / r_k(b_k) + e_k` (0 off :math:`S`).
        latency_s: Round latency :math:`\\max_{k \\in S} t_k` (s).
        objective: The policy's per-round objective, if it has one (drift-plus-penalty).
    """

    round: int | None
    scheduled: torch.Tensor
    bandwidth_hz: torch.Tensor
    uplink_rate_bps: torch.Tensor
    uplink_seconds: torch.Tensor
    completion_seconds: torch.Tensor
    energy_j: torch.Tensor
    latency_s: float
    objective: float | None = None

    @property
    def num_scheduled(self) -> int:
        """:math:`|S|`."""
        return int(self.scheduled.sum())

    def as_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (tensors become lists), e.g. for ``metrics.jsonl``."""
        return {
            name: value.tolist() if isinstance(value, torch.Tensor) else value
            for name, value in self.__dict__.items()
        }


def evaluate_allocation(
    demand: RoundDemand,
    scheduled: Sequence[bool] | torch.Tensor,
    bandwidth_hz: Vector,
    round: int | None = None,
    objective: float | None = None,
) -> Allocation:
    """Latency and energy of scheduling ``scheduled`` with uplink bandwidths ``bandwidth_hz``.

    Raises:
        ConfigError: no device scheduled, bandwidth off :math:`S`, a scheduled device with bits
            but no bandwidth, or :math:`\\sum_k b_k > B_{tot}` (beyond 1e-9 relative).
    """
    k = demand.num_devices
    mask = torch.as_tensor(scheduled, dtype=torch.bool)
    if mask.shape != (k,) or not bool(mask.any()):
        raise ConfigError(f"scheduled: expected [{k}] booleans with at least one True")
    b = _vector("bandwidth_hz", bandwidth_hz, k, 0.0)
    if bool((b[~mask] > 0).any()):
        raise ConfigError("bandwidth_hz: unscheduled devices must get 0 Hz")
    if float(b.sum()) > demand.total_bandwidth_hz * (1 + 1e-9):
        raise ConfigError(
            f"bandwidth_hz: sums to {float(b.sum())} Hz > total_bandwidth_hz "
            f"{demand.total_bandwidth_hz}"
        )
    needs = mask & (demand.uplink_bits > 0)
    if bool((needs & (b <= 0)).any()):
        raise ConfigError("bandwidth_hz: a scheduled device with uplink bits has 0 Hz")
    rate = demand.uplink_rate(b)
    uplink_s = torch.where(needs, demand.uplink_bits / rate.clamp_min(1e-300), 0.0)
    zero = torch.zeros(k, dtype=torch.float64)
    completion = torch.where(mask, demand.fixed_seconds + uplink_s, zero)
    energy = torch.where(mask, demand.tx_power_w * uplink_s + demand.compute_energy_j, zero)
    return Allocation(
        round=round,
        scheduled=mask,
        bandwidth_hz=b,
        uplink_rate_bps=torch.where(mask, rate, zero),
        uplink_seconds=uplink_s,
        completion_seconds=completion,
        energy_j=energy,
        latency_s=float(completion[mask].max()),
        objective=objective,
    )


def _split(masks: np.ndarray, demand: RoundDemand) -> np.ndarray:
    """:func:`min_latency_split` of ``demand`` for each ``[n, K]`` scheduled-set mask."""
    return min_latency_split(
        masks,
        demand.fixed_seconds.numpy(),
        demand.uplink_bits.numpy(),
        demand.rate_constant_hz.numpy(),
        demand.total_bandwidth_hz,
    )


# ---- policies --------------------------------------------------------------------------------


class AllocationPolicy:
    """Interface: ``allocate(demand, round) -> Allocation``; ``update`` after the round."""

    def allocate(self, demand: RoundDemand, round: int | None = None) -> Allocation:
        """Schedule and split the uplink band for one round."""
        raise NotImplementedError

    def update(self, allocation: Allocation) -> None:
        """Account the round that ran with ``allocation`` (no-op for stateless policies)."""

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume (empty for stateless policies)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""


class EqualBandwidth(AllocationPolicy):
    """Every device scheduled with :math:`B_{tot}/K`."""

    def allocate(self, demand: RoundDemand, round: int | None = None) -> Allocation:
        k = demand.num_devices
        return evaluate_allocation(demand, [True] * k, demand.total_bandwidth_hz / k, round)


class LatencyOptimal(AllocationPolicy):
    """Schedule all (or the given) devices and split the band to minimise the round latency.

    Solves :math:`\\min_b \\max_{k \\in S} a_k + U_k / r_k(b_k)` s.t.
    :math:`\\sum_k b_k = B_{tot}`, :math:`b \\ge 0` by root finding on the target latency
    :math:`T` (bisection safeguarded Newton) with the closed-form inner inverse
    :math:`b_k(T)` via Lambert W (see :func:`~edgelam.training.bandwidth_split.min_latency_split`).

    Proof sketch. :math:`t_k(b) = a_k + U_k/r_k(b)` is continuous and strictly decreasing in
    :math:`b` (:math:`r_k` strictly increasing), so "latency :math:`\\le T`" holds iff
    :math:`b_k \\ge b_k(T)` for all :math:`k`, with :math:`b_k(T)` the unique inverse,
    non-increasing in :math:`T`. Hence :math:`T` is achievable iff
    :math:`F(T) = \\sum_k b_k(T) \\le B_{tot}`, a monotone test: its least solution
    :math:`T^\\star` is optimal and bisection finds it. Exchange argument: if at an optimum some
    device with bits finished strictly before the others, moving a small bandwidth
    :math:`\\delta` from it to the slowest devices lowers their times while (by continuity)
    keeping it below the maximum, so the maximum drops -- a contradiction. Thus at
    :math:`T^\\star` every scheduled device with bits completes exactly at :math:`T^\\star`
    (:math:`F(T^\\star) = B_{tot}`); only devices with :math:`U_k = 0` (0 Hz) may finish
    earlier, and if one of them is the slowest, :math:`T^\\star = \\max a_k` and the band left
    over is shared out proportionally.

    Args:
        devices: Indices to schedule; ``None`` means all.
    """

    def __init__(self, devices: Sequence[int] | None = None) -> None:
        self.devices = None if devices is None else [int(i) for i in devices]
        if self.devices is not None and not self.devices:
            raise ConfigError("devices: must name at least one device")

    def allocate(self, demand: RoundDemand, round: int | None = None) -> Allocation:
        k = demand.num_devices
        mask = np.ones(k, dtype=bool)
        if self.devices is not None:
            if min(self.devices) < 0 or max(self.devices) >= k:
                raise ConfigError(f"devices: indices must be in [0, {k}), got {self.devices}")
            mask[:] = False
            mask[self.devices] = True
        split = _split(mask[None], demand)[0]
        return evaluate_allocation(demand, torch.from_numpy(mask), torch.from_numpy(split), round)


@lru_cache(maxsize=32)
def _all_subsets(k: int, min_size: int) -> np.ndarray:
    """Every subset of ``k`` devices with at least ``min_size`` members, ``[n, k]`` bool."""
    ints = np.arange(1, 2**k)
    masks = ((ints[:, None] >> np.arange(k)) & 1).astype(bool)
    return masks[masks.sum(1) >= min_size]


class LyapunovScheduler(AllocationPolicy):
    """Online drift-plus-penalty scheduling under long-term per-device energy budgets.

    Each round minimises :math:`V(\\lambda T^\\star(S) - \\sum_{k\\in S} w_k) + \\sum_{k\\in S}
    Q_k E_k(S)` over sets with ``|S| >= min_devices`` (see the module docstring): by
    enumeration when :math:`K \\le` ``exact_max_devices``, else greedily. :meth:`update` then
    sets :math:`Q_k \\leftarrow \\max(Q_k + E_k - \\bar E_k, 0)`. Since
    :math:`\\frac1T\\sum_t (E_k(t) - \\bar E_k) \\le Q_k(T)/T`, stable queues meet the budgets;
    the penalty is within :math:`O(1/V)` of optimal at a backlog of :math:`O(V)`.

    Args:
        v: Trade-off weight :math:`V > 0` (penalty vs. queue-weighted energy, in J²).
        energy_budget_j: :math:`\\bar E_k`, time-average energy per round (J), scalar or ``[K]``.
        num_devices: :math:`K`; needed only when no other argument is a ``[K]`` vector.
        latency_weight: :math:`\\lambda` (progress per second), ``>= 0``.
        weights: :math:`w_k`, learning-progress weight, e.g. the data share :math:`n_k/n`;
            ``None`` means equal shares :math:`1/K`.
        min_devices: Least number of devices scheduled each round.
        exact_max_devices: Largest :math:`K` solved exactly by enumeration (0..16).
    """

    def __init__(
        self,
        v: float,
        energy_budget_j: Vector,
        num_devices: int | None = None,
        latency_weight: float = 1.0,
        weights: Vector | None = None,
        min_devices: int = 1,
        exact_max_devices: int = 12,
    ) -> None:
        given = {"energy_budget_j": energy_budget_j, "weights": weights}
        sizes = {n: torch.as_tensor(x).numel() for n, x in given.items() if np.ndim(x) > 0}
        sizes |= {"num_devices": num_devices} if num_devices is not None else {}
        if not sizes:
            raise ConfigError("num_devices: required when energy_budget_j and weights are scalars")
        k = next(iter(sizes.values()))
        if any(size != k for size in sizes.values()):
            raise ConfigError(f"num_devices: the number of devices K disagrees: {sizes}")
        if not (math.isfinite(v) and v > 0):
            raise ConfigError(f"v: must be finite and > 0, got {v}")
        if not (math.isfinite(latency_weight) and latency_weight >= 0):
            raise ConfigError(f"latency_weight: must be finite and >= 0, got {latency_weight}")
        if not 1 <= min_devices <= k:
            raise ConfigError(f"min_devices: must be in [1, {k}], got {min_devices}")
        if not 0 <= exact_max_devices <= 16:
            raise ConfigError(f"exact_max_devices: must be in [0, 16], got {exact_max_devices}")
        self.v, self.latency_weight = float(v), float(latency_weight)
        self.min_devices, self.exact_max_devices = min_devices, exact_max_devices
        self.energy_budget_j = _vector("energy_budget_j", energy_budget_j, k, 0.0)
        self.weights = _vector("weights", 1.0 / k if weights is None else weights, k, 0.0)
        self.virtual_queue = torch.zeros(k, dtype=torch.float64)
        self.energy_sum_j = torch.zeros(k, dtype=torch.float64)
        self.rounds = 0

    @property
    def average_energy_j(self) -> torch.Tensor:
        """Time-average energy per round of each device so far, ``[K]`` (J)."""
        return self.energy_sum_j / max(self.rounds, 1)

    def objective(self, demand: RoundDemand, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Drift-plus-penalty value of each scheduled set: ``[n, K]`` masks -> ``([n], [n, K])``.

        Returns:
            The objective of each set and its latency-optimal bandwidths (Hz).
        """
        b = _split(masks, demand)
        a, u = demand.fixed_seconds.numpy(), demand.uplink_bits.numpy()
        needs = masks & (u > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            up = np.where(needs, u / rate_bps(b, demand.rate_constant_hz.numpy()), 0.0)
        latency = np.where(masks, a + up, -np.inf).max(1)
        energy = np.where(
            masks, demand.tx_power_w.numpy() * up + demand.compute_energy_j.numpy(), 0
        )
        reward = (masks * self.weights.numpy()).sum(1)
        drift = (energy * self.virtual_queue.numpy()).sum(1)
        return self.v * (self.latency_weight * latency - reward) + drift, b

    def allocate(self, demand: RoundDemand, round: int | None = None) -> Allocation:
        k = demand.num_devices
        if k != self.virtual_queue.numel():
            raise ConfigError(
                f"demand: has {k} devices, the scheduler {self.virtual_queue.numel()}"
            )
        if k <= self.exact_max_devices:
            masks = _all_subsets(k, self.min_devices)
            values, splits = self.objective(demand, masks)
            best = int(np.argmin(values))
            mask, value, split = masks[best], values[best], splits[best]
        else:
            mask, value, split = np.zeros(k, dtype=bool), np.inf, None
            while not mask.all():
                cand = np.repeat(mask[None], k, 0) | np.eye(k, dtype=bool)
                cand = cand[~mask]
                values, splits = self.objective(demand, cand)
                j = int(np.argmin(values))
                if mask.sum() >= self.min_devices and values[j] >= value:
                    break
                mask, value, split = cand[j], values[j], splits[j]
        return evaluate_allocation(
            demand, torch.from_numpy(mask), torch.from_numpy(split), round, float(value)
        )

    def update(self, allocation: Allocation) -> None:
        energy = allocation.energy_j
        self.virtual_queue = (self.virtual_queue + energy - self.energy_budget_j).clamp_min(0.0)
        self.energy_sum_j = self.energy_sum_j + energy
        self.rounds += 1

    def state_dict(self) -> dict[str, Any]:
        return {
            "virtual_queue": self.virtual_queue.tolist(),
            "energy_sum_j": self.energy_sum_j.tolist(),
            "rounds": self.rounds,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        k = self.virtual_queue.numel()
        self.virtual_queue = _vector("virtual_queue", state["virtual_queue"], k, 0.0)
        self.energy_sum_j = _vector("energy_sum_j", state["energy_sum_j"], k, 0.0)
        self.rounds = int(state["rounds"])


@dataclass
class ResourceAllocationConfig:
    """Which uplink allocation policy a training run uses (every field documented)."""

    policy: Literal["equal", "latency_optimal", "lyapunov"] = option(
        "latency_optimal", "uplink allocation: equal, latency_optimal or lyapunov"
    )
    lyapunov_v: float = option(1.0, "lyapunov: trade-off weight V (penalty vs. energy queues)")
    energy_budget_j: float = option(1.0, "lyapunov: average energy budget per device per round (J)")
    latency_weight: float = option(1.0, "lyapunov: progress worth of one second of latency (1/s)")
    min_devices: int = option(1, "lyapunov: least number of devices scheduled per round")
    exact_max_devices: int = option(12, "lyapunov: enumerate all subsets up to this K, else greedy")

    def __post_init__(self) -> None:
        allowed = ("equal", "latency_optimal", "lyapunov")
        if self.policy not in allowed:
            raise ConfigError(f"policy: {self.policy!r} is not one of {list(allowed)}")


def build_policy(
    config: ResourceAllocationConfig, num_devices: int, weights: Vector | None = None
) -> AllocationPolicy:
    """The policy ``config`` names, for ``num_devices`` devices with progress ``weights``."""
    if config.policy == "equal":
        return EqualBandwidth()
    if config.policy == "latency_optimal":
        return LatencyOptimal()
    return LyapunovScheduler(
        config.lyapunov_v,
        config.energy_budget_j,
        num_devices=num_devices,
        latency_weight=config.latency_weight,
        weights=weights,
        min_devices=config.min_devices,
        exact_max_devices=config.exact_max_devices,
    )
