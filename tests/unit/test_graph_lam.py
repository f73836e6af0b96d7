"""Graph-LAM beamformer: equivariance, exact power, any size, training, FedAvg, checkpoints."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from edgelam.airinterface.beamforming.graph_lam import (
    ChannelSampler,
    GraphLAMConfig,
    sample_group,
    train_graph_lam,
)
from edgelam.airinterface.beamforming.graph_lam_checkpoint import (
    load_graph_lam,
    load_precoder,
    save_graph_lam,
)
from edgelam.airinterface.beamforming.graph_lam_federated import (
    EffectiveChannels,
    SumRateTask,
    negative_rate_loss,
)
from edgelam.airinterface.beamforming.pilots import pilot_matrix, transmit_pilots
from edgelam.airinterface.beamforming.problem import rayleigh_channels, sum_rate
from edgelam.config import ConfigError
from edgelam.distributed.transport import InProcessTransport
from edgelam.models.backbones import BackboneConfig
from edgelam.models.beamformers import GraphBeamformerConfig, build_graph_beamformer
from edgelam.models.pretrained import CheckpointError
from edgelam.network import TransferLedger
from edgelam.training.fedavg import Client, FedAvg, FedAvgConfig

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_BACKBONE = BackboneConfig(
    name="custom", num_layers=1, d_model=16, n_head=2, n_positions=4, pretrained=None
)


def tiny(**overrides) -> GraphBeamformerConfig:
    base = {"hidden": 16, "gnn_layers": 1, "head_layers": 1, "lora_rank": 2,
            "backbone": dataclasses.replace(TINY_BACKBONE)}  # fmt: skip
    return GraphBeamformerConfig(**{**base, **overrides})


def channels(batch: int, K: int, M: int, seed: int = 0, dtype=torch.complex64) -> torch.Tensor:
    return rayleigh_channels(
        batch, K, M, generator=torch.Generator().manual_seed(seed), dtype=dtype
    )


@pytest.mark.parametrize(
    "overrides",
    [{}, {"head": "mrt-gated"}, {"head": "direct", "aggregation": "max"}, {"use_backbone": False}],
    ids=["graph-lam-dual", "mrt-gated", "direct-max", "gnn-only"],
)
def test_permuting_users_permutes_beams_and_antennas_permute_rows(overrides):
    model, _ = build_graph_beamformer(tiny(**overrides), seed=1)
    model = model.double().eval()
    H = channels(3, 5, 7, dtype=torch.complex128)
    s2 = torch.tensor([0.1, 1.0, 0.01], dtype=torch.float64)
    users, antennas = torch.randperm(5), torch.randperm(7)
    with torch.no_grad():
        W = model(H, 1.0, s2)
        W_users = model(H[:, users], 1.0, s2)
        W_antennas = model(H[:, :, antennas], 1.0, s2)
    assert not torch.allclose(W[:, :, 0], W[:, :, 1])  # beams differ: the check has teeth
    torch.testing.assert_close(W_users, W[:, :, users], rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(W_antennas, W[:, antennas, :], rtol=1e-9, atol=1e-11)


def test_causal_gpt2_forward_would_break_user_equivariance():
    """The check above can fail: GPT-2's own forward (positions + causal mask) is not equivariant."""
    model, _ = build_graph_beamformer(tiny(), seed=1)
    model = model.double().eval()
    tokens = torch.randn(2, 4, 16, dtype=torch.float64)  # n_positions = 4
    perm = torch.tensor([3, 0, 2, 1])
    with torch.no_grad():
        plain = model.backbone(inputs_embeds=tokens).last_hidden_state
        plain_perm = model.backbone(inputs_embeds=tokens[:, perm]).last_hidden_state
        ours = model._backbone_forward(tokens)
        ours_perm = model._backbone_forward(tokens[:, perm])
    assert not torch.allclose(plain_perm, plain[:, perm], atol=1e-6)
    torch.testing.assert_close(ours_perm, ours[:, perm])


def test_power_constraint_holds_with_equality_per_sample():
    model, _ = build_graph_beamformer(tiny(), seed=0)
    H = channels(4, 3, 6) * torch.tensor([1e-3, 1.0, 10.0, 1e2])[:, None, None]
    power = torch.tensor([0.5, 1.0, 2.0, 40.0])
    W = model(H, power, 1e-2)
    torch.testing.assert_close(W.abs().square().sum((1, 2)), power, rtol=1e-5, atol=0)


