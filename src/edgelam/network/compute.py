"""Device compute model: FLOP counts, compute latency/energy and memory feasibility.

A device is summarised by a :class:`DeviceProfile`: peak throughput :math:`F_{peak}` (FLOP/s),
the fraction :math:`\\eta` of it a model actually sustains, its memory and its power draw while
computing. Running a workload of :math:`W` FLOPs then takes

.. math:: t = \\frac{W}{\\eta F_{peak}}, \\qquad E = P_{comp}\\, t.

FLOPs are counted with :class:`torch.utils.flop_counter.FlopCounterMode` (matrix multiplies,
convolutions and attention, the ops that dominate transformer cost; a multiply-add counts as
2 FLOPs).

>>> count_flops(torch.nn.Linear(16, 8), torch.zeros(4, 16))  # 2 * 4 * 16 * 8
1024
>>> compute_latency(1e12, DEVICE_PRESETS["smartphone"])  # 1e12 / (2e12 * 0.3)
1.6666666666666667
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from edgelam.config import ConfigError, option

__all__ = [
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

GIB = 2**30


class DeviceMemoryError(ConfigError):
    """A model (part) does not fit in the memory of the device chosen for it."""


@dataclass(frozen=True)
class DeviceProfile:
    """Compute capability of one device (every field documented)."""

    name: str = option("device", "name of the device class")
    peak_flops: float = option(1e12, "peak throughput at the model's precision (FLOP/s)")
    efficiency: float = option(0.3, "sustained fraction of peak, in (0, 1]")
    memory_bytes: int = option(8 * GIB, "memory available to the model (bytes)")
    compute_power_w: float = option(5.0, "power drawn while computing (W)")

    def __post_init__(self) -> None:
        if not self.peak_flops > 0:
            raise ConfigError(f"peak_flops: must be > 0, got {self.peak_flops}")
        if not 0 < self.efficiency <= 1:
            raise ConfigError(f"efficiency: must be in (0, 1], got {self.efficiency}")
        if not self.memory_bytes > 0:
            raise ConfigError(f"memory_bytes: must be > 0, got {self.memory_bytes}")
        if not self.compute_power_w >= 0:
            raise ConfigError(f"compute_power_w: must be >= 0, got {self.compute_power_w}")

    @property
    def sustained_flops(self) -> float:
        """Sustained throughput :math:`\\eta F_{peak}` (FLOP/s)."""
        return self.peak_flops * self.efficiency


DEVICE_PRESETS: Mapping[str, DeviceProfile] = {
    # Flagship 2023 phone SoC: GPU/NPU dense fp16 matmul in the low TFLOP/s range (assumed
    # 2 TFLOP/s), 8 GiB RAM, ~5 W sustained SoC power before thermal throttling; 30 % of peak
    # is an assumption for small-batch transformer layers. Order-of-magnitude, not a datasheet.
    "smartphone": DeviceProfile("smartphone", 2.0e12, 0.3, 8 * GIB, 5.0),
    # NVIDIA Jetson AGX Orin 64GB: NVIDIA quotes 170 sparse INT8 TOPS for the GPU, i.e. 85
    # dense INT8 and ~42.5 dense fp16 TFLOP/s (our derivation); 64 GiB unified memory; 60 W
    # is the module's maximum power mode (15-60 W configurable). 30 % of peak is assumed.
    "jetson-agx-orin": DeviceProfile("jetson-agx-orin", 42.5e12, 0.3, 64 * GIB, 60.0),
    # NVIDIA A100 40GB SXM4 edge server GPU: 312 dense fp16/bf16 tensor-core TFLOP/s,
    # 40 GiB HBM2, 400 W TDP (datasheet). 40 % of peak is a typical large-model utilisation.
    "edge-server-a100": DeviceProfile("edge-server-a100", 312e12, 0.4, 40 * GIB, 400.0),
}
"""Documented device classes (see the comments in the source for sources and assumptions)."""


def device_profile(name: str) -> DeviceProfile:
    """The preset :class:`DeviceProfile` called ``name``.

    Raises:
        ConfigError: unknown name (the message lists the presets).
    """
    if name not in DEVICE_PRESETS:
        raise ConfigError(f"device: {name!r} is not one of {list(DEVICE_PRESETS)}")
    return DEVICE_PRESETS[name]


def _floating_tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj] if obj.is_floating_point() or obj.is_complex() else []
    if isinstance(obj, Mapping):
        obj = list(obj.values())
    if isinstance(obj, list | tuple):
        return [t for item in obj for t in _floating_tensors(item)]
    return []


def count_flops(module: nn.Module, *inputs: Any, backward: bool = False, **kwargs: Any) -> int:
    """FLOPs of one forward (and optionally backward) pass of ``module`` on ``inputs``.

    The backward pass differentiates the sum of all floating outputs with respect to every
    parameter and input that requires grad (as ``loss.backward()`` would); existing ``.grad``
    fields are left as they were. For one linear layer on an input that does not require grad the backward
    adds the weight gradient only (:math:`2BIO`), so forward+backward is :math:`4BIO`.

    Args:
        module: The model (part) to run.
        *inputs: Positional inputs of ``module``.
        backward: Also count the backward pass.
        **kwargs: Keyword inputs of ``module``.

    Returns:
        Total FLOPs.

    Raises:
        ValueError: ``backward`` is requested but nothing requires grad.
    """
    if not backward:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            module(*inputs, **kwargs)
        return int(counter.get_total_flops())
    wrt = [p for p in module.parameters() if p.requires_grad]
    wrt += [t for t in _floating_tensors(list(inputs)) if t.requires_grad]
    if not wrt:
        raise ValueError("count_flops(backward=True): no parameter or input requires grad")
    with torch.enable_grad(), FlopCounterMode(display=False) as counter:
        outputs = [t for t in _floating_tensors(module(*inputs, **kwargs)) if t.requires_grad]
        if not outputs:
            raise ValueError("count_flops(backward=True): no output depends on a trainable tensor")
        loss = sum(t.real.sum() if t.is_complex() else t.sum() for t in outputs)
        saved = [t.grad for t in wrt]
        try:
            # .backward, not autograd.grad: FlopCounterMode's module hooks reject leaf inputs
            # under autograd.grad. The caller's .grad fields are restored afterwards.
            for t in wrt:
                t.grad = None
            loss.backward(inputs=wrt)
        finally:
            for t, g in zip(wrt, saved, strict=True):
                t.grad = g
    return int(counter.get_total_flops())


def compute_latency(flops: float | torch.Tensor, profile: DeviceProfile) -> float | torch.Tensor:
    """Compute time :math:`W / (\\eta F_{peak})` in seconds.

    Args:
        flops: Workload(s) in FLOPs.
        profile: The device.

    Returns:
        Seconds, like ``flops``.
    """
    return flops / profile.sustained_flops


def compute_energy(flops: float | torch.Tensor, profile: DeviceProfile) -> float | torch.Tensor:
    """Compute energy :math:`P_{comp} W / (\\eta F_{peak})` in joules.

    >>> compute_energy(2.4e12, DEVICE_PRESETS["smartphone"])  # 4 s at 5 W
    20.0
    """
    return profile.compute_power_w * compute_latency(flops, profile)


def parameter_bytes(module: nn.Module, trainable_only: bool = False) -> int:
    """Bytes of a module's parameters and buffers (or only its trainable parameters).

    >>> parameter_bytes(torch.nn.Linear(10, 10))  # (100 + 10) * 4
    440
    """
    params = [p for p in module.parameters() if p.requires_grad or not trainable_only]
    tensors = params if trainable_only else params + list(module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def activation_bytes(module: nn.Module, *inputs: Any, **kwargs: Any) -> int:
    """Bytes of the tensors one training forward pass saves for backward (parameters excluded).

    Measured with :func:`torch.autograd.graph.saved_tensors_hooks`; distinct storages are
    counted once, by their full storage size.

    Args:
        module: The model (part).
        *inputs: Positional inputs.
        **kwargs: Keyword inputs.

    Returns:
        Activation memory in bytes held between forward and backward.
    """
    param_ptrs = {p.untyped_storage().data_ptr() for p in module.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in param_ptrs:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(*inputs, **kwargs)
    return sum(seen.values())


def _peak_leaf_output_bytes(module: nn.Module, *inputs: Any, **kwargs: Any) -> int:
    peak = [0]

    def hook(_mod: nn.Module, _inp: Any, out: Any) -> None:
        size = sum(t.numel() * t.element_size() for t in _floating_tensors(out))
        peak[0] = max(peak[0], size)

    leaves = [m for m in module.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            module(*inputs, **kwargs)
    finally:
        for h in handles:
            h.remove()
    return peak[0]


def memory_footprint(
    module: nn.Module,
    *inputs: Any,
    training: bool = False,
    optimizer_states: int = 0,
    **kwargs: Any,
) -> int:
    """Estimated device memory (bytes) to run ``module`` on ``inputs``.

    * inference: parameters + buffers + inputs + the largest single leaf-module output
      (activations are freed layer by layer, so only about one is live at a time);
    * training: parameters + buffers + one gradient per trainable parameter +
      ``optimizer_states`` extra copies of the trainable parameters (2 for Adam) + the
      activations saved for backward (:func:`activation_bytes`, which include the inputs).

    Framework workspace and allocator fragmentation are not modelled.

    Args:
        module: The model (part).
        *inputs: Positional inputs.
        training: Estimate for a training step instead of inference.
        optimizer_states: Optimiser state tensors per trainable parameter.
        **kwargs: Keyword inputs.

    Returns:
        Bytes.
    """
    total = parameter_bytes(module)
    if training:
        trainable = parameter_bytes(module, trainable_only=True)
        return (
            total + (1 + optimizer_states) * trainable + activation_bytes(module, *inputs, **kwargs)
        )
    input_bytes = sum(t.numel() * t.element_size() for t in _floating_tensors(list(inputs)))
    return total + input_bytes + _peak_leaf_output_bytes(module, *inputs, **kwargs)


def fits_in_memory(bytes_needed: int, profile: DeviceProfile) -> bool:
    """Whether ``bytes_needed`` fits in ``profile.memory_bytes``.

    >>> fits_in_memory(9 * GIB, DEVICE_PRESETS["smartphone"])
    False
    """
    return bytes_needed <= profile.memory_bytes


def check_memory(bytes_needed: int, profile: DeviceProfile) -> None:
    """Raise unless ``bytes_needed`` fits on the device.

    Raises:
        DeviceMemoryError: the footprint exceeds ``profile.memory_bytes`` (message gives both).
    """
    if not fits_in_memory(bytes_needed, profile):
        raise DeviceMemoryError(
            f"device {profile.name!r}: needs {bytes_needed / GIB:.3f} GiB but has "
            f"{profile.memory_bytes / GIB:.3f} GiB (memory_bytes={profile.memory_bytes})"
        )
