"""FedAvg: exact equivalences with centralised computations, bit accounting, resumption."""

import dataclasses

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from edgelam.distributed.transport import InProcessTransport
from edgelam.network import Network, NetworkConfig, TransferLedger
from edgelam.training.fedavg import Client, FedAvg, FedAvgConfig, FitResult, nmse_loss


def _data(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 4, generator=g)
    return TensorDataset(x, x[:, -1:, :] * 0.5 + 0.1 * torch.randn(n, 1, 4, generator=g))


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)
        self.head = nn.Linear(12, 4)

    def forward(self, x):
        return self.head(self.frozen(x).flatten(1)).unsqueeze(1)


def test_aggregate_is_sample_weighted_mean():
    fed = FedAvg(FedAvgConfig(), Tiny(), [Client(0, _data(4, 0))], communicate=False)
    a = FitResult(0, {"w": torch.tensor([1.0, 2.0])}, 1, [0.0])
    b = FitResult(1, {"w": torch.tensor([4.0, 8.0])}, 3, [0.0])
    torch.testing.assert_close(fed.aggregate_train(0, [a, b])["w"], torch.tensor([3.25, 6.5]))
    fed.config = dataclasses.replace(fed.config, weighting="uniform")
    torch.testing.assert_close(fed.aggregate_train(0, [a, b])["w"], torch.tensor([2.5, 5.0]))


def test_one_round_of_one_sgd_step_equals_centralised_gradient_descent():
    """With one full-batch local SGD step, FedAvg = gradient descent on the mean gradient."""
    datasets = [_data(8, 1), _data(8, 2), _data(8, 5)]
    cfg = FedAvgConfig(rounds=1, local_steps=1, batch_size=8, optimizer="sgd", lr=0.1,
                       momentum=0.0, grad_clip=0.0)  # fmt: skip
    fed = FedAvg(cfg, Tiny(), [Client(i, d) for i, d in enumerate(datasets)], communicate=False)
    fed.run_round()
    ref = Tiny()
    grads = []
    for d in datasets:
        ref.zero_grad()
        x, y = d.tensors
        # full-batch NMSE mean over items: the client's loss on all its data
        nmse_loss(ref(x), y).backward()
        grads.append({n: p.grad.clone() for n, p in ref.named_parameters() if p.requires_grad})
    for name, p in ref.named_parameters():
        if p.requires_grad:
            expected = p - 0.1 * sum(g[name] for g in grads) / 3
            torch.testing.assert_close(fed.global_state[name], expected, rtol=1e-5, atol=1e-6)


def test_local_only_equals_plain_training_loop():
    data = _data(20, 3)
    cfg = FedAvgConfig(rounds=3, local_steps=2, batch_size=5, optimizer="adam", lr=0.01, seed=4)
    fed = FedAvg(cfg, Tiny(), [Client(0, data)], communicate=False)
    for _ in range(3):
        fed.run_round()
    # the same batches, the same optimizer state carried across rounds
    ref = Tiny()
    opt = torch.optim.Adam([p for p in ref.parameters() if p.requires_grad], lr=0.01)
    from edgelam.seeding import derive_seed

    for rnd in range(3):
        gen = torch.Generator().manual_seed(derive_seed(4, rnd, 0))
        order = torch.randperm(20, generator=gen)
        for step in range(2):
            idx = order[step * 5 : (step + 1) * 5]
            x, y = data.tensors[0][idx], data.tensors[1][idx]
            opt.zero_grad()
            nmse_loss(ref(x), y).backward()
            nn.utils.clip_grad_norm_([p for p in ref.parameters() if p.requires_grad], 1.0)
            opt.step()
    for name, p in ref.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(fed.global_state[name], p.detach(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    ("quantization", "bits_per_value", "header"),
    [("fp32", 32, 0), ("fp16", 16, 0), ("int8", 8, 64)],
)
def test_every_bit_is_counted(quantization, bits_per_value, header):
    clients = [Client(i, _data(8, i)) for i in range(3)]
    cfg = FedAvgConfig(rounds=2, local_steps=1, batch_size=4, quantization=quantization)
    ledger = TransferLedger()
    transport = InProcessTransport(ledger, Network(NetworkConfig(num_devices=3)), quantization)
    fed = FedAvg(cfg, Tiny(), clients, transport)
    record = fed.run_round()
    trainable = {n: p for n, p in fed.model.named_parameters() if p.requires_grad}
    per_copy = sum(p.numel() * bits_per_value + header for p in trainable.values())
    assert record["uplink_bits"] == 3 * per_copy  # every client uploads its trainable state
    assert record["downlink_bits"] == per_copy  # one broadcast of the global state
    assert record["uplink_seconds"] > 0 and record["uplink_joules"] > 0
    assert ledger.total()["bits"] == 4 * per_copy
    frozen_bits = fed.model.frozen.weight.numel() * 32
    assert record["uplink_bits"] < 3 * per_copy + frozen_bits  # the frozen part never travels


def test_resume_from_state_dict_is_exact():
    def make():
        clients = [Client(i, _data(12, i)) for i in range(3)]
        cfg = FedAvgConfig(rounds=4, local_steps=2, batch_size=4, client_fraction=0.67, seed=7)
        return FedAvg(cfg, Tiny(), clients, InProcessTransport(TransferLedger()))

    straight = make()
    for _ in range(4):
        straight.run_round()
    first = make()
    first.run_round()
    first.run_round()
    state = first.state_dict()
    resumed = make()
    resumed.load_state_dict(state)
    resumed.run_round()
    resumed.run_round()
    for name in straight.global_state:
        torch.testing.assert_close(
            resumed.global_state[name], straight.global_state[name], rtol=0, atol=0
        )


def test_client_sampling_is_seeded_and_sized():
    fed = FedAvg(FedAvgConfig(client_fraction=0.3, seed=1), Tiny(),
                 [Client(i, _data(4, i)) for i in range(10)], InProcessTransport(TransferLedger()))  # fmt: skip
    picks = [fed.configure_train(r) for r in range(5)]
    assert all(len(p) == 3 and p == sorted(set(p)) for p in picks)
    assert picks == [fed.configure_train(r) for r in range(5)]
    assert len({tuple(p) for p in picks}) > 1


def test_invalid_fedavg_config():
    from edgelam.config import ConfigError

    with pytest.raises(ConfigError, match="client_fraction"):
        FedAvgConfig(client_fraction=0)
    with pytest.raises(ValueError, match="transport"):
        FedAvg(FedAvgConfig(), Tiny(), [Client(0, _data(4, 0))])


def test_evaluate_hooks_score_the_global_model():
    clients = [Client(i, _data(n, i)) for i, n in enumerate((5, 15))]
    fed = FedAvg(FedAvgConfig(rounds=1, local_steps=1, batch_size=4), Tiny(), clients,
                 InProcessTransport(TransferLedger()))  # fmt: skip
    fed.run_round()
    assert fed.configure_evaluate(1) == [0, 1]
    results = [fed.evaluate_client(c) for c in fed.configure_evaluate(1)]
    ref = Tiny()
    ref.load_state_dict({**ref.state_dict(), **fed.global_state})
    with torch.no_grad():
        direct = [
            nmse_loss(ref(d.dataset.tensors[0]), d.dataset.tensors[1]).item() for d in clients
        ]
    assert [n for _, n in results] == [5, 15]
    assert [loss for loss, _ in results] == pytest.approx(direct, rel=1e-5)
    assert fed.aggregate_evaluate(results) == pytest.approx(
        (5 * direct[0] + 15 * direct[1]) / 20, rel=1e-5
    )
