"""3GPP TR 38.901 CSI sequences: generation (Sionna), HDF5 datasets, loading and partitioning."""

from edgelam.channels.config import CHANNEL_MODELS, ChannelConfig, model_family
from edgelam.channels.generate import ChannelGenerator, CSIBatch
from edgelam.channels.store import CSIFile, CSIFileError, CSIWriter, generate_dataset

__all__ = [
    "CHANNEL_MODELS",
    "ChannelConfig",
    "ChannelGenerator",
    "CSIBatch",
    "CSIFile",
    "CSIFileError",
    "CSIWriter",
    "generate_dataset",
    "model_family",
]
