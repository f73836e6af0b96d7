"""``edgelam train ...`` and ``edgelam launch``: the click commands (registered by ``cli.py``).

Each ``train`` command starts from a profile (``quick``: 10 devices on the case study's data,
minutes per scheme on a CPU; ``tiny``: seconds), then a ``--config`` file (TOML/YAML/JSON; nested
``[split_fedft]``, ``[fedavg]``, ``[allocation]``, ``[network]``, ``[llm4cp.backbone]`` sections
allowed), then flags. Re-running a command keeps a finished run of the same config; an
unfinished one starts over (the numbers are the same: runs are deterministic).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import rich_click as click

from edgelam.cli_config import config_from_cli, config_options
from edgelam.config import ConfigError
from edgelam.experiments.wireless_training import (
    WIRELESS_PROFILES,
    WirelessTrainingConfig,
    wireless_profile,
)

__all__ = ["split_fedft_command", "fedavg_command", "compare_command", "launch_command"]


def _train_options(fn: Callable) -> Callable:
    """``--profile``, the config options, ``--out``, ``--overwrite`` and ``--quiet``."""
    fn = click.option("--quiet", "-q", is_flag=True, help="no progress bars")(fn)
    fn = click.option("--overwrite", is_flag=True,
                      help="start over even if --out holds a finished run")(fn)  # fmt: skip
    fn = click.option("--out", type=click.Path(path_type=Path), default=None,
                      help="run directory [default: runs/<command>-<profile>]")(fn)  # fmt: skip
    fn = config_options(WirelessTrainingConfig)(fn)
    return click.option(
        "--profile", type=click.Choice(sorted(WIRELESS_PROFILES)), default="quick",
        show_default=True,
        help="quick: 10 devices on the case study's quick data and model (a few CPU minutes "
             "per scheme); tiny: seconds, for tests",
    )(fn)  # fmt: skip


def _config(profile: str, scheme: str, kwargs: dict[str, Any]) -> WirelessTrainingConfig:
    """The profile, then the ``--config`` file, then flags; the command fixes the scheme."""
    base = wireless_profile(profile, scheme)
    cfg = config_from_cli(WirelessTrainingConfig, kwargs, base=base)
    if cfg.scheme != scheme:
        raise ConfigError(
            f"scheme: the config file says {cfg.scheme!r} but this command trains {scheme!r}"
        )
    return cfg


def _train(scheme: str, profile: str, out: Path | None, overwrite: bool, quiet: bool,
           kwargs: dict[str, Any]) -> None:  # fmt: skip
    from edgelam.experiments.wireless_training import run_wireless_training
    from edgelam.runs import read_summary

    cfg = _config(profile, scheme, kwargs)
    out = out or Path(f"runs/{scheme}-{profile}")
    s = read_summary(run_wireless_training(cfg, out, overwrite=overwrite, progress=not quiet))
    target = s["time_to_target_s"]
    click.echo(
        f"{s['scheme']} ({s['policy']}, {s['num_devices']} devices, {s['iterations']} local "
        f"iterations): final train loss {s['final_train_loss']:.4f}, validation NMSE "
        f"{s['final_val_nmse_db']:.2f} dB, test NMSE {s['test_nmse_db']:.2f} dB\n"
        f"bits: {s['uplink_bits'] / 1e6:.1f} Mbit up, {s['downlink_bits'] / 1e6:.1f} Mbit down; "
        f"simulated time {s['simulated_time_s']:.1f} s (to NMSE {s['target_loss']}: "
        f"{'not reached' if target is None else f'{target:.1f} s'}); device energy "
        f"{s['energy_j']:.1f} J; device memory {s['device_memory_bytes'] / 1e6:.1f} MB\n"
        + (f"privacy: epsilon = {float(s['epsilon']):.4g} at delta = {s['delta']:g} "
           "(the largest device's)\n" if s.get("epsilon") is not None else "")
        + f"run directory: {out}"
    )  # fmt: skip


@click.command("split-fedft")
@_train_options
def split_fedft_command(
    profile: str, out: Path | None, overwrite: bool, quiet: bool, **kwargs: Any
) -> None:
    """Split federated fine-tuning with LoRA over the simulated cell.

    Devices hold the CSI embedding and head, the edge server the LoRA-adapted backbone; every
    exchanged tensor is charged to its device's link; the uplink band is split by the
    [allocation] policy. Writes config.json, metrics.jsonl, summary.json into --out.

    Example: edgelam train split-fedft --config configs/split_fedft_quick.toml --out runs/split
    """
    _train("split-fedft", profile, out, overwrite, quiet, kwargs)


@click.command("fedavg")
@click.option("--variant", type=click.Choice(["full", "lora"]), default="lora",
              show_default=True,
              help="full: every parameter trains on every device; lora: frozen backbone + LoRA "
                   "on every device")  # fmt: skip
@_train_options
def fedavg_command(
    variant: str, profile: str, out: Path | None, overwrite: bool, quiet: bool, **kwargs: Any
) -> None:
    """FedAvg baseline over the same simulated cell (unicast model downlink).

    Example: edgelam train fedavg --variant full --config configs/split_fedft_quick.toml
    --out runs/fedavg-full
    """
    _train(f"fedavg-{variant}", profile, out, overwrite, quiet, kwargs)


@click.command("compare")
@_train_options
def compare_command(
    profile: str, out: Path | None, overwrite: bool, quiet: bool, **kwargs: Any
) -> None:
    """Split FedFT (equal / latency-optimal / Lyapunov) vs. FedAvg-full vs. FedAvg-LoRA.

    Runs every scheme into --out/<name>/, then writes comparison.json, comparison.md,
    loss_vs_time.png and loss_vs_bits.png from the run files.
    """
    from edgelam.experiments.wireless_training_report import run_comparison

    cfg = config_from_cli(WirelessTrainingConfig, kwargs, base=wireless_profile(profile))
    out = out or Path(f"runs/compare-{profile}")
    path = run_comparison(cfg, out, overwrite=overwrite, progress=not quiet)
    click.echo((path / "comparison.md").read_text())
    click.echo(f"plots: {path / 'loss_vs_time.png'}, {path / 'loss_vs_bits.png'}")


@click.command("launch")
@click.option("--nproc", type=int, required=True,
              help="processes on this node (one node: num_devices + 1)")  # fmt: skip
@click.option("--nnodes", type=int, default=1, show_default=True, help="number of nodes")
@click.option("--node-rank", type=int, default=0, show_default=True, help="this node's rank")
@click.option("--rdzv-endpoint", default=None,
              help="host:port of node 0, reachable from every node (needed for --nnodes > 1)")  # fmt: skip
@click.option("--config", "config_file", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="split-FedFT job (SplitFedFTJob: model, num_devices, [split_fedft], ...)")  # fmt: skip
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="run directory (written by rank 0, the edge server)")  # fmt: skip
@click.option("--overwrite", is_flag=True, help="replace a run already in --out")
@click.option("--timeout", type=float, default=None, help="kill the job after this many seconds")
def launch_command(nproc: int, nnodes: int, node_rank: int, rdzv_endpoint: str | None,
                   config_file: Path, out: Path, overwrite: bool, timeout: float | None) -> None:  # fmt: skip
    """Run a split-FedFT job on torch.distributed: rank 0 = edge server, rank k+1 = device k.

    Starts torchrun (gloo on CPU, nccl when every local rank has a GPU). One node:
    --nproc = num_devices + 1. Several nodes: run the same command on each node with its
    --node-rank and node 0's --rdzv-endpoint; nnodes x nproc must equal num_devices + 1.

    Example: edgelam launch --nproc 3 --config job.toml --out runs/split-dist
    """
    import subprocess

    from edgelam.config import build_config
    from edgelam.distributed.dist_transport import SplitFedFTJob, launch

    job = build_config(SplitFedFTJob, config_file)
    if min(nproc, nnodes) < 1 or not 0 <= node_rank < nnodes:
        raise ConfigError(f"nproc/nnodes/node-rank: need >= 1 and 0 <= node_rank < nnodes, got "
                          f"{nproc}/{nnodes}/{node_rank}")  # fmt: skip
    if nproc * nnodes != job.num_devices + 1:
        raise ConfigError(
            f"nproc: {nnodes} node(s) x {nproc} processes != num_devices + 1 = "
            f"{job.num_devices + 1} (one process for the server, one per device)"
        )
    if nnodes > 1 and not rdzv_endpoint:
        raise ConfigError("rdzv-endpoint: host:port of node 0 is needed with --nnodes > 1")
    if node_rank == 0 and (out / "config.json").exists() and not overwrite:
        raise FileExistsError(f"{out} already holds a run; pass --overwrite to replace it")
    args = ["--config", str(config_file), "--out", str(out)] + (["--overwrite"] * overwrite)
    try:
        done = launch(nproc, args, nnodes=nnodes, node_rank=node_rank,
                      rdzv_endpoint=rdzv_endpoint, timeout=timeout, check=False)  # fmt: skip
        failure = f"torchrun exited with status {done.returncode} (its output is above)"
    except subprocess.TimeoutExpired:
        done, failure = None, f"torchrun was killed after --timeout {timeout} s"
    if done is None or done.returncode:
        click.echo(f"error: {failure}", err=True)
        raise click.exceptions.Exit(2)
    if node_rank == 0:
        from edgelam.runs import read_summary

        s = read_summary(out)
        click.echo(f"{s['processes']} processes ({s['runtime']}): final loss "
                   f"{s['final_loss']:.4f}, {s['uplink_bits'] / 1e6:.2f} Mbit up, "
                   f"{s['downlink_bits'] / 1e6:.2f} Mbit down; run directory {out}")  # fmt: skip
