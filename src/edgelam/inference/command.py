"""``edgelam deploy``: generate deployment instances, solve them, simulate the result.

``cli.py`` registers :data:`deploy_group` on the ``edgelam`` group, which prints a
:class:`~edgelam.config.ConfigError` (bad option, malformed or infeasible instance) as one line
and exits with status 2.

Example::

    edgelam deploy instance --nodes 10 --seed 0 --out inst.json
    edgelam deploy solve inst.json --method exact --time-limit 60 --out sol.json
    edgelam deploy simulate inst.json sol.json --duration 2000
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import rich_click as click
from rich.console import Console
from rich.table import Table

from edgelam.config import ConfigError

__all__ = ["deploy_group", "solution_summary"]

console = Console()

METHOD_CHOICES = ("exact", "greedy", "monolithic", "monolithic-exact", "diffusion")


@click.group("deploy")
def deploy_group() -> None:
    """Microservice deployment of multimodal LAMs on edge nodes: instances, solvers, simulation.

    Solvers: exact (CP-SAT with a proven bound), greedy (construction + local search),
    monolithic (each LAM deployed whole, the no-sharing baseline), diffusion (learned
    generator). See docs/deployment.md.
    """


def _flows(values: tuple[str, ...]) -> list[str] | None:
    names = [f.strip() for v in values for f in v.split(",") if f.strip()]
    return names or None


@deploy_group.command("instance")
@click.option("--nodes", type=int, required=True, help="number of edge nodes (>= 2)")
@click.option("--seed", type=int, default=0, show_default=True, help="generator seed")
@click.option(
    "--load",
    type=float,
    default=0.3,
    show_default=True,
    help="total work / total sustained FLOP/s of the nodes, in (0, 1)",
)
@click.option(
    "--flows",
    multiple=True,
    help="LAMs users request (repeat or comma-separate) [default: all in the catalog]",
)
@click.option(
    "--catalog",
    "catalogs",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="extra catalog JSON merged over the shipped one (repeatable)",
)
@click.option(
    "--out", type=click.Path(path_type=Path), required=True, help="instance JSON to write"
)
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
def instance_command(nodes: int, seed: int, load: float, flows: tuple[str, ...],
                     catalogs: tuple[Path, ...], out: Path, as_json: bool) -> None:  # fmt: skip
    """Generate a seeded random instance (nodes, links, demands) and write it as JSON.

    Example: edgelam deploy instance --nodes 10 --seed 0 --out inst.json
    """
    from edgelam.inference.catalog import load_catalog
    from edgelam.inference.instance import generate_instance

    catalog = load_catalog(*catalogs)
    inst = generate_instance(nodes, seed, flows=_flows(flows), load=load, catalog=catalog)
    inst.save(out)
    summary = instance_summary(inst)
    if as_json:
        click.echo(json.dumps({"path": str(out), **summary}, indent=2))
        return
    table = Table(title=f"{out}: instance {inst.name}", show_header=False)
    kinds = ", ".join(f"{c} x {k}" for k, c in summary["node_kinds"].items())
    table.add_row("nodes", f"{summary['nodes']} ({kinds})")
    table.add_row("links", str(summary["links"]))
    table.add_row("memory", f"{summary['memory_total_mb'] / 1024:.0f} GiB in total")
    table.add_row("compute", f"{summary['tflops_total']:.0f} TFLOP/s sustained")
    table.add_row("request classes", f"{summary['classes']} (flow, origin) at {summary['total_rate']:.2f} req/s")  # fmt: skip
    for flow, rate in summary["rate_per_flow"].items():
        table.add_row(f"  {flow}", f"{rate:.3f} req/s")
    table.add_row("max utilisation", f"{inst.max_utilisation:g}")
    problems = summary["infeasibility_report"]
    table.add_row("necessary conditions", "; ".join(problems) if problems else "all hold")
    console.print(table)


def instance_summary(inst: Any) -> dict[str, Any]:
    """Counts, totals and the infeasibility report of an instance (JSON-ready)."""
    kinds: dict[str, int] = {}
    for node in inst.nodes:
        kinds[node.kind] = kinds.get(node.kind, 0) + 1
    per_flow: dict[str, float] = {}
    for d in inst.demands:
        per_flow[d.flow] = per_flow.get(d.flow, 0.0) + d.rate
    return {
        "name": inst.name,
        "nodes": len(inst.nodes),
        "node_kinds": kinds,
        "links": len(inst.links),
        "classes": len(inst.demands),
        "total_rate": sum(per_flow.values()),
        "rate_per_flow": per_flow,
        "memory_total_mb": sum(node.memory_mb for node in inst.nodes),
        "tflops_total": sum(node.flops for node in inst.nodes) / 1e12,
        "infeasibility_report": inst.infeasibility_report(),
    }


def solution_summary(dep: Any, ev: Any) -> dict[str, Any]:
    """The JSON of ``edgelam deploy solve --json``: objective, feasibility, timing, solver
    details (``status``, ``lower_bound_s`` and ``gap`` for exact), memory and utilisation,
    placement and routing."""
    d = dep.to_dict()
    info = {k: v for k, v in dep.info.items() if not k.startswith("_")}
    out = {
        "method": dep.method,
        "shared": dep.shared,
        "objective": ev.objective_s,  # mean request latency J in seconds (= objective_s)
        "objective_s": ev.objective_s,
        "feasible": ev.feasible,
        "violations": ev.violations,
        "solve_time_s": info.get("solve_time_s"),
        "latency_s": ev.latency_s,
        "congestion_s": ev.congestion_s,
        "mg1_latency_s": ev.mg1_latency_s,
        "memory_total_mb": ev.memory_total_mb,
        "memory_used_mb": ev.memory_used_mb,
        "utilisation": ev.utilisation,
        "max_utilisation": max(ev.utilisation),
        "instances": ev.instances,
    }
    for key in ("status", "lower_bound_s", "gap"):
        if key in info:
            out[key] = info[key]
    out.update(placement=d["placement"], routing=d["routing"], info=info)
    return json.loads(json.dumps(out, default=float))


def _options(method: str, time_limit: float | None, workers: int, seed: int,
             checkpoint: Path | None) -> tuple[str, dict[str, Any]]:  # fmt: skip
    """Solver name and keyword options for a CLI method choice."""
    if checkpoint is not None and method != "diffusion":
        raise ConfigError("--checkpoint: only used by --method diffusion")
    opts: dict[str, Any] = {"seed": seed}
    if method == "diffusion":
        if checkpoint is not None:
            opts["checkpoint"] = checkpoint
        return "diffusion", opts
    if time_limit is not None:
        if not time_limit > 0:
            raise ConfigError(f"--time-limit: must be > 0, got {time_limit}")
        opts["time_limit_s"] = time_limit
    if method in ("exact", "monolithic-exact"):
        if workers < 1:
            raise ConfigError(f"--workers: must be >= 1, got {workers}")
        opts["workers"] = workers
    if method.startswith("monolithic"):
        opts["method"] = "exact" if method == "monolithic-exact" else "greedy"
        return "monolithic", opts
    return method, opts


@deploy_group.command("solve")
@click.argument("instance", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--method",
    type=click.Choice(METHOD_CHOICES),
    default="greedy",
    show_default=True,
    help="exact: CP-SAT; greedy: construction + local search; monolithic(-exact): "
    "whole LAMs, nothing shared; diffusion: learned generator",
)
@click.option(
    "--time-limit",
    type=float,
    default=None,
    help="seconds [default: 60 exact, 20 greedy, 60 monolithic]",
)
@click.option("--workers", type=int, default=1, show_default=True, help="CP-SAT workers (exact)")
@click.option("--seed", type=int, default=0, show_default=True, help="solver seed")
@click.option(
    "--checkpoint",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="diffusion checkpoint directory [default: the shipped one]",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="write the deployment (with its evaluation) as JSON",
)
@click.option("--json", "as_json", is_flag=True, help="print machine-readable JSON")
def solve_command(instance: Path, method: str, time_limit: float | None, workers: int, seed: int,
                  checkpoint: Path | None, out: Path | None, as_json: bool) -> None:  # fmt: skip
    """Solve a deployment instance and report objective, feasibility, memory and utilisation.

    Example: edgelam deploy solve inst.json --method exact --time-limit 60 --out sol.json
    """
    from edgelam.inference.instance import load_instance
    from edgelam.inference.solve import solve

    inst = load_instance(instance)
    name, opts = _options(method, time_limit, workers, seed, checkpoint)
    dep, ev = solve(inst, name, **opts)
    if out is not None:
        dep.save(out, ev)
    summary = solution_summary(dep, ev)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    _print_solution(inst, dep, ev, summary, out)


def _print_solution(inst: Any, dep: Any, ev: Any, s: dict[str, Any], out: Path | None) -> None:
    table = Table(title=f"{dep.method} deployment of {inst.name or 'instance'}", show_header=False)
    table.add_row("objective J", f"{s['objective_s'] * 1e3:.2f} ms" if s["objective_s"] is not None else "inf")  # fmt: skip
    table.add_row("  latency / congestion", f"{ev.latency_s * 1e3:.2f} ms / {ev.congestion_s * 1e3:.2f} ms")  # fmt: skip
    if "lower_bound_s" in s:
        table.add_row("lower bound", f"{s['lower_bound_s'] * 1e3:.2f} ms (gap {s['gap']:.2%}, {s['status']})")  # fmt: skip
    table.add_row("feasible", "yes" if ev.feasible else "NO: " + "; ".join(ev.violations[:3]))
    table.add_row("instances", f"{ev.instances} ({ev.memory_total_mb / 1024:.1f} GiB)")
    table.add_row("max utilisation", f"{s['max_utilisation']:.3f} (limit {inst.max_utilisation:g})")  # fmt: skip
    table.add_row("solve time", f"{s['solve_time_s']:.2f} s")
    reasons = dep.info.get("reasons")
    if reasons:
        table.add_row("why", "; ".join(reasons))
    console.print(table)
    hosts = Table(title="placement")
    hosts.add_column("microservice")
    hosts.add_column("nodes")
    for key, nodes in sorted(s["placement"].items()):
        hosts.add_row(key, ", ".join(map(str, nodes)))
    console.print(hosts)
    if out is not None:
        console.print(f"wrote {out}")


@deploy_group.command("simulate")
@click.argument("instance", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("solution", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--duration",
    type=float,
    default=2000.0,
    show_default=True,
    help="simulated seconds of arrivals, warm-up included",
)
@click.option("--warmup", type=float, default=None, help="unmeasured start [default: 10 % of --duration]")  # fmt: skip
@click.option("--seed", type=int, default=0, show_default=True, help="arrival seed")
@click.option(
    "--service",
    type=click.Choice(["deterministic", "exponential"]),
    default="deterministic",
    show_default=True,
    help="service-time model",
)
@click.option(
    "--discipline",
    type=click.Choice(["ps", "fcfs"]),
    default="ps",
    show_default=True,
    help="node scheduling: processor sharing (the objective's model) or first-come-first-served",
)
@click.option("--json", "as_json", is_flag=True, help="print machine-readable JSON")
def simulate_command(instance: Path, solution: Path, duration: float, warmup: float | None,
                     seed: int, service: str, discipline: str, as_json: bool) -> None:  # fmt: skip
    """Discrete-event simulation (SimPy) of a solved deployment, against the analytical numbers.

    Example: edgelam deploy simulate inst.json sol.json --duration 2000 --seed 1
    """
    from edgelam.inference.deployment import load_deployment
    from edgelam.inference.instance import load_instance
    from edgelam.inference.simulator import simulate

    inst = load_instance(instance)
    dep = load_deployment(solution)
    warmup = 0.1 * duration if warmup is None else warmup
    res = simulate(inst, dep, duration_s=duration, warmup_s=warmup, seed=seed, service=service,
                   discipline=discipline)  # fmt: skip
    d = res.to_dict()
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    table = Table(title=f"simulation of {solution} ({discipline}, {service} work, {d['requests_completed']} requests)")  # fmt: skip
    table.add_column("")
    table.add_column("simulated", justify="right")
    table.add_column("analytical", justify="right")

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v * 1e3:.2f} ms"

    table.add_row("mean latency", f"{ms(d['mean_latency_s'])} ± {ms(d['mean_latency_ci_s'])}", f"{ms(d['objective_s'])} (objective, PS), {ms(d['mg1_latency_s'])} (M/G/1 FCFS)")  # fmt: skip
    table.add_row("p95 / p99 latency", f"{ms(d['p95_latency_s'])} / {ms(d['p99_latency_s'])}", "")
    table.add_row("latency without queueing", "", ms(d["latency_s"]))
    table.add_row("max utilisation", f"{max(d['utilisation']):.3f}", f"{max(d['analytical_utilisation']):.3f}")  # fmt: skip
    console.print(table)
