"""An ALBERT-style lightweight LAM: factorised embedding, ONE shared block looped L times, a head.

Plain single-device module (DESIGN principle 4): tensor parallelism is applied to a built model
by :func:`edgelam.training.looped_tp.tp.shard`.

Architecture (every matrix an ``nn.Linear``, except the MLM token table, an ``nn.Embedding``,
i.e. a one-hot input times a matrix)::

    inputs --embed_in--> [B, T, E] --embed_out--> [B, T, d] + pos      (factorised embedding)
    x -> x + Attn(LN1(x)) -> x + FFN(LN2(x))        looped L times with the SAME weights (pre-LN)
    head(LN_f(x)) -> [B, T, out]

* **Pre-LN** (layer norm before attention and FFN, a final ``LN_f`` before the head): ALBERT is
  post-LN, but pre-LN trains stably without careful warm-up when one block is looped many
  times, and in the tensor-parallel split the layer norms sit at the server either way.
* Attention: ``n_head`` heads of width ``d / n_head``, Q/K/V and output projections with bias,
  bidirectional (no causal mask), softmax computed in the math form (no fused kernel), no
  dropout (so sharded and dense runs agree exactly).
* FFN: ``d -> ffn_dim`` (GELU, exact erf form) ``-> d``.
* Tasks: ``csi`` -- a token is one CSI time slot of one BS antenna; its features are the
  masked CSI and the mask itself (``[2F | 2F]``, :func:`csi_features`); the head reconstructs
  the ``2F`` reals and :func:`~edgelam.pretrain.objectives.masked_nmse` scores the masked
  entries. ``mlm`` -- a token is a character or word of a text corpus; masked positions carry a
  ``[MASK]`` id and the head predicts the original id (cross-entropy on masked positions).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from edgelam.config import ConfigError, option
from edgelam.models.layers import seeded
from edgelam.pretrain.objectives import masked_nmse

__all__ = [
    "LoopedLAM",
    "LoopedLAMConfig",
    "SharedBlock",
    "UnsharedLAM",
    "attention_heads",
    "build_looped_lam",
    "csi_features",
    "task_loss",
]

Task = Literal["csi", "mlm"]


@dataclass
class LoopedLAMConfig:
    """The looped lightweight LAM (every field documented)."""

    task: Task = option("csi", "csi: masked CSI modelling; mlm: masked-language modelling")
    num_subcarriers: int = option(8, "F (task csi): a token holds 2F CSI reals and a 2F mask")
    vocab_size: int = option(0, "V (task mlm), incl. [MASK]/[UNK]; 0: set from the corpus")
    seq_len: int = option(16, "tokens per sequence T (task csi: history slots L_h)")
    d_model: int = option(64, "hidden width d")
    embed_dim: int = option(32, "factorised embedding width E (input -> E -> d)")
    n_head: int = option(4, "attention heads H (divide d_model)")
    ffn_dim: int = option(128, "FFN width (columns of the up-projection)")
    loops: int = option(4, "L: times the one shared block is applied")
    layer_norm_eps: float = option(1e-5, "layer-norm epsilon")
    init_std: float = option(0.02, "std of the normal initialisation of every matrix")

    def __post_init__(self) -> None:
        for name in ("seq_len", "d_model", "embed_dim", "n_head", "ffn_dim", "loops"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.d_model % self.n_head:
            raise ConfigError(f"n_head: {self.n_head} must divide d_model={self.d_model}")
        if self.task == "csi" and self.num_subcarriers < 1:
            raise ConfigError(f"num_subcarriers: must be >= 1, got {self.num_subcarriers}")
        if self.task == "mlm" and self.vocab_size < 0:
            raise ConfigError(f"vocab_size: must be >= 0, got {self.vocab_size}")
        if self.task not in ("csi", "mlm"):
            raise ConfigError(f"task: {self.task!r} is not one of ['csi', 'mlm']")

    @property
    def head_dim(self) -> int:
        """Width of one attention head, ``d / H``."""
        return self.d_model // self.n_head

    @property
    def input_dim(self) -> int:
        """Features per input token: ``4F`` (csi) or ``V`` (mlm, one-hot)."""
        return 4 * self.num_subcarriers if self.task == "csi" else self.vocab_size

    @property
    def output_dim(self) -> int:
        """Head outputs per token: ``2F`` (csi) or ``V`` (mlm logits)."""
        return 2 * self.num_subcarriers if self.task == "csi" else self.vocab_size


def attention_heads(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int
) -> torch.Tensor:
    """Softmax attention of ``num_heads`` heads, each on its own columns (math form).

    Shapes:
        q, k, v: ``[B, T, h * d_h]`` -> ``[B, T, h * d_h]`` (heads concatenated in order).
    """
    b, t, width = q.shape
    dh = width // num_heads

    def split(x: torch.Tensor) -> torch.Tensor:
        return x.view(b, t, num_heads, dh).transpose(1, 2)  # [B, h, T, d_h]

    scores = (split(q) @ split(k).transpose(-2, -1)) * (1.0 / math.sqrt(dh))
    out = torch.softmax(scores, dim=-1) @ split(v)  # [B, h, T, d_h]
    return out.transpose(1, 2).reshape(b, t, width)


class SharedBlock(nn.Module):
    """The one transformer block (pre-LN), applied at every depth.

    Shapes:
        forward: ``[B, T, d]`` -> ``[B, T, d]``.
    """

    def __init__(self, cfg: LoopedLAMConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.n_head = cfg.n_head
        self.ln1 = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(d, d) for _ in range(3))
        self.o_proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.up = nn.Linear(d, cfg.ffn_dim)
        self.down = nn.Linear(cfg.ffn_dim, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.ln1(x)
        att = attention_heads(self.q_proj(a), self.k_proj(a), self.v_proj(a), self.n_head)
        x = x + self.o_proj(att)
        return x + self.down(F.gelu(self.up(self.ln2(x))))


class LoopedLAM(nn.Module):
    """Factorised embedding, one :class:`SharedBlock` looped ``cfg.loops`` times, task head.

    Shapes:
        forward: csi features ``[B, T, 4F]`` float or mlm ids ``[B, T]`` long
        -> ``[B, T, out]`` (reconstructed CSI ``2F`` or logits ``V``).
    """

    def __init__(self, cfg: LoopedLAMConfig) -> None:
        super().__init__()
        if cfg.task == "mlm" and cfg.vocab_size < 2:
            raise ConfigError(f"vocab_size: task mlm needs >= 2, got {cfg.vocab_size}")
        self.cfg = cfg
        if cfg.task == "csi":
            self.embed_in: nn.Module = nn.Linear(cfg.input_dim, cfg.embed_dim)
        else:
            self.embed_in = nn.Embedding(cfg.vocab_size, cfg.embed_dim)
        self.embed_out = nn.Linear(cfg.embed_dim, cfg.d_model)
        self.pos = nn.Parameter(torch.zeros(cfg.seq_len, cfg.d_model))
        self.block = SharedBlock(cfg)
        self.ln_f = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.head = nn.Linear(cfg.d_model, cfg.output_dim)
        for name, p in self.named_parameters():
            if p.ndim >= 2:
                nn.init.normal_(p, std=cfg.init_std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def check_inputs(self, inputs: torch.Tensor) -> None:
        """Raise a ``ValueError`` naming the expected shape unless ``inputs`` fit the task."""
        cfg = self.cfg
        if cfg.task == "csi":
            ok = inputs.dim() == 3 and inputs.shape[1:] == (cfg.seq_len, cfg.input_dim)
            want = f"[B, {cfg.seq_len}, {cfg.input_dim}] float (csi_features)"
        else:
            ok = (
                inputs.dim() == 2
                and inputs.shape[1] == cfg.seq_len
                and not inputs.is_floating_point()
            )
            want = f"[B, {cfg.seq_len}] token ids"
        if not ok:
            raise ValueError(f"inputs: expected {want}, got {list(inputs.shape)} {inputs.dtype}")

    def embed(self, inputs: torch.Tensor) -> torch.Tensor:
        """Factorised embedding plus learned positions. Shapes: -> ``[B, T, d]``."""
        self.check_inputs(inputs)
        return self.embed_out(self.embed_in(inputs)) + self.pos

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = self.embed(inputs)
        for _ in range(self.cfg.loops):
            x = self.block(x)
        return self.head(self.ln_f(x))


class UnsharedLAM(LoopedLAM):
    """The reference of the memory comparison: the same model with L *distinct* blocks.

    A BERT-style stack of the same depth and widths, unshared and unsplit, on one device.
    """

    def __init__(self, cfg: LoopedLAMConfig) -> None:
        super().__init__(cfg)
        self.blocks = nn.ModuleList(copy.deepcopy(self.block) for _ in range(cfg.loops))
        del self.block

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = self.embed(inputs)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def build_looped_lam(
    cfg: LoopedLAMConfig, seed: int = 0, dtype: torch.dtype = torch.float32
) -> LoopedLAM:
    """A :class:`LoopedLAM` initialised from ``seed`` alone (the caller's RNG is untouched).

    >>> m = build_looped_lam(LoopedLAMConfig(num_subcarriers=2, seq_len=4, d_model=8,
    ...                      embed_dim=4, n_head=2, ffn_dim=8, loops=3))
    >>> m(torch.zeros(5, 4, 8)).shape
    torch.Size([5, 4, 4])
    """
    with seeded(seed):
        model = LoopedLAM(cfg)
    return model.to(dtype)


def csi_features(masked_history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Token features of the csi task: the masked CSI and the mask as 0/1 reals.

    Shapes:
        masked_history ``[B, T, 2F]``, mask ``[B, T, 2F]`` bool -> ``[B, T, 4F]``.
    """
    return torch.cat([masked_history, mask.to(masked_history.dtype)], dim=-1)


def task_loss(
    cfg: LoopedLAMConfig, outputs: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """The loss from the head's outputs and the labels of the masked entries only.

    ``labels`` is ``targets[mask]`` (what the devices send the server): the masked CSI reals
    (csi; scored by :func:`~edgelam.pretrain.objectives.masked_nmse`, mean over items of the
    per-item NMSE of the masked entries) or the original token ids (mlm; mean cross-entropy
    over masked positions).

    Shapes:
        outputs ``[B, T, out]``; mask ``[B, T, 2F]`` (csi) or ``[B, T]`` (mlm) bool;
        labels ``[mask.sum()]`` -> scalar.
    """
    if cfg.task == "csi":
        target = torch.zeros_like(outputs).masked_scatter(mask, labels.to(outputs.dtype))
        return masked_nmse(outputs, target, mask)
    return F.cross_entropy(outputs[mask], labels)
