r"""CP-SAT pieces shared by the exact deployment models: integer scaling and the congestion term.

CP-SAT works on integers, so the exact models (:mod:`.exact` for shared microservices,
:mod:`.monolithic` for whole LAMs) scale every quantity to an integer **rounded in the direction
that keeps the model a relaxation**: times, utilisation terms and memory sizes are rounded down,
capacities are not rounded below their true value, and the convex congestion term
:math:`g(\rho) = \rho^2 / (1 - \rho)` is replaced by the maximum of tangent lines, each below
:math:`g`. Every deployment that is feasible in the true problem is then feasible in the model,
with a model objective no larger than its true objective, so CP-SAT's proven bound, converted
back to seconds, is a valid lower bound of the true optimum.

Units: times in :data:`TIME_UNIT_S`; the objective in :data:`OBJECTIVE_SCALE` units per request
in the system (:math:`J \Lambda = \sum_c \lambda_c D_c + \sum_n g(\rho_n)` is the mean number of
requests in the system by Little's law); utilisation in :data:`UTIL_SCALE` units.

>>> pts = tangent_points(0.9, 1e-3)
>>> len(pts), pts[0], pts[-1], all(a < b for a, b in zip(pts, pts[1:]))
(70, 0.0, 0.9, True)
>>> all(tangent(r)[0] * 0.5 + tangent(r)[1] <= congestion(0.5) + 1e-12 for r in pts)
True
"""

from __future__ import annotations

import math
import time
from typing import Any

from ortools.sat.python import cp_model

from edgelam.config import ConfigError
from edgelam.inference.deployment import Deployment, congestion, evaluate
from edgelam.inference.instance import Instance, InstanceError

__all__ = [
    "OBJECTIVE_SCALE",
    "TIME_UNIT_S",
    "UTIL_SCALE",
    "InfeasibleDeploymentError",
    "add_congestion",
    "bound_seconds",
    "congestion_floor",
    "finish_solution",
    "floor_time",
    "floor_util",
    "gap",
    "infeasible_error",
    "rate_weight",
    "run_cp_sat",
    "tangent",
    "tangent_points",
]

TIME_UNIT_S = 1e-6
"""Seconds per integer time unit (1 microsecond)."""
OBJECTIVE_SCALE = 1e11
"""Objective units per request in the system: class weights are ``floor(rate * 1e-6 * 1e11)``."""
UTIL_SCALE = 10**9
"""Utilisation units per 1.0 of utilisation."""
TANGENT_SCALE = 100
"""Extra resolution of the tangent-line coefficients."""
_SAFE = 1 - 1e-12  # absorbs float error in the last bits before flooring


class InfeasibleDeploymentError(InstanceError):
    """No deployment satisfies the memory and utilisation constraints (proved by CP-SAT)."""


def floor_time(seconds: float) -> int:
    """Seconds -> integer time units, rounded down (``0`` for non-positive times); a value
    within float error of an integer goes one unit down, the safe side.

    >>> floor_time(1.5004e-3), floor_time(2.9999999e-6)
    (1500, 2)
    """
    return max(0, math.floor(seconds / TIME_UNIT_S * _SAFE))


def floor_util(utilisation: float) -> int:
    """Utilisation -> integer units, rounded down."""
    return max(0, math.floor(utilisation * UTIL_SCALE * _SAFE))


def rate_weight(rate: float) -> int:
    """Objective weight of a class's integer latency: ``floor(rate * TIME_UNIT_S * SCALE)``."""
    return max(0, math.floor(rate * TIME_UNIT_S * OBJECTIVE_SCALE * _SAFE))


