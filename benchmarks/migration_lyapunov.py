"""Mobility-aware microservice migration by drift-plus-penalty: V sweeps, baselines, offline gap.

For each trace (highway, high-speed train, random waypoint; seed 0, 1-s slots):

1. ``main``: K = 4 users (flows image-qa, speech-qa, image-caption, image-qa) on the trace's
   default servers (8 / 10 / 9 A100 edge servers), T = 900 slots; the controller with the exact
   per-slot solver for V in {0.01, 0.1, 1, 10, 100, 1000}, and never / follow / myopic. Budget:
   25% of always-follow's time-average cost. Reported per run: time-average latency, migration
   cost vs the budget (met yes/no, margin, the O(1/T) term Q(T)/T), mean and max backlog, and
   the explicit O(V) backlog bound. ``lyapunov-tight``: V = 1 and 10 with the virtual queue
   run against 90% of the budget (the usual epsilon-tightening for a finite horizon), judged
   against the real budget.
2. ``alternating``: on the same systems, the alternating solver against the exact one -- the
   ratio of per-slot objectives at every 5th slot of the V = 1 run (same states), and a full
   V = 1 run with the alternating solver.
3. ``small``: K = 2 users on 5 servers (highway, train) or a 2 x 2 grid (waypoint), T = 300
   slots: the same sweep plus the offline optimum with full knowledge of the trace (exact
   Pareto-front DP, and the Lagrangian DP with bisection and its dual bound); for each online
   run, the offline optimum at the run's own total cost (the gap at equal cost).
4. ``large``: K = 24 users on the highway (8 servers, 8^24 placements: exact is out of reach),
   T = 300, alternating solver, V in {0.1, 1, 10, 100}: time per slot and the trade-off.

    .venv/bin/python benchmarks/migration_lyapunov.py

writes ``benchmarks/results/migration_lyapunov.json`` and ``.png`` (latency vs migration cost
across V for each trace, with the budget line).
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgelam.inference.migration.baselines import (
    FollowUser,
    MyopicLatency,
    NeverMigrate,
    offline_lagrangian,
    pareto_dp,
    transition_tables,
)
from edgelam.inference.migration.lyapunov import (
    LyapunovPolicy,
    Trajectory,
    queue_bound,
    simulate,
    solve_alternating,
    solve_exact,
)
from edgelam.inference.migration.model import MigrationSystem, SystemConfig
from edgelam.inference.migration.traces import make_trace

RESULTS = Path(__file__).parent / "results"
TRACES = ("highway", "train", "waypoint")
V_MAIN = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)
FRACTION = 0.25
TIGHT_V = (1.0, 10.0)
TIGHTEN = 0.1
SEED = 0


def _run(system: MigrationSystem, tr: Trajectory, budget: float, V: float | None) -> dict:
    out = {**tr.summary(budget), "V": V}
    if V is not None:
        q_end = max(float(tr.queue_kj[-1] + tr.cost_kj[-1]) - budget, 0.0)
        out.update(final_queue_kj=q_end, one_over_t_term_kj=q_end / system.T,
                   queue_bound_kj=queue_bound(system, V)["Q_max_kj"])  # fmt: skip
    return out


def sweep(system: MigrationSystem, Vs: tuple[float, ...], solver: str = "auto") -> dict[str, Any]:
    """Baselines, then the controller for every V, at 25% of always-follow's cost."""
    t0 = time.perf_counter()
    follow = simulate(system, FollowUser())
    budget = FRACTION * float(follow.cost_kj.mean())
    trs = {"follow": follow, "never": simulate(system, NeverMigrate()),
           "myopic": simulate(system, MyopicLatency(solver))}  # fmt: skip
    runs = [_run(system, tr, budget, None) for tr in trs.values()]
    for V in Vs:
        tr = simulate(system, LyapunovPolicy(V, budget, solver))
        trs[f"V={V:g}"] = tr
        runs.append(_run(system, tr, budget, V))
    for V in TIGHT_V:  # the queue run against a tightened budget, judged against the real one
        tr = simulate(system, LyapunovPolicy(V, (1 - TIGHTEN) * budget, solver))
        trs[f"tight V={V:g}"] = tr
        runs.append({**_run(system, tr, budget, V), "policy": "lyapunov-tight"})
    lyap = [r for r in runs if r["policy"] == "lyapunov"]
    slope = np.polyfit(np.log10([r["V"] for r in lyap[-3:]]),
                       np.log10([max(r["mean_queue_kj"], 1e-9) for r in lyap[-3:]]), 1)[0]  # fmt: skip
    return {"budget_kj": budget, "runs": runs, "seconds": time.perf_counter() - t0,
            "queue_loglog_slope_last3": float(slope), "trajectories": trs}  # fmt: skip


