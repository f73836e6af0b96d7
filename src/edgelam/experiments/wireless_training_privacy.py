r"""Differential privacy in the wireless split-FedFT experiment (docs/privacy.md).

Three pieces, used by :mod:`~edgelam.experiments.wireless_training_run` when
``split_fedft.privacy.enabled``:

* :class:`NetworkUplink`: each device's uplink as an analog transmission sees it, taken from the
  simulated cell (:class:`~edgelam.network.Network` and the round's
  :class:`~edgelam.network.LinkState`): the channel power gain
  :math:`g_k = 10^{(G_a - PL_k - SF_k)/10} |h_k(r)|^2` (antenna gain, path loss, shadowing,
  the round's fading), the receiver noise power :math:`N_0` over the device's nominal uplink
  band (thermal noise with the BS noise figure) and the transmit power: the device's maximum
  (``analog_power = 'max'``) or the least of that and the *privacy transmit power*
  :math:`P^\star_k = N_0 / (g_k D \sigma_k^2)` at which the receiver noise alone is the privacy
  noise (``'matched'``; :func:`~edgelam.training.privacy.mechanism.privacy_transmit_power`).
  :math:`g_k P / N_0` is the link's SNR (``LinkState.uplink_snr_db`` at the maximum power).
* :func:`round_fields` / :func:`privacy_summary`: what ``metrics.jsonl`` records per round and
  ``summary.json`` at the end (epsilon per device, the cascade, transmit powers and energies).
* :class:`ClippedEmbeddingModel`: the model evaluated as it was trained with
  ``clip_embeddings`` (each sample's embeddings clipped, no noise).
* :func:`build_predictor`: the LLM4CP predictor, also with per-sample normalisation on a
  checkpoint pre-trained with the batch one.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from edgelam.models.llm4cp import LLM4CPConfig
from edgelam.network import Network, dbm_to_watt, linear_to_db
from edgelam.training.privacy.config import PrivacyConfig
from edgelam.training.privacy.mechanism import AnalogChannel, clip_per_sample
from edgelam.training.split import SplitModel

__all__ = [
    "NetworkUplink",
    "ClippedEmbeddingModel",
    "build_predictor",
    "round_fields",
    "privacy_summary",
]


def build_predictor(cfg: LLM4CPConfig, seed: int) -> tuple[nn.Module, dict[str, Any]]:
    """:func:`~edgelam.models.adapters.build_llm4cp`, and with ``normalization = 'sample'`` on a
    checkpoint pre-trained with another normalisation (the shipped edgelam-wireless: 'batch'):
    built with the checkpoint's, then switched to per-sample normalisation (privacy needs it).

    The switch only changes the scale each history is normalised by (its own mean/std instead of
    the batch's); on the quick profile's validation users the pre-trained model scores
    -4.07 dB with it against -3.87 dB with the batch normalisation it was trained with.

    Returns:
        ``(model, info)`` as ``build_llm4cp``; ``info["normalization"]`` says what was done.
    """
    from edgelam.models.adapters import build_llm4cp
    from edgelam.models.pretrained import WIRELESS, wireless_architecture

    trained_with = (
        wireless_architecture()["normalization"] if cfg.backbone.pretrained == WIRELESS else None
    )
    if trained_with is None or trained_with == cfg.normalization:
        model, info = build_llm4cp(cfg, seed=seed)
        return model, info | {"normalization": cfg.normalization}
    model, info = build_llm4cp(dataclasses.replace(cfg, normalization=trained_with), seed=seed)
    model.normalization = cfg.normalization
    return model, info | {"normalization": f"{cfg.normalization} (pre-trained: {trained_with})"}


class NetworkUplink:
    r"""The devices' analog uplinks in round ``r`` of the simulated cell.

    Call it as ``uplink(iteration, device) -> AnalogChannel`` (the ``uplink_channel`` of
    :class:`~edgelam.training.split_fedft.SplitFedFT`; split-FedFT iteration ``t`` is round
    ``t`` of the network). The analog transmission uses the device's nominal uplink band
    ``network.uplink_bandwidth_hz``, one real channel use per released entry.

    Args:
        network: the cell.
        entries: :math:`D`, entries per released row (``L x d``).
        power: ``'max'`` or ``'matched'`` (see the module docstring).

    Attributes:
        noise_multiplier: device -> :math:`\sigma_k`; set once the devices have calibrated it
            (``SplitFedFT`` built), before the first iteration.

    >>> from edgelam.network import NetworkConfig
    >>> up = NetworkUplink(Network(NetworkConfig(num_devices=2)), entries=64, power="matched")
    >>> up.noise_multiplier = {0: 1.0, 1: 1.0}
    >>> ch = up(0, 1)
    >>> round(10 * math.log10(ch.snr * 64 * 1.0**2), 6)  # rho = 1 / (D sigma^2) at P*
    0.0
    """

    def __init__(self, network: Network, entries: int, power: str = "max") -> None:
        if power not in ("max", "matched"):
            raise ValueError(f"power: {power!r} is not one of ['max', 'matched']")
        cfg = network.config
        self.network, self.entries, self.power = network, int(entries), power
        self.max_power_w = float(dbm_to_watt(cfg.device_tx_power_dbm))
        self.noise_power_w = float(dbm_to_watt(network.uplink_noise_dbm))
        self.bandwidth_hz = cfg.uplink_bandwidth_hz
        self.noise_multiplier: dict[int, float] = {}
        self._large_scale = 10.0 ** ((cfg.antenna_gain_db - network.large_scale_loss_db) / 10.0)
        self._round: tuple[int, torch.Tensor] | None = None

    def gain(self, r: int) -> torch.Tensor:
        """``[K]`` channel power gains :math:`g_k` of round ``r`` (linear)."""
        if self._round is None or self._round[0] != r:
            self._round = (r, self._large_scale * self.network.round(r).uplink_gain)
        return self._round[1]

    def privacy_power(self, r: int) -> list[float]:
        r"""``[K]`` :math:`P^\star_k = N_0 / (g_k D \sigma_k^2)` [W] (``inf`` for
        :math:`\sigma_k = 0`: no power is low enough to need no device noise)."""
        g = self.gain(r)
        out = []
        for k in range(self.network.num_devices):
            sigma = self.noise_multiplier.get(k, 0.0)
            p = self.noise_power_w / (float(g[k]) * self.entries * sigma**2) if sigma else math.inf
            out.append(p)
        return out

    def transmit_power(self, r: int) -> list[float]:
        """``[K]`` analog transmit powers [W] of round ``r`` under :attr:`power`."""
        if self.power == "max":
            return [self.max_power_w] * self.network.num_devices
        return [min(self.max_power_w, p) for p in self.privacy_power(r)]

    def __call__(self, iteration: int, device: int) -> AnalogChannel:
        return AnalogChannel(
            gain=float(self.gain(iteration)[device]),
            transmit_power=self.transmit_power(iteration)[device],
            noise_power=self.noise_power_w,
        )


class ClippedEmbeddingModel(nn.Module):
    """A split model whose embeddings are clipped per sample to ``clip_norm`` (no noise): the
    model as the server's backbone saw it in training with ``clip_embeddings``.

    Shapes:
        inputs ``[B, ...]`` -> the task module's outputs (LLM4CP: ``[B, L_f, 2F]``).
    """

    def __init__(self, split: SplitModel, clip_norm: float) -> None:
        super().__init__()
        self.embedding, self.backbone, self.task = split.embedding, split.backbone, split.task
        self.clip_norm = clip_norm

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        embeddings, context = self.embedding(inputs)
        return self.task(self.backbone(clip_per_sample(embeddings, self.clip_norm)[0]), context)


def _dbm(watt: float) -> float | None:
    return None if not math.isfinite(watt) else float(linear_to_db(watt * 1e3))


def round_fields(
    record: Mapping[str, Any],
    latest_epsilon: Mapping[int, float],
    uplink: NetworkUplink,
    config: PrivacyConfig,
) -> dict[str, Any]:
    """The privacy fields of a round's ``metrics.jsonl`` record (``[K]`` lists by device).

    Args:
        record: the split-FedFT iteration record (``epsilon``, ``delta``, ``cascade``, rows).
        latest_epsilon: device -> its epsilon so far (devices yet to take part: absent, 0).
        uplink: the cell's uplinks (also for a digital uplink: what an analog one would need).
        config: the privacy section.

    Returns:
        ``epsilon`` (largest device's), ``delta``, ``epsilon_per_device``, ``cascade`` (when
        measured), ``privacy_per_device`` (the devices' telemetry, None if not scheduled),
        ``uplink_snr_db`` (at the maximum power), ``privacy_transmit_power_dbm``
        (:math:`P^\\star_k`; None for sigma = 0), ``transmit_power_dbm`` (used: the maximum for a
        digital uplink), ``transmit_power_saved_db`` (maximum over used, dB) and, analog only,
        ``analog_uplink_energy_j`` (used power x airtime of the noised rows, ``released x B_k x
        D`` real channel uses over the nominal band; 0 if not scheduled).
    """
    r, k_all = record["iteration"], uplink.network.num_devices
    rows = {row["device"]: row for row in record["devices"]}
    analog = config.uplink == "analog"
    used = uplink.transmit_power(r) if analog else [uplink.max_power_w] * k_all
    snr = uplink.gain(r) * uplink.max_power_w / uplink.noise_power_w
    out: dict[str, Any] = {
        "epsilon": record["epsilon"],
        "delta": record["delta"],
        "epsilon_per_device": [latest_epsilon.get(k, 0.0) for k in range(k_all)],
        "privacy_per_device": [
            rows[k].get("privacy") if k in rows else None for k in range(k_all)
        ],  # fmt: skip
        "uplink_snr_db": linear_to_db(snr).tolist(),
        "privacy_transmit_power_dbm": [_dbm(p) for p in uplink.privacy_power(r)],
        "transmit_power_dbm": [_dbm(p) for p in used],
        "transmit_power_saved_db": [float(linear_to_db(uplink.max_power_w / p)) for p in used],
    }
    if "cascade" in record:
        out["cascade"] = record["cascade"]
    if analog:
        uses = [config.released * rows[k]["batch_size"] * uplink.entries if k in rows else 0
                for k in range(k_all)]  # fmt: skip
        out["analog_uplink_energy_j"] = [
            p * n / (2 * uplink.bandwidth_hz) for p, n in zip(used, uses, strict=True)
        ]
    return out


def _mean(values: Sequence[float | None]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


def privacy_summary(
    records: Sequence[Mapping[str, Any]],
    config: PrivacyConfig,
    uplink: NetworkUplink,
    devices: Mapping[int, Any],
) -> dict[str, Any]:
    """``summary.json``'s ``privacy`` section from the rounds' records.

    Args:
        records: the ``kind = "round"`` records (with :func:`round_fields`' fields and the
            accountant's ``phases``).
        config: the privacy section.
        uplink: the cell's uplinks (its ``power`` is the experiment's ``analog_power``).
        devices: device -> its :class:`~edgelam.training.privacy.protocol.DevicePrivacy`.

    Returns:
        ``epsilon`` (largest device's, final), ``delta``, ``epsilon_per_device``,
        ``noise_multiplier_per_device`` (:math:`\\sigma_k`), ``sample_rate_per_device``, the
        mechanism's settings, ``cascade`` (each measurement's mean over rounds, finite values),
        per device the means over rounds of ``uplink_snr_db``, ``privacy_transmit_power_dbm``,
        ``transmit_power_dbm`` and ``transmit_power_saved_db``, the total
        ``digital_uplink_energy_j_per_device`` (maximum power x the allocation's uplink time of
        the whole uplink) and, analog only, ``analog_uplink_energy_j_per_device``.
    """
    last, k_all = records[-1], len(devices)
    out: dict[str, Any] = {
        "epsilon": last["epsilon"],
        "delta": last["delta"],
        "epsilon_per_device": last["epsilon_per_device"],
        "noise_multiplier_per_device": [devices[k].noise_multiplier for k in range(k_all)],
        "sample_rate_per_device": [devices[k].sample_rate for k in range(k_all)],
        "target_epsilon": config.target_epsilon,
        "clip_norm": config.clip_norm,
        "clip_embeddings": config.clip_embeddings,
        "embedding_clip_norm": config.embedding_clip_norm if config.clip_embeddings else None,
        "sampling": config.sampling,
        "uplink": config.uplink,
        "analog_power": uplink.power if config.uplink == "analog" else None,
    }
    cascades = [r["cascade"] for r in records if "cascade" in r]
    if cascades:
        out["cascade"] = {key: _mean([c[key] for c in cascades]) for key in cascades[0]}
    for key in ("uplink_snr_db", "privacy_transmit_power_dbm", "transmit_power_dbm",
                "transmit_power_saved_db"):  # fmt: skip
        out[f"{key}_per_device"] = [_mean([r[key][k] for r in records]) for k in range(k_all)]
    out["digital_uplink_energy_j_per_device"] = [
        sum(uplink.max_power_w * r["phases"]["train"]["uplink_seconds"][k] for r in records)
        for k in range(k_all)
    ]
    if config.uplink == "analog":
        out["analog_uplink_energy_j_per_device"] = [
            sum(r["analog_uplink_energy_j"][k] for r in records) for k in range(k_all)
        ]
    return out
