"""Graph-LAM beamforming: size generalisation, speed, pilots end to end, federated fine-tuning.

Four experiments, each a run directory under ``--runs-dir`` (finished training runs of the same
config are reused, so a second call only redoes the analysis):

1. ``graph-lam``: the graph-LAM beamformer (3-layer bipartite GNN, 32 wide -> user tokens ->
   the shipped edgelam-wireless GPT-2, 4 x 128, frozen, LoRA r=8 -> dual beam head -> power
   projection) trained unsupervised on the negative sum rate for ``--steps`` steps of 2 size
   groups x 64 i.i.d. Rayleigh instances, K ~ U{2..8}, M in {8, 16}, SNR ~ U[0, 20] dB.
   Evaluated on K in {2, 4, 6, 8, 10, 12} x M in {8, 12, 16, 24, 32} (``--eval-samples``
   seeded test instances per size, SNR ~ U[0, 20] dB) as % of the WMMSE sum rate on the same
   channels; sizes with K <= 8 and M in {8, 16} are "seen", the rest "unseen".
   ``gnn-only``: the same without tokens and backbone (the ablation), same steps.
2. timing: one batch of 256 instances (K = 8, M = 16, SNR 10 dB): graph-LAM inference vs
   batched WMMSE (tol 1e-6, at most 500 iterations, per-element stopping) vs RZF; median of 3.
3. ``graph-lam-pilots``: the same model with the complex pilot encoder, trained end to end from
   received DFT pilots (L = 8 symbols, pilot SNR ~ U[-10, 20] dB per size group), scored on the
   true channels; vs LS + WMMSE and LMMSE + WMMSE (exact i.i.d. prior) at pilot SNR
   {-10, 0, 10, 20} dB, all as % of the perfect-CSI WMMSE sum rate.
4. ``federated``: four base stations with different 38.901 scenarios (CDL-A K=4 M=16 10-20 dB,
   CDL-C K=6 M=16 0-10 dB, CDL-D K=8 M=8 10-20 dB, UMa K=6 M=8 5-15 dB; 256 training and 256
   test instances each) fine-tune the Rayleigh-trained graph-LAM with FedAvg (10 rounds x 5
   local Adam steps, batch 32, lr 3e-4) vs local-only fine-tuning (same steps) vs no
   fine-tuning.

No hyper-parameter was tuned on the test sets: the settings are the defaults of
``GraphLAMConfig`` and ``FederatedBeamformConfig`` (the GNN width, 32, was chosen over 64 on
the validation set and the CPU budget: 95.2% vs 95.7% of WMMSE at half the time).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/beamforming_graph_lam.py

writes ``benchmarks/results/beamforming_graph_lam.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch

from edgelam.airinterface.beamforming.baselines import regularized_zero_forcing, wmmse
from edgelam.airinterface.beamforming.graph_lam import GraphLAMConfig, train_graph_lam
from edgelam.airinterface.beamforming.graph_lam_checkpoint import load_precoder
from edgelam.airinterface.beamforming.graph_lam_federated import (
    FederatedBeamformConfig,
    run_federated_finetuning,
)
from edgelam.airinterface.beamforming.problem import rayleigh_channels, sum_rate
from edgelam.runs import read_summary
from edgelam.training.fedavg import FedAvgConfig

RESULTS = Path(__file__).parent / "results" / "beamforming_graph_lam.json"


def size_table(summary: dict[str, Any]) -> list[dict[str, Any]]:
    keys = ("K", "M", "seen", "pct_of_wmmse", "rzf_pct", "zf_pct", "mrt_pct", "sum_rate",
            "wmmse_sum_rate")  # fmt: skip
    return [{k: r[k] for k in keys} for r in summary["per_size"]]


def timing(paths: dict[str, Path], reps: int = 3) -> dict[str, Any]:
    """Seconds for one batch of 256 (K=8, M=16, 10 dB) per method, median of ``reps``."""
    H = rayleigh_channels(256, 8, 16, generator=torch.Generator().manual_seed(1234))
    s2 = 0.1
    methods = {name: load_precoder(path) for name, path in paths.items()}
    methods["wmmse"] = lambda H, p, s: wmmse(H, p, s, tol=1e-6, max_iter=500)
    methods["rzf"] = regularized_zero_forcing
    out: dict[str, Any] = {"batch": 256, "K": 8, "M": 16, "snr_db": 10.0}
    for name, fn in methods.items():
        seconds = []
        for _ in range(reps):
            start = time.perf_counter()
            with torch.no_grad():
                W = fn(H, 1.0, s2)
            seconds.append(time.perf_counter() - start)
        out[name] = {"seconds": statistics.median(seconds),
                     "sum_rate": float(sum_rate(H, W, s2).mean())}  # fmt: skip
    for name in paths:
        out[f"wmmse_over_{name}_time"] = out["wmmse"]["seconds"] / out[name]["seconds"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/bench-graph-lam"))
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--eval-samples", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="tiny budget: checks the script")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    wall = time.perf_counter()
    steps = 4 if args.quick else args.steps
    samples = 8 if args.quick else args.eval_samples

    base = GraphLAMConfig(
        steps=steps, val_every=100, checkpoint_every=100, eval_samples=samples,
        eval_users=(2, 4, 6, 8, 10, 12), eval_antennas=(8, 12, 16, 24, 32),
    )  # fmt: skip
    if args.quick:
        base = dataclasses.replace(base, eval_users=(2, 10), eval_antennas=(8, 24), val_every=0)
    runs = {
        "graph-lam": base,
        "gnn-only": dataclasses.replace(
            base, model=dataclasses.replace(base.model, use_backbone=False)
        ),
    }
    seconds: dict[str, float] = {}
    results: dict[str, Any] = {}
    for name, cfg in runs.items():
        start = time.perf_counter()
        path = train_graph_lam(cfg, args.runs_dir / name, progress=False)
        seconds[name] = time.perf_counter() - start
        s = read_summary(path)
        results[name] = {
            "seen_pct_of_wmmse": s["seen_pct_of_wmmse"],
            "unseen_pct_of_wmmse": s["unseen_pct_of_wmmse"],
            "seen_rzf_pct_of_wmmse": s["seen_rzf_pct_of_wmmse"],
            "unseen_rzf_pct_of_wmmse": s["unseen_rzf_pct_of_wmmse"],
            "train_seconds": s["train_seconds"],
            "trainable_params": s["model"]["trainable_params"],
            "total_params": s["model"]["total_params"],
            "backbone": s["model"]["backbone"],
            "per_size": size_table(s),
        }
        print(f"{name}: seen {s['seen_pct_of_wmmse']:.1f}%, unseen "
              f"{s['unseen_pct_of_wmmse']:.1f}% of WMMSE ({seconds[name]:.0f} s)", flush=True)  # fmt: skip

    results["timing"] = timing({n: args.runs_dir / n for n in runs})
    print(f"timing: {json.dumps(results['timing'])}", flush=True)

    pilots = dataclasses.replace(
        base, model=dataclasses.replace(base.model, input="pilots", pilot_length=8),
        eval_users=(4, 8), eval_antennas=(8, 16), eval_pilot_snr_db=(-10.0, 0.0, 10.0, 20.0),
    )  # fmt: skip
    start = time.perf_counter()
    path = train_graph_lam(pilots, args.runs_dir / "graph-lam-pilots", progress=False)
    seconds["graph-lam-pilots"] = time.perf_counter() - start
    s = read_summary(path)
    results["pilots"] = {
        "mean_pct_of_perfect_csi_wmmse": s["pilots"],
        "per_size": [{k: r[k] for k in ("pilot_snr_db", "K", "M", "graph_lam_pct", "ls_wmmse_pct",
                                        "lmmse_wmmse_pct", "perfect_wmmse_sum_rate")}
                     for r in s["per_size"]],
        "train_seconds": s["train_seconds"],
    }  # fmt: skip
    print(f"pilots: {json.dumps(s['pilots'])}", flush=True)

    fed_cfg = FederatedBeamformConfig(pretrained=str(args.runs_dir / "graph-lam"))
    if args.quick:
        fed_cfg = dataclasses.replace(
            fed_cfg, fed=FedAvgConfig(rounds=2, local_steps=2, batch_size=8, lr=3e-4),
            stations=tuple(dataclasses.replace(st, train_samples=16, test_samples=16)
                           for st in fed_cfg.stations), pool_size=256, eval_every=0,
        )  # fmt: skip
    start = time.perf_counter()
    path = run_federated_finetuning(fed_cfg, args.runs_dir / "federated", overwrite=True,
                                    progress=False)  # fmt: skip
    seconds["federated"] = time.perf_counter() - start
    s = read_summary(path)
    results["federated"] = {
        k: s[k] for k in ("mean_pct_of_wmmse", "gain_over_pretrained_pp", "gain_over_local_pp",
                          "trainable_params", "uplink_bits_per_round", "backbone_unchanged")
    }  # fmt: skip
    results["federated"]["stations"] = [
        {k: r[k] for k in ("channel_model", "users", "antennas", "snr_db", "pretrained_pct",
                           "local_pct", "federated_pct")} for r in s["stations"]
    ]  # fmt: skip
    results["federated"]["rounds"] = fed_cfg.fed.rounds
    results["federated"]["local_steps"] = fed_cfg.fed.local_steps
    print(f"federated: {json.dumps(s['mean_pct_of_wmmse'])}", flush=True)

    record = {
        "benchmark": "beamforming_graph_lam",
        "quick": args.quick,
        "steps": steps,
        "eval_samples": samples,
        "machine": {
            "platform": platform.platform(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(),
        },  # fmt: skip
        "seconds": {**seconds, "total": time.perf_counter() - wall},
        **results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out} in {record['seconds']['total']:.0f} s")


if __name__ == "__main__":
    main()
