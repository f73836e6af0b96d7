"""Looped TP: simulated iteration latency of the optimal / equal / min-storage partitions, and
the memory of a device against the unshared, unsplit model of the same depth.

Writes ``benchmarks/results/looped_tp_partitions.json``. Run with one thread::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/looped_tp_partitions.py

Latency: the cost model of :mod:`edgelam.training.looped_tp.costs` on heterogeneous device sets
dropped in a 38.901 UMa cell (20 MHz of uplink per device, mean link state), for a BERT-base-
sized looped LAM (d 768, 12 heads, FFN 3072, L 12, T 128, vocabulary 30522; E 96 rather than
ALBERT's 128 so that 3, 4 and 6 devices can all hold equal slices) at two batch sizes (at 256
the Jetson Nano's 4 GiB cannot hold an equal share) and the ``quick`` profile's CSI model. Memory: measured (saved-tensor hooks, real optimiser state) on the slices of one
in-process TP step, and on the unshared model (:func:`edgelam.network.memory_footprint`).
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch

from edgelam.network import Network, NetworkConfig
from edgelam.training.looped_tp.costs import EdgeSystem, TPWorkload
from edgelam.training.looped_tp.data import mlm_mask
from edgelam.training.looped_tp.export import unshared_memory
from edgelam.training.looped_tp.model import LoopedLAMConfig, build_looped_lam
from edgelam.training.looped_tp.partition import SCHEMES, equal_partition, plan
from edgelam.training.looped_tp.runtime import InProcessTPLink
from edgelam.training.looped_tp.tp import LoopedTP, shard
from edgelam.training.looped_tp.train import DEVICE_PROFILES, looped_tp_profile

OUT = Path(__file__).parent / "results" / "looped_tp_partitions.json"
BERT = LoopedLAMConfig(task="mlm", vocab_size=30522, seq_len=128, d_model=768, embed_dim=96,
                       n_head=12, ffn_dim=3072, loops=12)  # fmt: skip
DEVICE_SETS = {
    "phone+nano+orin": ("smartphone", "jetson-nano", "jetson-agx-orin"),
    "2 phones+2 nanos": ("smartphone", "smartphone", "jetson-nano", "jetson-nano"),
    "6 mixed": (
        "smartphone",
        "jetson-nano",
        "jetson-agx-orin",
        "smartphone",
        "jetson-nano",
        "jetson-nano",
    ),
}


def system_of(names: tuple[str, ...], seed: int = 0) -> EdgeSystem:
    net = Network(NetworkConfig(num_devices=len(names), seed=seed, uplink_bandwidth_hz=20e6,
                                downlink_bandwidth_hz=20e6))  # fmt: skip
    return EdgeSystem.from_network(
        net, [DEVICE_PROFILES[n] for n in names], DEVICE_PROFILES["edge-server-a100"]
    )


def latency_scenario(
    name: str, cfg: LoopedLAMConfig, batch: int, label_bits: int, devices: tuple[str, ...]
) -> dict:
    system = system_of(devices)
    work = TPWorkload(cfg, batch, 4, label_bits)
    out = {"model": name, "batch_size": batch, "devices": list(devices),
           "uplink_rate_constant_hz": list(system.rate_constant_hz),
           "downlink_rate_bps": system.downlink_rate_bps, "schemes": {}}  # fmt: skip
    for scheme in SCHEMES:
        start = time.perf_counter()
        try:
            p = plan(scheme, work, system)
        except ValueError as err:  # DeviceMemoryError / ConfigError: this scheme cannot split it
            out["schemes"][scheme] = {"error": str(err)}
            continue
        lat = p.latency
        out["schemes"][scheme] = {
            "latency_s": lat.total_s, "critical_compute_s": lat.critical_compute_s,
            "critical_uplink_s": lat.critical_uplink_s, "downlink_s": lat.downlink_s,
            "partition": p.partition.as_dict(), "bandwidth_mhz": [b / 1e6 for b in p.bandwidth_hz],
            "memory_gib": [m["total"] / 2**30 for m in p.memory], "gap": p.gap,
            "solve_seconds": time.perf_counter() - start,
        }  # fmt: skip
    opt = out["schemes"]["optimal"].get("latency_s")
    for scheme in ("equal", "min_storage"):
        other = out["schemes"][scheme].get("latency_s")
        out[f"speedup_vs_{scheme}"] = other / opt if other and opt else None
    return out


def memory_scenario(name: str, cfg: LoopedLAMConfig, batch: int, k: int) -> dict:
    """Measured bytes of each slice in one in-process step (equal split) and of the reference."""
    torch.manual_seed(0)
    model = build_looped_lam(cfg, seed=0)
    part = equal_partition(TPWorkload(cfg, batch), k)
    server, slices = shard(model, part)
    gen = torch.Generator().manual_seed(0)
    if cfg.task == "mlm":
        ids = torch.randint(2, cfg.vocab_size, (batch, cfg.seq_len), generator=gen)
        mask = mlm_mask(batch, cfg.seq_len, 0.15, gen)
        inputs, labels = ids.masked_fill(mask, 0), ids[mask]
    else:
        history = torch.randn(batch, cfg.seq_len, 2 * cfg.num_subcarriers, generator=gen)
        mask = torch.rand(history.shape, generator=gen) < 0.3
        inputs, labels = torch.cat([history.masked_fill(mask, 0), mask.float()], -1), history[mask]
    tp = LoopedTP(cfg, InProcessTPLink(k), server, dict(enumerate(slices)))
    opts = [torch.optim.AdamW(s.parameters()) for s in slices]
    start = time.perf_counter()
    tp.step(inputs, labels, mask)
    grads = [sum(p.grad.numel() * 4 for p in s.parameters()) for s in slices]
    for o in opts:
        o.step()
    step_seconds = time.perf_counter() - start
    devices = []
    work = TPWorkload(cfg, batch)
    for i, s in enumerate(slices):
        params = sum(p.numel() * 4 for p in s.parameters())
        opt = sum(
            t.numel() * t.element_size() for st in opts[i].state.values() for t in st.values()
        )
        measured = params + grads[i] + opt + tp.activation_bytes[f"device{i}"]
        devices.append({"measured_bytes": measured, "model_bytes": work.device_memory(part, i)["total"],
                        "parameters": params, "activations": tp.activation_bytes[f"device{i}"]})  # fmt: skip
    del model, server, slices, tp, opts
    start = time.perf_counter()
    ref = unshared_memory(cfg, batch, torch.float32)
    worst = max(d["measured_bytes"] for d in devices)
    return {"model": name, "batch_size": batch, "devices": k, "loops": cfg.loops,
            "partition": part.as_dict(), "per_device": devices, "unshared_unsplit": ref,
            "max_device_over_unshared": worst / ref["total"],
            "parameters_max_device_over_unshared": max(d["parameters"] for d in devices) / ref["parameters"],
            "tp_step_seconds": step_seconds, "reference_seconds": time.perf_counter() - start}  # fmt: skip


def main() -> None:
    torch.set_num_threads(1)
    quick = looped_tp_profile("quick")
    csi_bits = 32 * 10 * 4 * 2 * 2 * 32  # 10 of 32 patches of 4 slots x 2 subcarriers, fp32
    latency = []
    for devices in DEVICE_SETS.values():
        for batch in (16, 256):
            latency.append(
                latency_scenario("bert-base-looped", BERT, batch, batch * 19 * 64, devices)
            )
        latency.append(latency_scenario("quick-csi", quick.model, 32, csi_bits, devices))
    memory = [memory_scenario("quick-csi", quick.model, 32, k) for k in (3, 6)]
    memory.append(memory_scenario("bert-base-looped", BERT, 4, 3))
    record = {"python": platform.python_version(), "torch": torch.__version__, "threads": 1,
              "latency": latency, "memory": memory}  # fmt: skip
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(record, indent=2) + "\n")
    for s in latency:
        lat = {
            k: (f"{v['latency_s']:.3f} s" if "latency_s" in v else "infeasible")
            for k, v in s["schemes"].items()
        }
        print(s["model"], s["batch_size"], s["devices"], lat)
    for m in memory:
        print(m["model"], m["devices"], "ratio", round(m["max_device_over_unshared"], 4))


if __name__ == "__main__":
    main()
