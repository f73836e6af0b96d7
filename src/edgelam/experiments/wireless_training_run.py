"""Running one wireless training scheme (see ``wireless_training.py``): data, loop, summary."""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgelam.channels.dataset import CSIPredictionDataset, normalization_stats, train_val_test_split
from edgelam.channels.partition import (
    bin_labels,
    partition_by_speed,
    partition_dirichlet,
    partition_iid,
)
from edgelam.channels.store import CSIFile, generate_dataset
from edgelam.distributed.transport import InProcessTransport, state_bits
from edgelam.experiments.casestudy import dataset_path
from edgelam.experiments.wireless_accounting import DEMAND_KEYS, WirelessAccountant
from edgelam.experiments.wireless_training_privacy import (
    ClippedEmbeddingModel,
    NetworkUplink,
    build_predictor,
    privacy_summary,
    round_fields,
)
from edgelam.models.adapters import trainable_state
from edgelam.models.layers import seeded
from edgelam.network import TransferLedger, activation_bytes, count_flops, parameter_bytes
from edgelam.progress import progress_bar
from edgelam.runs import RunDir
from edgelam.training.fedavg import Client, FedAvg, collate
from edgelam.training.split_fedft import InProcessLink, SplitFedFT, dataset_batches, per_device
from edgelam.training.split_roles import training_memory

__all__ = ["WirelessData", "load_data", "open_run", "train"]


@dataclass
class WirelessData:
    """The datasets of a run: one training partition per device, validation and test users.

    Attributes:
        train: ``K`` training sets (noisy histories and targets, SNR in ``train_snr_db``).
        val: the validation users (``eval_snr_db`` histories, clean targets).
        test: every test user (as ``val``).
        speeds_kmh: ``[num_samples]`` user speeds of the dataset file (km/h).
        partition: the partition's description (method, sizes, mean speeds).
    """

    train: list[CSIPredictionDataset]
    val: CSIPredictionDataset
    test: CSIPredictionDataset
    speeds_kmh: np.ndarray
    partition: dict[str, Any]


def load_data(cfg: Any, progress: bool = True) -> WirelessData:
    """Generate (once, cached as the case study's) and split the CSI dataset of ``cfg``.

    Users are split train/val/test by ``cfg.split``; the training users are shared out over
    ``cfg.num_devices`` devices by ``cfg.partition``, normalised with the statistics of the
    devices' pooled users.
    """
    path = dataset_path(cfg)  # reads cfg.channel and cfg.cache_dir only
    if not path.exists():
        generate_dataset(cfg.channel, path, progress=progress).close()
    file = CSIFile.open(path)
    split = train_val_test_split(file, fractions=cfg.split, seed=cfg.seed)
    speeds = np.asarray(file.meta["speed_mps"], dtype=np.float64)
    k = cfg.num_devices
    if cfg.partition == "iid":
        parts = partition_iid(split.train, k, cfg.fraction_per_device, cfg.seed, speeds=speeds)
    elif cfg.partition == "speed":
        parts = partition_by_speed(split.train, speeds, k,
                                   fraction_per_server=cfg.fraction_per_device, seed=cfg.seed)  # fmt: skip
    else:
        parts = partition_dirichlet(split.train, bin_labels(speeds, k), k, cfg.dirichlet_alpha,
                                    cfg.seed, speeds=speeds)  # fmt: skip
    norm = normalization_stats(file, np.sort(np.concatenate(list(parts))))
    train = [CSIPredictionDataset(file, users, snr_db=cfg.train_snr_db, noisy_target=True,
                                  seed=cfg.seed, norm=norm) for users in parts]  # fmt: skip
    val_users = split.val
    if 0 < cfg.val_users < len(val_users):
        rng = np.random.default_rng(cfg.seed + 2)
        val_users = np.sort(rng.choice(val_users, cfg.val_users, replace=False))
    val, test = (CSIPredictionDataset(file, users, snr_db=cfg.eval_snr_db, noisy_target=False,
                                      seed=seed, norm=norm)
                 for users, seed in ((val_users, cfg.seed + 2), (split.test, cfg.seed + 1)))  # fmt: skip
    return WirelessData(train, val, test, speeds * 3.6, parts.description)


