"""Wireless split FedFT vs. FedAvg (tiny profile): files, bit conservation, latency, memory, CLI."""

import dataclasses
import json
import math

import pytest
from click.testing import CliRunner

from edgelam.cli import cli
from edgelam.config import ConfigError, from_dict
from edgelam.experiments.wireless_training import run_wireless_training, wireless_profile
from edgelam.experiments.wireless_training_report import COMPARISON_RUNS
from edgelam.network import Network, NetworkConfig
from edgelam.runs import read_config, read_metrics, read_summary
from edgelam.training.privacy.analysis import epsilon
from edgelam.training.privacy.config import PrivacyConfig

SUMMARY_KEYS = (
    "uplink_bits", "downlink_bits", "simulated_time_s", "energy_j", "final_train_loss",
    "test_nmse_db", "device_memory_bytes", "time_to_target_s", "bits_to_target",
    "energy_j_per_device", "final_val_nmse", "ledger", "lyapunov",
)  # fmt: skip


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("csi"))


@pytest.fixture(scope="module")
def compare(tmp_path_factory, cache, one_thread):
    """``edgelam train compare --profile tiny``: every scheme and policy, once per module."""
    out = tmp_path_factory.mktemp("runs") / "compare"
    args = ["train", "compare", "--profile", "tiny", "--cache-dir", cache, "--out", str(out), "-q"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    return out, result.output


def rounds(path):
    return [r for r in read_metrics(path) if r["kind"] == "round"]


def tiny(cache, scheme, **allocation):
    cfg = wireless_profile("tiny", scheme)
    alloc = dataclasses.replace(cfg.allocation, **allocation)
    return dataclasses.replace(cfg, cache_dir=cache, allocation=alloc)


def test_compare_writes_every_run_the_comparison_and_plots(compare):
    out, output = compare
    assert "| split FedFT, latency-optimal split |" in output and "loss_vs_bits.png" in output
    for name, (scheme, policy) in COMPARISON_RUNS.items():
        summary = read_summary(out / name)
        assert set(SUMMARY_KEYS) <= set(summary), name
        assert (summary["scheme"], summary["policy"]) == (scheme, policy)
        assert summary["rounds"] == 4 // summary["local_steps_per_round"]
        assert (summary["lyapunov"] is not None) == (policy == "lyapunov")
    for plot in ("loss_vs_time.png", "loss_vs_bits.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", plot
        assert (out / plot).stat().st_size > 10_000, plot
    comparison = json.loads((out / "comparison.json").read_text())
    assert set(comparison["runs"]) == set(COMPARISON_RUNS)
    assert comparison["runs"]["fedavg-lora"]["test_nmse_db"] == pytest.approx(
        read_summary(out / "fedavg-lora")["test_nmse_db"]
    )


def test_bits_are_conserved_and_match_the_payloads(compare):
    out, _ = compare
    for name in COMPARISON_RUNS:
        s, recs = read_summary(out / name), rounds(out / name)
        for d in ("uplink", "downlink"):
            total = sum(r[f"{d}_bits"] for r in recs)
            assert s[f"{d}_bits"] == total == s["ledger"][f"{d}_bits"] > 0, (name, d)
            for r in recs:
                per_device = sum(r[f"{d}_bits_per_device"])
                per_device += sum(r.get(f"sync_{d}_bits_per_device", [0]))
                assert per_device == r[f"{d}_bits"], (name, d, r["round"])
        assert recs[-1]["cumulative_bits"] == s["uplink_bits"] + s["downlink_bits"]
    # FedAvg: each participant sends its trainable state up and gets the global one (unicast)
    for name in ("fedavg-full", "fedavg-lora"):
        params = read_summary(out / name)["model"]["trainable_params"]
        for r in rounds(out / name):
            assert r["uplink_bits_per_device"] == [32 * params] * 3
            assert r["downlink_bits_per_device"] == [32 * params] * 3
    # split FedFT: embeddings and Jacobians up, representations and embedding grads down,
    # each [B, L_h, d] fp32 per device and iteration
    cfg = wireless_profile("tiny")
    elements = cfg.batch_size * cfg.llm4cp.history_slots * cfg.llm4cp.backbone.d_model
    for r in rounds(out / "split-fedft-optimal"):
        assert r["uplink_bits_per_device"] == [2 * 32 * elements] * 3
        assert r["downlink_bits_per_device"] == [2 * 32 * elements] * 3
        assert ("sync_uplink_bits_per_device" in r) == (r["iteration"] % 2 == 0)


def test_round_latency_is_the_slowest_completion_and_time_adds_up(compare):
    out, _ = compare
    for name in COMPARISON_RUNS:
        elapsed = 0.0
        for r in rounds(out / name):
            phases = r["phases"].values()
            for a in phases:
                done = [
                    t for t, s in zip(a["completion_seconds"], a["scheduled"], strict=True) if s
                ]
                assert a["latency_s"] == pytest.approx(max(done), rel=1e-12), name
                assert sum(a["bandwidth_hz"]) <= 3e6 * (1 + 1e-9)  # K x 1 MHz uplink band
            assert r["latency_s"] == pytest.approx(sum(a["latency_s"] for a in phases))
            energy = [sum(e) for e in zip(*(a["energy_j"] for a in phases), strict=True)]
            assert r["energy_j"] == pytest.approx(energy) and r["energy_total_j"] > 0
            elapsed += r["latency_s"]
            assert r["simulated_time_s"] == pytest.approx(elapsed, rel=1e-12)
        s = read_summary(out / name)
        assert s["simulated_time_s"] == pytest.approx(elapsed, rel=1e-12)
        assert s["energy_j"] == pytest.approx(sum(r["energy_total_j"] for r in rounds(out / name)))


def test_optimal_split_is_never_slower_than_the_equal_split(compare):
    out, _ = compare
    equal, optimal = rounds(out / "split-fedft-equal"), rounds(out / "split-fedft-optimal")
    for e, o in zip(equal, optimal, strict=True):
        assert o["train_loss"] == e["train_loss"]  # the same training, only the band differs
        assert o["uplink_bits_per_device"] == e["uplink_bits_per_device"]
        assert o["latency_s"] <= e["latency_s"] * (1 + 1e-12)
        assert set(e["phases"]["train"]["bandwidth_hz"]) == {1e6}  # B_tot / K each
    saving = json.loads((out / "comparison.json").read_text())["latency_saving_optimal_vs_equal"]
    assert saving["saved_s"] > 0 and saving["rounds_optimal_not_slower"] == len(equal)


def test_device_memory_split_below_fedavg_lora_below_fedavg_full(compare):
    out, _ = compare
    memory = {n: read_summary(out / n)["device_memory_bytes"] for n in COMPARISON_RUNS}
    assert memory["split-fedft-optimal"] < memory["fedavg-lora"] < memory["fedavg-full"]
    split = read_summary(out / "split-fedft-optimal")
    assert split["server"]["parameter_bytes"] > split["device_memory"]["parameter_bytes"]


@pytest.mark.parametrize("scheme", ["split-fedft", "fedavg-lora"])
def test_lyapunov_scheduler_decides_who_takes_part(scheme, cache, tmp_path, one_thread):
    # a tiny V and no energy allowance: the queues soon make the scheduler drop devices
    cfg = tiny(cache, scheme, policy="lyapunov", lyapunov_v=1e-7, energy_budget_j=1e-4)
    cfg = dataclasses.replace(cfg, iterations=8)
    out = run_wireless_training(cfg, tmp_path / "run", progress=False)
    recs, s = rounds(out), read_summary(out)
    assert any(len(r["scheduled"]) < 3 for r in recs)
    for r in recs:
        mask = r["phases"]["train"]["scheduled"]
        assert r["scheduled"] == [k for k in range(3) if mask[k]]
        for k in range(3):
            if not mask[k]:
                assert r["uplink_bits_per_device"][k] == r["bandwidth_hz"][k] == 0
        assert len(r["virtual_queue"]) == 3
    ly = s["lyapunov"]
    average = [sum(r["energy_j"][k] for r in recs) / len(recs) for k in range(3)]
    assert ly["average_energy_j"] == pytest.approx(average)
    assert ly["all_budgets_met"] == all(a <= 1e-4 for a in average)
    assert s["participation"] == [sum(k in r["scheduled"] for r in recs) / len(recs)
                                  for k in range(3)]  # fmt: skip


def test_train_commands_resume_and_refuse_another_config(cache, tmp_path, one_thread):
    runner = CliRunner()
    base = ["--profile", "tiny", "--cache-dir", cache, "-q"]
    split = runner.invoke(cli, ["train", "split-fedft", *base, "--out", str(tmp_path / "s")])
    assert split.exit_code == 0, split.output
    assert "split-fedft (latency_optimal, 3 devices, 4 local iterations)" in split.output
    full = runner.invoke(
        cli, ["train", "fedavg", "--variant", "full", *base, "--out", str(tmp_path / "f")]
    )
    assert full.exit_code == 0, full.output
    assert read_summary(tmp_path / "f")["scheme"] == "fedavg-full"
    metrics = (tmp_path / "s" / "metrics.jsonl").read_text()
    again = runner.invoke(cli, ["train", "split-fedft", *base, "--out", str(tmp_path / "s")])
    assert again.exit_code == 0 and (tmp_path / "s" / "metrics.jsonl").read_text() == metrics
    other = runner.invoke(cli, ["train", "split-fedft", *base, "--seed", "1",
                                "--out", str(tmp_path / "s")])  # fmt: skip
    assert other.exit_code == 2


PRIVATE = """
iterations = 6
analog_power = "matched"
[llm4cp]
normalization = "sample"
[split_fedft]
device_sync_every = 0
[split_fedft.privacy]
enabled = true
target_epsilon = 4.0
clip_embeddings = true
clip_norm = 0.05
embedding_clip_norm = 2.0
uplink = "analog"
"""


@pytest.fixture(scope="module")
def private_run(tmp_path_factory, cache, one_thread):
    """``edgelam train split-fedft --profile tiny`` with the ``[split_fedft.privacy]`` above:
    whole-sample DP at epsilon 4 over the analog uplink at matched power, 6 iterations."""
    path = tmp_path_factory.mktemp("private")
    (path / "private.toml").write_text(PRIVATE)
    args = ["train", "split-fedft", "--profile", "tiny", "--cache-dir", cache, "-q",
            "--config", str(path / "private.toml"), "--out", str(path / "run")]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "privacy: epsilon = " in result.output
    return path / "run"


def test_private_run_reports_an_epsilon_that_grows_as_the_accountant_says(private_run):
    s, recs = read_summary(private_run), rounds(private_run)
    p = s["privacy"]
    assert s["epsilon"] == p["epsilon"] == recs[-1]["epsilon"] and s["delta"] == 1e-5
    assert 0 < s["epsilon"] <= 4.0 * (1 + 1e-6)  # calibrated to the target over 6 iterations
    assert p["epsilon_per_device"] == recs[-1]["epsilon_per_device"]
    assert s["epsilon"] == max(p["epsilon_per_device"])
    epsilons = [r["epsilon"] for r in recs]
    assert all(b > a for a, b in zip(epsilons, epsilons[1:], strict=False)), epsilons
    # every device took part in every round: its epsilon is that of t identical subsampled
    # Gaussian steps (sigma / (2 sqrt 2), embeddings and Jacobians released)
    for t, r in enumerate(recs, start=1):
        assert r["scheduled"] == [0, 1, 2]
        for k, eps in enumerate(r["epsilon_per_device"]):
            q, sigma = p["sample_rate_per_device"][k], p["noise_multiplier_per_device"][k]
            n = round(wireless_profile("tiny").batch_size / q)
            want = epsilon(sigma / (2 * math.sqrt(2)), q, t, 1e-5, sampling="fixed",
                           relation="replace_one", dataset_size=n)  # fmt: skip
            assert eps == pytest.approx(want, rel=1e-9), (t, k)
    assert math.isfinite(s["test_nmse_db"]) and recs[0]["cascade"]["jacobian_snr_db"] < 0


def test_analog_uplink_takes_its_channels_and_powers_from_the_network(private_run):
    s, recs = read_summary(private_run), rounds(private_run)
    config = read_config(private_run)
    network = Network(from_dict(NetworkConfig, config["network"]))
    llm = config["llm4cp"]
    entries = llm["history_slots"] * llm["backbone"]["d_model"]  # D of each released row
    clip, max_dbm = 0.05, network.config.device_tx_power_dbm
    for t, r in enumerate(recs):
        assert r["uplink_snr_db"] == pytest.approx(network.round(t).uplink_snr_db.tolist())
        for k in range(3):
            sigma = r["privacy_per_device"][k]["noise_multiplier"]
            # P* = N0 / (g D sigma^2): the SNR at P* is 1 / (D sigma^2)
            p_star = max_dbm - r["uplink_snr_db"][k] - 10 * math.log10(entries * sigma**2)
            assert r["privacy_transmit_power_dbm"][k] == pytest.approx(p_star)
            assert r["transmit_power_dbm"][k] == pytest.approx(min(max_dbm, p_star))
            assert r["transmit_power_saved_db"][k] == pytest.approx(max_dbm - min(max_dbm, p_star))
            jac = r["privacy_per_device"][k]["jacobians"]
            assert p_star < max_dbm  # (the tiny cell's SNRs): receiver noise = privacy noise
            assert jac["receiver_std"] == pytest.approx(sigma * clip, rel=1e-9)
            assert jac["device_std"] < 1e-6 * sigma * clip
    p = s["privacy"]
    assert p["uplink"] == "analog" and p["analog_power"] == "matched"
    assert min(p["transmit_power_saved_db_per_device"]) > 0
    energies = zip(p["analog_uplink_energy_j_per_device"],
                   p["digital_uplink_energy_j_per_device"], strict=True)  # fmt: skip
    assert all(0 < analog < digital for analog, digital in energies)


def test_privacy_is_refused_for_the_fedavg_schemes():
    cfg = wireless_profile("tiny", "fedavg-lora")
    sf = dataclasses.replace(cfg.split_fedft, device_sync_every=0,
                             privacy=PrivacyConfig(enabled=True, noise_multiplier=1.0))  # fmt: skip
    with pytest.raises(
        ConfigError, match="split_fedft.privacy.enabled: .* split-fedft scheme only"
    ):
        dataclasses.replace(cfg, split_fedft=sf)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[split_fedft]\nlr = "fast"\n', "split_fedft.lr: expected a number, got 'fast'"),
        ('[allocation]\npolicy = "best"\n', "allocation.policy: 'best' is not one of"),
        ('scheme = "fedavg-full"\n', "scheme: the config file says 'fedavg-full'"),
        ("iterations = 5\n", "iterations: must be a multiple of fedavg.local_steps=2, got 5"),
        (
            PRIVATE.replace('normalization = "sample"', 'normalization = "batch"'),
            "llm4cp.normalization: must be 'sample' with split_fedft.privacy.enabled",
        ),
        (
            PRIVATE.replace("device_sync_every = 0", "device_sync_every = 2"),
            "split_fedft.device_sync_every: must be 0 with privacy enabled",
        ),
        ('analog_power = "min"\n', "analog_power: 'min' is not one of ['max', 'matched']"),
    ],
)
def test_a_malformed_config_gives_a_one_line_error(text, message, tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    got = CliRunner().invoke(cli, ["train", "split-fedft", "--profile", "tiny", "--config",
                                   str(config), "--out", str(tmp_path / "run")])  # fmt: skip
    assert got.exit_code == 2, got.output
    assert got.stderr.startswith("error: ") and message in got.stderr, got.stderr
    assert len(got.stderr.strip().splitlines()) == 1 and not got.stdout, got.stderr
    assert not (tmp_path / "run").exists()


TINY_JOB = """
num_devices = 2
samples_per_device = [12, 20]
[llm4cp]
history_slots = 4
future_slots = 2
num_subcarriers = 8
patch_size = 2
res_dim = 4
res_layers = 1
trainable = "lora"
lora_rank = 2
[llm4cp.backbone]
name = "custom"
num_layers = 1
d_model = 16
n_head = 2
n_positions = 8
[split_fedft]
iterations = 2
batch_size = 8
"""


@pytest.mark.slow
def test_launch_runs_one_server_and_two_devices_as_processes(tmp_path):
    job = tmp_path / "job.toml"
    job.write_text(TINY_JOB)
    out = tmp_path / "run"
    wrong = CliRunner().invoke(cli, ["launch", "--nproc", "2", "--config", str(job),
                                     "--out", str(out)])  # fmt: skip
    assert wrong.exit_code == 2 and not out.exists()
    result = CliRunner().invoke(cli, ["launch", "--nproc", "3", "--config", str(job),
                                      "--out", str(out), "--timeout", "120"])  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = read_summary(out)
    assert summary["runtime"] == "TorchDistributedLink" and summary["processes"] == 3
    assert [r["iteration"] for r in read_metrics(out)] == [0, 1]
    assert "3 processes (TorchDistributedLink)" in result.output
