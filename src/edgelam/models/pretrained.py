"""The pre-trained wireless backbone on disk: export, verified loading, and applying it.

A checkpoint directory holds two files:

* ``backbone.safetensors`` -- float32 tensors named as in
  :class:`~edgelam.models.llm4cp.LLM4CPPredictor` 's ``state_dict``, in groups (:data:`GROUPS`):

  - ``backbone``: ``backbone.*``, the GPT-2 backbone (``wte``, ``wpe``, ``h.<i>.*``, ``ln_f``);
  - ``csi``: ``patch_mix.*``, ``frequency_branch.*``, ``delay_branch.*``, the CSI
    preprocessing -- 2-D convolutions and a patch mixer that do not depend on ``F``;
  - ``io``: ``token_embedding.*``, ``time_mix.*``, ``head.*``, ``time_projection.*``, which do
    depend on ``F``, ``L_h``, ``L_f`` (the task);
  - ``reconstruction``: ``reconstruction_head.*``, the masked-reconstruction head of
    pre-training (:class:`~edgelam.pretrain.model.PretrainModel`);

  and one metadata entry, ``edgelam-wireless-backbone``: JSON ``{"architecture": ...}``. The
  bytes are a function of the weights alone (same weights, same sha256).

* ``model_card.json`` -- ``format``, ``format_version``, ``architecture`` (the fields of
  :func:`architecture_of`), ``keys`` (tensor names per group), ``sha256`` and ``bytes`` of the
  weights file, and whatever the exporter adds (data configurations, held-out set, seed,
  command, steps, losses, evaluation, versions).

:func:`load_pretrained_backbone` refuses weights whose sha256 differs from the card's;
:func:`apply_pretrained` loads chosen groups (default ``backbone`` and ``csi``) into a freshly
built predictor after checking that every architecture field those groups depend on matches.
This module imports nothing above :mod:`edgelam.models`, so model-building code may use it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgelam.config import ConfigError
from edgelam.models.llm4cp import LLM4CPPredictor

__all__ = [
    "CARD_FILE",
    "FORMAT",
    "GROUPS",
    "GROUP_FIELDS",
    "WEIGHTS_FILE",
    "WIRELESS",
    "CheckpointError",
    "apply_pretrained",
    "architecture_of",
    "export_pretrained",
    "file_sha256",
    "load_pretrained_backbone",
    "resolve_wireless",
    "shipped_checkpoint_dir",
    "wireless_architecture",
]

FORMAT = "edgelam-wireless-backbone"
FORMAT_VERSION = 1
WEIGHTS_FILE = "backbone.safetensors"
CARD_FILE = "model_card.json"

#: Tensor-name prefixes of each group of the weights file.
GROUPS: dict[str, tuple[str, ...]] = {
    "backbone": ("backbone.",),
    "csi": ("patch_mix.", "frequency_branch.", "delay_branch."),
    "io": ("token_embedding.", "time_mix.", "head.", "time_projection."),
    "reconstruction": ("reconstruction_head.",),
}

_BACKBONE_FIELDS = (
    "backbone.d_model",
    "backbone.n_head",
    "backbone.num_layers",
    "backbone.n_positions",
    "normalization",
)
#: Architecture fields (LLM4CPConfig names) that must match to load each group.
GROUP_FIELDS: dict[str, tuple[str, ...]] = {
    "backbone": _BACKBONE_FIELDS,
    "csi": ("patch_size", "res_dim", "res_layers", "normalization"),
    "io": ("num_subcarriers", "history_slots", "future_slots", *_BACKBONE_FIELDS),
    "reconstruction": ("num_subcarriers", *_BACKBONE_FIELDS),
}


#: Name of the backbone pre-trained by ``edgelam pretrain`` and shipped with the package.
WIRELESS = "edgelam-wireless"


def shipped_checkpoint_dir() -> Path:
    """Directory of the shipped ``edgelam-wireless`` checkpoint (package data)."""
    return Path(__file__).with_name("weights") / WIRELESS


def resolve_wireless(pretrained: str | None) -> Path | None:
    """The checkpoint directory meant by a ``BackboneConfig.pretrained`` value, if any.

    ``"edgelam-wireless"`` is the shipped checkpoint; a directory holding a model card (written
    by ``edgelam pretrain``) is itself; anything else (a Hugging Face id or directory, None) is
    not an edgelam checkpoint.
    """
    if pretrained is None:
        return None
    if pretrained == WIRELESS:
        return shipped_checkpoint_dir()
    path = Path(pretrained)
    return path if (path / CARD_FILE).is_file() else None


def wireless_architecture(path: str | Path | None = None) -> dict[str, Any]:
    """The architecture recorded in a checkpoint's card (default: the shipped one)."""
    card_path = Path(path or shipped_checkpoint_dir()) / CARD_FILE
    if not card_path.is_file():
        raise FileNotFoundError(f"{card_path}: model card missing")
    return json.loads(card_path.read_text())["architecture"]