def open_run(path: Path, config: dict[str, Any], *, resume: bool, overwrite: bool) -> RunDir | None:
    """The run directory to train into, or ``None`` when ``path`` holds this finished run.

    Raises:
        FileExistsError: ``path`` holds a run of another config (or any run, with neither
            ``resume`` nor ``overwrite``).
    """
    if (path / "config.json").exists() and not overwrite:
        if not resume:
            raise FileExistsError(f"{path} already holds a run; pass --overwrite to start over")
        try:
            run = RunDir.create(path, config, resume=True)
        except ValueError as err:
            raise FileExistsError(
                f"{path} holds a run with a different config; use --overwrite or another --out"
            ) from err
        if (path / "summary.json").exists():
            return None
        run.drop_metrics(lambda r: True)  # unfinished: start over (deterministic)
        return run
    return RunDir.create(path, config, overwrite=overwrite)


# -- evaluation --------------------------------------------------------------------------------
def _evaluate(model: nn.Module, dataset: CSIPredictionDataset, cfg: Any, speeds_kmh) -> dict:
    """Test-style metrics of ``model`` (whole users per batch); the model's mode is restored."""
    from edgelam.airinterface.prediction.evaluate import evaluate_predictor

    training = model.training
    with torch.no_grad():
        out = evaluate_predictor(model, dataset, speeds_kmh=speeds_kmh,
                                 num_antennas=cfg.channel.num_bs_antennas,
                                 group_edges_kmh=cfg.speed_group_edges_kmh,
                                 batch_size=cfg.eval_batch_size)  # fmt: skip
    model.train(training)
    return out


def _global_split_model(algo: SplitFedFT) -> None:
    """Load the devices' sample-weighted mean module state into the model's own device modules,
    so the model (whose backbone the server trains in place) is the global model. Equal to
    every device's state right after a device sync; a simulation probe, no radio bits."""
    states = algo.device_states()
    w = algo.weights(algo.num_samples)
    mean = {n: sum(w[k] * states[k][n].double() for k in states).to(ref.dtype)
            for n, ref in states[0].items()}  # fmt: skip
    result = algo.split.device_modules().load_state_dict(mean, strict=False)
    if result.unexpected_keys:
        raise RuntimeError(f"device state names not in the model: {result.unexpected_keys}")


# -- the schemes -------------------------------------------------------------------------------
def _split_demand(record: dict[str, Any], k: int) -> tuple[dict, dict | None]:
    """``(train, sync)`` per-device demands of a split-FedFT record (sync: None if no sync)."""
    train = per_device(record, k)
    sync = {"uplink_bits": [0] * k, "downlink_bits": [0] * k}
    for row in record["devices"]:
        for direction in ("uplink", "downlink"):
            bits = row["bits"][direction].get("device_sync", 0)
            sync[f"{direction}_bits"][row["device"]] = bits
            train[f"{direction}_bits"][row["device"]] -= bits
    return train, (sync if record["device_synced"] else None)


