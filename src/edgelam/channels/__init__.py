"""3GPP TR 38.901 CSI sequences: generation (Sionna), HDF5 datasets, loading and partitioning.

Submodules are imported on first use, so that ``edgelam.channels.config`` (and the CLI) load
without importing Sionna.
"""

from edgelam.lazy import lazy_exports

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

__all__, __getattr__ = lazy_exports(__name__, _EXPORTS)
