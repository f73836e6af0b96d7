"""``edgelam beamform eval``: sum rate and solve time of a precoder on a channel set.

``cli.py`` registers :data:`beamform_group` on the ``edgelam`` group; invalid values raise a
:class:`~edgelam.config.ConfigError` naming the option (and a bad ``--channels`` file a
:class:`~edgelam.airinterface.beamforming.channels.ChannelFileError`), which the ``edgelam``
group prints as one line (exit status 2).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import rich_click as click

from edgelam.config import ConfigError

__all__ = ["beamform_group", "evaluate"]

EVAL_METHODS = ("wmmse", "zf", "rzf", "mrt", "graph-lam")
DEFAULT_USERS, DEFAULT_ANTENNAS, DEFAULT_BATCH = 4, 8, 256


def _channels(
    channels: Path | None,
    channel_model: str | None,
    users: int | None,
    antennas: int | None,
    batch: int | None,
    seed: int,
):
    """The channel set ``[batch, K, M]`` and a description of where it came from."""
    from edgelam.airinterface.beamforming.channels import channel_set, load_channels_npy

    if channels is None:
        users = DEFAULT_USERS if users is None else users
        antennas = DEFAULT_ANTENNAS if antennas is None else antennas
        batch = DEFAULT_BATCH if batch is None else batch
        for name, value in (("--users", users), ("--antennas", antennas), ("--batch", batch)):
            if value < 1:
                raise ConfigError(f"{name}: must be >= 1, got {value}")
        model = channel_model or "rayleigh"
        return channel_set(model, batch, users, antennas, seed=seed), model
    if channel_model is not None:
        raise ConfigError("--channel-model: not allowed with --channels (the file is the set)")
    H = load_channels_npy(channels)
    size, k, m = H.shape
    for flag, given, actual in (("--users", users, k), ("--antennas", antennas, m)):
        if given is not None and given != actual:
            raise ConfigError(f"{flag}: {given} conflicts with {channels} ([batch, K, M] = "
                              f"{list(H.shape)}); leave it out or match the file")  # fmt: skip
    if batch is not None:
        if not 1 <= batch <= size:
            raise ConfigError(f"--batch: must be in 1..{size} (the file's size), got {batch}")
        H = H[:batch]
    return H, str(channels)


def evaluate(
    method: str,
    H,
    *,
    power: float = 1.0,
    snr_db: float = 10.0,
    checkpoint: Path | None = None,
    pilot_snr_db: float | None = None,
    estimator: str = "lmmse",
    seed: int = 0,
) -> dict[str, Any]:
    """Solve ``method`` on channels ``H`` ``[batch, K, M]`` and report its sum rate and timing.

    With ``pilot_snr_db`` the precoder is computed from an uplink pilot estimate of ``H``
    (DFT pilots of length ``K``, LS or LMMSE with an i.i.d. unit prior) and the rate is
    measured on the true ``H``.

    Returns:
        a JSON-ready dict: ``sum_rate_bps_hz`` (batch mean), ``sum_rate_std``, ``time_s`` (solve
        wall time for the whole batch), ``power_used`` (mean ``||W||_F^2``), the setting, and for
        WMMSE ``iterations_mean`` / ``iterations_max`` / ``converged_fraction``.
    """
    import torch

    from edgelam.airinterface.beamforming.baselines import solve
    from edgelam.airinterface.beamforming.pilots import estimate_channels
    from edgelam.airinterface.beamforming.problem import sum_rate

    if method not in EVAL_METHODS:
        raise ConfigError(f"--method: {method!r} is not one of {list(EVAL_METHODS)}")
    if not power > 0 or not math.isfinite(power):
        raise ConfigError(f"--power: must be finite and > 0, got {power}")
    if not math.isfinite(snr_db):
        raise ConfigError(f"--snr-db: must be finite, got {snr_db}")
    noise_power = power / 10 ** (snr_db / 10)
    H_bs = H
    if pilot_snr_db is not None:
        gen = torch.Generator().manual_seed(seed + 1)
        H_bs = estimate_channels(H, pilot_snr_db, method=estimator, generator=gen)
    extra: dict[str, Any] = {}
    if method == "graph-lam":
        if checkpoint is None:
            raise ConfigError("--checkpoint: required by --method graph-lam (a trained graph-LAM)")
        from edgelam.airinterface.beamforming.graph_lam import load_precoder

        precoder = load_precoder(checkpoint)
        start = time.perf_counter()
        with torch.no_grad():
            W = precoder(H_bs, power, noise_power)
        seconds = time.perf_counter() - start
    else:
        if checkpoint is not None:
            raise ConfigError(f"--checkpoint: only used by --method graph-lam, not {method}")
        if method == "zf" and H.shape[1] > H.shape[2]:
            raise ConfigError(f"--method zf: needs users <= antennas, got {H.shape[1]} > "
                              f"{H.shape[2]}")  # fmt: skip
        options = {"return_info": True} if method == "wmmse" else {}
        start = time.perf_counter()
        W = solve(method, H_bs, power, noise_power, **options)
        seconds = time.perf_counter() - start
        if method == "wmmse":
            W, info = W
            extra = {
                "iterations_mean": float(info.iterations.double().mean()),
                "iterations_max": int(info.iterations.max()),
                "converged_fraction": float(info.converged.double().mean()),
            }
    rates = sum_rate(H, W.to(H.dtype), noise_power).double()
    csi = "perfect"
    if pilot_snr_db is not None:
        csi = f"{estimator.upper()} estimate, pilot SNR {pilot_snr_db:g} dB"
    batch, users, antennas = H.shape
    return {
        "method": method,
        "users": users,
        "antennas": antennas,
        "snr_db": snr_db,
        "power": power,
        "noise_power": noise_power,
        "batch": batch,
        "sum_rate_bps_hz": float(rates.mean()),
        "sum_rate_std": float(rates.std()) if batch > 1 else 0.0,
        "time_s": seconds,
        "time_per_sample_ms": 1e3 * seconds / batch,
        "power_used": float(W.abs().square().sum((-2, -1)).double().mean()),
        "csi": csi,
        **extra,
    }


@click.group("beamform")
def beamform_group() -> None:
    """Multi-user MISO downlink beamforming: WMMSE/ZF/RZF/MRT baselines and the graph-LAM.

    See docs/beamforming.md and docs/graph_lam.md.
    """


@beamform_group.command("eval")
@click.option(
    "--users",
    "-K",
    type=int,
    default=None,
    help=f"K users [default: {DEFAULT_USERS}, or from --channels]",
)
@click.option(
    "--antennas",
    "-M",
    type=int,
    default=None,
    help=f"M BS antennas [default: {DEFAULT_ANTENNAS}, or from --channels]",
)
@click.option(
    "--snr-db",
    type=float,
    default=10.0,
    show_default=True,
    help="SNR = P / sigma^2 [dB] (per-user noise sigma^2)",
)
@click.option(
    "--method", type=click.Choice(EVAL_METHODS), default="wmmse", show_default=True, help="precoder"
)
@click.option(
    "--checkpoint",
    type=click.Path(path_type=Path),
    default=None,
    help="graph-LAM checkpoint (required by --method graph-lam)",
)
@click.option(
    "--channels",
    type=click.Path(path_type=Path),
    default=None,
    help="complex [batch, K, M] .npy channel file (instead of drawing channels)",
)
@click.option(
    "--channel-model",
    default=None,
    type=click.Choice(["rayleigh", "cdl-a", "cdl-b", "cdl-c", "cdl-d", "cdl-e", "uma", "umi"]),
    help="channels to draw [default: rayleigh]; 38.901 sets are normalised to unit "
    "average gain per user and antenna",
)
@click.option(
    "--batch",
    type=int,
    default=None,
    help=f"channel instances [default: {DEFAULT_BATCH}, or the whole --channels file]",
)
@click.option("--seed", type=int, default=0, show_default=True, help="seed of every draw")
@click.option("--power", type=float, default=1.0, show_default=True, help="P: total power")
@click.option(
    "--pilot-snr-db",
    type=float,
    default=None,
    help="precode from an uplink pilot estimate at this SNR [dB] (default: perfect CSI)",
)
@click.option(
    "--estimator",
    type=click.Choice(["ls", "lmmse"]),
    default="lmmse",
    show_default=True,
    help="channel estimator with --pilot-snr-db",
)
@click.option("--json", "as_json", is_flag=True, help="print machine-readable JSON")
def eval_command(
    users: int | None,
    antennas: int | None,
    channels: Path | None,
    channel_model: str | None,
    batch: int | None,
    seed: int,
    as_json: bool,
    **kwargs: Any,
) -> None:
    """Sum rate (bit/s/Hz) and batched solve time of a precoder on a channel set.

    Example: edgelam beamform eval --users 4 --antennas 8 --snr-db 10 --method wmmse
    --channel-model uma --batch 256 --json
    """
    H, source = _channels(channels, channel_model, users, antennas, batch, seed)
    out = evaluate(kwargs.pop("method"), H, seed=seed, **kwargs)
    out = {**out, "channels": source, "seed": seed}
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"beamforming: {out['method']} on {source}", show_header=False)
    setting = (
        f"K = {out['users']} users, M = {out['antennas']} antennas, SNR {out['snr_db']:g} dB "
        f"(P = {out['power']:g}), {out['batch']} channels"
    )
    table.add_row("setting", setting)
    table.add_row("CSI", out["csi"])
    table.add_row("sum rate", f"{out['sum_rate_bps_hz']:.3f} +/- {out['sum_rate_std']:.3f} "
                  "bit/s/Hz (mean +/- std)")  # fmt: skip
    table.add_row("solve time", f"{out['time_s'] * 1e3:.1f} ms for the batch "
                  f"({out['time_per_sample_ms']:.3f} ms per channel)")  # fmt: skip
    table.add_row("power used", f"{out['power_used']:.6g}")
    if "iterations_mean" in out:
        table.add_row("WMMSE iterations", f"{out['iterations_mean']:.1f} mean, "
                      f"{out['iterations_max']} max, {100 * out['converged_fraction']:.1f}% "
                      "converged")  # fmt: skip
    Console().print(table)
