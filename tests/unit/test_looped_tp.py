"""Looped tensor parallelism: sharded == dense, partition optimiser == brute force, accounting."""

from __future__ import annotations

import dataclasses
import itertools
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from scipy.optimize import minimize_scalar

from edgelam.config import ConfigError
from edgelam.network import DeviceMemoryError, DeviceProfile, count_flops
from edgelam.pretrain.objectives import apply_mask, patch_mask
from edgelam.runs import read_metrics, read_summary
from edgelam.training.looped_tp.command import looped_tp_command
from edgelam.training.looped_tp.costs import EdgeSystem, Partition, TPWorkload, iteration_latency
from edgelam.training.looped_tp.data import TextTokenizer, mlm_mask
from edgelam.training.looped_tp.model import (
    LoopedLAMConfig,
    build_looped_lam,
    csi_features,
    task_loss,
)
from edgelam.training.looped_tp.partition import equal_partition, plan
from edgelam.training.looped_tp.runtime import InProcessTPLink
from edgelam.training.looped_tp.tp import LoopedTP, shard, unshard
from edgelam.training.looped_tp.train import looped_tp_profile, train_looped_tp

UNEQUAL = Partition(heads=(1, 2, 3), ffn_columns=(5, 11, 8), embed_columns=(2, 5, 1))


pytestmark = pytest.mark.usefixtures("one_thread")  # before the module's runs


def _model_cfg(task: str) -> LoopedLAMConfig:
    return LoopedLAMConfig(task=task, num_subcarriers=4, vocab_size=11, seq_len=8, d_model=24,
                           embed_dim=8, n_head=6, ffn_dim=24, loops=4)  # fmt: skip


def _batch(cfg: LoopedLAMConfig, step: int, b: int = 3):
    gen = torch.Generator().manual_seed(step)
    if cfg.task == "csi":
        history = torch.randn(
            b, cfg.seq_len, 2 * cfg.num_subcarriers, generator=gen, dtype=torch.float64
        )
        mask = patch_mask(b, cfg.seq_len, cfg.num_subcarriers, patch_slots=2, patch_subcarriers=2,
                          mask_ratio=0.4, generator=gen)  # fmt: skip
        return csi_features(apply_mask(history, mask), mask), mask, history[mask]
    ids = torch.randint(2, cfg.vocab_size, (b, cfg.seq_len), generator=gen)
    mask = mlm_mask(b, cfg.seq_len, 0.3, gen)
    return ids.masked_fill(mask, 0), mask, ids[mask]


def _adamw(params):
    return torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1)


@pytest.mark.parametrize("task", ["csi", "mlm"])
def test_sharded_training_equals_the_dense_looped_model(task):
    """K = 3, L = 4, unequal split, float64: losses, gradients and weights over 4 AdamW steps."""
    cfg = _model_cfg(task)
    dense = build_looped_lam(cfg, seed=1, dtype=torch.float64)
    server, slices = shard(dense, UNEQUAL)
    tp = LoopedTP(cfg, InProcessTPLink(3), server, dict(enumerate(slices)))
    dense_opt = _adamw(dense.parameters())
    part_opts = [_adamw(server.parameters()), *(_adamw(s.parameters()) for s in slices)]
    for step in range(4):
        inputs, mask, labels = _batch(cfg, step)
        loss = tp.step(inputs, labels, mask)
        ref = task_loss(cfg, dense(inputs), mask, labels)
        ref.backward()
        assert abs(loss.item() - ref.item()) <= 1e-5 * abs(ref.item())
        grads = unshard(cfg, {n: p.grad for n, p in server.named_parameters()},
                        [{n: p.grad for n, p in s.named_parameters()} for s in slices])  # fmt: skip
        want = dict(dense.named_parameters())
        flat_got = torch.cat([grads[n].flatten() for n in want])
        flat_want = torch.cat([p.grad.flatten() for p in want.values()])
        assert (flat_got - flat_want).norm() <= 1e-5 * flat_want.norm()
        scale = flat_want.abs().max()  # per tensor too (k_proj.bias's gradient is exactly 0)
        for name, p in want.items():
            assert (grads[name] - p.grad).abs().max() <= 1e-5 * scale, name
        for opt in (dense_opt, *part_opts):
            opt.step()
            opt.zero_grad(set_to_none=True)
    params = unshard(
        cfg, dict(server.named_parameters()), [dict(s.named_parameters()) for s in slices]
    )
    for name, p in dense.named_parameters():
        torch.testing.assert_close(params[name], p, rtol=1e-7, atol=1e-10)


