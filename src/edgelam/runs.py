"""Runs are directories of files (DESIGN.md, principle 6).

A run directory holds:

* ``config.json``  -- the full resolved config (plus edgelam/library versions),
* ``metrics.jsonl`` -- one JSON object per step/round, appended and flushed as the run goes,
* ``summary.json`` -- the final figures,
* ``*.png``        -- plots drawn only from the files above.

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as d:
...     run = RunDir.create(Path(d) / "demo", config={"lr": 0.1})
...     run.log({"round": 0, "loss": 1.5})
...     run.log({"round": 1, "loss": 0.7})
...     run.write_summary({"final_loss": 0.7})
...     [m["loss"] for m in read_metrics(run.path)], read_summary(run.path)["final_loss"]
([1.5, 0.7], 0.7)
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from edgelam.config import ConfigError

__all__ = [
    "RunConfigError",
    "RunDir",
    "atomic_write_text",
    "library_versions",
    "read_config",
    "read_metrics",
    "read_summary",
    "save_checkpoint",
]

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"


def library_versions(*names: str) -> dict[str, str]:
    """Installed versions of edgelam and the given distributions (``"absent"`` if missing)."""
    out = {}
    for name in ("edgelam", *names):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def _jsonable(value: Any) -> Any:
    """Convert numpy/torch scalars and non-finite floats into plain JSON values."""
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return value


class RunConfigError(ConfigError):
    """A run directory holds a run of another config, and resuming it was asked for."""


@dataclass
class RunDir:
    """A run directory on disk. Create with :meth:`create`, reopen with :meth:`open`."""

    path: Path

    @classmethod
    def create(
        cls,
        path: str | Path,
        config: Mapping[str, Any],
        *,
        overwrite: bool = False,
        resume: bool = False,
    ) -> RunDir:
        """Create (or, with ``resume``, reopen) a run directory and write ``config.json``.

        Raises:
            FileExistsError: the directory already holds a run and neither ``overwrite`` nor
                ``resume`` is set (a run is never silently clobbered).
            RunConfigError: ``resume`` with a config that differs from the stored one.
        """
        path = Path(path)
        cfg_path = path / CONFIG_FILE
        record = {
            "config": _jsonable(config),
            "versions": library_versions("torch", "sionna-no-rt"),
        }
        if cfg_path.exists():
            if resume:
                stored = read_config(path)
                if stored != record["config"]:
                    raise RunConfigError(
                        f"{path}: cannot resume, config differs from {cfg_path}; use another "
                        "output directory, or start over (overwrite; CLI: --overwrite)"
                    )
                return cls(path)
            if not overwrite:
                raise FileExistsError(f"{path} already holds a run; pass overwrite or resume")
            for name in (METRICS_FILE, SUMMARY_FILE):
                (path / name).unlink(missing_ok=True)
        path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cfg_path, json.dumps(record, indent=2, sort_keys=True))
        return cls(path)

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        """Open an existing run directory (raises FileNotFoundError naming the missing file)."""
        path = Path(path)
        if not (path / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"{path} is not a run directory: {CONFIG_FILE} missing")
        return cls(path)

    def log(self, record: Mapping[str, Any]) -> None:
        """Append one JSON object to ``metrics.jsonl`` and flush it to disk."""
        with open(self.path / METRICS_FILE, "a") as fh:
            fh.write(json.dumps(_jsonable(record), sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def drop_metrics(self, predicate: Callable[[dict[str, Any]], bool]) -> int:
        """Remove the records for which ``predicate`` is true (atomically); returns how many.

        Used when resuming: records written after the last checkpoint are dropped, then
        recomputed identically.
        """
        records = read_metrics(self.path)
        kept = [r for r in records if not predicate(r)]
        if len(kept) != len(records):
            text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept)
            atomic_write_text(self.path / METRICS_FILE, text.rstrip("\n"))
        return len(records) - len(kept)

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        """Write ``summary.json`` atomically."""
        atomic_write_text(
            self.path / SUMMARY_FILE, json.dumps(_jsonable(summary), indent=2, sort_keys=True)
        )

    def plot_path(self, name: str) -> Path:
        """Where a plot called ``name`` (``.png`` appended if missing) belongs."""
        return self.path / (name if name.endswith(".png") else f"{name}.png")

    def save_figure(self, fig: Any, name: str, *, dpi: int = 130) -> Path:
        """Lay out, save (as :meth:`plot_path` ``(name)``) and close a matplotlib figure."""
        import matplotlib.pyplot as plt

        fig.tight_layout()
        path = self.plot_path(name)
        fig.savefig(path, dpi=dpi)
        plt.close(fig)
        return path


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (plus a newline) to ``path`` so that readers see the old or the new file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text + "\n")
    os.replace(tmp, path)


def save_checkpoint(state: Any, path: Path) -> None:
    """``torch.save`` ``state`` to ``path`` atomically (an interrupted save leaves the old one)."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def read_config(path: str | Path) -> dict[str, Any]:
    """The resolved config stored in a run directory."""
    return json.loads((Path(path) / CONFIG_FILE).read_text())["config"]


def iter_metrics(path: str | Path) -> Iterator[dict[str, Any]]:
    """Yield the records of ``metrics.jsonl``; a torn last line (crash mid-write) is skipped."""
    file = Path(path) / METRICS_FILE
    if not file.exists():
        return
    lines = file.read_text().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError as err:
            if i == len(lines) - 1:
                return
            raise ValueError(f"{file}:{i + 1}: corrupted metrics line: {err}") from err


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a run's ``metrics.jsonl`` (empty list if none yet)."""
    return list(iter_metrics(path))


def read_summary(path: str | Path) -> dict[str, Any]:
    """A run's ``summary.json``."""
    file = Path(path) / SUMMARY_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{file} missing: the run has not finished")
    return json.loads(file.read_text())
