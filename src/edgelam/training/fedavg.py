"""Federated averaging (FedAvg) over the trainable parameters of a model.

Only the trainable parameters (LoRA matrices, tuned layer norms, adapter modules) travel: the
frozen backbone is identical everywhere and never sent. Each round, following Flower's strategy
hooks:

1. :meth:`FedAvg.configure_train` samples a fraction of the clients (seeded per round);
2. the transport broadcasts the global trainable state to them (downlink);
3. each client runs ``local_steps`` optimiser steps on its own data (:meth:`FedAvg.fit`);
4. each client sends its trainable state back (uplink);
5. :meth:`FedAvg.aggregate_train` averages them, weighted by sample count (or uniformly).

:meth:`FedAvg.configure_evaluate` / :meth:`FedAvg.aggregate_evaluate` evaluate the global model
on the clients' data. Local-only training is the same loop with one client and
``communicate=False`` (nothing is sent, and the client's optimiser state carries over between
rounds exactly as in plain training), so a centralised reference is one client holding the
pooled data.

Reproducibility: client sampling, mini-batch order, observation noise (``set_epoch``) and dropout
of client ``c`` in round ``r`` are seeded from ``(seed, r, c)``, so :meth:`FedAvg.state_dict`
after round ``r`` is all a resumed run needs to continue bit-for-bit.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from edgelam.config import ConfigError, option
from edgelam.distributed.transport import InProcessTransport
from edgelam.models.adapters import load_trainable_state, trainable_state
from edgelam.seeding import derive_seed

__all__ = ["FedAvgConfig", "FedAvg", "Client", "FitResult", "collate", "nmse_loss"]

State = dict[str, torch.Tensor]


@dataclass
class FedAvgConfig:
    """FedAvg hyper-parameters (also used for local-only and centralised training)."""

    rounds: int = option(30, "communication rounds (local-only: blocks of local_steps)")
    local_steps: int = option(2, "optimiser steps per client per round")
    batch_size: int = option(64, "mini-batch size (items) per local step")
    client_fraction: float = option(1.0, "fraction of clients trained per round (at least one)")
    optimizer: Literal["adam", "sgd"] = option("adam", "client optimiser")
    lr: float = option(1e-3, "client learning rate")
    momentum: float = option(0.9, "SGD momentum")
    weight_decay: float = option(0.0, "weight decay")
    grad_clip: float = option(1.0, "clip each step's gradient norm to this (0: off)")
    weighting: Literal["samples", "uniform"] = option(
        "samples", "aggregation weights: client sample counts, or uniform"
    )
    quantization: Literal["fp32", "fp16", "bf16", "int8"] = option(
        "fp32", "how trainable parameters are sent over the links"
    )
    seed: int = option(0, "seed of client sampling, batches, noise and dropout")

    def __post_init__(self) -> None:
        for name in ("rounds", "local_steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if not 0 < self.client_fraction <= 1:
            raise ConfigError(f"client_fraction: must be in (0, 1], got {self.client_fraction}")
        if self.lr <= 0:
            raise ConfigError(f"lr: must be > 0, got {self.lr}")
        if self.grad_clip < 0:
            raise ConfigError(f"grad_clip: must be >= 0, got {self.grad_clip}")


@dataclass
class Client:
    """A federated client (an edge server in the case study) and its local data."""

    cid: int
    dataset: Dataset

    @property
    def num_examples(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]


@dataclass
class FitResult:
    """What one client returns from a round of local training."""

    cid: int
    state: State
    num_examples: int
    losses: list[float]


def nmse_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over items of ``||pred - target||^2 / ||target||^2`` (LLM4CP's training loss).

    Shapes:
        pred, target: ``[B, ...]``; reduced over all but the first axis.
    """
    err = (pred - target).flatten(1).square().sum(1)
    ref = target.flatten(1).square().sum(1).clamp_min(1e-12)
    return (err / ref).mean()


