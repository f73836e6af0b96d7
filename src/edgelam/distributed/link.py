"""The link abstraction of split FedFT: how roles (server, devices) exchange payloads.

A protocol written against :class:`Link` runs unchanged in one process (:class:`InProcessLink`)
or across processes (:class:`~edgelam.distributed.dist_transport.TorchDistributedLink`): every
process calls every method with the same arguments, and only the process owning the sending
role gives the payload.
"""

from __future__ import annotations

import abc
from typing import Any

import torch

from edgelam.distributed.transport import InProcessTransport
from edgelam.network import TransferLedger

__all__ = ["SERVER", "Link", "InProcessLink"]

SERVER = -1
"""Role index of the edge server; devices are ``0 .. K-1``."""

State = dict[str, torch.Tensor]


class Link(abc.ABC):
    """Moves payloads between the server and the devices; knows which roles this process owns.

    Every method is called by every process with the same arguments but ``payload`` / ``obj``,
    which only the sending role's process gives (others pass ``None``).
    """

    num_devices: int
    transport: InProcessTransport | None
    """Quantises and records payloads; set on the process that owns the server."""

    @abc.abstractmethod
    def owns(self, role: int) -> bool:
        """Whether this process runs ``role`` (:data:`SERVER` or a device index)."""

    @abc.abstractmethod
    def exchange(
        self, src: int, dst: int, payload: State | None, what: str, iteration: int
    ) -> State | None:
        """Send ``payload`` from ``src`` to ``dst`` over the simulated radio link (one of them is
        the server); returns what ``dst`` receives (quantised) on ``dst``'s process."""

    @abc.abstractmethod
    def report(self, src: int, dst: int, obj: Any) -> Any:
        """Control message (telemetry, not a radio payload: no bits recorded); ``obj`` on ``dst``."""

    @abc.abstractmethod
    def agree(self, obj: Any) -> Any:
        """The server's ``obj`` (e.g. the schedule), returned on every process."""

    @property
    def ledger(self) -> TransferLedger:
        """The server's transfer ledger."""
        if self.transport is None:
            raise RuntimeError("the transfer ledger lives on the server's process")
        return self.transport.ledger

    @staticmethod
    def serialize(payload: State | None, src: int, what: str) -> State:
        """Payload tensors as sent: detached and contiguous (a received tensor is dense, and a
        tensor's memory layout decides e.g. the order in which dropout draws its mask).

        Raises:
            ValueError: the sender gave no payload.
        """
        if payload is None:
            raise ValueError(f"exchange {what!r}: the sender ({src}) gave no payload")
        return {name: t.detach().contiguous() for name, t in payload.items()}

    def check_pair(self, src: int, dst: int) -> None:
        """Raise unless exactly one of ``src``/``dst`` is the server and the other a device."""
        device = dst if src == SERVER else src
        if (src == SERVER) == (dst == SERVER) or not 0 <= device < self.num_devices:
            raise ValueError(f"exchange: {src} -> {dst} is not between the server and a device")


class InProcessLink(Link):
    """Every role in this process: an exchange is a quantised, recorded copy.

    Args:
        num_devices: ``K``.
        transport: quantisation and ledger (default: a new ledger, no quantisation).
    """

    def __init__(self, num_devices: int, transport: InProcessTransport | None = None) -> None:
        self.num_devices = num_devices
        self.transport = transport or InProcessTransport(TransferLedger())

    def owns(self, role: int) -> bool:
        return True

    def exchange(
        self, src: int, dst: int, payload: State | None, what: str, iteration: int
    ) -> State | None:
        self.check_pair(src, dst)
        payload = self.serialize(payload, src, what)
        if src == SERVER:
            return self.transport.downlink(iteration, [dst], payload, what, mode="unicast")
        return self.transport.uplink(iteration, src, payload, what)

    def report(self, src: int, dst: int, obj: Any) -> Any:
        return obj

    def agree(self, obj: Any) -> Any:
        return obj
