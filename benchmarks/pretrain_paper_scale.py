"""Paper-scale pre-training on a GPU, then zero-shot / few-shot transfer to held-out configurations.

Runs the real commands, in order, and writes one JSON file:

1. the ``paper`` corpus (45 configurations x 512 users, F in {32, 48, 64}; held out: CDL-B,
   UMi LOS/NLOS), generated or reused, timed;
2. a short probe run (``edgelam pretrain --profile paper --steps PROBE``) to measure seconds per
   step on this machine, then the real run with as many steps as fit ``--budget-s``
   (``edgelam pretrain --profile paper --steps N``);
3. ``benchmarks/pretrain_transfer.py`` on the new checkpoint (zero-shot, few-shot LoRA on 10 %,
   random-init, GRU, AR, no prediction).

TF32 matrix products are allowed (``NVIDIA_TF32_OVERRIDE`` is left alone; the pre-training
command runs in float32 as on CPU). Example, on a GPU machine::

    PYTHONPATH=src python benchmarks/pretrain_paper_scale.py --budget-s 240 \\
        --json benchmarks/results/pretrain_paper_scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(args: list[str]) -> float:
    """Run a command (output streamed), fail loudly; return its wall-clock seconds."""
    print("+", " ".join(args), flush=True)
    start = time.perf_counter()
    subprocess.run(args, check=True, cwd=ROOT)
    return time.perf_counter() - start


def seconds_per_step(run_dir: Path, skip: int = 5) -> float:
    """Median training seconds per step of a run, after ``skip`` warm-up steps."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r["seconds"] for r in records if r.get("kind") == "train"][skip:]
    return statistics.median(steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--profile", default="paper", help="pre-training profile (tiny: a smoke test)"
    )
    parser.add_argument("--budget-s", type=float, default=240.0, help="training time budget")
    parser.add_argument("--probe-steps", type=int, default=40)
    parser.add_argument("--transfer-steps", type=int, default=400, help="few-shot steps")
    parser.add_argument("--out", type=Path, default=Path("runs/pretrain-paper"))
    parser.add_argument(
        "--json", type=Path, default=Path("benchmarks/results/pretrain_paper_scale.json")
    )
    args = parser.parse_args()
    import torch

    from edgelam.pretrain.corpus import build_corpus, build_held_out
    from edgelam.pretrain.train import pretrain_profile

    torch.set_float32_matmul_precision("high")
    result: dict = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}

    def save() -> None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")

    cfg = pretrain_profile(args.profile)
    start = time.perf_counter()
    files = build_corpus(cfg.corpus, cfg.cache_dir, progress=False)
    held = build_held_out(cfg.corpus, cfg.cache_dir, progress=False)
    result["corpus"] = {
        "seconds": time.perf_counter() - start,
        "train_files": len(files),
        "held_out_files": len(held),
        "bytes": sum(p.stat().st_size for p in [*files, *held]),
    }
    save()

    py = [sys.executable, "-m", "edgelam.cli", "pretrain", "--profile", args.profile, "--quiet"]
    probe = args.out.with_name(args.out.name + "-probe")
    big = "1000000"
    run([*py, "--steps", str(args.probe_steps), "--eval-every", big, "--checkpoint-every", big,
         "--out", str(probe), "--no-resume", "--overwrite"])  # fmt: skip
    per_step = seconds_per_step(probe)
    steps = max(10, int(args.budget_s / (1.15 * per_step)) // 10 * 10)
    result["probe"] = {"steps": args.probe_steps, "seconds_per_step": per_step, "chosen": steps}
    save()

    wall = run([*py, "--steps", str(steps), "--eval-every", str(max(10, steps // 4)),
                "--checkpoint-every", str(max(10, steps // 4)), "--out", str(args.out),
                "--no-resume", "--overwrite"])  # fmt: skip
    summary = json.loads((args.out / "summary.json").read_text())
    result["pretrain"] = {"wall_seconds": wall, **summary}
    save()

    transfer_json = args.json.with_name(args.json.stem + "_transfer.json")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    result["transfer_seconds"] = run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "pretrain_transfer.py"),
            "--checkpoint",
            str(args.out),
            "--cache-dir",
            cfg.cache_dir,
            "--steps",
            str(args.transfer_steps),
            "--device",
            device,
            "--out",
            str(transfer_json),
        ]  # fmt: skip
    )
    result["transfer"] = json.loads(transfer_json.read_text())
    save()
    print(f"wrote {args.json}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
