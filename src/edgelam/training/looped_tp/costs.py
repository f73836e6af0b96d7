"""What one looped-TP training iteration costs: FLOPs, bits, memory and simulated latency.

A :class:`Partition` gives device ``k`` ``h_k`` heads, ``f_k`` FFN columns and ``e_k``
embedding columns (contiguous, in device order). Everything below is linear in those counts:

**Rounds.** One iteration (forward and backward of one batch) is a sequence of synchronous
rounds (:meth:`TPWorkload.rounds`); in round ``r`` the server broadcasts ``D_r`` bits, every
device computes ``w_r n_k`` FLOPs (``n_k`` = its units of the round's kind) and sends ``U_r``
bits up (device 0 also the ``labels``: the masked entries' targets, once per iteration); the
server merges. With FDMA bandwidth ``b_k`` of the uplink band ``B`` the round takes

.. math::

    \\tau_r = \\frac{D_r}{R_{bc}} + \\max_k \\Big( \\frac{w_r n_k}{\\eta_k F_k}
              + \\frac{U_{r,k}}{b_k \\log_2(1 + c_k / b_k)} \\Big),

and the iteration :math:`T = \\sum_r \\tau_r + t_{server}` (:func:`iteration_latency`), where
``R_bc`` is the broadcast downlink rate (the weakest device's), ``c_k`` device ``k``'s uplink
rate constant (:class:`EdgeSystem`) and ``t_server`` the head's FLOPs at the server's speed.
Rounds per iteration: embedding forward (1), attention and FFN forward (L each), FFN and
attention backward (L each), embedding backward (1, nothing sent up).

**FLOPs** (multiply-add = 2, matrix products only, as :func:`edgelam.network.count_flops`):
per head forward :math:`8BTd\\,d_h + 4BT^2 d_h`, per FFN column :math:`4BTd`, per embedding
column :math:`2BT(d_{in} + d)` (csi) or :math:`2BTd` (mlm, a table look-up); backward twice the
forward, except the embedding's (no gradient w.r.t. the raw inputs): :math:`2BT(d_{in} + 2d)`
or :math:`4BTd`. Layer norms, softmax, GELU and AdamW are elementwise and not counted.

**Memory** of device ``k`` (bytes, :meth:`TPWorkload.device_memory`): parameters, gradients
and AdamW state (two moments plus one float32 ``step`` per tensor) of its slice, and the
activations its slice saves for backward over all L loop iterations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from edgelam.config import ConfigError
from edgelam.network import DeviceMemoryError, DeviceProfile, Network, achievable_rate, snr_db
from edgelam.network.link import db_to_linear
from edgelam.network.topology import LinkState
from edgelam.training.bandwidth_split import rate_bps
from edgelam.training.looped_tp.model import LoopedLAMConfig

__all__ = [
    "EdgeSystem",
    "LatencyBreakdown",
    "Partition",
    "Round",
    "TPWorkload",
    "check_memory",
    "iteration_latency",
    "mean_link_state",
]

_UNITS = ("heads", "ffn", "embed")


def _split_range(counts: Sequence[int], k: int) -> tuple[int, int]:
    lo = sum(counts[:k])
    return lo, lo + counts[k]


@dataclass(frozen=True)
class Partition:
    """Which part of the shared block each device holds (contiguous ranges, device order).

    Attributes:
        heads: ``h_k``, attention heads of device ``k`` (heads ``[sum h_<k, + h_k)``).
        ffn_columns: ``f_k``, FFN columns (rows of the up-, columns of the down-projection).
        embed_columns: ``e_k``, columns of the factorised embedding's ``E``.

    Every device holds at least one unit of each kind.

    >>> p = Partition((1, 3), (5, 3), (2, 2))
    >>> p.head_range(1), p.ffn_range(1)
    ((1, 4), (5, 8))
    """

    heads: tuple[int, ...]
    ffn_columns: tuple[int, ...]
    embed_columns: tuple[int, ...]

    def __post_init__(self) -> None:
        k = len(self.heads)
        for name in ("heads", "ffn_columns", "embed_columns"):
            counts = tuple(int(c) for c in getattr(self, name))
            object.__setattr__(self, name, counts)
            if len(counts) != k or k < 1 or min(counts) < 1:
                raise ConfigError(
                    f"partition.{name}: need one count >= 1 per device ({k} devices), got {list(counts)}"
                )

    @property
    def num_devices(self) -> int:
        return len(self.heads)

    def units(self, kind: str) -> tuple[int, ...]:
        """Counts of ``kind`` (``heads``, ``ffn`` or ``embed``) per device."""
        return {"heads": self.heads, "ffn": self.ffn_columns, "embed": self.embed_columns}[kind]

    def head_range(self, k: int) -> tuple[int, int]:
        return _split_range(self.heads, k)

    def ffn_range(self, k: int) -> tuple[int, int]:
        return _split_range(self.ffn_columns, k)

    def embed_range(self, k: int) -> tuple[int, int]:
        return _split_range(self.embed_columns, k)

    def check(self, cfg: LoopedLAMConfig) -> None:
        """Raise ``ConfigError`` unless the counts add up to the model's H, FFN and E."""
        for name, total in (("heads", cfg.n_head), ("ffn_columns", cfg.ffn_dim),
                            ("embed_columns", cfg.embed_dim)):  # fmt: skip
            if sum(getattr(self, name)) != total:
                raise ConfigError(
                    f"partition.{name}: {list(getattr(self, name))} sums to "
                    f"{sum(getattr(self, name))}, the model has {total}"
                )

    def as_dict(self) -> dict[str, list]:
        """Counts and ``[lo, hi)`` ranges per device (JSON-ready)."""
        k = range(self.num_devices)
        return {
            "heads": list(self.heads),
            "ffn_columns": list(self.ffn_columns),
            "embed_columns": list(self.embed_columns),
            "head_ranges": [list(self.head_range(i)) for i in k],
            "ffn_ranges": [list(self.ffn_range(i)) for i in k],
            "embed_ranges": [list(self.embed_range(i)) for i in k],
        }


