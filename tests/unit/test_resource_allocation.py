"""Uplink-bandwidth allocation: rate model, min-max optimality, Lyapunov scheduling."""

from __future__ import annotations

import doctest
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.optimize import minimize, minimize_scalar

from edgelam.config import ConfigError, build_config
from edgelam.network import DEVICE_PRESETS, DeviceProfile, Network, NetworkConfig, compute_latency
from edgelam.training import bandwidth_split as bs
from edgelam.training.resource_allocation import (
    EqualBandwidth,
    LatencyOptimal,
    LyapunovScheduler,
    ResourceAllocationConfig,
    RoundDemand,
    build_policy,
    demand_from_network,
    evaluate_allocation,
)

PHONE, SERVER = DEVICE_PRESETS["smartphone"], DEVICE_PRESETS["edge-server-a100"]
DOCS = Path(__file__).resolve().parents[2] / "docs" / "resource_allocation.md"


def random_demand(rng: np.random.Generator, k: int) -> RoundDemand:
    """Heterogeneous devices: SNR -10..40 dB, 1-20 Mbit up, 0.05-1 s fixed."""
    return RoundDemand(
        uplink_bits=rng.uniform(1e6, 2e7, k),
        fixed_seconds=rng.uniform(0.05, 1.0, k),
        compute_energy_j=rng.uniform(0.05, 1.0, k),
        tx_power_w=0.2,
        snr_ref=10 ** rng.uniform(-1, 4, k),
        reference_bandwidth_hz=1e6,
        total_bandwidth_hz=k * 1e6,
    )


def network_demand(net: Network, r: int) -> RoundDemand:
    return demand_from_network(net, r, 4e6, 2e6, 3e10, 1e12, PHONE, SERVER)


def completion(demand: RoundDemand, fractions: np.ndarray) -> np.ndarray:
    b = torch.as_tensor(fractions * demand.total_bandwidth_hz)
    return (demand.fixed_seconds + demand.uplink_bits / demand.uplink_rate(b)).numpy()


def brute_force_latency(demand: RoundDemand) -> float:
    """Min-max latency by a general-purpose solver: bounded line search (K=2) or SLSQP."""
    k = demand.num_devices
    if k == 2:
        res = minimize_scalar(
            lambda x: completion(demand, np.array([x, 1 - x])).max(),
            bounds=(1e-9, 1 - 1e-9),
            method="bounded",
            options={"xatol": 1e-12},
        )
        return float(res.fun)
    x0 = np.full(k, 1.0 / k)
    cons = [
        {"type": "eq", "fun": lambda z: z[:k].sum() - 1.0},
        {"type": "ineq", "fun": lambda z: z[k] - completion(demand, z[:k])},
    ]
    res = minimize(
        lambda z: z[k],
        np.append(x0, completion(demand, x0).max()),
        jac=lambda z: np.eye(k + 1)[k],
        constraints=cons,
        bounds=[(1e-9, 1.0)] * k + [(0.0, None)],
        method="SLSQP",
        options={"ftol": 1e-14, "maxiter": 500},
    )
    return float(completion(demand, res.x[:k] / res.x[:k].sum()).max())


# ---- rate model and demand ---------------------------------------------------------------------


def test_rate_model_matches_network_and_is_increasing_concave():
    net = Network(NetworkConfig(num_devices=8, seed=4, rate_gap_db=2.0))
    state = net.round(3)
    demand = network_demand(net, 3)
    b_ref = net.config.uplink_bandwidth_hz
    torch.testing.assert_close(demand.uplink_rate(b_ref), state.uplink_rate, rtol=1e-12, atol=0)
    grid = torch.logspace(3, 9, 61, dtype=torch.float64)
    rates = torch.stack([demand.uplink_rate(b) for b in grid])  # [61, K]
    assert bool((rates.diff(dim=0) > 0).all())
    uniform = torch.linspace(1e4, 2e7, 200, dtype=torch.float64)
    curvature = torch.stack([demand.uplink_rate(b) for b in uniform]).diff(n=2, dim=0)
    assert bool((curvature <= 1e-9 * rates.max()).all())  # concave
    assert bool((rates < demand.rate_constant_hz / math.log(2)).all())  # power-limited ceiling
    # The solver's closed form agrees with the network's formula.
    closed = bs.rate_bps(grid[:, None].numpy(), demand.rate_constant_hz.numpy())
    np.testing.assert_allclose(closed, rates.numpy(), rtol=1e-12)


