"""The looped LAM as a channel predictor (masked reconstruction), its loader and training."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from edgelam.models.layers import denormalize, normalize_per_call
from edgelam.training.fedavg import nmse_loss
from edgelam.training.looped_tp.model import LoopedLAMConfig, build_looped_lam, csi_features
from edgelam.training.looped_tp.predictor import (
    LoopedPredictor,
    build_looped_predictor,
    load_looped_predictor,
)

CFG = LoopedLAMConfig(num_subcarriers=4, seq_len=8, d_model=16, embed_dim=8, n_head=2,
                      ffn_dim=24, loops=2)  # fmt: skip


@pytest.fixture
def run_dir(tmp_path):
    """A 'trained' checkpoint: a seeded model nudged by a few steps, exported like export_run."""
    model = build_looped_lam(CFG, seed=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(4, CFG.seq_len, CFG.input_dim, generator=torch.Generator().manual_seed(0))
    for _ in range(3):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
    state = {n: t.detach().contiguous() for n, t in model.state_dict().items()}
    meta = {"edgelam-looped-lam": json.dumps(CFG.__dict__, sort_keys=True)}
    save_file(state, str(tmp_path / "model.safetensors"), metadata=meta)
    (tmp_path / "model_card.json").write_text(json.dumps({"architecture": CFG.__dict__}))
    return tmp_path, state


def test_shapes_and_long_history():
    pred = build_looped_predictor(CFG, future_slots=3)
    assert pred.context_slots == 5
    assert pred(torch.randn(2, 5, 8)).shape == (2, 3, 8)
    h = torch.randn(2, 12, 8)
    assert torch.equal(pred(h), pred(h[:, -5:]))  # only the last T - L_f slots are used
    with pytest.raises(ValueError, match="history"):
        pred(torch.randn(2, 4, 8))
    with pytest.raises(ValueError, match="future_slots"):
        LoopedPredictor(build_looped_lam(CFG), future_slots=CFG.seq_len)


def test_load_same_f_restores_everything(run_dir):
    path, state = run_dir
    pred, info = load_looped_predictor(path)
    assert info["reinitialised"] == [] and info["num_subcarriers"] == 4
    for name, t in pred.model.state_dict().items():
        assert torch.equal(t, state[name]), name


def test_load_other_f_reinitialises_only_f_wide_parts(run_dir):
    path, state = run_dir
    pred, info = load_looped_predictor(path / "model.safetensors", num_subcarriers=6, seed=5)
    assert info["checkpoint_num_subcarriers"] == 4 and info["num_subcarriers"] == 6
    assert info["reinitialised"] == ["embed_in.bias", "embed_in.weight", "head.bias", "head.weight"]
    fresh = build_looped_predictor(CFG, 6, seed=5).model.state_dict()
    for name, t in pred.model.state_dict().items():
        if name.split(".")[0] in ("embed_in", "head"):
            assert torch.equal(t, fresh[name]), name  # seeded re-initialisation
            assert not torch.equal(t, state[name]), name
        else:
            assert torch.equal(t, state[name]), name  # F-agnostic: from the checkpoint
    assert pred(torch.randn(3, 8, 12)).shape == (3, 4, 12)


def test_output_is_masked_reconstruction(run_dir):
    pred, _ = load_looped_predictor(run_dir[0], future_slots=2)
    h = torch.randn(5, 10, 8) * 3 + 1
    x, mean, std = normalize_per_call(h[:, -6:])
    masked = torch.cat([x, torch.zeros(5, 2, 8)], dim=1)
    mask = torch.zeros(5, 8, 8, dtype=torch.bool)
    mask[:, 6:] = True
    want = denormalize(pred.model(csi_features(masked, mask))[:, 6:], mean, std)
    torch.testing.assert_close(pred(h), want)


def test_few_steps_reduce_loss():
    gen = torch.Generator().manual_seed(0)
    t = torch.arange(8.0)
    phase = torch.rand(16, 1, 8, generator=gen) * 6.28
    series = torch.sin(0.4 * t[None, :, None] + phase)  # [16, 8, 8]: smooth, predictable
    hist, target = series[:, :6], series[:, 6:]
    pred = build_looped_predictor(CFG, future_slots=2, seed=1)
    opt = torch.optim.Adam(pred.parameters(), lr=3e-3)
    first = nmse_loss(pred(hist), target).item()
    for _ in range(30):
        opt.zero_grad()
        loss = nmse_loss(pred(hist), target)
        loss.backward()
        opt.step()
    assert nmse_loss(pred(hist), target).item() < 0.7 * first
