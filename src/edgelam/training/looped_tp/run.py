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
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import torch

from edgelam.config import ConfigError, build_config
from edgelam.distributed.torchrun import process_group, torchrun
from edgelam.training.looped_tp.runtime import TorchDistTPLink
from edgelam.training.looped_tp.train import LoopedTPConfig, train_looped_tp

__all__ = ["launch", "main"]


def launch(nproc: int, args: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess:
    """Start ``torchrun`` on this module (:func:`~edgelam.distributed.torchrun.torchrun`;
    ``nproc = devices + 1``; ``timeout``, ``check`` and the multi-node options as there)."""
    return torchrun("edgelam.training.looped_tp.run", nproc, args, **kwargs)


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
    try:
        cfg = build_config(LoopedTPConfig, args.config)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        with process_group("gloo"):
            link = TorchDistTPLink(getattr(torch, cfg.dtype))
            train_looped_tp(cfg, args.out, link, resume=not args.no_resume,
                            overwrite=args.overwrite, progress=False)  # fmt: skip
    except (ConfigError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
