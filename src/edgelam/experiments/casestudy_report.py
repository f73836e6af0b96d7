"""Case-study report: summary.json, results.md, fig4.png and nmse_vs_speed.png.

Everything here is computed from the run directory's files alone (``config.json``,
``metrics.jsonl``, ``methods/*.json``), so a report can be redrawn at any time::

    python -c "from edgelam.experiments.casestudy_report import write_report; write_report('runs/casestudy')"
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from edgelam.runs import RunDir, read_config, read_metrics

__all__ = ["write_report", "findings"]

LABELS = {
    "local_llm4cp": "local LLM4CP (1 server)",
    "local_gru": "local GRU",
    "local_rnn": "local RNN",
    "local_lstm": "local LSTM",
    "local_transformer": "local Transformer",
    "central_llm4cp": "centralised LLM4CP (pooled)",
    "no_prediction": "no prediction",
    "ar": "AR (PAD-style)",
    "prony": "vector Prony",
}


def label(method: str) -> str:
    """Human-readable method name."""
    if method.startswith("fedlam_n"):
        return f"federated LAM, N={method.removeprefix('fedlam_n')}"
    return LABELS.get(method, method)


def _train_curves(records: list[dict[str, Any]]) -> dict[str, tuple[list[int], list[float]]]:
    curves: dict[str, tuple[list[int], list[float]]] = {}
    for r in records:
        if r.get("kind") == "train":
            xs, ys = curves.setdefault(r["method"], ([], []))
            xs.append(r["iteration"])
            ys.append(r["train_loss"])
    return curves


def _tail_loss(ys: list[float]) -> float:
    """Mean training loss over the last 10% of rounds (at least one): less noisy than the last."""
    k = max(1, len(ys) // 10)
    return float(np.mean(ys[-k:]))


def findings(methods: dict[str, dict[str, Any]], tail_loss: dict[str, float]) -> dict[str, Any]:
    """Which of the paper's claims hold in this run (each with the numbers behind it)."""
    feds = sorted((int(m.removeprefix("fedlam_n")), m) for m in methods if m.startswith("fedlam_n"))
    out: dict[str, Any] = {}
    if not feds:
        return out
    best_n, best = feds[-1]
    for base in ("local_llm4cp", "local_gru", "local_rnn"):
        if base in methods:
            out[f"fed_n{best_n}_train_loss_below_{base}"] = tail_loss[best] < tail_loss[base]
            out[f"fed_n{best_n}_test_nmse_below_{base}"] = (
                methods[best]["nmse_db"] < methods[base]["nmse_db"]
            )
    if len(feds) >= 2:
        loss = [tail_loss[m] for _, m in feds]
        nmse = [methods[m]["nmse_db"] for _, m in feds]
        out["servers"] = [n for n, _ in feds]
        out["train_loss_by_servers"] = loss
        out["test_nmse_db_by_servers"] = nmse
        out["more_servers_lower_train_loss"] = bool(np.all(np.diff(loss) < 0))
        out["more_servers_lower_test_nmse"] = bool(np.all(np.diff(nmse) < 0))
    if len(feds) >= 3:
        gains = -np.diff([methods[m]["nmse_db"] for _, m in feds])
        out["test_nmse_gain_db_between_steps"] = gains.tolist()
        out["saturates"] = bool(gains[-1] < gains[0])
    return out


def write_report(run_dir: str | Path, *, wall_seconds: float | None = None) -> dict[str, Any]:
    """(Re)write summary.json, results.md and the two plots; returns the summary."""
    run = RunDir.open(run_dir)
    config = read_config(run.path)
    records = read_metrics(run.path)
    methods = {}
    for path in sorted((run.path / "methods").glob("*.json")):
        methods[path.stem] = json.loads(path.read_text())
    curves = _train_curves(records)
    tail = {m: _tail_loss(ys) for m, (_, ys) in curves.items()}
    for m, result in methods.items():
        result["tail_train_loss"] = tail.get(m)
    summary = {
        "profile": config.get("profile"),
        "wall_seconds": wall_seconds,
        "train_compute_seconds": sum(m.get("train_compute_seconds", 0.0) for m in methods.values()),
        "methods": methods,
        "findings": findings(methods, tail),
    }
    run.write_summary(summary)
    (run.path / "results.md").write_text(_markdown(summary, config))
    _plot_fig4(run, curves)
    _plot_speed(run, methods)
    return summary


