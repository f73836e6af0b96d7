"""Rényi DP for split FedFT: accountant values, mechanism statistics, protocol integration."""

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from dp_accounting import dp_event
from dp_accounting.privacy_accountant import NeighboringRelation
from dp_accounting.rdp import rdp_privacy_accountant as rdp_lib
from scipy import special, stats
from test_split import _one_thread, tiny_llm4cp  # noqa: F401 (autouse)
from test_split_fedft import _centralised_grads, _data, _model, _rel, _sgd
from torch.utils.data import TensorDataset

from edgelam.config import ConfigError
from edgelam.training.privacy import (
    AnalogChannel,
    PrivacyAccountant,
    PrivacyConfig,
    analog_noise,
    calibrate_noise,
    clip_per_sample,
    digital_noise,
    epsilon,
    privacy_transmit_power,
    privatize,
    rdp_curve,
)
from edgelam.training.privacy.analysis import ROW_ORDERS, rdp_poisson_rows
from edgelam.training.privacy.command import privacy_group
from edgelam.training.split_fedft import (
    DeviceData,
    InProcessLink,
    SplitFedFT,
    SplitFedFTConfig,
    dataset_batches,
)

ANCHOR = dict(noise_multiplier=1.0, sample_rate=0.01, steps=1000, delta=1e-5)


# -- accounting ---------------------------------------------------------------------------------
def test_accountants_match_the_anchor_values():
    """ANCHORS.md: RDP 2.1014, PLD 1.828; PLD is the tighter of the two."""
    rdp = epsilon(**ANCHOR)
    pld = epsilon(**ANCHOR, accountant="pld")
    assert rdp == pytest.approx(2.1014, abs=1e-4)
    assert pld == pytest.approx(1.828, abs=1e-3)
    assert pld < rdp
    acc = PrivacyAccountant()
    for _ in range(1000):  # one explicit step per iteration composes to the same value
        acc.step(1.0, 0.01)
    assert acc.steps == 1000 and acc.get_epsilon(1e-5) == pytest.approx(rdp, rel=1e-9)


def _mironov_rdp(sigma, q, alpha):
    """RDP of the Poisson-subsampled Gaussian at integer alpha (Mironov, Talwar, Zhang 2019,
    binomial expansion): log sum_k C(alpha, k) (1-q)^(alpha-k) q^k e^((k^2-k)/(2 sigma^2))."""
    k = np.arange(alpha + 1)
    log_binom = special.gammaln(alpha + 1) - special.gammaln(k + 1) - special.gammaln(alpha - k + 1)
    terms = (
        log_binom + (alpha - k) * math.log1p(-q) + k * math.log(q) + (k * k - k) / (2 * sigma**2)
    )
    return special.logsumexp(terms) / (alpha - 1)


@pytest.mark.parametrize("sigma,q", [(1.0, 0.01), (0.7, 0.1), (2.5, 0.5), (1.3, 0.003)])
def test_poisson_rdp_equals_an_independent_binomial_expansion(sigma, q):
    orders = [float(a) for a in range(2, 41)]
    ours = rdp_curve(sigma, q, orders=orders)
    theirs = np.array([_mironov_rdp(sigma, q, int(a)) for a in orders])
    np.testing.assert_allclose(ours, np.minimum(theirs, np.array(orders) / (2 * sigma**2)),
                               rtol=1e-9)  # fmt: skip


def test_fixed_size_and_replace_one_curves_are_bounded_and_monotone():
    gaussian = np.array(ROW_ORDERS) / (2 * 0.8**2)
    curves = [rdp_curve(0.8, m / 50, sampling="fixed", dataset_size=50) for m in (1, 5, 25, 50)]
    np.testing.assert_allclose(curves[-1], gaussian, rtol=1e-12)  # q = 1: the Gaussian
    for lo, hi in zip(curves, curves[1:], strict=False):
        assert np.all(lo <= hi + 1e-12) and np.all(hi <= gaussian + 1e-12)
    assert np.all(rdp_curve(1.6, 0.1, sampling="fixed", dataset_size=50) < curves[1])
    # fixed-size sampling of a sum is not analysed under add/remove
    with pytest.raises(ConfigError, match="replace-one"):
        rdp_curve(1.0, 0.1, sampling="fixed", relation="add_remove", dataset_size=50)


