"""The looped LAM as a channel predictor: forecasting as masked reconstruction.

The looped LAM is pre-trained to reconstruct masked patches of a ``T``-slot CSI window
(:mod:`~edgelam.training.looped_tp.model`). :class:`LoopedPredictor` asks it the same kind of
question: the last ``T - L_f`` history slots, followed by ``L_f`` slots masked on every
subcarrier, go in as ``T`` tokens (:func:`~edgelam.training.looped_tp.model.csi_features`); the
reconstruction of the masked slots is the prediction. Like the LLM4CP predictor it standardises
each call's history (:func:`~edgelam.models.layers.normalize_per_call`) and de-normalises its
output, so it takes and returns the same units as its input and plugs into
:func:`~edgelam.airinterface.prediction.evaluate.evaluate_predictor` and
:class:`~edgelam.training.fedavg.FedAvg` unchanged (all parameters trainable).

:func:`load_looped_predictor` builds one from a looped-TP run directory (or its
``model.safetensors``). At another ``F`` than the checkpoint's, the ``F``-wide parts
(``embed_in``: ``4F -> E``, ``head``: ``d -> 2F``) are re-initialised from the seed and the
``F``-agnostic parts (``embed_out``, ``pos``, the shared ``block``, ``ln_f``) load from the
checkpoint. :func:`build_looped_predictor` gives the same architecture at random init.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgelam.config import from_dict
from edgelam.models.layers import Normalization, denormalize, normalize_per_call
from edgelam.training.looped_tp.model import (
    LoopedLAM,
    LoopedLAMConfig,
    build_looped_lam,
    csi_features,
)

__all__ = [
    "F_WIDE_PARTS",
    "LoopedPredictor",
    "build_looped_predictor",
    "forecast_inputs",
    "load_looped_predictor",
    "read_checkpoint",
]

#: Top-level modules whose shapes depend on ``F`` (re-initialised when ``F`` changes).
F_WIDE_PARTS = ("embed_in", "head")
WEIGHTS_FILE = "model.safetensors"
FORMAT = "edgelam-looped-lam"


def forecast_inputs(context: torch.Tensor, future_slots: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The context followed by ``future_slots`` fully masked slots, and the mask.

    Shapes:
        context ``[B, T - L_f, 2F]`` -> ``(features [B, T, 4F], mask [B, T, 2F] bool)``; the
        mask is True exactly on the last ``L_f`` slots (masked entries are 0, as in
        :func:`~edgelam.pretrain.objectives.apply_mask`).
    """
    b, keep, width = context.shape
    tail = context.new_zeros(b, future_slots, width)
    masked = torch.cat([context, tail], dim=1)
    mask = torch.zeros(b, keep + future_slots, width, dtype=torch.bool, device=context.device)
    mask[:, keep:] = True
    return csi_features(masked, mask), mask


class LoopedPredictor(nn.Module):
    """Channel prediction with a :class:`LoopedLAM` by masked reconstruction.

    Args:
        model: a ``csi`` looped LAM of ``seq_len`` ``T`` and ``num_subcarriers`` ``F``.
        future_slots: ``L_f`` (< ``T``); the model sees the last ``T - L_f`` history slots.
        normalization: per-call standardisation, ``"batch"`` (one mean/std per call, like
            LLM4CP) or ``"sample"`` (one per item).

    Shapes:
        forward: history ``[B, L_h, 2F]`` (``L_h >= T - L_f``) -> prediction ``[B, L_f, 2F]``,
        in the units of the history.
    """

    def __init__(
        self, model: LoopedLAM, future_slots: int = 4, normalization: Normalization = "batch"
    ) -> None:
        super().__init__()
        cfg = model.cfg
        if cfg.task != "csi":
            raise ValueError(f"model: task must be 'csi', got {cfg.task!r}")
        if not 1 <= future_slots < cfg.seq_len:
            raise ValueError(f"future_slots: must be in [1, {cfg.seq_len - 1}], got {future_slots}")
        if normalization not in ("batch", "sample"):
            raise ValueError(f"normalization: must be 'batch' or 'sample', got {normalization!r}")
        self.model, self.future_slots, self.normalization = model, future_slots, normalization

    @property
    def context_slots(self) -> int:
        """History slots the model sees, ``T - L_f``."""
        return self.model.cfg.seq_len - self.future_slots

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        cfg, keep = self.model.cfg, self.context_slots
        if (
            history.dim() != 3
            or history.shape[1] < keep
            or history.shape[2] != 2 * cfg.num_subcarriers
        ):
            raise ValueError(
                f"history: expected [B, >={keep}, {2 * cfg.num_subcarriers}], got {list(history.shape)}"
            )
        x, mean, std = normalize_per_call(history[:, -keep:], self.normalization)
        features, _ = forecast_inputs(x, self.future_slots)
        out = self.model(features)[:, keep:]  # reconstruction of the masked slots
        return denormalize(out, mean, std)

    def extra_repr(self) -> str:
        return f"future_slots={self.future_slots}, normalization={self.normalization!r}"


