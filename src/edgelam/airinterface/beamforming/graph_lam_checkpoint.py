"""Graph-LAM checkpoints: safetensors weights + a JSON config, and the precoder they give back.

A checkpoint is a directory (``<run>/checkpoint/`` for a training run) holding

* ``model.safetensors`` -- every tensor of the model's ``state_dict`` (backbone, LoRA, GNN,
  heads); metadata ``format`` and ``step``;
* ``graph_lam.json`` -- ``format``, ``format_version``, ``step``, ``model`` (the
  :class:`~edgelam.models.beamformers.GraphBeamformerConfig` as a dict), ``training`` (the
  run's config, if any), ``info`` (parameter counts, backbone source) and the weights' ``sha256``;
* ``train_state.pt`` -- optimiser and scheduler state at ``step`` (training runs only; what
  :func:`load_training_state` needs to resume).

The JSON is written last, so a checkpoint whose weights do not match its card (an interrupted
save, a swapped file) is refused with :class:`~edgelam.models.pretrained.CheckpointError`.
Loading rebuilds the architecture from the JSON alone (no pre-trained backbone is needed: the
weights file holds it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgelam.airinterface.beamforming.problem import check_channels, project_power
from edgelam.config import ConfigError, from_dict, to_dict
from edgelam.models.beamformers import (
    GraphBeamformer,
    GraphBeamformerConfig,
    build_graph_beamformer,
)
from edgelam.models.pretrained import CheckpointError, file_sha256
from edgelam.runs import atomic_write_text, save_checkpoint

__all__ = [
    "FORMAT",
    "GraphLAMPrecoder",
    "checkpoint_dir",
    "load_graph_lam",
    "load_precoder",
    "load_training_state",
    "save_graph_lam",
]

FORMAT = "edgelam-graph-lam"
FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
CARD_FILE = "graph_lam.json"
STATE_FILE = "train_state.pt"


def checkpoint_dir(run_path: str | Path) -> Path:
    """Where a training run keeps its checkpoint."""
    return Path(run_path) / "checkpoint"


def save_graph_lam(
    directory: str | Path,
    model: GraphBeamformer,
    training: Any = None,
    step: int = 0,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    info: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint of ``model`` into ``directory`` (see the module docstring).

    Args:
        directory: the checkpoint directory (created).
        model: the beamformer.
        training: the training config (a dataclass or dict), recorded in the JSON.
        step: optimiser steps done.
        optimizer, scheduler: also written to ``train_state.pt`` when given (for resuming).
        info: build information (from ``build_graph_beamformer``) recorded in the JSON.

    Returns:
        ``directory``.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if optimizer is not None:
        state = {"step": step, "optimizer": optimizer.state_dict()}
        if scheduler is not None:
            state["scheduler"] = scheduler.state_dict()
        save_checkpoint(state, directory / STATE_FILE)
    weights = directory / MODEL_FILE
    tmp = weights.with_name(weights.name + ".tmp")
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(tmp), metadata={"format": FORMAT, "step": str(step)})
    os.replace(tmp, weights)
    record = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "step": step,
        "model": to_dict(model.cfg),
        "training": to_dict(training) if training is not None else None,
        "info": {k: v for k, v in (info or {}).items() if k != "config"},
        "weights_file": MODEL_FILE,
        "sha256": file_sha256(weights),
    }
    atomic_write_text(directory / CARD_FILE, json.dumps(record, indent=2, sort_keys=True))
    return directory


def _resolve(path: str | Path) -> Path:
    """The checkpoint directory meant by a run directory, checkpoint directory or weights file."""
    path = Path(path)
    if path.is_file() and path.suffix == ".safetensors":
        path = path.parent
    for candidate in (path, checkpoint_dir(path)):
        if (candidate / CARD_FILE).is_file():
            return candidate
    if not path.exists():
        raise FileNotFoundError(f"graph-LAM checkpoint not found: {path}")
    raise FileNotFoundError(
        f"{path}: no {CARD_FILE} here or in {checkpoint_dir(path)}; give a graph-LAM run "
        "directory, its checkpoint directory or its model.safetensors"
    )


def _read_card(directory: Path) -> dict[str, Any]:
    card_path, weights = directory / CARD_FILE, directory / MODEL_FILE
    try:
        card = json.loads(card_path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{card_path}: not valid JSON ({err})") from err
    if card.get("format") != FORMAT or card.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{card_path}: not a {FORMAT} v{FORMAT_VERSION} checkpoint "
            f"(format={card.get('format')!r}, version={card.get('format_version')!r})"
        )
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: weights missing (checkpoint {directory})")
    actual = file_sha256(weights)
    if actual != card.get("sha256"):
        raise CheckpointError(
            f"{weights}: sha256 {actual[:16]}... does not match {card_path} "
            f"({str(card.get('sha256'))[:16]}...); the save was interrupted or a file was swapped"
        )
    return card


def _load_weights(directory: Path, model: nn.Module) -> None:
    from safetensors.torch import load_file

    state = load_file(str(directory / MODEL_FILE))
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise CheckpointError(
            f"{directory / MODEL_FILE}: tensors do not match the architecture in {CARD_FILE}: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    model.load_state_dict(state)


def load_graph_lam(path: str | Path) -> tuple[GraphBeamformer, dict[str, Any]]:
    """Rebuild a beamformer from a checkpoint (run directory, checkpoint directory or file).

    Returns:
        ``(model, card)``: the model in eval mode, the parsed ``graph_lam.json``.

    Raises:
        FileNotFoundError: no checkpoint at ``path``.
        CheckpointError: the JSON is not a graph-LAM card, or the weights do not match it.
    """
    directory = _resolve(path)
    card = _read_card(directory)
    arch = json.loads(json.dumps(card["model"]))
    arch["backbone"]["pretrained"] = None  # the weights file holds the backbone
    try:
        cfg = from_dict(GraphBeamformerConfig, arch)
    except ConfigError as err:
        raise CheckpointError(f"{directory / CARD_FILE}: bad model config ({err})") from err
    model, _ = build_graph_beamformer(cfg, seed=0)
    _load_weights(directory, model)
    model.cfg.backbone.pretrained = card["model"]["backbone"]["pretrained"]
    model.eval()
    return model, card


def load_training_state(
    directory: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any
) -> int:
    """Load weights, optimiser and scheduler state of a training checkpoint; returns its step.

    Raises:
        CheckpointError: the weights and the training state are from different steps.
    """
    directory = Path(directory)
    card = _read_card(directory)
    state = torch.load(directory / STATE_FILE, map_location="cpu", weights_only=True)
    if int(state["step"]) != int(card["step"]):
        raise CheckpointError(
            f"{directory}: train_state.pt is at step {state['step']}, the weights at "
            f"step {card['step']} (an interrupted save); start over with --no-resume --overwrite"
        )
    _load_weights(directory, model)
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and "scheduler" in state:
        scheduler.load_state_dict(state["scheduler"])
    return int(state["step"])


class GraphLAMPrecoder:
    """A loaded graph-LAM as a plain precoder ``(H, power, noise_power) -> W`` (no gradients).

    Works for any ``K`` and ``M``; the result has ``H``'s dtype and meets ``||W||_F^2 = P``
    in that dtype. Large batches are processed in chunks of ``chunk`` instances.

    Shapes:
        H: ``[batch, K, M]`` complex; power, noise_power: float or ``[batch]`` ->
        W ``[batch, M, K]``.
    """

    def __init__(self, model: GraphBeamformer, card: Mapping[str, Any], chunk: int = 1024):
        if model.cfg.input != "channel":
            raise ConfigError(
                "checkpoint: this graph-LAM precodes from received pilots (model.input="
                f"{model.cfg.input!r}), not from channel matrices"
            )
        self.model, self.card, self.chunk = model, dict(card), chunk

    def __call__(
        self, H: torch.Tensor, power: float | torch.Tensor, noise_power: float | torch.Tensor
    ) -> torch.Tensor:
        check_channels(H)
        B = H.shape[0]
        p = torch.as_tensor(power, dtype=torch.float32).expand(B)
        s2 = torch.as_tensor(noise_power, dtype=torch.float32).expand(B)
        out = []
        with torch.no_grad():
            for i in range(0, B, self.chunk):
                sl = slice(i, i + self.chunk)
                out.append(self.model(H[sl].to(torch.complex64), p[sl], s2[sl]))
        W = torch.cat(out).to(H.dtype)
        return project_power(W, torch.as_tensor(power, dtype=H.real.dtype).expand(B))


def load_precoder(path: str | Path) -> GraphLAMPrecoder:
    """The precoder of a graph-LAM checkpoint, for ``edgelam beamform eval --method graph-lam``.

    Args:
        path: a run directory written by ``edgelam beamform train``, its ``checkpoint/``
            directory, or the ``model.safetensors`` in it.

    Returns:
        A callable ``precoder(H, power, noise_power) -> W`` (:class:`GraphLAMPrecoder`).

    Raises:
        FileNotFoundError, CheckpointError: see :func:`load_graph_lam`.
        ConfigError: the checkpoint is a pilot-input model.
    """
    model, card = load_graph_lam(path)
    return GraphLAMPrecoder(model, card)
