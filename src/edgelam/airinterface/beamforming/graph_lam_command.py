"""``edgelam beamform train``: train a graph-LAM beamformer (registered by ``cli.py``).

The config is resolved from the :class:`~edgelam.airinterface.beamforming.graph_lam.GraphLAMConfig`
defaults, then a ``--config`` file (TOML/YAML/JSON; the architecture in a ``[model]`` table,
its backbone in ``[model.backbone]``), then flags. Re-running the same command resumes an
interrupted run from its checkpoint; a finished run is reported as it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import rich_click as click

from edgelam.airinterface.beamforming.graph_lam import GraphLAMConfig
from edgelam.cli_config import config_from_cli, config_options

__all__ = ["beamform_train_command"]


@click.command("train")
@config_options(GraphLAMConfig)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("runs/beamform-graph-lam"),
    show_default=True,
    help="run directory (config.json, metrics.jsonl, summary.json, checkpoint/, plots)",
)
@click.option("--overwrite", is_flag=True, help="start over in a directory that holds a run")
@click.option("--no-resume", is_flag=True, help="do not resume (with --overwrite: start over)")
@click.option("--quiet", "-q", is_flag=True, help="no progress bar")
def beamform_train_command(
    out: Path, overwrite: bool, no_resume: bool, quiet: bool, **kwargs: Any
) -> None:
    """Train a graph-LAM beamformer on the negative sum rate; evaluate it against WMMSE.

    GNN precoder over the user-antenna graph -> user tokens -> frozen GPT-2 (the shipped
    edgelam-wireless backbone) with LoRA -> per-edge beam weights -> exact power projection.
    Trains on random sizes (users x antennas), evaluates seen and unseen sizes as % of the
    WMMSE sum rate; the checkpoint serves `edgelam beamform eval --method graph-lam
    --checkpoint DIR`.

    Example: edgelam beamform train --config configs/beamform_quick.toml --out runs/bf
    """
    from edgelam.airinterface.beamforming.graph_lam import train_graph_lam
    from edgelam.runs import read_summary

    cfg = config_from_cli(GraphLAMConfig, kwargs, base=GraphLAMConfig())
    path = train_graph_lam(cfg, out, resume=not no_resume, overwrite=overwrite, progress=not quiet)
    summary = read_summary(path)
    model = summary.get("model", {})
    lines = [
        f"{summary['steps']} steps in {summary.get('train_seconds', 0):.0f} s; "
        f"{model.get('trainable_params', 0):,} of {model.get('total_params', 0):,} parameters "
        f"trained; backbone {model.get('backbone', '?')}"
    ]
    for tag in ("seen", "unseen"):
        if f"{tag}_pct_of_wmmse" in summary:
            lines.append(
                f"{tag} sizes: {summary[f'{tag}_pct_of_wmmse']:.1f}% of WMMSE sum rate "
                f"(RZF {summary[f'{tag}_rzf_pct_of_wmmse']:.1f}%)"
            )
    for snr, row in (summary.get("pilots") or {}).items():
        lines.append(
            f"pilot SNR {float(snr):g} dB: graph-LAM {row['graph_lam']:.1f}%, LMMSE+WMMSE "
            f"{row['lmmse_wmmse']:.1f}%, LS+WMMSE {row['ls_wmmse']:.1f}% of perfect-CSI WMMSE"
        )
    lines.append(f"checkpoint: {path / summary['checkpoint']}")
    click.echo("\n".join(lines))
