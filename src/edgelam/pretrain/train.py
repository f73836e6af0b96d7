"""Pre-training the wireless foundation backbone: config, resumable loop, export.

:func:`pretrain` reads top to bottom:

1. a run directory (:class:`~edgelam.runs.RunDir`): ``config.json``, ``metrics.jsonl``
   (``kind="train"``: step, loss, pred_loss, recon_loss, lr, seconds; ``kind="eval"``: NMSE on
   the held-in validation users and on the held-out configurations), ``summary.json``;
2. the corpus (:mod:`edgelam.pretrain.corpus`), generated or reused from ``cache_dir``;
3. the model (:class:`~edgelam.pretrain.model.PretrainModel`), AdamW (no decay on biases and
   norms) with linear warm-up then cosine decay to ``min_lr_ratio * lr``;
4. the loop: step ``s`` takes batch ``s mod E`` of epoch ``s // E`` (``E`` = items // batch)
   of a permutation seeded by ``(seed, epoch)``, noise of that epoch, a patch mask seeded by
   ``(seed, s, 2)`` and dropout seeded by ``(seed, s, 1)``; so the run is a function of the
   step index alone and ``checkpoints/last.pt`` (model, optimiser, scheduler, step), written
   every ``checkpoint_every`` steps, resumes it bit for bit;
5. the export (:func:`~edgelam.models.pretrained.export_pretrained`): ``backbone.safetensors``
   and ``model_card.json`` in the run directory.
"""

from __future__ import annotations

import functools
import math
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgelam.config import ConfigError, option, to_dict
from edgelam.models.backbones import BackboneConfig
from edgelam.models.llm4cp import LLM4CPConfig
from edgelam.models.pretrained import export_pretrained, file_sha256
from edgelam.pretrain.corpus import (
    CorpusConfig,
    build_corpus,
    build_held_out,
    corpus_configs,
    corpus_splits,
    held_out_configs,
    held_out_dataset,
)
from edgelam.pretrain.evaluate import evaluate_pretrain
from edgelam.pretrain.model import PretrainModel, build_pretrain_model
from edgelam.pretrain.objectives import derive_seed, patch_mask, pretrain_losses
from edgelam.progress import progress_bar
from edgelam.runs import RunDir, library_versions, read_metrics, save_checkpoint

__all__ = ["PRETRAIN_PROFILES", "PretrainConfig", "pretrain", "pretrain_profile", "warmup_cosine"]


def default_model() -> LLM4CPConfig:
    """The pre-training model: GPT-2 architecture 4 layers x 128 (4 heads), 16 positions."""
    backbone = BackboneConfig(
        name="custom", num_layers=4, d_model=128, n_head=4, n_positions=16, pretrained=None
    )
    return LLM4CPConfig(res_dim=16, backbone=backbone, trainable="full")


