"""Pre-training corpus: seeded configuration mix, held-out set, cache, per-file normalisation."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from edgelam.channels.config import model_family
from edgelam.config import ConfigError
from edgelam.pretrain.corpus import (
    CorpusConfig,
    build_corpus,
    build_held_out,
    config_hash,
    corpus_configs,
    corpus_splits,
    held_out_configs,
)
from edgelam.pretrain.train import pretrain_profile


def test_corpus_configs_are_deterministic_and_never_use_held_out_models():
    cfg = CorpusConfig()
    configs = corpus_configs(cfg)
    assert configs == corpus_configs(CorpusConfig())  # same config -> same draws
    assert len(configs) == cfg.num_configs
    assert {c.model for c in configs} == set(cfg.models)  # round robin covers every model
    assert not {c.model for c in configs} & set(cfg.held_out)
    for c in configs:
        assert c.num_subcarriers in cfg.subcarrier_counts
        assert c.history_slots == 16 and c.future_slots == 4
        assert c.subcarrier_spacing_hz / 1e3 in cfg.subcarrier_spacings_khz
        assert f"{c.bs_rows}x{c.bs_cols}" in cfg.bs_arrays and c.duplex in cfg.duplex
        assert 0 <= c.speed_kmh[0] < c.speed_kmh[1] <= 120
        if model_family(c.model) == "cdl":
            assert round(c.delay_spread_s * 1e9, 6) in cfg.delay_spreads_ns
    # the mix really varies along its axes
    assert len({c.duplex for c in configs}) == 2 and len({c.bs_rows for c in configs}) == 2
    assert len({c.subcarrier_spacing_hz for c in configs}) == 3
    assert {c.num_subcarriers for c in configs} == set(cfg.subcarrier_counts)
    held = held_out_configs(cfg)
    assert {c.num_subcarriers for c in held} == {cfg.held_out_subcarriers}
    assert [(c.model, c.los) for c in held] == [("cdl-b", "nlos"), ("umi", "nlos"), ("umi", "los")]
    train_hashes = {config_hash(c) for c in configs}
    assert len(train_hashes) == len(configs) and not train_hashes & {config_hash(c) for c in held}
    other = corpus_configs(dataclasses.replace(cfg, seed=1))
    assert [config_hash(c) for c in other] != [config_hash(c) for c in configs]


def test_corpus_config_rejects_overlap_and_malformed_axes():
    with pytest.raises(ConfigError, match="held_out: \\['umi'\\]"):
        CorpusConfig(models=("cdl-a", "umi"))
    with pytest.raises(ConfigError, match="bs_arrays"):
        CorpusConfig(bs_arrays=("4by4",))
    with pytest.raises(ConfigError, match="speed_edges_kmh"):
        CorpusConfig(speed_edges_kmh=(30.0, 10.0))


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    cfg = pretrain_profile("tiny").corpus
    cache = tmp_path_factory.mktemp("corpus")
    return cfg, cache, build_corpus(cfg, cache, progress=False)


def test_build_corpus_caches_files_by_config_hash(tiny_corpus):
    cfg, cache, paths = tiny_corpus
    assert [p.stem.rsplit("-", 1)[1] for p in paths] == [
        config_hash(c) for c in corpus_configs(cfg)
    ]
    mtimes = [p.stat().st_mtime_ns for p in paths]
    assert build_corpus(cfg, cache, progress=False) == paths  # reused, not regenerated
    assert [p.stat().st_mtime_ns for p in paths] == mtimes
    held = build_held_out(cfg, cache, progress=False)
    assert [p.name.split("-")[:2] for p in held] == [["tdl", "b"]]


def test_splits_are_disjoint_and_each_file_is_normalised_by_its_training_users(tiny_corpus):
    _, _, paths = tiny_corpus
    train, val = corpus_splits(paths, val_fraction=0.25, train_snr_db=math.inf)
    assert len(train) == sum(len(p) for p in train.datasets)
    assert len(val) == sum(len(p) for p in val.datasets)
    checked = 0
    for tr, va in zip(train.datasets, val.datasets, strict=True):
        assert tr.file.path == va.file.path and (tr.mean, tr.std) == (va.mean, va.std)
        assert not set(tr.samples) & set(va.samples)
        assert sorted([*tr.samples, *va.samples]) == list(range(len(tr.file)))
        if tr.file.config.duplex == "tdd":  # history + target = every stored value once
            values = torch.cat([torch.cat([h, t]) for h, t in (tr[i] for i in range(len(tr)))])
            assert abs(values.double().mean().item()) < 1e-5
            assert values.double().std(correction=0).item() == pytest.approx(1.0, abs=1e-5)
            checked += 1
    assert checked >= 1
    # item -> (part, item in part) follows the concatenation order
    part, item = train.part_of(len(train.datasets[0]) + 2)
    assert (part, item) == (1, 2)
    h, _ = train[len(train.datasets[0]) + 2]
    assert torch.equal(h, train.datasets[1][2][0])
    np.testing.assert_array_equal(train.datasets[0].samples, np.sort(train.datasets[0].samples))
