r"""Cascading noise: how the privacy noise on the Jacobians reaches the LoRA gradients.

The server's LoRA gradient is linear in the Jacobian vectors it receives,
:math:`g = \sum_k w_k V_k^\top \tilde J_k` with :math:`V_k = \partial R_k / \partial \theta` and
:math:`\tilde J_k = \bar J_k + Z_k` (clipped Jacobians plus noise). So the gradient with noise
minus the gradient of the same clipped Jacobians without noise is exactly the vector-Jacobian
product of the noise, :math:`g_Z = \sum_k w_k V_k^\top Z_k`, which the server computes with one
more backward pass; the noiseless gradient is :math:`g - g_Z`. :func:`cascade_stats` compares
the two ends of the chain rule.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

__all__ = ["cascade_stats"]


def _norm(tensors: Sequence[torch.Tensor]) -> float:
    return math.sqrt(sum(float(t.double().square().sum()) for t in tensors))


def _db(signal: float, noise: float) -> float:
    if noise == 0:
        return math.inf
    return 20 * math.log10(signal / noise) if signal > 0 else -math.inf


def cascade_stats(
    gradient: Sequence[torch.Tensor],
    noise_gradient: Sequence[torch.Tensor],
    jacobians: Mapping[int, torch.Tensor],
    noises: Mapping[int, torch.Tensor],
    weights: Mapping[int, float],
) -> dict[str, float]:
    r"""Noise and signal at the Jacobians and at the LoRA gradients of one iteration.

    Args:
        gradient: the LoRA gradient :math:`g` computed from the noisy Jacobians, per parameter.
        noise_gradient: :math:`g_Z = \sum_k w_k V_k^\top Z_k`, per parameter (same shapes).
        jacobians: device -> the Jacobians the server used, :math:`\tilde J_k` ``[B_k, L, d]``.
        noises: device -> the noise in them, :math:`Z_k` ``[B_k, L, d]`` (device + channel).
        weights: device -> :math:`w_k`.

    Returns:
        ``jacobian_noise_norm`` :math:`\|(w_k Z_k)_k\|` and ``jacobian_signal_norm``
        :math:`\|(w_k \bar J_k)_k\|` (the two parts as they enter the gradient),
        ``jacobian_noise_std`` (RMS of :math:`Z_k` per entry), ``lora_noise_norm``
        :math:`\|g_Z\|`, ``lora_signal_norm`` :math:`\|g - g_Z\|`, ``lora_noise_std`` (RMS of
        :math:`g_Z` per LoRA parameter), ``noise_gain`` and ``signal_gain`` (LoRA norm over
        Jacobian norm), ``jacobian_snr_db`` and ``lora_snr_db`` (:math:`20 \log_{10}` of
        signal over noise norm).

    >>> g, gz = [torch.tensor([3.0, 5.0])], [torch.tensor([0.0, 1.0])]
    >>> out = cascade_stats(g, gz, {0: torch.ones(1, 1, 2)}, {0: torch.zeros(1, 1, 2)}, {0: 1.0})
    >>> out["lora_signal_norm"], out["lora_noise_norm"], out["jacobian_noise_norm"]
    (5.0, 1.0, 0.0)
    """
    if len(gradient) != len(noise_gradient):
        raise ValueError(f"gradient: {len(gradient)} tensors, noise: {len(noise_gradient)}")
    jac_noise = _norm([weights[k] * noises[k] for k in noises])
    jac_signal = _norm([weights[k] * (jacobians[k] - noises[k]) for k in noises])
    entries = sum(z.numel() for z in noises.values())
    lora_noise = _norm(noise_gradient)
    lora_signal = _norm([g - z for g, z in zip(gradient, noise_gradient, strict=True)])
    params = sum(z.numel() for z in noise_gradient)
    return {
        "jacobian_noise_norm": jac_noise,
        "jacobian_signal_norm": jac_signal,
        "jacobian_noise_std": _norm(list(noises.values())) / math.sqrt(max(entries, 1)),
        "lora_noise_norm": lora_noise,
        "lora_signal_norm": lora_signal,
        "lora_noise_std": lora_noise / math.sqrt(max(params, 1)),
        "noise_gain": lora_noise / jac_noise if jac_noise > 0 else math.nan,
        "signal_gain": lora_signal / jac_signal if jac_signal > 0 else math.nan,
        "jacobian_snr_db": _db(jac_signal, jac_noise),
        "lora_snr_db": _db(lora_signal, lora_noise),
    }
