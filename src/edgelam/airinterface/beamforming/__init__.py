"""Multi-user MISO downlink beamforming: the problem, classical baselines, channels, pilots.

* :mod:`~edgelam.airinterface.beamforming.problem` -- weighted sum rate, SINR, power projection.
* :mod:`~edgelam.airinterface.beamforming.baselines` -- WMMSE, ZF, RZF (MMSE), MRT, and
  :func:`solve` by name.
* :mod:`~edgelam.airinterface.beamforming.channels` -- channel sets ``[batch, K, M]``: i.i.d.
  Rayleigh and 3GPP TR 38.901 (CDL-A..E, UMa, UMi via Sionna), ``.npy`` files.
* :mod:`~edgelam.airinterface.beamforming.pilots` -- uplink pilot training (TDD reciprocity):
  orthogonal DFT pilots, LS and LMMSE estimates.
* :mod:`~edgelam.airinterface.beamforming.command` -- ``edgelam beamform eval``.
* ``graph_lam`` -- the learned graph-LAM precoder (imported on its own, never from here).

Names resolve to their submodule on first use, so importing the package stays cheap (Sionna is
loaded only when a 38.901 channel set is drawn).

>>> import torch
>>> from edgelam.airinterface.beamforming import rayleigh_channels, solve, sum_rate
>>> H = rayleigh_channels(4, 2, 4, generator=torch.Generator().manual_seed(0))
>>> W = solve("wmmse", H, power=1.0, noise_power=0.1)
>>> bool((sum_rate(H, W, 0.1) >= sum_rate(H, solve("zf", H, 1.0, 0.1), 0.1) - 1e-4).all())
True
"""

from edgelam.lazy import lazy_exports

_EXPORTS = {
    # problem
    "check_channels": "problem",
    "project_power": "problem",
    "rayleigh_channels": "problem",
    "sinr": "problem",
    "sum_rate": "problem",
    "user_rates": "problem",
    # baselines
    "METHODS": "baselines",
    "WMMSEInfo": "baselines",
    "maximum_ratio_transmission": "baselines",
    "regularized_zero_forcing": "baselines",
    "solve": "baselines",
    "wmmse": "baselines",
    "zero_forcing": "baselines",
    # channels
    "BEAMFORMING_CHANNEL_MODELS": "channels",
    "ChannelFileError": "channels",
    "antenna_layout": "channels",
    "channel_set": "channels",
    "load_channels_npy": "channels",
    "save_channels_npy": "channels",
    "tr38901_channels": "channels",
    # pilots
    "channel_covariance": "pilots",
    "estimate_channels": "pilots",
    "estimation_nmse": "pilots",
    "lmmse_estimate": "pilots",
    "ls_estimate": "pilots",
    "pilot_matrix": "pilots",
    "pilot_noise_power": "pilots",
    "transmit_pilots": "pilots",
}

__all__, __getattr__ = lazy_exports(__name__, _EXPORTS)
