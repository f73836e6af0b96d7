"""The model pre-trained on the corpus: a built LLM4CP predictor plus a reconstruction head.

:class:`PretrainModel` does not re-implement the predictor. Its forward *is* the predictor's
(next-slot prediction). For masked reconstruction it runs the same forward on the masked
history and reads the backbone's per-token hidden states with a forward hook on
``predictor.backbone``; a ``Linear(d_model -> 2F)`` reconstruction head maps token ``t`` to
slot ``t`` of the history, in the predictor's per-call normalised units, de-normalised with the
same statistics the predictor used (:func:`~edgelam.models.layers.normalize_per_call`).

After pre-training, the predictor's F-agnostic parts (GPT-2 backbone, patch mixer, CSI
branches) are exported by :mod:`edgelam.models.pretrained`; the reconstruction head only
serves pre-training.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from edgelam.models.adapters import build_llm4cp, count_parameters
from edgelam.models.layers import denormalize, normalize_per_call, seeded
from edgelam.models.llm4cp import LLM4CPConfig, LLM4CPPredictor
from edgelam.pretrain.objectives import derive_seed

__all__ = ["PretrainModel", "build_pretrain_model"]


class PretrainModel(nn.Module):
    """An :class:`LLM4CPPredictor` with a masked-reconstruction head on its backbone's output.

    Args:
        predictor: a built predictor (any trainable scheme).

    Shapes:
        forward: history ``[B, L_h, 2F]`` -> prediction ``[B, L_f, 2F]``.
        reconstruct: masked history ``[B, L_h, 2F]`` -> reconstruction ``[B, L_h, 2F]``.
    """

    def __init__(self, predictor: LLM4CPPredictor) -> None:
        super().__init__()
        self.predictor = predictor
        d_model = predictor.backbone.config.n_embd
        self.reconstruction_head = nn.Linear(d_model, 2 * predictor.num_subcarriers)

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        """Next-slot prediction: exactly the predictor's forward."""
        return self.predictor(history)

    def hidden_states(self, history: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the predictor once; return ``(prediction, backbone hidden states)``.

        Shapes:
            history ``[B, L_h, 2F]`` -> ``([B, L_f, 2F], [B, L_h, d_model])``.
        """
        captured: dict[str, torch.Tensor] = {}

        def keep(module: nn.Module, args: Any, output: Any) -> None:
            captured["hidden"] = output.last_hidden_state

        handle = self.predictor.backbone.register_forward_hook(keep)
        try:
            prediction = self.predictor(history)
        finally:
            handle.remove()
        return prediction, captured["hidden"]

    def reconstruct(self, masked_history: torch.Tensor) -> torch.Tensor:
        """Reconstruct every history slot from the masked history.

        Shapes:
            masked_history ``[B, L_h, 2F]`` -> ``[B, L_h, 2F]`` (same units as the input).
        """
        _, hidden = self.hidden_states(masked_history)
        _, mean, std = normalize_per_call(masked_history, self.predictor.normalization)
        return denormalize(self.reconstruction_head(hidden), mean, std)


def build_pretrain_model(cfg: LLM4CPConfig, seed: int = 0) -> tuple[PretrainModel, dict[str, Any]]:
    """Build the predictor (:func:`~edgelam.models.build_llm4cp`) and wrap it, seeded.

    Returns:
        ``(model, info)``: ``info`` is ``build_llm4cp``'s with the totals of the wrapper.

    >>> from edgelam.models.backbones import BackboneConfig
    >>> cfg = LLM4CPConfig(history_slots=4, future_slots=2, num_subcarriers=3, patch_size=2,
    ...     res_dim=2, res_layers=1, trainable="full", backbone=BackboneConfig(name="custom",
    ...     num_layers=1, d_model=8, n_head=2, n_positions=4))
    >>> model, info = build_pretrain_model(cfg)
    >>> model.reconstruct(torch.randn(5, 4, 6)).shape
    torch.Size([5, 4, 6])
    """
    predictor, info = build_llm4cp(cfg, seed=seed)
    with seeded(derive_seed(seed, 1)):
        model = PretrainModel(predictor)
    total, trainable = count_parameters(model)
    return model, {**info, "total_params": total, "trainable_params": trainable}
