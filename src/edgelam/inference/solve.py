"""One entry point over the deployment solvers: :func:`solve` dispatches by method name, times
the solve and evaluates the result.

=============== ==============================================================================
method          solver
=============== ==============================================================================
``exact``       :func:`~edgelam.inference.exact.solve_exact` (CP-SAT, proven lower bound)
``greedy``      :func:`~edgelam.inference.greedy.solve_greedy` (construction + local search)
``monolithic``  :func:`~edgelam.inference.monolithic.solve_monolithic` (whole LAMs, no sharing)
``diffusion``   :func:`~edgelam.inference.diffusion.solve_diffusion` (learned generator)
=============== ==============================================================================

>>> from edgelam.inference.instance import generate_instance
>>> inst = generate_instance(3, seed=0, flows=["image-caption"])
>>> dep, ev = solve(inst, "greedy", time_limit_s=2)
>>> dep.method, ev.feasible, dep.info["solve_time_s"] > 0
('greedy', True, True)
>>> solve(inst, "annealing")
Traceback (most recent call last):
...
edgelam.config.ConfigError: method: 'annealing' is not one of ['exact', 'greedy', 'monolithic', 'diffusion']
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from typing import Any

from edgelam.config import ConfigError
from edgelam.inference.deployment import Deployment, Evaluation, evaluate
from edgelam.inference.instance import Instance

__all__ = ["METHODS", "solve"]

METHODS = ("exact", "greedy", "monolithic", "diffusion")


def _solver(method: str) -> Callable[..., Deployment]:
    if method == "exact":
        from edgelam.inference.exact import solve_exact

        return solve_exact
    if method == "greedy":
        from edgelam.inference.greedy import solve_greedy

        return solve_greedy
    if method == "monolithic":
        from edgelam.inference.monolithic import solve_monolithic

        return solve_monolithic
    if method == "diffusion":
        from edgelam.inference.diffusion import solve_diffusion

        return solve_diffusion
    raise ConfigError(f"method: {method!r} is not one of {list(METHODS)}")


def solve(inst: Instance, method: str, /, **options: Any) -> tuple[Deployment, Evaluation]:
    """Solve ``inst`` with ``method`` and evaluate the deployment.

    Args:
        inst: The instance.
        method: One of :data:`METHODS`.
        **options: Keyword arguments of the solver (e.g. ``time_limit_s``, ``seed``,
            ``workers``; ``checkpoint`` for diffusion). Options the solver does not take raise.

    Returns:
        The deployment (``info["solve_time_s"]`` is the wall time of the whole call to the
        solver) and its :class:`~edgelam.inference.deployment.Evaluation`.

    Raises:
        ConfigError: unknown method, or an option the method does not accept.
        InfeasibleDeploymentError: the exact solvers proved the instance infeasible.
    """
    fn = _solver(method)
    accepted = set(inspect.signature(fn).parameters) - {"inst"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ConfigError(f"{method}: unknown options {unknown} (it takes {sorted(accepted)})")
    start = time.perf_counter()
    dep = fn(inst, **options)
    dep.info["solve_time_s"] = time.perf_counter() - start
    return dep, evaluate(inst, dep)
