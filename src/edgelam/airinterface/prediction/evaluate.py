"""Evaluate any predictor (learned or classical) on a CSI test set: NMSE and spectral efficiency."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from edgelam.airinterface.prediction.metrics import (
    NMSEAccumulator,
    items_to_csi,
    spectral_efficiency,
    speed_group_labels,
    speed_groups,
)
from edgelam.channels.dataset import CSIPredictionDataset

if TYPE_CHECKING:
    from edgelam.training.fedavg import FedAvg

__all__ = ["evaluate_predictor", "train_early_stopped"]


@torch.no_grad()
def evaluate_predictor(
    model: nn.Module,
    dataset: CSIPredictionDataset,
    *,
    speeds_kmh: np.ndarray,
    num_antennas: int,
    group_edges_kmh: Sequence[float],
    se_snr_db: float = 10.0,
    batch_size: int = 512,
    physical_input: bool = False,
) -> dict[str, Any]:
    """NMSE (overall and per speed group) and MRT spectral efficiency of ``model`` on ``dataset``.

    Predictions and targets are de-normalised before scoring. The dataset must be sequential
    (items sample-major, antenna-minor); ``batch_size`` is rounded down to whole users so every
    batch holds complete users (LLM4CP's batch normalisation sees the same batches for every
    model).

    Args:
        model: ``[B, L_h, 2F] -> [B, L_f, 2F]``; put in eval mode here.
        dataset: the test set.
        speeds_kmh: speed of every sample of the underlying file ``[num_samples]`` (km/h).
        num_antennas: BS antennas per user (items per sample).
        group_edges_kmh: edges of the speed groups.
        se_snr_db: SNR of the spectral-efficiency metric.
        batch_size: items per forward pass.
        physical_input: feed the model de-normalised histories and take its output as
            physical CSI (classical predictors, which are not invariant to a mean shift);
            otherwise the model sees normalised data and its output is de-normalised.

    Returns:
        ``nmse``, ``nmse_db``, ``nmse_db_by_group`` ({"10-20": dB, ...}), ``nmse_by_group``,
        ``count_by_group``, ``se_predicted``, ``se_perfect``, ``se_ratio`` (bit/s/Hz).
    """
    model.eval()
    device = next(iter(model.parameters()), torch.empty(0)).device
    n = len(dataset)
    if n % num_antennas:
        raise ValueError(f"dataset has {n} items, not a multiple of {num_antennas} antennas")
    users = max(1, batch_size // num_antennas)
    names = speed_group_labels(group_edges_kmh)
    acc = NMSEAccumulator(group_names=names)
    preds, trues = [], []
    for start in range(0, n, users * num_antennas):
        idx = range(start, min(n, start + users * num_antennas))
        items = [dataset[i] for i in idx]
        x = torch.stack([h for h, _ in items])
        y = torch.stack([t for _, t in items])
        if physical_input:
            pred = model(dataset.denormalize(x).to(device)).float().cpu()
        else:
            pred = dataset.denormalize(model(x.to(device)).float().cpu())
        true = dataset.denormalize(y)
        samples = np.array([dataset.locate(i)[0] for i in idx])
        acc.update(pred, true, speed_groups(speeds_kmh[samples], group_edges_kmh))
        preds.append(items_to_csi(pred, num_antennas))
        trues.append(items_to_csi(true, num_antennas))
    summary = acc.summary()
    se = spectral_efficiency(torch.cat(preds), torch.cat(trues), snr_db=se_snr_db)
    return {
        "nmse": summary["nmse"],
        "nmse_db": summary["nmse_db"],
        "nmse_db_by_group": {g: v["nmse_db"] for g, v in summary["groups"].items()},
        "nmse_by_group": {g: v["nmse"] for g, v in summary["groups"].items()},
        "count_by_group": {g: v["count"] for g, v in summary["groups"].items()},
        "se_predicted": se.predicted,
        "se_perfect": se.perfect,
        "se_ratio": se.ratio,
    }


def train_early_stopped(
    trainer: FedAvg, val: CSIPredictionDataset, every: int, **eval_kwargs: Any
) -> int:
    """Run all of ``trainer``'s rounds, scoring :func:`evaluate_predictor` NMSE on ``val`` every
    ``every`` rounds (and at the start and end); restore the best state.

    Args:
        trainer: a :class:`~edgelam.training.fedavg.FedAvg` (its model is the predictor).
        val: the validation users.
        every: rounds between validations.
        **eval_kwargs: :func:`evaluate_predictor`'s keyword arguments.

    Returns:
        The local step of the state kept (0: the untrained one).
    """

    def score() -> float:
        return evaluate_predictor(trainer.model, val, **eval_kwargs)["nmse_db"]

    best = (score(), 0, copy.deepcopy(trainer.state_dict()))
    while trainer.round < trainer.config.rounds:
        trainer.run_round()
        if trainer.round % every == 0 or trainer.round == trainer.config.rounds:
            nmse = score()
            if nmse < best[0]:
                best = (nmse, trainer.round, copy.deepcopy(trainer.state_dict()))
    trainer.load_state_dict(best[2])
    return best[1] * trainer.config.local_steps
