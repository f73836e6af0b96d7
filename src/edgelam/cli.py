"""The ``edgelam`` command line.

User errors (bad config, missing or corrupted files, existing outputs) are printed as one line
naming the problem, without a traceback, and the command exits with status 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import rich_click as click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgelam import __version__
from edgelam.cli_config import config_from_cli, config_options
from edgelam.config import ConfigError

console = Console()
err_console = Console(stderr=True)


class Group(click.RichGroup):
    """A command group that prints known user errors as one line and exits with status 2."""

    def invoke(self, ctx: click.Context) -> Any:
        from edgelam.channels.store import CSIFileError
        from edgelam.models.pretrained import CheckpointError

        try:
            return super().invoke(ctx)
        except (
            ConfigError,
            CSIFileError,
            CheckpointError,
            FileExistsError,
            FileNotFoundError,
        ) as err:
            err_console.print(
                f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True
            )
            ctx.exit(2)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="edgelam")
def cli() -> None:
    """edgelam: edge large AI models over simulated 6G radio links.

    Train, serve and apply large transformer models split across edge devices and
    servers, with every transmitted bit counted over 3GPP channels.
    """


@cli.group(cls=Group)
def channels() -> None:
    """3GPP TR 38.901 CSI datasets (Sionna): generate, inspect, demo."""


from edgelam.channels.config import ChannelConfig  # noqa: E402


@channels.command("generate")
@config_options(ChannelConfig)
@click.option(
    "--out", "out", type=click.Path(path_type=Path), required=True, help="output HDF5 file"
)
@click.option("--overwrite", is_flag=True, help="replace an existing complete file at --out")
@click.option("--no-resume", is_flag=True, help="start over instead of resuming an unfinished file")
@click.option("--quiet", "-q", is_flag=True, help="no progress bar")
def channels_generate(
    out: Path, overwrite: bool, no_resume: bool, quiet: bool, **kwargs: Any
) -> None:
    """Generate a CSI dataset (HDF5) from a 38.901 model; resumes if interrupted.

    Example: edgelam channels generate --model cdl-c --samples 2000 --speed-kmh 10 100
    --seed 0 --out data/cdl_c.h5
    """
    import time

    from edgelam.channels.store import generate_dataset

    cfg = config_from_cli(ChannelConfig, kwargs)
    start = time.perf_counter()
    file = generate_dataset(cfg, out, overwrite=overwrite, resume=not no_resume, progress=not quiet)
    seconds = time.perf_counter() - start
    console.print(
        f"wrote {out}: {len(file)} samples x {cfg.num_slots} slots x {cfg.num_subcarriers} "
        f"subcarriers x {cfg.num_bs_antennas} antennas ({cfg.model}, {cfg.duplex}) "
        f"in {seconds:.1f} s",
        highlight=False,
    )


@channels.command("info")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="print machine-readable JSON")
def channels_info(file: Path, as_json: bool) -> None:
    """Shape, config, speed histogram and mean power of a CSI dataset."""
    from edgelam.channels.info import dataset_info
    from edgelam.channels.store import CSIFile

    info = dataset_info(CSIFile.open(file))
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    table = Table(title=str(file), show_header=False)
    cfg = info["config"]
    for band, shape in info["shape"].items():
        table.add_row(f"{band} shape", f"{shape} ({', '.join(info['dims'])}) complex64")
    table.add_row(
        "model", f"{cfg['model']} ({info['duplex']}), LOS fraction {info['los_fraction']:.2f}"
    )
    table.add_row(
        "grid",
        f"{cfg['num_subcarriers']} x {cfg['subcarrier_spacing_hz'] / 1e3:g} kHz at "
        f"{cfg['carrier_frequency_hz'] / 1e9:g} GHz, slot {cfg['csi_period_s'] * 1e3:g} ms, "
        f"{cfg['history_slots']} -> {cfg['future_slots']} slots",
    )
    for band, p in info["mean_power"].items():
        table.add_row(f"mean power {band}", f"{p:.4g} ({info['mean_power_db'][band]:.2f} dB)")
    table.add_row("norm mean / std", f"{info['norm_mean']:.4g} / {info['norm_std']:.4g}")
    table.add_row("seed", str(cfg["seed"]))
    table.add_row("size", f"{info['size_bytes'] / 2**20:.1f} MiB")
    table.add_row("versions", ", ".join(f"{k} {v}" for k, v in info["versions"].items()))
    console.print(table)
    hist = info["speed_kmh"]["histogram"]
    peak = max(hist["counts"]) or 1
    console.print("speed histogram \\[km/h]:")
    for lo, hi, c in zip(hist["edges"][:-1], hist["edges"][1:], hist["counts"], strict=True):
        console.print(f"  {lo:6.1f}-{hi:6.1f} {'#' * round(40 * c / peak)} {c}", highlight=False)


from edgelam.experiments.channels_demo import ChannelsDemoConfig  # noqa: E402


@channels.command("demo")
@config_options(ChannelsDemoConfig)
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/channels-demo"),
              show_default=True, help="run directory")  # fmt: skip
@click.option("--overwrite", is_flag=True, help="replace an existing run directory")
@click.option("--quiet", "-q", is_flag=True, help="no progress bars")
def channels_demo(out: Path, overwrite: bool, quiet: bool, **kwargs: Any) -> None:
    """Generate small CDL/UMa/TDL datasets and check their Doppler physics against Clarke's J0.

    Writes a run directory (config.json, metrics.jsonl, summary.json, data/*.h5, plots).
    """
    from edgelam.experiments.channels_demo import run_channels_demo
    from edgelam.runs import read_summary

    cfg = config_from_cli(ChannelsDemoConfig, kwargs)
    path = run_channels_demo(cfg, out, overwrite=overwrite, progress=not quiet)
    table = Table(title=f"channel demo: {path}")
    table.add_column("model")
    table.add_column("samples/s", justify="right")
    table.add_column("mean |h|^2", justify="right")
    speeds = [f"{s:g}" for s in cfg.check_speeds_kmh]
    for s in speeds:
        table.add_column(f"J0 max err @{s} km/h", justify="right")
    summary = read_summary(path)["models"]
    for model in cfg.models:
        e = summary[model]
        geo = e.get("geometry_max_abs_error", {})
        errs = [
            f"{e['j0_max_abs_error'][s]:.3f}" + (f" ({geo[s]:.3f}*)" if s in geo else "")
            for s in speeds
        ]
        table.add_row(model, f"{e['samples_per_s']:.0f}", f"{e['mean_power']:.3f}", *errs)
    console.print(table)
    if any("geometry_max_abs_error" in e for e in summary.values()):
        console.print("* CDL: error against Clarke with the CDL's own ray elevations")
    console.print(f"plots: {path}/autocorrelation.png, {path}/csi_examples.png")


from edgelam.experiments.casestudy import CaseStudyConfig  # noqa: E402


@cli.command("casestudy")
@click.option("--profile", type=click.Choice(["quick", "paper", "tiny"]), default="quick",
              show_default=True,
              help="quick: <= 10 min on 2 CPU cores; paper: 6-layer GPT-2 at paper-like sizes "
                   "(GPU); tiny: seconds, for tests")  # fmt: skip
@config_options(CaseStudyConfig)
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="run directory [default: runs/casestudy-<profile>]")  # fmt: skip
@click.option("--quiet", "-q", is_flag=True, help="no progress bars")
def casestudy(profile: str, out: Path | None, quiet: bool, **kwargs: Any) -> None:
    """The paper's case study (Fig. 4): federated LAM channel prediction vs. local baselines.

    Starts from the chosen profile; a --config file (TOML/YAML/JSON, nested sections such as
    [fed] or [llm4cp.backbone] allowed) and flags override it. Re-running the same command
    resumes an interrupted run from its last completed round.
    """
    from edgelam.experiments.casestudy import profile_config, run_casestudy
    from edgelam.runs import read_summary

    cfg = config_from_cli(CaseStudyConfig, kwargs, base=profile_config(profile))
    out = out or Path(f"runs/casestudy-{cfg.profile}")
    path = run_casestudy(cfg, out, progress=not quiet)
    click.echo((path / "results.md").read_text())
    summary = read_summary(path)
    console.print(f"wall time {summary['wall_seconds']:.0f} s; plots: {path}/fig4.png, "
                  f"{path}/nmse_vs_speed.png", highlight=False)  # fmt: skip


from edgelam.pretrain.command import pretrain_command  # noqa: E402

cli.add_command(pretrain_command)


@cli.group(cls=Group)
def train() -> None:
    """Wireless training: split FedFT vs. FedAvg over a simulated cell (bits, latency, energy)."""


from edgelam.experiments.wireless_training_command import (  # noqa: E402
    compare_command,
    fedavg_command,
    launch_command,
    split_fedft_command,
)
from edgelam.training.looped_tp.command import looped_tp_command  # noqa: E402

for _command in (split_fedft_command, fedavg_command, compare_command, looped_tp_command):
    train.add_command(_command)
cli.add_command(launch_command)

from edgelam.training.privacy.command import privacy_group  # noqa: E402

cli.add_command(privacy_group)

from edgelam.airinterface.beamforming.command import beamform_group  # noqa: E402
from edgelam.airinterface.beamforming.graph_lam_command import (  # noqa: E402
    beamform_train_command,
)

beamform_group.add_command(beamform_train_command)
cli.add_command(beamform_group)

from edgelam.inference.command import deploy_group  # noqa: E402
from edgelam.inference.diffusion_command import train_diffusion_command  # noqa: E402
from edgelam.inference.migration.command import migrate_group  # noqa: E402
from edgelam.inference.orchestration.command import orchestrate_group  # noqa: E402

deploy_group.add_command(train_diffusion_command)
cli.add_command(deploy_group)
cli.add_command(orchestrate_group)
cli.add_command(migrate_group)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    cli.main(args=argv, prog_name="edgelam")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