def test_closed_form_inverse_of_the_rate():
    rng = np.random.default_rng(0)
    c = 10 ** rng.uniform(3, 10, 500)
    b = c * 10 ** rng.uniform(-6, 3, 500)  # SNR at b from +60 dB down to -30 dB
    np.testing.assert_allclose(bs._bandwidth_for_rate(bs.rate_bps(b, c), c), b, rtol=1e-11)
    # Deep in the power-limited regime b is ill-conditioned (~2b/c): rounding of r alone.
    b = c * 10 ** rng.uniform(3, 6, 500)
    np.testing.assert_allclose(bs._bandwidth_for_rate(bs.rate_bps(b, c), c), b, rtol=1e-8)
    ceiling = c / math.log(2)
    assert np.isinf(bs._bandwidth_for_rate(ceiling * 1.001, c)).all()
    assert (bs._bandwidth_for_rate(np.zeros(3), c[:3]) == 0).all()


def test_demand_from_network_reproduces_downlink_airtime_and_compute():
    net = Network(NetworkConfig(num_devices=5, seed=1))
    state = net.round(7)
    down = torch.tensor([1e6, 2e6, 3e6, 4e6, 5e6], dtype=torch.float64)
    only_air = demand_from_network(net, state, 1e6, down, 0.0, 0.0, PHONE, SERVER)
    expected = net.downlink_cost(down, state).seconds
    torch.testing.assert_close(only_air.fixed_seconds, expected, rtol=1e-15, atol=0)
    slow = DeviceProfile("slow", 1e11, 0.5, 2**30, 2.0)
    profiles = [PHONE, slow, PHONE, slow, PHONE]
    full = demand_from_network(net, 7, 1e6, down, 1e10, 1e12, profiles, SERVER)
    device_s = torch.tensor([compute_latency(1e10, p) for p in profiles], dtype=torch.float64)
    server_s = compute_latency(1e12, SERVER)
    torch.testing.assert_close(full.fixed_seconds, expected + device_s + server_s)
    torch.testing.assert_close(full.compute_energy_j[1], torch.tensor(2.0 * 1e10 / 5e10).double())
    assert full.total_bandwidth_hz == 5 * net.config.uplink_bandwidth_hz
    assert full.tx_power_w[0].item() == pytest.approx(10 ** ((23.0 - 30.0) / 10.0))


# ---- latency-optimal split ---------------------------------------------------------------------


def test_latency_optimal_matches_brute_force():
    gaps = []
    for seed in range(24):
        rng = np.random.default_rng(seed)
        demand = random_demand(rng, 2 + seed % 4)
        ours = LatencyOptimal().allocate(demand).latency_s
        reference = brute_force_latency(demand)
        gaps.append((ours - reference) / reference)
    print(f"latency-optimal vs brute force: relative gap in [{min(gaps):.1e}, {max(gaps):.1e}]")
    assert max(gaps) < 1e-9  # never worse than the general-purpose solver
    assert min(gaps) > -1e-6  # and the solver agrees to its tolerance


def test_latency_optimal_beats_equal_split_and_equalises_completion():
    for seed in range(40):
        rng = np.random.default_rng(100 + seed)
        demand = random_demand(rng, int(rng.integers(2, 11)))
        best = LatencyOptimal().allocate(demand, seed)
        equal = EqualBandwidth().allocate(demand, seed)
        assert best.latency_s <= equal.latency_s * (1 + 1e-12)
        spread = best.completion_seconds.max() - best.completion_seconds.min()
        assert float(spread) <= 1e-9 * best.latency_s
        assert float(best.bandwidth_hz.sum()) == pytest.approx(demand.total_bandwidth_hz, 1e-12)
    net = Network(NetworkConfig(num_devices=10, seed=0))
    saved = []
    for r in range(100):
        demand = network_demand(net, r)
        equal = EqualBandwidth().allocate(demand, r).latency_s
        saved.append(1 - LatencyOptimal().allocate(demand, r).latency_s / equal)
    print(f"latency saved vs equal split (UMa, K=10): mean {np.mean(saved):.1%}")
    assert np.mean(saved) > 0.2 and min(saved) >= 0


