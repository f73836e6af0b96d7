"""Prediction metrics: NMSE by hand, accumulator vs. numpy, speed groups, spectral efficiency."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, special

from edgelam.airinterface.prediction import (
    DEFAULT_SPEED_EDGES_KMH,
    NMSEAccumulator,
    items_to_csi,
    mean_nmse,
    mean_nmse_db,
    nmse,
    spectral_efficiency,
    speed_group_labels,
    speed_groups,
)


def crandn(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    re = torch.randn(*shape, generator=g, dtype=torch.float64)
    im = torch.randn(*shape, generator=g, dtype=torch.float64)
    return torch.complex(re, im) / math.sqrt(2)  # CN(0, 1)


def test_nmse_by_hand_real_and_complex():
    target = torch.tensor([[[3.0, 4.0], [0.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]])  # [2, 2, 2]
    pred = torch.tensor([[[0.0, 4.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]]])
    # item 0: |3|^2 / 25; item 1: (1 + 1) / 2
    torch.testing.assert_close(nmse(pred, target), torch.tensor([0.36, 1.0], dtype=torch.float64))
    ct = torch.view_as_complex(target.contiguous())
    cp = torch.view_as_complex(pred.contiguous())
    torch.testing.assert_close(nmse(cp, ct), torch.tensor([0.36, 1.0], dtype=torch.float64))


def test_nmse_perfect_is_zero_and_zeros_is_one():
    x = torch.randn(7, 4, 96)
    assert torch.equal(nmse(x, x), torch.zeros(7, dtype=torch.float64))
    torch.testing.assert_close(nmse(torch.zeros_like(x), x), torch.ones(7, dtype=torch.float64))
    with pytest.raises(ValueError, match="shapes differ"):
        nmse(x, x[:, :2])


def test_mean_db_is_db_of_linear_mean():
    values = torch.tensor([0.01, 0.1, 1.0])
    assert mean_nmse(values) == pytest.approx(0.37)
    assert mean_nmse_db(values) == pytest.approx(10 * math.log10(0.37))
    assert mean_nmse_db(values) != pytest.approx(-10.0)  # mean of the dB values
    assert mean_nmse_db([0.0, 0.0]) == -math.inf


def test_speed_groups_bins_and_errors():
    speeds = np.array([10.0, 15.0, 19.999, 20.0, 55.0, 90.0, 99.9, 100.0])
    assert speed_groups(speeds).tolist() == [0, 0, 0, 1, 4, 8, 8, 8]
    assert len(speed_group_labels()) == len(DEFAULT_SPEED_EDGES_KMH) - 1
    assert speed_group_labels()[0] == "10-20" and speed_group_labels()[-1] == "90-100"
    assert speed_groups([3.0, 30.0], edges=[0, 5, 60]).tolist() == [0, 1]
    with pytest.raises(ValueError, match="outside the group edges"):
        speed_groups([5.0, 50.0])
    with pytest.raises(ValueError, match="strictly increasing"):
        speed_groups([50.0], edges=[10, 10, 20])


def test_accumulator_matches_numpy():
    rng = np.random.default_rng(0)
    names = speed_group_labels()
    acc = NMSEAccumulator(group_names=names)
    all_values, all_groups = [], []
    for _ in range(4):
        values = rng.exponential(0.1, size=37)
        groups = rng.integers(0, 9, size=37)
        acc.add(torch.from_numpy(values), groups)
        all_values.append(values)
        all_groups.append(groups)
    v, g = np.concatenate(all_values), np.concatenate(all_groups)
    assert acc.count == v.size
    assert acc.mean() == pytest.approx(v.mean(), rel=1e-12)
    summary = acc.summary()
    assert summary["nmse_db"] == pytest.approx(10 * np.log10(v.mean()), rel=1e-12)
    assert list(summary["groups"]) == [names[k] for k in np.unique(g)]
    for k in np.unique(g):
        entry = summary["groups"][names[k]]
        assert entry["count"] == int((g == k).sum())
        assert entry["nmse"] == pytest.approx(v[g == k].mean(), rel=1e-12)
        assert entry["nmse_db"] == pytest.approx(10 * np.log10(v[g == k].mean()), rel=1e-12)
        assert acc.mean(int(k)) == pytest.approx(v[g == k].mean(), rel=1e-12)


def test_accumulator_update_scalar_label_and_errors():
    acc = NMSEAccumulator()
    target = torch.randn(6, 4, 8)
    values = acc.update(torch.zeros_like(target), target, groups="uma")
    torch.testing.assert_close(values, torch.ones(6, dtype=torch.float64))
    acc.update(target, target)  # overall only
    assert acc.count == 12 and acc.mean() == pytest.approx(0.5)
    assert acc.summary()["groups"] == {"uma": {"nmse": 1.0, "nmse_db": 0.0, "count": 6}}
    with pytest.raises(ValueError, match="one label per item"):
        acc.add([0.1, 0.2], groups=[0, 1, 2])
    with pytest.raises(ValueError, match="no items"):
        NMSEAccumulator().mean()


def test_items_to_csi_follows_dataset_order():
    users, antennas, slots, subcarriers = 3, 4, 2, 5
    h = crandn(users, antennas, slots, subcarriers)
    # item i = antenna i % A of user i // A, real interleaved layout
    items = torch.view_as_real(h.reshape(users * antennas, slots, subcarriers)).flatten(-2)
    assert torch.equal(items_to_csi(items, num_antennas=antennas), h)
    with pytest.raises(ValueError, match="dividing the batch"):
        items_to_csi(items, num_antennas=5)


def test_se_perfect_prediction_and_scaled_prediction_give_ratio_one():
    h = crandn(8, 16, 4, 12, seed=1)
    se = spectral_efficiency(h, h, snr_db=10.0)
    assert se.ratio == 1.0 and se.predicted == se.perfect > 0
    scale = crandn(8, 1, 1, 1, seed=2) * 5.0  # one complex factor per user
    for norm in ("dataset", "user", "element"):
        se = spectral_efficiency(scale * h, h, snr_db=10.0, normalization=norm)
        assert se.ratio == pytest.approx(1.0, rel=1e-12)
    assert spectral_efficiency(torch.zeros_like(h), h).predicted == 0.0


def test_se_random_prediction_is_much_worse():
    h = crandn(32, 32, 4, 12, seed=3)
    se = spectral_efficiency(crandn(32, 32, 4, 12, seed=4), h, snr_db=10.0)
    assert se.ratio < 0.6
    noisy = spectral_efficiency(h + 0.3 * crandn(32, 32, 4, 12, seed=5), h, snr_db=10.0)
    assert se.ratio < noisy.ratio < 1.0  # better prediction, higher SE


def test_se_rayleigh_matches_closed_form():
    antennas, snr_db = 4, 10.0
    h = crandn(4000, antennas, 1, 8, seed=6)  # i.i.d. Rayleigh, 32,000 channel vectors
    se = spectral_efficiency(h, h, snr_db=snr_db)
    rho = 10 ** (snr_db / 10) / h.abs().square().mean().item()
    # ||h||^2 ~ Gamma(A, 1): E[log2(1 + rho X)] by quadrature of its density.
    density = lambda x: x ** (antennas - 1) * math.exp(-x) / special.gamma(antennas)  # noqa: E731
    expected, _ = integrate.quad(lambda x: math.log2(1 + rho * x) * density(x), 0, math.inf)
    assert se.perfect == pytest.approx(expected, abs=0.02)  # Monte Carlo sd ~0.004
    assert se.perfect_per_user.shape == (4000,)


def test_se_normalizations():
    h = crandn(6, 8, 2, 4, seed=7)
    boosted = h.clone()
    boosted[0] *= 100.0  # one strong user
    snr = 10.0
    element = spectral_efficiency(h, h, snr_db=snr, normalization="element")
    assert element.perfect == pytest.approx(math.log2(1 + 8 * 10 ** (snr / 10)), rel=1e-12)
    user_a = spectral_efficiency(h, h, snr_db=snr, normalization="user").perfect_per_user
    user_b = spectral_efficiency(boosted, boosted, snr_db=snr, normalization="user")
    torch.testing.assert_close(user_a, user_b.perfect_per_user)  # each user at its own SNR
    data_b = spectral_efficiency(boosted, boosted, snr_db=snr, normalization="dataset")
    assert data_b.perfect_per_user[0] > data_b.perfect_per_user[1:].max() + 5  # the rest fade
    with pytest.raises(ValueError, match="normalization"):
        spectral_efficiency(h, h, normalization="antenna")
    with pytest.raises(ValueError, match="complex"):
        spectral_efficiency(h.real, h.real)
