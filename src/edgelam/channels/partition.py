"""Partitioning (training) samples across edge servers: iid and non-iid.

Partitions are over samples (users): all antenna items of a sample go to one server. Every
function returns a :class:`Partition`: disjoint, sorted per-server index arrays plus a
JSON-ready description (method, parameters, per-server sizes and, when speeds are given,
per-server mean speeds) for a run's ``config.json``/``summary.json``.

Per-sample values (``speeds``, ``profiles``, ``labels``) are indexed by *sample index* in the
file, e.g. ``file.meta["speed_mps"]`` or ``file.meta["profile"]``; ``values[samples]`` are
those of the partitioned samples.

* :func:`partition_iid`: uniformly random, ``fraction_per_server`` of the samples each (the
  paper: 5% each, up to 10 servers), or everything split equally.
* :func:`partition_by_speed`: contiguous speed bands, one per server.
* :func:`partition_by_profile`: each server holds one or a few channel profiles.
* :func:`partition_dirichlet`: label skew with per-label server shares ``~ Dir(alpha)``
  (Hsu et al., 2019); ``alpha -> inf`` approaches iid, small ``alpha`` is strongly skewed.

Randomness comes only from the explicit ``seed`` (an int or a ``numpy.random.Generator``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "Partition",
    "bin_labels",
    "partition_by_profile",
    "partition_by_speed",
    "partition_dirichlet",
    "partition_iid",
]

SeedLike = int | np.random.Generator


@dataclass
class Partition:
    """Per-server sample indices and a description of how they were drawn.

    Attributes:
        servers: one sorted int64 index array per edge server, pairwise disjoint.
        description: JSON-ready dict: ``method``, ``parameters``, ``sizes`` and method-specific
            per-server entries (``mean_speed_mps``, ``speed_band_mps``, ``profiles``,
            ``label_counts``).
    """

    servers: list[np.ndarray]
    description: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.servers = [np.sort(np.asarray(s, dtype=np.int64)) for s in self.servers]
        joined = np.concatenate(self.servers) if self.servers else np.empty(0, np.int64)
        if np.unique(joined).size != joined.size:
            raise ValueError("servers: a sample is assigned to more than one server")

    @property
    def num_servers(self) -> int:
        return len(self.servers)

    @property
    def sizes(self) -> list[int]:
        """Samples per server."""
        return [int(s.size) for s in self.servers]

    def __len__(self) -> int:
        return len(self.servers)

    def __getitem__(self, server: int) -> np.ndarray:
        return self.servers[server]

    def __iter__(self):
        return iter(self.servers)

    def to_dict(self, *, include_indices: bool = False) -> dict[str, Any]:
        """The description (plus the index lists with ``include_indices``), JSON-serialisable."""
        out = _jsonable(self.description)
        if include_indices:
            out["servers"] = [s.tolist() for s in self.servers]
        return out

    def to_json(self, *, include_indices: bool = False, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(include_indices=include_indices), indent=indent)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Partition:
        """Rebuild from :meth:`to_dict` output written with ``include_indices=True``."""
        if "servers" not in data:
            raise ValueError("servers: missing; write the partition with include_indices=True")
        desc = {k: v for k, v in data.items() if k != "servers"}
        return cls([np.asarray(s, dtype=np.int64) for s in data["servers"]], desc)


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, bytes | np.bytes_):
        return x.decode()
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not np.isfinite(x):
        return str(x)  # "inf"/"nan": strict JSON has no such numbers
    return x


def _rng(seed: SeedLike) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None or isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ValueError(f"seed: need an int or a numpy Generator, got {seed!r}")
    return np.random.default_rng(int(seed))


def _seed_repr(seed: SeedLike) -> int | str:
    return "numpy.random.Generator" if isinstance(seed, np.random.Generator) else int(seed)


def _as_samples(samples: ArrayLike | int) -> np.ndarray:
    if isinstance(samples, int | np.integer):
        return np.arange(int(samples), dtype=np.int64)
    out = np.asarray(samples)
    if out.ndim != 1 or not (out.size == 0 or np.issubdtype(out.dtype, np.integer)):
        raise ValueError(f"samples: expected a 1-D integer array, got {out.dtype} {out.shape}")
    out = out.astype(np.int64)
    if out.size and out.min() < 0:
        raise ValueError("samples: indices must be >= 0")
    if np.unique(out).size != out.size:
        raise ValueError("samples: indices must be unique")
    return out


def _check_servers(num_servers: int, num_samples: int) -> None:
    if not isinstance(num_servers, int | np.integer) or num_servers < 1:
        raise ValueError(f"num_servers: must be an int >= 1, got {num_servers!r}")
    if num_servers > num_samples:
        raise ValueError(f"num_servers: {num_servers} servers but only {num_samples} samples")


def _values(values: ArrayLike, samples: np.ndarray, name: str) -> np.ndarray:
    values = np.asarray(values)
    if values.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D per-sample array, got shape {values.shape}")
    if samples.size and samples.max() >= values.size:
        raise ValueError(
            f"{name}: has {values.size} entries but sample index {samples.max()} is requested "
            "(pass the per-sample array of the whole file, indexed by sample index)"
        )
    return values[samples]


def _per_server_size(num_servers: int, fraction: float, n: int) -> int:
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction_per_server: must be in (0, 1], got {fraction}")
    if num_servers * fraction > 1 + 1e-9:
        raise ValueError(
            f"num_servers * fraction_per_server = {num_servers} * {fraction} = "
            f"{num_servers * fraction:g} > 1: not enough samples for disjoint servers"
        )
    k = round(fraction * n)
    if k < 1 or num_servers * k > n:
        raise ValueError(
            f"fraction_per_server={fraction} of {n} samples rounds to {k} per server, which "
            f"num_servers={num_servers} cannot hold disjointly (need 1 <= {num_servers} * {k} "
            f"<= {n})"
        )
    return k


def _describe(method: str, parameters: dict, servers: list[np.ndarray],
              speeds: ArrayLike | None, **extra: Any) -> dict[str, Any]:  # fmt: skip
    desc: dict[str, Any] = {"method": method, "parameters": parameters,
                            "sizes": [int(s.size) for s in servers]}  # fmt: skip
    if speeds is not None:
        v = [_values(speeds, s, "speeds").astype(np.float64) for s in servers]
        desc["mean_speed_mps"] = [float(x.mean()) if x.size else None for x in v]
    desc.update(extra)
    return _jsonable(desc)


def partition_iid(
    samples: ArrayLike | int,
    num_servers: int,
    fraction_per_server: float | None,
    seed: SeedLike,
    *,
    speeds: ArrayLike | None = None,
) -> Partition:
    """Uniformly random disjoint subsets, one per server.

    Args:
        samples: sample indices to partition (or a count ``n`` for ``0..n-1``).
        num_servers: number of edge servers ``N``.
        fraction_per_server: each server gets ``round(fraction * len(samples))`` samples (the
            paper: 0.05); ``None`` splits all samples equally (sizes differ by at most one).
        seed: int or numpy Generator.
        speeds: optional per-sample speeds (indexed by sample index) for the description.

    Raises:
        ValueError: ``num_servers * fraction_per_server > 1``, or bad arguments.

    >>> p = partition_iid(100, 4, 0.05, seed=0)
    >>> p.sizes, p.description["method"]
    ([5, 5, 5, 5], 'iid')
    """
    samples = _as_samples(samples)
    _check_servers(num_servers, samples.size)
    perm = _rng(seed).permutation(samples)
    if fraction_per_server is None:
        servers = np.array_split(perm, num_servers)
    else:
        k = _per_server_size(num_servers, fraction_per_server, samples.size)
        servers = np.split(perm[: num_servers * k], num_servers)
    servers = [np.sort(s) for s in servers]
    params = {"num_servers": num_servers, "num_samples": samples.size,
              "fraction_per_server": fraction_per_server, "seed": _seed_repr(seed)}  # fmt: skip
    return Partition(servers, _describe("iid", params, servers, speeds))


def partition_by_speed(
    samples: ArrayLike | int,
    speeds: ArrayLike,
    num_servers: int,
    *,
    fraction_per_server: float | None = None,
    seed: SeedLike = 0,
) -> Partition:
    """Non-iid by mobility: sort by speed, give server ``j`` the ``j``-th contiguous speed band.

    Bands hold equal numbers of samples (up to one). With ``fraction_per_server`` each server
    keeps a random ``round(fraction * len(samples))`` of its band. The description records each
    band as ``speed_band_mps[j] = [min, max]`` (non-decreasing in ``j``, non-overlapping up to
    ties) and each server's mean speed.

    Args:
        samples: sample indices (or a count).
        speeds: per-sample speeds [m/s] indexed by sample index (``meta["speed_mps"]``).
        num_servers: number of servers.
        fraction_per_server: keep this fraction of the samples per server; None keeps all.
        seed: int or numpy Generator (used only with ``fraction_per_server``).
    """
    samples = _as_samples(samples)
    _check_servers(num_servers, samples.size)
    rng = _rng(seed)
    v = _values(speeds, samples, "speeds").astype(np.float64)
    order = np.lexsort((samples, v))
    bands = np.array_split(samples[order], num_servers)
    band_speeds = np.array_split(v[order], num_servers)
    edges = [[float(b.min()), float(b.max())] for b in band_speeds]
    if fraction_per_server is not None:
        k = _per_server_size(num_servers, fraction_per_server, samples.size)
        bands = [rng.choice(b, size=k, replace=False) for b in bands]
    servers = [np.sort(b) for b in bands]
    params = {"num_servers": num_servers, "num_samples": samples.size,
              "fraction_per_server": fraction_per_server, "seed": _seed_repr(seed)}  # fmt: skip
    desc = _describe("speed", params, servers, speeds, speed_band_mps=edges)
    return Partition(servers, desc)


def partition_by_profile(
    samples: ArrayLike | int,
    profiles: ArrayLike,
    num_servers: int,
    *,
    seed: SeedLike = 0,
    speeds: ArrayLike | None = None,
) -> Partition:
    """Non-iid by channel profile (e.g. several datasets of different 38.901 models joined).

    With at least as many profiles as servers, whole profiles are dealt to servers, largest
    first to the server with the fewest samples, so each server holds one or a few profiles.
    With fewer profiles than servers, each profile gets servers in proportion to its size
    (at least one; D'Hondt rounding) and its samples are split randomly among them, so each
    server holds exactly one profile. ``description["profiles"][j]`` lists server ``j``'s.

    Args:
        samples: sample indices (or a count).
        profiles: per-sample profile names or ids indexed by sample index (``meta["profile"]``).
        num_servers: number of servers.
        seed: int or numpy Generator (splitting a profile among servers).
        speeds: optional per-sample speeds for the description.
    """
    samples = _as_samples(samples)
    _check_servers(num_servers, samples.size)
    names, label = np.unique(_values(profiles, samples, "profiles"), return_inverse=True)
    counts = np.bincount(label, minlength=names.size)
    rng = _rng(seed)
    servers: list[np.ndarray]
    if names.size >= num_servers:
        owned: list[list[int]] = [[] for _ in range(num_servers)]
        load = np.zeros(num_servers, dtype=np.int64)
        for p in np.argsort(-counts, kind="stable"):
            j = int(np.argmin(load))
            owned[j].append(int(p))
            load[j] += counts[p]
        servers = [np.sort(samples[np.isin(label, o)]) for o in owned]
    else:
        share = np.ones(names.size, dtype=np.int64)
        for _ in range(num_servers - names.size):
            quotient = np.where(share < counts, counts / (share + 1), -1.0)
            share[int(np.argmax(quotient))] += 1
        servers, owned = [], []
        for p in range(names.size):
            parts = np.array_split(rng.permutation(samples[label == p]), share[p])
            servers += [np.sort(s) for s in parts]
            owned += [[p]] * int(share[p])
    params = {"num_servers": num_servers, "num_samples": samples.size,
              "seed": _seed_repr(seed)}  # fmt: skip
    desc = _describe("profile", params, servers, speeds,
                     profiles=[[names[p] for p in o] for o in owned])  # fmt: skip
    return Partition(servers, desc)


def bin_labels(values: ArrayLike, num_bins: int) -> np.ndarray:
    """Discretise values (e.g. speeds) into ``num_bins`` equal-width bins ``0..num_bins-1``.

    >>> bin_labels([0.0, 1.0, 2.0, 10.0], 2).tolist()
    [0, 0, 0, 1]
    """
    v = np.asarray(values, dtype=np.float64)
    if num_bins < 1:
        raise ValueError(f"num_bins: must be >= 1, got {num_bins}")
    edges = np.linspace(np.nanmin(v), np.nanmax(v), num_bins + 1)
    return np.clip(np.searchsorted(edges, v, side="right") - 1, 0, num_bins - 1)


def partition_dirichlet(
    samples: ArrayLike | int,
    labels: ArrayLike,
    num_servers: int,
    alpha: float,
    seed: SeedLike,
    *,
    min_size: int = 1,
    max_tries: int = 1000,
    speeds: ArrayLike | None = None,
) -> Partition:
    """Dirichlet label skew: for each label, its samples are shared ``~ Dir(alpha 1_N)``.

    Each label's samples are shuffled and cut at the cumulative Dirichlet proportions. The
    whole draw is repeated until every server has ``min_size`` samples. ``alpha = inf`` uses
    equal proportions (stratified iid); ``alpha ~ 0.1`` gives servers that see few labels.

    Args:
        samples: sample indices (or a count).
        labels: per-sample labels indexed by sample index, e.g. :func:`bin_labels` of
            ``meta["speed_mps"]`` or ``meta["profile"]``.
        num_servers: number of servers.
        alpha: Dirichlet concentration (> 0).
        seed: int or numpy Generator.
        min_size: minimum samples per server.
        max_tries: draws before giving up.
        speeds: optional per-sample speeds for the description.

    Raises:
        ValueError: bad arguments, or no draw met ``min_size`` in ``max_tries`` tries.
    """
    samples = _as_samples(samples)
    _check_servers(num_servers, samples.size)
    if not alpha > 0:
        raise ValueError(f"alpha: must be > 0, got {alpha}")
    if min_size * num_servers > samples.size:
        raise ValueError(
            f"min_size: {min_size} x num_servers={num_servers} exceeds {samples.size} samples"
        )
    names, label = np.unique(_values(labels, samples, "labels"), return_inverse=True)
    rng = _rng(seed)
    for _ in range(max_tries):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_servers)]
        for k in range(names.size):
            idx = rng.permutation(samples[label == k])
            if np.isinf(alpha):
                p = np.full(num_servers, 1.0 / num_servers)
            else:
                p = rng.dirichlet(np.full(num_servers, float(alpha)))
            cuts = np.round(np.cumsum(p)[:-1] * idx.size).astype(np.int64)
            for j, chunk in enumerate(np.split(idx, cuts)):
                parts[j].append(chunk)
        servers = [np.sort(np.concatenate(p)) for p in parts]
        if min(s.size for s in servers) >= min_size:
            break
    else:
        raise ValueError(
            f"min_size: no Dirichlet draw (alpha={alpha}) gave every server >= {min_size} "
            f"samples in {max_tries} tries; lower min_size or raise alpha"
        )
    counts = [np.bincount(label[np.isin(samples, s)], minlength=names.size) for s in servers]
    params = {"num_servers": num_servers, "num_samples": samples.size, "alpha": float(alpha),
              "min_size": min_size, "seed": _seed_repr(seed)}  # fmt: skip
    desc = _describe("dirichlet", params, servers, speeds, labels=names, label_counts=counts)
    return Partition(servers, desc)
