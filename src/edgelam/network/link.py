"""Link budget: noise, block fading, SNR, achievable rate, and the time/energy of a transfer.

The per-link chain, for one block-fading round, is

.. math::

    \\mathrm{SNR} = \\frac{P_{tx}\\, G\\, 10^{-(PL + SF)/10}\\, |h|^2}{N}, \\qquad
    N\\,[\\mathrm{dBm}] = -174 + 10\\log_{10} B + NF, \\qquad
    R = B \\log_2\\!\\left(1 + \\frac{\\mathrm{SNR}}{\\Gamma}\\right)

with transmit power :math:`P_{tx}`, combined antenna gain :math:`G`, path loss :math:`PL` and
shadow fading :math:`SF` (dB), block-fading power gain :math:`|h|^2` (unit mean), bandwidth
:math:`B` (Hz), receiver noise figure :math:`NF` (dB) and SNR gap :math:`\\Gamma` (0 dB =
Shannon capacity). Sending :math:`b` bits then takes :math:`t = b / R` seconds and costs
:math:`E = P_{tx} t` joules of radiated transmit energy.

>>> thermal_noise_dbm(1e6, 9.0)  # -174 + 60 + 9
-105.0
>>> achievable_rate(1e6, 10 * math.log10(3.0))  # 1 MHz * log2(1 + 3)
2000000.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = [
    "THERMAL_NOISE_DBM_PER_HZ",
    "TransferCost",
    "db_to_linear",
    "linear_to_db",
    "dbm_to_watt",
    "watt_to_dbm",
    "thermal_noise_dbm",
    "rayleigh_power_gain",
    "rician_power_gain",
    "snr_db",
    "achievable_rate",
    "transmission_latency",
    "transmission_energy",
    "transfer_cost",
]

THERMAL_NOISE_DBM_PER_HZ = -174.0
"""Thermal noise power spectral density :math:`kT_0` at 290 K, in dBm/Hz."""

Number = torch.Tensor | float


def _log10(x: Number) -> Number:
    if isinstance(x, torch.Tensor):
        return torch.log10(x)
    return math.log10(x)


def db_to_linear(x_db: Number) -> Number:
    """:math:`10^{x/10}`: a power ratio in dB to linear scale.

    Args:
        x_db: Value(s) in dB.

    Returns:
        Linear value(s), same type as the input (float or tensor).

    >>> db_to_linear(30.0)
    1000.0
    """
    return 10.0 ** (x_db / 10.0)


def linear_to_db(x: Number) -> Number:
    """:math:`10 \\log_{10} x`: a linear power ratio to dB.

    Args:
        x: Positive linear value(s).

    Returns:
        Value(s) in dB, same type as the input.

    >>> linear_to_db(100.0)
    20.0
    """
    return 10.0 * _log10(x)


def dbm_to_watt(p_dbm: Number) -> Number:
    """Power in dBm to watts: :math:`10^{(p - 30)/10}`.

    >>> dbm_to_watt(43.0) > 19.9
    True
    """
    return 10.0 ** ((p_dbm - 30.0) / 10.0)


def watt_to_dbm(p_w: Number) -> Number:
    """Power in watts to dBm: :math:`10 \\log_{10} p + 30`.

    >>> watt_to_dbm(1.0)
    30.0
    """
    return 10.0 * _log10(p_w) + 30.0


def thermal_noise_dbm(bandwidth_hz: Number, noise_figure_db: Number) -> Number:
    """Receiver noise power :math:`N = -174 + 10\\log_{10} B + NF` in dBm.

    Args:
        bandwidth_hz: Receiver bandwidth :math:`B` in Hz.
        noise_figure_db: Receiver noise figure :math:`NF` in dB.

    Returns:
        Noise power in dBm (float or tensor like the inputs).
    """
    return THERMAL_NOISE_DBM_PER_HZ + 10.0 * _log10(bandwidth_hz) + noise_figure_db


def rayleigh_power_gain(
    shape: tuple[int, ...] | torch.Size,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Rayleigh block-fading power gain :math:`|h|^2 \\sim \\mathrm{Exp}(1)` (unit mean).

    Args:
        shape: Output shape, e.g. ``(K,)`` for one draw per device.
        generator: Source of randomness.
        dtype: Floating dtype of the result.

    Returns:
        Non-negative i.i.d. gains.

    Shapes:
        ``shape``.
    """
    return torch.empty(shape, dtype=dtype).exponential_(1.0, generator=generator)


