"""A ledger of every simulated radio transfer: bits, airtime and energy, summed any way needed.

Each :class:`Transfer` is one payload on one link (or one broadcast) in one round. The
:class:`TransferLedger` keeps them in order and sums them by direction, device, round or payload
name. Totals are computed from the records every time (with :func:`math.fsum`), so they always
equal the sum of the records.

Summing ``seconds`` gives total *airtime*. Under FDMA the transfers of different devices in one
phase run in parallel, so the wall-clock time of a phase is the **maximum** over its records,
reported as ``max_seconds``.

>>> ledger = TransferLedger()
>>> _ = ledger.record(0, 1, "uplink", "embeddings", bits=8000, seconds=0.004, joules=0.0008)
>>> _ = ledger.record(0, None, "downlink", "gradients", bits=4000, seconds=0.001, joules=0.02)
>>> ledger.total()["bits"]
12000
>>> sorted(ledger.totals_by("direction"))
['downlink', 'uplink']
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch

from edgelam.network.link import TransferCost

__all__ = ["Direction", "Transfer", "TransferLedger"]

Direction = Literal["uplink", "downlink"]
_DIRECTIONS = ("uplink", "downlink")
_KEYS = ("round", "device", "direction", "what")


@dataclass(frozen=True)
class Transfer:
    """One payload sent over one link (or one broadcast) in one round.

    Attributes:
        round: Round (or step) index.
        device: Device index; ``None`` for a broadcast to all scheduled devices.
        direction: ``"uplink"`` (device to BS) or ``"downlink"`` (BS to device).
        what: Payload name, e.g. ``"embeddings"``, ``"gradients"``, ``"lora"``.
        bits: Payload size in bits.
        seconds: Airtime in seconds.
        joules: Transmit energy in joules.
    """

    round: int
    device: int | None
    direction: Direction
    what: str
    bits: int | float
    seconds: float
    joules: float

    def as_dict(self) -> dict[str, Any]:
        """The record as a plain, JSON-serialisable dict."""
        return asdict(self)


def _summary(records: Sequence[Transfer]) -> dict[str, Any]:
    bits = math.fsum(r.bits for r in records)
    return {
        "count": len(records),
        "bits": int(bits) if bits.is_integer() else bits,
        "seconds": math.fsum(r.seconds for r in records),
        "joules": math.fsum(r.joules for r in records),
        "max_seconds": max((r.seconds for r in records), default=0.0),
    }


class TransferLedger:
    """Ordered record of transfers with totals by direction, device, round or payload."""

    def __init__(self) -> None:
        self.records: list[Transfer] = []

    def __len__(self) -> int:
        return len(self.records)

    def record(
        self,
        round: int,
        device: int | None,
        direction: Direction,
        what: str,
        bits: float,
        seconds: float,
        joules: float,
    ) -> Transfer:
        """Append one transfer.

        Args:
            round: Round index.
            device: Device index, or ``None`` for a broadcast.
            direction: ``"uplink"`` or ``"downlink"``.
            what: Payload name.
            bits: Payload bits (stored as ``int`` when integral).
            seconds: Airtime (s), ``>= 0`` (``inf`` allowed for a dead link).
            joules: Energy (J), ``>= 0``.

        Returns:
            The stored :class:`Transfer`.

        Raises:
            ValueError: unknown direction, or a negative or NaN quantity.
        """
        if direction not in _DIRECTIONS:
            raise ValueError(f"direction: {direction!r} is not one of {list(_DIRECTIONS)}")
        bits, seconds, joules = float(bits), float(seconds), float(joules)
        for name, value in (("bits", bits), ("seconds", seconds), ("joules", joules)):
            if math.isnan(value) or value < 0:
                raise ValueError(f"{name}: must be >= 0, got {value}")
        item = Transfer(
            round=int(round),
            device=None if device is None else int(device),
            direction=direction,
            what=str(what),
            bits=int(bits) if bits.is_integer() else bits,
            seconds=seconds,
            joules=joules,
        )
        self.records.append(item)
        return item

    def record_cost(
        self,
        round: int,
        devices: Sequence[int] | torch.Tensor | None,
        direction: Direction,
        what: str,
        cost: TransferCost,
    ) -> list[Transfer]:
        """Append the transfers described by a :class:`~edgelam.network.TransferCost`.

        Args:
            round: Round index.
            devices: Device index of each element of ``cost`` (``[n]`` costs), or ``None`` for
                a scalar (broadcast) cost.
            direction: ``"uplink"`` or ``"downlink"``.
            what: Payload name.
            cost: Per-link costs ``[n]``, or one broadcast cost ``[]``.

        Returns:
            The stored transfers.

        Raises:
            ValueError: ``devices`` does not match the shape of ``cost``.
        """
        if cost.seconds.dim() == 0:
            if devices is not None:
                raise ValueError("devices: must be None for a scalar (broadcast) cost")
            fields = (cost.bits, cost.seconds, cost.joules)
            return [self.record(round, None, direction, what, *(float(f) for f in fields))]
        idx = torch.as_tensor(devices if devices is not None else [], dtype=torch.long).reshape(-1)
        if idx.numel() != cost.seconds.numel():
            raise ValueError(
                f"devices: {idx.numel()} indices for {cost.seconds.numel()} per-link costs"
            )
        rows = zip(
            idx.tolist(),
            cost.bits.tolist(),
            cost.seconds.tolist(),
            cost.joules.tolist(),
            strict=True,
        )
        return [self.record(round, d, direction, what, b, s, j) for d, b, s, j in rows]

    def select(self, **where: Any) -> list[Transfer]:
        """Records whose fields equal the given values, e.g. ``select(round=3, direction="uplink")``.

        Raises:
            ValueError: an unknown field name.
        """
        for key in where:
            if key not in _KEYS:
                raise ValueError(f"unknown field {key!r}; allowed: {list(_KEYS)}")
        return [r for r in self.records if all(getattr(r, k) == v for k, v in where.items())]

    def total(self, **where: Any) -> dict[str, Any]:
        """Sums over the (optionally filtered, as in :meth:`select`) records.

        Returns:
            ``{"count", "bits", "seconds", "joules", "max_seconds"}``.
        """
        return _summary(self.select(**where))

    def totals_by(
        self, key: Literal["round", "device", "direction", "what"]
    ) -> dict[Any, dict[str, Any]]:
        """Sums grouped by one field, in order of first appearance.

        Args:
            key: ``"round"``, ``"device"`` (``None`` = broadcasts), ``"direction"`` or
                ``"what"``.

        Returns:
            ``{value: {"count", "bits", "seconds", "joules", "max_seconds"}}``.

        Raises:
            ValueError: unknown ``key``.
        """
        if key not in _KEYS:
            raise ValueError(f"key: {key!r} is not one of {list(_KEYS)}")
        groups: dict[Any, list[Transfer]] = {}
        for r in self.records:
            groups.setdefault(getattr(r, key), []).append(r)
        return {value: _summary(items) for value, items in groups.items()}

    def summary(self, **where: Any) -> dict[str, Any]:
        """A flat dict for ``metrics.jsonl``: per-direction and overall sums.

        Args:
            **where: Optional filter as in :meth:`select`, e.g. ``round=3``.

        Returns:
            Keys ``{uplink,downlink,total}_{bits,seconds,joules,max_seconds}``.
        """
        out: dict[str, Any] = {}
        for direction in _DIRECTIONS:
            sums = self.total(**{**where, "direction": direction})
            out.update({f"{direction}_{k}": v for k, v in sums.items() if k != "count"})
        out.update({f"total_{k}": v for k, v in self.total(**where).items() if k != "count"})
        return out

    def as_dicts(self) -> list[dict[str, Any]]:
        """Every record as a plain dict, in order."""
        return [r.as_dict() for r in self.records]
