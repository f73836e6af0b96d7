"""Robust adversarial RL (Pinto et al., ICML 2017) for microservice orchestration.

A protagonist (the router, :class:`~.ppo.RouterAgent`) and an adversary
(:class:`~.ppo.AdversaryAgent`, which perturbs request rates within an L1 budget and forces a
limited number of user moves per slot) play a zero-sum Markov game on the orchestration MDP
(:mod:`.env`): the protagonist receives the system utility :math:`r`, the adversary
:math:`-r`. Training alternates: ``pro_phase`` PPO iterations of the protagonist against the
frozen adversary, then ``adv_phase`` iterations of the adversary against the frozen protagonist
(both sample from their current stochastic policies during rollouts). With ``robust = false``
the same loop trains the protagonist alone on nominal demand (non-robust PPO).

Each PPO iteration runs ``ppo.num_envs`` full episodes (seeded from ``(seed, iteration, agent)``)
and updates on them, so a run resumes exactly from its last checkpoint (``checkpoints/latest.pt``:
both agents, optimisers, return scalers and counters, written after every alternation round).

Run directory: ``config.json``, ``metrics.jsonl`` (one record per PPO iteration; ``agent`` is
``protagonist`` or ``adversary``; ``utility`` is the mean reward per slot of that rollout),
``summary.json``, ``instance.json``, ``deployment.json``, ``training.png``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgelam.config import ConfigError, from_dict, option, to_dict
from edgelam.inference.instance import generate_instance
from edgelam.inference.orchestration.env import EnvConfig, OrchestrationCore
from edgelam.inference.orchestration.ppo import (
    AdversaryAgent,
    PPOConfig,
    ReturnScaler,
    RouterAgent,
    gae,
    ppo_update,
)
from edgelam.inference.orchestration.substrate import Substrate, replicate
from edgelam.progress import progress_bar
from edgelam.runs import RunDir, read_config, read_metrics, save_checkpoint
from edgelam.seeding import derive_seed

__all__ = [
    "RARLConfig",
    "Trainer",
    "best_response_trainer",
    "build_substrate",
    "load_run",
    "plot_training",
    "rollout",
    "train_rarl",
]

CHECKPOINT = Path("checkpoints") / "latest.pt"
CURRENT = object()  # "the other agent of this trainer"


@dataclass
class RARLConfig:
    """A robust (or, with ``robust = false``, plain) PPO orchestration run."""

    nodes: int = option(10, "edge nodes of the generated instance")
    seed: int = option(0, "seed of the instance and of every rollout")
    load: float = option(0.4, "nominal work / total node FLOP/s of the instance")
    min_replicas: int = option(2, "replicas every needed microservice gets (>= 2)")
    max_replicas: int = option(4, "most replicas of one microservice")
    target_utilisation: float = option(0.4, "add replicas while a node's expected utilisation exceeds this")  # fmt: skip
    robust: bool = option(True, "train against an adversary (RARL); false: nominal demand only")
    iterations: int = option(100, "protagonist PPO iterations", aliases=("--steps",))
    pro_phase: int = option(5, "N_mu: protagonist iterations per alternation round")
    adv_phase: int = option(5, "N_nu: adversary iterations per alternation round")
    env: EnvConfig = field(default_factory=EnvConfig, metadata={"help": "the MDP ([env] table)"})
    ppo: PPOConfig = field(default_factory=PPOConfig, metadata={"help": "PPO ([ppo] table)"})

    def __post_init__(self) -> None:
        for name in ("iterations", "pro_phase", "adv_phase"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.nodes < 2:
            raise ConfigError(f"nodes: need at least 2, got {self.nodes}")


def build_substrate(cfg: RARLConfig) -> Substrate:
    """The run's instance and replicated deployment (deterministic in the config)."""
    inst = generate_instance(cfg.nodes, cfg.seed, load=cfg.load)
    dep = replicate(inst, min_replicas=cfg.min_replicas, max_replicas=cfg.max_replicas,
                    target_utilisation=cfg.target_utilisation)  # fmt: skip
    return Substrate.build(inst, dep)


