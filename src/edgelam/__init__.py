"""edgelam: edge large AI models over simulated 6G radio links."""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("edgelam")
except _metadata.PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
