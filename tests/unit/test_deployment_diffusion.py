"""The diffusion deployment generator: forward process, equivariance, repair, solving, I/O, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgelam.inference.deployment import evaluate
from edgelam.inference.diffusion import (
    DiffusionCheckpointError,
    export_diffusion_checkpoint,
    generate_deployment,
    load_diffusion_checkpoint,
    sample_indicators,
    shipped_diffusion_dir,
    solve_diffusion,
)
from edgelam.inference.diffusion_features import (
    collate_features,
    instance_features,
    needed_services,
)
from edgelam.inference.diffusion_model import DenoiserConfig, DeploymentDenoiser
from edgelam.inference.diffusion_process import BernoulliDiffusion
from edgelam.inference.diffusion_repair import memory_feasible, repair_indicator
from edgelam.inference.instance import generate_instance


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    return None


def test_forward_marginals_match_closed_form():
    """Step-by-step noising with Q_t = (1 - beta_t) I + beta_t 1 m^T reaches the closed form."""
    d = BernoulliDiffusion(num_steps=20, stationary=0.3)
    gen = torch.Generator().manual_seed(0)
    cells = 100_000
    x0 = (torch.rand(cells, generator=gen) < 0.5).float()
    x = x0.clone()
    for t in range(1, 21):
        beta = 1 - float(d.alpha_bar[t] / d.alpha_bar[t - 1]) if d.alpha_bar[t - 1] > 0 else 1.0
        redraw = torch.rand(cells, generator=gen) < beta
        fresh = (torch.rand(cells, generator=gen) < 0.3).float()
        x = torch.where(redraw, fresh, x)
        if t in (2, 7, 12, 20):
            for bit in (0.0, 1.0):
                sel = x0 == bit
                empirical = float(x[sel].mean())
                expected = float(d.q_marginal(torch.tensor([bit]), torch.tensor([t]))[0])
                sigma = (expected * (1 - expected) / int(sel.sum())) ** 0.5
                assert abs(empirical - expected) < 5 * sigma + 1e-9, (t, bit, empirical, expected)
                # and the one-shot sampler agrees with the closed form too
                shot = d.q_sample(torch.full((cells,), bit), torch.full((cells,), t), gen)
                assert (
                    abs(float(shot.mean()) - expected)
                    < 5 * (expected * (1 - expected) / cells) ** 0.5 + 1e-9
                )
    assert abs(float(x.mean()) - 0.3) < 0.01  # stationary at T


def test_reverse_step_is_bayes_rule_of_the_transition_matrices():
    d = BernoulliDiffusion(num_steps=100, stationary=0.25)
    m = torch.tensor([0.75, 0.25], dtype=torch.float64)
    for t, s in ((80, 40), (30, 29), (100, 0), (10, 0)):
        a_t, a_s = d.alpha_bar[t], d.alpha_bar[s]
        q_ts = (a_t / a_s) * torch.eye(2, dtype=torch.float64) + (1 - a_t / a_s) * m[None, :]
        q_s = a_s * torch.eye(2, dtype=torch.float64) + (1 - a_s) * m[None, :]
        for x0 in (0, 1):
            for xt in (0, 1):
                joint = q_s[x0, :] * q_ts[:, xt]  # over x_s
                expected = float(joint[1] / joint.sum())
                got = d.posterior_prob(torch.tensor([float(xt)]), torch.tensor([float(x0)]), t, s)
                assert float(got[0]) == pytest.approx(expected, abs=1e-6), (t, s, x0, xt)


def test_denoiser_is_node_permutation_equivariant_and_padding_invariant():
    torch.manual_seed(0)
    model = DeploymentDenoiser(DenoiserConfig(hidden=32, layers=2, heads=4)).eval()
    inst = generate_instance(7, seed=4)
    feats = instance_features(inst)
    gen = torch.Generator().manual_seed(1)
    x_t = (torch.rand(2, 16, 7, generator=gen) < 0.3).float()
    t = torch.tensor([50, 700])
    perm = torch.randperm(7, generator=gen)
    with torch.no_grad():
        logits = model(x_t, t, feats.expand(2))
        permuted = model(x_t[:, :, perm], t, feats.permute_nodes(perm).expand(2))
        assert not torch.allclose(logits, logits[:, :, perm])  # the test can fail
        torch.testing.assert_close(permuted, logits[:, :, perm], rtol=1e-4, atol=1e-4)
        # padded in a batch next to a 10-node instance: same logits on the real cells
        big = instance_features(generate_instance(10, seed=5))
        batch = collate_features([feats, big])
        x_pad = torch.zeros(2, 16, 10)
        x_pad[0, :, :7] = x_t[0]
        padded = model(x_pad, torch.tensor([50, 50]), batch)
        torch.testing.assert_close(padded[0, :, :7], logits[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("seed", range(12))
def test_repair_gives_memory_feasible_complete_placements(seed):
    rng = np.random.default_rng(seed)
    inst = generate_instance(int(rng.integers(3, 15)), seed=seed, load=0.3)
    s, n = len(inst.catalog.services), len(inst.nodes)
    x = rng.random((s, n)) < rng.uniform(0.0, 0.9)
    score = rng.random((s, n))
    fixed = repair_indicator(inst, x, score)
    needed = needed_services(inst)
    assert memory_feasible(inst, fixed)
    assert fixed[needed].any(1).all(), "a needed microservice is placed nowhere"
    assert not fixed[~needed].any(), "unneeded microservices take memory"
    np.testing.assert_array_equal(repair_indicator(inst, fixed, score), fixed)  # idempotent
    # repair only removes sampled entries, except one new host per uncovered microservice
    assert (fixed & ~x).sum() <= needed.sum()
    assert (fixed & ~x).sum(1).max() <= 1


def test_solve_diffusion_with_shipped_checkpoint_on_10_and_30_nodes():
    card = json.loads((shipped_diffusion_dir() / "config.json").read_text())
    assert card["format"] == "edgelam-deployment-diffusion"
    assert (shipped_diffusion_dir() / "model.safetensors").stat().st_size < 2 * 2**20
    for nodes in (10, 30):
        inst = generate_instance(nodes, seed=900 + nodes, load=0.35)
        dep = solve_diffusion(inst, samples=8, steps=5, seed=0)
        ev = evaluate(inst, dep)
        assert ev.feasible, ev.violations
        assert dep.info["objective_s"] == pytest.approx(ev.objective_s)
        assert dep.info["feasible_candidates"] >= 1 and dep.info["samples"] == 8


def test_checkpoint_round_trip_gives_identical_samples(tmp_path):
    torch.manual_seed(3)
    model = DeploymentDenoiser(DenoiserConfig(hidden=16, layers=1, heads=2)).eval()
    diffusion = BernoulliDiffusion(num_steps=50, stationary=0.2)
    export_diffusion_checkpoint(model, diffusion, tmp_path / "ck", extra={"note": "test"})
    loaded, loaded_diffusion, card = load_diffusion_checkpoint(tmp_path / "ck")
    assert card["note"] == "test" and loaded_diffusion.stationary == pytest.approx(0.2)
    feats = instance_features(generate_instance(6, seed=2))
    runs = []
    for m, d in ((model, diffusion), (loaded, loaded_diffusion)):
        gen = torch.Generator().manual_seed(11)
        runs.append(sample_indicators(m, d, feats, samples=4, steps=3, generator=gen))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    inst = generate_instance(6, seed=2)
    a = generate_deployment(model, diffusion, inst, samples=4, steps=3, seed=5)
    b = generate_deployment(loaded, loaded_diffusion, inst, samples=4, steps=3, seed=5)
    assert a.placement == b.placement and a.routing == b.routing
    c = generate_deployment(loaded, loaded_diffusion, inst, samples=4, steps=3, seed=6)
    assert c.info["seed"] == 6
    # a corrupted weights file is refused
    raw = bytearray((tmp_path / "ck" / "model.safetensors").read_bytes())
    raw[-1] ^= 0xFF
    (tmp_path / "ck" / "model.safetensors").write_bytes(bytes(raw))
    with pytest.raises(DiffusionCheckpointError, match="sha256"):
        load_diffusion_checkpoint(tmp_path / "ck")


def test_train_diffusion_cli_tiny_run_and_resume(tmp_path):
    from click.testing import CliRunner

    from edgelam.inference.diffusion_command import train_diffusion_command
    from edgelam.inference.diffusion_data import DatasetError

    out = tmp_path / "run"
    args = ["--instances", "4", "--nodes-min", "3", "--nodes-max", "3", "--label-time-limit",
            "0.5", "--steps", "6", "--batch-size", "4", "--eval-every", "3", "--eval-instances",
            "1", "--eval-samples", "2", "--log-every", "2", "--val-fraction", "0.25",
            "--out", str(out), "--quiet"]  # fmt: skip
    result = CliRunner().invoke(train_diffusion_command, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "checkpoint:" in result.output
    manifest = json.loads((out / "dataset" / "manifest.json").read_text())
    assert [e["index"] for e in manifest["entries"]] == [0, 1, 2, 3]
    assert all(e["status"] in ("OPTIMAL", "FEASIBLE", "UNKNOWN") for e in manifest["entries"])
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if m["kind"] == "train"] == [2, 4, 6]
    assert [m["step"] for m in metrics if m["kind"] == "eval"] == [3, 6]
    training = json.loads((out / "checkpoint" / "training.json").read_text())
    assert training["dataset"]["instances"] == 4 and "train-diffusion" in training["command"]
    model, _, _ = load_diffusion_checkpoint(out)  # a run directory works too
    assert (out / "loss.png").stat().st_size > 0
    # the same command again: nothing relabelled, nothing retrained, same weights
    before = (out / "checkpoint" / "model.safetensors").read_bytes()
    again = CliRunner().invoke(train_diffusion_command, args)
    assert again.exit_code == 0, again.output
    assert json.loads((out / "dataset" / "manifest.json").read_text()) == manifest
    assert (out / "checkpoint" / "model.safetensors").read_bytes() == before
    # other generator settings on the same dataset are refused
    other = [*args[:5], "5", *args[6:]]
    refused = CliRunner().invoke(train_diffusion_command, [*other, "--overwrite"])
    assert isinstance(refused.exception, DatasetError)
