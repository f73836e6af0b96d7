"""Differential privacy for split federated fine-tuning (docs/privacy.md).

Three layers, as in opacus:

* :mod:`~edgelam.training.privacy.analysis`: pure math. RDP curves of subsampled Gaussian
  events (``dp-accounting``), RDP -> (epsilon, delta), the PLD cross-check, noise calibration.
* :mod:`~edgelam.training.privacy.accountant`: :class:`PrivacyAccountant`, stateful, stepped
  explicitly by the training loop.
* :mod:`~edgelam.training.privacy.mechanism`: per-sample clipping and Gaussian noise, digital
  or over an analog uplink whose receiver noise counts.

:mod:`~edgelam.training.privacy.protocol` wires them into split FedFT (a device's sampler,
mechanism and accountant; the server's side), configured by :class:`PrivacyConfig`;
:mod:`~edgelam.training.privacy.cascade` measures the noise that reaches the LoRA gradients.
The ``edgelam privacy`` commands live in :mod:`~edgelam.training.privacy.command`;
:mod:`~edgelam.training.privacy.attack` is the curious server's embedding inversion.
"""

from edgelam.training.privacy.accountant import PrivacyAccountant
from edgelam.training.privacy.analysis import (
    calibrate_noise,
    combine_noise_multipliers,
    epsilon,
    epsilon_from_rdp,
    gaussian_event,
    pld_epsilon,
    rdp_curve,
)
from edgelam.training.privacy.cascade import cascade_stats
from edgelam.training.privacy.config import PrivacyConfig
from edgelam.training.privacy.mechanism import (
    AnalogChannel,
    UplinkNoise,
    analog_noise,
    clip_per_sample,
    digital_noise,
    privacy_transmit_power,
    privatize,
)
from edgelam.training.privacy.protocol import DevicePrivacy, ServerPrivacy

__all__ = [
    "PrivacyAccountant",
    "PrivacyConfig",
    "calibrate_noise",
    "combine_noise_multipliers",
    "epsilon",
    "epsilon_from_rdp",
    "gaussian_event",
    "pld_epsilon",
    "rdp_curve",
    "cascade_stats",
    "AnalogChannel",
    "UplinkNoise",
    "analog_noise",
    "clip_per_sample",
    "digital_noise",
    "privacy_transmit_power",
    "privatize",
    "DevicePrivacy",
    "ServerPrivacy",
]
