"""Looped TP on torch.distributed (1 server + 3 device processes, gloo) == the in-process run."""

import json

import pytest
import torch
from safetensors.torch import load_file

from edgelam.config import to_dict
from edgelam.runs import read_metrics, read_summary
from edgelam.training.looped_tp.run import launch, main
from edgelam.training.looped_tp.train import looped_tp_profile, train_looped_tp


def _without_wall_clock(records):
    return [{k: v for k, v in r.items() if k != "wall_seconds"} for r in records]


@pytest.mark.slow
def test_distributed_run_equals_in_process_run(tmp_path, one_thread):
    cfg = looped_tp_profile("tiny")  # K = 3 devices, L = 3, optimal (unequal) partition
    cfg.cache_dir = str(tmp_path / "cache")
    local = train_looped_tp(cfg, tmp_path / "local", progress=False)  # also builds the corpus
    job = tmp_path / "job.json"
    job.write_text(json.dumps(to_dict(cfg)))
    out = tmp_path / "dist"
    launch(cfg.devices + 1, ["--config", str(job), "--out", str(out)], timeout=150)

    got, want = read_metrics(out), read_metrics(local)
    assert [r["kind"] for r in got] == [r["kind"] for r in want] and len(got) == 14
    for g, w in zip(_without_wall_clock(got), _without_wall_clock(want), strict=True):
        for key in ("loss", "val_loss"):
            if key in w:
                assert g.pop(key) == pytest.approx(w.pop(key), rel=1e-6)
        assert g == w  # bits per device and payload, simulated latency, lr: exactly
    a, b = load_file(out / "model.safetensors"), load_file(local / "model.safetensors")
    assert a.keys() == b.keys()
    for name, value in b.items():  # the weights after 12 AdamW steps: the gradients agreed
        torch.testing.assert_close(a[name], value, rtol=1e-6, atol=1e-8)
    s_dist, s_local = read_summary(out), read_summary(local)
    assert (s_dist["runtime"], s_dist["processes"]) == ("TorchDistTPLink", 4)
    assert s_dist["plan"] == s_local["plan"] and len(set(s_dist["plan"]["partition"]["heads"])) > 1
    assert s_dist["memory"]["devices"] == s_local["memory"]["devices"]  # measured in each process
    for dev in s_dist["memory"]["devices"]:
        assert dev["measured"] == dev["model"]


def test_entry_point_reports_a_bad_config_without_a_traceback(tmp_path, capsys):
    config = tmp_path / "job.toml"
    config.write_text('partition = "random"\n')
    assert main(["--config", str(config), "--out", str(tmp_path / "run")]) == 2
    assert "partition: 'random' is not one of" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
