"""Splitting a built model into a device part and a server part, for split federated learning.

No edge device holds a large model, so split FedFT cuts it in three (torchtitan style: a
function applied to a model that knows nothing of it):

* ``embedding`` (device): raw inputs -> ``(embeddings [B, L, d], context)``; the context (e.g.
  the per-call normalisation statistics of the channel predictor) never leaves the device;
* ``backbone`` (edge server): ``embeddings [B, L, d]`` -> ``representations [B, L, d]``, the
  heavy transformer (frozen, with LoRA adapters);
* ``task`` (device): ``(representations, context)`` -> outputs; ``loss_fn(outputs, targets)``
  is the device's training loss.

The three parts share their parameters with the model (nothing is copied): composing them
computes exactly the model's function, ``task(backbone(e), c) == model(x)`` for
``(e, c) = embedding(x)``. Which function splits which model is chosen by the model's type from
a small registry; :func:`register_splitter` adds a model type.

>>> from edgelam.models.backbones import BackboneConfig
>>> from edgelam.models.adapters import build_llm4cp
>>> from edgelam.models.llm4cp import LLM4CPConfig
>>> cfg = LLM4CPConfig(history_slots=4, future_slots=2, num_subcarriers=3, patch_size=2,
...     res_dim=2, res_layers=1, dropout=0.0, backbone=BackboneConfig(name="custom",
...     num_layers=1, d_model=8, n_head=2, n_positions=4))
>>> model, _ = build_llm4cp(cfg, seed=0)
>>> parts = split_model(model.eval())
>>> x = torch.randn(5, 4, 6)
>>> emb, context = parts.embedding(x)
>>> emb.shape, torch.allclose(parts.task(parts.backbone(emb), context), model(x))
(torch.Size([5, 4, 8]), True)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgelam.models.llm4cp import LLM4CPPredictor
from edgelam.training.fedavg import nmse_loss

__all__ = [
    "SplitModel",
    "Splitter",
    "register_splitter",
    "split_model",
    "InputsEmbedsBackbone",
    "LLM4CPEmbedding",
    "LLM4CPTask",
    "TokenEmbedding",
    "LMHeadTask",
    "causal_lm_loss",
]

Context = Any
"""What the embedding module keeps on the device for the task module (tensors or ``None``)."""


@dataclass
class SplitModel:
    """The three parts of a split model (see the module docstring).

    Attributes:
        embedding: device part, ``inputs -> (embeddings [B, L, d], context)``.
        backbone: server part, ``embeddings [B, L, d] -> representations [B, L, d]``.
        task: device part, ``(representations [B, L, d], context) -> outputs``.
        loss_fn: ``loss_fn(outputs, targets) -> scalar``, the mean loss over the batch.
    """

    embedding: nn.Module
    backbone: nn.Module
    task: nn.Module
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

    def device_modules(self) -> nn.ModuleDict:
        """``{"embedding", "task"}`` in one module: deep-copying it keeps tied weights tied."""
        return nn.ModuleDict({"embedding": self.embedding, "task": self.task})

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """The parts composed: equal to the unsplit model's forward on ``inputs``."""
        embeddings, context = self.embedding(inputs)
        return self.task(self.backbone(embeddings), context)


Splitter = Callable[[nn.Module], SplitModel]

_SPLITTERS: dict[type | str, Splitter] = {}


def register_splitter(model_type: type | str, splitter: Splitter) -> None:
    """Register ``splitter(model) -> SplitModel`` for models of ``model_type`` (and subclasses).

    Args:
        model_type: a class, or its qualified name ``"module.Class"`` (to register a class
            without importing its library).
        splitter: builds the three parts, sharing parameters with the model.
    """
    _SPLITTERS[model_type] = splitter


def _type_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def split_model(model: nn.Module) -> SplitModel:
    """Split ``model`` into device embedding, server backbone and device task parts.

    Args:
        model: a built model whose type (or a base class) has a registered splitter:
            :class:`~edgelam.models.llm4cp.LLM4CPPredictor` and
            ``transformers.GPT2LMHeadModel`` are registered here.

    Returns:
        A :class:`SplitModel` whose parts share the model's parameters.

    Raises:
        TypeError: no splitter is registered for the model's type.
    """
    for cls in type(model).__mro__:
        splitter = _SPLITTERS.get(cls) or _SPLITTERS.get(_type_name(cls))
        if splitter is not None:
            return splitter(model)
    known = sorted(k if isinstance(k, str) else _type_name(k) for k in _SPLITTERS)
    raise TypeError(
        f"split_model: no splitter registered for model type {_type_name(type(model))!r}; "
        f"register one with edgelam.training.split.register_splitter({type(model).__name__}, fn) "
        f"where fn(model) returns a SplitModel. Registered types: {known}"
    )


class InputsEmbedsBackbone(nn.Module):
    """Server part: a Hugging Face ``GPT2Model`` run on ``inputs_embeds``.

    GPT-2 adds its learned position embeddings, runs its blocks and the final layer norm. The
    model is held as ``self.backbone``, so :func:`~edgelam.models.adapters.apply_lora` applies.

    Shapes:
        embeddings: ``[B, L, d]`` (``L <= n_positions``) -> representations ``[B, L, d]``.
    """

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.width = backbone.config.n_embd

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        if embeddings.dim() != 3 or embeddings.shape[-1] != self.width:
            raise ValueError(
                f"backbone: expected embeddings [B, L, {self.width}], got {list(embeddings.shape)}"
            )
        return self.backbone(inputs_embeds=embeddings, use_cache=False).last_hidden_state


