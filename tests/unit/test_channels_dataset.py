"""CSIPredictionDataset and splits: slices against raw HDF5, noise statistics, determinism."""

from __future__ import annotations

import pickle

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from edgelam.channels.config import ChannelConfig
from edgelam.channels.dataset import (
    CSIPredictionDataset,
    complex_to_real,
    normalization_stats,
    real_to_complex,
    train_val_test_split,
)
from edgelam.channels.store import CSIFile, generate_dataset

H, FUT, F, A = 4, 2, 8, 4  # history slots, future slots, subcarriers, antenna ports


def _make(tmp_path_factory, duplex: str, n: int) -> CSIFile:
    cfg = ChannelConfig(model="tdl-a", num_samples=n, num_subcarriers=F, bs_rows=1, bs_cols=2,
                        history_slots=H, future_slots=FUT, batch_size=32, duplex=duplex, seed=3)  # fmt: skip
    path = tmp_path_factory.mktemp(duplex) / "csi.h5"
    return generate_dataset(cfg, path, progress=False)


@pytest.fixture(scope="module")
def tdd(tmp_path_factory) -> CSIFile:
    return _make(tmp_path_factory, "tdd", 64)


@pytest.fixture(scope="module")
def fdd(tmp_path_factory) -> CSIFile:
    return _make(tmp_path_factory, "fdd", 12)


def _raw(file: CSIFile, band: str) -> np.ndarray:
    with h5py.File(file.path, "r") as h5:
        return h5[band][...]


def _noise_ratio(ds: CSIPredictionDataset, raw: np.ndarray, snr_of) -> float:
    """Mean over items of (empirical noise power / (sample power / SNR)); 1 if calibrated."""
    power = np.mean(np.abs(raw) ** 2, axis=(1, 2, 3))
    ratios = []
    for i in range(len(ds)):
        s, a = ds.locate(i)
        noisy = real_to_complex(ds.denormalize(ds[i][0]).double().numpy())
        noise = noisy - raw[s, :H, :, a]
        ratios.append(np.mean(np.abs(noise) ** 2) / (power[s] * 10 ** (-snr_of(i, s) / 10)))
    return float(np.mean(ratios))


def test_length_and_item_mapping(tdd):
    samples = np.array([7, 2, 30])
    ds = CSIPredictionDataset(tdd, samples, snr_db=float("inf"))
    assert len(ds) == samples.size * A == 12
    assert [ds.locate(i) for i in (0, 3, 4, 11)] == [(7, 0), (7, 3), (2, 0), (30, 3)]
    with pytest.raises(IndexError):
        ds[12]


@pytest.mark.parametrize("layout", ["split", "interleaved"])
@pytest.mark.parametrize("duplex", ["tdd", "fdd"])
def test_slices_equal_raw_csi(request, duplex, layout):
    file = request.getfixturevalue(duplex)
    up = _raw(file, "csi")
    down = _raw(file, "csi_downlink") if duplex == "fdd" else up
    ds = CSIPredictionDataset(file, [5, 1, 9], snr_db=float("inf"), norm=(0.0, 1.0),
                              layout=layout)  # fmt: skip
    for i in range(len(ds)):
        s, a = ds.locate(i)
        hist, tgt = ds[i]
        want_h, want_t = up[s, :H, :, a], down[s, H:, :, a]
        if layout == "split":  # first F real parts, then F imaginary parts
            ref_h = np.concatenate([want_h.real, want_h.imag], -1)
            ref_t = np.concatenate([want_t.real, want_t.imag], -1)
        else:
            ref_h = np.stack([want_h.real, want_h.imag], -1).reshape(H, 2 * F)
            ref_t = np.stack([want_t.real, want_t.imag], -1).reshape(FUT, 2 * F)
        assert hist.dtype == torch.float32 and hist.shape == (H, 2 * F)
        assert tgt.shape == (FUT, 2 * F)
        np.testing.assert_array_equal(hist.numpy(), ref_h)
        np.testing.assert_array_equal(tgt.numpy(), ref_t)
    if duplex == "fdd":  # the target really is the downlink band, not the uplink one
        s, a = ds.locate(0)
        assert not np.allclose(ds[0][1].numpy(), complex_to_real(up[s, H:, :, a]))


@pytest.mark.parametrize("duplex", ["tdd", "fdd"])
def test_normalisation_with_file_statistics(request, duplex):
    file = request.getfixturevalue(duplex)
    raw = _raw(file, "csi")
    ds = CSIPredictionDataset(file, snr_db=float("inf"))
    assert (ds.mean, ds.std) == (file.norm_mean, file.norm_std)
    s, a = ds.locate(6)
    hist = ds[6][0]
    ref = (complex_to_real(raw[s, :H, :, a]) - file.norm_mean) / file.norm_std
    np.testing.assert_allclose(hist.numpy(), ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ds.denormalize(hist).numpy(), complex_to_real(raw[s, :H, :, a]),
                               rtol=1e-5, atol=1e-6)  # fmt: skip
    # stats over all samples reproduce the file's attributes (both bands for FDD)
    np.testing.assert_allclose(normalization_stats(file), (file.norm_mean, file.norm_std),
                               rtol=1e-6, atol=1e-9)  # fmt: skip


def test_normalization_stats_of_a_subset(tdd):
    subset = np.array([9, 3, 40, 41])
    parts = _raw(tdd, "csi")[np.sort(subset)].view(np.float32).astype(np.float64)
    mean, std = normalization_stats(tdd, subset, chunk_size=3)
    assert mean == pytest.approx(parts.mean(), abs=1e-9)
    assert std == pytest.approx(parts.std(), rel=1e-9)
    ds = CSIPredictionDataset(tdd, subset, norm=(mean, std), snr_db=float("inf"))
    assert ds.std == std and ds.mean == mean


