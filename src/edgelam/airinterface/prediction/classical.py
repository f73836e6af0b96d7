r"""Training-free CSI predictors: no prediction, PAD-style AR extrapolation, vector Prony.

Each predictor is an :class:`torch.nn.Module` without parameters that maps a history
``[B, L_h, 2F]`` to a prediction ``[B, L_f, 2F]`` in the real *interleaved* layout of
:mod:`edgelam.channels.dataset` (``[Re h_0, Im h_0, Re h_1, ...]``), so evaluation code treats
it exactly like a learned predictor. One item is one BS antenna of one user; the predictors work
item by item, vectorised over the batch with batched linear algebra. The maths runs in
``complex128`` whatever the input dtype; the output has the input's dtype and device.

All three are equivariant to a complex scale of the history (every ridge term is relative), so
they give the same NMSE on normalised and de-normalised CSI -- but *not* to a shift: feed
de-normalised CSI (:meth:`~edgelam.channels.dataset.CSIPredictionDataset.denormalize`), or
normalised CSI whose ``norm_mean`` is zero, since a constant offset is not a sum of exponentials.

These are the classical baselines of LLM4CP (Liu et al., 2024): *no prediction* (repeat the last
CSI), *PAD* (AR extrapolation of order 8) and the *Prony-vector* method. Differences from its
released code: LLM4CP's PAD runs in the delay domain and its ``pronyvec`` pools the equations of
all 32 antennas of a user but uses one time shift only; here each item is one antenna, and the
linear-prediction equations use every time shift of the history. Note that the fit shared over
subcarriers is invariant to any unitary transform across subcarriers (e.g. the DFT to the delay
domain), so :class:`ARPredictor` with ``shared_over_subcarriers=True`` equals a delay-domain AR
with one coefficient set.
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import torch
from torch import nn

from edgelam.channels.dataset import real_to_complex

__all__ = ["ARPredictor", "NoPrediction", "PronyFit", "PronyVectorPredictor"]


def _check_int(name: str, value: int, minimum: int) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_ridge(ridge: float) -> float:
    if not isinstance(ridge, numbers.Real) or not 0.0 <= float(ridge) < float("inf"):
        raise ValueError(f"ridge must be a finite number >= 0, got {ridge!r}")
    return float(ridge)


def _check_history(history: torch.Tensor) -> None:
    if not isinstance(history, torch.Tensor) or history.is_complex():
        raise ValueError("history must be a real torch.Tensor [B, L_h, 2F] (interleaved layout)")
    if history.ndim != 3 or history.shape[-1] % 2:
        raise ValueError(
            f"history must have shape [B, L_h, 2F] with an even last axis, got "
            f"{list(history.shape)}"
        )


def _to_complex(history: torch.Tensor) -> torch.Tensor:
    """``[B, L, 2F]`` real interleaved -> ``[B, F, L]`` complex128 (time last)."""
    return real_to_complex(history.to(torch.float64), "interleaved").transpose(1, 2)


def _to_real(h: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``[B, L, F]`` complex -> ``[B, L, 2F]`` interleaved, with the dtype of ``like``."""
    return torch.view_as_real(h.contiguous()).flatten(-2).to(like.dtype)


def _check_order(order: int, history_slots: int, name: str) -> None:
    if order >= history_slots:
        raise ValueError(
            f"{name}={order} needs at least {order + 1} history slots (one equation), got "
            f"L_h={history_slots}; choose {name} < L_h"
        )


def _ridge_solve(gram: torch.Tensor, rhs: torch.Tensor, ridge: float) -> torch.Tensor:
    r"""Solve :math:`(\mathbf G + \lambda \mathbf I)\mathbf x = \mathbf r` for Hermitian PSD G.

    :math:`\lambda = \text{ridge} \cdot \operatorname{tr}(\mathbf G) / n`, i.e. relative to the
    mean eigenvalue of ``G`` (plus the smallest positive float, so that an all-zero history gives
    a zero solution).

    Shapes:
        gram: ``[..., n, n]``; rhs: ``[..., n, k]`` -> ``[..., n, k]``.
    """
    n = gram.shape[-1]
    scale = gram.diagonal(dim1=-2, dim2=-1).real.sum(-1) / n
    lam = ridge * scale + torch.finfo(scale.dtype).tiny
    eye = torch.eye(n, dtype=gram.dtype, device=gram.device)
    return torch.linalg.solve_ex(gram + lam[..., None, None] * eye, rhs)[0]


