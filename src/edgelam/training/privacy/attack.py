r"""An honest-but-curious server's embedding inversion: what the privacy noise protects against.

The server knows the device's embedding module (it shipped it; without ``embedding_grad`` the
module never changes) and the privacy mechanism (clip norm and noise std: Kerckhoffs). From
public, auxiliary inputs of the same kind it builds pairs ``(release, input)`` by running the
module and the mechanism itself, and trains a decoder (a small MLP) to map a received
embedding back to the device's input (He, Zhang and Lee 2019, learning-based model inversion).
The attack succeeds when the reconstruction NMSE of the devices' true inputs is well below
0 dB; 0 dB is what predicting zero (the inputs' mean, for centred inputs) achieves.

tests/unit/test_privacy.py runs it on the tiny LLM4CP predictor: about -7 dB without noise,
~0 dB at noise multiplier 1 on the embeddings.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from edgelam.config import option
from edgelam.training.privacy.mechanism import privatize

__all__ = ["InversionConfig", "train_inversion", "inversion_nmse_db"]


@dataclass
class InversionConfig:
    """The server's inversion decoder and its training."""

    hidden: int = option(256, "width of the decoder's two hidden layers")
    steps: int = option(500, "Adam steps on auxiliary data")
    batch_size: int = option(64, "auxiliary samples per step")
    lr: float = option(1e-3, "Adam learning rate")
    clip_norm: float | None = option(None, "the mechanism's per-sample clip (None: no clip)")
    noise_std: float = option(0.0, "the mechanism's noise std per entry (sigma * clip)")
    seed: int = option(0, "seed of the decoder's init, batches and simulated noise")


def _release(
    embed: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    cfg: InversionConfig,
    gen: torch.Generator,
) -> torch.Tensor:
    """What the device would send for inputs ``x``: embeddings, clipped and noised as the
    mechanism does (the server simulates it on auxiliary data)."""
    with torch.no_grad():
        e = embed(x)
    if cfg.clip_norm is None:
        return e + cfg.noise_std * torch.randn(e.shape, generator=gen, dtype=e.dtype)
    return privatize(e, cfg.clip_norm, cfg.noise_std, gen).released


def train_inversion(
    embed: Callable[[torch.Tensor], torch.Tensor],
    auxiliary: torch.Tensor,
    cfg: InversionConfig,
) -> nn.Module:
    """Train a decoder from released embeddings back to inputs, on auxiliary inputs.

    Args:
        embed: the device's embedding function, ``[N, ...] -> [N, L, d]``.
        auxiliary: public inputs of the device's kind, ``[N, ...]``.
        cfg: decoder, training, and the mechanism to simulate.

    Returns:
        The decoder, ``[B, L, d] -> [B, ...]`` (the inputs' shape), in eval mode.

    Shapes:
        auxiliary: ``[N, ...]``; embeddings ``[N, L, d]``.
    """
    gen = torch.Generator().manual_seed(cfg.seed)
    probe = _release(embed, auxiliary[:1], cfg, gen)
    shape = auxiliary.shape[1:]
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        decoder = nn.Sequential(
            nn.Flatten(),
            nn.Linear(probe[0].numel(), cfg.hidden), nn.GELU(),
            nn.Linear(cfg.hidden, cfg.hidden), nn.GELU(),
            nn.Linear(cfg.hidden, math.prod(shape)),
            nn.Unflatten(1, shape),
        ).to(auxiliary.dtype)  # fmt: skip
    optimizer = torch.optim.Adam(decoder.parameters(), lr=cfg.lr)
    for _ in range(cfg.steps):
        x = auxiliary[torch.randint(len(auxiliary), (cfg.batch_size,), generator=gen)]
        loss = (decoder(_release(embed, x, cfg, gen)) - x).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return decoder.eval()


def inversion_nmse_db(decoder: nn.Module, released: torch.Tensor, inputs: torch.Tensor) -> float:
    """Reconstruction NMSE of the true ``inputs`` from what was ``released``, in dB:
    :math:`10 \\log_{10} \\sum \\|\\hat x - x\\|^2 / \\sum \\|x\\|^2`.

    Shapes:
        released: ``[B, L, d]``, inputs: ``[B, ...]``.
    """
    with torch.no_grad():
        err = (decoder(released) - inputs).square().sum()
    return 10 * math.log10(float(err / inputs.square().sum()))