def system_info(system: MigrationSystem) -> dict[str, Any]:
    return {"users": system.K, "servers": system.N, "slots": system.T, "flows": system.flows,
            "server_kinds": sorted(set(system.kinds)),
            "handovers_per_user": system.trace.handovers().tolist(),
            "state_mb": (system.state_bytes / 1e6).round(1).tolist(),
            "queue_bound_terms": {k: v for k, v in queue_bound(system, 1.0).items()
                                  if k != "Q_max_kj"}}  # fmt: skip


def alternating_vs_exact(system: MigrationSystem, traj: Trajectory, budget: float) -> dict:
    """Objective ratios on the states of the exact V = 1 run, and a full alternating run."""
    ratios, t_exact, t_alt = [], 0.0, 0.0
    q = traj.queue_kj
    for t in range(0, system.T, 5):
        prev = system.initial() if t == 0 else traj.placements[t - 1]
        p = system.slot(t, prev)
        a = time.perf_counter()
        e = solve_exact(p, 1.0, q[t])
        b = time.perf_counter()
        alt = solve_alternating(p, 1.0, q[t])
        c = time.perf_counter()
        t_exact, t_alt = t_exact + b - a, t_alt + c - b
        ratios.append(alt.objective / e.objective)
    ratios = np.array(ratios)
    full = simulate(system, LyapunovPolicy(1.0, budget, "alternating"))
    return {"slots_compared": int(ratios.size), "mean_ratio": float(ratios.mean()),
            "max_ratio": float(ratios.max()), "fraction_optimal": float(np.mean(ratios < 1 + 1e-9)),
            "exact_ms_per_slot": 1e3 * t_exact / ratios.size,
            "alternating_ms_per_slot": 1e3 * t_alt / ratios.size,
            "full_run_V1_alternating": full.summary(budget)}  # fmt: skip


def small_instance(name: str) -> dict[str, Any]:
    kw = {"grid": 2} if name == "waypoint" else {"num_servers": 5}
    system = MigrationSystem(make_trace(name, 2, 300, SEED, **kw), SystemConfig())
    res = sweep(system, (0.1, 1.0, 10.0, 100.0))
    budget, trs = res["budget_kj"], res.pop("trajectories")
    L, C, states, s0 = transition_tables(system)
    t0 = time.perf_counter()
    exact = pareto_dp(L, C, states, s0, budget * system.T)
    t1 = time.perf_counter()
    lag = offline_lagrangian(L, C, states, s0, budget * system.T)
    t2 = time.perf_counter()
    T = system.T
    res["offline"] = {
        "pareto_dp": {"latency_ms": exact.latency_ms / T, "cost_kj": exact.cost_kj / T,
                      "seconds": t1 - t0},
        "lagrangian_dp": {"latency_ms": lag.latency_ms / T, "cost_kj": lag.cost_kj / T,
                          "dual_lower_bound_ms": lag.lower_bound_ms / T, "multiplier": lag.multiplier,
                          "seconds": t2 - t1},
    }  # fmt: skip
    for r in res["runs"]:
        key = r["policy"] if r["V"] is None else f"V={r['V']:g}"
        key = f"tight {key}" if r["policy"] == "lyapunov-tight" else key
        tr = trs[key]
        same = pareto_dp(L, C, states, s0, float(tr.cost_kj.sum()))
        r["offline_at_same_cost_ms"] = same.latency_ms / T
        r["gap_at_same_cost_pct"] = 100 * (r["latency_ms"] / (same.latency_ms / T) - 1)
        r["gap_to_offline_at_budget_pct"] = 100 * (r["latency_ms"] / (exact.latency_ms / T) - 1)
    res["system"] = system_info(system)
    return res


