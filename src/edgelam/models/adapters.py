"""Choosing what trains, applied to a model that is already built (torchtitan style).

A model with a GPT-2 backbone exposes it as ``model.backbone`` (a bare ``GPT2Model`` is its own
backbone). These functions change only the backbone's parameters; every other module of the
model (CSI branches, embeddings, heads) keeps whatever ``requires_grad`` it has (trainable
after construction):

* :func:`apply_lora` injects ``peft`` LoRA layers in place (the forward is unchanged) and
  freezes the backbone's base weights;
* :func:`apply_ln_pe_tuning` (LLM4CP's scheme) trains only layer norms and position embeddings;
* :func:`apply_full_tuning` trains the whole backbone except its (unused) token embedding;
* :func:`freeze_backbone` trains nothing of the backbone.

:func:`trainable_state` / :func:`load_trainable_state` read and write exactly the trainable
parameters: what federated learning sends and averages. :func:`build_llm4cp` puts it together.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from edgelam.config import ConfigError, to_dict
from edgelam.models.backbones import build_gpt2_backbone
from edgelam.models.layers import seeded
from edgelam.models.llm4cp import LLM4CPConfig, LLM4CPPredictor
from edgelam.models.pretrained import apply_pretrained, load_pretrained_backbone, resolve_wireless

__all__ = [
    "apply_full_tuning",
    "apply_ln_pe_tuning",
    "apply_lora",
    "build_llm4cp",
    "count_parameters",
    "freeze_backbone",
    "load_trainable_state",
    "trainable_state",
]


def _backbone(model: nn.Module) -> nn.Module:
    backbone = getattr(model, "backbone", model)
    if not isinstance(backbone, nn.Module):
        raise TypeError(f"{type(model).__name__}.backbone is not an nn.Module")
    return backbone


def _is_lora(name: str) -> bool:
    return "lora_" in name


def _is_ln_or_pe(name: str) -> bool:
    parts = name.split(".")
    return parts[0] == "wpe" or any(p.startswith("ln_") for p in parts)


def freeze_backbone(model: nn.Module) -> nn.Module:
    """Set ``requires_grad=False`` on every backbone parameter (LoRA matrices included).

    Returns:
        ``model`` (changed in place).
    """
    for p in _backbone(model).parameters():
        p.requires_grad_(False)
    return model


def apply_full_tuning(model: nn.Module) -> nn.Module:
    """Train every backbone parameter except the token embedding ``wte``.

    The predictors feed ``inputs_embeds``, so ``wte`` never receives a gradient; training it
    would only make federated rounds send it (38.6M values for GPT-2's vocabulary).

    Returns:
        ``model`` (changed in place).
    """
    for name, p in _backbone(model).named_parameters():
        p.requires_grad_(name.split(".")[0] != "wte")
    return model


def apply_ln_pe_tuning(model: nn.Module) -> nn.Module:
    """LLM4CP's tuning: train the backbone's layer norms and position embeddings only.

    Every parameter under a ``ln_*`` module (``ln_1``, ``ln_2`` of each block, ``ln_f``) and
    ``wpe`` trains; attention, MLP and token embedding are frozen. LoRA matrices, if LoRA was
    applied before, stay trainable (so ``apply_lora`` then ``apply_ln_pe_tuning`` trains both).

    Returns:
        ``model`` (changed in place).
    """
    for name, p in _backbone(model).named_parameters():
        p.requires_grad_(_is_ln_or_pe(name) or _is_lora(name))
    return model


def apply_lora(
    model: nn.Module,
    rank: int,
    alpha: float,
    targets: Sequence[str] = ("c_attn", "c_proj"),
    dropout: float = 0.0,
) -> nn.Module:
    """Inject LoRA adapters (``peft``) into the backbone's GPT-2 Conv1D layers, in place.

    Each targeted weight ``W`` becomes ``W x + (alpha / rank) B A x`` with ``A: in -> rank``
    (Kaiming-uniform, drawn from torch's global RNG: call under a seed) and ``B: rank -> out``
    (zero, so the adapted model starts equal to the original). ``fan_in_fan_out=True`` because
    GPT-2's Conv1D stores weights as ``[in, out]``. A target matches every module whose
    qualified name ends in it: ``"c_proj"`` adapts both ``attn.c_proj`` (d -> d) and
    ``mlp.c_proj`` (4d -> d). Afterwards only the LoRA matrices of the backbone train.

    Args:
        model: a model with a ``backbone`` (or a ``GPT2Model``).
        rank: LoRA rank ``r``.
        alpha: LoRA scaling numerator.
        targets: module-name suffixes to adapt.
        dropout: dropout on the LoRA branch input.

    Returns:
        ``model`` (changed in place; its forward signature and outputs at init are unchanged).

    Raises:
        ConfigError: no module matches ``targets``.
        ValueError: LoRA was already applied to this backbone.
    """
    backbone = _backbone(model)
    if any(_is_lora(n) for n, _ in backbone.named_parameters()):
        raise ValueError("LoRA is already applied to this backbone")
    from peft import LoraConfig, inject_adapter_in_model  # slow import: only when used

    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        target_modules=list(targets),
        lora_dropout=dropout,
        fan_in_fan_out=True,
        bias="none",
    )
    try:
        inject_adapter_in_model(config, backbone)
    except ValueError as err:
        raise ConfigError(
            f"lora_targets: {list(targets)} match no backbone module ({err})"
        ) from err
    for name, p in backbone.named_parameters():
        p.requires_grad_(_is_lora(name))
    return model


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """``(total, trainable)`` numbers of scalar parameters (shared tensors counted once)."""
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable parameters by qualified name: what federated rounds send and average.

    Returns:
        ``{name: tensor}`` of detached tensors that SHARE storage with the model (clone them to
        keep a snapshot), in ``named_parameters`` order.
    """
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Copy ``state`` into the model's trainable parameters (in place, no autograd).

    Strict: ``state`` must name exactly the trainable parameters, with their shapes.

    Raises:
        KeyError: names missing from ``state`` or not trainable in the model (both listed).
        ValueError: a tensor's shape differs from its parameter's.
    """
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    missing = sorted(set(params) - set(state))
    unexpected = sorted(set(state) - set(params))
    if missing or unexpected:
        raise KeyError(
            f"trainable state does not match the model: missing {missing}, unexpected {unexpected}"
        )
    for name, value in state.items():
        if value.shape != params[name].shape:
            raise ValueError(
                f"{name}: shape {list(value.shape)} != parameter shape {list(params[name].shape)}"
            )
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)


def build_llm4cp(cfg: LLM4CPConfig, seed: int = 0) -> tuple[LLM4CPPredictor, dict[str, Any]]:
    """Build backbone + LLM4CP predictor and apply ``cfg.trainable``, all seeded by ``seed``.

    Returns:
        ``(model, info)``: the predictor in train mode and a JSON-ready dict with
        ``total_params``, ``trainable_params``, ``backbone_params``, ``pretrained`` (bool),
        ``pretrained_source``, ``backbone`` (a description) and ``trainable``.

    Warns:
        PretrainedWeightsUnavailable: ``cfg.backbone.pretrained`` cannot be loaded locally.

    >>> from edgelam.models.backbones import BackboneConfig
    >>> cfg = LLM4CPConfig(history_slots=4, future_slots=2, num_subcarriers=3, patch_size=2,
    ...     res_dim=2, res_layers=1, backbone=BackboneConfig(name="custom", num_layers=1,
    ...     d_model=8, n_head=2, n_positions=4))
    >>> model, info = build_llm4cp(cfg, seed=0)
    >>> model(torch.randn(5, 4, 6)).shape, info["pretrained"]
    (torch.Size([5, 2, 6]), False)
    """
    with seeded(seed):
        backbone = build_gpt2_backbone(cfg.backbone, seed=seed)
        model = LLM4CPPredictor(cfg, backbone)
        checkpoint = resolve_wireless(cfg.backbone.pretrained)
        if checkpoint is not None:  # an edgelam pre-trained checkpoint, before any adapter
            state, card = load_pretrained_backbone(checkpoint)
            apply_pretrained(model, state, card, parts=cfg.pretrained_parts)
        if cfg.trainable == "lora":
            apply_lora(model, cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets, cfg.lora_dropout)
        elif cfg.trainable == "ln_pe":
            apply_ln_pe_tuning(model)
        else:
            apply_full_tuning(model)
    total, trainable = count_parameters(model)
    build = backbone.build_info
    info = {
        "model": "llm4cp",
        "total_params": total,
        "trainable_params": trainable,
        "backbone_params": count_parameters(backbone)[0],
        "pretrained": build.pretrained,
        "pretrained_source": build.source,
        "backbone": build.description,
        "trainable": cfg.trainable,
        "config": to_dict(cfg),
    }
    return model, info
