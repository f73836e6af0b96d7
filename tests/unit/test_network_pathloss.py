"""3GPP TR 38.901 path loss, breakpoint, LOS probability and shadow fading vs hand computation."""

import math

import pytest
import torch

from edgelam.network import (
    breakpoint_distance,
    distance_3d,
    los_probability,
    pathloss_db,
    pathloss_los,
    pathloss_nlos,
    shadow_fading_std_db,
)

FC = 2.4e9  # Hz
LOG_FC = math.log10(2.4)  # f_c in GHz inside the formulas


def test_distance_3d_pythagoras():
    # 3-4-5 triangle scaled by 10: d2D = 40, dh = 30.
    assert float(distance_3d(40.0, 31.5, 1.5)) == pytest.approx(50.0)


def test_breakpoint_distance_by_hand():
    # d'_BP = 4 h'_BS h'_UT f_c / c with h' = h - 1 m.
    uma = 4 * (25 - 1) * (1.5 - 1) * 2.4e9 / 3e8  # = 384 m
    umi = 4 * (10 - 1) * (1.5 - 1) * 2.4e9 / 3e8  # = 144 m
    assert uma == pytest.approx(384.0)
    assert float(breakpoint_distance(25.0, 1.5, FC)) == pytest.approx(uma)
    assert float(breakpoint_distance(10.0, 1.5, FC)) == pytest.approx(umi)
    with pytest.raises(ValueError):
        breakpoint_distance(25.0, 1.0, FC)  # h'_UT = 0


def test_uma_los_at_100m_3d_by_hand():
    # d3D = 100 m (d2D = sqrt(100^2 - 23.5^2) ~ 97.2 m < d'_BP = 384 m) -> PL1.
    d2d = math.sqrt(100.0**2 - (25.0 - 1.5) ** 2)
    expected = 28.0 + 22.0 * math.log10(100.0) + 20.0 * LOG_FC  # = 79.604 dB
    assert expected == pytest.approx(79.6042, abs=1e-4)
    assert float(pathloss_los("uma", d2d, 25.0, 1.5, FC)) == pytest.approx(expected, abs=1e-9)


def test_uma_los_beyond_breakpoint_by_hand():
    d2d = 500.0  # > 384 m -> PL2
    d3d = math.sqrt(500.0**2 + 23.5**2)
    expected = 28.0 + 40.0 * math.log10(d3d) + 20.0 * LOG_FC - 9.0 * math.log10(384.0**2 + 23.5**2)
    assert float(pathloss_los("uma", d2d, 25.0, 1.5, FC)) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize(("scenario", "h_bs"), [("uma", 25.0), ("umi", 10.0)])
def test_los_two_slopes_nearly_continuous_at_breakpoint(scenario, h_bs):
    # PL1 and PL2 of the table meet (to ~0.1 dB) at d'_BP, a check on all their coefficients.
    d_bp = float(breakpoint_distance(h_bs, 1.5, FC))
    below = float(pathloss_los(scenario, d_bp, h_bs, 1.5, FC))
    above = float(pathloss_los(scenario, d_bp * (1 + 1e-9), h_bs, 1.5, FC))
    assert abs(below - above) < 0.1


def test_umi_los_and_nlos_by_hand():
    fc, d2d = 3.5e9, 100.0  # d'_BP = 4 * 9 * 0.5 * 3.5e9 / 3e8 = 210 m -> PL1
    d3d = math.sqrt(100.0**2 + 8.5**2)
    los = 32.4 + 21.0 * math.log10(d3d) + 20.0 * math.log10(3.5)
    nlos_prime = 35.3 * math.log10(d3d) + 22.4 + 21.3 * math.log10(3.5) - 0.3 * (1.5 - 1.5)
    assert float(pathloss_los("umi", d2d, 10.0, 1.5, fc)) == pytest.approx(los, abs=1e-9)
    assert float(pathloss_nlos("umi", d2d, 10.0, 1.5, fc)) == pytest.approx(
        max(los, nlos_prime), abs=1e-9
    )
    assert nlos_prime > los


