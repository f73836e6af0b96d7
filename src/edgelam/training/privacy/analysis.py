r"""Rényi-DP analysis of subsampled Gaussian mechanisms: pure functions, no state.

A Gaussian mechanism adds noise of standard deviation :math:`\sigma \Delta` to a function of
L2 sensitivity :math:`\Delta`; :math:`\sigma` is its *noise multiplier*. Run on a random batch
of a dataset of ``n`` records, it is accounted as one of three events (the RDP curves come from
``dp-accounting``'s events; :func:`rdp_curve` dispatches):

========================  ===============  ==================================================
sampling                  adjacency        event
========================  ===============  ==================================================
``poisson`` (rate q)      add/remove one   Poisson-subsampled Gaussian (Mironov et al. 2019),
                                           the DP-SGD accounting of a noisy *sum*
``fixed`` (m = q n)       replace one      sampling without replacement (Wang, Balle,
                                           Kasiviswanathan 2019, Thm. 27)
``poisson`` (rate q)      replace one      mixture over the visible batch size ``b`` of the
                                           fixed-size events, see :func:`rdp_poisson_rows`
========================  ===============  ==================================================

``noise_multiplier`` is always relative to the sensitivity under the stated adjacency (a
per-sample clip norm ``C`` gives :math:`\Delta = C` for add/remove of a summand and
:math:`\Delta = 2C` when one record is replaced by another). RDP curves compose by addition and
convert to :math:`(\epsilon, \delta)` with :func:`epsilon_from_rdp`.

>>> round(epsilon(1.0, 0.01, 1000, 1e-5), 4)  # ANCHORS.md: 2.1014
2.1014
>>> round(calibrate_noise(3.0, 1e-5, 0.01, 1000), 3)  # ANCHORS.md: ~0.865
0.865
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from dp_accounting import dp_event
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.privacy_accountant import NeighboringRelation
from dp_accounting.rdp import rdp_privacy_accountant as rdp_lib
from scipy import special, stats

from edgelam.config import ConfigError

__all__ = [
    "Sampling",
    "Relation",
    "AccountantKind",
    "DEFAULT_ORDERS",
    "ROW_ORDERS",
    "check_parameters",
    "default_relation",
    "sample_size",
    "gaussian_event",
    "rdp_curve",
    "rdp_poisson_rows",
    "epsilon_from_rdp",
    "epsilon",
    "pld_epsilon",
    "calibrate_noise",
    "combine_noise_multipliers",
]

Sampling = Literal["poisson", "fixed"]
Relation = Literal["add_remove", "replace_one"]
AccountantKind = Literal["rdp", "pld"]

DEFAULT_ORDERS: tuple[float, ...] = tuple(float(a) for a in rdp_lib.DEFAULT_RDP_ORDERS)
"""dp-accounting's default RDP orders (1.1 ... 10.9, 11 ... 63, 128, 256, 512, 1024)."""

ROW_ORDERS: tuple[float, ...] = (1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 6.0, 7.0,
                                  8.0, 9.0, 10.0, 12.0, 14.0, 16.0, 20.0, 24.0, 28.0, 32.0, 40.0,
                                  48.0, 64.0)  # fmt: skip
"""Orders of the replace-one events: sampling without replacement costs ~1 ms per order (far
more than Poisson), and this grid loses < 1% of epsilon against the default one for
epsilon >= 0.3 (fixed-size, q = 0.01, 100-1000 steps)."""

_RELATIONS = {
    "add_remove": NeighboringRelation.ADD_OR_REMOVE_ONE,
    "replace_one": NeighboringRelation.REPLACE_ONE,
}


def check_parameters(
    *,
    noise_multiplier: float | None = None,
    sample_rate: float | None = None,
    steps: int | None = None,
    delta: float | None = None,
    epsilon: float | None = None,
    dataset_size: int | None = None,
) -> None:
    """Raise a :class:`~edgelam.config.ConfigError` naming the first invalid parameter.

    Allowed: ``noise_multiplier >= 0``, ``0 < sample_rate <= 1``, ``steps >= 1`` (integer),
    ``0 < delta < 1``, ``epsilon > 0``, ``dataset_size >= 1``; None skips a parameter.

    >>> check_parameters(sample_rate=1.5)
    Traceback (most recent call last):
    ...
    edgelam.config.ConfigError: sample_rate: must be in (0, 1], got 1.5
    """
    checks = (
        ("noise_multiplier", noise_multiplier, lambda v: v >= 0, "must be >= 0"),
        ("sample_rate", sample_rate, lambda v: 0 < v <= 1, "must be in (0, 1]"),
        ("steps", steps, lambda v: v >= 1 and float(v).is_integer(), "must be an integer >= 1"),
        ("delta", delta, lambda v: 0 < v < 1, "must be in (0, 1)"),
        ("epsilon", epsilon, lambda v: v > 0, "must be > 0"),
        ("dataset_size", dataset_size, lambda v: v >= 1 and float(v).is_integer(),
         "must be an integer >= 1"),
    )  # fmt: skip
    for name, value, ok, rule in checks:
        if value is not None and not (math.isfinite(value) and ok(value)):
            raise ConfigError(f"{name}: {rule}, got {value}")


