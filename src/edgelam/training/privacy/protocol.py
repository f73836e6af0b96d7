r"""The two sides of differential privacy in split FedFT: a device's and the server's.

**Device** (:class:`DevicePrivacy`, one per device, held by its ``DeviceRole``): draws the
mini-batch (fixed-size without replacement, or Poisson), clips every sample's Jacobian rows (and
embeddings) and adds Gaussian noise before the uplink, and keeps the device's accountant, which
the training loop steps explicitly once per participation.

What each sample releases per participation is one row per tensor kind, clipped to ``C`` and
noised with std :math:`\sigma C` per entry. Replacing one sample moves a row by at most
:math:`2C`, and the Jacobian and embedding releases compose as one Gaussian mechanism, so the
accountant is told the noise multiplier

.. math::
    \sigma_{\mathrm{acc}} = \frac{\sigma}{2 \sqrt{r}}, \qquad r = \text{released tensor kinds}
    \ (1 \text{ or } 2).

With ``clip_embeddings`` the whole sample is protected and sampling amplifies privacy (the noisy
rows do not tell the server which samples were drawn): one subsampled step per participation,
at ``q = m / n`` (fixed) or Poisson rate ``q`` (see
:func:`~edgelam.training.privacy.analysis.rdp_poisson_rows`). Without it the inputs go up in the
clear, the server sees which samples were drawn, and only the targets are protected: a sample's
target is released by an unsubsampled Gaussian mechanism each time it is drawn, so the
accountant composes one Gaussian step each time the largest per-sample draw count grows.

**Server** (:class:`ServerPrivacy`): over an analog uplink, adds the receiver noise to what it
decodes; gathers the cascade measurement.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from edgelam.config import ConfigError
from edgelam.seeding import derive_seed
from edgelam.training.privacy.accountant import PrivacyAccountant
from edgelam.training.privacy.analysis import calibrate_noise
from edgelam.training.privacy.mechanism import (
    AnalogChannel,
    UplinkNoise,
    analog_noise,
    digital_noise,
    gaussian_noise,
    privatize,
)

if TYPE_CHECKING:
    from edgelam.training.privacy.config import PrivacyConfig
    from edgelam.training.split_fedft import DeviceData

__all__ = ["DevicePrivacy", "ServerPrivacy", "PHASES"]

PHASES = {"poisson": 10, "jacobians": 11, "embeddings": 12, "receiver": 13}
"""Last entry of the ``(seed, iteration, device, phase)`` seeds of each random draw (the
fixed-size batch uses ``(seed, iteration, device)``, as ``dataset_batches`` does)."""

Batch = tuple[torch.Tensor, torch.Tensor]


def _generator(*entropy: int) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(*entropy))


class DevicePrivacy:
    """Device ``index``'s sampling, clip-and-noise mechanism and accountant.

    Args:
        config: the privacy section.
        index: device index ``k``.
        num_samples: ``n_k``.
        batch_size: ``m`` (fixed: ``min(m, n_k)``; Poisson: expected size, rate ``m / n_k``).
        iterations: participations the calibration plans for (``target_epsilon``).
        seed: the run's seed.
        channel: ``channel(iteration) -> AnalogChannel`` of this device (analog uplink).

    Raises:
        ConfigError: an analog uplink without a channel.
    """

    def __init__(
        self,
        config: PrivacyConfig,
        index: int,
        num_samples: int,
        batch_size: int,
        iterations: int,
        seed: int,
        channel: Callable[[int], AnalogChannel] | None = None,
    ) -> None:
        if config.uplink == "analog" and channel is None:
            raise ConfigError(
                f"privacy.uplink: 'analog' needs device {index}'s uplink channel "
                "(SplitFedFT(..., uplink_channel=fn) with fn(iteration, device) -> AnalogChannel)"
            )
        self.config, self.index, self.n, self.seed, self.channel = (
            config, index, num_samples, seed, channel
        )  # fmt: skip
        self.batch_size = min(batch_size, num_samples)
        self.sample_rate = self.batch_size / num_samples
        self.whole_sample = config.clip_embeddings
        self.accountant = PrivacyAccountant("rdp", "replace_one")
        self.draws = torch.zeros(num_samples, dtype=torch.long)  # per-sample draw counts
        if config.noise_multiplier is not None:
            self.noise_multiplier = float(config.noise_multiplier)
        else:  # calibrate the accounted multiplier, then undo the 2 sqrt(r) of the release
            q, sampling, n = (
                (self.sample_rate, config.sampling, num_samples)
                if self.whole_sample
                else (1.0, "fixed", 1)
            )
            accounted = calibrate_noise(
                config.target_epsilon, config.delta, q, iterations,
                sampling=sampling, relation="replace_one", dataset_size=n,
            )  # fmt: skip
            self.noise_multiplier = accounted * 2 * math.sqrt(config.released)
        self.indices: torch.Tensor | None = None
        self.noise: torch.Tensor | None = None
        self.receiver_std: dict[str, float] = {}
        self.uplink: dict[str, UplinkNoise] = {}
        self.norms: dict[str, torch.Tensor] = {}  # per-sample norms before clipping, telemetry

    @property
    def accounted_noise_multiplier(self) -> float:
        """:math:`\\sigma / (2 \\sqrt{r})`, what the accountant is told each step."""
        return self.noise_multiplier / (2 * math.sqrt(self.config.released))

    def batch(self, iteration: int, data: DeviceData) -> Batch:
        """This iteration's mini-batch, drawn as the accountant assumes (rows in random order).

        Raises:
            ConfigError: the device's data cannot be indexed (``DeviceData.select`` is None).
        """
        if data.select is None:
            raise ConfigError(
                f"privacy: device {self.index}'s data cannot be drawn by index; build it with "
                "edgelam.training.split_fedft.dataset_batches (or give DeviceData.select)"
            )
        if self.config.sampling == "fixed":
            gen = _generator(self.seed, iteration, self.index)
            indices = torch.randperm(self.n, generator=gen)[: self.batch_size]
        else:
            for attempt in range(10_000):  # an empty batch is drawn again
                gen = _generator(self.seed, iteration, self.index, PHASES["poisson"], attempt)
                chosen = torch.nonzero(torch.rand(self.n, generator=gen) < self.sample_rate)
                if len(chosen):
                    break
            indices = chosen.flatten()[torch.randperm(len(chosen), generator=gen)]
        self.indices = indices
        return data.select(iteration, indices)

    def step_accountant(self) -> None:
        """Account this iteration's release (call once per participation, after :meth:`batch`)."""
        if self.indices is None:
            raise RuntimeError("step_accountant: no batch drawn this iteration")
        sigma = self.accounted_noise_multiplier
        if self.whole_sample:
            self.accountant.step(sigma, self.sample_rate, self.config.sampling,
                                 dataset_size=self.n)  # fmt: skip
        else:
            before = int(self.draws.max())
            self.draws[self.indices] += 1
            if int(self.draws.max()) > before:  # the most-drawn target was released again
                self.accountant.step(sigma, 1.0, "fixed", dataset_size=1)
        self.indices = None

    def epsilon(self) -> float:
        """The device's epsilon so far at ``config.delta``."""
        return self.accountant.get_epsilon(self.config.delta)

    def _noise_for(self, iteration: int, clip: float, entries: int) -> UplinkNoise:
        """How the noise std sigma * clip per entry splits between device and channel."""
        target = self.noise_multiplier * clip
        if self.config.uplink == "digital":
            return digital_noise(target)
        return analog_noise(target, clip, entries, self.channel(iteration))

    def embeddings(self, iteration: int, embeddings: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Clip each sample's embeddings and add noise.

        Shapes:
            embeddings ``[B, L, d]`` -> ``(clipped [B, L, d]`` (keeps the autograd graph, for
            the embedding backward), ``sent [B, L, d])``.
        """
        clip = self.config.embedding_clip_norm
        noise = self._noise_for(iteration, clip, embeddings[0].numel())
        gen = _generator(self.seed, iteration, self.index, PHASES["embeddings"])
        out = privatize(embeddings, clip, noise.device_std, gen)
        self.uplink["embeddings"], self.receiver_std["embeddings"] = noise, noise.receiver_std
        self.norms["embeddings"] = out.norms
        return out.clipped, out.released

    def jacobians(self, iteration: int, jacobian: torch.Tensor) -> torch.Tensor:
        """Clip each sample's Jacobian and add noise; returns the rows to send.

        The device's loss is a batch mean, so row ``b`` of ``jacobian`` is
        :math:`\\frac{1}{B} \\partial \\ell_b / \\partial R_b`. The per-sample Jacobian
        :math:`B J_b` is clipped to ``C`` and noised with std :math:`\\sigma C`; the result is
        divided by ``B`` again (public post-processing), so the server's backward is unchanged
        and ``C`` does not depend on the batch size. The noise in the sent rows (std
        :math:`\\sigma C / B`) is kept in :attr:`noise` for the cascade measurement.

        Shapes:
            jacobian ``[B, L, d]`` -> ``[B, L, d]``.
        """
        b, clip = jacobian.shape[0], self.config.clip_norm
        noise = self._noise_for(iteration, clip, jacobian[0].numel())
        gen = _generator(self.seed, iteration, self.index, PHASES["jacobians"])
        out = privatize(b * jacobian, clip, noise.device_std, gen)
        self.norms["jacobians"] = out.norms
        self.noise = out.noise / b
        self.uplink["jacobians"], self.receiver_std["jacobians"] = noise, noise.receiver_std / b
        return out.released / b

    def stats(self) -> dict[str, Any]:
        """The device's privacy telemetry of this iteration (JSON-ready): ``epsilon``,
        ``noise_multiplier`` and per released tensor (``jacobians``, ``embeddings``) the
        ``device_std`` and ``receiver_std`` of its noise in the clip's scale (per-sample
        Jacobians: before the division by ``B``), the analog ``transmit_power`` [W], and the
        ``median_norm`` and ``clipped_fraction`` of the per-sample norms (to tune the clip).

        The norms, like the loss, are the experimenter's view: a deployment would not send them.
        """
        out: dict[str, Any] = {"epsilon": self.epsilon(), "noise_multiplier": self.noise_multiplier}
        clips = {"jacobians": self.config.clip_norm, "embeddings": self.config.embedding_clip_norm}
        for what, u in self.uplink.items():
            norms = self.norms[what]
            out[what] = {
                "device_std": u.device_std,
                "receiver_std": u.receiver_std,
                "median_norm": float(norms.median()),
                "clipped_fraction": float((norms > clips[what]).double().mean()),
            }
            if self.config.uplink == "analog":
                out[what]["transmit_power"] = u.transmit_power
        return out


class ServerPrivacy:
    """The server's side: receiver noise of an analog uplink, and the cascade's noise record."""

    def __init__(self, config: PrivacyConfig, seed: int) -> None:
        self.config, self.seed = config, seed
        self.epsilon: dict[int, float] = {}
        """Each device's latest epsilon (0 until it participates)."""

    def receive(
        self, k: int, iteration: int, what: str, tensor: torch.Tensor, receiver_std: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Add the analog channel's receiver noise (referred to the tensor's scale) to what the
        server decodes; returns ``(decoded, receiver noise)``."""
        phase = PHASES["receiver"] + (what == "embeddings")
        rx = gaussian_noise(tensor, receiver_std, _generator(self.seed, iteration, k, phase))
        return tensor + rx, rx

    def annotate(
        self,
        record: dict[str, Any],
        telemetry: dict[int, dict[str, Any]],
        cascade: dict[str, float] | None,
    ) -> None:
        """Add to an iteration record: per scheduled device row its ``privacy`` telemetry
        (:meth:`DevicePrivacy.stats`) and ``epsilon``; ``epsilon`` (the largest of every
        device's latest), ``delta`` and, when measured, ``cascade``."""
        for row in record["devices"]:
            if row["device"] in telemetry:
                row["privacy"] = telemetry[row["device"]]
                row["epsilon"] = self.epsilon[row["device"]] = row["privacy"]["epsilon"]
        record["epsilon"] = max(self.epsilon.values())
        record["delta"] = self.config.delta
        if cascade is not None:
            record["cascade"] = cascade
