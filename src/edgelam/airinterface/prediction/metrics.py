r"""Evaluation metrics of CSI prediction: NMSE per item and per speed group, spectral efficiency.

NMSE follows LLM4CP: the error energy over the target energy of one item (one BS antenna of one
user, all predicted slots and subcarriers), averaged over items in *linear* scale, and reported
in dB as :math:`10 \log_{10}` of that mean (not the mean of per-item dB values, which would
weight good predictions far more). Compute it on de-normalised CSI (see
:mod:`edgelam.channels.dataset`: NMSE is not invariant to the normalisation's mean shift).
LLM4CP's own code takes the ratio of sums over a batch of 64 users; the per-item mean used here
does not depend on the batch size.

Spectral efficiency (SE) measures what the prediction is for: the BS beamforms with the
predicted CSI and transmits over the true channel (:func:`spectral_efficiency`).

A sequential evaluation over a :class:`~edgelam.channels.dataset.CSIPredictionDataset` (items
sample-major, antenna-minor) maps predictions back to users with :func:`items_to_csi`, and
labels items by speed with ``np.repeat(speed_groups(speeds_kmh), num_antennas)``.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from numpy.typing import ArrayLike

from edgelam.channels.dataset import real_to_complex

__all__ = [
    "DEFAULT_SPEED_EDGES_KMH",
    "NMSEAccumulator",
    "SpectralEfficiency",
    "items_to_csi",
    "mean_nmse",
    "mean_nmse_db",
    "nmse",
    "spectral_efficiency",
    "speed_group_labels",
    "speed_groups",
]

DEFAULT_SPEED_EDGES_KMH: tuple[float, ...] = tuple(float(v) for v in range(10, 101, 10))
"""Speed-group edges [km/h]: groups 10-20, 20-30, ..., 90-100 (LLM4CP's speed range)."""

PowerNormalization = Literal["dataset", "user", "element"]
_NORMALIZATIONS = ("dataset", "user", "element")


def _to_db(x: float) -> float:
    return 10.0 * math.log10(x) if x > 0 else -math.inf


def nmse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    r"""Normalised mean squared error of each item.

    .. math::

        \mathrm{NMSE}_i = \frac{\sum_{t,f} |\hat h_{i,t,f} - h_{i,t,f}|^2}
                               {\sum_{t,f} |h_{i,t,f}|^2}

    over all non-batch axes. Real (interleaved re/im) and complex tensors give the same value.
    An item whose target is all zero gives ``inf`` (or ``nan`` if predicted exactly).

    Args:
        pred: predictions, e.g. ``[B, L_f, 2F]`` real or ``[B, L_f, F]`` complex.
        target: true values, same shape.

    Returns:
        Per-item NMSE, float64.

    Shapes:
        pred, target: ``[B, ...]`` -> ``[B]``.

    >>> nmse(torch.tensor([[0.0, 4.0]]), torch.tensor([[3.0, 4.0]]))
    tensor([0.3600], dtype=torch.float64)
    """
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target shapes differ: {list(pred.shape)} vs {list(target.shape)}"
        )
    if pred.ndim < 1:
        raise ValueError("pred and target need a batch axis")
    wide = torch.complex128 if pred.is_complex() or target.is_complex() else torch.float64
    p, t = pred.to(wide).flatten(1), target.to(wide).flatten(1)
    err = (p - t).abs().square().sum(1)
    return err / t.abs().square().sum(1)


def mean_nmse(values: torch.Tensor | ArrayLike) -> float:
    """Mean of per-item NMSE values in linear scale.

    >>> mean_nmse([0.1, 0.3])
    0.2
    """
    v = np.asarray(torch.as_tensor(values, dtype=torch.float64).cpu())
    if v.size == 0:
        raise ValueError("mean_nmse needs at least one value")
    return float(np.mean(v))


def mean_nmse_db(values: torch.Tensor | ArrayLike) -> float:
    r"""NMSE in dB of the *mean* linear NMSE, :math:`10 \log_{10}(\frac{1}{N}\sum_i
    \mathrm{NMSE}_i)`, as LLM4CP reports it (``-inf`` for a perfect prediction).

    >>> round(mean_nmse_db([0.1, 0.3]), 4)  # not the mean of -10 dB and -5.23 dB
    -6.9897
    """
    return _to_db(mean_nmse(values))


