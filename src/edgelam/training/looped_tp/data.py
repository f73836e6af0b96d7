"""Data of the two looped-TP tasks: masked CSI modelling and masked-language modelling.

Batch ``s`` of either task is a function of ``(seed, s)`` alone (so runs resume bit for bit):
an epoch ``s // E`` permutes the training items (seed ``(seed, epoch)``), step ``s`` takes the
``s mod E``-th slice of ``batch_size`` items. The **mask** is drawn from ``(seed, s, 2)`` and
holds no data, so every role (the server included) derives it without communication; the
inputs and labels exist only where the data are (the devices).

* ``csi``: items are the CSI histories ``[L_h, 2F]`` of one BS antenna from the 38.901
  pre-training corpus (:func:`~edgelam.pretrain.corpus.build_corpus`, only files whose ``F``
  equals the model's), normalised per file and observed at a random SNR
  (:func:`~edgelam.pretrain.corpus.corpus_splits`). The mask covers time/frequency patches
  (:func:`~edgelam.pretrain.objectives.patch_mask`); inputs are
  :func:`~edgelam.training.looped_tp.model.csi_features`.
* ``mlm``: a user's plain-text file, tokenised by characters or whitespace-separated words
  (:class:`TextTokenizer`), cut into non-overlapping windows of ``T`` tokens; exactly
  ``round(mask_ratio * T)`` positions per window are replaced by ``[MASK]``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch

from edgelam.config import ConfigError
from edgelam.pretrain.corpus import build_corpus, corpus_splits
from edgelam.pretrain.objectives import apply_mask, derive_seed, num_masked, patch_mask
from edgelam.training.looped_tp.model import csi_features

__all__ = [
    "Batch",
    "CSITaskData",
    "MLMTaskData",
    "MaskSource",
    "TextTokenizer",
    "epoch_slice",
    "label_bits",
    "mlm_mask",
    "task_data",
]

MASK, UNK = "[MASK]", "[UNK]"


class Batch(NamedTuple):
    """One batch: ``inputs`` and ``labels`` (None where the data are not held) and the mask.

    Shapes:
        csi: inputs ``[B, T, 4F]``, mask ``[B, T, 2F]`` bool, labels ``[mask.sum()]`` float;
        mlm: inputs ``[B, T]`` long, mask ``[B, T]`` bool, labels ``[mask.sum()]`` long.
    """

    inputs: torch.Tensor | None
    mask: torch.Tensor
    labels: torch.Tensor | None


def mlm_mask(batch: int, seq_len: int, mask_ratio: float, gen: torch.Generator) -> torch.Tensor:
    """Exactly ``round(mask_ratio * T)`` random positions per sequence. Shapes: -> ``[B, T]``."""
    k = num_masked(seq_len, mask_ratio)
    order = torch.rand(batch, seq_len, generator=gen).argsort(dim=1)
    return torch.zeros(batch, seq_len, dtype=torch.bool).scatter_(1, order[:, :k], True)


def step_generator(seed: int, step: int) -> torch.Generator:
    """The mask generator of training step ``step`` (validation batch ``i``: ``10**6 + i``)."""
    return torch.Generator().manual_seed(derive_seed(seed, step, 2))


def epoch_slice(num_items: int, batch_size: int, seed: int, step: int) -> tuple[int, np.ndarray]:
    """``(epoch, item indices)`` of batch ``step`` (see the module docstring).

    >>> epoch_slice(10, 4, 0, 2)[0], len(epoch_slice(10, 4, 0, 1)[1])
    (1, 4)
    """
    per_epoch = max(1, num_items // batch_size)
    epoch, pos = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(num_items)
    if num_items < batch_size:  # fewer items than one batch: wrap around
        perm = np.resize(perm, batch_size)
    return epoch, perm[pos * batch_size : (pos + 1) * batch_size]


@dataclass(frozen=True)
class TextTokenizer:
    """Character- or word-level vocabulary of a text: ``[MASK]``, ``[UNK]``, then sorted tokens.

    >>> tok = TextTokenizer.from_text("abba c", "char")
    >>> tok.vocab, tok.encode("cab?")
    (('[MASK]', '[UNK]', ' ', 'a', 'b', 'c'), [5, 3, 4, 1])
    """

    vocab: tuple[str, ...]
    level: Literal["char", "word"]

    @classmethod
    def from_text(cls, text: str, level: Literal["char", "word"]) -> TextTokenizer:
        return cls((MASK, UNK, *sorted(set(cls.split(text, level)))), level)

    @staticmethod
    def split(text: str, level: str) -> list[str]:
        if level not in ("char", "word"):
            raise ConfigError(f"tokenizer: {level!r} is not one of ['char', 'word']")
        return list(text) if level == "char" else text.split()

    def encode(self, text: str) -> list[int]:
        index = {t: i for i, t in enumerate(self.vocab)}
        return [index.get(t, 1) for t in self.split(text, self.level)]


class MLMTaskData:
    """Masked-language-model batches from a text file.

    Args:
        path: the UTF-8 text file.
        level: ``char`` or ``word`` tokens.
        seq_len: ``T``.
        batch_size, mask_ratio, seed: see the module docstring.
        val_fraction: share of the windows held out (chosen with ``default_rng([seed, 1])``).

    Raises:
        ConfigError: missing file, or too little text for one training window.
    """

    def __init__(self, path: str | Path, level: Literal["char", "word"], seq_len: int,
                 batch_size: int, mask_ratio: float, seed: int, val_fraction: float) -> None:  # fmt: skip
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"text_file: {path} not found (task mlm needs a plain-text corpus)")
        text = path.read_text(encoding="utf-8")
        self.tokenizer = TextTokenizer.from_text(text, level)
        ids = torch.tensor(self.tokenizer.encode(text), dtype=torch.long)
        n = len(ids) // seq_len
        num_val = min(n - 1, round(val_fraction * n)) if val_fraction > 0 else 0
        if n - num_val < 1:
            raise ConfigError(
                f"text_file: {path} has {len(ids)} {level} tokens; need at least "
                f"{seq_len * (1 + (num_val > 0))} for seq_len={seq_len}"
            )
        windows = ids[: n * seq_len].view(n, seq_len)
        order = np.random.default_rng([seed, 1]).permutation(n)
        self.train, self.val = windows[np.sort(order[num_val:])], windows[np.sort(order[:num_val])]
        self.seq_len, self.batch_size, self.mask_ratio, self.seed = (
            seq_len,
            batch_size,
            mask_ratio,
            seed,
        )

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer.vocab)

    def _make(self, ids: torch.Tensor, gen: torch.Generator) -> Batch:
        mask = mlm_mask(ids.shape[0], self.seq_len, self.mask_ratio, gen)
        return Batch(ids.masked_fill(mask, 0), mask, ids[mask])

    def batch(self, step: int) -> Batch:
        _, idx = epoch_slice(len(self.train), self.batch_size, self.seed, step)
        return self._make(self.train[torch.from_numpy(idx)], step_generator(self.seed, step))

    def val_batches(self, count: int) -> list[Batch]:
        """Up to ``count`` fixed validation batches (masks from ``(seed, 10**6 + i)``)."""
        out = []
        for i in range(min(count, len(self.val) // self.batch_size)):
            ids = self.val[i * self.batch_size : (i + 1) * self.batch_size]
            out.append(self._make(ids, step_generator(self.seed, 10**6 + i)))
        return out

    def info(self) -> dict[str, Any]:
        return {"train_windows": len(self.train), "val_windows": len(self.val),
                "val_batches": len(self.val) // self.batch_size, "vocab_size": self.vocab_size,
                "vocab": list(self.tokenizer.vocab), "level": self.tokenizer.level}  # fmt: skip


class CSITaskData:
    """Masked-CSI batches from the 38.901 corpus (items whose ``F`` is the model's).

    Args:
        train, val: datasets of :func:`~edgelam.pretrain.corpus.corpus_splits`.
        num_subcarriers: the model's ``F``.
        batch_size, mask_ratio, seed: see the module docstring.
        patch_slots, patch_subcarriers: the masked patch (divide ``T`` and ``F``).
        dtype: of inputs and labels.

    Raises:
        ConfigError: no corpus file has ``F`` subcarriers.
    """

    def __init__(self, train: Any, val: Any, num_subcarriers: int, batch_size: int,
                 mask_ratio: float, seed: int, patch_slots: int, patch_subcarriers: int,
                 dtype: torch.dtype) -> None:  # fmt: skip
        groups = train.groups()
        if num_subcarriers not in groups:
            raise ConfigError(
                f"model.num_subcarriers: {num_subcarriers} is not among the corpus's subcarrier "
                f"counts {sorted(groups)} (corpus.subcarrier_counts)"
            )
        self.train, self.items = train, groups[num_subcarriers]
        self.val = val
        self.val_items = (
            val.groups().get(num_subcarriers, np.zeros(0, int)) if val else np.zeros(0, int)
        )
        self.f, self.batch_size, self.seed, self.dtype = num_subcarriers, batch_size, seed, dtype
        self.mask_kwargs = {"patch_slots": patch_slots, "patch_subcarriers": patch_subcarriers,
                            "mask_ratio": mask_ratio}  # fmt: skip

    def _make(self, history: torch.Tensor, gen: torch.Generator) -> Batch:
        history = history.to(self.dtype)
        b, t, _ = history.shape
        mask = patch_mask(b, t, self.f, **self.mask_kwargs, generator=gen)
        return Batch(csi_features(apply_mask(history, mask), mask), mask, history[mask])

    def batch(self, step: int) -> Batch:
        epoch, idx = epoch_slice(len(self.items), self.batch_size, self.seed, step)
        self.train.set_epoch(epoch)
        history = torch.stack([self.train[int(self.items[i])][0] for i in idx])
        return self._make(history, step_generator(self.seed, step))

    def val_batches(self, count: int) -> list[Batch]:
        """Up to ``count`` fixed validation batches (fixed noise and masks)."""
        out = []
        for i in range(min(count, len(self.val_items) // self.batch_size)):
            idx = self.val_items[i * self.batch_size : (i + 1) * self.batch_size]
            history = torch.stack([self.val[int(j)][0] for j in idx])
            out.append(self._make(history, step_generator(self.seed, 10**6 + i)))
        return out

    def info(self) -> dict[str, Any]:
        return {"train_items": len(self.items), "val_items": len(self.val_items),
                "val_batches": len(self.val_items) // self.batch_size, "num_subcarriers": self.f}  # fmt: skip


class MaskSource:
    """The batches as seen by a role without data (the server): the masks alone.

    Draws exactly the masks of :class:`CSITaskData` / :class:`MLMTaskData` (same generator,
    same first draw), from the config and the number of validation batches.
    """

    def __init__(self, cfg: Any, model_cfg: Any, val_batches: int) -> None:
        self.cfg, self.model_cfg, self.num_val = cfg, model_cfg, val_batches

    def _mask(self, gen: torch.Generator) -> torch.Tensor:
        c, m = self.cfg, self.model_cfg
        if m.task == "mlm":
            return mlm_mask(c.batch_size, m.seq_len, c.mask_ratio, gen)
        return patch_mask(c.batch_size, m.seq_len, m.num_subcarriers, patch_slots=c.mask_patch_slots,
                          patch_subcarriers=c.mask_patch_subcarriers, mask_ratio=c.mask_ratio,
                          generator=gen)  # fmt: skip

    def batch(self, step: int) -> Batch:
        return Batch(None, self._mask(step_generator(self.cfg.seed, step)), None)

    def val_batches(self, count: int) -> list[Batch]:
        return [Batch(None, self._mask(step_generator(self.cfg.seed, 10**6 + i)), None)
                for i in range(min(count, self.num_val))]  # fmt: skip


def _load(cfg: Any, dtype: torch.dtype, progress: bool) -> CSITaskData | MLMTaskData:
    m = cfg.model
    if m.task == "mlm":
        return MLMTaskData(cfg.text_file, cfg.tokenizer, m.seq_len, cfg.batch_size, cfg.mask_ratio,
                           cfg.seed, cfg.val_fraction)  # fmt: skip
    files = build_corpus(cfg.corpus, cfg.cache_dir, progress=progress)
    train, val = corpus_splits(files, val_fraction=cfg.val_fraction, split_seed=cfg.seed,
                               train_snr_db=cfg.train_snr_db, eval_snr_db=cfg.eval_snr_db,
                               noise_seed=cfg.seed)  # fmt: skip
    return CSITaskData(train, val, m.num_subcarriers, cfg.batch_size, cfg.mask_ratio, cfg.seed,
                       cfg.mask_patch_slots, cfg.mask_patch_subcarriers, dtype)  # fmt: skip


def task_data(
    cfg: Any, link: Any, dtype: torch.dtype, progress: bool = False
) -> tuple[Any, Any, dict]:
    """The data of this process's roles, the model config with ``vocab_size`` resolved, and info.

    Processes running devices load the data (device 0's first: it generates missing corpus
    files, the others then read them); a process without devices gets a :class:`MaskSource`.
    Device 0's ``info()`` (sizes, vocabulary) is shared with every process as a control message.

    Raises:
        ConfigError: ``model.vocab_size`` is set but smaller than the corpus's vocabulary.
    """
    data = _load(cfg, dtype, progress) if link.owns(0) else None
    link.gather(None)  # barrier: device 0 has generated the corpus
    link.agree(None)
    if data is None and link.devices():
        data = _load(cfg, dtype, progress)
    infos = link.gather(data.info() if link.owns(0) else None)
    info = link.agree(next(i for i in infos if i is not None) if infos else None)
    model_cfg = cfg.model
    if model_cfg.task == "mlm":
        if model_cfg.vocab_size and model_cfg.vocab_size < info["vocab_size"]:
            raise ConfigError(
                f"model.vocab_size: {model_cfg.vocab_size} < the corpus's {info['vocab_size']} tokens (0: automatic)"
            )
        model_cfg = dataclasses.replace(
            model_cfg, vocab_size=model_cfg.vocab_size or info["vocab_size"]
        )
    return data or MaskSource(cfg, model_cfg, info["val_batches"]), model_cfg, info


def label_bits(cfg: Any, model_cfg: Any, dtype: torch.dtype) -> int:
    """Bits of the labels device 0 sends per iteration (``targets[mask]``).

    csi: ``B * round(ratio * P)`` patches of ``patch_slots * 2 * patch_subcarriers`` reals;
    mlm: ``B * round(ratio * T)`` int64 ids.
    """
    b, t = cfg.batch_size, model_cfg.seq_len
    if model_cfg.task == "mlm":
        return b * num_masked(t, cfg.mask_ratio) * 64
    patches = (t // cfg.mask_patch_slots) * (
        model_cfg.num_subcarriers // cfg.mask_patch_subcarriers
    )
    per_patch = cfg.mask_patch_slots * 2 * cfg.mask_patch_subcarriers
    return b * num_masked(patches, cfg.mask_ratio) * per_patch * dtype.itemsize * 8
