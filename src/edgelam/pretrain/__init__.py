"""Pre-training a wireless foundation backbone for the LLM4CP-style channel predictor.

* :mod:`~edgelam.pretrain.corpus`: a seeded, cached mix of 38.901 configurations (with a
  held-out set never seen in pre-training) and the dataset over it;
* :mod:`~edgelam.pretrain.model`: the predictor plus a masked-reconstruction head;
* :mod:`~edgelam.pretrain.objectives`: next-slot prediction and masked patch reconstruction;
* :mod:`~edgelam.pretrain.train`: :class:`PretrainConfig` and the resumable :func:`pretrain`;
* :mod:`~edgelam.pretrain.evaluate`: validation / held-out NMSE;
* :mod:`~edgelam.models.pretrained` (re-exported here): ``backbone.safetensors`` +
  ``model_card.json`` export, verified loading and :func:`apply_pretrained`.

Submodules load on first use (``transformers`` and Sionna take seconds to import).
"""

from edgelam.lazy import lazy_exports

_EXPORTS = {
    "CheckpointError": "edgelam.models.pretrained",
    "CorpusConfig": "edgelam.pretrain.corpus",
    "PretrainConfig": "edgelam.pretrain.train",
    "PretrainDataset": "edgelam.pretrain.corpus",
    "PretrainModel": "edgelam.pretrain.model",
    "apply_pretrained": "edgelam.models.pretrained",
    "build_corpus": "edgelam.pretrain.corpus",
    "build_held_out": "edgelam.pretrain.corpus",
    "build_pretrain_model": "edgelam.pretrain.model",
    "corpus_configs": "edgelam.pretrain.corpus",
    "export_pretrained": "edgelam.models.pretrained",
    "held_out_configs": "edgelam.pretrain.corpus",
    "load_pretrained_backbone": "edgelam.models.pretrained",
    "pretrain": "edgelam.pretrain.train",
    "pretrain_profile": "edgelam.pretrain.train",
}

__all__, __getattr__ = lazy_exports(__name__, _EXPORTS)
