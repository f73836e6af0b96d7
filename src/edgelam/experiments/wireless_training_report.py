"""Split FedFT vs. FedAvg over the same cell: run every scheme, compare them from their files.

:func:`run_comparison` trains, into ``out/<name>/``, split FedFT under each uplink allocation
policy (``split-fedft-equal``, ``split-fedft-optimal``, ``split-fedft-lyapunov``) and the two
FedAvg baselines (``fedavg-full``, ``fedavg-lora``, latency-optimal split), all from one
:class:`~edgelam.experiments.wireless_training.WirelessTrainingConfig`. :func:`write_comparison`
then reads only the run directories and writes ``comparison.json``, ``comparison.md``,
``loss_vs_time.png`` (validation NMSE vs. simulated wall-clock time) and ``loss_vs_bits.png``
(vs. cumulative transmitted bits, up + down), so it can be redrawn at any time::

    python -c "from edgelam.experiments.wireless_training_report import write_comparison; \\
               write_comparison('runs/wireless-compare')"
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from edgelam.config import to_dict
from edgelam.experiments.wireless_training import WirelessTrainingConfig, run_wireless_training
from edgelam.runs import RunDir, atomic_write_text, read_metrics, read_summary

__all__ = ["COMPARISON_RUNS", "run_comparison", "write_comparison"]

#: Run name -> (scheme, allocation policy).
COMPARISON_RUNS: dict[str, tuple[str, str]] = {
    "split-fedft-equal": ("split-fedft", "equal"),
    "split-fedft-optimal": ("split-fedft", "latency_optimal"),
    "split-fedft-lyapunov": ("split-fedft", "lyapunov"),
    "fedavg-full": ("fedavg-full", "latency_optimal"),
    "fedavg-lora": ("fedavg-lora", "latency_optimal"),
}
LABELS = {
    "split-fedft-equal": "split FedFT, equal split",
    "split-fedft-optimal": "split FedFT, latency-optimal split",
    "split-fedft-lyapunov": "split FedFT, Lyapunov scheduler",
    "fedavg-full": "FedAvg, full fine-tuning",
    "fedavg-lora": "FedAvg, LoRA",
}


def run_comparison(
    cfg: WirelessTrainingConfig,
    out: str | Path,
    *,
    resume: bool = True,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Run every scheme of :data:`COMPARISON_RUNS` from ``cfg`` into ``out/<name>/``, then
    :func:`write_comparison`. ``cfg.scheme`` and ``cfg.allocation.policy`` are set per run;
    finished runs of the same config are kept (``resume``), unfinished ones start over.

    Raises:
        FileExistsError: ``out`` holds a comparison of another config (without ``overwrite``).
    """
    out = Path(out)
    base = dataclasses.replace(cfg, scheme="split-fedft")
    try:
        RunDir.create(out, to_dict(base), resume=resume, overwrite=overwrite)
    except ValueError as err:
        raise FileExistsError(
            f"{out} holds a comparison with a different config; use --overwrite or another --out"
        ) from err
    for name, (scheme, policy) in COMPARISON_RUNS.items():
        allocation = dataclasses.replace(cfg.allocation, policy=policy)
        sub = dataclasses.replace(cfg, scheme=scheme, allocation=allocation)
        run_wireless_training(sub, out / name, resume=resume, overwrite=overwrite,
                              progress=progress)  # fmt: skip
    write_comparison(out)
    return out


def _curve(path: Path) -> tuple[list[float], list[float], list[float]]:
    """``(simulated_time_s, cumulative_bits, val_nmse_db)`` at every validation point."""
    points = [r for r in read_metrics(path) if r.get("val_nmse") is not None]
    return ([r["simulated_time_s"] for r in points], [r["cumulative_bits"] for r in points],
            [r["val_nmse_db"] for r in points])  # fmt: skip


def _row(summary: dict[str, Any]) -> dict[str, Any]:
    keys = ("scheme", "policy", "rounds", "uplink_bits_per_round", "downlink_bits_per_round",
            "bits_per_iteration", "uplink_bits", "downlink_bits", "total_bits",
            "simulated_time_s", "mean_round_latency_s", "time_to_target_s", "bits_to_target",
            "iterations_to_target", "final_train_loss", "final_val_nmse", "final_val_nmse_db",
            "test_nmse_db", "energy_j", "device_memory_bytes")  # fmt: skip
    return {k: summary[k] for k in keys} | {
        "trainable_params": summary["model"]["trainable_params"]
    }


