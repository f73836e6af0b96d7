"""Evaluation of a pre-training model on a validation or held-out :class:`PretrainDataset`.

Per corpus file (part), up to ``max_items`` evenly spaced items are scored, in CSI units (each
part's predictions and targets de-normalised with its own statistics, so NMSE is not shifted by
the normalisation mean):

* ``nmse_db``: next-slot prediction, ``10 log10`` of the mean over items of
  ``||H_hat - H||^2 / ||H||^2`` over the ``L_f`` future slots;
* ``recon_nmse_db``: masked reconstruction of the history, masked entries only, with a fixed
  seeded mask;
* ``last_slot_nmse_db``: the no-prediction reference (the last history slot repeated).

Items of all parts are pooled for the overall figures; ``per_config`` gives each file's.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from edgelam.pretrain.corpus import PretrainDataset, config_name
from edgelam.pretrain.model import PretrainModel
from edgelam.pretrain.objectives import apply_mask, derive_seed, patch_mask

__all__ = ["evaluate_pretrain", "to_db"]


def to_db(value: float) -> float:
    """``10 log10(value)`` (``-inf`` for 0).

    >>> to_db(0.1)
    -10.0
    """
    return 10.0 * math.log10(value) if value > 0 else -math.inf


def _per_item_nmse(pred: torch.Tensor, target: torch.Tensor, mask=None) -> torch.Tensor:
    if mask is None:
        mask = torch.ones_like(target, dtype=torch.bool)
    zero = torch.zeros((), dtype=pred.dtype)
    err = torch.where(mask, pred - target, zero).flatten(1).square().sum(1)
    ref = torch.where(mask, target, zero).flatten(1).square().sum(1).clamp_min(1e-30)
    return err / ref


@torch.no_grad()
def evaluate_pretrain(
    model: PretrainModel,
    dataset: PretrainDataset,
    *,
    max_items: int = 256,
    batch_size: int = 256,
    patch_slots: int = 4,
    patch_subcarriers: int = 4,
    mask_ratio: float = 0.3,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Prediction, reconstruction and no-prediction NMSE [dB], overall and per part.

    Args:
        model: the model (put in eval mode here, back in train mode after).
        dataset: the parts to evaluate (their noise epoch is left as it is).
        max_items: items per part at most (evenly spaced over the part).
        batch_size: items per forward pass (each batch from one part).
        patch_slots, patch_subcarriers, mask_ratio: the reconstruction mask.
        seed: seeds the masks (part ``i`` uses ``(seed, i)``).
        device: where the model is.

    Returns:
        ``{"nmse_db", "recon_nmse_db", "last_slot_nmse_db", "items", "per_config":
        {name: nmse_db}}``.
    """
    was_training = model.training
    model.eval()
    pooled: dict[str, list[torch.Tensor]] = {"pred": [], "recon": [], "last": []}
    per_config = {}
    for i, part in enumerate(dataset.datasets):
        n = len(part)
        idx = np.unique(np.linspace(0, n - 1, min(n, max_items)).round().astype(np.int64))
        gen = torch.Generator().manual_seed(derive_seed(seed, i))
        values: dict[str, list[torch.Tensor]] = {"pred": [], "recon": [], "last": []}
        for start in range(0, idx.size, batch_size):
            items = [part[int(j)] for j in idx[start : start + batch_size]]
            history = torch.stack([h for h, _ in items])
            target = torch.stack([t for _, t in items])
            mask = patch_mask(
                len(items),
                history.shape[1],
                history.shape[2] // 2,
                patch_slots=patch_slots,
                patch_subcarriers=patch_subcarriers,
                mask_ratio=mask_ratio,
                generator=gen,
            )
            pred = model(history.to(device)).cpu()
            recon = model.reconstruct(apply_mask(history, mask).to(device)).cpu()
            h, t = part.denormalize(history), part.denormalize(target)
            values["pred"].append(_per_item_nmse(part.denormalize(pred), t))
            values["recon"].append(_per_item_nmse(part.denormalize(recon), h, mask))
            last = h[:, -1:].expand_as(t)
            values["last"].append(_per_item_nmse(last, t))
        for key, chunks in values.items():
            pooled[key].extend(chunks)
        per_config[config_name(part.file.config)] = to_db(torch.cat(values["pred"]).mean().item())
    if was_training:
        model.train()
    mean = {k: torch.cat(v).double().mean().item() for k, v in pooled.items()}
    return {
        "nmse_db": to_db(mean["pred"]),
        "recon_nmse_db": to_db(mean["recon"]),
        "last_slot_nmse_db": to_db(mean["last"]),
        "items": int(sum(c.numel() for c in pooled["pred"])),
        "per_config": per_config,
    }
