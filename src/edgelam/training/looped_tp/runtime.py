"""Runtimes of looped TP: every role in one process, or one process per role (torch.distributed).

:class:`~edgelam.training.looped_tp.tp.LoopedTP` is written against :class:`TPLink`. Every
process calls every method in the same order; a method returns what the roles of *this*
process receive. Payloads cross the (simulated) radio links and their bits are counted by the
:class:`TrafficMeter` on the server's process; control messages (:meth:`TPLink.gather`,
:meth:`TPLink.agree`: telemetry, set-up, the export) are the simulation's own and not counted.

* :class:`InProcessTPLink`: a broadcast is one copy per device, a reduce the sum of the
  devices' partials in device order.
* :class:`TorchDistTPLink`: rank 0 is the server, rank ``k + 1`` device ``k`` (gloo on CPU).
  A broadcast is ``dist.broadcast`` from rank 0; a reduce is one ``send`` per device and, at
  the server, the sum in device order -- the same arithmetic as in-process, so both runtimes
  give the same numbers.
"""

from __future__ import annotations

import abc
from collections import defaultdict
from typing import Any

import torch
import torch.distributed as dist

from edgelam.distributed.link import SERVER
from edgelam.network import tensor_bits

__all__ = ["SERVER", "InProcessTPLink", "TPLink", "TorchDistTPLink", "TrafficMeter"]


class TrafficMeter:
    """Bits each device sends (uplink) and receives (downlink broadcasts), by payload name."""

    def __init__(self, num_devices: int) -> None:
        self.num_devices = num_devices
        self.reset()

    def reset(self) -> None:
        self.uplink_bits = [0] * self.num_devices
        self.downlink_bits = [0] * self.num_devices
        self.by_what: dict[str, int] = defaultdict(int)
        self.transfers = 0

    def uplink(self, k: int, what: str, tensor: torch.Tensor) -> None:
        bits = tensor_bits(tensor)
        self.uplink_bits[k] += bits
        self.by_what[f"uplink:{what}"] += bits
        self.transfers += 1

    def broadcast(self, what: str, tensor: torch.Tensor) -> None:
        bits = tensor_bits(tensor)
        self.downlink_bits = [b + bits for b in self.downlink_bits]
        self.by_what[f"downlink:{what}"] += bits
        self.transfers += 1

    def take(self) -> dict[str, Any]:
        """The counts so far (JSON-ready), then reset."""
        out = {
            "uplink_bits": list(self.uplink_bits),
            "downlink_bits": list(self.downlink_bits),
            "by_what": dict(sorted(self.by_what.items())),
            "transfers": self.transfers,
        }
        self.reset()
        return out


class TPLink(abc.ABC):
    """Moves looped-TP payloads between the server and ``num_devices`` devices."""

    num_devices: int
    meter: TrafficMeter | None
    """Counts the payloads; on the server's process only."""

    @abc.abstractmethod
    def owns(self, role: int) -> bool:
        """Whether this process runs ``role`` (:data:`SERVER` or a device index)."""

    def devices(self) -> list[int]:
        """The device indices this process runs."""
        return [k for k in range(self.num_devices) if self.owns(k)]

    @abc.abstractmethod
    def broadcast(
        self, tensor: torch.Tensor | None, shape: tuple[int, ...], what: str
    ) -> dict[int, torch.Tensor]:
        """Server -> every device; ``{k: received copy}`` for this process's devices.

        ``tensor`` is given on the server's process (None elsewhere), of ``shape``.
        """

    @abc.abstractmethod
    def reduce(
        self, parts: dict[int, torch.Tensor], shape: tuple[int, ...], what: str
    ) -> torch.Tensor | None:
        """Every device -> server; the sum over devices (in device order) on the server."""

    @abc.abstractmethod
    def send_labels(self, labels: torch.Tensor | None) -> torch.Tensor | None:
        """Device 0 -> server: the labels of the masked entries (given on device 0's process)."""

    @abc.abstractmethod
    def gather(self, obj: Any) -> list[Any] | None:
        """Control: every process's ``obj``, in rank order (server first), on the server."""

    @abc.abstractmethod
    def agree(self, obj: Any) -> Any:
        """Control: the server's ``obj`` on every process."""


