"""What a looped-TP run reports and exports: measured memory, latency, the trained checkpoint.

* :class:`Measurements` measures, on the slices themselves during the first step of a process,
  each role's parameter, gradient and optimiser-state bytes (the tensors that exist) and the
  activations autograd saved for backward (:class:`~edgelam.training.looped_tp.tp.SavedTensorMeter`).
* :func:`unshared_memory` measures the reference: an :class:`~edgelam.training.looped_tp.model.UnsharedLAM`
  (L distinct blocks, one device) with :func:`edgelam.network.memory_footprint`.
* :func:`export_run` gathers the slices at the server (a control message, not radio traffic),
  reassembles the dense model (:func:`~edgelam.training.looped_tp.tp.unshard`) and writes
  ``model.safetensors`` (tensor names of ``LoopedLAM.state_dict``), ``model_card.json`` and
  ``summary.json``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch

from edgelam.config import to_dict
from edgelam.models.pretrained import file_sha256
from edgelam.network import memory_footprint
from edgelam.runs import RunDir, library_versions, read_metrics
from edgelam.training.looped_tp.costs import TPWorkload
from edgelam.training.looped_tp.model import LoopedLAMConfig, UnsharedLAM
from edgelam.training.looped_tp.partition import SCHEMES, Plan, plan
from edgelam.training.looped_tp.tp import LoopedTP, unshard

__all__ = ["CARD_FILE", "FORMAT", "WEIGHTS_FILE", "Measurements", "export_run", "unshared_memory"]

FORMAT = "edgelam-looped-lam"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "model_card.json"


def _bytes(tensors: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


class Measurements:
    """Per-role memory, measured once (the first step this process runs)."""

    def __init__(self) -> None:
        self.memory: dict[str, dict[str, int]] = {}
        self._done = False

    def after_backward(self, parts: dict[str, torch.nn.Module], tp: LoopedTP) -> None:
        if self.memory:
            return
        for role, part in parts.items():
            params = list(part.parameters())
            self.memory[role] = {"parameters": _bytes(params),
                                 "gradients": _bytes(p.grad for p in params),
                                 "activations": tp.activation_bytes.get(role, 0)}  # fmt: skip

    def after_step(self, opts: dict[str, torch.optim.Optimizer]) -> None:
        if self._done:
            return
        for role, opt in opts.items():
            state = [t for s in opt.state.values() for t in s.values()]
            mem = self.memory[role]
            mem["optimizer"] = _bytes(state)
            mem["total"] = (
                mem["parameters"] + mem["gradients"] + mem["optimizer"] + mem["activations"]
            )
        self._done = True


def unshared_memory(cfg: LoopedLAMConfig, batch_size: int, dtype: torch.dtype) -> dict[str, int]:
    """Training memory of the unshared, unsplit model of the same depth on one device.

    Parameters, gradients, two AdamW moments and the activations saved for backward, measured
    by :func:`edgelam.network.memory_footprint` on a batch of zeros (values do not matter).
    """
    model = UnsharedLAM(cfg).to(dtype)
    if cfg.task == "csi":
        inputs = torch.zeros(batch_size, cfg.seq_len, cfg.input_dim, dtype=dtype)
    else:
        inputs = torch.zeros(batch_size, cfg.seq_len, dtype=torch.long)
    params = _bytes(model.parameters())
    return {"parameters": params,
            "total": memory_footprint(model, inputs, training=True, optimizer_states=2)}  # fmt: skip


def _compare_schemes(workload: TPWorkload, system: Any) -> dict[str, Any]:
    out = {}
    for scheme in SCHEMES:
        try:
            p = plan(scheme, workload, system)
            out[scheme] = {"latency_s": p.latency.total_s, "partition": p.partition.as_dict(),
                           "bandwidth_hz": list(p.bandwidth_hz)}  # fmt: skip
        except ValueError as err:  # ConfigError / DeviceMemoryError: this scheme cannot split it
            out[scheme] = {"error": str(err)}
    return out


def export_run(cfg: Any, run: RunDir | None, link: Any, parts: dict[str, torch.nn.Module],
               model_cfg: LoopedLAMConfig, chosen: Plan, workload: TPWorkload,
               data_info: dict[str, Any], measured: Measurements, wall_seconds: float) -> None:  # fmt: skip
    """Gather memory and slices at the server; write weights, card and summary (server only)."""
    from safetensors.torch import save_file

    from edgelam.training.looped_tp.train import build_system

    memories = link.gather(measured.memory)
    states = link.gather({r: {n: t.detach().cpu() for n, t in p.state_dict().items()}
                          for r, p in parts.items()})  # fmt: skip
    if run is None:
        return
    memory = {role: m for per_process in memories for role, m in (per_process or {}).items()}
    state = {role: s for per_process in states for role, s in (per_process or {}).items()}
    devices = [state[f"device{k}"] for k in range(cfg.devices)]
    dense = {n: t.contiguous() for n, t in unshard(model_cfg, state["server"], devices).items()}
    weights = run.path / WEIGHTS_FILE
    tmp = weights.with_name(weights.name + ".tmp")
    save_file(dense, str(tmp), metadata={FORMAT: json.dumps(to_dict(model_cfg), sort_keys=True)})
    os.replace(tmp, weights)

    records = read_metrics(run.path)
    train = [r for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") == "eval" and r.get("val_loss") is not None]
    last = train[-min(10, len(train)) :]
    dtype = getattr(torch, cfg.dtype)
    reference = unshared_memory(model_cfg, cfg.batch_size, dtype)
    device_memory = [{"measured": memory[f"device{k}"], "model": workload.device_memory(chosen.partition, k),
                      "profile": chosen_device(cfg, k)} for k in range(cfg.devices)]  # fmt: skip
    worst = max(m["measured"]["total"] for m in device_memory)
    latencies = [r["latency"]["total_s"] for r in train]
    summary = {
        "steps": len(train),
        "final_loss": train[-1]["loss"],
        "final_loss_mean_last": sum(r["loss"] for r in last) / len(last),
        "first_loss": train[0]["loss"],
        "final_val_loss": evals[-1]["val_loss"] if evals else None,
        "runtime": type(link).__name__,
        "processes": link.num_devices + 1 if type(link).__name__ == "TorchDistTPLink" else 1,
        "wall_seconds": wall_seconds,
        "wall_seconds_per_step": sum(r["wall_seconds"] for r in train) / len(train),
        "plan": chosen.as_dict(),
        "memory": {
            "devices": device_memory,
            "server": memory["server"],
            "unshared_unsplit_model": reference,
            "max_device_over_unshared": worst / reference["total"],
        },  # fmt: skip
        "simulated_latency": {
            "plan_mean_state": chosen.latency.as_dict(),
            "mean_over_steps_s": sum(latencies) / len(latencies),
            "by_scheme_mean_state": _compare_schemes(workload, build_system(cfg)),
        },  # fmt: skip
        "bits_per_step": train[-1]["traffic"],
        "device_flops_per_step": [
            workload.device_flops(chosen.partition, k) for k in range(cfg.devices)
        ],
        "server_flops_per_step": workload.server_flops(),
        "data": {k: v for k, v in data_info.items() if k != "vocab"},
        "weights": WEIGHTS_FILE,
        "sha256": file_sha256(weights),
    }
    card = {
        "format": FORMAT,
        "format_version": 1,
        "architecture": to_dict(model_cfg),
        "weights_file": WEIGHTS_FILE,
        "sha256": summary["sha256"],
        "bytes": weights.stat().st_size,
        "num_parameters": sum(t.numel() for t in dense.values()),
        "vocab": data_info.get("vocab"),
        "train_config": to_dict(cfg),
        "steps": summary["steps"],
        "final_loss": summary["final_loss_mean_last"],
        "final_val_loss": summary["final_val_loss"],
        "partition": chosen.partition.as_dict(),
        "versions": library_versions("torch", "safetensors"),
    }
    Path(run.path / CARD_FILE).write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    if not all(math.isfinite(v) for v in latencies):
        raise FloatingPointError("simulated latency is not finite")
    run.write_summary(summary)


def chosen_device(cfg: Any, k: int) -> dict[str, Any]:
    """The class name and memory of device ``k``."""
    dev = cfg.device_list()[k]
    return {
        "name": dev.name,
        "memory_bytes": dev.memory_bytes,
        "sustained_flops": dev.sustained_flops,
    }