def test_poisson_under_replace_one_bounds_the_exact_mixture():
    """The blocked mixture is an upper bound within 1% of the full sum over every batch size."""
    sigma, q, n = 0.9, 0.05, 120
    orders = ROW_ORDERS
    b = np.arange(1, n + 1)
    log_p = stats.binom.logpmf(b, n, q) - math.log(1 - (1 - q) ** n)  # b >= 1
    curves = []
    for m in b:
        acc = rdp_lib.RdpAccountant(list(orders), NeighboringRelation.REPLACE_ONE)
        acc.compose(dp_event.SampledWithoutReplacementDpEvent(
            n, int(m), dp_event.GaussianDpEvent(sigma)))  # fmt: skip
        curves.append(np.minimum(acc.rdp, np.array(orders) / (2 * sigma**2)))
    alphas = np.array(orders)
    exact = special.logsumexp(log_p[:, None] + (alphas - 1) * np.stack(curves), axis=0)
    exact /= alphas - 1
    ours = rdp_poisson_rows(sigma, q, n, orders)
    assert np.all(ours >= exact - 1e-12)
    np.testing.assert_allclose(ours, exact, rtol=1e-2)
    # and the resulting epsilon sits just above the fixed-size one at the same rate
    fixed = epsilon(sigma, q, 100, 1e-5, sampling="fixed", dataset_size=n)
    rows = epsilon(sigma, q, 100, 1e-5, sampling="poisson", relation="replace_one", dataset_size=n)
    assert fixed < rows < 1.5 * fixed


@pytest.mark.parametrize(
    "setting,q,steps,targets",
    [(dict(), 0.01, 1000, (1.0, 3.0, 8.0)),
     (dict(sampling="fixed", dataset_size=400), 0.01, 1000, (1.0, 3.0, 8.0)),
     (dict(sampling="poisson", relation="replace_one", dataset_size=20, rtol=1e-3), 0.2, 20,
      (4.0,))],
)  # fmt: skip
def test_calibration_round_trips(setting, q, steps, targets):
    check = {k: v for k, v in setting.items() if k != "rtol"}
    for target in targets:
        sigma = calibrate_noise(target, 1e-5, q, steps, **setting)
        assert epsilon(sigma, q, steps, 1e-5, **check) <= target
        assert epsilon(sigma * (1 - 1e-3), q, steps, 1e-5, **check) > target
    assert calibrate_noise(3.0, 1e-5, 0.01, 1000) == pytest.approx(0.865, abs=1e-3)  # ANCHORS


def test_accountant_state_round_trips_and_rejects_mismatches():
    acc = PrivacyAccountant("rdp", "replace_one")
    acc.step(1.1, 0.1, "fixed", count=3, dataset_size=40)
    acc.step(1.1, 0.1, "fixed", dataset_size=40)  # merged with the run before
    acc.step(0.9, 0.05, "poisson", count=2, dataset_size=40)
    state = json.loads(json.dumps(acc.state_dict()))
    assert [h[3] for h in state["history"]] == [4, 2] and acc.steps == 6
    again = PrivacyAccountant("rdp", "replace_one")
    again.load_state_dict(state)
    assert again.get_epsilon(1e-5) == acc.get_epsilon(1e-5) > 0
    again.step(0.9, 0.05, "poisson", dataset_size=40)
    acc.step(0.9, 0.05, "poisson", dataset_size=40)
    assert again.get_epsilon(1e-5) == acc.get_epsilon(1e-5)
    pld = PrivacyAccountant("pld")
    pld.step(1.0, 0.01, count=500)
    pld_again = PrivacyAccountant("pld")
    pld_again.load_state_dict(json.loads(json.dumps(pld.state_dict())))
    assert pld_again.get_epsilon(1e-5) == pytest.approx(pld.get_epsilon(1e-5), rel=1e-12)
    with pytest.raises(ConfigError, match="accountant state"):
        PrivacyAccountant().load_state_dict(state)
    with pytest.raises(ConfigError, match="'pld' supports add/remove"):
        PrivacyAccountant("pld", "replace_one")
    assert PrivacyAccountant().get_epsilon(1e-5) == 0.0
    no_noise = PrivacyAccountant()
    no_noise.step(0.0, 0.01)
    assert no_noise.get_epsilon(1e-5) == math.inf


