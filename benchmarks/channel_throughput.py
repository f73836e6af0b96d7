"""Generation throughput (samples/s) of the 38.901 CSI generator at the LLM4CP default size.

Writes JSON (default: benchmarks/results/channel_throughput.json). Each model is timed over
several batches after one warm-up batch; the HDF5 write is timed separately.

    .venv/bin/python benchmarks/channel_throughput.py --models cdl-c uma --samples 1024
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from edgelam.channels.config import ChannelConfig
from edgelam.channels.generate import ChannelGenerator
from edgelam.channels.store import generate_dataset
from edgelam.runs import library_versions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["cdl-c", "uma", "tdl-a"])
    parser.add_argument("--duplex", nargs="+", default=["tdd", "fdd"])
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/channel_throughput.json")
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = []
    for model in args.models:
        for duplex in args.duplex:
            cfg = ChannelConfig(model=model, duplex=duplex, num_samples=args.samples,
                                batch_size=args.batch_size)  # fmt: skip
            gen = ChannelGenerator(cfg)
            gen.batch(10_000, args.batch_size)  # warm-up
            start = time.perf_counter()
            for b in range(args.samples // args.batch_size):
                gen.batch(b, args.batch_size)
            gen_s = time.perf_counter() - start
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                generate_dataset(cfg, Path(tmp) / "d.h5", progress=False).close()
                total_s = time.perf_counter() - start
            row = {
                "model": model,
                "duplex": duplex,
                "samples": args.samples,
                "generate_samples_per_s": args.samples / gen_s,
                "generate_and_write_samples_per_s": args.samples / total_s,
            }
            print(json.dumps(row))
            results.append(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"threads": args.threads, "machine": platform.machine(), "cpus": torch.get_num_threads(),
            "versions": library_versions("torch", "sionna-no-rt"),
            "shape": "[sample, 20 slots, 48 subcarriers, 32 antennas] complex64"}  # fmt: skip
    args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
