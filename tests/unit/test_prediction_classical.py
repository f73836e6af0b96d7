"""Classical CSI predictors: exactness on sums of exponentials, clamping, batching, errors."""

import math

import pytest
import torch

from edgelam.airinterface.prediction import (
    ARPredictor,
    NoPrediction,
    PronyVectorPredictor,
)

L_H, L_F = 16, 4


def to_real(h: torch.Tensor) -> torch.Tensor:
    """``[B, L, F]`` complex -> ``[B, L, 2F]`` interleaved real (dtype of h's parts)."""
    return torch.view_as_real(h.contiguous()).flatten(-2)


def exponentials(poles: torch.Tensor, amplitudes: torch.Tensor, length: int) -> torch.Tensor:
    """``h[b, t, f] = sum_k c[b, k, f] z[b, k, (f)]^t``; poles ``[B, K]`` (shared over
    subcarriers) or ``[B, K, F]`` (per subcarrier), amplitudes ``[B, K, F]``."""
    t = torch.arange(length, dtype=torch.float64)
    z = poles if poles.ndim == 3 else poles[..., None].expand_as(amplitudes)
    powers = z[:, :, None, :] ** t[None, None, :, None]  # [B, K, L, F]
    return (amplitudes[:, :, None, :] * powers).sum(1)


def random_case(b, k, f, *, per_subcarrier=False, seed=0, radius=(0.9, 1.0)):
    g = torch.Generator().manual_seed(seed)
    shape = (b, k, f) if per_subcarrier else (b, k)
    # Well separated Doppler frequencies (rad/slot): k distinct values per item.
    base = torch.linspace(-2.5, 2.5, k, dtype=torch.float64)
    angle = base.view(1, k, *([1] * (len(shape) - 2))) + 0.3 * torch.rand(shape, generator=g)
    mod = radius[0] + (radius[1] - radius[0]) * torch.rand(shape, generator=g, dtype=torch.float64)
    poles = torch.polar(mod, angle.to(torch.float64))
    amps = torch.complex(
        torch.randn(b, k, f, generator=g, dtype=torch.float64),
        torch.randn(b, k, f, generator=g, dtype=torch.float64),
    )
    h = exponentials(poles, amps, L_H + L_F)
    return poles, amps, to_real(h[:, :L_H]), to_real(h[:, L_H:])


def rel_error(pred, target):
    return (torch.linalg.vector_norm(pred - target) / torch.linalg.vector_norm(target)).item()


def test_no_prediction_repeats_last_slot_exactly():
    x = torch.randn(5, L_H, 12)
    out = NoPrediction(future_slots=3)(x)
    assert out.shape == (5, 3, 12) and out.dtype == x.dtype
    for j in range(3):
        assert torch.equal(out[:, j], x[:, -1])
    assert list(NoPrediction().parameters()) == []


@pytest.mark.parametrize("order", [3, 8])
def test_ar_per_subcarrier_predicts_exponentials_exactly(order):
    # Different poles on every subcarrier: only a per-subcarrier fit can be exact.
    _, _, hist, fut = random_case(6, 3, 5, per_subcarrier=True, seed=1)
    for ridge in (0.0, 1e-12):
        pred = ARPredictor(order=order, future_slots=L_F, ridge=ridge)(hist)
        assert pred.shape == fut.shape and pred.dtype == torch.float64
        assert rel_error(pred, fut) < 1e-6, (order, ridge)


def test_ar_shared_predicts_shared_exponentials_and_low_order_fails():
    _, _, hist, fut = random_case(6, 3, 10, seed=2)
    shared = ARPredictor(order=4, ridge=1e-12, shared_over_subcarriers=True)
    assert rel_error(shared(hist), fut) < 1e-6
    # With fewer lags than exponentials there is no exact recursion.
    assert rel_error(ARPredictor(order=2, ridge=0.0)(hist), fut) > 1e-2
    # One coefficient set cannot fit different poles per subcarrier.
    _, _, hist2, fut2 = random_case(6, 3, 10, per_subcarrier=True, seed=2)
    assert rel_error(shared(hist2), fut2) > 1e-2


def test_ar_coefficients_are_the_prediction_polynomial():
    f64 = torch.float64
    z1, z2 = torch.polar(torch.tensor([0.95, 1.0], dtype=f64), torch.tensor([0.3, -1.1], dtype=f64))
    amps = torch.randn(1, 2, 4, dtype=torch.complex128, generator=torch.Generator().manual_seed(0))
    h = exponentials(torch.stack([z1, z2])[None], amps, L_H)
    a = ARPredictor(order=2, ridge=0.0, shared_over_subcarriers=True).fit(to_real(h))
    # (1 - z1 q^-1)(1 - z2 q^-1): h[t] = (z1 + z2) h[t-1] - z1 z2 h[t-2]
    assert a.shape == (1, 1, 2)
    torch.testing.assert_close(a[0, 0], torch.stack([z1 + z2, -z1 * z2]), rtol=1e-9, atol=1e-9)


def test_ar_degrades_gracefully_with_noise():
    _, _, hist, fut = random_case(64, 2, 16, seed=3, radius=(1.0, 1.0))
    g = torch.Generator().manual_seed(4)
    noise = torch.randn(hist.shape, generator=g, dtype=torch.float64) * hist.std()
    baseline = rel_error(NoPrediction()(hist), fut) ** 2
    errors = []
    for snr_db in (40.0, 25.0, 15.0):
        noisy = hist + noise * 10 ** (-snr_db / 20)
        for pred in (ARPredictor()(noisy), ARPredictor(shared_over_subcarriers=True)(noisy)):
            assert torch.isfinite(pred).all()
        errors.append(rel_error(ARPredictor(ridge=1e-2, shared_over_subcarriers=True)(noisy), fut))
    assert errors[0] < errors[1] < errors[2]  # monotone in the noise level
    assert errors[0] < 0.05 and errors[2] ** 2 < baseline  # small noise, small error
    assert rel_error(ARPredictor()(hist + noise * 10 ** (-25 / 20)), fut) ** 2 < baseline