# -- mechanism ----------------------------------------------------------------------------------
def test_clipping_bounds_every_sample_and_leaves_small_ones_untouched():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 5, 7, generator=gen, dtype=torch.float64)
    x = x * torch.logspace(-2, 1, 64, dtype=torch.float64).view(-1, 1, 1)  # norms 0.06 .. 59
    x.requires_grad_(True)
    clipped, norms = clip_per_sample(x, 1.5)
    after = clipped.detach().flatten(1).norm(dim=1)
    small = norms <= 1.5
    assert 0 < small.sum() < 64
    assert torch.all(after <= 1.5 * (1 + 1e-12))
    assert torch.equal(clipped.detach()[small], x.detach()[small])
    torch.testing.assert_close(after[~small], torch.full_like(after[~small], 1.5))
    cosine = torch.nn.functional.cosine_similarity(
        clipped.detach().flatten(1), x.detach().flatten(1)
    )
    torch.testing.assert_close(cosine, torch.ones_like(cosine))  # direction kept
    clipped.sum().backward()  # differentiable: the embedding backward goes through the clip
    assert torch.all(x.grad[small] == 1)


def _chi2_p(values, std):
    """Two-sided p-value of sum (z / std)^2 ~ chi2(N) for zero-mean Gaussian z."""
    n, stat = values.numel(), float((values.double() / std).square().sum())
    cdf = stats.chi2.cdf(stat, n)
    return 2 * min(cdf, 1 - cdf), stat / n


def test_noise_has_the_right_variance_and_is_seeded():
    x = torch.randn(8, 4, 16, generator=torch.Generator().manual_seed(1))
    noises = []
    for seed in range(100):
        out = privatize(x, clip_norm=2.0, noise_std=0.7 * 2.0,
                        generator=torch.Generator().manual_seed(seed))  # fmt: skip
        torch.testing.assert_close(out.released - out.clipped, out.noise)
        noises.append(out.noise)
    z = torch.stack(noises)  # 51200 draws
    p, ratio = _chi2_p(z, 1.4)
    assert p > 1e-4 and ratio == pytest.approx(1.0, abs=0.03)
    assert abs(float(z.mean())) < 4 * 1.4 / math.sqrt(z.numel())
    # the wrong std is rejected by the same test: it can fail
    assert _chi2_p(z, 1.4 * 1.05)[0] < 1e-6
    again = privatize(x, 2.0, 1.4, torch.Generator().manual_seed(0))
    assert torch.equal(again.noise, noises[0])


def test_analog_uplink_math():
    target, clip, entries = 0.8, 1.0, 64
    power_star = privacy_transmit_power(target, clip, entries, gain=1e-10, noise_power=1e-13)
    assert power_star == pytest.approx(1e-13 * clip**2 / (1e-10 * entries * target**2))
    for power in (power_star * 4, power_star * 1e3, power_star * 1e9):
        u = analog_noise(target, clip, entries, AnalogChannel(1e-10, power, 1e-13))
        assert u.device_std > 0
        assert u.device_std**2 + u.receiver_std**2 == pytest.approx(target**2, rel=1e-12)
        assert u.amplitude**2 * (clip**2 / entries + u.device_std**2) == pytest.approx(power)
    assert u.device_std == pytest.approx(target, rel=1e-6)  # huge SNR: as good as digital
    at_star = analog_noise(target, clip, entries, AnalogChannel(1e-10, power_star, 1e-13))
    assert at_star.device_std == 0 and at_star.effective_std == pytest.approx(target)
    below = analog_noise(target, clip, entries, AnalogChannel(1e-10, power_star / 10, 1e-13))
    assert below.device_std == 0 and below.effective_std > target  # the channel alone suffices
    assert digital_noise(target).device_std == target and digital_noise(target).receiver_std == 0


