"""The discrete-event simulator against closed-form queueing results and the critical path."""

from __future__ import annotations

import math

import pytest
import simpy

from edgelam.inference.catalog import Catalog, Flow, Microservice, Stage
from edgelam.inference.deployment import Deployment, class_latency, evaluate, route
from edgelam.inference.instance import Demand, Instance, Link, Node, generate_instance
from edgelam.inference.servers import make_server
from edgelam.inference.simulator import SimulationError, simulate

TFLOPS = 1e12


def _service(name: str, gflops: float, out_bytes: float = 1000.0) -> Microservice:
    return Microservice(name, "backbone", "text", 1e6, 10.0, gflops, "request", out_bytes, "test")


@pytest.mark.parametrize(
    ("discipline", "expected"),
    # a: work 2 from t=0; b: work 0.5 from t=1; c: work 1 from t=1.5.
    # FCFS: a 0-2, b 2-2.5, c 2.5-3.5. PS: a alone to 1 (1 left); a, b at 1/2 to 1.5 (a 0.75,
    # b 0.25 left); a, b, c at 1/3: b done at 2.25 (a 0.5, c 0.75 left); a, c at 1/2: a done at
    # 3.25, c (0.25 left) alone to 3.5.
    [("fcfs", {"a": 2.0, "b": 2.5, "c": 3.5}), ("ps", {"a": 3.25, "b": 2.25, "c": 3.5})],
)
def test_servers_by_hand(discipline: str, expected: dict[str, float]) -> None:
    env = simpy.Environment()
    server = make_server(discipline, env, window=(1.0, 3.0))
    done: dict[str, float] = {}

    def job(name: str, at: float, work: float):
        yield env.timeout(at)
        yield from server.serve(work)
        done[name] = env.now

    for name, at, work in (("a", 0.0, 2.0), ("b", 1.0, 0.5), ("c", 1.5, 1.0)):
        env.process(job(name, at, work))
    env.run()
    assert done == pytest.approx(expected, abs=1e-12)
    assert server.busy == pytest.approx(2.0, abs=1e-12)  # busy 0-3.5, window 1-3


def _single_node(rates_taus: list[tuple[float, float]]) -> tuple[Instance, Deployment]:
    """One 1 TFLOP/s node; class k runs a one-stage flow of ``tau_k`` seconds at ``rate_k``/s
    (users of class k attached to node 0; a second, idle node gives each class its own origin)."""
    services, flows, demands = {}, {}, []
    for k, (rate, tau) in enumerate(rates_taus):
        services[f"m{k}"] = _service(f"m{k}", tau * TFLOPS / 1e9)
        flows[f"f{k}"] = Flow(f"f{k}", "", (Stage("s", f"m{k}", user_input_bytes=1e4),))
        demands.append(Demand(f"f{k}", 0, rate))
    nodes = [Node("n0", "server", TFLOPS, 1e4)]
    inst = Instance(nodes, [], demands, Catalog(services, flows))
    return inst, route(inst, {s: [0] for s in services})


@pytest.mark.parametrize(
    ("service", "factor"),
    [("exponential", 1.0), ("deterministic", 0.5)],  # M/M/1: rho/(1-rho) tau; M/D/1: half
)
def test_single_node_waiting_matches_mm1_and_md1(service: str, factor: float) -> None:
    rate, tau = 0.5, 1.0
    inst, dep = _single_node([(rate, tau)])
    res = simulate(inst, dep, duration_s=100_000.0, warmup_s=1000.0, seed=3, service=service,
                   discipline="fcfs")  # fmt: skip
    rho = rate * tau
    w_q = factor * rho / (1 - rho) * tau
    # ~50k customers: the standard error of the mean wait is ~2%; 4 sigma, and the two models
    # differ by a factor 2.
    assert res.mean_waiting_s[0] == pytest.approx(w_q, rel=0.08)
    assert res.utilisation[0] == pytest.approx(rho, abs=0.01)
    # latency = critical path + waiting; evaluate is exact here: objective (M/M/1) for
    # exponential service, mg1_latency_s (M/D/1) for deterministic.
    exact = res.objective_s if service == "exponential" else res.mg1_latency_s
    assert exact == pytest.approx(res.latency_s + w_q, rel=1e-12)
    assert res.mean_latency_s == pytest.approx(exact, rel=0.06)
    assert abs(res.mean_latency_s - exact) < 3 * res.mean_latency_ci_s


