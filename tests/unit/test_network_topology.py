"""Network drop, large-scale state, per-round link states and config validation."""

import math

import pytest
import torch

from edgelam.config import ConfigError, build_config
from edgelam.network import (
    Network,
    NetworkConfig,
    achievable_rate,
    los_probability,
    pathloss_los,
    shadow_fading_std_db,
)


def test_drop_is_area_uniform_in_annulus():
    r_min, r_max = 35.0, 250.0
    net = Network(NetworkConfig(num_devices=100_000, seed=0))
    d = net.distance_2d
    assert float(d.min()) >= r_min and float(d.max()) <= r_max
    assert torch.allclose(net.positions.norm(dim=-1), d)
    for r in (60.0, 125.0, 200.0):
        expected = (r**2 - r_min**2) / (r_max**2 - r_min**2)
        assert float((d <= r).double().mean()) == pytest.approx(expected, abs=0.006)
    angle = torch.atan2(net.positions[:, 1], net.positions[:, 0])
    assert float((angle > 0).double().mean()) == pytest.approx(0.5, abs=0.006)


def test_random_los_follows_38901_probability():
    net = Network(NetworkConfig(scenario="umi", bs_height_m=10.0, num_devices=50_000, seed=1))
    expected = float(los_probability("umi", net.distance_2d).mean())
    assert float(net.los.double().mean()) == pytest.approx(expected, abs=0.01)


def test_forced_los_and_shadowing_statistics():
    cfg = NetworkConfig(num_devices=50_000, los_mode="los", seed=2)
    net = Network(cfg)
    assert bool(net.los.all())
    pl = pathloss_los("uma", net.distance_2d, 25.0, 1.5, 2.4e9)
    assert torch.allclose(net.pathloss_db, pl)
    assert float(net.shadowing_db.std()) == pytest.approx(4.0, rel=0.02)
    assert float(net.shadowing_db.mean()) == pytest.approx(0.0, abs=0.06)
    nlos = Network(NetworkConfig(num_devices=50_000, los_mode="nlos", seed=2))
    assert not bool(nlos.los.any())
    assert float(nlos.shadowing_db.std()) == pytest.approx(6.0, rel=0.02)
    assert torch.all(shadow_fading_std_db("uma", nlos.los) == 6.0)
    off = Network(NetworkConfig(num_devices=10, shadowing=False))
    assert torch.equal(off.shadowing_db, torch.zeros(10, dtype=torch.float64))


def test_rounds_reproducible_and_distinct():
    net = Network(NetworkConfig(num_devices=8, seed=5))
    a, b, c = net.round(3), net.round(3), net.round(4)
    assert torch.equal(a.uplink_gain, b.uplink_gain) and torch.equal(a.uplink_rate, b.uplink_rate)
    assert not torch.equal(a.uplink_gain, c.uplink_gain)
    assert not torch.equal(a.uplink_gain, a.downlink_gain)  # independent UL/DL fading
    again = Network(NetworkConfig(num_devices=8, seed=5))
    assert torch.equal(again.distance_2d, net.distance_2d)
    assert torch.equal(again.round(3).downlink_rate, a.downlink_rate)
    other = Network(NetworkConfig(num_devices=8, seed=6))
    assert not torch.equal(other.distance_2d, net.distance_2d)
    s1 = net.sample_round(torch.Generator().manual_seed(9))
    s2 = net.sample_round(torch.Generator().manual_seed(9))
    assert s1.round is None and torch.equal(s1.uplink_rate, s2.uplink_rate)


def test_link_state_matches_hand_link_budget():
    k = 4
    net = Network(NetworkConfig(num_devices=k, seed=7))
    st = net.round(0)
    loss = net.pathloss_db + net.shadowing_db
    noise_bs = -174 + 10 * math.log10(1e6) + 5.0  # uplink: BS noise figure
    noise_ue = -174 + 10 * math.log10(1e6) + 9.0  # downlink: UE noise figure
    ul = 23.0 - loss + 10 * torch.log10(st.uplink_gain) - noise_bs
    dl = 43.0 - 10 * math.log10(k) - loss + 10 * torch.log10(st.downlink_gain) - noise_ue
    assert torch.allclose(st.uplink_snr_db, ul)
    assert torch.allclose(st.downlink_snr_db, dl)
    assert torch.allclose(st.uplink_rate, 1e6 * torch.log2(1 + 10 ** (ul / 10)))
    assert torch.allclose(st.downlink_rate, 1e6 * torch.log2(1 + 10 ** (dl / 10)))


