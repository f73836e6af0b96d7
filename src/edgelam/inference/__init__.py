"""Microservice-enabled multimodal LAM inference at the edge.

* :mod:`~edgelam.inference.catalog` -- microservice profiles and LAMs as flows (DAGs) over them.
* :mod:`~edgelam.inference.profiling` -- calibrating small modules with ``torch.utils.flop_counter``.
* :mod:`~edgelam.inference.instance` -- edge nodes, links and demands; seeded generator; JSON.
* :mod:`~edgelam.inference.deployment` -- placement + routing, the analytical objective.
"""