class CheckpointError(ValueError):
    """A pre-trained checkpoint is corrupted, tampered with, or inconsistent with its card."""


def architecture_of(predictor: LLM4CPPredictor) -> dict[str, Any]:
    """The fields that fix the shapes and semantics of a predictor's weights.

    Keys are :class:`~edgelam.models.llm4cp.LLM4CPConfig` field names (``backbone.*`` for the
    backbone's).
    """
    gpt = predictor.backbone.config
    return {
        "history_slots": predictor.history_slots,
        "future_slots": predictor.future_slots,
        "num_subcarriers": predictor.num_subcarriers,
        "patch_size": predictor.patch_size,
        "res_dim": predictor.frequency_branch[0].out_channels,
        "res_layers": len(predictor.frequency_branch) - 2,
        "normalization": predictor.normalization,
        "backbone.d_model": gpt.n_embd,
        "backbone.n_head": gpt.n_head,
        "backbone.num_layers": gpt.n_layer,
        "backbone.n_positions": gpt.n_positions,
    }


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _group(name: str) -> str | None:
    for group, prefixes in GROUPS.items():
        if name.startswith(prefixes):
            return group
    return None


def export_pretrained(
    model: nn.Module, out_dir: str | Path, card: Mapping[str, Any] | None = None
) -> Path:
    """Write ``backbone.safetensors`` and ``model_card.json`` into ``out_dir``.

    Args:
        model: a :class:`~edgelam.pretrain.model.PretrainModel` (its reconstruction head is
            exported too) or a bare :class:`LLM4CPPredictor`; without LoRA layers.
        out_dir: destination directory (created).
        card: extra model-card entries (data, seed, command, losses, evaluation, ...).

    Returns:
        The path of the weights file.

    Raises:
        ValueError: the model carries LoRA layers (merge or export before applying LoRA).
    """
    from safetensors.torch import save_file

    predictor = getattr(model, "predictor", model)
    if not isinstance(predictor, LLM4CPPredictor):
        raise TypeError(f"expected an LLM4CPPredictor, got {type(predictor).__name__}")
    state = {  # a PretrainModel's per-F extras ("variants.") serve pre-training only
        k.removeprefix("predictor."): v.detach().cpu().contiguous()
        for k, v in model.state_dict().items()
        if not k.startswith("variants.")
    }
    if any("lora_" in k or "base_layer" in k for k in state):
        raise ValueError("export_pretrained: the model carries LoRA layers; export without LoRA")
    keys: dict[str, list[str]] = {g: [] for g in GROUPS}
    for name in state:
        group = _group(name)
        if group is None:
            raise ValueError(f"export_pretrained: tensor {name!r} belongs to no group")
        keys[group].append(name)
    architecture = architecture_of(predictor)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / WEIGHTS_FILE
    tmp = weights.with_name(weights.name + ".tmp")
    # one metadata key: safetensors writes several in random (hash-map) order, and the file's
    # bytes, hence its sha256, must be a function of the weights alone
    meta = {FORMAT: json.dumps({"architecture": architecture}, sort_keys=True)}
    save_file(state, str(tmp), metadata=meta)
    os.replace(tmp, weights)
    record = {
        **dict(card or {}),
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": architecture,
        "keys": {g: sorted(v) for g, v in keys.items() if v},
        "weights_file": WEIGHTS_FILE,
        "sha256": file_sha256(weights),
        "bytes": weights.stat().st_size,
        "num_parameters": {g: sum(state[k].numel() for k in v) for g, v in keys.items() if v},
    }
    card_path = out_dir / CARD_FILE
    tmp = card_path.with_name(card_path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, card_path)
    return weights


