r"""Uplink pilot training for TDD beamforming: orthogonal pilots, LS and LMMSE channel estimates.

The ``K`` users send orthogonal pilot sequences, rows of :math:`X \in \mathbb{C}^{K \times L}`
(``L >= K`` symbols, each of power ``p``: :math:`X X^H = pL\, I_K`). By reciprocity the uplink
channel of user ``k`` is :math:`h_k^T`, so the BS receives

.. math::

    Y = H^T X + N \in \mathbb{C}^{M \times L}, \qquad N_{ml} \sim \mathcal{CN}(0, \sigma_p^2),

at pilot SNR :math:`p / \sigma_p^2`. Despreading, :math:`Z = Y X^H / (pL) = H^T + E` with
:math:`E` white of variance :math:`\sigma_e^2 = \sigma_p^2 / (pL)` per entry, independent across
users. Column ``k`` of :math:`Z` is the LS estimate of :math:`h_k^T`; its error is
:math:`\sigma_e^2` per entry, i.e. NMSE :math:`1 / (L \cdot \mathrm{SNR}_p)` for unit-gain
channels. The LMMSE estimate with spatial covariance :math:`R_k = E[h_k^T \bar h_k]` is
:math:`R_k (R_k + \sigma_e^2 I)^{-1} z_k`, with error :math:`\mathrm{tr}(R_k - R_k (R_k +
\sigma_e^2 I)^{-1} R_k)`; with the i.i.d. prior :math:`R_k = \beta I` its NMSE is
:math:`\sigma_e^2 / (\beta + \sigma_e^2)`, below LS at every SNR.

Shapes:
    H, estimates: ``[batch, K, M]``. X: ``[K, L]``. Y: ``[batch, M, L]``. covariance: ``[M, M]``
    (all users) or ``[K, M, M]``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from edgelam.airinterface.beamforming.problem import check_channels

__all__ = [
    "channel_covariance",
    "estimate_channels",
    "estimation_nmse",
    "lmmse_estimate",
    "ls_estimate",
    "pilot_matrix",
    "pilot_noise_power",
    "transmit_pilots",
]


def pilot_matrix(
    users: int,
    length: int | None = None,
    power: float = 1.0,
    *,
    dtype: torch.dtype = torch.complex64,
) -> torch.Tensor:
    r"""Orthogonal pilots: the first ``K`` rows of the ``L``-point DFT, scaled to power ``p``.

    :math:`X_{kl} = \sqrt{p}\, e^{-2\pi i k l / L}`, so :math:`X X^H = pL\, I_K`.

    Args:
        users: ``K``.
        length: ``L >= K`` (default ``K``).
        power: ``p``, power of every pilot symbol.
        dtype: complex dtype.

    Shapes:
        returns ``[K, L]``.

    >>> X = pilot_matrix(2, 4, power=0.5)
    >>> torch.allclose(X @ X.mH, 2.0 * torch.eye(2, dtype=X.dtype), atol=1e-6)
    True
    """
    length = users if length is None else length
    if users < 1 or length < users:
        raise ValueError(f"pilot length: need L >= K >= 1, got L={length}, K={users}")
    if not power > 0:
        raise ValueError(f"pilot power: must be > 0, got {power}")
    real = torch.float64 if dtype == torch.complex128 else torch.float32
    k = torch.arange(users, dtype=real)[:, None]
    n = torch.arange(length, dtype=real)[None, :]
    phase = -2 * math.pi * ((k * n) % length) / length
    return (math.sqrt(power) * torch.polar(torch.ones_like(phase), phase)).to(dtype)


def pilot_noise_power(pilot_snr_db: float, power: float = 1.0) -> float:
    """Uplink noise power ``sigma_p^2 = p / 10^(SNR_dB / 10)``.

    >>> pilot_noise_power(10.0)
    0.1
    """
    return power / 10 ** (pilot_snr_db / 10)


def transmit_pilots(
    H: torch.Tensor,
    X: torch.Tensor,
    noise_power: float,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The BS's received pilots ``Y = H^T X + N``, ``N`` i.i.d. ``CN(0, noise_power)``.

    Shapes:
        H: ``[batch, K, M]``; X: ``[K, L]`` -> Y: ``[batch, M, L]``.
    """
    check_channels(H)
    if X.dim() != 2 or X.shape[0] != H.shape[1]:
        raise ValueError(f"pilots must be [K={H.shape[1]}, L], got {tuple(X.shape)}")
    Y = H.transpose(-2, -1) @ X.to(H.dtype)
    noise = torch.randn(*Y.shape, 2, generator=generator, dtype=H.real.dtype)
    return Y + torch.view_as_complex(noise * math.sqrt(noise_power / 2)).to(H.device)


