"""3GPP TR 38.901 large-scale propagation: path loss, LOS probability and shadow fading.

Implements Table 7.4.1-1 (path loss) and Table 7.4.2-1 (LOS probability) of 3GPP TR 38.901
for the two outdoor cellular scenarios used by edgelam:

* ``"uma"`` -- Urban Macro (BS height 25 m in the standard),
* ``"umi"`` -- Urban Micro, Street Canyon (BS height 10 m in the standard).

Conventions (as in the table): distances and heights in metres, the carrier frequency
:math:`f_c` enters the path-loss formulas in **GHz**, and the breakpoint formula in **Hz**.
Every function is vectorised over :class:`torch.Tensor` inputs (computed in ``float64``) and
also accepts Python floats.

Breakpoint distance (note 1 of Table 7.4.1-1):

.. math:: d'_{BP} = 4\\, h'_{BS}\\, h'_{UT}\\, f_c / c, \\qquad h' = h - h_E

Simplification: we always use the effective environment height :math:`h_E = 1` m. This is the
standard's value for UMi, and for UMa it is exact whenever :math:`h_{UT} \\le 13` m (then
:math:`C(d_{2D}, h_{UT}) = 0` and :math:`h_E = 1` m with probability 1). For taller UMa
terminals the standard would draw :math:`h_E` at random; we do not.

Validity ranges of the formulas (not enforced here; :class:`edgelam.network.NetworkConfig`
checks them): :math:`10\\,\\mathrm{m} \\le d_{2D} \\le 5\\,\\mathrm{km}`,
:math:`1.5 \\le h_{UT} \\le 22.5` m, :math:`0.5 \\le f_c \\le 100` GHz for UMa/UMi.

>>> round(float(breakpoint_distance(25.0, 1.5, 2.4e9)), 6)  # 4 * 24 * 0.5 * 2.4e9 / 3e8
384.0
>>> round(float(pathloss_los("uma", 100.0, 25.0, 1.5, 2.4e9)), 2)
79.86
"""

from __future__ import annotations

from typing import Literal

import torch

__all__ = [
    "SPEED_OF_LIGHT",
    "ENVIRONMENT_HEIGHT_M",
    "SHADOW_FADING_STD_DB",
    "Scenario",
    "distance_3d",
    "breakpoint_distance",
    "pathloss_los",
    "pathloss_nlos",
    "pathloss_db",
    "los_probability",
    "shadow_fading_std_db",
]

SPEED_OF_LIGHT = 3.0e8
"""Speed of light used by TR 38.901, :math:`c = 3.0 \\times 10^8` m/s."""

ENVIRONMENT_HEIGHT_M = 1.0
"""Effective environment height :math:`h_E` (m) used for the breakpoint distance."""

Scenario = Literal["uma", "umi"]

SHADOW_FADING_STD_DB: dict[tuple[str, bool], float] = {
    ("uma", True): 4.0,
    ("uma", False): 6.0,
    ("umi", True): 4.0,
    ("umi", False): 7.82,
}
"""Log-normal shadow-fading standard deviation :math:`\\sigma_{SF}` (dB), keyed by
``(scenario, los)``, from Table 7.4.1-1."""

TensorLike = torch.Tensor | float


def _t(x: TensorLike) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float64)


def _check_scenario(scenario: str) -> None:
    if scenario not in ("uma", "umi"):
        raise ValueError(f"scenario: {scenario!r} is not one of ['uma', 'umi']")


def distance_3d(d2d: TensorLike, h_bs: TensorLike, h_ut: TensorLike) -> torch.Tensor:
    """3D BS-UT distance :math:`d_{3D} = \\sqrt{d_{2D}^2 + (h_{BS} - h_{UT})^2}`.

    Args:
        d2d: Ground (2D) distance in metres.
        h_bs: BS antenna height in metres.
        h_ut: UT antenna height in metres.

    Returns:
        The 3D distance in metres, ``float64``.

    Shapes:
        Inputs broadcast together; the output has the broadcast shape.

    >>> float(distance_3d(40.0, 31.5, 1.5))
    50.0
    """
    d2d, h_bs, h_ut = _t(d2d), _t(h_bs), _t(h_ut)
    return torch.sqrt(d2d**2 + (h_bs - h_ut) ** 2)


