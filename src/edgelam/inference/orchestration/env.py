r"""The orchestration MDP: slotted fluid queues, Poisson requests, mobile users, an adversary.

Time runs in slots of :math:`\Delta` seconds. The state of slot :math:`t` is

* :math:`W_n(t)` -- backlog of node :math:`n` (seconds of work queued),
* :math:`U_n(t-1)` -- work routed to node :math:`n` in the previous slot (replica load),
* :math:`a_g(t)` -- access node of request group :math:`g` (its users' current cell),
* :math:`A_g(t)` -- requests of group :math:`g` arriving in this slot (pending, to be routed).

**Action** (protagonist, ``MultiDiscrete(num_hosts)``): for every component ``k`` = (group,
stage), the index of the replica that serves this slot's requests of the group at that stage.

**Latency** (fluid FIFO). Node :math:`n` receives :math:`U_n = \sum_k A_{g(k)} \tau_{k,n}`
(over components routed to :math:`n`); a request waits :math:`w_n = W_n + U_n / 2` there (the
backlog plus, on average, half of this slot's new work). Stage ``v`` of group ``g`` routed to
:math:`n_v` finishes at

.. math::

    f_v = \max\big(\{u_g + T(a_g, n_v, b^{user}_v)\} \cup
          \{f_p + T(n_p, n_v, b^{out}_p) : p \in \text{in}(v)\}\big) + w_{n_v} + \tau_{v, n_v},

(:math:`u_g` access upload, :math:`T` = ``Instance.transfer_time``) and the request's latency is
:math:`L_g = \max_{s \in \text{sinks}} f_s + T(n_s, a_g, b^{out}_s) + d_g` (:math:`d_g` access
download). With :math:`W = U = 0` this is ``deployment.class_latency``.

**Reward** (system utility, zero-sum: the adversary receives its negative)

.. math::

    r(t) = -\frac{1}{\Lambda \Delta} \sum_g A_g(t) \big(L_g + \kappa\, 1[L_g > D_{f(g)}]\big),

:math:`\Lambda` the total nominal rate, :math:`\kappa` the miss penalty (s) and :math:`D_f` the
per-flow deadline (:func:`~.substrate.flow_deadlines`). When the slot's request count equals its
nominal mean, this is minus (mean latency + :math:`\kappa` x miss rate).

**Transitions.** :math:`W_n \leftarrow \max(W_n + U_n - \Delta, 0)`; each group moves to a
uniformly drawn neighbour node with probability ``move_prob``; then the adversary's forced moves
(at most ``move_budget`` one-hop moves per slot) apply; then :math:`A_g(t+1) \sim
\text{Poisson}(\lambda_g m_g \Delta)` with the adversary's rate multipliers
:math:`m_g = 1 + \delta_g`. The adversary picks ``rate_picks`` = P groups per slot (repeats
allowed); each pick adds :math:`\varepsilon \Lambda / P` requests/s to its group, capped at
:math:`\delta_g \le \delta_{max}` (:func:`rate_deviation`), so :math:`\delta \ge 0` and
:math:`\sum_g \lambda_g \delta_g \le \varepsilon \Lambda`: the perturbed rates lie in an L1
ball of radius :math:`\varepsilon \Lambda` around the nominal ones (on its increasing side,
since lowering a rate never helps an adversary), within an L-infinity cap. Episodes last
``horizon`` slots (truncation).

>>> from edgelam.inference.instance import generate_instance
>>> from edgelam.inference.orchestration.substrate import Substrate, replicate
>>> inst = generate_instance(5, seed=0)
>>> core = OrchestrationCore(Substrate.build(inst, replicate(inst)), EnvConfig(), batch=3)
>>> obs = core.reset(np.random.default_rng(0))
>>> reward, info = core.step(np.zeros((3, core.sub.num_components), int))
>>> obs.shape == (3, core.obs_dim), reward.shape
(True, (3,))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from edgelam.config import ConfigError, option
from edgelam.inference.orchestration.substrate import Substrate, flow_deadlines

__all__ = ["EnvConfig", "OrchestrationCore", "OrchestrationEnv", "rate_deviation"]


@dataclass
class EnvConfig:
    """The MDP's parameters (module docstring)."""

    slot_s: float = option(0.25, "slot length Delta, s")
    horizon: int = option(48, "slots per episode")
    move_prob: float = option(0.05, "per-slot probability that a group's users move one hop")
    deadline_slack: float = option(5.0, "deadline = slack x unloaded latency on the fastest node")
    miss_penalty_s: float = option(1.0, "kappa: utility penalty per deadline miss, s")
    rate_budget: float = option(
        0.3, "epsilon: adversary's L1 rate budget, sum_g lambda_g |delta_g| <= epsilon * Lambda"
    )
    rate_picks: int = option(
        4, "P: groups the adversary picks per slot, each gets epsilon*Lambda/P"
    )
    rate_max_deviation: float = option(2.0, "delta_max: cap on a group's relative rate increase")
    move_budget: int = option(2, "adversary's forced one-hop location moves per slot")
    adversary_period: int = option(
        4, "slots an adversary action holds (it decides every this many slots); divides horizon"
    )

    def __post_init__(self) -> None:
        checks = {
            "slot_s": self.slot_s > 0,
            "horizon": self.horizon >= 1,
            "move_prob": 0 <= self.move_prob <= 1,
            "deadline_slack": self.deadline_slack >= 1,
            "miss_penalty_s": self.miss_penalty_s >= 0,
            "rate_budget": self.rate_budget >= 0,
            "rate_picks": self.rate_picks >= 1,
            "rate_max_deviation": self.rate_max_deviation > 0,
            "move_budget": self.move_budget >= 0,
            "adversary_period": self.adversary_period >= 1
            and self.horizon % self.adversary_period == 0,
        }
        allowed = {
            "slot_s": "> 0", "horizon": ">= 1", "move_prob": "in [0, 1]",
            "deadline_slack": ">= 1", "miss_penalty_s": ">= 0", "rate_budget": ">= 0",
            "rate_picks": ">= 1", "rate_max_deviation": "> 0",
            "move_budget": ">= 0", "adversary_period": ">= 1 and divide horizon",
        }  # fmt: skip
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(f"{name}: must be {allowed[name]}, got {getattr(self, name)}")


