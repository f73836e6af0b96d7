"""Split FedFT: exact equality with centralised autograd, bit accounting, sync, determinism."""

import copy
import dataclasses

import pytest
import torch
from test_split import _one_thread, tiny_gpt2_lm, tiny_llm4cp  # noqa: F401 (autouse)
from torch.utils.data import TensorDataset

from edgelam.config import ConfigError
from edgelam.distributed.dist_transport import GPT2LMConfig, SplitFedFTJob, run_split_fedft
from edgelam.distributed.transport import InProcessTransport
from edgelam.models.adapters import apply_lora
from edgelam.network import TransferLedger
from edgelam.training.split import split_model
from edgelam.training.split_fedft import (
    DeviceData,
    InProcessLink,
    SplitFedFT,
    SplitFedFTConfig,
    dataset_batches,
    per_device,
)

BATCHES = (3, 5, 4)  # a different mini-batch size on each device
SAMPLES = (30, 50, 20)  # n_k: the weights w_k = n_k / 100 differ from the batch shares


def _model(kind, dtype=torch.float64):
    if kind == "llm4cp":
        model = tiny_llm4cp()
    else:
        model = tiny_gpt2_lm()
        with torch.random.fork_rng():
            torch.manual_seed(1)
            apply_lora(model.transformer, rank=2, alpha=4)
        model.lm_head.weight.requires_grad_(True)  # tied to wte: the devices train it
    model = model.to(dtype).eval()  # eval: no dropout, so a one-graph reference exists
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(2)
        for name, p in model.named_parameters():
            if "lora_B" in name:  # B = 0 at init would make every dL/dA zero
                p.normal_(0, 0.1)
    return model


def _fixed(kind, k, dtype=torch.float64):
    """Device k's fixed mini-batch (the same at every iteration)."""
    g = torch.Generator().manual_seed(100 + k)
    b = BATCHES[k]
    if kind == "llm4cp":
        x = torch.randn(b, 4, 16, generator=g, dtype=dtype)
        return x, x[:, -2:] * 0.9 + 0.1 * torch.randn(b, 2, 16, generator=g, dtype=dtype)
    ids = torch.randint(0, 40, (b, 10), generator=g)
    return ids, ids


def _data(kind, dtype=torch.float64):
    return [
        DeviceData(lambda t, k=k: _fixed(kind, k, dtype), SAMPLES[k]) for k in range(len(BATCHES))
    ]


def _sgd(**kw):
    base = dict(optimizer="sgd", lr=0.1, device_optimizer="sgd", device_lr=0.05,
                device_sync_every=0, iterations=1)  # fmt: skip
    return SplitFedFTConfig(**{**base, **kw})


def _centralised_grads(kind, model):
    """Gradients of sum_k w_k L_k on the unsplit model, in one autograd graph."""
    ref = copy.deepcopy(model)
    for p in ref.parameters():
        p.requires_grad_(True)
    loss_fn = split_model(ref).loss_fn
    total = sum(n * loss_fn(getattr(out := ref(x), "logits", out), y) for n, (x, y) in
                zip(SAMPLES, (_fixed(kind, k) for k in range(3)), strict=True)) / sum(SAMPLES)  # fmt: skip
    total.backward()
    return {n: p.grad for n, p in ref.named_parameters() if p.grad is not None}