def default_relation(sampling: Sampling) -> Relation:
    """``add_remove`` for Poisson sampling, ``replace_one`` for fixed-size batches (the only
    relation under which sampling without replacement is analysed)."""
    return "add_remove" if sampling == "poisson" else "replace_one"


def sample_size(sample_rate: float, dataset_size: int | None) -> int:
    """The fixed batch size ``m = q n`` (must be an integer in ``1..n``).

    >>> sample_size(0.25, 40)
    10
    """
    if dataset_size is None:
        raise ConfigError("dataset_size: fixed-size sampling needs the dataset size n")
    check_parameters(sample_rate=sample_rate, dataset_size=dataset_size)
    m = round(sample_rate * dataset_size)
    if m < 1 or abs(m - sample_rate * dataset_size) > 1e-6 * dataset_size:
        raise ConfigError(
            f"sample_rate: q * n = {sample_rate} * {dataset_size} is not a whole batch size"
        )
    return m


def gaussian_event(
    noise_multiplier: float,
    sample_rate: float,
    sampling: Sampling = "poisson",
    dataset_size: int | None = None,
) -> dp_event.DpEvent:
    """The ``dp-accounting`` event of one subsampled Gaussian step.

    Args:
        noise_multiplier: noise std / sensitivity.
        sample_rate: ``q`` (Poisson inclusion probability, or ``m / n`` for ``fixed``).
        sampling: ``poisson`` or ``fixed`` (without replacement, needs ``dataset_size``).
        dataset_size: ``n``.
    """
    gaussian = dp_event.GaussianDpEvent(noise_multiplier)
    if sampling == "poisson":
        return dp_event.PoissonSampledDpEvent(sample_rate, gaussian)
    if sampling == "fixed":
        m = sample_size(sample_rate, dataset_size)
        return dp_event.SampledWithoutReplacementDpEvent(int(dataset_size), m, gaussian)
    raise ConfigError(f"sampling: {sampling!r} is not one of ['poisson', 'fixed']")


def rdp_curve(
    noise_multiplier: float,
    sample_rate: float,
    *,
    sampling: Sampling = "poisson",
    relation: Relation | None = None,
    dataset_size: int | None = None,
    orders: Sequence[float] | None = None,
) -> np.ndarray:
    """RDP :math:`\\epsilon(\\alpha)` of ONE subsampled Gaussian step at each order.

    Args:
        noise_multiplier: noise std / sensitivity (0: no noise, infinite RDP).
        sample_rate: ``q``.
        sampling: ``poisson`` or ``fixed``.
        relation: adjacency (default :func:`default_relation`); ``fixed`` needs
            ``replace_one``.
        dataset_size: ``n`` (``fixed``, and ``poisson`` with ``replace_one``).
        orders: RDP orders > 1 (default :data:`DEFAULT_ORDERS` for add/remove,
            :data:`ROW_ORDERS` for replace-one).

    Returns:
        ``[len(orders)]`` float64 array.

    Raises:
        ConfigError: invalid parameters or an unsupported (sampling, relation) pair.

    >>> rdp_curve(1.0, 1.0, orders=[2.0, 4.0])  # no subsampling: alpha / (2 sigma^2)
    array([1., 2.])
    """
    relation = relation or default_relation(sampling)
    if relation not in _RELATIONS:
        raise ConfigError(f"relation: {relation!r} is not one of {list(_RELATIONS)}")
    if sampling == "fixed" and relation != "replace_one":
        raise ConfigError(
            "sampling: 'fixed' (without replacement) is analysed under replace-one adjacency "
            "only (relation='replace_one')"
        )
    check_parameters(
        noise_multiplier=noise_multiplier, sample_rate=sample_rate, dataset_size=dataset_size
    )
    default = DEFAULT_ORDERS if relation == "add_remove" else ROW_ORDERS
    orders = tuple(float(a) for a in (default if orders is None else orders))
    if noise_multiplier == 0:
        return np.full(len(orders), np.inf)
    if sampling == "poisson" and relation == "replace_one":
        if dataset_size is None:
            raise ConfigError("dataset_size: Poisson sampling under replace-one needs n")
        return rdp_poisson_rows(noise_multiplier, sample_rate, int(dataset_size), orders).copy()
    return _event_rdp(
        noise_multiplier, sample_rate, sampling, relation, dataset_size, orders
    ).copy()


