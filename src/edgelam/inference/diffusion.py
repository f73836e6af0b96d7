r"""The diffusion deployment generator: sample near-optimal deployment indicators in real time.

A likelihood model of good deployment indicators :math:`x \in \{0,1\}^{S \times N}` is learned
as a discrete (Bernoulli) diffusion model, as DIFUSCO does for combinatorial optimisation:
:mod:`.diffusion_process` noises solver labels toward a stationary Bernoulli distribution, and
the denoiser (:mod:`.diffusion_model`), conditioned on the instance (:mod:`.diffusion_features`),
learns :math:`p_\theta(x_0 \mid x_t)`. :func:`solve_diffusion` then

1. draws ``samples`` chains in parallel from :math:`x_T \sim \text{Bernoulli}(p)` and runs
   ``steps`` skipping reverse steps (:meth:`~.BernoulliDiffusion.timesteps`), the final one
   thresholding :math:`p_\theta(x_0 = 1 \mid x_{t_1})` at 1/2;
2. repairs each distinct sample (:mod:`.diffusion_repair`: memory, coverage, then replicas for
   overloaded nodes), routes it and evaluates it;
3. keeps the best feasible candidate (the best infeasible one if none is feasible) and refines
   its routing (:func:`~edgelam.inference.routing.refine_routing`, one pass).

A checkpoint directory holds ``model.safetensors`` (float32 weights) and ``config.json``
(``format``, ``format_version``, ``denoiser`` architecture, ``diffusion`` settings, feature
sizes, ``sha256``/``bytes`` of the weights, and how it was trained). The package ships one
(:func:`shipped_diffusion_dir`), used when ``checkpoint`` is ``None``.

>>> from edgelam.inference.instance import generate_instance
>>> from edgelam.inference.deployment import evaluate
>>> inst = generate_instance(8, seed=3)
>>> dep = solve_diffusion(inst, samples=4, steps=3, seed=0)
>>> dep.method, evaluate(inst, dep).feasible, dep.info["samples"]
('diffusion', True, 4)
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgelam.config import ConfigError, from_dict, to_dict
from edgelam.inference.deployment import Deployment, evaluate, route
from edgelam.inference.diffusion_features import (
    EDGE_FEATURES,
    NODE_FEATURES,
    PAIR_FEATURES,
    SERVICE_FEATURES,
    InstanceFeatures,
    instance_features,
)
from edgelam.inference.diffusion_model import DenoiserConfig, DeploymentDenoiser
from edgelam.inference.diffusion_process import BernoulliDiffusion
from edgelam.inference.diffusion_repair import finalize_candidate
from edgelam.inference.instance import Instance

__all__ = [
    "CHECKPOINT_FORMAT",
    "DiffusionCheckpointError",
    "export_diffusion_checkpoint",
    "generate_deployment",
    "load_diffusion_checkpoint",
    "sample_indicators",
    "shipped_diffusion_dir",
    "solve_diffusion",
]

CHECKPOINT_FORMAT = "edgelam-deployment-diffusion"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FEATURES = {"node": NODE_FEATURES, "service": SERVICE_FEATURES, "pair": PAIR_FEATURES,
            "edge": EDGE_FEATURES}  # fmt: skip


class DiffusionCheckpointError(ConfigError):
    """A diffusion checkpoint that is missing, corrupted or of another format."""


def shipped_diffusion_dir() -> Path:
    """The checkpoint shipped with the package (``edgelam/inference/data/diffusion``)."""
    return Path(str(resources.files("edgelam.inference").joinpath("data/diffusion")))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def export_diffusion_checkpoint(
    model: DeploymentDenoiser,
    diffusion: BernoulliDiffusion,
    out_dir: str | Path,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model.safetensors`` and ``config.json`` into ``out_dir``.

    Args:
        model: The trained denoiser.
        diffusion: Its diffusion process (``num_steps``, ``stationary`` are stored).
        out_dir: Target directory (created).
        extra: More JSON fields for ``config.json`` (how it was trained).

    Returns:
        ``out_dir``.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS_FILE), metadata={"format": CHECKPOINT_FORMAT})
    card = {
        "format": CHECKPOINT_FORMAT,
        "format_version": FORMAT_VERSION,
        "denoiser": to_dict(model.cfg),
        "diffusion": {"num_steps": diffusion.num_steps, "stationary": diffusion.stationary},
        "features": FEATURES,
        "parameters": sum(p.numel() for p in model.parameters()),
        "sha256": _sha256(out / WEIGHTS_FILE),
        "bytes": (out / WEIGHTS_FILE).stat().st_size,
        **(extra or {}),
    }
    (out / CONFIG_FILE).write_text(json.dumps(card, indent=2) + "\n")
    return out


def load_diffusion_checkpoint(
    path: str | Path,
) -> tuple[DeploymentDenoiser, BernoulliDiffusion, dict[str, Any]]:
    """Load a checkpoint directory (or a training run directory holding ``checkpoint/``).

    Returns:
        The denoiser (eval mode), its diffusion process and the ``config.json`` contents.

    Raises:
        DiffusionCheckpointError: missing files, another format, feature sizes that differ
            from this code's, or weights whose sha256 differs from the card's.
    """
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / WEIGHTS_FILE).is_file() and (path / "checkpoint" / WEIGHTS_FILE).is_file():
        path = path / "checkpoint"
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (path / name).is_file():
            raise DiffusionCheckpointError(f"{path}: not a diffusion checkpoint ({name} missing)")
    try:
        card = json.loads((path / CONFIG_FILE).read_text())
    except json.JSONDecodeError as err:
        raise DiffusionCheckpointError(f"{path / CONFIG_FILE}: not valid JSON ({err})") from None
    if card.get("format") != CHECKPOINT_FORMAT or card.get("format_version") != FORMAT_VERSION:
        raise DiffusionCheckpointError(
            f"{path / CONFIG_FILE}: format {card.get('format')!r} v{card.get('format_version')} "
            f"is not {CHECKPOINT_FORMAT!r} v{FORMAT_VERSION}"
        )
    if card.get("features") != FEATURES:
        raise DiffusionCheckpointError(
            f"{path / CONFIG_FILE}: feature sizes {card.get('features')} differ from this "
            f"version's {FEATURES}"
        )
    if "sha256" in card and _sha256(path / WEIGHTS_FILE) != card["sha256"]:
        raise DiffusionCheckpointError(
            f"{path / WEIGHTS_FILE}: sha256 differs from {CONFIG_FILE} (corrupted weights)"
        )
    model = DeploymentDenoiser(from_dict(DenoiserConfig, card["denoiser"]))
    try:
        model.load_state_dict(load_file(str(path / WEIGHTS_FILE)))
    except RuntimeError as err:
        raise DiffusionCheckpointError(f"{path / WEIGHTS_FILE}: {err}") from None
    model.eval()
    diffusion = BernoulliDiffusion(**card["diffusion"])
    return model, diffusion, card


@functools.lru_cache(maxsize=4)
def _cached_checkpoint(path: str) -> tuple[DeploymentDenoiser, BernoulliDiffusion, dict]:
    return load_diffusion_checkpoint(path)


@torch.no_grad()
def sample_indicators(
    model: DeploymentDenoiser,
    diffusion: BernoulliDiffusion,
    feats: InstanceFeatures,
    *,
    samples: int,
    steps: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``samples`` reverse chains of ``steps`` skipping steps on one instance.

    Args:
        model: The denoiser.
        diffusion: The process it was trained with.
        feats: One instance's features (no batch dimension).
        samples: Parallel chains.
        steps: Reverse steps (model calls).
        generator: Seeds :math:`x_T` and every reverse draw.

    Returns:
        ``(x0, p0)``: sampled indicators, bool ``[samples, S, N]``, and the denoiser's last
        :math:`p_\\theta(x_0 = 1)`, float ``[samples, S, N]``.
    """
    s, n = feats.pair.shape[:2]
    batch = feats.expand(samples)
    shape = (samples, s, n)
    x = (torch.rand(shape, generator=generator) < diffusion.stationary).float()
    p0 = torch.zeros(shape)
    ts = diffusion.timesteps(steps)
    for t, t_next in zip(ts[:-1], ts[1:], strict=True):
        p0 = torch.sigmoid(model(x, torch.full((samples,), t), batch))
        if t_next == 0:
            x = (p0 > 0.5).float()
        else:
            prob = diffusion.posterior_prob(x, p0, t, t_next)
            x = (torch.rand(shape, generator=generator) < prob).float()
    return x.bool(), p0


