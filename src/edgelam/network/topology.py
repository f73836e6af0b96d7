"""A single-cell wireless network: device drop, large-scale state and per-round link states.

One base station (BS, hosting the edge server) sits at the origin; :math:`K` devices are
dropped uniformly *by area* in the annulus :math:`r_{min} \\le d_{2D} \\le R`. At the drop we
draw, once, each device's LOS state (TR 38.901 LOS probability, or forced) and log-normal
shadow fading -- the large-scale state is fixed for the life of a :class:`Network`. Every
round draws new, independent block fading for each uplink and downlink (independent UL/DL
fading, as on separate FDD carriers) and yields a :class:`LinkState` of SNRs and rates.

Resource model (orthogonal FDMA):

* **Uplink**: device :math:`k` transmits with power :math:`P_{UE}` over its own
  ``uplink_bandwidth_hz``; the BS receiver has noise figure :math:`NF_{BS}`.
* **Downlink, unicast**: the BS power :math:`P_{BS}` is spread evenly over the whole downlink
  band of :math:`K \\times` ``downlink_bandwidth_hz``, so device :math:`k` gets
  ``downlink_bandwidth_hz`` with :math:`P_{BS}/K`; the UE has noise figure :math:`NF_{UE}`.
* **Downlink, broadcast**: one common message sent over the whole downlink band
  (:math:`K \\times` ``downlink_bandwidth_hz``, full power :math:`P_{BS}`). Since the power
  spectral density is the same as in unicast, each device sees the same SNR; the common rate
  is set by the weakest scheduled device,
  :math:`R_{bc} = K B_{DL} \\log_2(1 + \\min_{k \\in S} \\mathrm{SNR}_k / \\Gamma)`.

Energy is the radiated transmit energy: :math:`P_{UE} t` on the uplink, :math:`(P_{BS}/K) t`
per unicast downlink and :math:`P_{BS} t` for a broadcast.

>>> net = Network(NetworkConfig(num_devices=4, seed=1))
>>> state = net.round(0)
>>> state.uplink_rate.shape
torch.Size([4])
>>> bool(torch.equal(net.round(0).uplink_rate, state.uplink_rate))  # rounds are reproducible
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Literal

import torch

from edgelam.config import ConfigError, option
from edgelam.network.link import (
    TransferCost,
    achievable_rate,
    dbm_to_watt,
    rayleigh_power_gain,
    rician_power_gain,
    snr_db,
    thermal_noise_dbm,
    transfer_cost,
)
from edgelam.network.pathloss import los_probability, pathloss_db, shadow_fading_std_db
from edgelam.seeding import derive_seed

__all__ = ["NetworkConfig", "LinkState", "Network"]

Devices = Sequence[int] | torch.Tensor | None


@dataclass
class NetworkConfig:
    """Configuration of the single-cell network (every field documented)."""

    scenario: Literal["uma", "umi"] = option("uma", "3GPP TR 38.901 scenario: uma or umi")
    num_devices: int = option(10, "number of edge devices K in the cell")
    cell_radius_m: float = option(250.0, "cell radius R: maximum BS-device ground distance (m)")
    min_distance_m: float = option(
        35.0, "minimum BS-device ground distance (m); 35 is UMa-style, 10 UMi-style; >= 10"
    )
    bs_height_m: float = option(25.0, "BS antenna height (m); 25 for UMa, 10 for UMi")
    ut_height_m: float = option(1.5, "device antenna height (m), 1.5..22.5 (UMa: <= 13)")
    carrier_frequency_hz: float = option(2.4e9, "carrier frequency (Hz), 0.5e9..100e9")
    uplink_bandwidth_hz: float = option(1e6, "uplink bandwidth per device (Hz)")
    downlink_bandwidth_hz: float = option(
        1e6, "downlink bandwidth per device (Hz); the total downlink band is K times this"
    )
    device_tx_power_dbm: float = option(23.0, "device (UE) transmit power (dBm)")
    bs_tx_power_dbm: float = option(43.0, "BS transmit power over the whole downlink band (dBm)")
    ue_noise_figure_db: float = option(9.0, "device receiver noise figure (dB)")
    bs_noise_figure_db: float = option(5.0, "BS receiver noise figure (dB)")
    antenna_gain_db: float = option(0.0, "combined tx+rx antenna gain on every link (dB)")
    fading: Literal["rayleigh", "rician"] = option(
        "rayleigh", "block fading of every link: rayleigh or rician"
    )
    rician_k_db: float = option(9.0, "Rician K-factor (dB), used when fading is rician")
    los_mode: Literal["random", "los", "nlos"] = option(
        "random", "LOS state: random (38.901 LOS probability), los (all) or nlos (all)"
    )
    shadowing: bool = option(True, "draw log-normal shadow fading at the drop")
    rate_gap_db: float = option(0.0, "SNR gap to Shannon capacity (dB); 0 = capacity")
    seed: int = option(0, "seed of the device drop, large-scale state and per-round fading")

    def __post_init__(self) -> None:
        choices = {
            "scenario": ("uma", "umi"),
            "fading": ("rayleigh", "rician"),
            "los_mode": ("random", "los", "nlos"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name}: {getattr(self, name)!r} is not one of {list(allowed)}")
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{f.name}: must be finite, got {value!r}")
        ut_max = 13.0 if self.scenario == "uma" else 22.5  # UMa: h_E = 1 m is exact up to 13 m
        fc = self.carrier_frequency_hz
        rules = [
            ("num_devices", self.num_devices >= 1, ">= 1"),
            ("min_distance_m", 10.0 <= self.min_distance_m < self.cell_radius_m, "in [10, R)"),
            ("cell_radius_m", self.cell_radius_m <= 5000.0, "<= 5000 (38.901 validity)"),
            ("ut_height_m", 1.5 <= self.ut_height_m <= ut_max, f"in [1.5, {ut_max}]"),
            ("bs_height_m", self.bs_height_m > max(self.ut_height_m, 1.0), "> ut_height_m"),
            ("carrier_frequency_hz", 0.5e9 <= fc <= 100e9, "in [0.5e9, 100e9]"),
            ("uplink_bandwidth_hz", self.uplink_bandwidth_hz > 0, "> 0"),
            ("downlink_bandwidth_hz", self.downlink_bandwidth_hz > 0, "> 0"),
            ("ue_noise_figure_db", self.ue_noise_figure_db >= 0, ">= 0"),
            ("bs_noise_figure_db", self.bs_noise_figure_db >= 0, ">= 0"),
            ("seed", self.seed >= 0, ">= 0"),
        ]
        for name, ok, rule in rules:
            if not ok:
                raise ConfigError(f"{name}: must be {rule}, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class LinkState:
    """Small-scale state of every link in one block-fading round.

    Attributes:
        round: Round index (``None`` when drawn by :meth:`Network.sample_round`).
        uplink_gain: Uplink fading power gain :math:`|h|^2`.
        downlink_gain: Downlink fading power gain :math:`|h|^2`.
        uplink_snr_db: Uplink SNR at the BS (dB).
        downlink_snr_db: Downlink SNR at each device (dB); same for unicast and broadcast.
        uplink_rate: Uplink achievable rate (bit/s) over ``uplink_bandwidth_hz``.
        downlink_rate: Unicast downlink achievable rate (bit/s) over ``downlink_bandwidth_hz``.

    Shapes:
        Every tensor is ``[K]``, ``float64``.
    """

    round: int | None
    uplink_gain: torch.Tensor
    downlink_gain: torch.Tensor
    uplink_snr_db: torch.Tensor
    downlink_snr_db: torch.Tensor
    uplink_rate: torch.Tensor
    downlink_rate: torch.Tensor


class Network:
    """A dropped cell of :math:`K` devices around one BS.

    Args:
        config: The network configuration.
        generator: Randomness for the drop (positions, LOS, shadowing). ``None`` seeds one
            from ``config.seed``. Per-round fading via :meth:`round` is always seeded from
            ``(config.seed, r)``, independently of this generator and of call order.

    Attributes:
        positions: Device coordinates (m) with the BS at the origin, ``[K, 2]``.
        distance_2d: Ground distance (m), ``[K]``.
        los: LOS state, ``[K]`` bool.
        pathloss_db: Path loss without shadowing (dB), ``[K]``.
        shadowing_db: Shadow fading (dB), ``[K]`` (zeros if disabled).
    """

    def __init__(self, config: NetworkConfig, generator: torch.Generator | None = None) -> None:
        self.config = cfg = config
        if generator is None:
            generator = torch.Generator().manual_seed(derive_seed(cfg.seed, 0, bits=63))
        k = cfg.num_devices
        u = torch.rand(k, generator=generator, dtype=torch.float64)
        r_min2, r_max2 = cfg.min_distance_m**2, cfg.cell_radius_m**2
        self.distance_2d = torch.sqrt(r_min2 + u * (r_max2 - r_min2))
        angle = 2.0 * math.pi * torch.rand(k, generator=generator, dtype=torch.float64)
        self.positions = torch.stack(
            [self.distance_2d * torch.cos(angle), self.distance_2d * torch.sin(angle)], dim=-1
        )
        if cfg.los_mode == "random":
            p_los = los_probability(cfg.scenario, self.distance_2d, cfg.ut_height_m)
            self.los = torch.rand(k, generator=generator, dtype=torch.float64) < p_los
        else:
            self.los = torch.full((k,), cfg.los_mode == "los", dtype=torch.bool)
        self.pathloss_db = pathloss_db(
            cfg.scenario,
            self.distance_2d,
            cfg.bs_height_m,
            cfg.ut_height_m,
            cfg.carrier_frequency_hz,
            self.los,
        )
        sigma = shadow_fading_std_db(cfg.scenario, self.los)
        normal = torch.randn(k, generator=generator, dtype=torch.float64)
        self.shadowing_db = sigma * normal if cfg.shadowing else torch.zeros(k, dtype=torch.float64)
        self.uplink_noise_dbm = thermal_noise_dbm(cfg.uplink_bandwidth_hz, cfg.bs_noise_figure_db)
        self.downlink_noise_dbm = thermal_noise_dbm(
            cfg.downlink_bandwidth_hz, cfg.ue_noise_figure_db
        )
        self.downlink_power_per_device_dbm = cfg.bs_tx_power_dbm - 10.0 * math.log10(k)

    @property
    def num_devices(self) -> int:
        """Number of devices :math:`K`."""
        return self.config.num_devices

    @property
    def large_scale_loss_db(self) -> torch.Tensor:
        """Path loss plus shadow fading (dB), ``[K]``."""
        return self.pathloss_db + self.shadowing_db

    def round(self, r: int) -> LinkState:
        """Link state of round ``r``, reproducible from ``(config.seed, r)``.

        Args:
            r: Non-negative round index.

        Returns:
            The :class:`LinkState` of round ``r``.

        Raises:
            ValueError: ``r`` is negative.
        """
        if r < 0:
            raise ValueError(f"round index must be >= 0, got {r}")
        gen = torch.Generator().manual_seed(derive_seed(self.config.seed, 1, r, bits=63))
        return self._state(gen, r)

    def sample_round(self, generator: torch.Generator) -> LinkState:
        """Link state of a fresh block-fading round drawn from ``generator``."""
        return self._state(generator, None)

    def _fading(self, generator: torch.Generator) -> torch.Tensor:
        shape = (self.num_devices,)
        if self.config.fading == "rician":
            return rician_power_gain(shape, self.config.rician_k_db, generator)
        return rayleigh_power_gain(shape, generator)

    def _state(self, generator: torch.Generator, r: int | None) -> LinkState:
        cfg = self.config
        g_ul, g_dl = self._fading(generator), self._fading(generator)
        loss = self.large_scale_loss_db
        ul_snr = snr_db(
            cfg.device_tx_power_dbm, loss, self.uplink_noise_dbm, g_ul, cfg.antenna_gain_db
        )
        dl_snr = snr_db(
            self.downlink_power_per_device_dbm,
            loss,
            self.downlink_noise_dbm,
            g_dl,
            cfg.antenna_gain_db,
        )
        return LinkState(
            round=r,
            uplink_gain=g_ul,
            downlink_gain=g_dl,
            uplink_snr_db=ul_snr,
            downlink_snr_db=dl_snr,
            uplink_rate=achievable_rate(cfg.uplink_bandwidth_hz, ul_snr, cfg.rate_gap_db),
            downlink_rate=achievable_rate(cfg.downlink_bandwidth_hz, dl_snr, cfg.rate_gap_db),
        )

    def _resolve(self, state: LinkState | int) -> LinkState:
        return self.round(state) if isinstance(state, int) else state

    def _index(self, devices: Devices) -> torch.Tensor:
        if devices is None:
            return torch.arange(self.num_devices)
        idx = torch.as_tensor(devices, dtype=torch.long).reshape(-1)
        if idx.numel() == 0 or int(idx.min()) < 0 or int(idx.max()) >= self.num_devices:
            raise ValueError(f"devices must be non-empty indices in [0, {self.num_devices})")
        return idx

    def uplink_rate(self, state: LinkState | int, devices: Devices = None) -> torch.Tensor:
        """Uplink rates (bit/s) of ``devices`` (default all) in a round.

        Args:
            state: A :class:`LinkState` or a round index.
            devices: Device indices; ``None`` means all.

        Returns:
            Rates, ``[n]`` for ``n`` devices.
        """
        return self._resolve(state).uplink_rate[self._index(devices)]

    def downlink_rate(
        self,
        state: LinkState | int,
        devices: Devices = None,
        mode: Literal["unicast", "broadcast"] = "unicast",
    ) -> torch.Tensor:
        """Downlink rate (bit/s): per device (unicast) or the common broadcast rate.

        Args:
            state: A :class:`LinkState` or a round index.
            devices: Scheduled device indices; ``None`` means all.
            mode: ``"unicast"`` (each device its own sub-band) or ``"broadcast"`` (one message
                over the whole band, at the rate of the weakest scheduled device).

        Returns:
            ``[n]`` unicast rates, or a scalar ``[]`` broadcast rate.

        Raises:
            ValueError: unknown ``mode`` or bad device indices.
        """
        st, idx = self._resolve(state), self._index(devices)
        if mode == "unicast":
            return st.downlink_rate[idx]
        if mode == "broadcast":
            total_band = self.num_devices * self.config.downlink_bandwidth_hz
            return achievable_rate(
                total_band, st.downlink_snr_db[idx].min(), self.config.rate_gap_db
            )
        raise ValueError(f"mode: {mode!r} is not one of ['unicast', 'broadcast']")

    def uplink_cost(
        self, bits: float | torch.Tensor, state: LinkState | int, devices: Devices = None
    ) -> TransferCost:
        """Airtime and device transmit energy to send ``bits`` from each device to the BS.

        Args:
            bits: Payload bits, a scalar (same for all) or ``[n]`` per device.
            state: A :class:`LinkState` or a round index.
            devices: Device indices; ``None`` means all.

        Returns:
            A :class:`TransferCost` with ``[n]`` fields.
        """
        power_w = dbm_to_watt(self.config.device_tx_power_dbm)
        return transfer_cost(bits, self.uplink_rate(state, devices), power_w)

    def downlink_cost(
        self,
        bits: float | torch.Tensor,
        state: LinkState | int,
        devices: Devices = None,
        mode: Literal["unicast", "broadcast"] = "unicast",
    ) -> TransferCost:
        """Airtime and BS transmit energy to send ``bits`` from the BS to devices.

        Args:
            bits: Payload bits; scalar or ``[n]`` for unicast, scalar for broadcast.
            state: A :class:`LinkState` or a round index.
            devices: Scheduled device indices; ``None`` means all.
            mode: ``"unicast"`` or ``"broadcast"`` (see the module docstring).

        Returns:
            A :class:`TransferCost`: ``[n]`` fields for unicast (energy at power
            :math:`P_{BS}/K` each), scalar fields for broadcast (one transmission at
            :math:`P_{BS}`; every scheduled device has it after ``seconds``).

        Raises:
            ValueError: unknown ``mode``, bad device indices, or non-scalar broadcast ``bits``.
        """
        rate = self.downlink_rate(state, devices, mode)
        if mode == "broadcast":
            if torch.as_tensor(bits).numel() != 1:
                raise ValueError("bits: a broadcast sends one common payload; pass a scalar")
            return transfer_cost(bits, rate, dbm_to_watt(self.config.bs_tx_power_dbm))
        return transfer_cost(bits, rate, dbm_to_watt(self.downlink_power_per_device_dbm))
