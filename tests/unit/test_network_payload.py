"""Payload bits, simulated quantisation and the transfer ledger."""

import json
import math

import pytest
import torch

from edgelam.network import (
    INT8_HEADER_BITS,
    TransferLedger,
    int8_scale_zero_point,
    quantize,
    tensor_bits,
    tensors_bits,
    transfer_cost,
)


@pytest.mark.parametrize(
    ("dtype", "bits"),
    [
        (torch.float64, 64),
        (torch.float32, 32),
        (torch.float16, 16),
        (torch.bfloat16, 16),
        (torch.int8, 8),
        (torch.uint8, 8),
        (torch.int64, 64),
        (torch.bool, 8),
        (torch.complex64, 64),
        (torch.complex128, 128),
    ],
)
def test_bits_per_dtype(dtype, bits):
    t = torch.zeros(3, 5, dtype=dtype)
    assert tensor_bits(t) == 15 * bits
    assert tensor_bits((3, 5), dtype=dtype) == 15 * bits
    assert tensor_bits(torch.Size([3, 5]), dtype=dtype) == 15 * bits


def test_bits_per_quantization():
    x = torch.zeros(7, 11, dtype=torch.float64)
    assert tensor_bits(x, quantization="fp32") == 77 * 32
    assert tensor_bits(x, quantization="fp16") == 77 * 16
    assert tensor_bits(x, quantization="bf16") == 77 * 16
    assert INT8_HEADER_BITS == 64  # fp32 scale + 32-bit zero-point
    assert tensor_bits(x, quantization="int8") == 77 * 8 + 32 + 32
    assert tensor_bits(x, dtype=torch.float16) == 77 * 16  # dtype override
    assert tensor_bits(torch.zeros(0, 4), quantization="int8") == 0
    with pytest.raises(ValueError, match="quantization"):
        tensor_bits(x, quantization="int4")
    with pytest.raises(ValueError, match="dtype"):
        tensor_bits((2, 2))


def test_tensors_bits_sums_with_header_per_tensor():
    sd = {"a": torch.zeros(10), "b": torch.zeros(2, 3, dtype=torch.float16)}
    assert tensors_bits(sd) == 10 * 32 + 6 * 16
    assert tensors_bits(sd.values(), quantization="int8") == (10 * 8 + 64) + (6 * 8 + 64)


def test_float_round_trips_match_casts():
    x = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(quantize(x, "fp16"), x.half().float())
    assert torch.equal(quantize(x, "bf16"), x.bfloat16().float())
    assert torch.equal(quantize(x, "fp32"), x)
    x64 = x.double() / 3
    q = quantize(x64, "fp32")
    assert q.dtype == torch.float64 and torch.equal(q, x64.float().double())
    assert not torch.equal(q, x64)
    err16 = (quantize(x, "fp16") - x).abs().max()
    errbf = (quantize(x, "bf16") - x).abs().max()
    assert 0 < err16 < errbf  # bf16 has fewer mantissa bits


@pytest.mark.parametrize("mode", ["symmetric", "affine"])
def test_int8_error_bounded_by_half_scale(mode):
    x = torch.randn(4096, generator=torch.Generator().manual_seed(1)) * 3 + 0.5
    scale, zero = int8_scale_zero_point(x, mode)
    q = quantize(x, "int8", mode=mode)
    assert q.dtype == x.dtype and q.shape == x.shape
    err = float((q - x).abs().max())
    assert 0 < err <= scale / 2 * (1 + 1e-5) + 1e-7
    assert len(torch.unique(q)) <= 256
    codes = torch.round(q.double() / scale) + zero
    assert float(codes.min()) >= -128 and float(codes.max()) <= 127


def test_int8_parameters_by_hand():
    x = torch.tensor([-2.0, 0.5, 1.0])
    assert int8_scale_zero_point(x, "symmetric") == (pytest.approx(2.0 / 127), 0)
    scale, zero = int8_scale_zero_point(x, "affine")
    assert scale == pytest.approx(3.0 / 255)
    assert zero == -128 - round(-2.0 / (3.0 / 255))  # = 42
    pos = torch.linspace(0.0, 1.0, 101)
    assert float(quantize(pos, "int8", mode="affine")[0]) == 0.0  # zero is exact
    aff = (quantize(pos, "int8", mode="affine") - pos).abs().max()
    sym = (quantize(pos, "int8", mode="symmetric") - pos).abs().max()
    assert aff < sym  # affine uses all 256 codes on one-signed data
    assert torch.equal(quantize(torch.zeros(5), "int8"), torch.zeros(5))


