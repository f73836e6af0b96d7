"""Summaries of CSI dataset files (``edgelam channels info``)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from edgelam.channels.store import CSIFile
from edgelam.config import to_dict

__all__ = ["dataset_info"]


def dataset_info(csi_file: CSIFile, *, bins: int = 10, chunk: int = 64) -> dict[str, Any]:
    """Shape, config, speed histogram, LOS fraction and mean power of a dataset.

    The mean power is computed by streaming over the file, ``chunk`` samples at a time.
    """
    cfg = csi_file.config
    n = len(csi_file)
    bands = ["csi"] + (["csi_downlink"] if cfg.duplex == "fdd" else [])
    power = {}
    for band in bands:
        total = 0.0
        for start in range(0, n, chunk):
            block = csi_file.read(slice(start, min(start + chunk, n)), band=band)
            total += float(np.sum(np.abs(block.astype(np.complex128)) ** 2))
        power[band] = total / (n * cfg.num_slots * cfg.num_subcarriers * cfg.num_bs_antennas)
    speeds_kmh = csi_file.meta["speed_mps"].astype(np.float64) * 3.6
    lo, hi = cfg.speed_kmh
    counts, edges = np.histogram(speeds_kmh, bins=bins, range=(lo, hi if hi > lo else lo + 1))
    return {
        "path": str(csi_file.path),
        "size_bytes": os.path.getsize(csi_file.path),
        "shape": {
            band: [n, cfg.num_slots, cfg.num_subcarriers, cfg.num_bs_antennas] for band in bands
        },
        "dims": ["sample", "slot", "subcarrier", "bs_antenna"],
        "duplex": cfg.duplex,
        "mean_power": power,
        "mean_power_db": {k: 10 * np.log10(v) if v > 0 else None for k, v in power.items()},
        "norm_mean": csi_file.norm_mean,
        "norm_std": csi_file.norm_std,
        "los_fraction": float(np.mean(csi_file.meta["los"])),
        "speed_kmh": {
            "min": float(speeds_kmh.min()),
            "mean": float(speeds_kmh.mean()),
            "max": float(speeds_kmh.max()),
            "histogram": {"edges": edges.tolist(), "counts": counts.tolist()},
        },
        "snr_db": {
            "min": float(csi_file.meta["snr_db"].min()),
            "max": float(csi_file.meta["snr_db"].max()),
        },
        "config": to_dict(cfg),
        "versions": csi_file.versions,
    }
