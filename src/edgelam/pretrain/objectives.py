"""Pre-training objectives: next-slot prediction and masked time/frequency-patch reconstruction.

For a batch of (history, target) items, normalised by their files' statistics:

* **prediction**: the predictor's own forward on the (unmasked) history, loss
  :func:`~edgelam.training.fedavg.nmse_loss` against the future slots;
* **masked reconstruction** (MAE/WiFo-style): the history is cut into patches of
  ``patch_slots`` slots x ``patch_subcarriers`` subcarriers (real and imaginary parts together);
  exactly ``round(mask_ratio * P)`` of the ``P`` patches of each item, chosen at random, are set
  to zero (the normalised mean); the model reconstructs the history from what is left
  (:meth:`~edgelam.pretrain.model.PretrainModel.reconstruct`) and :func:`masked_nmse` scores
  the masked entries only, against the history as observed (noise included, as a masked
  autoencoder reconstructs its input).

The total loss is ``prediction + recon_weight * reconstruction``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch

from edgelam.seeding import derive_seed as _derive_seed
from edgelam.training.fedavg import nmse_loss

if TYPE_CHECKING:
    from edgelam.pretrain.model import PretrainModel

__all__ = [
    "PretrainLosses",
    "apply_mask",
    "derive_seed",
    "masked_nmse",
    "num_masked",
    "patch_mask",
    "pretrain_losses",
]


def derive_seed(*entropy: int) -> int:
    """A 63-bit seed from integers, e.g. ``(seed, step)`` (:func:`edgelam.seeding.derive_seed`).

    >>> derive_seed(0, 1) == derive_seed(0, 1), derive_seed(0, 1) == derive_seed(1, 0)
    (True, False)
    """
    return _derive_seed(*entropy, bits=63)


def num_masked(num_patches: int, mask_ratio: float) -> int:
    """Patches masked per item: ``round(mask_ratio * P)``, at least 1 when the ratio is > 0.

    >>> num_masked(48, 0.3), num_masked(4, 0.01), num_masked(4, 0.0)
    (14, 1, 0)
    """
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio: must be in [0, 1), got {mask_ratio}")
    if mask_ratio == 0:
        return 0
    return min(max(1, round(mask_ratio * num_patches)), num_patches - 1)


def patch_mask(
    batch: int,
    history_slots: int,
    num_subcarriers: int,
    *,
    patch_slots: int,
    patch_subcarriers: int,
    mask_ratio: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random time/frequency patch mask, the same number of patches for every item.

    Args:
        batch: items ``B``.
        history_slots: slots ``L`` (a multiple of ``patch_slots``).
        num_subcarriers: subcarriers ``F`` (a multiple of ``patch_subcarriers``).
        patch_slots: slots per patch.
        patch_subcarriers: subcarriers per patch (each covers its real and imaginary part).
        mask_ratio: share of patches masked (see :func:`num_masked`).
        generator: source of randomness (seed it for reproducible masks).

    Returns:
        ``True`` where masked.

    Raises:
        ValueError: a patch size does not divide its axis.

    Shapes:
        -> ``[B, L, 2F]`` bool, re/im interleaved like the CSI.

    >>> m = patch_mask(2, 4, 4, patch_slots=2, patch_subcarriers=2, mask_ratio=0.5,
    ...                generator=torch.Generator().manual_seed(0))
    >>> m.shape, m.float().mean(dim=(1, 2)).tolist()
    (torch.Size([2, 4, 8]), [0.5, 0.5])
    """
    if history_slots % patch_slots or num_subcarriers % patch_subcarriers:
        raise ValueError(
            f"patch_slots x patch_subcarriers = {patch_slots} x {patch_subcarriers} must divide "
            f"history_slots x num_subcarriers = {history_slots} x {num_subcarriers}"
        )
    nt, nf = history_slots // patch_slots, num_subcarriers // patch_subcarriers
    k = num_masked(nt * nf, mask_ratio)
    order = torch.rand(batch, nt * nf, generator=generator).argsort(dim=1)
    chosen = torch.zeros(batch, nt * nf, dtype=torch.bool)
    chosen.scatter_(1, order[:, :k], True)
    grid = chosen.view(batch, nt, nf)
    full = grid.repeat_interleave(patch_slots, 1).repeat_interleave(2 * patch_subcarriers, 2)
    return full  # [B, L, 2F]: subcarrier j covers columns 2j (re) and 2j+1 (im)


def apply_mask(history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero the masked entries (the normalised mean). Shapes: ``[B, L, 2F]`` -> same."""
    return history.masked_fill(mask, 0.0)


def masked_nmse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over items of ``||M (pred - target)||^2 / ||M target||^2`` on masked entries only.

    Unmasked entries of ``pred`` and ``target`` do not enter the value or its gradient (even
    if infinite).

    Shapes:
        pred, target, mask: ``[B, ...]`` -> scalar.

    >>> t = torch.ones(1, 2, 2); m = torch.tensor([[[True, False], [False, False]]])
    >>> float(masked_nmse(torch.zeros(1, 2, 2), t, m))
    1.0
    """
    zero = torch.zeros((), dtype=pred.dtype, device=pred.device)
    err = torch.where(mask, pred - target, zero).flatten(1).square().sum(1)
    ref = torch.where(mask, target, zero).flatten(1).square().sum(1).clamp_min(1e-12)
    return (err / ref).mean()


class PretrainLosses(NamedTuple):
    """Scalar losses of one batch (``reconstruction`` is None when its weight is 0)."""

    loss: torch.Tensor
    prediction: torch.Tensor
    reconstruction: torch.Tensor | None


def pretrain_losses(
    model: PretrainModel,
    history: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    recon_weight: float,
) -> PretrainLosses:
    """``prediction + recon_weight * reconstruction`` on one batch.

    Shapes:
        history: ``[B, L_h, 2F]``; target: ``[B, L_f, 2F]``; mask: ``[B, L_h, 2F]`` bool.
    """
    prediction = nmse_loss(model(history), target)
    if recon_weight == 0:
        return PretrainLosses(prediction, prediction, None)
    reconstruction = masked_nmse(model.reconstruct(apply_mask(history, mask)), history, mask)
    return PretrainLosses(prediction + recon_weight * reconstruction, prediction, reconstruction)
