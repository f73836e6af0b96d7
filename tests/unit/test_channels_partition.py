"""Partitioning samples over edge servers: sizes, disjointness, speed bands, label skew."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgelam.channels.partition import (
    Partition,
    bin_labels,
    partition_by_profile,
    partition_by_speed,
    partition_dirichlet,
    partition_iid,
)

N_FILE = 1000  # samples in a (virtual) file; per-sample arrays are indexed by sample index
SPEEDS = np.random.default_rng(0).uniform(10 / 3.6, 100 / 3.6, N_FILE).astype(np.float32)
TRAIN = np.sort(np.random.default_rng(1).choice(N_FILE, 800, replace=False))


def _disjoint_within(p: Partition, samples: np.ndarray) -> None:
    joined = np.concatenate(p.servers)
    assert np.unique(joined).size == joined.size
    assert np.isin(joined, samples).all()
    assert all(np.array_equal(s, np.sort(s)) for s in p.servers)


def _mean_tv(p: Partition, labels: np.ndarray) -> float:
    """Mean total-variation distance between each server's label histogram and the global one."""
    classes = np.unique(labels)
    glob = np.array([(labels[TRAIN] == c).mean() for c in classes])
    tv = [0.5 * np.abs(np.array([(labels[s] == c).mean() for c in classes]) - glob).sum()
          for s in p.servers]  # fmt: skip
    return float(np.mean(tv))


def test_iid_sizes_disjoint_and_seeded():
    p = partition_iid(TRAIN, 10, 0.05, seed=7, speeds=SPEEDS)
    assert p.sizes == [40] * 10 and len(p) == 10
    _disjoint_within(p, TRAIN)
    same = partition_iid(TRAIN, 10, 0.05, seed=np.random.default_rng(7))
    assert all(np.array_equal(a, b) for a, b in zip(p, same, strict=True))
    assert not np.array_equal(p[0], partition_iid(TRAIN, 10, 0.05, seed=8)[0])
    desc = json.loads(p.to_json())
    assert desc["method"] == "iid" and desc["sizes"] == [40] * 10
    assert desc["parameters"]["fraction_per_server"] == 0.05
    assert desc["mean_speed_mps"][3] == pytest.approx(float(SPEEDS[p[3]].mean()))


def test_iid_split_everything_and_errors():
    p = partition_iid(TRAIN, 3, None, seed=0)
    assert sorted(p.sizes) == [266, 267, 267]
    assert np.array_equal(np.sort(np.concatenate(p.servers)), TRAIN)
    with pytest.raises(ValueError, match=r"num_servers \* fraction_per_server = 11 \* 0.1"):
        partition_iid(TRAIN, 11, 0.1, seed=0)
    with pytest.raises(ValueError, match="fraction_per_server"):
        partition_iid(TRAIN, 2, 0.0, seed=0)
    with pytest.raises(ValueError, match="seed"):
        partition_iid(TRAIN, 2, 0.1, seed=None)


def test_speed_bands_are_monotone():
    p = partition_by_speed(TRAIN, SPEEDS, 5)
    _disjoint_within(p, TRAIN)
    assert p.sizes == [160] * 5
    bands = p.description["speed_band_mps"]
    for j, (lo, hi) in enumerate(bands):
        v = SPEEDS[p[j]]
        assert lo == pytest.approx(v.min()) and hi == pytest.approx(v.max())
        if j:
            assert bands[j - 1][1] <= lo
    assert np.all(np.diff(p.description["mean_speed_mps"]) > 0)
    sub = partition_by_speed(TRAIN, SPEEDS, 5, fraction_per_server=0.05, seed=0)
    assert sub.sizes == [40] * 5
    for j, (lo, hi) in enumerate(bands):  # each server samples within its own band
        assert np.all((SPEEDS[sub[j]] >= lo) & (SPEEDS[sub[j]] <= hi))
    with pytest.raises(ValueError, match="speeds"):
        partition_by_speed(TRAIN, SPEEDS[:500], 5)


def test_profile_partition():
    profiles = np.array([b"cdl-a"] * 500 + [b"cdl-c"] * 300 + [b"uma"] * 200)
    few = partition_by_profile(np.arange(N_FILE), profiles, 2)
    _disjoint_within(few, np.arange(N_FILE))
    assert sum(few.sizes) == N_FILE
    assert few.description["profiles"] == [["cdl-a"], ["cdl-c", "uma"]]
    for s, names in zip(few, few.description["profiles"], strict=True):
        assert set(profiles[s].astype(str)) == set(names)
    many = partition_by_profile(np.arange(N_FILE), profiles, 6, seed=0)
    assert many.description["profiles"] == [["cdl-a"]] * 3 + [["cdl-c"]] * 2 + [["uma"]]
    assert sorted(many.sizes) == [150, 150, 166, 167, 167, 200]
    for s, (name,) in zip(many, many.description["profiles"], strict=True):
        assert set(profiles[s].astype(str)) == {name}
    json.dumps(many.to_dict())


def test_dirichlet_skew_follows_alpha():
    labels = bin_labels(SPEEDS, 5)
    assert np.bincount(labels[TRAIN]).min() > 100
    near_iid = partition_dirichlet(TRAIN, labels, 10, alpha=1000.0, seed=0)
    skewed = partition_dirichlet(TRAIN, labels, 10, alpha=0.05, seed=0, min_size=5)
    for p in (near_iid, skewed):
        _disjoint_within(p, TRAIN)
        assert sum(p.sizes) == TRAIN.size
    assert min(skewed.sizes) >= 5
    assert _mean_tv(near_iid, labels) < 0.1
    assert _mean_tv(skewed, labels) > 0.5
    counts = np.array(skewed.description["label_counts"])
    assert counts.shape == (10, 5) and counts.sum() == TRAIN.size
    stratified = partition_dirichlet(TRAIN, labels, 10, alpha=float("inf"), seed=0)
    assert _mean_tv(stratified, labels) < 0.02
    assert json.loads(stratified.to_json())["parameters"]["alpha"] == "inf"
    with pytest.raises(ValueError, match="min_size"):
        partition_dirichlet(TRAIN, labels, 10, alpha=0.01, seed=0, min_size=79, max_tries=3)


def test_partition_round_trip_and_overlap_check():
    p = partition_iid(100, 4, 0.1, seed=0)
    q = Partition.from_dict(json.loads(p.to_json(include_indices=True)))
    assert all(np.array_equal(a, b) for a, b in zip(p, q, strict=True))
    assert q.description == p.to_dict()
    with pytest.raises(ValueError, match="more than one server"):
        Partition([np.array([1, 2]), np.array([2, 3])])