def test_a_device_stores_its_share_of_one_block_whatever_the_depth():
    sizes = {}
    for loops in (2, 6):
        cfg = dataclasses.replace(
            _model_cfg("csi"), loops=loops, n_head=6, ffn_dim=48, embed_dim=12
        )
        model = build_looped_lam(cfg)
        server, slices = shard(model, equal_partition(TPWorkload(cfg, 1), 3))
        split = sum(p.numel() for n, p in model.named_parameters() if n not in
                    {"pos", "embed_out.bias", "block.o_proj.bias", "block.down.bias"}
                    and not n.startswith(("block.ln", "ln_f", "head")))  # fmt: skip
        counts = [sum(p.numel() for p in s.parameters()) for s in slices]
        assert sum(counts) == split  # every split parameter is held exactly once
        assert max(counts) - min(counts) == 0  # equal split of divisible dims: exactly 1/K each
        sizes[loops] = counts
        block = sum(p.numel() for p in model.block.parameters())
        assert max(counts) < block / 3 + sum(p.numel() for p in model.embed_in.parameters())
    assert sizes[2] == sizes[6]  # one block, reused at every depth: no growth with L


def test_measured_flops_and_bits_equal_the_cost_model():
    cfg = _model_cfg("csi")
    model = build_looped_lam(cfg, seed=0, dtype=torch.float64)
    server, slices = shard(model, UNEQUAL)
    inputs, mask, labels = _batch(cfg, 0, b=3)
    work = TPWorkload(cfg, 3, dtype_bytes=8, label_bits=labels.numel() * 64)
    rounds = {r.name: r for r in work.rounds()}
    a = torch.randn(3, cfg.seq_len, cfg.d_model, dtype=torch.float64, requires_grad=True)
    total = [0, 0, 0]
    for k, sl in enumerate(slices):
        for kind, x in (("embed", inputs), ("attention", a), ("ffn", a)):
            unit = {"embed": "embed", "attention": "heads", "ffn": "ffn"}[kind]
            n = UNEQUAL.units(unit)[k]
            fwd = count_flops(_Stage(sl, kind), x)
            both = count_flops(_Stage(sl, kind), x, backward=True)
            assert fwd == rounds[f"{kind}_forward"].flops_per_unit * n
            assert both - fwd == rounds[f"{kind}_backward"].flops_per_unit * n
            total[k] += rounds[f"{kind}_forward"].count * both
    assert total == [work.device_flops(UNEQUAL, k) for k in range(3)]
    link = InProcessTPLink(3)
    LoopedTP(cfg, link, server, dict(enumerate(slices))).step(inputs, labels, mask)
    traffic = link.meter.take()
    for k in range(3):
        up = sum(r.count * work.uplink_bits(r, k) for r in work.rounds())
        assert traffic["uplink_bits"][k] == up
        assert traffic["downlink_bits"][k] == sum(r.count * r.downlink_bits for r in work.rounds())


class _Stage(torch.nn.Module):
    def __init__(self, part, kind):
        super().__init__()
        self.part, self.kind = part, kind

    def forward(self, x):
        return getattr(self.part, self.kind)(x)


def _system(memories, speeds, rates, band=2e6):
    devices = tuple(
        DeviceProfile(f"dev{i}", s, 1.0, m, 1.0)
        for i, (s, m) in enumerate(zip(speeds, memories, strict=True))
    )
    return EdgeSystem(
        devices, tuple(rates), band, 5e7, DeviceProfile("server", 1e14, 1.0, 2**40, 1.0)
    )