def test_two_classes_on_one_node_match_pollaczek_khinchine() -> None:
    # M/G/1 with two deterministic service times: P-K is exact, and evaluate's mg1 uses it.
    inst, dep = _single_node([(0.4, 0.25), (0.1, 2.0)])  # rho = 0.1 + 0.2 = 0.3
    res = simulate(inst, dep, duration_s=100_000.0, warmup_s=1000.0, seed=5, discipline="fcfs")
    second_moment = 0.4 * 0.25**2 + 0.1 * 2.0**2
    w_q = second_moment / (2 * (1 - 0.3))
    assert res.mean_waiting_s[0] == pytest.approx(w_q, rel=0.08)
    assert res.mean_latency_s == pytest.approx(res.mg1_latency_s, rel=0.05)
    assert res.utilisation[0] == pytest.approx(0.3, abs=0.01)


def _colocated_parallel_stages(inst: Instance, flow: str, nodes: dict[str, int]) -> bool:
    """Whether two stages of ``flow`` that may run at once (neither feeds the other) share a
    node: the simulated server runs them one after the other, the critical path overlaps them."""
    f = inst.catalog.flows[flow]
    before: dict[str, set[str]] = {}
    for sid in f.topological_order():
        before[sid] = set(f.stage[sid].inputs).union(*(before[u] for u in f.stage[sid].inputs))
    return any(
        nodes[a] == nodes[b] and a not in before[b] and b not in before[a]
        for i, a in enumerate(before)
        for b in list(before)[i + 1 :]
    )


@pytest.mark.parametrize("service", ["deterministic", "exponential"])
def test_processor_sharing_matches_the_objective_whatever_the_work(service: str) -> None:
    # M/G/1-PS: a job of work tau stays tau / (1 - rho) on average, insensitive to the work
    # distribution, so evaluate's objective is exact for one node and one-stage flows.
    inst, dep = _single_node([(0.8, 0.25), (0.1, 3.0)])  # rho = 0.2 + 0.3 = 0.5
    res = simulate(inst, dep, duration_s=50_000.0, warmup_s=1000.0, seed=2, service=service,
                   discipline="ps")  # fmt: skip
    rho = 0.5
    for key, tau in (("f0@0", 0.25), ("f1@0", 3.0)):
        stats = res.class_latency[key]
        exact = stats["analytical_s"] + tau * rho / (1 - rho)
        assert stats["mean_s"] == pytest.approx(exact, rel=0.1), key
    assert res.mean_latency_s == pytest.approx(res.objective_s, rel=0.1)
    assert res.utilisation[0] == pytest.approx(rho, abs=0.02)
    # FCFS on the same arrivals is slower (P-K: short jobs wait behind long ones): by 0.39 s
    # (deterministic) and 1.34 s (exponential) in the mean
    fcfs = simulate(inst, dep, duration_s=50_000.0, warmup_s=1000.0, seed=2, service=service,
                    discipline="fcfs")  # fmt: skip
    assert fcfs.mean_latency_s > res.mean_latency_s + 0.25


@pytest.mark.parametrize("discipline", ["fcfs", "ps"])
def test_no_load_latency_is_the_critical_path_of_every_class(discipline: str) -> None:
    # utilisation ~3e-4: a request rarely meets another one; the horizon (~1.6e5 s) keeps the
    # absolute clock precise to ~1e-10 s.
    inst = generate_instance(6, seed=2, load=1e-4)
    dep = _fill(inst)
    rate = sum(d.rate for d in inst.demands)
    duration = 40 * len(inst.demands) / rate  # ~40 requests per class
    res = simulate(inst, dep, duration_s=duration, warmup_s=0.0, seed=0, discipline=discipline)
    assert max(res.utilisation) < 1e-3
    exact = 0
    for d in inst.demands:
        key, nodes = f"{d.flow}@{d.node}", dep.routing[(d.flow, d.node)]
        expected = class_latency(inst, dep, d.flow, d.node, nodes)
        stats = res.class_latency[key]
        assert stats["count"] >= 10, key
        assert stats["analytical_s"] == expected
        assert stats["mean_s"] >= expected - 1e-9, key  # never faster than the critical path
        if _colocated_parallel_stages(inst, d.flow, nodes):
            continue  # self-contention: see test_parallel_branches_on_one_node_take_turns
        exact += 1
        # deterministic service and (nearly) nobody waits: the median and 95th percentile are
        # exactly the critical path.
        assert stats["p50_s"] == pytest.approx(expected, abs=1e-9), key
        assert stats["p95_s"] == pytest.approx(expected, abs=1e-9), key
        assert stats["mean_s"] <= expected * 1.01, key
    assert exact >= len(inst.demands) - 2


