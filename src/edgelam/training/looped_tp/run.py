"""Looped TP on ``torch.distributed``: rank 0 the edge server, rank ``k + 1`` device ``k``.

Run a config (TOML/YAML/JSON of :class:`~edgelam.training.looped_tp.train.LoopedTPConfig`
fields) with ``K + 1`` processes::

    torchrun --standalone --nproc-per-node 4 -m edgelam.training.looped_tp.run \\
        --config job.toml --out runs/looped-tp

or :func:`launch` from Python. Every rank builds the model from the seed and keeps its part;
device ranks load the data (device 0 first, generating missing corpus files); rank 0 writes the
run directory. gloo on CPU; each process runs torch with one thread (as the in-process
reference does, so both give the same numbers).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence

import torch
import torch.distributed as dist

from edgelam.config import ConfigError, build_config
from edgelam.training.looped_tp.runtime import TorchDistTPLink
from edgelam.training.looped_tp.train import LoopedTPConfig, train_looped_tp

__all__ = ["launch", "main"]


def launch(nproc: int, args: Sequence[str], *, timeout: float | None = None,
           check: bool = True) -> subprocess.CompletedProcess:  # fmt: skip
    """Start ``torchrun --standalone`` with ``nproc`` processes on this module (one node).

    Args:
        nproc: ``devices + 1``.
        args: the entry point's arguments, e.g. ``["--config", "job.json", "--out", "runs/x"]``.
        timeout: seconds before the run is killed (``subprocess.TimeoutExpired``).
        check: raise ``subprocess.CalledProcessError`` on a non-zero exit.

    Returns:
        The completed process (stdout/stderr inherited).
    """
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={nproc}", "-m", "edgelam.training.looped_tp.run", *args]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, env=env, timeout=timeout, check=check)


def main(argv: Sequence[str] | None = None) -> int:
    """The torchrun entry point; returns the exit code (2 for a bad config)."""
    parser = argparse.ArgumentParser(
        prog="torchrun ... -m edgelam.training.looped_tp.run",
        description="Looped tensor-parallel training: rank 0 = edge server, rank k+1 = device k.",
    )
    parser.add_argument("--config", required=True, help="LoopedTPConfig file (.toml/.yaml/.json)")
    parser.add_argument("--out", required=True, help="run directory (written by rank 0)")
    parser.add_argument(
        "--overwrite", action="store_true", help="start over in a directory holding a run"
    )
    parser.add_argument("--no-resume", action="store_true", help="do not resume a run in --out")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    try:
        cfg = build_config(LoopedTPConfig, args.config)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    dist.init_process_group("gloo")
    try:
        link = TorchDistTPLink(getattr(torch, cfg.dtype))
        train_looped_tp(cfg, args.out, link, resume=not args.no_resume, overwrite=args.overwrite,
                        progress=False)  # fmt: skip
        # leave together: a rank that tears down gloo while the server still exports aborts
        # ("terminate called without an active exception")
        dist.barrier()
    except (ConfigError, FileExistsError) as err:
        print(f"error (rank {dist.get_rank()}): {err}", file=sys.stderr)
        return 2
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
