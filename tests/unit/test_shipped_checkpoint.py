"""The pre-trained wireless backbone shipped with the package: integrity, architecture, use."""

import dataclasses
import json

import pytest
import torch

from edgelam.experiments.casestudy import profile_config, resolve_backbone
from edgelam.models import build_predictor
from edgelam.models.pretrained import (
    CARD_FILE,
    WEIGHTS_FILE,
    architecture_of,
    file_sha256,
    load_pretrained_backbone,
    shipped_checkpoint_dir,
)

SHIPPED = shipped_checkpoint_dir()


def test_shipped_checkpoint_matches_its_card():
    card = json.loads((SHIPPED / CARD_FILE).read_text())
    assert file_sha256(SHIPPED / WEIGHTS_FILE) == card["sha256"]
    assert (SHIPPED / WEIGHTS_FILE).stat().st_size == card["bytes"] <= 20 * 2**20
    state, loaded_card = load_pretrained_backbone(SHIPPED)
    assert loaded_card["architecture"] == card["architecture"]
    assert card["steps"] > 0 and card["held_out_models"] == ["cdl-b", "umi"]
    assert card["data"]["train_files"] and card["data"]["held_out_files"]


def test_case_study_builds_the_lam_from_the_shipped_backbone():
    cfg = resolve_backbone(profile_config("quick"))
    assert cfg.backbone == "edgelam-wireless"
    assert cfg.llm4cp.backbone.pretrained == "edgelam-wireless"
    model, info = build_predictor("llm4cp", cfg.llm4cp, seed=0)
    state, card = load_pretrained_backbone(SHIPPED)
    assert architecture_of(model) == card["architecture"]
    assert info["pretrained"] is True and "edgelam-wireless" in info["backbone"]
    own = dict(model.named_parameters())
    w = state["backbone.h.0.mlp.c_fc.weight"]
    loaded = own.get(
        "backbone.h.0.mlp.c_fc.weight", own.get("backbone.h.0.mlp.c_fc.base_layer.weight")
    )
    torch.testing.assert_close(loaded, w, rtol=0, atol=0)
    torch.testing.assert_close(
        own["frequency_branch.0.weight"], state["frequency_branch.0.weight"], rtol=0, atol=0
    )
    random_cfg = resolve_backbone(dataclasses.replace(profile_config("quick"), backbone="random"))
    random_model, random_info = build_predictor("llm4cp", random_cfg.llm4cp, seed=0)
    assert random_info["pretrained"] is False
    assert architecture_of(random_model) == architecture_of(model)  # same LAM, other weights
    random_branch = dict(random_model.named_parameters())["frequency_branch.0.weight"]
    assert not torch.equal(random_branch, state["frequency_branch.0.weight"])


@pytest.mark.parametrize("steps", [2])
def test_pretrain_command_reruns(tmp_path, steps):
    from click.testing import CliRunner

    from edgelam.cli import cli

    args = ["pretrain", "--profile", "tiny", "--steps", str(steps), "--cache-dir",
            str(tmp_path / "corpus"), "--out", str(tmp_path / "run"), "-q"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    state, card = load_pretrained_backbone(tmp_path / "run")
    assert card["steps"] == steps
