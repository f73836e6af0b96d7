r"""Channel sets for beamforming: i.i.d. Rayleigh and 3GPP TR 38.901 (CDL, UMa, UMi), and files.

A beamforming channel set is a complex tensor ``H`` ``[batch, K, M]``: ``batch`` independent
instances, each with ``K`` single-antenna users seen by ``M`` base-station antenna ports.

38.901 sets (:func:`tr38901_channels`) come from :class:`edgelam.channels.ChannelGenerator`
(Sionna): each user of each instance is an independent 38.901 sample (its own drop, clusters
and rays), observed at the first slot; the uplink channel it returns is, by TDD reciprocity,
row ``k`` of the downlink ``H``. The BS array for ``M`` ports is chosen by
:func:`antenna_layout` (dual-polarised UPAs where ``M`` is even).

Normalisation: 38.901 UMa/UMi sets are generated without path loss and shadow fading (CDL has
none), and by default (``normalization="set"``) the whole set is scaled by one constant so that
its mean gain per user and port, over the set and the generated band, is 1 (hence
:math:`E\|h_k\|^2 \approx M` for every user), and ``snr_db = 10 log10(P / sigma^2)`` is the
average per-antenna receive SNR of a single-antenna transmission. Small-scale fading,
spatial correlation and the gain of the 38.901 antenna pattern towards each user are kept.
``normalization="user"`` instead divides each user by its own RMS gain over the ports and the
``subcarriers`` generated (which also removes the antenna-pattern gain and, where the band is
narrower than the coherence bandwidth, most of the fading of ``||h_k||``). With
``keep_pathloss=True`` nothing is scaled and UMa/UMi include 38.901 path loss and shadow fading
(gains around 1e-12: pick the noise power to match).

CDL caveat: a CDL profile fixes the cluster angles, so all users of a CDL set share one spatial
covariance (only ray phases differ); multi-user separation is harder than in UMa/UMi, where
every user has its own drop, angles and large-scale parameters.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from edgelam.airinterface.beamforming.problem import rayleigh_channels
from edgelam.channels.store import CSIFileError
from edgelam.config import ConfigError

__all__ = [
    "BEAMFORMING_CHANNEL_MODELS",
    "ChannelFileError",
    "antenna_layout",
    "channel_set",
    "load_channels_npy",
    "save_channels_npy",
    "tr38901_channels",
]

BEAMFORMING_CHANNEL_MODELS: tuple[str, ...] = (
    "rayleigh", "cdl-a", "cdl-b", "cdl-c", "cdl-d", "cdl-e", "uma", "umi",
)  # fmt: skip
"""Models of :func:`channel_set`. (38.901 TDL is left out: it has no array geometry.)"""

_CHUNK = 512  # samples per generator batch (part of the seed: fixed)


class ChannelFileError(CSIFileError):
    """A beamforming channel file is unreadable or not a finite complex ``[batch, K, M]`` array."""


def antenna_layout(antennas: int) -> tuple[int, int, str]:
    """BS array ``(rows, cols, polarization)`` with ``antennas`` ports.

    Even ``M``: a dual-polarised (cross) UPA of ``M / 2`` elements, as square as possible with
    no more rows than columns; odd ``M``: a single-polarised ``1 x M`` ULA.

    >>> antenna_layout(8), antenna_layout(16), antenna_layout(32), antenna_layout(3)
    ((2, 2, 'dual'), (2, 4, 'dual'), (4, 4, 'dual'), (1, 3, 'single'))
    """
    if antennas < 1:
        raise ConfigError(f"antennas: must be >= 1, got {antennas}")
    if antennas % 2:
        return 1, antennas, "single"
    elements = antennas // 2
    rows = max(r for r in range(1, math.isqrt(elements) + 1) if elements % r == 0)
    return rows, elements // rows, "dual"


def tr38901_channels(
    model: str,
    batch: int,
    users: int,
    antennas: int,
    *,
    seed: int = 0,
    keep_pathloss: bool = False,
    normalization: Literal["set", "user"] = "set",
    subcarriers: int = 16,
    dtype: torch.dtype = torch.complex64,
    **config,
) -> torch.Tensor:
    """A 38.901 channel set ``[batch, K, M]`` from Sionna (see the module docstring).

    Args:
        model: ``"cdl-a"`` .. ``"cdl-e"``, ``"uma"`` or ``"umi"``.
        batch: instances.
        users: users ``K`` per instance (independent 38.901 samples).
        antennas: BS ports ``M`` (array from :func:`antenna_layout`).
        seed: seed of every draw; the same arguments give the same tensor.
        keep_pathloss: keep raw gains (UMa/UMi with path loss and shadowing); no normalisation.
        normalization: ``"set"`` (one constant: mean gain per user and port 1) or ``"user"``
            (each user to its own unit RMS gain over ports and subcarriers).
        subcarriers: subcarriers generated around the carrier (the centre one is returned).
        dtype: ``torch.complex64`` or ``torch.complex128``.
        **config: further :class:`~edgelam.channels.ChannelConfig` fields (e.g.
            ``carrier_frequency_hz``, ``los="random"``, ``delay_spread_s``).

    Shapes:
        returns ``[batch, users, antennas]`` of ``dtype``.
    """
    from edgelam.channels.config import ChannelConfig, model_family
    from edgelam.channels.generate import ChannelGenerator

    if normalization not in ("set", "user"):
        raise ConfigError(f"normalization: {normalization!r} is not one of ['set', 'user']")
    if model not in BEAMFORMING_CHANNEL_MODELS or model == "rayleigh":
        allowed = [m for m in BEAMFORMING_CHANNEL_MODELS if m != "rayleigh"]
        raise ConfigError(f"model: {model!r} is not a 38.901 beamforming model {allowed}")
    for name, value in (("batch", batch), ("users", users), ("subcarriers", subcarriers)):
        if value < 1:
            raise ConfigError(f"{name}: must be >= 1, got {value}")
    rows, cols, polarization = antenna_layout(antennas)
    total = batch * users
    if keep_pathloss and model_family(model) == "system":
        config.setdefault("include_pathloss", True)
    cfg = ChannelConfig(
        model=model, seed=seed, num_samples=total, bs_rows=rows, bs_cols=cols,
        bs_polarization=polarization, num_subcarriers=subcarriers, history_slots=1,
        future_slots=1, batch_size=min(total, _CHUNK), **config,
    )  # fmt: skip
    generator = ChannelGenerator(cfg)
    parts = []
    for index, start in enumerate(range(0, total, cfg.batch_size)):
        csi = generator.batch(index, min(cfg.batch_size, total - start)).csi  # [n, T, F, M]
        parts.append(csi[:, 0])  # first slot: [n, F, M]
    csi = torch.from_numpy(np.concatenate(parts)).to(dtype)
    H = csi[:, subcarriers // 2]  # [total, M]
    if not keep_pathloss:
        dims = (1, 2) if normalization == "user" else (0, 1, 2)
        gain = csi.abs().square().mean(dim=dims).clamp_min(torch.finfo(csi.real.dtype).tiny)
        H = H / (gain.sqrt()[:, None] if normalization == "user" else gain.sqrt())
    return H.reshape(batch, users, antennas)


def channel_set(
    model: str,
    batch: int,
    users: int,
    antennas: int,
    *,
    seed: int = 0,
    keep_pathloss: bool = False,
    normalization: Literal["set", "user"] = "set",
    dtype: torch.dtype = torch.complex64,
) -> torch.Tensor:
    """Channels ``[batch, K, M]`` of a named model: ``"rayleigh"`` or a 38.901 model.

    ``"rayleigh"``: :func:`~edgelam.airinterface.beamforming.problem.rayleigh_channels` with a
    ``torch.Generator`` seeded by ``seed`` (unit gain per user and port by construction);
    others: :func:`tr38901_channels`.

    Raises:
        ConfigError: unknown model (the message lists the allowed ones).

    >>> channel_set("rayleigh", 2, 3, 4, seed=0).shape
    torch.Size([2, 3, 4])
    """
    if model not in BEAMFORMING_CHANNEL_MODELS:
        raise ConfigError(
            f"channel model: {model!r} is not one of {list(BEAMFORMING_CHANNEL_MODELS)}"
        )
    if model == "rayleigh":
        for name, value in (("batch", batch), ("users", users), ("antennas", antennas)):
            if value < 1:
                raise ConfigError(f"{name}: must be >= 1, got {value}")
        generator = torch.Generator().manual_seed(seed)
        return rayleigh_channels(batch, users, antennas, generator=generator, dtype=dtype)
    return tr38901_channels(
        model, batch, users, antennas, seed=seed, keep_pathloss=keep_pathloss,
        normalization=normalization, dtype=dtype,
    )  # fmt: skip


def save_channels_npy(path: str | Path, H: torch.Tensor | np.ndarray) -> Path:
    """Write a complex ``[batch, K, M]`` channel set to a ``.npy`` file (dtype kept).

    Shapes:
        H: ``[batch, K, M]`` complex64 or complex128.
    """
    array = H.detach().cpu().numpy() if torch.is_tensor(H) else np.asarray(H)
    _validate(array, Path(path), what="channels to save")
    path = Path(path)
    np.save(path, array, allow_pickle=False)
    return path


def load_channels_npy(path: str | Path, *, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Read a channel set written by :func:`save_channels_npy` (or any complex ``.npy``).

    Args:
        path: ``.npy`` file holding a finite complex64/complex128 array ``[batch, K, M]``.
        dtype: convert to this complex dtype (default: keep the file's).

    Shapes:
        returns ``[batch, K, M]`` complex.

    Raises:
        FileNotFoundError: no such file.
        ChannelFileError: not a NumPy file, or wrong dtype, number of dimensions, empty axis,
            or NaN/inf entries (the message names the file and the problem).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"channel file not found: {path}")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise ChannelFileError(f"{path}: not a readable .npy array ({err})") from None
    if not isinstance(array, np.ndarray):
        raise ChannelFileError(f"{path}: holds an archive, not one array; expected [batch, K, M]")
    _validate(array, path, what="file")
    H = torch.from_numpy(np.ascontiguousarray(array))
    return H if dtype is None else H.to(dtype)


def _validate(array: np.ndarray, path: Path, *, what: str) -> None:
    """Raise :class:`ChannelFileError` unless ``array`` is a finite complex ``[batch, K, M]``."""
    if array.dtype not in (np.complex64, np.complex128):
        raise ChannelFileError(
            f"{path}: {what} has dtype {array.dtype}; need complex64 or complex128 [batch, K, M]"
        )
    if array.ndim != 3:
        raise ChannelFileError(
            f"{path}: {what} has shape {array.shape} ({array.ndim} dimensions); need 3: "
            "[batch, K users, M antennas]"
        )
    if 0 in array.shape:
        raise ChannelFileError(f"{path}: {what} has an empty axis, shape {array.shape}")
    bad = ~np.isfinite(array)
    if bad.any():
        raise ChannelFileError(
            f"{path}: {what} has {int(bad.sum())} non-finite (NaN or inf) entries, first at "
            f"index {tuple(int(i) for i in np.argwhere(bad)[0])}"
        )