def _despread(Y: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """``Z = Y X^H (X X^H)^{-1}`` transposed back to ``[batch, K, M]`` (the LS estimate)."""
    X = X.to(Y.dtype)
    gram = X @ X.mH  # [K, K]
    # H^T = Y X^H G^{-1}  <=>  H = G^{-T} (Y X^H)^T
    return torch.linalg.solve(gram.transpose(-2, -1), (Y @ X.mH).transpose(-2, -1))


def ls_estimate(Y: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """Least-squares estimate ``Ĥ = (Y X^H (X X^H)^{-1})^T``.

    Shapes:
        Y: ``[batch, M, L]``; X: ``[K, L]`` -> ``[batch, K, M]``.
    """
    return _despread(Y, X)


def lmmse_estimate(
    Y: torch.Tensor,
    X: torch.Tensor,
    noise_power: float,
    covariance: torch.Tensor | None = None,
    *,
    prior_variance: float = 1.0,
) -> torch.Tensor:
    r"""LMMSE estimate :math:`\hat g_k = R_k (R_k + \sigma_e^2 I)^{-1} z_k` of zero-mean channels.

    Args:
        Y: received pilots.
        X: orthogonal pilots (``X X^H = pL I``; see :func:`pilot_matrix`).
        noise_power: ``sigma_p^2`` of the pilot observation.
        covariance: :math:`R = E[h_k^T \bar h_k]`, ``[M, M]`` or per user ``[K, M, M]`` (see
            :func:`channel_covariance`); default the i.i.d. prior ``prior_variance * I``.
        prior_variance: :math:`\beta` of the i.i.d. prior.

    Shapes:
        Y: ``[batch, M, L]``; X: ``[K, L]`` -> ``[batch, K, M]``.
    """
    X = X.to(Y.dtype)
    K, L = X.shape
    gram_diag = torch.diagonal(X @ X.mH).real
    if not torch.allclose(
        X @ X.mH, torch.diag_embed(gram_diag).to(X.dtype), atol=1e-5 * float(gram_diag.max())
    ):
        raise ValueError("lmmse_estimate: pilots must be orthogonal (X X^H diagonal)")
    Z = _despread(Y, X)  # [batch, K, M]
    err_var = noise_power / gram_diag.to(Z.real.dtype)  # sigma_e^2 per user [K]
    if covariance is None:
        return Z * (prior_variance / (prior_variance + err_var))[None, :, None]
    R = covariance.to(Y.dtype)
    M = Y.shape[1]
    if R.shape == (M, M):
        R = R.expand(K, M, M)
    if R.shape != (K, M, M):
        raise ValueError(
            f"covariance: must be [M, M] or [K, M, M] = {(K, M, M)}, got {tuple(R.shape)}"
        )
    eye = torch.eye(M, dtype=R.dtype, device=R.device)
    # g_k = R_k (R_k + s I)^{-1} z_k; for Hermitian R the filter is applied to the column z_k.
    filt = R @ torch.linalg.inv(R + err_var.to(R.dtype)[:, None, None] * eye)  # [K, M, M]
    return torch.einsum("kmn,bkn->bkm", filt, Z)


def channel_covariance(H: torch.Tensor, *, per_user: bool = True) -> torch.Tensor:
    r"""Sample spatial covariance :math:`R_k = \frac1B \sum_b h_{b,k}^T \bar h_{b,k}` (zero mean).

    Args:
        H: a training set of channels.
        per_user: one matrix per user ``[K, M, M]``; else pooled over users ``[M, M]``.

    Shapes:
        H: ``[batch, K, M]`` -> ``[K, M, M]`` or ``[M, M]``.

    >>> H = torch.ones(4, 2, 3, dtype=torch.complex64)
    >>> channel_covariance(H).shape, float(channel_covariance(H, per_user=False)[0, 1].real)
    (torch.Size([2, 3, 3]), 1.0)
    """
    check_channels(H)
    R = torch.einsum("bkm,bkn->kmn", H, H.conj()) / H.shape[0]
    return R if per_user else R.mean(0)


def estimation_nmse(H_hat: torch.Tensor, H: torch.Tensor) -> float:
    """``E||Ĥ - H||^2 / E||H||^2`` over the whole set (linear scale)."""
    return float((H_hat - H).abs().square().sum() / H.abs().square().sum())


def estimate_channels(
    H: torch.Tensor,
    pilot_snr_db: float,
    *,
    method: Literal["ls", "lmmse"] = "ls",
    pilot_length: int | None = None,
    pilot_power: float = 1.0,
    covariance: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pilot training end to end: send DFT pilots over ``H``, return the BS's estimate.

    Args:
        H: true channels.
        pilot_snr_db: ``10 log10(p / sigma_p^2)``.
        method: ``"ls"`` or ``"lmmse"`` (i.i.d. unit prior unless ``covariance`` is given).
        pilot_length: ``L`` (default ``K``).
        pilot_power: ``p``.
        covariance: LMMSE prior, ``[M, M]`` or ``[K, M, M]``.
        generator: seeds the pilot noise.

    Shapes:
        H: ``[batch, K, M]`` -> ``[batch, K, M]``.

    >>> H = torch.ones(1, 1, 2, dtype=torch.complex64)
    >>> torch.allclose(estimate_channels(H, 200.0), H)   # noiseless limit
    True
    """
    if method not in ("ls", "lmmse"):
        raise ValueError(f"method: {method!r} is not one of ['ls', 'lmmse']")
    X = pilot_matrix(H.shape[1], pilot_length, pilot_power, dtype=H.dtype)
    noise = pilot_noise_power(pilot_snr_db, pilot_power)
    Y = transmit_pilots(H, X, noise, generator=generator)
    if method == "ls":
        return ls_estimate(Y, X)
    return lmmse_estimate(Y, X, noise, covariance)
