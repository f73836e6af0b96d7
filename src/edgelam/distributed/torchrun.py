"""Shared plumbing of the ``torch.distributed`` entry points (split FedFT, looped TP).

:func:`torchrun` starts ``python -m torch.distributed.run`` on an entry-point module, one node
(``--standalone``) or several (rendezvous at node 0); :func:`process_group` is the worker side:
one torch thread, the process group for the lifetime of the run, and a final barrier so that no
rank tears gloo down while another (the server, exporting) still talks to it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.distributed as dist

__all__ = ["process_group", "torchrun"]


def torchrun(
    module: str,
    nproc: int,
    args: Sequence[str],
    *,
    nnodes: int = 1,
    node_rank: int = 0,
    rdzv_endpoint: str | None = None,
    timeout: float | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess:
    """Start ``torchrun`` (``python -m torch.distributed.run``) on ``module``.

    Args:
        module: the entry point, run with ``-m``.
        nproc: processes on this node.
        args: the entry point's arguments, e.g. ``["--config", "job.toml", "--out", "runs/x"]``.
        nnodes, node_rank, rdzv_endpoint: multi-node rendezvous (``host:port`` of node 0);
            one node without an endpoint uses ``--standalone`` (a free local port).
        timeout: seconds before the run is killed (``subprocess.TimeoutExpired``).
        check: raise ``subprocess.CalledProcessError`` on a non-zero exit.

    Returns:
        The completed process (stdout/stderr are inherited, not captured).
    """
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}"]
    if nnodes == 1 and rdzv_endpoint is None:
        cmd.append("--standalone")
    else:
        if rdzv_endpoint is None:
            raise ValueError("launch: rdzv_endpoint (host:port of node 0) is needed for nnodes > 1")
        cmd += [
            f"--nnodes={nnodes}",
            f"--node-rank={node_rank}",
            f"--rdzv-endpoint={rdzv_endpoint}",
        ]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return subprocess.run([*cmd, "-m", module, *args], env=env, timeout=timeout, check=check)


@contextmanager
def process_group(backend: str = "gloo") -> Iterator[None]:
    """One torch thread, ``init_process_group(backend)``, and on a normal exit a barrier before
    ``destroy_process_group`` (a rank that tears gloo down while the server still exports makes
    it abort: "terminate called without an active exception")."""
    torch.set_num_threads(1)
    dist.init_process_group(backend)
    try:
        yield
        dist.barrier()
    finally:
        dist.destroy_process_group()