def test_devices_without_bits_and_given_subsets():
    demand = RoundDemand([0.0, 4e6, 4e6], [3.0, 0.1, 0.2], 0.5, 0.2, [10.0, 100.0, 10.0], 1e6, 3e6)
    alloc = LatencyOptimal().allocate(demand)
    assert alloc.bandwidth_hz[0] == 0 and alloc.latency_s == 3.0  # its fixed time dominates
    assert float(alloc.bandwidth_hz.sum()) == pytest.approx(3e6)
    assert bool((alloc.completion_seconds[1:] < 3.0).all())
    sub = LatencyOptimal(devices=[1, 2]).allocate(demand, 4)
    assert sub.scheduled.tolist() == [False, True, True] and sub.bandwidth_hz[0] == 0
    assert sub.energy_j[0] == 0 and sub.round == 4
    assert sub.completion_seconds[1].item() == pytest.approx(sub.completion_seconds[2].item())
    json.dumps(sub.as_dict())


def test_invalid_inputs_name_the_field():
    good = {
        "uplink_bits": [1e6, 1e6],
        "fixed_seconds": 0.1,
        "compute_energy_j": 0.1,
        "tx_power_w": 0.2,
        "snr_ref": 10.0,
        "reference_bandwidth_hz": 1e6,
        "total_bandwidth_hz": 2e6,
    }
    bad = [
        ("uplink_bits", [-1.0, 1e6]),
        ("fixed_seconds", [0.1, 0.1, 0.1]),
        ("snr_ref", 0.0),
        ("total_bandwidth_hz", 0.0),
        ("reference_bandwidth_hz", -1.0),
    ]
    for name, value in bad:
        with pytest.raises(ConfigError, match=name):
            RoundDemand(**{**good, name: value})
    demand = RoundDemand(**good)
    with pytest.raises(ConfigError, match="bandwidth_hz"):
        evaluate_allocation(demand, [True, True], [1.5e6, 1.5e6])
    with pytest.raises(ConfigError, match="bandwidth_hz"):
        evaluate_allocation(demand, [True, False], [1e6, 1e6])
    with pytest.raises(ConfigError, match="bandwidth_hz"):
        evaluate_allocation(demand, [True, True], [2e6, 0.0])
    with pytest.raises(ConfigError, match="devices"):
        LatencyOptimal(devices=[0, 5]).allocate(demand)
    with pytest.raises(ConfigError, match="num_devices"):
        LyapunovScheduler(1.0, 0.5)
    with pytest.raises(ConfigError, match="num_devices"):
        LyapunovScheduler(1.0, [0.5, 0.5], weights=[0.2, 0.3, 0.5])
    with pytest.raises(ConfigError, match="min_devices"):
        LyapunovScheduler(1.0, 0.5, num_devices=2, min_devices=3)
    with pytest.raises(ConfigError, match="demand"):
        LyapunovScheduler(1.0, 0.5, num_devices=3).allocate(demand)


# ---- Lyapunov scheduler ----------------------------------------------------------------------


def scheduler_with_queue(k: int, queue: np.ndarray, **kwargs) -> LyapunovScheduler:
    scheduler = LyapunovScheduler(energy_budget_j=0.5, num_devices=k, **kwargs)
    scheduler.load_state_dict({"virtual_queue": queue, "energy_sum_j": [0.0] * k, "rounds": 0})
    return scheduler


def test_exact_enumeration_equals_brute_force():
    for seed in range(12):
        rng = np.random.default_rng(seed)
        k, min_devices = 3 + seed % 3, 1 + seed % 2
        demand, queue = random_demand(rng, k), rng.uniform(0, 1, k)
        v, lam, w = float(rng.uniform(0.5, 10)), float(rng.uniform(0.05, 1)), rng.dirichlet([1] * k)
        scheduler = scheduler_with_queue(
            k, queue, v=v, latency_weight=lam, weights=w, min_devices=min_devices
        )
        chosen = scheduler.allocate(demand, seed)
        best_value, best_set = math.inf, None
        for size in range(min_devices, k + 1):
            for subset in itertools.combinations(range(k), size):
                a = LatencyOptimal(devices=subset).allocate(demand)
                value = v * (lam * a.latency_s - w[list(subset)].sum())
                value += float((torch.as_tensor(queue) * a.energy_j).sum())
                if value < best_value:
                    best_value, best_set = value, subset
        assert chosen.objective == pytest.approx(best_value, rel=1e-9, abs=1e-12)
        assert chosen.scheduled.nonzero().flatten().tolist() == list(best_set)
        assert chosen.num_scheduled >= min_devices