def breakpoint_distance(
    h_bs: TensorLike,
    h_ut: TensorLike,
    carrier_frequency: TensorLike,
    h_e: float = ENVIRONMENT_HEIGHT_M,
) -> torch.Tensor:
    """Breakpoint distance :math:`d'_{BP} = 4 (h_{BS}-h_E)(h_{UT}-h_E) f_c / c` (note 1).

    Args:
        h_bs: BS antenna height in metres.
        h_ut: UT antenna height in metres.
        carrier_frequency: Carrier frequency :math:`f_c` in **Hz**.
        h_e: Effective environment height :math:`h_E` in metres (1 m, see module docstring).

    Returns:
        :math:`d'_{BP}` in metres, ``float64``.

    Raises:
        ValueError: an effective height :math:`h - h_E` is not positive.

    Shapes:
        Inputs broadcast together; the output has the broadcast shape.

    >>> float(breakpoint_distance(10.0, 1.5, 3.0e9))  # 4 * 9 * 0.5 * 10
    180.0
    """
    h_bs_eff, h_ut_eff = _t(h_bs) - h_e, _t(h_ut) - h_e
    if bool((h_bs_eff <= 0).any()) or bool((h_ut_eff <= 0).any()):
        raise ValueError(f"antenna heights must exceed the environment height h_E = {h_e} m")
    return 4.0 * h_bs_eff * h_ut_eff * _t(carrier_frequency) / SPEED_OF_LIGHT


def pathloss_los(
    scenario: Scenario,
    d2d: TensorLike,
    h_bs: TensorLike,
    h_ut: TensorLike,
    carrier_frequency: TensorLike,
) -> torch.Tensor:
    """LOS path loss (dB) of Table 7.4.1-1, two-slope around the breakpoint.

    With :math:`f_c` in GHz and :math:`d_{3D}` in metres:

    * UMa: :math:`PL_1 = 28.0 + 22\\log_{10} d_{3D} + 20\\log_{10} f_c` for
      :math:`d_{2D} \\le d'_{BP}`, else
      :math:`PL_2 = 28.0 + 40\\log_{10} d_{3D} + 20\\log_{10} f_c
      - 9\\log_{10}(d'^2_{BP} + (h_{BS}-h_{UT})^2)`.
    * UMi-Street Canyon: :math:`PL_1 = 32.4 + 21\\log_{10} d_{3D} + 20\\log_{10} f_c`, else
      :math:`PL_2 = 32.4 + 40\\log_{10} d_{3D} + 20\\log_{10} f_c
      - 9.5\\log_{10}(d'^2_{BP} + (h_{BS}-h_{UT})^2)`.

    Args:
        scenario: ``"uma"`` or ``"umi"``.
        d2d: Ground distance in metres (valid 10 m .. 5 km).
        h_bs: BS height in metres.
        h_ut: UT height in metres.
        carrier_frequency: Carrier frequency in Hz.

    Returns:
        Path loss in dB, ``float64``.

    Raises:
        ValueError: unknown scenario or non-positive effective heights.

    Shapes:
        Inputs broadcast together; the output has the broadcast shape.
    """
    _check_scenario(scenario)
    d2d, h_bs, h_ut = _t(d2d), _t(h_bs), _t(h_ut)
    fc_ghz = _t(carrier_frequency) / 1e9
    d3d = distance_3d(d2d, h_bs, h_ut)
    d_bp = breakpoint_distance(h_bs, h_ut, carrier_frequency)
    if scenario == "uma":
        a, b, c = 28.0, 22.0, 9.0
    else:
        a, b, c = 32.4, 21.0, 9.5
    pl1 = a + b * torch.log10(d3d) + 20.0 * torch.log10(fc_ghz)
    pl2 = (
        a
        + 40.0 * torch.log10(d3d)
        + 20.0 * torch.log10(fc_ghz)
        - c * torch.log10(d_bp**2 + (h_bs - h_ut) ** 2)
    )
    return torch.where(d2d <= d_bp, pl1, pl2)


def pathloss_nlos(
    scenario: Scenario,
    d2d: TensorLike,
    h_bs: TensorLike,
    h_ut: TensorLike,
    carrier_frequency: TensorLike,
) -> torch.Tensor:
    """NLOS path loss (dB) of Table 7.4.1-1: :math:`\\max(PL_{LOS}, PL'_{NLOS})`.

    With :math:`f_c` in GHz and :math:`d_{3D}` in metres:

    * UMa: :math:`PL'_{NLOS} = 13.54 + 39.08\\log_{10} d_{3D} + 20\\log_{10} f_c
      - 0.6 (h_{UT} - 1.5)`.
    * UMi-Street Canyon: :math:`PL'_{NLOS} = 35.3\\log_{10} d_{3D} + 22.4 + 21.3\\log_{10} f_c
      - 0.3 (h_{UT} - 1.5)`.

    Args:
        scenario: ``"uma"`` or ``"umi"``.
        d2d: Ground distance in metres (valid 10 m .. 5 km).
        h_bs: BS height in metres.
        h_ut: UT height in metres.
        carrier_frequency: Carrier frequency in Hz.

    Returns:
        Path loss in dB, ``float64``.

    Raises:
        ValueError: unknown scenario or non-positive effective heights.

    Shapes:
        Inputs broadcast together; the output has the broadcast shape.
    """
    pl_los = pathloss_los(scenario, d2d, h_bs, h_ut, carrier_frequency)
    d3d = distance_3d(d2d, h_bs, h_ut)
    fc_ghz = _t(carrier_frequency) / 1e9
    h_ut = _t(h_ut)
    if scenario == "uma":
        pl_nlos = 13.54 + 39.08 * torch.log10(d3d) + 20.0 * torch.log10(fc_ghz) - 0.6 * (h_ut - 1.5)
    else:
        pl_nlos = 35.3 * torch.log10(d3d) + 22.4 + 21.3 * torch.log10(fc_ghz) - 0.3 * (h_ut - 1.5)
    return torch.maximum(pl_los, pl_nlos)