def _rel(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("kind", ["llm4cp", "gpt2-lm"])
def test_one_iteration_equals_centralised_autograd(kind):
    """LoRA update and device-module gradients equal those of sum_k w_k L_k in one graph."""
    model = _model(kind)
    names = {id(p): n for n, p in model.named_parameters()}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    expected = _centralised_grads(kind, model)
    cfg = _sgd(embedding_grad=True)
    algo = SplitFedFT(cfg, model, _data(kind))
    algo.run_iteration()
    lora = {n: p for n, p in model.named_parameters() if "lora_" in n}
    assert lora and all(p.requires_grad for p in lora.values())
    step = torch.cat([(before[n] - p.detach()).flatten() / cfg.lr for n, p in lora.items()])
    grad = torch.cat([expected[n].flatten() for n in lora])
    assert _rel(step, grad) <= 1e-6
    # each device stepped on its own dL_k/dphi; sum_k w_k of them is the centralised gradient
    template = split_model(model).device_modules()
    owned = [(name, names[id(p)]) for name, p in template.named_parameters()]
    assert {m for _, m in owned} <= set(expected)  # embedding and task modules alike
    w = [n / sum(SAMPLES) for n in SAMPLES]
    mean = torch.cat([
        sum(w[k] * (before[m] - dict(dev.modules.named_parameters())[name].detach()).flatten()
            for k, dev in algo.devices.items()) / cfg.device_lr
        for name, m in owned
    ])  # fmt: skip
    assert _rel(mean, torch.cat([expected[m].flatten() for _, m in owned])) <= 1e-6


def test_without_embedding_grad_the_embedding_module_does_not_train():
    model = _model("llm4cp")
    algo = SplitFedFT(_sgd(embedding_grad=False), model, _data("llm4cp"))
    record = algo.run_iteration()
    dev = algo.devices[0].modules
    torch.testing.assert_close(dev["embedding"].time_mix.weight, model.time_mix.weight)
    assert not torch.equal(dev["task"].head.weight, model.head.weight)
    assert "embedding_grads" not in record["devices"][0]["bits"]["downlink"]


def test_bits_equal_the_analytic_count_and_int8_is_four_times_smaller():
    model, (b, length, d) = _model("llm4cp", torch.float32), (BATCHES[1], 4, 16)
    data = _data("llm4cp", torch.float32)
    algo = SplitFedFT(_sgd(embedding_grad=True, device_sync_every=1), model, data)
    record = algo.run_iteration()
    row = record["devices"][1]
    fp32 = b * length * d * 32
    assert row["bits"]["uplink"] == {"embeddings": fp32, "jacobians": fp32, "device_sync": row["bits"]["uplink"]["device_sync"]}  # fmt: skip
    assert row["bits"]["downlink"]["representations"] == row["bits"]["downlink"]["embedding_grads"] == fp32  # fmt: skip
    device_params = sum(p.numel() for p in split_model(model).device_modules().parameters())
    assert row["bits"]["uplink"]["device_sync"] == row["bits"]["downlink"]["device_sync"] == device_params * 32  # fmt: skip
    assert row["uplink_bits"] == 2 * fp32 + device_params * 32
    assert per_device(record, 3)["uplink_bits"][1] == row["uplink_bits"]
    assert per_device(record, 3)["server_flops"] == [r["server_flops"] for r in record["devices"]]
    int8 = SplitFedFT(
        _sgd(embedding_grad=True, quantization="int8"), _model("llm4cp", torch.float32), data
    )
    row8 = int8.run_iteration()["devices"][1]
    assert row8["bits"]["uplink"]["embeddings"] == b * length * d * 8 + 64  # + scale, zero-point
    assert (row8["bits"]["uplink"]["embeddings"] - 64) * 4 == fp32
    # and the ledger holds the same numbers
    assert int8.link.ledger.total(device=1, what="jacobians")["bits"] == b * length * d * 8 + 64


def _lm_losses(quantization):
    """20 iterations of a 2-device GPT-2 LM on counting sequences (the job's synthetic data)."""
    cfg = SplitFedFTConfig(
        iterations=20,
        batch_size=8,
        lr=1e-2,
        device_lr=1e-2,
        embedding_grad=True,
        device_sync_every=5,
        quantization=quantization,
    )
    job = SplitFedFTJob(model="gpt2-lm", samples_per_device=(24, 40), split_fedft=cfg,
                        gpt2_lm=GPT2LMConfig(vocab_size=16, d_model=16, sequence_length=8))  # fmt: skip
    return [r["loss"] for r in run_split_fedft(job)["records"]]


def test_loss_decreases_on_a_tiny_problem_with_and_without_int8():
    exact, int8 = _lm_losses(None), _lm_losses("int8")
    for losses in (exact, int8):
        assert len(losses) == 20
        assert sum(losses[-4:]) < 0.7 * sum(losses[:4])
    assert exact != int8  # int8 really changes what is delivered...
    assert int8 == pytest.approx(exact, rel=0.05)  # ...by little


def test_device_sync_is_the_sample_weighted_mean_of_the_device_modules():
    apart = SplitFedFT(_sgd(device_sync_every=0), _model("llm4cp"), _data("llm4cp"))
    apart.run_iteration()
    synced = SplitFedFT(_sgd(device_sync_every=1), _model("llm4cp"), _data("llm4cp"))
    record = synced.run_iteration()
    assert record["device_synced"]
    states = apart.device_states()
    assert not torch.equal(states[0]["task.head.weight"], states[1]["task.head.weight"])
    for k, state in synced.device_states().items():
        for name, value in state.items():
            mean = sum(SAMPLES[j] * states[j][name] for j in range(3)) / sum(SAMPLES)
            torch.testing.assert_close(value, mean, rtol=1e-12, atol=1e-12, msg=f"{k} {name}")


def _run(seed, iterations=3):
    model = tiny_llm4cp(dropout=0.2).train()  # dropout on: randomness must be seeded
    data = [dataset_batches(TensorDataset(torch.randn(n, 4, 16, generator=torch.Generator().manual_seed(n)),
                                          torch.randn(n, 2, 16, generator=torch.Generator().manual_seed(n + 1))),
                            4, seed, k) for k, n in enumerate((6, 9))]  # fmt: skip
    cfg = SplitFedFTConfig(
        iterations=iterations, seed=seed, embedding_grad=True, quantization="fp16"
    )
    algo = SplitFedFT(cfg, model, data)
    records = [{k: v for k, v in r.items() if k != "wall_seconds"} for r in algo.run()]
    return records, algo.server_state()


def test_runs_with_a_fixed_seed_are_deterministic():
    (rec_a, lora_a), (rec_b, lora_b), (rec_c, _) = _run(0), _run(0), _run(1)
    assert rec_a == rec_b
    assert all(torch.equal(lora_a[n], lora_b[n]) for n in lora_a)
    assert [r["loss"] for r in rec_a] != [r["loss"] for r in rec_c]


def test_scheduling_renormalises_the_weights_over_the_scheduled_devices():
    model = _model("llm4cp")
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    algo = SplitFedFT(_sgd(), model, _data("llm4cp"))
    record = algo.run_iteration([2, 0])
    assert record["scheduled"] == [0, 2]
    assert {r["device"]: r["weight"] for r in record["devices"]} == pytest.approx({0: 0.6, 2: 0.4})
    assert record["loss"] == pytest.approx(sum(0.2 * r["loss"] * (3 if r["device"] == 0 else 2) for r in record["devices"]))  # fmt: skip
    assert algo.link.ledger.total(device=1)["bits"] == 0
    # the LoRA update is the gradient of 0.6 L_0 + 0.4 L_2
    ref = copy.deepcopy(model)
    ref.load_state_dict({**ref.state_dict(), **before})
    loss_fn = split_model(ref).loss_fn
    (0.6 * loss_fn(ref(_fixed("llm4cp", 0)[0]), _fixed("llm4cp", 0)[1]) + 0.4 * loss_fn(ref(_fixed("llm4cp", 2)[0]), _fixed("llm4cp", 2)[1])).backward()  # fmt: skip
    for n, p in ref.named_parameters():
        if "lora_" in n:
            assert (
                _rel((before[n] - dict(model.named_parameters())[n].detach()) / 0.1, p.grad) <= 1e-6
            )
    for bad, match in (([], "no devices scheduled"), ([3], "distinct device indices"),
                       ([1, 1], "distinct device indices")):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            algo.run_iteration(bad)


def test_memory_and_flops_are_reported():
    model = _model("gpt2-lm", torch.float32)
    algo = SplitFedFT(_sgd(embedding_grad=True), model, _data("gpt2-lm", torch.float32))
    record = algo.run_iteration()
    assert all(r["device_flops"] > 0 and r["server_flops"] > 0 for r in record["devices"])
    assert record["server_flops"] == sum(r["server_flops"] for r in record["devices"])
    # larger batches cost more on both sides
    by_batch = sorted(record["devices"], key=lambda r: r["batch_size"])
    assert by_batch[0]["server_flops"] < by_batch[-1]["server_flops"]
    assert by_batch[0]["device_flops"] < by_batch[-1]["device_flops"]
    server, devices = algo.memory["server"], algo.memory["devices"]
    wte = model.transformer.wte.weight
    backbone_bytes = sum(p.numel() * 4 for p in model.transformer.parameters()) + sum(
        b.numel() * b.element_size() for b in model.transformer.buffers()
    )
    assert server["parameter_bytes"] == backbone_bytes - wte.numel() * 4  # wte lives on devices
    assert set(devices) == {0, 1, 2}
    assert devices[0]["parameter_bytes"] == wte.numel() * 4
    assert all(v > 0 for m in (server, *devices.values()) for v in m.values())


def test_bad_configs_and_inputs_raise_clear_errors():
    with pytest.raises(ConfigError, match="quantization: 'int4' is not one of"):
        SplitFedFTConfig(quantization="int4")
    with pytest.raises(ConfigError, match="device_sync_every"):
        SplitFedFTConfig(device_sync_every=-1)
    frozen = tiny_llm4cp()
    for p in frozen.backbone.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters: apply LoRA"):
        SplitFedFT(SplitFedFTConfig(), frozen, _data("llm4cp", torch.float32))
    link = InProcessLink(3, InProcessTransport(TransferLedger(), quantization="fp16"))
    with pytest.raises(ConfigError, match="quantization"):
        SplitFedFT(SplitFedFTConfig(), tiny_llm4cp(), _data("llm4cp", torch.float32), link)
    algo = SplitFedFT(SplitFedFTConfig(), tiny_llm4cp(), _data("llm4cp", torch.float32))
    algo.server.forward(0, 0, torch.randn(3, 4, 16))
    with pytest.raises(ValueError, match=r"jacobians \[3, 4, 8\] != representations \[3, 4, 16\]"):
        algo.server.backward(0, torch.randn(3, 4, 8), 1.0)
    bad = [DeviceData(lambda t: (torch.randn(2, 5, 16), torch.randn(2, 2, 16)), 2)] * 3
    with pytest.raises(ValueError, match="history of shape"):
        SplitFedFT(SplitFedFTConfig(), tiny_llm4cp(), bad).run_iteration()
    with pytest.raises(ValueError, match="device 1 runs in this process but has no data"):
        SplitFedFT(SplitFedFTConfig(), tiny_llm4cp(), {0: bad[0]}, InProcessLink(2))


def test_dataset_batches_are_seeded_per_iteration_and_device():
    ds = TensorDataset(torch.arange(10.0).view(10, 1), torch.zeros(10, 1))
    a, b = dataset_batches(ds, 4, 0, 0), dataset_batches(ds, 4, 0, 1)
    assert a.num_samples == 10 and a.batches(3)[0].shape == (4, 1)
    assert torch.equal(a.batches(3)[0], a.batches(3)[0])
    assert not torch.equal(a.batches(3)[0], a.batches(4)[0])
    assert not torch.equal(a.batches(3)[0], b.batches(3)[0])
    assert dataset_batches(ds, 64, 0, 0).batches(0)[0].shape == (10, 1)  # fewer than asked
    assert dataclasses.is_dataclass(a)