def _latency_saving(out: Path) -> dict[str, Any] | None:
    """Round-by-round latency of the latency-optimal vs. the equal split (same demands)."""
    equal, optimal = out / "split-fedft-equal", out / "split-fedft-optimal"
    if not ((equal / "summary.json").exists() and (optimal / "summary.json").exists()):
        return None
    eq_records = [r for r in read_metrics(equal) if r["kind"] == "round"]
    op_records = [r for r in read_metrics(optimal) if r["kind"] == "round"]
    eq, op = [r["latency_s"] for r in eq_records], [r["latency_s"] for r in op_records]
    total_eq, total_op = sum(eq), sum(op)
    return {
        "equal_s": total_eq,
        "optimal_s": total_op,
        "saved_s": total_eq - total_op,
        "saved_fraction": (total_eq - total_op) / total_eq,
        "rounds_optimal_not_slower": sum(o <= e * (1 + 1e-9) for o, e in zip(op, eq, strict=True)),
        "rounds": len(eq),
        "max_round_saving_fraction": max((e - o) / e for o, e in zip(op, eq, strict=True)),
        "equal_energy_j": sum(r["energy_total_j"] for r in eq_records),
        "optimal_energy_j": sum(r["energy_total_j"] for r in op_records),
    }


def _to_level(path: Path, level: float) -> dict[str, Any] | None:
    """Simulated time, cumulative bits and device energy when the validation NMSE first is
    ``<= level`` (at an evaluation point; the initial one counts), else None."""
    energy = 0.0
    for r in read_metrics(path):
        energy += r.get("energy_total_j", 0.0)
        if r.get("val_nmse") is not None and r["val_nmse"] <= level:
            return {"time_s": r["simulated_time_s"], "bits": r["cumulative_bits"],
                    "energy_j": energy, "iteration": r["iteration"]}  # fmt: skip
    return None


def write_comparison(out: str | Path, levels: tuple[float, ...] = (0.3,)) -> dict[str, Any]:
    """Write ``comparison.json``, ``comparison.md`` and the two plots from the run files.

    Args:
        out: the comparison directory (its runs in ``out/<name>/``).
        levels: validation NMSE levels (linear) to report time, bits and energy to, besides
            the runs' ``target_loss``.

    Returns:
        The comparison (as written to ``comparison.json``).
    """
    out = Path(out)
    names = [n for n in COMPARISON_RUNS if (out / n / "summary.json").exists()]
    if not names:
        raise FileNotFoundError(f"{out}: no finished run among {list(COMPARISON_RUNS)}")
    summaries = {n: read_summary(out / n) for n in names}
    target = summaries[names[0]]["target_loss"]
    comparison: dict[str, Any] = {
        "target_loss": target,
        "num_devices": summaries[names[0]]["num_devices"],
        "iterations": summaries[names[0]]["iterations"],
        "runs": {n: _row(s) for n, s in summaries.items()},
        "latency_saving_optimal_vs_equal": _latency_saving(out),
        "lyapunov": (summaries.get("split-fedft-lyapunov") or {}).get("lyapunov"),
        "to_level": {
            f"{level:g}": {n: _to_level(out / n, level) for n in names}
            for level in sorted({*levels, target}, reverse=True)
        },
    }
    split = summaries.get("split-fedft-optimal")
    if split:
        comparison["device_memory_vs_split"] = {
            n: s["device_memory_bytes"] / split["device_memory_bytes"] for n, s in summaries.items()
        }
    atomic_write_text(out / "comparison.json", json.dumps(comparison, indent=2, sort_keys=True))
    atomic_write_text(out / "comparison.md", _markdown(comparison))
    _plots(out, names, comparison["target_loss"])
    return comparison


def _fmt(x: float | None, scale: float = 1.0, digits: int = 2) -> str:
    return "not reached" if x is None else f"{x / scale:.{digits}f}"


