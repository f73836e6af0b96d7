"""A migration run: one trace, the drift-plus-penalty controller over a sweep of ``V``, the
baselines and (on small instances) the offline optimum, written as a run directory.

``config.json`` holds the :class:`MigrationConfig`; ``metrics.jsonl`` one record per policy and
slot (``policy``, ``V``, ``t``, ``latency_ms``, ``cost_kj``, ``queue_kj``, ``migrations``,
``moved_mb``, ``stored_mb``, ``max_utilisation``); ``summary.json`` the time averages per policy,
the budget check and the queue bounds; the plots (:func:`plot_run`) are drawn from those files:
``tradeoff.png`` (latency vs migration cost across ``V``, with the budget line),
``v_sweep.png`` (time-average latency and queue backlog vs ``V``) and ``queue.png`` (``Q(t)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edgelam.config import ConfigError, option, to_dict
from edgelam.inference.migration.baselines import (
    FollowUser,
    MyopicLatency,
    NeverMigrate,
    OfflineResult,
    offline_lagrangian,
    pareto_dp,
    transition_tables,
)
from edgelam.inference.migration.lyapunov import (
    LyapunovPolicy,
    Trajectory,
    queue_bound,
    simulate,
)
from edgelam.inference.migration.model import MigrationSystem, SystemConfig
from edgelam.inference.migration.traces import make_trace
from edgelam.progress import progress_bar
from edgelam.runs import RunDir, read_metrics, read_summary

__all__ = ["MigrationConfig", "plot_run", "run_migration"]


@dataclass
class MigrationConfig:
    """A migration experiment (``edgelam migrate run``)."""

    trace: Literal["highway", "train", "waypoint"] = option("highway", "mobility scenario")
    users: int = option(4, "K: mobile users, each running one LAM chain")
    slots: int = option(300, "T: number of slots")
    slot_s: float = option(1.0, "slot length, s")
    seed: int = option(0, "seed of the trace")
    V: tuple[float, ...] = option((0.1, 1.0, 10.0, 100.0), "drift-plus-penalty weights to sweep "
                                  "(kJ^2 per ms: V x latency[ms] vs Q[kJ] x cost[kJ])",
                                  cli=False)  # fmt: skip
    budget: float | None = option(None, "migration budget C_bar, kJ per slot [default: "
                                  "budget_fraction x always-follow's time-average cost]")  # fmt: skip
    budget_fraction: float = option(0.25, "default budget as a fraction of always-follow's cost")
    tighten: float = option(0.0, "epsilon-tightening: the virtual queue runs against (1 - "
                            "tighten) x budget, so that a finite run meets the budget itself")  # fmt: skip
    solver: Literal["auto", "exact", "alternating"] = option(
        "auto", "per-slot solver: exact enumeration, alternating optimisation, or auto (exact up "
        "to max_enumeration placements)")  # fmt: skip
    max_enumeration: int = option(50_000, "largest N^K the auto solver enumerates")
    baselines: bool = option(True, "also run never-migrate, always-follow and myopic")
    offline: Literal["auto", "off", "pareto", "lagrangian"] = option(
        "auto", "offline optimum at the budget: pareto (exact DP), lagrangian (DP + bisection), "
        "auto (pareto when N^K <= offline_max_states), off")  # fmt: skip
    offline_max_states: int = option(64, "largest N^K for the offline optimum")
    system: SystemConfig = field(default_factory=SystemConfig,
                                 metadata={"help": "the edge system's constants"})  # fmt: skip

    def __post_init__(self) -> None:
        for name in ("users", "slots", "max_enumeration", "offline_max_states"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if not self.V or any(not (v >= 0 and math.isfinite(v)) for v in self.V):
            raise ConfigError(f"V: need one or more finite values >= 0, got {list(self.V)}")
        if self.budget is not None and not self.budget >= 0:
            raise ConfigError(f"budget: must be >= 0 kJ per slot, got {self.budget}")
        if not 0 <= self.tighten < 1:
            raise ConfigError(f"tighten: must be in [0, 1), got {self.tighten}")
        if not self.budget_fraction > 0:
            raise ConfigError(f"budget_fraction: must be > 0, got {self.budget_fraction}")
        if not self.slot_s > 0:
            raise ConfigError(f"slot_s: must be > 0, got {self.slot_s}")


def _final_backlog(tr: Trajectory, budget: float) -> float:
    return max(float(tr.queue_kj[-1] + tr.cost_kj[-1]) - budget, 0.0)


def _log(run: RunDir, tr: Trajectory, name: str, V: float | None) -> None:
    for t in range(tr.latency_ms.size):
        run.log({"policy": name, "V": V, "t": t, "latency_ms": tr.latency_ms[t],
                 "cost_kj": tr.cost_kj[t], "queue_kj": tr.queue_kj[t],
                 "migrations": int(tr.migrations[t]), "moved_mb": tr.moved_mb[t],
                 "stored_mb": tr.stored_mb[t], "max_utilisation": tr.max_utilisation[t]})  # fmt: skip


def _offline(cfg: MigrationConfig, system: MigrationSystem, budget: float) -> OfflineResult | None:
    states = system.N**system.K
    if cfg.offline == "off" or (cfg.offline == "auto" and states > cfg.offline_max_states):
        return None
    L, C, st, s0 = transition_tables(system, max_states=max(states, cfg.offline_max_states))
    if cfg.offline == "lagrangian":
        return offline_lagrangian(L, C, st, s0, budget * system.T)
    try:
        return pareto_dp(L, C, st, s0, budget * system.T)
    except ConfigError:
        if cfg.offline == "pareto":
            raise
        return offline_lagrangian(L, C, st, s0, budget * system.T)


def run_migration(cfg: MigrationConfig, out: str | Path, *, overwrite: bool = False,
                  progress: bool = True) -> Path:  # fmt: skip
    """Run the experiment of ``cfg`` into run directory ``out`` and draw its plots.

    Args:
        cfg: The experiment.
        out: Run directory to create.
        overwrite: Replace an existing run at ``out``.
        progress: Show a progress bar.

    Returns:
        The run directory.

    Raises:
        FileExistsError: ``out`` holds a run and ``overwrite`` is not set.
        ConfigError: invalid settings (trace, system, solver limits).
    """
    trace = make_trace(cfg.trace, cfg.users, cfg.slots, cfg.seed, slot_s=cfg.slot_s)
    system = MigrationSystem(trace, cfg.system)
    n_placements = system.N**system.K
    if cfg.solver == "exact" and n_placements > cfg.max_enumeration:
        raise ConfigError(f"solver: exact enumeration of {system.N}^{system.K} placements exceeds "
                          f"max_enumeration = {cfg.max_enumeration}")  # fmt: skip
    run = RunDir.create(out, config=to_dict(cfg), overwrite=overwrite)
    policies = 1 + (2 if cfg.baselines else 0) + len(cfg.V)
    runs: list[dict[str, Any]] = []
    with progress_bar(f"migrate {cfg.trace}", policies * system.T, enabled=progress) as advance:
        follow = simulate(system, FollowUser(), advance=advance)
        budget = cfg.budget if cfg.budget is not None else cfg.budget_fraction * float(
            follow.cost_kj.mean())  # fmt: skip
        baselines = [follow]
        if cfg.baselines:
            baselines += [simulate(system, NeverMigrate(), advance=advance),
                          simulate(system, MyopicLatency(cfg.solver, cfg.max_enumeration),
                                   advance=advance)]  # fmt: skip
        for tr in baselines:
            _log(run, tr, tr.policy, None)
            runs.append({**tr.summary(budget), "V": None})
        for V in cfg.V:
            queue_budget = (1 - cfg.tighten) * budget
            policy = LyapunovPolicy(V, queue_budget, cfg.solver, cfg.max_enumeration)
            tr = simulate(system, policy, advance=advance)
            _log(run, tr, "lyapunov", V)
            q_end = _final_backlog(tr, queue_budget)
            runs.append({**tr.summary(budget), "V": V, "final_queue_kj": q_end,
                         "one_over_t_term_kj": q_end / system.T,
                         "queue_bound_kj": queue_bound(system, V)["Q_max_kj"]})  # fmt: skip
    offline = _offline(cfg, system, budget)
    summary_off = None
    if offline is not None:
        tr = simulate(system, None, placements=offline.placements)
        _log(run, tr, "offline", None)
        summary_off = {**tr.summary(budget), "V": None, "policy": "offline",
                       "method": offline.method, "exact": offline.exact,
                       "lower_bound_latency_ms": offline.lower_bound_ms / system.T}  # fmt: skip
        runs.append(summary_off)
    run.write_summary({
        "trace": cfg.trace, "users": system.K, "servers": system.N, "slots": system.T,
        "slot_s": cfg.slot_s, "flows": system.flows, "server_kinds": system.kinds,
        "handovers_per_user": trace.handovers().tolist(), "budget_kj": budget,
        "budget_source": "given" if cfg.budget is not None else
        f"{cfg.budget_fraction:g} x always-follow", "queue_budget_kj": (1 - cfg.tighten) * budget,
        "runs": runs, "offline": summary_off,
    })  # fmt: skip
    plot_run(run.path)
    return run.path


def plot_run(path: str | Path) -> list[Path]:
    """Draw ``tradeoff.png``, ``v_sweep.png`` and ``queue.png`` from a run directory's
    ``metrics.jsonl`` and ``summary.json``; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    summary = read_summary(path)
    budget = summary["budget_kj"]
    runs = summary["runs"]
    lyap = sorted((r for r in runs if r["policy"] == "lyapunov"), key=lambda r: r["V"])
    others = [r for r in runs if r["policy"] != "lyapunov"]
    markers = {"never": "s", "follow": "^", "myopic": "D", "offline": "*"}
    title = f"{summary['trace']}: K = {summary['users']}, N = {summary['servers']}, " \
            f"T = {summary['slots']}"  # fmt: skip
    files = []

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    ax.plot([r["cost_kj"] for r in lyap], [r["latency_ms"] for r in lyap], "o-",
            label="drift-plus-penalty")  # fmt: skip
    for r in lyap:
        ax.annotate(f"V={r['V']:g}", (r["cost_kj"], r["latency_ms"]), textcoords="offset points",
                    xytext=(4, 4), fontsize=8)  # fmt: skip
    for r in others:
        ax.plot(r["cost_kj"], r["latency_ms"], markers.get(r["policy"], "x"), ms=9,
                label=r["policy"])  # fmt: skip
    ax.axvline(budget, color="gray", ls="--", label=f"budget {budget:.3g} kJ/slot")
    ax.set(xlabel="time-average migration cost (kJ/slot)",
           ylabel="time-average latency (ms)", title=title)  # fmt: skip
    ax.legend(fontsize=8)
    fig.tight_layout()
    files.append(path / "tradeoff.png")
    fig.savefig(files[-1], dpi=120)
    plt.close(fig)

    if lyap:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
        vs = [max(r["V"], 1e-12) for r in lyap]
        a1.semilogx(vs, [r["latency_ms"] for r in lyap], "o-", label="drift-plus-penalty")
        for r in others:
            a1.axhline(r["latency_ms"], ls=":", color="C" + str(1 + others.index(r)),
                       label=r["policy"])  # fmt: skip
        a1.set(xlabel="V", ylabel="time-average latency (ms)", title=title)
        a1.legend(fontsize=8)
        a2.loglog(vs, [max(r["mean_queue_kj"], 1e-9) for r in lyap], "o-", label="mean Q")
        a2.loglog(vs, [max(r["cost_kj"], 1e-9) for r in lyap], "s-", label="cost (kJ/slot)")
        a2.axhline(budget, color="gray", ls="--", label="budget")
        a2.set(xlabel="V", ylabel="kJ", title="queue backlog O(V); cost vs budget")
        a2.legend(fontsize=8)
        fig.tight_layout()
        files.append(path / "v_sweep.png")
        fig.savefig(files[-1], dpi=120)
        plt.close(fig)

    queues: dict[float, list[tuple[int, float]]] = {}
    for m in read_metrics(path):
        if m["policy"] == "lyapunov":
            queues.setdefault(m["V"], []).append((m["t"], m["queue_kj"]))
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for V in sorted(queues):
        t, q = np.array(sorted(queues[V])).T
        ax.plot(t * summary["slot_s"], q, label=f"V={V:g}")
    ax.set(xlabel="time (s)", ylabel="virtual queue Q(t) (kJ)", title=title)
    if queues:
        ax.legend(fontsize=8)
    fig.tight_layout()
    files.append(path / "queue.png")
    fig.savefig(files[-1], dpi=120)
    plt.close(fig)
    return files
