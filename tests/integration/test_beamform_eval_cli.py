"""``edgelam beamform eval`` through click, with the ``edgelam`` group's error handling."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest
import rich_click as click
import torch
from click.testing import CliRunner

from edgelam.airinterface.beamforming.channels import channel_set, save_channels_npy
from edgelam.airinterface.beamforming.command import beamform_group
from edgelam.cli import Group

REQUIRED = ("sum_rate_bps_hz", "sum_rate_std", "time_s", "method", "users", "antennas", "snr_db",
            "batch")  # fmt: skip


@click.group(cls=Group)
def edgelam() -> None:
    """The ``edgelam`` group as cli.py builds it (prints user errors as one line, exit 2)."""


edgelam.add_command(beamform_group)


def run(*args: str, ok: bool = True):
    result = CliRunner().invoke(edgelam, ["beamform", "eval", *args])
    if ok and result.exit_code != 0:
        raise AssertionError(result.output + repr(result.exception))
    return result


def run_json(*args: str) -> dict:
    return json.loads(run(*args, "--json").output)


@pytest.mark.parametrize("method", ["wmmse", "zf", "rzf", "mrt"])
def test_json_has_the_required_keys_and_rates_rank_as_expected(method):
    out = run_json("--users", "3", "--antennas", "4", "--snr-db", "10", "--method", method,
                   "--batch", "32", "--seed", "1")  # fmt: skip
    assert set(REQUIRED) <= set(out)
    assert (out["method"], out["users"], out["antennas"], out["batch"]) == (method, 3, 4, 32)
    assert out["power_used"] == pytest.approx(1.0, rel=1e-5)
    assert out["sum_rate_bps_hz"] > 0 and out["sum_rate_std"] > 0 and out["time_s"] >= 0
    if method == "wmmse":
        assert out["iterations_mean"] >= 1 and out["converged_fraction"] == 1.0
        best = max(run_json("--users", "3", "--antennas", "4", "--method", m, "--batch", "32",
                            "--seed", "1")["sum_rate_bps_hz"] for m in ("zf", "rzf", "mrt"))  # fmt: skip
        assert out["sum_rate_bps_hz"] > best


def test_channels_file_sets_k_and_m_and_conflicts_are_errors(tmp_path):
    path = save_channels_npy(tmp_path / "h.npy", channel_set("rayleigh", 10, 2, 3, seed=0))
    out = run_json("--channels", str(path), "--method", "zf", "--snr-db", "20")
    assert (out["users"], out["antennas"], out["batch"]) == (2, 3, 10)
    assert run_json("--channels", str(path), "--batch", "4")["batch"] == 4
    bad = run("--channels", str(path), "--users", "4", ok=False)
    assert bad.exit_code == 2 and "--users: 4 conflicts with" in bad.output
    bad = run("--channels", str(path), "--channel-model", "uma", ok=False)
    assert bad.exit_code == 2 and "--channel-model" in bad.output


def test_bad_channel_file_and_missing_checkpoint_print_one_line(tmp_path):
    path = tmp_path / "bad.npy"
    np.save(path, np.zeros((2, 3, 4), dtype=np.float32))
    bad = run("--channels", str(path), ok=False)
    assert bad.exit_code == 2 and "dtype float32" in bad.output and "Traceback" not in bad.output
    missing = run("--channels", str(tmp_path / "none.npy"), ok=False)
    assert missing.exit_code == 2 and "channel file not found" in missing.output
    no_ckpt = run("--method", "graph-lam", ok=False)
    assert no_ckpt.exit_code == 2 and "--checkpoint: required" in no_ckpt.output
    assert run("--method", "zf", "--users", "5", "--antennas", "4", ok=False).exit_code == 2


def test_graph_lam_uses_load_precoder_from_the_checkpoint(tmp_path, monkeypatch):
    calls = []

    def load_precoder(path):
        calls.append(path)
        from edgelam.airinterface.beamforming.baselines import zero_forcing

        return lambda H, power, noise_power: zero_forcing(H, power)

    fake = types.ModuleType("edgelam.airinterface.beamforming.graph_lam")
    fake.load_precoder = load_precoder
    monkeypatch.setitem(sys.modules, "edgelam.airinterface.beamforming.graph_lam", fake)
    ckpt = tmp_path / "g.pt"
    out = run_json("--method", "graph-lam", "--checkpoint", str(ckpt), "--batch", "16")
    zf = run_json("--method", "zf", "--batch", "16")
    assert calls == [ckpt] and out["sum_rate_bps_hz"] == pytest.approx(zf["sum_rate_bps_hz"])


def test_table_output_and_imperfect_csi():
    text = run("--method", "wmmse", "--batch", "8").output
    assert "sum rate" in text and "WMMSE iterations" in text
    perfect = run_json("--method", "zf", "--batch", "64", "--snr-db", "20")
    noisy = run_json("--method", "zf", "--batch", "64", "--snr-db", "20", "--pilot-snr-db", "0",
                     "--estimator", "ls")  # fmt: skip
    assert noisy["sum_rate_bps_hz"] < 0.8 * perfect["sum_rate_bps_hz"]
    assert noisy["csi"] == "LS estimate, pilot SNR 0 dB"
    torch.manual_seed(1234)  # results depend on --seed only, not on the global RNG
    again = run_json("--method", "zf", "--batch", "64", "--snr-db", "20", "--pilot-snr-db", "0",
                     "--estimator", "ls")  # fmt: skip
    assert again["sum_rate_bps_hz"] == noisy["sum_rate_bps_hz"]
