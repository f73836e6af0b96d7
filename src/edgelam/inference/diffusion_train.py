"""Training the diffusion deployment generator: config, resumable loop, export.

:func:`train_diffusion` reads top to bottom:

1. the dataset (:mod:`.diffusion_data`): solver-labelled instances, labelled once into
   ``dataset_dir`` (default ``<out>/dataset``) and reused; the last ``val_fraction`` of the
   usable items are held out for validation;
2. the run directory (:class:`~edgelam.runs.RunDir`): ``config.json``, ``metrics.jsonl``
   (``kind="train"``: step, loss, lr; ``kind="eval"``: validation loss at fixed noise levels,
   and the objective of generated deployments relative to the labels), ``summary.json``,
   ``loss.png``;
3. the denoiser (:mod:`.diffusion_model`) and AdamW with linear warm-up then cosine decay;
4. the loop: step ``k`` draws its batch, its steps ``t ~ U{1..T}`` and the noise
   :math:`x_t \\sim q(x_t \\mid x_0)` from generators seeded by ``(seed, k)``, and minimises the
   binary cross-entropy of the predicted :math:`x_0` over real cells; ``checkpoints/last.pt``
   (model, optimiser, step, elapsed time), written every ``checkpoint_every`` steps, resumes
   it bit for bit;
5. the export: ``checkpoint/model.safetensors`` + ``checkpoint/config.json`` (architecture,
   diffusion, feature sizes, sha256) and ``checkpoint/training.json`` (command, dataset,
   labelling and training cost, final metrics) -- what :func:`~.diffusion.solve_diffusion`
   loads.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from edgelam.config import ConfigError, option, to_dict
from edgelam.inference.diffusion import export_diffusion_checkpoint, generate_deployment
from edgelam.inference.diffusion_data import DatasetSpec, build_dataset, load_dataset
from edgelam.inference.diffusion_features import collate_features, instance_features
from edgelam.inference.diffusion_model import DenoiserConfig, DeploymentDenoiser
from edgelam.inference.diffusion_process import BernoulliDiffusion
from edgelam.progress import progress_bar
from edgelam.runs import RunDir, library_versions, read_metrics, save_checkpoint
from edgelam.seeding import derive_seed

__all__ = ["DiffusionTrainConfig", "train_diffusion"]


@dataclass
class DiffusionTrainConfig:
    """Everything that determines a diffusion training run (dataset included)."""

    instances: int = option(160, "solver-labelled training instances (items 0..instances-1)")
    nodes_min: int = option(6, "fewest nodes of a training instance")
    nodes_max: int = option(12, "most nodes of a training instance")
    load_range: tuple[float, float] = option((0.2, 0.5), "range of the instance load")
    label_time_limit: float = option(4.0, "CP-SAT time limit per instance [s]")
    labeler: Literal["exact", "greedy"] = option("exact", "label solver: exact (CP-SAT) or greedy")
    dataset_dir: str = option(
        "", "labelled dataset directory, reused across runs ('': <out>/dataset)"
    )
    val_fraction: float = option(0.1, "share of the usable items held out for validation")
    steps: int = option(1500, "optimiser steps")
    batch_size: int = option(24, "instances per step (each with its own noise level)")
    lr: float = option(1e-3, "peak learning rate (AdamW)")
    warmup_steps: int = option(100, "linear warm-up steps, then cosine decay to lr/10")
    weight_decay: float = option(0.01, "AdamW weight decay")
    grad_clip: float = option(1.0, "clip the gradient norm to this (0: off)")
    diffusion_steps: int = option(1000, "T, steps of the forward process")
    stationary: float | None = option(
        None, "p of the stationary Bernoulli (None: the density of ones in the labels)"
    )
    log_every: int = option(20, "log the training loss every this many steps")
    eval_every: int = option(300, "validate every this many steps (and at the end)")
    eval_instances: int = option(8, "validation instances solved by sampling at each eval")
    eval_samples: int = option(8, "candidates per validation instance")
    eval_sampling_steps: int = option(5, "denoising steps when sampling at eval")
    checkpoint_every: int = option(200, "save a resumable checkpoint every this many steps")
    seed: int = option(0, "seed of instances, initialisation, batches and noise")
    model: DenoiserConfig = field(
        default_factory=DenoiserConfig, metadata={"help": "the denoiser architecture"}
    )

    def __post_init__(self) -> None:
        for name in ("instances", "steps", "batch_size", "diffusion_steps", "log_every",
                     "eval_every", "eval_samples", "eval_sampling_steps", "checkpoint_every"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if not 2 <= self.nodes_min <= self.nodes_max:
            raise ConfigError(
                f"nodes_min: need 2 <= nodes_min <= nodes_max, got {self.nodes_min}, "
                f"{self.nodes_max}"
            )
        lo, hi = self.load_range
        if not 0 < lo <= hi < 1:
            raise ConfigError(f"load_range: need 0 < low <= high < 1, got {self.load_range}")
        if self.label_time_limit <= 0 or self.lr <= 0:
            raise ConfigError("label_time_limit: label_time_limit and lr must be > 0")
        if self.eval_instances < 0 or self.warmup_steps < 0 or self.grad_clip < 0:
            raise ConfigError("eval_instances: eval_instances, warmup_steps, grad_clip >= 0")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"val_fraction: must be in [0, 1), got {self.val_fraction}")
        if self.stationary is not None and not 0 < self.stationary < 1:
            raise ConfigError(f"stationary: must be in (0, 1), got {self.stationary}")

    def dataset_spec(self) -> DatasetSpec:
        return DatasetSpec(self.nodes_min, self.nodes_max, tuple(self.load_range), self.labeler,
                           self.label_time_limit, self.seed)  # fmt: skip


def _lr(cfg: DiffusionTrainConfig, step: int) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    frac = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))


def _batch(feats: list, labels: list[torch.Tensor], idx: list[int]) -> tuple:
    """Collated features, padded labels ``[B, S, N]`` and the real-cell mask ``[B, S, N]``."""
    batch = collate_features([feats[i] for i in idx])
    x0 = torch.zeros(batch.pair.shape[:3])
    for j, i in enumerate(idx):
        s, n = labels[i].shape
        x0[j, :s, :n] = labels[i]
    mask = batch.service_mask[:, :, None] & batch.node_mask[:, None, :]
    return batch, x0, mask


def _loss(model, diffusion, batch, x0, mask, t, gen) -> torch.Tensor:
    x_t = diffusion.q_sample(x0, t, generator=gen) * mask
    logits = model(x_t, t, batch)
    return F.binary_cross_entropy_with_logits(logits[mask], x0[mask])


@torch.no_grad()
def _evaluate(model, diffusion, cfg, feats, labels, val, step: int) -> dict[str, Any]:
    """Validation loss at fixed noise levels, and generated deployments vs the labels."""
    model.eval()
    losses = []
    for k, t_val in enumerate((100, 300, 500, 700, 900)):
        t_val = max(1, round(t_val * cfg.diffusion_steps / 1000))
        gen = torch.Generator().manual_seed(derive_seed(cfg.seed, 7, k))
        batch, x0, mask = _batch(feats, labels, [i for i, _ in val])
        t = torch.full((len(val),), t_val)
        losses.append(float(_loss(model, diffusion, batch, x0, mask, t, gen)))
    ratios, feasible = [], 0
    for i, item in val[: cfg.eval_instances]:
        dep = generate_deployment(model, diffusion, item.instance, samples=cfg.eval_samples,
                                  steps=cfg.eval_sampling_steps, seed=derive_seed(cfg.seed, i))  # fmt: skip
        feasible += dep.info["feasible"]
        if dep.info["feasible"]:
            ratios.append(dep.info["objective_s"] / item.objective_s)
    model.train()
    n = min(len(val), cfg.eval_instances)
    return {
        "kind": "eval",
        "step": step,
        "val_loss": float(np.mean(losses)),
        "objective_ratio": float(np.mean(ratios)) if ratios else None,
        "feasible_rate": feasible / n if n else None,
    }


def train_diffusion(
    config: DiffusionTrainConfig,
    out_dir: str | Path,
    *,
    resume: bool = True,
    overwrite: bool = False,
    progress: bool = True,
    command: str = "",
) -> Path:
    """Label (or reuse) the dataset, train the denoiser, export the checkpoint.

    Args:
        config: The run's config.
        out_dir: Run directory.
        resume: Continue an interrupted run in ``out_dir`` (same config) from its checkpoint.
        overwrite: Start over in a directory that holds another run.
        progress: Draw progress bars.
        command: The command line, recorded in ``training.json``.

    Returns:
        The checkpoint directory ``<out_dir>/checkpoint`` (pass it to ``solve_diffusion``).

    Raises:
        FileExistsError: ``out_dir`` holds a run and neither ``resume`` nor ``overwrite``.
        ConfigError: a bad config, a dataset made with other settings, or no usable items.
    """
    out = Path(out_dir)
    cfg = config
    if overwrite:
        (out / "checkpoints" / "last.pt").unlink(missing_ok=True)
    run = RunDir.create(out, to_dict(cfg), overwrite=overwrite, resume=resume and not overwrite)
    data_dir = Path(cfg.dataset_dir) if cfg.dataset_dir else out / "dataset"
    manifest = build_dataset(cfg.dataset_spec(), data_dir, cfg.instances, progress=progress)
    items = load_dataset(data_dir, cfg.instances)
    if len(items) < 2:
        raise ConfigError(f"instances: only {len(items)} usable labelled items in {data_dir}")
    n_val = max(1, round(cfg.val_fraction * len(items))) if cfg.val_fraction > 0 else 0
    train_items, val_items = items[: len(items) - n_val], items[len(items) - n_val :]
    feats = [instance_features(it.instance) for it in items]
    labels = [torch.as_tensor(it.indicator, dtype=torch.float32) for it in items]
    train_idx = list(range(len(train_items)))
    val = [(len(train_items) + j, it) for j, it in enumerate(val_items)]
    density = float(sum(labels[i].sum() for i in train_idx) / sum(labels[i].numel() for i in train_idx))  # fmt: skip
    stationary = cfg.stationary if cfg.stationary is not None else min(max(density, 0.01), 0.99)
    diffusion = BernoulliDiffusion(cfg.diffusion_steps, stationary)

    finished = out / "checkpoint" / "training.json"
    if resume and not overwrite and finished.exists() and (out / "summary.json").exists():
        return finished.parent  # the same run, already complete
    torch.manual_seed(derive_seed(cfg.seed, 3))
    model = DeploymentDenoiser(cfg.model)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step, elapsed = 0, 0.0
    ckpt_path = out / "checkpoints" / "last.pt"
    if resume and ckpt_path.exists():
        state = torch.load(ckpt_path, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, elapsed = int(state["step"]), float(state["elapsed"])
    run.drop_metrics(lambda r: r.get("step", 0) > step)  # logged after the checkpoint
    model.train()
    start = time.perf_counter() - elapsed
    with progress_bar("training", total=cfg.steps, completed=step, enabled=progress) as advance:
        while step < cfg.steps:
            gen = torch.Generator().manual_seed(derive_seed(cfg.seed, step, 1))
            pick = torch.randint(len(train_idx), (cfg.batch_size,), generator=gen).tolist()
            batch, x0, mask = _batch(feats, labels, [train_idx[i] for i in pick])
            t = torch.randint(1, cfg.diffusion_steps + 1, (cfg.batch_size,), generator=gen)
            for group in opt.param_groups:
                group["lr"] = _lr(cfg, step)
            loss = _loss(model, diffusion, batch, x0, mask, t, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            step += 1
            advance(1)
            if step % cfg.log_every == 0 or step == cfg.steps:
                run.log({"kind": "train", "step": step, "loss": loss.item(), "lr": _lr(cfg, step - 1),
                         "seconds": round(time.perf_counter() - start, 2)})  # fmt: skip
            if val and (step % cfg.eval_every == 0 or step == cfg.steps):
                run.log(_evaluate(model, diffusion, cfg, feats, labels, val, step))
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                save_checkpoint({"model": model.state_dict(), "optimizer": opt.state_dict(),
                                 "step": step, "elapsed": time.perf_counter() - start}, ckpt_path)  # fmt: skip
    training_seconds = time.perf_counter() - start
    metrics = read_metrics(out)
    evals = [m for m in metrics if m.get("kind") == "eval"]
    entries = [e for e in manifest["entries"] if e["index"] < cfg.instances]
    statuses: dict[str, int] = {}
    for e in entries:
        key = f"{e['status']}/{e.get('source', '')}"
        statuses[key] = statuses.get(key, 0) + 1
    gaps = [e["gap"] for e in entries if isinstance(e.get("gap"), float) and e["feasible"]]
    record = {
        "command": command,
        "dataset": {
            "spec": manifest["spec"],
            "instances": len(entries),
            "usable": len(items),
            "train": len(train_items),
            "validation": n_val,
            "label_status": statuses,
            "label_mean_gap": float(np.mean(gaps)) if gaps else None,
            "labelling_seconds": round(sum(e["solve_time_s"] for e in entries), 1),
            "label_density": density,
        },  # fmt: skip
        "training": {
            "steps": cfg.steps,
            "batch_size": cfg.batch_size,
            "lr": cfg.lr,
            "seconds": round(training_seconds, 1),
            "seed": cfg.seed,
            "final_loss": next(
                (m["loss"] for m in reversed(metrics) if m.get("kind") == "train"), None
            ),
            "final_eval": evals[-1] if evals else None,
        },  # fmt: skip
        "versions": library_versions("torch", "ortools"),
    }
    ckpt = export_diffusion_checkpoint(model, diffusion, out / "checkpoint")
    (ckpt / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    card = json.loads((ckpt / "config.json").read_text())
    run.write_summary({**record, "parameters": card["parameters"], "weights_bytes": card["bytes"],
                       "checkpoint": str(ckpt)})  # fmt: skip
    _plot(out)
    return ckpt


def _plot(run_dir: Path) -> Path:
    """``loss.png``: training and validation loss against step, from ``metrics.jsonl`` alone."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = read_metrics(run_dir)
    train = [m for m in metrics if m.get("kind") == "train"]
    evals = [m for m in metrics if m.get("kind") == "eval"]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([m["step"] for m in train], [m["loss"] for m in train], label="train BCE", lw=1)
    if evals:
        ax.plot([m["step"] for m in evals], [m["val_loss"] for m in evals], "o-", label="val BCE")
    ax.set_xlabel("step")
    ax.set_ylabel("x0 cross-entropy")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    path = run_dir / "loss.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
