"""Robust microservice orchestration: MDP, budgets, baselines, PPO/RARL training, CLI."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from gymnasium.utils.env_checker import check_env

from edgelam.config import ConfigError
from edgelam.inference.catalog import Catalog, Flow, Microservice, Stage
from edgelam.inference.deployment import Deployment, class_latency
from edgelam.inference.instance import Demand, Instance, InstanceError, Link, Node
from edgelam.inference.orchestration.env import (
    EnvConfig,
    OrchestrationCore,
    OrchestrationEnv,
    rate_deviation,
)
from edgelam.inference.orchestration.evaluate import episode_metrics
from edgelam.inference.orchestration.policies import (
    GreedyLatencyRouter,
    LeastLoadedRouter,
    RandomAttacker,
    RandomRouter,
    structured_attacks,
)
from edgelam.inference.orchestration.ppo import PPOConfig
from edgelam.inference.orchestration.rarl import (
    RARLConfig,
    Trainer,
    build_substrate,
    load_run,
    rollout,
    train_rarl,
)
from edgelam.inference.orchestration.substrate import Substrate, replicate
from edgelam.runs import read_metrics

TINY_ENV = EnvConfig(horizon=8, adversary_period=2)
TINY_PPO = PPOConfig(num_envs=8, update_epochs=2, num_minibatches=2, hidden=16)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Torch on one thread (the machine is shared; also makes resumed runs bit-identical)."""


@pytest.fixture(scope="module")
def tiny_sub() -> Substrate:
    return build_substrate(RARLConfig(nodes=4, seed=0, env=TINY_ENV))


def _hand_instance() -> Instance:
    """Three nodes on a line, one two-stage flow requested at node 0."""
    services = {
        "enc": Microservice("enc", "encoder", "image", 1e6, 100.0, 4.0, "image", 1e5, "test"),
        "llm": Microservice("llm", "backbone", "text", 1e6, 100.0, 10.0, "token", 2e3, "test"),
    }
    flow = Flow("f", "", (Stage("a", "enc", 1.0, (), 2e5), Stage("b", "llm", 2.0, ("a",))))
    nodes = [Node("n0", "x", 1e12, 1e3), Node("n1", "x", 2e12, 1e3), Node("n2", "x", 4e12, 1e3)]
    links = [Link(0, 1, 1e9, 1e-3), Link(1, 2, 2e9, 2e-3)]
    return Instance(nodes, links, [Demand("f", 0, 1.0)], Catalog(services, {"f": flow}))


def test_reward_equals_hand_computation():
    inst = _hand_instance()
    sub = Substrate.build(inst, Deployment({"enc": [1, 2], "llm": [1, 2]}))
    cfg = EnvConfig(slot_s=0.5, deadline_slack=1.5, miss_penalty_s=0.7, move_prob=0.0)
    core = OrchestrationCore(sub, cfg, batch=1)
    core.reset(np.random.default_rng(0))
    core.backlog[:] = [0.0, 0.1, 0.7]
    core.arrivals[:] = 2
    # stage a -> replica 0 (node 1), stage b -> replica 1 (node 2)
    reward, info = core.step(np.array([[0, 1]]))
    tau_a1 = 4e9 / 2e12  # 4 GFLOP on node 1
    tau_b2 = 2 * 10e9 / 4e12  # 2 units x 10 GFLOP on node 2
    upload = 2e5 * 8 / 100e6
    f_a = upload + (1e-3 + 2e5 * 8 / 1e9) + (0.1 + 2 * tau_a1 / 2) + tau_a1
    f_b = f_a + (2e-3 + 1e5 * 8 / 2e9) + (0.7 + 2 * tau_b2 / 2) + tau_b2
    back = 2e-3 + 1e-3 + 2 * 2e3 * 8 / 2e9 + 2 * 2e3 * 8 / 1e9  # 2 -> 1 -> 0, two hops
    latency = f_b + back + 2 * 2e3 * 8 / 400e6
    deadline = 1.5 * (upload + 4e9 / 4e12 + 20e9 / 4e12 + 2 * 2e3 * 8 / 400e6)
    assert latency > deadline  # a miss: the penalty is part of the check
    expected = -2 * (latency + 0.7) / (1.0 * 0.5)
    assert reward[0] == pytest.approx(expected, rel=1e-12)
    assert info["misses"][0] == 2 and info["latency_sum"][0] == pytest.approx(2 * latency)
    assert core.backlog[0] == pytest.approx([0.0, 0.0, 0.7 + 2 * tau_b2 - 0.5])  # node 1 drained


