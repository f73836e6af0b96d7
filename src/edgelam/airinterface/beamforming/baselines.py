r"""Classical precoders for the multi-user MISO downlink: WMMSE, ZF, RZF (MMSE) and MRT.

Every function maps channels ``H`` ``[batch, K, M]`` to a precoder ``W`` ``[batch, M, K]`` that
uses the full power, :math:`\|W\|_F^2 = P`, for each batch element (to float rounding): scaling
a precoder up never lowers an SINR, so the sum-rate optimum lies on the boundary. ``power`` and
``noise_power`` are floats or ``[batch]`` tensors. Computations keep the dtype of ``H``
(``complex64`` or ``complex128``); the scalar searches (bisections) run in float64.

* :func:`wmmse` -- weighted MMSE (Shi, Razaviyayn, Luo, He, IEEE TSP 2011): a block-coordinate
  descent that converges to a stationary point of the weighted sum rate.
* :func:`zero_forcing` -- pseudo-inverse beams, no inter-user interference (``K <= M``), with
  equal power per beam (default), one joint scaling, or weighted water-filling over the beams.
* :func:`regularized_zero_forcing` -- RZF / MMSE precoder
  :math:`H^H (H H^H + \tfrac{K\sigma^2}{P} I)^{-1}`, scaled jointly.
* :func:`maximum_ratio_transmission` -- :math:`W \propto H^H`, scaled jointly.
* :func:`solve` -- dispatch by name (``"wmmse"``, ``"zf"``, ``"rzf"``, ``"mrt"``).

Shapes:
    H: ``[batch, K, M]`` complex. W: ``[batch, M, K]`` complex. power, noise_power: float or
    ``[batch]``. weights: ``[K]`` or ``[batch, K]``, positive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from edgelam.airinterface.beamforming.problem import check_channels, project_power, sum_rate
from edgelam.config import ConfigError

__all__ = [
    "METHODS",
    "WMMSEInfo",
    "maximum_ratio_transmission",
    "regularized_zero_forcing",
    "solve",
    "wmmse",
    "zero_forcing",
]

METHODS: tuple[str, ...] = ("wmmse", "zf", "rzf", "mrt")
"""Names accepted by :func:`solve`."""

ZFAllocation = Literal["equal", "joint", "waterfill"]
_BISECTION_STEPS = 80  # float64 bisection: 2^-80 of the initial bracket


def _per_batch(name: str, value: float | torch.Tensor, H: torch.Tensor) -> torch.Tensor:
    """``value`` as a positive finite ``[batch]`` tensor of ``H``'s real dtype."""
    t = torch.as_tensor(value, dtype=H.real.dtype, device=H.device)
    if t.dim() == 0:
        t = t.expand(H.shape[0])
    if t.shape != (H.shape[0],):
        raise ValueError(f"{name}: must be a float or a [batch={H.shape[0]}] tensor, got "
                         f"shape {tuple(t.shape)}")  # fmt: skip
    if not bool(torch.isfinite(t).all()) or not bool((t > 0).all()):
        raise ValueError(f"{name}: must be finite and > 0")
    return t


def _weights(weights: torch.Tensor | None, H: torch.Tensor) -> torch.Tensor:
    """User weights as a ``[batch, K]`` tensor (ones if None); positive and finite."""
    B, K = H.shape[:2]
    if weights is None:
        return torch.ones(B, K, dtype=H.real.dtype, device=H.device)
    w = torch.as_tensor(weights, dtype=H.real.dtype, device=H.device)
    if w.shape not in ((K,), (B, K)):
        raise ValueError(f"weights: must be [K={K}] or [batch, K]={B, K}, got {tuple(w.shape)}")
    if not bool(torch.isfinite(w).all()) or not bool((w > 0).all()):
        raise ValueError("weights: must be finite and > 0")
    return w.expand(B, K)


