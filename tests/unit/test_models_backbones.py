"""GPT-2 backbones: local from_pretrained, truncation, the random fallback and its warning."""

from __future__ import annotations

import warnings

import pytest
import torch
from transformers import GPT2Config, GPT2Model

from edgelam.config import ConfigError, from_dict
from edgelam.models import (
    BackboneConfig,
    LLM4CPConfig,
    PretrainedWeightsUnavailable,
    build_gpt2_backbone,
    build_llm4cp,
)


def custom(**overrides) -> BackboneConfig:
    fields = dict(name="custom", num_layers=2, d_model=32, n_head=2, n_positions=16)
    return BackboneConfig(**{**fields, **overrides})


@pytest.fixture
def saved(tmp_path):
    """A random 3-layer GPT-2 saved with save_pretrained, and its state dict."""
    config = GPT2Config(
        vocab_size=10, n_positions=16, n_embd=32, n_layer=3, n_head=2, bos_token_id=None,
        eos_token_id=None,
    )  # fmt: skip
    torch.manual_seed(123)
    model = GPT2Model(config)
    model.save_pretrained(tmp_path)
    return tmp_path, {k: v.clone() for k, v in model.state_dict().items()}


def test_from_pretrained_keeps_the_first_blocks_with_their_weights(saved):
    path, reference = saved
    with warnings.catch_warnings():
        warnings.simplefilter("error", PretrainedWeightsUnavailable)
        model = build_gpt2_backbone(custom(pretrained=str(path)), seed=0)
    assert model.build_info.pretrained and model.build_info.source == str(path)
    assert "pretrained" in model.build_info.description
    assert len(model.h) == 2 and model.config.n_layer == 2
    state = model.state_dict()
    assert not any(k.startswith("h.2.") for k in state)
    for key, value in state.items():
        assert torch.equal(value, reference[key]), key
    assert model.training
    out = model(inputs_embeds=torch.randn(2, 5, 32), use_cache=False).last_hidden_state
    assert out.shape == (2, 5, 32)


def test_pretrained_llm4cp_reports_the_flag(saved):
    path, reference = saved
    backbone = custom(pretrained=str(path))
    model, info = build_llm4cp(LLM4CPConfig(num_subcarriers=4, res_dim=2, backbone=backbone), 0)
    assert info["pretrained"] is True and info["pretrained_source"] == str(path)
    assert torch.equal(model.backbone.h[1].mlp.c_fc.weight, reference["h.1.mlp.c_fc.weight"])


def test_missing_weights_warn_and_fall_back_to_the_seeded_random_architecture(tmp_path):
    missing = str(tmp_path / "no-such-checkpoint")
    with pytest.warns(PretrainedWeightsUnavailable, match="no-such-checkpoint"):
        fallback = build_gpt2_backbone(custom(pretrained=missing), seed=5)
    assert fallback.build_info.pretrained is False and fallback.build_info.source is None
    direct = build_gpt2_backbone(custom(pretrained=None), seed=5)
    other = build_gpt2_backbone(custom(pretrained=None), seed=6)
    a, b, c = fallback.state_dict(), direct.state_dict(), other.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["h.0.attn.c_attn.weight"], c["h.0.attn.c_attn.weight"])
    assert fallback.config.vocab_size == 1 and fallback.config.bos_token_id is None


@pytest.mark.parametrize(
    ("overrides", "field"),
    [({"d_model": 64, "n_head": 2}, "d_model"), ({"num_layers": 4}, "num_layers"),
     ({"n_head": 4}, "n_head"), ({"n_positions": 32}, "n_positions")],
)  # fmt: skip
def test_mismatching_checkpoint_raises_naming_the_field(saved, overrides, field):
    path, _ = saved
    with pytest.raises(ConfigError, match=field):
        build_gpt2_backbone(custom(pretrained=str(path), **overrides))


def test_config_resolution_and_validation():
    gpt2 = BackboneConfig()
    assert (gpt2.pretrained, gpt2.d_model, gpt2.n_head, gpt2.num_layers) == ("gpt2", 768, 12, 6)
    assert BackboneConfig(name="custom", d_model=8, n_head=2).pretrained is None
    assert from_dict(BackboneConfig, {"pretrained": None}).pretrained is None
    with pytest.raises(ConfigError, match="d_model"):
        BackboneConfig(name="gpt2", d_model=512)
    with pytest.raises(ConfigError, match="num_layers"):
        BackboneConfig(num_layers=13)
    with pytest.raises(ConfigError, match="d_model"):
        BackboneConfig(name="custom")
    with pytest.raises(ConfigError, match="n_head"):
        BackboneConfig(name="custom", d_model=10, n_head=3)
    with pytest.raises(ConfigError, match="name"):
        BackboneConfig(name="bert")
