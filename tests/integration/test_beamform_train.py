"""`edgelam beamform train` end to end on a tiny config: run files, checkpoint, eval, resume."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from edgelam.airinterface.beamforming.graph_lam_command import beamform_train_command
from edgelam.config import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = """
steps = 4
groups = 2
batch_size = 8
users = [2, 3]
antennas = [4]
val_every = 2
val_samples = 4
checkpoint_every = 2
eval_users = [2, 5]
eval_antennas = [4, 6]
eval_samples = 8
wmmse_max_iter = 30

[model]
hidden = 16
gnn_layers = 1
lora_rank = 2

[model.backbone]
num_layers = 1
"""


def test_beamform_train_writes_a_run_that_beamform_eval_can_use(tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    out = tmp_path / "run"
    runner = CliRunner()
    result = runner.invoke(
        beamform_train_command, ["--config", str(config), "--out", str(out), "-q", "--seed", "3"]
    )
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "of WMMSE sum rate" in result.output and "unseen sizes" in result.output
    for name in ("config.json", "metrics.jsonl", "summary.json", "sum_rate_vs_size.png"):
        assert (out / name).is_file(), name
    for name in ("model.safetensors", "graph_lam.json", "train_state.pt"):
        assert (out / "checkpoint" / name).is_file(), name
    stored = json.loads((out / "config.json").read_text())["config"]
    assert stored["seed"] == 3 and stored["model"]["hidden"] == 16  # file + flag resolved
    assert stored["model"]["backbone"]["pretrained"] == "edgelam-wireless"  # default kept
    kinds = [json.loads(line)["kind"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert kinds.count("train") == 4 and kinds.count("val") == 2 and kinds.count("eval") == 4
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"]["pretrained"] and 0 < summary["unseen_pct_of_wmmse"] < 110

    # the checkpoint serves `edgelam beamform eval --method graph-lam`
    from edgelam.airinterface.beamforming.command import evaluate

    H = torch.randn(6, 3, 5, dtype=torch.complex64)
    report = evaluate("graph-lam", H, power=2.0, snr_db=10.0, checkpoint=out)
    assert report["sum_rate_bps_hz"] > 0 and report["power_used"] == pytest.approx(2.0, rel=1e-5)

    # running the same command again reports the finished run without training
    again = runner.invoke(beamform_train_command, ["--config", str(config), "--out", str(out),
                                                   "-q", "--seed", "3"])  # fmt: skip
    assert again.exit_code == 0 and again.output == result.output
    # another config in the same directory is refused, naming the way out
    other = runner.invoke(beamform_train_command, ["--config", str(config), "--out", str(out),
                                                   "-q", "--seed", "4"])  # fmt: skip
    assert isinstance(other.exception, ConfigError) and "--overwrite" in str(other.exception)
    bad = runner.invoke(beamform_train_command, ["--out", str(tmp_path / "x"), "--channel-models",
                                                 "cdl-z"])  # fmt: skip
    assert isinstance(bad.exception, ConfigError) and "channel_models" in str(bad.exception)