def tangent_points(max_utilisation: float, tolerance: float = 1e-4) -> list[float]:
    r"""Utilisations where the congestion term gets a tangent line, from 0 to
    ``max_utilisation``, spaced so that the maximum of the tangents is within ``tolerance`` of
    :math:`g` everywhere on [0, max_utilisation]; they crowd where :math:`g` bends most (its
    curvature grows like :math:`(1-\rho)^{-3}`).

    Args:
        max_utilisation: Upper end, in (0, 1).
        tolerance: Largest gap between :math:`g` and the tangents, in requests per node.

    Returns:
        Increasing points, the first 0 and the last ``max_utilisation``.

    Raises:
        ConfigError: ``tolerance <= 0`` or ``max_utilisation`` outside (0, 1).
    """
    if not tolerance > 0:
        raise ConfigError(f"tangent_tolerance: must be > 0, got {tolerance}")
    if not 0 < max_utilisation < 1:
        raise ConfigError(f"max_utilisation: must be in (0, 1), got {max_utilisation}")
    points = [0.0]
    while _tangent_gap(points[-1], max_utilisation) > tolerance:
        lo, hi = points[-1], max_utilisation
        for _ in range(50):  # bisection for the farthest next point within tolerance
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if _tangent_gap(points[-1], mid) <= tolerance else (lo, mid)
        points.append(lo)
    return points + [max_utilisation]


def _tangent_gap(p: float, q: float) -> float:
    """Largest gap between :math:`g` and the tangents at ``p < q`` on [p, q] (at their
    intersection)."""
    if q <= p:
        return 0.0
    (a1, b1), (a2, b2) = tangent(p), tangent(q)
    x = (b2 - b1) / (a1 - a2)
    return congestion(x) - (a1 * x + b1)


def tangent(rho: float) -> tuple[float, float]:
    r"""Slope and intercept of the tangent to :math:`g(\rho) = \rho^2/(1-\rho)` at ``rho``
    (:math:`g' = (2\rho - \rho^2)/(1-\rho)^2`); it lies below :math:`g` on [0, 1) (convexity)."""
    slope = (2 * rho - rho * rho) / (1 - rho) ** 2
    return slope, congestion(rho) - slope * rho


def _integer_tangents(points: list[float]) -> list[tuple[int, int]]:
    """Integer ``(A, B)`` with ``A * R + B <= TANGENT_SCALE * OBJECTIVE_SCALE * g(R / UTIL_SCALE)``
    for every integer ``R >= 0``: both coefficients rounded down, ``B`` two units further for the
    float error in the intercept."""
    scale = TANGENT_SCALE * OBJECTIVE_SCALE
    out = []
    for rho in points:
        a, b = tangent(rho)
        out.append((math.floor(scale * a / UTIL_SCALE), math.floor(scale * b) - 2))
    return out


