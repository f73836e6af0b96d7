"""Rényi-DP split FedFT on channel prediction: accuracy, attacks, channel-aware noise vs epsilon.

The issue-5 experiment (docs/privacy.md, "Results"). Ten devices of the quick wireless profile
(``edgelam train split-fedft``, edgelam-wireless backbone with LoRA, 40 users x 32 antennas =
1280 items per device, batch 32) train split FedFT with every device's uplink clipped and
noised, at target epsilon 1, 2, 4, 8 and infinity (sigma = 0: clipping only), delta = 1e-5, the
noise multiplier calibrated per device by the privacy module (RDP, sampling without
replacement, replace-one, for ``--iterations`` participations). Two protections:

* ``whole``: ``clip_embeddings`` on, the embeddings and the Jacobians are clipped and noised (the
  whole sample is protected; sampling amplifies);
* ``labels``: only the Jacobians (the targets are protected, the inputs go up in the clear).

References: the same model and settings without privacy (``no-privacy``). For epsilon 4 the
whole-sample run is repeated over the analog uplink with ``analog_power = 'matched'``: every
device transmits at the power at which the server's receiver noise is the privacy noise.

Differences from the quick profile, so that the sweep fits in 20 minutes on a 2-core machine
with one torch thread: ``--iterations`` (default 48 instead of 120) and evaluation every 16;
``device_sync_every = 0`` and ``llm4cp.normalization = 'sample'`` (privacy needs both, also in
the reference); ``embedding_grad = false`` (the device's embedding module stays the one the
server shipped, as the inversion attack assumes). The clip norms are the median per-sample
norms of the initial model on *public* data (training users no device holds).

Attacks of the honest-but-curious server, on device 0's items, per epsilon of the whole-sample
mode: the learned embedding inversion of ``edgelam.training.privacy.attack`` (NMSE of the
reconstructed CSI history, dB) and a learned *target inference* from the Jacobian vectors (and
the representations the server computed): an MLP trained on public data released through the
same mechanism, NMSE of the inferred future CSI; the same MLP without the Jacobians is the
server's baseline. 0 dB = guessing zero.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/privacy_sweep.py

writes ``benchmarks/results/privacy_sweep.json`` and ``benchmarks/results/privacy_sweep.png``;
the runs go to ``--runs-dir`` (finished runs of the same config are kept, so a second call only
redoes the analysis).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import numpy as np
import torch
from torch import nn

from edgelam.channels.dataset import CSIPredictionDataset, train_val_test_split
from edgelam.experiments.wireless_training import (
    WirelessTrainingConfig,
    resolve_config,
    run_wireless_training,
    wireless_profile,
)
from edgelam.experiments.wireless_training_privacy import build_predictor
from edgelam.experiments.wireless_training_run import load_data
from edgelam.runs import read_metrics, read_summary
from edgelam.training.fedavg import collate
from edgelam.training.privacy.analysis import epsilon as epsilon_of
from edgelam.training.privacy.attack import InversionConfig, inversion_nmse_db, train_inversion
from edgelam.training.privacy.config import PrivacyConfig
from edgelam.training.privacy.mechanism import (
    AnalogChannel,
    analog_noise,
    clip_per_sample,
    privatize,
)
from edgelam.training.split import split_model

EPSILONS = (1.0, 2.0, 4.0, 8.0, math.inf)
DELTA = 1e-5
RESULTS = Path(__file__).parent / "results"


# -- configs -----------------------------------------------------------------------------------
def base_config(iterations: int, cache_dir: str) -> WirelessTrainingConfig:
    """The quick profile with the settings privacy needs (also for the reference run)."""
    cfg = wireless_profile("quick")
    return dataclasses.replace(
        cfg,
        iterations=iterations,
        eval_every=16 if iterations % 16 == 0 else cfg.fedavg.local_steps,
        cache_dir=cache_dir,
        llm4cp=dataclasses.replace(cfg.llm4cp, normalization="sample"),
        split_fedft=dataclasses.replace(
            cfg.split_fedft, device_sync_every=0, embedding_grad=False
        ),  # fmt: skip
    )


def private_config(
    base: WirelessTrainingConfig, eps: float, mode: str, clips: dict[str, float], **uplink: Any
) -> WirelessTrainingConfig:
    """``base`` with privacy at target ``eps`` (inf: sigma = 0) in ``mode`` (whole | labels)."""
    noise = {"noise_multiplier": 0.0} if math.isinf(eps) else {"target_epsilon": eps}
    privacy = PrivacyConfig(enabled=True, delta=DELTA, clip_norm=clips["jacobian"],
                            clip_embeddings=mode == "whole",
                            embedding_clip_norm=clips["embedding"],
                            uplink=uplink.get("uplink", "digital"), **noise)  # fmt: skip
    sf = dataclasses.replace(base.split_fedft, privacy=privacy)
    return dataclasses.replace(base, split_fedft=sf,
                               analog_power=uplink.get("analog_power", "max"))  # fmt: skip


def run_names() -> dict[str, tuple[str, float, dict[str, str]]]:
    """Run name -> (mode, epsilon, uplink settings)."""
    runs: dict[str, tuple[str, float, dict[str, str]]] = {"no-privacy": ("none", math.inf, {})}
    for eps in EPSILONS:
        runs[f"whole-eps{eps:g}"] = ("whole", eps, {})
    runs["whole-eps4-analog"] = ("whole", 4.0, {"uplink": "analog", "analog_power": "matched"})
    for eps in EPSILONS[:-1]:
        runs[f"labels-eps{eps:g}"] = ("labels", eps, {})
    return runs


# -- public data and the clip norms ------------------------------------------------------------
def public_data(
    cfg: WirelessTrainingConfig, n_public: int, n_private: int = 0
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor] | None]:
    """``n_public`` items of training users that no device holds (the server's auxiliary data,
    normalised as the devices' data) and ``n_private`` random items of device 0, as
    ``((x, y), (x, y) or None)``."""
    data = load_data(cfg, progress=False)
    held = np.concatenate([ds.samples for ds in data.train])
    first = data.train[0]
    split = train_val_test_split(first.file, fractions=cfg.split, seed=cfg.seed)
    users = np.setdiff1d(split.train, held)
    public = CSIPredictionDataset(first.file, users, snr_db=cfg.train_snr_db, noisy_target=True,
                                  seed=cfg.seed + 5, norm=(first.mean, first.std))  # fmt: skip
    rng = np.random.default_rng(cfg.seed + 5)
    aux = collate(public, rng.choice(len(public), n_public, replace=False))
    private = (
        collate(first, rng.choice(len(first), n_private, replace=False)) if n_private else None
    )
    return aux, private


def clip_norms(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Median per-sample norms of the initial model on public data: embeddings ``[L, d]`` and
    per-sample Jacobians ``dl_b/dR_b`` (with the embeddings clipped at their median)."""
    split = split_model(model)
    with torch.no_grad():
        emb, ctx = split.embedding(x)
    c_e = float(emb.flatten(1).norm(dim=1).median())
    with torch.no_grad():
        rep = split.backbone(clip_per_sample(emb, c_e)[0])
    rep.requires_grad_(True)
    loss = split.loss_fn(split.task(rep, ctx), y)
    (jac,) = torch.autograd.grad(loss, rep)
    return {"embedding": c_e, "jacobian": float((len(x) * jac).flatten(1).norm(dim=1).median())}


# -- the attacks -------------------------------------------------------------------------------
def inversion_attack(embed, aux, private, clip: float | None, sigma: float, steps: int) -> float:
    """NMSE [dB] of the device's CSI histories reconstructed from released embeddings
    (``clip`` None: the embeddings in the clear)."""
    noise_std = 0.0 if clip is None else sigma * clip
    cfg = InversionConfig(clip_norm=clip, noise_std=noise_std, steps=steps, seed=0)
    decoder = train_inversion(embed, aux, cfg)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        released = embed(private)
        if clip is not None:
            released = privatize(released, clip, noise_std, gen).released
    return inversion_nmse_db(decoder, released, private)


class _TargetRelease:
    """What the server holds of a sample after one iteration: the representation it computed
    from the (clipped, noised) embeddings and the clipped, noised per-sample Jacobian (with
    ``clip`` False: both in the clear), as features ``[B, 2 D]``."""

    def __init__(self, split, clips: dict[str, float], sigma: float, clip: bool = True) -> None:
        self.split, self.clips, self.sigma, self.clip = split, clips, sigma, clip

    def __call__(self, x, y, gen: torch.Generator) -> torch.Tensor:
        c_e, c = self.clips["embedding"], self.clips["jacobian"]
        with torch.no_grad():
            emb, ctx = self.split.embedding(x)
            if self.clip:
                emb = privatize(emb, c_e, self.sigma * c_e, gen).released
            rep = self.split.backbone(emb)
        rep.requires_grad_(True)
        loss = self.split.loss_fn(self.split.task(rep, ctx), y)
        (jac,) = torch.autograd.grad(loss, rep)
        sent = len(x) * jac
        if self.clip:
            sent = privatize(sent, c, self.sigma * c, gen).released
        # Jacobian rows in units of the clip, times sqrt(D): entries of order 1, as the rep's
        sent = sent.flatten(1) * (math.sqrt(sent[0].numel()) / c)
        return torch.cat([rep.detach().flatten(1), sent], dim=1)


def target_attack(release, aux, private, steps: int, draws: int = 2) -> dict[str, float]:
    """NMSE [dB] of the device's future CSI inferred from what the server holds, by an MLP
    trained on public data released through the same mechanism (``draws`` noise draws per
    public item, computed once); ``without_jacobians``: the same MLP on the representations
    alone (the Jacobian half of the features zeroed), the server's baseline."""
    (xa, ya), (xp, yp) = aux, private
    gen = torch.Generator().manual_seed(2)
    batches = [(xa[i : i + 256], ya[i : i + 256]) for i in range(0, len(xa), 256)]
    feats = torch.cat([release(x, y, gen) for _ in range(draws) for x, y in batches])
    targets, test = ya.flatten(1).repeat(draws, 1), release(xp, yp, gen)
    out = {}
    for name, half in (("with_jacobians", 1.0), ("without_jacobians", 0.0)):
        mask = torch.ones(feats.shape[1])
        mask[feats.shape[1] // 2 :] = half
        torch.manual_seed(0)
        decoder = nn.Sequential(nn.Linear(feats.shape[1], 256), nn.GELU(), nn.Linear(256, 256),
                                nn.GELU(), nn.Linear(256, targets.shape[1]))  # fmt: skip
        opt = torch.optim.Adam(decoder.parameters(), lr=1e-3)
        for _ in range(steps):
            idx = torch.randint(len(feats), (64,), generator=gen)
            loss = (decoder(feats[idx] * mask) - targets[idx]).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            err = (decoder(test * mask) - yp.flatten(1)).square().sum()
        out[name] = 10 * math.log10(float(err / yp.square().sum()))
    return out


#: Small noise multipliers (epsilon far above 8) where the attacks start to work again.
WEAK_SIGMAS = (0.03, 0.1, 0.3)


def attacks(cfg, sigmas: dict[float, float], clips, steps: int) -> dict[str, Any]:
    """Both attacks in the clear, at every epsilon of the whole-sample mode (``sigmas``: target
    epsilon -> device 0's noise multiplier) and at :data:`WEAK_SIGMAS` (``sigma=...``, with the
    epsilon a device of the sweep would have after ``cfg.iterations`` iterations)."""
    model, _ = build_predictor(resolve_config(cfg).llm4cp, seed=cfg.seed)  # the shipped model
    split = split_model(model)
    split.embedding.train()  # the device's release: dropout on, as in training
    aux, private = public_data(cfg, 2048, 256)
    torch.manual_seed(0)
    embed = lambda x: split.embedding(x)[0]  # noqa: E731
    out: dict[str, Any] = {}
    settings = [("clear", None, 0.0)]
    settings += [(f"sigma={s:g}", clips["embedding"], s) for s in WEAK_SIGMAS]
    settings += [(f"{e:g}", clips["embedding"], s) for e, s in sigmas.items()]
    q = cfg.batch_size / 1280
    for name, clip, sigma in settings:
        tic = time.perf_counter()
        row = {"noise_multiplier": sigma, "embedding_clip_norm": clip}
        if clip is not None:
            row["epsilon"] = epsilon_of(sigma / (2 * math.sqrt(2)), q, cfg.iterations, DELTA,
                                        sampling="fixed", relation="replace_one",
                                        dataset_size=1280) if sigma else math.inf  # fmt: skip
        row["inversion_nmse_db"] = inversion_attack(embed, aux[0], private[0], clip, sigma, steps)
        release = _TargetRelease(split, clips, sigma, clip=clip is not None)
        target = target_attack(release, aux, private, steps)
        row["target_nmse_db"] = target["with_jacobians"]
        row["target_nmse_db_without_jacobians"] = target["without_jacobians"]
        row["seconds"] = time.perf_counter() - tic
        out[name] = row
        print(f"attack {name}: {row}", flush=True)
    return out


# -- channel-aware noise -----------------------------------------------------------------------
SNR_BINS_DB = (-math.inf, 20.0, 30.0, 40.0, 50.0, math.inf)


def channel_aware(runs_dir: Path, digital: str, analog: str, entries: int) -> dict[str, Any]:
    """Analog (matched power) vs digital uplink at equal epsilon, by the round's uplink SNR.

    Per (device, round) of the analog run: the uplink SNR at the maximum power, the privacy
    transmit power P*, the power used and saved, the analog transmission energy; from the
    digital run the same device's digital uplink energy at the maximum power. Also, per bin, the
    share of the privacy noise the receiver noise gives at the maximum power (``analog_power =
    'max'``: the device injects the rest) and the epsilon a device gets at P*/2 and P*/10
    (receiver noise above the privacy noise, no device noise).
    """
    s_a, s_d = read_summary(runs_dir / analog), read_summary(runs_dir / digital)
    p = s_a["privacy"]
    rec_a = [r for r in read_metrics(runs_dir / analog) if r["kind"] == "round"]
    rec_d = [r for r in read_metrics(runs_dir / digital) if r["kind"] == "round"]
    max_dbm = rec_d[0]["transmit_power_dbm"][0]
    max_w = 10 ** ((max_dbm - 30) / 10)
    points = []
    for ra, rd in zip(rec_a, rec_d, strict=True):
        for k in ra["scheduled"]:
            tele = ra["privacy_per_device"][k]
            points.append({
                "snr_db": ra["uplink_snr_db"][k],
                "privacy_power_dbm": ra["privacy_transmit_power_dbm"][k],
                "power_dbm": ra["transmit_power_dbm"][k],
                "saved_db": ra["transmit_power_saved_db"][k],
                "device_std": tele["jacobians"]["device_std"],
                "receiver_std": tele["jacobians"]["receiver_std"],
                "analog_j": ra["analog_uplink_energy_j"][k],
                "digital_j": max_w * rd["phases"]["train"]["uplink_seconds"][k],
                "sigma": tele["noise_multiplier"],
                "device": k,
            })  # fmt: skip
    n, q_rate, steps = 1280, p["sample_rate_per_device"][0], len(rec_a)
    released = 2 if p["clip_embeddings"] else 1

    def eps_at(sigma: float) -> float:
        return epsilon_of(sigma / (2 * math.sqrt(released)), q_rate, steps, DELTA,
                          sampling="fixed", relation="replace_one", dataset_size=n)  # fmt: skip

    sigma = points[0]["sigma"]
    bins = []
    for lo, hi in zip(SNR_BINS_DB[:-1], SNR_BINS_DB[1:], strict=True):
        sel = [q for q in points if lo <= q["snr_db"] < hi]
        if not sel:
            continue
        receiver_share = [
            analog_noise(sigma, 1.0, entries,
                         AnalogChannel(10 ** (q["snr_db"] / 10), 1.0, 1.0)).receiver_std ** 2
            / sigma**2
            for q in sel
        ]  # fmt: skip
        bins.append({
            "snr_db": [lo, hi],
            "device_rounds": len(sel),
            "mean_snr_db": float(np.mean([q["snr_db"] for q in sel])),
            "privacy_power_dbm": float(np.mean([q["privacy_power_dbm"] for q in sel])),
            "power_saved_db": float(np.mean([q["saved_db"] for q in sel])),
            "device_noise_std_analog": float(np.mean([q["device_std"] for q in sel])),
            "receiver_noise_std_analog": float(np.mean([q["receiver_std"] for q in sel])),
            "receiver_share_at_max_power": float(np.mean(receiver_share)),
            "analog_energy_j": float(np.sum([q["analog_j"] for q in sel])),
            "digital_energy_j": float(np.sum([q["digital_j"] for q in sel])),
        })  # fmt: skip
    return {
        "epsilon": s_a["epsilon"],
        "noise_multiplier": sigma,
        "entries_per_row": entries,
        "max_power_dbm": max_dbm,
        "test_nmse_db": {"digital": s_d["test_nmse_db"], "analog_matched": s_a["test_nmse_db"]},
        "final_epsilon": {"digital": s_d["epsilon"], "analog_matched": s_a["epsilon"]},
        "bins": bins,
        "per_device": {
            "uplink_snr_db": p["uplink_snr_db_per_device"],
            "privacy_transmit_power_dbm": p["privacy_transmit_power_dbm_per_device"],
            "transmit_power_saved_db": p["transmit_power_saved_db_per_device"],
            "analog_uplink_energy_j": p["analog_uplink_energy_j_per_device"],
            "digital_uplink_energy_j": s_d["privacy"]["digital_uplink_energy_j_per_device"],
        },
        "epsilon_below_privacy_power": {
            "P*": eps_at(sigma),
            "P*/2": eps_at(sigma * math.sqrt(2)),
            "P*/10": eps_at(sigma * math.sqrt(10)),
        },  # fmt: skip
        "points": points,
    }


# -- the sweep ---------------------------------------------------------------------------------
def _row(name: str, mode: str, eps: float, path: Path) -> dict[str, Any]:
    s = read_summary(path)
    losses = [r["train_loss"] for r in read_metrics(path) if r["kind"] == "round"]
    row = {
        "run": name, "mode": mode, "target_epsilon": eps, "epsilon": s["epsilon"],
        "delta": s["delta"], "test_nmse_db": s["test_nmse_db"],
        "initial_val_nmse_db": 10 * math.log10(s["initial_val_nmse"]),
        "final_val_nmse_db": s["final_val_nmse_db"],
        "train_loss_first5": float(np.mean(losses[:5])),
        "train_loss_last5": float(np.mean(losses[-5:])),
        "wall_seconds": s["wall_seconds"],
    }  # fmt: skip
    p = s["privacy"]
    if p is not None:
        sig = p["noise_multiplier_per_device"]
        row |= {"noise_multiplier": [min(sig), max(sig)], "cascade": p.get("cascade"),
                "uplink": p["uplink"]}  # fmt: skip
    return row


def _plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    rows = result["runs"]
    ref = next(r for r in rows if r["mode"] == "none")["test_nmse_db"]
    # final epsilon (targets only: below the target, see docs/privacy.md); sigma = 0 at 30
    x_of = lambda r: 30.0 if r["epsilon"] in ("inf", None) else r["epsilon"]  # noqa: E731
    for mode, color in (("whole", "tab:blue"), ("labels", "tab:orange")):
        pts = [(x_of(r), r["test_nmse_db"]) for r in rows
               if r["mode"] == mode and r["uplink"] == "digital"]  # fmt: skip
        axes[0].plot(*zip(*sorted(pts), strict=True), "o-", color=color,
                     label={"whole": "whole sample", "labels": "targets only"}[mode])  # fmt: skip
    axes[0].axhline(ref, color="grey", ls=":", label="no privacy")
    axes[0].set(xscale="log", xticks=[0.5, 1, 2, 4, 8, 30],
                xticklabels=["0.5", "1", "2", "4", "8", "inf"],
                xlabel="final epsilon (delta 1e-5)", ylabel="test NMSE [dB]")  # fmt: skip
    axes[0].legend(fontsize=8)
    att = {k: v for k, v in result["attacks"].items() if k != "clear"}
    top = 10 * max(v["epsilon"] for v in att.values() if math.isfinite(v["epsilon"]))
    order = sorted(att.values(), key=lambda v: v["epsilon"])
    ex = [v["epsilon"] if math.isfinite(v["epsilon"]) else top for v in order]
    axes[1].plot(ex, [v["inversion_nmse_db"] for v in order], "o-", label="embedding inversion")
    axes[1].plot(ex, [v["target_nmse_db"] for v in order], "s-", label="target inference")
    axes[1].plot(ex, [v["target_nmse_db_without_jacobians"] for v in order], "s--",
                 label="target inference, no Jacobians")  # fmt: skip
    clear = result["attacks"]["clear"]
    axes[1].axhline(clear["inversion_nmse_db"], color="tab:blue", ls=":", lw=0.8)
    axes[1].axhline(clear["target_nmse_db"], color="tab:orange", ls=":", lw=0.8)
    axes[1].axvspan(1, 8, color="grey", alpha=0.15, lw=0)
    axes[1].set(xscale="log", xlabel="epsilon (delta 1e-5; right end: sigma = 0)",
                ylabel="attack NMSE [dB] (0 dB: no success)")  # fmt: skip
    axes[1].legend(fontsize=8)
    pts = result["channel_aware"]["points"]
    axes[2].scatter([q["snr_db"] for q in pts], [q["privacy_power_dbm"] for q in pts], s=6,
                    label="P* (receiver noise = privacy noise)")  # fmt: skip
    axes[2].axhline(result["channel_aware"]["max_power_dbm"], color="tab:red", ls="--",
                    label="digital uplink: max power")  # fmt: skip
    axes[2].set(xlabel="uplink SNR at max power [dB]", ylabel="transmit power [dBm]",
                title=f"epsilon = {result['channel_aware']['epsilon']:.2f}")  # fmt: skip
    axes[2].legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=48)
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/privacy-sweep"))
    parser.add_argument("--cache-dir", default="data/casestudy")
    parser.add_argument("--attack-steps", type=int, default=300)
    parser.add_argument("--only", nargs="*", default=None, help="run names (debugging)")
    parser.add_argument("--out", type=Path, default=RESULTS / "privacy_sweep.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    base = base_config(args.iterations, args.cache_dir)
    model, _ = build_predictor(resolve_config(base).llm4cp, seed=base.seed)
    (xa, ya), _ = public_data(base, 512)  # the clips' public data
    torch.manual_seed(0)
    clips = clip_norms(model, xa, ya)
    print(f"clip norms (medians on public data): {clips}", flush=True)
    rows = []
    for name, (mode, eps, uplink) in run_names().items():
        if args.only is not None and name not in args.only:
            continue
        cfg = base if mode == "none" else private_config(base, eps, mode, clips, **uplink)
        path = run_wireless_training(cfg, args.runs_dir / name, progress=False)
        rows.append(_row(name, mode, eps, path))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "cascade"}), flush=True)
    result: dict[str, Any] = {
        "what": __doc__.split("\n")[0],
        "settings": {"iterations": args.iterations, "num_devices": base.num_devices,
                     "batch_size": base.batch_size, "items_per_device": 1280, "delta": DELTA,
                     "clip_norms": clips, "attack_steps": args.attack_steps,
                     "profile": "quick (edgelam-wireless backbone, LoRA r=8), "
                                "device_sync_every=0, normalization=sample, embedding_grad=false"},
        "runs": rows,
    }  # fmt: skip
    names = {r["run"] for r in rows}
    if {"whole-eps4", "whole-eps4-analog"} <= names:
        llm = resolve_config(base).llm4cp
        entries = llm.history_slots * llm.backbone.d_model  # D = L x d per released row
        result["channel_aware"] = channel_aware(args.runs_dir, "whole-eps4", "whole-eps4-analog",
                                                entries)  # fmt: skip
    sigmas = {r["target_epsilon"]: r["noise_multiplier"][1] for r in rows
              if r["mode"] == "whole" and r["uplink"] == "digital"}  # fmt: skip
    if sigmas and args.attack_steps:
        result["attacks"] = attacks(base, sigmas, clips, args.attack_steps)
    result["wall_seconds"] = time.perf_counter() - start
    result["machine"] = {"platform": platform.platform(), "torch_threads": 1,
                         "torch": torch.__version__}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    if "attacks" in result and "channel_aware" in result:
        _plot(result, args.out.with_suffix(".png"))
    print(f"wrote {args.out} in {result['wall_seconds']:.0f} s")


if __name__ == "__main__":
    main()
