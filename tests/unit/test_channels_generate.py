"""Generation: shapes, reproducibility, horizontal users, FDD band layout, power."""

import dataclasses

import numpy as np
import pytest

from edgelam.channels.config import CHANNEL_MODELS, ChannelConfig
from edgelam.channels.generate import ChannelGenerator
from edgelam.config import ConfigError


@pytest.mark.parametrize("model", CHANNEL_MODELS)
def test_every_model_generates_the_documented_shape(model, tiny_channel_kwargs):
    cfg = ChannelConfig(model=model, duplex="fdd", **tiny_channel_kwargs)
    b = ChannelGenerator(cfg).batch(0, 3)
    assert b.csi.shape == (3, 6, 6, 4) and b.csi.dtype == np.complex64
    assert b.csi_downlink.shape == b.csi.shape
    assert np.all(np.isfinite(b.csi)) and np.mean(np.abs(b.csi) ** 2) > 0
    lo, hi = cfg.speed_kmh
    assert np.all((b.speed_mps >= lo / 3.6 - 1e-4) & (b.speed_mps <= hi / 3.6 + 1e-4))
    if model in ("uma", "umi"):
        assert np.all((b.ut_distance_m > 140) & (b.ut_distance_m < 260))
    else:
        assert np.all(np.isnan(b.ut_distance_m))
    assert bool(b.los.all()) == (model.endswith(("-d", "-e")))


def test_same_seed_same_arrays_and_batches_are_independent(tiny_channel_kwargs):
    cfg = ChannelConfig(model="cdl-b", **tiny_channel_kwargs)
    gen = ChannelGenerator(cfg)
    first = gen.batch(2, 4)
    gen.batch(0, 4)  # whatever ran before must not matter
    again = ChannelGenerator(cfg).batch(2, 4)
    assert np.array_equal(first.csi, again.csi)
    assert np.array_equal(first.speed_mps, again.speed_mps)
    other = ChannelGenerator(dataclasses.replace(cfg, seed=1)).batch(2, 4)
    assert not np.allclose(first.csi, other.csi)


def test_uma_los_modes(tiny_channel_kwargs):
    kw = dict(tiny_channel_kwargs)
    assert ChannelGenerator(ChannelConfig(model="uma", los="los", **kw)).batch(0, 8).los.all()
    assert not ChannelGenerator(ChannelConfig(model="uma", los="nlos", **kw)).batch(0, 8).los.any()


def test_fdd_bands_are_the_adjacent_halves_of_one_channel(tiny_channel_kwargs):
    """FDD uplink + downlink = the same multipath seen on 2F contiguous subcarriers."""
    for model in ("cdl-c", "uma"):
        fdd = ChannelConfig(model=model, duplex="fdd", **tiny_channel_kwargs)
        wide = dataclasses.replace(fdd, duplex="tdd", num_subcarriers=2 * fdd.num_subcarriers)
        b, w = ChannelGenerator(fdd).batch(1, 4), ChannelGenerator(wide).batch(1, 4)
        joined = np.concatenate([b.csi, b.csi_downlink], axis=2)
        np.testing.assert_allclose(joined, w.csi, rtol=1e-5, atol=1e-6)
        assert not np.allclose(b.csi, b.csi_downlink, atol=1e-3)


def test_tdl_power_is_normalised():
    cfg = ChannelConfig(model="tdl-c", num_subcarriers=16, bs_rows=2, bs_cols=2, batch_size=256)
    csi = ChannelGenerator(cfg).batch(0, 256).csi
    assert abs(np.mean(np.abs(csi) ** 2) - 1.0) < 0.05


def test_fixed_speed_is_exact_and_horizontal(tiny_channel_kwargs):
    kw = {**tiny_channel_kwargs, "speed_kmh": (72.0, 72.0)}
    b = ChannelGenerator(ChannelConfig(model="cdl-a", **kw)).batch(0, 5)
    np.testing.assert_allclose(b.speed_mps, 20.0, rtol=1e-6)
    assert np.all((b.direction_rad >= 0) & (b.direction_rad < 2 * np.pi))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"speed_kmh": (50, 10)}, "speed_kmh"),
        ({"num_subcarriers": 0}, "num_subcarriers"),
        ({"model": "cdl-a", "los": "los"}, "los"),
        ({"bs_height_m": 1.0}, "bs_height_m"),
        ({"csi_period_s": -1.0}, "csi_period_s"),
    ],
)
def test_invalid_channel_config_names_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        ChannelConfig(**kwargs)
