"""The two roles of split FedFT (:mod:`edgelam.training.split_fedft`): the edge server and a device.

Each role owns its modules, optimiser, FLOP counter and memory estimate; the algorithm calls
their methods in order, whichever process they live in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from edgelam.models.layers import seeded
from edgelam.network.compute import activation_bytes, count_flops, parameter_bytes
from edgelam.seeding import derive_seed

if TYPE_CHECKING:
    from edgelam.training.privacy.protocol import DevicePrivacy
    from edgelam.training.split_fedft import DeviceData, SplitFedFTConfig

__all__ = ["DeviceRole", "ServerRole", "training_memory"]


def _optimizer(kind: str, params: list[nn.Parameter], lr: float, cfg: SplitFedFTConfig):
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


class _FlopCounter:
    """FLOPs of a module's forward (+ backward) per input shape, counted once and cached."""

    def __init__(self, enabled: bool) -> None:
        self.enabled, self.cache = enabled, {}

    def __call__(self, key: str, module: nn.Module, *inputs: Any, backward: bool) -> int:
        if not self.enabled:
            return 0
        shapes = tuple(tuple(t.shape) for t in inputs if isinstance(t, torch.Tensor))
        if (key, shapes, backward) not in self.cache:
            with seeded(0):  # the counting pass must not move anybody's random stream
                flops = count_flops(module, *inputs, backward=backward)
            self.cache[key, shapes, backward] = flops
        return self.cache[key, shapes, backward]


def training_memory(
    held: int, params: list[nn.Parameter], optimizer: str, cfg: SplitFedFTConfig, acts: int
) -> dict[str, int]:
    """Parameters held, gradients + optimiser state of the trainable ones (Adam: 2 copies,
    SGD with momentum: 1), activations saved for backward; in bytes."""
    states = 2 if optimizer == "adam" else int(cfg.momentum > 0)
    extra = (1 + states) * sum(p.numel() * p.element_size() for p in params)
    return {"parameter_bytes": held, "gradient_optimizer_bytes": extra,
            "activation_bytes": acts, "total_bytes": held + extra + acts}  # fmt: skip