def _weights_path(path: str | Path) -> Path:
    path = Path(path)
    weights = path / WEIGHTS_FILE if path.is_dir() else path
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: no looped-LAM checkpoint ({WEIGHTS_FILE})")
    return weights


def read_checkpoint(path: str | Path) -> tuple[LoopedLAMConfig, dict[str, torch.Tensor]]:
    """The architecture and dense state dict of a looped-TP checkpoint (run dir or file)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    weights = _weights_path(path)
    with safe_open(str(weights), framework="pt") as f:
        meta = (f.metadata() or {}).get(FORMAT)
    if meta is None:
        card = weights.with_name("model_card.json")
        if not card.is_file():
            raise ValueError(f"{weights}: no {FORMAT!r} metadata and no model_card.json beside it")
        arch = json.loads(card.read_text())["architecture"]
    else:
        arch = json.loads(meta)
    return from_dict(LoopedLAMConfig, arch), load_file(str(weights))


def build_looped_predictor(
    cfg: LoopedLAMConfig,
    num_subcarriers: int | None = None,
    *,
    future_slots: int = 4,
    normalization: Normalization = "batch",
    seed: int = 0,
) -> LoopedPredictor:
    """The same architecture at random init (seeded), at ``num_subcarriers`` (default cfg's)."""
    if num_subcarriers is not None:
        cfg = dataclasses.replace(cfg, num_subcarriers=num_subcarriers)
    return LoopedPredictor(build_looped_lam(cfg, seed), future_slots, normalization)


def load_looped_predictor(
    run_dir_or_checkpoint: str | Path,
    num_subcarriers: int | None = None,
    *,
    future_slots: int = 4,
    normalization: Normalization = "batch",
    seed: int = 0,
) -> tuple[LoopedPredictor, dict[str, Any]]:
    """A :class:`LoopedPredictor` with the checkpoint's weights, and what was loaded.

    Args:
        run_dir_or_checkpoint: a looped-TP run directory or its ``model.safetensors``.
        num_subcarriers: the target ``F``; default the checkpoint's. If it differs,
            ``embed_in`` and ``head`` are re-initialised from ``seed`` (:data:`F_WIDE_PARTS`).
        future_slots, normalization: see :class:`LoopedPredictor`.
        seed: initialisation of the re-initialised parts.

    Returns:
        ``(predictor, info)``; ``info``: ``checkpoint``, ``checkpoint_num_subcarriers``,
        ``num_subcarriers``, ``loaded`` and ``reinitialised`` (tensor names of the model).
    """
    cfg, state = read_checkpoint(run_dir_or_checkpoint)
    f = cfg.num_subcarriers if num_subcarriers is None else num_subcarriers
    predictor = build_looped_predictor(
        cfg, f, future_slots=future_slots, normalization=normalization, seed=seed
    )
    own = predictor.model.state_dict()
    if f == cfg.num_subcarriers:
        keep = dict(state)
    else:
        keep = {n: t for n, t in state.items() if n.split(".")[0] not in F_WIDE_PARTS}
    missing, unexpected = predictor.model.load_state_dict(keep, strict=False)
    if unexpected:
        raise ValueError(f"checkpoint has tensors the model lacks: {unexpected}")
    info = {
        "checkpoint": str(_weights_path(run_dir_or_checkpoint)),
        "checkpoint_num_subcarriers": cfg.num_subcarriers,
        "num_subcarriers": f,
        "loaded": sorted(keep),
        "reinitialised": sorted(n for n in own if n in missing),
    }
    return predictor, info