def test_prony_recovers_shared_poles_and_amplitudes():
    poles, amps, hist, fut = random_case(8, 3, 6, seed=5)
    model = PronyVectorPredictor(num_modes=3, ridge=0.0, future_slots=L_F)
    fit = model.fit(hist)
    assert fit.poles.shape == (8, 3) and fit.amplitudes.shape == (8, 3, 6)
    order_true = torch.argsort(poles.angle(), dim=1)
    order_est = torch.argsort(fit.poles.angle(), dim=1)
    torch.testing.assert_close(
        fit.poles.gather(1, order_est), poles.gather(1, order_true), rtol=1e-9, atol=1e-9
    )
    idx = order_est[..., None].expand(-1, -1, 6)
    est_amps = fit.amplitudes.gather(1, idx)
    true_amps = amps.gather(1, order_true[..., None].expand(-1, -1, 6))
    torch.testing.assert_close(est_amps, true_amps, rtol=1e-7, atol=1e-7)
    assert rel_error(model(hist), fut) < 1e-6


@pytest.mark.parametrize("num_modes", [2, 3, 8])
def test_prony_extrapolates_sum_of_exponentials(num_modes):
    k = min(num_modes, 3)
    _, _, hist, fut = random_case(16, k, 12, seed=6)
    pred = PronyVectorPredictor(num_modes=num_modes, ridge=1e-12)(hist.float())
    assert pred.dtype == torch.float32
    pred64 = PronyVectorPredictor(num_modes=num_modes, ridge=1e-12)(hist)
    assert rel_error(pred64, fut) < 1e-6
    assert rel_error(pred.double(), fut) < 1e-5  # float32 in/out, float64 inside


def test_prony_clamps_growing_mode():
    z = torch.polar(
        torch.tensor([[1.05]], dtype=torch.float64), torch.tensor([[0.4]], dtype=torch.float64)
    )
    re = torch.linspace(-1.0, 2.0, 4, dtype=torch.float64)
    amps = torch.complex(re, torch.ones_like(re)).reshape(1, 1, 4)  # per-subcarrier amplitudes
    h = exponentials(z, amps, L_H + L_F)
    hist, fut = to_real(h[:, :L_H]), to_real(h[:, L_H:])
    free = PronyVectorPredictor(num_modes=1, ridge=0.0, clamp=False)
    assert abs(free.fit(hist).poles.abs().item() - 1.05) < 1e-9
    assert rel_error(free(hist), fut) < 1e-9  # follows the growth
    clamped = PronyVectorPredictor(num_modes=1, ridge=0.0, clamp=True)
    pole = clamped.fit(hist).poles
    assert pole.abs().item() == pytest.approx(1.0, abs=1e-12)
    assert pole.angle().item() == pytest.approx(0.4, abs=1e-9)  # Doppler kept
    mag = torch.view_as_complex(clamped(hist).reshape(1, L_F, 4, 2)).abs()
    torch.testing.assert_close(mag[:, 1:], mag[:, :-1], rtol=1e-9, atol=0)  # no growth
    assert mag.max() < h[:, L_H:].abs().max()


@pytest.mark.parametrize(
    "model",
    [ARPredictor(), ARPredictor(shared_over_subcarriers=True), PronyVectorPredictor()],
    ids=["ar", "ar-shared", "prony"],
)
def test_batched_equals_item_by_item_and_scale_equivariant(model):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(5, L_H, 8, generator=g, dtype=torch.float64).cumsum(1)  # some memory
    batched = model(x)
    single = torch.cat([model(x[i : i + 1]) for i in range(5)])
    torch.testing.assert_close(batched, single, rtol=1e-9, atol=1e-9)
    # Complex scale c of the history scales the prediction by c (relative ridge).
    c = 300.0 * complex(math.cos(1.0), math.sin(1.0))
    hc = torch.view_as_complex(x.reshape(5, L_H, 4, 2))
    scaled = model(to_real(c * hc))
    expected = to_real(c * torch.view_as_complex(batched.reshape(5, L_F, 4, 2)))
    torch.testing.assert_close(scaled, expected, rtol=1e-7, atol=1e-7 * expected.abs().max())
    assert list(model.parameters()) == []


def test_zero_history_predicts_zero():
    x = torch.zeros(2, L_H, 6)
    for model in (ARPredictor(), ARPredictor(shared_over_subcarriers=True), PronyVectorPredictor()):
        assert torch.equal(model(x), torch.zeros(2, L_F, 6))


def test_errors_are_clear():
    with pytest.raises(ValueError, match="order=16 needs at least 17 history slots"):
        ARPredictor(order=16)(torch.zeros(1, 16, 4))
    with pytest.raises(ValueError, match="num_modes"):
        PronyVectorPredictor(num_modes=8)(torch.zeros(1, 8, 4))
    with pytest.raises(ValueError, match="order must be an integer >= 1"):
        ARPredictor(order=0)
    with pytest.raises(ValueError, match="ridge"):
        ARPredictor(ridge=-1.0)
    with pytest.raises(ValueError, match="future_slots"):
        NoPrediction(future_slots=0)
    with pytest.raises(ValueError, match=r"\[B, L_h, 2F\]"):
        ARPredictor()(torch.zeros(1, 16, 5))
    with pytest.raises(ValueError, match="real"):
        PronyVectorPredictor()(torch.zeros(1, 16, 4, dtype=torch.complex64))
