"""Pre-training runs: exact resume, export -> load -> apply, tamper and mismatch detection, CLI."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch
from click.testing import CliRunner

from edgelam.config import ConfigError, from_dict
from edgelam.models import LLM4CPConfig, build_llm4cp
from edgelam.models.pretrained import (
    CheckpointError,
    apply_pretrained,
    load_pretrained_backbone,
)
from edgelam.pretrain.command import pretrain_command
from edgelam.pretrain.model import build_pretrain_model
from edgelam.pretrain.train import pretrain, pretrain_profile
from edgelam.runs import read_metrics, read_summary


@pytest.fixture(scope="module")
def tiny_cfg(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return dataclasses.replace(pretrain_profile("tiny"), steps=6, checkpoint_every=2,
                               eval_every=3, cache_dir=str(cache))  # fmt: skip


@pytest.fixture(scope="module")
def full_run(tiny_cfg, tmp_path_factory):
    return pretrain(tiny_cfg, tmp_path_factory.mktemp("runs") / "full", progress=False,
                    command="edgelam pretrain --profile tiny")  # fmt: skip


def trained(run_dir) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]


def without_seconds(records):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def test_interrupted_pretraining_resumes_to_exactly_the_same_weights(tiny_cfg, full_run, tmp_path):
    cut = tmp_path / "cut"
    pretrain(tiny_cfg, cut, progress=False, stop_after=3, command="x")  # killed after step 3
    assert torch.load(cut / "checkpoints" / "last.pt", weights_only=True)["step"] == 2
    assert not (cut / "backbone.safetensors").exists()
    assert max(r["step"] for r in read_metrics(cut)) == 3
    pretrain(tiny_cfg, cut, progress=False, command="x")  # resumes from step 2, redoes step 3
    a, b = trained(full_run), trained(cut)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert without_seconds(read_metrics(cut)) == without_seconds(read_metrics(full_run))
    assert read_summary(cut)["sha256"] == read_summary(full_run)["sha256"]
    steps = [r["step"] for r in read_metrics(cut) if r["kind"] == "train"]
    assert steps == list(range(1, 7))
    with pytest.raises(ConfigError, match="config differs"):  # never resume another config
        pretrain(dataclasses.replace(tiny_cfg, lr=0.5), cut, progress=False)


def test_export_load_apply_restores_the_trained_weights(full_run):
    state, card = load_pretrained_backbone(full_run)
    weights = trained(full_run)
    main = {k.removeprefix("predictor.") for k in weights if not k.startswith("variants.")}
    assert set(state) == main  # the extra F's embedding and heads only served pre-training
    for name, value in state.items():
        key = name if name.startswith("reconstruction_head.") else f"predictor.{name}"
        assert torch.equal(value, weights[key]), name
    assert card["held_out_models"] == ["tdl-b"] and card["steps"] == 6
    assert {c["model"] for c in card["training_configs"]} == {"tdl-a", "tdl-c"}
    assert card["command"] == "edgelam pretrain --profile tiny"
    assert card["evaluation"]["held_out_nmse_db"] is not None and card["versions"]["torch"]
    assert set(card["keys"]) == {"backbone", "csi", "io", "reconstruction"}

    # a fresh LoRA predictor of the card's architecture: backbone + CSI branches load,
    # token embedding / head / time projection keep their init, LoRA stays an identity
    cfg = from_dict(LLM4CPConfig, {**card["model_config"], "trainable": "lora"})
    model, _ = build_llm4cp(cfg, seed=1)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    loaded = apply_pretrained(model, state, card)
    now = model.state_dict()
    assert torch.equal(now["backbone.h.0.attn.c_attn.base_layer.weight"],
                       state["backbone.h.0.attn.c_attn.weight"])  # fmt: skip
    for name in state:
        group = name.split(".")[0]
        if group in ("backbone", "patch_mix", "frequency_branch", "delay_branch"):
            if name != "backbone.wte.weight":
                target = name if name in now else name.replace(".weight", ".base_layer.weight")
                target = target if target in now else name.replace(".bias", ".base_layer.bias")
                assert torch.equal(now[target], state[name]) and target in loaded, name
        elif group in ("token_embedding", "head", "time_projection", "time_mix"):
            assert torch.equal(now[name], fresh[name]), name
    assert all(now[k].abs().max() == 0 for k in now if "lora_B" in k)
    assert model.backbone.build_info.pretrained
    assert "edgelam-wireless-backbone" in model.backbone.build_info.description

    # with the io group too, the predictor reproduces the trained one exactly
    full, _ = build_llm4cp(from_dict(LLM4CPConfig, card["model_config"]), seed=2)
    apply_pretrained(full, state, card, parts=("backbone", "csi", "io"))
    reference, _ = build_pretrain_model(
        from_dict(LLM4CPConfig, card["model_config"]), subcarrier_counts=(4, 8)
    )
    reference.load_state_dict(weights)
    x = torch.randn(5, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(full.eval()(x), reference.eval()(x))


def test_tampered_or_missing_files_are_refused_by_name(full_run, tmp_path):
    copy = tmp_path / "ckpt"
    copy.mkdir()
    for name in ("backbone.safetensors", "model_card.json"):
        shutil.copy(full_run / name, copy / name)
    card = json.loads((copy / "model_card.json").read_text())
    data = bytearray((copy / "backbone.safetensors").read_bytes())
    data[-5] ^= 0x01  # one bit of one weight
    (copy / "backbone.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=card["sha256"]) as err:
        load_pretrained_backbone(copy / "backbone.safetensors")
    assert "model_card.json" in str(err.value) and "does not match" in str(err.value)
    (copy / "model_card.json").unlink()
    with pytest.raises(FileNotFoundError, match="model_card.json"):
        load_pretrained_backbone(copy)
    with pytest.raises(FileNotFoundError, match="backbone.safetensors"):
        load_pretrained_backbone(tmp_path / "nowhere")


def test_architecture_mismatch_raises_naming_the_field(full_run):
    state, card = load_pretrained_backbone(full_run)
    base = card["model_config"]

    def build(**changes):
        data = {**base, **changes}
        data["backbone"] = {**base["backbone"], **changes.get("backbone", {})}
        return build_llm4cp(from_dict(LLM4CPConfig, data))[0]

    with pytest.raises(ConfigError, match="^res_dim: .* has res_dim=4, the model has res_dim=8"):
        apply_pretrained(build(res_dim=8), state, card)
    with pytest.raises(ConfigError, match="^backbone.d_model: "):
        apply_pretrained(build(backbone={"d_model": 32}), state, card)
    with pytest.raises(ConfigError, match="^backbone.n_positions: "):
        apply_pretrained(build(backbone={"n_positions": 32}), state, card)
    # the backbone and CSI branches are F-agnostic: they load into a model with another F ...
    other_f = build(num_subcarriers=12)
    apply_pretrained(other_f, state, card)
    assert torch.equal(other_f.state_dict()["frequency_branch.0.weight"],
                       state["frequency_branch.0.weight"])  # fmt: skip
    # ... but the F-specific embedding and head do not
    with pytest.raises(ConfigError, match="^num_subcarriers: "):
        apply_pretrained(other_f, state, card, parts=("io",))
    apply_pretrained(build(res_dim=8), state, card, parts=("backbone",))  # not needed: fine


def test_pretrain_command_runs_a_short_pretraining(tiny_cfg, tmp_path):
    out = tmp_path / "cli"
    args = ["--profile", "tiny", "--steps", "2", "--cache-dir", tiny_cfg.cache_dir,
            "--out", str(out), "--quiet"]  # fmt: skip
    result = CliRunner().invoke(pretrain_command, args)
    assert result.exit_code == 0, result.output
    assert "2 steps" in result.output and "backbone.safetensors" in result.output
    state, card = load_pretrained_backbone(out)
    assert card["steps"] == 2 and card["command"].startswith("edgelam pretrain --profile tiny")


def test_every_batch_holds_one_subcarrier_count_and_every_count_is_visited(tiny_cfg, full_run):
    from edgelam.pretrain.corpus import build_corpus, corpus_splits
    from edgelam.pretrain.train import _Batches

    files = build_corpus(tiny_cfg.corpus, tiny_cfg.cache_dir, progress=False)
    train, _ = corpus_splits(files, val_fraction=0.25)
    assert train.subcarrier_counts == [4, 8]
    groups = train.groups()
    batches = _Batches(train, 16, seed=0)
    assert batches.per_epoch == sum(max(1, len(g) // 16) for g in groups.values())
    widths = [batches(s)[0].shape[-1] for s in range(batches.per_epoch)]
    assert sorted(set(widths)) == [8, 16]  # 2F for F = 4 and 8
    for f, count in batches.per_group.items():
        assert widths.count(2 * f) == count
    again = _Batches(train, 16, seed=0)
    assert torch.equal(again(3)[0], batches(3)[0])  # a function of the step alone
    # the metrics hold one evaluation per F's files, and the export keeps only the main F
    card = json.loads((full_run / "model_card.json").read_text())
    assert card["architecture"]["num_subcarriers"] == 8
    assert {c["num_subcarriers"] for c in card["training_configs"]} == {4, 8}
