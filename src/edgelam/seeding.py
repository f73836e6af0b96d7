"""Seeds derived from tuples of integers, e.g. ``(seed, round, client)``.

Every random draw in edgelam is seeded from such a tuple, so any piece (a batch of channels, a
client's round, a pre-training step) can be regenerated alone, which is what makes runs
resumable bit for bit.

>>> derive_seed(0, 3) == derive_seed(0, 3), derive_seed(0, 3) == derive_seed(0, 4)
(True, False)
>>> derive_seed(1, 2) < 2**31, derive_seed(1, 2, bits=63) < 2**63
(True, True)
"""

from __future__ import annotations

import numpy as np

__all__ = ["derive_seed"]


def derive_seed(*entropy: int, bits: int = 31) -> int:
    """A ``bits``-bit non-negative seed from integers (``numpy.random.SeedSequence``).

    Args:
        entropy: the integers, e.g. ``(seed, round, client)``.
        bits: 31 (fits any 32-bit RNG) or up to 63.
    """
    if not 1 <= bits <= 63:
        raise ValueError(f"bits: must be in 1..63, got {bits}")
    sequence = np.random.SeedSequence(list(entropy))
    if bits <= 32:
        return int(sequence.generate_state(1)[0] >> (32 - bits))
    return int(sequence.generate_state(1, np.uint64)[0] >> (64 - bits))
