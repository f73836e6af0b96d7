"""Wireless split-FedFT training vs. FedAvg baselines on the channel-prediction task.

Three schemes train the LLM4CP-style channel predictor of the case study across ``K`` edge
devices, each holding a disjoint partition of the training users, over the same simulated cell:

* ``split-fedft``: split federated fine-tuning (:mod:`edgelam.training.split_fedft`): the
  devices hold the CSI embedding and the prediction head, the edge server holds the backbone
  (frozen, LoRA). Each iteration moves embeddings and Jacobian vectors up, representations and
  embedding gradients down (unicast), and the device modules are averaged every
  ``split_fedft.device_sync_every`` iterations.
* ``fedavg-lora``: FedAvg (:mod:`edgelam.training.fedavg`) where every device holds the whole
  model (frozen backbone + LoRA) and trains the LoRA matrices and the non-backbone modules.
* ``fedavg-full``: FedAvg with full fine-tuning of every parameter on every device.

All schemes get the same budget of local SGD iterations per device (``iterations``; FedAvg:
``iterations / fedavg.local_steps`` rounds), the same mini-batch size and the same data. Every
round's bits come from the protocol's own ledger; its latency and device energy come from
:mod:`edgelam.training.resource_allocation` (``allocation``: equal split, latency-optimal split
or the Lyapunov scheduler, which also decides who takes part). See ``docs/wireless_training.md``.

Run directory: ``config.json``, ``metrics.jsonl`` (``kind="init"``: the validation NMSE before
training; ``kind="round"``: one record per split-FedFT iteration or FedAvg round) and
``summary.json``. :func:`~edgelam.experiments.wireless_training_report.run_comparison` runs every
scheme and writes the comparison and its plots.

Differential privacy (``[split_fedft.privacy]``, docs/privacy.md) applies to ``split-fedft``:
each device clips and noises what it sends up and accounts its own (epsilon, delta); every round
records epsilon and ``summary.json`` the final one. It needs ``split_fedft.device_sync_every =
0`` and ``llm4cp.normalization = 'sample'`` (kept with the pre-trained backbone, which was
pre-trained with 'batch'). With ``uplink = 'analog'`` each device's channel gain, transmit power
and the server's receiver noise come from the simulated cell
(:class:`~edgelam.experiments.wireless_training_privacy.NetworkUplink`, ``analog_power``).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from edgelam.channels.config import ChannelConfig
from edgelam.config import ConfigError, option, to_dict
from edgelam.models.llm4cp import LLM4CPConfig
from edgelam.network import NetworkConfig
from edgelam.network.compute import DEVICE_PRESETS
from edgelam.training.fedavg import FedAvgConfig
from edgelam.training.resource_allocation import ResourceAllocationConfig
from edgelam.training.split_fedft import SplitFedFTConfig

__all__ = [
    "SCHEMES",
    "WirelessTrainingConfig",
    "WIRELESS_PROFILES",
    "wireless_profile",
    "resolve_config",
    "run_wireless_training",
]

SCHEMES = ("split-fedft", "fedavg-full", "fedavg-lora")
Scheme = Literal["split-fedft", "fedavg-full", "fedavg-lora"]
#: Which backbone parameters train under each scheme (LLM4CPConfig.trainable).
TRAINABLE = {"split-fedft": "lora", "fedavg-lora": "lora", "fedavg-full": "full"}


@dataclass
class WirelessTrainingConfig:
    """Everything that determines a wireless training run (every field documented).

    Derived fields (set here, whatever the file says): ``network.num_devices = num_devices``;
    ``llm4cp.trainable`` from ``scheme`` (split-fedft, fedavg-lora: 'lora'; fedavg-full: 'full');
    ``split_fedft.iterations = iterations``; ``fedavg.rounds = iterations / fedavg.local_steps``;
    ``split_fedft.batch_size = fedavg.batch_size = batch_size``; both sub-configs' ``seed = seed``.
    """

    profile: str = option("quick", "profile this config came from (recorded)", cli=False)
    scheme: Scheme = option(
        "split-fedft",
        "training scheme: split-fedft, fedavg-full (full fine-tuning on every device) or "
        "fedavg-lora (frozen backbone + LoRA on every device)",
        cli=False,
    )
    num_devices: int = option(10, "K edge devices, each holding its own partition of users")
    iterations: int = option(
        120,
        "budget in local SGD iterations per device: split FedFT iterations; FedAvg rounds x "
        "fedavg.local_steps",
    )
    batch_size: int = option(32, "mini-batch items per device per local iteration (all schemes)")
    eval_every: int = option(
        8, "evaluate the validation NMSE every this many local iterations (a multiple of "
        "fedavg.local_steps)",
    )  # fmt: skip
    target_loss: float = option(
        0.25, "validation NMSE (linear) that defines time-to-target and bits-to-target"
    )
    partition: Literal["iid", "speed", "dirichlet"] = option(
        "iid",
        "how training users are shared out: iid, speed (contiguous speed bands) or dirichlet "
        "(speed-bin label skew, all training users)",
    )
    dirichlet_alpha: float = option(0.5, "Dirichlet concentration (partition = dirichlet)")
    fraction_per_device: float = option(
        0.05, "share of the training users each device holds (iid and speed partitions)"
    )
    split: tuple[float, float, float] = option((0.8, 0.1, 0.1), "train/val/test user fractions")
    train_snr_db: tuple[float, float] = option((5.0, 20.0), "observation SNR range in training")
    eval_snr_db: float = option(
        18.0, "observation SNR of validation/test histories (clean targets)"
    )
    val_users: int = option(
        8, "validation users evaluated each time (a seeded subset of the validation split; 0: all)"
    )
    eval_batch_size: int = option(512, "items per evaluation forward pass (whole users)")
    speed_group_edges_kmh: tuple[float, ...] = option(
        (10, 20, 30, 40, 50, 60, 70, 80, 90, 100), "edges of the per-speed test NMSE groups"
    )
    backbone: Literal["edgelam-wireless", "gpt2", "random"] = option(
        "edgelam-wireless",
        "LAM backbone (as the case study): the shipped pre-trained wireless backbone, GPT-2 "
        "small's first 6 layers, or llm4cp.backbone at random init",
    )
    device_profile: str = option(
        "smartphone", f"compute profile of every device, one of {sorted(DEVICE_PRESETS)}"
    )
    server_profile: str = option(
        "edge-server-a100", f"compute profile of the edge server, one of {sorted(DEVICE_PRESETS)}"
    )
    cache_dir: str = option("data/casestudy", "where generated CSI datasets are cached")
    num_threads: int = option(0, "torch CPU threads for the run (0: torch's default)")
    analog_power: Literal["max", "matched"] = option(
        "max",
        "transmit power of the analog private uplink (split_fedft.privacy.uplink = 'analog'): "
        "max (network.device_tx_power_dbm; the device injects what the receiver noise leaves) "
        "or matched (the least of that and the power at which the receiver noise alone is the "
        "privacy noise: the device injects nothing and saves power)",
    )
    seed: int = option(0, "seed of the user split, partitions, model init and training")
    channel: ChannelConfig = field(
        default_factory=lambda: ChannelConfig(num_samples=1000),
        metadata={"help": "the CSI dataset (generated on first use, cached as the case study's)"},
    )
    llm4cp: LLM4CPConfig = field(
        default_factory=LLM4CPConfig, metadata={"help": "the channel predictor"}
    )
    network: NetworkConfig = field(
        default_factory=NetworkConfig, metadata={"help": "the cell: device drop and radio links"}
    )
    allocation: ResourceAllocationConfig = field(
        default_factory=ResourceAllocationConfig,
        metadata={"help": "uplink allocation policy (equal | latency_optimal | lyapunov)"},
    )
    split_fedft: SplitFedFTConfig = field(
        default_factory=lambda: SplitFedFTConfig(
            lr=3e-3, device_lr=3e-3, embedding_grad=True, device_sync_every=4
        ),
        metadata={"help": "split FedFT (scheme = split-fedft)"},
    )
    fedavg: FedAvgConfig = field(
        default_factory=lambda: FedAvgConfig(local_steps=4, lr=3e-3),
        metadata={"help": "FedAvg (schemes fedavg-full, fedavg-lora)"},
    )

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ConfigError(f"scheme: {self.scheme!r} is not one of {list(SCHEMES)}")
        for name in ("num_devices", "iterations", "batch_size", "eval_every", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if not self.target_loss > 0:
            raise ConfigError(f"target_loss: must be > 0, got {self.target_loss}")
        if self.partition not in ("iid", "speed", "dirichlet"):
            raise ConfigError(
                f"partition: {self.partition!r} is not one of ['iid', 'speed', 'dirichlet']"
            )
        if not self.dirichlet_alpha > 0:
            raise ConfigError(f"dirichlet_alpha: must be > 0, got {self.dirichlet_alpha}")
        if not 0 < self.fraction_per_device * self.num_devices <= 1 + 1e-9:
            raise ConfigError(
                f"fraction_per_device: {self.num_devices} devices x {self.fraction_per_device} "
                "must be in (0, 1] of the training users"
            )
        if self.val_users < 0 or self.num_threads < 0:
            raise ConfigError("val_users and num_threads: must be >= 0")
        for name in ("device_profile", "server_profile"):
            if getattr(self, name) not in DEVICE_PRESETS:
                raise ConfigError(
                    f"{name}: {getattr(self, name)!r} is not one of {sorted(DEVICE_PRESETS)}"
                )
        steps = self.fedavg.local_steps
        for name in ("iterations", "eval_every"):
            if getattr(self, name) % steps:
                raise ConfigError(
                    f"{name}: must be a multiple of fedavg.local_steps={steps}, "
                    f"got {getattr(self, name)}"
                )
        if self.analog_power not in ("max", "matched"):
            raise ConfigError(
                f"analog_power: {self.analog_power!r} is not one of ['max', 'matched']"
            )
        self._check_privacy()
        shape = {k: getattr(self.channel, k)
                 for k in ("history_slots", "future_slots", "num_subcarriers")}  # fmt: skip
        wrong = {
            k: getattr(self.llm4cp, k) for k, v in shape.items() if getattr(self.llm4cp, k) != v
        }
        if wrong:
            raise ConfigError(f"llm4cp: {wrong} disagree with the channel config {shape}")
        self.network = dataclasses.replace(self.network, num_devices=self.num_devices)
        self.llm4cp = dataclasses.replace(self.llm4cp, trainable=TRAINABLE[self.scheme])
        self.split_fedft = dataclasses.replace(self.split_fedft, iterations=self.iterations,
                                               batch_size=self.batch_size, seed=self.seed)  # fmt: skip
        self.fedavg = dataclasses.replace(self.fedavg, rounds=self.iterations // steps,
                                          batch_size=self.batch_size, seed=self.seed)  # fmt: skip

    def _check_privacy(self) -> None:
        """The constraints of ``split_fedft.privacy`` (the sub-config checks device sync)."""
        if not self.split_fedft.privacy.enabled:
            return
        if self.scheme != "split-fedft":
            raise ConfigError(
                f"split_fedft.privacy.enabled: differential privacy is implemented for the "
                f"split-fedft scheme only, not {self.scheme!r}; set it to false for this scheme"
            )
        if self.llm4cp.normalization != "sample":
            raise ConfigError(
                f"llm4cp.normalization: must be 'sample' with split_fedft.privacy.enabled, got "
                f"{self.llm4cp.normalization!r} ('batch' shares one mean/std across the batch, so "
                'clipping each sample bounds nothing); set [llm4cp] normalization = "sample"'
            )

    @property
    def is_split(self) -> bool:
        """Whether the scheme is split FedFT (else FedAvg)."""
        return self.scheme == "split-fedft"

    @property
    def local_steps(self) -> int:
        """Local SGD iterations per round: 1 for split FedFT, ``fedavg.local_steps`` for FedAvg."""
        return 1 if self.is_split else self.fedavg.local_steps


def _quick() -> WirelessTrainingConfig:
    """10 devices on the case study's quick data and model; about 3-4 CPU minutes per scheme."""
    from edgelam.experiments.casestudy import profile_config

    case = profile_config("quick")
    return WirelessTrainingConfig(
        profile="quick",
        channel=case.channel,
        llm4cp=case.llm4cp,
        backbone=case.backbone,
        network=NetworkConfig(num_devices=10),
        allocation=ResourceAllocationConfig(
            policy="latency_optimal", lyapunov_v=1.0, energy_budget_j=0.25, latency_weight=0.05
        ),
    )