def _best_bandwidth(work, system, part):
    """Brute force for one partition: nested bounded 1-D searches (the latency is convex in b)."""
    band, k = system.total_bandwidth_hz, system.num_devices

    def latency(b):
        return iteration_latency(work, system, part, b).total_s

    def inner(b0):
        if k == 2:
            return latency([b0, band - b0])
        res = minimize_scalar(lambda b1: latency([b0, b1, band - b0 - b1]),
                              bounds=(1e-6 * band, band - b0 - 1e-6 * band), method="bounded",
                              options={"xatol": 1e-7 * band})  # fmt: skip
        return res.fun

    res = minimize_scalar(inner, bounds=(1e-6 * band, band * (1 - 2e-6)), method="bounded",
                          options={"xatol": 1e-7 * band})  # fmt: skip
    return res.fun


def _brute_force(work, system):
    c, k = work.cfg, system.num_devices

    def splits(total):
        return [s for s in itertools.product(range(1, total), repeat=k) if sum(s) == total]

    best = np.inf
    for h, f, e in itertools.product(splits(c.n_head), splits(c.ffn_dim), splits(c.embed_dim)):
        part = Partition(h, f, e)
        if all(
            work.device_memory(part, i)["total"] <= d.memory_bytes
            for i, d in enumerate(system.devices)
        ):
            best = min(best, _best_bandwidth(work, system, part))
    return best


BRUTE = LoopedLAMConfig(
    num_subcarriers=2, seq_len=4, d_model=8, embed_dim=4, n_head=4, ffn_dim=6, loops=2
)


@pytest.mark.parametrize(
    ("memories", "speeds", "rates", "binds"),
    [  # memory binds on the fast device (K = 2, K = 3); slow compute, poor link (K = 2)
        ((11_000, 60_000), (1e9, 2e8), (4e6, 2e7), True),
        ((60_000, 60_000), (3e7, 2e8), (2e7, 1e6), False),
        ((8_000, 14_000, 60_000), (1e9, 2e8, 5e7), (4e6, 2e7, 8e6), True),
    ],
)
def test_optimal_partition_equals_brute_force(memories, speeds, rates, binds):
    cfg = BRUTE if len(memories) == 2 else dataclasses.replace(BRUTE, ffn_dim=4)
    work = TPWorkload(cfg, 4, label_bits=300)
    system = _system(memories, speeds, rates)
    best = plan("optimal", work, system)
    want = _brute_force(work, system)
    assert best.latency.total_s == pytest.approx(want, rel=1e-6)
    assert best.lower_bound_s <= want * (1 + 1e-7)
    for k, dev in enumerate(system.devices):
        assert best.memory[k]["total"] <= dev.memory_bytes
    assert sum(best.bandwidth_hz) == pytest.approx(system.total_bandwidth_hz)
    free = plan("optimal", work, _system((2**30,) * len(memories), speeds, rates))
    assert (free.latency.total_s < best.latency.total_s * (1 - 1e-6)) == binds


def test_optimal_is_no_slower_than_equal_and_min_storage():
    cfg = LoopedLAMConfig(task="mlm", vocab_size=1000, seq_len=64, d_model=192, embed_dim=48,
                          n_head=6, ffn_dim=768, loops=6)  # fmt: skip
    work = TPWorkload(cfg, 8, label_bits=8 * 19 * 64)
    system = _system(
        (2**31, 2**30, 2**32), (2e12 * 0.3, 0.47e12 * 0.3, 42.5e12 * 0.3), (3e8, 5e8, 1e8), 60e6
    )
    t = {s: plan(s, work, system).latency.total_s for s in ("optimal", "equal", "min_storage")}
    assert t["optimal"] <= t["equal"] * (1 + 1e-9) and t["optimal"] <= t["min_storage"] * (1 + 1e-9)
    assert t["equal"] <= t["min_storage"]  # same partition, but the band is split optimally


def test_infeasible_memory_names_the_device_and_the_bytes():
    work = TPWorkload(BRUTE, 4)
    tight = _system((60_000, 5_000), (1e9, 1e9), (1e7, 1e7))
    with pytest.raises(
        DeviceMemoryError, match=r"device 1 \('dev1'\).*needs \d+ bytes.*memory_bytes=5000"
    ):
        plan("optimal", work, tight)
    with pytest.raises(DeviceMemoryError, match=r"smallest device, device 1 \('dev1'\)"):
        plan("min_storage", work, tight)
    with pytest.raises(DeviceMemoryError, match=r"device 1 \('dev1'\)"):
        plan("equal", work, tight)
    with pytest.raises(ConfigError, match="K=3 to divide n_head=4"):
        plan("min_storage", work, _system((1e9,) * 3, (1e9,) * 3, (1e7,) * 3))


