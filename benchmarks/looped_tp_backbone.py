"""The looped-TP pre-trained checkpoint as the channel-prediction backbone.

:class:`~edgelam.training.looped_tp.predictor.LoopedPredictor` forecasts by masked
reconstruction (the last ``T - L_f`` history slots plus ``L_f`` fully masked slots). Two test
sets, users split 10 % (few-shot training) / 10 % (validation) / 80 % (test):

* ``heldout-<model>-<duplex>-f8``: the checkpoint corpus's held-out model (``quick``: TDL-B) at the checkpoint's
  ``F`` (8), generated with ``--held-out-users`` users (the corpus's own held-out set has 4);
  the checkpoint applies as is, so zero-shot is possible;
* ``casestudy-f48``: the case study's UMa channel (``F`` = 48, 32 BS antennas), if cached in
  ``data/casestudy``; ``embed_in`` and ``head`` are re-initialised, the rest loads.

Compared by test NMSE [dB]: ``zero_shot_pretrained`` (F matching only), ``few_shot_pretrained``
and ``few_shot_random`` (the same architecture at random init), both fully fine-tuned with
:class:`~edgelam.training.fedavg.FedAvg` (one client, Adam) for ``--steps`` steps, keeping the
state best on the validation users (checked every ``--check`` rounds, the untrained state
included), as in ``benchmarks/pretrain_transfer.py``; ``ar`` (per-user AR(8) shared over
subcarriers) and ``no_prediction``. Writes JSON::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/looped_tp_backbone.py
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from edgelam.airinterface.prediction import ARPredictor, NoPrediction
from edgelam.airinterface.prediction.evaluate import evaluate_predictor, train_early_stopped
from edgelam.channels.dataset import (
    CSIPredictionDataset,
    normalization_stats,
    train_val_test_split,
)
from edgelam.channels.store import CSIFile, generate_dataset
from edgelam.config import from_dict
from edgelam.pretrain.corpus import CorpusConfig, config_name, held_out_configs
from edgelam.training.fedavg import Client, FedAvg, FedAvgConfig
from edgelam.training.looped_tp.predictor import (
    build_looped_predictor,
    load_looped_predictor,
    read_checkpoint,
)

EDGES = (0.0, 40.0, 80.0, 121.0)


def evaluate_file(path: Path, args: argparse.Namespace, name: str) -> dict:
    """One test set: every candidate's test NMSE [dB], seconds and best step."""
    file = CSIFile.open(path)
    split = train_val_test_split(file, fractions=(0.1, 0.1, 0.8), seed=args.seed)
    test_users = split.test[: args.max_test_users] if args.max_test_users else split.test
    norm = normalization_stats(file, split.train)
    train = CSIPredictionDataset(file, split.train, snr_db=(5.0, 20.0), noisy_target=True,
                                 norm=norm, seed=args.seed)  # fmt: skip
    val = CSIPredictionDataset(file, split.val, snr_db=18.0, norm=norm, seed=args.seed + 2)
    test = CSIPredictionDataset(file, test_users, snr_db=18.0, norm=norm, seed=args.seed + 1)
    f, lf = file.config.num_subcarriers, file.config.future_slots
    kwargs = dict(speeds_kmh=file.meta["speed_mps"] * 3.6,
                  num_antennas=file.config.num_bs_antennas, group_edges_kmh=EDGES)  # fmt: skip
    row = {"set": name, "file": path.name, "model": file.config.model,
           "num_subcarriers": f, "antennas": file.config.num_bs_antennas,
           "train_users": len(split.train), "val_users": len(split.val),
           "test_users": len(test_users), "train_items": len(train),
           "test_items": len(test)}  # fmt: skip
    fed = FedAvgConfig(rounds=max(1, args.steps // 4), local_steps=4, batch_size=32, lr=args.lr,
                       seed=args.seed)  # fmt: skip
    _, info = load_looped_predictor(args.checkpoint, f, future_slots=lf, seed=args.seed)
    row["reinitialised"] = sorted({n.split(".")[0] for n in info["reinitialised"]})
    row["loaded"] = sorted({n.split(".")[0] for n in info["loaded"]})
    candidates = {"few_shot_pretrained": (True, args.steps), "few_shot_random": (False, args.steps)}
    if f == info["checkpoint_num_subcarriers"]:
        candidates = {"zero_shot_pretrained": (True, 0), **candidates}
    for cand, (pretrained, steps) in candidates.items():
        start = time.perf_counter()
        if pretrained:
            model, _ = load_looped_predictor(args.checkpoint, f, future_slots=lf, seed=args.seed)
        else:
            model = build_looped_predictor(read_checkpoint(args.checkpoint)[0], f, future_slots=lf,
                                           seed=args.seed)  # fmt: skip
        if steps:
            trainer = FedAvg(dataclasses.replace(fed), model, [Client(0, train)],
                             communicate=False)  # fmt: skip
            row[f"{cand}_best_step"] = train_early_stopped(trainer, val, args.check, **kwargs)
        row[cand] = evaluate_predictor(model, test, **kwargs)["nmse_db"]
        row[f"{cand}_seconds"] = time.perf_counter() - start
    for cand, model in (("ar", ARPredictor(order=8, shared_over_subcarriers=True)),
                        ("no_prediction", NoPrediction(lf))):  # fmt: skip
        start = time.perf_counter()
        row[cand] = evaluate_predictor(model, test, physical_input=True, **kwargs)["nmse_db"]
        row[f"{cand}_seconds"] = time.perf_counter() - start
    print(json.dumps({k: (round(v, 2) if isinstance(v, float) else v) for k, v in row.items()}))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="runs/looped-tp-quick-inprocess")
    parser.add_argument("--cache-dir", default="data/looped-tp", help="held-out file cache")
    parser.add_argument("--held-out-users", type=int, default=400)
    parser.add_argument("--casestudy", default="data/casestudy/uma_tdd_a2497a76c6.h5",
                        help="F=48 case-study file ('' to skip)")  # fmt: skip
    parser.add_argument("--max-test-users", type=int, default=200, help="0: all test users")
    parser.add_argument("--steps", type=int, default=1000, help="few-shot training steps")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--check", type=int, default=10, help="validate every this many rounds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/looped_tp_backbone.json")
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    card = json.loads((Path(args.checkpoint) / "model_card.json").read_text())
    corpus = from_dict(CorpusConfig, card["train_config"]["corpus"])
    corpus = dataclasses.replace(corpus, held_out_users=args.held_out_users)
    sets = []
    for config in held_out_configs(corpus):  # as drawn, and the same channel in TDD
        for duplex in dict.fromkeys((config.duplex, "tdd")):
            config = dataclasses.replace(config, duplex=duplex)
            path = Path(args.cache_dir) / f"{config_name(config)}.h5"
            if not path.exists():
                generate_dataset(config, path, resume=True, progress=False).close()
            sets.append((path, f"heldout-{config.model}-{duplex}-f{config.num_subcarriers}"))
    generated = time.perf_counter() - start
    if args.casestudy and Path(args.casestudy).is_file():
        sets.append((Path(args.casestudy), "casestudy-f48"))
    results = [evaluate_file(path, args, name) for path, name in sets]
    meta = {"checkpoint": args.checkpoint, "architecture": card["architecture"],
            "checkpoint_steps": card.get("steps"), "steps": args.steps, "lr": args.lr,
            "optimizer": "adam (FedAvg, 1 client, local_steps 4, batch 32)",
            "fractions": [0.1, 0.1, 0.8], "train_snr_db": [5.0, 20.0], "test_snr_db": 18.0,
            "held_out_users": args.held_out_users, "max_test_users": args.max_test_users,
            "generation_seconds": generated, "total_seconds": time.perf_counter() - start,
            "torch_threads": torch.get_num_threads()}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    print(f"wrote {args.out} ({meta['total_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
