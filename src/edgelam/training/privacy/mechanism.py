r"""The Gaussian mechanism on a batch of per-sample rows, digital or over an analog uplink.

A device releases one row per sample (its embeddings, or its Jacobian vectors). Each row is
clipped to L2 norm ``C`` (:func:`clip_per_sample`), so replacing one sample moves the released
tensor by at most ``2C``; Gaussian noise of standard deviation ``sigma * C`` on every entry
(:func:`privatize`) makes the release a Gaussian mechanism of noise multiplier ``sigma / 2``
under replace-one adjacency. Noise is drawn from an explicit CPU :class:`torch.Generator`, so
every runtime draws the same numbers.

Over a **digital** uplink the payload is decoded without error: the channel adds nothing and the
device injects all the noise. Over an **analog** (uncoded, over-the-air style) uplink the
receiver noise at the server lands on the tensor itself and counts toward the privacy noise
(:func:`analog_noise`); the device injects only what is still missing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from edgelam.config import ConfigError

__all__ = [
    "clip_per_sample",
    "gaussian_noise",
    "Privatized",
    "privatize",
    "AnalogChannel",
    "UplinkNoise",
    "analog_noise",
    "digital_noise",
    "privacy_transmit_power",
]


def clip_per_sample(x: torch.Tensor, clip_norm: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale each sample (row along the first axis) to L2 norm at most ``clip_norm``.

    Rows already within the bound are returned unchanged (scaled by exactly 1); the operation
    is differentiable, so a gradient flows back through the clip.

    Shapes:
        x: ``[B, ...]`` -> ``(clipped [B, ...], norms [B])``, the norms before clipping.

    >>> clipped, norms = clip_per_sample(torch.tensor([[3.0, 4.0], [0.3, 0.4]]), 1.0)
    >>> clipped, norms
    (tensor([[0.6000, 0.8000],
            [0.3000, 0.4000]]), tensor([5.0000, 0.5000]))
    """
    if not clip_norm > 0:
        raise ConfigError(f"clip_norm: must be > 0, got {clip_norm}")
    norms = x.flatten(1).norm(dim=1)
    factor = (clip_norm / norms.clamp_min(torch.finfo(x.dtype).tiny)).clamp(max=1.0)
    return x * factor.view(-1, *([1] * (x.dim() - 1))), norms.detach()


def gaussian_noise(like: torch.Tensor, std: float, generator: torch.Generator) -> torch.Tensor:
    """``N(0, std^2)`` noise shaped like ``like`` (its dtype and device), drawn on the CPU from
    ``generator`` so that any runtime and device draws the same values."""
    if std < 0:
        raise ConfigError(f"noise std: must be >= 0, got {std}")
    z = torch.randn(like.shape, generator=generator, dtype=like.dtype, device="cpu")
    return (z * std).to(like.device)


@dataclass
class Privatized:
    """What :func:`privatize` returns.

    Attributes:
        released: ``clipped + noise`` ``[B, ...]``, what is sent.
        clipped: the clipped rows ``[B, ...]`` (keeps the autograd graph of the input).
        noise: the noise that was added ``[B, ...]``.
        norms: per-sample norms before clipping ``[B]``.
    """

    released: torch.Tensor
    clipped: torch.Tensor
    noise: torch.Tensor
    norms: torch.Tensor


def privatize(
    x: torch.Tensor, clip_norm: float, noise_std: float, generator: torch.Generator
) -> Privatized:
    """Clip each sample of ``x`` to ``clip_norm``, then add ``N(0, noise_std^2)`` per entry.

    ``noise_std`` is ``sigma * clip_norm`` for the full Gaussian mechanism, or less when an
    analog channel adds the rest (:func:`analog_noise`).

    Shapes:
        x: ``[B, ...]``; every tensor of the result has its shape (``norms``: ``[B]``).
    """
    clipped, norms = clip_per_sample(x, clip_norm)
    noise = gaussian_noise(clipped, noise_std, generator)
    return Privatized(clipped.detach() + noise, clipped, noise, norms)


@dataclass(frozen=True)
class AnalogChannel:
    """A device's uplink as an analog transmission sees it, per real channel use.

    Attributes:
        gain: channel power gain :math:`g = |h|^2` (path loss times fading), linear.
        transmit_power: average transmit power per channel use ``P`` [W].
        noise_power: receiver noise power per real channel use :math:`N_0` [W].
    """

    gain: float
    transmit_power: float
    noise_power: float

    def __post_init__(self) -> None:
        for name in ("gain", "transmit_power", "noise_power"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name}: must be > 0, got {getattr(self, name)}")

    @property
    def snr(self) -> float:
        """Receive SNR per channel use :math:`\\rho = g P / N_0`."""
        return self.gain * self.transmit_power / self.noise_power


