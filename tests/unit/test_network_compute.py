"""Device compute model: FLOPs, latency/energy, memory feasibility."""

import pytest
import torch
from torch import nn

from edgelam.config import ConfigError
from edgelam.network import (
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

B, IN, OUT = 5, 12, 7


def test_linear_forward_flops():
    assert count_flops(nn.Linear(IN, OUT), torch.randn(B, IN)) == 2 * B * IN * OUT


def test_linear_backward_flops_and_no_grad_side_effect():
    lin = nn.Linear(IN, OUT)
    x = torch.randn(B, IN)
    # forward 2BIO + weight gradient 2BIO (input needs no gradient)
    assert count_flops(lin, x, backward=True) == 4 * B * IN * OUT
    # + input gradient 2BIO
    assert count_flops(lin, x.requires_grad_(), backward=True) == 6 * B * IN * OUT
    assert lin.weight.grad is None and x.grad is None
    lin.bias.grad = torch.ones(OUT)
    count_flops(lin, x, backward=True)
    assert torch.equal(lin.bias.grad, torch.ones(OUT)) and lin.weight.grad is None
    lin.requires_grad_(False)
    with pytest.raises(ValueError, match="requires grad"):
        count_flops(lin, torch.randn(B, IN), backward=True)


def test_mlp_flops_add_up():
    mlp = nn.Sequential(nn.Linear(IN, 32), nn.GELU(), nn.Linear(32, OUT))
    assert count_flops(mlp, torch.randn(B, IN)) == 2 * B * (IN * 32 + 32 * OUT)


def test_latency_and_energy_by_hand():
    p = DeviceProfile("toy", peak_flops=4e12, efficiency=0.5, memory_bytes=2**30, compute_power_w=8)
    assert compute_latency(6e12, p) == pytest.approx(6e12 / (4e12 * 0.5))  # 3 s
    assert compute_energy(6e12, p) == pytest.approx(8 * 3.0)
    t = compute_latency(torch.tensor([2e12, 4e12]), p)
    assert torch.allclose(t, torch.tensor([1.0, 2.0]))


def test_presets_are_ordered_by_capability():
    phone, jetson, server = (
        DEVICE_PRESETS[n] for n in ("smartphone", "jetson-agx-orin", "edge-server-a100")
    )
    assert phone.sustained_flops < jetson.sustained_flops < server.sustained_flops
    assert phone.compute_power_w < jetson.compute_power_w < server.compute_power_w
    assert device_profile("smartphone") is phone
    with pytest.raises(ConfigError, match="smartphone"):
        device_profile("toaster")


@pytest.mark.parametrize(
    ("field", "value"),
    [("efficiency", 1.5), ("efficiency", 0.0), ("peak_flops", -1.0), ("memory_bytes", 0)],
)
def test_invalid_profile_names_field(field, value):
    kwargs = {"name": "x", "peak_flops": 1e12, "efficiency": 0.5, "memory_bytes": 1}
    with pytest.raises(ConfigError, match=field):
        DeviceProfile(**{**kwargs, field: value})


def test_parameter_and_activation_bytes():
    lin = nn.Linear(10, 10)
    assert parameter_bytes(lin) == (100 + 10) * 4
    lin.weight.requires_grad_(False)
    assert parameter_bytes(lin, trainable_only=True) == 10 * 4
    x = torch.randn(4, 16)
    # Linear saves only its input for the weight gradient.
    assert activation_bytes(nn.Linear(16, 8), x) == 4 * 16 * 4
    mlp = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))
    # input of layer 1 + ReLU output (saved by ReLU and by layer 2: one storage)
    assert activation_bytes(mlp, x) == 4 * 16 * 4 + 4 * 32 * 4


def test_memory_footprint_by_hand():
    mlp = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))
    x = torch.randn(4, 16)
    params = (16 * 32 + 32 + 32 * 8 + 8) * 4
    # inference: params + input + largest leaf output (4 x 32 floats)
    assert memory_footprint(mlp, x) == params + 4 * 16 * 4 + 4 * 32 * 4
    # training with Adam: params + grads + 2 states + saved activations
    acts = 4 * 16 * 4 + 4 * 32 * 4
    assert memory_footprint(mlp, x, training=True, optimizer_states=2) == 4 * params + acts


def test_memory_check():
    p = DeviceProfile("tiny", 1e9, 1.0, memory_bytes=1000, compute_power_w=1.0)
    assert fits_in_memory(1000, p) and not fits_in_memory(1001, p)
    check_memory(1000, p)
    with pytest.raises(DeviceMemoryError, match="tiny"):
        check_memory(1001, p)
    assert issubclass(DeviceMemoryError, ConfigError)
