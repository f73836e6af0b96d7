r"""Graph-LAM beamformers: a bipartite user-antenna GNN, a GPT-2 over user tokens, exact power.

The multi-user MISO downlink (``K`` single-antenna users, ``M`` base-station antennas) is a
complete bipartite graph: users and antennas are nodes, and edge ``(k, m)`` carries the channel
coefficient :math:`h_{k,m}`. :class:`GraphBeamformer` maps it to a precoder ``W [M, K]``::

    H [B,K,M] --(re, im, |h|) + globals (SNR dB, K/M)--> edge MLP --> E [B,K,M,D]
      |  or pilots Y [B,M,L], X [K,L] --> PilotEncoder (complex layers) --> edge features
      v
    gnn_layers x BipartiteLayer:  E_km += MLP(E_km, agg_m' E_km', agg_k' E_k'm, agg E)
      |                                        (mean / max over an edge's user and antenna)
      v
    user tokens  T_k = TokenProjection(agg_m E_km)                    [B,K,d_model]
      v
    GPT-2 blocks (frozen + LoRA), no position embeddings, no causal mask   [B,K,d_model]
      v
    E_km += Linear(token_k)  -> head_layers x BipartiteLayer -> BeamHead -> w_mk complex
      v                        ("dual": per-user powers (p, q) + per-edge gates on the
      v                         optimal-structure beams; see beamformer_layers)
    PowerProjection:  W <- W sqrt(P) / ||W||_F      (so ||W||_F^2 = P exactly)

**Permutation equivariance.** Every edge and node update is the same function applied to each
edge or node, and the only cross-edge operations are symmetric aggregations (mean, max) over a
user's edges, an antenna's edges or all edges. The backbone sees the users as an unordered set:
its learned position embeddings are skipped and attention is bidirectional (an all-zero mask),
and self-attention without positions is permutation-equivariant; LoRA adapts the per-token
projections only. So permuting users permutes the beams (columns of ``W``), permuting antennas
permutes its rows, and the same weights serve any ``K`` and ``M``. Inputs are normalised by the
channel's RMS and the SNR enters as a feature, so only the effective channel
:math:`H\sqrt{P}/\sigma` matters, as in the problem itself.

**Head.** The edge head emits per-edge complex beam weights; ``"dual"`` (default) gates beams
of the known optimal structure whose user powers the network chooses, ``"mrt-gated"`` gates the
conjugate channel, ``"direct"`` emits :math:`w_{m,k}` alone
(:class:`~edgelam.models.beamformer_layers.BeamHead`).

``use_backbone=False`` gives the GNN-only precoder (the ablation: no tokens, no backbone).
Which backbone parameters train is applied afterwards (:func:`build_graph_beamformer` calls
:func:`~edgelam.models.adapters.apply_lora` for ``trainable='lora'``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from edgelam.config import ConfigError, option, to_dict
from edgelam.models.backbones import BackboneConfig, build_gpt2_backbone
from edgelam.models.beamformer_layers import BeamHead, BipartiteLayer, PowerProjection, aggregate
from edgelam.models.layers import seeded
from edgelam.models.pilot_encoder import PilotEncoder

if TYPE_CHECKING:
    from transformers import GPT2Model

__all__ = [
    "GraphBeamformer",
    "GraphBeamformerConfig",
    "build_graph_beamformer",
    "load_backbone_weights",
]


def _default_backbone() -> BackboneConfig:
    """The shipped edgelam-wireless GPT-2 (4 layers x 128, 4 heads)."""
    return BackboneConfig(
        name="custom", num_layers=4, d_model=128, n_head=4, n_positions=16,
        pretrained="edgelam-wireless",
    )  # fmt: skip


@dataclass
class GraphBeamformerConfig:
    """Graph-LAM beamformer architecture (see the module docstring)."""

    hidden: int = option(32, "width D of the GNN's edge features")
    gnn_layers: int = option(3, "bipartite message-passing layers before the backbone")
    head_layers: int = option(1, "bipartite message-passing layers after the backbone")
    aggregation: Literal["mean", "max", "mean+max"] = option(
        "mean+max", "symmetric aggregation over a node's edges (both: concatenated)"
    )
    edge_magnitude: bool = option(True, "add |h_km| to the (re, im) edge features")
    head: Literal["dual", "mrt-gated", "direct"] = option(
        "dual",
        "beam head: 'dual': per-edge gates on optimal-structure beams with learned user powers "
        "(starts at RZF); 'mrt-gated': w = a conj(h) + b (starts at MRT); 'direct': w alone",
    )
    use_backbone: bool = option(True, "false: the GNN-only precoder (no tokens, no backbone)")
    backbone: BackboneConfig = dataclasses.field(
        default_factory=_default_backbone,
        metadata={"help": "the GPT-2 backbone ('edgelam-wireless': the shipped 4 x 128 one)"},
    )
    trainable: Literal["lora", "frozen", "full"] = option(
        "lora", "backbone parameters that train: LoRA matrices, none, or all but embeddings"
    )
    lora_rank: int = option(8, "LoRA rank r")
    lora_alpha: float = option(16.0, "LoRA scaling numerator (scale alpha / r)")
    lora_targets: tuple[str, ...] = option(("c_attn", "c_proj"), "GPT-2 modules LoRA adapts")
    input: Literal["channel", "pilots"] = option(
        "channel", "'channel': H is given; 'pilots': received pilots Y and pilot matrix X"
    )
    pilot_length: int = option(8, "pilot symbols L per user (input='pilots'); L >= K")
    pilot_channels: int = option(16, "complex channels per edge of the pilot encoder")

    def __post_init__(self) -> None:
        for name in ("hidden", "gnn_layers", "lora_rank", "pilot_length", "pilot_channels"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.head_layers < 0:
            raise ConfigError(f"head_layers: must be >= 0, got {self.head_layers}")
        if self.lora_alpha <= 0:
            raise ConfigError(f"lora_alpha: must be > 0, got {self.lora_alpha}")


def _per_sample(value: float | torch.Tensor, batch: int, like: torch.Tensor) -> torch.Tensor:
    """A scalar or ``[B]`` value as a ``[B]`` real tensor."""
    return torch.as_tensor(value, dtype=like.dtype, device=like.device).expand(batch)


class GraphBeamformer(nn.Module):
    """The graph-LAM precoder (``use_backbone``) or the GNN-only one (see the module docstring).

    Args:
        cfg: architecture.
        backbone: a built ``GPT2Model`` (required iff ``cfg.use_backbone``).
    """

    def __init__(self, cfg: GraphBeamformerConfig, backbone: GPT2Model | None = None) -> None:
        super().__init__()
        if cfg.use_backbone != (backbone is not None):
            raise ValueError("backbone: give a GPT2Model exactly when cfg.use_backbone is true")
        self.cfg = cfg
        D = cfg.hidden
        self.pilot_encoder = None
        if cfg.input == "pilots":
            self.pilot_encoder = PilotEncoder(cfg.pilot_length, cfg.pilot_channels)
            in_features = self.pilot_encoder.out_features + 3  # + SNR, pilot SNR, K/M
        else:
            in_features = (3 if cfg.edge_magnitude else 2) + 2  # + SNR, K/M
        self.edge_encoder = nn.Sequential(nn.Linear(in_features, D), nn.GELU(), nn.Linear(D, D))
        self.gnn = nn.ModuleList(BipartiteLayer(D, cfg.aggregation) for _ in range(cfg.gnn_layers))
        pooled = D * (2 if cfg.aggregation == "mean+max" else 1)
        if backbone is not None:
            d_model = backbone.config.n_embd
            self.token_projection = nn.Sequential(nn.LayerNorm(pooled), nn.Linear(pooled, d_model))
            self.backbone = backbone
            self.token_readout = nn.Linear(d_model, D)
        self.head_gnn = nn.ModuleList(
            BipartiteLayer(D, cfg.aggregation) for _ in range(cfg.head_layers)
        )
        self.head = BeamHead(D, cfg.aggregation, cfg.head)
        self.power_projection = PowerProjection()

    # -- inputs to edge features -----------------------------------------------------------
    def channel_features(
        self, H: torch.Tensor, power: float | torch.Tensor, noise_power: float | torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Edge inputs, RMS-normalised channels and inverse effective SNR.

        Shapes:
            H: ``[B, K, M]`` complex -> features ``[B, K, M, F]``; basis ``[B, K, M]`` complex;
            inv_snr ``[B]``.
        """
        if not H.is_complex() or H.dim() != 3:
            raise ValueError(f"channels must be a complex [B, K, M] tensor, got {tuple(H.shape)}")
        B, K, M = H.shape
        gain = H.abs().square().mean(dim=(1, 2)).clamp_min(1e-30)  # [B]
        h = H / gain.sqrt()[:, None, None]
        inv_snr = _per_sample(noise_power, B, gain) / (_per_sample(power, B, gain) * gain)
        parts = [h.real, h.imag] + ([h.abs()] if self.cfg.edge_magnitude else [])
        snr = -torch.log10(inv_snr)  # effective SNR in dB / 10
        globals_ = torch.stack([snr, torch.full_like(snr, K / M)], dim=-1)
        features = torch.cat(
            [torch.stack(parts, -1), globals_[:, None, None].expand(B, K, M, 2)], -1
        )
        return features, h, inv_snr

    def pilot_features(
        self,
        Y: torch.Tensor,
        X: torch.Tensor,
        power: float | torch.Tensor,
        noise_power: float | torch.Tensor,
        pilot_noise_power: float | torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Edge inputs, basis and inverse effective SNR from received pilots (no estimate of H).

        Shapes:
            Y: ``[B, M, L]``; X: ``[K, L]`` or ``[B, K, L]`` -> features ``[B, K, M, F]``,
            basis ``[B, K, M]`` complex (RMS 1), inv_snr ``[B]``.
        """
        features, basis, gain, pilot_snr_db = self.pilot_encoder(Y, X, pilot_noise_power)
        B, K, M, _ = features.shape
        inv_snr = _per_sample(noise_power, B, gain) / (_per_sample(power, B, gain) * gain)
        snr = -torch.log10(inv_snr)
        globals_ = torch.stack([snr, pilot_snr_db / 10, torch.full_like(snr, K / M)], -1)
        features = torch.cat([features, globals_[:, None, None].expand(B, K, M, 3)], -1)
        rms = basis.abs().square().mean(dim=(1, 2)).clamp_min(1e-30).sqrt()
        return features, basis / rms[:, None, None], inv_snr

    # -- the network ---------------------------------------------------------------------------
    def _backbone_forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """GPT-2 blocks over user tokens: no position embeddings, bidirectional attention."""
        bb = self.backbone
        mask = tokens.new_zeros(tokens.shape[0], 1, tokens.shape[1], tokens.shape[1])
        hidden = bb.drop(tokens)
        for block in bb.h:
            hidden = block(hidden, attention_mask=mask)
        return bb.ln_f(hidden)

    def precode(
        self,
        features: torch.Tensor,
        basis: torch.Tensor,
        inv_snr: torch.Tensor,
        power: float | torch.Tensor,
    ) -> torch.Tensor:
        """Edge features to a precoder meeting the power constraint with equality.

        Shapes:
            features: ``[B, K, M, F]``; basis: ``[B, K, M]`` complex; inv_snr: ``[B]`` ->
            W ``[B, M, K]`` complex.
        """
        E = self.edge_encoder(features)
        for layer in self.gnn:
            E = layer(E)
        if self.cfg.use_backbone:
            tokens = self.token_projection(aggregate(E, 2, self.cfg.aggregation))  # [B, K, d]
            context = self.token_readout(self._backbone_forward(tokens))  # [B, K, D]
            E = E + context[:, :, None]
        for layer in self.head_gnn:
            E = layer(E)
        return self.power_projection(self.head(E, basis, inv_snr), power)

    def forward(
        self, H: torch.Tensor, power: float | torch.Tensor, noise_power: float | torch.Tensor
    ) -> torch.Tensor:
        """Precoder for channels ``H`` at transmit power ``P`` and noise power ``sigma^2``.

        Shapes:
            H: ``[B, K, M]`` complex; power, noise_power: scalar or ``[B]`` ->
            W ``[B, M, K]`` complex with ``||W_b||_F^2 = P_b``.
        """
        if self.pilot_encoder is not None:
            raise ValueError("input='pilots': call forward_pilots(Y, X, ...) instead")
        return self.precode(*self.channel_features(H, power, noise_power), power)

    def forward_pilots(
        self,
        Y: torch.Tensor,
        X: torch.Tensor,
        power: float | torch.Tensor,
        noise_power: float | torch.Tensor,
        pilot_noise_power: float | torch.Tensor,
    ) -> torch.Tensor:
        """End-to-end precoder from received pilots ``Y = H^T X + N``, without estimating ``H``.

        Shapes:
            Y: ``[B, M, L]`` complex; X: ``[K, L]`` or ``[B, K, L]`` complex ->
            W ``[B, M, K]`` complex.
        """
        if self.pilot_encoder is None:
            raise ValueError("input='channel': this model has no pilot encoder")
        features = self.pilot_features(Y, X, power, noise_power, pilot_noise_power)
        return self.precode(*features, power)


def load_backbone_weights(backbone: GPT2Model, source: str) -> dict[str, Any]:
    """Copy an edgelam pre-trained checkpoint's backbone into ``backbone`` (before LoRA).

    Args:
        backbone: a built ``GPT2Model`` with the checkpoint's width, heads and positions and at
            most its number of layers (the first ones are loaded).
        source: ``"edgelam-wireless"`` or a directory written by ``edgelam pretrain``.

    Returns:
        The checkpoint's model card.

    Raises:
        ConfigError: an architecture field differs (named, with both values).
    """
    from edgelam.models.pretrained import load_pretrained_backbone, resolve_wireless

    state, card = load_pretrained_backbone(resolve_wireless(source) or source)
    arch, gpt = card["architecture"], backbone.config
    for field, ours in (("d_model", gpt.n_embd), ("n_head", gpt.n_head), ("n_positions", gpt.n_positions)):  # fmt: skip
        if arch[f"backbone.{field}"] != ours:
            raise ConfigError(
                f"backbone.{field}: checkpoint {source!r} has {arch[f'backbone.{field}']}, "
                f"the config asks for {ours}"
            )
    if arch["backbone.num_layers"] < gpt.n_layer:
        raise ConfigError(
            f"backbone.num_layers: checkpoint {source!r} has {arch['backbone.num_layers']} "
            f"layers, the config asks for {gpt.n_layer}"
        )
    own = backbone.state_dict()
    with torch.no_grad():
        for name, value in state.items():
            key = name.removeprefix("backbone.")
            if not name.startswith("backbone.") or key.startswith("wte.") or key not in own:
                continue  # other groups; unused token embedding; layers beyond n_layer
            own[key].copy_(value)
    return card


def build_graph_beamformer(
    cfg: GraphBeamformerConfig, seed: int = 0
) -> tuple[GraphBeamformer, dict[str, Any]]:
    """Build the beamformer, load the pre-trained backbone and choose what trains, seeded.

    Returns:
        ``(model, info)``: the model in train mode and a JSON-ready dict (parameter counts,
        backbone description, whether the backbone is pre-trained).

    >>> from edgelam.models.backbones import BackboneConfig
    >>> cfg = GraphBeamformerConfig(hidden=8, gnn_layers=1, lora_rank=2, backbone=BackboneConfig(
    ...     name="custom", num_layers=1, d_model=8, n_head=2, n_positions=4, pretrained=None))
    >>> model, info = build_graph_beamformer(cfg, seed=0)
    >>> H = torch.randn(3, 5, 7, dtype=torch.complex64)  # K = 5 users, M = 7 antennas
    >>> W = model(H, power=2.0, noise_power=0.1)
    >>> W.shape, torch.allclose(W.abs().square().sum((1, 2)), torch.full((3,), 2.0))
    (torch.Size([3, 7, 5]), True)
    """
    from edgelam.models.adapters import apply_full_tuning, apply_lora, count_parameters
    from edgelam.models.adapters import freeze_backbone as freeze

    backbone, source = None, None
    with seeded(seed):
        if cfg.use_backbone:
            backbone = build_gpt2_backbone(cfg.backbone, seed=seed)
            if cfg.backbone.pretrained is not None and _is_edgelam(cfg.backbone.pretrained):
                card = load_backbone_weights(backbone, cfg.backbone.pretrained)
                source = card.get("loaded_from")
            elif backbone.build_info.pretrained:
                source = backbone.build_info.source
        model = GraphBeamformer(cfg, backbone)
        if backbone is not None:
            if cfg.trainable == "lora":
                apply_lora(model, cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets)
            elif cfg.trainable == "frozen":
                freeze(model)
            else:
                apply_full_tuning(model)
                model.backbone.wpe.requires_grad_(False)  # positions are never used
    total, trainable = count_parameters(model)
    info = {
        "model": "graph-lam" if cfg.use_backbone else "gnn",
        "total_params": total,
        "trainable_params": trainable,
        "backbone_params": count_parameters(backbone)[0] if backbone is not None else 0,
        "pretrained": source is not None,
        "pretrained_source": source,
        "backbone": _describe(cfg, cfg.backbone.pretrained if source else None),
        "config": to_dict(cfg),
    }
    return model, info


def _is_edgelam(pretrained: str) -> bool:
    from edgelam.models.pretrained import resolve_wireless

    return resolve_wireless(pretrained) is not None


def _describe(cfg: GraphBeamformerConfig, source: str | None) -> str:
    if not cfg.use_backbone:
        return "none (GNN only)"
    b = cfg.backbone
    init = f"pre-trained ({source})" if source else "random init"
    return f"GPT-2 {b.num_layers} x {b.d_model} ({b.n_head} heads), {init}, {cfg.trainable}"