@dataclass(frozen=True)
class Round:
    """One synchronous round of an iteration (see the module docstring).

    Attributes:
        name: e.g. ``attention_forward``.
        unit: which counts the devices' compute scales with: ``heads``, ``ffn`` or ``embed``.
        flops_per_unit: :math:`w_r`, device FLOPs per unit.
        uplink_bits: :math:`U_r`, bits every device sends up.
        downlink_bits: :math:`D_r`, bits the server broadcasts first.
        count: how many times the round occurs per iteration.
    """

    name: str
    unit: str
    flops_per_unit: float
    uplink_bits: float
    downlink_bits: float
    count: int


@dataclass(frozen=True)
class TPWorkload:
    """The analytic costs of one training iteration of a model on a batch.

    Args:
        cfg: the model.
        batch_size: ``B``.
        dtype_bytes: bytes per element of parameters, activations and payloads (4: fp32).
        label_bits: bits of the labels device 0 sends each iteration.
    """

    cfg: LoopedLAMConfig
    batch_size: int
    dtype_bytes: int = 4
    label_bits: float = 0.0

    @property
    def tokens(self) -> int:
        """``B T``."""
        return self.batch_size * self.cfg.seq_len

    def rounds(self) -> list[Round]:
        """The rounds of one iteration, in order of first occurrence."""
        c, bt = self.cfg, self.tokens
        d, dh, t = c.d_model, c.head_dim, c.seq_len
        act = bt * d * self.dtype_bytes * 8  # one [B, T, d] payload
        head = 8 * bt * d * dh + 4 * bt * t * dh
        col = 4 * bt * d
        din = c.input_dim if c.task == "csi" else 0
        embed_f, embed_b = 2 * bt * (din + d), 2 * bt * (din + 2 * d)
        L = c.loops
        return [
            Round("embed_forward", "embed", embed_f, act, 0.0, 1),
            Round("attention_forward", "heads", head, act, act, L),
            Round("ffn_forward", "ffn", col, act, act, L),
            Round("ffn_backward", "ffn", 2 * col, act, act, L),
            Round("attention_backward", "heads", 2 * head, act, act, L),
            Round("embed_backward", "embed", embed_b, 0.0, act, 1),
        ]

    def server_flops(self) -> float:
        """Head forward and backward (w.r.t. its weights and input) at the server."""
        return 6.0 * self.tokens * self.cfg.d_model * self.cfg.output_dim

    def uplink_bits(self, r: Round, k: int) -> float:
        """Bits device ``k`` sends up in round ``r`` (the labels ride on device 0's embedding)."""
        extra = self.label_bits if (k == 0 and r.name == "embed_forward") else 0.0
        return r.uplink_bits + extra

    def memory_per_unit(self) -> dict[str, dict[str, float]]:
        """``{kind: {"parameters": bytes/unit, "activations": bytes/unit}}`` (see device_memory)."""
        c, bt, by = self.cfg, self.tokens, self.dtype_bytes
        d, dh = c.d_model, c.head_dim
        embed_params = (c.input_dim + 1 + d) if c.task == "csi" else (c.vocab_size + d)
        return {
            "heads": {"parameters": by * (4 * d * dh + 3 * dh),
                      "activations": by * c.loops * (4 * bt * dh + bt * c.seq_len)},
            "ffn": {"parameters": by * (2 * d + 1), "activations": by * c.loops * 2 * bt},
            "embed": {"parameters": by * embed_params, "activations": by * bt},
        }  # fmt: skip

    def device_flops(self, partition: Partition, k: int) -> int:
        """FLOPs device ``k`` computes per iteration (forward and backward, all rounds)."""
        return int(
            sum(r.count * r.flops_per_unit * partition.units(r.unit)[k] for r in self.rounds())
        )

    def param_tensors(self) -> int:
        """Parameter tensors of a device slice (each carries one AdamW ``step`` scalar)."""
        return 13 if self.cfg.task == "csi" else 12

    def fixed_activation_bytes(self) -> int:
        """Activations of a device that do not depend on its share.

        The received ``[B, T, d]`` inputs of attention and FFN at every loop iteration, and the
        raw inputs (csi: ``[B, T, 4F]`` features; mlm: int64 ids).
        """
        c, bt = self.cfg, self.tokens
        raw = bt * c.input_dim * self.dtype_bytes if c.task == "csi" else bt * 8
        return 2 * c.loops * bt * c.d_model * self.dtype_bytes + raw

    def device_memory(self, partition: Partition, k: int) -> dict[str, int]:
        """Bytes device ``k`` needs: parameters, gradients, optimizer (AdamW), activations."""
        per = self.memory_per_unit()
        params = sum(per[u]["parameters"] * partition.units(u)[k] for u in _UNITS)
        acts = self.fixed_activation_bytes() + sum(
            per[u]["activations"] * partition.units(u)[k] for u in _UNITS
        )
        out = {
            "parameters": int(params),
            "gradients": int(params),
            "optimizer": int(2 * params + 4 * self.param_tensors()),
            "activations": int(acts),
        }
        out["total"] = sum(out.values())
        return out