@dataclass
class PretrainConfig:
    """Everything that determines a pre-training run."""

    steps: int = option(2000, "optimiser steps")
    batch_size: int = option(64, "items (one BS antenna of one user each) per step")
    lr: float = option(1e-3, "peak learning rate (AdamW)")
    warmup_steps: int = option(100, "linear warm-up steps, then cosine decay")
    min_lr_ratio: float = option(0.1, "final learning rate as a fraction of lr")
    weight_decay: float = option(0.05, "AdamW weight decay of matrices (not biases/norms)")
    grad_clip: float = option(1.0, "clip the gradient norm to this (0: off)")
    mask_ratio: float = option(0.3, "share of history patches masked for reconstruction")
    mask_patch_slots: int = option(4, "slots per masked patch (divides history_slots)")
    mask_patch_subcarriers: int = option(4, "subcarriers per masked patch (divides F)")
    recon_weight: float = option(1.0, "lambda: loss = prediction + lambda * reconstruction")
    train_snr_db: tuple[float, float] = option(
        (5.0, 20.0), "observation SNR range of training histories [dB], drawn per item and epoch"
    )
    eval_snr_db: float = option(18.0, "observation SNR of evaluation histories [dB]")
    noisy_target: bool = option(False, "also add observation noise to training targets")
    val_fraction: float = option(0.05, "share of each training file's users held in for validation")
    eval_every: int = option(250, "evaluate every this many steps (and at the end)")
    eval_items: int = option(256, "items evaluated per file at most")
    eval_batch_size: int = option(256, "items per evaluation forward pass")
    checkpoint_every: int = option(100, "save a resumable checkpoint every this many steps")
    cache_dir: str = option("data/pretrain", "where the corpus files are generated and cached")
    device: str = option("cpu", "torch device: 'cpu', 'cuda', 'auto' (CUDA if available)")
    seed: int = option(0, "seed of model init, batches, noise, masks and dropout")
    corpus: CorpusConfig = field(
        default_factory=CorpusConfig, metadata={"help": "the pre-training corpus"}
    )
    model: LLM4CPConfig = field(
        default_factory=default_model, metadata={"help": "the LLM4CP-style model pre-trained"}
    )

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_every", "eval_items", "eval_batch_size",
                     "checkpoint_every", "mask_patch_slots", "mask_patch_subcarriers"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.warmup_steps < 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(
                f"lr: need lr > 0, warmup_steps >= 0, 0 <= min_lr_ratio <= 1; got {self.lr}, "
                f"{self.warmup_steps}, {self.min_lr_ratio}"
            )
        if self.weight_decay < 0 or self.grad_clip < 0 or self.recon_weight < 0:
            raise ConfigError("weight_decay: weight_decay, grad_clip, recon_weight must be >= 0")
        if not 0 <= self.mask_ratio < 1:
            raise ConfigError(f"mask_ratio: must be in [0, 1), got {self.mask_ratio}")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"val_fraction: must be in [0, 1), got {self.val_fraction}")
        for name in ("history_slots", "future_slots"):
            if getattr(self.model, name) != getattr(self.corpus, name):
                raise ConfigError(
                    f"model.{name}: {getattr(self.model, name)} differs from corpus.{name}="
                    f"{getattr(self.corpus, name)}"
                )
        if self.model.num_subcarriers != self.corpus.held_out_subcarriers:
            raise ConfigError(
                f"model.num_subcarriers: {self.model.num_subcarriers} differs from "
                f"corpus.held_out_subcarriers={self.corpus.held_out_subcarriers} (zero-shot "
                "tests use the exported embedding and head)"
            )
        if self.model.trainable == "lora":
            raise ConfigError("model.trainable: pre-training trains 'full' or 'ln_pe', not 'lora'")
        axes = [("mask_patch_slots", self.model.history_slots)]
        for f in sorted({*self.corpus.subcarrier_counts, self.model.num_subcarriers}):
            axes.append(("mask_patch_subcarriers", f))
        for name, axis in axes:
            if axis % getattr(self, name):
                raise ConfigError(f"{name}: {getattr(self, name)} must divide {axis}")

    @property
    def subcarrier_counts(self) -> list[int]:
        """Every ``F`` the model is pre-trained on (the corpus's and the model's own)."""
        return sorted({*self.corpus.subcarrier_counts, self.model.num_subcarriers})


def _tiny() -> PretrainConfig:
    corpus = CorpusConfig(models=("tdl-a", "tdl-c"), held_out=("tdl-b",),
                          subcarrier_counts=(4, 8), held_out_subcarriers=8, bs_arrays=("1x2",),
                          num_configs=2, users_per_config=8, held_out_users=8,
                          subcarrier_spacings_khz=(180.0,))  # fmt: skip
    backbone = BackboneConfig(
        name="custom", num_layers=1, d_model=16, n_head=2, n_positions=16, pretrained=None
    )
    model = LLM4CPConfig(
        num_subcarriers=8, res_dim=4, res_layers=1, backbone=backbone, trainable="full"
    )
    return PretrainConfig(steps=4, batch_size=16, warmup_steps=1, eval_every=2, eval_items=16,
                          checkpoint_every=2, mask_patch_subcarriers=2, val_fraction=0.25,
                          corpus=corpus, model=model)  # fmt: skip


