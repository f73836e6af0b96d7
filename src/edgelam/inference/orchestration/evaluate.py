"""Every router under nominal, randomly perturbed and adversarial demand.

Demand types (all perturbations within the same budget, :class:`~.env.EnvConfig`):

* ``nominal`` -- Poisson requests at the instance's rates, natural mobility only;
* ``random`` -- a uniformly random adversary action every slot (picked groups and forced moves),
  so the same budget;
* ``adversary`` (or ``adversary:<run>`` with several robust runs) -- the adversary a RARL run
  trained against its protagonist, applied to every router;
* ``worst-structured`` -- for each router, the worst of a family of structured attacks
  (:func:`~.policies.structured_attacks`: the extra rate on the highest-rate groups overall or
  of one flow, each with and without push-away moves); the attack is recorded. Taking the minimum of
  noisy estimates is biased low, equally for every router (all attacks share seeds);
* ``best-response`` (optional) -- an adversary trained by PPO against that fixed router for
  ``best_response_iterations`` iterations (an approximate best response).

Each (router, demand) pair runs ``episodes`` episodes in parallel with the same seed, so routers
face the same first arrivals. Reported per pair: mean utility per slot +- 95 % CI (Student t
over episodes), mean latency per request (s), deadline-miss rate.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from edgelam.inference.orchestration.env import EnvConfig, OrchestrationCore
from edgelam.inference.orchestration.policies import RandomAttacker, structured_attacks
from edgelam.inference.orchestration.rarl import rollout
from edgelam.inference.orchestration.substrate import Substrate
from edgelam.seeding import derive_seed

__all__ = ["episode_metrics", "evaluate_routers", "plot_evaluation"]


def _ci(x: np.ndarray) -> tuple[float, float]:
    """Mean and 95 % Student-t half-width of ``x`` (half-width 0 for one sample)."""
    if len(x) < 2:
        return float(x.mean()), 0.0
    half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    return float(x.mean()), float(half)


def episode_metrics(ro: dict[str, np.ndarray]) -> dict[str, float]:
    """Utility / latency / miss-rate means and 95 % CIs over the episodes of a rollout.

    Shapes:
        ``ro`` entries ``[T, E]`` (slots x episodes).
    """
    requests = np.maximum(ro["requests"].sum(0), 1)
    out = {}
    for name, per_episode in (
        ("utility", ro["reward"].mean(0)),
        ("latency_s", ro["latency_sum"].sum(0) / requests),
        ("miss_rate", ro["misses"].sum(0) / requests),
    ):
        out[name], out[f"{name}_ci95"] = _ci(per_episode)
    out["requests"] = int(ro["requests"].sum())
    return out


def evaluate_routers(
    sub: Substrate,
    env: EnvConfig,
    routers: dict[str, Any],
    adversaries: dict[str, Any] | None = None,
    *,
    episodes: int = 16,
    seed: int = 0,
    best_response: Any = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Evaluate ``routers`` under every demand type.

    Args:
        sub: The substrate.
        env: MDP parameters (incl. the budget).
        routers: Name -> router callable ``(core, rng) -> route``.
        adversaries: Name -> trained attacker callable (demand type ``adversary[:name]``).
        episodes: Episodes per (router, demand) pair, run in parallel.
        seed: Seed of every rollout (the same for every router).
        best_response: Optional ``router -> attacker`` trainer (demand type ``best-response``).
        progress: Optional ``advance(n)`` callback, called once per (router, demand) rollout.

    Returns:
        ``{"rows": [...], "episodes", "seed", "budget": {...}}``; each row holds ``policy``,
        ``demand``, the :func:`episode_metrics` and, for ``worst-structured``, ``attack``.

    Raises:
        ValueError: ``episodes < 1`` or no routers.
    """
    if episodes < 1 or not routers:
        raise ValueError("evaluate_routers: need episodes >= 1 and at least one router")
    core = OrchestrationCore(sub, env, batch=episodes)
    adversaries = adversaries or {}
    demands: dict[str, Any] = {"nominal": None, "random": RandomAttacker()}
    for name, att in adversaries.items():
        demands["adversary" if len(adversaries) == 1 else f"adversary:{name}"] = att
    family = structured_attacks(core)
    rows = []
    tick = progress or (lambda n: None)

    def run(router: Any, attacker: Any, key: int) -> dict[str, float]:
        rng = np.random.default_rng(derive_seed(seed, key))
        tick(1)
        return episode_metrics(rollout(core, router, attacker, rng))

    for pname, router in routers.items():
        for i, (dname, att) in enumerate(demands.items()):
            rows.append({"policy": pname, "demand": dname, **run(router, att, i)})
        worst = None
        for j, (aname, att) in enumerate(family.items()):
            m = run(router, att, 100 + j)
            if worst is None or m["utility"] < worst["utility"]:
                worst = {"policy": pname, "demand": "worst-structured", **m, "attack": aname}
        rows.append(worst)
        if best_response is not None:
            rows.append({"policy": pname, "demand": "best-response",
                         **run(router, best_response(router), 200)})  # fmt: skip
    return {
        "rows": rows,
        "episodes": episodes,
        "seed": seed,
        "budget": {
            "rate_budget": env.rate_budget,
            "rate_picks": env.rate_picks,
            "rate_max_deviation": env.rate_max_deviation,
            "move_budget": env.move_budget,
        },  # fmt: skip
        "structured_attacks": list(family),
    }


def plot_evaluation(result_file: str | Path, out: str | Path) -> Path:
    """Grouped bar plot from an evaluation JSON: cost per slot (= -utility, log scale, lower is
    better) per router and demand type, with 95 % CIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = json.loads(Path(result_file).read_text())["rows"]
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    demands = list(dict.fromkeys(r["demand"] for r in rows))
    width = 0.8 / len(demands)
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(policies), 4))
    for i, d in enumerate(demands):
        ys = {r["policy"]: r for r in rows if r["demand"] == d}
        x = [p + (i - (len(demands) - 1) / 2) * width for p in range(len(policies))]
        cost = np.array([-ys[p]["utility"] if p in ys else np.nan for p in policies])
        ci = np.array([ys[p]["utility_ci95"] if p in ys else 0.0 for p in policies])
        lower = np.minimum(ci, 0.95 * cost)  # keep the bar's lower whisker above zero (log)
        ax.bar(x, cost, width, yerr=[lower, ci], label=d, capsize=2)
    ax.set_xticks(range(len(policies)), policies, rotation=15)
    ax.set_yscale("log")
    ax.set_ylabel("cost per slot = -utility (lower is better)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