def maximum_ratio_transmission(
    H: torch.Tensor, power: float | torch.Tensor, noise_power: float | torch.Tensor | None = None
) -> torch.Tensor:
    """MRT (matched filter): ``W = c H^H`` with one scale ``c`` per batch element.

    Optimal for a single user and, among linear precoders, at vanishing SNR. ``noise_power`` is
    accepted for a uniform signature and unused.

    Shapes:
        H: ``[batch, K, M]`` -> W: ``[batch, M, K]``.

    >>> H = torch.tensor([[[3.0 + 0j, 4.0]]])              # one user, two antennas
    >>> maximum_ratio_transmission(H, 1.0)[0, :, 0].real   # h^H / ||h||
    tensor([0.6000, 0.8000])
    """
    check_channels(H)
    return project_power(H.mH, _per_batch("power", power, H))


def regularized_zero_forcing(
    H: torch.Tensor,
    power: float | torch.Tensor,
    noise_power: float | torch.Tensor,
    *,
    regularization: float | torch.Tensor | None = None,
) -> torch.Tensor:
    r"""RZF / MMSE precoder :math:`W = c\, H^H (H H^H + \lambda I_K)^{-1}`, jointly scaled to ``P``.

    Args:
        H: channels.
        power: total transmit power ``P``.
        noise_power: noise power ``sigma^2`` per user.
        regularization: ``lambda``; default :math:`K \sigma^2 / P` (Peel, Hochwald, Swindlehurst
            2005), which tends to ZF at high SNR and to MRT at low SNR.

    Shapes:
        H: ``[batch, K, M]`` -> W: ``[batch, M, K]``.
    """
    check_channels(H)
    p = _per_batch("power", power, H)
    if regularization is None:
        reg = H.shape[1] * _per_batch("noise_power", noise_power, H) / p
    else:
        reg = _per_batch("regularization", regularization, H)
    K = H.shape[1]
    gram = H @ H.mH + reg[:, None, None] * torch.eye(K, dtype=H.dtype, device=H.device)
    return project_power(torch.linalg.solve(gram, H).mH, p)