def _paper() -> PretrainConfig:
    corpus = CorpusConfig(num_configs=45, users_per_config=512, held_out_users=512)
    backbone = BackboneConfig(
        name="custom", num_layers=6, d_model=768, n_head=12, n_positions=16, pretrained=None
    )
    model = LLM4CPConfig(res_dim=64, res_layers=4, backbone=backbone, trainable="full")
    return PretrainConfig(steps=6000, batch_size=256, lr=3e-4, warmup_steps=300,
                          eval_every=1000, eval_items=512, checkpoint_every=500,
                          cache_dir="data/pretrain-paper", device="auto", corpus=corpus,
                          model=model)  # fmt: skip


#: Named starting points: ``default`` (the shipped backbone, CPU), ``paper`` (GPU scale:
#: LLM4CP's 6 GPT-2 layers x 768 and res_dim 64, 45 configurations x 512 users, every model
#: with every F three times), ``tiny`` (seconds, for tests).
PRETRAIN_PROFILES = {"default": PretrainConfig, "paper": _paper, "tiny": _tiny}


def pretrain_profile(name: str) -> PretrainConfig:
    """The config of a named profile (``default`` or ``tiny``)."""
    if name not in PRETRAIN_PROFILES:
        raise ConfigError(f"profile: {name!r} is not one of {sorted(PRETRAIN_PROFILES)}")
    return PRETRAIN_PROFILES[name]()