def rollout(core: OrchestrationCore, router: Any, attacker: Any, rng: np.random.Generator,
            learner: RouterAgent | AdversaryAgent | None = None) -> dict[str, np.ndarray]:  # fmt: skip
    """One batch of full episodes.

    Args:
        core: The batched MDP (its ``batch`` episodes run in parallel).
        router: Protagonist: a :class:`RouterAgent` (sampled) or a router callable.
        attacker: Adversary: an :class:`AdversaryAgent` (sampled), an attacker callable, or None.
        rng: Drives the environment and the sampling.
        learner: The agent whose observations, actions, log-probs and values to record.

    The attacker decides every ``adversary_period`` slots; its action holds in between.

    Returns:
        ``reward``, ``requests``, ``latency_sum``, ``misses`` ``[T, B]``, ``group_reward``
        ``[T, B, G]`` and, with a learner, ``obs [T', B, D]``, ``actions [T', B, C]``, ``logp``
        and ``values`` ``[T', B, S]`` (S reward streams of the learner; T' its decisions).
    """
    obs = core.reset(rng)
    out: dict[str, list] = {k: [] for k in ("reward", "requests", "latency_sum", "misses", "group_reward", "obs", "actions", "logp", "values")}  # fmt: skip
    held = None
    for t in range(core.cfg.horizon):
        acts = {"attacker": held}
        for role, agent in (("router", router), ("attacker", attacker)):
            if role == "attacker" and t % core.cfg.adversary_period:
                continue
            if isinstance(agent, RouterAgent | AdversaryAgent):
                acts[role], logp, value = agent.act(obs, rng)
                if agent is learner:
                    out["obs"].append(obs)
                    out["actions"].append(acts[role])
                    out["logp"].append(logp)
                    out["values"].append(value)
            else:
                acts[role] = None if agent is None else agent(core, rng)
        held = acts["attacker"]
        reward, info = core.step(acts["router"], held)
        out["reward"].append(reward)
        for k in ("requests", "latency_sum", "misses", "group_reward"):
            out[k].append(info[k])
        obs = core.observe()
    return {k: np.stack(v) for k, v in out.items() if v}


def _summarise(ro: dict[str, np.ndarray]) -> dict[str, float]:
    requests = max(float(ro["requests"].sum()), 1.0)
    return {"utility": float(ro["reward"].mean()),
            "latency_s": float(ro["latency_sum"].sum()) / requests,
            "miss_rate": float(ro["misses"].sum()) / requests}  # fmt: skip


