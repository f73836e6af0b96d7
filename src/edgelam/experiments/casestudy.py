"""The paper's case study (Fig. 4): federated LAM channel prediction across edge servers.

An LLM4CP-style predictor (GPT-2 backbone, LoRA) is fine-tuned by FedAvg across N edge servers
(N in ``num_servers``), each holding ``fraction_per_server`` of the training users (iid), and
compared with the same model fine-tuned on one server's data alone, with GRU and RNN predictors
trained locally by SGD (the paper's baselines), and with further learned and classical
predictors. Every method runs the same number of training iterations; all are evaluated on a
held-out test set (NMSE overall and per speed group, spectral efficiency of MRT beamforming with
the predicted CSI).

Run directory: ``config.json``, ``metrics.jsonl`` (``kind="train"``: one record per method and
round; ``kind="eval"``: one per method), ``summary.json``, ``results.md``, ``fig4.png``,
``nmse_vs_speed.png``, and ``checkpoints/`` (per-method state after each round: an interrupted
run resumes from the last completed round and ends with the same numbers).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from edgelam.channels.config import ChannelConfig
from edgelam.config import ConfigError, option, to_dict
from edgelam.models.backbones import BackboneConfig
from edgelam.models.llm4cp import LLM4CPConfig
from edgelam.models.recurrent import RecurrentConfig, TransformerConfig
from edgelam.network import NetworkConfig
from edgelam.training.fedavg import FedAvgConfig

__all__ = ["CaseStudyConfig", "PROFILES", "profile_config", "run_casestudy"]

LEARNED = ("llm4cp", "gru", "rnn", "lstm", "transformer")
CLASSICAL = ("no_prediction", "ar", "prony")


@dataclass
class CaseStudyConfig:
    """Everything that determines a case-study run."""

    profile: str = option("quick", "profile this config came from (recorded)", cli=False)
    backbone: Literal["edgelam-wireless", "gpt2", "random"] = option(
        "edgelam-wireless",
        "LAM backbone: the shipped pre-trained wireless backbone (its architecture replaces "
        "llm4cp.backbone and the CSI-branch sizes), GPT-2 small's first 6 layers (real weights "
        "when cached locally, else random init with a warning), or llm4cp.backbone at random init",
    )
    num_servers: tuple[int, ...] = option((2, 5, 10), "federations to run (edge servers N)")
    fraction_per_server: float = option(0.05, "share of the training users each server holds")
    split: tuple[float, float, float] = option((0.8, 0.1, 0.1), "train/val/test user fractions")
    local_methods: tuple[str, ...] = option(
        ("llm4cp", "gru", "rnn"), "predictors trained on server 0's data alone"
    )
    centralized: bool = option(False, "also train LLM4CP on the pooled data of all servers")
    classical: tuple[str, ...] = option(CLASSICAL, "training-free predictors to evaluate")
    ar_order: int = option(
        8, "order of the AR (PAD-style) predictor, fitted per user over all its subcarriers"
    )
    prony_modes: int = option(8, "modes of the vector Prony predictor")
    train_snr_db: tuple[float, float] = option((5.0, 20.0), "observation SNR range in training")
    test_snr_db: float = option(18.0, "observation SNR of the test histories (LLM4CP: 18 dB)")
    se_snr_db: float = option(10.0, "SNR for the spectral-efficiency metric")
    speed_group_edges_kmh: tuple[float, ...] = option(
        (10, 20, 30, 40, 50, 60, 70, 80, 90, 100), "edges of the per-speed NMSE groups"
    )
    rnn_optimizer: str = option("sgd", "optimiser of the GRU/RNN/LSTM/Transformer baselines")
    rnn_lr: float = option(0.05, "learning rate of those baselines")
    eval_batch_size: int = option(512, "items per evaluation batch")
    cache_dir: str = option("data/casestudy", "where generated datasets are cached")
    device: str = option(
        "auto", "torch device for training: 'auto' (CUDA if available), 'cpu', 'cuda', ..."
    )
    seed: int = option(0, "seed of partitions, model init and training")
    channel: ChannelConfig = field(
        default_factory=lambda: ChannelConfig(num_samples=1000),
        metadata={"help": "the CSI dataset (generated on first use, cached)"},
    )
    llm4cp: LLM4CPConfig = field(default_factory=LLM4CPConfig, metadata={"help": "the LAM"})
    recurrent: RecurrentConfig = field(
        default_factory=RecurrentConfig, metadata={"help": "GRU/RNN/LSTM baselines"}
    )
    transformer: TransformerConfig = field(
        default_factory=TransformerConfig, metadata={"help": "Transformer baseline"}
    )
    fed: FedAvgConfig = field(default_factory=FedAvgConfig, metadata={"help": "training"})
    network: NetworkConfig = field(
        default_factory=NetworkConfig, metadata={"help": "links between servers and aggregator"}
    )

    def __post_init__(self) -> None:
        if not self.num_servers or min(self.num_servers) < 1:
            raise ConfigError(f"num_servers: need positive server counts, got {self.num_servers}")
        if max(self.num_servers) * self.fraction_per_server > 1 + 1e-9:
            raise ConfigError(
                f"fraction_per_server: {max(self.num_servers)} servers x "
                f"{self.fraction_per_server} exceeds the training set"
            )
        for m in self.local_methods:
            if m not in LEARNED:
                raise ConfigError(f"local_methods: {m!r} is not one of {list(LEARNED)}")
        for m in self.classical:
            if m not in CLASSICAL:
                raise ConfigError(f"classical: {m!r} is not one of {list(CLASSICAL)}")
        if self.rnn_optimizer not in ("sgd", "adam"):
            raise ConfigError(
                f"rnn_optimizer: {self.rnn_optimizer!r} is not one of ['sgd', 'adam']"
            )
        shape = dict(history_slots=self.channel.history_slots,
                     future_slots=self.channel.future_slots,
                     num_subcarriers=self.channel.num_subcarriers)  # fmt: skip
        for name in ("llm4cp", "recurrent", "transformer"):
            sub = getattr(self, name)
            wrong = {k: getattr(sub, k) for k, v in shape.items() if getattr(sub, k) != v}
            if wrong:
                raise ConfigError(f"{name}: {wrong} disagree with the channel config {shape}")

    def methods(self) -> list[str]:
        """Learned methods in the order they run."""
        out = [f"local_{m}" for m in self.local_methods]
        out += [f"fedlam_n{n}" for n in self.num_servers]
        if self.centralized:
            out.append("central_llm4cp")
        return out


def _cpu_llm4cp(channel: ChannelConfig) -> LLM4CPConfig:
    return LLM4CPConfig(
        history_slots=channel.history_slots,
        future_slots=channel.future_slots,
        num_subcarriers=channel.num_subcarriers,
        res_dim=16,
        backbone=BackboneConfig(
            name="custom", num_layers=4, d_model=128, n_head=4, n_positions=16
        ),  # fmt: skip
        trainable="lora",
    )


def _quick() -> CaseStudyConfig:
    channel = ChannelConfig(model="uma", los="nlos", num_samples=1000, seed=0)
    return CaseStudyConfig(
        profile="quick",
        local_methods=("llm4cp", "gru", "rnn", "lstm", "transformer"),
        centralized=True,
        channel=channel,
        llm4cp=_cpu_llm4cp(channel),
        recurrent=RecurrentConfig(hidden_size=128, num_layers=2),
        fed=FedAvgConfig(rounds=80, local_steps=4, batch_size=32, lr=3e-3),
        rnn_lr=0.1,
        network=NetworkConfig(num_devices=10),
    )


def _tiny() -> CaseStudyConfig:
    channel = ChannelConfig(model="tdl-a", num_samples=120, num_subcarriers=8, bs_rows=1,
                            bs_cols=2, batch_size=60, seed=0)  # fmt: skip
    llm = dataclasses.replace(_cpu_llm4cp(channel), res_dim=4, res_layers=1,
                              backbone=BackboneConfig(name="custom", num_layers=1, d_model=16,
                                                      n_head=2, n_positions=32))  # fmt: skip
    return CaseStudyConfig(
        profile="tiny",
        backbone="random",
        num_servers=(2, 3),
        fraction_per_server=0.1,
        channel=channel,
        llm4cp=llm,
        recurrent=RecurrentConfig(num_subcarriers=8, hidden_size=16, num_layers=1),
        transformer=TransformerConfig(
            num_subcarriers=8, d_model=16, n_head=2, dim_feedforward=32, num_layers=1
        ),  # fmt: skip
        fed=FedAvgConfig(rounds=3, local_steps=2, batch_size=16),
        network=NetworkConfig(num_devices=3),
        speed_group_edges_kmh=(10, 55, 100),
    )


def _paper() -> CaseStudyConfig:
    channel = ChannelConfig(model="uma", los="nlos", num_samples=20_000, seed=0)
    return CaseStudyConfig(
        profile="paper",
        channel=channel,
        local_methods=("llm4cp", "gru", "rnn", "lstm", "transformer"),
        centralized=True,
        llm4cp=LLM4CPConfig(backbone=BackboneConfig(name="gpt2", num_layers=6), trainable="lora"),
        fed=FedAvgConfig(rounds=200, local_steps=10, batch_size=1024, lr=1e-4),
        network=NetworkConfig(num_devices=10),
    )


PROFILES = {"quick": _quick, "paper": _paper, "tiny": _tiny}


def profile_config(name: str) -> CaseStudyConfig:
    """The config of a named profile (``quick``, ``paper``, ``tiny``)."""
    if name not in PROFILES:
        raise ConfigError(f"profile: {name!r} is not one of {sorted(PROFILES)}")
    return PROFILES[name]()


def dataset_path(config: CaseStudyConfig) -> Path:
    """Cache location of the case study's dataset (keyed by its full channel config)."""
    key = hashlib.sha1(json.dumps(to_dict(config.channel), sort_keys=True).encode()).hexdigest()
    return Path(config.cache_dir) / f"{config.channel.model}_{config.channel.duplex}_{key[:10]}.h5"


