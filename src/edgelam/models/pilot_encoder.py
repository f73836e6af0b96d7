r"""A complex-valued pilot encoder: noisy received pilots to graph edge features, no estimate.

In the uplink training phase the ``K`` users send orthogonal pilot sequences (rows of
``X [K, L]``) and the ``M``-antenna base station receives ``Y = H^T X + N`` (``[M, L]`` per
sample). A classical receiver first estimates the channel (least squares
:math:`\hat h_{k,m} = \sum_l y_{m,l} x_{k,l}^* / \sum_l |x_{k,l}|^2`, or LMMSE) and then designs
the beams from the estimate. Trained for the sum rate, :class:`PilotEncoder` replaces that
estimate with learned features of the edge ``(k, m)`` computed straight from the pilots:

1. *de-spreading without summing*: the per-symbol correlation sequence
   :math:`s_{k,m,l} = y_{m,l}\, x_{k,l}^* / \bar p_x` (``[B, K, M, L]`` complex, with
   :math:`\bar p_x` the mean pilot symbol power). The LS estimate is its mean over ``l``; here the
   sequence is kept whole, so the network can weigh symbols itself;
2. a :class:`ComplexLinear` layer ``L -> C`` over the symbol axis (complex weights, so phase is
   rotated rather than mixed like two unrelated reals); its output channel 0 starts as the mean
   over ``l`` (the matched filter), the others at random;
3. a residual block ``z + ComplexLinear(modReLU(z))`` (``C -> C``, zero-initialised, so the
   encoder starts at the matched filter and learns corrections); :func:`mod_relu` (Arjovsky et
   al., 2016) thresholds the modulus and keeps the phase, which commutes with the phase
   rotations a channel applies;
4. edge features ``[Re z, Im z, |z|]`` (``3C`` reals) and the complex *basis* ``z_0`` (the first
   channel), which plays the part of the channel in the beamformer's MRT-gated head.

Every operation acts on one edge's pair of sequences ``(y_m, x_k)``, so permuting users (rows of
``X``) or antennas (rows of ``Y``) permutes the features the same way. The pilot SNR and the
average channel gain, which the beamformer needs as global features, are estimated from the
received power: :math:`E|y_{m,l}|^2 = \bar p_x \sum_k |h_{k,m}|^2 + \sigma_p^2`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["ComplexLinear", "PilotEncoder", "mod_relu"]


class ComplexLinear(nn.Module):
    """``z -> z A^T + b`` with complex ``A [out, in]`` and ``b [out]`` held as real pairs.

    Shapes:
        z: ``[..., in]`` complex -> ``[..., out]`` complex.

    >>> layer = ComplexLinear(3, 2, seed_scale=0.0)
    >>> layer(torch.ones(4, 3, dtype=torch.complex64)).shape
    torch.Size([4, 2])
    """

    def __init__(self, in_features: int, out_features: int, seed_scale: float = 1.0) -> None:
        super().__init__()
        std = seed_scale / math.sqrt(in_features)
        self.weight_re = nn.Parameter(torch.randn(out_features, in_features) * std / math.sqrt(2))
        self.weight_im = nn.Parameter(torch.randn(out_features, in_features) * std / math.sqrt(2))
        self.bias_re = nn.Parameter(torch.zeros(out_features))
        self.bias_im = nn.Parameter(torch.zeros(out_features))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        weight = torch.complex(self.weight_re, self.weight_im).to(z.dtype)
        bias = torch.complex(self.bias_re, self.bias_im).to(z.dtype)
        return z @ weight.transpose(0, 1) + bias


def mod_relu(z: torch.Tensor, bias: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """modReLU: ``relu(|z| + b) * z / |z|`` -- thresholds the modulus, keeps the phase.

    Shapes:
        z: ``[..., C]`` complex; bias: ``[C]`` real -> like ``z``.

    >>> z = torch.tensor([3 + 4j, 0.3 + 0.4j])
    >>> [round(v, 5) for v in mod_relu(z, torch.tensor(-1.0)).abs().tolist()]
    [4.0, 0.0]
    """
    modulus = z.abs()
    return z * (torch.relu(modulus + bias) / (modulus + eps))


class PilotEncoder(nn.Module):
    """Received pilots and pilot matrix to per-edge features (see the module docstring).

    Args:
        pilot_length: pilot symbols ``L`` per user (the width of the first complex layer).
        channels: complex channels ``C`` per edge; the edge features are ``3C`` reals.
    """

    def __init__(self, pilot_length: int, channels: int) -> None:
        super().__init__()
        if pilot_length < 1 or channels < 1:
            raise ValueError(
                f"pilot_length and channels must be >= 1, got {pilot_length}, {channels}"
            )
        self.pilot_length = pilot_length
        self.channels = channels
        self.despread = ComplexLinear(pilot_length, channels)
        with torch.no_grad():  # channel 0 starts as the matched filter (mean over symbols)
            self.despread.weight_re[0].fill_(1.0 / pilot_length)
            self.despread.weight_im[0].zero_()
        self.act_bias = nn.Parameter(torch.zeros(channels))
        self.refine = ComplexLinear(channels, channels, seed_scale=0.0)

    @property
    def out_features(self) -> int:
        """Real edge features per edge (``3C``)."""
        return 3 * self.channels

    def forward(
        self, Y: torch.Tensor, X: torch.Tensor, pilot_noise_power: float | torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode pilots.

        Args:
            Y: received pilots.
            X: pilot matrix, shared (``[K, L]``) or per sample (``[B, K, L]``).
            pilot_noise_power: noise variance per received pilot symbol (scalar or ``[B]``).

        Returns:
            ``(features, basis, gain, pilot_snr_db)``: real edge features, the complex basis
            ``z_0`` (scale-free), the estimated mean channel gain :math:`E|h_{k,m}|^2` and the
            estimated pilot SNR per symbol in dB.

        Shapes:
            Y: ``[B, M, L]`` complex; X: ``[K, L]`` or ``[B, K, L]`` complex ->
            features ``[B, K, M, 3C]``; basis ``[B, K, M]`` complex; gain, pilot_snr_db ``[B]``.
        """
        if Y.dim() != 3 or not Y.is_complex():
            raise ValueError(f"received pilots must be complex [B, M, L], got {tuple(Y.shape)}")
        if X.dim() == 2:
            X = X.expand(Y.shape[0], *X.shape)
        if X.shape[-1] != Y.shape[-1] or Y.shape[-1] != self.pilot_length:
            raise ValueError(
                f"pilot_length: the encoder takes L={self.pilot_length} symbols, got Y "
                f"{tuple(Y.shape)} and X {tuple(X.shape)}"
            )
        X = X.to(Y.dtype)
        real = Y.real.dtype
        users = X.shape[1]
        noise = torch.as_tensor(pilot_noise_power, dtype=real, device=Y.device).expand(Y.shape[0])
        received = Y.abs().square().mean(dim=(1, 2))  # [B]
        symbol_power = X.abs().square().mean(dim=(1, 2))  # [B]
        signal = (received - noise).clamp_min(1e-3 * received)
        gain = signal / (users * symbol_power)
        pilot_snr_db = 10 * torch.log10(signal / users / noise.clamp_min(1e-30))
        scale = received.clamp_min(1e-30).sqrt()
        y = Y / scale[:, None, None]
        s = y[:, None, :, :] * X.conj()[:, :, None, :] / symbol_power[:, None, None, None]
        z = self.despread(s)  # [B, K, M, C]
        z = z + self.refine(mod_relu(z, self.act_bias))
        features = torch.cat([z.real, z.imag, z.abs()], dim=-1)
        return features, z[..., 0], gain, pilot_snr_db
