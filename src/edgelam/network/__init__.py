"""The wireless network: every transmitted tensor becomes bits, seconds and joules.

* :mod:`~edgelam.network.pathloss` -- 3GPP TR 38.901 UMa/UMi path loss, LOS probability,
  shadow fading.
* :mod:`~edgelam.network.link` -- noise, block fading, SNR, achievable rate, latency, energy.
* :mod:`~edgelam.network.topology` -- :class:`NetworkConfig`, the device drop
  (:class:`Network`) and per-round :class:`LinkState`.
* :mod:`~edgelam.network.payload` -- dtype-aware payload bits and simulated quantisation.
* :mod:`~edgelam.network.ledger` -- :class:`TransferLedger` of every transfer.
* :mod:`~edgelam.network.compute` -- device profiles, FLOP counting, compute latency/energy,
  memory feasibility.

Typical use in a training round::

    net = Network(NetworkConfig(num_devices=K, seed=seed))
    state = net.round(r)
    bits = tensor_bits(embeddings, quantization="fp16")
    ledger.record_cost(r, devices, "uplink", "embeddings", net.uplink_cost(bits, state, devices))
"""

from edgelam.network.compute import (
    DEVICE_PRESETS,
    DeviceMemoryError,
    DeviceProfile,
    activation_bytes,
    check_memory,
    compute_energy,
    compute_latency,
    count_flops,
    device_profile,
    fits_in_memory,
    memory_footprint,
    parameter_bytes,
)
from edgelam.network.ledger import Direction, Transfer, TransferLedger
from edgelam.network.link import (
    THERMAL_NOISE_DBM_PER_HZ,
    TransferCost,
    achievable_rate,
    db_to_linear,
    dbm_to_watt,
    linear_to_db,
    rayleigh_power_gain,
    rician_power_gain,
    snr_db,
    thermal_noise_dbm,
    transfer_cost,
    transmission_energy,
    transmission_latency,
    watt_to_dbm,
)
from edgelam.network.pathloss import (
    SHADOW_FADING_STD_DB,
    SPEED_OF_LIGHT,
    Scenario,
    breakpoint_distance,
    distance_3d,
    los_probability,
    pathloss_db,
    pathloss_los,
    pathloss_nlos,
    shadow_fading_std_db,
)
from edgelam.network.payload import (
    INT8_HEADER_BITS,
    QUANTIZATION_BITS,
    Quantization,
    dtype_bits,
    int8_scale_zero_point,
    quantize,
    tensor_bits,
    tensors_bits,
)
from edgelam.network.topology import LinkState, Network, NetworkConfig

__all__ = [
    # pathloss
    "SPEED_OF_LIGHT",
    "SHADOW_FADING_STD_DB",
    "Scenario",
    "distance_3d",
    "breakpoint_distance",
    "pathloss_los",
    "pathloss_nlos",
    "pathloss_db",
    "los_probability",
    "shadow_fading_std_db",
    # link
    "THERMAL_NOISE_DBM_PER_HZ",
    "TransferCost",
    "db_to_linear",
    "linear_to_db",
    "dbm_to_watt",
    "watt_to_dbm",
    "thermal_noise_dbm",
    "rayleigh_power_gain",
    "rician_power_gain",
    "snr_db",
    "achievable_rate",
    "transmission_latency",
    "transmission_energy",
    "transfer_cost",
    # topology
    "NetworkConfig",
    "LinkState",
    "Network",
    # payload
    "QUANTIZATION_BITS",
    "INT8_HEADER_BITS",
    "Quantization",
    "dtype_bits",
    "tensor_bits",
    "tensors_bits",
    "int8_scale_zero_point",
    "quantize",
    # ledger
    "Direction",
    "Transfer",
    "TransferLedger",
    # compute
    "DeviceProfile",
    "DeviceMemoryError",
    "DEVICE_PRESETS",
    "device_profile",
    "count_flops",
    "compute_latency",
    "compute_energy",
    "parameter_bytes",
    "activation_bytes",
    "memory_footprint",
    "fits_in_memory",
    "check_memory",
]
