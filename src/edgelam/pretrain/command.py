"""``edgelam pretrain``: the click command (registered on the ``edgelam`` group by ``cli.py``).

Starts from a profile (``default``: the shipped backbone; ``tiny``: seconds), then a
``--config`` file (TOML/YAML/JSON; nested ``[corpus]`` / ``[model.backbone]`` sections allowed),
then flags. Re-running the same command resumes an interrupted run from its last checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import rich_click as click

from edgelam.cli_config import command_line, config_from_cli, config_options
from edgelam.pretrain.train import PRETRAIN_PROFILES, PretrainConfig

__all__ = ["pretrain_command"]


@click.command("pretrain")
@click.option(
    "--profile",
    type=click.Choice(sorted(PRETRAIN_PROFILES)),
    default="default",
    show_default=True,
    help="default: the shipped edgelam-wireless backbone (CPU, ~15 min at 2000 steps); "
    "paper: GPU scale (6 x 768 GPT-2, 45 configs x 512 users); tiny: seconds, for tests",
)
@config_options(PretrainConfig)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="run directory [default: runs/pretrain-<profile>]",
)
@click.option("--overwrite", is_flag=True, help="start over in a directory that holds a run")
@click.option("--no-resume", is_flag=True, help="do not resume (with --overwrite: start over)")
@click.option("--quiet", "-q", is_flag=True, help="no progress bars")
def pretrain_command(
    profile: str, out: Path | None, overwrite: bool, no_resume: bool, quiet: bool, **kwargs: Any
) -> None:
    """Pre-train the wireless foundation backbone on a 38.901 corpus; export it with a card.

    Writes config.json, metrics.jsonl, summary.json, checkpoints/, backbone.safetensors and
    model_card.json into the run directory.

    Example: edgelam pretrain --steps 2000 --out runs/pretrain
    """
    from edgelam.pretrain.train import pretrain, pretrain_profile
    from edgelam.runs import read_summary

    command = command_line(["edgelam", "pretrain"], {"profile": profile, **kwargs, "out": out})
    cfg = config_from_cli(PretrainConfig, kwargs, base=pretrain_profile(profile))
    out = out or Path(f"runs/pretrain-{profile}")
    path = pretrain(
        cfg, out, resume=not no_resume, overwrite=overwrite, progress=not quiet, command=command
    )
    summary = read_summary(path)
    ev = summary.get("evaluation") or {}
    click.echo(
        f"{summary['steps']} steps, final loss {summary['final_losses']['loss']:.4f}; "
        f"validation NMSE {ev.get('val_nmse_db', float('nan')):.2f} dB, held-out "
        f"{ev.get('held_out_nmse_db', float('nan')):.2f} dB (last slot "
        f"{ev.get('held_out_last_slot_nmse_db', float('nan')):.2f} dB)\n"
        f"{path / summary['weights']} ({summary['weights_bytes'] / 1e6:.1f} MB, sha256 "
        f"{summary['sha256'][:16]}...), card {path / 'model_card.json'}"
    )
