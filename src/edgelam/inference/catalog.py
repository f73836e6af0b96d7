"""The microservice catalog: module profiles, and multimodal LAMs as flows (DAGs) over them.

A multimodal LAM is a chain of modules -- modality encoders, input projectors, a backbone,
output projectors, modality decoders -- and different LAMs reuse the same modules. Here each
module is a :class:`Microservice` with a profile (parameters, memory, FLOPs and output bytes per
unit of work), and each LAM is a :class:`Flow`: a DAG of :class:`Stage` s, each invoking one
microservice on some number of work units (images, frames, tokens, denoising steps, ...).

The shipped catalog (``edgelam/inference/data/catalog.json``, schema
``edgelam.microservice-catalog/1``) holds 16 microservices and 6 LAMs. Large modules (LLM
backbones, the Stable Diffusion UNet and VAE decoder) carry published sizes; small ones are
calibrated by profiling real PyTorch modules on the meta device (:mod:`.profiling`). Users extend
it with their own JSON file of the same schema (:func:`load_catalog` merges files in order).

>>> cat = load_catalog()
>>> sorted(cat.flows)[:3]
['image-caption', 'image-qa', 'speech-qa']
>>> cat.flows["image-qa"].topological_order()
['vision', 'projector', 'llm']
>>> [s for s, users in cat.sharing().items() if len(users) > 2]
['clip-vit-l14', 'llm-7b']
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

from edgelam.config import ConfigError

__all__ = [
    "CATALOG_SCHEMA",
    "KINDS",
    "CatalogError",
    "Catalog",
    "Flow",
    "Microservice",
    "Stage",
    "load_catalog",
]

CATALOG_SCHEMA = "edgelam.microservice-catalog/1"
KINDS = ("encoder", "input_projector", "backbone", "output_projector", "decoder")
MIB = 2**20


class CatalogError(ConfigError):
    """A malformed catalog or flow: the message names the entry and the problem."""


def _require(d: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in d:
        raise CatalogError(f"{where}: missing field {key!r}")
    return d[key]


def _positive(value: Any, where: str, *, allow_zero: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise CatalogError(f"{where}: must be a number, got {value!r}") from None
    if not (v >= 0 if allow_zero else v > 0) or v != v or v == float("inf"):
        raise CatalogError(f"{where}: must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return v


@dataclass(frozen=True)
class Microservice:
    """One deployable module and its profile.

    Attributes:
        name: Unique name, e.g. ``"clip-vit-l14"``.
        kind: One of :data:`KINDS`.
        modality: What it processes (``image``, ``video``, ``audio``, ``text``).
        params: Number of parameters.
        memory_mb: Memory one deployed instance holds (weights at serving precision plus runtime
            workspace), MiB.
        gflops_per_unit: Forward FLOPs per unit of work, in GFLOP.
        unit: What one unit of work is (``image``, ``frame``, ``token``, ``step``, ...).
        output_bytes_per_unit: Bytes of output per unit of work.
        source: Where the numbers come from (``published: ...`` or ``profiled: ...``).
        profile: For profiled entries, how to rebuild and re-profile the module (see
            :mod:`edgelam.inference.profiling`); empty for published ones.
    """

    name: str
    kind: str
    modality: str
    params: float
    memory_mb: float
    gflops_per_unit: float
    unit: str
    output_bytes_per_unit: float
    source: str
    profile: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, name: str, d: Mapping[str, Any]) -> Microservice:
        where = f"service {name!r}"
        kind = _require(d, "kind", where)
        if kind not in KINDS:
            raise CatalogError(f"{where}: kind {kind!r} is not one of {list(KINDS)}")
        unknown = set(d) - {f for f in cls.__dataclass_fields__ if f != "name"}
        if unknown:
            raise CatalogError(f"{where}: unknown fields {sorted(unknown)}")
        params = _positive(_require(d, "params", where), f"{where}.params")
        memory_mb = _positive(_require(d, "memory_mb", where), f"{where}.memory_mb")
        if memory_mb * MIB < 2 * params:
            raise CatalogError(
                f"{where}.memory_mb: {memory_mb} MiB cannot hold {params:.3g} parameters at "
                f"16 bits ({2 * params / MIB:.0f} MiB)"
            )
        return cls(
            name=name,
            kind=kind,
            modality=str(_require(d, "modality", where)),
            params=params,
            memory_mb=memory_mb,
            gflops_per_unit=_positive(
                _require(d, "gflops_per_unit", where), f"{where}.gflops_per_unit"
            ),
            unit=str(_require(d, "unit", where)),
            output_bytes_per_unit=_positive(
                _require(d, "output_bytes_per_unit", where), f"{where}.output_bytes_per_unit"
            ),
            source=str(_require(d, "source", where)),
            profile=dict(d.get("profile", {})),
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        del d["name"]
        if not d["profile"]:
            del d["profile"]
        return d


@dataclass(frozen=True)
class Stage:
    """One step of a flow: ``units`` units of work on microservice ``service``.

    Attributes:
        id: Stage name, unique within its flow.
        service: The microservice it invokes.
        units: Work units per request (FLOPs = ``units * gflops_per_unit``).
        inputs: Stages whose outputs it needs (data dependencies).
        user_input_bytes: Bytes the user sends straight to this stage (raw image, prompt, ...).
        output_bytes: Bytes it emits per request; ``None`` means ``units *
            output_bytes_per_unit`` of its service.
    """

    id: str
    service: str
    units: float = 1.0
    inputs: tuple[str, ...] = ()
    user_input_bytes: float = 0.0
    output_bytes: float | None = None


@dataclass(frozen=True)
class Flow:
    """A multimodal LAM as a DAG of stages. Sinks (stages no other stage reads) return their
    output to the user.

    Raises (from :meth:`from_dict`):
        CatalogError: duplicate or unknown stage ids, a cycle, or a stage with neither inputs
        nor user input.
    """

    name: str
    description: str
    stages: tuple[Stage, ...]

    @classmethod
    def from_dict(cls, name: str, d: Mapping[str, Any]) -> Flow:
        where = f"flow {name!r}"
        raw = _require(d, "stages", where)
        if not isinstance(raw, list) or not raw:
            raise CatalogError(f"{where}: 'stages' must be a non-empty list")
        stages = []
        for i, s in enumerate(raw):
            sw = f"{where} stage {i}"
            unknown = set(s) - set(Stage.__dataclass_fields__)
            if unknown:
                raise CatalogError(f"{sw}: unknown fields {sorted(unknown)}")
            out = s.get("output_bytes")
            stages.append(
                Stage(
                    id=str(_require(s, "id", sw)),
                    service=str(_require(s, "service", sw)),
                    units=_positive(s.get("units", 1.0), f"{sw}.units"),
                    inputs=tuple(s.get("inputs", ())),
                    user_input_bytes=_positive(
                        s.get("user_input_bytes", 0.0), f"{sw}.user_input_bytes", allow_zero=True
                    ),
                    output_bytes=None
                    if out is None
                    else _positive(out, f"{sw}.output_bytes", allow_zero=True),
                )
            )
        flow = cls(name=name, description=str(d.get("description", "")), stages=tuple(stages))
        flow.topological_order()  # validates ids and acyclicity
        return flow

    def to_dict(self) -> dict[str, Any]:
        stages = []
        for s in self.stages:
            d = {"id": s.id, "service": s.service, "units": s.units, "inputs": list(s.inputs)}
            if s.user_input_bytes:
                d["user_input_bytes"] = s.user_input_bytes
            if s.output_bytes is not None:
                d["output_bytes"] = s.output_bytes
            stages.append(d)
        return {"description": self.description, "stages": stages}

    # A flow is immutable, so what is derived from its stages is computed once: solvers evaluate
    # deployments thousands of times and read these in their inner loops.
    @cached_property
    def stage(self) -> dict[str, Stage]:
        """Stage id -> stage (do not modify)."""
        return {s.id: s for s in self.stages}

    def services(self) -> list[str]:
        """Distinct microservices the flow uses, in stage order."""
        return list(dict.fromkeys(s.service for s in self.stages))

    def sinks(self) -> list[str]:
        """Stages whose output goes back to the user."""
        return list(self._sinks)

    @cached_property
    def _sinks(self) -> tuple[str, ...]:
        read = {i for s in self.stages for i in s.inputs}
        return tuple(s.id for s in self.stages if s.id not in read)

    def topological_order(self) -> list[str]:
        """Stage ids in an order where every stage follows its inputs (Kahn's algorithm).

        Raises:
            CatalogError: duplicate ids, unknown inputs, a source without user input, or a cycle
                (the message lists the stages on it).
        """
        return list(self._order)

    @cached_property
    def _order(self) -> tuple[str, ...]:
        where = f"flow {self.name!r}"
        ids = [s.id for s in self.stages]
        if len(set(ids)) != len(ids):
            raise CatalogError(
                f"{where}: duplicate stage ids {sorted({i for i in ids if ids.count(i) > 1})}"
            )
        for s in self.stages:
            missing = [i for i in s.inputs if i not in ids]
            if missing:
                raise CatalogError(f"{where}: stage {s.id!r} reads unknown stages {missing}")
            if not s.inputs and not s.user_input_bytes:
                raise CatalogError(
                    f"{where}: stage {s.id!r} has no inputs and no user_input_bytes (it would "
                    "receive nothing)"
                )
        indegree = {s.id: len(set(s.inputs)) for s in self.stages}
        order = [i for i in ids if indegree[i] == 0]
        for sid in order:  # the list grows while we walk it
            for s in self.stages:
                if sid in s.inputs:
                    indegree[s.id] -= 1
                    if indegree[s.id] == 0:
                        order.append(s.id)
        if len(order) != len(ids):
            raise CatalogError(f"{where}: cycle among stages {[i for i in ids if i not in order]}")
        return tuple(order)


@dataclass
class Catalog:
    """Microservices by name and flows by name, checked against each other."""

    services: dict[str, Microservice]
    flows: dict[str, Flow]

    def __post_init__(self) -> None:
        for flow in self.flows.values():
            for s in flow.stages:
                if s.service not in self.services:
                    raise CatalogError(
                        f"flow {flow.name!r}: stage {s.id!r} uses unknown microservice "
                        f"{s.service!r} (known: {sorted(self.services)})"
                    )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Catalog:
        if d.get("schema") != CATALOG_SCHEMA:
            raise CatalogError(
                f"catalog: 'schema' must be {CATALOG_SCHEMA!r}, got {d.get('schema')!r}"
            )
        services = {n: Microservice.from_dict(n, s) for n, s in d.get("services", {}).items()}
        flows = {n: Flow.from_dict(n, f) for n, f in d.get("flows", {}).items()}
        return cls(services, flows)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": CATALOG_SCHEMA,
            "services": {n: s.to_dict() for n, s in self.services.items()},
            "flows": {n: f.to_dict() for n, f in self.flows.items()},
        }

    def subset(self, flows: Iterable[str]) -> Catalog:
        """The catalog restricted to ``flows`` and the microservices they use."""
        flows = list(flows)
        unknown = [f for f in flows if f not in self.flows]
        if unknown:
            raise CatalogError(f"unknown flows {unknown} (known: {sorted(self.flows)})")
        used = {s for f in flows for s in self.flows[f].services()}
        return Catalog(
            {n: s for n, s in self.services.items() if n in used},
            {f: self.flows[f] for f in flows},
        )

    def sharing(self) -> dict[str, list[str]]:
        """Microservice -> the flows that use it (what deploying whole LAMs would duplicate)."""
        out: dict[str, list[str]] = {n: [] for n in self.services}
        for f in self.flows.values():
            for s in f.services():
                out[s].append(f.name)
        return out

    def stage_gflops(self, flow: str, stage: str) -> float:
        s = self.flows[flow].stage[stage]
        return s.units * self.services[s.service].gflops_per_unit

    def stage_output_bytes(self, flow: str, stage: str) -> float:
        s = self.flows[flow].stage[stage]
        if s.output_bytes is not None:
            return s.output_bytes
        return s.units * self.services[s.service].output_bytes_per_unit


def load_catalog(*paths: str | Path, include_default: bool = True) -> Catalog:
    """The shipped catalog, merged with user catalog files (later entries override earlier).

    Raises:
        FileNotFoundError: a path does not exist.
        CatalogError: malformed JSON or schema violations (naming file and entry).
    """
    merged: dict[str, Any] = {"schema": CATALOG_SCHEMA, "services": {}, "flows": {}}
    texts = []
    if include_default:
        texts.append(
            (
                "<shipped>",
                resources.files("edgelam.inference").joinpath("data/catalog.json").read_text(),
            )
        )
    for p in paths:
        texts.append((str(p), Path(p).read_text()))
    for where, text in texts:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as err:
            raise CatalogError(f"{where}: not valid JSON ({err})") from None
        if not isinstance(d, dict) or d.get("schema") != CATALOG_SCHEMA:
            raise CatalogError(f"{where}: 'schema' must be {CATALOG_SCHEMA!r}")
        merged["services"].update(d.get("services", {}))
        merged["flows"].update(d.get("flows", {}))
    return Catalog.from_dict(merged)
