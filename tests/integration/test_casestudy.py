"""The case study end to end (tiny profile): files, finite curves, and exact resumption."""

import json
import math

import pytest

from edgelam.experiments.casestudy import profile_config, run_casestudy
from edgelam.runs import read_metrics, read_summary
from edgelam.training.fedavg import FedAvg


@pytest.fixture
def tiny(tmp_path):
    cfg = profile_config("tiny")
    cfg.cache_dir = str(tmp_path / "cache")
    return cfg


def test_tiny_case_study_writes_everything(tiny, tmp_path):
    out = run_casestudy(tiny, tmp_path / "run", progress=False)
    for name in ("config.json", "metrics.jsonl", "summary.json", "results.md", "fig4.png",
                 "nmse_vs_speed.png"):  # fmt: skip
        assert (out / name).is_file(), name
    summary = read_summary(out)
    methods = summary["methods"]
    expected = set(tiny.methods()) | set(tiny.classical)
    assert set(methods) == expected
    for m, r in methods.items():
        assert math.isfinite(r["nmse_db"]) and 0 < r["se_ratio"] <= 1 + 1e-9, m
    train = [r for r in read_metrics(out) if r["kind"] == "train"]
    for m in tiny.methods():
        losses = [r["train_loss"] for r in train if r["method"] == m]
        assert len(losses) == tiny.fed.rounds and all(math.isfinite(v) for v in losses)
    fed3 = methods["fedlam_n3"]
    assert fed3["uplink_bits"] == 3 * tiny.fed.rounds * fed3["trainable_params"] * 32
    assert methods["local_llm4cp"]["uplink_bits"] == 0
    assert "findings" in summary and "| federated LAM, N=3 |" in (out / "results.md").read_text()


def test_interrupted_case_study_resumes_to_the_same_numbers(tiny, tmp_path, monkeypatch):
    reference = read_summary(run_casestudy(tiny, tmp_path / "ref", progress=False))
    calls = {"n": 0}
    original = FedAvg.run_round

    def crash(self):
        calls["n"] += 1
        if calls["n"] == 8:  # inside the third method
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(FedAvg, "run_round", crash)
    with pytest.raises(KeyboardInterrupt):
        run_casestudy(tiny, tmp_path / "run", progress=False)
    monkeypatch.setattr(FedAvg, "run_round", original)
    resumed = read_summary(run_casestudy(tiny, tmp_path / "run", progress=False))
    for m, r in reference["methods"].items():
        for key in ("nmse_db", "final_train_loss", "se_ratio", "uplink_bits"):
            a, b = r[key], resumed["methods"][m][key]
            assert (a is None and b is None) or abs(a - b) <= 1e-6 * max(1.0, abs(a)), (m, key)
    rounds = [
        (r["method"], r["round"]) for r in read_metrics(tmp_path / "run") if r["kind"] == "train"
    ]
    assert len(rounds) == len(set(rounds))  # no duplicated records after resuming
    cfg_changed = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg_changed["config"]["profile"] == "tiny"