def rate_deviation(
    picks: np.ndarray, rate: np.ndarray, budget: float, max_deviation: float
) -> np.ndarray:
    """Relative rate increases ``delta [B, G]`` from the adversary's picked groups.

    Each of the P picks adds ``budget * sum(rate) / P`` requests/s to its group; a group's
    ``delta`` is capped at ``max_deviation``. So ``delta >= 0`` and ``rate @ delta <= budget *
    sum(rate)``.

    Shapes:
        ``picks`` ``[B, P]`` int group indices, ``rate`` ``[G]``; returns ``[B, G]``.

    >>> rate_deviation(np.array([[0, 0, 1, 1]]), np.array([1.0, 3.0]), 0.5, 2.0)
    array([[1.        , 0.33333333]])
    """
    b, p = picks.shape
    counts = np.zeros((b, len(rate)))
    np.add.at(counts, (np.arange(b)[:, None], picks), 1.0)
    extra = counts * budget * rate.sum() / p
    return np.minimum(extra / rate, max_deviation)


class OrchestrationCore:
    """``batch`` independent copies of the MDP, stepped together in numpy.

    Attributes (state, updated in place):
        backlog: ``W`` ``[B, N]``, s.    last_load: ``U(t-1)`` ``[B, N]``, s.
        location: ``a`` ``[B, G]`` int.  arrivals: ``A`` ``[B, G]`` int.
        multiplier: current rate multipliers ``m`` ``[B, G]``.   t: slot index.
    """

    def __init__(self, sub: Substrate, cfg: EnvConfig, batch: int = 1) -> None:
        if batch < 1:
            raise ConfigError(f"batch: must be >= 1, got {batch}")
        self.sub, self.cfg, self.batch = sub, cfg, batch
        deadlines = flow_deadlines(sub.inst, cfg.deadline_slack)
        self.deadline = np.array([deadlines[f] for f in sub.group_flow])
        self.total_rate = float(sub.rate.sum())
        self.levels = [np.flatnonzero(sub.level == v) for v in range(sub.level.max() + 1)]
        n, g = sub.num_nodes, sub.num_groups
        self.obs_dim = 2 * n + g * n + g + 1
        self.adv_nvec = np.array(
            [g] * cfg.rate_picks + [g + 1, sub.neighbours.shape[1]] * cfg.move_budget
        )
        self.t = 0

    # ---- state ------------------------------------------------------------------------------
    def reset(self, rng: np.random.Generator) -> np.ndarray:
        """Empty queues, users at home, nominal first arrivals; returns the observation."""
        b, s = self.batch, self.sub
        self.rng = rng
        self.backlog = np.zeros((b, s.num_nodes))
        self.last_load = np.zeros((b, s.num_nodes))
        self.location = np.tile(s.home, (b, 1))
        self.multiplier = np.ones((b, s.num_groups))
        self.arrivals = rng.poisson(s.rate * self.cfg.slot_s, size=(b, s.num_groups))
        self.t = 0
        return self.observe()

    def observe(self) -> np.ndarray:
        """``[B, obs_dim]`` float32: log1p(W/Delta), log1p(U/Delta), one-hot access node per
        group, log1p(A), t/horizon."""
        b, n = self.batch, self.sub.num_nodes
        onehot = np.zeros((b, self.sub.num_groups, n), dtype=np.float32)
        np.put_along_axis(onehot, self.location[..., None], 1.0, axis=2)
        return np.concatenate(
            [
                np.log1p(self.backlog / self.cfg.slot_s),
                np.log1p(self.last_load / self.cfg.slot_s),
                onehot.reshape(b, -1),
                np.log1p(self.arrivals),
                np.full((b, 1), self.t / self.cfg.horizon),
            ],
            axis=1,
            dtype=np.float32,
        )

    # ---- dynamics ---------------------------------------------------------------------------
    def latency(self, route: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Latency of this slot's requests under ``route`` (state unchanged).

        Args:
            route: Replica index per component, ``[B, K]`` int in ``[0, num_hosts[k])``.

        Returns:
            ``(L, U)``: latency per group ``[B, G]`` (s) and work routed per node ``[B, N]``.

        Raises:
            ValueError: a replica index outside its component's range.
        """
        s = self.sub
        route = np.asarray(route)
        if route.shape != (self.batch, s.num_components):
            raise ValueError(f"route: expected shape {(self.batch, s.num_components)}, got {route.shape}")  # fmt: skip
        if (route < 0).any() or (route >= s.num_hosts).any():
            raise ValueError("route: replica index out of range for some component")
        nodes = np.take_along_axis(np.broadcast_to(s.hosts, (self.batch, *s.hosts.shape)),
                                   route[..., None], axis=2)[..., 0]  # fmt: skip
        tau = s.tau[np.arange(s.num_components), nodes]  # [B, K]
        work = self.arrivals[:, s.comp_group] * tau
        flat = nodes + s.num_nodes * np.arange(self.batch)[:, None]
        load = np.bincount(flat.ravel(), work.ravel(), self.batch * s.num_nodes)
        load = load.reshape(self.batch, s.num_nodes)
        wait = np.take_along_axis(self.backlog + 0.5 * load, nodes, axis=1)
        loc = self.location[:, s.comp_group]
        finish = np.zeros_like(tau)
        for ks in self.levels:
            n_k = nodes[:, ks]
            g_k = s.comp_group[ks]
            ready = np.where(
                s.user_bytes[ks] > 0,
                s.upload[g_k] + s.transfer(loc[:, ks], n_k, s.user_bytes[ks]),
                -np.inf,
            )
            for j in range(s.inputs.shape[1]):
                u = s.inputs[ks, j]
                ok = u >= 0
                u = np.where(ok, u, 0)
                arrive = finish[:, u] + s.transfer(nodes[:, u], n_k, s.out_bytes[u])
                ready = np.maximum(ready, np.where(ok, arrive, -np.inf))
            finish[:, ks] = ready + wait[:, ks] + tau[:, ks]
        lat = np.full((self.batch, s.num_groups), -np.inf)
        for j in range(s.sinks.shape[1]):
            k = s.sinks[:, j]
            ok = k >= 0
            k = np.where(ok, k, 0)
            back = finish[:, k] + s.transfer(nodes[:, k], self.location, s.out_bytes[k])
            lat = np.maximum(lat, np.where(ok, back, -np.inf))
        return lat + s.download, load

    def perturbation(self, adv: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Decode an adversary action into (rate multipliers ``[B, G]``, moves ``[B, M, 2]``).

        The first P entries are the picked groups (:func:`rate_deviation`); then
        ``move_budget`` pairs (group, neighbour index), group ``G`` meaning "no move". ``None``
        is the nominal demand (no perturbation).
        """
        b, s, cfg = self.batch, self.sub, self.cfg
        if adv is None:
            return np.ones((b, s.num_groups)), np.zeros((b, 0, 2), int)
        adv = np.asarray(adv)
        if adv.shape != (b, len(self.adv_nvec)) or (adv < 0).any() or (adv >= self.adv_nvec).any():
            raise ValueError(f"adversary action: expected [B, {len(self.adv_nvec)}] ints below {self.adv_nvec.tolist()}")  # fmt: skip
        p = cfg.rate_picks
        delta = rate_deviation(adv[:, :p], s.rate, cfg.rate_budget, cfg.rate_max_deviation)
        return 1.0 + delta, adv[:, p:].reshape(b, cfg.move_budget, 2)

    def step(self, route: np.ndarray, adv: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
        """Serve this slot's requests along ``route``, then advance to the next slot.

        Args:
            route: Protagonist action ``[B, K]``.
            adv: Adversary action ``[B, len(adv_nvec)]`` for the next slot's demand, or None.

        Returns:
            ``(reward [B], info)`` with per-env ``requests``, ``latency_sum`` (s),
            ``misses``, ``cost``, and ``latency`` and ``group_reward`` ``[B, G]`` (the reward's
            terms per group; they sum to the reward).
        """
        s, cfg, rng = self.sub, self.cfg, self.rng
        lat, load = self.latency(route)
        miss = lat > self.deadline
        group_cost = self.arrivals * (lat + cfg.miss_penalty_s * miss)
        cost = group_cost.sum(1)
        info = {
            "group_reward": -group_cost / (self.total_rate * cfg.slot_s),
            "requests": self.arrivals.sum(1),
            "latency_sum": (self.arrivals * lat).sum(1),
            "misses": (self.arrivals * miss).sum(1),
            "cost": cost,
            "latency": lat,
        }
        self.backlog = np.maximum(self.backlog + load - cfg.slot_s, 0.0)
        self.last_load = load
        self.multiplier, moves = self.perturbation(adv)
        step = rng.random(self.location.shape) < cfg.move_prob
        self._move(np.nonzero(step), rng.integers(0, 1 << 30, size=int(step.sum())))
        for m in range(moves.shape[1]):
            b = np.flatnonzero(moves[:, m, 0] < s.num_groups)
            self._move((b, moves[b, m, 0]), moves[b, m, 1])
        self.arrivals = rng.poisson(s.rate * self.multiplier * cfg.slot_s)
        self.t += 1
        return -cost / (self.total_rate * cfg.slot_s), info

    def _move(self, where: tuple[np.ndarray, np.ndarray], choice: np.ndarray) -> None:
        """Move groups ``location[where]`` to neighbour ``choice mod degree`` of their node."""
        here = self.location[where]
        self.location[where] = self.sub.neighbours[here, choice % self.sub.degree[here]]


class OrchestrationEnv(gym.Env):
    """The protagonist's view as a standard ``gymnasium.Env`` (one copy of the MDP).

    Args:
        sub: The substrate.
        cfg: MDP parameters.
        attacker: Demand model: None (nominal) or a callable ``(core, rng) -> [1, A]`` adversary
            action (see :mod:`.policies`).
    """

    metadata = {"render_modes": []}

    def __init__(self, sub: Substrate, cfg: EnvConfig | None = None, attacker: Any = None) -> None:
        self.core = OrchestrationCore(sub, cfg or EnvConfig(), batch=1)
        self.attacker = attacker
        # log1p features: 1e3 is far above any reachable value
        self.observation_space = gym.spaces.Box(0.0, 1e3, (self.core.obs_dim,), np.float32)
        self.action_space = gym.spaces.MultiDiscrete(sub.num_hosts)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        return self.core.reset(self.np_random)[0], {}

    def step(self, action):
        adv = None if self.attacker is None else self.attacker(self.core, self.np_random)
        reward, info = self.core.step(np.asarray(action, dtype=np.int64)[None], adv)
        info = {k: v[0] for k, v in info.items()}
        truncated = self.core.t >= self.core.cfg.horizon
        return self.core.observe()[0], float(reward[0]), False, truncated, info
