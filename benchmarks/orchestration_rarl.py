"""Robust (RARL) vs non-robust PPO vs baselines for microservice orchestration, 10 nodes.

Trains, on the seed-0 10-node instance (``load = 0.4``, replicated deployment, default MDP:
0.25 s slots, 48-slot episodes, rate budget 0.3, 2 forced moves per slot):

* ``ppo``  -- the protagonist on nominal demand only (``robust = false``),
* ``rarl`` -- the protagonist against a learned adversary, alternating 5 + 5 PPO iterations,

with the same number of protagonist iterations, then evaluates them and the four baselines
(random, round-robin, least-loaded, greedy-latency) under nominal, random, the RARL adversary,
the worst structured attack and (``--br-iterations``) a PPO best-response adversary trained
against each router. Records the training wall time of each run.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/orchestration_rarl.py

writes ``benchmarks/results/orchestration_rarl.json`` and ``orchestration_rarl.png``; the runs
go to ``--runs-dir`` (a finished run of the same config is reused, an interrupted one resumed).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path

import torch

from edgelam.config import to_dict
from edgelam.inference.orchestration.evaluate import evaluate_routers, plot_evaluation
from edgelam.inference.orchestration.policies import baseline_routers
from edgelam.inference.orchestration.rarl import (
    RARLConfig,
    best_response_trainer,
    load_run,
    train_rarl,
)
from edgelam.runs import read_summary

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=300, help="protagonist PPO iterations")
    parser.add_argument("--episodes", type=int, default=48, help="evaluation episodes per cell")
    parser.add_argument("--br-iterations", type=int, default=60,
                        help="best-response adversary iterations per router (0: skip)")  # fmt: skip
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/bench-orchestration"))
    parser.add_argument("--out", type=Path, default=RESULTS / "orchestration_rarl.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    base = RARLConfig(nodes=10, seed=0, iterations=args.iterations)
    timings, routers, adversaries = {}, dict(baseline_routers()), {}
    for name, robust in (("ppo", False), ("rarl", True)):
        cfg = dataclasses.replace(base, robust=robust)
        out = args.runs_dir / name
        start = time.perf_counter()
        train_rarl(cfg, out, progress=False)
        summary = read_summary(out)
        timings[name] = {"wall_s_this_call": time.perf_counter() - start,
                         "train_seconds_total": summary["train_seconds_total"],
                         "iterations": summary["iterations"],
                         "final_utility_last10": summary["final_utility_last10"]}  # fmt: skip
        print(name, timings[name], flush=True)
        _, sub, trainer = load_run(out)
        routers[name] = trainer.router.policy(deterministic=False)
        if robust:
            adversaries[name] = trainer.adversary.policy(deterministic=False)
    start = time.perf_counter()
    br = best_response_trainer(base, sub, args.br_iterations) if args.br_iterations else None
    result = evaluate_routers(sub, base.env, routers, adversaries, episodes=args.episodes,
                              seed=1234, best_response=br)  # fmt: skip
    eval_s = time.perf_counter() - start
    report = {
        "benchmark": "orchestration_rarl",
        "config": to_dict(base),
        "instance": {
            "nodes": sub.num_nodes,
            "groups": sub.num_groups,
            "components": sub.num_components,
            "placement": sub.placement,
            "node_kinds": [n.kind for n in sub.inst.nodes],
        },  # fmt: skip
        "training": timings,
        "evaluation_seconds": eval_s,
        "br_iterations": args.br_iterations,
        "learned_policies_sampled": True,
        **result,
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },  # fmt: skip
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    plot_evaluation(args.out, args.out.with_suffix(".png"))
    for r in result["rows"]:
        print(f"{r['policy']:15s} {r['demand']:17s} utility {r['utility']:8.3f} +- "
              f"{r['utility_ci95']:.3f}  latency {r['latency_s']:.3f} s  miss {r['miss_rate']:.3f}"
              f"  {r.get('attack', '')}")  # fmt: skip
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
