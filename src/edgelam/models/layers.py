"""Building blocks shared by the channel predictors: input normalisation, positions, seeding.

Every predictor maps a CSI history ``[B, L_h, 2F]`` (``F`` subcarriers, real and imaginary parts
interleaved: ``[Re h_0, Im h_0, Re h_1, ...]``) to a prediction ``[B, L_f, 2F]``. All of them
treat their input the same way: :func:`normalize_per_call` before the network and
:func:`denormalize` after it, so every predictor is scale- and shift-equivariant
(``f(a x + c) = a f(x) + c`` for ``a > 0``) whatever the scale of the CSI it is given.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Literal

import torch

__all__ = [
    "Normalization",
    "check_history",
    "denormalize",
    "normalize_per_call",
    "seeded",
    "sinusoidal_positions",
]

Normalization = Literal["batch", "sample"]


def normalize_per_call(
    x: torch.Tensor, mode: Normalization = "batch"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Standardise ``x`` by its own mean and (unbiased) standard deviation.

    ``"batch"`` uses one scalar mean/std over the whole call, as LLM4CP does (an item's
    prediction then depends on the other items of its batch); ``"sample"`` uses one per item.

    Args:
        x: the input batch.
        mode: ``"batch"`` or ``"sample"``.

    Returns:
        ``(x_norm, mean, std)`` with ``x_norm = (x - mean) / std``; ``std`` is clamped at the
        smallest positive float so a constant input does not divide by zero.

    Shapes:
        x: ``[B, ...]`` -> x_norm like x; mean, std: ``[]`` (batch) or ``[B, 1, ..., 1]`` (sample).

    >>> x = torch.tensor([[[1.0, 3.0]], [[5.0, 7.0]]])
    >>> z, m, s = normalize_per_call(x)
    >>> float(m), round(float(z.std()), 6)
    (4.0, 1.0)
    """
    if mode == "batch":
        mean, std = x.mean(), x.std()
    elif mode == "sample":
        dims = tuple(range(1, x.dim()))
        mean, std = x.mean(dim=dims, keepdim=True), x.std(dim=dims, keepdim=True)
    else:
        raise ValueError(f"normalization must be 'batch' or 'sample', got {mode!r}")
    std = std.clamp_min(torch.finfo(x.dtype).tiny)
    return (x - mean) / std, mean, std


def denormalize(y: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Undo :func:`normalize_per_call`: ``y * std + mean``.

    Shapes:
        y: ``[B, ...]``; mean, std as returned by :func:`normalize_per_call` -> like y.
    """
    return y * std + mean


def sinusoidal_positions(length: int, dim: int) -> torch.Tensor:
    """The fixed sine/cosine positional encoding of "Attention is all you need".

    ``pe[t, 2i] = sin(t / 10000^(2i/dim))`` and ``pe[t, 2i+1] = cos(t / 10000^(2i/dim))``.

    Shapes:
        -> ``[length, dim]`` float32.

    >>> pe = sinusoidal_positions(2, 4)
    >>> torch.allclose(pe[1, :2], torch.tensor([math.sin(1.0), math.cos(1.0)]))
    True
    """
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim)
    pe[:, 0::2] = torch.sin(position * freq)
    pe[:, 1::2] = torch.cos(position * freq[: dim // 2])
    return pe


def check_history(x: torch.Tensor, history_slots: int, num_subcarriers: int) -> None:
    """Raise a ``ValueError`` naming the expected shape unless ``x`` is ``[B, L_h, 2F]``."""
    if x.dim() != 3 or x.shape[1] != history_slots or x.shape[2] != 2 * num_subcarriers:
        raise ValueError(
            f"expected history of shape [B, {history_slots}, {2 * num_subcarriers}] "
            f"([batch, history_slots, 2 * num_subcarriers]), got {list(x.shape)}"
        )


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block with torch's CPU RNG seeded by ``seed``, restoring the caller's RNG after.

    Module constructors draw their initial weights from the global RNG; this makes a build
    reproducible from ``seed`` alone without disturbing anybody else's random stream.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