@pytest.mark.parametrize(("K", "M"), [(1, 1), (1, 9), (9, 3), (12, 33)])
def test_any_number_of_users_and_antennas(K, M):
    model, _ = build_graph_beamformer(tiny(), seed=0)
    with torch.no_grad():
        W = model(channels(2, K, M), 1.0, 0.1)
    assert W.shape == (2, M, K) and torch.isfinite(W.real).all() and torch.isfinite(W.imag).all()


def test_a_few_training_steps_raise_the_held_out_sum_rate():
    torch.manual_seed(0)
    model, _ = build_graph_beamformer(tiny(head="mrt-gated"), seed=0)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    H_test, s2_test = channels(128, 4, 8, seed=99), torch.full((128,), 0.05)

    def held_out() -> float:
        with torch.no_grad():
            return float(sum_rate(H_test, model(H_test, 1.0, s2_test), s2_test).mean())

    before = held_out()
    for step in range(25):
        H = channels(64, 4, 8, seed=step)
        loss = -sum_rate(H, model(H, 1.0, 0.05), 0.05).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert held_out() > before + 0.5  # bit/s/Hz; MRT start ~5.5, RZF ~10 on this set


def test_federated_round_changes_trainable_parameters_only():
    model, info = build_graph_beamformer(tiny(), seed=0)
    task = SumRateTask(model)
    before = {k: v.clone() for k, v in task.state_dict().items()}
    trainable = {n for n, p in task.named_parameters() if p.requires_grad}
    assert any("lora_" in n for n in trainable) and any(".gnn." in n for n in trainable)
    assert not any(n.startswith("precoder.backbone.") and "lora_" not in n for n in trainable)
    clients = [Client(i, EffectiveChannels(channels(16, 3, 4, seed=i) * 3.0)) for i in range(2)]
    transport = InProcessTransport(TransferLedger())
    fed = FedAvg(FedAvgConfig(rounds=1, local_steps=2, batch_size=8, lr=1e-2), task, clients,
                 transport=transport, loss_fn=negative_rate_loss)  # fmt: skip
    record = fed.run_round()
    after = task.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and changed <= trainable
    assert any("lora_B" in k for k in changed)  # LoRA left its zero init
    frozen = [k for k in before if k.startswith("precoder.backbone.") and "lora_" not in k]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    # only the trainable state is sent: 2 clients x trainable floats x 32 bits
    assert record["uplink_bits"] == 2 * 32 * info["trainable_params"]


def test_checkpoint_round_trip_and_load_precoder(tmp_path):
    model, info = build_graph_beamformer(tiny(), seed=3)
    with torch.no_grad():  # move LoRA off its zero init so the round trip covers it
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_()
    model.eval()
    save_graph_lam(tmp_path / "ckpt", model, step=7, info=info)
    loaded, card = load_graph_lam(tmp_path / "ckpt")
    H = channels(5, 4, 6)
    with torch.no_grad():
        assert torch.equal(loaded(H, 2.0, 0.1), model(H, 2.0, 0.1))
    assert card["step"] == 7 and card["model"]["hidden"] == 16
    precoder = load_precoder(tmp_path / "ckpt" / "model.safetensors")
    H64 = channels(5, 3, 10, dtype=torch.complex128)
    W = precoder(H64, 3.0, 0.1)
    assert W.dtype == torch.complex128 and W.shape == (5, 10, 3)
    torch.testing.assert_close(
        W.abs().square().sum((1, 2)), torch.full((5,), 3.0, dtype=torch.float64)
    )
    (tmp_path / "ckpt" / "model.safetensors").write_bytes(b"not the weights")
    with pytest.raises(CheckpointError, match="sha256"):
        load_graph_lam(tmp_path / "ckpt")
    with pytest.raises(FileNotFoundError):
        load_precoder(tmp_path / "nowhere")