def _ridge_lstsq(a: torch.Tensor, b: torch.Tensor, ridge: float) -> torch.Tensor:
    r"""Ridge least squares :math:`\min_x \|a x - b\|^2 + \lambda \|x\|^2` (see
    :func:`_ridge_solve`); ``ridge=0`` gives the minimum-norm solution by pseudo-inverse.

    Shapes:
        a: ``[..., m, n]``; b: ``[..., m, k]`` -> ``[..., n, k]``.
    """
    if ridge == 0.0:
        return torch.linalg.pinv(a) @ b
    ah = a.mH
    return _ridge_solve(ah @ a, ah @ b, ridge)


def _fit_linear_prediction(h: torch.Tensor, order: int, ridge: float, shared: bool) -> torch.Tensor:
    r"""Ridge least-squares forward linear-prediction coefficients, oldest lag first.

    Fits :math:`h[t] \approx \sum_{j=0}^{p-1} b_j h[t-p+j]` over :math:`t = p, \dots, L-1` (and
    over all subcarriers jointly when ``shared``); :math:`b_j = a_{p-j}` in the lag notation of
    :class:`ARPredictor`. (Oldest first avoids flipping the large lag matrix.)

    Shapes:
        h: ``[B, F, L]`` complex -> ``[B, F, p]`` (``[B, 1, p]`` when ``shared``).
    """
    window = h.unfold(-1, order + 1, 1)  # [B, F, L-p, p+1]: h[t-p], ..., h[t-1], h[t]
    if ridge == 0.0:
        if shared:
            window = window.reshape(h.shape[0], 1, -1, order + 1)
        return _ridge_lstsq(window[..., :order], window[..., order:], 0.0)[..., 0]
    # One Gram matrix of [h[t-p], ..., h[t]] holds both normal-equation terms.
    gram = torch.einsum("bfti,bftj->bfij", window.conj(), window)  # [B, F, p+1, p+1]
    if shared:
        gram = gram.sum(1, keepdim=True)
    return _ridge_solve(gram[..., :order, :order], gram[..., :order, order:], ridge)[..., 0]


class NoPrediction(nn.Module):
    """Repeat the last history slot for every future slot (the "no prediction" baseline).

    Args:
        future_slots: ``L_f``, the number of predicted slots.

    Shapes:
        history: ``[B, L_h, 2F]`` -> ``[B, L_f, 2F]``.

    >>> NoPrediction(future_slots=2)(torch.arange(6.0).reshape(1, 3, 2)).tolist()
    [[[4.0, 5.0], [4.0, 5.0]]]
    """

    def __init__(self, future_slots: int = 4) -> None:
        super().__init__()
        self.future_slots = _check_int("future_slots", future_slots, 1)

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        _check_history(history)
        return history[:, -1:, :].repeat(1, self.future_slots, 1)

    def extra_repr(self) -> str:
        return f"future_slots={self.future_slots}"