@functools.lru_cache(maxsize=4096)
def _event_rdp(
    sigma: float, q: float, sampling: str, relation: str, n: int | None, orders: tuple
) -> np.ndarray:
    accountant = rdp_lib.RdpAccountant(list(orders), _RELATIONS[relation])
    accountant.compose(gaussian_event(sigma, q, sampling, n))  # type: ignore[arg-type]
    # subsampling never costs more than the unsampled Gaussian mechanism (joint convexity)
    out = np.minimum(accountant.rdp, np.array(orders) / (2 * sigma**2))
    out.setflags(write=False)  # cached: shared by every caller
    return out


@functools.lru_cache(maxsize=256)
def rdp_poisson_rows(
    noise_multiplier: float, sample_rate: float, dataset_size: int, orders: tuple[float, ...]
) -> np.ndarray:
    r"""RDP of one Poisson-sampled step under replace-one adjacency, the batch never empty.

    Each of the ``n`` records enters the batch independently with probability ``q``; an empty
    batch is drawn again, so the batch size ``b`` follows the binomial law conditioned on
    ``b >= 1``. ``n`` is public, so ``b`` has the same law for neighbouring datasets and, given
    ``b``, the batch is a uniform ``b``-subset: the step is a mixture, over a visible ``b``, of
    sampling without replacement at rate ``b / n``. Outputs with different ``b`` are disjoint,
    hence exactly

    .. math::
        \epsilon(\alpha) = \frac{1}{\alpha - 1} \log \sum_{b \ge 1} P(b \mid b \ge 1)
        \, e^{(\alpha - 1)\, \epsilon_{\mathrm{wor}}(\alpha;\, b / n)}.

    It holds whatever the mechanism releases given the batch (a noisy sum, or one noisy row per
    sample, as split learning does). Every ``b`` of non-negligible weight is evaluated; beyond,
    the sizes are grouped in blocks ``(k_{j-1}, k_j]`` of 10% growth, each bounded by the
    curve at ``k_j`` (the WOR bound increases with the sampling rate), so the result is an
    upper bound; :math:`\epsilon_{\mathrm{wor}}(\alpha; 1) = \alpha / (2 \sigma^2)`.

    Args:
        noise_multiplier: noise std / replace-one sensitivity.
        sample_rate: ``q`` in (0, 1].
        dataset_size: ``n``.
        orders: RDP orders (a tuple, for the cache).

    Returns:
        ``[len(orders)]`` float64 array (read-only: it is cached).
    """
    sigma, q, n = noise_multiplier, sample_rate, dataset_size
    alphas = np.array(orders)
    b = np.arange(1, n + 1)
    log_p = stats.binom.logpmf(b, n, q)
    if q < 1:  # condition on b >= 1
        log_p = log_p - np.log(-np.expm1(n * np.log1p(-q)))
    # knots: every b of non-negligible weight, then geometrically up to n; the batch sizes in
    # (previous knot, knot] are bounded by the knot's curve (the WOR bound grows with b)
    central = b[log_p >= log_p.max() - 20.0]
    knots = list(range(int(central.min()), int(central.max()) + 1))
    while knots[-1] < n:
        knots.append(min(n, math.ceil(knots[-1] * 1.1)))
    edges = np.searchsorted(b, knots, side="right")  # log_p[prev:edge] -> knot
    starts = (0, *edges[:-1])
    log_mass = [special.logsumexp(log_p[lo:hi]) for lo, hi in zip(starts, edges, strict=True)]
    curves = np.stack([_event_rdp(sigma, k / n, "fixed", "replace_one", n, orders) for k in knots])
    terms = np.array(log_mass)[:, None] + (alphas - 1) * curves
    out = special.logsumexp(terms, axis=0) / (alphas - 1)
    out.setflags(write=False)  # cached: shared by every caller
    return out


def epsilon_from_rdp(
    orders: Sequence[float], rdp: Sequence[float], delta: float
) -> tuple[float, float]:
    """``(epsilon, optimal order)`` of an RDP curve at ``delta`` (dp-accounting's conversion,
    Canonne-Kamath-Steinke 2020 Prop. 12 / Asoodeh et al. 2020).

    >>> eps, order = epsilon_from_rdp([2.0, 8.0], [0.5, 2.0], 1e-5)
    >>> round(eps, 3), order
    (3.214, 8.0)
    """
    check_parameters(delta=delta)
    eps, order = rdp_lib.compute_epsilon(np.asarray(orders), np.asarray(rdp), delta)
    return float(eps), float(order)


