"""CSI prediction datasets: (history, target) pairs per BS antenna, noisy and normalised.

Convention (LLM4CP): every BS antenna port of every sample (user) is its own item. Item ``i``
is antenna ``i % A`` of the ``i // A``-th selected sample (``A`` antenna ports). Its history is
slots ``[0, history_slots)`` of that antenna's CSI ``[slot, subcarrier]``, its target slots
``[history_slots, history_slots + future_slots)``. TDD takes both from ``/csi``; FDD takes the
history from ``/csi`` (uplink band) and the target from ``/csi_downlink`` (downlink band).

Real layout of one slot's ``F`` complex values, ``2F`` reals (``layout``):

* ``"interleaved"`` (default): ``[Re h_0, Im h_0, Re h_1, Im h_1, ...]``; this is what LLM4CP's released
  code uses (``data.LoadBatch_ofdm`` stacks ``[..., F, 2]``; its model unpacks
  ``'b l (k o)', o=2``).
* ``"split"``: ``[Re h_0 .. Re h_{F-1}, Im h_0 .. Im h_{F-1}]``.

Observation noise: complex AWGN ``n ~ CN(0, P / SNR)`` is added to the history (and, with
``noisy_target=True``, to the target, as LLM4CP does for training labels), where ``P`` is the
sample's average CSI power ``mean |h|^2`` over all slots, subcarriers and antennas of that band.
Noise is drawn from a generator seeded by ``(seed, epoch, sample, antenna)``: a rerun gives the
same values, :meth:`CSIPredictionDataset.set_epoch` gives fresh ones, and an item's noise does
not depend on which subset of samples it belongs to. Evaluation sets keep a fixed epoch.

Normalisation: ``x_norm = (x - mean) / std`` on the real and imaginary parts (history and
target alike), with the file's global ``norm_mean``/``norm_std`` by default or statistics
computed on a training split (:func:`normalization_stats`). NMSE
``||x_hat - x||^2 / ||x||^2`` is invariant to the scale ``std`` but not to the shift ``mean``
(it changes the denominator): compute NMSE on :meth:`CSIPredictionDataset.denormalize` d values
(or on CSI with zero mean).

Splits are over samples (users), never over the antennas of one sample, so no user is in two of
train/validation/test.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections import OrderedDict
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch.utils.data import Dataset

from edgelam.channels.store import CSIFile

__all__ = [
    "CSIPredictionDataset",
    "Split",
    "complex_to_real",
    "normalization_stats",
    "real_to_complex",
    "train_val_test_split",
]

Layout = Literal["split", "interleaved"]
_LAYOUTS = ("split", "interleaved")


def complex_to_real(h: np.ndarray, layout: Layout = "interleaved") -> np.ndarray:
    """Stack real and imaginary parts along the last axis.

    Shapes:
        h: ``[..., F]`` complex -> ``[..., 2F]`` float32.

    >>> complex_to_real(np.array([1 + 2j, 3 + 4j])).tolist()
    [1.0, 2.0, 3.0, 4.0]
    >>> complex_to_real(np.array([1 + 2j, 3 + 4j]), "split").tolist()
    [1.0, 3.0, 2.0, 4.0]
    """
    if layout == "split":
        out = np.concatenate([h.real, h.imag], axis=-1)
    elif layout == "interleaved":
        out = np.stack([h.real, h.imag], axis=-1).reshape(*h.shape[:-1], 2 * h.shape[-1])
    else:
        raise ValueError(f"layout must be one of {list(_LAYOUTS)}, got {layout!r}")
    return out.astype(np.float32, copy=False)


def real_to_complex(x: torch.Tensor | np.ndarray, layout: Layout = "interleaved"):
    """Inverse of :func:`complex_to_real` for a tensor or array.

    Shapes:
        x: ``[..., 2F]`` real -> ``[..., F]`` complex.

    >>> real_to_complex(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    tensor([1.+2.j, 3.+4.j])
    """
    if x.shape[-1] % 2:
        raise ValueError(f"last axis must have even length 2F, got {x.shape[-1]}")
    f = x.shape[-1] // 2
    if layout == "split":
        re, im = x[..., :f], x[..., f:]
    elif layout == "interleaved":
        re, im = x[..., 0::2], x[..., 1::2]
    else:
        raise ValueError(f"layout must be one of {list(_LAYOUTS)}, got {layout!r}")
    if isinstance(x, torch.Tensor):
        return torch.complex(re, im)
    return re + 1j * im


def _power(h: np.ndarray) -> float:
    """Average power ``mean |h|^2`` of one sample (float64, one summation order)."""
    return float(np.mean(np.square(h.real, dtype=np.float64) + np.square(h.imag, dtype=np.float64)))


def _as_file(file: CSIFile | str | Path) -> CSIFile:
    return file if isinstance(file, CSIFile) else CSIFile.open(file)


def _bands(file: CSIFile) -> tuple[str, str]:
    """(history band, target band) dataset names."""
    return ("csi", "csi_downlink") if file.config.duplex == "fdd" else ("csi", "csi")


def _as_samples(samples: ArrayLike | None, num_samples: int) -> np.ndarray:
    if samples is None:
        return np.arange(num_samples, dtype=np.int64)
    out = np.asarray(samples)
    if out.ndim != 1 or not (out.size == 0 or np.issubdtype(out.dtype, np.integer)):
        raise ValueError(f"samples: expected a 1-D integer array, got {out.dtype} {out.shape}")
    out = out.astype(np.int64)
    if out.size and (out.min() < 0 or out.max() >= num_samples):
        raise ValueError(f"samples: indices must lie in [0, {num_samples}), got {out.min()}..")
    if np.unique(out).size != out.size:
        raise ValueError("samples: indices must be unique")
    return out


def normalization_stats(
    file: CSIFile | str | Path, samples: ArrayLike | None = None, *, chunk_size: int = 256
) -> tuple[float, float]:
    """Global (mean, std) of the real and imaginary parts of the clean CSI of ``samples``.

    Like the file's ``norm_mean``/``norm_std`` attributes (all slots, subcarriers, antennas and,
    for FDD, both bands) but over a subset, e.g. the training split, so no test statistics leak
    into training.

    Args:
        file: the dataset (or its path).
        samples: sample indices; default all.
        chunk_size: samples read at once (memory vs. speed).
    """
    file = _as_file(file)
    idx = np.sort(_as_samples(samples, len(file)))
    if idx.size == 0:
        raise ValueError("samples: empty selection")
    count = total = sumsq = 0.0
    for band in sorted(set(_bands(file))):
        for start in range(0, idx.size, chunk_size):
            parts = file.read(idx[start : start + chunk_size], band=band).view(np.float32)
            parts = parts.astype(np.float64)
            count += parts.size
            total += parts.sum()
            sumsq += np.square(parts).sum()
    mean = total / count
    return mean, math.sqrt(max(sumsq / count - mean * mean, 0.0))


class Split(NamedTuple):
    """Disjoint sorted sample indices of the training, validation and test sets."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def train_val_test_split(
    num_samples: int | CSIFile,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int | np.random.Generator = 0,
) -> Split:
    """Randomly split sample indices ``0..num_samples-1`` into train/validation/test.

    Sizes are the largest-remainder rounding of ``fractions * num_samples`` (they add up to
    ``num_samples``); each array is sorted.

    Raises:
        ValueError: ``fractions`` is not three positive numbers summing to 1 (within 1e-9).

    >>> s = train_val_test_split(10, (0.6, 0.2, 0.2), seed=0)
    >>> [len(a) for a in s], sorted(np.concatenate(s).tolist()) == list(range(10))
    ([6, 2, 2], True)
    """
    n = len(num_samples) if isinstance(num_samples, CSIFile) else int(num_samples)
    fr = np.asarray(fractions, dtype=np.float64)
    if fr.shape != (3,) or not np.all(fr > 0) or abs(fr.sum() - 1.0) > 1e-9:
        raise ValueError(
            f"fractions: need three positive numbers summing to 1, got {tuple(fractions)}"
        )
    raw = fr * n
    sizes = np.floor(raw).astype(np.int64)
    for j in np.argsort(-(raw - sizes), kind="stable")[: n - int(sizes.sum())]:
        sizes[j] += 1
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    perm = rng.permutation(n)
    parts = np.split(perm, np.cumsum(sizes)[:-1])
    return Split(*(np.sort(p) for p in parts))


