"""Catalog entries built with Hugging Face ``transformers`` (CLIP, Whisper, HiFi-GAN) equal a
fresh meta-device re-profile (slow only for the ``transformers`` import)."""

from __future__ import annotations

import pytest

from edgelam.inference.catalog import load_catalog
from edgelam.inference.profiling import profile_entry

HF_BUILDERS = ("clip_vision", "whisper_encoder", "hifigan")


@pytest.mark.parametrize(
    "name",
    [n for n, s in load_catalog().services.items() if s.profile.get("builder") in HF_BUILDERS],
)
def test_transformers_entries_match_a_reprofile(name: str) -> None:
    s = load_catalog().services[name]
    p = profile_entry(s.profile)
    assert p["params"] == s.params
    assert p["output_bytes_per_unit"] == s.output_bytes_per_unit
    assert p["memory_mb"] == s.memory_mb
    assert round(p["gflops_per_unit"], 4) == pytest.approx(s.gflops_per_unit, rel=1e-9)
