"""Zero-shot and few-shot channel prediction on configurations pre-training never saw.

For each held-out configuration of the pre-training corpus (default: CDL-B and UMi), users are
split 10 % (few-shot training) / 10 % (validation) / 80 % (test). Every few-shot model trains
``--steps`` steps and keeps the state that scored best on the validation users (checked every
``--check`` rounds, the untrained state included). Compared, by test NMSE [dB]:

* ``zero_shot_pretrained``: the pre-trained LAM (backbone, CSI branches, embedding and head from
  the checkpoint), no training on the held-out configuration;
* ``few_shot_pretrained``: the same, then LoRA fine-tuning on the 10 %;
* ``few_shot_random``: the same architecture at random init, LoRA fine-tuning on the 10 %;
* ``few_shot_gru``: a GRU trained on the 10 % (Adam);
* ``ar`` (per-user AR(8) over all subcarriers) and ``no_prediction``: training-free.

Writes JSON (default ``benchmarks/results/pretrain_transfer.json``)::

    .venv/bin/python benchmarks/pretrain_transfer.py --steps 200
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from edgelam.airinterface.prediction import ARPredictor, NoPrediction
from edgelam.airinterface.prediction.evaluate import evaluate_predictor, train_early_stopped
from edgelam.channels.dataset import (
    CSIPredictionDataset,
    normalization_stats,
    train_val_test_split,
)
from edgelam.channels.store import CSIFile
from edgelam.config import from_dict
from edgelam.models import BackboneConfig, LLM4CPConfig, RecurrentConfig, build_predictor
from edgelam.models.pretrained import resolve_wireless, wireless_architecture
from edgelam.pretrain.corpus import CorpusConfig, build_held_out
from edgelam.training.fedavg import Client, FedAvg, FedAvgConfig

EDGES = (0.0, 40.0, 80.0, 121.0)


def lam_config(checkpoint: str | None, parts: tuple[str, ...], arch: dict) -> LLM4CPConfig:
    """The pre-training architecture, LoRA-tuned, loading ``parts`` from ``checkpoint``."""
    backbone = BackboneConfig(name="custom", num_layers=arch["backbone.num_layers"],
                              d_model=arch["backbone.d_model"], n_head=arch["backbone.n_head"],
                              n_positions=arch["backbone.n_positions"], pretrained=checkpoint)  # fmt: skip
    return LLM4CPConfig(history_slots=arch["history_slots"], future_slots=arch["future_slots"],
                        num_subcarriers=arch["num_subcarriers"], patch_size=arch["patch_size"],
                        res_dim=arch["res_dim"], res_layers=arch["res_layers"],
                        normalization=arch["normalization"], backbone=backbone,
                        trainable="lora", pretrained_parts=parts)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="edgelam-wireless")
    parser.add_argument("--cache-dir", default="data/pretrain", help="pre-training corpus cache")
    parser.add_argument("--steps", type=int, default=200, help="few-shot training steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="torch device of the trained models")
    parser.add_argument(
        "--check", type=int, default=10, help="validate every this many rounds (early stopping)"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/pretrain_transfer.json")
    )
    args = parser.parse_args()
    ckpt = resolve_wireless(args.checkpoint)
    if ckpt is None:
        raise SystemExit(f"--checkpoint {args.checkpoint!r} is not an edgelam checkpoint")
    arch = wireless_architecture(ckpt)
    card = json.loads((ckpt / "model_card.json").read_text())
    corpus = from_dict(CorpusConfig, card["pretrain_config"]["corpus"])  # its held-out set
    fed = FedAvgConfig(rounds=max(1, args.steps // 4), local_steps=4, batch_size=32, lr=3e-3,
                       seed=args.seed)  # fmt: skip
    results = []
    for path in build_held_out(corpus, args.cache_dir, progress=False):
        file = CSIFile.open(path)
        split = train_val_test_split(file, fractions=(0.1, 0.1, 0.8), seed=args.seed)
        norm = normalization_stats(file, split.train)
        train = CSIPredictionDataset(file, split.train, snr_db=(5.0, 20.0), noisy_target=True,
                                     norm=norm, seed=args.seed)  # fmt: skip
        test = CSIPredictionDataset(file, split.test, snr_db=18.0, norm=norm, seed=args.seed + 1)
        val = CSIPredictionDataset(file, split.val, snr_db=18.0, norm=norm, seed=args.seed + 2)
        kwargs = dict(speeds_kmh=file.meta["speed_mps"] * 3.6,
                      num_antennas=file.config.num_bs_antennas, group_edges_kmh=EDGES)  # fmt: skip
        row = {"file": path.name, "model": file.config.model, "duplex": file.config.duplex,
               "train_users": len(split.train), "test_users": len(split.test)}  # fmt: skip
        all_parts = ("backbone", "csi", "io")
        shape = {k: arch[k] for k in ("history_slots", "future_slots", "num_subcarriers")}
        candidates = {
            "zero_shot_pretrained": (lam_config(str(ckpt), all_parts, arch), 0),
            "few_shot_pretrained": (lam_config(str(ckpt), all_parts, arch), args.steps),
            "few_shot_random": (lam_config(None, all_parts, arch), args.steps),
            "few_shot_gru": (RecurrentConfig(hidden_size=128, num_layers=2, **shape), args.steps),
        }
        for name, (cfg, steps) in candidates.items():
            start = time.perf_counter()
            model, _ = build_predictor("gru" if name.endswith("gru") else "llm4cp", cfg,
                                       seed=args.seed)  # fmt: skip
            model.to(args.device)
            if steps:
                trainer = FedAvg(dataclasses.replace(fed), model, [Client(0, train)],
                                 communicate=False)  # fmt: skip
                row[f"{name}_best_step"] = train_early_stopped(trainer, val, args.check, **kwargs)
            row[name] = evaluate_predictor(model, test, **kwargs)["nmse_db"]
            row[f"{name}_seconds"] = time.perf_counter() - start
        for name, model in (("ar", ARPredictor(order=8, shared_over_subcarriers=True)),
                            ("no_prediction", NoPrediction())):  # fmt: skip
            row[name] = evaluate_predictor(model, test, physical_input=True, **kwargs)["nmse_db"]
        print(json.dumps({k: (round(v, 2) if isinstance(v, float) else v) for k, v in row.items()}))
        results.append(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"checkpoint": str(ckpt), "steps": args.steps, "fractions": [0.1, 0.1, 0.8],
            "test_snr_db": 18.0, "device": args.device,
            "checkpoint_parameters": card.get("parameters")}  # fmt: skip
    args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
