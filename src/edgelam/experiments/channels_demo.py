"""Channel-dataset demo: generate 38.901 CSI datasets and check their physics.

For each model it generates a dataset at the LLM4CP defaults (timing the throughput), then
measures the temporal autocorrelation of users at fixed speeds against Clarke's
:math:`J_0(2\\pi f_d\\tau)`. Everything lands in a run directory: ``config.json``,
``metrics.jsonl`` (one record per generated dataset and per autocorrelation check),
``summary.json``, ``data/<model>.h5`` and two plots drawn from those files alone.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgelam.channels.config import CHANNEL_MODELS, ChannelConfig
from edgelam.config import ConfigError, option, to_dict
from edgelam.runs import RunDir, read_metrics

__all__ = ["ChannelsDemoConfig", "run_channels_demo", "plot_channels_demo"]


@dataclass
class ChannelsDemoConfig:
    """What the channel demo generates and checks."""

    models: tuple[str, ...] = option(("cdl-c", "uma", "tdl-a"), "38.901 models to generate")
    num_samples: int = option(256, "samples per dataset (LLM4CP-default size otherwise)")
    duplex: str = option("tdd", "'tdd' or 'fdd'")
    check_speeds_kmh: tuple[float, ...] = option((30.0, 100.0), "fixed speeds for the J0 check")
    check_samples: int = option(256, "users per autocorrelation check")
    check_slots: int = option(40, "slots per user in the autocorrelation check")
    seed: int = option(0, "seed of all draws")

    def __post_init__(self) -> None:
        for m in self.models:
            if m not in CHANNEL_MODELS:
                raise ConfigError(f"models: {m!r} is not one of {list(CHANNEL_MODELS)}")
        if self.duplex not in ("tdd", "fdd"):
            raise ConfigError(f"duplex: {self.duplex!r} is not one of ['tdd', 'fdd']")
        if self.num_samples < 1 or self.check_samples < 1 or self.check_slots < 2:
            raise ConfigError("num_samples, check_samples >= 1 and check_slots >= 2 required")


def run_channels_demo(
    config: ChannelsDemoConfig, out: str | Path, *, overwrite: bool = False, progress: bool = True
) -> Path:
    """Run the demo into run directory ``out``; returns its path."""
    from edgelam.channels.generate import ChannelGenerator
    from edgelam.channels.statistics import (
        cdl_autocorrelation,
        clarke_autocorrelation,
        temporal_autocorrelation,
    )
    from edgelam.channels.store import generate_dataset

    run = RunDir.create(out, to_dict(config), overwrite=overwrite)
    summary: dict[str, dict] = {}
    for model in config.models:
        cfg = ChannelConfig(model=model, num_samples=config.num_samples, duplex=config.duplex,
                            seed=config.seed)  # fmt: skip
        start = time.perf_counter()
        data = generate_dataset(cfg, run.path / "data" / f"{model}.h5", overwrite=True,
                                progress=progress)  # fmt: skip
        seconds = time.perf_counter() - start
        power = float(np.mean(np.abs(data.read(slice(0, min(64, len(data))))) ** 2))
        data.close()
        run.log({"kind": "generation", "model": model, "samples": cfg.num_samples,
                 "seconds": seconds, "samples_per_s": cfg.num_samples / seconds,
                 "mean_power": power, "file": f"data/{model}.h5"})  # fmt: skip
        entry = {
            "samples_per_s": cfg.num_samples / seconds,
            "mean_power": power,
            "j0_max_abs_error": {},
        }
        for speed in config.check_speeds_kmh:
            check = dataclasses.replace(
                cfg, speed_kmh=(speed, speed), num_subcarriers=8, history_slots=config.check_slots - 4,
                future_slots=4, num_samples=config.check_samples, duplex="tdd",
                seed=config.seed + 1,
            )  # fmt: skip
            gen = ChannelGenerator(check)
            rho = temporal_autocorrelation(gen.batch(0, config.check_samples).csi)
            fd, period = check.max_doppler_hz(), check.csi_period_s
            ref = clarke_autocorrelation(fd, period, len(rho))
            record = {"kind": "autocorrelation", "model": model, "speed_kmh": speed,
                      "max_doppler_hz": fd, "lag_s": (np.arange(len(rho)) * period).tolist(),
                      "empirical": rho.real.tolist(), "clarke": ref.tolist(),
                      "max_abs_error": float(np.max(np.abs(rho.real - ref)))}  # fmt: skip
            if model.startswith("cdl"):  # Clarke with the CDL's ray elevations
                geo = cdl_autocorrelation(gen.channel_model(), fd, period, len(rho))
                record["cdl_geometry"] = geo.tolist()
                record["max_abs_error_geometry"] = float(np.max(np.abs(rho.real - geo)))
                entry.setdefault("geometry_max_abs_error", {})[f"{speed:g}"] = record[
                    "max_abs_error_geometry"
                ]
            run.log(record)
            entry["j0_max_abs_error"][f"{speed:g}"] = record["max_abs_error"]
        summary[model] = entry
    run.write_summary({"models": summary})
    plot_channels_demo(run.path)
    return run.path


def plot_channels_demo(run_dir: str | Path) -> list[Path]:
    """Draw ``autocorrelation.png`` and ``csi_examples.png`` from a demo run directory."""
    import matplotlib

    from edgelam.channels.store import CSIFile

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = RunDir.open(run_dir)
    records = read_metrics(run.path)
    checks = [r for r in records if r["kind"] == "autocorrelation"]
    models = list(dict.fromkeys(r["model"] for r in checks))
    paths = []
    if checks:
        fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.4), squeeze=False)
        for ax, model in zip(axes[0], models, strict=True):
            for r in (r for r in checks if r["model"] == model):
                lag_ms = np.array(r["lag_s"]) * 1e3
                (line,) = ax.plot(lag_ms, r["empirical"], "o", ms=3,
                                  label=f"{r['speed_kmh']:g} km/h (err {r['max_abs_error']:.3f})")  # fmt: skip
                ax.plot(lag_ms, r["clarke"], "-", color=line.get_color(), lw=1)
                if "cdl_geometry" in r:
                    ax.plot(lag_ms, r["cdl_geometry"], ":", color=line.get_color(), lw=1.2,
                            label=f"CDL geometry (err {r['max_abs_error_geometry']:.3f})")  # fmt: skip
            ax.set_title(f"{model}: Re autocorrelation vs J0 (lines)")
            ax.set_xlabel("lag [ms]")
            ax.axhline(0, color="grey", lw=0.5)
            ax.legend(fontsize=8)
        axes[0, 0].set_ylabel("normalised autocorrelation")
        fig.tight_layout()
        paths.append(run.plot_path("autocorrelation"))
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    gens = [r for r in records if r["kind"] == "generation"]
    if gens:
        fig, axes = plt.subplots(1, len(gens), figsize=(4.2 * len(gens), 3.4), squeeze=False)
        for ax, r in zip(axes[0], gens, strict=True):
            data = CSIFile.open(run.path / r["file"])
            h = data.read(0)[:, :, 0]  # [slot, subcarrier] of antenna 0
            speed = float(data.meta["speed_mps"][0]) * 3.6
            data.close()
            im = ax.imshow(20 * np.log10(np.abs(h) + 1e-12).T, aspect="auto", origin="lower",
                           extent=(-0.5, h.shape[0] - 0.5, -0.5, h.shape[1] - 0.5))  # fmt: skip
            ax.set_title(f"{r['model']}: |H| [dB], user 0 at {speed:.0f} km/h")
            ax.set_xlabel("slot (0.5 ms)")
            ax.set_ylabel("subcarrier")
            fig.colorbar(im, ax=ax)
        fig.tight_layout()
        paths.append(run.plot_path("csi_examples"))
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    return paths