def large_instance() -> dict[str, Any]:
    system = MigrationSystem(make_trace("highway", 24, 300, SEED))
    t0 = time.perf_counter()
    res = sweep(system, (0.1, 1.0, 10.0, 100.0), solver="alternating")
    res.pop("trajectories")
    res["ms_per_slot_per_policy"] = 1e3 * (time.perf_counter() - t0) / (9 * system.T)
    res["system"] = system_info(system)
    return res


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
    marks = {"never": "s", "follow": "^", "myopic": "D"}
    for ax, name in zip(axes, TRACES, strict=True):
        main = results["traces"][name]["main"]
        lyap = [r for r in main["runs"] if r["policy"] == "lyapunov"]
        ax.plot([r["cost_kj"] for r in lyap], [r["latency_ms"] for r in lyap], "o-",
                label="drift-plus-penalty")  # fmt: skip
        for r in lyap:
            ax.annotate(f"V={r['V']:g}", (r["cost_kj"], r["latency_ms"]), fontsize=7,
                        textcoords="offset points", xytext=(4, 3))  # fmt: skip
        for r in main["runs"]:
            if r["policy"] in marks:
                ax.plot(r["cost_kj"], r["latency_ms"], marks[r["policy"]], ms=8, label=r["policy"])
        ax.axvline(main["budget_kj"], color="gray", ls="--", label="budget")
        s = main["system"]
        ax.set(title=f"{name}: K={s['users']}, N={s['servers']}, T={s['slots']}",
               xlabel="time-average migration cost (kJ/slot)", ylabel="time-average latency (ms)")  # fmt: skip
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    start = time.perf_counter()
    results: dict[str, Any] = {
        "what": "Lyapunov drift-plus-penalty microservice migration: V sweeps, baselines, "
                "alternating vs exact per-slot solver, gap to the offline optimum",
        "settings": {"seed": SEED, "budget": f"{FRACTION} x always-follow's time-average cost",
                     "V_main": list(V_MAIN), "slot_s": 1.0,
                     "units": "latency ms (per request, mean over users); cost kJ per slot; "
                              "V in kJ^2/ms"},
        "platform": {"python": platform.python_version(), "machine": platform.machine(),
                     "note": "2 shared CPU cores; timings are indicative"},
        "traces": {},
    }  # fmt: skip
    for name in TRACES:
        system = MigrationSystem(make_trace(name, 4, 900, SEED))
        main_res = sweep(system, V_MAIN)
        trs = main_res.pop("trajectories")
        alt = alternating_vs_exact(system, trs["V=1"], main_res["budget_kj"])
        main_res["system"] = system_info(system)
        results["traces"][name] = {"main": main_res, "alternating": alt,
                                   "small": small_instance(name)}  # fmt: skip
        print(f"{name}: done at {time.perf_counter() - start:.0f} s", flush=True)
    results["large_highway_K24"] = large_instance()
    results["seconds"] = time.perf_counter() - start
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "migration_lyapunov.json"
    out.write_text(json.dumps(results, indent=1))
    plot(results, RESULTS / "migration_lyapunov.png")
    print(f"wrote {out} in {results['seconds']:.0f} s")


if __name__ == "__main__":
    main()