def test_fixed_snr_noise_power(tdd):
    raw = _raw(tdd, "csi")
    for snr in (0.0, 10.0):
        ds = CSIPredictionDataset(tdd, snr_db=snr, seed=1)
        assert _noise_ratio(ds, raw, lambda i, s, snr=snr: snr) == pytest.approx(1.0, abs=0.05)


def test_stored_and_drawn_snr(tdd):
    raw = _raw(tdd, "csi")
    stored = CSIPredictionDataset(tdd, snr_db=None)
    assert stored.item_snr_db(9) == pytest.approx(float(tdd.meta["snr_db"][stored.locate(9)[0]]))
    ratio = _noise_ratio(stored, raw, lambda i, s: float(tdd.meta["snr_db"][s]))
    assert ratio == pytest.approx(1.0, abs=0.05)
    drawn = CSIPredictionDataset(tdd, snr_db=(5.0, 20.0))
    snrs = np.array([drawn.item_snr_db(i) for i in range(len(drawn))])
    assert snrs.min() >= 5.0 and snrs.max() <= 20.0 and snrs.std() > 3.0
    assert _noise_ratio(drawn, raw, lambda i, s: snrs[i]) == pytest.approx(1.0, abs=0.05)


def test_target_noise_only_when_asked(fdd):
    clean = CSIPredictionDataset(fdd, snr_db=float("inf"))
    noisy_h = CSIPredictionDataset(fdd, snr_db=5.0)
    noisy_ht = CSIPredictionDataset(fdd, snr_db=5.0, noisy_target=True)
    h0, t0 = clean[3]
    h1, t1 = noisy_h[3]
    h2, t2 = noisy_ht[3]
    assert not torch.equal(h0, h1) and torch.equal(t0, t1)
    assert torch.equal(h1, h2) and not torch.equal(t0, t2)


def test_noise_is_reproducible_per_seed_epoch_and_item(tdd):
    a = CSIPredictionDataset(tdd, snr_db=10.0, seed=4)
    b = CSIPredictionDataset(tdd, snr_db=10.0, seed=4, in_memory=False, cache_samples=2)
    items = [5, 17, 100, 6]
    first = [a[i][0] for i in items]
    assert all(torch.equal(x, b[i][0]) for x, i in zip(first, items, strict=True))
    a.set_epoch(1)
    assert not any(torch.equal(x, a[i][0]) for x, i in zip(first, items, strict=True))
    a.set_epoch(0)
    assert all(torch.equal(x, a[i][0]) for x, i in zip(first, items, strict=True))
    other = CSIPredictionDataset(tdd, snr_db=10.0, seed=5)
    assert not torch.equal(first[0], other[5][0])
    # an item's noise does not depend on the subset it is in
    sub = CSIPredictionDataset(tdd, [a.locate(17)[0]], snr_db=10.0, seed=4)
    assert torch.equal(sub[17 % A][0], first[1])


def test_split_is_disjoint_complete_and_validated(tdd):
    split = train_val_test_split(tdd, seed=2)
    assert [len(s) for s in split] == [51, 7, 6]  # largest remainder: 51.2, 6.4, 6.4
    joined = np.concatenate(split)
    assert np.array_equal(np.sort(joined), np.arange(64))
    assert all(np.array_equal(s, np.sort(s)) for s in split)
    again = train_val_test_split(64, seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(split, again, strict=True))
    assert not np.array_equal(split.train, train_val_test_split(64, seed=3).train)
    assert [len(s) for s in train_val_test_split(1000, (0.7, 0.2, 0.1), 0)] == [700, 200, 100]
    for bad in [(0.5, 0.3, 0.3), (0.9, 0.2, -0.1), (0.5, 0.5), (1.0, 0.0, 0.0)]:
        with pytest.raises(ValueError, match="fractions"):
            train_val_test_split(64, bad, 0)
    # datasets of the splits share no user, whatever the antenna
    users = [{CSIPredictionDataset(tdd, s, snr_db=float("inf")).locate(i)[0]
              for i in range(len(s) * A)} for s in split]  # fmt: skip
    assert not (users[0] & users[1] or users[0] & users[2] or users[1] & users[2])


def test_argument_errors(tdd):
    with pytest.raises(ValueError, match="samples"):
        CSIPredictionDataset(tdd, [0, 64])
    with pytest.raises(ValueError, match="samples"):
        CSIPredictionDataset(tdd, [1, 1])
    with pytest.raises(ValueError, match="snr_db"):
        CSIPredictionDataset(tdd, snr_db=(20.0, 5.0))
    with pytest.raises(ValueError, match="layout"):
        CSIPredictionDataset(tdd, layout="polar")


def test_dataloader_workers_match_single_process(fdd):
    ds = CSIPredictionDataset(fdd, [0, 3, 7], snr_db=(5.0, 20.0), noisy_target=True,
                              in_memory=False)  # fmt: skip
    pickle.loads(pickle.dumps(ds))  # spawn-safe even with an open HDF5 handle
    fdd.read(0)  # make sure the parent holds an open handle when forking

    def batches(workers):
        loader = DataLoader(ds, batch_size=5, num_workers=workers)
        return [torch.cat(b, dim=1) for b in loader]

    single, multi = batches(0), batches(2)
    assert len(single) == 3
    assert all(torch.equal(x, y) for x, y in zip(single, multi, strict=True))