def speed_groups(
    speeds_kmh: ArrayLike, edges: Sequence[float] = DEFAULT_SPEED_EDGES_KMH
) -> np.ndarray:
    """The speed group of each user: ``g`` such that ``edges[g] <= v < edges[g + 1]``.

    The last group is closed (``v == edges[-1]`` belongs to it). Names of the groups:
    :func:`speed_group_labels`.

    Args:
        speeds_kmh: user speeds [km/h] (``speed_mps * 3.6`` from a CSI file).
        edges: increasing group edges [km/h].

    Returns:
        Group indices, int64, same shape as ``speeds_kmh``.

    Raises:
        ValueError: edges not strictly increasing, or a speed outside ``[edges[0], edges[-1]]``.

    >>> speed_groups([10.0, 19.9, 20.0, 100.0]).tolist()
    [0, 0, 1, 8]
    """
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim != 1 or e.size < 2 or np.any(np.diff(e) <= 0):
        raise ValueError(
            f"edges must be a strictly increasing sequence of >= 2 values, got {edges}"
        )
    v = np.asarray(speeds_kmh, dtype=np.float64)
    outside = ~((v >= e[0]) & (v <= e[-1]))
    if np.any(outside):
        raise ValueError(
            f"speeds_kmh: {np.unique(v[outside])[:5].tolist()} outside the group edges "
            f"[{e[0]}, {e[-1]}] km/h; pass edges that cover them"
        )
    return np.minimum(np.searchsorted(e, v, side="right") - 1, e.size - 2).astype(np.int64)


def speed_group_labels(edges: Sequence[float] = DEFAULT_SPEED_EDGES_KMH) -> list[str]:
    """Names of the speed groups of :func:`speed_groups`.

    >>> speed_group_labels((10, 20, 35.5))
    ['10-20', '20-35.5']
    """
    names = [f"{float(x):g}" for x in edges]
    return [f"{lo}-{hi}" for lo, hi in zip(names[:-1], names[1:], strict=True)]