@dataclass(frozen=True)
class EdgeSystem:
    """The devices, their uplinks, the broadcast downlink and the server.

    Attributes:
        devices: one :class:`DeviceProfile` per device (speed and memory).
        rate_constant_hz: :math:`c_k = s_k b_{ref}/\\Gamma` (Hz): device ``k``'s uplink rate
            with bandwidth ``b`` is :math:`b \\log_2(1 + c_k/b)` (noise grows with the band).
        total_bandwidth_hz: :math:`B`, the uplink band split among the devices (FDMA).
        downlink_rate_bps: :math:`R_{bc}`, broadcast rate of the server's downlink.
        server: the edge server's profile.
    """

    devices: tuple[DeviceProfile, ...]
    rate_constant_hz: tuple[float, ...]
    total_bandwidth_hz: float
    downlink_rate_bps: float
    server: DeviceProfile

    def __post_init__(self) -> None:
        if len(self.devices) != len(self.rate_constant_hz) or not self.devices:
            raise ConfigError("devices: need one rate constant per device, and >= 1 device")
        if (
            min(self.rate_constant_hz) <= 0
            or self.total_bandwidth_hz <= 0
            or self.downlink_rate_bps <= 0
        ):
            raise ConfigError("rate_constant_hz: rates and bandwidths must be > 0")

    @property
    def num_devices(self) -> int:
        return len(self.devices)

    @classmethod
    def from_network(cls, network: Network, devices: Sequence[DeviceProfile],
                     server: DeviceProfile, state: LinkState | None = None) -> EdgeSystem:  # fmt: skip
        """Links of ``network`` in ``state`` (default: the mean state, no small-scale fading).

        The uplink band is ``K x uplink_bandwidth_hz``; ``c_k`` follows from the device's
        uplink SNR over ``uplink_bandwidth_hz``; the downlink broadcasts over the whole
        downlink band at the weakest device's SNR (:meth:`Network.downlink_rate`).
        """
        cfg, k = network.config, network.num_devices
        if len(devices) != k:
            raise ConfigError(f"devices: {len(devices)} profiles for a network of {k} devices")
        state = state or mean_link_state(network)
        snr = db_to_linear(state.uplink_snr_db - cfg.rate_gap_db)
        return cls(
            devices=tuple(devices),
            rate_constant_hz=tuple(float(s) * cfg.uplink_bandwidth_hz for s in snr),
            total_bandwidth_hz=k * cfg.uplink_bandwidth_hz,
            downlink_rate_bps=float(network.downlink_rate(state, mode="broadcast")),
            server=server,
        )


