r"""Federated fine-tuning of a pre-trained graph-LAM across base stations with different scenarios.

Each base station (a FedAvg client) serves its own scenario: a 38.901 channel model, ``K``
users, ``M`` antennas and an SNR range. Starting from one pre-trained graph-LAM (typically
trained on Rayleigh channels by ``edgelam beamform train``), :func:`run_federated_finetuning`
compares, on every station's held-out test channels, as % of the WMMSE sum rate:

* ``pretrained`` -- the pre-trained model, no fine-tuning;
* ``local`` -- each station fine-tunes alone on its own data (FedAvg with one client and
  ``communicate=False``: the same optimiser steps, nothing sent);
* ``federated`` -- :class:`~edgelam.training.fedavg.FedAvg` over all stations (in-process
  transport, every trainable tensor counted in bits): only the trainable parameters (LoRA
  matrices, GNN, token projection, heads) travel and are averaged; the backbone stays frozen
  and identical everywhere.

Training is unsupervised, as in pre-training: the loss of a batch is the negative sum rate per
user. A station's samples are stored as *effective* channels :math:`H \sqrt{P}/\sigma` (with
``P = 1``, :math:`\sigma^2 = 1`), so one tensor per sample carries its SNR and FedAvg's
``(x, y)`` batches need no side information.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from edgelam.airinterface.beamforming.baselines import wmmse
from edgelam.airinterface.beamforming.channels import BEAMFORMING_CHANNEL_MODELS
from edgelam.airinterface.beamforming.graph_lam import ChannelSampler
from edgelam.airinterface.beamforming.graph_lam_checkpoint import load_graph_lam
from edgelam.airinterface.beamforming.problem import sum_rate
from edgelam.config import ConfigError, option, to_dict
from edgelam.distributed.transport import InProcessTransport
from edgelam.models.adapters import load_trainable_state, trainable_state
from edgelam.network import TransferLedger
from edgelam.progress import progress_bar
from edgelam.runs import RunDir, read_metrics
from edgelam.seeding import derive_seed
from edgelam.training.fedavg import Client, FedAvg, FedAvgConfig

__all__ = [
    "EffectiveChannels",
    "FederatedBeamformConfig",
    "StationConfig",
    "SumRateTask",
    "negative_rate_loss",
    "run_federated_finetuning",
    "station_data",
]


@dataclass
class StationConfig:
    """One base station's scenario and data."""

    channel_model: str = option("cdl-c", "38.901 model (or rayleigh) of this station's users")
    users: int = option(4, "users K served")
    antennas: int = option(16, "BS antennas M")
    snr_db: tuple[float, float] = option((10.0, 20.0), "SNR range of its users in dB")
    train_samples: int = option(256, "local training instances")
    test_samples: int = option(256, "held-out test instances")

    def __post_init__(self) -> None:
        if self.channel_model not in BEAMFORMING_CHANNEL_MODELS:
            raise ConfigError(
                f"channel_model: {self.channel_model!r} is not one of "
                f"{list(BEAMFORMING_CHANNEL_MODELS)}"
            )
        for name in ("users", "antennas", "train_samples", "test_samples"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")


def _default_stations() -> tuple[StationConfig, ...]:
    return (
        StationConfig("cdl-a", 4, 16, (10.0, 20.0)),
        StationConfig("cdl-c", 6, 16, (0.0, 10.0)),
        StationConfig("cdl-d", 8, 8, (10.0, 20.0)),
        StationConfig("uma", 6, 8, (5.0, 15.0)),
    )


def _default_fed() -> FedAvgConfig:
    return FedAvgConfig(rounds=10, local_steps=5, batch_size=32, lr=3e-4, weighting="samples")


@dataclass
class FederatedBeamformConfig:
    """Federated fine-tuning of a pre-trained graph-LAM over several base stations."""

    pretrained: str = option("runs/beamform-graph-lam", "graph-LAM checkpoint to start from")
    stations: tuple[StationConfig, ...] = option(
        _default_stations(), "the base stations ([[stations]] tables)", cli=False
    )
    fed: FedAvgConfig = field(
        default_factory=_default_fed,
        metadata={"help": "FedAvg rounds, local steps, batch, optimiser ([fed] table)"},
    )
    pool_size: int = option(2048, "single-user 38.901 channels per (model, M) pool")
    eval_every: int = option(5, "evaluate the federated model every this many rounds (0: end)")
    wmmse_max_iter: int = option(500, "WMMSE iteration cap of the reference")
    seed: int = option(0, "seed of the stations' data")

    def __post_init__(self) -> None:
        if not self.stations:
            raise ConfigError("stations: need at least one base station")
        if self.pool_size < 1 or self.eval_every < 0:
            raise ConfigError("pool_size / eval_every: must be >= 1 / >= 0")


class EffectiveChannels(Dataset):
    """Effective channels as FedAvg items ``(x, x)``, ``x = view_as_real(H sqrt(P) / sigma)``.

    Shapes:
        H_eff: ``[N, K, M]`` complex; an item is ``([K, M, 2], [K, M, 2])`` real.
    """

    def __init__(self, H_eff: torch.Tensor) -> None:
        self.x = torch.view_as_real(H_eff.to(torch.complex64)).contiguous()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[index], self.x[index]


class SumRateTask(nn.Module):
    """Wraps a beamformer so that FedAvg can call ``model(x)`` on effective channels.

    Shapes:
        x: ``[B, K, M, 2]`` real -> W ``[B, M, K]`` complex (``P = 1``).
    """

    def __init__(self, precoder: nn.Module) -> None:
        super().__init__()
        self.precoder = precoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.precoder(torch.view_as_complex(x.contiguous()), 1.0, 1.0)


def negative_rate_loss(W: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """FedAvg loss: minus the mean sum rate per user of ``W`` on effective channels ``x``."""
    H = torch.view_as_complex(x.contiguous())
    return -sum_rate(H, W, 1.0).mean() / H.shape[1]


def station_data(
    station: StationConfig, index: int, cfg: FederatedBeamformConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(train, test)`` effective channels of station ``index`` (disjoint user pools).

    Shapes:
        returns ``[train_samples, K, M]`` and ``[test_samples, K, M]`` complex.
    """
    out = []
    for split, n in ((0, station.train_samples), (1, station.test_samples)):
        sampler = ChannelSampler(cfg.pool_size, derive_seed(cfg.seed, index, split, 11))
        gen = torch.Generator().manual_seed(derive_seed(cfg.seed, index, split, 12))
        H = sampler.sample(station.channel_model, n, station.users, station.antennas, gen)
        lo, hi = station.snr_db
        snr = lo + (hi - lo) * torch.rand(n, generator=gen)
        out.append(H * (10 ** (snr / 20))[:, None, None])
    return out[0], out[1]


def _evaluate(task: SumRateTask, tests: list[torch.Tensor], refs: list[float]) -> list[float]:
    """% of WMMSE of the task's current model on every station's test set."""
    task.eval()
    with torch.no_grad():
        pcts = [100 * float(sum_rate(H, task(torch.view_as_real(H)), 1.0).mean()) / ref
                for H, ref in zip(tests, refs, strict=True)]  # fmt: skip
    task.train()
    return pcts


def run_federated_finetuning(
    cfg: FederatedBeamformConfig, out_dir: str | Path, *, overwrite: bool = False,
    progress: bool = True,
) -> Path:  # fmt: skip
    """Pre-trained vs local-only vs federated fine-tuning; writes a run directory.

    ``metrics.jsonl`` holds ``kind="round"`` records of the federated run (loss, bits, and
    every ``eval_every`` rounds the % of WMMSE per station) and ``kind="station"`` records of
    the final comparison; ``summary.json`` the per-station table, the means and the gains of
    federated fine-tuning (percentage points of WMMSE) over no fine-tuning and over local-only
    fine-tuning; ``federated_gain.png`` the table as bars.

    Returns:
        ``out_dir``.
    """
    run = RunDir.create(out_dir, to_dict(cfg), overwrite=overwrite)
    precoder, card = load_graph_lam(cfg.pretrained)
    precoder.train()
    task = SumRateTask(precoder)
    initial = {k: v.clone() for k, v in trainable_state(task).items()}
    frozen = {k: v.clone() for k, v in task.state_dict().items() if k not in initial}
    trains, tests = zip(*(station_data(s, i, cfg) for i, s in enumerate(cfg.stations)), strict=True)
    refs = [float(sum_rate(H, wmmse(H, 1.0, 1.0, max_iter=cfg.wmmse_max_iter), 1.0).mean())
            for H in tests]  # fmt: skip
    clients = [Client(i, EffectiveChannels(H)) for i, H in enumerate(trains)]
    results = {"pretrained": _evaluate(task, list(tests), refs)}

    # local-only: one station at a time, same steps, nothing sent
    local = []
    for i, client in enumerate(clients):
        load_trainable_state(task, initial)
        solo = FedAvg(cfg.fed, task, [Client(0, client.dataset)], loss_fn=negative_rate_loss,
                      communicate=False)  # fmt: skip
        for _ in range(cfg.fed.rounds):
            solo.run_round()
        local.append(_evaluate(task, [tests[i]], [refs[i]])[0])
    results["local"] = local

    # federated: FedAvg over all stations
    load_trainable_state(task, initial)
    transport = InProcessTransport(TransferLedger(), None, cfg.fed.quantization)
    fed = FedAvg(cfg.fed, task, clients, transport=transport, loss_fn=negative_rate_loss)
    with progress_bar("federated", total=cfg.fed.rounds, enabled=progress) as advance:
        for rnd in range(cfg.fed.rounds):
            record = {"kind": "round", **fed.run_round()}
            if cfg.eval_every and ((rnd + 1) % cfg.eval_every == 0 or rnd + 1 == cfg.fed.rounds):
                record["pct_of_wmmse"] = _evaluate(task, list(tests), refs)
            run.log(record)
            advance(1)
    results["federated"] = _evaluate(task, list(tests), refs)
    backbone_unchanged = all(torch.equal(v, task.state_dict()[k]) for k, v in frozen.items())

    stations = []
    for i, s in enumerate(cfg.stations):
        row = {"kind": "station", "station": i, **to_dict(s), "wmmse_sum_rate": refs[i],
               **{f"{m}_pct": results[m][i] for m in results}}  # fmt: skip
        run.log(row)
        stations.append(row)
    mean = {m: sum(v) / len(v) for m, v in results.items()}
    rounds = [r for r in read_metrics(run.path) if r.get("kind") == "round"]
    summary = {
        "stations": stations,
        "mean_pct_of_wmmse": mean,
        "gain_over_pretrained_pp": mean["federated"] - mean["pretrained"],
        "gain_over_local_pp": mean["federated"] - mean["local"],
        "trainable_params": sum(v.numel() for v in initial.values()),
        "uplink_bits_per_round": rounds[-1].get("uplink_bits") if rounds else None,
        "backbone_unchanged": backbone_unchanged,
        "pretrained_checkpoint": str(cfg.pretrained),
        "pretrained_training": (card.get("training") or {}).get("channel_models"),
    }
    run.write_summary(summary)
    plot_federated(run.path)
    return run.path


def plot_federated(run_path: str | Path, name: str = "federated_gain") -> Path:
    """Bars per station: pre-trained, local-only and federated fine-tuning (% of WMMSE)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = RunDir.open(run_path)
    rows = [r for r in read_metrics(run.path) if r.get("kind") == "station"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    width = 0.27
    for j, (method, label) in enumerate((("pretrained", "pre-trained, no fine-tuning"),
                                         ("local", "local-only fine-tuning"),
                                         ("federated", "federated fine-tuning"))):  # fmt: skip
        xs = [r["station"] + (j - 1) * width for r in rows]
        ax.bar(xs, [r[f"{method}_pct"] for r in rows], width, label=label)
    ax.set_xticks([r["station"] for r in rows])
    ax.set_xticklabels([f"{r['channel_model']}\nK={r['users']}, M={r['antennas']}" for r in rows],
                       fontsize=8)  # fmt: skip
    low = min(min(r[f"{m}_pct"] for m in ("pretrained", "local", "federated")) for r in rows)
    ax.set_ylim(max(0.0, low - 5), 102)
    ax.set_ylabel("sum rate [% of WMMSE]")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return run.save_figure(fig, name)
