"""The edgelam command line, run as a user would."""

import json
import subprocess
import sys

from edgelam.runs import read_metrics, read_summary


def edgelam(*args, check=True):
    proc = subprocess.run(
        [sys.executable, "-m", "edgelam.cli", *args], capture_output=True, text=True
    )
    if check and proc.returncode != 0:
        raise AssertionError(proc.stderr + proc.stdout)
    return proc


def test_version_and_help():
    assert "edgelam" in edgelam("--version").stdout
    help_text = edgelam("channels", "generate", "--help").stdout
    for flag in ("--model", "--samples", "--speed-kmh", "--seed", "--duplex", "--config", "--out"):
        assert flag in help_text


def test_generate_info_and_errors(tmp_path):
    out = tmp_path / "d.h5"
    edgelam("channels", "generate", "--model", "cdl-c", "--samples", "6", "--speed-kmh", "10", "100",
            "--seed", "0", "--num-subcarriers", "4", "--bs-rows", "1", "--bs-cols", "1",
            "--out", str(out), "-q")  # fmt: skip
    info = json.loads(edgelam("channels", "info", str(out), "--json").stdout)
    assert info["shape"]["csi"] == [6, 20, 4, 2]
    assert info["config"]["model"] == "cdl-c"
    assert sum(info["speed_kmh"]["histogram"]["counts"]) == 6
    assert 10 <= info["speed_kmh"]["min"] <= info["speed_kmh"]["max"] <= 100
    assert "speed histogram" in edgelam("channels", "info", str(out)).stdout
    again = edgelam("channels", "generate", "--model", "cdl-c", "--out", str(out), check=False)
    assert again.returncode == 2 and "exists" in again.stderr
    cfg_file = tmp_path / "bad.toml"
    cfg_file.write_text("speedkmh = [1, 2]\n")
    bad = edgelam(
        "channels",
        "generate",
        "--config",
        str(cfg_file),
        "--out",
        str(tmp_path / "x.h5"),
        check=False,
    )
    assert bad.returncode == 2 and "unknown field 'speedkmh'" in bad.stderr
    assert "Traceback" not in bad.stderr
    missing = edgelam("channels", "info", str(tmp_path / "nope.h5"), check=False)
    assert missing.returncode == 2 and "no such CSI dataset" in missing.stderr


def test_config_file_then_flag_override(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(
        "model: tdl-a\nnum_samples: 3\nnum_subcarriers: 2\nbs_rows: 1\nbs_cols: 1\nseed: 4\n"
    )
    out = tmp_path / "d.h5"
    edgelam(
        "channels", "generate", "--config", str(cfg_file), "--seed", "7", "--out", str(out), "-q"
    )
    info = json.loads(edgelam("channels", "info", str(out), "--json").stdout)
    assert info["config"]["seed"] == 7 and info["config"]["model"] == "tdl-a"


def test_channels_demo_writes_a_run_directory(tmp_path):
    run = tmp_path / "demo"
    edgelam("channels", "demo", "--models", "tdl-a", "--num-samples", "8", "--check-samples", "64",
            "--check-slots", "20", "--out", str(run), "-q")  # fmt: skip
    summary = read_summary(run)
    assert summary["models"]["tdl-a"]["j0_max_abs_error"]["30"] < 0.1
    kinds = [m["kind"] for m in read_metrics(run)]
    assert kinds == ["generation", "autocorrelation", "autocorrelation"]
    for name in ("config.json", "autocorrelation.png", "csi_examples.png", "data/tdl-a.h5"):
        assert (run / name).is_file(), name
