r"""Doppler physics: temporal autocorrelation of horizontally moving users vs. Clarke.

Tolerances (max |error| over 40 lags of 0.5 ms, 256 users, fixed speed):

* TDL NLOS (sum of sinusoids, built for Clarke): <= 0.03 against J0(2 pi f_d tau).
* TDL LOS (Rician; specular angle = random direction of motion): <= 0.12 against J0; one
  sinusoid per user carries most power, so the ensemble converges slowly.
* CDL (512 users): <= 0.07 (NLOS; 0.1 for LOS CDL-E, whose specular ray dominates) against the CDL's own geometry (J0 per ray with the sin(zenith) reduction and
  BS element gain, :func:`cdl_autocorrelation`), and <= 0.2 against plain J0 (CDL rays have
  elevation, which lowers the effective Doppler: CDL-C is ~0.1-0.14 off J0).
* UMa/UMi: <= 0.16 against J0 (random 38.901 clusters; measured 0.06-0.15).
"""

import numpy as np
import pytest

from edgelam.channels.config import ChannelConfig
from edgelam.channels.generate import ChannelGenerator
from edgelam.channels.statistics import (
    cdl_autocorrelation,
    clarke_autocorrelation,
    temporal_autocorrelation,
)

USERS = 256


def _measure(model: str, speed_kmh: float, users: int = USERS):
    cfg = ChannelConfig(model=model, speed_kmh=(speed_kmh, speed_kmh), num_subcarriers=8,
                        history_slots=36, future_slots=4, batch_size=users, seed=3)  # fmt: skip
    gen = ChannelGenerator(cfg)
    rho = temporal_autocorrelation(gen.batch(0, users).csi)
    j0 = clarke_autocorrelation(cfg.max_doppler_hz(), cfg.csi_period_s, len(rho))
    return cfg, gen, rho, j0


@pytest.mark.parametrize("speed", [30.0, 100.0])
@pytest.mark.parametrize(("model", "tol"), [("tdl-a", 0.03), ("tdl-c", 0.03), ("tdl-d", 0.12)])
def test_tdl_follows_clarke(model, tol, speed):
    _, _, rho, j0 = _measure(model, speed)
    assert np.max(np.abs(rho.real - j0)) < tol
    assert np.max(np.abs(rho.imag)) < tol + 0.05


@pytest.mark.parametrize("speed", [30.0, 100.0])
@pytest.mark.parametrize(("model", "tol"), [("cdl-a", 0.07), ("cdl-c", 0.07), ("cdl-e", 0.1)])
def test_cdl_follows_clarke_with_its_geometry(model, tol, speed):
    cfg, gen, rho, j0 = _measure(model, speed, users=2 * USERS)
    expected = cdl_autocorrelation(
        gen.channel_model(), cfg.max_doppler_hz(), cfg.csi_period_s, len(rho)
    )
    assert np.max(np.abs(rho.real - expected)) < tol
    assert np.max(np.abs(rho.real - j0)) < 0.2


@pytest.mark.parametrize("speed", [30.0, 100.0])
@pytest.mark.parametrize("model", ["uma", "umi"])
def test_system_level_models_follow_clarke(model, speed):
    _, _, rho, j0 = _measure(model, speed)
    assert np.max(np.abs(rho.real - j0)) < 0.16


def test_wrong_speed_is_detected():
    """Negative control: the 100 km/h channel is far from the 30 km/h J0 curve."""
    cfg, _, rho, _ = _measure("tdl-a", 100.0)
    slow = clarke_autocorrelation(30 / 3.6 * cfg.carrier_frequency_hz / 299_792_458.0,
                                  cfg.csi_period_s, len(rho))  # fmt: skip
    assert np.max(np.abs(rho.real - slow)) > 0.5