class _SplitScheme:
    """Split FedFT on an in-process link (bits only: time and energy come from the accountant)."""

    def __init__(self, cfg: Any, model: nn.Module, data: WirelessData, acct: WirelessAccountant):
        sf = cfg.split_fedft
        self.k, self.model = cfg.num_devices, model
        device_data = {k: dataset_batches(ds, sf.batch_size, sf.seed, k)
                       for k, ds in enumerate(data.train)}  # fmt: skip
        transport = InProcessTransport(TransferLedger(), None, sf.quantization)
        self.ledger = transport.ledger
        self.unit = None
        if acct.schedules:  # one probe iteration of a copy, every device: its unit demand
            no_privacy = dataclasses.replace(sf.privacy, enabled=False)  # the same bits
            probe_cfg = dataclasses.replace(sf, device_sync_every=0, privacy=no_privacy)
            probe = SplitFedFT(probe_cfg, copy.deepcopy(model), device_data)
            self.unit = _split_demand(probe.run_iteration(), self.k)[0]
        self.uplink = None
        if sf.privacy.enabled:  # the analog uplink's channels come from the simulated cell
            entries = cfg.llm4cp.history_slots * model.backbone.config.n_embd
            self.uplink = NetworkUplink(acct.network, entries, cfg.analog_power)
        self.algo = SplitFedFT(sf, model, device_data, InProcessLink(self.k, transport),
                               uplink_channel=self.uplink)  # fmt: skip
        if self.uplink is not None:
            self.uplink.noise_multiplier = {
                k: dev.privacy.noise_multiplier for k, dev in self.algo.devices.items()
            }

    def step(self, r: int, scheduled: list[int] | None) -> tuple[dict, dict, dict | None]:
        record = self.algo.run_iteration(scheduled)
        train, sync = _split_demand(record, self.k)
        fields = {"scheduled": record["scheduled"], "train_loss": record["loss"]}
        if self.uplink is not None:
            fields |= round_fields(record, self.algo.privacy.epsilon, self.uplink,
                                   self.algo.config.privacy)  # fmt: skip
        return fields, train, sync

    def global_model(self) -> nn.Module:
        _global_split_model(self.algo)
        privacy = self.algo.config.privacy
        if privacy.enabled and privacy.clip_embeddings:  # evaluated as the backbone trained
            return ClippedEmbeddingModel(self.algo.split, privacy.embedding_clip_norm)
        return self.model

    def privacy_summary(self, records: list[dict[str, Any]]) -> dict[str, Any] | None:
        """``summary.json``'s ``privacy`` section (None without privacy)."""
        if self.uplink is None:
            return None
        devices = {k: dev.privacy for k, dev in self.algo.devices.items()}
        return privacy_summary(records, self.algo.config.privacy, self.uplink, devices)

    def memory(self) -> tuple[dict[str, int], dict[str, Any]]:
        """The largest device footprint (bytes) and the server's."""
        devices = self.algo.memory["devices"].values()
        return max(devices, key=lambda m: m["total_bytes"]), {"server": self.algo.memory["server"]}


class _ScheduledFedAvg(FedAvg):
    """FedAvg whose next round's clients a scheduler may set (``next_clients``)."""

    next_clients: list[int] | None = None

    def configure_train(self, rnd: int) -> list[int]:
        if self.next_clients is None:
            return super().configure_train(rnd)
        return sorted(self.next_clients)


class _UnicastTransport(InProcessTransport):
    """Sends the global model to each client separately (unicast), charged to its downlink."""

    def downlink(self, round, clients, state, what, mode="unicast"):
        return super().downlink(round, clients, state, what, mode="unicast")