def solve_diffusion(
    inst: Instance,
    checkpoint: str | Path | None = None,
    *,
    samples: int = 16,
    steps: int = 10,
    seed: int = 0,
    refine: bool = True,
    polish_s: float = 0.0,
) -> Deployment:
    """Generate a deployment with the diffusion model (see the module docstring).

    Args:
        inst: The instance (any number of nodes).
        checkpoint: Checkpoint directory; ``None``: the shipped one.
        samples: Candidates sampled in parallel.
        steps: Denoising steps per candidate.
        seed: Seed of the sampling.
        refine: Improve the chosen candidate's routing with
            :func:`~edgelam.inference.routing.refine_routing` (one pass, as the greedy solver).
        polish_s: Seconds of replica local search
            (:func:`~edgelam.inference.local_search.local_search`) from the chosen candidate --
            the counterpart of DIFUSCO's 2-opt post-processing; 0 (default) returns the model's
            candidate as decoded.

    Returns:
        The best candidate (``method="diffusion"``); ``info`` holds ``samples``, ``steps``,
        ``seed``, ``distinct_candidates`` (distinct sampled indicators), ``feasible_candidates``
        (how many of those were feasible after repair), ``feasible``, ``objective_s``,
        ``routed_objective_s`` (before the routing refinement), ``sampling_time_s``
        (the model), ``repair_time_s`` (repair, routing, evaluation), ``solve_time_s`` and
        ``checkpoint``; with ``polish_s``, also ``polish_evaluations``, ``polish_improvements``
        and ``unpolished_objective_s``.

    Raises:
        ConfigError: ``samples`` or ``steps`` out of range.
        DiffusionCheckpointError: an unusable checkpoint.
    """
    start = time.perf_counter()
    path = Path(checkpoint) if checkpoint is not None else shipped_diffusion_dir()
    model, diffusion, _ = _cached_checkpoint(str(path.resolve()))
    dep = generate_deployment(
        model, diffusion, inst, samples=samples, steps=steps, seed=seed, refine=refine,
        polish_s=polish_s,
    )  # fmt: skip
    dep.info["solve_time_s"] = round(time.perf_counter() - start, 4)
    dep.info["checkpoint"] = str(path)
    return dep


