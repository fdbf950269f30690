"""Training-set enrichment benchmark: MI vs. rest on PTB-XL with generated ECGs added (paper Fig. 2, Fig. 3).

Proportion 0 trains XResNet1d101 on the real PTB-XL training split alone (the
baseline). For every generated set and proportion n the training split is enriched
according to the set's ``task_type`` (read from its ``meta.json``):
``addition`` adds round(n x count) generated ECGs of every label combination of the
real training split; ``imbalance`` adds round(n x (count of SR - count of MI))
generated MI ECGs (both counted by :mod:`nvae_ecg.counts`). The target is the MI
bit; validation and test splits are real only, and the test AUROC is the one at the
epoch with the best validation AUROC. Every (generator, task, proportion, seed) cell
is appended to ``OUT_DIR/enrich_train.json`` as soon as it finishes, so a rerun of a
killed job skips finished cells. The authors' ``run_hypo_test.py`` (5 folds, seed
23, 10 epochs) is replaced by the fixed splits of the prepared data and ``--seeds``.

Example::

    python -m train_test.enrich_train --data_dir prepared --generated_root results/generated \\
        --task_types imbalance --proportions 0.5 1.0 --epochs 2 --arch tiny --seeds 0 --out_dir results/enrich_train
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from tqdm import tqdm

from nvae_ecg.data import DATASETS
from nvae_ecg.classes import CLASS_ABBREVS, class_index
from nvae_ecg.counts import TASK_TYPES, plan_summary
from nvae_ecg.run import seed_everything
from train_test.classifier import TrainConfig, add_train_flags, config_from_args, fit
from train_test.data import (EcgSet, add_generated_flags, discover_generated, enrichment_plan, generated_source,
                            lead_stats, real_source, signal_shape, train_labels)
from train_test.results import ResultsStore, fmt_prop

RESULTS_NAME = "enrich_train.json"
#: The paper's proportions n (Fig. 2: addition up to 2.0; Fig. 3: imbalance up to 1.0).
DEFAULT_PROPORTIONS = {
    "addition": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.5, 2.0],
    "imbalance": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0],
}
BASELINE = "baseline"


def cell_key(generator: str, task_type: str, proportion: float, seed: int) -> str:
    """Key of one result cell: generator|task|proportion|seed (the baseline is baseline|none|0|seed)."""
    return f"{generator}|{task_type}|{fmt_prop(proportion)}|{seed}"


def parse_args(argv=None) -> argparse.Namespace:
    """Flags of the training-set enrichment benchmark."""
    p = argparse.ArgumentParser(prog="python -m train_test.enrich_train",
                                description="MI detection on PTB-XL with the training split enriched by generated "
                                            "ECGs (paper Fig. 2/3).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data_dir", "--prepared_dir", dest="data_dir", required=True,
                   help="prepared data folder (python -m nvae_ecg.data.prepare)")
    p.add_argument("--dataset", default="ptb-xl", choices=DATASETS,
                   help="prepared dataset to enrich (the generators were trained on PTB-XL)")
    p.add_argument("--target", default="MI", help="class to detect (abbreviation or SNOMED code)")
    p.add_argument("--reference", default="SR", help="imbalance: the class whose count the target is lifted towards")
    add_generated_flags(p)
    p.add_argument("--task_types", nargs="+", default=list(TASK_TYPES), choices=TASK_TYPES,
                   help="which generated sets to use, by their meta.json task_type")
    p.add_argument("--proportions", type=float, nargs="+", default=None,
                   help="proportions n (default: 0.1..1.0, 1.5, 2.0 for addition and 0.1..1.0 for imbalance)")
    p.add_argument("--no_baseline", action="store_true", help="skip the proportion-0 (real data only) runs")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds; mean and std are reported over them")
    p.add_argument("--out_dir", required=True, help="results folder (enrich_train.json, tb/)")
    p.add_argument("--no_tensorboard", action="store_true", help="do not write TensorBoard events")
    p.add_argument("--overwrite", action="store_true", help="start a new results file even if one exists")
    add_train_flags(p)
    args = p.parse_args(argv)
    if args.proportions is not None and any(x < 0 for x in args.proportions):
        p.error("--proportions must be >= 0")
    if not args.generated and args.generated_root is None and args.no_baseline:
        p.error("nothing to run: no generated sets and --no_baseline")
    return args


def main(args: argparse.Namespace) -> dict:
    """Run every missing cell and return the results file's content."""
    from train_test.xresnet1d import build_model

    cfg: TrainConfig = config_from_args(args)
    target = class_index(args.target)
    names = [CLASS_ABBREVS[target]]
    out = Path(args.out_dir)
    config = {"prepared_dir": str(Path(args.data_dir).resolve()), "dataset": args.dataset, "target": names[0],
              "reference": CLASS_ABBREVS[class_index(args.reference)], **cfg.identity()}
    store = ResultsStore(out / RESULTS_NAME, "enrich_train", config, overwrite=args.overwrite)

    train_src = real_source(args.data_dir, args.dataset, "train", [target])
    labels9 = train_labels(args.data_dir, args.dataset)
    gens = {k: v for k, v in discover_generated(args.generated, args.generated_root).items()
            if k[1] in args.task_types}
    props = {t: sorted(set(args.proportions)) if args.proportions is not None else DEFAULT_PROPORTIONS[t]
             for t in TASK_TYPES}

    # Every cell to run, checked up front so a missing generated ECG fails before hours of training.
    cells = []
    for seed in args.seeds:
        if not args.no_baseline:
            cells.append((BASELINE, "none", 0.0, seed, None))
        for (gen, task), gs in sorted(gens.items()):
            for prop in props[task]:
                if prop == 0:
                    continue  # identical to the baseline
                plan = enrichment_plan(labels9, task, prop, [target], args.reference)
                cells.append((gen, task, prop, seed, (gs, plan)))
    for gen, task, prop, seed, extra in cells:
        if extra is not None:
            generated_source(extra[0], extra[1], [target], seed, length=signal_shape(train_src.path)[-1])
    store.set("generated", {f"{g}|{t}": {"path": str(gs.path), "n": len(gs.labels), "meta": _meta_brief(gs.meta)}
                            for (g, t), gs in sorted(gens.items())})

    todo = [c for c in cells if cell_key(*c[:4]) not in store]
    print(f"enrich_train: {len(cells)} cells, {len(cells) - len(todo)} already in {store.path}, {len(todo)} to run")
    if not todo:
        return store.data
    stats = lead_stats([train_src])  # real training records only: generated ECGs never shift the scaling
    val_set = EcgSet([real_source(args.data_dir, args.dataset, "val", [target])])
    test_set = EcgSet([real_source(args.data_dir, args.dataset, "test", [target])])
    for gen, task, prop, seed, extra in tqdm(todo, desc="enrich_train cells"):
        key = cell_key(gen, task, prop, seed)
        t0 = time.time()
        sources = [train_src]
        record = {"generator": gen, "task_type": task, "proportion": prop, "seed": seed, "n_generated": 0,
                  "generated_counts": {}}
        if extra is not None:
            gs, plan = extra
            gsrc = generated_source(gs, plan, [target], seed)
            sources.append(gsrc)
            record.update(n_generated=len(gsrc.rows), generated_counts=plan_summary(plan, CLASS_ABBREVS),
                          generated_path=str(gs.path))
        seed_everything(seed)
        model = build_model(cfg.arch, 12, 1)
        log_dir = None if args.no_tensorboard else out / "tb" / key.replace("|", "_")
        _, res = fit(model, EcgSet(sources), val_set, test_set, stats, cfg, names, seed=seed, log_dir=log_dir,
                     desc=key)
        record.update(res.to_dict())
        record["n_real"] = len(train_src.rows)
        record["wall_seconds"] = time.time() - t0
        store.add(key, record)
        tqdm.write(f"{key}: best epoch {res.best_epoch + 1}, test AUROC {res.test['macro']:.4f} "
                   f"(+{record['n_generated']} generated)")
    return store.data


def _meta_brief(meta: dict) -> dict:
    return {k: meta[k] for k in ("generator", "task_type", "checkpoint", "temperature", "seed", "created") if k in meta}


if __name__ == "__main__":
    main(parse_args())
