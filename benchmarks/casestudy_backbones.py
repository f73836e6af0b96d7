"""The case study with the pre-trained wireless backbone vs. the random-init backbone.

Runs (or resumes) the quick profile once per backbone into ``<runs-dir>/<backbone>`` and writes
their test NMSE, training loss and spectral efficiency side by side as JSON (default
``benchmarks/results/casestudy_backbones.json``)::

    .venv/bin/python benchmarks/casestudy_backbones.py --runs-dir runs/backbones
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from edgelam.experiments.casestudy import profile_config, run_casestudy
from edgelam.runs import read_summary

KEYS = ("nmse_db", "tail_train_loss", "se_ratio", "trainable_params", "total_params")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--backbones", nargs="+", default=["edgelam-wireless", "random"])
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/backbones"))
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/casestudy_backbones.json")
    )
    args = parser.parse_args()
    table: dict[str, dict[str, dict]] = {}
    findings = {}
    for backbone in args.backbones:
        cfg = dataclasses.replace(profile_config(args.profile), backbone=backbone)
        path = run_casestudy(cfg, args.runs_dir / backbone, progress=True)
        summary = read_summary(path)
        findings[backbone] = summary["findings"]
        for method, result in summary["methods"].items():
            table.setdefault(method, {})[backbone] = {k: result.get(k) for k in KEYS}
    for method, row in table.items():
        print(method.ljust(22), "  ".join(f"{b}: {v['nmse_db']:.2f} dB" for b, v in row.items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"profile": args.profile, "methods": table,
                                    "findings": findings}, indent=2) + "\n")  # fmt: skip
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