def test_uma_nlos_by_hand():
    d2d = 200.0
    d3d = math.sqrt(200.0**2 + 23.5**2)
    nlos_prime = 13.54 + 39.08 * math.log10(d3d) + 20.0 * LOG_FC - 0.6 * (1.5 - 1.5)
    assert float(pathloss_nlos("uma", d2d, 25.0, 1.5, FC)) == pytest.approx(nlos_prime, abs=1e-9)


def test_nlos_is_max_of_los_and_nlos_prime():
    # A tall UMa terminal close to the BS: PL'_NLOS (with -0.6 (h_UT - 1.5) = -12.6 dB) falls
    # below PL_LOS, so the max picks the LOS value.
    d2d, h_ut = 10.0, 22.5
    d3d = math.sqrt(10.0**2 + 2.5**2)
    los = 28.0 + 22.0 * math.log10(d3d) + 20.0 * LOG_FC  # d'_BP = 16.5 km -> PL1
    nlos_prime = 13.54 + 39.08 * math.log10(d3d) + 20.0 * LOG_FC - 0.6 * (h_ut - 1.5)
    assert nlos_prime < los
    assert float(pathloss_nlos("uma", d2d, 25.0, h_ut, FC)) == pytest.approx(los, abs=1e-9)
    d = torch.linspace(10.0, 5000.0, 200)
    for scenario, h_bs in (("uma", 25.0), ("umi", 10.0)):
        assert torch.all(
            pathloss_nlos(scenario, d, h_bs, 1.5, FC) >= pathloss_los(scenario, d, h_bs, 1.5, FC)
        )


def test_pathloss_db_selects_per_link_and_is_vectorised():
    d = torch.tensor([50.0, 150.0, 400.0])
    los = torch.tensor([True, False, True])
    pl = pathloss_db("uma", d, 25.0, 1.5, FC, los)
    assert pl.shape == (3,) and pl.dtype == torch.float64
    assert torch.allclose(pl[los], pathloss_los("uma", d, 25.0, 1.5, FC)[los])
    assert torch.allclose(pl[~los], pathloss_nlos("uma", d, 25.0, 1.5, FC)[~los])
    assert torch.all(pathloss_los("uma", d, 25.0, 1.5, FC).diff() > 0)  # grows with distance


def test_los_probability_by_hand():
    assert float(los_probability("umi", 10.0)) == 1.0
    assert float(los_probability("uma", 18.0)) == 1.0
    assert float(los_probability("umi", 36.0)) == pytest.approx(
        18 / 36 + math.exp(-1) * (1 - 18 / 36)
    )
    assert float(los_probability("uma", 63.0)) == pytest.approx(
        18 / 63 + math.exp(-1) * (1 - 18 / 63)
    )
    # UMa, h_UT = 18 m: C'(h_UT) = ((18 - 13) / 10) ** 1.5
    d = 100.0
    base = 18 / d + math.exp(-d / 63) * (1 - 18 / d)
    c_prime = 0.5**1.5
    expected = base * (1 + c_prime * 5 / 4 * (d / 100) ** 3 * math.exp(-d / 150))
    assert float(los_probability("uma", d, 18.0)) == pytest.approx(expected)
    p = los_probability("umi", torch.linspace(18.0, 1000.0, 100))
    assert torch.all(p.diff() < 0) and torch.all((p > 0) & (p <= 1))


def test_shadow_fading_std():
    los = torch.tensor([True, False])
    assert shadow_fading_std_db("uma", los).tolist() == [4.0, 6.0]
    assert shadow_fading_std_db("umi", los).tolist() == [4.0, 7.82]


def test_unknown_scenario():
    with pytest.raises(ValueError, match="scenario"):
        pathloss_los("rma", 100.0, 25.0, 1.5, FC)