def test_unloaded_latency_matches_deployment_class_latency(tiny_sub):
    core = OrchestrationCore(tiny_sub, TINY_ENV, batch=4)
    rng = np.random.default_rng(1)
    core.reset(rng)
    core.arrivals[:] = 0
    route = rng.integers(0, tiny_sub.num_hosts, size=(4, tiny_sub.num_components))
    lat, _ = core.latency(route)
    for b in range(4):
        for g in range(tiny_sub.num_groups):
            ks = np.flatnonzero(tiny_sub.comp_group == g)
            nodes = {tiny_sub.comp_stage[k]: int(tiny_sub.hosts[k, route[b, k]]) for k in ks}
            ref = class_latency(tiny_sub.inst, Deployment({}), tiny_sub.group_flow[g], int(core.location[b, g]), nodes)  # fmt: skip
            assert lat[b, g] == pytest.approx(ref, rel=1e-12)


def test_gymnasium_api(tiny_sub):
    check_env(OrchestrationEnv(tiny_sub, TINY_ENV), skip_render_check=True)
    env = OrchestrationEnv(tiny_sub, TINY_ENV, attacker=RandomAttacker())
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=3)
    steps = 0
    while True:
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        steps += 1
        assert env.observation_space.contains(obs) and reward <= 0 and not terminated
        if truncated:
            break
    assert steps == TINY_ENV.horizon


def test_replicated_deployment(tiny_sub):
    inst = tiny_sub.inst
    assert (tiny_sub.num_hosts >= 2).all()
    used = np.zeros(len(inst.nodes))
    for s, nodes in tiny_sub.placement.items():
        used[nodes] += inst.catalog.services[s].memory_mb
    assert (used <= [n.memory_mb for n in inst.nodes]).all()
    with pytest.raises(InstanceError, match="min_replicas"):
        replicate(inst, min_replicas=1)
    with pytest.raises(InstanceError, match="no node has"):
        replicate(inst, min_replicas=5, max_replicas=5)  # only 4 nodes
    with pytest.raises(InstanceError, match=">= 2"):
        Substrate.build(inst, Deployment({s: v[:1] for s, v in tiny_sub.placement.items()}))


def test_adversary_stays_within_budget(tiny_sub):
    rng = np.random.default_rng(0)
    rate = tiny_sub.rate
    for eps, cap in ((0.3, 2.0), (1.0, 0.5), (0.05, 10.0)):
        picks = rng.integers(0, len(rate), size=(64, 4))
        delta = rate_deviation(picks, rate, eps, cap)
        assert (delta >= 0).all() and (delta <= cap + 1e-12).all()
        assert (delta @ rate <= eps * rate.sum() * (1 + 1e-12)).all()
    # picks of one group spend the whole budget on it unless the cap binds
    g = int(np.argmax(rate))
    delta = rate_deviation(np.full((1, 4), g), rate, 0.1, 100.0)
    assert delta[0, g] * rate[g] == pytest.approx(0.1 * rate.sum()) and delta.sum() == delta[0, g]

    cfg = dataclasses.replace(TINY_ENV, move_prob=0.0, move_budget=1, rate_budget=0.2)
    core = OrchestrationCore(tiny_sub, cfg, batch=32)
    core.reset(rng)
    attackers = [RandomAttacker(), *structured_attacks(core).values()]
    for t in range(6):
        before = core.location.copy()
        adv = attackers[t % len(attackers)](core, rng)
        core.step(rng.integers(0, tiny_sub.num_hosts, size=(32, tiny_sub.num_components)), adv)
        moved = core.location != before
        assert (moved.sum(1) <= 1).all()  # one forced move per slot, no natural mobility
        for b, gr in zip(*np.nonzero(moved), strict=True):
            assert core.location[b, gr] in tiny_sub.neighbours[before[b, gr]]
        extra = (core.multiplier - 1) @ rate
        assert (core.multiplier >= 1).all() and (extra <= 0.2 * rate.sum() * (1 + 1e-12)).all()
    with pytest.raises(ValueError, match="adversary action"):
        core.step(np.zeros((32, tiny_sub.num_components), int), np.full((32, len(core.adv_nvec)), 99))  # fmt: skip


