r"""Multi-user MISO downlink: the weighted sum-rate problem every beamformer here solves.

A base station with ``M`` antennas serves ``K`` single-antenna users with linear precoding.
Row ``k`` of the channel matrix ``H`` is user ``k``'s channel, column ``k`` of the precoder ``W``
its beam, and user ``k`` receives

.. math::

    y_k = h_k w_k s_k + \sum_{j \ne k} h_k w_j s_j + n_k, \qquad n_k \sim \mathcal{CN}(0, \sigma^2),

so its SINR is :math:`|h_k w_k|^2 / (\sum_{j\ne k} |h_k w_j|^2 + \sigma^2)` and the objective is

.. math::

    \max_W \sum_k \alpha_k \log_2(1 + \mathrm{SINR}_k) \quad \text{s.t.} \quad \|W\|_F^2 \le P.

Shapes (batched everywhere):
    H: ``[batch, K, M]`` complex. W: ``[batch, M, K]`` complex. Rates: ``[batch, K]`` real.
"""

from __future__ import annotations

import torch

__all__ = [
    "check_channels",
    "project_power",
    "rayleigh_channels",
    "sinr",
    "sum_rate",
    "user_rates",
]


def check_channels(H: torch.Tensor) -> torch.Tensor:
    """Return ``H`` if it is a complex ``[batch, K, M]`` tensor, else raise a clear ValueError."""
    if not torch.is_tensor(H) or not H.is_complex() or H.dim() != 3:
        shape = tuple(H.shape) if torch.is_tensor(H) else type(H).__name__
        raise ValueError(f"channels must be a complex [batch, K, M] tensor, got {shape}")
    if H.shape[1] < 1 or H.shape[2] < 1:
        raise ValueError(f"channels need K >= 1 users and M >= 1 antennas, got {tuple(H.shape)}")
    return H


def sinr(H: torch.Tensor, W: torch.Tensor, noise_power: float | torch.Tensor) -> torch.Tensor:
    """Per-user SINR ``[batch, K]`` of precoder ``W`` ``[batch, M, K]`` on channels ``H``."""
    check_channels(H)
    if W.shape != (H.shape[0], H.shape[2], H.shape[1]):
        raise ValueError(
            f"precoder must be [batch, M, K] = {(H.shape[0], H.shape[2], H.shape[1])}, "
            f"got {tuple(W.shape)}"
        )
    gain = (H @ W).abs().square()  # [batch, K(user), K(beam)]
    signal = torch.diagonal(gain, dim1=-2, dim2=-1)
    noise = torch.as_tensor(noise_power, dtype=gain.dtype, device=gain.device)
    if noise.dim() == 1:
        noise = noise[:, None]
    return signal / (gain.sum(-1) - signal + noise)


def user_rates(H: torch.Tensor, W: torch.Tensor, noise_power: float | torch.Tensor) -> torch.Tensor:
    """Per-user achievable rate ``log2(1 + SINR_k)`` in bit/s/Hz, ``[batch, K]``."""
    return torch.log2(1.0 + sinr(H, W, noise_power))


def sum_rate(
    H: torch.Tensor,
    W: torch.Tensor,
    noise_power: float | torch.Tensor,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Weighted sum rate ``[batch]`` in bit/s/Hz (weights ``[K]`` or ``[batch, K]``, default 1).

    >>> H = torch.eye(2, dtype=torch.complex64)[None]   # two orthogonal users
    >>> W = torch.eye(2, dtype=torch.complex64)[None] * 0.5 ** 0.5
    >>> round(float(sum_rate(H, W, noise_power=0.5)), 6)  # 2 * log2(1 + 0.5 / 0.5)
    2.0
    """
    rates = user_rates(H, W, noise_power)
    if weights is not None:
        rates = rates * torch.as_tensor(weights, dtype=rates.dtype, device=rates.device)
    return rates.sum(-1)


def project_power(
    W: torch.Tensor, power: float | torch.Tensor, *, exact: bool = True
) -> torch.Tensor:
    """Scale each precoder in the batch onto the power constraint ``||W||_F^2 <= P``.

    With ``exact`` (the default) every precoder is scaled to use the full power ``P`` (optimal for
    sum rate: scaling up never lowers any SINR); otherwise only precoders above ``P`` are scaled
    down (``w / max(1, ||w|| / sqrt(P))``).
    """
    p = torch.as_tensor(power, dtype=W.real.dtype, device=W.device)
    if p.dim() == 1:
        p = p[:, None, None]
    norm = torch.linalg.vector_norm(W, dim=(-2, -1), keepdim=True).clamp_min(1e-30)
    scale = p.sqrt() / norm
    if not exact:
        scale = scale.clamp(max=1.0)
    return W * scale


def rayleigh_channels(
    batch: int,
    users: int,
    antennas: int,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.complex64,
) -> torch.Tensor:
    """I.i.d. Rayleigh channels ``[batch, K, M]``, entries ``CN(0, 1)``."""
    real = torch.randn(batch, users, antennas, 2, generator=generator)
    return torch.view_as_complex(real * 0.5**0.5).to(dtype)