def test_shipped_wireless_backbone_is_loaded_before_lora():
    from edgelam.models.pretrained import load_pretrained_backbone, shipped_checkpoint_dir

    cfg = GraphBeamformerConfig(hidden=8, gnn_layers=1)  # default backbone: edgelam-wireless
    model, info = build_graph_beamformer(cfg, seed=0)
    state, _ = load_pretrained_backbone(shipped_checkpoint_dir())
    weight = model.backbone.h[0].attn.c_attn.base_layer.weight
    assert info["pretrained"] and torch.equal(weight, state["backbone.h.0.attn.c_attn.weight"])
    assert not weight.requires_grad


def test_pilot_encoder_path_is_equivariant_and_trainable():
    model, _ = build_graph_beamformer(tiny(input="pilots", pilot_length=6), seed=0)
    model.eval()  # no backbone dropout while comparing
    H = channels(16, 4, 8)
    X = pilot_matrix(4, 6)
    Y = transmit_pilots(H, X, 0.1, generator=torch.Generator().manual_seed(1))
    perm = torch.tensor([2, 0, 3, 1])
    with torch.no_grad():  # Y is the same whatever order the users are listed in
        W, W_perm = (
            model.forward_pilots(Y, X, 1.0, 0.1, 0.1),
            model.forward_pilots(Y, X[perm], 1.0, 0.1, 0.1),
        )
    torch.testing.assert_close(W_perm, W[:, :, perm], rtol=1e-4, atol=1e-6)
    loss = -sum_rate(H, model.forward_pilots(Y, X, 1.0, 0.1, 0.1), 0.1).mean()
    loss.backward()
    encoder = model.pilot_encoder
    assert encoder.despread.weight_re.grad.abs().sum() > 0
    assert encoder.refine.weight_im.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="forward_pilots"):
        model(H, 1.0, 0.1)
    with pytest.raises(ConfigError, match="pilots"):
        load_precoder_of(model)


def load_precoder_of(model):
    from edgelam.airinterface.beamforming.graph_lam_checkpoint import GraphLAMPrecoder

    return GraphLAMPrecoder(model, {})


def tiny_run(**overrides) -> GraphLAMConfig:
    base = {"model": tiny(), "steps": 4, "groups": 1, "batch_size": 8, "users": (2, 3),
            "antennas": (4,), "val_every": 2, "val_samples": 4, "checkpoint_every": 2,
            "eval_users": (2, 5), "eval_antennas": (4, 6), "eval_samples": 8,
            "wmmse_max_iter": 30}  # fmt: skip
    return GraphLAMConfig(**{**base, **overrides})


def test_interrupted_training_resumes_bit_for_bit(tmp_path):
    cfg = tiny_run()
    train_graph_lam(cfg, tmp_path / "full", progress=False)
    train_graph_lam(cfg, tmp_path / "cut", progress=False, stop_after=2)
    assert not (tmp_path / "cut" / "summary.json").exists()
    train_graph_lam(cfg, tmp_path / "cut", progress=False)
    a, _ = load_graph_lam(tmp_path / "full")
    b, _ = load_graph_lam(tmp_path / "cut")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name
    import json

    summary = json.loads((tmp_path / "cut" / "summary.json").read_text())
    assert {r["seen"] for r in summary["per_size"]} == {True, False}
    assert 0 < summary["seen_pct_of_wmmse"] <= 101


def test_sampler_draws_distinct_users_and_configs_are_checked():
    sampler = ChannelSampler(pool_size=8, seed=0)
    sampler.pools[("uma", 4)] = torch.arange(32.0).reshape(8, 4).to(torch.complex64)
    H = sampler.sample("uma", 5, 8, 4, torch.Generator().manual_seed(0))
    assert all(len(set(h[:, 0].real.tolist())) == 8 for h in H)  # all 8 pool users, no repeats
    real = ChannelSampler(pool_size=16, seed=0).sample("cdl-c", 2, 3, 4, torch.Generator())
    assert real.shape == (2, 3, 4) and real.dtype == torch.complex64  # a 38.901 pool (Sionna)
    group = sample_group(tiny_run(snr_db=(10.0, 10.0)), sampler, torch.Generator().manual_seed(0))
    torch.testing.assert_close(group["noise_power"], torch.full((8,), 0.1))
    with pytest.raises(ConfigError, match="channel_models"):
        GraphLAMConfig(channel_models=("cdl-x",))
    with pytest.raises(ConfigError, match="pilot_length"):
        GraphLAMConfig(users=(2, 9), model=GraphBeamformerConfig(input="pilots", pilot_length=8))
