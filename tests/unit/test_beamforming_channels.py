"""Beamforming channel sets: 38.901 shape and gain, seeding, and the .npy loader's errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgelam.airinterface.beamforming.channels import (
    ChannelFileError,
    antenna_layout,
    channel_set,
    load_channels_npy,
    save_channels_npy,
    tr38901_channels,
)
from edgelam.config import ConfigError


@pytest.mark.parametrize("model", ["uma", "cdl-c"])
def test_38901_set_has_the_shape_and_unit_mean_gain_per_user(model):
    H = channel_set(model, 96, 3, 8, seed=0)
    assert H.shape == (96, 3, 8) and H.dtype == torch.complex64
    assert bool(torch.isfinite(torch.view_as_real(H)).all())
    gain = H.abs().square().mean(-1)  # ||h_k||^2 / M per instance and user
    torch.testing.assert_close(float(gain.mean()), 1.0, rtol=0, atol=0.03)  # the set's mean
    # every user's mean gain is 1 to within 4 standard errors (users are exchangeable)
    assert bool(((gain.mean(0) - 1).abs() < 4 * gain.std(0) / 96**0.5).all()), gain.mean(0)
    # one constant for the whole set: fading (and pattern gain) still vary across instances
    norm2 = H.abs().square().sum(-1)
    assert float(norm2.std() / norm2.mean()) > 0.3
    torch.testing.assert_close(H, channel_set(model, 96, 3, 8, seed=0))
    assert not torch.equal(H, channel_set(model, 96, 3, 8, seed=1))


def test_per_user_normalization_gives_each_user_unit_gain_over_the_band():
    H = tr38901_channels("umi", 32, 2, 4, seed=2, normalization="user", subcarriers=1)
    torch.testing.assert_close(H.abs().square().mean(-1), torch.ones(32, 2))


def test_users_are_independent_samples_and_pathloss_can_be_kept():
    H = channel_set("uma", 64, 2, 4, seed=3)
    corr = (H[:, 0] * H[:, 1].conj()).mean(0).abs() / H.abs().square().mean((0, 1))
    assert float(corr.max()) < 0.3  # different drops, not copies of one user
    raw = tr38901_channels("uma", 16, 2, 4, seed=3, keep_pathloss=True)
    gain_db = 10 * torch.log10(raw.abs().square().mean(-1))
    assert float(gain_db.max()) < -80  # 38.901 UMa path loss at ~200 m is above 100 dB


def test_rayleigh_and_layout():
    H = channel_set("rayleigh", 2000, 2, 4, seed=0, dtype=torch.complex128)
    assert H.dtype == torch.complex128
    torch.testing.assert_close(H.abs().square().mean().item(), 1.0, rtol=0.03, atol=0)
    assert antenna_layout(16) == (2, 4, "dual") and antenna_layout(1) == (1, 1, "single")
    with pytest.raises(ConfigError, match=r"'tdl-a' is not one of \['rayleigh', 'cdl-a'"):
        channel_set("tdl-a", 1, 1, 1)


def test_npy_round_trip(tmp_path):
    H = channel_set("rayleigh", 3, 2, 4, seed=1)
    path = save_channels_npy(tmp_path / "h.npy", H)
    torch.testing.assert_close(load_channels_npy(path), H)
    assert load_channels_npy(path, dtype=torch.complex128).dtype == torch.complex128


@pytest.mark.parametrize(
    ("array", "problem"),
    [
        (np.ones((2, 3, 4), dtype=np.float32), "dtype float32; need complex64 or complex128"),
        (np.ones((3, 4), dtype=np.complex64), r"shape \(3, 4\) \(2 dimensions\); need 3"),
        (np.ones((0, 3, 4), dtype=np.complex64), "empty axis"),
        (np.full((2, 3, 4), np.nan + 0j, dtype=np.complex128), "24 non-finite"),
    ],
)
def test_npy_loader_rejects_bad_files_naming_the_problem(tmp_path, array, problem):
    path = tmp_path / "bad.npy"
    np.save(path, array)
    with pytest.raises(ChannelFileError, match=problem) as err:
        load_channels_npy(path)
    assert str(path) in str(err.value)


def test_npy_loader_rejects_missing_and_non_npy_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="channel file not found"):
        load_channels_npy(tmp_path / "none.npy")
    (tmp_path / "text.npy").write_text("not numpy")
    with pytest.raises(ChannelFileError, match="not a readable .npy array"):
        load_channels_npy(tmp_path / "text.npy")
    with pytest.raises(ChannelFileError, match="need 3"):
        save_channels_npy(tmp_path / "x.npy", torch.ones(2, 2, dtype=torch.complex64))