# -- the split-FedFT protocol -------------------------------------------------------------------
def _shards(seed=0, sizes=(20, 30)):
    return [dataset_batches(TensorDataset(
        torch.randn(n, 4, 16, generator=torch.Generator().manual_seed(n), dtype=torch.float64),
        torch.randn(n, 2, 16, generator=torch.Generator().manual_seed(n + 1), dtype=torch.float64)),
        4, seed, k) for k, n in enumerate(sizes)]  # fmt: skip


def _private(iterations=1, optimizer="adam", **privacy):
    privacy = {"enabled": True, "noise_multiplier": 1.0, **privacy}
    return SplitFedFTConfig(iterations=iterations, batch_size=4, device_sync_every=0,
                            optimizer=optimizer, lr=0.1 if optimizer == "sgd" else 1e-3,
                            embedding_grad=True, count_flops=False,
                            privacy=PrivacyConfig(**privacy))  # fmt: skip


def _llm4cp():
    return tiny_llm4cp("sample").double().eval()


class RecordingLink(InProcessLink):
    """Keeps every uplink payload as sent."""

    def __init__(self, num_devices):
        super().__init__(num_devices)
        self.sent = []

    def exchange(self, src, dst, payload, what, iteration):
        if payload is not None and dst == -1:
            self.sent.append((iteration, src, what, {n: t.clone() for n, t in payload.items()}))
        return super().exchange(src, dst, payload, what, iteration)


def _uplink(config):
    """What each device sends up at iteration 0: ``{what: {device: tensor}}``."""
    link = RecordingLink(2)
    SplitFedFT(config, _llm4cp(), _shards(), link).run_iteration()
    out = {}
    for _, k, what, payload in link.sent:
        out.setdefault(what, {})[k] = payload[what]
    return out


def test_transmitted_tensors_carry_noise_of_the_right_variance():
    """Iteration 0 with sigma vs sigma = 0 (same seed, batch, model): the difference of what
    goes up is the noise alone, std sigma C / B on the Jacobians and sigma C_e on embeddings."""
    sigma, clip, clip_e, b = 0.6, 0.05, 2.0, 4
    kw = dict(clip_norm=clip, clip_embeddings=True, embedding_clip_norm=clip_e)
    noisy = _uplink(_private(**kw, noise_multiplier=sigma))
    clean = _uplink(_private(**kw, noise_multiplier=0.0))
    jac = torch.cat([(noisy["jacobians"][k] - clean["jacobians"][k]).flatten() for k in (0, 1)])
    emb = torch.cat([(noisy["embeddings"][k] - clean["embeddings"][k]).flatten() for k in (0, 1)])
    for diff, std in ((jac, sigma * clip / b), (emb, sigma * clip_e)):
        p, ratio = _chi2_p(diff, std)
        assert p > 1e-4 and 0.85 < ratio < 1.15
        assert _chi2_p(diff, 1.2 * std)[0] < 1e-4  # a 20% wrong std would fail
    for k in (0, 1):  # what the sigma = 0 run sends is clipped per sample
        assert torch.all(clean["embeddings"][k].flatten(1).norm(dim=1) <= clip_e * (1 + 1e-9))
        assert torch.all((b * clean["jacobians"][k]).flatten(1).norm(dim=1) <= clip * (1 + 1e-9))