def resolve_backbone(config: CaseStudyConfig) -> CaseStudyConfig:
    """Apply ``config.backbone`` to ``config.llm4cp`` (the result is what ``config.json`` records).

    Raises:
        FileNotFoundError: ``edgelam-wireless`` is chosen but its model card is missing.
    """
    from edgelam.models.pretrained import WIRELESS, wireless_architecture

    llm = config.llm4cp
    if config.backbone == "edgelam-wireless":
        arch = wireless_architecture()
        backbone = BackboneConfig(name="custom", num_layers=arch["backbone.num_layers"],
                                  d_model=arch["backbone.d_model"], n_head=arch["backbone.n_head"],
                                  n_positions=arch["backbone.n_positions"], pretrained=WIRELESS)  # fmt: skip
        # the embedding and heads ("io") also load when the task's shape matches pre-training
        same_task = all(arch[k] == getattr(llm, k)
                        for k in ("num_subcarriers", "history_slots", "future_slots"))  # fmt: skip
        parts = ("backbone", "csi", "io") if same_task else ("backbone", "csi")
        llm = dataclasses.replace(llm, backbone=backbone, patch_size=arch["patch_size"],
                                  res_dim=arch["res_dim"], res_layers=arch["res_layers"],
                                  normalization=arch["normalization"], pretrained_parts=parts)  # fmt: skip
    elif config.backbone == "gpt2":
        llm = dataclasses.replace(llm, backbone=BackboneConfig(name="gpt2", num_layers=6))
    else:
        llm = dataclasses.replace(llm, backbone=dataclasses.replace(llm.backbone, pretrained=None))
    return dataclasses.replace(config, llm4cp=llm)


def run_casestudy(config: CaseStudyConfig, out: str | Path, *, progress: bool = True) -> Path:
    """Run (or resume) the case study into run directory ``out``; returns its path."""
    from edgelam.experiments.casestudy_run import CaseStudyRunner

    config = resolve_backbone(config)
    start = time.perf_counter()
    runner = CaseStudyRunner(config, Path(out), progress=progress)
    runner.run()
    runner.finish(wall_seconds=time.perf_counter() - start)
    return Path(out)
