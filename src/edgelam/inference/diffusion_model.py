r"""The denoiser: per-(microservice, node) logits of :math:`x_0` from :math:`(x_t, t,` instance).

The state is a grid of tokens :math:`h_{s,n} \in \mathbb{R}^d`, one per entry of the deployment
indicator, initialised from the pair features of :math:`(s, n)`, the microservice token of
:math:`s`, the node token of :math:`n`, an embedding of the noisy bit :math:`x_t[s, n]` and a
sinusoidal embedding of :math:`t`. Each of ``layers`` blocks (pre-norm, residual) applies

1. *node attention* (graph attention): for every microservice, its ``N`` tokens attend to each
   other with a per-head bias computed from the node-pair features (path delay, transfer time,
   direct link) -- how far apart two candidate hosts are in the network;
2. *microservice attention*: for every node, its ``S`` tokens attend to each other -- what else
   competes for that node's memory and compute;
3. a time-conditioned MLP (the step embedding is added before it, as DIFUSCO's GNN does per
   layer).

A linear head gives one logit per cell. There are no positional encodings, so the model is
equivariant to permutations of nodes (and of microservices) and runs on any ``N``.

>>> import torch
>>> from edgelam.inference.diffusion_features import instance_features
>>> from edgelam.inference.instance import generate_instance
>>> feats = instance_features(generate_instance(5, seed=1)).expand(2)
>>> model = DeploymentDenoiser(DenoiserConfig(hidden=16, layers=1, heads=2))
>>> model(torch.zeros(2, 16, 5), torch.tensor([10, 900]), feats).shape
torch.Size([2, 16, 5])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from edgelam.config import ConfigError, option
from edgelam.inference.diffusion_features import (
    EDGE_FEATURES,
    NODE_FEATURES,
    PAIR_FEATURES,
    SERVICE_FEATURES,
    InstanceFeatures,
)

__all__ = ["DenoiserConfig", "DeploymentDenoiser", "timestep_embedding"]


@dataclass
class DenoiserConfig:
    """Architecture of :class:`DeploymentDenoiser`."""

    hidden: int = option(64, "width d of every (microservice, node) token")
    layers: int = option(3, "blocks of node attention + microservice attention + MLP")
    heads: int = option(4, "attention heads (divides hidden)")
    mlp_ratio: int = option(2, "MLP width as a multiple of hidden")

    def __post_init__(self) -> None:
        for name in ("hidden", "layers", "heads", "mlp_ratio"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.hidden % self.heads:
            raise ConfigError(f"heads: {self.heads} does not divide hidden={self.hidden}")


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer steps.

    Shapes:
        t: ``[B]``; returns ``[B, dim]`` (``dim`` even).

    >>> timestep_embedding(torch.tensor([0, 5]), 4).shape
    torch.Size([2, 4])
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class _Attention(nn.Module):
    """Multi-head self-attention over the second-to-last axis with an optional additive bias."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(
        self, x: torch.Tensor, bias: torch.Tensor | None, key_mask: torch.Tensor
    ) -> torch.Tensor:
        """Attention among the ``L`` tokens of each group.

        Shapes:
            x: ``[B, G, L, d]``; bias: ``[B, 1, H, L, L]`` or None; key_mask: ``[B, 1, L]`` bool.
            Returns ``[B, G, L, d]``.
        """
        b, g, length, d = x.shape
        q, k, v = self.qkv(x).reshape(b, g, length, 3, self.heads, d // self.heads).unbind(3)
        q, k, v = (z.transpose(2, 3) for z in (q, k, v))  # [B, G, H, L, dh]
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // self.heads)
        if bias is not None:
            scores = scores + bias
        scores = scores.masked_fill(~key_mask[:, :, None, None, :], float("-inf"))
        y = torch.softmax(scores, dim=-1) @ v
        return self.out(y.transpose(2, 3).reshape(b, g, length, d))


class _Block(nn.Module):
    def __init__(self, cfg: DenoiserConfig) -> None:
        super().__init__()
        d = cfg.hidden
        self.norm_node = nn.LayerNorm(d)
        self.node_attn = _Attention(d, cfg.heads)
        self.norm_service = nn.LayerNorm(d)
        self.service_attn = _Attention(d, cfg.heads)
        self.time = nn.Linear(d, d)
        self.norm_mlp = nn.LayerNorm(d)
        self.mlp = nn.Sequential(
            nn.Linear(d, cfg.mlp_ratio * d), nn.GELU(), nn.Linear(cfg.mlp_ratio * d, d)
        )

    def forward(
        self,
        h: torch.Tensor,
        temb: torch.Tensor,
        edge_bias: torch.Tensor,
        node_mask: torch.Tensor,
        service_mask: torch.Tensor,
    ) -> torch.Tensor:
        # h: [B, S, N, d]; node attention groups by microservice, attends over nodes
        h = h + self.node_attn(self.norm_node(h), edge_bias, node_mask[:, None, :])
        ht = h.transpose(1, 2)  # [B, N, S, d]: microservice attention groups by node
        ht = ht + self.service_attn(self.norm_service(ht), None, service_mask[:, None, :])
        h = ht.transpose(1, 2)
        h = h + self.time(temb)[:, None, None, :]
        return h + self.mlp(self.norm_mlp(h))


class DeploymentDenoiser(nn.Module):
    """Logits of :math:`p_\\theta(x_0[s, n] = 1 \\mid x_t, t, \\text{instance})`.

    Args:
        cfg: The architecture.
    """

    def __init__(self, cfg: DenoiserConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden
        self.pair_in = nn.Linear(PAIR_FEATURES, d)
        self.service_in = nn.Sequential(nn.Linear(SERVICE_FEATURES, d), nn.GELU(), nn.Linear(d, d))
        self.node_in = nn.Sequential(nn.Linear(NODE_FEATURES, d), nn.GELU(), nn.Linear(d, d))
        self.bit_in = nn.Embedding(2, d)
        self.time_in = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))
        self.edge_bias = nn.Sequential(
            nn.Linear(EDGE_FEATURES, d), nn.GELU(), nn.Linear(d, cfg.layers * cfg.heads)
        )
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.layers))
        self.norm_out = nn.LayerNorm(d)
        self.head = nn.Linear(d, 1)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, feats: InstanceFeatures) -> torch.Tensor:
        """Denoise a batch.

        Args:
            x_t: Noisy indicators, float ``[B, S, N]`` in {0, 1}.
            t: Diffusion steps, int ``[B]``.
            feats: Batched :class:`InstanceFeatures` of matching ``B, S, N``.

        Returns:
            Logits of :math:`x_0`, float ``[B, S, N]`` (padding cells are meaningless).
        """
        b, s, n = x_t.shape
        if feats.pair.shape[:3] != (b, s, n):
            raise ValueError(
                f"x_t is [B, S, N] = {(b, s, n)} but the features are {tuple(feats.pair.shape[:3])}"
            )
        cfg = self.cfg
        temb = self.time_in(timestep_embedding(t, cfg.hidden))
        h = (
            self.pair_in(feats.pair)
            + self.service_in(feats.service)[:, :, None, :]
            + self.node_in(feats.node)[:, None, :, :]
            + self.bit_in(x_t.long())
            + temb[:, None, None, :]
        )
        bias = self.edge_bias(feats.edge).reshape(b, n, n, cfg.layers, cfg.heads)
        bias = bias.permute(3, 0, 4, 1, 2)[:, :, None]  # [layers, B, 1, H, N, N]
        for i, block in enumerate(self.blocks):
            h = block(h, temb, bias[i], feats.node_mask, feats.service_mask)
        return self.head(self.norm_out(h)).squeeze(-1)