@pytest.mark.parametrize("sampling", ["fixed", "poisson"])
def test_private_split_fedft_records_epsilon_that_grows(sampling):
    cfg = _private(iterations=5, clip_embeddings=True, noise_multiplier=1.2, sampling=sampling)
    algo = SplitFedFT(cfg, _llm4cp(), _shards())
    records = algo.run()
    for t, record in enumerate(records):
        rows = {r["device"]: r for r in record["devices"]}
        for k, n in enumerate((20, 30)):  # what the accountant must hold: t + 1 steps at q = 4/n
            want = epsilon(1.2 / (2 * math.sqrt(2)), 4 / n, t + 1, 1e-5, sampling=sampling,
                           relation="replace_one", dataset_size=n)  # fmt: skip
            assert rows[k]["epsilon"] == pytest.approx(want, rel=1e-9)
        assert record["epsilon"] == max(r["epsilon"] for r in record["devices"])
        assert record["delta"] == 1e-5 and math.isfinite(record["loss"])
        assert record["cascade"]["lora_noise_norm"] > 0
    eps = [r["epsilon"] for r in records]
    assert all(a < b for a, b in zip(eps, eps[1:], strict=False))
    # the device with more data (smaller q) spends less
    assert records[-1]["devices"][1]["epsilon"] < records[-1]["devices"][0]["epsilon"]


def test_targets_only_release_accounts_the_most_drawn_sample():
    cfg = _private(iterations=6, noise_multiplier=1.5)  # embeddings go up in the clear
    algo = SplitFedFT(cfg, _llm4cp(), _shards())
    records = algo.run()
    for k in (0, 1):
        draws = int(algo.devices[k].privacy.draws.max())
        assert 1 < draws <= 6
        want = epsilon(1.5 / 2, 1.0, draws, 1e-5, sampling="fixed", dataset_size=1)
        assert records[-1]["devices"][k]["epsilon"] == pytest.approx(want, rel=1e-12)


def test_target_epsilon_is_calibrated_and_met():
    cfg = _private(iterations=4, noise_multiplier=None, target_epsilon=6.0, clip_embeddings=True)
    records = SplitFedFT(cfg, _llm4cp(), _shards()).run()
    final = [r["epsilon"] for r in records[-1]["devices"]]
    assert all(5.9 < e <= 6.0 for e in final)
    sigmas = [r["privacy"]["noise_multiplier"] for r in records[-1]["devices"]]
    assert sigmas[0] > sigmas[1]  # fewer samples, larger q: more noise for the same epsilon


def test_poisson_and_fixed_batches_are_drawn_as_accounted():
    from edgelam.training.privacy.protocol import DevicePrivacy

    data = _shards(sizes=(40,))[0]
    for sampling in ("fixed", "poisson"):
        guard = DevicePrivacy(PrivacyConfig(enabled=True, noise_multiplier=1.0,
                                            sampling=sampling), 0, 40, 4, 400, 0)  # fmt: skip
        counts, sizes = torch.zeros(40), []
        for t in range(400):
            guard.batch(t, data)
            assert len(set(guard.indices.tolist())) == len(guard.indices) >= 1
            counts[guard.indices] += 1
            sizes.append(len(guard.indices))
        if sampling == "fixed":
            assert set(sizes) == {4}
        else:  # binomial(40, 0.1) conditioned on >= 1
            mean = 4 / (1 - 0.9**40)
            assert np.mean(sizes) == pytest.approx(mean, abs=4 * math.sqrt(3.6 / 400))
        # every sample is drawn at rate ~ q (chi-square of the counts)
        assert stats.chisquare(counts.numpy()).pvalue > 1e-4


def test_analog_uplink_noise_adds_up_at_the_server():
    sigma, clip = 0.8, 0.05
    channel = lambda t, k: AnalogChannel(gain=1e-10 * (k + 1), transmit_power=1e-4,  # noqa: E731
                                         noise_power=1e-13)  # fmt: skip
    cfg = _private(noise_multiplier=sigma, clip_norm=clip, uplink="analog")
    record = SplitFedFT(cfg, _llm4cp(), _shards(), uplink_channel=channel).run_iteration()
    for row in record["devices"]:
        u = row["privacy"]["jacobians"]
        assert u["device_std"] > 0 and u["receiver_std"] > 0
        assert math.hypot(u["device_std"], u["receiver_std"]) == pytest.approx(sigma * clip)
    receiver = [r["privacy"]["jacobians"]["receiver_std"] for r in record["devices"]]
    assert receiver[0] > receiver[1]  # device 1 has the better channel
    # the noise the server measured (device + receiver draws): chi-square of its RMS
    entries = 2 * 4 * 4 * 16
    rms = record["cascade"]["jacobian_noise_std"]
    cdf = stats.chi2.cdf(entries * (rms / (sigma * clip / 4)) ** 2, entries)
    assert 1e-4 < cdf < 1 - 1e-4
    with pytest.raises(ConfigError, match="uplink_channel"):
        SplitFedFT(cfg, _llm4cp(), _shards())


