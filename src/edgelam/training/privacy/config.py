"""The ``privacy`` section of the split-FedFT config (see docs/privacy.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from edgelam.config import ConfigError, option
from edgelam.training.privacy.analysis import check_parameters

__all__ = ["PrivacyConfig"]


@dataclass
class PrivacyConfig:
    """Differential privacy of what each device sends up (per-sample clip + Gaussian noise).

    Each device is its own data holder with its own accountant; adjacency is replace-one
    (a device's dataset size ``n_k`` is public: it reports it to the server).
    """

    enabled: bool = option(False, "clip and noise every sample's uplink rows; account per device")
    noise_multiplier: float | None = option(
        None, "sigma: noise std = sigma * clip norm on every released tensor (or target_epsilon)"
    )
    target_epsilon: float | None = option(
        None,
        "calibrate sigma at the start so that each device's epsilon at delta stays within this "
        "after `iterations` participations (instead of noise_multiplier)",
    )
    delta: float = option(1e-5, "delta of the reported (epsilon, delta)")
    clip_norm: float = option(
        1.0, "C: L2 clip of each sample's Jacobian dl_b/dR_b [L, d] (B times its batch-mean row)"
    )
    clip_embeddings: bool = option(
        False,
        "also clip and noise each sample's embeddings; without it the inputs go up in the clear "
        "and epsilon protects the targets (labels) only",
    )
    embedding_clip_norm: float = option(1.0, "L2 clip of each sample's embeddings [L, d]")
    sampling: Literal["fixed", "poisson"] = option(
        "fixed",
        "mini-batches: fixed-size without replacement (batch_size of n_k), or Poisson with rate "
        "batch_size / n_k (an empty batch is drawn again); the accountant is told the same",
    )
    uplink: Literal["digital", "analog"] = option(
        "digital",
        "digital: the device injects all the noise; analog: the receiver noise at the server "
        "counts, the device injects the rest (needs the devices' uplink channels)",
    )
    measure_cascade: bool = option(
        True, "measure the noise reaching the LoRA gradients each iteration (extra backward)"
    )

    def __post_init__(self) -> None:
        for name, allowed in (("sampling", ("fixed", "poisson")),
                              ("uplink", ("digital", "analog"))):  # fmt: skip
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name}: {getattr(self, name)!r} is not one of {list(allowed)}")
        for name in ("clip_norm", "embedding_clip_norm"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name}: must be > 0, got {getattr(self, name)}")
        check_parameters(delta=self.delta)
        if self.noise_multiplier is not None:
            check_parameters(noise_multiplier=self.noise_multiplier)
        if self.target_epsilon is not None:
            check_parameters(epsilon=self.target_epsilon)
        if self.enabled and (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise ConfigError(
                "noise_multiplier: give exactly one of noise_multiplier and target_epsilon, got "
                f"noise_multiplier={self.noise_multiplier}, target_epsilon={self.target_epsilon}"
            )

    @property
    def released(self) -> int:
        """Number of tensors each sample releases with noise (Jacobians [+ embeddings])."""
        return 1 + int(self.clip_embeddings)