def zero_forcing(
    H: torch.Tensor,
    power: float | torch.Tensor,
    noise_power: float | torch.Tensor | None = None,
    *,
    allocation: ZFAllocation = "equal",
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Zero-forcing beams :math:`H^+ = H^H (H H^H)^{-1}` (``h_k w_j = 0`` for ``j != k``).

    Column ``k`` of :math:`H^+` has squared norm :math:`n_k = [(H H^H)^{-1}]_{kk}`; with beam
    ``k`` normalised and given power :math:`p_k`, user ``k`` sees SNR :math:`p_k / (n_k\sigma^2)`.

    Args:
        H: channels, ``K <= M`` (the pseudo-inverse is taken by SVD).
        power: total transmit power ``P``.
        noise_power: ``sigma^2``; needed by ``allocation="waterfill"`` only.
        allocation: ``"equal"`` (default): :math:`p_k = P/K` per beam, asymptotically optimal
            among ZF precoders at high SNR; ``"joint"``: :math:`W = H^+` scaled as a whole
            (every user gets the same SNR); ``"waterfill"``: weighted water-filling
            :math:`p_k = (\alpha_k \nu - n_k \sigma^2)^+` with :math:`\sum p_k = P`, the best ZF
            precoder for the weighted sum rate.
        weights: user weights :math:`\alpha_k` (``"waterfill"`` only).

    Shapes:
        H: ``[batch, K, M]`` -> W: ``[batch, M, K]``.

    Raises:
        ValueError: ``K > M``, an unknown allocation, or missing noise power for water-filling.
    """
    check_channels(H)
    B, K, M = H.shape
    if K > M:
        raise ValueError(f"zero forcing needs K <= M users, got K={K} > M={M}")
    if allocation not in ("equal", "joint", "waterfill"):
        raise ValueError(
            f"allocation: {allocation!r} is not one of ['equal', 'joint', 'waterfill']"
        )
    if weights is not None and allocation != "waterfill":
        raise ValueError("weights: only zero forcing with allocation='waterfill' uses them")
    p = _per_batch("power", power, H)
    pinv = torch.linalg.pinv(H)  # [B, M, K]
    if allocation == "joint":
        return project_power(pinv, p)
    norms = pinv.abs().square().sum(-2)  # n_k [B, K]
    if allocation == "equal":
        beam_power = (p / K)[:, None].expand(B, K)
    else:
        if noise_power is None:
            raise ValueError("noise_power: needed by zero forcing with allocation='waterfill'")
        s2 = _per_batch("noise_power", noise_power, H)
        floor = (norms * s2[:, None]).double()  # n_k sigma^2, power needed to "fill" beam k
        alpha = _weights(weights, H).double()
        total = p.double()
        lo = torch.zeros_like(total)
        hi = (total + floor.sum(-1)) / alpha.min(-1).values  # all beams above water
        for _ in range(_BISECTION_STEPS):
            nu = (lo + hi) / 2
            used = (alpha * nu[:, None] - floor).clamp_min(0).sum(-1)
            lo, hi = torch.where(used > total, lo, nu), torch.where(used > total, nu, hi)
        beam_power = (alpha * hi[:, None] - floor).clamp_min(0).to(norms.dtype)
    W = pinv * (beam_power / norms.clamp_min(torch.finfo(norms.dtype).tiny)).sqrt()[:, None, :]
    return project_power(W, p)


@dataclass
class WMMSEInfo:
    """What :func:`wmmse` did, per batch element.

    Attributes:
        iterations: ``[batch]`` int64: WMMSE iterations run before stopping.
        converged: ``[batch]`` bool: the relative change fell below ``tol`` (else ``max_iter``).
        history: ``[iterations.max() + 1, batch]``: the weighted sum rate of the initial
            precoder and after each iteration (held constant once an element has stopped).
    """

    iterations: torch.Tensor
    converged: torch.Tensor
    history: torch.Tensor


def _wmmse_step(
    H: torch.Tensor, W: torch.Tensor, p: torch.Tensor, s2: torch.Tensor, alpha: torch.Tensor
) -> torch.Tensor:
    """One WMMSE iteration (receivers, MSE weights, precoder) for a sub-batch; see :func:`wmmse`."""
    G = H @ W  # [B, K(user), K(beam)]: h_k w_j
    signal = torch.diagonal(G, dim1=-2, dim2=-1)  # h_k w_k
    gain = G.abs().square()
    eye = torch.eye(gain.shape[-1], dtype=torch.bool, device=gain.device)
    interference = gain.masked_fill(eye, 0.0).sum(-1) + s2[:, None]
    received = interference + signal.abs().square()  # E|y_k|^2
    u = signal.conj() / received  # MMSE receivers
    v = received / interference  # 1 / MSE = 1 + SINR
    c = (alpha * v * u.abs().square()).to(H.dtype)  # [B, K]
    A = H.mH @ (c[:, :, None] * H)  # sum_k c_k h_k^H h_k  [B, M, M]
    Bmat = H.mH * (alpha * v * u.conj()).to(H.dtype)[:, None, :]  # columns alpha_k v_k u_k^* h_k^H
    lam, U = torch.linalg.eigh(A)  # A = U diag(lam) U^H
    Phi = U.mH @ Bmat  # [B, M, K]
    thr = lam[:, -1:] * (torch.finfo(lam.dtype).eps * 10 * lam.shape[-1])
    keep = lam > thr  # the range of A (B lies in it); the rest is round-off
    Phi = Phi * keep[:, :, None]
    phi = Phi.abs().square().sum(-1).double()  # [B, M]
    lam64 = lam.double().clamp_min(0)
    inv_lam = torch.where(keep, 1.0 / torch.where(keep, lam64, 1.0), 0.0)
    total = p.double()
    needs_mu = (phi * inv_lam.square()).sum(-1) > total  # mu = 0 (pseudo-inverse) if feasible
    lo = torch.zeros_like(total)
    hi = (phi.sum(-1) / total).sqrt()  # power(hi) <= sum(phi) / hi^2 = P
    for _ in range(_BISECTION_STEPS):
        mu = (lo + hi) / 2
        over = (phi / (lam64 + mu[:, None]).square()).sum(-1) > total
        lo, hi = torch.where(over, mu, lo), torch.where(over, hi, mu)
    mu = torch.where(needs_mu, hi, 0.0)
    scale = torch.where(keep, 1.0 / (lam64 + mu[:, None]).clamp_min(1e-300), 0.0)
    W_new = U @ (scale.to(lam.dtype)[:, :, None] * Phi)
    return project_power(W_new, p)


def _initial_precoder(
    init: str, H: torch.Tensor, p: torch.Tensor, s2: torch.Tensor, alpha: torch.Tensor
) -> torch.Tensor:
    """WMMSE's starting point: a named baseline, or per element the best of RZF, ZF and MRT."""
    candidates = {
        "rzf": lambda: regularized_zero_forcing(H, p, s2),
        "mrt": lambda: maximum_ratio_transmission(H, p),
        "zf": lambda: zero_forcing(H, p),
    }
    if init != "best":
        return candidates[init]()
    if H.shape[1] > H.shape[2]:
        del candidates["zf"]
    Ws = torch.stack([make() for make in candidates.values()])  # [C, B, M, K]
    rates = torch.stack([sum_rate(H, W, s2, alpha) for W in Ws])  # [C, B]
    best = rates.argmax(0)
    return Ws[best, torch.arange(H.shape[0], device=H.device)]


def wmmse(
    H: torch.Tensor,
    power: float | torch.Tensor,
    noise_power: float | torch.Tensor,
    *,
    weights: torch.Tensor | None = None,
    init: Literal["best", "rzf", "mrt", "zf"] | torch.Tensor = "best",
    tol: float = 1e-6,
    max_iter: int = 500,
    return_info: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, WMMSEInfo]:
    r"""Weighted MMSE precoding (Shi et al. 2011), batched, with per-element stopping.

    Each iteration, for all users ``k`` at once:

    .. math::

        u_k = \frac{(h_k w_k)^*}{\sum_j |h_k w_j|^2 + \sigma^2}, \qquad
        v_k = \frac{1}{1 - u_k h_k w_k} = 1 + \mathrm{SINR}_k, \qquad
        w_k = \alpha_k v_k u_k^* \Big(\sum_j \alpha_j v_j |u_j|^2 h_j^H h_j + \mu I\Big)^{-1}
        h_k^H,

    with :math:`\mu \ge 0` found by bisection (on the eigen-decomposition of the matrix, in
    float64) so that :math:`\|W\|_F^2 = P`; if :math:`\mu = 0` (pseudo-inverse) already meets
    the budget, ``W`` is scaled up to ``P``, which raises every SINR. The weighted sum rate never
    decreases from one iteration to the next. A batch element stops when
    :math:`|f_t - f_{t-1}| / f_{t-1} <` ``tol`` (``f``: weighted sum rate) or after ``max_iter``
    iterations; stopped elements are no longer updated, so results do not depend on which other
    channels share the batch.

    Args:
        H: channels.
        power: total transmit power ``P``.
        noise_power: noise power ``sigma^2`` (> 0).
        weights: user weights :math:`\alpha_k` (default all 1).
        init: starting precoder: ``"best"`` (default: per batch element, whichever of RZF, ZF
            (if ``K <= M``) and MRT has the highest weighted sum rate, so that WMMSE never ends
            below any of them), ``"rzf"``, ``"mrt"``, ``"zf"``, or a ``[batch, M, K]`` tensor
            (scaled to power ``P``).
        tol: relative sum-rate change below which an element has converged (default 1e-6).
        max_iter: most iterations per element.
        return_info: also return a :class:`WMMSEInfo`.

    Returns:
        ``W`` ``[batch, M, K]``, or ``(W, info)`` with ``return_info``.

    >>> H = torch.tensor([[[1.0 + 0j, 1.0]]])                  # K = 1: WMMSE finds MRT
    >>> W, info = wmmse(H, 1.0, 0.1, return_info=True)
    >>> round(float(sum_rate(H, W, 0.1)), 4), bool(info.converged[0])   # log2(1 + 2 / 0.1)
    (4.3923, True)
    """
    check_channels(H)
    if not tol >= 0 or max_iter < 0:
        raise ValueError(f"need tol >= 0 and max_iter >= 0, got tol={tol}, max_iter={max_iter}")
    p = _per_batch("power", power, H)
    s2 = _per_batch("noise_power", noise_power, H)
    alpha = _weights(weights, H)
    if torch.is_tensor(init):
        if init.shape != (H.shape[0], H.shape[2], H.shape[1]):
            raise ValueError(f"init: must be [batch, M, K], got {tuple(init.shape)}")
        W = project_power(init.to(H.dtype), p)
    elif init in ("best", "rzf", "mrt", "zf"):
        W = _initial_precoder(init, H, p, s2, alpha)
    else:
        raise ValueError(f"init: {init!r} is not one of ['best', 'rzf', 'mrt', 'zf'] or a tensor")
    W = W.clone()
    rate = sum_rate(H, W, s2, alpha)
    history = [rate.clone()]
    iterations = torch.zeros(H.shape[0], dtype=torch.int64, device=H.device)
    converged = torch.zeros(H.shape[0], dtype=torch.bool, device=H.device)
    active = torch.arange(H.shape[0], device=H.device)
    for _ in range(max_iter):
        if active.numel() == 0:
            break
        h, a_p, a_s2, a_w = H[active], p[active], s2[active], alpha[active]
        W_new = _wmmse_step(h, W[active], a_p, a_s2, a_w)
        new_rate = sum_rate(h, W_new, a_s2, a_w)
        change = (new_rate - rate[active]).abs() / rate[active].abs().clamp_min(1e-30)
        W[active], rate[active] = W_new, new_rate
        iterations[active] += 1
        done = change < tol
        converged[active[done]] = True
        active = active[~done]
        history.append(rate.clone())
    if not return_info:
        return W
    return W, WMMSEInfo(iterations, converged, torch.stack(history))


def solve(
    method: str,
    H: torch.Tensor,
    power: float | torch.Tensor,
    noise_power: float | torch.Tensor,
    *,
    weights: torch.Tensor | None = None,
    **options,
) -> torch.Tensor | tuple[torch.Tensor, WMMSEInfo]:
    """Precoder of a named baseline: ``"wmmse"``, ``"zf"``, ``"rzf"`` or ``"mrt"``.

    ``options`` go to the method (e.g. ``tol``, ``max_iter``, ``return_info`` for WMMSE,
    ``allocation`` for ZF). ``weights`` are used by WMMSE and ZF water-filling only.

    Shapes:
        H: ``[batch, K, M]`` -> W: ``[batch, M, K]``.

    Raises:
        ConfigError: unknown method (the message lists the allowed ones), or weights given to a
            method that ignores them.

    >>> solve("svd", torch.ones(1, 1, 1, dtype=torch.complex64), 1.0, 1.0)
    Traceback (most recent call last):
    ...
    edgelam.config.ConfigError: method: 'svd' is not one of ['wmmse', 'zf', 'rzf', 'mrt']
    """
    if method not in METHODS:
        raise ConfigError(f"method: {method!r} is not one of {list(METHODS)}")
    if weights is not None and method in ("rzf", "mrt"):
        raise ConfigError(f"weights: {method} ignores user weights; use wmmse or zf (waterfill)")
    if method == "wmmse":
        return wmmse(H, power, noise_power, weights=weights, **options)
    if method == "zf":
        if weights is not None:
            options.setdefault("allocation", "waterfill")
            options["weights"] = weights
        return zero_forcing(H, power, noise_power, **options)
    if method == "rzf":
        return regularized_zero_forcing(H, power, noise_power, **options)
    return maximum_ratio_transmission(H, power, noise_power, **options)
