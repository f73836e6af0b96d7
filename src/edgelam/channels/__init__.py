"""3GPP TR 38.901 CSI sequences: generation (Sionna), HDF5 datasets, loading and partitioning.

Submodules are imported on first use, so that ``edgelam.channels.config`` (and the CLI) load
without importing Sionna.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "CHANNEL_MODELS": "config",
    "ChannelConfig": "config",
    "model_family": "config",
    "ChannelGenerator": "generate",
    "CSIBatch": "generate",
    "CSIFile": "store",
    "CSIFileError": "store",
    "CSIWriter": "store",
    "generate_dataset": "store",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f"edgelam.channels.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'edgelam.channels' has no attribute {name!r}")
