"""The vectorised min-max uplink-bandwidth split behind :mod:`edgelam.training.resource_allocation`.

With bandwidth :math:`b` device :math:`k`'s uplink rate is :math:`r_k(b) = b \\log_2(1 + c_k/b)`
(noise grows with the band); it completes at :math:`a_k + U_k / r_k(b_k)`.
:func:`min_latency_split` finds, for many scheduled sets at once, the split of :math:`B_{tot}`
that minimises the latest completion (numpy, float64).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import lambertw

__all__ = ["min_latency_split", "rate_bps"]

_LN2 = math.log(2.0)


def rate_bps(b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """:math:`b \\log_2(1 + c/b)` (0 at :math:`b = 0`); the closed form the solver inverts."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, b * np.log1p(c / b) / _LN2, 0.0)


def _rate_slope(b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """:math:`r'(b) = (\\ln(1 + c/b) - c/(b + c)) / \\ln 2 > 0`."""
    return (np.log1p(c / b) - c / (b + c)) / _LN2


def _bandwidth_for_rate(rate: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Smallest :math:`b` with :math:`r(b) \\ge` ``rate`` (``inf`` beyond :math:`c/\\ln 2`).

    With :math:`x = c/b` and :math:`\\beta = \\rho \\ln 2 / c \\in (0, 1)`, :math:`r(b) = \\rho`
    reads :math:`\\ln(1 + x) = \\beta x`, whose positive root is
    :math:`x = -W_{-1}(-\\beta e^{-\\beta})/\\beta - 1`. Near the branch point
    (:math:`\\delta = 1 - \\beta < 10^{-2}`) the series
    :math:`x = 2\\delta + 8\\delta^2/3 + 28\\delta^3/9` is the better start. For :math:`x < 1`
    a Newton step on the well-conditioned :math:`1 - \\ln(1+x)/x = \\delta` polishes the root
    (above, Lambert W is accurate).
    """
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        beta = rate * _LN2 / c
        delta = (c - rate * _LN2) / c
        x = -lambertw(-beta * np.exp(-beta), k=-1).real / beta - 1.0
        x = np.where(delta < 1e-2, 2 * delta + 8 * delta**2 / 3 + 28 * delta**3 / 9, x)
        small = x < 1e-3  # series of q(x) = 1 - ln(1+x)/x and of q'(x)
        log1p = np.log1p(x)
        q = np.where(small, x / 2 - x**2 / 3 + x**3 / 4 - x**4 / 5, 1 - log1p / x)
        dq = np.where(small, 0.5 - 2 * x / 3 + 3 * x**2 / 4, (log1p - x / (1 + x)) / x**2)
        x = np.where(x < 1, x - (q - delta) / dq, x)
        b = np.where(x > 0, c / x, np.inf)
    return np.where(beta <= 0, 0.0, np.where(beta < 1, b, np.inf))


def _bandwidth_for_latency(
    t: np.ndarray, a: np.ndarray, u: np.ndarray, c: np.ndarray, pos: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """:math:`b_k(T)` and :math:`db_k/dT` for the ``pos`` entries (0 elsewhere), ``[n, K]``."""
    row, col = np.nonzero(pos)
    slack = t[row] - a[col]
    b, slope = np.zeros(pos.shape), np.zeros(pos.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = np.where(slack > 0, u[col] / slack, np.inf)
        b[row, col] = b_k = _bandwidth_for_rate(rho, c[col])
        slope[row, col] = np.where(
            np.isfinite(b_k), -(rho**2) / u[col] / _rate_slope(b_k, c[col]), 0
        )
    return b, slope


def min_latency_split(
    masks: np.ndarray,
    fixed_seconds: np.ndarray,
    uplink_bits: np.ndarray,
    rate_constant_hz: np.ndarray,
    total_bandwidth_hz: float,
    rtol: float = 1e-13,
    max_iter: int = 200,
) -> np.ndarray:
    """Latency-optimal bandwidths for each scheduled set: ``[n, K]`` masks -> ``[n, K]`` Hz.

    Args: per device ``[K]``: ``fixed_seconds`` :math:`a_k`, ``uplink_bits`` :math:`U_k`,
    ``rate_constant_hz`` :math:`c_k`; the band :math:`B_{tot}` to split.

    Finds the root :math:`T^\\star` of :math:`F(T) = \\sum_k b_k(T) = B_{tot}` over the devices
    with bits. :math:`F` is decreasing and convex (a convex increasing :math:`r^{-1}` of the
    convex decreasing :math:`U/(T - a)`), so every Newton step lands at or left of
    :math:`T^\\star`; steps outside the bracket ``(lo, hi)`` fall back to bisection. The
    bracket starts at the infinite-bandwidth floor :math:`\\max_k a_k + U_k \\ln 2/c_k` and the
    equal split's latency. Devices without bits only add :math:`T \\ge a_k` and get 0 Hz; the
    split of :math:`T^\\star` is finally scaled to use exactly :math:`B_{tot}`.
    """
    a, u, c, total = fixed_seconds, uplink_bits, rate_constant_hz, total_bandwidth_hz
    pos = masks & (u > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        lo = np.where(pos, a + u * _LN2 / c, -np.inf).max(1)
        b_eq = np.broadcast_to((total / masks.sum(1))[:, None], masks.shape)
        hi = np.where(pos, a + u / rate_bps(b_eq, c), -np.inf).max(1)
    t = hi.copy()
    rows = np.flatnonzero(pos.any(1))
    for _ in range(max_iter):
        if rows.size == 0:
            break
        t_r, lo_r, hi_r = t[rows], lo[rows], hi[rows]
        b_r, slope = _bandwidth_for_latency(t_r, a, u, c, pos[rows])
        f = b_r.sum(1) - total
        feasible = f <= 0
        hi_r = np.where(feasible, np.minimum(hi_r, t_r), hi_r)
        lo_r = np.where(feasible, lo_r, np.maximum(lo_r, t_r))
        with np.errstate(divide="ignore", invalid="ignore"):
            newton = t_r - f / slope.sum(1)
        inside = np.isfinite(newton) & (newton > lo_r) & (newton < hi_r)
        converged = np.abs(f) <= rtol * total
        done = converged | (hi_r - lo_r <= rtol * hi_r)
        # Converged rows keep their iterate; rows stopped by the bracket take its feasible end.
        t[rows] = np.where(
            done, np.where(converged, t_r, hi_r), np.where(inside, newton, 0.5 * (lo_r + hi_r))
        )
        lo[rows], hi[rows] = lo_r, hi_r
        rows = rows[~done]
    # Devices without bits: T >= a_k; re-evaluate where the last iterate was not kept.
    t_zero = np.where(masks & ~pos, a, -np.inf).max(1)
    t = np.maximum(t, t_zero)
    b, _ = _bandwidth_for_latency(t, a, u, c, pos)
    used = b.sum(1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        b = np.where(used > 0, b * (total / used), 0.0)
    return b