def pld_epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """Epsilon of ``steps`` Poisson-subsampled Gaussian steps (add/remove) by privacy loss
    distributions (``dp-accounting``'s :class:`PLDAccountant`, tighter than RDP)."""
    check_parameters(
        noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps, delta=delta
    )
    if noise_multiplier == 0:
        return math.inf
    accountant = pld_privacy_accountant.PLDAccountant()
    accountant.compose(gaussian_event(noise_multiplier, sample_rate), int(steps))
    return float(accountant.get_epsilon(delta))


def epsilon(
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    delta: float,
    *,
    accountant: AccountantKind = "rdp",
    sampling: Sampling = "poisson",
    relation: Relation | None = None,
    dataset_size: int | None = None,
) -> float:
    """Epsilon at ``delta`` after ``steps`` identical subsampled Gaussian steps.

    Args:
        noise_multiplier, sample_rate, sampling, relation, dataset_size: see :func:`rdp_curve`.
        steps: number of steps ``T``.
        delta: target delta.
        accountant: ``rdp``, or ``pld`` (Poisson add/remove only: dp-accounting has no PLD of
            sampling without replacement).

    Raises:
        ConfigError: invalid parameters or an unsupported combination.
    """
    check_parameters(steps=steps, delta=delta)
    relation = relation or default_relation(sampling)
    if accountant == "pld":
        if (sampling, relation) != ("poisson", "add_remove"):
            raise ConfigError(
                "accountant: 'pld' supports Poisson sampling with add/remove adjacency only "
                "(dp-accounting has no PLD of sampling without replacement); use 'rdp'"
            )
        return pld_epsilon(noise_multiplier, sample_rate, steps, delta)
    if accountant != "rdp":
        raise ConfigError(f"accountant: {accountant!r} is not one of ['rdp', 'pld']")
    curve = rdp_curve(noise_multiplier, sample_rate, sampling=sampling, relation=relation,
                      dataset_size=dataset_size)  # fmt: skip
    orders = DEFAULT_ORDERS if relation == "add_remove" else ROW_ORDERS
    return epsilon_from_rdp(orders, steps * curve, delta)[0]


_epsilon = epsilon  # calibrate_noise's argument ``epsilon`` shadows the function


def calibrate_noise(
    epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    *,
    accountant: AccountantKind = "rdp",
    sampling: Sampling = "poisson",
    relation: Relation | None = None,
    dataset_size: int | None = None,
    rtol: float = 1e-4,
) -> float:
    """The smallest noise multiplier whose epsilon after ``steps`` steps is <= ``epsilon``.

    Bisection on :math:`\\log \\sigma` (epsilon decreases with sigma): a bracket is grown by
    doubling / halving from 1, then halved until ``hi / lo - 1 <= rtol``; the upper end is
    returned, so the target is always met.

    Raises:
        ConfigError: invalid parameters, or no sigma <= 1e4 reaches the target.
    """
    check_parameters(epsilon=epsilon, delta=delta, sample_rate=sample_rate, steps=steps)

    setting = dict(accountant=accountant, sampling=sampling, relation=relation,
                   dataset_size=dataset_size)  # fmt: skip

    def eps(sigma: float) -> float:
        return _epsilon(sigma, sample_rate, steps, delta, **setting)

    lo, hi = 1.0, 1.0
    while eps(hi) > epsilon:
        lo, hi = hi, 2 * hi
        if hi > 1e4:
            raise ConfigError(f"epsilon: {epsilon} is out of reach (noise multiplier > 1e4)")
    if lo == hi:
        while eps(lo) <= epsilon and lo > 1e-3:
            hi, lo = lo, lo / 2
    while hi / lo - 1 > rtol:
        mid = math.sqrt(lo * hi)
        lo, hi = (lo, mid) if eps(mid) <= epsilon else (mid, hi)
    return hi


def combine_noise_multipliers(noise_multipliers: Sequence[float]) -> float:
    r"""The noise multiplier of Gaussian mechanisms released together on the same record.

    Releasing :math:`f_i(x) + \mathcal{N}(0, \sigma_i^2 \Delta_i^2 I)` for each ``i`` (even
    adaptively) is dominated by one Gaussian mechanism with
    :math:`\sigma = (\sum_i \sigma_i^{-2})^{-1/2}` (composition of Gaussian DP, Dong, Roth and
    Su 2022).

    >>> round(combine_noise_multipliers([1.0, 1.0]), 6)
    0.707107
    """
    if not noise_multipliers or any(s < 0 for s in noise_multipliers):
        raise ConfigError(f"noise multipliers: need >= 0 values, got {list(noise_multipliers)}")
    if any(s == 0 for s in noise_multipliers):
        return 0.0
    return 1.0 / math.sqrt(sum(s**-2 for s in noise_multipliers))
