"""Time-varying MIMO-OFDM CSI sequences from Sionna PHY's 3GPP TR 38.901 models.

One *sample* is one user moving horizontally at a constant speed in a random horizontal
direction, observed by the base station every ``csi_period_s`` for ``history_slots +
future_slots`` slots, on ``num_subcarriers`` subcarriers, at every BS antenna port (one user
antenna; the uplink is simulated, which by reciprocity is also the TDD downlink).

Frequency layout: TDD uses one band of ``F`` subcarriers centred on the carrier. FDD uses ``2F``
contiguous subcarriers centred on the carrier: the lower ``F`` are the uplink band (history), the
upper ``F`` the adjacent downlink band (target), computed from the *same* multipath components,
as QuaDRiGa-based LLM4CP data are. (Doppler is evaluated at the carrier for both bands; the
band offset changes it by F * spacing / f_c, under 0.4% at the defaults.)

Ground users: Sionna's CDL draws 3-D velocity directions when given a speed range, so Doppler
comes out too low. Here every model is given explicit horizontal velocities: CDL and UMa/UMi via
their velocity inputs, TDL (which has no geometry) via its maximum Doppler shift per sample.

Reproducibility: batch ``b`` of a dataset is generated from the seed sequence ``(seed, b)``, so
any batch can be regenerated alone, which is what makes interrupted generation resumable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import sionna.phy
import torch
from sionna.phy.channel import ChannelModel, cir_to_ofdm_channel, subcarrier_frequencies
from sionna.phy.channel.tr38901 import CDL, TDL, PanelArray, UMa, UMi

from edgelam.channels.config import ChannelConfig, model_family
from edgelam.seeding import derive_seed

__all__ = ["CSIBatch", "ChannelGenerator", "batch_seed"]

SPEED_OF_LIGHT = 299_792_458.0


def batch_seed(seed: int, batch_index: int) -> int:
    """The 31-bit seed of batch ``batch_index`` of a dataset seeded with ``seed``.

    >>> batch_seed(0, 3) == batch_seed(0, 3), batch_seed(0, 3) == batch_seed(0, 4)
    (True, False)
    """
    return derive_seed(seed, batch_index)


@dataclass
class CSIBatch:
    """A batch of generated samples.

    Shapes:
        csi: ``[batch, slot, subcarrier, bs_antenna]`` complex64 (TDD band, or FDD uplink band).
        csi_downlink: same shape, FDD only (else None): the adjacent downlink band.
        speed_mps, direction_rad, snr_db, ut_distance_m: ``[batch]`` float32 (distance NaN for
        CDL/TDL, which have no geometry).
        los: ``[batch]`` bool.
    """

    csi: np.ndarray
    csi_downlink: np.ndarray | None
    speed_mps: np.ndarray
    direction_rad: np.ndarray
    snr_db: np.ndarray
    ut_distance_m: np.ndarray
    los: np.ndarray

    def __len__(self) -> int:
        return self.csi.shape[0]


class ChannelGenerator:
    """Generates :class:`CSIBatch` es for a :class:`ChannelConfig` (CPU, float32).

    >>> cfg = ChannelConfig(model="tdl-a", num_samples=4, num_subcarriers=8, bs_rows=1,
    ...                     bs_cols=2, history_slots=3, future_slots=1)
    >>> b = ChannelGenerator(cfg).batch(0, 4)
    >>> b.csi.shape, b.csi.dtype.name
    ((4, 4, 8, 4), 'complex64')
    """

    def __init__(self, config: ChannelConfig) -> None:
        self.config = config
        self.family = model_family(config.model)
        cfg = config
        fc = cfg.carrier_frequency_hz
        self._bs_array = PanelArray(
            num_rows_per_panel=cfg.bs_rows,
            num_cols_per_panel=cfg.bs_cols,
            polarization=cfg.bs_polarization,
            polarization_type="cross" if cfg.bs_polarization == "dual" else "V",
            antenna_pattern="38.901",
            carrier_frequency=fc,
            precision="single",
            device="cpu",
        )
        self._ut_array = PanelArray(
            num_rows_per_panel=1,
            num_cols_per_panel=1,
            polarization="single",
            polarization_type="V",
            antenna_pattern="omni",
            carrier_frequency=fc,
            precision="single",
            device="cpu",
        )
        bands = 2 if cfg.duplex == "fdd" else 1
        self._frequencies = subcarrier_frequencies(
            bands * cfg.num_subcarriers, cfg.subcarrier_spacing_hz, precision="single", device="cpu"
        )
        self._models: dict[str, ChannelModel] = {}

    # -- Sionna models -------------------------------------------------------------------
    def channel_model(self) -> ChannelModel:
        """The Sionna channel model (CDL/TDL: cached; its ray tables are public to statistics).

        System-level models (UMa/UMi) are built anew for every batch: they skip re-drawing
        large-scale parameters when a topology repeats, which would make a batch's draws depend
        on what was generated before it.
        """
        cfg = self.config
        if self.family != "system" and "link" in self._models:
            return self._models["link"]
        profile = cfg.model.split("-")[-1].upper()
        if self.family == "cdl":
            model = CDL(
                profile, cfg.delay_spread_s, cfg.carrier_frequency_hz,
                ut_array=self._ut_array, bs_array=self._bs_array, direction="uplink",
                ut_velocity=torch.zeros(3), precision="single", device="cpu",
            )  # fmt: skip
        elif self.family == "tdl":
            model = TDL(
                profile, cfg.delay_spread_s, cfg.carrier_frequency_hz,
                num_rx_ant=cfg.num_bs_antennas, num_tx_ant=1, precision="single", device="cpu",
            )  # fmt: skip
        else:
            cls = UMa if cfg.model == "uma" else UMi
            kwargs = {"o2i_model": "low"}
            model = cls(
                carrier_frequency=cfg.carrier_frequency_hz, ut_array=self._ut_array,
                bs_array=self._bs_array, direction="uplink",
                enable_pathloss=cfg.include_pathloss, enable_shadow_fading=cfg.include_pathloss,
                precision="single", device="cpu", **kwargs,
            )  # fmt: skip
        if self.family != "system":
            self._models["link"] = model
        return model

    # -- one batch -----------------------------------------------------------------------
    def batch(self, batch_index: int, size: int) -> CSIBatch:
        """Generate batch ``batch_index`` (``size`` samples), reproducibly from the config seed."""
        cfg = self.config
        seed = batch_seed(cfg.seed, batch_index)
        sionna.phy.config.seed = seed
        gen = torch.Generator().manual_seed(seed)

        lo, hi = cfg.speed_kmh
        speed = (lo + (hi - lo) * torch.rand(size, generator=gen)) / 3.6
        direction = 2 * math.pi * torch.rand(size, generator=gen)
        velocity = torch.stack(
            [speed * torch.cos(direction), speed * torch.sin(direction), torch.zeros(size)], dim=-1
        )
        snr = cfg.snr_db[0] + (cfg.snr_db[1] - cfg.snr_db[0]) * torch.rand(size, generator=gen)
        distance = torch.full((size,), float("nan"))
        model = self.channel_model()
        num_slots, fs = cfg.num_slots, 1.0 / cfg.csi_period_s

        if self.family == "cdl":
            model._ut_velocity = velocity
            a, tau = model(size, num_slots, fs)
            los = torch.full((size,), cfg.model in ("cdl-d", "cdl-e"))
        elif self.family == "tdl":
            # Per-sample maximum (radian) Doppler 2 pi v f_c / c: TDL draws
            # doppler = U * (max - min) + min, so equal bounds fix it per sample.
            doppler = (2 * math.pi * speed * cfg.carrier_frequency_hz / SPEED_OF_LIGHT).view(
                size, *([1] * 7)
            )
            model._min_doppler = doppler
            model._max_doppler = doppler
            # TDL-D/E: the specular path arrives at the angle between the LOS direction and
            # the (random, horizontal) direction of motion, instead of Sionna's fixed pi/4.
            model._los_angle_of_arrival = direction.view(size, *([1] * 6))
            a, tau = model(size, num_slots, fs)
            los = torch.full((size,), cfg.model in ("tdl-d", "tdl-e"))
        else:
            ut_loc, distance = self._drop_users(size, gen)
            bs_loc = torch.tensor([0.0, 0.0, cfg.bs_height]).repeat(size, 1, 1)
            forced = {"los": True, "nlos": False, "random": "random"}[cfg.los]
            model.set_topology(
                ut_loc=ut_loc,
                bs_loc=bs_loc,
                ut_orientations=torch.zeros(size, 1, 3),
                bs_orientations=torch.zeros(size, 1, 3),
                ut_velocities=velocity[:, None, :],
                in_state=torch.zeros(size, 1, dtype=torch.bool),
                los=forced,
            )
            a, tau = model(num_slots, fs)
            los = model._scenario.los.reshape(size, -1)[:, 0].bool()

        h = cir_to_ofdm_channel(self._frequencies, a, tau)  # [B, 1, A, 1, 1, T, bands*F]
        h = h[:, 0, :, 0, 0].permute(0, 2, 3, 1).contiguous()  # [B, T, bands*F, A]
        h = h.to(torch.complex64).numpy()
        f = cfg.num_subcarriers
        return CSIBatch(
            csi=np.ascontiguousarray(h[:, :, :f]),
            csi_downlink=np.ascontiguousarray(h[:, :, f:]) if cfg.duplex == "fdd" else None,
            speed_mps=speed.numpy().astype(np.float32),
            direction_rad=direction.numpy().astype(np.float32),
            snr_db=snr.numpy().astype(np.float32),
            ut_distance_m=distance.numpy().astype(np.float32),
            los=los.numpy().astype(bool),
        )

    def _drop_users(self, size: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """UMa/UMi user positions: around a point ``cell_center_distance_m`` from the BS.

        Returns:
            ``(ut_loc [size, 1, 3], 2-D distance to the BS [size])``.
        """
        cfg = self.config
        half = math.radians(cfg.sector_half_angle_deg)
        psi = (2 * torch.rand(size, generator=gen) - 1) * half
        rmin, rmax = cfg.user_radius_m
        # area-uniform in the annulus rmin..rmax around the centre point
        r = torch.sqrt(rmin**2 + (rmax**2 - rmin**2) * torch.rand(size, generator=gen))
        theta = 2 * math.pi * torch.rand(size, generator=gen)
        x = cfg.cell_center_distance_m * torch.cos(psi) + r * torch.cos(theta)
        y = cfg.cell_center_distance_m * torch.sin(psi) + r * torch.sin(theta)
        loc = torch.stack([x, y, torch.full((size,), cfg.ut_height_m)], dim=-1)[:, None, :]
        return loc, torch.hypot(x, y)
