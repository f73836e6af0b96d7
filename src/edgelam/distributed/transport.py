"""Transports: how training protocols move tensors between the server and its clients.

A protocol (FedAvg, split FedFT, ...) never moves a tensor itself: it asks its transport to send
a named dict of tensors down to clients or up to the server. The transport applies the
configured quantisation (what the receiver gets is what a real link would deliver) and records
every payload in a :class:`~edgelam.network.TransferLedger` -- bits always; airtime and energy
from the :class:`~edgelam.network.Network` link model when one is given.

:class:`InProcessTransport` is the default runtime: every party lives in this process, so a
"send" is a (quantised) copy. A ``torch.distributed`` transport implements the same methods with
point-to-point and collective calls (issue: split FedFT runtime).

>>> import torch
>>> from edgelam.network import TransferLedger
>>> t = InProcessTransport(TransferLedger(), quantization="fp16")
>>> got = t.uplink(0, 3, {"w": torch.ones(4)}, "lora")
>>> t.ledger.total()["bits"]
64
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch

from edgelam.network import Network, TransferLedger, quantize, tensor_bits

__all__ = ["InProcessTransport", "state_bits"]

State = Mapping[str, torch.Tensor]


def state_bits(state: State, quantization: str | None) -> int:
    """Bits of a dict of tensors: their own dtypes, or all under ``quantization``."""
    return sum(tensor_bits(t, quantization=quantization) for t in state.values())


class InProcessTransport:
    """Server-client transport within one process, with bit/latency/energy accounting.

    Args:
        ledger: where transfers are recorded.
        network: radio links (client ``k`` is device ``k``); ``None`` records bits only.
        quantization: ``"fp32"``, ``"fp16"``, ``"bf16"``, ``"int8"``, or ``None`` to send
            tensors in their own dtype unchanged.
    """

    def __init__(
        self,
        ledger: TransferLedger,
        network: Network | None = None,
        quantization: str | None = None,
    ) -> None:
        self.ledger = ledger
        self.network = network
        self.quantization = None if quantization == "fp32" else quantization

    def _deliver(self, state: State) -> dict[str, torch.Tensor]:
        out = {}
        for name, t in state.items():
            t = t.detach()
            if self.quantization is not None and t.is_floating_point():
                t = quantize(t, self.quantization, straight_through=False)
            out[name] = t.clone()
        return out

    def _bits(self, state: State) -> int:
        if self.quantization is None:
            return sum(tensor_bits(t) for t in state.values())
        return state_bits(state, self.quantization)

    def downlink(
        self,
        round: int,
        clients: Sequence[int],
        state: State,
        what: str,
        mode: Literal["broadcast", "unicast"] = "broadcast",
    ) -> dict[str, torch.Tensor]:
        """Send ``state`` from the server to ``clients``; returns what each client receives."""
        bits = self._bits(state)
        clients = list(clients)
        if self.network is None:
            if mode == "broadcast":
                self.ledger.record(round, None, "downlink", what, bits, 0.0, 0.0)
            else:
                for c in clients:
                    self.ledger.record(round, c, "downlink", what, bits, 0.0, 0.0)
        elif mode == "broadcast":
            cost = self.network.downlink_cost(bits, round, clients, mode="broadcast")
            self.ledger.record_cost(round, None, "downlink", what, cost)
        else:
            cost = self.network.downlink_cost(bits, round, clients, mode="unicast")
            self.ledger.record_cost(round, clients, "downlink", what, cost)
        return self._deliver(state)

    def uplink(self, round: int, client: int, state: State, what: str) -> dict[str, torch.Tensor]:
        """Send ``state`` from ``client`` to the server; returns what the server receives."""
        bits = self._bits(state)
        if self.network is None:
            self.ledger.record(round, client, "uplink", what, bits, 0.0, 0.0)
        else:
            cost = self.network.uplink_cost(bits, round, [client])
            self.ledger.record_cost(round, [client], "uplink", what, cost)
        return self._deliver(state)
