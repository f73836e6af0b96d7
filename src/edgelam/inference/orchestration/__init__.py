"""Robust microservice orchestration by robust adversarial RL (paper Sec. III-B).

Every needed microservice runs on >= 2 nodes (:mod:`.substrate`); each slot, a router picks the
replica that serves every stage of the arriving requests (:mod:`.env`, a ``gymnasium.Env`` and a
batched numpy core). A protagonist router and a demand adversary are trained by PPO in
alternation (:mod:`.rarl`, :mod:`.ppo`) and compared with baselines (:mod:`.policies`) under
nominal, random and adversarial demand (:mod:`.evaluate`). ``edgelam orchestrate`` is the CLI
(:mod:`.command`); ``docs/orchestration.md`` writes out the MDP.
"""

from edgelam.inference.orchestration.env import EnvConfig, OrchestrationCore, OrchestrationEnv
from edgelam.inference.orchestration.substrate import Substrate, flow_deadlines, replicate

__all__ = [
    "EnvConfig",
    "OrchestrationCore",
    "OrchestrationEnv",
    "Substrate",
    "flow_deadlines",
    "replicate",
]
