"""LLM4CP predictor and the trainable-parameter schemes (LoRA, ln_pe, full)."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from edgelam.config import ConfigError
from edgelam.models import (
    BackboneConfig,
    LLM4CPConfig,
    apply_ln_pe_tuning,
    apply_lora,
    build_llm4cp,
    build_predictor,
    count_parameters,
    freeze_backbone,
    load_trainable_state,
    trainable_state,
)

D, LAYERS, POSITIONS, F = 32, 2, 16, 8


def tiny(**overrides) -> LLM4CPConfig:
    backbone = BackboneConfig(
        name="custom", num_layers=LAYERS, d_model=D, n_head=2, n_positions=POSITIONS
    )
    fields = dict(num_subcarriers=F, res_dim=4, res_layers=1, lora_rank=4, backbone=backbone)
    return LLM4CPConfig(**{**fields, **overrides})


def history(batch: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 16, 2 * F, generator=g)


def non_backbone_params(model) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith("backbone."))


@pytest.mark.parametrize("scheme", ["ln_pe", "lora", "full"])
def test_shapes_and_gradients_reach_exactly_the_trainable_parameters(scheme):
    model, info = build_llm4cp(tiny(trainable=scheme), seed=0)
    model.eval()
    with torch.no_grad():  # lora_B starts at 0, which zeroes lora_A's gradient: perturb it
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_()
    out = model(history())
    assert out.shape == (3, 4, 2 * F) and out.dtype == torch.float32
    out.square().mean().backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name
    assert info["trainable_params"] == count_parameters(model)[1]
    assert info["pretrained"] is False and info["trainable"] == scheme


def test_ln_pe_trains_layer_norms_positions_and_non_backbone_modules():
    model, info = build_llm4cp(tiny(trainable="ln_pe"), seed=0)
    backbone_trainable = {n for n, p in model.backbone.named_parameters() if p.requires_grad}
    assert all(
        n.startswith("wpe") or ".ln_" in n or n.startswith("ln_f") for n in backbone_trainable
    )
    ln = (2 * LAYERS + 1) * 2 * D  # ln_1, ln_2 per block + ln_f, weight and bias each
    assert info["trainable_params"] == ln + POSITIONS * D + non_backbone_params(model)
    assert all(p.requires_grad for n, p in model.named_parameters() if not n.startswith("backbone"))


@pytest.mark.parametrize(
    ("targets", "per_block"),
    [
        # c_attn: d -> 3d; "c_proj" = attn.c_proj (d -> d) AND mlp.c_proj (4d -> d)
        (("c_attn", "c_proj"), 4 * (D + 3 * D) + 4 * (D + D) + 4 * (4 * D + D)),
        (("attn.c_proj",), 4 * (D + D)),
    ],
)
def test_lora_counts_follow_the_hand_formula(targets, per_block):
    model, info = build_llm4cp(tiny(trainable="lora", lora_targets=targets), seed=0)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all("lora_A" in n or "lora_B" in n for n in trainable if n.startswith("backbone."))
    lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    assert lora == LAYERS * per_block
    assert info["trainable_params"] == lora + non_backbone_params(model)
    assert info["total_params"] == count_parameters(build_llm4cp(tiny(), 0)[0])[0] + lora


def test_lora_at_init_leaves_the_output_unchanged_exactly():
    base, _ = build_llm4cp(tiny(trainable="full"), seed=3)
    base.eval()
    adapted = apply_lora(copy.deepcopy(base), rank=4, alpha=8, targets=("c_attn", "c_proj"))
    assert any("lora_A" in n for n, _ in adapted.named_parameters())
    x = history()
    with torch.no_grad():
        assert torch.equal(adapted(x), base(x))
        adapted.backbone.h[0].attn.c_attn.lora_B["default"].weight.fill_(0.1)
        assert not torch.equal(adapted(x), base(x))


def test_lora_errors():
    model, _ = build_llm4cp(tiny(trainable="lora"), seed=0)
    with pytest.raises(ValueError, match="already applied"):
        apply_lora(model, 4, 8)
    fresh, _ = build_llm4cp(tiny(), seed=0)
    with pytest.raises(ConfigError, match="lora_targets"):
        apply_lora(fresh, 4, 8, targets=("nonexistent_layer",))


def test_freeze_and_ln_pe_compose_with_lora():
    model, _ = build_llm4cp(tiny(trainable="lora"), seed=0)
    apply_ln_pe_tuning(model)  # LoRA matrices stay trainable, layer norms/positions join them
    names = {n for n, p in model.backbone.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in names) and "wpe.weight" in names
    assert not any(n.endswith("c_attn.base_layer.weight") for n in names)
    freeze_backbone(model)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert model.head.weight.requires_grad


def test_trainable_state_round_trip_and_strictness():
    a, _ = build_llm4cp(tiny(trainable="lora"), seed=0)
    b, _ = build_llm4cp(tiny(trainable="lora"), seed=1)
    state = {k: v.clone() for k, v in trainable_state(a).items()}
    assert set(state) == {n for n, p in a.named_parameters() if p.requires_grad}
    load_trainable_state(b, state)
    for k, v in trainable_state(b).items():
        assert torch.equal(v, state[k])
    frozen = "backbone.h.0.attn.c_attn.base_layer.weight"
    assert not torch.equal(dict(a.named_parameters())[frozen], dict(b.named_parameters())[frozen])
    missing = dict(state)
    name = next(iter(missing))
    del missing[name]
    with pytest.raises(KeyError, match="missing") as err:
        load_trainable_state(b, {**missing, "bogus.weight": torch.zeros(1)})
    assert name in str(err.value) and "bogus.weight" in str(err.value)
    with pytest.raises(ValueError, match="shape"):
        load_trainable_state(b, {**state, name: torch.zeros(1, 2, 3)})


def test_seeded_builds_are_identical_and_leave_the_global_rng_alone():
    rng = torch.random.get_rng_state()
    a, _ = build_llm4cp(tiny(trainable="lora"), seed=7)
    b, _ = build_llm4cp(tiny(trainable="lora"), seed=7)
    c, _ = build_llm4cp(tiny(trainable="lora"), seed=8)
    assert torch.equal(torch.random.get_rng_state(), rng)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


@pytest.mark.parametrize("scale", [1e-4, 3.0, 1e4])
def test_output_is_scale_and_shift_equivariant(scale):
    model, _ = build_llm4cp(tiny(), seed=0)
    model.eval()
    x = history()
    with torch.no_grad():
        y = model(x)
        torch.testing.assert_close(model(scale * x), scale * y, rtol=1e-4, atol=1e-4 * scale)
        torch.testing.assert_close(model(x + 5.0), y + 5.0, rtol=1e-4, atol=1e-4)


def test_sample_normalization_makes_items_independent_of_their_batch():
    model, _ = build_llm4cp(tiny(normalization="sample"), seed=0)
    model.eval()
    x = history(4)
    x[1] *= 100.0
    with torch.no_grad():
        together = model(x)
        alone = torch.cat([model(x[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-3)


def test_branches_see_the_csi_and_its_correctly_interleaved_delay_profile():
    model, _ = build_llm4cp(tiny(), seed=0)
    model.eval()
    seen = {}
    for name in ("frequency_branch", "delay_branch"):
        getattr(model, name).register_forward_pre_hook(
            lambda _m, args, name=name: seen.__setitem__(name, args[0])
        )
    x = history(2)
    with torch.no_grad():
        model(x)
        z = (x - x.mean()) / x.std()
        csi = torch.complex(z[..., 0::2], z[..., 1::2])  # [B, L, F]: re/im interleaved
        delay = torch.fft.ifft(csi, dim=-1)
        for name, h in (("frequency_branch", csi), ("delay_branch", delay)):
            image = torch.stack([h.real, h.imag], dim=1)  # [B, 2, L, F]
            torch.testing.assert_close(seen[name], model._mix_patches(image))


def test_patches_mix_only_within_groups_of_patch_size_slots():
    model, _ = build_llm4cp(tiny(), seed=0)
    image = torch.zeros(1, 2, 16, F)
    image[0, 0, 5, 3] = 1.0  # slot 5 lies in the patch of slots 4..7
    with torch.no_grad():
        mixed = model._mix_patches(image) - model._mix_patches(torch.zeros_like(image))
    touched = mixed.abs().sum(dim=(0, 1, 3)).nonzero().flatten().tolist()
    assert set(touched) <= {4, 5, 6, 7} and mixed[0, 1].abs().sum() == 0


def test_config_validation_names_the_field():
    with pytest.raises(ConfigError, match="patch_size"):
        tiny(patch_size=3)
    with pytest.raises(ConfigError, match="trainable"):
        tiny(trainable="everything")
    with pytest.raises(ConfigError, match="lora_targets"):
        tiny(lora_targets=("c_attn", "wte"))
    with pytest.raises(ConfigError, match="history_slots"):
        tiny(history_slots=32, patch_size=4)  # > n_positions=16
    with pytest.raises(ConfigError, match="backbone.n_head"):
        build_predictor("llm4cp", {"backbone": {"name": "custom", "d_model": 30, "n_head": 4}})
    with pytest.raises(ValueError, match=r"\[B, 16, 16\]"):
        build_llm4cp(tiny(), 0)[0](torch.zeros(2, 16, 10))


def _gpt2_hand_counts(lora_per_block: int = 0) -> tuple[int, int]:
    """(total, trainable) of LLM4CP with 6 GPT-2 small layers, F=48, res_dim 64, 4 blocks."""
    d, f2, res = 768, 96, 64
    block = 2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * 4 * d + 4 * d) + (4 * d * d + d)
    backbone = 50257 * d + 1024 * d + 6 * block + 2 * d
    res_block = 2 * (res * res * 9 + res) + 2 * res * res
    branch = (2 * res * 9 + res) + 4 * res_block + (res * 2 * 9 + 2)
    rest = 2 * branch + (4 * 4 + 4) + f2 * d * 3 + (16 * 16 + 16) + (d * f2 + f2) + (16 * 4 + 4)
    ln_pe = 1024 * d + (2 * 6 + 1) * 2 * d
    lora = 6 * lora_per_block
    return backbone + rest + lora, (lora if lora else ln_pe) + rest


def test_full_size_gpt2_config_matches_the_published_parameter_count():
    """LLM4CP reports ~82.9M total, ~1.8M trainable (first 6 GPT-2 layers, ln_pe tuning)."""
    backbone = {"name": "gpt2", "random_init_vocab_size": 50257}  # same count as real GPT-2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random fallback unless the user has gpt2 cached
        _, ln_pe = build_predictor("llm4cp", {"backbone": backbone}, seed=0)
        _, lora = build_predictor("llm4cp", {"backbone": backbone, "trainable": "lora"}, seed=0)
    assert (ln_pe["total_params"], ln_pe["trainable_params"]) == _gpt2_hand_counts()
    assert ln_pe["total_params"] == pytest.approx(82.9e6, rel=1e-3)
    assert ln_pe["trainable_params"] == pytest.approx(1.8e6, rel=0.03)
    r, d = 8, 768
    per_block = r * (d + 3 * d) + r * (d + d) + r * (4 * d + d)
    assert (lora["total_params"], lora["trainable_params"]) == _gpt2_hand_counts(per_block)


def test_full_tuning_trains_all_but_the_unused_token_embedding():
    model, info = build_llm4cp(tiny(trainable="full"), seed=0)
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen == ["backbone.wte.weight"]
    assert info["trainable_params"] == info["total_params"] - model.backbone.wte.weight.numel()