def mean_link_state(network: Network) -> LinkState:
    """The link state with unit small-scale fading gains (path loss and shadowing only)."""
    cfg, ones = network.config, torch.ones(network.num_devices, dtype=torch.float64)
    loss = network.large_scale_loss_db
    ul = snr_db(cfg.device_tx_power_dbm, loss, network.uplink_noise_dbm, ones, cfg.antenna_gain_db)
    dl = snr_db(network.downlink_power_per_device_dbm, loss, network.downlink_noise_dbm, ones,
                cfg.antenna_gain_db)  # fmt: skip
    return LinkState(None, ones, ones, ul, dl,
                     achievable_rate(cfg.uplink_bandwidth_hz, ul, cfg.rate_gap_db),
                     achievable_rate(cfg.downlink_bandwidth_hz, dl, cfg.rate_gap_db))  # fmt: skip


@dataclass(frozen=True)
class LatencyBreakdown:
    """Simulated latency of one iteration (seconds).

    Attributes:
        total_s: :math:`T`, the iteration's latency.
        critical_compute_s / critical_uplink_s: compute and uplink airtime of the slowest
            device of each round, summed over rounds.
        downlink_s: broadcast airtime, summed over rounds.
        server_s: the server's compute.
        device_compute_s / device_uplink_s: per device, summed over rounds (its own work).
        rounds: per round name, :math:`\\tau_r` times its count.
    """

    total_s: float
    critical_compute_s: float
    critical_uplink_s: float
    downlink_s: float
    server_s: float
    device_compute_s: tuple[float, ...]
    device_uplink_s: tuple[float, ...]
    rounds: dict[str, float]

    def as_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def iteration_latency(workload: TPWorkload, system: EdgeSystem, partition: Partition,
                      bandwidth_hz: Sequence[float]) -> LatencyBreakdown:  # fmt: skip
    """:math:`T` of one iteration under ``partition`` and the uplink split ``bandwidth_hz``.

    Raises:
        ConfigError: the bandwidths do not match the devices or exceed the band.
    """
    b = np.asarray(bandwidth_hz, dtype=np.float64)
    kk = system.num_devices
    if b.shape != (kk,) or (b <= 0).any() or b.sum() > system.total_bandwidth_hz * (1 + 1e-9):
        raise ConfigError(
            f"bandwidth_hz: need {kk} positive values summing to <= {system.total_bandwidth_hz}, got {b.tolist()}"
        )
    rate = rate_bps(b, np.asarray(system.rate_constant_hz))
    speed = np.array([d.sustained_flops for d in system.devices])
    comp_k, up_k = np.zeros(kk), np.zeros(kk)
    total = crit_c = crit_u = down = 0.0
    rounds = {}
    for r in workload.rounds():
        comp = r.flops_per_unit * np.array(partition.units(r.unit)) / speed
        up = np.array([workload.uplink_bits(r, k) for k in range(kk)]) / rate
        worst = int(np.argmax(comp + up))
        tau = r.downlink_bits / system.downlink_rate_bps + comp[worst] + up[worst]
        rounds[r.name] = r.count * tau
        total += r.count * tau
        crit_c, crit_u = crit_c + r.count * comp[worst], crit_u + r.count * up[worst]
        down += r.count * r.downlink_bits / system.downlink_rate_bps
        comp_k, up_k = comp_k + r.count * comp, up_k + r.count * up
    server = workload.server_flops() / system.server.sustained_flops
    return LatencyBreakdown(total + server, crit_c, crit_u, down, server,
                            tuple(comp_k.tolist()), tuple(up_k.tolist()), rounds)  # fmt: skip


def check_memory(
    workload: TPWorkload, system: EdgeSystem, partition: Partition
) -> list[dict[str, int]]:
    """Per-device memory of ``partition``; raise if a device's share does not fit.

    Raises:
        DeviceMemoryError: naming the first device that does not fit, its need and its memory.
    """
    out = []
    for k, dev in enumerate(system.devices):
        mem = workload.device_memory(partition, k)
        if mem["total"] > dev.memory_bytes:
            raise DeviceMemoryError(
                f"device {k} ({dev.name!r}): its share (heads {partition.heads[k]}, FFN columns "
                f"{partition.ffn_columns[k]}, embedding columns {partition.embed_columns[k]}) "
                f"needs {mem['total']} bytes ({_mib(mem)}) but has memory_bytes={dev.memory_bytes}"
            )
        out.append(mem)
    return out


def _mib(mem: dict[str, int]) -> str:
    return ", ".join(f"{k} {v / 2**20:.2f} MiB" for k, v in mem.items() if k != "total")
