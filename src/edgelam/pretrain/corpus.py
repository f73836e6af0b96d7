"""The pre-training corpus: a seeded, cached mix of 3GPP TR 38.901 channel configurations.

:class:`CorpusConfig` describes *axes* (channel models, delay spreads, speed ranges, duplexing,
subcarrier spacings, BS arrays) and :func:`corpus_configs` draws ``num_configs``
:class:`~edgelam.channels.config.ChannelConfig` s from them with a seeded generator: the
training models in turn (round robin, so each is equally represented), every other axis
uniformly at random. A documented **held-out set** -- by default CDL-B and UMi (LOS and NLOS) --
never enters pre-training; :func:`held_out_configs` draws its configurations from a separate
stream, for zero-shot and few-shot tests.

One model serves every array size because each BS antenna port is its own item (LLM4CP's
convention, :class:`~edgelam.channels.dataset.CSIPredictionDataset`): a 2x2 and a 4x4
dual-polarised array give 8 and 32 items per user. Each configuration also draws its number of
subcarriers ``F`` (default 32, 48 or 64, in turn) and its subcarrier spacing, so the model sees
bandwidths from 0.96 to 11.5 MHz. The CSI branches (patch mixer, frequency- and delay-domain
convolutions), the time mixers and the backbone are F-agnostic and shared by every ``F``; the
token embedding ``Conv1d(2F -> d_model)`` and the heads ``Linear(d_model -> 2F)`` are one per
``F`` (:class:`~edgelam.pretrain.model.PretrainModel`), and every batch holds items of one
``F`` (:meth:`PretrainDataset.groups`).

Files are generated with :func:`~edgelam.channels.store.generate_dataset` into a cache
directory, named by a hash of their full config: a rerun reuses complete files and resumes an
interrupted one.

Normalisation (:class:`PretrainDataset`): each file is normalised with its **own** statistics,
computed over its training users only. Files differ in power scale (array gain, band, model),
and the predictor normalises each batch by one mean/std; per-file statistics give every item
unit scale whichever file it comes from -- the same treatment a fine-tuning dataset receives
from its own statistics.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from torch.utils.data import ConcatDataset

from edgelam.channels.config import ChannelConfig, ChannelModelName, model_family
from edgelam.channels.dataset import CSIPredictionDataset, normalization_stats
from edgelam.channels.store import CSIFile, CSIFileError
from edgelam.config import ConfigError, option, to_dict
from edgelam.seeding import derive_seed

__all__ = [
    "CorpusConfig",
    "PretrainDataset",
    "build_corpus",
    "build_held_out",
    "config_hash",
    "config_name",
    "corpus_configs",
    "corpus_splits",
    "held_out_configs",
    "held_out_dataset",
]


@dataclass
class CorpusConfig:
    """A seeded mix of 38.901 channel configurations, and the held-out ones."""

    models: tuple[ChannelModelName, ...] = option(
        ("cdl-a", "cdl-c", "cdl-d", "cdl-e", "uma"),
        "channel models pre-training sees (taken in turn over the num_configs configurations)",
    )
    held_out: tuple[ChannelModelName, ...] = option(
        ("cdl-b", "umi"),
        "models pre-training never sees, kept for zero-shot / few-shot tests; must not overlap "
        "models",
    )
    system_los: tuple[Literal["nlos", "los"], ...] = option(
        ("nlos", "los"),
        "UMa/UMi link states drawn for training configs; held-out UMa/UMi get one config each",
    )
    delay_spreads_ns: tuple[float, ...] = option(
        (30.0, 100.0, 300.0), "CDL/TDL RMS delay spreads drawn from [ns] (UMa/UMi draw their own)"
    )
    speed_edges_kmh: tuple[float, ...] = option(
        (0.0, 30.0, 60.0, 120.0),
        "edges of the user-speed ranges [km/h]: a config draws one range, its users a speed "
        "uniformly within it",
    )
    duplex: tuple[Literal["tdd", "fdd"], ...] = option(
        ("tdd", "fdd"),
        "duplexing modes drawn from (FDD: predict the downlink band from the uplink)",
    )
    subcarrier_spacings_khz: tuple[float, ...] = option(
        (30.0, 60.0, 180.0), "subcarrier spacings drawn from [kHz]"
    )
    bs_arrays: tuple[str, ...] = option(
        ("2x2", "4x4"), "BS planar arrays drawn from, 'ROWSxCOLS' (ports: x2 if dual-polarised)"
    )
    bs_polarization: Literal["dual", "single"] = option("dual", "BS array polarisation")
    carrier_frequency_hz: float = option(2.4e9, "carrier frequency [Hz]")
    subcarrier_counts: tuple[int, ...] = option(
        (32, 48, 64),
        "subcarrier counts F drawn from (one token embedding and head per F, the rest shared)",
    )
    held_out_subcarriers: int = option(
        48,
        "F of the held-out configurations (the model's F, so the exported embedding and head "
        "serve zero-shot tests)",
    )
    history_slots: int = option(16, "history slots per item (the model's L_h)")
    future_slots: int = option(4, "future slots per item (the model's L_f)")
    csi_period_s: float = option(0.5e-3, "time between CSI slots [s]")
    num_configs: int = option(24, "training configurations drawn")
    users_per_config: int = option(128, "users (samples) generated per training configuration")
    held_out_users: int = option(128, "users generated per held-out configuration")
    generation_batch_size: int = option(
        64, "users generated per Sionna batch (part of each file's seed)"
    )
    seed: int = option(0, "seed of the configuration draws and of every file's channel seed")

    def __post_init__(self) -> None:
        if not self.models:
            raise ConfigError("models: need at least one training channel model")
        overlap = sorted(set(self.models) & set(self.held_out))
        if overlap:
            raise ConfigError(f"held_out: {overlap} also listed in models; held-out must be unseen")
        for name in (
            "system_los",
            "delay_spreads_ns",
            "duplex",
            "subcarrier_spacings_khz",
            "bs_arrays",
            "subcarrier_counts",
        ):
            if not getattr(self, name):
                raise ConfigError(f"{name}: need at least one value")
        for name in ("delay_spreads_ns", "subcarrier_spacings_khz"):
            if min(getattr(self, name)) <= 0:
                raise ConfigError(f"{name}: values must be > 0, got {getattr(self, name)}")
        edges = self.speed_edges_kmh
        if (
            len(edges) < 2
            or edges[0] < 0
            or any(b <= a for a, b in zip(edges, edges[1:], strict=False))
        ):
            raise ConfigError(
                f"speed_edges_kmh: need >= 2 increasing non-negative edges, got {edges}"
            )
        for array in self.bs_arrays:
            _parse_array(array)
        if min(self.subcarrier_counts) < 1 or self.held_out_subcarriers < 1:
            raise ConfigError(f"subcarrier_counts: must be >= 1, got {self.subcarrier_counts}")
        for name in (
            "history_slots",
            "future_slots",
            "num_configs",
            "users_per_config",
            "held_out_users",
            "generation_batch_size",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.carrier_frequency_hz <= 0 or self.csi_period_s <= 0:
            raise ConfigError("carrier_frequency_hz: and csi_period_s must be > 0")


def _parse_array(text: str) -> tuple[int, int]:
    try:
        rows, cols = (int(v) for v in text.lower().split("x"))
    except ValueError:
        rows = cols = 0
    if rows < 1 or cols < 1:
        raise ConfigError(f"bs_arrays: {text!r} is not 'ROWSxCOLS' with positive integers")
    return rows, cols


def _draw(
    cfg: CorpusConfig,
    model: str,
    los: str | None,
    rng: np.random.Generator,
    num_samples: int,
    seed: int,
    subcarriers: int,
) -> ChannelConfig:
    """One configuration; every axis is drawn (even unused ones) to keep the stream aligned."""
    drawn_los = cfg.system_los[rng.integers(len(cfg.system_los))]
    spread = cfg.delay_spreads_ns[rng.integers(len(cfg.delay_spreads_ns))]
    band = rng.integers(len(cfg.speed_edges_kmh) - 1)
    duplex = cfg.duplex[rng.integers(len(cfg.duplex))]
    spacing = cfg.subcarrier_spacings_khz[rng.integers(len(cfg.subcarrier_spacings_khz))]
    rows, cols = _parse_array(cfg.bs_arrays[rng.integers(len(cfg.bs_arrays))])
    system = model_family(model) == "system"
    return ChannelConfig(
        model=model,
        los=(los or drawn_los) if system else "nlos",
        num_samples=num_samples,
        seed=seed,
        carrier_frequency_hz=float(cfg.carrier_frequency_hz),
        bs_rows=rows,
        bs_cols=cols,
        bs_polarization=cfg.bs_polarization,
        num_subcarriers=int(subcarriers),
        subcarrier_spacing_hz=float(spacing) * 1e3,
        csi_period_s=float(cfg.csi_period_s),
        history_slots=cfg.history_slots,
        future_slots=cfg.future_slots,
        speed_kmh=(float(cfg.speed_edges_kmh[band]), float(cfg.speed_edges_kmh[band + 1])),
        delay_spread_s=100e-9 if system else float(spread) * 1e-9,
        duplex=duplex,
        batch_size=min(cfg.generation_batch_size, num_samples),
    )


def _file_seed(corpus_seed: int, stream: int, index: int) -> int:
    return derive_seed(corpus_seed, stream, index)


def corpus_configs(cfg: CorpusConfig) -> list[ChannelConfig]:
    """The ``num_configs`` training configurations (deterministic in ``cfg``).

    Configuration ``i`` uses model ``models[i % len(models)]`` and ``F =
    subcarrier_counts[i % len(subcarrier_counts)]`` (with co-prime lengths, every pair comes
    up); its other axes are drawn from ``numpy.random.default_rng([seed, 0])`` and its channel
    seed from ``(seed, 0, i)``.

    >>> cs = corpus_configs(CorpusConfig(num_configs=7))
    >>> [c.model for c in cs][:6], any(c.model in ("cdl-b", "umi") for c in cs)
    (['cdl-a', 'cdl-c', 'cdl-d', 'cdl-e', 'uma', 'cdl-a'], False)
    """
    rng = np.random.default_rng([cfg.seed, 0])
    return [
        _draw(
            cfg,
            cfg.models[i % len(cfg.models)],
            None,
            rng,
            cfg.users_per_config,
            _file_seed(cfg.seed, 0, i),
            cfg.subcarrier_counts[i % len(cfg.subcarrier_counts)],
        )
        for i in range(cfg.num_configs)
    ]


def held_out_configs(cfg: CorpusConfig) -> list[ChannelConfig]:
    """One configuration per held-out model (UMa/UMi: one per state in ``system_los``).

    Every held-out configuration has ``held_out_subcarriers`` subcarriers.

    Axes other than the model are drawn from ``default_rng([seed, 1])``, channel seeds from
    ``(seed, 1, i)``: a stream disjoint from the training configurations'.
    """
    rng = np.random.default_rng([cfg.seed, 1])
    pairs = [
        (m, los)
        for m in cfg.held_out
        for los in (cfg.system_los if model_family(m) == "system" else (None,))
    ]
    return [
        _draw(
            cfg,
            m,
            los,
            rng,
            cfg.held_out_users,
            _file_seed(cfg.seed, 1, i),
            cfg.held_out_subcarriers,
        )
        for i, (m, los) in enumerate(pairs)
    ]


def config_hash(config: ChannelConfig) -> str:
    """First 16 hex digits of the sha256 of the config's sorted JSON (the cache key)."""
    text = json.dumps(to_dict(config), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def config_name(config: ChannelConfig) -> str:
    """A readable, unique file stem, e.g. ``uma-los-fdd-1a2b...``."""
    los = f"-{config.los}" if model_family(config.model) == "system" else ""
    return f"{config.model}{los}-{config.duplex}-{config_hash(config)}"


def _generate_all(
    configs: Sequence[ChannelConfig], cache_dir: str | Path, progress: bool
) -> list[Path]:
    from edgelam.channels.store import generate_dataset

    cache_dir = Path(cache_dir)
    paths = []
    for config in configs:
        path = cache_dir / f"{config_name(config)}.h5"
        if path.exists():
            found = CSIFile.open(path)
            found.close()
            if found.config != config:
                raise CSIFileError(f"{path}: cached file holds another config; delete it")
        else:
            generate_dataset(config, path, resume=True, progress=progress).close()
        paths.append(path)
    return paths


def build_corpus(cfg: CorpusConfig, cache_dir: str | Path, progress: bool = True) -> list[Path]:
    """Generate (or reuse) the training files of :func:`corpus_configs` in ``cache_dir``.

    Returns:
        The HDF5 paths, in configuration order.

    Raises:
        CSIFileError: a cached file or an unfinished ``.partial`` file is unusable.
    """
    return _generate_all(corpus_configs(cfg), cache_dir, progress)


def build_held_out(cfg: CorpusConfig, cache_dir: str | Path, progress: bool = True) -> list[Path]:
    """Generate (or reuse) the held-out files of :func:`held_out_configs` in ``cache_dir``."""
    return _generate_all(held_out_configs(cfg), cache_dir, progress)


class PretrainDataset(ConcatDataset):
    """Items of several :class:`CSIPredictionDataset` s, one per corpus file, concatenated.

    Each part keeps its own normalisation (see the module docstring); :meth:`part_of` says
    which part an item comes from, so predictions can be de-normalised with its statistics.
    Parts share ``L_h`` and ``L_f`` but may differ in ``F``; :meth:`groups` gives the items of
    each ``F``, so batches can be formed within one.

    Shapes:
        ``ds[i]`` -> ``(history [L_h, 2F], target [L_f, 2F])`` float32, re/im interleaved.
    """

    datasets: list[CSIPredictionDataset]

    def __init__(self, parts: Sequence[CSIPredictionDataset]) -> None:
        if not parts:
            raise ValueError("parts: need at least one dataset")
        slots = {(p.history_slots, p.future_slots) for p in parts}
        if len(slots) != 1:
            raise ValueError(f"parts: (L_h, L_f) differ between files: {sorted(slots)}")
        super().__init__(parts)

    @property
    def subcarrier_counts(self) -> list[int]:
        """The distinct ``F`` of the parts, ascending."""
        return sorted({p.num_subcarriers for p in self.datasets})

    def groups(self) -> dict[int, np.ndarray]:
        """``{F: indices of the items with F subcarriers}`` (ascending F, ascending indices)."""
        starts = [0, *self.cumulative_sizes[:-1]]
        out: dict[int, list[np.ndarray]] = {}
        for part, start, stop in zip(self.datasets, starts, self.cumulative_sizes, strict=True):
            out.setdefault(part.num_subcarriers, []).append(np.arange(start, stop))
        return {f: np.concatenate(out[f]) for f in sorted(out)}

    def set_epoch(self, epoch: int) -> None:
        """Draw the observation noise of ``epoch`` in every part."""
        for part in self.datasets:
            part.set_epoch(epoch)

    def part_of(self, index: int) -> tuple[int, int]:
        """``(part, item within the part)`` of item ``index``."""
        part = int(np.searchsorted(self.cumulative_sizes, index, side="right"))
        start = self.cumulative_sizes[part - 1] if part else 0
        return part, index - start


def _split_users(n: int, val_fraction: float, seed: int, index: int):
    rng = np.random.default_rng([seed, index])
    num_val = min(max(1, round(val_fraction * n)), n - 1) if val_fraction > 0 else 0
    perm = rng.permutation(n)
    return np.sort(perm[num_val:]), np.sort(perm[:num_val])


def corpus_splits(
    files: Sequence[str | Path],
    *,
    val_fraction: float = 0.05,
    split_seed: int = 0,
    train_snr_db: float | tuple[float, float] = (5.0, 20.0),
    eval_snr_db: float = 18.0,
    noisy_target: bool = False,
    noise_seed: int = 0,
) -> tuple[PretrainDataset, PretrainDataset | None]:
    """Split every file's users into training and validation; normalise by training users.

    Args:
        files: the corpus files (:func:`build_corpus`).
        val_fraction: share of each file's users held in for validation (at least one user
            each when > 0, and at least one user stays in training); 0: no validation set.
        split_seed: seeds each file's user permutation, ``default_rng([split_seed, i])``.
        train_snr_db: observation SNR of training items (a range: drawn per item and epoch).
        eval_snr_db: fixed observation SNR of validation items.
        noisy_target: add noise to training targets too (LLM4CP does; default clean).
        noise_seed: seed of the observation noise.

    Returns:
        ``(train, val)``; ``val`` is None when ``val_fraction`` is 0.
    """
    train, val = [], []
    for i, path in enumerate(files):
        file = CSIFile.open(path)
        users, held = _split_users(len(file), val_fraction, split_seed, i)
        norm = normalization_stats(file, users)
        train.append(
            CSIPredictionDataset(
                file,
                users,
                snr_db=train_snr_db,
                norm=norm,
                noisy_target=noisy_target,
                seed=noise_seed,
            )
        )
        if held.size:
            val.append(
                CSIPredictionDataset(file, held, snr_db=eval_snr_db, norm=norm, seed=noise_seed)
            )
    return PretrainDataset(train), (PretrainDataset(val) if val else None)


def held_out_dataset(
    files: Sequence[str | Path], *, snr_db: float = 18.0, noise_seed: int = 0
) -> PretrainDataset | None:
    """All users of the held-out files, each normalised by its own statistics (None if none)."""
    parts = []
    for path in files:
        file = CSIFile.open(path)
        parts.append(
            CSIPredictionDataset(
                file, snr_db=snr_db, norm=normalization_stats(file), seed=noise_seed
            )
        )
    return PretrainDataset(parts) if parts else None