def _tiny() -> WirelessTrainingConfig:
    """3 devices on the case study's tiny data and model: seconds, for tests."""
    from edgelam.experiments.casestudy import profile_config

    case = profile_config("tiny")
    return WirelessTrainingConfig(
        profile="tiny",
        num_devices=3,
        iterations=4,
        batch_size=8,
        eval_every=2,
        fraction_per_device=0.1,
        val_users=4,
        speed_group_edges_kmh=case.speed_group_edges_kmh,
        backbone=case.backbone,
        channel=case.channel,
        llm4cp=case.llm4cp,
        network=NetworkConfig(num_devices=3),
        allocation=ResourceAllocationConfig(energy_budget_j=0.05, latency_weight=0.05),
        split_fedft=SplitFedFTConfig(
            lr=3e-3, device_lr=3e-3, embedding_grad=True, device_sync_every=2
        ),
        fedavg=FedAvgConfig(local_steps=2, lr=3e-3),
    )


WIRELESS_PROFILES = {"quick": _quick, "tiny": _tiny}


def wireless_profile(name: str, scheme: str | None = None) -> WirelessTrainingConfig:
    """The config of profile ``name`` (``quick`` or ``tiny``), optionally for ``scheme``.

    Raises:
        ConfigError: unknown profile or scheme.
    """
    if name not in WIRELESS_PROFILES:
        raise ConfigError(f"profile: {name!r} is not one of {sorted(WIRELESS_PROFILES)}")
    cfg = WIRELESS_PROFILES[name]()
    return cfg if scheme is None else dataclasses.replace(cfg, scheme=scheme)


