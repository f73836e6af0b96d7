"""Split FedFT on ``torch.distributed``: one process per role, launched by ``torchrun``.

Rank 0 is the edge server; rank ``k + 1`` is device ``k`` (``K = world_size - 1`` devices).
:class:`TorchDistributedLink` carries the payloads of
:class:`~edgelam.training.split_fedft.SplitFedFT` with point-to-point ``send``/``recv`` (gloo on
CPU, nccl on GPU): a small header (names, shapes, dtypes, pickled with ``send_object_list``)
then each tensor. Rank 0 passes every payload through the same
:class:`~edgelam.distributed.transport.InProcessTransport` as the in-process runtime: downlink
payloads are quantised before they are sent, uplink payloads when they arrive, and their bits
are recorded there; the headers (and the control messages: set-up, schedule, telemetry) are the
simulation's own traffic and are not counted. The same algorithm code then gives the same
numbers in both runtimes.

A job (:class:`SplitFedFTJob`: model, synthetic per-device data, algorithm) is built on every
rank from its config file and seed; each device builds only its own data shard. Run it with::

    torchrun --standalone --nproc-per-node 3 -m edgelam.distributed.dist_transport \\
        --config job.toml --out runs/split

or :func:`launch` from Python; :func:`run_split_fedft` runs the same job in one process.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import TensorDataset

from edgelam.config import ConfigError, build_config, option, to_dict
from edgelam.distributed.torchrun import process_group, torchrun
from edgelam.distributed.transport import InProcessTransport
from edgelam.models.adapters import apply_lora, build_llm4cp
from edgelam.models.layers import seeded
from edgelam.models.llm4cp import LLM4CPConfig
from edgelam.network import TransferLedger
from edgelam.runs import RunDir, atomic_write_text
from edgelam.seeding import derive_seed
from edgelam.training.split_fedft import (
    SERVER,
    DeviceData,
    InProcessLink,
    Link,
    SplitFedFT,
    SplitFedFTConfig,
    State,
    dataset_batches,
)

__all__ = [
    "TorchDistributedLink",
    "GPT2LMConfig",
    "SplitFedFTJob",
    "build_job_model",
    "build_device_data",
    "run_split_fedft",
    "final_privacy",
    "launch",
    "main",
]


class TorchDistributedLink(Link):
    """The :class:`~edgelam.training.split_fedft.Link` of one ``torch.distributed`` rank.

    Args:
        quantization: as ``SplitFedFTConfig.quantization`` (applied on rank 0).
        device: where received tensors are put (``cuda:<local rank>`` with nccl).

    Raises:
        RuntimeError: the default process group is not initialised.
        ValueError: fewer than 2 ranks.
    """

    def __init__(self, quantization: str | None = None, device: torch.device | str = "cpu"):
        if not dist.is_initialized():
            raise RuntimeError("TorchDistributedLink: call torch.distributed.init_process_group")
        self.rank, world = dist.get_rank(), dist.get_world_size()
        if world < 2:
            raise ValueError(f"TorchDistributedLink: need a server and a device, world={world}")
        self.num_devices = world - 1
        self.device = torch.device(device)
        self._objects = self.device if self.device.type == "cuda" else None
        self.transport = (
            InProcessTransport(TransferLedger(), quantization=quantization)
            if self.rank == 0
            else None
        )

    @staticmethod
    def rank_of(role: int) -> int:
        """Rank 0 for the server, ``k + 1`` for device ``k``."""
        return 0 if role == SERVER else role + 1

    def owns(self, role: int) -> bool:
        return self.rank_of(role) == self.rank

    def _send(self, payload: State, dst: int) -> None:
        header = [
            (n, tuple(t.shape), str(t.dtype).removeprefix("torch.")) for n, t in payload.items()
        ]
        dist.send_object_list([header], dst=dst, device=self._objects)
        for t in payload.values():
            dist.send(t.to(self.device), dst=dst)

    def _recv(self, src: int) -> State:
        box: list[Any] = [None]
        dist.recv_object_list(box, src=src, device=self._objects)
        out = {}
        for name, shape, dtype in box[0]:
            out[name] = torch.empty(shape, dtype=getattr(torch, dtype), device=self.device)
            dist.recv(out[name], src=src)
        return out

    def exchange(
        self, src: int, dst: int, payload: State | None, what: str, iteration: int
    ) -> State | None:
        self.check_pair(src, dst)
        if self.owns(src):
            payload = self.serialize(payload, src, what)
            if src == SERVER:  # quantised and recorded where it is sent
                payload = self.transport.downlink(iteration, [dst], payload, what, mode="unicast")
            self._send(payload, self.rank_of(dst))
            return None
        if self.owns(dst):
            got = self._recv(self.rank_of(src))
            if dst == SERVER:  # quantised and recorded where it arrives
                got = self.transport.uplink(iteration, src, got, what)
            return got
        return None

    def report(self, src: int, dst: int, obj: Any) -> Any:
        if self.owns(src):
            dist.send_object_list([obj], dst=self.rank_of(dst), device=self._objects)
        elif self.owns(dst):
            box: list[Any] = [None]
            dist.recv_object_list(box, src=self.rank_of(src), device=self._objects)
            return box[0]
        return None

    def agree(self, obj: Any) -> Any:
        box = [obj if self.rank == 0 else None]
        dist.broadcast_object_list(box, src=0, device=self._objects)
        return box[0]


# -- the job: model, per-device data, runtime --------------------------------------------------
@dataclass
class GPT2LMConfig:
    """A small GPT-2 language model (``transformers.GPT2LMHeadModel``) and its LoRA adapters."""

    vocab_size: int = option(64, "vocabulary size V")
    d_model: int = option(32, "hidden width d")
    n_head: int = option(2, "attention heads (divide d_model)")
    num_layers: int = option(2, "transformer blocks")
    sequence_length: int = option(16, "tokens per sequence L (also n_positions)")
    dropout: float = option(0.0, "GPT-2 residual/embedding/attention dropout")
    lora_rank: int = option(4, "LoRA rank r")
    lora_alpha: int = option(8, "LoRA alpha")
    lora_targets: tuple[str, ...] = option(("c_attn", "c_proj"), "GPT-2 modules adapted by LoRA")
    train_embedding: bool = option(True, "devices train wte (tied to lm_head)")


@dataclass
class SplitFedFTJob:
    """A complete split-FedFT run: model, synthetic per-device data, algorithm."""

    model: Literal["llm4cp", "gpt2-lm"] = option("llm4cp", "the model to split")
    llm4cp: LLM4CPConfig = dataclasses.field(
        default_factory=lambda: LLM4CPConfig(trainable="lora"),
        metadata={"help": "the LLM4CP predictor (model = llm4cp); trainable should be 'lora'"},
    )
    gpt2_lm: GPT2LMConfig = dataclasses.field(
        default_factory=GPT2LMConfig, metadata={"help": "the GPT-2 LM (model = gpt2-lm)"}
    )
    num_devices: int = option(2, "K devices (torchrun: K + 1 processes)")
    samples_per_device: tuple[int, ...] = option(
        (64,), "n_k, synthetic training samples per device (one value: every device)"
    )
    devices_per_iteration: int = option(
        0, "devices the server schedules per iteration, at random (seeded); 0: all"
    )
    dtype: Literal["float32", "float64"] = option("float32", "model and data dtype")
    split_fedft: SplitFedFTConfig = dataclasses.field(
        default_factory=SplitFedFTConfig, metadata={"help": "the algorithm"}
    )

    def __post_init__(self) -> None:
        if self.num_devices < 1:
            raise ConfigError(f"num_devices: must be >= 1, got {self.num_devices}")
        if (
            len(self.samples_per_device) not in (1, self.num_devices)
            or min(self.samples_per_device) < 1
        ):
            raise ConfigError(
                f"samples_per_device: need 1 or num_devices={self.num_devices} positive "
                f"values, got {list(self.samples_per_device)}"
            )
        if not 0 <= self.devices_per_iteration <= self.num_devices:
            raise ConfigError(
                f"devices_per_iteration: must be in 0..{self.num_devices}, "
                f"got {self.devices_per_iteration}"
            )

    def schedule(self, iteration: int) -> list[int] | None:
        """Devices of ``iteration`` (None: all), drawn from ``(seed, iteration)``."""
        if self.devices_per_iteration in (0, self.num_devices):
            return None
        gen = torch.Generator().manual_seed(derive_seed(self.split_fedft.seed, iteration, 7919))
        return torch.randperm(self.num_devices, generator=gen)[
            : self.devices_per_iteration
        ].tolist()


def build_job_model(job: SplitFedFTJob) -> nn.Module:
    """The job's model with LoRA on its backbone, seeded by ``job.split_fedft.seed``."""
    seed, dtype = job.split_fedft.seed, getattr(torch, job.dtype)
    if job.model == "llm4cp":
        return build_llm4cp(job.llm4cp, seed=seed)[0].to(dtype)
    from transformers import GPT2Config, GPT2LMHeadModel  # slow import: only when used

    lm = job.gpt2_lm
    cfg = GPT2Config(vocab_size=lm.vocab_size, n_positions=lm.sequence_length,
                     n_embd=lm.d_model, n_layer=lm.num_layers, n_head=lm.n_head,
                     resid_pdrop=lm.dropout, embd_pdrop=lm.dropout, attn_pdrop=lm.dropout,
                     bos_token_id=None, eos_token_id=None)  # fmt: skip
    with seeded(seed):
        model = GPT2LMHeadModel(cfg)
        apply_lora(model.transformer, lm.lora_rank, lm.lora_alpha, lm.lora_targets)
    model.lm_head.weight.requires_grad_(lm.train_embedding)  # tied: wte trains with it
    return model.to(dtype)