class NMSEAccumulator:
    """Accumulates per-item NMSE over an evaluation, overall and per group (e.g. speed group).

    Args:
        group_names: optional names of integer group labels (``group_names[g]`` for label
            ``g``), e.g. :func:`speed_group_labels`; other labels are reported as ``str(label)``.

    >>> acc = NMSEAccumulator(group_names=["10-20", "20-30"])
    >>> acc.add([0.125, 0.375, 0.25], groups=[0, 1, 1])
    >>> acc.mean(), acc.mean(group=1), acc.summary()["groups"]["20-30"]["count"]
    (0.25, 0.3125, 2)
    """

    def __init__(self, group_names: Sequence[str] | None = None) -> None:
        self.group_names = list(group_names) if group_names is not None else None
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated."""
        self._sum = 0.0
        self._count = 0
        self._groups: dict[Hashable, list] = {}  # label -> [sum, count]

    def update(
        self, pred: torch.Tensor, target: torch.Tensor, groups: Hashable | ArrayLike | None = None
    ) -> torch.Tensor:
        """Add the NMSE of a batch of predictions (see :func:`nmse`) and return it.

        Shapes:
            pred, target: ``[B, ...]`` -> ``[B]``.
        """
        values = nmse(pred, target)
        self.add(values, groups)
        return values

    def add(
        self, values: torch.Tensor | ArrayLike, groups: Hashable | ArrayLike | None = None
    ) -> None:
        """Add per-item NMSE values.

        Args:
            values: per-item linear NMSE, ``[B]``.
            groups: ``None`` (overall only), one label for the whole batch, or one label per item.
        """
        v = np.asarray(torch.as_tensor(values, dtype=torch.float64).cpu()).reshape(-1)
        self._sum += float(v.sum())
        self._count += v.size
        if groups is None or v.size == 0:
            return
        labels = np.asarray(groups)
        if labels.ndim == 0:
            labels = np.full(v.size, labels.item(), dtype=labels.dtype)
        if labels.shape != v.shape:
            raise ValueError(f"groups: need one label per item ({v.size}), got {labels.shape}")
        unique, inverse = np.unique(labels, return_inverse=True)
        sums = np.bincount(inverse, weights=v, minlength=unique.size)
        counts = np.bincount(inverse, minlength=unique.size)
        for label, s, c in zip(unique.tolist(), sums, counts, strict=True):
            entry = self._groups.setdefault(label, [0.0, 0])
            entry[0] += float(s)
            entry[1] += int(c)

    @property
    def count(self) -> int:
        """Number of items accumulated."""
        return self._count

    def mean(self, group: Hashable | None = None) -> float:
        """Mean linear NMSE, overall or of one group label."""
        total, count = (
            (self._sum, self._count) if group is None else self._groups.get(group, (0, 0))
        )
        if count == 0:
            raise ValueError(
                f"no items accumulated{'' if group is None else f' in group {group!r}'}"
            )
        return total / count

    def mean_db(self, group: Hashable | None = None) -> float:
        """dB of :meth:`mean` (dB of the mean linear NMSE)."""
        return _to_db(self.mean(group))

    def _name(self, label: Hashable) -> str:
        names = self.group_names
        if names is not None and isinstance(label, int) and 0 <= label < len(names):
            return names[label]
        return str(label)

    def summary(self) -> dict:
        """Overall and per-group figures, JSON-ready.

        Returns:
            ``{"nmse", "nmse_db", "count", "groups": {name: {"nmse", "nmse_db", "count"}}}``,
            groups in sorted label order (first-seen order if labels do not sort).
        """
        try:
            labels = sorted(self._groups)
        except TypeError:
            labels = list(self._groups)
        groups = {}
        for g in labels:
            count = self._groups[g][1]
            groups[self._name(g)] = {
                "nmse": self.mean(g),
                "nmse_db": self.mean_db(g),
                "count": count,
            }
        overall = self.mean() if self._count else math.nan
        return {
            "nmse": overall,
            "nmse_db": _to_db(overall) if self._count else math.nan,
            "count": self._count,
            "groups": groups,
        }


def items_to_csi(x: torch.Tensor, num_antennas: int = 32) -> torch.Tensor:
    """Sequential dataset items (sample-major, antenna-minor) back to complex CSI per user.

    Args:
        x: predictions or targets of ``U * A`` consecutive items, real interleaved layout.
        num_antennas: ``A``, BS antenna ports per user.

    Shapes:
        x: ``[U * A, L, 2F]`` -> ``[U, A, L, F]`` complex.

    >>> items_to_csi(torch.arange(8.0).reshape(2, 1, 4), num_antennas=2).shape
    torch.Size([1, 2, 1, 2])
    """
    if x.ndim != 3 or x.shape[0] % num_antennas:
        raise ValueError(
            f"x must be [U * A, L, 2F] with A={num_antennas} dividing the batch, got "
            f"{list(x.shape)}"
        )
    h = real_to_complex(x, "interleaved")
    return h.reshape(-1, num_antennas, *h.shape[1:])


@dataclass(frozen=True)
class SpectralEfficiency:
    """Mean spectral efficiency [bit/s/Hz] with predicted and with perfect CSI.

    Shapes:
        predicted_per_user, perfect_per_user: ``[U]`` float64, means over slots and subcarriers.
    """

    predicted: float
    perfect: float
    ratio: float
    predicted_per_user: torch.Tensor
    perfect_per_user: torch.Tensor

    def to_dict(self) -> dict:
        """The three scalar figures, JSON-ready."""
        return {"predicted": self.predicted, "perfect": self.perfect, "ratio": self.ratio}


def spectral_efficiency(
    pred_csi: torch.Tensor,
    true_csi: torch.Tensor,
    snr_db: float = 10.0,
    normalization: PowerNormalization = "dataset",
) -> SpectralEfficiency:
    r"""Spectral efficiency of MRT beamforming with predicted CSI vs. perfect CSI.

    For each user ``u``, slot ``t`` and subcarrier ``f`` the BS beamforms over its ``A`` antennas
    with the matched filter of the predicted channel, :math:`\mathbf w = \hat{\mathbf h} /
    \|\hat{\mathbf h}\|`, and transmits over the true channel :math:`\mathbf h`:

    .. math::

        \mathrm{SE} = \log_2\!\big(1 + \rho\, |\mathbf h^H \mathbf w|^2\big)
                    = \log_2\!\Big(1 + \rho\, \frac{|\mathbf h^H \hat{\mathbf h}|^2}
                                                    {\|\hat{\mathbf h}\|^2}\Big),
        \qquad \mathrm{SE}^\star = \log_2\!\big(1 + \rho\, \|\mathbf h\|^2\big)

    with perfect CSI (:math:`\mathbf w = \mathbf h / \|\mathbf h\|`); a zero prediction gives
    :math:`\mathbf w = 0`. :math:`\rho` is the transmit SNR per unit average channel gain,
    :math:`\rho = 10^{\text{snr\_db}/10} / \overline{|h|^2}`, where the average power
    :math:`\overline{|h|^2}` of the *true* CSI is taken over

    * ``"dataset"``: all users, antennas, slots and subcarriers (one :math:`\rho`; users in deep
      fades get a low SNR);
    * ``"user"``: each user's antennas, slots and subcarriers (every user at ``snr_db``
      on average);
    * ``"element"``: the antennas of each (user, slot, subcarrier), as LLM4CP's ``SE_Loss`` does
      (noise variance :math:`\|\mathbf h\|^2 / A \cdot 10^{-\text{snr}/10}`); then
      :math:`\mathrm{SE}^\star = \log_2(1 + A \cdot 10^{\text{snr}/10})` exactly.

    SE is invariant to a complex scale of :math:`\hat{\mathbf h}` (common phase and gain), so the
    ratio is 1 for a prediction equal to the truth up to such a factor.

    Args:
        pred_csi: predicted CSI, complex.
        true_csi: true CSI, complex, same shape.
        snr_db: transmit SNR [dB] per unit average channel gain.
        normalization: ``"dataset"``, ``"user"`` or ``"element"`` (see above).

    Returns:
        :class:`SpectralEfficiency`: means over users, slots and subcarriers, and
        ``ratio = predicted / perfect``.

    Shapes:
        pred_csi, true_csi: ``[U, A, L_f, F]`` (user, BS antenna, slot, subcarrier).
    """
    if pred_csi.shape != true_csi.shape or true_csi.ndim != 4:
        raise ValueError(
            f"pred_csi and true_csi must both be [U, A, L_f, F], got {list(pred_csi.shape)} and "
            f"{list(true_csi.shape)}"
        )
    if not (pred_csi.is_complex() and true_csi.is_complex()):
        raise ValueError("pred_csi and true_csi must be complex (see items_to_csi)")
    if normalization not in _NORMALIZATIONS:
        raise ValueError(
            f"normalization must be one of {list(_NORMALIZATIONS)}, got {normalization!r}"
        )
    h = true_csi.to(torch.complex128)
    h_hat = pred_csi.to(torch.complex128)
    power = h.abs().square()  # [U, A, T, F]
    if normalization == "dataset":
        mean_power = power.mean()
    elif normalization == "user":
        mean_power = power.mean(dim=(1, 2, 3))[:, None, None]
    else:
        mean_power = power.mean(dim=1)
    rho = 10.0 ** (snr_db / 10.0) / mean_power
    gain_perfect = power.sum(1)  # ||h||^2, [U, T, F]
    norm_hat = h_hat.abs().square().sum(1)
    inner = (h_hat.conj() * h).sum(1).abs().square()
    gain = torch.where(norm_hat > 0, inner / norm_hat.clamp_min(torch.finfo(torch.float64).tiny), 0)
    se = torch.log2(1 + rho * gain).mean(dim=(1, 2))
    se_perfect = torch.log2(1 + rho * gain_perfect).mean(dim=(1, 2))
    predicted, perfect = float(se.mean()), float(se_perfect.mean())
    return SpectralEfficiency(
        predicted=predicted,
        perfect=perfect,
        ratio=predicted / perfect if perfect > 0 else math.nan,
        predicted_per_user=se,
        perfect_per_user=se_perfect,
    )