class Trainer:
    """Both agents, their optimisers and return scalers, and the iteration counters."""

    def __init__(self, cfg: RARLConfig, sub: Substrate) -> None:
        self.cfg, self.sub = cfg, sub
        self.core = OrchestrationCore(sub, cfg.env, batch=cfg.ppo.num_envs)
        torch.manual_seed(derive_seed(cfg.seed, 0, 0))
        self.router = RouterAgent(
            self.core, cfg.ppo.hidden, cfg.ppo.candidate_hidden, cfg.ppo.credit
        )
        self.adversary = AdversaryAgent(self.core, cfg.ppo.hidden)
        p = cfg.ppo
        self.opt = {"protagonist": torch.optim.Adam(self.router.parameters(), lr=p.learning_rate, eps=1e-5),
                    "adversary": torch.optim.Adam(self.adversary.parameters(), lr=p.adversary_learning_rate, eps=1e-5)}  # fmt: skip
        self.scaler = {k: ReturnScaler(cfg.ppo.gamma) for k in self.opt}
        self.iters = {"protagonist": 0, "adversary": 0}

    def iterate(self, role: str, opponent: Any = CURRENT) -> dict[str, Any]:
        """One PPO iteration of ``role`` against the other agent (or ``opponent``).

        Args:
            role: ``"protagonist"`` or ``"adversary"``.
            opponent: A fixed router/attacker callable or None instead of the trainer's other
                agent (a non-robust protagonist faces None, the nominal demand).

        Returns:
            The iteration's metrics record (rollout utility, latency, miss rate, PPO stats).

        Raises:
            ValueError: an unknown ``role``.
        """
        if role not in self.iters:
            raise ValueError(f"role: {role!r} is not one of {list(self.iters)}")
        cfg = self.cfg
        learner = self.router if role == "protagonist" else self.adversary
        other = self.adversary if role == "protagonist" else self.router
        if opponent is not CURRENT:
            other = opponent
        elif role == "protagonist" and not cfg.robust:
            other = None
        index = self.iters[role]
        rng = np.random.default_rng(derive_seed(cfg.seed, index, 1 if role == "protagonist" else 2))
        start = time.perf_counter()
        pair = (learner, other) if role == "protagonist" else (other, learner)
        ro = rollout(self.core, *pair, rng, learner)
        if role == "adversary":  # summed over each decision period
            period = cfg.env.adversary_period
            rewards = -ro["reward"].reshape(-1, period, cfg.ppo.num_envs).sum(1)[..., None]
        else:
            rewards = ro["group_reward"] if cfg.ppo.credit == "group" else ro["reward"][..., None]
        rewards = self.scaler[role].scale(rewards)
        adv, ret = gae(rewards, ro["values"], cfg.ppo.gamma, cfg.ppo.gae_lambda)
        flat = lambda x: x.reshape(-1, *x.shape[2:])  # noqa: E731
        batch = {"obs": flat(ro["obs"]), "actions": flat(ro["actions"]).astype(np.int64),
                 "logp": flat(ro["logp"]).astype(np.float32),
                 "advantages": flat(adv).astype(np.float32), "returns": flat(ret).astype(np.float32)}  # fmt: skip
        stats = ppo_update(learner, self.opt[role], batch, cfg.ppo, rng)
        self.iters[role] += 1
        return {"agent": role, "iteration": self.iters[role], **_summarise(ro), **stats,
                "wall_s": time.perf_counter() - start}  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        return {"router": self.router.state_dict(), "adversary": self.adversary.state_dict(),
                "opt": {k: o.state_dict() for k, o in self.opt.items()},
                "scaler": {k: s.state_dict() for k, s in self.scaler.items()},
                "iters": dict(self.iters), "config": to_dict(self.cfg)}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.router.load_state_dict(state["router"])
        self.adversary.load_state_dict(state["adversary"])
        for k, o in self.opt.items():
            o.load_state_dict(state["opt"][k])
            self.scaler[k].load_state_dict(state["scaler"][k])
        self.iters = dict(state["iters"])