def _synthetic_csi(n: int, cfg: LLM4CPConfig, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Sums of 3 paths with random gain, delay and Doppler: ``[n, L_h, 2F]``, ``[n, L_f, 2F]``."""
    f, slots = cfg.num_subcarriers, cfg.history_slots + cfg.future_slots
    gain = torch.randn(n, 3, 1, 1, 2, generator=gen, dtype=torch.float64) / math.sqrt(6)
    doppler = 0.1 * (2 * torch.rand(n, 3, 1, 1, generator=gen, dtype=torch.float64) - 1)
    delay = torch.rand(n, 3, 1, 1, generator=gen, dtype=torch.float64) / 4
    t = torch.arange(slots, dtype=torch.float64).view(1, 1, -1, 1)
    sub = torch.arange(f, dtype=torch.float64).view(1, 1, 1, -1)
    phase = 2 * math.pi * (doppler * t - delay * sub)
    h = (torch.view_as_complex(gain) * torch.polar(torch.ones_like(phase), phase)).sum(1)
    x = torch.view_as_real(h).flatten(-2)  # [n, slots, 2F], re/im interleaved
    return x[:, : cfg.history_slots], x[:, cfg.history_slots :]


def build_device_data(job: SplitFedFTJob, k: int, device: Any = None) -> DeviceData:
    """Device ``k``'s synthetic shard, from ``(seed, k)`` alone (no data is shipped to it).

    llm4cp: multipath CSI sequences ``history [n_k, L_h, 2F]``, ``target [n_k, L_f, 2F]``;
    gpt2-lm: token sequences ``[n_k, L]`` counting up by a per-sequence stride (mod V).
    """
    n = job.samples_per_device[k if len(job.samples_per_device) > 1 else 0]
    seed = job.split_fedft.seed
    gen = torch.Generator().manual_seed(derive_seed(seed, k, 104729))
    if job.model == "llm4cp":
        x, y = (v.to(getattr(torch, job.dtype)) for v in _synthetic_csi(n, job.llm4cp, gen))
    else:
        lm = job.gpt2_lm
        start = torch.randint(lm.vocab_size, (n, 1), generator=gen)
        stride = torch.randint(1, 4, (n, 1), generator=gen)
        x = y = (start + stride * torch.arange(lm.sequence_length)) % lm.vocab_size
    return dataset_batches(TensorDataset(x, y), job.split_fedft.batch_size, seed, k, device)


def run_split_fedft(
    job: SplitFedFTJob,
    link: Link | None = None,
    out: str | Path | None = None,
    device: torch.device | str = "cpu",
    overwrite: bool = False,
) -> dict[str, Any] | None:
    """Run ``job`` on ``link`` (default in-process) and, on the server, write ``out``.

    ``out`` gets ``config.json``, ``metrics.jsonl`` (one record per iteration; with privacy
    ``epsilon`` and ``delta``), ``summary.json`` (with privacy the final ``epsilon`` and
    ``delta``, :func:`final_privacy`), ``transfers.json`` (every ledger row),
    ``lora.safetensors`` (the server's trainable backbone state) and
    ``device_modules.safetensors`` (``device<k>.<name>``).

    Returns:
        On the server's process ``{"records", "lora", "device_states", "transfers", "memory"}``;
        None elsewhere.
    """
    cfg = job.split_fedft
    link = link or InProcessLink(
        job.num_devices, InProcessTransport(TransferLedger(), quantization=cfg.quantization)
    )
    if link.num_devices != job.num_devices:
        raise ConfigError(
            f"num_devices: the job has {job.num_devices} devices but the runtime has "
            f"{link.num_devices} (torchrun needs --nproc-per-node {job.num_devices + 1})"
        )
    server = link.owns(SERVER)
    run = RunDir.create(out, to_dict(job), overwrite=overwrite) if out and server else None
    model = build_job_model(job).to(device)
    data = {k: build_device_data(job, k, device) for k in range(job.num_devices) if link.owns(k)}
    algo = SplitFedFT(cfg, model, data, link)
    start = time.perf_counter()
    algo.run(job.schedule, run.log if run is not None else None)
    device_states = algo.device_states()
    if not server:
        return None
    result = {"records": algo.records, "lora": algo.server_state(),
              "device_states": device_states, "transfers": link.ledger.as_dicts(),
              "memory": algo.memory}  # fmt: skip
    if run is not None:
        _write_run(run, result, link, time.perf_counter() - start)
    return result


def _write_run(run: RunDir, result: dict[str, Any], link: Link, seconds: float) -> None:
    """The files of :func:`run_split_fedft` beyond ``config.json`` and ``metrics.jsonl``."""
    from safetensors.torch import save_file

    states = result["device_states"]
    save_file({n: v.cpu().contiguous() for n, v in result["lora"].items()},
              run.path / "lora.safetensors")  # fmt: skip
    save_file({f"device{k}.{n}": v.contiguous() for k, s in states.items() for n, v in s.items()},
              run.path / "device_modules.safetensors")  # fmt: skip
    atomic_write_text(run.path / "transfers.json", json.dumps(result["transfers"]))
    privacy = final_privacy(result["records"], link.num_devices)
    run.write_summary({
        "runtime": type(link).__name__,
        "processes": link.num_devices + 1 if isinstance(link, TorchDistributedLink) else 1,
        "final_loss": result["records"][-1]["loss"],
        "epsilon": privacy and privacy["epsilon"],
        "delta": privacy and privacy["delta"],
        "privacy": privacy,
        "wall_seconds": seconds,
        **link.ledger.summary(),
        "memory": result["memory"],
    })  # fmt: skip


def final_privacy(records: Sequence[dict[str, Any]], num_devices: int) -> dict[str, Any] | None:
    """The final ``(epsilon, delta)`` of a private run's records: ``epsilon`` (the largest
    device's), ``delta`` and ``epsilon_per_device`` (each device's latest; 0 if it never took
    part); None without privacy.

    >>> rows = [{"device": 1, "epsilon": 0.5}]
    >>> final_privacy([{"epsilon": 0.5, "delta": 1e-5, "devices": rows}], 2)["epsilon_per_device"]
    [0.0, 0.5]
    """
    if not records or "epsilon" not in records[-1]:
        return None
    latest = [0.0] * num_devices
    for record in records:
        for row in record["devices"]:
            if "epsilon" in row:
                latest[row["device"]] = row["epsilon"]
    return {"epsilon": records[-1]["epsilon"], "delta": records[-1]["delta"],
            "epsilon_per_device": latest}  # fmt: skip


def launch(nproc: int, args: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess:
    """Start ``torchrun`` on this module (:func:`~edgelam.distributed.torchrun.torchrun`; one
    node: ``nproc = num_devices + 1``; ``nnodes``, ``node_rank``, ``rdzv_endpoint``, ``timeout``,
    ``check`` as there)."""
    return torchrun("edgelam.distributed.dist_transport", nproc, args, **kwargs)


def main(argv: Sequence[str] | None = None) -> int:
    """The torchrun entry point: ``--config FILE --out DIR [--overwrite]``; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="torchrun ... -m edgelam.distributed.dist_transport",
        description="Split FedFT, one process per role: rank 0 = edge server, rank k+1 = device k.",
    )
    parser.add_argument("--config", required=True, help="job config (.toml/.yaml/.json)")
    parser.add_argument("--out", required=True, help="run directory (written by rank 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run")
    args = parser.parse_args(argv)
    try:
        job = build_config(SplitFedFTJob, args.config)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    # nccl when every local rank has a GPU of its own (nccl cannot share one), else gloo on CPU
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    nccl = torch.cuda.is_available() and torch.cuda.device_count() >= local_world
    device = torch.device("cpu")
    if nccl:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    try:
        with process_group("nccl" if nccl else "gloo"):
            link = TorchDistributedLink(job.split_fedft.quantization, device)
            run_split_fedft(job, link, args.out, device, overwrite=args.overwrite)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
