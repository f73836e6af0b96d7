"""Deployment solvers against brute force: exact == enumeration, valid lower bounds, greedy and
monolithic baselines, the ``solve`` dispatcher and the ``edgelam deploy`` commands."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from edgelam.config import ConfigError
from edgelam.inference.catalog import Catalog, Flow, Microservice, Stage
from edgelam.inference.command import deploy_group
from edgelam.inference.cpsat import OBJECTIVE_SCALE, InfeasibleDeploymentError
from edgelam.inference.deployment import Deployment, evaluate, load_deployment, route
from edgelam.inference.exact import _SharedModel, solve_exact
from edgelam.inference.greedy import solve_greedy
from edgelam.inference.instance import Demand, Instance, Link, Node, generate_instance
from edgelam.inference.monolithic import as_shared, lam_memory_mb, solve_monolithic
from edgelam.inference.routing import refine_routing
from edgelam.inference.solve import solve

TFLOPS = 1e12


def _service(name: str, memory_mb: float, gflops: float, out_bytes: float) -> Microservice:
    return Microservice(name, "backbone", "text", 1e6, memory_mb, gflops, "request", out_bytes, "test")  # fmt: skip


def _tiny(
    memory=(4000.0, 4000.0, 4500.0), rates=(30.0, 20.0, 40.0), share: bool = True
) -> Instance:
    """Three nodes on a line; LAM "qa" = enc -> llm, LAM "chat" = llm alone (or its own
    "llm2" when not ``share``). Every big service takes most of a node's memory, so memory,
    transfers (1 MB encoder output over 1 Gbit/s) and congestion all pull against each other."""
    services = {
        "enc": _service("enc", 2500.0, 40.0, 1e6),
        "llm": _service("llm", 3000.0, 60.0, 2000.0),
        "llm2": _service("llm2", 3000.0, 60.0, 2000.0),
    }
    flows = {
        "qa": Flow("qa", "", (Stage("e", "enc", 1.0, (), 2e5), Stage("l", "llm", 1.0, ("e",)))),
        "chat": Flow("chat", "", (Stage("l", "llm" if share else "llm2", 1.0, (), 1e3),)),
    }
    nodes = [Node(f"n{i}", "test", f * TFLOPS, m) for i, (f, m) in enumerate(zip((8.0, 15.0, 25.0), memory, strict=True))]  # fmt: skip
    links = [Link(0, 1, 1e9, 1e-3), Link(1, 2, 1e9, 2e-3)]
    demands = [Demand("qa", 0, rates[0]), Demand("qa", 2, rates[1]), Demand("chat", 1, rates[2])]
    return Instance(nodes, links, demands, Catalog(services, flows), name="tiny")


def _brute_force(inst: Instance, *, monolithic: bool = False) -> tuple[float, Deployment | None]:
    """The optimum over every routing (each stage of each class on any node), with the
    placement the routing needs (memory checked by evaluate); monolithic: all stages of a class
    on one node, one copy of each LAM per node it serves from."""
    cat = inst.catalog
    n = len(inst.nodes)
    per_class = []
    for d in inst.demands:
        ids = [s.id for s in cat.flows[d.flow].stages]
        if monolithic:
            per_class.append([dict.fromkeys(ids, m) for m in range(n)])
        else:
            per_class.append([dict(zip(ids, c, strict=True)) for c in itertools.product(range(n), repeat=len(ids))])  # fmt: skip
    best, best_dep = math.inf, None
    for combo in itertools.product(*per_class):
        routing = {(d.flow, d.node): r for d, r in zip(inst.demands, combo, strict=True)}
        placement: dict[str, set[int]] = {}
        for d, r in zip(inst.demands, combo, strict=True):
            services = cat.flows[d.flow].services() if monolithic else None
            for s in cat.flows[d.flow].stages:
                keys = [f"{d.flow}/{x}" for x in services] if monolithic else [s.service]
                for key in keys:
                    placement.setdefault(key, set()).add(r[s.id])
        dep = Deployment({k: sorted(v) for k, v in placement.items()}, routing, not monolithic)
        ev = evaluate(inst, dep)
        if ev.feasible and ev.objective_s < best:
            best, best_dep = ev.objective_s, dep
    return best, best_dep


@pytest.mark.parametrize("rates", [(30.0, 20.0, 40.0), (5.0, 60.0, 10.0), (80.0, 5.0, 90.0)])
def test_exact_equals_brute_force(rates) -> None:
    inst = _tiny(rates=rates)
    best, _ = _brute_force(inst)
    dep = solve_exact(inst, time_limit_s=20, seed=1, warm_start=False)
    assert dep.info["status"] == "OPTIMAL"
    ev = evaluate(inst, dep)
    assert ev.feasible
    # optimal up to the tangent tolerance (1e-4 requests per node) and microsecond rounding
    assert ev.objective_s == pytest.approx(best, rel=1e-4)
    assert dep.info["lower_bound_s"] <= best + 1e-12
    assert dep.info["lower_bound_s"] >= best * (1 - 1e-3)  # a bound that says something


def test_exact_equals_brute_force_on_generated_instance() -> None:
    inst = generate_instance(3, seed=0, flows=["image-caption"])  # 3 classes x 27 routings
    best, _ = _brute_force(inst)
    dep = solve_exact(inst, time_limit_s=20, warm_start=False)
    assert dep.info["status"] == "OPTIMAL"
    assert evaluate(inst, dep).objective_s == pytest.approx(best, rel=1e-4)
    assert dep.info["lower_bound_s"] <= best + 1e-12


def test_monolithic_exact_equals_brute_force() -> None:
    inst = _tiny(memory=(4000.0, 6000.0, 6000.0), share=False)
    best, _ = _brute_force(inst, monolithic=True)
    dep = solve_monolithic(inst, method="exact", time_limit_s=20)
    assert not dep.shared and dep.info["status"] == "OPTIMAL"
    assert evaluate(inst, dep).objective_s == pytest.approx(best, rel=1e-4)
    assert dep.info["lower_bound_s"] <= best + 1e-12


def test_jointly_infeasible_instance_is_reported() -> None:
    # each service fits somewhere and the total fits, but enc + llm never fit one node while
    # two nodes hold only one of them each and the chat LAM needs llm2 too: 3 big services,
    # 2 usable nodes.
    inst = _tiny(memory=(4000.0, 1000.0, 4000.0), share=False)
    assert inst.infeasibility_report() == []
    assert _brute_force(inst)[1] is None
    with pytest.raises(InfeasibleDeploymentError, match="conflict jointly"):
        solve_exact(inst, time_limit_s=10, warm_start=False)
    dep = solve_greedy(inst, time_limit_s=2)
    assert not dep.info["feasible"] and dep.info["violations"]


def test_model_objective_is_a_lower_bound_of_every_routing() -> None:
    """The rounding of the CP-SAT model is in the safe direction for any assignment."""
    inst = generate_instance(4, seed=3, flows=["image-qa", "speech-vision-qa"])
    model = _SharedModel(inst, 1e-4)
    rng = np.random.default_rng(0)
    total = sum(d.rate for d in inst.demands)
    checked = 0
    for _ in range(300):
        routing = {}
        for d in inst.demands:
            routing[d.flow, d.node] = {
                s.id: int(rng.choice(list(model.classes[inst.demands.index(d)].stages[s.id].r)))
                for s in inst.catalog.flows[d.flow].stages
            }
        values = model.model_values(routing)
        placement: dict[str, set[int]] = {}
        for (flow, _), nodes in routing.items():
            for st in inst.catalog.flows[flow].stages:
                placement.setdefault(st.service, set()).add(nodes[st.id])
        ev = evaluate(inst, Deployment({k: sorted(v) for k, v in placement.items()}, routing))
        if values is None or max(ev.utilisation) > inst.max_utilisation:
            continue  # the tangents only reach max_utilisation
        checked += 1
        assert values[1] <= ev.objective_s * OBJECTIVE_SCALE * total
        assert values[1] >= ev.objective_s * OBJECTIVE_SCALE * total * (1 - 1e-3)
    assert checked > 30


@pytest.mark.parametrize("seed", [0, 1])
def test_greedy_is_feasible_and_not_below_exact(seed: int) -> None:
    inst = generate_instance(5, seed=seed, flows=["image-qa", "image-caption", "text-to-image"])
    greedy = solve_greedy(inst, seed=seed, time_limit_s=3)
    exact = solve_exact(inst, time_limit_s=10, seed=seed)
    ev = evaluate(inst, greedy)
    assert ev.feasible and greedy.info["objective_s"] == ev.objective_s
    assert exact.info["lower_bound_s"] <= ev.objective_s
    assert exact.info["lower_bound_s"] <= exact.info["objective_s"]
    if exact.info["status"] == "OPTIMAL":
        assert ev.objective_s >= exact.info["objective_s"] * (1 - 1e-4)
    for (flow, _), nodes in greedy.routing.items():  # every stage on a node hosting it
        for s in inst.catalog.flows[flow].stages:
            assert nodes[s.id] in greedy.placement[s.service]


def test_refine_routing_never_worse_and_respects_hosts() -> None:
    inst = generate_instance(8, seed=4, load=0.5)
    cat = inst.catalog
    rng = np.random.default_rng(1)
    placement = {s: sorted(rng.choice(8, size=3, replace=False).tolist()) for s in cat.services}
    dep = route(inst, placement)
    better = refine_routing(inst, dep, passes=3)
    assert evaluate(inst, better).objective_s <= evaluate(inst, dep).objective_s + 1e-12
    for (flow, _), nodes in better.routing.items():
        for s in cat.flows[flow].stages:
            assert nodes[s.id] in placement[s.service]
    assert dep.routing != better.routing  # it did change something on this instance


def test_monolithic_takes_more_memory_than_shared() -> None:
    inst = generate_instance(6, seed=2)
    mono = solve_monolithic(inst, time_limit_s=3)
    ev_mono = evaluate(inst, mono)
    merged = evaluate(inst, as_shared(mono))
    assert ev_mono.feasible and merged.feasible
    assert merged.objective_s == pytest.approx(ev_mono.objective_s, rel=1e-12)
    assert merged.memory_total_mb < ev_mono.memory_total_mb  # LAMs share encoders/backbones
    flows = {d.flow for d in inst.demands}
    needed = {s for f in flows for s in inst.catalog.flows[f].services()}
    one_each = sum(inst.catalog.services[s].memory_mb for s in needed)
    assert sum(lam_memory_mb(inst, f) for f in flows) > one_each


def test_monolithic_infeasible_where_shared_fits() -> None:
    # one node can hold enc + llm (5500 MiB) but not the two LAM copies (qa 5500 + chat 3000)
    inst = _tiny(memory=(6000.0, 1000.0, 1000.0), rates=(2.0, 2.0, 2.0))
    shared = solve_exact(inst, time_limit_s=10)
    assert evaluate(inst, shared).feasible
    with pytest.raises(InfeasibleDeploymentError, match="monolithic"):
        solve_monolithic(inst, method="exact", time_limit_s=10)
    assert not solve_monolithic(inst, time_limit_s=1).info["feasible"]


def test_solve_dispatcher_errors() -> None:
    inst = _tiny()
    with pytest.raises(ConfigError, match="method: 'anneal' is not one of"):
        solve(inst, "anneal")
    with pytest.raises(ConfigError, match=r"greedy: unknown options \['workers'\]"):
        solve(inst, "greedy", workers=2)
    dep, ev = solve(_tiny(memory=(6000.0, 6000.0, 6000.0)), "monolithic", method="exact", time_limit_s=5)  # fmt: skip
    assert dep.method == "monolithic-exact" and ev.feasible and dep.info["solve_time_s"] > 0


def test_cli_round_trip(tmp_path) -> None:
    runner = CliRunner()
    inst_path, sol_path = tmp_path / "inst.json", tmp_path / "sol.json"
    res = runner.invoke(deploy_group, ["instance", "--nodes", "4", "--seed", "3", "--flows",
                                       "image-qa,image-caption", "--out", str(inst_path), "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["nodes"] == 4
    res = runner.invoke(deploy_group, ["solve", str(inst_path), "--method", "exact", "--time-limit",
                                       "10", "--json", "--out", str(sol_path)])  # fmt: skip
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    for key in ("objective", "objective_s", "feasible", "solve_time_s", "placement", "routing", "gap",
                "lower_bound_s", "status", "memory_total_mb", "utilisation", "instances"):  # fmt: skip
        assert key in out, key
    assert out["feasible"] and out["lower_bound_s"] <= out["objective_s"]
    from edgelam.inference.instance import load_instance

    inst = load_instance(inst_path)
    assert evaluate(inst, load_deployment(sol_path)).objective_s == pytest.approx(
        out["objective_s"]
    )
    res = runner.invoke(deploy_group, ["solve", str(inst_path), "--method", "greedy"])
    assert res.exit_code == 0 and "objective J" in res.output
    res = runner.invoke(deploy_group, ["solve", str(inst_path), "--method", "annealing"])
    assert res.exit_code == 2 and "annealing" in res.output
    res = runner.invoke(deploy_group, ["solve", str(inst_path), "--time-limit", "-1"])
    assert isinstance(res.exception, ConfigError) and "--time-limit" in str(res.exception)
