import json

import pytest

from edgelam.runs import RunDir, read_config, read_metrics, read_summary


def test_run_directory_roundtrip(tmp_path):
    run = RunDir.create(tmp_path / "r", {"a": 1, "t": (1, 2)})
    for i in range(3):
        run.log({"round": i, "loss": 1.0 / (i + 1), "nan": float("nan")})
    run.write_summary({"best": 0.25})
    assert read_config(run.path) == {"a": 1, "t": [1, 2]}
    assert [m["round"] for m in read_metrics(run.path)] == [0, 1, 2]
    assert read_metrics(run.path)[0]["nan"] is None
    assert read_summary(run.path) == {"best": 0.25}
    stored = json.loads((run.path / "config.json").read_text())
    assert "torch" in stored["versions"]


def test_never_clobbers_and_resumes_only_same_config(tmp_path):
    RunDir.create(tmp_path / "r", {"a": 1}).log({"x": 1})
    with pytest.raises(FileExistsError):
        RunDir.create(tmp_path / "r", {"a": 1})
    assert len(read_metrics(RunDir.create(tmp_path / "r", {"a": 1}, resume=True).path)) == 1
    with pytest.raises(ValueError, match="config differs"):
        RunDir.create(tmp_path / "r", {"a": 2}, resume=True)
    RunDir.create(tmp_path / "r", {"a": 2}, overwrite=True)
    assert read_metrics(tmp_path / "r") == []


def test_torn_last_line_skipped_but_corruption_reported(tmp_path):
    run = RunDir.create(tmp_path / "r", {})
    run.log({"x": 1})
    with open(run.path / "metrics.jsonl", "a") as fh:
        fh.write('{"x": 2, "y"')
    assert read_metrics(run.path) == [{"x": 1}]
    (run.path / "metrics.jsonl").write_text('{"x": 1}\nnot json\n{"x": 3}\n')
    with pytest.raises(ValueError, match="corrupted metrics line"):
        read_metrics(run.path)
    with pytest.raises(FileNotFoundError, match="not finished"):
        read_summary(run.path)
