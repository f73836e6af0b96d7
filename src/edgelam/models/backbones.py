"""GPT-2 backbones: pretrained weights when the user has them, a loud random fallback otherwise.

:func:`build_gpt2_backbone` returns a Hugging Face ``GPT2Model`` that the predictors feed with
``inputs_embeds`` (never token ids). With ``pretrained`` set it calls the real
``GPT2Model.from_pretrained(pretrained, local_files_only=True)``: a hub id that is in the local
cache, or a local directory written by ``save_pretrained``. It never downloads. If loading fails
(no cached weights, no such directory) it warns with :class:`PretrainedWeightsUnavailable` and
builds the same architecture at random initialisation, seeded. What happened is recorded on the
model as ``model.build_info`` (a :class:`BackboneInfo`), so experiments can report it.

A checkpoint that loads but does not match the configured architecture (width, heads, fewer
layers than asked for, fewer positions) is a user error: it raises :class:`ConfigError` rather
than silently training a different model.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

from edgelam.config import ConfigError, option
from edgelam.models.layers import seeded

if TYPE_CHECKING:
    from transformers import GPT2Config, GPT2Model

__all__ = [
    "GPT2_SMALL",
    "BackboneConfig",
    "BackboneInfo",
    "PretrainedWeightsUnavailable",
    "build_gpt2_backbone",
]

#: GPT-2 small (124M): width, heads, layers, context length, vocabulary.
GPT2_SMALL = {"d_model": 768, "n_head": 12, "n_layer": 12, "n_positions": 1024, "vocab": 50257}

_AUTO = "auto"


class PretrainedWeightsUnavailable(UserWarning):
    """Pretrained weights could not be loaded locally; a random-init backbone is used instead."""


@dataclass
class BackboneConfig:
    """Which GPT-2 backbone to build, and where its pretrained weights live."""

    name: Literal["gpt2", "custom"] = option(
        "gpt2", "'gpt2': GPT-2 small (768 wide, 12 heads); 'custom': d_model/n_head given here"
    )
    num_layers: int = option(6, "keep the first num_layers transformer blocks (LLM4CP: 6)")
    d_model: int | None = option(None, "hidden width (custom only; gpt2 is 768)")
    n_head: int | None = option(None, "attention heads, must divide d_model (custom only)")
    n_positions: int = option(1024, "learned position embeddings (GPT-2: 1024); >= history")
    pretrained: str | None = option(
        _AUTO,
        "hub id (from the local cache only) or local directory of weights; 'edgelam-wireless': "
        "the shipped pre-trained wireless backbone, or a directory written by edgelam pretrain; "
        "null: random init; 'auto': 'gpt2' for name gpt2, null for custom",
    )
    random_init_vocab_size: int = option(
        1,
        "token-embedding rows of a random-init backbone (never used: predictors feed "
        "inputs_embeds); 50257 reproduces GPT-2's parameter count",
    )

    def __post_init__(self) -> None:
        if self.name not in ("gpt2", "custom"):
            raise ConfigError(f"name: {self.name!r} is not one of ['gpt2', 'custom']")
        if self.pretrained == _AUTO:
            self.pretrained = "gpt2" if self.name == "gpt2" else None
        if self.name == "gpt2":
            for field, value in (("d_model", self.d_model), ("n_head", self.n_head)):
                if value is not None and value != GPT2_SMALL[field]:
                    raise ConfigError(
                        f"{field}: GPT-2 small has {field}={GPT2_SMALL[field]}, got {value}; "
                        "use name='custom' for another size"
                    )
            self.d_model, self.n_head = GPT2_SMALL["d_model"], GPT2_SMALL["n_head"]
            if not 1 <= self.num_layers <= GPT2_SMALL["n_layer"]:
                raise ConfigError(f"num_layers: must be in 1..12 for gpt2, got {self.num_layers}")
        else:
            if self.d_model is None or self.n_head is None:
                raise ConfigError("d_model: name='custom' needs d_model and n_head")
            if self.d_model < 1 or self.n_head < 1 or self.d_model % self.n_head:
                raise ConfigError(
                    f"n_head: must be positive and divide d_model={self.d_model}, got {self.n_head}"
                )
            if self.num_layers < 1:
                raise ConfigError(f"num_layers: must be >= 1, got {self.num_layers}")
        if self.n_positions < 1:
            raise ConfigError(f"n_positions: must be >= 1, got {self.n_positions}")
        if self.random_init_vocab_size < 1:
            raise ConfigError(
                f"random_init_vocab_size: must be >= 1, got {self.random_init_vocab_size}"
            )
        if self.pretrained is not None and not self.pretrained.strip():
            raise ConfigError("pretrained: empty string (use null for random init)")


@dataclass(frozen=True)
class BackboneInfo:
    """How a backbone was built (stored as ``model.build_info``)."""

    pretrained: bool
    """True when the weights came from ``from_pretrained``; False for random init."""
    source: str | None
    """The hub id or directory the weights came from (None for random init)."""
    description: str
    """One line for logs and summaries, e.g. ``gpt2: 6 layers x 768 (12 heads), pretrained``."""


def _describe(cfg: BackboneConfig, pretrained: bool) -> str:
    init = f"pretrained from {cfg.pretrained!r}" if pretrained else "random init"
    return f"{cfg.name}: {cfg.num_layers} layers x {cfg.d_model} ({cfg.n_head} heads), {init}"


def _random_config(cfg: BackboneConfig) -> GPT2Config:
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=cfg.random_init_vocab_size,
        n_positions=cfg.n_positions,
        n_embd=cfg.d_model,
        n_layer=cfg.num_layers,
        n_head=cfg.n_head,
        # token ids are never used; GPT-2's 50256 would be out of a tiny vocabulary
        bos_token_id=None,
        eos_token_id=None,
    )


def _check_loaded(cfg: BackboneConfig, loaded: GPT2Config) -> None:
    """Raise ConfigError when a loaded checkpoint cannot serve as the configured backbone."""
    wanted = {"d_model": cfg.d_model, "n_head": cfg.n_head}
    found = {"d_model": loaded.n_embd, "n_head": loaded.n_head}
    for field, value in wanted.items():
        if found[field] != value:
            raise ConfigError(
                f"{field}: pretrained weights {cfg.pretrained!r} have {field}={found[field]}, "
                f"the config asks for {value}"
            )
    if loaded.n_layer < cfg.num_layers:
        raise ConfigError(
            f"num_layers: pretrained weights {cfg.pretrained!r} have {loaded.n_layer} layers, "
            f"the config asks for {cfg.num_layers}"
        )
    if loaded.n_positions != cfg.n_positions:
        raise ConfigError(
            f"n_positions: pretrained weights {cfg.pretrained!r} have "
            f"{loaded.n_positions} positions, the config asks for {cfg.n_positions}"
        )


def build_gpt2_backbone(cfg: BackboneConfig, seed: int = 0) -> GPT2Model:
    """Build the backbone: the first ``cfg.num_layers`` blocks of a (pretrained) GPT-2.

    Args:
        cfg: which backbone and where its weights are.
        seed: seeds the random initialisation of the fallback (and of ``cfg.pretrained=None``).

    Returns:
        A ``GPT2Model`` in train mode with ``config.n_layer == cfg.num_layers`` and a
        ``build_info`` attribute (:class:`BackboneInfo`).

    Raises:
        ConfigError: the pretrained checkpoint loads but does not match ``cfg``.

    Warns:
        PretrainedWeightsUnavailable: ``cfg.pretrained`` is set but cannot be loaded locally.

    Shapes:
        the model maps ``inputs_embeds [B, L, d_model]`` (``L <= n_positions``) to
        ``last_hidden_state [B, L, d_model]``.

    >>> cfg = BackboneConfig(name="custom", num_layers=1, d_model=8, n_head=2, n_positions=4)
    >>> m = build_gpt2_backbone(cfg)
    >>> m.build_info.pretrained, m.config.n_layer
    (False, 1)
    """
    from transformers import GPT2Model  # slow import: only when a backbone is built

    from edgelam.models.pretrained import resolve_wireless

    # an edgelam checkpoint (``edgelam pretrain``) is loaded into the built predictor by
    # build_llm4cp; here the backbone is only built, at random init
    if cfg.pretrained is not None and resolve_wireless(cfg.pretrained) is None:
        try:
            model = GPT2Model.from_pretrained(
                cfg.pretrained, local_files_only=True, dtype=torch.float32
            )
        except (OSError, ValueError) as err:
            warnings.warn(
                f"could not load pretrained GPT-2 weights {cfg.pretrained!r} from the local "
                f"cache or directory ({type(err).__name__}: {str(err).splitlines()[0]}); "
                f"falling back to a RANDOM-INIT {_describe(cfg, False).split(', ')[0]} "
                f"(seed {seed})",
                PretrainedWeightsUnavailable,
                stacklevel=2,
            )
        else:
            _check_loaded(cfg, model.config)
            model.h = nn.ModuleList(list(model.h)[: cfg.num_layers])
            model.config.n_layer = cfg.num_layers
            model.train()
            model.build_info = BackboneInfo(True, cfg.pretrained, _describe(cfg, True))
            return model
    with seeded(seed):
        model = GPT2Model(_random_config(cfg))
    model.train()
    model.build_info = BackboneInfo(False, None, _describe(cfg, False))
    return model