def load_pretrained_backbone(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load and verify a checkpoint: a directory, or its ``backbone.safetensors`` file.

    Returns:
        ``(state, card)``: the tensors by name and the model card, with ``card["loaded_from"]``
        set to the weights path.

    Raises:
        FileNotFoundError: the weights file or the model card is missing (named).
        CheckpointError: the card is not an edgelam wireless-backbone card, the weights' sha256
            differs from the card's (both named), or a tensor listed by the card is missing.
    """
    from safetensors.torch import load_file

    path = Path(path)
    weights = path / WEIGHTS_FILE if path.is_dir() or not path.suffix else path
    card_path = weights.parent / CARD_FILE
    for file, what in ((weights, "pre-trained weights"), (card_path, "model card")):
        if not file.is_file():
            raise FileNotFoundError(f"{file}: {what} missing (checkpoint {path})")
    try:
        card = json.loads(card_path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{card_path}: model card is not valid JSON ({err})") from err
    if card.get("format") != FORMAT or card.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{card_path}: not a {FORMAT} v{FORMAT_VERSION} model card "
            f"(format={card.get('format')!r}, version={card.get('format_version')!r})"
        )
    actual = file_sha256(weights)
    if actual != card.get("sha256"):
        raise CheckpointError(
            f"{weights}: sha256 {actual} does not match sha256 {card.get('sha256')} recorded in "
            f"{card_path}; the weights were modified or corrupted, or the card is another's"
        )
    state = load_file(str(weights))
    listed = {k for names in card.get("keys", {}).values() for k in names}
    missing = sorted(listed - set(state))
    if missing:
        raise CheckpointError(f"{weights}: tensors listed in {card_path} are missing: {missing}")
    card["loaded_from"] = str(weights)
    return state, card


def _target_name(name: str, own: Mapping[str, torch.Tensor]) -> str | None:
    """The model's name for checkpoint tensor ``name`` (a LoRA-wrapped layer adds base_layer)."""
    if name in own:
        return name
    stem, _, leaf = name.rpartition(".")
    wrapped = f"{stem}.base_layer.{leaf}"
    return wrapped if wrapped in own else None


def apply_pretrained(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    card: Mapping[str, Any],
    parts: Iterable[str] = ("backbone", "csi"),
) -> list[str]:
    """Copy the checkpoint's ``parts`` into a built predictor (in place, no autograd).

    The token embedding, head and time projection (group ``io``) are F- and task-specific and
    by default keep their initialisation, to be trained in fine-tuning; pass ``parts`` with
    ``"io"`` to load them too when ``F``, ``L_h`` and ``L_f`` match. The backbone's token
    embedding ``wte`` is never loaded (predictors feed ``inputs_embeds``). LoRA layers applied
    before loading are fine: base weights load into ``base_layer``, adapters stay as they are.
    ``requires_grad`` is not changed. ``backbone.build_info`` records the source.

    Args:
        model: an :class:`LLM4CPPredictor` (or a model whose ``predictor`` is one).
        state, card: from :func:`load_pretrained_backbone`.
        parts: groups of :data:`GROUPS` to load.

    Returns:
        The names of the model tensors that were overwritten.

    Raises:
        ConfigError: an architecture field that ``parts`` depend on differs between the card
            and the model (the field and both values are named), or an unknown part.
        CheckpointError: a tensor of ``parts`` has no counterpart in the model.
    """
    predictor = getattr(model, "predictor", model)
    parts = tuple(parts)
    unknown = [p for p in parts if p not in GROUPS]
    if unknown:
        raise ConfigError(f"parts: {unknown} are not among {list(GROUPS)}")
    ours, theirs = architecture_of(predictor), card["architecture"]
    for part in parts:
        for field in GROUP_FIELDS[part]:
            if theirs.get(field) != ours[field]:
                raise ConfigError(
                    f"{field}: the pre-trained checkpoint ({card.get('loaded_from', 'card')}) has "
                    f"{field}={theirs.get(field)!r}, the model has {field}={ours[field]!r}; "
                    f"build the model with the card's architecture to load its {part!r} weights"
                )
    own = {k.removeprefix("predictor."): v for k, v in model.state_dict(keep_vars=True).items()}
    loaded = []
    with torch.no_grad():
        for name, value in state.items():
            if _group(name) not in parts or name.startswith("backbone.wte."):
                continue
            dest = _target_name(name, own)
            if dest is None:
                raise CheckpointError(f"{name}: checkpoint tensor has no counterpart in the model")
            if own[dest].shape != value.shape:
                raise CheckpointError(
                    f"{name}: checkpoint shape {list(value.shape)} != model {list(own[dest].shape)}"
                )
            own[dest].copy_(value)
            loaded.append(dest)
    info = getattr(predictor.backbone, "build_info", None)
    if info is not None and "backbone" in parts:
        predictor.backbone.build_info = type(info)(
            True,
            card.get("loaded_from"),
            f"{info.description.split(', ')[0]}, pre-trained {FORMAT} "
            f"(sha256 {str(card.get('sha256'))[:12]})",
        )
    return loaded