class CSIPredictionDataset(Dataset):
    """(history, target) pairs of one BS antenna's CSI, with observation noise, normalised.

    Args:
        file: the dataset (:class:`~edgelam.channels.store.CSIFile` or path).
        samples: sample (user) indices to use, e.g. a split or an edge server's partition;
            default all. Items follow this order.
        snr_db: observation SNR [dB]: ``None`` uses each sample's stored ``meta["snr_db"]``; a
            ``(lo, hi)`` tuple draws one uniformly per item (and epoch); a float fixes it;
            ``float("inf")`` adds no noise.
        noisy_target: also add noise (same SNR, independent draw) to the target (LLM4CP does so
            for training labels; keep False for evaluation).
        seed: seed of the noise (non-negative).
        epoch: initial epoch (see :meth:`set_epoch`); evaluation sets keep it fixed.
        norm: ``(mean, std)`` to normalise with; default the file's ``norm_mean``/``norm_std``.
        layout: ``"split"`` (F real parts then F imaginary parts) or ``"interleaved"``
            (LLM4CP's released code); see the module docstring.
        in_memory: load the selected samples once (fast random access). Default: when they fit
            in ``memory_budget_bytes``, else read per sample through an LRU cache.
        memory_budget_bytes: budget for the automatic ``in_memory`` choice.
        cache_samples: whole samples kept by the LRU cache when not in memory.

    Shapes:
        ``ds[i]`` -> ``(history [history_slots, 2F], target [future_slots, 2F])``, float32
        tensors, ``F`` = subcarriers; ``len(ds)`` = samples x BS antenna ports.

    Works with a ``DataLoader`` with or without workers (each worker process reopens the HDF5
    file; in-memory data are inherited or pickled). With ``persistent_workers=True`` workers do
    not see :meth:`set_epoch`; keep the default ``False``.

    >>> import tempfile, pathlib
    >>> from edgelam.channels.config import ChannelConfig
    >>> from edgelam.channels.store import generate_dataset
    >>> tmp = tempfile.TemporaryDirectory()
    >>> cfg = ChannelConfig(model="tdl-a", num_samples=4, num_subcarriers=8, bs_rows=1,
    ...                     bs_cols=2, history_slots=4, future_slots=2, batch_size=4)
    >>> f = generate_dataset(cfg, pathlib.Path(tmp.name) / "d.h5", progress=False)
    >>> ds = CSIPredictionDataset(f, snr_db=20.0)
    >>> len(ds)  # 4 samples x 4 antenna ports (1 x 2 dual-polarised)
    16
    >>> history, target = ds[5]
    >>> tuple(history.shape), tuple(target.shape), history.dtype
    ((4, 16), (2, 16), torch.float32)
    >>> ds.locate(5)  # (sample, antenna)
    (1, 1)
    >>> f.close(); tmp.cleanup()
    """

    def __init__(
        self,
        file: CSIFile | str | Path,
        samples: ArrayLike | None = None,
        *,
        snr_db: float | tuple[float, float] | None = None,
        noisy_target: bool = False,
        seed: int = 0,
        epoch: int = 0,
        norm: tuple[float, float] | None = None,
        layout: Layout = "interleaved",
        in_memory: bool | None = None,
        memory_budget_bytes: int = 2 * 2**30,
        cache_samples: int = 4,
    ) -> None:
        self.file = _as_file(file)
        cfg = self.file.config
        self.samples = _as_samples(samples, len(self.file))
        self.history_slots = cfg.history_slots
        self.future_slots = cfg.future_slots
        self.num_subcarriers = cfg.num_subcarriers
        self.num_antennas = cfg.num_bs_antennas
        self.bands = _bands(self.file)
        if snr_db is not None and not isinstance(snr_db, numbers.Real):
            lo, hi = (float(v) for v in snr_db)
            if not lo <= hi:
                raise ValueError(f"snr_db: need lo <= hi, got {snr_db}")
            snr_db = (lo, hi)
        elif snr_db is not None:
            if math.isnan(snr_db):
                raise ValueError("snr_db: got NaN")
            snr_db = float(snr_db)
        self.snr_db = snr_db
        self.noisy_target = noisy_target
        if seed < 0:
            raise ValueError(f"seed: must be >= 0, got {seed}")
        self.seed = int(seed)
        self.set_epoch(epoch)
        mean, std = norm if norm is not None else (self.file.norm_mean, self.file.norm_std)
        if not std > 0:
            raise ValueError(f"norm: std must be > 0, got {std}")
        self.mean, self.std = float(mean), float(std)
        if layout not in _LAYOUTS:
            raise ValueError(f"layout: must be one of {list(_LAYOUTS)}, got {layout!r}")
        self.layout = layout
        if cache_samples < 1:
            raise ValueError(f"cache_samples: must be >= 1, got {cache_samples}")
        self.cache_samples = cache_samples
        self.in_memory = self.nbytes <= memory_budget_bytes if in_memory is None else in_memory
        self._cache: OrderedDict[int, tuple] = OrderedDict()
        self._data: dict[str, np.ndarray] | None = None
        self._power: dict[str, np.ndarray] | None = None
        if self.in_memory:
            self._load_all()

    # -- sizes and indexing --------------------------------------------------------------
    def __len__(self) -> int:
        return self.samples.size * self.num_antennas

    @property
    def nbytes(self) -> int:
        """Bytes of complex CSI of the selected samples (all slots and stored bands)."""
        cfg = self.file.config
        per_band = cfg.num_slots * cfg.num_subcarriers * cfg.num_bs_antennas * 8
        return self.samples.size * per_band * len(set(self.bands))

    def locate(self, index: int) -> tuple[int, int]:
        """``(sample index in the file, antenna port)`` of item ``index``."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"item {index} out of range for {len(self)} items")
        pos, antenna = divmod(index % len(self), self.num_antennas)
        return int(self.samples[pos]), antenna

    def set_epoch(self, epoch: int) -> None:
        """Use the noise of ``epoch`` (call before each training epoch)."""
        if epoch < 0:
            raise ValueError(f"epoch: must be >= 0, got {epoch}")
        self.epoch = int(epoch)

    # -- normalisation -------------------------------------------------------------------
    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / std`` (real layout, any shape)."""
        return (x - self.mean) / self.std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """``x * std + mean``: back to CSI units (real layout, any shape)."""
        return x * self.std + self.mean

    # -- reading -------------------------------------------------------------------------
    def _load_all(self, chunk_size: int = 256) -> None:
        order = np.argsort(self.samples, kind="stable")
        sorted_idx = self.samples[order]
        self._data, self._power = {}, {}
        for band in set(self.bands):
            cfg = self.file.config
            shape = (self.samples.size, cfg.num_slots, cfg.num_subcarriers, cfg.num_bs_antennas)
            arr = np.empty(shape, dtype=np.complex64)
            for start in range(0, sorted_idx.size, chunk_size):
                rows = order[start : start + chunk_size]
                arr[rows] = self.file.read(sorted_idx[start : start + chunk_size], band=band)
            self._data[band] = arr
            self._power[band] = np.array([_power(x) for x in arr])

    def _sample(self, pos: int) -> tuple[np.ndarray, np.ndarray, float, float]:
        """(history band, target band, their average powers) of the ``pos``-th sample."""
        hb, tb = self.bands
        if self._data is not None:
            return (self._data[hb][pos], self._data[tb][pos],
                    float(self._power[hb][pos]), float(self._power[tb][pos]))  # fmt: skip
        if pos in self._cache:
            self._cache.move_to_end(pos)
            return self._cache[pos]
        sample = int(self.samples[pos])
        h = self.file.read(sample, band=hb)
        t = h if tb == hb else self.file.read(sample, band=tb)
        entry = (h, t, _power(h), _power(t))
        self._cache[pos] = entry
        if len(self._cache) > self.cache_samples:
            self._cache.popitem(last=False)
        return entry

    def item_snr_db(self, index: int) -> float:
        """The observation SNR [dB] applied to item ``index`` at the current epoch."""
        return self._snr(self._rng(*self.locate(index)), self.locate(index)[0])

    def _rng(self, sample: int, antenna: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, sample, antenna])

    def _snr(self, rng: np.random.Generator, sample: int) -> float:
        if self.snr_db is None:
            return float(self.file.meta["snr_db"][sample])
        if isinstance(self.snr_db, tuple):
            return float(rng.uniform(*self.snr_db))
        return float(self.snr_db)

    @staticmethod
    def _add_noise(x: np.ndarray, power: float, snr_db: float, rng) -> np.ndarray:
        if math.isinf(snr_db) and snr_db > 0:
            return x
        sigma = math.sqrt(power * 10.0 ** (-snr_db / 10.0) / 2.0)
        noise = rng.standard_normal(x.shape) + 1j * rng.standard_normal(x.shape)
        return (x + sigma * noise).astype(np.complex64)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        sample, antenna = self.locate(index)
        hist_band, tgt_band, p_hist, p_tgt = self._sample(index % len(self) // self.num_antennas)
        hs = self.history_slots
        history = hist_band[:hs, :, antenna]
        target = tgt_band[hs : hs + self.future_slots, :, antenna]
        if self.snr_db != math.inf:
            rng = self._rng(sample, antenna)
            snr = self._snr(rng, sample)
            history = self._add_noise(history, p_hist, snr, rng)
            if self.noisy_target:
                target = self._add_noise(target, p_tgt, snr, rng)
        out = []
        for x in (history, target):
            real = torch.from_numpy(complex_to_real(x, self.layout))
            out.append(self.normalize(real))
        return out[0], out[1]

    # -- pickling (DataLoader workers with spawn/forkserver) ---------------------------------
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["file"] = dataclasses.replace(self.file, _h5=None)  # h5py handles do not pickle
        state["_cache"] = OrderedDict()
        return state