def _fill(inst: Instance) -> Deployment:
    """Each node holds every microservice that still fits, biggest first; greedy routing."""
    cat = inst.catalog
    placement: dict[str, list[int]] = {s: [] for s in cat.services}
    for n, node in enumerate(inst.nodes):
        free = node.memory_mb
        for s in sorted(cat.services, key=lambda s: -cat.services[s].memory_mb):
            if cat.services[s].memory_mb <= free:
                placement[s].append(n)
                free -= cat.services[s].memory_mb
    return route(inst, placement)


def _diamond(tau_a: float, tau_b: float) -> tuple[Instance, Deployment]:
    """Stage a (node 0) and stage b (node 1) both take user input; c (node 0) reads both."""
    services = {"ma": _service("ma", tau_a * 1e3), "mb": _service("mb", tau_b * 1e3),
                "mc": _service("mc", 100.0, out_bytes=5e5)}  # fmt: skip
    stages = (
        Stage("a", "ma", user_input_bytes=2e5, output_bytes=1e6),
        Stage("b", "mb", user_input_bytes=3e5, output_bytes=4e6),
        Stage("c", "mc", inputs=("a", "b")),
    )
    cat = Catalog(services, {"dag": Flow("dag", "", stages)})
    nodes = [Node("n0", "s", TFLOPS, 1e4), Node("n1", "s", TFLOPS, 1e4)]
    inst = Instance(nodes, [Link(0, 1, 1e9, 2e-3)], [Demand("dag", 0, 1e-4)], cat)
    dep = Deployment({"ma": [0], "mb": [1], "mc": [0]}, {("dag", 0): {"a": 0, "b": 1, "c": 0}})
    return inst, dep


@pytest.mark.parametrize(("tau_a", "tau_b"), [(0.5, 0.1), (0.1, 0.5)])
def test_parallel_branches_join_at_the_slower_one(tau_a: float, tau_b: float) -> None:
    inst, dep = _diamond(tau_a, tau_b)
    upload = (2e5 + 3e5) * 8 / inst.access_uplink_bps
    branch_a = upload + tau_a  # a runs where the user is
    branch_b = (upload + (2e-3 + 3e5 * 8 / 1e9)) + tau_b + (2e-3 + 4e6 * 8 / 1e9)
    expected = max(branch_a, branch_b) + 0.1 + 5e5 * 8 / inst.access_downlink_bps
    res = simulate(inst, dep, duration_s=2e6, warmup_s=0.0, seed=1, discipline="fcfs")
    stats = res.class_latency["dag@0"]
    assert stats["count"] > 50
    assert stats["p50_s"] == pytest.approx(expected, abs=1e-9)
    assert stats["p99_s"] == pytest.approx(expected, abs=1e-9)
    assert res.latency_s == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("discipline", ["fcfs", "ps"])
def test_parallel_branches_on_one_node_take_turns(discipline: str) -> None:
    # a and b both on node 0 with one server: FCFS runs a then b; PS runs both at half speed
    # until b is done at 0.6 s, then a alone until 0.8 s. Either way c starts at 0.8 s; the
    # analytical critical path lets a and b overlap at full speed.
    inst, _ = _diamond(0.5, 0.3)
    dep = Deployment({"ma": [0], "mb": [0], "mc": [0]}, {("dag", 0): {"a": 0, "b": 0, "c": 0}})
    upload = (2e5 + 3e5) * 8 / inst.access_uplink_bps
    download = 5e5 * 8 / inst.access_downlink_bps
    res = simulate(inst, dep, duration_s=2e6, warmup_s=0.0, seed=1, discipline=discipline)
    stats = res.class_latency["dag@0"]
    assert res.latency_s == pytest.approx(upload + 0.5 + 0.1 + download, abs=1e-12)
    assert stats["p50_s"] == pytest.approx(upload + 0.5 + 0.3 + 0.1 + download, abs=1e-9)


