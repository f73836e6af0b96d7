"""Calibrating microservice profiles by profiling real PyTorch modules.

Small catalog entries (encoders, projectors, the vocoder) are built here from their published
architectures -- Hugging Face ``transformers`` configs or plain ``torch.nn`` -- on the ``meta``
device, and run once under :class:`torch.utils.flop_counter.FlopCounterMode`. The meta device
allocates nothing and computes nothing, so even a 300 M-parameter encoder profiles in a fraction
of a second, yet the operator-level FLOP count is the real one.

Memory of one deployed instance: fp16 weights plus 10 % for the runtime, plus 64 MiB workspace
(:func:`serving_memory_mb`). Output bytes: the module's output tensor at fp16.

A catalog entry's ``profile`` field names a builder in :data:`BUILDERS` and its arguments;
:func:`profile_entry` rebuilds and re-profiles it (``tests`` check the shipped numbers this way).

>>> p = profile_entry({"builder": "mlp_projector", "args":
...     {"in_dim": 1024, "hidden": 4096, "out_dim": 4096, "tokens": 256}})
>>> p["params"], round(p["gflops_per_unit"], 2)   # 2 * 256 * (1024*4096 + 4096*4096) + biases
(20979712, 10.74)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["BUILDERS", "profile_entry", "serving_memory_mb"]

MIB = 2**20


def serving_memory_mb(params: float, extra_mb: float = 0.0) -> float:
    """Memory of one serving instance: ``1.1 * 2 * params`` bytes + 64 MiB + ``extra_mb``."""
    return round(1.1 * 2 * params / MIB + 64 + extra_mb, 1)


def _clip_vision(hidden_size, intermediate_size, num_hidden_layers, num_attention_heads,
                 patch_size, image_size):  # fmt: skip
    from transformers import CLIPVisionConfig, CLIPVisionModel

    cfg = CLIPVisionConfig(hidden_size=hidden_size, intermediate_size=intermediate_size,
                           num_hidden_layers=num_hidden_layers,
                           num_attention_heads=num_attention_heads, patch_size=patch_size,
                           image_size=image_size)  # fmt: skip
    model = CLIPVisionModel(cfg)
    return (
        lambda: model(pixel_values=torch.empty(1, 3, image_size, image_size)).last_hidden_state,
        model,
    )


def _whisper_encoder(d_model, encoder_layers, encoder_attention_heads, encoder_ffn_dim,
                     num_mel_bins, frames):  # fmt: skip
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    cfg = WhisperConfig(d_model=d_model, encoder_layers=encoder_layers,
                        encoder_attention_heads=encoder_attention_heads,
                        encoder_ffn_dim=encoder_ffn_dim, num_mel_bins=num_mel_bins,
                        max_source_positions=frames // 2)  # fmt: skip
    model = WhisperEncoder(cfg)
    return lambda: model(torch.empty(1, num_mel_bins, frames)).last_hidden_state, model


def _mlp_projector(in_dim, hidden, out_dim, tokens):
    """LLaVA-1.5's projector: Linear -> GELU -> Linear on every visual token."""
    model = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))
    return lambda: model(torch.empty(1, tokens, in_dim)), model


class _QueryTransformer(nn.Module):
    """Learned queries cross-attending a token sequence (Q-Former / Perceiver-resampler style),
    then a linear map to the consumer's width."""

    def __init__(self, in_dim, dim, queries, layers, heads, out_dim):
        super().__init__()
        self.inp = nn.Linear(in_dim, dim)
        self.queries = nn.Parameter(torch.empty(1, queries, dim))
        layer = nn.TransformerDecoderLayer(dim, heads, 4 * dim, batch_first=True)
        self.blocks = nn.TransformerDecoder(layer, layers)
        self.out = nn.Linear(dim, out_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        q = self.queries.expand(tokens.shape[0], -1, -1)
        return self.out(self.blocks(q, self.inp(tokens)))


def _query_transformer(in_dim, dim, queries, layers, heads, out_dim, tokens):
    model = _QueryTransformer(in_dim, dim, queries, layers, heads, out_dim)
    return lambda: model(torch.empty(1, tokens, in_dim)), model


class _AudioProjector(nn.Module):
    """Strided Conv1d down-sampling of encoder frames, then a linear map to the LLM width."""

    def __init__(self, in_dim, out_dim, stride):
        super().__init__()
        self.down = nn.Conv1d(in_dim, in_dim, kernel_size=stride, stride=stride)
        self.proj = nn.Linear(in_dim, out_dim)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.proj(self.down(frames.transpose(1, 2)).transpose(1, 2))


def _audio_projector(in_dim, out_dim, stride, frames):
    model = _AudioProjector(in_dim, out_dim, stride)
    return lambda: model(torch.empty(1, frames, in_dim)), model


def _hifigan(model_in_dim, frames):
    from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

    model = SpeechT5HifiGan(SpeechT5HifiGanConfig(model_in_dim=model_in_dim))
    return lambda: model(torch.empty(frames, model_in_dim)), model


BUILDERS: Mapping[str, Callable[..., tuple[Callable[[], torch.Tensor], nn.Module]]] = {
    "clip_vision": _clip_vision,
    "whisper_encoder": _whisper_encoder,
    "mlp_projector": _mlp_projector,
    "query_transformer": _query_transformer,
    "audio_projector": _audio_projector,
    "hifigan": _hifigan,
}
"""Builder name -> ``f(**args) -> (run, module)``; ``run()`` does one forward pass for one unit."""


def profile_entry(profile: Mapping[str, Any]) -> dict[str, float]:
    """Profile a catalog entry's module: params, GFLOP and output bytes (fp16) per unit.

    Args:
        profile: ``{"builder": name in BUILDERS, "args": {...}, "extra_memory_mb": optional}``.

    Returns:
        ``{"params", "gflops_per_unit", "output_bytes_per_unit", "memory_mb"}``.

    Raises:
        KeyError: unknown builder (the message lists the builders).
    """
    name = profile["builder"]
    if name not in BUILDERS:
        raise KeyError(f"unknown profile builder {name!r}; known: {sorted(BUILDERS)}")
    with torch.device("meta"):
        run, module = BUILDERS[name](**profile.get("args", {}))
        module.requires_grad_(False)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            out = run()
    params = sum(p.numel() for p in module.parameters())
    return {
        "params": params,
        "gflops_per_unit": counter.get_total_flops() / 1e9,
        "output_bytes_per_unit": float(out.numel() * 2),
        "memory_mb": serving_memory_mb(params, profile.get("extra_memory_mb", 0.0)),
    }