@pytest.fixture(scope="module")
def tiny_cfg(tmp_path_factory):
    cfg = looped_tp_profile("tiny")
    cfg.cache_dir = str(tmp_path_factory.mktemp("cache"))
    return cfg


@pytest.fixture(scope="module")
def tiny_run(tiny_cfg, tmp_path_factory):
    return train_looped_tp(tiny_cfg, tmp_path_factory.mktemp("runs") / "tiny", progress=False)


def test_masked_csi_training_learns_and_reports_measured_memory(tiny_run, tiny_cfg):
    summary = read_summary(tiny_run)
    train = [r for r in read_metrics(tiny_run) if r["kind"] == "train"]
    assert len(train) == tiny_cfg.steps
    assert np.mean([r["loss"] for r in train[-3:]]) < 0.9 * np.mean([r["loss"] for r in train[:3]])
    for dev in summary["memory"]["devices"]:
        assert dev["measured"] == dev["model"]  # measured on the slices == the cost model
    assert summary["memory"]["max_device_over_unshared"] < 1
    lat = summary["simulated_latency"]["by_scheme_mean_state"]
    assert lat["optimal"]["latency_s"] <= lat["equal"]["latency_s"] * (1 + 1e-9)
    card = json.loads((tiny_run / "model_card.json").read_text())
    assert card["sha256"] == summary["sha256"] and card["architecture"]["loops"] == 3
    assert all(r["latency"]["total_s"] > 0 and r["traffic"]["uplink_bits"][0] > 0 for r in train)


def test_an_interrupted_run_resumes_to_the_same_weights(tiny_run, tiny_cfg, tmp_path):
    cut = tmp_path / "cut"
    train_looped_tp(tiny_cfg, cut, progress=False, stop_after=8)  # checkpoint at 6, killed at 8
    train_looped_tp(tiny_cfg, cut, progress=False)
    assert read_summary(cut)["sha256"] == read_summary(tiny_run)["sha256"]
    strip = [{k: v for k, v in r.items() if k != "wall_seconds"} for r in read_metrics(cut)]
    assert strip == [
        {k: v for k, v in r.items() if k != "wall_seconds"} for r in read_metrics(tiny_run)
    ]


def test_mlm_on_a_text_file_runs(tmp_path):
    text = tmp_path / "corpus.txt"
    text.write_text("the edge server merges the partial sums of the devices. " * 40)
    cfg = dataclasses.replace(looped_tp_profile("tiny"), text_file=str(text), steps=10,
                              model=LoopedLAMConfig(task="mlm", seq_len=16, d_model=24, embed_dim=8,
                                                    n_head=6, ffn_dim=24, loops=2))  # fmt: skip
    out = train_looped_tp(cfg, tmp_path / "mlm", progress=False)
    summary = read_summary(out)
    assert summary["data"]["vocab_size"] == len(
        TextTokenizer.from_text(text.read_text(), "char").vocab
    )
    assert summary["final_loss_mean_last"] < summary["first_loss"]
    with pytest.raises(ConfigError, match="text_file"):
        train_looped_tp(
            dataclasses.replace(cfg, text_file=str(tmp_path / "none.txt")), tmp_path / "x"
        )


def test_cli_runs_the_tiny_profile_and_rejects_bad_input(tiny_cfg, tmp_path):
    args = ["--profile", "tiny", "--devices", "2", "--loops", "2", "--partition", "equal",
            "--cache-dir", tiny_cfg.cache_dir, "--steps", "3", "--out", str(tmp_path / "cli"), "-q"]  # fmt: skip
    result = CliRunner().invoke(looped_tp_command, args)
    assert result.exit_code == 0, result.output
    assert "3 steps" in result.output and "heads [3, 3]" in result.output
    bad = CliRunner().invoke(looped_tp_command, [*args[:-3], "--devices", "4", "--partition",
                                                 "min-storage", "--out", str(tmp_path / "bad")])  # fmt: skip
    assert isinstance(bad.exception, ConfigError) and "K=4 to divide n_head=6" in str(bad.exception)