def test_utilisation_matches_evaluate_on_a_generated_instance() -> None:
    inst = generate_instance(5, seed=1, flows=["image-qa", "speech-qa"], load=0.3)
    dep = _fill(inst)
    res = simulate(inst, dep, duration_s=1500.0, warmup_s=100.0, seed=4, service="exponential")
    assert res.requests_completed > 1000
    assert res.utilisation_max_abs_error < 0.025
    assert max(res.utilisation) > 0.1  # something was loaded
    assert res.mean_latency_s > res.latency_s  # queueing added waiting


def test_seeded_reproducibility() -> None:
    inst, dep = _single_node([(0.3, 0.5), (0.2, 1.0)])
    kw = {"duration_s": 2000.0, "warmup_s": 100.0, "service": "exponential"}
    a, b = simulate(inst, dep, seed=7, **kw), simulate(inst, dep, seed=7, **kw)
    c = simulate(inst, dep, seed=8, **kw)
    strip = lambda r: {k: v for k, v in r.to_dict().items() if k != "wall_s"}  # noqa: E731
    assert strip(a) == strip(b)
    assert a.mean_latency_s != c.mean_latency_s


def test_infeasible_or_unrouted_deployment_is_rejected() -> None:
    inst, dep = _single_node([(0.95, 1.0)])  # rho 0.95 > max_utilisation 0.9
    with pytest.raises(SimulationError, match=r"(?s)infeasible.*utilisation 0\.950 > 0\.9"):
        simulate(inst, dep)
    inst, dep = _single_node([(0.5, 1.0)])
    with pytest.raises(SimulationError, match=r"no route.*f0@0"):
        simulate(inst, Deployment({"m0": [0]}, {}))
    with pytest.raises(SimulationError, match="service"):
        simulate(inst, dep, service="uniform")
    with pytest.raises(SimulationError, match="discipline"):
        simulate(inst, dep, discipline="lifo")
    with pytest.raises(SimulationError, match="warmup_s"):
        simulate(inst, dep, duration_s=10.0, warmup_s=10.0)
    assert not math.isnan(evaluate(inst, dep).objective_s)


def test_fcfs_estimate_counts_a_chain_on_one_node_as_one_job() -> None:
    # Two chained stages (0.3 s then 0.2 s) on one FCFS node next to a one-stage class: the
    # second stage joins the queue as the first leaves (behind only what arrived meanwhile), so
    # P-K with the chain as one 0.5 s job estimates the waiting far better than two independent
    # visits (measured: simulated 514 ms, chain as one job 489 ms, two visits 443 ms).
    services = {
        "m0": _service("m0", 0.3e3),
        "m1": _service("m1", 0.2e3),
        "m2": _service("m2", 0.1e3),
    }
    chain = Flow(
        "chain", "", (Stage("a", "m0", user_input_bytes=1e4), Stage("b", "m1", inputs=("a",)))
    )
    single = Flow("single", "", (Stage("s", "m2", user_input_bytes=1e4),))
    inst = Instance([Node("n0", "server", TFLOPS, 1e4)], [],
                    [Demand("chain", 0, 0.8), Demand("single", 0, 1.0)],
                    Catalog(services, {"chain": chain, "single": single}))  # fmt: skip
    dep = route(inst, {s: [0] for s in services})
    no_queue = evaluate(inst, dep).latency_s
    rho, rate = 0.5, 1.8  # 0.8 * 0.5 + 1.0 * 0.1
    as_one_job = no_queue + (0.8 * 0.5**2 + 1.0 * 0.1**2) / (2 * (1 - rho))
    two_visits = no_queue + (0.8 * (0.3**2 + 0.2**2) + 0.1**2) / (2 * (1 - rho)) * 2.6 / rate
    res = simulate(inst, dep, duration_s=60_000.0, warmup_s=1000.0, seed=6, discipline="fcfs")
    assert res.mg1_latency_s == pytest.approx(as_one_job, rel=1e-12)
    assert res.mean_latency_s == pytest.approx(as_one_job, rel=0.08)
    assert abs(res.mean_latency_s - as_one_job) < 0.5 * abs(res.mean_latency_s - two_visits)
