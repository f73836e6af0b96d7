"""Running the case study: data, methods, checkpoints, evaluation (see ``casestudy.py``)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgelam.channels.dataset import (
    CSIPredictionDataset,
    normalization_stats,
    train_val_test_split,
)
from edgelam.channels.partition import partition_iid
from edgelam.channels.store import CSIFile, generate_dataset
from edgelam.config import to_dict
from edgelam.distributed.transport import InProcessTransport
from edgelam.experiments.casestudy import CaseStudyConfig, dataset_path
from edgelam.models import build_predictor
from edgelam.network import Network, TransferLedger
from edgelam.progress import progress_bar
from edgelam.runs import RunDir, atomic_write_text, read_metrics, save_checkpoint
from edgelam.training.fedavg import Client, FedAvg

__all__ = ["CaseStudyRunner"]


class CaseStudyRunner:
    """Runs every method of a :class:`CaseStudyConfig` into a run directory, resumably."""

    def __init__(self, config: CaseStudyConfig, out: Path, *, progress: bool = True) -> None:
        self.config = config
        self.progress = progress
        self.rundir = RunDir.create(out, to_dict(config), resume=True)
        self.ckpt_dir = self.rundir.path / "checkpoints"
        self.methods_dir = self.rundir.path / "methods"
        self.ckpt_dir.mkdir(exist_ok=True)
        self.methods_dir.mkdir(exist_ok=True)
        self._load_data()

    # -- data ------------------------------------------------------------------------------
    def _load_data(self) -> None:
        cfg = self.config
        path = dataset_path(cfg)
        if not path.exists():
            generate_dataset(cfg.channel, path, progress=self.progress).close()
        self.file = CSIFile.open(path)
        split = train_val_test_split(self.file, fractions=cfg.split, seed=cfg.seed)
        self.split = split
        self.servers = partition_iid(split.train, max(cfg.num_servers), cfg.fraction_per_server,
                                     seed=cfg.seed)  # fmt: skip
        pooled = np.sort(np.concatenate(list(self.servers)))
        self.norm = normalization_stats(self.file, pooled)
        self.server_data = [self._train_set(s) for s in self.servers]
        self.pooled_data = self._train_set(pooled)
        self.test_data = CSIPredictionDataset(self.file, split.test, snr_db=cfg.test_snr_db,
                                              noisy_target=False, seed=cfg.seed + 1,
                                              norm=self.norm)  # fmt: skip

    def _train_set(self, samples: np.ndarray) -> CSIPredictionDataset:
        return CSIPredictionDataset(self.file, samples, snr_db=self.config.train_snr_db,
                                    noisy_target=True, seed=self.config.seed,
                                    norm=self.norm)  # fmt: skip

    # -- methods ---------------------------------------------------------------------------
    def _build(self, name: str) -> tuple[torch.nn.Module, dict[str, Any]]:
        cfg = self.config
        sub = {"llm4cp": cfg.llm4cp, "transformer": cfg.transformer}.get(name, cfg.recurrent)
        model, info = build_predictor(name, sub, seed=cfg.seed)
        device = cfg.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        return model.to(device), info

    def _trainer(self, method: str) -> tuple[FedAvg, dict[str, Any]]:
        cfg = self.config
        if method.startswith("fedlam_n"):
            n = int(method.removeprefix("fedlam_n"))
            model, info = self._build("llm4cp")
            clients = [Client(k, self.server_data[k]) for k in range(n)]
            network = Network(dataclasses.replace(cfg.network, num_devices=n))
            transport = InProcessTransport(TransferLedger(), network, cfg.fed.quantization)
            return FedAvg(cfg.fed, model, clients, transport), info
        name = method.split("_", 1)[1]
        model, info = self._build(name)
        fed = cfg.fed
        if name != "llm4cp":
            fed = dataclasses.replace(fed, optimizer=cfg.rnn_optimizer, lr=cfg.rnn_lr)
        data = self.pooled_data if method.startswith("central") else self.server_data[0]
        return FedAvg(fed, model, [Client(0, data)], communicate=False), info

    def run(self) -> None:
        """Evaluate the classical predictors, then train and evaluate every learned method."""
        cfg = self.config
        for name in cfg.classical:  # training-free: evaluated on physical (de-normalised) CSI
            if not (self.methods_dir / f"{name}.json").exists():
                metrics = self._evaluate(self._classical(name), physical_input=True)
                self._finish_method(name, metrics, {"total_params": 0, "trainable_params": 0})
        for method in cfg.methods():
            if (self.methods_dir / f"{method}.json").exists():
                continue
            trainer, info = self._trainer(method)
            ckpt = self.ckpt_dir / f"{method}.pt"
            if ckpt.exists():
                trainer.load_state_dict(torch.load(ckpt, map_location=trainer.device,
                                                   weights_only=False))  # fmt: skip
            done = trainer.round
            self.rundir.drop_metrics(
                lambda r, m=method, d=done: (
                    r.get("method") == m and (r.get("kind") == "eval" or r.get("round", -1) >= d)
                )
            )
            with progress_bar(method, total=cfg.fed.rounds, completed=done,
                              enabled=self.progress) as advance:  # fmt: skip
                while trainer.round < cfg.fed.rounds:
                    record = trainer.run_round()
                    self.rundir.log({"kind": "train", "method": method, **record})
                    save_checkpoint(trainer.state_dict(), ckpt)
                    advance(1)
            self._finish_method(method, self._evaluate(trainer.model), info)

    def _classical(self, name: str) -> torch.nn.Module:
        from edgelam.airinterface.prediction import ARPredictor, NoPrediction, PronyVectorPredictor

        future = self.config.channel.future_slots
        if name == "no_prediction":
            return NoPrediction(future_slots=future)
        if name == "ar":
            return ARPredictor(order=self.config.ar_order, future_slots=future,
                               shared_over_subcarriers=True)  # fmt: skip
        return PronyVectorPredictor(num_modes=self.config.prony_modes, future_slots=future)

    def _finish_method(self, method: str, metrics: dict[str, Any], info: dict[str, Any]) -> None:
        """Record a method's result in metrics.jsonl and methods/<method>.json (marks it done)."""
        train = [r for r in read_metrics(self.rundir.path)
                 if r.get("kind") == "train" and r.get("method") == method]  # fmt: skip
        result = {
            "method": method,
            "total_params": info["total_params"],
            "trainable_params": info["trainable_params"],
            "pretrained_backbone": info.get("pretrained"),
            "backbone": info.get("backbone"),
            "final_train_loss": train[-1]["train_loss"] if train else None,
            "iterations": train[-1]["iteration"] if train else 0,
            "uplink_bits": sum(r.get("uplink_bits", 0) for r in train),
            "downlink_bits": sum(r.get("downlink_bits", 0) for r in train),
            "uplink_seconds": sum(r.get("uplink_seconds", 0.0) for r in train),
            "downlink_seconds": sum(r.get("downlink_seconds", 0.0) for r in train),
            "train_compute_seconds": sum(r["compute_seconds"] for r in train),
            **metrics,
        }
        self.rundir.log({"kind": "eval", **result})
        atomic_write_text(self.methods_dir / f"{method}.json",
                          json.dumps(result, indent=2, sort_keys=True))  # fmt: skip

    @torch.no_grad()
    def _evaluate(self, model: torch.nn.Module, physical_input: bool = False) -> dict[str, Any]:
        from edgelam.airinterface.prediction.evaluate import evaluate_predictor

        cfg = self.config
        return evaluate_predictor(
            model,
            self.test_data,
            speeds_kmh=self.file.meta["speed_mps"] * 3.6,
            num_antennas=cfg.channel.num_bs_antennas,
            group_edges_kmh=cfg.speed_group_edges_kmh,
            se_snr_db=cfg.se_snr_db,
            batch_size=cfg.eval_batch_size,
            physical_input=physical_input,
        )

    def finish(self, wall_seconds: float) -> None:
        """Write summary.json, results.md and the plots from the run's files."""
        from edgelam.experiments.casestudy_report import write_report

        write_report(self.rundir.path, wall_seconds=wall_seconds)
