"""Configuration of a CSI dataset: scenario, arrays, OFDM grid, time axis, mobility, duplexing.

Defaults follow LLM4CP (Liu et al., 2024): 3GPP TR 38.901 UMa NLOS at 2.4 GHz, a 4x4
dual-polarised UPA (32 antennas) at the base station, one user antenna, 48 subcarriers spaced
180 kHz, one CSI snapshot every 0.5 ms, 16 history slots predicting 4 future slots, user speeds
10-100 km/h, and for FDD the uplink band (history) directly followed by the downlink band (target).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from edgelam.config import ConfigError, option

__all__ = ["ChannelConfig", "CHANNEL_MODELS", "model_family"]

ChannelModelName = Literal[
    "cdl-a", "cdl-b", "cdl-c", "cdl-d", "cdl-e",
    "tdl-a", "tdl-b", "tdl-c", "tdl-d", "tdl-e",
    "uma", "umi",
]  # fmt: skip
CHANNEL_MODELS: tuple[str, ...] = ChannelModelName.__args__


def model_family(model: str) -> str:
    """``"cdl"``, ``"tdl"`` or ``"system"`` (UMa/UMi, which have a geometry)."""
    return model.split("-")[0] if "-" in model else "system"


@dataclass
class ChannelConfig:
    """Everything that determines a CSI dataset (same config and seed -> identical arrays)."""

    model: ChannelModelName = option(
        "uma",
        "3GPP TR 38.901 model: CDL-A..E / TDL-A..E (link level; D and E are LOS) or UMa/UMi "
        "(system level, geometry below)",
    )
    los: Literal["nlos", "los", "random"] = option(
        "nlos",
        "UMa/UMi link state: forced NLOS, forced LOS, or drawn with the 38.901 LOS probability",
    )
    num_samples: int = option(
        2000, "number of user trajectories (samples) to generate", aliases=("--samples",)
    )
    seed: int = option(0, "seed of every random draw (Sionna's and edgelam's)")
    carrier_frequency_hz: float = option(2.4e9, "carrier frequency [Hz]")
    bs_rows: int = option(4, "rows of the base-station uniform planar array")
    bs_cols: int = option(4, "columns of the base-station uniform planar array")
    bs_polarization: Literal["dual", "single"] = option(
        "dual", "BS polarisation: 'dual' (cross-polarised, 2 ports per element) or 'single' (V)"
    )
    num_subcarriers: int = option(48, "subcarriers per band")
    subcarrier_spacing_hz: float = option(180e3, "subcarrier spacing [Hz] (LLM4CP: 180 kHz)")
    csi_period_s: float = option(0.5e-3, "time between CSI snapshots (slots) [s]")
    history_slots: int = option(16, "past slots given to a predictor")
    future_slots: int = option(4, "future slots to predict")
    speed_kmh: tuple[float, float] = option(
        (10.0, 100.0), "user speed range [km/h], drawn uniformly; equal bounds give a fixed speed"
    )
    delay_spread_s: float = option(
        100e-9, "RMS delay spread for CDL/TDL [s] (UMa/UMi draw theirs from 38.901 statistics)"
    )
    duplex: Literal["tdd", "fdd"] = option(
        "tdd",
        "TDD: one band for history and target; FDD: history on the uplink band, target on the "
        "adjacent downlink band (both stored)",
    )
    snr_db: tuple[float, float] = option(
        (5.0, 20.0),
        "range of per-sample observation SNR [dB] stored as metadata (LLM4CP training: 5-20)",
    )
    cell_center_distance_m: float = option(
        200.0, "UMa/UMi: distance from the BS of the point around which users are dropped [m]"
    )
    sector_half_angle_deg: float = option(
        60.0, "UMa/UMi: that point's azimuth is uniform in +/- this angle around boresight [deg]"
    )
    user_radius_m: tuple[float, float] = option(
        (20.0, 50.0), "UMa/UMi: users are dropped this far from that point [m]"
    )
    bs_height_m: float | None = option(None, "UMa/UMi BS height [m]; default 25 (UMa) or 10 (UMi)")
    ut_height_m: float = option(1.5, "user height [m]; users move horizontally")
    include_pathloss: bool = option(
        False, "UMa/UMi: keep path loss and shadowing in the CSI (default: small-scale fading only)"
    )
    batch_size: int = option(
        128, "samples generated per batch (memory vs. speed; part of the seed)"
    )

    def __post_init__(self) -> None:
        positive = ("num_samples", "bs_rows", "bs_cols", "num_subcarriers", "history_slots",
                    "future_slots", "batch_size")  # fmt: skip
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("carrier_frequency_hz", "subcarrier_spacing_hz", "csi_period_s",
                     "delay_spread_s", "cell_center_distance_m"):  # fmt: skip
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name}: must be > 0, got {getattr(self, name)}")
        lo, hi = self.speed_kmh
        if not 0 <= lo <= hi:
            raise ConfigError(f"speed_kmh: need 0 <= min <= max, got {self.speed_kmh}")
        if self.snr_db[0] > self.snr_db[1]:
            raise ConfigError(f"snr_db: need min <= max, got {self.snr_db}")
        rmin, rmax = self.user_radius_m
        if not 0 <= rmin <= rmax:
            raise ConfigError(f"user_radius_m: need 0 <= min <= max, got {self.user_radius_m}")
        if not 0 <= self.sector_half_angle_deg <= 180:
            raise ConfigError(
                f"sector_half_angle_deg: must be in [0, 180], got {self.sector_half_angle_deg}"
            )
        if self.bs_height_m is not None and self.bs_height_m <= self.ut_height_m:
            raise ConfigError(
                f"bs_height_m: must exceed ut_height_m ({self.ut_height_m}), got {self.bs_height_m}"
            )
        if self.ut_height_m <= 0:
            raise ConfigError(f"ut_height_m: must be > 0, got {self.ut_height_m}")
        if self.los != "nlos" and model_family(self.model) != "system":
            raise ConfigError(
                f"los: only applies to uma/umi; {self.model} fixes LOS by its profile "
                "(CDL/TDL-D and -E are LOS, A-C NLOS); leave los='nlos'"
            )

    @property
    def num_slots(self) -> int:
        """Slots per sample: history followed by future."""
        return self.history_slots + self.future_slots

    @property
    def num_bs_antennas(self) -> int:
        """BS antenna ports: rows x cols x (2 if dual-polarised)."""
        return self.bs_rows * self.bs_cols * (2 if self.bs_polarization == "dual" else 1)

    @property
    def bs_height(self) -> float:
        """Resolved BS height [m]."""
        if self.bs_height_m is not None:
            return self.bs_height_m
        return 10.0 if self.model == "umi" else 25.0

    def max_doppler_hz(self) -> float:
        """Maximum Doppler shift f_d = v_max f_c / c at the top speed [Hz]."""
        return self.speed_kmh[1] / 3.6 * self.carrier_frequency_hz / 299_792_458.0