@dataclass(frozen=True)
class UplinkNoise:
    """How the privacy noise of one released tensor splits between device and channel.

    Attributes:
        device_std: noise std the device injects per entry.
        receiver_std: std of the receiver noise referred to the clipped signal's scale (0 for a
            digital uplink).
        amplitude: transmit scaling ``a`` (analog), or 1.
        transmit_power: average transmit power per channel use [W] (analog), or NaN.
    """

    device_std: float
    receiver_std: float
    amplitude: float = 1.0
    transmit_power: float = math.nan

    @property
    def effective_std(self) -> float:
        """Std of the total noise on the tensor the server decodes."""
        return math.hypot(self.device_std, self.receiver_std)


def digital_noise(noise_std: float) -> UplinkNoise:
    """Digital uplink: the decoded payload is exact, the device injects all of ``noise_std``."""
    return UplinkNoise(noise_std, 0.0)


def analog_noise(
    noise_std: float, clip_norm: float, entries: int, channel: AnalogChannel
) -> UplinkNoise:
    r"""Device noise that, with the receiver noise, makes a total std of ``noise_std``.

    A sample's clipped row :math:`x \in \mathbb{R}^D` (:math:`\|x\| \le C`) is sent uncoded,
    one entry per real channel use: the device transmits :math:`a (x + z_d)`,
    :math:`z_d \sim \mathcal{N}(0, \sigma_d^2 I)`; the server receives
    :math:`y = \sqrt{g}\, a (x + z_d) + n`, :math:`n \sim \mathcal{N}(0, N_0 I)`, and decodes
    :math:`\hat x = y / (\sqrt{g} a) = x + z_d + n / (\sqrt{g} a)`. The amplitude uses the
    power budget on the worst-case (public) signal power, so it reveals nothing about ``x``:

    .. math::
        a^2 \left(\frac{C^2}{D} + \sigma_d^2\right) = P, \qquad
        \sigma_{\mathrm{eff}}^2 = \sigma_d^2 + \frac{N_0}{g a^2}
        = \sigma_d^2 + \frac{C^2 / D + \sigma_d^2}{\rho}, \quad \rho = \frac{g P}{N_0}.

    Setting :math:`\sigma_{\mathrm{eff}} = s` (``noise_std``, :math:`\sigma C` for the Gaussian
    mechanism) gives

    .. math::
        \sigma_d^2 = \max\left(0,\ \frac{s^2 - C^2 / (D \rho)}{1 + 1 / \rho}\right);

    when :math:`C^2 / (D \rho) \ge s^2` the receiver noise alone suffices, the device adds
    nothing and the total noise exceeds ``s`` (more privacy than asked, at full power). The
    server does not see :math:`n`, so the guarantee is that of noise ``s`` (or more). As
    :math:`\rho \to \infty` the device injects all of ``s``, as over a digital uplink.

    Args:
        noise_std: target total std ``s`` per entry.
        clip_norm: ``C`` of each row.
        entries: ``D``, entries (real channel uses) per row.
        channel: the device's gain, transmit power and the receiver noise power.

    >>> ch = AnalogChannel(gain=1e-9, transmit_power=0.1, noise_power=1e-12)  # rho = 100
    >>> u = analog_noise(noise_std=0.5, clip_norm=1.0, entries=16, channel=ch)
    >>> round(u.effective_std, 12), round(u.device_std, 4), round(u.receiver_std, 4)
    (0.5, 0.4969, 0.0556)
    """
    if entries < 1:
        raise ConfigError(f"entries: must be >= 1, got {entries}")
    if noise_std < 0 or not clip_norm > 0:
        raise ConfigError(f"noise_std >= 0 and clip_norm > 0 needed, got {noise_std}, {clip_norm}")
    rho, signal = channel.snr, clip_norm**2 / entries
    device_var = max(0.0, (noise_std**2 - signal / rho) / (1 + 1 / rho))
    amplitude = math.sqrt(channel.transmit_power / (signal + device_var))
    receiver_std = math.sqrt(channel.noise_power / channel.gain) / amplitude
    return UplinkNoise(math.sqrt(device_var), receiver_std, amplitude, channel.transmit_power)


def privacy_transmit_power(
    noise_std: float, clip_norm: float, entries: int, gain: float, noise_power: float
) -> float:
    r"""The transmit power at which the receiver noise alone is the privacy noise.

    With no device noise the total is :math:`C^2 / (D \rho)`; it equals :math:`s^2` at
    :math:`P^\star = N_0 C^2 / (g D s^2)` (:math:`= N_0 / (g D \sigma^2)` for
    :math:`s = \sigma C`). Any :math:`P \le P^\star` needs no device noise; above it the device
    adds :func:`analog_noise`'s :math:`\sigma_d`.

    >>> privacy_transmit_power(0.5, 1.0, 16, gain=1e-9, noise_power=1e-12)
    0.00025
    """
    if not noise_std > 0:
        raise ConfigError(f"noise_std: must be > 0, got {noise_std}")
    return noise_power * clip_norm**2 / (gain * entries * noise_std**2)
