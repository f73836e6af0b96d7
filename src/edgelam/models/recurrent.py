"""Learned baselines of LLM4CP: RNN, GRU and LSTM predictors and a plain Transformer.

All map a CSI history ``[B, L_h, 2F]`` (re/im interleaved) to ``[B, L_f, 2F]`` with the same
per-call input normalisation as LLM4CP (:func:`edgelam.models.layers.normalize_per_call`), so
every predictor sees the same input treatment. None is pre-trained.

Recurrent decoding is an autoregressive rollout, the scheme of LLM4CP's own RNN/GRU/LSTM
baselines: the recurrent stack reads the ``L_h`` embedded history slots; a linear head on the
top hidden state after the last slot predicts slot ``L_h``; that prediction is embedded and fed
back (carrying the recurrent state) to predict the next one, ``L_f`` times. We pick it over a
direct ``hidden -> L_f * 2F`` head because it is what the published baselines do, its parameter
count does not grow with ``L_f``, and it uses the recurrence as a dynamical model. Training
back-propagates through the whole rollout (no teacher forcing), matching test-time use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from edgelam.config import ConfigError, option
from edgelam.models.layers import (
    Normalization,
    check_history,
    denormalize,
    normalize_per_call,
    sinusoidal_positions,
)

__all__ = [
    "GRUPredictor",
    "LSTMPredictor",
    "RNNPredictor",
    "RecurrentConfig",
    "RecurrentPredictor",
    "TransformerConfig",
    "TransformerPredictor",
]


def _check_common(cfg: RecurrentConfig | TransformerConfig) -> None:
    for name in ("history_slots", "future_slots", "num_subcarriers", "num_layers"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name}: must be >= 1, got {getattr(cfg, name)}")
    if not 0.0 <= cfg.dropout < 1.0:
        raise ConfigError(f"dropout: must be in [0, 1), got {cfg.dropout}")
    if cfg.normalization not in ("batch", "sample"):
        raise ConfigError(f"normalization: {cfg.normalization!r} is not one of ['batch', 'sample']")


@dataclass
class RecurrentConfig:
    """RNN / GRU / LSTM predictor (the cell type is the model name, not a field)."""

    history_slots: int = option(16, "past CSI slots fed to the model (L_h)")
    future_slots: int = option(4, "future CSI slots predicted (L_f), by autoregressive rollout")
    num_subcarriers: int = option(48, "subcarriers F (input width 2F, re/im interleaved)")
    hidden_size: int = option(256, "width of the input embedding and of every recurrent layer")
    num_layers: int = option(2, "stacked recurrent layers")
    dropout: float = option(0.0, "dropout between stacked recurrent layers")
    normalization: Normalization = option(
        "batch", "per-call input normalisation: 'batch' (as LLM4CP) or 'sample'"
    )

    def __post_init__(self) -> None:
        _check_common(self)
        if self.hidden_size < 1:
            raise ConfigError(f"hidden_size: must be >= 1, got {self.hidden_size}")


class RecurrentPredictor(nn.Module):
    """Stacked recurrent encoder over the history, then an autoregressive rollout.

    ``Linear(2F -> hidden)`` per slot, ``num_layers`` recurrent layers of width ``hidden``,
    ``Linear(hidden -> 2F)`` head; see the module docstring for the decoding scheme.

    Args:
        cfg: sizes.
        cell: ``"rnn"`` (tanh), ``"gru"`` or ``"lstm"``.

    Shapes:
        history: ``[B, L_h, 2F]`` -> prediction ``[B, L_f, 2F]``.
    """

    def __init__(self, cfg: RecurrentConfig, cell: Literal["rnn", "gru", "lstm"]) -> None:
        super().__init__()
        layers = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}
        if cell not in layers:
            raise ValueError(f"cell must be one of {list(layers)}, got {cell!r}")
        self.cell = cell
        self.history_slots, self.future_slots = cfg.history_slots, cfg.future_slots
        self.num_subcarriers, self.normalization = cfg.num_subcarriers, cfg.normalization
        width = 2 * cfg.num_subcarriers
        self.embed = nn.Linear(width, cfg.hidden_size)
        self.recurrent = layers[cell](
            cfg.hidden_size,
            cfg.hidden_size,
            num_layers=cfg.num_layers,
            batch_first=True,
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
        )
        self.head = nn.Linear(cfg.hidden_size, width)

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        """Predict the next ``L_f`` slots. ``[B, L_h, 2F]`` -> ``[B, L_f, 2F]``."""
        check_history(history, self.history_slots, self.num_subcarriers)
        x, mean, std = normalize_per_call(history, self.normalization)
        out, state = self.recurrent(self.embed(x))
        step = self.head(out[:, -1:])  # [B, 1, 2F]: slot L_h
        predictions = [step]
        for _ in range(self.future_slots - 1):
            out, state = self.recurrent(self.embed(step), state)
            step = self.head(out)
            predictions.append(step)
        return denormalize(torch.cat(predictions, dim=1), mean, std)


class RNNPredictor(RecurrentPredictor):
    """:class:`RecurrentPredictor` with Elman (tanh) RNN layers."""

    def __init__(self, cfg: RecurrentConfig) -> None:
        super().__init__(cfg, "rnn")


class GRUPredictor(RecurrentPredictor):
    """:class:`RecurrentPredictor` with GRU layers."""

    def __init__(self, cfg: RecurrentConfig) -> None:
        super().__init__(cfg, "gru")


class LSTMPredictor(RecurrentPredictor):
    """:class:`RecurrentPredictor` with LSTM layers."""

    def __init__(self, cfg: RecurrentConfig) -> None:
        super().__init__(cfg, "lstm")


@dataclass
class TransformerConfig:
    """Plain Transformer-encoder predictor, trained from scratch."""

    history_slots: int = option(16, "past CSI slots fed to the model (L_h)")
    future_slots: int = option(4, "future CSI slots predicted (L_f)")
    num_subcarriers: int = option(48, "subcarriers F (input width 2F, re/im interleaved)")
    d_model: int = option(128, "token width")
    n_head: int = option(4, "attention heads (must divide d_model)")
    num_layers: int = option(2, "encoder layers")
    dim_feedforward: int = option(512, "hidden width of each feed-forward block")
    dropout: float = option(0.1, "dropout in the encoder layers and after the embedding")
    normalization: Normalization = option(
        "batch", "per-call input normalisation: 'batch' (as LLM4CP) or 'sample'"
    )

    def __post_init__(self) -> None:
        _check_common(self)
        if self.d_model < 1 or self.n_head < 1 or self.d_model % self.n_head:
            raise ConfigError(
                f"n_head: must be positive and divide d_model={self.d_model}, got {self.n_head}"
            )
        if self.dim_feedforward < 1:
            raise ConfigError(f"dim_feedforward: must be >= 1, got {self.dim_feedforward}")


class TransformerPredictor(nn.Module):
    """``Linear(2F -> d)`` + sinusoidal positions, a pre-LN Transformer encoder over the history
    tokens (bidirectional: it sees only the past anyway), ``Linear(d -> 2F)`` per token and
    ``Linear(L_h -> L_f)`` over time (the same head as LLM4CP).

    Shapes:
        history: ``[B, L_h, 2F]`` -> prediction ``[B, L_f, 2F]``.
    """

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.history_slots, self.future_slots = cfg.history_slots, cfg.future_slots
        self.num_subcarriers, self.normalization = cfg.num_subcarriers, cfg.normalization
        width = 2 * cfg.num_subcarriers
        self.embed = nn.Linear(width, cfg.d_model)
        self.register_buffer(
            "positions", sinusoidal_positions(cfg.history_slots, cfg.d_model), persistent=False
        )
        self.embedding_dropout = nn.Dropout(cfg.dropout)
        layer = nn.TransformerEncoderLayer(
            cfg.d_model,
            cfg.n_head,
            cfg.dim_feedforward,
            cfg.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(
            layer, cfg.num_layers, norm=nn.LayerNorm(cfg.d_model), enable_nested_tensor=False
        )
        self.head = nn.Linear(cfg.d_model, width)
        self.time_projection = nn.Linear(cfg.history_slots, cfg.future_slots)

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        """Predict the next ``L_f`` slots. ``[B, L_h, 2F]`` -> ``[B, L_f, 2F]``."""
        check_history(history, self.history_slots, self.num_subcarriers)
        x, mean, std = normalize_per_call(history, self.normalization)
        tokens = self.embedding_dropout(self.embed(x) + self.positions)
        y = self.head(self.encoder(tokens))  # [B, L_h, 2F]
        y = self.time_projection(y.transpose(1, 2)).transpose(1, 2)
        return denormalize(y, mean, std)
