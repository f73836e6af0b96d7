"""``edgelam orchestrate``: train a (robust) PPO router and evaluate every router.

``cli.py`` registers :data:`orchestrate_group`. User errors raise
:class:`~edgelam.config.ConfigError` (or ``FileNotFoundError``), which the ``edgelam`` group
prints as one line (exit status 2).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import rich_click as click

from edgelam.cli_config import config_from_cli, config_options
from edgelam.config import ConfigError, to_dict
from edgelam.inference.orchestration.rarl import RARLConfig

__all__ = ["orchestrate_group"]


@click.group("orchestrate")
def orchestrate_group() -> None:
    """Robust microservice orchestration: route requests to replicas (RARL vs baselines).

    See docs/orchestration.md.
    """


@orchestrate_group.command("train")
@config_options(RARLConfig)
@click.option("--budget", type=float, default=None,
              help="adversary's L1 rate budget epsilon (env.rate_budget) [default: 0.3]")  # fmt: skip
@click.option("--moves", type=int, default=None,
              help="adversary's forced moves per slot (env.move_budget) [default: 2]")  # fmt: skip
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="run directory [default: runs/orchestrate-<rarl|ppo>-n<nodes>-s<seed>]")  # fmt: skip
@click.option("--overwrite", is_flag=True, help="start over in a directory that holds a run")
@click.option("--quiet", "-q", is_flag=True, help="no progress bar")
def train_command(budget: float | None, moves: int | None, out: Path | None, overwrite: bool,
                  quiet: bool, **kwargs: Any) -> None:  # fmt: skip
    """Train a router by robust adversarial RL (or plain PPO with --no-robust).

    Writes config.json, metrics.jsonl, summary.json, training.png, instance.json,
    deployment.json and checkpoints/latest.pt (both agents); re-running the same command
    resumes an interrupted run.

    Example: edgelam orchestrate train --nodes 10 --seed 0 --iterations 100 --budget 0.3
    --out runs/rarl
    """
    from edgelam.inference.orchestration.rarl import train_rarl
    from edgelam.runs import read_summary

    cfg = config_from_cli(RARLConfig, kwargs)
    env = {k: v for k, v in (("rate_budget", budget), ("move_budget", moves)) if v is not None}
    if env:
        cfg = dataclasses.replace(cfg, env=dataclasses.replace(cfg.env, **env))
    out = out or Path(
        f"runs/orchestrate-{'rarl' if cfg.robust else 'ppo'}-n{cfg.nodes}-s{cfg.seed}"
    )
    train_rarl(cfg, out, overwrite=overwrite, progress=not quiet)
    s = read_summary(out)
    click.echo(
        f"{'RARL' if cfg.robust else 'PPO'} on {cfg.nodes} nodes ({s['groups']} request groups, "
        f"{s['components']} routing decisions per slot): {s['iterations']['protagonist']} "
        f"protagonist / {s['iterations']['adversary']} adversary iterations in "
        f"{s['train_seconds_total']:.0f} s; last-10 utility {s['final_utility_last10']:.3f}, "
        f"latency {s['final_latency_s_last10']:.3f} s, miss rate {s['final_miss_rate_last10']:.3f}"
        f"\nrun directory: {out}"
    )


@orchestrate_group.command("eval")
@click.option("--run", "runs", type=click.Path(path_type=Path), multiple=True,
              help="a training run directory (repeatable); none: baselines only")  # fmt: skip
@click.option("--nodes", type=int, default=10, show_default=True,
              help="instance size when no --run is given")  # fmt: skip
@click.option("--instance-seed", type=int, default=0, show_default=True,
              help="instance seed when no --run is given")  # fmt: skip
@click.option("--episodes", type=int, default=16, show_default=True,
              help="episodes per router and demand type")  # fmt: skip
@click.option("--seed", type=int, default=1234, show_default=True, help="evaluation seed")
@click.option("--deterministic", is_flag=True,
              help="learned agents take their most likely action (default: sample)")  # fmt: skip
@click.option("--br-iterations", type=int, default=0, show_default=True,
              help="also train a best-response adversary against every router (PPO iterations)")  # fmt: skip
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="where evaluation.json/.png go [default: the first --run, else runs/orchestrate-eval]")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="print machine-readable JSON")
@click.option("--quiet", "-q", is_flag=True, help="no progress bar")
def eval_command(runs: tuple[Path, ...], nodes: int, instance_seed: int, episodes: int, seed: int,
                 deterministic: bool, br_iterations: int, out: Path | None, as_json: bool,
                 quiet: bool) -> None:  # fmt: skip
    """Evaluate baselines and trained routers under nominal, random and adversarial demand.

    Example: edgelam orchestrate eval --run runs/rarl --run runs/ppo --episodes 16
    """
    from edgelam.inference.orchestration.evaluate import evaluate_routers, plot_evaluation
    from edgelam.inference.orchestration.policies import baseline_routers
    from edgelam.inference.orchestration.rarl import (
        best_response_trainer,
        build_substrate,
        load_run,
    )
    from edgelam.progress import progress_bar
    from edgelam.runs import atomic_write_text

    if episodes < 1:
        raise ConfigError(f"--episodes: must be >= 1, got {episodes}")
    if br_iterations < 0:
        raise ConfigError(f"--br-iterations: must be >= 0, got {br_iterations}")
    routers: dict[str, Any] = dict(baseline_routers())
    adversaries: dict[str, Any] = {}
    cfg = None
    for path in runs:
        run_cfg, sub, trainer = load_run(path)
        if cfg is not None and (to_dict(run_cfg.env) != to_dict(cfg.env)
                                or (run_cfg.nodes, run_cfg.seed, run_cfg.load) != (cfg.nodes, cfg.seed, cfg.load)):  # fmt: skip
            raise ConfigError(f"--run {path}: its instance or MDP differs from the first run's")
        cfg = cfg or run_cfg
        name = "rarl" if run_cfg.robust else "ppo"
        name = name if name not in routers else f"{name}:{path.name}"
        routers[name] = trainer.router.policy(deterministic)
        if run_cfg.robust:
            adversaries[name] = trainer.adversary.policy(deterministic)
    if cfg is None:
        cfg = RARLConfig(nodes=nodes, seed=instance_seed)
        sub = build_substrate(cfg)
    else:
        sub = trainer.sub
    br = best_response_trainer(cfg, sub, br_iterations) if br_iterations else None
    pairs = len(routers) * (2 + len(adversaries) + 1 + (1 if br else 0))
    with progress_bar("evaluate", total=pairs, enabled=not quiet and not as_json) as advance:
        result = evaluate_routers(sub, cfg.env, routers, adversaries, episodes=episodes, seed=seed,
                                  best_response=br, progress=advance)  # fmt: skip
    result.update(runs=[str(p) for p in runs], deterministic=deterministic,
                  br_iterations=br_iterations, nodes=cfg.nodes, instance_seed=cfg.seed)  # fmt: skip
    out = out or (runs[0] if runs else Path("runs/orchestrate-eval"))
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "evaluation.json", json.dumps(result, indent=1))
    plot_evaluation(out / "evaluation.json", out / "evaluation.png")
    if as_json:
        click.echo(json.dumps(result, indent=1))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"orchestration, {cfg.nodes} nodes, {episodes} episodes per cell "
                  f"(rate budget {cfg.env.rate_budget:g}, {cfg.env.move_budget} moves/slot)")  # fmt: skip
    for col in ("policy", "demand", "utility (95% CI)", "latency s", "miss rate", "attack"):
        table.add_column(col)
    for r in result["rows"]:
        table.add_row(r["policy"], r["demand"], f"{r['utility']:.3f} +- {r['utility_ci95']:.3f}",
                      f"{r['latency_s']:.3f}", f"{r['miss_rate']:.3f}", r.get("attack", ""))  # fmt: skip
    Console(width=120).print(table)
    click.echo(f"wrote {out / 'evaluation.json'} and {out / 'evaluation.png'}")
