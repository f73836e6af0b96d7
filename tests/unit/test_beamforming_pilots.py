"""Uplink pilot training: orthogonality, LS/LMMSE error against theory, seeding."""

from __future__ import annotations

import pytest
import torch

from edgelam.airinterface.beamforming.pilots import (
    channel_covariance,
    estimate_channels,
    estimation_nmse,
    lmmse_estimate,
    ls_estimate,
    pilot_matrix,
    pilot_noise_power,
    transmit_pilots,
)
from edgelam.airinterface.beamforming.problem import rayleigh_channels


def rayleigh(batch, users, antennas, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return rayleigh_channels(batch, users, antennas, generator=gen, dtype=torch.complex128)


@pytest.mark.parametrize(("users", "length"), [(1, 1), (3, 3), (3, 8)])
def test_dft_pilots_are_orthogonal_with_symbol_power_p(users, length):
    X = pilot_matrix(users, length, power=0.3, dtype=torch.complex128)
    torch.testing.assert_close(X @ X.mH, 0.3 * length * torch.eye(users, dtype=X.dtype))
    torch.testing.assert_close(
        X.abs().square(), torch.full((users, length), 0.3, dtype=torch.float64)
    )
    with pytest.raises(ValueError, match="L >= K"):
        pilot_matrix(4, 3)


def test_ls_and_lmmse_errors_match_theory_and_fall_with_pilot_snr():
    H = rayleigh(4000, 4, 8)
    gen = torch.Generator().manual_seed(1)
    previous = (float("inf"), float("inf"))
    for snr_db in (-10.0, 0.0, 10.0, 20.0):
        for length in (4, 8):
            X = pilot_matrix(4, length, power=2.0, dtype=H.dtype)
            noise = pilot_noise_power(snr_db, power=2.0)
            Y = transmit_pilots(H, X, noise, generator=gen)
            assert Y.shape == (4000, 8, length)
            ls = estimation_nmse(ls_estimate(Y, X), H)
            lmmse = estimation_nmse(lmmse_estimate(Y, X, noise), H)
            snr = 10 ** (snr_db / 10)
            assert ls == pytest.approx(1 / (length * snr), rel=0.03)  # sigma^2 / (p L)
            assert lmmse == pytest.approx(1 / (1 + length * snr), rel=0.03)
            assert lmmse < ls
        assert ls < previous[0] and lmmse < previous[1]
        previous = (ls, lmmse)


def test_lmmse_with_the_true_covariance_beats_the_iid_prior_on_correlated_channels():
    M = 8
    idx = torch.arange(M, dtype=torch.float64)
    R = (0.9 ** (idx[:, None] - idx[None, :]).abs()).to(torch.complex128)  # exponential model
    L = torch.linalg.cholesky(R)
    H = rayleigh(3000, 2, M, seed=2) @ L.mT  # rows h_k^T = L g: covariance R
    R_hat = channel_covariance(H, per_user=False)
    torch.testing.assert_close(R_hat, R, atol=0.08, rtol=0)
    gen = torch.Generator().manual_seed(3)
    errors = {}
    for name, cov in (("ls", None), ("iid", None), ("R", R_hat)):
        torch.manual_seed(0)
        est = estimate_channels(
            H, 0.0, method="ls" if name == "ls" else "lmmse", covariance=cov,
            generator=gen.manual_seed(3),
        )  # fmt: skip
        errors[name] = estimation_nmse(est, H)
    # theory with the true R: tr(R - R (R + s I)^-1 R) / tr(R), s = sigma^2 / (p L) = 1 / 2
    s = 0.5
    mmse = torch.trace(R - R @ torch.linalg.inv(R + s * torch.eye(M, dtype=R.dtype)) @ R).real
    assert errors["R"] == pytest.approx(float(mmse) / M, rel=0.05)
    assert errors["R"] < errors["iid"] < errors["ls"]


def test_estimates_are_seeded_and_noiseless_limit_is_exact():
    H = rayleigh(5, 3, 4)
    a = estimate_channels(H, 5.0, generator=torch.Generator().manual_seed(7))
    b = estimate_channels(H, 5.0, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(a, b)
    assert estimation_nmse(estimate_channels(H, 300.0, method="lmmse"), H) < 1e-20
    with pytest.raises(ValueError, match="'mmse' is not one of"):
        estimate_channels(H, 0.0, method="mmse")
