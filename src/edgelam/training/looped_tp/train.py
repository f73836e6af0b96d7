"""Training a looped lightweight LAM with tensor parallelism over edge devices.

:func:`train_looped_tp` reads top to bottom and runs unchanged in one process or in one process
per role (the ``link``):

1. the run directory (server): ``config.json``, ``metrics.jsonl`` (``kind="train"`` per step:
   loss, lr, real wall-clock seconds, simulated latency with its compute/communication
   breakdown per device, bits per device; ``kind="eval"``: validation loss), ``summary.json``;
2. the data (:mod:`~edgelam.training.looped_tp.data`; loaded only where devices run);
3. the model, built from the seed, its partition (:func:`~edgelam.training.looped_tp.partition.plan`,
   decided by the server and agreed by all) and the shards (:func:`~edgelam.training.looped_tp.tp.shard`);
4. one AdamW per part (weight decay on matrices only, linear warm-up then cosine decay); AdamW is
   elementwise, so the sharded optimisers take exactly the dense model's steps;
5. the loop: batch ``s`` and its mask depend on ``(seed, s)`` only; every ``checkpoint_every``
   steps each role saves ``checkpoints/step-<s>/<role>.pt`` and the server then points
   ``checkpoints/latest.json`` at it, so an interrupted run resumes exactly;
6. the export (:mod:`~edgelam.training.looped_tp.export`): memory measured on the slices,
   the dense checkpoint ``model.safetensors`` with ``model_card.json``, ``summary.json``.

The simulated latency of step ``s`` uses the block fading of round ``s`` of the network with
the plan's (fixed) partition and bandwidth split; the plan itself is made for the mean link
state (no small-scale fading).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from edgelam.config import ConfigError, option, to_dict
from edgelam.network import DEVICE_PRESETS, DeviceProfile, Network, NetworkConfig
from edgelam.pretrain.corpus import CorpusConfig
from edgelam.pretrain.train import warmup_cosine
from edgelam.progress import progress_bar
from edgelam.runs import RunDir, atomic_write_text, save_checkpoint
from edgelam.training.looped_tp.costs import EdgeSystem, TPWorkload, iteration_latency
from edgelam.training.looped_tp.data import label_bits, task_data
from edgelam.training.looped_tp.model import LoopedLAMConfig, build_looped_lam
from edgelam.training.looped_tp.partition import SCHEMES, plan
from edgelam.training.looped_tp.runtime import SERVER, InProcessTPLink, TPLink
from edgelam.training.looped_tp.tp import LoopedTP, shard

__all__ = ["DEVICE_PROFILES", "LoopedTPConfig", "PROFILES", "looped_tp_profile", "train_looped_tp"]

GIB = 2**30
#: Device classes: :data:`~edgelam.network.DEVICE_PRESETS` plus the Jetson Nano the paper
#: names (NVIDIA: 472 GFLOP/s fp16, 4 GB; 10 W mode; 30 % sustained is our assumption).
DEVICE_PROFILES: dict[str, DeviceProfile] = {
    **DEVICE_PRESETS,
    "jetson-nano": DeviceProfile("jetson-nano", 0.472e12, 0.3, 4 * GIB, 10.0),
}


def _small_corpus() -> CorpusConfig:
    return CorpusConfig(models=("tdl-a", "tdl-c"), held_out=("tdl-b",), subcarrier_counts=(8,),
                        held_out_subcarriers=8, bs_arrays=("1x2",), num_configs=2,
                        users_per_config=16, held_out_users=4, subcarrier_spacings_khz=(180.0,))  # fmt: skip


@dataclass
class LoopedTPConfig:
    """Everything that determines a looped-TP training run."""

    devices: int = option(3, "K edge devices holding slices of the shared block")
    partition: Literal["optimal", "equal", "min-storage"] = option(
        "optimal", "optimal: latency-optimal under memory; equal; min-storage: the paper's baseline"
    )
    device_profiles: tuple[str, ...] = option(
        ("smartphone", "jetson-nano", "jetson-agx-orin"),
        f"device classes, one per device (cycled if fewer): {sorted(DEVICE_PROFILES)}",
    )
    device_memory_bytes: tuple[int, ...] = option(
        (), "per-device memory override in bytes (0 or absent: the class's memory)"
    )
    server_profile: str = option("edge-server-a100", "the edge server's device class")
    steps: int = option(200, "optimiser steps")
    batch_size: int = option(16, "sequences per step")
    lr: float = option(1e-3, "peak learning rate (AdamW)")
    warmup_steps: int = option(20, "linear warm-up steps, then cosine decay")
    min_lr_ratio: float = option(0.1, "final learning rate as a fraction of lr")
    weight_decay: float = option(0.01, "AdamW weight decay of matrices (not biases/norms)")
    mask_ratio: float = option(0.3, "share of patches (csi) or tokens (mlm) masked")
    mask_patch_slots: int = option(4, "csi: slots per masked patch (divides seq_len)")
    mask_patch_subcarriers: int = option(2, "csi: subcarriers per masked patch (divides F)")
    text_file: str = option("", "mlm: the plain-text corpus (UTF-8)")
    tokenizer: Literal["char", "word"] = option("char", "mlm: character or whitespace-word tokens")
    val_fraction: float = option(0.1, "share of users (csi) or windows (mlm) held out")
    train_snr_db: tuple[float, float] = option((10.0, 25.0), "csi: observation SNR range [dB]")
    eval_snr_db: float = option(20.0, "csi: observation SNR of validation items [dB]")
    eval_every: int = option(50, "validate every this many steps (and at the end)")
    eval_batches: int = option(4, "validation batches per evaluation")
    checkpoint_every: int = option(50, "save a resumable checkpoint every this many steps")
    cache_dir: str = option("data/looped-tp", "csi: where corpus files are generated and cached")
    dtype: Literal["float32", "float64"] = option("float32", "parameters, activations, payloads")
    seed: int = option(0, "seed of init, batches, masks, noise and the network drop")
    model: LoopedLAMConfig = field(default_factory=lambda: LoopedLAMConfig(seq_len=16),
                                   metadata={"help": "the looped LAM"})  # fmt: skip
    corpus: CorpusConfig = field(default_factory=_small_corpus,
                                 metadata={"help": "csi: the 38.901 corpus"})  # fmt: skip
    network: NetworkConfig = field(
        default_factory=lambda: NetworkConfig(uplink_bandwidth_hz=20e6, downlink_bandwidth_hz=20e6),
        metadata={"help": "the cell; num_devices is set to devices"},
    )

    def __post_init__(self) -> None:
        for name in ("devices", "steps", "batch_size", "eval_every", "eval_batches",
                     "checkpoint_every", "mask_patch_slots", "mask_patch_subcarriers"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.partition.replace("-", "_") not in SCHEMES:
            raise ConfigError(f"partition: {self.partition!r} is not one of {list(SCHEMES)}")
        for name in (*self.device_profiles, self.server_profile):
            if name not in DEVICE_PROFILES:
                raise ConfigError(
                    f"device_profiles: {name!r} is not one of {sorted(DEVICE_PROFILES)}"
                )
        if not self.device_profiles:
            raise ConfigError("device_profiles: need at least one device class")
        if len(self.device_memory_bytes) not in (0, self.devices) or any(
            m < 0 for m in self.device_memory_bytes
        ):
            raise ConfigError(f"device_memory_bytes: need none or {self.devices} values >= 0")
        if self.lr <= 0 or self.warmup_steps < 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError("lr: need lr > 0, warmup_steps >= 0, 0 <= min_lr_ratio <= 1")
        if not 0 < self.mask_ratio < 1 or not 0 <= self.val_fraction < 1:
            raise ConfigError("mask_ratio: must be in (0, 1); val_fraction in [0, 1)")
        if self.network.num_devices != self.devices:
            self.network = dataclasses.replace(self.network, num_devices=self.devices)
        m = self.model
        if m.task == "csi":
            if self.corpus.history_slots != m.seq_len:
                raise ConfigError(
                    f"model.seq_len: {m.seq_len} differs from corpus.history_slots={self.corpus.history_slots}"
                )
            for name, axis in (
                ("mask_patch_slots", m.seq_len),
                ("mask_patch_subcarriers", m.num_subcarriers),
            ):
                if axis % getattr(self, name):
                    raise ConfigError(f"{name}: {getattr(self, name)} must divide {axis}")
        elif not self.text_file:
            raise ConfigError("text_file: task mlm needs a plain-text corpus file")

    def device_list(self) -> list[DeviceProfile]:
        """The ``K`` device profiles (classes cycled; memory overrides applied)."""
        out = []
        for k in range(self.devices):
            prof = DEVICE_PROFILES[self.device_profiles[k % len(self.device_profiles)]]
            mem = self.device_memory_bytes[k] if self.device_memory_bytes else 0
            out.append(dataclasses.replace(prof, memory_bytes=mem) if mem else prof)
        return out


def _tiny() -> LoopedTPConfig:
    model = LoopedLAMConfig(num_subcarriers=8, seq_len=8, d_model=24, embed_dim=12, n_head=6,
                            ffn_dim=48, loops=3)  # fmt: skip
    corpus = dataclasses.replace(
        _small_corpus(), history_slots=8, future_slots=2, users_per_config=8
    )
    return LoopedTPConfig(steps=12, batch_size=8, lr=3e-3, warmup_steps=2, eval_every=6,
                          eval_batches=1, checkpoint_every=6, mask_patch_slots=2, model=model,
                          corpus=corpus)  # fmt: skip


def _quick() -> LoopedTPConfig:
    model = LoopedLAMConfig(num_subcarriers=8, seq_len=16, d_model=96, embed_dim=48, n_head=6,
                            ffn_dim=288, loops=6)  # fmt: skip
    corpus = dataclasses.replace(_small_corpus(), num_configs=6, users_per_config=64)
    return LoopedTPConfig(steps=600, batch_size=32, lr=2e-3, warmup_steps=40, eval_every=50,
                          checkpoint_every=100, model=model, corpus=corpus)  # fmt: skip


#: Named starting points: ``quick`` (a few minutes on 2 CPU cores), ``tiny`` (seconds, tests).
PROFILES = {"quick": _quick, "tiny": _tiny}


def looped_tp_profile(name: str) -> LoopedTPConfig:
    """The config of a named profile."""
    if name not in PROFILES:
        raise ConfigError(f"profile: {name!r} is not one of {sorted(PROFILES)}")
    return PROFILES[name]()


def build_system(cfg: LoopedTPConfig, round_index: int | None = None) -> EdgeSystem:
    """Devices, links (mean state, or block-fading round ``round_index``) and server."""
    net = Network(cfg.network)
    state = None if round_index is None else net.round(round_index)
    return EdgeSystem.from_network(
        net, cfg.device_list(), DEVICE_PROFILES[cfg.server_profile], state
    )


def train_looped_tp(cfg: LoopedTPConfig, out_dir: str | Path, link: TPLink | None = None, *,
                    resume: bool = True, overwrite: bool = False, progress: bool = True,
                    stop_after: int | None = None) -> Path | None:  # fmt: skip
    """Train (or resume) on ``link`` (default: in-process); the server's process writes ``out_dir``.

    Args:
        cfg: the run's config.
        out_dir: the run directory (shared by every process: checkpoints are per role).
        link: the runtime; its number of devices must be ``cfg.devices``.
        resume: continue from ``checkpoints/latest.json`` if the directory holds this run.
        overwrite: start over in a directory that holds a run (with ``resume=False``).
        progress: show a progress bar (server).
        stop_after: return after this many total steps without exporting (tests).

    Returns:
        ``out_dir`` on the server's process, None elsewhere.

    Raises:
        ConfigError: a bad config, a runtime of another size, or resuming another config.
        DeviceMemoryError: the partition does not fit a device (named, with bytes).
    """
    from edgelam.training.looped_tp.export import Measurements, export_run

    link = link or InProcessTPLink(cfg.devices)
    if link.num_devices != cfg.devices:
        raise ConfigError(f"devices: the config has {cfg.devices} but the runtime has {link.num_devices} "
                          f"(torchrun needs --nproc-per-node {cfg.devices + 1})")  # fmt: skip
    is_server, out_dir = link.owns(SERVER), Path(out_dir)
    run = None
    if is_server:
        run = RunDir.create(out_dir, to_dict(cfg), resume=resume, overwrite=overwrite)
        if not resume:
            shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
    link.agree(None)  # the run directory exists before anyone writes into it
    dtype = getattr(torch, cfg.dtype)
    data, model_cfg, data_info = task_data(cfg, link, dtype, progress and is_server)
    model = build_looped_lam(model_cfg, cfg.seed, dtype)
    workload = TPWorkload(
        model_cfg, cfg.batch_size, dtype.itemsize, label_bits(cfg, model_cfg, dtype)
    )
    chosen = link.agree(plan(cfg.partition, workload, build_system(cfg)) if is_server else None)
    server_part, slices = shard(model, chosen.partition)
    parts = {**({"server": server_part} if is_server else {}),
             **{f"device{k}": slices[k] for k in link.devices()}}  # fmt: skip
    del model, slices
    tp = LoopedTP(model_cfg, link, server_part if is_server else None,
                  {k: parts[f"device{k}"] for k in link.devices()})  # fmt: skip
    opts = {role: _adamw(part, cfg) for role, part in parts.items()}
    schedule = functools.partial(warmup_cosine, warmup=cfg.warmup_steps, total=cfg.steps,
                                 min_ratio=cfg.min_lr_ratio)  # fmt: skip
    scheds = {r: torch.optim.lr_scheduler.LambdaLR(o, schedule) for r, o in opts.items()}
    step = _load_checkpoint(out_dir, parts, opts, scheds) if resume else 0
    if run is not None:
        run.drop_metrics(lambda r: r.get("step", 0) > step)
    measured = Measurements()
    start_wall = time.perf_counter()
    with progress_bar(
        "looped-tp", total=cfg.steps, completed=step, enabled=progress and is_server
    ) as advance:
        while step < cfg.steps:
            start = time.perf_counter()
            batch = data.batch(step)
            lr = next(iter(scheds.values())).get_last_lr()[0]
            loss = tp.step(batch.inputs, batch.labels, batch.mask)
            measured.after_backward(parts, tp)
            for role in parts:
                opts[role].step()
                opts[role].zero_grad(set_to_none=True)
                scheds[role].step()
            measured.after_step(opts)
            step += 1
            if run is not None:
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"step {step}: loss is {loss.item()}")
                system = build_system(cfg, round_index=step - 1)  # this step's block fading
                latency = iteration_latency(workload, system, chosen.partition, chosen.bandwidth_hz)
                run.log({"kind": "train", "step": step, "loss": loss.item(), "lr": lr,
                         "wall_seconds": time.perf_counter() - start, "latency": latency.as_dict(),
                         "traffic": link.meter.take()})  # fmt: skip
            if step % cfg.eval_every == 0 or step == cfg.steps:
                val = _evaluate(tp, data, cfg)
                if run is not None:
                    run.log({"kind": "eval", "step": step, "val_loss": val})
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                _save_checkpoint(out_dir, step, parts, opts, scheds, link)
            advance(1)
            if stop_after is not None and stop_after <= step < cfg.steps:
                return out_dir if is_server else None
    export_run(cfg, run, link, parts, model_cfg, chosen, workload, data_info, measured,
               time.perf_counter() - start_wall)  # fmt: skip
    return out_dir if is_server else None


def _adamw(part: torch.nn.Module, cfg: LoopedTPConfig) -> torch.optim.AdamW:
    params = list(part.parameters())
    return torch.optim.AdamW(
        [{"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
         {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}],
        lr=cfg.lr, betas=(0.9, 0.98),
    )  # fmt: skip


def _evaluate(tp: LoopedTP, data: Any, cfg: LoopedTPConfig) -> float | None:
    """Mean loss over the fixed validation batches (None without any); traffic not logged."""
    losses = []
    for batch in data.val_batches(cfg.eval_batches):
        loss = tp.step(batch.inputs, batch.labels, batch.mask, backward=False)
        if loss is not None:
            losses.append(loss.item())
    if tp.link.meter is not None:
        tp.link.meter.take()
    return sum(losses) / len(losses) if losses else None


def _save_checkpoint(
    out_dir: Path, step: int, parts: dict, opts: dict, scheds: dict, link: TPLink
) -> None:
    folder = out_dir / "checkpoints" / f"step-{step}"
    for role, part in parts.items():
        state = {"step": step, "params": part.state_dict(), "optimizer": opts[role].state_dict(),
                 "scheduler": scheds[role].state_dict()}  # fmt: skip
        save_checkpoint(state, folder / f"{role}.pt")
    link.gather(step)  # every role has saved
    if link.owns(SERVER):
        atomic_write_text(out_dir / "checkpoints" / "latest.json", json.dumps({"step": step}))
        for old in (out_dir / "checkpoints").glob("step-*"):
            if old != folder:
                shutil.rmtree(old, ignore_errors=True)
    link.agree(None)


def _load_checkpoint(out_dir: Path, parts: dict, opts: dict, scheds: dict) -> int:
    latest = out_dir / "checkpoints" / "latest.json"
    if not latest.is_file():
        return 0
    step = json.loads(latest.read_text())["step"]
    for role, part in parts.items():
        state = torch.load(
            out_dir / "checkpoints" / f"step-{step}" / f"{role}.pt", weights_only=True
        )
        part.load_state_dict(state["params"])
        opts[role].load_state_dict(state["optimizer"])
        scheds[role].load_state_dict(state["scheduler"])
    return step
