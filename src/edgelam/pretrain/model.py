"""The model pre-trained on the corpus: a built LLM4CP predictor plus a reconstruction head.

:class:`PretrainModel` does not re-implement the predictor. Its forward *is* the predictor's
(next-slot prediction). For masked reconstruction it runs the same forward on the masked
history and reads the backbone's per-token hidden states with a forward hook on
``predictor.backbone``; a ``Linear(d_model -> 2F)`` reconstruction head maps token ``t`` to
slot ``t`` of the history, in the predictor's per-call normalised units, de-normalised with the
same statistics the predictor used (:func:`~edgelam.models.layers.normalize_per_call`).

**Several subcarrier counts.** The token embedding ``Conv1d(2F -> d_model)`` and the heads
are ``F``-wide; everything else (CSI branches, patch and time mixers, backbone, time
projection) is not. For each extra ``F`` the model holds one more predictor whose ``F``-wide
modules are its own and whose other modules *are* the main predictor's (the same module
objects, so one set of parameters trains on every ``F``). A batch of width ``2F`` runs through
the predictor of its ``F``.

After pre-training, the main predictor (the ``F`` of the config) is exported by
:mod:`edgelam.models.pretrained`: its F-agnostic parts serve any ``F``, its embedding and heads
its own ``F``; the per-``F`` extras and the reconstruction heads only serve pre-training.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from edgelam.models.adapters import build_llm4cp, count_parameters
from edgelam.models.layers import denormalize, normalize_per_call, seeded
from edgelam.models.llm4cp import LLM4CPConfig, LLM4CPPredictor
from edgelam.pretrain.objectives import derive_seed

__all__ = ["PretrainModel", "SHARED_MODULES", "build_pretrain_model"]

#: The predictor's F-agnostic submodules, shared by the predictors of every ``F``.
SHARED_MODULES = (
    "patch_mix",
    "frequency_branch",
    "delay_branch",
    "time_mix",
    "backbone",
    "time_projection",
)


class _Variant(nn.Module):
    """The predictor and reconstruction head of one extra ``F``."""

    def __init__(self, predictor: LLM4CPPredictor) -> None:
        super().__init__()
        self.predictor = predictor
        d_model = predictor.backbone.config.n_embd
        self.reconstruction_head = nn.Linear(d_model, 2 * predictor.num_subcarriers)


class PretrainModel(nn.Module):
    """An :class:`LLM4CPPredictor` with a masked-reconstruction head on its backbone's output.

    Args:
        predictor: a built predictor (any trainable scheme); its ``F`` is the main one.
        extra_predictors: predictors of other ``F`` (same slots and backbone width); their
            :data:`SHARED_MODULES` are replaced by the main predictor's.

    Shapes:
        forward: history ``[B, L_h, 2F]`` -> prediction ``[B, L_f, 2F]``.
        reconstruct: masked history ``[B, L_h, 2F]`` -> reconstruction ``[B, L_h, 2F]``.
    """

    def __init__(
        self, predictor: LLM4CPPredictor, extra_predictors: Sequence[LLM4CPPredictor] = ()
    ) -> None:
        super().__init__()
        self.predictor = predictor
        d_model = predictor.backbone.config.n_embd
        self.reconstruction_head = nn.Linear(d_model, 2 * predictor.num_subcarriers)
        self.variants = nn.ModuleDict()
        for extra in extra_predictors:
            f = extra.num_subcarriers
            if f == predictor.num_subcarriers or str(f) in self.variants:
                raise ValueError(f"extra_predictors: F={f} given twice")
            if (extra.history_slots, extra.future_slots) != (
                predictor.history_slots,
                predictor.future_slots,
            ):
                raise ValueError("extra_predictors: history/future slots differ from the main")
            for name in SHARED_MODULES:
                setattr(extra, name, getattr(predictor, name))
            self.variants[str(f)] = _Variant(extra)

    @property
    def subcarrier_counts(self) -> list[int]:
        """Every ``F`` the model serves, ascending."""
        return sorted([self.predictor.num_subcarriers, *map(int, self.variants)])

    def _parts(self, x: torch.Tensor) -> tuple[LLM4CPPredictor, nn.Linear]:
        """The predictor and reconstruction head for the width of ``x`` (``[..., 2F]``)."""
        f = x.shape[-1] // 2
        if f == self.predictor.num_subcarriers:
            return self.predictor, self.reconstruction_head
        if str(f) in self.variants and x.shape[-1] == 2 * f:
            variant = self.variants[str(f)]
            return variant.predictor, variant.reconstruction_head
        raise ValueError(
            f"input width {x.shape[-1]}: the model serves 2F for F in {self.subcarrier_counts}"
        )

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The parameters once each: shared modules appear under the main predictor only."""
        state = super().state_dict(*args, **kwargs)
        shared = tuple(f".predictor.{name}." for name in SHARED_MODULES)
        return type(state)(
            (k, v)
            for k, v in state.items()
            if not (k.startswith("variants.") and any(s in k for s in shared))
        )

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """Load :meth:`state_dict` output (shared modules are filled through the main one)."""
        shared = tuple(f".predictor.{name}." for name in SHARED_MODULES)
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        missing = [
            k
            for k in result.missing_keys
            if not (k.startswith("variants.") and any(s in k for s in shared))
        ]
        if strict and (missing or result.unexpected_keys):
            raise RuntimeError(
                f"PretrainModel.load_state_dict: missing {missing}, unexpected "
                f"{result.unexpected_keys}"
            )
        return result

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        """Next-slot prediction: exactly the forward of the predictor of the input's ``F``."""
        return self._parts(history)[0](history)

    def hidden_states(self, history: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the predictor once; return ``(prediction, backbone hidden states)``.

        Shapes:
            history ``[B, L_h, 2F]`` -> ``([B, L_f, 2F], [B, L_h, d_model])``.
        """
        predictor = self._parts(history)[0]
        captured: dict[str, torch.Tensor] = {}

        def keep(module: nn.Module, args: Any, output: Any) -> None:
            captured["hidden"] = output.last_hidden_state

        handle = predictor.backbone.register_forward_hook(keep)
        try:
            prediction = predictor(history)
        finally:
            handle.remove()
        return prediction, captured["hidden"]

    def reconstruct(self, masked_history: torch.Tensor) -> torch.Tensor:
        """Reconstruct every history slot from the masked history.

        Shapes:
            masked_history ``[B, L_h, 2F]`` -> ``[B, L_h, 2F]`` (same units as the input).
        """
        predictor, head = self._parts(masked_history)
        _, hidden = self.hidden_states(masked_history)
        _, mean, std = normalize_per_call(masked_history, predictor.normalization)
        return denormalize(head(hidden), mean, std)


def build_pretrain_model(
    cfg: LLM4CPConfig, seed: int = 0, subcarrier_counts: Sequence[int] = ()
) -> tuple[PretrainModel, dict[str, Any]]:
    """Build the predictor (:func:`~edgelam.models.build_llm4cp`) and wrap it, seeded.

    Args:
        cfg: the main predictor (its ``F`` is the exported one).
        seed: seeds every initialisation.
        subcarrier_counts: every ``F`` to serve (``cfg.num_subcarriers`` is always served);
            each extra ``F`` gets its own embedding and heads, initialised from
            ``(seed, 2, F)``.

    Returns:
        ``(model, info)``: ``info`` is ``build_llm4cp``'s with the totals of the wrapper.

    >>> from edgelam.models.backbones import BackboneConfig
    >>> cfg = LLM4CPConfig(history_slots=4, future_slots=2, num_subcarriers=3, patch_size=2,
    ...     res_dim=2, res_layers=1, trainable="full", backbone=BackboneConfig(name="custom",
    ...     num_layers=1, d_model=8, n_head=2, n_positions=4))
    >>> model, info = build_pretrain_model(cfg)
    >>> model.reconstruct(torch.randn(5, 4, 6)).shape
    torch.Size([5, 4, 6])
    >>> model, _ = build_pretrain_model(cfg, subcarrier_counts=(2, 3))
    >>> model(torch.randn(5, 4, 4)).shape, model.subcarrier_counts
    (torch.Size([5, 2, 4]), [2, 3])
    """
    predictor, info = build_llm4cp(cfg, seed=seed)
    extras = []
    for f in sorted(set(subcarrier_counts) - {cfg.num_subcarriers}):
        extra, _ = build_llm4cp(
            dataclasses.replace(
                cfg, num_subcarriers=f, pretrained_parts=_f_agnostic(cfg.pretrained_parts)
            ),
            seed=derive_seed(seed, 2, f),
        )
        extras.append(extra)
    with seeded(derive_seed(seed, 1)):
        model = PretrainModel(predictor, extras)
    total, trainable = count_parameters(model)
    return model, {**info, "total_params": total, "trainable_params": trainable}


def _f_agnostic(parts: Sequence[str]) -> tuple[str, ...]:
    """Pre-trained weight groups an extra ``F`` can load (not the F-wide 'io')."""
    return tuple(p for p in parts if p != "io")