def resolve_config(cfg: WirelessTrainingConfig) -> WirelessTrainingConfig:
    """``cfg`` with its backbone resolved as in the case study (what ``config.json`` records).

    The pre-trained backbone brings its architecture, including its 'batch' normalisation; a
    configured ``llm4cp.normalization = 'sample'`` is kept (privacy needs it; the model is then
    built with the checkpoint's and switched, see
    :func:`~edgelam.experiments.wireless_training_privacy.build_predictor`).
    """
    from edgelam.experiments.casestudy import resolve_backbone

    # resolve with privacy off (the intermediate 'batch' config would be refused), then put the
    # normalisation and the privacy section back
    normalization, split = cfg.llm4cp.normalization, cfg.split_fedft
    off = dataclasses.replace(split, privacy=dataclasses.replace(split.privacy, enabled=False))
    out = resolve_backbone(dataclasses.replace(cfg, split_fedft=off))  # type: ignore[arg-type]
    llm = out.llm4cp  # (resolve_backbone reads and sets only the backbone/llm4cp fields)
    if normalization == "sample":
        llm = dataclasses.replace(llm, normalization="sample")
    return dataclasses.replace(out, llm4cp=llm, split_fedft=split)


def run_wireless_training(
    cfg: WirelessTrainingConfig,
    out: str | Path,
    *,
    resume: bool = True,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Train ``cfg.scheme`` over the simulated cell into run directory ``out``.

    Args:
        cfg: the run's config (its backbone is resolved as in the case study before it is
            recorded in ``config.json``; ``llm4cp.normalization = 'sample'`` is kept).
        out: the run directory.
        resume: if ``out`` holds a finished run of the same config, keep it; an unfinished one
            (no ``summary.json``) starts over (runs are deterministic: the same numbers).
        overwrite: start over even if ``out`` holds a finished run.
        progress: draw a progress bar.

    Returns:
        ``out`` as a :class:`~pathlib.Path`.

    Raises:
        FileExistsError: ``out`` holds a run with a different config (or any run, with neither
            ``resume`` nor ``overwrite``).
    """
    from edgelam.experiments.wireless_training_run import open_run, train

    cfg = resolve_config(cfg)
    run = open_run(Path(out), to_dict(cfg), resume=resume, overwrite=overwrite)
    if run is None:
        return Path(out)
    start = time.perf_counter()
    train(cfg, run, progress=progress, start=start)
    return Path(out)