def _markdown(c: dict[str, Any]) -> str:
    target_db = 10 * math.log10(c["target_loss"])
    lines = [
        f"# Split FedFT vs. FedAvg: {c['num_devices']} devices, {c['iterations']} local "
        f"iterations each, target validation NMSE {c['target_loss']} ({target_db:.2f} dB)",
        "",
        "| run | Mbit/round up | Mbit/round down | Mbit per local iteration (all devices, up+down)"
        " | mean round latency [s] | simulated time [s] | time to target [s] | Mbit to target"
        " | final val NMSE [dB] | test NMSE [dB] | device energy [J] | device memory [MB] |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in c["runs"].items():
        lines.append(
            f"| {LABELS.get(name, name)} | {_fmt(r['uplink_bits_per_round'], 1e6, 1)} | "
            f"{_fmt(r['downlink_bits_per_round'], 1e6, 1)} | {_fmt(r['bits_per_iteration'], 1e6, 1)}"
            f" | {_fmt(r['mean_round_latency_s'])} | {_fmt(r['simulated_time_s'], 1, 1)} | "
            f"{_fmt(r['time_to_target_s'], 1, 1)} | {_fmt(r['bits_to_target'], 1e6, 0)} | "
            f"{r['final_val_nmse_db']:.2f} | {r['test_nmse_db']:.2f} | {r['energy_j']:.1f} | "
            f"{r['device_memory_bytes'] / 1e6:.1f} |"
        )
    for level, reached in c["to_level"].items():
        lines += ["", f"To validation NMSE {level} ({10 * math.log10(float(level)):.2f} dB):", "",
                  "| run | local iterations | simulated time [s] | Mbit (up+down) | device energy"
                  " [J] |", "|---|---|---|---|---|"]  # fmt: skip
        for name, hit in reached.items():
            cells = ["not reached"] * 4 if hit is None else [
                str(hit["iteration"]), f"{hit['time_s']:.1f}", f"{hit['bits'] / 1e6:.0f}",
                f"{hit['energy_j']:.1f}"]  # fmt: skip
            lines.append(f"| {LABELS.get(name, name)} | {' | '.join(cells)} |")
    saving = c["latency_saving_optimal_vs_equal"]
    if saving:
        lines += ["", f"**Latency-optimal vs. equal uplink split** (same demands, same link "
                  f"states): {saving['optimal_s']:.1f} s instead of {saving['equal_s']:.1f} s, "
                  f"{saving['saved_s']:.1f} s saved ({100 * saving['saved_fraction']:.1f} %); "
                  f"not slower in {saving['rounds_optimal_not_slower']} of {saving['rounds']} "
                  f"rounds, at most {100 * saving['max_round_saving_fraction']:.1f} % in one "
                  f"round. Device energy: {saving['optimal_energy_j']:.1f} J instead of "
                  f"{saving['equal_energy_j']:.1f} J (equalised completion times keep strong "
                  "devices transmitting longer at fixed power)."]  # fmt: skip
    ly = c["lyapunov"]
    if ly:
        ratios = ", ".join(f"{x:.3f}" for x in ly["budget_ratio"])
        lines += ["", f"**Lyapunov scheduler**: per-device average energy per round / budget "
                  f"({ly['energy_budget_j'][0]:g} J): {ratios}; all budgets met: "
                  f"{ly['all_budgets_met']} (max ratio {ly['max_budget_ratio']:.3f}; the "
                  "time-average overshoot is bounded by Q_k(T)/T: "
                  f"{max(ly['queue_bound_j']):.4f} J)."]  # fmt: skip
    if "device_memory_vs_split" in c:
        ratios = ", ".join(f"{LABELS.get(n, n)} {x:.2f}x"
                           for n, x in c["device_memory_vs_split"].items())  # fmt: skip
        lines += ["", f"**Device memory relative to split FedFT**: {ratios}."]
    return "\n".join(lines)


def _plots(out: Path, names: list[str], target: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {n: _curve(out / n) for n in names}
    styles = {"split-fedft-equal": ("tab:blue", "--"), "split-fedft-optimal": ("tab:blue", "-"),
              "split-fedft-lyapunov": ("tab:green", "-"), "fedavg-full": ("tab:red", "-"),
              "fedavg-lora": ("tab:orange", "-")}  # fmt: skip
    for index, xlabel, file in [(0, "simulated wall-clock time [s]", "loss_vs_time"),
                                (1, "cumulative transmitted bits (uplink + downlink)",
                                 "loss_vs_bits")]:  # fmt: skip
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for n, curve in curves.items():
            color, line = styles.get(n, (None, "-"))
            xs, ys = curve[index], curve[2]
            if index == 1:  # log axis: the starting point (0 bits) is left out
                xs, ys = xs[1:], ys[1:]
            ax.plot(xs, ys, line, marker="o", markersize=3, color=color, label=LABELS.get(n, n))
        ax.axhline(10 * math.log10(target), color="grey", lw=0.8, ls=":", label="target")
        if index == 1:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("validation NMSE [dB]")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / f"{file}.png", dpi=130)
        plt.close(fig)
