"""Single-device channel-prediction models and the functions that choose what trains.

Nothing here knows about distribution or federated learning: these are plain ``nn.Module`` s.
:func:`build_predictor` builds any predictor by name from a config (dataclass or dict).

Submodules load on first use: ``transformers`` and ``peft`` take seconds to import.
"""

from edgelam.lazy import lazy_exports

_EXPORTS = {
    "PREDICTORS": "registry",
    "BackboneConfig": "backbones",
    "BackboneInfo": "backbones",
    "GRUPredictor": "recurrent",
    "LLM4CPConfig": "llm4cp",
    "LLM4CPPredictor": "llm4cp",
    "LSTMPredictor": "recurrent",
    "PretrainedWeightsUnavailable": "backbones",
    "RNNPredictor": "recurrent",
    "RecurrentConfig": "recurrent",
    "TransformerConfig": "recurrent",
    "TransformerPredictor": "recurrent",
    "apply_full_tuning": "adapters",
    "apply_ln_pe_tuning": "adapters",
    "apply_lora": "adapters",
    "build_gpt2_backbone": "backbones",
    "build_llm4cp": "adapters",
    "build_predictor": "registry",
    "count_parameters": "adapters",
    "freeze_backbone": "adapters",
    "load_trainable_state": "adapters",
    "predictor_config": "registry",
    "trainable_state": "adapters",
}

__all__, __getattr__ = lazy_exports(__name__, _EXPORTS)
