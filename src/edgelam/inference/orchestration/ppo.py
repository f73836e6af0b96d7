"""PPO (clipped surrogate, GAE) for the orchestration agents, written out cleanrl-style.

**Why our own PPO and not stable-baselines3.** RARL trains two agents *in one environment*,
in alternation: the protagonist's rollouts need the adversary's actions from its current
policy and vice versa, each agent has its own optimiser, critic and reward sign, and a run
must checkpoint both and resume exactly. SB3's ``learn()`` owns the rollout loop of a single
agent in a single-agent env, so we would need two env wrappers that call into each other's
models and drive each ``learn()`` in tiny chunks; its ``MultiDiscrete`` policy also cannot mask
the padded replica choices or use our per-candidate router architecture. A short PPO
that reads top to bottom is simpler, faster (one batched numpy environment, no vec-env
overhead) and is what cleanrl's ``ppo.py`` shows is enough.

Agents output padded categorical logits ``[B, C, J]`` (C choice components, J options, invalid
options masked). The router (:class:`RouterAgent`) scores every (component, replica) candidate
with a small MLP over per-candidate features (backlog and last load of the replica's node, the
stage's compute time there, this slot's arrivals, transfer times, all relative to the slot or the
deadline, the contention the node would see) plus a context vector from the whole observation,
so one set of weights routes every component; with ``credit = "group"`` each request group is a
reward stream with its own value and advantage. The adversary (:class:`AdversaryAgent`) is an
MLP whose heads are shared by exchangeable choices. The critics are MLPs of the observation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from edgelam.config import ConfigError, option
from edgelam.inference.orchestration.env import OrchestrationCore

__all__ = [
    "AdversaryAgent",
    "PPOConfig",
    "ReturnScaler",
    "RouterAgent",
    "gae",
    "ppo_update",
]

NEG = -1e9  # logit of a masked option


@dataclass
class PPOConfig:
    """PPO hyper-parameters (shared by both agents)."""

    num_envs: int = option(32, "environments stepped together (one episode each per iteration)")
    learning_rate: float = option(1e-2, "Adam learning rate of the router")
    adversary_learning_rate: float = option(1e-3, "Adam learning rate of the adversary")
    gamma: float = option(0.95, "discount factor")
    gae_lambda: float = option(0.9, "GAE lambda")
    update_epochs: int = option(4, "epochs over each rollout")
    num_minibatches: int = option(4, "minibatches per epoch")
    clip_coef: float = option(0.2, "surrogate clipping coefficient")
    ent_coef: float = option(0.0, "entropy bonus coefficient of the router")
    adversary_ent_coef: float = option(0.01, "entropy bonus coefficient of the adversary")
    vf_coef: float = option(0.5, "value loss coefficient")
    max_grad_norm: float = option(0.5, "gradient norm clip")
    hidden: int = option(64, "hidden width of the critics, the adversary and the router context")
    candidate_hidden: int = option(16, "hidden width of the router's per-candidate scorer")
    credit: Literal["group", "joint"] = option(
        "group", "router credit assignment: per request group (its own cost) or joint (system)"
    )

    def __post_init__(self) -> None:
        for name in ("num_envs", "update_epochs", "num_minibatches", "hidden", "candidate_hidden"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("learning_rate", "adversary_learning_rate", "clip_coef", "max_grad_norm"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name}: must be > 0, got {getattr(self, name)}")
        for name in ("gamma", "gae_lambda"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{name}: must be in [0, 1], got {getattr(self, name)}")


def _layer(i: int, o: int, std: float = 2**0.5) -> nn.Linear:
    layer = nn.Linear(i, o)
    nn.init.orthogonal_(layer.weight, std)
    nn.init.zeros_(layer.bias)
    return layer


def _mlp(i: int, h: int, o: int, std: float) -> nn.Sequential:
    return nn.Sequential(_layer(i, h), nn.Tanh(), _layer(h, h), nn.Tanh(), _layer(h, o, std))


class MaskedAgent(nn.Module):
    """Base: padded categorical policy + critic. Subclasses define :meth:`logits`.

    Choices are grouped into *streams* (``stream [C]``): each stream has its own reward, value
    and advantage, and its log-probability is the sum over its choices. The adversary has one
    stream; the router one per request group with ``credit = "group"`` (else one).
    """

    mask: torch.Tensor  # [C, J] bool, True where the option exists
    stream: torch.Tensor  # [C] long

    def __init__(self, obs_dim: int, hidden: int, streams: int) -> None:
        super().__init__()
        self.streams = streams
        self.critic = _mlp(obs_dim, hidden, streams, 1.0)

    def logits(self, obs: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """``[B, S]`` state values per stream."""
        return self.critic(obs)

    def _per_stream(self, x: torch.Tensor) -> torch.Tensor:
        out = x.new_zeros(x.shape[0], self.streams)
        return out.index_add_(1, self.stream, x)

    def evaluate(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(log-prob [B, S], entropy [B], value [B, S])`` of ``action`` ``[B, C]``."""
        logp = torch.log_softmax(self.logits(obs).masked_fill(~self.mask, NEG), -1)
        chosen = self._per_stream(logp.gather(-1, action[..., None])[..., 0])
        entropy = -(logp.exp() * logp).sum((-1, -2))
        return chosen, entropy, self.value(obs)

    @torch.no_grad()
    def act(
        self, obs: np.ndarray, rng: np.random.Generator, deterministic: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sample (Gumbel-max with ``rng``) or take the mode; returns ``(action [B, C] int,
        log-prob [B, S], value [B, S])`` as numpy arrays."""
        x = torch.from_numpy(obs)
        logits = self.logits(x).masked_fill(~self.mask, NEG)
        z = logits.double().numpy()
        if not deterministic:
            z = z + rng.gumbel(size=z.shape)
        action = z.argmax(-1)
        logp = torch.log_softmax(logits, -1).gather(-1, torch.from_numpy(action)[..., None])
        return action, self._per_stream(logp[..., 0]).numpy(), self.value(x).numpy()

    def policy(self, deterministic: bool = True):
        """This agent as a router/attacker callable ``(core, rng) -> action``."""

        def run(core: OrchestrationCore, rng: np.random.Generator) -> np.ndarray:
            return self.act(core.observe(), rng, deterministic)[0]

        return run


class RouterAgent(MaskedAgent):
    """Protagonist: scores every (component, replica) candidate with shared weights.

    Shapes:
        observation ``[B, 2N + GN + G + 1]`` (see :meth:`OrchestrationCore.observe`) ->
        logits ``[B, K, J]``.
    """

    FEATURES = 8

    def __init__(
        self,
        core: OrchestrationCore,
        hidden: int = 64,
        candidate_hidden: int = 16,
        credit: str = "group",
    ) -> None:
        s, dt = core.sub, core.cfg.slot_s
        super().__init__(core.obs_dim, hidden, s.num_groups if credit == "group" else 1)
        group = torch.as_tensor(s.comp_group)
        self.register_buffer("stream", group if credit == "group" else torch.zeros_like(group))
        n, k = s.num_nodes, s.num_components
        self.n, self.g = n, s.num_groups
        hosts = torch.as_tensor(s.hosts)
        self.register_buffer("hosts", hosts)
        self.register_buffer("mask", torch.arange(hosts.shape[1]) < torch.as_tensor(s.num_hosts)[:, None])  # fmt: skip
        self.register_buffer("group", torch.as_tensor(s.comp_group))
        tau = torch.as_tensor(s.tau).gather(1, hosts).float()  # [K, J]
        deadline = torch.as_tensor(core.deadline[s.comp_group]).float()[:, None]
        self.register_buffer("tau_slot", torch.log1p(tau / dt))
        self.register_buffer("tau_rel", tau / deadline)
        self.register_buffer("tau_raw", tau / dt)
        self.register_buffer("deadline_slots", deadline / dt)
        sink = np.zeros(k, bool)
        sink[s.sinks[s.sinks >= 0]] = True
        a = np.arange(n)[:, None, None]
        comm = s.transfer(a, s.hosts[None], s.user_bytes[None, :, None])
        comm = comm + sink[None, :, None] * s.transfer(s.hosts[None], a, s.out_bytes[None, :, None])  # fmt: skip
        self.register_buffer("comm_rel", torch.as_tensor(comm).float() / deadline)  # [N, K, J]
        spread = np.zeros((k, n))  # work per arrival each node gets if routing were uniform
        for c in range(k):
            spread[c, s.hosts[c, : s.num_hosts[c]]] = (
                s.tau[c, s.hosts[c, : s.num_hosts[c]]] / s.num_hosts[c]
            )
        self.register_buffer("spread", torch.as_tensor(spread / dt).float())
        c = candidate_hidden
        self.context = nn.Sequential(_layer(core.obs_dim, hidden), nn.Tanh(), _layer(hidden, c))
        self.embed = _layer(self.FEATURES, c)
        self.score = nn.Sequential(nn.ReLU(), _layer(c, 1, 0.01))
        self.bias = nn.Parameter(torch.zeros(k, hosts.shape[1]))

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        """Per-candidate features ``[B, K, J, 8]``."""
        n, g = self.n, self.g
        backlog, load = obs[:, :n], obs[:, n : 2 * n]
        loc = obs[:, 2 * n : 2 * n + g * n].reshape(-1, g, n).argmax(-1)  # [B, G]
        arrivals = obs[:, 2 * n + g * n : 2 * n + g * n + g][:, self.group]  # [B, K] log1p(A)
        b = backlog[:, self.hosts]  # [B, K, J]
        a = arrivals[..., None].expand_as(b)
        work = torch.log1p(torch.expm1(a) * self.tau_raw)
        wait_rel = torch.expm1(b) / self.deadline_slots
        comm = self.comm_rel[loc[:, self.group], torch.arange(len(self.group))]  # [B, K, J]
        pending = torch.log1p(torch.expm1(arrivals) @ self.spread)[:, self.hosts]  # contention
        feats = [b, load[:, self.hosts], self.tau_slot.expand_as(b), a, work,
                 torch.log1p(wait_rel + self.tau_rel), comm, pending]  # fmt: skip
        return torch.stack(feats, -1)

    def logits(self, obs: torch.Tensor) -> torch.Tensor:
        h = self.embed(self.features(obs)) + self.context(obs)[:, None, None, :]
        return self.score(h)[..., 0] + self.bias


class AdversaryAgent(MaskedAgent):
    """Adversary: an MLP whose heads are shared by exchangeable choices -- one categorical over
    groups for all P rate picks, one over groups (+ "none") and one over neighbour slots for
    all forced moves -- so every pick's outcome trains the same distribution.

    Shapes:
        observation ``[B, obs_dim]`` -> logits ``[B, len(adv_nvec), max(adv_nvec)]``.
    """

    def __init__(self, core: OrchestrationCore, hidden: int = 64) -> None:
        super().__init__(core.obs_dim, hidden, 1)
        nvec = torch.as_tensor(core.adv_nvec)
        self.register_buffer("stream", torch.zeros(len(nvec), dtype=torch.long))
        g, p, m = core.sub.num_groups, core.cfg.rate_picks, core.cfg.move_budget
        d = core.sub.neighbours.shape[1]
        self.sizes = (g, g + 1, d)
        self.register_buffer("head", torch.as_tensor([0] * p + [1, 2] * m))  # head per choice
        self.width = int(nvec.max())
        self.register_buffer("mask", torch.arange(self.width) < nvec[:, None])
        self.actor = _mlp(core.obs_dim, hidden, sum(self.sizes), 0.01)

    def logits(self, obs: torch.Tensor) -> torch.Tensor:
        out = self.actor(obs)
        heads = [nn.functional.pad(x, (0, self.width - x.shape[-1]))
                 for x in out.split(self.sizes, -1)]  # fmt: skip
        return torch.stack(heads, 1)[:, self.head]


class ReturnScaler:
    """Rewards divided by the running std of discounted returns (cleanrl's NormalizeReward).

    >>> sc = ReturnScaler(0.9)
    >>> r = sc.scale(np.ones((4, 2)) * 10.0)
    >>> bool(np.all(np.abs(r) < 10.0))
    True
    """

    def __init__(self, gamma: float) -> None:
        self.gamma, self.count, self.mean, self.var = gamma, 1e-4, 0.0, 1.0

    def scale(self, rewards: np.ndarray) -> np.ndarray:
        """Update with a rollout ``[T, ...]`` (returns from its start) and return it scaled."""
        ret = np.zeros(rewards.shape[1:])
        returns = []
        for r in rewards:
            ret = self.gamma * ret + r
            returns.append(ret.copy())
        x = np.concatenate(returns)
        total = self.count + x.size
        delta = x.mean() - self.mean
        m2 = self.var * self.count + x.var() * x.size + delta**2 * self.count * x.size / total
        self.mean, self.var, self.count = self.mean + delta * x.size / total, m2 / total, total
        return rewards / np.sqrt(self.var + 1e-8)

    def state_dict(self) -> dict[str, float]:
        return {"count": self.count, "mean": self.mean, "var": self.var}

    def load_state_dict(self, d: dict[str, float]) -> None:
        self.count, self.mean, self.var = d["count"], d["mean"], d["var"]


def gae(
    rewards: np.ndarray, values: np.ndarray, gamma: float, lam: float
) -> tuple[np.ndarray, np.ndarray]:
    """Generalised advantage estimates for episodes that end after the last step.

    Shapes:
        ``rewards``, ``values`` ``[T, ...]`` -> ``(advantages, returns)`` ``[T, ...]``.

    >>> adv, ret = gae(np.array([[1.0], [1.0]]), np.zeros((2, 1)), 0.5, 1.0)
    >>> ret[:, 0].tolist()
    [1.5, 1.0]
    """
    adv = np.zeros_like(rewards)
    last = np.zeros(rewards.shape[1:])
    for t in reversed(range(len(rewards))):
        next_value = values[t + 1] if t + 1 < len(rewards) else 0.0
        delta = rewards[t] + gamma * next_value - values[t]
        last = delta + gamma * lam * last
        adv[t] = last
    return adv, adv + values


def ppo_update(
    agent: MaskedAgent,
    optimizer: torch.optim.Optimizer,
    batch: dict[str, np.ndarray],
    cfg: PPOConfig,
    rng: np.random.Generator,
) -> dict[str, float]:
    """Clipped-surrogate PPO epochs over one rollout.

    Args:
        agent: The learning agent.
        optimizer: Its optimiser.
        batch: Flattened rollout: ``obs [M, D]``, ``actions [M, C]``, ``logp [M, S]``,
            ``advantages [M, S]``, ``returns [M, S]`` (S reward streams).
        cfg: Hyper-parameters.
        rng: Shuffles the minibatches.

    Returns:
        Mean ``policy_loss``, ``value_loss``, ``entropy``, ``approx_kl``, ``clip_fraction``.
    """
    t = {k: torch.as_tensor(v) for k, v in batch.items()}
    size = len(t["logp"])
    if t["logp"].shape != t["advantages"].shape or t["logp"].shape[1] != agent.streams:
        raise ValueError(f"batch: logp/advantages must be [M, {agent.streams}]")
    mb = max(1, size // cfg.num_minibatches)
    ent_coef = cfg.adversary_ent_coef if isinstance(agent, AdversaryAgent) else cfg.ent_coef
    stats: dict[str, list[float]] = {k: [] for k in ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction")}  # fmt: skip
    for _ in range(cfg.update_epochs):
        order = torch.as_tensor(rng.permutation(size))
        for start in range(0, size, mb):
            idx = order[start : start + mb]
            logp, entropy, value = agent.evaluate(t["obs"][idx], t["actions"][idx])
            log_ratio = logp - t["logp"][idx]
            ratio = log_ratio.exp()
            adv = t["advantages"][idx]
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
            pg = torch.max(-adv * ratio, -adv * ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef))
            v_loss = 0.5 * (value - t["returns"][idx]).square().mean()
            loss = pg.mean() - ent_coef * entropy.mean() + cfg.vf_coef * v_loss
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(agent.parameters(), cfg.max_grad_norm)
            optimizer.step()
            with torch.no_grad():
                stats["policy_loss"].append(pg.mean().item())
                stats["value_loss"].append(v_loss.item())
                stats["entropy"].append(entropy.mean().item())
                stats["approx_kl"].append(((ratio - 1) - log_ratio).mean().item())
                stats["clip_fraction"].append(((ratio - 1).abs() > cfg.clip_coef).float().mean().item())  # fmt: skip
    return {k: float(np.mean(v)) for k, v in stats.items()}
