"""Mobility-aware microservice migration by Lyapunov drift-plus-penalty (docs/migration.md).

* :mod:`.traces` -- seeded mobility traces: highway, high-speed train, random waypoint.
* :mod:`.model` -- the per-slot system: latency (access, backhaul, congested compute) and
  migration cost (state and weights moved, loaded; energy, bytes, storage).
* :mod:`.lyapunov` -- the virtual queue, the drift-plus-penalty controller, exact and
  alternating per-slot solvers, simulation.
* :mod:`.baselines` -- never migrate, always follow, myopic; offline optimum by dynamic
  programming (Lagrangian with bisection, exact Pareto fronts).
* :mod:`.run` / :mod:`.command` -- ``edgelam migrate run``: run directories and plots.
"""
