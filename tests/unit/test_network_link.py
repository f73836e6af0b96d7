"""Link budget formulas and block-fading statistics."""

import math

import pytest
import torch
from scipy import stats

from edgelam.network import (
    achievable_rate,
    db_to_linear,
    dbm_to_watt,
    linear_to_db,
    rayleigh_power_gain,
    rician_power_gain,
    snr_db,
    thermal_noise_dbm,
    transfer_cost,
    transmission_energy,
    transmission_latency,
    watt_to_dbm,
)

N = 100_000


def test_thermal_noise_by_hand():
    assert thermal_noise_dbm(1e6, 9.0) == pytest.approx(-174 + 60 + 9)  # -105 dBm
    assert thermal_noise_dbm(20e6, 5.0) == pytest.approx(-174 + 10 * math.log10(2e7) + 5)
    t = thermal_noise_dbm(torch.tensor([1e6, 1e7]), 0.0)
    assert torch.allclose(t, torch.tensor([-114.0, -104.0]))


def test_db_conversions():
    assert dbm_to_watt(23.0) == pytest.approx(0.19952623, rel=1e-6)
    assert dbm_to_watt(43.0) == pytest.approx(19.952623, rel=1e-6)
    assert watt_to_dbm(0.001) == pytest.approx(0.0)
    assert db_to_linear(-3.0) == pytest.approx(0.501187, rel=1e-5)
    assert linear_to_db(db_to_linear(7.3)) == pytest.approx(7.3)
    x = torch.tensor([1.0, 10.0, 1000.0])
    assert torch.allclose(linear_to_db(x), torch.tensor([0.0, 10.0, 30.0]))


def test_snr_matches_linear_link_budget():
    p_tx_w, gain, pl_db, h2 = 0.2, 2.0, 110.0, 0.7
    noise_w = dbm_to_watt(-174 + 60 + 9)
    linear = p_tx_w * gain * 10 ** (-pl_db / 10) * h2 / noise_w
    got = snr_db(watt_to_dbm(p_tx_w), pl_db, -105.0, h2, 10 * math.log10(gain))
    assert got == pytest.approx(10 * math.log10(linear))


def test_shannon_rate_by_hand():
    # SNR = 15 -> log2(16) = 4 bit/s/Hz.
    assert achievable_rate(1e6, 10 * math.log10(15.0)) == pytest.approx(4e6)
    # 3 dB gap halves the SNR: log2(1 + 7.5).
    assert achievable_rate(1e6, 10 * math.log10(15.0), gap_db=10 * math.log10(2.0)) == (
        pytest.approx(1e6 * math.log2(8.5))
    )
    r = achievable_rate(2e6, torch.tensor([0.0, 10 * math.log10(3.0)], dtype=torch.float64))
    assert torch.allclose(r, torch.tensor([2e6, 4e6], dtype=torch.float64))


def test_latency_and_energy_by_hand():
    assert transmission_latency(1e6, 2e6) == pytest.approx(0.5)
    assert transmission_energy(0.2, 0.5) == pytest.approx(0.1)
    cost = transfer_cost(torch.tensor([8e6, 2e6]), torch.tensor([1e6, 4e6]), 0.2)
    assert cost.seconds.tolist() == pytest.approx([8.0, 0.5])
    assert cost.joules.tolist() == pytest.approx([1.6, 0.1])


def test_rayleigh_is_unit_mean_exponential():
    g = rayleigh_power_gain((N,), torch.Generator().manual_seed(0))
    assert g.shape == (N,) and g.dtype == torch.float64 and bool((g >= 0).all())
    assert float(g.mean()) == pytest.approx(1.0, abs=0.015)  # sd of the mean ~ 0.003
    assert float((g > 1.0).double().mean()) == pytest.approx(math.exp(-1), abs=0.006)
    assert stats.kstest(g.numpy(), "expon").pvalue > 1e-3


def test_fading_is_driven_by_the_generator_only():
    a = rayleigh_power_gain((5,), torch.Generator().manual_seed(3))
    b = rayleigh_power_gain((5,), torch.Generator().manual_seed(3))
    c = rayleigh_power_gain((5,), torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("k_db", [6.0, 9.0])
def test_rician_unit_mean_and_k_factor(k_db):
    g = rician_power_gain((N,), k_db, torch.Generator().manual_seed(1))
    assert float(g.mean()) == pytest.approx(1.0, abs=0.01)
    # Moment estimator: gamma = Var/Mean^2 = (1 + 2K)/(K + 1)^2  =>  K = s / (1 - s), s = sqrt(1-gamma)
    gamma = float(g.var() / g.mean() ** 2)
    s = math.sqrt(1 - gamma)
    assert s / (1 - s) == pytest.approx(10 ** (k_db / 10), rel=0.08)


def test_rician_variance_below_rayleigh():
    gen = torch.Generator().manual_seed(2)
    assert float(rician_power_gain((N,), 10.0, gen).var()) < 0.3  # (1+2K)/(K+1)^2 = 0.174
    assert float(rayleigh_power_gain((N,), gen).var()) == pytest.approx(1.0, abs=0.05)
