"""Split FedFT vs. FedAvg-full vs. FedAvg-LoRA over one simulated cell (10 devices, quick profile).

Runs (or resumes) :func:`~edgelam.experiments.wireless_training_report.run_comparison` into
``--runs-dir`` and writes its comparison, with the wall time per run, to
``benchmarks/results/split_fedft_comparison.json``. It also measures, for the paper-size
backbone (GPT-2 small's first 6 layers, d = 768; random init when its weights are not cached:
memory does not depend on the values), the device-side training memory of each scheme on one
mini-batch: what a device must hold when the backbone is large::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/split_fedft_comparison.py
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never the hub: random init when absent
import torch
from torch.utils.data import TensorDataset

from edgelam.config import to_dict
from edgelam.experiments.wireless_training import SCHEMES, wireless_profile
from edgelam.experiments.wireless_training_report import COMPARISON_RUNS, run_comparison
from edgelam.models.adapters import build_llm4cp
from edgelam.models.backbones import BackboneConfig
from edgelam.models.layers import seeded
from edgelam.network import activation_bytes, parameter_bytes
from edgelam.runs import read_summary
from edgelam.training.split_fedft import SplitFedFT, SplitFedFTConfig, dataset_batches
from edgelam.training.split_roles import _training_memory


def memory_at_scale(batch_size: int, seed: int = 0) -> dict[str, dict[str, int]]:
    """Device training memory (bytes) of each scheme with the GPT-2-small (6 layers) backbone."""
    base = wireless_profile("quick").llm4cp
    out = {}
    x = torch.randn(batch_size, base.history_slots, 2 * base.num_subcarriers)
    y = torch.randn(batch_size, base.future_slots, 2 * base.num_subcarriers)
    for scheme in SCHEMES:
        trainable = "full" if scheme == "fedavg-full" else "lora"
        cfg = dataclasses.replace(base, backbone=BackboneConfig(name="gpt2", num_layers=6),
                                  trainable=trainable, pretrained_parts=("backbone",))  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # GPT-2 weights absent offline: random init
            model, info = build_llm4cp(cfg, seed=seed)
        if scheme == "split-fedft":
            sf = SplitFedFTConfig(iterations=1, batch_size=batch_size, embedding_grad=True)
            algo = SplitFedFT(sf, model, [dataset_batches(TensorDataset(x, y), batch_size, 0, 0)])
            algo.run_iteration()
            out[scheme] = algo.memory["devices"][0] | {"server": algo.memory["server"]}
        else:
            params = [p for p in model.parameters() if p.requires_grad]
            with seeded(0):
                acts = activation_bytes(model, x)
            out[scheme] = _training_memory(parameter_bytes(model), params, "adam",
                                           SplitFedFTConfig(), acts)  # fmt: skip
        out[scheme]["total_params"] = info["total_params"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick", choices=["quick", "tiny"])
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/split-fedft-comparison"))
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/split_fedft_comparison.json")
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = wireless_profile(args.profile)
    path = run_comparison(cfg, args.runs_dir, progress=True)
    comparison = json.loads((path / "comparison.json").read_text())
    wall = {n: read_summary(path / n)["wall_seconds"] for n in COMPARISON_RUNS}
    scale = memory_at_scale(cfg.batch_size)
    print((path / "comparison.md").read_text())
    for scheme, m in scale.items():
        print(f"GPT-2-small-6 backbone, {scheme}: device memory {m['total_bytes'] / 1e6:.1f} MB")
    result = {
        "profile": args.profile,
        "threads": args.threads,
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} "
        "torch thread(s)",
        "runs_dir": str(args.runs_dir),
        "wall_seconds_per_run": wall,
        "comparison": comparison,
        "device_memory_gpt2_small_6_layers": scale,
        "config": to_dict(cfg),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(f"wrote {args.out}; plots in {path}")


if __name__ == "__main__":
    main()