def train_rarl(cfg: RARLConfig, out: str | Path, *, resume: bool = True, overwrite: bool = False,
               progress: bool = True, stop_after: int | None = None) -> Path:  # fmt: skip
    """Train (or resume) a run in ``out``.

    Args:
        cfg: The run's config.
        out: Run directory.
        resume: Continue from ``checkpoints/latest.pt`` if ``out`` holds this run.
        overwrite: Start over in a directory that holds a run.
        progress: Show a progress bar.
        stop_after: Return after this many alternation rounds (tests), without the summary.

    Returns:
        ``out``.

    Raises:
        ConfigError: ``out`` holds a run of another config (and neither flag allows replacing it).
    """
    out = Path(out)
    try:
        run = RunDir.create(out, to_dict(cfg), resume=resume and not overwrite, overwrite=overwrite)
    except FileExistsError as err:
        raise ConfigError(f"{err}; use another --out or --overwrite") from err
    if overwrite:
        (out / CHECKPOINT).unlink(missing_ok=True)
    sub = build_substrate(cfg)
    sub.inst.save(out / "instance.json")
    from edgelam.inference.deployment import Deployment

    Deployment(sub.placement, method="replicate").save(out / "deployment.json")
    trainer = Trainer(cfg, sub)
    if resume and (out / CHECKPOINT).is_file():
        trainer.load_state_dict(torch.load(out / CHECKPOINT, weights_only=False))
    done = trainer.iters["protagonist"]
    run.drop_metrics(lambda r: r.get("agent") == "protagonist" and r["iteration"] > done)
    run.drop_metrics(lambda r: r.get("agent") == "adversary" and r["iteration"] > trainer.iters["adversary"])  # fmt: skip
    start, rounds = time.perf_counter(), 0
    with progress_bar("rarl" if cfg.robust else "ppo", total=cfg.iterations, completed=done,
                      enabled=progress) as advance:  # fmt: skip
        while trainer.iters["protagonist"] < cfg.iterations:
            for _ in range(min(cfg.pro_phase, cfg.iterations - trainer.iters["protagonist"])):
                run.log(trainer.iterate("protagonist"))
                advance(1)
            if cfg.robust:
                for _ in range(cfg.adv_phase):
                    run.log(trainer.iterate("adversary"))
            save_checkpoint(trainer.state_dict(), out / CHECKPOINT)
            rounds += 1
            if stop_after is not None and rounds >= stop_after:
                return out
    records = read_metrics(out)
    pro = [r for r in records if r.get("agent") == "protagonist"]
    last = pro[-max(1, min(10, len(pro))) :]
    run.write_summary({
        "robust": cfg.robust, "iterations": trainer.iters, "train_seconds_this_session": time.perf_counter() - start,
        "train_seconds_total": sum(r["wall_s"] for r in records),
        "final_utility_last10": float(np.mean([r["utility"] for r in last])),
        "final_latency_s_last10": float(np.mean([r["latency_s"] for r in last])),
        "final_miss_rate_last10": float(np.mean([r["miss_rate"] for r in last])),
        "nodes": cfg.nodes, "groups": sub.num_groups, "components": sub.num_components,
        "checkpoint": str(CHECKPOINT),
    })  # fmt: skip
    plot_training(out)
    return out


def best_response_trainer(cfg: RARLConfig, sub: Substrate, iterations: int):
    """A function ``router -> AdversaryAgent`` that trains a fresh adversary by PPO against the
    fixed ``router`` for ``iterations`` iterations (an approximate best response)."""

    def train(router: Any) -> AdversaryAgent:
        trainer = Trainer(cfg, sub)
        for _ in range(iterations):
            trainer.iterate("adversary", opponent=router)
        return trainer.adversary

    return train


def load_run(path: str | Path) -> tuple[RARLConfig, Substrate, Trainer]:
    """A run's config, substrate and trained agents (from ``checkpoints/latest.pt``).

    Raises:
        FileNotFoundError: not a run directory, or no checkpoint yet.
    """
    path = Path(path)
    cfg = from_dict(RARLConfig, read_config(path))
    if not (path / CHECKPOINT).is_file():
        raise FileNotFoundError(f"{path / CHECKPOINT} missing: the run has no checkpoint yet")
    sub = build_substrate(cfg)
    trainer = Trainer(cfg, sub)
    trainer.load_state_dict(torch.load(path / CHECKPOINT, weights_only=False))
    return cfg, sub, trainer


def plot_training(path: str | Path) -> Path:
    """``training.png``: utility per iteration of each agent's rollouts (from metrics.jsonl)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(path)
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    for role, style in (("protagonist", "C0"), ("adversary", "C3")):
        rs = [r for r in records if r.get("agent") == role]
        if rs:
            it = [r["iteration"] for r in rs]
            ax[0].plot(it, [r["utility"] for r in rs], style, label=f"{role} rollouts")
            ax[1].plot(it, [r["miss_rate"] for r in rs], style, label=role)
    ax[0].set(xlabel="PPO iteration of the agent", ylabel="utility per slot")
    ax[1].set(xlabel="PPO iteration of the agent", ylabel="deadline-miss rate")
    ax[0].legend()
    fig.tight_layout()
    file = Path(path) / "training.png"
    fig.savefig(file, dpi=120)
    plt.close(fig)
    return file
