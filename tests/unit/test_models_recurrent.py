"""Learned baselines (RNN, GRU, LSTM, Transformer) and the predictor registry."""

from __future__ import annotations

import pytest
import torch

from edgelam.config import ConfigError
from edgelam.models import (
    PREDICTORS,
    GRUPredictor,
    RecurrentConfig,
    build_predictor,
    count_parameters,
)

F = 8
TINY = {
    "llm4cp": {
        "num_subcarriers": F,
        "res_dim": 4,
        "res_layers": 1,
        "backbone": {
            "name": "custom",
            "num_layers": 2,
            "d_model": 32,
            "n_head": 2,
            "n_positions": 16,
        },
    },  # fmt: skip
    "rnn": {"num_subcarriers": F, "hidden_size": 16},
    "gru": {"num_subcarriers": F, "hidden_size": 16},
    "lstm": {"num_subcarriers": F, "hidden_size": 16, "num_layers": 3},
    "transformer": {"num_subcarriers": F, "d_model": 16, "n_head": 2, "dim_feedforward": 32},
}


def history(batch: int = 3, future: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randn(batch, 4 if future else 16, 2 * F, generator=g)


@pytest.mark.parametrize("name", sorted(PREDICTORS))
def test_every_predictor_maps_history_to_future_and_trains_everything_trainable(name):
    model, info = build_predictor(name, TINY[name], seed=0)
    assert info["model"] == name and info["config"]["num_subcarriers"] == F
    assert (info["total_params"], info["trainable_params"]) == count_parameters(model)
    out = model(history())
    assert out.shape == (3, 4, 2 * F)
    torch.nn.functional.mse_loss(out, history(future=True)).backward()
    for pname, p in model.named_parameters():
        if p.requires_grad and "lora_A" not in pname:
            assert p.grad is not None and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", sorted(PREDICTORS))
def test_every_predictor_is_scale_equivariant_and_seeded(name):
    model, _ = build_predictor(name, TINY[name], seed=2)
    same, _ = build_predictor(name, TINY[name], seed=2)
    model.eval()
    same.eval()
    x = history()
    with torch.no_grad():
        y = model(x)
        assert torch.equal(same(x), y)
        for a in (1e-3, 250.0):
            torch.testing.assert_close(model(a * x), a * y, rtol=1e-4, atol=1e-4 * a)


def test_rollout_feeds_predictions_back():
    """With a one-slot future the rollout is the head on the last hidden state."""
    cfg = RecurrentConfig(num_subcarriers=F, hidden_size=16, future_slots=1, normalization="sample")
    model = GRUPredictor(cfg).eval()
    x = history(2)
    with torch.no_grad():
        z = (x - x.mean(dim=(1, 2), keepdim=True)) / x.std(dim=(1, 2), keepdim=True)
        out, _ = model.recurrent(model.embed(z))
        expected = model.head(out[:, -1:]) * x.std(dim=(1, 2), keepdim=True) + x.mean(
            dim=(1, 2), keepdim=True
        )
        torch.testing.assert_close(model(x), expected)
    long = GRUPredictor(RecurrentConfig(num_subcarriers=F, hidden_size=16, future_slots=6))
    assert long(history()).shape == (3, 6, 2 * F)
    assert count_parameters(long) == count_parameters(model)  # size independent of L_f


def test_registry_errors_name_the_allowed_values():
    with pytest.raises(ConfigError, match=r"'cnn' is not one of \['gru', 'llm4cp'"):
        build_predictor("cnn")
    with pytest.raises(ConfigError, match="hidden_sise"):
        build_predictor("gru", {"hidden_sise": 3})
    with pytest.raises(ConfigError, match="RecurrentConfig"):
        build_predictor("transformer", RecurrentConfig())
    with pytest.raises(ConfigError, match="n_head"):
        build_predictor("transformer", {"d_model": 10, "n_head": 3})
    with pytest.raises(ConfigError, match="normalization"):
        build_predictor("rnn", {"normalization": "global"})
    with pytest.raises(ConfigError, match="num_layers"):
        build_predictor("lstm", {"num_layers": 0})