def test_cascade_separates_the_noise_from_the_clean_gradient():
    """g - g_Z equals the LoRA gradient of the same clipped Jacobians without noise."""

    def lora_step(sigma):
        model = _llm4cp()
        before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
        algo = SplitFedFT(_private(optimizer="sgd", noise_multiplier=sigma, clip_norm=0.05),
                          model, _shards())  # fmt: skip
        record = algo.run_iteration()
        step = torch.cat([(before[n] - p.detach()).flatten() / 0.1
                          for n, p in model.named_parameters() if "lora_" in n])  # fmt: skip
        return record, step

    noisy, g = lora_step(0.5)
    _, g_clean = lora_step(0.0)
    cascade = noisy["cascade"]
    assert cascade["lora_signal_norm"] == pytest.approx(float(g_clean.norm()), rel=1e-9)
    assert cascade["lora_noise_norm"] == pytest.approx(float((g - g_clean).norm()), rel=1e-9)
    rms = float((g - g_clean).norm()) / math.sqrt(g.numel())
    assert cascade["lora_noise_std"] == pytest.approx(rms)
    assert cascade["jacobian_noise_std"] == pytest.approx(0.5 * 0.05 / 4, rel=0.15)


def test_disabled_privacy_leaves_the_exact_numbers_unchanged():
    """The exactness check of test_split_fedft, with a privacy section present but disabled."""
    model = _model("llm4cp")
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    expected = _centralised_grads("llm4cp", model)
    cfg = _sgd(embedding_grad=True, privacy=PrivacyConfig(enabled=False, noise_multiplier=5.0))
    plain = SplitFedFT(_sgd(embedding_grad=True), _model("llm4cp"), _data("llm4cp"))
    record = SplitFedFT(cfg, model, _data("llm4cp")).run_iteration()
    step = torch.cat([(before[n] - p.detach()).flatten() / cfg.lr
                      for n, p in model.named_parameters() if "lora_" in n])  # fmt: skip
    assert _rel(step, torch.cat([expected[n].flatten() for n in before])) <= 1e-6
    reference = plain.run_iteration()
    drop = ("wall_seconds",)
    assert {k: v for k, v in record.items() if k not in drop} == {
        k: v for k, v in reference.items() if k not in drop
    }
    assert "epsilon" not in record and "cascade" not in record


def test_privacy_configuration_errors_are_clear():
    with pytest.raises(ConfigError, match="device_sync_every: must be 0 with privacy"):
        SplitFedFTConfig(privacy=PrivacyConfig(enabled=True, noise_multiplier=1.0))
    with pytest.raises(ConfigError, match="exactly one of noise_multiplier and target_epsilon"):
        PrivacyConfig(enabled=True)
    with pytest.raises(ConfigError, match="noise_multiplier: must be >= 0"):
        PrivacyConfig(noise_multiplier=-1.0)
    with pytest.raises(ConfigError, match="delta: must be in"):
        PrivacyConfig(delta=1.0)
    with pytest.raises(ConfigError, match="sampling: 'shuffle' is not one of"):
        PrivacyConfig(sampling="shuffle")
    with pytest.raises(ConfigError, match="normalization='batch'"):
        SplitFedFT(_private(), tiny_llm4cp("batch").double(), _shards())
    fixed = [DeviceData(lambda t: _data("llm4cp")[0].batches(t), 30)] * 2
    with pytest.raises(ConfigError, match="cannot be drawn by index"):
        SplitFedFT(_private(), _llm4cp(), fixed).run_iteration()


