"""Pretraining enrichment benchmark: pretrain on PTB-XL (+ generated ECGs), fine-tune on Georgia/Ningbo (Tables VI, VII).

Arms: ``none`` (no pretraining: the classifier is trained on the target data from
scratch), ``real`` (pretraining on the real PTB-XL training split only) and one arm
per generated set of ``--task_type`` (default ``imbalance``: the PTB-XL training
split enriched so that every pretraining class reaches the SR count, paper Table I;
``--pretrain_proportions`` scales that amount, 1.0 = Table I). Pretraining uses the
8 classes SR, LAD, LVH, AF, STach, IAVB, SB, TAb and happens once per arm,
proportion and seed (checkpoints under ``OUT_DIR/pretrained/`` are reused by every
fraction and target, and by reruns). Fine-tuning replaces the output layer and trains
all weights on a fraction n of the target's training split (Georgia: the same 8
classes; Ningbo: 7, it has no AF), validation and test on the target's full real
splits; the report averages the per-class test AUROC over the fractions.

Where this differs from the authors' ``enrich_pretrain.py``: they loop n over the
proportion of generated ECGs added for pretraining (0 = real only) with the full
fine-tuning split and retrain the pretrained model for every n; the issue this
module implements sweeps the fine-tuning fraction instead. Both are available:
``--fractions 1.0 --pretrain_proportions 0.1 ... 1.0`` reproduces the authors' loop.
The authors also count imbalance ECGs over all 9 classes and then drop the MI
column, which feeds their pretraining generated MI ECGs labelled with no class; here
only the pretraining classes are filled.

Example::

    python -m train_test.enrich_pretrain --data_dir prepared --generated_root results/generated \\
        --targets georgia --fractions 0.5 1.0 --epochs 2 --arch tiny --seeds 0 --out_dir results/enrich_pretrain
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from tqdm import tqdm

from nvae_ecg.data import DATASETS
from nvae_ecg.classes import CLASS_ABBREVS, class_index, resolve_classes
from nvae_ecg.counts import TASK_TYPES, plan_summary
from nvae_ecg.run import atomic_torch_save, seed_everything
from train_test.classifier import TrainConfig, add_train_flags, config_from_args, fit
from train_test.data import (EcgSet, add_generated_flags, discover_generated, enrichment_plan, generated_source,
                             lead_stats, real_source, signal_shape, train_labels)
from train_test.results import ResultsStore, fmt_prop

RESULTS_NAME = "enrich_pretrain.json"
PRETRAIN_CLASSES = "SR,LAD,LVH,AF,STach,IAVB,SB,TAb"
#: Fine-tuning classes per target dataset (Ningbo has no AF records).
TARGET_CLASSES = {"georgia": PRETRAIN_CLASSES, "ningbo": "SR,LAD,LVH,STach,IAVB,SB,TAb",
                  "ptb-xl": PRETRAIN_CLASSES}
DEFAULT_FRACTIONS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
NO_PRETRAIN, REAL_ONLY = "none", "real"


def cell_key(target: str, arm: str, task: str, proportion: float, fraction: float, seed: int) -> str:
    """Key of one fine-tuning cell: target|arm|task|pretrain proportion|fraction|seed."""
    return f"{target}|{arm}|{task}|{fmt_prop(proportion)}|{fmt_prop(fraction)}|{seed}"


def pretrain_key(arm: str, task: str, proportion: float, seed: int) -> str:
    """Key of one pretraining run: arm|task|proportion|seed."""
    return f"{arm}|{task}|{fmt_prop(proportion)}|{seed}"


def _target_classes(specs) -> dict[str, list[int]]:
    out = {k: resolve_classes(v) for k, v in TARGET_CLASSES.items()}
    for spec in specs:
        name, sep, classes = spec.partition("=")
        if not sep:
            raise ValueError(f"--target_classes expects DATASET=CLASSES, got {spec!r}")
        out[name] = resolve_classes(classes)
    return out


def parse_args(argv=None) -> argparse.Namespace:
    """Flags of the pretraining enrichment benchmark."""
    p = argparse.ArgumentParser(prog="python -m train_test.enrich_pretrain",
                                description="Pretrain XResNet1d on PTB-XL (+ generated ECGs), fine-tune on Georgia/"
                                            "Ningbo (paper Tables VI, VII).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data_dir", "--prepared_dir", dest="data_dir", required=True,
                   help="prepared data folder (python -m nvae_ecg.data.prepare)")
    p.add_argument("--source", default="ptb-xl", choices=DATASETS,
                   help="pretraining dataset (the generators were trained on PTB-XL)")
    p.add_argument("--targets", nargs="+", default=["georgia", "ningbo"], choices=DATASETS,
                   help="fine-tuning datasets")
    p.add_argument("--pretrain_classes", default=PRETRAIN_CLASSES, help="comma-separated pretraining classes")
    p.add_argument("--target_classes", nargs="*", default=[],
                   help=f"DATASET=CLASSES overrides of the fine-tuning classes (defaults: {TARGET_CLASSES})")
    p.add_argument("--reference", default="SR", help="imbalance: the class whose count the others are lifted to")
    add_generated_flags(p)
    p.add_argument("--task_type", default="imbalance", choices=TASK_TYPES,
                   help="which generated sets enrich the pretraining split, by their meta.json task_type")
    p.add_argument("--pretrain_proportions", type=float, nargs="+", default=[1.0],
                   help="proportions n of the generated enrichment for pretraining (1.0 = paper Table I)")
    p.add_argument("--fractions", type=float, nargs="+", default=DEFAULT_FRACTIONS,
                   help="fractions n of the target training split used for fine-tuning")
    p.add_argument("--pretrain_epochs", type=int, default=None, help="pretraining epochs (default: --epochs)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds; mean and std are reported over them")
    p.add_argument("--out_dir", required=True, help="results folder (enrich_pretrain.json, pretrained/, tb/)")
    p.add_argument("--no_tensorboard", action="store_true", help="do not write TensorBoard events")
    p.add_argument("--overwrite", action="store_true", help="start a new results file even if one exists")
    add_train_flags(p)
    args = p.parse_args(argv)
    if any(not 0 < f <= 1 for f in args.fractions):
        p.error("--fractions must lie in (0, 1]")
    if any(x <= 0 for x in args.pretrain_proportions):
        p.error("--pretrain_proportions must be > 0 (proportion 0 is the 'real' arm)")
    return args


def main(args: argparse.Namespace) -> dict:
    """Pretrain what is missing, fine-tune every missing cell, return the results file's content."""
    from train_test.xresnet1d import build_model, replace_head

    cfg: TrainConfig = config_from_args(args)
    pre_cfg = TrainConfig(**{**cfg.__dict__, "epochs": args.pretrain_epochs or cfg.epochs})
    pre_cols = resolve_classes(args.pretrain_classes)
    pre_names = [CLASS_ABBREVS[c] for c in pre_cols]
    tgt_cols = _target_classes(args.target_classes)
    out = Path(args.out_dir)
    config = {"prepared_dir": str(Path(args.data_dir).resolve()), "source": args.source,
              "pretrain_classes": pre_names, "reference": CLASS_ABBREVS[class_index(args.reference)],
              "pretrain_epochs": pre_cfg.epochs, **cfg.identity(),
              # One key per target, so runs over different targets can share a results file.
              **{f"target_classes/{t}": [CLASS_ABBREVS[c] for c in tgt_cols[t]] for t in args.targets}}
    store = ResultsStore(out / RESULTS_NAME, "enrich_pretrain", config, overwrite=args.overwrite)
    store.data.setdefault("pretrain", {})

    gens = {g: gs for (g, t), gs in discover_generated(args.generated, args.generated_root).items()
            if t == args.task_type}
    clash = {NO_PRETRAIN, REAL_ONLY} & set(gens)
    if clash:
        raise ValueError(f"generator names {sorted(clash)} are reserved for the baseline arms; rename with NAME=PATH")
    pre_src = real_source(args.data_dir, args.source, "train", pre_cols)
    labels9 = train_labels(args.data_dir, args.source)
    length = signal_shape(pre_src.path)[-1]
    arms = [(NO_PRETRAIN, "none", 0.0, None), (REAL_ONLY, "none", 0.0, None)]
    for g, gs in sorted(gens.items()):
        for prop in sorted(set(args.pretrain_proportions)):
            plan = enrichment_plan(labels9, args.task_type, prop, pre_cols, args.reference)
            generated_source(gs, plan, pre_cols, 0, length=length)  # fail now, not after hours, if ECGs are missing
            arms.append((g, args.task_type, prop, (gs, plan)))
    store.set("generated", {g: {"path": str(gs.path), "n": len(gs.labels), "task_type": gs.task_type}
                            for g, gs in sorted(gens.items())})

    fractions = sorted(set(args.fractions))
    todo = [(seed, arm) for seed in args.seeds for arm in arms
            if any(cell_key(t, arm[0], arm[1], arm[2], f, seed) not in store for t in args.targets for f in fractions)]
    n_cells = len(args.seeds) * len(arms) * len(args.targets) * len(fractions)
    print(f"enrich_pretrain: {len(arms)} arms x {len(args.targets)} targets x {len(fractions)} fractions x "
          f"{len(args.seeds)} seeds = {n_cells} cells, {len(store.cells)} already in {store.path}")
    if not todo:
        return store.data

    # Real splits and statistics, loaded once.
    pre_stats = None
    pre_val = pre_test = None
    tgt_sets = {}
    for t in args.targets:
        tgt_sets[t] = (EcgSet([real_source(args.data_dir, t, "val", tgt_cols[t])]),
                       EcgSet([real_source(args.data_dir, t, "test", tgt_cols[t])]))
    (out / "pretrained").mkdir(parents=True, exist_ok=True)

    for seed, (arm, task, prop, extra) in tqdm(todo, desc="enrich_pretrain arms"):
        state = None
        if arm != NO_PRETRAIN:
            pkey = pretrain_key(arm, task, prop, seed)
            ckpt = out / "pretrained" / (pkey.replace("|", "_") + ".pt")
            if ckpt.is_file() and pkey in store.data["pretrain"]:
                state = torch.load(ckpt, map_location="cpu", weights_only=True)
            else:
                if pre_stats is None:
                    pre_stats = lead_stats([pre_src])
                    pre_val = EcgSet([real_source(args.data_dir, args.source, "val", pre_cols)])
                    pre_test = EcgSet([real_source(args.data_dir, args.source, "test", pre_cols)])
                sources, record = [pre_src], {"arm": arm, "task_type": task, "proportion": prop, "seed": seed,
                                              "n_generated": 0}
                if extra is not None:
                    gsrc = generated_source(extra[0], extra[1], pre_cols, seed)
                    sources.append(gsrc)
                    record.update(n_generated=len(gsrc.rows), generated_counts=plan_summary(extra[1], CLASS_ABBREVS))
                seed_everything(seed)
                model = build_model(cfg.arch, 12, len(pre_cols))
                log_dir = None if args.no_tensorboard else out / "tb" / ("pretrain_" + pkey.replace("|", "_"))
                model, res = fit(model, EcgSet(sources), pre_val, pre_test, pre_stats, pre_cfg, pre_names, seed=seed,
                                 log_dir=log_dir, desc=f"pretrain {pkey}")
                state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
                atomic_torch_save(state, ckpt)
                record.update(res.to_dict())
                record["checkpoint"] = str(ckpt)
                store.data["pretrain"][pkey] = record
                store.set("pretrain", store.data["pretrain"])
                tqdm.write(f"pretrain {pkey}: test macro AUROC on {args.source} {res.test['macro']:.4f}")
        for t in args.targets:
            names = [CLASS_ABBREVS[c] for c in tgt_cols[t]]
            val_set, test_set = tgt_sets[t]
            for frac in fractions:
                key = cell_key(t, arm, task, prop, frac, seed)
                if key in store:
                    continue
                t0 = time.time()
                train_src = real_source(args.data_dir, t, "train", tgt_cols[t], fraction=frac, fraction_seed=seed)
                stats = lead_stats([train_src])
                seed_everything(seed)
                if state is None:
                    model = build_model(cfg.arch, 12, len(names))
                else:
                    model = build_model(cfg.arch, 12, len(pre_cols))
                    model.load_state_dict(state)
                    replace_head(model, len(names))
                log_dir = None if args.no_tensorboard else out / "tb" / key.replace("|", "_")
                _, res = fit(model, EcgSet([train_src]), val_set, test_set, stats, cfg, names, seed=seed,
                             log_dir=log_dir, desc=key)
                record = {"target": t, "arm": arm, "task_type": task, "proportion": prop, "fraction": frac,
                          "seed": seed, **res.to_dict(), "wall_seconds": time.time() - t0}
                store.add(key, record)
                tqdm.write(f"{key}: best epoch {res.best_epoch + 1}, test macro AUROC {res.test['macro']:.4f}")
    return store.data


if __name__ == "__main__":
    main(parse_args())
