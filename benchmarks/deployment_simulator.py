"""Simulated vs analytical latency of greedy deployments (docs/deployment_simulator.md).

For generated instances of 10, 20 and 50 nodes (seed 0) at loads 0.2, 0.3 and 0.5, a deployment
from :func:`edgelam.inference.greedy.solve_greedy` (local search capped at 150 evaluations, so
the deployment does not depend on the machine's speed) is simulated with processor-sharing and
with FCFS nodes, each with deterministic and with exponential work, and the simulated mean /
p95 / p99 latency is set against

* ``objective_s``: the analytical objective (critical path + M/G/1-PS congestion term);
* ``mg1_latency_s``: the Pollaczek-Khinchine (M/G/1-FCFS, deterministic work) estimate, which
  counts consecutive stages of one request on the same node as one job;
* ``merged_mg1_s`` (FCFS rows): the same estimate computed here independently, with the second
  moment of the work model simulated (``(sum tau)^2`` deterministic, ``(sum tau)^2 + sum tau^2``
  exponential).

    .venv/bin/python benchmarks/deployment_simulator.py

writes ``benchmarks/results/deployment_simulator.json`` (about 3 minutes of CPU).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from edgelam.inference.deployment import Deployment, evaluate, service_time
from edgelam.inference.greedy import solve_greedy
from edgelam.inference.instance import Instance, generate_instance
from edgelam.inference.simulator import simulate

DISCIPLINE_SERVICE = [("ps", "deterministic"), ("ps", "exponential"),
                      ("fcfs", "deterministic"), ("fcfs", "exponential")]  # fmt: skip
OUT = Path(__file__).parent / "results" / "deployment_simulator.json"


def merged_mg1_latency(inst: Instance, dep: Deployment, service: str) -> tuple[float, float]:
    """P-K estimate with runs of same-node stages merged into one visit, and the share of stage
    visits that such merging removes.

    Args:
        inst: The instance.
        dep: A routed deployment.
        service: ``"deterministic"`` or ``"exponential"`` (sets the merged second moment).

    Returns:
        ``(latency_s, merged_share)``.
    """
    n = len(inst.nodes)
    rho, second, visits = np.zeros(n), np.zeros(n), np.zeros(n)
    stage_visits = merged_visits = 0.0
    for d in inst.demands:
        f = inst.catalog.flows[d.flow]
        nodes = dep.routing[(d.flow, d.node)]
        readers = {s.id: [w.id for w in f.stages if s.id in w.inputs] for s in f.stages}
        jobs: list[list] = []  # [node, [taus]]
        job_of: dict[str, int] = {}
        for sid in f.topological_order():
            inputs = f.stage[sid].inputs
            tau = service_time(inst, d.flow, sid, nodes[sid])
            chained = len(inputs) == 1 and len(readers[inputs[0]]) == 1
            if chained and nodes[inputs[0]] == nodes[sid]:
                job_of[sid] = job_of[inputs[0]]
                jobs[job_of[sid]][1].append(tau)
            else:
                job_of[sid] = len(jobs)
                jobs.append([nodes[sid], [tau]])
        stage_visits += d.rate * len(f.stages)
        merged_visits += d.rate * len(jobs)
        for node, taus in jobs:
            total = sum(taus)
            m2 = total**2 + (sum(t * t for t in taus) if service == "exponential" else 0.0)
            rho[node] += d.rate * total
            second[node] += d.rate * m2
            visits[node] += d.rate
    waiting = sum(visits[k] * second[k] / (2 * (1 - rho[k])) for k in range(n) if visits[k])
    total_rate = sum(d.rate for d in inst.demands)
    ev = evaluate(inst, dep)
    return ev.latency_s + waiting / total_rate, 1 - merged_visits / stage_visits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[10, 20, 50])
    parser.add_argument("--loads", type=float, nargs="+", default=[0.2, 0.3, 0.5])
    parser.add_argument("--duration", type=float, default=3000.0)
    parser.add_argument("--warmup", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    rows = []
    for num_nodes in args.nodes:
        for load in args.loads:
            inst = generate_instance(num_nodes, seed=args.seed, load=load)
            t0 = time.perf_counter()
            dep = solve_greedy(inst, seed=args.seed, time_limit_s=300.0, max_evaluations=150)
            solve_s = time.perf_counter() - t0
            ev = evaluate(inst, dep)
            for discipline, service in DISCIPLINE_SERVICE:
                cpu = time.process_time()
                res = simulate(inst, dep, duration_s=args.duration, warmup_s=args.warmup,
                               seed=args.seed, service=service, discipline=discipline)  # fmt: skip
                cpu = time.process_time() - cpu
                mean = res.mean_latency_s
                merged, share = merged_mg1_latency(inst, dep, service)
                merged_error = (merged - mean) / mean
                if discipline == "ps":  # P-K is an FCFS formula
                    merged = merged_error = None
                row = {
                    "nodes": num_nodes, "load": load, "classes": len(inst.demands),
                    "discipline": discipline, "service": service, "deployment": dep.method,
                    "solve_s": round(solve_s, 2), "requests": res.requests_completed,
                    "sim_cpu_s": round(cpu, 2), "sim_wall_s": round(res.wall_s, 2),
                    "sim_mean_s": mean, "sim_mean_ci95_s": res.mean_latency_ci_s,
                    "sim_p50_s": res.p50_latency_s, "sim_p95_s": res.p95_latency_s,
                    "sim_p99_s": res.p99_latency_s,
                    "latency_no_queueing_s": ev.latency_s, "objective_s": ev.objective_s,
                    "mg1_latency_s": ev.mg1_latency_s, "merged_mg1_s": merged,
                    "objective_rel_error": res.objective_rel_error,
                    "mg1_rel_error": res.mg1_rel_error,
                    "merged_mg1_rel_error": merged_error,
                    "merged_visit_share": share,
                    "max_utilisation": max(ev.utilisation),
                    "utilisation_max_abs_error": res.utilisation_max_abs_error,
                }  # fmt: skip
                rows.append(row)
                print(
                    f"N={num_nodes:3d} load={load:.1f} {discipline:4s} {service:13s} sim "
                    f"{mean:.4f}+-{res.mean_latency_ci_s:.4f} p99 {res.p99_latency_s:.3f} | obj "
                    f"{ev.objective_s:.4f} ({res.objective_rel_error:+.1%}) mg1 "
                    f"{ev.mg1_latency_s:.4f} ({res.mg1_rel_error:+.1%}) merged "
                    f"{merged_error if merged_error is None else f'{merged_error:+.1%}'} | util "
                    f"err {res.utilisation_max_abs_error:.4f} | cpu {cpu:.1f}s",
                    flush=True,
                )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "benchmark": "deployment_simulator",
        "settings": {"duration_s": args.duration, "warmup_s": args.warmup, "seed": args.seed,
                     "instance_seed": args.seed, "greedy_max_evaluations": 150},
        "machine": {"python": platform.python_version(), "processor": platform.processor()},
        "rows": rows,
    }, indent=1))  # fmt: skip
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
