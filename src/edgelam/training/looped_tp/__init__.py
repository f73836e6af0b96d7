"""Looped tensor parallelism: full-parameter training of a lightweight LAM across edge devices.

* :mod:`~edgelam.training.looped_tp.model`: the ALBERT-style looped LAM (single device);
* :mod:`~edgelam.training.looped_tp.costs`: :class:`Partition`, FLOPs, bits, memory, latency;
* :mod:`~edgelam.training.looped_tp.partition`: the ``optimal``/``equal``/``min_storage`` plans;
* :mod:`~edgelam.training.looped_tp.tp`: sharding and the tensor-parallel step;
* :mod:`~edgelam.training.looped_tp.runtime`: in-process and ``torch.distributed`` links;
* :mod:`~edgelam.training.looped_tp.data`: masked-CSI and masked-language-model batches;
* :mod:`~edgelam.training.looped_tp.train`: :class:`LoopedTPConfig` and :func:`train_looped_tp`;
* :mod:`~edgelam.training.looped_tp.run`: the ``torchrun`` entry point and :func:`launch`;
* :mod:`~edgelam.training.looped_tp.command`: ``edgelam train looped-tp``.

See ``docs/looped_tp.md``.
"""

from edgelam.lazy import lazy_exports

_EXPORTS = {
    "EdgeSystem": "costs",
    "InProcessTPLink": "runtime",
    "LoopedLAM": "model",
    "LoopedLAMConfig": "model",
    "LoopedPredictor": "predictor",
    "LoopedTP": "tp",
    "LoopedTPConfig": "train",
    "Partition": "costs",
    "Plan": "partition",
    "TPWorkload": "costs",
    "TorchDistTPLink": "runtime",
    "build_looped_lam": "model",
    "build_looped_predictor": "predictor",
    "iteration_latency": "costs",
    "launch": "run",
    "load_looped_predictor": "predictor",
    "plan": "partition",
    "shard": "tp",
    "train_looped_tp": "train",
    "unshard": "tp",
}

__all__, __getattr__ = lazy_exports(__name__, _EXPORTS)
