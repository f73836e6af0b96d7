"""HDF5 store: layout, round trip, resumable generation, and clear errors on bad files."""

import dataclasses
import json

import h5py
import numpy as np
import pytest

from edgelam.channels.config import ChannelConfig
from edgelam.channels.generate import ChannelGenerator
from edgelam.channels.store import CSIFile, CSIFileError, generate_dataset, partial_path


@pytest.fixture
def cfg(tiny_channel_kwargs):
    return ChannelConfig(model="tdl-b", duplex="fdd", **tiny_channel_kwargs)


def test_file_matches_generator_and_layout(tmp_path, cfg):
    f = generate_dataset(cfg, tmp_path / "d.h5", progress=False)
    gen = ChannelGenerator(cfg)
    batches = [gen.batch(i, min(4, 10 - 4 * i)) for i in range(3)]
    csi = np.concatenate([b.csi for b in batches])
    dl = np.concatenate([b.csi_downlink for b in batches])
    with h5py.File(tmp_path / "d.h5", "r") as h5:  # readable with h5py alone
        np.testing.assert_array_equal(h5["csi"][...], csi)
        np.testing.assert_array_equal(h5["csi_downlink"][...], dl)
        np.testing.assert_array_equal(
            h5["meta/speed_mps"][...], np.concatenate([b.speed_mps for b in batches])
        )
        assert h5["meta/profile"][0] == b"tdl-b"
        assert json.loads(h5.attrs["config"])["model"] == "tdl-b"
        assert "sionna-no-rt" in json.loads(h5.attrs["versions"])
    parts = np.concatenate([csi.view(np.float32).ravel(), dl.view(np.float32).ravel()]).astype(
        np.float64
    )
    assert f.norm_mean == pytest.approx(parts.mean(), abs=1e-9)
    assert f.norm_std == pytest.approx(parts.std(), rel=1e-6)
    np.testing.assert_array_equal(f.read(np.array([7, 2, 7]), band="csi_downlink"), dl[[7, 2, 7]])
    assert not partial_path(tmp_path / "d.h5").exists()


def test_interrupted_generation_resumes_to_identical_file(tmp_path, cfg, monkeypatch):
    reference = generate_dataset(cfg, tmp_path / "ref.h5", progress=False)
    calls = {"n": 0}
    original = ChannelGenerator.batch

    def crash_on_third(self, index, size):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, index, size)

    monkeypatch.setattr(ChannelGenerator, "batch", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(cfg, tmp_path / "d.h5", progress=False)
    assert partial_path(tmp_path / "d.h5").exists() and not (tmp_path / "d.h5").exists()
    with h5py.File(partial_path(tmp_path / "d.h5"), "r") as h5:
        assert h5.attrs["num_written"] == 8
    with pytest.raises(CSIFileError, match="incomplete|partial"):
        CSIFile.open(tmp_path / "d.h5")
    monkeypatch.setattr(ChannelGenerator, "batch", original)
    with pytest.raises(CSIFileError, match="different config"):
        generate_dataset(dataclasses.replace(cfg, seed=5), tmp_path / "d.h5", progress=False)
    resumed = generate_dataset(cfg, tmp_path / "d.h5", progress=False)
    np.testing.assert_array_equal(resumed.read(slice(None)), reference.read(slice(None)))
    np.testing.assert_array_equal(resumed.meta["snr_db"], reference.meta["snr_db"])
    assert resumed.norm_std == pytest.approx(reference.norm_std, rel=1e-12)


def test_existing_file_is_not_clobbered(tmp_path, cfg):
    generate_dataset(cfg, tmp_path / "d.h5", progress=False)
    with pytest.raises(FileExistsError):
        generate_dataset(cfg, tmp_path / "d.h5", progress=False)
    generate_dataset(
        dataclasses.replace(cfg, seed=9), tmp_path / "d.h5", overwrite=True, progress=False
    )
    assert CSIFile.open(tmp_path / "d.h5").config.seed == 9


def test_bad_files_name_the_problem(tmp_path, cfg):
    path = tmp_path / "d.h5"
    with pytest.raises(CSIFileError, match="no such CSI dataset"):
        CSIFile.open(path)
    generate_dataset(cfg, path, progress=False)
    raw = path.read_bytes()
    (tmp_path / "trunc.h5").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CSIFileError, match="truncated"):
        CSIFile.open(tmp_path / "trunc.h5")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(CSIFileError, match="not a readable HDF5"):
        CSIFile.open(tmp_path / "junk.h5")
    with h5py.File(tmp_path / "other.h5", "w") as h5:
        h5["x"] = np.zeros(3)
    with pytest.raises(CSIFileError, match="not an edgelam CSI dataset"):
        CSIFile.open(tmp_path / "other.h5")
    with h5py.File(path, "r+") as h5:  # config says 6 subcarriers, make it lie
        stored = json.loads(h5.attrs["config"])
        h5.attrs["config"] = json.dumps({**stored, "num_subcarriers": 12})
    with pytest.raises(CSIFileError, match="/csi has shape"):
        CSIFile.open(path)
    with h5py.File(path, "r+") as h5:
        h5.attrs["config"] = json.dumps(stored)
        del h5["meta/los"]
    with pytest.raises(CSIFileError, match="/meta/los missing"):
        CSIFile.open(path)


def test_tdd_file_has_no_downlink(tmp_path, cfg):
    f = generate_dataset(dataclasses.replace(cfg, duplex="tdd"), tmp_path / "t.h5", progress=False)
    with pytest.raises(CSIFileError, match="only in FDD"):
        f.read(0, band="csi_downlink")