class _FedAvgScheme:
    """FedAvg (full or LoRA fine-tuning) with a unicast downlink and per-device accounting.

    Per participating device and round: uplink = its trainable state, downlink = the global
    trainable state, device FLOPs = ``local_steps`` x forward + backward of the whole model on
    one mini-batch (counted once), server FLOPs = 0 (the weighted average is negligible).
    """

    def __init__(self, cfg: Any, model: nn.Module, data: WirelessData, acct: WirelessAccountant):
        fed = cfg.fedavg
        self.k, self.model, self.local_steps = cfg.num_devices, model, fed.local_steps
        transport = _UnicastTransport(TransferLedger(), None, fed.quantization)
        self.ledger = transport.ledger
        clients = [Client(k, ds) for k, ds in enumerate(data.train)]
        self.algo = _ScheduledFedAvg(fed, model, clients, transport)
        bits = state_bits(trainable_state(model), transport.quantization)
        n = len(data.train[0])  # FedAvg's batches wrap around a small dataset
        x, _ = collate(data.train[0], [i % n for i in range(fed.batch_size)])
        with seeded(0):
            self.flops = fed.local_steps * count_flops(model, x, backward=True)
            acts = activation_bytes(model, x)
        params = [p for p in model.parameters() if p.requires_grad]
        self._memory = training_memory(parameter_bytes(model), params, fed.optimizer, fed, acts)
        self.unit = {"uplink_bits": [bits] * self.k, "downlink_bits": [bits] * self.k,
                     "device_flops": [self.flops] * self.k, "server_flops": [0] * self.k}  # fmt: skip

    def step(self, r: int, scheduled: list[int] | None) -> tuple[dict, dict, None]:
        self.algo.next_clients = scheduled
        before = len(self.ledger)
        record = self.algo.run_round()
        demand = {key: [0] * self.k for key in DEMAND_KEYS}
        for t in self.ledger.records[before:]:
            demand[f"{t.direction}_bits"][t.device] += t.bits
        for c in record["clients"]:
            demand["device_flops"][c] = self.flops
        return {"scheduled": record["clients"], "train_loss": record["train_loss"]}, demand, None

    def global_model(self) -> nn.Module:
        return self.model  # FedAvg loads the global state into it after every round

    def memory(self) -> tuple[dict[str, int], dict[str, Any]]:
        return self._memory, {}

    def privacy_summary(self, records: list[dict[str, Any]]) -> None:
        return None


# -- the loop ----------------------------------------------------------------------------------
def _db(x: float) -> float:
    return 10.0 * math.log10(x) if x > 0 else -math.inf


def train(cfg: Any, run: RunDir, *, progress: bool, start: float) -> dict[str, Any]:
    """Train ``cfg.scheme`` into ``run`` (metrics.jsonl, summary.json); returns the summary.

    ``cfg.num_threads`` (if set) applies for the run only; torch's setting is restored after.
    """
    threads = torch.get_num_threads()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    try:
        return _train(cfg, run, progress=progress, start=start)
    finally:
        torch.set_num_threads(threads)


def _train(cfg: Any, run: RunDir, *, progress: bool, start: float) -> dict[str, Any]:
    data = load_data(cfg, progress)
    model, info = build_predictor(cfg.llm4cp, seed=cfg.seed)
    sizes = [len(ds) for ds in data.train]
    acct = WirelessAccountant(cfg, [n / sum(sizes) for n in sizes])
    scheme = (_SplitScheme if cfg.is_split else _FedAvgScheme)(cfg, model, data, acct)
    init = _evaluate(scheme.global_model(), data.val, cfg, data.speeds_kmh)["nmse"]
    run.log({"kind": "init", "iteration": 0, "val_nmse": init, "val_nmse_db": _db(init),
             "simulated_time_s": 0.0, "cumulative_bits": 0})  # fmt: skip
    rounds, records = cfg.iterations // cfg.local_steps, []
    with progress_bar(cfg.scheme, total=rounds, enabled=progress) as advance:
        for r in range(rounds):
            tic = time.perf_counter()
            planned = acct.plan(r, scheme.unit)
            scheduled = None if planned is None else planned.scheduled.nonzero()[:, 0].tolist()
            fields, train_demand, sync = scheme.step(r, scheduled)
            iteration = (r + 1) * cfg.local_steps
            record = {"kind": "round", "round": r, "iteration": iteration, **fields,
                      **{f"{key}_per_device": v for key, v in train_demand.items()}}  # fmt: skip
            if sync is not None:
                record |= {f"sync_{key}_per_device": v for key, v in sync.items()}
            for d in ("uplink", "downlink"):
                record[f"{d}_bits"] = sum(train_demand[f"{d}_bits"]) + (
                    sum(sync[f"{d}_bits"]) if sync else 0
                )
            record |= acct.charge(r, train_demand, sync, planned)
            if iteration % cfg.eval_every == 0 or r == rounds - 1:
                val = _evaluate(scheme.global_model(), data.val, cfg, data.speeds_kmh)["nmse"]
                record |= {"val_nmse": val, "val_nmse_db": _db(val)}
            record["wall_seconds"] = time.perf_counter() - tic
            run.log(record)
            records.append(record)
            advance(1)
    test = _evaluate(scheme.global_model(), data.test, cfg, data.speeds_kmh)
    memory, extra_memory = scheme.memory()
    summary = _summary(cfg, records, init, test, acct, scheme.ledger, memory, info, data)
    privacy = scheme.privacy_summary(records)
    summary |= {"device_memory": memory, **extra_memory, "privacy": privacy,
                "epsilon": privacy and privacy["epsilon"], "delta": privacy and privacy["delta"],
                "wall_seconds": time.perf_counter() - start}  # fmt: skip
    run.write_summary(summary)
    return summary