def test_rate_gap_lowers_rates():
    base = Network(NetworkConfig(num_devices=6, seed=3)).round(1)
    gap = Network(NetworkConfig(num_devices=6, seed=3, rate_gap_db=3.0)).round(1)
    assert torch.all(gap.uplink_rate < base.uplink_rate)
    assert torch.allclose(gap.uplink_rate, achievable_rate(1e6, base.uplink_snr_db, 3.0))


def test_uplink_and_unicast_downlink_costs():
    net = Network(NetworkConfig(num_devices=5, seed=4))
    st = net.round(2)
    devices = [0, 3]
    cost = net.uplink_cost(1e6, st, devices)
    assert torch.allclose(cost.seconds, 1e6 / st.uplink_rate[devices])
    assert torch.allclose(cost.joules, 10 ** ((23 - 30) / 10) * cost.seconds)
    dl = net.downlink_cost(torch.tensor([1e5, 2e5]), 2, devices)  # round index works too
    assert torch.allclose(dl.seconds, torch.tensor([1e5, 2e5]) / st.downlink_rate[devices])
    assert torch.allclose(dl.joules, 10 ** ((43 - 30) / 10) / 5 * dl.seconds)
    assert torch.equal(net.uplink_rate(2), st.uplink_rate)


def test_broadcast_uses_weakest_device_over_whole_band():
    k = 5
    net = Network(NetworkConfig(num_devices=k, seed=8))
    st = net.round(0)
    devices = [1, 2, 4]
    weakest = float(st.downlink_snr_db[devices].min())
    expected = k * 1e6 * math.log2(1 + 10 ** (weakest / 10))
    assert float(net.downlink_rate(st, devices, mode="broadcast")) == pytest.approx(expected)
    cost = net.downlink_cost(8e6, st, devices, mode="broadcast")
    assert cost.seconds.dim() == 0
    assert float(cost.seconds) == pytest.approx(8e6 / expected)
    assert float(cost.joules) == pytest.approx(10 ** ((43 - 30) / 10) * 8e6 / expected)
    with pytest.raises(ValueError, match="bits"):
        net.downlink_cost(torch.tensor([1.0, 2.0, 3.0]), st, devices, mode="broadcast")
    with pytest.raises(ValueError, match="mode"):
        net.downlink_rate(st, mode="multicast")
    with pytest.raises(ValueError, match="devices"):
        net.uplink_rate(st, [k])


def test_rician_config_runs_and_is_less_spread():
    ray = Network(NetworkConfig(num_devices=20_000, seed=1, los_mode="los")).round(0)
    ric = Network(
        NetworkConfig(num_devices=20_000, seed=1, los_mode="los", fading="rician", rician_k_db=10)
    ).round(0)
    assert float(ric.uplink_gain.mean()) == pytest.approx(1.0, abs=0.03)
    assert float(ric.uplink_gain.var()) < 0.5 * float(ray.uplink_gain.var())


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("scenario", "rma"),
        ("fading", "nakagami"),
        ("los_mode", "sometimes"),
        ("num_devices", 0),
        ("min_distance_m", 5.0),
        ("cell_radius_m", 6000.0),
        ("ut_height_m", 20.0),  # > 13 m is outside the h_E = 1 m simplification for UMa
        ("bs_height_m", 1.0),
        ("carrier_frequency_hz", 200e9),
        ("uplink_bandwidth_hz", 0.0),
        ("bs_noise_figure_db", -1.0),
        ("seed", -1),
        ("rician_k_db", float("nan")),
    ],
)
def test_invalid_config_names_field(field, value):
    with pytest.raises(ConfigError, match=field):
        NetworkConfig(**{field: value})


def test_config_builds_from_overrides():
    cfg = build_config(NetworkConfig, overrides={"scenario": "umi", "num_devices": "3"})
    assert cfg.scenario == "umi" and cfg.num_devices == 3
    with pytest.raises(ConfigError, match="scenario"):
        build_config(NetworkConfig, overrides={"scenario": "rma"})