class ServerRole:
    """The edge server: backbone, its trainable (LoRA) parameters and their optimiser."""

    def __init__(self, backbone: nn.Module, shared: set[int], cfg: SplitFedFTConfig) -> None:
        self.backbone, self.cfg = backbone, cfg
        self.named = {n: p for n, p in backbone.named_parameters() if p.requires_grad}
        self.named = {n: p for n, p in self.named.items() if id(p) not in shared}
        if not self.named:
            raise ValueError(
                "the backbone has no trainable parameters: apply LoRA first "
                "(edgelam.models.adapters.apply_lora, or LLM4CPConfig(trainable='lora'))"
            )
        self.params = list(self.named.values())
        self.optimizer = _optimizer(cfg.optimizer, self.params, cfg.lr, cfg)
        self.pending: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.noise_grads: list[torch.Tensor] | None = None  # cascade: sum_k w_k V_k^T Z_k
        self.flops = _FlopCounter(cfg.count_flops)
        self.held_bytes = parameter_bytes(backbone) - sum(
            p.numel() * p.element_size() for p in backbone.parameters() if id(p) in shared
        )

    def forward(self, k: int, iteration: int, embeddings: torch.Tensor) -> torch.Tensor:
        """Backbone on device ``k``'s embeddings ``[B, L, d]`` -> representations ``[B, L, d]``."""
        emb = embeddings.detach().requires_grad_(self.cfg.embedding_grad)
        with seeded(derive_seed(self.cfg.seed, iteration, k, 2)):
            rep = self.backbone(emb)
        self.pending[k] = (emb, rep)
        return rep.detach()

    def backward(
        self, k: int, jacobian: torch.Tensor, weight: float, noise: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """Add ``weight * J_k^T dR_k/dtheta`` to the LoRA gradients; returns ``dL_k/dE_k``.

        With ``noise`` (the privacy noise inside ``jacobian``, ``[B_k, L, d]``) also adds
        ``weight * noise^T dR_k/dtheta`` to :attr:`noise_grads` (the cascade measurement).
        """
        emb, rep = self.pending.pop(k)
        if jacobian.shape != rep.shape:
            raise ValueError(
                f"device {k}: jacobians {list(jacobian.shape)} != representations {list(rep.shape)}"
            )
        if noise is not None:
            grads = torch.autograd.grad(
                rep, self.params, grad_outputs=noise, retain_graph=True, allow_unused=True
            )
            grads = [torch.zeros_like(p) if g is None else weight * g
                     for p, g in zip(self.params, grads, strict=True)]  # fmt: skip
            if self.noise_grads is not None:
                grads = [a + g for a, g in zip(self.noise_grads, grads, strict=True)]
            self.noise_grads = grads
        wrt = self.params + ([emb] if self.cfg.embedding_grad else [])
        grads = torch.autograd.grad(rep, wrt, grad_outputs=jacobian, allow_unused=True)
        for p, g in zip(self.params, grads, strict=False):
            if g is not None:
                p.grad = weight * g if p.grad is None else p.grad + weight * g
        return grads[-1] if self.cfg.embedding_grad else None

    def step_flops(self, embeddings: torch.Tensor) -> int:
        """Forward + backward FLOPs of the backbone on a batch shaped like ``embeddings``."""
        emb = embeddings.detach().requires_grad_(self.cfg.embedding_grad)
        return self.flops("backbone", self.backbone, emb, backward=True)

    def memory(self, batches: Sequence[torch.Tensor]) -> dict[str, int]:
        """Bytes the server holds: backbone parameters, LoRA gradients and optimiser state, and
        the activations of every scheduled device's batch (all live between steps 2 and 4)."""
        with seeded(0):
            acts = sum(
                activation_bytes(self.backbone, e.detach().requires_grad_()) for e in batches
            )
        return training_memory(self.held_bytes, self.params, self.cfg.optimizer, self.cfg, acts)

    def step(self) -> None:
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.noise_grads = None


class DeviceRole:
    """Device ``k``: its copy of the embedding and task modules, its data and optimiser, and
    (``privacy``) its sampling, clip-and-noise mechanism and accountant."""

    def __init__(
        self,
        index: int,
        modules: nn.ModuleDict,
        loss_fn: Callable,
        data: DeviceData,
        cfg: SplitFedFTConfig,
        privacy: DevicePrivacy | None = None,
    ) -> None:
        self.index, self.modules, self.loss_fn, self.data, self.cfg = (
            index, modules, loss_fn, data, cfg
        )  # fmt: skip
        self.privacy = privacy
        task_ids = {id(p) for p in modules["task"].parameters()}
        if not cfg.embedding_grad:  # no gradient reaches the embedding: it does not train
            for p in modules["embedding"].parameters():
                p.requires_grad_(id(p) in task_ids and p.requires_grad)
        self.params = [p for p in modules.parameters() if p.requires_grad]
        self.optimizer = (
            _optimizer(cfg.device_optimizer, self.params, cfg.device_lr, cfg)
            if self.params
            else None
        )
        self.flops = _FlopCounter(cfg.count_flops)
        self._memory: dict[str, int] | None = None
        self.stats: dict[str, Any] = {}

    def embed(self, iteration: int) -> torch.Tensor:
        """Step 1: embeddings ``[B_k, L, d]`` of this iteration's mini-batch (with privacy:
        drawn by the privacy sampler, and clipped and noised if ``clip_embeddings``)."""
        privacy = self.privacy
        if privacy is None:
            inputs, self.targets = self.data.batches(iteration)
        else:
            inputs, self.targets = privacy.batch(iteration, self.data)
        embedding = self.modules["embedding"]
        train = self.cfg.embedding_grad and any(p.requires_grad for p in embedding.parameters())
        with (
            seeded(derive_seed(self.cfg.seed, iteration, self.index, 0)),
            torch.set_grad_enabled(train),
        ):
            self.embeddings, self.context = embedding(inputs)
        self.inputs, self.train_embedding = inputs, train
        if privacy is not None and privacy.config.clip_embeddings:
            self.embeddings, sent = privacy.embeddings(iteration, self.embeddings)
            return sent
        return self.embeddings.detach()

    def task_step(self, iteration: int, representations: torch.Tensor) -> torch.Tensor:
        """Step 3: loss, task-module gradient; returns the Jacobian ``dL_k/dR_k`` ``[B_k, L, d]``."""
        if representations.shape != self.embeddings.shape:
            raise ValueError(
                f"device {self.index}: representations {list(representations.shape)} != "
                f"embeddings {list(self.embeddings.shape)}"
            )
        rep = representations.detach().requires_grad_(True)
        with seeded(derive_seed(self.cfg.seed, iteration, self.index, 1)):
            outputs = self.modules["task"](rep, self.context)
        loss = self.loss_fn(outputs, self.targets)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"device {self.index}, iteration {iteration}: loss {loss}")
        loss.backward()
        self.stats = {
            "loss": loss.item(),
            "batch_size": int(self.embeddings.shape[0]),
            "device_flops": self._flops(rep.detach()),
            "memory": self.memory(rep.detach()),
        }
        if self.privacy is None:
            return rep.grad
        sent = self.privacy.jacobians(iteration, rep.grad)
        self.stats["privacy"] = self.privacy.stats()
        return sent

    def embedding_backward(self, grad: torch.Tensor) -> None:
        """Step 4 (``embedding_grad``): backpropagate ``dL_k/dE_k`` into the embedding module."""
        if grad.shape != self.embeddings.shape:
            raise ValueError(
                f"device {self.index}: embedding_grads {list(grad.shape)} != embeddings "
                f"{list(self.embeddings.shape)}"
            )
        if self.train_embedding:
            self.embeddings.backward(grad)

    def _flops(self, rep: torch.Tensor) -> int:
        emb, task = self.modules["embedding"], self.modules["task"]
        flops = self.flops("embedding", emb, self.inputs, backward=self.train_embedding)
        return flops + self.flops(
            "task", task, rep.requires_grad_(True), self.context, backward=True
        )

    def memory(self, rep: torch.Tensor) -> dict[str, int]:
        """Bytes the device holds for one step (computed at the first step, then kept)."""
        if self._memory is None:
            with seeded(0):
                acts = activation_bytes(self.modules["task"], rep.requires_grad_(), self.context)
                if self.train_embedding:
                    acts += activation_bytes(self.modules["embedding"], self.inputs)
            self._memory = training_memory(
                parameter_bytes(self.modules),
                self.params,
                self.cfg.device_optimizer,
                self.cfg,
                acts,
            )
        return self._memory

    def step(self) -> None:
        if self.optimizer is not None:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)


# -- the algorithm ------------------------------------------------------------------------------
