"""Charging each round of a wireless training run to the cell: latency, energy, bits.

A round (one split-FedFT iteration or one FedAvg round) is described by its per-device demand,
``[K]`` lists of ``uplink_bits``, ``downlink_bits``, ``device_flops`` and ``server_flops`` taken
from the protocol's own ledger. :class:`WirelessAccountant` turns it into a
:class:`~edgelam.training.resource_allocation.RoundDemand` of the round's link state
(``network.round(r)``), lets the allocation policy split the uplink band (and, for the Lyapunov
scheduler, decide beforehand who takes part, :meth:`WirelessAccountant.plan`), and keeps the
cumulative simulated time, bits and device energy.

A split-FedFT iteration that ends with a device sync has two phases run one after the other:
``train`` (the scheduled devices' chain, allocated by the policy) and ``sync`` (every device
sends its device-module state up and receives the mean; no compute; the band is split equally
under the ``equal`` policy, latency-optimally otherwise, since every device must take part).
The round latency is the sum of the phases' latencies; a device's energy is the sum of its
phases' energies, and the Lyapunov virtual queues are updated with that total.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from edgelam.network import Network, device_profile
from edgelam.training.resource_allocation import (
    Allocation,
    EqualBandwidth,
    LatencyOptimal,
    LyapunovScheduler,
    RoundDemand,
    build_policy,
    demand_from_network,
    evaluate_allocation,
)

__all__ = ["WirelessAccountant", "DEMAND_KEYS"]

DEMAND_KEYS = ("uplink_bits", "downlink_bits", "device_flops", "server_flops")
Demand = Mapping[str, Sequence[float]]


class WirelessAccountant:
    """Latency, energy and cumulative sums of a run's rounds over one simulated cell.

    Args:
        cfg: a :class:`~edgelam.experiments.wireless_training.WirelessTrainingConfig` (its
            ``network``, ``allocation``, ``device_profile`` and ``server_profile``).
        weights: ``[K]`` learning-progress weights :math:`w_k` of the Lyapunov scheduler (the
            devices' data shares :math:`n_k / n`).
    """

    def __init__(self, cfg: Any, weights: Sequence[float]) -> None:
        self.network = Network(cfg.network)
        self.num_devices = k = self.network.num_devices
        self.policy = build_policy(cfg.allocation, k, list(weights))
        equal = cfg.allocation.policy == "equal"
        self.sync_policy = EqualBandwidth() if equal else LatencyOptimal()
        self.device, self.server = (
            device_profile(cfg.device_profile),
            device_profile(cfg.server_profile),
        )
        self.simulated_time_s = 0.0
        self.uplink_bits = 0
        self.downlink_bits = 0
        self.energy_j = torch.zeros(k, dtype=torch.float64)
        self.rounds = 0

    @property
    def schedules(self) -> bool:
        """Whether the policy decides who takes part (the Lyapunov scheduler)."""
        return isinstance(self.policy, LyapunovScheduler)

    def demand(self, r: int, demand: Demand) -> RoundDemand:
        """The :class:`RoundDemand` of ``demand`` (missing FLOP keys: 0) in round ``r``."""
        return demand_from_network(
            self.network,
            self.network.round(r),
            uplink_bits=torch.as_tensor(demand["uplink_bits"], dtype=torch.float64),
            downlink_bits=torch.as_tensor(demand["downlink_bits"], dtype=torch.float64),
            device_flops=torch.as_tensor(demand.get("device_flops", 0.0), dtype=torch.float64),
            server_flops=torch.as_tensor(demand.get("server_flops", 0.0), dtype=torch.float64),
            device_profile=self.device,
            server_profile=self.server,
        )

    def plan(self, r: int, unit: Demand | None) -> Allocation | None:
        """The Lyapunov scheduler's allocation of round ``r`` from each device's ``unit`` demand
        (what it costs if it takes part); ``None`` for policies that schedule every device."""
        if not self.schedules:
            return None
        if unit is None:
            raise ValueError("plan: the Lyapunov scheduler needs the devices' unit demand")
        return self.policy.allocate(self.demand(r, unit), r)

    def charge(
        self, r: int, train: Demand, sync: Demand | None = None, planned: Allocation | None = None
    ) -> dict[str, Any]:
        """Charge round ``r``'s actual demand; returns the fields of its ``metrics.jsonl`` record.

        Args:
            r: round index (its link state is ``network.round(r)``).
            train: the per-device demand of the training phase.
            sync: the device-sync phase's per-device bits (split FedFT), if any.
            planned: the allocation :meth:`plan` made before the round ran (Lyapunov): its
                schedule and bandwidths are re-evaluated on the actual demand.

        Returns:
            ``latency_s`` (sum of the phases' max completion times), ``simulated_time_s``
            (cumulative), ``energy_j`` (``[K]``, J, device compute + uplink transmission),
            ``energy_total_j``, ``bandwidth_hz`` (``[K]``, training phase), ``phases``
            (``{name: Allocation.as_dict()}``), cumulative bits and, for the Lyapunov
            scheduler, ``virtual_queue`` (``[K]``, J) and ``objective``.
        """
        demand = self.demand(r, train)
        if planned is None:
            allocation = self.policy.allocate(demand, r)
        else:
            allocation = evaluate_allocation(
                demand, planned.scheduled, planned.bandwidth_hz, r, planned.objective
            )
        phases = {"train": allocation}
        if sync is not None and any(sync["uplink_bits"]):
            phases["sync"] = self.sync_policy.allocate(self.demand(r, sync), r)
        energy = sum(a.energy_j for a in phases.values())
        latency = sum(a.latency_s for a in phases.values())
        self.policy.update(dataclasses.replace(allocation, energy_j=energy))
        self.simulated_time_s += latency
        self.energy_j += energy
        self.rounds += 1
        for direction in ("uplink", "downlink"):
            bits = sum(sum(d[f"{direction}_bits"]) for d in (train, sync) if d is not None)
            setattr(self, f"{direction}_bits", getattr(self, f"{direction}_bits") + int(bits))
        out: dict[str, Any] = {
            "latency_s": latency,
            "simulated_time_s": self.simulated_time_s,
            "energy_j": energy.tolist(),
            "energy_total_j": float(energy.sum()),
            "bandwidth_hz": allocation.bandwidth_hz.tolist(),
            "phases": {
                n: {k: v for k, v in a.as_dict().items() if k != "round"} for n, a in phases.items()
            },  # fmt: skip
            "cumulative_uplink_bits": self.uplink_bits,
            "cumulative_downlink_bits": self.downlink_bits,
            "cumulative_bits": self.uplink_bits + self.downlink_bits,
        }
        if self.schedules:
            out["virtual_queue"] = self.policy.virtual_queue.tolist()
            out["objective"] = allocation.objective
        return out

    def lyapunov_summary(self) -> dict[str, Any] | None:
        """Per-device time-average energy per round against the budget (Lyapunov only)."""
        if not self.schedules:
            return None
        avg, budget = self.policy.average_energy_j, self.policy.energy_budget_j
        met = avg <= budget * (1 + 1e-9)
        ratio = avg / budget.clamp_min(1e-300)
        return {
            "energy_budget_j": budget.tolist(),
            "average_energy_j": avg.tolist(),
            "budget_ratio": ratio.tolist(),
            "budget_met": met.tolist(),
            "all_budgets_met": bool(met.all()),
            "max_budget_ratio": float(ratio.max()),
            "final_virtual_queue": self.policy.virtual_queue.tolist(),
            # (1/T) sum_t (E_k(t) - Ebar_k) <= Q_k(T) / T: the largest possible overshoot
            "queue_bound_j": (self.policy.virtual_queue / max(self.policy.rounds, 1)).tolist(),
        }