_MODEL_KEYS = ("total_params", "trainable_params", "pretrained", "backbone", "trainable",
               "normalization")  # fmt: skip


def _summary(cfg, records, init, test, acct, ledger, memory, info, data) -> dict[str, Any]:
    """summary.json's figures (computed from the records, the ledger and the accountant)."""
    n = len(records)
    hit = next((r for r in records if r.get("val_nmse", math.inf) <= cfg.target_loss), None)
    if init <= cfg.target_loss:
        hit = {"simulated_time_s": 0.0, "cumulative_bits": 0, "iteration": 0}
    evals = [r["val_nmse"] for r in records if "val_nmse" in r]
    by_what = {str(w): s["bits"] for w, s in ledger.totals_by("what").items()}
    return {
        "scheme": cfg.scheme,
        "policy": cfg.allocation.policy,
        "num_devices": cfg.num_devices,
        "iterations": cfg.iterations,
        "rounds": n,
        "local_steps_per_round": cfg.local_steps,
        "uplink_bits": acct.uplink_bits,
        "downlink_bits": acct.downlink_bits,
        "total_bits": acct.uplink_bits + acct.downlink_bits,
        "uplink_bits_per_round": acct.uplink_bits / n,
        "downlink_bits_per_round": acct.downlink_bits / n,
        "bits_per_iteration": (acct.uplink_bits + acct.downlink_bits) / cfg.iterations,
        "bits_by_payload": by_what,
        "ledger": {
            "transfers": len(ledger),
            **{f"{d}_bits": ledger.total(direction=d)["bits"] for d in ("uplink", "downlink")},
        },  # fmt: skip
        "simulated_time_s": acct.simulated_time_s,
        "mean_round_latency_s": acct.simulated_time_s / n,
        "energy_j": float(acct.energy_j.sum()),
        "energy_j_per_device": acct.energy_j.tolist(),
        "participation": [
            sum(k in r["scheduled"] for r in records) / n for k in range(cfg.num_devices)
        ],  # fmt: skip
        "final_train_loss": records[-1]["train_loss"],
        "initial_val_nmse": init,
        "final_val_nmse": evals[-1],
        "final_val_nmse_db": _db(evals[-1]),
        "best_val_nmse": min(evals),
        "test_nmse": test["nmse"],
        "test_nmse_db": test["nmse_db"],
        "test_nmse_db_by_group": test["nmse_db_by_group"],
        "test_se_ratio": test["se_ratio"],
        "device_memory_bytes": memory["total_bytes"],
        "target_loss": cfg.target_loss,
        "time_to_target_s": hit["simulated_time_s"] if hit else None,
        "bits_to_target": hit["cumulative_bits"] if hit else None,
        "iterations_to_target": hit["iteration"] if hit else None,
        "lyapunov": acct.lyapunov_summary(),
        "model": {k: info[k] for k in _MODEL_KEYS},
        "partition": data.partition,
    }