def collate(
    dataset: Dataset, indices: Sequence[int], device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack the ``(x, y)`` items ``indices`` of ``dataset`` into a batch on ``device``."""
    items = [dataset[int(i)] for i in indices]
    x, y = torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])
    return x.to(device), y.to(device)


class FedAvg:
    """FedAvg (McMahan et al., 2017) on a model's trainable parameters.

    Args:
        config: hyper-parameters.
        model: the working model; its trainable parameters at construction are the initial
            global state. Clients train it in turn (loading their state first), so frozen
            weights are held once.
        clients: the clients and their data.
        transport: moves (and counts) the trainable state; required when ``communicate``.
        loss_fn: ``loss_fn(pred, target) -> scalar``; default :func:`nmse_loss`.
        communicate: ``False`` for local-only training (no transfers).
    """

    def __init__(
        self,
        config: FedAvgConfig,
        model: nn.Module,
        clients: Sequence[Client],
        transport: InProcessTransport | None = None,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = nmse_loss,
        communicate: bool = True,
    ) -> None:
        if not clients:
            raise ValueError("clients: need at least one client")
        if communicate and transport is None:
            raise ValueError("transport: required when communicate=True")
        self.config = config
        self.model = model
        self.clients = list(clients)
        self.transport = transport
        self.loss_fn = loss_fn
        self.communicate = communicate
        self.global_state: State = {k: v.clone() for k, v in trainable_state(model).items()}
        self.optimizer_states: dict[int, dict[str, Any]] = {}
        self.round = 0  # rounds completed
        self.device = next(model.parameters()).device  # batches follow the model

    # -- Flower-style hooks ----------------------------------------------------------------
    def configure_train(self, rnd: int) -> list[int]:
        """Client ids to train in round ``rnd`` (sorted; seeded by ``(seed, rnd)``)."""
        n = len(self.clients)
        k = max(1, math.ceil(self.config.client_fraction * n - 1e-9))
        if k == n:
            return list(range(n))
        gen = torch.Generator().manual_seed(derive_seed(self.config.seed, rnd, 1_000_003))
        return sorted(torch.randperm(n, generator=gen)[:k].tolist())

    def fit(self, cid: int, state: State, rnd: int) -> FitResult:
        """Local training of client ``cid`` from ``state`` for ``local_steps`` steps."""
        cfg, client = self.config, self.clients[cid]
        load_trainable_state(self.model, state)
        self.model.train()
        params = [p for p in self.model.parameters() if p.requires_grad]
        if cfg.optimizer == "adam":
            opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        else:
            opt = torch.optim.SGD(
                params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
            )
        if cid in self.optimizer_states:
            opt.load_state_dict(self.optimizer_states[cid])
        if hasattr(client.dataset, "set_epoch"):
            client.dataset.set_epoch(rnd)
        gen = torch.Generator().manual_seed(derive_seed(cfg.seed, rnd, cid))
        torch.manual_seed(derive_seed(cfg.seed, rnd, cid, 1))  # dropout
        need = cfg.local_steps * cfg.batch_size
        n = client.num_examples
        order = torch.cat([torch.randperm(n, generator=gen) for _ in range(-(-need // n))])
        losses = []
        for step in range(cfg.local_steps):
            x, y = collate(
                client.dataset, order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            )
            opt.zero_grad(set_to_none=True)
            loss = self.loss_fn(self.model(x), y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"client {cid}, round {rnd}: loss is {loss.item()}")
            loss.backward()
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            losses.append(loss.item())
        self.optimizer_states[cid] = copy.deepcopy(opt.state_dict())
        new_state = {k: v.detach().clone() for k, v in trainable_state(self.model).items()}
        return FitResult(cid, new_state, n, losses)

    def aggregate_train(self, rnd: int, results: Sequence[FitResult]) -> State:
        """Weighted average of the clients' states (float64 accumulation)."""
        if self.config.weighting == "samples":
            weights = torch.tensor([r.num_examples for r in results], dtype=torch.float64)
        else:
            weights = torch.ones(len(results), dtype=torch.float64)
        weights = weights / weights.sum()
        out = {}
        for name, ref in results[0].state.items():
            acc = sum(w * r.state[name].double() for w, r in zip(weights, results, strict=True))
            out[name] = acc.to(ref.dtype)
        return out

    def configure_evaluate(self, rnd: int) -> list[int]:
        """Clients that evaluate the global model (all of them)."""
        return list(range(len(self.clients)))

    @torch.no_grad()
    def evaluate_client(self, cid: int, max_items: int = 1024) -> tuple[float, int]:
        """Loss of the current global model on (up to ``max_items`` of) client ``cid``'s data."""
        load_trainable_state(self.model, self.global_state)
        self.model.eval()
        ds = self.clients[cid].dataset
        n = min(len(ds), max_items)  # type: ignore[arg-type]
        total = 0.0
        for start in range(0, n, 256):
            x, y = collate(ds, range(start, min(n, start + 256)), self.device)
            total += self.loss_fn(self.model(x), y).item() * len(x)
        return total / n, n

    def aggregate_evaluate(self, results: Sequence[tuple[float, int]]) -> float:
        """Example-weighted mean of the clients' evaluation losses."""
        return sum(loss * n for loss, n in results) / sum(n for _, n in results)

    # -- the loop ----------------------------------------------------------------------------
    def run_round(self) -> dict[str, Any]:
        """Run the next round; returns its metrics record."""
        rnd = self.round
        start = time.perf_counter()
        selected = self.configure_train(rnd)
        ledger_before = len(self.transport.ledger) if self.transport else 0
        if self.communicate:
            received = self.transport.downlink(rnd, selected, self.global_state, "global_trainable")
        else:
            received = self.global_state
        results = []
        for cid in selected:
            result = self.fit(cid, received, rnd)
            if self.communicate:
                result.state = self.transport.uplink(rnd, cid, result.state, "client_trainable")
            results.append(result)
        self.global_state = self.aggregate_train(rnd, results)
        load_trainable_state(self.model, self.global_state)
        self.round += 1
        record: dict[str, Any] = {
            "round": rnd,
            "iteration": (rnd + 1) * self.config.local_steps,
            "clients": selected,
            "train_loss": float(np.mean([np.mean(r.losses) for r in results])),
            "train_loss_last_step": float(np.mean([r.losses[-1] for r in results])),
            "compute_seconds": time.perf_counter() - start,
        }
        if self.transport is not None:
            transfers = self.transport.ledger.records[ledger_before:]
            for direction in ("uplink", "downlink"):
                rows = [t for t in transfers if t.direction == direction]
                record[f"{direction}_bits"] = sum(t.bits for t in rows)
                record[f"{direction}_seconds"] = max((t.seconds for t in rows), default=0.0)
                record[f"{direction}_joules"] = sum(t.joules for t in rows)
        return record

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume after the last completed round."""
        return {
            "round": self.round,
            "global_state": self.global_state,
            "optimizer_states": self.optimizer_states,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        self.round = int(state["round"])
        self.global_state = state["global_state"]
        self.optimizer_states = state["optimizer_states"]
        load_trainable_state(self.model, self.global_state)
