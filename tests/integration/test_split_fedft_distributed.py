"""Split FedFT on torch.distributed (1 server + 2 device processes, gloo) == the in-process run."""

import json

import pytest
import torch
from safetensors.torch import load_file

from edgelam.config import ConfigError, from_dict
from edgelam.distributed.dist_transport import SplitFedFTJob, launch, main, run_split_fedft
from edgelam.runs import read_metrics, read_summary
from edgelam.training.split_fedft import InProcessLink

TINY_LLM4CP = {
    "history_slots": 4, "future_slots": 2, "num_subcarriers": 8, "patch_size": 2, "res_dim": 4,
    "res_layers": 1, "dropout": 0.1, "trainable": "lora", "lora_rank": 2,
    "backbone": {"name": "custom", "num_layers": 2, "d_model": 16, "n_head": 2, "n_positions": 8},
}  # fmt: skip

JOBS = {
    # dropout on (device and server), fp16 links, embedding gradients, device sync every 2
    "llm4cp": {"model": "llm4cp", "llm4cp": TINY_LLM4CP, "samples_per_device": [12, 20],
               "split_fedft": {"iterations": 3, "batch_size": 8, "embedding_grad": True,
                               "device_sync_every": 2, "quantization": "fp16"}},
    # one device scheduled per iteration by the server, int8 links
    "gpt2-lm": {"model": "gpt2-lm", "samples_per_device": [16, 24], "devices_per_iteration": 1,
                "gpt2_lm": {"vocab_size": 24, "d_model": 16, "sequence_length": 8, "dropout": 0.1},
                "split_fedft": {"iterations": 3, "batch_size": 8, "quantization": "int8",
                                "seed": 3}},
    # differential privacy: whole-sample clip + noise, Poisson batches, dropout on
    "llm4cp-private": {"model": "llm4cp", "samples_per_device": [12, 20],
                       "llm4cp": TINY_LLM4CP | {"normalization": "sample"},
                       "split_fedft": {"iterations": 3, "batch_size": 8, "device_sync_every": 0,
                                       "privacy": {"enabled": True, "noise_multiplier": 0.5,
                                                   "clip_norm": 0.05, "clip_embeddings": True,
                                                   "embedding_clip_norm": 2.0,
                                                   "sampling": "poisson"}}},
}  # fmt: skip


def _approx(value):
    return None if value is None else pytest.approx(value, rel=1e-6)


def _assert_same_record(got, want):
    """Losses equal to 1e-6 relative; schedule, weights, bits and FLOPs exactly."""
    got = {k: v for k, v in got.items() if k != "wall_seconds"}
    want = json.loads(json.dumps({k: v for k, v in want.items() if k != "wall_seconds"}))
    assert got.pop("loss") == _approx(want.pop("loss"))
    for row, ref in zip(got.pop("devices"), want.pop("devices"), strict=True):
        assert row.pop("loss") == _approx(ref.pop("loss"))
        assert row == ref
    assert got == want


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(JOBS))
def test_distributed_run_equals_in_process_run(name, tmp_path, one_thread):
    config = tmp_path / "job.json"
    config.write_text(json.dumps(JOBS[name]))
    out = tmp_path / "run"
    launch(3, ["--config", str(config), "--out", str(out)], timeout=120)

    local = run_split_fedft(from_dict(SplitFedFTJob, JOBS[name]))
    records = read_metrics(out)
    assert [r["iteration"] for r in records] == [0, 1, 2]
    for got, want in zip(records, local["records"], strict=True):
        _assert_same_record(got, want)
    lora = load_file(out / "lora.safetensors")
    assert lora.keys() == local["lora"].keys() and lora
    for n, value in local["lora"].items():
        torch.testing.assert_close(lora[n], value, rtol=1e-6, atol=1e-7)
    devices = load_file(out / "device_modules.safetensors")
    for k, state in local["device_states"].items():
        for n, value in state.items():
            torch.testing.assert_close(devices[f"device{k}.{n}"], value, rtol=1e-6, atol=1e-7)
    assert json.loads((out / "transfers.json").read_text()) == local["transfers"]
    summary = read_summary(out)
    assert summary["runtime"] == "TorchDistributedLink" and summary["processes"] == 3
    if name == "llm4cp-private":  # the same epsilons; the summary has the final (eps, delta)
        assert [r["epsilon"] for r in records] == [r["epsilon"] for r in local["records"]]
        assert records[0]["epsilon"] < records[-1]["epsilon"] == summary["epsilon"]
        assert summary["delta"] == 1e-5 and summary["privacy"]["epsilon_per_device"] == [
            row["epsilon"] for row in records[-1]["devices"]
        ]
    else:
        assert summary["epsilon"] is None and summary["privacy"] is None
    if name == "gpt2-lm":
        assert all(len(r["scheduled"]) == 1 for r in records)
        assert len({r["scheduled"][0] for r in records}) == 2  # both devices were drawn


def test_device_count_must_match_the_runtime():
    job = from_dict(SplitFedFTJob, JOBS["gpt2-lm"])
    with pytest.raises(ConfigError, match="--nproc-per-node 3"):
        run_split_fedft(job, InProcessLink(3))


def test_entry_point_reports_a_bad_config_without_a_traceback(tmp_path, capsys):
    config = tmp_path / "job.toml"
    config.write_text('model = "gpt3"\n')
    assert main(["--config", str(config), "--out", str(tmp_path / "run")]) == 2
    assert "model: 'gpt3' is not one of ['llm4cp', 'gpt2-lm']" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
