"""The diffusion deployment generator against greedy and exact, on held-out instances.

Instances of 10, 20 and 50 nodes (load drawn in the training range), seeds 10_000 + k, none of
which is a training instance (checked against the shipped checkpoint's dataset settings). Per
instance:

* ``diffusion``: the shipped checkpoint, 16 candidates x 10 denoising steps (the default);
* ``diffusion+polish``: the same, then 1 s of replica local search from the chosen candidate
  (the counterpart of DIFUSCO's 2-opt post-processing);
* ``diffusion-1step``: 16 candidates, one denoising step (a one-shot heatmap);
* ``random+repair``: 16 indicators drawn from the stationary Bernoulli with uniform scores,
  through the same repair, routing and replica rounds -- what the learned model adds over the
  decoding heuristic;
* ``greedy``: the greedy construction alone (``local_search=False``);
* ``greedy+ls``: greedy with its replica local search (default 20 s budget);
* ``exact``: CP-SAT (warm-started from greedy) with a time limit per size; its proven lower
  bound gives every method's gap, ``(J - bound) / J``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/deployment_diffusion.py

writes ``benchmarks/results/deployment_diffusion.json`` (per-size means and per-instance rows,
plus the checkpoint's training cost).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgelam.inference.deployment import Deployment, evaluate
from edgelam.inference.diffusion import (
    generate_deployment,
    load_diffusion_checkpoint,
    shipped_diffusion_dir,
)
from edgelam.inference.diffusion_data import DatasetSpec, item_instance
from edgelam.inference.diffusion_repair import finalize_candidate
from edgelam.inference.exact import solve_exact
from edgelam.inference.greedy import solve_greedy
from edgelam.inference.instance import Instance, generate_instance
from edgelam.runs import library_versions

SIZES = {10: (5, 20.0), 20: (4, 30.0), 50: (3, 45.0)}  # nodes: (instances, exact time limit s)


def random_repair(inst: Instance, stationary: float, samples: int, seed: int) -> Deployment:
    """``samples`` random indicators through the diffusion decoder's repair; the best one."""
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    s, n = len(inst.catalog.services), len(inst.nodes)
    best = None
    for _ in range(samples):
        dep, ev = finalize_candidate(inst, rng.random((s, n)) < stationary, rng.random((s, n)))
        key = (not ev.feasible, ev.objective_s)
        if best is None or key < best[0]:
            best = (key, dep)
    dep = best[1]
    dep.info = {"solve_time_s": time.perf_counter() - start}
    return dep


def _mean(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r[key] is not None]
    return float(np.mean(values)) if values else None


