"""``edgelam train looped-tp``: the click command (``cli.py`` registers it under ``train``).

Starts from a profile (``quick``: a few minutes on 2 CPU cores; ``tiny``: seconds), then a
``--config`` file (TOML/YAML/JSON; nested ``[model]``, ``[corpus]``, ``[network]`` sections),
then flags. ``--runtime torchrun`` runs the same job with one process per role (the server and
each device) on this machine; the default runs every role in this process. Re-running the same
command resumes an interrupted run from its last checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import rich_click as click

from edgelam.cli_config import config_from_cli, config_options
from edgelam.training.looped_tp.train import PROFILES, LoopedTPConfig

__all__ = ["looped_tp_command"]


@click.command("looped-tp")
@click.option("--profile", type=click.Choice(sorted(PROFILES)), default="quick", show_default=True,
              help="quick: a few minutes on 2 CPU cores; tiny: seconds, for tests")  # fmt: skip
@config_options(LoopedTPConfig)
@click.option(
    "--loops", type=int, default=None, help="L, loop iterations of the shared block (model.loops)"
)
@click.option("--runtime", type=click.Choice(["inprocess", "torchrun"]), default="inprocess",
              show_default=True, help="inprocess: every role in this process; torchrun: one "
              "process per role (gloo on CPU)")  # fmt: skip
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="run directory [default: runs/looped-tp-<profile>]")  # fmt: skip
@click.option("--overwrite", is_flag=True, help="start over in a directory that holds a run")
@click.option("--no-resume", is_flag=True, help="do not resume (with --overwrite: start over)")
@click.option("--quiet", "-q", is_flag=True, help="no progress bar")
def looped_tp_command(profile: str, loops: int | None, runtime: str, out: Path | None,
                      overwrite: bool, no_resume: bool, quiet: bool, **kwargs: Any) -> None:  # fmt: skip
    """Full-parameter training of a looped (ALBERT-style) LAM, tensor-parallel over K devices.

    Each device holds a slice of the ONE shared block (heads, FFN and embedding columns); the
    edge server merges partial sums and runs the layer norms, residuals and head. The
    partition is optimal (latency under memory, with the uplink band), equal or min-storage.
    Writes config.json, metrics.jsonl, summary.json, model.safetensors and model_card.json.

    Example: edgelam train looped-tp --devices 3 --loops 6 --partition optimal --out runs/ltp
    """
    from edgelam.runs import read_summary
    from edgelam.training.looped_tp.train import looped_tp_profile, train_looped_tp

    base = looped_tp_profile(profile)
    if loops is not None:
        base = dataclasses.replace(base, model=dataclasses.replace(base.model, loops=loops))
    cfg = config_from_cli(LoopedTPConfig, kwargs, base=base)
    out = out or Path(f"runs/looped-tp-{profile}")
    if runtime == "torchrun":
        from edgelam.config import to_dict
        from edgelam.training.looped_tp.run import launch

        out.mkdir(parents=True, exist_ok=True)
        job = out / "job.json"
        job.write_text(json.dumps(to_dict(cfg), indent=2))
        flags = [*(["--overwrite"] if overwrite else []), *(["--no-resume"] if no_resume else [])]
        result = launch(
            cfg.devices + 1, ["--config", str(job), "--out", str(out), *flags], check=False
        )
        if result.returncode:
            raise click.ClickException(f"torchrun exited with status {result.returncode}")
    else:
        train_looped_tp(cfg, out, resume=not no_resume, overwrite=overwrite, progress=not quiet)
    s = read_summary(out)
    lat = s["simulated_latency"]
    schemes = ", ".join(f"{k} {v['latency_s'] * 1e3:.2f} ms" if "latency_s" in v else f"{k}: infeasible"
                        for k, v in lat["by_scheme_mean_state"].items())  # fmt: skip
    mem = s["memory"]
    click.echo(
        f"{s['steps']} steps ({s['runtime']}, {s['processes']} process(es), {s['wall_seconds']:.1f} s): "
        f"loss {s['first_loss']:.4f} -> {s['final_loss_mean_last']:.4f}, val {s['final_val_loss']}\n"
        f"partition {cfg.partition}: heads {s['plan']['partition']['heads']}, FFN columns "
        f"{s['plan']['partition']['ffn_columns']}, embedding columns {s['plan']['partition']['embed_columns']}\n"
        f"simulated latency per iteration: {schemes}\n"
        f"largest device memory / unshared unsplit model: {mem['max_device_over_unshared']:.3f}\n"
        f"{out / s['weights']} (sha256 {s['sha256'][:16]}...), card {out / 'model_card.json'}"
    )
