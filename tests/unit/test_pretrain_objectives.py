"""Pre-training objectives and model: patch masks, masked NMSE, reconstruction via the backbone."""

from __future__ import annotations

import math

import pytest
import torch

from edgelam.models import BackboneConfig, LLM4CPConfig
from edgelam.pretrain.model import build_pretrain_model
from edgelam.pretrain.objectives import (
    apply_mask,
    masked_nmse,
    num_masked,
    patch_mask,
    pretrain_losses,
)

F, L = 8, 16


def tiny_model(dropout: float = 0.1):
    backbone = BackboneConfig(
        name="custom", num_layers=1, d_model=16, n_head=2, n_positions=16, pretrained=None
    )
    cfg = LLM4CPConfig(
        num_subcarriers=F, res_dim=4, res_layers=1, dropout=dropout, backbone=backbone,
        trainable="full",
    )  # fmt: skip
    return build_pretrain_model(cfg, seed=0)[0]


def csi_batch(batch: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Sums of 3 complex exponentials over (slot, subcarrier): predictable, like real CSI."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(L + 4, dtype=torch.float64)[:, None]
    f = torch.arange(F, dtype=torch.float64)[None, :]
    h = torch.zeros(batch, L + 4, F, dtype=torch.complex128)
    for _ in range(3):
        gain = torch.randn(batch, 1, 1, dtype=torch.complex128, generator=g)
        doppler = 0.3 * torch.rand(batch, 1, 1, generator=g, dtype=torch.float64)
        delay = torch.rand(batch, 1, 1, generator=g, dtype=torch.float64)
        h = h + gain * torch.exp(2j * math.pi * (doppler * t - delay * f / 2))
    x = torch.view_as_real(h).reshape(batch, L + 4, 2 * F).float()
    return x[:, :L], x[:, L:]


@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.5, 0.9])
def test_patch_mask_masks_exactly_the_requested_fraction_of_whole_patches(ratio):
    gen = torch.Generator().manual_seed(1)
    m = patch_mask(5, L, F, patch_slots=4, patch_subcarriers=2, mask_ratio=ratio, generator=gen)
    assert m.shape == (5, L, 2 * F) and m.dtype == torch.bool
    patches = m.view(5, L // 4, 4, F // 2, 4)  # [B, time patch, slot, freq patch, re/im x 2]
    first = patches[:, :, :1, :, :1]
    assert torch.equal(patches, first.expand_as(patches))  # constant within every patch
    k = round(ratio * 16)
    assert num_masked(16, ratio) == k
    assert first.flatten(1).sum(1).tolist() == [k] * 5
    assert m.float().mean().item() == pytest.approx(k / 16)
    # reproducible from the generator's seed, and different items get different masks
    again = patch_mask(5, L, F, patch_slots=4, patch_subcarriers=2, mask_ratio=ratio,
                       generator=torch.Generator().manual_seed(1))  # fmt: skip
    assert torch.equal(m, again) and not all(torch.equal(m[0], m[i]) for i in range(1, 5))


def test_patch_mask_rejects_patches_that_do_not_tile_the_history():
    with pytest.raises(ValueError, match="must divide"):
        patch_mask(1, L, F, patch_slots=3, patch_subcarriers=2, mask_ratio=0.3)


def test_masked_nmse_ignores_unmasked_entries():
    g = torch.Generator().manual_seed(0)
    target, pred = torch.randn(4, L, 2 * F, generator=g), torch.randn(4, L, 2 * F, generator=g)
    mask = patch_mask(4, L, F, patch_slots=4, patch_subcarriers=2, mask_ratio=0.3, generator=g)
    base = masked_nmse(pred, target, mask)
    free = (~mask).nonzero()[0].tolist()
    hidden = mask.nonzero()[0].tolist()
    t2, p2 = target.clone(), pred.clone()
    t2[tuple(free)] = 1e6
    p2[tuple(free)] = math.inf
    assert masked_nmse(p2, t2, mask).item() == base.item()  # unmasked: no effect at all
    t3 = target.clone()
    t3[tuple(hidden)] += 1.0
    assert masked_nmse(pred, t3, mask).item() != base.item()  # masked: counted
    p = pred.clone().requires_grad_()
    masked_nmse(p, target, mask).backward()
    assert p.grad[~mask].abs().max() == 0 and p.grad[mask].abs().max() > 0


def test_model_never_sees_masked_values_and_reconstruction_is_scale_equivariant():
    model = tiny_model().eval()
    history, target = csi_batch()
    mask = patch_mask(8, L, F, patch_slots=4, patch_subcarriers=2, mask_ratio=0.3,
                      generator=torch.Generator().manual_seed(3))  # fmt: skip
    with torch.no_grad():
        rec = model.reconstruct(apply_mask(history, mask))
        changed = history.clone()
        changed[mask] += 5.0  # masked entries change: the input the model sees does not
        assert torch.equal(model.reconstruct(apply_mask(changed, mask)), rec)
        assert torch.allclose(model.reconstruct(3 * apply_mask(history, mask)), 3 * rec, atol=1e-5)
        assert torch.equal(model(history), model.predictor(history))  # forward = predictor's
        pred, hidden = model.hidden_states(history)
        assert hidden.shape == (8, L, 16) and torch.equal(pred, model(history))
    assert not model.predictor.backbone._forward_hooks  # the hook is removed afterwards
    with torch.no_grad():
        a = pretrain_losses(model, history, target, mask, 1.0)
        b = pretrain_losses(model, changed, target, mask, 1.0)
    assert a.reconstruction.item() != b.reconstruction.item()  # targets are the masked values
    assert a.loss.item() == pytest.approx(a.prediction.item() + a.reconstruction.item())


def test_a_few_steps_reduce_both_losses_on_a_fixed_batch():
    model = tiny_model(dropout=0.0)
    history, target = csi_batch(16)
    mask = patch_mask(16, L, F, patch_slots=4, patch_subcarriers=2, mask_ratio=0.3,
                      generator=torch.Generator().manual_seed(0))  # fmt: skip
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    first = pretrain_losses(model, history, target, mask, 1.0)
    for _ in range(40):
        losses = pretrain_losses(model, history, target, mask, 1.0)
        opt.zero_grad()
        losses.loss.backward()
        opt.step()
    last = pretrain_losses(model, history, target, mask, 1.0)
    assert last.prediction.item() < 0.8 * first.prediction.item()
    assert last.reconstruction.item() < 0.7 * first.reconstruction.item()


def test_one_model_serves_several_subcarrier_counts_with_shared_weights():
    backbone = BackboneConfig(
        name="custom", num_layers=1, d_model=16, n_head=2, n_positions=16, pretrained=None
    )
    cfg = LLM4CPConfig(num_subcarriers=F, res_dim=4, res_layers=1, dropout=0.0,
                       backbone=backbone, trainable="full")  # fmt: skip
    model, _ = build_pretrain_model(cfg, seed=0, subcarrier_counts=(4, F, 12))
    assert model.subcarrier_counts == [4, F, 12]
    main = model.predictor
    for f in ("4", "12"):
        extra = model.variants[f].predictor
        assert extra.backbone is main.backbone and extra.delay_branch is main.delay_branch
        assert extra.token_embedding is not main.token_embedding
        assert extra.head.out_features == 2 * int(f)
    # one set of shared parameters: counted once, each F adds only its embedding and heads
    n_main = sum(p.numel() for p in main.parameters()) + sum(
        p.numel() for p in model.reconstruction_head.parameters()
    )
    f_wide = sum(
        p.numel()
        for v in model.variants.values()
        for m in (v.predictor.token_embedding, v.predictor.head, v.reconstruction_head)
        for p in m.parameters()
    )
    assert sum(p.numel() for p in model.parameters()) == n_main + f_wide
    # a batch of F=4 runs through its own embedding and the shared backbone, and a step on it
    # moves the backbone every F uses
    history = torch.randn(3, L, 8)
    assert model(history).shape == (3, 4, 8) and model.reconstruct(history).shape == (3, L, 8)
    before = main.backbone.h[0].attn.c_attn.weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(history).square().mean().backward()
    assert main.token_embedding.weight.grad is None  # F=8's embedding took no part
    opt.step()
    assert not torch.equal(before, model.variants["12"].predictor.backbone.h[0].attn.c_attn.weight)
    with pytest.raises(ValueError, match="serves 2F for F in \\[4, 8, 12\\]"):
        model(torch.randn(3, L, 10))
    # state dict: shared weights once, and it round-trips into a fresh model
    state = model.state_dict()
    assert not any(k.startswith("variants.") and ".backbone." in k for k in state)
    fresh, _ = build_pretrain_model(cfg, seed=1, subcarrier_counts=(4, F, 12))
    fresh.load_state_dict(state)
    x = torch.randn(2, L, 24)
    assert torch.equal(fresh.eval()(x), model.eval()(x))  # eval: no backbone dropout
    with pytest.raises(RuntimeError, match="missing"):
        fresh.load_state_dict({k: v for k, v in state.items() if "variants.4." not in k})