def generate_deployment(
    model: DeploymentDenoiser,
    diffusion: BernoulliDiffusion,
    inst: Instance,
    *,
    samples: int,
    steps: int,
    seed: int,
    refine: bool = True,
    polish_s: float = 0.0,
) -> Deployment:
    """Sample, repair, route and evaluate ``samples`` candidates; return the best one.

    Args:
        model: The denoiser (eval mode).
        diffusion: Its diffusion process.
        inst: The instance.
        samples: Parallel chains.
        steps: Reverse steps per chain.
        seed: Seed of the sampling.
        refine: Refine the best candidate's routing (one pass of ``refine_routing``).
        polish_s: Seconds of replica local search from the best candidate (0: none).

    Returns:
        The best candidate, with ``info`` as described in :func:`solve_diffusion` (less
        ``checkpoint``; ``solve_time_s`` is sampling plus repair).

    Raises:
        ConfigError: ``samples`` or ``steps`` out of range.
    """
    if samples < 1:
        raise ConfigError(f"samples: must be >= 1, got {samples}")
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    x0, p0 = sample_indicators(
        model, diffusion, instance_features(inst), samples=samples, steps=steps,
        generator=generator,
    )  # fmt: skip
    sampled = time.perf_counter()
    score = p0.numpy().astype(np.float64)
    seen: set[bytes] = set()
    best = None
    feasible = 0
    for i, x in enumerate(x0.numpy()):
        if x.tobytes() in seen:
            continue
        seen.add(x.tobytes())
        dep, ev = finalize_candidate(inst, x, score[i])
        feasible += ev.feasible
        key = (not ev.feasible, len(ev.violations), ev.objective_s)
        if best is None or key < best[0]:
            best = (key, dep, ev)
    _, dep, ev = best
    routed_objective = ev.objective_s
    if refine and ev.feasible:
        from edgelam.inference.routing import refine_routing

        better = refine_routing(inst, dep, passes=1)
        better_ev = evaluate(inst, better)
        if better_ev.feasible and better_ev.objective_s <= ev.objective_s:
            dep, ev = better, better_ev
    polish: dict[str, Any] = {}
    if polish_s > 0 and ev.feasible:
        dep, ev, polish = _polish(inst, dep, ev, polish_s, seed)
    dep.method = "diffusion"
    end = time.perf_counter()
    dep.info = {
        "samples": samples,
        "steps": steps,
        "seed": seed,
        "distinct_candidates": len(seen),
        "feasible_candidates": int(feasible),
        "objective_s": float(ev.objective_s),
        "routed_objective_s": float(routed_objective),
        "feasible": bool(ev.feasible),
        "sampling_time_s": round(sampled - start, 4),
        "repair_time_s": round(end - sampled, 4),
        "solve_time_s": round(end - start, 4),
        **polish,
    }
    return dep


def _polish(inst: Instance, dep: Deployment, ev: Any, seconds: float, seed: int) -> tuple:
    """Replica local search (add / remove / move) from ``dep`` for ``seconds``."""
    from edgelam.inference.local_search import local_search
    from edgelam.inference.routing import refine_routing

    placement = {s: sorted(v) for s, v in dep.placement.items() if v}
    unit_memory = {s: inst.catalog.services[s].memory_mb for s in placement}

    def build(p: dict[str, list[int]], incumbent: Deployment | None = None) -> Deployment:
        return refine_routing(inst, route(inst, p, method="diffusion"), passes=1)

    deadline = time.perf_counter() + seconds
    better, better_ev, stats = local_search(
        inst, placement, build, unit_memory, seed=seed, deadline=deadline
    )
    info = {"polish_s": seconds, "polish_evaluations": stats.evaluations,
            "polish_improvements": stats.improvements,
            "unpolished_objective_s": float(ev.objective_s)}  # fmt: skip
    if better_ev.feasible and better_ev.objective_s <= ev.objective_s:
        return better, better_ev, info
    return dep, ev, info