def test_quantize_gradient_modes_and_errors():
    x = torch.randn(6, generator=torch.Generator().manual_seed(2), requires_grad=True)
    y = quantize(x, "int8")
    assert torch.equal(y.detach(), quantize(x.detach(), "int8"))
    (y * torch.arange(6.0)).sum().backward()
    assert torch.equal(x.grad, torch.arange(6.0))  # straight-through
    assert not quantize(x, "int8", straight_through=False).requires_grad
    with pytest.raises(ValueError):
        quantize(torch.arange(4), "int8")
    with pytest.raises(ValueError, match="mode"):
        quantize(x, "int8", mode="log")


def _filled_ledger() -> TransferLedger:
    ledger = TransferLedger()
    gen = torch.Generator().manual_seed(3)
    for r in range(3):
        for d in range(4):
            s, j = torch.rand(2, generator=gen, dtype=torch.float64).tolist()
            ledger.record(r, d, "uplink", "embeddings", 1000 * (d + 1), s, j)
        ledger.record(r, None, "downlink", "model", 5000, 0.1 * (r + 1), 2.0)
    return ledger


def test_ledger_conservation():
    ledger = _filled_ledger()
    assert len(ledger) == 15
    total = ledger.total()
    assert total["count"] == 15
    assert total["bits"] == 3 * (1000 + 2000 + 3000 + 4000) + 3 * 5000
    assert total["seconds"] == pytest.approx(sum(r.seconds for r in ledger.records))
    assert total["joules"] == pytest.approx(sum(r.joules for r in ledger.records))
    for key in ("direction", "device", "round", "what"):
        groups = ledger.totals_by(key)
        for q in ("count", "bits", "seconds", "joules"):
            assert sum(g[q] for g in groups.values()) == pytest.approx(total[q])
    by_dir = ledger.totals_by("direction")
    assert by_dir["downlink"]["bits"] == 15000 and by_dir["downlink"]["joules"] == 6.0
    assert ledger.totals_by("device")[None]["count"] == 3
    r1 = ledger.total(round=1, direction="uplink")
    assert r1["max_seconds"] == max(r.seconds for r in ledger.select(round=1, direction="uplink"))


def test_ledger_summary_and_export():
    ledger = _filled_ledger()
    summary = ledger.summary(round=2)
    assert summary["uplink_bits"] == 10000 and summary["downlink_bits"] == 5000
    assert summary["total_bits"] == 15000
    assert summary["downlink_seconds"] == pytest.approx(0.3)
    rows = ledger.as_dicts()
    assert json.loads(json.dumps(rows)) == rows
    assert set(rows[0]) == {"round", "device", "direction", "what", "bits", "seconds", "joules"}
    assert math.fsum(r["bits"] for r in rows) == ledger.total()["bits"]


def test_ledger_record_cost_and_validation():
    ledger = TransferLedger()
    cost = transfer_cost(torch.tensor([8e3, 4e3]), torch.tensor([1e3, 2e3]), 0.5)
    recs = ledger.record_cost(0, [2, 5], "uplink", "grads", cost)
    assert [(r.device, r.bits, r.seconds, r.joules) for r in recs] == [
        (2, 8000, 8.0, 4.0),
        (5, 4000, 2.0, 1.0),
    ]
    bc = ledger.record_cost(0, None, "downlink", "lora", transfer_cost(1e3, 1e3, 20.0))
    assert bc[0].device is None and bc[0].joules == 20.0
    with pytest.raises(ValueError, match="devices"):
        ledger.record_cost(0, [1], "uplink", "grads", cost)
    with pytest.raises(ValueError, match="direction"):
        ledger.record(0, 0, "sidelink", "x", 1, 0.0, 0.0)
    with pytest.raises(ValueError, match="bits"):
        ledger.record(0, 0, "uplink", "x", -1, 0.0, 0.0)
    with pytest.raises(ValueError, match="field"):
        ledger.select(rnd=0)
    assert len(ledger) == 3