def test_greedy_is_close_to_exact_on_eight_devices():
    gaps = []
    for seed in range(50):
        rng = np.random.default_rng(seed)
        demand, queue = random_demand(rng, 8), rng.uniform(0, 1, 8)
        kwargs = {
            "v": float(10 ** rng.uniform(0, 1)),
            "latency_weight": float(10 ** rng.uniform(-1.5, 0.5)),
            "weights": rng.dirichlet([1] * 8),
        }
        exact = scheduler_with_queue(8, queue, **kwargs).allocate(demand)
        greedy = scheduler_with_queue(8, queue, exact_max_devices=0, **kwargs).allocate(demand)
        assert greedy.objective >= exact.objective - 1e-12
        gaps.append((greedy.objective - exact.objective) / abs(exact.objective))
    gaps = np.array(gaps)
    exact_share = float(np.mean(gaps < 1e-12))
    print(
        f"greedy vs exact (K=8, 50 instances): exact in {exact_share:.0%}, mean gap {gaps.mean():.2%}"
    )
    assert exact_share >= 0.85 and gaps.mean() < 0.03


@pytest.fixture(scope="module")
def horizon():
    """2000 rounds of fading of a K=5 cell and budgets at half the all-scheduled energy."""
    net = Network(NetworkConfig(num_devices=5, seed=3))
    demands = [network_demand(net, r) for r in range(2000)]
    equal = torch.stack([EqualBandwidth().allocate(d, r).energy_j for r, d in enumerate(demands)])
    return demands, 0.5 * equal.mean(0)


def run_scheduler(demands, budget, v):
    scheduler = LyapunovScheduler(v, budget, latency_weight=1.0)
    sizes, queues, penalty = [], [], []
    for r, demand in enumerate(demands):
        allocation = scheduler.allocate(demand, r)
        scheduler.update(allocation)
        sizes.append(allocation.num_scheduled)
        queues.append(float(scheduler.virtual_queue.sum()))
        penalty.append(allocation.latency_s - float(scheduler.weights[allocation.scheduled].sum()))
    return scheduler, np.mean(sizes), np.mean(queues), np.mean(penalty)


def test_lyapunov_meets_energy_budgets_with_v_tradeoff(horizon):
    demands, budget = horizon
    rounds = len(demands)
    results = {v: run_scheduler(demands, budget, v) for v in (0.1, 10.0)}
    for v, (scheduler, size, queue, penalty) in results.items():
        ratio = scheduler.average_energy_j / budget
        print(
            f"V={v}: avg energy/budget max {ratio.max():.3f}, {size:.2f} devices/round, "
            f"avg backlog {queue:.2f} J, penalty {penalty:.4f}"
        )
        assert bool((ratio <= 1 + 2 / math.sqrt(rounds)).all())
        # Queue conservation: the average excess never exceeds the final backlog / T.
        excess = scheduler.average_energy_j - budget
        assert bool((excess <= scheduler.virtual_queue / rounds + 1e-12).all())
    (_, n_lo, q_lo, p_lo), (_, n_hi, q_hi, p_hi) = results[0.1], results[10.0]
    assert n_hi > n_lo and p_hi < p_lo  # larger V: more devices, better penalty (O(1/V)) ...
    assert q_hi > 5 * q_lo  # ... at a larger backlog (O(V))


def test_queue_state_round_trips(horizon):
    demands, budget = horizon
    first = LyapunovScheduler(1.0, budget)
    for r in range(30):
        first.update(first.allocate(demands[r], r))
    resumed = LyapunovScheduler(1.0, budget)
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    assert resumed.rounds == 30 and bool(resumed.virtual_queue.gt(0).any())
    for r in range(30, 40):
        a, b = first.allocate(demands[r], r), resumed.allocate(demands[r], r)
        assert torch.equal(a.bandwidth_hz, b.bandwidth_hz) and a.objective == b.objective
        first.update(a)
        resumed.update(b)
    assert torch.equal(first.virtual_queue, resumed.virtual_queue)


def test_greedy_respects_min_devices_and_config_builds_policies():
    demand = random_demand(np.random.default_rng(5), 14)
    greedy = LyapunovScheduler(1.0, 0.5, num_devices=14, min_devices=4)
    assert greedy.allocate(demand).num_scheduled >= 4  # K > exact_max_devices: greedy
    cfg = build_config(ResourceAllocationConfig, overrides={"policy": "lyapunov", "min_devices": 2})
    policy = build_policy(cfg, num_devices=3, weights=[0.5, 0.25, 0.25])
    assert isinstance(policy, LyapunovScheduler) and policy.min_devices == 2
    assert isinstance(build_policy(ResourceAllocationConfig("equal"), 3), EqualBandwidth)
    with pytest.raises(ConfigError, match="policy"):
        build_config(ResourceAllocationConfig, overrides={"policy": "random"})


def test_docs_example_runs():
    result = doctest.testfile(str(DOCS), module_relative=False, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