# -- command line -------------------------------------------------------------------------------
def _invoke(*args):
    return CliRunner().invoke(privacy_group, list(args))


def test_cli_epsilon_and_calibrate():
    common = ["--sample-rate", "0.01", "--steps", "1000", "--delta", "1e-5"]
    out = _invoke("epsilon", "--noise-multiplier", "1.0", *common)
    assert out.exit_code == 0 and "epsilon = 2.1014 at delta = 1e-05" in out.output
    out = _invoke("epsilon", "--noise-multiplier", "1.0", *common, "--accountant", "pld", "--json")
    assert json.loads(out.output)["epsilon"] == pytest.approx(1.828, abs=1e-3)
    out = _invoke("calibrate", "--epsilon", "3", *common, "--json")
    result = json.loads(out.output)
    assert result["noise_multiplier"] == pytest.approx(0.865, abs=1e-3) and result["epsilon"] <= 3


@pytest.mark.parametrize(
    "args,message",
    [(["--noise-multiplier", "-1"], "--noise-multiplier: must be >= 0"),
     (["--sample-rate", "0"], "--sample-rate: must be in (0, 1]"),
     (["--sample-rate", "1.5"], "--sample-rate: must be in (0, 1]"),
     (["--delta", "1"], "--delta: must be in (0, 1)"),
     (["--delta", "0"], "--delta: must be in (0, 1)"),
     (["--steps", "0"], "--steps: must be an integer >= 1"),
     (["--accountant", "pld", "--sampling", "fixed", "--dataset-size", "100"],
      "--accountant: 'pld' supports Poisson")],
)  # fmt: skip
def test_cli_rejects_invalid_values_naming_the_option(args, message):
    base = {"--noise-multiplier": "1", "--sample-rate": "0.01", "--steps": "10", "--delta": "1e-5"}
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    out = _invoke("epsilon", *[w for pair in base.items() for w in pair])
    assert isinstance(out.exception, ConfigError) and out.exit_code != 0
    assert str(out.exception).startswith(message)
    if "--epsilon" not in args:
        out = _invoke("calibrate", "--epsilon", "-2", "--sample-rate", "0.01", "--steps", "10",
                      "--delta", "1e-5")  # fmt: skip
        assert str(out.exception).startswith("--epsilon: must be > 0")


# -- the attack ---------------------------------------------------------------------------------
def test_embedding_inversion_succeeds_in_the_clear_and_fails_under_noise():
    from edgelam.distributed.dist_transport import _synthetic_csi
    from edgelam.models.llm4cp import LLM4CPConfig
    from edgelam.training.privacy.attack import InversionConfig, inversion_nmse_db, train_inversion
    from edgelam.training.split import split_model

    embedding = split_model(tiny_llm4cp("sample").eval()).embedding
    shape = LLM4CPConfig(history_slots=4, future_slots=2, num_subcarriers=8)
    auxiliary = _synthetic_csi(1024, shape, torch.Generator().manual_seed(0))[0].float()
    private = _synthetic_csi(128, shape, torch.Generator().manual_seed(1))[0].float()

    def embed(x):
        return embedding(x)[0]

    nmse = {}
    for sigma in (0.0, 0.3, 1.0):
        cfg = InversionConfig(hidden=128, steps=300, clip_norm=4.0, noise_std=4.0 * sigma)
        decoder = train_inversion(embed, auxiliary, cfg)
        released = privatize(embed(private).detach(), 4.0, 4.0 * sigma,
                             torch.Generator().manual_seed(5)).released  # fmt: skip
        nmse[sigma] = inversion_nmse_db(decoder, released, private)
    assert nmse[0.0] < -5  # the server reconstructs the device's CSI history from embeddings
    assert nmse[0.0] < nmse[0.3] < nmse[1.0]
    assert nmse[1.0] > -1  # no better than predicting zero