def warmup_cosine(step: int, *, warmup: int, total: int, min_ratio: float) -> float:
    """Learning-rate factor: ``(step+1)/warmup`` during warm-up, then cosine to ``min_ratio``.

    >>> [round(warmup_cosine(s, warmup=2, total=6, min_ratio=0.0), 3) for s in range(7)]
    [0.5, 1.0, 1.0, 0.854, 0.5, 0.146, 0.0]
    """
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class _Batches:
    """Batch ``s`` of the seeded epoch schedule (a function of ``s`` alone).

    Every batch holds items of one ``F``. An epoch permutes each ``F``'s items (seed
    ``(seed, epoch, F)``), cuts them into ``max(1, n_F // batch_size)`` batches (a group smaller
    than one batch wraps around), and shuffles the order of all the batches (seed
    ``(seed, epoch)``), so every ``F`` is visited in proportion to its items.
    """

    def __init__(self, dataset: Any, batch_size: int, seed: int) -> None:
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.groups = {f: torch.from_numpy(idx) for f, idx in dataset.groups().items()}
        self.per_group = {f: max(1, len(idx) // batch_size) for f, idx in self.groups.items()}
        self.per_epoch = sum(self.per_group.values())
        self._epoch, self._batches = -1, []

    def _schedule(self, epoch: int) -> list[torch.Tensor]:
        batches = []
        for f, idx in self.groups.items():
            gen = torch.Generator().manual_seed(derive_seed(self.seed, epoch, f))
            perm = idx[torch.randperm(len(idx), generator=gen)]
            if len(perm) < self.batch_size:  # fewer items than one batch: wrap around
                perm = perm.repeat(-(-self.batch_size // len(perm)))
            size = self.batch_size
            batches += [perm[i * size : (i + 1) * size] for i in range(self.per_group[f])]
        gen = torch.Generator().manual_seed(derive_seed(self.seed, epoch))
        return [batches[int(i)] for i in torch.randperm(len(batches), generator=gen)]

    def __call__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, pos = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            self._epoch, self._batches = epoch, self._schedule(epoch)
        self.dataset.set_epoch(epoch)
        items = [self.dataset[int(i)] for i in self._batches[pos]]
        return torch.stack([h for h, _ in items]), torch.stack([t for _, t in items])


def pretrain(
    cfg: PretrainConfig,
    out_dir: str | Path,
    *,
    resume: bool = True,
    overwrite: bool = False,
    progress: bool = True,
    command: str | None = None,
    stop_after: int | None = None,
) -> Path:
    """Pre-train from scratch (or resume), evaluate, and export the backbone into ``out_dir``.

    Seeds torch's global RNG (dropout) as it goes, like every training loop here.

    Args:
        cfg: the run's config.
        out_dir: the run directory.
        resume: continue from ``checkpoints/last.pt`` if the directory holds this config's run.
        overwrite: start over in a directory that holds a run (needs ``resume=False``).
        progress: show progress bars.
        command: recorded in the model card (default: this process's command line).
        stop_after: return after this many total steps without exporting, as an interruption
            would (only scheduled checkpoints are on disk); for tests and time-sliced runs.

    Returns:
        ``out_dir``.

    Raises:
        FileExistsError: ``out_dir`` holds a run and neither ``resume`` nor ``overwrite``.
        ConfigError: resuming a run whose stored config differs from ``cfg``.
    """
    run = RunDir.create(out_dir, to_dict(cfg), resume=resume, overwrite=overwrite)
    ckpt = run.path / "checkpoints" / "last.pt"
    if not resume:
        ckpt.unlink(missing_ok=True)
    device = _device(cfg.device)
    files = build_corpus(cfg.corpus, cfg.cache_dir, progress=progress)
    held_files = build_held_out(cfg.corpus, cfg.cache_dir, progress=progress)
    train_ds, val_ds = corpus_splits(
        files,
        val_fraction=cfg.val_fraction,
        split_seed=cfg.seed,
        train_snr_db=cfg.train_snr_db,
        eval_snr_db=cfg.eval_snr_db,
        noisy_target=cfg.noisy_target,
        noise_seed=cfg.seed,
    )
    held_ds = held_out_dataset(held_files, snr_db=cfg.eval_snr_db, noise_seed=cfg.seed)
    eval_sets = {"val": val_ds, "held_out": held_ds}

    model, info = build_pretrain_model(
        cfg.model, seed=cfg.seed, subcarrier_counts=cfg.subcarrier_counts
    )
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        betas=(0.9, 0.95),
    )
    schedule = functools.partial(
        warmup_cosine, warmup=cfg.warmup_steps, total=cfg.steps, min_ratio=cfg.min_lr_ratio
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    step = 0
    if resume and ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        step = int(state["step"])
    run.drop_metrics(lambda r: r.get("step", 0) > step)  # redone identically below
    batches = _Batches(train_ds, cfg.batch_size, cfg.seed)

    with progress_bar("pretrain", total=cfg.steps, completed=step, enabled=progress) as advance:
        while step < cfg.steps:
            start = time.perf_counter()
            history, target = batches(step)
            mask = patch_mask(
                len(history),
                cfg.model.history_slots,
                history.shape[-1] // 2,
                **_mask_kwargs(cfg),
                generator=torch.Generator().manual_seed(derive_seed(cfg.seed, step, 2)),
            )
            lr = sched.get_last_lr()[0]
            torch.manual_seed(derive_seed(cfg.seed, step, 1))  # dropout
            losses = pretrain_losses(
                model, history.to(device), target.to(device), mask.to(device), cfg.recon_weight
            )
            if not torch.isfinite(losses.loss):
                raise FloatingPointError(f"step {step}: loss is {losses.loss.item()}")
            opt.zero_grad(set_to_none=True)
            losses.loss.backward()
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            sched.step()
            step += 1
            recon = losses.reconstruction
            run.log(
                {
                    "kind": "train",
                    "step": step,
                    "loss": losses.loss.item(),
                    "pred_loss": losses.prediction.item(),
                    "recon_loss": None if recon is None else recon.item(),
                    "lr": lr,
                    "seconds": time.perf_counter() - start,
                }
            )
            if step % cfg.eval_every == 0 or step == cfg.steps:
                run.log({"kind": "eval", "step": step, **_evaluate(model, eval_sets, cfg, device)})
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                state = {
                    "step": step,
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                }
                save_checkpoint(state, ckpt)
            advance(1)
            if stop_after is not None and stop_after <= step < cfg.steps:
                return run.path

    data = {
        "train_files": [p.name for p in files],
        "held_out_files": [p.name for p in held_files],
        "train_items": len(train_ds),
        "val_items": len(val_ds) if val_ds else 0,
        "held_out_items": len(held_ds) if held_ds else 0,
        "bytes": sum(p.stat().st_size for p in [*files, *held_files]),
    }
    _export(cfg, run, model, info, data, str(device), command)
    return run.path


def _mask_kwargs(cfg: PretrainConfig) -> dict[str, Any]:
    return {
        "patch_slots": cfg.mask_patch_slots,
        "patch_subcarriers": cfg.mask_patch_subcarriers,
        "mask_ratio": cfg.mask_ratio,
    }


def _evaluate(
    model: PretrainModel, sets: dict[str, Any], cfg: PretrainConfig, device: torch.device
) -> dict[str, Any]:
    """``<set>_<metric>`` for the validation and held-out sets (those that exist)."""
    start = time.perf_counter()
    out: dict[str, Any] = {}
    for name, ds in sets.items():
        if ds is not None:
            res = evaluate_pretrain(
                model,
                ds,
                max_items=cfg.eval_items,
                batch_size=cfg.eval_batch_size,
                seed=cfg.seed,
                device=device,
                **_mask_kwargs(cfg),
            )
            out.update({f"{name}_{k}": v for k, v in res.items()})
    out["seconds"] = time.perf_counter() - start
    return out


def _export(
    cfg: PretrainConfig,
    run: RunDir,
    model: PretrainModel,
    info: dict[str, Any],
    data: dict[str, Any],
    device: str,
    command: str | None,
) -> None:
    """Write ``backbone.safetensors``, ``model_card.json`` and ``summary.json``."""
    records = read_metrics(run.path)
    train = [r for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") == "eval"]
    last = train[-min(50, len(train)) :]
    final = {k: _mean(r[k] for r in last) for k in ("loss", "pred_loss", "recon_loss")}
    card = {
        "name": "edgelam-wireless",
        "description": "LLM4CP-style CSI predictor pre-trained on a 3GPP TR 38.901 corpus "
        "(next-slot prediction + masked time/frequency-patch reconstruction)",
        "command": command if command is not None else shlex.join(sys.argv),
        "seed": cfg.seed,
        "steps": len(train),
        "batch_size": cfg.batch_size,
        "final_losses": final,
        "final_losses_over_steps": len(last),
        "evaluation": evals[-1] if evals else None,
        "held_out_models": list(cfg.corpus.held_out),
        "training_configs": [to_dict(c) for c in corpus_configs(cfg.corpus)],
        "held_out_configs": [to_dict(c) for c in held_out_configs(cfg.corpus)],
        "model_config": to_dict(cfg.model),
        "pretrain_config": to_dict(cfg),
        "data": data,
        "parameters": info["total_params"],
        "train_seconds": sum(r["seconds"] for r in train) + sum(r["seconds"] for r in evals),
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "versions": library_versions("torch", "transformers", "safetensors", "sionna-no-rt"),
    }
    weights = export_pretrained(model, run.path, card)
    keys = ("steps", "final_losses", "evaluation", "data", "train_seconds", "seed", "parameters")
    run.write_summary(
        {
            **{k: card[k] for k in keys},
            "weights": weights.name,
            "sha256": file_sha256(weights),
            "weights_bytes": weights.stat().st_size,
        }
    )


def _mean(values: Any) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None
