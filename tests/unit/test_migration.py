"""Mobility-aware migration: traces, the per-slot model, solvers, the Lyapunov controller, the
offline optimum and the CLI."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgelam.config import ConfigError
from edgelam.inference.migration.baselines import (
    FollowUser,
    MyopicLatency,
    NeverMigrate,
    brute_force_offline,
    offline_lagrangian,
    pareto_dp,
    transition_tables,
)
from edgelam.inference.migration.command import migrate_group
from edgelam.inference.migration.lyapunov import (
    LyapunovPolicy,
    VirtualQueue,
    queue_bound,
    simulate,
    solve_alternating,
    solve_exact,
)
from edgelam.inference.migration.model import MigrationSystem, SystemConfig
from edgelam.inference.migration.traces import TraceError, make_trace


@pytest.fixture(scope="module")
def small() -> MigrationSystem:
    """K = 3 users on a 4-server ring highway (64 placements), 120 slots."""
    return MigrationSystem(make_trace("highway", 3, 120, 3, num_servers=4))


def test_virtual_queue_update():
    q = VirtualQueue(budget=2.0, backlog=1.0)
    assert [q.update(c) for c in (0.5, 5.0, 2.0, 0.0, 0.0, 0.0)] == [0.0, 3.0, 3.0, 1.0, 0.0, 0.0]
    with pytest.raises(ConfigError, match="budget"):
        VirtualQueue(budget=-1.0)


def test_trace_speeds_and_serving():
    hw = make_trace("highway", 5, 200, 0)
    v = hw.speed_mps
    assert v.min() >= 80 / 3.6 - 1e-9 and v.max() <= 130 / 3.6 + 1e-9
    step = np.linalg.norm(np.diff(hw.positions, axis=0), axis=-1)  # chord of the ring arc
    np.testing.assert_allclose(step, v[:-1] * hw.slot_s, rtol=1e-3)
    assert (hw.handovers() > 0).all()
    d = hw.distances()
    assert (np.take_along_axis(d, hw.serving()[..., None], -1)[..., 0] == d.min(-1)).all()

    tr = make_trace("train", 4, 300, 1, trains=2)
    v = tr.speed_mps
    assert v.min() >= 300 / 3.6 - 1e-9 and v.max() <= 350 / 3.6 + 1e-9
    step = np.linalg.norm(np.diff(tr.positions, axis=0), axis=-1)
    assert (step <= v[:-1] + 1e-6).all()  # shorter only where the train turns back
    assert np.mean(np.abs(step - v[:-1]) < 1e-6) > 0.9
    same = np.array(tr.info["train"]) == 0
    spread = np.ptp(tr.positions[:, same, 0], axis=1)
    assert spread.max() <= tr.info["train_length_m"] + 1e-6  # passengers stay in their train

    wp = make_trace("waypoint", 6, 300, 2, area_m=1500.0)
    step = np.linalg.norm(np.diff(wp.positions, axis=0), axis=-1)
    assert (step <= wp.speed_mps[:-1] * wp.slot_s + 1e-9).all() and wp.speed_mps.max() <= 15
    assert wp.positions.min() >= 0 and wp.positions.max() <= 1500.0
    assert (wp.speed_mps == 0).any() and (wp.speed_mps > 1).any()  # pauses and legs

    again = make_trace("waypoint", 6, 300, 2, area_m=1500.0)
    np.testing.assert_array_equal(again.positions, wp.positions)
    assert not np.array_equal(make_trace("waypoint", 6, 300, 3).positions, wp.positions)
    with pytest.raises(TraceError, match="speed_kmh"):
        make_trace("highway", 2, 10, 0, speed_kmh=(130.0, 80.0))
    with pytest.raises(TraceError, match="trace"):
        make_trace("metro", 2, 10, 0)


def test_slot_batch_matches_reference(small):
    rng = np.random.default_rng(0)
    for t in (0, 37, 119):
        p = small.slot(t, rng.integers(0, small.N, small.K))
        X = rng.integers(0, small.N, (40, small.K))
        lat, cost = p.evaluate(X)
        np.testing.assert_allclose(lat, [p.latency(x) for x in X], rtol=1e-12)
        np.testing.assert_allclose(cost, [p.cost(x) for x in X], rtol=1e-12, atol=1e-15)
        assert p.cost(p.prev) == 0.0


def test_users_moving_together_share_weights():
    sys_ = MigrationSystem(make_trace("highway", 2, 5, 0, num_servers=4),
                           SystemConfig(flows=("image-qa",)))  # fmt: skip
    p = sys_.slot(0, np.array([0, 0]))
    one, both = p.breakdown([1, 0]), p.breakdown([1, 1])
    state = float(p.move_kj[1, 1])
    assert one["new_instances"] == both["new_instances"] == 3  # encoder, projector, LLM
    assert both["cost_kj"] == pytest.approx(one["cost_kj"] + state, rel=1e-12)
    # the LLM's weights dominate: 2 x 6.74e9 params shipped one hop and loaded
    cfg = sys_.config
    llm = 2 * 6.74e9 * (8 * cfg.energy_per_bit_hop_j + 400.0 / cfg.load_bytes_per_s) / 1e3
    assert one["cost_kj"] > llm
    # returning next to a chain that still runs the services costs only the state
    q = sys_.slot(0, np.array([1, 0]))
    assert q.breakdown([0, 0])["cost_kj"] == pytest.approx(float(q.move_kj[0, 0]))


def test_exact_solver_equals_brute_force(small):
    rng = np.random.default_rng(1)
    for t, V, Q in ((5, 1.0, 0.0), (40, 1.0, 2.0), (80, 0.1, 5.0), (100, 10.0, 0.3)):
        p = small.slot(t, rng.integers(0, small.N, small.K))
        sol = solve_exact(p, V, Q)
        brute = min(V * p.latency(x) + Q * p.cost(x)
                    for x in itertools.product(range(small.N), repeat=small.K))  # fmt: skip
        assert sol.objective == pytest.approx(brute, rel=1e-12)
        assert V * p.latency(sol.x) + Q * p.cost(sol.x) == pytest.approx(brute, rel=1e-12)
    with pytest.raises(ConfigError, match="max_placements"):
        solve_exact(p, 1.0, 0.0, max_placements=10)


def test_alternating_never_worse_than_start_and_close_to_exact():
    sys_ = MigrationSystem(make_trace("train", 4, 60, 1, num_servers=6))
    rng = np.random.default_rng(2)
    ratios = []
    for t in range(0, 60, 4):
        p = sys_.slot(t, rng.integers(0, sys_.N, sys_.K))
        for V, Q in ((1.0, 0.0), (1.0, 3.0), (10.0, 1.0), (0.1, 2.0)):
            alt = solve_alternating(p, V, Q)
            for start in (p.prev, sys_.access[t]):
                lat, cost = p.evaluate(np.asarray(start)[None])
                assert alt.objective <= V * lat[0] + Q * cost[0] + 1e-9
            ratios.append(alt.objective / solve_exact(p, V, Q).objective)
    ratios = np.array(ratios)
    assert ratios.min() >= 1 - 1e-12  # exact is a lower bound
    assert ratios.mean() < 1.01 and np.mean(ratios < 1 + 1e-9) > 0.8


def _tiny(k: int, n: int, slots: int) -> MigrationSystem:
    return MigrationSystem(make_trace("train", k, slots, 4, num_servers=n,
                                      spacing_m=(300.0, 400.0)),
                           SystemConfig(flows=("image-caption", "speech-qa")))  # fmt: skip


@pytest.mark.parametrize("k,n", [(1, 3), (2, 2)])
def test_offline_dp_equals_brute_force(k, n):
    sys_ = _tiny(k, n, 6)
    L, C, states, s0 = transition_tables(sys_)
    free = brute_force_offline(L, C, states, s0, np.inf)
    for budget in (0.0, 0.3 * free.cost_kj, 0.7 * free.cost_kj, np.inf):
        brute = brute_force_offline(L, C, states, s0, budget)
        exact = pareto_dp(L, C, states, s0, budget)
        lag = offline_lagrangian(L, C, states, s0, budget)
        assert exact.latency_ms == pytest.approx(brute.latency_ms, rel=1e-12)
        assert exact.cost_kj <= budget + 1e-9 and lag.cost_kj <= budget + 1e-9
        assert lag.lower_bound_ms <= exact.latency_ms + 1e-9 <= lag.latency_ms + 2e-9
        replay = simulate(sys_, None, placements=exact.placements)
        assert replay.latency_ms.sum() == pytest.approx(exact.latency_ms, rel=1e-12)
        assert replay.cost_kj.sum() == pytest.approx(exact.cost_kj, rel=1e-12, abs=1e-12)


def test_offline_optimum_beats_online_policies_at_equal_cost():
    sys_ = MigrationSystem(make_trace("highway", 2, 60, 5, num_servers=4))
    L, C, states, s0 = transition_tables(sys_)
    budget = 0.3 * simulate(sys_, FollowUser()).cost_kj.mean()
    policies = [NeverMigrate(), FollowUser(), MyopicLatency()]
    policies += [LyapunovPolicy(V, budget) for V in (0.1, 1.0, 10.0, 100.0)]
    for policy in policies:
        tr = simulate(sys_, policy)
        opt = pareto_dp(L, C, states, s0, tr.cost_kj.sum())
        assert opt.latency_ms <= tr.latency_ms.sum() + 1e-9, policy.name
    never = simulate(sys_, NeverMigrate()).latency_ms.sum()
    assert pareto_dp(L, C, states, s0, 0.0).latency_ms == pytest.approx(never, rel=1e-12)


def test_large_v_is_myopic_and_small_v_spends_nothing(small):
    myopic = simulate(small, MyopicLatency())
    budget = 0.2 * myopic.cost_kj.mean()
    big = simulate(small, LyapunovPolicy(1e9, budget))
    np.testing.assert_array_equal(big.placements, myopic.placements)
    # V -> 0 with no budget: after the first migration (taken while Q = 0, myopically) nothing
    # is worth its cost, so the time-average cost tends to the minimum (never migrating: 0) as
    # O(1/T); with a budget, small V spends the budget and no more
    tiny = simulate(small, LyapunovPolicy(1e-9, 0.0))
    assert (tiny.cost_kj > 0).sum() <= 1 and tiny.cost_kj.mean() <= tiny.cost_kj.max() / small.T
    low = simulate(small, LyapunovPolicy(1e-9, budget)).cost_kj
    assert low.mean() <= budget + low.max() / small.T
    # in between, latency falls and cost rises with V
    runs = [simulate(small, LyapunovPolicy(V, budget)) for V in (0.01, 1.0, 100.0)]
    lat = [r.latency_ms.mean() for r in runs]
    assert lat[0] >= lat[1] >= lat[2] >= myopic.latency_ms.mean() - 1e-9
    assert runs[0].cost_kj.mean() <= runs[2].cost_kj.mean()


def test_budget_met_within_one_over_t_and_queue_bounded():
    sys_ = MigrationSystem(make_trace("highway", 3, 600, 6, num_servers=5))
    budget = 0.3 * simulate(sys_, FollowUser()).cost_kj.mean()
    never = simulate(sys_, NeverMigrate()).latency_ms.mean()
    myopic = simulate(sys_, MyopicLatency())
    # the check below is not vacuous: ignoring the cost overruns the budget by far
    assert myopic.cost_kj.mean() > budget + myopic.cost_kj.max() / sys_.T
    for V in (0.1, 1.0, 10.0, 100.0):
        tr = simulate(sys_, LyapunovPolicy(V, budget))
        q_end = max(tr.queue_kj[-1] + tr.cost_kj[-1] - budget, 0.0)
        assert tr.cost_kj.mean() <= budget + q_end / sys_.T + 1e-9  # Q(T) >= sum(C - budget)
        assert tr.queue_kj.max() <= queue_bound(sys_, V)["Q_max_kj"]  # O(V) backlog
        assert tr.latency_ms.mean() < never
        if V <= 1.0:  # moderate V: the overrun is at most one slot's cost spread over T
            assert tr.cost_kj.mean() <= budget + tr.cost_kj.max() / sys_.T


def test_cli_run_smoke(tmp_path):
    out = tmp_path / "run"
    args = ["run", "--trace", "highway", "--V", "0.1,10", "--V", "1000", "--users", "2",
            "--slots", "30", "--seed", "1", "--tighten", "0.2", "--out", str(out), "--json"]  # fmt: skip
    res = CliRunner().invoke(migrate_group, args)
    assert res.exit_code == 0, res.output
    s = json.loads(res.output)
    assert [r["V"] for r in s["runs"] if r["policy"] == "lyapunov"] == [0.1, 10.0, 1000.0]
    assert {"never", "follow", "myopic", "offline"} <= {r["policy"] for r in s["runs"]}
    assert s["queue_budget_kj"] == pytest.approx(0.8 * s["budget_kj"])
    for name in ("config.json", "metrics.jsonl", "summary.json", "tradeoff.png", "v_sweep.png",
                 "queue.png"):  # fmt: skip
        assert (out / name).is_file(), name
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 30 * 7  # 3 baselines + 3 V + offline, one record per slot
    res = CliRunner().invoke(migrate_group, ["run", "--V", "fast", "--out", str(tmp_path / "x")])
    assert isinstance(res.exception, ConfigError) and "--V" in str(res.exception)
    res = CliRunner().invoke(migrate_group, ["run", "--budget", "-1", "--out", str(out)])
    assert isinstance(res.exception, ConfigError) and "budget" in str(res.exception)