def rician_power_gain(
    shape: tuple[int, ...] | torch.Size,
    k_factor_db: float,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Rician block-fading power gain with K-factor :math:`K` and unit mean power.

    :math:`h = \\sqrt{K/(K+1)} + \\sqrt{1/(K+1)}\\, g`, :math:`g \\sim \\mathcal{CN}(0, 1)`,
    so :math:`E|h|^2 = 1` and :math:`\\mathrm{Var}|h|^2 = (1 + 2K)/(K + 1)^2`. The phase of the
    specular part does not affect :math:`|h|^2` and is taken as zero.

    Args:
        shape: Output shape.
        k_factor_db: Rician K-factor in dB (ratio of specular to scattered power).
        generator: Source of randomness.
        dtype: Floating dtype of the result.

    Returns:
        Non-negative i.i.d. gains.

    Shapes:
        ``shape``.
    """
    k = 10.0 ** (k_factor_db / 10.0)
    scatter = math.sqrt(1.0 / (2.0 * (k + 1.0)))
    re = math.sqrt(k / (k + 1.0)) + scatter * torch.randn(shape, generator=generator, dtype=dtype)
    im = scatter * torch.randn(shape, generator=generator, dtype=dtype)
    return re**2 + im**2


def snr_db(
    tx_power_dbm: Number,
    pathloss_db: Number,
    noise_dbm: Number,
    fading_gain: Number = 1.0,
    antenna_gain_db: Number = 0.0,
) -> Number:
    """Received SNR in dB: :math:`P_{tx} + G - PL + 10\\log_{10}|h|^2 - N`.

    Args:
        tx_power_dbm: Transmit power in dBm.
        pathloss_db: Large-scale loss in dB (path loss plus shadow fading).
        noise_dbm: Receiver noise power in dBm.
        fading_gain: Small-scale power gain :math:`|h|^2` (linear).
        antenna_gain_db: Combined transmit+receive antenna gain in dB.

    Returns:
        SNR in dB (tensor if any input is a tensor).

    Shapes:
        Inputs broadcast together.

    >>> snr_db(23.0, 120.0, -105.0)
    8.0
    """
    return tx_power_dbm + antenna_gain_db - pathloss_db + linear_to_db(fading_gain) - noise_dbm


def achievable_rate(bandwidth_hz: Number, snr_db: Number, gap_db: Number = 0.0) -> Number:
    """Achievable rate :math:`R = B \\log_2(1 + \\mathrm{SNR}/\\Gamma)` in bit/s.

    Args:
        bandwidth_hz: Bandwidth :math:`B` in Hz.
        snr_db: SNR in dB.
        gap_db: SNR gap :math:`\\Gamma` in dB to capacity (0 dB = Shannon capacity).

    Returns:
        Rate in bit/s.

    Shapes:
        Inputs broadcast together.
    """
    ratio = db_to_linear(snr_db - gap_db)
    if isinstance(ratio, torch.Tensor):
        return bandwidth_hz * torch.log2(1.0 + ratio)
    return bandwidth_hz * math.log2(1.0 + ratio)


def transmission_latency(bits: Number, rate_bps: Number) -> Number:
    """Time :math:`t = b / R` in seconds to send ``bits`` at ``rate_bps`` bit/s.

    >>> transmission_latency(1e6, 2e6)
    0.5
    """
    return bits / rate_bps


def transmission_energy(tx_power_w: Number, seconds: Number) -> Number:
    """Radiated transmit energy :math:`E = P_{tx}\\, t` in joules.

    >>> transmission_energy(0.2, 0.5)
    0.1
    """
    return tx_power_w * seconds


@dataclass(frozen=True)
class TransferCost:
    """Time and energy of sending a payload over one or more links.

    Attributes:
        bits: Payload bits per link.
        rate: Rate used, in bit/s.
        seconds: Airtime :math:`b / R` per link.
        joules: Transmit energy :math:`P_{tx} t` per link.

    Shapes:
        All fields share one shape: ``[n]`` for ``n`` links, ``[]`` for one broadcast.
    """

    bits: torch.Tensor
    rate: torch.Tensor
    seconds: torch.Tensor
    joules: torch.Tensor


def transfer_cost(bits: Number, rate_bps: Number, tx_power_w: Number) -> TransferCost:
    """Airtime and transmit energy of sending ``bits`` over links of rate ``rate_bps``.

    Args:
        bits: Payload size(s) in bits.
        rate_bps: Link rate(s) in bit/s.
        tx_power_w: Transmit power(s) in W.

    Returns:
        A :class:`TransferCost` with every field broadcast to a common ``float64`` shape.

    Shapes:
        Inputs broadcast together.

    >>> transfer_cost(8e6, torch.tensor([1e6, 4e6]), 0.2).joules.tolist()
    [1.6, 0.4]
    """
    b, r, p = (torch.as_tensor(x, dtype=torch.float64) for x in (bits, rate_bps, tx_power_w))
    b, r, p = torch.broadcast_tensors(b, r, p)
    seconds = transmission_latency(b, r)
    return TransferCost(bits=b, rate=r, seconds=seconds, joules=transmission_energy(p, seconds))
