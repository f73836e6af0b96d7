from dataclasses import dataclass
from typing import Literal

import pytest

from edgelam.config import ConfigError, build_config, from_dict, option, read_config_file, to_dict


@dataclass(frozen=True)
class Inner:
    depth: int = option(2, "depth")


@dataclass
class Toy:
    lr: float = option(0.1, "learning rate")
    name: Literal["a", "b"] = option("a", "a name")
    window: tuple[float, float] = option((1.0, 2.0), "range")
    steps: int = option(3, "steps")
    flag: bool = option(False, "a flag")
    opt: float | None = option(None, "optional")
    inner: Inner = option(Inner(), "nested")

    def __post_init__(self):
        if self.steps < 0:
            raise ConfigError(f"steps: must be >= 0, got {self.steps}")


def test_file_formats_and_priority(tmp_path):
    (tmp_path / "c.toml").write_text('lr = 0.5\nname = "b"\nwindow = [3, 4]\n[inner]\ndepth = 7\n')
    (tmp_path / "c.yaml").write_text("lr: 0.25\nflag: true\n")
    (tmp_path / "c.json").write_text('{"steps": 9}')
    cfg = build_config(Toy, tmp_path / "c.toml", overrides={"lr": 0.9, "steps": None})
    assert (cfg.lr, cfg.name, cfg.window, cfg.inner.depth, cfg.steps) == (
        0.9,
        "b",
        (3.0, 4.0),
        7,
        3,
    )
    assert build_config(Toy, tmp_path / "c.yaml").flag is True
    assert build_config(Toy, tmp_path / "c.json").steps == 9
    assert to_dict(cfg)["window"] == [3.0, 4.0]
    assert from_dict(Toy, to_dict(cfg)) == cfg


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"lrr": 1}, "unknown field 'lrr'"),
        ({"lr": "fast"}, "lr: expected a number"),
        ({"name": "c"}, "name: 'c' is not one of"),
        ({"window": [1, 2, 3]}, "window: expected 2 values"),
        ({"steps": 1.5}, "steps: expected an integer"),
        ({"steps": -1}, "steps: must be >= 0"),
        ({"flag": "yes"}, "flag: expected true/false"),
        ({"inner": {"deep": 1}}, "unknown field 'inner.deep'"),
    ],
)
def test_invalid_fields_are_named(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(Toy, data)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        read_config_file(tmp_path / "missing.toml")
    (tmp_path / "x.ini").write_text("a=1")
    with pytest.raises(ConfigError, match="unknown config format"):
        read_config_file(tmp_path / "x.ini")
    (tmp_path / "bad.toml").write_text("lr = = 1")
    with pytest.raises(ConfigError, match="cannot parse"):
        read_config_file(tmp_path / "bad.toml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a table"):
        read_config_file(tmp_path / "list.yaml")