def run(out: Path, sizes: dict[int, tuple[int, float]]) -> dict[str, Any]:
    torch.set_num_threads(1)
    ckpt = shipped_diffusion_dir()
    model, diffusion, card = load_diffusion_checkpoint(ckpt)
    training = json.loads((ckpt / "training.json").read_text())
    spec = DatasetSpec(**{**training["dataset"]["spec"],
                          "load_range": tuple(training["dataset"]["spec"]["load_range"])})  # fmt: skip
    train_names = {
        json.dumps(item_instance(spec, i).to_dict()["nodes"])
        for i in range(training["dataset"]["instances"])
    }
    lo, hi = spec.load_range
    rows = []
    for nodes, (count, limit) in sizes.items():
        for k in range(count):
            seed = 10_000 + 100 * nodes + k
            load = float(np.random.default_rng(seed).uniform(lo, hi))
            inst = generate_instance(nodes, seed=seed, load=load)
            assert json.dumps(inst.to_dict()["nodes"]) not in train_names, "held-out = training"
            methods: dict[str, Deployment] = {}
            t = time.perf_counter()
            methods["diffusion"] = generate_deployment(
                model, diffusion, inst, samples=16, steps=10, seed=k
            )
            methods["diffusion"].info["solve_time_s"] = time.perf_counter() - t
            t = time.perf_counter()
            methods["diffusion+polish"] = generate_deployment(
                model, diffusion, inst, samples=16, steps=10, seed=k, polish_s=1.0
            )
            methods["diffusion+polish"].info["solve_time_s"] = time.perf_counter() - t
            t = time.perf_counter()
            methods["diffusion-1step"] = generate_deployment(
                model, diffusion, inst, samples=16, steps=1, seed=k
            )
            methods["diffusion-1step"].info["solve_time_s"] = time.perf_counter() - t
            methods["random+repair"] = random_repair(inst, diffusion.stationary, 16, seed=k)
            t = time.perf_counter()
            methods["greedy"] = solve_greedy(inst, local_search=False, seed=k)
            methods["greedy"].info["solve_time_s"] = time.perf_counter() - t
            t = time.perf_counter()
            methods["greedy+ls"] = solve_greedy(inst, seed=k)
            methods["greedy+ls"].info["solve_time_s"] = time.perf_counter() - t
            methods["exact"] = solve_exact(inst, time_limit_s=limit, workers=1, seed=k)
            bound = float(methods["exact"].info["lower_bound_s"])
            row = {"nodes": nodes, "seed": seed, "load": round(load, 3), "bound_s": bound,
                   "exact_status": methods["exact"].info["status"],
                   "exact_source": methods["exact"].info.get("source"), "methods": {}}  # fmt: skip
            for name, dep in methods.items():
                ev = evaluate(inst, dep)
                row["methods"][name] = {
                    "objective_s": ev.objective_s if ev.feasible else None,
                    "feasible": ev.feasible,
                    "solve_time_s": round(float(dep.info["solve_time_s"]), 4),
                    "gap_to_bound": (ev.objective_s - bound) / ev.objective_s
                    if ev.feasible and bound > 0
                    else None,
                    "replicas": ev.instances,
                }
            best = min(m["objective_s"] for m in row["methods"].values() if m["feasible"])
            for m in row["methods"].values():
                m["ratio_to_best"] = m["objective_s"] / best if m["feasible"] else None
            rows.append(row)
            print(nodes, seed, {n: (round(m["objective_s"] or -1, 4), m["solve_time_s"])
                                for n, m in row["methods"].items()}, flush=True)  # fmt: skip
    summary: dict[str, Any] = {}
    for nodes in sizes:
        sub = [r for r in rows if r["nodes"] == nodes]
        summary[str(nodes)] = {}
        for name in sub[0]["methods"]:
            ms = [r["methods"][name] for r in sub]
            ok = [m for m in ms if m["feasible"]]
            summary[str(nodes)][name] = {
                "instances": len(ms),
                "feasible_rate": len(ok) / len(ms),
                "mean_objective_s": _mean(ok, "objective_s"),
                "mean_ratio_to_best": _mean(ok, "ratio_to_best"),
                "mean_gap_to_bound": _mean(ok, "gap_to_bound"),
                "mean_solve_time_s": float(np.mean([m["solve_time_s"] for m in ms])),
            }
        summary[str(nodes)]["exact_time_limit_s"] = sizes[nodes][1]
        summary[str(nodes)]["exact_status"] = [r["exact_status"] for r in sub]
    result = {
        "benchmark": "deployment_diffusion",
        "checkpoint": {
            "parameters": card["parameters"],
            "bytes": card["bytes"],
            "sha256": card["sha256"],
            "diffusion": card["diffusion"],
            "denoiser": card["denoiser"],
        },  # fmt: skip
        "training": training,
        "summary": summary,
        "instances": rows,
        "machine": {"platform": platform.platform(), "torch_threads": torch.get_num_threads()},
        "versions": library_versions("torch", "ortools"),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "deployment_diffusion.json")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="one instance per size, short limits")
    args = parser.parse_args()
    sizes = {n: (1, 5.0) for n in SIZES} if args.quick else SIZES
    start = time.perf_counter()
    result = run(args.out, sizes)
    for nodes, methods in result["summary"].items():
        for name, m in methods.items():
            if isinstance(m, dict):
                print(f"N={nodes:>3} {name:<16} feasible {m['feasible_rate']:.2f} ratio "
                      f"{m['mean_ratio_to_best'] or float('nan'):.4f} gap "
                      f"{m['mean_gap_to_bound'] if m['mean_gap_to_bound'] is not None else float('nan'):.4f} "
                      f"time {m['mean_solve_time_s']:.3f} s")  # fmt: skip
    print(f"wall {time.perf_counter() - start:.0f} s -> {args.out}")


if __name__ == "__main__":
    main()
