"""The shared inference core: catalog validation and profiles, instances, evaluate and route."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from edgelam.inference.catalog import CATALOG_SCHEMA, Catalog, CatalogError, load_catalog
from edgelam.inference.deployment import Deployment, evaluate, load_deployment, route
from edgelam.inference.instance import (
    Demand,
    Instance,
    InstanceError,
    Link,
    Node,
    generate_instance,
    load_instance,
)
from edgelam.inference.profiling import profile_entry

SERVICE = {"kind": "encoder", "modality": "image", "params": 1e6, "memory_mb": 300.0,
           "gflops_per_unit": 100.0, "unit": "image", "output_bytes_per_unit": 1e6,
           "source": "test"}  # fmt: skip


def _catalog_dict(**flow_stages) -> dict:
    services = {"A": dict(SERVICE), "B": {**SERVICE, "memory_mb": 400.0, "gflops_per_unit": 50.0,
                                          "output_bytes_per_unit": 2000.0}}  # fmt: skip
    return {
        "schema": CATALOG_SCHEMA,
        "services": services,
        "flows": {name: {"stages": stages} for name, stages in flow_stages.items()},
    }


CHAIN = [
    {"id": "a", "service": "A", "user_input_bytes": 1e5},
    {"id": "b", "service": "B", "inputs": ["a"]},
]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["flows"]["f"]["stages"][0].update(inputs=["b"]), r"cycle among stages \['a', 'b'\]"),
        (lambda d: d["flows"]["f"]["stages"][1].update(service="C"), "stage 'b' uses unknown microservice 'C'"),
        (lambda d: d["flows"]["f"]["stages"][1].update(inputs=["z"]), r"stage 'b' reads unknown stages \['z'\]"),
        (lambda d: d["flows"]["f"]["stages"][1].update(id="a"), r"duplicate stage ids \['a'\]"),
        (lambda d: d["flows"]["f"]["stages"][0].pop("user_input_bytes"), "stage 'a' has no inputs and no user_input_bytes"),
        (lambda d: d["services"]["A"].update(memory_mb=-1), r"service 'A'.memory_mb: must be > 0, got -1"),
        (lambda d: d["services"]["A"].update(gflops_per_unit="lots"), r"service 'A'.gflops_per_unit: must be a number"),
        (lambda d: d["services"]["A"].update(memory_mb=1.0), "cannot hold 1e\\+06 parameters at 16 bits"),
        (lambda d: d["services"]["A"].pop("kind"), "service 'A': missing field 'kind'"),
        (lambda d: d["services"]["A"].update(kind="oracle"), "kind 'oracle' is not one of"),
        (lambda d: d["flows"]["f"]["stages"][1].update(units=0), r"flow 'f' stage 1.units: must be > 0"),
    ],
)  # fmt: skip
def test_catalog_rejects_malformed_entries(mutate, message) -> None:
    d = _catalog_dict(f=copy.deepcopy(CHAIN))
    Catalog.from_dict(copy.deepcopy(d))  # the unmutated catalog is fine
    mutate(d)
    with pytest.raises(CatalogError, match=message):
        Catalog.from_dict(d)


def test_user_catalog_merges_over_the_shipped_one(tmp_path) -> None:
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(_catalog_dict(mine=CHAIN)))
    cat = load_catalog(path)
    assert "mine" in cat.flows and "image-qa" in cat.flows and cat.services["A"].memory_mb == 300
    path.write_text("{not json")
    with pytest.raises(CatalogError, match="mine.json: not valid JSON"):
        load_catalog(path)


TORCH_BUILDERS = ("mlp_projector", "query_transformer", "audio_projector")


@pytest.mark.parametrize(
    "name",
    [n for n, s in load_catalog().services.items() if s.profile.get("builder") in TORCH_BUILDERS],
)
def test_profiled_entries_match_a_reprofile(name: str) -> None:
    """Catalog numbers equal a fresh meta-device profile (GFLOP rounded to 4 decimals in the
    catalog); the transformers-built entries are checked in tests/integration."""
    s = load_catalog().services[name]
    p = profile_entry(s.profile)
    assert p["params"] == s.params
    assert p["output_bytes_per_unit"] == s.output_bytes_per_unit
    assert p["memory_mb"] == s.memory_mb
    assert round(p["gflops_per_unit"], 4) == pytest.approx(s.gflops_per_unit, rel=1e-9)


def _two_nodes(**kw) -> Instance:
    cat = Catalog.from_dict(_catalog_dict(f=CHAIN))
    nodes = [Node("n0", "t", 1e12, 1000.0), Node("n1", "t", 2e12, 1000.0)]
    return Instance(nodes, [Link(0, 1, 1e9, 1e-3)], [Demand("f", 0, 2.0)], cat, **kw)


def test_evaluate_matches_a_hand_computation() -> None:
    inst = _two_nodes()
    dep = Deployment({"A": [0], "B": [1]}, {("f", 0): {"a": 0, "b": 1}})
    ev = evaluate(inst, dep)
    upload = 1e5 * 8 / 100e6  # 8 ms; a runs where the user is attached: no transfer
    finish_a = upload + 100e9 / 1e12  # 0.108 s
    finish_b = finish_a + (1e-3 + 8e6 / 1e9) + 50e9 / 2e12  # 1 MB over 1 Gbit/s, 25 ms on n1
    latency = finish_b + (1e-3 + 8 * 2000 / 1e9) + 8 * 2000 / 400e6  # back to n0, download
    assert ev.class_latency_s["f@0"] == pytest.approx(latency, rel=1e-12)
    assert latency == pytest.approx(0.143056, rel=1e-12)
    rho = [2.0 * 0.1, 2.0 * 0.025]
    assert ev.utilisation == pytest.approx(rho, rel=1e-12)
    congestion = sum(r * r / (1 - r) for r in rho)  # 0.05 + 0.0025 / 0.95
    assert ev.objective_s == pytest.approx((2.0 * latency + congestion) / 2.0, rel=1e-12)
    mg1 = 2 * (2 * 0.1**2) / (2 * 0.8) + 2 * (2 * 0.025**2) / (
        2 * 0.95
    )  # visits x lambda E[S^2] / (2(1-rho))
    assert ev.mg1_latency_s == pytest.approx((2.0 * latency + mg1) / 2.0, rel=1e-12)
    assert ev.memory_used_mb == [300.0, 400.0] and ev.feasible and ev.instances == 2


def test_evaluate_reports_violations() -> None:
    inst = _two_nodes(max_utilisation=0.15)
    ev = evaluate(inst, Deployment({"A": [0], "B": [1]}, {("f", 0): {"a": 1, "b": 1}}))
    assert not ev.feasible and "does not host A" in " ".join(ev.violations)
    ev = evaluate(inst, Deployment({"A": [0, 1], "B": [1]}, {("f", 0): {"a": 0, "b": 1}}))
    assert ev.violations == ["node 0 (t): utilisation 0.200 > 0.15"]
    ev = evaluate(inst, Deployment({"A": [0, 1], "B": [0, 1]}))
    assert not ev.feasible and ev.violations == ["class (f, node 0): not routed"]


def test_route_respects_hosts() -> None:
    inst = generate_instance(8, seed=5)
    rng = np.random.default_rng(0)
    placement = {s: sorted(rng.choice(8, size=2, replace=False).tolist()) for s in inst.catalog.services}  # fmt: skip
    missing = "clip-vit-l14"
    del placement[missing]
    dep = route(inst, placement)
    for d in inst.demands:
        flow = inst.catalog.flows[d.flow]
        if missing in flow.services():
            assert (d.flow, d.node) not in dep.routing
            continue
        for s in flow.stages:
            assert dep.routing[d.flow, d.node][s.id] in placement[s.service]
    assert any(missing in inst.catalog.flows[d.flow].services() for d in inst.demands)


def test_instance_json_round_trip(tmp_path) -> None:
    inst = generate_instance(12, seed=7, load=0.4)
    path = inst.save(tmp_path / "inst.json")
    back = load_instance(path)
    assert back.to_dict() == inst.to_dict()
    np.testing.assert_array_equal(back.path_delay, inst.path_delay)
    np.testing.assert_array_equal(back.path_sec_per_bit, inst.path_sec_per_bit)
    dep = route(inst, {s: [0, 5] for s in inst.catalog.services})
    dep.save(tmp_path / "dep.json")
    assert evaluate(inst, load_deployment(tmp_path / "dep.json")) == evaluate(inst, dep)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["nodes"][1].pop("flops"), "node 1: missing field 'flops'"),
        (lambda d: d["nodes"][0].update(memory_mb=-5), r"node 0.memory_mb: must be > 0, got -5"),
        (lambda d: d["links"][0].update(b=99), "link 0: endpoints"),
        (lambda d: d["links"][0].update(bandwidth_bps="fast"), r"link 0.bandwidth_bps: must be a number"),
        (lambda d: d["demands"][0].update(flow="chess"), "demand 0: unknown flow 'chess'"),
        (lambda d: d["demands"][0].update(rate=0), r"demand 0.rate: must be > 0"),
        (lambda d: d.update(max_utilisation=1.5), r"max_utilisation: must be in \(0, 1\)"),
        (lambda d: d.pop("demands"), "missing field 'demands'"),
        (lambda d: d.update(schema="v0"), "'schema' must be"),
    ],
)  # fmt: skip
def test_malformed_instance_errors_name_the_field(tmp_path, mutate, message) -> None:
    d = generate_instance(3, seed=0).to_dict()
    mutate(d)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(d))
    with pytest.raises(InstanceError, match=message) as err:
        load_instance(path)
    assert str(path) in str(err.value)


def test_infeasibility_report_on_impossible_instance() -> None:
    inst = _two_nodes()
    assert inst.infeasibility_report() == []
    small = [Node("n0", "t", 1e12, 340.0), Node("n1", "t", 2e12, 340.0)]
    tiny = Instance(small, inst.links, [Demand("f", 0, 30.0)], inst.catalog)
    report = tiny.infeasibility_report()
    assert any("microservice B needs 400 MiB; the largest node has 340 MiB" in r for r in report)
    assert any("the demands need 4.5 TFLOP/s" in r for r in report)  # 30 x 150 GFLOP
    assert any("one instance of every needed microservice takes 700 MiB" in r for r in report)
