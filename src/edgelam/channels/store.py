"""CSI datasets on disk: the HDF5 layout, a resumable writer and a validating reader.

Layout (format ``edgelam-csi``, version 1), readable with h5py alone::

    /csi                 complex64 [sample, slot, subcarrier, bs_antenna]
                         TDD: the band; FDD: the uplink band (history)
    /csi_downlink        complex64, same shape, FDD only: the adjacent downlink band (target)
    /meta/speed_mps      float32 [sample]   user speed [m/s]
    /meta/direction_rad  float32 [sample]   horizontal direction of motion [rad]
    /meta/snr_db         float32 [sample]   observation SNR assigned to the sample [dB]
    /meta/ut_distance_m  float32 [sample]   2-D BS-user distance [m] (NaN for CDL/TDL)
    /meta/los            bool    [sample]   line of sight
    /meta/profile        bytes   [sample]   channel model, e.g. b"cdl-c", b"uma"

    attributes of /: format, format_version, config (JSON of the ChannelConfig),
    versions (JSON: edgelam, sionna-no-rt, torch, numpy, h5py), duplex, num_samples,
    num_written, complete, and once complete: norm_mean, norm_std (global mean and standard
    deviation of the real and imaginary parts of every stored CSI value, LLM4CP-style).

A dataset is written to ``<path>.partial`` and renamed to ``<path>`` only when complete. Samples
are written batch by batch; ``num_written`` and the running statistics are updated after each
batch, so an interrupted run resumes at the first batch not fully recorded: no sample is
duplicated, lost or torn.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from edgelam.channels.config import ChannelConfig
from edgelam.config import from_dict, to_dict
from edgelam.runs import library_versions

if TYPE_CHECKING:  # importing generate pulls in Sionna; readers must not need it
    from edgelam.channels.generate import CSIBatch

__all__ = ["CSIFile", "CSIFileError", "CSIWriter", "FORMAT", "FORMAT_VERSION", "META_FIELDS"]

FORMAT = "edgelam-csi"
FORMAT_VERSION = 1
META_FIELDS = {
    "speed_mps": np.float32,
    "direction_rad": np.float32,
    "snr_db": np.float32,
    "ut_distance_m": np.float32,
    "los": np.bool_,
}
_STATS = ("stat_count", "stat_sum", "stat_sumsq")


class CSIFileError(ValueError):
    """A CSI dataset file is missing, truncated, incomplete or inconsistent."""


def partial_path(path: str | Path) -> Path:
    """Where an unfinished dataset for ``path`` is kept."""
    path = Path(path)
    return path.with_name(path.name + ".partial")


class CSIWriter:
    """Writes a dataset batch by batch into ``<path>.partial``; :meth:`finish` publishes it.

    Opening an existing ``.partial`` file with the same config resumes it (``start`` tells
    where); with a different config it raises :class:`CSIFileError`.
    """

    def __init__(self, path: str | Path, config: ChannelConfig, *, resume: bool = True) -> None:
        self.path = Path(path)
        self.config = config
        self.tmp = partial_path(self.path)
        self._config_json = json.dumps(to_dict(config), sort_keys=True)
        if self.tmp.exists() and resume:
            try:
                self.h5 = h5py.File(self.tmp, "r+")
            except OSError as err:
                raise CSIFileError(
                    f"{self.tmp}: unfinished dataset is unreadable ({err}); delete it to start over"
                ) from err
            stored = self.h5.attrs.get("config", "")
            if stored != self._config_json:
                self.h5.close()
                raise CSIFileError(
                    f"{self.tmp}: an unfinished dataset with a different config exists; "
                    "delete it or generate with the same config to resume"
                )
        else:
            self.tmp.parent.mkdir(parents=True, exist_ok=True)
            self.h5 = h5py.File(self.tmp, "w")
            self._create_layout()
        self.start = int(self.h5.attrs["num_written"])

    def _create_layout(self) -> None:
        cfg = self.config
        h5 = self.h5
        shape = (cfg.num_samples, cfg.num_slots, cfg.num_subcarriers, cfg.num_bs_antennas)
        chunk = (1, *shape[1:])
        h5.create_dataset("csi", shape=shape, dtype=np.complex64, chunks=chunk)
        if cfg.duplex == "fdd":
            h5.create_dataset("csi_downlink", shape=shape, dtype=np.complex64, chunks=chunk)
        meta = h5.create_group("meta")
        for name, dtype in META_FIELDS.items():
            meta.create_dataset(name, shape=(cfg.num_samples,), dtype=dtype)
        meta.create_dataset("profile", shape=(cfg.num_samples,), dtype="S16")
        versions = library_versions("sionna-no-rt", "torch", "numpy", "h5py")
        h5.attrs.update(
            {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "config": self._config_json,
                "versions": json.dumps(versions, sort_keys=True),
                "duplex": cfg.duplex,
                "num_samples": cfg.num_samples,
                "num_written": 0,
                "complete": False,
                "stat_count": 0.0,
                "stat_sum": 0.0,
                "stat_sumsq": 0.0,
            }
        )
        h5.flush()

    def write(self, offset: int, batch: CSIBatch) -> None:
        """Write ``batch`` at sample ``offset`` (must equal ``num_written``), then commit it."""
        h5 = self.h5
        n = len(batch)
        if offset != int(h5.attrs["num_written"]):
            raise CSIFileError(
                f"write at {offset}, but {int(h5.attrs['num_written'])} samples written"
            )
        sl = slice(offset, offset + n)
        h5["csi"][sl] = batch.csi
        arrays = [batch.csi]
        if batch.csi_downlink is not None:
            h5["csi_downlink"][sl] = batch.csi_downlink
            arrays.append(batch.csi_downlink)
        for name in META_FIELDS:
            h5["meta"][name][sl] = getattr(batch, name)
        h5["meta"]["profile"][sl] = np.full(n, self.config.model.encode(), dtype="S16")
        count, total, sumsq = (float(h5.attrs[k]) for k in _STATS)
        for arr in arrays:
            parts = arr.view(np.float32).astype(np.float64)
            count += parts.size
            total += parts.sum()
            sumsq += np.square(parts).sum()
        h5.flush()  # data first, then the record that says it is there
        h5.attrs.update({"stat_count": count, "stat_sum": total, "stat_sumsq": sumsq})
        h5.attrs["num_written"] = offset + n
        h5.flush()

    def finish(self) -> Path:
        """Mark complete, store normalisation statistics, and rename to the final path."""
        h5 = self.h5
        if int(h5.attrs["num_written"]) != self.config.num_samples:
            raise CSIFileError(f"{self.tmp}: finish() with {int(h5.attrs['num_written'])} samples")
        count, total, sumsq = (float(h5.attrs[k]) for k in _STATS)
        mean = total / count
        h5.attrs["norm_mean"] = mean
        h5.attrs["norm_std"] = float(np.sqrt(max(sumsq / count - mean * mean, 0.0)))
        h5.attrs["complete"] = True
        h5.close()
        os.replace(self.tmp, self.path)
        return self.path

    def close(self) -> None:
        """Close without publishing (the ``.partial`` file stays, resumable)."""
        if self.h5.id.valid:
            self.h5.close()


@dataclass
class CSIFile:
    """A validated, complete CSI dataset file. Metadata is loaded eagerly, CSI on demand.

    Raises (from :meth:`open`):
        CSIFileError: missing, unreadable/truncated, unfinished, wrong format or inconsistent.
    """

    path: Path
    config: ChannelConfig
    attrs: dict[str, Any]
    meta: dict[str, np.ndarray] = field(repr=False)
    _h5: h5py.File | None = field(default=None, repr=False)

    @classmethod
    def open(cls, path: str | Path) -> CSIFile:
        path = Path(path)
        if not path.exists():
            hint = (
                " (an unfinished .partial file exists: resume generation)"
                if partial_path(path).exists()
                else ""
            )
            raise CSIFileError(f"{path}: no such CSI dataset{hint}")
        try:
            h5 = h5py.File(path, "r")
        except OSError as err:
            raise CSIFileError(
                f"{path}: not a readable HDF5 file (truncated or corrupted?): {err}"
            ) from err
        with h5:
            attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in h5.attrs.items()}
            if attrs.get("format") != FORMAT:
                raise CSIFileError(
                    f"{path}: not an edgelam CSI dataset (format={attrs.get('format')!r})"
                )
            if attrs.get("format_version") != FORMAT_VERSION:
                raise CSIFileError(
                    f"{path}: format_version {attrs.get('format_version')} is not supported "
                    f"(this edgelam reads {FORMAT_VERSION})"
                )
            if not attrs.get("complete"):
                raise CSIFileError(
                    f"{path}: dataset is incomplete ({attrs.get('num_written')} samples)"
                )
            config = from_dict(ChannelConfig, json.loads(attrs["config"]))
            n = config.num_samples
            expected = (n, config.num_slots, config.num_subcarriers, config.num_bs_antennas)
            names = ["csi"] + (["csi_downlink"] if config.duplex == "fdd" else [])
            for name in names:
                if name not in h5:
                    raise CSIFileError(f"{path}: dataset /{name} missing")
                ds = h5[name]
                if ds.shape != expected or ds.dtype != np.complex64:
                    raise CSIFileError(
                        f"{path}: /{name} has shape {ds.shape} {ds.dtype}, config says {expected} complex64"
                    )
            meta = {}
            for name in (*META_FIELDS, "profile"):
                if f"meta/{name}" not in h5:
                    raise CSIFileError(f"{path}: /meta/{name} missing")
                meta[name] = h5["meta"][name][...]
                if meta[name].shape != (n,):
                    raise CSIFileError(
                        f"{path}: /meta/{name} has shape {meta[name].shape}, expected ({n},)"
                    )
        expected_bytes = len(names) * int(np.prod(expected)) * 8
        if os.path.getsize(path) < expected_bytes:
            raise CSIFileError(
                f"{path}: file is truncated ({os.path.getsize(path)} bytes < {expected_bytes} of CSI)"
            )
        return cls(path=path, config=config, attrs=attrs, meta=meta)

    def __len__(self) -> int:
        return self.config.num_samples

    @property
    def norm_mean(self) -> float:
        """Global mean of the real/imaginary parts of all stored CSI."""
        return float(self.attrs["norm_mean"])

    @property
    def norm_std(self) -> float:
        """Global standard deviation of the real/imaginary parts of all stored CSI."""
        return float(self.attrs["norm_std"])

    @property
    def versions(self) -> dict[str, str]:
        """Library versions that generated the file."""
        return json.loads(self.attrs["versions"])

    def _file(self) -> h5py.File:
        # opened lazily, and re-opened in a forked DataLoader worker
        if self._h5 is None or not self._h5.id.valid or getattr(self, "_pid", None) != os.getpid():
            self._h5 = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._h5

    def read(self, index: int | slice | np.ndarray, *, band: str = "csi") -> np.ndarray:
        """CSI of the given samples, ``[..., slot, subcarrier, bs_antenna]`` complex64.

        Args:
            index: sample index, slice, or sorted/unsorted integer array.
            band: ``"csi"`` (TDD band / FDD uplink) or ``"csi_downlink"`` (FDD only).
        """
        if band == "csi_downlink" and self.config.duplex != "fdd":
            raise CSIFileError(f"{self.path}: csi_downlink exists only in FDD datasets")
        if band not in ("csi", "csi_downlink"):
            raise ValueError(f"band must be 'csi' or 'csi_downlink', got {band!r}")
        ds = self._file()[band]
        if isinstance(index, np.ndarray | list):
            # h5py needs increasing, unique indices
            unique, inverse = np.unique(np.asarray(index, dtype=np.int64), return_inverse=True)
            return ds[unique][inverse]
        return ds[index]

    def __getstate__(self) -> dict[str, Any]:
        # an open h5py handle cannot cross a process boundary; the copy reopens lazily
        state = dict(self.__dict__)
        state["_h5"] = None
        state.pop("_pid", None)
        return state

    def close(self) -> None:
        if self._h5 is not None and self._h5.id.valid:
            self._h5.close()
        self._h5 = None


def generate_dataset(
    config: ChannelConfig,
    path: str | Path,
    *,
    overwrite: bool = False,
    resume: bool = True,
    progress: bool = True,
) -> CSIFile:
    """Generate the dataset described by ``config`` into ``path`` (HDF5), resumably.

    Args:
        config: what to generate.
        path: destination file; work in progress lives in ``<path>.partial``.
        overwrite: replace an existing complete file at ``path``.
        resume: continue an unfinished ``.partial`` file with the same config.
        progress: show a progress bar (samples, samples/s, time left).

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is false.
        CSIFileError: an unfinished file with another config is in the way, or it is unreadable.
    """
    from edgelam.channels.generate import ChannelGenerator
    from edgelam.progress import progress_bar

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"{path} exists; pass overwrite=True (CLI: --overwrite) to replace it"
        )
    writer = CSIWriter(path, config, resume=resume)
    generator = ChannelGenerator(config)
    bs = config.batch_size
    try:
        with progress_bar(f"{config.model} {config.duplex}", total=config.num_samples,
                          completed=writer.start, enabled=progress) as advance:  # fmt: skip
            for offset in range(writer.start, config.num_samples, bs):
                size = min(bs, config.num_samples - offset)
                writer.write(offset, generator.batch(offset // bs, size))
                advance(size)
        writer.finish()
    finally:
        writer.close()
    return CSIFile.open(path)