# -- LLM4CP -----------------------------------------------------------------------------------
class LLM4CPEmbedding(nn.Module):
    """Device part of :class:`LLM4CPPredictor` before its backbone (steps 1-3 of its docstring).

    Holds only the predictor's own pre-backbone modules (shared, not copied) and runs the
    predictor's own :meth:`~edgelam.models.llm4cp.LLM4CPPredictor.embed` on them, so a device
    copy never carries the backbone.

    Shapes:
        history: ``[B, L_h, 2F]`` -> ``(tokens [B, L_h, d_model], (mean, std))`` with mean/std
        ``[]`` ('batch' normalisation) or ``[B, 1, 1]`` ('sample').
    """

    _mix_patches = LLM4CPPredictor._mix_patches
    forward = LLM4CPPredictor.embed

    def __init__(self, model: LLM4CPPredictor) -> None:
        super().__init__()
        self.history_slots, self.num_subcarriers = model.history_slots, model.num_subcarriers
        self.patch_size, self.normalization = model.patch_size, model.normalization
        self.patch_mix = model.patch_mix
        self.frequency_branch, self.delay_branch = model.frequency_branch, model.delay_branch
        self.token_embedding = model.token_embedding
        self.register_buffer("positions", model.positions, persistent=False)
        self.embedding_dropout, self.time_mix = model.embedding_dropout, model.time_mix


class LLM4CPTask(nn.Module):
    """Device part of :class:`LLM4CPPredictor` after its backbone: the predictor's own
    :meth:`~edgelam.models.llm4cp.LLM4CPPredictor.project` (head, time projection,
    de-normalisation with the statistics the embedding part kept) on its shared modules.

    Shapes:
        hidden: ``[B, L_h, d_model]``, context ``(mean, std)`` -> prediction ``[B, L_f, 2F]``.
    """

    forward = LLM4CPPredictor.project

    def __init__(self, model: LLM4CPPredictor) -> None:
        super().__init__()
        self.head, self.time_projection = model.head, model.time_projection


def split_llm4cp(model: LLM4CPPredictor) -> SplitModel:
    """LLM4CP: CSI preprocessing and token embedding | GPT-2 | head (loss: NMSE)."""
    return SplitModel(
        LLM4CPEmbedding(model), InputsEmbedsBackbone(model.backbone), LLM4CPTask(model), nmse_loss
    )


# -- GPT-2 language model ---------------------------------------------------------------------
class TokenEmbedding(nn.Module):
    """Device part of a GPT-2 LM: the token embedding ``wte`` (positions are added on the server).

    Shapes:
        input_ids: ``[B, L]`` integer -> ``(embeddings [B, L, d], None)``.
    """

    def __init__(self, wte: nn.Embedding, max_length: int) -> None:
        super().__init__()
        self.wte, self.max_length = wte, max_length

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, None]:
        if input_ids.dim() != 2 or input_ids.is_floating_point():
            raise ValueError(
                f"embedding: expected integer input_ids [B, L], got {list(input_ids.shape)} "
                f"{input_ids.dtype}"
            )
        if input_ids.shape[1] > self.max_length:
            raise ValueError(
                f"embedding: sequence length {input_ids.shape[1]} exceeds n_positions="
                f"{self.max_length}"
            )
        return self.wte(input_ids), None


class LMHeadTask(nn.Module):
    """Device part of a GPT-2 LM after its backbone: ``lm_head`` (weight tied to ``wte``).

    Shapes:
        hidden: ``[B, L, d]`` -> logits ``[B, L, vocab]``.
    """

    def __init__(self, lm_head: nn.Linear) -> None:
        super().__init__()
        self.lm_head = lm_head

    def forward(self, hidden: torch.Tensor, context: Context = None) -> torch.Tensor:
        return self.lm_head(hidden)


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy, mean over predicted tokens (labels ``-100`` are ignored).

    Shapes:
        logits: ``[B, L, V]``, labels: ``[B, L]`` (the input ids) -> scalar; position ``t``
        predicts token ``t + 1``.
    """
    if labels.shape != logits.shape[:-1]:
        raise ValueError(
            f"labels: expected shape {list(logits.shape[:-1])}, got {list(labels.shape)}"
        )
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)


def split_gpt2_lm(model: nn.Module) -> SplitModel:
    """``transformers.GPT2LMHeadModel``: ``wte`` | GPT2Model on ``inputs_embeds`` | ``lm_head``.

    ``lm_head`` stays tied to ``wte`` (one parameter) in the device part; the server's
    ``GPT2Model`` still holds ``wte`` but never uses it.
    """
    transformer = model.transformer
    return SplitModel(
        TokenEmbedding(transformer.wte, transformer.config.n_positions),
        InputsEmbedsBackbone(transformer),
        LMHeadTask(model.lm_head),
        causal_lm_loss,
    )


register_splitter(LLM4CPPredictor, split_llm4cp)
register_splitter("transformers.models.gpt2.modeling_gpt2.GPT2LMHeadModel", split_gpt2_lm)
