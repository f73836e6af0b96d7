"""Autocorrelation-vs-Clarke errors per channel model and speed (what the physics tests check).

Writes JSON (default: benchmarks/results/channel_physics.json): for each model and speed, the
max |error| of the measured temporal autocorrelation (40 lags of 0.5 ms) against J0, and for
CDL against its geometry-aware reference.

    .venv/bin/python benchmarks/channel_physics.py --users 512
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from edgelam.channels.config import ChannelConfig
from edgelam.channels.generate import ChannelGenerator
from edgelam.channels.statistics import (
    cdl_autocorrelation,
    clarke_autocorrelation,
    temporal_autocorrelation,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+",
                        default=["tdl-a", "tdl-c", "tdl-d", "cdl-a", "cdl-c", "cdl-e", "uma", "umi"])  # fmt: skip
    parser.add_argument("--speeds", nargs="+", type=float, default=[30.0, 100.0])
    parser.add_argument("--users", type=int, default=256)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/channel_physics.json"))
    args = parser.parse_args()
    rows = []
    for model in args.models:
        for speed in args.speeds:
            cfg = ChannelConfig(model=model, speed_kmh=(speed, speed), num_subcarriers=8,
                                history_slots=36, future_slots=4, batch_size=args.users,
                                seed=args.seed)  # fmt: skip
            gen = ChannelGenerator(cfg)
            rho = temporal_autocorrelation(gen.batch(0, args.users).csi).real
            j0 = clarke_autocorrelation(cfg.max_doppler_hz(), cfg.csi_period_s, len(rho))
            row = {"model": model, "speed_kmh": speed, "users": args.users,
                   "max_abs_error_vs_j0": float(np.max(np.abs(rho - j0)))}  # fmt: skip
            if model.startswith("cdl"):
                ref = cdl_autocorrelation(
                    gen.channel_model(), cfg.max_doppler_hz(), cfg.csi_period_s, len(rho)
                )
                row["max_abs_error_vs_cdl_geometry"] = float(np.max(np.abs(rho - ref)))
            print(json.dumps(row))
            rows.append(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"results": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
