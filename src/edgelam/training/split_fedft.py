"""Split federated fine-tuning (split FedFT) with LoRA: one algorithm, any runtime.

The model is split (:func:`~edgelam.training.split.split_model`): each device ``k`` holds a copy
of the light embedding and task modules and its own data; the edge server holds the heavy
backbone, frozen but for its LoRA matrices. One iteration, for the scheduled devices ``S``
(weights :math:`w_k = n_k / \\sum_{j \\in S} n_j`):

1. device ``k``: embeddings :math:`E_k = \\mathrm{emb}(x_k)` ``[B_k, L, d]`` -> UP;
2. server: representations :math:`R_k = \\mathrm{backbone}(E_k)` ``[B_k, L, d]`` -> DOWN (unicast);
3. device ``k``: loss :math:`L_k = \\ell(\\mathrm{task}(R_k), y_k)`, task-module gradient and
   the Jacobian vectors :math:`J_k = \\partial L_k / \\partial R_k` ``[B_k, L, d]`` -> UP;
4. server: :math:`g_\\theta = \\sum_k w_k J_k^\\top \\partial R_k / \\partial \\theta` into the
   LoRA matrices; with ``embedding_grad`` also :math:`G_k = \\partial L_k / \\partial E_k`
   ``[B_k, L, d]`` -> DOWN, and device ``k`` backpropagates it into its embedding module;
5. the server optimiser steps on :math:`g_\\theta` (the gradient of :math:`\\sum_k w_k L_k`);
   each device steps on its own gradient of :math:`L_k`;
6. every ``device_sync_every`` iterations the device modules are averaged FedAvg-style
   (UP each device's state, DOWN the sample-weighted mean).

The algorithm is written once against a :class:`Link`: every step is "the role that owns this
computation does it" and ``link.exchange(src, dst, payload, what, iteration)``. With
:class:`InProcessLink` every role lives in this process; with
:class:`~edgelam.distributed.dist_transport.TorchDistributedLink` each rank owns one role. The
server (role :data:`SERVER`) is party to every exchange and records every payload in its
:class:`~edgelam.network.TransferLedger`, through the same
:class:`~edgelam.distributed.transport.InProcessTransport` (quantisation + bits) in both runtimes.

Randomness (mini-batches, dropout, privacy noise) is seeded from
``(seed, iteration, device, phase)``, never from a shared stream, so each role computes the
same numbers whichever process it runs in.

With ``config.privacy.enabled`` (:mod:`edgelam.training.privacy`, docs/privacy.md) each device
draws its batch as its accountant assumes, clips every sample's Jacobian rows (and embeddings)
and adds Gaussian noise before the uplink; its accountant is stepped once per participation.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import Dataset

from edgelam.config import ConfigError, option
from edgelam.distributed.link import SERVER, InProcessLink, Link
from edgelam.distributed.transport import InProcessTransport
from edgelam.models.adapters import load_trainable_state, trainable_state
from edgelam.network import TransferLedger
from edgelam.seeding import derive_seed
from edgelam.training.fedavg import collate
from edgelam.training.privacy.cascade import cascade_stats
from edgelam.training.privacy.config import PrivacyConfig
from edgelam.training.privacy.mechanism import AnalogChannel
from edgelam.training.privacy.protocol import DevicePrivacy, ServerPrivacy
from edgelam.training.split import SplitModel, split_model
from edgelam.training.split_roles import DeviceRole, ServerRole

__all__ = [
    "SERVER",
    "SplitFedFTConfig",
    "DeviceData",
    "dataset_batches",
    "per_device",
    "Link",
    "InProcessLink",
    "SplitFedFT",
]


State = dict[str, torch.Tensor]
Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class SplitFedFTConfig:
    """Split FedFT hyper-parameters."""

    iterations: int = option(100, "training iterations (one mini-batch per scheduled device)")
    batch_size: int = option(16, "mini-batch size per device (fewer if a device has fewer)")
    optimizer: Literal["adam", "sgd"] = option("adam", "server optimiser of the LoRA matrices")
    lr: float = option(1e-3, "server learning rate")
    device_optimizer: Literal["adam", "sgd"] = option("adam", "optimiser of the device modules")
    device_lr: float = option(1e-3, "device learning rate")
    momentum: float = option(0.0, "SGD momentum (server and devices)")
    weight_decay: float = option(0.0, "weight decay (server and devices)")
    embedding_grad: bool = option(
        False, "server returns dL/d(embeddings) so devices also train their embedding modules"
    )
    device_sync_every: int = option(
        1, "average the device modules (FedAvg, by samples) every this many iterations; 0: never"
    )
    weighting: Literal["samples", "batch", "uniform"] = option(
        "samples",
        "w_k over scheduled devices: device dataset sizes n_k, this mini-batch's sizes B_k, or "
        "uniform (device sync: n_k for samples/batch)",
    )
    quantization: Literal["fp32", "fp16", "bf16", "int8"] | None = option(
        None, "how every exchanged tensor is sent: null (its own dtype) or a scheme"
    )
    count_flops: bool = option(True, "count device/server FLOPs (once per input shape)")
    seed: int = option(0, "seed of mini-batches, dropout and privacy noise")
    privacy: PrivacyConfig = dataclasses.field(
        default_factory=PrivacyConfig,
        metadata={"help": "differential privacy of the uplink (default off; docs/privacy.md)"},
    )

    def __post_init__(self) -> None:
        for name in ("iterations", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "device_lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name}: must be > 0, got {getattr(self, name)}")
        if self.device_sync_every < 0:
            raise ConfigError(f"device_sync_every: must be >= 0, got {self.device_sync_every}")
        for name, allowed in (
            ("optimizer", ("adam", "sgd")),
            ("device_optimizer", ("adam", "sgd")),
            ("weighting", ("samples", "batch", "uniform")),
            ("quantization", (None, "fp32", "fp16", "bf16", "int8")),
        ):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name}: {getattr(self, name)!r} is not one of {list(allowed)}")
        if self.privacy.enabled and self.device_sync_every != 0:
            raise ConfigError(
                "device_sync_every: must be 0 with privacy enabled (syncing uploads the device "
                f"modules, trained on raw data without noise), got {self.device_sync_every}"
            )


@dataclass
class DeviceData:
    """A device's data source: ``batches(iteration) -> (inputs, targets)`` and its size ``n_k``;
    ``select(iteration, indices) -> (inputs, targets)`` (optional) gives chosen items, so that
    privacy can draw the batches its accountant assumes."""

    batches: Callable[[int], Batch]
    num_samples: int
    select: Callable[[int, torch.Tensor], Batch] | None = None


def dataset_batches(
    dataset: Dataset, batch_size: int, seed: int, device_index: int, device: Any = None
) -> DeviceData:
    """A :class:`DeviceData` drawing ``min(batch_size, n)`` distinct items per iteration.

    The items of iteration ``t`` are seeded by ``(seed, t, device_index)`` (stateless, so any
    iteration can be regenerated alone); ``dataset.set_epoch(t)`` is called when it exists.
    """
    n = len(dataset)  # type: ignore[arg-type]
    if n < 1:
        raise ValueError(f"device {device_index}: empty dataset")

    def select(iteration: int, indices: torch.Tensor) -> Batch:
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(iteration)
        return collate(dataset, indices, device)

    def batches(iteration: int) -> Batch:
        gen = torch.Generator().manual_seed(derive_seed(seed, iteration, device_index))
        return select(iteration, torch.randperm(n, generator=gen)[:batch_size])

    return DeviceData(batches, n, select)


def per_device(record: Mapping[str, Any], num_devices: int) -> dict[str, list[int]]:
    """``[K]`` lists of an iteration record (0 for a device without a row): ``uplink_bits``,
    ``downlink_bits``, ``device_flops`` and ``server_flops``, the per-device demand that
    ``edgelam.training.resource_allocation.demand_from_network`` takes.

    >>> row = {"device": 1, "uplink_bits": 64, "downlink_bits": 32, "device_flops": 5,
    ...        "server_flops": 9}
    >>> per_device({"devices": [row]}, 2)["uplink_bits"]
    [0, 64]
    """
    out = {key: [0] * num_devices for key in _DEMAND_KEYS}
    for row in record["devices"]:
        for key in _DEMAND_KEYS:
            out[key][row["device"]] = row[key]
    return out


_DEMAND_KEYS = ("uplink_bits", "downlink_bits", "device_flops", "server_flops")


class SplitFedFT:
    """Split federated fine-tuning over a :class:`Link` (see the module docstring).

    Args:
        config: hyper-parameters.
        model: a built model with trainable backbone (LoRA) parameters, or its
            :class:`~edgelam.training.split.SplitModel`. The server trains the backbone's
            parameters in place; each device trains a deep copy of the embedding and task
            modules (tied weights stay tied), leaving ``model``'s own copies untouched.
        data: the data of the devices this process owns, by device index (a sequence means
            devices ``0 .. len - 1``).
        link: the runtime; default an :class:`InProcessLink` over ``len(data)`` devices with
            ``config.quantization``.
        uplink_channel: ``uplink_channel(iteration, device) -> AnalogChannel``, the devices'
            uplinks as an analog transmission sees them (``privacy.uplink = 'analog'``).

    Raises:
        ValueError: an owned device has no data, or the backbone has nothing to train.
        ConfigError: privacy on a model whose batch statistics couple the samples, or an analog
            uplink without ``uplink_channel``.
    """

    def __init__(
        self,
        config: SplitFedFTConfig,
        model: nn.Module | SplitModel,
        data: Sequence[DeviceData] | Mapping[int, DeviceData],
        link: Link | None = None,
        uplink_channel: Callable[[int, int], AnalogChannel] | None = None,
    ) -> None:
        data = dict(enumerate(data)) if isinstance(data, Sequence) else dict(data)
        if link is None:
            link = InProcessLink(
                len(data), InProcessTransport(TransferLedger(), None, config.quantization)
            )
        if link.transport is not None and link.transport.quantization != (
            None if config.quantization == "fp32" else config.quantization
        ):
            raise ConfigError(
                f"quantization: the config says {config.quantization!r} but the link's "
                f"transport quantises with {link.transport.quantization!r}"
            )
        self.config, self.link, self.iteration = config, link, 0
        self.split = model if isinstance(model, SplitModel) else split_model(model)
        template = self.split.device_modules()
        shared = {id(p) for p in template.parameters()}
        self.server = ServerRole(self.split.backbone, shared, config) if link.owns(SERVER) else None
        privacy = config.privacy if config.privacy.enabled else None
        if privacy and getattr(self.split.embedding, "normalization", None) == "batch":
            raise ConfigError(
                "privacy: LLM4CP normalization='batch' couples the samples of a batch (shared "
                "mean/std), so clipping each sample does not bound its influence; use 'sample'"
            )
        self.privacy = ServerPrivacy(privacy, config.seed) if privacy and self.server else None
        self.devices: dict[int, DeviceRole] = {}
        for k in range(link.num_devices):
            if link.owns(k):
                if k not in data:
                    raise ValueError(f"data: device {k} runs in this process but has no data")
                modules = copy.deepcopy(template)
                guard = None
                if privacy:
                    channel = (lambda t, k=k: uplink_channel(t, k)) if uplink_channel else None
                    guard = DevicePrivacy(privacy, k, data[k].num_samples, config.batch_size,
                                          config.iterations, config.seed, channel)  # fmt: skip
                self.devices[k] = DeviceRole(k, modules, self.split.loss_fn, data[k], config, guard)
        self.num_samples: dict[int, int] = {}
        for k in range(link.num_devices):  # set-up: devices tell the server their n_k
            n = link.report(k, SERVER, data[k].num_samples if k in self.devices else None)
            if self.server is not None:
                self.num_samples[k] = int(n)
        self.records: list[dict[str, Any]] = []
        self.memory: dict[str, Any] = {"devices": {}, "server": None}

    def _check_schedule(self, scheduled: Sequence[int] | None) -> list[int]:
        k_all = self.link.num_devices
        scheduled = list(range(k_all)) if scheduled is None else [int(k) for k in scheduled]
        if not scheduled:
            raise ValueError("scheduled: no devices scheduled for this iteration")
        bad = [k for k in scheduled if not 0 <= k < k_all]
        if bad or len(set(scheduled)) != len(scheduled):
            raise ValueError(
                f"scheduled: {scheduled} must be distinct device indices in 0..{k_all - 1}"
            )
        return sorted(scheduled)

    def weights(self, sizes: Mapping[int, float]) -> dict[int, float]:
        """``w_k = n_k / sum_j n_j`` over the given devices (``uniform``: ``1 / |S|``)."""
        if self.config.weighting == "uniform":
            sizes = dict.fromkeys(sizes, 1.0)
        total = float(sum(sizes.values()))
        return {k: n / total for k, n in sizes.items()}

    def run_iteration(self, scheduled: Sequence[int] | None = None) -> dict[str, Any] | None:
        r"""One iteration over the scheduled devices (default: all; the server's list counts).

        Returns:
            On the server's process the iteration's record (plain JSON-ready dict), else None:
            ``iteration``, ``scheduled`` (device indices), ``loss`` (:math:`\sum_k w_k L_k`),
            ``uplink_bits``, ``downlink_bits``, ``device_flops``, ``server_flops`` (totals),
            ``device_synced``, ``wall_seconds`` and ``devices``: one row per device that computed
            or sent (the scheduled ones, and every device in a sync iteration) with ``device``,
            ``scheduled``, ``weight`` (:math:`w_k`, 0 if not scheduled), ``batch_size``,
            ``loss`` (:math:`L_k`, None if not scheduled), ``device_flops`` (embedding forward
            [+ backward with ``embedding_grad``] + task forward and backward), ``server_flops``
            (backbone forward + backward for this device's batch), ``uplink_bits``,
            ``downlink_bits`` and ``bits = {"uplink": {what: bits}, "downlink": {what: bits}}``
            with ``what`` in embeddings, jacobians, representations, embedding_grads, device_sync.
            With privacy also ``epsilon`` (the largest device epsilon so far), ``delta``,
            ``cascade`` (:func:`~edgelam.training.privacy.cascade.cascade_stats`, with
            ``measure_cascade``) and per scheduled row ``epsilon`` and ``privacy``
            (:meth:`~edgelam.training.privacy.protocol.DevicePrivacy.stats`).

        Raises:
            ValueError: an empty or invalid schedule, or a tensor of the wrong shape.
        """
        t, cfg, link, server = self.iteration, self.config, self.link, self.server
        start, ledger_start = time.perf_counter(), len(link.ledger) if server else 0
        scheduled = link.agree(self._check_schedule(scheduled) if server else None)
        # 1. devices -> server: embeddings
        received, private = {}, cfg.privacy.enabled
        for k in scheduled:
            dev = self.devices.get(k)
            payload = {"embeddings": dev.embed(t)} if dev else None
            if dev and private:
                dev.privacy.step_accountant()  # one accounted release per participation
            received[k] = link.exchange(k, SERVER, payload, "embeddings", t)
            if cfg.privacy.clip_embeddings:
                self._analog_receive(k, t, "embeddings", received[k])
        # 2. server: backbone; server -> device k: representations; device k: loss, jacobian
        jacobians = {}
        for k in scheduled:
            payload = None
            if server:
                payload = {"representations": server.forward(k, t, received[k]["embeddings"])}
            got = link.exchange(SERVER, k, payload, "representations", t)
            if k in self.devices:
                jacobians[k] = self.devices[k].task_step(t, got["representations"])
        # 3. devices -> server: jacobians; server: weighted backward into the LoRA matrices
        stats, embedding_grads, noises, used = {}, {}, {}, {}
        if server:
            sizes = {k: received[k]["embeddings"].shape[0] for k in scheduled}
            if cfg.weighting == "samples":
                sizes = {k: self.num_samples[k] for k in scheduled}
            w = self.weights(sizes)
        for k in scheduled:
            dev = self.devices.get(k)
            payload = {"jacobians": jacobians[k]} if dev else None
            got = link.exchange(k, SERVER, payload, "jacobians", t)
            received_noise = self._analog_receive(k, t, "jacobians", got)
            stats[k] = link.report(k, SERVER, dev.stats if dev else None)
            if private and cfg.privacy.measure_cascade:  # instrument, not a radio payload
                noise = link.report(k, SERVER, dev.privacy.noise if dev else None)
                if server:
                    noises[k] = noise if received_noise is None else noise + received_noise
                    used[k] = got["jacobians"]
            if server:
                embedding_grads[k] = server.backward(k, got["jacobians"], w[k], noises.get(k))
        # 4. (embedding_grad) server -> device k: dL_k/dE_k; device: embedding backward
        if cfg.embedding_grad:
            for k in scheduled:
                payload = {"embedding_grads": embedding_grads[k]} if server else None
                got = link.exchange(SERVER, k, payload, "embedding_grads", t)
                if k in self.devices:
                    self.devices[k].embedding_backward(got["embedding_grads"])
        # 5. updates: server optimiser on the LoRA matrices, each device on its modules
        cascade = None
        if server and noises:
            grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in server.params]
            cascade = cascade_stats(grads, server.noise_grads, used, noises, w)
        if server:
            server.step()
        for dev in self.devices.values():
            dev.step()
        # 6. every E iterations: FedAvg of the device modules
        synced = cfg.device_sync_every > 0 and (t + 1) % cfg.device_sync_every == 0
        if synced:
            self._sync_devices(t)
        self.iteration += 1
        if not server:
            return None
        server_flops = {k: server.step_flops(received[k]["embeddings"]) for k in scheduled}
        if self.memory["server"] is None:
            self.memory["server"] = server.memory([received[k]["embeddings"] for k in scheduled])
        transfers = link.ledger.records[ledger_start:]
        record = self._record(t, scheduled, w, stats, server_flops, synced, transfers)
        if self.privacy is not None:
            self.privacy.annotate(record, {k: stats[k]["privacy"] for k in scheduled}, cascade)
        record["wall_seconds"] = time.perf_counter() - start
        self.records.append(record)
        return record

    def _analog_receive(self, k: int, t: int, what: str, got: State | None) -> torch.Tensor | None:
        """Analog uplink: the server decodes ``got[what]`` plus the receiver noise, whose std
        (referred to the tensor) the device reports; returns that noise on the server."""
        if not self.config.privacy.enabled or self.config.privacy.uplink != "analog":
            return None
        dev = self.devices.get(k)
        std = self.link.report(k, SERVER, dev.privacy.receiver_std[what] if dev else None)
        if self.privacy is None:
            return None
        got[what], noise = self.privacy.receive(k, t, what, got[what], std)
        return noise

    def _sync_devices(self, t: int) -> None:
        """Device modules UP from every device, sample-weighted mean DOWN to every device."""
        k_all, server = range(self.link.num_devices), self.server
        states = {}
        for k in k_all:
            dev = self.devices.get(k)
            payload = (
                {n: v.clone() for n, v in trainable_state(dev.modules).items()} if dev else None
            )
            states[k] = self.link.exchange(k, SERVER, payload, "device_sync", t)
        mean = None
        if server:
            w = self.weights({k: self.num_samples[k] for k in k_all})
            mean = {  # float64 accumulation, as FedAvg
                n: sum(w[k] * states[k][n].double() for k in k_all).to(ref.dtype)
                for n, ref in states[0].items()
            }
        for k in k_all:
            got = self.link.exchange(SERVER, k, mean, "device_sync", t)
            if k in self.devices:
                load_trainable_state(self.devices[k].modules, got)

    def _record(self, t, scheduled, w, stats, server_flops, synced, transfers) -> dict[str, Any]:
        """The iteration's record (see :meth:`run_iteration`)."""
        rows = {}
        for k in sorted(set(scheduled) | (set(range(self.link.num_devices)) if synced else set())):
            rows[k] = {"device": k, "scheduled": k in scheduled, "weight": w.get(k, 0.0),
                       "batch_size": 0, "loss": None, "device_flops": 0, "server_flops": 0,
                       "uplink_bits": 0, "downlink_bits": 0,
                       "bits": {"uplink": {}, "downlink": {}}}  # fmt: skip
        for k in scheduled:
            self.memory["devices"][k] = stats[k]["memory"]
            rows[k].update({key: stats[k][key] for key in ("loss", "batch_size", "device_flops")})
            rows[k]["server_flops"] = server_flops[k]
        for tr in transfers:
            row = rows[tr.device]
            row[f"{tr.direction}_bits"] += tr.bits
            row["bits"][tr.direction][tr.what] = row["bits"][tr.direction].get(tr.what, 0) + tr.bits
        return {
            "iteration": t,
            "scheduled": list(scheduled),
            "loss": sum(w[k] * stats[k]["loss"] for k in scheduled),
            "uplink_bits": sum(r["uplink_bits"] for r in rows.values()),
            "downlink_bits": sum(r["downlink_bits"] for r in rows.values()),
            "device_flops": sum(r["device_flops"] for r in rows.values()),
            "server_flops": sum(server_flops.values()),
            "device_synced": synced,
            "devices": list(rows.values()),
        }

    def run(
        self,
        schedule: Callable[[int], Sequence[int] | None] | None = None,
        on_record: Callable[[dict[str, Any]], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Run the remaining iterations up to ``config.iterations``.

        Args:
            schedule: ``schedule(t)`` -> the devices of iteration ``t`` (None: all); read on the
                server's process only (the hook for a resource-allocation policy).
            on_record: called with each record on the server's process (e.g. ``RunDir.log``).

        Returns:
            The records of these iterations on the server's process (else ``[]``).
        """
        out = []
        while self.iteration < self.config.iterations:
            record = self.run_iteration(schedule(self.iteration) if schedule else None)
            if record is not None:
                out.append(record)
                if on_record is not None:
                    on_record(record)
        return out

    def server_state(self) -> State:
        """The server's trainable backbone (LoRA) parameters, cloned, by name."""
        if self.server is None:
            raise RuntimeError("server_state: the server does not run in this process")
        return {n: p.detach().clone() for n, p in self.server.named.items()}

    def device_states(self) -> dict[int, State] | None:
        """Every device's trainable module state, gathered on the server (control messages,
        not radio payloads); ``None`` on other processes. Call on every process."""
        out = {}
        for k in range(self.link.num_devices):
            dev = self.devices.get(k)
            state = (
                {n: v.cpu().clone() for n, v in trainable_state(dev.modules).items()}
                if dev
                else None
            )
            got = self.link.report(k, SERVER, state)
            if self.server is not None:
                out[k] = got
        return out if self.server is not None else None