def pathloss_db(
    scenario: Scenario,
    d2d: TensorLike,
    h_bs: TensorLike,
    h_ut: TensorLike,
    carrier_frequency: TensorLike,
    los: torch.Tensor | bool,
) -> torch.Tensor:
    """Path loss (dB) choosing the LOS or NLOS formula per link.

    Args:
        scenario: ``"uma"`` or ``"umi"``.
        d2d: Ground distance in metres.
        h_bs: BS height in metres.
        h_ut: UT height in metres.
        carrier_frequency: Carrier frequency in Hz.
        los: LOS state per link (``True`` = LOS).

    Returns:
        Path loss in dB, ``float64``, without shadow fading.

    Shapes:
        ``d2d`` and ``los`` broadcast together (e.g. both ``[K]``).
    """
    pl_los = pathloss_los(scenario, d2d, h_bs, h_ut, carrier_frequency)
    pl_nlos = pathloss_nlos(scenario, d2d, h_bs, h_ut, carrier_frequency)
    return torch.where(torch.as_tensor(los, dtype=torch.bool), pl_los, pl_nlos)


def los_probability(scenario: Scenario, d2d: TensorLike, h_ut: TensorLike = 1.5) -> torch.Tensor:
    """Outdoor LOS probability of Table 7.4.2-1.

    * UMi-Street Canyon: 1 for :math:`d_{2D} \\le 18` m, else
      :math:`18/d_{2D} + e^{-d_{2D}/36}(1 - 18/d_{2D})`.
    * UMa: 1 for :math:`d_{2D} \\le 18` m, else
      :math:`[18/d_{2D} + e^{-d_{2D}/63}(1 - 18/d_{2D})]
      [1 + C'(h_{UT}) \\tfrac{5}{4} (d_{2D}/100)^3 e^{-d_{2D}/150}]` with
      :math:`C'(h_{UT}) = 0` for :math:`h_{UT} \\le 13` m and
      :math:`((h_{UT}-13)/10)^{1.5}` for :math:`13 < h_{UT} \\le 23` m.

    Args:
        scenario: ``"uma"`` or ``"umi"``.
        d2d: Ground distance in metres.
        h_ut: UT height in metres (UMa only).

    Returns:
        Probability in [0, 1], ``float64``.

    Shapes:
        Inputs broadcast together; the output has the broadcast shape.

    >>> round(float(los_probability("umi", 36.0)), 4)  # 0.5 + e^-1 * 0.5
    0.6839
    """
    _check_scenario(scenario)
    d2d = _t(d2d)
    near = 18.0 / d2d.clamp_min(18.0)
    if scenario == "umi":
        p = near + torch.exp(-d2d / 36.0) * (1.0 - near)
    else:
        h_ut = _t(h_ut)
        c_prime = torch.where(h_ut <= 13.0, 0.0, ((h_ut - 13.0).clamp_min(0.0) / 10.0) ** 1.5)
        p = (near + torch.exp(-d2d / 63.0) * (1.0 - near)) * (
            1.0 + c_prime * 1.25 * (d2d / 100.0) ** 3 * torch.exp(-d2d / 150.0)
        )
    return torch.where(d2d <= 18.0, torch.ones_like(p), p).clamp(0.0, 1.0)


def shadow_fading_std_db(scenario: Scenario, los: torch.Tensor | bool) -> torch.Tensor:
    """Shadow-fading standard deviation :math:`\\sigma_{SF}` (dB) per link.

    UMa: 4 dB LOS, 6 dB NLOS; UMi-Street Canyon: 4 dB LOS, 7.82 dB NLOS.

    Args:
        scenario: ``"uma"`` or ``"umi"``.
        los: LOS state per link.

    Returns:
        :math:`\\sigma_{SF}` in dB, ``float64``, the shape of ``los``.

    >>> shadow_fading_std_db("umi", torch.tensor([True, False])).tolist()
    [4.0, 7.82]
    """
    _check_scenario(scenario)
    los = torch.as_tensor(los, dtype=torch.bool)
    sigma_los = SHADOW_FADING_STD_DB[(scenario, True)]
    sigma_nlos = SHADOW_FADING_STD_DB[(scenario, False)]
    return torch.where(los, _t(sigma_los), _t(sigma_nlos))
