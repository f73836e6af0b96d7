"""Microservice-enabled multimodal LAM inference at the edge (``docs/deployment.md``).

Catalog and problem:

* :mod:`~edgelam.inference.catalog` -- microservice profiles and LAMs as flows (DAGs) over them.
* :mod:`~edgelam.inference.profiling` -- calibrating small modules with ``torch.utils.flop_counter``.
* :mod:`~edgelam.inference.instance` -- edge nodes, links and demands; seeded generator; JSON.
* :mod:`~edgelam.inference.deployment` -- placement + routing, the analytical objective.

Deployment solvers (:func:`~edgelam.inference.solve.solve` dispatches):

* :mod:`~edgelam.inference.exact` (CP-SAT, with :mod:`~edgelam.inference.cpsat`),
  :mod:`~edgelam.inference.greedy` (with :mod:`~edgelam.inference.construction`,
  :mod:`~edgelam.inference.routing`, :mod:`~edgelam.inference.local_search`),
  :mod:`~edgelam.inference.monolithic` (each LAM deployed whole), and the discrete diffusion
  generator :mod:`~edgelam.inference.diffusion` (``docs/deployment_diffusion.md``).

Checking and operating a deployment:

* :mod:`~edgelam.inference.simulator` -- SimPy discrete-event simulation
  (``docs/deployment_simulator.md``).
* :mod:`~edgelam.inference.orchestration` -- robust adversarial RL routing over replicas
  (``docs/orchestration.md``).
* :mod:`~edgelam.inference.migration` -- Lyapunov migration under mobility
  (``docs/migration.md``).
"""
