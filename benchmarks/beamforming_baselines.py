"""Sum rate, WMMSE iterations and batched solve time of the beamforming baselines.

Part 1: WMMSE / ZF / RZF / MRT on i.i.d. Rayleigh and 3GPP 38.901 models (default UMa NLOS
and CDL-C, unit average gain per user and antenna), K in {2, 4, 8} users, M in {8, 16} antennas (K <= M),
SNR in {0, 10, 20} dB, ``--batch`` channels each. Times are wall-clock seconds for the whole
batch on one CPU thread (one warm-up solve first).

Part 2: imperfect CSI. The BS estimates the channel from orthogonal uplink pilots (L = K,
LS, LMMSE with an i.i.d. prior, and LMMSE with the spatial covariance estimated from an
independent channel set), runs WMMSE on the estimate, and the sum rate is measured on the true
channel, relative to WMMSE with perfect CSI.

Part 3: WMMSE's starting point: the default (per channel, the best of RZF, ZF and MRT) against
RZF alone, for K = 4, M = 8: iterations to the tolerance, sum rate and time.

Writes JSON (default: benchmarks/results/beamforming_baselines.json).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/beamforming_baselines.py
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from edgelam.airinterface.beamforming.baselines import METHODS, solve
from edgelam.airinterface.beamforming.channels import channel_set
from edgelam.airinterface.beamforming.pilots import (
    channel_covariance,
    estimate_channels,
    estimation_nmse,
)
from edgelam.airinterface.beamforming.problem import sum_rate
from edgelam.runs import library_versions


def timed_solve(method: str, H: torch.Tensor, noise: float, **options):
    """``(result, seconds)`` of one solve, after a warm-up on a small slice."""
    solve(method, H[:4], 1.0, noise, **options)
    start = time.perf_counter()
    out = solve(method, H, 1.0, noise, **options)
    return out, time.perf_counter() - start


def sum_rate_table(H_all: torch.Tensor, model: str, users, snrs) -> list[dict]:
    """Part 1 rows for one channel set ``[batch, K_max, M]`` (the first K users are used)."""
    rows = []
    M = H_all.shape[-1]
    for K in users:
        if K > M:
            continue
        H = H_all[:, :K].contiguous()
        for snr_db in snrs:
            noise = 10 ** (-snr_db / 10)
            row = {"model": model, "users": K, "antennas": M, "snr_db": snr_db,
                   "batch": H.shape[0], "sum_rate": {}, "sum_rate_std": {}, "time_s": {}}  # fmt: skip
            for method in METHODS:
                options = {"return_info": True} if method == "wmmse" else {}
                W, seconds = timed_solve(method, H, noise, **options)
                if method == "wmmse":
                    W, info = W
                    row["wmmse_iterations_mean"] = float(info.iterations.double().mean())
                    row["wmmse_iterations_max"] = int(info.iterations.max())
                    row["wmmse_converged_fraction"] = float(info.converged.double().mean())
                rate = sum_rate(H, W, noise).double()
                row["sum_rate"][method] = float(rate.mean())
                row["sum_rate_std"][method] = float(rate.std())
                row["time_s"][method] = seconds
            print(json.dumps({k: row[k] for k in ("model", "users", "antennas", "snr_db")}
                             | {m: round(v, 3) for m, v in row["sum_rate"].items()}
                             | {"wmmse_it": row["wmmse_iterations_mean"],
                                "wmmse_s": round(row["time_s"]["wmmse"], 3)}), flush=True)  # fmt: skip
            rows.append(row)
    return rows


def imperfect_csi_table(
    H: torch.Tensor, H_train: torch.Tensor, model: str, snrs, pilot_snrs, seed: int
) -> list[dict]:
    """Part 2 rows: WMMSE on LS / LMMSE estimates vs. perfect CSI."""
    rows = []
    covariance = channel_covariance(H_train, per_user=False)  # users are exchangeable
    for snr_db in snrs:
        noise = 10 ** (-snr_db / 10)
        perfect = float(sum_rate(H, solve("wmmse", H, 1.0, noise), noise).mean())
        for pilot_snr_db in pilot_snrs:
            for name, method, cov in (("ls", "ls", None), ("lmmse-iid", "lmmse", None),
                                      ("lmmse-cov", "lmmse", covariance)):  # fmt: skip
                gen = torch.Generator().manual_seed(seed)
                H_hat = estimate_channels(H, pilot_snr_db, method=method, covariance=cov,
                                          generator=gen)  # fmt: skip
                W = solve("wmmse", H_hat, 1.0, noise)
                rate = float(sum_rate(H, W, noise).mean())
                row = {"model": model, "users": H.shape[1], "antennas": H.shape[2],
                       "snr_db": snr_db, "pilot_snr_db": pilot_snr_db, "estimator": name,
                       "pilot_length": H.shape[1], "nmse": estimation_nmse(H_hat, H),
                       "wmmse_sum_rate": rate, "perfect_csi_wmmse_sum_rate": perfect,
                       "relative_to_perfect": rate / perfect}  # fmt: skip
                print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v)
                                  for k, v in row.items()}), flush=True)  # fmt: skip
                rows.append(row)
    return rows


def init_table(H: torch.Tensor, model: str, snrs) -> list[dict]:
    """Part 3 rows: WMMSE from RZF vs. from the best of RZF / ZF / MRT."""
    rows = []
    for snr_db in snrs:
        noise = 10 ** (-snr_db / 10)
        for init in ("best", "rzf"):
            (W, info), seconds = timed_solve("wmmse", H, noise, init=init, return_info=True)
            row = {"model": model, "users": H.shape[1], "antennas": H.shape[2], "snr_db": snr_db,
                   "init": init, "sum_rate": float(sum_rate(H, W, noise).mean()),
                   "iterations_mean": float(info.iterations.double().mean()),
                   "iterations_max": int(info.iterations.max()),
                   "converged_fraction": float(info.converged.double().mean()),
                   "time_s": seconds}  # fmt: skip
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["rayleigh", "uma", "cdl-c"])
    parser.add_argument("--users", nargs="+", type=int, default=[2, 4, 8])
    parser.add_argument("--antennas", nargs="+", type=int, default=[8, 16])
    parser.add_argument("--snr-db", nargs="+", type=float, default=[0.0, 10.0, 20.0])
    parser.add_argument("--pilot-snr-db", nargs="+", type=float, default=[-10.0, 0.0, 10.0, 20.0])
    parser.add_argument("--csi-users", type=int, default=4, help="K of the imperfect-CSI part")
    parser.add_argument("--csi-antennas", type=int, default=8, help="M of the imperfect-CSI part")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/beamforming_baselines.json")
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    rates, csi, inits = [], [], []
    for model in args.models:
        for M in args.antennas:
            H = channel_set(model, args.batch, max(args.users), M, seed=args.seed)
            rates += sum_rate_table(H, model, args.users, args.snr_db)
        K, M = args.csi_users, args.csi_antennas
        H = channel_set(model, args.batch, K, M, seed=args.seed)
        H_train = channel_set(model, args.batch, K, M, seed=args.seed + 1)
        csi += imperfect_csi_table(H, H_train, model, [10.0, 20.0], args.pilot_snr_db, args.seed)
        inits += init_table(H, model, args.snr_db)
    meta = {
        "threads": args.threads, "machine": platform.machine(), "processor": platform.processor(),
        "batch": args.batch, "seed": args.seed, "power": 1.0, "dtype": "complex64",
        "models": args.models, "users": args.users, "antennas": args.antennas,
        "snr_db": args.snr_db, "pilot_snr_db": args.pilot_snr_db,
        "wmmse": {"init": "best of rzf/zf/mrt", "tol": 1e-6, "max_iter": 500},
        "zf_allocation": "equal", "normalization": "set (unit mean gain per user and antenna)",
        "wall_s": time.perf_counter() - start,
        "versions": library_versions("torch", "sionna-no-rt"),
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    out = {"meta": meta, "sum_rate": rates, "imperfect_csi": csi, "wmmse_init": inits}
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out} in {meta['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