def _fmt_params(result: dict[str, Any]) -> str:
    if not result.get("total_params"):
        return "-"
    return f"{result['trainable_params'] / 1e3:,.1f}k / {result['total_params'] / 1e6:.2f}M"


def _markdown(summary: dict[str, Any], config: dict[str, Any]) -> str:
    methods = summary["methods"]
    order = sorted(methods, key=lambda m: methods[m]["nmse_db"])
    groups = next(iter(methods.values()))["nmse_db_by_group"] if methods else {}
    head = ["method", "trainable / total params", "train loss (last 10%)", "test NMSE [dB]",
            *[f"{g} km/h" for g in groups], "SE ratio", "uplink Mbit", "downlink Mbit"]  # fmt: skip
    lines = [
        f"# Case study ({summary['profile']} profile): federated LAM channel prediction",
        "",
        f"Channel: {config['channel']['model']} ({config['channel']['duplex']}), "
        f"{config['channel']['num_samples']} users, test SNR {config['test_snr_db']} dB; "
        f"{config['fed']['rounds']} rounds x {config['fed']['local_steps']} local steps; "
        f"each server holds {config['fraction_per_server']:.0%} of the training users.",
        "",
        *_backbone_line(methods),
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for m in order:
        r = methods[m]
        loss = r.get("tail_train_loss")
        row = [label(m), _fmt_params(r), "-" if loss is None else f"{loss:.4f}",
               f"{r['nmse_db']:.2f}",
               *[f"{r['nmse_db_by_group'].get(g, math.nan):.2f}" for g in groups],
               f"{r['se_ratio']:.3f}", f"{r['uplink_bits'] / 1e6:.1f}",
               f"{r['downlink_bits'] / 1e6:.1f}"]  # fmt: skip
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Findings (the paper's claims, as measured here):", ""]
    for key, value in summary["findings"].items():
        lines.append(f"- `{key}`: {value}")
    if summary.get("wall_seconds") is not None:
        lines.append(f"\nWall time of the last invocation: {summary['wall_seconds']:.0f} s.")
    return "\n".join(lines) + "\n"


def _backbone_line(methods: dict[str, dict[str, Any]]) -> list[str]:
    for r in methods.values():
        if r.get("backbone"):
            state = "" if r.get("pretrained_backbone") else ", random init (no pretrained weights)"
            return [f"LAM backbone: {r['backbone']}{state}.", ""]
    return []


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_fig4(run: RunDir, curves: dict[str, tuple[list[int], list[float]]]) -> None:
    if not curves:
        return
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    colors = plt.get_cmap("tab20").colors
    for i, (method, (xs, ys)) in enumerate(curves.items()):
        style = "-" if method.startswith("fedlam") else "--"
        ax.plot(
            xs, ys, style, lw=1.6, label=label(method), color=colors[(2 * i) % 20 + (2 * i) // 20]
        )
    ax.set_yscale("log")
    ax.set_xlabel("training iterations")
    ax.set_ylabel("training loss (NMSE)")
    ax.set_title("Federated LAM for channel prediction (cf. paper Fig. 4)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(run.plot_path("fig4"), dpi=130)
    plt.close(fig)


def _plot_speed(run: RunDir, methods: dict[str, dict[str, Any]]) -> None:
    if not methods:
        return
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    colors = plt.get_cmap("tab20").colors
    for i, (method, r) in enumerate(methods.items()):
        groups = r["nmse_db_by_group"]
        xs = [np.mean([float(v) for v in g.split("-")]) for g in groups]
        style = (
            "o-" if method.startswith("fedlam") else ("s--" if method.startswith("local") else "x:")
        )
        ax.plot(xs, list(groups.values()), style, lw=1.2, ms=4, label=label(method),
                color=colors[(2 * i) % 20 + (2 * i) // 20])  # fmt: skip
    ax.set_xlabel("user speed [km/h]")
    ax.set_ylabel("test NMSE [dB]")
    ax.set_title("Test NMSE per speed group")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(run.plot_path("nmse_vs_speed"), dpi=130)
    plt.close(fig)
