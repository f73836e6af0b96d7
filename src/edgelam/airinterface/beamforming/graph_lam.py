r"""Graph-LAM beamforming: unsupervised sum-rate training over mixed network sizes.

:func:`train_graph_lam` reads top to bottom:

1. a run directory (:class:`~edgelam.runs.RunDir`): ``config.json``, ``metrics.jsonl``
   (``kind="train"``: step, loss, sum rate per user, lr, seconds; ``kind="val"``: % of WMMSE
   on a small fixed validation set; ``kind="eval"``: one record per evaluated size, and with
   ``input='pilots'`` one per pilot SNR), ``summary.json`` and ``sum_rate_vs_size.png``;
2. the model (:func:`~edgelam.models.beamformers.build_graph_beamformer`: GNN -> token
   projection -> frozen GPT-2 with LoRA -> beam head -> power projection), Adam with linear
   warm-up and cosine decay;
3. the loop: step ``s`` draws ``groups`` size groups, each a batch of ``batch_size`` channels of
   one ``(K, M)`` (``K`` uniform in ``users``, ``M`` from ``antennas``), a channel model from
   ``channel_models`` and a per-sample SNR uniform in ``snr_db`` (``P = 1``,
   :math:`\sigma^2 = 10^{-\mathrm{SNR}/10}`); all of it seeded by ``(seed, s)``, so the run is a
   function of the step index and ``checkpoint/`` resumes it bit for bit. The loss is the
   negative sum rate (:func:`~edgelam.airinterface.beamforming.problem.sum_rate`) per user,
   averaged over samples and summed over groups: no labels, no WMMSE targets. With
   ``model.input='pilots'`` each group also draws a pilot SNR, the users send DFT pilots
   (:mod:`~edgelam.airinterface.beamforming.pilots`), and the model sees only ``Y`` and ``X``
   while the loss uses the true channels (end-to-end training);
4. evaluation (:mod:`~edgelam.airinterface.beamforming.graph_lam_eval`) on a grid of sizes,
   seen and unseen, as % of the WMMSE sum rate on the same channels.

38.901 channels come from pools of independent single-user channels per ``(model, M)``
(:func:`~edgelam.airinterface.beamforming.channels.tr38901_channels`, unit average gain), from
which each instance draws ``K`` distinct users, so any ``K`` costs nothing extra.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgelam.airinterface.beamforming.channels import (
    BEAMFORMING_CHANNEL_MODELS,
    tr38901_channels,
)
from edgelam.airinterface.beamforming.graph_lam_checkpoint import (
    checkpoint_dir,
    load_precoder,
    load_training_state,
    save_graph_lam,
)
from edgelam.airinterface.beamforming.pilots import (
    pilot_matrix,
    pilot_noise_power,
    transmit_pilots,
)
from edgelam.airinterface.beamforming.problem import rayleigh_channels, sum_rate
from edgelam.config import ConfigError, option, to_dict
from edgelam.models.beamformers import GraphBeamformerConfig, build_graph_beamformer
from edgelam.progress import progress_bar
from edgelam.runs import RunDir
from edgelam.seeding import derive_seed

__all__ = ["ChannelSampler", "GraphLAMConfig", "load_precoder", "sample_group", "train_graph_lam"]


@dataclass
class GraphLAMConfig:
    """Everything that determines a graph-LAM training run (``edgelam beamform train``)."""

    model: GraphBeamformerConfig = field(
        default_factory=GraphBeamformerConfig,
        metadata={"help": "the beamformer architecture (a [model] table in the config file)"},
    )
    channel_models: tuple[str, ...] = option(
        ("rayleigh",),
        f"training channel models, one drawn per size group: {BEAMFORMING_CHANNEL_MODELS}",
    )
    users: tuple[int, int] = option((2, 8), "range of users K per instance (inclusive)")
    antennas: tuple[int, ...] = option((8, 16), "BS antenna counts M drawn per size group")
    snr_db: tuple[float, float] = option(
        (0.0, 20.0), "per-sample SNR range 10 log10(P / sigma^2) in dB (unit-gain channels)"
    )
    pilot_snr_db: tuple[float, float] = option(
        (-10.0, 20.0), "pilot SNR range in dB, one per size group (model.input='pilots')"
    )
    steps: int = option(400, "optimiser steps")
    groups: int = option(2, "size groups (K, M) per step, losses summed")
    batch_size: int = option(64, "channel instances per size group")
    lr: float = option(1e-3, "peak learning rate (Adam)")
    warmup_steps: int = option(20, "linear warm-up steps, then cosine decay")
    min_lr_ratio: float = option(0.1, "final learning rate as a fraction of lr")
    grad_clip: float = option(1.0, "clip the gradient norm to this (0: off)")
    pool_size: int = option(4096, "single-user 38.901 channels generated per (model, M)")
    val_every: int = option(100, "validation % of WMMSE every this many steps (0: off)")
    val_samples: int = option(64, "validation instances per seen size (K = max, M each)")
    checkpoint_every: int = option(100, "write checkpoint/ every this many steps")
    eval_users: tuple[int, ...] = option((2, 4, 6, 8, 10, 12), "K grid of the final evaluation")
    eval_antennas: tuple[int, ...] = option((8, 16, 24, 32), "M grid of the final evaluation")
    eval_channel_model: str = option("rayleigh", "channel model of the final evaluation")
    eval_samples: int = option(256, "test instances per evaluated size")
    eval_pilot_snr_db: tuple[float, ...] = option(
        (-10.0, 0.0, 10.0, 20.0), "pilot SNRs of the final evaluation (model.input='pilots')"
    )
    wmmse_max_iter: int = option(500, "WMMSE iteration cap of the reference")
    seed: int = option(0, "seed of the model, the training draws and the test sets")

    def __post_init__(self) -> None:
        for name in ("steps", "groups", "batch_size", "pool_size", "val_samples", "eval_samples"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("val_every", "warmup_steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if self.checkpoint_every < 1:
            raise ConfigError(f"checkpoint_every: must be >= 1, got {self.checkpoint_every}")
        bad = [m for m in (*self.channel_models, self.eval_channel_model)
               if m not in BEAMFORMING_CHANNEL_MODELS]  # fmt: skip
        if bad or not self.channel_models:
            raise ConfigError(
                f"channel_models: {bad or '()'} not among {list(BEAMFORMING_CHANNEL_MODELS)}"
            )
        if not 1 <= self.users[0] <= self.users[1]:
            raise ConfigError(f"users: need 1 <= low <= high, got {self.users}")
        if not self.antennas or min(self.antennas) < 1:
            raise ConfigError(f"antennas: need positive counts, got {self.antennas}")
        if self.snr_db[0] > self.snr_db[1] or self.pilot_snr_db[0] > self.pilot_snr_db[1]:
            raise ConfigError(f"snr_db / pilot_snr_db: need low <= high, got {self.snr_db}")
        if self.lr <= 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError("lr / min_lr_ratio: need lr > 0 and ratio in [0, 1]")
        if self.model.input == "pilots" and self.users[1] > self.model.pilot_length:
            raise ConfigError(
                f"users: K up to {self.users[1]} needs model.pilot_length >= K orthogonal "
                f"pilots, got {self.model.pilot_length}"
            )


class ChannelSampler:
    """Draws channel sets ``[B, K, M]`` of any model and size (see the module docstring).

    Args:
        pool_size: single-user 38.901 channels per ``(model, M)`` pool.
        seed: seeds the pools (each pool by ``(seed, model, M)``).
    """

    def __init__(self, pool_size: int, seed: int) -> None:
        self.pool_size, self.seed = pool_size, seed
        self.pools: dict[tuple[str, int], torch.Tensor] = {}

    def pool(self, model: str, antennas: int) -> torch.Tensor:
        """The ``[pool_size, M]`` pool of ``model`` (generated on first use)."""
        key = (model, antennas)
        if key not in self.pools:
            seed = derive_seed(self.seed, BEAMFORMING_CHANNEL_MODELS.index(model), antennas)
            H = tr38901_channels(model, self.pool_size, 1, antennas, seed=seed)
            self.pools[key] = H[:, 0]
        return self.pools[key]

    def sample(
        self, model: str, batch: int, users: int, antennas: int, generator: torch.Generator
    ) -> torch.Tensor:
        """``batch`` instances of ``users`` distinct users each.

        Shapes:
            returns ``[batch, users, antennas]`` complex64.
        """
        if model == "rayleigh":
            return rayleigh_channels(batch, users, antennas, generator=generator)
        pool = self.pool(model, antennas)
        if users > len(pool):
            raise ConfigError(f"pool_size: {len(pool)} is smaller than K = {users} users")
        index = torch.rand(batch, len(pool), generator=generator).topk(users, dim=1).indices
        return pool[index]


def sample_group(
    cfg: GraphLAMConfig, sampler: ChannelSampler, generator: torch.Generator
) -> dict[str, Any]:
    """One training size group: channel model, ``K``, ``M``, channels and noise powers.

    Returns:
        ``{"model", "K", "M", "H" [B, K, M], "noise_power" [B], "pilot_snr_db"}``.
    """
    model = cfg.channel_models[
        int(torch.randint(len(cfg.channel_models), (1,), generator=generator))
    ]
    K = int(torch.randint(cfg.users[0], cfg.users[1] + 1, (1,), generator=generator))
    M = cfg.antennas[int(torch.randint(len(cfg.antennas), (1,), generator=generator))]
    H = sampler.sample(model, cfg.batch_size, K, M, generator)
    lo, hi = cfg.snr_db
    snr = lo + (hi - lo) * torch.rand(cfg.batch_size, generator=generator)
    plo, phi = cfg.pilot_snr_db
    pilot_snr = plo + (phi - plo) * float(torch.rand((), generator=generator))
    return {"model": model, "K": K, "M": M, "H": H, "noise_power": 10 ** (-snr / 10),
            "pilot_snr_db": pilot_snr}  # fmt: skip


def precode_group(
    model: nn.Module, group: dict[str, Any], generator: torch.Generator | None = None
) -> torch.Tensor:
    """Run the beamformer on a group: on ``H``, or end to end on simulated pilots.

    Shapes:
        returns W ``[B, M, K]`` complex.
    """
    H, s2 = group["H"], group["noise_power"]
    if model.cfg.input == "channel":
        return model(H, 1.0, s2)
    X = pilot_matrix(H.shape[1], model.cfg.pilot_length, dtype=H.dtype)
    sigma_p = pilot_noise_power(group["pilot_snr_db"])
    Y = transmit_pilots(H, X, sigma_p, generator=generator)
    return model.forward_pilots(Y, X, 1.0, s2, sigma_p)


def _objective(model: nn.Module, groups: list[dict[str, Any]], gen: torch.Generator) -> tuple:
    """Loss (negative per-user sum rate, summed over groups) and the per-group rates."""
    loss, rates = 0.0, []
    for group in groups:
        W = precode_group(model, group, gen)
        rate = sum_rate(group["H"], W, group["noise_power"]).mean() / group["K"]
        loss = loss - rate
        rates.append(rate.item())
    return loss, rates


def train_graph_lam(
    cfg: GraphLAMConfig,
    out_dir: str | Path,
    *,
    resume: bool = True,
    overwrite: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
) -> Path:
    """Train (or resume), evaluate and checkpoint a graph-LAM beamformer into ``out_dir``.

    Args:
        cfg: the run's config.
        out_dir: the run directory.
        resume: continue from ``checkpoint/`` if the directory holds this config's run (a
            finished run is returned as it is).
        overwrite: start over in a directory that holds a run (needs ``resume=False``).
        progress: show a progress bar.
        stop_after: return after this many total steps, as an interruption would (only
            scheduled checkpoints are on disk); for tests.

    Returns:
        ``out_dir``.

    Raises:
        FileExistsError: ``out_dir`` holds a run and neither ``resume`` nor ``overwrite``.
        ConfigError: resuming a run whose stored config differs from ``cfg``.
    """
    from edgelam.airinterface.beamforming.graph_lam_eval import Validator, evaluate_run
    from edgelam.pretrain.train import warmup_cosine

    run = RunDir.create(out_dir, to_dict(cfg), resume=resume, overwrite=overwrite)
    ckpt = checkpoint_dir(run.path)
    if resume and (run.path / "summary.json").exists():
        return run.path
    model, info = build_graph_beamformer(cfg.model, seed=cfg.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    schedule = functools.partial(
        warmup_cosine, warmup=cfg.warmup_steps, total=cfg.steps, min_ratio=cfg.min_lr_ratio
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    step = 0
    if resume and (ckpt / "train_state.pt").exists():
        step = load_training_state(ckpt, model, opt, sched)
    run.drop_metrics(lambda r: r.get("step", 0) > step)  # redone identically below
    sampler = ChannelSampler(cfg.pool_size, cfg.seed)
    validator = Validator(cfg) if cfg.val_every else None

    with progress_bar("graph-LAM", total=cfg.steps, completed=step, enabled=progress) as advance:
        while step < cfg.steps:
            start = time.perf_counter()
            model.train()
            gen = torch.Generator().manual_seed(derive_seed(cfg.seed, step))
            groups = [sample_group(cfg, sampler, gen) for _ in range(cfg.groups)]
            torch.manual_seed(derive_seed(cfg.seed, step, 1))  # dropout, if any
            lr = sched.get_last_lr()[0]
            loss, rates = _objective(model, groups, gen)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"step {step}: loss is {loss.item()}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            sched.step()
            step += 1
            seconds = time.perf_counter() - start
            run.log({"kind": "train", "step": step, "loss": loss.item(), "lr": lr,
                     "rate_per_user": rates, "sizes": [[g["K"], g["M"]] for g in groups],
                     "seconds": seconds})  # fmt: skip
            if validator and (step % cfg.val_every == 0 or step == cfg.steps):
                run.log(validator(model, step))
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                save_graph_lam(ckpt, model, cfg, step, opt, sched, info)
            advance(1)
            if stop_after is not None and stop_after <= step < cfg.steps:
                return run.path

    evaluate_run(run, model, cfg, info)
    return run.path