class InProcessTPLink(TPLink):
    """Every role in this process.

    Args:
        num_devices: ``K``.
    """

    def __init__(self, num_devices: int) -> None:
        self.num_devices = num_devices
        self.meter = TrafficMeter(num_devices)

    def owns(self, role: int) -> bool:
        return True

    def broadcast(self, tensor, shape, what):
        _check(tensor, shape, what)
        self.meter.broadcast(what, tensor)
        return {k: tensor.detach().clone() for k in range(self.num_devices)}

    def reduce(self, parts, shape, what):
        total = None
        for k in range(self.num_devices):
            _check(parts[k], shape, what)
            self.meter.uplink(k, what, parts[k])
            total = parts[k].detach().clone() if total is None else total.add_(parts[k].detach())
        return total

    def send_labels(self, labels):
        self.meter.uplink(0, "labels", labels)
        return labels.detach().clone()

    def gather(self, obj):
        return [obj]

    def agree(self, obj):
        return obj


class TorchDistTPLink(TPLink):
    """One process per role: rank 0 the server, rank ``k + 1`` device ``k``.

    Args:
        dtype: dtype of the activations and gradients exchanged.

    Raises:
        RuntimeError: the default process group is not initialised, or has fewer than 2 ranks.
    """

    def __init__(self, dtype: torch.dtype) -> None:
        if not dist.is_initialized():
            raise RuntimeError("TorchDistTPLink: call torch.distributed.init_process_group first")
        self.rank, world = dist.get_rank(), dist.get_world_size()
        if world < 2:
            raise RuntimeError(f"TorchDistTPLink: need a server and a device, world={world}")
        self.num_devices, self.dtype = world - 1, dtype
        self.meter = TrafficMeter(self.num_devices) if self.rank == 0 else None

    def owns(self, role: int) -> bool:
        return (0 if role == SERVER else role + 1) == self.rank

    def broadcast(self, tensor, shape, what):
        if self.rank == 0:
            _check(tensor, shape, what)
            buf = tensor.detach().contiguous()
            self.meter.broadcast(what, buf)
        else:
            buf = torch.empty(shape, dtype=self.dtype)
        dist.broadcast(buf, src=0)
        return {} if self.rank == 0 else {self.rank - 1: buf}

    def reduce(self, parts, shape, what):
        if self.rank != 0:
            part = parts[self.rank - 1]
            _check(part, shape, what)
            dist.send(part.detach().contiguous(), dst=0)
            return None
        total = None
        for k in range(self.num_devices):
            buf = torch.empty(shape, dtype=self.dtype)
            dist.recv(buf, src=k + 1)
            self.meter.uplink(k, what, buf)
            total = buf if total is None else total.add_(buf)
        return total

    def send_labels(self, labels):
        if self.rank == 1:
            dist.send_object_list(
                [(tuple(labels.shape), str(labels.dtype).removeprefix("torch."))], dst=0
            )
            dist.send(labels.contiguous(), dst=0)
            return None
        if self.rank != 0:
            return None
        box: list[Any] = [None]
        dist.recv_object_list(box, src=1)
        shape, dtype = box[0]
        buf = torch.empty(shape, dtype=getattr(torch, dtype))
        dist.recv(buf, src=1)
        self.meter.uplink(0, "labels", buf)
        return buf

    def gather(self, obj):
        out = [None] * (self.num_devices + 1) if self.rank == 0 else None
        dist.gather_object(obj, out, dst=0)
        return out

    def agree(self, obj):
        box = [obj if self.rank == 0 else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def _check(tensor: torch.Tensor | None, shape: tuple[int, ...], what: str) -> None:
    if tensor is None or tuple(tensor.shape) != tuple(shape):
        got = None if tensor is None else list(tensor.shape)
        raise ValueError(f"{what}: expected a payload of shape {list(shape)}, got {got}")
