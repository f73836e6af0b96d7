"""CSI prediction: classical baselines and evaluation metrics.

* :mod:`~edgelam.airinterface.prediction.classical` -- training-free predictors as parameter-free
  ``nn.Module`` s (``[B, L_h, 2F] -> [B, L_f, 2F]``, interleaved re/im): :class:`NoPrediction`,
  :class:`ARPredictor` (PAD-style AR extrapolation), :class:`PronyVectorPredictor`.
* :mod:`~edgelam.airinterface.prediction.metrics` -- per-item NMSE and its dB-of-mean, an
  :class:`NMSEAccumulator` per speed group, and the spectral efficiency of MRT beamforming with
  predicted vs. perfect CSI.

Typical evaluation of a predictor on a sequential (unshuffled) test set::

    acc = NMSEAccumulator(group_names=speed_group_labels())
    groups = np.repeat(speed_groups(speeds_kmh), num_antennas)  # one label per item
    for start, (history, target) in batches:
        pred = predictor(history)
        acc.update(ds.denormalize(pred), ds.denormalize(target), groups[start : start + len(pred)])
    acc.summary()
"""

from edgelam.airinterface.prediction.classical import (
    ARPredictor,
    NoPrediction,
    PronyFit,
    PronyVectorPredictor,
)
from edgelam.airinterface.prediction.metrics import (
    DEFAULT_SPEED_EDGES_KMH,
    NMSEAccumulator,
    SpectralEfficiency,
    items_to_csi,
    mean_nmse,
    mean_nmse_db,
    nmse,
    spectral_efficiency,
    speed_group_labels,
    speed_groups,
)

__all__ = [
    "DEFAULT_SPEED_EDGES_KMH",
    "ARPredictor",
    "NMSEAccumulator",
    "NoPrediction",
    "PronyFit",
    "PronyVectorPredictor",
    "SpectralEfficiency",
    "items_to_csi",
    "mean_nmse",
    "mean_nmse_db",
    "nmse",
    "spectral_efficiency",
    "speed_group_labels",
    "speed_groups",
]
