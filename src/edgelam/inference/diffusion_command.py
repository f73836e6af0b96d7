"""``edgelam deploy train-diffusion``: label instances, train the diffusion generator, export it.

Registered on the ``deploy`` group by ``cli.py``. Config priority, lowest first: the
:class:`~edgelam.inference.diffusion_train.DiffusionTrainConfig` defaults, a ``--config`` file
(TOML/YAML/JSON; a nested ``[model]`` section sets the denoiser), then flags. Re-running the same
command resumes an interrupted run; labelled instances are never solved twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import rich_click as click

from edgelam.cli_config import command_line, config_from_cli, config_options
from edgelam.inference.diffusion_train import DiffusionTrainConfig

__all__ = ["train_diffusion_command"]


@click.command("train-diffusion")
@config_options(DiffusionTrainConfig)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="run directory")
@click.option("--overwrite", is_flag=True, help="start over in a directory that holds a run")
@click.option("--quiet", "-q", is_flag=True, help="no progress bars")
def train_diffusion_command(out: Path, overwrite: bool, quiet: bool, **kwargs: Any) -> None:
    """Train the diffusion deployment generator on solver-labelled instances.

    Labels --instances random instances of --nodes-min..--nodes-max nodes with CP-SAT
    (--label-time-limit seconds each; cached in the dataset directory), trains the denoiser
    for --steps steps and writes config.json, metrics.jsonl, summary.json, loss.png and
    checkpoint/ (model.safetensors, config.json, training.json) into --out. Use the
    checkpoint with: edgelam deploy solve --method diffusion.

    Example: edgelam deploy train-diffusion --instances 160 --label-time-limit 4 --out runs/diffusion
    """
    from edgelam.inference.diffusion_train import train_diffusion
    from edgelam.runs import read_summary

    command = command_line(
        ["edgelam", "deploy", "train-diffusion"], {**kwargs, "out": out, "overwrite": overwrite}
    )
    cfg = config_from_cli(DiffusionTrainConfig, kwargs)
    ckpt = train_diffusion(cfg, out, overwrite=overwrite, progress=not quiet, command=command)
    summary = read_summary(out)
    data, train = summary["dataset"], summary["training"]
    ev = train["final_eval"] or {}
    ratio = ev.get("objective_ratio")
    status = ", ".join(f"{k} {v}" for k, v in sorted(data["label_status"].items()))
    click.echo(
        f"dataset: {data['usable']}/{data['instances']} usable instances ({status}), "
        f"labelling {data['labelling_seconds']:.0f} s\n"
        f"training: {train['steps']} steps in {train['seconds']:.0f} s, final loss "
        f"{train['final_loss']:.4f}; validation: objective "
        + (f"{ratio:.3f} x label" if ratio is not None else "n/a")
        + f", feasible {ev.get('feasible_rate')}\n"
        f"checkpoint: {ckpt} ({summary['parameters']} parameters, "
        f"{summary['weights_bytes'] / 1e6:.2f} MB)"
    )
