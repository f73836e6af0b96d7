"""``edgelam migrate run``: mobility-aware microservice migration by drift-plus-penalty.

``cli.py`` registers :data:`migrate_group` on the ``edgelam`` group; invalid values raise a
:class:`~edgelam.config.ConfigError` naming the option, which the ``edgelam`` group prints as one
line (exit status 2).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import rich_click as click

from edgelam.cli_config import config_from_cli, config_options
from edgelam.config import ConfigError
from edgelam.inference.migration.run import MigrationConfig

__all__ = ["migrate_group", "parse_v"]


def parse_v(values: tuple[str, ...]) -> tuple[float, ...]:
    """``--V`` values: each option may hold a comma-separated list.

    >>> parse_v(("0.1,1", "10"))
    (0.1, 1.0, 10.0)

    Raises:
        ConfigError: a value that is not a number.
    """
    out = []
    for text in values:
        for part in text.split(","):
            if not part.strip():
                continue
            try:
                out.append(float(part))
            except ValueError:
                raise ConfigError(f"--V: {part!r} is not a number") from None
    return tuple(out)


@click.group("migrate")
def migrate_group() -> None:
    """Microservice migration under user mobility (Lyapunov drift-plus-penalty).

    See docs/migration.md.
    """


@migrate_group.command("run")
@click.option("--V", "v_values", multiple=True,
              help="drift-plus-penalty weight(s), kJ^2/ms: repeat the option or give a comma "
                   "list, e.g. --V 0.1,1,10,100 [default: 0.1 1 10 100]")  # fmt: skip
@config_options(MigrationConfig)
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="run directory [default: runs/migrate-<trace>]")  # fmt: skip
@click.option("--overwrite", is_flag=True, help="replace an existing run at --out")
@click.option("--quiet", "-q", is_flag=True, help="no progress bar")
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
def run_command(v_values: tuple[str, ...], out: Path | None, overwrite: bool, quiet: bool,
                as_json: bool, **kwargs: Any) -> None:  # fmt: skip
    """Run the controller over a V sweep on a mobility trace, with the baselines.

    Example: edgelam migrate run --trace highway --V 0.1,1,10,100 --users 4 --slots 300
    """
    from edgelam.inference.migration.run import run_migration
    from edgelam.runs import read_summary

    if v_values:
        kwargs["V"] = parse_v(v_values)
    cfg = config_from_cli(MigrationConfig, kwargs)
    out = out or Path(f"runs/migrate-{cfg.trace}")
    s = read_summary(run_migration(cfg, out, overwrite=overwrite, progress=not (quiet or as_json)))
    if as_json:
        click.echo(json.dumps({**s, "run_dir": str(out)}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"migration on {s['trace']}: K = {s['users']} users, N = {s['servers']} "
                        f"servers, T = {s['slots']} slots, budget {s['budget_kj']:.4g} kJ/slot "
                        f"({s['budget_source']})")  # fmt: skip
    cols = ("policy", "V", "latency ms", "p95 ms", "cost kJ/slot", "vs budget", "Q(T)/T kJ",
            "mean Q kJ", "migr./slot")  # fmt: skip
    for col in cols:
        table.add_column(col, justify="left" if col == "policy" else "right")
    for r in s["runs"]:
        over = -r["budget_margin_kj"]
        table.add_row(r["policy"], "" if r["V"] is None else f"{r['V']:g}",
                      f"{r['latency_ms']:.2f}", f"{r['latency_p95_ms']:.2f}", f"{r['cost_kj']:.4f}",
                      "met" if r["budget_met"] else f"+{over:.3g}",
                      f"{r['one_over_t_term_kj']:.3g}" if "one_over_t_term_kj" in r else "",
                      f"{r['mean_queue_kj']:.2f}", f"{r['migrations_per_slot']:.3f}")  # fmt: skip
    Console().print(table)
    click.echo(f"run directory: {out}")
