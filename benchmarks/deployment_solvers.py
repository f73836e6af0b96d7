"""Deployment solvers on generated instances: objective, gap to the proven bound, solve time,
and what sharing microservices saves over deploying each LAM whole.

For 10-, 20- and 50-node instances (``generate_instance(N, seed)``, all six LAMs, load 0.3) it
runs: the greedy construction alone, greedy with local search, the monolithic baseline (greedy
and CP-SAT), the exact CP-SAT solver (2 workers, time limits 60 / 120 / 300 s, warm start
included) and, when a diffusion checkpoint is available, the diffusion generator. Every
objective is the true one (``evaluate``); ``gap_to_bound`` is measured against the exact
solver's proven lower bound of the shared problem.

Sharing savings compare the exact shared deployment with the exact monolithic one (memory,
instances, utilisation, objective), the monolithic deployment with its copies merged per
microservice (same routing and latency: pure de-duplication), and the static footprints (one
instance of every needed microservice vs one copy of every requested LAM). A memory sweep on
the 10-node instance scales every node's memory down until the monolithic deployment no
longer fits while the shared one still does.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/deployment_solvers.py

writes ``benchmarks/results/deployment_solvers.json`` (about 20 minutes on 2 busy cores).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
import ortools
import torch

from edgelam.inference.cpsat import InfeasibleDeploymentError
from edgelam.inference.deployment import Deployment, evaluate
from edgelam.inference.exact import solve_exact
from edgelam.inference.greedy import solve_greedy
from edgelam.inference.instance import Instance, generate_instance
from edgelam.inference.monolithic import as_shared, lam_memory_mb, solve_monolithic
from edgelam.progress import progress_bar

CASES = [  # nodes, seeds, time limits (s)
    (10, (0, 1), {"exact": 60.0, "monolithic-exact": 20.0, "greedy": 10.0}),
    (20, (0, 1), {"exact": 120.0, "monolithic-exact": 40.0, "greedy": 15.0}),
    (50, (0,), {"exact": 300.0, "monolithic-exact": 90.0, "greedy": 30.0}),
]
MEMORY_SCALES = (1.0, 0.5, 0.35, 0.3, 0.25)
WORKERS = 2


def record(
    inst: Instance, dep: Deployment | None, seconds: float, error: str = ""
) -> dict[str, Any]:
    """The figures of one solver run (``error`` when it raised)."""
    if dep is None:
        return {"feasible": False, "error": error, "solve_time_s": seconds}
    ev = evaluate(inst, dep)
    used = [n for n, r in enumerate(ev.utilisation) if r > 0]
    out = {
        "objective_s": ev.objective_s if math.isfinite(ev.objective_s) else None,
        "latency_s": ev.latency_s if math.isfinite(ev.latency_s) else None,
        "congestion_s": ev.congestion_s if math.isfinite(ev.congestion_s) else None,
        "feasible": ev.feasible,
        "solve_time_s": seconds,
        "memory_total_gib": ev.memory_total_mb / 1024,
        "instances": ev.instances,
        "nodes_used": len(used),
        "max_utilisation": max(ev.utilisation),
        "mean_utilisation_used": sum(ev.utilisation[n] for n in used) / max(1, len(used)),
    }
    for key in ("status", "lower_bound_s", "gap", "source", "evaluations", "stopped"):
        if key in dep.info:
            out[key] = dep.info[key]
    if not ev.feasible:
        out["violations"] = ev.violations[:5]
    return out


def timed(inst: Instance, fn, **kw) -> tuple[Deployment | None, dict[str, Any]]:
    start = time.perf_counter()
    try:
        dep = fn(inst, **kw)
    except (InfeasibleDeploymentError, FileNotFoundError, ValueError) as err:
        return None, record(inst, None, time.perf_counter() - start, f"{type(err).__name__}: {err}")
    return dep, record(inst, dep, time.perf_counter() - start)


def diffusion(inst: Instance, seed: int) -> dict[str, Any]:
    try:
        from edgelam.inference.diffusion import solve_diffusion
    except ImportError as err:
        return {"skipped": f"no diffusion module ({err})"}
    start = time.perf_counter()
    try:
        dep = solve_diffusion(inst, seed=seed)
    except Exception as err:  # a missing or unusable checkpoint: report, do not stop the run
        return {"skipped": f"{type(err).__name__}: {err}"}
    return record(inst, dep, time.perf_counter() - start)


def run_instance(inst: Instance, limits: dict[str, float], seed: int) -> dict[str, Any]:
    runs: dict[str, Any] = {}
    _, runs["greedy-construction"] = timed(inst, solve_greedy, local_search=False, seed=seed)
    _, runs["greedy"] = timed(inst, solve_greedy, seed=seed, time_limit_s=limits["greedy"])
    _, runs["monolithic"] = timed(inst, solve_monolithic, seed=seed, time_limit_s=limits["greedy"])
    mono, runs["monolithic-exact"] = timed(
        inst, solve_monolithic, method="exact", workers=WORKERS, seed=seed,
        time_limit_s=limits["monolithic-exact"],
    )  # fmt: skip
    exact, runs["exact"] = timed(inst, solve_exact, workers=WORKERS, seed=seed, time_limit_s=limits["exact"])  # fmt: skip
    runs["diffusion"] = diffusion(inst, seed)
    bound = runs["exact"].get("lower_bound_s")
    for r in runs.values():
        if bound and r.get("objective_s"):
            r["gap_to_bound"] = (r["objective_s"] - bound) / r["objective_s"]
    return {"runs": runs, "sharing": sharing(inst, exact, mono)}


def sharing(inst: Instance, exact: Deployment | None, mono: Deployment | None) -> dict[str, Any]:
    """What the shared deployment saves over the monolithic one."""
    flows = sorted({d.flow for d in inst.demands})
    needed = {s for f in flows for s in inst.catalog.flows[f].services()}
    out: dict[str, Any] = {
        "static_one_of_each_service_gib": sum(inst.catalog.services[s].memory_mb for s in needed)
        / 1024,  # fmt: skip
        "static_one_copy_of_each_lam_gib": sum(lam_memory_mb(inst, f) for f in flows) / 1024,
    }
    if mono is not None:
        ev_m, ev_merged = evaluate(inst, mono), evaluate(inst, as_shared(mono))
        out["monolithic_gib"] = ev_m.memory_total_mb / 1024
        out["monolithic_merged_gib"] = ev_merged.memory_total_mb / 1024
        out["monolithic_instances"] = ev_m.instances
        out["monolithic_merged_instances"] = ev_merged.instances
    if exact is not None and mono is not None:
        ev_s = evaluate(inst, exact)
        out["exact_vs_monolithic"] = {
            "memory_saved": 1 - ev_s.memory_total_mb / ev_m.memory_total_mb,
            "instances": [ev_s.instances, ev_m.instances],
            "objective_ms": [1e3 * ev_s.objective_s, 1e3 * ev_m.objective_s],
            "latency_ms": [1e3 * ev_s.latency_s, 1e3 * ev_m.latency_s],
            "max_utilisation": [max(ev_s.utilisation), max(ev_m.utilisation)],
            "nodes_used": [
                sum(r > 0 for r in ev_s.utilisation),
                sum(r > 0 for r in ev_m.utilisation),
            ],  # fmt: skip
        }
    return out


def scaled_memory(inst: Instance, factor: float) -> Instance:
    nodes = [dataclasses.replace(n, memory_mb=n.memory_mb * factor) for n in inst.nodes]
    return Instance(nodes, inst.links, inst.demands, inst.catalog, inst.access_uplink_bps,
                    inst.access_downlink_bps, inst.max_utilisation, f"{inst.name}-mem{factor:g}")  # fmt: skip


def memory_sweep(seed: int) -> list[dict[str, Any]]:
    base = generate_instance(10, seed=seed)
    rows = []
    for factor in MEMORY_SCALES:
        inst = scaled_memory(base, factor)
        row: dict[str, Any] = {"memory_scale": factor, "infeasibility_report": inst.infeasibility_report()}  # fmt: skip
        _, row["greedy"] = timed(inst, solve_greedy, seed=seed, time_limit_s=10.0)
        _, row["exact"] = timed(inst, solve_exact, workers=WORKERS, seed=seed, time_limit_s=30.0)
        _, row["monolithic"] = timed(inst, solve_monolithic, seed=seed, time_limit_s=10.0)
        _, row["monolithic-exact"] = timed(inst, solve_monolithic, method="exact", workers=WORKERS, seed=seed, time_limit_s=20.0)  # fmt: skip
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/deployment_solvers.json"))  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="10 nodes, one seed, short limits")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cases = [(10, (0,), {"exact": 20.0, "monolithic-exact": 10.0, "greedy": 5.0})] if args.quick else CASES  # fmt: skip
    start = time.perf_counter()
    results: dict[str, Any] = {
        "config": {"cases": [[n, list(s), lim] for n, s, lim in cases], "cp_sat_workers": WORKERS,
                   "memory_scales": [] if args.quick else list(MEMORY_SCALES), "load": 0.3},
        "environment": {"python": platform.python_version(), "ortools": ortools.__version__,
                        "cpu_count": os.cpu_count(), "machine": platform.machine()},
        "instances": [],
    }  # fmt: skip
    total = sum(len(seeds) for _, seeds, _ in cases) + (0 if args.quick else 1)
    with progress_bar("deployment solvers", total=total) as advance:
        for n, seeds, limits in cases:
            for seed in seeds:
                inst = generate_instance(n, seed=seed)
                entry = {"name": inst.name, "nodes": n, "seed": seed, "classes": len(inst.demands),
                         "total_rate": sum(d.rate for d in inst.demands), "limits_s": limits}  # fmt: skip
                entry.update(run_instance(inst, limits, seed))
                results["instances"].append(entry)
                advance(1)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(results, indent=1))
        if not args.quick:
            results["memory_sweep"] = memory_sweep(0)
            advance(1)
    results["wall_s"] = time.perf_counter() - start
    args.out.write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out} in {results['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
