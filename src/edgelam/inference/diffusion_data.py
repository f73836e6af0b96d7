"""Solver-labelled training data for the diffusion generator, cached on disk and resumable.

Item ``i`` of a dataset is a function of the generator settings alone: its node count (uniform
in ``nodes_min..nodes_max``) and load (uniform in ``load_range``) are drawn from a generator
seeded by ``(seed, i)``, and the instance is ``generate_instance(num_nodes,
seed=derive_seed(seed, i, 1), load=load)``. The label is the deployment indicator of the
solver's deployment (:func:`~edgelam.inference.exact.solve_exact` with a short time limit, or the
greedy heuristic for quick tests).

A dataset directory holds ``items/<i>.json`` (the instance, the indicator and the solver's
``info``: status, objective, bound, gap, solve time) and ``manifest.json`` (the generator
settings and one entry per labelled item), rewritten atomically after every item. Asking for
more items labels only the missing ones; asking with other generator settings is refused.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgelam.config import ConfigError
from edgelam.inference.deployment import Deployment, evaluate
from edgelam.inference.instance import Instance, generate_instance
from edgelam.progress import progress_bar
from edgelam.runs import atomic_write_text
from edgelam.seeding import derive_seed

__all__ = [
    "DATASET_SCHEMA",
    "DatasetError",
    "DatasetSpec",
    "LabelledItem",
    "build_dataset",
    "item_instance",
    "load_dataset",
]

DATASET_SCHEMA = "edgelam.deployment-diffusion-dataset/1"
MANIFEST = "manifest.json"

Labeler = Callable[[Instance, float, int], Deployment]


class DatasetError(ConfigError):
    """A dataset directory that cannot be used as asked (the message says why)."""


@dataclass(frozen=True)
class DatasetSpec:
    """How the items of a dataset are generated and labelled (fixes item ``i`` completely).

    Attributes:
        nodes_min: Fewest nodes of an instance.
        nodes_max: Most nodes of an instance.
        load_range: Range of the instance load (total work / total compute).
        labeler: ``"exact"`` (CP-SAT) or ``"greedy"``.
        label_time_limit: Solver time limit per instance, seconds.
        seed: Seed of the instance draws.
    """

    nodes_min: int
    nodes_max: int
    load_range: tuple[float, float]
    labeler: str
    label_time_limit: float
    seed: int

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["load_range"] = list(self.load_range)
        return d


def item_instance(spec: DatasetSpec, index: int) -> Instance:
    """The instance of item ``index`` (deterministic in ``spec.seed`` and ``index``).

    >>> spec = DatasetSpec(6, 8, (0.2, 0.4), "greedy", 1.0, seed=0)
    >>> item_instance(spec, 3).to_dict() == item_instance(spec, 3).to_dict()
    True
    """
    rng = np.random.default_rng(derive_seed(spec.seed, index))
    num_nodes = int(rng.integers(spec.nodes_min, spec.nodes_max + 1))
    load = float(rng.uniform(*spec.load_range))
    inst = generate_instance(num_nodes, seed=derive_seed(spec.seed, index, 1), load=load)
    inst.name = f"item{index}-n{num_nodes}-load{load:.2f}"
    return inst


def _labeler(name: str) -> Labeler:
    if name == "exact":  # CP-SAT, warm-started from the greedy deployment
        from edgelam.inference.exact import solve_exact

        return lambda inst, time_limit, seed: solve_exact(
            inst, time_limit_s=time_limit, workers=1, seed=seed
        )
    if name == "greedy":
        from edgelam.inference.greedy import solve_greedy

        return lambda inst, time_limit, seed: solve_greedy(inst, seed=seed)
    raise DatasetError(f"labeler: {name!r} is not one of ['exact', 'greedy']")


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / MANIFEST).read_text())
    except (json.JSONDecodeError, OSError) as err:
        raise DatasetError(f"{path / MANIFEST}: cannot read the dataset manifest ({err})") from None


def build_dataset(
    spec: DatasetSpec,
    path: str | Path,
    instances: int,
    *,
    progress: bool = True,
    labeler: Labeler | None = None,
) -> dict[str, Any]:
    """Label items ``0..instances-1`` into ``path``, reusing those already there.

    Args:
        spec: Generator and labeller settings.
        path: Dataset directory (created if missing).
        instances: Number of items wanted.
        progress: Draw a progress bar.
        labeler: Override of the labelling function ``(inst, time_limit_s, seed) ->
            Deployment`` (tests); default from ``spec.labeler``.

    Returns:
        The manifest: ``schema``, ``spec``, ``entries`` (index, file, num_nodes, load, status,
        source, objective_s, gap, solve_time_s, feasible) and ``labelling_seconds`` (summed over items).

    Raises:
        DatasetError: ``path`` holds a dataset made with a different ``spec``, or a bad manifest.
    """
    path = Path(path)
    if instances < 1:
        raise DatasetError(f"instances: must be >= 1, got {instances}")
    if (path / MANIFEST).exists():
        manifest = _read_manifest(path)
        if manifest.get("spec") != spec.to_dict():
            raise DatasetError(
                f"{path}: holds a dataset generated with {manifest.get('spec')}, not "
                f"{spec.to_dict()}; use another dataset directory"
            )
    else:
        manifest = {"schema": DATASET_SCHEMA, "spec": spec.to_dict(), "entries": []}
        manifest["labelling_seconds"] = 0.0
    done = {e["index"] for e in manifest["entries"]}
    todo = [i for i in range(instances) if i not in done]
    if todo:
        label = labeler or _labeler(spec.labeler)
        (path / "items").mkdir(parents=True, exist_ok=True)
    with progress_bar(
        "labelling", total=instances, completed=instances - len(todo), enabled=progress
    ) as advance:
        for i in todo:
            inst = item_instance(spec, i)
            start = time.perf_counter()
            try:
                dep = label(inst, spec.label_time_limit, derive_seed(spec.seed, i, 2))
            except ConfigError as err:  # proven infeasible, or nothing found in time
                dep = Deployment({}, info={"status": "NO_LABEL", "error": str(err)})
            seconds = time.perf_counter() - start
            ev = evaluate(inst, dep)
            info = {
                k: v if isinstance(v, str | bool) else float(v) if isinstance(v, float) else v
                for k, v in dep.info.items()
                if isinstance(v, str | int | float | bool)
            }
            file = f"items/{i:05d}.json"
            item = {
                "instance": inst.to_dict(),
                "services": list(inst.catalog.services),
                "indicator": dep.indicator(inst).astype(int).tolist(),
                "objective_s": ev.objective_s if ev.feasible else None,
                "feasible": ev.feasible,
                "info": info,
            }
            atomic_write_text(path / file, json.dumps(item))
            manifest["entries"].append(
                {
                    "index": i,
                    "file": file,
                    "num_nodes": len(inst.nodes),
                    "load": round(_instance_load(inst), 4),
                    "status": str(info.get("status", dep.method)),
                    "source": info.get("source", dep.method),
                    "objective_s": float(ev.objective_s) if ev.feasible else None,
                    "gap": info.get("gap"),
                    "solve_time_s": round(seconds, 3),
                    "feasible": ev.feasible,
                }
            )
            manifest["entries"].sort(key=lambda e: e["index"])
            manifest["labelling_seconds"] = round(manifest["labelling_seconds"] + seconds, 3)
            atomic_write_text(path / MANIFEST, json.dumps(manifest, indent=1))
            advance(1)
    return manifest


def _instance_load(inst: Instance) -> float:
    """Total demanded work over total sustained compute (the ``load`` it was generated with)."""
    cat = inst.catalog
    work = sum(
        d.rate * sum(cat.stage_gflops(d.flow, s.id) for s in cat.flows[d.flow].stages) * 1e9
        for d in inst.demands
    )
    return work / sum(x.flops for x in inst.nodes)


@dataclass
class LabelledItem:
    """One usable training item: the instance, its label ``[S, N]`` (bool) and objective."""

    index: int
    instance: Instance
    indicator: np.ndarray
    objective_s: float
    status: str


def load_dataset(path: str | Path, instances: int | None = None) -> list[LabelledItem]:
    """The feasible labelled items of a dataset directory (the first ``instances`` if given).

    Raises:
        DatasetError: no manifest, or an item file is missing or malformed.
    """
    path = Path(path)
    if not (path / MANIFEST).exists():
        raise DatasetError(f"{path}: no {MANIFEST}; build the dataset first")
    manifest = _read_manifest(path)
    items = []
    for e in manifest["entries"]:
        if (instances is not None and e["index"] >= instances) or not e["feasible"]:
            continue
        try:
            d = json.loads((path / e["file"]).read_text())
            inst = Instance.from_dict(d["instance"])
            x = np.array(d["indicator"], dtype=bool)
        except (OSError, json.JSONDecodeError, KeyError) as err:
            raise DatasetError(f"{path / e['file']}: unreadable item ({err!r})") from None
        if d["services"] != list(inst.catalog.services) or x.shape != (
            len(inst.catalog.services),
            len(inst.nodes),
        ):
            raise DatasetError(f"{path / e['file']}: indicator does not match its instance")
        items.append(LabelledItem(e["index"], inst, x, float(d["objective_s"]), e["status"]))
    return items
