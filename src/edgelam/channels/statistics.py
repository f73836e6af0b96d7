r"""Statistics of CSI sequences used to check the physics: temporal autocorrelation vs. Clarke.

For a user moving horizontally at speed :math:`v` through a field of scatterers whose arrivals are
uniform in azimuth, the normalised temporal autocorrelation of a channel coefficient is Clarke's

.. math::
    \rho(\tau) = \frac{E[h(t+\tau) h^*(t)]}{E[|h(t)|^2]} = J_0(2 \pi f_d \tau),
    \qquad f_d = v f_c / c .

TDL models are built to follow it (sum of sinusoids). CDL and UMa/UMi clusters arrive from
specific directions; averaged over random horizontal directions of motion the ensemble
autocorrelation approaches :math:`J_0` with an error from elevation spread and the finite number
of clusters, hence looser tolerances.
"""

from __future__ import annotations

import numpy as np
from scipy.special import j0

__all__ = ["temporal_autocorrelation", "clarke_autocorrelation", "mean_power"]


def temporal_autocorrelation(csi: np.ndarray, max_lag: int | None = None) -> np.ndarray:
    r"""Empirical normalised autocorrelation over the slot axis.

    Averages :math:`h(t+k) h^*(t)` over samples, start slots, subcarriers and antennas, and
    divides by the average power.

    Args:
        csi: CSI ``[sample, slot, subcarrier, antenna]`` (complex).
        max_lag: largest lag in slots (default: ``slots - 1``).

    Returns:
        Complex array ``[max_lag + 1]``; entry 0 is 1.

    >>> t = np.arange(8)
    >>> h = np.exp(2j * np.pi * 0.1 * t)[None, :, None, None]
    >>> np.round(temporal_autocorrelation(h, 2).real, 3)
    array([1.   , 0.809, 0.309])
    """
    csi = np.asarray(csi)
    if csi.ndim != 4:
        raise ValueError(f"csi must be [sample, slot, subcarrier, antenna], got shape {csi.shape}")
    slots = csi.shape[1]
    max_lag = slots - 1 if max_lag is None else max_lag
    if not 0 <= max_lag < slots:
        raise ValueError(f"max_lag must be in [0, {slots - 1}], got {max_lag}")
    power = np.mean(np.abs(csi) ** 2)
    out = np.empty(max_lag + 1, dtype=np.complex128)
    for k in range(max_lag + 1):
        out[k] = np.mean(csi[:, k:] * np.conj(csi[:, : slots - k])) / power
    return out


def clarke_autocorrelation(max_doppler_hz: float, period_s: float, num_lags: int) -> np.ndarray:
    """Clarke's :math:`J_0(2 \\pi f_d k T)` for lags ``k = 0 .. num_lags - 1``.

    >>> round(float(clarke_autocorrelation(100.0, 1e-3, 2)[1]), 4)  # J0(0.2 pi)
    0.9037
    """
    return j0(2 * np.pi * max_doppler_hz * period_s * np.arange(num_lags))


def mean_power(csi: np.ndarray) -> float:
    """Average :math:`|h|^2` over all entries."""
    return float(np.mean(np.abs(np.asarray(csi)) ** 2))


def _element_gain_38901(zenith: np.ndarray, azimuth: np.ndarray) -> np.ndarray:
    """Linear power gain of the 38.901 antenna element (Table 7.3-1), 8 dBi at boresight."""
    theta = np.degrees(zenith)
    phi = np.degrees((azimuth + np.pi) % (2 * np.pi) - np.pi)
    vertical = -np.minimum(12 * ((theta - 90) / 65) ** 2, 30)
    horizontal = -np.minimum(12 * (phi / 65) ** 2, 30)
    return 10 ** ((8.0 - np.minimum(-(vertical + horizontal), 30)) / 10)


def cdl_autocorrelation(
    cdl: object, max_doppler_hz: float, period_s: float, num_lags: int
) -> np.ndarray:
    r"""Expected autocorrelation of an uplink Sionna CDL link for horizontal motion.

    Clarke's model with the CDL's geometry: each ray :math:`m` leaves the user at zenith
    :math:`\theta_m`, so its Doppler is :math:`f_d \sin\theta_m \cos(\phi_m - \psi)`; averaged
    over a uniform direction of motion :math:`\psi` this gives

    .. math::
        \rho(\tau) = \frac{\sum_m w_m J_0(2\pi f_d \tau \sin\theta_m)}{\sum_m w_m},

    with :math:`w_m` the ray power times the 38.901 BS element gain at its arrival angle
    (plus the specular ray weighted by the K-factor for CDL-D/E).

    Args:
        cdl: a ``sionna.phy.channel.tr38901.CDL`` built with ``direction="uplink"`` (its ray
            tables are read).
        max_doppler_hz, period_s, num_lags: as in :func:`clarke_autocorrelation`.

    Returns:
        Real array ``[num_lags]``.
    """
    lags = np.arange(num_lags) * period_s
    weights = cdl._powers.numpy()[:, None] * _element_gain_38901(cdl._zoa.numpy(), cdl._aoa.numpy())
    zenith = cdl._zod.numpy()
    if cdl._has_los:
        los_w = float(cdl._k_factor) * _element_gain_38901(
            cdl._los_zoa.numpy(), cdl._los_aoa.numpy()
        )
        weights = np.append(weights.ravel(), los_w)
        zenith = np.append(zenith.ravel(), cdl._los_zod.numpy())
    weights, zenith = weights.ravel(), zenith.ravel()
    terms = j0(2 * np.pi * max_doppler_hz * np.sin(zenith)[:, None] * lags[None, :])
    return weights @ terms / weights.sum()