def congestion_floor(util_units: int, points: list[float]) -> int:
    """The smallest value the model lets the congestion variable take at ``util_units``
    (what :func:`add_congestion` enforces); it never exceeds ``SCALE * g(util_units / UTIL)``."""
    lines = _integer_tangents(points)
    need = max(-(-(a * util_units + b) // TANGENT_SCALE) - 1 for a, b in lines)
    return max(0, need)


def add_congestion(
    model: cp_model.CpModel, util: Any, max_util_units: int, points: list[float], name: str
) -> cp_model.IntVar:
    """A variable ``w >= 0`` bounded below by every tangent line of the scaled congestion term.

    Args:
        model: The CP-SAT model.
        util: Linear expression of the node's utilisation in :data:`UTIL_SCALE` units.
        max_util_units: Largest value ``util`` may take.
        points: Tangent utilisations (:func:`tangent_points`).
        name: Variable name.

    Returns:
        ``w`` with ``TANGENT_SCALE * w >= A_k util + B_k - TANGENT_SCALE`` for each tangent ``k``;
        its least feasible value is below ``OBJECTIVE_SCALE * g(util / UTIL_SCALE)``, so the
        integer rounding up of ``w`` cannot overshoot the true congestion.
    """
    top = congestion_floor(max_util_units, points) + 1
    w = model.new_int_var(0, top, name)
    for a, b in _integer_tangents(points):
        if a * max_util_units + b > 0:  # a line that is never positive adds nothing
            model.add(TANGENT_SCALE * w >= a * util + b - TANGENT_SCALE)
    return w


def run_cp_sat(
    model: cp_model.CpModel, *, time_limit_s: float, workers: int, seed: int
) -> tuple[cp_model.CpSolver, str, float]:
    """Solve ``model``; returns the solver, its status name and the wall time in seconds.

    Raises:
        ConfigError: non-positive ``time_limit_s`` or ``workers``.
    """
    if not time_limit_s > 0:
        raise ConfigError(f"time_limit_s: must be > 0, got {time_limit_s}")
    if workers < 1:
        raise ConfigError(f"workers: must be >= 1, got {workers}")
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = float(time_limit_s)
    solver.parameters.num_workers = int(workers)
    solver.parameters.random_seed = int(seed)
    start = time.perf_counter()
    status = solver.solve(model)
    return solver, solver.status_name(status), time.perf_counter() - start


def bound_seconds(solver: cp_model.CpSolver, total_rate: float) -> float:
    """CP-SAT's proven objective bound as a lower bound of :math:`J` in seconds."""
    return max(0.0, solver.best_objective_bound) / (OBJECTIVE_SCALE * total_rate)


def gap(objective_s: float, bound_s: float) -> float:
    """Relative gap ``(objective - bound) / objective`` (0 when both are 0)."""
    if not math.isfinite(objective_s):
        return math.inf
    return 0.0 if objective_s <= 0 else max(0.0, (objective_s - bound_s) / objective_s)


def infeasible_error(inst: Instance, what: str, extra: list[str]) -> InfeasibleDeploymentError:
    """The error for an instance CP-SAT proved infeasible, with ``extra`` reasons and the
    instance's violated necessary conditions (:meth:`~.instance.Instance.infeasibility_report`)."""
    reasons = extra + inst.infeasibility_report()
    why = "; ".join(reasons) if reasons else (
        "no single necessary condition is violated: memory and utilisation limits conflict jointly"
    )  # fmt: skip
    return InfeasibleDeploymentError(
        f"instance {inst.name or '(unnamed)'}: no {what} deployment fits memory and "
        f"max_utilisation {inst.max_utilisation} (proved exactly): {why}"
    )


def finish_solution(
    inst: Instance,
    sm: Any,
    solver: cp_model.CpSolver,
    status: str,
    hint: Deployment | None,
    hinted: bool,
    start: float,
    cp_time: float,
    what: str,
    method: str,
) -> Deployment:
    """The better of CP-SAT's solution (``sm.decode(solver)``) and the hint, with ``info`` filled.

    Args:
        inst: The instance.
        sm: The model wrapper: ``decode(solver) -> Deployment`` and ``points`` (tangents).
        solver: The solver after ``solve``.
        status: Its status name.
        hint: The warm-start deployment, if any.
        hinted: Whether the hint was given to CP-SAT.
        start: ``time.perf_counter()`` when the solve began (warm start included).
        cp_time: CP-SAT's wall time.
        what: ``"shared"`` or ``"monolithic"`` (for messages).
        method: The returned deployment's ``method``.

    Returns:
        The deployment with ``info`` (see :func:`~.exact.solve_exact`).

    Raises:
        InfeasibleDeploymentError: CP-SAT proved infeasibility, or found nothing and there is
            no hint.
    """
    if status == "INFEASIBLE":
        raise infeasible_error(inst, what, [])
    total_rate = sum(d.rate for d in inst.demands)
    candidates = []
    if status in ("OPTIMAL", "FEASIBLE"):
        dep = sm.decode(solver)
        candidates.append((dep, evaluate(inst, dep), "cp-sat"))
    if hint is not None:
        candidates.append((hint, evaluate(inst, hint), "hint"))
    if not candidates:
        raise InfeasibleDeploymentError(
            f"instance {inst.name or '(unnamed)'}: CP-SAT found no {what} deployment within the "
            f"time limit (status {status}); raise --time-limit"
        )
    dep, ev, source = min(candidates, key=lambda t: (not t[1].feasible, t[1].objective_s))
    bound = bound_seconds(solver, total_rate) if status != "MODEL_INVALID" else 0.0
    dep = Deployment(dep.placement, dep.routing, dep.shared, method)
    dep.info = {
        "status": status,
        "objective_s": float(ev.objective_s),
        "feasible": ev.feasible,
        "lower_bound_s": bound,
        "gap": float(gap(ev.objective_s, bound)),
        "source": source,
        "hinted": hinted,
        "solve_time_s": time.perf_counter() - start,
        "cp_sat_time_s": cp_time,
        "model_objective_s": solver.objective_value / (OBJECTIVE_SCALE * total_rate)
        if status in ("OPTIMAL", "FEASIBLE")
        else None,
        "tangents": len(sm.points),
        "num_booleans": solver.num_booleans,
    }
    if not ev.feasible:
        dep.info["violations"] = ev.violations
    return dep
