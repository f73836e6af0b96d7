"""The predictor registry: build any channel predictor by name.

>>> model, info = build_predictor("gru", {"num_subcarriers": 4, "hidden_size": 8}, seed=0)
>>> info["model"], info["trainable_params"] == info["total_params"]
('gru', True)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from edgelam.config import ConfigError, from_dict, to_dict
from edgelam.models.adapters import build_llm4cp, count_parameters
from edgelam.models.layers import seeded
from edgelam.models.llm4cp import LLM4CPConfig
from edgelam.models.recurrent import (
    GRUPredictor,
    LSTMPredictor,
    RecurrentConfig,
    RNNPredictor,
    TransformerConfig,
    TransformerPredictor,
)

__all__ = ["PREDICTORS", "build_predictor", "predictor_config"]

#: Predictor name -> (config dataclass, module class; None where a builder function is used).
PREDICTORS: dict[str, tuple[type, type[nn.Module] | None]] = {
    "llm4cp": (LLM4CPConfig, None),
    "rnn": (RecurrentConfig, RNNPredictor),
    "gru": (RecurrentConfig, GRUPredictor),
    "lstm": (RecurrentConfig, LSTMPredictor),
    "transformer": (TransformerConfig, TransformerPredictor),
}


def predictor_config(name: str, config: Mapping[str, Any] | object | None = None) -> Any:
    """Resolve the config dataclass of predictor ``name`` from a dataclass, a dict or None.

    Raises:
        ConfigError: unknown ``name`` (the allowed names are listed), a dataclass of another
            type, or an invalid dict.
    """
    if name not in PREDICTORS:
        raise ConfigError(f"model: {name!r} is not one of {sorted(PREDICTORS)}")
    cls = PREDICTORS[name][0]
    if config is None:
        return cls()
    if isinstance(config, cls):
        return config
    if isinstance(config, Mapping):
        return from_dict(cls, config)
    raise ConfigError(
        f"model: {name!r} needs a {cls.__name__} or a dict, got {type(config).__name__}"
    )


def build_predictor(
    name: str, config: Mapping[str, Any] | object | None = None, seed: int = 0
) -> tuple[nn.Module, dict[str, Any]]:
    """Build predictor ``name`` (``llm4cp``, ``rnn``, ``gru``, ``lstm``, ``transformer``).

    Args:
        name: which predictor.
        config: its config dataclass, a dict of fields, or None for the defaults.
        seed: seeds every random initialisation of the build.

    Returns:
        ``(model, info)``: the model in train mode and a JSON-ready dict with at least
        ``model``, ``total_params``, ``trainable_params`` and ``config`` (LLM4CP adds the
        backbone's description and whether its weights are pretrained).

    Raises:
        ConfigError: unknown name or invalid config.

    Shapes:
        model: ``[B, L_h, 2F]`` -> ``[B, L_f, 2F]``.
    """
    cfg = predictor_config(name, config)
    if name == "llm4cp":
        return build_llm4cp(cfg, seed=seed)
    module_cls = PREDICTORS[name][1]
    with seeded(seed):
        model = module_cls(cfg)
    total, trainable = count_parameters(model)
    info = {
        "model": name,
        "total_params": total,
        "trainable_params": trainable,
        "config": to_dict(cfg),
    }
    return model, info
