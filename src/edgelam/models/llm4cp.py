"""LLM4CP: a GPT-2-based channel predictor (Liu et al., "LLM4CP: Adapting Large Language Models
for Channel Prediction", JCIN 2024; public code ``liuboxun/LLM4CP``, ``models/GPT4CP.py``).

The predictor maps ``L_h`` past CSI slots of one BS antenna over ``F`` subcarriers to the next
``L_f`` slots. Tensors are real with real/imaginary parts interleaved on the last axis
(``[Re h_0, Im h_0, Re h_1, Im h_1, ...]``, the dataset's convention). In order:

1. per-call normalisation by the mean and std of the input batch (undone at the end);
2. CSI preprocessing in two branches over the ``[B, 2, L_h, F]`` "image" (re/im as channels):
   the frequency domain (the CSI as is) and the delay domain (IFFT over subcarriers); each
   branch mixes patches of ``patch_size`` consecutive slots with one shared
   ``Linear(patch_size, patch_size)``, then Conv2d(2 -> res_dim), ``res_layers`` residual blocks
   with channel ("CSI") attention, Conv2d(res_dim -> 2); the two branches are summed;
3. token embedding: circular Conv1d over time (kernel 3, ``2F -> d_model``) + sinusoidal
   positions + dropout, then a Linear over the time axis (``L_h -> L_h``);
4. the GPT-2 backbone on ``inputs_embeds`` (it adds its own learned positions);
5. output head ``Linear(d_model -> 2F)`` per token and ``Linear(L_h -> L_f)`` over time;
6. de-normalisation.

The model is plain single-device PyTorch: which backbone parameters train (LoRA, layer norms
and positions, or all) is applied afterwards by :mod:`edgelam.models.adapters`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

from edgelam.config import ConfigError, option
from edgelam.models.backbones import BackboneConfig
from edgelam.models.layers import (
    Normalization,
    check_history,
    denormalize,
    normalize_per_call,
    sinusoidal_positions,
)

if TYPE_CHECKING:
    from transformers import GPT2Model

__all__ = ["LLM4CPConfig", "LLM4CPPredictor", "CSIBranch", "ResidualBlock", "ChannelAttention"]

#: GPT-2's Conv1D projections that LoRA may adapt (``attn.c_attn``, ``attn.c_proj``,
#: ``mlp.c_fc``, ``mlp.c_proj``); a bare ``c_proj`` matches both attention and MLP outputs.
LORA_TARGETABLE = ("c_attn", "c_proj", "c_fc")


@dataclass
class LLM4CPConfig:
    """LLM4CP predictor: CSI shape, preprocessing, backbone and which parameters train."""

    history_slots: int = option(16, "past CSI slots fed to the model (L_h)")
    future_slots: int = option(4, "future CSI slots predicted (L_f)")
    num_subcarriers: int = option(48, "subcarriers F (input width 2F, re/im interleaved)")
    patch_size: int = option(4, "consecutive slots mixed per patch; must divide history_slots")
    res_dim: int = option(64, "channels of the residual CSI-attention branches")
    res_layers: int = option(4, "residual blocks per branch")
    dropout: float = option(0.1, "dropout after the token embedding")
    normalization: Normalization = option(
        "batch", "per-call input normalisation: 'batch' (LLM4CP: one mean/std) or 'sample'"
    )
    backbone: BackboneConfig = dataclasses.field(
        default_factory=BackboneConfig, metadata={"help": "the GPT-2 backbone"}
    )
    trainable: Literal["lora", "ln_pe", "full"] = option(
        "ln_pe",
        "backbone parameters that train: 'ln_pe' (LLM4CP: layer norms + position embeddings), "
        "'lora' (LoRA matrices only), 'full' (all but the unused token embedding); the "
        "non-backbone modules always train",
    )
    pretrained_parts: tuple[str, ...] = option(
        ("backbone", "csi"),
        "weight groups loaded from an edgelam pre-trained checkpoint (backbone.pretrained = "
        "'edgelam-wireless' or a pretrain directory): 'backbone', 'csi' (the F-agnostic CSI "
        "branches), 'io' (embedding and heads; needs the same F and slots)",
    )
    lora_rank: int = option(8, "LoRA rank r")
    lora_alpha: int = option(16, "LoRA alpha (update scaled by alpha / r)")
    lora_dropout: float = option(0.0, "dropout on the LoRA branch input")
    lora_targets: tuple[str, ...] = option(
        ("c_attn", "c_proj"),
        "GPT-2 modules adapted by LoRA ('c_proj' = attention and MLP output; "
        "'attn.c_proj' / 'mlp.c_proj' for one of them)",
    )

    def __post_init__(self) -> None:
        for name in ("history_slots", "future_slots", "num_subcarriers", "patch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.history_slots % self.patch_size:
            raise ConfigError(
                f"patch_size: must divide history_slots={self.history_slots}, got {self.patch_size}"
            )
        if self.res_dim < 1 or self.res_layers < 0:
            raise ConfigError(
                f"res_dim: need res_dim >= 1 and res_layers >= 0, "
                f"got {self.res_dim} and {self.res_layers}"
            )
        for name in ("dropout", "lora_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name}: must be in [0, 1), got {getattr(self, name)}")
        if self.normalization not in ("batch", "sample"):
            raise ConfigError(
                f"normalization: {self.normalization!r} is not one of ['batch', 'sample']"
            )
        if self.trainable not in ("lora", "ln_pe", "full"):
            raise ConfigError(
                f"trainable: {self.trainable!r} is not one of ['lora', 'ln_pe', 'full']"
            )
        bad_parts = [p for p in self.pretrained_parts if p not in ("backbone", "csi", "io")]
        if bad_parts:
            raise ConfigError(
                f"pretrained_parts: {bad_parts} are not among ['backbone', 'csi', 'io']"
            )
        if self.lora_rank < 1 or self.lora_alpha <= 0:
            raise ConfigError(
                f"lora_rank: need lora_rank >= 1 and lora_alpha > 0, "
                f"got {self.lora_rank} and {self.lora_alpha}"
            )
        if isinstance(self.lora_targets, str):
            self.lora_targets = (self.lora_targets,)
        bad = [t for t in self.lora_targets if t.split(".")[-1] not in LORA_TARGETABLE]
        if not self.lora_targets or bad:
            raise ConfigError(
                f"lora_targets: {list(self.lora_targets)} must be a non-empty list of GPT-2 "
                f"modules ending in one of {list(LORA_TARGETABLE)}"
            )
        if self.history_slots > self.backbone.n_positions:
            raise ConfigError(
                f"history_slots: {self.history_slots} exceeds the backbone's "
                f"n_positions={self.backbone.n_positions}"
            )


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation over channels from average- and max-pooled descriptors.

    ``w = sigmoid(E(relu(S(avgpool(x)))) + E(relu(S(maxpool(x)))))`` with shared 1x1 convs
    ``S: C -> C / reduction`` and ``E: C / reduction -> C`` (no bias); LLM4CP uses reduction 1.

    Shapes:
        x: ``[B, C, H, W]`` -> weights ``[B, C, 1, 1]`` in (0, 1).
    """

    def __init__(self, channels: int, reduction: int = 1) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.squeeze = nn.Conv2d(channels, hidden, 1, bias=False)
        self.excite = nn.Conv2d(hidden, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.excite(torch.relu(self.squeeze(x.mean(dim=(2, 3), keepdim=True))))
        peak = self.excite(torch.relu(self.squeeze(x.amax(dim=(2, 3), keepdim=True))))
        return torch.sigmoid(avg + peak)


class ResidualBlock(nn.Module):
    """``x + a(r) * r`` with ``r = conv(relu(conv(x)))`` (3x3, same padding), ``a`` channel attention.

    Shapes:
        x: ``[B, C, H, W]`` -> ``[B, C, H, W]``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.attention = ChannelAttention(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.conv2(torch.relu(self.conv1(x)))
        return x + self.attention(r) * r


class CSIBranch(nn.Sequential):
    """Conv2d(2 -> res_dim, 3x3), ``res_layers`` :class:`ResidualBlock` s, Conv2d(res_dim -> 2).

    Shapes:
        x: ``[B, 2, L, F]`` -> ``[B, 2, L, F]``.
    """

    def __init__(self, res_dim: int, res_layers: int) -> None:
        super().__init__(
            nn.Conv2d(2, res_dim, 3, padding=1),
            *(ResidualBlock(res_dim) for _ in range(res_layers)),
            nn.Conv2d(res_dim, 2, 3, padding=1),
        )


class LLM4CPPredictor(nn.Module):
    """LLM4CP channel predictor around a built GPT-2 backbone (see the module docstring).

    Args:
        cfg: the predictor config (``cfg.backbone`` is not read here: the backbone is given).
        backbone: a ``GPT2Model``; its width sets ``d_model``.

    Shapes:
        history: ``[B, L_h, 2F]`` float32 -> prediction ``[B, L_f, 2F]`` float32, re/im
        interleaved on the last axis.
    """

    def __init__(self, cfg: LLM4CPConfig, backbone: GPT2Model) -> None:
        super().__init__()
        d_model = backbone.config.n_embd
        if cfg.history_slots > backbone.config.n_positions:
            raise ConfigError(
                f"history_slots: {cfg.history_slots} exceeds the backbone's "
                f"n_positions={backbone.config.n_positions}"
            )
        self.history_slots, self.future_slots = cfg.history_slots, cfg.future_slots
        self.num_subcarriers, self.patch_size = cfg.num_subcarriers, cfg.patch_size
        self.normalization = cfg.normalization
        width = 2 * cfg.num_subcarriers
        # (2) CSI preprocessing; the patch mixer is shared by both branches, as in LLM4CP
        self.patch_mix = nn.Linear(cfg.patch_size, cfg.patch_size)
        self.frequency_branch = CSIBranch(cfg.res_dim, cfg.res_layers)
        self.delay_branch = CSIBranch(cfg.res_dim, cfg.res_layers)
        # (3) token embedding
        self.token_embedding = nn.Conv1d(
            width, d_model, 3, padding=1, padding_mode="circular", bias=False
        )
        nn.init.kaiming_normal_(
            self.token_embedding.weight, mode="fan_in", nonlinearity="leaky_relu"
        )
        self.register_buffer(
            "positions", sinusoidal_positions(cfg.history_slots, d_model), persistent=False
        )
        self.embedding_dropout = nn.Dropout(cfg.dropout)
        self.time_mix = nn.Linear(cfg.history_slots, cfg.history_slots)
        # (4) backbone, (5) output head
        self.backbone = backbone
        self.head = nn.Linear(d_model, width)
        self.time_projection = nn.Linear(cfg.history_slots, cfg.future_slots)

    def _mix_patches(self, image: torch.Tensor) -> torch.Tensor:
        """Mix each group of ``patch_size`` consecutive slots. ``[B, 2, L, F]`` -> same."""
        b, c, length, f = image.shape
        patches = image.reshape(b, c, length // self.patch_size, self.patch_size, f)
        mixed = self.patch_mix(patches.transpose(-1, -2)).transpose(-1, -2)
        return mixed.reshape(b, c, length, f)

    def embed(
        self, history: torch.Tensor
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Steps 1-3: normalise, preprocess and embed the history.

        Shapes:
            history ``[B, L_h, 2F]`` -> ``(tokens [B, L_h, d_model], (mean, std))``, the
            statistics ``[]`` ('batch') or ``[B, 1, 1]`` ('sample') for :meth:`project`.
        """
        check_history(history, self.history_slots, self.num_subcarriers)
        x, mean, std = normalize_per_call(history, self.normalization)
        b, length, width = x.shape
        pairs = x.reshape(b, length, self.num_subcarriers, 2)  # [B, L, F, (re, im)]
        frequency = pairs.permute(0, 3, 1, 2)  # [B, 2, L, F]
        # Delay domain: IFFT over subcarriers. Re/im are stacked as the two channels, the same
        # convention as the frequency branch. (LLM4CP's code concatenates [re..., im...] and then
        # reads that as interleaved pairs, mixing the two halves of the delay profile; we do not.)
        delay_profile = torch.fft.ifft(torch.view_as_complex(pairs.contiguous()), dim=-1)
        delay = torch.stack([delay_profile.real, delay_profile.imag], dim=1)  # [B, 2, L, F]
        image = self.frequency_branch(self._mix_patches(frequency)) + self.delay_branch(
            self._mix_patches(delay)
        )
        x = image.permute(0, 2, 3, 1).reshape(b, length, width)  # back to interleaved
        tokens = self.token_embedding(x.transpose(1, 2)).transpose(1, 2) + self.positions
        tokens = self.embedding_dropout(tokens)
        tokens = self.time_mix(tokens.transpose(1, 2)).transpose(1, 2)  # [B, L_h, d_model]
        return tokens, (mean, std)

    def project(
        self, hidden: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor]
    ) -> torch.Tensor:
        """Steps 5-6: output head, time projection, de-normalisation with :meth:`embed`'s stats.

        Shapes:
            hidden ``[B, L_h, d_model]`` -> prediction ``[B, L_f, 2F]``.
        """
        y = self.head(hidden)  # [B, L_h, 2F]
        y = self.time_projection(y.transpose(1, 2)).transpose(1, 2)  # [B, L_f, 2F]
        return denormalize(y, *stats)

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        """Predict the next ``L_f`` slots. ``[B, L_h, 2F]`` -> ``[B, L_f, 2F]``."""
        tokens, stats = self.embed(history)
        hidden = self.backbone(inputs_embeds=tokens, use_cache=False).last_hidden_state
        return self.project(hidden, stats)