def test_least_loaded_and_greedy_beat_random():
    sub = build_substrate(RARLConfig(nodes=10, seed=0, load=0.4))
    core = OrchestrationCore(sub, EnvConfig(horizon=24), batch=8)
    util = {}
    for name, router in (("random", RandomRouter()), ("least", LeastLoadedRouter()),
                         ("greedy", GreedyLatencyRouter())):  # fmt: skip
        m = episode_metrics(rollout(core, router, None, np.random.default_rng(5)))
        util[name] = (m["utility"], m["utility_ci95"])
    for better in ("least", "greedy"):
        assert util[better][0] - util[better][1] > util["random"][0] + util["random"][1]


def test_ppo_improves_return_on_tiny_env(tiny_sub):
    cfg = RARLConfig(nodes=4, robust=False, env=TINY_ENV, ppo=TINY_PPO)
    trainer = Trainer(cfg, tiny_sub)
    core = OrchestrationCore(tiny_sub, TINY_ENV, batch=64)

    def score() -> float:
        return episode_metrics(rollout(core, trainer.router, None, np.random.default_rng(99)))["utility"]  # fmt: skip

    before = score()
    for _ in range(12):
        trainer.iterate("protagonist")
    after = score()
    assert after > before + 0.3 * abs(before), (before, after)


def test_checkpoint_resume_is_exact(tmp_path, tiny_sub):
    cfg = RARLConfig(nodes=4, iterations=4, pro_phase=2, adv_phase=1, env=TINY_ENV, ppo=TINY_PPO)
    train_rarl(cfg, tmp_path / "a", progress=False)
    train_rarl(cfg, tmp_path / "b", progress=False, stop_after=1)
    assert len(read_metrics(tmp_path / "b")) == 3  # 2 protagonist + 1 adversary iterations
    train_rarl(cfg, tmp_path / "b", progress=False)  # resumes at round 2
    strip = lambda rs: [{k: v for k, v in r.items() if k != "wall_s"} for r in rs]  # noqa: E731
    assert strip(read_metrics(tmp_path / "a")) == strip(read_metrics(tmp_path / "b"))
    _, _, ta = load_run(tmp_path / "a")
    _, _, tb = load_run(tmp_path / "b")
    for x, y in ((ta.router, tb.router), (ta.adversary, tb.adversary)):
        for (k, p), q in zip(x.state_dict().items(), y.state_dict().values(), strict=True):
            assert torch.equal(p, q), k
    assert ta.iters == {"protagonist": 4, "adversary": 2}
    fresh = Trainer(cfg, tiny_sub)
    assert not torch.equal(fresh.router.bias, ta.router.bias)  # training changed something
    with pytest.raises(ConfigError, match="cannot resume"):
        train_rarl(dataclasses.replace(cfg, iterations=6), tmp_path / "a", progress=False)


def test_cli_train_and_eval(tmp_path):
    from edgelam.inference.orchestration.command import orchestrate_group

    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"env": {"horizon": 4, "adversary_period": 2},
                                  "ppo": {"num_envs": 4, "hidden": 8}}))  # fmt: skip
    run = tmp_path / "run"
    runner = CliRunner()
    res = runner.invoke(orchestrate_group, ["train", "--nodes", "4", "--steps", "2", "--pro-phase", "1", "--adv-phase", "1", "--budget", "0.5", "--config", str(config), "--out", str(run), "-q"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "2 protagonist / 2 adversary iterations" in res.output
    for name in ("config.json", "metrics.jsonl", "summary.json", "training.png", "checkpoints/latest.pt"):  # fmt: skip
        assert (run / name).is_file(), name
    cfg, _, _ = load_run(run)
    assert cfg.env.rate_budget == 0.5 and cfg.env.horizon == 4 and cfg.iterations == 2
    res = runner.invoke(orchestrate_group, ["eval", "--run", str(run), "--episodes", "2", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)["rows"]
    policies = {r["policy"] for r in rows}
    assert policies == {"random", "round-robin", "least-loaded", "greedy-latency", "rarl"}
    assert {r["demand"] for r in rows} == {"nominal", "random", "adversary", "worst-structured"}
    assert (run / "evaluation.png").is_file()
    res = runner.invoke(orchestrate_group, ["eval", "--run", str(run), "--episodes", "0"])
    assert isinstance(res.exception, ConfigError) and "--episodes" in str(res.exception)
