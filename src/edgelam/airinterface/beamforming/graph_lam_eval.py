"""Evaluating graph-LAM beamformers against WMMSE: sizes seen and unseen, and from pilots.

Every figure is a ratio of mean sum rates on the same test channels and noise powers:
``pct_of_wmmse = 100 * mean(R_model) / mean(R_WMMSE)``. Test sets are seeded by
``(seed, 7, K, M)`` (sizes) and ``(seed, 8, K, M, pilot SNR)`` (pilots), disjoint from the
training draws; 38.901 test channels come from pools generated with another seed than the
training pools. ``seen`` marks sizes with ``K`` in the training range and ``M`` among the
training antenna counts.

:func:`plot_size_generalisation` and :func:`plot_pilots` draw a run's figures from its
``metrics.jsonl`` alone.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from edgelam.airinterface.beamforming.baselines import (
    maximum_ratio_transmission,
    regularized_zero_forcing,
    wmmse,
    zero_forcing,
)
from edgelam.airinterface.beamforming.pilots import (
    channel_covariance,
    lmmse_estimate,
    ls_estimate,
    pilot_matrix,
    pilot_noise_power,
    transmit_pilots,
)
from edgelam.airinterface.beamforming.problem import sum_rate
from edgelam.runs import RunDir, read_metrics
from edgelam.seeding import derive_seed

__all__ = [
    "Validator",
    "evaluate_pilots",
    "evaluate_run",
    "evaluate_sizes",
    "plot_pilots",
    "plot_size_generalisation",
]

Precoder = Callable[[torch.Tensor, Any, Any], torch.Tensor]
_TEST_POOL = 2048  # single-user 38.901 channels per (model, M) in the test pools


def _test_sampler(cfg: Any) -> Any:
    from edgelam.airinterface.beamforming.graph_lam import ChannelSampler

    return ChannelSampler(min(cfg.pool_size, _TEST_POOL), derive_seed(cfg.seed, 99))


def _test_set(sampler: Any, model: str, K: int, M: int, samples: int, snr_db: Sequence[float],
              gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    H = sampler.sample(model, samples, K, M, gen)
    snr = snr_db[0] + (snr_db[1] - snr_db[0]) * torch.rand(samples, generator=gen)
    return H, 10 ** (-snr / 10)


def _mean_rate(H: torch.Tensor, W: torch.Tensor, s2: torch.Tensor) -> float:
    return float(sum_rate(H, W, s2).mean())


def evaluate_sizes(
    precoder: Precoder,
    sizes: Sequence[tuple[int, int]],
    *,
    sampler: Any,
    channel_model: str,
    snr_db: Sequence[float],
    samples: int,
    seed: int,
    seen: Callable[[int, int], bool] = lambda K, M: True,
    wmmse_max_iter: int = 500,
) -> list[dict[str, Any]]:
    """Sum rate of ``precoder`` per size as % of WMMSE (and of RZF, ZF, MRT for reference).

    Args:
        precoder: ``(H, power, noise_power) -> W``.
        sizes: ``(K, M)`` pairs.
        sampler: a :class:`~edgelam.airinterface.beamforming.graph_lam.ChannelSampler`.
        channel_model: the test channel model.
        snr_db: SNR range; each test instance draws one uniformly.
        samples: test instances per size.
        seed: test-set seed.
        seen: marks sizes seen in training.
        wmmse_max_iter: WMMSE iteration cap.

    Returns:
        One ``kind="eval"`` record per size: sum rates, ``pct_of_wmmse`` (and ``rzf_pct``,
        ``zf_pct`` (``K <= M``), ``mrt_pct``), and seconds for the model and for WMMSE.
    """
    records = []
    for K, M in sizes:
        gen = torch.Generator().manual_seed(derive_seed(seed, 7, K, M))
        H, s2 = _test_set(sampler, channel_model, K, M, samples, snr_db, gen)
        start = time.perf_counter()
        W = precoder(H, 1.0, s2)
        model_seconds = time.perf_counter() - start
        start = time.perf_counter()
        W_ref = wmmse(H, 1.0, s2, max_iter=wmmse_max_iter)
        wmmse_seconds = time.perf_counter() - start
        ref = _mean_rate(H, W_ref, s2)
        rate = _mean_rate(H, W, s2)
        record = {
            "kind": "eval", "K": K, "M": M, "seen": bool(seen(K, M)),
            "channel_model": channel_model, "samples": samples,
            "sum_rate": rate, "wmmse_sum_rate": ref, "pct_of_wmmse": 100 * rate / ref,
            "rzf_pct": 100 * _mean_rate(H, regularized_zero_forcing(H, 1.0, s2), s2) / ref,
            "zf_pct": 100 * _mean_rate(H, zero_forcing(H, 1.0), s2) / ref if K <= M else None,
            "mrt_pct": 100 * _mean_rate(H, maximum_ratio_transmission(H, 1.0), s2) / ref,
            "model_seconds": model_seconds, "wmmse_seconds": wmmse_seconds,
        }  # fmt: skip
        records.append(record)
    return records


def evaluate_pilots(
    model: torch.nn.Module,
    sizes: Sequence[tuple[int, int]],
    pilot_snrs_db: Sequence[float],
    *,
    sampler: Any,
    channel_model: str,
    snr_db: Sequence[float],
    samples: int,
    seed: int,
    wmmse_max_iter: int = 500,
) -> list[dict[str, Any]]:
    """End-to-end precoding from pilots vs LS + WMMSE and LMMSE + WMMSE, per pilot SNR and size.

    All methods see the same received pilots ``Y = H^T X + N`` (DFT pilots of the model's
    length ``L``, unit symbol power) and are scored on the true channels, as % of the sum rate
    WMMSE reaches with perfect CSI. LMMSE uses the i.i.d. unit prior for Rayleigh channels
    (exact) and the sample spatial covariance of the test pool otherwise.

    Returns:
        One ``kind="eval_pilots"`` record per ``(pilot SNR, K, M)``.
    """
    L = model.cfg.pilot_length
    records = []
    for pilot_snr, (K, M) in itertools.product(pilot_snrs_db, sizes):
        gen = torch.Generator().manual_seed(derive_seed(seed, 8, K, M, int(pilot_snr * 10) + 1000))
        H, s2 = _test_set(sampler, channel_model, K, M, samples, snr_db, gen)
        X = pilot_matrix(K, L, dtype=H.dtype)
        sigma_p = pilot_noise_power(pilot_snr)
        Y = transmit_pilots(H, X, sigma_p, generator=gen)
        cov = None
        if channel_model != "rayleigh":
            cov = channel_covariance(sampler.pool(channel_model, M)[:, None], per_user=False)
        with torch.no_grad():
            W_model = model.forward_pilots(Y, X, 1.0, s2, sigma_p)
        perfect = _mean_rate(H, wmmse(H, 1.0, s2, max_iter=wmmse_max_iter), s2)
        rates = {"graph_lam": _mean_rate(H, W_model, s2)}
        for name, H_hat in (
            ("ls", ls_estimate(Y, X)),
            ("lmmse", lmmse_estimate(Y, X, sigma_p, cov)),
        ):
            rates[f"{name}_wmmse"] = _mean_rate(
                H, wmmse(H_hat, 1.0, s2, max_iter=wmmse_max_iter), s2
            )
        records.append({
            "kind": "eval_pilots", "pilot_snr_db": pilot_snr, "K": K, "M": M,
            "pilot_length": L, "channel_model": channel_model, "samples": samples,
            "perfect_wmmse_sum_rate": perfect,
            **{f"{n}_sum_rate": r for n, r in rates.items()},
            **{f"{n}_pct": 100 * r / perfect for n, r in rates.items()},
        })  # fmt: skip
    return records


class Validator:
    """A small fixed validation set (training channel model, ``K`` = max, every ``M``).

    The WMMSE reference is computed once; calling the validator gives the model's
    ``kind="val"`` record (% of WMMSE, averaged over sizes).
    """

    def __init__(self, cfg: Any) -> None:
        from edgelam.airinterface.beamforming.graph_lam import ChannelSampler

        sampler = ChannelSampler(min(cfg.pool_size, _TEST_POOL), derive_seed(cfg.seed, 98))
        self.groups = []
        for M in cfg.antennas:
            gen = torch.Generator().manual_seed(derive_seed(cfg.seed, 6, M))
            K = cfg.users[1]
            H, s2 = _test_set(
                sampler, cfg.channel_models[0], K, M, cfg.val_samples, cfg.snr_db, gen
            )
            ref = _mean_rate(H, wmmse(H, 1.0, s2, max_iter=cfg.wmmse_max_iter), s2)
            pilot_snr = sum(cfg.pilot_snr_db) / 2
            self.groups.append(({"K": K, "M": M, "H": H, "noise_power": s2,
                                 "pilot_snr_db": pilot_snr}, ref))  # fmt: skip
        self.seed = cfg.seed

    def __call__(self, model: torch.nn.Module, step: int) -> dict[str, Any]:
        from edgelam.airinterface.beamforming.graph_lam import precode_group

        model.eval()
        pcts = []
        with torch.no_grad():
            for group, ref in self.groups:
                gen = torch.Generator().manual_seed(derive_seed(self.seed, 5, group["M"]))
                W = precode_group(model, group, gen)
                pcts.append(100 * _mean_rate(group["H"], W, group["noise_power"]) / ref)
        model.train()
        return {"kind": "val", "step": step, "pct_of_wmmse": sum(pcts) / len(pcts),
                "per_size_pct": pcts}  # fmt: skip


def evaluate_run(run: RunDir, model: torch.nn.Module, cfg: Any, info: dict[str, Any]) -> dict:
    """Final evaluation of a training run: eval records, ``summary.json`` and plots."""
    from edgelam.airinterface.beamforming.graph_lam_checkpoint import (
        GraphLAMPrecoder,
        checkpoint_dir,
    )

    model.eval()
    sampler = _test_sampler(cfg)
    sizes = list(itertools.product(cfg.eval_users, cfg.eval_antennas))

    def seen(K: int, M: int) -> bool:
        return cfg.users[0] <= K <= cfg.users[1] and M in cfg.antennas

    common = {"sampler": sampler, "channel_model": cfg.eval_channel_model, "snr_db": cfg.snr_db,
              "samples": cfg.eval_samples, "seed": cfg.seed, "wmmse_max_iter": cfg.wmmse_max_iter}  # fmt: skip
    summary: dict[str, Any] = {
        "steps": cfg.steps,
        "model": {k: v for k, v in info.items() if k != "config"},
    }
    records = []
    if cfg.model.input == "channel":
        records = evaluate_sizes(GraphLAMPrecoder(model, {}), sizes, seen=seen, **common)
        for tag, flag in (("seen", True), ("unseen", False)):
            rows = [r for r in records if r["seen"] == flag]
            if rows:
                summary[f"{tag}_pct_of_wmmse"] = sum(r["pct_of_wmmse"] for r in rows) / len(rows)
                summary[f"{tag}_rzf_pct_of_wmmse"] = sum(r["rzf_pct"] for r in rows) / len(rows)
    else:
        sizes = [(K, M) for K, M in sizes if cfg.model.pilot_length >= K]
        records = evaluate_pilots(model, sizes, cfg.eval_pilot_snr_db, **common)
        summary["pilots"] = {
            str(snr): {m: _mean([r[f"{m}_pct"] for r in records if r["pilot_snr_db"] == snr])
                       for m in ("graph_lam", "ls_wmmse", "lmmse_wmmse")}
            for snr in cfg.eval_pilot_snr_db
        }  # fmt: skip
    for record in records:
        run.log(record)
    metrics = read_metrics(run.path)
    summary["train_seconds"] = sum(r["seconds"] for r in metrics if r.get("kind") == "train")
    summary["per_size"] = records
    summary["checkpoint"] = str(checkpoint_dir(run.path).relative_to(run.path))
    run.write_summary(summary)
    if cfg.model.input == "channel":
        plot_size_generalisation(run.path)
    else:
        plot_pilots(run.path)
    return summary


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_size_generalisation(run_path: str | Path, name: str = "sum_rate_vs_size") -> Path:
    """Sum rate as % of WMMSE vs ``K``, one line per ``M`` (unseen sizes hollow), from metrics."""
    plt = _pyplot()
    run = RunDir.open(run_path)
    rows = [r for r in read_metrics(run.path) if r.get("kind") == "eval"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, M in enumerate(sorted({r["M"] for r in rows})):
        line = sorted((r for r in rows if r["M"] == M), key=lambda r: r["K"])
        color = f"C{i}"
        ax.plot([r["K"] for r in line], [r["pct_of_wmmse"] for r in line], "-", color=color,
                label=f"graph-LAM, M={M}")  # fmt: skip
        ax.plot([r["K"] for r in line], [r["rzf_pct"] for r in line], ":", color=color, lw=0.9)
        for r in line:
            ax.plot(r["K"], r["pct_of_wmmse"], "o", color=color,
                    markerfacecolor=color if r["seen"] else "white")  # fmt: skip
    ax.plot([], [], "k:", lw=0.9, label="RZF (same M)")
    ax.plot([], [], "ko", markerfacecolor="white", label="size not seen in training")
    ax.axhline(100, color="grey", lw=0.8)
    ax.set_xlabel("users K")
    ax.set_ylabel("sum rate [% of WMMSE]")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return run.save_figure(fig, name)


def plot_pilots(run_path: str | Path, name: str = "sum_rate_vs_pilot_snr") -> Path:
    """% of perfect-CSI WMMSE vs pilot SNR: end-to-end graph-LAM, LS + WMMSE, LMMSE + WMMSE."""
    plt = _pyplot()
    run = RunDir.open(run_path)
    rows = [r for r in read_metrics(run.path) if r.get("kind") == "eval_pilots"]
    snrs = sorted({r["pilot_snr_db"] for r in rows})
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for method, label in (("graph_lam", "graph-LAM from pilots (end to end)"),
                          ("lmmse_wmmse", "LMMSE + WMMSE"), ("ls_wmmse", "LS + WMMSE")):  # fmt: skip
        ys = [_mean([r[f"{method}_pct"] for r in rows if r["pilot_snr_db"] == s]) for s in snrs]
        ax.plot(snrs, ys, "o-", label=label)
    ax.axhline(100, color="grey", lw=0.8, label="WMMSE, perfect CSI")
    ax.set_xlabel("pilot SNR [dB]")
    ax.set_ylabel("sum rate [% of perfect-CSI WMMSE]")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return run.save_figure(fig, name)
