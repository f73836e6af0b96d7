"""Payload accounting: how many bits a tensor occupies on the air, and simulated quantisation.

A tensor sent as-is costs ``numel * bits(dtype)``, where ``bits(dtype)`` is the dtype's storage
width (``torch.dtype.itemsize * 8``: fp64 64, fp32 32, fp16/bf16 16, int8/uint8/bool 8,
complex64 64, complex128 128, int64 64, ...). A tensor sent under a quantisation scheme costs

* ``"fp32"``: 32 bits per element,
* ``"fp16"`` / ``"bf16"``: 16 bits per element,
* ``"int8"``: 8 bits per element **plus a 64-bit per-tensor header**
  (:data:`INT8_HEADER_BITS`): one fp32 scale and one 32-bit zero-point, always both, so the
  count does not depend on whether the symmetric or the affine variant is used. An empty
  tensor (``numel == 0``) costs 0 bits under every scheme (nothing is sent).

:func:`quantize` applies the same schemes to a tensor's *values* and returns the dequantised
tensor, so training code can feel the quantisation error while keeping its dtype.

>>> tensor_bits(torch.zeros(4, 8))  # fp32
1024
>>> tensor_bits((4, 8), quantization="int8")  # 32 * 8 + 64
320
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Literal

import torch

__all__ = [
    "QUANTIZATION_BITS",
    "INT8_HEADER_BITS",
    "Quantization",
    "dtype_bits",
    "tensor_bits",
    "tensors_bits",
    "int8_scale_zero_point",
    "quantize",
]

Quantization = Literal["fp32", "fp16", "bf16", "int8"]

QUANTIZATION_BITS: dict[str, int] = {"fp32": 32, "fp16": 16, "bf16": 16, "int8": 8}
"""Bits per element of each quantisation scheme (header excluded)."""

INT8_HEADER_BITS = 64
"""Per-tensor side information of ``"int8"``: fp32 scale (32 bits) + 32-bit zero-point."""

_FLOAT_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def dtype_bits(dtype: torch.dtype) -> int:
    """Storage width of one element of ``dtype`` in bits.

    Args:
        dtype: A torch dtype.

    Returns:
        ``dtype.itemsize * 8``.

    >>> dtype_bits(torch.bfloat16), dtype_bits(torch.complex64)
    (16, 64)
    """
    return int(dtype.itemsize) * 8


def _check_scheme(quantization: str) -> None:
    if quantization not in QUANTIZATION_BITS:
        raise ValueError(f"quantization: {quantization!r} is not one of {list(QUANTIZATION_BITS)}")


def tensor_bits(
    tensor_or_shape: torch.Tensor | torch.Size | tuple[int, ...],
    dtype: torch.dtype | None = None,
    quantization: Quantization | None = None,
) -> int:
    """Bits needed to send one tensor (see the module docstring for the exact rules).

    Args:
        tensor_or_shape: The tensor, or just its shape.
        dtype: Count as if the tensor had this dtype (default: the tensor's own dtype; required
            for a bare shape unless ``quantization`` is given).
        quantization: Count under this scheme instead; overrides ``dtype``.

    Returns:
        The payload size in bits.

    Raises:
        ValueError: unknown ``quantization``, or a shape with neither ``dtype`` nor
            ``quantization``.

    >>> tensor_bits(torch.zeros(3, dtype=torch.int8)), tensor_bits((3,), dtype=torch.float64)
    (24, 192)
    """
    if isinstance(tensor_or_shape, torch.Tensor):
        numel = tensor_or_shape.numel()
        dtype = dtype or tensor_or_shape.dtype
    else:
        numel = math.prod(int(n) for n in tensor_or_shape)
    if numel == 0:
        return 0
    if quantization is not None:
        _check_scheme(quantization)
        header = INT8_HEADER_BITS if quantization == "int8" else 0
        return numel * QUANTIZATION_BITS[quantization] + header
    if dtype is None:
        raise ValueError("tensor_bits: give a dtype or a quantization for a bare shape")
    return numel * dtype_bits(dtype)


def tensors_bits(
    tensors: Mapping[str, torch.Tensor] | Iterable[torch.Tensor],
    dtype: torch.dtype | None = None,
    quantization: Quantization | None = None,
) -> int:
    """Total bits of several tensors (e.g. a LoRA state dict), each counted by :func:`tensor_bits`.

    Args:
        tensors: A mapping of name to tensor, or an iterable of tensors.
        dtype: As in :func:`tensor_bits`.
        quantization: As in :func:`tensor_bits`; an int8 header is paid per tensor.

    Returns:
        The sum of the per-tensor payloads in bits.

    >>> tensors_bits({"a": torch.zeros(2), "b": torch.zeros(3)}, quantization="int8")
    168
    """
    values = tensors.values() if isinstance(tensors, Mapping) else tensors
    return sum(tensor_bits(t, dtype, quantization) for t in values)


def int8_scale_zero_point(
    tensor: torch.Tensor, mode: Literal["symmetric", "affine"] = "symmetric"
) -> tuple[float, int]:
    """Per-tensor int8 quantisation parameters.

    * symmetric: :math:`s = \\max|x| / 127`, zero-point 0, codes in :math:`[-127, 127]`.
    * affine: :math:`s = (\\max(x_{max}, 0) - \\min(x_{min}, 0)) / 255`,
      :math:`z = -128 - \\mathrm{round}(\\min(x_{min}, 0) / s)`, codes in :math:`[-128, 127]`
      (the range is widened to contain 0, so zero is represented exactly).

    An all-zero tensor gets :math:`s = 1`.

    Args:
        tensor: A floating-point tensor (any shape).
        mode: ``"symmetric"`` or ``"affine"``.

    Returns:
        ``(scale, zero_point)``.

    Raises:
        ValueError: unknown ``mode``, or a non-floating or empty tensor.
    """
    if not tensor.is_floating_point():
        raise ValueError(f"int8 quantisation needs a floating tensor, got {tensor.dtype}")
    if tensor.numel() == 0:
        raise ValueError("int8 quantisation of an empty tensor")
    x = tensor.detach().double()
    if mode == "symmetric":
        scale = float(x.abs().max()) / 127.0
        return (scale if scale > 0 else 1.0), 0
    if mode == "affine":
        lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
        scale = (hi - lo) / 255.0
        if scale == 0:
            return 1.0, 0
        return scale, int(-128 - round(lo / scale))
    raise ValueError(f"mode: {mode!r} is not one of ['symmetric', 'affine']")


def quantize(
    tensor: torch.Tensor,
    scheme: Quantization,
    *,
    mode: Literal["symmetric", "affine"] = "symmetric",
    straight_through: bool = True,
) -> torch.Tensor:
    """Simulate sending ``tensor`` under ``scheme``: quantise, then dequantise.

    * ``"fp32"``, ``"fp16"``, ``"bf16"``: round-trip through that dtype.
    * ``"int8"``: per-tensor int8 with :func:`int8_scale_zero_point`;
      :math:`q = \\mathrm{clamp}(\\mathrm{round}(x/s) + z)`, :math:`\\hat x = (q - z) s`, so
      :math:`|\\hat x - x| \\le s/2` elementwise.

    Args:
        tensor: A floating-point tensor.
        scheme: ``"fp32"``, ``"fp16"``, ``"bf16"`` or ``"int8"``.
        mode: int8 variant, ``"symmetric"`` or ``"affine"``.
        straight_through: If true, gradients pass through unchanged (straight-through
            estimator: the forward value is quantised, the backward is the identity). If false,
            the result is detached from the graph.

    Returns:
        The dequantised tensor, same shape and dtype as ``tensor``.

    Raises:
        ValueError: unknown scheme or mode, or a non-floating tensor.

    Shapes:
        Output shape equals input shape.

    >>> x = torch.tensor([0.1, -1.0, 0.5])
    >>> quantize(x, "bf16").dtype
    torch.float32
    >>> bool((quantize(x, "int8") - x).abs().max() <= (1.0 / 127) / 2)
    True
    """
    _check_scheme(scheme)
    if not tensor.is_floating_point():
        raise ValueError(f"quantize needs a floating tensor, got {tensor.dtype}")
    with torch.no_grad():
        x = tensor.detach()
        if scheme in _FLOAT_DTYPES:
            out = x.to(_FLOAT_DTYPES[scheme]).to(tensor.dtype)
        elif x.numel() == 0:
            out = x.clone()
        else:
            scale, zero = int8_scale_zero_point(x, mode)
            lo, hi = (-127, 127) if mode == "symmetric" else (-128, 127)
            q = torch.clamp(torch.round(x.double() / scale) + zero, lo, hi)
            out = ((q - zero) * scale).to(tensor.dtype)
    if straight_through and tensor.requires_grad:
        return out + (tensor - tensor.detach())  # value == out exactly, gradient == identity
    return out