class ARPredictor(nn.Module):
    r"""PAD-style autoregressive extrapolation fitted on each item's own history.

    Per item and subcarrier (or per item, ``shared_over_subcarriers=True``) the complex
    coefficients of an order-:math:`p` forward linear predictor are the ridge least-squares fit
    over the history :math:`h[0], \dots, h[L_h-1]`:

    .. math::

        \hat{\mathbf a} = \arg\min_{\mathbf a} \sum_{t=p}^{L_h-1}
            \Big| h[t] - \sum_{k=1}^{p} a_k\, h[t-k] \Big|^2 + \lambda \|\mathbf a\|^2
        = (\mathbf X^H \mathbf X + \lambda \mathbf I)^{-1} \mathbf X^H \mathbf y,
        \qquad \lambda = \text{ridge} \cdot \operatorname{tr}(\mathbf X^H \mathbf X) / p,

    (the shared fit sums the normal equations over subcarriers), then the future is extrapolated
    recursively, :math:`\hat h[t] = \sum_{k=1}^{p} \hat a_k \hat h[t-k]` for
    :math:`t = L_h, \dots, L_h + L_f - 1` with :math:`\hat h = h` inside the history. A noiseless
    sum of :math:`K \le p` complex exponentials :math:`h[t] = \sum_m c_m z_m^t` obeys such a
    recursion exactly, so it is predicted exactly as ``ridge -> 0``. Per subcarrier there are only
    :math:`L_h - p` equations (8 for the defaults): the ridge (or the shared fit, with
    :math:`F (L_h - p)` equations) keeps noisy fits in check.

    Args:
        order: ``p``, the number of lags; must be below ``L_h``.
        future_slots: ``L_f``, the number of predicted slots.
        ridge: relative Tikhonov weight (``0`` = minimum-norm least squares). The default 0.1
            suits the per-subcarrier fit on noisy CSI (10-25 dB SNR, 38.901 UMa): smaller values
            let 8 equations in 8 unknowns fit the noise and diverge; on noiseless CSI, or with
            ``shared_over_subcarriers=True``, 1e-4 or less is better.
        shared_over_subcarriers: fit one coefficient set per item across all subcarriers.

    Shapes:
        history: ``[B, L_h, 2F]`` -> ``[B, L_f, 2F]``.

    >>> t = torch.arange(6.0)
    >>> hist = torch.stack([torch.cos(0.3 * t), torch.sin(0.3 * t)], -1)[None]  # e^{0.3jt}
    >>> pred = ARPredictor(order=1, future_slots=2, ridge=0.0)(hist.double())
    >>> torch.allclose(pred[0, :, 0], torch.cos(0.3 * torch.tensor([6.0, 7.0])).double())
    True
    """

    def __init__(
        self,
        order: int = 8,
        future_slots: int = 4,
        ridge: float = 0.1,
        shared_over_subcarriers: bool = False,
    ) -> None:
        super().__init__()
        self.order = _check_int("order", order, 1)
        self.future_slots = _check_int("future_slots", future_slots, 1)
        self.ridge = _check_ridge(ridge)
        self.shared_over_subcarriers = bool(shared_over_subcarriers)

    def fit(self, history: torch.Tensor) -> torch.Tensor:
        """The fitted AR coefficients (complex128), ``a[..., k-1]`` for lag ``k``.

        Shapes:
            history: ``[B, L_h, 2F]`` -> ``[B, F, p]``, or ``[B, 1, p]`` when shared.
        """
        return self._fit(history)[0].flip(-1)

    def _fit(self, history: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Coefficients oldest lag first ``[B, F|1, p]`` and the complex history ``[B, F, L_h]``."""
        _check_history(history)
        _check_order(self.order, history.shape[1], "order")
        h = _to_complex(history)
        shared = self.shared_over_subcarriers
        return _fit_linear_prediction(h, self.order, self.ridge, shared), h

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        coeffs, h = self._fit(history)  # coeffs[..., j] multiplies h[t-p+j]
        buffer = h[..., -self.order :]  # [B, F, p]: h[t-p], ..., h[t-1]
        future = []
        for _ in range(self.future_slots):
            nxt = (coeffs * buffer).sum(-1, keepdim=True)
            future.append(nxt)
            buffer = torch.cat([buffer[..., 1:], nxt], dim=-1)
        return _to_real(torch.cat(future, dim=-1).transpose(1, 2), history)

    def extra_repr(self) -> str:
        return (
            f"order={self.order}, future_slots={self.future_slots}, ridge={self.ridge}, "
            f"shared_over_subcarriers={self.shared_over_subcarriers}"
        )


class PronyFit(NamedTuple):
    """A vector-Prony model :math:`h_f[t] = \\sum_m c_{f,m} z_m^t` of each item's history.

    Shapes:
        poles: ``[B, M]`` complex128, shared by all subcarriers (after clamping, if enabled).
        amplitudes: ``[B, M, F]`` complex128, per subcarrier (time origin: first history slot).
    """

    poles: torch.Tensor
    amplitudes: torch.Tensor


class PronyVectorPredictor(nn.Module):
    r"""Vector Prony method: Doppler modes shared by all subcarriers, amplitudes per subcarrier.

    Model of one item: :math:`h_f[t] = \sum_{m=1}^{M} c_{f,m} z_m^t`, where each mode (a path
    cluster's Doppler shift and decay) has the same pole :math:`z_m` on every subcarrier ``f``.

    1. Linear prediction jointly over subcarriers: the shared ridge fit of :class:`ARPredictor`
       of order :math:`M` gives :math:`\hat{\mathbf a}` from :math:`F (L_h - M)` equations.
    2. Poles: the roots of the prediction polynomial
       :math:`z^M - \sum_{k=1}^{M} \hat a_k z^{M-k}`, computed as the eigenvalues of its
       companion matrix (batched ``torch.linalg.eigvals``).
    3. Clamp (``clamp=True``): :math:`z_m \leftarrow z_m / \max(1, |z_m|)`. A pole outside the
       unit circle (fitted on noise, or a brief fade-in) would make the extrapolation grow
       without bound; the clamp keeps its Doppler frequency :math:`\arg z_m` and makes it
       non-growing. Channels of moving users are stationary over a few ms, so nothing real is
       lost.
    4. Amplitudes per subcarrier by ridge least squares on the Vandermonde matrix
       :math:`V_{t m} = z_m^t`, :math:`t = 0, \dots, L_h - 1`:
       :math:`\hat{\mathbf C} = (\mathbf V^H \mathbf V + \lambda \mathbf I)^{-1}\mathbf V^H
       \mathbf H` (:math:`\lambda` relative as in :class:`ARPredictor`).
    5. Extrapolate :math:`\hat h_f[t] = \sum_m \hat c_{f,m} z_m^t`,
       :math:`t = L_h, \dots, L_h + L_f - 1`.

    A noiseless sum of :math:`M` exponentials with poles in the unit disc is recovered exactly
    (poles and amplitudes). Without clamping, and with an exact fit, this equals the shared AR
    extrapolation; the two differ when the history is noisy.

    Args:
        num_modes: ``M``, the number of shared poles; must be below ``L_h``.
        future_slots: ``L_f``, the number of predicted slots.
        ridge: relative Tikhonov weight of both least-squares steps (``0`` = minimum norm); the
            :math:`F (L_h - M)` pooled equations need little (results at 10-25 dB SNR barely
            change between 1e-6 and 1e-3).
        clamp: project poles outside the unit circle onto it.

    Shapes:
        history: ``[B, L_h, 2F]`` -> ``[B, L_f, 2F]``.
    """

    def __init__(
        self,
        num_modes: int = 8,
        future_slots: int = 4,
        ridge: float = 1e-6,
        clamp: bool = True,
    ) -> None:
        super().__init__()
        self.num_modes = _check_int("num_modes", num_modes, 1)
        self.future_slots = _check_int("future_slots", future_slots, 1)
        self.ridge = _check_ridge(ridge)
        self.clamp = bool(clamp)

    def fit(self, history: torch.Tensor) -> PronyFit:
        """Shared poles and per-subcarrier amplitudes of each item's history.

        Shapes:
            history: ``[B, L_h, 2F]`` -> :class:`PronyFit` (``[B, M]``, ``[B, M, F]``).
        """
        _check_history(history)
        _check_order(self.num_modes, history.shape[1], "num_modes")
        poles, amplitudes, _ = self._fit(_to_complex(history), 0)
        return PronyFit(poles, amplitudes)

    def _fit(self, h: torch.Tensor, future_slots: int):
        """Poles ``[B, M]``, amplitudes ``[B, M, F]`` and powers ``[B, L_h + L_f, M]``."""
        b, _, length = h.shape
        m = self.num_modes
        coeffs = _fit_linear_prediction(h, m, self.ridge, shared=True)[:, 0]  # [B, M], oldest first
        companion = torch.zeros(b, m, m, dtype=h.dtype, device=h.device)
        companion[:, 0, :] = coeffs.flip(-1)  # a_1, ..., a_M
        companion[:, 1:, :-1] = torch.eye(m - 1, dtype=h.dtype, device=h.device)
        poles = torch.linalg.eigvals(companion)
        if self.clamp:
            poles = poles / poles.abs().clamp_min(1.0)
        # z_m^t by repeated products (exact at z = 0, unlike exp(t log z)).
        steps = poles[:, None, :].expand(b, length + future_slots - 1, m)
        ones = torch.ones(b, 1, m, dtype=h.dtype, device=h.device)
        powers = torch.cat([ones, torch.cumprod(steps, dim=1)], dim=1)  # [B, L_h + L_f, M]
        vander = powers[:, :length]
        amplitudes = _ridge_lstsq(vander, h.transpose(1, 2), self.ridge)
        return poles, amplitudes, powers

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        _check_history(history)
        length = history.shape[1]
        _check_order(self.num_modes, length, "num_modes")
        _, amplitudes, powers = self._fit(_to_complex(history), self.future_slots)
        return _to_real(powers[:, length:] @ amplitudes, history)  # [B, L_f, F]

    def extra_repr(self) -> str:
        return (
            f"num_modes={self.num_modes}, future_slots={self.future_slots}, "
            f"ridge={self.ridge}, clamp={self.clamp}"
        )
